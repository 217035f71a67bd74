//! Following a container's k8s-file log (what conmon writes) by byte offset: each poll reads only what was
//! appended since the last one, and a rotation (the agent renames `ctr.log` to `ctr.log.1` and conmon reopens a
//! fresh `ctr.log`, `conmon::Supervisor::rotate_logs`) is followed without losing or repeating a line: the old
//! file is read to its end through the descriptor already open, then the new one from its start. Also
//! [`LineJoiner`], the one parser of k8s-file lines (`<ts> <stream> <F|P> <text>`, partial lines joined), which
//! `conmon::parse_k8s_log` uses too.
//!
//! Reads log files only; never writes, rotates or deletes them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::conmon::LogLine;

/// Most bytes a line may hold while it waits for its newline; a longer one is cut there (conmon itself writes
/// lines of at most 8 KiB, marked `P` when a line of the container's goes on).
const MAX_PENDING: usize = 1 << 20;

/// Turns k8s-file lines into [`LogLine`]s, joining a `P` (partial) line with what follows on the same stream.
#[derive(Debug, Default)]
pub struct LineJoiner {
    partial: Option<LogLine>,
}

impl LineJoiner {
    /// Feeds one line (without its newline); returns the log lines it completes (a line of another stream ends
    /// a pending partial one). Lines that are not k8s-file lines are skipped.
    pub(crate) fn feed(&mut self, line: &[u8], out: &mut impl FnMut(LogLine)) {
        let line = String::from_utf8_lossy(line);
        let mut parts = line.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(flag)) = (parts.next(), parts.next(), parts.next()) else { return };
        let text = parts.next().unwrap_or("");
        let piece = match self.partial.take() {
            Some(mut p) if p.stream == stream => {
                p.text.push_str(text);
                p
            }
            Some(p) => {
                out(p);
                LogLine { ts: ts.into(), stream: stream.into(), text: text.into() }
            }
            None => LogLine { ts: ts.into(), stream: stream.into(), text: text.into() },
        };
        if flag == "P" {
            self.partial = Some(piece);
        } else {
            out(piece);
        }
    }

    /// Hands out a partial line still waiting for its end (at the end of the output).
    pub fn finish(&mut self, out: &mut impl FnMut(LogLine)) {
        if let Some(p) = self.partial.take() {
            out(p);
        }
    }
}

/// One open log file and what of it was read.
struct Open {
    file: File,
    ino: u64,
    /// The inode and its birth time: what tells a file apart from a later one that reuses a freed inode.
    id: FileId,
    offset: u64,
}

type FileId = (u64, Option<std::time::SystemTime>);

/// How many files a follower remembers having opened.
const REMEMBERED: usize = 8;

/// Follows `ctr.log` (and, from the start, `ctr.log.1`) of one container. See the module doc.
pub(crate) struct Follower {
    path: PathBuf,
    current: Option<Open>,
    /// The rotated file, read before the current one on the first poll.
    previous: Option<Open>,
    started: bool,
    /// Bytes after the last newline, waiting for the rest of their line.
    pending: Vec<u8>,
    joiner: LineJoiner,
    /// The files opened so far (the last few): a rotated file among them is never read again.
    opened: std::collections::VecDeque<FileId>,
}

