//! Smoke suite for the Jetson release binary: the aarch64 build of `scripts/build-aarch64`, run under
//! `qemu-aarch64-static` with the aarch64 glibc of Debian's cross packages (`-L /usr/aarch64-linux-gnu`).
//!
//! The x86-64 binary of this test run is the reference: tests/probe.rs and tests/metrics.rs assert its exact
//! values, so the aarch64 output must equal it field for field, minus what legitimately differs (the moment,
//! the real disk's free space, and the architecture a host tree does not tell, which is the running binary's).
//! A few key facts are asserted directly too, so a bug shared by both builds cannot pass.
//!
//! The binary is taken from `JETSHIP_AARCH64_BIN`, else target/aarch64-unknown-linux-gnu/release/jetship;
//! when it is missing or is not this version, the tests fail saying to run scripts/build-aarch64 (scripts/test
//! builds it first).
//!
//! The loader and libc must come from one package: the machine's multiarch `libc6:arm64` (pulled in by the arm64
//! Rust std) sits in /lib/aarch64-linux-gnu and the host's ld.so.cache names it, so the cross loader of
//! /usr/aarch64-linux-gnu would otherwise load that newer libc.so.6 beside itself, and the two disagree on their
//! private interface: any program hangs at its first pthread_create. The guest's library path is therefore pinned to
//! the cross sysroot (`-E LD_LIBRARY_PATH=...`).
//! An arm64 image's programs would not run here anyway (no binfmt_misc),
//! so the run test uses an amd64 image through the aarch64 binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jetship::image::store::ImageStore;
use serde_json::Value;
use support::mosquitto::{orin_host_root, publish, Mosquitto, Observer};
use support::registry::{self as reg, Compression::Gzip, Pusher, Registry};

/// The newest glibc the binary may need: Ubuntu 18.04 (JetPack 4) ships 2.27.
const GLIBC_FLOOR: (u32, u32) = (2, 27);
/// Where Debian's libc6-arm64-cross puts the aarch64 loader and libc that qemu-user runs the binary with.
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

fn aarch64_bin() -> PathBuf {
    let path = std::env::var_os("JETSHIP_AARCH64_BIN").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/aarch64-unknown-linux-gnu/release/jetship")
    });
    assert!(
        path.is_file(),
        "no aarch64 binary at {}: build it with scripts/build-aarch64 (or set JETSHIP_AARCH64_BIN)",
        path.display()
    );
    path
}

/// `qemu-aarch64-static -L /usr/aarch64-linux-gnu <aarch64 jetship> ARGS`, with the variables that would
/// change the result removed.
fn qemu_jetship(args: &[&str]) -> Command {
    let qemu = support::require_tool("qemu-aarch64-static", "qemu-user-static");
    assert!(
        Path::new(SYSROOT).join("lib/ld-linux-aarch64.so.1").exists(),
        "no aarch64 loader under {SYSROOT}: apt-get install libc6-arm64-cross (scripts/build-aarch64 installs it)"
    );
    let mut cmd = Command::new(qemu);
    // The cross loader with the cross libc, never the multiarch libc6:arm64 the host's ld.so.cache names (see above).
    cmd.arg("-L").arg(SYSROOT).arg("-E").arg(format!("LD_LIBRARY_PATH={SYSROOT}/lib"));
    cmd.arg(aarch64_bin()).args(args);
    clean_env(&mut cmd);
    cmd
}

/// The x86-64 binary of this test run with the same arguments: the reference.
fn native_jetship(args: &[&str]) -> Command {
    let mut cmd = Command::new(support::jetship_bin());
    cmd.args(args);
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    for var in ["L4T_VERSION", "DOCKER_HOST", "JETSHIP_CONFIG", "JETSHIP_STATE_DIR", "JETSHIP_BROKER", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("JETSHIP_CLI_CONFIG", "/nonexistent/cli.toml");
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fixture_hosts() -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts");
    let mut hosts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), p))
        .collect();
    hosts.sort();
    assert!(hosts.len() >= 10, "fixture hosts missing under {}", dir.display());
    hosts
}

/// A state dir config, so `probe`/`metrics` measure a disk that exists and is the same for both binaries.
fn state_config(dir: &Path) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("state_dir = {:?}\n", dir.join("state").to_str().unwrap())).unwrap();
    config
}

