//! Named network namespaces for bridge-networked containers, the way `ip netns add` makes them: an empty file
//! under `<run_dir>/netns/` with a new network namespace bind-mounted on it, so the namespace outlives the
//! thread that made it and the OCI spec can name it by path. The run dir is a tmpfs: a reboot takes them all.
//!
//! Owns `<run_dir>/netns/` only; what is configured inside a namespace is [`super::cni`]'s.

use std::io;
use std::path::{Path, PathBuf};

/// `NSFS_MAGIC`: the file-system type of a namespace file (`statfs` of a mounted netns).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Where the namespaces live under the run dir.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("netns")
}

/// The namespace file of container `id`.
pub fn path(run_dir: &Path, id: &str) -> PathBuf {
    dir(run_dir).join(id)
}

/// Whether `path` is a mounted namespace (not just the empty file a crash left).
// `f_type` is signed on glibc and unsigned on musl: the cast is not a no-op everywhere.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Creates a new network namespace and mounts it on `path` (made if missing). A thread of its own unshares
/// its network namespace and bind-mounts it, so no other thread of the agent changes namespace. Fails when
/// `path` already holds a namespace.
pub fn create(path: &Path) -> io::Result<()> {
    if is_mounted(path) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is already a namespace", path.display())));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(Some(own.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unmounts the namespace on `path` (lazily: a process still inside keeps it until it leaves) and removes
/// the file. Nothing there is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The container ids that have a namespace file under the run dir (mounted or left empty by a crash).
pub fn list(run_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| super::conmon::valid_id(id))
        .collect();
    ids.sort();
    ids
}
