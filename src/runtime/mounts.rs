//! Bind-mount sources a container may not redirect. A volume's host path is resolved beneath the allowed root
//! it lies in without following any symlink below that root ([`crate::os::beneath`]; missing directories are
//! created the same way), the nvargus socket in the host's world-writable `/tmp` must be a socket owned by root
//! (and the Jetson conveniences' other `/tmp` sources root's; their `/etc` and `/proc` files resolve with
//! symlinks kept inside the host root), and each source is then bind-mounted from the descriptor that resolution gave (`/proc/self/fd/N`) onto a
//! staging point under `<state_dir>/mounts/<id>/`, which only root can reach. The container runtime (runc, crun
//! or dockerd) is handed the staging point, never the original path: a container that swaps a component for
//! a symlink between the check and the mount gains nothing, because what is mounted is what was resolved.
//!
//! The requests are kept beside the staging points (`plan.json`) so a start after a reboot (when the staged
//! mounts are gone) resolves and stages them again, checking the paths anew. Owns `<state_dir>/mounts/`; it
//! never removes anything through a mount (a staging point is unmounted, then removed as an empty entry).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};
use serde::{Deserialize, Serialize};

use super::{BindMount, Volume, VolumeSources};
use crate::host::devices::inject::{DeviceEdits, HostFileCheck};
use crate::os::beneath::{self, Symlinks};

/// Errors preparing a bind mount; each names the host path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("volume host path `{}`: {message}", .host.display())]
    Refused { host: PathBuf, message: String },
    #[error("bind mount of `{}`: {context}: {source}", .host.display())]
    Io {
        host: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How one source must be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolve {
    /// As named, symlinks followed (a trusted local caller); a missing directory is created.
    AsNamed,
    /// Beneath `root` (opened as configured), no symlink below it; missing directories are created.
    Beneath { root: PathBuf },
    /// A Unix socket owned by root beneath `root`, no symlink below it (nvargus-daemon's socket).
    RootSocket { root: PathBuf },
    /// Owned by root beneath `root`, no symlink below it (the X11 socket directory in `/tmp`).
    RootOwned { root: PathBuf },
    /// An existing file beneath `root` with symlinks resolved as if `root` were `/` (`/etc/localtime`).
    InRoot { root: PathBuf },
}

/// One bind mount to stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The source path on this machine.
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
    pub how: Resolve,
}

/// The staging directory of container `id`.
pub fn dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("mounts").join(id)
}

/// The requests for a deployment's `volumes`: each with the root it must lie beneath (the longest of
/// `sources` that contains it lexically) or as named. A path under no root is refused.
pub(crate) fn volume_requests(volumes: &[Volume], sources: &VolumeSources) -> Result<Vec<Request>> {
    volumes
        .iter()
        .map(|v| {
            let how = match sources {
                VolumeSources::AsNamed => Resolve::AsNamed,
                VolumeSources::Beneath(roots) => {
                    let root = roots
                        .iter()
                        .filter(|r| lexically_under(&v.host, r))
                        .max_by_key(|r| r.components().count())
                        .ok_or_else(|| Error::Refused {
                            host: v.host.clone(),
                            message: format!(
                                "lies under none of the allowed roots ({}); add a parent to policy.allowed_host_paths",
                                roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        })?;
                    Resolve::Beneath { root: root.clone() }
                }
            };
            Ok(Request { host: v.host.clone(), container: v.container.clone(), read_only: v.read_only, how })
        })
        .collect()
}

/// The requests for the bind mounts of a container's device edits, each checked as it must be beneath
/// `host_root`: the camera edits' `mounts` (nvargus-daemon's socket) as root's sockets, the Jetson
/// conveniences' `host_files` as each names. The one mapping both backends use.
pub(crate) fn edit_requests(edits: &DeviceEdits, host_root: &Path) -> Vec<Request> {
    let root = host_root.to_path_buf();
    let sockets = edits.mounts.iter().map(|m| (m, Resolve::RootSocket { root: root.clone() }));
    let files = edits.host_files.iter().map(|f| {
        let how = match f.check {
            HostFileCheck::RootSocket => Resolve::RootSocket { root: root.clone() },
            HostFileCheck::RootOwned => Resolve::RootOwned { root: root.clone() },
            HostFileCheck::InRoot => Resolve::InRoot { root: root.clone() },
        };
        (&f.mount, how)
    });
    sockets
        .chain(files)
        .map(|(m, how)| Request { host: m.host.clone(), container: m.container.clone(), read_only: m.read_only, how })
        .collect()
}

/// Whether `path` is `root` or below it, by components (no `..` is accepted in either).
fn lexically_under(path: &Path, root: &Path) -> bool {
    fn clean(p: &Path) -> Option<Vec<Component<'_>>> {
        let mut out = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(_) => out.push(c),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        Some(out)
    }
    match (clean(path), clean(root)) {
        (Some(p), Some(r)) => path.is_absolute() && root.is_absolute() && p.starts_with(&r),
        _ => false,
    }
}

