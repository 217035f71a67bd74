//! Deployment documents: what a controller asks a device to run. Owns the document types, parsing from TOML,
//! YAML or JSON, the size limit, validation that reports every problem with its field path, and the conversion
//! of one deployment into the runtime's backend-neutral [`ContainerConfig`] (with the confinement the
//! document asks for). How its value types are written (durations, sizes, `gpu`, `tcp`, `env`) is `values`.
//!
//! Pure: no network and no runtime calls; the only IO is [`read_file`]. It must not decide local policy
//! (`crate::deploy::policy`), resolve image tags (`crate::image::pull`) or plan container changes (`crate::deploy::plan`).
//! The format is documented in docs/deployments.md.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::{IpcMode, NetworkMode};
pub use crate::config::Problem;
use crate::runtime::{Confinement, ContainerConfig, Volume, VolumeSources, DEFAULT_PIDS_LIMIT};

mod devices;
mod values;

pub use values::{ByteSize, DurationSpec, Env, Gpu, TcpTarget};

/// Largest document accepted, in bytes (after the wire or the file, before parsing).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most deployments one document may hold.
pub(crate) const MAX_DEPLOYMENTS: usize = 64;

/// Errors reading or parsing a document. Each names the document (file path or `desired` source).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read deployment document {source_name}: {source}")]
    Read {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("deployment document {source_name} is {size} bytes; the limit is {limit} bytes: split it or move data into volumes")]
    TooLarge { source_name: String, size: usize, limit: usize },
    #[error("deployment document {source_name} is not valid {format}: {message}")]
    Syntax { source_name: String, format: Format, message: String },
    #[error("deployment document {source_name} is invalid:\n{}", problem_lines(.problems))]
    Invalid { source_name: String, problems: Vec<Problem> },
}

fn problem_lines(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl Error {
    /// Every reason the document was refused, one line each (what `reported` carries).
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Self::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The syntax a document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Toml => "TOML",
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

impl Format {
    /// The format a file name says: `.toml`, `.yaml`/`.yml`, `.json`; `None` for anything else.
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Self::Toml),
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// A deployment document: named deployments and the generation that orders documents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Increases with every document a controller publishes. Absent: `jetship deploy` fills in the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Deployments by name (`[a-z0-9][a-z0-9_-]{0,62}`). Defaults to none (an empty document removes all).
    #[serde(default)]
    pub deployments: BTreeMap<String, Deployment>,
}

/// One deployment: a container and how to keep it running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Image reference; may use template variables (`{jetpack_major}`) and `{auto}` (docs/images.md).
    pub image: String,
    /// Replaces the image's entrypoint. Defaults to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's command (the entrypoint's arguments). Defaults to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment over the image's: a table or a list of `KEY=VALUE`. Defaults to none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub env: Env,
    /// Working directory. Defaults to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User (`uid[:gid]` or a name from the image). Defaults to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hostname inside the container. Defaults to the backend's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `true` (every GPU), `false`, or a CDI device name such as `nvidia.com/gpu=0`. Defaults to `false`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub gpu: Gpu,
    /// Camera selectors: `all`, `/dev/video0`, a by-id name or a name substring. Defaults to none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cameras: Vec<String>,
    /// Jetson conveniences, each what jetson-containers' run.sh passes for it (docs/runtime.md): `argus`,
    /// `display`, `audio`, `usb`, `localtime`, `l4t-release`, `model`. Defaults to none; beyond `argus`,
    /// `localtime`, `l4t-release` and `model` the local policy must allow each (`policy.allowed_jetson`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub jetson: Vec<crate::base::jetson::Convenience>,
    /// `host` or `private`. Defaults to `host` (what the Jetson multimedia stack and ROS 2 expect).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ipc: IpcMode,
    /// `host`, `none` or `bridge`. Defaults to `host`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: NetworkMode,
    /// Published ports of a `bridge` container, `[IP:]HOST:CONTAINER[/tcp|udp]` (`"8080:80"`,
    /// `"127.0.0.1:5000:5000/udp"`). Defaults to none; host ports must be in policy.allowed_host_ports.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ports: Vec<String>,
    /// Size of /dev/shm when `ipc = "private"` (`"512m"`, `"1g"` or bytes). Defaults to the backend's (64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// Bind mounts `{ host, container, read_only }`. Defaults to none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub volumes: Vec<Volume>,
    /// Memory limit (`"2g"` or bytes). Defaults to none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU limit in CPUs (`1.5`). Defaults to none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Privileged container. Defaults to `false`; the local policy must allow it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub privileged: bool,
    /// Host device nodes beyond the GPU and cameras, `HOST[:CONTAINER][:PERMS]`: a node (`/dev/ttyACM0`), a
    /// renamed one (`/dev/i2c-1:/dev/i2c-7:rw`), a glob (`/dev/ttyUSB*`) or a directory (`/dev/bus/usb`).
    /// Defaults to none; each must be covered by the local policy.allowed_devices.
    #[serde(default, skip_serializing_if = "is_default")]
    pub devices: Vec<String>,
    /// Capabilities taken from Docker's default set (`NET_RAW`, or `ALL`). Defaults to none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cap_drop: Vec<String>,
    /// Supplementary groups of the process (`video`, `dialout` or gids; names from the image's /etc/group).
    /// Defaults to none; each must be listed in the local policy.allowed_groups.
    #[serde(default, skip_serializing_if = "is_default")]
    pub group_add: Vec<String>,
    /// Resource limits `NAME=SOFT[:HARD]` (`nofile=1024:4096`, `memlock=-1`). Defaults to the agent's own;
    /// above the agent's own hard limit needs policy.allow_raised_ulimits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ulimits: Vec<String>,
    /// Namespaced sysctls (`"net.ipv4.ping_group_range" = "0 2147483647"`). Defaults to none; each must match
    /// the local policy.allowed_sysctls.
    #[serde(default, skip_serializing_if = "is_default")]
    pub sysctls: BTreeMap<String, String>,
    /// Mount the image's root file system read-only. Defaults to `false`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only_rootfs: bool,
    /// tmpfs mounts `PATH[:OPTIONS]` (`/run:size=64m`), `nosuid,nodev,noexec` unless the options say
    /// otherwise. Defaults to none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tmpfs: Vec<String>,
    /// `always`, `on-failure` or `never`. Defaults to `always`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: RestartPolicy,
    /// Health check gating updates and driving restarts. Defaults to none (running counts as healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// How a change to this deployment is rolled out.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update: UpdatePolicy,

    // What loosens the container's confinement: each needs a local policy key (docs/security.md).
    /// Capabilities beyond Docker's default set (`NET_ADMIN` or `CAP_NET_ADMIN`). Defaults to none; each must be
    /// listed in the local policy.allowed_capabilities.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cap_add: Vec<String>,
    /// `default` (Docker's default seccomp profile) or `unconfined`. Defaults to `default`; `unconfined` needs
    /// policy.allow_unconfined_seccomp.
    #[serde(default, skip_serializing_if = "is_default")]
    pub seccomp: Profile,
    /// `default` (the AppArmor profile where the host enforces AppArmor) or `unconfined`. Defaults to `default`;
    /// `unconfined` needs policy.allow_unconfined_apparmor.
    #[serde(default, skip_serializing_if = "is_default")]
    pub apparmor: Profile,
    /// Whether setuid binaries and file capabilities may not raise privileges (no_new_privs). Defaults to
    /// `true`; `false` needs policy.allow_new_privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
    /// Most tasks (processes and threads) the container may run. Defaults to the smaller of 4096 and
    /// policy.pids_limit; more than policy.pids_limit is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

/// `seccomp` and `apparmor`: the default profile, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    #[default]
    Default,
    Unconfined,
}

