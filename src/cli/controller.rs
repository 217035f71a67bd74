//! Controller commands: the broker, devices, status, ping, and deploy/rm/logs/restart.

use super::*;

pub(super) fn secs(what: &str, s: f64) -> anyhow::Result<Duration> {
    if s.is_finite() && s > 0.0 && s <= 3600.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        anyhow::bail!("{what} {s}: must be a number of seconds between 0 and 3600")
    }
}

pub(super) fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

pub(super) fn run_fleet(
    cmd: FleetCommand,
    config: Option<&std::path::Path>,
    log_level: Option<&str>,
) -> anyhow::Result<i32> {
    logging::init(log_level.unwrap_or("warn"), crate::base::LogFormat::Text);
    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    };
    match cmd {
        FleetCommand::Broker { listen, password_file, allow_anonymous } => {
            logging::init(log_level.unwrap_or("info"), crate::base::LogFormat::Text);
            use crate::link::broker::{self, Auth};
            let auth = match (password_file, allow_anonymous) {
                (Some(path), _) => Auth::Passwords(broker::read_password_file(&path)?),
                (None, true) => Auth::Anonymous,
                (None, false) => {
                    eprintln!(
                        "jetship broker: say who may connect: --password-file FILE (lines of user:password), or --allow-anonymous to let anyone who reaches {listen} control the devices that use it"
                    );
                    return Ok(2);
                }
            };
            broker::run(listen, auth)?;
            Ok(0)
        }
        FleetCommand::Devices { broker, json, timeout } => {
            let access = broker.access(config)?;
            let limit = secs("--timeout", timeout)?;
            let devices = small_runtime()?.block_on(fleet::snapshot(&access, "+", limit))?;
            let rows: Vec<fleet::DeviceRow> = devices.values().map(|d| d.row()).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                eprintln!("no devices on {}", access.urls().join(", "));
            } else {
                print!("{}", fleet::table(&rows, now_ms()));
            }
            Ok(0)
        }
        FleetCommand::Status { device, broker, json, timeout } => {
            crate::link::protocol::Topics::new(&device)?;
            let access = broker.access(config)?;
            let limit = secs("--timeout", timeout)?;
            let devices = small_runtime()?.block_on(fleet::snapshot(&access, &device, limit))?;
            let Some(view) = devices.get(&device) else {
                anyhow::bail!(
                    "device `{device}` has published nothing on {}: check the id with `jetship devices`",
                    access.urls().join(", ")
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(view)?);
            } else {
                print!("{}", fleet::detail(view, now_ms()));
            }
            Ok(0)
        }
        FleetCommand::Ping { device, broker, count, timeout } => {
            let access = broker.access(config)?;
            let limit = secs("--timeout", timeout)?;
            let rt = small_runtime()?;
            let mut failed = 0;
            for _ in 0..count.max(1) {
                match rt.block_on(fleet::ping(&access, &device, limit)) {
                    Ok(p) if p.reply.ok => {
                        let version = p
                            .reply
                            .result
                            .as_ref()
                            .and_then(|r| r.get("agent_version"))
                            .and_then(|v| v.as_str())
                            .unwrap_or("?");
                        println!("reply from {device}: time={:.1} ms agent={version}", p.rtt_ms);
                    }
                    Ok(p) => {
                        failed += 1;
                        println!("error from {device}: {}", p.reply.error.unwrap_or_default());
                    }
                    Err(fleet::Error::Timeout(d)) => {
                        failed += 1;
                        println!(
                            "no reply from {device} within {:.1} s (offline, or not subscribed?)",
                            d.as_secs_f64()
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(if failed == 0 { 0 } else { 1 })
        }
        FleetCommand::Deploy { target, file, wait, timeout, broker } => {
            run_deploy(&target, &file, wait, secs("--timeout", timeout)?, &broker.access(config)?)
        }
        FleetCommand::Rm { target, deployment, broker } => {
            let access = broker.access(config)?;
            let target = crate::controller::deploy::Target::parse(&target)?;
            let rt = small_runtime()?;
            let limit = Duration::from_secs(10);
            let Some(mut doc) = rt.block_on(crate::controller::deploy::current_document(&access, &target, limit))?
            else {
                anyhow::bail!("no document on {}: nothing to remove", target.desired_topic());
            };
            if doc.deployments.remove(&deployment).is_none() {
                anyhow::bail!("deployment `{deployment}` is not in the document on {}", target.desired_topic());
            }
            doc.generation = Some(crate::controller::deploy::next_generation(None, Some(&doc)));
            rt.block_on(crate::controller::deploy::publish_document(&access, &target, &doc, limit))?;
            println!("removed {deployment}: generation {} on {}", doc.generation.unwrap_or(0), target.desired_topic());
            Ok(0)
        }
        FleetCommand::Logs { device, deployment: None, tail, follow, .. } => {
            super::local::logs(config, log_level, &device, tail, follow)
        }
        FleetCommand::Logs { device, deployment: Some(deployment), tail, follow, follow_secs, broker } => {
            let access = broker.access(config)?;
            let mut args = serde_json::json!({ "deployment": deployment, "tail": tail });
            if follow {
                args["follow_s"] = follow_secs.into();
            }
            let limit = Duration::from_secs(15 + if follow { follow_secs } else { 0 });
            let reply =
                small_runtime()?.block_on(crate::controller::deploy::command(&access, &device, "logs", args, limit))?;
            let result = command_result(&device, reply)?;
            if result.get("truncated").and_then(|t| t.as_bool()) == Some(true) {
                eprintln!("(earlier lines left out: a reply carries at most 256 KiB of log; use --tail)");
            }
            let mut out = std::io::stdout().lock();
            for line in result.get("lines").and_then(|l| l.as_array()).into_iter().flatten() {
                let text = line.get("text").and_then(|t| t.as_str()).unwrap_or("");
                writeln!(out, "{}", text.trim_end_matches('\n'))?;
            }
            Ok(0)
        }
        FleetCommand::Restart { device, deployment, broker } => {
            let access = broker.access(config)?;
            let args = serde_json::json!({ "deployment": deployment });
            let limit = Duration::from_secs(60);
            let reply = small_runtime()?
                .block_on(crate::controller::deploy::command(&access, &device, "restart", args, limit))?;
            let result = command_result(&device, reply)?;
            println!("restarted {deployment} on {device} ({})", result["container"].as_str().unwrap_or("?"));
            Ok(0)
        }
        FleetCommand::PowerMode { target, mode, json, timeout, broker } => {
            let request = crate::controller::power::PowerRequest::Mode(mode);
            run_power(&target, &request, json, secs("--timeout", timeout)?, &broker.access(config)?)
        }
        FleetCommand::Clocks { target, state, json, timeout, broker } => {
            let request = crate::controller::power::PowerRequest::Clocks(state == super::args::OnOff::On);
            run_power(&target, &request, json, secs("--timeout", timeout)?, &broker.access(config)?)
        }
        FleetCommand::Exporter { broker, args } => {
            crate::controller::exporter::run(broker.access(config)?, args)?;
            Ok(0)
        }
        FleetCommand::SimFleet(args) => {
            logging::init(log_level.unwrap_or("warn"), crate::base::LogFormat::Text);
            crate::controller::sim::run(args)?;
            Ok(0)
        }
    }
}

/// `power-mode` / `clocks`: one line (or JSON object) per device; exit 1 when any device refused or did not answer.
fn run_power(
    target: &str,
    request: &crate::controller::power::PowerRequest,
    json: bool,
    limit: Duration,
    access: &crate::link::mqtt::BrokerAccess,
) -> anyhow::Result<i32> {
    use crate::controller::power;
    let target = crate::controller::deploy::Target::parse(target)?;
    let answers = small_runtime()?.block_on(power::send(access, &target, request, limit))?;
    let mut failed = 0;
    for (device, answer) in answers {
        match answer {
            Ok(reply) => {
                failed += usize::from(!reply.ok);
                if json {
                    println!("{}", serde_json::json!({ "device": device, "reply": reply }));
                } else {
                    println!("{}", power::describe(&device, request, &reply));
                }
            }
            Err(fleet::Error::Timeout(d)) => {
                failed += 1;
                println!("{device}: no reply within {:.0} s (offline, or not subscribed?)", d.as_secs_f64());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The result of a command reply, or its error as the CLI's error.
pub(super) fn command_result(device: &str, reply: crate::link::protocol::Reply) -> anyhow::Result<serde_json::Value> {
    if reply.ok {
        Ok(reply.result.unwrap_or_default())
    } else {
        anyhow::bail!("{device}: {}", reply.error.unwrap_or_default())
    }
}

pub(super) fn run_deploy(
    target: &str,
    file: &std::path::Path,
    wait: bool,
    limit: Duration,
    access: &crate::link::mqtt::BrokerAccess,
) -> anyhow::Result<i32> {
    use crate::controller::deploy::{self, Progress, Target};
    let target = Target::parse(target)?;
    let mut doc = crate::deploy::document::read_file(file)?;
    let rt = small_runtime()?;
    let current = rt.block_on(deploy::current_document(access, &target, Duration::from_secs(10)))?;
    let generation = deploy::next_generation(doc.generation, current.as_ref());
    doc.generation = Some(generation);
    rt.block_on(deploy::publish_document(access, &target, &doc, Duration::from_secs(10)))?;
    println!("published generation {generation} to {}", target.desired_topic());
    if !wait {
        return Ok(0);
    }
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>16} {msg} {wide_bar} {bytes}/{total_bytes}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let plain = indicatif::ProgressStyle::with_template("{prefix:>16} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut lines: std::collections::HashMap<String, indicatif::ProgressBar> = Default::default();
    let verdicts = rt.block_on(deploy::wait(access, &target, generation, limit, |device, p| {
        let bar = lines.entry(device.to_owned()).or_insert_with(|| {
            let b = bars.add(indicatif::ProgressBar::new(0));
            b.set_prefix(device.to_owned());
            b
        });
        match p {
            Progress::Working { line, pull: Some((done, total)) } => {
                bar.set_style(style.clone());
                bar.set_length(total.unwrap_or(0));
                bar.set_position(*done);
                bar.set_message(line.clone());
            }
            Progress::Working { line, pull: None } => {
                bar.set_style(plain.clone());
                bar.set_message(line.clone());
            }
            Progress::Converged { line } => {
                bar.set_style(plain.clone());
                bar.finish_with_message(line.clone());
            }
            Progress::Failed { reason } => {
                bar.set_style(plain.clone());
                bar.finish_with_message(format!("failed: {reason}"));
            }
        }
    }))?;
    drop(lines);
    let _ = bars.clear();
    let mut failed = 0;
    for (device, v) in &verdicts {
        match v {
            Progress::Converged { line } => println!("{device}: converged to generation {generation}: {line}"),
            Progress::Failed { reason } => {
                failed += 1;
                println!("{device}: failed: {reason}");
            }
            Progress::Working { line, .. } => {
                failed += 1;
                println!("{device}: not converged within {:.0} s: {line}", limit.as_secs_f64());
            }
        }
    }
    if verdicts.is_empty() {
        println!(
            "no device reported generation {generation} of {} within {:.0} s",
            target.source(),
            limit.as_secs_f64()
        );
        return Ok(1);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
