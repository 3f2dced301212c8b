//! The reeve hub (DESIGN.md §2.6): nodes join with one-time tokens and keep one relay
//! connection each; operators' requests are sequenced into one durable stream per node and
//! forwarded at once or stored until the node is back (store-and-forward); replies and the
//! central error log come back the same way. The HTTP API serves operators and the CLI.
//!
//! Code map: [`identity`] (key and certificate), [`db`] (tables, behind a storage trait;
//! SQLite and its migrations in `db::sqlite`), [`relay`] (one task per
//! connected node), [`api`] (HTTP), [`openapi`] (its OpenAPI document), [`metrics`]
//! (Prometheus), [`serve`] (listeners), [`admin`] (local commands that work on the data
//! directory: join tokens, operators), [`backup`] (backup, restore, the data directory's
//! lock).

pub mod admin;
pub mod api;
pub mod backup;
pub mod dashboard;
pub mod db;
pub mod identity;
pub mod metrics;
pub mod openapi;
pub mod output;
pub mod registry;
pub mod rekey;
pub mod relay;
pub mod removal;
pub mod retention;
pub mod serve;

use anyhow::{Context, Result, bail};
use db::{FleetStore, fleet};
use reeve_delivery::envelope::{Authorized, Content, Sequenced, StreamId, check_authorized, seal};
use reeve_delivery::keys::{KeyPair, PublicKey};
use reeve_delivery::lane::{Lane, lane_of};
use reeve_delivery::store::parse_stream_key;
use reeve_delivery::writer::Writer;
use rusqlite::Connection;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

/// The hub's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where its key, certificate and database live.
    pub data_dir: PathBuf,
    /// The TLS listener (relay, API, dashboard).
    pub listen: SocketAddr,
    /// An optional plain-HTTP listener for the API and dashboard (no relay), meant for
    /// loopback or behind a reverse proxy.
    pub http: Option<SocketAddr>,
    /// The URL nodes use to reach the hub (put in join tokens); default from `listen`.
    pub url: Option<String>,
    /// A module registry folder to serve at `/registry/` (for `reeve dev`).
    pub registry_dir: Option<PathBuf>,
    /// How long the hub keeps events, settled messages and errors.
    pub retention: retention::Retention,
}

/// A node's live connection.
pub(crate) struct Live {
    pub(crate) conn_id: u64,
    /// New messages for the node: push now.
    pub(crate) wake: Notify,
    /// Ping the node now (another connection claims its key).
    pub(crate) probe: Notify,
    /// Close this connection: it was found dead and a new one replaces it.
    pub(crate) kick: Notify,
    /// Close this connection: the node was removed (or left).
    pub(crate) removed: Notify,
    /// The nonce of the last probe ping sent on it.
    pub(crate) probe_nonce: std::sync::atomic::AtomicU64,
    /// The nonce of the last pong received on it.
    pub(crate) pong_nonce: std::sync::atomic::AtomicU64,
}

/// The running hub's shared state.
pub struct Hub {
    pub(crate) key: Arc<KeyPair>,
    /// While the hub's key is rotated: the previous key's endorsement of this one, sent in
    /// every handshake until its overlap ends.
    pub(crate) endorsed: Option<reeve_delivery::rotation::HubRotation>,
    pub(crate) instance: String,
    pub(crate) writer: Writer,
    pub(crate) read: Mutex<Connection>,
    pub(crate) live: Mutex<HashMap<String, Arc<Live>>>,
    pub(crate) changes: watch::Sender<u64>,
    /// Node events as they arrive (for live streams).
    pub(crate) events: tokio::sync::broadcast::Sender<Arc<serde_json::Value>>,
    pub(crate) next_conn: std::sync::atomic::AtomicU64,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: metrics::Metrics,
    /// Held while the hub serves from its data directory (restore refuses it).
    _lock: backup::DataDirLock,
}

/// Milliseconds since the epoch (the hub's clock is the fleet's reference).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The database file in a hub data directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("hub.db")
}

/// The page cache of the hub's writer connection, in KiB (SQLite's default is 2 MiB; with
/// tens of thousands of messages in flight the writer thread, the hub's bottleneck, read
/// pages back from the kernel at every commit).
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// How long a message lives by default before it is dead-lettered (30 days).
pub const DEFAULT_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

