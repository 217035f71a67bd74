//! Small file-system helpers shared by every module that persists state: crash-safe writes and bounded reads.
//!
//! Owns nothing but the mechanics; callers decide paths and formats.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

/// Writes `data` to `path` so that after a power cut the file holds either the old or the new content:
/// write a temp file in the same directory, fsync it, rename it over `path`, fsync the directory. The file is
/// made 0600 (only root reads what the agent keeps: deployment env values, container specs, credentials).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
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
pub(crate) fn write_atomic_private(path: &Path, data: &[u8]) -> io::Result<()> {
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

/// The second copy of a mirrored file ([`write_mirrored`]): `<path>.bak`.
pub(crate) fn mirror_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// The lowercase hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The trailer that seals a mirrored file: `\n#sha256:<hex of the content before it>\n`.
const SEAL: &[u8] = b"\n#sha256:";

fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + SEAL.len() + 65);
    out.extend_from_slice(data);
    out.extend_from_slice(SEAL);
    out.extend_from_slice(sha256_hex(data).as_bytes());
    out.push(b'\n');
    out
}

/// The content of a sealed file, or why it is not sound. A file without its seal was cut short: cut right after
/// the content it would still parse, so it is refused like any other torn file.
fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    // The seal ends with a newline: a file without it lost its last byte, however sound the rest.
    let Some(body) = bytes.strip_suffix(b"\n") else { return Err("it has no checksum: cut short".into()) };
    let Some(at) = body.windows(SEAL.len()).rposition(|w| w == SEAL) else {
        return Err("it has no checksum: cut short".into());
    };
    let (data, hash) = (&body[..at], &body[at + SEAL.len()..]);
    if hash != sha256_hex(data).as_bytes() {
        return Err("its content does not match its checksum".into());
    }
    Ok(data)
}

/// Writes `data` to `path` sealed with a checksum ([`write_atomic`]): for small files that can be rebuilt but
/// must not be trusted when a bit flipped (the spool's cursor, image records). Read it with [`read_sealed`].
pub(crate) fn write_sealed(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, &seal(data))
}

