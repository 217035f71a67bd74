//! The agent's configuration: `agent.toml` plus `agent.d/*.toml` drop-ins merged in name order.
//!
//! Owns parsing, merging, defaults and validation. It never reads anything but the config files and two
//! environment variables (`JETSHIP_CONFIG`, `JETSHIP_STATE_DIR`); every path that tests must redirect (the host
//! root, the state dir) lives here so no other module hard-codes `/sys` or `/var/lib`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::{valid_id, GpuMode, LogFormat};

mod network;
mod policy;
mod policy_devices;
pub use network::NetworkConfig;
pub use policy::{PolicyConfig, PowerPolicy};

/// Where the agent looks for its config when neither `--config` nor `JETSHIP_CONFIG` says otherwise.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/jetship/agent.toml";
/// Where the agent keeps everything it writes unless `state_dir` or `JETSHIP_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jetship";

/// Errors loading or validating the config. Each names the file and, where there is one, the key path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path}: key `{key}`: {message}")]
    Schema { path: PathBuf, key: String, message: String },
    #[error("config is invalid:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One validation problem: the dotted key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// The whole agent config. Every field has a default, so an empty file (or none) is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This device's id in MQTT topics. Defaults to the hostname. Must match `[A-Za-z0-9_-]{1,64}`.
    pub device_id: Option<String>,
    /// Directory holding everything the agent writes. Defaults to `/var/lib/jetship`
    /// (`JETSHIP_STATE_DIR` overrides the file).
    pub state_dir: PathBuf,
    /// Fleet groups this device belongs to; it follows `jetship/v1/groups/<group>/desired` for each.
    /// Defaults to none.
    pub groups: Vec<String>,
    pub host: HostConfig,
    pub telemetry: TelemetryConfig,
    pub gpu: GpuConfig,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub spool: SpoolConfig,
    pub registry: RegistryConfig,
    pub runtime: RuntimeConfig,
    pub network: NetworkConfig,
    pub policy: PolicyConfig,
    pub unpack: UnpackConfig,
    pub commands: CommandsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            groups: Vec::new(),
            host: HostConfig::default(),
            telemetry: TelemetryConfig::default(),
            gpu: GpuConfig::default(),
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            spool: SpoolConfig::default(),
            registry: RegistryConfig::default(),
            runtime: RuntimeConfig::default(),
            network: NetworkConfig::default(),
            policy: PolicyConfig::default(),
            unpack: UnpackConfig::default(),
            commands: CommandsConfig::default(),
        }
    }
}

/// Which container backend runs containers, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `auto`, `oci` (runc/crun under conmon, no daemon) or `docker` (the Docker Engine API). `auto` picks the
    /// native backend when conmon and crun or runc are installed, else Docker when its socket answers, else
    /// fails listing what to install. Defaults to `auto`.
    pub backend: BackendChoice,
    /// OCI runtime of the native backend: `auto` (crun on cgroup v2 hosts, else runc), `crun`, `runc` or a path.
    /// Defaults to `auto`.
    pub oci_runtime: String,
    /// conmon binary. Defaults to the first `conmon` in /usr/bin, /usr/local/bin, /usr/libexec/podman.
    pub conmon: Option<PathBuf>,
    /// tmpfs directory for the OCI runtime's state and conmon's sockets (must not survive a reboot).
    /// Defaults to `/run/jetship`.
    pub run_dir: PathBuf,
    /// cgroup under which the native backend puts each container (`<cgroup_parent>/<id>` in every hierarchy).
    /// Two agents on one host (or two test runs) need different ones. Defaults to `/jetship`.
    pub cgroup_parent: PathBuf,
    /// A container's log file is rotated at this size (one previous file is kept). Defaults to 10 MiB.
    pub log_max_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL when stopping a container. Defaults to 10.
    pub stop_grace_s: u64,
    /// Docker Engine socket for the docker backend. Defaults to `DOCKER_HOST` (unix://) or
    /// `/var/run/docker.sock`.
    pub docker_socket: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            oci_runtime: "auto".into(),
            conmon: None,
            run_dir: PathBuf::from("/run/jetship"),
            cgroup_parent: PathBuf::from("/jetship"),
            log_max_bytes: 10 * 1024 * 1024,
            stop_grace_s: 10,
            docker_socket: None,
        }
    }
}

/// `runtime.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Oci,
    Docker,
}

/// Where the host's files are read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Prefix under which /proc, /sys, /etc, /dev and /var/lib are read. Defaults to `/`; tests point it at
    /// fixture trees, and a containerised agent at the host's root mounted e.g. on /host.
    pub root: PathBuf,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { root: PathBuf::from("/") }
    }
}

/// Metrics sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Seconds between metrics samples. Defaults to 10.
    pub interval_s: u64,
    /// Seconds between host re-probes; the retained `host` topic is republished only when the facts changed
    /// (e.g. a camera was plugged in). Defaults to 30.
    pub host_interval_s: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { interval_s: 10, host_interval_s: 30 }
    }
}

