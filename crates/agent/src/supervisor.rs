//! The set of services: loading the services directory, starting them in dependency order,
//! re-reading the directory on reload (touching only what changed), and stopping in reverse
//! order. Each service is owned by its actor (see `service`); this module owns only the map
//! from names to their handles.

use crate::buddy_conn;
use crate::config::AgentConfig;
use crate::events::{EventLog, event};
use crate::service::{self, ControlError, ControlOp, ServiceHandle};
use reeve_config::{ConfigError, ServiceDef, load_services_dir};
use reeve_proto::api::{Desired, ReloadReport, ServiceState, ServiceStatus};
use reeve_proto::buddy::Op;
use reeve_proto::event::EventKind;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long start-up waits for a service that others require to become ready.
const REQUIRED_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The services of this agent.
pub struct Supervisor {
    cfg: Arc<AgentConfig>,
    log: EventLog,
    services: RwLock<BTreeMap<String, ServiceHandle>>,
    /// Start order (names); stop order is its reverse.
    order: RwLock<Vec<String>>,
    reload_lock: Mutex<()>,
}

impl Supervisor {
    /// Loads the services directory and attaches to (or starts) every service in order.
    /// `module_services` are the services of the modules that were running (they have no
    /// file in the services directory).
    pub async fn start(
        cfg: Arc<AgentConfig>,
        log: EventLog,
        module_services: Vec<ServiceDef>,
    ) -> anyhow::Result<Arc<Self>> {
        let sup = Arc::new(Self {
            cfg,
            log,
            services: RwLock::new(BTreeMap::new()),
            order: RwLock::new(Vec::new()),
            reload_lock: Mutex::new(()),
        });
        let guard = sup.reload_lock.lock().await;
        let mut report = load_services_dir(&sup.cfg.services_dir);
        report.services.extend(module_services);
        sup.report_errors(&report.errors, "agent").await;
        let records: HashMap<String, _> = sup
            .log
            .services()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let invalid = invalid_names(&report.errors);
        let mut records = records;
        for batch in start_batches(&report.services) {
            let adds = batch.into_iter().map(|def| {
                let rec = records.remove(&def.name);
                sup.add(def, rec, &report.services)
            });
            futures_util::future::join_all(adds).await;
        }
        // Records of services whose file is gone (removed while the agent was down) —
        // unless the file is merely invalid, in which case the buddy keeps its service.
        for (name, _rec) in records {
            if invalid.contains(&name) {
                continue;
            }
            sup.retire_orphan_buddy(&name).await;
        }
        *sup.order.write().unwrap_or_else(|e| e.into_inner()) =
            report.services.iter().map(|d| d.name.clone()).collect();
        drop(guard);
        Ok(sup)
    }

