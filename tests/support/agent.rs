//! The real `jetship agent` binary as a child process (killed on drop, its log in a file), the agent config the
//! MQTT tests give it, and the checks on the `seq` of what it delivered.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::mosquitto::{orin_host_root, Observer};

pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        let log = config.with_extension(format!("log-{}", rand_suffix()));
        Self::command(&["--config", config.to_str().unwrap(), "agent"], log)
    }

    /// Any long-running `jetship` command (the exporter, `deploy --wait`), with the machine's broker and CLI
    /// config removed from its environment ([`super::jetship_cmd`]), stdout to `log`.out and stderr to `log`.
    pub fn command(args: &[&str], log: PathBuf) -> Agent {
        let child = super::jetship_cmd()
            .args(args)
            .env_remove("JETSHIP_STATE_DIR")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child: Some(child), log }
    }

    /// What the command printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn signal(&mut self, sig: nix::sys::signal::Signal) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Writes an agent config for `device_id` in `dir` and returns its path: the Orin Nano fixture host, 1 s
/// telemetry, a 5 s keep-alive, reconnects after 100 ms doubling to 1 s. `mqtt` lines go into `[mqtt]`, `extra`
/// is appended verbatim.
pub fn agent_config(dir: &Path, device_id: &str, mqtt: &str, extra: &str) -> PathBuf {
    let host = orin_host_root(dir);
    let path = dir.join(format!("{device_id}.toml"));
    std::fs::write(
        &path,
        format!(
            "device_id = \"{device_id}\"\nstate_dir = \"{}\"\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n[mqtt]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nkeep_alive_s = 5\n{mqtt}\n{extra}",
            dir.join(format!("state-{device_id}")).display(),
            host.display()
        ),
    )
    .unwrap();
    path
}

/// The `seq` of every JSON payload `obs` received on `topic`, in arrival order.
pub fn seqs(obs: &Observer, topic: &str) -> Vec<u64> {
    obs.json(topic).iter().filter_map(|v| v["seq"].as_u64()).collect()
}

/// Checks the order rule: every seq is either a repeat of one already seen (a resend after a reconnect) or
/// exactly one more than the highest seen so far, except for gaps listed by the caller's tolerance. Returns
/// the seqs in first-seen order and the number of missing ones.
pub fn check_order(seqs: &[u64]) -> (Vec<u64>, u64) {
    let mut seen = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    let mut missing = 0;
    let mut max = 0;
    for &s in seqs {
        if seen.contains(&s) {
            continue;
        }
        assert!(s > max, "seq {s} arrived after {max}: out of order in {seqs:?}");
        missing += s - max - 1;
        max = s;
        seen.insert(s);
        order.push(s);
    }
    (order, missing)
}

/// The highest `seq` among `lines` on `topic`.
pub fn max_seq(lines: &[(String, String)], topic: &str) -> u64 {
    lines
        .iter()
        .filter(|(t, _)| t == topic)
        .filter_map(|(_, p)| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .unwrap_or(0)
}
