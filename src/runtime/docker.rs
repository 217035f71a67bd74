//! The Docker Engine backend: runs jetship's deployments through the Engine API (bollard over the daemon's unix
//! socket, API version negotiated) so devices that already run Docker keep `docker ps`, `docker logs` and their
//! image cache. It owns the translation of a backend-neutral [`ContainerConfig`] into a Docker create request
//! (HostConfig: IPC/network host, shm, bind mounts, limits, camera devices, the GPU through the `nvidia` runtime or
//! a CDI device request, and the confinement: no_new_privs, the pids limit, capabilities, seccomp and AppArmor
//! opt-outs), the GPU preflight against the daemon's `/info`, the mapping of the Engine's pull progress to
//! [`Progress`] events, exec through the Engine's exec API, and adoption of its containers by label.
//!
//! dockerd resolves a bind source path itself, following symlinks; so it is never given a path a container
//! can change: every source is resolved by [`super::mounts`] and staged under `<state_dir>/mounts/<id>/`
//! (root-only), and the create request names the staging point, as a structured mount (never a `host:container`
//! string, which a container path with `:rshared` or `:Z` could extend). This needs the agent and dockerd to
//! share the host's mount namespace, as the systemd units do. The seccomp and AppArmor defaults are the daemon's
//! own (Docker's default seccomp profile and `docker-default`).
//!
//! Must not touch: image resolution (the caller passes a pinned `name@digest` resolved by jetship's own registry
//! client), restart policy (Docker's is always `no`: restarts are the reconciler's, as on the native backend),
//! or containers without jetship's labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, DeviceMapping, DeviceRequest, HostConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::mounts;
use super::{labels, BindMount, ContainerConfig, ContainerInfo, ContainerRuntime, Error, ExecSink, ExecStream};
use super::{IpcMode, NetworkMode};
use super::{LogLine, Result, RunState};
use crate::base::GpuMode;
use crate::config::Config;
use crate::host::devices::cameras;
use crate::host::devices::gpu::GpuRequest;
use crate::image::pull::{Progress, ProgressSink};
use crate::image::reference::Reference;
use crate::image::registry::Credential;
use crate::os::fsutil::under_root;

/// The Engine socket when neither `runtime.docker_socket` nor `DOCKER_HOST` names one.
pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The daemon.json entry that registers the NVIDIA runtime, quoted in preflight errors.
pub(crate) const NVIDIA_RUNTIME_ENTRY: &str =
    r#"{"runtimes":{"nvidia":{"path":"nvidia-container-runtime","args":[]}}}"#;

/// Seconds a plain Engine request may take (pull streams and stops get their own limits).
const REQUEST_TIMEOUT_S: u64 = 120;

const BACKEND: &str = "docker";

mod interactive;

/// The Engine socket to use: `explicit` (`runtime.docker_socket`), else a `unix://` `DOCKER_HOST`, else
/// [`DEFAULT_SOCKET`]. A `DOCKER_HOST` of another scheme (tcp://, ssh://) is refused: jetship only speaks to a
/// local daemon over its socket.
pub(crate) fn socket_path(explicit: Option<&Path>, docker_host: Option<&str>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => Err(backend_err(format!(
                "DOCKER_HOST={h} is not a unix socket (unix:///path): jetship talks to the local Docker daemon over \
                 its socket; unset DOCKER_HOST or set runtime.docker_socket"
            ))),
        },
    }
}

/// What the daemon offers for the GPU, from `/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonGpu {
    /// A runtime named `nvidia` is registered (daemon.json `runtimes`).
    pub nvidia_runtime: bool,
    /// CDI is enabled (Docker 25+ reports `CDISpecDirs`).
    pub cdi: bool,
}

/// How a container gets the GPU on Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerGpu {
    /// No GPU.
    None,
    /// `Runtime: "nvidia"` with `NVIDIA_VISIBLE_DEVICES` = `visible` and `NVIDIA_DRIVER_CAPABILITIES=all`.
    NvidiaRuntime {
        /// `all` or a device name.
        visible: String,
    },
    /// A CDI device request (`Driver: "cdi"`) for the fully qualified device, e.g. `nvidia.com/gpu=all`.
    Cdi {
        /// The CDI device name.
        device: String,
    },
}

fn missing_runtime(mode: GpuMode) -> String {
    format!(
        "gpu.mode = \"{mode}\" needs the Docker daemon's `nvidia` runtime, which it does not list: add \
         {NVIDIA_RUNTIME_ENTRY} to /etc/docker/daemon.json (the runtime comes with nvidia-container-toolkit; on \
         Jetson CSV mode `--gpus` alone does not work), then restart docker (`systemctl restart docker`)"
    )
}

fn missing_cdi() -> String {
    "gpu.mode = \"cdi\" needs CDI in the Docker daemon (Docker 25+ with `\"features\":{\"cdi\":true}` in \
     /etc/docker/daemon.json, and a spec from `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`), which this \
     daemon does not report; or set gpu.mode = \"nvidia-runtime\""
        .into()
}

