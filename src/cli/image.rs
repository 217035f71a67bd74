//! Image commands: pull, resolve and image gc.

use super::*;

/// Loads the config strictly (image commands write to the state dir) and sets up logging.
pub(super) fn image_config(path: &Option<PathBuf>, log_level: Option<&str>) -> anyhow::Result<Config> {
    let loaded = config::load(path.as_deref())?;
    logging::init(log_level.unwrap_or("warn"), loaded.config.log.format);
    Ok(loaded.config)
}

pub(super) fn image_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The template variables of the host, from the probe. The probe's warnings go to stderr: they include every
/// problem with the L4T release (`L4T_VERSION` that does not parse, a truncated nv_tegra_release), which decides
/// the image.
pub(super) fn host_vars(cfg: &Config, root: Option<PathBuf>) -> (crate::image::reference::TemplateVars, Vec<String>) {
    let root = root.unwrap_or_else(|| cfg.host.root.clone());
    let facts = probe::probe(&root, &cfg.state_dir);
    for w in &facts.warnings {
        eprintln!("warning: {w}");
    }
    (crate::image::reference::TemplateVars::from_facts(&facts), facts.warnings)
}

pub(super) fn run_pull(config: &Option<PathBuf>, log_level: Option<&str>, args: PullArgs) -> anyhow::Result<i32> {
    use crate::image::pull::{self, Progress, PullOptions};
    let cfg = image_config(config, log_level)?;
    let (vars, _) = host_vars(&cfg, args.root);
    let opts = PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client =
        crate::image::registry::Client::new(crate::image::registry::ClientOptions::from_config(&cfg.registry)?)?;
    let store = crate::image::store::ImageStore::open(&cfg.state_dir)?;
    let bars = indicatif::MultiProgress::new();
    if args.quiet || args.json {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let by_blob = std::sync::Mutex::new(std::collections::HashMap::<String, indicatif::ProgressBar>::new());
    let sink: pull::ProgressSink = std::sync::Arc::new(move |p: &Progress| {
        let mut map = by_blob.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::BlobStarted { digest, size, offset } => {
                let bar = map.entry(digest.clone()).or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(*size));
                    b.set_style(style.clone());
                    b.set_prefix(digest.trim_start_matches("sha256:").chars().take(12).collect::<String>());
                    b
                });
                bar.set_position(*offset);
                if *offset > 0 {
                    bar.set_message(format!("resumed at {}", indicatif::HumanBytes(*offset)));
                }
            }
            Progress::BlobBytes { digest, bytes } => {
                if let Some(b) = map.get(digest) {
                    b.inc(*bytes);
                }
            }
            Progress::BlobRetry { digest, attempt, error } => {
                if let Some(b) = map.get(digest) {
                    b.set_message(format!("retry {attempt}: {error}"));
                }
            }
            Progress::BlobDone { digest, cached } => {
                if let Some(b) = map.get(digest) {
                    b.finish_with_message("done");
                } else if !*cached {
                    tracing::debug!(%digest, "blob done without a bar");
                }
            }
            Progress::Planned { .. } => {}
        }
    });
    let rt = image_runtime()?;
    let report = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c2.cancel();
            }
        });
        pull::pull(&client, &store, &args.image, &vars, &opts, Some(sink), cancel).await
    })?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["elapsed_s"] = serde_json::json!(report.elapsed.as_secs_f64());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", pull_summary(&report));
    }
    Ok(0)
}

/// The summary line `jetship pull` prints: what was pulled, bytes, time, rate.
pub(crate) fn pull_summary(r: &crate::image::pull::PullReport) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-6);
    format!(
        "pulled {}\n  {} in {} blobs: {} downloaded, {} reused, {:.1} s, {:.1} MB/s",
        r.record.resolved,
        indicatif::HumanBytes(r.total_bytes),
        r.record.layers.len() + 1,
        indicatif::HumanBytes(r.downloaded_bytes),
        indicatif::HumanBytes(r.reused_bytes),
        secs,
        r.downloaded_bytes as f64 / 1e6 / secs
    )
}

