//! AppArmor for the native backend: whether the host enforces AppArmor, and [`PROFILE`], the profile its
//! containers run under there. The profile is moby's default container profile (the `docker-default` template
//! of `github.com/moby/profiles/apparmor` v0.2.1, Apache-2.0, as vendored in moby/moby at commit
//! `b985e2313a8676e18072b442911fc8f64f17d440`) under jetship's name, so a device without Docker gets the same
//! confinement Docker gives; the Docker backend leaves AppArmor to the daemon (`docker-default`).
//!
//! Reads `/sys/module/apparmor/parameters/enabled` and `/sys/kernel/security/apparmor/profiles` under the host
//! root; loads the profile with `apparmor_parser -Kr` (from a file under `<state_dir>/apparmor/`) when it is
//! not loaded yet. Decides nothing about which containers get it.

use std::path::{Path, PathBuf};

use crate::os::fsutil::{read_small, under_root};

/// The AppArmor profile of native containers.
pub const PROFILE: &str = "jetship-default";

/// Errors loading the profile; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the host enforces AppArmor but `apparmor_parser` is not installed, so profile {PROFILE} cannot be loaded: \
         install it (apt-get install apparmor), or give the deployment `apparmor = \"unconfined\"` (needs \
         policy.allow_unconfined_apparmor)"
    )]
    NoParser,
    #[error("loading AppArmor profile {PROFILE} from {}: {message}", .path.display())]
    Load { path: PathBuf, message: String },
}

/// Whether the host's kernel enforces AppArmor (`/sys/module/apparmor/parameters/enabled` is `Y`).
pub(crate) fn host_enforces(host_root: &Path) -> bool {
    read_small(&under_root(host_root, "/sys/module/apparmor/parameters/enabled"), 16).is_ok_and(|s| s.trim() == "Y")
}

/// Whether profile `name` is loaded (listed in `/sys/kernel/security/apparmor/profiles` as `name (mode)`).
pub fn loaded(host_root: &Path, name: &str) -> bool {
    let list =
        read_small(&under_root(host_root, "/sys/kernel/security/apparmor/profiles"), 4 << 20).unwrap_or_default();
    list.lines().any(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == name))
}

/// The profile text. `abi3` adds the `abi <abi/3.0>` line (AppArmor 3 hosts: JetPack 6's Ubuntu 22.04); the
/// includes are added when the host has them.
pub(crate) fn profile_text(abi3: bool, tunables: bool, base: bool) -> String {
    let mut s =
        String::from("# jetship-default: moby's default container profile (github.com/moby/profiles/apparmor).\n");
    if abi3 {
        s.push_str("abi <abi/3.0>,\n");
    }
    if tunables {
        s.push_str("#include <tunables/global>\n");
    }
    s.push_str(&format!("\nprofile {PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n"));
    if base {
        s.push_str("  #include <abstractions/base>\n\n");
    }
    s.push_str(&BODY.replace("{NAME}", PROFILE));
    s.push_str("}\n");
    s
}

const BODY: &str = r#"  network,
  # Disallow AF_ALG (Linux kernel crypto API).
  deny network alg,
  capability,
  file,
  umount,
  # Host (privileged) processes may send signals to container processes.
  signal (receive) peer=unconfined,
  # runc and crun may send signals to container processes (stop).
  signal (receive) peer=runc,
  signal (receive) peer=crun,
  # Container processes may send signals amongst themselves.
  signal (send,receive) peer={NAME},

  deny @{PROC}/* w,   # deny write for all files directly in /proc (not in a subdir)
  # deny write to files not in /proc/<number>/** or /proc/sys/**
  deny @{PROC}/{[^1-9/],[^1-9/][^0-9/],[^1-9s/][^0-9y/][^0-9s/],[^1-9/][^0-9/][^0-9/][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,  # deny /proc/sys except /proc/sys/k* (effectively /proc/sys/kernel)
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,  # deny everything except shm* in /proc/sys/kernel/
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,

  # Processes within the container may trace each other, as far as other LSM and yama settings allow it.
  ptrace (trace,tracedby,read,readby) peer={NAME},
"#;

/// The profile a native container with AppArmor confinement runs under: `None` when the host does not enforce
/// AppArmor (nothing to apply), else [`PROFILE`], loaded first when it is not loaded yet.
pub(crate) fn ensure_loaded(host_root: &Path, state_dir: &Path) -> Result<Option<String>, Error> {
    if !host_enforces(host_root) {
        return Ok(None);
    }
    if loaded(host_root, PROFILE) {
        return Ok(Some(PROFILE.into()));
    }
    let parser = crate::os::exec::find_program(Path::new("/"), "apparmor_parser", &["/sbin", "/usr/sbin"])
        .ok_or(Error::NoParser)?;
    let has = |p: &str| under_root(host_root, p).exists();
    let text = profile_text(
        has("/etc/apparmor.d/abi/3.0"),
        has("/etc/apparmor.d/tunables/global"),
        has("/etc/apparmor.d/abstractions/base"),
    );
    let path = state_dir.join("apparmor").join(PROFILE);
    let load = |message: String| Error::Load { path: path.clone(), message };
    crate::os::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| load(e.to_string()))?;
    crate::os::exec::run(&parser, &[std::ffi::OsStr::new("-Kr"), path.as_os_str()]).map_err(|e| load(e.to_string()))?;
    tracing::info!(profile = PROFILE, "apparmor profile loaded");
    Ok(Some(PROFILE.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_denies_mounts_and_proc_and_sys_writes_under_jetships_name() {
        let t = profile_text(true, true, true);
        assert!(t.contains("profile jetship-default flags=(attach_disconnected,mediate_deleted) {"), "{t}");
        for rule in ["deny mount,", "deny @{PROC}/sysrq-trigger rwklx,", "deny /sys/kernel/security/** rwklx,"] {
            assert!(t.contains(rule), "{rule} missing");
        }
        assert!(t.contains("peer=jetship-default") && !t.contains("{NAME}"));
        assert!(t.starts_with("# jetship-default") && t.contains("abi <abi/3.0>,") && t.trim_end().ends_with('}'));
        let old = profile_text(false, true, true);
        assert!(!old.contains("abi <"), "AppArmor 2 hosts (JetPack 5) have no abi rule");
    }

    #[test]
    fn host_state_is_read_under_the_host_root() {
        let root = tempfile::tempdir().unwrap();
        assert!(!host_enforces(root.path()));
        assert_eq!(ensure_loaded(root.path(), root.path()).unwrap(), None, "no AppArmor: nothing to apply");
        let p = root.path().join("sys/module/apparmor/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("enabled"), "Y\n").unwrap();
        let profiles = root.path().join("sys/kernel/security/apparmor");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join("profiles"), "docker-default (enforce)\njetship-default (enforce)\n").unwrap();
        assert!(host_enforces(root.path()) && loaded(root.path(), PROFILE) && !loaded(root.path(), "jetship"));
        assert_eq!(ensure_loaded(root.path(), root.path()).unwrap().as_deref(), Some(PROFILE));
    }
}