impl Hub {
    /// Opens the hub's state in `dir` (creating it).
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = backup::DataDirLock::acquire(dir)?;
        let id = identity::load_or_create(dir)?;
        let path = db_path(dir);
        let mut store = reeve_delivery::store::DeliveryStore::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        db::migrate(store.conn())?;
        let instance = store.instance().context("cannot read the hub's instance")?;
        drop(store);
        let writer = Writer::open_with_cache(&path, Some(WRITER_CACHE_KIB))
            .with_context(|| format!("cannot open {}", path.display()))?;
        let read =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        read.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Arc::new(Self {
            key: Arc::new(id.key),
            endorsed: id.endorsed,
            instance,
            writer,
            read: Mutex::new(read),
            live: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
            events: tokio::sync::broadcast::channel(1024).0,
            next_conn: std::sync::atomic::AtomicU64::new(1),
            metrics: metrics::Metrics::new(),
            _lock: lock,
        }))
    }

    /// The hub's public key (nodes pin it).
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Runs `f` on the hub's tables through the read connection.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn FleetStore) -> Result<T>) -> Result<T> {
        let c = self
            .read
            .lock()
            .map_err(|_| anyhow::anyhow!("hub read lock poisoned"))?;
        f(&*c)
    }

    /// One message's record.
    pub fn message(&self, id: &str) -> Result<Option<db::MessageRow>> {
        self.read(|f| Ok(f.message(id)?))
    }

    /// Is `node` connected now?
    pub fn is_online(&self, node: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(node))
    }

    pub(crate) fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The hub's stream towards `node` on `lane`.
    pub fn stream_to(&self, node: &str, lane: Lane) -> StreamId {
        StreamId::new(self.key.public(), &self.instance, node, lane)
    }

    /// Accepts an authorized request for its node: checks the signature and that the
    /// target is enrolled, then puts it in the node's stream (durable when this returns:
    /// "accepted") and wakes the node's connection. `sender` is the operator's name.
    pub async fn accept(&self, auth: Authorized, sender: &str) -> Result<(String, u64)> {
        let request = check_authorized(&auth).context("refused")?;
        self.accept_checked(auth, request, sender).await
    }

    /// [`Hub::accept`] for a request whose authorization the caller checked already
    /// (`check_authorized` gave `request`): one signature check per request is enough.
    pub(crate) async fn accept_checked(
        &self,
        auth: Authorized,
        request: reeve_delivery::envelope::Request,
        sender: &str,
    ) -> Result<(String, u64)> {
        let now = now_ms();
        if request.expires_at_ms <= now {
            bail!("refused: request {} has already expired", request.id);
        }
        if self.read(|f| Ok(f.node_key(&request.to)?))?.is_none() {
            bail!("refused: no node named {:?} is enrolled", request.to);
        }
        let lane = lane_of(&request);
        let stream = self.stream_to(&request.to, lane);
        let key = self.key.clone();
        let (id, node, method) = (
            request.id.clone(),
            request.to.clone(),
            request.method.clone(),
        );
        let sender = sender.to_string();
        let (s2, id2) = (stream.clone(), id.clone());
        let seq = self
            .writer
            .run(move |s| {
                if fleet(s).message_exists(&id2)? {
                    return Ok(None);
                }
                let seq = s.enqueue(&s2, &id2, request.expires_at_ms, |seq| {
                    seal(
                        &Sequenced {
                            stream: s2.clone(),
                            seq: Some(seq),
                            content: Content::Request { auth },
                        },
                        &key,
                    )
                    .unwrap_or_default()
                })?;
                fleet(s).insert_message(&db::NewMessage {
                    id: &id2,
                    node: &node,
                    lane,
                    seq: Some(seq),
                    method: &method,
                    sender: &sender,
                    from_node: false,
                    created_ms: now,
                    expires_at_ms: request.expires_at_ms,
                })?;
                Ok(Some(seq))
            })
            .await
            .context("cannot store the message")?;
        let Some(seq) = seq else {
            bail!("refused: a message with id {id} exists already (a replay?)");
        };
        self.metrics.message_accepted();
        self.wake(&stream.receiver);
        self.bump();
        Ok((id, seq))
    }

    pub(crate) fn wake(&self, node: &str) {
        if let Some(l) = self.live.lock().ok().and_then(|l| l.get(node).cloned()) {
            l.wake.notify_one();
        }
    }

    /// Dead-letters what expired: a skip marker takes its place, the message is marked
    /// `expired` and the central error log says so.
    pub async fn expire(&self) -> Result<usize> {
        let key = self.key.clone();
        let now = now_ms();
        let expired = self
            .writer
            .run(move |s| {
                let gone = s.expire(now, reeve_delivery::store::skip_sealer(&key, "expired"))?;
                for e in &gone {
                    let node = parse_stream_key(&e.stream_key).map(|s| s.receiver);
                    let f = fleet(s);
                    f.set_message_state(&e.id, "expired")?;
                    f.log_error(
                        now,
                        node.as_deref(),
                        "dead_letter",
                        &format!("message {} (seq {}) expired before delivery; a skip marker replaces it", e.id, e.seq),
                    )?;
                }
                Ok(gone.into_iter().filter_map(|e| parse_stream_key(&e.stream_key)).map(|s| s.receiver).collect::<Vec<_>>())
            })
            .await?;
        self.metrics.dead_lettered(expired.len() as u64);
        for n in &expired {
            self.wake(n);
        }
        if !expired.is_empty() {
            self.bump();
        }
        Ok(expired.len())
    }

    /// Purges the undelivered messages with these ids on behalf of `by`: each becomes a
    /// dead letter (state `purged`, an error log entry) and a signed skip marker takes its
    /// place so its stream moves on. Returns the ids purged; the others were not (or no
    /// longer) waiting in the outbox.
    pub async fn purge(&self, ids: Vec<String>, by: &str) -> Result<Vec<String>> {
        let key = self.key.clone();
        let now = now_ms();
        let by = by.to_string();
        let gone = self
            .writer
            .run(move |s| {
                let reason = format!("purged by {by}");
                let gone = s.purge(&ids, now, reeve_delivery::store::skip_sealer(&key, &reason))?;
                for e in &gone {
                    let node = parse_stream_key(&e.stream_key).map(|s| s.receiver);
                    let f = fleet(s);
                    f.set_message_state(&e.id, "purged")?;
                    f.log_error(
                        now,
                        node.as_deref(),
                        "purged",
                        &format!("message {} (seq {}) {reason} before delivery; a skip marker replaces it", e.id, e.seq),
                    )?;
                }
                Ok(gone)
            })
            .await?;
        for e in &gone {
            if let Some(stream) = parse_stream_key(&e.stream_key) {
                self.wake(&stream.receiver);
            }
        }
        if !gone.is_empty() {
            self.bump();
        }
        Ok(gone.into_iter().map(|e| e.id).collect())
    }
}

