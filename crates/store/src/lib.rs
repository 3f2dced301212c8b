//! reeve's node-local SQLite store: the event log and the service records the agent needs to
//! re-attach to its buddies after a restart.
//!
//! Guarantees: every write is one transaction in WAL mode with `synchronous=FULL`, so an
//! event that was appended survives a crash of the agent or of the machine. Buddy journal
//! entries and the journal position they came from are written in the same transaction,
//! so after a crash the agent asks the buddy for exactly what it has not stored (nothing is
//! lost, nothing is stored twice).
//!
//! Assumes: one process owns the database (the agent's data-directory lock) and one thread
//! uses a [`Store`] at a time (the agent gives it its own thread).

mod migrate;

use reeve_proto::UnixMillis;
use reeve_proto::api::Desired;
use reeve_proto::event::{Event, EventKind};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or preparing the database file failed.
    #[error("cannot open the store at {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer reeve with an incompatible schema (a new epoch).
    #[error(
        "the store at {path} has schema version {found}, which this reeve cannot read (it knows up to {known})"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A query failed.
    #[error("store query failed: {what}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// Identity of a buddy as recorded when the agent attached to it. A buddy is recognised by
/// all three fields together, never by its pid alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuddyIdentity {
    /// Buddy pid.
    pub pid: u32,
    /// Buddy start time in clock ticks since boot.
    pub start_ticks: u64,
    /// Kernel boot id.
    pub boot_id: String,
}

/// What the agent remembers about one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// What the operator wants.
    pub desired: Desired,
    /// The buddy last attached, if any.
    pub buddy: Option<BuddyIdentity>,
    /// Highest buddy journal sequence number stored in the event log.
    pub journal_seq: u64,
    /// The service process the buddy last reported running (None when it exited).
    pub service_pid: Option<u32>,
}

/// A filter for [`Store::query_events`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only events at or after this time.
    pub since_ms: Option<UnixMillis>,
    /// Only events with a larger id (for followers).
    pub after_id: Option<i64>,
    /// At most this many, the newest ones (returned oldest first).
    pub limit: Option<u32>,
    /// With `limit`: the oldest ones instead (for forwarding from a cursor without gaps).
    pub oldest: bool,
}

/// One write of a batch given to [`Store::apply`]. Events get their ids assigned in place.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Append events.
    Events(Vec<Event>),
    /// Append events collected from a buddy's journal and move its journal position.
    BuddyEvents {
        /// The service.
        service: String,
        /// The events.
        events: Vec<Event>,
        /// Highest journal sequence number they cover.
        journal_seq: u64,
    },
    /// Create or replace a service record.
    PutService(ServiceRecord),
    /// Record a new desired state with the event that explains it.
    SetDesired {
        /// The service.
        name: String,
        /// What the operator wants.
        desired: Desired,
        /// The explaining event.
        event: Event,
    },
    /// Forget a service's record.
    DeleteService(String),
    /// Create or replace an installed module's record (JSON, owned by the agent).
    PutModule {
        /// Module name.
        name: String,
        /// Module version.
        version: String,
        /// The record.
        record: String,
    },
    /// Set a named record.
    PutKv {
        /// Its name.
        key: String,
        /// Its value.
        value: String,
    },
    /// Remove a named record.
    DeleteKv(String),
    /// Forget an installed module.
    DeleteModule {
        /// Module name.
        name: String,
        /// Module version.
        version: String,
    },
}

impl Write {
    /// The events this write appends (with ids once applied).
    pub fn events(&self) -> &[Event] {
        match self {
            Self::Events(e) | Self::BuddyEvents { events: e, .. } => e,
            Self::SetDesired { event, .. } => std::slice::from_ref(event),
            Self::PutService(_)
            | Self::DeleteService(_)
            | Self::PutModule { .. }
            | Self::DeleteModule { .. }
            | Self::PutKv { .. }
            | Self::DeleteKv(_) => &[],
        }
    }
}

