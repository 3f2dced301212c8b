//! The relay link: connect (with jittered exponential back-off), the mutual handshake, then
//! both directions of delivery over the one WebSocket until it breaks. The handshake speaks
//! WebSocket; the delivery loop (`serve`) only the [`Transport`] trait.

use super::keepalive::{self, Action, Keepalive};
use super::lanes::Job;
use super::wire::{SEND_TIMEOUT, WsTransport};
use super::{Node, forward, identity, transport};
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use reeve_delivery::envelope::{Payload, StreamId};
use reeve_delivery::handshake::{AgentSide, Challenge, Verdict};
use reeve_delivery::keys::KeyPair;
use reeve_delivery::link::{Frame, Outgoing};
use reeve_delivery::pipeline::{Pipeline, acks_for};
use reeve_delivery::rotation::NodeRotation;
use reeve_delivery::store::stream_key;
use reeve_delivery::transport::{Incoming, Transport};
use reeve_delivery::writer::WriterError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Messages in flight towards the hub.
const WINDOW: usize = 256;
/// Event batches in flight towards the hub (their own lane, `forward.rs`): a few keep a
/// backlog moving at several thousand events per second even over a 600 ms round trip,
/// and hold at most ~1 MB ahead of a reply on the link.
const EVENT_WINDOW: usize = 4;
/// First retransmission timeout (a new connection resends at once; see the hub's).
const RTO_MS: u64 = 30_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Keeps the link up for the life of the agent.
pub async fn run(node: Arc<Node>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        if node.has_left() {
            tracing::info!("hub link closed for good: this node left the fleet");
            return;
        }
        let result = connect_and_serve(&node).await;
        // A link that got as far as the hub's welcome starts the back-off over: the hub
        // is there, and a broken link should come back at once.
        if node.connected.swap(false, Ordering::Relaxed) {
            backoff = Duration::from_millis(250);
        }
        match result {
            Ok(()) => tracing::info!("hub link closed"),
            Err(e) => tracing::warn!("hub link: {e:#}"),
        }
        let jitter = rand::random_range(0.5..1.5);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn recv_text(ws: &mut transport::Ws) -> Result<String> {
    loop {
        let m = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("handshake timed out"))?
            .ok_or_else(|| anyhow!("the hub closed the connection during the handshake"))??;
        match m {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => bail!("unexpected frame during the handshake: {other:?}"),
        }
    }
}

async fn send(ws: &mut transport::Ws, m: Message) -> Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, ws.send(m))
        .await
        .map_err(|_| anyhow!("the hub stopped reading (send timed out)"))?
        .context("send")
}

async fn send_json(ws: &mut transport::Ws, v: &impl serde::Serialize) -> Result<()> {
    send(ws, Message::Text(serde_json::to_string(v)?.into())).await
}

async fn connect_and_serve(node: &Arc<Node>) -> Result<()> {
    let id = &node.ident;
    let mut ws = transport::websocket(&id.hub_url, id.file.proxy.as_deref()).await?;
    let own = node.own();
    let hub_key = node.hub_key();
    let pending = identity::pending_rotation(&node.ctx.data_dir)?
        .filter(|p| p.key.public() != own.key.public());
    // After the hub refused the current key while a rotation was pending, present the new
    // key itself: the hub recorded the rotation and the old key's overlap ended before
    // this node heard back.
    let present_next = node.present_next.swap(false, Ordering::Relaxed) && pending.is_some();
    let presented = match (&pending, present_next) {
        (Some(p), true) => &p.key,
        _ => &*own.key,
    };
    let key = KeyPair::from_secret_base64(&presented.secret_base64())?;
    let (side, mut hello) = AgentSide::start(node.name(), key, hub_key)?;
    // Otherwise a key rotation waiting for the hub goes with the Hello, signed by both keys.
    if let Some(p) = pending.as_ref().filter(|_| !present_next) {
        hello.rotate = Some(NodeRotation::new(
            node.name(),
            &own.key,
            &p.key,
            &hub_key,
            p.overlap_ms,
        )?);
    }
    send_json(&mut ws, &hello).await?;
    let text = recv_text(&mut ws).await?;
    let challenge: Challenge = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => match serde_json::from_str::<Verdict>(&text) {
            Ok(Verdict::Refused { reason }) => {
                if pending.is_some() && !present_next {
                    node.present_next.store(true, Ordering::Relaxed);
                }
                bail!("the hub refused this node: {reason}");
            }
            _ => return Err(e).context("malformed challenge"),
        },
    };
    let answer = side.answer(&challenge, node.now())?;
    let floor = node.clock.lock().map_or(0, |mut c| {
        c.sync(answer.hub_time_ms, super::local_ms());
        c.floor()
    });
    node.writer
        .run(move |st| st.raise_clock_floor(floor))
        .await?;
    send_json(&mut ws, &answer.proof).await?;
    match serde_json::from_str::<Verdict>(&recv_text(&mut ws).await?)
        .context("malformed verdict")?
    {
        Verdict::Welcome { node_key, .. } => {
            if let Some(e) = &answer.repin {
                node.repin(challenge.hub_key, e).await?;
            }
            if let Some(p) = pending
                && (present_next || node_key == Some(p.key.public()))
            {
                node.adopt_key(p.key).await?;
            }
        }
        Verdict::Refused { reason } => bail!("the hub refused this node: {reason}"),
    }
    node.connected.store(true, Ordering::Relaxed);
    tracing::info!(hub = %id.hub_url, "connected to the hub");
    node.settle_streams().await?;
    serve(node, &mut WsTransport::new(&mut ws)).await
}

