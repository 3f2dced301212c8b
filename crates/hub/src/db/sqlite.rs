//! [`FleetStore`] on SQLite: the hub's tables in `hub.db`, beside the delivery store's.
//! The schema and its versioned migrations are in `schema.rs`; the message, output and
//! retention queries in `messages.rs`. What is SQLite's own stays here: `rowid` in the
//! retention batches, `AUTOINCREMENT`, and `sqlite_master` and `PRAGMA table_info` in the
//! migrations.

mod messages;
mod schema;

pub use schema::{LATEST, migrate};

use super::{
    Chunk, Cutoffs, ErrorRow, EventRow, FleetError, FleetResult, FleetStore, JoinTokenRow,
    MessageRow, NewEvent, NewMessage, NodeRow, Operator, Pruned,
};
use reeve_delivery::lane::Lane;
use rusqlite::{Connection, OptionalExtension, params};

/// Maps an SQLite error to a [`FleetError`] saying what was being done.
fn fail(what: &'static str) -> impl FnOnce(rusqlite::Error) -> FleetError {
    move |e| FleetError::new(what, e)
}

/// A stored time, count or number (never negative) as the API shows it.
fn uint(v: i64) -> u64 {
    v as u64
}

const NODE_COLS: &str = "name, key, enrolled_ms, last_seen_ms, facts, facts_ms";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    let facts: String = r.get(4)?;
    Ok(NodeRow {
        name: r.get(0)?,
        key: r.get(1)?,
        enrolled_ms: uint(r.get(2)?),
        last_seen_ms: r.get::<_, Option<i64>>(3)?.map(uint),
        facts: serde_json::from_str(&facts).unwrap_or_else(|_| serde_json::json!({})),
        facts_ms: r.get::<_, Option<i64>>(5)?.map(uint),
        online: false,
    })
}

fn operator_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Operator> {
    Ok(Operator {
        name: r.get(0)?,
        role: r.get(1)?,
        key: r.get(2)?,
    })
}

