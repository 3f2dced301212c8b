//! The first frames of every connection between an agent and a hub: a mutual Ed25519
//! challenge, so the channel is authenticated even where a proxy terminates TLS, plus the
//! hub's signed time (nodes may boot in 1970; expiry is judged on hub time).
//!
//! ```text
//! agent -> hub   Hello     { node, node_key, nonce_a }
//! hub -> agent   Challenge { hub_key, nonce_h, hub_time_ms, sig_h }   sig_h over (nonce_a, nonce_h, node_key, hub_time_ms)
//! agent -> hub   Proof     { sig_a }                                  sig_a over (nonce_h, nonce_a, hub_key)
//! ```
//!
//! The agent accepts only its pinned hub key; the hub accepts only the key enrolled under
//! the node's name. Each side signs the other's fresh nonce, so a recorded handshake cannot
//! be replayed, and each signature binds the peer's key, so a relay cannot splice two
//! handshakes together. Pure: no IO.

use crate::keys::{KeyPair, PublicKey, verify};
use crate::rotation::{HubRotation, NodeRotation, RotationError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

const HUB_DOMAIN: &[u8] = b"reeve-handshake-hub-v1\0";
const NODE_DOMAIN: &[u8] = b"reeve-handshake-node-v1\0";

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;

/// First frame, from the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version.
    pub v: u32,
    /// The node's name.
    pub node: String,
    /// The node's key.
    pub node_key: PublicKey,
    /// 32 random bytes, base64.
    pub nonce: String,
    /// A move to a new node key, asked with this handshake ([`NodeRotation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate: Option<NodeRotation>,
}

/// The hub's answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// Protocol version.
    pub v: u32,
    /// The hub's key.
    pub hub_key: PublicKey,
    /// 32 random bytes, base64.
    pub nonce: String,
    /// The hub's clock, ms since the epoch.
    pub hub_time_ms: u64,
    /// The hub's signature, base64.
    pub sig: String,
    /// While the hub's key is being rotated: its previous key's endorsement of this one
    /// ([`HubRotation`]), for nodes that pinned the previous key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsed: Option<HubRotation>,
}

/// The agent's proof.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// The node's signature, base64.
    pub sig: String,
}

/// The hub's last handshake frame: the connection is open for delivery, or refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Verdict {
    /// The connection is open for delivery.
    Welcome {
        /// The hub's clock.
        hub_time_ms: u64,
        /// The node key now enrolled, when the Hello asked for a rotation (the new key once
        /// the hub recorded it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node_key: Option<PublicKey>,
    },
    /// Refused; the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Why a handshake failed. The connection is closed; nothing else is read from it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks an unknown version.
    #[error("unsupported protocol version {0}")]
    Version(u32),
    /// The hub's key is not the pinned one (wrong hub, or someone in the middle).
    #[error("the hub's key {0} is not the pinned one")]
    UnpinnedHub(String),
    /// The node's key is not the one enrolled under its name (unknown node, clone, or revoked).
    #[error("node {node} presented key {key}, which is not enrolled under that name")]
    UnknownNode {
        /// The claimed name.
        node: String,
        /// The presented key.
        key: String,
    },
    /// A signature did not verify.
    #[error("bad {0} signature")]
    BadSignature(&'static str),
    /// A nonce or signature was not valid base64 of the right length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// No randomness.
    #[error("no randomness available")]
    Random,
    /// A key rotation statement was refused.
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// What the agent makes of the hub's challenge.
#[derive(Debug)]
pub struct Answer {
    /// The proof to send.
    pub proof: Proof,
    /// The hub's clock.
    pub hub_time_ms: u64,
    /// Set when the hub presented a new key endorsed by the pinned one: pin `Challenge::hub_key`
    /// now, and trust the previous key's signatures until the endorsement's end.
    pub repin: Option<HubRotation>,
}

fn nonce() -> Result<[u8; 32], HandshakeError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|_| HandshakeError::Random)?;
    Ok(n)
}

fn decode<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HandshakeError> {
    B64.decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(HandshakeError::Malformed(what))
}

fn hub_msg(nonce_a: &[u8; 32], nonce_h: &[u8; 32], node_key: &PublicKey, time: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(104);
    m.extend_from_slice(nonce_a);
    m.extend_from_slice(nonce_h);
    m.extend_from_slice(&node_key.0);
    m.extend_from_slice(&time.to_be_bytes());
    m
}

fn node_msg(nonce_h: &[u8; 32], nonce_a: &[u8; 32], hub_key: &PublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    m.extend_from_slice(nonce_h);
    m.extend_from_slice(nonce_a);
    m.extend_from_slice(&hub_key.0);
    m
}

/// The agent's side.
pub struct AgentSide {
    key_pair: KeyPair,
    pinned_hub: PublicKey,
    nonce: [u8; 32],
}

