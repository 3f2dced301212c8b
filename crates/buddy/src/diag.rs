//! The buddy's own diagnostics: timestamped lines in `RUN_DIR/buddy.log` (rotated once to
//! `buddy.log.1` past 1 MiB), echoed to stderr in the foreground. The file is created at
//! the first line, so a buddy with nothing to say creates no file (inode creation is a
//! good part of a buddy's start-up cost).

use crate::logs::{format_ts, now_ms};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

const MAX_SIZE: u64 = 1 << 20;

/// The diagnostics sink.
pub struct Diag {
    path: PathBuf,
    /// Opened at the first line.
    file: Option<File>,
    opened: bool,
    size: u64,
    echo: bool,
}

impl Diag {
    /// Diagnostics appended to `path`, opened at the first line (failures are tolerated:
    /// diagnostics are best effort).
    pub fn open(path: PathBuf, echo: bool) -> Self {
        Diag {
            path,
            file: None,
            opened: false,
            size: 0,
            echo,
        }
    }

    fn ensure_open(&mut self) {
        if self.opened {
            return;
        }
        self.opened = true;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    /// Writes one line.
    pub fn log(&mut self, msg: &str) {
        let mut line = Vec::with_capacity(msg.len() + 40);
        format_ts(now_ms(), &mut line);
        line.push(b' ');
        line.extend_from_slice(msg.as_bytes());
        line.push(b'\n');
        if self.echo {
            let _ = std::io::stderr().write_all(&line);
        }
        self.ensure_open();
        if self.size + line.len() as u64 > MAX_SIZE {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            self.size = 0;
        }
        if let Some(f) = self.file.as_mut()
            && f.write_all(&line).is_ok()
        {
            self.size += line.len() as u64;
        }
    }
}
