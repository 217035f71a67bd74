//! The container-side attacks of issue 10, each tried against a default agent config and expected to fail:
//! real runc under conmon (native backend) and a private dockerd (Docker backend) pulling hostile images built
//! here from a real docker-registry, and the real `jetship agent` with a real Mosquitto where the attack comes
//! over the network. Containers are configured the way the agent configures them: document, local policy,
//! `policy::confine`. Needs root (scripts/test runs as root).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jetship::config::PolicyConfig;
use jetship::runtime::exec::Capture;
use jetship::runtime::{ContainerConfig, RunState};
use support::backend_contract::{host_arch, wait_for_log, wait_for_state};
use support::backends::Backend;
use support::registry::{self as reg, Blob, Pusher, Registry};

const APPLETS: &[&str] = &[
    "sh", "true", "cat", "echo", "grep", "mknod", "mount", "unshare", "sleep", "rm", "cp", "chmod", "id", "readlink",
    "ls", "tr", "mkdir", "ln", "mv", "test", "[", "printf",
];

/// A tar entry of a test image.
enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, Vec<u8>),
    Link(&'a str, &'a str),
    Fifo(&'a str),
}

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = support::backend_contract::tar_header;
    for e in entries {
        match e {
            Entry::Dir(p, m) => b.append_data(&mut header(tar::EntryType::Directory, *m, 0), p, std::io::empty()),
            Entry::File(p, m, data) => {
                b.append_data(&mut header(tar::EntryType::Regular, *m, data.len() as u64), p, data.as_slice())
            }
            Entry::Link(p, target) => b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), p, target),
            Entry::Fifo(p) => b.append_data(&mut header(tar::EntryType::Fifo, 0o644, 0), p, std::io::empty()),
        }
        .unwrap();
    }
    b.into_inner().unwrap()
}

/// Busybox with the applets above, root and `app` (1000) users; `etc` files replaced by `etc` when given.
fn busybox_entries(etc: Vec<Entry<'static>>) -> Vec<Entry<'static>> {
    let busybox = std::fs::read(support::require_tool("busybox", "busybox-static")).unwrap();
    let mut e = vec![];
    for d in ["bin", "etc", "proc", "sys", "dev", "mnt", "work", "scripts", "data"] {
        e.push(Entry::Dir(d, 0o755));
    }
    e.push(Entry::Dir("tmp", 0o1777));
    e.push(Entry::File("bin/busybox", 0o755, busybox));
    for a in APPLETS {
        e.push(Entry::Link(Box::leak(format!("bin/{a}").into_boxed_str()), "busybox"));
    }
    if etc.is_empty() {
        e.push(Entry::File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/work:/bin/sh\n".to_vec(),
        ));
        e.push(Entry::File("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n".to_vec()));
    }
    e.extend(etc);
    e
}

/// Pushes a one-layer image of `entries` (config user `user`) as `repo` and returns its pinned reference.
async fn push(addr: &str, repo: &str, entries: &[Entry<'_>], user: Option<&str>) -> String {
    let raw = tar_of(entries);
    let diff_id = reg::sha256(&raw);
    let mut cfg = serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]});
    if let Some(u) = user {
        cfg["User"] = serde_json::json!(u);
    }
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = Blob::new("application/vnd.oci.image.config.v1+json", serde_json::to_vec(&config).unwrap());
    let layer = Blob::new("application/vnd.oci.image.layer.v1.tar", raw);
    let img = reg::manifest_for(config, vec![layer], true);
    Pusher::new(addr).image(repo, Some("1"), &img).await;
    format!("{addr}/{repo}@{}", img.manifest.digest)
}

/// Runs `config` as container `id` to its exit; returns its stdout lines.
async fn run_to_exit(b: &Backend, id: &str, config: &ContainerConfig) -> Vec<String> {
    b.run_logs(id, config).await.into_iter().filter(|l| l.stream == "stdout").map(|l| l.text).collect()
}

fn toml_doc(name: &str, image: &str, script: &str, extra: &str) -> String {
    format!(
        "[deployments.{name}]\nimage = \"{image}\"\ncommand = [\"/bin/sh\", \"-c\"]\nargs = ['{script}']\n{extra}\n"
    )
}

// ---- attack 1: the exec health check runs a binary the container replaced --------------------------------------

