//! Layer snapshots keyed by chain id, and container root file systems assembled from them.
//!
//! Owns `<state_dir>/snapshots/`: one directory per unpacked layer, `<chain-id-hex>/fs` (the layer's tree, with
//! whiteouts recorded the overlayfs way) and `<chain-id-hex>/meta.json`, its completion record (chain id, DiffID,
//! and a digest of the tree's metadata: every entry's path, type, mode, owner, size, mtime and link target).
//! A snapshot is unpacked into `.tmp-*`, synced and renamed into place, so a directory under its final name is
//! always complete; leftover `.tmp-*` directories from a crash are removed when the store is opened. Before a
//! snapshot is used its record is read and its tree walked and compared ([`SnapshotStore::get`]): one that fails
//! is moved aside to `.broken-*` (a running container's overlay may still use it; it is deleted once no
//! container root file system of the state dir is mounted) and unpacked again, and the repair noted in
//! `os::journal`. It also mounts a container's root
//! file system (overlayfs, or a flattened copy where overlayfs is unavailable) under a container directory the
//! caller owns. Everything here blocks on file-system work: async callers run it in `spawn_blocking`.
//! It does not fetch blobs (callers pass a reader), decide which images to keep, or touch
//! container directories other than the one it is given.

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use sha2::{Digest, Sha256};

use crate::image::unpack::{
    self, fget_xattr, list_xattrs, read_dir_fd, Applier, Components, Destination, Fail, Meta, UnpackError,
    UnpackPolicy, UnpackStats, WhiteoutMode,
};
use crate::os::fsutil;

/// Errors from the snapshot store and root file system assembly.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A layer could not be unpacked.
    #[error("cannot unpack layer {diff_id}: {source}")]
    Unpack {
        /// The layer's DiffID.
        diff_id: String,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// The layer blob could not be opened.
    #[error("cannot open blob of layer {diff_id}: {source}")]
    Blob {
        /// The layer's DiffID.
        diff_id: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A DiffID is not `sha256:<64 hex>`.
    #[error("layer DiffID `{0}` is not sha256:<64 hex digits>; the image config is malformed")]
    BadDiffId(String),
    /// A file-system operation on the store or a container directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Flattening snapshots into a copy failed.
    #[error("cannot copy snapshot {snapshot} into {dest}: {reason}")]
    Copy {
        /// The snapshot being copied.
        snapshot: PathBuf,
        /// The root file system being built.
        dest: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// overlayfs was required but could not be mounted.
    #[error(
        "cannot mount overlayfs at {target}: {source}; run as root on a kernel with overlayfs, or use the copy mode"
    )]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The mount error.
        source: io::Error,
    },
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, SnapshotError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { op, path: path.to_path_buf(), source }
}

/// The hex part of a `sha256:<hex>` digest, checked.
fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// The chain id of a layer (OCI image spec): `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`. Pure.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> Result<String> {
    if sha256_hex(diff_id).is_none() {
        return Err(SnapshotError::BadDiffId(diff_id.to_string()));
    }
    Ok(match parent {
        None => diff_id.to_string(),
        Some(p) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{p} {diff_id}").as_bytes()))),
    })
}

/// The chain ids of a whole layer list, bottom first. Pure.
pub fn chain_ids(diff_ids: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let c = chain_id(out.last().map(String::as_str), d)?;
        out.push(c);
    }
    Ok(out)
}

/// One layer to unpack: what the image manifest and config say about it.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// The DiffID from the image config's `rootfs.diff_ids` (`sha256:<hex>`).
    pub diff_id: String,
    /// The layer descriptor's media type (gives the compression).
    pub media_type: String,
}

/// An unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `sha256:<hex>` chain id.
    pub chain_id: String,
    /// The layer's tree: an overlayfs lower dir.
    pub fs: PathBuf,
    /// True when the snapshot already existed and nothing was unpacked.
    pub reused: bool,
    /// What the unpack did (None when reused).
    pub stats: Option<UnpackStats>,
}

/// What `meta.json` records next to each snapshot: its completion record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SnapshotMeta {
    chain_id: String,
    diff_id: String,
    parent: Option<String>,
    stats: UnpackStats,
    /// [`tree_digest`] of `fs/` when it was committed; absent in snapshots of older versions (then computed and
    /// recorded on first use).
    #[serde(default)]
    tree: Option<String>,
    #[serde(default)]
    entries: Option<u64>,
}

