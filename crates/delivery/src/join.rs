//! Join tokens (DESIGN.md §2.6): `reeve hub token create` makes a one-time token that
//! carries the hub's URL, the hub key's fingerprint and a random secret;
//! `reeve agent join URL --token T` pins the hub by that fingerprint (no trust on first use)
//! and proves the token without sending its secret. The hub marks a token used at the first
//! successful join and refuses it after its expiry.
//!
//! The secret never leaves the node. It is the seed of an Ed25519 *token key*; the hub
//! stores only that key's public half. To join, the node sends the token's public key and
//! a signature by the token key over the hub key's fingerprint, its name and its own key
//! ([`JoinToken::prove`]). Someone in the middle of the join (a node's `reeve agent join`
//! accepts any TLS certificate: the token pins the hub's Ed25519 key, not its certificate)
//! sees only that: they cannot enrol another key under the name, nor use the token for
//! another name, and a copy of the hub's table does not let anyone join either. The hub
//! signs its answer ([`sign_joined`]), so the hub's time a node takes as its clock floor
//! cannot be altered on the way.
//!
//! Text form: `reeve1.` + base64url(JSON). Pure: the hub's token store is elsewhere.

use crate::keys::{KeyPair, PublicKey, verify};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "reeve1.";
/// What a node's proof of its token signs under.
const JOIN_DOMAIN: &[u8] = b"reeve-join-v1\0";
/// What the hub's answer to a join signs under.
const JOINED_DOMAIN: &[u8] = b"reeve-joined-v1\0";

/// A join token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    /// Where the hub is.
    pub url: String,
    /// The hub key's fingerprint (see [`crate::keys::PublicKey::fingerprint`]).
    pub hub: String,
    /// 32 random bytes, base64url: the seed of the token key. Never sent to the hub.
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

/// What a node sends besides its name and key: the token's public key and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenProof {
    /// The token key's public half (base64): how the hub finds the token.
    pub token_key: String,
    /// The token key's signature (base64) over the hub's fingerprint, the node's name and
    /// its key.
    pub proof: String,
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
        let token: Self = serde_json::from_slice(&json).map_err(|_| JoinError::Malformed)?;
        token.key_pair()?;
        Ok(token)
    }

    /// The token key, seeded by the secret.
    fn key_pair(&self) -> Result<KeyPair, JoinError> {
        let seed = B64URL
            .decode(&self.secret)
            .map_err(|_| JoinError::Malformed)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| JoinError::Malformed)?;
        Ok(KeyPair::from_seed(&seed))
    }

    /// The token key's public half: what the hub stores for this token.
    pub fn public_key(&self) -> Result<PublicKey, JoinError> {
        Ok(self.key_pair()?.public())
    }

    /// Proves this token for node `node` with key `node_key` (base64) at the hub named by
    /// the token.
    pub fn prove(&self, node: &str, node_key: &str) -> Result<TokenProof, JoinError> {
        let k = self.key_pair()?;
        let sig = k.sign(JOIN_DOMAIN, &join_message(&self.hub, node, node_key));
        Ok(TokenProof {
            token_key: k.public().to_base64(),
            proof: B64.encode(sig),
        })
    }
}

/// The exact bytes a token proof signs. JSON, so no field can run into the next.
fn join_message(hub_fingerprint: &str, node: &str, node_key: &str) -> Vec<u8> {
    serde_json::to_vec(&[hub_fingerprint, node, node_key]).unwrap_or_default()
}

/// The exact bytes the hub's answer signs.
fn joined_message(node: &str, node_key: &str, hub_time_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&(node, node_key, hub_time_ms)).unwrap_or_default()
}

fn sig64(b64: &str) -> Option<[u8; 64]> {
    B64.decode(b64).ok()?.try_into().ok()
}

