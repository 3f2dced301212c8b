//! Log files: RFC 3339 timestamps (formatted by hand, no chrono) and the rotating
//! `current.log` writer.
//!
//! Each output line is written as `<2026-11-21T23:05:01.123Z> <o|e> <line>\n`. When the
//! current file would exceed `max_size`, `current.log.(k)` moves to `.(k+1)` for
//! k = keep−1 … 1, `current.log` becomes `current.log.1` and the one beyond `keep` is
//! deleted; `keep = 0` truncates instead. `max_size = 0` never rotates. Bytes that cannot be
//! written (disk full …) are dropped and counted by the caller.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use reeve_proto::time::civil_from_days;

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for `ms` since the epoch.
pub fn format_ts(ms: u64, out: &mut Vec<u8>) {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    );
}

/// The rotating `current.log` of one service.
pub struct RotatingFile {
    dir: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    buf: Vec<u8>,
}

impl RotatingFile {
    /// A writer for `dir/current.log`; nothing is opened until the first write.
    pub fn new(dir: &Path, max_size: u64, keep: u32) -> Self {
        RotatingFile {
            dir: dir.to_path_buf(),
            max_size,
            keep,
            file: None,
            size: 0,
            buf: Vec::new(),
        }
    }

    /// True when this writer already targets the given settings.
    pub fn same_as(&self, dir: &Path, max_size: u64, keep: u32) -> bool {
        self.dir == dir && self.max_size == max_size && self.keep == keep
    }

    fn current(&self) -> PathBuf {
        self.dir.join("current.log")
    }

    fn rotated(&self, k: u32) -> PathBuf {
        self.dir.join(format!("current.log.{k}"))
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.current())?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("log file not open"))
    }

    /// Queues one formatted line (newline included), rotating first when it would not fit.
    /// Returns the bytes dropped by a flush that this forced.
    pub fn push_line(&mut self, line: &[u8]) -> u64 {
        let mut dropped = 0;
        if self.max_size > 0 {
            if self.file.is_none() {
                // Learn the size of an existing file before deciding.
                let _ = self.open();
            }
            let pending = self.size + self.buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_size {
                dropped = self.flush();
                self.rotate();
            }
        }
        self.buf.extend_from_slice(line);
        dropped
    }

    /// Writes the queued lines; returns the number of bytes dropped.
    pub fn flush(&mut self) -> u64 {
        if self.buf.is_empty() {
            return 0;
        }
        let n = self.buf.len() as u64;
        let buf = std::mem::take(&mut self.buf);
        let res = self.open().and_then(|f| f.write_all(&buf));
        self.buf = buf;
        let dropped = match res {
            Ok(()) => {
                self.size += n;
                0
            }
            Err(_) => {
                // Reopen next time (the directory may have been removed, or space freed).
                self.file = None;
                n
            }
        };
        self.buf.clear();
        if self.buf.capacity() > 64 << 10 {
            self.buf.shrink_to(16 << 10);
        }
        dropped
    }

    /// Rotates the files (see the module doc).
    fn rotate(&mut self) {
        self.file = None;
        if self.keep == 0 {
            let _ = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(self.current());
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for k in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(k), self.rotated(k + 1));
            }
            let _ = std::fs::rename(self.current(), self.rotated(1));
        }
        // Never rotate in a loop when renaming failed: count from zero again.
        self.size = 0;
        let _ = self.open();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: u64) -> String {
        let mut v = Vec::new();
        format_ts(ms, &mut v);
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn timestamps() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(ts(1_795_302_301_123), "2026-11-21T23:05:01.123Z");
        assert_eq!(ts(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = RotatingFile::new(dir.path(), 100, 2);
        for i in 0..20 {
            assert_eq!(
                w.push_line(format!("line {i:03} {}\n", "x".repeat(30)).as_bytes()),
                0
            );
            assert_eq!(w.flush(), 0);
        }
        let cur = std::fs::read_to_string(dir.path().join("current.log")).expect("current");
        assert!(cur.len() <= 100, "{}", cur.len());
        assert!(cur.ends_with('\n') && cur.contains("line 019"));
        assert!(dir.path().join("current.log.1").exists());
        assert!(dir.path().join("current.log.2").exists());
        assert!(!dir.path().join("current.log.3").exists());
        let one = std::fs::read_to_string(dir.path().join("current.log.1")).expect("1");
        assert!(one.contains("line 017"));
    }

    #[test]
    fn keep_zero_truncates_and_existing_size_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("current.log"), "y".repeat(90)).expect("seed");
        let mut w = RotatingFile::new(dir.path(), 100, 0);
        w.push_line(b"0123456789abcdef\n");
        w.flush();
        let cur = std::fs::read_to_string(dir.path().join("current.log")).expect("current");
        assert_eq!(cur, "0123456789abcdef\n");
        assert!(!dir.path().join("current.log.1").exists());
    }

    #[test]
    fn unwritable_dir_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("afile");
        std::fs::write(&file, "").expect("file");
        let mut w = RotatingFile::new(&file.join("sub"), 0, 1);
        w.push_line(b"hello\n");
        assert_eq!(w.flush(), 6);
    }
}