/// Reads a file written with [`write_sealed`] (at most `limit` bytes): `Ok(None)` when it does not exist,
/// `Err` with the reason when it is longer than `limit`, or its checksum is missing or fails.
pub(crate) fn read_sealed(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(f) => f.take(limit + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if buf.len() as u64 > limit {
        return Err(format!("over the {limit}-byte limit"));
    }
    unseal(&buf).map(|d| Some(d.to_vec()))
}

/// Writes `data` to `path` and to its mirror ([`mirror_path`]), each sealed with a checksum and written with
/// [`write_atomic`]: for the few small files that cannot be rebuilt offline (the last desired documents, resolved
/// digests), so a torn or bit-flipped copy is detected and still leaves a good one. Read them with
/// [`read_mirrored`].
pub(crate) fn write_mirrored(path: &Path, data: &[u8]) -> io::Result<()> {
    let sealed = seal(data);
    write_atomic(path, &sealed)?;
    write_atomic(&mirror_path(path), &sealed)
}

/// Removes a mirrored file and its copy; absent files are fine.
pub(crate) fn remove_mirrored(path: &Path) -> io::Result<()> {
    for p in [path.to_path_buf(), mirror_path(path)] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// What [`read_mirrored`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MirrorRead {
    /// The file is sound. Its mirror is rewritten from it when it was not; `copy_problem` says what was wrong
    /// with a mirror that existed (`None`: it was sound, or absent).
    Sound { bytes: Vec<u8>, copy_problem: Option<String> },
    /// The file was missing or failed `check` (the reason), its mirror was sound: the file is rewritten from it.
    Restored { bytes: Vec<u8>, problem: String },
    /// Neither exists.
    Missing,
    /// Neither is sound: both reasons.
    Damaged { problem: String },
}

/// Reads a file written with [`write_mirrored`] (at most `limit` bytes each), checking each copy's seal and
/// then `check` on its content; a bad copy is rewritten from the good one. Returns the content (unsealed).
pub(crate) fn read_mirrored(path: &Path, limit: u64, check: impl Fn(&[u8]) -> Result<(), String>) -> MirrorRead {
    let read = |p: &Path| -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        let f =
            File::open(p)
                .map_err(|e| if e.kind() == io::ErrorKind::NotFound { String::new() } else { e.to_string() })?;
        f.take(limit + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?;
        if buf.len() as u64 > limit {
            return Err(format!("over the {limit}-byte limit"));
        }
        let data = unseal(&buf)?.to_vec();
        check(&data)?;
        Ok(data)
    };
    let copy = mirror_path(path);
    match (read(path), read(&copy)) {
        (Ok(bytes), other) => {
            let copy_problem = match &other {
                Ok(c) if *c == bytes => None,
                Ok(_) => Some("it differs from the file".to_owned()),
                Err(e) if e.is_empty() => None,
                Err(e) => Some(e.clone()),
            };
            if other.as_deref() != Ok(bytes.as_slice()) {
                let _ = write_atomic(&copy, &seal(&bytes));
            }
            MirrorRead::Sound { bytes, copy_problem }
        }
        (Err(problem), Ok(bytes)) => {
            let _ = write_atomic(path, &seal(&bytes));
            let problem = if problem.is_empty() { "missing".to_owned() } else { problem };
            MirrorRead::Restored { bytes, problem }
        }
        (Err(a), Err(b)) if a.is_empty() && b.is_empty() => MirrorRead::Missing,
        (Err(a), Err(b)) => {
            let name = |s: String| if s.is_empty() { "missing".to_owned() } else { s };
            MirrorRead::Damaged { problem: format!("{}; its copy: {}", name(a), name(b)) }
        }
    }
}

/// Fsyncs a directory so a rename or create inside it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads at most `limit` bytes of a small text file (sysfs, procfs, /etc). Longer files are cut, which keeps a
/// garbage or hostile file from costing memory. Invalid UTF-8 is replaced, not an error.
pub(crate) fn read_small(path: &Path, limit: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Joins an absolute host path such as `/sys/class/thermal` under a host root such as `/` or a fixture tree.
pub(crate) fn under_root(root: &Path, abs: &str) -> std::path::PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Resolves `.` and `..` lexically, never above `/`, without touching the file system
/// (`/dev/v4l/by-id/../../video0` -> `/dev/video0`). For host paths read from symlinks and config.
pub(crate) fn normalize_abs(p: &Path) -> std::path::PathBuf {
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
    fn mirrored_file_survives_damage_to_either_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.json");
        let check = |b: &[u8]| if b.starts_with(b"{") && b.ends_with(b"}") { Ok(()) } else { Err("torn".to_owned()) };
        assert_eq!(read_mirrored(&p, 1024, check), MirrorRead::Missing);
        write_mirrored(&p, b"{good}").unwrap();
        let sealed = fs::read(&p).unwrap();
        fs::write(&p, &sealed[..4]).unwrap();
        assert_eq!(
            read_mirrored(&p, 1024, check),
            MirrorRead::Restored { bytes: b"{good}".to_vec(), problem: "it has no checksum: cut short".into() }
        );
        assert_eq!(fs::read(&p).unwrap(), sealed, "the file is rewritten from its copy");
        fs::write(mirror_path(&p), b"x").unwrap();
        assert_eq!(
            read_mirrored(&p, 1024, check),
            MirrorRead::Sound { bytes: b"{good}".to_vec(), copy_problem: Some("it has no checksum: cut short".into()) }
        );
        assert_eq!(fs::read(mirror_path(&p)).unwrap(), sealed, "the copy is rewritten too");
        // A flipped bit that still reads as valid content is caught by the seal.
        let mut flipped = sealed.clone();
        flipped[2] ^= 0x01;
        fs::write(&p, &flipped).unwrap();
        assert!(
            matches!(read_mirrored(&p, 1024, check), MirrorRead::Restored { problem, .. } if problem.contains("checksum"))
        );
        // Cut right after its content (the seal gone), the file would still parse: it is refused all the same.
        fs::write(&p, &sealed[..b"{good}\n".len()]).unwrap();
        assert!(
            matches!(read_mirrored(&p, 1024, check), MirrorRead::Restored { problem, .. } if problem.contains("no checksum"))
        );
        // Cut by its last byte only (the seal's newline), it is refused too.
        fs::write(&p, &sealed[..sealed.len() - 1]).unwrap();
        assert!(
            matches!(read_mirrored(&p, 1024, check), MirrorRead::Restored { problem, .. } if problem.contains("no checksum"))
        );
        fs::write(&p, b"{good}").unwrap();
        fs::remove_file(mirror_path(&p)).unwrap();
        assert!(matches!(read_mirrored(&p, 1024, check), MirrorRead::Damaged { .. }));
        let q = dir.path().join("cursor.json");
        write_sealed(&q, b"{\"next\":7}").unwrap();
        assert_eq!(read_sealed(&q, 1024), Ok(Some(b"{\"next\":7}".to_vec())));
        let mut b = fs::read(&q).unwrap();
        b[9] = b'8';
        fs::write(&q, &b).unwrap();
        assert!(read_sealed(&q, 1024).unwrap_err().contains("checksum"));
        assert_eq!(read_sealed(&dir.path().join("none"), 1024), Ok(None));
        fs::write(&p, b"x").unwrap();
        fs::write(mirror_path(&p), b"y").unwrap();
        assert!(matches!(read_mirrored(&p, 1024, check), MirrorRead::Damaged { .. }));
        remove_mirrored(&p).unwrap();
        assert_eq!(read_mirrored(&p, 1024, check), MirrorRead::Missing);
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
