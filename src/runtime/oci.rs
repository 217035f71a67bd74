//! The native backend: containers straight from the content store, unpacked into layer snapshots, mounted as
//! an overlay per container, described by an OCI bundle and run by runc/crun under conmon. No daemon: conmon
//! keeps each container alive across agent restarts, and [`OciBackend::list_owned`] adopts them again.
//!
//! Owns `<state_dir>/bundles/<id>/` (`config.json`, `rootfs/` mounted over the snapshots, `upper/`, `work/`)
//! and, through [`super::mounts`], the staged bind sources under `<state_dir>/mounts/<id>/`; the supervisor owns
//! `<state_dir>/containers/<id>/` (metadata, logs, exit codes). The image's `/etc/passwd` and `/etc/group` are
//! read through the root file system's descriptor (no symlink leaves it, regular files only, size-capped,
//! opened without blocking), and `exec` runs commands through the OCI runtime with the container's own process
//! spec. It reads the image store and
//! snapshot store but never deletes from them (image GC decides that), and it never decides policy: the
//! container settings arrive already checked.
//!
//! Every call blocks on file-system work or external programs, so the async trait methods run the work in
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::conmon::{self, OciRuntime, Paths, Status, Supervisor};
use super::mounts;
use super::spec::{self, BindMount, HostFiles, ImageProcess, RunSpec};
use super::{labels, ContainerConfig, ContainerInfo, ContainerRuntime, Error, ExecSink, LogLine, Result, RunState};
use crate::config::{Config, RegistryConfig};
use crate::host::devices::{cameras, gpu, jetson};
use crate::image::snapshot::{self, LayerSpec, RootfsMode, SnapshotStore};
use crate::image::store::{ImageStore, StoredImage};
use crate::image::unpack::{UnpackBudget, UnpackPolicy};

mod network;
mod repair;

/// Metadata key (not a user label) naming the OCI runtime a container was created with, when it is not the
/// backend's default (the `nvidia-runtime` GPU mode). Later calls for that container use the same runtime.
pub const RUNTIME_LABEL: &str = "io.jetship.oci-runtime";

/// Largest image metadata file (`/etc/passwd`, `/etc/group`) read to resolve the user.
pub(crate) const MAX_IMAGE_FILE_BYTES: u64 = 1 << 20;

/// The cgroup path (relative to each hierarchy's mount point) given to a container: jetship's own subtree, so
/// its use can be found and nothing else writes there.
pub(crate) fn cgroup_path(parent: &Path, id: &str) -> PathBuf {
    parent.join(id)
}

/// Settings of the native backend, from the agent config.
#[derive(Debug, Clone)]
pub struct OciSettings {
    /// `state_dir`: the image store, snapshots, bundles and container records live under it.
    pub state_dir: PathBuf,
    /// `host.root`: where /dev, /sys, /etc and the GPU/camera files are read.
    pub host_root: PathBuf,
    /// `gpu.mode`.
    pub gpu_mode: crate::base::GpuMode,
    /// `[registry]`: used to pull an image that is not in the store yet.
    pub registry: RegistryConfig,
    /// The agent's device id, stored as [`labels::AGENT`] when the caller gives none.
    pub agent_id: String,
    /// `runtime.oci_runtime`.
    pub oci_runtime: String,
    /// `runtime.conmon`.
    pub conmon: Option<PathBuf>,
    /// `runtime.run_dir`.
    pub run_dir: PathBuf,
    /// `runtime.cgroup_parent`.
    pub cgroup_parent: PathBuf,
    /// `runtime.log_max_bytes`.
    pub log_max_bytes: u64,
    /// `[network]` and where its state lives: the bridge `network = "bridge"` containers join.
    pub network: super::network::Network,
    /// How a root file system is built. Defaults to overlay with a copy fallback.
    pub rootfs_mode: RootfsMode,
    /// `[unpack]` and `registry.disk_reserve_bytes`: what unpacking an image's layers may write.
    pub unpack: UnpackBudget,
}