/// The node-local store. See the module documentation for its guarantees.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // The agent reads little and mostly appends: a small page cache keeps its memory
        // flat (the default is 2 MiB).
        conn.pragma_update(None, "cache_size", -256)
            .map_err(open_err)?;
        migrate::run(&mut conn, path)?;
        Ok(Self { conn })
    }

    /// Applies writes in one transaction (one fsync for all: group commit). Either all of
    /// them are stored or none.
    pub fn apply(&mut self, writes: &mut [Write]) -> Result<()> {
        let tx = self.conn.transaction().map_err(q("begin batch"))?;
        for w in writes.iter_mut() {
            match w {
                Write::Events(events) => insert_events(&tx, events)?,
                Write::BuddyEvents {
                    service,
                    events,
                    journal_seq,
                } => {
                    insert_events(&tx, events)?;
                    tx.execute(
                        "UPDATE services SET journal_seq = MAX(journal_seq, ?2) WHERE name = ?1",
                        params![&*service, *journal_seq as i64],
                    )
                    .map_err(q("update journal position"))?;
                }
                Write::PutService(rec) => put_service(&tx, rec)?,
                Write::SetDesired {
                    name,
                    desired,
                    event,
                } => {
                    tx.execute(
                        "UPDATE services SET desired = ?2 WHERE name = ?1",
                        params![&*name, desired_str(*desired)],
                    )
                    .map_err(q("set desired"))?;
                    insert_events(&tx, std::slice::from_mut(event))?;
                }
                Write::DeleteService(name) => {
                    tx.execute("DELETE FROM services WHERE name = ?1", params![&*name])
                        .map_err(q("delete service"))?;
                }
                Write::PutModule {
                    name,
                    version,
                    record,
                } => {
                    tx.execute(
                        "INSERT INTO modules (name, version, record) VALUES (?1, ?2, ?3)
                         ON CONFLICT(name, version) DO UPDATE SET record = ?3",
                        params![&*name, &*version, &*record],
                    )
                    .map_err(q("write module"))?;
                }
                Write::PutKv { key, value } => {
                    tx.execute(
                        "INSERT INTO kv (key, value) VALUES (?1, ?2)
                         ON CONFLICT(key) DO UPDATE SET value = ?2",
                        params![&*key, &*value],
                    )
                    .map_err(q("write record"))?;
                }
                Write::DeleteKv(key) => {
                    tx.execute("DELETE FROM kv WHERE key = ?1", params![&*key])
                        .map_err(q("delete record"))?;
                }
                Write::DeleteModule { name, version } => {
                    tx.execute(
                        "DELETE FROM modules WHERE name = ?1 AND version = ?2",
                        params![&*name, &*version],
                    )
                    .map_err(q("delete module"))?;
                }
            }
        }
        tx.commit().map_err(q("commit batch"))
    }

    /// Appends events in one transaction, assigning their ids.
    pub fn append_events(&mut self, events: &mut [Event]) -> Result<()> {
        let tx = self.conn.transaction().map_err(q("begin append"))?;
        insert_events(&tx, events)?;
        tx.commit().map_err(q("commit append"))
    }

    /// Appends events collected from a buddy's journal and records the journal position they
    /// came from, in one transaction.
    pub fn append_buddy_events(
        &mut self,
        service: &str,
        events: &mut [Event],
        journal_seq: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction().map_err(q("begin buddy append"))?;
        insert_events(&tx, events)?;
        tx.execute(
            "UPDATE services SET journal_seq = MAX(journal_seq, ?2) WHERE name = ?1",
            params![service, journal_seq as i64],
        )
        .map_err(q("update journal position"))?;
        tx.commit().map_err(q("commit buddy append"))
    }

    /// Events matching `query`, oldest first.
    pub fn query_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let mut sql = String::from(
            "SELECT id, ts_ms, service, kind, actor, message, detail FROM events WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = &query.service {
            sql.push_str(" AND service = ?");
            args.push(s.clone().into());
        }
        if let Some(t) = query.since_ms {
            sql.push_str(" AND ts_ms >= ?");
            args.push((t as i64).into());
        }
        if let Some(id) = query.after_id {
            sql.push_str(" AND id > ?");
            args.push(id.into());
        }
        sql.push_str(if query.oldest {
            " ORDER BY id ASC"
        } else {
            " ORDER BY id DESC"
        });
        if let Some(n) = query.limit {
            sql.push_str(" LIMIT ?");
            args.push(i64::from(n).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql).map_err(q("prepare query"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_event)
            .map_err(q("query events"))?;
        let mut out = rows
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(q("read events"))?;
        if !query.oldest {
            out.reverse();
        }
        Ok(out)
    }

    /// Deletes events older than `older_than_ms` and all but the newest `keep` events.
    /// Returns how many were deleted.
    pub fn prune_events(&mut self, older_than_ms: UnixMillis, keep: u64) -> Result<u64> {
        let tx = self.conn.transaction().map_err(q("begin prune"))?;
        let by_age = tx
            .execute(
                "DELETE FROM events WHERE ts_ms < ?1",
                params![older_than_ms as i64],
            )
            .map_err(q("prune by age"))?;
        let by_count = tx
            .execute(
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                params![keep as i64],
            )
            .map_err(q("prune by count"))?;
        tx.commit().map_err(q("commit prune"))?;
        Ok((by_age + by_count) as u64)
    }

    /// Every service record, by name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, desired, buddy_pid, buddy_start_ticks, buddy_boot_id, journal_seq,
                   service_pid
                 FROM services ORDER BY name",
            )
            .map_err(q("prepare services"))?;
        let rows = stmt
            .query_map([], row_to_record)
            .map_err(q("query services"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(q("read services"))
    }

    /// A named record.
    pub fn kv(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(q("read record"))
    }

    /// Every installed module's record (JSON), by name and version.
    pub fn modules(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM modules ORDER BY name, version")
            .map_err(q("prepare modules"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(q("query modules"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(q("read modules"))
    }

    /// One service record.
    pub fn service(&self, name: &str) -> Result<Option<ServiceRecord>> {
        self.conn
            .query_row(
                "SELECT name, desired, buddy_pid, buddy_start_ticks, buddy_boot_id, journal_seq,
                   service_pid
                 FROM services WHERE name = ?1",
                params![name],
                row_to_record,
            )
            .optional()
            .map_err(q("read service"))
    }

    /// Creates or replaces a service record.
    pub fn put_service(&mut self, rec: &ServiceRecord) -> Result<()> {
        put_service(&self.conn, rec)
    }

    /// Records what the operator wants, together with the event that says so.
    pub fn set_desired(&mut self, name: &str, desired: Desired, event: &mut Event) -> Result<()> {
        let tx = self.conn.transaction().map_err(q("begin set desired"))?;
        tx.execute(
            "UPDATE services SET desired = ?2 WHERE name = ?1",
            params![name, desired_str(desired)],
        )
        .map_err(q("set desired"))?;
        insert_events(&tx, std::slice::from_mut(event))?;
        tx.commit().map_err(q("commit set desired"))
    }

    /// Forgets a service.
    pub fn delete_service(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM services WHERE name = ?1", params![name])
            .map_err(q("delete service"))?;
        Ok(())
    }
}

fn put_service(conn: &Connection, rec: &ServiceRecord) -> Result<()> {
    let (pid, ticks, boot) = match &rec.buddy {
        Some(b) => (
            Some(i64::from(b.pid)),
            Some(b.start_ticks as i64),
            Some(b.boot_id.as_str()),
        ),
        None => (None, None, None),
    };
    conn.execute(
        "INSERT INTO services (name, desired, buddy_pid, buddy_start_ticks, buddy_boot_id, journal_seq,
           service_pid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(name) DO UPDATE SET desired = ?2, buddy_pid = ?3,
           buddy_start_ticks = ?4, buddy_boot_id = ?5, journal_seq = MAX(journal_seq, ?6),
           service_pid = ?7",
        params![
            rec.name,
            desired_str(rec.desired),
            pid,
            ticks,
            boot,
            rec.journal_seq as i64,
            rec.service_pid.map(i64::from)
        ],
    )
    .map_err(q("write service"))?;
    Ok(())
}

fn desired_str(d: Desired) -> &'static str {
    match d {
        Desired::Running => "running",
        Desired::Stopped => "stopped",
    }
}

fn insert_events(tx: &Connection, events: &mut [Event]) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO events (ts_ms, service, kind, actor, message, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(q("prepare insert"))?;
    for e in events.iter_mut() {
        let detail = if e.detail.is_null() {
            None
        } else {
            Some(e.detail.to_string())
        };
        stmt.execute(params![
            e.ts_ms as i64,
            e.service,
            e.kind.as_str(),
            e.actor,
            e.message,
            detail
        ])
        .map_err(q("insert event"))?;
        e.id = tx.last_insert_rowid();
    }
    Ok(())
}

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = row.get(3)?;
    let detail: Option<String> = row.get(6)?;
    Ok(Event {
        id: row.get(0)?,
        ts_ms: row.get::<_, i64>(1)? as u64,
        service: row.get(2)?,
        // Unknown kinds can only come from a newer reeve; show them as actions rather than
        // failing the whole query.
        kind: EventKind::parse(&kind).unwrap_or(EventKind::Action),
        actor: row.get(4)?,
        message: row.get(5)?,
        detail: detail
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(serde_json::Value::Null),
    })
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRecord> {
    let desired: String = row.get(1)?;
    let pid: Option<i64> = row.get(2)?;
    let ticks: Option<i64> = row.get(3)?;
    let boot: Option<String> = row.get(4)?;
    let buddy = match (pid, ticks, boot) {
        (Some(pid), Some(ticks), Some(boot_id)) => Some(BuddyIdentity {
            pid: pid as u32,
            start_ticks: ticks as u64,
            boot_id,
        }),
        _ => None,
    };
    Ok(ServiceRecord {
        name: row.get(0)?,
        desired: if desired == "stopped" {
            Desired::Stopped
        } else {
            Desired::Running
        },
        buddy,
        journal_seq: row.get::<_, i64>(5)? as u64,
        service_pid: row.get::<_, Option<i64>>(6)?.map(|p| p as u32),
    })
}

#[cfg(test)]
mod tests;
