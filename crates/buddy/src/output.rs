//! Draining the service's stdout/stderr: read whenever readable (a writer must never block,
//! controller or not), split into lines, write them to the rotating log file and/or the
//! log-pipe helper.
//!
//! Partial lines are flushed as a line when they exceed [`MAX_PARTIAL`] or at EOF. The pipe
//! helper (`/bin/sh -c <log.pipe>`, own session) gets the raw lines on a non-blocking pipe;
//! what does not fit is dropped and counted (a batch may then be cut mid-line). A dead helper
//! is respawned at the next output, at most once per second.

use crate::logs::{RotatingFile, format_ts, now_ms};
use crate::spawn::{self, Plan};
use reeve_proto::buddy::BuddySpec;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// A partial line longer than this is written out as a line of its own.
pub const MAX_PARTIAL: usize = 8 << 10;

/// Read chunk size (one buffer, reused).
const CHUNK: usize = 16 << 10;

/// Upper bound of bytes read from one stream per wake-up, for fairness.
const PER_WAKE: usize = 256 << 10;

/// One pipe from the service (stdout or stderr).
struct Stream {
    file: File,
    marker: u8,
    partial: Vec<u8>,
}

/// The log-pipe helper process.
#[derive(Default)]
struct PipeHelper {
    cmd: Option<String>,
    pid: Option<u32>,
    stdin: Option<File>,
    last_spawn: Option<Instant>,
}

/// All output handling of one service.
pub struct Output {
    streams: Vec<Stream>,
    file: Option<RotatingFile>,
    helper: PipeHelper,
    pipe_buf: Vec<u8>,
    line: Vec<u8>,
    chunk: Vec<u8>,
    /// Total bytes dropped.
    pub dropped_total: u64,
    /// Bytes dropped and not yet journaled.
    pub dropped_unreported: u64,
    /// Diagnostics for buddy.log.
    pub notes: Vec<String>,
}

impl Output {
    /// Output handling for `spec.log`.
    pub fn new(spec: &BuddySpec) -> Self {
        let mut o = Output {
            streams: Vec::new(),
            file: None,
            helper: PipeHelper::default(),
            pipe_buf: Vec::new(),
            line: Vec::new(),
            chunk: Vec::new(),
            dropped_total: 0,
            dropped_unreported: 0,
            notes: Vec::new(),
        };
        o.configure(spec);
        o
    }

    /// Applies (possibly changed) log settings.
    pub fn configure(&mut self, spec: &BuddySpec) {
        let l = &spec.log;
        if !l.to_file {
            self.file = None;
        } else if !self
            .file
            .as_ref()
            .is_some_and(|f| f.same_as(&l.dir, l.max_size, l.keep))
        {
            self.file = Some(RotatingFile::new(&l.dir, l.max_size, l.keep));
        }
        if self.helper.cmd != l.pipe {
            // Closing stdin makes the old helper exit on EOF.
            self.helper.stdin = None;
            self.helper.cmd = l.pipe.clone();
            self.helper.last_spawn = None;
        }
    }