/// What the replaced /bin/true prints: its own confinement next to the container's main process's (pid 1).
const EVIL_TRUE: &str = r#"#!/bin/sh
echo "uid=$(id -u) env=$SECRET_ENV"
for f in CapEff NoNewPrivs Seccomp; do
  echo "self-$(grep "^$f:" /proc/self/status | tr -d ' \t')"
  echo "main-$(grep "^$f:" /proc/1/status | tr -d ' \t')"
done
echo "self-cgroup=$(cat /proc/self/cgroup | tr '\n' ' ')"
echo "main-cgroup=$(cat /proc/1/cgroup | tr '\n' ' ')"
echo "self-pidns=$(readlink /proc/self/ns/pid) main-pidns=$(readlink /proc/1/ns/pid)"
mknod /tmp/hostdisk b 8 0 2>/dev/null
if mount /tmp/hostdisk /mnt 2>/dev/null || mount -t proc proc /mnt 2>/dev/null; then echo MOUNTED; else echo mount-refused; fi
exit 7
"#;

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

async fn rewritten_bin_true_runs_confined_inside_the_container(b: &Backend, image: &str) {
    let name = b.rt.name();
    let scripts = b.state.join("volumes/evil");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("true"), EVIL_TRUE).unwrap();
    let doc = toml_doc(
        "evil",
        image,
        "rm -f /bin/true && cp /scripts/true /bin/true && chmod 755 /bin/true && echo ready && exec sleep 600",
        &format!(
            "env = {{ SECRET_ENV = \"from-the-container\" }}\nvolumes = [{{ host = \"{}\", container = \"/scripts\", read_only = true }}]\n[deployments.evil.health]\nexec = [\"/bin/true\"]",
            scripts.display()
        ),
    );
    let config = b.as_agent(&doc, "evil", image, &PolicyConfig::default());
    let id = b.id("evil");
    b.rt.create(&id, &config, BTreeMap::new()).await.unwrap();
    b.rt.start(&id).await.unwrap();
    wait_for_log(b.rt.as_ref(), &id, "ready", Duration::from_secs(20)).await;

    // The health check's path: the backend's exec of the deployment's command, output captured.
    let capture = Capture::new(4096);
    let code = b.rt.exec(&id, &["/bin/true".to_owned()], Some(Duration::from_secs(20)), capture.sink()).await.unwrap();
    let out = capture.text();
    assert_eq!(code, 7, "{name}: the exit code of the replaced binary\n{out}");
    assert!(out.contains("uid=0 env=from-the-container"), "{name}: the container's user and environment\n{out}");
    for f in ["CapEff:", "NoNewPrivs:", "Seccomp:"] {
        assert_eq!(field(&out, &format!("self-{f}")), field(&out, &format!("main-{f}")), "{name}: {f}\n{out}");
    }
    let caps = u64::from_str_radix(field(&out, "self-CapEff:"), 16).unwrap();
    assert_eq!(caps & (1 << 21), 0, "{name}: no CAP_SYS_ADMIN\n{out}");
    assert_eq!(field(&out, "self-NoNewPrivs:"), "1", "{name}\n{out}");
    assert_eq!(field(&out, "self-Seccomp:"), "2", "{name}: filtered by the seccomp profile\n{out}");
    assert_eq!(field(&out, "self-cgroup="), field(&out, "main-cgroup="), "{name}: the container's cgroup\n{out}");
    let ns = field(&out, "self-pidns=");
    let (own, main) = ns.split_once(" main-pidns=").unwrap();
    assert_eq!(own, main, "{name}: the container's pid namespace\n{out}");
    assert!(out.contains("mount-refused") && !out.contains("MOUNTED"), "{name}: no mount from the check\n{out}");

    // A check that hangs is killed at its timeout, the container keeps running.
    let t = Instant::now();
    let err =
        b.rt.exec(&id, &["sleep".into(), "60".into()], Some(Duration::from_secs(1)), Capture::new(10).sink()).await;
    assert!(err.unwrap_err().to_string().contains("killed") && t.elapsed() < Duration::from_secs(15), "{name}");
    let still = b.rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(still.state, RunState::Running, "{name}");
    b.rt.stop(&id, Duration::from_millis(200)).await.unwrap();
    b.rt.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_exec_of_a_replaced_bin_true_runs_confined_inside_the_container_native() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::native("attacks", Path::new("/"));
    b.rt.ensure_image(&image).await.unwrap();
    rewritten_bin_true_runs_confined_inside_the_container(&b, &image).await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_exec_of_a_replaced_bin_true_runs_confined_inside_the_container_docker() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::docker("attacks", Path::new("/")).await;
    b.rt.ensure_image(&image).await.unwrap();
    rewritten_bin_true_runs_confined_inside_the_container(&b, &image).await;
    b.cleanup().await;
}

