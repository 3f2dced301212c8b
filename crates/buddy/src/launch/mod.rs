//! `reeve-buddy launch --home DIR -- reeve agent ARGS…`: the tiny stable launcher of
//! DESIGN §2.4. It runs the agent as its child and keeps it running (restarts with
//! back-off), forwards signals to it, and carries out self-updates: when the agent asks for a
//! switch and exits, the launcher starts the new agent on trial, counts the boot, and
//! switches back to the current agent if the new one exits, panics, or does not report
//! healthy in time. The decisions are in `state.rs`; the protocol in
//! `reeve_proto::launcher`. Services never notice: they belong to their buddies.
//!
//! Like the buddy it is single-threaded and sleeps in `poll` (signalfd, the agent's pipe).

mod state;

use crate::sys;
use reeve_proto::launcher::{ENV_FD, ENV_HOME, ENV_PACKAGE, ENV_TRIAL, ToLauncher};
use state::Boot;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `reeve-buddy launch`.
pub struct Options {
    /// Home: state file, lock, unpacked versions.
    pub home: PathBuf,
    /// The agent's command line; its program is the one run when no update is current.
    pub argv: Vec<OsString>,
}

/// A committed agent that ran this long is restarted at once after it exits.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest pause between restarts of an agent that keeps exiting.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time between SIGTERM and SIGKILL for an agent stopped for its trial's time limit.
const KILL_GRACE: Duration = Duration::from_secs(10);

