//! The command line: argument definitions (clap) and the dispatch to library code. Output formatting for people
//! lives next to the data it formats; this module only picks text or JSON and maps errors to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::{agent, logging, metrics, probe};

/// Containers for NVIDIA Jetson fleets: JetPack-matched images with the GPU, cameras and host IPC, over MQTT.
#[derive(Debug, Parser)]
#[command(name = "jetship", version, about, long_about = None)]
pub struct Cli {
    /// Agent config file [default: $JETSHIP_CONFIG or /etc/jetship/agent.toml, plus its agent.d/*.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log filter such as `info` or `jetship=debug` (overrides the config; RUST_LOG overrides both).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the device agent (the systemd service).
    Agent,
    /// Print what this host is: Jetson model, L4T/JetPack, GPU injection options, runtimes, cameras.
    Probe(ProbeArgs),
    /// Print one metrics sample (or one per interval with --watch).
    Metrics(MetricsArgs),
    /// Validate an agent config file and its agent.d drop-ins; prints the merged result.
    CheckConfig {
        /// Config file [default: as for --config].
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Read /proc, /sys, /etc and /dev under DIR instead of `host.root` from the config.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print JSON (the schema documented in docs/probe.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Read /proc and /sys under DIR instead of `host.root` from the config.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print JSON (one object per line with --watch).
    #[arg(long)]
    pub json: bool,
    /// Print a sample every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<f64>,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Agent => {
            let loaded = config::load(cli.config.as_deref())?;
            let cfg = loaded.config;
            logging::init(
                cli.log_level.as_deref().unwrap_or(&cfg.log.level),
                cfg.log.format,
            );
            for f in &loaded.files {
                tracing::info!(file = %f.display(), "config loaded");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
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
    logging::init(log_level.unwrap_or("warn"), config::LogFormat::Text);
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
    if err
        .chain()
        .any(|e| e.downcast_ref::<config::Error>().is_some())
    {
        crate::EXIT_CONFIG
    } else {
        1
    }
}
