//! The execution side of the inbox: a stored request goes `ready` → `running` (the
//! execution fence, durable before anything starts) → `done`, and "done" is written in the
//! same transaction as the reply's place in the outbox (DESIGN.md §2.1). After a crash,
//! `ready` requests are run again (they never started) and `running` ones are collected or
//! answered `interrupted`, never silently re-run.

use super::{DeliveryStore, Result, exec, q, row};
use crate::envelope::StreamId;
use rusqlite::{OptionalExtension, params};

/// Where an inbox request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Stored, not started.
    Ready,
    /// Fenced: it may have started.
    Running,
    /// Finished; its reply (if any) is in the outbox.
    Done,
}

impl RunState {
    fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            _ => Self::Ready,
        }
    }
}

/// A reply to put in the outbox together with "done".
pub struct ReplyOut<'a> {
    /// The stream the reply travels on.
    pub stream: &'a StreamId,
    /// The reply's request id.
    pub id: &'a str,
    /// Its expiry (hub-adjusted ms).
    pub expires_at_ms: u64,
}

/// A stored request not yet done.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    /// Its id.
    pub id: String,
    /// Where it stands.
    pub state: RunState,
    /// The [`super::stream_key`] of the stream it came on.
    pub stream_key: String,
    /// It has a position in its stream (false: it arrived unordered, without one).
    pub sequenced: bool,
}

impl DeliveryStore {
    /// The stored envelope of request `id` and where it stands.
    pub fn inbox_get(&self, id: &str) -> Result<Option<(Vec<u8>, RunState)>> {
        row(
            &self.conn,
            "SELECT envelope, state FROM inbox WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    RunState::parse(&r.get::<_, String>(1)?),
                ))
            },
        )
        .optional()
        .map_err(q("read inbox"))
    }

    /// Requests not yet done, in the order they became runnable.
    pub fn inbox_unfinished(&self) -> Result<Vec<Unfinished>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, state, key, seq IS NOT NULL FROM inbox WHERE state != 'done' ORDER BY rowid",
            )
            .map_err(q("prepare unfinished"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Unfinished {
                    id: r.get(0)?,
                    state: RunState::parse(&r.get::<_, String>(1)?),
                    stream_key: r.get(2)?,
                    sequenced: r.get(3)?,
                })
            })
            .map_err(q("query unfinished"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(q("read unfinished"))
    }

    /// The execution fence: `ready` → `running`, recording the machine's `boot` (see
    /// [`Self::fence_boot`]). False when the request is not `ready` (already fenced or
    /// done), in which case it must not start.
    pub fn fence(&mut self, id: &str, boot: Option<&str>) -> Result<bool> {
        let n = exec(
            &self.conn,
            "UPDATE inbox SET state = 'running', fence_boot = ?2 WHERE id = ?1 AND state = 'ready'",
            params![id, boot],
        )
        .map_err(q("fence"))?;
        Ok(n == 1)
    }

    /// The boot a fenced request's fence was written in (`None`: not recorded, as by
    /// agents before this was kept). Within one boot, files the runner wrote before a crash
    /// of the agent are still there, so the runner can tell a command that never started.
    pub fn fence_boot(&self, id: &str) -> Result<Option<String>> {
        row(
            &self.conn,
            "SELECT fence_boot FROM inbox WHERE id = ?1",
            params![id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(q("read fence boot"))
    }

    /// Marks `id` done and, in the same transaction, puts its reply (sealed by `seal(seq)`)
    /// in the outbox. Returns the reply's `seq`, or `None` without a reply or when `id` was
    /// already done (nothing is written twice).
    pub fn complete(
        &mut self,
        id: &str,
        reply: Option<(ReplyOut<'_>, Seal)>,
    ) -> Result<Option<u64>> {
        self.conn
            .execute_batch("SAVEPOINT complete")
            .map_err(q("begin complete"))?;
        let result = self.complete_inner(id, reply);
        let end = if result.is_ok() {
            "RELEASE complete"
        } else {
            "ROLLBACK TO complete; RELEASE complete"
        };
        self.conn.execute_batch(end).map_err(q("end complete"))?;
        result
    }

    fn complete_inner(
        &mut self,
        id: &str,
        reply: Option<(ReplyOut<'_>, Seal)>,
    ) -> Result<Option<u64>> {
        let n = exec(
            &self.conn,
            "UPDATE inbox SET state = 'done' WHERE id = ?1 AND state != 'done'",
            params![id],
        )
        .map_err(q("mark done"))?;
        match reply {
            Some((r, seal)) if n == 1 => self
                .enqueue(r.stream, r.id, r.expires_at_ms, seal)
                .map(Some),
            _ => Ok(None),
        }
    }
}

/// Seals a reply once its `seq` is known.
pub type Seal = Box<dyn FnOnce(u64) -> Vec<u8> + Send>;