/// The MQTT link to the fleet's broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL, `mqtt://HOST[:PORT]` (default port 1883) or `mqtts://HOST[:PORT]` (default port 8883).
    /// Defaults to none: the agent then runs an embedded broker on `embedded_listen` and connects to it.
    pub url: Option<String>,
    /// PEM CA certificate(s) that sign the broker's certificate (mqtts). Defaults to none: the system roots
    /// are not used, so mqtts needs it.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS. Defaults to none. Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`. Defaults to none.
    pub client_key: Option<PathBuf>,
    /// Username for broker authentication. Defaults to none.
    pub username: Option<String>,
    /// File whose first line is the password (kept out of the config). Defaults to none. Needs `username`.
    pub password_file: Option<PathBuf>,
    /// MQTT client id. Defaults to the device id.
    pub client_id: Option<String>,
    /// Seconds between keep-alive pings; the broker declares the agent offline (will) after 1.5 times this.
    /// Defaults to 30.
    pub keep_alive_s: u64,
    /// First reconnect delay in milliseconds; doubles per failed attempt, with random jitter. Defaults to 500.
    pub reconnect_min_ms: u64,
    /// Cap on the reconnect delay in milliseconds. Defaults to 30000.
    pub reconnect_max_ms: u64,
    /// Where the embedded broker listens when `url` is not set. Defaults to `127.0.0.1:1883`.
    pub embedded_listen: std::net::SocketAddr,

    // Broker failover (docs/protocol.md, "Broker failover and clusters").
    /// Brokers to use instead of `url`, in order (nodes of one cluster, or independent brokers): the agent
    /// starts with the first, stays on the one that answers, and after a lost connection tries the next
    /// (after the last, the first again) with the reconnect backoff. TLS files and credentials apply to each.
    /// Defaults to none (`url`). Set `url` or `urls`, not both.
    pub urls: Vec<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: None,
            password_file: None,
            client_id: None,
            keep_alive_s: 30,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            embedded_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 1883)),
            urls: Vec::new(),
        }
    }
}

/// The on-disk outbox for telemetry and events (`<state_dir>/spool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Bound on the spool's size in bytes; when full the oldest undelivered messages are dropped and counted
    /// in the next telemetry (`dropped`). Defaults to 67108864 (64 MiB).
    pub max_bytes: u64,
    /// Milliseconds between fsyncs of the spool; 0 fsyncs every message. A power cut loses at most this much.
    /// Defaults to 1000.
    pub fsync_interval_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, fsync_interval_ms: 1000 }
    }
}

/// How containers that ask for the GPU get it (see docs/gpu.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// `auto`, `cdi`, `csv`, `nvidia-runtime` or `off`. Defaults to `auto`: a CDI spec that matches the live
    /// /dev, else the Jetson CSV files, else nvidia-container-runtime, else an error saying what to install.
    pub mode: GpuMode,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `jetship=debug`. Defaults to `info`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`. Defaults to `text` (journald adds its own timestamps).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

/// Image registries and pulls (see docs/images.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Mirrors tried in order before the registry itself, keyed by registry host (`docker.io`, `nvcr.io`), each
    /// a base URL such as `https://mirror.example:5000` or `http://127.0.0.1:5000`. Defaults to none.
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries (127.0.0.0/8, localhost, ::1)
    /// always are. Defaults to none.
    pub insecure: Vec<String>,
    /// Credentials per registry host; they win over `docker_config`. Defaults to none.
    pub credentials: std::collections::BTreeMap<String, RegistryCredential>,
    /// A Docker `config.json` whose `auths` give credentials. Defaults to none (not read).
    pub docker_config: Option<PathBuf>,
    /// Layers downloaded at once. Defaults to 4.
    pub concurrency: usize,
    /// Consecutive failed attempts per blob (and per manifest or tag request) before the pull fails; an attempt
    /// that made progress resets the count. Defaults to 5.
    pub retries: u32,
    /// Longest wait between retries, in seconds (the wait doubles from 0.5 s up to this). Defaults to 30.
    pub retry_backoff_cap_s: f64,
    /// Bytes that must stay free on the state dir's disk after a pull. Defaults to 1073741824 (1 GiB).
    pub disk_reserve_bytes: u64,
    /// Space needed to unpack layers, as a multiple of their compressed size. Defaults to 2.0.
    pub unpack_estimate_factor: f64,
    /// Platform to pull (`linux/arm64`, `linux/arm64/v8`, `linux/amd64`). Defaults to the host's.
    pub platform: Option<String>,
    /// Token realm hosts, per registry (or mirror) host, that may receive its credentials besides the registry's
    /// own host (`"gitlab.example" = ["gitlab.example", "auth.gitlab.example"]`). `docker.io`'s `auth.docker.io`
    /// is built in. Defaults to none.
    pub auth_hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// Bounds on what a registry can make the agent read (`[registry.limits]`).
    pub limits: RegistryLimits,
}

