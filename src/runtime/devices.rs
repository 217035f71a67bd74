//! Host device nodes a container asks for by path (`devices = ["/dev/ttyACM0", "/dev/i2c-1:/dev/i2c-7:rw",
//! "/dev/ttyUSB*", "/dev/bus/usb"]`, `jetship run --device`): the `HOST[:CONTAINER][:PERMS]` syntax, and the
//! expansion at create time of each request into char and block nodes found beneath the host root's `/dev`
//! (globs matched one path component at a time, directories walked, symlinks followed only when they resolve
//! inside `/dev`), each with its numbers, mode and owner from `lstat(2)` and its cgroup rule. Also every node of
//! the host's `/dev`, for `privileged`.
//!
//! Reads only: nothing here creates a node or opens one. A request that matches nothing is [`Error::Missing`],
//! which the agent maps to `waiting-for-device` (as a missing camera). Which requests are allowed is the local
//! policy's (`deploy::policy`); its answer arrives as the patterns of [`Allowed`].

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::devices::inject::DeviceNode;
use crate::os::fsutil::under_root;

/// Most device requests one container may have.
pub(crate) const MAX_REQUESTS: usize = 64;
/// Most nodes one request (a glob, a directory) may expand to.
pub(crate) const MAX_NODES: usize = 1024;
/// Most nodes `privileged` passes (every node of the host's /dev).
pub(crate) const MAX_HOST_NODES: usize = 8192;
/// How deep a directory request (`/dev/bus/usb`) or the privileged walk descends.
const MAX_DEPTH: usize = 8;
/// Entries of /dev the privileged walk leaves out, as runc's `HostDevices` does: they are the container's own
/// (`pts`, `shm`, `mqueue`) or would give it the host's console.
const HOST_WALK_SKIP: [&str; 8] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"];

/// Why a device request cannot be given to a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing matches (not plugged in, not yet enumerated, a typo): the deployment waits for it.
    #[error("device `{pattern}` is not present: no char or block node under /dev matches it (check `ls -l {pattern}`); the deployment waits for it")]
    Missing { pattern: String },
    /// The path names something that is not a char or block device, or a symlink leading out of /dev.
    #[error("device {}: {reason}", .path.display())]
    Unusable { path: PathBuf, reason: String },
    /// A node the local policy does not cover (a glob or a directory reached beyond the allowed patterns).
    #[error("device {}: not covered by policy.allowed_devices ({allowed}); add a pattern for it to policy.allowed_devices in the agent config", .path.display())]
    NotAllowed { path: PathBuf, allowed: String },
    #[error("device `{pattern}` expands to more than {limit} nodes; name fewer")]
    TooMany { pattern: String, limit: usize },
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One device request: a host path or pattern, where it appears in the container, and the cgroup access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// Absolute path under /dev; may be a glob (`*`, `?`, `[...]`) or a directory.
    pub host: String,
    /// Where it appears in the container (a node's path, or the directory the nodes of a directory go under).
    /// Defaults to the host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// cgroup access: some of `r`, `w`, `m`. Defaults to `rwm`.
    pub permissions: String,
}

