//! Shared test harness: reserved loopback ports, required external tools, fixture paths, the `jetship` binary.
//! Each integration test file includes it with `mod support;`; helpers for one component live in their own
//! file here (e.g. `support/mosquitto.rs`) and are declared below.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository's fixture host tree `tests/fixtures/hosts/<name>`.
pub fn fixture_host(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts").join(name)
}

/// Copies a tree (files, dirs, relative symlinks as they are) from `src` to `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s).unwrap(), &d).unwrap();
        } else if t.is_dir() {
            copy_tree(&s, &d);
        } else {
            std::fs::copy(&s, &d).unwrap();
        }
    }
}

/// Copies fixture host tree `name` into a fresh temp dir, for tests that change it (mknod device nodes,
/// hot-plug cameras).
pub fn copy_fixture_host(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture_host(name), dir.path());
    dir
}

/// Makes char device `abs` (a host path such as `/dev/video0`) under `root` with `mode`, replacing whatever is
/// there (fixture trees hold placeholder files where nodes belong: git cannot store device nodes).
pub fn mknod_under(root: &Path, abs: &str, major: u64, minor: u64, mode: u32) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes device nodes with mknod and needs root (scripts/test runs as root)"
    );
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
    // mknod is subject to the umask; make the mode what was asked.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The `jetship` binary built for this test run.
pub fn jetship_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jetship"))
}

/// A `jetship` command as the tests run it: stdin closed, and the environment that would change what it reads
/// removed (the broker and CLI config of the machine, a state-dir or L4T override).
pub fn jetship_cmd() -> Command {
    let mut c = Command::new(jetship_bin());
    c.env_remove("JETSHIP_BROKER")
        .env("JETSHIP_CLI_CONFIG", "/nonexistent/cli.toml")
        .env_remove("JETSHIP_STATE_DIR")
        .env_remove("L4T_VERSION")
        .stdin(Stdio::null());
    c
}

/// Runs `jetship args...` ([`jetship_cmd`]) to the end.
pub fn jetship(args: &[&str]) -> Output {
    jetship_cmd().args(args).output().unwrap()
}

/// Runs `jetship args...` with extra environment variables.
pub fn jetship_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    jetship_cmd().args(args).envs(env.iter().copied()).output().unwrap()
}

/// `jetship --config CONFIG args...`, to run or add to.
pub fn jetship_with_config(config: &Path, args: &[&str]) -> Command {
    let mut c = jetship_cmd();
    c.arg("--config").arg(config).args(args);
    c
}

/// A TCP port on 127.0.0.1 reserved for one test until dropped: hand `port` to the component that listens.
///
/// "Bind port 0, read the port, close, let the component bind it" races: between the close and the component's
/// bind, another test (in this process or in a second suite running at the same time) or any outgoing
/// connection's ephemeral source port can take it, and a readiness probe then talks to someone else's server.
/// A reservation avoids both: ports come from below the kernel's ephemeral range (which neither port-0 binds nor
/// outgoing connections use), and each is held with an exclusive `flock` on a file under
/// `$TMPDIR/jetship-test-ports/` for as long as this value lives, which every test process honours.
pub struct Port {
    pub port: u16,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Reserves a loopback port (see [`Port`]).
pub fn reserve_port() -> Port {
    let dir = std::env::temp_dir().join("jetship-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12000 { (ephemeral_low - 10000, ephemeral_low) } else { (20000, 30000) };
    let span = u32::from(high - low);
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let port = low + ((start + i) % span) as u16;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .unwrap();
        let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) else { continue };
        // Held by no other test; still check that nothing else on the machine listens there.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Port { port, _lock: lock };
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Path of an external program the test needs. Panics with the install hint when it is missing:
/// such a test fails, it is never skipped.
pub fn require_tool(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{program}` is needed by this test: install it with `apt-get install {debian_package}` (scripts/test does this)");
}

pub mod agent;
pub mod backend_contract;
pub mod backends;
pub mod bombs;
pub mod device;
pub mod dockerd;
pub mod faults;
pub mod hostile;
pub mod mosquitto;
pub mod prometheus;
pub mod rabbitmq;
pub mod registry;