    async fn add(
        &self,
        def: ServiceDef,
        rec: Option<reeve_store::ServiceRecord>,
        all: &[ServiceDef],
    ) {
        let name = def.name.clone();
        let required = is_required(&def, all);
        let handle = service::spawn(def, rec, self.cfg.clone(), self.log.clone()).await;
        if required && handle.status().desired == Desired::Running {
            handle
                .wait_for(REQUIRED_READY_TIMEOUT, |s| {
                    matches!(
                        s.state,
                        ServiceState::Running | ServiceState::Failed | ServiceState::Unhealthy
                    )
                })
                .await;
        }
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, handle);
    }

    /// A stored service without a file: shut its buddy down (stopping the service) and
    /// forget it.
    async fn retire_orphan_buddy(&self, name: &str) {
        let run_dir = self.cfg.run_dir(name);
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        if let Ok((mut conn, _)) = buddy_conn::BuddyConn::connect(&run_dir, u64::MAX, 1, tx).await {
            let _ = conn.send(Op::Shutdown).await;
            // Wait (bounded) for the buddy to finish stopping its service.
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some(m) = rx.recv().await {
                    if matches!(*m, buddy_conn::BuddyMsg::Closed { .. }) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = self
            .log
            .record(event(
                Some(name),
                EventKind::ConfigChanged,
                "agent",
                "service file removed: service stopped and forgotten",
                serde_json::Value::Null,
            ))
            .await;
        let _ = self.log.delete_service(name).await;
    }

    async fn report_errors(&self, errors: &[ConfigError], actor: &str) {
        for e in errors {
            tracing::warn!(error = %e, "invalid service definition");
            let _ = self
                .log
                .record(event(
                    None,
                    EventKind::ConfigInvalid,
                    actor,
                    e.to_string(),
                    json!({"file": e.file, "field": e.field, "reason": e.reason}),
                ))
                .await;
        }
    }

    /// Status of every service, in start order.
    pub fn list(&self) -> Vec<ServiceStatus> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        let order = self.order.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ServiceStatus> = order
            .iter()
            .filter_map(|n| services.get(n).map(ServiceHandle::status))
            .collect();
        for (n, h) in services.iter() {
            if !order.contains(n) {
                out.push(h.status());
            }
        }
        out
    }

    /// One service's handle.
    pub fn get(&self, name: &str) -> Option<ServiceHandle> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn handles_in_order(&self) -> Vec<ServiceHandle> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        let order = self.order.read().unwrap_or_else(|e| e.into_inner());
        order
            .iter()
            .filter_map(|n| services.get(n).cloned())
            .collect()
    }

    /// Starts every service in dependency order, waiting for each to be ready before the
    /// next. Returns the names that did not become ready.
    pub async fn start_all(&self, actor: &str) -> Vec<String> {
        let mut not_ready = Vec::new();
        for h in self.handles_in_order() {
            if let Err(e) = h.control(ControlOp::Start, actor).await {
                not_ready.push(format!("{}: {e}", h.def().name));
                continue;
            }
            let ok = h
                .wait_for(REQUIRED_READY_TIMEOUT, |s| s.state == ServiceState::Running)
                .await;
            if !ok {
                not_ready.push(h.def().name.clone());
            }
        }
        not_ready
    }

    /// The buddy binary new buddies run, as an absolute path (looked up in `PATH` when the
    /// setting is a bare name).
    pub fn buddy_binary(&self) -> Option<std::path::PathBuf> {
        let p = &self.cfg.buddy_path;
        let found = if p.components().count() > 1 {
            Some(p.clone())
        } else {
            crate::which(p)
        };
        found.and_then(|f| std::fs::canonicalize(f).ok())
    }

    /// Re-executes every service's buddy into the buddy binary `path`, one after another;
    /// the services keep running. `only_other`: skip buddies that already run `path`.
    /// Answers each service's outcome.
    pub async fn reexec_buddies(
        &self,
        path: &str,
        actor: &str,
        only_other: bool,
    ) -> Vec<(String, Result<(), ControlError>)> {
        let wanted = std::fs::canonicalize(path).ok();
        let mut out = Vec::new();
        for h in self.handles_in_order() {
            if only_other {
                let exe = h
                    .status()
                    .buddy_pid
                    .and_then(|b| std::fs::read_link(format!("/proc/{b}/exe")).ok());
                if exe.is_none() || exe == wanted {
                    continue;
                }
            }
            let r = h.reexec(path, actor).await;
            out.push((h.def().name.clone(), r));
        }
        out
    }

    /// Stops every service in reverse dependency order, each completely before the next.
    pub async fn stop_all(&self, actor: &str) -> Vec<String> {
        let mut failed = Vec::new();
        for h in self.handles_in_order().into_iter().rev() {
            if let Err(e) = h.control(ControlOp::Stop, actor).await {
                failed.push(format!("{}: {e}", h.def().name));
                continue;
            }
            let limit =
                Duration::from_millis(h.def().stop.kill_timeout_ms) + Duration::from_secs(5);
            if !h
                .wait_for(limit, |s| {
                    matches!(s.state, ServiceState::Stopped | ServiceState::Failed)
                })
                .await
            {
                failed.push(h.def().name.clone());
            }
        }
        failed
    }

    /// Carries out a control request on one service.
    pub async fn control(
        &self,
        name: &str,
        op: ControlOp,
        actor: &str,
    ) -> Result<(), ControlError> {
        let h = self
            .get(name)
            .ok_or_else(|| ControlError::BadRequest(format!("no service named {name:?}")))?;
        h.control(op, actor).await
    }

    /// Adds (or updates) a module's services and starts them, in order.
    pub async fn add_module_services(&self, defs: Vec<ServiceDef>, actor: &str) -> Vec<String> {
        let _guard = self.reload_lock.lock().await;
        let mut not_ready = Vec::new();
        for def in defs {
            let existing = self.get(&def.name);
            let h = match existing {
                Some(mut h) => {
                    if h.def() != &def {
                        h.update(def.clone()).await;
                        self.services
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(def.name.clone(), h.clone());
                    }
                    h
                }
                None => {
                    let name = def.name.clone();
                    let all = vec![def.clone()];
                    self.add(def, None, &all).await;
                    let mut order = self.order.write().unwrap_or_else(|e| e.into_inner());
                    if !order.contains(&name) {
                        order.push(name.clone());
                    }
                    drop(order);
                    match self.get(&name) {
                        Some(h) => h,
                        None => continue,
                    }
                }
            };
            if let Err(e) = h.control(ControlOp::Start, actor).await {
                not_ready.push(format!("{}: {e}", h.def().name));
            }
        }
        not_ready
    }

    /// Restarts every service of module `module` (after its configuration changed).
    pub async fn restart_module_services(&self, module: &str, actor: &str) {
        let prefix = format!("{module}/");
        for h in self.handles_in_order() {
            if h.def().name.starts_with(&prefix) {
                let _ = h.control(ControlOp::Restart, actor).await;
            }
        }
    }

    /// Stops and removes every service of module `module` (named `module/…`), in reverse
    /// order.
    pub async fn remove_module_services(&self, module: &str, actor: &str) {
        let _guard = self.reload_lock.lock().await;
        let prefix = format!("{module}/");
        let handles: Vec<ServiceHandle> = self
            .handles_in_order()
            .into_iter()
            .filter(|h| h.def().name.starts_with(&prefix))
            .collect();
        for h in handles.into_iter().rev() {
            let name = h.def().name.clone();
            h.remove(actor).await;
            self.services
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            self.order
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|n| n != &name);
        }
    }

    /// Records a `config_changed` event for `name`.
    async fn note_config(&self, name: &str, actor: &str, msg: &str) {
        let ev = event(
            Some(name),
            EventKind::ConfigChanged,
            actor,
            msg,
            serde_json::Value::Null,
        );
        let _ = self.log.record(ev).await;
    }

    /// Re-reads the services directory and applies only the differences.
    pub async fn reload(&self, actor: &str) -> ReloadReport {
        let _guard = self.reload_lock.lock().await;
        let loaded = load_services_dir(&self.cfg.services_dir);
        self.report_errors(&loaded.errors, actor).await;
        let invalid = invalid_names(&loaded.errors);
        let mut report = ReloadReport {
            errors: loaded.errors.iter().map(ToString::to_string).collect(),
            ..Default::default()
        };
        let current: BTreeMap<String, ServiceHandle> = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut new_order: Vec<String> = loaded.services.iter().map(|d| d.name.clone()).collect();
        for def in &loaded.services {
            match current.get(&def.name) {
                None => {
                    report.added.push(def.name.clone());
                    self.note_config(&def.name, actor, "service added").await;
                    self.add(def.clone(), None, &loaded.services).await;
                }
                Some(h) if h.def() != def => {
                    report.changed.push(def.name.clone());
                    self.note_config(&def.name, actor, "service definition changed")
                        .await;
                    let mut h = h.clone();
                    h.update(def.clone()).await;
                    self.services
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(def.name.clone(), h);
                }
                Some(_) => report.unchanged.push(def.name.clone()),
            }
        }
        for (name, h) in &current {
            if loaded.services.iter().any(|d| &d.name == name) {
                continue;
            }
            if is_module_service(name) {
                // Owned by its module, not by a file of the services directory.
                new_order.push(name.clone());
                continue;
            }
            if invalid.contains(name) {
                // The file is broken, not gone: keep the service as it was.
                report.unchanged.push(name.clone());
                new_order.push(name.clone());
                continue;
            }
            report.removed.push(name.clone());
            h.remove(actor).await;
            self.services
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        *self.order.write().unwrap_or_else(|e| e.into_inner()) = new_order;
        report
    }
}

