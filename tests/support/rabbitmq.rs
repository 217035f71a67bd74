//! A real RabbitMQ (Debian's `rabbitmq-server`) with its MQTT plugin, on reserved loopback ports, with a private
//! node name, Erlang cookie, epmd port, Mnesia base and log dir, so two test runs (or a system RabbitMQ) never
//! meet. It takes tens of seconds to start, so one test binary starts it once ([`shared`]) and every test uses
//! it with its own device ids.
//!
//! Stopping: the broker and its epmd are started from a thread that lives as long as the test process, with
//! `PR_SET_PDEATHSIG` = SIGKILL, so the kernel kills both when the test binary exits however it exits (a
//! `static` is never dropped). State dirs of runs whose process is gone are removed at the next start.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{require_tool, reserve_port, Port};

/// The Debian package's own start script, run directly: the wrapper in /usr/sbin switches to the `rabbitmq`
/// user with `su`, which would drop the parent-death signal and write to /var/lib/rabbitmq.
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// How long the broker may take to accept MQTT connections on a busy CI machine.
const START_LIMIT: Duration = Duration::from_secs(180);

pub struct RabbitMq {
    /// The MQTT listener on 127.0.0.1.
    pub mqtt_port: u16,
    pub dir: PathBuf,
    pids: Vec<u32>,
    /// Keeps the ports ours while the broker runs.
    _ports: Vec<Port>,
}

impl RabbitMq {
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.join("log")).into_iter().flatten().flatten() {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        out.push_str(&std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default());
        out
    }

    /// Whether the broker process still runs.
    pub fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pids[1])).exists()
    }
}

/// The test binary's RabbitMQ, started on first use.
pub fn shared() -> &'static RabbitMq {
    static BROKER: OnceLock<RabbitMq> = OnceLock::new();
    BROKER.get_or_init(start)
}

fn base_dir() -> PathBuf {
    std::env::temp_dir().join("jetship-test-rabbitmq")
}

/// Removes the state dirs of earlier runs whose test process has exited (named `<pid>-<random>`).
fn remove_stale_dirs() {
    for entry in std::fs::read_dir(base_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let alive = name.split('-').next().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start() -> RabbitMq {
    require_tool("epmd", "rabbitmq-server");
    assert!(
        Path::new(SERVER).is_file(),
        "{SERVER} is needed by this test: install it with `apt-get install rabbitmq-server` (scripts/test does this)"
    );
    remove_stale_dirs();
    let tag = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let dir = base_dir().join(&tag);
    std::fs::create_dir_all(dir.join("log")).unwrap();
    let ports: Vec<Port> = (0..4).map(|_| reserve_port()).collect();
    let (mqtt, amqp, dist, epmd) = (ports[0].port, ports[1].port, ports[2].port, ports[3].port);
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp}\nmqtt.listeners.tcp.default = 127.0.0.1:{mqtt}\n\
             mqtt.allow_anonymous = true\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_mqtt].\n").unwrap();
    let cookie = format!("jetship{:016x}", rand::random::<u64>());
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let env: Vec<(&str, String)> = vec![
        ("HOME", d("")),
        // The start script then runs the VM in the foreground without an Erlang shell on stdin.
        ("RUNNING_UNDER_SYSTEMD", "true".into()),
        ("ERL_EPMD_PORT", epmd.to_string()),
        ("RABBITMQ_NODENAME", format!("jetship-test-{tag}@localhost")),
        ("RABBITMQ_NODE_PORT", amqp.to_string()),
        ("RABBITMQ_DIST_PORT", dist.to_string()),
        ("RABBITMQ_MNESIA_BASE", d("mnesia")),
        ("RABBITMQ_LOG_BASE", d("log")),
        ("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
        ("RABBITMQ_PID_FILE", d("rabbitmq.pid")),
        // Erlang distribution on loopback only, with this run's cookie.
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            format!("-setcookie {cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"),
        ),
    ];
    let stdout = d("stdout.log");

    // Both children are spawned by a thread that never ends: the parent-death signal follows the thread that
    // forked, and a test's own thread ends with the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spawn = |cmd: &mut Command| -> Child {
            // SAFETY: prctl is async-signal-safe and touches only the child being set up.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn().expect("spawn")
        };
        let epmd_child = spawn(
            Command::new("epmd")
                .args(["-address", "127.0.0.1", "-port", &epmd.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let log = std::fs::File::create(&stdout).unwrap();
        let server = spawn(
            Command::new(SERVER)
                .env_clear()
                .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        tx.send(vec![epmd_child.id(), server.id()]).unwrap();
        let _keep = (epmd_child, server);
        loop {
            std::thread::park();
        }
    });
    let pids = rx.recv().unwrap();
    let broker = RabbitMq { mqtt_port: mqtt, dir, pids, _ports: ports };

    let started = Instant::now();
    loop {
        assert!(broker.running(), "rabbitmq-server exited:\n{}", broker.log());
        if mqtt_answers(mqtt) {
            eprintln!("rabbitmq with its MQTT plugin ready after {:.1} s", started.elapsed().as_secs_f64());
            return broker;
        }
        assert!(started.elapsed() < START_LIMIT, "rabbitmq did not start within {START_LIMIT:?}:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether an MQTT CONNECT on `port` gets a CONNACK that accepts it (the listener opens before the plugin is
/// ready to serve).
fn mqtt_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 10 s, client id "probe".
    let connect = [0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 5, b'p', b'r', b'o', b'b', b'e'];
    let mut ack = [0u8; 4];
    let ok = s.write_all(&connect).is_ok() && s.read_exact(&mut ack).is_ok() && ack == [0x20, 2, 0, 0];
    let _ = s.write_all(&[0xe0, 0]);
    ok
}
