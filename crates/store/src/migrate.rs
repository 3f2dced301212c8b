//! A small `user_version` migration runner: each entry of [`MIGRATIONS`] runs once, in
//! order, in its own transaction. Migrations are additive only (new tables, new columns
//! with defaults), so an older agent can still run on a newer file after an update trial
//! is switched back; only a new epoch (see [`EPOCH`]) is refused.

use crate::{Result, StoreError, q};
use rusqlite::Connection;
use std::path::Path;

/// The schema, one step per version (index 0 → version 1).
const MIGRATIONS: &[&str] = &[
    // 1: event log and service records.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        service TEXT,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT
     );
     CREATE INDEX events_service ON events(service, id);
     CREATE INDEX events_ts ON events(ts_ms);
     CREATE TABLE services (
        name TEXT PRIMARY KEY,
        desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
        buddy_pid INTEGER,
        buddy_start_ticks INTEGER,
        buddy_boot_id TEXT,
        journal_seq INTEGER NOT NULL DEFAULT 0
     );",
    // 2: the service pid last reported, to find an orphan when its buddy is gone.
    "ALTER TABLE services ADD COLUMN service_pid INTEGER;",
    // 3: installed modules (one JSON record per name and version).
    "CREATE TABLE modules (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (name, version)
     );",
    // 4: small named records (the journal of a desired-state apply).
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

/// The schema's epoch: raised (and `user_version` moved to `EPOCH * EPOCH_SPAN + n`) only
/// by a change an older agent cannot live with. Within an epoch every migration is
/// additive, so an older agent opens a newer file as it is — what switching back from a
/// failed self-update needs.
const EPOCH: i64 = 0;
/// Schema versions per epoch.
const EPOCH_SPAN: i64 = 1000;

pub(crate) fn run(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(q("read schema version"))?;
    let known = MIGRATIONS.len() as i64;
    if version / EPOCH_SPAN > EPOCH {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: EPOCH * EPOCH_SPAN + known,
        });
    }
    let version = version % EPOCH_SPAN;
    if version >= known {
        // Up to date, or newer by additive steps only: nothing to do.
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(q("begin migration"))?;
        tx.execute_batch(sql).map_err(q("migrate"))?;
        tx.pragma_update(None, "user_version", EPOCH * EPOCH_SPAN + (i + 1) as i64)
            .map_err(q("set schema version"))?;
        tx.commit().map_err(q("commit migration"))?;
    }
    Ok(())
}
