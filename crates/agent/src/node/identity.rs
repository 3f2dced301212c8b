//! The node's identity in its data directory: `node.key` (Ed25519 secret, mode 0600, made
//! by `reeve agent init`) and `node.toml` (name, hub URL, the pinned hub key, proxy;
//! written by `reeve agent join`). No `node.toml` means the agent runs stand-alone.

use anyhow::{Context, Result, bail};
use reeve_delivery::keys::{KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `node.toml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's name at the hub.
    pub name: String,
    /// The hub, `https://host:port`.
    pub hub_url: Option<String>,
    /// The hub's key (base64), pinned at join (and again when the hub rotated its key).
    pub hub_key: Option<String>,
    /// The hub's key before it rotated it (base64): what it signed is still trusted until
    /// `hub_key_previous_until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_key_previous: Option<String>,
    /// The end of the hub's rotation overlap, ms since the epoch (hub time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_key_previous_until_ms: Option<u64>,
    /// An HTTP(S) CONNECT proxy to reach the hub through (`http://host:port`).
    pub proxy: Option<String>,
    /// The shortest (and first) keepalive interval, e.g. "20s" for a NAT that forgets idle
    /// connections sooner than the default 45 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_min: Option<String>,
}

impl NodeFile {
    /// `keepalive_min` parsed (None: the default).
    pub fn keepalive_min(&self) -> Result<Option<std::time::Duration>> {
        self.keepalive_min
            .as_deref()
            .map(|t| {
                humantime::parse_duration(t)
                    .with_context(|| format!("node.toml: keepalive_min {t:?} is not a duration"))
            })
            .transpose()
    }
}

/// The loaded identity of a joined node (its key is loaded beside it: it changes when
/// rotated).
pub struct Identity {
    /// The node's settings.
    pub file: NodeFile,
    /// The pinned hub key.
    pub hub_key: PublicKey,
    /// The hub's previous key and the end of its overlap, during a hub key rotation.
    pub hub_key_previous: Option<(PublicKey, u64)>,
    /// The hub URL.
    pub hub_url: String,
}

/// Paths of the identity files.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("node.toml"), data_dir.join("node.key"))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Is `name` usable as a node name?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name != "hub"
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
}

/// `reeve agent init`: creates the key pair (kept if it exists) and `node.toml`.
pub fn init(data_dir: &Path, file: &NodeFile, force: bool) -> Result<PublicKey> {
    if !valid_name(&file.name) {
        bail!(
            "node name {:?}: use 1-63 lowercase letters, digits, '-', '.', '_' (not \"hub\")",
            file.name
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (toml_path, key_path) = paths(data_dir);
    if toml_path.exists() && !force {
        bail!(
            "{} exists already: this node is initialised (--force replaces the settings, the key stays)",
            toml_path.display()
        );
    }
    let key = match std::fs::read_to_string(&key_path) {
        Ok(text) => KeyPair::from_secret_base64(text.trim())
            .with_context(|| format!("{} is not a reeve key", key_path.display()))?,
        Err(_) => {
            let k = KeyPair::generate().context("cannot create the node key")?;
            write_file(&key_path, &format!("{}\n", k.secret_base64()), 0o600)?;
            k
        }
    };
    save(data_dir, file)?;
    Ok(key.public())
}

/// Writes `node.toml`.
pub fn save(data_dir: &Path, file: &NodeFile) -> Result<()> {
    let text = toml::to_string(file).context("cannot encode node.toml")?;
    write_file(&paths(data_dir).0, &text, 0o600)
}

/// Reads `node.toml` (None when the node was never initialised).
pub fn load_file(data_dir: &Path) -> Result<Option<NodeFile>> {
    let path = paths(data_dir).0;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The node's key pair.
pub fn load_key(data_dir: &Path) -> Result<KeyPair> {
    let path = paths(data_dir).1;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (reeve agent init creates it)",
            path.display()
        )
    })?;
    KeyPair::from_secret_base64(text.trim())
        .with_context(|| format!("{} is not a reeve key", path.display()))
}

