//! Entry names: lexical cleaning of tar paths and whiteout classification.

use super::*;

/// A path inside the root, as cleaned components (empty = the root itself).
pub type Components = Vec<OsString>;

/// Cleans a tar path lexically: `/` and `.` components are dropped, `..` removes the previous component.
/// Returns the reason when a `..` would climb above the root. Pure; never touches the file system.
pub(crate) fn clean_path(raw: &[u8]) -> std::result::Result<Components, String> {
    let mut out: Components = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("path climbs out of the root with `..`".to_string());
                }
            }
            _ => out.push(OsStr::from_bytes(part).to_os_string()),
        }
    }
    Ok(out)
}

/// What a whiteout-style name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// An ordinary entry.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything lower layers have in it.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Whiteout(OsString),
    /// Another `.wh..wh.` name (aufs metadata such as `.wh..wh.plnk`): carries nothing for us.
    AufsMeta,
}

/// Classifies the last component of an entry path. Pure.
pub(crate) fn classify_name(name: &OsStr) -> std::result::Result<Special, String> {
    let b = name.as_bytes();
    if b == b".wh..wh..opq" {
        return Ok(Special::Opaque);
    }
    if b.starts_with(b".wh..wh.") {
        return Ok(Special::AufsMeta);
    }
    if let Some(rest) = b.strip_prefix(b".wh.") {
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err(format!("whiteout names `{}`, which is not a file name", String::from_utf8_lossy(rest)));
        }
        return Ok(Special::Whiteout(OsStr::from_bytes(rest).to_os_string()));
    }
    Ok(Special::None)
}
