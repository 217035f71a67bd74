//! A real Mosquitto broker on a free loopback port (plain or TLS), that tests can stop and restart on the same
//! port, and `mosquitto_sub` as an independent observer. Everything is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{require_tool, reserve_port, Port};

/// TLS files for a Mosquitto TLS listener.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `require_certificate true`: clients must present a certificate signed by `ca`.
    pub require_client_cert: bool,
}

pub struct Mosquitto {
    pub port: u16,
    /// Keeps `port` ours across restarts.
    _reserved: Port,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
    pub tls: bool,
}

impl Mosquitto {
    /// A plain listener with persistence (so persistent observer sessions survive a restart).
    pub fn start() -> Mosquitto {
        Self::start_with(None)
    }

    /// A TLS listener.
    pub fn start_tls(tls: Tls) -> Mosquitto {
        Self::start_with(Some(tls))
    }

    /// A plain listener with extra configuration lines (e.g. `password_file`).
    pub fn start_with_conf(extra: &str) -> Mosquitto {
        Self::start_inner(None, extra)
    }

    fn start_with(tls: Option<Tls>) -> Mosquitto {
        Self::start_inner(tls, "")
    }

    fn start_inner(tls: Option<Tls>, extra: &str) -> Mosquitto {
        require_tool("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().unwrap();
        // Started as root, mosquitto drops to the `mosquitto` user: it must still write its persistence file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let reserved = reserve_port();
        let port = reserved.port;
        let mut conf = format!(
            "listener {port} 127.0.0.1\n{extra}\nallow_anonymous {}\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\n",
            !extra.contains("password_file"),
            dir.path().display()
        );
        let is_tls = tls.is_some();
        if let Some(t) = tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                t.ca.display(),
                t.cert.display(),
                t.key.display(),
                t.require_client_cert
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Mosquitto { port, _reserved: reserved, dir, conf: conf_path, child: None, tls: is_tls };
        m.restart();
        m
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "mqtts" } else { "mqtt" }, self.port)
    }

    /// Kills the broker with SIGKILL, as a crashed node: no goodbye to its clients, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            // A broker that exited (e.g. the port was taken) must not pass for ready.
            let exited = self.child.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(exited.is_none(), "mosquitto exited ({exited:?}): {}", self.log());
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker process (SIGSTOP) without closing its sockets: connections are accepted by the kernel
    /// and left unanswered, as by a broker stalled under load.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("mosquitto runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mosquitto_sub -v` collecting `topic payload` lines. With `persistent`, it uses a fixed client id and a
/// persistent session (`-c`) at QoS 1, so it misses nothing across a broker restart.
pub struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<(String, String)>>>,
    port: u16,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    pub fn start(broker: &Mosquitto, topics: &[&str], persistent: bool, extra: &[&str]) -> Observer {
        Self::start_port(broker.port, topics, persistent, extra)
    }

    /// The same, on any MQTT broker listening on `port` of 127.0.0.1 (e.g. RabbitMQ's MQTT plugin).
    pub fn start_port(port: u16, topics: &[&str], persistent: bool, extra: &[&str]) -> Observer {
        require_tool("mosquitto_sub", "mosquitto-clients");
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-q", "1"]);
        if persistent {
            let id = format!("observer-{}-{}", std::process::id(), port);
            cmd.args(["-c", "-i", &id]);
        }
        for t in topics {
            cmd.args(["-t", t]);
        }
        cmd.args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (t, p) = line.split_once(' ').unwrap_or((&line, ""));
                l.lock().unwrap().push((t.to_owned(), p.to_owned()));
            }
        });
        let obs = Observer { child, lines, port, reader: Some(reader) };
        // mosquitto_sub has no "subscribed" signal: give it a moment to connect and subscribe.
        std::thread::sleep(Duration::from_millis(300));
        obs
    }

    /// For an observer whose broker was killed: waits until every client has read its connection to that
    /// broker to the end (none is left established or half-closed on the broker's port, so mosquitto_sub has
    /// printed all it got), then stops mosquitto_sub and reads its output to the end. [`Observer::lines`] is then
    /// all the broker delivered; read right after the kill, it can miss what is still in the pipes.
    pub fn finish(&mut self) {
        let start = Instant::now();
        while open_connections_to(self.port) > 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "clients of port {} never saw it close", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
    }

    /// Lines received so far.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// JSON payloads received on `topic`.
    pub fn json(&self, topic: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, p)| serde_json::from_str(&p).ok())
            .collect()
    }

    /// Waits until `pred` holds for the lines received, or panics after `limit` showing what arrived.
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&[(String, String)]) -> bool) {
        let start = Instant::now();
        loop {
            if pred(&self.lines()) {
                return;
            }
            if start.elapsed() > limit {
                let lines = self.lines();
                let short = |(t, p): &(String, String)| format!("{t} {}", p.chars().take(160).collect::<String>());
                let mut shown: Vec<String> = lines.iter().take(8).map(short).collect();
                if lines.len() > 16 {
                    shown.push(format!("... {} more ...", lines.len() - 16));
                }
                shown.extend(lines.iter().skip(8.max(lines.len().saturating_sub(8))).map(short));
                let tail = shown;
                panic!("timed out after {limit:?} waiting for {what}; first and last lines:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many TCP connections to 127.0.0.1:`port` are still established or half-closed (the peer closed, the
/// client has not read to the end yet), from /proc/net/tcp.
fn open_connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Fields: sl, local, remote, state (01 ESTABLISHED, 08 CLOSE_WAIT).
            f.len() > 3 && f[2] == remote && (f[3] == "01" || f[3] == "08")
        })
        .count()
}

/// Publishes one message with `mosquitto_pub` at QoS 1 (the payload goes through a file, so any bytes and sizes work).
pub fn publish(broker: &Mosquitto, topic: &str, payload: &[u8], retain: bool) {
    publish_port(broker.port, topic, payload, retain)
}

/// The same, to any MQTT broker listening on `port` of 127.0.0.1.
pub fn publish_port(port: u16, topic: &str, payload: &[u8], retain: bool) {
    require_tool("mosquitto_pub", "mosquitto-clients");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-f"]).arg(file.path());
    if retain {
        cmd.arg("-r");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "mosquitto_pub failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A host root with the files that identify a Jetson Orin Nano devkit "super" on JetPack 6.2 (L4T 36.4.3),
/// over the fixture tree's other files.
pub fn orin_host_root(dir: &Path) -> PathBuf {
    let root = dir.join("host");
    let fixture = super::fixture_host("orin-nano-super-jp62");
    copy_tree(&fixture, &root);
    let w = |p: &str, c: &[u8]| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if !path.exists() {
            std::fs::write(path, c).unwrap();
        }
    };
    w(
        "etc/nv_tegra_release",
        b"# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n",
    );
    w("proc/device-tree/model", b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0");
    w("proc/device-tree/compatible", b"nvidia,p3768-0000+p3767-0005-super\0nvidia,p3767-0005\0nvidia,tegra234\0");
    w("proc/sys/kernel/random/boot_id", b"0f6c3a2e-8d1b-4a53-9d0e-5b1c2f3a4d5e\n");
    root
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &target);
        } else if ft.is_symlink() {
            let link = std::fs::read_link(e.path()).unwrap();
            let _ = std::os::unix::fs::symlink(link, target);
        } else if ft.is_file() {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
