//! The agent ↔ buddy protocol: newline-delimited JSON frames over the buddy's Unix socket.
//!
//! The agent sends [`Request`]s, each with an `id`; the buddy answers every request with one
//! [`Frame::Reply`] carrying the same `id`, and pushes [`Frame::Event`]s from its journal as
//! they happen. The first request on a connection must be [`Request::Hello`]; a buddy answers
//! one controller at a time and refuses a second.
//!
//! A frame is at most [`MAX_FRAME`] bytes including its newline; larger frames are a protocol
//! error and close the connection.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Protocol version spoken by this build. A buddy accepts any controller whose `protocol` is
/// equal or newer and answers with its own version, so an old buddy keeps working under a
/// new agent.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts, newline included.
pub const MAX_FRAME: usize = 1 << 20;

/// File names inside a buddy's run directory.
pub mod files {
    /// The compiled [`super::BuddySpec`], written by the agent before the buddy starts.
    pub const SPEC: &str = "spec.json";
    /// The buddy's control socket.
    pub const SOCKET: &str = "buddy.sock";
    /// The buddy's durable event journal (JSON lines of [`super::JournalEntry`]).
    pub const JOURNAL: &str = "journal";
    /// The buddy's own diagnostics (what it cannot report over the socket).
    pub const BUDDY_LOG: &str = "buddy.log";
    /// What a buddy hands to the program it re-executes into ([`super::Handoff`]).
    pub const HANDOFF: &str = "handoff.json";
}

/// How a service is restarted when it exits on its own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart after every exit that was not asked for.
    #[default]
    Always,
    /// Restart only after a non-zero exit code or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

/// The restart and back-off policy a buddy runs by itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RestartSpec {
    /// When to restart.
    pub mode: RestartMode,
    /// Delay before the first restart of a failure streak, in milliseconds (0: at once).
    pub backoff_initial_ms: u64,
    /// Upper bound of the delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Factor applied to the delay after each consecutive failure (≥ 1).
    pub backoff_multiplier: f64,
    /// Random extra fraction of the delay, 0.0 ..= 1.0.
    pub jitter: f64,
    /// A service that stayed up this long is healthy again: its back-off and consecutive
    /// failure count reset (systemd never resets; we do).
    pub reset_after_ms: u64,
    /// At most this many restarts within `restart_window_ms`, then `failed`.
    pub max_restarts: Option<u32>,
    /// The window for `max_restarts`, in milliseconds.
    pub restart_window_ms: u64,
    /// After this many failures in a row the service is `failed` and not restarted.
    pub max_consecutive_failures: Option<u32>,
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            mode: RestartMode::Always,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            backoff_multiplier: 2.0,
            jitter: 0.0,
            reset_after_ms: 10_000,
            max_restarts: None,
            restart_window_ms: 60_000,
            max_consecutive_failures: None,
        }
    }
}

/// How a service is stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StopSpec {
    /// Signal number sent to the service's process group first.
    pub signal: i32,
    /// Time to wait before SIGKILL to the whole process group, in milliseconds.
    pub kill_timeout_ms: u64,
}

/// Where the service's output goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogSpec {
    /// Directory of the rotated log files; the current file is `<dir>/current.log`.
    pub dir: PathBuf,
    /// Rotate when the current file reaches this size in bytes.
    pub max_size: u64,
    /// Keep this many rotated files (`current.log.1` … `current.log.N`).
    pub keep: u32,
    /// Also pipe raw output to this shell command's stdin (a logger), if set.
    pub pipe: Option<String>,
    /// Write output to the files (false when only the pipe is wanted).
    pub to_file: bool,
}

/// A resource limit applied before exec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// Resource name as in setrlimit(2) without the prefix, lower case: `nofile`, `nproc`,
    /// `core`, `as`, `cpu`, `fsize`, `data`, `stack`, `memlock`.
    pub resource: String,
    /// Soft limit (`u64::MAX` for unlimited).
    pub soft: u64,
    /// Hard limit (`u64::MAX` for unlimited).
    pub hard: u64,
}

/// Everything a buddy needs to run, restart and stop its service without the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BuddySpec {
    /// The service's name (`web`, or `module/service`).
    pub service: String,
    /// Program and arguments; `argv[0]` is resolved through `PATH` of `env` if it has no `/`.
    pub argv: Vec<String>,
    /// The complete environment of the service.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Switch to this uid before exec.
    pub uid: Option<u32>,
    /// Switch to this gid (and only this group) before exec.
    pub gid: Option<u32>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Restart policy.
    pub restart: RestartSpec,
    /// Stop policy.
    pub stop: StopSpec,
    /// Output capture.
    pub log: LogSpec,
}