/// Whether `s` holds a glob metacharacter.
pub(crate) fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn is_permissions(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

fn check_dev_path(p: &str, what: &str) -> std::result::Result<(), String> {
    if !p.starts_with("/dev/") || p.len() <= "/dev/".len() {
        return Err(format!("{what} `{p}` must be a path under /dev/"));
    }
    if p.split('/').any(|c| c == ".." || c == ".") || p.contains("//") || p.ends_with('/') {
        return Err(format!("{what} `{p}` must be a plain path (no `.`, `..`, `//` or trailing `/`)"));
    }
    if p.len() > 256 || p.chars().any(|c| c.is_control() || c == ':') {
        return Err(format!("{what} `{p}` must be at most 256 characters without control characters"));
    }
    Ok(())
}

impl DeviceRequest {
    /// Parses `HOST[:CONTAINER][:PERMS]` as `docker run --device` does: a second part made only of `r`, `w`,
    /// `m` is the permissions. The host part may be a glob, which maps each node to its own path (no
    /// container part); the container path must lie under /dev.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, None, None),
            [h, p] if is_permissions(p) => (*h, None, Some(*p)),
            [h, c] => (*h, Some(*c), None),
            [h, c, p] => (*h, Some(*c), Some(*p)),
            _ => return Err(format!("`{text}` must be HOST[:CONTAINER][:PERMS], e.g. /dev/i2c-1:/dev/i2c-7:rw")),
        };
        check_dev_path(host, "host path")?;
        if let Some(c) = container {
            check_dev_path(c, "container path")?;
            if is_pattern(c) {
                return Err(format!("container path `{c}` must not be a pattern"));
            }
            if is_pattern(host) {
                return Err(format!(
                    "`{text}`: a pattern maps each node to its own path; leave the container path out"
                ));
            }
        }
        if is_pattern(host) {
            for component in host.split('/') {
                glob::Pattern::new(component).map_err(|e| format!("pattern `{host}`: {e}"))?;
            }
        }
        let permissions = match perms {
            Some(p) if is_permissions(p) => p.to_owned(),
            Some(p) => return Err(format!("permissions `{p}` must be some of r, w and m (e.g. rw)")),
            None => "rwm".to_owned(),
        };
        Ok(Self { host: host.to_owned(), container: container.map(str::to_owned), permissions })
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host)?;
        if let Some(c) = &self.container {
            write!(f, ":{c}")?;
        }
        if self.permissions != "rwm" {
            write!(f, ":{}", self.permissions)?;
        }
        Ok(())
    }
}

/// The local policy's answer about device nodes: the patterns (`policy.allowed_devices`) a node's host path
/// or one of its parent directories must match. `None`: everything (a local caller such as `jetship run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed(pub Option<Vec<String>>);

impl Allowed {
    /// Whether every node is allowed (no policy patterns apply).
    pub(crate) fn is_any(&self) -> bool {
        self.0.is_none()
    }
}

const MATCH: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };

/// Whether the policy pattern `pattern` covers host path `path`: it matches the path or one of its parent
/// directories under /dev (`/dev/bus/usb` covers `/dev/bus/usb/001/002`).
pub fn covers(pattern: &str, path: &str) -> bool {
    let Ok(p) = glob::Pattern::new(pattern.trim()) else { return false };
    let mut at = Path::new(path);
    loop {
        if at.to_str().is_some_and(|s| p.matches_with(s, MATCH)) {
            return true;
        }
        match at.parent() {
            Some(parent) if parent != Path::new("/dev") && parent != Path::new("/") => at = parent,
            _ => return false,
        }
    }
}

impl Allowed {
    fn check(&self, host_path: &str) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(patterns) if patterns.iter().any(|p| covers(p, host_path)) => Ok(()),
            Some(patterns) => Err(Error::NotAllowed {
                path: PathBuf::from(host_path),
                allowed: if patterns.is_empty() { "none".into() } else { patterns.join(", ") },
            }),
        }
    }
}

/// A node found on the host, as the container gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNode {
    /// The node (container path, numbers, mode, cgroup access).
    pub node: DeviceNode,
    /// The host path the Docker daemon is handed (symlinks resolved), without the host root.
    pub host_path: PathBuf,
    /// Owner and group of the host node, kept in the container as Docker keeps them (`dialout`, `video`).
    pub uid: u32,
    pub gid: u32,
}