/// Picks the GPU method for Docker (pure). `auto`: CDI when the daemon has it, else the `nvidia` runtime, else an
/// error naming the daemon.json entry; `cdi`: CDI or an error; `nvidia-runtime` and `csv` (Docker's CSV mode on
/// Jetson is the nvidia runtime): the runtime or an error; `off`, or no request: nothing.
pub fn plan_gpu(mode: GpuMode, request: Option<&GpuRequest>, daemon: &DaemonGpu) -> Result<DockerGpu> {
    let Some(request) = request else { return Ok(DockerGpu::None) };
    let runtime = || DockerGpu::NvidiaRuntime { visible: request.visible_devices().to_owned() };
    let cdi = || DockerGpu::Cdi { device: request.to_string() };
    match mode {
        GpuMode::Off => Ok(DockerGpu::None),
        GpuMode::Cdi if daemon.cdi => Ok(cdi()),
        GpuMode::Cdi => Err(backend_err(missing_cdi())),
        GpuMode::Csv | GpuMode::NvidiaRuntime if daemon.nvidia_runtime => Ok(runtime()),
        GpuMode::Csv | GpuMode::NvidiaRuntime => Err(backend_err(missing_runtime(mode))),
        GpuMode::Auto if daemon.cdi => Ok(cdi()),
        GpuMode::Auto if daemon.nvidia_runtime => Ok(runtime()),
        GpuMode::Auto => Err(backend_err(format!(
            "{}; with Docker 25+ CDI works too (`\"features\":{{\"cdi\":true}}` in daemon.json and \
             `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`)",
            missing_runtime(mode)
        ))),
    }
}

/// Turns the Engine's pull messages (per layer: `Pulling fs layer`, `Downloading` with current/total,
/// `Download complete`, `Pull complete`, `Already exists`) into jetship's [`Progress`] events. Layers are named by
/// the Engine's short layer id, not a full digest. The Engine does not announce totals up front, so no `Planned`
/// event is made. Its transfer manager passes on only each layer's latest message, so a layer that downloads
/// quickly may skip `Downloading` updates: `Download complete` credits what the last known total says is left.
#[derive(Debug, Default)]
pub(crate) struct ProgressMapper {
    /// Per layer: bytes credited so far and the total the Engine last gave.
    layers: HashMap<String, (u64, Option<u64>)>,
}

impl ProgressMapper {
    /// The event for one Engine message, if it means one.
    pub fn map(
        &mut self,
        id: Option<&str>,
        status: &str,
        current: Option<i64>,
        total: Option<i64>,
    ) -> Option<Progress> {
        let id = id.filter(|i| !i.is_empty())?;
        let digest = id.to_owned();
        let total = total.filter(|t| *t > 0).map(|t| t as u64);
        match status {
            "Pulling fs layer" => {
                self.layers.insert(digest.clone(), (0, total));
                Some(Progress::BlobStarted { digest, size: total.unwrap_or(0), offset: 0 })
            }
            "Downloading" => {
                let now = current.unwrap_or(0).max(0) as u64;
                let layer = self.layers.entry(digest.clone()).or_default();
                let before = layer.0;
                layer.0 = before.max(now);
                layer.1 = total.or(layer.1);
                (now > before).then(|| Progress::BlobBytes { digest, bytes: now - before })
            }
            "Download complete" => {
                let layer = self.layers.entry(digest.clone()).or_default();
                let rest = layer.1.map_or(0, |t| t.saturating_sub(layer.0));
                layer.0 += rest;
                (rest > 0).then_some(Progress::BlobBytes { digest, bytes: rest })
            }
            "Pull complete" => Some(Progress::BlobDone { digest, cached: false }),
            "Already exists" => Some(Progress::BlobDone { digest, cached: true }),
            _ => None,
        }
    }
}

/// What the backend needs besides the socket: whose containers it owns, where host devices are, GPU rules and
/// registry credentials.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The agent id stored as [`labels::AGENT`]; [`ContainerRuntime::list_owned`] lists only its containers.
    pub agent_id: String,
    /// Host root under which cameras (`/sys/class/video4linux`, `/dev/video*`) are found (`host.root`).
    pub host_root: PathBuf,
    /// `gpu.mode`.
    pub gpu_mode: GpuMode,
    /// Registry credentials per registry host, passed to the Engine when it pulls.
    pub credentials: HashMap<String, Credential>,
    /// `state_dir`: bind sources are staged under `<state_dir>/mounts/<id>/`.
    pub state_dir: PathBuf,
}

impl DockerOptions {
    /// From the agent config: device id, `host.root`, `gpu.mode`, and `[registry]` credentials (credential files
    /// and the Docker `config.json` named there).
    pub fn from_config(config: &Config) -> Result<Self> {
        let credentials = crate::image::registry::ClientOptions::from_config(&config.registry)
            .map_err(|e| backend_err(format!("registry credentials: {e}")))?
            .credentials;
        Ok(Self {
            agent_id: config.device_id(),
            host_root: config.host.root.clone(),
            gpu_mode: config.gpu.mode,
            credentials,
            state_dir: config.state_dir.clone(),
        })
    }
}

