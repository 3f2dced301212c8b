//! One direction of delivery over one link, transport-agnostic: the owner side pushes its
//! stream's unacknowledged envelopes through a sliding window and applies cumulative acks;
//! the receiver side verifies each envelope, stores it (inbox) and answers with the
//! cumulative ack — only after the store committed. Transports (relay, NATS) only move
//! [`Frame`]s; this module decides what to send.

use crate::envelope::{Opened, Payload, StreamId, Trust, open};
use crate::sender::WindowSender;
use crate::writer::{Writer, WriterError};
use serde::{Deserialize, Serialize};

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

/// The owner side of one stream.
pub struct Outgoing {
    stream: StreamId,
    writer: Writer,
    window: WindowSender,
}

impl Outgoing {
    /// The sender of `stream`, over the outbox in `writer`.
    pub fn new(stream: StreamId, writer: Writer, window: usize, rto_ms: u64) -> Self {
        Self {
            stream,
            writer,
            window: WindowSender::new(window, rto_ms, rto_ms.saturating_mul(64)),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The frames to transmit now (new messages within the window, or retransmissions).
    pub async fn poll(&mut self, now_ms: u64, unacked: Vec<(u64, Vec<u8>)>) -> Vec<Frame> {
        let seqs: Vec<u64> = unacked.iter().map(|(s, _)| *s).collect();
        let due = self.window.due(now_ms, &seqs);
        unacked
            .into_iter()
            .filter(|(s, _)| due.contains(s))
            .map(|(_, bytes)| Frame::Envelope { bytes })
            .collect()
    }

    /// Applies an acknowledgement (durably: the outbox forgets what is delivered).
    pub async fn on_ack(&mut self, upto: u64) -> Result<(), WriterError> {
        if upto > self.window.acked() {
            self.writer.ack(self.stream.clone(), upto).await?;
            self.window.on_ack(upto);
        }
        Ok(())
    }

    /// The link came back: retransmit what is in flight at once.
    pub fn on_reconnect(&mut self) {
        self.window.on_reconnect();
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
