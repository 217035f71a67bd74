//! The Jetson conveniences (`jetson = [...]`) and the camera selector `csi` end to end: a fixture Jetson host
//! (orin-nx-jp512, its CSI sensor and sound/USB nodes mknod'ed, nvargus-daemon's socket and an X server socket
//! played by listeners of this test) given to containers run by real runc under conmon and by a private dockerd,
//! from an image pulled from a real docker-registry. Inside, the files read with the fixture's content and
//! read-only, the sockets connect (socat is the client), the device nodes are there with the host's numbers.
//! Plus `jetship run --jetson`, a document deployed over a real Mosquitto to the real agent, the example
//! document and the policy's refusals. Needs root (scripts/test runs as root).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jetship::config::PolicyConfig;
use jetship::deploy::document::{self, parse, Format};
use jetship::runtime::{ContainerConfig, Error};
use support::backend_contract::host_arch;
use support::backends::Backend;
use support::registry::{self as reg, Blob, Pusher, Registry};

const APPLETS: &[&str] = &["sh", "cat", "echo", "ls", "tr", "stat", "test", "["];

/// A one-layer image: static busybox with [`APPLETS`], and socat with every library `ldd` lists for it at the
/// same paths (a Unix-socket client; busybox has none).
fn image_layer() -> Vec<u8> {
    let busybox = std::fs::read(support::require_tool("busybox", "busybox-static")).unwrap();
    let socat = support::require_tool("socat", "socat");
    let mut b = tar::Builder::new(Vec::new());
    let header = support::backend_contract::tar_header;
    for d in ["bin", "etc", "proc", "sys", "dev", "usr", "usr/bin"] {
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), d, std::io::empty()).unwrap();
    }
    b.append_data(&mut header(tar::EntryType::Directory, 0o1777, 0), "tmp", std::io::empty()).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64), "bin/busybox", &busybox[..])
        .unwrap();
    for a in APPLETS {
        b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), format!("bin/{a}"), "busybox").unwrap();
    }
    let ldd = std::process::Command::new(support::require_tool("ldd", "libc-bin")).arg(&socat).output().unwrap();
    let mut files = vec![socat.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix("/").unwrap();
        for a in rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            dirs.insert(a.to_path_buf());
        }
    }
    for d in dirs.iter().filter(|d| !["usr", "usr/bin"].contains(&d.to_str().unwrap())) {
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), d, std::io::empty()).unwrap();
    }
    for f in &files {
        // Resolved: /lib64/ld-linux-x86-64.so.2 is a symlink on the host, a file in the image.
        let data = std::fs::read(f).unwrap();
        let rel = f.strip_prefix("/").unwrap();
        b.append_data(&mut header(tar::EntryType::Regular, 0o755, data.len() as u64), rel, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

async fn push_image(addr: &str) -> String {
    let raw = image_layer();
    let diff_id = reg::sha256(&raw);
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = Blob::new("application/vnd.oci.image.config.v1+json", serde_json::to_vec(&config).unwrap());
    let img = reg::manifest_for(config, vec![Blob::new("application/vnd.oci.image.layer.v1.tar", raw)], true);
    Pusher::new(addr).image("jetson/socat", Some("1"), &img).await;
    format!("{addr}/jetson/socat@{}", img.manifest.digest)
}

/// The fixture Jetson with live nodes and sockets: the CSI sensor `/dev/video0`, sound and USB nodes,
/// nvargus-daemon's socket and X server `:0` (each a listener that greets and hangs up), `/tmp/.docker.xauth`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = support::copy_fixture_host("orin-nx-jp512");
        let r = dir.path();
        support::mknod_under(r, "/dev/video0", 81, 0, 0o660);
        for (node, minor) in [("controlC0", 0), ("pcmC0D0p", 16), ("timer", 33)] {
            support::mknod_under(r, &format!("/dev/snd/{node}"), 116, minor, 0o660);
        }
        support::mknod_under(r, "/dev/bus/usb/001/001", 189, 0, 0o664);
        support::mknod_under(r, "/dev/bus/usb/001/002", 189, 1, 0o664);
        // Host IPC and network (the documents' defaults) share the host's /dev/shm and name files.
        std::fs::create_dir_all(r.join("dev/shm")).unwrap();
        for (f, content) in
            [("resolv.conf", "nameserver 127.0.0.53\n"), ("hosts", "127.0.0.1 localhost\n"), ("hostname", "orin-nx\n")]
        {
            std::fs::write(r.join("etc").join(f), content).unwrap();
        }
        std::fs::create_dir_all(r.join("tmp/.X11-unix")).unwrap();
        greeter(&r.join("tmp/argus_socket"), "argus-hello");
        greeter(&r.join("tmp/.X11-unix/X0"), "x11-hello");
        std::fs::write(r.join("tmp/.docker.xauth"), "cookie").unwrap();
        Host { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// Listens on `path`; each connection gets `greeting` and is closed. The thread lives as long as the test.
fn greeter(path: &Path, greeting: &'static str) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = writeln!(conn, "{greeting}");
        }
    });
}

