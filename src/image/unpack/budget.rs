//! Unpack budgets: how much one layer, and the layers of one image together, may write, how many tar entries and
//! inodes they may have, how far a compressed stream may expand, and how much free space and how many free inodes
//! must remain on the destination's file system while unpacking (docs/unpack.md, "Budgets").
//!
//! A layer is hostile input: a few KiB of gzip can inflate to gigabytes, a tiny tar entry can declare a sparse
//! file of any size (its holes are written as zeros, so they count), and an archive of empty files costs inodes
//! and no bytes. The [`Meter`] sees every entry and every chunk written and stops the unpack with the numbers
//! before the disk fills; the caller then discards the partial snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

/// Bytes charged per inode a layer creates, on top of file contents: what a small file costs on disk (one
/// block), so that an archive of empty files is measured like the data it puts on the file system.
pub const INODE_COST: u64 = 4096;
/// The free space and free inodes are looked at again after this many bytes (or [`DISK_CHECK_INODES`] inodes).
const DISK_CHECK_BYTES: u64 = 16 << 20;
const DISK_CHECK_INODES: u64 = 4096;

/// What layers have used of a budget: bytes written (contents plus [`INODE_COST`] per inode), tar entries and
/// inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes written, sparse holes included, plus [`INODE_COST`] per inode.
    pub bytes: u64,
    /// Tar entries read.
    pub entries: u64,
    /// Inodes created (or directories updated).
    pub inodes: u64,
}

impl Usage {
    /// What one finished layer used, from its statistics.
    pub fn of(stats: &UnpackStats) -> Usage {
        Usage { bytes: stats.written_bytes, entries: stats.entries, inodes: stats.inodes }
    }

    /// The sum of two usages (saturating).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            bytes: self.bytes.saturating_add(other.bytes),
            entries: self.entries.saturating_add(other.entries),
            inodes: self.inodes.saturating_add(other.inodes),
        }
    }
}

/// The limits of one unpack. The defaults are those of `[unpack]` in the agent config (and a 1 GiB disk
/// reserve, `registry.disk_reserve_bytes`): safe for any image a Jetson runs, fatal for layer bombs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnpackBudget {
    /// `unpack.layer_max_bytes`.
    pub layer_bytes: u64,
    /// `unpack.layer_max_entries`.
    pub layer_entries: u64,
    /// `unpack.layer_max_inodes`.
    pub layer_inodes: u64,
    /// `unpack.image_max_bytes`.
    pub image_bytes: u64,
    /// `unpack.image_max_entries`.
    pub image_entries: u64,
    /// `unpack.image_max_inodes`.
    pub image_inodes: u64,
    /// What the image's layers unpacked before this one used (set by `SnapshotStore::ensure_all`).
    pub image_used: Usage,
    /// `unpack.max_expansion_ratio`: bytes written per compressed byte read.
    pub max_ratio: f64,
    /// `unpack.expansion_grace_bytes`: bytes a layer may write before the ratio applies.
    pub grace_bytes: u64,
    /// `registry.disk_reserve_bytes`: free bytes that must remain on the destination's file system.
    pub reserve_bytes: u64,
    /// `unpack.inode_reserve`: free inodes that must remain there.
    pub reserve_inodes: u64,
}

impl Default for UnpackBudget {
    fn default() -> Self {
        Self::from_config(
            &crate::config::UnpackConfig::default(),
            crate::config::RegistryConfig::default().disk_reserve_bytes,
        )
    }
}

impl UnpackBudget {
    /// The budget `[unpack]` sets, with `disk_reserve` (`registry.disk_reserve_bytes`) free bytes to keep.
    pub fn from_config(cfg: &crate::config::UnpackConfig, disk_reserve: u64) -> Self {
        Self {
            layer_bytes: cfg.layer_max_bytes,
            layer_entries: cfg.layer_max_entries,
            layer_inodes: cfg.layer_max_inodes,
            image_bytes: cfg.image_max_bytes,
            image_entries: cfg.image_max_entries,
            image_inodes: cfg.image_max_inodes,
            image_used: Usage::default(),
            max_ratio: cfg.max_expansion_ratio,
            grace_bytes: cfg.expansion_grace_bytes,
            reserve_bytes: disk_reserve,
            reserve_inodes: cfg.inode_reserve,
        }
    }

