//! What a link needs from the network, and no more: send a [`Frame`], receive the next
//! one, probe that the peer is there. The delivery logic (windows, acks, the store, the
//! keepalive's decisions) is written against [`Transport`] and never sees a socket.
//!
//! The relay's WebSocket implements it on both ends (the agent's, over tokio-tungstenite;
//! the hub's, over axum): envelopes travel as binary frames holding their exact signed
//! bytes, acks and refusals as JSON text, probes as WebSocket pings. A NATS JetStream
//! transport implements the same three calls (a subject per direction, say), with the
//! handshake of its own choosing, and the links above it stay as they are.

use crate::link::Frame;
use std::future::Future;

/// Why a transport failed: the link is over (the caller reconnects).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer sent something larger than the transport accepts.
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The peer stopped reading: a send did not finish in time.
    #[error("the peer stopped reading (send timed out)")]
    Stalled,
    /// The connection failed.
    #[error("{0}")]
    Io(String),
}

/// What arrived from the peer.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A frame of the link.
    Frame(Frame),
    /// Something that is not a frame (the link logs it and goes on): why.
    Malformed(String),
    /// Traffic that carries no frame but shows the peer is there: the answer to a probe,
    /// with the probe's token when the transport carries one back, or the peer's own probe.
    Alive(Option<u64>),
    /// The peer closed the connection.
    Closed,
}

/// A connection that carries [`Frame`]s between the two ends of a link.
pub trait Transport: Send {
    /// Sends one frame. An envelope's bytes go as they are (they are what was signed).
    fn send(&mut self, frame: Frame) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends several frames in order, written out together where the transport can (one
    /// flush, so a window of envelopes costs one write instead of one each).
    fn send_all(
        &mut self,
        frames: Vec<Frame>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            for f in frames {
                self.send(f).await?;
            }
            Ok(())
        }
    }

    /// Asks the peer to show it is there; its answer arrives as [`Incoming::Alive`],
    /// carrying `token` back (the hub tells two connections with one key apart this way).
    fn probe(&mut self, token: u64) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The next arrival. Cancel-safe: dropped before it finished, nothing is lost (links
    /// wait on it in a `select!`).
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, TransportError>> + Send;
}

/// Writes `frames` into `sink` in order, converted by `message`, then flushes once; the
/// whole at most `timeout` (a peer that stopped reading must not hang the link). For
/// WebSocket transports, whatever their library.
pub async fn feed_all<S, M>(
    sink: &mut S,
    frames: Vec<Frame>,
    message: impl Fn(WireFrame) -> M,
    timeout: std::time::Duration,
) -> Result<(), TransportError>
where
    S: futures_util::Sink<M> + Unpin,
    S::Error: std::fmt::Display,
{
    use futures_util::SinkExt;
    let write = async {
        for frame in frames {
            sink.feed(message(WireFrame::of(frame)?))
                .await
                .map_err(|e| TransportError::Io(format!("send: {e}")))?;
        }
        sink.flush()
            .await
            .map_err(|e| TransportError::Io(format!("send: {e}")))
    };
    tokio::time::timeout(timeout, write)
        .await
        .map_err(|_| TransportError::Stalled)?
}

/// A frame as a WebSocket carries it: envelopes binary, everything else JSON text.
pub enum WireFrame {
    /// The envelope's exact bytes.
    Binary(Vec<u8>),
    /// An ack or a refusal, as JSON.
    Text(String),
}

impl WireFrame {
    /// How `frame` travels.
    pub fn of(frame: Frame) -> Result<Self, TransportError> {
        match frame {
            Frame::Envelope { bytes } => Ok(Self::Binary(bytes)),
            other => serde_json::to_string(&other)
                .map(Self::Text)
                .map_err(|e| TransportError::Io(format!("cannot encode a frame: {e}"))),
        }
    }
}

/// What a received binary message is: an envelope, unless it is over `limit` bytes.
pub fn binary_in(bytes: Vec<u8>, limit: usize) -> Result<Incoming, TransportError> {
    if bytes.len() > limit {
        return Err(TransportError::TooLarge(bytes.len()));
    }
    Ok(Incoming::Frame(Frame::Envelope { bytes }))
}

/// The token a probe's answer carries back (8 bytes, big-endian), if it has one.
pub fn token_of(payload: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(payload).ok().map(u64::from_be_bytes)
}

/// What a received text message is: an ack or a refusal, or malformed.
pub fn text_in(text: &str) -> Incoming {
    match serde_json::from_str::<Frame>(text) {
        Ok(Frame::Envelope { .. }) => Incoming::Malformed("an envelope sent as text".into()),
        Ok(f) => Incoming::Frame(f),
        Err(e) => Incoming::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::StreamId;
    use crate::keys::KeyPair;

    #[test]
    fn frames_go_binary_or_text_and_come_back_the_same() {
        let key = KeyPair::generate().expect("key");
        let ack = Frame::Ack {
            stream: StreamId::new(key.public(), "i1", "n1", Default::default()),
            upto: 7,
        };
        let WireFrame::Text(t) = WireFrame::of(ack.clone()).expect("encode") else {
            panic!("an ack is text");
        };
        assert_eq!(text_in(&t), Incoming::Frame(ack));
        let env = Frame::Envelope {
            bytes: b"{}".to_vec(),
        };
        let WireFrame::Binary(b) = WireFrame::of(env.clone()).expect("encode") else {
            panic!("an envelope is binary");
        };
        assert_eq!(binary_in(b, 10).expect("in"), Incoming::Frame(env));
        assert!(matches!(
            binary_in(vec![0; 11], 10),
            Err(TransportError::TooLarge(11))
        ));
        assert!(matches!(
            text_in("{\"t\":\"nope\"}"),
            Incoming::Malformed(_)
        ));
        assert_eq!(token_of(&7u64.to_be_bytes()), Some(7));
        assert_eq!(token_of(b""), None);
        let smuggled = serde_json::to_string(&Frame::Envelope { bytes: vec![1] }).expect("json");
        assert!(matches!(text_in(&smuggled), Incoming::Malformed(_)));
    }
}