/// Runs `config` to its exit; returns its output lines, both streams.
async fn run_to_exit(b: &Backend, name: &str, config: &ContainerConfig) -> String {
    b.run_logs(&b.id(name), config).await.into_iter().map(|l| l.text.trim_end().to_owned() + "\n").collect()
}

fn all_allowed() -> PolicyConfig {
    PolicyConfig { allowed_jetson: jetship::base::jetson::Convenience::ALL.to_vec(), ..Default::default() }
}

/// What the container prints: each convenience's files, environment, nodes and sockets.
const SCRIPT: &str = "echo \"release=$(cat /etc/nv_tegra_release)\"; \
echo model=$(tr -d '\\000' < /tmp/nv_jetson_model); \
echo localtime=$(cat /etc/localtime) timezone=$(cat /etc/timezone) enctune=$(cat /etc/enctune.conf); \
echo display=$DISPLAY xauthority=$XAUTHORITY cookie=$(cat $XAUTHORITY); \
echo snd=$(ls /dev/snd | tr '\\n' ' ') usb=$(ls /dev/bus/usb/001 | tr '\\n' ' '); \
echo numbers=$(stat -c '%t:%T' /dev/snd/pcmC0D0p /dev/bus/usb/001/002 /dev/video0 | tr '\\n' ' '); \
echo argus=$(socat -u UNIX-CONNECT:/tmp/argus_socket -); \
echo x11=$(socat -u UNIX-CONNECT:/tmp/.X11-unix/X0 -); \
(echo x >> /etc/nv_tegra_release) 2>/dev/null && echo release-WRITABLE || echo release-read-only; \
(echo x > /tmp/.X11-unix/X9) 2>/dev/null && echo x11-WRITABLE || echo x11-read-only";

