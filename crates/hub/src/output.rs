//! Streamed output (`exec.stream`): the chunk replies a node sends while its command runs
//! (`{"status": "running", "chunk": N, "stdout": …, "stderr": …}`) are kept per message in
//! `hub_output`, one row per chunk number (a chunk sent twice across an agent crash is kept
//! once), and served by `GET /api/v1/messages/{id}/output` as they come. When the final
//! reply arrives, the message's reply gets the whole output back: every chunk's, then the
//! final reply's own remainder — so it reads like an `exec` reply.

use crate::api::{
    ApiError, ApiResult, Count, ErrorBody, authorize, internal, long_poll, query, settled,
};
use crate::{Hub, db};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use rusqlite::{Connection, params};
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
    c: &Connection,
    id: &str,
    node: &str,
    n: u64,
    body: &Value,
    now: u64,
) -> rusqlite::Result<bool> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let added = c.execute(
        "INSERT OR IGNORE INTO hub_output (id, n, stdout, stderr, at_ms)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS
             (SELECT 1 FROM hub_messages WHERE id = ?1 AND node = ?6 AND state != 'replied')",
        params![
            id,
            n as i64,
            text("stdout"),
            text("stderr"),
            now as i64,
            node
        ],
    )?;
    Ok(added == 1)
}

/// The final reply `body` of message `id` with the streamed output put back in front of
/// its own (unchanged when nothing was streamed).
pub fn assemble(c: &Connection, id: &str, mut body: Value) -> rusqlite::Result<Value> {
    if body.get("chunks").and_then(Value::as_u64).unwrap_or(0) == 0 {
        return Ok(body);
    }
    let (mut out, mut err) = (String::new(), String::new());
    for chunk in chunks(c, id, 0, u64::MAX)? {
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

/// One chunk of a message's streamed output.
#[derive(Serialize, Clone, Debug, ToSchema)]
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

/// Chunks of message `id` after number `after`, at most `limit`.
pub fn chunks(c: &Connection, id: &str, after: u64, limit: u64) -> rusqlite::Result<Vec<Chunk>> {
    let mut stmt = c.prepare_cached(
        "SELECT n, stdout, stderr, at_ms FROM hub_output WHERE id = ?1 AND n > ?2
         ORDER BY n LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![id, after as i64, limit.min(i64::MAX as u64) as i64],
        |r| {
            Ok(Chunk {
                n: r.get::<_, i64>(0)? as u64,
                stdout: r.get(1)?,
                stderr: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
            })
        },
    )?;
    rows.collect()
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
            .read(|c| {
                let Some(m) = db::message(c, &id)? else {
                    return Ok(None);
                };
                Ok(Some((m.state, chunks(c, &id, q.after.0, 100)?)))
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
