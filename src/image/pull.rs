//! Pull orchestration: expand templates, resolve `{auto}` against the tag list, pick the platform's manifest,
//! check free disk, then fetch config and layers concurrently into the content store with per-blob retries,
//! resume and verification, and report progress.
//!
//! Owns the sequence and the retry policy; HTTP lives in `crate::image::registry`, bytes on disk in
//! `crate::image::store`, the tag choice in `crate::image::resolve`. It does not unpack layers (the runtime does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::base::{BadPlatform, Platform};
use crate::config::RegistryConfig;
use crate::image::reference::{self, Reference, TemplateVars};
use crate::image::registry::{self, Client, FetchedManifest};
use crate::image::resolve::{self, Created, Decision};
use crate::image::store::{self as image_store, ImageRecord, ImageStore, LayerRecord};

/// OCI image config media type.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Layer media types the store accepts (the runtime can unpack these).
pub(crate) const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Image configs larger than this are refused before they are downloaded (they are read into memory).
pub(crate) const CONFIG_LIMIT: u64 = 16 << 20;
/// Manifests naming more layers than this are refused (Docker's own limit is 127).
pub(crate) const MAX_LAYERS: usize = 500;

/// Pull errors; every one names the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] reference::Error),
    #[error("{image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: registry::Error,
    },
    #[error("{image}: {source}")]
    Store {
        image: String,
        #[source]
        source: image_store::Error,
    },
    #[error("{image}: {{auto}} needs the host's L4T release, and this host has none: run on a Jetson, set L4T_VERSION, or name the tag")]
    NoHostRelease { image: String },
    #[error("{image}: no tag fits L4T {host}: {summary}")]
    NoCompatibleTag { image: String, host: String, summary: String, decision: Box<Decision> },
    #[error("{image}: manifest {digest} is malformed: {detail}")]
    BadManifest { image: String, digest: String, detail: String },
    #[error("{image}: unsupported media type `{media_type}` for {what}; jetship takes OCI and Docker schema 2 images with tar, tar+gzip or tar+zstd layers")]
    WrongMediaType { image: String, what: String, media_type: String },
    #[error("{image}: no manifest for platform {wanted} in the index (it has: {available}); pick one with --platform or registry.platform")]
    NoPlatform { image: String, wanted: String, available: String },
    #[error("{image}: not enough disk space in {dir}: needs {needed} bytes ({download} to download + {unpack} estimated to unpack + {reserve} reserve) but only {free} bytes are free; free space, run GC, or lower registry.disk_reserve_bytes")]
    NoSpace { image: String, dir: String, needed: u64, free: u64, download: u64, unpack: u64, reserve: u64 },
    #[error("{image}: blob {digest} failed after {attempts} attempts: {last}")]
    Blob { image: String, digest: String, attempts: u32, last: String },
    #[error(transparent)]
    Platform(#[from] BadPlatform),
    #[error("{image}: pull cancelled")]
    Cancelled { image: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Settings of one pull, from `[registry]` plus per-pull overrides.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// Blobs fetched at once.
    pub concurrency: usize,
    /// Consecutive failed attempts per blob before the pull fails (progress resets the count).
    pub retries: u32,
    pub backoff_cap: Duration,
    pub disk_reserve: u64,
    pub unpack_factor: f64,
}

impl PullOptions {
    /// Options from the config; `platform` overrides `registry.platform`, which overrides the host's.
    pub fn from_config(cfg: &RegistryConfig, platform: Option<&str>) -> Result<Self> {
        let platform = match platform.or(cfg.platform.as_deref()) {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        Ok(Self {
            platform,
            concurrency: cfg.concurrency.max(1),
            retries: cfg.retries,
            backoff_cap: Duration::from_secs_f64(cfg.retry_backoff_cap_s),
            disk_reserve: cfg.disk_reserve_bytes,
            unpack_factor: cfg.unpack_estimate_factor,
        })
    }
}

/// What a pull reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// The manifest is known: how much there is and how much the store already has.
    Planned { image: String, blobs: usize, total_bytes: u64, present_bytes: u64 },
    /// A blob download (re)starts at `offset` (bytes kept from earlier attempts).
    BlobStarted { digest: String, size: u64, offset: u64 },
    /// Bytes of a blob arrived.
    BlobBytes { digest: String, bytes: u64 },
    /// An attempt failed; the blob will be retried.
    BlobRetry { digest: String, attempt: u32, error: String },
    /// A blob is verified and stored (`cached`: it was already there).
    BlobDone { digest: String, cached: bool },
}

/// Receives progress events. Called from the pull's tasks: keep it quick.
pub(crate) type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A resolved reference: what the input named, what it resolved to, and why.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The record name: normalised input, templates expanded, `{auto}` kept.
    pub name: String,
    /// The reference with the chosen tag, pinned to the digest the tag pointed at.
    pub reference: Reference,
    /// The `{auto}` decision, if the tag had `{auto}`.
    pub decision: Option<Decision>,
    /// The manifest or index the reference points at.
    pub manifest: FetchedManifest,
}