/// Fields at their default are left out of the serialized form (the wire JSON, the store, [`Deployment::doc_hash`]),
/// so a jetship release that adds a field with a default does not change existing deployments' hashes.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `restart`: what happens when the container exits or turns unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart on any exit (with capped exponential backoff).
    #[default]
    Always,
    /// Restart when the exit code is not 0 or the container is unhealthy.
    OnFailure,
    /// Never restart.
    Never,
}

/// `update`: the rollout of a changed deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatePolicy {
    /// Restore the previous version when the new one fails its health gate. Defaults to `true`.
    pub rollback: bool,
    /// Keep the old container running while the new one passes its health gate (both run for a while; they
    /// must not fight over ports or cameras). Defaults to `false`: the old one stops before the new one starts.
    pub keep_old: bool,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self { rollback: true, keep_old: false }
    }
}

/// `health`: exactly one probe (`exec`, `http`, `tcp` or `running_for`) and its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// A command run inside the container; exit code 0 is healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// An `http://` URL that must answer 2xx or 3xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// `host:port` (or a port on 127.0.0.1) that must accept a TCP connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpTarget>,
    /// Healthy once the container has kept running this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_for: Option<DurationSpec>,
    /// Time between probes. Defaults to 10s.
    pub interval: DurationSpec,
    /// Time one probe may take. Defaults to 5s.
    pub timeout: DurationSpec,
    /// Consecutive failed probes that make the container unhealthy. Defaults to 3.
    pub retries: u32,
    /// Failures during this time after start do not count. Defaults to 0s.
    pub start_period: DurationSpec,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            exec: None,
            http: None,
            tcp: None,
            running_for: None,
            interval: DurationSpec(Duration::from_secs(10)),
            timeout: DurationSpec(Duration::from_secs(5)),
            retries: 3,
            start_period: DurationSpec(Duration::ZERO),
        }
    }
}

/// Errors turning a valid deployment into a container config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field that does not parse (the document was not validated).
    #[error("deployment {deployment}: {field}: {message}")]
    Invalid { deployment: String, field: String, message: String },
    /// The runtime backends cannot grant this yet; the document is valid but cannot run here.
    #[error(
        "deployment {deployment}: {what} is not supported by the container backends yet; remove it from the document"
    )]
    Unsupported { deployment: String, what: &'static str },
}

