//! GPU injection: decides how a container gets the NVIDIA GPU on this host (`gpu.mode = auto | cdi | csv |
//! nvidia-runtime | off`) and turns the host's CDI spec or Jetson CSV files into a plain
//! [`DeviceEdits`] value for the runtime to inject: device nodes with the numbers of the live `/dev`, read-only bind
//! mounts, environment, `createContainer` hooks and symlinks to recreate in the root file system.
//!
//! Reads the host root only (specs, CSV files, `stat(2)` of device nodes, symlink targets, program paths); it
//! never writes, never runs a program and never touches a container. The one exception is
//! [`create_symlinks`], which the bundle builder calls on a container's own root file system. Parsing stays in
//! [`super::cdi`] and [`super::csv`]; running the container stays in the runtime module.
//!
//! Paths: device node paths in the edits are container paths (the runtime creates the node from its numbers);
//! bind-mount sources and hook programs are host paths joined under the host root (as the runtime's host files
//! are), so a containerised agent with the host
//! root on `/host` mounts the host's files.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::inject::{BindMount, DeviceEdits, DeviceNode, HookSpec, Symlink};
use super::{cdi, csv};
use crate::base::GpuMode;
use crate::os::fsutil::under_root;

/// The CDI kind of NVIDIA GPUs.
pub(crate) const NVIDIA_GPU_KIND: &str = "nvidia.com/gpu";

/// The `createContainer` hook script of CSV mode. runc and crun run `createContainer` hooks in the container's
/// mount namespace before `pivot_root`, with the container's root file system as the working directory and the
/// CSV bind mounts already in place, so `chroot .` runs the image's own `ldconfig` on the image's own
/// `/etc/ld.so.cache`, adding the GPU library folders given as arguments. Images without `ldconfig` (static or
/// distroless images) are left alone: the hook then succeeds without doing anything. A runtime that ran the
/// hook from the host's `/` would otherwise rebuild the host's cache, so that case is a no-op too.
pub const LDCACHE_SCRIPT: &str = "[ \"$(pwd -P)\" != / ] || exit 0; \
     [ -x sbin/ldconfig ] || [ -x usr/sbin/ldconfig ] || exit 0; exec chroot . ldconfig \"$@\"";

/// The environment of the CSV-mode ldconfig hook (runtimes start hooks with only what the spec gives).
pub const HOOK_PATH_ENV: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// Which GPU a deployment asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every GPU (`nvidia.com/gpu=all`). A Jetson has one integrated GPU, so this is the usual request.
    #[default]
    All,
    /// One CDI device, fully qualified (`nvidia.com/gpu=0`, `nvidia.com/mig=1:0`); a bare name such as `0` is
    /// taken as `nvidia.com/gpu=<name>`.
    Named {
        /// The CDI kind, e.g. `nvidia.com/gpu`.
        kind: String,
        /// The device name within the kind, e.g. `0`.
        name: String,
    },
}

impl GpuRequest {
    /// Parses `all`, `nvidia.com/gpu=0` or a bare device name such as `0`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = |why: &str| GpuError::BadRequest { request: text.to_owned(), reason: why.to_owned() };
        let (kind, name) = match text.split_once('=') {
            Some((k, n)) => (k.trim(), n.trim()),
            None => (NVIDIA_GPU_KIND, text),
        };
        if !kind.contains('/') || kind.starts_with('/') || kind.ends_with('/') {
            return Err(bad("the kind must be vendor/class such as nvidia.com/gpu"));
        }
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if !name_ok {
            return Err(bad("the device name must be letters, digits and `_ . : -`"));
        }
        if kind == NVIDIA_GPU_KIND && name == "all" {
            return Ok(Self::All);
        }
        Ok(Self::Named { kind: kind.to_owned(), name: name.to_owned() })
    }

    /// The CDI kind and device name asked for.
    pub(crate) fn cdi_name(&self) -> (&str, &str) {
        match self {
            Self::All => (NVIDIA_GPU_KIND, "all"),
            Self::Named { kind, name } => (kind, name),
        }
    }

    /// The value of `NVIDIA_VISIBLE_DEVICES` for `nvidia-container-runtime`: `all` or the device name.
    pub(crate) fn visible_devices(&self) -> &str {
        self.cdi_name().1
    }
}

