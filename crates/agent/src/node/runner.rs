//! The detached runner for `exec` (at most once, DESIGN.md §2.1): the command runs in its
//! own process group under a tiny `sh` wrapper that writes the exit status to a file, with
//! its output in files, all in `runs/<request id>/` of the data directory. The agent does
//! not own the command's life: if the agent dies, the command runs on, and the next agent
//! collects the result from the files. A run that left no status and whose wrapper is gone
//! is `interrupted` — it is never started again.
//!
//! One case is not a guess: an agent killed between the fence and the wrapper's first
//! step. The agent takes an exclusive `flock` on `lock` before it forks and hands that
//! open file to the wrapper as its standard input, so the lock is held exactly while a
//! wrapper lives; the wrapper's first step writes `started`, before the command. With the
//! lock free and no `started`, the command never began — provided the page cache was not
//! lost in between, which is why the fence records the boot it was written in
//! ([`boot_id`]) and only a fence of the current boot may be started after a restart.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Output kept per stream in a reply.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// The wrapper: marks the run started, runs the command (with `/dev/null` as its input, so
/// it does not inherit the run's lock), then writes its exit status (shell builtins only:
/// no process after the command's). A status file caught mid-write reads as no status yet.
const WRAPPER: &str = r#": > "$REEVE_STARTED" && "$@" < /dev/null; echo "$?" > "$REEVE_RC""#;

/// This boot of the machine (`/proc/sys/kernel/random/boot_id`), if the kernel tells.
pub fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
    .as_deref()
}

/// Is the run's lock free (no wrapper of it lives)? `None` when the run has no lock file
/// (it never got as far as its fork, or an agent without run locks started it).
fn lock_free(dir: &Path) -> Option<bool> {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::File::open(dir.join("lock")).ok()?;
    // Dropping `file` releases the probe's lock.
    Some(flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok())
}

/// Does the run in `dir` still run? Its wrapper holds the run's lock; a run without a lock
/// file is judged by its recorded wrapper pid.
pub(crate) fn still_runs(dir: &Path) -> bool {
    match lock_free(dir) {
        Some(free) => !free,
        None => wrapper(dir).is_some(),
    }
}

/// Did a run that was fenced in this boot never start its command? True when its
/// directory is missing (the agent stopped before creating it), or when no wrapper holds
/// its lock and none wrote `started`. Such a run may be started: it is its first run.
/// Only for fences of the current boot (see the module's comment).
pub(crate) fn never_started(dir: &Path) -> bool {
    if !dir.exists() {
        return true;
    }
    if dir.join("lock").exists() {
        // Look for the marker after the lock is found free: a wrapper that wrote it has
        // ended by then, and its write is visible.
        lock_free(dir) == Some(true) && !dir.join("started").exists() && exit_status(dir).is_none()
    } else {
        // The lock file comes before the fork: without it there was no wrapper.
        !dir.join("started").exists() && exit_status(dir).is_none()
    }
}

/// The exit status the wrapper wrote in `dir`, once it is complete.
pub(crate) fn exit_status(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("rc")).ok()?;
    let line = text.strip_suffix('\n')?;
    line.parse().ok()
}

/// How a run ended.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `ok` (ran to its end; see `exit_code`), `timeout` (killed at `method_timeout`),
    /// `interrupted` (the outcome cannot be known), or `error` (could not start).
    pub status: String,
    /// The command's exit code (128 + signal when killed by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its standard output (at most [`MAX_OUTPUT`] bytes, lossy UTF-8).
    pub stdout: String,
    /// Its standard error (likewise).
    pub stderr: String,
    /// Output was cut at [`MAX_OUTPUT`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// What went wrong, for `error` and `interrupted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// An outcome without output.
    pub fn bare(status: &str, error: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            error: Some(error.into()),
        }
    }
}

/// The run directory of request `id`.
pub fn run_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("runs").join(id)
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(pid: u32, ticks: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        == Some("Z");
    !zombie && start_ticks(pid) == Some(ticks)
}

