//! Per-replica log files: stdout and stderr lines appended to one size-bounded file, rotated.
//!
//! `<state>/logs/<service>/<replica>.log` is the current file; `.log.1` .. `.log.N` are older ones.
//! Writes go straight to the file (appends land in the page cache and do not block for long); a line
//! longer than [`MAX_LINE_BYTES`] is cut into pieces so that memory stays bounded.
//!
//! Each line is stored in the CRI log format that Kubernetes' runtimes write (so promtail, Vector or
//! fluent-bit read mend's files as they are): `<RFC 3339 time> <stdout|stderr> <F|P> <line>`, `P` for
//! the pieces of a cut line but its last. Readers take [`parse_record`] apart; lines of files written
//! before this format (no prefix) read with no time.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mend_types::{Clock, LineSink, ReplicaId, Timestamp};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::statedir;

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The CRI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One stored line taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// When mend read it (none for lines stored before the CRI format).
    pub at: Option<Timestamp>,
    /// Its pipe, when known.
    pub stream: Option<Stream>,
    /// The line as the replica wrote it (without the newline).
    pub body: &'a [u8],
}

/// Takes a stored line (with or without its newline) apart.
pub fn parse_record(line: &[u8]) -> Record<'_> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let plain = Record { at: None, stream: None, body: line };
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return plain };
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return plain,
    };
    if !matches!(tag, b"F" | b"P") {
        return plain;
    }
    let Some(at) = std::str::from_utf8(time).ok().filter(|time| time.contains('T')).and_then(Timestamp::parse) else {
        return plain;
    };
    Record { at: Some(at), stream: Some(stream), body: parts.next().unwrap_or_default() }
}

/// Replaces each stored line in `bytes` by its body (what the replica wrote), newlines kept.
pub fn bodies(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(parse_record(line).body);
        if line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// Longest line kept in one piece.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The path of replica `index`'s current log file in `dir`.
pub fn log_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index}.log"))
}

fn rotated_path(dir: &Path, index: u32, generation: u32) -> PathBuf {
    dir.join(format!("{index}.log.{generation}"))
}

/// An open, rotating log file.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    index: u32,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl LogFile {
    /// Opens (appending to) replica `index`'s log in `dir`, creating the directory.
    pub fn open(dir: &Path, index: u32, max_bytes: u64, keep: u32) -> io::Result<Self> {
        statedir::ensure_dir(dir)?;
        let file = statedir::open_append(&log_path(dir, index))?;
        let size = file.metadata()?.len();
        Ok(Self { dir: dir.to_path_buf(), index, max_bytes, keep, file, size })
    }

    /// Appends one line read at `at` from `stream` (`partial`: a piece of a cut line, more follows) in
    /// the CRI format; a newline is added.
    pub fn write_line(&mut self, at: Timestamp, stream: Stream, partial: bool, line: &[u8]) -> io::Result<()> {
        let prefix = format!("{at} {} {} ", stream.as_str(), if partial { 'P' } else { 'F' });
        let needed = (prefix.len() + line.len()) as u64 + 1;
        if self.size > 0
            && self.size + needed > self.max_bytes
            && let Err(error) = self.rotate()
        {
            // Rotation failed (the file was moved or deleted under us, say): start a fresh file rather
            // than losing every line from now on; the next rotation tries again.
            self.file = statedir::open_append(&log_path(&self.dir, self.index))?;
            self.size = self.file.metadata().map_or(0, |meta| meta.len());
            if self.size + needed > self.max_bytes {
                self.file.set_len(0)?;
                self.size = 0;
            }
            tracing::warn!(dir = %self.dir.display(), error = %error, "log rotation failed; reopened the log file");
        }
        let mut buffer = Vec::with_capacity(prefix.len() + line.len() + 1);
        buffer.extend_from_slice(prefix.as_bytes());
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        self.file.write_all(&buffer)?;
        self.size += needed;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let _ = fs::remove_file(rotated_path(&self.dir, self.index, self.keep));
        for generation in (1..self.keep).rev() {
            let from = rotated_path(&self.dir, self.index, generation);
            if from.exists() {
                fs::rename(&from, rotated_path(&self.dir, self.index, generation + 1))?;
            }
        }
        fs::rename(log_path(&self.dir, self.index), rotated_path(&self.dir, self.index, 1))?;
        self.file = statedir::open_append(&log_path(&self.dir, self.index))?;
        self.size = 0;
        Ok(())
    }
}

