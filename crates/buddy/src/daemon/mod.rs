//! Setup and the single-threaded poll(2) event loop: the service state machine, the
//! controller protocol and the timers.
//!
//! The loop polls a signalfd, the listening socket, the controller connection and the
//! service's output pipes; its timeout is the earliest pending timer (back-off expiry,
//! kill deadline, healthy window, log-drop report) and `-1` when there is none, so an idle
//! buddy never wakes up. The journal is fdatasync'ed once per iteration, after any spawn.
//!
//! Behaviour worth knowing:
//! - after the service's main process is reaped, any process left in its process group is
//!   SIGKILLed (stopped or crashed alike), so a restart never races leftovers;
//! - SIGTERM and SIGINT to the buddy mean `Shutdown` (stop the service, then exit);
//!   SIGHUP and SIGPIPE are ignored;
//! - a second controller is refused with an error frame while the first is alive; a
//!   controller whose peer hung up is replaced.

mod reexec;
mod requests;

use crate::control::Conn;
use crate::diag::Diag;
use crate::journal::Journal;
use crate::logs::now_ms;
use crate::output::Output;
use crate::policy::{self, Counters, Decision, XorShift};
use crate::spawn::{self, Plan};
use crate::sys;
use reeve_proto::buddy::{
    BuddyEvent, BuddySpec, BuddyStatus, ExitStatus, Frame, ProcState, Reply, files,
};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The buddy's version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The lock file older buddies held for their lifetime. A buddy now locks its run
/// directory itself (no file to create at start-up); when this file exists (a directory an
/// older buddy used) it is locked too, so the two kinds still exclude each other.
pub const LEGACY_LOCK: &str = "buddy.lock";

/// How the buddy was started.
pub struct Options {
    /// The run directory (already the current directory).
    pub dir: PathBuf,
    /// Stay in the foreground (no fork, no setsid, stdio kept).
    pub foreground: bool,
    /// Detach without forking (setsid; readiness on the original stdout).
    pub detach: bool,
    /// Start the service at once.
    pub start: bool,
    /// Take over from a buddy that re-executed into this program (`handoff.json`).
    pub resume: bool,
    /// Read the spec from stdin (to EOF) instead of `spec.json`; the agent passes it this
    /// way, so starting a buddy creates no spec file. It is written to `spec.json` only
    /// when it changes (`SetSpec`) or before a re-exec (the next program reads it there).
    pub spec_stdin: bool,
}

#[derive(Clone, Copy, Debug)]
struct Child {
    pid: u32,
    started: Instant,
    healthy_at: Option<Instant>,
}

#[derive(Debug)]
enum Svc {
    Stopped,
    Failed,
    Running(Child),
    Stopping {
        child: Child,
        deadline: Option<Instant>,
    },
    BackingOff {
        until: Instant,
    },
}

/// What happens when the running process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Policy,
    Stop,
    Restart,
    Exit,
}

/// The buddy: all its state.
pub struct Buddy {
    spec: BuddySpec,
    journal: Journal,
    diag: Diag,
    sigfd: OwnedFd,
    listener: UnixListener,
    conn: Option<Conn>,
    output: Output,
    devnull: File,
    _lock: File,
    svc: Svc,
    after: After,
    counters: Counters,
    restarts: u64,
    spawned_once: bool,
    last_exit: Option<ExitStatus>,
    since_ms: u64,
    rng: XorShift,
    epoch: Instant,
    start_ticks: u64,
    boot_id: String,
    exiting: bool,
    last_drop_report: Option<Instant>,
    scratch: Vec<u8>,
    /// The exec plan of the current spec, prepared once (rebuilt after `SetSpec`), so a
    /// restart only forks and execs.
    plan: Option<Plan>,
    /// A re-exec asked for, carried out once its answer is sent.
    pending_exec: Option<String>,
    /// A controller said hello to this program before.
    attached_once: bool,
    /// This program was started fresh (not resumed after a re-exec, where even the first
    /// attach is worth a line in buddy.log).
    fresh: bool,
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// What a buddy is built from, fresh or resumed.
struct Parts {
    spec: BuddySpec,
    journal: Journal,
    diag: Diag,
    sigfd: OwnedFd,
    listener: UnixListener,
    output: Output,
    devnull: File,
    lock: File,
}

/// Takes the run-directory lock (an exclusive `flock` on the directory, the current
/// directory) or explains who holds it. Returns the descriptor to keep for the buddy's
/// lifetime.
fn lock(dir: &std::path::Path) -> Result<File, String> {
    let f = File::open(".").map_err(|e| format!("open {}: {e}", dir.display()))?;
    try_lock(&f, dir)?;
    // A directory an older buddy used: its lock file is what that buddy holds.
    match File::options().read(true).write(true).open(LEGACY_LOCK) {
        Ok(legacy) => {
            // Nobody holds it, so no older buddy runs here. (It is released again when
            // `legacy` is closed; an older buddy is not started beside a live one.)
            try_lock(&legacy, dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("open {}/{LEGACY_LOCK}: {e}", dir.display())),
    }
    Ok(f)
}

fn try_lock(f: &File, dir: &std::path::Path) -> Result<(), String> {
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another buddy{} already owns {}",
            owner_pid().map_or(String::new(), |p| format!(" (pid {p})")),
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("lock {}: {e}", dir.display())),
    }
}