/// A digest of a tree's metadata, entries in name order: path, file type, mode, uid, gid, size, mtime (s, ns),
/// device number and symlink target. Catches truncated, rewritten, added and removed files without reading
/// their content (what it costs is in docs/benchmarks.md). Never follows a symlink. Returns the digest and the
/// number of entries.
pub fn tree_digest(root: &Path) -> io::Result<(String, u64)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Sha256::new();
    let mut entries = 0u64;
    let mut stack = vec![(PathBuf::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        names.sort();
        // Pushed in reverse so the walk goes in name order (depth first).
        let mut subdirs = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let m = fs::symlink_metadata(&path)?;
            entries += 1;
            hasher.update(rel.as_os_str().as_bytes());
            hasher.update([0]);
            for v in [
                m.mode() as u64,
                m.uid() as u64,
                m.gid() as u64,
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.rdev(),
            ] {
                hasher.update(v.to_le_bytes());
            }
            if m.file_type().is_symlink() {
                hasher.update(fs::read_link(&path)?.as_os_str().as_bytes());
            }
            hasher.update([0xff]);
            if m.file_type().is_dir() {
                subdirs.push((rel, path));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), entries))
}

/// The snapshot directory of a state dir.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating) `<state_dir>/snapshots` and removes `.tmp-*` directories a crashed unpack left behind.
    /// Only one agent may use a state dir at a time.
    pub fn open(state_dir: &Path) -> Result<SnapshotStore> {
        let dir = state_dir.join("snapshots");
        fs::create_dir_all(&dir).map_err(io_err("create snapshot dir", &dir))?;
        for e in fs::read_dir(&dir).map_err(io_err("read snapshot dir", &dir))? {
            let e = e.map_err(io_err("read snapshot dir", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let p = e.path();
                tracing::info!(path = %p.display(), "removing incomplete snapshot left by an interrupted unpack");
                fs::remove_dir_all(&p).map_err(io_err("remove incomplete snapshot", &p))?;
            } else if name.starts_with(".broken-") && !rootfs_mounted(state_dir) {
                let p = e.path();
                tracing::info!(path = %p.display(), "removing a damaged snapshot no container uses any more");
                fs::remove_dir_all(&p).map_err(io_err("remove damaged snapshot", &p))?;
            }
        }
        Ok(SnapshotStore { dir })
    }

    /// The directory holding all snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete, sound snapshot for `chain_id`, if there is one. Its completion record must name it and its
    /// tree must match the digest recorded when it was unpacked; a snapshot that fails is moved aside (and the
    /// repair noted), so the caller unpacks it again.
    pub fn get(&self, chain_id: &str) -> Option<Snapshot> {
        let hex = sha256_hex(chain_id)?;
        let dir = self.dir.join(hex);
        let fs = dir.join("fs");
        if !dir.exists() {
            return None;
        }
        match self.verify(&dir, chain_id) {
            Ok(()) => Some(Snapshot { chain_id: chain_id.to_string(), fs, reused: true, stats: None }),
            Err(problem) => {
                let aside = self.dir.join(format!(".broken-{}-{:08x}", &hex[..12], rand::random::<u32>()));
                let action = match fs::rename(&dir, &aside) {
                    Ok(()) => "moved aside; unpacked again from its layer",
                    Err(_) => "could not be moved aside; unpacked again",
                };
                let _ = fs::remove_dir_all(&dir);
                let _ = fsutil::sync_dir(&self.dir);
                crate::os::journal::note(crate::base::Repair::new(format!("snapshots/{hex}"), problem, action));
                None
            }
        }
    }

    /// Checks a snapshot's completion record and tree. An older snapshot without a recorded tree gets one.
    fn verify(&self, dir: &Path, chain_id: &str) -> std::result::Result<(), String> {
        let meta_path = dir.join("meta.json");
        let bytes = fs::read(&meta_path).map_err(|e| format!("no completion record (meta.json: {e})"))?;
        let mut meta: SnapshotMeta =
            serde_json::from_slice(&bytes).map_err(|e| format!("unreadable completion record ({e})"))?;
        if meta.chain_id != chain_id {
            return Err(format!("its completion record names {}", meta.chain_id));
        }
        let fs_dir = dir.join("fs");
        if !fs_dir.is_dir() {
            return Err("no fs/ directory".into());
        }
        let (tree, entries) = tree_digest(&fs_dir).map_err(|e| format!("cannot walk its tree: {e}"))?;
        match &meta.tree {
            Some(t) if *t == tree => Ok(()),
            Some(_) => Err(format!(
                "its tree changed since it was unpacked ({entries} entries now, {} then)",
                meta.entries.map_or("?".into(), |n| n.to_string())
            )),
            None => {
                (meta.tree, meta.entries) = (Some(tree), Some(entries));
                let json = serde_json::to_vec_pretty(&meta).expect("serializable");
                fsutil::write_atomic(&meta_path, &json).map_err(|e| format!("cannot record its tree: {e}"))
            }
        }
    }

    /// Makes sure the snapshot of `layer` on top of `parents` (bottom first, complete) exists, unpacking the
    /// blob that `open` returns only when it does not. The DiffID is verified while unpacking; on mismatch,
    /// or any error, nothing is committed.
    pub fn ensure<R: Read>(
        &self,
        parents: &[Snapshot],
        layer: &LayerSpec,
        open: impl FnOnce() -> io::Result<R>,
        policy: &UnpackPolicy,
    ) -> Result<Snapshot> {
        self.ensure_checked(parents, layer, open, |_| Ok(()), policy)
    }

    /// [`SnapshotStore::ensure`], calling `finish` with the blob reader after the layer was unpacked and before
    /// it is committed (to check the blob's own digest): an error there commits nothing.
    pub(crate) fn ensure_checked<R: Read>(
        &self,
        parents: &[Snapshot],
        layer: &LayerSpec,
        open: impl FnOnce() -> io::Result<R>,
        finish: impl FnOnce(R) -> io::Result<()>,
        policy: &UnpackPolicy,
    ) -> Result<Snapshot> {
        let parent = parents.last().map(|p| p.chain_id.as_str());
        let chain = chain_id(parent, &layer.diff_id)?;
        if let Some(s) = self.get(&chain) {
            tracing::debug!(chain_id = %chain, "layer snapshot exists, reused");
            return Ok(s);
        }
        let hex = sha256_hex(&chain).expect("checked").to_string();
        let tmp = self.dir.join(format!(".tmp-{}-{:016x}", &hex[..12], rand::random::<u64>()));
        let result = self.unpack_into(&tmp, parents, layer, &chain, parent, open, finish, policy);
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let final_dir = self.dir.join(&hex);
        match fs::rename(&tmp, &final_dir) {
            Ok(()) => crate::os::crashpoint::hit("snapshot-renamed"),
            // Another unpack of the same chain won the race: keep its snapshot.
            Err(e) if final_dir.join("fs").is_dir() => {
                tracing::debug!(chain_id = %chain, err = %e, "snapshot appeared meanwhile, discarding ours");
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(io_err("commit snapshot", &final_dir)(e));
            }
        }
        fsutil::sync_dir(&self.dir).map_err(io_err("sync snapshot dir", &self.dir))?;
        tracing::info!(chain_id = %chain, files = stats.files, bytes = stats.tar_bytes, "layer unpacked");
        Ok(Snapshot { chain_id: chain, fs: final_dir.join("fs"), reused: false, stats: Some(stats) })
    }

    #[allow(clippy::too_many_arguments)]
    fn unpack_into<R: Read>(
        &self,
        tmp: &Path,
        parents: &[Snapshot],
        layer: &LayerSpec,
        chain: &str,
        parent: Option<&str>,
        open: impl FnOnce() -> io::Result<R>,
        finish: impl FnOnce(R) -> io::Result<()>,
        policy: &UnpackPolicy,
    ) -> Result<UnpackStats> {
        let fs_dir = tmp.join("fs");
        fs::DirBuilder::new().mode(0o700).create(tmp).map_err(io_err("create", tmp))?;
        make_root_dir(&fs_dir)?;
        let blob_err = |source| SnapshotError::Blob { diff_id: layer.diff_id.clone(), source };
        let mut reader = CrashPoint { inner: open().map_err(blob_err)?, reads: 0 };
        let dest = Destination {
            root: fs_dir.clone(),
            lowers: parents.iter().rev().map(|p| p.fs.clone()).collect(),
            whiteouts: WhiteoutMode::Overlay,
        };
        let wrap = |source| SnapshotError::Unpack { diff_id: layer.diff_id.clone(), source };
        let stats = unpack::unpack_layer(&mut reader, Some(&layer.media_type), &dest, policy).map_err(wrap)?;
        unpack::verify_diff_id(&stats, &layer.diff_id).map_err(wrap)?;
        finish(reader.inner).map_err(blob_err)?;
        let (tree, entries) = tree_digest(&fs_dir).map_err(io_err("walk", &fs_dir))?;
        let meta = SnapshotMeta {
            chain_id: chain.to_string(),
            diff_id: layer.diff_id.clone(),
            parent: parent.map(str::to_string),
            stats: stats.clone(),
            tree: Some(tree),
            entries: Some(entries),
        };
        let meta_path = tmp.join("meta.json");
        fs::write(&meta_path, serde_json::to_vec_pretty(&meta).expect("serializable"))
            .map_err(io_err("write", &meta_path))?;
        // One syncfs makes the whole tree durable before the rename publishes it.
        let fd = fs::File::open(tmp).map_err(io_err("open", tmp))?;
        nix::unistd::syncfs(&fd).map_err(|e| io_err("sync", tmp)(e.into()))?;
        Ok(stats)
    }

    /// Unpacks every layer of an image bottom first, reusing snapshots that exist. `open(i, layer)` returns
    /// the blob of layer `i`; it is called only for layers that must be unpacked.
    pub fn ensure_all<R: Read>(
        &self,
        layers: &[LayerSpec],
        open: impl FnMut(usize, &LayerSpec) -> io::Result<R>,
        policy: &UnpackPolicy,
    ) -> Result<Vec<Snapshot>> {
        self.ensure_all_checked(layers, open, |_, _| Ok(()), policy)
    }

    /// [`SnapshotStore::ensure_all`] with `finish(i, reader)` after each unpack ([`SnapshotStore::ensure_checked`]).
    pub(crate) fn ensure_all_checked<R: Read>(
        &self,
        layers: &[LayerSpec],
        mut open: impl FnMut(usize, &LayerSpec) -> io::Result<R>,
        mut finish: impl FnMut(usize, R) -> io::Result<()>,
        policy: &UnpackPolicy,
    ) -> Result<Vec<Snapshot>> {
        let mut out: Vec<Snapshot> = Vec::with_capacity(layers.len());
        // The image's budget counts what the layers unpacked before this one wrote.
        let mut policy = *policy;
        for (i, layer) in layers.iter().enumerate() {
            let s = self.ensure_checked(&out, layer, || open(i, layer), |r| finish(i, r), &policy)?;
            if let Some(stats) = &s.stats {
                policy.budget.image_used = policy.budget.image_used.plus(unpack::Usage::of(stats));
            }
            out.push(s);
        }
        Ok(out)
    }

    /// Checks every snapshot (completion record and tree), as the agent does at start; returns how many are sound
    /// and how many entries their trees have. Damaged ones are moved aside ([`SnapshotStore::get`]).
    pub fn check(&self) -> Result<(usize, u64)> {
        let (mut sound, mut entries) = (0, 0);
        for e in fs::read_dir(&self.dir).map_err(io_err("read snapshot dir", &self.dir))? {
            let e = e.map_err(io_err("read snapshot dir", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match self.get(&format!("sha256:{name}")) {
                Some(s) => {
                    sound += 1;
                    entries += tree_digest(&s.fs).map(|(_, n)| n).unwrap_or(0);
                }
                None if sha256_hex(&format!("sha256:{name}")).is_none() => {
                    let p = e.path();
                    let _ = fs::remove_dir_all(&p);
                    crate::os::journal::note(crate::base::Repair::new(
                        format!("snapshots/{name}"),
                        "not a snapshot name",
                        "removed",
                    ));
                }
                None => {}
            }
        }
        Ok((sound, entries))
    }
}

/// The blob reader of an unpack, with the `mid-unpack` crash point on its third read (some entries are on disk
/// by then, the snapshot is not committed).
struct CrashPoint<R> {
    inner: R,
    reads: u32,
}

impl<R: Read> Read for CrashPoint<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.reads == 3 {
            crate::os::crashpoint::hit("mid-unpack");
        }
        self.inner.read(buf)
    }
}

