//! The methods a node answers (DESIGN.md §2.2), each returning the reply's JSON body.
//! Policy was checked before any of these run. Implemented here: `exec` (through the
//! detached runner), `ops.ps`, `service.start|stop|restart|reload|status`, `hello`
//! (the node's facts), `events.query`, `logs.query`, `tail`, `state.apply` (desired
//! state, with rollback), `apply.cancel` (stops the apply in progress; priority lane),
//! `agent.update` (self-update through the launcher).

use super::runner;
use crate::service::ControlOp;
use crate::supervisor::Supervisor;
use reeve_delivery::envelope::Request;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default time limit of a method without `method_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a method needs from the agent.
pub struct Ctx {
    /// The supervisor.
    pub sup: Arc<Supervisor>,
    /// The event log.
    pub log: crate::events::EventLog,
    /// The data directory (run directories live there).
    pub data_dir: std::path::PathBuf,
    /// This node's name.
    pub node: String,
    /// Modules and desired state.
    pub modules: Arc<crate::modules::Modules>,
    /// Self-update.
    pub updater: Arc<crate::update::Updater>,
    /// Requests running now, by id (`ops.ps` lists them).
    pub running: std::sync::Mutex<std::collections::BTreeMap<String, Value>>,
}

/// The methods this node answers (`ops.ps` lists them).
pub const METHODS: &[&str] = &[
    "exec",
    "exec.stream",
    "tail",
    "http.get",
    "hello",
    "ops.ps",
    "events.query",
    "logs.query",
    "service.start",
    "service.stop",
    "service.restart",
    "service.reload",
    "service.action",
    "service.status",
    "state.apply",
    "apply.cancel",
    "agent.update",
];

/// An error reply.
pub fn error(msg: impl Into<String>) -> Value {
    json!({ "status": "error", "error": msg.into() })
}

/// Is `method` one with side effects that must run at most once (fenced, detached)?
pub fn at_most_once(method: &str) -> bool {
    matches!(method, "exec" | "exec.stream")
}

/// The `argv` of an `exec` request.
pub(crate) fn argv(args: &Value) -> Result<Vec<String>, String> {
    let list = args
        .get("argv")
        .and_then(Value::as_array)
        .ok_or("exec needs args.argv, a list of strings")?;
    let argv: Vec<String> = list
        .iter()
        .map(|a| a.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or("args.argv must hold only strings")?;
    if argv.is_empty() || argv[0].is_empty() {
        return Err("args.argv is empty".into());
    }
    Ok(argv)
}

/// Runs `req` and returns the reply's body.
/// `by_hub`: the hub's own key authorized it (dashboard actions).
pub async fn call(ctx: &Arc<Ctx>, req: &Request, actor: &str, by_hub: bool) -> Value {
    let timeout = req
        .method_timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    match req.method.as_str() {
        "exec" => match argv(&req.args) {
            Ok(argv) => {
                let dir = runner::run_dir(&ctx.data_dir, &req.id);
                json!(runner::run(&dir, &argv, timeout).await)
            }
            Err(e) => error(e),
        },
        "ops.ps" => {
            let running: Vec<Value> = ctx
                .running
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            json!({ "status": "ok", "services": ctx.sup.list(), "methods": METHODS, "running": running })
        }
        "hello" => json!({ "status": "ok", "facts": facts(ctx) }),
        "events.query" => {
            let q = reeve_store::EventQuery {
                service: req
                    .args
                    .get("service")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                since_ms: req.args.get("since_ms").and_then(Value::as_u64),
                after_id: None,
                limit: Some(
                    req.args
                        .get("limit")
                        .and_then(Value::as_u64)
                        .unwrap_or(100)
                        .min(1000) as u32,
                ),
                oldest: false,
            };
            match ctx.log.query(q).await {
                Ok(ev) => json!({ "status": "ok", "events": ev }),
                Err(e) => error(format!("{e:#}")),
            }
        }
        "apply.cancel" => match ctx.modules.cancel_apply(actor) {
            Some(id) => json!({ "status": "ok", "cancelled": id }),
            None => error("no apply is in progress"),
        },
        "state.apply" => {
            // `force` (a downgrade) only from an operator's own key, never the hub's.
            let mut args = req.args.clone();
            let force = args
                .as_object_mut()
                .and_then(|o| o.remove("force"))
                .and_then(|f| f.as_bool())
                .unwrap_or(false);
            if force && by_hub {
                return error(
                    "a forced (downgrading) apply must be signed by an operator's key, not the hub's",
                );
            }
            match serde_json::from_value::<reeve_modules::plan::DesiredState>(args) {
                Ok(desired) => match ctx
                    .modules
                    .apply_state(desired, &ctx.sup, actor, force)
                    .await
                {
                    Ok(report) => {
                        let ok = matches!(report.outcome.as_str(), "applied" | "nothing_to_do");
                        let mut v =
                            json!({ "status": if ok { "ok" } else { "error" }, "report": report });
                        if !ok {
                            v["error"] = json!(format!(
                                "{}: {}",
                                report.outcome,
                                report.error.clone().unwrap_or_default()
                            ));
                        }
                        v
                    }
                    Err(e) => error(e.to_string()),
                },
                Err(e) => error(format!("invalid desired state: {e}")),
            }
        }
        "agent.update" => agent_update(ctx, req, by_hub).await,
        "logs.query" => {
            let Some(name) = req.args.get("name").and_then(Value::as_str) else {
                return error("logs.query needs args.name (a service)");
            };
            if ctx.sup.get(name).is_none() {
                return error(format!("no service named {name:?}"));
            }
            let n = req
                .args
                .get("lines")
                .and_then(Value::as_u64)
                .unwrap_or(100)
                .min(10_000) as usize;
            json!({ "status": "ok", "service": name, "lines": service_log(ctx, name, n) })
        }
        "tail" => tail(&req.args),
        "http.get" => http_get(ctx, req).await,
        m if m.starts_with("service.") => {
            service(ctx, &m["service.".len()..], &req.args, actor).await
        }
        other => error(format!("unknown method {other:?}")),
    }
}

async fn service(ctx: &Arc<Ctx>, verb: &str, args: &Value, actor: &str) -> Value {
    let Some(name) = args.get("name").and_then(Value::as_str) else {
        return error("service methods need args.name");
    };
    let op = match verb {
        "start" => ControlOp::Start,
        "stop" => ControlOp::Stop,
        "restart" => ControlOp::Restart,
        "reload" => ControlOp::Reload,
        "action" => match args.get("action").and_then(Value::as_str) {
            Some(a) => ControlOp::Action(a.to_string()),
            None => return error("service.action needs args.action"),
        },
        "status" => {
            return match ctx.sup.list().into_iter().find(|s| s.name == name) {
                Some(s) => {
                    json!({ "status": "ok", "service": s, "log": service_log(ctx, name, 20) })
                }
                None => error(format!("no service named {name:?}")),
            };
        }
        other => return error(format!("unknown method service.{other}")),
    };
    let Some(h) = ctx.sup.get(name) else {
        return error(format!("no service named {name:?}"));
    };
    let before = h.status();
    match h.control(op.clone(), actor).await {
        Ok(()) => {
            crate::api::wait_outcome(&h, &op, &before).await;
            let s = ctx.sup.list().into_iter().find(|s| s.name == name);
            json!({ "status": "ok", "service": s })
        }
        Err(e) => error(e.to_string()),
    }
}

fn service_log(ctx: &Ctx, name: &str, n: usize) -> Vec<String> {
    crate::logs::tail(&ctx.data_dir.join("logs").join(name.replace('/', "~")), n)
}

/// `tail`: the last lines of a file (off unless the policy names who may call it; an
/// absolute path is read as the agent's user can).
/// `tail`: the last `args.lines` (default 100) lines of `args.path`, from its last MiB.
pub(crate) fn tail(args: &Value) -> Value {
    let Some(path) = args
        .get("path")
        .or_else(|| args.get("file"))
        .and_then(Value::as_str)
    else {
        return error("tail needs args.path");
    };
    let n = args
        .get("lines")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .min(10_000) as usize;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return error(format!("cannot open {path}: {e}")),
    };
    // The end of the file is enough: at most 1 MiB is read.
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(1 << 20);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return error(format!("cannot read {path}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = f.take(1 << 20).read_to_end(&mut buf) {
        return error(format!("cannot read {path}: {e}"));
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    json!({ "status": "ok", "path": path, "lines": lines[from..] })
}

/// `http.get`: fetches `args.url` (http or https, system certificates) from the node and
/// answers the status, content type and body (at most `args.max_bytes`, default and cap
/// 1 MiB). Off unless the policy names who may call it. An HTTP status of 400 or more is an
/// error reply that still carries the body.
async fn http_get(ctx: &Ctx, req: &Request) -> Value {
    let Some(url) = req.args.get("url").and_then(Value::as_str) else {
        return error("http.get needs args.url");
    };
    let max = req
        .args
        .get("max_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(1 << 20)
        .min(1 << 20) as usize;
    let timeout =
        Duration::from_millis(req.method_timeout_ms.unwrap_or(10_000).clamp(100, 300_000));
    match ctx.modules.http_get(url, max, timeout).await {
        Ok(mut done) => {
            let code = done.get("http_status").and_then(Value::as_u64).unwrap_or(0);
            if let Some(o) = done.as_object_mut() {
                o.insert("url".into(), json!(url));
                if code >= 400 {
                    o.insert("status".into(), json!("error"));
                    o.insert("error".into(), json!(format!("GET {url}: HTTP {code}")));
                } else {
                    o.insert("status".into(), json!("ok"));
                }
            }
            done
        }
        Err(e) => error(e.to_string()),
    }
}

/// What the node tells the hub about itself (`hello`).
pub fn facts(ctx: &Ctx) -> Value {
    let services = ctx.sup.list();
    let running = services
        .iter()
        .filter(|s| s.state == reeve_proto::api::ServiceState::Running)
        .count();
    json!({
        "agent_version": ctx.updater.version(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "hostname": hostname(),
        "services": services.len(),
        "services_running": running,
        "service_states": services.iter().map(|s| json!({"name": s.name, "state": s.state.to_string(), "pid": s.pid, "restarts": s.restarts})).collect::<Vec<_>>(),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `agent.update`: stages the new agent; the switch happens once this reply is stored
/// (`Node::run_loaded`), so the next agent never runs the request again.
async fn agent_update(ctx: &Ctx, req: &Request, by_hub: bool) -> Value {
    let update: crate::update::UpdateRequest = match serde_json::from_value(req.args.clone()) {
        Ok(u) => u,
        Err(e) => return error(format!("invalid agent.update arguments: {e}")),
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    match ctx.updater.stage(&ctx.modules, &update, by_hub, &tx).await {
        Ok(staged) => {
            let v = json!({
                "status": "ok",
                "from": staged.from,
                "to": staged.to.version,
                "trial_timeout_ms": staged.timeout.as_millis() as u64,
                "note": "the agent restarts into the new version on trial; an agent_update event tells how it ended",
            });
            ctx.updater.hold(staged);
            v
        }
        Err(e) => error(e.to_string()),
    }
}

/// Is `p` a relative path that stays inside its base (no `..`, not absolute)?
pub fn confined(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}