/// Bounds on registry answers: a hostile or broken registry cannot make the agent hold more than this in memory
/// or wait longer than this (docs/security.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryLimits {
    /// Tags read from a repository's tag list, all pages together, to resolve `{auto}`; a longer list fails the
    /// resolution (name the tag, or raise this). Defaults to 100000.
    pub max_tags: usize,
    /// Bytes of tag-list answers read, all pages together. Defaults to 16777216 (16 MiB).
    pub max_tag_list_bytes: u64,
    /// Seconds one manifest, tag-list page or token request may take from start to end (blob downloads are
    /// bounded by a 60 s stall timeout instead, so large layers can take as long as they need). Defaults to 60.
    pub request_timeout_s: u64,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self { max_tags: 100_000, max_tag_list_bytes: 16 << 20, request_timeout_s: 60 }
    }
}

/// Budgets of one layer unpack and of one image's unpacks (docs/unpack.md, "Budgets"). A layer that exceeds one
/// is refused with the numbers and retried with backoff like any failed create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnpackConfig {
    /// Bytes one layer may write: file contents (sparse holes count, they are written as zeros) plus 4 KiB per
    /// inode it creates. Defaults to 34359738368 (32 GiB).
    pub layer_max_bytes: u64,
    /// Tar entries one layer may hold. Defaults to 1000000.
    pub layer_max_entries: u64,
    /// Inodes (files, directories, links, nodes) one layer may create. Defaults to 500000.
    pub layer_max_inodes: u64,
    /// Bytes the layers unpacked for one image may write together (snapshots already on disk are not counted
    /// again). Defaults to 68719476736 (64 GiB).
    pub image_max_bytes: u64,
    /// Tar entries of the layers unpacked for one image together. Defaults to 4000000.
    pub image_max_entries: u64,
    /// Inodes the layers unpacked for one image may create together. Defaults to 2000000.
    pub image_max_inodes: u64,
    /// Bytes a layer may write per compressed byte read, once it has written `expansion_grace_bytes`: a few
    /// KiB of gzip or zstd cannot become gigabytes. Real layers stay below 20. Defaults to 100.
    pub max_expansion_ratio: f64,
    /// Bytes a layer may write before `max_expansion_ratio` applies (small, highly compressible layers are
    /// fine). Defaults to 67108864 (64 MiB).
    pub expansion_grace_bytes: u64,
    /// Free inodes that must remain on the state dir's file system while unpacking (checked as it goes, like
    /// `registry.disk_reserve_bytes` for bytes). Defaults to 10000.
    pub inode_reserve: u64,
}

impl Default for UnpackConfig {
    fn default() -> Self {
        Self {
            layer_max_bytes: 32 << 30,
            layer_max_entries: 1_000_000,
            layer_max_inodes: 500_000,
            image_max_bytes: 64 << 30,
            image_max_entries: 4_000_000,
            image_max_inodes: 2_000_000,
            max_expansion_ratio: 100.0,
            expansion_grace_bytes: 64 << 20,
            inode_reserve: 10_000,
        }
    }
}

/// How the agent handles `cmd/*` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Commands (other than `ping`) handled at once; more are refused with a reason in the reply, so a flood of
    /// commands cannot spawn unbounded work. Defaults to 4.
    pub max_concurrent: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self { max_concurrent: 4 }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            mirrors: Default::default(),
            insecure: Vec::new(),
            credentials: Default::default(),
            docker_config: None,
            concurrency: 4,
            retries: 5,
            retry_backoff_cap_s: 30.0,
            disk_reserve_bytes: 1 << 30,
            unpack_estimate_factor: 2.0,
            platform: None,
            auth_hosts: Default::default(),
            limits: RegistryLimits::default(),
        }
    }
}

/// A username and the file holding its password or token (kept out of the config so the config can be shared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredential {
    /// User name (`$oauthtoken` for nvcr.io API keys).
    pub username: String,
    /// File whose content (trailing newline trimmed) is the password or token.
    pub password_file: PathBuf,
}

/// The config file to read: the explicit path, else `JETSHIP_CONFIG`, else `/etc/jetship/agent.toml`.
/// The returned flag says whether the file must exist (only the built-in default may be absent).
pub(crate) fn resolve_path(explicit: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os("JETSHIP_CONFIG") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

/// The drop-in directory beside a config file: `agent.toml` -> `agent.d`.
pub(crate) fn drop_in_dir(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.d"))
}

/// A loaded config and the files it came from, in the order they were merged.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<PathBuf>,
}

/// Loads the config from `explicit` (or `JETSHIP_CONFIG`, or the default path), merges its drop-ins, applies
/// `JETSHIP_STATE_DIR`, and validates the result with [`Config::check`].
pub fn load(explicit: Option<&Path>) -> Result<Loaded> {
    let (path, required) = resolve_path(explicit);
    let mut loaded = load_files(&path, required)?;
    if let Some(dir) = std::env::var_os("JETSHIP_STATE_DIR").filter(|d| !d.is_empty()) {
        loaded.config.state_dir = PathBuf::from(dir);
    }
    loaded.config.check()?;
    Ok(loaded)
}