/// Whether any container root file system under `<state_dir>/bundles/` is mounted (a damaged snapshot moved
/// aside may still be one of its lower layers).
fn rootfs_mounted(state_dir: &Path) -> bool {
    let Some(state_dir) = state_dir.to_str() else { return true };
    let bundles = format!("{}/bundles/", state_dir.trim_end_matches('/'));
    match fs::read_to_string("/proc/self/mountinfo") {
        // Field 5 is the mount point (spaces escaped as \040, which a state dir path does not need).
        Ok(info) => info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&bundles))),
        Err(_) => true,
    }
}

fn make_root_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path).map_err(io_err("create", path))?;
    // The umask may have trimmed the mode.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(0o755),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| io_err("chmod", path)(e.into()))
}

/// How to build a root file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsMode {
    /// overlayfs when it mounts, else a flattened copy.
    Auto,
    /// overlayfs only; an error when it does not mount.
    Overlay,
    /// Always a flattened copy.
    Copy,
}

/// What a mounted root file system is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsKind {
    /// overlayfs over the snapshots, with the container's own upper and work dirs.
    Overlay,
    /// A private copy with all layers applied.
    Copy,
}

/// A container's root file system under `<container_dir>/rootfs`. An overlay mount is unmounted on drop.
#[derive(Debug)]
pub struct Rootfs {
    container_dir: PathBuf,
    path: PathBuf,
    kind: RootfsKind,
    mounted: bool,
}