/// Expands templates, resolves `{auto}` against the repository's tags for the host, and fetches the top manifest
/// to pin the result by digest. A digest in the input always wins: no tag list is read.
pub async fn resolve(client: &Client, input: &str, vars: &TemplateVars) -> Result<Resolution> {
    let expanded = reference::expand(input, vars)?;
    let parsed = Reference::parse(&expanded)?;
    let name = parsed.to_string();
    let reg = |source| Error::Registry { image: name.clone(), source };
    let (reference, decision) = if parsed.has_auto() && parsed.digest.is_none() {
        let host = vars.l4t.ok_or_else(|| Error::NoHostRelease { image: name.clone() })?;
        let tags = client.list_tags(&parsed).await.map_err(reg)?;
        let pattern = parsed.tag.clone().unwrap_or_default();
        let mut decision = resolve::resolve(host, &pattern, &tags);
        if !decision.tie_queries().is_empty() {
            let created = creation_times(client, &parsed, decision.tie_queries()).await;
            decision = resolve::resolve_with_created(host, &pattern, &tags, &created);
        }
        match decision.chosen.clone() {
            Some(tag) => (parsed.with_tag(&tag), Some(decision)),
            None => {
                let summary = if decision.candidates.is_empty() {
                    format!("none of the {} tags matches `{pattern}`", tags.len())
                } else {
                    let reasons: Vec<String> = decision.rejected().take(5).map(|(t, r)| format!("{t}: {r}")).collect();
                    reasons.join("; ")
                };
                return Err(Error::NoCompatibleTag {
                    image: name,
                    host: host.to_string(),
                    summary,
                    decision: Box::new(decision),
                });
            }
        }
    } else {
        (parsed, None)
    };
    let manifest = client.manifest(&reference, reference.manifest_ref()).await.map_err(reg)?;
    let reference = reference.with_digest(&manifest.digest);
    Ok(Resolution { name, reference, decision, manifest })
}

/// Largest image config read for its creation time.
const CREATED_CONFIG_LIMIT: u64 = 1 << 20;

/// The creation time of each tag's image (its config's `created` field), asked of the registry for the few
/// candidates the tag rules leave tied. A failure only leaves that tag's time unknown, with the reason.
async fn creation_times(client: &Client, image: &Reference, tags: &[String]) -> BTreeMap<String, Created> {
    let asks = tags.iter().map(|tag| async move {
        // The config is a blob (no per-request time limit): the whole look-up gets one.
        let limit = client.request_timeout();
        let created = match tokio::time::timeout(limit, image_created(client, &image.with_tag(tag))).await {
            Ok(Ok(Some(t))) => Created::At(t),
            Ok(Ok(None)) => Created::Unknown("its image config has no `created` time".into()),
            Ok(Err(why)) => Created::Unknown(why),
            Err(_) => Created::Unknown(format!(
                "the registry took longer than {} s (registry.limits.request_timeout_s) to answer",
                limit.as_secs()
            )),
        };
        (tag.clone(), created)
    });
    futures_util::future::join_all(asks).await.into_iter().collect()
}

