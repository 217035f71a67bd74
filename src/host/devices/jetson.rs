//! What each Jetson convenience ([`Convenience`]) gives a container: the host files, sockets, device nodes and
//! environment that jetson-containers' `run.sh` adds to `docker run` for it, found under the host root.
//!
//! Plans only: every path is looked up beneath the host root without a symlink leading out of it (files in the
//! world-writable `/tmp` must be root's and reached without any symlink; `/etc` and `/proc` files may be
//! symlinks inside the root, as `/etc/localtime` is), and the result is a [`DeviceEdits`] value whose
//! [`HostFile`]s the runtime resolves again from a descriptor when it stages them. Never writes to the host and
//! never starts anything. What the host lacks is either refused ([`JetsonError`]: the convenience cannot do
//! what it is for) or skipped with a warning (an optional part), per item as docs/runtime.md lists.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

pub use crate::base::jetson::Convenience;

use super::cameras::ARGUS_SOCKET;
use super::inject::{BindMount, DeviceEdits, DeviceNode, HostFile, HostFileCheck};
use crate::os::beneath::{self, Symlinks};
use crate::os::fsutil::under_root;

/// The X11 socket directory (`-v /tmp/.X11-unix/:/tmp/.X11-unix`).
pub(crate) const X11_DIR: &str = "/tmp/.X11-unix";
/// The X authority file run.sh writes for containers (`XAUTH=/tmp/.docker.xauth`).
pub(crate) const DOCKER_XAUTH: &str = "/tmp/.docker.xauth";
/// Where run.sh puts the board model for containers (`/proc` files cannot be mounted by Docker).
pub(crate) const MODEL_IN_CONTAINER: &str = "/tmp/nv_jetson_model";
/// The device-tree model the board model comes from.
pub(crate) const MODEL_SOURCE: &str = "/proc/device-tree/model";
/// Most device nodes one convenience passes (a `/dev/bus/usb` with more is refused, not truncated).
const MAX_NODES: usize = 1024;
/// How deep a device directory is walked (`/dev/snd/by-path/...`, `/dev/bus/usb/001/002`).
const MAX_DEPTH: usize = 4;

/// Why a convenience cannot be given on this host; each names the convenience, the host path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JetsonError {
    /// A part the convenience exists for is missing or unusable.
    #[error("jetson convenience `{convenience}`: {path}: {message}")]
    Unavailable { convenience: Convenience, path: String, message: String },
}

fn unavailable(convenience: Convenience, path: &str, message: impl Into<String>) -> JetsonError {
    JetsonError::Unavailable { convenience, path: path.into(), message: message.into() }
}

/// What the conveniences `wanted` add for a container whose own environment is `env` (`KEY=VALUE`; a `DISPLAY`
/// or `XAUTHORITY` it sets is kept), found under `root`. `warnings` gets each optional part that was skipped.
pub fn edits(
    root: &Path,
    wanted: &[Convenience],
    env: &[String],
    warnings: &mut Vec<String>,
) -> Result<DeviceEdits, JetsonError> {
    let mut out = DeviceEdits::default();
    let mut seen = Vec::new();
    for &c in wanted {
        if seen.contains(&c) {
            continue;
        }
        seen.push(c);
        add(&mut out, root, c, env, warnings)?;
    }
    Ok(out)
}

/// Adds what [`edits`] finds for `wanted` to `into` (a container's camera and GPU edits): the one call both
/// backends make. Skipped parts are logged as warnings.
pub(crate) fn add_edits(
    into: &mut DeviceEdits,
    root: &Path,
    wanted: &[Convenience],
    env: &[String],
) -> Result<(), JetsonError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let mut warnings = Vec::new();
    let found = edits(root, wanted, env, &mut warnings)?;
    for w in warnings {
        tracing::warn!(warning = %w, "jetson convenience");
    }
    into.env.extend(found.env);
    for d in found.devices {
        into.push_device(d);
    }
    for f in found.host_files {
        into.push_host_file(f);
    }
    Ok(())
}

