//! The hub's tables, kept in the same SQLite file as its delivery outbox and inbox so that a
//! message's record and its place in the outbox are written in one transaction. Writes go
//! through the delivery writer (group commit); reads use a second connection (WAL).
//! The SQL is kept portable (no SQLite-only syntax beyond upserts) for the PostgreSQL
//! backend to come.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The schema, applied at every start (idempotent).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hub_nodes (
    name TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, enrolled_ms INTEGER NOT NULL,
    last_seen_ms INTEGER, facts TEXT NOT NULL DEFAULT '{}', facts_ms INTEGER);
CREATE TABLE IF NOT EXISTS hub_tokens (
    digest TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,
    used_by TEXT);
CREATE TABLE IF NOT EXISTS hub_operators (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, key TEXT, token_digest TEXT UNIQUE,
    created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hub_operator_keys (
    name TEXT NOT NULL, key TEXT NOT NULL, until_ms INTEGER NOT NULL, PRIMARY KEY (name, key));
CREATE TABLE IF NOT EXISTS hub_messages (
    id TEXT PRIMARY KEY, node TEXT NOT NULL, lane TEXT NOT NULL DEFAULT 'ordered',
    seq INTEGER, method TEXT NOT NULL,
    sender TEXT NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL,
    delivered_ms INTEGER, replied_ms INTEGER, expires_at_ms INTEGER NOT NULL, reply TEXT);
CREATE INDEX IF NOT EXISTS hub_messages_node_seq ON hub_messages (node, seq);
CREATE INDEX IF NOT EXISTS hub_messages_state ON hub_messages (state);
CREATE TABLE IF NOT EXISTS hub_output (
    id TEXT NOT NULL, n INTEGER NOT NULL, stdout TEXT NOT NULL, stderr TEXT NOT NULL,
    at_ms INTEGER NOT NULL, PRIMARY KEY (id, n));
CREATE TABLE IF NOT EXISTS hub_events (
    node TEXT NOT NULL, id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, service TEXT,
    kind TEXT NOT NULL, actor TEXT NOT NULL, message TEXT NOT NULL, detail TEXT,
    PRIMARY KEY (node, id));
CREATE INDEX IF NOT EXISTS hub_events_ts ON hub_events (ts_ms);
CREATE TABLE IF NOT EXISTS hub_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, node TEXT,
    kind TEXT NOT NULL, message TEXT NOT NULL);
";

/// Brings the tables up to date: the idempotent [`SCHEMA`], then the additive changes a
/// `hub.db` made by an older hub lacks (each guarded by a check, never destructive).
pub fn migrate(c: &Connection) -> Result<()> {
    c.execute_batch(SCHEMA)
        .context("cannot create the hub's tables")?;
    if !has_column(c, "hub_nodes", "facts_ms")? {
        c.execute_batch("ALTER TABLE hub_nodes ADD COLUMN facts_ms INTEGER")
            .context("cannot add hub_nodes.facts_ms")?;
    }
    if !has_column(c, "hub_messages", "lane")? {
        c.execute_batch("ALTER TABLE hub_messages ADD COLUMN lane TEXT NOT NULL DEFAULT 'ordered'")
            .context("cannot add hub_messages.lane")?;
    }
    Ok(())
}

fn has_column(c: &Connection, table: &str, column: &str) -> Result<bool> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hex SHA-256 of a secret (tokens are stored only as digests).
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A node as the API shows it.
#[derive(Serialize, Clone, Debug, ToSchema)]
pub struct NodeRow {
    /// Its name.
    pub name: String,
    /// Its public key (base64).
    pub key: String,
    /// When it joined, ms since the epoch.
    pub enrolled_ms: u64,
    /// When it was last connected, ms since the epoch.
    pub last_seen_ms: Option<u64>,
    /// What it last reported about itself (`hello`).
    pub facts: serde_json::Value,
    /// When the hub received those facts, ms since the epoch (none yet: null).
    pub facts_ms: Option<u64>,
    /// Is it connected now?
    pub online: bool,
}

/// A message as the API shows it.
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct MessageRow {
    /// The request id.
    pub id: String,
    /// The node it is for.
    pub node: String,
    /// Its method.
    pub method: String,
    /// Who sent it.
    pub sender: String,
    /// `accepted` (durable in the hub's outbox), `delivered` (in the node's inbox),
    /// `replied`, or `expired` (dead letter).
    #[schema(example = "replied")]
    pub state: String,
    /// When it was accepted.
    pub created_ms: u64,
    /// When the node acknowledged it.
    pub delivered_ms: Option<u64>,
    /// When its reply arrived.
    pub replied_ms: Option<u64>,
    /// The reply's content.
    pub reply: Option<serde_json::Value>,
    /// The lane it travels on: `ordered`, `priority` (control methods) or `unordered`.
    #[schema(example = "ordered")]
    pub lane: String,
}