/// Connects to the Docker daemon the config names (`runtime.docker_socket`, `DOCKER_HOST`, or the default
/// socket), negotiating the API version.
pub async fn connect(config: &Config) -> Result<DockerBackend> {
    let socket = socket_path(config.runtime.docker_socket.as_deref(), std::env::var("DOCKER_HOST").ok().as_deref())?;
    DockerBackend::connect(&socket, DockerOptions::from_config(config)?).await
}

/// Whether the daemon the config names answers a ping within a few seconds (`runtime.backend = "auto"`).
pub async fn docker_available(config: &Config) -> bool {
    let Ok(socket) = socket_path(config.runtime.docker_socket.as_deref(), std::env::var("DOCKER_HOST").ok().as_deref())
    else {
        return false;
    };
    let Ok(docker) = Docker::connect_with_unix(&socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION) else {
        return false;
    };
    matches!(tokio::time::timeout(Duration::from_secs(5), docker.ping()).await, Ok(Ok(_)))
}

/// The Docker Engine implementation of [`ContainerRuntime`].
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    socket: PathBuf,
    options: DockerOptions,
    progress: Option<ProgressSink>,
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackend").field("socket", &self.socket).field("options", &self.options).finish()
    }
}

fn backend_err(message: String) -> Error {
    Error::Backend { backend: BACKEND, message }
}

fn container_err(id: &str, e: bollard::errors::Error) -> Error {
    Error::Container { id: id.to_owned(), message: engine_message(e) }
}

fn engine_message(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("the Docker daemon answered {status_code}: {message}")
        }
        other => format!("Docker Engine API: {other}"),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerBackend {
    /// Connects to the daemon at `socket` and negotiates the API version (older daemons such as Docker 20.10
    /// speak API 1.41).
    pub async fn connect(socket: &Path, options: DockerOptions) -> Result<Self> {
        let unreachable = |detail: String| {
            backend_err(format!(
                "cannot reach the Docker daemon at {}: {detail} (is dockerd running? set runtime.docker_socket or \
                 DOCKER_HOST, or use runtime.backend = \"oci\")",
                socket.display()
            ))
        };
        let docker =
            Docker::connect_with_unix(&socket.to_string_lossy(), REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
                .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker.negotiate_version().await.map_err(|e| unreachable(e.to_string()))?;
        tracing::debug!(socket = %socket.display(), api = ?docker.client_version(), "docker engine connected");
        Ok(Self { docker, socket: socket.to_path_buf(), options, progress: None })
    }

    /// Sends pull progress to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// The socket this backend talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the daemon offers for the GPU (`/info`: runtimes, CDI spec dirs).
    pub async fn daemon_gpu(&self) -> Result<DaemonGpu> {
        let info = self.docker.info().await.map_err(|e| backend_err(format!("daemon info: {}", engine_message(e))))?;
        Ok(DaemonGpu {
            nvidia_runtime: info.runtimes.as_ref().is_some_and(|r| r.contains_key("nvidia")),
            cdi: info.cdi_spec_dirs.as_ref().is_some_and(|d| !d.is_empty()),
        })
    }

    /// The create request for `config` (GPU preflight and camera resolution included; nothing is created or
    /// staged: the bind sources are the staging points `create` fills).
    pub async fn create_body(
        &self,
        config: &ContainerConfig,
        extra_labels: BTreeMap<String, String>,
        id: &str,
    ) -> Result<ContainerCreateBody> {
        Ok(self.prepare(config, extra_labels, id).await?.0)
    }

    /// The create request and the bind sources to stage for it.
    async fn prepare(
        &self,
        config: &ContainerConfig,
        extra_labels: BTreeMap<String, String>,
        id: &str,
    ) -> Result<(ContainerCreateBody, Vec<mounts::Request>)> {
        if config.confinement.refuse_root {
            self.refuse_root(config, id).await?;
        }
        let gpu = match config.gpu_request()? {
            None => DockerGpu::None,
            Some(req) => plan_gpu(self.options.gpu_mode, Some(&req), &self.daemon_gpu().await?)?,
        };
        // Cameras (and, with the GPU, nvargus-daemon's socket for CSI cameras) and the Jetson conveniences, as on
        // the native backend.
        let (root, selectors, gpu_given) =
            (self.options.host_root.clone(), config.cameras.clone(), gpu != DockerGpu::None);
        let (jetson, env) = (config.jetson.clone(), config.env.clone());
        let edits = tokio::task::spawn_blocking(move || {
            let mut edits = cameras::edits(&root, &selectors, gpu_given)?;
            crate::host::devices::jetson::add_edits(&mut edits, &root, &jetson, &env)?;
            Ok::<_, Error>(edits)
        })
        .await
        .map_err(|e| backend_err(format!("camera discovery task: {e}")))??;
        let mut devices: Vec<DeviceMapping> = edits
            .devices
            .iter()
            .map(|n| DeviceMapping {
                path_on_host: Some(
                    under_root(&self.options.host_root, &n.path.to_string_lossy()).display().to_string(),
                ),
                path_in_container: Some(n.path.display().to_string()),
                cgroup_permissions: Some(n.access.clone()),
            })
            .collect();
        // `devices` expanded as on the native backend; `privileged` is the Engine's own (every host device).
        let (root, requests, allowed) =
            (self.options.host_root.clone(), config.devices.clone(), config.confinement.allowed_devices.clone());
        let nodes = tokio::task::spawn_blocking(move || super::devices::expand_all(&root, &requests, &allowed))
            .await
            .map_err(|e| backend_err(format!("device discovery task: {e}")))??;
        devices.extend(nodes.iter().map(|n| DeviceMapping {
            path_on_host: Some(
                under_root(&self.options.host_root, &n.host_path.to_string_lossy()).display().to_string(),
            ),
            path_in_container: Some(n.node.path.display().to_string()),
            cgroup_permissions: Some(n.node.access.clone()),
        }));
        let mut requests = mounts::volume_requests(&config.volumes, &config.confinement.volume_sources)?;
        // nvargus-daemon's socket lies in the host's world-writable /tmp: only root's socket passes.
        requests.extend(mounts::edit_requests(&edits, &self.options.host_root));
        let staged = mounts::staging_points(&mounts::dir(&self.options.state_dir, id), &requests);
        let all_labels = labels::stamp(extra_labels, id, config, Some(&self.options.agent_id));
        // The conveniences' environment (DISPLAY, XAUTHORITY) after the deployment's, as the native spec has it.
        let with_env = ContainerConfig { env: [config.env.clone(), edits.env].concat(), ..config.clone() };
        Ok((create_body(&with_env, &gpu, devices, staged, all_labels), requests))
    }

    /// Fails when the container's process would run as root: by the deployment's `user`, else the image's.
    /// Names are judged as written (`root`, `0`): the daemon, not jetship, reads the image's /etc/passwd.
    async fn refuse_root(&self, config: &ContainerConfig, id: &str) -> Result<()> {
        let user = match &config.user {
            Some(u) => u.clone(),
            None => self
                .docker
                .inspect_image(&config.image)
                .await
                .map_err(|e| container_err(id, e))?
                .config
                .and_then(|c| c.user)
                .unwrap_or_default(),
        };
        let name = user.split(':').next().unwrap_or("");
        if name.is_empty() || name == "root" || name == "0" {
            return Err(Error::Container {
                id: id.to_owned(),
                message: format!(
                    "its process would run as root (user `{}`), which this device's policy refuses: set `user` in                      the deployment to a non-root uid, or set policy.allow_root = true in the agent config",
                    if user.is_empty() { "the image's default" } else { &user }
                ),
            });
        }
        Ok(())
    }

    async fn inspect_info(&self, id: &str) -> Result<ContainerInfo> {
        let c = self.docker.inspect_container(id, None).await.map_err(|e| container_err(id, e))?;
        let state = c.state.unwrap_or_default();
        let run_state = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => RunState::Running,
            Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
            _ => RunState::Exited,
        };
        let started_at = state
            .started_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .filter(|_| run_state != RunState::Created);
        let name = c.name.unwrap_or_else(|| id.to_owned());
        Ok(ContainerInfo {
            id: name.trim_start_matches('/').to_owned(),
            labels: c.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
            state: run_state,
            pid: state.pid.filter(|p| *p > 0).map(|p| p as i32),
            exit_code: state.exit_code.filter(|_| run_state == RunState::Exited).map(|c| c as i32),
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at,
        })
    }
}

