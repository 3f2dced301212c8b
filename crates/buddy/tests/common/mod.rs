//! Test helpers: start a real `reeve-buddy` in a temp run dir, talk to it with a tiny
//! line-delimited JSON client, and clean every process up on drop.

#![allow(unsafe_code, dead_code)]

use reeve_proto::buddy::{
    BuddyEvent, BuddySpec, BuddyStatus, Frame, JournalEntry, LogSpec, Op, PROTOCOL_VERSION, Reply,
    Request, RestartSpec, StopSpec, files,
};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_reeve-buddy");
pub const T: Duration = Duration::from_secs(10);

/// A spec running `sh -c script` in `dir`, restarting at once, logging to `dir/logs`.
pub fn spec(dir: &Path, script: &str) -> BuddySpec {
    BuddySpec {
        service: "test".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: Some(dir.to_path_buf()),
        uid: None,
        gid: None,
        rlimits: vec![],
        restart: RestartSpec {
            backoff_initial_ms: 0,
            reset_after_ms: 60_000,
            ..RestartSpec::default()
        },
        stop: StopSpec {
            signal: libc::SIGTERM,
            kill_timeout_ms: 3_000,
        },
        log: LogSpec {
            dir: dir.join("logs"),
            max_size: 1 << 20,
            keep: 2,
            pipe: None,
            to_file: true,
        },
    }
}

pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Waits until `f` holds, or panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A buddy process in its own temp run dir.
pub struct Buddy {
    pub dir: tempfile::TempDir,
    pub pid: u32,
}

impl Buddy {
    /// Writes `spec` (built from the dir) and starts the daemon with extra `args`.
    pub fn start(make: impl FnOnce(&Path) -> BuddySpec, args: &[&str]) -> Buddy {
        let dir = tempfile::Builder::new()
            .prefix("bd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let spec = make(dir.path());
        write_spec(dir.path(), &spec);
        let out = Command::new(BIN)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run buddy");
        assert!(
            out.status.success(),
            "buddy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = read_pid(dir.path());
        Buddy { dir, pid }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(files::SOCKET)
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket())
    }

    /// A connected client after Hello{after_seq: 0}.
    pub fn attach(&self) -> (Client, BuddyStatus) {
        let mut c = self.client();
        let st = c.hello(0);
        (c, st)
    }

    /// Every entry currently in the journal file.
    pub fn journal(&self) -> Vec<JournalEntry> {
        journal_entries(self.path())
    }
}

pub fn write_spec(dir: &Path, spec: &BuddySpec) {
    std::fs::write(
        dir.join(files::SPEC),
        serde_json::to_vec(spec).expect("spec json"),
    )
    .expect("write spec");
}

/// The pid of the buddy that started last in `dir` (its `BuddyStarted` journal entry).
pub fn read_pid(dir: &Path) -> u32 {
    journal_entries(dir)
        .iter()
        .rev()
        .find_map(|e| match e.kind {
            BuddyEvent::BuddyStarted { buddy_pid, .. } => Some(buddy_pid),
            _ => None,
        })
        .expect("a BuddyStarted entry in the journal")
}

pub fn journal_entries(dir: &Path) -> Vec<JournalEntry> {
    std::fs::read_to_string(dir.join(files::JOURNAL))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Drop for Buddy {
    fn drop(&mut self) {
        // Kill every service group the buddy ever started, then the buddy.
        for e in self.journal() {
            if let BuddyEvent::Started { pid, .. } = e.kind {
                kill(-(pid as i32), libc::SIGKILL);
            }
        }
        kill(self.pid as i32, libc::SIGKILL);
    }
}

/// A tiny controller.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    /// Events received and not yet consumed by `wait_event`.
    pub events: VecDeque<JournalEntry>,
    /// Replies received out of order.
    replies: VecDeque<(u64, Reply)>,
    pub eof: bool,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        Self::from_stream(UnixStream::connect(path).expect("connect"))
    }

    /// Connects once the daemon listens: its socket file appears at `bind`, a moment
    /// before `listen` (a connect in between is refused).
    pub fn connect_within(path: &Path, timeout: Duration) -> Client {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => return Self::from_stream(stream),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{} not listening after {timeout:?}: {e}",
                    path.display()
                ),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn from_stream(stream: UnixStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            eof: false,
        }
    }

    /// Reads one frame, or None at the deadline / EOF.
    pub fn frame(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            if let Some(n) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=n).collect();
                return Some(serde_json::from_slice(&line).expect("frame json"));
            }
            if self.eof || Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
    }

    fn pump(&mut self, deadline: Instant) -> bool {
        match self.frame(deadline) {
            Some(Frame::Event(e)) => self.events.push_back(e),
            Some(Frame::Reply { id, reply }) => self.replies.push_back((id, reply)),
            None => return false,
        }
        true
    }

    pub fn send(&mut self, op: Op) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&Request { id, op }).expect("json");
        line.push(b'\n');
        self.stream.write_all(&line).expect("send");
        id
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, op: Op) -> Reply {
        let id = self.send(op);
        let deadline = Instant::now() + T;
        loop {
            if let Some(i) = self.replies.iter().position(|(rid, _)| *rid == id) {
                return self.replies.remove(i).expect("reply").1;
            }
            assert!(self.pump(deadline), "no reply to request {id}");
        }
    }

    pub fn hello(&mut self, after_seq: u64) -> BuddyStatus {
        match self.request(Op::Hello {
            protocol: PROTOCOL_VERSION,
            controller: "test".into(),
            after_seq,
        }) {
            Reply::Welcome {
                protocol, status, ..
            } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                *status
            }
            r => panic!("expected welcome, got {r:?}"),
        }
    }

    pub fn status(&mut self) -> BuddyStatus {
        match self.request(Op::Status) {
            Reply::Status(s) => *s,
            r => panic!("expected status, got {r:?}"),
        }
    }

    /// Consumes events in order until one matches `pred`; panics after `timeout`.
    pub fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&BuddyEvent) -> bool,
    ) -> JournalEntry {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(e) = self.events.pop_front() {
                if pred(&e.kind) {
                    return e;
                }
            }
            if !self.pump(deadline) {
                panic!("timed out waiting for {what}");
            }
        }
    }

    /// The pid of the next `Started` event.
    pub fn started(&mut self) -> u32 {
        match self
            .wait_event("started", T, |k| matches!(k, BuddyEvent::Started { .. }))
            .kind
        {
            BuddyEvent::Started { pid, .. } => pid,
            _ => unreachable!(),
        }
    }
}
