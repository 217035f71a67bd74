//! Bounded reads of small procfs and sysfs files into one reused buffer, with a warning naming the file.

use super::*;

/// Procfs and sysfs files are a few KiB; a garbage or hostile file is cut here.
pub(super) const READ_LIMIT: u64 = 256 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Reading small files

/// Reads small files into one reused buffer so a sample allocates little.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) buf: Vec<u8>,
}

impl Reader {
    /// The file's text (invalid UTF-8 is an `InvalidData` error: every file read here is ASCII).
    pub(super) fn text(&mut self, path: &Path) -> io::Result<&str> {
        self.buf.clear();
        File::open(path)?.take(READ_LIMIT).read_to_end(&mut self.buf)?;
        std::str::from_utf8(&self.buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))
    }

    /// A number from a one-value sysfs file. `Ok(None)` when the content is not a number (a warning is added).
    pub(super) fn number<T: std::str::FromStr>(&mut self, path: &Path, w: &mut Vec<String>) -> io::Result<Option<T>> {
        let text = self.text(path)?;
        let value = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        match value.parse() {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                w.push(format!("{}: expected a number, found `{}`", path.display(), snippet(value)));
                Ok(None)
            }
        }
    }

    /// A number from a sysfs file that should be readable: read errors become a warning, and a vanished file
    /// sets `gone` so the layout is discovered again.
    pub(super) fn sysfs_number<T: std::str::FromStr>(
        &mut self,
        path: &Path,
        w: &mut Vec<String>,
        gone: &mut bool,
    ) -> Option<T> {
        match self.number(path, w) {
            Ok(v) => v,
            Err(err) => {
                if err.kind() == io::ErrorKind::NotFound {
                    *gone = true;
                }
                w.push(format!("{}: cannot read: {err}", path.display()));
                None
            }
        }
    }
}

/// The start of a bad value, for a warning.
pub(super) fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

pub(super) fn read_warn<'a>(reader: &'a mut Reader, path: &Path, w: &mut Vec<String>) -> Option<&'a str> {
    match reader.text(path) {
        Ok(t) => Some(t),
        Err(err) => {
            w.push(format!("{}: cannot read: {err}", path.display()));
            None
        }
    }
}

/// A one-word sysfs attribute such as a governor name: `None` with a warning when unreadable, empty or not a
/// printable word.
pub(super) fn word_attr(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> Option<String> {
    match reader.text(path) {
        Ok(t) => {
            let v = t.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()) {
                Some(v.to_owned())
            } else {
                w.push(format!("{}: expected a name, found `{}`", path.display(), snippet(v)));
                None
            }
        }
        Err(err) => {
            w.push(format!("{}: cannot read: {err}", path.display()));
            None
        }
    }
}

/// A 0/1 sysfs flag (any non-zero number is on), read like [`Reader::sysfs_number`].
pub(super) fn sysfs_flag(reader: &mut Reader, path: &Path, w: &mut Vec<String>, gone: &mut bool) -> Option<bool> {
    reader.sysfs_number::<u64>(path, w, gone).map(|v| v != 0)
}
