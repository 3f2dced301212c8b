//! The local API: HTTP/JSON over the agent's Unix control socket (documented in
//! `docs/local-api.md`). The caller's uid, from the socket's peer credentials, is the
//! actor recorded with every control action.

use crate::events::EventLog;
use crate::service::{ControlError, ControlOp};
use crate::supervisor::Supervisor;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::{self, ConnectInfo};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reeve_proto::api::{AgentInfo, ApiError, LogLines, ServiceState, ServiceStatus};
use reeve_store::EventQuery;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The services.
    pub sup: Arc<Supervisor>,
    /// The installed modules.
    pub modules: Arc<crate::modules::Modules>,
    /// The event log.
    pub log: EventLog,
    /// What `GET /v1/agent` answers.
    pub info: Arc<AgentInfo>,
    /// Log directory root (one folder per service).
    pub logs_root: std::path::PathBuf,
    /// The node's fleet side, when it joined a hub.
    pub node: Option<Arc<crate::node::Node>>,
    /// Self-update.
    pub updater: Arc<crate::update::Updater>,
}

/// The peer of a control-socket connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's uid, if the kernel told us.
    pub uid: Option<u32>,
}

impl connect_info::Connected<axum::serve::IncomingStream<'_, crate::steward_socket::HttpOnly>>
    for Peer
{
    fn connect_info(
        stream: axum::serve::IncomingStream<'_, crate::steward_socket::HttpOnly>,
    ) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

impl Peer {
    fn actor(&self) -> String {
        match self.uid {
            Some(u) => format!("uid:{u}"),
            None => "uid:?".into(),
        }
    }
}

/// An error answer: a status and a message for the client.
pub struct AppError(StatusCode, String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<ControlError> for AppError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::BadRequest(m) => Self(StatusCode::BAD_REQUEST, m),
            ControlError::Failed(m) => Self(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

fn internal(e: anyhow::Error) -> AppError {
    tracing::error!(error = %format!("{e:#}"), "local API request failed");
    AppError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

fn not_found(name: &str) -> AppError {
    AppError(StatusCode::NOT_FOUND, format!("no service named {name:?}"))
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/agent", get(agent_info))
        .route("/v1/agent/update", get(update_status).post(update_agent))
        .route("/v1/buddies/reexec", post(reexec_buddies))
        .route("/v1/services", get(list_services))
        .route("/v1/services/{name}", get(get_service))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/actions/{action}", post(action))
        .route("/v1/services/{name}/{op}", post(control))
        .route("/v1/all/{op}", post(control_all))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
        .route("/v1/reload", post(reload))
        .route("/v1/node/leave", post(leave))
        .route("/v1/node/rotate-key", post(rotate_key))
        .route("/v1/modules", get(list_modules))
        .route("/v1/state/plan", post(plan_state))
        .route("/v1/state/apply", post(apply_state))
        .route("/v1/state/cancel", post(cancel_apply))
        .route("/v1/modules/install", post(install_module))
        .route("/v1/modules/{name}/configure", post(configure_module))
        .route("/v1/modules/{name}/{op}", post(module_op))
        .fallback(|| async {
            AppError(
                StatusCode::NOT_FOUND,
                "no such route; see docs/local-api.md".into(),
            )
        })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: crate::steward_socket::HttpOnly,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn agent_info(State(s): State<ApiState>) -> Json<AgentInfo> {
    Json((*s.info).clone())
}

async fn list_services(State(s): State<ApiState>) -> Json<Vec<ServiceStatus>> {
    Json(s.sup.list())
}

async fn get_service(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceStatus>, AppError> {
    s.sup
        .get(&name)
        .map(|h| Json(h.status()))
        .ok_or_else(|| not_found(&name))
}

#[derive(Deserialize)]
struct WaitQuery {
    /// Wait for the request's outcome (default true).
    wait: Option<bool>,
}

async fn control(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, op)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<ServiceStatus>, AppError> {
    let op = match op.as_str() {
        "start" => ControlOp::Start,
        "stop" => ControlOp::Stop,
        "restart" => ControlOp::Restart,
        "reload" => ControlOp::Reload,
        other => {
            return Err(AppError(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown operation {other:?}: use start, stop, restart, reload or actions/NAME"
                ),
            ));
        }
    };
    let h = s.sup.get(&name).ok_or_else(|| not_found(&name))?;
    let before = h.status();
    h.control(op.clone(), &peer.actor()).await?;
    if q.wait.unwrap_or(true) {
        wait_outcome(&h, &op, &before).await;
    }
    Ok(Json(h.status()))
}

/// Waits (bounded by the service's kill timeout) until a control operation took effect:
/// stopped after a stop, a new pid after a start or restart.
pub async fn wait_outcome(
    h: &crate::service::ServiceHandle,
    op: &ControlOp,
    before: &ServiceStatus,
) {
    let kill = Duration::from_millis(h.def().stop.kill_timeout_ms);
    match op {
        ControlOp::Stop => {
            h.wait_for(kill + Duration::from_secs(5), |st| {
                matches!(st.state, ServiceState::Stopped | ServiceState::Failed)
            })
            .await;
        }
        // Starting a service that already runs changes nothing: nothing to wait for.
        ControlOp::Start if before.pid.is_some() => {}
        ControlOp::Start | ControlOp::Restart => {
            h.wait_for(kill + Duration::from_secs(10), |st| {
                (st.pid.is_some() && st.pid != before.pid || st.state == ServiceState::BackingOff)
                    && st.state != ServiceState::Stopping
                    || st.state == ServiceState::Failed
            })
            .await;
        }
        _ => {}
    }
}

async fn action(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<ServiceStatus>, AppError> {
    let h = s.sup.get(&name).ok_or_else(|| not_found(&name))?;
    h.control(ControlOp::Action(action), &peer.actor()).await?;
    Ok(Json(h.status()))
}

#[derive(serde::Serialize)]
struct AllReport {
    not_done: Vec<String>,
}

async fn control_all(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(op): Path<String>,
) -> Result<Json<AllReport>, AppError> {
    let not_done = match op.as_str() {
        "start" => s.sup.start_all(&peer.actor()).await,
        "stop" => s.sup.stop_all(&peer.actor()).await,
        other => {
            return Err(AppError(
                StatusCode::NOT_FOUND,
                format!("unknown operation {other:?}: use start or stop"),
            ));
        }
    };
    Ok(Json(AllReport { not_done }))
}

async fn reload(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Json<reeve_proto::api::ReloadReport> {
    Json(s.sup.reload(&peer.actor()).await)
}

/// How long `POST /v1/node/leave` waits for the hub's confirmation.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

async fn leave(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, AppError> {
    let Some(node) = s.node else {
        return Err(AppError(
            StatusCode::CONFLICT,
            "this agent has not joined a hub: there is nothing to leave".into(),
        ));
    };
    if node.has_left() {
        return Err(AppError(
            StatusCode::CONFLICT,
            format!("{} has left the fleet already", node.name()),
        ));
    }
    let left = node.leave(LEAVE_WAIT).await.map_err(internal)?;
    Ok(Json(serde_json::json!({
        "node": node.name(),
        "state": if left { "left" } else { "leaving" },
    })))
}

/// How long `POST /v1/node/rotate-key` waits for the hub to record the rotation.
const ROTATE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// The overlap asked for when the request names none (7 days).
const DEFAULT_OVERLAP_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    /// How long the hub keeps accepting the old key, in ms.
    overlap_ms: Option<u64>,
}

async fn rotate_key(
    State(s): State<ApiState>,
    Json(req): Json<RotateKey>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Some(node) = s.node else {
        return Err(AppError(
            StatusCode::CONFLICT,
            "this agent has not joined a hub: it has no fleet key to rotate".into(),
        ));
    };
    let overlap_ms = req.overlap_ms.unwrap_or(DEFAULT_OVERLAP_MS);
    if overlap_ms > reeve_delivery::rotation::MAX_OVERLAP_MS {
        return Err(AppError(
            StatusCode::BAD_REQUEST,
            "overlap_ms: at most 90 days".into(),
        ));
    }
    let (key, done) = node
        .rotate_key(Duration::from_millis(overlap_ms), ROTATE_WAIT)
        .await
        .map_err(internal)?;
    Ok(Json(serde_json::json!({
        "node": node.name(),
        "key": key.to_base64(),
        "fingerprint": key.fingerprint(),
        "overlap_ms": overlap_ms,
        "state": if done { "rotated" } else { "pending" },
    })))
}

#[derive(Deserialize)]
struct EventsQuery {
    service: Option<String>,
    since_ms: Option<u64>,
    after_id: Option<i64>,
    limit: Option<u32>,
}

impl From<EventsQuery> for EventQuery {
    fn from(q: EventsQuery) -> Self {
        Self {
            service: q.service,
            since_ms: q.since_ms,
            after_id: q.after_id,
            limit: q.limit,
            oldest: false,
        }
    }
}

async fn events(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<reeve_proto::event::Event>>, AppError> {
    s.log.query(q.into()).await.map(Json).map_err(internal)
}

/// NDJSON: the stored events matching the query, then every new one as it is stored.
async fn events_stream(State(s): State<ApiState>, Query(q): Query<EventsQuery>) -> Response {
    let mut live = s.log.subscribe();
    let service = q.service.clone();
    let backlog_query: EventQuery = q.into();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let log = s.log.clone();
    tokio::spawn(async move {
        let mut last_id = backlog_query.after_id.unwrap_or(0);
        let send_backlog = backlog_query.after_id.is_some()
            || backlog_query.since_ms.is_some()
            || backlog_query.limit.is_some();
        if send_backlog {
            let Ok(backlog) = log.query(backlog_query).await else {
                return;
            };
            for e in backlog {
                last_id = last_id.max(e.id);
                if tx.send(Ok(ndjson(&e))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(e) => {
                    if e.id <= last_id
                        || service
                            .as_ref()
                            .is_some_and(|s| e.service.as_ref() != Some(s))
                    {
                        continue;
                    }
                    last_id = e.id;
                    if tx.send(Ok(ndjson(&e))).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Catch up from the store so a slow reader misses nothing.
                    let q = EventQuery {
                        service: service.clone(),
                        after_id: Some(last_id),
                        ..Default::default()
                    };
                    let Ok(missed) = log.query(q).await else {
                        return;
                    };
                    for e in missed {
                        last_id = last_id.max(e.id);
                        if tx.send(Ok(ndjson(&e))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn ndjson<T: serde::Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
    follow: Option<bool>,
}

async fn logs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, AppError> {
    if s.sup.get(&name).is_none() {
        return Err(not_found(&name));
    }
    let dir = s.logs_root.join(name.replace('/', "~"));
    let n = q.lines.unwrap_or(50).min(100_000);
    let lines = crate::logs::tail(&dir, n);
    if !q.follow.unwrap_or(false) {
        return Ok(Json(LogLines { lines }).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        for l in lines {
            if tx.send(Ok(Bytes::from(format!("{l}\n")))).await.is_err() {
                return;
            }
        }
        crate::logs::follow(&dir, tx).await;
    });
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn list_modules(
    State(s): State<ApiState>,
) -> Result<Json<Vec<reeve_modules::plan::InstalledModule>>, AppError> {
    s.modules.list().await.map(Json).map_err(AppError::from)
}

#[derive(Deserialize)]
struct InstallQuery {
    /// `name@version`.
    module: String,
    /// Allow a downgrade.
    force: Option<bool>,
}

/// NDJSON: `{"progress": …}` lines while downloading, then `{"done": module}` or
/// `{"error": "…"}`.
async fn install_module(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<InstallQuery>,
) -> Result<Response, AppError> {
    let module = crate::modules::parse_ref(&q.module)?;
    let (ptx, mut prx) = mpsc::channel::<serde_json::Value>(32);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let modules = s.modules.clone();
    let actor = peer.actor();
    tokio::spawn(async move {
        let work = modules.install(&module, q.force.unwrap_or(false), &actor, ptx);
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                Some(p) = prx.recv() => {
                    let _ = tx.send(Ok(ndjson(&p))).await;
                }
            }
        };
        let last = match result {
            Ok(m) => serde_json::json!({"done": m}),
            Err(e) => {
                serde_json::json!({"error": e.to_string(), "bad_request": matches!(e, ControlError::BadRequest(_))})
            }
        };
        let _ = tx.send(Ok(ndjson(&last))).await;
    });
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn configure_module(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Json(config): Json<serde_json::Value>,
) -> Result<Json<reeve_modules::plan::InstalledModule>, AppError> {
    s.modules
        .configure(&name, config, &s.sup, &peer.actor())
        .await
        .map(Json)
        .map_err(AppError::from)
}

async fn module_op(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, op)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let actor = peer.actor();
    let m = match op.as_str() {
        "start" => s.modules.start(&name, &s.sup, &actor).await?,
        "stop" => s.modules.stop(&name, &s.sup, &actor).await?,
        "uninstall" => {
            s.modules.uninstall(&name, &s.sup, &actor).await?;
            return Ok(Json(serde_json::json!({"uninstalled": name})));
        }
        other => {
            return Err(AppError(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown module operation {other:?}: use configure, start, stop or uninstall"
                ),
            ));
        }
    };
    Ok(Json(serde_json::to_value(m).unwrap_or_default()))
}

async fn plan_state(
    State(s): State<ApiState>,
    Json(desired): Json<reeve_modules::plan::DesiredState>,
) -> Result<Json<Vec<reeve_modules::plan::Step>>, AppError> {
    s.modules
        .plan_state(&desired)
        .await
        .map(Json)
        .map_err(AppError::from)
}

/// `POST /v1/state/cancel`: stops the apply in progress (it rolls back); answers
/// `{"cancelled": ID}`, or 409 when no apply is under way.
async fn cancel_apply(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Result<Json<serde_json::Value>, AppError> {
    match s.modules.cancel_apply(&peer.actor()) {
        Some(id) => Ok(Json(serde_json::json!({ "cancelled": id }))),
        None => Err(AppError(
            StatusCode::CONFLICT,
            "no apply is in progress".into(),
        )),
    }
}

async fn update_status(State(s): State<ApiState>) -> Json<crate::update::UpdateStatus> {
    Json(s.updater.status())
}

/// Stages the new agent, hands it to the launcher and answers; the agent exits right after.
async fn update_agent(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(req): Json<crate::update::UpdateRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let (tx, _rx) = mpsc::channel(1);
    let staged = s.updater.stage(&s.modules, &req, false, &tx).await?;
    let need_hub = s.node.as_ref().is_some_and(|n| n.is_connected());
    let body = serde_json::json!({
        "from": staged.from,
        "to": staged.to.version,
        "trial_timeout_ms": staged.timeout.as_millis() as u64,
        "need_hub": need_hub,
        "pid": std::process::id(),
    });
    s.updater
        .switch(staged, need_hub, &peer.actor(), &s.log)
        .await?;
    Ok(Json(body))
}

/// Body of `POST /v1/buddies/reexec`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReexecBody {
    /// The buddy binary to run (default: the agent's `buddy_path`).
    path: Option<String>,
}

/// Re-executes every buddy into the new buddy binary; the services keep running.
async fn reexec_buddies(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Option<Json<ReexecBody>>,
) -> Result<Json<serde_json::Value>, AppError> {
    let path = match body.and_then(|Json(b)| b.path) {
        Some(p) if std::path::Path::new(&p).is_absolute() => p,
        Some(p) => {
            return Err(AppError(
                StatusCode::BAD_REQUEST,
                format!("path {p:?} must be absolute"),
            ));
        }
        None => s
            .sup
            .buddy_binary()
            .map(|p| p.display().to_string())
            .ok_or_else(|| {
                AppError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the agent's buddy binary was not found".into(),
                )
            })?,
    };
    let results = s.sup.reexec_buddies(&path, &peer.actor(), false).await;
    let (done, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
    Ok(Json(serde_json::json!({
        "path": path,
        "done": done.into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "failed": failed
            .into_iter()
            .map(|(n, r)| serde_json::json!({"service": n, "error": r.err().map(|e| e.to_string())}))
            .collect::<Vec<_>>(),
    })))
}

/// Query of `POST /v1/state/apply`.
#[derive(Deserialize)]
struct ApplyQuery {
    /// Allow lower versions than the installed ones (local admins may).
    force: Option<bool>,
}

async fn apply_state(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<ApplyQuery>,
    Json(desired): Json<reeve_modules::plan::DesiredState>,
) -> Result<Json<crate::apply::ApplyReport>, AppError> {
    s.modules
        .apply_state(desired, &s.sup, &peer.actor(), q.force.unwrap_or(false))
        .await
        .map(Json)
        .map_err(AppError::from)
}
