//! The hub's key as this node trusts it: the one pinned at join, and during a hub key
//! rotation (`reeve hub rotate-key`) also the previous one, until the overlap ends. The hub
//! presents its new key with the previous key's endorsement; the node checks it in the
//! handshake ([`reeve_delivery::handshake::AgentSide::answer`]), then pins the new key here
//! (`node.toml`) and keeps trusting what the previous key signed — requests stored in its
//! inbox before the rotation, dashboard actions authorized by it — until the end of the
//! overlap.

use super::{Node, identity};
use anyhow::Result;
use reeve_delivery::keys::PublicKey;
use reeve_delivery::policy::Policy;
use reeve_delivery::rotation::HubRotation;
use serde_json::json;
use std::sync::Arc;

/// The hub keys a node trusts.
#[derive(Clone, Debug)]
pub(crate) struct HubKeys {
    /// The pinned key.
    pub(crate) current: PublicKey,
    /// The key the hub rotated away from, and the end of its overlap (hub time, ms).
    pub(crate) previous: Option<(PublicKey, u64)>,
}

impl HubKeys {
    /// Is `k` the hub's at hub time `now_ms`?
    pub(crate) fn accepts(&self, k: &PublicKey, now_ms: u64) -> bool {
        *k == self.current
            || self
                .previous
                .is_some_and(|(p, until)| *k == p && now_ms < until)
    }

    /// The node's policy with these keys named "hub".
    pub(crate) fn policy(&self, base: &Policy) -> Policy {
        let mut keys = vec![self.current];
        keys.extend(self.previous.map(|(p, _)| p));
        base.clone().with_keys("hub", keys)
    }
}

/// What the hub keys decide: the keys, and the policy that names them.
pub(crate) struct HubTrust {
    pub(crate) keys: HubKeys,
    pub(crate) policy: Arc<Policy>,
}

impl Node {
    /// The hub keys trusted now.
    pub(crate) fn hub_keys(&self) -> HubKeys {
        match self.hub.read() {
            Ok(h) => h.keys.clone(),
            Err(poisoned) => poisoned.into_inner().keys.clone(),
        }
    }

    /// The pinned hub key.
    pub(crate) fn hub_key(&self) -> PublicKey {
        self.hub_keys().current
    }

    /// Is `k` the hub's (the pinned key, or the previous one during its overlap)?
    pub(crate) fn is_hub_key(&self, k: &PublicKey) -> bool {
        self.hub_keys().accepts(k, self.now())
    }

    /// The node's policy (its file, with the hub's keys named "hub").
    pub(crate) fn policy(&self) -> Arc<Policy> {
        match self.hub.read() {
            Ok(h) => h.policy.clone(),
            Err(poisoned) => poisoned.into_inner().policy.clone(),
        }
    }

    /// The hub presented `new`, endorsed by the pinned key: pin it (in `node.toml` first),
    /// and keep trusting the previous key until the endorsement's end.
    pub(crate) async fn repin(&self, new: PublicKey, endorsed: &HubRotation) -> Result<()> {
        let mut file =
            identity::load_file(&self.ctx.data_dir)?.unwrap_or_else(|| self.ident.file.clone());
        file.hub_key = Some(new.to_base64());
        file.hub_key_previous = Some(endorsed.previous.to_base64());
        file.hub_key_previous_until_ms = Some(endorsed.until_ms);
        identity::save(&self.ctx.data_dir, &file)?;
        let keys = HubKeys {
            current: new,
            previous: Some((endorsed.previous, endorsed.until_ms)),
        };
        let trust = HubTrust {
            policy: Arc::new(keys.policy(&self.policy_file)),
            keys,
        };
        match self.hub.write() {
            Ok(mut h) => *h = trust,
            Err(poisoned) => *poisoned.into_inner() = trust,
        }
        let message = format!(
            "the hub rotated its key: {} pinned now, endorsed by {} (trusted until {} ms since the epoch)",
            new.fingerprint(),
            endorsed.previous.fingerprint(),
            endorsed.until_ms
        );
        tracing::info!("{message}");
        self.note(
            &message,
            json!({"hub_key": new.to_base64(), "previous": endorsed.previous.to_base64(), "until_ms": endorsed.until_ms}),
        )
        .await;
        Ok(())
    }
}