/// Does `proof` (base64) show that whoever holds the secret of the token with public key
/// `token_key` asked to enrol `node` with `node_key` at the hub whose key is `hub`?
pub fn proof_valid(
    token_key: &PublicKey,
    hub: &PublicKey,
    node: &str,
    node_key: &str,
    proof: &str,
) -> bool {
    sig64(proof).is_some_and(|sig| {
        verify(
            token_key,
            JOIN_DOMAIN,
            &join_message(&hub.fingerprint(), node, node_key),
            &sig,
        )
    })
}

/// The hub's signature (base64) on its answer to a join: `node` enrolled with `node_key`,
/// at hub time `hub_time_ms`.
pub fn sign_joined(hub: &KeyPair, node: &str, node_key: &str, hub_time_ms: u64) -> String {
    B64.encode(hub.sign(JOINED_DOMAIN, &joined_message(node, node_key, hub_time_ms)))
}

/// Is `sig` (base64) the hub's signature from [`sign_joined`]?
pub fn joined_valid(
    hub: &PublicKey,
    node: &str,
    node_key: &str,
    hub_time_ms: u64,
    sig: &str,
) -> bool {
    sig64(sig).is_some_and(|sig| {
        verify(
            hub,
            JOINED_DOMAIN,
            &joined_message(node, node_key, hub_time_ms),
            &sig,
        )
    })
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
        let other = JoinToken::create("https://hub.example:8443", "0123456789abcdef", 1_000)
            .expect("token");
        assert_ne!(other.public_key(), t.public_key(), "fresh secrets");
        assert_eq!(JoinToken::decode("nope"), Err(JoinError::Malformed));
        assert_eq!(JoinToken::decode("reeve1.!!!"), Err(JoinError::Malformed));
        let short = JoinToken {
            secret: "AAAA".into(),
            ..t
        };
        assert_eq!(
            JoinToken::decode(&short.encode()),
            Err(JoinError::Malformed),
            "a secret that is not 32 bytes"
        );
    }

    #[test]
    fn a_proof_binds_the_hub_the_name_and_the_key_and_reveals_no_secret() {
        let hub = KeyPair::generate().expect("hub key");
        let other_hub = KeyPair::generate().expect("hub key");
        let node = KeyPair::generate().expect("node key").public().to_base64();
        let thief = KeyPair::generate().expect("node key").public().to_base64();
        let t = JoinToken::create("https://h:1", &hub.public().fingerprint(), 1).expect("t");
        let p = t.prove("n1", &node).expect("proof");
        assert!(!p.proof.contains(&t.secret) && !p.token_key.contains(&t.secret));
        let tk = PublicKey::from_base64(&p.token_key).expect("token key");
        assert_eq!(Ok(tk), t.public_key());
        assert!(proof_valid(&tk, &hub.public(), "n1", &node, &p.proof));
        assert!(
            !proof_valid(&tk, &hub.public(), "n1", &thief, &p.proof),
            "another key"
        );
        assert!(
            !proof_valid(&tk, &hub.public(), "n2", &node, &p.proof),
            "another name"
        );
        assert!(
            !proof_valid(&tk, &other_hub.public(), "n1", &node, &p.proof),
            "another hub"
        );
        let stranger = JoinToken::create("https://h:1", &hub.public().fingerprint(), 1)
            .expect("t")
            .public_key()
            .expect("key");
        assert!(
            !proof_valid(&stranger, &hub.public(), "n1", &node, &p.proof),
            "another token"
        );
        assert!(!proof_valid(&tk, &hub.public(), "n1", &node, "not base64!"));
    }

    #[test]
    fn the_hubs_answer_is_signed() {
        let hub = KeyPair::generate().expect("hub key");
        let sig = sign_joined(&hub, "n1", "KEY", 42);
        assert!(joined_valid(&hub.public(), "n1", "KEY", 42, &sig));
        assert!(
            !joined_valid(&hub.public(), "n1", "KEY", 43, &sig),
            "another time"
        );
        assert!(
            !joined_valid(&hub.public(), "n2", "KEY", 42, &sig),
            "another name"
        );
        let other = KeyPair::generate().expect("key");
        assert!(
            !joined_valid(&other.public(), "n1", "KEY", 42, &sig),
            "another hub"
        );
    }
}