/// The pid of the buddy that holds the run directory, for the refusal's message: the
/// last `BuddyStarted` in the journal (or, in a directory of an older buddy, its lock file).
fn owner_pid() -> Option<u32> {
    let journal = std::fs::read(files::JOURNAL).unwrap_or_default();
    let from_journal = journal.split(|&b| b == b'\n').rev().find_map(|l| {
        match serde_json::from_slice::<reeve_proto::buddy::JournalEntry>(l)
            .ok()?
            .kind
        {
            BuddyEvent::BuddyStarted { buddy_pid, .. } => Some(buddy_pid),
            _ => None,
        }
    });
    from_journal.or_else(|| {
        std::fs::read_to_string(LEGACY_LOCK)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

/// Points fds 0–2 at /dev/null (daemon), or only those that are closed (foreground), so
/// every descriptor the buddy opens later is ≥ 3.
fn fix_stdio(all: bool) -> Result<(), String> {
    for fd in 0..3 {
        if all || !sys::fd_is_open(fd) {
            let null = File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?;
            if null.as_raw_fd() == fd {
                // It landed on the free standard descriptor: keep it there.
                let _ = null.into_raw_fd();
            } else {
                sys::dup_onto(null.as_fd(), fd).map_err(|e| format!("dup2: {e}"))?;
            }
        }
    }
    Ok(())
}

fn read_spec() -> Result<BuddySpec, String> {
    let data = std::fs::read(files::SPEC).map_err(|e| format!("read {}: {e}", files::SPEC))?;
    serde_json::from_slice(&data).map_err(|e| format!("parse {}: {e}", files::SPEC))
}

/// Reads the spec from stdin, to EOF (at most [`reeve_proto::buddy::MAX_FRAME`] bytes).
fn read_spec_stdin() -> Result<BuddySpec, String> {
    let mut data = Vec::new();
    sys::dup_stdin()
        .and_then(|f| {
            f.take(reeve_proto::buddy::MAX_FRAME as u64 + 1)
                .read_to_end(&mut data)
        })
        .map_err(|e| format!("read the spec from stdin: {e}"))?;
    if data.len() > reeve_proto::buddy::MAX_FRAME {
        return Err("the spec on stdin is too large".into());
    }
    serde_json::from_slice(&data).map_err(|e| format!("parse the spec from stdin: {e}"))
}

/// What a fresh and a resumed buddy open alike: the spec (`spec`, or else `spec.json`),
/// the signalfd, the journal and /dev/null.
fn open_common(
    diag: &mut Diag,
    spec: Option<BuddySpec>,
) -> Result<(BuddySpec, OwnedFd, Journal, File), String> {
    let spec = match spec {
        Some(s) => s,
        None => read_spec()?,
    };
    if spec.argv.is_empty() {
        return Err(format!("{}: argv is empty", files::SPEC));
    }
    let sigfd = sys::signalfd_for(&sys::HANDLED_SIGNALS).map_err(|e| format!("signalfd: {e}"))?;
    let (journal, note) = Journal::open(std::path::Path::new(files::JOURNAL))
        .map_err(|e| format!("open {}: {e}", files::JOURNAL))?;
    if let Some(n) = note {
        diag.log(&n);
    }
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    Ok((spec, sigfd, journal, devnull))
}

impl Buddy {
    /// Sets everything up in the run directory (the current directory): lock, spec, stdio,
    /// diagnostics, signals, journal, socket; starts the service if asked.
    pub fn prepare(opts: &Options) -> Result<Buddy, String> {
        let lock = lock(&opts.dir)?;
        // Before stdin is pointed at /dev/null.
        let spec = if opts.spec_stdin {
            Some(read_spec_stdin()?)
        } else {
            None
        };
        fix_stdio(!opts.foreground)?;
        let mut diag = Diag::open(PathBuf::from(files::BUDDY_LOG), opts.foreground);
        let (spec, sigfd, journal, devnull) = open_common(&mut diag, spec)?;
        // We hold the lock, so an existing socket file is stale.
        let _ = std::fs::remove_file(files::SOCKET);
        let listener = UnixListener::bind(files::SOCKET)
            .map_err(|e| format!("bind {}/{}: {e}", opts.dir.display(), files::SOCKET))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let _ = std::fs::set_permissions(files::SOCKET, std::fs::Permissions::from_mode(0o600));
        let output = Output::new(&spec);
        let mut b = Buddy::assemble(Parts {
            spec,
            journal,
            diag,
            sigfd,
            listener,
            output,
            devnull,
            lock,
        });
        b.announce("started", opts.foreground);
        if opts.start {
            b.start_service();
        }
        // The journal is synced right after readiness is signalled (see `main`), so the
        // caller is not kept waiting for the disk.
        Ok(b)
    }

    /// A buddy with the service stopped and fresh counters.
    fn assemble(p: Parts) -> Buddy {
        let start_ticks = sys::self_start_ticks().unwrap_or(0);
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32) ^ start_ticks;
        Buddy {
            spec: p.spec,
            journal: p.journal,
            diag: p.diag,
            sigfd: p.sigfd,
            listener: p.listener,
            conn: None,
            output: p.output,
            devnull: p.devnull,
            _lock: p.lock,
            svc: Svc::Stopped,
            after: After::Policy,
            counters: Counters::default(),
            restarts: 0,
            spawned_once: false,
            last_exit: None,
            since_ms: now_ms(),
            rng: XorShift::new(seed),
            epoch: Instant::now(),
            start_ticks,
            boot_id: sys::boot_id(),
            exiting: false,
            last_drop_report: None,
            scratch: Vec::new(),
            plan: None,
            pending_exec: None,
            attached_once: false,
            fresh: true,
        }
    }

    /// Journals that this program now runs the buddy (`how`: started, resumed …), and
    /// says so in `buddy.log` too if `log` (a plain start is only journaled: the agent
    /// stores it as an event, and creating the log file would cost every start-up).
    fn announce(&mut self, how: &str, log: bool) {
        if log {
            self.diag.log(&format!(
                "buddy {VERSION} pid {} {how} for {:?}",
                std::process::id(),
                self.spec.service
            ));
        }
        self.record(BuddyEvent::BuddyStarted {
            buddy_pid: std::process::id(),
            version: VERSION.to_string(),
        });
    }

    /// Runs the event loop until shutdown; returns the exit code.
    pub fn run(mut self) -> u8 {
        loop {
            if self.exiting {
                return self.finish();
            }
            let timeout = match self.next_deadline() {
                None => -1,
                Some(t) => {
                    let d = t.saturating_duration_since(Instant::now());
                    // Round up so we never wake before the deadline and spin.
                    d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
                }
            };
            let mut fds = Vec::with_capacity(3 + self.output.len());
            let pfd = |fd: i32, events: i16| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            fds.push(pfd(self.sigfd.as_raw_fd(), libc::POLLIN));
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            let conn_at = self.conn.as_ref().map(|c| {
                let ev = if c.wants_write() {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                };
                fds.push(pfd(c.fd().as_raw_fd(), ev));
                fds.len() - 1
            });
            let streams_at = fds.len();
            fds.extend(
                self.output
                    .fds()
                    .map(|fd| pfd(fd.as_raw_fd(), libc::POLLIN)),
            );
            let nstreams = fds.len() - streams_at;
            if let Err(e) = sys::poll(&mut fds, timeout) {
                self.diag.log(&format!("poll: {e}"));
                std::thread::sleep(ms(100));
                continue;
            }
            if fds[0].revents != 0 {
                self.on_signals();
            }
            if let Some(i) = conn_at
                && fds[i].revents != 0
            {
                self.on_conn(fds[i].revents);
            }
            for i in (0..nstreams).rev() {
                if fds[streams_at + i].revents != 0 {
                    self.output.on_readable(i, &self.spec);
                }
            }
            for n in std::mem::take(&mut self.output.notes) {
                self.diag.log(&n);
            }
            if fds[1].revents != 0 {
                self.on_accept();
            }
            self.fire_timers(Instant::now());
            self.sync_journal();
            if self.pending_exec.is_some() {
                self.reexec_now();
            }
        }
    }

    fn finish(&mut self) -> u8 {
        // Keep what the stopped service wrote last.
        for i in (0..self.output.len()).rev() {
            self.output.on_readable(i, &self.spec);
        }
        self.output.finish(&self.spec);
        self.record(BuddyEvent::BuddyExiting);
        self.sync_journal();
        if let Some(c) = self.conn.as_mut() {
            c.drain_for(200);
        }
        let _ = std::fs::remove_file(files::SOCKET);
        self.diag.log("buddy exiting");
        0
    }

    /// fdatasync of the journal if anything was appended since the last one.
    pub fn sync_journal(&mut self) {
        if let Err(e) = self.journal.sync() {
            self.diag.log(&format!("journal: fdatasync: {e}"));
        }
    }

    fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    // ---- events and frames ----

    fn record(&mut self, kind: BuddyEvent) {
        self.record_at(kind, now_ms());
    }

    fn record_at(&mut self, kind: BuddyEvent, ts_ms: u64) {
        let (entry, err) = self.journal.append(kind, ts_ms);
        if let Some(e) = err {
            self.diag.log(&e);
        }
        if self.conn.as_ref().is_some_and(|c| c.hello) {
            self.send(Frame::Event(entry));
        }
    }

    fn send(&mut self, frame: Frame) {
        if let Some(c) = self.conn.as_mut()
            && let Err(e) = c.send(&frame)
        {
            self.drop_conn(&e);
        }
    }

    fn reply(&mut self, id: u64, reply: Reply) {
        self.send(Frame::Reply { id, reply });
    }

    fn drop_conn(&mut self, why: &str) {
        self.diag.log(&format!("controller detached: {why}"));
        self.conn = None;
    }

    fn enter(&mut self, svc: Svc) {
        self.svc = svc;
        self.since_ms = now_ms();
    }

    fn status(&self) -> BuddyStatus {
        let (state, pid) = match &self.svc {
            Svc::Stopped => (ProcState::Stopped, None),
            Svc::Failed => (ProcState::Failed, None),
            Svc::BackingOff { .. } => (ProcState::BackingOff, None),
            Svc::Running(c) => (ProcState::Running, Some(c.pid)),
            Svc::Stopping { child, .. } => (ProcState::Stopping, Some(child.pid)),
        };
        BuddyStatus {
            service: self.spec.service.clone(),
            buddy_pid: std::process::id(),
            buddy_start_ticks: self.start_ticks,
            boot_id: self.boot_id.clone(),
            state,
            pid,
            since_ms: self.since_ms,
            restarts: self.restarts,
            consecutive_failures: self.counters.consecutive_failures,
            last_exit: self.last_exit,
            journal_seq: self.journal.last_seq(),
            dropped_bytes: self.output.dropped_total,
        }
    }

    // ---- the service ----

    fn spawn_child(&mut self) -> Result<u32, String> {
        if self.plan.is_none() {
            let s = &self.spec;
            self.plan = Some(Plan::prepare(&spawn::Command {
                argv: &s.argv,
                env: &s.env,
                cwd: s.cwd.as_deref(),
                uid: s.uid,
                gid: s.gid,
                rlimits: &s.rlimits,
            })?);
        }
        let Some(plan) = self.plan.as_ref() else {
            return Err("no exec plan".into());
        };
        let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let stdio = spawn::Stdio {
            stdin: self.devnull.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
        };
        let pid = spawn::spawn(plan, &stdio)?;
        drop((out_w, err_w));
        if let Err(e) = self.output.add_streams(out_r.into(), err_r.into()) {
            self.diag.log(&format!("output pipes: {e}"));
        }
        Ok(pid)
    }

    fn start_service(&mut self) {
        self.output.configure(&self.spec);
        let spawned = self.spawn_child();
        self.after_spawn(spawned);
    }

    /// Records the outcome of a spawn and enters the matching state.
    fn after_spawn(&mut self, spawned: Result<u32, String>) {
        match spawned {
            Ok(pid) => {
                let restart = if self.spawned_once {
                    self.restarts += 1;
                    self.restarts
                } else {
                    self.spawned_once = true;
                    0
                };
                let now = Instant::now();
                let reset = self.spec.restart.reset_after_ms;
                let healthy_at = (reset > 0).then(|| now + ms(reset));
                self.enter(Svc::Running(Child {
                    pid,
                    started: now,
                    healthy_at,
                }));
                self.record(BuddyEvent::Started { pid, restart });
            }
            Err(error) => {
                self.diag.log(&format!("spawn failed: {error}"));
                self.record(BuddyEvent::SpawnFailed { error });
                let r = self.rng.next_f64();
                let now = self.mono_ms();
                let d = policy::on_spawn_failure(&self.spec.restart, &mut self.counters, now, r);
                self.apply(d);
            }
        }
    }

    fn apply(&mut self, d: Decision) {
        match d {
            Decision::Stop => {
                self.enter(Svc::Stopped);
                self.record(BuddyEvent::Stopped);
            }
            Decision::RestartNow => self.start_service(),
            Decision::BackOff { delay_ms } => {
                self.enter(Svc::BackingOff {
                    until: Instant::now() + ms(delay_ms),
                });
                self.record(BuddyEvent::BackingOff {
                    delay_ms,
                    failures: self.counters.consecutive_failures,
                });
            }
            Decision::Fail { reason } => {
                self.diag.log(&format!("service failed: {reason}"));
                self.enter(Svc::Failed);
                self.record(BuddyEvent::Failed { reason });
            }
        }
    }

    fn on_reaped(&mut self, pid: u32, raw: libc::c_int) {
        if self.output.reaped(pid) {
            return;
        }
        let child = match &self.svc {
            Svc::Running(c) | Svc::Stopping { child: c, .. } if c.pid == pid => *c,
            _ => return,
        };
        let status = sys::exit_status(raw);
        let uptime_ms = child.started.elapsed().as_millis() as u64;
        let after = std::mem::replace(&mut self.after, After::Policy);
        self.last_exit = Some(status);
        // The group must not outlive its leader.
        if sys::group_exists(pid) {
            let _ = sys::kill(-(pid as i32), libc::SIGKILL);
        }
        let exited_at = now_ms();
        let exited = BuddyEvent::Exited {
            pid,
            status,
            uptime_ms,
            expected: after != After::Policy,
        };
        let decision = (after == After::Policy).then(|| {
            let r = self.rng.next_f64();
            let now = self.mono_ms();
            policy::on_exit(
                &self.spec.restart,
                &mut self.counters,
                status,
                uptime_ms,
                now,
                r,
            )
        });
        // An immediate restart forks first and records afterwards: the journal write and
        // the controller's wake-up must not delay the new process.
        let restart_now = after == After::Restart || matches!(decision, Some(Decision::RestartNow));
        if restart_now {
            self.output.configure(&self.spec);
            let spawned = self.spawn_child();
            self.record_at(exited, exited_at);
            self.after_spawn(spawned);
            return;
        }
        self.record_at(exited, exited_at);
        match (after, decision) {
            (After::Policy, Some(d)) => self.apply(d),
            (After::Stop | After::Exit, _) => {
                self.enter(Svc::Stopped);
                self.record(BuddyEvent::Stopped);
                self.exiting |= after == After::Exit;
            }
            _ => {}
        }
    }

    /// Begins stopping the running service, or settles a service that is not running.
    fn stop_service(&mut self, after: After) {
        match &mut self.svc {
            Svc::Running(c) => {
                let child = *c;
                let signal = self.spec.stop.signal;
                let pg = -(child.pid as i32);
                if let Err(e) = sys::kill(pg, signal) {
                    self.diag.log(&format!("kill -{signal} {pg}: {e}"));
                }
                if signal != libc::SIGKILL && signal != libc::SIGCONT {
                    let _ = sys::kill(pg, libc::SIGCONT);
                }
                self.after = after;
                self.enter(Svc::Stopping {
                    child,
                    deadline: Some(Instant::now() + ms(self.spec.stop.kill_timeout_ms)),
                });
                self.record(BuddyEvent::Stopping {
                    pid: child.pid,
                    signal,
                });
            }
            Svc::Stopping { .. } => {
                if self.after != After::Exit {
                    self.after = after;
                }
            }
            Svc::BackingOff { .. } | Svc::Stopped | Svc::Failed => {
                if matches!(self.svc, Svc::BackingOff { .. }) {
                    self.enter(Svc::Stopped);
                    self.record(BuddyEvent::Stopped);
                }
                match after {
                    After::Restart => {
                        self.counters.clear();
                        self.start_service();
                    }
                    After::Exit => self.exiting = true,
                    After::Stop | After::Policy => {}
                }
            }
        }
    }

    fn request_start(&mut self) {
        match self.svc {
            Svc::Running(_) => {}
            Svc::Stopping { .. } => {
                if self.after != After::Exit {
                    self.after = After::Restart;
                }
            }
            Svc::BackingOff { .. } | Svc::Stopped | Svc::Failed => {
                self.counters.clear();
                self.start_service();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let svc = match &self.svc {
            Svc::BackingOff { until } => Some(*until),
            Svc::Stopping { deadline, .. } => *deadline,
            Svc::Running(c) => c.healthy_at,
            Svc::Stopped | Svc::Failed => None,
        };
        let drops = (self.output.dropped_unreported > 0).then(|| {
            self.last_drop_report
                .map_or_else(Instant::now, |t| t + Duration::from_secs(1))
        });
        match (svc, drops) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        match &mut self.svc {
            Svc::BackingOff { until } if *until <= now => self.start_service(),
            Svc::Stopping {
                child,
                deadline: Some(t),
            } if *t <= now => {
                let pid = child.pid;
                let _ = sys::kill(-(pid as i32), libc::SIGKILL);
                self.svc = Svc::Stopping {
                    child: *child,
                    deadline: None,
                };
                self.record(BuddyEvent::Killed { pid });
            }
            Svc::Running(c) if c.healthy_at.is_some_and(|t| t <= now) => {
                c.healthy_at = None;
                self.counters.healthy();
            }
            _ => {}
        }
        if self.output.dropped_unreported > 0
            && self
                .last_drop_report
                .is_none_or(|t| now >= t + Duration::from_secs(1))
        {
            let bytes = std::mem::take(&mut self.output.dropped_unreported);
            self.last_drop_report = Some(now);
            self.diag.log(&format!("log: dropped {bytes} bytes"));
            self.record(BuddyEvent::LogDropped { bytes });
        }
    }

    // ---- signals ----

    fn on_signals(&mut self) {
        let sigs = match sys::read_signals(self.sigfd.as_fd()) {
            Ok(s) => s,
            Err(e) => {
                self.diag.log(&format!("signalfd: {e}"));
                Vec::new()
            }
        };
        for s in &sigs {
            let s = *s as i32;
            if s == libc::SIGTERM || s == libc::SIGINT {
                self.diag
                    .log(&format!("signal {s}: stopping the service and exiting"));
                self.stop_service(After::Exit);
            }
        }
        // Reap after every wake-up of the signalfd (SIGCHLDs coalesce).
        while let Some((pid, raw)) = sys::reap_any() {
            self.on_reaped(pid, raw);
        }
    }
}
