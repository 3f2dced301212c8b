//! Rotating the node's key with an overlap window (`reeve agent rotate-key`).
//!
//! 1. The new key is written to `node.key.next` ([`identity::begin_rotation`]) and the link
//!    reconnects.
//! 2. The next handshake carries the rotation, signed by both keys; the hub records it
//!    and welcomes the node with the new key, and keeps accepting the old one until the
//!    overlap ends.
//! 3. The node moves what waits in its outbox onto streams owned by the new key (a new
//!    instance: the streams start again at 1; the hub's inbox keeps one copy of anything it
//!    had already), then takes the new key in memory and in `node.key`.
//!
//! Each step survives a crash: the hub answers a rotation it recorded already with the new
//! key (the old one still connects during the overlap), and an agent that renewed its
//! streams but stopped before swapping the key file finishes the swap when it starts
//! (`Node::open`). A message enqueued by a task that read the old identity just before the
//! renewal is moved at the next link ([`Node::settle_streams`]).

use super::{Node, Own, identity};
use anyhow::{Context, Result};
use reeve_delivery::envelope::reseal;
use reeve_delivery::keys::{KeyPair, PublicKey};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Asks for a new key: written to `node.key.next` (a pending one is kept), presented at
    /// the next handshake, which this starts at once. Waits up to `wait` for the hub to
    /// record it; returns the new key and whether it is in use now.
    pub async fn rotate_key(&self, overlap: Duration, wait: Duration) -> Result<(PublicKey, bool)> {
        let overlap_ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
        let next = identity::begin_rotation(&self.ctx.data_dir, overlap_ms)?;
        self.note(
            &format!(
                "node key rotation asked: new key {}, the old one accepted for {} after the hub records it",
                next.fingerprint(),
                humantime::format_duration(overlap)
            ),
            json!({"key": next.to_base64(), "overlap_ms": overlap_ms}),
        )
        .await;
        self.relink.notify_one();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.key().public() == next {
                return Ok((next, true));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok((next, false));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hub recorded the rotation to `next`: renew the streams under it, then use it.
    pub(crate) async fn adopt_key(&self, next: KeyPair) -> Result<()> {
        let next = Arc::new(next);
        let moved = self.renew_streams(next.clone()).await?;
        identity::finish_rotation(&self.ctx.data_dir, &next)?;
        let message = format!(
            "node key rotated to {}: the hub recorded it; {moved} waiting message(s) moved onto the new key's streams",
            next.public().fingerprint()
        );
        tracing::info!("{message}");
        self.note(
            &message,
            json!({"key": next.public().to_base64(), "moved": moved}),
        )
        .await;
        Ok(())
    }

    /// Moves what waits in the outbox onto new streams owned by `key` and makes that the
    /// node's identity in memory; returns how many messages moved.
    async fn renew_streams(&self, key: Arc<KeyPair>) -> Result<usize> {
        let k = key.clone();
        let (instance, moved) = self
            .writer
            .run(move |s| {
                s.renew_instance(&k.public(), |stream, seq, envelope| {
                    // Everything in a node's outbox is its own: authorized by the key it
                    // had, and signed again by the one it has.
                    reseal(envelope, stream, seq, &k, &|_| true).unwrap_or_default()
                })
            })
            .await
            .context("cannot move the outbox onto the new key's streams")?;
        let own = Arc::new(Own { key, instance });
        match self.own.write() {
            Ok(mut o) => *o = own,
            Err(poisoned) => *poisoned.into_inner() = own,
        }
        Ok(moved.len())
    }

    /// Before a link serves: messages enqueued under an identity this node no longer has
    /// (by a task that read it just before a rotation renewed the streams) are moved.
    pub(crate) async fn settle_streams(&self) -> Result<()> {
        let own = self.own();
        let (key, instance) = (own.key.public(), own.instance.clone());
        let stray = self
            .writer
            .run(move |s| s.waits_elsewhere(&key, &instance))
            .await?;
        if stray {
            let moved = self.renew_streams(own.key.clone()).await?;
            tracing::info!(
                "{moved} message(s) sent under the previous key moved onto its new streams"
            );
        }
        Ok(())
    }
}