fn read_capped(path: &Path) -> (String, bool) {
    use std::io::Read;
    let mut buf = Vec::new();
    let cut = match std::fs::File::open(path) {
        Ok(f) => {
            let _ = f.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buf);
            buf.len() > MAX_OUTPUT
        }
        Err(_) => false,
    };
    buf.truncate(MAX_OUTPUT);
    (String::from_utf8_lossy(&buf).into_owned(), cut)
}

/// The wrapper recorded in `dir/pid` (pid and start time), if it still runs.
pub(crate) fn wrapper(dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(dir.join("pid")).ok()?;
    let mut it = s.split_whitespace();
    let (pid, ticks) = (
        it.next()?.parse::<u32>().ok()?,
        it.next()?.parse::<u64>().ok()?,
    );
    alive(pid, ticks).then_some(pid)
}

fn finished(dir: &Path, status: &str) -> Outcome {
    let code = exit_status(dir);
    let (stdout, c1) = read_capped(&dir.join("out"));
    let (stderr, c2) = read_capped(&dir.join("err"));
    Outcome {
        status: status.into(),
        exit_code: code,
        stdout,
        stderr,
        truncated: c1 || c2,
        error: None,
    }
}

/// Kills process group `pgid` (the run's wrapper and everything it started).
pub(crate) fn kill_group(pgid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}

/// Runs `argv` detached; waits at most `timeout`, then kills its process group.
pub async fn run(dir: &Path, argv: &[String], timeout: Duration) -> Outcome {
    match spawn(dir, argv) {
        Ok(mut child) => {
            let pid = child.id().unwrap_or(0);
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(_) => finished(dir, "ok"),
                Err(_) => {
                    kill_group(pid);
                    let _ = child.wait().await;
                    let mut o = finished(dir, "timeout");
                    o.exit_code = None;
                    o.error = Some(format!("killed after {:.1} s", timeout.as_secs_f64()));
                    o
                }
            }
        }
        Err(e) => Outcome::bare("error", format!("{e:#}")),
    }
}

/// Starts `argv` detached in run directory `dir` (output in `out`/`err`, the exit status
/// in `rc` when it ends, the wrapper's pid and start time in `pid`, `started` once the
/// wrapper runs, and `lock` held by the wrapper while it lives).
pub(crate) fn spawn(dir: &Path, argv: &[String]) -> Result<tokio::process::Child> {
    use rustix::fs::{FlockOperation, flock};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = std::fs::File::create(dir.join("out")).context("cannot create the output file")?;
    let err = std::fs::File::create(dir.join("err")).context("cannot create the error file")?;
    // A leftover of a run that never started goes, so that `started` is this run's.
    match std::fs::remove_file(dir.join("started")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context("cannot clear the run's start marker");
        }
        _ => {}
    }
    let lock = std::fs::File::create(dir.join("lock")).context("cannot create the run's lock")?;
    flock(&lock, FlockOperation::NonBlockingLockExclusive)
        .context("the run's lock is held: a wrapper of this run still lives")?;
    // The child's standard input shares the locked open file: the lock lives as long as
    // the wrapper does, whatever becomes of the agent.
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("reeve-run")
        .args(argv)
        .env("REEVE_RC", dir.join("rc"))
        .env("REEVE_STARTED", dir.join("started"))
        .stdin(lock)
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("cannot start {:?}", argv.first()))?;
    if let Some(pid) = child.id() {
        let ticks = start_ticks(pid).unwrap_or(0);
        std::fs::write(dir.join("pid"), format!("{pid} {ticks}\n"))
            .context("cannot record the run's pid")?;
    }
    Ok(child)
}

