//! The host probe: which Jetson (or which generic Linux host) this is, its L4T/JetPack release, and what it offers
//! to containers (GPU injection options, container runtimes, cameras).
//!
//! Everything is read under the configured host root so tests run against fixture trees; only the state dir's
//! disk is measured on the real file system, since that is where the agent writes. The probe never spawns a
//! process and never fails as a whole: unreadable or malformed inputs leave a field empty and add a warning. It
//! must not write anything. Parsing of CDI specs, CSV files and cameras lives in [`crate::host::devices`]; the L4T
//! rules in [`crate::host::l4t`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod docker;
mod inventory;

use docker::find_docker;
pub use inventory::{read_power_modes, Installed, Inventory, PowerModeName, PowerModes};

pub use crate::host::devices::cameras::Camera;
use crate::host::devices::{cameras, cdi, csv, read_regular};
use crate::host::l4t::{self, L4tVersion, SoftwareStack};
use crate::os::exec::{find_program, BIN_DIRS};
use crate::os::fsutil::under_root;

/// Version of the `jetship probe --json` schema (also the MQTT `host` payload). Bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The CDI kind whose specs the probe reports.
pub(crate) const NVIDIA_GPU_KIND: &str = "nvidia.com/gpu";

/// Everything the probe found. Field names are a public contract: see docs/probe.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// `jetson` or `generic-linux`.
    pub kind: HostKind,
    /// The L4T release and where it was read; `None` off Jetson or when no source gave it.
    pub l4t: Option<L4tInfo>,
    /// JetPack release (`6.2`), `unknown` for an L4T release not in the table, `None` without an L4T release.
    pub jetpack: Option<String>,
    /// JetPack major version (6), also for an L4T release not in the table.
    pub jetpack_major: Option<u32>,
    /// Ubuntu/CUDA/cuDNN/TensorRT versions the L4T release ships.
    pub stack: SoftwareStack,
    /// Device-tree model with the trailing NUL stripped.
    pub model: Option<String>,
    /// SoC from `compatible`: `tegra234`, `tegra194`, `tegra210`.
    pub soc: Option<String>,
    /// Module part number from `compatible`, e.g. `p3767-0005`, with `-super` on JetPack 6.2 super trees.
    pub module: Option<String>,
    /// CUDA compute capability of the SoC's GPU, e.g. `8.7`.
    pub cuda_arch: Option<String>,
    /// Kernel release (`/proc/sys/kernel/osrelease`), e.g. `5.15.148-tegra`.
    pub kernel: Option<String>,
    /// Machine architecture (`aarch64`, `x86_64`); how it is derived for a non-`/` root: docs/probe.md.
    pub arch: String,
    /// Number of CPUs present.
    pub cpus: Option<u32>,
    /// Total memory (`MemTotal`) in bytes; on Jetson the GPU shares it.
    pub memory_bytes: Option<u64>,
    /// Space on the file system holding the agent's state dir.
    pub state_dir_disk: Option<DiskSpace>,
    /// What the host offers for putting the GPU into a container.
    pub gpu: GpuOptions,
    /// Container runtimes found.
    pub runtimes: Runtimes,
    /// V4L2 video nodes.
    pub cameras: Vec<Camera>,
    /// Serial number and the module's part number.
    #[serde(default)]
    pub inventory: Inventory,
    /// CUDA, cuDNN, TensorRT, VPI, OpenCV and JetPack as dpkg lists them installed (`stack` is what the L4T
    /// release ships; this is what is there).
    #[serde(default)]
    pub installed: Installed,
    /// The nvpmodel modes and the default; `None` without /etc/nvpmodel.conf.
    #[serde(default)]
    pub power_modes: Option<PowerModes>,
    /// Problems met while probing (malformed files, unreadable nodes). The probe still returns what it could.
    pub warnings: Vec<String>,
}

/// What kind of host this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// An NVIDIA Jetson running L4T.
    Jetson,
    /// Any other Linux host.
    GenericLinux,
}

/// The L4T release and where it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4tInfo {
    /// The release, serialized as `36.4.3`.
    pub version: L4tVersion,
    /// `env` (L4T_VERSION), `nv_tegra_release` or `dpkg`.
    pub source: String,
}

