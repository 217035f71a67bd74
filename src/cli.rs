//! The command line: argument definitions (clap) and the dispatch to library code. Output formatting for people
//! lives next to the data it formats; this module only picks text or JSON and maps errors to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::{agent, fleet, logging, metrics, probe};

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

// Parsed once per process: the size difference between variants (RunArgs) does not matter.
#[allow(clippy::large_enum_variant)]
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
    #[command(flatten)]
    Fleet(FleetCommand),
    /// Pull an image into the store: templates and {auto} resolved for this host, resumable, verified.
    Pull(PullArgs),
    /// Print the reference and digest an image resolves to on this host, then why other tags were rejected.
    Resolve(ResolveArgs),
    /// Delete stored blobs no image record references (each image keeps its current and previous version).
    ImageGc(ImageGcArgs),
    /// Run a container from an image (JetPack-matched tag, pulled and unpacked as needed) and stream its output.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference; may hold {l4t} {l4t_major} {l4t_minor} {jetpack} {jetpack_major} {cuda} and {auto}.
    pub image: String,
    /// Probe the host (for templates and {auto}) under DIR instead of `host.root`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Platform to pull, e.g. linux/arm64 [default: registry.platform, else the host's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print the result as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Image reference, as for `pull`.
    pub image: String,
    /// Probe the host under DIR instead of `host.root`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also name the manifest for this platform [default: registry.platform, else the host's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask this device (over the broker) instead of resolving for this host.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `jetship run`: one container, the way `docker run` does it, with Jetson defaults (host IPC, host network).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container (and its root file system) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Give the container the GPU: `--gpu` for all, `--gpu=nvidia.com/gpu=0` for one CDI device.
    #[arg(long, value_name = "DEVICE", num_args = 0..=1, require_equals = true, default_missing_value = "all")]
    pub gpu: Option<String>,
    /// A camera: `all`, `/dev/video0`, a /dev/v4l/by-id name, or a name substring. Repeatable.
    #[arg(long = "camera", value_name = "SEL")]
    pub cameras: Vec<String>,
    /// `host` (default) or `private`.
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = parse_ipc)]
    pub ipc: crate::runtime::IpcMode,
    /// `host` (default) or `none`.
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = parse_network)]
    pub network: crate::runtime::NetworkMode,
    /// Size of a private /dev/shm (`64m`, `1g`); only with `--ipc private`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub shm_size: Option<u64>,
    /// Environment entry KEY=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind mount HOST:CONTAINER[:ro]. Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<crate::runtime::Volume>,
    /// Replace the image's entrypoint.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// User (`uid[:gid]` or `name[:group]`) instead of the image's.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory instead of the image's.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Container id and deployment label. Defaults to `run-<random>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the container id and return instead of streaming its output.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Image platform (`linux/arm64`). Defaults to the host's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Image reference; tags may use `{auto}` or `{jetpack}` templates.
    pub image: String,
    /// Command (replaces the image's CMD; the entrypoint stays).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_ipc(s: &str) -> Result<crate::runtime::IpcMode, String> {
    match s {
        "host" => Ok(crate::runtime::IpcMode::Host),
        "private" => Ok(crate::runtime::IpcMode::Private),
        other => Err(format!("`{other}`: use host or private")),
    }
}

fn parse_network(s: &str) -> Result<crate::runtime::NetworkMode, String> {
    match s {
        "host" => Ok(crate::runtime::NetworkMode::Host),
        "none" => Ok(crate::runtime::NetworkMode::None),
        other => Err(format!("`{other}`: use host or none")),
    }
}

/// A size such as `64m`, `1g`, `512k` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a size: use e.g. 64m, 1g or a number of bytes"))
}

/// `HOST:CONTAINER[:ro|:rw]`, both absolute.
pub fn parse_volume(s: &str) -> Result<crate::runtime::Volume, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, ro) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => return Err(format!("`{s}`: use HOST:CONTAINER or HOST:CONTAINER:ro")),
    };
    if !host.starts_with('/') || !ctr.starts_with('/') {
        return Err(format!("`{s}`: both paths must be absolute"));
    }
    Ok(crate::runtime::Volume { host: host.into(), container: ctr.into(), read_only: ro })
}

