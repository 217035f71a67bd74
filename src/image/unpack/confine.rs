//! Confinement: resolving entry paths one component at a time from a descriptor of the root, never through a
//! symlink, and looking entries up in lower layers.

use super::*;

/// Metadata applied to a created entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub atime: Option<(i64, i64)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why applying one entry failed, before the entry name is attached.
pub(crate) enum Fail {
    Refuse(String),
    Io(&'static str, io::Error),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Io("file-system call", io::Error::from(e))
    }
}

pub(super) trait Ctx<T> {
    fn op(self, op: &'static str) -> std::result::Result<T, Fail>;
}

impl<T> Ctx<T> for std::result::Result<T, Errno> {
    fn op(self, op: &'static str) -> std::result::Result<T, Fail> {
        self.map_err(|e| Fail::Io(op, io::Error::from(e)))
    }
}

impl<T> Ctx<T> for io::Result<T> {
    fn op(self, op: &'static str) -> std::result::Result<T, Fail> {
        self.map_err(|e| Fail::Io(op, e))
    }
}

pub(super) fn show(comps: &[OsString]) -> String {
    if comps.is_empty() {
        return "/".to_string();
    }
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    v.join("/")
}

pub(super) const DIR_FLAGS: OFlag =
    OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

pub(super) fn is_whiteout_dev(st: &nix::sys::stat::FileStat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

pub(super) fn kind(st: &nix::sys::stat::FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Walks paths inside a root without ever following a symlink, keeping the descriptors of the last parent
/// chain so that entries in the same directory cost one `fstatat`.
pub(super) struct Resolver {
    pub(super) root: OwnedFd,
    pub(super) lowers: Vec<OwnedFd>,
    /// Open descriptors of the components of the last resolved parent, outermost first.
    pub(super) stack: Vec<(OsString, OwnedFd)>,
    /// Directories this walk created, with the times they must end with (copied from a lower layer).
    pub(super) created: Vec<(Components, Meta)>,
}

impl Resolver {
    pub(super) fn invalidate(&mut self) {
        self.stack.clear();
    }

    /// Opens the directory `comps` (empty = root). With `create`, missing directories are made (copying the
    /// metadata of a lower layer's directory at the same path, else root-owned 0755); without it, a missing
    /// component gives `Ok(None)`. A symlink or other non-directory on the way refuses the entry.
    pub(super) fn open_dir(
        &mut self,
        comps: &[OsString],
        create: bool,
    ) -> std::result::Result<Option<BorrowedFd<'_>>, Fail> {
        let common = self.stack.iter().zip(comps).take_while(|((name, _), c)| name == *c).count();
        self.stack.truncate(common);
        for i in common..comps.len() {
            let name = &comps[i];
            let parent = match self.stack.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let fd = match openat(parent, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    let lower = lower_lookup(&self.lowers, &comps[..=i])?;
                    let meta = match lower {
                        None => Meta { mode: 0o755, ..Meta::default() },
                        Some(Found::Dir(meta)) => meta,
                        Some(Found::Symlink(target)) => {
                            return Err(Fail::Refuse(format!(
                                "its path goes through `{}`, a symlink (to `{}`) in a lower layer",
                                show(&comps[..=i]),
                                target.to_string_lossy()
                            )))
                        }
                        Some(Found::Other) | Some(Found::File(_)) => {
                            return Err(Fail::Refuse(format!(
                                "`{}` is not a directory in a lower layer",
                                show(&comps[..=i])
                            )))
                        }
                    };
                    mkdirat(parent, name.as_os_str(), Mode::from_bits_truncate(0o700)).op("mkdir")?;
                    let fd = openat(parent, name.as_os_str(), DIR_FLAGS, Mode::empty()).op("open directory")?;
                    fchown(&fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))).op("chown")?;
                    fchmod(&fd, Mode::from_bits_truncate(meta.mode & 0o7777)).op("chmod")?;
                    for (k, v) in &meta.xattrs {
                        let _ = fset_xattr(&fd, k, v);
                    }
                    self.created.push((comps[..=i].to_vec(), meta));
                    fd
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    let st = fstatat(parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).op("stat")?;
                    if kind(&st) == libc::S_IFLNK {
                        let target = nix::fcntl::readlinkat(parent, name.as_os_str()).unwrap_or_default();
                        return Err(Fail::Refuse(format!(
                            "its path goes through `{}`, a symlink (to `{}`); entries are never written through symlinks",
                            show(&comps[..=i]),
                            target.to_string_lossy()
                        )));
                    }
                    if !create {
                        return Ok(None);
                    }
                    return Err(Fail::Refuse(format!("`{}` on its path is not a directory", show(&comps[..=i]))));
                }
                Err(e) => return Err(Fail::Io("open directory", e.into())),
            };
            self.stack.push((name.clone(), fd));
        }
        Ok(Some(match self.stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_fd(),
        }))
    }
}