/// Size and free space of a file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// The directory measured: the state dir, or its nearest existing ancestor before the agent created it.
    pub path: PathBuf,
    /// File-system size in bytes.
    pub total_bytes: u64,
    /// Bytes available to an unprivileged writer.
    pub available_bytes: u64,
}

/// What the host offers for putting the GPU into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuOptions {
    /// CDI spec files declaring kind `nvidia.com/gpu` (host paths), with their device names.
    pub cdi_specs: Vec<CdiSpecInfo>,
    /// Jetson CSV files in /etc/nvidia-container-runtime/host-files-for-container.d (host paths).
    pub csv_files: Vec<CsvFileInfo>,
    /// The nvidia-container-runtime binary, if installed.
    pub nvidia_container_runtime: Option<PathBuf>,
}

/// A usable CDI spec for the NVIDIA GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdiSpecInfo {
    /// Host path, e.g. `/etc/cdi/nvidia.yaml`.
    pub path: PathBuf,
    /// `nvidia.com/gpu`.
    pub kind: String,
    /// The spec's `cdiVersion`.
    pub cdi_version: String,
    /// Device names, e.g. `0`, `all` (a container asks for `nvidia.com/gpu=all`).
    pub devices: Vec<String>,
}

/// A Jetson CSV file and how many valid entries of each kind it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvFileInfo {
    /// Host path.
    pub path: PathBuf,
    /// `dev` lines (device nodes or globs).
    pub dev: usize,
    /// `dir` lines.
    pub dir: usize,
    /// `lib` lines.
    pub lib: usize,
    /// `sym` lines.
    pub sym: usize,
    /// Lines skipped as invalid (each also in `warnings`).
    pub invalid: usize,
}

/// Container runtimes found on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtimes {
    /// The crun binary (host path).
    pub crun: Option<PathBuf>,
    /// The runc binary (host path).
    pub runc: Option<PathBuf>,
    /// The conmon binary (host path).
    pub conmon: Option<PathBuf>,
    /// The Docker engine's socket.
    pub docker: Option<DockerInfo>,
}

/// A Docker engine socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerInfo {
    /// Host path of the socket.
    pub socket: PathBuf,
    /// Engine version when the socket answered `GET /version`.
    pub version: Option<String>,
    /// Engine API version when the socket answered.
    pub api_version: Option<String>,
}

/// Probes the host under `root`; `state_dir` is the agent's state dir (host path) whose disk is reported.
/// Honours `L4T_VERSION` (and, when `root` is `/`, `DOCKER_HOST`) from the environment.
pub fn probe(root: &Path, state_dir: &Path) -> HostFacts {
    let env = Env { l4t_version: std::env::var("L4T_VERSION").ok(), docker_host: std::env::var("DOCKER_HOST").ok() };
    probe_with(root, state_dir, &env)
}

/// The environment variables the probe honours, passed in so tests need not touch process-global state.
#[derive(Debug, Default)]
struct Env {
    l4t_version: Option<String>,
    docker_host: Option<String>,
}

