//! The durable outbox: telemetry and events are appended here first and delivered to the broker from here, in
//! order, so a broker outage or an agent restart loses nothing that reached the disk.
//!
//! On disk (`<state_dir>/spool/`): segment files `<base>.seg` named by the index of their first record, each a
//! 36-byte header (magic, base index, next seq per stream, CRC32) followed by records framed as
//! `len u32 LE | crc32 u32 LE | stream u8 | seq u64 LE | body`. `cursor.json` holds the index of the first record
//! the broker has not acknowledged (written with `fsutil::write_atomic`). Torn or corrupt records found on open
//! are truncated away, never delivered. The spool is bounded in bytes: when full, whole oldest segments are
//! dropped (the newest record always stays, so the spool may exceed the bound by one record) and the number of
//! undelivered records lost is kept (persisted with the cursor) until the link has
//! delivered it in a telemetry message (`dropped`), see [`Spool::dropped_unreported`].
//! Per-stream `seq` counters live in segment headers and records, so they survive restarts without a file of
//! their own; `reserve.json` holds a block of seqs reserved ahead (fsynced before any of them is handed out)
//! and the boot it was written in. After a reboot (a power cut may have lost records the broker already got)
//! or when a segment was found damaged, the next seq starts after the reservation, so no seq is ever given to
//! two records; after a plain agent restart the records on disk say exactly where to go on. Every damaged file
//! found on open is noted in `os::journal` (what was cut, what was lost).
//! This module does no networking and never decides what a record means.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::link::protocol::Stream;
use crate::os::fsutil;

const MAGIC: &[u8; 8] = b"JSSPOOL1";
const HEADER_LEN: u64 = 36;
const FRAME_LEN: u64 = 8;
const RECORD_PREFIX: usize = 9;
/// Sanity cap on one record: a longer length field is a torn or corrupt frame.
const MAX_RECORD: u32 = 16 * 1024 * 1024;
const CURSOR_FILE: &str = "cursor.json";
const RESERVE_FILE: &str = "reserve.json";
/// Seqs reserved per stream with one fsynced write of `reserve.json`.
const RESERVE_BLOCK: u64 = 4096;

/// Errors of the spool. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spool {path}: {source}: check the state dir's disk space and permissions")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool record of {size} bytes is over the {MAX_RECORD}-byte limit")]
    TooLarge { size: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A position in the spool: the index of the next record and where it starts on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    /// Index of the record at this position.
    pub index: u64,
    seg: u64,
    offset: u64,
}

/// One record read for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub index: u64,
    pub stream: Stream,
    pub seq: u64,
    pub body: Vec<u8>,
    /// The position just after this record: pass it to [`Spool::ack_through`] once the broker acknowledged it.
    pub end: Pos,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub segments: usize,
    /// Records appended but not yet acknowledged.
    pub pending: u64,
    /// Undelivered records dropped by the byte bound since the spool was opened.
    pub dropped_total: u64,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    count: u64,
    bytes: u64,
}

/// `reserve.json`: seqs below `reserved` may have been handed out; written before they are.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ReserveFile {
    reserved: [u64; 2],
    #[serde(default)]
    boot_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CursorFile {
    next: u64,
    #[serde(default)]
    dropped_unreported: u64,
    #[serde(default)]
    next_seq: [u64; 2],
}

/// The durable ordered queue. Not thread-safe by itself: the agent shares it behind a `Mutex` and keeps every
/// call short (appends and reads hit the page cache; fsync happens through [`Spool::take_flush`] outside the lock).
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    sync_each_append: bool,
    segments: VecDeque<Segment>,
    active: File,
    next_seq: [u64; 2],
    /// Seqs below these are covered by `reserve.json` on disk.
    reserved: [u64; 2],
    boot_id: Option<String>,
    cursor: Pos,
    send: Pos,
    dropped_unreported: u64,
    dropped_total: u64,
    dirty: bool,
    cursor_dirty: bool,
    reader: Option<(u64, File)>,
}

/// What [`Spool::take_flush`] hands out to be made durable outside the lock.
pub struct Flush {
    dir: PathBuf,
    file: Option<File>,
    cursor: Option<Vec<u8>>,
}

