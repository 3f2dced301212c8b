//! The durable outbox and inbox of one node, in one SQLite file (WAL, `synchronous=FULL`).
//!
//! Outbox (this node as a stream owner): [`DeliveryStore::enqueue`] assigns the stream's
//! next `seq` and stores the sealed envelope in one transaction — when it returns, the
//! message is **accepted**: it survives any crash and is retransmitted until acknowledged or
//! expired. [`DeliveryStore::ack`] records a cumulative acknowledgement: the message is
//! **delivered**.
//!
//! Inbox (this node as a receiver): [`DeliveryStore::receive`] takes a verified arrival
//! and, in one transaction, releases what its stream now allows (in order; gaps held;
//! replays ignored), records released requests under their id (deduplicated), and moves
//! the stream's position; only then does the caller send the returned cumulative ack.
//!
//! Assumes one process owns the file (the agent's data-directory lock).

use crate::envelope::{Content, Sequenced, StreamId, seal};
use crate::keys::KeyPair;
use crate::lane::Lane;
use crate::stream::{Offer, Slot, StreamReceiver};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Errors of the delivery store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("delivery store: {what}")]
    Sql {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Another storage backend failed inside a job: the tables a user of the store keeps
    /// beside it and writes in the same transaction (the hub's, behind its own trait).
    #[error("storage backend: {what}")]
    Backend {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { what, source }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Statements a connection keeps parsed: the delivery tables' and, on a hub, its message
/// records' (rusqlite's default, 16, is fewer than the hot path alone uses).
const STATEMENT_CACHE: usize = 96;

/// Runs `sql` through the connection's statement cache: parsed once per connection, not at
/// every call (parsing cost as much as running on the delivery path).
pub(crate) fn exec(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(p)
}

/// [`exec`] for a query of one row.
pub(crate) fn row<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(p, f)
}

/// The stream's key in the tables: `OWNER/INSTANCE/RECEIVER`, with `+LANE` after the
/// instance for the priority and unordered lanes (so keys from before lanes stand).
pub fn stream_key(s: &StreamId) -> String {
    let owner = s.owner.to_base64();
    match s.lane {
        Lane::Ordered => format!("{owner}/{}/{}", s.instance, s.receiver),
        lane => format!("{owner}/{}+{}/{}", s.instance, lane.as_str(), s.receiver),
    }
}

/// The stream a [`stream_key`] names (`None` if it is not one).
pub fn parse_stream_key(key: &str) -> Option<StreamId> {
    // A base64 key of 32 bytes is 44 characters and may itself contain '/'.
    let owner = crate::keys::PublicKey::from_base64(key.get(..44)?).ok()?;
    let rest = key.get(44..)?.strip_prefix('/')?;
    let (instance, receiver) = rest.split_once('/')?;
    let (instance, lane) = match instance.split_once('+') {
        Some((i, l)) => (i, Lane::parse(l)?),
        None => (instance, Lane::Ordered),
    };
    Some(StreamId::new(owner, instance, receiver, lane))
}

/// A message released to run, from [`DeliveryStore::receive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// Position in its stream (`None`: unordered).
    pub seq: Option<u64>,
    /// The request id (`None` for a skip).
    pub id: Option<String>,
}

/// What the receiver answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Cumulative acknowledgement of the stream (every position up to it is stored).
    pub acked: u64,
    /// What became runnable, in order.
    pub released: Vec<Released>,
    /// The arrival was a replay or a retransmission of something already stored.
    pub duplicate: bool,
}

/// A message that expired before it was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Its stream's key.
    pub stream_key: String,
    /// Its position (now a skip marker).
    pub seq: u64,
    /// The request id.
    pub id: String,
}

/// One arrival for [`DeliveryStore::receive`]: its stream, position, request id (or a skip)
/// and the bytes to keep (the verified envelope).
#[derive(Clone, Debug)]
pub struct Arrival<'a> {
    /// The stream.
    pub stream: &'a StreamId,
    /// Position (`None`: unordered).
    pub seq: Option<u64>,
    /// Request id, or `None` for a skip marker.
    pub id: Option<&'a str>,
    /// The envelope as received.
    pub envelope: &'a [u8],
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS out_streams (
    key TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, envelope BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL, PRIMARY KEY (key, seq));