/// The identity of a joined node and its key; None when the node has not joined a hub.
pub fn load(data_dir: &Path) -> Result<Option<(Identity, KeyPair)>> {
    let Some(file) = load_file(data_dir)? else {
        return Ok(None);
    };
    let (Some(url), Some(hub)) = (file.hub_url.clone(), file.hub_key.clone()) else {
        return Ok(None);
    };
    let hub_key = PublicKey::from_base64(&hub).context("node.toml: hub_key is not a key")?;
    let hub_key_previous = match (&file.hub_key_previous, file.hub_key_previous_until_ms) {
        (Some(k), Some(until)) => Some((
            PublicKey::from_base64(k).context("node.toml: hub_key_previous is not a key")?,
            until,
        )),
        _ => None,
    };
    Ok(Some((
        Identity {
            file,
            hub_key,
            hub_key_previous,
            hub_url: url,
        },
        load_key(data_dir)?,
    )))
}

/// A key rotation asked for and not finished yet: `node.key.next` (mode 0600).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NextFile {
    /// The new key's secret, base64.
    secret: String,
    /// How long the hub should keep accepting the old key, in ms.
    overlap_ms: u64,
}

/// The new key of a rotation that is not finished, and the overlap asked for.
pub struct PendingRotation {
    /// The new key.
    pub key: KeyPair,
    /// How long the hub should keep accepting the old key, in ms.
    pub overlap_ms: u64,
}

fn next_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.key.next")
}

/// Starts a key rotation: a new key in `node.key.next`, presented to the hub at the next
/// handshake. A rotation already pending keeps its key (the overlap is updated). Returns
/// the new public key.
pub fn begin_rotation(data_dir: &Path, overlap_ms: u64) -> Result<PublicKey> {
    let key = match pending_rotation(data_dir)? {
        Some(p) => p.key,
        None => KeyPair::generate().context("cannot create the new node key")?,
    };
    let text = toml::to_string(&NextFile {
        secret: key.secret_base64(),
        overlap_ms,
    })
    .context("cannot encode node.key.next")?;
    write_file(&next_path(data_dir), &text, 0o600)?;
    Ok(key.public())
}

/// The rotation waiting for the hub, if any.
pub fn pending_rotation(data_dir: &Path) -> Result<Option<PendingRotation>> {
    let path = next_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let f: NextFile =
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
    Ok(Some(PendingRotation {
        key: KeyPair::from_secret_base64(&f.secret)
            .with_context(|| format!("{} holds no key", path.display()))?,
        overlap_ms: f.overlap_ms,
    }))
}

/// Finishes a rotation the hub recorded: `node.key` becomes `key`, `node.key.next` goes.
pub fn finish_rotation(data_dir: &Path, key: &KeyPair) -> Result<()> {
    write_file(
        &paths(data_dir).1,
        &format!("{}\n", key.secret_base64()),
        0o600,
    )?;
    let next = next_path(data_dir);
    match std::fs::remove_file(&next) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", next.display())),
    }
}

/// The node's key pair, created (mode 0600) if there is none (after `reeve agent leave`).
pub fn ensure_key(data_dir: &Path) -> Result<KeyPair> {
    let path = paths(data_dir).1;
    if path.exists() {
        return load_key(data_dir);
    }
    let k = KeyPair::generate().context("cannot create the node key")?;
    write_file(&path, &format!("{}\n", k.secret_base64()), 0o600)?;
    Ok(k)
}

/// After leaving the fleet: `node.toml` forgets the hub (the name and proxy stay) and the
/// key is deleted, so a later join enrols a new key.
pub fn forget_hub(data_dir: &Path) -> Result<()> {
    if let Some(mut file) = load_file(data_dir)? {
        file.hub_url = None;
        file.hub_key = None;
        file.hub_key_previous = None;
        file.hub_key_previous_until_ms = None;
        save(data_dir, &file)?;
    }
    for key in [paths(data_dir).1, next_path(data_dir)] {
        match std::fs::remove_file(&key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", key.display())),
        }
    }
    Ok(())
}

/// Before a join that starts a new enrolment: the message store of an earlier one is moved
/// aside (kept for the record), since the hub starts the node's streams afresh.
pub fn set_aside_old_delivery(data_dir: &Path) -> Result<Option<PathBuf>> {
    let db = data_dir.join("delivery.db");
    if !db.exists() {
        return Ok(None);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = data_dir.join(format!("delivery.db.{stamp}.old"));
    for suffix in ["", "-wal", "-shm"] {
        let from = data_dir.join(format!("delivery.db{suffix}"));
        if from.exists() {
            let to = data_dir.join(format!("delivery.db.{stamp}.old{suffix}"));
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot move {} aside", from.display()))?;
        }
    }
    Ok(Some(aside))
}
