//! Registry test harness: a real `docker-registry` (Debian's distribution 2.8) on loopback, test images built in
//! Rust and pushed with plain registry API calls (so media types are exactly what the test says), and a fault
//! proxy in front of the registry that cuts connections, answers 500/429, flips bytes, ignores `Range`, throttles,
//! serves hand-made (malformed) manifests, and can demand Bearer tokens from its own token endpoint.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    _dir: tempfile::TempDir,
    _port: super::Port,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry behind htpasswd (bcrypt) Basic auth.
    pub fn start_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        let bin = super::require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let reserved = super::reserve_port();
        let port = reserved.port;
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n", htpasswd.display()));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut child = child;
        while std::net::TcpStream::connect(&addr).is_err() {
            // A registry that exited (e.g. the port was taken) must not pass for ready.
            assert!(child.try_wait().unwrap().is_none(), "docker-registry exited before listening on {addr}");
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, _dir: dir, _port: reserved }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blob of a test image.
#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self { digest: sha256(&data), media_type: media_type.to_owned(), data }
    }
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Clone, Copy, Debug)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

/// A test image: config, layers, manifest.
#[derive(Clone)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Blob,
}

/// A tar layer holding `size` random bytes (seeded) in `data-<seed>.bin` plus a small text file.
pub fn layer(seed: u64, size: usize, compression: Compression, oci: bool) -> (Blob, String) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut payload = vec![0u8; size];
    rng.fill_bytes(&mut payload);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("data-{seed}.bin"), &payload);
    add(&format!("etc/layer-{seed}.txt"), format!("layer {seed}\n").as_bytes());
    let raw = tar.into_inner().unwrap();
    let diff_id = sha256(&raw);
    let (data, suffix) = match compression {
        Compression::Plain => (raw, ""),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw).unwrap();
            (e.finish().unwrap(), "+gzip")
        }
        Compression::Zstd => (zstd::encode_all(raw.as_slice(), 1).unwrap(), "+zstd"),
    };
    let media_type = if oci {
        format!("application/vnd.oci.image.layer.v1.tar{suffix}")
    } else {
        match compression {
            Compression::Plain => "application/vnd.docker.image.rootfs.diff.tar".into(),
            _ => "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
        }
    };
    (Blob::new(&media_type, data), diff_id)
}

/// An image for `arch` with one layer per entry of `layers` (size, compression), seeds from `seed`.
pub fn image(seed: u64, arch: &str, layers: &[(usize, Compression)], oci: bool) -> Image {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, (size, c)) in layers.iter().enumerate() {
        let (b, d) = layer(seed * 100 + i as u64, *size, *c, oci);
        blobs.push(b);
        diff_ids.push(d);
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_type =
        if oci { "application/vnd.oci.image.config.v1+json" } else { "application/vnd.docker.container.image.v1+json" };
    let config = Blob::new(config_type, serde_json::to_vec(&config).unwrap());
    manifest_for(config, blobs, oci)
}

pub fn manifest_for(config: Blob, layers: Vec<Blob>, oci: bool) -> Image {
    let mt = if oci { OCI_MANIFEST } else { DOCKER_MANIFEST };
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    Image { config, layers, manifest: Blob::new(mt, serde_json::to_vec(&m).unwrap()) }
}

/// An index / manifest list over (image, arch, variant).
pub fn index(entries: &[(&Image, &str, Option<&str>)], oci: bool) -> Blob {
    let mt = if oci { OCI_INDEX } else { DOCKER_LIST };
    let manifests: Vec<_> = entries
        .iter()
        .map(|(img, arch, variant)| {
            let mut d = img.manifest.descriptor();
            let mut p = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                p["variant"] = serde_json::json!(v);
            }
            d["platform"] = p;
            d
        })
        .collect();
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests});
    Blob::new(mt, serde_json::to_vec(&body).unwrap())
}

