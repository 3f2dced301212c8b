//! A simulated node: the agent's relay side without the rest of the agent, for scenarios
//! that need hundreds or thousands of nodes (1,000 `reeve agent` processes do not fit on
//! two cores). It speaks the real protocol with the real code, the way
//! `crates/agent/src/node/{session.rs,mod.rs}` do:
//! - enrolment through the hub's join API with a one-time token;
//! - the relay WebSocket from `reeve_agent::node::transport::websocket` (TCP, TLS, WS with
//!   the agent's buffer sizes), the mutual handshake (`reeve_delivery::handshake::AgentSide`)
//!   and the hub's time (`HubClock`);
//! - each envelope from the hub verified (`envelope::open`: pinned hub key, any signer —
//!   policy decides at execution), stored in a real SQLite inbox through the delivery
//!   `Writer` (group commit, `synchronous=FULL`), and acknowledged only after that;
//! - released requests executed one at a time in stream order: fetched from the inbox,
//!   verified again, judged by a real `Policy`, answered with a reply that is
//!   authorized and sealed by the node's key and put in the node's outbox in the same
//!   transaction that marks the request done (`DeliveryStore::complete`);
//! - the node's own stream pushed through `link::Outgoing` (window 256, as the agent),
//!   acks from the hub applied; a ping after 45 s without traffic.
//!
//! What it leaves out: the methods' work (`ops.ps` answers an empty service list), the
//! audit event each request adds to the agent's event log and that log's forwarding to
//! the hub, `hello` facts, and reconnection (a scenario connects each node once). Its
//! store is opened on the first envelope, so idle nodes cost no SQLite file or thread.

