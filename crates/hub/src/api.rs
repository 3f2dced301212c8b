//! The HTTP API under `/api/v1` (JSON). Operators authenticate with a bearer token made by
//! `reeve hub operator add`; roles: viewer (read), operator (send), admin. What an operator
//! sends must also be signed by their own key (the authorization signature): the token says
//! who calls the API, the signature is what nodes' policies judge. Joining nodes use
//! `POST /api/v1/join` with a one-time token instead.

use crate::db::{self, fleet};
use crate::{Hub, now_ms};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reeve_delivery::envelope::Authorized;
use reeve_delivery::keys::PublicKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An API error: status and a message for the caller.
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

pub(crate) fn internal(e: anyhow::Error) -> ApiError {
    tracing::warn!("API error: {e:#}");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// A count or position in a query: a non-negative integer that fits a signed 64-bit one
/// (what the document promises and every JSON reader takes).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v > i64::MAX as u64 {
            return Err(serde::de::Error::custom(format!(
                "{v} is over {}",
                i64::MAX
            )));
        }
        Ok(Self(v))
    }
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| bad(e.body_text()))
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The documented routes: each handler carries its OpenAPI description, so the router and
/// the document ([`crate::openapi::document`]) are made from the same list.
pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(me))
        .routes(routes!(join))
        .routes(routes!(nodes))
        .routes(routes!(node, remove_node))
        .routes(routes!(node_request))
        .routes(routes!(messages, send))
        .routes(routes!(purge))
        .routes(routes!(message))
        .routes(routes!(crate::output::message_output))
        .routes(routes!(errors))
        .routes(routes!(events))
        .routes(routes!(stream))
        .routes(routes!(metrics))
}

/// The routes; `relay` adds the node relay endpoint (only on the TLS listener). Besides the
/// documented API: the relay WebSocket and the dashboard's static files.
pub fn router(hub: Arc<Hub>, relay: bool) -> Router {
    let (mut r, _) = routes().split_for_parts();
    if relay {
        r = r.route("/relay", get(relay_upgrade));
    }
    r.merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(hub.clone(), count))
        .with_state(hub)
}

/// Counts every answer by method, route template and status (`reeve_hub_api_requests_total`).
async fn count(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    hub.metrics.request(&method, &route, resp.status().as_u16());
    resp
}

async fn relay_upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(crate::relay::MAX_FRAME)
        .max_frame_size(crate::relay::MAX_FRAME)
        .write_buffer_size(8 * 1024)
        // tungstenite's default read buffer is 128 KiB per connection: most of an idle
        // node's cost at the hub.
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| crate::relay::handle(hub, socket))
}

fn rank(role: &str) -> u8 {
    crate::admin::ROLES
        .iter()
        .position(|r| *r == role)
        .map_or(0, |p| p as u8 + 1)
}

/// The calling operator, if their token is valid and their role is at least `need`.
pub(crate) fn authorize(
    hub: &Hub,
    headers: &HeaderMap,
    need: &str,
) -> Result<db::Operator, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (reeve hub operator add makes one)".into(),
            )
        })?;
    let op = hub
        .read(|f| Ok(f.operator_by_token(&db::digest(token.trim()))?))
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    if rank(&op.role) < rank(need) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("role {} may not do this (needs {need})", op.role),
        ));
    }
    Ok(op)
}

/// Answer of `GET /api/v1/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The hub's reeve version.
    pub version: String,
    /// The hub's public key (base64): nodes pin it.
    pub hub_key: String,
    /// Its fingerprint (what join tokens name).
    pub hub_fingerprint: String,
    /// The hub's clock, ms since the epoch (the fleet's reference).
    pub hub_time_ms: u64,
}

/// The hub's version, key and time.
#[utoipa::path(get, path = "/api/v1/health", tag = "hub", security(()),
    responses((status = 200, description = "The hub is up", body = Health)))]
async fn health(State(hub): State<Arc<Hub>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        hub_key: hub.public_key().to_base64(),
        hub_fingerprint: hub.public_key().fingerprint(),
        hub_time_ms: now_ms(),
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "hub", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::openapi::json(),
    )
        .into_response()
}

