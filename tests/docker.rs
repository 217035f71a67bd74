//! The Docker Engine backend against a real private `dockerd` (Debian's docker.io) pulling from a real
//! docker-registry on loopback. Cameras come from a fixture host tree with mknod'ed /dev/video* nodes; the GPU
//! runtime `nvidia` is runc registered in the test daemon's daemon.json. The Docker CLI is the independent observer.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetship::base::GpuMode;
use jetship::host::devices::cameras::CameraError;
use jetship::image::pull::Progress;
use jetship::image::registry::Credential;
use jetship::runtime::docker::{self, DockerBackend, DockerOptions};
use jetship::runtime::{labels, ContainerConfig, ContainerRuntime, Error, RunState, Volume};
use support::backend_contract::{self as contract, busybox_image, push_busybox};
use support::dockerd::{docker_cli, Dockerd};
use support::registry::{Proxy, Pusher, Registry};

/// A state dir for this test process (bind sources are staged under its `mounts/`).
fn state_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path().to_path_buf()
}

fn options(agent: &str, host_root: &Path) -> DockerOptions {
    DockerOptions {
        agent_id: agent.into(),
        host_root: host_root.to_path_buf(),
        gpu_mode: GpuMode::Auto,
        credentials: Default::default(),
        state_dir: state_dir(),
    }
}

async fn connect_as(socket: &Path, agent: &str) -> DockerBackend {
    DockerBackend::connect(socket, options(agent, Path::new("/"))).await.unwrap()
}

/// The Orin Nano fixture with its four video nodes made (81:0..3, as its sysfs says).
fn camera_root() -> tempfile::TempDir {
    let dir = support::copy_fixture_host("orin-nano-super-jp62");
    for n in 0..4 {
        support::mknod_under(dir.path(), &format!("/dev/video{n}"), 81, n, 0o660);
    }
    dir
}

fn inspect(socket: &Path, id: &str) -> serde_json::Value {
    let out = docker_cli(socket, &["inspect", id]);
    let mut all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all.remove(0)
}

