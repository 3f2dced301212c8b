//! One direction of delivery over one link, transport-agnostic: the owner side pushes its
//! stream's unacknowledged envelopes through a sliding window and applies cumulative acks;
//! the receiver side verifies each envelope, stores it (inbox) and answers with the
//! cumulative ack — only after the store committed. Transports (relay, NATS) only move
//! [`Frame`]s; this module decides what to send.

use crate::envelope::{Opened, Payload, StreamId, Trust, open};
use crate::keys::KeyPair;
use crate::lane::Lane;
use crate::sender::WindowSender;
use crate::store::{DeliveryStore, Rewound, StoreError, skip_sealer};
use crate::writer::{Writer, WriterError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What travels on a link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Frame {
    /// A sealed envelope: its exact bytes (transports carry them as binary frames).
    Envelope {
        /// The envelope's bytes.
        bytes: Vec<u8>,
    },
    /// Cumulative acknowledgement of a stream.
    Ack {
        /// The stream.
        stream: StreamId,
        /// Every position up to this one is stored at the receiver.
        upto: u64,
    },
    /// A refused envelope: the reason, for the owner's error log (the stream is not acked
    /// past it, so a forged or corrupted copy never counts as delivered).
    Refused {
        /// Why.
        reason: String,
    },
}

/// One lane's sliding window: `window` in flight, retransmission after `rto_ms`, backing
/// off to 64 times that.
fn lane_window(window: usize, rto_ms: u64) -> WindowSender {
    WindowSender::new(window, rto_ms, rto_ms.saturating_mul(64))
}

/// The owner side towards one receiver: a sliding window per lane ([`crate::lane`]),
/// served priority lane first.
pub struct Outgoing {
    writer: Writer,
    lanes: Vec<(StreamId, WindowSender)>,
    owner: Option<Arc<KeyPair>>,
    rewound: Vec<Rewound>,
}

/// The reason a skip marker gives for a position its receiver lost.
pub const LOST_BY_RECEIVER: &str =
    "acknowledged, then lost by the receiver (restored from a backup?)";

impl Outgoing {
    /// The sender of every lane of `stream`'s owner towards its receiver, over the outbox
    /// in `writer`, with `window` messages in flight per lane.
    pub fn new(stream: StreamId, writer: Writer, window: usize, rto_ms: u64) -> Self {
        let lanes = Lane::ALL
            .into_iter()
            .map(|lane| (stream.on(lane), lane_window(window, rto_ms)))
            .collect();
        Self {
            writer,
            lanes,
            owner: None,
            rewound: Vec::new(),
        }
    }

    /// Gives `lane` a window of its own size: an agent keeps few of its event batches in
    /// flight, so that what it sends on its other lanes (replies to commands) is never
    /// queued behind a backlog of events already written to the link.
    pub fn with_lane_window(mut self, lane: Lane, window: usize, rto_ms: u64) -> Self {
        for (s, w) in &mut self.lanes {
            if s.lane == lane {
                *w = lane_window(window, rto_ms);
            }
        }
        self
    }

    /// Seals skip markers with `owner` (the streams' owner) for positions a receiver lost:
    /// see [`Outgoing::resume`].
    pub fn with_owner(mut self, owner: Arc<KeyPair>) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Starts each lane's window from what the outbox records as acknowledged. Then an ack
    /// below it means the receiver lost positions it had (a hub restored from a backup):
    /// with an owner key ([`Outgoing::with_owner`]) they become skip markers, the stream
    /// moves on, and [`Outgoing::take_rewound`] reports the loss.
    pub async fn resume(&mut self) -> Result<(), WriterError> {
        let streams: Vec<StreamId> = self.lanes.iter().map(|(s, _)| s.clone()).collect();
        let acked = self
            .writer
            .run(move |st| {
                streams
                    .iter()
                    .map(|s| st.acked(s))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        for ((_, w), a) in self.lanes.iter_mut().zip(acked) {
            w.resume_at(a);
        }
        Ok(())
    }

    /// The losses found since the last call (positions a receiver acknowledged, then lost).
    pub fn take_rewound(&mut self) -> Vec<Rewound> {
        std::mem::take(&mut self.rewound)
    }

    /// Is `stream` one of these lanes?
    pub fn serves(&self, stream: &StreamId) -> bool {
        self.lanes.iter().any(|(s, _)| s == stream)
    }

    /// The frames to transmit now, read from the outbox in one writer job, priority lane
    /// first: per lane, when a retransmission fell due, the window again from the last ack;
    /// otherwise only messages never sent, as many as the window has room for. Full
    /// windows with nothing due cost no read.
    pub async fn poll(&mut self, now_ms: u64) -> Result<Vec<Frame>, WriterError> {
        let wanted: Vec<(StreamId, u64, usize)> = self
            .lanes
            .iter()
            .map(|(stream, w)| {
                let (after, limit) = if w.retransmit_due(now_ms) {
                    (w.acked(), w.size())
                } else {
                    (w.last_sent(), w.room())
                };
                (stream.clone(), after, limit)
            })
            .collect();
        if wanted.iter().all(|(_, _, limit)| *limit == 0) {
            return Ok(Vec::new());
        }
        let read = self
            .writer
            .run(move |st| {
                wanted
                    .iter()
                    .map(|(stream, after, limit)| match limit {
                        0 => Ok(Vec::new()),
                        _ => st.unacked_after(stream, *after, *limit),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut frames = Vec::new();
        for ((_, window), unacked) in self.lanes.iter_mut().zip(read) {
            let seqs: Vec<u64> = unacked.iter().map(|(s, _)| *s).collect();
            let due = window.due(now_ms, &seqs);
            frames.extend(
                unacked
                    .into_iter()
                    .filter(|(s, _)| due.binary_search(s).is_ok())
                    .map(|(_, bytes)| Frame::Envelope { bytes }),
            );
        }
        Ok(frames)
    }

    /// Applies an acknowledgement of `stream` (durably: the outbox forgets what is
    /// delivered). An ack for a stream not served here, or covering nothing new, is ignored.
    pub async fn on_ack(&mut self, stream: &StreamId, upto: u64) -> Result<(), WriterError> {
        self.on_ack_with(stream, upto, |_, _, _| Ok(())).await?;
        Ok(())
    }

    /// Applies an acknowledgement of `stream` and, in the same commit, `also` (the owner's
    /// own record of what was delivered: it gets the lane and the range `(from, upto]`
    /// newly acknowledged). Nothing happens for an ack that covers nothing new or names a
    /// stream not served here.
    pub async fn on_ack_with<T: Send + 'static>(
        &mut self,
        stream: &StreamId,
        upto: u64,
        also: impl FnOnce(&mut DeliveryStore, Lane, (u64, u64)) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<Option<T>, WriterError> {
        let Some((s, window)) = self.lanes.iter_mut().find(|(s, _)| s == stream) else {
            return Ok(None);
        };
        let from = window.acked();
        if upto < from {
            if let Some(owner) = self.owner.clone() {
                let stream = s.clone();
                let lost = self
                    .writer
                    .run(move |st| st.rewind(&stream, upto, skip_sealer(&owner, LOST_BY_RECEIVER)))
                    .await?;
                window.rewind(upto);
                self.rewound.extend(lost);
            }
            return Ok(None);
        }
        if upto == from {
            return Ok(None);
        }
        let (stream, lane) = (s.clone(), s.lane);
        let t = self
            .writer
            .run(move |st| {
                st.ack(&stream, upto)?;
                also(st, lane, (from, upto))
            })
            .await?;
        window.on_ack(upto);
        Ok(Some(t))
    }

    /// When a retransmission falls due next (ms since the epoch), if anything is in flight:
    /// a link with nothing in flight needs no timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.lanes
            .iter()
            .filter_map(|(_, w)| w.next_deadline())
            .min()
    }

    /// The link came back: retransmit what is in flight at once.
    pub fn on_reconnect(&mut self) {
        for (_, w) in &mut self.lanes {
            w.on_reconnect();
        }
    }
}

/// What the receiver did with a frame.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// Stored; answer with this frame (the cumulative ack). `released` lists the request
    /// ids that became runnable, in order.
    Stored {
        /// The ack to send back.
        ack: Frame,
        /// Request ids now runnable, in order.
        released: Vec<String>,
    },
    /// Refused; answer with this frame.
    Refused(Frame),
}

/// Receives one envelope: verify, store, and build the ack (sent only after the store
/// committed, since this returns after the writer answered).
pub async fn receive(
    bytes: &[u8],
    trust: &Trust<'_>,
    writer: &Writer,
) -> Result<Received, WriterError> {
    let Opened {
        stream,
        seq,
        payload,
    } = match open(bytes, trust) {
        Ok(o) => o,
        Err(e) => {
            return Ok(Received::Refused(Frame::Refused {
                reason: e.to_string(),
            }));
        }
    };
    let id = match &payload {
        Payload::Request { request, .. } => Some(request.id.clone()),
        Payload::Skip { .. } => None,
    };
    let receipt = writer
        .receive(stream.clone(), seq, id, bytes.to_vec())
        .await?;
    Ok(Received::Stored {
        ack: Frame::Ack {
            stream,
            upto: receipt.acked,
        },
        released: receipt.released.into_iter().filter_map(|r| r.id).collect(),
    })
}

#[cfg(test)]
mod tests;