/// A request from the controller (the agent) to a buddy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Request {
    /// Chosen by the controller; echoed in the reply.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations a buddy understands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Must come first. The buddy answers [`Reply::Welcome`] and then pushes every journal
    /// entry with `seq > after_seq`, then live entries.
    Hello {
        /// Controller's protocol version.
        protocol: u32,
        /// Free-form name of the controller, for the buddy's log.
        controller: String,
        /// Highest journal sequence number the controller already stored.
        after_seq: u64,
    },
    /// Current status.
    Status,
    /// Start the service if it is not running (clears `failed`).
    Start,
    /// Stop the service (stop signal, then SIGKILL to the group after the timeout) and keep
    /// it stopped.
    Stop,
    /// Stop, then start again.
    Restart,
    /// Send a signal to the service's process group.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Replace the spec; takes effect at the next start. The buddy persists it.
    SetSpec {
        /// The new spec.
        spec: Box<BuddySpec>,
    },
    /// The controller stored every journal entry up to `seq`; the buddy may drop them.
    Ack {
        /// Highest stored sequence number.
        seq: u64,
    },
    /// Stop the service and exit the buddy once the journal is acknowledged or after the
    /// stop completes (used when a service is removed).
    Shutdown,
    /// Replace the buddy's program with `path` (a newer `reeve-buddy`) without letting go of
    /// the service: the buddy answers `Ok`, closes this connection, writes a [`Handoff`] and
    /// execs `path --dir . --resume`, keeping its pid (so its identity), the service as its
    /// child, the output pipes and the socket. Refused while the service is stopping. A
    /// buddy that cannot exec carries on as it was (its log says why). Buddies older than
    /// this op answer an error and keep running.
    Reexec {
        /// The new buddy binary (absolute path).
        path: String,
    },
}

/// Version of the [`Handoff`] format.
pub const HANDOFF_VERSION: u32 = 1;

/// What a buddy that re-executes itself hands to its new program (in `handoff.json`,
/// written durably just before the exec; the new program reads and deletes it). Times are
/// relative (ages, time left), since monotonic clocks do not survive an exec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Handoff {
    /// [`HANDOFF_VERSION`].
    pub version: u32,
    /// The listening socket's descriptor.
    pub listener_fd: i32,
    /// The run-directory lock's descriptor (the lock stays held across the exec).
    pub lock_fd: i32,
    /// The service's output pipes: descriptor and marker (`o` stdout, `e` stderr).
    pub streams: Vec<(i32, char)>,
    /// The service's state.
    pub svc: HandoffSvc,
    /// The buddy's monotonic clock (ms since it started) at the exec.
    pub mono_ms: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Restart times within the window, on the buddy's monotonic clock (ms).
    pub restart_times: Vec<u64>,
    /// Restarts so far.
    pub restarts: u64,
    /// Whether the service was ever spawned.
    pub spawned_once: bool,
    /// The last exit.
    pub last_exit: Option<ExitStatus>,
    /// When the current state was entered (ms since the epoch).
    pub since_ms: u64,
    /// Output bytes dropped in all.
    pub dropped_total: u64,
    /// Output bytes dropped and not yet journaled.
    pub dropped_unreported: u64,
}

/// The service's state in a [`Handoff`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HandoffSvc {
    /// Not running.
    Stopped,
    /// Restart limits reached.
    Failed,
    /// Running.
    Running {
        /// Its pid.
        pid: u32,
        /// How long it has run (ms).
        age_ms: u64,
        /// Time left until it counts as healthy (ms), if that is still pending.
        healthy_in_ms: Option<u64>,
    },
    /// Waiting to restart.
    BackingOff {
        /// Time left (ms).
        in_ms: u64,
    },
}

/// The buddy's answer to one request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `Hello`: who the buddy is, so the agent can tell it from a reused pid.
    Welcome {
        /// The buddy's protocol version.
        protocol: u32,
        /// The buddy binary's version string.
        version: String,
        /// Current status.
        status: Box<BuddyStatus>,
    },
    /// Answer to `Status`.
    Status(Box<BuddyStatus>),
    /// The request was carried out (or, for stop/restart, started).
    Ok,
    /// The request was refused; nothing changed.
    Error {
        /// Why.
        message: String,
    },
}

