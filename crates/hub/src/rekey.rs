//! Rotating the hub's own key with an overlap window (`reeve hub rotate-key`, run while
//! the hub is stopped). Nodes pin the hub's key at join, so the previous key endorses the
//! new one ([`HubRotation`], kept in `hub-rotation.json`) and the hub presents that
//! endorsement in every handshake until the overlap ends: a node that pinned the previous
//! key checks it, pins the new key and goes on. After the overlap, a node still pinned to
//! the previous key (offline all that time) is refused and must join again.
//!
//! The hub's streams towards the nodes are owned by its key, so the rotation renews them
//! as a restore does ([`crate::backup::renew`]): a new instance under the new key, what
//! waits in the outbox sealed again onto it (the operators' authorizations are kept), each
//! message's record following its new position.
//!
//! Steps, each safe to repeat: the new key is written to `hub.key.next`; the database is
//! renewed in one transaction; `hub-rotation.json` and then `hub.key` are replaced. A hub
//! will not start while `hub.key.next` exists (an interrupted rotation): running the
//! command again finishes it with the same new key.

use crate::backup::{DB_FILE, DataDirLock};
use crate::db::{self, fleet};
use crate::{identity, now_ms};
use anyhow::{Context, Result, bail};
use reeve_delivery::envelope::reseal;
use reeve_delivery::keys::KeyPair;
use reeve_delivery::rotation::{HubRotation, MAX_OVERLAP_MS};
use reeve_delivery::store::DeliveryStore;
use serde::Serialize;
use std::path::Path;

/// The new key, while a rotation is under way.
pub const NEXT_KEY_FILE: &str = "hub.key.next";
/// The previous key's endorsement of the current one.
pub const ENDORSEMENT_FILE: &str = "hub-rotation.json";

/// What a rotation did.
#[derive(Serialize, Debug)]
pub struct Rotated {
    /// The previous key's fingerprint.
    pub previous: String,
    /// The new key (base64).
    pub key: String,
    /// The new key's fingerprint.
    pub fingerprint: String,
    /// The end of the overlap, ms since the epoch.
    pub until_ms: u64,
    /// Messages moved onto the new key's streams.
    pub resealed: u64,
}

/// Rotates the key of the hub data in `dir` (no hub may run there); see the module
/// documentation.
pub fn rotate_key(dir: &Path, overlap_ms: u64) -> Result<Rotated> {
    if overlap_ms > MAX_OVERLAP_MS {
        bail!("the overlap is at most 90 days");
    }
    let _lock = DataDirLock::acquire(dir)?;
    let previous = identity::load_key(dir)
        .with_context(|| format!("{} holds no hub (reeve hub creates one)", dir.display()))?;
    let next_path = dir.join(NEXT_KEY_FILE);
    let next = if next_path.exists() {
        let text = std::fs::read_to_string(&next_path)
            .with_context(|| format!("cannot read {}", next_path.display()))?;
        KeyPair::from_secret_base64(text.trim())
            .with_context(|| format!("{} is not a reeve key", next_path.display()))?
    } else {
        let k = KeyPair::generate().context("cannot create the new hub key")?;
        identity::write_private_atomic(&next_path, format!("{}\n", k.secret_base64()).as_bytes())?;
        k
    };
    let until_ms = now_ms().saturating_add(overlap_ms);
    let endorsed = HubRotation::endorse(&previous, &next.public(), until_ms)?;
    let resealed = renew(dir, &previous, &next, until_ms)?;
    let text = serde_json::to_vec_pretty(&endorsed).context("cannot encode the endorsement")?;
    identity::write_private_atomic(&dir.join(ENDORSEMENT_FILE), &text)?;
    std::fs::rename(&next_path, dir.join("hub.key"))
        .with_context(|| format!("cannot move {} to hub.key", next_path.display()))?;
    Ok(Rotated {
        previous: previous.public().fingerprint(),
        key: next.public().to_base64(),
        fingerprint: next.public().fingerprint(),
        until_ms,
        resealed,
    })
}

/// New streams under `next`, what waited sealed onto them, and a note in the error log;
/// one transaction.
fn renew(dir: &Path, previous: &KeyPair, next: &KeyPair, until_ms: u64) -> Result<u64> {
    let path = dir.join(DB_FILE);
    let mut store =
        DeliveryStore::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    db::migrate(store.conn())?;
    store
        .batch(|s| {
            let (instance, moved) = s.renew_instance(&next.public(), |stream, seq, envelope| {
                // Operators' authorizations stay theirs; what the hub signed itself
                // (dashboard actions) is signed again with its new key.
                let own = previous.public();
                reseal(envelope, stream, seq, next, &|k| *k == own).unwrap_or_default()
            })?;
            let f = fleet(s);
            for m in &moved {
                f.set_message_seq(&m.id, m.seq)?;
            }
            let note = format!(
                "hub key rotated from {} to {}: nodes that pinned the previous key follow its endorsement until {until_ms} (ms since the epoch); new streams towards the nodes (instance {instance}), {} waiting message(s) sealed again onto them",
                previous.public().fingerprint(),
                next.public().fingerprint(),
                moved.len()
            );
            f.log_error(now_ms(), None, "hub_key_rotated", &note)?;
            Ok(moved.len() as u64)
        })
        .context("cannot renew the hub's streams under the new key")
}

/// The endorsement of `current` in `dir`, if a rotation's overlap is still open.
pub fn endorsement(dir: &Path, current: &KeyPair) -> Result<Option<HubRotation>> {
    let path = dir.join(ENDORSEMENT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let e: HubRotation =
        serde_json::from_slice(&bytes).with_context(|| format!("invalid {}", path.display()))?;
    // It must vouch for the key in use (checked against its own previous key).
    let now = now_ms();
    Ok(e.check(&e.previous, &current.public(), now)
        .is_ok()
        .then_some(e))
}

/// Refuses to start on an interrupted rotation.
pub fn refuse_interrupted(dir: &Path) -> Result<()> {
    if dir.join(NEXT_KEY_FILE).exists() {
        bail!(
            "a hub key rotation in {} was interrupted ({NEXT_KEY_FILE} exists): run `reeve hub rotate-key --data-dir {}` again to finish it",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}
