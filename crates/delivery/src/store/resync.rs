//! Putting streams right after a peer lost state it had committed: a hub restored from a
//! backup (`reeve hub restore`) is behind both ways.
//!
//! - **What the owner sent** ([`DeliveryStore::rewind`]): the receiver's cumulative ack
//!   comes back lower than one it gave before. The acknowledged messages were dropped from
//!   the outbox, so they cannot be sent again: the owner puts its signed skip marker in each
//!   lost position, and the stream moves on with the loss on record.
//! - **What the owner will send** ([`DeliveryStore::renew_instance`]): the restored owner's
//!   streams would number new messages at positions their receivers already hold, and the
//!   receivers would drop them as duplicates. The restored store takes a new instance (new
//!   streams, from 1) and re-seals what waited in its outbox onto them; a receiver that had
//!   a request already keeps one copy (its inbox keys on the request id). An owner whose
//!   key was rotated does the same, with the new key as the new streams' owner.

use super::{DeliveryStore, Result, parse_stream_key, q, stream_key};
use crate::envelope::StreamId;
use rusqlite::{OptionalExtension, params};

/// Positions a receiver lost: `(upto, was]`, now skip markers in the owner's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewound {
    /// The stream.
    pub stream: StreamId,
    /// What the receiver acknowledges now.
    pub upto: u64,
    /// What it had acknowledged before.
    pub was: u64,
}

/// One message moved onto a renewed stream by [`DeliveryStore::renew_instance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resealed {
    /// The request id.
    pub id: String,
    /// The new stream.
    pub stream: StreamId,
    /// Its new position.
    pub seq: u64,
}

/// Every stream this store knows as an owner: those with a state row and those with
/// messages waiting.
const ALL_STREAMS: &str = "SELECT key FROM out_streams UNION SELECT DISTINCT key FROM outbox";

