//! Messages: sending operators' signed requests (and waiting for their replies), purging,
//! listing and fetching one.

use super::{
    ApiError, ApiResult, Count, ErrorBody, authorize, bad, internal, json_body, page, query,
};
use crate::Hub;
use crate::db;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use reeve_delivery::envelope::Authorized;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /api/v1/messages`: requests signed by the operator's key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// One authorized request per target node (1 to 10000), as `reeve send` makes them
    /// (docs/delivery.md).
    #[schema(value_type = Vec<AuthorizedRequest>, min_items = 1, max_items = 10000)]
    pub requests: Vec<Authorized>,
}

/// A request signed by its author (the wire form of `Authorized`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuthorizedRequest {
    /// Base64 of the request's JSON bytes.
    body: String,
    /// The signer's public key (base64).
    signer: String,
    /// Base64 Ed25519 signature over `body`'s bytes.
    sig: String,
}

/// One accepted message.
#[derive(Serialize, ToSchema)]
pub struct AcceptedMessage {
    /// The request id.
    pub id: String,
    /// Its position in the node's stream.
    pub seq: u64,
    /// `accepted`.
    pub state: String,
}

/// Answer of `POST /api/v1/messages`.
#[derive(Serialize, ToSchema)]
pub struct SendAnswer {
    /// What was accepted, in order.
    pub accepted: Vec<AcceptedMessage>,
    /// The hub's clock when it answered, ms since the epoch (expiry is judged on it).
    pub hub_time_ms: u64,
    /// With `wait`: each message as it stood when the answer was made (replied or expired,
    /// or still on its way when the time was up), in the order of `accepted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<db::MessageRow>>,
}

/// The largest body `POST /api/v1/messages` reads: 10,000 requests of up to ~3 KiB each
/// (the default of 2 MiB held about 1,700 `exec` requests, not the documented 10,000).
pub const SEND_BODY_LIMIT: usize = 32 << 20;

/// The largest body `POST /api/v1/messages/purge` reads: 10,000 ids with room to spare.
const PURGE_BODY_LIMIT: usize = 1 << 20;

/// Sends requests signed by the caller's own key; each is durable in its node's stream
/// ("accepted") when this answers. With `wait`, answers once every one of them is replied
/// or expired, or when `wait` seconds have passed (one call instead of a `POST` and a
/// `GET …?wait` per message).
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", request_body = SendBody,
    params(WaitQuery),
    responses(
        (status = 202, description = "Accepted", body = SendAnswer),
        (status = 400, description = "Malformed or refused request", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Role too weak, or not signed by the caller's key", body = ErrorBody)))]
pub(super) async fn send(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: axum::body::Body,
) -> ApiResult {
    // The caller first: only an operator's body, up to SEND_BODY_LIMIT, is read.
    let op = authorize(&hub, &headers, "operator")?;
    let q = query(q)?;
    let b: SendBody = json_body(body, SEND_BODY_LIMIT, "a valid list of requests").await?;
    if b.requests.is_empty() || b.requests.len() > 10_000 {
        return Err(bad("send 1 to 10000 requests"));
    }
    let Some(op_key) = op.key.clone() else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("operator {} has no registered key to sign with", op.name),
        ));
    };
    // Check everything before accepting anything. Besides their key, a key the operator
    // rotated away from signs until its overlap window closes.
    let now = crate::now_ms();
    let mut checked = Vec::with_capacity(b.requests.len());
    for a in b.requests {
        let signer = a.signer.to_base64();
        let may = signer == op_key
            || hub
                .read(|f| Ok(f.operator_may_sign(&op.name, &signer, now)?))
                .map_err(internal)?;
        if !may {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "request signed by {}, not by {}'s key",
                    a.signer.fingerprint(),
                    op.name
                ),
            ));
        }
        let r = reeve_delivery::envelope::check_authorized(&a).map_err(|e| bad(e.to_string()))?;
        if r.from != op.name {
            return Err(bad(format!(
                "request says it is from {:?}, but the caller is {}",
                r.from, op.name
            )));
        }
        checked.push((a, r));
    }
    // All at once: the delivery writer commits concurrent requests together (one fsync for
    // the batch instead of one each); each one's first poll queues it, in order.
    let results = futures_util::future::join_all(
        checked
            .into_iter()
            .map(|(a, r)| hub.accept_checked(a, r, &op.name)),
    )
    .await;
    let mut accepted = Vec::new();
    for r in results {
        let (id, seq) = r.map_err(|e| {
            let msg = format!("{e:#}");
            if msg.starts_with("refused") {
                bad(msg)
            } else {
                internal(e)
            }
        })?;
        accepted.push(AcceptedMessage {
            id,
            seq,
            state: "accepted".into(),
        });
    }
    let messages = if q.wait.0 > 0 {
        let ids: Vec<&str> = accepted.iter().map(|a| a.id.as_str()).collect();
        Some(settle_all(&hub, q.wait, &ids).await?)
    } else {
        None
    };
    let answer = SendAnswer {
        accepted,
        hub_time_ms: crate::now_ms(),
        messages,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The rows of messages `ids` once all are settled, or when `wait` seconds have passed.
/// After every change at the hub only the unsettled ones are read again.
pub(super) async fn settle_all(
    hub: &Hub,
    wait: Count,
    ids: &[&str],
) -> Result<Vec<db::MessageRow>, ApiError> {
    let mut rows: Vec<Option<db::MessageRow>> = vec![None; ids.len()];
    long_poll(hub, wait, || {
        let mut done = true;
        for (id, row) in ids.iter().zip(rows.iter_mut()) {
            if row.as_ref().is_some_and(|r| settled(&r.state)) {
                continue;
            }
            *row = hub.read(|f| Ok(f.message(id)?)).map_err(internal)?;
            done &= row.as_ref().is_some_and(|r| settled(&r.state));
        }
        Ok((done, ()))
    })
    .await?;
    // A row that is gone meanwhile (retention) is left out.
    Ok(rows.into_iter().flatten().collect())
}

/// Body of `POST /api/v1/messages/purge`: which waiting messages to purge, by id or by age
/// (at least one of the two).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// These messages (at most 10,000).
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every message still waiting for delivery that was accepted more than this many
    /// milliseconds ago.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub older_than_ms: Option<Count>,
    /// With `older_than_ms`: only messages to this node.
    pub node: Option<String>,
}

