//! Re-executing a service's buddy into a newer `reeve-buddy` (after an agent update)
//! without letting go of the service: the actor asks (`Op::Reexec`), the buddy answers and
//! closes the connection, execs, and the actor re-attaches to the same process (same pid,
//! same start time: the same identity) instead of treating the close as a lost buddy.

use super::{Actor, ControlReply};
use crate::service::ControlError;
use reeve_proto::buddy::{Op, Reply};
use reeve_proto::event::EventKind;
use serde_json::json;
use std::time::Duration;

/// How long the actor waits for a re-executed buddy to answer again.
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// A re-exec under way.
pub(super) struct Pending {
    id: u64,
    accepted: bool,
    path: String,
    actor: String,
    reply: ControlReply,
}

impl Actor {
    pub(super) async fn start_reexec(&mut self, path: String, actor: String, reply: ControlReply) {
        if self.reexec.is_some() {
            let _ = reply.send(Err(ControlError::BadRequest(
                "a re-exec of this buddy is already under way".into(),
            )));
            return;
        }
        match self.send(Op::Reexec { path: path.clone() }).await {
            Ok(id) => {
                self.reexec = Some(Pending {
                    id,
                    accepted: false,
                    path,
                    actor,
                    reply,
                })
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Takes the buddy's answer to a re-exec request; `false` for any other answer.
    pub(super) fn reexec_answered(&mut self, id: u64, reply: &Reply) -> bool {
        let Some(p) = self.reexec.as_mut().filter(|p| p.id == id) else {
            return false;
        };
        match reply {
            Reply::Error { message } => {
                if let Some(p) = self.reexec.take() {
                    let _ = p.reply.send(Err(ControlError::BadRequest(format!(
                        "the buddy did not re-execute: {message}"
                    ))));
                }
            }
            _ => p.accepted = true,
        }
        true
    }

    /// The connection closed: if the buddy had accepted a re-exec, waits for it to answer
    /// again and re-attaches. `false` when no re-exec was expected, or the buddy did not
    /// come back (then it is handled as lost).
    pub(super) async fn resume_after_reexec(&mut self) -> bool {
        let Some(p) = self.reexec.take() else {
            return false;
        };
        if !p.accepted {
            let _ = p.reply.send(Err(ControlError::Failed(
                "the buddy closed the connection before answering the re-exec".into(),
            )));
            return false;
        }
        self.conn = None;
        let before = self.buddy_pid;
        let deadline = tokio::time::Instant::now() + RESUME_WAIT;
        let status = loop {
            match self.connect().await {
                Ok(s) => break Some(s),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => break None,
            }
        };
        let Some(status) = status.filter(|s| Some(s.buddy_pid) == before) else {
            let _ = p.reply.send(Err(ControlError::Failed(format!(
                "the buddy did not come back within {} s after re-executing into {}",
                RESUME_WAIT.as_secs(),
                p.path
            ))));
            return false;
        };
        self.adopt(&status);
        // Re-attached either way; but a buddy whose exec failed carries on as it was.
        let exe = std::fs::read_link(format!("/proc/{}/exe", status.buddy_pid)).ok();
        let wanted = std::fs::canonicalize(&p.path).ok();
        if exe.is_none() || exe != wanted {
            self.save_record().await;
            self.publish();
            let _ = p.reply.send(Err(ControlError::Failed(format!(
                "the buddy still runs {} instead of {} (its buddy.log says why)",
                exe.map_or("?".into(), |e| e.display().to_string()),
                p.path
            ))));
            return true;
        }
        self.record(
            EventKind::BuddyAttached,
            &p.actor,
            format!(
                "buddy {} re-executed into {}; the service kept running ({:?})",
                status.buddy_pid, p.path, status.state
            ),
            json!({"buddy_pid": status.buddy_pid, "pid": status.pid, "reexec": p.path}),
        )
        .await;
        self.save_record().await;
        self.publish();
        let _ = p.reply.send(Ok(()));
        true
    }
}