/// Pushes blobs and manifests with the plain registry API.
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    pub fn new(addr: &str) -> Self {
        jetship::install_crypto_provider();
        Self { http: reqwest::Client::new(), base: format!("http://{addr}"), auth: None }
    }
    pub fn with_basic(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    pub async fn blob(&self, repo: &str, blob: &Blob) {
        let head = self
            .req(reqwest::Method::HEAD, &format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest))
            .send()
            .await
            .unwrap();
        if head.status().is_success() {
            return;
        }
        let start =
            self.req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().await.unwrap();
        assert_eq!(start.status(), 202, "upload start for {repo}");
        let loc = start.headers()["location"].to_str().unwrap().to_owned();
        let loc = if loc.starts_with("http") { loc } else { format!("{}{loc}", self.base) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = self
            .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={}", blob.digest))
            .header("content-type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "blob upload {}: {}", blob.digest, put.text().await.unwrap_or_default());
    }

    pub async fn manifest(&self, repo: &str, reference: &str, m: &Blob) {
        let r = self
            .req(reqwest::Method::PUT, &format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", &m.media_type)
            .body(m.data.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 201, "manifest put {repo}:{reference}: {}", r.text().await.unwrap_or_default());
    }

    /// Pushes an image's blobs and its manifest under `tag` (or only by digest when `tag` is None).
    pub async fn image(&self, repo: &str, tag: Option<&str>, img: &Image) {
        self.blob(repo, &img.config).await;
        for l in &img.layers {
            self.blob(repo, l).await;
        }
        self.manifest(repo, tag.unwrap_or(&img.manifest.digest), &img.manifest).await;
    }
}

/// A canned answer: status, content type, extra headers, body.
pub type Canned = (u16, String, Vec<(String, String)>, Vec<u8>);

/// Faults the proxy applies. Counters (`*_times`) count down per matching response.
#[derive(Default)]
pub struct Faults {
    /// Cut blob bodies after this many bytes, for `cut_times` responses.
    pub cut_after: Option<u64>,
    pub cut_times: u32,
    /// Statuses answered to the next blob requests, in order.
    pub blob_statuses: VecDeque<u16>,
    /// Flip one byte at this body offset of blob responses, for `flip_times` responses.
    pub flip_at: Option<u64>,
    pub flip_times: u32,
    /// Drop the `Range` header (answer 200 with the whole blob).
    pub ignore_range: bool,
    /// Throttle blob bodies to this many bytes per second.
    pub throttle_bps: Option<u64>,
    /// The registry is down: every connection is closed before an answer.
    pub down: bool,
    /// Demand `Authorization: Bearer <token>` on /v2/ and serve /token (Basic creds required if set).
    pub bearer: Option<(String, Option<(String, String)>)>,
    /// Served as-is for an exact path: (status, content type, extra headers, body).
    pub overrides: HashMap<String, Canned>,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub served: u64,
    /// `ProxyState::clear` calls before the request arrived; requests of older generations are not reported.
    pub generation: u64,
}

#[derive(Default)]
pub struct ProxyState {
    pub faults: Mutex<Faults>,
    pub seen: Mutex<Vec<Seen>>,
    pub token_requests: Mutex<Vec<String>>,
    pub generation: std::sync::atomic::AtomicU64,
    /// Blob body bytes written so far, requests in flight included.
    pub streamed: std::sync::atomic::AtomicU64,
}

impl ProxyState {
    /// Body bytes served for paths containing `needle` (e.g. a digest).
    pub fn served(&self, needle: &str) -> u64 {
        self.requests(needle).iter().map(|s| s.served).sum()
    }
    /// Requests since the last `clear` whose path contains `needle`, in the order they finished.
    pub fn requests(&self, needle: &str) -> Vec<Seen> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.generation == generation && s.path.contains(needle)).cloned().collect()
    }
    /// Forgets what was seen, including requests still in flight (a killed client's connection).
    pub fn clear(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }
}

