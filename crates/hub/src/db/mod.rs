//! The hub's own tables — nodes, join tokens, operators and their retired keys, messages,
//! streamed output, forwarded events, the central error log — behind one trait,
//! [`FleetStore`]: every read and write the hub does on them is one of its methods, and the
//! rest of the hub sees only the trait (`Hub::read` hands out a `&dyn FleetStore`, writer
//! jobs reach it through [`fleet`]). [`sqlite`] implements it for a `rusqlite::Connection`
//! and holds the schema and its versioned migrations ([`migrate`]).
//!
//! The tables live in the same SQLite file as the hub's delivery outbox and inbox
//! (`reeve_delivery::store`), so that a message's record and its place in a node's stream
//! are written in one transaction: writes go through the delivery writer (group commit),
//! whose jobs call the trait on the store's own connection; reads use a second connection
//! (WAL).
//!
//! A PostgreSQL backend would implement [`FleetStore`] (the SQL is kept portable: standard
//! SQL plus `ON CONFLICT` upserts, which PostgreSQL has too) and its own migrations. What it
//! would still need is not behind this trait: the delivery store's outbox and inbox, which
//! live in the SQLite file and are written in the same transaction as these tables (the
//! writer's jobs get a `DeliveryStore`, not a `FleetStore`). Moving the hub to PostgreSQL
//! means moving those too, or giving up that one transaction.

pub mod sqlite;

pub use sqlite::{LATEST, migrate};

use reeve_delivery::lane::Lane;
use reeve_delivery::store::{DeliveryStore, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// A failed operation on the hub's tables: what was being done, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}")]
pub struct FleetError {
    /// What was being done ("read nodes", "record message", …).
    pub what: &'static str,
    /// Why (the backend's own error).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl FleetError {
    /// An error of the backend while doing `what`.
    pub fn new(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what,
            source: source.into(),
        }
    }
}

/// Lets writer jobs use `?` on the trait's methods.
impl From<FleetError> for StoreError {
    fn from(e: FleetError) -> Self {
        StoreError::Backend {
            what: e.what,
            source: e.source,
        }
    }
}

/// What the trait's methods return.
pub type FleetResult<T> = std::result::Result<T, FleetError>;

/// The hub's tables inside a writer job: the delivery store's own connection, so what the
/// job writes there commits with what it does to the outbox and inbox.
pub fn fleet(s: &DeliveryStore) -> &dyn FleetStore {
    s.conn()
}

/// Hex SHA-256 of a secret (tokens are stored only as digests).
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every operation the hub does on its tables. Object-safe and synchronous: the hub calls
/// it on its read connection and inside the delivery writer's jobs (in their transaction).
/// Times are ms since the epoch.
pub trait FleetStore {
    // Nodes.

    /// The key (base64) enrolled under node `name`.
    fn node_key(&self, name: &str) -> FleetResult<Option<String>>;
    /// Nodes by name, `limit` from `offset`, optionally those whose name contains `search`
    /// (literally: no wildcards).
    fn nodes(&self, search: Option<&str>, offset: u64, limit: u64) -> FleetResult<Vec<NodeRow>>;
    /// How many nodes [`FleetStore::nodes`] would list without paging.
    fn count_nodes(&self, search: Option<&str>) -> FleetResult<u64>;
    /// The names of the nodes whose name contains `search`, in order (for filters the
    /// database cannot apply, like "online").
    fn node_names(&self, search: Option<&str>) -> FleetResult<Vec<String>>;
    /// One node.
    fn node(&self, name: &str) -> FleetResult<Option<NodeRow>>;
    /// Records the facts (JSON) a node reported (`hello`) and when they arrived.
    fn record_facts(&self, node: &str, facts: &str, now_ms: u64) -> FleetResult<()>;
    /// Records when `node` was last connected.
    fn node_seen(&self, node: &str, now_ms: u64) -> FleetResult<()>;
    /// Enrols node `name` with `key`, or gives an enrolled one this key (it keeps its
    /// enrolment time, facts and last-seen; keys it rotated away from are forgotten).
    fn enrol_node(&self, name: &str, key: &str, now_ms: u64) -> FleetResult<()>;
    /// Forgets node `name` and every key of it (its history stays); false if there was
    /// none.
    fn remove_node(&self, name: &str) -> FleetResult<bool>;
    /// The keys (base64) node `name` may connect and sign with at `now_ms`: its enrolled
    /// key first, then those it rotated away from whose overlap is still open. Empty for
    /// an unknown node.
    fn node_keys(&self, name: &str, now_ms: u64) -> FleetResult<Vec<String>>;
    /// Makes `new_key` node `name`'s key; `old_key`, its current one, stays accepted until
    /// `until_ms`. Fails if another node holds `new_key`. Run it in one transaction with the
    /// read of `old_key`.
    fn rotate_node_key(
        &self,
        name: &str,
        old_key: &str,
        new_key: &str,
        until_ms: u64,
    ) -> FleetResult<()>;

