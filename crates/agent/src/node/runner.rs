//! The detached runner for `exec` (at most once, DESIGN.md §2.1): the command runs in its
//! own process group under a tiny `sh` wrapper that writes the exit status to a file, with
//! its output in files, all in `runs/<request id>/` of the data directory. The agent does
//! not own the command's life: if the agent dies, the command runs on, and the next agent
//! collects the result from the files. A run that left no status and whose wrapper is gone
//! is `interrupted` — it is never started again.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Output kept per stream in a reply.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// The wrapper: runs the command, then writes its exit status (shell builtins only: no
/// process after the command's). A status file caught mid-write reads as no status yet.
const WRAPPER: &str = r#""$@"; echo "$?" > "$REEVE_RC""#;

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
/// in `rc` when it ends, the wrapper's pid and start time in `pid`).
pub(crate) fn spawn(dir: &Path, argv: &[String]) -> Result<tokio::process::Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = std::fs::File::create(dir.join("out")).context("cannot create the output file")?;
    let err = std::fs::File::create(dir.join("err")).context("cannot create the error file")?;
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("reeve-run")
        .args(argv)
        .env("REEVE_RC", dir.join("rc"))
        .stdin(std::process::Stdio::null())
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
        let pid = std::fs::read_to_string(dir.join("pid")).ok().and_then(|s| {
            let mut it = s.split_whitespace();
            Some((
                it.next()?.parse::<u32>().ok()?,
                it.next()?.parse::<u64>().ok()?,
            ))
        });
        let running = pid.is_some_and(|(p, t)| alive(p, t));
        if !running {
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
            if let Some((p, _)) = pid {
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