fn names(socket: &Path) -> Vec<String> {
    docker_cli(socket, &["ps", "-a", "--format", "{{.Names}}"]).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn docker_inspect_shows_host_ipc_network_devices_shm_binds_labels_and_nvidia_runtime() {
    let socket = support::dockerd::shared();
    let registry = Registry::start();
    let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/inspect", "inspect").await;
    let cams = camera_root();
    let data = tempfile::tempdir().unwrap();
    // nvargus-daemon's socket: CSI cameras with the GPU get it bind-mounted.
    std::fs::create_dir_all(cams.path().join("tmp")).unwrap();
    let argus = cams.path().join("tmp/argus_socket");
    let _ = std::fs::remove_file(&argus);
    let _argus = std::os::unix::net::UnixListener::bind(&argus).unwrap();
    let backend = DockerBackend::connect(&socket, options("agent-inspect", cams.path())).await.unwrap();
    backend.ensure_image(&image).await.unwrap();

    let config = ContainerConfig {
        image: image.clone(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec!["ls -l /dev/video0 /dev/video1; echo gpu=$NVIDIA_VISIBLE_DEVICES".into()]),
        shm_size_bytes: Some(64 << 20),
        memory_bytes: Some(128 << 20),
        volumes: vec![Volume { host: data.path().into(), container: "/models".into(), read_only: true }],
        gpu: Some("all".into()),
        cameras: vec!["/dev/video0".into()],
        ..Default::default()
    };
    let extra = BTreeMap::from([(labels::DEPLOYMENT.to_owned(), "vision".to_owned())]);
    backend.create("js-inspect", &config, extra).await.unwrap();

    let c = inspect(&socket, "js-inspect");
    let host = &c["HostConfig"];
    assert_eq!(host["IpcMode"], "host");
    assert_eq!(host["NetworkMode"], "host");
    assert_eq!(host["ShmSize"], 64 << 20);
    assert_eq!(host["Memory"], 128 << 20);
    // Structured mounts over the staged sources (never `host:container` strings), private propagation.
    let staged = state_dir().join("mounts/js-inspect");
    let mounts: Vec<(String, String, bool, String)> = host["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
            (
                s("Source"),
                s("Target"),
                m["ReadOnly"].as_bool().unwrap_or(false),
                m["BindOptions"]["Propagation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            (staged.join("0").display().to_string(), "/models".into(), true, "rprivate".into()),
            (staged.join("1").display().to_string(), "/tmp/argus_socket".into(), false, "rprivate".into()),
        ]
    );
    assert_eq!(host["Binds"], serde_json::Value::Null);
    assert_eq!(host["PidsLimit"], 4096);
    // (The daemon adds `label=disable` itself for host IPC.)
    let opts = host["SecurityOpt"].as_array().unwrap();
    assert!(opts.contains(&serde_json::json!("no-new-privileges:true")), "{opts:?}");
    assert!(!opts.iter().any(|o| o.as_str().is_some_and(|o| o.contains("unconfined"))), "{opts:?}");
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(host["Runtime"], "nvidia", "the GPU is asked and the daemon lists the nvidia runtime");
    // The capture node brings its metadata sibling (same USB device), as on the native backend.
    let devices: Vec<(String, String, String)> = host["Devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("PathOnHost"), s("PathInContainer"), s("CgroupPermissions"))
        })
        .collect();
    let on_host = |n: u32| cams.path().join(format!("dev/video{n}")).display().to_string();
    assert_eq!(
        devices,
        [(on_host(0), "/dev/video0".into(), "rwm".into()), (on_host(1), "/dev/video1".into(), "rwm".into())]
    );
    let labels_seen = &c["Config"]["Labels"];
    assert_eq!(labels_seen[labels::DEPLOYMENT], "vision");
    assert_eq!(labels_seen[labels::AGENT], "agent-inspect");
    assert_eq!(labels_seen[labels::SPEC_HASH], config.spec_hash());
    assert_eq!(labels_seen[labels::IMAGE], image.as_str());
    let env: Vec<&str> = c["Config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=all") && env.contains(&"NVIDIA_DRIVER_CAPABILITIES=all"), "{env:?}");

    // It runs under the `nvidia` runtime with the camera nodes inside.
    backend.start("js-inspect").await.unwrap();
    let done = contract::wait_for_state(&backend, "js-inspect", RunState::Exited, Duration::from_secs(30)).await;
    assert_eq!(done.exit_code, Some(0));
    let logs: Vec<String> = backend.logs("js-inspect", None).await.unwrap().into_iter().map(|l| l.text).collect();
    assert!(logs.iter().any(|l| l.starts_with('c') && l.contains("81,") && l.ends_with("/dev/video0")), "{logs:?}");
    assert!(logs.iter().any(|l| l == "gpu=all"), "{logs:?}");
    backend.remove("js-inspect").await.unwrap();
    assert!(!staged.exists(), "remove releases the staged sources");
    assert!(data.path().is_dir(), "and leaves the volume itself alone");

    // A camera that is not connected fails before anything is created.
    let missing = ContainerConfig { cameras: vec!["/dev/video9".into()], gpu: None, ..config };
    let err = backend.create("js-nocam", &missing, BTreeMap::new()).await.unwrap_err();
    assert!(matches!(err, Error::Camera(CameraError::Missing { .. })), "{err}");
    assert!(!names(&socket).contains(&"js-nocam".to_owned()));
}

