//! Applying tar entries to the tree: files, directories, links, device nodes, whiteouts, owners, modes and
//! times.

use super::*;

/// Applies entries (from a tar stream or from a snapshot tree) to a destination root.
pub(crate) struct Applier {
    pub(super) res: Resolver,
    pub(super) whiteouts: WhiteoutMode,
    pub(super) policy: UnpackPolicy,
    /// Paths written by this layer; in `Apply` mode an opaque marker keeps these and removes the rest.
    pub(super) upper: HashSet<Components>,
    /// Directories whose times are set at the end (after their children are written).
    pub(super) dir_times: Vec<(Components, Meta)>,
    /// In `Apply` mode, existing directories this layer writes into, with the times they had before: restored
    /// at the end, as the layer's own tree did not change them (umoci and Docker keep them too).
    pub(super) restore: Vec<(Components, Meta)>,
    pub(super) noted: HashSet<Components>,
    pub(super) noted_last: Option<Components>,
    pub(super) stats: UnpackStats,
    pub(super) buf: Vec<u8>,
    pub(super) is_root: bool,
    /// Meters a layer unpack against its budget; `None` when applying trusted snapshots.
    pub(crate) meter: Option<Meter>,
    /// Why the meter stopped the unpack (the entry's own error only says it was stopped).
    pub(crate) stopped: Option<UnpackError>,
}

impl Applier {
    pub(crate) fn new(dest: &Destination, policy: UnpackPolicy) -> Result<Applier> {
        let open = |p: &Path| {
            nix::fcntl::open(p, DIR_FLAGS, Mode::empty())
                .map_err(|e| UnpackError::Destination { path: p.to_path_buf(), source: e.into() })
        };
        let root = open(&dest.root)?;
        let lowers = match dest.whiteouts {
            WhiteoutMode::Overlay => dest.lowers.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?,
            WhiteoutMode::Apply => Vec::new(),
        };
        Ok(Applier {
            res: Resolver { root, lowers, stack: Vec::new(), created: Vec::new() },
            whiteouts: dest.whiteouts,
            policy,
            upper: HashSet::new(),
            dir_times: Vec::new(),
            restore: Vec::new(),
            noted: HashSet::new(),
            noted_last: None,
            stats: UnpackStats::default(),
            buf: vec![0; 256 * 1024],
            is_root: nix::unistd::geteuid().is_root(),
            meter: None,
            stopped: None,
        })
    }

    /// What this layer has used of its budget so far.
    pub(crate) fn usage(&self) -> Usage {
        let s = &self.stats;
        let whiteout_nodes = if self.whiteouts == WhiteoutMode::Overlay { s.whiteouts } else { 0 };
        let inodes =
            s.files + s.dirs + s.symlinks + s.fifos + s.devices + whiteout_nodes + self.res.created.len() as u64;
        Usage { bytes: s.content_bytes.saturating_add(inodes.saturating_mul(INODE_COST)), entries: s.entries, inodes }
    }

    /// Checks the usage against the budget (nothing without a meter); a broken limit stops the unpack.
    pub(super) fn charge(&mut self) -> std::result::Result<(), Fail> {
        let used = self.usage();
        let Some(meter) = &mut self.meter else { return Ok(()) };
        match meter.check(used, self.res.root.as_fd()) {
            None => Ok(()),
            Some(e) => Err(self.stop(e)),
        }
    }

    /// Checks that a file of `size` bytes fits before any of it is written.
    pub(super) fn charge_file(&mut self, size: u64) -> std::result::Result<(), Fail> {
        let used = self.usage();
        let Some(meter) = &self.meter else { return Ok(()) };
        match meter.check_file(used, size) {
            None => Ok(()),
            Some(e) => Err(self.stop(e)),
        }
    }

    fn stop(&mut self, e: UnpackError) -> Fail {
        let text = e.to_string();
        self.stopped = Some(e);
        Fail::Refuse(text)
    }

