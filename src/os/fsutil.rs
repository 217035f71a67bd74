//! Small file-system helpers shared by every module that persists state: crash-safe writes and bounded reads.
//!
//! Owns nothing but the mechanics; callers decide paths and formats.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

/// Writes `data` to `path` so that after a power cut the file holds either the old or the new content:
/// write a temp file in the same directory, fsync it, rename it over `path`, fsync the directory. The file is
/// made 0600 (only root reads what the agent keeps: deployment env values, container specs, credentials).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        // A temp file left by a crash keeps its mode when reopened: start afresh.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`], for secrets: the temp file is created new (`O_EXCL`, never following a symlink) with
/// mode 0600 from the first moment, so the content is never readable by anyone but the owner, not even while
/// it is being written; then fsync, rename over `path`, fsync the directory.
pub fn write_atomic_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so a rename or create inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads at most `limit` bytes of a small text file (sysfs, procfs, /etc). Longer files are cut, which keeps a
/// garbage or hostile file from costing memory. Invalid UTF-8 is replaced, not an error.
pub fn read_small(path: &Path, limit: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Joins an absolute host path such as `/sys/class/thermal` under a host root such as `/` or a fixture tree.
pub fn under_root(root: &Path, abs: &str) -> std::path::PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Resolves `.` and `..` lexically, never above `/`, without touching the file system
/// (`/dev/v4l/by-id/../../video0` -> `/dev/video0`). For host paths read from symlinks and config.
pub fn normalize_abs(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new content").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new content");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "private whatever the umask");
    }

    #[test]
    fn private_writes_are_0600_and_replace_what_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic_private(&p, b"s3cret").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"s3cret");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn read_small_cuts_long_files_and_tolerates_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, [b'4', b'2', 0xff, b'x', b'y']).unwrap();
        assert_eq!(read_small(&p, 3).unwrap(), "42\u{fffd}");
    }

    #[test]
    fn normalize_abs_resolves_dots_and_stops_at_root() {
        assert_eq!(normalize_abs(Path::new("/dev/v4l/by-id/../../video0")), Path::new("/dev/video0"));
        assert_eq!(normalize_abs(Path::new("/dev/../../../video0")), Path::new("/video0"));
        assert_eq!(normalize_abs(Path::new("/dev/./nvmap")), Path::new("/dev/nvmap"));
    }

    #[test]
    fn under_root_keeps_paths_inside_root() {
        assert_eq!(under_root(Path::new("/fx"), "/sys/class"), Path::new("/fx/sys/class"));
        assert_eq!(under_root(Path::new("/"), "/sys/class"), Path::new("/sys/class"));
    }
}
