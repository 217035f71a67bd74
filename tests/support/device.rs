//! A device under test: the real `jetship agent` binary with its own config, state dir and fixture host root,
//! on the Docker backend (the shared test daemon) or the native one (runc under conmon), and the controller
//! commands the tests drive it with. Shared by the deployment and reliability tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::backend_contract::busybox_image;
use super::dockerd::docker_cli;
use super::mosquitto::{orin_host_root, Mosquitto};
use super::registry::{Proxy, Pusher, Registry};

pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        Self::start_with(config, &[])
    }

    /// The agent with extra environment variables (a crash point: `JETSHIP_CRASH_AT`; libfaketime's
    /// `LD_PRELOAD` and `FAKETIME`: preloaded, never through the `faketime` wrapper, which forks and would leave
    /// the agent running when it is killed).
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Agent {
        let log = config.with_extension(format!("log-{:08x}", rand::random::<u32>()));
        let mut cmd = Command::new(super::jetship_bin());
        let child = cmd
            .args(["--config", config.to_str().unwrap(), "agent"])
            .envs(env.iter().copied())
            .env_remove("JETSHIP_STATE_DIR")
            .env_remove("DOCKER_HOST")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child), log }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the agent to exit by itself; its status, `None` while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device: its agent config (Docker backend on the shared test daemon, the registry as insecure), state dir
/// and id.
pub struct Device {
    pub id: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// Runs containers with the native backend (runc under conmon) instead of the Docker daemon.
    pub native: bool,
    /// The native backend's run dir (runc state, conmon sockets): what a reboot clears.
    pub run: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Device {
    /// `registry`: the `host:port` the agent may speak plain HTTP to.
    pub fn new(broker: &Mosquitto, registry: &str) -> Device {
        let socket = super::dockerd::shared();
        let runtime = format!("backend = \"docker\"\ndocker_socket = \"{}\"", socket.display());
        Self::with_runtime(broker, registry, &runtime, socket, false, PathBuf::new())
    }

    /// A device on the native backend: runc under conmon, its run dir in the test's temp dir.
    pub fn native(broker: &Mosquitto, registry: &str) -> Device {
        assert!(nix::unistd::geteuid().is_root(), "native containers need root (scripts/test runs as root)");
        super::require_tool("conmon", "conmon");
        super::require_tool("runc", "runc");
        let run = tempfile::tempdir().unwrap().keep();
        let runtime = format!("backend = \"oci\"\noci_runtime = \"runc\"\nrun_dir = \"{}\"", run.display());
        Self::with_runtime(broker, registry, &runtime, PathBuf::new(), true, run)
    }

    pub fn with_runtime(
        broker: &Mosquitto,
        registry: &str,
        runtime: &str,
        socket: PathBuf,
        native: bool,
        run: PathBuf,
    ) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let id = format!("dep-{:08x}", rand::random::<u32>());
        let host = orin_host_root(dir.path());
        if native {
            // What a native container shares from the host in host network/IPC mode.
            std::fs::create_dir_all(host.join("dev/shm")).unwrap();
            std::fs::write(host.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
            std::fs::write(host.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        }
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "device_id = \"{id}\"\nstate_dir = \"{}\"\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n\
                 [mqtt]\nurl = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nkeep_alive_s = 5\n\
                 [runtime]\n{runtime}\nstop_grace_s = 1\ncgroup_parent = \"/jetship-test-{}\"\n\
                 [registry]\ninsecure = [\"{}\"]\n",
                dir.path().join("state").display(),
                host.display(),
                broker.url(),
                std::process::id(),
                registry,
            ),
        )
        .unwrap();
        Device { id, config, socket, native, run, dir }
    }

    /// The state dir the agent uses.
    pub fn state(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text.lines().find(|l| l.starts_with("state_dir = ")).unwrap();
        PathBuf::from(line.trim_start_matches("state_dir = ").trim_matches('"'))
    }

