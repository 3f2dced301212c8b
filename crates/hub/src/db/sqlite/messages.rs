//! Messages, their streamed output, and retention on SQLite (the bodies of those
//! [`FleetStore`](crate::db::FleetStore) methods).

use super::{fail, uint};
use crate::db::{Chunk, Cutoffs, FleetResult, MessageRow, NewMessage, Pruned};
use reeve_delivery::lane::Lane;
use rusqlite::{Connection, OptionalExtension, params};

const MESSAGE_COLS: &str =
    "id, node, method, sender, state, created_ms, delivered_ms, replied_ms, reply, lane";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let reply: Option<String> = r.get(8)?;
    Ok(MessageRow {
        id: r.get(0)?,
        node: r.get(1)?,
        method: r.get(2)?,
        sender: r.get(3)?,
        state: r.get(4)?,
        created_ms: uint(r.get(5)?),
        delivered_ms: r.get::<_, Option<i64>>(6)?.map(uint),
        replied_ms: r.get::<_, Option<i64>>(7)?.map(uint),
        reply: reply.and_then(|s| serde_json::from_str(&s).ok()),
        lane: r.get(9)?,
    })
}

pub(super) fn exists(c: &Connection, id: &str) -> FleetResult<bool> {
    c.prepare_cached("SELECT 1 FROM hub_messages WHERE id = ?1")
        .and_then(|mut s| s.exists(params![id]))
        .map_err(fail("check id"))
}

pub(super) fn insert(c: &Connection, m: &NewMessage<'_>) -> FleetResult<bool> {
    c.prepare_cached(
        "INSERT INTO hub_messages
             (id, node, lane, seq, method, sender, from_node, state, created_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted', ?8, ?9) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.id,
            m.node,
            m.lane.as_str(),
            m.seq.map(|v| v as i64),
            m.method,
            m.sender,
            m.from_node,
            m.created_ms as i64,
            m.expires_at_ms as i64
        ])
    })
    .map(|n| n == 1)
    .map_err(fail("record message"))
}

pub(super) fn set_seq(c: &Connection, id: &str, seq: u64) -> FleetResult<()> {
    c.prepare_cached("UPDATE hub_messages SET seq = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, seq as i64]))
        .map(drop)
        .map_err(fail("record seq"))
}

pub(super) fn set_state(c: &Connection, id: &str, state: &str) -> FleetResult<()> {
    c.prepare_cached("UPDATE hub_messages SET state = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, state]))
        .map(drop)
        .map_err(fail("mark a dead letter"))
}

pub(super) fn mark_delivered(
    c: &Connection,
    node: &str,
    lane: Lane,
    from: u64,
    upto: u64,
    now_ms: u64,
) -> FleetResult<usize> {
    c.prepare_cached(
        "UPDATE hub_messages SET state = 'delivered', delivered_ms = ?3
         WHERE node = ?1 AND seq > ?4 AND seq <= ?2 AND lane = ?5 AND state = 'accepted'",
    )
    .and_then(|mut s| {
        s.execute(params![
            node,
            upto as i64,
            now_ms as i64,
            from as i64,
            lane.as_str()
        ])
    })
    .map_err(fail("mark delivered"))
}

pub(super) fn mark_replied(
    c: &Connection,
    id: &str,
    node: &str,
    reply: &str,
    now_ms: u64,
) -> FleetResult<bool> {
    c.prepare_cached(
        "UPDATE hub_messages SET state = 'replied', reply = ?3, replied_ms = ?4
         WHERE id = ?1 AND node = ?2 AND state != 'replied'",
    )
    .and_then(|mut s| s.execute(params![id, node, reply, now_ms as i64]))
    .map(|n| n == 1)
    .map_err(fail("record reply"))
}

pub(super) fn node_sender(c: &Connection, id: &str) -> FleetResult<Option<String>> {
    c.prepare_cached("SELECT sender FROM hub_messages WHERE id = ?1 AND from_node = 1")
        .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
        .map_err(fail("read sender"))
}

pub(super) fn one(c: &Connection, id: &str) -> FleetResult<Option<MessageRow>> {
    c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM hub_messages WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row(params![id], message_row).optional())
    .map_err(fail("read message"))
}

pub(super) fn page(
    c: &Connection,
    state: Option<&str>,
    node: Option<&str>,
    offset: u64,
    limit: u64,
) -> FleetResult<Vec<MessageRow>> {
    c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM hub_messages
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR node = ?2)
         ORDER BY created_ms DESC, id DESC LIMIT ?3 OFFSET ?4"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![state, node, limit as i64, offset as i64],
            message_row,
        )?
        .collect()
    })
    .map_err(fail("read messages"))
}

