//! The OCI runtime spec (`config.json`) for a container: image config plus what the deployment asks for, with
//! Docker's defaults where the deployment says nothing (capabilities, masked and read-only paths, mounts, rlimits).
//!
//! Pure: the caller resolves the user against the image's /etc/passwd and passes the host paths in, so every
//! rule here is unit-tested without a container. It must not touch the file system or decide policy (what a
//! remote controller may ask for is checked before a `RunSpec` is built).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, HookBuilder, HooksBuilder, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::base::{IpcMode, NetworkMode};
pub use crate::host::devices::inject::{BindMount, DeviceEdits, DeviceNode, HookSpec};

/// Errors building a runtime spec. Each names the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the image has no entrypoint or command and the deployment gives none: set `command` or `args`")]
    NoCommand,
    #[error("environment entry `{0}` is not KEY=VALUE")]
    BadEnv(String),
    #[error("user `{user}`: {reason}")]
    User { user: String, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("building the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths Docker masks in every non-privileged container.
pub(crate) const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/interrupts",
];

/// Paths Docker makes read-only in every non-privileged container.
pub(crate) const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's default /dev/shm size when the deployment sets none (64 MiB).
pub(crate) const DEFAULT_SHM_BYTES: u64 = 64 * 1024 * 1024;

/// The PATH Docker gives a container whose image sets none.
pub(crate) const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an OCI image config (`config` object) that shape the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Adds what the host's devices give a container (GPU edits, camera nodes, the nvargus socket) to `run`: the
/// one injection step of every backend. A device node or mount whose container path `run` already has is not
/// added twice (cameras and the GPU may both bring e.g. `/dev/v4l2-nvenc`); env entries are appended so they
/// override the image's and earlier entries of the same name.
pub fn inject(run: &mut RunSpec, edits: &DeviceEdits) {
    run.env.extend(edits.env.iter().cloned());
    for d in &edits.devices {
        if !run.devices.iter().any(|have| have.path == d.path) {
            run.devices.push(d.clone());
        }
    }
    for m in &edits.mounts {
        if !run.mounts.iter().any(|have| have.container == m.container) {
            run.mounts.push(m.clone());
        }
    }
    run.hooks.extend(edits.hooks.iter().cloned());
}

/// What the deployment (or `jetship run`) asks for, already checked against the local policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSpec {
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd when set.
    pub args: Option<Vec<String>>,
    /// KEY=VALUE entries that override the image's.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub ipc: IpcMode,
    pub network: NetworkMode,
    /// With [`NetworkMode::Bridge`]: the namespace to join and the container's /etc files
    /// ([`super::network`]).
    pub bridge: Option<super::network::BridgeFiles>,
    pub shm_size_bytes: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub mounts: Vec<BindMount>,
    pub devices: Vec<DeviceNode>,
    pub hooks: Vec<HookSpec>,
    pub annotations: BTreeMap<String, String>,
    /// Soft and hard RLIMIT_NOFILE. Defaults to the agent's own limit (the systemd unit sets 65536), which the
    /// container inherits through conmon.
    pub nofile: Option<u64>,
    /// Docker's default seccomp profile translated for this machine; `None`: no seccomp filter.
    pub seccomp: Option<super::seccomp::Machine>,
    /// The AppArmor profile of the process (`None` where the host does not enforce AppArmor, or unconfined).
    pub apparmor_profile: Option<String>,
    /// `no_new_privs` for the process.
    pub no_new_privileges: bool,
    /// The pids cgroup limit; `None`: none.
    pub pids_limit: Option<u64>,
    /// Capabilities beyond [`DEFAULT_CAPABILITIES`] (`CAP_...` names).
    pub cap_add: Vec<String>,
    /// Docker's `--privileged` ([`super::privileges::apply`]); the backend adds the host's devices and leaves
    /// seccomp and AppArmor out.
    pub privileged: bool,
    /// The agent's own bounding set (`CapBnd` of /proc/self/status) as a bit mask: what `privileged` gives,
    /// as no container gets more than the process that makes it. `None`: every capability jetship knows.
    pub own_capabilities: Option<u64>,
    /// Capabilities taken from the set (`CAP_...` names, or `ALL`).
    pub cap_drop: Vec<String>,
    /// Supplementary gids of the process (`group_add`, resolved).
    pub additional_gids: Vec<u32>,
    /// Resource limits over `nofile` and the inherited ones.
    pub ulimits: Vec<super::privileges::Ulimit>,
    /// Namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Mount the root file system read-only.
    pub read_only_rootfs: bool,
    /// tmpfs mounts.
    pub tmpfs: Vec<super::privileges::Tmpfs>,
    /// Owner and group of passed device nodes by container path (kept from the host node, as Docker does).
    pub device_owners: super::privileges::DeviceOwners,
}