impl AgentSide {
    /// Starts a handshake as node `node`; returns the state and the Hello to send.
    pub fn start(
        node: &str,
        key_pair: KeyPair,
        pinned_hub: PublicKey,
    ) -> Result<(Self, Hello), HandshakeError> {
        let n = nonce()?;
        let hello = Hello {
            v: VERSION,
            node: node.into(),
            node_key: key_pair.public(),
            nonce: B64.encode(n),
            rotate: None,
        };
        Ok((
            Self {
                key_pair,
                pinned_hub,
                nonce: n,
            },
            hello,
        ))
    }

    /// Checks the hub's challenge; returns the proof to send, the hub's time, and whether to
    /// pin a new hub key. A key other than the pinned one is accepted only with the pinned
    /// key's endorsement, open at `now_ms` (the node's hub-adjusted time).
    pub fn answer(&self, c: &Challenge, now_ms: u64) -> Result<Answer, HandshakeError> {
        if c.v != VERSION {
            return Err(HandshakeError::Version(c.v));
        }
        let mut repin = None;
        if c.hub_key != self.pinned_hub {
            let Some(e) = &c.endorsed else {
                return Err(HandshakeError::UnpinnedHub(c.hub_key.fingerprint()));
            };
            e.check(&self.pinned_hub, &c.hub_key, now_ms)?;
            repin = Some(e.clone());
        }
        let nonce_h: [u8; 32] = decode(&c.nonce, "hub nonce")?;
        let sig: [u8; 64] = decode(&c.sig, "hub signature")?;
        let msg = hub_msg(
            &self.nonce,
            &nonce_h,
            &self.key_pair.public(),
            c.hub_time_ms,
        );
        if !verify(&c.hub_key, HUB_DOMAIN, &msg, &sig) {
            return Err(HandshakeError::BadSignature("hub"));
        }
        let sig_a = self
            .key_pair
            .sign(NODE_DOMAIN, &node_msg(&nonce_h, &self.nonce, &c.hub_key));
        Ok(Answer {
            proof: Proof {
                sig: B64.encode(sig_a),
            },
            hub_time_ms: c.hub_time_ms,
            repin,
        })
    }
}

/// The hub's side, between its challenge and the agent's proof.
pub struct HubSide {
    node: String,
    node_key: PublicKey,
    hub_key: PublicKey,
    nonce_a: [u8; 32],
    nonce_h: [u8; 32],
}

impl HubSide {
    /// Answers a Hello if `known(node, key)` accepts the presented key (the enrolled one,
    /// or one rotated away from whose overlap is open) and a rotation it asks for is signed
    /// by both keys; returns the challenge. `endorsed` goes out with it while the hub's own
    /// key is rotated.
    pub fn challenge(
        hello: &Hello,
        hub: &KeyPair,
        endorsed: Option<&HubRotation>,
        known: impl Fn(&str, &PublicKey) -> bool,
        hub_time_ms: u64,
    ) -> Result<(Self, Challenge), HandshakeError> {
        if hello.v != VERSION {
            return Err(HandshakeError::Version(hello.v));
        }
        if !known(&hello.node, &hello.node_key) {
            return Err(HandshakeError::UnknownNode {
                node: hello.node.clone(),
                key: hello.node_key.fingerprint(),
            });
        }
        if let Some(r) = &hello.rotate {
            r.check(&hello.node, &hello.node_key, &hub.public())?;
        }
        let nonce_a: [u8; 32] = decode(&hello.nonce, "agent nonce")?;
        let nonce_h = nonce()?;
        let sig = hub.sign(
            HUB_DOMAIN,
            &hub_msg(&nonce_a, &nonce_h, &hello.node_key, hub_time_ms),
        );
        Ok((
            Self {
                node: hello.node.clone(),
                node_key: hello.node_key,
                hub_key: hub.public(),
                nonce_a,
                nonce_h,
            },
            Challenge {
                v: VERSION,
                hub_key: hub.public(),
                nonce: B64.encode(nonce_h),
                hub_time_ms,
                sig: B64.encode(sig),
                endorsed: endorsed.cloned(),
            },
        ))
    }

