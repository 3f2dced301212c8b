//! One task per connected node (DESIGN.md §2.1 "relay"): the mutual Ed25519 handshake in
//! the first frames, then both directions of delivery over the one WebSocket:
//! - hub → node: the node's stream is pushed through a sliding window from the durable
//!   outbox (what a node misses while offline waits there: store-and-forward); the node's
//!   cumulative acks mark messages `delivered`;
//! - node → hub: envelopes the node sequenced (replies, `hello`, `error.log`) are verified,
//!   stored in the hub's inbox, acknowledged, then applied.
//!
//! Frames: binary = one sealed envelope; text = JSON ([`Frame`] acks and refusals, and the
//! handshake). The handshake speaks WebSocket; the delivery loop (`session`) only the
//! [`Transport`] trait, which `wire.rs` implements on the WebSocket. A second live connection with a node's key is refused and reported (a cloned
//! machine). Frames larger than [`MAX_FRAME`] close the connection.

use crate::db::fleet;
use crate::{Hub, Live, now_ms};
use anyhow::{Context, Result, anyhow, bail};
use axum::extract::ws::{Message, WebSocket};
use reeve_delivery::envelope::StreamId;
use reeve_delivery::envelope::{Payload, Trust, open};
use reeve_delivery::handshake::{Challenge, Hello, HubSide, Proof, Verdict};
use reeve_delivery::keys::PublicKey;
use reeve_delivery::lane::Lane;
use reeve_delivery::link::{Frame, Outgoing};
use reeve_delivery::pipeline::{Pipeline, acks_for};
use reeve_delivery::rotation::{MAX_OVERLAP_MS, NodeRotation};
use reeve_delivery::transport::{Incoming, Transport};
use reeve_delivery::writer::WriterError;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest frame accepted (an envelope is at most 1 MiB; some room for framing).
pub const MAX_FRAME: usize = (1 << 20) + 4096;
/// Messages in flight per stream: throughput over a link is at most WINDOW / RTT, so
/// 2,048 keeps a 600 ms satellite link above 3,000 messages/s. The receiver holds up to
/// [`reeve_delivery::store::WINDOW`] (4,096) ahead of a gap. Costs nothing while idle
/// (the in-flight table fills only with what was sent).
pub const WINDOW: usize = 2048;
/// First retransmission timeout. TCP loses nothing within a connection, and a new
/// connection resends at once, so this only covers a peer that silently stopped acking.
pub const RTO_MS: u64 = 30_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// A node's arrivals queued to the store and not yet acknowledged, at most (then the link
/// stops reading until the store caught up).
const PIPELINE: usize = 1024;

/// What one arrival came to once its commit finished.
type Arrival = Result<(StreamId, u64), WriterError>;

async fn recv_text(ws: &mut WebSocket) -> Result<String> {
    loop {
        let m = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.recv())
            .await
            .map_err(|_| anyhow!("handshake timed out"))?
            .ok_or_else(|| anyhow!("closed during the handshake"))??;
        match m {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => bail!("unexpected frame during the handshake"),
        }
    }
}

async fn send(ws: &mut WebSocket, m: Message) -> Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, ws.send(m))
        .await
        .map_err(|_| anyhow!("the node stopped reading (send timed out)"))?
        .context("send")
}

async fn send_json(ws: &mut WebSocket, v: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(v)?;
    send(ws, Message::Text(text.into())).await
}