#[test]
fn binary_is_aarch64_of_this_version_with_a_glibc_floor_of_2_27() {
    use object::read::elf::{FileHeader, SectionHeader};
    let data = std::fs::read(aarch64_bin()).unwrap();
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data).expect("an ELF64 file");
    let endian = header.endian().unwrap();
    assert_eq!(header.e_machine(endian), object::elf::EM_AARCH64, "not an aarch64 binary");
    let sections = header.sections(endian, &*data).unwrap();
    let mut needed = Vec::new();
    if let Some((mut verneed, link)) = sections.gnu_verneed(endian, &*data).unwrap() {
        let strings = sections.strings(endian, &*data, link).unwrap();
        while let Some((need, mut aux)) = verneed.next().unwrap() {
            let file = String::from_utf8_lossy(need.file(endian, strings).unwrap()).into_owned();
            while let Some(a) = aux.next().unwrap() {
                needed.push((file.clone(), String::from_utf8_lossy(a.name(endian, strings).unwrap()).into_owned()));
            }
        }
    }
    // Interpreter and libraries: only glibc's own, which every JetPack has.
    let interp = sections.iter().find(|s| sections.section_name(endian, s).ok() == Some(b".interp".as_slice()));
    let interp = interp.map(|s| s.data(endian, &*data).unwrap()).expect("a dynamically linked binary has .interp");
    assert_eq!(interp, b"/lib/ld-linux-aarch64.so.1\0");
    let glibc: Vec<(u32, u32)> = needed
        .iter()
        .filter_map(|(_, v)| v.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut p = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((p.next()??, p.next().flatten().unwrap_or(0)))
        })
        .collect();
    assert!(!glibc.is_empty(), "no GLIBC_ version needs found: {needed:?}");
    let newest = glibc.iter().max().unwrap();
    assert!(
        *newest <= GLIBC_FLOOR,
        "the binary needs GLIBC_{}.{}, newer than {}.{} (JetPack 4): build with scripts/build-aarch64 \
         (zig links against glibc 2.27); needs: {needed:?}",
        newest.0,
        newest.1,
        GLIBC_FLOOR.0,
        GLIBC_FLOOR.1
    );
    for (file, _) in &needed {
        assert!(
            ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "ld-linux-aarch64.so.1", "libgcc_s.so.1"]
                .contains(&file.as_str()),
            "unexpected library {file}: {needed:?}"
        );
    }

    let version = run_ok(qemu_jetship(&["--version"]), "jetship --version");
    assert_eq!(
        version.trim(),
        format!("jetship {}", jetship::VERSION),
        "the aarch64 binary is another version than this tree: rebuild it with scripts/build-aarch64"
    );
}

/// Removes what legitimately differs between two runs or two architectures from a probe result.
fn comparable_probe(mut v: Value, native_arch_guess: bool) -> Value {
    v["state_dir_disk"] = Value::Null;
    if native_arch_guess {
        // The tree does not tell its architecture: each binary reports its own, with a warning naming it.
        v["arch"] = Value::Null;
        let warnings = v["warnings"].as_array_mut().unwrap();
        warnings.retain(|w| !w.as_str().unwrap().starts_with("cannot tell the architecture"));
    }
    v
}