fn refused(host: &Path, message: impl Into<String>) -> Error {
    Error::Refused { host: host.to_path_buf(), message: message.into() }
}

fn io_err<'a>(host: &'a Path, context: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { host: host.to_path_buf(), context, source }
}

/// Opens an allowed root (config: trusted, symlinks in it followed), creating it when missing as a bind source
/// of Docker's would be (the first volume of `<state_dir>/volumes` finds no folder yet).
fn open_root(root: &Path, host: &Path) -> Result<OwnedFd> {
    let open = || nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty());
    match open() {
        Err(Errno::ENOENT) => {
            std::fs::create_dir_all(root).map_err(io_err(host, "creating its allowed root"))?;
            open()
        }
        other => other,
    }
    .map_err(|e| io_err(host, "opening its allowed root")(e.into()))
}

/// What `how` says `host` is, as an `O_PATH` descriptor: the object that will be mounted.
pub fn resolve(req: &Request) -> Result<OwnedFd> {
    let host = &req.host;
    let path_flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    match &req.how {
        Resolve::AsNamed => match nix::fcntl::open(host, path_flags, Mode::empty()) {
            Err(Errno::ENOENT) => {
                std::fs::create_dir_all(host).map_err(io_err(host, "creating the missing directory"))?;
                nix::fcntl::open(host, path_flags, Mode::empty()).map_err(|e| io_err(host, "opening it")(e.into()))
            }
            other => other.map_err(|e| io_err(host, "opening it")(e.into())),
        },
        Resolve::Beneath { root } => {
            let rel = host.strip_prefix(root).map_err(|_| refused(host, format!("is not under {}", root.display())))?;
            let rootfd = open_root(root, host)?;
            match beneath::open(&rootfd, rel, Symlinks::Refuse, OFlag::O_PATH) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => create_beneath(&rootfd, rel, host, root),
                other => other.map_err(|e| beneath_error(e, host, root)),
            }
        }
        Resolve::RootSocket { root } | Resolve::RootOwned { root } => {
            let rel = host.strip_prefix(root).map_err(|_| refused(host, format!("is not under {}", root.display())))?;
            let rootfd = open_root(root, host)?;
            let fd = beneath::open(&rootfd, rel, Symlinks::Refuse, OFlag::O_PATH)
                .map_err(|e| beneath_error(e, host, root))?;
            let st = fstat(&fd).map_err(|e| io_err(host, "stat")(e.into()))?;
            let socket = matches!(req.how, Resolve::RootSocket { .. });
            if socket && (st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != 0) {
                return Err(refused(
                    host,
                    format!(
                        "is not a Unix socket owned by root (uid {}): in a directory any user can write, only \
                         root's nvargus-daemon socket is passed to containers",
                        st.st_uid
                    ),
                ));
            }
            if st.st_uid != 0 {
                return Err(refused(
                    host,
                    format!(
                        "is owned by uid {}, not root: in a directory any user can write, only root's is passed to \
                         containers",
                        st.st_uid
                    ),
                ));
            }
            Ok(fd)
        }
        Resolve::InRoot { root } => {
            let rel = host.strip_prefix(root).map_err(|_| refused(host, format!("is not under {}", root.display())))?;
            let rootfd = open_root(root, host)?;
            beneath::open(&rootfd, rel, Symlinks::InRoot, OFlag::O_PATH).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => refused(host, "does not exist on this host (any more)"),
                _ => beneath_error(e, host, root),
            })
        }
    }
}

fn beneath_error(e: io::Error, host: &Path, root: &Path) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => refused(
            host,
            format!(
                "a component below {} is a symlink; symlinks there are refused (a container that can write there \
                 could point one anywhere on the host): name the real path",
                root.display()
            ),
        ),
        Some(libc::EXDEV) => refused(host, format!("leaves {}", root.display())),
        _ => io_err(host, "resolving it")(e),
    }
}

