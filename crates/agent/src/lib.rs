//! The reeve agent: supervises services through per-service buddies, keeps the node's event
//! log, and serves the local API on a Unix socket. It opens no TCP port.
//!
//! Entry point: [`run`]. The pieces: `supervisor` (the set of services, order, reload),
//! `service` (one actor per service, the only code that talks to its buddy), `buddy_conn`
//! (the buddy protocol's client side), `events` (the store's writer thread and live
//! subscribers), `health` (checks), `api` (routes), `client` (the CLI's side of the API).

pub mod api;
pub mod apply;
pub mod buddy_conn;
pub mod client;
pub mod config;
pub mod events;
pub mod health;
pub mod lock;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod modules;
pub mod node;
pub mod orphan;
pub mod service;
pub mod steward_socket;
pub mod supervisor;
pub mod update;

use anyhow::{Context, Result, bail};
use config::AgentConfig;
use events::{EventLog, event, now_ms};
use reeve_proto::api::AgentInfo;
use reeve_proto::event::EventKind;
use std::sync::Arc;
use std::time::Duration;

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs the agent until SIGTERM or SIGINT (or `shutdown` resolves). Services keep running
/// under their buddies after the agent exits.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    if config::is_root() && !cfg.allow_root {
        bail!(
            "refusing to run as root: the agent should run as an unprivileged user \
             (give it CAP_SETUID/CAP_SETGID to run services as other users), or pass --allow-root"
        );
    }
    memory::single_arena();
    buddy_conn::create_private_dir(&cfg.data_dir)?;
    let _lock = lock::DataDirLock::acquire(&cfg.data_dir)?;
    if !cfg.buddy_path.is_file() && which(&cfg.buddy_path).is_none() {
        bail!(
            "the buddy binary {} was not found; install reeve-buddy beside reeve or pass --buddy-path",
            cfg.buddy_path.display()
        );
    }
    let listener = bind_socket(&cfg.socket)?;
    let log = EventLog::open(&cfg.store_path())?;
    let metrics = metrics::bind(&cfg, &log).await?;
    let started_ms = now_ms();
    log.record(event(
        None,
        EventKind::AgentStarted,
        "agent",
        format!(
            "agent {} started (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ),
        serde_json::json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}),
    ))
    .await?;
    let updater = Arc::new(update::Updater::from_env());
    updater.record_outcome(&log).await;
    let cfg = Arc::new(cfg);
    let modules = Arc::new(modules::Modules::new(cfg.clone(), log.clone()));
    let module_services = modules.running_services().await;
    let sup = supervisor::Supervisor::start(cfg.clone(), log.clone(), module_services).await?;
    if let Some(r) = modules.recover(&sup).await {
        tracing::warn!(id = %r.id, outcome = %r.outcome, "finished an apply interrupted by a restart");
    }
    let fleet_node = match node::Node::open(
        &cfg.data_dir,
        sup.clone(),
        log.clone(),
        modules.clone(),
        updater.clone(),
    ) {
        Ok(Some(n)) => {
            node::spawn(n.clone()).await?;
            Some(n)
        }
        Ok(None) => {
            tracing::info!("not joined to a hub: running stand-alone");
            None
        }
        Err(e) => return Err(e.context("cannot start the node's hub link")),
    };
    // The buddies are re-attached: on a trial boot, healthy once the hub is reached too.
    updater.report_health(
        fleet_node.clone().map(|n| {
            let connected: Box<dyn Fn() -> bool + Send + Sync> = Box::new(move || n.is_connected());
            connected
        }),
        log.clone(),
    );
    if updater.on_trial() {
        // Once committed, the buddies move to this agent's buddy binary (their services
        // keep running); buddies too old to re-execute keep theirs.
        let (u, s) = (updater.clone(), sup.clone());
        tokio::spawn(async move {
            u.committed().await;
            let Some(path) = s.buddy_binary() else { return };
            let path = path.display().to_string();
            for (name, r) in s.reexec_buddies(&path, "agent", true).await {
                match r {
                    Ok(()) => tracing::info!(service = %name, "buddy re-executed into {path}"),
                    Err(e) => tracing::warn!(service = %name, "buddy not re-executed: {e}"),
                }
            }
        });
    }
    let state = api::ApiState {
        sup: sup.clone(),
        modules: modules.clone(),
        log: log.clone(),
        info: Arc::new(AgentInfo {
            version: updater.version(),
            pid: std::process::id(),
            data_dir: cfg.data_dir.display().to_string(),
            services_dir: cfg.services_dir.display().to_string(),
            started_ms,
        }),
        logs_root: cfg.data_dir.join("logs"),
        node: fleet_node.clone(),
        updater: updater.clone(),
    };
    let listener = steward_socket::split(listener, fleet_node.clone()).context("control socket")?;
    if let Some(m) = metrics {
        m.serve(sup.clone(), fleet_node, &cfg.data_dir);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(socket = %cfg.socket.display(), services = sup.list().len(), "agent ready");
    memory::trim_heap();
    // Once more when the start-up transients (buddy spawns, first frames) are gone.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        memory::trim_heap();
    });

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot watch SIGINT")?;
    let mut prune = tokio::time::interval_at(tokio::time::Instant::now(), PRUNE_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let r = sup.reload("signal:SIGHUP").await;
                tracing::info!(added = ?r.added, changed = ?r.changed, removed = ?r.removed, errors = r.errors.len(), "reloaded services");
            }
            _ = prune.tick() => {
                let older = now_ms().saturating_sub(cfg.events_max_age.as_millis() as u64);
                match log.prune(older, cfg.events_max_count).await {
                    Ok(n) if n > 0 => tracing::info!(dropped = n, "event retention applied"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "event retention failed"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut shutdown => break,
            _ = updater.exit_requested() => {
                tracing::info!("exiting: the launcher switches to the new agent");
                break;
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let _ = std::fs::remove_file(&cfg.socket);
    log.record(event(
        None,
        EventKind::AgentStopped,
        "agent",
        "agent stopped; services keep running under their buddies",
        serde_json::Value::Null,
    ))
    .await?;
    Ok(())
}

/// `p` looked up in `PATH` when it is a bare name; `None` for a path or when not found.
pub(crate) fn which(p: &std::path::Path) -> Option<std::path::PathBuf> {
    if p.components().count() > 1 {
        return None;
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

/// Binds the control socket in a private directory, replacing a stale socket file but
/// refusing one that another process still answers on.
fn bind_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    let dir = path.parent().context("the socket path has no directory")?;
    buddy_conn::create_private_dir(dir)?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another process is already serving the control socket {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind the control socket {}", path.display()))
}
