//! Container runtime backends. `spec` turns an image config plus a deployment into an OCI runtime spec;
//! `conmon` supervises containers over runc/crun. Backends (native OCI, Docker Engine) implement one narrow
//! trait, [`ContainerRuntime`], chosen by `runtime.backend`, so the reconciler and `jetship run` see one API.
//! What confines a container is [`Confinement`]: `seccomp` (Docker's default profile, kept as data),
//! `apparmor` (the native backend's profile), `mounts` (bind sources resolved beneath their allowed root and
//! mounted from what was resolved); `network` joins bridge containers to the agent's bridge through the CNI
//! plugins (`cni`) in a namespace of their own (`netns`); `exec` runs a runtime's exec command with a time limit and bounded capture.
//!
//! Must not decide policy: requests arrive here already checked against the agent's local policy, and the
//! policy's answers (which roots volumes may come from, whether root is refused) arrive in [`Confinement`].

pub mod apparmor;
pub mod attach;
pub mod cni;
pub mod conmon;
pub mod devices;
pub mod docker;
pub mod exec;
pub mod follow;
pub mod labels;
pub mod mounts;
pub mod netns;
pub mod network;
pub mod oci;
pub mod privileges;
pub mod seccomp;
pub mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::devices::gpu::GpuRequest;
pub use attach::ExecIo;
pub use conmon::LogLine;
pub use follow::LogSink;
pub use spec::BindMount;

use crate::base::{IpcMode, NetworkMode};

/// Errors of a runtime backend, with the container or image named.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Supervisor(#[from] conmon::Error),
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// A bind source that cannot be resolved as its confinement demands (a symlink, outside its root).
    #[error(transparent)]
    Mount(#[from] mounts::Error),
    /// Attaching a container to the bridge or detaching it failed (a CNI plugin, its namespace).
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error(transparent)]
    Gpu(#[from] crate::host::devices::gpu::GpuError),
    /// A requested camera is not connected: the deployment waits for it (`waiting-for-device`).
    #[error(transparent)]
    Camera(#[from] crate::host::devices::cameras::CameraError),
    /// A requested device node is not present (the deployment waits for it), not usable, or not allowed.
    #[error(transparent)]
    Device(#[from] devices::Error),
    /// A Jetson convenience this host cannot give (no X server, not a Jetson, nvargus-daemon down).
    #[error(transparent)]
    Jetson(#[from] crate::host::devices::jetson::JetsonError),
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("container {id}: {message}")]
    Container { id: String, message: String },
    #[error("{backend} backend: {message}")]
    Backend { backend: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a container should be: the deployment's settings, backend-neutral. The same value gives the same
/// observable container on every backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// Pinned image reference (`registry/repo@sha256:...`), as resolved for this host.
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// KEY=VALUE entries over the image's environment.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub ipc: IpcMode,
    pub network: NetworkMode,
    /// Published ports (only with [`NetworkMode::Bridge`]). Left out of the JSON when empty, so the spec hash
    /// of containers without ports stays what it was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::base::PortMapping>,
    pub shm_size_bytes: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub volumes: Vec<Volume>,
    /// `None`: no GPU; `Some("all")` or a CDI device name such as `nvidia.com/gpu=0`.
    pub gpu: Option<String>,
    /// Camera selectors: `all`, `csi`, `/dev/video0`, a by-id name, or a name substring.
    pub cameras: Vec<String>,
    // The fields below are left out of the JSON at their defaults, so the spec hash of a container that uses
    // none of them stays what it was before they existed (no recreation after an upgrade).
    /// Host device nodes by path, pattern or directory ([`devices`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<devices::DeviceRequest>,
    /// Docker's `--privileged`: every capability, every host device, no seccomp or AppArmor, a writable /sys.
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// Capabilities taken from Docker's default set (`CAP_...` names, or `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Supplementary groups of the process: gids, or names in the image's /etc/group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// Resource limits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<privileges::Ulimit>,
    /// Namespaced sysctls (checked by [`privileges::sysctl_problem`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Mount the image's root file system read-only.
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_rootfs: bool,
    /// tmpfs mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<privileges::Tmpfs>,
    /// Jetson conveniences: what jetson-containers' run.sh passes for each ([`crate::host::devices::jetson`]).
    /// Left out of the JSON when empty, so the spec hash of a container without any stays what it was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jetson: Vec<crate::base::jetson::Convenience>,
    /// What confines the container. Defaults to Docker's confinement plus no_new_privs and a pids limit.
    pub confinement: Confinement,
}

pub use crate::base::DEFAULT_PIDS_LIMIT;

/// What confines a container beyond its namespaces: every field at its default is the safe choice, and each
/// widening comes from a deployment field that the local policy allowed (docs/security.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Confinement {
    /// Docker's default seccomp profile ([`seccomp`]); `false`: no filter. Defaults to `true`.
    pub seccomp: bool,
    /// The default AppArmor profile where the host enforces AppArmor (native: [`apparmor::PROFILE`], Docker:
    /// the daemon's `docker-default`); `false`: unconfined. Defaults to `true`.
    pub apparmor: bool,
    /// `no_new_privs` for every process of the container (setuid binaries gain nothing). Defaults to `true`.
    pub no_new_privileges: bool,
    /// Most tasks the container's pids cgroup allows; `None`: no limit. Defaults to [`DEFAULT_PIDS_LIMIT`].
    pub pids_limit: Option<u64>,
    /// Capabilities beyond Docker's default set, as `CAP_...` names. Defaults to none.
    pub cap_add: Vec<String>,
    /// Refuse to create the container when its process would run as uid 0. Defaults to `false`.
    pub refuse_root: bool,
    /// Where volume host paths may come from. Defaults to [`VolumeSources::AsNamed`] (a local caller's paths).
    pub volume_sources: VolumeSources,
    /// The patterns every passed device node must match (`policy.allowed_devices`). Defaults to any (a local
    /// caller's devices).
    #[serde(skip_serializing_if = "devices::Allowed::is_any")]
    pub allowed_devices: devices::Allowed,
}

impl Default for Confinement {
    fn default() -> Self {
        Self {
            seccomp: true,
            apparmor: true,
            no_new_privileges: true,
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            cap_add: Vec::new(),
            refuse_root: false,
            volume_sources: VolumeSources::AsNamed,
            allowed_devices: devices::Allowed(None),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a volume's host path is resolved before it is bind-mounted ([`mounts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeSources {
    /// As the caller named it, symlinks followed: for root on the device (`jetship run -v`), who is trusted.
    #[default]
    AsNamed,
    /// Beneath the longest of these roots that lexically contains it, with no symlink below that root (the
    /// roots themselves are config and may be symlinks). A path under none of them is refused.
    Beneath(Vec<PathBuf>),
}

/// A bind mount asked for by a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl Error {
    /// The camera selector or device pattern a create failed for because it is not present: the deployment
    /// waits for it (`waiting-for-device`) instead of failing.
    pub(crate) fn missing_device(&self) -> Option<&str> {
        match self {
            Self::Camera(crate::host::devices::cameras::CameraError::Missing { selector }) => Some(selector),
            Self::Device(devices::Error::Missing { pattern }) => Some(pattern),
            _ => None,
        }
    }
}

impl ContainerConfig {
    /// The GPU request, parsed.
    pub(crate) fn gpu_request(&self) -> Result<Option<GpuRequest>> {
        self.gpu.as_deref().map(GpuRequest::parse).transpose().map_err(Error::from)
    }

    /// A stable hash of the settings (sha256 of the canonical JSON), stored as [`labels::SPEC_HASH`].
    pub fn spec_hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("container config serializes");
        hex::encode(&sha2::Sha256::digest(&json)[..16])
    }
}

/// A container's lifecycle state as a backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Exited,
    /// Known to jetship but gone from the runtime (e.g. after a reboot).
    Missing,
}

/// A container a backend owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Backend id (the conmon/runc id, or Docker's container name).
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which output stream of an exec'd command a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStream {
    Stdout,
    Stderr,
}