impl fmt::Display for GpuRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = self.cdi_name();
        write!(f, "{kind}={name}")
    }
}

/// How the plan gives the container the GPU.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuMethod {
    /// No GPU (`gpu.mode = "off"`).
    Off,
    /// Edits from a CDI spec.
    Cdi {
        /// Host path of the spec used, e.g. `/etc/cdi/nvidia.yaml`.
        spec: PathBuf,
        /// The device applied, e.g. `nvidia.com/gpu=all`.
        device: String,
        /// The edits.
        edits: DeviceEdits,
    },
    /// Edits built from Jetson CSV files.
    Csv {
        /// Host paths of the CSV files read.
        files: Vec<PathBuf>,
        /// The edits.
        edits: DeviceEdits,
    },
    /// Run the bundle with `nvidia-container-runtime` as the OCI runtime; it injects the GPU itself.
    NvidiaRuntime {
        /// The program, under the host root (what the agent executes).
        runtime_path: PathBuf,
        /// Environment the runtime reads, `NVIDIA_VISIBLE_DEVICES=all` (or the named device).
        env: Vec<String>,
    },
}

impl GpuMethod {
    /// The mode this method stands for (`auto` never appears: it resolves to one of the others).
    pub fn mode(&self) -> GpuMode {
        match self {
            Self::Off => GpuMode::Off,
            Self::Cdi { .. } => GpuMode::Cdi,
            Self::Csv { .. } => GpuMode::Csv,
            Self::NvidiaRuntime { .. } => GpuMode::NvidiaRuntime,
        }
    }
}

/// An option `auto` looked at and did not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The option.
    pub mode: GpuMode,
    /// Why it was not used (the error text of that mode).
    pub reason: String,
}

/// The outcome of [`plan_gpu`].
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlan {
    /// What to do.
    pub method: GpuMethod,
    /// In `auto` mode, the options tried before the chosen one and why each was passed over.
    pub skipped: Vec<Skipped>,
    /// Things worth logging that did not stop the plan: CSV lines skipped, CSV entries absent on this host,
    /// broken spec files next to the one used.
    pub warnings: Vec<String>,
}

impl GpuPlan {
    /// The edits, for the CDI and CSV methods.
    pub fn edits(&self) -> Option<&DeviceEdits> {
        match &self.method {
            GpuMethod::Cdi { edits, .. } | GpuMethod::Csv { edits, .. } => Some(edits),
            _ => None,
        }
    }

    /// What the plan gives the container: the edits for CDI and CSV, the runtime's environment for
    /// `nvidia-runtime`; and the OCI runtime program to use instead of runc/crun, if any.
    pub fn injection(&self) -> (DeviceEdits, Option<&Path>) {
        match &self.method {
            GpuMethod::Off => (DeviceEdits::default(), None),
            GpuMethod::Cdi { edits, .. } | GpuMethod::Csv { edits, .. } => (edits.clone(), None),
            GpuMethod::NvidiaRuntime { runtime_path, env } => {
                (DeviceEdits { env: env.clone(), ..Default::default() }, Some(runtime_path))
            }
        }
    }
}