/// Answer of `GET /api/v1/me`.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// The operator's name.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "hub",
    responses(
        (status = 200, description = "The calling operator", body = Me),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
async fn me(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    let op = authorize(&hub, &headers, "viewer")?;
    Ok(Json(Me {
        name: op.name,
        role: op.role,
    })
    .into_response())
}

/// The Prometheus metrics (no token: counts only). The classic text format, or
/// OpenMetrics when asked for with `Accept: application/openmetrics-text`.
#[utoipa::path(get, path = "/metrics", tag = "hub", security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn metrics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = hub.metrics.render(&hub, openmetrics).map_err(internal)?;
    let ct = if openmetrics {
        crate::metrics::OPENMETRICS
    } else {
        crate::metrics::CLASSIC
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response())
}

/// Body of `POST /api/v1/join`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The join token's secret.
    pub secret: String,
    /// The node's name: 1-63 lowercase letters, digits, '-', '.', '_', starting with a
    /// letter or digit; not `hub`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub node: String,
    /// The node's public key (base64).
    pub key: String,
}

/// Is `name` usable as a node name (it appears in paths and stream keys)?
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name != "hub"
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Answer of `POST /api/v1/join`.
#[derive(Serialize, ToSchema)]
pub struct Joined {
    /// The node's name.
    pub node: String,
    /// The hub's public key (base64).
    pub hub_key: String,
    /// The hub's clock, ms since the epoch.
    pub hub_time_ms: u64,
}

/// Enrols a node with a one-time join token (`reeve agent join`).
#[utoipa::path(post, path = "/api/v1/join", tag = "nodes", security(()), request_body = JoinBody,
    responses(
        (status = 200, description = "Enrolled", body = Joined),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 403, description = "Unknown, used or expired token, or a name taken by another key", body = ErrorBody)))]
async fn join(
    State(hub): State<Arc<Hub>>,
    body: Result<Json<JoinBody>, JsonRejection>,
) -> ApiResult {
    let invalid = |msg: String| {
        hub.metrics.join("invalid");
        bad(msg)
    };
    let Json(b) = body.map_err(|e| invalid(e.body_text()))?;
    if !valid_node_name(&b.node) {
        return Err(invalid(format!(
            "node name {:?}: use 1-63 lowercase letters, digits, '-', '.', '_' (not \"hub\")",
            b.node
        )));
    }
    let key = PublicKey::from_base64(&b.key).map_err(|e| invalid(format!("key: {e}")))?;
    let (now, digest) = (now_ms(), db::digest(&b.secret));
    let (node, key64) = (b.node.clone(), key.to_base64());
    let outcome: Result<(), String> = hub
        .writer
        .run(move |s| {
            let f = fleet(s);
            let refuse = |why: &str| -> Result<Result<(), String>, reeve_delivery::store::StoreError> {
                f.log_error(now, Some(&node), "join_refused", why)?;
                Ok(Err(why.to_string()))
            };
            match f.join_token(&digest)? {
                None => return refuse("unknown join token"),
                Some(db::JoinTokenRow { used_by: Some(by), .. }) => {
                    return refuse(&format!("this join token was used already (by {by})"));
                }
                Some(t) if t.expires_at_ms <= now => return refuse("this join token has expired"),
                _ => {}
            }
            if let Some(k) = f.node_key(&node)?
                && k != key64
            {
                return refuse(&format!("a node named {node} is enrolled with another key (reeve nodes remove NAME frees the name)"));
            }
            f.enrol_node(&node, &key64, now)?;
            f.use_join_token(&digest, &node)?;
            Ok(Ok(()))
        })
        .await
        .map_err(|e| internal(e.into()))?;
    hub.bump();
    match outcome {
        Ok(()) => {
            hub.metrics.join("enrolled");
            Ok(Json(Joined {
                node: b.node,
                hub_key: hub.public_key().to_base64(),
                hub_time_ms: now_ms(),
            })
            .into_response())
        }
        Err(why) => {
            hub.metrics.join("refused");
            Err(ApiError(StatusCode::FORBIDDEN, why))
        }
    }
}

/// Query of `GET /api/v1/nodes`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodesQuery {
    /// Only nodes whose name contains this.
    pub search: Option<String>,
    /// Only nodes connected now (true) or not (false).
    pub online: Option<bool>,
    /// Skip this many.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Count,
    /// At most this many (default 100; more than 1000 gives 1000).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<Count>,
}

fn with_online(hub: &Hub, mut n: db::NodeRow) -> db::NodeRow {
    n.online = hub.is_online(&n.name);
    n
}