    /// The first limit that `layer` (what this layer used so far, after reading `compressed` bytes of its blob)
    /// breaks, if any. Pure.
    pub fn check(&self, layer: Usage, compressed: u64) -> Option<UnpackError> {
        let image = self.image_used.plus(layer);
        let over = |what: &'static str, used: u64, limit: u64, key: &'static str| {
            (used > limit).then_some(UnpackError::Budget { what, used, limit, key })
        };
        over("tar entries", layer.entries, self.layer_entries, "unpack.layer_max_entries")
            .or_else(|| over("inodes created", layer.inodes, self.layer_inodes, "unpack.layer_max_inodes"))
            .or_else(|| over("bytes written", layer.bytes, self.layer_bytes, "unpack.layer_max_bytes"))
            .or_else(|| over("tar entries of the image", image.entries, self.image_entries, "unpack.image_max_entries"))
            .or_else(|| over("inodes of the image", image.inodes, self.image_inodes, "unpack.image_max_inodes"))
            .or_else(|| over("bytes written for the image", image.bytes, self.image_bytes, "unpack.image_max_bytes"))
            .or_else(|| {
                let ratio_limit = self.max_ratio * compressed.max(1) as f64;
                (layer.bytes > self.grace_bytes && layer.bytes as f64 > ratio_limit).then_some(UnpackError::Expansion {
                    written: layer.bytes,
                    compressed,
                    ratio: self.max_ratio,
                })
            })
    }

    /// Whether a file of `size` bytes still fits the byte limits after `layer`: checked before any of it is
    /// written, so a declared 3 GiB sparse file is refused at once. Pure.
    pub(crate) fn check_file(&self, layer: Usage, size: u64) -> Option<UnpackError> {
        let after = Usage { bytes: layer.bytes.saturating_add(size), ..layer };
        let image = self.image_used.plus(after);
        let over = |what: &'static str, used: u64, limit: u64, key: &'static str| {
            (used > limit).then_some(UnpackError::Budget { what, used, limit, key })
        };
        over(
            "bytes written (with a file that declares its size)",
            after.bytes,
            self.layer_bytes,
            "unpack.layer_max_bytes",
        )
        .or_else(|| {
            over(
                "bytes written for the image (with a file that declares its size)",
                image.bytes,
                self.image_bytes,
                "unpack.image_max_bytes",
            )
        })
    }
}

/// A reader that counts the bytes read through it into a shared counter (the compressed bytes of a layer).
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Meters one layer unpack against its budget, looking at the destination's free space and inodes as it goes.
pub(crate) struct Meter {
    pub(crate) budget: UnpackBudget,
    /// Compressed bytes of the blob read so far.
    pub(crate) compressed: Arc<AtomicU64>,
    /// Usage at which the free space and inodes are looked at next.
    next_disk_check: Usage,
}

impl Meter {
    pub(crate) fn new(budget: UnpackBudget, compressed: Arc<AtomicU64>) -> Meter {
        Meter { budget, compressed, next_disk_check: Usage::default() }
    }

    /// Checks `used` against the budget, and the free space of the file system of `root` every few MiB.
    pub(crate) fn check(&mut self, used: Usage, root: BorrowedFd<'_>) -> Option<UnpackError> {
        if let Some(e) = self.budget.check(used, self.compressed.load(Ordering::Relaxed)) {
            return Some(e);
        }
        if used.bytes < self.next_disk_check.bytes && used.inodes < self.next_disk_check.inodes {
            return None;
        }
        self.next_disk_check =
            Usage { bytes: used.bytes + DISK_CHECK_BYTES, inodes: used.inodes + DISK_CHECK_INODES, entries: 0 };
        let st = nix::sys::statvfs::fstatvfs(root).ok()?;
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        if free < self.budget.reserve_bytes {
            return Some(UnpackError::NoSpace { written: used.bytes, free, reserve: self.budget.reserve_bytes });
        }
        // File systems without an inode table (btrfs) report 0 files: nothing to check there.
        let free_inodes = st.files_available() as u64;
        if st.files() > 0 && free_inodes < self.budget.reserve_inodes {
            return Some(UnpackError::NoInodes {
                inodes: used.inodes,
                free: free_inodes,
                reserve: self.budget.reserve_inodes,
            });
        }
        None
    }