fn add(
    out: &mut DeviceEdits,
    root: &Path,
    c: Convenience,
    env: &[String],
    warnings: &mut Vec<String>,
) -> Result<(), JetsonError> {
    match c {
        Convenience::Argus => {
            check_argus(root).map_err(|m| unavailable(c, ARGUS_SOCKET, m))?;
            out.push_host_file(host_file(root, ARGUS_SOCKET, ARGUS_SOCKET, false, HostFileCheck::RootSocket));
        }
        Convenience::Display => display(out, root, env, warnings)?,
        Convenience::Audio => device_tree(out, root, c, "/dev/snd", warnings)?,
        Convenience::Usb => device_tree(out, root, c, "/dev/bus/usb", warnings)?,
        Convenience::Localtime => {
            for path in ["/etc/localtime", "/etc/timezone"] {
                match open_in_root(root, path) {
                    Ok(_) => out.push_host_file(host_file(root, path, path, true, HostFileCheck::InRoot)),
                    Err(e) => warnings.push(format!("jetson convenience `localtime`: {path} skipped: {e}")),
                }
            }
        }
        Convenience::L4tRelease => {
            let release = "/etc/nv_tegra_release";
            open_in_root(root, release).map_err(|e| {
                unavailable(c, release, format!("{e}: this host is not a Jetson (no L4T release file)"))
            })?;
            out.push_host_file(host_file(root, release, release, true, HostFileCheck::InRoot));
            let enctune = "/etc/enctune.conf";
            match open_in_root(root, enctune) {
                Ok(_) => out.push_host_file(host_file(root, enctune, enctune, true, HostFileCheck::InRoot)),
                Err(e) => warnings.push(format!("jetson convenience `l4t-release`: {enctune} skipped: {e}")),
            }
        }
        Convenience::Model => {
            open_in_root(root, MODEL_SOURCE).map_err(|e| {
                unavailable(c, MODEL_SOURCE, format!("{e}: no device-tree model (this host is not a Jetson)"))
            })?;
            out.push_host_file(host_file(root, MODEL_SOURCE, MODEL_IN_CONTAINER, true, HostFileCheck::InRoot));
        }
    }
    Ok(())
}

fn host_file(root: &Path, host: &str, container: &str, read_only: bool, check: HostFileCheck) -> HostFile {
    HostFile { mount: BindMount { host: under_root(root, host), container: container.into(), read_only }, check }
}

fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?)
}

/// Opens host path `abs` beneath `root` with symlinks resolved inside the root (`O_PATH`); errors read as
/// "not found" or "not readable".
fn open_in_root(root: &Path, abs: &str) -> Result<OwnedFd, String> {
    let rootfd = open_root(root).map_err(|e| format!("cannot open the host root {}: {e}", root.display()))?;
    beneath::open(&rootfd, Path::new(abs), Symlinks::InRoot, OFlag::O_PATH).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => "not found on this host".to_owned(),
        _ => format!("cannot be opened ({e})"),
    })
}

/// Opens `abs` beneath `root` with no symlink anywhere below the root and checks it is owned by root: for
/// paths in the world-writable `/tmp`. `kind` is the file type (`libc::S_IFSOCK`, `S_IFDIR`, `S_IFREG`).
fn open_root_owned(root: &Path, abs: &str, kind: libc::mode_t) -> Result<OwnedFd, String> {
    let rootfd = open_root(root).map_err(|e| format!("cannot open the host root {}: {e}", root.display()))?;
    let fd = beneath::open(&rootfd, Path::new(abs), Symlinks::Refuse, OFlag::O_PATH).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => "not found on this host".to_owned(),
            Some(libc::ELOOP) | Some(libc::EXDEV) => {
                "is (or lies below) a symlink, which is refused in a directory any user can write".to_owned()
            }
            _ => format!("cannot be opened ({e})"),
        }
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("cannot be examined ({e})"))?;
    if st.st_mode & libc::S_IFMT != kind {
        let want = match kind {
            libc::S_IFSOCK => "a Unix socket",
            libc::S_IFDIR => "a directory",
            _ => "a regular file",
        };
        return Err(format!("is not {want}"));
    }
    if st.st_uid != 0 {
        return Err(format!(
            "is owned by uid {}, not root: in a directory any user can write, only root's is passed to containers",
            st.st_uid
        ));
    }
    Ok(fd)
}

/// Whether nvargus-daemon answers: its socket (root's, no symlink) accepts a connection. A full backlog
/// (`EAGAIN`) counts as answering: the daemon is there, only busy. The connection is closed at once.
pub(crate) fn check_argus(root: &Path) -> Result<(), String> {
    let fd = open_root_owned(root, ARGUS_SOCKET, libc::S_IFSOCK)
        .map_err(|e| format!("{e}; nvargus-daemon makes it (`sudo systemctl restart nvargus-daemon`)"))?;
    match connect_nonblocking(&beneath::proc_fd_path(&fd)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
        Err(e) => Err(format!(
            "nvargus-daemon does not answer on it ({e}); check `systemctl status nvargus-daemon` and restart it"
        )),
    }
}

