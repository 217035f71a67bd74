//! Private Docker daemons for tests: Debian's `dockerd` (package `docker.io`) with its own data-root, exec-root,
//! pidfile and unix socket in a short temp dir (`/tmp/jsd-XXXXXX`, unix socket paths are limited to 108 bytes),
//! no bridge (or a bridge the test made, [`Dockerd::start_bridged`]) and no iptables, so it touches nothing of
//! the machine's. [`Dockerd`] stops on drop; [`shared`] is one
//! daemon per test binary, stopped when the test process exits. Stopping is SIGTERM (the daemon stops its
//! containers and its managed containerd), then SIGKILL to the process group and to any containerd shim that
//! still names this daemon's directory.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The daemon.json `runtimes` entry of the test daemons: a runtime named `nvidia` that is plain runc.
pub const NVIDIA_AS_RUNC: &str = r#""runtimes":{"nvidia":{"path":"runc","args":[]}}"#;

/// A running private dockerd.
pub struct Dockerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The daemon's socket.
    pub socket: PathBuf,
}

impl Dockerd {
    /// Starts a daemon; with `nvidia_runtime` its config registers a runtime named `nvidia` (runc).
    pub fn start(nvidia_runtime: bool) -> Self {
        Self::start_with(nvidia_runtime, &["--bridge", "none", "--iptables=false", "--ip-masq=false"])
    }

    /// Starts a daemon whose default bridge network is the existing bridge `bridge` (made and addressed by
    /// the caller, named uniquely), without iptables: published ports go through docker-proxy.
    pub fn start_bridged(bridge: &str) -> Self {
        Self::start_with(false, &["--bridge", bridge, "--iptables=false", "--ip-masq=false"])
    }

    fn start_with(nvidia_runtime: bool, network: &[&str]) -> Self {
        let bin = super::require_tool("dockerd", "docker.io");
        super::require_tool("containerd", "containerd");
        super::require_tool("runc", "runc");
        let dir = tempfile::Builder::new().prefix("jsd-").tempdir_in("/tmp").unwrap();
        let d = dir.path();
        let socket = d.join("sock");
        let runtimes = if nvidia_runtime { format!("{NVIDIA_AS_RUNC},") } else { String::new() };
        let config = d.join("daemon.json");
        std::fs::write(&config, format!(r#"{{{runtimes}"shutdown-timeout":3,"log-level":"warn"}}"#)).unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("e"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(network)
            .arg("--config-file")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start dockerd");
        let mut daemon = Self { child: Some(child), dir, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ping(&daemon.socket) {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited ({status}) at start:\n{}", daemon.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer on {}:\n{}",
                daemon.socket.display(),
                daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// `unix://<socket>`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker CLI against this daemon and returns its stdout; panics with stderr when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        docker_cli(&self.socket, args)
    }

    /// The end of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        kill_leftovers(self.dir.path());
        unmount_under(self.dir.path());
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CLI against the daemon at `socket`.
pub fn docker_cli(socket: &Path, args: &[&str]) -> String {
    let bin = super::require_tool("docker", "docker.io");
    let out = Command::new(bin)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run docker");
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `GET /_ping` over the socket answers `OK`.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.") && reply.ends_with("OK")
}

/// Kills processes this daemon started that outlived it (containerd shims run in their own process groups);
/// they are found by this daemon's directory in their command line.
fn kill_leftovers(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Unmounts whatever the daemon left mounted under its directory (overlay layers, shm), deepest first, so the
/// temp dir can be removed.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

static SHARED: Mutex<Option<Dockerd>> = Mutex::new(None);
static SHARED_SOCKET: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Ok(mut d) = SHARED.lock() {
        d.take();
    }
}

/// The socket of this test binary's shared daemon (with the `nvidia` runtime), started on first use and stopped
/// when the process exits.
pub fn shared() -> PathBuf {
    SHARED_SOCKET
        .get_or_init(|| {
            let d = Dockerd::start(true);
            let socket = d.socket.clone();
            *SHARED.lock().unwrap() = Some(d);
            // SAFETY: registers a plain extern "C" fn; it runs once at process exit.
            unsafe { libc::atexit(stop_shared) };
            socket
        })
        .clone()
}
