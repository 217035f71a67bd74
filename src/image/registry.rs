//! The registry client: OCI distribution API / Docker Registry v2 over HTTPS (reqwest + rustls), or plain HTTP for
//! loopback and configured insecure registries.
//!
//! Owns endpoint choice (Docker Hub endpoint, mirrors), authentication (anonymous and credentialed Bearer tokens
//! from the `WWW-Authenticate` challenge, cached per registry and scope; Basic auth; credentials from the config or
//! a Docker `config.json`), manifests (size-limited, digest-checked), tag lists (with `Link` pagination) and blobs
//! as byte streams starting at an offset (HTTP `Range`). It never touches the disk except to read credential
//! files; storing and verifying blobs is `crate::image::store`, retries of blobs are `crate::image::pull`.
//!
//! Every registry is untrusted (docs/security.md): each answer read into memory has a size limit (manifests,
//! tag lists over all pages, tokens, error bodies), each non-blob request a time limit, a token realm must be
//! https (plain http only to loopback or `registry.insecure` hosts), credentials go only to the host they were
//! configured for (or a realm host `registry.auth_hosts` names), and a mirror gets only its own credentials.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, LINK, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::config::RegistryConfig;
use crate::image::reference::{Reference, DOCKER_HUB, DOCKER_HUB_ENDPOINT};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub(crate) const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests larger than this are refused (the distribution spec suggests registries accept at least 4 MiB).
pub(crate) const MANIFEST_LIMIT: usize = 4 << 20;
/// Token answers larger than this are refused.
const TOKEN_LIMIT: usize = 1 << 20;
/// Bytes of an error answer read (only its start is shown).
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
/// Realm hosts that may receive a registry's credentials besides its own endpoint host, built in.
const BUILTIN_AUTH_HOSTS: &[(&str, &str)] = &[(DOCKER_HUB, "auth.docker.io")];

/// Registry errors. Each names the URL or image and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("request to {url} failed: {}", error_chain(.source))]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status { url: String, status: StatusCode, body: String },
    #[error("{what} not found in {registry}: check the name and tag (`jetship resolve` lists the choices for {{auto}} tags)")]
    NotFound { registry: String, what: String },
    #[error("{registry} refused access to {repository}: {detail}")]
    Unauthorized { registry: String, repository: String, detail: String },
    #[error("{registry} sent an authentication challenge jetship cannot follow: `{header}`")]
    BadChallenge { registry: String, header: String },
    #[error("token endpoint {realm} gave no usable token: {detail}")]
    Token { realm: String, detail: String },
    #[error("{registry} asked for a token from {realm}, which jetship refuses: {reason}")]
    RealmRefused { registry: String, realm: String, reason: String },
    #[error("tag list of {image} is longer than {limit} {what}; name the tag instead of {{auto}}, or raise registry.limits.{key}")]
    TagListTooLong { image: String, limit: u64, what: &'static str, key: &'static str },
    #[error("manifest of {image} is larger than {limit} bytes; refusing it")]
    ManifestTooLarge { image: String, limit: usize },
    #[error("manifest of {image} has digest {actual}, but {expected} was asked for or announced: the registry or a proxy corrupted it")]
    ManifestDigest { image: String, expected: String, actual: String },
    #[error("{url}: blob answer is unusable: {detail}")]
    BadBlobResponse { url: String, detail: String },
    #[error("cannot read credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker config {path} is not valid: {detail}")]
    DockerConfig { path: PathBuf, detail: String },
}

impl Error {
    /// Whether trying again may help: connection problems, timeouts, 429 and 5xx answers.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Http { .. } => true,
            Error::Status { status, .. } => *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            Error::BadBlobResponse { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, <hidden>)", self.username)
    }
}

/// Everything the client needs to know about registries, built from `[registry]` in the config.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Mirror base URLs per registry host, tried in order before the registry itself.
    pub mirrors: HashMap<String, Vec<Url>>,
    /// Registries spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials per registry host.
    pub credentials: HashMap<String, Credential>,
    /// Attempts for manifest and tag requests on transient failures (blobs are retried by `crate::image::pull`).
    pub retries: u32,
    /// Longest wait between attempts.
    pub backoff_cap: Duration,
    /// Realm hosts per registry (or mirror) host that may receive its credentials besides its own host.
    pub auth_hosts: HashMap<String, Vec<String>>,
    /// Size and time limits on answers (`[registry.limits]`).
    pub limits: crate::config::RegistryLimits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            mirrors: HashMap::new(),
            insecure: Vec::new(),
            credentials: HashMap::new(),
            retries: 0,
            backoff_cap: Duration::ZERO,
            auth_hosts: HashMap::new(),
            limits: Default::default(),
        }
    }
}

