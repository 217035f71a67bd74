//! The native OCI backend end to end: a busybox-based image pushed to a real docker-registry, pulled, unpacked
//! into snapshots, mounted as an overlay and run by real runc under conmon, through `jetship run` (the real
//! binary) and through the backend API. GPU and camera nodes come from fixture host trees with mknod'ed nodes.
//! Needs root (scripts/test runs as root).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jetship::runtime::conmon::{OciRuntime, Paths, Supervisor};
use jetship::runtime::oci::{OciBackend, OciSettings};
use jetship::runtime::{self, labels, ContainerConfig, ContainerRuntime, Error, RunState};
use support::registry::{self as reg, Blob, Pusher, Registry};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "pwd", "env", "sleep", "usleep", "stat", "ls", "readlink", "nc", "test", "[", "seq",
    "head", "yes", "true", "false", "printf", "touch", "grep", "tr",
];

/// One layer: static busybox with applet links, passwd/group with an `app` user, /work owned by it.
fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox is needed: apt-get install busybox-static");
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "proc", "sys", "dev"] {
        dir(&mut b, d, 0o755, 0);
    }
    dir(&mut b, "tmp", 0o1777, 0);
    dir(&mut b, "work", 0o755, 1000);
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    file(&mut b, "bin/busybox", 0o755, &busybox);
    file(&mut b, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/work:/bin/sh\n");
    file(&mut b, "etc/group", 0o644, b"root:x:0:\napp:x:1000:\n");
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox").unwrap();
    }
    b.into_inner().unwrap()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test image for {other}"),
    }
}

/// Pushes the busybox image as `test/busybox:1` and returns its reference.
fn push_busybox(addr: &str) -> String {
    let layer = busybox_layer();
    let diff_id = reg::sha256(&layer);
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "FROM_IMAGE=1", "MODE=image"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo image-cmd"],
            "WorkingDir": "/work",
            "User": "app"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    });
    let config = Blob::new("application/vnd.oci.image.config.v1+json", serde_json::to_vec(&config).unwrap());
    let layer = Blob::new("application/vnd.oci.image.layer.v1.tar", layer);
    let img = reg::manifest_for(config, vec![layer], true);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Pusher::new(addr).image("test/busybox", Some("1"), &img));
    format!("{addr}/test/busybox:1")
}

/// A registry with the image, a state dir, a run dir, an agent config, and (optionally) a fixture host root.
struct Env {
    dir: tempfile::TempDir,
    registry: Option<Registry>,
    image: String,
    config: PathBuf,
    state: PathBuf,
    run_dir: PathBuf,
    host: PathBuf,
}

impl Env {
    fn new(fixture: Option<&str>, extra_toml: &str) -> Env {
        assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
        support::require_tool("conmon", "conmon");
        support::require_tool("runc", "runc");
        let registry = Registry::start();
        let image = push_busybox(&registry.addr);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let run_dir = dir.path().join("run");
        let host = match fixture {
            Some(name) => {
                let host = dir.path().join("host");
                support::copy_tree(&support::fixture_host(name), &host);
                // What the container shares from the host in host network/IPC mode.
                std::fs::create_dir_all(host.join("dev/shm")).unwrap();
                std::fs::write(host.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
                std::fs::write(host.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
                host
            }
            None => PathBuf::from("/"),
        };
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\ndevice_id = \"test-device\"\n[registry]\ndisk_reserve_bytes = 0\nretries = 1\nretry_backoff_cap_s = 0.2\n\
                 [host]\nroot = \"{}\"\n[runtime]\nrun_dir = \"{}\"\nstop_grace_s = 2\ncgroup_parent = \"/jetship-test-{}\"\n{extra_toml}\n",
                state.display(),
                host.display(),
                run_dir.display(),
                std::process::id()
            ),
        )
        .unwrap();
        Env { dir, registry: Some(registry), image, config, state, run_dir, host }
    }

    fn jetship(&self, args: &[&str]) -> Output {
        support::jetship_with_config(&self.config, args).output().unwrap()
    }

    fn cfg(&self) -> jetship::config::Config {
        jetship::config::load(Some(&self.config)).unwrap().config
    }

