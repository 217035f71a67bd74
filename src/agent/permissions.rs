//! The state dir's modes: it is created 0700, and at every start the agent narrows what is wider than it must
//! be, whatever made it so (an older jetship, `jetship run` under a loose umask, an operator's copy), and says
//! what it changed. The state dir 0700 keeps non-root users out of everything below it (container root file
//! systems with setuid binaries, bundles with env values); the secret-bearing files themselves are 0600.
//!
//! Knows which parts of the state dir hold secrets; never touches container data (root file systems, volumes).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Directories below the state dir whose files carry deployment env values, container specs or credentials.
const SECRET_DIRS: &[&str] = &["desired", "deployments", "bundles", "containers", "mounts", "apparmor"];

/// Creates `state_dir` (0700) when missing and narrows the modes of it and of its secret-bearing files.
/// Returns one line per change, for the agent to log.
pub(crate) fn secure_state_dir(state_dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir)?;
    let mut changed = Vec::new();
    narrow(state_dir, 0o700, &mut changed)?;
    // Files directly in the state dir (the embedded broker's credentials, for one).
    for e in std::fs::read_dir(state_dir)?.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_file() {
            narrow(&path, 0o600, &mut changed)?;
        }
    }
    for dir in SECRET_DIRS {
        let dir = state_dir.join(dir);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        narrow(&dir, 0o700, &mut changed)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_file() {
                narrow(&path, 0o600, &mut changed)?;
            } else if meta.is_dir() {
                // One level down: bundles/<id>/config.json, containers/<id>/meta.json and logs. Root file
                // systems and staged mounts below them are the container's, not ours.
                for f in std::fs::read_dir(&path)?.flatten() {
                    let p = f.path();
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                        narrow(&p, 0o600, &mut changed)?;
                    }
                }
            }
        }
    }
    Ok(changed)
}

/// Clears the bits of `path`'s mode beyond `most` (never follows a symlink: callers pass what lstat saw).
fn narrow(path: &Path, most: u32, changed: &mut Vec<String>) -> std::io::Result<()> {
    let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let wanted = mode & most;
    if wanted != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
        changed.push(format!("{} had mode {mode:04o}; set to {wanted:04o}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn wide_modes_are_narrowed_and_reported_and_container_data_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        for d in ["desired", "bundles/app/rootfs/usr/bin", "volumes/app"] {
            std::fs::create_dir_all(state.join(d)).unwrap();
        }
        let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        for (f, m) in [("desired/device.json", 0o644), ("bundles/app/config.json", 0o644), ("broker.pass", 0o640)] {
            std::fs::write(state.join(f), "secret").unwrap();
            set(&state.join(f), m);
        }
        let setuid = state.join("bundles/app/rootfs/usr/bin/su");
        std::fs::write(&setuid, "").unwrap();
        set(&setuid, 0o4755);
        set(&state, 0o755);
        set(&state.join("volumes/app"), 0o777);

        let changed = secure_state_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        for f in ["desired/device.json", "bundles/app/config.json", "broker.pass"] {
            assert_eq!(mode(&state.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&state.join("desired")), 0o700);
        assert_eq!(mode(&setuid), 0o4755, "an image's files are the image's");
        assert_eq!(mode(&state.join("volumes/app")), 0o777, "volumes are the containers'");
        assert!(changed.iter().any(|c| c.contains("state had mode 0755; set to 0700")), "{changed:?}");
        assert_eq!(changed.len(), 6, "{changed:?}");
        assert!(secure_state_dir(&state).unwrap().is_empty(), "nothing to change the second time");
        let fresh = dir.path().join("new/state");
        secure_state_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700, "created 0700");
    }
}