fn probe_with(root: &Path, state_dir: &Path, env: &Env) -> HostFacts {
    let mut warnings = Vec::new();
    let w = &mut warnings;
    let real_root = root.canonicalize().is_ok_and(|p| p == Path::new("/"));

    let model = read_model(root, w);
    let compatible = read_compatible(root, w);
    let soc = soc_from_compatible(&compatible);
    let module = module_from_compatible(&compatible);
    let cuda_arch = soc.as_deref().and_then(cuda_arch_for).map(str::to_owned);
    let family = read_text(root, "/sys/devices/soc0/family", w);
    let tegra_family = family.as_deref().is_some_and(|f| f.to_ascii_lowercase().starts_with("tegra"));

    let release_path = under_root(root, "/etc/nv_tegra_release");
    let has_release = release_path.exists();
    // dpkg's status file is a few MiB on a full JetPack install.
    let dpkg = read_regular(&under_root(root, "/var/lib/dpkg/status"), 64 * 1024 * 1024).ok();
    let file_l4t = read_l4t_files(root, dpkg.as_deref(), w);
    let kind =
        if has_release || file_l4t.is_some() || tegra_family { HostKind::Jetson } else { HostKind::GenericLinux };
    let l4t = choose_l4t(kind, file_l4t, env.l4t_version.as_deref(), w);
    if kind == HostKind::Jetson && l4t.is_none() {
        let why = if has_release { "/etc/nv_tegra_release exists" } else { "/sys/devices/soc0/family says tegra" };
        w.push(format!(
            "this host is a Jetson ({why}) but no L4T release was found in /etc/nv_tegra_release or dpkg's \
             nvidia-l4t-core; set L4T_VERSION (e.g. L4T_VERSION=36.4.3) to pick images"
        ));
    }
    let jetpack = l4t.as_ref().map(|i| i.version.jetpack().unwrap_or("unknown").to_owned());
    if let Some(info) = l4t.as_ref().filter(|i| i.version.jetpack().is_none()) {
        w.push(format!(
            "L4T {} is not in jetship's JetPack table: jetpack is `unknown`, image choice uses the L4T version only",
            info.version
        ));
    }
    let jetpack_major = l4t.as_ref().and_then(|i| i.version.jetpack_major());
    let stack = l4t.as_ref().map(|i| i.version.stack()).unwrap_or_default();

    let kernel = read_text(root, "/proc/sys/kernel/osrelease", w);
    let arch = host_arch(real_root, kind, kernel.as_deref(), root, w);
    let cpus = read_cpus(root, w);
    let memory_bytes = read_mem_total(root, w);
    let state_dir_disk = disk_space(state_dir, w);
    let gpu = gpu_options(root, w);
    let runtimes = find_runtimes(root, real_root, env.docker_host.as_deref());
    let cameras = cameras::discover(root, w);
    let inventory = inventory::read_inventory(root, w);
    let installed = dpkg.as_deref().map(|t| inventory::installed_from_dpkg(t, w)).unwrap_or_default();
    let power_modes = inventory::read_power_modes(root, w);

    HostFacts {
        schema: SCHEMA_VERSION,
        kind,
        l4t,
        jetpack,
        jetpack_major,
        stack,
        model,
        soc,
        module,
        cuda_arch,
        kernel,
        arch,
        cpus,
        memory_bytes,
        state_dir_disk,
        gpu,
        runtimes,
        cameras,
        inventory,
        installed,
        power_modes,
        warnings,
    }
}

/// Reads a one-line text file under the root. Missing files are normal (`None`, no warning); a file holding
/// non-text bytes gives `None` and a warning naming it.
fn read_text(root: &Path, abs: &str, w: &mut Vec<String>) -> Option<String> {
    let raw = read_regular(&under_root(root, abs), 4096).ok()?;
    clean_text(&raw, abs, w)
}

/// Strips trailing NULs and whitespace; rejects text with control characters or invalid UTF-8.
fn clean_text(raw: &str, abs: &str, w: &mut Vec<String>) -> Option<String> {
    let s = raw.trim_end_matches(['\0', '\n', '\r', ' ', '\t']).trim_start();
    if s.is_empty() {
        return None;
    }
    if s.contains('\u{fffd}') || s.chars().any(char::is_control) {
        w.push(format!("{abs} holds non-text bytes; ignored"));
        return None;
    }
    Some(s.to_owned())
}

fn read_model(root: &Path, w: &mut Vec<String>) -> Option<String> {
    read_text(root, "/proc/device-tree/model", w)
}

/// The NUL-separated entries of the device tree's `compatible`; entries that are not plain text are dropped
/// with one warning.
fn read_compatible(root: &Path, w: &mut Vec<String>) -> Vec<String> {
    let Ok(raw) = read_regular(&under_root(root, "/proc/device-tree/compatible"), 4096) else {
        return Vec::new();
    };
    let mut bad = false;
    let entries = raw
        .split('\0')
        .filter(|e| !e.is_empty())
        .filter(|e| {
            let ok = e.chars().all(|c| c.is_ascii_graphic());
            bad |= !ok;
            ok
        })
        .map(str::to_owned)
        .collect();
    if bad {
        w.push("/proc/device-tree/compatible holds non-text bytes; those entries are ignored".into());
    }
    entries
}

/// `tegra234` from `nvidia,tegra234`.
fn soc_from_compatible(compatible: &[String]) -> Option<String> {
    compatible.iter().find_map(|e| {
        let v = e.strip_prefix("nvidia,")?;
        let digits = v.strip_prefix("tegra")?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
    })
}