/// Why no GPU plan could be made. Every variant says what is wrong on the device and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The GPU request is not a CDI device name.
    #[error("GPU request `{request}` is invalid: {reason} (use `all` or e.g. `nvidia.com/gpu=0`)")]
    BadRequest {
        /// The request as given.
        request: String,
        /// What is wrong.
        reason: String,
    },
    /// No CDI spec declares the requested device.
    #[error("no CDI spec in /etc/cdi or /var/run/cdi declares {device}{}; generate one with `nvidia-ctk cdi generate --mode=csv --output=/etc/cdi/nvidia.yaml` (Jetson) or `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (discrete GPU)", broken_note(.broken))]
    NoCdiSpec {
        /// The device asked for, e.g. `nvidia.com/gpu=all`.
        device: String,
        /// Spec files that could not be read or parsed, with the reason.
        broken: Vec<String>,
    },
    /// A spec's device node has other numbers than the live node: the spec is stale.
    #[error("CDI spec {} is stale: it declares {node} as {declared} but the device on this host is {live} (device numbers change across reboots and driver updates); regenerate it: `nvidia-ctk cdi generate --mode=csv --output={}` (drop --mode=csv on a discrete GPU)", .spec.display(), .spec.display())]
    StaleCdi {
        /// Host path of the spec.
        spec: PathBuf,
        /// The node's host path.
        node: String,
        /// What the spec says, e.g. `c 507:0`.
        declared: String,
        /// What the live node is, e.g. `c 498:0`.
        live: String,
    },
    /// A spec names a device node, mount source or hook program that this host does not have.
    #[error("CDI spec {} is stale: {what} {path} does not exist on this host; regenerate it: `nvidia-ctk cdi generate --mode=csv --output={}` (drop --mode=csv on a discrete GPU){}", .spec.display(), .spec.display(), hint_for(.what))]
    CdiMissing {
        /// Host path of the spec.
        spec: PathBuf,
        /// `device node`, `mount source` or `hook program`.
        what: &'static str,
        /// The missing host path.
        path: String,
    },
    /// A spec names a device node path that exists but is not a device.
    #[error("CDI spec {}: {node} is not a device node on this host ({found}); regenerate the spec with `nvidia-ctk cdi generate --output={}` or check the driver", .spec.display(), .spec.display())]
    CdiNotDevice {
        /// Host path of the spec.
        spec: PathBuf,
        /// The node's host path.
        node: String,
        /// What is there instead.
        found: String,
    },
    /// A spec asks for an edit this runtime cannot apply.
    #[error("CDI spec {}: {what} is not supported by jetship's runtime; use gpu.mode = \"csv\" or \"nvidia-runtime\"", .spec.display())]
    CdiUnsupported {
        /// Host path of the spec.
        spec: PathBuf,
        /// The edit, e.g. `hook at prestart`.
        what: String,
    },
    /// No Jetson CSV files on the host.
    #[error("no Jetson CSV files in {dir}: install the NVIDIA container toolkit (`sudo apt install nvidia-container`, part of JetPack) or use gpu.mode = \"cdi\" with a generated spec", dir = csv::CSV_DIR)]
    NoCsv,
    /// CSV files exist but none of the device nodes they list does.
    #[error("the Jetson CSV files ({files}) list {listed} device nodes but none exists under /dev on this host: is the GPU driver (nvgpu) loaded? Check `ls /dev/nvhost* /dev/nvgpu` and `dmesg | grep -i nvgpu`")]
    CsvNoDevices {
        /// The files read.
        files: String,
        /// How many `dev` lines they have.
        listed: usize,
    },
    /// `nvidia-container-runtime` is not installed.
    #[error("nvidia-container-runtime is not installed in {dirs}: install the NVIDIA container toolkit (`sudo apt install nvidia-container-toolkit`)", dirs = crate::os::exec::BIN_DIRS.join(", "))]
    NoNvidiaRuntime,
    /// `auto` found no way to give the container the GPU.
    #[error("no way to give the container the GPU on this host:\n{}\nfix one of them: on a Jetson install the NVIDIA container toolkit (`sudo apt install nvidia-container`, part of JetPack) and run `sudo nvidia-ctk cdi generate --mode=csv --output=/etc/cdi/nvidia.yaml`; on a discrete GPU install the driver and nvidia-container-toolkit and run `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`; or set gpu.mode = \"off\"", .tried.iter().map(|s| format!("  - {}: {}", s.mode, s.reason)).collect::<Vec<_>>().join("\n"))]
    NothingFits {
        /// Each option and why it did not fit.
        tried: Vec<Skipped>,
    },
}

fn broken_note(broken: &[String]) -> String {
    if broken.is_empty() {
        String::new()
    } else {
        format!(" (unusable spec files: {})", broken.join("; "))
    }
}

fn hint_for(what: &str) -> &'static str {
    if what == "hook program" {
        "; or install nvidia-container-toolkit, which provides it"
    } else {
        ""
    }
}

/// Result of this module's fallible operations.
pub type Result<T> = std::result::Result<T, GpuError>;