#[derive(Debug, Args)]
pub struct ImageGcArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Controller and broker commands (docs/protocol.md).
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Run the embedded MQTT broker standalone (plain MQTT, no TLS, no auth: for a lab or a single site).
    Broker {
        /// Address to listen on; use 0.0.0.0:1883 to accept devices on the network.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
        listen: std::net::SocketAddr,
    },
    /// List the fleet: every device with retained state on the broker, its facts and latest telemetry.
    Devices {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Print JSON (an array of rows).
        #[arg(long)]
        json: bool,
        /// Give up waiting for the broker's retained messages after SECS seconds.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
    },
    /// Show one device in detail: presence, host facts, applied state, latest telemetry.
    Status {
        /// Device id.
        device: String,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Print JSON (status, host, telemetry and reported as published).
        #[arg(long)]
        json: bool,
        /// Give up after SECS seconds.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
    },
    /// Measure the round trip to a device's agent (cmd/<id> -> reply/<id>).
    Ping {
        /// Device id.
        device: String,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Number of pings.
        #[arg(long, short = 'c', default_value_t = 1)]
        count: u32,
        /// Seconds to wait for each reply.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
    },
    /// Publish a deployment document (retained) to a device or `group:NAME`; with --wait, follow every device
    /// until it converged (exit 0) or failed.
    Deploy {
        /// Device id, or `group:NAME`.
        target: String,
        /// Deployment document (TOML, YAML or JSON); without `generation` the next one is filled in.
        #[arg(short = 'f', long, value_name = "FILE")]
        file: PathBuf,
        /// Follow each device: resolving, pulling, starting, healthy / failed with the reason.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after SECS seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600.0)]
        timeout: f64,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Remove one deployment: publishes the target's current document without it.
    Rm {
        /// Device id, or `group:NAME`.
        target: String,
        /// Deployment name.
        deployment: String,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Print a deployment's container output from a device.
    Logs {
        /// Device id.
        device: String,
        /// Deployment name.
        deployment: String,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Also collect what it writes for --follow-secs seconds (one answer at the end).
        #[arg(short = 'f', long)]
        follow: bool,
        /// How long -f follows (at most 60).
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        follow_secs: u64,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Restart a deployment's container on a device.
    Restart {
        /// Device id.
        device: String,
        /// Deployment name.
        deployment: String,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Simulate many devices with the agent's link code in one process (benchmarks).
    #[command(hide = true)]
    SimFleet(crate::sim::SimArgs),
}

/// Broker access for controller commands. Flags win over the environment, which wins over
/// ~/.config/jetship/cli.toml ([broker] url, ca_file, client_cert, client_key, username, password_file).
#[derive(Debug, Args, Clone, Default)]
pub struct BrokerArgs {
    /// Broker URL, mqtt://HOST[:PORT] or mqtts://HOST[:PORT] [default: mqtt://127.0.0.1:1883].
    #[arg(long, env = "JETSHIP_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// PEM CA certificate for mqtts.
    #[arg(long, env = "JETSHIP_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, env = "JETSHIP_CLIENT_CERT", value_name = "PATH")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, env = "JETSHIP_CLIENT_KEY", value_name = "PATH")]
    pub client_key: Option<PathBuf>,
    /// Username.
    #[arg(long, env = "JETSHIP_USERNAME")]
    pub username: Option<String>,
    /// File whose first line is the password.
    #[arg(long, env = "JETSHIP_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn access(&self) -> anyhow::Result<crate::mqtt::BrokerAccess> {
        let path = fleet::cli_config_path();
        let file = fleet::load_cli_file(&path)?;
        let over = fleet::CliBroker {
            url: self.broker.clone(),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
        };
        Ok(fleet::resolve_access(&file.broker, &over))
    }
}

fn secs(what: &str, s: f64) -> anyhow::Result<Duration> {
    if s.is_finite() && s > 0.0 && s <= 3600.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        anyhow::bail!("{what} {s}: must be a number of seconds between 0 and 3600")
    }
}

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

fn run_fleet(cmd: FleetCommand, log_level: Option<&str>) -> anyhow::Result<i32> {
    logging::init(log_level.unwrap_or("warn"), config::LogFormat::Text);
    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    };
    match cmd {
        FleetCommand::Broker { listen } => {
            logging::init(log_level.unwrap_or("info"), config::LogFormat::Text);
            crate::broker::run(listen)?;
            Ok(0)
        }
        FleetCommand::Devices { broker, json, timeout } => {
            let access = broker.access()?;
            let limit = secs("--timeout", timeout)?;
            let devices = small_runtime()?.block_on(fleet::snapshot(&access, "+", limit))?;
            let rows: Vec<fleet::DeviceRow> = devices.values().map(|d| d.row()).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                eprintln!("no devices on {}", access.url);
            } else {
                print!("{}", fleet::table(&rows, now_ms()));
            }
            Ok(0)
        }
        FleetCommand::Status { device, broker, json, timeout } => {
            crate::protocol::Topics::new(&device)?;
            let access = broker.access()?;
            let limit = secs("--timeout", timeout)?;
            let devices = small_runtime()?.block_on(fleet::snapshot(&access, &device, limit))?;
            let Some(view) = devices.get(&device) else {
                anyhow::bail!(
                    "device `{device}` has published nothing on {}: check the id with `jetship devices`",
                    access.url
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
            let access = broker.access()?;
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
            run_deploy(&target, &file, wait, secs("--timeout", timeout)?, &broker.access()?)
        }
        FleetCommand::Rm { target, deployment, broker } => {
            let access = broker.access()?;
            let target = crate::deploy::Target::parse(&target)?;
            let rt = small_runtime()?;
            let limit = Duration::from_secs(10);
            let Some(mut doc) = rt.block_on(crate::deploy::current_document(&access, &target, limit))? else {
                anyhow::bail!("no document on {}: nothing to remove", target.desired_topic());
            };
            if doc.deployments.remove(&deployment).is_none() {
                anyhow::bail!("deployment `{deployment}` is not in the document on {}", target.desired_topic());
            }
            doc.generation = Some(crate::deploy::next_generation(None, Some(&doc)));
            rt.block_on(crate::deploy::publish_document(&access, &target, &doc, limit))?;
            println!("removed {deployment}: generation {} on {}", doc.generation.unwrap_or(0), target.desired_topic());
            Ok(0)
        }
        FleetCommand::Logs { device, deployment, tail, follow, follow_secs, broker } => {
            let access = broker.access()?;
            let mut args = serde_json::json!({ "deployment": deployment, "tail": tail });
            if follow {
                args["follow_s"] = follow_secs.into();
            }
            let limit = Duration::from_secs(15 + if follow { follow_secs } else { 0 });
            let reply = small_runtime()?.block_on(crate::deploy::command(&access, &device, "logs", args, limit))?;
            let result = command_result(&device, reply)?;
            let mut out = std::io::stdout().lock();
            for line in result.get("lines").and_then(|l| l.as_array()).into_iter().flatten() {
                let text = line.get("text").and_then(|t| t.as_str()).unwrap_or("");
                writeln!(out, "{}", text.trim_end_matches('\n'))?;
            }
            Ok(0)
        }
        FleetCommand::Restart { device, deployment, broker } => {
            let access = broker.access()?;
            let args = serde_json::json!({ "deployment": deployment });
            let limit = Duration::from_secs(60);
            let reply = small_runtime()?.block_on(crate::deploy::command(&access, &device, "restart", args, limit))?;
            let result = command_result(&device, reply)?;
            println!("restarted {deployment} on {device} ({})", result["container"].as_str().unwrap_or("?"));
            Ok(0)
        }
        FleetCommand::SimFleet(args) => {
            logging::init(log_level.unwrap_or("warn"), config::LogFormat::Text);
            crate::sim::run(args)?;
            Ok(0)
        }
    }
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
            logging::init(cli.log_level.as_deref().unwrap_or(&cfg.log.level), cfg.log.format);
            for f in &loaded.files {
                tracing::info!(file = %f.display(), "config loaded");
            }
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
        Command::Fleet(cmd) => run_fleet(cmd, cli.log_level.as_deref()),
        Command::Pull(args) => run_pull(&cli.config, cli.log_level.as_deref(), args),
        Command::Resolve(args) => run_resolve(&cli.config, cli.log_level.as_deref(), args),
        Command::ImageGc(args) => run_image_gc(&cli.config, cli.log_level.as_deref(), args),
        Command::Run(args) => run_container(&cli.config, cli.log_level.as_deref(), args),
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

/// Loads the config strictly (image commands write to the state dir) and sets up logging.
fn image_config(path: &Option<PathBuf>, log_level: Option<&str>) -> anyhow::Result<Config> {
    let loaded = config::load(path.as_deref())?;
    logging::init(log_level.unwrap_or("warn"), loaded.config.log.format);
    Ok(loaded.config)
}

fn image_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn host_vars(cfg: &Config, root: Option<PathBuf>) -> crate::reference::TemplateVars {
    let root = root.unwrap_or_else(|| cfg.host.root.clone());
    crate::reference::TemplateVars::from_facts(&probe::probe(&root, &cfg.state_dir))
}

fn run_pull(config: &Option<PathBuf>, log_level: Option<&str>, args: PullArgs) -> anyhow::Result<i32> {
    use crate::pull::{self, Progress, PullOptions};
    let cfg = image_config(config, log_level)?;
    let vars = host_vars(&cfg, args.root);
    let opts = PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client = crate::registry::Client::new(crate::registry::ClientOptions::from_config(&cfg.registry)?)?;
    let store = crate::image_store::ImageStore::open(&cfg.state_dir)?;
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
pub fn pull_summary(r: &crate::pull::PullReport) -> String {
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

/// The result of a command reply, or its error as the CLI's error.
fn command_result(device: &str, reply: crate::protocol::Reply) -> anyhow::Result<serde_json::Value> {
    if reply.ok {
        Ok(reply.result.unwrap_or_default())
    } else {
        anyhow::bail!("{device}: {}", reply.error.unwrap_or_default())
    }
}

fn run_deploy(
    target: &str,
    file: &std::path::Path,
    wait: bool,
    limit: Duration,
    access: &crate::mqtt::BrokerAccess,
) -> anyhow::Result<i32> {
    use crate::deploy::{self, Progress, Target};
    let target = Target::parse(target)?;
    let mut doc = crate::deployment::read_file(file)?;
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

fn run_resolve(config: &Option<PathBuf>, log_level: Option<&str>, args: ResolveArgs) -> anyhow::Result<i32> {
    use crate::pull::{self, PullOptions};
    if let Some(device) = &args.device {
        logging::init(log_level.unwrap_or("warn"), config::LogFormat::Text);
        let access = args.broker.access()?;
        let a = serde_json::json!({ "image": args.image });
        let reply = small_runtime()?.block_on(crate::deploy::command(
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
            for c in result["decision"]["candidates"].as_array().into_iter().flatten() {
                let tag = c["tag"].as_str().unwrap_or("?");
                match &c["rejection"] {
                    serde_json::Value::Null => println!("  {tag}: chosen"),
                    r => println!("  {tag}: rejected: {r}"),
                }
            }
        }
        return Ok(0);
    }
    let cfg = image_config(config, log_level)?;
    let vars = host_vars(&cfg, args.root);
    let opts = PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client = crate::registry::Client::new(crate::registry::ClientOptions::from_config(&cfg.registry)?)?;
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
                        &serde_json::json!({"name": image, "chosen": null, "decision": decision})
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
pub fn explain(d: &crate::resolve::Decision) -> String {
    let mut out = format!("host L4T {}, pattern `{}`\n", d.host, d.pattern);
    for (tag, why) in d.rejected() {
        out.push_str(&format!("rejected {tag}: {why}\n"));
    }
    if d.unmatched > 0 {
        out.push_str(&format!("({} other tags do not match the pattern)\n", d.unmatched));
    }
    out
}

fn run_image_gc(config: &Option<PathBuf>, log_level: Option<&str>, args: ImageGcArgs) -> anyhow::Result<i32> {
    let cfg = image_config(config, log_level)?;
    let store = crate::image_store::ImageStore::open(&cfg.state_dir)?;
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
    if err.chain().any(|e| e.downcast_ref::<config::Error>().is_some()) {
        crate::EXIT_CONFIG
    } else {
        1
    }
}

/// `jetship run`: resolve (JetPack-matched), pull, unpack, create, start; then stream the output and exit with
/// the container's code, or print the id with `-d`. SIGINT/SIGTERM stop the container with the grace period.
fn run_container(config: &Option<PathBuf>, log_level: Option<&str>, args: RunArgs) -> anyhow::Result<i32> {
    use crate::runtime::{self, labels, ContainerConfig};
    let cfg = image_config(config, log_level)?;
    let vars = host_vars(&cfg, None);
    let opts = crate::pull::PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client = crate::registry::Client::new(crate::registry::ClientOptions::from_config(&cfg.registry)?)?;
    let store = crate::image_store::ImageStore::open(&cfg.state_dir)?;
    let id = args.name.clone().unwrap_or_else(|| format!("run-{:08x}", rand::random::<u32>()));
    let grace = Duration::from_secs(cfg.runtime.stop_grace_s);
    let rt = image_runtime()?;
    let backend = rt.block_on(runtime::open(&cfg))?;
    rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        // The Docker Engine keeps its own image store: resolve and pin here, let the Engine pull the digest.
        let pulled = if backend.name() == "docker" {
            crate::pull::resolve(&client, &args.image, &vars).await.map(|r| r.reference.to_string())
        } else {
            crate::pull::pull(&client, &store, &args.image, &vars, &opts, None, cancel).await.map(|r| r.record.resolved)
        };
        let image = match pulled {
            Ok(resolved) => resolved,
            // Offline (or the registry is down): a copy pulled earlier under the same name still runs.
            Err(err) => match local_image(&store, &args.image, &vars) {
                Some(resolved) => {
                    eprintln!("warning: cannot pull {} ({err}); running the local copy {resolved}", args.image);
                    resolved
                }
                None => return Err(anyhow::Error::new(err).context(format!("cannot pull {}", args.image))),
            },
        };
        backend.ensure_image(&image).await.with_context(|| format!("cannot unpack {image}"))?;
        let container = ContainerConfig {
            image: image.clone(),
            entrypoint: args.entrypoint.clone().map(|e| vec![e]),
            args: (!args.command.is_empty()).then(|| args.command.clone()),
            env: args.env.clone(),
            working_dir: args.workdir.clone(),
            user: args.user.clone(),
            ipc: args.ipc,
            network: args.network,
            shm_size_bytes: args.shm_size,
            volumes: args.volumes.clone(),
            gpu: args.gpu.clone(),
            cameras: args.cameras.clone(),
            ..Default::default()
        };
        let deployment = args.name.clone().unwrap_or_else(|| id.clone());
        let labels = std::collections::BTreeMap::from([(labels::DEPLOYMENT.to_string(), deployment)]);
        backend.create(&id, &container, labels).await.with_context(|| format!("cannot create container {id}"))?;
        if let Err(e) = backend.start(&id).await {
            let _ = backend.remove(&id).await;
            return Err(anyhow::Error::new(e).context(format!("cannot start container {id}")));
        }
        if args.detach {
            println!("{id}");
            return Ok(0);
        }
        let code = follow(backend.as_ref(), &id, grace).await?;
        if args.rm {
            backend.remove(&id).await.with_context(|| format!("cannot remove container {id}"))?;
        }
        Ok(code)
    })
}

/// The pinned reference of an image stored under `input`'s name (templates expanded; `{auto}` names are stored
/// unexpanded), if it was pulled before.
fn local_image(
    store: &crate::image_store::ImageStore,
    input: &str,
    vars: &crate::reference::TemplateVars,
) -> Option<String> {
    let expanded = crate::reference::expand(input, vars).ok()?;
    let name = crate::reference::Reference::parse(&expanded).ok()?.to_string();
    store.record(&name).ok().flatten().map(|r| r.resolved)
}

/// Streams the container's output until it exits; stops it on SIGINT/SIGTERM. Returns its exit code.
async fn follow(backend: &dyn crate::runtime::ContainerRuntime, id: &str, grace: Duration) -> anyhow::Result<i32> {
    use crate::runtime::RunState;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut printed = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if stop {
            eprintln!("stopping {id} (grace {} s)", grace.as_secs());
            backend.stop(id, grace).await?;
        }
        let state = backend.inspect(id).await?;
        let lines = backend.logs(id, None).await?;
        // A second rotation drops the oldest file: the count then restarts from what is left.
        if lines.len() < printed {
            printed = 0;
        }
        {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for l in &lines[printed..] {
                if l.stream == "stderr" {
                    writeln!(err, "{}", l.text)?;
                } else {
                    writeln!(out, "{}", l.text)?;
                }
            }
            out.flush()?;
        }
        printed = lines.len();
        match state {
            None => anyhow::bail!("container {id} disappeared while running"),
            Some(s) if matches!(s.state, RunState::Exited | RunState::Missing) => {
                if let Some(code) = s.exit_code {
                    return Ok(code);
                }
                if s.state == RunState::Missing {
                    anyhow::bail!("container {id} is gone from the runtime without an exit code");
                }
            }
            Some(_) => {}
        }
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
        assert_eq!((r.ipc, r.network), (crate::runtime::IpcMode::Host, crate::runtime::NetworkMode::Host));
        assert_eq!(r.image, "img");
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        let cli = Cli::try_parse_from(["jetship", "run", "--gpu=nvidia.com/gpu=0", "img"]).unwrap();
        let Command::Run(r) = cli.command else { panic!("not run") };
        assert_eq!(r.gpu.as_deref(), Some("nvidia.com/gpu=0"));
        assert!(Cli::try_parse_from(["jetship", "run", "--ipc", "shared", "img"]).is_err());
    }
}