    // Join tokens.

    /// Stores a new join token: the digest of its secret (its row's name) and the public
    /// half of its key (base64, what a node proves the token with).
    fn add_join_token(
        &self,
        digest: &str,
        key: &str,
        created_ms: u64,
        expires_at_ms: u64,
    ) -> FleetResult<()>;
    /// The join token whose key is `key` (base64).
    fn join_token(&self, key: &str) -> FleetResult<Option<JoinTokenRow>>;
    /// Marks the join token whose key is `key` used by `node`.
    fn use_join_token(&self, key: &str, node: &str) -> FleetResult<()>;

    // Operators.

    /// Adds operator `name`, or replaces the role, key and token digest of an existing one
    /// (their creation time stays).
    fn upsert_operator(
        &self,
        name: &str,
        role: &str,
        key: Option<&str>,
        token_digest: &str,
        now_ms: u64,
    ) -> FleetResult<()>;
    /// Removes operator `name` with every key of theirs; false if there was none.
    fn remove_operator(&self, name: &str) -> FleetResult<bool>;
    /// Operator `name` (with their current key, if any).
    fn operator(&self, name: &str) -> FleetResult<Option<Operator>>;
    /// Makes `new_key` operator `name`'s key; `old_key`, their current one, still signs
    /// until `until_ms` (a key rotated back to is current only, not also retired). Run it
    /// in one transaction with the read of `old_key`.
    fn rotate_operator_key(
        &self,
        name: &str,
        old_key: &str,
        new_key: &str,
        until_ms: u64,
    ) -> FleetResult<()>;
    /// The operator whose API token has this digest.
    fn operator_by_token(&self, token_digest: &str) -> FleetResult<Option<Operator>>;
    /// The operator whose current key is `key` (base64).
    fn operator_by_key(&self, key: &str) -> FleetResult<Option<Operator>>;
    /// May operator `name` sign with `key` (base64) at `now_ms`: their current key, or one
    /// they rotated away from whose overlap window is still open?
    fn operator_may_sign(&self, name: &str, key: &str, now_ms: u64) -> FleetResult<bool>;

    // Messages.

