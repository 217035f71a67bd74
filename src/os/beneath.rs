//! Opening a path beneath a directory descriptor so that no symlink leads out of it: `openat2(2)` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (or `RESOLVE_IN_ROOT`) where the kernel has it (Linux 5.6+), and a
//! walk of one `openat(O_PATH | O_NOFOLLOW)` per component otherwise (JetPack 4's 4.9 kernel).
//!
//! Owns only the resolution; callers decide which directory is the root and what to do with the descriptor
//! (bind-mount it through `/proc/self/fd/N`, read it with a size cap). Because the caller keeps the descriptor,
//! a component swapped for a symlink after the resolution changes nothing: the descriptor still names what was
//! resolved.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};

/// Symlinks met inside the root during one resolution before it fails with `ELOOP` (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// What a symlink below the root means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Any symlink (and any `..`) fails the resolution: the path must name the object itself. For host paths
    /// below an allowed root that a container can write to.
    Refuse,
    /// Symlinks are followed as if the root were `/` (absolute targets and `..` stay inside it), as a chroot
    /// would. For files of an image's root file system.
    InRoot,
}

/// How the path is resolved: the kernel's `openat2`, or the portable walk. Both give the same answer;
/// [`open`] picks `openat2` and falls back to the walk where the kernel lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Openat2,
    Walk,
}

/// Opens `path` (relative to `root`; a leading `/` is ignored) with `flags` (`O_CLOEXEC` is added), resolving
/// it as `symlinks` says. Errors: `ELOOP` for a refused symlink, `EXDEV` for a path that would leave the root,
/// `ENOENT`/`ENOTDIR` as usual.
///
/// `openat2` answers `EAGAIN` when a rename or a mount anywhere on the host raced a `..` it resolved: it is tried
/// again a few times, then the walk answers (on a busy host, with containers starting beside it, the race is
/// common enough to fail a camera's sibling lookup or an image's `/etc/passwd`).
pub fn open(root: impl AsFd, path: &Path, symlinks: Symlinks, flags: OFlag) -> io::Result<OwnedFd> {
    for _ in 0..OPENAT2_TRIES {
        match open_with(root.as_fd(), path, symlinks, flags, Method::Openat2) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            // No openat2 (kernel older than 5.6, or a seccomp filter of an outer container that refuses it).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => break,
            other => return other,
        }
    }
    open_with(root, path, symlinks, flags, Method::Walk)
}

/// How often [`open`] asks `openat2` before the walk when it keeps answering `EAGAIN`.
const OPENAT2_TRIES: usize = 8;

/// [`open`] with the method chosen by the caller (tests run both).
pub(crate) fn open_with(
    root: impl AsFd,
    path: &Path,
    symlinks: Symlinks,
    flags: OFlag,
    method: Method,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    match method {
        Method::Openat2 => {
            let resolve = match symlinks {
                Symlinks::Refuse => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
                Symlinks::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            };
            let rel = relative(path);
            let rel: &OsStr = if rel.is_empty() { OsStr::new(".") } else { OsStr::from_bytes(rel) };
            let how = OpenHow::new().flags(flags).resolve(resolve);
            nix::fcntl::openat2(root.as_fd(), rel, how).map_err(io::Error::from)
        }
        Method::Walk => walk(root.as_fd(), path, symlinks, flags),
    }
}

fn relative(path: &Path) -> &[u8] {
    let bytes = path.as_os_str().as_bytes();
    let start = bytes.iter().position(|&b| b != b'/').unwrap_or(bytes.len());
    &bytes[start..]
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

/// One `openat(O_PATH | O_NOFOLLOW)` per component from `root`, keeping the chain of directory descriptors so
/// `..` (in-root mode) steps back without ever going above `root`.
fn walk(root: std::os::fd::BorrowedFd<'_>, path: &Path, symlinks: Symlinks, flags: OFlag) -> io::Result<OwnedFd> {
    let walk_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut stack: Vec<OwnedFd> = vec![dup(root)?];
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            match symlinks {
                Symlinks::Refuse => return Err(Errno::EXDEV.into()),
                Symlinks::InRoot => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
            }
        }
        let parent = stack.last().expect("the root stays on the stack");
        let fd = nix::fcntl::openat(parent, name.as_os_str(), walk_flags, Mode::empty())?;
        let st = fstat(&fd)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if symlinks == Symlinks::Refuse {
                return Err(Errno::ELOOP.into());
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP.into());
            }
            // An O_PATH descriptor of a symlink reads its target with an empty path.
            let target = nix::fcntl::readlinkat(&fd, "")?;
            let target = Path::new(&target);
            if target.is_absolute() {
                stack.truncate(1);
            }
            for (i, c) in components(target).enumerate() {
                pending.insert(i, c);
            }
            continue;
        }
        if pending.is_empty() {
            if flags.contains(OFlag::O_PATH) {
                return Ok(fd);
            }
            // The same name again, for real: swapped for a symlink meanwhile, O_NOFOLLOW fails with ELOOP, and
            // whatever else is there now still lies in the resolved directory.
            return Ok(nix::fcntl::openat(parent, name.as_os_str(), flags | OFlag::O_NOFOLLOW, Mode::empty())?);
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno::ENOTDIR.into());
        }
        stack.push(fd);
    }
    // The root itself (an empty path, or `..` at the top).
    let last = stack.pop().expect("the root stays on the stack");
    if flags.contains(OFlag::O_PATH) {
        return Ok(last);
    }
    Ok(nix::fcntl::openat(&last, ".", flags, Mode::empty())?)
}