/// Creates the missing directories of `rel` below `root` one at a time (0755), never through a symlink.
fn create_beneath(rootfd: &OwnedFd, rel: &Path, host: &Path, root: &Path) -> Result<OwnedFd> {
    let mut cur = rootfd.try_clone().map_err(io_err(host, "duplicating a descriptor"))?;
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        let one = Path::new(name);
        let next = match beneath::open(&cur, one, Symlinks::Refuse, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match nix::sys::stat::mkdirat(&cur, one, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_err(host, "creating a missing directory")(e.into())),
                }
                beneath::open(&cur, one, Symlinks::Refuse, OFlag::O_PATH | OFlag::O_DIRECTORY)
            }
            other => other,
        };
        cur = next.map_err(|e| beneath_error(e, host, root))?;
    }
    Ok(cur)
}

/// The mounts to give the runtime for `requests` staged in `dir`: the staging points `dir/<n>` as sources.
pub(crate) fn staging_points(dir: &Path, requests: &[Request]) -> Vec<BindMount> {
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| BindMount {
            host: dir.join(i.to_string()),
            container: r.container.clone(),
            read_only: r.read_only,
        })
        .collect()
}

/// Resolves every request and bind-mounts each at `dir/<n>`; returns [`staging_points`]. `plan.json` records
/// the requests for [`restage`].
pub(crate) fn stage_all(dir: &Path, requests: &[Request]) -> Result<Vec<BindMount>> {
    let plan_io = io_err(dir, "writing the staging plan");
    create_private_dir(dir).map_err(io_err(dir, "creating the staging directory"))?;
    let json = serde_json::to_vec_pretty(requests).expect("requests serialize");
    crate::os::fsutil::write_atomic(&dir.join("plan.json"), &json).map_err(plan_io)?;
    for (i, req) in requests.iter().enumerate() {
        stage(req, &dir.join(i.to_string()))?;
    }
    Ok(staging_points(dir, requests))
}