pub(super) fn counts(c: &Connection) -> FleetResult<Vec<(String, u64)>> {
    c.prepare_cached("SELECT state, COUNT(*) FROM hub_messages GROUP BY state")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, uint(r.get(1)?))))?
                .collect()
        })
        .map_err(fail("count messages"))
}

pub(super) fn waiting_before(
    c: &Connection,
    before_ms: u64,
    node: Option<&str>,
) -> FleetResult<Vec<String>> {
    c.prepare_cached(
        "SELECT id FROM hub_messages WHERE state = 'accepted' AND created_ms < ?1
         AND (?2 IS NULL OR node = ?2) ORDER BY created_ms LIMIT 100000",
    )
    .and_then(|mut s| {
        s.query_map(params![before_ms as i64, node], |r| r.get(0))?
            .collect()
    })
    .map_err(fail("read waiting messages"))
}

pub(super) fn add_output(c: &Connection, id: &str, node: &str, chunk: &Chunk) -> FleetResult<bool> {
    c.prepare_cached(
        "INSERT INTO hub_output (id, n, stdout, stderr, at_ms)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS
             (SELECT 1 FROM hub_messages WHERE id = ?1 AND node = ?6 AND state != 'replied')
         ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            chunk.n as i64,
            chunk.stdout,
            chunk.stderr,
            chunk.at_ms as i64,
            node
        ])
    })
    .map(|n| n == 1)
    .map_err(fail("record output"))
}

pub(super) fn output_after(
    c: &Connection,
    id: &str,
    after: u64,
    limit: u64,
) -> FleetResult<Vec<Chunk>> {
    c.prepare_cached(
        "SELECT n, stdout, stderr, at_ms FROM hub_output WHERE id = ?1 AND n > ?2
         ORDER BY n LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(
            params![id, after as i64, limit.min(i64::MAX as u64) as i64],
            |r| {
                Ok(Chunk {
                    n: uint(r.get(0)?),
                    stdout: r.get(1)?,
                    stderr: r.get(2)?,
                    at_ms: uint(r.get(3)?),
                })
            },
        )?
        .collect()
    })
    .map_err(fail("read output"))
}

pub(super) fn prune_batch(c: &Connection, before: &Cutoffs, batch: u64) -> FleetResult<Pruned> {
    // (table, key column, time column, extra condition, cut-off)
    let plans = [
        ("hub_events", "rowid", "ts_ms", "", before.events),
        (
            "hub_messages",
            "id",
            "created_ms",
            "AND state IN ('replied', 'expired', 'purged')",
            before.messages,
        ),
        ("hub_errors", "id", "at_ms", "", before.errors),
        // Streamed output goes with the messages' retention.
        ("hub_output", "rowid", "at_ms", "", before.messages),
        // Keys rotated away from, once their overlap closed (they no longer count).
        ("hub_node_keys", "rowid", "until_ms", "", before.keys),
        ("hub_operator_keys", "rowid", "until_ms", "", before.keys),
    ];
    let mut n = [0u64; 6];
    for (i, (table, key, at, extra, cutoff)) in plans.into_iter().enumerate() {
        n[i] = c
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE {key} IN
                     (SELECT {key} FROM {table} WHERE {at} < ?1 {extra} LIMIT ?2)"
                ),
                params![cutoff as i64, batch as i64],
            )
            .map_err(fail("prune"))? as u64;
    }
    // Output chunks are not messages: they go with theirs, uncounted.
    Ok(Pruned {
        events: n[0],
        messages: n[1],
        errors: n[2],
        keys: n[4] + n[5],
    })
}