    /// Is there a message with this id?
    fn message_exists(&self, id: &str) -> FleetResult<bool>;
    /// Records a message in state `accepted`; false (and nothing changed) if one with its
    /// id exists already.
    fn insert_message(&self, m: &NewMessage<'_>) -> FleetResult<bool>;
    /// Records message `id`'s position in its node's stream.
    fn set_message_seq(&self, id: &str, seq: u64) -> FleetResult<()>;
    /// Moves message `id` to `state`: a dead letter (`expired` or `purged`).
    fn set_message_state(&self, id: &str, state: &str) -> FleetResult<()>;
    /// Marks `delivered` the messages still `accepted` at positions `(from, upto]` of
    /// `node`'s stream on `lane`; returns how many.
    fn mark_delivered(
        &self,
        node: &str,
        lane: Lane,
        from: u64,
        upto: u64,
        now_ms: u64,
    ) -> FleetResult<usize>;
    /// Stores the reply (JSON) to message `id`, which `node` answers, unless it has one
    /// already; true if it was stored.
    fn mark_replied(&self, id: &str, node: &str, reply: &str, now_ms: u64) -> FleetResult<bool>;
    /// The node that sent message `id` through the hub; `None` when an operator or the hub
    /// sent it (or there is no such message).
    fn node_sender(&self, id: &str) -> FleetResult<Option<String>>;
    /// One message.
    fn message(&self, id: &str) -> FleetResult<Option<MessageRow>>;
    /// Messages, newest first, `limit` from `offset`, optionally in one state or for one
    /// node.
    fn messages(
        &self,
        state: Option<&str>,
        node: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> FleetResult<Vec<MessageRow>>;
    /// How many messages are in each state (states without messages are left out).
    fn message_counts(&self) -> FleetResult<Vec<(String, u64)>>;
    /// Ids of the messages still waiting for delivery (`accepted`) that were created
    /// before `before_ms`, optionally only those to `node`, oldest first; at most 100,000.
    fn waiting_before(&self, before_ms: u64, node: Option<&str>) -> FleetResult<Vec<String>>;

    // Streamed output.

    /// Stores `chunk` of message `id`'s output, which `node` answers; true when it is new
    /// (not a copy, and the message is not answered yet).
    fn add_output(&self, id: &str, node: &str, chunk: &Chunk) -> FleetResult<bool>;
    /// The chunks of message `id` numbered above `after`, in order, at most `limit`.
    fn output_after(&self, id: &str, after: u64, limit: u64) -> FleetResult<Vec<Chunk>>;

    // Events.

    /// Stores one event `node` forwarded; false if it was stored already.
    fn insert_event(&self, node: &str, e: &NewEvent) -> FleetResult<bool>;
    /// Events, newest first, optionally of one node, service or kind.
    fn events(
        &self,
        node: Option<&str>,
        service: Option<&str>,
        kind: Option<&str>,
        limit: u64,
    ) -> FleetResult<Vec<EventRow>>;

    // The central error log.

    /// Appends to the central error log.
    fn log_error(
        &self,
        now_ms: u64,
        node: Option<&str>,
        kind: &str,
        message: &str,
    ) -> FleetResult<()>;
    /// The central error log, newest first.
    fn errors(&self, limit: u64) -> FleetResult<Vec<ErrorRow>>;

    // Retention.

    /// Deletes one batch (at most `batch` rows of each table) of history older than its
    /// cut-off: events, settled messages (replied, expired, purged; never one still
    /// waiting or in flight) with streamed output, error log entries.
    fn prune_batch(&self, before: &Cutoffs, batch: u64) -> FleetResult<Pruned>;
}

/// A node as the API shows it.
#[derive(Serialize, Clone, Debug, ToSchema)]
pub struct NodeRow {
    /// Its name.
    pub name: String,
    /// Its public key (base64).
    pub key: String,
    /// When it joined, ms since the epoch.
    pub enrolled_ms: u64,
    /// When it was last connected, ms since the epoch.
    pub last_seen_ms: Option<u64>,
    /// What it last reported about itself (`hello`).
    pub facts: serde_json::Value,
    /// When the hub received those facts, ms since the epoch (none yet: null).
    pub facts_ms: Option<u64>,
    /// Is it connected now?
    pub online: bool,
}

/// A message as the API shows it.
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct MessageRow {
    /// The request id.
    pub id: String,
    /// The node it is for.
    pub node: String,
    /// Its method.
    pub method: String,
    /// Who sent it.
    pub sender: String,
    /// `accepted` (durable in the hub's outbox), `delivered` (in the node's inbox),
    /// `replied`, or `expired` (dead letter).
    #[schema(example = "replied")]
    pub state: String,
    /// When it was accepted.
    pub created_ms: u64,
    /// When the node acknowledged it.
    pub delivered_ms: Option<u64>,
    /// When its reply arrived.
    pub replied_ms: Option<u64>,
    /// The reply's content.
    pub reply: Option<serde_json::Value>,
    /// The lane it travels on: `ordered`, `priority` (control methods) or `unordered`.
    #[schema(example = "ordered")]
    pub lane: String,
}

/// An entry of the central error log.
#[derive(Serialize, Clone, Debug, ToSchema)]
pub struct ErrorRow {
    /// Its number.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The node concerned.
    pub node: Option<String>,
    /// `dead_letter`, `refused`, `clone`, `node_error`, …
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// An operator, found by API token.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// Name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// Their public key (base64), if registered.
    pub key: Option<String>,
}

/// A node's event as the API shows it (as forwarded by its agent).
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct EventRow {
    /// The node it happened on.
    pub node: String,
    /// Its position in the node's own event log.
    pub id: i64,
    /// When it happened, ms since the epoch (the node's clock).
    pub ts_ms: i64,
    /// The service it is about, if any.
    pub service: Option<String>,
    /// What happened (`running`, `exited`, `backing_off`, …).
    pub kind: String,
    /// Who caused it (`buddy`, `agent`, `uid:1000`, an operator …).
    pub actor: String,
    /// A one-line description.
    pub message: String,
}

/// An event as the API shows it.
pub fn event_json(node: &str, e: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "node": node,
        "id": e.get("id"),
        "ts_ms": e.get("ts_ms"),
        "service": e.get("service"),
        "kind": e.get("kind"),
        "actor": e.get("actor"),
        "message": e.get("message"),
    })
}

