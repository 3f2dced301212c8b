//! The agent as a node of a fleet (DESIGN.md §2.1, §2.2): its identity, its one relay
//! connection to the hub, and the execution of what arrives.
//!
//! Delivery: the hub's stream arrives as sealed envelopes; each is verified (pinned hub
//! key as owner, a policy-named signer as authorizer, hub-adjusted time for expiry),
//! stored in the inbox and only then acknowledged. Execution: stored requests run one at
//! a time in stream order; `exec` is fenced (marked running, durably) before it starts and
//! runs under the detached runner; the reply is written to the node's own outbound stream
//! in the same transaction that marks the request done. After a restart, requests that
//! never started run, and fenced ones are collected or answered `interrupted`.
//!
//! Files: [`identity`] (`node.toml`, `node.key`), [`transport`] (TCP/proxy/TLS/WebSocket),
//! [`cert_pin`] (the hub certificate's fingerprint, pinned by the operator's API calls),
//! [`wire`] (that WebSocket as a delivery transport),
//! [`session`] (handshake and the link loop), [`methods`], [`runner`].

pub mod cert_pin;
pub mod enrol;
pub mod forward;
pub mod hub_key;
pub mod identity;
pub mod keepalive;
pub mod lanes;
pub mod methods;
pub mod replies;
pub mod rotate;
pub mod runner;
pub mod session;
pub mod stream;
pub mod transport;
pub mod wire;

use crate::events::{EventLog, event};
use crate::supervisor::Supervisor;
use anyhow::{Context, Result};
use reeve_delivery::clock::HubClock;
use reeve_delivery::envelope::{
    Content, Payload, ReplyTo, Request, Sequenced, StreamId, Trust, authorize, open, seal,
};
use reeve_delivery::keys::{KeyPair, PublicKey};
use reeve_delivery::policy::{Decision, Policy};
use reeve_delivery::store::{ReplyOut, RunState, Seal, skip_sealer};
use reeve_delivery::writer::Writer;
use reeve_proto::event::EventKind;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

/// How long a node's own messages (replies, facts) live before they are dead-lettered.
pub const REPLY_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// A node joined to a hub.
pub struct Node {
    pub(crate) ident: identity::Identity,
    pub(crate) writer: Writer,
    /// What this node sends as; replaced when its key is rotated ([`rotate`]).
    pub(crate) own: std::sync::RwLock<Arc<Own>>,
    /// The policy file as parsed (the hub's keys are added in `hub`).
    pub(crate) policy_file: Policy,
    /// The hub keys trusted, and the policy naming them; replaced when the hub rotates
    /// its key ([`hub_key`]).
    pub(crate) hub: std::sync::RwLock<hub_key::HubTrust>,
    pub(crate) ctx: Arc<methods::Ctx>,
    pub(crate) out_wake: Notify,
    pub(crate) clock: Mutex<HubClock>,
    pub(crate) connected: AtomicBool,
    /// Set once the hub confirmed this node's leave: the link stays down.
    pub(crate) left: AtomicBool,
    /// Wakes the link to close after the leave.
    pub(crate) leave_now: Notify,
    /// Closes the link so that it connects again at once (a key rotation to present).
    pub(crate) relink: Notify,
    /// The hub refused the current key while a rotation was pending: the next link
    /// presents the new key.
    pub(crate) present_next: AtomicBool,
    /// Wakes the expiry sweep at once (the hub refused something of ours as expired).
    pub(crate) expire_now: Notify,
    /// The adaptive keepalive; what it learned outlives each link.
    pub(crate) keepalive: Mutex<keepalive::Keepalive>,
    exec_tx: mpsc::UnboundedSender<lanes::Job>,
    exec_rx: Mutex<Option<mpsc::UnboundedReceiver<lanes::Job>>>,
}