/// The module part number: a standalone module entry (`nvidia,p3767-0005-super`) wins; otherwise the part after
/// `+` of a carrier+module entry (`nvidia,p3449-0000-b00+p3448-0000-b00` -> `p3448-0000`). Board revision
/// suffixes such as `-b00` are dropped; `-super` is kept since it changes power modes and clocks.
fn module_from_compatible(compatible: &[String]) -> Option<String> {
    let values = || compatible.iter().filter_map(|e| e.strip_prefix("nvidia,"));
    values()
        .filter(|v| !v.contains('+'))
        .find_map(module_token)
        .or_else(|| values().filter_map(|v| v.rsplit_once('+')).find_map(|(_, m)| module_token(m)))
}

fn module_token(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let shape = b.len() >= 10
        && b[0] == b'p'
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b'-'
        && b[6..10].iter().all(u8::is_ascii_digit);
    if !shape {
        return None;
    }
    let (base, rest) = v.split_at(10);
    match rest {
        "" => Some(base.to_owned()),
        "-super" => Some(v.to_owned()),
        r if r.starts_with('-') => Some(base.to_owned()),
        _ => None,
    }
}

/// CUDA compute capability of a Tegra SoC's integrated GPU.
pub(crate) fn cuda_arch_for(soc: &str) -> Option<&'static str> {
    match soc {
        "tegra234" => Some("8.7"),
        "tegra194" => Some("7.2"),
        "tegra186" => Some("6.2"),
        "tegra210" => Some("5.3"),
        _ => None,
    }
}

/// The L4T release from the host's files: `/etc/nv_tegra_release`, else dpkg's `nvidia-l4t-core`.
fn read_l4t_files(root: &Path, dpkg: Option<&str>, w: &mut Vec<String>) -> Option<L4tInfo> {
    match read_regular(&under_root(root, "/etc/nv_tegra_release"), 64 * 1024) {
        Ok(text) => match l4t::parse_nv_tegra_release(&text) {
            Ok(version) => return Some(L4tInfo { version, source: "nv_tegra_release".into() }),
            Err(e) => w.push(format!("/etc/nv_tegra_release: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => w.push(format!("/etc/nv_tegra_release: cannot read: {e}; trying dpkg's nvidia-l4t-core")),
    }
    l4t::parse_dpkg_status(dpkg?).map(|version| L4tInfo { version, source: "dpkg".into() })
}

/// Applies the `L4T_VERSION` override. It only replaces the version of a Jetson: on another host it would make
/// the agent inject a GPU that is not there, so it is ignored with a warning.
fn choose_l4t(kind: HostKind, from_files: Option<L4tInfo>, env: Option<&str>, w: &mut Vec<String>) -> Option<L4tInfo> {
    let Some(value) = env.map(str::trim).filter(|v| !v.is_empty()) else {
        return from_files;
    };
    if kind != HostKind::Jetson {
        w.push(format!("L4T_VERSION={value} ignored: this host is not a Jetson"));
        return from_files;
    }
    match l4t::parse_override(value) {
        Ok(version) => Some(L4tInfo { version, source: "env".into() }),
        Err(e) => {
            let using = match &from_files {
                Some(i) => format!("using L4T {} from {}", i.version, i.source),
                None => "no L4T release is known".into(),
            };
            w.push(format!("L4T_VERSION ignored: {e}; {using}"));
            from_files
        }
    }
}

/// The machine architecture. For the real root (`/`) it is the architecture this binary runs as. For another
/// root (a fixture tree, or a host root mounted into a container) it is derived from the tree: every Jetson with
/// L4T R32 or later is `aarch64`; otherwise the kernel release's suffix tells (`-amd64`/`x86_64` -> `x86_64`,
/// `-arm64`/`aarch64`/`-tegra` -> `aarch64`); failing that, this binary's architecture with a warning.
fn host_arch(real_root: bool, kind: HostKind, kernel: Option<&str>, root: &Path, w: &mut Vec<String>) -> String {
    let running = std::env::consts::ARCH.to_owned();
    if real_root {
        return running;
    }
    if kind == HostKind::Jetson {
        return "aarch64".into();
    }
    if let Some(k) = kernel {
        let k = k.to_ascii_lowercase();
        if k.contains("amd64") || k.contains("x86_64") {
            return "x86_64".into();
        }
        if k.contains("arm64") || k.contains("aarch64") || k.contains("tegra") {
            return "aarch64".into();
        }
    }
    w.push(format!("cannot tell the architecture of the host tree {}; reporting {running}", root.display()));
    running
}

/// CPUs present (`/sys/devices/system/cpu/present`, else `possible`), counted from a list like `0-3,6`.
fn read_cpus(root: &Path, w: &mut Vec<String>) -> Option<u32> {
    for file in ["/sys/devices/system/cpu/present", "/sys/devices/system/cpu/possible"] {
        let Ok(text) = read_regular(&under_root(root, file), 4096) else {
            continue;
        };
        match count_cpu_list(text.trim()) {
            Some(n) => return Some(n),
            None => w.push(format!("{file}: `{}` is not a CPU list like 0-5", text.trim().escape_debug())),
        }
    }
    None
}

fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if b < a || b > 65535 {
            return None;
        }
        n = n.checked_add(b - a + 1)?;
    }
    (n > 0).then_some(n)
}

/// `MemTotal` of `/proc/meminfo` in bytes.
fn read_mem_total(root: &Path, w: &mut Vec<String>) -> Option<u64> {
    let text = read_regular(&under_root(root, "/proc/meminfo"), 64 * 1024).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"));
    let kib = line.and_then(|l| l.trim().strip_suffix("kB")).and_then(|n| n.trim().parse::<u64>().ok());
    if kib.is_none() {
        w.push("/proc/meminfo has no readable `MemTotal: <n> kB` line".into());
    }
    kib.and_then(|k| k.checked_mul(1024))
}

/// statvfs of the state dir, or of its nearest existing ancestor when the agent has not created it yet.
// c_ulong and fsblkcnt_t are 32-bit on 32-bit targets: the conversions are only useless on 64-bit ones.
#[allow(clippy::useless_conversion)]
fn disk_space(state_dir: &Path, w: &mut Vec<String>) -> Option<DiskSpace> {
    let dir = state_dir.ancestors().find(|p| p.exists())?;
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let frag = u64::from(s.fragment_size());
            Some(DiskSpace {
                path: dir.to_owned(),
                total_bytes: u64::from(s.blocks()).saturating_mul(frag),
                available_bytes: u64::from(s.blocks_available()).saturating_mul(frag),
            })
        }
        Err(e) => {
            w.push(format!("cannot measure the disk of state dir {}: {e}", dir.display()));
            None
        }
    }
}