#[tokio::test]
async fn gpu_preflight_without_nvidia_runtime_names_the_daemon_json_entry() {
    let daemon = Dockerd::start(false);
    let backend = connect_as(&daemon.socket, "agent-preflight").await;
    assert_eq!(backend.daemon_gpu().await.unwrap(), docker::DaemonGpu { nvidia_runtime: false, cdi: false });
    let config = ContainerConfig {
        image: "127.0.0.1:1/never/pulled@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .into(),
        gpu: Some("all".into()),
        ..Default::default()
    };
    let err = backend.create("js-gpu", &config, BTreeMap::new()).await.unwrap_err().to_string();
    assert!(err.contains(r#"{"runtimes":{"nvidia":{"path":"nvidia-container-runtime","args":[]}}}"#), "{err}");
    assert!(err.contains("/etc/docker/daemon.json") && err.contains("restart docker"), "{err}");
    assert!(daemon.docker(&["ps", "-a", "-q"]).trim().is_empty(), "nothing is created");

    // gpu.mode = "off" runs without the GPU; the shared daemon (with the runtime) passes the same preflight.
    let off = DockerOptions { gpu_mode: GpuMode::Off, ..options("agent-preflight", Path::new("/")) };
    let body =
        DockerBackend::connect(&daemon.socket, off).await.unwrap().create_body(&config, BTreeMap::new(), "x").await;
    assert_eq!(body.unwrap().host_config.unwrap().runtime, None);
    let with_runtime = connect_as(&support::dockerd::shared(), "agent-preflight").await;
    let body = with_runtime.create_body(&config, BTreeMap::new(), "x").await.unwrap();
    assert_eq!(body.host_config.unwrap().runtime.as_deref(), Some("nvidia"));
}

#[tokio::test]
async fn engine_pulls_the_pinned_digest_with_credentials_and_progress_events() {
    let socket = support::dockerd::shared();
    let registry = Registry::start_htpasswd("jet", "s3cret");
    let pusher = Pusher::new(&registry.addr).with_basic("jet", "s3cret");
    push_busybox(&pusher, &registry.addr, "jetship/private", "credentials").await;
    // Pulled through a proxy that slows blobs to 512 KiB/s, so the layer (about 1 MiB) takes long enough for the
    // Engine to report download progress: of a fast download its transfer manager passes on only the last message.
    let proxy = Proxy::start(&registry.addr).await;
    proxy.faults().throttle_bps = Some(512 * 1024);
    let image = format!("{}/jetship/private@{}", proxy.addr, busybox_image("credentials").manifest.digest);

    // Without credentials the Engine's refusal is reported with the image named.
    let anonymous = connect_as(&socket, "agent-pull").await;
    let err = anonymous.ensure_image(&image).await.unwrap_err();
    assert!(matches!(&err, Error::Image { image: i, .. } if *i == image), "{err}");

    let mut opts = options("agent-pull", Path::new("/"));
    opts.credentials.insert(proxy.addr.clone(), Credential { username: "jet".into(), password: "s3cret".into() });
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let events_after = events.clone();
    let backend = DockerBackend::connect(&socket, opts)
        .await
        .unwrap()
        .with_progress(Arc::new(move |p: &Progress| sink.lock().unwrap().push(p.clone())));
    backend.ensure_image(&image).await.unwrap();
    let events = std::mem::take(&mut *events.lock().unwrap());
    assert!(events.iter().any(|e| matches!(e, Progress::BlobStarted { .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Progress::BlobBytes { bytes, .. } if *bytes > 0)), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Progress::BlobDone { cached: false, .. })), "{events:?}");
    let digests = docker_cli(&socket, &["images", "--digests", "--format", "{{.Repository}}@{{.Digest}}"]);
    assert!(digests.lines().any(|l| l == image), "{image} not in:\n{digests}");

    // Already in the daemon: nothing is pulled again.
    backend.ensure_image(&image).await.unwrap();
    assert!(events_after.lock().unwrap().is_empty(), "a present image is not pulled again");

    // Unpinned references are refused: resolution is jetship's, not the Engine's.
    let tag = format!("{}/jetship/private:latest", proxy.addr);
    assert!(backend.ensure_image(&tag).await.unwrap_err().to_string().contains("not pinned"));
}

#[tokio::test]
async fn agent_restart_adopts_the_running_container_and_reads_its_logs() {
    let socket = support::dockerd::shared();
    let registry = Registry::start();
    let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/adopt", "adopt").await;
    // Its own state dir: the default (/var/lib/jetship) is shared with a second suite running at once.
    let mut config =
        jetship::config::Config { device_id: Some("agent-adopt".into()), state_dir: state_dir(), ..Default::default() };
    config.runtime.docker_socket = Some(socket.clone());
    {
        let first = docker::connect(&config).await.unwrap();
        first.ensure_image(&image).await.unwrap();
        let c = ContainerConfig {
            image: image.clone(),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["echo started; while true; do echo tick; sleep 1; done".into()]),
            ..Default::default()
        };
        first.create("js-adopt", &c, BTreeMap::new()).await.unwrap();
        first.start("js-adopt").await.unwrap();
        contract::wait_for_log(&first, "js-adopt", "started", Duration::from_secs(20)).await;
    }
    assert!(docker::docker_available(&config).await);

    // A fresh backend (the agent restarted) finds it by label, running, and reads what it printed.
    let again = docker::connect(&config).await.unwrap();
    let owned = again.list_owned().await.unwrap();
    let adopted = owned.iter().find(|c| c.id == "js-adopt").unwrap_or_else(|| panic!("not adopted: {owned:?}"));
    assert_eq!(adopted.state, RunState::Running);
    assert_eq!(adopted.labels.get(labels::DEPLOYMENT).map(String::as_str), Some("js-adopt"));
    assert_eq!(adopted.labels.get(labels::AGENT).map(String::as_str), Some("agent-adopt"));
    let logs = again.logs("js-adopt", None).await.unwrap();
    assert_eq!(logs.first().map(|l| l.text.as_str()), Some("started"), "{logs:?}");

    // Another agent's backend does not claim it.
    let other = connect_as(&socket, "agent-other").await;
    assert!(other.list_owned().await.unwrap().iter().all(|c| c.id != "js-adopt"));

    assert_eq!(again.stop("js-adopt", Duration::from_secs(1)).await.unwrap(), Some(137));
    again.remove("js-adopt").await.unwrap();
    assert!(!names(&socket).contains(&"js-adopt".to_owned()));
}