/// Reads `path` (absent is fine unless `required`) and `<stem>.d/*.toml` in name order, without env overrides
/// or validation. Each file is checked on its own first so an error names the file it is in.
pub fn load_files(path: &Path, required: bool) -> Result<Loaded> {
    let mut files = Vec::new();
    match std::fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
        Err(source) => return Err(Error::Read { path: path.to_path_buf(), source }),
    }
    let dir = drop_in_dir(path);
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut drop_ins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Read { path: dir, source }),
    }

    let mut merged = toml::Table::new();
    for file in &files {
        let table = parse_file(file)?;
        // Typed on its own first: an unknown key or a wrong type is reported against the file that has it.
        from_table(table.clone(), file)?;
        merge(&mut merged, table);
    }
    let config = from_table(merged, files.last().map(PathBuf::as_path).unwrap_or(path))?;
    Ok(Loaded { config, files })
}

/// Parses config text as if it were the file `path`.
#[cfg(test)]
pub(crate) fn parse_str(text: &str, path: &Path) -> Result<Config> {
    let table = toml::from_str::<toml::Table>(text)
        .map_err(|e| Error::Syntax { path: path.to_path_buf(), message: e.to_string().trim().to_owned() })?;
    from_table(table, path)
}

fn parse_file(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    toml::from_str::<toml::Table>(&text)
        .map_err(|e| Error::Syntax { path: path.to_path_buf(), message: e.to_string().trim().to_owned() })
}

fn from_table(table: toml::Table, path: &Path) -> Result<Config> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        Error::Schema {
            path: path.to_path_buf(),
            key: if key == "." { "(top level)".into() } else { key },
            message: e.into_inner().to_string(),
        }
    })
}

/// Later tables override earlier ones key by key; nested tables merge, arrays and scalars are replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

impl RegistryConfig {
    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for (registry, urls) in &self.mirrors {
            for (i, u) in urls.iter().enumerate() {
                match url::Url::parse(u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                    _ => bad(
                        &format!("registry.mirrors.\"{registry}\"[{i}]"),
                        format!("`{u}` must be an http:// or https:// base URL such as https://mirror.example:5000"),
                    ),
                }
            }
        }
        for (i, r) in self.insecure.iter().enumerate() {
            if r.is_empty() || r.contains('/') {
                bad(
                    &format!("registry.insecure[{i}]"),
                    format!("`{r}` must be a registry host[:port] without scheme or path"),
                );
            }
        }
        for (registry, c) in &self.credentials {
            if !c.password_file.is_absolute() {
                bad(
                    &format!("registry.credentials.\"{registry}\".password_file"),
                    format!("`{}` must be an absolute path", c.password_file.display()),
                );
            }
        }
        if !(1..=64).contains(&self.concurrency) {
            bad("registry.concurrency", format!("{} must be between 1 and 64", self.concurrency));
        }
        if self.retries > 100 {
            bad("registry.retries", format!("{} must be at most 100", self.retries));
        }
        if !(self.retry_backoff_cap_s.is_finite() && (0.0..=3600.0).contains(&self.retry_backoff_cap_s)) {
            bad(
                "registry.retry_backoff_cap_s",
                format!("{} must be between 0 and 3600 seconds", self.retry_backoff_cap_s),
            );
        }
        if !(self.unpack_estimate_factor.is_finite() && (0.0..=20.0).contains(&self.unpack_estimate_factor)) {
            bad("registry.unpack_estimate_factor", format!("{} must be between 0 and 20", self.unpack_estimate_factor));
        }
        if let Some(p) = &self.platform {
            if let Err(e) = crate::base::Platform::parse(p) {
                bad("registry.platform", e.to_string());
            }
        }
        for (registry, hosts) in &self.auth_hosts {
            for (i, h) in hosts.iter().enumerate() {
                if h.is_empty() || h.contains(['/', '@', ':']) || h.chars().any(char::is_whitespace) {
                    bad(
                        &format!("registry.auth_hosts.\"{registry}\"[{i}]"),
                        format!("`{h}` must be a host name such as auth.example.com, without scheme, port or path"),
                    );
                }
            }
        }
        let l = &self.limits;
        if !(1..=10_000_000).contains(&l.max_tags) {
            bad("registry.limits.max_tags", format!("{} must be between 1 and 10000000", l.max_tags));
        }
        if !(4096..=1 << 30).contains(&l.max_tag_list_bytes) {
            bad(
                "registry.limits.max_tag_list_bytes",
                format!("{} must be between 4096 and 1073741824", l.max_tag_list_bytes),
            );
        }
        if !(1..=3600).contains(&l.request_timeout_s) {
            bad(
                "registry.limits.request_timeout_s",
                format!("{} must be between 1 and 3600 seconds", l.request_timeout_s),
            );
        }
    }
}

