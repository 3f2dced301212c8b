//! Ed25519 identities: node, operator and hub keys, their text forms and fingerprints.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A key's text is not valid base64 of the right length, or not a valid point.
    #[error("invalid {what} key: {reason}")]
    Invalid {
        /// `public` or `secret`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A public key, serialised as base64 of its 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses base64.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(s.trim()).map_err(|e| KeyError::Invalid {
            what: "public",
            reason: e.to_string(),
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
            what: "public",
            reason: "not 32 bytes".into(),
        })?;
        decompressed(&arr).ok_or_else(|| KeyError::Invalid {
            what: "public",
            reason: "not a point on the curve".into(),
        })?;
        Ok(Self(arr))
    }

    /// Base64 text.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// A short fingerprint for people and join tokens: the first 16 hex digits of the key.
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The decompressed key, from [`decompressed`]'s cache.
    pub(crate) fn verifying(&self) -> Option<VerifyingKey> {
        decompressed(&self.0)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// A key pair that signs.
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A new random key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The key pair whose secret seed is `seed` (for keys derived from a shared secret,
    /// like a join token's).
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Reads the base64 secret seed (as written by [`Self::secret_base64`]).
    pub fn from_secret_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(s.trim()).map_err(|e| KeyError::Invalid {
            what: "secret",
            reason: e.to_string(),
        })?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
            what: "secret",
            reason: "not 32 bytes".into(),
        })?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The secret seed as base64 (keep it private: mode 0600).
    pub fn secret_base64(&self) -> String {
        B64.encode(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `domain || msg`.
    pub(crate) fn sign(&self, domain: &[u8], msg: &[u8]) -> [u8; 64] {
        let mut buf = Vec::with_capacity(domain.len() + msg.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(msg);
        self.signing.sign(&buf).to_bytes()
    }
}

/// Keys kept decompressed at most; past this the cache starts over (a fleet's hub sees one
/// key per node and operator, an agent a handful).
const KEY_CACHE_MAX: usize = 16_384;

/// `bytes` as a curve point, decompressed once per process: decompression (a square root in
/// the field) costs about a third of a signature check, and every envelope names the same
/// few keys again and again. Invalid keys are not cached.
fn decompressed(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static CACHE: OnceLock<RwLock<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(vk) = cache.read().ok().and_then(|c| c.get(bytes).copied()) {
        return Some(vk);
    }
    let vk = VerifyingKey::from_bytes(bytes).ok()?;
    if let Ok(mut c) = cache.write() {
        if c.len() >= KEY_CACHE_MAX {
            c.clear();
        }
        c.insert(*bytes, vk);
    }
    Some(vk)
}

/// Verifies `sig` over `domain || msg` with `key`, strictly (no malleable signatures, no
/// small-order keys).
pub(crate) fn verify(key: &PublicKey, domain: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
    let Some(vk) = key.verifying() else {
        return false;
    };
    let mut buf = Vec::with_capacity(domain.len() + msg.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(msg);
    vk.verify_strict(&buf, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() -> Result<(), KeyError> {
        let k = KeyPair::generate()?;
        let again = KeyPair::from_secret_base64(&k.secret_base64())?;
        assert_eq!(k.public(), again.public());
        let p = PublicKey::from_base64(&k.public().to_base64())?;
        assert_eq!(p, k.public());
        let sig = k.sign(b"d1", b"hello");
        assert!(verify(&p, b"d1", b"hello", &sig));
        assert!(!verify(&p, b"d2", b"hello", &sig), "domain separation");
        assert!(!verify(&p, b"d1", b"hellO", &sig));
        assert!(PublicKey::from_base64("AAAA").is_err());
        assert_eq!(p.fingerprint().len(), 16);
        Ok(())
    }
}