/// Where a capture's lines go and how they are stamped.
#[derive(Clone)]
pub struct Capture {
    /// The replica's file.
    pub log: Arc<Mutex<LogFile>>,
    /// Which pipe.
    pub stream: Stream,
    /// Time of each line.
    pub clock: Arc<dyn Clock>,
    /// Also hand each line to this (the miner), with the replica.
    pub tap: Option<(Arc<dyn LineSink>, ReplicaId)>,
}

/// Copies lines from a child's pipe into the capture's log until the pipe closes.
pub async fn capture<R: AsyncRead + Unpin>(pipe: R, capture: Capture) {
    let Capture { log, stream, clock, tap } = capture;
    let mut reader = BufReader::with_capacity(8 * 1024, pipe);
    let mut line = Vec::with_capacity(256);
    let mut failures: u64 = 0;
    loop {
        line.clear();
        match read_line_bounded(&mut reader, &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                let complete = line.ends_with(b"\n") || line.len() < MAX_LINE_BYTES;
                let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
                let at = clock.wall();
                if let Some((tap, replica)) = &tap {
                    tap.line(replica, at, trimmed);
                }
                let result = match log.lock() {
                    Ok(mut log) => log.write_line(at, stream, !complete, trimmed),
                    Err(_) => return,
                };
                if let Err(error) = result {
                    failures += 1;
                    // One warning per thousand failed lines, not one per line.
                    if failures % 1000 == 1 {
                        tracing::warn!(error = %error, failures, "cannot write replica log");
                    }
                }
            }
            Err(_) => return,
        }
    }
}

/// Reads up to a newline or [`MAX_LINE_BYTES`], whichever comes first; 0 at end of input.
async fn read_line_bounded<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, line: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(line.len());
        }
        let room = MAX_LINE_BYTES - line.len();
        let take = available.iter().take(room).position(|&b| b == b'\n').map(|idx| idx + 1);
        let (consumed, done) = match take {
            Some(n) => (n, true),
            None => (available.len().min(room), line.len() + available.len().min(room) >= MAX_LINE_BYTES),
        };
        line.extend_from_slice(&available[..consumed]);
        reader.consume(consumed);
        if done {
            return Ok(line.len());
        }
    }
}

/// The last `n_lines` lines of replica `index`'s logs (as the replica wrote them), reading into rotated
/// files when needed.
pub fn tail(dir: &Path, index: u32, n_lines: usize) -> io::Result<Vec<String>> {
    let (bytes, _) = tail_bytes(dir, index, n_lines, u64::MAX)?;
    Ok(String::from_utf8_lossy(&bodies(&bytes)).lines().map(str::to_owned).collect())
}

/// The last `n_lines` lines of replica `index`'s logs (each ending in a newline), reading into rotated
/// files when needed, and at most the last `max_bytes` of them: `tail=100000` of long lines took 137 MB
/// in one answer (issue 20). Only what is returned is read (files are read from their end). Files are
/// opened through [`statedir::open_read`]: a planted symlink (a rotated log pointing at a secret) is
/// not followed. Also says whether `max_bytes` left out lines that `n_lines` asked for.
pub fn tail_bytes(dir: &Path, index: u32, n_lines: usize, max_bytes: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut cut_short = false;
    let mut kept: Vec<u8> = Vec::new();
    let mut n_kept = 0usize;
    let mut budget = max_bytes;
    let mut generation = 0;
    while n_kept < n_lines && budget > 0 {
        let path = if generation == 0 { log_path(dir, index) } else { rotated_path(dir, index, generation) };
        let mut file = match statedir::open_read(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            // An older file that cannot be read (a planted symlink, say) ends the history there.
            Err(error) if generation > 0 => {
                tracing::warn!(path = %path.display(), %error, "log history ends at a file mend cannot read");
                break;
            }
            Err(error) => return Err(error),
        };
        let len = file.metadata()?.len();
        let take = len.min(budget);
        file.seek(SeekFrom::Start(len - take))?;
        let mut chunk = Vec::with_capacity(usize::try_from(take).unwrap_or(0));
        file.take(take).read_to_end(&mut chunk)?;
        budget -= take;
        // A file's last line may lack its newline (a replica writing it right now).
        if !chunk.is_empty() && !chunk.ends_with(b"\n") {
            chunk.push(b'\n');
        }
        // Cut off a partial first line when the budget (not the file's start) ended the read.
        if take < len {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(first_end) => {
                    chunk.drain(..=first_end);
                }
                None => chunk.clear(),
            }
            budget = 0;
            cut_short = true;
        }
        n_kept += chunk.iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&kept);
        kept = chunk;
        generation += 1;
    }
    // Keep only the last `n_lines` lines.
    let surplus = n_kept.saturating_sub(n_lines);
    if surplus > 0 {
        let cut = kept.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(surplus - 1).map_or(0, |(idx, _)| idx + 1);
        kept.drain(..cut);
        cut_short = false;
    }
    Ok((kept, cut_short))
}

