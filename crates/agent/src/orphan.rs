//! Processes the agent finds without a buddy: identifying a process by more than its pid,
//! and stopping a service's whole process group when its buddy was lost, so that no
//! service runs unsupervised.

use rustix::process::{Pid, Signal};
use std::time::Duration;

/// Start time (clock ticks since boot) and boot id of a live process, read from /proc.
pub fn process_identity(pid: u32) -> Option<(u64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((ticks, boot_id()?))
}

/// The kernel's boot id.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// True if `pid` is alive and leads its own session (as every service a buddy starts does).
fn is_session_leader(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(f) = stat_fields(&stat) else {
        return false;
    };
    // index 0 = state, 3 = session
    f.first() != Some(&"Z") && f.get(3).and_then(|s| s.parse::<u32>().ok()) == Some(pid)
}

/// What happened to an orphaned service.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was running and its process group was stopped.
    Killed,
    /// It was no longer running.
    Gone,
    /// It could not be stopped.
    Failed(String),
}

/// Stops the process group led by `pid`: `signal`, then SIGKILL after `kill_timeout`.
pub async fn kill_orphan_group(pid: u32, signal: i32, kill_timeout: Duration) -> Outcome {
    if !is_session_leader(pid) {
        return Outcome::Gone;
    }
    let Some(p) = Pid::from_raw(pid as i32) else {
        return Outcome::Gone;
    };
    let sig = Signal::from_named_raw(signal).unwrap_or(Signal::TERM);
    if let Err(e) = rustix::process::kill_process_group(p, sig) {
        return Outcome::Failed(format!("signal {signal}: {e}"));
    }
    let deadline = tokio::time::Instant::now() + kill_timeout;
    while tokio::time::Instant::now() < deadline {
        if !group_alive(p) {
            return Outcome::Killed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match rustix::process::kill_process_group(p, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Outcome::Killed,
        Err(e) => Outcome::Failed(format!("SIGKILL: {e}")),
    }
}

fn group_alive(p: Pid) -> bool {
    // Zombies of an orphan are reaped by init; a group whose leader is a zombie with no
    // other members still answers kill(0), so also check the leader's state.
    rustix::process::test_kill_process_group(p).is_ok()
        && is_session_leader(p.as_raw_nonzero().get() as u32)
}
