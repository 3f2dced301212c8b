//! The relay's WebSocket as the agent's [`Transport`]: envelopes as binary messages, acks
//! and refusals as JSON text, probes as pings. The link in [`super::session`] sees only
//! the trait.

use super::transport::{MAX_FRAME, Ws};
use futures_util::{SinkExt, StreamExt};
use reeve_delivery::link::Frame;
use reeve_delivery::transport::{
    Incoming, Transport, TransportError, WireFrame, binary_in, feed_all, text_in, token_of,
};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A send that cannot hang on a hub (or proxy) that stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection to the hub, after the handshake.
pub struct WsTransport<'a> {
    ws: &'a mut Ws,
}

impl<'a> WsTransport<'a> {
    /// The transport over `ws`.
    pub fn new(ws: &'a mut Ws) -> Self {
        Self { ws }
    }

    async fn send_message(&mut self, m: Message) -> Result<(), TransportError> {
        tokio::time::timeout(SEND_TIMEOUT, self.ws.send(m))
            .await
            .map_err(|_| TransportError::Stalled)?
            .map_err(|e| TransportError::Io(format!("send: {e}")))
    }
}

/// How a frame travels as a WebSocket message.
fn message(w: WireFrame) -> Message {
    match w {
        WireFrame::Binary(b) => Message::Binary(b.into()),
        WireFrame::Text(t) => Message::Text(t.into()),
    }
}

impl Transport for WsTransport<'_> {
    async fn send(&mut self, frame: Frame) -> Result<(), TransportError> {
        self.send_message(message(WireFrame::of(frame)?)).await
    }

    async fn send_all(&mut self, frames: Vec<Frame>) -> Result<(), TransportError> {
        feed_all(self.ws, frames, message, SEND_TIMEOUT).await
    }

    async fn probe(&mut self, token: u64) -> Result<(), TransportError> {
        self.send_message(Message::Ping(token.to_be_bytes().to_vec().into()))
            .await
    }

    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        let Some(m) = self.ws.next().await else {
            return Ok(Incoming::Closed);
        };
        Ok(
            match m.map_err(|e| TransportError::Io(format!("receive: {e}")))? {
                Message::Binary(b) => binary_in(b.to_vec(), MAX_FRAME)?,
                Message::Text(t) => text_in(&t),
                Message::Ping(_) => Incoming::Alive(None),
                Message::Pong(p) => Incoming::Alive(token_of(&p)),
                Message::Close(_) => Incoming::Closed,
                Message::Frame(_) => Incoming::Malformed("a raw frame".into()),
            },
        )
    }
}