/// A page of rows: `limit` (default 100, at most 1000) from `offset`.
fn page(offset: Count, limit: Option<Count>) -> (u64, u64) {
    (offset.0, limit.map_or(100, |l| l.0).min(1000))
}

/// Nodes by name, with their connection state and facts.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", params(NodesQuery),
    responses(
        (status = 200, description = "A page of nodes", body = Vec<db::NodeRow>,
            headers(("X-Total-Count" = u64, description = "How many nodes match, all pages together"))),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
async fn nodes(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<NodesQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let (offset, limit) = page(q.offset, q.limit);
    let search = q.search.as_deref();
    let (total, rows) = match q.online {
        None => hub
            .read(|f| Ok((f.count_nodes(search)?, f.nodes(search, offset, limit)?)))
            .map_err(internal)?,
        // Connection state lives in memory: filter the names, then read one page.
        Some(want) => {
            let names: Vec<String> = hub
                .read(|f| Ok(f.node_names(search)?))
                .map_err(internal)?
                .into_iter()
                .filter(|n| hub.is_online(n) == want)
                .collect();
            let rows = hub
                .read(|f| {
                    let mut rows = Vec::new();
                    for n in names.iter().skip(offset as usize).take(limit as usize) {
                        rows.extend(f.node(n)?);
                    }
                    Ok(rows)
                })
                .map_err(internal)?;
            (names.len() as u64, rows)
        }
    };
    let list: Vec<_> = rows.into_iter().map(|n| with_online(&hub, n)).collect();
    Ok((
        [(
            header::HeaderName::from_static("x-total-count"),
            HeaderValue::from(total),
        )],
        Json(list),
    )
        .into_response())
}

/// One node.
#[utoipa::path(get, path = "/api/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, description = "The node", body = db::NodeRow),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
async fn node(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    match hub.read(|f| Ok(f.node(&name)?)).map_err(internal)? {
        Some(n) => Ok(Json(with_online(&hub, n)).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node named {name:?}"),
        )),
    }
}

/// Answer of `DELETE /api/v1/nodes/{name}`.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// The node removed.
    pub node: String,
    /// How many messages waiting for it were purged.
    pub purged: u64,
}