    /// Checks that a regular file of `size` bytes fits before it is written.
    pub(crate) fn check_file(&self, used: Usage, size: u64) -> Option<UnpackError> {
        self.budget.check_file(used, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> UnpackBudget {
        UnpackBudget {
            layer_bytes: 1000,
            layer_entries: 10,
            layer_inodes: 8,
            image_bytes: 1500,
            image_entries: 15,
            image_inodes: 12,
            image_used: Usage::default(),
            max_ratio: 10.0,
            grace_bytes: 100,
            reserve_bytes: 0,
            reserve_inodes: 0,
        }
    }

    fn key(e: Option<UnpackError>) -> Option<String> {
        e.map(|e| match e {
            UnpackError::Budget { key, .. } => key.to_string(),
            UnpackError::Expansion { .. } => "ratio".into(),
            other => other.to_string(),
        })
    }

    #[test]
    fn each_layer_limit_names_its_key() {
        let b = small();
        let u = |bytes, entries, inodes| Usage { bytes, entries, inodes };
        assert_eq!(key(b.check(u(1000, 10, 8), 100)), None, "at the limits is fine");
        assert_eq!(key(b.check(u(0, 11, 0), 100)).as_deref(), Some("unpack.layer_max_entries"));
        assert_eq!(key(b.check(u(0, 1, 9), 100)).as_deref(), Some("unpack.layer_max_inodes"));
        assert_eq!(key(b.check(u(1001, 1, 1), 1000)).as_deref(), Some("unpack.layer_max_bytes"));
    }

    #[test]
    fn image_limits_count_the_layers_before() {
        let b = UnpackBudget { image_used: Usage { bytes: 900, entries: 10, inodes: 10 }, ..small() };
        let u = |bytes, entries, inodes| Usage { bytes, entries, inodes };
        assert_eq!(key(b.check(u(600, 1, 1), 600)), None);
        assert_eq!(key(b.check(u(601, 1, 1), 601)).as_deref(), Some("unpack.image_max_bytes"));
        assert_eq!(key(b.check(u(1, 6, 1), 600)).as_deref(), Some("unpack.image_max_entries"));
        assert_eq!(key(b.check(u(1, 1, 3), 600)).as_deref(), Some("unpack.image_max_inodes"));
        assert_eq!(key(b.check_file(u(500, 1, 1), 101)).as_deref(), Some("unpack.image_max_bytes"));
    }

    #[test]
    fn expansion_ratio_applies_after_the_grace() {
        let b = small();
        let u = |bytes| Usage { bytes, entries: 1, inodes: 1 };
        assert_eq!(key(b.check(u(100), 1)), None, "within the grace any ratio is fine");
        assert_eq!(key(b.check(u(101), 10)).as_deref(), Some("ratio"), "101 bytes from 10 is over 10x");
        assert_eq!(key(b.check(u(100 * 10), 100)), None, "exactly 10x");
        assert_eq!(key(b.check(u(500), 0)).as_deref(), Some("ratio"), "nothing read yet counts as one byte");
    }

    #[test]
    fn a_declared_file_size_is_checked_before_writing() {
        let b = small();
        let u = Usage { bytes: 10, entries: 1, inodes: 1 };
        assert_eq!(key(b.check_file(u, 990)), None);
        assert_eq!(key(b.check_file(u, 991)).as_deref(), Some("unpack.layer_max_bytes"));
        assert_eq!(key(b.check_file(u, u64::MAX)).as_deref(), Some("unpack.layer_max_bytes"), "no overflow");
    }

    #[test]
    fn defaults_are_the_config_defaults() {
        let b = UnpackBudget::default();
        assert_eq!(b.layer_bytes, 32 << 30);
        assert_eq!(b.max_ratio, 100.0);
        assert_eq!(b.reserve_bytes, 1 << 30);
        assert_eq!(b.image_used, Usage::default());
    }
}