fn say(msg: &str) {
    eprintln!("reeve-buddy launch: {msg}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How one run of the agent ended.
struct Ended {
    /// Exit code to pass on (128 + signal for a signal).
    code: u8,
    /// Words for the log ("exited with status 1", "was killed by signal 9").
    how: String,
    /// The launcher was told to stop.
    stopping: bool,
    /// The trial agent reported healthy during this run.
    committed: bool,
    /// The trial agent was stopped for its time limit.
    timed_out: bool,
}

/// Runs the launcher until it is told to stop; answers the agent's last exit code.
pub fn run(opts: Options) -> ExitCode {
    match Launcher::new(opts) {
        Ok(mut l) => l.run(),
        Err(e) => {
            say(&e);
            ExitCode::FAILURE
        }
    }
}

struct Launcher {
    opts: Options,
    signals: OwnedFd,
    _lock: File,
    /// Consecutive quick exits of the committed agent.
    failures: u32,
}

impl Launcher {
    fn new(opts: Options) -> Result<Self, String> {
        if opts.argv.is_empty() {
            return Err("no agent command given (… launch --home DIR -- reeve agent ARGS)".into());
        }
        std::fs::create_dir_all(&opts.home)
            .map_err(|e| format!("cannot create {}: {e}", opts.home.display()))?;
        let lock_path = opts.home.join("launcher.lock");
        let lock = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another launcher already runs with home {}",
                    opts.home.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()));
            }
        }
        let signals = sys::signalfd_for(&[
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ])
        .map_err(|e| format!("signalfd: {e}"))?;
        Ok(Self {
            opts,
            signals,
            _lock: lock,
            failures: 0,
        })
    }

    fn run(&mut self) -> ExitCode {
        loop {
            let (mut st, note) = state::load(&self.opts.home);
            if let Some(n) = note {
                say(&n);
            }
            let boot = state::next_boot(&mut st, now_ms());
            self.save(&st);
            let on_trial = matches!(boot, Boot::Trial { .. });
            let started = Instant::now();
            let ended = match self.start(&boot) {
                Ok((pid, pipe)) => self.watch(pid, pipe, &boot),
                Err(e) if on_trial => {
                    self.finish_trial(&format!("it could not be started: {e}"));
                    continue;
                }
                Err(e) => {
                    say(&format!("cannot start the agent: {e}"));
                    Ended {
                        code: 1,
                        how: e,
                        stopping: false,
                        committed: false,
                        timed_out: false,
                    }
                }
            };
            if ended.stopping {
                say(&format!("agent {}; stopping", ended.how));
                return ExitCode::from(ended.code);
            }
            if let Boot::Trial { timeout_ms, .. } = &boot
                && !ended.committed
            {
                let why = if ended.timed_out {
                    format!(
                        "it did not report healthy within {} s",
                        timeout_ms.div_ceil(1000)
                    )
                } else {
                    format!("it {} before it reported healthy", ended.how)
                };
                self.finish_trial(&why);
                continue;
            }
            let (st, _) = state::load(&self.opts.home);
            if st.trial.is_some() {
                say(&format!("agent {}; starting the update", ended.how));
                self.failures = 0;
                continue;
            }
            if started.elapsed() >= STABLE_AFTER {
                self.failures = 0;
            }
            let pause = Duration::from_secs(1 << self.failures.min(5)).min(MAX_BACKOFF);
            self.failures += 1;
            say(&format!(
                "agent {}; restarting in {} s",
                ended.how,
                pause.as_secs()
            ));
            if self.pause(pause) {
                return ExitCode::from(ended.code);
            }
        }
    }

    /// Switches back from a failed trial and records why.
    fn finish_trial(&self, why: &str) {
        let (mut st, _) = state::load(&self.opts.home);
        let version = st.trial.as_ref().map(|t| t.to.version.clone());
        state::roll_back(&mut st, why, now_ms());
        self.save(&st);
        say(&format!(
            "update to agent {} switched back: {why}",
            version.as_deref().unwrap_or("?")
        ));
    }

    fn save(&self, st: &reeve_proto::launcher::LauncherState) {
        if let Err(e) = state::save(&self.opts.home, st) {
            say(&format!(
                "cannot write the state file in {}: {e}",
                self.opts.home.display()
            ));
        }
    }

    /// Starts the agent for `boot`: its pid and the read end of its pipe.
    fn start(&self, boot: &Boot) -> Result<(u32, OwnedFd), String> {
        let (program, version) = match boot {
            Boot::Current(Some(p)) if std::path::Path::new(&p.exe).is_file() => {
                (OsString::from(&p.exe), Some(p.version.as_str()))
            }
            Boot::Current(Some(p)) => {
                say(&format!(
                    "the current agent {} is gone; running the command line's program",
                    p.exe
                ));
                (self.opts.argv[0].clone(), None)
            }
            Boot::Current(None) => (self.opts.argv[0].clone(), None),
            Boot::Trial { to, .. } => (OsString::from(&to.exe), Some(to.version.as_str())),
        };
        let (read, write) = sys::inheritable_pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&self.opts.argv[1..])
            .env(ENV_FD, write.as_raw_fd().to_string())
            .env(ENV_HOME, &self.opts.home)
            .env_remove(ENV_TRIAL)
            .env_remove(ENV_PACKAGE);
        if let Some(v) = version {
            cmd.env(ENV_PACKAGE, v);
        }
        if let Boot::Trial {
            need_hub,
            boot,
            to,
            timeout_ms,
        } = boot
        {
            cmd.env(ENV_TRIAL, if *need_hub { "hub" } else { "local" });
            say(&format!(
                "starting agent {} on trial (boot {boot}, {} s to report healthy)",
                to.version,
                timeout_ms.div_ceil(1000)
            ));
        }
        sys::child_of_launcher(&mut cmd, libc::SIGTERM);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", PathBuf::from(&program).display()))?;
        // The child owns the write end now; the launcher sees the pipe's end when it exits.
        drop(write);
        Ok((child.id(), read))
    }

    /// Watches the agent `pid` until it exits: its messages, signals, the trial deadline.
    fn watch(&self, pid: u32, pipe: OwnedFd, boot: &Boot) -> Ended {
        let started = Instant::now();
        let deadline = match boot {
            Boot::Trial { timeout_ms, .. } => Some(started + Duration::from_millis(*timeout_ms)),
            Boot::Current(_) => None,
        };
        let mut on_trial = deadline.is_some();
        let mut pipe = Some(pipe);
        let mut buf = Vec::new();
        let mut stopping = false;
        let mut committed = false;
        let mut timed_out = false;
        let mut kill_at: Option<Instant> = None;
        loop {
            let due = if on_trial {
                kill_at.or(deadline)
            } else {
                kill_at
            };
            let timeout = due.map_or(-1, |d| {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            });
            let mut fds = [
                libc::pollfd {
                    fd: self.signals.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pipe.as_ref().map_or(-1, |p| p.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let Err(e) = sys::poll(&mut fds, timeout) {
                say(&format!("poll: {e}"));
            }
            if fds[1].revents != 0
                && let Some(p) = &pipe
            {
                let open = read_lines(p, &mut buf, |msg| {
                    let mut st = state::load(&self.opts.home).0;
                    let note = state::take(&mut st, msg, on_trial, now_ms());
                    if on_trial && st.trial.is_none() {
                        on_trial = false;
                        committed = true;
                    }
                    self.save(&st);
                    say(&note);
                });
                if !open {
                    pipe = None;
                }
            }
            if fds[0].revents != 0 {
                for sig in sys::read_signals(self.signals.as_fd()).unwrap_or_default() {
                    let sig = sig as libc::c_int;
                    if sig == libc::SIGCHLD {
                        continue;
                    }
                    if matches!(sig, libc::SIGTERM | libc::SIGINT) {
                        stopping = true;
                    }
                    let _ = sys::kill(pid as i32, sig);
                }
                while let Some((p, raw)) = sys::reap_any() {
                    if p == pid {
                        let (code, how) = describe(raw);
                        return Ended {
                            code,
                            how,
                            stopping,
                            committed,
                            timed_out,
                        };
                    }
                }
            }
            let now = Instant::now();
            if let Some(k) = kill_at
                && now >= k
            {
                let _ = sys::kill(pid as i32, libc::SIGKILL);
                kill_at = None;
            } else if on_trial
                && kill_at.is_none()
                && !timed_out
                && deadline.is_some_and(|d| now >= d)
            {
                say("the agent on trial did not report healthy in time; stopping it");
                timed_out = true;
                let _ = sys::kill(pid as i32, libc::SIGTERM);
                kill_at = Some(now + KILL_GRACE);
            }
        }
    }

    /// Waits `pause` while answering signals; `true` when told to stop meanwhile.
    fn pause(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [libc::pollfd {
                fd: self.signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut fds, left.as_millis().min(i32::MAX as u128) as i32);
            if fds[0].revents != 0 {
                let sigs = sys::read_signals(self.signals.as_fd()).unwrap_or_default();
                if sigs
                    .iter()
                    .any(|&s| matches!(s as libc::c_int, libc::SIGTERM | libc::SIGINT))
                {
                    return true;
                }
            }
        }
    }
}

/// Reads what is available on the agent's pipe and hands over every complete line that
/// parses; `false` once the pipe is closed.
fn read_lines(pipe: &OwnedFd, buf: &mut Vec<u8>, mut on_msg: impl FnMut(ToLauncher)) -> bool {
    let mut f = File::from(match pipe.try_clone() {
        Ok(fd) => fd,
        Err(_) => return false,
    });
    let mut chunk = [0u8; 4096];
    let open = loop {
        match f.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
        if buf.len() > 64 * 1024 {
            say("the agent wrote an over-long line to the launcher pipe; dropped");
            buf.clear();
        }
    };
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        match serde_json::from_slice::<ToLauncher>(&line) {
            Ok(msg) => on_msg(msg),
            Err(e) => say(&format!("ignored a line the agent wrote: {e}")),
        }
    }
    open
}

/// Exit code to pass on and words for a raw wait status.
fn describe(raw: libc::c_int) -> (u8, String) {
    let st = sys::exit_status(raw);
    match (st.code, st.signal) {
        (Some(c), _) => (c.clamp(0, 255) as u8, format!("exited with status {c}")),
        (None, Some(s)) => (
            (128 + s).clamp(0, 255) as u8,
            format!("was killed by signal {s}"),
        ),
        _ => (1, "ended".into()),
    }
}