impl UnpackConfig {
    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for (key, value) in [
            ("unpack.layer_max_bytes", self.layer_max_bytes),
            ("unpack.layer_max_entries", self.layer_max_entries),
            ("unpack.layer_max_inodes", self.layer_max_inodes),
            ("unpack.image_max_bytes", self.image_max_bytes),
            ("unpack.image_max_entries", self.image_max_entries),
            ("unpack.image_max_inodes", self.image_max_inodes),
        ] {
            if value == 0 {
                bad(key, "0 would refuse every layer: use a positive number".into());
            }
        }
        if !(self.max_expansion_ratio.is_finite() && self.max_expansion_ratio >= 1.0) {
            bad("unpack.max_expansion_ratio", format!("{} must be a number of at least 1", self.max_expansion_ratio));
        }
    }
}

impl Config {
    /// Checks the rules serde cannot: every problem is reported with its key path, not just the first.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| problems.push(Problem { key: key.into(), message });
        if let Some(id) = &self.device_id {
            if !valid_id(id) {
                bad("device_id", format!("`{id}` must match [A-Za-z0-9_-]{{1,64}}"));
            }
        }
        if !self.state_dir.is_absolute() {
            bad("state_dir", format!("`{}` must be an absolute path", self.state_dir.display()));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if !valid_id(g) {
                bad(&format!("groups[{i}]"), format!("`{g}` must match [A-Za-z0-9_-]{{1,64}}"));
            }
        }
        if !self.host.root.is_absolute() {
            bad("host.root", format!("`{}` must be an absolute path", self.host.root.display()));
        }
        if !(1..=86_400).contains(&self.telemetry.interval_s) {
            bad("telemetry.interval_s", format!("{} must be between 1 and 86400 seconds", self.telemetry.interval_s));
        }
        if !(1..=86_400).contains(&self.telemetry.host_interval_s) {
            bad(
                "telemetry.host_interval_s",
                format!("{} must be between 1 and 86400 seconds", self.telemetry.host_interval_s),
            );
        }
        self.mqtt.check(&mut bad);
        if self.spool.max_bytes < 1024 {
            bad("spool.max_bytes", format!("{} is too small: use at least 1024", self.spool.max_bytes));
        }
        if self.spool.fsync_interval_ms > 60_000 {
            bad(
                "spool.fsync_interval_ms",
                format!("{} is over 60000: a power cut would lose a minute of telemetry", self.spool.fsync_interval_ms),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad("log.level", format!("`{}` is not a tracing filter ({e}); use e.g. \"info\"", self.log.level));
        }
        self.registry.check(&mut bad);
        self.unpack.check(&mut bad);
        if !(1..=64).contains(&self.commands.max_concurrent) {
            bad("commands.max_concurrent", format!("{} must be between 1 and 64", self.commands.max_concurrent));
        }
        let parent = &self.runtime.cgroup_parent;
        if !parent.is_absolute() || parent.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            bad("runtime.cgroup_parent", format!("`{}` must be an absolute path without `..`", parent.display()));
        }
        if !self.runtime.run_dir.is_absolute() {
            bad("runtime.run_dir", format!("`{}` must be an absolute path", self.runtime.run_dir.display()));
        }
        if self.runtime.log_max_bytes < 4096 {
            bad("runtime.log_max_bytes", format!("{} is too small; use at least 4096", self.runtime.log_max_bytes));
        }
        self.network.check(&mut bad);
        self.policy.check(&mut bad);
        match self.runtime.oci_runtime.as_str() {
            "auto" | "crun" | "runc" => {}
            p if p.starts_with('/') => {}
            other => bad("runtime.oci_runtime", format!("`{other}` must be auto, crun, runc or an absolute path")),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// The MQTT client id: `mqtt.client_id`, else the device id.
    pub(crate) fn client_id(&self) -> String {
        self.mqtt.client_id.clone().unwrap_or_else(|| self.device_id())
    }

    /// The device id: the configured one, else the hostname reduced to the allowed characters.
    pub fn device_id(&self) -> String {
        if let Some(id) = &self.device_id {
            return id.clone();
        }
        let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let cleaned: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
            .take(64)
            .collect();
        if cleaned.is_empty() {
            "jetson".into()
        } else {
            cleaned
        }
    }
}

impl MqttConfig {
    /// The brokers to connect to, in order: `urls`, else `url`; empty for the embedded broker.
    pub(crate) fn broker_urls(&self) -> Vec<String> {
        if self.urls.is_empty() {
            self.url.iter().cloned().collect()
        } else {
            self.urls.clone()
        }
    }

    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        self.check_urls(bad);
        if let Some(url) = &self.url {
            if let Err(e) = crate::base::BrokerUrl::parse(url) {
                bad("mqtt.url", e.to_string());
            } else {
                self.check_tls_of("mqtt.url", url, bad);
            }
        } else if self.urls.is_empty()
            && (self.username.is_some() || self.ca_file.is_some() || self.client_cert.is_some())
        {
            bad("mqtt.url", "credentials or TLS files are set but no url: the embedded broker takes neither".into());
        }
        for (key, path) in [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert", &self.client_cert),
            ("mqtt.client_key", &self.client_key),
            ("mqtt.password_file", &self.password_file),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    bad(key, format!("`{}` does not exist or is not a file", p.display()));
                }
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            bad("mqtt.client_key", "client_cert and client_key must be set together".into());
        }
        if self.password_file.is_some() && self.username.is_none() {
            bad("mqtt.username", "password_file is set without a username".into());
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 {
                bad("mqtt.client_id", format!("`{id}` must be 1 to 128 characters"));
            }
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            bad("mqtt.keep_alive_s", format!("{} must be between 5 and 3600 seconds", self.keep_alive_s));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            bad(
                "mqtt.reconnect_min_ms",
                format!(
                    "{} must be at least 1 and not above reconnect_max_ms ({})",
                    self.reconnect_min_ms, self.reconnect_max_ms
                ),
            );
        }
    }
}

