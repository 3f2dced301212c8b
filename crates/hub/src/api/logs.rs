//! The fleet's central logs: the error log, node events, and the live change stream.

use super::{ApiResult, Count, ErrorBody, authorize, internal, page, query};
use crate::Hub;
use crate::db;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::IntoParams;

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
pub(super) async fn errors(
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
pub(super) async fn events(
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
pub(super) async fn stream(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
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
