//! What a restored hub must do before it runs again: the nodes went on after the backup was
//! taken, so they hold positions of the hub's streams the backup never saw. The restored
//! store takes a new instance (new streams towards every node, from 1) and the messages
//! that waited in its outbox are sealed again onto them, each message's record following
//! its new position. A node that had one of them already keeps one copy: its inbox keys on
//! the request id, and a request it finished is not run again.
//!
//! The other way, the nodes find out for themselves: the restored hub acknowledges less of
//! their streams than before, and they put skip markers where the lost messages were
//! ([`reeve_delivery::link::Outgoing::resume`]).

use crate::db::{self, fleet};
use crate::{identity, now_ms};
use anyhow::{Context, Result};
use reeve_delivery::envelope::reseal;
use reeve_delivery::store::DeliveryStore;
use std::path::Path;

/// The hub's streams after a restore.
pub struct Renewed {
    /// The new instance.
    pub instance: String,
    /// Messages moved onto the new streams.
    pub resealed: u64,
}

/// Renews the streams of the hub data in `dir` (restored, not running): see the module
/// documentation. One transaction: on failure nothing changed.
pub fn renew_streams(dir: &Path, from: &Path) -> Result<Renewed> {
    let key = identity::load_key(dir)?;
    let path = dir.join(super::DB_FILE);
    let mut store =
        DeliveryStore::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    db::migrate(store.conn())?;
    let from = from.display().to_string();
    let (instance, resealed) = store
        .batch(|s| {
            let (instance, moved) = s.renew_instance(&key.public(), |stream, seq, envelope| {
                reseal(envelope, stream, seq, &key, &|_| false).unwrap_or_default()
            })?;
            let f = fleet(s);
            for m in &moved {
                f.set_message_seq(&m.id, m.seq)?;
            }
            let note = format!(
                "restored from the backup {from}: new streams towards the nodes (instance {instance}), {} waiting message(s) sealed again onto them; replies and events the nodes sent after the backup was taken are lost",
                moved.len()
            );
            f.log_error(now_ms(), None, "restored", &note)?;
            Ok((instance, moved.len() as u64))
        })
        .context("cannot renew the restored hub's streams")?;
    Ok(Renewed { instance, resealed })
}