impl Rootfs {
    /// The root file system's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is an overlay mount or a copy.
    pub fn kind(&self) -> RootfsKind {
        self.kind
    }

    /// Unmounts an overlay root (lazily, so a busy mount still goes away once unused). Idempotent.
    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io_err("unmount", &self.path)(e.into()))?;
            self.mounted = false;
        }
        Ok(())
    }

    /// Leaves an overlay mounted after this value is dropped (for a container that outlives this process,
    /// e.g. across an agent restart) and returns the root file system's path.
    pub fn keep(mut self) -> PathBuf {
        self.mounted = false;
        self.path.clone()
    }

    /// Unmounts and deletes the container directory (upper, work and rootfs).
    pub fn remove(mut self) -> Result<()> {
        self.unmount()?;
        fs::remove_dir_all(&self.container_dir).map_err(io_err("remove", &self.container_dir))
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!(err = %e, "rootfs unmount on drop failed");
        }
    }
}

/// Builds a container's root file system from snapshots (bottom first) under `container_dir` (created;
/// `rootfs/`, and for overlayfs `upper/` and `work/`, inside it).
pub fn mount_rootfs(lowers: &[&Path], container_dir: &Path, mode: RootfsMode) -> Result<Rootfs> {
    let rootfs = container_dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err("create", &rootfs))?;
    if mode != RootfsMode::Copy && !lowers.is_empty() {
        match mount_overlay(lowers, container_dir, &rootfs) {
            Ok(()) => {
                return Ok(Rootfs {
                    container_dir: container_dir.to_path_buf(),
                    path: rootfs,
                    kind: RootfsKind::Overlay,
                    mounted: true,
                })
            }
            Err(e) if mode == RootfsMode::Overlay => return Err(e),
            Err(e) => tracing::warn!(err = %e, "overlayfs unavailable, building a flattened copy"),
        }
    }
    for lower in lowers {
        flatten_snapshot(lower, &rootfs)?;
    }
    Ok(Rootfs { container_dir: container_dir.to_path_buf(), path: rootfs, kind: RootfsKind::Copy, mounted: false })
}

