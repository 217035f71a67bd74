//! Shared test harness: free loopback ports, required external tools, fixture paths.
//! Each integration test file includes it with `mod support;`; helpers for one component live in their own
//! file here (e.g. `support/mosquitto.rs`) and are declared below.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

pub mod backend_contract;
pub mod dockerd;
pub mod mosquitto;
pub mod prometheus;
pub mod registry;