impl Deployment {
    /// A stable hash of the deployment as written (sha256 of its canonical JSON, 16 bytes hex). Any change to
    /// the document's deployment changes it; the reconciler labels containers with it. Fields at their default
    /// are not part of the JSON, so a newer jetship with more fields hashes old documents the same.
    pub fn doc_hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("deployment serializes");
        hex::encode(&sha2::Sha256::digest(&json)[..16])
    }

    /// The container config for this deployment with `image` as the pinned reference the pull engine resolved
    /// the deployment's `image` to.
    pub fn container_config(&self, name: &str, image: &str) -> std::result::Result<ContainerConfig, ConvertError> {
        let mut config = ContainerConfig {
            image: image.to_owned(),
            entrypoint: self.command.clone(),
            args: self.args.clone(),
            env: self.env.0.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            working_dir: self.working_dir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            ipc: self.ipc,
            network: self.network,
            ports: crate::base::ports::parse_list(&self.ports).map_err(|p| ConvertError::Invalid {
                deployment: name.into(),
                field: "ports".into(),
                message: p.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "),
            })?,
            shm_size_bytes: self.shm_size.map(|s| s.0),
            memory_bytes: self.memory.map(|s| s.0),
            cpus: self.cpus,
            volumes: self.volumes.clone(),
            gpu: self.gpu.0.clone(),
            cameras: self.cameras.clone(),
            jetson: self.jetson.clone(),
            confinement: self.confinement(),
            ..Default::default()
        };
        devices::convert(self, name, &mut config)?;
        Ok(config)
    }

    /// What the document says about its confinement. Volume roots and root refusal are the local policy's
    /// ([`crate::deploy::policy::confine`]); until it fills them in, volumes are refused.
    pub fn confinement(&self) -> Confinement {
        Confinement {
            seccomp: self.seccomp == Profile::Default,
            apparmor: self.apparmor == Profile::Default,
            no_new_privileges: self.no_new_privileges.unwrap_or(true),
            pids_limit: Some(self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)),
            cap_add: self
                .cap_add
                .iter()
                .map(|c| {
                    crate::runtime::spec::parse_capability(c)
                        .map_or_else(|| c.clone(), crate::runtime::spec::capability_name)
                })
                .collect(),
            refuse_root: false,
            volume_sources: VolumeSources::Beneath(Vec::new()),
            ..Default::default()
        }
    }
}

/// Whether `name` is a valid deployment name: `[a-z0-9][a-z0-9_-]{0,62}` (it becomes part of container ids
/// and MQTT payload keys).
pub(crate) fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Reads and parses a document file; the format comes from the extension, else from the content.
pub fn read_file(path: &Path) -> Result<Document> {
    let source_name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| Error::Read { source_name: source_name.clone(), source })?;
    if meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(Error::TooLarge { source_name, size: meta.len() as usize, limit: MAX_DOCUMENT_BYTES });
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Read { source_name: source_name.clone(), source })?;
    parse(&bytes, Format::from_path(path), &source_name)
}

/// Parses and validates a document. `format` `None` sniffs it: `{` starts JSON, text that parses as TOML is
/// TOML, anything else is YAML. `source_name` names the document in errors.
pub fn parse(bytes: &[u8], format: Option<Format>, source_name: &str) -> Result<Document> {
    let value = parse_value(bytes, format, source_name)?;
    // The deployments that typed are validated too, so one report lists every problem of the document.
    let (doc, mut problems) = type_value(value);
    problems.extend(validate(&doc));
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(Error::Invalid { source_name: source_name.into(), problems })
    }
}

/// Parses the syntax only (size limit included) into a JSON value.
pub(crate) fn parse_value(bytes: &[u8], format: Option<Format>, source_name: &str) -> Result<serde_json::Value> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge { source_name: source_name.into(), size: bytes.len(), limit: MAX_DOCUMENT_BYTES });
    }
    let syntax = |format, message: String| Error::Syntax { source_name: source_name.into(), format, message };
    let text = std::str::from_utf8(bytes).map_err(|e| syntax(format.unwrap_or(Format::Json), format!("{e}")))?;
    let from_toml = |text: &str| {
        toml::from_str::<toml::Table>(text)
            .map_err(|e| syntax(Format::Toml, e.to_string().trim().to_owned()))
            .and_then(|t| serde_json::to_value(t).map_err(|e| syntax(Format::Toml, e.to_string())))
    };
    let from_yaml = |text: &str| {
        serde_yaml_ng::from_str::<serde_json::Value>(text).map_err(|e| syntax(Format::Yaml, e.to_string()))
    };
    let from_json =
        |text: &str| serde_json::from_str::<serde_json::Value>(text).map_err(|e| syntax(Format::Json, e.to_string()));
    match format {
        Some(Format::Toml) => from_toml(text),
        Some(Format::Yaml) => from_yaml(text),
        Some(Format::Json) => from_json(text),
        None if text.trim_start().starts_with('{') => from_json(text),
        None => from_toml(text).or_else(|toml_err| {
            // Text with a TOML table header or `key = value` line reports the TOML error, else the YAML one.
            let looks_toml = text.lines().map(str::trim).any(|l| l.starts_with('[') || l.contains(" = "));
            from_yaml(text).map_err(|yaml_err| if looks_toml { toml_err } else { yaml_err })
        }),
    }
}

/// Types a parsed value into a document, collecting a problem for every bad top-level key and every bad field
/// of every deployment (each field is typed on its own so one mistake does not hide the next).
pub fn from_value(value: serde_json::Value) -> std::result::Result<Document, Vec<Problem>> {
    let (doc, problems) = type_value(value);
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(problems)
    }
}