    /// Checks the agent's proof; returns the authenticated node name.
    pub fn finish(self, p: &Proof) -> Result<String, HandshakeError> {
        let sig: [u8; 64] = decode(&p.sig, "node signature")?;
        if !verify(
            &self.node_key,
            NODE_DOMAIN,
            &node_msg(&self.nonce_h, &self.nonce_a, &self.hub_key),
            &sig,
        ) {
            return Err(HandshakeError::BadSignature("node"));
        }
        Ok(self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys {
        hub: KeyPair,
        node: KeyPair,
    }

    fn keys() -> Keys {
        Keys {
            hub: KeyPair::generate().expect("key"),
            node: KeyPair::generate().expect("key"),
        }
    }

    fn copy(k: &KeyPair) -> KeyPair {
        KeyPair::from_secret_base64(&k.secret_base64()).expect("copy")
    }

    #[test]
    fn both_sides_authenticate() {
        let k = keys();
        let node_pub = k.node.public();
        let (agent, hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        let (hub, ch) = HubSide::challenge(
            &hello,
            &k.hub,
            None,
            |n, key| n == "n1" && *key == node_pub,
            42,
        )
        .expect("challenge");
        let a = agent.answer(&ch, 0).expect("answer");
        assert_eq!(a.hub_time_ms, 42);
        assert!(a.repin.is_none());
        assert_eq!(hub.finish(&a.proof).expect("finish"), "n1");
    }

    #[test]
    fn impostors_and_replays_fail() {
        let k = keys();
        let node_pub = k.node.public();
        let enrolled = |n: &str, key: &PublicKey| n == "n1" && *key == node_pub;
        // A hub that is not the pinned one (or a man in the middle with its own key).
        let mitm = KeyPair::generate().expect("key");
        let (agent, hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        let (_, ch) = HubSide::challenge(&hello, &mitm, None, enrolled, 1).expect("challenge");
        assert!(matches!(
            agent.answer(&ch, 0).map(|a| a.hub_time_ms),
            Err(HandshakeError::UnpinnedHub(_))
        ));
        // A cloned name with another key, or an unknown node.
        let other = KeyPair::generate().expect("key");
        let (_, hello2) = AgentSide::start("n1", other, k.hub.public()).expect("start");
        assert!(matches!(
            HubSide::challenge(&hello2, &k.hub, None, enrolled, 1),
            Err(HandshakeError::UnknownNode { .. })
        ));
        // A recorded proof does not answer a fresh challenge (new hub nonce).
        let (agent, hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        let (hub1, ch1) = HubSide::challenge(&hello, &k.hub, None, enrolled, 1).expect("challenge");
        let proof1 = agent.answer(&ch1, 0).expect("answer").proof;
        assert!(hub1.finish(&proof1).is_ok());
        let (hub2, _) = HubSide::challenge(&hello, &k.hub, None, enrolled, 2).expect("challenge");
        assert_eq!(
            hub2.finish(&proof1),
            Err(HandshakeError::BadSignature("node"))
        );
        // A challenge whose time was altered in flight.
        let (agent, hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        let (_, mut ch) = HubSide::challenge(&hello, &k.hub, None, enrolled, 5).expect("challenge");
        ch.hub_time_ms = 0;
        assert_eq!(
            agent.answer(&ch, 0).err(),
            Some(HandshakeError::BadSignature("hub"))
        );
    }

    #[test]
    fn a_node_rotates_its_key_and_a_hub_key_is_followed_by_endorsement() {
        let k = keys();
        let node_pub = k.node.public();
        let next = KeyPair::generate().expect("key");
        let (_, mut hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        hello.rotate = Some(
            NodeRotation::new("n1", &k.node, &next, &k.hub.public(), 60_000).expect("rotation"),
        );
        let known = |n: &str, key: &PublicKey| n == "n1" && *key == node_pub;
        assert!(HubSide::challenge(&hello, &k.hub, None, known, 1).is_ok());
        // A relay that swaps in its own new key is refused before any challenge.
        let mut swapped = hello.clone();
        if let Some(r) = swapped.rotate.as_mut() {
            r.key = KeyPair::generate().expect("key").public();
        }
        assert!(matches!(
            HubSide::challenge(&swapped, &k.hub, None, known, 1),
            Err(HandshakeError::Rotation(_))
        ));
        // The hub moved to a new key: a node pinned to the old one follows the endorsement
        // while it is open, and is refused without it or after it.
        let new_hub = KeyPair::generate().expect("key");
        let e = HubRotation::endorse(&k.hub, &new_hub.public(), 100).expect("endorse");
        let (agent, hello) = AgentSide::start("n1", copy(&k.node), k.hub.public()).expect("start");
        let (hub, ch) =
            HubSide::challenge(&hello, &new_hub, Some(&e), known, 7).expect("challenge");
        let a = agent.answer(&ch, 50).expect("answer");
        assert_eq!(a.repin.as_ref().map(|r| r.previous), Some(k.hub.public()));
        assert_eq!(hub.finish(&a.proof).expect("finish"), "n1");
        assert!(matches!(
            agent.answer(&ch, 100),
            Err(HandshakeError::Rotation(RotationError::Closed(100)))
        ));
        let mut bare = ch.clone();
        bare.endorsed = None;
        assert!(matches!(
            agent.answer(&bare, 50),
            Err(HandshakeError::UnpinnedHub(_))
        ));
        // A node that pinned the new key already ignores the endorsement.
        let (agent, hello) =
            AgentSide::start("n1", copy(&k.node), new_hub.public()).expect("start");
        let (_, ch) = HubSide::challenge(&hello, &new_hub, Some(&e), known, 7).expect("challenge");
        assert!(agent.answer(&ch, 500).expect("answer").repin.is_none());
    }
}