/// What this node sends as: its key and its store's instance (both change when the key is
/// rotated, and always together).
pub(crate) struct Own {
    /// The node's key: owner of its streams, authorizer of its own requests.
    pub(crate) key: Arc<KeyPair>,
    /// The delivery store's instance.
    pub(crate) instance: String,
}

impl Own {
    /// The stream this identity owns towards the hub.
    pub(crate) fn stream(&self) -> StreamId {
        StreamId {
            owner: self.key.public(),
            instance: self.instance.clone(),
            receiver: "hub".into(),
            lane: Default::default(),
        }
    }
}

/// A request in `ops.ps`'s list for as long as this lives.
struct Listed<'a>(&'a methods::Ctx, String);

impl<'a> Listed<'a> {
    fn new(ctx: &'a methods::Ctx, id: &str, entry: Value) -> Self {
        if let Ok(mut r) = ctx.running.lock() {
            r.insert(id.to_string(), entry);
        }
        Self(ctx, id.to_string())
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.0.running.lock() {
            r.remove(&self.1);
        }
    }
}

/// The method of `request`'s replies (`console` unless it names one).
fn reply_method(request: &Request) -> &str {
    request
        .reply
        .as_ref()
        .map_or("console", |r: &ReplyTo| r.method.as_str())
}

/// A stored request, read back to run.
struct Loaded {
    request: Box<reeve_delivery::envelope::Request>,
    authorizer: reeve_delivery::keys::PublicKey,
    state: RunState,
}

fn local_ms() -> u64 {
    crate::events::now_ms()
}

/// The policy file of a data directory.
pub fn policy_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("policy.toml")
}

