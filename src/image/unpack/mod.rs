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
//! Budgets (`budget`): every unpack is metered against an [`UnpackBudget`] (bytes written with sparse holes,
//! entries, inodes, expansion ratio, free space and inodes left) and stopped with the numbers when it breaks one.
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

mod apply;
mod budget;
mod confine;
mod path;
mod xattr;

pub(crate) use apply::*;
pub(crate) use budget::{CountingReader, Meter};
pub use budget::{UnpackBudget, Usage, INODE_COST};
pub(crate) use confine::*;
pub(crate) use path::*;
pub(crate) use xattr::*;

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
    /// The layer broke a limit of its [`UnpackBudget`].
    #[error("layer unpack stopped: {what} reached {used}, over the limit of {limit} ({key}); the layer is a decompression bomb or a broken image, or the limit is too low for it")]
    Budget {
        /// What was counted.
        what: &'static str,
        /// How much was used when it stopped.
        used: u64,
        /// The limit.
        limit: u64,
        /// The config key that sets it.
        key: &'static str,
    },
    /// The layer wrote far more than its compressed size.
    #[error("layer unpack stopped: it wrote {written} bytes from {compressed} compressed bytes, more than {ratio} times as much (unpack.max_expansion_ratio); the layer is a decompression bomb, or the limit is too low for it")]
    Expansion {
        /// Bytes written (file contents with sparse holes, plus a block per inode).
        written: u64,
        /// Compressed bytes read.
        compressed: u64,
        /// The ratio allowed.
        ratio: f64,
    },
    /// The destination's free space fell to the reserve.
    #[error("layer unpack stopped after writing {written} bytes: {free} bytes are free on the state dir's file system and {reserve} must stay free (registry.disk_reserve_bytes); free space (jetship image-gc) or lower the reserve")]
    NoSpace {
        /// Bytes written by this layer so far.
        written: u64,
        /// Free bytes left.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// The destination's free inodes fell to the reserve.
    #[error("layer unpack stopped after creating {inodes} inodes: {free} inodes are free on the state dir's file system and {reserve} must stay free (unpack.inode_reserve); free space (jetship image-gc) or lower the reserve")]
    NoInodes {
        /// Inodes created by this layer so far.
        inodes: u64,
        /// Free inodes left.
        free: u64,
        /// The reserve.
        reserve: u64,
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnpackPolicy {
    /// Create character and block device nodes found in layers. Defaults to false: they are skipped and
    /// counted, because a device node in an image grants access to host hardware that the deployment did not ask for.
    pub allow_devices: bool,
    /// What one layer (and the image's layers together) may write. Defaults to the `[unpack]` defaults.
    pub budget: UnpackBudget,
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
    pub(crate) fn from_media_type(media_type: &str) -> Result<Compression> {
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
    pub(crate) fn sniff(head: &[u8]) -> Option<Compression> {
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
    /// Inodes created (files, directories created or updated, links, nodes, overlay whiteouts).
    #[serde(default)]
    pub inodes: u64,
    /// What the budget counts as written: `content_bytes` plus [`INODE_COST`] per inode.
    #[serde(default)]
    pub written_bytes: u64,
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
    let compressed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = CountingReader { inner: reader, count: compressed.clone() };
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
    applier.meter = Some(Meter::new(policy.budget, compressed));
    let corrupt = |source| UnpackError::Corrupt { compression, source };
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let entry = entry.map_err(corrupt)?;
        if let Err(e) = applier.apply_tar_entry(entry, compression) {
            // A budget stop is reported as itself, not as the entry it happened to stop in.
            return Err(applier.stopped.take().unwrap_or(e));
        }
    }
    // The tar end marker may be followed by padding; it is part of the DiffID.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
    let hashing = rest.into_inner();
    let used = applier.usage();
    let mut stats = applier.finish()?;
    stats.inodes = used.inodes;
    stats.written_bytes = used.bytes;
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