/// The `created` time of the image `image` names; for an index, of this machine's platform, else of the first
/// platform listed (one build made them all).
async fn image_created(client: &Client, image: &Reference) -> std::result::Result<Option<DateTime<Utc>>, String> {
    let top = client.manifest(image, image.manifest_ref()).await.map_err(|e| e.to_string())?;
    let manifest = match top.media_type.as_str() {
        registry::OCI_INDEX | registry::DOCKER_MANIFEST_LIST => {
            let index = ImageIndex::from_reader(top.bytes.as_ref()).map_err(|e| format!("not an image index: {e}"))?;
            let host = Platform::host();
            let real: Vec<_> = index
                .manifests()
                .iter()
                .filter_map(|m| Some((m, m.platform().as_ref()?)))
                .filter(|(_, p)| p.os().to_string() != "unknown")
                .collect();
            let fits = |(_, p): &&(_, &oci_spec::image::Platform)| {
                host.fit(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref()).is_some()
            };
            let (entry, _) = real
                .iter()
                .find(fits)
                .or(real.first())
                .ok_or_else(|| "its index lists no platform image".to_owned())?;
            client.manifest(image, entry.digest().as_ref()).await.map_err(|e| e.to_string())?
        }
        _ => top,
    };
    let parsed =
        ImageManifest::from_reader(manifest.bytes.as_ref()).map_err(|e| format!("not an image manifest: {e}"))?;
    let config = parsed.config();
    if config.size() > CREATED_CONFIG_LIMIT {
        return Err(format!(
            "its config is {} bytes, more than the {CREATED_CONFIG_LIMIT} read for a creation time",
            config.size()
        ));
    }
    let digest = config.digest().to_string();
    image_store::digest_hex(&digest).map_err(|e| e.to_string())?;
    let mut body = client.blob(image, &digest, 0).await.map_err(|e| e.to_string())?.into_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if bytes.len() as u64 > CREATED_CONFIG_LIMIT {
            return Err(format!("its config {digest} is larger than {CREATED_CONFIG_LIMIT} bytes"));
        }
    }
    if registry::sha256_digest(&bytes) != digest {
        return Err(format!("its config does not match its digest {digest}"));
    }
    let cfg = ImageConfiguration::from_reader(bytes.as_slice()).map_err(|e| format!("not an image config: {e}"))?;
    cfg.created()
        .as_deref()
        .map(|c| {
            DateTime::parse_from_rfc3339(c)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("its config's `created` `{c}` is not an RFC 3339 time: {e}"))
        })
        .transpose()
}

/// The outcome of a pull.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub record: ImageRecord,
    /// Layer and config bytes of the image.
    pub total_bytes: u64,
    /// Bytes received over the network in this pull.
    pub downloaded_bytes: u64,
    /// Bytes already in the store (whole blobs or kept partials).
    pub reused_bytes: u64,
    pub elapsed: Duration,
    #[serde(skip)]
    pub decision: Option<Decision>,
}

struct BlobJob {
    digest: String,
    size: u64,
}

struct Ctx<'a> {
    client: &'a Client,
    store: &'a ImageStore,
    reference: &'a Reference,
    opts: &'a PullOptions,
    progress: Option<ProgressSink>,
    image: String,
}

impl Ctx<'_> {
    fn emit(&self, p: Progress) {
        if let Some(s) = &self.progress {
            s(&p);
        }
    }
    fn store_err(&self, source: image_store::Error) -> Error {
        Error::Store { image: self.image.clone(), source }
    }
}

/// Pulls `input` into `store`: resolve, pick the platform, check disk, fetch every blob (verified), and record
/// the image under its name. Partial downloads survive errors, cancellation and restarts and are resumed.
pub async fn pull(
    client: &Client,
    store: &ImageStore,
    input: &str,
    vars: &TemplateVars,
    opts: &PullOptions,
    progress: Option<ProgressSink>,
    cancel: CancellationToken,
) -> Result<PullReport> {
    let started = Instant::now();
    let image_for_cancel = input.to_owned();
    tokio::select! {
        r = pull_inner(client, store, input, vars, opts, progress, started) => r,
        _ = cancel.cancelled() => Err(Error::Cancelled { image: image_for_cancel }),
    }
}