impl ClientOptions {
    /// Builds the options from the config: reads credential files and the Docker config's `auths`.
    pub fn from_config(cfg: &RegistryConfig) -> Result<Self> {
        let mut credentials = HashMap::new();
        if let Some(path) = &cfg.docker_config {
            credentials.extend(read_docker_config(path)?);
        }
        for (registry, c) in &cfg.credentials {
            let password = std::fs::read_to_string(&c.password_file)
                .map_err(|source| Error::Credentials { path: c.password_file.clone(), source })?;
            credentials.insert(
                registry.clone(),
                Credential {
                    username: c.username.clone(),
                    password: password.trim_end_matches(['\n', '\r']).to_owned(),
                },
            );
        }
        let mirrors = cfg
            .mirrors
            .iter()
            .map(|(r, urls)| (r.clone(), urls.iter().filter_map(|u| Url::parse(u).ok()).collect()))
            .collect();
        Ok(Self {
            mirrors,
            insecure: cfg.insecure.clone(),
            credentials,
            retries: cfg.retries,
            backoff_cap: Duration::from_secs_f64(cfg.retry_backoff_cap_s),
            auth_hosts: cfg.auth_hosts.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            limits: cfg.limits.clone(),
        })
    }
}

/// Reads the `auths` of a Docker `config.json`: `auth` (base64 `user:password`) or `username`/`password`
/// (`identitytoken` is not supported). Keys may be URLs (`https://index.docker.io/v1/` means docker.io).
pub(crate) fn read_docker_config(path: &Path) -> Result<HashMap<String, Credential>> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let bad = |detail: String| Error::DockerConfig { path: path.to_path_buf(), detail };
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Credentials { path: path.to_path_buf(), source })?;
    let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for (key, e) in file.auths {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let host = match host.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => host,
        };
        let cred = match (e.auth, e.username, e.password) {
            (Some(a), _, _) if !a.is_empty() => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|err| bad(format!("auths.\"{key}\".auth is not base64: {err}")))?;
                let raw = String::from_utf8(raw).map_err(|_| bad(format!("auths.\"{key}\".auth is not UTF-8")))?;
                let (u, p) =
                    raw.split_once(':').ok_or_else(|| bad(format!("auths.\"{key}\".auth is not user:password")))?;
                Credential { username: u.to_owned(), password: p.to_owned() }
            }
            (_, Some(u), Some(p)) => Credential { username: u, password: p },
            _ => continue,
        };
        out.insert(host, cred);
    }
    Ok(out)
}

/// A manifest or index as fetched: raw bytes (digest-checked), media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The `Content-Type` the registry sent (or the `mediaType` field when the header is generic).
    pub media_type: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub bytes: Bytes,
}

/// A blob download in flight.
pub struct BlobResponse {
    /// Offset in the blob of the first byte the stream yields: the asked-for offset, or 0 when the registry
    /// ignored `Range` and sent the whole blob.
    pub offset: u64,
    /// The URL that serves it (for errors).
    pub url: String,
    response: Response,
}

impl BlobResponse {
    /// The body as a stream of chunks.
    pub(crate) fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes>> {
        let url = self.url;
        self.response.bytes_stream().map(move |r| r.map_err(|source| Error::Http { url: url.clone(), source }))
    }
}

#[derive(Clone)]
struct CachedAuth {
    header: String,
    expires: Option<Instant>,
}

/// The registry client. Cheap to share behind an `Arc`; the token cache is per client.
pub struct Client {
    http: reqwest::Client,
    opts: ClientOptions,
    auth: Mutex<HashMap<(String, String), CachedAuth>>,
}