impl OciSettings {
    /// The settings a config gives.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            state_dir: cfg.state_dir.clone(),
            host_root: cfg.host.root.clone(),
            gpu_mode: cfg.gpu.mode,
            registry: cfg.registry.clone(),
            agent_id: cfg.device_id(),
            oci_runtime: cfg.runtime.oci_runtime.clone(),
            conmon: cfg.runtime.conmon.clone(),
            run_dir: cfg.runtime.run_dir.clone(),
            cgroup_parent: cfg.runtime.cgroup_parent.clone(),
            log_max_bytes: cfg.runtime.log_max_bytes,
            network: super::network::Network::from_config(cfg),
            rootfs_mode: RootfsMode::Auto,
            unpack: UnpackBudget::from_config(&cfg.unpack, cfg.registry.disk_reserve_bytes),
        }
    }
}

/// The native OCI backend. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct OciBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OciSettings,
    sup: Supervisor,
    conmon: PathBuf,
    /// Where pull progress goes (the agent's executor meters it); none for `jetship run`.
    progress: Option<crate::image::pull::ProgressSink>,
}

fn backend_err(message: impl Into<String>) -> Error {
    Error::Backend { backend: "oci", message: message.into() }
}

fn ctr_err(id: &str, message: impl Into<String>) -> Error {
    Error::Container { id: id.to_owned(), message: message.into() }
}

fn img_err(image: &str, message: impl std::fmt::Display) -> Error {
    Error::Image { image: image.to_owned(), message: message.to_string() }
}

impl OciBackend {
    /// A backend with conmon and the OCI runtime the settings name. Fails with what to install when either is
    /// missing.
    pub fn new(settings: OciSettings) -> Result<Self> {
        let runtime = OciRuntime::choose(&settings.oci_runtime)?;
        let conmon = match &settings.conmon {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => return Err(backend_err(format!("conmon `{}` does not exist: fix runtime.conmon", p.display()))),
            None => crate::os::exec::find_program(
                Path::new("/"),
                "conmon",
                &["/usr/bin", "/usr/local/bin", "/usr/libexec/podman"],
            )
            .ok_or(conmon::Error::NoConmon)?,
        };
        let paths = Paths { containers: settings.state_dir.join("containers"), run: settings.run_dir.clone() };
        let sup = Supervisor::new(Some(conmon.clone()), runtime, paths, settings.log_max_bytes)?;
        Ok(Self { inner: Arc::new(Inner { settings, sup, conmon, progress: None }) })
    }

    /// Sends the progress of image pulls done by `ensure_image` to `sink`.
    pub fn with_progress(self, sink: crate::image::pull::ProgressSink) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            settings: shared.settings.clone(),
            sup: shared.sup.clone(),
            conmon: shared.conmon.clone(),
            progress: None,
        });
        Self { inner: Arc::new(Inner { progress: Some(sink), ..inner }) }
    }

    /// The OCI runtime containers get by default (runc or crun).
    pub fn oci_runtime(&self) -> &OciRuntime {
        self.inner.sup.runtime()
    }

    /// The log file of container `id` (k8s-file format).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.inner.sup.log_path(id)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| backend_err(format!("blocking task failed: {e}")))?
}