async fn pull_inner(
    client: &Client,
    store: &ImageStore,
    input: &str,
    vars: &TemplateVars,
    opts: &PullOptions,
    progress: Option<ProgressSink>,
    started: Instant,
) -> Result<PullReport> {
    let res = resolve(client, input, vars).await?;
    let image = res.reference.to_string();
    let ctx = Ctx { client, store, reference: &res.reference, opts, progress, image: image.clone() };
    let (index_digest, manifest) = platform_manifest(client, &res.reference, &res.manifest, &opts.platform).await?;
    let parsed = validate_manifest(&image, &manifest)?;
    if let Some(idx) = &index_digest {
        store.put_blob(idx, &res.manifest.bytes).map_err(|e| ctx.store_err(e))?;
    }

    let config = parsed.config();
    let mut jobs = vec![BlobJob { digest: config.digest().to_string(), size: config.size() }];
    jobs.extend(parsed.layers().iter().map(|l| BlobJob { digest: l.digest().to_string(), size: l.size() }));
    // A manifest may list the same layer twice (empty layers): fetch each blob once.
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert(j.digest.clone()));
    let total_bytes: u64 = jobs.iter().map(|j| j.size).sum();
    let present_bytes: u64 =
        jobs.iter()
            .map(|j| {
                if store.has_verified_blob(&j.digest, j.size) {
                    j.size
                } else {
                    store.partial_len(&j.digest).min(j.size)
                }
            })
            .sum();
    preflight(&ctx, &parsed, total_bytes - present_bytes)?;
    ctx.emit(Progress::Planned { image: image.clone(), blobs: jobs.len(), total_bytes, present_bytes });

    let downloaded: u64 = futures_util::stream::iter(jobs.iter().map(|j| fetch_blob(&ctx, j)))
        .buffer_unordered(opts.concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;

    // The config must be an image config the runtime can read.
    let config_bytes = store.read_blob(config.digest().as_ref(), CONFIG_LIMIT).map_err(|e| ctx.store_err(e))?;
    let cfg = ImageConfiguration::from_reader(config_bytes.as_slice()).map_err(|e| Error::BadManifest {
        image: image.clone(),
        digest: manifest.digest.clone(),
        detail: format!("config {} is not an image config: {e}", config.digest()),
    })?;
    // Store the manifest last: its presence means every blob it names is here.
    store.put_blob(&manifest.digest, &manifest.bytes).map_err(|e| ctx.store_err(e))?;
    let platform = format!(
        "{}/{}{}",
        cfg.os(),
        cfg.architecture(),
        cfg.variant().as_deref().map(|v| format!("/{v}")).unwrap_or_default()
    );
    let record = ImageRecord {
        name: res.name.clone(),
        resolved: image.clone(),
        index_digest,
        manifest_digest: manifest.digest.clone(),
        manifest_media_type: manifest.media_type.clone(),
        config_digest: config.digest().to_string(),
        layers: parsed
            .layers()
            .iter()
            .map(|l| LayerRecord {
                digest: l.digest().to_string(),
                size: l.size(),
                media_type: l.media_type().to_string(),
            })
            .collect(),
        platform,
        pulled_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        previous_manifest_digest: None,
    };
    let record = store.write_record(record).map_err(|e| ctx.store_err(e))?;
    tracing::info!(image = %image, digest = %record.manifest_digest, downloaded, "image pulled");
    Ok(PullReport {
        record,
        total_bytes,
        downloaded_bytes: downloaded,
        reused_bytes: present_bytes,
        elapsed: started.elapsed(),
        decision: res.decision,
    })
}