fn mount_overlay(lowers: &[&Path], container_dir: &Path, target: &Path) -> Result<()> {
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let mut paths: Vec<String> = Vec::new();
    for p in lowers.iter().rev() {
        paths.push(overlay_path(p)?);
    }
    let data =
        format!("lowerdir={},upperdir={},workdir={}", paths.join(":"), overlay_path(&upper)?, overlay_path(&work)?);
    nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(data.as_str()))
        .map_err(|e| SnapshotError::Mount { target: target.to_path_buf(), source: e.into() })
}

/// A path as overlayfs mount options can carry it (they separate with `,` and `:`).
fn overlay_path(p: &Path) -> Result<String> {
    let s = p.to_str().filter(|s| !s.contains([',', ':', '\\'])).ok_or_else(|| SnapshotError::Mount {
        target: p.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains `,`, `:` or `\\` or is not UTF-8"),
    })?;
    Ok(s.to_string())
}

/// Applies one snapshot (overlay-style whiteouts) onto a flattened tree: whiteouts delete, opaque directories
/// drop what lower layers put there, hardlinks within the snapshot stay hardlinks.
pub(crate) fn flatten_snapshot(snapshot: &Path, dest: &Path) -> Result<()> {
    let copy_err =
        |reason: String| SnapshotError::Copy { snapshot: snapshot.to_path_buf(), dest: dest.to_path_buf(), reason };
    let d = Destination { root: dest.to_path_buf(), lowers: Vec::new(), whiteouts: WhiteoutMode::Apply };
    // Devices in a snapshot were allowed by policy when it was unpacked.
    let policy = UnpackPolicy { allow_devices: true, ..Default::default() };
    let mut applier = Applier::new(&d, policy).map_err(|e| copy_err(e.to_string()))?;
    let src = nix::fcntl::open(snapshot, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| io_err("open", snapshot)(e.into()))?;
    let mut links = std::collections::HashMap::new();
    let mut prefix = Vec::new();
    walk(&src, &mut prefix, &mut applier, &mut links).map_err(|(path, f)| {
        copy_err(match f {
            Fail::Refuse(r) => format!("{path}: {r}"),
            Fail::Io(op, e) => format!("{path}: {op}: {e}"),
        })
    })?;
    applier.finish().map_err(|e| copy_err(e.to_string()))?;
    Ok(())
}

