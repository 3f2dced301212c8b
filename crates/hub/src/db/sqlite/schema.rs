//! The hub tables' schema and its versioned migrations. The version is kept in a table of
//! its own, `hub_schema` (one row), not in `PRAGMA user_version`: PostgreSQL has no such
//! thing, and a backend there keeps its version the same way.
//!
//! Version 1 is the baseline: [`SCHEMA`] and the additive changes a `hub.db` made before
//! versions existed may lack, each step idempotent, so such a file (no `hub_schema` yet)
//! is brought to version 1 safely. Each later step in [`LATER`] runs once, in order, in a
//! transaction with its version bump. A file whose version is newer than [`LATEST`] (made
//! by a newer hub) is refused.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// The baseline schema (version 1), idempotent.
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

/// Columns added before versions existed, which an older `hub.db`'s tables may lack:
/// (table, column, its definition). Part of the baseline, each added only if missing.
const BASELINE_COLUMNS: &[(&str, &str, &str)] = &[
    ("hub_nodes", "facts_ms", "INTEGER"),
    ("hub_messages", "lane", "TEXT NOT NULL DEFAULT 'ordered'"),
];

/// The steps after the baseline: `LATER[0]` takes version 1 to 2, and so on. Each is plain
/// SQL, run once; append only, never edit one that shipped.
const LATER: &[&str] = &[
    // 2: node keys rotated away from, accepted until their overlap ends.
    "CREATE TABLE hub_node_keys (
        name TEXT NOT NULL, key TEXT NOT NULL, until_ms INTEGER NOT NULL,
        PRIMARY KEY (name, key))",
    // 3: whether a node sent the message (its reply goes back to that node), so an
    // operator who shares a node's name is not taken for it. Rows from before: as the
    // hub judged them then, by the name.
    "ALTER TABLE hub_messages ADD COLUMN from_node INTEGER NOT NULL DEFAULT 0;
     UPDATE hub_messages SET from_node = 1
         WHERE sender IN (SELECT name FROM hub_nodes)",
    // 4: the public half of each join token's key, which a node proves the token with
    // instead of sending its secret. Tokens from before have none and cannot be used any
    // more (they lived hours; the join refuses them as unknown).
    "ALTER TABLE hub_tokens ADD COLUMN key TEXT;
     CREATE UNIQUE INDEX hub_tokens_key ON hub_tokens (key)",
];

/// The schema version this build brings the tables to.
pub const LATEST: u32 = 1 + LATER.len() as u32;

/// Brings the hub's tables to [`LATEST`]: the baseline on a file without versions, then
/// each later step once. Refuses a file from a newer hub. Idempotent: on an up-to-date
/// file it only reads the version.
pub fn migrate(c: &Connection) -> Result<()> {
    migrate_with(c, LATER)
}

/// [`migrate`] with the given later steps (tests bring their own).
fn migrate_with(c: &Connection, later: &[&str]) -> Result<()> {
    let latest = 1 + later.len() as u32;
    // Usually up to date: decided without taking the write lock (a running hub holds it
    // often, and `reeve hub operator add` migrates too).
    if let Some(v) = version(c)? {
        refuse_newer(v, latest)?;
        if v == latest {
            return Ok(());
        }
    }
    // Immediate: the write lock up front, then the version read again under it (another
    // process may have migrated meanwhile).
    let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)
        .context("cannot lock the hub's tables to migrate them")?;
    let mut v = match version(&tx)? {
        Some(v) => v,
        None => {
            baseline(&tx)?;
            1
        }
    };
    refuse_newer(v, latest)?;
    for (i, step) in later.iter().enumerate().skip(v as usize - 1) {
        let to = i as u32 + 2;
        tx.execute_batch(step)
            .with_context(|| format!("cannot migrate the hub's tables to version {to}"))?;
        v = to;
    }
    tx.execute("UPDATE hub_schema SET version = ?1", params![v])
        .context("cannot record the hub's schema version")?;
    tx.commit()
        .context("cannot commit the migration of the hub's tables")
}

