//! Streams one OCI image layer (plain, gzip or zstd tar) into a directory, confined to that directory.
//!
//! Owns the tar-to-tree mechanics: path confinement, whiteouts, hardlinks, symlinks, modes, owners, times and
//! xattrs, and the DiffID (sha256 of the uncompressed tar) of what it read. It does not decide where snapshots
//! live, when a layer is unpacked or how a root file system is assembled (that is `snapshot`), and it never
//! touches anything outside the destination root.
//!
//! Confinement: every entry path is cleaned lexically (`/x`, `./x` and `x` all mean the root's `x`; a `..` that
//! would climb above the root refuses the entry) and then resolved one component at a time with
//! `openat(O_NOFOLLOW | O_DIRECTORY)` from a file descriptor of the root. A parent component that is a symlink
//! refuses the entry, wherever the symlink points: layers produced by `docker build`, buildkit or umoci never
//! write through a symlink, so an entry that does is malformed or an escape attempt (libarchive's
//! `SECURE_SYMLINKS` rule). Hardlink targets are resolved the same way and must already exist inside the root.
//! The last component is never followed: an existing entry there is removed and replaced. Symlink targets are
//! stored verbatim; they are never followed while unpacking.
//!
//! Unpacking blocks on file-system work: async callers run it in `spawn_blocking`.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};

/// Errors from unpacking a layer. Each names the entry (or the stream) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer tries to place something outside the root, or through a symlink: the layer is refused.
    #[error("refused layer entry `{entry}`: {reason}; the layer is malformed or malicious: rebuild the image or do not use it")]
    Unsafe {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file-system operation failed while writing an entry.
    #[error("cannot unpack layer entry `{entry}` ({op}): {source}")]
    Write {
        /// The entry's path as written in the tar.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The compressed stream or the tar inside it is corrupt or cut short.
    #[error("layer stream is corrupt or truncated ({compression}): {source}; pull the layer again")]
    Corrupt {
        /// The compression that was being decoded.
        compression: Compression,
        /// The decoder's or tar reader's error.
        source: io::Error,
    },
    /// The media type says the layer is compressed but its first bytes say otherwise.
    #[error("layer media type `{media_type}` says {expected} but the blob does not start with its magic bytes; the blob is corrupt or mislabelled")]
    CompressionMismatch {
        /// The layer's media type.
        media_type: String,
        /// The compression the media type names.
        expected: Compression,
    },
    /// The media type names a compression this build cannot read.
    #[error("layer media type `{0}` is not a tar layer this agent can read (plain, gzip or zstd)")]
    UnsupportedMediaType(String),
    /// The uncompressed stream's sha256 differs from the DiffID the image config promises.
    #[error("layer DiffID mismatch: image config says {expected}, unpacked stream is {actual}; the blob is corrupt: pull it again")]
    DiffIdMismatch {
        /// The DiffID from the image config.
        expected: String,
        /// The sha256 of what was read.
        actual: String,
    },
    /// The destination root cannot be opened.
    #[error("cannot open unpack destination {path}: {source}")]
    Destination {
        /// The destination directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, UnpackError>;

/// Local policy for what a layer may create. Defaults to the safe choice for every field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackPolicy {
    /// Create character and block device nodes found in layers. Defaults to false: they are skipped and
    /// counted, because a device node in an image grants access to host hardware that the deployment did not ask for.
    pub allow_devices: bool,
}

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952), possibly multi-member.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "plain tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// The compression an OCI or Docker layer media type names, or an error for non-tar media types.
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        let mt = media_type.trim();
        let base = mt.split(';').next().unwrap_or("").trim();
        match base {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            _ => Err(UnpackError::UnsupportedMediaType(media_type.to_string())),
        }
    }

    /// The compression that the first bytes of a blob show, if any (gzip `1f 8b`, zstd `28 b5 2f fd`).
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// How whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The destination is one overlayfs lower dir per layer: a whiteout becomes a 0:0 character device and an
    /// opaque marker the `trusted.overlay.opaque=y` xattr, as containerd's overlay snapshotter writes them.
    Overlay,
    /// The destination is a flattened tree holding all lower layers: whiteouts delete what they name and an
    /// opaque marker deletes everything lower layers put in its directory.
    Apply,
}

