//! Key rotation with an overlap window, for node and hub keys (operators rotate theirs at
//! the hub: `reeve hub operator rotate-key`). Both are statements carried in the relay
//! handshake ([`crate::handshake`]); pure, no IO.
//!
//! - **A node's key** ([`NodeRotation`], in the agent's `Hello`): signed by the old key
//!   *and* the new one, over the node's name, both keys, the hub's key and the overlap. The
//!   old signature means whoever holds the enrolled key asks for it (a relay cannot swap in
//!   a key of its own); the new one proves the new key is held (nobody binds someone else's
//!   key to their name). The hub makes the new key current and keeps accepting the old one
//!   until the overlap ends, so messages sealed with it still arrive.
//! - **The hub's key** ([`HubRotation`], in the hub's `Challenge`): the previous key signs
//!   the new key and the end of the overlap. A node that pinned the previous key accepts the
//!   new one on that endorsement, pins it, and keeps trusting what the previous key signed
//!   (requests stored before the rotation) until the overlap ends. After it, a node still
//!   pinned to the previous key is refused and must join again.

use crate::keys::{KeyPair, PublicKey, verify};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

const NODE_DOMAIN: &[u8] = b"reeve-node-key-rotation-v1\0";
const HUB_DOMAIN: &[u8] = b"reeve-hub-key-rotation-v1\0";

/// Longest overlap a hub grants a node key rotation (it clamps what a node asks for).
pub const MAX_OVERLAP_MS: u64 = 90 * 24 * 3600 * 1000;

/// A node asks to move from the key it connects with to `key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeRotation {
    /// The new key.
    pub key: PublicKey,
    /// How long the old key stays accepted after the hub records the rotation, in ms.
    pub overlap_ms: u64,
    /// The old key's signature, base64.
    pub sig_old: String,
    /// The new key's signature, base64.
    pub sig_new: String,
}

/// Why a rotation statement was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// A signature did not verify (or was not base64 of 64 bytes).
    #[error("bad {0} signature on the key rotation")]
    BadSignature(&'static str),
    /// The hub's overlap window is over.
    #[error("the hub's key rotation window closed at {0} (ms since the epoch): join again")]
    Closed(u64),
    /// The endorsement is by another key than the pinned one.
    #[error("the hub's new key is endorsed by {0}, which is not the pinned key")]
    NotPinned(String),
    /// Rotating to the same key.
    #[error("the new key is the old one")]
    SameKey,
}

fn node_msg(
    node: &str,
    old: &PublicKey,
    new: &PublicKey,
    hub: &PublicKey,
    overlap: u64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + node.len() + 3 * 32 + 8);
    m.extend_from_slice(&(node.len() as u64).to_be_bytes());
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(&old.0);
    m.extend_from_slice(&new.0);
    m.extend_from_slice(&hub.0);
    m.extend_from_slice(&overlap.to_be_bytes());
    m
}

fn sig64(s: &str, what: &'static str) -> Result<[u8; 64], RotationError> {
    B64.decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(RotationError::BadSignature(what))
}

impl NodeRotation {
    /// Node `node` (now `old`) asks hub `hub` to move it to `new`.
    pub fn new(
        node: &str,
        old: &KeyPair,
        new: &KeyPair,
        hub: &PublicKey,
        overlap_ms: u64,
    ) -> Result<Self, RotationError> {
        let (old_pub, new_pub) = (old.public(), new.public());
        if old_pub == new_pub {
            return Err(RotationError::SameKey);
        }
        let msg = node_msg(node, &old_pub, &new_pub, hub, overlap_ms);
        Ok(Self {
            key: new_pub,
            overlap_ms,
            sig_old: B64.encode(old.sign(NODE_DOMAIN, &msg)),
            sig_new: B64.encode(new.sign(NODE_DOMAIN, &msg)),
        })
    }

    /// Checks both signatures for node `node` connecting with `old` to hub `hub`.
    pub fn check(&self, node: &str, old: &PublicKey, hub: &PublicKey) -> Result<(), RotationError> {
        if self.key == *old {
            return Err(RotationError::SameKey);
        }
        let msg = node_msg(node, old, &self.key, hub, self.overlap_ms);
        if !verify(old, NODE_DOMAIN, &msg, &sig64(&self.sig_old, "old key")?) {
            return Err(RotationError::BadSignature("old key"));
        }
        if !verify(
            &self.key,
            NODE_DOMAIN,
            &msg,
            &sig64(&self.sig_new, "new key")?,
        ) {
            return Err(RotationError::BadSignature("new key"));
        }
        Ok(())
    }
}

