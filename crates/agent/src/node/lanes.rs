//! Execution lanes at the node (DESIGN.md §2.1; [`reeve_delivery::lane`]). The inbox
//! releases requests in stream order; here they are run:
//!
//! - each stream (ordered or priority lane) by its own runner, one request at a time in
//!   the order released, so a stream never blocks another and control messages never wait
//!   behind a long command or a backlog;
//! - unordered requests each at once, at most [`UNORDERED_PER_SENDER`] at a time for one
//!   authorizer (the rest wait for a slot, in arrival order).
//!
//! A request released twice (a restart that re-releases what a live link also released)
//! runs once: an id already queued or running is dropped here, and one already done is
//! skipped by the executor.

use super::Node;
use reeve_delivery::lane::Lane;
use reeve_delivery::store::{Unfinished, parse_stream_key};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};

/// Unordered requests one authorizer may have running at once.
pub const UNORDERED_PER_SENDER: usize = 4;

/// A stored request ready to run, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The request's id.
    pub id: String,
    /// The stream key of the stream it came on (its runner).
    pub stream_key: String,
    /// Its lane.
    pub lane: Lane,
}

impl Job {
    /// A job for a request released from stream `stream_key` on `lane`; `sequenced` false
    /// for one that arrived without a position (it runs unordered).
    pub fn new(id: String, stream_key: String, lane: Lane, sequenced: bool) -> Self {
        Self {
            id,
            stream_key,
            lane: if sequenced { lane } else { Lane::Unordered },
        }
    }

    /// A job for a stored request left unfinished by an earlier run (its lane read back
    /// from its stream key).
    pub fn unfinished(u: Unfinished) -> Self {
        let lane = parse_stream_key(&u.stream_key).map_or(Lane::Ordered, |s| s.lane);
        Self::new(u.id, u.stream_key, lane, u.sequenced)
    }
}

/// Ids queued or running.
type InFlight = Arc<Mutex<HashSet<String>>>;

/// The unordered slots of each authorizer (by key).
type Slots = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

fn done(in_flight: &InFlight, id: &str) {
    if let Ok(mut s) = in_flight.lock() {
        s.remove(id);
    }
}

/// Runs what arrives on `rx`, for the life of the node.
pub async fn dispatch(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let in_flight: InFlight = Arc::default();
    let slots: Slots = Arc::default();
    let mut runners: HashMap<String, mpsc::UnboundedSender<String>> = HashMap::new();
    while let Some(job) = rx.recv().await {
        let fresh = in_flight
            .lock()
            .map(|mut s| s.insert(job.id.clone()))
            .unwrap_or(true);
        if !fresh {
            continue;
        }
        if job.lane == Lane::Unordered {
            let (node, in_flight, slots) = (node.clone(), in_flight.clone(), slots.clone());
            tokio::spawn(async move {
                unordered(&node, &job.id, &slots).await;
                done(&in_flight, &job.id);
            });
            continue;
        }
        let runner = runners.entry(job.stream_key).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(serial(node.clone(), rx, in_flight.clone()));
            tx
        });
        let _ = runner.send(job.id);
    }
}

/// One stream's runner: its requests one at a time, in order.
async fn serial(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<String>, in_flight: InFlight) {
    while let Some(id) = rx.recv().await {
        if let Err(e) = node.execute(&id).await {
            tracing::warn!(%id, "request failed: {e:#}");
        }
        done(&in_flight, &id);
    }
}

/// One unordered request: waits for a slot of its authorizer, then runs.
async fn unordered(node: &Arc<Node>, id: &str, slots: &Slots) {
    let loaded = match node.load(id).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%id, "request not loaded: {e:#}");
            return;
        }
    };
    let Some(slot) = slots.lock().ok().map(|mut m| {
        m.entry(loaded.authorizer.to_base64())
            .or_insert_with(|| Arc::new(Semaphore::new(UNORDERED_PER_SENDER)))
            .clone()
    }) else {
        return;
    };
    let Ok(_permit) = slot.acquire_owned().await else {
        return;
    };
    if let Err(e) = node.run_loaded(id, loaded).await {
        tracing::warn!(%id, "request failed: {e:#}");
    }
}
