//! The plain value the host's devices hand the runtime: device nodes, bind mounts, hooks, environment and
//! symlinks. `gpu`, `cameras` and `jetson` produce it; `runtime::spec::inject` is the one place that adds it to a
//! container's spec, so this module never sees a runtime spec.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// How the runtime must check a [`HostFile`]'s source when it stages it (it resolves the path again then, from a
/// descriptor, so what is mounted is what was checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFileCheck {
    /// A Unix socket owned by root with no symlink below the host root: sockets in the world-writable `/tmp`,
    /// where any user could plant a socket or a symlink of their own.
    RootSocket,
    /// Owned by root, with no symlink below the host root (a file or directory in `/tmp`).
    RootOwned,
    /// Symlinks followed as if the host root were `/` (never out of it); it must exist. Files only root can
    /// change (`/etc/localtime` is a symlink into /usr/share/zoneinfo; `/proc/device-tree` one into /sys).
    InRoot,
}

/// A host file, directory or socket to bind-mount (the Jetson conveniences), with how its source is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// `host` is under the host root; `container` is the path in the container.
    pub mount: BindMount,
    pub check: HostFileCheck,
}

/// A device node to create in the container, with its cgroup rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: PathBuf,
    /// `c` (char) or `b` (block).
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Mode bits of the node (e.g. 0o666).
    pub file_mode: Option<u32>,
    /// cgroup access, e.g. `rwm`.
    pub access: String,
}

/// An OCI hook run at `createContainer` (used by CDI specs, e.g. `nvidia-cdi-hook update-ldcache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
}

/// A symlink to create in the container's root file system (CSV `sym` lines): `link` -> `target`, as on the
/// host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symlink {
    /// Absolute path of the link in the container (the same as on the host).
    pub link: PathBuf,
    /// The link's target as the host's link holds it (usually relative, e.g. `libcuda.so.1.1`).
    pub target: PathBuf,
}

/// What a container gets to reach host devices: the GPU's edits (CDI or CSV), camera nodes, the nvargus socket,
/// the Jetson conveniences' files, device trees and environment.
/// A plain value: `runtime::spec::inject` adds it to a run spec (the one injection step of both backends); the
/// `symlinks` are the bundle builder's part (see [`super::gpu::create_symlinks`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceEdits {
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Device nodes with the live numbers and their cgroup rule.
    pub devices: Vec<DeviceNode>,
    /// Bind mounts (host side under the host root).
    pub mounts: Vec<BindMount>,
    /// Host files the runtime stages with the check each names, then mounts like `mounts` (Jetson conveniences).
    pub host_files: Vec<HostFile>,
    /// `createContainer` hooks (program under the host root; `args` without argv\[0\], as [`HookSpec`] wants).
    pub hooks: Vec<HookSpec>,
    /// Symlinks to create in the root file system before the container starts (CSV mode; CDI specs do this
    /// with their own `create-symlinks` hook).
    pub symlinks: Vec<Symlink>,
}

impl DeviceEdits {
    pub(crate) fn push_device(&mut self, node: DeviceNode) {
        if !self.devices.iter().any(|d| d.path == node.path) {
            self.devices.push(node);
        }
    }

    /// Adds `file` unless something is already mounted at its container path.
    pub(crate) fn push_host_file(&mut self, file: HostFile) {
        let at = &file.mount.container;
        if !self.mounts.iter().any(|m| &m.container == at) && !self.host_files.iter().any(|f| &f.mount.container == at)
        {
            self.host_files.push(file);
        }
    }

    pub(crate) fn push_mount(&mut self, mount: BindMount) {
        if !self.mounts.iter().any(|m| m.container == mount.container) {
            self.mounts.push(mount);
        }
    }
}