/// After a restart: the result of a run that was fenced before the crash. Waits while its
/// wrapper still runs (at most `timeout`); `interrupted` when no result can be known.
pub async fn collect(dir: &Path, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if exit_status(dir).is_some() {
            return finished(dir, "ok");
        }
        if !still_runs(dir) {
            // One more look: the status may have landed just as the wrapper exited.
            if exit_status(dir).is_some() {
                return finished(dir, "ok");
            }
            let mut o = finished(dir, "interrupted");
            o.exit_code = None;
            o.error = Some(
                "the agent stopped while this command ran and its outcome is unknown; it was not run again"
                    .into(),
            );
            return o;
        }
        if tokio::time::Instant::now() >= deadline {
            if let Some(p) = wrapper(dir) {
                kill_group(p);
            }
            let mut o = finished(dir, "timeout");
            o.exit_code = None;
            o.error = Some("killed at its time limit after an agent restart".into());
            return o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), cmd.into()]
    }

    #[tokio::test]
    async fn a_run_holds_its_lock_while_it_lives_and_is_never_taken_for_unstarted() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r1");
        assert!(
            never_started(&dir),
            "no directory: the agent stopped before it"
        );
        let mut child = spawn(&dir, &argv("sleep 0.5; echo done")).expect("spawn");
        // The agent's own handle on the lock is gone; the wrapper's holds it.
        assert!(still_runs(&dir));
        assert!(!never_started(&dir));
        child.wait().await.expect("wait");
        assert!(!still_runs(&dir));
        assert!(!never_started(&dir), "it ran: it has a status");
        assert_eq!(exit_status(&dir), Some(0));
        assert_eq!(
            std::fs::read_to_string(dir.join("out")).expect("out"),
            "done\n"
        );
    }

    #[tokio::test]
    async fn a_command_that_leaves_a_process_behind_does_not_keep_the_lock() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r2");
        let bg = tmp.path().join("bg");
        // A background job gets `/dev/null` as its input unless told otherwise.
        let cmd = format!(
            "exec 3<&0; sleep 3 <&3 > /dev/null 2>&1 & echo $! > {}",
            bg.display()
        );
        let mut child = spawn(&dir, &argv(&cmd)).expect("spawn");
        child.wait().await.expect("wait");
        let held = still_runs(&dir);
        // The sleep is in the run's process group.
        kill_group(child.id().unwrap_or(0));
        if let Some(p) = std::fs::read_to_string(&bg)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(p).expect("pid"),
                rustix::process::Signal::KILL,
            );
        }
        assert!(!held, "the background sleep must not hold the run's lock");
    }

    #[tokio::test]
    async fn a_wrapper_killed_mid_command_is_interrupted_not_unstarted() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r3");
        let mut child = spawn(&dir, &argv("sleep 5")).expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dir.join("started").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the wrapper never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        kill_group(child.id().expect("pid"));
        child.wait().await.expect("wait");
        assert!(!still_runs(&dir));
        assert!(!never_started(&dir), "it started: it must not run again");
        let o = collect(&dir, Duration::from_secs(1)).await;
        assert_eq!(o.status, "interrupted");
    }

    #[test]
    fn a_run_stopped_between_its_lock_and_its_first_step_counts_as_unstarted() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("r4");
        std::fs::create_dir_all(&dir).expect("dir");
        // Directory made, lock file made, no wrapper step: the agent died at the fork.
        std::fs::write(dir.join("lock"), "").expect("lock");
        assert!(never_started(&dir));
        // Held by someone (a wrapper that has not reached its first step): not yet known.
        let held = std::fs::File::open(dir.join("lock")).expect("open");
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).expect("flock");
        assert!(!never_started(&dir));
        assert!(still_runs(&dir));
        drop(held);
        std::fs::write(dir.join("started"), "").expect("started");
        assert!(!never_started(&dir), "a start marker: it may have run");
    }

    #[test]
    fn the_boot_id_is_read_once_and_stable() {
        let a = boot_id();
        assert!(a.is_some(), "Linux tells its boot id");
        assert_eq!(a, boot_id());
    }
}