/// Arrivals queued to the store and not yet acknowledged, at most this many (then the
/// link stops reading until the store caught up).
const PIPELINE: usize = 1024;

/// What one arrival came to once its commit finished.
type Arrival = Result<(StreamId, u64), WriterError>;

async fn serve(node: &Arc<Node>, link: &mut impl Transport) -> Result<()> {
    let mut out = Outgoing::new(node.out_stream(), node.writer.clone(), WINDOW, RTO_MS)
        .with_lane_window(forward::EVENT_LANE, EVENT_WINDOW, RTO_MS)
        .with_owner(node.key());
    out.resume().await?;
    out.on_reconnect();
    let mut last_sent = Instant::now();
    let mut push = true;
    let mut arrivals: Pipeline<Arrival> = Pipeline::new();
    // The keepalive's state is the node's: what one link learned serves the next.
    let keepalive = |f: &mut dyn FnMut(&mut Keepalive)| {
        if let Ok(mut k) = node.keepalive.lock() {
            f(&mut k);
        }
    };
    keepalive(&mut |k| k.on_connect());
    loop {
        if push {
            let frames = out.poll(super::local_ms()).await?;
            if !frames.is_empty() {
                link.send_all(frames).await?;
                last_sent = Instant::now();
            }
            push = false;
        }
        tokio::select! {
            m = link.recv(), if arrivals.len() < PIPELINE => {
                keepalive(&mut |k| k.on_frame());
                match m? {
                    Incoming::Frame(Frame::Envelope { bytes }) => {
                        if let Some(refused) = from_hub(node, bytes, &mut arrivals) {
                            link.send(refused).await?;
                            last_sent = Instant::now();
                        }
                    }
                    Incoming::Frame(Frame::Ack { stream, upto }) => {
                        out.on_ack(&stream, upto).await?;
                        for lost in out.take_rewound() {
                            node.record_hub_loss(&lost).await;
                        }
                        push = true;
                    }
                    Incoming::Frame(Frame::Refused { reason }) => {
                        tracing::warn!("the hub refused a message of ours: {reason}");
                        // If it expired on hub time, the sweep dead-letters it now (a skip
                        // takes its place) rather than the stream waiting for the next
                        // one; for any other reason the sweep finds nothing.
                        node.expire_now.notify_one();
                    }
                    Incoming::Malformed(e) => tracing::warn!("malformed frame from the hub: {e}"),
                    Incoming::Alive(_) => {}
                    Incoming::Closed => return Ok(()),
                }
            }
            done = arrivals.finished() => {
                link.send_all(acks_for(done)?).await?;
                last_sent = Instant::now();
            }
            _ = node.out_wake.notified() => push = true,
            _ = node.leave_now.notified() => return Ok(()),
            _ = node.relink.notified() => return Ok(()),
            _ = tokio::time::sleep_until(next_wake(node, &out, last_sent).into()) => {
                push = true;
                if node.has_left() {
                    return Ok(());
                }
                let mut action = Action::Wait;
                keepalive(&mut |k| action = k.tick(Instant::now(), last_sent));
                match action {
                    Action::Ping => {
                        link.probe(0).await?;
                        last_sent = Instant::now();
                    }
                    Action::Dead => {
                        let mut wait = keepalive::PONG_WAIT;
                        keepalive(&mut |k| wait = k.pong_wait());
                        bail!("the hub did not answer a ping within {wait:?}: the link is dead (dropped on the way?)")
                    }
                    Action::Wait => {}
                }
            }
        }
    }
}

/// Sleep at most this long with nothing to do (a safety net: every enqueue wakes the link).
const IDLE_POLL: Duration = Duration::from_secs(60);

/// When the link has timed work next: the keepalive's next check or a retransmission
/// falling due, whichever is first (an idle link sleeps through, instead of waking every
/// second).
fn next_wake(node: &Node, out: &Outgoing, last_sent: Instant) -> Instant {
    let now = Instant::now();
    let mut at = now + IDLE_POLL;
    if let Ok(k) = node.keepalive.lock() {
        at = at.min(k.next_check(last_sent));
    }
    if let Some(due) = out.next_deadline() {
        at = at.min(now + Duration::from_millis(due.saturating_sub(super::local_ms())));
    }
    at
}

/// One envelope of the hub's stream: verified here, then queued to the store. What it
/// releases is handed to the executor right after its commit (in the writer thread, even
/// if the link broke meanwhile); the ack follows when the commit finished. Returns the
/// answer to a refused one.
fn from_hub(node: &Arc<Node>, bytes: Vec<u8>, arrivals: &mut Pipeline<Arrival>) -> Option<Frame> {
    let opened = match node.verify(&bytes, node.now()) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("refused a message from the hub: {e}");
            return Some(Frame::Refused {
                reason: e.to_string(),
            });
        }
    };
    let id = match &opened.payload {
        Payload::Request { request, .. } => Some(request.id.clone()),
        Payload::Skip { .. } => None,
    };
    let stream = opened.stream.clone();
    let (key, lane) = (stream_key(&stream), stream.lane);
    let releaser = node.clone();
    let commit = node
        .writer
        .receive_queued(opened.stream, opened.seq, id, bytes, move |receipt| {
            releaser.release(receipt.released.iter().filter_map(|r| {
                let id = r.id.clone()?;
                Some(Job::new(id, key.clone(), lane, r.seq.is_some()))
            }));
        });
    arrivals.push(async move { commit.await.map(|r| (stream, r.acked)) });
    None
}
