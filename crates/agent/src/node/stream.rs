//! `exec.stream` (DESIGN.md §2.2, Steward's `REQCliCommandCont`): `exec` whose output goes
//! back while the command runs, as ordered reply messages on the node's stream to the hub.
//!
//! The command runs under the detached runner, exactly like `exec` (fenced, at most once,
//! outliving an agent crash). Every [`TICK`] the new bytes of its `out` and `err` files go
//! into one **chunk** reply, `{"status": "running", "chunk": N, "stdout": …, "stderr": …}`
//! (N from 1, at most [`CHUNK_MAX`] bytes of each); the final reply is `exec`'s outcome
//! with only what no chunk carried, and `chunks`, the number of chunks before it. What was
//! sent is recorded in the run directory (`streamed`) after each chunk is durable in the
//! outbox, so the next agent after a crash goes on from there; a chunk sent again after a
//! crash between the two carries the same number, and the hub keeps one of each. At most
//! [`STREAM_MAX`] bytes are streamed; the command runs on, its output stays in its files,
//! and the final reply says `truncated`.

use super::Node;
use super::runner::{self, Outcome};
use anyhow::Result;
use reeve_delivery::envelope::Request;
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often new output is looked for.
pub const TICK: Duration = Duration::from_millis(200);
/// Bytes of each stream in one chunk, at most.
pub const CHUNK_MAX: usize = 256 * 1024;
/// Bytes streamed per run, at most.
pub const STREAM_MAX: u64 = 16 * 1024 * 1024;

/// What has been streamed so far (`runs/<id>/streamed`: `OUT_OFFSET ERR_OFFSET CHUNKS`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Streamed {
    out: u64,
    err: u64,
    chunks: u64,
}

impl Streamed {
    fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("streamed")).unwrap_or_default();
        let mut n = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        match (n.next(), n.next(), n.next()) {
            (Some(Some(out)), Some(Some(err)), Some(Some(chunks))) => Self { out, err, chunks },
            _ => Self::default(),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("streamed.tmp");
        std::fs::write(&tmp, format!("{} {} {}\n", self.out, self.err, self.chunks))?;
        std::fs::rename(tmp, dir.join("streamed"))?;
        Ok(())
    }
}

/// Up to `max` bytes of `path` from `offset`; on `whole_chars`, cut back to the last
/// complete UTF-8 character (the rest comes with the next read).
fn read_from(path: &Path, offset: u64, max: usize, whole_chars: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(max as u64).read_to_end(&mut buf);
    }
    if whole_chars && let Err(e) = std::str::from_utf8(&buf) {
        // An incomplete character at the end waits; invalid bytes go as they are (lossy).
        if e.error_len().is_none() {
            buf.truncate(e.valid_up_to());
        }
    }
    buf
}

impl Node {
    /// Runs an `exec.stream` request (fenced already); `resumed`: it was running when the
    /// agent stopped, so its wrapper may still run and is followed rather than started.
    /// Returns the final reply's body.
    pub(crate) async fn exec_stream(self: &Arc<Self>, request: &Request, resumed: bool) -> Value {
        let dir = runner::run_dir(&self.ctx.data_dir, &request.id);
        let timeout = request
            .method_timeout_ms
            .map_or(super::methods::DEFAULT_TIMEOUT, Duration::from_millis);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut child = None;
        if !resumed {
            let argv = match super::methods::argv(&request.args) {
                Ok(a) => a,
                Err(e) => return super::methods::error(e),
            };
            match runner::spawn(&dir, &argv) {
                Ok(c) => child = Some(c),
                Err(e) => return json!(Outcome::bare("error", format!("{e:#}"))),
            }
        }
        let mut sent = Streamed::load(&dir);
        let mut timed_out = false;
        loop {
            let ended = match child.as_mut() {
                Some(c) => tokio::time::timeout(TICK, c.wait()).await.is_ok(),
                None => {
                    tokio::time::sleep(TICK).await;
                    runner::exit_status(&dir).is_some() || !runner::still_runs(&dir)
                }
            };
            if !ended && tokio::time::Instant::now() >= deadline {
                if let Some(pid) = child
                    .as_ref()
                    .and_then(|c| c.id())
                    .or(runner::wrapper(&dir))
                {
                    runner::kill_group(pid);
                }
                if let Some(c) = child.as_mut() {
                    let _ = c.wait().await;
                }
                timed_out = true;
            }
            let last = ended || timed_out;
            if let Err(e) = self.send_chunks(request, &dir, &mut sent, last).await {
                tracing::warn!(id = %request.id, "exec.stream output not sent: {e:#}");
            }
            if last {
                break;
            }
        }
        self.stream_outcome(&dir, sent, timed_out, resumed)
    }

    /// Sends what is new in the output files as chunk replies (all of it when `last`).
    async fn send_chunks(
        &self,
        request: &Request,
        dir: &Path,
        sent: &mut Streamed,
        last: bool,
    ) -> Result<()> {
        loop {
            let room = STREAM_MAX.saturating_sub(sent.out + sent.err) as usize;
            let max = CHUNK_MAX.min(room);
            if max == 0 {
                return Ok(());
            }
            let out = read_from(&dir.join("out"), sent.out, max, !last);
            let err_max = max.min(room - out.len());
            let err = read_from(&dir.join("err"), sent.err, err_max, !last);
            if out.is_empty() && err.is_empty() {
                return Ok(());
            }
            let body = json!({
                "status": "running",
                "chunk": sent.chunks + 1,
                "stdout": String::from_utf8_lossy(&out),
                "stderr": String::from_utf8_lossy(&err),
            });
            self.send_progress(request, body).await?;
            sent.out += out.len() as u64;
            sent.err += err.len() as u64;
            sent.chunks += 1;
            sent.save(dir)?;
            if out.len() < max && err.len() < err_max.max(1) {
                return Ok(());
            }
        }
    }