/// An entry of the central error log.
#[derive(Serialize, Clone, Debug, ToSchema)]
pub struct ErrorRow {
    /// Its number.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The node concerned.
    pub node: Option<String>,
    /// `dead_letter`, `refused`, `clone`, `node_error`, …
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// Appends to the central error log.
pub fn log_error(
    c: &Connection,
    now_ms: u64,
    node: Option<&str>,
    kind: &str,
    msg: &str,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO hub_errors (at_ms, node, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms as i64, node, kind, msg],
    )?;
    Ok(())
}

/// The key enrolled under `name`.
pub fn node_key(c: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT key FROM hub_nodes WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()
}

const NODE_COLS: &str = "name, key, enrolled_ms, last_seen_ms, facts, facts_ms";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    let facts: String = r.get(4)?;
    Ok(NodeRow {
        name: r.get(0)?,
        key: r.get(1)?,
        enrolled_ms: r.get::<_, i64>(2)? as u64,
        last_seen_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
        facts: serde_json::from_str(&facts).unwrap_or_else(|_| serde_json::json!({})),
        facts_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        online: false,
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

/// Nodes by name, `limit` from `offset`, optionally those whose name contains `search`.
pub fn nodes(
    c: &Connection,
    search: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<Vec<NodeRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM hub_nodes
         WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt.query_map(
        params![contains_pattern(search), limit as i64, offset as i64],
        node_row,
    )?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read nodes")
}

/// How many nodes [`nodes`] would list without paging.
pub fn count_nodes(c: &Connection, search: Option<&str>) -> Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM hub_nodes WHERE name LIKE ?1 ESCAPE '\\'")?
        .query_row(params![contains_pattern(search)], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .context("cannot count nodes")
}

/// The names of the nodes whose name contains `search`, in order (for filters the
/// database cannot apply, like "online").
pub fn node_names(c: &Connection, search: Option<&str>) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT name FROM hub_nodes WHERE name LIKE ?1 ESCAPE '\\' ORDER BY name",
    )?;
    let rows = stmt.query_map(params![contains_pattern(search)], |r| r.get(0))?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read node names")
}

/// One node.
pub fn node(c: &Connection, name: &str) -> Result<Option<NodeRow>> {
    c.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM hub_nodes WHERE name = ?1"
    ))?
    .query_row(params![name], node_row)
    .optional()
    .context("cannot read node")
}

/// Records the facts a node reported (`hello`) and when they arrived.
pub fn record_facts(c: &Connection, node: &str, facts: &str, now_ms: u64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE hub_nodes SET facts = ?2, facts_ms = ?3 WHERE name = ?1",
        params![node, facts, now_ms as i64],
    )?;
    Ok(())
}

/// How many messages are in each state (states without messages are left out).
pub fn message_counts(c: &Connection) -> Result<Vec<(String, u64)>> {
    let mut stmt = c.prepare_cached("SELECT state, COUNT(*) FROM hub_messages GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot count messages")
}

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let reply: Option<String> = r.get(8)?;
    Ok(MessageRow {
        id: r.get(0)?,
        node: r.get(1)?,
        method: r.get(2)?,
        sender: r.get(3)?,
        state: r.get(4)?,
        created_ms: r.get::<_, i64>(5)? as u64,
        delivered_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        replied_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        reply: reply.and_then(|s| serde_json::from_str(&s).ok()),
        lane: r.get(9)?,
    })
}

const MESSAGE_COLS: &str =
    "id, node, method, sender, state, created_ms, delivered_ms, replied_ms, reply, lane";

/// One message.
pub fn message(c: &Connection, id: &str) -> Result<Option<MessageRow>> {
    c.query_row(
        &format!("SELECT {MESSAGE_COLS} FROM hub_messages WHERE id = ?1"),
        params![id],
        message_row,
    )
    .optional()
    .context("cannot read message")
}

/// Messages, newest first, `limit` from `offset`, optionally in one state or for one node.
pub fn messages(
    c: &Connection,
    state: Option<&str>,
    node: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<Vec<MessageRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM hub_messages
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR node = ?2)
         ORDER BY created_ms DESC, id DESC LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(
        params![state, node, limit as i64, offset as i64],
        message_row,
    )?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read messages")
}

/// Ids of the messages still waiting for delivery (`accepted`) that were created before
/// `before_ms`, optionally only those to `node`; at most 100,000.
pub fn waiting_before(c: &Connection, before_ms: u64, node: Option<&str>) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM hub_messages WHERE state = 'accepted' AND created_ms < ?1
         AND (?2 IS NULL OR node = ?2) ORDER BY created_ms LIMIT 100000",
    )?;
    let rows = stmt.query_map(params![before_ms as i64, node], |r| r.get(0))?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read waiting messages")
}