async fn refuse(hub: &Hub, ws: &mut WebSocket, node: Option<&str>, kind: &str, reason: String) {
    hub.metrics.refusal(kind);
    tracing::warn!(node, %reason, "relay connection refused");
    let _ = send_json(
        ws,
        &Verdict::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = ws.send(Message::Close(None)).await;
    let (node, kind) = (node.map(str::to_string), kind.to_string());
    let now = now_ms();
    let _ = hub
        .writer
        .run(move |s| Ok(fleet(s).log_error(now, node.as_deref(), &kind, &reason)?))
        .await;
    hub.bump();
}

/// Serves one relay connection until it closes.
pub async fn handle(hub: Arc<Hub>, mut ws: WebSocket) {
    let hello: Hello = match recv_text(&mut ws)
        .await
        .and_then(|t| Ok(serde_json::from_str(&t)?))
    {
        Ok(h) => h,
        Err(e) => return refuse(&hub, &mut ws, None, "refused", format!("bad hello: {e:#}")).await,
    };
    let keys = known_keys(&hub, &hello.node);
    let (side, challenge): (HubSide, Challenge) = match HubSide::challenge(
        &hello,
        &hub.key,
        hub.endorsed.as_ref(),
        |_, k| keys.contains(k),
        now_ms(),
    ) {
        Ok(v) => v,
        Err(e) => {
            return refuse(&hub, &mut ws, Some(&hello.node), "refused", e.to_string()).await;
        }
    };
    if send_json(&mut ws, &challenge).await.is_err() {
        return;
    }
    let proof: Proof = match recv_text(&mut ws)
        .await
        .and_then(|t| Ok(serde_json::from_str(&t)?))
    {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                &hub,
                &mut ws,
                Some(&hello.node),
                "refused",
                format!("bad proof: {e:#}"),
            )
            .await;
        }
    };
    let node = match side.finish(&proof) {
        Ok(n) => n,
        Err(e) => return refuse(&hub, &mut ws, Some(&hello.node), "refused", e.to_string()).await,
    };
    let mut enrolled_now = None;
    if let Some(r) = &hello.rotate {
        match rotate(&hub, &node, hello.node_key, r).await {
            Ok(k) => enrolled_now = Some(k),
            Err(e) => {
                let reason = format!("key rotation refused: {e:#}");
                return refuse(&hub, &mut ws, Some(&node), "refused", reason).await;
            }
        }
    }
    // Read again after a rotation: the new key owns the node's streams from now on.
    let keys = match enrolled_now {
        Some(_) => known_keys(&hub, &node),
        None => keys,
    };
    let conn_id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let live = Arc::new(Live {
        conn_id,
        wake: tokio::sync::Notify::new(),
        probe: tokio::sync::Notify::new(),
        kick: tokio::sync::Notify::new(),
        removed: tokio::sync::Notify::new(),
        probe_nonce: 0.into(),
        pong_nonce: 0.into(),
    });
    let clash = !register(&hub, &node, &live).await;
    if clash {
        let reason = format!(
            "node {node} is already connected with this key: a second live connection is refused (a cloned machine or disk?)"
        );
        return refuse(&hub, &mut ws, Some(&node), "clone", reason).await;
    }
    touch(&hub, &node).await;
    hub.bump();
    tracing::info!(%node, "node connected");
    let result = match send_json(
        &mut ws,
        &Verdict::Welcome {
            hub_time_ms: now_ms(),
            node_key: enrolled_now,
        },
    )
    .await
    {
        Ok(()) => {
            let mut link = WsTransport::new(&mut ws);
            session(&hub, &mut link, &node, &keys, &live).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::info!(%node, "node connection ended: {e:#}");
    }
    if let Ok(mut l) = hub.live.lock()
        && l.get(&node).is_some_and(|x| x.conn_id == conn_id)
    {
        l.remove(&node);
    }
    touch(&hub, &node).await;
    hub.bump();
}

/// The keys node `name` may connect and sign with now: its enrolled one and those whose
/// rotation overlap is open (empty for an unknown node).
fn known_keys(hub: &Hub, name: &str) -> Vec<PublicKey> {
    let now = now_ms();
    hub.read(|f| Ok(f.node_keys(name, now)?))
        .unwrap_or_default()
        .iter()
        .filter_map(|k| PublicKey::from_base64(k).ok())
        .collect()
}

/// Records node `node`'s move from `from` (the key it just proved) to the rotation's key;
/// returns the key now enrolled. Asking again for a rotation that is recorded already
/// (the node did not get the answer) changes nothing.
async fn rotate(hub: &Hub, node: &str, from: PublicKey, r: &NodeRotation) -> Result<PublicKey> {
    let (n, to, now) = (node.to_string(), r.key, now_ms());
    let until = now.saturating_add(r.overlap_ms.min(MAX_OVERLAP_MS));
    hub.writer
        .run(move |s| {
            let f = fleet(s);
            let current = f.node_key(&n)?;
            if current.as_deref() == Some(to.to_base64().as_str()) {
                return Ok(Ok(to));
            }
            if current.as_deref() != Some(from.to_base64().as_str()) {
                return Ok(Err(anyhow!(
                    "the key it connected with is not its enrolled one (rotated already?)"
                )));
            }
            f.rotate_node_key(&n, &from.to_base64(), &to.to_base64(), until)?;
            let message = format!(
                "node key rotated from {} to {}; the old key is accepted until {} (ms since the epoch)",
                from.fingerprint(),
                to.fingerprint(),
                until
            );
            f.log_error(now, Some(&n), "key_rotated", &message)?;
            Ok(Ok(to))
        })
        .await?
        .inspect(|k| tracing::info!(%node, key = %k.fingerprint(), "node key rotated"))
}

/// How long a connection that already holds a node's key has to answer a ping before a
/// new connection with that key replaces it (a node that rebooted leaves a dead one).
const PROBE: Duration = Duration::from_secs(3);