pub(super) fn run_resolve(config: &Option<PathBuf>, log_level: Option<&str>, args: ResolveArgs) -> anyhow::Result<i32> {
    use crate::image::pull::{self, PullOptions};
    if let Some(device) = &args.device {
        logging::init(log_level.unwrap_or("warn"), crate::base::LogFormat::Text);
        let access = args.broker.access(config.as_deref())?;
        let a = serde_json::json!({ "image": args.image });
        let reply = small_runtime()?.block_on(crate::controller::deploy::command(
            &access,
            device,
            "resolve",
            a,
            Duration::from_secs(60),
        ))?;
        let result = command_result(device, reply)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            println!("{}", result["reference"].as_str().unwrap_or("?"));
            println!(
                "on {device}: L4T {} JetPack {}",
                result["l4t"].as_str().unwrap_or("-"),
                result["jetpack"].as_str().unwrap_or("-")
            );
            for w in result["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {device}: {}", w.as_str().unwrap_or_default());
            }
            match serde_json::from_value::<Option<crate::image::resolve::Decision>>(result["decision"].clone()) {
                Ok(Some(d)) => print!("{}", explain(&d)),
                Ok(None) => {}
                // An agent of another version: show what it sent.
                Err(_) => println!("{}", result["decision"]),
            }
        }
        return Ok(0);
    }
    let cfg = image_config(config, log_level)?;
    let (vars, warnings) = host_vars(&cfg, args.root);
    let opts = PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client =
        crate::image::registry::Client::new(crate::image::registry::ClientOptions::from_config(&cfg.registry)?)?;
    let rt = image_runtime()?;
    let outcome = rt.block_on(async {
        let res = pull::resolve(&client, &args.image, &vars).await?;
        let platform = pull::platform_manifest(&client, &res.reference, &res.manifest, &opts.platform).await;
        Ok::<_, pull::Error>((res, platform))
    });
    let (res, platform) = match outcome {
        Ok(v) => v,
        // No tag fits: still print every candidate's reason before failing.
        Err(pull::Error::NoCompatibleTag { image, host, decision, .. }) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"name": image, "chosen": null, "decision": decision, "warnings": warnings})
                    )?
                );
            } else {
                println!("no tag of {image} fits L4T {host}");
                print!("{}", explain(&decision));
            }
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let digest = res.reference.digest.clone().unwrap_or_default();
    let platform_line = match &platform {
        Ok((Some(_), m)) => Some(format!("platform {}: {}", opts.platform, m.digest)),
        Ok((None, _)) => None,
        Err(e) => Some(format!("platform {}: {e}", opts.platform)),
    };
    if args.json {
        let v = serde_json::json!({
            "name": res.name,
            "reference": res.reference.to_string(),
            "digest": digest,
            "media_type": res.manifest.media_type,
            "platform": opts.platform.to_string(),
            "platform_manifest": platform.as_ref().ok().map(|(_, m)| m.digest.clone()),
            "decision": res.decision,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", res.reference);
        if let Some(l) = platform_line {
            println!("{l}");
        }
        if let Some(d) = &res.decision {
            print!("{}", explain(d));
        }
    }
    Ok(0)
}

/// The per-candidate explanation lines of `jetship resolve`.
pub(crate) fn explain(d: &crate::image::resolve::Decision) -> String {
    let mut out = format!("host L4T {}, pattern `{}`\n", d.host, d.pattern);
    if let (Some(tag), Some(why)) = (&d.chosen, &d.chosen_because) {
        out.push_str(&format!("chosen {tag}: {why}\n"));
    }
    for (tag, why) in d.rejected() {
        out.push_str(&format!("rejected {tag}: {why}\n"));
    }
    if d.unmatched > 0 {
        out.push_str(&format!("({} other tags do not match the pattern)\n", d.unmatched));
    }
    out
}

pub(super) fn run_image_gc(
    config: &Option<PathBuf>,
    log_level: Option<&str>,
    args: ImageGcArgs,
) -> anyhow::Result<i32> {
    let cfg = image_config(config, log_level)?;
    let store = crate::image::store::ImageStore::open(&cfg.state_dir)?;
    let report = store.gc(None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "removed {} blobs ({}), {} partial downloads; kept {} blobs",
            report.removed_blobs,
            indicatif::HumanBytes(report.removed_bytes),
            report.removed_partials,
            report.kept_blobs
        );
    }
    Ok(0)
}