fn gpu_options(root: &Path, w: &mut Vec<String>) -> GpuOptions {
    let mut gpu = GpuOptions::default();
    for found in cdi::find_specs(root) {
        match found.spec {
            Ok(spec) if spec.kind == NVIDIA_GPU_KIND => gpu.cdi_specs.push(CdiSpecInfo {
                path: found.path,
                kind: spec.kind.clone(),
                cdi_version: spec.cdi_version.clone(),
                devices: spec.device_names(),
            }),
            Ok(_) => {} // another vendor's devices
            Err(e) => w.push(e.to_string()),
        }
    }
    for found in csv::find_files(root) {
        match found.parsed {
            Ok(parsed) => {
                w.extend(parsed.warnings(&found.path));
                gpu.csv_files.push(CsvFileInfo {
                    dev: parsed.count(csv::EntryKind::Dev),
                    dir: parsed.count(csv::EntryKind::Dir),
                    lib: parsed.count(csv::EntryKind::Lib),
                    sym: parsed.count(csv::EntryKind::Sym),
                    invalid: parsed.invalid.len(),
                    path: found.path,
                });
            }
            Err(e) => w.push(format!("cannot read {}: {e}", found.path.display())),
        }
    }
    gpu.nvidia_container_runtime = find_program(root, "nvidia-container-runtime", BIN_DIRS);
    gpu
}

const CONMON_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/libexec/podman"];

fn find_runtimes(root: &Path, real_root: bool, docker_host: Option<&str>) -> Runtimes {
    Runtimes {
        crun: find_program(root, "crun", BIN_DIRS),
        runc: find_program(root, "runc", BIN_DIRS),
        conmon: find_program(root, "conmon", CONMON_DIRS),
        docker: find_docker(root, real_root, docker_host),
    }
}