impl Client {
    /// Builds a client. Call `crate::install_crypto_provider()` first (the binary does).
    pub fn new(opts: ClientOptions) -> Result<Self> {
        crate::install_crypto_provider();
        // Redirects (blob storage) may change host, which drops the Authorization header (reqwest does that on
        // any change of host or port), but never go from https to plain http outside loopback and insecure hosts.
        let insecure = opts.insecure.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let to = attempt.url();
            let downgrade = to.scheme() != "https" && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade && !plain_http_host(&insecure, &host_port(to)) {
                let to = to.to_string();
                return attempt.error(format!("redirect from https to plain http ({to}) refused"));
            }
            attempt.follow()
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("jetship/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .redirect(redirects)
            .build()
            .map_err(Error::Client)?;
        Ok(Self { http, opts, auth: Mutex::new(HashMap::new()) })
    }

    /// The time limit of one manifest, tag-list or token request (`registry.limits.request_timeout_s`).
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.opts.limits.request_timeout_s)
    }

    /// Base URLs to try for `registry`, mirrors first.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Url> {
        let mut out: Vec<Url> = self.opts.mirrors.get(registry).cloned().unwrap_or_default();
        let host = if registry == DOCKER_HUB { DOCKER_HUB_ENDPOINT } else { registry };
        let scheme = if self.plain_http(registry) { "http" } else { "https" };
        if let Ok(u) = Url::parse(&format!("{scheme}://{host}/")) {
            out.push(u);
        }
        out
    }

    /// Plain HTTP only for configured insecure registries and loopback ones.
    pub(crate) fn plain_http(&self, registry: &str) -> bool {
        plain_http_host(&self.opts.insecure, registry)
    }

    /// Whether a token realm on `realm_host` may receive the credentials configured under `key` (a registry or
    /// mirror host), which were meant for an endpoint on `endpoint_host`: the same host, a built-in realm of that
    /// registry, or a host `registry.auth_hosts` names for it.
    fn may_receive_credentials(&self, key: &str, endpoint_host: &str, realm_host: &str) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        same(realm_host, endpoint_host)
            || same(realm_host, strip_port(key))
            || BUILTIN_AUTH_HOSTS.iter().any(|(r, h)| *r == key && same(h, realm_host))
            || self.opts.auth_hosts.get(key).is_some_and(|hosts| hosts.iter().any(|h| same(h, realm_host)))
    }

    /// Lists every tag of the repository, following `Link: <...>; rel="next"` pages.
    pub async fn list_tags(&self, image: &Reference) -> Result<Vec<String>> {
        self.list_tags_paged(image, 1000).await
    }

    /// Lists every tag asking for `page_size` tags per request. The pages together may hold at most
    /// `registry.limits.max_tags` tags in `registry.limits.max_tag_list_bytes` bytes; a longer list is an error
    /// (a cut list could resolve `{auto}` to the wrong tag), and so is a page that links back to an earlier one.
    pub async fn list_tags_paged(&self, image: &Reference, page_size: usize) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let limits = &self.opts.limits;
        let too_long = |limit: u64, what, key| Error::TagListTooLong { image: image.to_string(), limit, what, key };
        let mut tags = Vec::new();
        let mut bytes = 0u64;
        let mut path = format!("v2/{}/tags/list?n={page_size}", image.repository);
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(path.clone()) {
                return Err(Error::Status {
                    url: path,
                    status: StatusCode::OK,
                    body: "the tag list's pages link back to an earlier page".into(),
                });
            }
            let resp = self.get(image, &path, &[], false).await?;
            let url = resp.url().to_string();
            let next = next_link(resp.headers());
            let left = limits.max_tag_list_bytes.saturating_sub(bytes) as usize;
            let body = read_limited(resp, left, &url).await.map_err(|e| match e {
                Error::BadBlobResponse { .. } => too_long(limits.max_tag_list_bytes, "bytes", "max_tag_list_bytes"),
                e => e,
            })?;
            bytes += body.len() as u64;
            let list: TagList = serde_json::from_slice(&body).map_err(|e| Error::Status {
                url: url.clone(),
                status: StatusCode::OK,
                body: format!("tag list is not valid JSON: {e}"),
            })?;
            tags.extend(list.tags.unwrap_or_default());
            if tags.len() > limits.max_tags {
                return Err(too_long(limits.max_tags as u64, "tags", "max_tags"));
            }
            match next {
                Some(n) => path = n.trim_start_matches('/').to_owned(),
                None => return Ok(tags),
            }
        }
    }

    /// Fetches a manifest or index by tag or digest. The digest is computed and checked against the digest asked
    /// for and the `Docker-Content-Digest` header.
    pub async fn manifest(&self, image: &Reference, reference: &str) -> Result<FetchedManifest> {
        let accept = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let path = format!("v2/{}/manifests/{reference}", image.repository);
        let resp = self.get(image, &path, &[(ACCEPT, accept)], false).await?;
        let url = resp.url().to_string();
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let announced = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if resp.content_length().is_some_and(|n| n > MANIFEST_LIMIT as u64) {
            return Err(Error::ManifestTooLarge { image: image.to_string(), limit: MANIFEST_LIMIT });
        }
        let bytes = read_limited(resp, MANIFEST_LIMIT, &url).await.map_err(|e| match e {
            Error::BadBlobResponse { .. } => {
                Error::ManifestTooLarge { image: image.to_string(), limit: MANIFEST_LIMIT }
            }
            e => e,
        })?;
        let digest = sha256_digest(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            announced.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(Error::ManifestDigest { image: image.to_string(), expected, actual: digest });
            }
        }
        // Some registries answer `application/json`; the manifest's own mediaType field then says what it is.
        let media_type = if header_type.starts_with("application/vnd.") {
            header_type
        } else {
            #[derive(Deserialize)]
            struct Probe {
                #[serde(rename = "mediaType")]
                media_type: Option<String>,
            }
            serde_json::from_slice::<Probe>(&bytes).ok().and_then(|p| p.media_type).unwrap_or(header_type)
        };
        Ok(FetchedManifest { media_type, digest, bytes })
    }

    /// Starts downloading a blob at `offset` (a `Range` request when `offset > 0`). Checks that a 206 answer starts
    /// where asked; a 200 answer to a range request means the registry ignored `Range` (offset 0 is returned).
    pub async fn blob(&self, image: &Reference, digest: &str, offset: u64) -> Result<BlobResponse> {
        let path = format!("v2/{}/blobs/{digest}", image.repository);
        let headers: Vec<_> = if offset > 0 { vec![(RANGE, format!("bytes={offset}-"))] } else { Vec::new() };
        let resp = self.get(image, &path, &headers, true).await?;
        let url = resp.url().to_string();
        let start = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                let start = parse_content_range_start(range).ok_or_else(|| Error::BadBlobResponse {
                    url: url.clone(),
                    detail: format!("206 with unusable Content-Range `{range}`"),
                })?;
                if start != offset {
                    return Err(Error::BadBlobResponse {
                        url,
                        detail: format!("asked for bytes from {offset}, got a range starting at {start}"),
                    });
                }
                start
            }
            _ => 0,
        };
        Ok(BlobResponse { offset: start, url, response: resp })
    }

    /// GET `path` on the first endpoint that answers, with authentication, retrying transient failures of
    /// non-blob requests. 404 and other client errors are final.
    async fn get(
        &self,
        image: &Reference,
        path: &str,
        headers: &[(reqwest::header::HeaderName, String)],
        blob: bool,
    ) -> Result<Response> {
        let endpoints = self.endpoints(&image.registry);
        let attempts = if blob { 1 } else { self.opts.retries.max(1) };
        // Blobs may be large: a stall timeout bounds them. Everything else has a time limit from start to end.
        let timeout = (!blob).then(|| Duration::from_secs(self.opts.limits.request_timeout_s));
        let mut last_err = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt - 1, self.opts.backoff_cap)).await;
            }
            for (i, base) in endpoints.iter().enumerate() {
                let is_mirror = i + 1 < endpoints.len();
                let url = match base.join(path) {
                    Ok(u) => u,
                    Err(_) => continue,
                };
                // A mirror is answered with its own credentials (keyed by its host[:port]), never the registry's.
                let cred_key = if is_mirror { host_port(base) } else { image.registry.clone() };
                match self.get_with_auth(image, base, &url, headers, &cred_key, timeout).await {
                    Ok(resp) => return Ok(resp),
                    // A mirror that lacks the content or fails: fall through to the next endpoint.
                    Err(e) if is_mirror => {
                        tracing::debug!(mirror = %base, error = %e, "mirror failed, trying next endpoint");
                        last_err = Some(e);
                    }
                    Err(e) if e.is_transient() => {
                        last_err = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(e) = &last_err {
                if !e.is_transient() {
                    break;
                }
                tracing::debug!(error = %e, attempt, "registry request failed, retrying");
            }
        }
        Err(last_err.unwrap_or_else(|| Error::NotFound { registry: image.registry.clone(), what: image.to_string() }))
    }

    async fn get_with_auth(
        &self,
        image: &Reference,
        base: &Url,
        url: &Url,
        headers: &[(reqwest::header::HeaderName, String)],
        cred_key: &str,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        let host = host_port(base);
        let scope = format!("repository:{}:pull", image.repository);
        let key = (host.clone(), scope.clone());
        for round in 0..2 {
            let cached = {
                let map = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&key).filter(|a| a.expires.is_none_or(|t| t > Instant::now())).cloned()
            };
            let mut req = self.http.get(url.clone());
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            for (name, value) in headers {
                req = req.header(name, value);
            }
            if let Some(a) = &cached {
                req = req.header(AUTHORIZATION, &a.header);
            }
            let resp = req.send().await.map_err(|source| Error::Http { url: url.to_string(), source })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && round == 0 {
                let challenge =
                    resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let auth = self.answer_challenge(image, base, cred_key, &challenge, &scope).await?;
                self.auth.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), auth);
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            return Err(self.status_error(image, url, resp, cred_key).await);
        }
        unreachable!("the loop returns in its second round")
    }

    async fn status_error(&self, image: &Reference, url: &Url, resp: Response, cred_key: &str) -> Error {
        let status = resp.status();
        // Only the start of an error answer is shown: read no more than that.
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_LIMIT - body.len())]);
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        match status {
            StatusCode::NOT_FOUND => {
                Error::NotFound { registry: image.registry.clone(), what: format!("{} ({})", image, url.path()) }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                registry: image.registry.clone(),
                repository: image.repository.clone(),
                detail: if self.opts.credentials.contains_key(cred_key) {
                    format!("the configured credentials were refused ({status})")
                } else {
                    format!(
                        "{status}; set registry.credentials.\"{cred_key}\" or registry.docker_config in the agent config"
                    )
                },
            },
            _ => Error::Status { url: url.to_string(), status, body: body.trim().to_owned() },
        }
    }

    async fn answer_challenge(
        &self,
        image: &Reference,
        base: &Url,
        cred_key: &str,
        header: &str,
        scope: &str,
    ) -> Result<CachedAuth> {
        let registry = &image.registry;
        let cred = self.opts.credentials.get(cred_key);
        let (scheme, params) = parse_challenge(header)
            .ok_or_else(|| Error::BadChallenge { registry: registry.clone(), header: header.to_owned() })?;
        let basic = |c: &Credential| {
            let raw = format!("{}:{}", c.username, c.password);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
        };
        match scheme.as_str() {
            "basic" => {
                let c = cred.ok_or_else(|| Error::Unauthorized {
                    registry: registry.clone(),
                    repository: image.repository.clone(),
                    detail: format!(
                        "the registry needs a username and password; set registry.credentials.\"{cred_key}\" or registry.docker_config"
                    ),
                })?;
                Ok(CachedAuth { header: basic(c), expires: None })
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| Error::BadChallenge { registry: registry.clone(), header: header.to_owned() })?;
                let mut url = Url::parse(realm)
                    .map_err(|_| Error::BadChallenge { registry: registry.clone(), header: header.to_owned() })?;
                let refused =
                    |reason: String| Error::RealmRefused { registry: registry.clone(), realm: realm.clone(), reason };
                let realm_host = url.host_str().unwrap_or_default().to_owned();
                match url.scheme() {
                    "https" => {}
                    "http" if self.plain_http(&host_port(&url)) => {}
                    other => {
                        return Err(refused(format!(
                            "token realms must use https (`{other}` is allowed only for loopback hosts and hosts in registry.insecure)"
                        )))
                    }
                }
                let endpoint_host = base.host_str().unwrap_or_default();
                if cred.is_some() && !self.may_receive_credentials(cred_key, endpoint_host, &realm_host) {
                    return Err(refused(format!(
                        "it is on host {realm_host}, and the credentials configured for {cred_key} are sent only to {endpoint_host}; if {realm_host} is the registry's own token service, add it to registry.auth_hosts.\"{cred_key}\""
                    )));
                }
                // Our own pull scope: a challenge may name `pull,push`, which anonymous clients cannot get.
                // Realms that already carry parameters (nvcr.io's `proxy_auth?scope=...`) keep theirs.
                let has = |k: &str| url.query_pairs().any(|(key, _)| key == k);
                let (has_service, has_scope) = (has("service"), has("scope"));
                {
                    let mut q = url.query_pairs_mut();
                    if let (Some(service), false) = (params.get("service"), has_service) {
                        q.append_pair("service", service);
                    }
                    if !has_scope {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req =
                    self.http.get(url.clone()).timeout(Duration::from_secs(self.opts.limits.request_timeout_s));
                if let Some(c) = cred {
                    req = req.header(AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|source| Error::Http { url: url.to_string(), source })?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(Error::Unauthorized {
                        registry: registry.clone(),
                        repository: image.repository.clone(),
                        detail: format!(
                            "token endpoint {realm} answered {status}{}",
                            if cred.is_some() {
                                " to the configured credentials"
                            } else {
                                "; set registry.credentials or registry.docker_config"
                            }
                        ),
                    });
                }
                #[derive(Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let body = read_limited(resp, TOKEN_LIMIT, realm).await?;
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| Error::Token { realm: realm.clone(), detail: e.to_string() })?;
                let token = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| Error::Token {
                    realm: realm.clone(),
                    detail: "neither `token` nor `access_token` in the answer".into(),
                })?;
                // Renew a little early; 60 s is the spec's default lifetime.
                let life = t.expires_in.unwrap_or(60).saturating_sub(10).max(5);
                Ok(CachedAuth {
                    header: format!("Bearer {token}"),
                    expires: Some(Instant::now() + Duration::from_secs(life)),
                })
            }
            _ => Err(Error::BadChallenge { registry: registry.clone(), header: header.to_owned() }),
        }
    }
}