    fn backend(&self) -> OciBackend {
        OciBackend::new(OciSettings::from_config(&self.cfg())).unwrap()
    }

    fn mounted_under_state(&self) -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let needle = self.state.to_string_lossy().into_owned();
        info.lines().filter(|l| l.contains(&needle)).map(str::to_owned).collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Containers first (their processes), then the overlays, so the temp dir can go.
        let paths = Paths { containers: self.state.join("containers"), run: self.run_dir.clone() };
        if let Ok(runc) = OciRuntime::choose("runc") {
            if let Ok(sup) = Supervisor::new(None, runc, paths, 4096) {
                for c in sup.list().unwrap_or_default() {
                    let _ = sup.stop(&c.meta.id, Duration::from_millis(100));
                    let _ = sup.remove(&c.meta.id);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.state.join("bundles")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = &self.dir;
    }
}

fn mknod(root: &Path, abs: &str, major: u64, minor: u64) {
    support::mknod_under(root, abs, major, minor, 0o666);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn stdout_lines(out: &Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_owned).collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

// ---- jetship run ----------------------------------------------------------------------------------------------

#[test]
fn run_applies_image_config_and_overrides_and_propagates_the_exit_code_and_rm_cleans_up() {
    let env = Env::new(None, "");
    let out = env.jetship(&["run", "--rm", &env.image]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), ["image-cmd"], "the image's entrypoint + cmd");

    let script = "echo mode=$MODE from_image=$FROM_IMAGE extra=$EXTRA; echo cwd=$(pwd); echo ids=$(id -u):$(id -g); \
                  echo to-err >&2; exit 3";
    let out = env.jetship(&["run", "--rm", "-e", "MODE=cli", "-e", "EXTRA=x y", "-w", "/tmp", &env.image, script]);
    assert_eq!(out.status.code(), Some(3), "exit code propagates; stderr: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), ["mode=cli from_image=1 extra=x y", "cwd=/tmp", "ids=1000:1000"]);
    assert!(text(&out.stderr).contains("to-err"), "{}", text(&out.stderr));

    let out = env.jetship(&["run", "--rm", "-u", "0:0", &env.image, "echo ids=$(id -u):$(id -g) cwd=$(pwd)"]);
    assert_eq!(stdout_lines(&out), ["ids=0:0 cwd=/work"], "stderr: {}", text(&out.stderr));

    // --rm: no container record, no bundle, no mount left.
    // (`containers/.lock` is the backend's lock, not a container.)
    let left: Vec<_> = std::fs::read_dir(env.state.join("containers"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let bundles: Vec<_> = std::fs::read_dir(env.state.join("bundles")).unwrap().flatten().collect();
    assert!(bundles.is_empty(), "{bundles:?}");
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());

    // Without --rm the exited container stays, with its labels.
    let out = env.jetship(&["run", "--name", "kept", &env.image, "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    let owned = block_on(env.backend().list_owned()).unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!((owned[0].id.as_str(), owned[0].state, owned[0].exit_code), ("kept", RunState::Exited, Some(5)));
    assert_eq!(owned[0].labels[labels::DEPLOYMENT], "kept");
    assert!(owned[0].labels[labels::IMAGE].contains("/test/busybox:1@sha256:"), "{:?}", owned[0].labels);
}

#[test]
fn run_shares_the_host_ipc_and_network_by_default() {
    let env = Env::new(None, "");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let script = format!(
        "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net; echo hello-from-container | nc 127.0.0.1 {port}"
    );
    let out = env.jetship(&["run", "--rm", &env.image, &script]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines = stdout_lines(&out);
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap().to_string_lossy().into_owned();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned();
    assert_eq!(lines[..2], [host_ipc.clone(), host_net.clone()]);
    assert_eq!(accept.join().unwrap().trim(), "hello-from-container", "reached the host's 127.0.0.1");

    let out = env.jetship(&[
        "run",
        "--rm",
        "--ipc",
        "private",
        "--network",
        "none",
        &env.image,
        "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines = stdout_lines(&out);
    assert_ne!(lines[0], host_ipc);
    assert_ne!(lines[1], host_net);
}

// ---- GPU ------------------------------------------------------------------------------------------------------

const JP6_LIBS: &str = "/usr/lib/aarch64-linux-gnu/nvidia";

const ORIN_NODES: [(&str, u64, u64); 13] = [
    ("/dev/nvidiactl", 195, 255),
    ("/dev/nvmap", 10, 125),
    ("/dev/nvhost-ctrl-gpu", 492, 0),
    ("/dev/nvhost-as-gpu", 492, 1),
    ("/dev/host1x-fence", 497, 0),
    ("/dev/nvsciipc", 490, 0),
    ("/dev/v4l2-nvenc", 81, 10),
    ("/dev/v4l2-nvdec", 81, 11),
    ("/dev/nvidia0", 195, 0),
    ("/dev/nvgpu/igpu0/ctrl", 507, 0),
    ("/dev/nvgpu/igpu0/as", 507, 1),
    ("/dev/nvgpu/igpu0/channel", 507, 2),
    ("/dev/nvgpu/igpu0/tsg", 507, 3),
];

/// The Orin Nano JetPack 6.2 fixture with a usable CDI spec: nodes, libraries and the hook program in place.
fn orin_gpu_env(mode: &str) -> Env {
    let env = Env::new(Some("orin-nano-super-jp62"), &format!("[gpu]\nmode = \"{mode}\"\n"));
    let r = &env.host;
    for (p, ma, mi) in ORIN_NODES {
        mknod(r, p, ma, mi);
    }
    for lib in ["libcuda.so.1.1", "libnvrm_gpu.so", "libnvidia-ptxjitcompiler.so.540.4.0"] {
        let p = r.join(JP6_LIBS.trim_start_matches('/')).join(lib);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("placeholder {lib}")).unwrap();
    }
    let hook = r.join("usr/bin/nvidia-cdi-hook");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = r.join("etc/cdi/nvidia.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let declared = text.replace(
        "    - path: /dev/nvgpu/igpu0/ctrl\n",
        "    - path: /dev/nvgpu/igpu0/ctrl\n      hostPath: /dev/nvgpu/igpu0/ctrl\n      type: c\n      major: 507\n      minor: 0\n      permissions: rw\n",
    );
    assert_ne!(text, declared, "fixture spec changed: update this test");
    std::fs::write(spec, declared).unwrap();
    env
}

#[test]
fn gpu_cdi_nodes_mounts_and_env_reach_the_container_and_a_stale_spec_is_reported() {
    let env = orin_gpu_env("auto");
    let script = format!(
        "stat -c '%n %t:%T' /dev/nvmap /dev/nvgpu/igpu0/ctrl /dev/nvidia0; cat {JP6_LIBS}/libcuda.so.1.1; echo; \
         echo vis=$NVIDIA_VISIBLE_DEVICES"
    );
    let out = env.jetship(&["run", "--rm", "--gpu", &env.image, &script]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // stat prints the numbers in hex: 10:125 = a:7d, 507:0 = 1fb:0, 195:0 = c3:0.
    assert_eq!(
        stdout_lines(&out),
        [
            "/dev/nvmap a:7d",
            "/dev/nvgpu/igpu0/ctrl 1fb:0",
            "/dev/nvidia0 c3:0",
            "placeholder libcuda.so.1.1",
            "vis=void"
        ]
    );

    let out = env.jetship(&["run", "--rm", &env.image, "ls /dev/nvmap 2>&1; echo vis=$NVIDIA_VISIBLE_DEVICES"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines = stdout_lines(&out);
    assert!(lines[0].contains("No such file"), "no GPU without --gpu: {lines:?}");
    assert_eq!(lines[1], "vis=");

    // After a reboot nvgpu came up with another major: the spec is stale, and cdi mode says so.
    mknod(&env.host, "/dev/nvgpu/igpu0/ctrl", 498, 0);
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace("mode = \"auto\"", "mode = \"cdi\"");
    std::fs::write(&env.config, cfg).unwrap();
    let out = env.jetship(&["run", "--rm", "--gpu", &env.image, "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    for part in ["/dev/nvgpu/igpu0/ctrl", "c 507:0", "c 498:0", "nvidia-ctk cdi generate"] {
        assert!(err.contains(part), "{err} lacks {part}");
    }
    let created =
        |d: std::fs::ReadDir| d.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count();
    assert!(std::fs::read_dir(env.state.join("containers")).map_or(true, |d| created(d) == 0), "nothing created");
}

#[test]
fn gpu_nvidia_runtime_mode_runs_the_container_under_that_runtime_with_visible_devices() {
    let env = Env::new(Some("orin-nano-super-jp62"), "[gpu]\nmode = \"nvidia-runtime\"\n");
    // A stand-in nvidia-container-runtime: records that it ran, then hands over to runc as the real one does.
    let marker = env.dir.path().join("nvidia-runtime-ran");
    let runc = support::require_tool("runc", "runc");
    let prog = env.host.join("usr/bin/nvidia-container-runtime");
    std::fs::create_dir_all(prog.parent().unwrap()).unwrap();
    std::fs::write(&prog, format!("#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n", marker.display(), runc.display()))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = env.jetship(&["run", "--name", "nv", "--gpu", &env.image, "echo vis=$NVIDIA_VISIBLE_DEVICES"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), ["vis=all"]);
    let calls = std::fs::read_to_string(&marker).unwrap();
    assert!(calls.contains("create") && calls.contains("start"), "{calls}");
    // Later calls use the same runtime: state is found, removal works.
    let backend = env.backend();
    let owned = block_on(backend.list_owned()).unwrap();
    assert_eq!((owned[0].state, owned[0].exit_code), (RunState::Exited, Some(0)));
    assert!(!owned[0].labels.contains_key(jetship::runtime::oci::RUNTIME_LABEL), "internal key is not a label");
    block_on(backend.remove("nv")).unwrap();
    assert!(calls.len() < std::fs::read_to_string(&marker).unwrap().len(), "delete went through it too");
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());
}

// ---- cameras --------------------------------------------------------------------------------------------------

fn camera_config(env: &Env, cameras: &[&str]) -> ContainerConfig {
    ContainerConfig {
        image: pinned(env),
        args: Some(vec!["ls /dev | grep video | tr '\\n' ' '".into()]),
        cameras: cameras.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn pinned(env: &Env) -> String {
    let store = jetship::image::store::ImageStore::open(&env.state).unwrap();
    store.records().unwrap().into_iter().next().expect("image pulled").resolved
}

fn bundle_devices(env: &Env, id: &str) -> Vec<String> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state.join("bundles").join(id).join("config.json")).unwrap())
            .unwrap();
    spec["linux"]["devices"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn cameras_map_by_all_path_by_id_and_name_and_a_missing_one_waits_for_its_node() {
    let env = Env::new(Some("orin-nano-super-jp62"), "");
    for n in 0..2 {
        mknod(&env.host, &format!("/dev/video{n}"), 81, n);
    }
    // The Sonix camera is not plugged in yet: sysfs lists it but udev made no node.
    for n in 2..4 {
        std::fs::remove_file(env.host.join(format!("dev/video{n}"))).unwrap();
    }
    let out = env.jetship(&["run", "--rm", "--camera", "c920", &env.image, "ls /dev | grep video | tr '\\n' ' '"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "video0 video1", "capture node with its metadata node");

    let out = env.jetship(&["run", "--rm", "--camera", "/dev/video2", &env.image, "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("camera `/dev/video2` is not connected") && err.contains("waits"), "{err}");

    let backend = env.backend();
    let missing = block_on(backend.create("cam-wait", &camera_config(&env, &["/dev/video2"]), BTreeMap::new()));
    assert!(
        matches!(missing, Err(Error::Camera(jetship::host::devices::cameras::CameraError::Missing { .. }))),
        "{missing:?}"
    );
    assert!(!env.state.join("containers/cam-wait").exists() && !env.state.join("bundles/cam-wait").exists());

    // Plugged in: the same request now creates and runs.
    for n in 2..4 {
        mknod(&env.host, &format!("/dev/video{n}"), 81, n);
    }
    block_on(backend.create("cam-wait", &camera_config(&env, &["/dev/video2"]), BTreeMap::new())).unwrap();
    assert_eq!(bundle_devices(&env, "cam-wait"), ["/dev/video2", "/dev/video3"]);
    block_on(backend.start("cam-wait")).unwrap();
    wait_for("cam-wait to exit", Duration::from_secs(10), || {
        block_on(backend.list_owned()).unwrap().iter().any(|c| c.id == "cam-wait" && c.exit_code.is_some())
    });
    let logs = block_on(backend.logs("cam-wait", None)).unwrap();
    assert_eq!(logs.iter().map(|l| l.text.trim()).collect::<Vec<_>>(), ["video2 video3"]);

    for (id, sel, want) in [
        ("cam-all", "all", vec!["/dev/video0", "/dev/video1", "/dev/video2", "/dev/video3"]),
        (
            "cam-byid",
            "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_A1B2C3D4-video-index0",
            vec!["/dev/video0", "/dev/video1"],
        ),
        (
            "cam-bare-id",
            "usb-Sonix_Technology_Co.__Ltd._USB_2.0_Camera_SN0001-video-index0",
            vec!["/dev/video2", "/dev/video3"],
        ),
    ] {
        block_on(backend.create(id, &camera_config(&env, &[sel]), BTreeMap::new())).unwrap();
        assert_eq!(bundle_devices(&env, id), want, "selector {sel}");
    }
    for id in ["cam-wait", "cam-all", "cam-byid", "cam-bare-id"] {
        block_on(backend.remove(id)).unwrap();
    }
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());
}

// ---- adoption, stats, logs ------------------------------------------------------------------------------------

#[test]
fn containers_outlive_their_owner_and_a_new_backend_adopts_them_without_duplicates() {
    let env = Env::new(None, "");
    let out = env.jetship(&["run", "-d", "--name", "detached", &env.image, "sleep 60"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), ["detached"]);

    // A foreground `jetship run` killed with SIGKILL: the container keeps running under conmon.
    let mut owner = Command::new(support::jetship_bin())
        .arg("--config")
        .arg(&env.config)
        .args(["run", "--name", "foreground", &env.image, "echo started; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(owner.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "started");
    owner.kill().unwrap();
    owner.wait().unwrap();

    let backend = env.backend();
    assert_eq!(backend.oci_runtime().name, "runc", "auto picks runc on this hybrid-cgroup host");
    let adopted = block_on(runtime::adopt(&backend)).unwrap();
    let ids: Vec<&str> = adopted.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["detached", "foreground"]);
    for c in &adopted {
        assert_eq!(c.state, RunState::Running, "{c:?}");
        assert!(c.pid.is_some_and(|p| p > 0));
        assert_eq!(c.labels[labels::DEPLOYMENT], c.id);
        assert_eq!(c.labels[labels::AGENT], "test-device");
        assert!(c.labels[labels::IMAGE].contains("@sha256:"));
        assert!(!c.labels[labels::SPEC_HASH].is_empty());
    }

    // No duplicate: the id is taken, by the API and by the CLI.
    let cfg = ContainerConfig { image: adopted[0].labels[labels::IMAGE].clone(), ..Default::default() };
    let dup = block_on(backend.create("detached", &cfg, BTreeMap::new()));
    assert!(matches!(&dup, Err(Error::Supervisor(jetship::runtime::conmon::Error::Exists { .. }))), "{dup:?}");
    let out = env.jetship(&["run", "-d", "--name", "detached", &env.image, "sleep 60"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("already exists"), "{}", text(&out.stderr));
    assert_eq!(block_on(backend.list_owned()).unwrap().len(), 2);

    for id in ["detached", "foreground"] {
        let code = block_on(backend.stop(id, Duration::from_millis(500))).unwrap();
        assert!(code.is_some(), "{id}: {code:?}");
        block_on(backend.remove(id)).unwrap();
    }
    assert!(block_on(backend.list_owned()).unwrap().is_empty());
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());
}

#[test]
fn logs_rotate_at_the_size_limit_through_the_backend() {
    let env = Env::new(None, "log_max_bytes = 4096\n");
    let sig = env.dir.path().join("sig");
    std::fs::create_dir_all(&sig).unwrap();
    let volume = format!("{}:/sig:ro", sig.display());
    // About 5 KiB of log (over the limit, under conmon's own backstop at twice it), then wait for the test.
    let script = "for i in $(seq 1 90); do echo line-$i; done; while [ ! -e /sig/go ]; do usleep 50000; done; \
                  echo after-rotation; sleep 60";
    let out = env.jetship(&["run", "-d", "--name", "chatty", "-v", &volume, &env.image, script]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let backend = env.backend();
    let log = backend.log_path("chatty");
    wait_for("90 lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("line-90")
    });
    assert!(std::fs::metadata(&log).unwrap().len() >= 4096);

    assert_eq!(block_on(backend.rotate_logs()).unwrap(), 1);
    assert!(log.with_extension("log.1").exists());
    std::fs::write(sig.join("go"), "").unwrap();
    wait_for("output after rotation", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("after-rotation")
    });
    assert!(!std::fs::read_to_string(&log).unwrap().contains("line-1\n"), "conmon reopened a fresh file");
    let texts: Vec<String> = block_on(backend.logs("chatty", None)).unwrap().into_iter().map(|l| l.text).collect();
    assert_eq!(texts.first().map(String::as_str), Some("line-1"));
    assert_eq!(texts.last().map(String::as_str), Some("after-rotation"));
    assert_eq!(texts.len(), 91);
    assert_eq!(block_on(backend.rotate_logs()).unwrap(), 0, "under the limit now");
    block_on(backend.stop("chatty", Duration::from_millis(200))).unwrap();
    block_on(backend.remove("chatty")).unwrap();
}

#[test]
fn auto_opens_native_and_without_native_or_docker_lists_what_to_install() {
    let env = Env::new(None, "");
    let mut cfg = env.cfg();
    let b = block_on(runtime::open(&cfg, None)).unwrap();
    assert_eq!(b.name(), "oci");
    // No Docker daemon at this socket: the docker backend says where it looked and what to do.
    cfg.runtime.docker_socket = Some(env.dir.path().join("no-docker.sock"));
    cfg.runtime.backend = jetship::config::BackendChoice::Docker;
    let err = block_on(runtime::open(&cfg, None)).err().unwrap().to_string();
    assert!(err.contains("no-docker.sock") && err.contains("runtime.backend"), "{err}");
    cfg.runtime.backend = jetship::config::BackendChoice::Auto;
    cfg.runtime.conmon = Some(env.dir.path().join("no-conmon"));
    let err = block_on(runtime::open(&cfg, None)).err().unwrap().to_string();
    assert!(err.contains("conmon") && err.contains("runc") && err.contains("docker.io"), "{err}");
}

#[test]
fn sigterm_to_jetship_run_stops_the_container_with_the_grace_period_and_rm_removes_it() {
    let env = Env::new(None, "");
    let script = "trap 'echo got-term; exit 9' TERM; echo ready; while true; do usleep 20000; done";
    let mut child = Command::new(support::jetship_bin())
        .arg("--config")
        .arg(&env.config)
        .args(["run", "--rm", "--name", "trapper", &env.image, script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(9), "the container's own exit code after its TERM handler");
    assert_eq!(rest.trim(), "got-term");
    assert!(!env.state.join("containers/trapper").exists() && !env.state.join("bundles/trapper").exists());
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());
}

#[test]
fn run_uses_the_local_copy_when_the_registry_is_unreachable() {
    let mut env = Env::new(None, "");
    let out = env.jetship(&["run", "--rm", &env.image, "echo online"]);
    assert_eq!(stdout_lines(&out), ["online"], "stderr: {}", text(&out.stderr));
    drop(env.registry.take());
    let out = env.jetship(&["run", "--rm", &env.image, "echo offline"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), ["offline"]);
    assert!(text(&out.stderr).contains("running the local copy"), "{}", text(&out.stderr));
    let out = env.jetship(&["run", "--rm", &env.image.replace("busybox:1", "other:1"), "true"]);
    assert_ne!(out.status.code(), Some(0), "never pulled: no local copy");
    assert!(text(&out.stderr).contains("cannot pull"), "{}", text(&out.stderr));
}

#[test]
fn after_a_reboot_an_owned_container_is_missing_and_can_be_removed_and_recreated() {
    let env = Env::new(None, "");
    let out = env.jetship(&["run", "-d", "--name", "survivor", &env.image, "sleep 60"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let backend = env.backend();
    let before = block_on(backend.inspect("survivor")).unwrap().unwrap();
    assert_eq!(before.state, RunState::Running);

    // A reboot: processes gone, the tmpfs run dir empty, the overlay unmounted; the state dir stays.
    let runc = support::require_tool("runc", "runc");
    let root = format!("--root={}", env.run_dir.join("runc").display());
    let st = Command::new(&runc).args([root.as_str(), "delete", "--force", "survivor"]).status().unwrap();
    assert!(st.success());
    let conmon_pid: i32 =
        std::fs::read_to_string(env.state.join("containers/survivor/conmon.pid")).unwrap().trim().parse().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(conmon_pid), nix::sys::signal::Signal::SIGKILL);
    std::fs::remove_dir_all(&env.run_dir).unwrap();
    nix::mount::umount2(&env.state.join("bundles/survivor/rootfs"), nix::mount::MntFlags::MNT_DETACH).unwrap();

    let after = block_on(runtime::adopt(&env.backend())).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].id.as_str(), after[0].state), ("survivor", RunState::Missing));
    assert_eq!(after[0].labels[labels::DEPLOYMENT], "survivor", "labels survive for the reconciler");

    // The reconciler's way back: remove, create under the same id, start.
    let cfg = ContainerConfig {
        image: after[0].labels[labels::IMAGE].clone(),
        args: Some(vec!["sleep 60".into()]),
        ..Default::default()
    };
    let backend = env.backend();
    block_on(backend.remove("survivor")).unwrap();
    block_on(backend.create("survivor", &cfg, after[0].labels.clone())).unwrap();
    block_on(backend.start("survivor")).unwrap();
    assert_eq!(block_on(backend.inspect("survivor")).unwrap().unwrap().state, RunState::Running);
    block_on(backend.stop("survivor", Duration::from_millis(200))).unwrap();
    block_on(backend.remove("survivor")).unwrap();
    assert_eq!(block_on(backend.inspect("survivor")).unwrap(), None);
    assert_eq!(env.mounted_under_state(), Vec::<String>::new());
}

#[test]
fn the_shared_backend_contract_holds_on_the_native_backend() {
    let env = Env::new(None, "");
    let backend = env.backend();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = env.registry.as_ref().unwrap().addr.clone();
    let image = rt.block_on(support::backend_contract::push_busybox(
        &Pusher::new(&addr),
        &addr,
        "jetship/contract",
        "contract",
    ));
    let scratch = tempfile::tempdir().unwrap();
    rt.block_on(support::backend_contract::same_behaviour(&backend, &image, scratch.path(), "js-contract"));
}

#[test]
fn jetship_exec_runs_in_a_running_container_confined_as_it_is_and_exits_with_the_commands_code() {
    let env = Env::new(None, "");
    let out = env.jetship(&["run", "-d", "--name", "target", "-e", "WHO=container", &env.image, "sleep 60"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let script = "echo \"$(id -u) $WHO $(grep Seccomp: /proc/self/status | tr -d ' \\t')\"; echo to-err >&2; exit 4";
    let out = env.jetship(&["exec", "target", "--", "/bin/sh", "-c", script]);
    assert_eq!(out.status.code(), Some(4), "the command's exit code; stderr: {}", text(&out.stderr));
    // The image's user (app, 1000), the container's environment, its seccomp filter.
    assert_eq!(stdout_lines(&out), ["1000 container Seccomp:2"]);
    assert!(text(&out.stderr).contains("to-err"), "{}", text(&out.stderr));
    // A name that is neither a container nor a deployment here is a clear error.
    let out = env.jetship(&["exec", "nothing-here", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no container `nothing-here`"), "{}", text(&out.stderr));
    let out = env.jetship(&["exec", "--timeout", "1", "target", "--", "sleep", "30"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("killed"), "{}", text(&out.stderr));
}