/// Stages the requests recorded in `dir` again (each path resolved anew): before a stopped container starts,
/// since a reboot took the staged mounts away. Nothing to do without a plan.
pub(crate) fn restage(dir: &Path) -> Result<()> {
    let bytes = match std::fs::read(dir.join("plan.json")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir, "reading the staging plan")(e)),
    };
    let requests: Vec<Request> = serde_json::from_slice(&bytes)
        .map_err(|e| io_err(dir, "reading the staging plan")(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    for (i, req) in requests.iter().enumerate() {
        stage(req, &dir.join(i.to_string()))?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Resolves `req` and bind-mounts the result at `at` (an empty directory or file made to match it), replacing
/// whatever was mounted there.
pub fn stage(req: &Request, at: &Path) -> Result<()> {
    let fd = resolve(req)?;
    let st = fstat(&fd).map_err(|e| io_err(&req.host, "stat")(e.into()))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    unmount(at).map_err(io_err(&req.host, "unmounting the previous staging"))?;
    match std::fs::symlink_metadata(at) {
        Ok(m) if m.is_dir() == is_dir && !m.file_type().is_symlink() => {}
        Ok(m) => {
            let r = if m.is_dir() { std::fs::remove_dir(at) } else { std::fs::remove_file(at) };
            r.map_err(io_err(&req.host, "replacing the staging point"))?;
            make_point(at, is_dir).map_err(io_err(&req.host, "making the staging point"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_point(at, is_dir).map_err(io_err(&req.host, "making the staging point"))?
        }
        Err(e) => return Err(io_err(&req.host, "checking the staging point")(e)),
    }
    nix::mount::mount(
        Some(&beneath::proc_fd_path(&fd)),
        at,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io_err(&req.host, "bind-mounting what was resolved")(e.into()))
}

fn make_point(at: &Path, is_dir: bool) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if is_dir {
        std::fs::DirBuilder::new().mode(0o700).create(at)
    } else {
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(at).map(drop)
    }
}

fn unmount(at: &Path) -> io::Result<()> {
    match nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Unmounts every staging point in `dir` and removes them and `dir`; an entry that is still not empty after
/// its unmount stays (and is an error), so nothing is ever deleted through a mount.
pub fn release(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let path = e?.path();
        if path.file_name().is_some_and(|n| n == "plan.json") {
            continue;
        }
        unmount(&path)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_file(dir.join("plan.json")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(host: &str) -> Volume {
        Volume { host: host.into(), container: "/data".into(), read_only: false }
    }

    #[test]
    fn each_volume_gets_the_longest_allowed_root_that_contains_it() {
        let roots =
            VolumeSources::Beneath(vec!["/var/lib/jetship/volumes".into(), "/data".into(), "/data/models".into()]);
        let r = volume_requests(&[vol("/data/models/yolo"), vol("/data"), vol("/var/lib/jetship/volumes/a/b")], &roots)
            .unwrap();
        let roots_of: Vec<_> = r
            .iter()
            .map(|r| match &r.how {
                Resolve::Beneath { root } => root.display().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(roots_of, ["/data/models", "/data", "/var/lib/jetship/volumes"]);
        for bad in ["/datax", "/etc", "/data/../etc", "/"] {
            let err = volume_requests(&[vol(bad)], &roots).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("policy.allowed_host_paths"), "{err}");
        }
        assert!(volume_requests(&[vol("/x")], &VolumeSources::Beneath(vec![])).is_err(), "no roots refuse all");
        let named = volume_requests(&[vol("/anything")], &VolumeSources::AsNamed).unwrap();
        assert_eq!(named[0].how, Resolve::AsNamed);
    }

    #[test]
    fn beneath_refuses_symlinks_below_the_root_but_not_in_it_and_creates_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-root");
        std::fs::create_dir_all(real.join("app")).unwrap();
        std::os::unix::fs::symlink("/", real.join("app/esc")).unwrap();
        // The configured root may itself be a symlink (config is trusted).
        let root = dir.path().join("root-link");
        std::os::unix::fs::symlink(&real, &root).unwrap();
        let req = |p: &str| Request {
            host: root.join(p),
            container: "/d".into(),
            read_only: false,
            how: Resolve::Beneath { root: root.clone() },
        };
        assert!(resolve(&req("app")).is_ok());
        let err = resolve(&req("app/esc/etc")).unwrap_err().to_string();
        assert!(err.contains("symlink") && err.contains("real path"), "{err}");
        assert!(resolve(&req("app/esc")).is_err(), "the last component too");
        resolve(&req("app/new/deeper")).unwrap();
        assert!(real.join("app/new/deeper").is_dir(), "missing directories are made beneath the root");
        let outside = Request { host: "/etc".into(), ..req("x") };
        assert!(resolve(&outside).unwrap_err().to_string().contains("not under"));
    }

    #[test]
    fn only_a_socket_owned_by_root_passes_as_the_argus_socket() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let req = |name: &str| Request {
            host: tmp.join(name),
            container: "/tmp/argus_socket".into(),
            read_only: false,
            how: Resolve::RootSocket { root: dir.path().into() },
        };
        std::fs::write(tmp.join("file"), "").unwrap();
        assert!(resolve(&req("file")).unwrap_err().to_string().contains("not a Unix socket"));
        let _l = std::os::unix::net::UnixListener::bind(tmp.join("sock")).unwrap();
        std::os::unix::fs::symlink(tmp.join("sock"), tmp.join("link")).unwrap();
        assert!(resolve(&req("link")).unwrap_err().to_string().contains("symlink"));
        let owned_by_root = nix::unistd::geteuid().is_root();
        assert_eq!(resolve(&req("sock")).is_ok(), owned_by_root);
    }

    #[test]
    fn root_owned_refuses_symlinks_and_other_owners_and_in_root_keeps_symlinks_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("tmp/.X11-unix")).unwrap();
        std::fs::create_dir_all(root.join("usr/share/zoneinfo")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/share/zoneinfo/UTC"), "TZif").unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("tmp/etc-link")).unwrap();
        let req = |p: &str, how: Resolve| Request { host: root.join(p), container: "/x".into(), read_only: true, how };
        let owned = |p: &str| req(p, Resolve::RootOwned { root: root.clone() });
        let in_root = |p: &str| req(p, Resolve::InRoot { root: root.clone() });
        assert!(resolve(&owned("tmp/etc-link")).unwrap_err().to_string().contains("symlink"));
        if nix::unistd::geteuid().is_root() {
            assert!(resolve(&owned("tmp/.X11-unix")).is_ok());
            nix::unistd::chown(&root.join("tmp/.X11-unix"), Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
            let err = resolve(&owned("tmp/.X11-unix")).unwrap_err().to_string();
            assert!(err.contains("owned by uid 1000"), "{err}");
        }
        // The absolute target is taken inside the root: the fixture's zoneinfo, not this machine's.
        let fd = resolve(&in_root("etc/localtime")).unwrap();
        assert_eq!(std::fs::read_to_string(beneath::proc_fd_path(&fd)).unwrap(), "TZif");
        let err = resolve(&in_root("etc/timezone")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!root.join("etc/timezone").exists(), "nothing is created");
    }
}