/// A started hub.
pub struct Running {
    /// The hub's state.
    pub hub: Arc<Hub>,
    /// Where the TLS listener is bound.
    pub tls_addr: SocketAddr,
    /// Where the plain-HTTP listener is bound, if any.
    pub http_addr: Option<SocketAddr>,
    /// The URL put in join tokens.
    pub url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the hub: opens its state, binds its listeners, starts the expiry sweep and the
/// hourly retention pass.
pub async fn start(config: &Config) -> Result<Running> {
    let hub = Hub::open(&config.data_dir)?;
    let id = identity::load_or_create(&config.data_dir)?;
    let acceptor = serve::tls_acceptor(&id)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let tls_addr = listener.local_addr()?;
    let with_registry = |r: axum::Router| match &config.registry_dir {
        Some(d) => r.merge(registry::routes(d.clone())),
        None => r,
    };
    let mut tasks = vec![tokio::spawn(serve::tls(
        listener,
        acceptor,
        with_registry(api::router(hub.clone(), true)),
    ))];
    let mut http_addr = None;
    if let Some(addr) = config.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        http_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(serve::plain(
            l,
            with_registry(api::router(hub.clone(), false)),
        )));
    }
    let h = hub.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Err(e) = h.expire().await {
                tracing::warn!("expiry sweep failed: {e:#}");
            }
        }
    }));
    let (h, keep) = (hub.clone(), config.retention);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match h.prune(keep).await {
                Ok(p) if p != retention::Pruned::default() => tracing::info!(
                    events = p.events,
                    messages = p.messages,
                    errors = p.errors,
                    keys = p.keys,
                    "retention: pruned the hub's history"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention failed: {e:#}"),
            }
        }
    }));
    let url = config
        .url
        .clone()
        .unwrap_or_else(|| format!("https://{tls_addr}"));
    Ok(Running {
        hub,
        tls_addr,
        http_addr,
        url,
        tasks,
    })
}