/// An error with its causes (`error sending request: connection refused`): reqwest's own text names only the
/// outermost.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// The wait before retry number `attempt` (0-based): 0.5 s doubling, at most `cap`, with up to 25 % jitter.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1u32 << attempt.min(16));
    let d = base.min(cap);
    let jitter = rand::random::<f64>() * 0.25;
    d.mul_f64(1.0 - jitter)
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm="..."`) into the lowercase scheme
/// and its parameters.
pub(crate) fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        params.insert(key, value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// The target of a `Link: <url>; rel="next"` header.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let (target, params) = part.split_once(';')?;
            if params.replace(' ', "").contains("rel=\"next\"") || params.replace(' ', "").contains("rel=next") {
                let target = target.trim().trim_start_matches('<').trim_end_matches('>');
                // The target may be absolute; keep its path and query relative to the endpoint.
                if let Ok(u) = Url::parse(target) {
                    return Some(format!("{}{}", u.path(), u.query().map(|q| format!("?{q}")).unwrap_or_default()));
                }
                return Some(target.to_owned());
            }
        }
    }
    None
}

fn parse_content_range_start(v: &str) -> Option<u64> {
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Whether a registry host (`127.0.0.1:5000`, `localhost`, `[::1]:5000`) is on the loopback interface.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = strip_port(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]` (`[::1]:5000` -> `::1`).
fn strip_port(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    }
}