/// Registers `live` as `node`'s connection. If another one holds the key, it is probed:
/// alive means the newcomer is a clone (false is returned); dead means it is replaced.
async fn register(hub: &Hub, node: &str, live: &Arc<Live>) -> bool {
    let old = {
        let Ok(mut l) = hub.live.lock() else {
            return false;
        };
        match l.get(node) {
            Some(old) => old.clone(),
            None => {
                l.insert(node.to_string(), live.clone());
                return true;
            }
        }
    };
    let nonce = rand_nonce();
    old.probe_nonce.store(nonce, Ordering::Relaxed);
    old.probe.notify_one();
    let deadline = tokio::time::Instant::now() + PROBE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Only the answer to this very ping counts (not frames that were already queued).
        if old.pong_nonce.load(Ordering::Relaxed) == nonce {
            return false;
        }
        if hub.live.lock().is_ok_and(|l| !l.contains_key(node)) {
            break;
        }
    }
    old.kick.notify_one();
    let Ok(mut l) = hub.live.lock() else {
        return false;
    };
    tracing::info!(%node, "a dead connection was replaced by a new one");
    l.insert(node.to_string(), live.clone());
    true
}

fn rand_nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b) | 1
}

async fn touch(hub: &Hub, node: &str) {
    let (node, now) = (node.to_string(), now_ms());
    let _ = hub
        .writer
        .run(move |s| Ok(fleet(s).node_seen(&node, now)?))
        .await;
}

async fn session(
    hub: &Arc<Hub>,
    link: &mut impl Transport,
    node: &str,
    keys: &[PublicKey],
    live: &Live,
) -> Result<()> {
    let mut out = Outgoing::new(
        hub.stream_to(node, Lane::Ordered),
        hub.writer.clone(),
        WINDOW,
        RTO_MS,
    )
    .with_owner(hub.key.clone());
    out.resume().await?;
    out.on_reconnect();

    let mut push = true;
    let mut arrivals: Pipeline<Arrival> = Pipeline::new();
    loop {
        if push {
            let frames = out.poll(now_ms()).await?;
            let n = frames.len();
            link.send_all(frames).await?;
            (0..n).for_each(|_| hub.metrics.frame_out());
            push = false;
        }
        tokio::select! {
            m = link.recv(), if arrivals.len() < PIPELINE => {
                hub.metrics.frame_in();
                match m? {
                    Incoming::Frame(Frame::Envelope { bytes }) => {
                        if let Some(refused) = from_node(hub, node, keys, &bytes, &mut arrivals).await? {
                            link.send(refused).await?;
                            hub.metrics.frame_out();
                        }
                    }
                    Incoming::Frame(Frame::Ack { stream, upto }) if out.serves(&stream) => {
                        delivered(hub, &mut out, &stream, upto).await?;
                        for lost in out.take_rewound() {
                            node_lost(hub, &lost).await?;
                        }
                        push = true;
                    }
                    Incoming::Frame(Frame::Refused { reason }) => {
                        hub.metrics.refusal("refused_by_node");
                        let (n, now) = (node.to_string(), now_ms());
                        hub.writer
                            .run(move |s| Ok(fleet(s).log_error(now, Some(&n), "refused_by_node", &reason)?))
                            .await?;
                        hub.bump();
                    }
                    Incoming::Frame(Frame::Ack { .. }) => {}
                    Incoming::Malformed(e) => {
                        link.send(Frame::Refused { reason: format!("malformed frame: {e}") }).await?;
                    }
                    Incoming::Alive(token) => {
                        if let Some(t) = token {
                            live.pong_nonce.store(t, Ordering::Relaxed);
                        }
                    }
                    Incoming::Closed => return Ok(()),
                }
            }
            done = arrivals.finished() => {
                let acks = acks_for(done)?;
                let n = acks.len();
                link.send_all(acks).await?;
                (0..n).for_each(|_| hub.metrics.frame_out());
            }
            _ = live.wake.notified() => push = true,
            _ = live.probe.notified() => {
                link.probe(live.probe_nonce.load(Ordering::Relaxed)).await?;
            }
            _ = live.kick.notified() => bail!("replaced by a newer connection with this node's key"),
            _ = live.removed.notified() => bail!("the node was removed from the fleet"),
            _ = tokio::time::sleep(wait_for_deadline(&out)) => push = true,
        }
    }
}

/// Sleep at most this long when nothing is in flight (a safety net; every enqueue wakes
/// the link anyway).
const IDLE_POLL: Duration = Duration::from_secs(60);

