//! The content store under `<state_dir>/images/`: blobs addressed by sha256, resumable partial downloads, image
//! records, and garbage collection.
//!
//! Layout: `blobs/sha256/<hex>` (verified content only), `ingest/<hex>.partial` (bytes received so far) with
//! `ingest/<hex>.json` (expected size, source), `refs/<sha256 of name>.json` (image records, written with
//! `fsutil::write_atomic`). A blob enters `blobs/` only after its size and digest were checked, then fsync, then
//! rename. This module does no network IO; `crate::image::pull` feeds it bytes.
//!
//! Verified before use: small blobs (manifests, indexes, configs) are hashed on every read, a blob's presence
//! means its size matches (and its digest, up to [`HASH_ON_CHECK`] bytes), and a layer is hashed while it is
//! read for unpacking ([`VerifiedBlob`]). A blob that fails is deleted (so the next pull fetches it again) and
//! the repair noted in `os::journal`; [`ImageStore::check`] does the same for the whole store at start.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::base::Repair;
use crate::os::{fsutil, journal};

/// Store errors; each names the blob, the image or the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{0}` is not a sha256 digest (sha256:<64 lowercase hex>)")]
    BadDigest(String),
    #[error("blob {digest} is not in the store: pull its image first")]
    MissingBlob { digest: String },
    #[error("blob {digest}: received bytes hash to {actual}; the download was corrupted and is discarded")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest}: expected {expected} bytes, received {actual}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("no image `{0}` in the store: pull it first (`jetship pull`)")]
    NoImage(String),
    #[error("stored manifest {digest} of {image} is unusable: {detail}")]
    BadManifest { image: String, digest: String, detail: String },
    #[error("blob {digest} in the store was damaged ({detail}); it was removed and is pulled again when next needed")]
    Damaged { digest: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The hex part of a `sha256:<hex>` digest, validated so it is safe as a file name.
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(h),
        _ => Err(Error::BadDigest(digest.to_owned())),
    }
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// What a name (the reference as asked for, normalised, e.g. `docker.io/dustynv/l4t-pytorch:{auto}`) points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The key: the normalised reference as asked for (templates expanded, `{auto}` kept).
    pub name: String,
    /// The reference pulled, pinned: `registry/repo:tag@sha256:...` (the digest of `index_digest` or
    /// `manifest_digest`, whichever the tag points at).
    pub resolved: String,
    /// The index or manifest list the tag pointed at, if any.
    pub index_digest: Option<String>,
    /// The platform's image manifest.
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config_digest: String,
    pub layers: Vec<LayerRecord>,
    /// `os/arch[/variant]` of the manifest.
    pub platform: String,
    /// RFC 3339 time of the pull.
    pub pulled_at: String,
    /// The manifest this name pointed at before (kept by GC for rollback).
    pub previous_manifest_digest: Option<String>,
}

/// An image read back from the store: record, manifest and config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub record: ImageRecord,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// What garbage collection removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub removed_blobs: usize,
    pub removed_bytes: u64,
    pub kept_blobs: usize,
    pub removed_partials: usize,
    /// Records of images not in use, removed with their blobs.
    pub removed_records: usize,
}