/// The hub's previous key vouches for its new one until `until_ms`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubRotation {
    /// The key the hub had before (the one older nodes pinned).
    pub previous: PublicKey,
    /// The end of the overlap (hub time, ms since the epoch).
    pub until_ms: u64,
    /// The previous key's signature over the new key and `until_ms`, base64.
    pub sig: String,
}

fn hub_msg(new: &PublicKey, until_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&new.0);
    m.extend_from_slice(&until_ms.to_be_bytes());
    m
}

impl HubRotation {
    /// `previous` endorses `new` until `until_ms`.
    pub fn endorse(
        previous: &KeyPair,
        new: &PublicKey,
        until_ms: u64,
    ) -> Result<Self, RotationError> {
        if previous.public() == *new {
            return Err(RotationError::SameKey);
        }
        Ok(Self {
            previous: previous.public(),
            until_ms,
            sig: B64.encode(previous.sign(HUB_DOMAIN, &hub_msg(new, until_ms))),
        })
    }

    /// Does the `pinned` key vouch for `new` at `now_ms`?
    pub fn check(
        &self,
        pinned: &PublicKey,
        new: &PublicKey,
        now_ms: u64,
    ) -> Result<(), RotationError> {
        if self.previous != *pinned {
            return Err(RotationError::NotPinned(self.previous.fingerprint()));
        }
        if !verify(
            pinned,
            HUB_DOMAIN,
            &hub_msg(new, self.until_ms),
            &sig64(&self.sig, "hub")?,
        ) {
            return Err(RotationError::BadSignature("hub"));
        }
        if self.until_ms <= now_ms {
            return Err(RotationError::Closed(self.until_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyPair {
        KeyPair::generate().expect("key")
    }

    #[test]
    fn a_node_rotation_needs_both_keys_and_binds_everything() {
        let (old, new, hub) = (key(), key(), key().public());
        let r = NodeRotation::new("n1", &old, &new, &hub, 1000).expect("statement");
        assert_eq!(r.check("n1", &old.public(), &hub), Ok(()));
        // Another name, hub or presenting key: refused.
        assert!(r.check("n2", &old.public(), &hub).is_err());
        assert!(r.check("n1", &old.public(), &key().public()).is_err());
        assert!(r.check("n1", &key().public(), &hub).is_err());
        // A relay swaps in a key of its own, or alters the overlap.
        let mallory = key();
        let mut swapped = r.clone();
        swapped.key = mallory.public();
        assert_eq!(
            swapped.check("n1", &old.public(), &hub),
            Err(RotationError::BadSignature("old key"))
        );
        let mut longer = r.clone();
        longer.overlap_ms = u64::MAX;
        assert!(longer.check("n1", &old.public(), &hub).is_err());
        // Signed by the old key only (someone else's key bound to our name).
        let theirs = NodeRotation::new("n1", &old, &mallory, &hub, 1000).expect("statement");
        let mut forged = theirs.clone();
        forged.key = new.public();
        assert!(forged.check("n1", &old.public(), &hub).is_err());
        assert_eq!(
            NodeRotation::new("n1", &old, &old, &hub, 1).err(),
            Some(RotationError::SameKey)
        );
    }

    #[test]
    fn a_hub_endorsement_is_checked_against_the_pin_and_its_window() {
        let (previous, new) = (key(), key());
        let e = HubRotation::endorse(&previous, &new.public(), 5000).expect("endorse");
        assert_eq!(e.check(&previous.public(), &new.public(), 4999), Ok(()));
        assert_eq!(
            e.check(&previous.public(), &new.public(), 5000),
            Err(RotationError::Closed(5000))
        );
        // For another key, by another key, or with its window stretched.
        assert!(e.check(&previous.public(), &key().public(), 1).is_err());
        assert!(matches!(
            e.check(&key().public(), &new.public(), 1),
            Err(RotationError::NotPinned(_))
        ));
        let mut stretched = e.clone();
        stretched.until_ms = u64::MAX;
        assert_eq!(
            stretched.check(&previous.public(), &new.public(), 1),
            Err(RotationError::BadSignature("hub"))
        );
    }
}