/// `host[:port]` of a URL, as registries are named in the config (the port only when the URL has one).
fn host_port(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    host + &url.port().map(|p| format!(":{p}")).unwrap_or_default()
}

/// Plain HTTP is spoken only to loopback hosts and hosts listed in `registry.insecure`.
fn plain_http_host(insecure: &[String], host_port: &str) -> bool {
    insecure.iter().any(|r| r == host_port) || is_loopback(host_port)
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", crate::os::fsutil::sha256_hex(data))
}

async fn read_limited(resp: Response, limit: usize, url: &str) -> Result<Bytes> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Http { url: url.to_owned(), source })?;
        if out.len() + chunk.len() > limit {
            return Err(Error::BadBlobResponse {
                url: url.to_owned(),
                detail: format!("answer is larger than {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_of_hub_ghcr_and_ngc() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/ubuntu:pull");
        let (_, p) = parse_challenge(
            r#"Bearer realm="https://nvcr.io/proxy_auth",scope="repository:nvidia/l4t-base:pull,push""#,
        )
        .unwrap();
        assert_eq!(p["scope"], "repository:nvidia/l4t-base:pull,push", "commas inside quotes stay");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "Registry Realm"));
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn link_header_gives_next_page() {
        let mut h = HeaderMap::new();
        h.insert(LINK, r#"</v2/a/tags/list?last=b&n=2>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=b&n=2"));
        let mut h = HeaderMap::new();
        h.insert(LINK, r#"<https://r.example/v2/a/tags/list?n=2&last=c>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=c"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn loopback_and_insecure_registries_use_plain_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("nvcr.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
        let c = Client::new(ClientOptions { insecure: vec!["lab.local:5000".into()], ..Default::default() }).unwrap();
        assert_eq!(c.endpoints("docker.io")[0].as_str(), "https://registry-1.docker.io/");
        assert_eq!(c.endpoints("lab.local:5000")[0].as_str(), "http://lab.local:5000/");
        assert_eq!(c.endpoints("127.0.0.1:5000")[0].as_str(), "http://127.0.0.1:5000/");
        assert_eq!(c.endpoints("nvcr.io")[0].as_str(), "https://nvcr.io/");
    }

    #[test]
    fn mirrors_come_before_the_registry() {
        let mut opts = ClientOptions::default();
        opts.mirrors.insert("docker.io".into(), vec![Url::parse("http://127.0.0.1:6000").unwrap()]);
        let c = Client::new(opts).unwrap();
        let e: Vec<_> = c.endpoints("docker.io").iter().map(|u| u.to_string()).collect();
        assert_eq!(e, ["http://127.0.0.1:6000/", "https://registry-1.docker.io/"]);
    }

    #[test]
    fn docker_config_auths_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("joe:s3:cret");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"ghcr.io":{{"username":"u","password":"p"}},"x.io":{{}}}}}}"#),
        )
        .unwrap();
        let c = read_docker_config(&p).unwrap();
        assert_eq!(c["docker.io"].username, "joe");
        assert_eq!(c["docker.io"].password, "s3:cret");
        assert_eq!(c["ghcr.io"].password, "p");
        assert!(!c.contains_key("x.io"));
        std::fs::write(&p, r#"{"auths":{"a.io":{"auth":"!!"}}}"#).unwrap();
        let err = read_docker_config(&p).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("a.io"), "{err}");
    }

    #[test]
    fn credentials_come_from_password_files_and_win_over_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let dc = dir.path().join("config.json");
        std::fs::write(&dc, r#"{"auths":{"nvcr.io":{"username":"a","password":"from-docker"},"ghcr.io":{"username":"g","password":"gp"}}}"#).unwrap();
        let mut cfg = RegistryConfig { docker_config: Some(dc), ..Default::default() };
        cfg.credentials.insert(
            "nvcr.io".into(),
            crate::config::RegistryCredential { username: "$oauthtoken".into(), password_file: pw },
        );
        let o = ClientOptions::from_config(&cfg).unwrap();
        assert_eq!(o.credentials["nvcr.io"].username, "$oauthtoken");
        assert_eq!(o.credentials["nvcr.io"].password, "from-file", "trailing newline trimmed");
        assert_eq!(o.credentials["ghcr.io"].password, "gp");
        assert!(!format!("{:?}", o.credentials["nvcr.io"]).contains("from-file"), "passwords stay out of logs");
        cfg.credentials.get_mut("nvcr.io").unwrap().password_file = dir.path().join("missing");
        let err = ClientOptions::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[tokio::test]
    async fn connection_errors_name_the_url_and_the_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Client::new(ClientOptions { retries: 1, ..Default::default() }).unwrap();
        let r = Reference::parse(&format!("127.0.0.1:{port}/a/b:v1")).unwrap();
        let err = c.manifest(&r, "v1").await.unwrap_err().to_string();
        assert!(err.contains(&format!("http://127.0.0.1:{port}/v2/a/b/manifests/v1")), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(4);
        assert!(backoff(0, cap) <= Duration::from_millis(500));
        assert!(backoff(0, cap) >= Duration::from_millis(375));
        assert!(backoff(10, cap) <= cap);
        assert!(backoff(10, cap) >= cap.mul_f64(0.75));
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("items 1-2"), None);
    }
}
