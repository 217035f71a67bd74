//! The local container commands, for root on the device: `jetship ps`, `jetship stop NAME`, `jetship logs NAME`
//! (one name: a container here; `logs DEVICE DEPLOYMENT` goes to a device over the broker), and the name lookup
//! they share with `jetship exec`. They talk to the configured backend directly, so they work with or without
//! a running agent.

use super::*;
use crate::runtime::{labels, ContainerInfo, ContainerRuntime, RunState};

/// One row of `jetship ps`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(super) struct PsRow {
    /// The container id.
    name: String,
    deployment: String,
    /// `agent` for a deployment's container, `run` for one `jetship run` made.
    owner: &'static str,
    state: RunState,
    exit_code: Option<i32>,
    image: String,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds running, for a running container.
    uptime_s: Option<u64>,
    /// Restarts the agent counted for the deployment (0 for `jetship run`'s).
    restarts: u32,
}

/// The rows of `owned`, with the agent's restart counts from `state_dir`, at `now`.
pub(super) fn ps_rows(
    owned: &[ContainerInfo],
    state_dir: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<PsRow> {
    owned
        .iter()
        .map(|c| {
            let deployment = c.labels.get(labels::DEPLOYMENT).cloned().unwrap_or_default();
            let agent = c.labels.get(labels::OWNER).map(String::as_str) != Some(labels::OWNER_RUN);
            let running = c.state == RunState::Running;
            PsRow {
                name: c.id.clone(),
                owner: if agent { "agent" } else { "run" },
                restarts: if agent { crate::deploy::executor::recorded_restarts(state_dir, &deployment) } else { None }
                    .unwrap_or(0),
                deployment,
                state: c.state,
                exit_code: c.exit_code.filter(|_| c.state == RunState::Exited),
                image: c.labels.get(labels::IMAGE).cloned().unwrap_or_default(),
                started_at: c.started_at,
                uptime_s: c.started_at.filter(|_| running).map(|at| (now - at).num_seconds().max(0) as u64),
            }
        })
        .collect()
}

/// `3s`, `4m05s`, `2h07m`, `3d04h`.
fn duration_text(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The table `jetship ps` prints.
pub(super) fn ps_table(rows: &[PsRow]) -> String {
    let mut table = vec![["NAME", "DEPLOYMENT", "OWNER", "STATE", "IMAGE", "UPTIME", "RESTARTS"].map(String::from)];
    for r in rows {
        let state = match (r.state, r.exit_code) {
            (RunState::Exited, Some(code)) => format!("exited ({code})"),
            (s, _) => serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        };
        table.push([
            r.name.clone(),
            r.deployment.clone(),
            r.owner.to_owned(),
            state,
            r.image.clone(),
            r.uptime_s.map_or_else(|| "-".to_owned(), duration_text),
            r.restarts.to_string(),
        ]);
    }
    let widths: Vec<usize> =
        (0..7).map(|i| table.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The containers `name` means: the container with that id, else the deployment's containers (the running one
/// first). The error says what was looked for and how to see what there is.
pub(super) fn find<'a>(owned: &'a [ContainerInfo], name: &str) -> anyhow::Result<Vec<&'a ContainerInfo>> {
    if let Some(c) = owned.iter().find(|c| c.id == name) {
        return Ok(vec![c]);
    }
    let mut of: Vec<&ContainerInfo> =
        owned.iter().filter(|c| c.labels.get(labels::DEPLOYMENT).is_some_and(|d| d == name)).collect();
    of.sort_by_key(|c| c.state != RunState::Running);
    anyhow::ensure!(
        !of.is_empty(),
        "no container `{name}` and no container of a deployment `{name}` here (see `jetship ps`; for a device's \
         deployment: `jetship logs DEVICE DEPLOYMENT`)"
    );
    Ok(of)
}

/// The config and the backend it names, for a local command.
fn open(
    config: Option<&std::path::Path>,
    log_level: Option<&str>,
) -> anyhow::Result<(Config, tokio::runtime::Runtime)> {
    let loaded = config::load(config)?;
    logging::init(log_level.unwrap_or("warn"), loaded.config.log.format);
    Ok((loaded.config, image_runtime()?))
}

/// `jetship ps`.
pub(super) fn ps(config: Option<&std::path::Path>, log_level: Option<&str>, args: PsArgs) -> anyhow::Result<i32> {
    let (cfg, rt) = open(config, log_level)?;
    let owned = rt.block_on(async { crate::runtime::open(&cfg, None).await?.list_owned().await })?;
    let rows = ps_rows(&owned, &cfg.state_dir, chrono::Utc::now());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", ps_table(&rows));
    }
    Ok(0)
}

/// `jetship stop NAME`: every container `NAME` means is stopped with the grace period, then removed.
pub(super) fn stop(config: Option<&std::path::Path>, log_level: Option<&str>, args: StopArgs) -> anyhow::Result<i32> {
    let (cfg, rt) = open(config, log_level)?;
    let grace = Duration::from_secs(args.time.unwrap_or(cfg.runtime.stop_grace_s));
    rt.block_on(async {
        let backend = crate::runtime::open(&cfg, None).await?;
        let owned = backend.list_owned().await?;
        for c in find(&owned, &args.name)? {
            let code = backend.stop(&c.id, grace).await.with_context(|| format!("cannot stop {}", c.id))?;
            backend.remove(&c.id).await.with_context(|| format!("cannot remove {}", c.id))?;
            match code {
                Some(code) => println!("{} (exit code {code})", c.id),
                None => println!("{}", c.id),
            }
            if c.labels.contains_key(labels::DOC_HASH) {
                let dep = c.labels.get(labels::DEPLOYMENT).map(String::as_str).unwrap_or("-");
                eprintln!(
                    "note: {} belongs to deployment `{dep}`: the agent starts it again while the deployment is \
                     desired (`jetship rm DEVICE {dep}` removes it)",
                    c.id
                );
            }
        }
        Ok(0)
    })
}

/// Prints one log line to stdout or stderr, as the container wrote it.
pub(super) fn print_line(line: &crate::runtime::LogLine) {
    if line.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", line.text);
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line.text).and_then(|_| out.flush());
    }
}