/// For an index or manifest list, the platform's manifest (fetched by digest) and the index digest; for a
/// manifest, itself.
pub(crate) async fn platform_manifest(
    client: &Client,
    reference: &Reference,
    top: &FetchedManifest,
    wanted: &Platform,
) -> Result<(Option<String>, FetchedManifest)> {
    let image = &reference.to_string();
    match top.media_type.as_str() {
        registry::OCI_MANIFEST | registry::DOCKER_MANIFEST => return Ok((None, top.clone())),
        registry::OCI_INDEX | registry::DOCKER_MANIFEST_LIST => {}
        other => {
            return Err(Error::WrongMediaType {
                image: image.clone(),
                what: "the manifest".into(),
                media_type: other.to_owned(),
            })
        }
    }
    let index = ImageIndex::from_reader(top.bytes.as_ref()).map_err(|e| Error::BadManifest {
        image: image.clone(),
        digest: top.digest.clone(),
        detail: format!("not an image index: {e}"),
    })?;
    let mut best: Option<(u8, &oci_spec::image::Descriptor)> = None;
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if os == "unknown" {
            continue; // attestation manifests
        }
        available.push(format!("{os}/{arch}{}", p.variant().as_deref().map(|v| format!("/{v}")).unwrap_or_default()));
        if let Some(score) = wanted.fit(&os, &arch, p.variant().as_deref()) {
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, m));
            }
        }
    }
    let Some((_, desc)) = best else {
        return Err(Error::NoPlatform {
            image: image.clone(),
            wanted: wanted.to_string(),
            available: if available.is_empty() { "no platforms".into() } else { available.join(", ") },
        });
    };
    let digest = desc.digest().to_string();
    image_store::digest_hex(&digest).map_err(|e| Error::BadManifest {
        image: image.clone(),
        digest: top.digest.clone(),
        detail: e.to_string(),
    })?;
    let child =
        client.manifest(reference, &digest).await.map_err(|source| Error::Registry { image: image.clone(), source })?;
    if matches!(child.media_type.as_str(), registry::OCI_INDEX | registry::DOCKER_MANIFEST_LIST) {
        return Err(Error::BadManifest {
            image: image.clone(),
            digest: child.digest,
            detail: "an index entry points at another index; nested indexes are not supported".into(),
        });
    }
    Ok((Some(top.digest.clone()), child))
}

/// Parses an image manifest and checks media types, digests and sizes of what it names.
pub(crate) fn validate_manifest(image: &str, m: &FetchedManifest) -> Result<ImageManifest> {
    let bad = |detail: String| Error::BadManifest { image: image.to_owned(), digest: m.digest.clone(), detail };
    if !matches!(m.media_type.as_str(), registry::OCI_MANIFEST | registry::DOCKER_MANIFEST) {
        return Err(Error::WrongMediaType {
            image: image.to_owned(),
            what: "the platform manifest".into(),
            media_type: m.media_type.clone(),
        });
    }
    let parsed =
        ImageManifest::from_reader(m.bytes.as_ref()).map_err(|e| bad(format!("not an image manifest: {e}")))?;
    if parsed.schema_version() != 2 {
        return Err(bad(format!("schemaVersion {} (expected 2)", parsed.schema_version())));
    }
    if let Some(body_type) = parsed.media_type() {
        if body_type.to_string() != m.media_type {
            return Err(bad(format!("its mediaType `{body_type}` contradicts the Content-Type `{}`", m.media_type)));
        }
    }
    let config = parsed.config();
    let config_type = config.media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(Error::WrongMediaType {
            image: image.to_owned(),
            what: "the config".into(),
            media_type: config_type,
        });
    }
    image_store::digest_hex(config.digest().as_ref()).map_err(|e| bad(e.to_string()))?;
    if config.size() > CONFIG_LIMIT {
        return Err(bad(format!(
            "its config {} declares {} bytes, over the {CONFIG_LIMIT}-byte limit for image configs",
            config.digest(),
            config.size()
        )));
    }
    if parsed.layers().is_empty() {
        return Err(bad("it lists no layers".into()));
    }
    if parsed.layers().len() > MAX_LAYERS {
        return Err(bad(format!(
            "it lists {} layers, more than the {MAX_LAYERS} jetship accepts",
            parsed.layers().len()
        )));
    }
    for (i, l) in parsed.layers().iter().enumerate() {
        let t = l.media_type().to_string();
        if !LAYER_TYPES.contains(&t.as_str()) {
            return Err(Error::WrongMediaType {
                image: image.to_owned(),
                what: format!("layer {i} ({})", l.digest()),
                media_type: t,
            });
        }
        image_store::digest_hex(l.digest().as_ref()).map_err(|e| bad(format!("layer {i}: {e}")))?;
    }
    Ok(parsed)
}