/// Where a follower of a log file is: which file (inode) and how far into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCursor {
    inode: u64,
    offset: u64,
}

impl LogCursor {
    /// A cursor at the current end of replica `index`'s log, to follow only what comes next.
    pub fn at_end(dir: &Path, index: u32) -> Self {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(log_path(dir, index))
            .map(|meta| Self { inode: meta.ino(), offset: meta.len() })
            .unwrap_or_default()
    }
}

/// Follows a log file: returns what was appended since `cursor` (at most 1 MiB), and the new cursor. After
/// a rotation (a new file) it reads the new file from its start.
pub fn read_from(dir: &Path, index: u32, cursor: LogCursor) -> io::Result<(Vec<u8>, LogCursor)> {
    use std::os::unix::fs::MetadataExt;
    let mut file = match statedir::open_read(&log_path(dir, index)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), LogCursor::default())),
        Err(error) => return Err(error),
    };
    let meta = file.metadata()?;
    const BUDGET: u64 = 1024 * 1024;
    let mut appended = Vec::new();
    if meta.ino() != cursor.inode && cursor.inode != 0 {
        // Rotated since the last read: first the rest of the file the cursor was in, now a rotated one,
        // or the lines written just before the rotation would be lost to the follower.
        if let Some(mut old) = find_rotated(dir, index, cursor.inode) {
            old.seek(SeekFrom::Start(cursor.offset))?;
            old.take(BUDGET).read_to_end(&mut appended)?;
            if appended.len() as u64 == BUDGET {
                let offset = cursor.offset + BUDGET;
                return Ok((appended, LogCursor { inode: cursor.inode, offset }));
            }
        }
    }
    let start = if meta.ino() != cursor.inode || meta.len() < cursor.offset { 0 } else { cursor.offset };
    file.seek(SeekFrom::Start(start))?;
    let before = appended.len();
    file.take(BUDGET - before as u64).read_to_end(&mut appended)?;
    let offset = start + (appended.len() - before) as u64;
    Ok((appended, LogCursor { inode: meta.ino(), offset }))
}