/// Decides how a container gets the GPU `request` on the host under `root` in `mode`.
///
/// `auto` tries CDI, then CSV, then `nvidia-container-runtime`, recording in [`GpuPlan::skipped`] why each
/// earlier option did not fit; a stale CDI spec is one such reason. The other modes use exactly their method
/// and fail with its error.
pub fn plan_gpu(root: &Path, mode: GpuMode, request: &GpuRequest) -> Result<GpuPlan> {
    let mut warnings = Vec::new();
    if mode != GpuMode::Auto {
        let method = plan_one(root, mode, request, &mut warnings)?;
        return Ok(GpuPlan { method, skipped: Vec::new(), warnings });
    }
    let mut skipped = Vec::new();
    for mode in [GpuMode::Cdi, GpuMode::Csv, GpuMode::NvidiaRuntime] {
        let mut warnings = Vec::new();
        match plan_one(root, mode, request, &mut warnings) {
            Ok(method) => {
                tracing::debug!(%mode, skipped = skipped.len(), "gpu injection chosen");
                return Ok(GpuPlan { method, skipped, warnings });
            }
            Err(e) => skipped.push(Skipped { mode, reason: e.to_string() }),
        }
    }
    Err(GpuError::NothingFits { tried: skipped })
}

/// The method of one concrete mode (not `auto`).
fn plan_one(root: &Path, mode: GpuMode, request: &GpuRequest, warnings: &mut Vec<String>) -> Result<GpuMethod> {
    match mode {
        GpuMode::Off | GpuMode::Auto => Ok(GpuMethod::Off),
        GpuMode::Cdi => plan_cdi(root, request, warnings),
        GpuMode::Csv => plan_csv(root, request, warnings),
        GpuMode::NvidiaRuntime => plan_nvidia_runtime(root, request),
    }
}

/// The live state of a host device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveNode {
    kind: char,
    major: i64,
    minor: i64,
    mode: u32,
}

/// What `stat(2)` says of the host path `host` under `root`: `Ok(None)` when it does not exist,
/// `Err(description)` when it is not a char or block device.
fn live_node(root: &Path, host: &str) -> std::result::Result<Option<LiveNode>, String> {
    let Some(path) = resolve_links(root, host) else {
        return Ok(None);
    };
    let st = match nix::sys::stat::stat(&path) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("cannot stat: {e}")),
    };
    let fmt = st.st_mode & libc::S_IFMT;
    let kind = match fmt {
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFREG => return Err("a regular file".into()),
        libc::S_IFDIR => return Err("a directory".into()),
        _ => return Err("not a char or block device".into()),
    };
    let rdev = st.st_rdev;
    Ok(Some(LiveNode {
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: st.st_mode & 0o7777,
    }))
}

/// The file under `root` that the host path `host` names, following symlinks of the last component inside the
/// root (udev makes e.g. `/dev/v4l2-nvenc` a link to the nvhost node; an absolute target must be read under the
/// host root, not on the agent's own `/`). `None` for a dangling link or a loop.
fn resolve_links(root: &Path, host: &str) -> Option<PathBuf> {
    let mut host = PathBuf::from(host);
    for _ in 0..16 {
        let path = under_root(root, &host.to_string_lossy());
        match std::fs::read_link(&path) {
            Ok(target) => {
                let joined = host.parent().unwrap_or(Path::new("/")).join(target);
                host = crate::os::fsutil::normalize_abs(&joined);
            }
            Err(_) => return Some(path),
        }
    }
    None
}