/// A `LIKE` pattern matching names that contain `search` literally.
fn contains_pattern(search: Option<&str>) -> String {
    let mut p = String::from("%");
    for ch in search.unwrap_or("").chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

impl FleetStore for Connection {
    fn node_key(&self, name: &str) -> FleetResult<Option<String>> {
        self.prepare_cached("SELECT key FROM hub_nodes WHERE name = ?1")
            .and_then(|mut s| s.query_row(params![name], |r| r.get(0)).optional())
            .map_err(fail("read node"))
    }

    fn nodes(&self, search: Option<&str>, offset: u64, limit: u64) -> FleetResult<Vec<NodeRow>> {
        self.prepare_cached(&format!(
            "SELECT {NODE_COLS} FROM hub_nodes
             WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name LIMIT ?2 OFFSET ?3"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![contains_pattern(search), limit as i64, offset as i64],
                node_row,
            )?
            .collect()
        })
        .map_err(fail("read nodes"))
    }

    fn count_nodes(&self, search: Option<&str>) -> FleetResult<u64> {
        self.prepare_cached("SELECT COUNT(*) FROM hub_nodes WHERE name LIKE ?1 ESCAPE '\\'")
            .and_then(|mut s| s.query_row(params![contains_pattern(search)], |r| r.get(0)))
            .map(uint)
            .map_err(fail("count nodes"))
    }

    fn node_names(&self, search: Option<&str>) -> FleetResult<Vec<String>> {
        self.prepare_cached(
            "SELECT name FROM hub_nodes WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name",
        )
        .and_then(|mut s| {
            s.query_map(params![contains_pattern(search)], |r| r.get(0))?
                .collect()
        })
        .map_err(fail("read node names"))
    }

    fn node(&self, name: &str) -> FleetResult<Option<NodeRow>> {
        self.prepare_cached(&format!(
            "SELECT {NODE_COLS} FROM hub_nodes WHERE name = ?1"
        ))
        .and_then(|mut s| s.query_row(params![name], node_row).optional())
        .map_err(fail("read node"))
    }

    fn record_facts(&self, node: &str, facts: &str, now_ms: u64) -> FleetResult<()> {
        self.execute(
            "UPDATE hub_nodes SET facts = ?2, facts_ms = ?3 WHERE name = ?1",
            params![node, facts, now_ms as i64],
        )
        .map(drop)
        .map_err(fail("record facts"))
    }

    fn node_seen(&self, node: &str, now_ms: u64) -> FleetResult<()> {
        self.execute(
            "UPDATE hub_nodes SET last_seen_ms = ?2 WHERE name = ?1",
            params![node, now_ms as i64],
        )
        .map(drop)
        .map_err(fail("record last seen"))
    }

    fn enrol_node(&self, name: &str, key: &str, now_ms: u64) -> FleetResult<()> {
        self.execute("DELETE FROM hub_node_keys WHERE name = ?1", params![name])
            .map_err(fail("forget retired keys"))?;
        self.execute(
            "INSERT INTO hub_nodes (name, key, enrolled_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET key = excluded.key",
            params![name, key, now_ms as i64],
        )
        .map(drop)
        .map_err(fail("enrol"))
    }

    fn remove_node(&self, name: &str) -> FleetResult<bool> {
        self.execute("DELETE FROM hub_node_keys WHERE name = ?1", params![name])
            .map_err(fail("remove node keys"))?;
        self.execute("DELETE FROM hub_nodes WHERE name = ?1", params![name])
            .map(|n| n > 0)
            .map_err(fail("remove node"))
    }

    fn node_keys(&self, name: &str, now_ms: u64) -> FleetResult<Vec<String>> {
        self.prepare_cached(
            "SELECT key FROM (
                 SELECT key, 0 AS o, 0 AS u FROM hub_nodes WHERE name = ?1
                 UNION ALL
                 SELECT key, 1, until_ms FROM hub_node_keys
                 WHERE name = ?1 AND until_ms > ?2
                   AND EXISTS (SELECT 1 FROM hub_nodes WHERE name = ?1))
             ORDER BY o, u DESC",
        )
        .and_then(|mut s| {
            s.query_map(params![name, now_ms as i64], |r| r.get(0))?
                .collect()
        })
        .map_err(fail("read node keys"))
    }

    fn rotate_node_key(
        &self,
        name: &str,
        old_key: &str,
        new_key: &str,
        until_ms: u64,
    ) -> FleetResult<()> {
        self.execute(
            "UPDATE hub_nodes SET key = ?2 WHERE name = ?1",
            params![name, new_key],
        )
        .map_err(fail("store the new node key"))?;
        retire_key(self, "hub_node_keys", name, old_key, new_key, until_ms)
    }

    fn add_join_token(
        &self,
        digest: &str,
        key: &str,
        created_ms: u64,
        expires_at_ms: u64,
    ) -> FleetResult<()> {
        self.execute(
            "INSERT INTO hub_tokens (digest, key, created_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![digest, key, created_ms as i64, expires_at_ms as i64],
        )
        .map(drop)
        .map_err(fail("store the token"))
    }

    fn join_token(&self, key: &str) -> FleetResult<Option<JoinTokenRow>> {
        self.query_row(
            "SELECT expires_at_ms, used_by FROM hub_tokens WHERE key = ?1",
            params![key],
            |r| {
                Ok(JoinTokenRow {
                    expires_at_ms: uint(r.get(0)?),
                    used_by: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(fail("read token"))
    }

    fn use_join_token(&self, key: &str, node: &str) -> FleetResult<()> {
        self.execute(
            "UPDATE hub_tokens SET used_by = ?2 WHERE key = ?1",
            params![key, node],
        )
        .map(drop)
        .map_err(fail("use token"))
    }

    fn upsert_operator(
        &self,
        name: &str,
        role: &str,
        key: Option<&str>,
        token_digest: &str,
        now_ms: u64,
    ) -> FleetResult<()> {
        self.execute(
            "INSERT INTO hub_operators (name, role, key, token_digest, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE
             SET role = excluded.role, key = excluded.key, token_digest = excluded.token_digest",
            params![name, role, key, token_digest, now_ms as i64],
        )
        .map(drop)
        .map_err(fail("store the operator"))
    }

    fn remove_operator(&self, name: &str) -> FleetResult<bool> {
        let n = self
            .execute("DELETE FROM hub_operators WHERE name = ?1", params![name])
            .map_err(fail("remove the operator"))?;
        if n == 0 {
            return Ok(false);
        }
        self.execute(
            "DELETE FROM hub_operator_keys WHERE name = ?1",
            params![name],
        )
        .map_err(fail("remove the operator's keys"))?;
        Ok(true)
    }

    fn operator(&self, name: &str) -> FleetResult<Option<Operator>> {
        self.query_row(
            "SELECT name, role, key FROM hub_operators WHERE name = ?1",
            params![name],
            operator_row,
        )
        .optional()
        .map_err(fail("read operators"))
    }

    fn rotate_operator_key(
        &self,
        name: &str,
        old_key: &str,
        new_key: &str,
        until_ms: u64,
    ) -> FleetResult<()> {
        retire_key(self, "hub_operator_keys", name, old_key, new_key, until_ms)?;
        self.execute(
            "UPDATE hub_operators SET key = ?2 WHERE name = ?1",
            params![name, new_key],
        )
        .map_err(fail("store the new key"))?;
        Ok(())
    }

    fn operator_by_token(&self, token_digest: &str) -> FleetResult<Option<Operator>> {
        self.prepare_cached("SELECT name, role, key FROM hub_operators WHERE token_digest = ?1")
            .and_then(|mut s| s.query_row(params![token_digest], operator_row).optional())
            .map_err(fail("read operators"))
    }

    fn operator_by_key(&self, key: &str) -> FleetResult<Option<Operator>> {
        self.query_row(
            "SELECT name, role, key FROM hub_operators WHERE key = ?1",
            params![key],
            operator_row,
        )
        .optional()
        .map_err(fail("read operators"))
    }

    fn operator_may_sign(&self, name: &str, key: &str, now_ms: u64) -> FleetResult<bool> {
        self.query_row(
            "SELECT (SELECT COUNT(*) FROM hub_operators WHERE name = ?1 AND key = ?2)
                  + (SELECT COUNT(*) FROM hub_operator_keys
                     WHERE name = ?1 AND key = ?2 AND until_ms > ?3)",
            params![name, key, now_ms as i64],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(fail("read operator keys"))
    }

    fn message_exists(&self, id: &str) -> FleetResult<bool> {
        messages::exists(self, id)
    }

    fn insert_message(&self, m: &NewMessage<'_>) -> FleetResult<bool> {
        messages::insert(self, m)
    }

    fn set_message_seq(&self, id: &str, seq: u64) -> FleetResult<()> {
        messages::set_seq(self, id, seq)
    }

    fn set_message_state(&self, id: &str, state: &str) -> FleetResult<()> {
        messages::set_state(self, id, state)
    }

    fn mark_delivered(
        &self,
        node: &str,
        lane: Lane,
        from: u64,
        upto: u64,
        now_ms: u64,
    ) -> FleetResult<usize> {
        messages::mark_delivered(self, node, lane, from, upto, now_ms)
    }

    fn mark_replied(&self, id: &str, node: &str, reply: &str, now_ms: u64) -> FleetResult<bool> {
        messages::mark_replied(self, id, node, reply, now_ms)
    }

    fn node_sender(&self, id: &str) -> FleetResult<Option<String>> {
        messages::node_sender(self, id)
    }

    fn message(&self, id: &str) -> FleetResult<Option<MessageRow>> {
        messages::one(self, id)
    }

    fn messages(
        &self,
        state: Option<&str>,
        node: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> FleetResult<Vec<MessageRow>> {
        messages::page(self, state, node, offset, limit)
    }

    fn message_counts(&self) -> FleetResult<Vec<(String, u64)>> {
        messages::counts(self)
    }

    fn waiting_before(&self, before_ms: u64, node: Option<&str>) -> FleetResult<Vec<String>> {
        messages::waiting_before(self, before_ms, node)
    }

    fn add_output(&self, id: &str, node: &str, chunk: &Chunk) -> FleetResult<bool> {
        messages::add_output(self, id, node, chunk)
    }

    fn output_after(&self, id: &str, after: u64, limit: u64) -> FleetResult<Vec<Chunk>> {
        messages::output_after(self, id, after, limit)
    }

    fn insert_event(&self, node: &str, e: &NewEvent) -> FleetResult<bool> {
        self.prepare_cached(
            "INSERT INTO hub_events (node, id, ts_ms, service, kind, actor, message, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                node, e.id, e.ts_ms, e.service, e.kind, e.actor, e.message, e.detail
            ])
        })
        .map(|n| n == 1)
        .map_err(fail("record event"))
    }

    fn events(
        &self,
        node: Option<&str>,
        service: Option<&str>,
        kind: Option<&str>,
        limit: u64,
    ) -> FleetResult<Vec<EventRow>> {
        self.prepare_cached(
            "SELECT node, id, ts_ms, service, kind, actor, message FROM hub_events
             WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR service = ?2)
               AND (?3 IS NULL OR kind = ?3)
             ORDER BY ts_ms DESC, id DESC LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![node, service, kind, limit as i64], |r| {
                Ok(EventRow {
                    node: r.get(0)?,
                    id: r.get(1)?,
                    ts_ms: r.get(2)?,
                    service: r.get(3)?,
                    kind: r.get(4)?,
                    actor: r.get(5)?,
                    message: r.get(6)?,
                })
            })?
            .collect()
        })
        .map_err(fail("read events"))
    }

    fn log_error(
        &self,
        now_ms: u64,
        node: Option<&str>,
        kind: &str,
        message: &str,
    ) -> FleetResult<()> {
        self.prepare_cached(
            "INSERT INTO hub_errors (at_ms, node, kind, message) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![now_ms as i64, node, kind, message]))
        .map(drop)
        .map_err(fail("log an error"))
    }

    fn errors(&self, limit: u64) -> FleetResult<Vec<ErrorRow>> {
        self.prepare_cached(
            "SELECT id, at_ms, node, kind, message FROM hub_errors ORDER BY id DESC LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map(params![limit as i64], |r| {
                Ok(ErrorRow {
                    id: r.get(0)?,
                    at_ms: uint(r.get(1)?),
                    node: r.get(2)?,
                    kind: r.get(3)?,
                    message: r.get(4)?,
                })
            })?
            .collect()
        })
        .map_err(fail("read errors"))
    }

    fn prune_batch(&self, before: &Cutoffs, batch: u64) -> FleetResult<Pruned> {
        messages::prune_batch(self, before, batch)
    }
}

/// After `name` moved from `old_key` to `new_key`: `old_key` is kept in `table` (the
/// node or operator retired-key table) until `until_ms`, and `new_key` is not retired (a
/// key rotated back to is current only).
fn retire_key(
    c: &Connection,
    table: &'static str,
    name: &str,
    old_key: &str,
    new_key: &str,
    until_ms: u64,
) -> FleetResult<()> {
    c.execute(
        &format!(
            "INSERT INTO {table} (name, key, until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name, key) DO UPDATE SET until_ms = excluded.until_ms"
        ),
        params![name, old_key, until_ms as i64],
    )
    .map_err(fail("retire the old key"))?;
    c.execute(
        &format!("DELETE FROM {table} WHERE name = ?1 AND key = ?2"),
        params![name, new_key],
    )
    .map_err(fail("un-retire the new key"))?;
    Ok(())
}
