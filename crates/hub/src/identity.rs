//! The hub's identity, created on first start in its data directory: its Ed25519 key
//! (`hub.key`, mode 0600: nodes pin it at join) and a self-signed TLS certificate
//! (`tls-cert.der`, `tls-key.der`). Nodes' trust never depends on the certificate (they pin
//! the key and prove it in the relay handshake); TLS keeps the traffic private. Operators'
//! API calls carry a token, so the CLI pins the certificate itself (its SHA-256, which
//! `reeve hub` and `reeve hub cert-fingerprint` print): it is made once and kept.

use anyhow::{Context, Result};
use reeve_delivery::keys::KeyPair;
use reeve_delivery::rotation::HubRotation;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What the hub is.
pub struct Identity {
    /// Signs sequenced envelopes, handshakes and dashboard requests.
    pub key: KeyPair,
    /// The TLS certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub cert_key_der: Vec<u8>,
    /// The previous key's endorsement of this one, while a rotation's overlap is open.
    pub endorsed: Option<HubRotation>,
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a private file (mode 0600) whole or not at all: a temporary file, synced, then
/// renamed over `path`.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The hub's key in `dir` (`hub.key`), which must exist.
pub fn load_key(dir: &Path) -> Result<KeyPair> {
    let key_path = dir.join("hub.key");
    let text = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    KeyPair::from_secret_base64(text.trim())
        .with_context(|| format!("{} is not a reeve key", key_path.display()))
}

/// The TLS certificate's file in a data directory.
pub const TLS_CERT: &str = "tls-cert.der";

/// The hub's TLS certificate (DER) in `dir`, which must exist (the hub makes it at its
/// first start).
pub fn read_tls_cert(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join(TLS_CERT);
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the hub's TLS certificate {} (a hub makes it at its first start)",
            path.display()
        )
    })
}

/// The hub's TLS certificate (DER) in `dir`, made with the rest of the identity if missing.
pub fn ensure_tls_cert(dir: &Path) -> Result<Vec<u8>> {
    if dir.join(TLS_CERT).exists() {
        read_tls_cert(dir)
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(load_or_create(dir)?.cert_der)
    }
}

/// Loads the identity from `dir`, creating what is missing.
pub fn load_or_create(dir: &Path) -> Result<Identity> {
    let key_path = dir.join("hub.key");
    let key = if key_path.exists() {
        load_key(dir)?
    } else {
        let k = KeyPair::generate().context("cannot create the hub key")?;
        write_private(&key_path, format!("{}\n", k.secret_base64()).as_bytes())?;
        k
    };
    let (cert_path, cert_key_path) = (dir.join(TLS_CERT), dir.join("tls-key.der"));
    if !cert_path.exists() || !cert_key_path.exists() {
        let names = vec!["localhost".to_string(), "reeve-hub".to_string()];
        let ck = rcgen::generate_simple_self_signed(names)
            .context("cannot create the hub's TLS certificate")?;
        let _ = std::fs::remove_file(&cert_key_path);
        let _ = std::fs::remove_file(&cert_path);
        write_private(&cert_key_path, &ck.signing_key.serialize_der())?;
        write_private(&cert_path, ck.cert.der())?;
    }
    crate::rekey::refuse_interrupted(dir)?;
    let endorsed = crate::rekey::endorsement(dir, &key)?;
    Ok(Identity {
        endorsed,
        key,
        cert_der: std::fs::read(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?,
        cert_key_der: std::fs::read(&cert_key_path)
            .with_context(|| format!("cannot read {}", cert_key_path.display()))?,
    })
}
