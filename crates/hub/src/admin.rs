//! Local administration on the hub's data directory (run on the hub's machine, guarded by
//! file permissions): join tokens and operators. These work whether the hub runs or not.

use crate::db::{self, FleetStore};
use crate::now_ms;
use anyhow::{Context, Result, bail};
use base64::Engine;
use reeve_delivery::join::JoinToken;
use reeve_delivery::keys::PublicKey;
use rusqlite::Connection;
use std::path::Path;

fn open(dir: &Path) -> Result<Connection> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = crate::db_path(dir);
    // Creates the delivery tables too, so the file is complete for the hub.
    let store = reeve_delivery::store::DeliveryStore::open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    db::migrate(store.conn())?;
    drop(store);
    let c = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

/// Makes a one-time join token for the hub at `url`, valid for `ttl_ms`.
pub fn create_token(dir: &Path, url: &str, ttl_ms: u64) -> Result<JoinToken> {
    let id = crate::identity::load_or_create(dir)?;
    let c = open(dir)?;
    let now = now_ms();
    let token = JoinToken::create(
        url,
        &id.key.public().fingerprint(),
        now.saturating_add(ttl_ms),
    )?;
    let key = token.public_key()?.to_base64();
    c.add_join_token(&db::digest(&token.secret), &key, now, token.expires_at_ms)?;
    Ok(token)
}

/// The roles an operator can have, weakest first.
pub const ROLES: &[&str] = &["viewer", "operator", "admin"];

/// Adds (or replaces) operator `name` with `role` and optionally their public key (which
/// signs what they send); returns their new API token.
pub fn add_operator(dir: &Path, name: &str, role: &str, key: Option<&str>) -> Result<String> {
    if !ROLES.contains(&role) {
        bail!("unknown role {role:?}: use one of {}", ROLES.join(", "));
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        bail!("operator name {name:?}: use 1-64 letters, digits, '.', '_', '-', '@'");
    }
    if let Some(k) = key {
        PublicKey::from_base64(k).with_context(|| format!("{k:?} is not a public key"))?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!(
        "rvo_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let c = open(dir)?;
    c.upsert_operator(name, role, key, &db::digest(&token), now_ms())?;
    Ok(token)
}

/// Removes operator `name` (their token and every key of theirs stop working at once).
pub fn remove_operator(dir: &Path, name: &str) -> Result<()> {
    let c = open(dir)?;
    if !c.remove_operator(name)? {
        bail!("no operator named {name:?}");
    }
    Ok(())
}

/// Rotates operator `name` to `new_key` (base64): from now on it signs their requests, and
/// their current key still does for `overlap` (requests already signed and scripts not
/// yet switched keep working), then no more. Their API token stays. Returns when the old
/// key stops working (ms since the epoch).
pub fn rotate_operator_key(
    dir: &Path,
    name: &str,
    new_key: &str,
    overlap: std::time::Duration,
) -> Result<u64> {
    PublicKey::from_base64(new_key).with_context(|| format!("{new_key:?} is not a public key"))?;
    let mut c = open(dir)?;
    // Immediate: the write lock up front (waiting for a running hub's writer), since a
    // read-then-write transaction cannot wait once the hub commits in between.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let f: &dyn FleetStore = &*tx;
    let old = match f.operator(name)? {
        None => bail!("no operator named {name:?}"),
        Some(db::Operator { key: None, .. }) => bail!(
            "operator {name:?} has no key to rotate: give them one with `reeve hub operator add {name} --key FILE`"
        ),
        Some(db::Operator { key: Some(k), .. }) => k,
    };
    if old == new_key {
        bail!("that is already {name}'s key");
    }
    let until = now_ms().saturating_add(overlap.as_millis() as u64);
    // A key rotated back to is current again, not also a retired one.
    f.rotate_operator_key(name, &old, new_key, until)?;
    tx.commit().context("cannot store the new key")?;
    Ok(until)
}
