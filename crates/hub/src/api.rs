//! The HTTP API under `/api/v1` (JSON). Operators authenticate with a bearer token made by
//! `reeve hub operator add`; roles: viewer (read), operator (send), admin. What an operator
//! sends must also be signed by their own key (the authorization signature): the token says
//! who calls the API, the signature is what nodes' policies judge. Joining nodes use
//! `POST /api/v1/join` with a one-time token instead.

use crate::db;
use crate::{Hub, now_ms};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod logs;
mod messages;
mod nodes;

pub use logs::*;
pub use messages::*;
pub use nodes::*;

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

/// Reads a JSON body of at most `limit` bytes. Handlers call it after [`authorize`], so a
/// caller without a valid token makes the hub read no body at all (an extractor would read
/// and parse it first); `what` names the body in the error.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let most = match limit {
        l if l >= 1 << 20 => format!("{} MiB", l >> 20),
        l => format!("{} KiB", l >> 10),
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| bad(format!("cannot read the body (at most {most}): {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not {what}: {e}")))
}

/// A page of rows: `limit` (default 100, at most 1000) from `offset`.
pub(crate) fn page(offset: Count, limit: Option<Count>) -> (u64, u64) {
    (offset.0, limit.map_or(100, |l| l.0).min(1000))
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The documented routes: each handler carries its OpenAPI description, so the router and
/// the document ([`crate::openapi::document`]) are made from the same list.
pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(me))
        .routes(routes!(nodes::join))
        .routes(routes!(nodes::nodes))
        .routes(routes!(nodes::node, nodes::remove_node))
        .routes(routes!(nodes::node_request))
        .routes(routes!(messages::messages, messages::send))
        .routes(routes!(messages::purge))
        .routes(routes!(messages::message))
        .routes(routes!(crate::output::message_output))
        .routes(routes!(logs::errors))
        .routes(routes!(logs::events))
        .routes(routes!(logs::stream))
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

#[cfg(test)]
mod tests;