impl Node {
    /// The node of this data directory, or None when it has not joined a hub.
    pub fn open(
        data_dir: &Path,
        sup: Arc<Supervisor>,
        log: EventLog,
        modules: Arc<crate::modules::Modules>,
        updater: Arc<crate::update::Updater>,
    ) -> Result<Option<Arc<Self>>> {
        let Some((ident, mut key)) = identity::load(data_dir)? else {
            return Ok(None);
        };
        let keepalive_min = ident.file.keepalive_min()?;
        let ppath = policy_path(data_dir);
        let policy = match std::fs::read_to_string(&ppath) {
            Ok(text) => Policy::parse(&text).with_context(|| format!("{}", ppath.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Policy::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", ppath.display())),
        };
        let keys = hub_key::HubKeys {
            current: ident.hub_key,
            previous: ident.hub_key_previous,
        };
        let hub = hub_key::HubTrust {
            policy: Arc::new(keys.policy(&policy)),
            keys,
        };
        let path = data_dir.join("delivery.db");
        let mut store = reeve_delivery::store::DeliveryStore::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let instance = store.instance()?;
        // A rotation the hub recorded, whose streams were renewed but whose key file was
        // not swapped yet (the agent stopped in between): finish it.
        if let Some(p) = identity::pending_rotation(data_dir)?
            && store.owns_streams(&p.key.public())?
        {
            identity::finish_rotation(data_dir, &p.key)?;
            key = p.key;
        }
        // Hub time never goes below what this node last knew (a node may boot in 1970):
        // what it sends before its first handshake gets a sensible expiry.
        let floor = store.clock_floor()?;
        store
            .conn()
            .execute_batch(replies::SCHEMA)
            .context("cannot create the node's tables")?;
        drop(store);
        let writer =
            Writer::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(methods::Ctx {
            sup,
            log,
            data_dir: data_dir.to_path_buf(),
            node: ident.file.name.clone(),
            modules,
            updater,
            running: Default::default(),
        });
        Ok(Some(Arc::new(Self {
            ident,
            writer,
            own: std::sync::RwLock::new(Arc::new(Own {
                key: Arc::new(key),
                instance,
            })),
            policy_file: policy,
            hub: std::sync::RwLock::new(hub),
            ctx,
            out_wake: Notify::new(),
            clock: Mutex::new(HubClock::new(floor)),
            connected: AtomicBool::new(false),
            left: AtomicBool::new(false),
            leave_now: Notify::new(),
            relink: Notify::new(),
            present_next: AtomicBool::new(false),
            keepalive: Mutex::new(keepalive_min.map_or_else(
                keepalive::Keepalive::default,
                keepalive::Keepalive::with_min,
            )),
            expire_now: Notify::new(),
            exec_tx,
            exec_rx: Mutex::new(Some(exec_rx)),
        })))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.ident.file.name
    }

    /// Is the relay connection up?
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Hub-adjusted time now.
    pub fn now(&self) -> u64 {
        let local = local_ms();
        self.clock.lock().map_or(local, |mut c| c.now(local))
    }

    /// What this node sends as now (read key and stream from one snapshot).
    pub(crate) fn own(&self) -> Arc<Own> {
        match self.own.read() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The stream this node owns towards the hub.
    pub fn out_stream(&self) -> StreamId {
        self.own().stream()
    }

    /// The node's key now.
    pub(crate) fn key(&self) -> Arc<KeyPair> {
        self.own().key.clone()
    }

    /// Opens an envelope from the hub's stream; `now_ms` 0 skips the expiry check (for
    /// requests verified when they arrived).
    pub(crate) fn verify(
        &self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<reeve_delivery::envelope::Opened, reeve_delivery::envelope::EnvelopeError> {
        let (hub, now) = (self.hub_keys(), self.now());
        let owners = move |k: &PublicKey| hub.accepts(k, now);
        // Any authorizer is stored and acknowledged (the hub sequenced it); the policy
        // decides at execution, and a refusal is replied, so a stream never blocks on it.
        let signers = |_: &PublicKey| true;
        let trust = Trust {
            me: self.name(),
            owners: &owners,
            signers: &signers,
            now_ms,
        };
        open(bytes, &trust)
    }

    /// A request from this node, signed and sealed by a closure given its `seq`.
    fn own_request(
        &self,
        method: &str,
        args: Value,
        in_reply_to: Option<&str>,
    ) -> Result<(Request, StreamId, Seal)> {
        let mut r = Request::new(
            self.name(),
            "hub",
            method,
            args,
            self.now().saturating_add(REPLY_TTL_MS),
        );
        r.in_reply_to = in_reply_to.map(str::to_string);
        let own = self.own();
        let key = own.key.clone();
        let auth = authorize(&r, &key)?;
        let stream = own.stream();
        let sealed = stream.clone();
        let seal: Seal = Box::new(move |seq| {
            seal(
                &Sequenced {
                    stream: sealed,
                    seq: Some(seq),
                    content: Content::Request { auth },
                },
                &key,
            )
            .unwrap_or_default()
        });
        Ok((r, stream, seal))
    }

    /// Sends a message of this node's own to the hub (`hello`, `error.log`): durable in the
    /// outbox when this returns.
    pub async fn send_to_hub(&self, method: &str, args: Value) -> Result<String> {
        let (r, stream, seal) = self.own_request(method, args, None)?;
        let id = r.id.clone();
        self.writer
            .enqueue(stream, r.id, r.expires_at_ms, seal)
            .await?;
        self.out_wake.notify_one();
        Ok(id)
    }

    /// Leaves the fleet: a `leave` message (signed, after everything this node sent
    /// before) asks the hub to remove it; once the hub acknowledged it, the link closes for
    /// good and the node forgets the hub and deletes its key. Waits up to `wait` for that;
    /// returns false if the hub has not confirmed yet (the leave then completes whenever
    /// it does).
    ///
    /// Event batches travel on a lane of their own, which the hub stops taking once it
    /// removed the node: the leave is queued after the batches queued so far were
    /// acknowledged, or after half of `wait` when the hub cannot be reached (then the
    /// batches still in flight may be refused).
    pub async fn leave(self: &Arc<Self>, wait: std::time::Duration) -> Result<bool> {
        let started = std::time::Instant::now();
        self.drain_events(wait / 2).await?;
        let wait = wait.saturating_sub(started.elapsed());
        let (r, stream, seal) = self.own_request("leave", json!({}), None)?;
        let seq = self
            .writer
            .enqueue(stream, r.id, r.expires_at_ms, seal)
            .await?;
        self.out_wake.notify_one();
        self.note(
            "leaving the fleet: waiting for the hub to confirm",
            json!({"seq": seq}),
        )
        .await;
        let node = self.clone();
        let done = tokio::spawn(async move { node.finish_leave(seq).await });
        match tokio::time::timeout(wait, done).await {
            Ok(Ok(r)) => r.map(|()| true),
            Ok(Err(e)) => Err(anyhow::anyhow!("leave: {e}")),
            Err(_) => Ok(false),
        }
    }

    /// Waits (at most `within`) until the hub acknowledged every event batch queued so far.
    async fn drain_events(&self, within: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let events = self.own().stream().on(forward::EVENT_LANE);
        let e = events.clone();
        let target = self.writer.run(move |st| st.last_seq(&e)).await?;
        loop {
            let e = events.clone();
            if self.writer.run(move |st| st.acked(&e)).await? >= target
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn finish_leave(&self, seq: u64) -> Result<()> {
        loop {
            let stream = self.out_stream();
            let first = self.writer.run(move |st| st.unacked(&stream, 1)).await?;
            if first.first().is_none_or(|(s, _)| *s > seq) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.left.store(true, Ordering::Relaxed);
        self.leave_now.notify_one();
        identity::forget_hub(&self.ctx.data_dir)?;
        self.note(
            "left the fleet: the hub removed this node; its key is deleted",
            Value::Null,
        )
        .await;
        tracing::info!("left the fleet");
        Ok(())
    }

    /// Records an event of the node's own (actor `agent`) in the event log; best effort.
    async fn note(&self, message: &str, detail: Value) {
        let _ = self
            .ctx
            .log
            .record(event(None, EventKind::Message, "agent", message, detail))
            .await;
    }

    /// The hub acknowledged less of our stream than it had before: it lost what it had
    /// stored (restored from a backup). The lost positions are skip markers now; say so.
    pub(crate) async fn record_hub_loss(&self, lost: &reeve_delivery::store::Rewound) {
        let n = lost.was - lost.upto;
        let message = format!(
            "the hub lost {n} message(s) of ours it had acknowledged (positions {}..={} on the {} lane; restored from a backup?): skip markers take their places",
            lost.upto + 1,
            lost.was,
            lost.stream.lane.as_str()
        );
        tracing::warn!("{message}");
        self.note(
            &message,
            json!({"lost": {"from": lost.upto + 1, "to": lost.was, "lane": lost.stream.lane.as_str()}}),
        )
        .await;
    }

    /// Has this node left the fleet?
    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::Relaxed)
    }

    async fn audit(&self, req: &Request, signer: &PublicKey, outcome: &str, detail: Value) {
        let who = self
            .policy()
            .name_of(signer)
            .unwrap_or("unknown")
            .to_string();
        // The hub signs dashboard actions for an operator: name both.
        let actor = match &req.on_behalf_of {
            Some(op) => format!("key:{who} for {op}"),
            None => format!("key:{who}"),
        };
        let from = match &req.on_behalf_of {
            Some(op) => format!("{} for {op}", req.from),
            None => req.from.clone(),
        };
        let ev = event(
            None,
            EventKind::Message,
            &actor,
            format!("{} from {from} ({who}): {outcome}", req.method),
            json!({"id": req.id, "method": req.method, "from": req.from, "signer": signer.fingerprint(), "on_behalf_of": req.on_behalf_of, "outcome": outcome, "detail": detail}),
        );
        if let Err(e) = self.ctx.log.record(ev).await {
            tracing::warn!("cannot record a message event: {e:#}");
        }
    }

    /// Runs stored request `id` and writes its reply ([`lanes`] decides when).
    async fn execute(self: &Arc<Self>, id: &str) -> Result<()> {
        match self.load(id).await? {
            Some(loaded) => self.run_loaded(id, loaded).await,
            None => Ok(()),
        }
    }

    /// Stored request `id`, checked again against today's trust (a key revoked since it
    /// arrived no longer counts); `None` when it is done or not a request.
    async fn load(&self, id: &str) -> Result<Option<Loaded>> {
        let idc = id.to_string();
        let Some((env, state)) = self.writer.run(move |s| s.inbox_get(&idc)).await? else {
            return Ok(None);
        };
        if state == RunState::Done {
            return Ok(None);
        }
        let opened = self
            .verify(&env, 0)
            .context("a stored request no longer verifies")?;
        Ok(match opened.payload {
            Payload::Request {
                request,
                authorizer,
            } => Some(Loaded {
                request,
                authorizer,
                state,
            }),
            Payload::Skip { .. } => None,
        })
    }

    /// Runs a loaded request and writes its reply.
    async fn run_loaded(self: &Arc<Self>, id: &str, loaded: Loaded) -> Result<()> {
        let Loaded {
            request,
            authorizer,
            state,
        } = loaded;
        // A reply to a request of ours, brought back by the hub: handled by its reply
        // method, never answered.
        if request.in_reply_to.is_some()
            && replies::is_reply_method(&request.method)
            && self.is_hub_key(&authorizer)
        {
            if let Err(e) = self.take_reply(&request).await {
                tracing::warn!(id = %request.id, "reply not taken: {e:#}");
            }
            let idc = id.to_string();
            self.writer.run(move |s| s.complete(&idc, None)).await?;
            return Ok(());
        }
        // Listed by `ops.ps` while it runs.
        let _listed = Listed::new(
            &self.ctx,
            &request.id,
            json!({
                "id": request.id,
                "method": request.method,
                "from": request.from,
                "started_ms": local_ms(),
            }),
        );
        // What to reply, and what the audit trail says about it.
        let (reply, audit) = match self.policy().decide(&request.method, &authorizer) {
            Decision::Refuse(why) => (
                json!({"status": "refused", "error": why}),
                json!({"reason": why}),
            ),
            Decision::Allow(_) if methods::at_most_once(&request.method) => {
                let dir = runner::run_dir(&self.ctx.data_dir, &request.id);
                let resumed =
                    state == RunState::Running && !self.fenced_but_never_started(id, &dir).await;
                if state == RunState::Ready {
                    let idc = id.to_string();
                    let boot = runner::boot_id();
                    if !self.writer.run(move |s| s.fence(&idc, boot)).await? {
                        return Ok(());
                    }
                }
                let out = match (request.method.as_str(), resumed) {
                    ("exec.stream", _) => self.exec_stream(&request, resumed).await,
                    (_, true) => {
                        let timeout = request
                            .method_timeout_ms
                            .map_or(methods::DEFAULT_TIMEOUT, std::time::Duration::from_millis);
                        json!(runner::collect(&dir, timeout).await)
                    }
                    _ => self.call(&request, &authorizer).await,
                };
                let detail = json!({"exit_code": out.get("exit_code")});
                (out, detail)
            }
            Decision::Allow(_) if stream::follows(&request) => {
                (self.tail_follow(&request).await, Value::Null)
            }
            Decision::Allow(_) => (self.call(&request, &authorizer).await, Value::Null),
        };
        let outcome = match reply.get("status").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => "?".into(),
        };
        // The audit record and the reply's commit are independent: neither waits for the
        // other's fsync.
        let (_, done) = tokio::join!(
            self.audit(&request, &authorizer, &outcome, audit),
            self.complete(&request, reply)
        );
        if request.method == "agent.update" && done.is_ok() {
            // The reply is stored: the next agent will not run this request again.
            let actor = format!("key:{}", request.from);
            self.ctx
                .updater
                .switch_held(self.is_connected(), &actor, &self.ctx.log)
                .await;
        }
        done
    }

    /// Was request `id` fenced in this boot by an agent that stopped before its command
    /// began? Then starting it now is its first run, not a re-run (see [`runner`]).
    async fn fenced_but_never_started(&self, id: &str, dir: &std::path::Path) -> bool {
        let idc = id.to_string();
        let boot = match self.writer.run(move |s| s.fence_boot(&idc)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(id, "cannot read the fence's boot: {e:#}");
                return false;
            }
        };
        let fresh =
            boot.is_some() && boot.as_deref() == runner::boot_id() && runner::never_started(dir);
        if fresh {
            tracing::info!(
                id,
                "fenced before an agent stop but never started: starting it now"
            );
        }
        fresh
    }

    /// Runs an allowed method (not at most once: those are fenced first).
    async fn call(&self, request: &Request, authorizer: &PublicKey) -> Value {
        methods::call(
            &self.ctx,
            request,
            &format!("key:{}", request.from),
            self.is_hub_key(authorizer),
        )
        .await
    }

    async fn complete(&self, request: &Request, body: Value) -> Result<()> {
        let (r, stream, seal) = self.own_request(reply_method(request), body, Some(&request.id))?;
        let id = request.id.clone();
        self.writer
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
        self.out_wake.notify_one();
        Ok(())
    }

    /// Sends a reply to `request` ahead of its final one (an `exec.stream` chunk): durable
    /// in the outbox when this returns.
    pub(crate) async fn send_progress(&self, request: &Request, body: Value) -> Result<()> {
        let (r, stream, seal) = self.own_request(reply_method(request), body, Some(&request.id))?;
        self.writer
            .enqueue(stream, r.id, r.expires_at_ms, seal)
            .await?;
        self.out_wake.notify_one();
        Ok(())
    }

    /// Hands stored requests to their lanes' runners.
    pub(crate) fn release(&self, jobs: impl IntoIterator<Item = lanes::Job>) {
        for job in jobs {
            let _ = self.exec_tx.send(job);
        }
    }
}

/// Starts the node's tasks: execution (first what a previous run left unfinished) and the
/// relay link.
pub async fn spawn(node: Arc<Node>) -> Result<()> {
    let unfinished = node.writer.run(|s| s.inbox_unfinished()).await?;
    node.release(unfinished.into_iter().map(lanes::Job::unfinished));
    let rx = node.exec_rx.lock().ok().and_then(|mut r| r.take());
    if let Some(rx) = rx {
        tokio::spawn(lanes::dispatch(node.clone(), rx));
    }
    tokio::spawn(forward::run(node.clone()));
    tokio::spawn(expire_loop(node.clone()));
    tokio::spawn(session::run(node));
    Ok(())
}

/// Dead-letters what this node could not deliver before its expiry (hub-adjusted time):
/// a signed skip marker takes its place so the node's stream moves on, and an event says so.
async fn expire_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = node.expire_now.notified() => {}
        }
        let key = node.key();
        let now = node.now();
        let floor = node.clock.lock().map_or(0, |c| c.floor());
        let gone = node
            .writer
            .run(move |s| {
                s.raise_clock_floor(floor)?;
                s.expire(now, skip_sealer(&key, "expired"))
            })
            .await;
        match gone {
            Ok(list) if !list.is_empty() => {
                for e in &list {
                    let ev = event(
                        None,
                        EventKind::Message,
                        "agent",
                        format!(
                            "message {} expired before the hub took it (dead letter)",
                            e.id
                        ),
                        json!({"id": e.id, "seq": e.seq}),
                    );
                    let _ = node.ctx.log.record(ev).await;
                }
                node.out_wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("expiry sweep: {e:#}"),
        }
    }
}