impl Inner {
    /// The runtime command that execs `cmd` in running container `id` with the container's process spec, and
    /// the files it uses (process spec, pid file) for the caller to remove.
    fn prepare_exec(&self, id: &str, cmd: &[String], tty: bool) -> Result<(std::process::Command, PathBuf, PathBuf)> {
        if !conmon::valid_id(id) {
            return Err(conmon::Error::BadId(id.to_owned()).into());
        }
        if cmd.is_empty() {
            return Err(ctr_err(id, "exec needs a command"));
        }
        let sup = self.sup_of(id)?;
        if sup.state(id)?.status != Status::Running {
            return Err(ctr_err(id, "is not running: exec needs a running container"));
        }
        let config = self.bundle_dir(id).join("config.json");
        let bytes = std::fs::read(&config).map_err(|e| ctr_err(id, format!("reading {}: {e}", config.display())))?;
        let spec: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ctr_err(id, format!("{} is unreadable: {e}", config.display())))?;
        let mut process = spec.get("process").cloned().ok_or_else(|| ctr_err(id, "its config.json has no process"))?;
        process["args"] = serde_json::json!(cmd);
        // A terminal only for an attached `exec -t`: the runtime sizes it from the caller's terminal.
        process["terminal"] = serde_json::Value::Bool(tty);
        if let Some(p) = process.as_object_mut() {
            p.remove("consoleSize");
        }
        let tag = format!("{:016x}", rand::random::<u64>());
        let dir = sup.container_dir(id);
        let process_file = dir.join(format!("exec-{tag}.json"));
        let pid_file = dir.join(format!("exec-{tag}.pid"));
        crate::os::fsutil::write_atomic(&process_file, &serde_json::to_vec(&process).expect("json serializes"))
            .map_err(|e| ctr_err(id, format!("writing the exec process spec: {e}")))?;
        Ok((sup.exec_command(id, &process_file, &pid_file), process_file, pid_file))
    }

    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.settings.state_dir.join("bundles").join(id)
    }

    fn images(&self) -> Result<ImageStore> {
        ImageStore::open(&self.settings.state_dir).map_err(|e| backend_err(format!("opening the image store: {e}")))
    }

    fn snapshots(&self) -> Result<SnapshotStore> {
        SnapshotStore::open(&self.settings.state_dir).map_err(|e| backend_err(format!("opening the snapshots: {e}")))
    }

    /// The supervisor for a container: the default one, or one over the runtime recorded in its metadata.
    fn sup_for(&self, meta_labels: &BTreeMap<String, String>) -> Supervisor {
        match meta_labels.get(RUNTIME_LABEL) {
            Some(path) if Path::new(path) != self.sup.runtime().path => self.sup_with(Path::new(path)),
            _ => self.sup.clone(),
        }
    }

    fn sup_with(&self, runtime: &Path) -> Supervisor {
        let name = runtime.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "oci".into());
        let paths =
            Paths { containers: self.settings.state_dir.join("containers"), run: self.settings.run_dir.clone() };
        Supervisor::new(
            Some(self.conmon.clone()),
            OciRuntime { path: runtime.to_path_buf(), name },
            paths,
            self.settings.log_max_bytes,
        )
        .expect("conmon path is given")
    }

    fn meta_labels(&self, id: &str) -> Result<BTreeMap<String, String>> {
        match self.record(id)? {
            Some(meta) => Ok(meta.labels),
            None => Err(conmon::Error::NotFound { id: id.to_owned() }.into()),
        }
    }

    /// The container's record (`containers/<id>/meta.json`), `None` when there is none.
    fn record(&self, id: &str) -> Result<Option<conmon::Meta>> {
        let dir = self.settings.state_dir.join("containers").join(id);
        conmon::Meta::read(&dir).map_err(|e| {
            ctr_err(id, format!("{} is unusable: {e}; remove the container", dir.join("meta.json").display()))
        })
    }

    fn sup_of(&self, id: &str) -> Result<Supervisor> {
        Ok(self.sup_for(&self.meta_labels(id)?))
    }

    /// Unpacks the image's layers (reusing sound snapshots); returns the image and its snapshot dirs, bottom
    /// first. Each layer blob is hashed while it is unpacked; a damaged one is removed.
    fn unpack(&self, image: &str) -> Result<(StoredImage, Vec<PathBuf>)> {
        let store = self.images()?;
        let stored = store.image(image).map_err(|e| img_err(image, e))?;
        let diff_ids = stored.config.rootfs().diff_ids();
        if diff_ids.len() != stored.record.layers.len() {
            return Err(img_err(
                image,
                format!(
                    "the config lists {} layers but the manifest {}: the image is broken, rebuild it",
                    diff_ids.len(),
                    stored.record.layers.len()
                ),
            ));
        }
        let layers: Vec<LayerSpec> = diff_ids
            .iter()
            .zip(&stored.record.layers)
            .map(|(d, l)| LayerSpec { diff_id: d.clone(), media_type: l.media_type.clone() })
            .collect();
        let blobs: Vec<String> = stored.record.layers.iter().map(|l| l.digest.clone()).collect();
        let snaps = self
            .snapshots()?
            .ensure_all_checked(
                &layers,
                |i, _| store.open_verified(&blobs[i]).map_err(|e| std::io::Error::other(e.to_string())),
                |_, blob| blob.finish().map_err(|e| std::io::Error::other(e.to_string())),
                &UnpackPolicy { budget: self.settings.unpack, ..Default::default() },
            )
            .map_err(|e| img_err(image, e))?;
        Ok((stored, snaps.into_iter().map(|s| s.fs).collect()))
    }

    /// Whether every layer blob of `image` is in the store and sound, hashing each in full; damaged ones are
    /// removed. For after an unpack failed: a blob to pull again, or a layer that is bad at its source.
    fn blobs_sound(&self, image: &str) -> bool {
        let Ok(store) = self.images() else { return false };
        let Ok(stored) = store.image(image) else { return false };
        stored.record.layers.iter().all(|l| store.verify_full(&l.digest))
    }

    /// Pulls `image` into the store (only what is missing or was found damaged).
    fn pull(&self, image: &str, handle: &tokio::runtime::Handle) -> Result<()> {
        let store = self.images()?;
        let registry = &self.settings.registry;
        let opts = crate::image::pull::PullOptions::from_config(registry, None).map_err(|e| img_err(image, e))?;
        let client_opts =
            crate::image::registry::ClientOptions::from_config(registry).map_err(|e| img_err(image, e))?;
        let client = crate::image::registry::Client::new(client_opts).map_err(|e| img_err(image, e))?;
        let vars = crate::image::reference::TemplateVars::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        handle
            .block_on(crate::image::pull::pull(&client, &store, image, &vars, &opts, self.progress.clone(), cancel))
            .map_err(|e| img_err(image, e))?;
        Ok(())
    }

    /// Makes `image` ready to run: in the store, its manifest and config sound, every layer unpacked into a sound
    /// snapshot. What is missing or damaged is pulled again (once per call) and unpacked again.
    fn ensure_image(&self, image: &str, handle: &tokio::runtime::Handle) -> Result<()> {
        let mut pulled = false;
        loop {
            let stored = self.images()?.image(image).is_ok();
            if !stored {
                if pulled {
                    return Err(img_err(image, "the image is still incomplete after pulling it"));
                }
                self.pull(image, handle)?;
                pulled = true;
                continue;
            }
            match self.unpack(image) {
                Ok(_) => return Ok(()),
                Err(e) if !pulled && !self.blobs_sound(image) => {
                    tracing::warn!(image, err = %e, "a layer blob is missing or damaged; pulling it again");
                    self.pull(image, handle)?;
                    pulled = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The backend's lock (`<state_dir>/containers/.lock`), held while a container is created, started or removed
    /// and while [`Inner::repair`] looks at them, so repair never takes a container half made by another process
    /// (`jetship run`) for one a kill left behind. `wait = false`: `None` when another holds it.
    fn lock(&self, wait: bool) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
        use nix::fcntl::{Flock, FlockArg};
        let dir = self.settings.state_dir.join("containers");
        std::fs::create_dir_all(&dir).map_err(|e| backend_err(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| backend_err(format!("opening {}: {e}", path.display())))?;
        let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
        match Flock::lock(file, arg) {
            Ok(l) => Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
            Err((_, e)) => Err(backend_err(format!("locking {}: {e}", path.display()))),
        }
    }

    fn create(&self, id: &str, config: &ContainerConfig, user_labels: BTreeMap<String, String>) -> Result<()> {
        if !conmon::valid_id(id) {
            return Err(conmon::Error::BadId(id.to_owned()).into());
        }
        let _lock = self.lock(true)?;
        if self.settings.state_dir.join("containers").join(id).join("meta.json").exists() {
            return Err(conmon::Error::Exists { id: id.to_owned() }.into());
        }
        let root = &self.settings.host_root;
        // Devices first: a missing camera or an unusable GPU must fail before anything is created.
        let gpu_plan = match config.gpu_request()? {
            Some(req) => Some(gpu::plan_gpu(root, self.settings.gpu_mode, &req)?),
            None => None,
        };
        let mut camera_edits = cameras::edits(root, &config.cameras, gpu_plan.is_some())?;
        jetson::add_edits(&mut camera_edits, root, &config.jetson, &config.env)?;
        let nodes = super::devices::for_container(root, config)?;
        if let Some(plan) = &gpu_plan {
            for s in &plan.skipped {
                tracing::info!(container = %id, mode = %s.mode, reason = %s.reason, "gpu mode skipped");
            }
            for w in &plan.warnings {
                tracing::warn!(container = %id, warning = %w, "gpu plan");
            }
            tracing::info!(container = %id, mode = %plan.method.mode(), "gpu plan");
        }

        let (stored, lowers) = self.unpack(&config.image)?;
        let bundle = self.bundle_dir(id);
        if bundle.exists() {
            // Left over from a create that crashed before the supervisor's record was written.
            cleanup_bundle(&bundle);
        }
        std::fs::create_dir_all(&bundle).map_err(|e| ctr_err(id, format!("creating {}: {e}", bundle.display())))?;
        let lower_refs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        let rootfs = match snapshot::mount_rootfs(&lower_refs, &bundle, self.settings.rootfs_mode) {
            Ok(r) => r,
            Err(e) => {
                cleanup_bundle(&bundle);
                return Err(ctr_err(id, format!("building the root file system: {e}")));
            }
        };
        let staging = mounts::dir(&self.settings.state_dir, id);
        let result = self.stage(id, config, &camera_edits, &staging).and_then(|staged| {
            self.write_bundle(id, config, &stored, rootfs.path(), &bundle, gpu_plan.as_ref(), staged, &nodes)
        });
        let runtime = match result {
            Ok(r) => r,
            Err(e) => {
                drop(rootfs);
                cleanup_bundle(&bundle);
                release_staging(&staging);
                let _ = self.network_down(id, true);
                return Err(e);
            }
        };
        let mut user_labels = labels::stamp(user_labels, id, config, Some(&self.settings.agent_id));
        let sup = match &runtime {
            Some(path) => {
                user_labels.insert(RUNTIME_LABEL.into(), path.to_string_lossy().into_owned());
                self.sup_with(path)
            }
            None => self.sup.clone(),
        };
        if let Err(e) = self.network_up(id).and_then(|()| Ok(sup.create(id, &bundle, user_labels)?)) {
            let _ = sup.remove(id);
            let _ = self.network_down(id, true);
            drop(rootfs);
            cleanup_bundle(&bundle);
            release_staging(&staging);
            return Err(e);
        }
        // The container outlives this call (and this process): leave the overlay mounted.
        rootfs.keep();
        tracing::info!(container = %id, image = %config.image, "container created");
        Ok(())
    }

    /// Resolves the volumes (and the camera edits' mounts: nvargus-daemon's socket) and stages them under
    /// `staging` ([`mounts`]); returns the camera edits with the staged mounts in place of the originals.
    fn stage(
        &self,
        id: &str,
        config: &ContainerConfig,
        camera_edits: &spec::DeviceEdits,
        staging: &Path,
    ) -> Result<(Vec<BindMount>, spec::DeviceEdits)> {
        let mut requests = mounts::volume_requests(&config.volumes, &config.confinement.volume_sources)?;
        let volumes = requests.len();
        requests.extend(mounts::edit_requests(camera_edits, &self.settings.host_root));
        if requests.is_empty() {
            return Ok((Vec::new(), camera_edits.clone()));
        }
        let mut staged = mounts::stage_all(staging, &requests)?;
        let camera = staged.split_off(volumes);
        tracing::debug!(container = %id, mounts = requests.len(), "bind sources staged");
        Ok((staged, spec::DeviceEdits { mounts: camera, host_files: Vec::new(), ..camera_edits.clone() }))
    }

    fn start(&self, id: &str) -> Result<()> {
        let _lock = self.lock(true)?;
        let sup = self.sup_of(id)?;
        if sup.state(id)?.status == Status::Stopped {
            mounts::restage(&mounts::dir(&self.settings.state_dir, id))?;
            self.network_up(id)?;
        }
        Ok(sup.start(id)?)
    }

    /// Writes `config.json` and the GPU symlinks; returns the OCI runtime to use instead of the default.
    #[allow(clippy::too_many_arguments)]
    fn write_bundle(
        &self,
        id: &str,
        config: &ContainerConfig,
        stored: &StoredImage,
        rootfs: &Path,
        bundle: &Path,
        gpu_plan: Option<&gpu::GpuPlan>,
        (volumes, camera_edits): (Vec<BindMount>, spec::DeviceEdits),
        nodes: &[super::devices::HostNode],
    ) -> Result<Option<PathBuf>> {
        let image = image_process(stored);
        let user = config.user.as_deref().or(image.user.as_deref());
        let user =
            spec::resolve_user(user, &image_file(id, rootfs, "etc/passwd")?, &image_file(id, rootfs, "etc/group")?)?;
        if config.confinement.refuse_root && user.uid == 0 {
            return Err(ctr_err(
                id,
                format!(
                    "its process would run as root (uid 0, user `{}`), which this device's policy refuses: set `user` in the deployment to a non-root uid, or set policy.allow_root = true in the agent config",
                    config.user.as_deref().or(image.user.as_deref()).unwrap_or("the image's default")
                ),
            ));
        }
        let mut run = run_spec(config);
        self.prepare_network(id, config, &mut run)?;
        run.seccomp = run.seccomp.map(|m| m.for_platform(&stored.record.platform));
        run.mounts = volumes;
        if !config.group_add.is_empty() {
            run.additional_gids =
                super::privileges::resolve_groups(&config.group_add, &image_file(id, rootfs, "etc/group")?)?;
        }
        if config.privileged {
            run.own_capabilities =
                std::fs::read_to_string("/proc/self/status").ok().and_then(|t| super::privileges::own_capabilities(&t));
        }
        for n in nodes {
            run.device_owners.push((n.node.path.clone(), n.uid, n.gid));
        }
        spec::inject(
            &mut run,
            &spec::DeviceEdits { devices: nodes.iter().map(|n| n.node.clone()).collect(), ..Default::default() },
        );
        if config.confinement.apparmor && !config.privileged {
            run.apparmor_profile = super::apparmor::ensure_loaded(&self.settings.host_root, &self.settings.state_dir)
                .map_err(|e| ctr_err(id, e.to_string()))?;
        }
        let mut runtime = None;
        if let Some(plan) = gpu_plan {
            let (gpu_edits, gpu_runtime) = plan.injection();
            spec::inject(&mut run, &gpu_edits);
            runtime = gpu_runtime.map(Path::to_path_buf);
            if let Some(edits) = plan.edits() {
                let mut warnings = Vec::new();
                gpu::create_symlinks(rootfs, &edits.symlinks, &mut warnings)
                    .map_err(|e| ctr_err(id, format!("creating GPU symlinks in the root file system: {e}")))?;
                for w in warnings {
                    tracing::warn!(container = %id, warning = %w, "gpu symlinks");
                }
            }
        }
        spec::inject(&mut run, &camera_edits);
        let mut oci = spec::build(&image, &run, user, rootfs, &HostFiles::under(&self.settings.host_root))?;
        if let Some(linux) = oci.linux_mut() {
            linux.set_cgroups_path(Some(cgroup_path(&self.settings.cgroup_parent, id)));
        }
        let json = serde_json::to_vec_pretty(&oci).map_err(|e| ctr_err(id, format!("serializing config.json: {e}")))?;
        crate::os::fsutil::write_atomic(&bundle.join("config.json"), &json)
            .map_err(|e| ctr_err(id, format!("writing config.json: {e}")))?;
        Ok(runtime)
    }

    fn remove(&self, id: &str) -> Result<()> {
        if !conmon::valid_id(id) {
            return Err(conmon::Error::BadId(id.to_owned()).into());
        }
        let _lock = self.lock(true)?;
        let sup = match self.meta_labels(id) {
            Ok(l) => self.sup_for(&l),
            Err(_) => self.sup.clone(),
        };
        sup.remove(id)?;
        self.network_down(id, true)?;
        let staging = mounts::dir(&self.settings.state_dir, id);
        mounts::release(&staging)
            .map_err(|e| ctr_err(id, format!("releasing the staged bind mounts in {}: {e}", staging.display())))?;
        let bundle = self.bundle_dir(id);
        if bundle.exists() {
            unmount(&bundle.join("rootfs"))
                .map_err(|e| ctr_err(id, format!("unmounting the root file system: {e}")))?;
            std::fs::remove_dir_all(&bundle).map_err(|e| ctr_err(id, format!("removing {}: {e}", bundle.display())))?;
        }
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    fn list_owned(&self) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        for owned in self.sup.list()? {
            let state = if owned.meta.labels.contains_key(RUNTIME_LABEL) {
                self.sup_for(&owned.meta.labels).state(&owned.meta.id)?
            } else {
                owned.state
            };
            out.push(info(owned.meta, state));
        }
        Ok(out)
    }

    fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        if !conmon::valid_id(id) {
            return Err(conmon::Error::BadId(id.to_owned()).into());
        }
        let Some(meta) = self.record(id)? else { return Ok(None) };
        let state = self.sup_for(&meta.labels).state(id)?;
        Ok(Some(info(meta, state)))
    }
}

/// The backend-neutral view of a supervised container (the internal runtime key dropped from the labels).
fn info(meta: conmon::Meta, state: conmon::State) -> ContainerInfo {
    let mut labels = meta.labels;
    labels.remove(RUNTIME_LABEL);
    ContainerInfo {
        id: meta.id,
        labels,
        state: run_state(state.status),
        pid: state.pid,
        exit_code: state.exit_code,
        oom_killed: state.oom_killed,
        // The runtime's creation time: `create` and `start` follow each other in every caller (jetship run, the
        // reconciler), and a stopped container is created anew when started again. The record's time when the
        // runtime has none (a missing container).
        started_at: Some(state.created.unwrap_or(meta.created_at)),
    }
}

/// Unmounts `path` when it is a mount point (lazily, so a busy mount still goes away once unused).
fn unmount(path: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        // Not a mount point (a copied root file system) or already gone.
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn release_staging(staging: &Path) {
    if let Err(e) = mounts::release(staging) {
        tracing::warn!(staging = %staging.display(), err = %e, "releasing staged mounts failed");
    }
}

/// Reads `rel` (`etc/passwd`) of the image's root file system: resolved inside `rootfs` (a symlink there stays
/// in the root file system), a regular file only (a FIFO or device is refused before it is opened), at most
/// [`MAX_IMAGE_FILE_BYTES`]. A missing file reads as empty, as Docker treats it.
fn image_file(id: &str, rootfs: &Path, rel: &str) -> Result<String> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |m: String| ctr_err(id, format!("the image's /{rel} {m}; fix the image"));
    let root =
        nix::fcntl::open(rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| ctr_err(id, format!("opening the root file system {}: {e}", rootfs.display())))?;
    let fd = match crate::os::beneath::open(&root, Path::new(rel), crate::os::beneath::Symlinks::InRoot, OFlag::O_PATH)
    {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(String::new()),
        Err(e) => return Err(bad(format!("cannot be resolved inside the image ({e})"))),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(bad("is not a regular file (a FIFO, device or directory)".into()));
    }
    if st.st_size as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(bad(format!("is {} bytes; at most {MAX_IMAGE_FILE_BYTES} are read", st.st_size)));
    }
    // Reopen exactly the object checked, for reading, without blocking.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(crate::os::beneath::proc_fd_path(&fd))
        .map_err(|e| bad(format!("cannot be opened ({e})")))?;
    let mut buf = Vec::new();
    file.take(MAX_IMAGE_FILE_BYTES + 1).read_to_end(&mut buf).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if buf.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(bad(format!("grew past {MAX_IMAGE_FILE_BYTES} bytes while read")));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn cleanup_bundle(bundle: &Path) {
    if let Err(e) = unmount(&bundle.join("rootfs")) {
        tracing::warn!(bundle = %bundle.display(), err = %e, "unmount failed");
    }
    let _ = std::fs::remove_dir_all(bundle);
}

/// The process settings of a stored image config.
pub(crate) fn image_process(stored: &StoredImage) -> ImageProcess {
    match stored.config.config() {
        Some(c) => ImageProcess {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone(),
            user: c.user().clone(),
        },
        None => ImageProcess::default(),
    }
}

/// The run spec of a container config (before device edits and staging: `mounts` holds the volumes as
/// named, which [`OciBackend`] replaces with their staged sources).
pub(crate) fn run_spec(config: &ContainerConfig) -> RunSpec {
    let c = &config.confinement;
    RunSpec {
        seccomp: (c.seccomp && !config.privileged).then(super::seccomp::Machine::host),
        privileged: config.privileged,
        cap_drop: config.cap_drop.clone(),
        ulimits: config.ulimits.clone(),
        sysctls: config.sysctls.clone(),
        read_only_rootfs: config.read_only_rootfs,
        tmpfs: config.tmpfs.clone(),
        no_new_privileges: c.no_new_privileges,
        pids_limit: c.pids_limit,
        cap_add: c.cap_add.clone(),
        entrypoint: config.entrypoint.clone(),
        args: config.args.clone(),
        env: config.env.clone(),
        working_dir: config.working_dir.clone(),
        hostname: config.hostname.clone(),
        ipc: config.ipc,
        network: config.network,
        shm_size_bytes: config.shm_size_bytes,
        memory_bytes: config.memory_bytes,
        cpus: config.cpus,
        mounts: config
            .volumes
            .iter()
            .map(|v| BindMount { host: v.host.clone(), container: v.container.clone(), read_only: v.read_only })
            .collect(),
        ..Default::default()
    }
}

/// The backend-neutral state of a supervisor status.
pub(crate) fn run_state(status: Status) -> RunState {
    match status {
        Status::Created => RunState::Created,
        Status::Running => RunState::Running,
        Status::Paused => RunState::Paused,
        Status::Stopped => RunState::Exited,
        Status::Missing => RunState::Missing,
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for OciBackend {
    fn name(&self) -> &'static str {
        "oci"
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        let inner = self.inner.clone();
        let name = image.to_owned();
        let handle = tokio::runtime::Handle::current();
        // The pull future is not `Send` (higher-ranked closures inside), so it runs on this blocking thread.
        blocking(move || inner.ensure_image(&name, &handle)).await
    }

    async fn create(&self, id: &str, config: &ContainerConfig, labels: BTreeMap<String, String>) -> Result<()> {
        let inner = self.inner.clone();
        let (id, config) = (id.to_owned(), config.clone());
        blocking(move || inner.create(&id, &config, labels)).await
    }

    /// Starts a created container; a stopped one is created anew by the supervisor, after its bind sources are
    /// resolved and staged again (a reboot took the staged mounts away).
    async fn start(&self, id: &str) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        blocking(move || inner.start(&id)).await
    }

    async fn repair(&self) -> Result<usize> {
        let inner = self.inner.clone();
        blocking(move || inner.repair()).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        blocking(move || inner.stop(&id, grace)).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        blocking(move || inner.remove(&id)).await
    }

    async fn list_owned(&self) -> Result<Vec<ContainerInfo>> {
        let inner = self.inner.clone();
        blocking(move || inner.list_owned()).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        blocking(move || inner.inspect(&id)).await
    }

    async fn logs(&self, id: &str, tail: Option<usize>) -> Result<Vec<LogLine>> {
        let inner = self.inner.clone();
        let id = id.to_owned();
        blocking(move || Ok(inner.sup.logs(&id, tail)?)).await
    }

    /// `runc exec` / `crun exec` with the container's own process spec (from its bundle's `config.json`) and
    /// `cmd` as the arguments: the runtime joins the container's namespaces and cgroup and applies its user,
    /// capabilities, seccomp filter, AppArmor profile and no_new_privs.
    async fn exec(&self, id: &str, cmd: &[String], timeout: Option<Duration>, sink: ExecSink) -> Result<i32> {
        let inner = self.inner.clone();
        let (owned, args) = (id.to_owned(), cmd.to_vec());
        let (command, process_file, pid_file) = blocking(move || inner.prepare_exec(&owned, &args, false)).await?;
        let result = super::exec::run(id, command, &pid_file, timeout, sink).await;
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    /// The runtime's foreground exec with this process's stdio (stdin only with `io.stdin`); with `io.tty` the
    /// process spec asks for a terminal, which runc/crun allocate and connect to this process's own.
    async fn exec_attached(&self, id: &str, cmd: &[String], io: super::ExecIo) -> Result<i32> {
        if io.tty && !super::attach::has_terminal() {
            return Err(super::attach::no_terminal(id));
        }
        let inner = self.inner.clone();
        let (owned, args) = (id.to_owned(), cmd.to_vec());
        let (command, process_file, pid_file) = blocking(move || inner.prepare_exec(&owned, &args, io.tty)).await?;
        let result = super::attach::run(id, command, &pid_file, io).await;
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    /// Follows `ctr.log` by byte offset across rotations ([`super::follow`]).
    async fn follow_logs(
        &self,
        id: &str,
        tail: Option<usize>,
        sink: super::LogSink,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        if !conmon::valid_id(id) {
            return Err(conmon::Error::BadId(id.to_owned()).into());
        }
        super::follow::follow_file(self.log_path(id), tail, sink, stop)
            .await
            .map_err(|e| ctr_err(id, format!("following its log: {e}")))
    }

    /// Rotates the log of every owned container that reached `runtime.log_max_bytes`.
    async fn rotate_logs(&self) -> Result<usize> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut rotated = 0;
            for owned in inner.sup.list()? {
                match inner.sup_for(&owned.meta.labels).rotate_logs(&owned.meta.id) {
                    Ok(true) => rotated += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(container = %owned.meta.id, err = %e, "log rotation failed"),
                }
            }
            Ok(rotated)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_run_states() {
        assert_eq!(run_state(Status::Stopped), RunState::Exited);
        assert_eq!(run_state(Status::Missing), RunState::Missing);
        assert_eq!(run_state(Status::Running), RunState::Running);
        assert_eq!(cgroup_path(Path::new("/jetship"), "web"), Path::new("/jetship/web"));
    }
}