/// Module services are named `module/service`; service files cannot contain a `/`.
fn is_module_service(name: &str) -> bool {
    name.contains('/')
}

/// Names of the services whose files are invalid (the file stem).
fn invalid_names(errors: &[ConfigError]) -> Vec<String> {
    errors
        .iter()
        .filter_map(|e| e.file.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

/// Groups services (given in start order) into batches that may start concurrently: a
/// batch holds services of one dependency level and one priority; every batch starts only
/// after the previous one was spawned (and, for services others require, became ready).
fn start_batches(defs: &[ServiceDef]) -> Vec<Vec<ServiceDef>> {
    let mut level: HashMap<&str, usize> = HashMap::new();
    for d in defs {
        let l = defs
            .iter()
            .filter(|p| {
                d.requires
                    .iter()
                    .any(|r| r == &p.name || p.provides.contains(r))
            })
            .filter_map(|p| level.get(p.name.as_str()).map(|l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(&d.name, l);
    }
    let mut keyed: Vec<(usize, i32, &ServiceDef)> = defs
        .iter()
        .map(|d| {
            (
                level.get(d.name.as_str()).copied().unwrap_or(0),
                d.priority,
                d,
            )
        })
        .collect();
    keyed.sort_by_key(|(l, p, _)| (*l, *p));
    let mut out: Vec<Vec<ServiceDef>> = Vec::new();
    let mut key = None;
    for (l, p, d) in keyed {
        if key != Some((l, p)) {
            out.push(Vec::new());
            key = Some((l, p));
        }
        if let Some(b) = out.last_mut() {
            b.push(d.clone());
        }
    }
    out
}

/// True if another service requires something `def` provides.
fn is_required(def: &ServiceDef, all: &[ServiceDef]) -> bool {
    all.iter().any(|other| {
        other
            .requires
            .iter()
            .any(|r| r == &def.name || def.provides.contains(r))
    })
}