/// The version recorded in `hub_schema`; `None` for a file from before versions (or a new
/// one).
fn version(c: &Connection) -> Result<Option<u32>> {
    let has_table = c
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hub_schema'",
            [],
            |_| Ok(()),
        )
        .optional()
        .context("cannot read the hub's schema version")?
        .is_some();
    if !has_table {
        return Ok(None);
    }
    let v: Option<i64> = c
        .query_row("SELECT MAX(version) FROM hub_schema", [], |r| r.get(0))
        .context("cannot read the hub's schema version")?;
    match v {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| *v >= 1)
            .map(Some)
            .with_context(|| format!("the hub's schema version {v} is not a version")),
    }
}

fn refuse_newer(found: u32, latest: u32) -> Result<()> {
    if found > latest {
        bail!(
            "the hub database is at schema version {found}, newer than this hub knows \
             (version {latest}): it was written by a newer reeve hub; run that version, or \
             restore a backup this one made"
        );
    }
    Ok(())
}

/// Version 1: the tables, the columns older files lack, and the version table with its
/// one row. Every step is idempotent.
fn baseline(c: &Connection) -> Result<()> {
    c.execute_batch(SCHEMA)
        .context("cannot create the hub's tables")?;
    for (table, column, definition) in BASELINE_COLUMNS {
        if !has_column(c, table, column)? {
            c.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))
            .with_context(|| format!("cannot add {table}.{column}"))?;
        }
    }
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS hub_schema (version INTEGER NOT NULL);
         DELETE FROM hub_schema;
         INSERT INTO hub_schema (version) VALUES (1);",
    )
    .context("cannot create the hub's schema version")
}