// ---- attack 2: a symlink planted in a volume ------------------------------------------------------------------

async fn planted_symlink_does_not_mount_the_hosts_root(b: &Backend, image: &str) {
    let name = b.rt.name();
    let vol = b.state.join("volumes/app");
    let plant = toml_doc(
        "app",
        image,
        "ln -s / /data/esc && ln -s /etc /data/etc-link && echo planted",
        &format!("volumes = [{{ host = \"{}\", container = \"/data\" }}]", vol.display()),
    );
    let config = b.as_agent(&plant, "app", image, &PolicyConfig::default());
    let lines = run_to_exit(b, &b.id("plant"), &config).await;
    assert_eq!(lines, ["planted"], "{name}");
    assert!(std::fs::symlink_metadata(vol.join("esc")).unwrap().file_type().is_symlink());

    // A second deployment mounting <volume>/esc/... passes the lexical policy check, and is refused at create.
    for (i, host) in [vol.join("esc"), vol.join("esc/etc"), vol.join("etc-link")].iter().enumerate() {
        let doc = toml_doc(
            "thief",
            image,
            "ls /host",
            &format!("volumes = [{{ host = \"{}\", container = \"/host\" }}]", host.display()),
        );
        let config = b.as_agent(&doc, "thief", image, &PolicyConfig::default());
        let id = b.id(&format!("thief{i}"));
        let err = b.rt.create(&id, &config, BTreeMap::new()).await.unwrap_err().to_string();
        assert!(err.contains("symlink") && err.contains(&host.display().to_string()), "{name}: {err}");
        assert!(b.rt.inspect(&id).await.unwrap().is_none(), "{name}: nothing created");
        assert!(!jetship::runtime::mounts::dir(&b.state, &id).exists(), "{name}: nothing staged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_in_a_volume_does_not_mount_the_hosts_root_native() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::native("attacks", Path::new("/"));
    b.rt.ensure_image(&image).await.unwrap();
    planted_symlink_does_not_mount_the_hosts_root(&b, &image).await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_in_a_volume_does_not_mount_the_hosts_root_docker() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::docker("attacks", Path::new("/")).await;
    b.rt.ensure_image(&image).await.unwrap();
    planted_symlink_does_not_mount_the_hosts_root(&b, &image).await;
    b.cleanup().await;
}

/// Swaps `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) {
    nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, a, nix::fcntl::AT_FDCWD, b, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
        .unwrap();
}

/// While a thread keeps exchanging `volumes/app/data` between the real directory and a symlink to a secret
/// host directory, containers mounting `volumes/app/data` are created and list their mount: each either is
/// refused (it saw the symlink) or shows the real directory, never the secret one.
async fn swapped_component_between_check_and_mount_gains_nothing(b: &Backend, image: &str, rounds: usize) {
    let name = b.rt.name();
    let secret = b.state.parent().unwrap().join("host-secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("SECRET"), "host").unwrap();
    let app = b.state.join("volumes/app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    std::fs::write(app.join("data/REAL"), "volume").unwrap();
    std::os::unix::fs::symlink(&secret, app.join("swap")).unwrap();

    // Deterministic: resolved, then swapped before the mount: the staged mount is the resolved directory.
    let req = jetship::runtime::mounts::Request {
        host: app.join("data"),
        container: "/data".into(),
        read_only: true,
        how: jetship::runtime::mounts::Resolve::Beneath { root: b.state.join("volumes") },
    };
    let stage = b.state.parent().unwrap().join("stage-test");
    std::fs::create_dir_all(&stage).unwrap();
    let fd = jetship::runtime::mounts::resolve(&req).unwrap();
    exchange(&app.join("data"), &app.join("swap"));
    let via_fd = std::fs::read_dir(jetship::os::beneath::proc_fd_path(&fd)).unwrap().count();
    assert_eq!(via_fd, 1);
    assert!(jetship::os::beneath::proc_fd_path(&fd).join("REAL").exists(), "the descriptor names the real dir");
    exchange(&app.join("data"), &app.join("swap"));
    drop(fd);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, app) = (stop.clone(), app.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // As long in each state: the resolution meets the real directory and the symlink alike.
                exchange(&app.join("data"), &app.join("swap"));
                n += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            // Leave the real directory in place.
            if std::fs::symlink_metadata(app.join("data")).unwrap().file_type().is_symlink() {
                exchange(&app.join("data"), &app.join("swap"));
            }
            n
        })
    };
    let doc = toml_doc(
        "race",
        image,
        "ls /data",
        &format!(
            "volumes = [{{ host = \"{}\", container = \"/data\", read_only = true }}]",
            app.join("data").display()
        ),
    );
    let config = b.as_agent(&doc, "race", image, &PolicyConfig::default());
    let (mut refused, mut real) = (0, 0);
    for i in 0..rounds {
        let id = b.id(&format!("race{i}"));
        match b.rt.create(&id, &config, BTreeMap::new()).await {
            Err(e) => {
                assert!(e.to_string().contains("symlink"), "{name}: {e}");
                refused += 1;
            }
            Ok(()) => {
                // The Docker backend stages again at start: a swap there is refused the same way.
                if let Err(e) = b.rt.start(&id).await {
                    assert!(e.to_string().contains("symlink"), "{name}: start: {e}");
                    refused += 1;
                    b.rt.remove(&id).await.unwrap();
                    continue;
                }
                wait_for_state(b.rt.as_ref(), &id, RunState::Exited, Duration::from_secs(30)).await;
                let lines: Vec<String> = b.rt.logs(&id, None).await.unwrap().into_iter().map(|l| l.text).collect();
                assert_eq!(lines, ["REAL"], "{name}: the mount is the real directory, never the secret one");
                real += 1;
                b.rt.remove(&id).await.unwrap();
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = flipper.join().unwrap();
    assert!(swaps > rounds as u64, "{name}: the component was swapped {swaps} times");
    assert_eq!(refused + real, rounds);
    assert!(refused > 0, "{name}: the swaps never met a resolution; the race did not run");
    eprintln!("{name}: {rounds} creates during {swaps} swaps: {refused} refused, {real} mounted the real directory");
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_volume_component_for_a_symlink_between_check_and_mount_gains_nothing_native() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::native("attacks", Path::new("/"));
    b.rt.ensure_image(&image).await.unwrap();
    swapped_component_between_check_and_mount_gains_nothing(&b, &image, 20).await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_volume_component_for_a_symlink_between_check_and_mount_gains_nothing_docker() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::docker("attacks", Path::new("/")).await;
    b.rt.ensure_image(&image).await.unwrap();
    swapped_component_between_check_and_mount_gains_nothing(&b, &image, 20).await;
    b.cleanup().await;
}

// ---- attack 4 and 13: no seccomp, no no_new_privs, no pids limit -----------------------------------------------

const NAMESPACES: &str = "unshare -U true && echo userns-made || echo userns-refused; \
    unshare -n true && echo netns-made || echo netns-refused; \
    grep -E \"^(NoNewPrivs|Seccomp):\" /proc/self/status | tr -d \" \\t\"; cat /sys/fs/cgroup/pids/pids.max";

async fn default_container_cannot_make_namespaces(b: &Backend, image: &str) {
    let name = b.rt.name();
    let config = b.as_agent(&toml_doc("ns", image, NAMESPACES, ""), "ns", image, &PolicyConfig::default());
    let lines = run_to_exit(b, &b.id("ns"), &config).await;
    assert_eq!(lines, ["userns-refused", "netns-refused", "NoNewPrivs:1", "Seccomp:2", "4096"], "{name}");

    // The control: the same container with the profile turned off (a policy opt-out) makes a user namespace,
    // so the refusal above is the profile's.
    let loose = PolicyConfig { allow_unconfined_seccomp: true, ..Default::default() };
    let doc = toml_doc("ns", image, NAMESPACES, "seccomp = \"unconfined\"\npids_limit = 100");
    let config = b.as_agent(&doc, "ns", image, &loose);
    let lines = run_to_exit(b, &b.id("ns-loose"), &config).await;
    assert_eq!(lines[0], "userns-made", "{name}: {lines:?}");
    assert!(
        lines.contains(&"Seccomp:0".to_owned()) && lines.last().map(String::as_str) == Some("100"),
        "{name}: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_container_cannot_create_user_or_network_namespaces_native() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::native("attacks", Path::new("/"));
    b.rt.ensure_image(&image).await.unwrap();
    default_container_cannot_make_namespaces(&b, &image).await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_container_cannot_create_user_or_network_namespaces_docker() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::docker("attacks", Path::new("/")).await;
    b.rt.ensure_image(&image).await.unwrap();
    default_container_cannot_make_namespaces(&b, &image).await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_path_cannot_carry_bind_options_on_docker() {
    let registry = Registry::start();
    let image = push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None).await;
    let b = Backend::docker("attacks", Path::new("/")).await;
    b.rt.ensure_image(&image).await.unwrap();
    let vol = b.state.join("volumes/opts");
    let doc = toml_doc(
        "opts",
        image.as_str(),
        "grep \" /in \" /proc/self/mountinfo || echo no-mount-at-in",
        &format!("volumes = [{{ host = \"{}\", container = \"/in:rshared,rw\", read_only = true }}]", vol.display()),
    );
    let config = b.as_agent(&doc, "opts", &image, &PolicyConfig::default());
    let id = b.id("opts");
    match b.rt.create(&id, &config, BTreeMap::new()).await {
        // The daemon may refuse the odd path outright; then nothing was created.
        Err(e) => assert!(b.rt.inspect(&id).await.unwrap().is_none(), "{e}"),
        Ok(()) => {
            let c = support::dockerd::docker_cli(&support::dockerd::shared(), &["inspect", &id]);
            let v: Vec<serde_json::Value> = serde_json::from_str(&c).unwrap();
            let m = &v[0]["Mounts"][0];
            assert_eq!(m["Destination"], "/in:rshared,rw", "the path stays a path: {m}");
            assert_eq!(m["RW"], false, "read-only as asked: {m}");
            assert_eq!(m["Propagation"], "rprivate", "{m}");
            b.rt.remove(&id).await.unwrap();
        }
    }
    b.cleanup().await;
}

// ---- attack 6: hostile /etc/passwd and /etc/group ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hostile_passwd_and_group_files_fail_the_create_fast_with_a_clear_error() {
    let registry = Registry::start();
    let b = Backend::native("attacks", Path::new("/"));
    let group = || Entry::File("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n".to_vec());
    let passwd = || Entry::File("etc/passwd", 0o644, b"root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n".to_vec());
    let cases: Vec<(&str, Vec<Entry<'static>>, &str)> = vec![
        // A symlink to the host's /dev/zero would grow the agent until the OOM killer came.
        ("zero-abs", vec![Entry::Link("etc/passwd", "/dev/zero"), group()], "no user `app`"),
        ("zero-rel", vec![Entry::Link("etc/passwd", "../../../../../../dev/zero"), group()], "no user `app`"),
        // A FIFO would block the executor for ever.
        ("fifo", vec![passwd(), Entry::Fifo("etc/group")], "/etc/group is not a regular file"),
        ("huge", vec![Entry::File("etc/passwd", 0o644, vec![b'x'; 3 << 20]), group()], "/etc/passwd is 3145728 bytes"),
        ("dir", vec![Entry::Dir("etc/passwd", 0o755), group()], "/etc/passwd is not a regular file"),
    ];
    for (tag, etc, want) in cases {
        let image =
            push(&registry.addr, &format!("attacks/hostile-{tag}"), &busybox_entries(etc), Some("app:app")).await;
        b.rt.ensure_image(&image).await.unwrap();
        let config = b.as_agent(&toml_doc("h", &image, "true", ""), "h", &image, &PolicyConfig::default());
        let id = b.id(tag);
        let t = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(30), b.rt.create(&id, &config, BTreeMap::new()))
            .await
            .unwrap_or_else(|_| panic!("{tag}: create hangs"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{tag}: {err}");
        assert!(t.elapsed() < Duration::from_secs(10), "{tag}: took {:?}", t.elapsed());
        assert!(b.rt.inspect(&id).await.unwrap().is_none(), "{tag}: nothing created");
    }
    // An image whose passwd points inside itself still works: the link is resolved in its root.
    let etc = vec![
        Entry::Dir("usr", 0o755),
        Entry::Link("etc/passwd", "/usr/passwd"),
        group(),
        Entry::File("usr/passwd", 0o644, b"app:x:1000:1000::/:/bin/sh\n".to_vec()),
    ];
    let image = push(&registry.addr, "attacks/inside-link", &busybox_entries(etc), Some("app")).await;
    b.rt.ensure_image(&image).await.unwrap();
    let config = b.as_agent(&toml_doc("h", &image, "id -u", ""), "h", &image, &PolicyConfig::default());
    assert_eq!(run_to_exit(&b, &b.id("inside"), &config).await, ["1000"]);
    b.cleanup().await;
}

// ---- through the real agent: refusals naming their key, reported exec output, state dir modes -------------------

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let log = config.with_extension("log");
        let child = Command::new(support::jetship_bin())
            .args(["--config", config.to_str().unwrap(), "agent"])
            .env_remove("JETSHIP_STATE_DIR")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the agent ran keeps running under conmon once the agent is gone: stopped and removed here, with
        // the agent's own config, so no container outlives the test.
        use jetship::runtime::ContainerRuntime;
        let config = self.log.with_extension("toml");
        let Ok(loaded) = jetship::config::load(Some(&config)) else { return };
        use jetship::runtime::oci::{OciBackend, OciSettings};
        let Ok(oci) = OciBackend::new(OciSettings::from_config(&loaded.config)) else { return };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for c in oci.list_owned().await.unwrap_or_default() {
                let _ = oci.stop(&c.id, Duration::from_millis(200)).await;
                let _ = oci.remove(&c.id).await;
            }
        });
    }
}