type WalkErr = (String, Fail);

fn walk(
    dir: &OwnedFd,
    prefix: &mut Components,
    applier: &mut Applier,
    links: &mut std::collections::HashMap<(u64, u64), Components>,
) -> std::result::Result<(), WalkErr> {
    let at = |p: &Components| p.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
    for name in read_dir_fd(dir).map_err(|f| (at(prefix), f))? {
        prefix.push(name);
        let here = at(prefix);
        let name = prefix.last().expect("pushed").clone();
        let e = |f: Fail| (here.clone(), f);
        let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|x| e(x.into()))?;
        let mut meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            atime: None,
            xattrs: Vec::new(),
        };
        let fmt = st.st_mode & libc::S_IFMT;
        match fmt {
            libc::S_IFCHR if st.st_rdev == 0 => applier.whiteout(prefix).map_err(e)?,
            libc::S_IFDIR => {
                let sub = openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e(x.into()))?;
                meta.xattrs = list_xattrs(&sub)
                    .map_err(|x| e(Fail::Io("list xattrs", x)))?
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with(b"trusted.overlay."))
                    .collect();
                applier.dir(prefix, &meta).map_err(e)?;
                if fget_xattr(&sub, b"trusted.overlay.opaque").ok().flatten().as_deref() == Some(b"y") {
                    applier.opaque(prefix).map_err(e)?;
                }
                walk(&sub, prefix, applier, links)?;
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = links.get(&key) {
                        let first = first.clone();
                        applier.hardlink(prefix, &first).map_err(e)?;
                        prefix.pop();
                        continue;
                    }
                }
                let f = openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e(x.into()))?;
                meta.xattrs = list_xattrs(&f).map_err(|x| e(Fail::Io("list xattrs", x)))?;
                let mut file = fs::File::from(f);
                applier.file(prefix, &meta, &mut file).map_err(e)?;
                if st.st_nlink > 1 {
                    links.insert(key, prefix.clone());
                }
            }
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dir, name.as_os_str()).map_err(|x| e(x.into()))?;
                applier.symlink(prefix, &meta, target.as_os_str()).map_err(e)?;
            }
            libc::S_IFIFO => applier.fifo(prefix, &meta).map_err(e)?,
            libc::S_IFCHR | libc::S_IFBLK => {
                let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                applier.device(prefix, &meta, fmt == libc::S_IFCHR, major, minor).map_err(e)?
            }
            _ => {}
        }
        prefix.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    const B: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

    #[test]
    fn chain_id_of_first_layer_is_its_diff_id() {
        assert_eq!(chain_id(None, A).unwrap(), A);
    }

    #[test]
    fn chain_id_of_upper_layer_hashes_parent_space_diff_id() {
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(format!("{A} {B}"))));
        assert_eq!(chain_id(Some(A), B).unwrap(), expected);
        assert_eq!(chain_ids(&[A.into(), B.into()]).unwrap(), vec![A.to_string(), expected]);
    }

    #[test]
    fn chain_id_refuses_malformed_diff_ids() {
        assert!(chain_id(None, "sha256:xyz").is_err());
        assert!(chain_id(None, "md5:abc").is_err());
        assert!(chain_id(None, &A.to_uppercase()).is_err());
    }
}
