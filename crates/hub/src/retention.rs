//! Retention of the hub's history: node events, settled messages (replied, expired or
//! purged; never one still waiting or in flight) and the error log older than their limits
//! are deleted, in bounded batches so the writer is never held long. Runs at start and then
//! every hour.

use crate::{Hub, now_ms, sql};
use anyhow::Result;
use rusqlite::params;
use std::time::Duration;

/// How long the hub keeps its history.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Node events.
    pub events: Duration,
    /// Settled messages (replied, expired, purged) with their replies.
    pub messages: Duration,
    /// The central error log.
    pub errors: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 24 * 3600);
        Self {
            events: days(30),
            messages: days(90),
            errors: days(90),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Node events.
    pub events: u64,
    /// Settled messages.
    pub messages: u64,
    /// Error log entries.
    pub errors: u64,
}

/// Rows deleted per writer job.
const BATCH: i64 = 5_000;

impl Hub {
    /// Deletes what is older than `r` allows; returns how much.
    pub async fn prune(&self, r: Retention) -> Result<Pruned> {
        let now = now_ms();
        let before = |d: Duration| now.saturating_sub(d.as_millis() as u64) as i64;
        let (ev, msg, err) = (before(r.events), before(r.messages), before(r.errors));
        let mut total = Pruned::default();
        loop {
            let n = self
                .writer
                .run(move |s| {
                    let c = s.conn();
                    // (table, key column, time column, extra condition, cut-off)
                    let plans = [
                        ("hub_events", "rowid", "ts_ms", "", ev),
                        (
                            "hub_messages",
                            "id",
                            "created_ms",
                            "AND state IN ('replied', 'expired', 'purged')",
                            msg,
                        ),
                        ("hub_errors", "id", "at_ms", "", err),
                        // Streamed output goes with the messages' retention.
                        ("hub_output", "rowid", "at_ms", "", msg),
                    ];
                    let mut n = [0u64; 4];
                    for (i, (table, key, at, extra, before)) in plans.into_iter().enumerate() {
                        n[i] = c
                            .execute(
                                &format!(
                                    "DELETE FROM {table} WHERE {key} IN
                                     (SELECT {key} FROM {table} WHERE {at} < ?1 {extra} LIMIT ?2)"
                                ),
                                params![before, BATCH],
                            )
                            .map_err(sql("prune"))? as u64;
                    }
                    Ok((n[0], n[1] + n[3], n[2]))
                })
                .await?;
            total.events += n.0;
            total.messages += n.1;
            total.errors += n.2;
            if n.0 < BATCH as u64 && n.1 < BATCH as u64 && n.2 < BATCH as u64 {
                break;
            }
        }
        if total != Pruned::default() {
            self.bump();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prunes_what_is_old_and_settled_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::open(dir.path()).expect("open");
        let old = 1_000i64;
        let new = now_ms() as i64;
        hub.writer
            .run(move |s| {
                let c = s.conn();
                for (id, state, at) in [
                    ("m-old-replied", "replied", old),
                    ("m-old-expired", "expired", old),
                    ("m-old-waiting", "accepted", old),
                    ("m-old-delivered", "delivered", old),
                    ("m-new-replied", "replied", new),
                ] {
                    c.execute(
                        "INSERT INTO hub_messages (id, node, seq, method, sender, state, created_ms, expires_at_ms)
                         VALUES (?1, 'n1', 1, 'exec', 'alice', ?2, ?3, ?4)",
                        params![id, state, at, i64::MAX],
                    )
                    .map_err(sql("seed"))?;
                }
                for (id, at) in [(1, old), (2, new)] {
                    c.execute(
                        "INSERT INTO hub_events (node, id, ts_ms, kind, actor, message) VALUES ('n1', ?1, ?2, 'k', 'a', 'm')",
                        params![id, at],
                    )
                    .map_err(sql("seed"))?;
                    c.execute(
                        "INSERT INTO hub_errors (at_ms, node, kind, message) VALUES (?1, 'n1', 'k', 'm')",
                        params![at],
                    )
                    .map_err(sql("seed"))?;
                }
                Ok(())
            })
            .await
            .expect("seed");
        let pruned = hub.prune(Retention::default()).await.expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                events: 1,
                messages: 2,
                errors: 1
            }
        );
        let left: Vec<String> = hub
            .read(|c| {
                let mut st = c.prepare("SELECT id FROM hub_messages ORDER BY id")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .expect("read");
        assert_eq!(
            left,
            ["m-new-replied", "m-old-delivered", "m-old-waiting"],
            "nothing still waiting or in flight is ever pruned"
        );
        assert_eq!(
            hub.prune(Retention::default()).await.expect("again"),
            Pruned::default()
        );
    }
}