impl Follower {
    /// A follower of the log at `path` (`<container dir>/ctr.log`) that starts with what is already there: the
    /// rotated file first, then the current one.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            current: None,
            previous: None,
            started: false,
            pending: Vec::new(),
            joiner: LineJoiner::default(),
            opened: std::collections::VecDeque::new(),
        }
    }

    /// Opens `path` and remembers it as opened.
    fn open(&mut self, path: &Path) -> io::Result<Option<Open>> {
        let opened = open(path)?;
        if let Some(o) = &opened {
            if self.opened.len() == REMEMBERED {
                self.opened.pop_front();
            }
            self.opened.push_back(o.id);
        }
        Ok(opened)
    }

    /// Reads what was appended since the last poll (everything on the first) and hands out each complete line.
    pub(crate) fn poll(&mut self, out: &mut impl FnMut(LogLine)) -> io::Result<()> {
        if !self.started {
            self.started = true;
            // The current file is opened first: a rotation between the two opens then shows as both naming the
            // same file, and the rotated one is read once only.
            self.current = self.open(&self.path.clone())?;
            self.previous = self.open(&self.path.with_extension("log.1"))?;
            if let (Some(c), Some(p)) = (&self.current, &self.previous) {
                if c.ino == p.ino {
                    self.current = None;
                }
            }
            if let Some(mut p) = self.previous.take() {
                self.drain(&mut p, out)?;
                self.end_of_file(out);
            }
        }
        loop {
            if let Some(mut c) = self.current.take() {
                self.drain(&mut c, out)?;
                self.current = Some(c);
            }
            // Rotated when the path names another file now; conmon creates it only when it reopens its log, so
            // nothing more is written to the one open here: it is read to its end, then the new one.
            let now = match std::fs::metadata(&self.path) {
                Ok(m) => Some(m.ino()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            match (&self.current, now) {
                (Some(c), Some(ino)) if c.ino != ino => {
                    let mut old = self.current.take().expect("checked");
                    self.drain(&mut old, out)?;
                    self.end_of_file(out);
                    // Two rotations between polls: the file in between is `ctr.log.1` now, never opened here,
                    // and complete (conmon writes the newest). Read it whole before the new one. (With three,
                    // the one in between is gone: only one rotated file is kept.) conmon also replaces
                    // `ctr.log` itself (its size backstop): the file it replaced is deleted, not rotated, and
                    // `ctr.log.1` is then one already read.
                    if let Some(mut between) = open(&self.path.with_extension("log.1"))? {
                        if between.ino != ino && !self.opened.contains(&between.id) {
                            self.opened.push_back(between.id);
                            self.drain(&mut between, out)?;
                            self.end_of_file(out);
                        }
                    }
                    self.current = self.open(&self.path.clone())?;
                }
                (None, Some(_)) => self.current = self.open(&self.path.clone())?,
                _ => return Ok(()),
            }
        }
    }

    /// Hands out a partial line left at the end (the container has exited).
    pub fn finish(&mut self, out: &mut impl FnMut(LogLine)) {
        self.end_of_file(out);
        self.joiner.finish(out);
    }

    /// A file ended: bytes without a newline there belong to no later line.
    fn end_of_file(&mut self, out: &mut impl FnMut(LogLine)) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.joiner.feed(&rest, out);
        }
    }

    fn drain(&mut self, open: &mut Open, out: &mut impl FnMut(LogLine)) -> io::Result<()> {
        // A file cut shorter than what was read (truncated in place) is read again from its start.
        if open.file.metadata()?.len() < open.offset {
            open.offset = 0;
            open.file.seek(SeekFrom::Start(0))?;
            self.pending.clear();
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match open.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            open.offset += n as u64;
            let mut chunk = &buf[..n];
            while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                if self.pending.is_empty() {
                    self.joiner.feed(&chunk[..end], out);
                } else {
                    self.pending.extend_from_slice(&chunk[..end]);
                    let line = std::mem::take(&mut self.pending);
                    self.joiner.feed(&line, out);
                }
                chunk = &chunk[end + 1..];
            }
            self.pending.extend_from_slice(chunk);
            if self.pending.len() > MAX_PENDING {
                let line = std::mem::take(&mut self.pending);
                self.joiner.feed(&line, out);
            }
        }
    }
}

/// Where followed log lines go, one by one.
pub type LogSink = std::sync::Arc<dyn Fn(&LogLine) + Send + Sync>;

