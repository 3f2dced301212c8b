//! The buddy's own diagnostics: timestamped lines in `RUN_DIR/buddy.log` (rotated once to
//! `buddy.log.1` past 1 MiB), echoed to stderr in the foreground.

use crate::logs::{format_ts, now_ms};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

const MAX_SIZE: u64 = 1 << 20;

/// The diagnostics sink.
pub struct Diag {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    echo: bool,
}

impl Diag {
    /// Opens `path` for appending (failures are tolerated: diagnostics are best effort).
    pub fn open(path: PathBuf, echo: bool) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Diag {
            path,
            file,
            size,
            echo,
        }
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