CREATE TABLE IF NOT EXISTS in_streams (key TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS in_held (
    key TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT, envelope BLOB NOT NULL,
    PRIMARY KEY (key, seq));
CREATE TABLE IF NOT EXISTS dead_letters (
    key TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, envelope BLOB NOT NULL,
    expired_at_ms INTEGER NOT NULL, PRIMARY KEY (key, seq, id));
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, seq INTEGER, envelope BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready', fence_boot TEXT);
";

/// The window of positions a receiver accepts ahead of its gap.
pub const WINDOW: u64 = 4096;

/// The outbox and inbox of one node.
pub struct DeliveryStore {
    conn: Connection,
}

/// Dead letters were keyed by (stream, position) alone: after a stream was retired and
/// began again at 1, a later dead letter at a position an earlier one held was dropped.
/// Rebuilds such a table with the message id in its key (keeping every row).
fn migrate_dead_letters(conn: &Connection) -> Result<()> {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'dead_letters'",
            [],
            |r| r.get(0),
        )
        .map_err(q("read dead letters schema"))?;
    if !sql.contains("PRIMARY KEY (key, seq))") {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE dead_letters_keyed (
             key TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, envelope BLOB NOT NULL,
             expired_at_ms INTEGER NOT NULL, PRIMARY KEY (key, seq, id));
         INSERT INTO dead_letters_keyed SELECT key, seq, id, envelope, expired_at_ms FROM dead_letters;
         DROP TABLE dead_letters;
         ALTER TABLE dead_letters_keyed RENAME TO dead_letters;
         COMMIT;",
    )
    .map_err(q("migrate dead letters"))
}

/// Inboxes made before fences recorded their boot get the column (`NULL` for the rows
/// already there: their fences are treated as of another boot).
fn migrate_fence_boot(conn: &Connection) -> Result<()> {
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('inbox') WHERE name = 'fence_boot'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(q("read inbox schema"))?
        > 0;
    if has {
        return Ok(());
    }
    conn.execute_batch("ALTER TABLE inbox ADD COLUMN fence_boot TEXT")
        .map_err(q("migrate inbox"))
}

