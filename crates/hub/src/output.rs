//! Streamed output (`exec.stream`): the chunk replies a node sends while its command runs
//! (`{"status": "running", "chunk": N, "stdout": …, "stderr": …}`) are kept per message in
//! `hub_output`, one row per chunk number (a chunk sent twice across an agent crash is kept
//! once), and served by `GET /api/v1/messages/{id}/output` as they come. When the final
//! reply arrives, the message's reply gets the whole output back: every chunk's, then the
//! final reply's own remainder — so it reads like an `exec` reply.

use crate::Hub;
use crate::api::{
    ApiError, ApiResult, Count, ErrorBody, authorize, internal, long_poll, query, settled,
};
pub use crate::db::Chunk;
use crate::db::{FleetResult, FleetStore};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The chunk number of a reply body that is a chunk (`None`: a final reply).
pub fn chunk_number(body: &Value) -> Option<u64> {
    (body.get("status")?.as_str()? == "running")
        .then(|| body.get("chunk")?.as_u64())
        .flatten()
}

/// Records chunk `n` of message `id`, which `node` answers; true when it is new (not a
/// copy, and the message is not answered yet).
pub fn record_chunk(
    f: &dyn FleetStore,
    id: &str,
    node: &str,
    n: u64,
    body: &Value,
    now: u64,
) -> FleetResult<bool> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let chunk = Chunk {
        n,
        stdout: text("stdout"),
        stderr: text("stderr"),
        at_ms: now,
    };
    f.add_output(id, node, &chunk)
}

/// The final reply `body` of message `id` with the streamed output put back in front of
/// its own (unchanged when nothing was streamed).
pub fn assemble(f: &dyn FleetStore, id: &str, mut body: Value) -> FleetResult<Value> {
    if body.get("chunks").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Ok(body);
    }
    let (mut out, mut err) = (String::new(), String::new());
    for chunk in f.output_after(id, 0, u64::MAX)? {
        out.push_str(&chunk.stdout);
        err.push_str(&chunk.stderr);
    }
    if let Some(o) = body.as_object_mut() {
        for (k, mut all) in [("stdout", out), ("stderr", err)] {
            all.push_str(o.get(k).and_then(Value::as_str).unwrap_or(""));
            o.insert(k.into(), Value::String(all));
        }
    }
    Ok(body)
}

/// Query of `GET /api/v1/messages/{id}/output`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Only chunks numbered above this (the last one you have).
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Count,
    /// Wait up to this many seconds for a new chunk or the end (long poll; more than 60
    /// gives 60).
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0)]
    pub wait: Count,
}

/// Answer of `GET /api/v1/messages/{id}/output`.
#[derive(Serialize, ToSchema)]
pub struct Output {
    /// The message's state (`replied`: the output is complete; the message's reply holds
    /// all of it and the exit code).
    pub state: String,
    /// Chunks after `after`, in order (at most 100).
    pub chunks: Vec<Chunk>,
}

/// The output an `exec.stream` request has streamed so far; with `wait`, answers once
/// there is a chunk after `after` or the message is settled, or when the time is up.
#[utoipa::path(get, path = "/api/v1/messages/{id}/output", tag = "messages",
    params(("id" = String, Path, description = "The request id"), OutputQuery),
    responses(
        (status = 200, description = "Chunks of output", body = Output),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody)))]
pub async fn message_output(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<OutputQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&hub, &headers, "viewer")?;
    let q = query(q)?;
    let out = long_poll(&hub, q.wait, || {
        let found = hub
            .read(|f| {
                let Some(m) = f.message(&id)? else {
                    return Ok(None);
                };
                Ok(Some((m.state, f.output_after(&id, q.after.0, 100)?)))
            })
            .map_err(internal)?;
        let Some((state, chunks)) = found else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no message {id:?}"),
            ));
        };
        Ok((
            settled(&state) || !chunks.is_empty(),
            Output { state, chunks },
        ))
    })
    .await?;
    Ok(Json(out).into_response())
}