fn plan_cdi(root: &Path, request: &GpuRequest, warnings: &mut Vec<String>) -> Result<GpuMethod> {
    let (kind, name) = request.cdi_name();
    let mut broken = Vec::new();
    let mut chosen: Option<(PathBuf, cdi::Spec, cdi::Device)> = None;
    for found in cdi::find_specs(root) {
        match found.spec {
            Ok(spec) if spec.kind == kind => {
                // Later directories override earlier ones (/var/run/cdi over /etc/cdi), as in the CDI standard.
                if let Some(device) = spec.device(name).cloned() {
                    chosen = Some((found.path, spec, device));
                }
            }
            Ok(_) => {}
            Err(e) => broken.push(e.to_string()),
        }
    }
    let Some((path, spec, device)) = chosen else {
        return Err(GpuError::NoCdiSpec { device: request.to_string(), broken });
    };
    warnings.extend(broken.into_iter().map(|b| format!("ignored: {b}")));
    let mut edits = DeviceEdits::default();
    // Spec-wide edits first, then the device's, as the CDI reference implementation applies them.
    for ce in [&spec.container_edits, &device.container_edits] {
        cdi_edits(root, &path, ce, &mut edits, warnings)?;
    }
    Ok(GpuMethod::Cdi { spec: path, device: request.to_string(), edits })
}

fn cdi_edits(
    root: &Path,
    spec: &Path,
    ce: &cdi::ContainerEdits,
    edits: &mut DeviceEdits,
    warnings: &mut Vec<String>,
) -> Result<()> {
    edits.env.extend(ce.env.iter().cloned());
    for n in &ce.device_nodes {
        let host = n.host_path.as_deref().unwrap_or(&n.path);
        let live = match live_node(root, host) {
            Ok(Some(live)) => live,
            Ok(None) => {
                return Err(GpuError::CdiMissing { spec: spec.to_owned(), what: "device node", path: host.to_owned() })
            }
            Err(found) => return Err(GpuError::CdiNotDevice { spec: spec.to_owned(), node: host.to_owned(), found }),
        };
        let declared_kind = n.kind.as_deref().and_then(|k| k.chars().next()).unwrap_or(live.kind);
        let stale = declared_kind != live.kind
            || n.major.is_some_and(|m| m != live.major)
            || n.minor.is_some_and(|m| m != live.minor);
        if stale {
            let num = |v: Option<i64>, l: i64| v.map_or_else(|| format!("({l})"), |v| v.to_string());
            return Err(GpuError::StaleCdi {
                spec: spec.to_owned(),
                node: host.to_owned(),
                declared: format!("{declared_kind} {}:{}", num(n.major, live.major), num(n.minor, live.minor)),
                live: format!("{} {}:{}", live.kind, live.major, live.minor),
            });
        }
        edits.push_device(DeviceNode {
            path: PathBuf::from(&n.path),
            kind: live.kind,
            major: live.major,
            minor: live.minor,
            file_mode: Some(n.file_mode.unwrap_or(live.mode & 0o777)),
            access: n.permissions.clone().unwrap_or_else(|| "rwm".into()),
        });
        if n.uid.is_some() || n.gid.is_some() {
            warnings.push(format!(
                "{}: owner of {} in the container is not applied (root owns it)",
                spec.display(),
                n.path
            ));
        }
    }
    for m in &ce.mounts {
        if m.kind.as_deref().is_some_and(|k| k != "bind") {
            return Err(GpuError::CdiUnsupported {
                spec: spec.to_owned(),
                what: format!("mount of type `{}` at {}", m.kind.as_deref().unwrap_or_default(), m.container_path),
            });
        }
        let host = under_root(root, &m.host_path);
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(GpuError::CdiMissing {
                spec: spec.to_owned(),
                what: "mount source",
                path: m.host_path.clone(),
            });
        }
        edits.push_mount(BindMount {
            host,
            container: PathBuf::from(&m.container_path),
            read_only: m.options.iter().any(|o| o == "ro"),
        });
    }
    for h in &ce.hooks {
        if h.hook_name != "createContainer" {
            return Err(GpuError::CdiUnsupported {
                spec: spec.to_owned(),
                what: format!("hook {} at `{}`", h.path, h.hook_name),
            });
        }
        let program = under_root(root, &h.path);
        if !is_executable(&program) {
            return Err(GpuError::CdiMissing { spec: spec.to_owned(), what: "hook program", path: h.path.clone() });
        }
        // CDI's args include argv[0]; HookSpec's do not (the spec builder puts the path there).
        edits.hooks.push(HookSpec {
            path: program,
            args: h.args.iter().skip(1).cloned().collect(),
            env: h.env.clone(),
        });
    }
    if !ce.additional_gids.is_empty() {
        warnings.push(format!("{}: additionalGids {:?} are not applied", spec.display(), ce.additional_gids));
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn plan_csv(root: &Path, request: &GpuRequest, warnings: &mut Vec<String>) -> Result<GpuMethod> {
    let found = csv::find_files(root);
    if found.is_empty() {
        return Err(GpuError::NoCsv);
    }
    let mut files = Vec::new();
    let mut entries = Vec::new();
    for f in found {
        match f.parsed {
            Ok(parsed) => {
                warnings.extend(parsed.warnings(&f.path));
                entries.extend(parsed.entries);
                files.push(f.path);
            }
            Err(e) => warnings.push(format!("cannot read {}: {e}; file skipped", f.path.display())),
        }
    }
    if files.is_empty() {
        return Err(GpuError::NoCsv);
    }
    let edits = csv_edits(root, &entries, warnings);
    if edits.devices.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(GpuError::CsvNoDevices {
            files: names.join(", "),
            listed: entries.iter().filter(|e| e.kind == csv::EntryKind::Dev).count(),
        });
    }
    if !matches!(request.visible_devices(), "all" | "0") {
        warnings.push(format!("CSV mode gives the whole GPU; the request for {request} is served with all of it"));
    }
    Ok(GpuMethod::Csv { files, edits })
}