/// How often [`follow_file`] looks for more output.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Follows the log at `path` into `sink`: the last `tail` lines there (all when `None`), then what is appended,
/// until `stop`, after which what was written up to then is read and a trailing partial line handed out.
pub(crate) async fn follow_file(
    path: PathBuf,
    tail: Option<usize>,
    sink: LogSink,
    stop: tokio_util::sync::CancellationToken,
) -> io::Result<()> {
    let mut follower = Follower::new(&path);
    // The first read: only its last `tail` lines are handed out.
    let mut first = std::collections::VecDeque::new();
    let keep = tail.unwrap_or(usize::MAX);
    follower = blocking(follower, move |f| {
        f.poll(&mut |l| {
            if first.len() == keep {
                first.pop_front();
            }
            if keep > 0 {
                first.push_back(l);
            }
        })?;
        Ok(first)
    })
    .await
    .map(|(f, first)| {
        first.iter().for_each(|l| sink(l));
        f
    })?;
    loop {
        let last = stop.is_cancelled();
        let out = sink.clone();
        follower = blocking(follower, move |f| {
            f.poll(&mut |l| out(&l))?;
            if last {
                f.finish(&mut |l| out(&l));
            }
            Ok(())
        })
        .await
        .map(|(f, ())| f)?;
        if last {
            return Ok(());
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Runs `work` on the follower in a blocking thread (file reads), handing the follower back.
async fn blocking<T: Send + 'static>(
    mut follower: Follower,
    work: impl FnOnce(&mut Follower) -> io::Result<T> + Send + 'static,
) -> io::Result<(Follower, T)> {
    tokio::task::spawn_blocking(move || work(&mut follower).map(|t| (follower, t)))
        .await
        .map_err(|e| io::Error::other(format!("log reader task failed: {e}")))?
}

fn open(path: &Path) -> io::Result<Option<Open>> {
    match File::open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            let ino = meta.ino();
            Ok(Some(Open { file, ino, id: (ino, meta.created().ok()), offset: 0 }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn texts(f: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        f.poll(&mut |l: LogLine| got.push(format!("{}:{}", l.stream, l.text))).unwrap();
        got
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_by_offset_across_partial_writes_and_rotations_without_loss_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        append(&log.with_extension("log.1"), "t stdout F old\n");
        append(&log, "t stdout F one\nt stderr P par");
        let mut f = Follower::new(&log);
        assert_eq!(texts(&mut f), ["stdout:old", "stdout:one"]);
        assert!(texts(&mut f).is_empty(), "nothing new: nothing read again");
        append(&log, "\nt stderr F tial\n");
        assert_eq!(texts(&mut f), ["stderr:partial"]);
        // Rotation: renamed, more written to the old file by conmon before it reopens, then a fresh file.
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        append(&log.with_extension("log.1"), "t stdout F late\n");
        assert_eq!(texts(&mut f), ["stdout:late"], "no new file yet: the old one is still followed");
        append(&log, "t stdout F fresh\n");
        assert_eq!(texts(&mut f), ["stdout:fresh"]);
        // A second rotation replaces ctr.log.1; the follower never reads it again.
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        append(&log, "t stdout F second\n");
        assert_eq!(texts(&mut f), ["stdout:second"]);
        // Two rotations between polls: the file in between (now ctr.log.1) is read whole, then the newest.
        append(&log, "t stdout F before\n");
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        append(&log, "t stdout F between\n");
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        append(&log, "t stdout F newest\n");
        assert_eq!(texts(&mut f), ["stdout:before", "stdout:between", "stdout:newest"]);
        // conmon replacing ctr.log by itself (tmp file renamed over it): the replaced file is gone, and the rotated
        // file that was read already is not read again.
        append(&log, "t stdout F replaced\n");
        let tmp = dir.path().join("ctr.log.tmp");
        append(&tmp, "t stdout F after-replace\n");
        std::fs::rename(&tmp, &log).unwrap();
        assert_eq!(texts(&mut f), ["stdout:replaced", "stdout:after-replace"]);
        append(&log, "t stdout P cut");
        let mut got = texts(&mut f);
        f.finish(&mut |l: LogLine| got.push(l.text));
        assert_eq!(got, ["cut"], "a partial line at the end comes out when the output is over");
    }

    #[test]
    fn a_truncated_log_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ctr.log");
        append(&log, "t stdout F a\nt stdout F b\n");
        let mut f = Follower::new(&log);
        assert_eq!(texts(&mut f).len(), 2);
        std::fs::write(&log, "t stdout F c\n").unwrap();
        assert_eq!(texts(&mut f), ["stdout:c"]);
    }
}