    /// Takes a new pair of read ends (made non-blocking here).
    pub fn add_streams(&mut self, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<()> {
        self.adopt_stream(stdout, b'o')?;
        self.adopt_stream(stderr, b'e')
    }

    /// Takes one read end, `marker` `o` (stdout) or `e` (stderr); also an inherited one (a
    /// re-executed buddy's handoff).
    pub fn adopt_stream(&mut self, fd: OwnedFd, marker: u8) -> io::Result<()> {
        crate::sys::set_nonblocking(fd.as_fd())?;
        self.streams.push(Stream {
            file: File::from(fd),
            marker,
            partial: Vec::new(),
        });
        Ok(())
    }

    /// The open streams' descriptors and markers (for a handoff).
    pub fn stream_fds(&self) -> Vec<(BorrowedFd<'_>, u8)> {
        self.streams
            .iter()
            .map(|s| (s.file.as_fd(), s.marker))
            .collect()
    }

    /// Descriptors to poll for reading.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.streams.iter().map(|s| s.file.as_fd())
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Reads what stream `i` has; returns false when it reached EOF (and was removed).
    /// Call for streams in descending index order when removing.
    pub fn on_readable(&mut self, i: usize, spec: &BuddySpec) -> bool {
        if self.chunk.len() < CHUNK {
            self.chunk.resize(CHUNK, 0);
        }
        let mut total = 0;
        let mut eof = false;
        while total < PER_WAKE {
            let Some(s) = self.streams.get_mut(i) else {
                return false;
            };
            match s.file.read(&mut self.chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    self.process(i, n, spec);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            let s = self.streams.remove(i);
            if !s.partial.is_empty() {
                let ts = self.timestamp();
                self.emit(&ts, s.marker, &s.partial);
                self.flush(spec);
            }
        }
        !eof
    }

    fn timestamp(&mut self) -> [u8; 24] {
        let mut v = Vec::with_capacity(24);
        format_ts(now_ms(), &mut v);
        let mut ts = [b' '; 24];
        let n = v.len().min(24);
        ts[..n].copy_from_slice(&v[..n]);
        ts
    }

    /// Splits `self.chunk[..n]` of stream `i` into lines.
    fn process(&mut self, i: usize, n: usize, spec: &BuddySpec) {
        let ts = self.timestamp();
        let chunk = std::mem::take(&mut self.chunk);
        let mut partial = std::mem::take(&mut self.streams[i].partial);
        let marker = self.streams[i].marker;
        let mut rest = &chunk[..n];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                self.emit(&ts, marker, &rest[..nl]);
            } else {
                partial.extend_from_slice(&rest[..nl]);
                self.emit(&ts, marker, &partial);
                partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        partial.extend_from_slice(rest);
        if partial.len() > MAX_PARTIAL {
            self.emit(&ts, marker, &partial);
            partial.clear();
        }
        if partial.capacity() > 2 * MAX_PARTIAL {
            partial.shrink_to(MAX_PARTIAL);
        }
        self.streams[i].partial = partial;
        self.chunk = chunk;
        self.flush(spec);
    }

    fn emit(&mut self, ts: &[u8; 24], marker: u8, line: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            self.line.clear();
            self.line.extend_from_slice(ts);
            self.line.extend_from_slice(&[b' ', marker, b' ']);
            self.line.extend_from_slice(line);
            self.line.push(b'\n');
            let d = f.push_line(&self.line);
            self.dropped(d);
        }
        if self.helper.cmd.is_some() {
            self.pipe_buf.extend_from_slice(line);
            self.pipe_buf.push(b'\n');
        }
    }

    fn dropped(&mut self, n: u64) {
        self.dropped_total += n;
        self.dropped_unreported += n;
    }

    fn flush(&mut self, spec: &BuddySpec) {
        if let Some(f) = self.file.as_mut() {
            let d = f.flush();
            self.dropped(d);
        }
        if !self.pipe_buf.is_empty() {
            self.flush_pipe(spec);
        }
    }

    fn flush_pipe(&mut self, spec: &BuddySpec) {
        if self.helper.stdin.is_none() {
            self.spawn_helper(spec);
        }
        let buf = std::mem::take(&mut self.pipe_buf);
        let mut written = 0;
        if let Some(w) = self.helper.stdin.as_mut() {
            while written < buf.len() {
                match w.write(&buf[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.notes.push(format!("log pipe: write: {e}"));
                        self.helper.stdin = None;
                        break;
                    }
                }
            }
        }
        self.dropped((buf.len() - written) as u64);
        self.pipe_buf = buf;
        self.pipe_buf.clear();
        if self.pipe_buf.capacity() > 64 << 10 {
            self.pipe_buf.shrink_to(16 << 10);
        }
    }

    fn spawn_helper(&mut self, spec: &BuddySpec) {
        let Some(cmd) = self.helper.cmd.clone() else {
            return;
        };
        if self
            .helper
            .last_spawn
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.helper.last_spawn = Some(Instant::now());
        match spawn_pipe_helper(&cmd, spec) {
            Ok((pid, stdin)) => {
                self.helper.pid = Some(pid);
                self.helper.stdin = Some(stdin);
            }
            Err(e) => self.notes.push(format!("log pipe {cmd:?}: {e}")),
        }
    }

    /// Called for every reaped pid; true if it was the pipe helper.
    pub fn reaped(&mut self, pid: u32) -> bool {
        if self.helper.pid == Some(pid) {
            self.helper.pid = None;
            self.helper.stdin = None;
            return true;
        }
        false
    }

    /// Flushes partial lines of every stream (on exit).
    pub fn finish(&mut self, spec: &BuddySpec) {
        let ts = self.timestamp();
        for i in 0..self.streams.len() {
            let partial = std::mem::take(&mut self.streams[i].partial);
            if !partial.is_empty() {
                let m = self.streams[i].marker;
                self.emit(&ts, m, &partial);
            }
        }
        self.flush(spec);
        self.helper.stdin = None;
    }
}

/// Spawns `/bin/sh -c cmd` with a non-blocking pipe as stdin and /dev/null as output.
fn spawn_pipe_helper(cmd: &str, spec: &BuddySpec) -> Result<(u32, File), String> {
    let argv = ["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let plan = Plan::prepare(&spawn::Command {
        argv: &argv,
        env: &spec.env,
        cwd: None,
        uid: spec.uid,
        gid: spec.gid,
        rlimits: &[],
    })?;
    let (r, w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let stdio = spawn::Stdio {
        stdin: r.as_raw_fd(),
        stdout: null.as_raw_fd(),
        stderr: null.as_raw_fd(),
    };
    let pid = spawn::spawn(&plan, &stdio)?;
    drop(r);
    let w: OwnedFd = w.into();
    crate::sys::set_nonblocking(w.as_fd()).map_err(|e| format!("nonblocking: {e}"))?;
    Ok((pid, File::from(w)))
}