impl Flush {
    /// Fsyncs the active segment and writes the cursor atomically. Blocking: call from a blocking thread.
    pub fn run(self) -> Result<()> {
        if let Some(f) = self.file {
            f.sync_data().map_err(io(&self.dir))?;
        }
        if let Some(c) = self.cursor {
            let path = self.dir.join(CURSOR_FILE);
            fsutil::write_sealed(&path, &c).map_err(io(&path))?;
        }
        Ok(())
    }
}

fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn header(base: u64, next_seq: [u64; 2]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&base.to_le_bytes());
    h.extend_from_slice(&next_seq[0].to_le_bytes());
    h.extend_from_slice(&next_seq[1].to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

/// Parses a header; `None` when it is short, has the wrong magic or a bad CRC.
fn parse_header(b: &[u8]) -> Option<(u64, [u64; 2])> {
    if b.len() < HEADER_LEN as usize || &b[..8] != MAGIC || crc32fast::hash(&b[..32]) != u32_at(b, 32) {
        return None;
    }
    Some((u64_at(b, 8), [u64_at(b, 16), u64_at(b, 24)]))
}

/// Parses the record framed at the start of `b`: (stream, seq, body range, frame length).
fn parse_frame(b: &[u8]) -> Option<(Stream, u64, std::ops::Range<usize>, usize)> {
    if b.len() < FRAME_LEN as usize {
        return None;
    }
    let len = u32_at(b, 0);
    if len > MAX_RECORD || (len as usize) < RECORD_PREFIX || b.len() < FRAME_LEN as usize + len as usize {
        return None;
    }
    let payload = &b[8..8 + len as usize];
    if crc32fast::hash(payload) != u32_at(b, 4) {
        return None;
    }
    let stream = Stream::from_index(payload[0])?;
    let seq = u64_at(payload, 1);
    Some((stream, seq, 8 + RECORD_PREFIX..8 + len as usize, 8 + len as usize))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`. `max_bytes` bounds the segment files together; with
    /// `sync_each_append` every append is fsynced before it returns (otherwise call [`Spool::take_flush`]
    /// periodically).
    pub fn open(dir: &Path, max_bytes: u64, sync_each_append: bool) -> Result<Spool> {
        Self::open_on_boot(dir, max_bytes, sync_each_append, None)
    }

    /// [`Spool::open`] on the boot `boot_id` (the host's `/proc/sys/kernel/random/boot_id`; `None`: unknown,
    /// taken as the boot the spool was written in). On another boot, or when a segment is damaged, seqs go on
    /// after the reserved block so that a record delivered before a power cut never shares its seq.
    pub(crate) fn open_on_boot(
        dir: &Path,
        max_bytes: u64,
        sync_each_append: bool,
        boot_id: Option<&str>,
    ) -> Result<Spool> {
        use crate::base::Repair;
        use crate::os::journal;
        fs::create_dir_all(dir).map_err(io(dir))?;
        let subject = |name: &str| format!("spool/{name}");
        let cursor_path = dir.join(CURSOR_FILE);
        let saved: CursorFile = match fsutil::read_sealed(&cursor_path, 64 * 1024) {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                journal::note(
                    Repair::new(
                        subject(CURSOR_FILE),
                        format!("unreadable ({e})"),
                        "delivering from the oldest record kept",
                    )
                    .lost("the count of records dropped by the bound; records may be delivered twice"),
                );
                CursorFile::default()
            }),
            Ok(None) => CursorFile::default(),
            Err(e) => {
                journal::note(
                    Repair::new(
                        subject(CURSOR_FILE),
                        format!("unreadable ({e})"),
                        "delivering from the oldest record kept",
                    )
                    .lost("the count of records dropped by the bound; records may be delivered twice"),
                );
                CursorFile::default()
            }
        };
        let reserve_path = dir.join(RESERVE_FILE);
        let reserve: Option<ReserveFile> = match fsutil::read_sealed(&reserve_path, 64 * 1024).and_then(|b| match b {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }) {
            Ok(r) => r,
            Err(e) => {
                journal::note(Repair::new(
                    subject(RESERVE_FILE),
                    format!("unreadable ({e})"),
                    "seqs go on from the records kept",
                ));
                None
            }
        };
        let mut next_seq = [1u64, 1u64];
        for (n, saved) in next_seq.iter_mut().zip(saved.next_seq) {
            *n = (*n).max(saved);
        }
        // Records that were complete on disk and are gone now: they may have been delivered.
        let mut damaged = false;
        // An upper bound of the records lost that way, for when no reservation covers them.
        let mut lost_bound = 0u64;

        let mut bases: Vec<u64> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok())
            })
            .collect();
        bases.sort_unstable();

        let mut segments = VecDeque::new();
        for base in bases {
            let path = seg_path(dir, base);
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let mut data = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io(&path))?;
            let header_ok = parse_header(&data).filter(|(b, _)| *b == base);
            if data.len() < HEADER_LEN as usize {
                damaged = true;
                lost_bound += 1;
                journal::note(
                    Repair::new(
                        subject(&name),
                        format!("torn: {} bytes, shorter than its header", data.len()),
                        "removed",
                    )
                    .lost("every record the segment held"),
                );
                fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            if let Some((_, hseq)) = header_ok {
                for i in 0..2 {
                    next_seq[i] = next_seq[i].max(hseq[i]);
                }
            }
            let mut off = HEADER_LEN as usize;
            let mut count = 0;
            while off < data.len() {
                match parse_frame(&data[off..]) {
                    Some((stream, seq, _, len)) => {
                        let i = stream.index();
                        next_seq[i] = next_seq[i].max(seq + 1);
                        count += 1;
                        off += len;
                    }
                    None => {
                        let cut = data.len() - off;
                        // A frame whose length reaches past the end is the one being written when the process
                        // died: it was never complete, so never delivered. A complete frame that fails its CRC
                        // is damage, and the records after it may have been delivered.
                        let declared = data.get(off..off + 4).map(|b| u32_at(b, 0) as usize);
                        let torn_tail = declared.is_none_or(|l| off + FRAME_LEN as usize + l > data.len());
                        if !torn_tail {
                            damaged = true;
                            lost_bound += (cut as u64).div_ceil(FRAME_LEN + RECORD_PREFIX as u64);
                        }
                        let problem = if torn_tail {
                            format!("torn last record ({cut} bytes at offset {off})")
                        } else {
                            format!("corrupt record at offset {off}")
                        };
                        journal::note(
                            Repair::new(subject(&name), problem, "truncated to the last sound record")
                                .lost(format!("{cut} bytes: the records after offset {off}")),
                        );
                        let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                        f.set_len(off as u64).map_err(io(&path))?;
                        f.sync_all().map_err(io(&path))?;
                        break;
                    }
                }
            }
            if header_ok.is_none() {
                // The records are framed and checked on their own: keep them under a rebuilt header.
                damaged = true;
                let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                f.write_all_at(&header(base, next_seq), 0).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                journal::note(Repair::new(
                    subject(&name),
                    "torn or corrupt header",
                    format!("header rebuilt from the file name; {count} sound records kept"),
                ));
            }
            segments.push_back(Segment { base, count, bytes: off as u64 });
        }
        match reserve.as_ref() {
            Some(r) if damaged || r.boot_id.as_deref().zip(boot_id).is_some_and(|(a, b)| a != b) => {
                for (n, reserved) in next_seq.iter_mut().zip(r.reserved) {
                    *n = (*n).max(reserved);
                }
            }
            Some(_) => {}
            None if damaged => {
                for n in next_seq.iter_mut() {
                    *n += lost_bound;
                }
            }
            None => {}
        }
        if segments.is_empty() {
            let base = saved.next;
            let path = seg_path(dir, base);
            fsutil::write_atomic(&path, &header(base, next_seq)).map_err(io(&path))?;
            segments.push_back(Segment { base, count: 0, bytes: HEADER_LEN });
        }
        let last = segments.back().map(|s| s.base).unwrap_or_default();
        let active_path = seg_path(dir, last);
        let active = OpenOptions::new().append(true).open(&active_path).map_err(io(&active_path))?;

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(256, 1024 * 1024),
            sync_each_append,
            segments,
            active,
            next_seq,
            reserved: [0, 0],
            boot_id: boot_id.map(str::to_owned),
            cursor: Pos { index: 0, seg: 0, offset: HEADER_LEN },
            send: Pos { index: 0, seg: 0, offset: HEADER_LEN },
            dropped_unreported: saved.dropped_unreported,
            dropped_total: 0,
            dirty: false,
            cursor_dirty: false,
            reader: None,
        };
        if let Err(e) = spool.reserve() {
            // A full disk must not keep the agent from starting; appends try again (and count what they drop).
            warn!(err = %e, "cannot reserve spool seqs");
        }
        spool.cursor = spool.locate(saved.next)?;
        spool.send = spool.cursor;
        Ok(spool)
    }

    /// Reserves the next block of seqs of both streams in `reserve.json` (fsynced) before any is handed out.
    fn reserve(&mut self) -> Result<()> {
        let reserved = [self.next_seq[0] + RESERVE_BLOCK, self.next_seq[1] + RESERVE_BLOCK];
        let r = ReserveFile { reserved, boot_id: self.boot_id.clone() };
        let path = self.dir.join(RESERVE_FILE);
        fsutil::write_sealed(&path, &serde_json::to_vec(&r).unwrap_or_default()).map_err(io(&path))?;
        self.reserved = reserved;
        Ok(())
    }

    /// The position of record `index` (clamped to the records present).
    fn locate(&mut self, index: u64) -> Result<Pos> {
        let Some(seg) = self.segments.iter().find(|s| s.base + s.count > index) else {
            let last = self.segments.back().expect("spool has an active segment");
            return Ok(Pos { index: last.base + last.count, seg: last.base, offset: last.bytes });
        };
        let (base, bytes) = (seg.base, seg.bytes);
        let mut pos = Pos { index: base, seg: base, offset: HEADER_LEN };
        while pos.index < index && pos.offset < bytes {
            let mut len = [0u8; 4];
            self.reader(base)?.read_exact_at(&mut len, pos.offset).map_err(io(&self.dir))?;
            pos.offset += FRAME_LEN + u32::from_le_bytes(len) as u64;
            pos.index += 1;
        }
        Ok(pos)
    }

    fn reader(&mut self, base: u64) -> Result<&File> {
        if self.reader.as_ref().map(|(b, _)| *b) != Some(base) {
            let path = seg_path(&self.dir, base);
            let f = File::open(&path).map_err(io(&path))?;
            self.reader = Some((base, f));
        }
        Ok(&self.reader.as_ref().expect("reader just set").1)
    }

    /// Moves a position that points into a deleted segment (or at the end of a full one) to the start of the
    /// next segment.
    fn normalize(&self, pos: Pos) -> Pos {
        let mut pos = pos;
        loop {
            match self.segments.iter().position(|s| s.base == pos.seg) {
                Some(i) => {
                    let s = &self.segments[i];
                    if pos.offset >= s.bytes && i + 1 < self.segments.len() {
                        let n = &self.segments[i + 1];
                        pos = Pos { index: n.base, seg: n.base, offset: HEADER_LEN };
                        continue;
                    }
                    return pos;
                }
                None => {
                    let n = self
                        .segments
                        .iter()
                        .find(|s| s.base > pos.seg)
                        .unwrap_or_else(|| self.segments.back().expect("spool has an active segment"));
                    pos = Pos { index: n.base.max(pos.index), seg: n.base, offset: HEADER_LEN };
                    return pos;
                }
            }
        }
    }

    /// Appends one record to `stream`; `body` gets the record's `seq`. Returns the seq. When the disk is full the
    /// oldest undelivered segment is dropped (and counted) to make room, once; a record that still cannot be
    /// written is counted as dropped and the error returned.
    pub fn append(&mut self, stream: Stream, body: impl FnOnce(u64) -> Vec<u8>) -> Result<u64> {
        let i = stream.index();
        if self.next_seq[i] >= self.reserved[i] {
            if let Err(e) = self.reserve() {
                // No seq is handed out that a reservation does not cover: the record is lost, and counted.
                self.dropped_unreported += 1;
                self.dropped_total += 1;
                self.cursor_dirty = true;
                return Err(e);
            }
        }
        let seq = self.next_seq[i];
        let body = body(seq);
        let len = RECORD_PREFIX + body.len();
        if len > MAX_RECORD as usize {
            return Err(Error::TooLarge { size: len });
        }
        let mut frame = Vec::with_capacity(FRAME_LEN as usize + len);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.push(i as u8);
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&body);
        let crc = crc32fast::hash(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());

        if crate::os::crashpoint::armed("mid-spool-append") {
            let _ = self.active.write_all(&frame[..frame.len() / 2]);
            let _ = self.active.sync_data();
            crate::os::crashpoint::die("mid-spool-append");
        }
        if let Err(e) = self.write_frame(&frame) {
            // Full disk: the oldest undelivered records make room for the newest, as the bound would.
            let freed = self.drop_oldest()?;
            if !freed || self.write_frame(&frame).is_err() {
                self.dropped_unreported += 1;
                self.dropped_total += 1;
                self.cursor_dirty = true;
                self.next_seq[i] += 1;
                return Err(e);
            }
        }
        let seg = self.segments.back_mut().expect("spool has an active segment");
        let path = seg_path(&self.dir, seg.base);
        seg.count += 1;
        seg.bytes += frame.len() as u64;
        let full = seg.bytes >= self.segment_bytes;
        self.next_seq[i] += 1;
        self.dirty = true;
        if self.sync_each_append {
            self.active.sync_data().map_err(io(&path))?;
            self.dirty = false;
        }
        // Bound first, while the new record is still in the active segment: the bound never drops the record
        // just appended, even when one record is larger than the whole bound.
        self.enforce_bound()?;
        if full {
            if let Err(e) = self.roll() {
                // The record is in; the next append tries to start a new segment again.
                warn!(err = %e, "cannot start a new spool segment");
            }
        }
        Ok(seq)
    }

    /// Writes one frame at the end of the active segment; on failure nothing of it stays behind (the next append
    /// would land after garbage).
    fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        let seg = self.segments.back().expect("spool has an active segment");
        let (bytes, path) = (seg.bytes, seg_path(&self.dir, seg.base));
        if let Err(e) = self.active.write_all(frame) {
            let _ = self.active.set_len(bytes);
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// Drops the oldest segment (counting its undelivered records) unless it is the only one; whether it did.
    fn drop_oldest(&mut self) -> Result<bool> {
        if self.segments.len() < 2 {
            return Ok(false);
        }
        let front = self.segments.pop_front().expect("more than one segment");
        self.count_dropped(&front);
        self.remove_segment(front.base)?;
        self.cursor = self.normalize(self.cursor);
        self.send = self.normalize(self.send);
        if self.send.index < self.cursor.index {
            self.send = self.cursor;
        }
        Ok(true)
    }

    /// Counts the undelivered records of a segment that is dropped.
    fn count_dropped(&mut self, seg: &Segment) {
        let lost = (seg.base + seg.count).saturating_sub(self.cursor.index.max(seg.base));
        if lost > 0 {
            self.dropped_unreported += lost;
            self.dropped_total += lost;
            self.cursor_dirty = true;
            warn!(records = lost, max_bytes = self.max_bytes, "spool full; dropped the oldest undelivered records");
        }
    }

    fn roll(&mut self) -> Result<()> {
        let last = self.segments.back().expect("spool has an active segment");
        let old = seg_path(&self.dir, last.base);
        self.active.sync_data().map_err(io(&old))?;
        let base = last.base + last.count;
        let path = seg_path(&self.dir, base);
        fsutil::write_atomic(&path, &header(base, self.next_seq)).map_err(io(&path))?;
        self.active = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        self.segments.push_back(Segment { base, count: 0, bytes: HEADER_LEN });
        Ok(())
    }

    fn enforce_bound(&mut self) -> Result<()> {
        let mut total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        while total > self.max_bytes && self.segments.len() > 1 {
            let front = self.segments.pop_front().expect("more than one segment");
            self.count_dropped(&front);
            total -= front.bytes;
            self.remove_segment(front.base)?;
        }
        self.cursor = self.normalize(self.cursor);
        self.send = self.normalize(self.send);
        if self.send.index < self.cursor.index {
            self.send = self.cursor;
        }
        Ok(())
    }

    fn remove_segment(&mut self, base: u64) -> Result<()> {
        if self.reader.as_ref().map(|(b, _)| *b) == Some(base) {
            self.reader = None;
        }
        let path = seg_path(&self.dir, base);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The next record not yet handed out since the last [`Spool::rewind`], in order; `None` when all are out.
    pub(crate) fn next_unsent(&mut self) -> Result<Option<Record>> {
        loop {
            self.send = self.normalize(self.send);
            let Some(seg) = self.segments.iter().find(|s| s.base == self.send.seg) else {
                return Ok(None);
            };
            let (base, bytes) = (seg.base, seg.bytes);
            if self.send.offset >= bytes {
                return Ok(None);
            }
            let pos = self.send;
            let mut head = [0u8; 8];
            self.reader(base)?.read_exact_at(&mut head, pos.offset).map_err(io(&self.dir))?;
            let len = u32_at(&head, 0).min(MAX_RECORD) as usize;
            let mut frame = vec![0u8; FRAME_LEN as usize + len];
            frame[..8].copy_from_slice(&head);
            let read = self.reader(base)?.read_exact_at(&mut frame[8..], pos.offset + FRAME_LEN);
            match read.ok().and_then(|_| parse_frame(&frame)) {
                Some((stream, seq, body, flen)) => {
                    self.send = Pos { index: pos.index + 1, seg: base, offset: pos.offset + flen as u64 };
                    return Ok(Some(Record {
                        index: pos.index,
                        stream,
                        seq,
                        body: frame[body].to_vec(),
                        end: self.send,
                    }));
                }
                None => {
                    // Only reachable if the file changed under us; skip the rest of the segment.
                    warn!(
                        segment = base,
                        offset = pos.offset,
                        "spool record unreadable; skipping the rest of its segment"
                    );
                    self.send = Pos { index: pos.index, seg: base, offset: bytes };
                    if self.segments.back().map(|s| s.base) == Some(base) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Marks every record before `end` as delivered; fully delivered segments are deleted. Positions older
    /// than the cursor (records already dropped by the bound) are ignored.
    pub(crate) fn ack_through(&mut self, end: Pos) -> Result<()> {
        if end.index <= self.cursor.index {
            return Ok(());
        }
        self.cursor = end;
        self.cursor_dirty = true;
        while self.segments.len() > 1 {
            let front = &self.segments[0];
            if front.base + front.count > self.cursor.index {
                break;
            }
            let base = front.base;
            self.segments.pop_front();
            self.remove_segment(base)?;
        }
        self.cursor = self.normalize(self.cursor);
        if self.send.index < self.cursor.index {
            self.send = self.cursor;
        }
        Ok(())
    }

    /// Hands out records again from the first unacknowledged one (after a reconnect).
    pub(crate) fn rewind(&mut self) {
        self.send = self.cursor;
    }

    /// What must be made durable since the last call; run it outside any lock with [`Flush::run`].
    pub fn take_flush(&mut self) -> Result<Flush> {
        let file = if self.dirty {
            self.dirty = false;
            Some(self.active.try_clone().map_err(io(&self.dir))?)
        } else {
            None
        };
        let cursor = if self.cursor_dirty {
            self.cursor_dirty = false;
            let c = CursorFile {
                next: self.cursor.index,
                dropped_unreported: self.dropped_unreported,
                next_seq: self.next_seq,
            };
            Some(serde_json::to_vec(&c).unwrap_or_default())
        } else {
            None
        };
        Ok(Flush { dir: self.dir.clone(), file, cursor })
    }

    /// Fsyncs and persists the cursor now (shutdown, tests).
    pub fn sync(&mut self) -> Result<()> {
        self.take_flush()?.run()
    }

    /// Undelivered records dropped by the bound that no delivered telemetry message has reported yet.
    pub fn dropped_unreported(&self) -> u64 {
        self.dropped_unreported
    }

    /// Records that a delivered (acknowledged) telemetry message reported `n` dropped records.
    pub(crate) fn reported_dropped(&mut self, n: u64) {
        self.dropped_unreported = self.dropped_unreported.saturating_sub(n);
        self.cursor_dirty = true;
    }

    /// The seq the next record of `stream` will get.
    #[cfg(test)]
    pub(crate) fn next_seq(&self, stream: Stream) -> u64 {
        self.next_seq[stream.index()]
    }

    /// Sizes and counters.
    pub fn stats(&self) -> Stats {
        let last = self.segments.back().map(|s| s.base + s.count).unwrap_or_default();
        Stats {
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            segments: self.segments.len(),
            pending: last.saturating_sub(self.cursor.index),
            dropped_total: self.dropped_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tag: &str) -> impl FnOnce(u64) -> Vec<u8> + '_ {
        move |seq| format!("{tag}:{seq}:0").into_bytes()
    }

    fn drain(s: &mut Spool) -> Vec<(Stream, u64, String)> {
        let mut out = Vec::new();
        while let Some(r) = s.next_unsent().unwrap() {
            out.push((r.stream, r.seq, String::from_utf8(r.body).unwrap()));
        }
        out
    }

    #[test]
    fn records_come_out_in_order_with_per_stream_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 1);
        assert_eq!(s.append(Stream::Events, body("e")).unwrap(), 1);
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 2);
        let got = drain(&mut s);
        assert_eq!(
            got,
            [
                (Stream::Telemetry, 1, "t:1:0".to_owned()),
                (Stream::Events, 1, "e:1:0".to_owned()),
                (Stream::Telemetry, 2, "t:2:0".to_owned())
            ]
        );
    }

    #[test]
    fn unacknowledged_records_are_handed_out_again_after_rewind_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        for _ in 0..5 {
            s.append(Stream::Telemetry, body("t")).unwrap();
        }
        let first = s.next_unsent().unwrap().unwrap();
        let second = s.next_unsent().unwrap().unwrap();
        s.ack_through(first.end).unwrap();
        s.rewind();
        assert_eq!(s.next_unsent().unwrap().unwrap().seq, second.seq);
        s.ack_through(second.end).unwrap();
        s.sync().unwrap();
        drop(s);

        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let seqs: Vec<u64> = drain(&mut s).into_iter().map(|r| r.1).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 6);
    }

    #[test]
    fn torn_tail_after_a_crash_is_truncated_and_never_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        s.append(Stream::Telemetry, body("t")).unwrap();
        s.append(Stream::Telemetry, body("t")).unwrap();
        drop(s);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let good_len = fs::metadata(&seg).unwrap().len();
        // A half-written third record: length and part of the payload only.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 0, 3]).unwrap();
        drop(f);

        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len, "torn tail not truncated");
        let seqs: Vec<u64> = drain(&mut s).into_iter().map(|r| r.1).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 3);
        assert_eq!(drain(&mut s).len(), 1);
    }

    #[test]
    fn corrupt_record_is_cut_with_everything_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        for _ in 0..3 {
            s.append(Stream::Events, body("e")).unwrap();
        }
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut data = fs::read(&seg).unwrap();
        let second = HEADER_LEN as usize + FRAME_LEN as usize + RECORD_PREFIX + "e:1:0".len();
        data[second + 12] ^= 0xff; // flip a byte inside record 2's payload
        fs::write(&seg, &data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let seqs: Vec<u64> = drain(&mut s).into_iter().map(|r| r.1).collect();
        assert_eq!(seqs, [1]);
    }

    #[test]
    fn bound_drops_oldest_and_keeps_the_count_until_reported() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096;
        let mut s = Spool::open(dir.path(), max, false).unwrap();
        let pad = "x".repeat(200);
        for _ in 0..100 {
            s.append(Stream::Events, |seq| format!("{seq}{pad}").into_bytes()).unwrap();
        }
        let stats = s.stats();
        assert!(stats.bytes <= max + 512, "spool grew to {} bytes", stats.bytes);
        assert!(stats.dropped_total > 50, "{stats:?}");
        let dropped = stats.dropped_total;
        assert_eq!(s.dropped_unreported(), dropped);
        s.sync().unwrap();
        drop(s);
        // The count survives a restart until a delivered telemetry message reported it.
        let mut s = Spool::open(dir.path(), max, false).unwrap();
        assert_eq!(s.dropped_unreported(), dropped);
        s.reported_dropped(dropped);
        assert_eq!(s.dropped_unreported(), 0);
        // What is left comes out in order, newest last, with no duplicates.
        let seqs: Vec<u64> = drain(&mut s).into_iter().filter(|r| r.0 == Stream::Events).map(|r| r.1).collect();
        assert!(!seqs.is_empty());
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(*seqs.last().unwrap(), 100);
        assert_eq!(seqs[0], 100 - seqs.len() as u64 + 1);
        assert_eq!(dropped, 100 - seqs.len() as u64);
    }

    #[test]
    fn a_record_larger_than_the_bound_is_kept_until_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1024, false).unwrap();
        for _ in 0..3 {
            s.append(Stream::Telemetry, |_| vec![b'x'; 1500]).unwrap();
        }
        let seqs: Vec<u64> = drain(&mut s).into_iter().map(|r| r.1).collect();
        assert_eq!(seqs, [3]);
        assert_eq!(s.dropped_unreported(), 2);
    }

    #[test]
    fn seq_survives_restart_after_everything_was_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 2048, false).unwrap();
        for _ in 0..50 {
            s.append(Stream::Telemetry, body("t")).unwrap();
            s.append(Stream::Events, body("e")).unwrap();
            while let Some(r) = s.next_unsent().unwrap() {
                s.ack_through(r.end).unwrap();
            }
        }
        assert_eq!(s.stats().pending, 0);
        assert_eq!(s.stats().dropped_total, 0);
        drop(s); // no sync: seq must come from the segments themselves
        let mut s = Spool::open(dir.path(), 2048, false).unwrap();
        assert_eq!(s.next_seq(Stream::Telemetry), 51);
        assert_eq!(s.next_seq(Stream::Events), 51);
        assert_eq!(s.append(Stream::Events, body("e")).unwrap(), 51);
    }

    /// Appends `n` telemetry records and delivers (acknowledges) all of them.
    fn deliver(s: &mut Spool, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..n {
            s.append(Stream::Telemetry, body("t")).unwrap();
        }
        while let Some(r) = s.next_unsent().unwrap() {
            seqs.push(r.seq);
            s.ack_through(r.end).unwrap();
        }
        seqs
    }

    #[test]
    fn a_corrupt_record_that_may_have_been_delivered_never_gets_its_seq_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open_on_boot(dir.path(), 1 << 20, false, Some("boot-a")).unwrap();
        let delivered = deliver(&mut s, 5);
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut data = fs::read(&seg).unwrap();
        data[HEADER_LEN as usize + 40] ^= 0x01; // inside record 2 of 5: records 2..5 are cut
        fs::write(&seg, &data).unwrap();
        let mut s = Spool::open_on_boot(dir.path(), 1 << 20, false, Some("boot-a")).unwrap();
        let next = s.append(Stream::Telemetry, body("t")).unwrap();
        assert!(next > *delivered.iter().max().unwrap(), "seq {next} reused after {delivered:?}");
        let (repairs, _) = crate::os::journal::drain();
        assert!(repairs.iter().any(|r| r.problem.contains("corrupt record")), "{repairs:?}");
    }

    #[test]
    fn after_a_reboot_seqs_go_on_past_the_reservation_and_after_a_plain_restart_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open_on_boot(dir.path(), 1 << 20, false, Some("boot-a")).unwrap();
        deliver(&mut s, 3);
        drop(s);
        // Same boot (the agent was killed): the records say where to go on.
        let mut s = Spool::open_on_boot(dir.path(), 1 << 20, false, Some("boot-a")).unwrap();
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 4);
        drop(s);
        // A power cut lost what the page cache held: records 5.. may have reached the broker but not the disk.
        let seg = seg_path(dir.path(), 0);
        let len = fs::metadata(&seg).unwrap().len();
        let last = FRAME_LEN + RECORD_PREFIX as u64 + "t:4:0".len() as u64;
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - last).unwrap();
        let mut s = Spool::open_on_boot(dir.path(), 1 << 20, false, Some("boot-b")).unwrap();
        let next = s.append(Stream::Telemetry, body("t")).unwrap();
        assert!(next > RESERVE_BLOCK, "seq {next} could repeat one sent before the power cut");
        assert_eq!(s.append(Stream::Events, body("e")).unwrap(), 1 + RESERVE_BLOCK);
    }

    #[test]
    fn a_torn_header_keeps_the_records_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        for _ in 0..3 {
            s.append(Stream::Events, body("e")).unwrap();
        }
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut data = fs::read(&seg).unwrap();
        data[3] ^= 0xff; // the magic
        fs::write(&seg, &data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let seqs: Vec<u64> = drain(&mut s).into_iter().map(|r| r.1).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(parse_header(&fs::read(&seg).unwrap()).is_some(), "header rebuilt");
        assert!(s.append(Stream::Events, body("e")).unwrap() > 3);
    }

    #[test]
    fn an_unreadable_reservation_leaves_the_records_to_say_where_seqs_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        deliver(&mut s, 2);
        drop(s);
        fs::write(dir.path().join(RESERVE_FILE), b"{\"reserved\":[12").unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(s.append(Stream::Telemetry, body("t")).unwrap(), 3);
        let reserve: ReserveFile =
            serde_json::from_slice(&fsutil::read_sealed(&dir.path().join(RESERVE_FILE), 1024).unwrap().unwrap())
                .unwrap();
        assert!(reserve.reserved[0] > 3, "a new reservation is written");
    }

    #[test]
    fn delivered_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 4096, false).unwrap();
        for _ in 0..40 {
            s.append(Stream::Telemetry, |_| vec![b'x'; 100]).unwrap();
        }
        assert!(s.stats().segments > 2);
        while let Some(r) = s.next_unsent().unwrap() {
            s.ack_through(r.end).unwrap();
        }
        assert_eq!(s.stats().segments, 1);
        assert_eq!(s.stats().pending, 0);
    }
}
