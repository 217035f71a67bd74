//! The network side of docs/security.md: each test tries one attack of issue 10 against a default agent or the
//! default config, with real components (Mosquitto, the agent's embedded broker, the `jetship` binary) and a
//! hostile registry of our own (`support::hostile`), and checks that it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jetship::config::{Config, RegistryConfig, RegistryCredential};
use jetship::image::reference::Reference;
use jetship::image::registry::{Client, ClientOptions};
use jetship::image::snapshot::{LayerSpec, SnapshotStore};
use jetship::image::unpack::{UnpackBudget, UnpackError, UnpackPolicy};
use serde_json::Value;
use sha2::Digest;
use support::bombs::{gzip_bomb, inode_bomb, sparse_bomb};
use support::hostile::{Answer, Hostile};
use support::mosquitto::{orin_host_root, publish, Mosquitto, Observer};

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let log = config.with_extension(format!("log-{:08x}", rand::random::<u32>()));
        let child = Command::new(support::jetship_bin())
            .args(["--config", config.to_str().unwrap(), "agent"])
            .env_remove("JETSHIP_STATE_DIR")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An agent config with the defaults except what a test on this machine must set: its id, state dir, a fixture
/// host, a fast telemetry tick and reconnect, no container backend (none of these attacks needs one), and
/// `mqtt` / `extra` lines.
fn agent_config(dir: &Path, id: &str, mqtt: &str, extra: &str) -> PathBuf {
    let host = orin_host_root(dir);
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "device_id = \"{id}\"\nstate_dir = \"{}\"\n{extra}\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n\
             [runtime]\nbackend = \"docker\"\ndocker_socket = \"/nonexistent/docker.sock\"\n\
             [mqtt]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nkeep_alive_s = 5\n{mqtt}\n",
            dir.join(format!("state-{id}")).display(),
            host.display()
        ),
    )
    .unwrap();
    path
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 3: anyone who reaches the embedded broker (a local user, a container with host networking) is a
// controller.

