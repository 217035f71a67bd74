//! The command line's clap definitions. Their doc comments are the `--help` text, not Markdown.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use super::*;

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
    /// Run a command in a running container on this device, confined as the container is (its user,
    /// capabilities, seccomp, AppArmor, no_new_privs, cgroup, environment); exits with the command's code.
    Exec(ExecArgs),
    /// List the containers on this device that the agent or `jetship run` made: name, deployment, state, image,
    /// uptime, restarts.
    Ps(PsArgs),
    /// Stop a container on this device (SIGTERM, SIGKILL after the grace period) and remove it.
    Stop(StopArgs),
}

/// `jetship ps`: what the backend owns, read from it (no agent needed). Needs root, like the agent.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON (an array of rows).
    #[arg(long)]
    pub json: bool,
}

/// `jetship stop NAME`: stop and remove. A deployment's container comes back while the agent runs it: remove the
/// deployment (`jetship rm DEVICE DEPLOYMENT`) to keep it stopped.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL [default: runtime.stop_grace_s].
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    pub time: Option<u64>,
    /// A container id, or a deployment's name (its containers).
    pub name: String,
}

/// `jetship exec NAME -- CMD...`: the backend's exec (runc/crun exec, or the Docker Engine's), never a host
/// process entering the container's namespaces. Needs root, like the agent.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Kill the command after this many seconds [default: no limit].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Keep stdin open: this process's stdin goes to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal (this process's, which is set raw meanwhile; needs one).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// A deployment's name (its running container) or a container id.
    pub name: String,
    /// The command and its arguments, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
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
    /// A camera: `all`, `csi` (the CSI cameras, with nvargus-daemon's socket), `/dev/video0`, a /dev/v4l/by-id
    /// name, or a name substring. Repeatable.
    #[arg(long = "camera", value_name = "SEL")]
    pub cameras: Vec<String>,
    /// A host device HOST[:CONTAINER][:PERMS]: a node (/dev/ttyACM0), renamed (/dev/i2c-1:/dev/i2c-7:rw), a
    /// glob (/dev/ttyUSB*) or a directory (/dev/bus/usb). Repeatable.
    #[arg(long = "device", value_name = "HOST[:CTR][:PERMS]", value_parser = crate::runtime::devices::DeviceRequest::parse)]
    pub devices: Vec<crate::runtime::devices::DeviceRequest>,
    /// Every capability, every host device, no seccomp or AppArmor, a writable /sys (Docker's --privileged).
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability to Docker's default set (NET_ADMIN). Repeatable.
    #[arg(long = "cap-add", value_name = "CAP", value_parser = parse_cap)]
    pub cap_add: Vec<String>,
    /// Drop a capability from the set (NET_RAW, or ALL). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = parse_cap_drop)]
    pub cap_drop: Vec<String>,
    /// A supplementary group of the process (video, or a gid). Repeatable.
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// A resource limit NAME=SOFT[:HARD] (nofile=1024:4096, memlock=-1). Repeatable.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = crate::runtime::privileges::Ulimit::parse)]
    pub ulimits: Vec<crate::runtime::privileges::Ulimit>,
    /// Most tasks the container may run. Defaults to 4096.
    #[arg(long = "pids-limit", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_limit: Option<u64>,
    /// A namespaced sysctl KEY=VALUE (net.* without host networking, kernel.shm* with --ipc private). Repeatable.
    #[arg(long = "sysctl", value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    pub sysctls: Vec<(String, String)>,
    /// Mount the image's root file system read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// A tmpfs mount PATH[:OPTIONS] (/run:size=64m). Repeatable.
    #[arg(long = "tmpfs", value_name = "PATH[:OPTS]", value_parser = crate::runtime::privileges::Tmpfs::parse)]
    pub tmpfs: Vec<crate::runtime::privileges::Tmpfs>,
    /// Jetson conveniences, comma-separated: argus, display, audio, usb, localtime, l4t-release, model (each
    /// what jetson-containers' run.sh passes for it; docs/runtime.md). Repeatable.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = crate::base::jetson::Convenience::parse)]
    pub jetson: Vec<crate::base::jetson::Convenience>,
    /// `host` (default) or `private`.
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = parse_ipc)]
    pub ipc: crate::base::IpcMode,
    /// `host` (default), `none`, or `bridge` (the agent's bridge; publish ports with `-p`).
    #[arg(long, value_name = "MODE", default_value = "host", value_parser = parse_network)]
    pub network: crate::base::NetworkMode,
    /// Publish a port of a `--network bridge` container: `[IP:]HOST:CONTAINER[/tcp|udp]` (`8080:80`,
    /// `127.0.0.1:5000:5000/udp`). Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]", value_parser = parse_port)]
    pub ports: Vec<crate::base::PortMapping>,
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

fn parse_cap(s: &str) -> Result<String, String> {
    crate::runtime::spec::parse_capability(s)
        .map(crate::runtime::spec::capability_name)
        .ok_or_else(|| format!("`{s}` is not a Linux capability (e.g. NET_ADMIN)"))
}