/// How long the link may sleep before a retransmission falls due: an idle link wakes
/// only every [`IDLE_POLL`] (2,000 idle nodes used to cost 2,000 outbox reads a second).
fn wait_for_deadline(out: &Outgoing) -> Duration {
    out.next_deadline().map_or(IDLE_POLL, |at| {
        Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_POLL)
    })
}

/// Applies the node's ack and marks the messages it newly covers delivered, in one commit
/// (only that range: a scan of the node's whole history per ack grew with it).
async fn delivered(hub: &Hub, out: &mut Outgoing, stream: &StreamId, upto: u64) -> Result<()> {
    let (node, now) = (stream.receiver.clone(), now_ms());
    let n = out
        .on_ack_with(stream, upto, move |s, lane, (from, upto)| {
            Ok(fleet(s).mark_delivered(&node, lane, from, upto, now)?)
        })
        .await?;
    if let Some(n) = n.filter(|n| *n > 0) {
        hub.metrics.delivered(n as u64);
        hub.bump();
    }
    Ok(())
}

/// The node acknowledged less of our stream than it had before: it lost what it stored.
/// The positions are skip markers now ([`Outgoing::resume`]); the error log says so.
async fn node_lost(hub: &Hub, lost: &reeve_delivery::store::Rewound) -> Result<()> {
    let (node, now) = (lost.stream.receiver.clone(), now_ms());
    let message = format!(
        "the node lost {} message(s) of ours it had acknowledged (positions {}..={} on the {} lane); skip markers take their places",
        lost.was - lost.upto,
        lost.upto + 1,
        lost.was,
        lost.stream.lane.as_str()
    );
    hub.writer
        .run(move |s| Ok(fleet(s).log_error(now, Some(&node), "lost_by_node", &message)?))
        .await?;
    hub.bump();
    Ok(())
}

/// Takes one envelope the node sequenced: verified here, then stored and applied in one
/// writer job queued at once (acknowledged when its commit finished: [`stored`]). Returns
/// the answer to a refused one.
async fn from_node(
    hub: &Arc<Hub>,
    node: &str,
    keys: &[PublicKey],
    bytes: &[u8],
    arrivals: &mut Pipeline<Arrival>,
) -> Result<Option<Frame>> {
    let now = now_ms();
    let checked = {
        // The node's key, and during a rotation's overlap the one it rotated from.
        let owners = |k: &PublicKey| keys.contains(k);
        let trust = Trust {
            me: "hub",
            owners: &owners,
            signers: &owners,
            now_ms: now,
        };
        open(bytes, &trust)
    };
    let opened = match checked {
        Ok(o) => o,
        Err(e) => {
            let (n, reason) = (node.to_string(), e.to_string());
            let r2 = reason.clone();
            hub.writer
                .run(move |s| Ok(fleet(s).log_error(now, Some(&n), "refused", &r2)?))
                .await?;
            hub.metrics.refusal("refused");
            return Ok(Some(Frame::Refused { reason }));
        }
    };
    let id = match &opened.payload {
        Payload::Request { request, .. } => Some(request.id.clone()),
        Payload::Skip { .. } => None,
    };
    // Storing the arrival and applying what it released are one transaction: a crash
    // can never leave a stored-and-acknowledged request unapplied.
    let (stream, seq, envelope, n) = (
        opened.stream.clone(),
        opened.seq,
        bytes.to_vec(),
        node.to_string(),
    );
    let fw = Forwarder {
        key: hub.key.clone(),
        instance: hub.instance.clone(),
    };
    // What the arrival changed is announced right after its commit, in the writer thread:
    // a link that breaks before the ack must not lose the wake-ups and live events.
    let announcer = hub.clone();
    let commit = hub.writer.run_queued(
        move |s| {
            let receipt = s.receive(&reeve_delivery::store::Arrival {
                stream: &stream,
                seq,
                id: id.as_deref(),
                envelope: &envelope,
            })?;
            let released: Vec<String> = receipt
                .released
                .iter()
                .filter_map(|r| r.id.clone())
                .collect();
            let applied = apply(s, &fw, &n, released)?;
            Ok((stream, receipt.acked, applied))
        },
        move |(_, _, applied): &(StreamId, u64, Applied)| {
            for e in &applied.fresh {
                let _ = announcer.events.send(Arc::new(e.clone()));
            }
            for n in &applied.wake {
                announcer.wake(n);
            }
            announcer.bump();
        },
    );
    arrivals.push(async move { commit.await.map(|(stream, upto, _)| (stream, upto)) });
    Ok(None)
}

mod apply;
mod wire;
use apply::{Applied, Forwarder, apply};
use wire::{SEND_TIMEOUT, WsTransport};