/// Types what it can: the document of every deployment that typed, and the problems of the rest.
fn type_value(value: serde_json::Value) -> (Document, Vec<Problem>) {
    let mut problems = Vec::new();
    let serde_json::Value::Object(top) = value else {
        let message = "must be a table of `generation` and `deployments`".into();
        return (Document::default(), vec![Problem { key: "(top level)".into(), message }]);
    };
    let mut doc = Document::default();
    for (key, v) in top {
        match key.as_str() {
            "generation" if v.is_null() => {}
            "generation" => match typed::<u64>(v) {
                Ok(g) => doc.generation = Some(g),
                Err(m) => problems.push(Problem {
                    key: "generation".into(),
                    message: format!("{m}; it must be a whole number of 0 or more"),
                }),
            },
            "deployments" => match v {
                serde_json::Value::Object(deps) => {
                    for (name, dep) in deps {
                        match typed_deployment(&name, dep) {
                            Ok(d) => {
                                doc.deployments.insert(name, d);
                            }
                            Err(mut p) => {
                                if !valid_name(&name) {
                                    problems.push(name_problem(&name));
                                }
                                problems.append(&mut p)
                            }
                        }
                    }
                }
                _ => problems.push(Problem {
                    key: "deployments".into(),
                    message: "must be a table of named deployments".into(),
                }),
            },
            other => problems.push(Problem {
                key: other.into(),
                message: "unknown field; a document has only `generation` and `deployments`".into(),
            }),
        }
    }
    (doc, problems)
}

fn typed<T: DeserializeOwned>(v: serde_json::Value) -> std::result::Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn typed_deployment(name: &str, value: serde_json::Value) -> std::result::Result<Deployment, Vec<Problem>> {
    let prefix = format!("deployments.{name}");
    let serde_json::Value::Object(fields) = value else {
        return Err(vec![Problem { key: prefix, message: "must be a table of deployment fields".into() }]);
    };
    let mut problems = Vec::new();
    if !fields.contains_key("image") {
        problems.push(Problem { key: format!("{prefix}.image"), message: "is required (an image reference)".into() });
    }
    // Each field on its own, beside a placeholder image, so every bad field is reported with its path.
    let mut typed_alone = Vec::new();
    for (key, v) in &fields {
        let mut one = serde_json::Map::new();
        one.insert("image".into(), serde_json::Value::String("placeholder".into()));
        one.insert(key.clone(), v.clone());
        match serde_path_to_error::deserialize::<_, Deployment>(serde_json::Value::Object(one)) {
            Ok(d) => typed_alone.push(d),
            Err(e) => {
                let path = e.path().to_string();
                let key = if path == "." { format!("{prefix}.{key}") } else { format!("{prefix}.{path}") };
                problems.push(Problem { key, message: e.into_inner().to_string() });
            }
        }
    }
    if !problems.is_empty() {
        // The fields that typed still get their other checks, so the report is complete. The name is checked
        // by the caller.
        for d in typed_alone {
            let alone = Document { generation: None, deployments: BTreeMap::from([(name.to_owned(), d)]) };
            problems.extend(validate(&alone).into_iter().filter(|p| p.key != prefix));
        }
        return Err(problems);
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| vec![Problem { key: prefix, message: e.to_string() }])
}

fn name_problem(name: &str) -> Problem {
    Problem {
        key: format!("deployments.{name}"),
        message: format!("name `{name}` must match [a-z0-9][a-z0-9_-]{{0,62}}"),
    }
}