/// Removes a node: its key is forgotten (it can no longer connect), the messages waiting
/// for it are purged, its live connection is closed; its history stays. The name is free
/// for a new `reeve agent join`.
#[utoipa::path(delete, path = "/api/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, description = "Removed", body = Removed),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
async fn remove_node(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let op = authorize(&hub, &headers, "admin")?;
    match hub.remove_node(&name, &op.name).await.map_err(internal)? {
        Some(purged) => Ok(Json(Removed {
            node: name,
            purged: purged as u64,
        })
        .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node named {name:?}"),
        )),
    }
}

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
async fn send(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: axum::body::Body,
) -> ApiResult {
    // The caller first: only an operator's body, up to SEND_BODY_LIMIT, is read.
    let op = authorize(&hub, &headers, "operator")?;
    let q = query(q)?;
    let bytes = axum::body::to_bytes(body, SEND_BODY_LIMIT)
        .await
        .map_err(|e| bad(format!("cannot read the body (at most 32 MiB): {e}")))?;
    let b: SendBody = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("the body is not a valid list of requests: {e}")))?;
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
async fn settle_all(hub: &Hub, wait: Count, ids: &[&str]) -> Result<Vec<db::MessageRow>, ApiError> {
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
async fn purge(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Result<Json<PurgeBody>, JsonRejection>,
) -> ApiResult {
    let op = authorize(&hub, &headers, "operator")?;
    let Json(b) = body.map_err(|e| bad(e.body_text()))?;
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
async fn messages(
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
async fn message(
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

/// Query of `GET /api/v1/errors`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many (default 100; more than 1000 gives 1000).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<Count>,
}

/// The central error log, newest first: dead letters, refusals, clones, node errors.
#[utoipa::path(get, path = "/api/v1/errors", tag = "fleet", params(LimitQuery),
    responses(
        (status = 200, description = "The newest entries", body = Vec<db::ErrorRow>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
async fn errors(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let (_, limit) = page(Count(0), q.limit);
    let rows = hub.read(|f| Ok(f.errors(limit)?)).map_err(internal)?;
    Ok(Json(rows).into_response())
}

/// Query of `GET /api/v1/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this node.
    pub node: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At most this many (default 100; more than 1000 gives 1000).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<Count>,
}

/// Node events forwarded by the agents, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "fleet", params(EventsQuery),
    responses(
        (status = 200, description = "The newest matching events", body = Vec<db::EventRow>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
async fn events(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let (_, limit) = page(Count(0), q.limit);
    let rows = hub
        .read(|f| {
            Ok(f.events(
                q.node.as_deref(),
                q.service.as_deref(),
                q.kind.as_deref(),
                limit,
            )?)
        })
        .map_err(internal)?;
    Ok(Json(rows).into_response())
}

/// Server-Sent Events: `node_event` (one event, as `GET /api/v1/events` shows it) as
/// nodes forward them, and `change` whenever fleet state changed (connections, message
/// states). Never ends by itself.
#[utoipa::path(get, path = "/api/v1/stream", tag = "fleet",
    responses(
        (status = 200, description = "An endless event stream", body = String, content_type = "text/event-stream"),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
async fn stream(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    authorize(&hub, &headers, "viewer")?;
    let open = hub.metrics.stream_opened();
    let state = (hub.events.subscribe(), hub.changes.subscribe(), open);
    let s = futures_util::stream::unfold(state, |(mut ev, mut ch, open)| async move {
        let item = tokio::select! {
            e = ev.recv() => match e {
                Ok(v) => Event::default().event("node_event").data(v.to_string()),
                // A slow reader is told to reload rather than silently missing events.
                Err(RecvError::Lagged(_)) => Event::default().event("change").data("{\"lagged\":true}"),
                Err(RecvError::Closed) => return None,
            },
            c = ch.changed() => match c {
                Ok(()) => Event::default().event("change").data("{}"),
                Err(_) => return None,
            },
        };
        Some((Ok::<_, std::convert::Infallible>(item), (ev, ch, open)))
    });
    Ok(Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response())
}

/// Body of `POST /api/v1/nodes/{name}/requests`: what the dashboard sends. The hub signs it
/// with its own key on behalf of the operator; each node's policy decides what the hub's
/// key may do (by default service control and queries, never `exec`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRequestBody {
    /// The method (`service.restart`, `ops.ps`, …).
    #[schema(min_length = 1, max_length = 64)]
    pub method: String,
    /// Its arguments.
    #[serde(default)]
    pub args: serde_json::Value,
    /// Time limit on the node, ms.
    pub method_timeout_ms: Option<u64>,
}

/// Answer of `POST /api/v1/nodes/{name}/requests`.
#[derive(Serialize, ToSchema)]
pub struct RequestAccepted {
    /// The request id (`GET /api/v1/messages/{id}` follows it).
    pub id: String,
    /// `accepted`.
    pub state: String,
}

/// Sends a request to a node, signed by the hub's key on behalf of the caller (what the
/// dashboard sends).
#[utoipa::path(post, path = "/api/v1/nodes/{name}/requests", tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    request_body = NodeRequestBody,
    responses(
        (status = 202, description = "Accepted", body = RequestAccepted),
        (status = 400, description = "Malformed or refused request", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
async fn node_request(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<NodeRequestBody>, JsonRejection>,
) -> ApiResult {
    let op = authorize(&hub, &headers, "operator")?;
    let Json(b) = body.map_err(|e| bad(e.body_text()))?;
    if b.method.is_empty() || b.method.len() > 64 {
        return Err(bad("method: 1 to 64 characters"));
    }
    if hub
        .read(|f| Ok(f.node_key(&name)?))
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node named {name:?} is enrolled"),
        ));
    }
    let mut r = reeve_delivery::envelope::Request::new(
        "hub",
        &name,
        &b.method,
        b.args,
        now_ms().saturating_add(crate::DEFAULT_TTL_MS),
    );
    r.on_behalf_of = Some(op.name.clone());
    r.method_timeout_ms = b.method_timeout_ms;
    let auth = reeve_delivery::envelope::authorize(&r, &hub.key).map_err(|e| internal(e.into()))?;
    let (id, _) = hub.accept(auth, &op.name).await.map_err(|e| {
        let msg = format!("{e:#}");
        if msg.starts_with("refused") {
            bad(msg)
        } else {
            internal(e)
        }
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RequestAccepted {
            id,
            state: "accepted".into(),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests;