/// Builds the edits for CSV entries against the host under `root`. Entries the host lacks are skipped (the
/// files list the nodes and libraries of every Jetson variant) and summed up in one warning per kind.
pub fn csv_edits(root: &Path, entries: &[csv::Entry], warnings: &mut Vec<String>) -> DeviceEdits {
    let mut edits = DeviceEdits::default();
    let mut absent: Vec<(&str, String)> = Vec::new();
    let mut lib_dirs: Vec<String> = Vec::new();
    for e in entries {
        match e.kind {
            csv::EntryKind::Dev => {
                let paths =
                    if e.path.contains(['*', '?', '[']) { expand_glob(root, &e.path) } else { vec![e.path.clone()] };
                if paths.is_empty() {
                    absent.push(("device node", e.path.clone()));
                }
                for p in paths {
                    match live_node(root, &p) {
                        Ok(Some(live)) => edits.push_device(DeviceNode {
                            path: PathBuf::from(&p),
                            kind: live.kind,
                            major: live.major,
                            minor: live.minor,
                            file_mode: Some(live.mode & 0o777),
                            access: "rwm".into(),
                        }),
                        Ok(None) => absent.push(("device node", p)),
                        Err(found) => warnings.push(format!("{p} is listed as a device but is {found}; skipped")),
                    }
                }
            }
            csv::EntryKind::Lib | csv::EntryKind::Dir => {
                let host = under_root(root, &e.path);
                let want_dir = e.kind == csv::EntryKind::Dir;
                match std::fs::metadata(&host) {
                    Ok(m) if m.is_dir() == want_dir => {
                        edits.push_mount(BindMount { host, container: PathBuf::from(&e.path), read_only: true });
                        if !want_dir {
                            let dir = Path::new(&e.path).parent().map(|d| d.to_string_lossy().into_owned());
                            if let Some(dir) = dir.filter(|d| !lib_dirs.contains(d)) {
                                lib_dirs.push(dir);
                            }
                        }
                    }
                    Ok(_) => warnings.push(format!(
                        "{} is listed as a {} but is {}; skipped",
                        e.path,
                        if want_dir { "directory" } else { "file" },
                        if want_dir { "a file" } else { "a directory" }
                    )),
                    Err(_) => absent.push((if want_dir { "directory" } else { "library" }, e.path.clone())),
                }
            }
            csv::EntryKind::Sym => match std::fs::read_link(under_root(root, &e.path)) {
                Ok(target) => {
                    let link = PathBuf::from(&e.path);
                    if !edits.symlinks.iter().any(|s| s.link == link) {
                        edits.symlinks.push(Symlink { link, target });
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => absent.push(("symlink", e.path.clone())),
                Err(_) => warnings.push(format!("{} is listed as a symlink but is not one; skipped", e.path)),
            },
        }
    }
    for (what, plural) in [
        ("device node", "device nodes"),
        ("library", "libraries"),
        ("directory", "directories"),
        ("symlink", "symlinks"),
    ] {
        let list: Vec<&str> = absent.iter().filter(|(w, _)| *w == what).map(|(_, p)| p.as_str()).collect();
        if !list.is_empty() {
            warnings.push(format!(
                "{plural} listed in the CSV files but not on this host were skipped ({}; the files cover every Jetson model): {}",
                list.len(),
                list.join(", ")
            ));
        }
    }
    if !lib_dirs.is_empty() {
        let mut args = vec!["-c".to_string(), LDCACHE_SCRIPT.to_string(), "jetship-ldcache".to_string()];
        args.extend(lib_dirs);
        edits.hooks.push(HookSpec { path: PathBuf::from("/bin/sh"), args, env: vec![HOOK_PATH_ENV.to_string()] });
    }
    edits
}

/// The host paths matching a `dev` glob such as `/dev/dri/card*` under `root`, sorted.
fn expand_glob(root: &Path, pattern: &str) -> Vec<String> {
    let prefix = glob::Pattern::escape(&root.to_string_lossy());
    let full = format!("{}/{}", prefix.trim_end_matches('/'), pattern.trim_start_matches('/'));
    let Ok(paths) = glob::glob(&full) else {
        return Vec::new();
    };
    let mut out: Vec<String> = paths
        .filter_map(|p| p.ok())
        .filter_map(|p| p.strip_prefix(root).ok().map(|rel| format!("/{}", rel.to_string_lossy())))
        .collect();
    out.sort();
    out
}

fn plan_nvidia_runtime(root: &Path, request: &GpuRequest) -> Result<GpuMethod> {
    // The runtime is run from the agent's view of the host: the path under the host root.
    let runtime_path = crate::os::exec::find_program(root, "nvidia-container-runtime", crate::os::exec::BIN_DIRS)
        .map(|p| under_root(root, &p.to_string_lossy()))
        .ok_or(GpuError::NoNvidiaRuntime)?;
    Ok(GpuMethod::NvidiaRuntime {
        runtime_path,
        env: vec![format!("NVIDIA_VISIBLE_DEVICES={}", request.visible_devices())],
    })
}

/// Creates `symlinks` in the container root file system `rootfs` (CSV `sym` lines; the bundle builder calls
/// this before starting the container). Each parent directory is created as needed; an existing symlink at
/// the link path is replaced, anything else there is kept with a warning (the image ships its own file).
/// A path whose existing parents include a symlink is refused with a warning: following an image's symlink
/// from outside the container could write outside its root file system.
pub fn create_symlinks(rootfs: &Path, symlinks: &[Symlink], warnings: &mut Vec<String>) -> std::io::Result<()> {
    for s in symlinks {
        let mut dir = rootfs.to_path_buf();
        let rel: Vec<_> = s.link.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        let Some((name, parents)) = rel.split_last() else {
            continue;
        };
        if s.link.components().any(|c| c == Component::ParentDir) {
            warnings.push(format!("symlink {} has `..` in its path; skipped", s.link.display()));
            continue;
        }
        let mut safe = true;
        for p in parents {
            dir.push(p);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    safe = false;
                    break;
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    safe = false;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
                Err(e) => return Err(e),
            }
        }
        if !safe {
            warnings.push(format!(
                "symlink {}: a parent in the image is a symlink or a file; not created",
                s.link.display()
            ));
            continue;
        }
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)?,
            Ok(_) => {
                warnings.push(format!("{} exists in the image and is not a symlink; kept", s.link.display()));
                continue;
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&s.target, &link)?;
    }
    Ok(())
}