/// The Docker create request (pure): image, process, labels, and a HostConfig with IPC/network modes, shm,
/// the bind `mounts` (staged sources, structured, private propagation), limits, `devices`, the GPU method, the
/// confinement (no_new_privs, pids limit, added capabilities, seccomp/AppArmor opt-outs) and restart policy `no`.
pub fn create_body(
    config: &ContainerConfig,
    gpu: &DockerGpu,
    devices: Vec<DeviceMapping>,
    mounts: Vec<BindMount>,
    labels: BTreeMap<String, String>,
) -> ContainerCreateBody {
    let c = &config.confinement;
    let mut security = Vec::new();
    if c.no_new_privileges {
        security.push("no-new-privileges:true".to_owned());
    }
    if !c.seccomp {
        security.push("seccomp=unconfined".to_owned());
    }
    if !c.apparmor {
        security.push("apparmor=unconfined".to_owned());
    }
    let mut env = config.env.clone();
    let mut host = HostConfig {
        ipc_mode: Some(
            match config.ipc {
                IpcMode::Host => "host",
                IpcMode::Private => "private",
            }
            .into(),
        ),
        network_mode: Some(
            match config.network {
                NetworkMode::Host => "host",
                NetworkMode::None => "none",
                NetworkMode::Bridge => "bridge",
            }
            .into(),
        ),
        shm_size: config.shm_size_bytes.map(|b| b as i64),
        memory: config.memory_bytes.map(|b| b as i64),
        nano_cpus: config.cpus.map(|c| (c * 1e9).round() as i64),
        mounts: Some(
            mounts
                .into_iter()
                .map(|m| Mount {
                    target: Some(m.container.display().to_string()),
                    source: Some(m.host.display().to_string()),
                    typ: Some(MountType::BIND),
                    read_only: Some(m.read_only),
                    bind_options: Some(MountBindOptions {
                        propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        port_bindings: (!config.ports.is_empty()).then(|| super::network::docker_port_bindings(&config.ports)),
        security_opt: Some(security),
        pids_limit: c.pids_limit.map(|p| p.min(i64::MAX as u64) as i64),
        cap_add: (!c.cap_add.is_empty()).then(|| c.cap_add.clone()),
        devices: Some(devices),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        ..Default::default()
    };
    privileges(config, &mut host);
    match gpu {
        DockerGpu::None => {}
        DockerGpu::NvidiaRuntime { visible } => {
            host.runtime = Some("nvidia".into());
            env.push(format!("NVIDIA_VISIBLE_DEVICES={visible}"));
            env.push("NVIDIA_DRIVER_CAPABILITIES=all".into());
        }
        DockerGpu::Cdi { device } => {
            host.device_requests = Some(vec![DeviceRequest {
                driver: Some("cdi".into()),
                device_ids: Some(vec![device.clone()]),
                ..Default::default()
            }]);
        }
    }
    ContainerCreateBody {
        image: Some(config.image.clone()),
        entrypoint: config.entrypoint.clone(),
        cmd: config.args.clone(),
        env: Some(env),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
        hostname: config.hostname.clone(),
        exposed_ports: (!config.ports.is_empty()).then(|| super::network::docker_exposed_ports(&config.ports)),
        labels: Some(labels.into_iter().collect()),
        host_config: Some(host),
        ..Default::default()
    }
}

/// The privilege fields in the Engine's terms: `Privileged`, `CapDrop`, `GroupAdd` (the daemon resolves names
/// in the image's /etc/group), `Ulimits` (-1 for unlimited), `Sysctls`, `ReadonlyRootfs`, `Tmpfs`.
fn privileges(config: &ContainerConfig, host: &mut HostConfig) {
    use super::privileges as p;
    host.privileged = config.privileged.then_some(true);
    host.cap_drop = (!config.cap_drop.is_empty()).then(|| config.cap_drop.clone());
    host.group_add = (!config.group_add.is_empty()).then(|| config.group_add.clone());
    let engine_limit = |v: u64| if v == u64::MAX { -1 } else { v.min(i64::MAX as u64) as i64 };
    host.ulimits = (!config.ulimits.is_empty()).then(|| {
        config
            .ulimits
            .iter()
            .map(|u| bollard::models::ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(engine_limit(u.soft)),
                hard: Some(engine_limit(u.hard)),
            })
            .collect()
    });
    host.sysctls = p::sysctl_map(&config.sysctls);
    host.readonly_rootfs = config.read_only_rootfs.then_some(true);
    host.tmpfs = (!config.tmpfs.is_empty())
        .then(|| config.tmpfs.iter().map(|t| (t.path.clone(), t.mount_options().join(","))).collect());
}

/// One log frame, `<RFC 3339 timestamp> <text>` (the Engine's `timestamps=true` format), as lines.
fn log_lines(stream: &str, frame: &[u8]) -> Vec<LogLine> {
    let text = String::from_utf8_lossy(frame);
    text.lines()
        .map(|line| {
            let (ts, text) = match line.split_once(' ') {
                Some((ts, rest)) if chrono::DateTime::parse_from_rfc3339(ts).is_ok() => (ts, rest),
                _ => ("", line),
            };
            LogLine { ts: ts.to_owned(), stream: stream.to_owned(), text: text.to_owned() }
        })
        .collect()
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// Has the Engine pull `name@digest` (skipped when the daemon already has it), with the registry's
    /// credentials, reporting progress to the sink given by [`DockerBackend::with_progress`].
    #[tracing::instrument(skip(self))]
    async fn ensure_image(&self, image: &str) -> Result<()> {
        let bad = |message: String| Error::Image { image: image.to_owned(), message };
        let reference = Reference::parse(image).map_err(|e| bad(e.to_string()))?;
        let Some(digest) = &reference.digest else {
            return Err(bad("not pinned: the docker backend pulls `name@sha256:...` as resolved by jetship".into()));
        };
        let pinned = format!("{}@{digest}", reference.name());
        if self.docker.inspect_image(&pinned).await.is_ok() {
            tracing::debug!(image = %pinned, "image already in docker");
            return Ok(());
        }
        let credentials = self.options.credentials.get(&reference.registry).map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(reference.registry.clone()),
            ..Default::default()
        });
        let options = CreateImageOptionsBuilder::new().from_image(&pinned).build();
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut mapper = ProgressMapper::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| bad(format!("docker pull failed: {}", engine_message(e))))?;
            let detail = info.progress_detail.unwrap_or_default();
            let event =
                mapper.map(info.id.as_deref(), info.status.as_deref().unwrap_or(""), detail.current, detail.total);
            if let (Some(event), Some(sink)) = (event, &self.progress) {
                sink(&event);
            }
        }
        tracing::info!(image = %pinned, "image pulled by docker");
        Ok(())
    }

    /// Stages the bind sources ([`mounts`]), then has the Engine create the container over the staging points.
    #[tracing::instrument(skip(self, config, labels))]
    async fn create(&self, id: &str, config: &ContainerConfig, labels: BTreeMap<String, String>) -> Result<()> {
        let (body, requests) = self.prepare(config, labels, id).await?;
        let dir = mounts::dir(&self.options.state_dir, id);
        let staged = {
            let (dir, requests) = (dir.clone(), requests.clone());
            tokio::task::spawn_blocking(move || mounts::stage_all(&dir, &requests))
                .await
                .map_err(|e| backend_err(format!("staging task: {e}")))?
        };
        let options = CreateContainerOptionsBuilder::new().name(id).build();
        let created = match staged {
            Ok(_) => self.docker.create_container(Some(options), body).await.map_err(|e| container_err(id, e)),
            Err(e) => Err(e.into()),
        };
        if created.is_err() {
            if let Err(e) = mounts::release(&dir) {
                tracing::warn!(container = %id, err = %e, "releasing staged mounts failed");
            }
        }
        created.map(drop)
    }

    /// Resolves and stages the bind sources again (paths checked anew; a reboot took the staged mounts away),
    /// then starts: the daemon mounts them at start.
    async fn start(&self, id: &str) -> Result<()> {
        let dir = mounts::dir(&self.options.state_dir, id);
        tokio::task::spawn_blocking(move || mounts::restage(&dir))
            .await
            .map_err(|e| backend_err(format!("staging task: {e}")))??;
        self.docker.start_container(id, None).await.map_err(|e| container_err(id, e))
    }

    /// The Engine's exec: the daemon runs the command in the container with its user, capabilities, seccomp
    /// and AppArmor profile, no_new_privs, cgroup and environment. On the time limit the process is killed by
    /// its host pid (the Engine has no kill for an exec).
    async fn exec(&self, id: &str, cmd: &[String], timeout: Option<Duration>, sink: ExecSink) -> Result<i32> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        if cmd.is_empty() {
            return Err(Error::Container { id: id.to_owned(), message: "exec needs a command".into() });
        }
        let options = CreateExecOptions::<String> {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            privileged: Some(false),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, options).await.map_err(|e| container_err(id, e))?;
        // The request lasts as long as the command: past the time limit (or a day without one), not 120 s.
        let request_limit = timeout.map_or(Duration::from_secs(86_400), |t| t + Duration::from_secs(60));
        let docker = self.docker.clone().with_timeout(request_limit);
        let run = async {
            match docker.start_exec(&exec.id, None).await.map_err(|e| container_err(id, e))? {
                StartExecResults::Attached { mut output, .. } => {
                    while let Some(item) = output.next().await {
                        match item.map_err(|e| container_err(id, e))? {
                            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                                sink(ExecStream::Stdout, &message)
                            }
                            LogOutput::StdErr { message } => sink(ExecStream::Stderr, &message),
                            LogOutput::StdIn { .. } => {}
                        }
                    }
                    Ok::<(), Error>(())
                }
                StartExecResults::Detached => Ok(()),
            }
        };
        let finished = match timeout {
            None => Some(run.await),
            Some(limit) => tokio::time::timeout(limit, run).await.ok(),
        };
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(|e| container_err(id, e))?;
        match finished {
            Some(r) => r?,
            None => {
                if let Some(pid) = inspect.pid.filter(|p| *p > 1 && inspect.running == Some(true)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(Error::Container {
                    id: id.to_owned(),
                    message: format!(
                        "the exec'd command did not finish within {} s and was killed",
                        timeout.unwrap_or_default().as_secs_f64()
                    ),
                });
            }
        }
        Ok(inspect.exit_code.map_or(-1, |c| c as i32))
    }

    async fn exec_attached(&self, id: &str, cmd: &[String], io: super::ExecIo) -> Result<i32> {
        interactive::exec_attached(self, id, cmd, io).await
    }

    async fn follow_logs(
        &self,
        id: &str,
        tail: Option<usize>,
        sink: super::LogSink,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        interactive::follow_logs(self, id, tail, sink, stop).await
    }

    /// `docker stop -t <grace>` (the grace rounded up to whole seconds, as the Engine takes it).
    async fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>> {
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::new().t(secs.min(i32::MAX as u64) as i32).build();
        // The Engine answers after the grace period: give the request that much more time.
        let docker = self.docker.clone().with_timeout(Duration::from_secs(REQUEST_TIMEOUT_S + secs));
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => {}
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(container_err(id, e)),
        }
        Ok(self.inspect_info(id).await?.exit_code)
    }

    /// Removes the container, then unmounts and removes its staging points.
    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new().v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if is_not_found(&e) => {}
            other => other.map_err(|e| container_err(id, e))?,
        }
        let dir = mounts::dir(&self.options.state_dir, id);
        let shown = dir.display().to_string();
        tokio::task::spawn_blocking(move || mounts::release(&dir))
            .await
            .map_err(|e| backend_err(format!("staging task: {e}")))?
            .map_err(|e| Error::Container { id: id.to_owned(), message: format!("releasing {shown}: {e}") })
    }

    /// Containers labelled with this agent's id ([`labels::AGENT`]), running or not.
    async fn list_owned(&self) -> Result<Vec<ContainerInfo>> {
        let filter = HashMap::from([("label", vec![format!("{}={}", labels::AGENT, self.options.agent_id)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filter).build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| backend_err(format!("listing containers: {}", engine_message(e))))?;
        let mut out = Vec::new();
        for c in found {
            let Some(id) = c.id else { continue };
            match self.inspect_info(&id).await {
                Ok(info) => out.push(info),
                // Removed between list and inspect.
                Err(Error::Container { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn logs(&self, id: &str, tail: Option<usize>) -> Result<Vec<LogLine>> {
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).timestamps(true).tail(&tail).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item.map_err(|e| container_err(id, e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.extend(log_lines("stdout", &message))
                }
                LogOutput::StdErr { message } => out.extend(log_lines("stderr", &message)),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Volume;

    #[test]
    fn socket_comes_from_config_then_docker_host_then_default() {
        let explicit = Path::new("/run/custom.sock");
        assert_eq!(socket_path(Some(explicit), Some("unix:///x.sock")).unwrap(), explicit);
        assert_eq!(
            socket_path(None, Some("unix:///run/user/1000/docker.sock")).unwrap(),
            Path::new("/run/user/1000/docker.sock")
        );
        assert_eq!(socket_path(None, None).unwrap(), Path::new(DEFAULT_SOCKET));
        assert_eq!(socket_path(None, Some("")).unwrap(), Path::new(DEFAULT_SOCKET));
        let err = socket_path(None, Some("tcp://10.0.0.1:2375")).unwrap_err().to_string();
        assert!(err.contains("DOCKER_HOST=tcp://10.0.0.1:2375") && err.contains("runtime.docker_socket"), "{err}");
    }

    fn daemon(nvidia_runtime: bool, cdi: bool) -> DaemonGpu {
        DaemonGpu { nvidia_runtime, cdi }
    }

    #[test]
    fn gpu_auto_prefers_cdi_then_the_nvidia_runtime() {
        let all = GpuRequest::All;
        let cdi = DockerGpu::Cdi { device: "nvidia.com/gpu=all".into() };
        let rt = DockerGpu::NvidiaRuntime { visible: "all".into() };
        assert_eq!(plan_gpu(GpuMode::Auto, Some(&all), &daemon(true, true)).unwrap(), cdi);
        assert_eq!(plan_gpu(GpuMode::Auto, Some(&all), &daemon(true, false)).unwrap(), rt);
        assert_eq!(plan_gpu(GpuMode::Auto, Some(&all), &daemon(false, true)).unwrap(), cdi);
        let err = plan_gpu(GpuMode::Auto, Some(&all), &daemon(false, false)).unwrap_err().to_string();
        assert!(err.contains(NVIDIA_RUNTIME_ENTRY) && err.contains("/etc/docker/daemon.json"), "{err}");
    }

    #[test]
    fn gpu_explicit_modes_require_what_they_name() {
        let named = GpuRequest::parse("nvidia.com/gpu=0").unwrap();
        assert_eq!(
            plan_gpu(GpuMode::Cdi, Some(&named), &daemon(true, true)).unwrap(),
            DockerGpu::Cdi { device: "nvidia.com/gpu=0".into() }
        );
        assert!(plan_gpu(GpuMode::Cdi, Some(&named), &daemon(true, false)).unwrap_err().to_string().contains("CDI"));
        for mode in [GpuMode::Csv, GpuMode::NvidiaRuntime] {
            assert_eq!(
                plan_gpu(mode, Some(&named), &daemon(true, true)).unwrap(),
                DockerGpu::NvidiaRuntime { visible: "0".into() }
            );
            let err = plan_gpu(mode, Some(&named), &daemon(false, true)).unwrap_err().to_string();
            assert!(err.contains(NVIDIA_RUNTIME_ENTRY), "{err}");
        }
        assert_eq!(plan_gpu(GpuMode::Off, Some(&named), &daemon(true, true)).unwrap(), DockerGpu::None);
        assert_eq!(plan_gpu(GpuMode::Auto, None, &daemon(false, false)).unwrap(), DockerGpu::None);
    }

    #[test]
    fn create_body_carries_host_settings_gpu_and_no_restart_policy() {
        let config = ContainerConfig {
            image: "127.0.0.1:5000/app@sha256:aa".into(),
            args: Some(vec!["run".into()]),
            env: vec!["A=1".into()],
            shm_size_bytes: Some(64 << 20),
            memory_bytes: Some(256 << 20),
            cpus: Some(1.5),
            volumes: vec![Volume { host: "/data".into(), container: "/in".into(), read_only: true }],
            ..Default::default()
        };
        let labels = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        // The staged source of the volume, and a container path that tries to carry bind options.
        let staged = vec![
            BindMount { host: "/s/0".into(), container: "/in".into(), read_only: true },
            BindMount { host: "/s/1".into(), container: "/x:rshared".into(), read_only: false },
        ];
        let body =
            create_body(&config, &DockerGpu::NvidiaRuntime { visible: "all".into() }, Vec::new(), staged, labels);
        let host = body.host_config.unwrap();
        assert_eq!(host.ipc_mode.as_deref(), Some("host"));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.shm_size, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.binds, None, "no `host:container:options` strings");
        let mounts = host.mounts.clone().unwrap();
        assert_eq!(
            mounts.iter().map(|m| (m.source.as_deref(), m.target.as_deref(), m.read_only)).collect::<Vec<_>>(),
            [(Some("/s/0"), Some("/in"), Some(true)), (Some("/s/1"), Some("/x:rshared"), Some(false))]
        );
        assert!(mounts.iter().all(|m| m.typ == Some(MountType::BIND)
            && m.bind_options.as_ref().unwrap().propagation == Some(MountBindOptionsPropagationEnum::RPRIVATE)));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges:true".to_owned()]));
        assert_eq!(host.pids_limit, Some(crate::runtime::DEFAULT_PIDS_LIMIT as i64));
        assert_eq!(host.cap_add, None);
        assert_eq!(host.runtime.as_deref(), Some("nvidia"));
        assert_eq!(host.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::NO));
        let env = body.env.unwrap();
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=all".to_owned()), "{env:?}");
        assert!(env.contains(&"NVIDIA_DRIVER_CAPABILITIES=all".to_owned()), "{env:?}");
        assert_eq!(body.cmd, Some(vec!["run".to_owned()]));

        let mut loose = config.clone();
        loose.confinement = crate::runtime::Confinement {
            seccomp: false,
            apparmor: false,
            no_new_privileges: false,
            pids_limit: None,
            cap_add: vec!["CAP_NET_ADMIN".into()],
            ..Default::default()
        };
        let host = create_body(&loose, &DockerGpu::None, Vec::new(), Vec::new(), BTreeMap::new()).host_config.unwrap();
        assert_eq!(host.security_opt, Some(vec!["seccomp=unconfined".to_owned(), "apparmor=unconfined".to_owned()]));
        assert_eq!((host.pids_limit, host.cap_add), (None, Some(vec!["CAP_NET_ADMIN".to_owned()])));

        let body = create_body(
            &config,
            &DockerGpu::Cdi { device: "nvidia.com/gpu=all".into() },
            Vec::new(),
            Vec::new(),
            BTreeMap::new(),
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.runtime, None);
        let req = &host.device_requests.unwrap()[0];
        assert_eq!(req.driver.as_deref(), Some("cdi"));
        assert_eq!(req.device_ids, Some(vec!["nvidia.com/gpu=all".to_owned()]));
        assert_eq!(body.env.unwrap(), vec!["A=1".to_owned()]);
    }

    #[test]
    fn engine_progress_becomes_blob_events() {
        let mut m = ProgressMapper::default();
        assert_eq!(m.map(None, "Pulling from app", None, None), None);
        assert_eq!(
            m.map(Some("a1b2"), "Pulling fs layer", None, None),
            Some(Progress::BlobStarted { digest: "a1b2".into(), size: 0, offset: 0 })
        );
        assert_eq!(
            m.map(Some("a1b2"), "Downloading", Some(100), Some(300)),
            Some(Progress::BlobBytes { digest: "a1b2".into(), bytes: 100 })
        );
        assert_eq!(
            m.map(Some("a1b2"), "Downloading", Some(300), Some(300)),
            Some(Progress::BlobBytes { digest: "a1b2".into(), bytes: 200 })
        );
        assert_eq!(m.map(Some("a1b2"), "Download complete", None, None), None);
        // A layer whose last `Downloading` update was passed over: completion credits the rest of its total.
        m.map(Some("d4"), "Pulling fs layer", None, None);
        assert_eq!(
            m.map(Some("d4"), "Downloading", Some(10), Some(500)),
            Some(Progress::BlobBytes { digest: "d4".into(), bytes: 10 })
        );
        assert_eq!(
            m.map(Some("d4"), "Download complete", None, None),
            Some(Progress::BlobBytes { digest: "d4".into(), bytes: 490 })
        );
        assert_eq!(
            m.map(Some("a1b2"), "Pull complete", None, None),
            Some(Progress::BlobDone { digest: "a1b2".into(), cached: false })
        );
        assert_eq!(
            m.map(Some("c3"), "Already exists", None, None),
            Some(Progress::BlobDone { digest: "c3".into(), cached: true })
        );
    }

    #[test]
    fn log_frames_split_into_timestamped_lines() {
        let lines = log_lines("stderr", b"2026-01-02T03:04:05.123456789Z hello world\n");
        assert_eq!(
            lines,
            vec![LogLine {
                ts: "2026-01-02T03:04:05.123456789Z".into(),
                stream: "stderr".into(),
                text: "hello world".into()
            }]
        );
        assert_eq!(log_lines("stdout", b"no timestamp\n")[0].text, "no timestamp");
    }
}