/// Where a layer is unpacked.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The directory the layer's `/` maps to.
    pub root: PathBuf,
    /// In [`WhiteoutMode::Overlay`], the snapshots of the layers below, top first: consulted when an entry's
    /// parent directory is not in this layer (its metadata is copied up) and to refuse paths through their
    /// symlinks. Empty for the bottom layer and in [`WhiteoutMode::Apply`].
    pub lowers: Vec<PathBuf>,
    /// How whiteouts are written.
    pub whiteouts: WhiteoutMode,
}

/// What one unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    /// Tar entries read (after long-name and PAX headers are folded in).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// FIFOs created.
    pub fifos: u64,
    /// Device nodes created (only with `allow_devices`).
    pub devices: u64,
    /// Device nodes skipped by policy.
    pub devices_skipped: u64,
    /// Whiteouts applied or recorded.
    pub whiteouts: u64,
    /// Opaque directory markers applied or recorded.
    pub opaque_dirs: u64,
    /// Xattrs the destination file system refused (not supported there) and were left out.
    pub xattrs_skipped: u64,
    /// Entries of types that carry nothing to unpack (global PAX headers, volume labels).
    pub other_skipped: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    /// Bytes of regular-file content written.
    pub content_bytes: u64,
    /// The DiffID of the stream: `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
}

/// Unpacks the layer tar read from `reader` into `dest`, streaming. `media_type` is the layer descriptor's
/// media type (its compression is checked against the blob's magic bytes); `None` detects the compression
/// from the magic bytes alone. Returns what was done, including the DiffID of the uncompressed stream; the
/// caller compares it (see [`verify_diff_id`]) before trusting the result.
pub fn unpack_layer<R: Read>(
    reader: R,
    media_type: Option<&str>,
    dest: &Destination,
    policy: &UnpackPolicy,
) -> Result<UnpackStats> {
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let head = input.fill_buf().map_err(|source| UnpackError::Corrupt { compression: Compression::None, source })?;
    let sniffed = Compression::sniff(head);
    let compression = match media_type {
        None => sniffed.unwrap_or(Compression::None),
        Some(mt) => {
            let declared = Compression::from_media_type(mt)?;
            match (declared, sniffed) {
                (_, Some(found)) => found,
                (Compression::None, None) => Compression::None,
                (expected, None) => {
                    return Err(UnpackError::CompressionMismatch { media_type: mt.to_string(), expected })
                }
            }
        }
    };
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|source| UnpackError::Corrupt { compression, source })?,
        ),
    };
    let hashing = HashingReader { inner: decoded, hasher: Sha256::new(), bytes: 0 };
    let mut archive = tar::Archive::new(BufReader::with_capacity(256 * 1024, hashing));
    let mut applier = Applier::new(dest, *policy)?;
    let corrupt = |source| UnpackError::Corrupt { compression, source };
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let entry = entry.map_err(corrupt)?;
        applier.apply_tar_entry(entry, compression)?;
    }
    // The tar end marker may be followed by padding; it is part of the DiffID.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
    let hashing = rest.into_inner();
    let mut stats = applier.finish()?;
    stats.tar_bytes = hashing.bytes;
    stats.diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    Ok(stats)
}

/// Checks an unpack's DiffID against the one the image config lists (`sha256:<hex>`).
pub fn verify_diff_id(stats: &UnpackStats, expected: &str) -> Result<()> {
    if stats.diff_id.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(UnpackError::DiffIdMismatch { expected: expected.to_string(), actual: stats.diff_id.clone() })
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A path inside the root, as cleaned components (empty = the root itself).
pub type Components = Vec<OsString>;

/// Cleans a tar path lexically: `/` and `.` components are dropped, `..` removes the previous component.
/// Returns the reason when a `..` would climb above the root. Pure; never touches the file system.
pub fn clean_path(raw: &[u8]) -> std::result::Result<Components, String> {
    let mut out: Components = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path climbs out of the root with `..`".to_string());
                }
            }
            _ => out.push(OsStr::from_bytes(part).to_os_string()),
        }
    }
    Ok(out)
}

/// What a whiteout-style name means.
#[derive(Debug, PartialEq, Eq)]
pub enum Special {
    /// An ordinary entry.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything lower layers have in it.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Whiteout(OsString),
    /// Another `.wh..wh.` name (aufs metadata such as `.wh..wh.plnk`): carries nothing for us.
    AufsMeta,
}