    /// The final reply: the run's status and exit code, with the output no chunk carried.
    fn stream_outcome(&self, dir: &Path, sent: Streamed, timed_out: bool, resumed: bool) -> Value {
        let code = runner::exit_status(dir);
        let rest = |name: &str, from: u64| {
            String::from_utf8_lossy(&read_from(&dir.join(name), from, runner::MAX_OUTPUT, false))
                .into_owned()
        };
        let (status, error) = match (timed_out, code) {
            (true, _) => ("timeout", Some("killed at its time limit")),
            (false, Some(_)) => ("ok", None),
            (false, None) if resumed => (
                "interrupted",
                Some(
                    "the agent stopped while this command ran and its outcome is unknown; it was not run again",
                ),
            ),
            (false, None) => (
                "interrupted",
                Some("the command's wrapper ended without a status"),
            ),
        };
        let streamed_all = sent.out + sent.err >= STREAM_MAX;
        json!({
            "status": status,
            "exit_code": if timed_out { None } else { code },
            "stdout": if streamed_all { String::new() } else { rest("out", sent.out) },
            "stderr": if streamed_all { String::new() } else { rest("err", sent.err) },
            "chunks": sent.chunks,
            "truncated": streamed_all,
            "error": error,
        })
    }
}

/// How long `tail` follows a file without a `method_timeout`.
pub const FOLLOW_DEFAULT: Duration = Duration::from_secs(60);

/// Does `request` ask `tail` to follow the file (`args.follow`)?
pub fn follows(request: &Request) -> bool {
    request.method == "tail" && request.args.get("follow").and_then(Value::as_bool) == Some(true)
}

impl Node {
    /// `tail` with `follow` (Steward's `REQTailFile`): the file's last lines, then what is
    /// appended to it, as chunk replies every [`TICK`] until `method_timeout` (default
    /// [`FOLLOW_DEFAULT`]); the final reply says how many chunks went. A file truncated
    /// or replaced (log rotation) is followed from its start. Not at most once: after an
    /// agent crash it starts over.
    pub(crate) async fn tail_follow(&self, request: &Request) -> Value {
        use std::os::unix::fs::MetadataExt;
        let Some(path) = request
            .args
            .get("path")
            .or_else(|| request.args.get("file"))
            .and_then(Value::as_str)
            .map(std::path::PathBuf::from)
        else {
            return super::methods::error("tail needs args.path");
        };
        let first = super::methods::tail(&request.args);
        if first.get("status").and_then(Value::as_str) != Some("ok") {
            return first;
        }
        let timeout = request
            .method_timeout_ms
            .map_or(FOLLOW_DEFAULT, Duration::from_millis);
        let deadline = tokio::time::Instant::now() + timeout;
        let meta = std::fs::metadata(&path).ok();
        let (mut ino, mut offset) = (meta.as_ref().map(|m| m.ino()), meta.map_or(0, |m| m.len()));
        let mut lines: Vec<String> = first["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(|l| format!("{l}\n")))
            .collect();
        let (mut chunks, mut sent) = (0u64, 0u64);
        loop {
            let mut text = lines.concat();
            lines.clear();
            if let Ok(m) = std::fs::metadata(&path) {
                if Some(m.ino()) != ino || m.len() < offset {
                    (ino, offset) = (Some(m.ino()), 0);
                }
                let room = STREAM_MAX.saturating_sub(sent) as usize;
                let new = read_from(&path, offset, CHUNK_MAX.min(room), true);
                offset += new.len() as u64;
                text.push_str(&String::from_utf8_lossy(&new));
            }
            if !text.is_empty() {
                let body =
                    json!({"status": "running", "chunk": chunks + 1, "stdout": text, "stderr": ""});
                if let Err(e) = self.send_progress(request, body).await {
                    tracing::warn!(id = %request.id, "tail output not sent: {e:#}");
                    break;
                }
                chunks += 1;
                sent += text.len() as u64;
            }
            if tokio::time::Instant::now() >= deadline || sent >= STREAM_MAX {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        json!({
            "status": "ok",
            "path": path,
            "chunks": chunks,
            "stdout": "",
            "stderr": "",
            "truncated": sent >= STREAM_MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_before_a_split_character_and_offsets_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("out");
        // "é" is two bytes: the first read ends in the middle of it.
        std::fs::write(&f, "abé").expect("write");
        assert_eq!(read_from(&f, 0, 3, true), b"ab");
        assert_eq!(read_from(&f, 2, 10, true), "é".as_bytes());
        assert_eq!(read_from(&f, 0, 3, false), b"ab\xc3");
        assert!(read_from(&dir.path().join("none"), 0, 10, true).is_empty());
        let s = Streamed {
            out: 5,
            err: 7,
            chunks: 2,
        };
        assert_eq!(Streamed::load(dir.path()), Streamed::default());
        s.save(dir.path()).expect("save");
        assert_eq!(Streamed::load(dir.path()), s);
    }
}