/// `connect(2)` of a non-blocking Unix stream socket to `path` (the `/proc/self/fd/N` of the socket that was
/// checked, so a socket swapped in meanwhile is not the one dialled).
fn connect_nonblocking(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; zeroes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscalls on a descriptor this function owns; addr outlives the call.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s);
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(sock.as_raw_fd(), &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `display`: run.sh's `-e DISPLAY=$DISPLAY -v /tmp/.X11-unix/:/tmp/.X11-unix -v $XAUTH:$XAUTH -e
/// XAUTHORITY=$XAUTH`. The socket directory must be root's (the X server makes it); `DISPLAY` is the
/// container's own when it sets one, else the lowest `:N` with a socket `XN` there. The directory is mounted
/// read-only: connecting to a socket needs no write access to its file system, and the container cannot plant
/// sockets for other clients. `/tmp/.docker.xauth` (root's regular file) is passed when present.
fn display(out: &mut DeviceEdits, root: &Path, env: &[String], warnings: &mut Vec<String>) -> Result<(), JetsonError> {
    let c = Convenience::Display;
    let dir = open_root_owned(root, X11_DIR, libc::S_IFDIR)
        .map_err(|e| unavailable(c, X11_DIR, format!("{e}; is an X server running on this device?")))?;
    let has = |key: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
    if !has("DISPLAY") {
        let entries = std::fs::read_dir(beneath::proc_fd_path(&dir))
            .map_err(|e| unavailable(c, X11_DIR, format!("cannot be listed ({e})")))?;
        let lowest = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t)))
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('X')?.parse::<u32>().ok())
            .min()
            .ok_or_else(|| unavailable(c, X11_DIR, "holds no X server socket (X0, X1, ...); start the X server"))?;
        out.env.push(format!("DISPLAY=:{lowest}"));
    }
    out.push_host_file(host_file(root, X11_DIR, X11_DIR, true, HostFileCheck::RootOwned));
    if has("XAUTHORITY") {
        return Ok(());
    }
    match open_root_owned(root, DOCKER_XAUTH, libc::S_IFREG) {
        Ok(_) => {
            out.push_host_file(host_file(root, DOCKER_XAUTH, DOCKER_XAUTH, true, HostFileCheck::RootOwned));
            out.env.push(format!("XAUTHORITY={DOCKER_XAUTH}"));
        }
        Err(e) => warnings.push(format!(
            "jetson convenience `display`: {DOCKER_XAUTH} {e}: no XAUTHORITY given; the X server must allow root \
             (`xhost +si:localuser:root`) or root must write that file (`xauth nlist $DISPLAY | sed -e \
             's/^..../ffff/' | sudo xauth -f {DOCKER_XAUTH} nmerge -`)"
        )),
    }
    Ok(())
}

/// `audio` and `usb`: run.sh's `--device /dev/snd` and `--device /dev/bus/usb`, which Docker expands to every
/// char and block node below the directory (symlinks skipped). A host without the directory gets a warning
/// (no sound card, no USB controller): the container starts without it, as it would with nothing plugged in.
fn device_tree(
    out: &mut DeviceEdits,
    root: &Path,
    c: Convenience,
    dir: &str,
    warnings: &mut Vec<String>,
) -> Result<(), JetsonError> {
    let rootfd = open_root(root).map_err(|e| unavailable(c, dir, format!("cannot open the host root: {e}")))?;
    let top = match beneath::open(&rootfd, Path::new(dir), Symlinks::Refuse, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            warnings.push(format!("jetson convenience `{c}`: {dir} not found on this host; no nodes passed"));
            return Ok(());
        }
        Err(e) => return Err(unavailable(c, dir, format!("cannot be opened without following a symlink ({e})"))),
    };
    let mut nodes = Vec::new();
    walk_nodes(&top, Path::new(dir), 0, &mut nodes).map_err(|m| unavailable(c, dir, m))?;
    if nodes.is_empty() {
        warnings.push(format!("jetson convenience `{c}`: {dir} holds no device nodes"));
    }
    for n in nodes {
        out.push_device(n);
    }
    Ok(())
}