#[tokio::test]
async fn the_shared_backend_contract_holds_on_docker() {
    let socket = support::dockerd::shared();
    let registry = Registry::start();
    let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/contract", "contract").await;
    let scratch = tempfile::tempdir().unwrap();
    let backend = connect_as(&socket, "agent-contract").await;
    contract::same_behaviour(&backend, &image, scratch.path(), "js-contract").await;
}

#[tokio::test]
async fn an_unreachable_socket_is_a_clear_error_and_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("docker.sock");
    let err = DockerBackend::connect(&missing, options("a", Path::new("/"))).await.unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()) && err.contains("runtime.docker_socket"), "{err}");
    let mut config = jetship::config::Config::default();
    config.runtime.docker_socket = Some(missing);
    assert!(!docker::docker_available(&config).await);
}

#[tokio::test]
async fn jetship_run_works_on_the_docker_backend() {
    let socket = support::dockerd::shared();
    let registry = Registry::start();
    let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/run", "run").await;
    // `jetship run` resolves a tag: use the repository's `latest` tag, which push_busybox also sets.
    let tagged = image.split('@').next().unwrap().to_string() + ":latest";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\ndevice_id = \"run-docker\"\n[runtime]\nbackend = \"docker\"\ndocker_socket = \"{}\"\n",
            dir.path().join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::jetship_bin())
            .arg("--config")
            .arg(&config)
            .args([
                "run",
                "--rm",
                "--name",
                "js-run-docker",
                &tagged,
                "/bin/sh",
                "-c",
                "echo hello-from-docker; exit 5",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("hello-from-docker"), "{stdout}");
    assert!(!names(&socket).iter().any(|n| n.contains("js-run-docker")), "--rm removed the container");
    assert!(
        !dir.path().join("state/images/blobs").exists()
            || std::fs::read_dir(dir.path().join("state/images/blobs/sha256")).map(|d| d.count()).unwrap_or(0) == 0,
        "the Docker backend leaves layers to the Engine: nothing pulled into jetship's own store"
    );
}