/// The rotated file of replica `index` with inode `inode`, if it is still kept.
fn find_rotated(dir: &Path, index: u32, inode: u64) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    (1..=64)
        .map_while(|generation| statedir::open_read(&rotated_path(dir, index, generation)).ok())
        .find(|file| file.metadata().is_ok_and(|meta| meta.ino() == inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a stdout line at a fixed time (the prefix is 34 bytes).
    fn write(log: &mut LogFile, line: &[u8]) -> io::Result<()> {
        log.write_line(Timestamp::from_millis(1_700_000_000_000), Stream::Stdout, false, line)
    }

    #[test]
    fn rotates_at_the_size_limit_and_keeps_n_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogFile::open(dir.path(), 0, 480, 2).expect("open log");
        for idx in 0..40 {
            write(&mut log, format!("line {idx:03}").as_bytes()).expect("write");
        }
        let sizes: Vec<u64> = ["0.log", "0.log.1", "0.log.2"]
            .iter()
            .map(|name| fs::metadata(dir.path().join(name)).expect("file exists").len())
            .collect();
        assert!(sizes.iter().all(|&size| size <= 480), "{sizes:?}");
        assert!(!dir.path().join("0.log.3").exists());
        let last = tail(dir.path(), 0, 3).expect("tail");
        assert_eq!(last, ["line 037", "line 038", "line 039"]);
        // Reaching into rotated files for older lines.
        let more = tail(dir.path(), 0, 12).expect("tail");
        assert_eq!(more.first().map(String::as_str), Some("line 028"));
    }

    #[test]
    fn a_follower_loses_no_line_to_a_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogFile::open(dir.path(), 0, 300, 3).expect("open log");
        let mut cursor = LogCursor::at_end(dir.path(), 0);
        let mut seen = Vec::new();
        for idx in 0..60 {
            write(&mut log, format!("line {idx:03}").as_bytes()).expect("write");
            // The follower polls every third line, so rotations fall between its reads.
            if idx % 3 == 2 {
                let (bytes, next) = read_from(dir.path(), 0, cursor).expect("read");
                seen.extend_from_slice(&bytes);
                cursor = next;
            }
        }
        let expected: String = (0..60).map(|idx| format!("line {idx:03}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&bodies(&seen)), expected);
    }

    #[test]
    fn a_failed_rotation_reopens_instead_of_losing_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogFile::open(dir.path(), 0, 50, 1).expect("open log");
        write(&mut log, b"0123456789012345678901234567890123456789").expect("write");
        // Someone deletes the current file: rotation's rename fails.
        fs::remove_file(log_path(dir.path(), 0)).expect("remove");
        write(&mut log, b"after the deletion").expect("still writes");
        assert_eq!(tail(dir.path(), 0, 10).expect("tail"), ["after the deletion"]);
    }

    #[tokio::test]
    async fn capture_splits_overlong_lines_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(Mutex::new(LogFile::open(dir.path(), 1, 1 << 20, 1).expect("open log")));
        let mut input = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\nlast without newline");
        let clock: Arc<dyn Clock> = Arc::new(mend_types::SystemClock);
        capture(&input[..], Capture { log, stream: Stream::Stderr, clock, tap: None }).await;
        let lines = tail(dir.path(), 1, 10).expect("tail");
        let (raw, _) = tail_bytes(dir.path(), 1, 10, u64::MAX).expect("tail");
        let tags: Vec<(Option<Stream>, bool)> = raw
            .split_inclusive(|&b| b == b'\n')
            .map(parse_record)
            .map(|record| (record.stream, record.at.is_some()))
            .collect();
        assert_eq!(tags, vec![(Some(Stream::Stderr), true); 4]);
        assert!(raw.windows(10).any(|w| w == b" stderr P "), "the cut piece is partial");
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2], "x".repeat(10));
        assert_eq!(lines[3], "last without newline");
    }

    #[test]
    fn records_read_back_and_old_plain_lines_have_no_time() {
        let record = parse_record(b"2026-01-02T03:04:05.678Z stderr F ERROR boom here\n");
        assert_eq!(record.at, Timestamp::parse("2026-01-02T03:04:05.678Z"));
        assert_eq!((record.stream, record.body), (Some(Stream::Stderr), &b"ERROR boom here"[..]));
        for plain in [&b"plain old line"[..], b"2026-01-02 stdout F x", b"2026-01-02T03:04:05Z stdin F x", b""] {
            assert_eq!(parse_record(plain), Record { at: None, stream: None, body: plain });
        }
        assert_eq!(parse_record(b"2026-01-02T03:04:05.000Z stdout F ").body, b"");
    }

    #[test]
    fn read_from_follows_appends_and_restarts_after_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogFile::open(dir.path(), 0, 98, 1).expect("open log");
        write(&mut log, b"hello").expect("write");
        let (bytes, cursor) = read_from(dir.path(), 0, LogCursor::default()).expect("read");
        assert_eq!(bytes, b"2023-11-14T22:13:20.000Z stdout F hello\n");
        write(&mut log, b"world").expect("write");
        let (bytes, cursor) = read_from(dir.path(), 0, cursor).expect("read");
        assert_eq!(bodies(&bytes), b"world\n");
        assert_eq!(cursor, LogCursor::at_end(dir.path(), 0));
        write(&mut log, b"rotates the file now").expect("write");
        let (bytes, _) = read_from(dir.path(), 0, cursor).expect("read");
        assert_eq!(bodies(&bytes), b"rotates the file now\n");
    }
}