/// The central error log, newest first.
pub fn errors(c: &Connection, limit: u64) -> Result<Vec<ErrorRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, at_ms, node, kind, message FROM hub_errors ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(ErrorRow {
            id: r.get(0)?,
            at_ms: r.get::<_, i64>(1)? as u64,
            node: r.get(2)?,
            kind: r.get(3)?,
            message: r.get(4)?,
        })
    })?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read errors")
}

/// An operator, found by API token.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// Name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// Their public key (base64), if registered.
    pub key: Option<String>,
}

/// The operator holding `token`.
pub fn operator_by_token(c: &Connection, token: &str) -> Result<Option<Operator>> {
    c.query_row(
        "SELECT name, role, key FROM hub_operators WHERE token_digest = ?1",
        params![digest(token)],
        |r| {
            Ok(Operator {
                name: r.get(0)?,
                role: r.get(1)?,
                key: r.get(2)?,
            })
        },
    )
    .optional()
    .context("cannot read operators")
}

/// May operator `name` sign with `key` (base64) at `now_ms`: their current key, or one they
/// rotated away from whose overlap window is still open?
pub fn operator_may_sign(c: &Connection, name: &str, key: &str, now_ms: u64) -> Result<bool> {
    let n: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM hub_operators WHERE name = ?1 AND key = ?2)
                  + (SELECT COUNT(*) FROM hub_operator_keys
                     WHERE name = ?1 AND key = ?2 AND until_ms > ?3)",
            params![name, key, now_ms as i64],
            |r| r.get(0),
        )
        .context("cannot read operator keys")?;
    Ok(n > 0)
}

/// The operator holding `key`.
pub fn operator_by_key(c: &Connection, key: &str) -> Result<Option<Operator>> {
    c.query_row(
        "SELECT name, role, key FROM hub_operators WHERE key = ?1",
        params![key],
        |r| {
            Ok(Operator {
                name: r.get(0)?,
                role: r.get(1)?,
                key: r.get(2)?,
            })
        },
    )
    .optional()
    .context("cannot read operators")
}

/// Stores one event a node forwarded (its own `id`); false if it was stored already.
pub fn insert_event(c: &Connection, node: &str, e: &serde_json::Value) -> rusqlite::Result<bool> {
    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let Some(id) = e.get("id").and_then(|v| v.as_i64()) else {
        return Ok(false);
    };
    let n = c.execute(
        "INSERT OR IGNORE INTO hub_events (node, id, ts_ms, service, kind, actor, message, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            node,
            id,
            e.get("ts_ms").and_then(|v| v.as_i64()).unwrap_or(0),
            e.get("service").and_then(|v| v.as_str()),
            s("kind"),
            s("actor"),
            s("message"),
            e.get("detail")
                .filter(|d| !d.is_null())
                .map(|d| d.to_string()),
        ],
    )?;
    Ok(n == 1)
}

/// An event as the API shows it.
pub fn event_json(node: &str, e: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "node": node,
        "id": e.get("id"),
        "ts_ms": e.get("ts_ms"),
        "service": e.get("service"),
        "kind": e.get("kind"),
        "actor": e.get("actor"),
        "message": e.get("message"),
    })
}

/// A node's event as the API shows it (as forwarded by its agent).
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct EventRow {
    /// The node it happened on.
    pub node: String,
    /// Its position in the node's own event log.
    pub id: i64,
    /// When it happened, ms since the epoch (the node's clock).
    pub ts_ms: i64,
    /// The service it is about, if any.
    pub service: Option<String>,
    /// What happened (`running`, `exited`, `backing_off`, …).
    pub kind: String,
    /// Who caused it (`buddy`, `agent`, `uid:1000`, an operator …).
    pub actor: String,
    /// A one-line description.
    pub message: String,
}

/// Events, newest first, optionally of one node, service or kind.
pub fn events(
    c: &Connection,
    node: Option<&str>,
    service: Option<&str>,
    kind: Option<&str>,
    limit: u64,
) -> Result<Vec<EventRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT node, id, ts_ms, service, kind, actor, message FROM hub_events
         WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR kind = ?3)
         ORDER BY ts_ms DESC, id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![node, service, kind, limit as i64], |r| {
        Ok(EventRow {
            node: r.get(0)?,
            id: r.get(1)?,
            ts_ms: r.get(2)?,
            service: r.get(3)?,
            kind: r.get(4)?,
            actor: r.get(5)?,
            message: r.get(6)?,
        })
    })?;
    rows.collect::<rusqlite::Result<_>>()
        .context("cannot read events")
}