/// Checks the rules types cannot: names, image references, paths, limits and health checks. Returns every
/// problem, each with its field path (`deployments.yolo.health.interval`); empty means valid.
pub(crate) fn validate(doc: &Document) -> Vec<Problem> {
    let mut problems = Vec::new();
    if doc.deployments.len() > MAX_DEPLOYMENTS {
        problems.push(Problem {
            key: "deployments".into(),
            message: format!("{} deployments; at most {MAX_DEPLOYMENTS} per document", doc.deployments.len()),
        });
    }
    for (name, d) in &doc.deployments {
        let prefix = format!("deployments.{name}");
        if !valid_name(name) {
            problems.push(name_problem(name));
        }
        let mut bad = |field: &str, message: String| {
            let key = if field.is_empty() { prefix.clone() } else { format!("{prefix}.{field}") };
            problems.push(Problem { key, message })
        };
        if let Err(m) = check_image(&d.image) {
            bad("image", m);
        }
        for (field, list) in [("command", &d.command), ("args", &d.args)] {
            if let Some(l) = list {
                if field == "command" && l.is_empty() {
                    bad(field, "must not be empty; leave it out to keep the image's entrypoint".into());
                }
                for (i, a) in l.iter().enumerate() {
                    if a.contains('\0') {
                        bad(&format!("{field}[{i}]"), "must not contain NUL".into());
                    }
                }
            }
        }
        for (k, v) in &d.env.0 {
            if k.is_empty() || k.contains(['=', '\0']) {
                bad(&format!("env.{k}"), format!("variable name `{k}` must be non-empty without `=`"));
            }
            if v.contains('\0') {
                bad(&format!("env.{k}"), "value must not contain NUL".into());
            }
        }
        if let Some(dir) = &d.working_dir {
            if !dir.starts_with('/') {
                bad("working_dir", format!("`{dir}` must be an absolute path"));
            }
        }
        for (field, v) in [("user", &d.user), ("hostname", &d.hostname)] {
            if v.as_deref().is_some_and(|s| s.is_empty() || s.contains(['\0', '\n', '/'])) {
                bad(field, "must be non-empty and not contain `/` or control characters".into());
            }
        }
        if let Some(g) = &d.gpu.0 {
            if let Err(e) = crate::host::devices::gpu::GpuRequest::parse(g) {
                bad("gpu", e.to_string());
            }
        }
        for (i, c) in d.cameras.iter().enumerate() {
            if c.trim().is_empty() {
                bad(&format!("cameras[{i}]"), "must not be empty; use \"all\", \"/dev/video0\" or a name".into());
            }
        }
        crate::base::ports::problems(d.network, &d.ports, &mut |i, m| bad(&format!("ports[{i}]"), m));
        if let Some(s) = d.shm_size {
            if s.0 < 1 << 20 {
                bad("shm_size", format!("{} bytes is too small; use at least \"1m\"", s.0));
            }
        }
        if let Some(m) = d.memory {
            if m.0 < 4 << 20 {
                bad("memory", format!("{} bytes is too small; use at least \"4m\"", m.0));
            }
        }
        if let Some(c) = d.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 1024.0) {
                bad("cpus", format!("{c} must be more than 0 and at most 1024"));
            }
        }
        for (i, v) in d.volumes.iter().enumerate() {
            for (field, p) in [("host", &v.host), ("container", &v.container)] {
                if let Err(m) = check_abs_path(p) {
                    bad(&format!("volumes[{i}].{field}"), m);
                }
            }
            if v.container == Path::new("/") {
                bad(&format!("volumes[{i}].container"), "must not be `/`".into());
            }
        }
        devices::validate(d, &mut bad);
        for (i, c) in d.cap_add.iter().enumerate() {
            if crate::runtime::spec::parse_capability(c).is_none() {
                bad(&format!("cap_add[{i}]"), format!("`{c}` is not a Linux capability (e.g. NET_ADMIN)"));
            }
        }
        if d.pids_limit == Some(0) {
            bad("pids_limit", "must be at least 1".into());
        }
        if let Some(h) = &d.health {
            check_health(h, &mut |field, m| {
                let key = if field.is_empty() { "health".to_owned() } else { format!("health.{field}") };
                bad(&key, m)
            });
        }
    }
    problems
}

fn check_image(image: &str) -> std::result::Result<(), String> {
    // Expanded with a sample host's facts: this checks the syntax and the variable names, not the host.
    let vars = crate::image::reference::TemplateVars::from_l4t(crate::host::l4t::L4tVersion::new(36, 4, 3));
    match crate::image::reference::expand(image, &vars) {
        Ok(expanded) => crate::image::reference::Reference::parse(&expanded).map(|_| ()).map_err(|e| e.to_string()),
        Err(crate::image::reference::Error::MissingFact { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn check_abs_path(p: &Path) -> std::result::Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("`{}` must be an absolute path", p.display()));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("`{}` must not contain `..`", p.display()));
    }
    Ok(())
}

