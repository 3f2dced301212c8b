//! Removing a node from the fleet, by an admin (`reeve nodes remove`) or by the node itself
//! (`reeve agent leave`): its key is forgotten (it can no longer connect), every message
//! still waiting for it becomes a dead letter (`purged`, the error log says by whom), and
//! its stream is retired so that a node enrolled later under the same name starts afresh.
//! Its history (messages, events) stays.

use crate::db::fleet;
use crate::{Hub, now_ms};
use anyhow::Result;
use reeve_delivery::envelope::StreamId;
use reeve_delivery::lane::Lane;
use reeve_delivery::store::{DeliveryStore, StoreError};

/// Removes `node` inside a writer job (so it commits with whatever else the job does);
/// `stream` is one of the hub's streams to it (every lane of it is retired).
/// Returns how many waiting messages were purged, or `None` if no such node is enrolled.
pub(crate) fn remove_in(
    s: &mut DeliveryStore,
    stream: &StreamId,
    node: &str,
    by: &str,
    now: u64,
) -> Result<Option<usize>, StoreError> {
    if fleet(s).node_key(node)?.is_none() {
        return Ok(None);
    }
    let mut gone = Vec::new();
    for lane in Lane::ALL {
        gone.extend(s.retire_stream(&stream.on(lane), now)?);
    }
    let f = fleet(s);
    for e in &gone {
        f.set_message_state(&e.id, "purged")?;
    }
    f.remove_node(node)?;
    let how = if by == node {
        format!("node {node} left the fleet")
    } else {
        format!("node {node} was removed by {by}")
    };
    f.log_error(
        now,
        Some(node),
        "node_removed",
        &format!("{how}; {} waiting messages purged", gone.len()),
    )?;
    Ok(Some(gone.len()))
}

impl Hub {
    /// Removes `node` on behalf of `by` and closes its live connection. Returns how many
    /// waiting messages were purged, or `None` if no such node is enrolled.
    pub async fn remove_node(&self, node: &str, by: &str) -> Result<Option<usize>> {
        let (stream, n, by) = (
            self.stream_to(node, Lane::Ordered),
            node.to_string(),
            by.to_string(),
        );
        let purged = self
            .writer
            .run(move |s| remove_in(s, &stream, &n, &by, now_ms()))
            .await?;
        if purged.is_some() {
            self.disconnect_removed(node);
            self.bump();
        }
        Ok(purged)
    }

    /// Closes the live connection of a node that is no longer enrolled.
    pub(crate) fn disconnect_removed(&self, node: &str) {
        if let Some(l) = self.live.lock().ok().and_then(|l| l.get(node).cloned()) {
            l.removed.notify_one();
        }
    }
}