pub(super) enum Found {
    Dir(Meta),
    Symlink(OsString),
    /// A regular file, with the lower directory holding it.
    File(OwnedFd),
    Other,
}

/// Looks `comps` up in the merged view of the lower snapshots (top first), honouring their whiteouts and
/// opaque directories the way overlayfs does.
pub(super) fn lower_lookup(lowers: &[OwnedFd], comps: &[OsString]) -> std::result::Result<Option<Found>, Fail> {
    if lowers.is_empty() || comps.is_empty() {
        return Ok(None);
    }
    // Descriptors of the directory at the current depth in each lower that still contributes.
    let mut active: Vec<OwnedFd> = Vec::new();
    for l in lowers {
        active.push(l.try_clone().op("dup")?);
    }
    for (i, name) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        let mut found: Option<Found> = None;
        for dir in &active {
            let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(Fail::Io("stat in lower layer", e.into())),
            };
            if is_whiteout_dev(&st) {
                break;
            }
            if kind(&st) == libc::S_IFDIR {
                let fd = openat(dir, name.as_os_str(), DIR_FLAGS, Mode::empty()).op("open lower directory")?;
                if found.is_none() {
                    let xattrs = list_xattrs(&fd).unwrap_or_default();
                    found = Some(Found::Dir(Meta {
                        mode: st.st_mode & 0o7777,
                        uid: st.st_uid,
                        gid: st.st_gid,
                        mtime: (st.st_mtime, st.st_mtime_nsec),
                        atime: None,
                        xattrs: xattrs.into_iter().filter(|(k, _)| !k.starts_with(b"trusted.overlay.")).collect(),
                    }));
                }
                let opaque = fget_xattr(&fd, b"trusted.overlay.opaque").ok().flatten().as_deref() == Some(b"y");
                next.push(fd);
                if opaque {
                    break;
                }
            } else {
                if found.is_none() {
                    found = Some(if kind(&st) == libc::S_IFLNK {
                        Found::Symlink(nix::fcntl::readlinkat(dir, name.as_os_str()).unwrap_or_default())
                    } else if kind(&st) == libc::S_IFREG {
                        Found::File(dir.try_clone().op("dup")?)
                    } else {
                        Found::Other
                    });
                }
                break;
            }
        }
        if last {
            return Ok(found);
        }
        match found {
            Some(Found::Dir(_)) => active = next,
            // A non-directory above the path hides everything below it.
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Removes `name` under `dir` without following it; directories go recursively.
pub(super) fn remove_at(dir: &OwnedFd, name: &OsStr, is_dir: bool) -> std::result::Result<(), Fail> {
    if is_dir {
        // std's remove_dir_all never follows symlinks inside the tree it removes.
        let path = proc_path(dir, name);
        std::fs::remove_dir_all(&path).op("remove directory")
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).op("remove")
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path that reaches `name` through an already-confined directory descriptor.
pub(super) fn proc_path(dir: &impl AsRawFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

pub(crate) fn read_dir_fd(fd: &impl AsRawFd) -> std::result::Result<Vec<OsString>, Fail> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).op("read directory")? {
        out.push(e.op("read directory")?.file_name());
    }
    out.sort();
    Ok(out)
}