#[test]
fn probe_gives_the_same_facts_as_the_x86_build_on_every_fixture_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let cfg = config.to_str().unwrap();
    for (name, root) in fixture_hosts() {
        let root = root.to_str().unwrap();
        let args = ["--config", cfg, "probe", "--root", root, "--json"];
        let arm: Value = serde_json::from_str(&run_ok(qemu_jetship(&args), &format!("aarch64 probe {name}"))).unwrap();
        let x86: Value = serde_json::from_str(&run_ok(native_jetship(&args), &format!("x86 probe {name}"))).unwrap();
        let guessed = x86["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("cannot tell the architecture"));
        if guessed {
            assert_eq!(arm["arch"], "aarch64", "{name}: the aarch64 binary reports its own architecture");
            assert_eq!(x86["arch"], "x86_64", "{name}");
        }
        assert!(arm["state_dir_disk"]["total_bytes"].as_u64().unwrap() > 0, "{name}: {arm}");
        assert_eq!(comparable_probe(arm, guessed), comparable_probe(x86, guessed), "{name}: probe differs");

        // The text form too, but for the free space on the disk line.
        let text_args = ["--config", cfg, "probe", "--root", root];
        let strip = |s: String| -> String {
            s.lines()
                .filter(|l| {
                    !l.starts_with("disk:") && !l.contains("arch ") && !l.contains("cannot tell the architecture")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let arm = strip(run_ok(qemu_jetship(&text_args), &format!("aarch64 probe {name} (text)")));
        let x86 = strip(run_ok(native_jetship(&text_args), &format!("x86 probe {name} (text)")));
        assert_eq!(arm, x86, "{name}: text probe differs");
    }

    // Key facts directly, so a bug both builds share cannot pass.
    let root = support::fixture_host("orin-nano-super-jp62");
    let args = ["--config", cfg, "probe", "--root", root.to_str().unwrap(), "--json"];
    let v: Value = serde_json::from_str(&run_ok(qemu_jetship(&args), "aarch64 probe")).unwrap();
    assert_eq!(v["kind"], "jetson");
    assert_eq!(v["l4t"]["version"], "36.4.3");
    assert_eq!(v["jetpack"], "6.2");
    assert_eq!(v["model"], "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super");
    assert_eq!(v["cuda_arch"], "8.7");
    assert_eq!(v["arch"], "aarch64");
    assert_eq!(v["cpus"], 6);
}

#[test]
fn metrics_give_the_same_sample_as_the_x86_build_on_every_fixture_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let cfg = config.to_str().unwrap();
    let comparable = |mut v: Value| {
        assert!(v["ts_ms"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
        assert!(v["disk"]["total_bytes"].as_u64().unwrap() > 0, "{v}");
        v["ts_ms"] = Value::Null;
        v["disk"] = Value::Null;
        v
    };
    for (name, root) in fixture_hosts() {
        let args = ["--config", cfg, "metrics", "--root", root.to_str().unwrap(), "--json"];
        let arm: Value =
            serde_json::from_str(&run_ok(qemu_jetship(&args), &format!("aarch64 metrics {name}"))).unwrap();
        let x86: Value = serde_json::from_str(&run_ok(native_jetship(&args), &format!("x86 metrics {name}"))).unwrap();
        assert_eq!(comparable(arm), comparable(x86), "{name}: metrics differ");
    }

    let root = support::fixture_host("orin-nano-super-jp62");
    let args = ["--config", cfg, "metrics", "--root", root.to_str().unwrap(), "--json"];
    let v: Value = serde_json::from_str(&run_ok(qemu_jetship(&args), "aarch64 metrics")).unwrap();
    assert_eq!(v["cpu"]["total_pct"], 24.17);
    assert_eq!(v["memory"]["total_bytes"], 7_989_399_552u64);
    assert!(v["power"].as_array().unwrap().iter().any(|r| r["name"] == "VDD_IN"), "{v}");
}

#[test]
fn check_config_accepts_the_documented_default_and_names_a_bad_key() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.toml");
    let args = ["check-config", config.to_str().unwrap()];
    let arm = run_ok(qemu_jetship(&args), "aarch64 check-config config/agent.toml");
    let x86 = run_ok(native_jetship(&args), "x86 check-config config/agent.toml");
    assert_eq!(arm, x86);
    assert!(arm.contains("state_dir = \"/var/lib/jetship\""), "{arm}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[telemetry]\ninterval_secs = 5\n").unwrap();
    let out: Output = qemu_jetship(&["check-config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "a config error exits 78: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("telemetry.interval_secs") && err.contains("interval_s"), "{err}");
}

/// The aarch64 agent under qemu, killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agent_publishes_host_facts_and_telemetry_and_answers_ping() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let host = orin_host_root(dir.path());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"arm-1\"\nstate_dir = \"{}\"\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n\
             [mqtt]\nurl = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n",
            dir.path().join("state").display(),
            host.display(),
            broker.url()
        ),
    )
    .unwrap();
    let obs = Observer::start(&broker, &["jetship/v1/arm-1/#"], false, &[]);
    let log = dir.path().join("agent.log");
    let child = qemu_jetship(&["--config", config.to_str().unwrap(), "agent"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Agent { child, log };

    // qemu translates the binary as it first runs: allow more than the native tests do.
    let limit = Duration::from_secs(30);
    obs.wait_for("online status, host facts and two telemetry samples", limit, |l| {
        l.iter().any(|(t, p)| t.ends_with("/status") && p.contains("\"online\":true"))
            && l.iter().any(|(t, _)| t.ends_with("/host"))
            && l.iter().filter(|(t, _)| t.ends_with("/telemetry")).count() >= 2
    });
    let status = obs.json("jetship/v1/arm-1/status").pop().unwrap();
    assert_eq!(status["agent_version"], jetship::VERSION);
    let facts = obs.json("jetship/v1/arm-1/host").pop().unwrap();
    assert_eq!(facts["model"], "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super");
    assert_eq!(facts["jetpack"], "6.2");
    assert_eq!(facts["arch"], "aarch64");
    let telemetry = obs.json("jetship/v1/arm-1/telemetry").pop().unwrap();
    assert!(telemetry["seq"].as_u64().unwrap() >= 1, "{telemetry}");
    assert!(telemetry.to_string().contains("\"total_bytes\":7989399552"), "the fixture's memory: {telemetry}");

    publish(&broker, "jetship/v1/arm-1/cmd/smoke-ping", br#"{"cmd":"ping"}"#, false);
    obs.wait_for("ping reply", limit, |l| {
        l.iter().any(|(t, p)| t == "jetship/v1/arm-1/reply/smoke-ping" && p.contains("\"ok\":true"))
    });
    // And the x86 controller reaches it the way an operator would.
    let out =
        native_jetship(&["ping", "arm-1", "--broker", &broker.url(), "-c", "1", "--timeout", "10"]).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), agent.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("reply from arm-1"));

    // SIGTERM: a clean shutdown publishes the offline status.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < limit, "agent did not stop on SIGTERM: {}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", agent.log());
    obs.wait_for("offline status", Duration::from_secs(5), |l| {
        l.iter().any(|(t, p)| t.ends_with("/status") && p.contains("\"online\":false"))
    });
}

#[tokio::test]
async fn pull_picks_linux_arm64_from_a_multi_arch_index_by_itself() {
    let registry = Registry::start();
    let amd = reg::image(200, "amd64", &[(150_000, Gzip)], true);
    let arm = reg::image(201, "arm64", &[(200_000, Gzip), (50_000, Gzip)], true);
    let pusher = Pusher::new(&registry.addr);
    for img in [&amd, &arm] {
        pusher.image("multi/app", None, img).await;
    }
    let idx = reg::index(&[(&amd, "amd64", None), (&arm, "arm64", Some("v8"))], true);
    pusher.manifest("multi/app", "v1", &idx).await;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = reg::write_config(dir.path(), &state, "disk_reserve_bytes = 0");
    let image = format!("{}/multi/app:v1", registry.addr);
    // No --platform and no registry.platform: the binary's own platform decides.
    let out = tokio::task::spawn_blocking({
        let (config, image) = (config.clone(), image.clone());
        move || qemu_jetship(&["--config", config.to_str().unwrap(), "pull", &image, "--json"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "aarch64 pull failed: {}", String::from_utf8_lossy(&out.stderr));

    let store = ImageStore::open(&state).unwrap();
    let records = store.records().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let stored = store.image(&records[0].name).unwrap();
    assert_eq!(stored.record.platform, "linux/arm64/v8");
    assert_eq!(stored.record.manifest_digest, arm.manifest.digest);
    assert_eq!(stored.record.index_digest.as_deref(), Some(idx.digest.as_str()));
    assert_eq!(stored.config.architecture().to_string(), "arm64");
    for layer in &arm.layers {
        assert_eq!(store.read_blob(&layer.digest, 1 << 20).unwrap(), layer.data, "layer {}", layer.digest);
    }
    assert!(!store.has_blob(&amd.layers[0].digest), "the amd64 layer must not be fetched");
}

/// Unmounts container root file systems left under a state dir when a test fails half way.
struct StateDir(tempfile::TempDir);

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.path().join("state/bundles")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

#[tokio::test]
async fn run_unpacks_an_image_and_runs_it_under_conmon_and_runc() {
    // The aarch64 binary does the whole native path: pull, unpack into a snapshot, overlay root, OCI spec,
    // conmon + runc (this machine's x86 programs) and the exit code. The image is amd64 (this machine's
    // busybox), because an arm64 program cannot run here without binfmt_misc.
    assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
    support::require_tool("conmon", "conmon");
    support::require_tool("runc", "runc");
    let registry = Registry::start();
    let image =
        support::backend_contract::push_busybox(&Pusher::new(&registry.addr), &registry.addr, "qemu/run", "from-qemu")
            .await;
    let dir = StateDir(tempfile::tempdir().unwrap());
    let config = dir.0.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[registry]\ndisk_reserve_bytes = 0\n[runtime]\nbackend = \"oci\"\noci_runtime = \"runc\"\n\
             run_dir = \"{}\"\nstop_grace_s = 2\n",
            dir.0.path().join("state").display(),
            dir.0.path().join("run").display()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let args = ["--config", config.to_str().unwrap(), "run", "--rm", "--platform", "linux/amd64", &image];
        let mut cmd = qemu_jetship(&args);
        cmd.args(["sh", "-c", "cat /etc/jetship-test; echo; exit 3"]).stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the container's exit code; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-qemu", "the unpacked image's file");
    let snapshots = std::fs::read_dir(dir.0.path().join("state/snapshots")).map(|d| d.count()).unwrap_or(0);
    assert!(snapshots >= 1, "the layer was unpacked into a snapshot");
}