/// The content store rooted at `<state_dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct IngestMeta {
    digest: String,
    size: u64,
    source: String,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `state_dir/images`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("images");
        for sub in ["blobs/sha256", "ingest", "refs"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Self { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Where a partial download of a blob lives.
    pub(crate) fn partial_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("ingest").join(format!("{}.partial", digest_hex(digest)?)))
    }

    /// Whether a blob file is present (not checked: for coordinating writers; use [`ImageStore::has_verified_blob`]
    /// before trusting it).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The store-relative name of a blob for reports (`images/blobs/sha256/<hex>`).
    fn blob_subject(digest: &str) -> String {
        format!("images/blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// Removes a damaged blob and notes the repair; returns the error to hand up.
    fn drop_damaged(&self, digest: &str, detail: String) -> Error {
        if let Ok(p) = self.blob_path(digest) {
            let _ = fs::remove_file(&p);
        }
        journal::note(
            Repair::new(Self::blob_subject(digest), detail.clone(), "removed; pulled again when next needed")
                .lost("nothing that a registry cannot give again"),
        );
        Error::Damaged { digest: digest.to_owned(), detail }
    }

    /// Whether blob `digest` of `size` bytes is present and sound: its size matches, and so does its digest when
    /// it is at most [`HASH_ON_CHECK`] bytes (larger layers are hashed when they are read for unpacking). A blob
    /// that fails is removed (and the repair noted), so the caller fetches it again.
    pub fn has_verified_blob(&self, digest: &str, size: u64) -> bool {
        let Ok(p) = self.blob_path(digest) else { return false };
        let len = match fs::metadata(&p) {
            Ok(m) if m.is_file() => m.len(),
            _ => return false,
        };
        if len != size {
            self.drop_damaged(digest, format!("{len} bytes, {size} expected"));
            return false;
        }
        if size <= HASH_ON_CHECK {
            match hash_file(&p) {
                Ok(actual) if actual == digest => {}
                Ok(actual) => {
                    self.drop_damaged(digest, format!("content hashes to {actual}"));
                    return false;
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Bytes of a partial download kept from an earlier attempt (0 if none).
    pub fn partial_len(&self, digest: &str) -> u64 {
        self.partial_path(digest).ok().and_then(|p| fs::metadata(p).ok()).map_or(0, |m| m.len())
    }

    /// Opens a verified blob for reading (layers are streamed from here when unpacking).
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let p = self.blob_path(digest)?;
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingBlob { digest: digest.to_owned() },
            _ => Error::Io { path: p, source: e },
        })
    }

    /// Whether blob `digest` is present and hashes to its digest, reading it whole; a damaged one is removed (and
    /// the repair noted).
    pub(crate) fn verify_full(&self, digest: &str) -> bool {
        let Ok(p) = self.blob_path(digest) else { return false };
        match hash_file(&p) {
            Ok(actual) if actual == digest => true,
            Ok(actual) => {
                self.drop_damaged(digest, format!("content hashes to {actual}"));
                false
            }
            Err(_) => false,
        }
    }

    /// Opens a layer blob for unpacking through a reader that hashes what it hands out:
    /// [`VerifiedBlob::finish`] says whether the blob was sound (and removes it when not).
    pub(crate) fn open_verified(&self, digest: &str) -> Result<VerifiedBlob> {
        Ok(VerifiedBlob {
            file: self.open_blob(digest)?,
            hasher: Sha256::new(),
            digest: digest.to_owned(),
            store: self.clone(),
        })
    }

    /// Reads a small blob (manifest, config) whole, up to `limit` bytes, and checks its digest: a damaged one is
    /// removed ([`Error::Damaged`]).
    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let mut buf = Vec::new();
        self.open_blob(digest)?.take(limit).read_to_end(&mut buf).map_err(io_err(&p))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&buf)));
        if actual != digest {
            return Err(self.drop_damaged(digest, format!("content ({} bytes) hashes to {actual}", buf.len())));
        }
        Ok(buf)
    }

    /// Stores a small blob held in memory (manifest, index, config) after checking its digest.
    pub fn put_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        if actual != digest {
            return Err(Error::DigestMismatch { digest: digest.to_owned(), actual });
        }
        let p = self.blob_path(digest)?;
        if p.is_file() && self.has_verified_blob(digest, data.len() as u64) {
            return Ok(());
        }
        fsutil::write_atomic(&p, data).map_err(io_err(&p))
    }

    /// Starts or resumes the download of a blob: takes the partial file's lock (waiting while another pull
    /// writes the same blob), re-hashes what it already holds, and records the expected size. A partial longer
    /// than `size` is discarded. `None` when the blob was committed by another pull meanwhile.
    ///
    /// Blocks: call it off the async threads.
    pub fn ingest(&self, digest: &str, size: u64, source: &str) -> Result<Option<Ingest>> {
        let path = self.partial_path(digest)?;
        let lock = loop {
            let lock_file =
                OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io_err(&path))?;
            let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| Error::Io { path: path.clone(), source: io::Error::from(errno) })?;
            if self.has_blob(digest) {
                // Whatever is at the partial path now is a leftover of a blob that is complete.
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
            // The holder before us may have renamed or deleted the file we waited on: lock the current one.
            let locked = lock.metadata().map_err(io_err(&path))?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == locked.ino() && m.dev() == locked.dev() => break lock,
                _ => continue,
            }
        };
        let meta_path = path.with_extension("json");
        let meta = IngestMeta { digest: digest.to_owned(), size, source: source.to_owned() };
        let old: Option<IngestMeta> = fs::read(&meta_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if old.as_ref().is_none_or(|m| m.size != size || m.source != source) {
            let json = serde_json::to_vec(&meta).unwrap_or_default();
            fsutil::write_atomic(&meta_path, &json).map_err(io_err(&meta_path))?;
        }
        let file = lock.try_clone().map_err(io_err(&path))?;
        let mut hasher = Sha256::new();
        let mut written = file.metadata().map_err(io_err(&path))?.len();
        if written > size {
            file.set_len(0).map_err(io_err(&path))?;
            written = 0;
        } else if written > 0 {
            let mut buf = vec![0u8; 1 << 16];
            let mut reader = File::open(&path).map_err(io_err(&path))?.take(written);
            loop {
                let n = reader.read(&mut buf).map_err(io_err(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(Some(Ingest {
            _lock: lock,
            blob_path: self.blob_path(digest)?,
            meta_path,
            path,
            digest: digest.to_owned(),
            size,
            written,
            hasher,
            out: BufWriter::with_capacity(1 << 20, file),
            writeback_from: written,
        }))
    }

    /// Records an image under its name; the manifest it pointed at before becomes `previous_manifest_digest`.
    pub(crate) fn write_record(&self, mut record: ImageRecord) -> Result<ImageRecord> {
        let path = self.record_path(&record.name);
        if let Ok(Some(old)) = self.record(&record.name) {
            record.previous_manifest_digest = if old.manifest_digest != record.manifest_digest {
                Some(old.manifest_digest)
            } else {
                old.previous_manifest_digest
            };
        }
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        fsutil::write_sealed(&path, &json).map_err(io_err(&path))?;
        Ok(record)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("refs").join(format!("{}.json", hex::encode(Sha256::digest(name.as_bytes()))))
    }

    /// The record stored under `name`, if any.
    pub fn record(&self, name: &str) -> Result<Option<ImageRecord>> {
        let path = self.record_path(name);
        match fs::metadata(&path) {
            Ok(_) => match fsutil::read_sealed(&path, 4 << 20)
                .and_then(|b| serde_json::from_slice(&b.unwrap_or_default()).map_err(|e| e.to_string()))
            {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let _ = fs::remove_file(&path);
                    journal::note(Repair::new(
                        format!("images/refs/{file}"),
                        format!("unreadable image record of {name} ({e})"),
                        "removed; rebuilt from the stored manifest or pulled again when next needed",
                    ));
                    Ok(None)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Every image record (unreadable ones are skipped with a warning).
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fsutil::read_sealed(&path, 4 << 20)
                .and_then(|b| serde_json::from_slice(&b.unwrap_or_default()).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let _ = fs::remove_file(&path);
                    journal::note(Repair::new(
                        format!("images/refs/{name}"),
                        format!("unreadable image record ({e})"),
                        "removed; rebuilt from the stored manifest or pulled again when next needed",
                    ));
                }
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the record `name` (its blobs go at the next GC). Returns whether it existed.
    pub(crate) fn remove_record(&self, name: &str) -> Result<bool> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// An image by record name, by pinned reference, or by manifest digest, with its manifest and config.
    pub fn image(&self, name_or_digest: &str) -> Result<StoredImage> {
        let found = match self.record(name_or_digest)? {
            Some(r) => Some(r),
            None => self
                .records()?
                .into_iter()
                .find(|r| r.resolved == name_or_digest || r.manifest_digest == name_or_digest),
        };
        let record = match found {
            Some(r) => r,
            None => self.rebuild_record(name_or_digest)?.ok_or_else(|| Error::NoImage(name_or_digest.to_owned()))?,
        };
        let bad = |detail: String| Error::BadManifest {
            image: record.name.clone(),
            digest: record.manifest_digest.clone(),
            detail,
        };
        let manifest = ImageManifest::from_reader(self.read_blob(&record.manifest_digest, 4 << 20)?.as_slice())
            .map_err(|e| bad(e.to_string()))?;
        let config = ImageConfiguration::from_reader(self.read_blob(&record.config_digest, 16 << 20)?.as_slice())
            .map_err(|e| bad(format!("config {}: {e}", record.config_digest)))?;
        Ok(StoredImage { record, manifest, config })
    }

    /// Rebuilds the record of a pinned reference (`name@sha256:...`) whose record was lost, from the manifest (or
    /// the index and a platform manifest) still in the store; `None` when they are not there.
    fn rebuild_record(&self, pinned: &str) -> Result<Option<ImageRecord>> {
        let Some((_, digest)) = pinned.rsplit_once('@') else { return Ok(None) };
        if digest_hex(digest).is_err() || !self.has_blob(digest) {
            return Ok(None);
        }
        let top = match self.read_blob(digest, 4 << 20) {
            Ok(b) => b,
            Err(Error::Damaged { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let value: serde_json::Value = serde_json::from_slice(&top).unwrap_or_default();
        let media = |v: &serde_json::Value| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned);
        let (index_digest, manifest_digest, manifest_bytes) = match value.get("manifests").and_then(|m| m.as_array()) {
            Some(entries) => {
                let found = entries.iter().filter_map(|e| e.get("digest").and_then(|d| d.as_str())).find_map(|d| {
                    let bytes = self.has_blob(d).then(|| self.read_blob(d, 4 << 20).ok()).flatten()?;
                    Some((d.to_owned(), bytes))
                });
                let Some((d, bytes)) = found else { return Ok(None) };
                (Some(digest.to_owned()), d, bytes)
            }
            None => (None, digest.to_owned(), top),
        };
        let Ok(manifest) = ImageManifest::from_reader(manifest_bytes.as_slice()) else { return Ok(None) };
        let config_digest = manifest.config().digest().to_string();
        let config = match self.read_blob(&config_digest, 16 << 20) {
            Ok(b) => b,
            Err(Error::MissingBlob { .. } | Error::Damaged { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(config) = ImageConfiguration::from_reader(config.as_slice()) else { return Ok(None) };
        let manifest_value: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap_or_default();
        let record = ImageRecord {
            name: pinned.to_owned(),
            resolved: pinned.to_owned(),
            index_digest,
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: media(&manifest_value)
                .unwrap_or_else(|| crate::image::registry::OCI_MANIFEST.to_owned()),
            config_digest,
            layers: manifest
                .layers()
                .iter()
                .map(|l| LayerRecord {
                    digest: l.digest().to_string(),
                    size: l.size(),
                    media_type: l.media_type().to_string(),
                })
                .collect(),
            platform: format!(
                "{}/{}{}",
                config.os(),
                config.architecture(),
                config.variant().as_deref().map(|v| format!("/{v}")).unwrap_or_default()
            ),
            pulled_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            previous_manifest_digest: None,
        };
        let record = self.write_record(record)?;
        journal::note(Repair::new(
            format!("images/refs/{}.json", hex::encode(Sha256::digest(pinned.as_bytes()))),
            format!("no image record for {pinned}"),
            format!("rebuilt from the stored manifest {manifest_digest}"),
        ));
        Ok(Some(record))
    }

    /// Checks the whole store, as the agent does at start: every image record parses, the manifests, indexes and
    /// configs they name hash to their digests, every layer has its size (and its digest, up to
    /// [`HASH_ON_CHECK`] bytes), and every partial download has a readable description; a complete partial is
    /// verified and committed. What fails is removed (the next pull fetches it again) and noted in `os::journal`.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let before = journal::noted();
        let records = self.records()?;
        let mut referenced = HashSet::new();
        for r in &records {
            report.records += 1;
            let mut small = vec![(r.manifest_digest.clone(), 4u64 << 20), (r.config_digest.clone(), 16 << 20)];
            small.extend(r.index_digest.clone().map(|d| (d, 4 << 20)));
            for (d, limit) in small {
                referenced.insert(d.clone());
                if !self.has_blob(&d) {
                    continue;
                }
                report.blobs += 1;
                if let Ok(bytes) = self.read_blob(&d, limit) {
                    report.hashed_bytes += bytes.len() as u64;
                }
            }
            for l in &r.layers {
                referenced.insert(l.digest.clone());
                if !self.has_blob(&l.digest) {
                    continue;
                }
                report.blobs += 1;
                if self.has_verified_blob(&l.digest, l.size) && l.size <= HASH_ON_CHECK {
                    report.hashed_bytes += l.size;
                }
            }
        }
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_err() {
                let _ = fs::remove_file(entry.path());
                journal::note(Repair::new(format!("images/blobs/sha256/{name}"), "not a blob name", "removed"));
                continue;
            }
            if referenced.contains(&digest) {
                continue;
            }
            // Not named by any record (GC removes it eventually): hash it when that is cheap.
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if len <= HASH_ON_CHECK {
                report.blobs += 1;
                report.hashed_bytes += len;
                if hash_file(&entry.path()).is_ok_and(|a| a != digest) {
                    self.drop_damaged(&digest, "content does not hash to its name".into());
                }
            }
        }
        report.partials = self.check_partials()?;
        report.repairs = journal::noted().saturating_sub(before);
        Ok(report)
    }

    /// Checks `ingest/`: a description that does not parse, or a partial longer than it says, is removed; a
    /// partial that holds every byte is verified and committed (never asked for again). Returns the partials kept.
    fn check_partials(&self) -> Result<usize> {
        let ingest = self.root.join("ingest");
        let mut kept = 0;
        for entry in fs::read_dir(&ingest).map_err(io_err(&ingest))? {
            let path = entry.map_err(io_err(&ingest))?.path();
            if path.extension().is_none_or(|x| x != "partial") {
                continue;
            }
            let Some(hex) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            let digest = format!("sha256:{hex}");
            let subject = format!("images/ingest/{hex}.partial");
            let meta_path = path.with_extension("json");
            let meta: Option<IngestMeta> = fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|m: &IngestMeta| m.digest == digest);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let drop_it = |subject: &str, problem: String| {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&meta_path);
                journal::note(
                    Repair::new(subject, problem, "removed; downloaded again from the start")
                        .lost(format!("{len} bytes received earlier")),
                );
            };
            if digest_hex(&digest).is_err() {
                drop_it(&subject, "not a blob name".into());
                continue;
            }
            if self.has_blob(&digest) {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&meta_path);
                continue;
            }
            let Some(meta) = meta else {
                drop_it(
                    &format!("images/ingest/{hex}.json"),
                    "the description of a partial download is missing or unreadable".into(),
                );
                continue;
            };
            if len > meta.size {
                drop_it(&subject, format!("{len} bytes, more than the blob's {}", meta.size));
                continue;
            }
            if len == meta.size {
                match hash_file(&path) {
                    Ok(actual) if actual == digest => {
                        let blob = self.blob_path(&digest)?;
                        File::open(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
                        fs::rename(&path, &blob).map_err(io_err(&blob))?;
                        fsutil::sync_dir(blob.parent().unwrap_or(Path::new("."))).map_err(io_err(&blob))?;
                        let _ = fs::remove_file(&meta_path);
                        continue;
                    }
                    Ok(actual) => {
                        drop_it(&subject, format!("complete but hashes to {actual}"));
                        continue;
                    }
                    Err(_) => {}
                }
            }
            kept += 1;
        }
        Ok(kept)
    }

    /// Free bytes on the store's file system for an unprivileged writer.
    pub fn free_bytes(&self) -> Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| Error::Io { path: self.root.clone(), source: io::Error::from(e) })?;
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    /// Removes blobs that no kept image references. `keep` names the records in use (`None`: every record);
    /// for each, its current and previous manifest (for rollback) stay with their config and layers. Records not
    /// in use are removed, and so are partial downloads of complete blobs and partials untouched for
    /// [`STALE_PARTIAL`] (never one a pull is writing).
    pub fn gc(&self, keep: Option<&[String]>) -> Result<GcReport> {
        let records = self.records()?;
        let mut wanted: HashSet<String> = HashSet::new();
        let mut report = GcReport::default();
        for r in &records {
            if keep.is_some_and(|k| !k.contains(&r.name)) {
                self.remove_record(&r.name)?;
                report.removed_records += 1;
                continue;
            }
            if let Some(i) = &r.index_digest {
                wanted.insert(i.clone());
            }
            for m in std::iter::once(&r.manifest_digest).chain(r.previous_manifest_digest.as_ref()) {
                wanted.insert(m.clone());
                // Read the manifest itself rather than trusting the record: it also covers the previous image.
                if let Ok(bytes) = self.read_blob(m, 4 << 20) {
                    if let Ok(man) = ImageManifest::from_reader(bytes.as_slice()) {
                        wanted.insert(man.config().digest().to_string());
                        wanted.extend(man.layers().iter().map(|l| l.digest().to_string()));
                    }
                }
            }
        }
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if wanted.contains(&format!("sha256:{name}")) {
                report.kept_blobs += 1;
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
            report.removed_blobs += 1;
            report.removed_bytes += len;
        }
        let ingest = self.root.join("ingest");
        for entry in fs::read_dir(&ingest).map_err(io_err(&ingest))? {
            let path = entry.map_err(io_err(&ingest))?.path();
            if path.extension().is_none_or(|x| x != "partial") {
                continue;
            }
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let complete = self.has_blob(&format!("sha256:{stem}"));
            let stale = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_PARTIAL);
            if !(complete || stale) {
                continue; // kept for the pull that will resume it
            }
            // A partial a pull is writing right now is locked: leave it.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            fs::remove_file(&path).map_err(io_err(&path))?;
            let _ = fs::remove_file(path.with_extension("json"));
            report.removed_partials += 1;
        }
        fsutil::sync_dir(&dir).map_err(io_err(&dir))?;
        Ok(report)
    }
}

/// Blobs up to this size are hashed whenever their presence is checked; larger ones (layers) get a size check
/// there and are hashed while they are read for unpacking.
pub const HASH_ON_CHECK: u64 = 16 << 20;

/// What [`ImageStore::check`] looked at and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub records: usize,
    /// Blobs checked (size, and digest when small).
    pub blobs: usize,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Partial downloads kept for resuming.
    pub partials: usize,
    /// Repairs the check noted.
    pub repairs: usize,
}

/// The `sha256:<hex>` digest of a file's content, read in 1 MiB steps.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A layer blob being read for unpacking, hashed as it goes. [`VerifiedBlob::finish`] reads what the unpacker
/// left (tar padding) and compares the digest; a damaged blob is removed then.
pub struct VerifiedBlob {
    file: File,
    hasher: Sha256,
    digest: String,
    store: ImageStore,
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl VerifiedBlob {
    /// Reads the rest and checks the digest: `Err(Error::Damaged)` (the blob removed) when it does not match.
    pub fn finish(mut self) -> Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(Error::Io { path: self.store.blob_path(&self.digest)?, source: e }),
            }
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if actual != self.digest {
            return Err(self.store.drop_damaged(&self.digest, format!("content hashes to {actual}")));
        }
        Ok(())
    }
}

/// Partial downloads untouched for this long are removed by GC even if their blob is missing.
pub const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A blob being written to `ingest/`. Bytes go through the hasher as they are written; `commit` checks size and
/// digest, fsyncs, and renames into `blobs/`. Dropping it without commit keeps the partial for a later resume.
pub struct Ingest {
    /// Held until the ingest is dropped: one writer per blob, across pulls and processes.
    _lock: Flock<File>,
    path: PathBuf,
    meta_path: PathBuf,
    blob_path: PathBuf,
    digest: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    out: BufWriter<File>,
    /// Start of the range not yet handed to the kernel for writeback.
    writeback_from: u64,
}

/// Bytes after which an ingest asks the kernel to start writing back, so the fsync before commit finds little left
/// to do instead of stalling on a whole layer.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Ingest {
    fn start_writeback(&mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))?;
        let (from, len) = (self.writeback_from, self.written - self.writeback_from);
        // SAFETY: sync_file_range only reads its integer arguments; the fd is owned by `self.out` and open.
        // SYNC_FILE_RANGE_WRITE starts writeback without waiting; errors only cost the optimisation.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(self.out.get_ref()),
                from as _,
                len as _,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.writeback_from = self.written;
        Ok(())
    }

    /// Bytes already in the partial file.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Throws away what was received (the registry ignored `Range`, or the bytes were corrupt).
    pub fn restart(&mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))?;
        self.out.get_ref().set_len(0).map_err(io_err(&self.path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.writeback_from = 0;
        Ok(())
    }

    /// Appends received bytes. More bytes than the declared size is an error (nothing is written then).
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let after = self.written + chunk.len() as u64;
        if after > self.size {
            return Err(Error::SizeMismatch { digest: self.digest.clone(), expected: self.size, actual: after });
        }
        self.out.write_all(chunk).map_err(io_err(&self.path))?;
        self.hasher.update(chunk);
        self.written = after;
        if self.written - self.writeback_from >= WRITEBACK_STEP {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Flushes buffered bytes to the partial file (so a kill keeps them).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))
    }

    /// Verifies size and digest, then fsync + rename into `blobs/` + directory fsync. On a digest mismatch the
    /// partial is deleted (it can never become right) and an error returned; a short blob keeps its partial.
    pub fn commit(mut self) -> Result<()> {
        self.flush()?;
        if self.written != self.size {
            return Err(Error::SizeMismatch { digest: self.digest.clone(), expected: self.size, actual: self.written });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if actual != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(Error::DigestMismatch { digest: self.digest.clone(), actual });
        }
        self.out.get_ref().sync_all().map_err(io_err(&self.path))?;
        fs::rename(&self.path, &self.blob_path).map_err(io_err(&self.blob_path))?;
        let dir = self.blob_path.parent().unwrap_or(Path::new("."));
        fsutil::sync_dir(dir).map_err(io_err(dir))?;
        let _ = fs::remove_file(&self.meta_path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn ingest_resumes_from_kept_partial_and_commits_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d = digest_of(&data);
        let mut ing = store.ingest(&d, data.len() as u64, "test").unwrap().unwrap();
        ing.write(&data[..40_000]).unwrap();
        ing.flush().unwrap();
        drop(ing); // a cut connection or a killed agent
        assert_eq!(store.partial_len(&d), 40_000);
        let mut ing = store.ingest(&d, data.len() as u64, "test").unwrap().unwrap();
        assert_eq!(ing.written(), 40_000, "the kept bytes are resumed from");
        ing.write(&data[40_000..]).unwrap();
        ing.commit().unwrap();
        assert!(store.has_blob(&d));
        assert_eq!(store.partial_len(&d), 0);
        let mut back = Vec::new();
        store.open_blob(&d).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn corrupt_bytes_are_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let data = b"hello layer".to_vec();
        let d = digest_of(&data);
        let mut ing = store.ingest(&d, data.len() as u64, "test").unwrap().unwrap();
        let mut bad = data.clone();
        bad[3] ^= 0x20;
        ing.write(&bad).unwrap();
        let err = ing.commit().unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&d));
        assert_eq!(store.partial_len(&d), 0, "a corrupt partial is discarded");
        let mut ing = store.ingest(&d, data.len() as u64, "test").unwrap().unwrap();
        assert!(matches!(ing.write(&[0u8; 12]), Err(Error::SizeMismatch { .. })), "more than declared");
        assert!(matches!(store.put_blob(&d, b"other"), Err(Error::DigestMismatch { .. })));
        assert!(matches!(store.blob_path("sha256:../../etc"), Err(Error::BadDigest(_))));
    }

    #[test]
    fn a_second_writer_waits_and_finds_the_blob_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let data = vec![7u8; 50_000];
        let d = digest_of(&data);
        let mut first = store.ingest(&d, data.len() as u64, "a").unwrap().unwrap();
        first.write(&data[..10]).unwrap();
        let (s2, d2) = (store.clone(), d.clone());
        let second = std::thread::spawn(move || s2.ingest(&d2, 50_000, "b").unwrap().is_none());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!second.is_finished(), "the second writer waits for the lock");
        first.write(&data[10..]).unwrap();
        first.commit().unwrap();
        assert!(second.join().unwrap(), "the blob was committed meanwhile");
        assert_eq!(store.partial_len(&d), 0);
        assert!(store.has_blob(&d));
    }

    #[test]
    fn damaged_blobs_are_found_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let small = b"{\"config\": true}".to_vec();
        let d = digest_of(&small);
        store.put_blob(&d, &small).unwrap();
        let path = store.blob_path(&d).unwrap();
        let mut flipped = small.clone();
        flipped[3] ^= 0x01;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(store.read_blob(&d, 1024), Err(Error::Damaged { .. })));
        assert!(!path.exists(), "a damaged blob is removed");
        store.put_blob(&d, &small).unwrap();
        fs::write(&path, &small[..5]).unwrap();
        assert!(!store.has_verified_blob(&d, small.len() as u64), "a truncated blob is not present");
        assert!(!path.exists());
        // put_blob replaces a damaged copy instead of keeping it.
        store.put_blob(&d, &small).unwrap();
        fs::write(&path, &flipped).unwrap();
        store.put_blob(&d, &small).unwrap();
        assert_eq!(fs::read(&path).unwrap(), small);
        let (repairs, _) = journal::drain();
        assert_eq!(repairs.len(), 3, "{repairs:?}");
        assert!(repairs.iter().all(|r| r.subject == ImageStore::blob_subject(&d)));
    }

    #[test]
    fn check_commits_a_complete_partial_and_drops_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let data = vec![5u8; 70_000];
        let d = digest_of(&data);
        let mut ing = store.ingest(&d, data.len() as u64, "t").unwrap().unwrap();
        ing.write(&data).unwrap();
        ing.flush().unwrap();
        drop(ing); // killed after the last byte, before the commit
        let other = digest_of(b"other");
        let mut ing = store.ingest(&other, 5, "t").unwrap().unwrap();
        ing.write(b"oth").unwrap();
        ing.flush().unwrap();
        drop(ing);
        fs::write(store.partial_path(&other).unwrap().with_extension("json"), b"{garbage").unwrap();
        let report = store.check().unwrap();
        assert!(store.has_blob(&d), "the complete partial is committed");
        assert!(store.verify_full(&d));
        assert_eq!(store.partial_len(&other), 0, "a partial without a readable description is removed");
        assert_eq!((report.partials, report.repairs), (0, 1), "{report:?}");
    }

    #[test]
    fn records_keep_previous_manifest_for_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let rec = |m: &str| ImageRecord {
            name: "docker.io/a/b:{auto}".into(),
            resolved: format!("docker.io/a/b:r36.4.0@{m}"),
            index_digest: None,
            manifest_digest: m.into(),
            manifest_media_type: crate::image::registry::OCI_MANIFEST.into(),
            config_digest: digest_of(b"c"),
            layers: vec![],
            platform: "linux/arm64".into(),
            pulled_at: "2026-01-01T00:00:00Z".into(),
            previous_manifest_digest: None,
        };
        let (m1, m2) = (digest_of(b"1"), digest_of(b"2"));
        store.write_record(rec(&m1)).unwrap();
        assert_eq!(store.write_record(rec(&m1)).unwrap().previous_manifest_digest, None);
        let r = store.write_record(rec(&m2)).unwrap();
        assert_eq!(r.previous_manifest_digest.as_deref(), Some(m1.as_str()));
        assert_eq!(store.record("docker.io/a/b:{auto}").unwrap().unwrap(), r);
        assert_eq!(store.records().unwrap().len(), 1);
        assert!(matches!(store.image("nope"), Err(Error::NoImage(_))));
    }
}