/// The disk needed for a pull, and the decision. Pure: `free` is passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskNeed {
    pub download: u64,
    pub unpack: u64,
    pub reserve: u64,
}

impl DiskNeed {
    /// Total bytes that must be free.
    pub fn total(&self) -> u64 {
        self.download.saturating_add(self.unpack).saturating_add(self.reserve)
    }

    /// Whether a pull with this need may start with `free` bytes free. Nothing to download always fits: a
    /// re-pull must not fail on a full disk.
    pub fn fits(&self, free: u64) -> bool {
        self.download == 0 || self.total() <= free
    }
}

fn preflight(ctx: &Ctx<'_>, manifest: &ImageManifest, download: u64) -> Result<()> {
    let layers: u64 = manifest.layers().iter().map(|l| l.size()).sum();
    let need =
        DiskNeed { download, unpack: (layers as f64 * ctx.opts.unpack_factor) as u64, reserve: ctx.opts.disk_reserve };
    if need.download == 0 {
        return Ok(());
    }
    let free = ctx.store.free_bytes().map_err(|e| ctx.store_err(e))?;
    if !need.fits(free) {
        return Err(Error::NoSpace {
            image: ctx.image.clone(),
            dir: ctx.store.root().display().to_string(),
            needed: need.total(),
            free,
            download: need.download,
            unpack: need.unpack,
            reserve: need.reserve,
        });
    }
    Ok(())
}

/// Why one attempt at a blob failed.
enum AttemptError {
    /// Network trouble: keep the partial and resume.
    Transient(String),
    /// The bytes are wrong: the partial was discarded; fetch again from 0.
    Corrupt(String),
    /// Retrying cannot help.
    Fatal(Error),
}

async fn fetch_blob(ctx: &Ctx<'_>, job: &BlobJob) -> Result<u64> {
    let (store, digest, size) = (ctx.store.clone(), job.digest.clone(), job.size);
    let present = tokio::task::spawn_blocking(move || store.has_verified_blob(&digest, size)).await.unwrap_or(false);
    if present {
        ctx.emit(Progress::BlobDone { digest: job.digest.clone(), cached: true });
        return Ok(0);
    }
    let mut failures = 0u32;
    let mut downloaded = 0u64;
    loop {
        let before = downloaded;
        let outcome = attempt_blob(ctx, job, &mut downloaded).await;
        let err = match outcome {
            Ok(()) => {
                ctx.emit(Progress::BlobDone { digest: job.digest.clone(), cached: false });
                return Ok(downloaded);
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Transient(e)) => {
                // An attempt that moved the download forward does not count against the limit.
                if downloaded > before {
                    failures = 0;
                }
                e
            }
            Err(AttemptError::Corrupt(e)) => e,
        };
        failures += 1;
        if failures > ctx.opts.retries {
            return Err(Error::Blob {
                image: ctx.image.clone(),
                digest: job.digest.clone(),
                attempts: failures,
                last: err,
            });
        }
        tracing::warn!(image = %ctx.image, digest = %job.digest, attempt = failures, error = %err, "blob download failed, retrying");
        ctx.emit(Progress::BlobRetry { digest: job.digest.clone(), attempt: failures, error: err });
        tokio::time::sleep(registry::backoff(failures - 1, ctx.opts.backoff_cap)).await;
    }
}

