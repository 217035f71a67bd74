//! Jetson "CSV mode" mount lists: the files in `/etc/nvidia-container-runtime/host-files-for-container.d/`
//! (JetPack 6: `devices.csv`, `drivers.csv`, ...; JetPack 4/5: `l4t.csv` and friends) that tell the NVIDIA
//! runtime which host devices, directories, libraries and symlinks a GPU container gets.
//!
//! Pure parsing plus [`find_files`], which only reads. Each line is `<kind>, <path>` with kind `dev` (a char
//! device, possibly a glob such as `/dev/dri/card*`), `dir`, `lib` or `sym`. Like the NVIDIA toolkit, invalid
//! lines are skipped, but here each one is reported with its file and line so a broken file is visible. Turning
//! entries into mounts is the runtime module's job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::read_regular;
use crate::os::fsutil::under_root;

/// The directory the NVIDIA container runtime reads CSV files from.
pub const CSV_DIR: &str = "/etc/nvidia-container-runtime/host-files-for-container.d";

/// Largest CSV file read; real ones are a few KiB.
const MAX_CSV_BYTES: u64 = 1024 * 1024;

/// What a CSV line asks to put into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A device node (`dev`); the path may be a glob.
    Dev,
    /// A directory bind-mounted whole (`dir`), e.g. `/usr/local/cuda-10.2` on JetPack 4.
    Dir,
    /// A library file (`lib`).
    Lib,
    /// A symlink recreated in the container (`sym`).
    Sym,
}

impl EntryKind {
    /// The keyword used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Dir => "dir",
            Self::Lib => "lib",
            Self::Sym => "sym",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "dev" => Some(Self::Dev),
            "dir" => Some(Self::Dir),
            "lib" => Some(Self::Lib),
            "sym" => Some(Self::Sym),
            _ => None,
        }
    }
}

/// One valid line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What the path is.
    pub kind: EntryKind,
    /// Absolute host path (a glob pattern for `dev`).
    pub path: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLine {
    /// 1-based line number.
    pub line: usize,
    /// The line as written (cut to 120 characters).
    pub text: String,
    /// Why it was skipped.
    pub reason: String,
}

/// The result of parsing one file: the entries in file order and the skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Valid entries.
    pub entries: Vec<Entry>,
    /// Skipped lines.
    pub invalid: Vec<InvalidLine>,
}

impl Parsed {
    /// How many entries are of `kind`.
    pub fn count(&self, kind: EntryKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// One warning per skipped line: `<file>:<line>: <reason>: <text>; line skipped`.
    pub fn warnings(&self, file: &Path) -> Vec<String> {
        self.invalid
            .iter()
            .map(|l| format!("{}:{}: {}: `{}`; line skipped", file.display(), l.line, l.reason, l.text))
            .collect()
    }
}

/// Parses the text of a CSV file. Blank lines and `#` comments are skipped silently; every other line that is
/// not `<kind>, <absolute path>` is skipped and reported.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok((kind, path)) => out.entries.push(Entry { kind, path, line: i + 1 }),
            Err(reason) => out.invalid.push(InvalidLine {
                line: i + 1,
                text: line.chars().take(120).collect::<String>().escape_debug().to_string(),
                reason,
            }),
        }
    }
    out
}

fn parse_line(line: &str) -> Result<(EntryKind, String), String> {
    let Some((kind, path)) = line.split_once(',') else {
        return Err("expected `<kind>, <path>`".into());
    };
    let (kind, path) = (kind.trim(), path.trim());
    let kind =
        EntryKind::parse(kind).ok_or_else(|| format!("unknown kind `{kind}` (expected dev, dir, lib or sym)"))?;
    if path.is_empty() {
        return Err("empty path".into());
    }
    if !path.starts_with('/') {
        return Err("path is not absolute".into());
    }
    if path.contains(',') || path.chars().any(char::is_control) {
        return Err("path holds a comma or a control character".into());
    }
    let globby = path.contains(['*', '?', '[']);
    if globby {
        if kind != EntryKind::Dev {
            return Err(format!("glob in a `{}` line (globs are allowed in dev lines only)", kind.as_str()));
        }
        glob::Pattern::new(path).map_err(|e| format!("bad glob: {e}"))?;
    }
    Ok((kind, path.to_owned()))
}