fn check_health(h: &HealthCheck, bad: &mut impl FnMut(&str, String)) {
    let probes = [h.exec.is_some(), h.http.is_some(), h.tcp.is_some(), h.running_for.is_some()];
    if probes.iter().filter(|&&p| p).count() != 1 {
        bad("", "must have exactly one of `exec`, `http`, `tcp` or `running_for`".into());
    }
    if h.exec.as_ref().is_some_and(|e| e.is_empty() || e[0].is_empty()) {
        bad("exec", "must be a non-empty command list such as [\"curl\", \"-f\", \"http://127.0.0.1/\"]".into());
    }
    if let Some(u) = &h.http {
        match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => bad("http", format!("`{u}` must be an http:// URL such as http://127.0.0.1:8080/health")),
        }
    }
    if let Some(TcpTarget(t)) = &h.tcp {
        let ok =
            t.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            bad("tcp", format!("`{t}` must be host:port such as 127.0.0.1:8080, or a port number"));
        }
    }
    if h.running_for.is_some_and(|d| d.0.is_zero()) {
        bad("running_for", "must be more than 0s".into());
    }
    for (field, d) in [("interval", h.interval), ("timeout", h.timeout)] {
        if d.0 < Duration::from_millis(100) {
            bad(field, format!("{d} is too short; use at least 100ms"));
        }
    }
    if !(1..=100).contains(&h.retries) {
        bad("retries", format!("{} must be between 1 and 100", h.retries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(text: &str) -> Result<Document> {
        parse(text.as_bytes(), Some(Format::Toml), "test.toml")
    }

    fn problem_keys(err: Error) -> Vec<String> {
        match err {
            Error::Invalid { problems, .. } => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected invalid, got {other}"),
        }
    }

    const FULL: &str = r#"
generation = 7
[deployments.yolo]
image = "ultralytics/ultralytics:latest-jetson-jetpack{jetpack_major}"
command = ["python3"]
args = ["detect.py", "--source", "0"]
env = { MODEL = "yolo11n.pt", THREADS = 4 }
working_dir = "/app"
user = "1000:1000"
hostname = "yolo"
gpu = true
cameras = ["all"]
ipc = "host"
network = "host"
shm_size = "1g"
memory = "2g"
cpus = 2.5
volumes = [{ host = "/var/lib/jetship/volumes/models", container = "/models", read_only = true }]
restart = "on-failure"
[deployments.yolo.health]
http = "http://127.0.0.1:8080/health"
interval = "1m30s"
timeout = 3
retries = 5
start_period = "500ms"
[deployments.yolo.update]
rollback = false
keep_old = true
"#;

    #[test]
    fn full_toml_document_parses_every_field() {
        let doc = parse_toml(FULL).unwrap();
        assert_eq!(doc.generation, Some(7));
        let d = &doc.deployments["yolo"];
        assert_eq!(d.command.as_deref(), Some(&["python3".to_string()][..]));
        assert_eq!(d.env.0["THREADS"], "4");
        assert_eq!(d.gpu.0.as_deref(), Some("all"));
        assert_eq!(d.shm_size, Some(ByteSize(1 << 30)));
        assert_eq!(d.memory, Some(ByteSize(2 << 30)));
        assert_eq!(d.restart, RestartPolicy::OnFailure);
        let h = d.health.as_ref().unwrap();
        assert_eq!(h.interval.0, Duration::from_secs(90));
        assert_eq!(h.timeout.0, Duration::from_secs(3));
        assert_eq!(h.start_period.0, Duration::from_millis(500));
        assert_eq!(h.retries, 5);
        assert_eq!(d.update, UpdatePolicy { rollback: false, keep_old: true });
        assert!(d.volumes[0].read_only);
    }

    #[test]
    fn defaults_apply_when_fields_are_left_out() {
        let doc =
            parse_toml("[deployments.hello]\nimage = \"busybox\"\n[deployments.hello.health]\nexec = [\"true\"]\n")
                .unwrap();
        assert_eq!(doc.generation, None);
        let d = &doc.deployments["hello"];
        assert_eq!(d.gpu, Gpu(None));
        assert_eq!(d.ipc, IpcMode::Host);
        assert_eq!(d.network, NetworkMode::Host);
        assert_eq!(d.restart, RestartPolicy::Always);
        assert_eq!(d.update, UpdatePolicy { rollback: true, keep_old: false });
        let h = d.health.as_ref().unwrap();
        assert_eq!((h.interval.0, h.timeout.0, h.retries), (Duration::from_secs(10), Duration::from_secs(5), 3));
    }

    #[test]
    fn json_yaml_and_toml_give_the_same_document() {
        let toml_doc = parse_toml(FULL).unwrap();
        let json = serde_json::to_vec(&toml_doc).unwrap();
        assert_eq!(parse(&json, None, "wire").unwrap(), toml_doc);
        let yaml = serde_yaml_ng::to_string(&toml_doc).unwrap();
        assert_eq!(parse(yaml.as_bytes(), Some(Format::Yaml), "d.yaml").unwrap(), toml_doc);
        assert_eq!(parse(yaml.as_bytes(), None, "sniffed").unwrap(), toml_doc);
        assert_eq!(parse(FULL.as_bytes(), None, "sniffed").unwrap(), toml_doc);
    }

    #[test]
    fn format_follows_the_file_extension() {
        assert_eq!(Format::from_path(Path::new("a.TOML")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.yaml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.txt")), None);
    }

    #[test]
    fn yaml_env_list_and_gpu_name_are_accepted() {
        let yaml = "deployments:\n  cam:\n    image: nvcr.io/nvidia/l4t-base:r36.2.0\n    env: [\"A=1\", \"B=x=y\"]\n    gpu: nvidia.com/gpu=0\n    ipc: private\n    network: none\n";
        let doc = parse(yaml.as_bytes(), Some(Format::Yaml), "d.yaml").unwrap();
        let d = &doc.deployments["cam"];
        assert_eq!(d.env.0["B"], "x=y");
        assert_eq!(d.gpu.0.as_deref(), Some("nvidia.com/gpu=0"));
        assert_eq!((d.ipc, d.network), (IpcMode::Private, NetworkMode::None));
    }

    #[test]
    fn every_problem_is_reported_with_its_field_path() {
        let text = r#"
generatoin = 3
[deployments.Bad_Name]
image = "busybox"
[deployments.yolo]
image = "ultralytics/ultralytics:{jetpack_majr}"
colour = "red"
restart = "sometimes"
memory = "lots"
[deployments.yolo.health]
exec = ["true"]
interval = "ten seconds"
[deployments.noimage]
gpu = "yes please"
"#;
        let keys = problem_keys(parse_toml(text).unwrap_err());
        for want in [
            "generatoin",
            "deployments.Bad_Name",
            "deployments.yolo.colour",
            "deployments.yolo.restart",
            "deployments.yolo.memory",
            "deployments.yolo.health.interval",
            "deployments.noimage.image",
        ] {
            assert!(keys.iter().any(|k| k == want), "missing {want} in {keys:?}");
        }
        // Semantic problems appear once the types are right.
        let text = r#"
[deployments.Bad_Name]
image = "busybox"
[deployments.yolo]
image = "ultralytics/ultralytics:{jetpack_majr}"
cpus = 0
memory = 100
gpu = "nvidia.com/gpu=!"
cameras = [""]
volumes = [{ host = "data", container = "/d/../etc" }]
devices = ["/etc/passwd"]
working_dir = "app"
[deployments.yolo.health]
exec = []
tcp = "nohost"
interval = "10ms"
retries = 0
"#;
        let keys = problem_keys(parse_toml(text).unwrap_err());
        assert_eq!(
            keys,
            [
                "deployments.Bad_Name",
                "deployments.yolo.image",
                "deployments.yolo.working_dir",
                "deployments.yolo.gpu",
                "deployments.yolo.cameras[0]",
                "deployments.yolo.memory",
                "deployments.yolo.cpus",
                "deployments.yolo.volumes[0].host",
                "deployments.yolo.volumes[0].container",
                "deployments.yolo.devices[0]",
                "deployments.yolo.health",
                "deployments.yolo.health.exec",
                "deployments.yolo.health.tcp",
                "deployments.yolo.health.interval",
                "deployments.yolo.health.retries",
            ]
        );
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "yolo", "0cam", "my_app-2", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "Yolo", "a.b", "a/b", "a b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn oversized_document_is_refused_before_parsing() {
        let big = vec![b'#'; 2 * 1024 * 1024];
        let err = parse(&big, None, "desired").unwrap_err();
        assert!(matches!(err, Error::TooLarge { size, .. } if size == 2 * 1024 * 1024), "{err}");
        assert!(err.to_string().contains("limit is 1048576"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_source_and_format() {
        let err = parse(b"[deployments.x\nimage=", Some(Format::Toml), "site.toml").unwrap_err().to_string();
        assert!(err.contains("site.toml") && err.contains("TOML"), "{err}");
        let err = parse(b"{\"deployments\": ", None, "wire").unwrap_err().to_string();
        assert!(err.contains("wire") && err.contains("JSON"), "{err}");
        let err = parse(&[0xff, 0xfe], None, "wire").unwrap_err().to_string();
        assert!(err.contains("wire"), "{err}");
        let err = parse(b"[1, 2]", Some(Format::Json), "wire").unwrap_err().to_string();
        assert!(err.contains("(top level)"), "{err}");
    }

    #[test]
    fn durations_parse_and_print_canonically() {
        for (text, ms) in [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("1.5", 1_500),
            ("1d", 86_400_000),
            ("0", 0),
        ] {
            let d = DurationSpec::parse(text).unwrap();
            assert_eq!(d.0.as_millis(), ms, "{text}");
            assert_eq!(DurationSpec::parse(&d.to_string()).unwrap(), d, "{text} round trip");
        }
        assert_eq!(DurationSpec(Duration::from_millis(3_723_004)).to_string(), "1h2m3s4ms");
        for bad in ["", "s", "10x", "-1", "1m-3s", "ten"] {
            assert!(DurationSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_parse_binary_units() {
        for (text, bytes) in [
            ("512m", 512 << 20),
            ("8g", 8 << 30),
            ("8G", 8 << 30),
            ("1.5GiB", 3 << 29),
            ("64k", 65_536),
            ("100b", 100),
            ("4096", 4096),
            ("2Mi", 2 << 20),
        ] {
            assert_eq!(ByteSize::parse(text).unwrap(), ByteSize(bytes), "{text}");
        }
        for bad in ["", "g", "8x", "-1m", "1.2.3"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_config_carries_every_setting() {
        let doc = parse_toml(FULL).unwrap();
        let pinned = "docker.io/ultralytics/ultralytics@sha256:".to_owned() + &"a".repeat(64);
        let c = doc.deployments["yolo"].container_config("yolo", &pinned).unwrap();
        assert_eq!(c.image, pinned);
        assert_eq!(c.entrypoint.unwrap(), ["python3"]);
        assert_eq!(c.args.unwrap(), ["detect.py", "--source", "0"]);
        assert_eq!(c.env, ["MODEL=yolo11n.pt", "THREADS=4"]);
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.hostname.as_deref(), Some("yolo"));
        assert_eq!((c.ipc, c.network), (IpcMode::Host, NetworkMode::Host));
        assert_eq!((c.shm_size_bytes, c.memory_bytes, c.cpus), (Some(1 << 30), Some(2 << 30), Some(2.5)));
        assert_eq!(c.volumes.len(), 1);
        assert_eq!(c.gpu.as_deref(), Some("all"));
        assert_eq!(c.cameras, ["all"]);
    }

    #[test]
    fn privileged_and_devices_reach_the_container_config() {
        let doc = parse_toml("[deployments.x]\nimage = \"busybox\"\nprivileged = true\ndevices = [\"/dev/ttyACM0\"]\n")
            .unwrap();
        let c = doc.deployments["x"].container_config("x", "busybox").unwrap();
        assert!(c.privileged);
        assert_eq!(c.devices[0].host, "/dev/ttyACM0");
    }

    #[test]
    fn doc_hash_changes_with_any_field_and_only_then() {
        let doc = parse_toml(FULL).unwrap();
        let d = doc.deployments["yolo"].clone();
        assert_eq!(d.doc_hash(), d.clone().doc_hash());
        let mut e = d.clone();
        e.env.0.insert("NEW".into(), "1".into());
        assert_ne!(d.doc_hash(), e.doc_hash());
        let mut i = d.clone();
        i.image = "busybox".into();
        assert_ne!(d.doc_hash(), i.doc_hash());
    }

    #[test]
    fn defaults_are_left_out_of_the_canonical_form() {
        let doc = parse_toml("[deployments.a]\nimage = \"busybox\"\nipc = \"host\"\nrestart = \"always\"\n").unwrap();
        let json = serde_json::to_string(&doc.deployments["a"]).unwrap();
        assert_eq!(json, r#"{"image":"busybox"}"#);
        let full = serde_json::to_value(parse_toml(FULL).unwrap()).unwrap();
        assert_eq!(full["deployments"]["yolo"]["update"]["keep_old"], true);
        assert_eq!(full["deployments"]["yolo"]["gpu"], true);
    }

    #[test]
    fn confinement_fields_parse_validate_and_reach_the_container_config() {
        let doc = parse_toml(
            "[deployments.a]\nimage = \"busybox\"\ncap_add = [\"net_admin\"]\nseccomp = \"unconfined\"\n\
             apparmor = \"unconfined\"\nno_new_privileges = false\npids_limit = 128\n",
        )
        .unwrap();
        let c = doc.deployments["a"].container_config("a", "busybox").unwrap().confinement;
        assert_eq!(c.cap_add, ["CAP_NET_ADMIN"]);
        assert!(!c.seccomp && !c.apparmor && !c.no_new_privileges);
        assert_eq!(c.pids_limit, Some(128));
        let plain = parse_toml("[deployments.a]\nimage = \"busybox\"\n").unwrap();
        let c = plain.deployments["a"].container_config("a", "busybox").unwrap().confinement;
        assert!(c.seccomp && c.apparmor && c.no_new_privileges && c.cap_add.is_empty());
        assert_eq!(c.pids_limit, Some(crate::runtime::DEFAULT_PIDS_LIMIT));
        let keys = problem_keys(
            parse_toml("[deployments.a]\nimage = \"busybox\"\ncap_add = [\"CAP_FLY\"]\npids_limit = 0\n").unwrap_err(),
        );
        assert_eq!(keys, ["deployments.a.cap_add[0]", "deployments.a.pids_limit"]);
        assert_eq!(
            problem_keys(parse_toml("[deployments.a]\nimage = \"b\"\nseccomp = \"off\"\n").unwrap_err()),
            ["deployments.a.seccomp"]
        );
    }

    #[test]
    fn generation_must_be_a_whole_number() {
        let keys = problem_keys(parse(br#"{"generation": -1, "deployments": {}}"#, None, "wire").unwrap_err());
        assert_eq!(keys, ["generation"]);
        let doc = parse(br#"{"generation": null}"#, None, "wire").unwrap();
        assert_eq!(doc.generation, None);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;
    use crate::config::PolicyConfig;

    fn example(name: &str) -> Document {
        read_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name))
            .unwrap_or_else(|e| panic!("examples/{name} must parse and validate: {e}"))
    }

    #[test]
    fn yolo_example_is_valid_matched_by_jetpack_and_within_the_default_policy() {
        let doc = example("yolo.toml");
        assert_eq!(doc.generation, None, "deploy fills the generation in");
        let d = &doc.deployments["yolo"];
        assert!(d.image.contains("{jetpack_major}"));
        assert_eq!(
            (d.gpu.0.as_deref(), d.cameras.as_slice(), d.ipc),
            (Some("all"), &["all".to_string()][..], IpcMode::Host)
        );
        assert!(d.health.as_ref().is_some_and(|h| h.exec.is_some()));
        let state_dir = Path::new(crate::config::DEFAULT_STATE_DIR);
        assert_eq!(crate::deploy::policy::check(&doc, &PolicyConfig::default(), state_dir), []);
        let ngc_only = PolicyConfig { allowed_registries: vec!["nvcr.io".into()], ..Default::default() };
        assert_eq!(crate::deploy::policy::check(&doc, &ngc_only, state_dir).len(), 1, "Docker Hub image refused");
        // Under another state dir the volume is outside the allowed folder.
        assert_eq!(crate::deploy::policy::check(&doc, &PolicyConfig::default(), Path::new("/srv/jetship")).len(), 1);
        let vars = crate::image::reference::TemplateVars::from_l4t(crate::host::l4t::L4tVersion::new(36, 4, 3));
        assert_eq!(
            crate::image::reference::expand(&d.image, &vars).unwrap(),
            "ultralytics/ultralytics:latest-jetson-jetpack6"
        );
    }

    #[test]
    fn hello_example_is_valid_and_runs_anywhere() {
        let doc = example("hello.toml");
        let d = &doc.deployments["hello"];
        assert_eq!(d.gpu.0, None);
        assert!(d.cameras.is_empty());
        assert!(d.health.as_ref().is_some_and(|h| h.running_for.is_some()));
        assert_eq!(crate::deploy::policy::check(&doc, &PolicyConfig::default(), Path::new("/var/lib/jetship")), []);
        let c = d.container_config("hello", "docker.io/library/busybox@sha256:0").unwrap();
        assert_eq!(c.memory_bytes, Some(32 << 20));
    }
}