/// The nodes `requests` expand to beneath `root`'s /dev, in request order without duplicate container paths.
pub(crate) fn expand_all(root: &Path, requests: &[DeviceRequest], allowed: &Allowed) -> Result<Vec<HostNode>> {
    let mut out: Vec<HostNode> = Vec::new();
    for r in requests {
        for n in expand(root, r, allowed)? {
            if !out.iter().any(|have| have.node.path == n.node.path) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The nodes one request expands to (see the module doc). Each must be covered by `allowed`.
pub fn expand(root: &Path, request: &DeviceRequest, allowed: &Allowed) -> Result<Vec<HostNode>> {
    let dev_root = under_root(root, "/dev");
    let rel = request.host.strip_prefix("/dev/").unwrap_or(&request.host);
    let mut found = Vec::new();
    // (path under the host root, host path as named)
    let mut level: Vec<(PathBuf, String)> = vec![(dev_root.clone(), "/dev".to_owned())];
    let components: Vec<&str> = rel.split('/').collect();
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        for (dir, named) in &level {
            if is_pattern(component) {
                let pattern = glob::Pattern::new(component)
                    .map_err(|e| Error::Unusable { path: request.host.clone().into(), reason: e.to_string() })?;
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(_) => continue,
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| pattern.matches_with(n, MATCH))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| (dir.join(&n), format!("{named}/{n}"))));
            } else {
                next.push((dir.join(component), format!("{named}/{component}")));
            }
        }
        if !last {
            // Only real directories are descended: a symlinked directory is not followed.
            next.retain(|(p, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        }
        level = next;
    }
    let pattern = is_pattern(&request.host);
    for (path, named) in level {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let ft = meta.file_type();
        if ft.is_dir() {
            let container = request.container.clone().unwrap_or_else(|| named.clone());
            walk(&path, &named, &container, 0, request, &mut found, &[])?;
        } else if ft.is_symlink() {
            match resolve_link(&dev_root, &path, root) {
                Ok((target, meta)) => {
                    let container = request.container.clone().unwrap_or_else(|| named.clone());
                    found.push(host_node(&meta, container, target, &request.permissions));
                }
                Err(reason) if !pattern => return Err(Error::Unusable { path: named.into(), reason }),
                Err(_) => {}
            }
        } else if is_device(&meta) {
            let container = request.container.clone().unwrap_or_else(|| named.clone());
            found.push(host_node(&meta, container, PathBuf::from(&named), &request.permissions));
        } else if !pattern {
            return Err(Error::Unusable { path: named.into(), reason: "is not a char or block device".into() });
        }
        if found.len() > MAX_NODES {
            return Err(Error::TooMany { pattern: request.host.clone(), limit: MAX_NODES });
        }
    }
    if found.is_empty() {
        return Err(Error::Missing { pattern: request.host.clone() });
    }
    for n in &found {
        allowed.check(&named_of(n, request))?;
    }
    Ok(found)
}

/// The host path a node was reached by (as named, not resolved): what the policy patterns are matched with.
fn named_of(n: &HostNode, request: &DeviceRequest) -> String {
    match &request.container {
        // A renamed node or directory: the host side is the request's path plus what lies below it.
        Some(c) => {
            let below = n.node.path.to_string_lossy().strip_prefix(c.as_str()).unwrap_or("").to_owned();
            format!("{}{below}", request.host)
        }
        None => n.node.path.to_string_lossy().into_owned(),
    }
}

fn is_device(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() || meta.file_type().is_block_device()
}

fn host_node(meta: &std::fs::Metadata, container: String, host_path: PathBuf, access: &str) -> HostNode {
    let rdev = meta.rdev();
    HostNode {
        node: DeviceNode {
            path: PathBuf::from(container),
            kind: if meta.file_type().is_block_device() { 'b' } else { 'c' },
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: Some(meta.mode() & 0o777),
            access: access.to_owned(),
        },
        host_path,
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// A symlink's target when it resolves to a device node inside `dev_root` (udev's `/dev/serial/by-id/...`);
/// the host path returned is without `root`.
fn resolve_link(
    dev_root: &Path,
    link: &Path,
    root: &Path,
) -> std::result::Result<(PathBuf, std::fs::Metadata), String> {
    // udev makes its links as root; one a local user made (in a world-writable /dev/shm) is not followed.
    if std::fs::symlink_metadata(link).map_err(|e| e.to_string())?.uid() != 0 {
        return Err("is a symlink not owned by root; name the device itself".into());
    }
    let dev = std::fs::canonicalize(dev_root).map_err(|e| format!("resolving /dev: {e}"))?;
    let target = std::fs::canonicalize(link).map_err(|e| format!("is a symlink that does not resolve: {e}"))?;
    if !target.starts_with(&dev) {
        return Err(format!("is a symlink to {}, outside /dev; name the device itself", target.display()));
    }
    let meta = std::fs::symlink_metadata(&target).map_err(|e| e.to_string())?;
    if !is_device(&meta) {
        return Err(format!("is a symlink to {}, which is not a char or block device", target.display()));
    }
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let host = match target.strip_prefix(&root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => target.clone(),
    };
    Ok((host, meta))
}

/// Adds every char and block node below `dir` (symlinks and other files skipped, `skip` names left out).
fn walk(
    dir: &Path,
    named: &str,
    container: &str,
    depth: usize,
    request: &DeviceRequest,
    found: &mut Vec<HostNode>,
    skip: &[&str],
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    let limit = if skip.is_empty() { MAX_NODES } else { MAX_HOST_NODES };
    for name in names.into_iter().filter(|n| !skip.contains(&n.as_str())) {
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let (named, container) = (format!("{named}/{name}"), format!("{container}/{name}"));
        if meta.is_dir() {
            walk(&path, &named, &container, depth + 1, request, found, &[])?;
        } else if is_device(&meta) {
            found.push(host_node(&meta, container, PathBuf::from(named), &request.permissions));
            if found.len() > limit {
                return Err(Error::TooMany { pattern: request.host.clone(), limit });
            }
        }
    }
    Ok(())
}

/// Every char and block node of `root`'s /dev, each at its own path with `rwm`: what `privileged` passes,
/// as Docker does (runc's `HostDevices`: `pts`, `shm`, `mqueue`, `fd` and the console left out).
pub(crate) fn host_devices(root: &Path) -> Result<Vec<HostNode>> {
    let request = DeviceRequest { host: "/dev".into(), container: None, permissions: "rwm".into() };
    let mut found = Vec::new();
    walk(&under_root(root, "/dev"), "/dev", "/dev", 0, &request, &mut found, &HOST_WALK_SKIP)?;
    Ok(found)
}

/// The nodes a container gets by `config`: its requests expanded beneath `root` (each covered by the
/// confinement's allowed patterns) and, when privileged, every other node of the host's /dev. Both backends
/// call this before creating anything, so a missing node fails the same way on each.
pub(crate) fn for_container(root: &Path, config: &super::ContainerConfig) -> Result<Vec<HostNode>> {
    let mut nodes = expand_all(root, &config.devices, &config.confinement.allowed_devices)?;
    if config.privileged {
        for n in host_devices(root)? {
            if !nodes.iter().any(|have| have.node.path == n.node.path) {
                nodes.push(n);
            }
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> DeviceRequest {
        DeviceRequest::parse(s).unwrap()
    }

    #[test]
    fn host_container_and_permissions_parse_as_docker_does() {
        assert_eq!(
            req("/dev/ttyACM0"),
            DeviceRequest { host: "/dev/ttyACM0".into(), container: None, permissions: "rwm".into() }
        );
        assert_eq!(req("/dev/ttyACM0:rw").permissions, "rw");
        assert_eq!(req("/dev/ttyACM0:rw").container, None);
        let r = req("/dev/i2c-1:/dev/i2c-7:rw");
        assert_eq!((r.container.as_deref(), r.permissions.as_str()), (Some("/dev/i2c-7"), "rw"));
        assert_eq!(req("/dev/i2c-1:/dev/i2c-7").permissions, "rwm");
        assert_eq!(r.to_string(), "/dev/i2c-1:/dev/i2c-7:rw");
        assert_eq!(req("/dev/ttyUSB*").host, "/dev/ttyUSB*");
        for bad in [
            "",
            "ttyACM0",
            "/etc/passwd",
            "/dev/",
            "/dev/../etc/shadow",
            "/dev/a:/etc/x",
            "/dev/a:/dev/b:rwx",
            "/dev/a:/dev/b:rw:m",
            "/dev/tty*:/dev/serial",
            "/dev/a:/dev/b*",
            "/dev//a",
            "/dev/[a",
        ] {
            assert!(DeviceRequest::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn policy_patterns_cover_nodes_and_what_lies_below_directories() {
        assert!(covers("/dev/ttyACM*", "/dev/ttyACM0"));
        assert!(covers("/dev/bus/usb", "/dev/bus/usb/001/002"));
        assert!(covers("/dev/i2c-[0-9]", "/dev/i2c-7"));
        assert!(!covers("/dev/tty*", "/dev/bus/usb/001/002"), "a star does not cross a /");
        assert!(!covers("/dev/ttyACM*", "/dev/ttyUSB0"));
        assert!(!covers("/dev/*", "/dev/.hidden"));
        assert!(covers("/dev/*", "/dev/bus/usb/001/002"), "/dev/* covers /dev/bus and all below it");
    }

    /// A fixture /dev of real char nodes (mknod needs root; the tests of this module run as root in CI).
    fn fixture() -> tempfile::TempDir {
        assert!(
            nix::unistd::geteuid().is_root(),
            "device fixtures are mknod'ed: run the tests as root (scripts/test does)"
        );
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        for d in ["bus/usb/001", "serial/by-id", "snd"] {
            std::fs::create_dir_all(dev.join(d)).unwrap();
        }
        let node = |p: &str, maj, min| {
            mknod(&dev.join(p), SFlag::S_IFCHR, Mode::from_bits_truncate(0o660), makedev(maj, min)).unwrap();
            // Whatever the umask.
            std::fs::set_permissions(dev.join(p), std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
        };
        node("ttyACM0", 166, 0);
        node("ttyACM1", 166, 1);
        node("i2c-1", 89, 1);
        node("bus/usb/001/002", 189, 1);
        node("snd/pcmC0D0p", 116, 16);
        std::fs::write(dev.join("snd/readme"), "not a device").unwrap();
        std::fs::write(dev.join("ttyACM9"), "not a device").unwrap();
        std::os::unix::fs::symlink("../../ttyACM1", dev.join("serial/by-id/usb-board-if00")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dev.join("serial/by-id/evil")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("dev/bus"), dev.join("linked-bus")).unwrap();
        // A link a local user planted (in /dev/shm, say) to a node the policy would cover by its name.
        std::os::unix::fs::symlink("../../ttyACM0", dev.join("serial/by-id/planted")).unwrap();
        let uid = nix::unistd::Uid::from_raw(1000);
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &dev.join("serial/by-id/planted"),
            Some(uid),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        dir
    }

    fn paths(nodes: &[HostNode]) -> Vec<String> {
        nodes.iter().map(|n| n.node.path.display().to_string()).collect()
    }

    #[test]
    fn nodes_globs_directories_and_renames_expand_from_lstat() {
        let dir = fixture();
        let root = dir.path();
        let all = Allowed(None);
        let one = expand(root, &req("/dev/i2c-1:/dev/i2c-7:rw"), &all).unwrap();
        assert_eq!(paths(&one), ["/dev/i2c-7"]);
        assert_eq!((one[0].node.major, one[0].node.minor, one[0].node.kind), (89, 1, 'c'));
        assert_eq!((one[0].node.access.as_str(), one[0].node.file_mode), ("rw", Some(0o660)));
        assert_eq!(one[0].host_path, Path::new("/dev/i2c-1"));
        assert_eq!(paths(&expand(root, &req("/dev/ttyACM*"), &all).unwrap()), ["/dev/ttyACM0", "/dev/ttyACM1"]);
        let snd = expand(root, &req("/dev/snd:/dev/sound"), &all).unwrap();
        assert_eq!(paths(&snd), ["/dev/sound/pcmC0D0p"], "the regular file is skipped");
        assert_eq!(paths(&expand(root, &req("/dev/bus/usb"), &all).unwrap()), ["/dev/bus/usb/001/002"]);
        let link = expand(root, &req("/dev/serial/by-id/usb-board-if00"), &all).unwrap();
        assert_eq!(paths(&link), ["/dev/serial/by-id/usb-board-if00"]);
        assert_eq!((link[0].node.major, link[0].node.minor), (166, 1));
        assert_eq!(link[0].host_path, Path::new("/dev/ttyACM1"), "the daemon is handed the resolved node");
    }

    #[test]
    fn missing_nodes_wait_and_what_is_not_a_device_under_dev_is_refused() {
        let dir = fixture();
        let root = dir.path();
        let all = Allowed(None);
        for missing in ["/dev/ttyUSB*", "/dev/ttyUSB0", "/dev/nothere/x*"] {
            assert!(matches!(expand(root, &req(missing), &all), Err(Error::Missing { .. })), "{missing}");
        }
        let err = expand(root, &req("/dev/serial/by-id/evil"), &all).unwrap_err().to_string();
        assert!(err.contains("outside /dev"), "{err}");
        let err = expand(root, &req("/dev/serial/by-id/planted"), &all).unwrap_err().to_string();
        assert!(err.contains("not owned by root"), "{err}");
        let err = expand(root, &req("/dev/ttyACM9"), &all).unwrap_err().to_string();
        assert!(err.contains("not a char or block device"), "{err}");
        // A symlinked directory is not descended.
        assert!(matches!(expand(root, &req("/dev/linked-bus/usb/001/*"), &all), Err(Error::Missing { .. })));
    }

    #[test]
    fn every_expanded_node_must_be_covered_by_the_policy_patterns() {
        let dir = fixture();
        let root = dir.path();
        let acm0 = Allowed(Some(vec!["/dev/ttyACM0".into()]));
        assert!(expand(root, &req("/dev/ttyACM0"), &acm0).is_ok());
        let err = expand(root, &req("/dev/ttyACM?"), &acm0).unwrap_err();
        assert!(matches!(&err, Error::NotAllowed { path, .. } if path == Path::new("/dev/ttyACM1")), "{err}");
        let i2c = Allowed(Some(vec!["/dev/i2c-1".into()]));
        assert!(expand(root, &req("/dev/i2c-1:/dev/i2c-7"), &i2c).is_ok(), "a rename is judged by its host path");
        let usb = Allowed(Some(vec!["/dev/bus/usb".into()]));
        assert!(expand(root, &req("/dev/bus/usb"), &usb).is_ok());
        assert!(expand(root, &req("/dev/bus/usb"), &Allowed(Some(vec![]))).is_err());
    }

    #[test]
    fn the_privileged_walk_takes_every_node_but_the_containers_own() {
        let dir = fixture();
        std::fs::create_dir_all(dir.path().join("dev/pts")).unwrap();
        nix::sys::stat::mknod(
            &dir.path().join("dev/pts/0"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o620),
            nix::sys::stat::makedev(136, 0),
        )
        .unwrap();
        let all = paths(&host_devices(dir.path()).unwrap());
        assert_eq!(
            all,
            ["/dev/bus/usb/001/002", "/dev/i2c-1", "/dev/snd/pcmC0D0p", "/dev/ttyACM0", "/dev/ttyACM1"],
            "symlinks, files and pts left out"
        );
    }
}
