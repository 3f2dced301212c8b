//! One direction of delivery over one link, transport-agnostic: the owner side pushes its
//! stream's unacknowledged envelopes through a sliding window and applies cumulative acks;
//! the receiver side verifies each envelope, stores it (inbox) and answers with the
//! cumulative ack — only after the store committed. Transports (relay, NATS) only move
//! [`Frame`]s; this module decides what to send.

use crate::envelope::{Opened, Payload, StreamId, Trust, open};
use crate::sender::WindowSender;
use crate::store::{DeliveryStore, StoreError};
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

    /// The frames to transmit now, read from the outbox: when a retransmission fell due,
    /// the window again from the last ack; otherwise only messages never sent, as many as
    /// the window has room for. A full window with nothing due costs no read.
    pub async fn poll(&mut self, now_ms: u64) -> Result<Vec<Frame>, WriterError> {
        let (after, limit) = if self.window.retransmit_due(now_ms) {
            (self.window.acked(), self.window.size())
        } else {
            (self.window.last_sent(), self.window.room())
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stream = self.stream.clone();
        let unacked = self
            .writer
            .run(move |st| st.unacked_after(&stream, after, limit))
            .await?;
        let seqs: Vec<u64> = unacked.iter().map(|(s, _)| *s).collect();
        let due = self.window.due(now_ms, &seqs);
        Ok(unacked
            .into_iter()
            .filter(|(s, _)| due.binary_search(s).is_ok())
            .map(|(_, bytes)| Frame::Envelope { bytes })
            .collect())
    }

    /// Applies an acknowledgement (durably: the outbox forgets what is delivered).
    pub async fn on_ack(&mut self, upto: u64) -> Result<(), WriterError> {
        if upto > self.window.acked() {
            self.writer.ack(self.stream.clone(), upto).await?;
            self.window.on_ack(upto);
        }
        Ok(())
    }

    /// Applies an acknowledgement and, in the same commit, `also` (the owner's own record of
    /// what was delivered: it gets the range `(from, upto]` newly acknowledged). Nothing
    /// happens for an ack that covers nothing new.
    pub async fn on_ack_with<T: Send + 'static>(
        &mut self,
        upto: u64,
        also: impl FnOnce(&mut DeliveryStore, u64, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Option<T>, WriterError> {
        let from = self.window.acked();
        if upto <= from {
            return Ok(None);
        }
        let stream = self.stream.clone();
        let t = self
            .writer
            .run(move |st| {
                st.ack(&stream, upto)?;
                also(st, from, upto)
            })
            .await?;
        self.window.on_ack(upto);
        Ok(Some(t))
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
