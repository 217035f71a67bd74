//! The behaviour every container backend must share, as one test run against each backend: the same
//! [`ContainerConfig`] (env, args, working dir, host IPC, host network, a bind mount, labels) must give the same
//! output, exit code, labels and stop behaviour on the native (conmon + runc) and the Docker backend.
//! Also builds the tiny busybox test image both backends pull from the test registry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use jetship::base::{IpcMode, NetworkMode};
use jetship::runtime::{labels, ContainerConfig, ContainerInfo, ContainerRuntime, RunState};

use super::registry::{self as reg, Blob, Image, Pusher};

/// Applets linked to /bin/busybox in the test image.
const APPLETS: &[&str] = &["sh", "cat", "echo", "ls", "readlink", "sleep", "pwd", "env", "true"];

/// The Docker/OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    }
}

/// A GNU tar header of `kind`, `mode` and `size` with a fixed mtime (layers built twice are the same bytes).
pub fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// A one-layer image (gzip, Docker schema 2) holding the static /bin/busybox of Debian's `busybox-static`, its
/// applet links, and `/etc/jetship-test` = `note` (a different note gives different layer bytes, so a fresh pull).
/// Env `PATH=/bin`, Cmd `sh`.
pub fn busybox_image(note: &str) -> Image {
    use std::io::Write;
    let busybox = std::fs::read(super::require_tool("busybox", "busybox-static")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let header = tar_header;
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "work"] {
        let mut h = header(tar::EntryType::Directory, if d == "tmp" { 0o1777 } else { 0o755 }, 0);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty()).unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox.as_slice()).unwrap();
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o644, note.len() as u64);
    tar.append_data(&mut h, "etc/jetship-test", note.as_bytes()).unwrap();
    let raw = tar.into_inner().unwrap();
    let diff_id = reg::sha256(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let layer = Blob::new("application/vnd.docker.image.rootfs.diff.tar.gzip", gz.finish().unwrap());
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = Blob::new("application/vnd.docker.container.image.v1+json", serde_json::to_vec(&config).unwrap());
    reg::manifest_for(config, vec![layer], false)
}

/// Pushes [`busybox_image`]`(note)` to the registry at `addr` as `repo` and returns its pinned reference.
pub async fn push_busybox(pusher: &Pusher, addr: &str, repo: &str, note: &str) -> String {
    let img = busybox_image(note);
    pusher.image(repo, Some("latest"), &img).await;
    format!("{addr}/{repo}@{}", img.manifest.digest)
}