impl DeliveryStore {
    /// Opens (creating) the store file.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(q("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(q("wal"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(q("synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(q("busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(q("schema"))?;
        migrate_dead_letters(&conn)?;
        migrate_fence_boot(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { conn })
    }

    /// The store's connection, for tables kept in the same file and written in the same
    /// transactions (the hub's message records, for one).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// This store's instance id: stable for the life of the file, new for a new file (a
    /// new instance starts its streams at 1).
    pub fn instance(&mut self) -> Result<String> {
        let found: Option<String> = self
            .conn
            .query_row("SELECT v FROM meta WHERE k = 'instance'", [], |r| r.get(0))
            .optional()
            .map_err(q("read instance"))?;
        if let Some(i) = found {
            return Ok(i);
        }
        let id = ulid::Ulid::new().to_string();
        self.conn
            .execute(
                "INSERT INTO meta (k, v) VALUES ('instance', ?1)",
                params![id],
            )
            .map_err(q("store instance"))?;
        Ok(id)
    }

    /// The persisted floor of hub-adjusted time ([`crate::clock::HubClock`]); 0 if none.
    pub fn clock_floor(&self) -> Result<u64> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT v FROM meta WHERE k = 'clock_floor'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(q("read clock floor"))?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Raises the persisted floor of hub-adjusted time to `ms` (never lowers it).
    pub fn raise_clock_floor(&mut self, ms: u64) -> Result<()> {
        if ms <= self.clock_floor()? {
            return Ok(());
        }
        self.conn
            .execute(
                "INSERT INTO meta (k, v) VALUES ('clock_floor', ?1)
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                params![ms.to_string()],
            )
            .map_err(q("store clock floor"))?;
        Ok(())
    }

    /// Runs `f` in one transaction: the operations inside it (each a savepoint) become
    /// durable together, with one fsync (group commit). If `f` fails nothing is stored.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(q("begin batch"))?;
        match f(self) {
            Ok(r) => {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(q("commit batch"))?;
                Ok(r)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Accepts a message into `stream`'s outbox: assigns the next `seq`, seals it with
    /// `seal(seq)` and stores it, atomically. Returns the `seq`.
    pub fn enqueue(
        &mut self,
        stream: &StreamId,
        id: &str,
        expires_at_ms: u64,
        seal: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<u64> {
        let key = stream_key(stream);
        let tx = self.conn.savepoint().map_err(q("begin enqueue"))?;
        let next: u64 = row(
            &tx,
            "SELECT next_seq FROM out_streams WHERE key = ?1",
            params![key],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(q("read stream"))?
        .map_or(1, |n| n as u64);
        let envelope = seal(next);
        exec(
            &tx,
            "INSERT INTO outbox (key, seq, id, envelope, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, next as i64, id, envelope, expires_at_ms as i64],
        )
        .map_err(q("store message"))?;
        exec(
            &tx,
            "INSERT INTO out_streams (key, next_seq, acked) VALUES (?1, ?2, 0)
            ON CONFLICT(key) DO UPDATE SET next_seq = ?2",
            params![key, (next + 1) as i64],
        )
        .map_err(q("advance stream"))?;
        tx.commit().map_err(q("commit enqueue"))?;
        Ok(next)
    }

    /// The unacknowledged envelopes of a stream, in order, at most `limit` (the window).
    pub fn unacked(&self, stream: &StreamId, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, envelope FROM outbox WHERE key = ?1 ORDER BY seq LIMIT ?2")
            .map_err(q("prepare unacked"))?;
        let rows = stmt
            .query_map(params![stream_key(stream), limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(q("query unacked"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(q("read unacked"))
    }

    /// Up to `limit` unacknowledged messages of `stream` past `after`, ascending.
    pub fn unacked_after(
        &self,
        stream: &StreamId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, envelope FROM outbox WHERE key = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(q("prepare unacked"))?;
        let rows = stmt
            .query_map(
                params![stream_key(stream), after as i64, limit as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(q("query unacked"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(q("read unacked"))
    }

    /// The position of the last message queued in `stream` (0 for none yet).
    pub fn last_seq(&self, stream: &StreamId) -> Result<u64> {
        row(
            &self.conn,
            "SELECT next_seq FROM out_streams WHERE key = ?1",
            params![stream_key(stream)],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(q("read stream"))
        .map(|n| n.map_or(0, |n| (n as u64).saturating_sub(1)))
    }

    /// Dead-letters every unacknowledged message whose expiry has passed (`now_ms`, on
    /// hub-adjusted time) and puts the owner's signed skip marker, `skip(stream_key, seq)`,
    /// in its place, so the stream moves on; atomically. Returns what expired (for the
    /// central error log). A message is never dead-lettered before its expiry.
    pub fn expire(
        &mut self,
        now_ms: u64,
        mut skip: impl FnMut(&str, u64) -> Vec<u8>,
    ) -> Result<Vec<Expired>> {
        let tx = self.conn.savepoint().map_err(q("begin expire"))?;
        let due: Vec<(String, u64, String, Vec<u8>)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, seq, id, envelope FROM outbox
                     WHERE expires_at_ms <= ?1 AND id != '' ORDER BY key, seq",
                )
                .map_err(q("prepare expire"))?;
            stmt.query_map(params![now_ms as i64], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?))
            })
            .map_err(q("query expire"))?
            .collect::<std::result::Result<_, _>>()
            .map_err(q("read expire"))?
        };
        let out = dead_letter(&tx, due, now_ms, &mut skip)?;
        tx.commit().map_err(q("commit expire"))?;
        Ok(out)
    }

    /// Purges the unacknowledged messages with these request ids, as expiry does: each
    /// becomes a dead letter and the owner's signed skip marker takes its place, so the
    /// stream moves on; atomically. Ids not (or no longer) in the outbox are left out of
    /// the answer. A message already stored by its receiver is not recalled: a copy in
    /// flight may still be taken (its skip marker is then a duplicate there).
    pub fn purge(
        &mut self,
        ids: &[String],
        now_ms: u64,
        mut skip: impl FnMut(&str, u64) -> Vec<u8>,
    ) -> Result<Vec<Expired>> {
        let tx = self.conn.savepoint().map_err(q("begin purge"))?;
        let mut due = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, seq, id, envelope FROM outbox WHERE id = ?1 AND id != ''",
                )
                .map_err(q("prepare purge"))?;
            for id in ids {
                let rows = stmt
                    .query_map(params![id], |r| {
                        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?))
                    })
                    .map_err(q("query purge"))?;
                for row in rows {
                    due.push(row.map_err(q("read purge"))?);
                }
            }
        }
        let out = dead_letter(&tx, due, now_ms, &mut skip)?;
        tx.commit().map_err(q("commit purge"))?;
        Ok(out)
    }

    /// Ends one of the owner's streams for good (its receiver is gone): every message still
    /// waiting becomes a dead letter, and the stream's outbox and counters are dropped, so a
    /// new receiver under the same name starts again at 1. Returns the dead letters.
    pub fn retire_stream(&mut self, stream: &StreamId, now_ms: u64) -> Result<Vec<Expired>> {
        let key = stream_key(stream);
        let tx = self.conn.savepoint().map_err(q("begin retire"))?;
        let waiting: Vec<(u64, String, Vec<u8>)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, id, envelope FROM outbox WHERE key = ?1 AND id != '' ORDER BY seq",
                )
                .map_err(q("prepare retire"))?;
            stmt.query_map(params![key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .map_err(q("query retire"))?
            .collect::<std::result::Result<_, _>>()
            .map_err(q("read retire"))?
        };
        let mut out = Vec::new();
        for (seq, id, envelope) in waiting {
            tx.execute(
                "INSERT OR IGNORE INTO dead_letters (key, seq, id, envelope, expired_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, seq as i64, id, envelope, now_ms as i64],
            )
            .map_err(q("dead letter"))?;
            out.push(Expired {
                stream_key: key.clone(),
                seq,
                id,
            });
        }
        tx.execute("DELETE FROM outbox WHERE key = ?1", params![key])
            .map_err(q("drop outbox"))?;
        tx.execute("DELETE FROM out_streams WHERE key = ?1", params![key])
            .map_err(q("drop stream"))?;
        tx.commit().map_err(q("commit retire"))?;
        Ok(out)
    }

    /// Dead letters: (stream key, seq, request id), oldest first.
    pub fn dead_letters(&self) -> Result<Vec<Expired>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, seq, id FROM dead_letters ORDER BY expired_at_ms, key, seq",
            )
            .map_err(q("prepare dead letters"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Expired {
                    stream_key: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    id: r.get(2)?,
                })
            })
            .map_err(q("query dead letters"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(q("read dead letters"))
    }

    /// Records a cumulative acknowledgement: everything up to `upto` is delivered.
    pub fn ack(&mut self, stream: &StreamId, upto: u64) -> Result<()> {
        let key = stream_key(stream);
        let tx = self.conn.savepoint().map_err(q("begin ack"))?;
        exec(
            &tx,
            "DELETE FROM outbox WHERE key = ?1 AND seq <= ?2",
            params![key, upto as i64],
        )
        .map_err(q("drop acked"))?;
        exec(
            &tx,
            "UPDATE out_streams SET acked = MAX(acked, ?2) WHERE key = ?1",
            params![key, upto as i64],
        )
        .map_err(q("record ack"))?;
        tx.commit().map_err(q("commit ack"))
    }

    /// Takes one verified arrival; see the module documentation.
    pub fn receive(&mut self, a: &Arrival<'_>) -> Result<Receipt> {
        let key = stream_key(a.stream);
        let tx = self.conn.savepoint().map_err(q("begin receive"))?;
        let next: u64 = row(
            &tx,
            "SELECT next FROM in_streams WHERE key = ?1",
            params![key],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(q("read stream"))?
        .map_or(1, |n| n as u64);
        let mut receipt = Receipt {
            acked: next - 1,
            released: Vec::new(),
            duplicate: false,
        };
        let Some(seq) = a.seq else {
            // Unordered: once per id, no position.
            if let Some(id) = a.id {
                let n = exec(
                    &tx,
                    "INSERT OR IGNORE INTO inbox (id, key, seq, envelope) VALUES (?1, ?2, NULL, ?3)",
                    params![id, key, a.envelope],
                )
                .map_err(q("store unordered"))?;
                receipt.duplicate = n == 0;
                if n > 0 {
                    receipt.released.push(Released {
                        seq: None,
                        id: Some(id.to_owned()),
                    });
                }
            }
            tx.commit().map_err(q("commit receive"))?;
            return Ok(receipt);
        };
        // The stream's held positions, then this arrival, through the pure receiver.
        let mut receiver: StreamReceiver<(Option<String>, Vec<u8>)> =
            StreamReceiver::resume(next, WINDOW);
        {
            let mut stmt = tx
                .prepare_cached("SELECT seq, id, envelope FROM in_held WHERE key = ?1 ORDER BY seq")
                .map_err(q("prepare held"))?;
            let held = stmt
                .query_map(params![key], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(q("query held"))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(q("read held"))?;
            for (s, id, env) in held {
                let slot = match id {
                    Some(_) => Slot::Message((id, env)),
                    None => Slot::Skip,
                };
                let _ = receiver.offer(s, slot);
            }
        }
        let slot = match a.id {
            Some(id) => Slot::Message((Some(id.to_owned()), a.envelope.to_vec())),
            None => Slot::Skip,
        };
        match receiver.offer(seq, slot) {
            Offer::Duplicate => receipt.duplicate = true,
            Offer::TooFarAhead => {}
            Offer::Held => {
                exec(
                    &tx,
                    "INSERT OR IGNORE INTO in_held (key, seq, id, envelope) VALUES (?1, ?2, ?3, ?4)",
                    params![key, seq as i64, a.id, a.envelope],
                )
                .map_err(q("hold"))?;
            }
            Offer::Release(items) => {
                for (s, slot) in items {
                    exec(
                        &tx,
                        "DELETE FROM in_held WHERE key = ?1 AND seq = ?2",
                        params![key, s as i64],
                    )
                    .map_err(q("unhold"))?;
                    let id = match slot {
                        Slot::Message((Some(id), env)) => {
                            exec(
                                &tx,
                                "INSERT OR IGNORE INTO inbox (id, key, seq, envelope) VALUES (?1, ?2, ?3, ?4)",
                                params![id, key, s as i64, env],
                            )
                            .map_err(q("store released"))?;
                            Some(id)
                        }
                        _ => None,
                    };
                    receipt.released.push(Released { seq: Some(s), id });
                }
                exec(
                    &tx,
                    "INSERT INTO in_streams (key, next) VALUES (?1, ?2)
                    ON CONFLICT(key) DO UPDATE SET next = ?2",
                    params![key, receiver.next() as i64],
                )
                .map_err(q("advance stream"))?;
            }
        }
        tx.commit().map_err(q("commit receive"))?;
        receipt.acked = receiver.next() - 1;
        Ok(receipt)
    }

    /// Ids of stored requests in a stream, in stream order (for tests and inspection).
    pub fn inbox_ids(&self, stream: &StreamId) -> Result<Vec<(Option<u64>, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, id FROM inbox WHERE key = ?1 ORDER BY seq, rowid")
            .map_err(q("prepare inbox"))?;
        let rows = stmt
            .query_map(params![stream_key(stream)], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?.map(|s| s as u64),
                    r.get::<_, String>(1)?,
                ))
            })
            .map_err(q("query inbox"))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(q("read inbox"))
    }
}

mod resync;
mod run;
pub use resync::{Resealed, Rewound};
pub use run::{ReplyOut, RunState, Seal, Unfinished};

/// The owner's skip markers for [`DeliveryStore::expire`] and [`DeliveryStore::purge`]:
/// given a stream key and a position, the sealed skip carrying `reason`. Empty for a key
/// that names no stream (the owner's own keys always do).
pub fn skip_sealer(key: &KeyPair, reason: &str) -> impl FnMut(&str, u64) -> Vec<u8> {
    let reason = reason.to_string();
    move |k, seq| {
        parse_stream_key(k)
            .and_then(|stream| {
                seal(
                    &Sequenced {
                        stream,
                        seq: Some(seq),
                        content: Content::Skip {
                            reason: reason.clone(),
                        },
                    },
                    key,
                )
                .ok()
            })
            .unwrap_or_default()
    }
}

/// Moves these outbox rows to the dead letters and puts the owner's skip marker in each
/// one's place (the position is kept; id '' marks a skip, which never expires).
fn dead_letter(
    tx: &rusqlite::Savepoint<'_>,
    rows: Vec<(String, u64, String, Vec<u8>)>,
    now_ms: u64,
    skip: &mut impl FnMut(&str, u64) -> Vec<u8>,
) -> Result<Vec<Expired>> {
    let mut out = Vec::new();
    for (key, seq, id, envelope) in rows {
        tx.execute(
            "INSERT OR IGNORE INTO dead_letters (key, seq, id, envelope, expired_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, seq as i64, id, envelope, now_ms as i64],
        )
        .map_err(q("dead letter"))?;
        tx.execute(
            "UPDATE outbox SET envelope = ?3, id = '', expires_at_ms = ?4
             WHERE key = ?1 AND seq = ?2",
            params![key, seq as i64, skip(&key, seq), i64::MAX],
        )
        .map_err(q("skip marker"))?;
        out.push(Expired {
            stream_key: key,
            seq,
            id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