/// A CSV file found on the host.
#[derive(Debug)]
pub struct FoundFile {
    /// Host path, e.g. `/etc/nvidia-container-runtime/host-files-for-container.d/devices.csv`.
    pub path: PathBuf,
    /// The parsed content, or the read error.
    pub parsed: std::io::Result<Parsed>,
}

/// Every `*.csv` file in [`CSV_DIR`] under `root`, in name order, parsed. A missing directory is normal.
pub fn find_files(root: &Path) -> Vec<FoundFile> {
    let dir = under_root(root, CSV_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        // A name that is not UTF-8 could not be reported in JSON; the toolkit ships ASCII names.
        .filter(|n| n.to_str().is_some() && Path::new(n).extension().is_some_and(|e| e == "csv"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|n| !dir.join(n).is_dir())
        .map(|n| FoundFile {
            path: Path::new(CSV_DIR).join(&n),
            parsed: read_regular(&dir.join(&n), MAX_CSV_BYTES).map(|t| parse(&t)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jetpack6_devices_and_drivers_lines() {
        let text = "dev, /dev/nvidia0\ndev, /dev/dri/card*\n\ndir, /usr/local/cuda-10.2\nlib, /usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1.1\nsym, /usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1\n";
        let p = parse(text);
        assert!(p.invalid.is_empty(), "{:?}", p.invalid);
        assert_eq!(p.entries.len(), 5);
        assert_eq!(p.entries[1], Entry { kind: EntryKind::Dev, path: "/dev/dri/card*".into(), line: 2 });
        assert_eq!(p.entries[2].line, 4, "blank lines still count for line numbers");
        assert_eq!([EntryKind::Dev, EntryKind::Dir, EntryKind::Lib, EntryKind::Sym].map(|k| p.count(k)), [2, 1, 1, 1]);
    }

    #[test]
    fn tolerates_spacing_comments_and_crlf() {
        let p = parse("# JetPack 6 devices\r\n  dev,/dev/nvmap  \r\nlib ,  /usr/lib/x.so\r\n");
        assert!(p.invalid.is_empty(), "{:?}", p.invalid);
        assert_eq!(p.entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["/dev/nvmap", "/usr/lib/x.so"]);
    }

    #[test]
    fn invalid_lines_are_skipped_and_reported_with_line_numbers() {
        let text = "dev, /dev/nvmap\nfoo, /dev/x\nlib /usr/lib/no-comma.so\nlib, relative.so\nsym,\nlib, /usr/lib/*.so\ndev, /dev/[bad\n\u{1}\u{2}garbage\nsym, /usr/lib/ok.so\n";
        let p = parse(text);
        assert_eq!(p.entries.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 9]);
        let lines: Vec<_> = p.invalid.iter().map(|l| (l.line, l.reason.as_str())).collect();
        assert_eq!(lines.len(), 7, "{lines:?}");
        assert!(lines[0].1.contains("unknown kind `foo`"), "{lines:?}");
        assert!(lines[1].1.contains("expected `<kind>, <path>`"));
        assert!(lines[2].1.contains("not absolute"));
        assert!(lines[3].1.contains("empty path"));
        assert!(lines[4].1.contains("glob in a `lib` line"));
        assert!(lines[5].1.contains("bad glob"));
        assert_eq!(lines[6].0, 8);
        let w = p.warnings(Path::new("/etc/x/l4t.csv"));
        assert!(w[0].starts_with("/etc/x/l4t.csv:2: unknown kind `foo`"), "{}", w[0]);
        assert!(w[6].contains("\\u{1}"), "control characters are escaped in warnings: {}", w[6]);
    }

    #[test]
    fn empty_and_binary_input_give_no_entries() {
        assert_eq!(parse(""), Parsed::default());
        let p = parse("\u{fffd}\u{fffd}\0\0");
        assert!(p.entries.is_empty());
        assert_eq!(p.invalid.len(), 1);
    }
}
