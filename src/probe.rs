//! The host probe: which Jetson (or which generic Linux host) this is, its L4T/JetPack release, and what it offers
//! to containers (GPU injection options, container runtimes, cameras).
//!
//! Everything is read under the configured host root so tests run against fixture trees. The probe never
//! spawns a process and never fails as a whole: unreadable or malformed inputs leave a field empty and add a
//! warning. It must not write anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_small, under_root};
use crate::l4t::{self, L4tVersion, SoftwareStack};

/// Version of the `jetship probe --json` schema (also the MQTT `host` payload). Bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything the probe found. Field names are a public contract: see docs/probe.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub schema: u32,
    /// `jetson` or `generic-linux`.
    pub kind: HostKind,
    pub l4t: Option<L4tInfo>,
    /// JetPack release (`6.2`), `unknown` for an L4T release not in the table, `None` off Jetson.
    pub jetpack: Option<String>,
    pub jetpack_major: Option<u32>,
    /// Ubuntu/CUDA/cuDNN/TensorRT versions the L4T release ships.
    pub stack: SoftwareStack,
    /// Device-tree model with the trailing NUL stripped.
    pub model: Option<String>,
    /// SoC from `compatible`: `tegra234`, `tegra194`, `tegra210`.
    pub soc: Option<String>,
    /// Module part number from `compatible`, e.g. `p3767-0005`.
    pub module: Option<String>,
    /// CUDA compute capability of the SoC's GPU, e.g. `8.7`.
    pub cuda_arch: Option<String>,
    pub kernel: Option<String>,
    /// Machine architecture (`aarch64`, `x86_64`).
    pub arch: String,
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub state_dir_disk: Option<DiskSpace>,
    pub gpu: GpuOptions,
    pub runtimes: Runtimes,
    pub cameras: Vec<Camera>,
    /// Problems met while probing (malformed files, unreadable nodes). The probe still returns what it could.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    Jetson,
    GenericLinux,
}

/// The L4T release and where it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L4tInfo {
    pub version: L4tVersion,
    /// `env` (L4T_VERSION), `nv_tegra_release` or `dpkg`.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// What the host offers for putting the GPU into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuOptions {
    /// CDI spec files declaring kind `nvidia.com/gpu` (host paths), with their device names.
    pub cdi_specs: Vec<CdiSpecInfo>,
    /// Jetson CSV files in /etc/nvidia-container-runtime/host-files-for-container.d (host paths).
    pub csv_files: Vec<PathBuf>,
    /// The nvidia-container-runtime binary, if installed.
    pub nvidia_container_runtime: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdiSpecInfo {
    pub path: PathBuf,
    pub kind: String,
    pub devices: Vec<String>,
}

/// Container runtimes found on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtimes {
    pub crun: Option<PathBuf>,
    pub runc: Option<PathBuf>,
    pub conmon: Option<PathBuf>,
    pub docker: Option<DockerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerInfo {
    pub socket: PathBuf,
    /// Engine version when the socket answered `GET /version`.
    pub version: Option<String>,
}

/// A V4L2 video node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// `/dev/videoN` (host path, not prefixed by the host root).
    pub node: PathBuf,
    pub name: Option<String>,
    /// True for a capture node, false for a UVC metadata node.
    pub capture: bool,
    /// How `capture` was decided: `querycap` or `sysfs-index`.
    pub detected_by: String,
    pub by_id: Vec<String>,
    pub by_path: Vec<String>,
}

/// Probes the host under `root`; `state_dir` is the agent's state dir (host path) whose disk is reported.
pub fn probe(root: &Path, state_dir: &Path) -> HostFacts {
    let mut warnings = Vec::new();
    let l4t = read_l4t(root, &mut warnings);
    let model = read_small(&under_root(root, "/proc/device-tree/model"), 4096)
        .ok()
        .map(|s| s.trim_end_matches('\0').trim().to_owned())
        .filter(|s| !s.is_empty());
    let kind = if l4t.is_some() { HostKind::Jetson } else { HostKind::GenericLinux };
    let jetpack = l4t.as_ref().map(|i| i.version.jetpack().unwrap_or("unknown").to_owned());
    let jetpack_major = l4t.as_ref().and_then(|i| i.version.jetpack_major());
    let stack = l4t.as_ref().map(|i| i.version.stack()).unwrap_or_default();
    let _ = state_dir;
    HostFacts {
        schema: SCHEMA_VERSION,
        kind,
        l4t,
        jetpack,
        jetpack_major,
        stack,
        model,
        soc: None,
        module: None,
        cuda_arch: None,
        kernel: None,
        arch: std::env::consts::ARCH.to_owned(),
        cpus: None,
        memory_bytes: None,
        state_dir_disk: None,
        gpu: GpuOptions::default(),
        runtimes: Runtimes::default(),
        cameras: Vec::new(),
        warnings,
    }
}

fn read_l4t(root: &Path, warnings: &mut Vec<String>) -> Option<L4tInfo> {
    if let Ok(v) = std::env::var("L4T_VERSION") {
        match v.parse::<L4tVersion>() {
            Ok(version) => return Some(L4tInfo { version, source: "env".into() }),
            Err(e) => warnings.push(format!("ignoring L4T_VERSION: {e}")),
        }
    }
    let release = under_root(root, "/etc/nv_tegra_release");
    if let Ok(text) = read_small(&release, 64 * 1024) {
        match l4t::parse_nv_tegra_release(&text) {
            Ok(version) => return Some(L4tInfo { version, source: "nv_tegra_release".into() }),
            Err(e) => warnings.push(format!("{}: {e}", release.display())),
        }
    }
    let status = under_root(root, "/var/lib/dpkg/status");
    if let Ok(text) = std::fs::read_to_string(&status) {
        if let Some(version) = l4t::parse_dpkg_status(&text) {
            return Some(L4tInfo { version, source: "dpkg".into() });
        }
    }
    None
}

impl HostFacts {
    /// The human-readable form printed by `jetship probe`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let kind = match self.kind {
            HostKind::Jetson => "jetson",
            HostKind::GenericLinux => "generic linux",
        };
        out.push_str(&format!("host:      {kind}\n"));
        if let Some(m) = &self.model {
            out.push_str(&format!("model:     {m}\n"));
        }
        if let Some(l4t) = &self.l4t {
            out.push_str(&format!("l4t:       {} (from {})\n", l4t.version, l4t.source));
        }
        if let Some(jp) = &self.jetpack {
            out.push_str(&format!("jetpack:   {jp}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning:   {w}\n"));
        }
        out
    }
}
