//! `jetship agent` start-up and shutdown as systemd sees them.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn agent_creates_state_dir_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/nested");
    let cfg = dir.path().join("agent.toml");
    let port = support::reserve_port();
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"test-agent\"\nstate_dir = \"{}\"\n[host]\nroot = \"{}\"\n[telemetry]\ninterval_s = 1\n[mqtt]\nembedded_listen = \"127.0.0.1:{}\"\n",
            state.display(),
            support::fixture_host("orin-nano-super-jp62").display(),
            port.port
        ),
    )
    .unwrap();
    let mut child = Command::new(support::jetship_bin())
        .args(["--config", cfg.to_str().unwrap(), "agent"])
        .env_remove("JETSHIP_STATE_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !state.is_dir() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(state.is_dir(), "agent did not create its state dir");
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "agent did not exit 0 on SIGTERM: {log}");
    assert!(log.contains("agent started") && log.contains("shutting down"), "{log}");
}

#[test]
fn agent_with_invalid_config_exits_78_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "device_id = \"a/b\"\nstate_dir = \"relative\"\n").unwrap();
    let out = Command::new(support::jetship_bin())
        .args(["--config", cfg.to_str().unwrap(), "agent"])
        .env_remove("JETSHIP_STATE_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("`device_id`") && stderr.contains("`state_dir`"), "{stderr}");
}

#[test]
fn agent_with_missing_explicit_config_fails_with_the_path() {
    let out =
        Command::new(support::jetship_bin()).args(["--config", "/nonexistent/jetship.toml", "agent"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("/nonexistent/jetship.toml"), "{stderr}");
}