/// An agent config on the native backend under `dir` with `policy` TOML lines.
fn agent_config(dir: &Path, broker: &support::mosquitto::Mosquitto, id: &str, policy: &str) -> PathBuf {
    let host = support::mosquitto::orin_host_root(dir);
    std::fs::create_dir_all(host.join("dev/shm")).unwrap();
    std::fs::write(host.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    std::fs::write(host.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"{id}\"\nstate_dir = \"{}\"\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n\
             [mqtt]\nurl = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
             [runtime]\nbackend = \"oci\"\noci_runtime = \"runc\"\nrun_dir = \"{}\"\nstop_grace_s = 1\n\
             cgroup_parent = \"/jetship-attacks-{}\"\n[registry]\ndisk_reserve_bytes = 0\n[policy]\n{policy}\n",
            dir.join("state").display(),
            host.display(),
            broker.url(),
            dir.join("run").display(),
            std::process::id(),
        ),
    )
    .unwrap();
    config
}

fn reported(broker: &support::mosquitto::Mosquitto, device: &str) -> serde_json::Value {
    let out = support::jetship(&["status", device, "--json", "--broker", &broker.url()]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).map(|v| v["reported"].clone()).unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn host_network_ipc_root_and_loosened_confinement_are_refused_naming_the_key_that_allows_them() {
    let broker = support::mosquitto::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("att-{:06x}", rand::random::<u32>() & 0xffffff);
    let strict = "allow_host_network = false\nallow_host_ipc = false\nallow_root = false\nallow_exec_health = false";
    let _agent = Agent::start(&agent_config(dir.path(), &broker, &id, strict));
    let topic = format!("jetship/v1/{id}/desired");
    let cases = [
        // The defaults of a document: host network and IPC.
        (
            r#"{"generation":1,"deployments":{"a":{"image":"busybox:1","user":"root"}}}"#,
            vec!["policy.allow_host_network", "policy.allow_host_ipc", "policy.allow_root"],
        ),
        (
            r#"{"generation":2,"deployments":{"a":{"image":"busybox:1","network":"none","ipc":"private","health":{"exec":["true"]}}}}"#,
            vec!["policy.allow_exec_health"],
        ),
        // Beyond the seed: refused by the default keys.
        (
            r#"{"generation":3,"deployments":{"a":{"image":"busybox:1","network":"none","ipc":"private","cap_add":["SYS_ADMIN"],"seccomp":"unconfined","apparmor":"unconfined","no_new_privileges":false,"pids_limit":99999,"gpu":"vendor.example/fpga=0"}}}"#,
            vec![
                "policy.allowed_capabilities",
                "policy.allow_unconfined_seccomp",
                "policy.allow_unconfined_apparmor",
                "policy.allow_new_privileges",
                "policy.pids_limit",
                "policy.allowed_cdi_devices",
            ],
        ),
        // Devices and privileges (issue 13): each widening field names its key.
        (
            r#"{"generation":4,"deployments":{"a":{"image":"busybox:1","network":"none","ipc":"private","privileged":true,"devices":["/dev/ttyACM*"],"group_add":["video"],"sysctls":{"net.ipv4.ping_group_range":"0 1"},"ulimits":["nofile=unlimited"],"cap_drop":["ALL"],"read_only_rootfs":true,"tmpfs":["/run"]}}}"#,
            vec![
                "policy.allow_privileged",
                "policy.allowed_devices",
                "policy.allowed_groups",
                "policy.allowed_sysctls",
                "policy.allow_raised_ulimits",
            ],
        ),
    ];
    for (payload, keys) in cases {
        support::mosquitto::publish(&broker, &topic, payload.as_bytes(), true);
        wait_until(&format!("a refusal naming {keys:?}"), Duration::from_secs(15), || {
            let rep = reported(&broker, &id);
            let reasons: Vec<String> = rep["rejected"]["reasons"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            reasons.len() == keys.len() && keys.iter().all(|k| reasons.iter().any(|r| r.contains(k)))
        });
    }
    let rep = reported(&broker, &id);
    assert!(rep["deployments"].as_object().is_none_or(|d| d.is_empty()), "nothing was run: {rep}");
}

#[test]
fn a_failing_exec_health_check_reports_its_exit_code_and_output() {
    let broker = support::mosquitto::Mosquitto::start();
    let registry = Registry::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let image = rt.block_on(push(&registry.addr, "attacks/busybox", &busybox_entries(vec![]), None));
    let dir = tempfile::tempdir().unwrap();
    let id = format!("att-{:06x}", rand::random::<u32>() & 0xffffff);
    let agent = Agent::start(&agent_config(dir.path(), &broker, &id, ""));
    let scripts = dir.path().join("state/volumes/evil");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("true"),
        "#!/bin/sh\necho \"replaced true ran as $(id -u) in $(readlink /proc/self/ns/pid)\"\nexit 7\n",
    )
    .unwrap();
    let doc = serde_json::json!({"generation": 1, "deployments": {"evil": {
        "image": image,
        "command": ["/bin/sh", "-c"],
        "args": ["rm -f /bin/true && cp /scripts/true /bin/true && chmod 755 /bin/true && exec sleep 600"],
        "volumes": [{"host": scripts, "container": "/scripts", "read_only": true}],
        "restart": "never",
        "health": {"exec": ["/bin/true"], "interval": "1s", "retries": 1, "start_period": "1s"},
    }}});
    support::mosquitto::publish(&broker, &format!("jetship/v1/{id}/desired"), doc.to_string().as_bytes(), true);
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").unwrap().display().to_string();
    let mut last = serde_json::Value::Null;
    wait_until("the unhealthy verdict with the exit code", Duration::from_secs(60), || {
        last = reported(&broker, &id)["deployments"]["evil"].clone();
        last["health"]["reason"].as_str().is_some_and(|r| r.contains("exited with code 7"))
    });
    let reason = last["health"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("replaced true ran as 0 in pid:["),
        "the output reaches reported: {reason}\n{}",
        agent.log()
    );
    assert!(!reason.contains(&host_pidns), "it ran in the container's pid namespace, not the host's: {reason}");
}

#[test]
fn a_state_dir_created_world_readable_is_narrowed_at_agent_start() {
    use std::os::unix::fs::PermissionsExt;
    let broker = support::mosquitto::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("att-{:06x}", rand::random::<u32>() & 0xffffff);
    let config = agent_config(dir.path(), &broker, &id, "");
    let state = dir.path().join("state");
    // What an older jetship (or `jetship run` under umask 022) left: a readable state dir and desired state.
    std::fs::create_dir_all(state.join("desired")).unwrap();
    // Sealed as the store writes it: `<json>\n#sha256:<hex of the json>\n`.
    let json = r#"{"generation":1,"deployments":{}}"#;
    let seal = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json.as_bytes()));
    std::fs::write(state.join("desired/device.json"), format!("{json}\n#sha256:{seal}\n")).unwrap();
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    set(&state, 0o755);
    set(&state.join("desired"), 0o755);
    set(&state.join("desired/device.json"), 0o644);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let agent = Agent::start(&config);
    wait_until("the agent online", Duration::from_secs(15), || !reported(&broker, &id).is_null());
    assert_eq!(mode(&state), 0o700, "{}", agent.log());
    assert_eq!(mode(&state.join("desired")), 0o700);
    assert_eq!(mode(&state.join("desired/device.json")), 0o600);
    let log = agent.log();
    assert!(log.contains("state dir mode narrowed") && log.contains("had mode 0755; set to 0700"), "{log}");
    // What it writes from now on is private too.
    let doc = r#"{"generation":2,"deployments":{}}"#;
    support::mosquitto::publish(&broker, &format!("jetship/v1/{id}/desired"), doc.as_bytes(), true);
    wait_until("generation 2 stored", Duration::from_secs(15), || {
        // The store writes compact JSON (sealed with a checksum, mirrored in device.json.bak).
        std::fs::read_to_string(state.join("desired/device.json"))
            .is_ok_and(|t| t.replace(' ', "").contains("\"generation\":2"))
    });
    assert_eq!(mode(&state.join("desired/device.json")), 0o600);
    assert_eq!(mode(&state.join("desired/device.json.bak")), 0o600);
}