/// The stream keys `sql` selects (its first column).
fn stream_keys(c: &rusqlite::Connection, sql: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(sql).map_err(q("prepare stream keys"))?;
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map_err(q("query stream keys"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(q("read stream keys"))
}

impl DeliveryStore {
    /// The highest position of `stream` its receiver acknowledged (0 if none).
    pub fn acked(&self, stream: &StreamId) -> Result<u64> {
        let acked: Option<i64> = self
            .conn
            .query_row(
                "SELECT acked FROM out_streams WHERE key = ?1",
                params![stream_key(stream)],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("read acked"))?;
        Ok(acked.map_or(0, |a| a as u64))
    }

    /// The receiver of `stream` acknowledges only `upto`. When it had acknowledged more
    /// before, the positions in between were lost there: each gets the owner's skip marker,
    /// `skip(stream_key, seq)`, and the stream's ack goes back to `upto`, atomically.
    /// Returns the loss, or `None` when nothing was lost.
    pub fn rewind(
        &mut self,
        stream: &StreamId,
        upto: u64,
        mut skip: impl FnMut(&str, u64) -> Vec<u8>,
    ) -> Result<Option<Rewound>> {
        let was = self.acked(stream)?;
        if upto >= was {
            return Ok(None);
        }
        let key = stream_key(stream);
        let tx = self.conn.savepoint().map_err(q("begin rewind"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO outbox (key, seq, id, envelope, expires_at_ms)
                     VALUES (?1, ?2, '', ?3, ?4)",
                )
                .map_err(q("prepare rewind"))?;
            for seq in upto + 1..=was {
                insert
                    .execute(params![key, seq as i64, skip(&key, seq), i64::MAX])
                    .map_err(q("skip lost position"))?;
            }
        }
        tx.execute(
            "UPDATE out_streams SET acked = ?2 WHERE key = ?1",
            params![key, upto as i64],
        )
        .map_err(q("rewind ack"))?;
        tx.commit().map_err(q("commit rewind"))?;
        Ok(Some(Rewound {
            stream: stream.clone(),
            upto,
            was,
        }))
    }

    /// Do messages wait in a stream other than `owner`'s of `instance`? (Sent by a task that
    /// read the identity just before a key rotation renewed the streams.)
    pub fn waits_elsewhere(&self, owner: &crate::keys::PublicKey, instance: &str) -> Result<bool> {
        let keys = stream_keys(&self.conn, "SELECT DISTINCT key FROM outbox WHERE id != ''")?;
        Ok(keys.iter().any(|k| {
            parse_stream_key(k).is_some_and(|s| s.owner != *owner || s.instance != instance)
        }))
    }

    /// Does any stream of this store's outbox belong to `owner`? (An agent that rotated its
    /// key renews its streams first and swaps its key file after: streams owned by the new
    /// key mean the rotation was recorded, even if the swap did not happen.)
    pub fn owns_streams(&self, owner: &crate::keys::PublicKey) -> Result<bool> {
        Ok(stream_keys(&self.conn, ALL_STREAMS)?
            .iter()
            .any(|k| parse_stream_key(k).is_some_and(|s| s.owner == *owner)))
    }

    /// Gives this store a new instance, so its streams start again at 1, and moves the
    /// messages waiting in its streams (all of them: a store owns the streams of one
    /// identity) onto the new ones (owned by `owner`),
    /// in order: `reseal(new stream, new seq, old envelope)` seals each again (an empty
    /// answer drops it). Skip markers are not carried over: the new streams have no gaps.
    /// Returns the new instance and what moved, atomically. For a store restored from a
    /// backup, before its owner runs again, and for an owner whose key was rotated.
    pub fn renew_instance(
        &mut self,
        owner: &crate::keys::PublicKey,
        mut reseal: impl FnMut(&StreamId, u64, &[u8]) -> Vec<u8>,
    ) -> Result<(String, Vec<Resealed>)> {
        self.instance()?; // creates the meta row when the store is new
        let new = ulid::Ulid::new().to_string();
        let tx = self.conn.savepoint().map_err(q("begin renew"))?;
        let waiting: Vec<(String, u64, String, Vec<u8>, i64)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT key, seq, id, envelope, expires_at_ms FROM outbox
                     WHERE id != '' ORDER BY key, seq",
                )
                .map_err(q("prepare renew"))?;
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .map_err(q("query renew"))?
            .collect::<std::result::Result<_, _>>()
            .map_err(q("read renew"))?
        };
        let mut moved = Vec::new();
        // The new streams' last positions, in the order first used.
        let mut last: Vec<(String, u64)> = Vec::new();
        for (key, _, id, envelope, expires) in waiting {
            let Some(stream) = parse_stream_key(&key) else {
                continue;
            };
            let renewed = StreamId {
                owner: *owner,
                instance: new.clone(),
                ..stream
            };
            let new_key = stream_key(&renewed);
            let slot = match last.iter().position(|(k, _)| *k == new_key) {
                Some(i) => i,
                None => {
                    last.push((new_key.clone(), 0));
                    last.len() - 1
                }
            };
            let seq = last[slot].1 + 1;
            let sealed = reseal(&renewed, seq, &envelope);
            if sealed.is_empty() {
                continue;
            }
            tx.execute(
                "INSERT INTO outbox (key, seq, id, envelope, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new_key, seq as i64, id, sealed, expires],
            )
            .map_err(q("reseal"))?;
            last[slot].1 = seq;
            moved.push(Resealed {
                id,
                stream: renewed,
                seq,
            });
        }
        // The earlier streams are done with: what waited there moved.
        let old_keys: Vec<String> = stream_keys(&tx, ALL_STREAMS)?
            .into_iter()
            .filter(|k| parse_stream_key(k).is_some_and(|s| s.instance != new))
            .collect();
        for key in &old_keys {
            for sql in [
                "DELETE FROM outbox WHERE key = ?1",
                "DELETE FROM out_streams WHERE key = ?1",
            ] {
                tx.execute(sql, params![key])
                    .map_err(q("drop old stream"))?;
            }
        }
        for (key, n) in last.iter().filter(|(_, n)| *n > 0) {
            tx.execute(
                "INSERT INTO out_streams (key, next_seq, acked) VALUES (?1, ?2, 0)",
                params![key, (*n + 1) as i64],
            )
            .map_err(q("renew stream"))?;
        }
        tx.execute("UPDATE meta SET v = ?1 WHERE k = 'instance'", params![new])
            .map_err(q("store instance"))?;
        tx.commit().map_err(q("commit renew"))?;
        Ok((new, moved))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Arrival;
    use super::*;
    use crate::keys::KeyPair;

    /// Delivers what `stream` has waiting in `from` to `to` and applies the ack; envelope
    /// bytes stand for the id ("" for a skip marker), as in the store's model test.
    fn deliver(from: &mut DeliveryStore, to: &mut DeliveryStore, stream: &StreamId) -> u64 {
        let mut acked = 0;
        for (seq, env) in from.unacked(stream, 100).expect("unacked") {
            let id = String::from_utf8(env.clone()).expect("utf-8");
            let receipt = to
                .receive(&Arrival {
                    stream,
                    seq: Some(seq),
                    id: (!id.is_empty()).then_some(id.as_str()),
                    envelope: &env,
                })
                .expect("receive");
            acked = receipt.acked;
        }
        from.ack(stream, acked).expect("ack");
        acked
    }

    fn send(s: &mut DeliveryStore, stream: &StreamId, id: &str) {
        s.enqueue(stream, id, u64::MAX >> 2, |_| id.as_bytes().to_vec())
            .expect("enqueue");
    }

    #[test]
    fn positions_a_receiver_lost_become_skips_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = KeyPair::generate().expect("key");
        let (out_path, in_path) = (dir.path().join("o.db"), dir.path().join("r.db"));
        let mut out = DeliveryStore::open(&out_path).expect("open");
        let mut inbox = DeliveryStore::open(&in_path).expect("open");
        let stream = StreamId::new(owner.public(), "i1", "hub", Default::default());
        for id in ["m1", "m2"] {
            send(&mut out, &stream, id);
        }
        assert_eq!(deliver(&mut out, &mut inbox, &stream), 2);
        drop(inbox);
        let backup = dir.path().join("backup.db");
        std::fs::copy(&in_path, &backup).expect("copy");
        let mut inbox = DeliveryStore::open(&in_path).expect("open");
        for id in ["m3", "m4", "m5"] {
            send(&mut out, &stream, id);
        }
        assert_eq!(deliver(&mut out, &mut inbox, &stream), 5);
        drop(inbox);
        // The receiver comes back from its backup: it acknowledges 2.
        std::fs::copy(&backup, &in_path).expect("restore");
        let mut inbox = DeliveryStore::open(&in_path).expect("open");
        assert_eq!(
            out.rewind(&stream, 5, |_, _| b"x".to_vec())
                .expect("rewind"),
            None
        );
        let lost = out
            .rewind(&stream, 2, |_, _| Vec::new())
            .expect("rewind")
            .expect("a loss");
        assert_eq!((lost.upto, lost.was), (2, 5));
        assert_eq!(out.acked(&stream).expect("acked"), 2);
        send(&mut out, &stream, "m6");
        assert_eq!(
            deliver(&mut out, &mut inbox, &stream),
            6,
            "past the skips to the new message"
        );
        let ids: Vec<String> = inbox
            .inbox_ids(&stream)
            .expect("ids")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids, ["m1", "m2", "m6"]);
    }

    #[test]
    fn a_renewed_instance_moves_what_waits_and_a_receiver_keeps_one_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = KeyPair::generate().expect("key");
        let (out_path, in_path) = (dir.path().join("o.db"), dir.path().join("r.db"));
        let mut out = DeliveryStore::open(&out_path).expect("open");
        let mut inbox = DeliveryStore::open(&in_path).expect("open");
        let old = out.instance().expect("instance");
        let stream = StreamId::new(owner.public(), &old, "n1", Default::default());
        for id in ["m1", "m2"] {
            send(&mut out, &stream, id);
        }
        drop(out);
        let backup = dir.path().join("backup.db");
        std::fs::copy(&out_path, &backup).expect("copy");
        let mut out = DeliveryStore::open(&out_path).expect("open");
        send(&mut out, &stream, "m3");
        assert_eq!(deliver(&mut out, &mut inbox, &stream), 3);
        drop(out);
        // The owner comes back from its backup, where m1 and m2 still wait.
        std::fs::copy(&backup, &out_path).expect("restore");
        let mut out = DeliveryStore::open(&out_path).expect("open");
        let (new, moved) = out
            .renew_instance(&owner.public(), |s, seq, env| {
                // Resealed with the new stream and position; here the bytes stay the id.
                assert!(s.instance != old && seq > 0);
                env.to_vec()
            })
            .expect("renew");
        assert_ne!(new, old);
        assert_eq!(out.instance().expect("instance"), new, "the store keeps it");
        let renewed = StreamId::new(owner.public(), &new, "n1", Default::default());
        let placed: Vec<(String, u64)> = moved.iter().map(|m| (m.id.clone(), m.seq)).collect();
        assert_eq!(placed, [("m1".to_string(), 1), ("m2".to_string(), 2)]);
        assert!(moved.iter().all(|m| m.stream == renewed));
        assert!(
            out.unacked(&stream, 10).expect("old").is_empty(),
            "the old stream is gone"
        );
        send(&mut out, &renewed, "m4");
        assert_eq!(deliver(&mut out, &mut inbox, &renewed), 3);
        let ids: Vec<String> = inbox
            .inbox_ids(&renewed)
            .expect("ids")
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids, ["m4"], "m1 and m2 were there already: kept once");
        assert_eq!(inbox.inbox_ids(&stream).expect("ids").len(), 3);
    }

    #[test]
    fn a_rotated_owner_moves_what_waits_onto_streams_of_its_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old_key, new_key) = (
            KeyPair::generate().expect("key"),
            KeyPair::generate().expect("key"),
        );
        let mut out = DeliveryStore::open(&dir.path().join("o.db")).expect("open");
        let old = out.instance().expect("instance");
        let stream = StreamId::new(old_key.public(), &old, "hub", Default::default());
        for id in ["m1", "m2", "m3"] {
            send(&mut out, &stream, id);
        }
        out.ack(&stream, 1).expect("ack");
        assert!(out.owns_streams(&old_key.public()).expect("owners"));
        assert!(!out.owns_streams(&new_key.public()).expect("owners"));
        let (new, moved) = out
            .renew_instance(&new_key.public(), |s, _, env| {
                assert_eq!(s.owner, new_key.public());
                env.to_vec()
            })
            .expect("renew");
        let renewed = StreamId::new(new_key.public(), &new, "hub", Default::default());
        let placed: Vec<(String, u64)> = moved.iter().map(|m| (m.id.clone(), m.seq)).collect();
        assert_eq!(placed, [("m2".to_string(), 1), ("m3".to_string(), 2)]);
        assert_eq!(out.unacked(&renewed, 10).expect("new").len(), 2);
        assert!(out.owns_streams(&new_key.public()).expect("owners"));
        assert!(!out.owns_streams(&old_key.public()).expect("owners"));
        assert!(
            !out.waits_elsewhere(&new_key.public(), &new)
                .expect("elsewhere")
        );
        // A task that read the old identity just before enqueues after the renewal: seen,
        // and moved by renewing again, after what waited.
        send(&mut out, &stream, "m4");
        assert!(
            out.waits_elsewhere(&new_key.public(), &new)
                .expect("elsewhere")
        );
        let (newer, moved) = out
            .renew_instance(&new_key.public(), |_, _, env| env.to_vec())
            .expect("renew");
        let placed: Vec<&str> = moved.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(placed.len(), 3);
        assert!(placed.contains(&"m4"));
        assert!(
            !out.waits_elsewhere(&new_key.public(), &newer)
                .expect("elsewhere")
        );
    }
}