/// The `CAP_...` name of a capability.
pub(crate) fn capability_name(c: Capability) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The capability `name` names (`CAP_NET_ADMIN` or `NET_ADMIN`, any case).
pub(crate) fn parse_capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(crate::base::capability_key(name))).ok()
}

/// The resolved user of the container process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
}

/// Host files a container shares in host-network mode, as host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    /// The host's /dev/shm, bind-mounted in host-IPC mode.
    pub shm: PathBuf,
}

impl HostFiles {
    /// The usual paths under a host root.
    pub fn under(root: &Path) -> Self {
        let p = |abs: &str| crate::os::fsutil::under_root(root, abs);
        Self { resolv_conf: p("/etc/resolv.conf"), hosts: p("/etc/hosts"), shm: p("/dev/shm") }
    }
}

/// Resolves an image or deployment `user` (`uid`, `uid:gid`, `name`, `name:group`) against the text of the
/// image's /etc/passwd and /etc/group, as Docker does. An empty user is root.
pub fn resolve_user(user: Option<&str>, passwd: &str, group: &str) -> Result<ResolvedUser> {
    let user = user.unwrap_or("").trim();
    if user.is_empty() {
        return Ok(ResolvedUser::default());
    }
    let err = |reason: String| Error::User { user: user.to_owned(), reason };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 4 && pred(f))
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd_entry(&|f| f[2] == u).and_then(|f| f[3].parse().ok()).unwrap_or(0);
            (uid, gid)
        }
        Err(_) => {
            let f = passwd_entry(&|f| f[0] == u)
                .ok_or_else(|| err(format!("no user `{u}` in the image's /etc/passwd; use a numeric uid")))?;
            let uid = f[2].parse().map_err(|_| err(format!("bad uid `{}` in /etc/passwd", f[2])))?;
            let gid = f[3].parse().map_err(|_| err(format!("bad gid `{}` in /etc/passwd", f[3])))?;
            (uid, gid)
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| err(format!("no group `{g}` in the image's /etc/group; use a numeric gid")))?,
        };
    }
    Ok(ResolvedUser { uid, gid })
}

/// Merges environment lists: later entries replace earlier ones with the same key, order of first appearance kept.
pub(crate) fn merge_env(layers: &[&[String]]) -> Result<Vec<String>> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for layer in layers {
        for entry in layer.iter() {
            let (k, _) = entry.split_once('=').ok_or_else(|| Error::BadEnv(entry.clone()))?;
            if k.is_empty() {
                return Err(Error::BadEnv(entry.clone()));
            }
            if !values.contains_key(k) {
                order.push(k.to_owned());
            }
            values.insert(k.to_owned(), entry.clone());
        }
    }
    Ok(order.into_iter().map(|k| values.remove(&k).unwrap_or_default()).collect())
}

/// The process arguments: Docker's rule (deployment entrypoint replaces the image's and drops its cmd).
pub(crate) fn process_args(image: &ImageProcess, run: &RunSpec) -> Result<Vec<String>> {
    let entrypoint = run.entrypoint.clone().unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&run.args, &run.entrypoint) {
        (Some(args), _) => args.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(args)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind(host: &Path, dest: &str, read_only: bool) -> Result<Mount> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        options.push("ro".into());
    }
    Ok(MountBuilder::default().destination(dest).typ("bind").source(host).options(options).build()?)
}