impl MqttConfig {
    // Broker failover: `urls` beside `url`.
    fn check_urls(&self, bad: &mut impl FnMut(&str, String)) {
        if self.urls.is_empty() {
            return;
        }
        if self.url.is_some() {
            bad("mqtt.urls", "set `url` or `urls`, not both: `urls` lists every broker, the first one included".into());
        }
        if self.urls.len() > 16 {
            bad("mqtt.urls", format!("{} brokers is more than the 16 allowed", self.urls.len()));
        }
        let (mut valid, mut ca_missing) = (true, false);
        for (i, url) in self.urls.iter().enumerate() {
            let key = format!("mqtt.urls[{i}]");
            match crate::base::BrokerUrl::parse(url) {
                Err(e) => {
                    bad(&key, e.to_string());
                    valid = false;
                }
                // One missing CA file is one problem, however many mqtts:// brokers need it.
                Ok(_) if url.starts_with("mqtts://") && self.ca_file.is_none() => {
                    if !std::mem::replace(&mut ca_missing, true) {
                        self.check_tls_of(&key, url, bad);
                    }
                }
                Ok(_) => self.check_tls_of(&key, url, bad),
            }
        }
        if valid {
            if let Err(e) = crate::base::BrokerUrl::parse_list(&self.urls) {
                bad("mqtt.urls", e.to_string());
            }
        }
    }