    pub(super) fn apply_tar_entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        compression: Compression,
    ) -> Result<()> {
        self.stats.entries += 1;
        if let Err(Fail::Refuse(reason)) = self.charge() {
            return Err(UnpackError::Unsafe {
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                reason,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let refuse = |reason: String| UnpackError::Unsafe { entry: name.clone(), reason };
        let comps = clean_path(&raw_path).map_err(refuse)?;
        let header = entry.header();
        let etype = header.entry_type();
        let mut meta = Meta {
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mtime: (header.mtime().unwrap_or(0) as i64, 0),
            atime: None,
            xattrs: Vec::new(),
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let (major, minor) =
            (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        if let Some(pax) = entry.pax_extensions().map_err(|source| UnpackError::Corrupt { compression, source })? {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((xname.to_vec(), value.to_vec()));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(value) {
                        meta.mtime = t;
                    }
                } else if key == b"atime" {
                    meta.atime = parse_pax_time(value);
                } else if key == b"uid" {
                    if let Some(v) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                        meta.uid = v;
                    }
                } else if key == b"gid" {
                    if let Some(v) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                        meta.gid = v;
                    }
                }
            }
        }
        let wrap = |f: Fail| match f {
            Fail::Refuse(reason) => UnpackError::Unsafe { entry: name.clone(), reason },
            Fail::Io(op, source) => UnpackError::Write { entry: name.clone(), op, source },
        };
        let special = match comps.last() {
            Some(last) => classify_name(last).map_err(&refuse)?,
            None => Special::None,
        };
        match special {
            Special::Opaque => return self.opaque(&comps[..comps.len() - 1]).map_err(wrap),
            Special::Whiteout(target) => {
                let mut t = comps[..comps.len() - 1].to_vec();
                t.push(target);
                return self.whiteout(&t).map_err(wrap);
            }
            Special::AufsMeta => {
                self.stats.other_skipped += 1;
                return Ok(());
            }
            Special::None => {}
        }
        use tar::EntryType as T;
        let result = match etype {
            T::Regular | T::Continuous | T::GNUSparse => {
                // The size is the file's full size (a sparse file's holes included): refused before writing.
                match self.charge_file(entry.size()) {
                    Ok(()) => {
                        let mut src = &mut entry;
                        self.file(&comps, &meta, &mut src)
                    }
                    Err(f) => Err(f),
                }
            }
            T::Directory => self.dir(&comps, &meta),
            T::Symlink => match &link {
                Some(target) => self.symlink(&comps, &meta, OsStr::from_bytes(target)),
                None => Err(Fail::Refuse("symlink without a target".into())),
            },
            T::Link => match &link {
                Some(target) => match clean_path(target) {
                    Ok(t) => self.hardlink(&comps, &t),
                    Err(reason) => {
                        Err(Fail::Refuse(format!("hardlink target `{}`: {reason}", String::from_utf8_lossy(target))))
                    }
                },
                None => Err(Fail::Refuse("hardlink without a target".into())),
            },
            T::Char | T::Block => self.device(&comps, &meta, etype == T::Char, major, minor),
            T::Fifo => self.fifo(&comps, &meta),
            _ => {
                self.stats.other_skipped += 1;
                Ok(())
            }
        };
        let result = result.and_then(|()| self.charge());
        result.map_err(|f| match f {
            // A read error while copying contents is the stream's fault, not the destination's.
            Fail::Io("read layer", source) => UnpackError::Corrupt { compression, source },
            f => wrap(f),
        })
    }

    /// Opens the parent of `comps` (creating missing directories) and makes room for the last component:
    /// an existing entry there is removed unless both it and the new entry are directories.
    /// Returns the parent descriptor and whether a directory already exists at the name.
    pub(super) fn prepare(&mut self, comps: &[OsString], is_dir: bool) -> std::result::Result<(OwnedFd, bool), Fail> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(Fail::Refuse("entry names the root itself".into()));
        };
        if self.whiteouts == WhiteoutMode::Apply {
            self.upper.insert(comps.to_vec());
        }
        let pfd = self.res.open_dir(parent, true)?.expect("created").try_clone_to_owned().op("dup")?;
        self.note_parent(parent, &pfd)?;
        let existing = match fstatat(&pfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(Fail::Io("stat", e.into())),
        };
        match existing {
            None => Ok((pfd, false)),
            Some(st) if is_dir && kind(&st) == libc::S_IFDIR => Ok((pfd, true)),
            Some(st) => {
                let replaced_whiteout = is_whiteout_dev(&st);
                remove_at(&pfd, name, kind(&st) == libc::S_IFDIR)?;
                self.res.invalidate();
                // A directory replacing this layer's own whiteout must hide the lower directory it whited out.
                if is_dir && replaced_whiteout && self.whiteouts == WhiteoutMode::Overlay {
                    mkdirat(&pfd, name.as_os_str(), Mode::from_bits_truncate(0o700)).op("mkdir")?;
                    let fd = openat(&pfd, name.as_os_str(), DIR_FLAGS, Mode::empty()).op("open directory")?;
                    set_xattr_required(&fd, b"trusted.overlay.opaque", b"y")?;
                    return Ok((pfd, true));
                }
                Ok((pfd, false))
            }
        }
    }

    /// Remembers the times of a directory this layer is about to change (only in `Apply` mode).
    pub(super) fn note_parent(&mut self, comps: &[OsString], fd: &OwnedFd) -> std::result::Result<(), Fail> {
        if self.whiteouts != WhiteoutMode::Apply || self.noted_last.as_deref() == Some(comps) {
            return Ok(());
        }
        self.noted_last = Some(comps.to_vec());
        if self.noted.insert(comps.to_vec()) {
            let st = nix::sys::stat::fstat(fd).op("stat")?;
            let meta = Meta {
                mtime: (st.st_mtime, st.st_mtime_nsec),
                atime: Some((st.st_atime, st.st_atime_nsec)),
                ..Meta::default()
            };
            self.restore.push((comps.to_vec(), meta));
        }
        Ok(())
    }

    pub(super) fn chown_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> std::result::Result<(), Fail> {
        match fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))) {
            Ok(()) => Ok(()),
            // Unprivileged unpack (tests, tools): ownership cannot be kept, everything else can.
            Err(Errno::EPERM) if !self.is_root => Ok(()),
            Err(e) => Err(Fail::Io("chown", e.into())),
        }
    }

    pub(super) fn set_xattrs(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> std::result::Result<(), Fail> {
        for (k, v) in &meta.xattrs {
            // Overlay's own attributes would let a layer redirect or hide paths in the merged view.
            if k.starts_with(b"trusted.overlay.") {
                self.stats.xattrs_skipped += 1;
                continue;
            }
            match fset_xattr(&fd, k, v) {
                Ok(()) => {}
                Err(e) if xattr_unsupported(&e) => {
                    self.stats.xattrs_skipped += 1;
                    tracing::warn!(xattr = %String::from_utf8_lossy(k), err = %e, "xattr not supported by the destination file system, skipped");
                }
                Err(e) => return Err(Fail::Io("set xattr", e)),
            }
        }
        Ok(())
    }

    pub(crate) fn file(
        &mut self,
        comps: &[OsString],
        meta: &Meta,
        content: &mut dyn Read,
    ) -> std::result::Result<(), Fail> {
        let (pfd, _) = self.prepare(comps, false)?;
        let name = comps.last().expect("non-empty");
        let fd = openat(
            &pfd,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .op("create file")?;
        let mut file = File::from(fd);
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::Io("read layer", e)),
            };
            file.write_all(&self.buf[..n]).op("write file")?;
            self.stats.content_bytes += n as u64;
            self.charge()?;
        }
        self.chown_fd(file.as_fd(), meta)?;
        // After chown: chown clears setuid/setgid bits.
        fchmod(&file, Mode::from_bits_truncate(meta.mode & 0o7777)).op("chmod")?;
        self.set_xattrs(file.as_fd(), meta)?;
        futimens(&file, &ts(meta.atime.unwrap_or(meta.mtime)), &ts(meta.mtime)).op("set times")?;
        self.stats.files += 1;
        Ok(())
    }

    pub(crate) fn dir(&mut self, comps: &[OsString], meta: &Meta) -> std::result::Result<(), Fail> {
        if comps.is_empty() {
            // The layer's `./` entry: the root is the snapshot directory itself, whose metadata the store owns.
            self.stats.dirs += 1;
            return Ok(());
        }
        let (pfd, exists) = self.prepare(comps, true)?;
        let name = comps.last().expect("non-empty");
        if !exists {
            mkdirat(&pfd, name.as_os_str(), Mode::from_bits_truncate(0o700)).op("mkdir")?;
        }
        let fd = openat(&pfd, name.as_os_str(), DIR_FLAGS, Mode::empty()).op("open directory")?;
        self.chown_fd(fd.as_fd(), meta)?;
        fchmod(&fd, Mode::from_bits_truncate(meta.mode & 0o7777)).op("chmod")?;
        self.set_xattrs(fd.as_fd(), meta)?;
        self.dir_times.push((comps.to_vec(), meta.clone()));
        self.stats.dirs += 1;
        Ok(())
    }

    pub(crate) fn symlink(&mut self, comps: &[OsString], meta: &Meta, target: &OsStr) -> std::result::Result<(), Fail> {
        let (pfd, _) = self.prepare(comps, false)?;
        let name = comps.last().expect("non-empty");
        symlinkat(target, &pfd, name.as_os_str()).op("symlink")?;
        self.chown_at(&pfd, name.as_os_str(), meta, "chown symlink")?;
        for (k, v) in &meta.xattrs {
            if k.starts_with(b"trusted.overlay.") {
                self.stats.xattrs_skipped += 1;
                continue;
            }
            match lset_xattr_at(&pfd, name, k, v) {
                Ok(()) => {}
                // user.* xattrs are not allowed on symlinks (EPERM): like an unsupported file system.
                Err(e) if xattr_unsupported(&e) || e.raw_os_error() == Some(libc::EPERM) => {
                    self.stats.xattrs_skipped += 1
                }
                Err(e) => return Err(Fail::Io("set symlink xattr", e)),
            }
        }
        utimensat(
            &pfd,
            name.as_os_str(),
            &ts(meta.atime.unwrap_or(meta.mtime)),
            &ts(meta.mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .op("set symlink times")?;
        self.stats.symlinks += 1;
        Ok(())
    }

    pub(crate) fn hardlink(&mut self, comps: &[OsString], target: &[OsString]) -> std::result::Result<(), Fail> {
        let Some((tname, _)) = target.split_last() else {
            return Err(Fail::Refuse("hardlink target is the root directory".into()));
        };
        if target == comps {
            // A link to itself (seen in some re-packed layers) changes nothing.
            return Ok(());
        }
        let missing = || {
            Fail::Refuse(format!(
                "hardlink target `{}` does not exist in this layer (earlier entries must provide it)",
                show(target)
            ))
        };
        let (tfd, st) = match self.find(target)? {
            Some(found) => found,
            // A link to a file of a lower layer: copy the file up into this layer first, as overlayfs would.
            None if self.copy_up(target)? => self.find(target)?.ok_or_else(missing)?,
            None => return Err(missing()),
        };
        if kind(&st) == libc::S_IFDIR {
            return Err(Fail::Refuse(format!("hardlink target `{}` is a directory", show(target))));
        }
        let (pfd, _) = self.prepare(comps, false)?;
        let name = comps.last().expect("non-empty");
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, never what it points to.
        linkat(&tfd, tname.as_os_str(), &pfd, name.as_os_str(), AtFlags::empty()).op("hardlink")?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// The parent descriptor and status of `comps` in this layer's tree, if it exists there.
    pub(super) fn find(
        &mut self,
        comps: &[OsString],
    ) -> std::result::Result<Option<(OwnedFd, nix::sys::stat::FileStat)>, Fail> {
        let (name, parent) = comps.split_last().expect("non-empty");
        let Some(fd) = self.res.open_dir(parent, false)? else {
            return Ok(None);
        };
        let fd = fd.try_clone_to_owned().op("dup")?;
        match fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((fd, st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Fail::Io("stat hardlink target", e.into())),
        }
    }

    /// Copies a regular file that only a lower layer has into this layer (Overlay mode). False when no
    /// lower layer has a regular file there.
    pub(super) fn copy_up(&mut self, comps: &[OsString]) -> std::result::Result<bool, Fail> {
        if self.whiteouts != WhiteoutMode::Overlay {
            return Ok(false);
        }
        let Some(Found::File(dir)) = lower_lookup(&self.res.lowers, comps)? else {
            return Ok(false);
        };
        let name = comps.last().expect("non-empty");
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&dir, name.as_os_str(), flags, Mode::empty()).op("open lower file")?;
        let st = nix::sys::stat::fstat(&fd).op("stat lower file")?;
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            atime: None,
            xattrs: list_xattrs(&fd).op("list xattrs")?,
        };
        let mut file = File::from(fd);
        self.file(comps, &meta, &mut file)?;
        // Counted as the hardlink it serves, not as a file of the layer.
        self.stats.files -= 1;
        Ok(true)
    }

    pub(crate) fn device(
        &mut self,
        comps: &[OsString],
        meta: &Meta,
        is_char: bool,
        major: u32,
        minor: u32,
    ) -> std::result::Result<(), Fail> {
        if !self.policy.allow_devices {
            self.stats.devices_skipped += 1;
            tracing::debug!(entry = %show(comps), "device node skipped by policy");
            return Ok(());
        }
        let kind = if is_char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
        self.node(comps, meta, kind, libc::makedev(major, minor))?;
        self.stats.devices += 1;
        Ok(())
    }

    pub(crate) fn fifo(&mut self, comps: &[OsString], meta: &Meta) -> std::result::Result<(), Fail> {
        self.node(comps, meta, SFlag::S_IFIFO, 0)?;
        self.stats.fifos += 1;
        Ok(())
    }

    /// Gives entry `name` in `pfd` the layer's owner without following a symlink; an unprivileged unpack keeps
    /// its own ids instead (EPERM), as rootless tools do.
    pub(super) fn chown_at(
        &self,
        pfd: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        what: &'static str,
    ) -> std::result::Result<(), Fail> {
        match fchownat(
            pfd,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) if !self.is_root => Ok(()),
            Err(e) => Err(Fail::Io(what, e.into())),
        }
    }

    pub(super) fn node(
        &mut self,
        comps: &[OsString],
        meta: &Meta,
        kind: SFlag,
        dev: u64,
    ) -> std::result::Result<(), Fail> {
        let (pfd, _) = self.prepare(comps, false)?;
        let name = comps.last().expect("non-empty");
        mknodat(&pfd, name.as_os_str(), kind, Mode::from_bits_truncate(0o600), dev as _).op("mknod")?;
        self.chown_at(&pfd, name.as_os_str(), meta, "chown")?;
        nix::sys::stat::fchmodat(
            &pfd,
            name.as_os_str(),
            Mode::from_bits_truncate(meta.mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .op("chmod")?;
        utimensat(&pfd, name.as_os_str(), &ts(meta.mtime), &ts(meta.mtime), UtimensatFlags::NoFollowSymlink)
            .op("set times")?;
        Ok(())
    }

    pub(crate) fn whiteout(&mut self, comps: &[OsString]) -> std::result::Result<(), Fail> {
        self.stats.whiteouts += 1;
        let (name, parent) = comps.split_last().expect("whiteout names a file");
        match self.whiteouts {
            WhiteoutMode::Overlay => {
                let (pfd, _) = self.prepare(comps, false)?;
                mknodat(&pfd, name.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0).op("mknod whiteout")?;
            }
            WhiteoutMode::Apply => {
                let Some(pfd) = self.res.open_dir(parent, false)? else {
                    return Ok(());
                };
                let pfd = pfd.try_clone_to_owned().op("dup")?;
                self.note_parent(parent, &pfd)?;
                match fstatat(&pfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        remove_at(&pfd, name, kind(&st) == libc::S_IFDIR)?;
                        self.res.invalidate();
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(Fail::Io("stat", e.into())),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn opaque(&mut self, dir: &[OsString]) -> std::result::Result<(), Fail> {
        self.stats.opaque_dirs += 1;
        match self.whiteouts {
            WhiteoutMode::Overlay => {
                let fd = self.res.open_dir(dir, true)?.expect("created").try_clone_to_owned().op("dup")?;
                set_xattr_required(&fd, b"trusted.overlay.opaque", b"y")?;
            }
            WhiteoutMode::Apply => {
                let fd = self.res.open_dir(dir, true)?.expect("created").try_clone_to_owned().op("dup")?;
                self.note_parent(dir, &fd)?;
                let mut prefix = dir.to_vec();
                self.clear_lower(&fd, &mut prefix)?;
                self.res.invalidate();
            }
        }
        Ok(())
    }

    /// Removes everything under `fd` that this layer did not write (recursing into directories it did).
    pub(super) fn clear_lower(&self, fd: &OwnedFd, prefix: &mut Components) -> std::result::Result<(), Fail> {
        for child in read_dir_fd(fd)? {
            prefix.push(child);
            let name = prefix.last().expect("pushed");
            let st = fstatat(fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).op("stat")?;
            let is_dir = kind(&st) == libc::S_IFDIR;
            if !self.upper.contains(prefix.as_slice()) {
                remove_at(fd, name, is_dir)?;
            } else if is_dir {
                let sub = openat(fd, name.as_os_str(), DIR_FLAGS, Mode::empty()).op("open directory")?;
                self.clear_lower(&sub, prefix)?;
            }
            prefix.pop();
        }
        Ok(())
    }

    /// Sets directory times last, deepest first, so creating children does not disturb them.
    pub(crate) fn finish(mut self) -> Result<UnpackStats> {
        // Order matters for equal depth (the sort is stable): an explicit entry's times win.
        let mut times = std::mem::take(&mut self.res.created);
        times.append(&mut self.restore);
        times.append(&mut self.dir_times);
        times.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, meta) in times {
            let Some((name, parent)) = comps.split_last() else {
                let at = ts(meta.atime.unwrap_or(meta.mtime));
                let _ = futimens(&self.res.root, &at, &ts(meta.mtime));
                continue;
            };
            let Ok(Some(pfd)) = self.res.open_dir(parent, false) else {
                continue;
            };
            // A later entry may have replaced the directory with something else; then there is nothing to do.
            let _ = utimensat(
                pfd,
                name.as_os_str(),
                &ts(meta.atime.unwrap_or(meta.mtime)),
                &ts(meta.mtime),
                UtimensatFlags::NoFollowSymlink,
            );
        }
        Ok(self.stats)
    }
}

pub(super) fn ts((sec, nsec): (i64, i64)) -> TimeSpec {
    TimeSpec::new(sec as _, nsec as _)
}

/// Parses a PAX time (`1700000000.123456789`) into seconds and nanoseconds.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec = 0i64;
    for (i, ch) in frac.chars().take(9).enumerate() {
        nsec += (ch.to_digit(10)? as i64) * 10i64.pow(8 - i as u32);
    }
    if sec < 0 && nsec > 0 {
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}