use crate::util::{now_us, wall_ms};
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use reeve_agent::node::transport::{self, Ws};
use reeve_delivery::clock::HubClock;
use reeve_delivery::envelope::{
    Content, Opened, Payload, Request, Sequenced, StreamId, Trust, authorize, open, seal,
};
use reeve_delivery::handshake::{AgentSide, Challenge, Verdict};
use reeve_delivery::keys::{KeyPair, PublicKey};
use reeve_delivery::link::{Frame, Outgoing};
use reeve_delivery::pipeline::{Pipeline, acks_for};
use reeve_delivery::policy::{Decision, Policy};
use reeve_delivery::store::{ReplyOut, RunState, Seal};
use reeve_delivery::writer::{Writer, WriterError};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OnceCell, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Messages in flight towards the hub (the agent's `WINDOW`).
const WINDOW: usize = 256;
/// Arrivals queued to the store and not yet acknowledged, at most (as the agent).
const PIPELINE: usize = 1024;
/// What one arrival came to once its commit finished.
type Arrival = std::result::Result<(StreamId, u64), WriterError>;

/// First retransmission timeout (the agent's).
const RTO_MS: u64 = 3000;
/// A ping after this long without traffic (the agent's `KEEPALIVE`).
pub const KEEPALIVE: Duration = Duration::from_secs(45);
/// How long a reply lives (the agent's `REPLY_TTL_MS`).
const REPLY_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// Counters shared by every simulated node of a scenario (timestamps in µs of
/// [`now_us`]).
#[derive(Default, Debug)]
pub struct Stats {
    /// Nodes whose handshake the hub welcomed.
    pub connected: AtomicU64,
    /// Envelopes from the hub stored in an inbox and acknowledged.
    pub stored: AtomicU64,
    /// When the first of them was acknowledged.
    pub first_stored_us: AtomicU64,
    /// When the latest of them was acknowledged.
    pub last_stored_us: AtomicU64,
    /// Retransmissions of envelopes already stored (acknowledged again, not run).
    pub duplicates: AtomicU64,
    /// Requests executed (reply in the outbox).
    pub executed: AtomicU64,
    /// Replies the hub acknowledged (stored and applied there).
    pub replies_acked: AtomicU64,
    /// When the latest reply was acknowledged.
    pub last_reply_acked_us: AtomicU64,
    /// Positions released out of order, or requests run out of their send order.
    pub out_of_order: AtomicU64,
    /// Envelopes refused, or requests refused by the policy.
    pub refused: AtomicU64,
    /// Links that ended with an error.
    pub errors: AtomicU64,
    /// The scenario is over: links ending now are not errors.
    pub stopping: AtomicBool,
}

impl Stats {
    fn bump_time(cell: &AtomicU64) {
        cell.fetch_max(now_us(), Ordering::Relaxed);
    }
}

/// What a simulated node needs to know.
#[derive(Clone)]
pub struct Setup {
    /// The URL to connect to (the hub, or a proxy in front of it).
    pub url: String,
    /// The hub's key (pinned).
    pub hub_key: PublicKey,
    /// The operator key its policy names (read-only methods are open to named keys).
    pub operator: (String, PublicKey),
    /// Execute released requests (false: store and acknowledge only); a shared switch.
    pub execute: Arc<AtomicBool>,
    /// Where node stores go (one subdirectory per node).
    pub dir: PathBuf,
}

/// One simulated node.
pub struct SimNode {
    /// Its name.
    pub name: String,
    key: KeyPair,
    setup: Setup,
    policy: Policy,
    store: OnceCell<(Writer, String)>,
    clock: Mutex<HubClock>,
    out_wake: Notify,
    stats: Arc<Stats>,
    exec_tx: mpsc::UnboundedSender<String>,
    exec_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    last_seq: Arc<AtomicU64>,
    last_i: AtomicU64,
    replies_acked: AtomicU64,
}

fn copy_key(k: &KeyPair) -> Result<KeyPair> {
    Ok(KeyPair::from_secret_base64(&k.secret_base64())?)
}

impl SimNode {
    /// A node named `name` with a new key.
    pub fn new(name: &str, setup: Setup, stats: Arc<Stats>) -> Result<Arc<Self>> {
        let policy = Policy::default()
            .with_key(&setup.operator.0, setup.operator.1)
            .with_key("hub", setup.hub_key);
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            name: name.into(),
            key: KeyPair::generate()?,
            setup,
            policy,
            store: OnceCell::new(),
            clock: Mutex::new(HubClock::new(0)),
            out_wake: Notify::new(),
            stats,
            exec_tx,
            exec_rx: Mutex::new(Some(exec_rx)),
            last_seq: Arc::new(AtomicU64::new(0)),
            last_i: AtomicU64::new(0),
            replies_acked: AtomicU64::new(0),
        }))
    }

    /// Enrols through `POST /api/v1/join` with the one-time token `token` (proved, not sent).
    pub async fn join(&self, api: &mut crate::fleet::Api, token: &str) -> Result<()> {
        let t = reeve_delivery::join::JoinToken::decode(token)?;
        let key = self.key.public().to_base64();
        let p = t.prove(&self.name, &key)?;
        let body =
            json!({"node": self.name, "key": key, "token_key": p.token_key, "proof": p.proof});
        let (status, answer) = api.call("POST", "/api/v1/join", Some(&body)).await?;
        if status != 200 {
            bail!("join {}: {status} {answer}", self.name);
        }
        if answer["hub_key"].as_str() != Some(&self.setup.hub_key.to_base64()) {
            bail!("join {}: the hub answered with another key", self.name);
        }
        Ok(())
    }

    fn now(&self) -> u64 {
        let local = wall_ms();
        self.clock.lock().map_or(local, |mut c| c.now(local))
    }

    async fn store(&self) -> Result<&(Writer, String)> {
        self.store
            .get_or_try_init(|| async {
                let path = self.setup.dir.join(&self.name);
                std::fs::create_dir_all(&path)?;
                let db = path.join("delivery.db");
                let mut s = reeve_delivery::store::DeliveryStore::open(&db)?;
                let instance = s.instance()?;
                drop(s);
                Ok::<_, anyhow::Error>((Writer::open(&db)?, instance))
            })
            .await
    }

    fn out_stream(&self, instance: &str) -> StreamId {
        StreamId {
            owner: self.key.public(),
            instance: instance.into(),
            receiver: "hub".into(),
            lane: Default::default(),
        }
    }

    fn verify(
        &self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Opened, reeve_delivery::envelope::EnvelopeError> {
        let hub = self.setup.hub_key;
        let owners = move |k: &PublicKey| *k == hub;
        let signers = |_: &PublicKey| true;
        let trust = Trust {
            me: &self.name,
            owners: &owners,
            signers: &signers,
            now_ms,
        };
        open(bytes, &trust)
    }

    /// Connects once and serves the link until it closes (or the task is dropped).
    pub async fn run(self: Arc<Self>) {
        let rx = self.exec_rx.lock().ok().and_then(|mut r| r.take());
        if let Some(mut rx) = rx {
            let n = self.clone();
            tokio::spawn(async move {
                while let Some(id) = rx.recv().await {
                    if let Err(e) = n.execute(&id).await
                        && !n.stats.stopping.load(Ordering::Relaxed)
                    {
                        eprintln!("{}: request {id} failed: {e:#}", n.name);
                        n.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        if let Err(e) = self.connect_and_serve().await
            && !self.stats.stopping.load(Ordering::Relaxed)
        {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("{}: link ended: {e:#}", self.name);
        }
    }

    async fn connect_and_serve(&self) -> Result<()> {
        let mut ws = transport::websocket(&self.setup.url, None).await?;
        let (side, hello) = AgentSide::start(&self.name, copy_key(&self.key)?, self.setup.hub_key)?;
        send_json(&mut ws, &hello).await?;
        let challenge: Challenge =
            serde_json::from_str(&recv_text(&mut ws).await?).context("malformed challenge")?;
        let answer = side.answer(&challenge, wall_ms())?;
        if let Ok(mut c) = self.clock.lock() {
            c.sync(answer.hub_time_ms, wall_ms());
        }
        send_json(&mut ws, &answer.proof).await?;
        match serde_json::from_str::<Verdict>(&recv_text(&mut ws).await?)
            .context("malformed verdict")?
        {
            Verdict::Welcome { .. } => {}
            Verdict::Refused { reason } => bail!("the hub refused {}: {reason}", self.name),
        }
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        let r = self.serve(&mut ws).await;
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        r
    }

    async fn serve(&self, ws: &mut Ws) -> Result<()> {
        let mut out: Option<Outgoing> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_sent = Instant::now();
        let mut push = true;
        let mut arrivals: Pipeline<Arrival> = Pipeline::new();
        loop {
            if push {
                // The agent reads its outbox here; a node with no store yet has none.
                if let Some((writer, instance)) = self.store.get() {
                    let stream = self.out_stream(instance);
                    let o = out.get_or_insert_with(|| {
                        let mut o = Outgoing::new(stream.clone(), writer.clone(), WINDOW, RTO_MS);
                        o.on_reconnect();
                        o
                    });
                    // Written out together, one flush (as the agent's link does).
                    let mut fed = false;
                    for f in o.poll(wall_ms()).await? {
                        if let Frame::Envelope { bytes } = f {
                            ws.feed(Message::Binary(bytes.into()))
                                .await
                                .context("send")?;
                            fed = true;
                        }
                    }
                    if fed {
                        ws.flush().await.context("send")?;
                        last_sent = Instant::now();
                    }
                }
                push = false;
            }
            tokio::select! {
                m = ws.next(), if arrivals.len() < PIPELINE => {
                    let Some(m) = m else { return Ok(()) };
                    match m.context("receive")? {
                        Message::Binary(b) => {
                            if let Some(refused) = self.take_envelope(&b, &mut arrivals).await? {
                                send_json(ws, &refused).await?;
                                last_sent = Instant::now();
                            }
                        }
                        Message::Text(t) => match serde_json::from_str::<Frame>(&t) {
                            Ok(Frame::Ack { stream: s, upto }) => {
                                if let Some(o) = out.as_mut()
                                    && o.serves(&s)
                                {
                                    let before = self.replies_acked.load(Ordering::Relaxed);
                                    o.on_ack(&s, upto).await?;
                                    if upto > before {
                                        self.replies_acked.store(upto, Ordering::Relaxed);
                                        self.stats.replies_acked.fetch_add(upto - before, Ordering::Relaxed);
                                        Stats::bump_time(&self.stats.last_reply_acked_us);
                                    }
                                    push = true;
                                }
                            }
                            Ok(Frame::Refused { reason }) => {
                                eprintln!("{}: the hub refused a message: {reason}", self.name);
                                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(e) => eprintln!("{}: malformed frame from the hub: {e}", self.name),
                        },
                        Message::Close(_) => return Ok(()),
                        _ => {}
                    }
                }
                done = arrivals.finished() => {
                    for ack in acks_for(done)? {
                        ws.feed(Message::Text(serde_json::to_string(&ack)?.into()))
                            .await
                            .context("send")?;
                    }
                    ws.flush().await.context("send")?;
                    last_sent = Instant::now();
                }
                _ = self.out_wake.notified() => push = true,
                _ = tick.tick() => {
                    push = true;
                    if last_sent.elapsed() > KEEPALIVE {
                        ws.send(Message::Ping(Vec::new().into())).await.context("keepalive")?;
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    /// One envelope of the hub's stream, as the agent takes it: verified here, queued to
    /// the store; counted and released right after its commit (in the writer thread, even
    /// if the link broke meanwhile), acked when its commit finished. Returns the answer to
    /// a refused one.
    async fn take_envelope(
        &self,
        bytes: &[u8],
        arrivals: &mut Pipeline<Arrival>,
    ) -> Result<Option<Frame>> {
        let opened = match self.verify(bytes, self.now()) {
            Ok(o) => o,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let reason = e.to_string();
                return Ok(Some(Frame::Refused { reason }));
            }
        };
        let id = match &opened.payload {
            Payload::Request { request, .. } => Some(request.id.clone()),
            Payload::Skip { .. } => None,
        };
        let (writer, _) = self.store().await?;
        let stream = opened.stream.clone();
        let (stats, last_seq) = (self.stats.clone(), self.last_seq.clone());
        let (exec_tx, execute) = (self.exec_tx.clone(), self.setup.execute.clone());
        let commit = writer.receive_queued(
            opened.stream,
            opened.seq,
            id,
            bytes.to_vec(),
            move |receipt| {
                for r in &receipt.released {
                    if let Some(s) = r.seq {
                        let prev = last_seq.swap(s, Ordering::Relaxed);
                        if s != prev + 1 {
                            stats.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if receipt.duplicate {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = stats.first_stored_us.compare_exchange(
                        0,
                        now_us(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    stats.stored.fetch_add(1, Ordering::Relaxed);
                    Stats::bump_time(&stats.last_stored_us);
                }
                if execute.load(Ordering::Relaxed) {
                    for id in receipt.released.iter().filter_map(|r| r.id.clone()) {
                        let _ = exec_tx.send(id);
                    }
                }
            },
        );
        arrivals.push(async move { commit.await.map(|r| (stream, r.acked)) });
        Ok(None)
    }

    /// Runs stored request `id` and writes its reply (the agent's `Node::execute`).
    async fn execute(&self, id: &str) -> Result<()> {
        let (writer, instance) = self.store().await?;
        let idc = id.to_string();
        let Some((env, state)) = writer.run(move |s| s.inbox_get(&idc)).await? else {
            return Ok(());
        };
        if state == RunState::Done {
            return Ok(());
        }
        let opened = self
            .verify(&env, 0)
            .map_err(|e| anyhow!("a stored request no longer verifies: {e}"))?;
        let Payload::Request {
            request,
            authorizer,
        } = opened.payload
        else {
            return Ok(());
        };
        // Requests carry their send order in args.i (when the scenario sets it).
        if let Some(i) = request.args.get("i").and_then(Value::as_u64)
            && i != self.last_i.swap(i, Ordering::Relaxed) + 1
        {
            self.stats.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        let reply = match self.policy.decide(&request.method, &authorizer) {
            Decision::Refuse(why) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                json!({"status": "refused", "error": why})
            }
            Decision::Allow(_) => answer(&request),
        };
        let (r, seal) = self.own_reply(instance, &request, reply)?;
        let stream = self.out_stream(instance);
        let id = request.id.clone();
        writer
            .run(move |s| {
                s.complete(
                    &id,
                    Some((
                        ReplyOut {
                            stream: &stream,
                            id: &r.id,
                            expires_at_ms: r.expires_at_ms,
                        },
                        seal,
                    )),
                )
            })
            .await?;
        self.stats.executed.fetch_add(1, Ordering::Relaxed);
        self.out_wake.notify_one();
        Ok(())
    }

    /// The reply to `request`, signed and sealed by this node (the agent's `own_request`).
    fn own_reply(&self, instance: &str, request: &Request, body: Value) -> Result<(Request, Seal)> {
        let method = request
            .reply
            .as_ref()
            .map_or("console", |r| r.method.as_str());
        let mut r = Request::new(
            &self.name,
            "hub",
            method,
            body,
            self.now().saturating_add(REPLY_TTL_MS),
        );
        r.in_reply_to = Some(request.id.clone());
        let key = copy_key(&self.key)?;
        let auth = authorize(&r, &key)?;
        let stream = self.out_stream(instance);
        let seal: Seal = Box::new(move |seq| {
            seal(
                &Sequenced {
                    stream,
                    seq: Some(seq),
                    content: Content::Request { auth },
                },
                &key,
            )
            .unwrap_or_default()
        });
        Ok((r, seal))
    }
}

/// The reply body of the cheap methods a simulated node answers.
fn answer(request: &Request) -> Value {
    match request.method.as_str() {
        "ops.ps" => json!({"status": "ok", "services": []}),
        "hello" => json!({"status": "ok", "facts": {"agent_version": "sim", "services": 0}}),
        other => json!({"status": "error", "error": format!("unknown method {other:?}")}),
    }
}

async fn recv_text(ws: &mut Ws) -> Result<String> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
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

async fn send_json(ws: &mut Ws, v: &impl serde::Serialize) -> Result<()> {
    ws.send(Message::Text(serde_json::to_string(v)?.into()))
        .await
        .context("send")
}
