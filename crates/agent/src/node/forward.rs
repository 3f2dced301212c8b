//! Forwards the node's event log to the hub through the node's own stream (DESIGN.md §2.1,
//! issue "hub side"): nothing is lost while offline, since events wait in the outbox like
//! any message. Batches travel on a lane of their own ([`EVENT_LANE`], with a small window
//! in flight), so replies to commands go ahead of an event backlog; the hub keeps events
//! by (node, id), so their order across batches does not matter. The cursor (last forwarded event id) lives in the delivery store and moves
//! in the same transaction that queues the batch, so a crash neither skips nor repeats a
//! batch; the hub also ignores an event it has (node, id) already. Facts (`hello`) are
//! re-sent when they change.

use super::Node;
use anyhow::Result;
use reeve_delivery::envelope::{Content, Request, Sequenced, authorize, seal};
use reeve_delivery::lane::Lane;
use rusqlite::OptionalExtension;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lane of the node's stream that carries its event batches.
pub(crate) const EVENT_LANE: Lane = Lane::Unordered;

/// Events per message.
const BATCH: u32 = 500;
/// At most one batch per this long: the first event after a quiet spell goes at once (a
/// dashboard shows it within milliseconds), and a burst is gathered into few messages
/// (at most 40 a second) without holding its later events back for long: one action
/// records several events a few milliseconds apart (`action`, `stopping`, `stopped`).
const GATHER: Duration = Duration::from_millis(25);

fn cursor(s: &reeve_delivery::store::DeliveryStore) -> rusqlite::Result<i64> {
    s.conn()
        .query_row("SELECT v FROM meta WHERE k = 'events_cursor'", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map(|v| v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Forwards new events until the agent stops.
pub async fn run(node: Arc<Node>) {
    let mut live = node.ctx.log.subscribe();
    let mut last_facts = serde_json::Value::Null;
    let mut last_batch: Option<Instant> = None;
    loop {
        if let Some(wait) = last_batch.map(|t| GATHER.saturating_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        match forward_once(&node).await {
            Ok(Some(full)) => {
                last_batch = Some(Instant::now());
                if full {
                    continue;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("forwarding events: {e:#}"),
        }
        // Facts (service states among them) go out again when they changed, so the hub's
        // view follows the node's within a moment.
        let facts = super::methods::facts(&node.ctx);
        if facts != last_facts {
            match node.send_to_hub("hello", facts.clone()).await {
                Ok(_) => last_facts = facts,
                Err(e) => tracing::warn!("queueing facts: {e:#}"),
            }
        }
        // Wait for new events (or poll now and then, if the live channel lagged).
        let _ = tokio::time::timeout(Duration::from_secs(5), live.recv()).await;
    }
}

/// Queues the next batch: `None` when there was nothing new, else whether the batch was
/// full (there may be more).
async fn forward_once(node: &Arc<Node>) -> Result<Option<bool>> {
    let after = node
        .writer
        .run(|s| {
            cursor(s).map_err(|e| reeve_delivery::store::StoreError::Sql {
                what: "read cursor",
                source: e,
            })
        })
        .await?;
    let events = node
        .ctx
        .log
        .query(reeve_store::EventQuery {
            after_id: Some(after),
            limit: Some(BATCH),
            oldest: true,
            ..Default::default()
        })
        .await?;
    let Some(last) = events.last().map(|e| e.id) else {
        return Ok(None);
    };
    let full = events.len() as u32 == BATCH;
    let args = serde_json::json!({ "events": events });
    let mut r = Request::new(
        node.name(),
        "hub",
        "events",
        args,
        node.now().saturating_add(super::REPLY_TTL_MS),
    );
    r.method_timeout_ms = None;
    r.unordered = true;
    let own = node.own();
    let key = own.key.clone();
    let auth = authorize(&r, &key)?;
    let stream = own.stream().on(EVENT_LANE);
    node.writer
        .run(move |s| {
            if cursor(s).map_err(|e| reeve_delivery::store::StoreError::Sql { what: "read cursor", source: e })? != after {
                return Ok(());
            }
            let st = stream.clone();
            s.enqueue(&stream, &r.id, r.expires_at_ms, move |seq| {
                seal(&Sequenced { stream: st, seq: Some(seq), content: Content::Request { auth } }, &key)
                    .unwrap_or_default()
            })?;
            s.conn()
                .execute(
                    "INSERT INTO meta (k, v) VALUES ('events_cursor', ?1) ON CONFLICT(k) DO UPDATE SET v = ?1",
                    [last.to_string()],
                )
                .map_err(|e| reeve_delivery::store::StoreError::Sql { what: "move cursor", source: e })?;
            Ok(())
        })
        .await?;
    node.out_wake.notify_one();
    Ok(Some(full))
}