// ---- camera and device paths: the node itself, never what a symlink in its place points to --------------------

#[test]
fn a_symlink_in_place_of_a_camera_node_and_a_foreign_argus_socket_are_refused() {
    use jetship::host::devices::cameras::{self, CameraError};
    assert!(nix::unistd::geteuid().is_root(), "this test makes device nodes and chowns a socket: run as root");
    let host = support::copy_fixture_host("orin-nano-super-jp62");
    let r = host.path();
    for n in 1..4 {
        support::mknod_under(r, &format!("/dev/video{n}"), 81, n, 0o660);
    }
    // video0 is a symlink to a char device (the host's /dev/null here; a disk would do as well).
    let video0 = r.join("dev/video0");
    let _ = std::fs::remove_file(&video0);
    std::os::unix::fs::symlink("/dev/null", &video0).unwrap();
    let err = cameras::edits(r, &["/dev/video0".into()], false).unwrap_err();
    assert!(matches!(&err, CameraError::NotDevice { found, .. } if found == "a symlink"), "{err}");
    assert!(cameras::edits(r, &["/dev/video2".into()], false).is_ok(), "a real node still passes");

    // /tmp is everyone's: a socket a non-root user planted at the argus path is not passed, nor a symlink.
    std::fs::create_dir_all(r.join("tmp")).unwrap();
    let argus = r.join("tmp/argus_socket");
    let _planted = std::os::unix::net::UnixListener::bind(&argus).unwrap();
    std::os::unix::fs::chown(&argus, Some(1000), Some(1000)).unwrap();
    let sel = vec!["/dev/video2".to_string()];
    assert_eq!(cameras::argus_mount(r, true, &sel), None, "a user's socket is not nvargus-daemon's");
    std::fs::remove_file(&argus).unwrap();
    let real = r.join("tmp/real-argus");
    let _daemon = std::os::unix::net::UnixListener::bind(&real).unwrap();
    std::os::unix::fs::symlink(&real, &argus).unwrap();
    assert_eq!(cameras::argus_mount(r, true, &sel), None, "a symlink at the argus path is not followed");
    std::fs::remove_file(&argus).unwrap();
    std::fs::rename(&real, &argus).unwrap();
    assert!(cameras::argus_mount(r, true, &sel).is_some(), "root's own socket is passed");
    // And the staging resolves it again, refusing it once swapped for a user's.
    let req = jetship::runtime::mounts::Request {
        host: argus.clone(),
        container: "/tmp/argus_socket".into(),
        read_only: false,
        how: jetship::runtime::mounts::Resolve::RootSocket { root: r.to_path_buf() },
    };
    assert!(jetship::runtime::mounts::resolve(&req).is_ok());
    std::os::unix::fs::chown(&argus, Some(1000), Some(1000)).unwrap();
    let err = jetship::runtime::mounts::resolve(&req).unwrap_err().to_string();
    assert!(err.contains("not a Unix socket owned by root"), "{err}");
}