/// Where the output of [`ContainerRuntime::exec`] goes, chunk by chunk.
pub type ExecSink = Arc<dyn Fn(ExecStream, &[u8]) + Send + Sync>;

/// One container backend. Narrow on purpose: ensure the image, create, start, stop, remove, list what it owns,
/// exec, and logs. Restart policy, health checks and rollback live above it (the reconciler), so every
/// backend behaves the same.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// `oci` or `docker`.
    fn name(&self) -> &'static str;
    /// Makes the pinned image available locally (pulled and, for the native backend, unpacked).
    async fn ensure_image(&self, image: &str) -> Result<()>;
    /// Creates (not starts) container `id` from `config`, labelled with `labels` (plus jetship's own).
    async fn create(&self, id: &str, config: &ContainerConfig, labels: BTreeMap<String, String>) -> Result<()>;
    async fn start(&self, id: &str) -> Result<()>;
    /// SIGTERM, then SIGKILL after `grace`. Returns the exit code.
    async fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>>;
    /// Removes a stopped container and everything the backend kept for it.
    async fn remove(&self, id: &str) -> Result<()>;
    /// Every container this backend owns (carries jetship's labels): what the agent adopts after a restart.
    async fn list_owned(&self) -> Result<Vec<ContainerInfo>>;
    /// One owned container, `None` when there is no such container.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        Ok(self.list_owned().await?.into_iter().find(|c| c.id == id))
    }
    /// The container's output, the last `tail` lines when given.
    async fn logs(&self, id: &str, tail: Option<usize>) -> Result<Vec<LogLine>>;
    /// Runs `cmd` in running container `id` the way its own process runs: its user, capabilities, seccomp,
    /// AppArmor profile, no_new_privs, cgroup, environment and working directory (the runtime's exec, never a
    /// process of the host entering its namespaces). The output goes to `sink`; after `timeout` the command is
    /// killed and the call fails. Returns the command's exit code (128+signal for a signal).
    async fn exec(&self, id: &str, cmd: &[String], timeout: Option<Duration>, sink: ExecSink) -> Result<i32> {
        let _ = (cmd, timeout, sink);
        Err(Error::Container { id: id.to_owned(), message: format!("the {} backend cannot exec", self.name()) })
    }
    /// Runs `cmd` in running container `id` as [`ContainerRuntime::exec`] confines it, attached to this process:
    /// its stdin when `io.stdin`, a terminal when `io.tty` (`jetship exec -i -t`). Returns the command's exit code.
    async fn exec_attached(&self, id: &str, cmd: &[String], io: ExecIo) -> Result<i32> {
        let _ = (cmd, io);
        Err(Error::Container { id: id.to_owned(), message: format!("the {} backend cannot attach", self.name()) })
    }
    /// Hands the container's output to `sink` line by line: the last `tail` lines (all when `None`), then what it
    /// writes, until `stop` (then what was written up to that moment). Backends read by offset; this default
    /// reads the whole log every 100 ms and hands out what is past the lines seen.
    async fn follow_logs(
        &self,
        id: &str,
        tail: Option<usize>,
        sink: LogSink,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let mut seen = self.logs(id, None).await?.len().saturating_sub(tail.unwrap_or(usize::MAX));
        loop {
            let last = stop.is_cancelled();
            let lines = self.logs(id, None).await?;
            seen = seen.min(lines.len());
            lines[seen..].iter().for_each(|l| sink(l));
            seen = lines.len();
            if last {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    /// Repairs what a kill or a power cut left behind: a container whose monitor is gone is never left running
    /// unsupervised, damaged records and half-made containers are cleaned up. Each repair is noted in
    /// `os::journal`; returns how many. The executor calls it before observing, every round. Backends whose
    /// engine supervises containers itself (Docker) keep this default.
    async fn repair(&self) -> Result<usize> {
        Ok(0)
    }
    /// Rotates the logs of owned containers that reached the size limit; returns how many rotated. Backends
    /// whose engine rotates logs itself (Docker) keep this default.
    async fn rotate_logs(&self) -> Result<usize> {
        Ok(0)
    }
}

/// Opens the backend `runtime.backend` names: the one place the agent and `jetship run` get theirs. `auto`
/// picks the native backend when conmon and crun or runc are installed, else Docker when its socket answers,
/// else fails listing what to install. Image pulls report to `progress` when given (the agent's pull meter).
pub async fn open(
    config: &crate::config::Config,
    progress: Option<crate::image::pull::ProgressSink>,
) -> Result<Arc<dyn ContainerRuntime>> {
    use crate::config::BackendChoice;
    let native = || {
        oci::OciBackend::new(oci::OciSettings::from_config(config)).map(|b| match &progress {
            Some(sink) => b.with_progress(sink.clone()),
            None => b,
        })
    };
    let docker = || async {
        let b = docker::connect(config).await?;
        Ok::<_, Error>(match &progress {
            Some(sink) => b.with_progress(sink.clone()),
            None => b,
        })
    };
    Ok(match config.runtime.backend {
        BackendChoice::Oci => Arc::new(native()?),
        BackendChoice::Docker => Arc::new(docker().await?),
        BackendChoice::Auto => match native() {
            Ok(b) => Arc::new(b),
            Err(native) if docker::docker_available(config).await => {
                tracing::info!(reason = %native, "native backend unavailable; using the Docker daemon");
                Arc::new(docker().await?)
            }
            Err(native) => return Err(no_backend(&native)),
        },
    })
}

/// The error of `runtime.backend = "auto"` when neither the native backend (failing with `native`) nor a Docker
/// daemon is available: what to install.
fn no_backend(native: &Error) -> Error {
    Error::Backend {
        backend: "auto",
        message: format!(
            "no container backend available ({native}) and no Docker daemon answers: install conmon and runc or \
             crun (apt-get install conmon runc), or Docker (apt-get install docker.io) and set \
             runtime.backend = \"docker\""
        ),
    }
}

/// Lists the containers `backend` owns, for the agent to adopt at start instead of creating duplicates:
/// running ones keep running, exited ones keep their exit code, and ones the runtime lost (after a reboot) are
/// reported [`RunState::Missing`] so the reconciler recreates them under the same id.
pub async fn adopt(backend: &dyn ContainerRuntime) -> Result<Vec<ContainerInfo>> {
    let owned = backend.list_owned().await?;
    for c in &owned {
        tracing::info!(
            container = %c.id,
            deployment = c.labels.get(labels::DEPLOYMENT).map(String::as_str).unwrap_or("-"),
            state = ?c.state,
            pid = ?c.pid,
            "container adopted"
        );
    }
    Ok(owned)
}

/// Rotates container logs every `period` until `shutdown` (the agent spawns this next to adoption).
pub(crate) async fn rotate_loop(
    backend: std::sync::Arc<dyn ContainerRuntime>,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match backend.rotate_logs().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rotated = n, "container logs rotated"),
                Err(e) => tracing::warn!(err = %e, "log rotation tick failed"),
            },
        }
    }
}