/// The `/proc/self/fd/N` path of `fd`: what `mount(2)` and `open(2)` take to act on exactly that object.
pub fn proc_fd_path(fd: &impl std::os::fd::AsRawFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root(dir: &Path) -> OwnedFd {
        nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    fn read(fd: OwnedFd) -> String {
        use std::io::Read;
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    fn errno(r: io::Result<OwnedFd>) -> i32 {
        r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
    }

    /// `outside/secret`, and inside `root`: `a/b/file`, `esc -> /`, `up -> ../../outside`, `a/rel -> b/file`,
    /// `abs -> /a/b/file`.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), "host").unwrap();
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/file"), "inside").unwrap();
        symlink("/", r.join("esc")).unwrap();
        symlink("../../outside", r.join("up")).unwrap();
        symlink("b/file", r.join("a/rel")).unwrap();
        symlink("/a/b/file", r.join("abs")).unwrap();
        (dir, r)
    }

    #[test]
    fn refuse_mode_opens_plain_paths_and_fails_on_any_symlink_or_parent_with_both_methods() {
        let (dir, r) = tree();
        let rfd = root(&r);
        for m in [Method::Openat2, Method::Walk] {
            let fd = open_with(&rfd, Path::new("/a/b/file"), Symlinks::Refuse, OFlag::O_RDONLY, m).unwrap();
            assert_eq!(read(fd), "inside", "{m:?}");
            assert!(open_with(&rfd, Path::new("a/b"), Symlinks::Refuse, OFlag::O_PATH, m).is_ok(), "{m:?}");
            assert!(open_with(&rfd, Path::new(""), Symlinks::Refuse, OFlag::O_PATH, m).is_ok(), "{m:?}");
            for bad in ["esc", "esc/etc", "up/secret", "a/rel", "abs"] {
                let e = errno(open_with(&rfd, Path::new(bad), Symlinks::Refuse, OFlag::O_PATH, m));
                assert_eq!(e, libc::ELOOP, "{m:?} {bad}");
            }
            let e = errno(open_with(&rfd, Path::new("a/../../outside/secret"), Symlinks::Refuse, OFlag::O_RDONLY, m));
            assert_eq!(e, libc::EXDEV, "{m:?}");
        }
        drop(dir);
    }

    #[test]
    fn in_root_mode_follows_symlinks_inside_the_root_only_with_both_methods() {
        let (dir, r) = tree();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/secret"), "image's").unwrap();
        let rfd = root(&r);
        for m in [Method::Openat2, Method::Walk] {
            let open = |p: &str| open_with(&rfd, Path::new(p), Symlinks::InRoot, OFlag::O_RDONLY, m);
            assert_eq!(read(open("a/rel").unwrap()), "inside", "{m:?}");
            assert_eq!(read(open("abs").unwrap()), "inside", "{m:?}");
            // `esc -> /` is the image's own root, not the host's.
            assert_eq!(read(open("esc/etc/secret").unwrap()), "image's", "{m:?}");
            assert_eq!(read(open("../../../a/b/file").unwrap()), "inside", "{m:?}");
            // `up -> ../../outside` stops at the root, where there is no `outside`.
            assert_eq!(errno(open("up/secret")), libc::ENOENT, "{m:?}");
        }
        drop(dir);
    }

    #[test]
    fn a_path_through_dotdot_opens_while_the_host_renames_beside_it() {
        let (dir, r) = tree();
        let rfd = root(&r);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Any rename on the host while openat2 resolves a `..` makes it answer EAGAIN.
        let renamer = {
            let (stop, d) = (stop.clone(), dir.path().to_path_buf());
            std::fs::write(d.join("x"), "").unwrap();
            std::thread::spawn(move || {
                let mut renames = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::rename(d.join("x"), d.join("y")).unwrap();
                    std::fs::rename(d.join("y"), d.join("x")).unwrap();
                    renames += 2;
                }
                renames
            })
        };
        let (mut raced, tries) = (0, 20_000);
        for _ in 0..tries {
            let path = Path::new("a/b/../../a/../a/b/../b/file");
            if errno(open_with(&rfd, path, Symlinks::InRoot, OFlag::O_RDONLY, Method::Openat2)) == libc::EAGAIN {
                raced += 1;
            }
            assert_eq!(read(open(&rfd, path, Symlinks::InRoot, OFlag::O_RDONLY).unwrap()), "inside");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let renames = renamer.join().unwrap();
        println!("{raced} of {tries} plain openat2 calls raced one of {renames} renames");
        drop(dir);
    }

    #[test]
    fn a_symlink_loop_ends_with_eloop() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let rfd = root(dir.path());
        for m in [Method::Openat2, Method::Walk] {
            assert_eq!(errno(open_with(&rfd, Path::new("a"), Symlinks::InRoot, OFlag::O_RDONLY, m)), libc::ELOOP);
        }
    }

    #[test]
    fn a_descriptor_keeps_naming_what_was_resolved_after_a_swap() {
        let (dir, r) = tree();
        let rfd = root(&r);
        let fd = open(&rfd, Path::new("a/b"), Symlinks::Refuse, OFlag::O_PATH).unwrap();
        std::fs::rename(r.join("a/b"), r.join("a/moved")).unwrap();
        symlink("/", r.join("a/b")).unwrap();
        let via_fd = std::fs::read_to_string(proc_fd_path(&fd).join("file")).unwrap();
        assert_eq!(via_fd, "inside");
        drop(dir);
    }
}