fn has_column(c: &Connection, table: &str, column: &str) -> Result<bool> {
    let mut stmt = c
        .prepare(&format!("PRAGMA table_info({table})"))
        .with_context(|| format!("cannot read the columns of {table}"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(c: &Connection, table: &str) -> Vec<String> {
        let mut st = c
            .prepare(&format!("PRAGMA table_info({table})"))
            .expect("prepare");
        st.query_map([], |r| r.get(1))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("columns")
    }

    fn stored_version(c: &Connection) -> Option<u32> {
        version(c).expect("version")
    }

    #[test]
    fn a_fresh_database_migrates_to_the_latest_version_and_again_is_a_no_op() {
        let c = Connection::open_in_memory().expect("open");
        migrate(&c).expect("migrate");
        assert_eq!(stored_version(&c), Some(LATEST));
        assert!(columns(&c, "hub_messages").contains(&"lane".to_string()));
        c.execute(
            "INSERT INTO hub_nodes (name, key, enrolled_ms) VALUES ('n1', 'k', 1)",
            [],
        )
        .expect("node");
        migrate(&c).expect("again");
        assert_eq!(stored_version(&c), Some(LATEST));
        let rows: i64 = c
            .query_row("SELECT COUNT(*) FROM hub_schema", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1, "one version row");
        let nodes: i64 = c
            .query_row("SELECT COUNT(*) FROM hub_nodes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(nodes, 1, "data kept");
    }

    #[test]
    fn an_old_style_database_without_versions_or_new_columns_migrates() {
        let c = Connection::open_in_memory().expect("open");
        // The tables as an old hub made them: no facts_ms, no lane, no hub_schema.
        let old = SCHEMA
            .replace(", facts_ms INTEGER)", ")")
            .replace("lane TEXT NOT NULL DEFAULT 'ordered',", "");
        c.execute_batch(&old).expect("old schema");
        assert!(!columns(&c, "hub_nodes").contains(&"facts_ms".to_string()));
        assert!(!columns(&c, "hub_messages").contains(&"lane".to_string()));
        c.execute(
            "INSERT INTO hub_messages (id, node, seq, method, sender, state, created_ms, expires_at_ms)
             VALUES ('m1', 'n1', 1, 'exec', 'alice', 'accepted', 1, 2)",
            [],
        )
        .expect("old message");
        assert_eq!(stored_version(&c), None);
        migrate(&c).expect("migrate");
        assert_eq!(stored_version(&c), Some(LATEST));
        assert!(columns(&c, "hub_nodes").contains(&"facts_ms".to_string()));
        let lane: String = c
            .query_row("SELECT lane FROM hub_messages WHERE id = 'm1'", [], |r| {
                r.get(0)
            })
            .expect("lane");
        assert_eq!(lane, "ordered");
        migrate(&c).expect("again");
    }

    #[test]
    fn later_steps_run_once_in_order() {
        let c = Connection::open_in_memory().expect("open");
        migrate_with(&c, &[]).expect("baseline");
        let later = [
            "CREATE TABLE hub_extra (a INTEGER)",
            "ALTER TABLE hub_extra ADD COLUMN b TEXT",
        ];
        migrate_with(&c, &later[..1]).expect("to 2");
        assert_eq!(stored_version(&c), Some(2));
        // Run again with a further step: only that one runs (the first would fail twice).
        migrate_with(&c, &later).expect("to 3");
        assert_eq!(stored_version(&c), Some(3));
        assert_eq!(columns(&c, "hub_extra"), ["a", "b"]);
        migrate_with(&c, &later).expect("no-op");
        // A failing step changes nothing, the version included.
        let bad = [later[0], later[1], "ALTER TABLE nowhere ADD COLUMN c TEXT"];
        assert!(migrate_with(&c, &bad).is_err());
        assert_eq!(stored_version(&c), Some(3));
        // From nothing, the baseline and every step in one go.
        let fresh = Connection::open_in_memory().expect("open");
        migrate_with(&fresh, &later).expect("fresh");
        assert_eq!(stored_version(&fresh), Some(3));
    }

    #[test]
    fn version_3_marks_the_messages_nodes_sent() {
        let c = Connection::open_in_memory().expect("open");
        migrate_with(&c, &LATER[..1]).expect("to 2");
        c.execute_batch(
            "INSERT INTO hub_nodes (name, key, enrolled_ms) VALUES ('n1', 'k', 1);
             INSERT INTO hub_messages (id, node, seq, method, sender, state, created_ms, expires_at_ms)
             VALUES ('from-node', 'n2', 1, 'exec', 'n1', 'accepted', 1, 2),
                    ('from-op', 'n2', 2, 'exec', 'alice', 'accepted', 1, 2);",
        )
        .expect("rows of version 2");
        migrate(&c).expect("to the latest");
        let marked = |id: &str| -> i64 {
            c.query_row(
                "SELECT from_node FROM hub_messages WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .expect("row")
        };
        assert_eq!((marked("from-node"), marked("from-op")), (1, 0));
    }

    #[test]
    fn version_4_keeps_old_tokens_unusable_and_new_ones_found_by_key() {
        use crate::db::FleetStore;
        let c = Connection::open_in_memory().expect("open");
        migrate_with(&c, &LATER[..2]).expect("to 3");
        c.execute_batch(
            "INSERT INTO hub_tokens (digest, created_ms, expires_at_ms, used_by)
             VALUES ('old-unused', 1, 9, NULL), ('old-used', 1, 9, 'n1');",
        )
        .expect("rows of version 3");
        migrate(&c).expect("to the latest");
        let rows: i64 = c
            .query_row(
                "SELECT count(*) FROM hub_tokens WHERE key IS NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(rows, 2, "the old rows stay, without a key");
        c.add_join_token("d1", "K1", 1, 9).expect("add");
        c.add_join_token("d2", "K2", 1, 9).expect("add");
        assert!(
            c.add_join_token("d3", "K1", 1, 9).is_err(),
            "one row per key"
        );
        c.use_join_token("K2", "n2").expect("use");
        let t = |k: &str| c.join_token(k).expect("read").map(|t| t.used_by);
        assert_eq!((t("K1"), t("K2")), (Some(None), Some(Some("n2".into()))));
        assert_eq!(t("old-unused"), None, "found by key only");
    }

    #[test]
    fn a_database_from_a_newer_hub_is_refused() {
        let c = Connection::open_in_memory().expect("open");
        migrate(&c).expect("migrate");
        let newer = LATEST + 1;
        c.execute("UPDATE hub_schema SET version = ?1", params![newer])
            .expect("bump");
        let e = migrate(&c).expect_err("refused");
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&format!("schema version {newer}"))
                && msg.contains(&format!("version {LATEST}")),
            "{msg}"
        );
        assert_eq!(stored_version(&c), Some(newer), "left as it was");
    }
}