/// The device nodes below directory `fd` (host path `at`), depth first in name order; symlinks are not
/// followed and not passed (by-id style names point at nodes that are passed anyway).
fn walk_nodes(fd: &OwnedFd, at: &Path, depth: usize, nodes: &mut Vec<DeviceNode>) -> Result<(), String> {
    let listing = beneath::proc_fd_path(fd);
    let mut names: Vec<_> = std::fs::read_dir(&listing)
        .map_err(|e| format!("{} cannot be listed ({e})", at.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let host: PathBuf = at.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(listing.join(&name)) else { continue };
        let ft = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                continue;
            }
            let sub = beneath::open(fd, Path::new(&name), Symlinks::Refuse, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|e| format!("{} cannot be opened ({e})", host.display()))?;
            walk_nodes(&sub, &host, depth + 1, nodes)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            if nodes.len() >= MAX_NODES {
                return Err(format!("holds more than {MAX_NODES} device nodes; pass the ones needed with `devices`"));
            }
            nodes.push(DeviceNode {
                path: host,
                kind: if ft.is_char_device() { 'c' } else { 'b' },
                major: nix::sys::stat::major(meta.rdev()) as i64,
                minor: nix::sys::stat::minor(meta.rdev()) as i64,
                file_mode: Some(meta.mode() & 0o777),
                access: "rwm".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        dir
    }

    fn mounts(e: &DeviceEdits) -> Vec<(String, bool, HostFileCheck)> {
        e.host_files.iter().map(|f| (f.mount.container.display().to_string(), f.mount.read_only, f.check)).collect()
    }

    #[test]
    fn information_files_are_read_only_and_optional_parts_warn() {
        let root = root_with(&[
            ("/etc/nv_tegra_release", "# R36 (release), REVISION: 4.3\n"),
            ("/usr/share/zoneinfo/Europe/Berlin", "TZif"),
            ("/proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\0"),
        ]);
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Europe/Berlin", root.path().join("etc/localtime")).unwrap();
        let mut warnings = Vec::new();
        let e = edits(
            root.path(),
            &[Convenience::Localtime, Convenience::L4tRelease, Convenience::Model, Convenience::Model],
            &[],
            &mut warnings,
        )
        .unwrap();
        assert_eq!(
            mounts(&e),
            [
                ("/etc/localtime".to_string(), true, HostFileCheck::InRoot),
                ("/etc/nv_tegra_release".to_string(), true, HostFileCheck::InRoot),
                ("/tmp/nv_jetson_model".to_string(), true, HostFileCheck::InRoot),
            ]
        );
        assert_eq!(e.host_files[2].mount.host, root.path().join("proc/device-tree/model"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("/etc/timezone skipped: not found"), "{warnings:?}");
        assert!(warnings[1].contains("/etc/enctune.conf skipped"), "{warnings:?}");
    }

    #[test]
    fn a_symlink_leading_out_of_the_root_finds_nothing_outside() {
        let root = root_with(&[("/proc/device-tree/model", "x")]);
        // Absolute: resolved inside the root, where there is no /etc/hostname.
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("etc/nv_tegra_release")).unwrap();
        let err = edits(root.path(), &[Convenience::L4tRelease], &[], &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("`l4t-release`") && err.contains("not found") && err.contains("not a Jetson"), "{err}");
        std::fs::remove_file(root.path().join("etc/nv_tegra_release")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/hostname", root.path().join("etc/nv_tegra_release")).unwrap();
        assert!(edits(root.path(), &[Convenience::L4tRelease], &[], &mut Vec::new()).is_err(), "`..` stays inside");
    }

    #[test]
    fn missing_model_and_argus_are_refused_naming_the_convenience() {
        let root = root_with(&[]);
        let err = edits(root.path(), &[Convenience::Model], &[], &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("`model`") && err.contains("/proc/device-tree/model"), "{err}");
        let err = edits(root.path(), &[Convenience::Argus], &[], &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("`argus`") && err.contains("nvargus-daemon"), "{err}");
    }

    #[test]
    fn argus_must_be_roots_socket_that_accepts() {
        let root = root_with(&[]);
        let tmp = root.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let sock = tmp.join("argus_socket");
        std::fs::write(&sock, "").unwrap();
        assert!(check_argus(root.path()).unwrap_err().contains("not a Unix socket"));
        std::fs::remove_file(&sock).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let root_user = nix::unistd::geteuid().is_root();
        assert_eq!(check_argus(root.path()).is_ok(), root_user, "{:?}", check_argus(root.path()));
        drop(listener);
        // The file stays, nobody listens: the daemon is gone.
        if root_user {
            let err = check_argus(root.path()).unwrap_err();
            assert!(err.contains("does not answer"), "{err}");
        }
        std::fs::remove_file(&sock).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(tmp.join("other")).unwrap();
        std::os::unix::fs::symlink(tmp.join("other"), &sock).unwrap();
        assert!(check_argus(root.path()).unwrap_err().contains("symlink"));
    }

    #[test]
    fn display_takes_the_lowest_socket_and_keeps_the_containers_own() {
        let root = root_with(&[]);
        let x = root.path().join("tmp/.X11-unix");
        std::fs::create_dir_all(&x).unwrap();
        let mut warnings = Vec::new();
        let err = edits(root.path(), &[Convenience::Display], &[], &mut warnings).map(|_| ()).unwrap_err();
        if !nix::unistd::geteuid().is_root() {
            return; // the directory is not root's
        }
        assert!(err.to_string().contains("no X server socket"), "{err}");
        let _x1 = std::os::unix::net::UnixListener::bind(x.join("X1")).unwrap();
        let _x0 = std::os::unix::net::UnixListener::bind(x.join("X0")).unwrap();
        let e = edits(root.path(), &[Convenience::Display], &[], &mut warnings).unwrap();
        assert_eq!(e.env, ["DISPLAY=:0"]);
        assert_eq!(mounts(&e), [("/tmp/.X11-unix".to_string(), true, HostFileCheck::RootOwned)]);
        assert!(warnings.iter().any(|w| w.contains("no XAUTHORITY")), "{warnings:?}");
        std::fs::write(root.path().join("tmp/.docker.xauth"), "cookie").unwrap();
        let e = edits(root.path(), &[Convenience::Display], &["DISPLAY=:1".into()], &mut Vec::new()).unwrap();
        assert_eq!(e.env, ["XAUTHORITY=/tmp/.docker.xauth"]);
        assert_eq!(e.host_files.len(), 2);
    }

    #[test]
    fn device_trees_pass_every_node_and_skip_symlinks() {
        if !nix::unistd::geteuid().is_root() {
            return; // mknod needs root
        }
        let root = root_with(&[("/dev/snd/not-a-node", "")]);
        let mk = |p: &str, major, minor| {
            let p = root.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            nix::sys::stat::mknod(
                &p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(major, minor),
            )
            .unwrap();
        };
        mk("dev/snd/controlC0", 116, 0);
        mk("dev/snd/pcmC0D0p", 116, 16);
        std::fs::create_dir_all(root.path().join("dev/snd/by-path")).unwrap();
        std::os::unix::fs::symlink("../controlC0", root.path().join("dev/snd/by-path/platform-sound")).unwrap();
        mk("dev/bus/usb/001/001", 189, 0);
        let mut warnings = Vec::new();
        let e = edits(root.path(), &[Convenience::Audio, Convenience::Usb], &[], &mut warnings).unwrap();
        let got: Vec<_> = e.devices.iter().map(|d| (d.path.display().to_string(), d.major, d.minor)).collect();
        assert_eq!(
            got,
            [
                ("/dev/snd/controlC0".to_string(), 116, 0),
                ("/dev/snd/pcmC0D0p".to_string(), 116, 16),
                ("/dev/bus/usb/001/001".to_string(), 189, 0)
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        std::fs::remove_dir_all(root.path().join("dev/bus")).unwrap();
        std::fs::create_dir_all(root.path().join("elsewhere/usb")).unwrap();
        std::fs::create_dir_all(root.path().join("dev/bus")).unwrap();
        std::os::unix::fs::symlink("../../elsewhere/usb", root.path().join("dev/bus/usb")).unwrap();
        let err = edits(root.path(), &[Convenience::Usb], &[], &mut warnings).unwrap_err().to_string();
        assert!(err.contains("`usb`") && err.contains("symlink"), "{err}");
        std::fs::remove_file(root.path().join("dev/bus/usb")).unwrap();
        let e = edits(root.path(), &[Convenience::Usb], &[], &mut warnings).unwrap();
        assert!(e.devices.is_empty());
        assert!(warnings.last().unwrap().contains("/dev/bus/usb not found"), "{warnings:?}");
    }
}
