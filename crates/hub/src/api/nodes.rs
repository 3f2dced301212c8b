//! Nodes: joining with a one-time token, the node list and one node, removal, and the
//! dashboard's requests to a node (signed by the hub on the operator's behalf).

use super::{
    ApiError, ApiResult, Count, ErrorBody, authorize, bad, internal, json_body, page, query,
};
use crate::db::{self, fleet};
use crate::{Hub, now_ms};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use reeve_delivery::join;
use reeve_delivery::keys::PublicKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The largest body of a join or a dashboard request: a few hundred bytes in use (a join
/// needs no token in the header, so it must stay cheap to refuse).
const SMALL_BODY_LIMIT: usize = 64 << 10;

/// Body of `POST /api/v1/join`. The token's secret is not in it: the node proves the
/// token with a signature by the key the secret seeds (see `reeve_delivery::join`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The node's name: 1-63 lowercase letters, digits, '-', '.', '_', starting with a
    /// letter or digit; not `hub`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub node: String,
    /// The node's public key (base64).
    pub key: String,
    /// The join token key's public half (base64).
    pub token_key: String,
    /// The token key's Ed25519 signature (base64) over the JSON array
    /// `[hub key fingerprint, node, key]`, domain `reeve-join-v1\0`.
    pub proof: String,
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
    /// The hub key's signature (base64) over the JSON array `[node, key, hub_time_ms]`,
    /// domain `reeve-joined-v1\0`: the node takes the hub's time only with it.
    pub signature: String,
}

/// Enrols a node with a one-time join token (`reeve agent join`).
#[utoipa::path(post, path = "/api/v1/join", tag = "nodes", security(()), request_body = JoinBody,
    responses(
        (status = 200, description = "Enrolled", body = Joined),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 403, description = "Unknown, used or expired token, or a name taken by another key", body = ErrorBody)))]
pub(super) async fn join(State(hub): State<Arc<Hub>>, body: axum::body::Body) -> ApiResult {
    let invalid = |msg: String| {
        hub.metrics.join("invalid");
        bad(msg)
    };
    let b: JoinBody = json_body(body, SMALL_BODY_LIMIT, "a valid join request")
        .await
        .map_err(|ApiError(_, e)| invalid(e))?;
    if !valid_node_name(&b.node) {
        return Err(invalid(format!(
            "node name {:?}: use 1-63 lowercase letters, digits, '-', '.', '_' (not \"hub\")",
            b.node
        )));
    }
    let key = PublicKey::from_base64(&b.key).map_err(|e| invalid(format!("key: {e}")))?;
    let token_key =
        PublicKey::from_base64(&b.token_key).map_err(|e| invalid(format!("token_key: {e}")))?;
    let proved = join::proof_valid(&token_key, &hub.public_key(), &b.node, &b.key, &b.proof);
    let (now, token64) = (now_ms(), token_key.to_base64());
    let (node, key64) = (b.node.clone(), key.to_base64());
    let outcome: Result<(), String> = hub
        .writer
        .run(move |s| {
            let f = fleet(s);
            let refuse = |why: &str| -> Result<Result<(), String>, reeve_delivery::store::StoreError> {
                f.log_error(now, Some(&node), "join_refused", why)?;
                Ok(Err(why.to_string()))
            };
            match f.join_token(&token64)? {
                None => return refuse("unknown join token"),
                // Checked after the lookup, so an unknown token reads as one whichever
                // proof came with it.
                Some(_) if !proved => {
                    return refuse("the token's proof does not match this node, key and hub");
                }
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
            f.use_join_token(&token64, &node)?;
            Ok(Ok(()))
        })
        .await
        .map_err(|e| internal(e.into()))?;
    hub.bump();
    match outcome {
        Ok(()) => {
            hub.metrics.join("enrolled");
            let hub_time_ms = now_ms();
            Ok(Json(Joined {
                signature: join::sign_joined(&hub.key, &b.node, &b.key, hub_time_ms),
                node: b.node,
                hub_key: hub.public_key().to_base64(),
                hub_time_ms,
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

pub(super) fn with_online(hub: &Hub, mut n: db::NodeRow) -> db::NodeRow {
    n.online = hub.is_online(&n.name);
    n
}

/// Nodes by name, with their connection state and facts.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", params(NodesQuery),
    responses(
        (status = 200, description = "A page of nodes", body = Vec<db::NodeRow>,
            headers(("X-Total-Count" = u64, description = "How many nodes match, all pages together"))),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)))]
pub(super) async fn nodes(
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
pub(super) async fn node(
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
pub(super) async fn remove_node(
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
pub(super) async fn node_request(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    let op = authorize(&hub, &headers, "operator")?;
    let b: NodeRequestBody = json_body(body, SMALL_BODY_LIMIT, "a valid node request").await?;
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
