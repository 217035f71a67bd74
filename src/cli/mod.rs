//! The command line: argument definitions (clap) and the dispatch to library code. Output formatting for people
//! lives next to the data it formats; this module only picks text or JSON and maps errors to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::{agent, controller::fleet, host::metrics, host::probe, os::logging};

mod args;
mod container;
mod controller;
mod image;
mod local;

pub use args::*;
use container::*;
use controller::*;
use image::*;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Agent => {
            let loaded = config::load(cli.config.as_deref())?;
            let cfg = loaded.config;
            logging::init(cli.log_level.as_deref().unwrap_or(&cfg.log.level), cfg.log.format);
            for f in &loaded.files {
                tracing::info!(file = %f.display(), "config loaded");
            }
            // Before any thread allocates: the blocking pool's threads share two malloc arenas (os::memory).
            crate::os::memory::limit_malloc_arenas();
            // One thread for the agent's tasks: it is an IO-light service, and every worker thread costs a stack
            // and a malloc arena (docs/benchmarks.md, agent footprint). Blocking work (sysfs reads, fsync, unpacking,
            // the pull engine through Handle::block_on) runs on tokio's blocking pool, which this thread drives.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let shutdown = agent::shutdown_on_signals()?;
                agent::run(cfg, shutdown).await
            })?;
            Ok(0)
        }
        Command::Probe(args) => {
            let cfg = optional_config(&cli.config, cli.log_level.as_deref());
            let root = args.root.unwrap_or(cfg.host.root);
            let facts = probe::probe(&root, &cfg.state_dir);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&facts)?);
            } else {
                print!("{}", facts.to_text());
            }
            Ok(0)
        }
        Command::Metrics(args) => {
            let cfg = optional_config(&cli.config, cli.log_level.as_deref());
            let root = args.root.unwrap_or(cfg.host.root);
            let mut sampler = metrics::Sampler::new(root, cfg.state_dir);
            let interval = match args.watch {
                Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
                Some(s) => {
                    anyhow::bail!("--watch {s}: the interval must be a positive number of seconds")
                }
                None => None,
            };
            let stdout = std::io::stdout();
            loop {
                let started = std::time::Instant::now();
                let sample = sampler.sample();
                let mut out = stdout.lock();
                if args.json {
                    writeln!(out, "{}", serde_json::to_string(&sample)?)?;
                } else {
                    writeln!(out, "{}", sample.to_text())?;
                }
                out.flush()?;
                match interval {
                    Some(i) => std::thread::sleep(i.saturating_sub(started.elapsed())),
                    None => return Ok(0),
                }
            }
        }
        Command::Fleet(cmd) => run_fleet(cmd, cli.config.as_deref(), cli.log_level.as_deref()),
        Command::Pull(args) => run_pull(&cli.config, cli.log_level.as_deref(), args),
        Command::Resolve(args) => run_resolve(&cli.config, cli.log_level.as_deref(), args),
        Command::ImageGc(args) => run_image_gc(&cli.config, cli.log_level.as_deref(), args),
        Command::Run(args) => run_container(&cli.config, cli.log_level.as_deref(), args),
        Command::Exec(args) => exec_in_container(&cli.config, cli.log_level.as_deref(), args),
        Command::Ps(args) => local::ps(cli.config.as_deref(), cli.log_level.as_deref(), args),
        Command::Stop(args) => local::stop(cli.config.as_deref(), cli.log_level.as_deref(), args),
        Command::CheckConfig { path } => {
            let path = path.or(cli.config);
            let loaded = config::load(path.as_deref())?;
            for f in &loaded.files {
                eprintln!("read {}", f.display());
            }
            print!("{}", toml::to_string(&loaded.config)?);
            Ok(0)
        }
    }
}

/// Loads the config for commands that can run without one: problems become a warning and defaults are used.
fn optional_config(path: &Option<PathBuf>, log_level: Option<&str>) -> Config {
    logging::init(log_level.unwrap_or("warn"), crate::base::LogFormat::Text);
    match config::load(path.as_deref()) {
        Ok(l) => l.config,
        Err(err) => {
            tracing::warn!("{err}; using defaults");
            Config::default()
        }
    }
}

/// Maps an error to the process exit code: configuration errors get EX_CONFIG (78), everything else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.downcast_ref::<config::Error>().is_some()) {
        crate::EXIT_CONFIG
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "0", "m", "1x", "-5m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_parse_host_container_and_ro() {
        let v = parse_volume("/data:/mnt/data:ro").unwrap();
        assert_eq!((v.host.to_str(), v.container.to_str(), v.read_only), (Some("/data"), Some("/mnt/data"), true));
        assert!(!parse_volume("/a:/b").unwrap().read_only);
        assert!(!parse_volume("/a:/b:rw").unwrap().read_only);
        for bad in ["/a", "a:/b", "/a:b", "/a:/b:xx", "/a:/b:ro:1"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_arguments_default_to_host_ipc_and_network_and_keep_the_command() {
        let cli = Cli::try_parse_from(["jetship", "run", "--gpu", "img", "sh", "-c", "echo hi"]).unwrap();
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.gpu.as_deref(), Some("all"));
        assert_eq!((r.ipc, r.network), (crate::base::IpcMode::Host, crate::base::NetworkMode::Host));
        assert_eq!(r.image, "img");
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        let cli = Cli::try_parse_from(["jetship", "run", "--gpu=nvidia.com/gpu=0", "img"]).unwrap();
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.gpu.as_deref(), Some("nvidia.com/gpu=0"));
        assert!(Cli::try_parse_from(["jetship", "run", "--ipc", "shared", "img"]).is_err());
    }

    #[test]
    fn exec_takes_a_name_and_the_command_after_the_separator() {
        let cli =
            Cli::try_parse_from(["jetship", "exec", "--timeout", "5", "yolo", "--", "sh", "-c", "id -u"]).unwrap();
        let Command::Exec(e) = cli.command else { panic!("not exec") };
        assert_eq!((e.name.as_str(), e.timeout), ("yolo", Some(5.0)));
        assert_eq!(e.command, ["sh", "-c", "id -u"]);
        assert!(Cli::try_parse_from(["jetship", "exec", "yolo"]).is_err(), "a command is required");
    }
}