/// Answer of `POST /api/v1/messages/purge`.
#[derive(Serialize, ToSchema)]
pub struct PurgeAnswer {
    /// Purged: dead letters now, a skip marker in each one's place.
    pub purged: Vec<String>,
    /// Named but not waiting in the outbox (unknown, already delivered, expired or purged).
    pub not_waiting: Vec<String>,
}

/// Purges messages not yet delivered: each becomes a dead letter (state `purged`, an entry
/// in the error log) and a signed skip marker takes its place, so its node's stream moves
/// on. A message already stored by its node is not recalled.
#[utoipa::path(post, path = "/api/v1/messages/purge", tag = "messages", request_body = PurgeBody,
    responses(
        (status = 200, description = "What was purged", body = PurgeAnswer),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody)))]
pub(super) async fn purge(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let op = authorize(&hub, &headers, "operator")?;
    let b: PurgeBody = json_body(body, PURGE_BODY_LIMIT, "a valid purge request").await?;
    if b.ids.is_empty() && b.older_than_ms.is_none() {
        return Err(bad(
            "name the messages to purge: ids, older_than_ms or both",
        ));
    }
    if b.ids.len() > 10_000 {
        return Err(bad("purge at most 10000 ids at once"));
    }
    let mut ids = b.ids.clone();
    if let Some(age) = b.older_than_ms {
        let before = crate::now_ms().saturating_sub(age.0);
        let node = b.node.filter(|n| !n.is_empty());
        let old = hub
            .read(|f| Ok(f.waiting_before(before, node.as_deref())?))
            .map_err(internal)?;
        ids.extend(old);
    }
    ids.sort_unstable();
    ids.dedup();
    let purged = hub.purge(ids.clone(), &op.name).await.map_err(internal)?;
    let not_waiting = b.ids.into_iter().filter(|i| !purged.contains(i)).collect();
    Ok(Json(PurgeAnswer {
        purged,
        not_waiting,
    })
    .into_response())
}

/// A message's state.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Durable in the hub's outbox.
    Accepted,
    /// Stored in the node's inbox.
    Delivered,
    /// Its reply is back.
    Replied,
    /// Expired before delivery (a dead letter).
    Expired,
    /// Purged by an operator before delivery (a dead letter).
    Purged,
}

impl MessageState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Delivered => "delivered",
            Self::Replied => "replied",
            Self::Expired => "expired",
            Self::Purged => "purged",
        }
    }
}

/// Query of `GET /api/v1/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages in this state.
    pub state: Option<MessageState>,
    /// Only messages to this node.
    pub node: Option<String>,
    /// Skip this many.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Count,
    /// At most this many (default 100; more than 1000 gives 1000).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<Count>,
}

/// Messages, newest first.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", params(MessagesQuery),
    responses(
        (status = 200, description = "A page of messages", body = Vec<db::MessageRow>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
pub(super) async fn messages(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<MessagesQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let (offset, limit) = page(q.offset, q.limit);
    let state = q.state.map(MessageState::as_str);
    let node = q.node.as_deref().filter(|n| !n.is_empty());
    let rows = hub
        .read(|f| Ok(f.messages(state, node, offset, limit)?))
        .map_err(internal)?;
    Ok(Json(rows).into_response())
}

/// Query of `GET /api/v1/messages/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds for a reply (long poll; more than 60 gives 60).
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub wait: Count,
}

/// One message and its reply; with `wait`, answers once it is replied or expired, or
/// when the time is up.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "The request id"), WaitQuery),
    responses(
        (status = 200, description = "The message", body = db::MessageRow),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody)))]
pub(super) async fn message(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let row = long_poll(&hub, q.wait, || {
        let row = hub.read(|f| Ok(f.message(&id)?)).map_err(internal)?;
        let Some(row) = row else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no message {id:?}"),
            ));
        };
        Ok((settled(&row.state), row))
    })
    .await?;
    Ok(Json(row).into_response())
}

/// Is a message in `state` done for good (replied, or a dead letter)?
pub fn settled(state: &str) -> bool {
    matches!(state, "replied" | "expired" | "purged")
}

/// A long poll: `look` again after every change at the hub until it says it is done, or
/// `wait` seconds (at most 60) have passed; answers its last value.
pub(crate) async fn long_poll<T>(
    hub: &Hub,
    wait: Count,
    mut look: impl FnMut() -> Result<(bool, T), ApiError>,
) -> Result<T, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.0.min(60));
    let mut changes = hub.changes.subscribe();
    loop {
        changes.borrow_and_update();
        let (done, value) = look()?;
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(value);
        }
        let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
    }
}