    /// The TLS rules for one broker URL: TLS files only with mqtts://, and mqtts:// only with a CA file.
    fn check_tls_of(&self, key: &str, url: &str, bad: &mut impl FnMut(&str, String)) {
        if url.starts_with("mqtt://") && (self.ca_file.is_some() || self.client_cert.is_some()) {
            bad(key, format!("`{url}` is plain MQTT but TLS files are set: use mqtts://"));
        } else if url.starts_with("mqtts://") && self.ca_file.is_none() {
            bad("mqtt.ca_file", "mqtts needs the CA certificate that signs the broker's certificate".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        parse_str(text, Path::new("/etc/jetship/agent.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, Path::new("/var/lib/jetship"));
        assert_eq!(c.host.root, Path::new("/"));
        assert_eq!(c.telemetry.interval_s, 10);
        assert_eq!(c.gpu.mode, GpuMode::Auto);
    }

    #[test]
    fn gpu_mode_takes_the_documented_words_only() {
        let c = parse("[gpu]\nmode = \"nvidia-runtime\"\n").unwrap();
        assert_eq!(c.gpu.mode, GpuMode::NvidiaRuntime);
        let err = parse("[gpu]\nmode = \"cuda\"\n").unwrap_err().to_string();
        assert!(err.contains("gpu.mode") && err.contains("nvidia-runtime"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_path_and_file() {
        let err = parse("[host]\nrooot = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("/etc/jetship/agent.toml"), "{err}");
        assert!(err.contains("host.rooot"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_path() {
        let err = parse("[telemetry]\ninterval_s = \"ten\"\n").unwrap_err().to_string();
        assert!(err.contains("telemetry.interval_s"), "{err}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("state_dir = \n").unwrap_err().to_string();
        assert!(err.contains("agent.toml") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn check_reports_every_problem() {
        let c = parse(
            "device_id = \"bad/id\"\nstate_dir = \"rel\"\ngroups = [\"ok\", \"#\"]\n[telemetry]\ninterval_s = 0\n",
        )
        .unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["device_id", "state_dir", "groups[1]", "telemetry.interval_s"]);
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_errors_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("agent.toml");
        std::fs::write(&main, "groups = [\"lab\"]\n[telemetry]\ninterval_s = 5\n").unwrap();
        std::fs::create_dir(dir.path().join("agent.d")).unwrap();
        std::fs::write(dir.path().join("agent.d/20-b.toml"), "[telemetry]\ninterval_s = 7\n").unwrap();
        std::fs::write(dir.path().join("agent.d/10-a.toml"), "[telemetry]\ninterval_s = 6\n[host]\nroot = \"/host\"\n")
            .unwrap();
        std::fs::write(dir.path().join("agent.d/notes.txt"), "ignored").unwrap();
        let loaded = load_files(&main, true).unwrap();
        assert_eq!(loaded.config.telemetry.interval_s, 7);
        assert_eq!(loaded.config.host.root, Path::new("/host"));
        assert_eq!(loaded.config.groups, ["lab"]);
        assert_eq!(loaded.files.len(), 3);

        std::fs::write(dir.path().join("agent.d/30-bad.toml"), "[telemetry]\nintervall = 1\n").unwrap();
        let err = load_files(&main, true).unwrap_err().to_string();
        assert!(err.contains("30-bad.toml") && err.contains("telemetry.intervall"), "{err}");
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("agent.toml");
        assert_eq!(load_files(&absent, false).unwrap().config, Config::default());
        let err = load_files(&absent, true).unwrap_err().to_string();
        assert!(err.contains("cannot read config") && err.contains("agent.toml"), "{err}");
    }

    fn problem_keys(text: &str) -> Vec<String> {
        match parse(text).unwrap().check() {
            Ok(()) => Vec::new(),
            Err(Error::Invalid(p)) => p.into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn broker_failover_lists_are_checked_per_entry() {
        let c = parse("[mqtt]\nurls = [\"mqtt://a:1883\", \"mqtt://b:1883\"]\n").unwrap();
        assert!(c.check().is_ok());
        assert_eq!(c.mqtt.broker_urls(), ["mqtt://a:1883", "mqtt://b:1883"]);
        assert_eq!(parse("[mqtt]\nurl = \"mqtt://a\"\n").unwrap().mqtt.broker_urls(), ["mqtt://a"]);
        assert!(parse("").unwrap().mqtt.broker_urls().is_empty(), "no url: the embedded broker");
        let p = problem_keys("[mqtt]\nurl = \"mqtt://a\"\nurls = [\"mqtt://b\"]\n");
        assert!(p.len() == 1 && p[0].starts_with("mqtt.urls") && p[0].contains("not both"), "{p:?}");
        let p = problem_keys("[mqtt]\nurls = [\"mqtt://a\", \"http://b\"]\n");
        assert!(p.len() == 1 && p[0].starts_with("mqtt.urls[1]") && p[0].contains("mqtt://"), "{p:?}");
        let p = problem_keys("[mqtt]\nurls = [\"mqtt://a\", \"mqtt://a:1883\"]\n");
        assert!(p.len() == 1 && p[0].starts_with("mqtt.urls") && p[0].contains("twice"), "{p:?}");
        let p = problem_keys("[mqtt]\nurls = [\"mqtt://a\", \"mqtts://b\", \"mqtts://c\"]\n");
        assert_eq!(p.iter().filter(|p| p.starts_with("mqtt.ca_file")).count(), 1, "{p:?}");
        // Credentials with urls (and no url) are for those brokers, not the embedded one.
        let p = problem_keys("[mqtt]\nurls = [\"mqtt://a\"]\nusername = \"u\"\n");
        assert!(p.is_empty(), "{p:?}");
        let many: Vec<String> = (0..17).map(|i| format!("\"mqtt://b{i}\"")).collect();
        let p = problem_keys(&format!("[mqtt]\nurls = [{}]\n", many.join(", ")));
        assert!(p.iter().any(|p| p.starts_with("mqtt.urls") && p.contains("16")), "{p:?}");
    }

    #[test]
    fn mqtt_and_spool_settings_are_checked() {
        assert!(problem_keys("[mqtt]\nurl = \"mqtt://broker:1883\"\n").is_empty());
        let p = problem_keys("[mqtt]\nurl = \"http://broker\"\n");
        assert!(p.len() == 1 && p[0].starts_with("mqtt.url") && p[0].contains("mqtt://"), "{p:?}");
        let p = problem_keys("[mqtt]\nurl = \"mqtts://broker\"\n");
        assert!(p.iter().any(|p| p.starts_with("mqtt.ca_file")), "{p:?}");
        let p = problem_keys(
            "[mqtt]\nurl = \"mqtts://b\"\nca_file = \"/nonexistent/ca.pem\"\nclient_cert = \"/nonexistent/c.pem\"\n",
        );
        assert!(p.iter().any(|p| p.starts_with("mqtt.ca_file") && p.contains("does not exist")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("mqtt.client_key") && p.contains("together")), "{p:?}");
        let p = problem_keys("[mqtt]\nusername = \"u\"\n");
        assert!(p.iter().any(|p| p.starts_with("mqtt.url") && p.contains("embedded")), "{p:?}");
        let p = problem_keys("[mqtt]\nkeep_alive_s = 1\nreconnect_min_ms = 5000\nreconnect_max_ms = 1000\n");
        assert!(p.iter().any(|p| p.starts_with("mqtt.keep_alive_s")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("mqtt.reconnect_min_ms")), "{p:?}");
        let p = problem_keys("[spool]\nmax_bytes = 10\nfsync_interval_ms = 600000\n");
        assert!(p.iter().any(|p| p.starts_with("spool.max_bytes")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("spool.fsync_interval_ms")), "{p:?}");
        let err = parse("[mqtt]\nembedded_listen = \"localhost\"\n").unwrap_err().to_string();
        assert!(err.contains("mqtt.embedded_listen"), "{err}");
    }

    #[test]
    fn registry_section_is_checked() {
        let c = parse("[registry]\nconcurrency = 0\ninsecure = [\"http://x\"]\nplatform = \"windows\"\nunpack_estimate_factor = -1.0\n[registry.mirrors]\n\"docker.io\" = [\"ftp://m\"]\n[registry.credentials]\n\"nvcr.io\" = { username = \"$oauthtoken\", password_file = \"key\" }\n").unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "registry.mirrors.\"docker.io\"[0]",
                "registry.insecure[0]",
                "registry.credentials.\"nvcr.io\".password_file",
                "registry.concurrency",
                "registry.unpack_estimate_factor",
                "registry.platform"
            ]
        );
    }

    #[test]
    fn policy_section_defaults_and_checks() {
        let c = parse("").unwrap();
        assert_eq!(c.policy, PolicyConfig::default());
        assert!(c.policy.allowed_registries.is_empty() && c.policy.allowed_host_paths.is_empty());
        assert!(!c.policy.allow_privileged && c.policy.allowed_devices.is_empty());
        assert!(c.policy.allowed_groups.is_empty() && c.policy.allowed_sysctls.is_empty());
        assert!(!c.policy.allow_raised_ulimits);
        // The seed use case (GPU, cameras, host IPC and network, an exec health check, root in the image) is
        // allowed; nothing that loosens the container's confinement is.
        let p = &c.policy;
        assert!(p.allow_host_network && p.allow_host_ipc && p.allow_root && p.allow_exec_health);
        assert!(p.allow_cameras && p.allow_gpu && p.allowed_cdi_devices == ["nvidia.com/gpu=*"]);
        assert!(p.allowed_capabilities.is_empty() && !p.allow_unconfined_seccomp && !p.allow_unconfined_apparmor);
        assert!(!p.allow_new_privileges && p.pids_limit == 4096);
        let c = parse("[policy]\nallowed_cdi_devices = [\"gpu\"]\nallowed_capabilities = [\"NET_ADMIN\", \"FLY\"]\npids_limit = 0\n").unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["policy.allowed_cdi_devices[0]", "policy.allowed_capabilities[1]", "policy.pids_limit"]);
        let c = parse("[policy]\nallowed_registries = [\"nvcr.io\", \"https://x/y\"]\nallowed_host_paths = [\"/data\", \"rel\", \"/a/../etc\"]\n").unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["policy.allowed_registries[1]", "policy.allowed_host_paths[1]", "policy.allowed_host_paths[2]"]
        );
        let c = parse(
            "[policy]\nallowed_devices = [\"/dev/ttyACM*\", \"/etc/passwd\", \"/dev/[x\", \"/dev/../sda\"]\n\
             allowed_groups = [\"video\", \"a:b\"]\nallowed_sysctls = [\"net.*\", \"net/x\"]\n",
        )
        .unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "policy.allowed_devices[1]",
                "policy.allowed_devices[2]",
                "policy.allowed_devices[3]",
                "policy.allowed_groups[1]",
                "policy.allowed_sysctls[1]"
            ]
        );
        // The key of earlier releases: `false` still loads, `true` names its replacement.
        assert!(parse("[policy]\nallow_devices = false\n").unwrap().check().is_ok());
        let c = parse("[policy]\nallow_devices = true\n").unwrap();
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        assert_eq!(problems[0].key, "policy.allow_devices");
        assert!(problems[0].message.contains("policy.allowed_devices"), "{}", problems[0].message);
        let err = parse("[policy]\nallow_everything = true\n").unwrap_err().to_string();
        assert!(err.contains("policy.allow_everything"), "{err}");
    }

    #[test]
    fn power_control_is_off_by_default_and_its_programs_are_absolute_paths() {
        let c = parse("").unwrap();
        assert_eq!(c.policy.power, PowerPolicy::default());
        assert!(!c.policy.power.allow_control);
        let c = parse("[policy.power]\nallow_control = true\nnvpmodel = \"nvpmodel\"\njetson_clocks = \"/opt/jc\"\n")
            .unwrap();
        assert!(c.policy.power.allow_control);
        let Err(Error::Invalid(problems)) = c.check() else { panic!("expected invalid") };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["policy.power.nvpmodel"]);
        let err = parse("[policy.power]\nallow_reboot = true\n").unwrap_err().to_string();
        assert!(err.contains("allow_reboot"), "{err}");
    }

    #[test]
    fn ids_are_topic_safe() {
        assert!(valid_id("orin-nano_01"));
        for bad in ["", "a/b", "a+b", "a#", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