fn document(image: &str) -> String {
    format!(
        "[deployments.jet]\nimage = \"{image}\"\ncommand = [\"/bin/sh\", \"-c\"]\nargs = [\"{}\"]\n\
         cameras = [\"csi\"]\njetson = [\"argus\", \"display\", \"audio\", \"usb\", \"localtime\", \"l4t-release\", \"model\"]\n",
        SCRIPT.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

async fn conveniences_reach_the_container(b: &Backend, host: &Host, image: &str) {
    let name = b.rt.name();
    b.rt.ensure_image(image).await.unwrap();
    let out = run_to_exit(b, "all", &b.as_agent(&document(image), "jet", image, &all_allowed())).await;
    let want = [
        "release=# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023",
        "model=NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
        "localtime=TZif2 (fixture: Europe/Berlin) timezone=Europe/Berlin enctune=# fixture: encoder tuning of the board (contents vary by board)",
        "display=:0 xauthority=/tmp/.docker.xauth cookie=cookie",
        "snd=controlC0 pcmC0D0p timer usb=001 002",
        "numbers=74:10 bd:1 51:0",
        "argus=argus-hello",
        "x11=x11-hello",
        "release-read-only",
        "x11-read-only",
    ];
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, want, "{name}: what the container sees:\n{out}");

    // What the host lacks is refused before anything is created, naming the convenience: no X server.
    let x11 = host.root().join("tmp/.X11-unix");
    std::fs::rename(&x11, host.root().join("tmp/x11-away")).unwrap();
    let config = b.as_agent(&document(image), "jet", image, &all_allowed());
    let err = b.rt.create(&format!("{}-nox", b.prefix), &config, BTreeMap::new()).await.unwrap_err();
    assert!(matches!(err, Error::Jetson(_)), "{name}: {err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`display`") && msg.contains("/tmp/.X11-unix") && msg.contains("X server"), "{name}: {msg}");
    // A symlink in its place (any user can write /tmp) is refused too, not followed.
    std::os::unix::fs::symlink(host.root().join("tmp/x11-away"), &x11).unwrap();
    let msg = b.rt.create(&format!("{}-link", b.prefix), &config, BTreeMap::new()).await.unwrap_err().to_string();
    assert!(msg.contains("`display`") && msg.contains("symlink"), "{name}: {msg}");
    std::fs::remove_file(&x11).unwrap();
    std::fs::rename(host.root().join("tmp/x11-away"), &x11).unwrap();
    assert!(b.rt.list_owned().await.unwrap().iter().all(|c| !c.id.starts_with(&b.prefix)), "{name}: nothing made");
}