/// `jetship logs NAME [--tail N] [-f]` for a container here: its output, stdout and stderr apart; with `-f`,
/// followed until the container is no longer running or Ctrl-C.
pub(super) fn logs(
    config: Option<&std::path::Path>,
    log_level: Option<&str>,
    name: &str,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<i32> {
    let (cfg, rt) = open(config, log_level)?;
    rt.block_on(async {
        let backend = crate::runtime::open(&cfg, None).await?;
        let owned = backend.list_owned().await?;
        let id = find(&owned, name)?[0].id.clone();
        if !follow {
            backend.logs(&id, tail).await?.iter().for_each(print_line);
            return Ok(0);
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let sink: crate::runtime::LogSink = std::sync::Arc::new(print_line);
        let follower = {
            let (backend, id, stop) = (backend.clone(), id.clone(), stop.clone());
            tokio::spawn(async move { backend.follow_logs(&id, tail, sink, stop).await })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !running(backend.as_ref(), &id).await? {
                        break;
                    }
                }
                _ = int.recv() => break,
                _ = term.recv() => break,
            }
        }
        stop.cancel();
        follower.await.context("the log follower failed")??;
        Ok(0)
    })
}

async fn running(backend: &dyn ContainerRuntime, id: &str) -> anyhow::Result<bool> {
    Ok(backend.inspect(id).await?.is_some_and(|c| matches!(c.state, RunState::Running | RunState::Created)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(id: &str, deployment: &str, agent: bool, state: RunState) -> ContainerInfo {
        let mut labels = BTreeMap::from([
            (labels::DEPLOYMENT.to_owned(), deployment.to_owned()),
            (labels::IMAGE.to_owned(), "reg/app@sha256:00".to_owned()),
        ]);
        if agent {
            labels.insert(labels::DOC_HASH.to_owned(), "abc".to_owned());
        } else {
            labels.insert(labels::OWNER.to_owned(), labels::OWNER_RUN.to_owned());
        }
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        ContainerInfo {
            id: id.into(),
            labels,
            state,
            pid: None,
            exit_code: (state == RunState::Exited).then_some(3),
            oom_killed: false,
            started_at: Some(at),
        }
    }

    #[test]
    fn logs_with_one_name_is_local_and_with_two_goes_to_a_device_and_exec_takes_i_and_t() {
        use clap::Parser;
        let Command::Fleet(FleetCommand::Logs { device, deployment, follow, .. }) =
            Cli::try_parse_from(["jetship", "logs", "-f", "cam"]).unwrap().command
        else {
            panic!("not logs")
        };
        assert_eq!((device.as_str(), deployment, follow), ("cam", None, true));
        let Command::Fleet(FleetCommand::Logs { deployment, .. }) =
            Cli::try_parse_from(["jetship", "logs", "orin-1", "hello", "--tail", "5"]).unwrap().command
        else {
            panic!("not logs")
        };
        assert_eq!(deployment.as_deref(), Some("hello"));
        let Command::Exec(e) = Cli::try_parse_from(["jetship", "exec", "-it", "cam", "--", "sh"]).unwrap().command
        else {
            panic!("not exec")
        };
        assert!(e.interactive && e.tty);
        let Command::Stop(s) = Cli::try_parse_from(["jetship", "stop", "-t", "3", "cam"]).unwrap().command else {
            panic!("not stop")
        };
        assert_eq!((s.name.as_str(), s.time), ("cam", Some(3)));
        assert!(matches!(
            Cli::try_parse_from(["jetship", "ps", "--json"]).unwrap().command,
            Command::Ps(PsArgs { json: true })
        ));
    }

    #[test]
    fn names_find_a_container_id_first_then_a_deployments_containers_running_first() {
        let owned = [
            info("app-1", "app", true, RunState::Exited),
            info("app-2", "app", true, RunState::Running),
            info("cam", "cam", false, RunState::Running),
        ];
        let ids = |n: &str| find(&owned, n).unwrap().iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids("app-1"), ["app-1"]);
        assert_eq!(ids("app"), ["app-2", "app-1"]);
        let err = find(&owned, "nope").unwrap_err().to_string();
        assert!(err.contains("no container `nope`") && err.contains("jetship ps"), "{err}");
    }

    #[test]
    fn ps_shows_owner_state_uptime_and_the_agents_restart_count() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("deployments");
        std::fs::create_dir_all(&state).unwrap();
        let file = br#"{"resolved":null,"rolled_back":null,"restart":{"restarts":4,"consecutive":1,"next_at":null,"last_exit":3}}"#;
        crate::os::fsutil::write_mirrored(&state.join("app.json"), file).unwrap();
        let owned = [info("app-2", "app", true, RunState::Running), info("cam", "cam", false, RunState::Exited)];
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T01:02:03Z").unwrap().to_utc();
        let rows = ps_rows(&owned, dir.path(), now);
        assert_eq!((rows[0].owner, rows[0].restarts, rows[0].uptime_s), ("agent", 4, Some(3723)));
        assert_eq!((rows[1].owner, rows[1].restarts, rows[1].uptime_s, rows[1].exit_code), ("run", 0, None, Some(3)));
        let table = ps_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].ends_with("RESTARTS"), "{table}");
        assert!(lines[1].contains("running") && lines[1].contains("1h02m") && lines[1].ends_with('4'), "{table}");
        assert!(lines[2].contains("exited (3)") && lines[2].contains(" - "), "{table}");
    }
}