#[test]
fn attack_3_clients_without_the_agents_credentials_cannot_use_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = support::reserve_port();
    let port = reserved.port.to_string();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = agent_config(dir.path(), "embedded-1", &format!("embedded_listen = \"127.0.0.1:{port}\""), "");
    let agent = Agent::start(&cfg);
    let state = dir.path().join("state-embedded-1");
    let cfg_arg = cfg.to_str().unwrap();
    // Root's CLI with the agent's config reads the credentials and talks to its agent.
    wait_until("the agent answering a root ping", Duration::from_secs(20), || {
        support::jetship(&["--config", cfg_arg, "ping", "embedded-1", "--broker", &url, "--timeout", "2"])
            .status
            .success()
    });

    // The password file: 0600, root's, a random secret that no other device has.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(state.join("broker-password")).unwrap();
    assert!(meta.file_type().is_file(), "a regular file");
    assert_eq!(meta.mode() & 0o777, 0o600, "only root may read the broker password");
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    let password = std::fs::read_to_string(state.join("broker-password")).unwrap().trim().to_owned();
    assert_eq!(password.len(), 64, "256 random bits, hex");

    // Anonymous clients and wrong passwords (a local user, a host-network container) are refused: they can
    // neither publish a desired document nor a command.
    let pub_as = |creds: &[&str], topic: &str, payload: &str| {
        Command::new(support::require_tool("mosquitto_pub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-m", payload, "-r"])
            .args(creds)
            .output()
            .unwrap()
    };
    let desired = r#"{"generation":7,"deployments":{}}"#;
    for creds in [&[][..], &["-u", "jetship", "-P", "guess"][..], &["-u", "root", "-P", &password][..]] {
        let out = pub_as(creds, "jetship/v1/embedded-1/desired", desired);
        assert!(!out.status.success(), "publish with {creds:?} got through: {}", text(&out));
        let out = pub_as(creds, "jetship/v1/embedded-1/cmd/x1", r#"{"cmd":"ping"}"#);
        assert!(!out.status.success(), "command with {creds:?} got through: {}", text(&out));
    }
    // Nor can they read what devices report.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "jetship/v1/#", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "anonymous subscriber read: {}", text(&out));

    // A CLI that cannot read the password (a non-root user, or the CLI without the agent's state dir) is refused
    // with the way out in the message.
    let out = support::jetship_env(
        &["devices", "--broker", &url, "--timeout", "3"],
        &[("JETSHIP_STATE_DIR", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("needs the agent's credentials") && text(&out).contains("--username jetship"),
        "{}",
        text(&out)
    );
    let mut nobody = support::jetship_cmd();
    std::os::unix::process::CommandExt::uid(&mut nobody, 65534);
    std::os::unix::process::CommandExt::gid(&mut nobody, 65534);
    let out = nobody.args(["--config", cfg_arg, "devices", "--broker", &url, "--timeout", "3"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "a non-root user reached the embedded broker: {}", text(&out));

    // Nothing of the attempts arrived: the agent still reports no desired document, and it restarts with the
    // same password.
    let out = support::jetship(&["--config", cfg_arg, "status", "embedded-1", "--json", "--broker", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["reported"]["generation"].is_null(), "an unauthenticated desired was applied: {v}");
    drop(agent);
    let _again = Agent::start(&cfg);
    wait_until("the restarted agent answering", Duration::from_secs(20), || {
        support::jetship(&["--config", cfg_arg, "ping", "embedded-1", "--broker", &url, "--timeout", "2"])
            .status
            .success()
    });
    assert_eq!(std::fs::read_to_string(state.join("broker-password")).unwrap().trim(), password);
}

#[test]
fn attack_3_standalone_broker_refuses_to_run_open_unless_told_and_checks_passwords() {
    let out = support::jetship(&["broker", "--listen", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--password-file") && text(&out).contains("--allow-anonymous"), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    std::fs::write(&passwords, "# lab\nlab-1:first-secret\nctl:second-secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reserved = support::reserve_port();
    let port = reserved.port.to_string();
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _broker = KillOnDrop(
        support::jetship_cmd()
            .args(["broker", "--listen", &format!("127.0.0.1:{port}"), "--password-file"])
            .arg(&passwords)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("jetship broker listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", reserved.port)).is_ok()
    });
    let publish_as = |creds: &[&str]| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", "jetship/v1/lab-1/desired", "-m", "{}"])
            .args(creds)
            .output()
            .unwrap()
    };
    assert!(publish_as(&["-u", "ctl", "-P", "second-secret"]).status.success());
    for creds in [&[][..], &["-u", "ctl", "-P", "first-secret"][..], &["-u", "nobody", "-P", "x"][..]] {
        assert!(!publish_as(creds).status.success(), "{creds:?} got through");
    }

    // --allow-anonymous runs open, and says so.
    let reserved = support::reserve_port();
    let mut open = support::jetship_cmd()
        .args(["broker", "--listen", &format!("127.0.0.1:{}", reserved.port), "--allow-anonymous"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the open broker listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", reserved.port)).is_ok()
    });
    let _ = open.kill();
    let out = open.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("WITHOUT authentication"), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 7: layer bombs fill the disk past the reserve.

/// The unpack policy of a default config.
fn default_policy() -> UnpackPolicy {
    let cfg = Config::default();
    UnpackPolicy {
        budget: UnpackBudget::from_config(&cfg.unpack, cfg.registry.disk_reserve_bytes),
        ..Default::default()
    }
}

/// Unpacks `blob` as a snapshot and returns the error; checks that nothing was committed or left behind.
fn unpack_fails(blob: &[u8], diff_id: &str, media_type: &str, policy: &UnpackPolicy) -> UnpackError {
    let state = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(state.path()).unwrap();
    let spec = LayerSpec { diff_id: diff_id.into(), media_type: media_type.into() };
    let err = store.ensure(&[], &spec, || Ok(blob), policy).unwrap_err();
    let left: Vec<_> = std::fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a refused layer left {left:?} in the snapshot store");
    match err {
        jetship::image::snapshot::SnapshotError::Unpack { source, .. } => source,
        other => panic!("expected an unpack error, got {other}"),
    }
}

#[test]
fn attack_7_sparse_file_bomb_is_stopped_by_the_expansion_budget() {
    let tar = sparse_bomb();
    assert!(tar.len() < 4096);
    let err = unpack_fails(&tar, &sha256(&tar), "application/vnd.oci.image.layer.v1.tar", &default_policy());
    let message = err.to_string();
    match err {
        UnpackError::Expansion { written, compressed, .. } => {
            // Stopped just past the 64 MiB grace, not at 3 GiB: holes count as written.
            assert!(written > 64 << 20 && written < 80 << 20, "{message}");
            assert!(compressed <= tar.len() as u64, "{message}");
        }
        other => panic!("expected the expansion limit, got {other}"),
    }
    assert!(message.contains("unpack.max_expansion_ratio"), "{message}");
}

#[test]
fn attack_7_gzip_bomb_is_stopped_by_the_expansion_budget() {
    let blob = gzip_bomb();
    let diff_id = format!("sha256:{}", "0".repeat(64));
    assert!(blob.len() < 3 << 20, "{} bytes", blob.len());
    let started = Instant::now();
    let err = unpack_fails(&blob, &diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", &default_policy());
    let message = err.to_string();
    assert!(matches!(err, UnpackError::Expansion { written, .. } if written < 80 << 20), "{message}");
    assert!(message.contains("compressed bytes") && message.contains("100"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(60), "the bomb was inflated further than needed");
}

#[test]
fn attack_7_many_empty_files_are_charged_per_inode_and_stopped() {
    let (blob, diff_id) = inode_bomb();
    assert!(blob.len() < 1 << 20, "{} bytes", blob.len());
    let err = unpack_fails(&blob, &diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", &default_policy());
    let message = err.to_string();
    match err {
        // 4 KiB per inode: stopped after the grace (16384 inodes), long before 40,000.
        UnpackError::Expansion { written, .. } => assert!(written < 72 << 20, "{message}"),
        other => panic!("expected the expansion limit, got {other}"),
    }
    // The same archive with a small entry budget stops on the count.
    let mut policy = default_policy();
    policy.budget.layer_entries = 1000;
    let err = unpack_fails(&blob, &diff_id, "application/vnd.oci.image.layer.v1.tar+gzip", &policy);
    assert!(err.to_string().contains("unpack.layer_max_entries") && err.to_string().contains("1001"), "{err}");
}

/// A tmpfs of `mib` MiB mounted on a fresh temp dir, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs and needs root (scripts/test runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m").as_str()),
        )
        .unwrap();
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn attack_7_unpack_stops_at_the_disk_reserve_instead_of_filling_the_disk() {
    use rand::{RngCore, SeedableRng};
    let fs = Tmpfs::mount(64);
    let mut data = vec![0u8; 56 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "model.bin", &data[..]).unwrap();
    let raw = tar.into_inner().unwrap();
    let store = SnapshotStore::open(fs.0.path()).unwrap();
    let spec = LayerSpec { diff_id: sha256(&raw), media_type: "application/vnd.oci.image.layer.v1.tar".into() };
    // Incompressible: only the reserve can stop it. 24 MiB must stay free of the 64.
    let mut policy = default_policy();
    policy.budget.reserve_bytes = 24 << 20;
    let err = store.ensure(&[], &spec, || Ok(&raw[..]), &policy).unwrap_err().to_string();
    assert!(err.contains("must stay free (registry.disk_reserve_bytes)"), "{err}");
    let st = nix::sys::statvfs::statvfs(fs.0.path()).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    assert!(free > 60 << 20, "the partial snapshot was not removed: {free} bytes free");
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 8: endless tag lists (and other endless answers) kept in memory.

fn client(cfg: &RegistryConfig) -> Client {
    Client::new(ClientOptions::from_config(cfg).unwrap()).unwrap()
}

fn reference(addr: &str, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_endless_tag_list_pages_are_cut_at_the_tag_limit() {
    let reg = Hostile::start("127.0.0.1", |r| {
        let page: u64 = r.path.rsplit("last=p").next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let tags: Vec<String> = (0..1000).map(|i| format!("r36.4.{page}-{i}")).collect();
        let next = format!("</v2/app/tags/list?n=1000&last=p{}>; rel=\"next\"", page + 1);
        Answer::json(serde_json::json!({ "name": "app", "tags": tags }).to_string(), &[("Link", &next)])
    })
    .await;
    let err = client(&RegistryConfig::default()).list_tags(&reference(&reg.addr, "app:{auto}")).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("longer than 100000 tags") && message.contains("registry.limits.max_tags"), "{message}");
    let pages = reg.requests().iter().filter(|r| r.path.contains("/tags/list")).count();
    assert!(pages <= 101, "{pages} pages read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_an_endless_tag_list_body_is_cut_at_the_byte_limit() {
    let reg = Hostile::start("127.0.0.1", |_| Answer::Chunked {
        headers: vec![("Content-Type".into(), "application/json".into())],
        first: br#"{"name":"app","tags":["#.to_vec(),
        chunk: format!("\"{}\",", "a".repeat(1000)).into_bytes(),
        count: None,
        delay: Duration::ZERO,
    })
    .await;
    let err = client(&RegistryConfig::default()).list_tags(&reference(&reg.addr, "app:{auto}")).await.unwrap_err();
    assert!(err.to_string().contains("16777216 bytes"), "{err}");
    assert!(reg.served() < 40 << 20, "{} bytes served: the client kept reading", reg.served());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_endless_manifests_and_huge_configs_are_refused_without_reading_them() {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "c".repeat(64)), "size": 1u64 << 30},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", "d".repeat(64)), "size": 10}],
    })
    .to_string();
    let reg = Hostile::start("127.0.0.1", move |r| {
        if r.path.contains("/manifests/endless") {
            Answer::Chunked {
                headers: vec![("Content-Type".into(), "application/vnd.oci.image.manifest.v1+json".into())],
                first: b"{\"layers\":[".to_vec(),
                chunk: vec![b' '; 64 << 10],
                count: None,
                delay: Duration::ZERO,
            }
        } else if r.path.contains("/manifests/") {
            Answer::Full {
                status: 200,
                headers: vec![("Content-Type".into(), "application/vnd.oci.image.manifest.v1+json".into())],
                body: manifest.clone().into_bytes(),
            }
        } else {
            Answer::status(404, &[], "")
        }
    })
    .await;
    let c = client(&RegistryConfig::default());
    let err = c.manifest(&reference(&reg.addr, "app:endless"), "endless").await.unwrap_err().to_string();
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
    assert!(reg.served() < 24 << 20, "{} bytes served", reg.served());

    let store_dir = tempfile::tempdir().unwrap();
    let store = jetship::image::store::ImageStore::open(store_dir.path()).unwrap();
    let opts = jetship::image::pull::PullOptions::from_config(&RegistryConfig::default(), Some("linux/arm64")).unwrap();
    let vars = jetship::image::reference::TemplateVars::from_l4t(jetship::host::l4t::L4tVersion::new(36, 4, 3));
    let image = format!("{}/app:v1", reg.addr);
    let cancel = tokio_util::sync::CancellationToken::new();
    let err = jetship::image::pull::pull(&c, &store, &image, &vars, &opts, None, cancel).await.unwrap_err().to_string();
    assert!(err.contains("over the 16777216-byte limit for image configs"), "{err}");
    assert!(!reg.requests().iter().any(|r| r.path.contains("/blobs/")), "a blob was requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_8_a_registry_that_trickles_its_answer_hits_the_request_time_limit() {
    let reg = Hostile::start("127.0.0.1", |_| Answer::Chunked {
        headers: vec![("Content-Type".into(), "application/json".into())],
        first: br#"{"tags":["#.to_vec(),
        chunk: b"\"a\",".to_vec(),
        count: None,
        delay: Duration::from_millis(200),
    })
    .await;
    let mut cfg = RegistryConfig { retries: 1, ..Default::default() };
    cfg.limits.request_timeout_s = 2;
    let started = Instant::now();
    let err = client(&cfg).list_tags(&reference(&reg.addr, "app:{auto}")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}: {err}", started.elapsed());
    assert!(jetship::image::registry::error_chain(&err).contains("timed out"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 12: the token realm is followed to any host and scheme with the registry's credentials; mirrors get
// the upstream registry's credentials.

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest_answer() -> Answer {
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "e".repeat(64)), "size": 2}, "layers": []});
    Answer::Full {
        status: 200,
        headers: vec![("Content-Type".into(), MANIFEST_TYPE.into())],
        body: body.to_string().into_bytes(),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Registry config with `user`/`password` for `host`.
fn with_credentials(dir: &Path, cfg: &mut RegistryConfig, host: &str, user: &str, password: &str) {
    let file = dir.join(format!("{user}.pw"));
    std::fs::write(&file, password).unwrap();
    cfg.credentials.insert(host.into(), RegistryCredential { username: user.into(), password_file: file });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_12_a_plain_http_realm_on_another_host_is_refused() {
    let reg = Hostile::start("127.0.0.1", |r| match r.header("authorization") {
        Some("Bearer t") => manifest_answer(),
        _ => Answer::status(401, &[("WWW-Authenticate", r#"Bearer realm="http://192.0.2.1/token",service="r""#)], ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RegistryConfig::default();
    with_credentials(dir.path(), &mut cfg, &reg.addr, "user", "secret");
    let started = Instant::now();
    let err = client(&cfg).manifest(&reference(&reg.addr, "app:v1"), "v1").await.unwrap_err().to_string();
    assert!(err.contains("http://192.0.2.1/token") && err.contains("must use https"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "the realm was contacted: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_12_credentials_go_only_to_a_realm_host_the_config_names() {
    let realm = Hostile::start("127.0.0.2", |_| Answer::json(r#"{"token":"t","expires_in":300}"#, &[])).await;
    let challenge = format!(r#"Bearer realm="http://{}/token",service="r""#, realm.addr);
    let reg = Hostile::start("127.0.0.1", move |r| match r.header("authorization") {
        Some("Bearer t") => manifest_answer(),
        _ => Answer::status(401, &[("WWW-Authenticate", &challenge)], ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let image = reference(&reg.addr, "app:v1");
    let mut cfg = RegistryConfig::default();
    with_credentials(dir.path(), &mut cfg, &reg.addr, "user", "secret");
    let err = client(&cfg).manifest(&image, "v1").await.unwrap_err().to_string();
    assert!(err.contains(&format!("registry.auth_hosts.\"{}\"", reg.addr)) && err.contains("127.0.0.2"), "{err}");
    assert!(realm.requests().is_empty(), "the other host got a request: {:?}", realm.requests());

    // Named in registry.auth_hosts: it gets the credentials, and the pull goes on.
    cfg.auth_hosts.insert(reg.addr.clone(), vec!["127.0.0.2".into()]);
    client(&cfg).manifest(&image, "v1").await.unwrap();
    let seen = realm.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(basic("user", "secret").as_str()));

    // Without credentials any https-or-loopback realm may hand out an anonymous token.
    client(&RegistryConfig::default()).manifest(&image, "v1").await.unwrap();
    assert_eq!(realm.requests().len(), 2);
    assert_eq!(realm.requests()[1].header("authorization"), None, "anonymous token requests carry no credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_12_a_mirror_gets_only_its_own_credentials() {
    let reg = Hostile::start("127.0.0.1", |r| {
        if r.header("authorization") == Some(basic("reg-user", "reg-secret").as_str()) {
            manifest_answer()
        } else {
            Answer::status(401, &[("WWW-Authenticate", r#"Basic realm="registry""#)], "")
        }
    })
    .await;
    let mirror = Hostile::start("127.0.0.1", |r| {
        if r.header("authorization") == Some(basic("mirror-user", "mirror-secret").as_str()) {
            manifest_answer()
        } else {
            Answer::status(401, &[("WWW-Authenticate", r#"Basic realm="mirror""#)], "")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RegistryConfig::default();
    cfg.mirrors.insert(reg.addr.clone(), vec![format!("http://{}", mirror.addr)]);
    with_credentials(dir.path(), &mut cfg, &reg.addr, "reg-user", "reg-secret");
    let image = reference(&reg.addr, "app:v1");
    // The mirror asks for a password; it has none of its own, so the pull falls through to the registry.
    client(&cfg).manifest(&image, "v1").await.unwrap();
    assert!(!mirror.requests().is_empty(), "the mirror was tried first");
    assert!(mirror.requests().iter().all(|r| r.header("authorization").is_none()), "{:?}", mirror.requests());
    assert!(reg.requests().iter().any(|r| r.header("authorization").is_some()));

    // With credentials of its own the mirror serves, with those.
    with_credentials(dir.path(), &mut cfg, &mirror.addr, "mirror-user", "mirror-secret");
    let before = reg.requests().len();
    client(&cfg).manifest(&image, "v1").await.unwrap();
    assert_eq!(reg.requests().len(), before, "the mirror answered");
    let sent: Vec<_> = mirror.requests().iter().filter_map(|r| r.header("authorization").map(str::to_owned)).collect();
    assert_eq!(sent, [basic("mirror-user", "mirror-secret")]);
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 9 and the command cap: cmd/resolve contacts any host; every cmd spawns a task.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn replies(obs: &Observer, base: &str) -> Vec<Value> {
    obs.lines()
        .into_iter()
        .filter(|(t, _)| t.starts_with(&format!("{base}/reply/")))
        .filter_map(|(_, p)| serde_json::from_str(&p).ok())
        .collect()
}

fn reply_to(obs: &Observer, base: &str, id: &str) -> Option<Value> {
    replies(obs, base).into_iter().find(|r| r["request_id"] == id)
}

#[test]
fn attack_9_resolve_command_contacts_only_registries_the_policy_allows() {
    let rt = runtime();
    let reg = rt.block_on(Hostile::start("127.0.0.1", |_| Answer::status(404, &[], "")));
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let base = "jetship/v1/resolve-1";
    let obs = Observer::start(&broker, &[&format!("{base}/reply/#")], false, &[]);
    let cfg = agent_config(
        dir.path(),
        "resolve-1",
        &format!("url = \"{}\"", broker.url()),
        "[policy]\nallowed_registries = [\"nvcr.io\"]",
    );
    let agent = Agent::start(&cfg);
    wait_until("the agent online", Duration::from_secs(20), || {
        support::jetship(&["ping", "resolve-1", "--broker", &broker.url(), "--timeout", "2"]).status.success()
    });
    let cmd = format!(r#"{{"cmd":"resolve","args":{{"image":"{}/app:{{auto}}"}}}}"#, reg.addr);
    publish(&broker, &format!("{base}/cmd/r1"), cmd.as_bytes(), false);
    wait_until("the reply to r1", Duration::from_secs(10), || reply_to(&obs, base, "r1").is_some());
    let reply = reply_to(&obs, base, "r1").unwrap();
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("policy.allowed_registries") && error.contains(&reg.addr), "{error}");
    assert_eq!(reg.connections(), 0, "the device contacted a registry outside its policy");
    // The same command for an allowed registry does reach it (the check is not a blanket refusal).
    drop(agent);
    let cfg = agent_config(
        dir.path(),
        "resolve-1",
        &format!("url = \"{}\"", broker.url()),
        &format!("[policy]\nallowed_registries = [\"{}\"]", reg.addr),
    );
    let _agent = Agent::start(&cfg);
    wait_until("the agent online again", Duration::from_secs(20), || {
        support::jetship(&["ping", "resolve-1", "--broker", &broker.url(), "--timeout", "2"]).status.success()
    });
    publish(&broker, &format!("{base}/cmd/r2"), cmd.as_bytes(), false);
    wait_until("the reply to r2", Duration::from_secs(20), || reply_to(&obs, base, "r2").is_some());
    assert!(reg.connections() > 0);
}

#[test]
fn attack_13_a_flood_of_commands_is_capped_and_the_rest_refused_with_a_reason() {
    let rt = runtime();
    // Every registry request hangs until released: resolve commands stay busy.
    let reg = rt.block_on(Hostile::start("127.0.0.1", |_| Answer::Stall));
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let base = "jetship/v1/flood-1";
    let obs = Observer::start(&broker, &[&format!("{base}/reply/#")], false, &[]);
    let cfg = agent_config(dir.path(), "flood-1", &format!("url = \"{}\"", broker.url()), "");
    let agent = Agent::start(&cfg);
    wait_until("the agent online", Duration::from_secs(20), || {
        support::jetship(&["ping", "flood-1", "--broker", &broker.url(), "--timeout", "2"]).status.success()
    });
    let cmd = format!(r#"{{"cmd":"resolve","args":{{"image":"{}/app:v1"}}}}"#, reg.addr);
    for i in 1..=6 {
        publish(&broker, &format!("{base}/cmd/c{i}"), cmd.as_bytes(), false);
    }
    // The default cap is 4: the fifth and sixth are refused at once, naming the key.
    wait_until("two refusals", Duration::from_secs(15), || {
        reply_to(&obs, base, "c5").is_some() && reply_to(&obs, base, "c6").is_some()
    });
    for id in ["c5", "c6"] {
        let r = reply_to(&obs, base, id).unwrap();
        let error = r["error"].as_str().unwrap_or_default();
        assert!(error.contains("busy") && error.contains("commands.max_concurrent"), "{r}");
    }
    for id in ["c1", "c2", "c3", "c4"] {
        assert!(reply_to(&obs, base, id).is_none(), "{id} should still be running: {:?}", replies(&obs, base));
    }
    // Ping is not capped.
    assert!(support::jetship(&["ping", "flood-1", "--broker", &broker.url(), "--timeout", "3"]).status.success());
    reg.release();
    wait_until("the four running commands answering", Duration::from_secs(20), || {
        ["c1", "c2", "c3", "c4"].iter().all(|id| reply_to(&obs, base, id).is_some())
    });
    publish(&broker, &format!("{base}/cmd/c7"), cmd.as_bytes(), false);
    wait_until("a later command answered", Duration::from_secs(20), || reply_to(&obs, base, "c7").is_some());
    let r = reply_to(&obs, base, "c7").unwrap();
    assert!(!r["error"].as_str().unwrap_or_default().contains("busy"), "{r}\n{}", agent.log());
}

// ---------------------------------------------------------------------------------------------------------------
// Attack 11: a retained message larger than the agent's limit makes it reconnect for ever; on a group topic, the
// whole group.

#[test]
fn attack_11_an_oversized_retained_group_document_is_refused_and_reported_without_a_reconnect_loop() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // 6 MiB, over the agent's 4 MiB packet limit; Mosquitto's default takes it.
    let huge = format!(r#"{{"generation":1,"deployments":{{}},"pad":"{}"}}"#, "x".repeat(6 << 20));
    publish(&broker, "jetship/v1/groups/lab/desired", huge.as_bytes(), true);
    let ids = ["group-a", "group-b"];
    let obs = Observer::start(&broker, &["jetship/v1/+/reported"], false, &[]);
    let agents: Vec<Agent> = ids
        .iter()
        .map(|id| {
            let cfg = agent_config(dir.path(), id, &format!("url = \"{}\"", broker.url()), "groups = [\"lab\"]");
            Agent::start(&cfg)
        })
        .collect();
    let rejected = |id: &str| {
        obs.json(&format!("jetship/v1/{id}/reported")).into_iter().rev().find_map(|r| {
            let reasons = r["rejected"]["reasons"].as_array()?.clone();
            (r["rejected"]["source"] == "group:lab").then_some(reasons)
        })
    };
    wait_until("both devices reporting the refusal", Duration::from_secs(30), || {
        ids.iter().all(|id| rejected(id).is_some())
    });
    for id in ids {
        let reasons = rejected(id).unwrap();
        let reason = reasons[0].as_str().unwrap();
        assert!(
            reason.contains("on jetship/v1/groups/lab/desired") && reason.contains("4194304-byte packet limit"),
            "{reason}"
        );
        assert!(reason.contains("tries again in 30 s"), "{reason}");
    }
    // No loop: watched for a while, each agent connected at most twice (the first connection, which the message
    // ended, and the one that found it) and stays online.
    std::thread::sleep(Duration::from_secs(6));
    for (id, agent) in ids.iter().zip(&agents) {
        let connects = agent.log().matches("mqtt connected").count();
        assert!(connects <= 3, "{id} connected {connects} times:\n{}", agent.log());
        assert!(support::jetship(&["ping", id, "--broker", &broker.url(), "--timeout", "3"]).status.success());
    }
    // The devices still follow their own desired topic.
    publish(&broker, "jetship/v1/group-a/desired", br#"{"generation":3,"deployments":{}}"#, true);
    wait_until("group-a taking its own document", Duration::from_secs(10), || {
        obs.json("jetship/v1/group-a/reported").iter().any(|r| r["sources"]["device"] == 3)
    });
    // Replaced with a small document, the group topic is followed again at the retry.
    publish(&broker, "jetship/v1/groups/lab/desired", br#"{"generation":2,"deployments":{}}"#, true);
    wait_until("the group document taken after the retry", Duration::from_secs(45), || {
        obs.json("jetship/v1/group-b/reported").iter().any(|r| r["sources"]["group:lab"] == 2)
    });
}