/// Whether `path` under `root` is a Unix socket itself (not a symlink to one) owned by root: used for
/// `/tmp/argus_socket`, which lies in a directory every user can write.
pub(crate) fn is_socket(root: &Path, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(under_root(root, path)).is_ok_and(|m| m.file_type().is_socket() && m.uid() == 0)
}

/// Lists the device paths of `edits` (handy for logs and tests).
pub fn device_paths(edits: &DeviceEdits) -> BTreeSet<String> {
    edits.devices.iter().map(|d| d.path.to_string_lossy().into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn modes_parse_from_config_words() {
        #[derive(Deserialize)]
        struct W {
            mode: GpuMode,
        }
        for (text, want) in [
            ("auto", GpuMode::Auto),
            ("cdi", GpuMode::Cdi),
            ("csv", GpuMode::Csv),
            ("nvidia-runtime", GpuMode::NvidiaRuntime),
            ("off", GpuMode::Off),
        ] {
            let w: W = toml::from_str(&format!("mode = \"{text}\"")).unwrap();
            assert_eq!(w.mode, want);
            assert_eq!(want.to_string(), text);
        }
        assert!(toml::from_str::<W>("mode = \"nvidia_runtime\"").is_err());
        assert_eq!(GpuMode::default(), GpuMode::Auto);
    }

    #[test]
    fn requests_parse_all_qualified_and_bare_names() {
        assert_eq!(GpuRequest::parse("all").unwrap(), GpuRequest::All);
        assert_eq!(GpuRequest::parse("nvidia.com/gpu=all").unwrap(), GpuRequest::All);
        let zero = GpuRequest::parse(" nvidia.com/gpu=0 ").unwrap();
        assert_eq!(zero, GpuRequest::Named { kind: "nvidia.com/gpu".into(), name: "0".into() });
        assert_eq!(GpuRequest::parse("0").unwrap(), zero);
        assert_eq!(zero.to_string(), "nvidia.com/gpu=0");
        assert_eq!(zero.visible_devices(), "0");
        let mig = GpuRequest::parse("nvidia.com/mig=1:0").unwrap();
        assert_eq!(mig.cdi_name(), ("nvidia.com/mig", "1:0"));
        for bad in ["", "gpu=0", "nvidia.com/gpu=", "nvidia.com/gpu=-x", "a b", "/x=0"] {
            let err = GpuRequest::parse(bad).unwrap_err();
            assert!(matches!(err, GpuError::BadRequest { .. }), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn create_symlinks_makes_parents_and_refuses_symlinked_parents() {
        let rootfs = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), rootfs.path().join("escape")).unwrap();
        std::fs::create_dir_all(rootfs.path().join("usr/lib")).unwrap();
        std::fs::write(rootfs.path().join("usr/lib/own.so"), "image's").unwrap();
        std::os::unix::fs::symlink("old", rootfs.path().join("usr/lib/replace.so")).unwrap();
        let links = [
            Symlink { link: "/usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1".into(), target: "libcuda.so.1.1".into() },
            Symlink { link: "/escape/libcuda.so".into(), target: "x".into() },
            Symlink { link: "/usr/lib/own.so".into(), target: "x".into() },
            Symlink { link: "/usr/lib/replace.so".into(), target: "new".into() },
        ];
        let mut w = Vec::new();
        create_symlinks(rootfs.path(), &links, &mut w).unwrap();
        let made = rootfs.path().join("usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1");
        assert_eq!(std::fs::read_link(made).unwrap(), Path::new("libcuda.so.1.1"));
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing written through a symlink");
        assert_eq!(std::fs::read_to_string(rootfs.path().join("usr/lib/own.so")).unwrap(), "image's");
        assert_eq!(std::fs::read_link(rootfs.path().join("usr/lib/replace.so")).unwrap(), Path::new("new"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("/escape/libcuda.so") && w[1].contains("/usr/lib/own.so"), "{w:?}");
    }

    #[test]
    fn nothing_fits_lists_every_reason_and_the_fix() {
        let err = GpuError::NothingFits {
            tried: vec![
                Skipped { mode: GpuMode::Cdi, reason: "no spec".into() },
                Skipped { mode: GpuMode::Csv, reason: "no csv".into() },
            ],
        };
        let msg = err.to_string();
        assert!(msg.contains("  - cdi: no spec\n  - csv: no csv"), "{msg}");
        assert!(msg.contains("nvidia-ctk cdi generate --mode=csv --output=/etc/cdi/nvidia.yaml"), "{msg}");
        assert!(msg.contains("gpu.mode = \"off\""), "{msg}");
    }
}