/// Polls `list_owned` until container `id` is in `state`.
pub async fn wait_for_state(
    backend: &dyn ContainerRuntime,
    id: &str,
    state: RunState,
    limit: Duration,
) -> ContainerInfo {
    let deadline = Instant::now() + limit;
    loop {
        let owned = backend.list_owned().await.unwrap();
        if let Some(c) = owned.into_iter().find(|c| c.id == id) {
            if c.state == state {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "{}: container {id} still {:?}, wanted {state:?}",
                backend.name(),
                c.state
            );
        } else {
            assert!(Instant::now() < deadline, "{}: container {id} not listed as owned", backend.name());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `logs` until a line with `text` shows up.
pub async fn wait_for_log(backend: &dyn ContainerRuntime, id: &str, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let lines = backend.logs(id, None).await.unwrap();
        if lines.iter().any(|l| l.text.contains(text)) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: `{text}` not in the logs of {id}: {lines:?}", backend.name());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shared contract. `image` is a pinned busybox image ([`push_busybox`]) in a registry the backend can pull
/// from, `scratch` an empty host dir for the bind mount, `prefix` makes container ids unique per run.
pub async fn same_behaviour(backend: &dyn ContainerRuntime, image: &str, scratch: &Path, prefix: &str) {
    let name = backend.name();
    backend.ensure_image(image).await.unwrap_or_else(|e| panic!("{name}: ensure_image: {e}"));
    std::fs::write(scratch.join("msg.txt"), "from-the-host\n").unwrap();

    // 1. One run: env, args, working dir, host namespaces, a rw bind mount, stdout/stderr, exit code, labels.
    let script = "echo \"$GREETING from $(pwd)\"; cat /data/msg.txt; echo oops >&2; \
                  echo \"ipc=$(readlink /proc/self/ns/ipc) net=$(readlink /proc/self/ns/net)\"; \
                  echo written > /data/out.txt; exit 3";
    // The same deployment file drives every backend: parsed and converted exactly as the agent does.
    let doc = format!(
        r#"
[deployments.contract]
image = "{image}"
command = ["/bin/sh", "-c"]
args = ['{script}']
env = {{ GREETING = "hello" }}
working_dir = "/work"
ipc = "host"
network = "host"
volumes = [{{ host = "{scratch}", container = "/data" }}]
"#,
        scratch = scratch.display()
    );
    let doc = jetship::deploy::document::parse(
        doc.as_bytes(),
        Some(jetship::deploy::document::Format::Toml),
        "contract.toml",
    )
    .unwrap_or_else(|e| panic!("the contract's deployment file: {e}"));
    // The agent's policy step: the scratch folder is an allowed host path, and confine() gives the container
    // the roots its volumes must resolve beneath.
    let policy =
        jetship::config::PolicyConfig { allowed_host_paths: vec![scratch.to_path_buf()], ..Default::default() };
    assert_eq!(jetship::deploy::policy::check(&doc, &policy, scratch), [], "{name}: within policy");
    let mut config = doc.deployments["contract"].container_config("contract", image).unwrap();
    jetship::deploy::policy::confine(&mut config, &policy, scratch);
    assert_eq!((config.ipc, config.network), (IpcMode::Host, NetworkMode::Host));
    let id = format!("{prefix}-run");
    let extra = BTreeMap::from([(labels::DEPLOYMENT.to_owned(), "contract".to_owned())]);
    backend.create(&id, &config, extra).await.unwrap_or_else(|e| panic!("{name}: create: {e}"));
    let created = backend.list_owned().await.unwrap().into_iter().find(|c| c.id == id);
    assert_eq!(created.map(|c| c.state), Some(RunState::Created), "{name}: a created container is listed, not started");
    backend.start(&id).await.unwrap_or_else(|e| panic!("{name}: start: {e}"));
    let done = wait_for_state(backend, &id, RunState::Exited, Duration::from_secs(30)).await;
    assert_eq!(done.exit_code, Some(3), "{name}: exit code");
    assert_eq!(done.labels.get(labels::DEPLOYMENT).map(String::as_str), Some("contract"), "{name}: {:?}", done.labels);
    assert_eq!(done.labels.get(labels::SPEC_HASH), Some(&config.spec_hash()), "{name}: {:?}", done.labels);
    assert_eq!(done.labels.get(labels::IMAGE).map(String::as_str), Some(image), "{name}: {:?}", done.labels);

    let host_ns = |ns: &str| std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap().display().to_string();
    let lines = backend.logs(&id, None).await.unwrap();
    let out: Vec<&str> = lines.iter().filter(|l| l.stream == "stdout").map(|l| l.text.as_str()).collect();
    let err: Vec<&str> = lines.iter().filter(|l| l.stream == "stderr").map(|l| l.text.as_str()).collect();
    let ns_line = format!("ipc={} net={}", host_ns("ipc"), host_ns("net"));
    assert_eq!(out, ["hello from /work", "from-the-host", ns_line.as_str()], "{name}: stdout");
    assert_eq!(err, ["oops"], "{name}: stderr");
    assert!(lines.iter().all(|l| !l.ts.is_empty()), "{name}: every line has a timestamp: {lines:?}");
    assert_eq!(backend.logs(&id, Some(1)).await.unwrap().len(), 1, "{name}: tail 1");
    assert_eq!(std::fs::read_to_string(scratch.join("out.txt")).unwrap(), "written\n", "{name}: bind mount");

    // 2. Stop with grace: PID 1 ignores SIGTERM, so it is killed once the grace is over.
    let stubborn = ContainerConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec!["trap '' TERM; echo ready; while true; do sleep 1; done".into()]),
        ..config.clone()
    };
    let sid = format!("{prefix}-stubborn");
    backend.create(&sid, &stubborn, BTreeMap::new()).await.unwrap();
    backend.start(&sid).await.unwrap();
    wait_for_log(backend, &sid, "ready", Duration::from_secs(20)).await;
    let running = wait_for_state(backend, &sid, RunState::Running, Duration::from_secs(10)).await;
    assert!(running.pid.is_some_and(|p| p > 0), "{name}: a running container has a pid: {running:?}");
    assert!(running.started_at.is_some(), "{name}: started_at: {running:?}");
    let t = Instant::now();
    let code = backend.stop(&sid, Duration::from_secs(2)).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(2), "{name}: stopped after {took:?}, before the 2 s grace");
    assert!(took < Duration::from_secs(15), "{name}: stop took {took:?}");
    assert_eq!(code, Some(137), "{name}: killed by SIGKILL");

    // 3. Remove: gone from what the backend owns.
    for c in [&id, &sid] {
        backend.remove(c).await.unwrap_or_else(|e| panic!("{name}: remove {c}: {e}"));
    }
    let owned = backend.list_owned().await.unwrap();
    assert!(owned.iter().all(|c| c.id != id && c.id != sid), "{name}: removed containers still listed: {owned:?}");
}
