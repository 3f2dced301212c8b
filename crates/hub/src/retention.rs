//! Retention of the hub's history: node events, settled messages (replied, expired or
//! purged; never one still waiting or in flight) and the error log older than their limits
//! are deleted, in bounded batches so the writer is never held long. Runs at start and then
//! every hour.

use crate::db::{Cutoffs, fleet};
use crate::{Hub, now_ms};
use anyhow::Result;
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

pub use crate::db::Pruned;

/// Rows deleted per writer job.
const BATCH: u64 = 5_000;

impl Hub {
    /// Deletes what is older than `r` allows; returns how much.
    pub async fn prune(&self, r: Retention) -> Result<Pruned> {
        let now = now_ms();
        let before = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        let cutoffs = Cutoffs {
            events: before(r.events),
            messages: before(r.messages),
            errors: before(r.errors),
            keys: now,
        };
        let mut total = Pruned::default();
        loop {
            let n = self
                .writer
                .run(move |s| Ok(fleet(s).prune_batch(&cutoffs, BATCH)?))
                .await?;
            total.events += n.events;
            total.messages += n.messages;
            total.errors += n.errors;
            total.keys += n.keys;
            if n.events < BATCH && n.messages < BATCH && n.errors < BATCH && n.keys < BATCH {
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
    use crate::db::{NewEvent, NewMessage};
    use reeve_delivery::lane::Lane;

    #[tokio::test]
    async fn prunes_what_is_old_and_settled_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::open(dir.path()).expect("open");
        let old = 1_000;
        let new = now_ms();
        hub.writer
            .run(move |s| {
                let f = fleet(s);
                for (seq, (id, state, at)) in [
                    ("m-old-replied", "replied", old),
                    ("m-old-expired", "expired", old),
                    ("m-old-waiting", "accepted", old),
                    ("m-old-delivered", "delivered", old),
                    ("m-new-replied", "replied", new),
                ]
                .into_iter()
                .enumerate()
                {
                    let seq = seq as u64 + 1;
                    f.insert_message(&NewMessage {
                        id,
                        node: "n1",
                        lane: Lane::Ordered,
                        seq: Some(seq),
                        method: "exec",
                        sender: "alice",
                        from_node: false,
                        created_ms: at,
                        expires_at_ms: i64::MAX as u64,
                    })?;
                    match state {
                        "replied" => assert!(f.mark_replied(id, "n1", "{}", at)?),
                        "delivered" => {
                            assert_eq!(f.mark_delivered("n1", Lane::Ordered, seq - 1, seq, at)?, 1)
                        }
                        "expired" => f.set_message_state(id, state)?,
                        _ => {}
                    }
                }
                for (id, at) in [(1, old), (2, new)] {
                    let event = NewEvent {
                        id,
                        ts_ms: at as i64,
                        service: None,
                        kind: "k".into(),
                        actor: "a".into(),
                        message: "m".into(),
                        detail: None,
                    };
                    f.insert_event("n1", &event)?;
                    f.log_error(at, Some("n1"), "k", "m")?;
                }
                // n1 rotated twice: the first key's overlap closed, the second's is open.
                f.enrol_node("n1", "k1", old)?;
                f.rotate_node_key("n1", "k1", "k2", old)?;
                f.rotate_node_key("n1", "k2", "k3", u64::MAX >> 2)?;
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
                errors: 1,
                keys: 1
            }
        );
        let mut left: Vec<(String, String)> = hub
            .read(|f| Ok(f.messages(None, None, 0, 100)?))
            .expect("read")
            .into_iter()
            .map(|m| (m.id, m.state))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("m-new-replied".to_string(), "replied".to_string()),
                ("m-old-delivered".into(), "delivered".into()),
                ("m-old-waiting".into(), "accepted".into())
            ],
            "nothing still waiting or in flight is ever pruned"
        );
        let keys = hub
            .read(|f| Ok(f.node_keys("n1", now_ms())?))
            .expect("keys");
        assert_eq!(keys, ["k3", "k2"], "the open overlap stays");
        assert_eq!(
            hub.prune(Retention::default()).await.expect("again"),
            Pruned::default()
        );
    }
}