fn parse_cap_drop(s: &str) -> Result<String, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok("ALL".into());
    }
    parse_cap(s)
}

fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` must be KEY=VALUE, e.g. net.ipv4.ping_group_range=0 2147483647"))
}

pub(super) fn parse_ipc(s: &str) -> Result<crate::base::IpcMode, String> {
    match s {
        "host" => Ok(crate::base::IpcMode::Host),
        "private" => Ok(crate::base::IpcMode::Private),
        other => Err(format!("`{other}`: use host or private")),
    }
}

pub(super) fn parse_network(s: &str) -> Result<crate::base::NetworkMode, String> {
    match s {
        "host" => Ok(crate::base::NetworkMode::Host),
        "none" => Ok(crate::base::NetworkMode::None),
        "bridge" => Ok(crate::base::NetworkMode::Bridge),
        other => Err(format!("`{other}`: use host, none or bridge")),
    }
}

fn parse_port(s: &str) -> Result<crate::base::PortMapping, String> {
    s.parse()
}

/// A size such as `64m`, `1g`, `512k` or plain bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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
pub(crate) fn parse_volume(s: &str) -> Result<crate::runtime::Volume, String> {
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
    /// Run the embedded MQTT broker standalone (plain MQTT 3.1.1, no TLS: for a lab or a single site). It needs
    /// --password-file, or --allow-anonymous to run open.
    Broker {
        /// Address to listen on; use 0.0.0.0:1883 to accept devices on the network.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
        listen: std::net::SocketAddr,
        /// File of `user:password` lines (mode 0600): clients must log in as one of them.
        #[arg(long, value_name = "PATH", conflicts_with = "allow_anonymous")]
        password_file: Option<PathBuf>,
        /// Let anyone who reaches the listener connect, publish and subscribe, i.e. control every device that
        /// uses this broker. Warned about at start.
        #[arg(long)]
        allow_anonymous: bool,
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
    /// Print a deployment's container output from a device (`logs DEVICE DEPLOYMENT`, over the broker), or a
    /// container's on this device (`logs NAME`: a container id or a deployment's name; needs root).
    Logs {
        /// Device id; with no DEPLOYMENT, the local container or deployment NAME.
        #[arg(value_name = "DEVICE|NAME")]
        device: String,
        /// Deployment name (on the device).
        deployment: Option<String>,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Also collect what it writes for --follow-secs seconds (one answer at the end); for a local container,
        /// follow its output until it exits or Ctrl-C.
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
    /// Set the nvpmodel power mode of a device, or of every device in group:NAME (needs policy.power.allow_control
    /// on the device; reports the mode before and after and whether a reboot is needed).
    PowerMode {
        /// Device id, or group:NAME.
        target: String,
        /// Mode name or id from the device's /etc/nvpmodel.conf (e.g. 30W, MAXN_SUPER, 2).
        mode: String,
        /// Print each device's reply as JSON, one per line.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for each device's reply.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Turn jetson_clocks on or off on a device, or on every device in group:NAME (needs
    /// policy.power.allow_control on the device).
    Clocks {
        /// Device id, or group:NAME.
        target: String,
        /// on or off.
        state: OnOff,
        /// Print each device's reply as JSON, one per line.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for each device's reply.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Serve the fleet's state as Prometheus metrics on /metrics (docs/monitoring.md).
    Exporter {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        args: crate::controller::exporter::ExporterArgs,
    },
    /// Simulate many devices with the agent's link code in one process (benchmarks).
    #[command(hide = true)]
    SimFleet(crate::controller::sim::SimArgs),
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Broker access for controller commands. Flags win over the environment, which wins over
/// ~/.config/jetship/cli.toml ([broker] url or urls, ca_file, client_cert, client_key, username, password_file).
#[derive(Debug, Args, Clone, Default)]
pub struct BrokerArgs {
    /// Broker URL, mqtt://HOST[:PORT] or mqtts://HOST[:PORT] [default: mqtt://127.0.0.1:1883]. Several
    /// (repeated, or comma-separated) are failover brokers, used in order: the first that answers, the next
    /// one when the connection is lost.
    #[arg(long, env = "JETSHIP_BROKER", value_name = "URL", value_delimiter = ',')]
    pub broker: Vec<String>,
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
    /// Broker access from flags, environment and cli.toml; for a broker on loopback without credentials, the
    /// local agent's embedded-broker password when this user can read it (root), from the state dir of the
    /// agent config `config` (or the default one).
    pub(super) fn access(&self, config: Option<&std::path::Path>) -> anyhow::Result<crate::link::mqtt::BrokerAccess> {
        let path = fleet::cli_config_path();
        let file = fleet::load_cli_file(&path)?;
        let over = fleet::CliBroker {
            url: None,
            urls: (!self.broker.is_empty()).then(|| self.broker.clone()),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
        };
        let access = fleet::resolve_access(&file.broker, &over);
        let state_dir = match crate::config::load(config) {
            Ok(loaded) => loaded.config.state_dir,
            Err(_) => std::env::var_os("JETSHIP_STATE_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STATE_DIR)),
        };
        Ok(fleet::with_local_credentials(access, &state_dir))
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