#[tokio::test(flavor = "multi_thread")]
async fn conveniences_reach_the_container_native() {
    let registry = Registry::start();
    let image = push_image(&registry.addr).await;
    let host = Host::new();
    let b = Backend::native("jetson", host.root());
    conveniences_reach_the_container(&b, &host, &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conveniences_reach_the_container_docker() {
    let registry = Registry::start();
    let image = push_image(&registry.addr).await;
    let host = Host::new();
    let b = Backend::docker("jetson", host.root()).await;
    conveniences_reach_the_container(&b, &host, &image).await;
}

/// `cameras = ["csi"]`: only the CSI sensor's node, nvargus-daemon's socket, and a refusal while the daemon is
/// down; on a host whose only camera is a USB webcam the deployment waits for a CSI camera.
async fn csi_selector_needs_a_csi_camera_and_the_daemon(b: &Backend, host: &Host, image: &str) {
    let name = b.rt.name();
    b.rt.ensure_image(image).await.unwrap();
    let doc = |script: &str| {
        format!(
            "[deployments.jet]\nimage = \"{image}\"\ncommand = [\"/bin/sh\", \"-c\"]\nargs = [\"{script}\"]\ncameras = [\"csi\"]\n"
        )
    };
    let script = "ls /dev | grep video; socat -u UNIX-CONNECT:/tmp/argus_socket -";
    let config = b.as_agent(&doc(script), "jet", image, &PolicyConfig::default());
    let out = run_to_exit(b, "csi", &config).await;
    assert_eq!(out, "video0\nargus-hello\n", "{name}");

    // The daemon stopped: its socket file stays, nobody answers.
    let sock = host.root().join("tmp/argus_socket");
    std::fs::remove_file(&sock).unwrap();
    drop(UnixListener::bind(&sock).unwrap());
    let err = b.rt.create(&format!("{}-down", b.prefix), &config, BTreeMap::new()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Camera(jetship::host::devices::cameras::CameraError::ArgusDown { .. })),
        "{name}: {msg}"
    );
    assert!(msg.contains("nvargus-daemon does not answer") && msg.contains("systemctl"), "{name}: {msg}");
    std::fs::remove_file(&sock).unwrap();
    greeter(&sock, "argus-hello");

    // A host with USB webcams only: the CSI selector matches nothing and the deployment waits.
    let usb_host = support::copy_fixture_host("orin-nano-super-jp62");
    let facts = jetship::host::probe::probe(usb_host.path(), &b.state);
    assert!(facts.cameras.iter().all(|c| c.interface == jetship::host::devices::cameras::CameraInterface::Usb));
    let err = jetship::host::devices::cameras::edits(usb_host.path(), &["csi".into()], true).unwrap_err();
    assert!(
        matches!(&err, jetship::host::devices::cameras::CameraError::Missing { selector } if selector == "csi"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csi_selector_needs_a_csi_camera_and_the_daemon_native() {
    let registry = Registry::start();
    let image = push_image(&registry.addr).await;
    let host = Host::new();
    let b = Backend::native("jetson", host.root());
    csi_selector_needs_a_csi_camera_and_the_daemon(&b, &host, &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csi_selector_needs_a_csi_camera_and_the_daemon_docker() {
    let registry = Registry::start();
    let image = push_image(&registry.addr).await;
    let host = Host::new();
    let b = Backend::docker("jetson", host.root()).await;
    csi_selector_needs_a_csi_camera_and_the_daemon(&b, &host, &image).await;
}

#[test]
fn display_audio_and_usb_are_refused_by_the_default_policy_naming_the_key() {
    let doc = parse(
        b"[deployments.jet]\nimage = \"busybox\"\njetson = [\"argus\", \"display\", \"audio\", \"usb\", \"localtime\", \"l4t-release\", \"model\"]\n",
        Some(Format::Toml),
        "t",
    )
    .unwrap();
    let state = Path::new("/var/lib/jetship");
    let problems = jetship::deploy::policy::check(&doc, &PolicyConfig::default(), state);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["deployments.jet.jetson[1]", "deployments.jet.jetson[2]", "deployments.jet.jetson[3]"]);
    for (p, name) in problems.iter().zip(["display", "audio", "usb"]) {
        assert!(p.message.contains(&format!("policy.allowed_jetson to include \"{name}\"")), "{}", p.message);
    }
    assert_eq!(jetship::deploy::policy::check(&doc, &all_allowed(), state), []);

    // A device that takes even the argus socket away refuses `argus` and the `csi` selector.
    let no_argus = PolicyConfig { allowed_jetson: vec![], ..all_allowed() };
    let doc = parse(b"[deployments.jet]\nimage = \"busybox\"\ncameras = [\"csi\"]\n", Some(Format::Toml), "t").unwrap();
    let problems = jetship::deploy::policy::check(&doc, &no_argus, state);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "deployments.jet.cameras[0]");
    assert!(problems[0].message.contains("\"argus\""), "{}", problems[0].message);

    // An unknown name is a parse error that lists the valid ones.
    let err = parse(b"[deployments.jet]\nimage = \"busybox\"\njetson = [\"x11\"]\n", Some(Format::Toml), "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("x11") && err.contains("l4t-release"), "{err}");
}

#[test]
fn run_refuses_an_unknown_convenience_listing_the_valid_ones() {
    let out = support::jetship(&["run", "--jetson", "argus,x11", "busybox"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`x11` is not a Jetson convenience") && err.contains("l4t-release"), "{err}");
}

#[test]
fn yolo_csi_example_is_valid_and_within_the_default_policy() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/yolo-csi.toml");
    let doc = document::read_file(&path).unwrap_or_else(|e| panic!("examples/yolo-csi.toml must validate: {e}"));
    assert_eq!(doc.generation, None, "deploy fills the generation in");
    let d = &doc.deployments["yolo-csi"];
    assert_eq!((d.gpu.0.as_deref(), d.cameras.as_slice()), (Some("all"), &["csi".to_string()][..]));
    assert!(d.image.contains("{jetpack_major}"));
    assert!(d.args.as_ref().unwrap()[0].contains("nvarguscamerasrc"));
    let state = Path::new(jetship::config::DEFAULT_STATE_DIR);
    assert_eq!(jetship::deploy::policy::check(&doc, &PolicyConfig::default(), state), []);
    // The policy lines its comment shows are what `display` would need.
    let text = std::fs::read_to_string(&path).unwrap();
    let shown: Vec<&str> =
        text.lines().skip_while(|l| *l != "#   [policy]").skip(1).map_while(|l| l.strip_prefix("#   ")).collect();
    assert!(!shown.is_empty(), "the example shows the policy keys it needs");
    let shown = shown.join("\n");
    let policy: PolicyConfig = toml::from_str(&shown).unwrap_or_else(|e| panic!("the commented keys parse: {e}"));
    let mut with_display = doc.clone();
    with_display.deployments.get_mut("yolo-csi").unwrap().jetson.push(jetship::base::jetson::Convenience::Display);
    assert_eq!(jetship::deploy::policy::check(&with_display, &PolicyConfig::default(), state).len(), 1);
    assert_eq!(jetship::deploy::policy::check(&with_display, &policy, state), []);
}

#[tokio::test(flavor = "multi_thread")]
async fn jetship_run_with_jetson_and_the_csi_camera_native() {
    assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
    support::require_tool("conmon", "conmon");
    support::require_tool("runc", "runc");
    let registry = Registry::start();
    let image = push_image(&registry.addr).await;
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\ndevice_id = \"jetson-run\"\n[registry]\ndisk_reserve_bytes = 0\n[host]\nroot = \"{}\"\n\
             [runtime]\nbackend = \"oci\"\nrun_dir = \"{}\"\nstop_grace_s = 1\ncgroup_parent = \"/jetship-jetson-run-{}\"\n",
            dir.path().join("state").display(),
            host.root().display(),
            dir.path().join("run").display(),
            std::process::id()
        ),
    )
    .unwrap();
    let script = "cat /etc/nv_tegra_release; tr -d '\\000' < /tmp/nv_jetson_model; echo; ls /dev | grep video; \
                  socat -u UNIX-CONNECT:/tmp/argus_socket -";
    let out = support::jetship_with_config(
        &config,
        &["run", "--rm", "--camera", "csi", "--jetson", "l4t-release,model", &image, "sh", "-c", script],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout,
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n\
         NVIDIA Jetson Orin NX Engineering Reference Developer Kit\nvideo0\nargus-hello\n"
    );
}

/// Through the fleet: a document with `jetson` deployed over MQTT to the real agent (Docker backend) converges
/// with the host's release file in the container; one asking for `usb` is rejected naming the policy key, and
/// the running deployment stays.
#[test]
fn deployed_over_mqtt_the_agent_passes_the_conveniences_and_refuses_usb_by_policy() {
    use support::device::*;
    use support::mosquitto::Mosquitto;
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    push(&registry, "v1", "one");
    let device = Device::new(&broker, &registry.addr);
    let agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let doc = deployment("jet", &image, "$(cat /etc/nv_tegra_release)", PASSES).replacen(
        "command =",
        "jetson = [\"l4t-release\", \"model\"]\ncommand =",
        1,
    );
    let out = deploy(&broker, &device, &device.write_doc("jet.toml", &doc));
    assert!(out.status.success(), "{}\nagent log:\n{}", text(&out), agent.log());
    let logs = support::jetship(&["logs", &device.id, "jet", "--tail", "5", "--broker", &broker.url()]);
    assert!(text(&logs).contains("R36 (release), REVISION: 4.3"), "{}", text(&logs));

    let usb = doc.replacen("[\"l4t-release\", \"model\"]", "[\"usb\"]", 1).replacen(
        "[deployments.jet]",
        "generation = 7\n[deployments.jet]",
        1,
    );
    let out = support::jetship(&[
        "deploy",
        &device.id,
        "-f",
        device.write_doc("usb.toml", &usb).to_str().unwrap(),
        "--broker",
        &broker.url(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the usb document rejected", Duration::from_secs(20), || {
        let rep = reported(&broker, &device.id);
        let reasons = rep["rejected"]["reasons"].as_array().cloned().unwrap_or_default();
        reasons
            .iter()
            .filter_map(|r| r.as_str())
            .any(|r| r.contains("deployments.jet.jetson[0]") && r.contains("policy.allowed_jetson to include \"usb\""))
    });
    let rep = reported(&broker, &device.id);
    assert_eq!(rep["deployments"]["jet"]["state"], "running", "{rep}");
}