impl HostFacts {
    /// The human-readable form printed by `jetship probe`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let none = "-".to_string();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| none.clone());
        let mut row = |k: &str, v: String| out.push_str(&format!("{:<12} {v}\n", format!("{k}:")));
        row(
            "host",
            match self.kind {
                HostKind::Jetson => "jetson".into(),
                HostKind::GenericLinux => "generic linux".into(),
            },
        );
        row("model", opt(&self.model));
        row("module", format!("{}  soc {}  cuda arch {}", opt(&self.module), opt(&self.soc), opt(&self.cuda_arch)));
        row(
            "l4t",
            match &self.l4t {
                Some(l) => format!("{} (from {})", l.version, l.source),
                None => none.clone(),
            },
        );
        row("jetpack", opt(&self.jetpack));
        let s = &self.stack;
        row(
            "stack",
            format!(
                "ubuntu {}  cuda {}  cudnn {}  tensorrt {}",
                opt(&s.ubuntu),
                opt(&s.cuda),
                opt(&s.cudnn),
                opt(&s.tensorrt)
            ),
        );
        let i = &self.installed;
        if [&i.cuda, &i.cudnn, &i.tensorrt, &i.vpi, &i.opencv, &i.jetpack].iter().any(|v| v.is_some()) {
            row(
                "installed",
                format!(
                    "cuda {}  cudnn {}  tensorrt {}  vpi {}  opencv {}  jetpack {}",
                    opt(&i.cuda),
                    opt(&i.cudnn),
                    opt(&i.tensorrt),
                    opt(&i.vpi),
                    opt(&i.opencv),
                    opt(&i.jetpack)
                ),
            );
        }
        let inv = &self.inventory;
        if inv.serial_number.is_some() || inv.part_number.is_some() {
            let part = match (&inv.part_number, &inv.part_module) {
                (Some(p), Some(m)) => format!("{p} ({m})"),
                (Some(p), None) => p.clone(),
                _ => none.clone(),
            };
            row("serial", format!("{}  part {part}", opt(&inv.serial_number)));
        }
        row("kernel", format!("{}  arch {}", opt(&self.kernel), self.arch));
        row("cpus", self.cpus.map_or(none.clone(), |c| c.to_string()));
        row("memory", self.memory_bytes.map_or(none.clone(), |b| format!("{:.1} GiB", b as f64 / GIB)));
        if let Some(m) = &self.power_modes {
            row("power modes", if m.modes.is_empty() { none.clone() } else { m.list() });
        }
        row(
            "disk",
            match &self.state_dir_disk {
                Some(d) => format!(
                    "{:.1} GiB free of {:.1} GiB ({})",
                    d.available_bytes as f64 / GIB,
                    d.total_bytes as f64 / GIB,
                    d.path.display()
                ),
                None => none.clone(),
            },
        );
        let gpu = &self.gpu;
        if gpu.cdi_specs.is_empty() && gpu.csv_files.is_empty() && gpu.nvidia_container_runtime.is_none() {
            row("gpu", "none (no CDI spec, no CSV files, no nvidia-container-runtime)".into());
        }
        for spec in &gpu.cdi_specs {
            row("gpu cdi", format!("{} ({}: {})", spec.path.display(), spec.kind, spec.devices.join(", ")));
        }
        for f in &gpu.csv_files {
            let invalid = if f.invalid > 0 { format!(", {} invalid", f.invalid) } else { String::new() };
            row(
                "gpu csv",
                format!("{} (dev {}, dir {}, lib {}, sym {}{invalid})", f.path.display(), f.dev, f.dir, f.lib, f.sym),
            );
        }
        if let Some(p) = &gpu.nvidia_container_runtime {
            row("gpu runtime", p.display().to_string());
        }
        let r = &self.runtimes;
        let found: Vec<String> = [("crun", &r.crun), ("runc", &r.runc), ("conmon", &r.conmon)]
            .iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| format!("{n} {}", p.display())))
            .collect();
        row("runtimes", if found.is_empty() { none.clone() } else { found.join(", ") });
        if let Some(d) = &r.docker {
            row(
                "docker",
                format!("{} (version {})", d.socket.display(), d.version.as_deref().unwrap_or("unknown: no answer")),
            );
        }
        if self.cameras.is_empty() {
            row("cameras", none.clone());
        }
        for c in &self.cameras {
            let role = if c.capture { "capture" } else { "metadata" };
            let mut line = format!(
                "{} {role} \"{}\" [{}] {}",
                c.node.display(),
                c.name.as_deref().unwrap_or("?"),
                c.detected_by,
                c.interface.name()
            );
            for l in c.by_id.iter().chain(&c.by_path) {
                line.push_str(&format!("\n{:<13}{}", "", l.display()));
            }
            row("camera", line);
        }
        for warning in &self.warnings {
            row("warning", warning.clone());
        }
        out
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn module_and_soc_from_compatible() {
        let super_tree = strings(&["nvidia,p3768-0000+p3767-0005-super", "nvidia,p3767-0005-super", "nvidia,tegra234"]);
        assert_eq!(module_from_compatible(&super_tree).as_deref(), Some("p3767-0005-super"));
        assert_eq!(soc_from_compatible(&super_tree).as_deref(), Some("tegra234"));
        let nano = strings(&["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"]);
        assert_eq!(module_from_compatible(&nano).as_deref(), Some("p3448-0000"));
        assert_eq!(soc_from_compatible(&nano).as_deref(), Some("tegra210"));
        let x86 = strings(&["acme,board", "nvidia,tegra", "nvidia,tegraX1"]);
        assert_eq!(module_from_compatible(&x86), None);
        assert_eq!(soc_from_compatible(&x86), None);
        assert_eq!(module_token("p3767-0005x"), None);
        assert_eq!(cuda_arch_for("tegra194"), Some("7.2"));
        assert_eq!(cuda_arch_for("tegra999"), None);
    }

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(count_cpu_list("0-5"), Some(6));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        for bad in ["", "5-3", "a-b", "0-", "0-99999999", "0,,1"] {
            assert_eq!(count_cpu_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn l4t_override_applies_only_on_jetson_and_only_when_valid() {
        let file = Some(L4tInfo { version: L4tVersion::new(35, 4, 1), source: "nv_tegra_release".into() });
        let mut w = Vec::new();
        let got = choose_l4t(HostKind::Jetson, file.clone(), Some("36.4.3"), &mut w).unwrap();
        assert_eq!((got.version, got.source.as_str(), w.len()), (L4tVersion::new(36, 4, 3), "env", 0));
        assert_eq!(choose_l4t(HostKind::Jetson, file.clone(), Some("banana"), &mut w), file);
        assert!(w[0].contains("L4T_VERSION ignored") && w[0].contains("banana"), "{w:?}");
        assert_eq!(choose_l4t(HostKind::GenericLinux, None, Some("36.4.3"), &mut w), None);
        assert!(w[1].contains("not a Jetson"), "{w:?}");
        assert_eq!(choose_l4t(HostKind::Jetson, file.clone(), Some("  "), &mut w), file);
    }

    #[test]
    fn clean_text_strips_nul_and_rejects_garbage() {
        let mut w = Vec::new();
        assert_eq!(
            clean_text("NVIDIA Jetson Nano Developer Kit\0", "/m", &mut w).as_deref(),
            Some("NVIDIA Jetson Nano Developer Kit")
        );
        assert_eq!(clean_text("\0", "/m", &mut w), None);
        assert!(w.is_empty());
        assert_eq!(clean_text("ab\u{fffd}\u{1}c", "/m", &mut w), None);
        assert_eq!(w, ["/m holds non-text bytes; ignored"]);
    }

    #[test]
    fn arch_rule_for_fixture_roots() {
        let mut w = Vec::new();
        let r = Path::new("/fx");
        assert_eq!(host_arch(false, HostKind::Jetson, None, r, &mut w), "aarch64");
        assert_eq!(host_arch(false, HostKind::GenericLinux, Some("6.1.0-18-amd64"), r, &mut w), "x86_64");
        assert_eq!(host_arch(false, HostKind::GenericLinux, Some("6.8.0-1012-raspi-arm64"), r, &mut w), "aarch64");
        assert!(w.is_empty());
        assert_eq!(host_arch(false, HostKind::GenericLinux, Some("6.1.0"), r, &mut w), std::env::consts::ARCH);
        assert_eq!(w.len(), 1);
        assert_eq!(host_arch(true, HostKind::Jetson, None, r, &mut w), std::env::consts::ARCH);
    }
}