/// Builds the runtime spec for a container whose root file system is `rootfs`.
pub fn build(image: &ImageProcess, run: &RunSpec, user: ResolvedUser, rootfs: &Path, host: &HostFiles) -> Result<Spec> {
    let args = process_args(image, run)?;
    let image_env: Vec<String> = if image.env.iter().any(|e| e.starts_with("PATH=")) {
        image.env.clone()
    } else {
        std::iter::once(DEFAULT_PATH.to_owned()).chain(image.env.iter().cloned()).collect()
    };
    let env = merge_env(&[&image_env, &run.env])?;
    let cwd = run
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid { field: "working_dir", reason: format!("`{cwd}` must be an absolute path") });
    }

    let bounding: Vec<Capability> = super::privileges::capabilities(run)?;
    let caps: oci_spec::runtime::Capabilities = bounding.iter().copied().collect();
    let rlimits = match run.nofile {
        Some(n) => vec![PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitNofile).soft(n).hard(n).build()?],
        None => Vec::new(),
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(user.uid).gid(user.gid).build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            oci_spec::runtime::LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()?,
        )
        .rlimits(rlimits)
        .no_new_privileges(run.no_new_privileges);
    let process = match &run.apparmor_profile {
        Some(p) => process.apparmor_profile(p.clone()),
        None => process,
    }
    .build()?;

    let shm_size = run.shm_size_bytes.unwrap_or(DEFAULT_SHM_BYTES);
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro", "nosuid", "noexec", "nodev"])?,
    ];
    match run.ipc {
        IpcMode::Host => mounts.push(bind(&host.shm, "/dev/shm", false)?),
        IpcMode::Private => {
            let size = format!("size={shm_size}");
            mounts.push(mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &size])?);
        }
    }
    // An mqueue file system shows the queues of the mounting IPC namespace: the host's in host-IPC mode.
    mounts.push(mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?);
    if run.network == NetworkMode::Host {
        mounts.push(bind(&host.resolv_conf, "/etc/resolv.conf", true)?);
        mounts.push(bind(&host.hosts, "/etc/hosts", true)?);
    }
    let bridge = match (run.network, &run.bridge) {
        (NetworkMode::Bridge, Some(b)) => Some(b),
        (NetworkMode::Bridge, None) => {
            return Err(Error::Invalid { field: "network", reason: "bridge mode without a network namespace".into() })
        }
        _ => None,
    };
    if let Some(b) = bridge {
        // Per-container copies, writable as Docker's are.
        mounts.push(bind(&b.resolv_conf, "/etc/resolv.conf", false)?);
        mounts.push(bind(&b.hosts, "/etc/hosts", false)?);
        mounts.push(bind(&b.hostname, "/etc/hostname", false)?);
    }
    for m in &run.mounts {
        let dest = m.container.to_str().filter(|d| d.starts_with('/')).ok_or_else(|| Error::Invalid {
            field: "volumes",
            reason: format!("container path `{}` must be absolute", m.container.display()),
        })?;
        mounts.push(bind(&m.host, dest, m.read_only)?);
    }

    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    let mut ns = |t: LinuxNamespaceType| -> Result<()> {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build()?);
        Ok(())
    };
    ns(LinuxNamespaceType::Pid)?;
    ns(LinuxNamespaceType::Mount)?;
    ns(LinuxNamespaceType::Uts)?;
    if run.ipc == IpcMode::Private {
        ns(LinuxNamespaceType::Ipc)?;
    }
    if run.network == NetworkMode::None {
        ns(LinuxNamespaceType::Network)?;
    }
    if let Some(b) = bridge {
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(&b.netns).build()?);
    }

    let mut devices = Vec::new();
    let mut rules = vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?];
    for d in &run.devices {
        let typ = match d.kind {
            'c' => LinuxDeviceType::C,
            'b' => LinuxDeviceType::B,
            other => {
                return Err(Error::Invalid {
                    field: "devices",
                    reason: format!(
                        "`{}` has type `{other}`; only char (c) and block (b) devices can be passed",
                        d.path.display()
                    ),
                })
            }
        };
        let mut dev = LinuxDeviceBuilder::default().path(&d.path).typ(typ).major(d.major).minor(d.minor);
        if let Some(mode) = d.file_mode {
            dev = dev.file_mode(mode);
        }
        devices.push(dev.build()?);
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(d.access.clone())
                .build()?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default().devices(rules);
    if let Some(limit) = run.pids_limit {
        let limit = i64::try_from(limit).ok().filter(|l| *l > 0).ok_or_else(|| Error::Invalid {
            field: "pids_limit",
            reason: format!("{limit} must be between 1 and {}", i64::MAX),
        })?;
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if let Some(mem) = run.memory_bytes {
        let limit = i64::try_from(mem)
            .map_err(|_| Error::Invalid { field: "memory", reason: format!("{mem} bytes is too large") })?;
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(cpus) = run.cpus {
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0) {
            return Err(Error::Invalid { field: "cpus", reason: format!("{cpus} must be a positive number of CPUs") });
        }
        let period: u64 = 100_000;
        let quota = (cpus * period as f64).round() as i64;
        resources = resources.cpu(LinuxCpuBuilder::default().period(period).quota(quota).build()?);
    }

    let mut linux = LinuxBuilder::default();
    if let Some(machine) = run.seccomp {
        linux = linux.seccomp(super::seccomp::default_profile(&machine.target(&bounding)));
    }
    let linux = linux
        .namespaces(namespaces)
        .devices(devices)
        .resources(resources.build()?)
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?;

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(rootfs).readonly(false).build()?)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .annotations(run.annotations.clone().into_iter().collect::<std::collections::HashMap<_, _>>());
    if !run.hooks.is_empty() {
        let hooks = run
            .hooks
            .iter()
            .map(|h| {
                let mut args = vec![h.path.to_string_lossy().into_owned()];
                args.extend(h.args.iter().cloned());
                let mut b = HookBuilder::default().path(&h.path).args(args);
                if !h.env.is_empty() {
                    b = b.env(h.env.clone());
                }
                b.build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        spec = spec.hooks(HooksBuilder::default().create_container(hooks).build()?);
    }
    let mut spec = spec.build()?;
    super::privileges::apply(&mut spec, run)?;
    // A new UTS namespace starts with the host's hostname, which is what host networking should show; an
    // isolated container gets its own name.
    let hostname = match (&run.hostname, run.network) {
        (Some(h), _) => Some(h.clone()),
        (None, NetworkMode::None | NetworkMode::Bridge) => Some("jetship".into()),
        (None, NetworkMode::Host) => None,
    };
    spec.set_hostname(hostname);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_appends_without_duplicating_paths() {
        let node = |p: &str, minor| DeviceNode {
            path: p.into(),
            kind: 'c',
            major: 81,
            minor,
            file_mode: Some(0o660),
            access: "rwm".into(),
        };
        let edits = DeviceEdits {
            env: vec!["A=1".into()],
            devices: vec![node("/dev/v4l2-nvenc", 5), node("/dev/nvmap", 0)],
            mounts: vec![BindMount { host: "/x/lib.so".into(), container: "/lib.so".into(), read_only: true }],
            host_files: vec![],
            hooks: vec![HookSpec { path: "/bin/sh".into(), args: vec![], env: vec![] }],
            symlinks: vec![],
        };
        let mut run = RunSpec { devices: vec![node("/dev/v4l2-nvenc", 5)], ..RunSpec::default() };
        inject(&mut run, &edits);
        inject(&mut run, &edits);
        assert_eq!(run.devices.len(), 2);
        assert_eq!(run.mounts.len(), 1);
        assert_eq!(run.env, ["A=1", "A=1"]);
        assert_eq!(run.hooks.len(), 2);
    }

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/entry.sh".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/opt/bin:/usr/bin".into(), "MODE=image".into()],
            working_dir: Some("/app".into()),
            user: None,
        }
    }

    fn host() -> HostFiles {
        HostFiles::under(Path::new("/"))
    }

    fn build_default(run: &RunSpec) -> Spec {
        build(&image(), run, ResolvedUser::default(), Path::new("/var/lib/jetship/c/rootfs"), &host()).unwrap()
    }

    fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
    }

    fn mount_dests(spec: &Spec) -> Vec<String> {
        spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().display().to_string()).collect()
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = image();
        let run = RunSpec::default();
        assert_eq!(process_args(&img, &run).unwrap(), ["/entry.sh", "serve", "--port=80"]);
        let run = RunSpec { args: Some(vec!["debug".into()]), ..RunSpec::default() };
        assert_eq!(process_args(&img, &run).unwrap(), ["/entry.sh", "debug"]);
        let run = RunSpec { entrypoint: Some(vec!["/bin/sh".into()]), ..RunSpec::default() };
        assert_eq!(process_args(&img, &run).unwrap(), ["/bin/sh"], "a new entrypoint drops the image cmd");
        let run = RunSpec {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["echo hi".into()]),
            ..RunSpec::default()
        };
        assert_eq!(process_args(&img, &run).unwrap(), ["/bin/sh", "-c", "echo hi"]);
        let empty = ImageProcess::default();
        assert!(matches!(process_args(&empty, &RunSpec::default()), Err(Error::NoCommand)));
    }

    #[test]
    fn env_overrides_keep_first_position() {
        let merged =
            merge_env(&[&["PATH=/a".into(), "A=1".into()], &["A=2".into(), "B=3".into(), "PATH=/b".into()]]).unwrap();
        assert_eq!(merged, ["PATH=/b", "A=2", "B=3"]);
        assert!(matches!(merge_env(&[&["NOEQUALS".into()]]), Err(Error::BadEnv(_))));
        assert!(matches!(merge_env(&[&["=x".into()]]), Err(Error::BadEnv(_))));
    }

    #[test]
    fn default_path_is_added_only_when_image_has_none() {
        let mut img = image();
        img.env = vec!["A=1".into()];
        let spec = build(&img, &RunSpec::default(), ResolvedUser::default(), Path::new("/r"), &host()).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, [DEFAULT_PATH, "A=1"]);
        let spec = build_default(&RunSpec::default());
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["PATH=/opt/bin:/usr/bin", "MODE=image"]);
    }

    #[test]
    fn users_resolve_like_docker() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/app:/bin/sh\n";
        let group = "root:x:0:\nvideo:x:44:app\napp:x:1001:\n";
        assert_eq!(resolve_user(None, passwd, group).unwrap(), ResolvedUser { uid: 0, gid: 0 });
        assert_eq!(resolve_user(Some("app"), passwd, group).unwrap(), ResolvedUser { uid: 1000, gid: 1001 });
        assert_eq!(resolve_user(Some("app:video"), passwd, group).unwrap(), ResolvedUser { uid: 1000, gid: 44 });
        assert_eq!(resolve_user(Some("1000"), passwd, group).unwrap(), ResolvedUser { uid: 1000, gid: 1001 });
        assert_eq!(resolve_user(Some("4242"), passwd, group).unwrap(), ResolvedUser { uid: 4242, gid: 0 });
        assert_eq!(resolve_user(Some("4242:7"), passwd, group).unwrap(), ResolvedUser { uid: 4242, gid: 7 });
        let err = resolve_user(Some("ghost"), passwd, group).unwrap_err().to_string();
        assert!(err.contains("ghost") && err.contains("numeric uid"), "{err}");
        assert!(resolve_user(Some("app:nogroup"), passwd, group).is_err());
    }

    #[test]
    fn host_ipc_and_network_share_namespaces_and_files() {
        let spec = build_default(&RunSpec::default());
        let types = ns_types(&spec);
        assert!(!types.contains(&LinuxNamespaceType::Ipc), "host IPC: no IPC namespace");
        assert!(!types.contains(&LinuxNamespaceType::Network), "host network: no network namespace");
        assert!(types.contains(&LinuxNamespaceType::Pid) && types.contains(&LinuxNamespaceType::Mount));
        let dests = mount_dests(&spec);
        for d in ["/dev/shm", "/etc/resolv.conf", "/etc/hosts", "/proc", "/dev", "/sys"] {
            assert!(dests.contains(&d.to_string()), "{d} missing from {dests:?}");
        }
        let shm = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/dev/shm")).unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
        assert!(spec.hostname().is_none(), "host network keeps the host's hostname");
    }

    #[test]
    fn private_ipc_and_no_network_get_own_namespaces_and_sized_shm() {
        let run = RunSpec {
            ipc: IpcMode::Private,
            network: NetworkMode::None,
            shm_size_bytes: Some(8 << 30),
            ..RunSpec::default()
        };
        let spec = build_default(&run);
        let types = ns_types(&spec);
        assert!(types.contains(&LinuxNamespaceType::Ipc) && types.contains(&LinuxNamespaceType::Network));
        let shm = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/dev/shm")).unwrap();
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(shm.options().as_ref().unwrap().contains(&"size=8589934592".to_string()));
        assert!(!mount_dests(&spec).contains(&"/etc/resolv.conf".to_string()));
        assert_eq!(spec.hostname().as_deref(), Some("jetship"));
    }

    #[test]
    fn docker_defaults_for_caps_masks_and_rlimits() {
        let spec = build_default(&RunSpec::default());
        let process = spec.process().as_ref().unwrap();
        let caps = process.capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&Capability::NetBindService) && !caps.contains(&Capability::SysAdmin));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
        assert!(linux.readonly_paths().as_ref().unwrap().contains(&"/proc/sys".to_string()));
        assert!(process.rlimits().as_ref().is_none_or(|r| r.is_empty()), "no rlimit unless asked: inherit the agent's");
        let spec = build_default(&RunSpec { nofile: Some(4096), ..RunSpec::default() });
        let rl = &spec.process().as_ref().unwrap().rlimits().as_ref().unwrap()[0];
        assert_eq!((rl.typ(), rl.soft(), rl.hard()), (PosixRlimitType::RlimitNofile, 4096, 4096));
        assert_eq!(process.cwd(), Path::new("/app"));
    }

    #[test]
    fn limits_devices_mounts_and_hooks_are_applied() {
        let run = RunSpec {
            memory_bytes: Some(512 << 20),
            cpus: Some(1.5),
            devices: vec![DeviceNode {
                path: "/dev/video0".into(),
                kind: 'c',
                major: 81,
                minor: 0,
                file_mode: Some(0o660),
                access: "rwm".into(),
            }],
            mounts: vec![BindMount { host: "/data".into(), container: "/data".into(), read_only: true }],
            hooks: vec![HookSpec {
                path: "/usr/bin/nvidia-cdi-hook".into(),
                args: vec!["update-ldcache".into(), "--folder".into(), "/usr/lib/aarch64-linux-gnu/nvidia".into()],
                env: vec![],
            }],
            ..RunSpec::default()
        };
        let spec = build_default(&run);
        let linux = spec.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(512 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(150_000));
        let rules = res.devices().as_ref().unwrap();
        assert!(!rules[0].allow(), "default deny first");
        assert_eq!((rules[1].major(), rules[1].minor(), rules[1].allow()), (Some(81), Some(0), true));
        let dev = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((dev.path().as_path(), dev.major(), dev.minor()), (Path::new("/dev/video0"), 81, 0));
        let data = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/data")).unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        let hook = &spec.hooks().as_ref().unwrap().create_container().as_ref().unwrap()[0];
        assert_eq!(hook.args().as_ref().unwrap()[1], "update-ldcache");
    }

    #[test]
    fn confinement_reaches_the_spec_seccomp_for_the_capabilities_nnp_apparmor_and_pids() {
        let machine = crate::runtime::seccomp::Machine { arch: "arm64", kernel: (5, 15) };
        let run = RunSpec {
            seccomp: Some(machine),
            no_new_privileges: true,
            apparmor_profile: Some("jetship-default".into()),
            pids_limit: Some(4096),
            cap_add: vec!["net_admin".into()],
            ..RunSpec::default()
        };
        let spec = build_default(&run);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.apparmor_profile().as_deref(), Some("jetship-default"));
        let caps = process.capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert!(caps.contains(&Capability::NetAdmin) && caps.len() == 15);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.resources().as_ref().unwrap().pids().as_ref().map(|p| p.limit()), Some(4096));
        let seccomp = linux.seccomp().as_ref().expect("seccomp profile");
        assert_eq!(
            seccomp.architectures().as_deref(),
            Some(&[oci_spec::runtime::Arch::ScmpArchAarch64, oci_spec::runtime::Arch::ScmpArchArm][..])
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["process"]["noNewPrivileges"], true);

        let none = build_default(&RunSpec::default());
        assert!(none.linux().as_ref().unwrap().seccomp().is_none(), "no profile unless asked");
        assert_eq!(none.process().as_ref().unwrap().no_new_privileges(), Some(false));
        let bad = RunSpec { cap_add: vec!["CAP_FLY".into()], ..RunSpec::default() };
        let err = build(&image(), &bad, ResolvedUser::default(), Path::new("/r"), &host()).unwrap_err();
        assert!(err.to_string().starts_with("cap_add") && err.to_string().contains("CAP_FLY"), "{err}");
    }

    #[test]
    fn bad_requests_are_errors_naming_the_field() {
        let run = RunSpec { cpus: Some(-1.0), ..RunSpec::default() };
        let err = build(&image(), &run, ResolvedUser::default(), Path::new("/r"), &host()).unwrap_err();
        assert!(err.to_string().starts_with("cpus"), "{err}");
        let run = RunSpec {
            mounts: vec![BindMount { host: "/data".into(), container: "rel".into(), read_only: false }],
            ..RunSpec::default()
        };
        let err = build(&image(), &run, ResolvedUser::default(), Path::new("/r"), &host()).unwrap_err();
        assert!(err.to_string().starts_with("volumes"), "{err}");
        let run = RunSpec { working_dir: Some("app".into()), ..RunSpec::default() };
        assert!(build(&image(), &run, ResolvedUser::default(), Path::new("/r"), &host()).is_err());
    }
}