/// A message to record (state `accepted`).
#[derive(Clone, Debug)]
pub struct NewMessage<'a> {
    /// The request id.
    pub id: &'a str,
    /// The node it is for.
    pub node: &'a str,
    /// The lane it travels on.
    pub lane: Lane,
    /// Its position in the node's stream, if known yet.
    pub seq: Option<u64>,
    /// Its method.
    pub method: &'a str,
    /// Who sent it (an operator, a node, `hub`).
    pub sender: &'a str,
    /// Whether `sender` is a node (names of nodes and operators may be the same).
    pub from_node: bool,
    /// When it was accepted.
    pub created_ms: u64,
    /// When it expires if not delivered.
    pub expires_at_ms: u64,
}

/// A join token as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinTokenRow {
    /// When it stops working.
    pub expires_at_ms: u64,
    /// The node that used it, if one did.
    pub used_by: Option<String>,
}

/// One chunk of a message's streamed output.
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct Chunk {
    /// Its number, from 1.
    pub n: u64,
    /// Standard output in it.
    pub stdout: String,
    /// Standard error in it.
    pub stderr: String,
    /// When the hub stored it, ms since the epoch.
    pub at_ms: u64,
}

/// An event a node forwarded, to store (its `id` is its position in the node's own log).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Its position in the node's event log.
    pub id: i64,
    /// When it happened (the node's clock).
    pub ts_ms: i64,
    /// The service it is about, if any.
    pub service: Option<String>,
    /// What happened.
    pub kind: String,
    /// Who caused it.
    pub actor: String,
    /// A one-line description.
    pub message: String,
    /// More, as JSON text.
    pub detail: Option<String>,
}

impl NewEvent {
    /// The event in an agent's forwarded JSON (`None` without an `id`).
    pub fn from_json(e: &serde_json::Value) -> Option<Self> {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        Some(Self {
            id: e.get("id").and_then(|v| v.as_i64())?,
            ts_ms: e.get("ts_ms").and_then(|v| v.as_i64()).unwrap_or(0),
            service: e
                .get("service")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            kind: s("kind"),
            actor: s("actor"),
            message: s("message"),
            detail: e
                .get("detail")
                .filter(|d| !d.is_null())
                .map(|d| d.to_string()),
        })
    }
}

/// The cut-offs of a retention pass: what is older goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cutoffs {
    /// Node events.
    pub events: u64,
    /// Settled messages and their streamed output.
    pub messages: u64,
    /// The central error log.
    pub errors: u64,
    /// Rotated-away node and operator keys whose overlap closed (now).
    pub keys: u64,
}

/// What a retention pass (or one batch of it) deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Node events.
    pub events: u64,
    /// Settled messages (with their chunks of streamed output).
    pub messages: u64,
    /// Error log entries.
    pub errors: u64,
    /// Rotated-away keys whose overlap had closed.
    pub keys: u64,
}