    /// Moves the state dir to `path` (a small file system of its own) in the config.
    pub fn set_state_dir(&self, path: &Path) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let old = format!("state_dir = \"{}\"", self.state().display());
        std::fs::write(&self.config, text.replace(&old, &format!("state_dir = \"{}\"", path.display()))).unwrap();
    }

    /// Adds `[registry]` keys (the config ends with that table).
    pub fn add_registry_config(&self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(toml);
        text.push('\n');
        std::fs::write(&self.config, text).unwrap();
    }

    /// The fixture host root the agent reads (/proc/sys/kernel/random/boot_id among others).
    pub fn host_root(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    /// The native backend this device's agent uses, opened from the same config (an independent instance).
    pub fn oci(&self) -> jetship::runtime::oci::OciBackend {
        let cfg = jetship::config::load(Some(&self.config)).unwrap().config;
        jetship::runtime::oci::OciBackend::new(jetship::runtime::oci::OciSettings::from_config(&cfg)).unwrap()
    }

    /// Stops a container the way a power cut would leave it: not running.
    pub fn stop(&self, name: &str) {
        if self.native {
            use jetship::runtime::ContainerRuntime;
            block_on(self.oci().stop(name, Duration::from_secs(1))).unwrap();
        } else {
            docker_cli(&self.socket, &["stop", "-t", "1", name]);
        }
    }

    /// Names of this device's containers (running or not), from the Docker CLI, or for the native backend from
    /// runc's state through conmon's records.
    pub fn containers(&self, running_only: bool) -> Vec<String> {
        if self.native {
            use jetship::runtime::{ContainerRuntime, RunState};
            let owned = block_on(self.oci().list_owned()).unwrap();
            let mut names: Vec<String> =
                owned.into_iter().filter(|c| !running_only || c.state == RunState::Running).map(|c| c.id).collect();
            names.sort();
            return names;
        }
        let filter = format!("label=io.jetship.agent={}", self.id);
        let mut args = vec!["ps", "--filter", &filter, "--format", "{{.Names}}"];
        if !running_only {
            args.insert(1, "-a");
        }
        let mut names: Vec<String> = docker_cli(&self.socket, &args).lines().map(str::to_owned).collect();
        names.sort();
        names
    }

    pub fn started_at(&self, name: &str) -> String {
        docker_cli(&self.socket, &["inspect", "--format", "{{.State.StartedAt}}", name]).trim().to_owned()
    }

    pub fn write_doc(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.native {
            use jetship::runtime::ContainerRuntime;
            let oci = self.oci();
            for name in self.containers(false) {
                let _ = block_on(oci.stop(&name, Duration::from_millis(200)));
                let _ = block_on(oci.remove(&name));
            }
            return;
        }
        // Through the backend, as the agent removes them: the Engine's container and the staged bind sources
        // (`docker rm` alone left two mounts behind per run of the Jetson conveniences test).
        use jetship::runtime::ContainerRuntime;
        let cfg = jetship::config::load(Some(&self.config)).unwrap().config;
        let names = self.containers(false);
        let removed = block_on(async {
            let docker = jetship::runtime::docker::connect(&cfg).await.map_err(|e| e.to_string())?;
            for name in &names {
                let _ = docker.stop(name, Duration::from_millis(200)).await;
                docker.remove(name).await.map_err(|e| format!("{name}: {e}"))?;
            }
            Ok::<_, String>(())
        });
        if let Err(e) = removed {
            eprintln!("removing the test's Docker containers: {e}");
            for name in names {
                let _ = Command::new("docker")
                    .args(["-H", &format!("unix://{}", self.socket.display()), "rm", "-f", &name])
                    .output();
            }
        }
    }
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

pub fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn reported(broker: &Mosquitto, device: &str) -> Value {
    let out = super::jetship(&["status", device, "--json", "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["reported"].clone()
}

/// `reported`, or null while the device has published nothing yet.
pub fn reported_soon(broker: &Mosquitto, device: &str) -> Value {
    let out = super::jetship(&["status", device, "--json", "--broker", &broker.url()]);
    serde_json::from_slice::<Value>(&out.stdout).map(|v| v["reported"].clone()).unwrap_or(Value::Null)
}

/// Pushes a busybox image (layer bytes differ by `note`) as `hello:<tag>`; returns its digest.
pub fn push(registry: &Registry, tag: &str, note: &str) -> String {
    let img = busybox_image(note);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Pusher::new(&registry.addr).image("hello", Some(tag), &img));
    img.manifest.digest.clone()
}

pub fn deployment(name: &str, image: &str, say: &str, health: &str) -> String {
    format!(
        "[deployments.{name}]\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\"]\n\
         args = [\"echo {say}; exec sleep 1000\"]\n[deployments.{name}.health]\n{health}\n"
    )
}

pub const PASSES: &str = "running_for = \"1s\"";
/// Port 1 on loopback refuses at once: the health gate fails.
pub const FAILS: &str = "tcp = 1\ninterval = \"1s\"\nretries = 2";

pub fn deploy(broker: &Mosquitto, device: &Device, file: &Path) -> std::process::Output {
    super::jetship(&[
        "deploy",
        &device.id,
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60",
        "--broker",
        &broker.url(),
    ])
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A registry behind a proxy that serves blobs at 300 KB/s, so a pull of the busybox image takes seconds; the
/// runtime keeps the proxy alive.
pub fn slow_registry(note: &str) -> (Registry, Proxy, tokio::runtime::Runtime) {
    let registry = Registry::start();
    push(&registry, "v1", note);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = rt.block_on(Proxy::start(&registry.addr));
    proxy.faults().throttle_bps = Some(300_000);
    (registry, proxy, rt)
}

pub fn state_of(broker: &Mosquitto, device: &str, name: &str) -> String {
    reported_soon(broker, device)["deployments"][name]["state"].as_str().unwrap_or("").to_owned()
}