async fn attempt_blob(ctx: &Ctx<'_>, job: &BlobJob, downloaded: &mut u64) -> std::result::Result<(), AttemptError> {
    let store = ctx.store.clone();
    let (digest, size, source) = (job.digest.clone(), job.size, ctx.reference.name());
    let fatal = |e: image_store::Error| AttemptError::Fatal(ctx.store_err(e));
    // Re-hashing a kept partial reads it whole: off the async threads.
    let ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, size, &source))
        .await
        .map_err(|e| AttemptError::Transient(e.to_string()))?
        .map_err(fatal)?;
    let Some(mut ingest) = ingest else {
        return Ok(()); // another pull committed it while this one waited
    };
    let offset = ingest.written();
    if offset == job.size {
        // An earlier attempt received every byte but was stopped before the commit: verify and commit it, never
        // ask the registry for an empty range (that is a 416).
        ctx.emit(Progress::BlobStarted { digest: job.digest.clone(), size: job.size, offset });
        return commit(ctx, ingest).await;
    }
    let resp = match ctx.client.blob(ctx.reference, &job.digest, offset).await {
        Ok(r) => r,
        Err(registry::Error::Status { status, .. }) if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
            // The registry has no bytes from `offset` on: what is kept cannot be the start of this blob.
            ingest.restart().map_err(fatal)?;
            return Err(AttemptError::Corrupt(format!(
                "the registry has no bytes from offset {offset} on (416); downloading the blob from the start"
            )));
        }
        Err(e) if e.is_transient() => return Err(AttemptError::Transient(e.to_string())),
        Err(source) => return Err(AttemptError::Fatal(Error::Registry { image: ctx.image.clone(), source })),
    };
    if resp.offset != offset {
        tracing::debug!(digest = %job.digest, offset, "registry ignored Range, downloading the whole blob");
        ingest.restart().map_err(fatal)?;
    }
    ctx.emit(Progress::BlobStarted { digest: job.digest.clone(), size: job.size, offset: ingest.written() });
    let mut stream = std::pin::pin!(resp.into_stream());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = ingest.flush();
                return Err(AttemptError::Transient(e.to_string()));
            }
        };
        match ingest.write(&chunk) {
            Ok(()) => {}
            Err(e @ image_store::Error::SizeMismatch { .. }) => {
                ingest.restart().map_err(fatal)?;
                return Err(AttemptError::Corrupt(e.to_string()));
            }
            Err(e) => return Err(fatal(e)),
        }
        *downloaded += chunk.len() as u64;
        ctx.emit(Progress::BlobBytes { digest: job.digest.clone(), bytes: chunk.len() as u64 });
    }
    ingest.flush().map_err(fatal)?;
    if ingest.written() < job.size {
        return Err(AttemptError::Transient(format!(
            "connection ended after {} of {} bytes",
            ingest.written(),
            job.size
        )));
    }
    commit(ctx, ingest).await
}

/// Verifies, fsyncs and renames a complete partial into the store, off the async threads.
async fn commit(ctx: &Ctx<'_>, ingest: image_store::Ingest) -> std::result::Result<(), AttemptError> {
    let fatal = |e: image_store::Error| AttemptError::Fatal(ctx.store_err(e));
    crate::os::crashpoint::hit("blob-downloaded");
    match tokio::task::spawn_blocking(move || ingest.commit()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ image_store::Error::DigestMismatch { .. })) => Err(AttemptError::Corrupt(e.to_string())),
        Ok(Err(e)) => Err(fatal(e)),
        Err(e) => Err(AttemptError::Transient(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_fit_like_docker() {
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(arm.fit("linux", "arm64", Some("v8")), Some(2));
        assert_eq!(arm.fit("linux", "arm64", None), Some(1));
        assert_eq!(arm.fit("linux", "amd64", None), None);
        assert_eq!(arm.fit("linux", "arm", Some("v7")), None);
        assert_eq!(arm.fit("windows", "arm64", None), None);
        let plain = Platform::parse("linux/arm64").unwrap();
        assert_eq!(plain.fit("linux", "arm64", Some("v8")), Some(1));
        assert_eq!(Platform::parse("linux/aarch64").unwrap().architecture, "arm64");
        assert_eq!(Platform::parse("linux/amd64").unwrap().to_string(), "linux/amd64");
        for bad in ["", "linux", "windows/amd64", "linux/arm64/v8/x", "linux//v8"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let h = Platform::host();
        assert_eq!(h.os, "linux");
    }

    #[test]
    fn disk_need_adds_download_unpack_and_reserve() {
        let n = DiskNeed { download: 10, unpack: 20, reserve: 5 };
        assert_eq!(n.total(), 35);
        assert!(n.fits(35) && !n.fits(34));
        let nothing = DiskNeed { download: 0, ..n };
        assert!(nothing.fits(0), "nothing to download never needs space");
        let big = DiskNeed { download: u64::MAX, unpack: 1, reserve: 1 };
        assert_eq!(big.total(), u64::MAX);
    }
}