/// Classifies the last component of an entry path. Pure.
pub fn classify_name(name: &OsStr) -> std::result::Result<Special, String> {
    let b = name.as_bytes();
    if b == b".wh..wh..opq" {
        return Ok(Special::Opaque);
    }
    if b.starts_with(b".wh..wh.") {
        return Ok(Special::AufsMeta);
    }
    if let Some(rest) = b.strip_prefix(b".wh.") {
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err(format!("whiteout names `{}`, which is not a file name", String::from_utf8_lossy(rest)));
        }
        return Ok(Special::Whiteout(OsStr::from_bytes(rest).to_os_string()));
    }
    Ok(Special::None)
}

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

trait Ctx<T> {
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

fn show(comps: &[OsString]) -> String {
    if comps.is_empty() {
        return "/".to_string();
    }
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    v.join("/")
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

fn is_whiteout_dev(st: &nix::sys::stat::FileStat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

fn kind(st: &nix::sys::stat::FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Walks paths inside a root without ever following a symlink, keeping the descriptors of the last parent
/// chain so that entries in the same directory cost one `fstatat`.
struct Resolver {
    root: OwnedFd,
    lowers: Vec<OwnedFd>,
    /// Open descriptors of the components of the last resolved parent, outermost first.
    stack: Vec<(OsString, OwnedFd)>,
    /// Directories this walk created, with the times they must end with (copied from a lower layer).
    created: Vec<(Components, Meta)>,
}

impl Resolver {
    fn invalidate(&mut self) {
        self.stack.clear();
    }

    /// Opens the directory `comps` (empty = root). With `create`, missing directories are made (copying the
    /// metadata of a lower layer's directory at the same path, else root-owned 0755); without it, a missing
    /// component gives `Ok(None)`. A symlink or other non-directory on the way refuses the entry.
    fn open_dir(&mut self, comps: &[OsString], create: bool) -> std::result::Result<Option<BorrowedFd<'_>>, Fail> {
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

enum Found {
    Dir(Meta),
    Symlink(OsString),
    /// A regular file, with the lower directory holding it.
    File(OwnedFd),
    Other,
}

/// Looks `comps` up in the merged view of the lower snapshots (top first), honouring their whiteouts and
/// opaque directories the way overlayfs does.
fn lower_lookup(lowers: &[OwnedFd], comps: &[OsString]) -> std::result::Result<Option<Found>, Fail> {
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

/// Applies entries (from a tar stream or from a snapshot tree) to a destination root.
pub(crate) struct Applier {
    res: Resolver,
    whiteouts: WhiteoutMode,
    policy: UnpackPolicy,
    /// Paths written by this layer; in `Apply` mode an opaque marker keeps these and removes the rest.
    upper: HashSet<Components>,
    /// Directories whose times are set at the end (after their children are written).
    dir_times: Vec<(Components, Meta)>,
    /// In `Apply` mode, existing directories this layer writes into, with the times they had before: restored
    /// at the end, as the layer's own tree did not change them (umoci and Docker keep them too).
    restore: Vec<(Components, Meta)>,
    noted: HashSet<Components>,
    noted_last: Option<Components>,
    stats: UnpackStats,
    buf: Vec<u8>,
    is_root: bool,
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
        })
    }

    fn apply_tar_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, compression: Compression) -> Result<()> {
        self.stats.entries += 1;
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
                let mut src = &mut entry;
                self.file(&comps, &meta, &mut src)
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
        result.map_err(|f| match f {
            // A read error while copying contents is the stream's fault, not the destination's.
            Fail::Io("read layer", source) => UnpackError::Corrupt { compression, source },
            f => wrap(f),
        })
    }

    /// Opens the parent of `comps` (creating missing directories) and makes room for the last component:
    /// an existing entry there is removed unless both it and the new entry are directories.
    /// Returns the parent descriptor and whether a directory already exists at the name.
    fn prepare(&mut self, comps: &[OsString], is_dir: bool) -> std::result::Result<(OwnedFd, bool), Fail> {
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
    fn note_parent(&mut self, comps: &[OsString], fd: &OwnedFd) -> std::result::Result<(), Fail> {
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

    fn chown_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> std::result::Result<(), Fail> {
        match fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))) {
            Ok(()) => Ok(()),
            // Unprivileged unpack (tests, tools): ownership cannot be kept, everything else can.
            Err(Errno::EPERM) if !self.is_root => Ok(()),
            Err(e) => Err(Fail::Io("chown", e.into())),
        }
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> std::result::Result<(), Fail> {
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
    fn find(&mut self, comps: &[OsString]) -> std::result::Result<Option<(OwnedFd, nix::sys::stat::FileStat)>, Fail> {
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
    fn copy_up(&mut self, comps: &[OsString]) -> std::result::Result<bool, Fail> {
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
    fn chown_at(&self, pfd: &OwnedFd, name: &OsStr, meta: &Meta, what: &'static str) -> std::result::Result<(), Fail> {
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

    fn node(&mut self, comps: &[OsString], meta: &Meta, kind: SFlag, dev: u64) -> std::result::Result<(), Fail> {
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
    fn clear_lower(&self, fd: &OwnedFd, prefix: &mut Components) -> std::result::Result<(), Fail> {
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

fn ts((sec, nsec): (i64, i64)) -> TimeSpec {
    TimeSpec::new(sec as _, nsec as _)
}

/// Parses a PAX time (`1700000000.123456789`) into seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
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

/// Removes `name` under `dir` without following it; directories go recursively.
fn remove_at(dir: &OwnedFd, name: &OsStr, is_dir: bool) -> std::result::Result<(), Fail> {
    if is_dir {
        // std's remove_dir_all never follows symlinks inside the tree it removes.
        let path = proc_path(dir, name);
        std::fs::remove_dir_all(&path).op("remove directory")
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).op("remove")
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path that reaches `name` through an already-confined directory descriptor.
fn proc_path(dir: &impl AsRawFd, name: &OsStr) -> PathBuf {
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

fn xattr_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP))
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))
}

fn fset_xattr(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd, NUL-terminated name, value pointer/length from a slice.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_xattr_required(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> std::result::Result<(), Fail> {
    fset_xattr(fd, name, value).map_err(|e| {
        Fail::Io("set overlay xattr (needs root and a file system with trusted xattrs, such as ext4 or xfs)", e)
    })
}

fn lset_xattr_at(dir: &impl AsRawFd, name: &OsStr, xname: &[u8], value: &[u8]) -> io::Result<()> {
    let path = CString::new(proc_path(dir, name).into_os_string().into_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let n = cstr(xname)?;
    // SAFETY: NUL-terminated path and name, value from a slice.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn fget_xattr(fd: &impl AsRawFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buffer pointer/length from a Vec we own.
        let r = unsafe { libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ if xattr_unsupported(&e) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// All xattrs of an open file or directory, names with values.
pub(crate) fn list_xattrs(fd: &impl AsRawFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: buffer pointer/length from a Vec we own.
        let r = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ if xattr_unsupported(&e) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if let Some(v) = fget_xattr(fd, name)? {
            out.push((name.to_vec(), v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(v: &[&str]) -> Components {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn clean_path_maps_absolute_and_dot_paths_to_the_root() {
        assert_eq!(clean_path(b"/etc/passwd").unwrap(), comps(&["etc", "passwd"]));
        assert_eq!(clean_path(b"./etc//passwd").unwrap(), comps(&["etc", "passwd"]));
        assert_eq!(clean_path(b"a/b/../c/").unwrap(), comps(&["a", "c"]));
        assert_eq!(clean_path(b"./").unwrap(), comps(&[]));
    }

    #[test]
    fn clean_path_refuses_climbing_out() {
        assert!(clean_path(b"../evil").is_err());
        assert!(clean_path(b"a/../../evil").is_err());
        assert!(clean_path(b"/../evil").is_err());
        assert!(clean_path(b"./a/./../..").is_err());
    }

    #[test]
    fn classify_name_knows_whiteouts_and_opaque_markers() {
        assert_eq!(classify_name(OsStr::new(".wh..wh..opq")).unwrap(), Special::Opaque);
        assert_eq!(classify_name(OsStr::new(".wh.foo")).unwrap(), Special::Whiteout("foo".into()));
        assert_eq!(classify_name(OsStr::new(".wh..wh.plnk")).unwrap(), Special::AufsMeta);
        assert_eq!(classify_name(OsStr::new("foo.wh.")).unwrap(), Special::None);
        assert!(classify_name(OsStr::new(".wh...")).is_err());
        assert!(classify_name(OsStr::new(".wh.")).is_err());
    }

    #[test]
    fn compression_comes_from_media_type_and_magic() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(Compression::from_media_type("application/vnd.oci.image.layer.v1.tar").unwrap(), Compression::None);
        assert!(Compression::from_media_type("application/vnd.oci.image.config.v1+json").is_err());
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Compression::Zstd));
        assert_eq!(Compression::sniff(b"etc/"), None);
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