/// What the buddy process is doing with its service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// The service process runs.
    Running,
    /// Waiting before the next restart.
    BackingOff,
    /// Stop signal sent; waiting for the process group to exit.
    Stopping,
    /// Not running, by request or by restart policy.
    Stopped,
    /// Gave up: restart limits reached. Needs an explicit start.
    Failed,
}

/// Identity and state of a buddy and its service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BuddyStatus {
    /// The service name.
    pub service: String,
    /// Buddy pid.
    pub buddy_pid: u32,
    /// Buddy start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub buddy_start_ticks: u64,
    /// Kernel boot id the buddy started under.
    pub boot_id: String,
    /// Process state.
    pub state: ProcState,
    /// Service pid while one runs.
    pub pid: Option<u32>,
    /// When the current process started, or when the current state began.
    pub since_ms: UnixMillis,
    /// Restarts performed by this buddy so far.
    pub restarts: u64,
    /// Failures in a row (reset after a healthy window).
    pub consecutive_failures: u32,
    /// Last exit, if any.
    pub last_exit: Option<ExitStatus>,
    /// Highest journal sequence number written.
    pub journal_seq: u64,
    /// Output bytes dropped because the log could not be written.
    pub dropped_bytes: u64,
}

/// How a process ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// One entry of a buddy's journal, as written to disk and as pushed to the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JournalEntry {
    /// Strictly increasing per buddy, from 1, never reused for a run directory.
    pub seq: u64,
    /// When it happened.
    pub ts_ms: UnixMillis,
    /// What happened.
    #[serde(flatten)]
    pub kind: BuddyEvent,
}

/// Things a buddy records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuddyEvent {
    /// The buddy started (or re-executed itself).
    BuddyStarted {
        /// Buddy pid.
        buddy_pid: u32,
        /// Buddy version.
        version: String,
    },
    /// The service process was spawned.
    Started {
        /// Its pid (also its process group and session id).
        pid: u32,
        /// 0 for the first start, then the restart count.
        restart: u64,
    },
    /// The service could not be spawned (exec failed, bad uid …).
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// The service process ended.
    Exited {
        /// Its pid.
        pid: u32,
        /// How.
        status: ExitStatus,
        /// How long it ran.
        uptime_ms: u64,
        /// Whether the exit was asked for (stop/restart).
        expected: bool,
    },
    /// Waiting before restarting.
    BackingOff {
        /// The delay.
        delay_ms: u64,
        /// Consecutive failures so far.
        failures: u32,
    },
    /// The stop signal was sent.
    Stopping {
        /// The pid.
        pid: u32,
        /// The signal.
        signal: i32,
    },
    /// `kill_timeout` passed: SIGKILL sent to the process group.
    Killed {
        /// The pid.
        pid: u32,
    },
    /// Stopped and staying stopped.
    Stopped,
    /// Restart limits reached; the buddy gave up.
    Failed {
        /// Which limit.
        reason: String,
    },
    /// A signal was delivered on request.
    Signalled {
        /// The pid.
        pid: u32,
        /// The signal.
        signal: i32,
    },
    /// Output was dropped because it could not be written.
    LogDropped {
        /// Bytes dropped since the last such entry.
        bytes: u64,
    },
    /// The spec was replaced.
    SpecChanged,
    /// The buddy is exiting.
    BuddyExiting,
}

/// A frame from the buddy to the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// Answer to a request.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        #[serde(flatten)]
        reply: Reply,
    },
    /// A journal entry.
    Event(JournalEntry),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_flat_op_tag() {
        let r = Request {
            id: 7,
            op: Op::Signal { signal: 1 },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert_eq!(s, r#"{"id":7,"op":"signal","signal":1}"#);
        let back: Request = serde_json::from_str(&s).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn frames_round_trip() {
        let e = Frame::Event(JournalEntry {
            seq: 3,
            ts_ms: 10,
            kind: BuddyEvent::Exited {
                pid: 42,
                status: ExitStatus {
                    code: None,
                    signal: Some(9),
                },
                uptime_ms: 5,
                expected: false,
            },
        });
        let s = serde_json::to_string(&e).expect("serialize");
        let back: Frame = serde_json::from_str(&s).expect("parse");
        assert_eq!(back, e);
        let r = Frame::Reply {
            id: 1,
            reply: Reply::Error {
                message: "no".into(),
            },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert_eq!(
            s,
            r#"{"type":"reply","id":1,"reply":"error","message":"no"}"#
        );
        assert_eq!(serde_json::from_str::<Frame>(&s).expect("parse"), r);
    }
}
