//! Join tokens (DESIGN.md §2.6): `reeve hub token create` makes a one-time token that
//! carries the hub's URL, the hub key's fingerprint and a random secret;
//! `reeve agent join URL --token T` pins the hub by that fingerprint (no trust on first use)
//! and proves the token by its secret. The hub keeps only a hash of the secret, marks a
//! token used at the first successful join, and refuses it after its expiry.
//!
//! Text form: `reeve1.` + base64url(JSON). Pure: the hub's token store is elsewhere.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "reeve1.";

/// A join token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    /// Where the hub is.
    pub url: String,
    /// The hub key's fingerprint (see [`crate::keys::PublicKey::fingerprint`]).
    pub hub: String,
    /// 32 random bytes, base64url: proves the token at the hub.
    pub secret: String,
    /// Not valid after this time, ms since the epoch (hub time).
    pub expires_at_ms: u64,
}

/// Why a token is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Not a reeve join token.
    #[error("not a reeve join token (they start with {PREFIX})")]
    Malformed,
    /// No randomness.
    #[error("no randomness available")]
    Random,
}

impl JoinToken {
    /// A new token for the hub at `url` whose key has fingerprint `hub`.
    pub fn create(url: &str, hub: &str, expires_at_ms: u64) -> Result<Self, JoinError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| JoinError::Random)?;
        Ok(Self {
            url: url.into(),
            hub: hub.into(),
            secret: B64URL.encode(secret),
            expires_at_ms,
        })
    }

    /// The text form to hand to an operator.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", B64URL.encode(json))
    }

    /// Reads the text form.
    pub fn decode(s: &str) -> Result<Self, JoinError> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(JoinError::Malformed)?;
        let json = B64URL.decode(body).map_err(|_| JoinError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| JoinError::Malformed)
    }

    /// The secret that proves the token at the hub (compare with [`secrets_match`]; the
    /// hub's token store should keep a digest of it, not the secret).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// Constant-time comparison of two secrets (a timing side channel must not reveal how much
/// of a guessed token matched).
pub fn secrets_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_pin_the_hub() {
        let t = JoinToken::create("https://hub.example:8443", "0123456789abcdef", 1_000)
            .expect("token");
        let text = t.encode();
        assert!(text.starts_with("reeve1."));
        let back = JoinToken::decode(&text).expect("decode");
        assert_eq!(back, t);
        assert_eq!(back.hub, "0123456789abcdef");
        assert!(secrets_match(back.secret(), t.secret()));
        let other = JoinToken::create("https://hub.example:8443", "0123456789abcdef", 1_000)
            .expect("token");
        assert!(!secrets_match(other.secret(), t.secret()), "fresh secrets");
        assert_eq!(JoinToken::decode("nope"), Err(JoinError::Malformed));
        assert_eq!(JoinToken::decode("reeve1.!!!"), Err(JoinError::Malformed));
    }
}