/// The fault proxy, listening on its own port and forwarding to a registry.
pub struct Proxy {
    pub addr: String,
    pub state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        jetship::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let upstream = format!("http://{upstream}");
        let me = addr.clone();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (st, up, http, me) = (st.clone(), upstream.clone(), http.clone(), me.clone());
                tokio::spawn(async move {
                    let _ = handle(conn, st, &up, &http, &me).await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }
}

async fn respond(
    w: &mut (impl AsyncWriteExt + Unpin),
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

async fn handle(
    conn: TcpStream,
    st: Arc<ProxyState>,
    upstream: &str,
    http: &reqwest::Client,
    me: &str,
) -> std::io::Result<()> {
    if st.faults.lock().unwrap().down {
        return Ok(()); // the connection closes unanswered
    }
    let (rd, mut wr) = conn.into_split();
    let super::hostile::Request { method, path, headers } = super::hostile::read_request(rd).await?;
    let is_blob = path.contains("/blobs/sha256:");
    let range = headers.get("range").cloned();
    let mut record = Seen {
        path: path.clone(),
        range: range.clone(),
        served: 0,
        generation: st.generation.load(std::sync::atomic::Ordering::SeqCst),
    };

    // Token endpoint and Bearer enforcement.
    let bearer = st.faults.lock().unwrap().bearer.clone();
    if let Some((token, creds)) = &bearer {
        if path.starts_with("/token") {
            st.token_requests.lock().unwrap().push(path.clone());
            if let Some((u, p)) = creds {
                use base64::Engine;
                let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
                if headers.get("authorization") != Some(&want) {
                    return respond(&mut wr, 401, &[], b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}").await;
                }
            }
            let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
            return respond(&mut wr, 200, &[("Content-Type".into(), "application/json".into())], body.as_bytes()).await;
        }
        if headers.get("authorization") != Some(&format!("Bearer {token}")) {
            let challenge = format!("Bearer realm=\"http://{me}/token\",service=\"test-registry\"");
            st.seen.lock().unwrap().push(record);
            return respond(
                &mut wr,
                401,
                &[("WWW-Authenticate".into(), challenge)],
                b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
            )
            .await;
        }
    }

    let canned = st.faults.lock().unwrap().overrides.get(&path).cloned();
    if let Some((status, ct, extra, body)) = canned {
        let mut h = vec![("Content-Type".to_owned(), ct)];
        h.extend(extra);
        record.served = body.len() as u64;
        st.seen.lock().unwrap().push(record);
        return respond(&mut wr, status, &h, &body).await;
    }
    if is_blob {
        let status = st.faults.lock().unwrap().blob_statuses.pop_front();
        if let Some(status) = status {
            st.seen.lock().unwrap().push(record);
            return respond(&mut wr, status, &[], b"injected failure").await;
        }
    }

    let (ignore_range, throttle) = {
        let f = st.faults.lock().unwrap();
        (f.ignore_range, if is_blob { f.throttle_bps } else { None })
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = http.request(method, format!("{upstream}{path}"));
    for h in ["accept", "authorization"] {
        if let Some(v) = headers.get(h) {
            if bearer.is_none() || h != "authorization" {
                req = req.header(h, v);
            }
        }
    }
    if let (Some(r), false) = (&range, ignore_range) {
        req = req.header("range", r);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(_) => return respond(&mut wr, 502, &[], b"upstream failed").await,
    };
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status().as_u16());
    for (k, v) in resp.headers() {
        let k = k.as_str();
        if [
            "content-type",
            "content-length",
            "content-range",
            "docker-content-digest",
            "www-authenticate",
            "link",
            "accept-ranges",
        ]
        .contains(&k)
        {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
    }
    head.push_str("\r\n");
    wr.write_all(head.as_bytes()).await?;
    let mut body = resp.bytes_stream();
    let mut pos = 0u64;
    let result = async {
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(std::io::Error::other)?.to_vec();
            let end = pos + chunk.len() as u64;
            if is_blob {
                // Faults are taken lazily, so a small blob that never reaches the offset does not use them up.
                let (flip, cut) = {
                    let mut f = st.faults.lock().unwrap();
                    let flip = match f.flip_at {
                        Some(at) if f.flip_times > 0 && at >= pos && at < end => {
                            f.flip_times -= 1;
                            Some(at)
                        }
                        _ => None,
                    };
                    let cut = match f.cut_after {
                        Some(limit) if f.cut_times > 0 && limit < end => {
                            f.cut_times -= 1;
                            Some(limit)
                        }
                        _ => None,
                    };
                    (flip, cut)
                };
                if let Some(at) = flip {
                    chunk[(at - pos) as usize] ^= 0xff;
                }
                if let Some(limit) = cut {
                    let keep = (limit - pos) as usize;
                    wr.write_all(&chunk[..keep]).await?;
                    wr.flush().await?;
                    pos += keep as u64;
                    return Ok(()); // cut: close mid-body
                }
            }
            wr.write_all(&chunk).await?;
            pos += chunk.len() as u64;
            st.streamed.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
            if let Some(bps) = throttle {
                wr.flush().await?;
                tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / bps as f64)).await;
            }
        }
        wr.flush().await
    }
    .await;
    record.served = pos;
    st.seen.lock().unwrap().push(record);
    result
}

/// Writes an agent config for tests: state dir, and registry settings as TOML lines.
pub fn write_config(dir: &Path, state_dir: &Path, registry_toml: &str) -> std::path::PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(&p, format!("state_dir = \"{}\"\n[registry]\n{registry_toml}\n", state_dir.display())).unwrap();
    p
}
