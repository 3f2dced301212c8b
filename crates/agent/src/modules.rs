//! The module lifecycle on this node: install (download, verify, unpack, submodules,
//! `install` hook), configure (validate, render templates, `configure` hook), start
//! (`start` hook, then the declared services go to the supervisor as `module/service`),
//! stop, uninstall. The package work itself (registry and TLS, unpacking untrusted
//! archives, JSON Schema, templates) runs in the module worker, `reeve-modwork`, a child
//! process started per operation: its code stays out of the agent's memory and the
//! untrusted input out of its address space. This module runs hooks, keeps the
//! installed-module records and talks to the supervisor.
//!
//! Invariants: one lifecycle operation at a time (a lock); nothing installs without a
//! trusted key (the registry client fails closed); a lower version than an installed one is
//! refused unless forced by a local admin; a refused configuration changes nothing; every
//! step is recorded as a `module` event with its outcome.

use crate::config::AgentConfig;
use crate::events::{EventLog, event};
use crate::service::ControlError;
use crate::supervisor::Supervisor;
use reeve_config::ServiceDef;
use reeve_modules::identity::ModuleRef;
use reeve_modules::plan::InstalledModule;
use reeve_modules::worker::{Configured, Fetched, ModuleSummary};
use reeve_proto::event::EventKind;
use reeve_store::Write;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

type Result<T> = std::result::Result<T, ControlError>;

fn bad(m: impl Into<String>) -> ControlError {
    ControlError::BadRequest(m.into())
}

fn failed(m: impl Into<String>) -> ControlError {
    ControlError::Failed(m.into())
}

/// The name of the validated configuration file written into a module's directory.
pub const CONFIG_FILE: &str = reeve_modules::worker::CONFIG_FILE;

/// The lifecycle hooks, by the names manifests and `REEVE_HOOK` use.
const INSTALL: &str = "install";
const CONFIGURE: &str = "configure";
const START: &str = "start";
const STOP: &str = "stop";
const UNINSTALL: &str = "uninstall";

/// Installed modules and their lifecycle.
pub struct Modules {
    cfg: Arc<AgentConfig>,
    log: EventLog,
    lock: Mutex<()>,
    /// The apply in progress, which `cancel_apply` can stop.
    running: std::sync::Mutex<Option<crate::apply::Running>>,
}

impl Modules {
    /// The module manager of this agent.
    pub fn new(cfg: Arc<AgentConfig>, log: EventLog) -> Self {
        Self {
            cfg,
            log,
            lock: Mutex::new(()),
            running: std::sync::Mutex::new(None),
        }
    }

    /// The event log and store (for the apply journal).
    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    /// The apply in progress, if any.
    pub(crate) fn running(&self) -> &std::sync::Mutex<Option<crate::apply::Running>> {
        &self.running
    }

    /// The lock held by every lifecycle operation and by a whole apply.
    pub(crate) fn lock(&self) -> &Mutex<()> {
        &self.lock
    }

    /// Apply step: fetch and verify into the cache.
    pub(crate) async fn download(&self, module: &ModuleRef) -> Result<()> {
        let (tx, _rx) = mpsc::channel(1);
        self.fetch(module, &tx).await.map(|_| ())
    }

    /// Apply step: install (a no-op when installed). `force` allows a lower version.
    pub(crate) async fn install_step(&self, module: &ModuleRef, force: bool) -> Result<()> {
        let (tx, _rx) = mpsc::channel(1);
        self.install_locked(module, force, &tx, 0).await.map(|_| ())
    }

    /// Apply step: configure.
    pub(crate) async fn configure_step(
        &self,
        spec: &str,
        config: Value,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<()> {
        self.configure_locked(spec, config, sup, actor)
            .await
            .map(|_| ())
    }

    /// Apply step: start.
    pub(crate) async fn start_step(&self, spec: &str, sup: &Supervisor, actor: &str) -> Result<()> {
        self.start_locked(spec, sup, actor).await.map(|_| ())
    }

    /// Apply step: stop (a no-op when not installed).
    pub(crate) async fn stop_step(&self, spec: &str, sup: &Supervisor, actor: &str) -> Result<()> {
        if self.resolve(spec).await.is_err() {
            return Ok(());
        }
        self.stop_locked(spec, sup, actor).await.map(|_| ())
    }

    /// Apply step: uninstall (a no-op when not installed).
    pub(crate) async fn uninstall_step(
        &self,
        spec: &str,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<()> {
        if self.resolve(spec).await.is_err() {
            return Ok(());
        }
        self.uninstall_locked(spec, sup, actor).await
    }

    /// Every installed module.
    pub async fn list(&self) -> Result<Vec<InstalledModule>> {
        let records = self
            .log
            .modules()
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        Ok(records
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// The services of every running module, for the supervisor at agent start: the last
    /// applied state comes back by itself after a reboot, hub or no hub.
    pub async fn running_services(&self) -> Vec<ServiceDef> {
        let mut out = Vec::new();
        for m in self.list().await.unwrap_or_default() {
            if !m.running {
                continue;
            }
            match self.service_defs(&m).await {
                Ok(defs) => out.extend(defs),
                Err(e) => {
                    tracing::warn!(module = %m.name, error = %e, "cannot restore module services")
                }
            }
        }
        out
    }

    fn dir(&self, r: &ModuleRef) -> PathBuf {
        self.cfg
            .modules_dir()
            .join(format!("{}@{}", r.name, r.version))
    }

    async fn save(&self, m: &InstalledModule) -> Result<()> {
        let record = serde_json::to_string(m).map_err(|e| failed(e.to_string()))?;
        self.log
            .write(Write::PutModule {
                name: m.name.clone(),
                version: m.version.to_string(),
                record,
            })
            .await
            .map_err(|e| failed(format!("{e:#}")))
    }

    async fn note(&self, module: &str, actor: &str, msg: String, detail: Value) {
        let _ = self
            .log
            .record(event(
                None,
                EventKind::Module,
                actor,
                msg,
                json!({"module": module, "detail": detail}),
            ))
            .await;
    }

    /// Finds an installed module by `name` (only one version installed) or `name@version`.
    pub async fn resolve(&self, spec: &str) -> Result<InstalledModule> {
        let all = self.list().await?;
        if let Ok(r) = spec.parse::<ModuleRef>() {
            return all
                .into_iter()
                .find(|m| m.name == r.name && m.version == r.version)
                .ok_or_else(|| bad(format!("{r} is not installed")));
        }
        let mut found: Vec<InstalledModule> = all.into_iter().filter(|m| m.name == spec).collect();
        match found.len() {
            0 => Err(bad(format!(
                "module {spec:?} is not installed (see `reeve module list`)"
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(bad(format!(
                "several versions of {spec} are installed ({}): name one as {spec}@VERSION",
                found
                    .iter()
                    .map(|m| m.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Downloads and verifies `module` into the cache (in the worker), forwarding its
    /// progress lines to `progress` (best effort).
    async fn fetch(&self, module: &ModuleRef, progress: &mpsc::Sender<Value>) -> Result<Fetched> {
        let url = self.cfg.registry.clone().ok_or_else(|| {
            bad("no module registry is configured: set `registry` in the agent's settings or pass --registry")
        })?;
        let mut args: Vec<OsString> = vec![
            "fetch".into(),
            "--registry".into(),
            url.into(),
            "--cache-dir".into(),
            self.cfg.cache_dir().into(),
            "--trusted-keys".into(),
            self.cfg.trusted_keys.clone().into(),
        ];
        if let Some(p) = &self.cfg.proxy {
            args.extend(["--proxy".into(), p.into()]);
        }
        args.push(module.to_string().into());
        let tx = progress.clone();
        let done = self
            .worker(args, move |line| {
                let _ = tx.try_send(line);
            })
            .await?;
        serde_json::from_value(done).map_err(|e| failed(format!("module worker: {e}")))
    }

    /// The manifest of the module installed in `dir`, read and checked by the worker.
    async fn manifest(&self, dir: &Path) -> Result<ModuleSummary> {
        let args = vec!["manifest".into(), "--dir".into(), dir.into()];
        let done = self.worker(args, |_| {}).await?;
        serde_json::from_value(done).map_err(|e| failed(format!("module worker: {e}")))
    }

    /// Runs `reeve-modwork ARGS` (no input), hands `on_progress` every progress line and
    /// returns the value of its final `{"done": …}` line; any other outcome is an error.
    async fn worker(&self, args: Vec<OsString>, on_progress: impl FnMut(Value)) -> Result<Value> {
        let mut last = self.worker_line(args, None, on_progress).await?;
        if let Some(done) = last.get_mut("done") {
            return Ok(done.take());
        }
        Err(worker_error(&last))
    }

    /// Runs `reeve-modwork ARGS` with `input` on its standard input and returns its final
    /// line (`{"done": …}`, `{"error": …}` …); an error if it cannot run or says nothing.
    async fn worker_line(
        &self,
        args: Vec<OsString>,
        input: Option<Vec<u8>>,
        mut on_progress: impl FnMut(Value),
    ) -> Result<Value> {
        let exe = &self.cfg.modwork_path;
        let mut child = tokio::process::Command::new(exe)
            .args(&args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot run the module worker {}: {e} (set modwork_path or --modwork-path)",
                    exe.display()
                ))
            })?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut w), Some(bytes)) = (stdin, input) {
                let _ = w.write_all(&bytes).await;
            }
        };
        let mut stderr = child.stderr.take().map(BufReader::new);
        let errors = async move {
            let mut text = String::new();
            if let Some(r) = stderr.as_mut() {
                let _ = r.read_to_string(&mut text).await;
            }
            text
        };
        let mut lines = child.stdout.take().map(|o| BufReader::new(o).lines());
        let read = async {
            let mut last = None;
            while let Some(l) = lines.as_mut() {
                match l.next_line().await {
                    Ok(Some(line)) => {
                        let Ok(v) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        if v.get("progress").is_some() {
                            on_progress(v);
                        } else {
                            last = Some(v);
                        }
                    }
                    _ => break,
                }
            }
            last
        };
        let ((), stderr_text, last) = tokio::join!(feed, errors, read);
        let status = child.wait().await;
        let Some(last) = last else {
            let tail: Vec<&str> = stderr_text.lines().rev().take(5).collect();
            return Err(failed(format!(
                "the module worker {} failed ({}): {}",
                exe.display(),
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        };
        Ok(last)
    }

    /// One HTTP(S) GET through the module worker (the node method `http.get`): the client
    /// and TLS run in that process, not in the agent. Answers the worker's `done` object
    /// (status, content type, body up to `max_bytes`, whether it was cut).
    pub(crate) async fn http_get(
        &self,
        url: &str,
        max_bytes: usize,
        timeout: std::time::Duration,
    ) -> Result<Value> {
        let args: Vec<OsString> = vec![
            "http-get".into(),
            "--url".into(),
            url.into(),
            "--max-bytes".into(),
            max_bytes.to_string().into(),
            "--timeout-ms".into(),
            (timeout.as_millis() as u64).to_string().into(),
        ];
        // The worker keeps its own time limit; this one covers a worker that hangs.
        let limit = timeout + std::time::Duration::from_secs(5);
        let line = tokio::time::timeout(limit, self.worker_line(args, None, |_| {}))
            .await
            .map_err(|_| failed(format!("GET {url}: no answer within {limit:?}")))??;
        match (line.get("done"), line.get("error").and_then(Value::as_str)) {
            (Some(done), _) => Ok(done.clone()),
            (None, Some(e)) => Err(failed(e.to_string())),
            (None, None) => Err(failed(format!("GET {url}: the worker said {line}"))),
        }
    }

    /// Installs `module` and its submodules. `force` allows a downgrade (local admins only).
    /// Progress reports go to `progress` (best effort).
    pub async fn install(
        &self,
        module: &ModuleRef,
        force: bool,
        actor: &str,
        progress: mpsc::Sender<Value>,
    ) -> Result<InstalledModule> {
        let _g = self.lock.lock().await;
        let res = self.install_locked(module, force, &progress, 0).await;
        match &res {
            Ok(m) => {
                self.note(
                    &m.name,
                    actor,
                    format!("installed {module}"),
                    json!({"action": "install", "ok": true}),
                )
                .await
            }
            Err(e) => {
                self.note(
                    &module.name,
                    actor,
                    format!("install of {module} failed: {e}"),
                    json!({"action": "install", "ok": false, "error": e.to_string()}),
                )
                .await
            }
        }
        res
    }

    async fn install_locked(
        &self,
        module: &ModuleRef,
        force: bool,
        progress: &mpsc::Sender<Value>,
        depth: usize,
    ) -> Result<InstalledModule> {
        if depth > 16 {
            return Err(bad(format!("submodules nest too deep at {module}")));
        }
        let installed = self.list().await?;
        if let Some(m) = installed
            .iter()
            .find(|m| m.name == module.name && m.version == module.version)
        {
            return Ok(m.clone());
        }
        if let Some(newer) = installed
            .iter()
            .filter(|m| m.name == module.name && m.version > module.version)
            .map(|m| m.version.clone())
            .max()
            && !force
        {
            return Err(bad(format!(
                "{module} is older than the installed {}@{newer}: a downgrade needs --force",
                module.name
            )));
        }
        let fetched = self.fetch(module, progress).await?;
        let dir = self.dir(module);
        crate::buddy_conn::create_private_dir(&self.cfg.modules_dir())
            .map_err(|e| failed(format!("{e:#}")))?;
        if dir.exists() {
            // A leftover of an interrupted install: start clean.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| failed(format!("cannot remove {}: {e}", dir.display())))?;
        }
        let args = vec![
            "install".into(),
            "--archive".into(),
            fetched.path.into(),
            "--target".into(),
            dir.clone().into(),
            "--identity".into(),
            fetched.identity.into(),
        ];
        let done = self.worker(args, |_| {}).await?;
        let manifest: ModuleSummary =
            serde_json::from_value(done).map_err(|e| failed(format!("module worker: {e}")))?;
        for sub in &manifest.submodules {
            Box::pin(self.install_locked(sub, false, progress, depth + 1)).await?;
        }
        if let Err(e) = run_hook(&dir, &manifest, INSTALL, None).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let m = InstalledModule {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            config: None,
            running: false,
            submodules: manifest.submodules.clone(),
        };
        self.save(&m).await?;
        Ok(m)
    }

    /// Downloads, verifies and unpacks `module` into `target` (which must not exist)
    /// without hooks or records: an agent package for a self-update. Holds the lifecycle
    /// lock, so it never runs beside an install or an apply.
    pub(crate) async fn unpack_package(
        &self,
        module: &ModuleRef,
        target: &Path,
        progress: &mpsc::Sender<Value>,
    ) -> Result<ModuleSummary> {
        let _g = self.lock.lock().await;
        let fetched = self.fetch(module, progress).await?;
        let args = vec![
            "install".into(),
            "--archive".into(),
            fetched.path.into(),
            "--target".into(),
            target.into(),
            "--identity".into(),
            fetched.identity.into(),
        ];
        let done = self.worker(args, |_| {}).await?;
        serde_json::from_value(done).map_err(|e| failed(format!("module worker: {e}")))
    }

    /// Validates `config` against the module's schema (every violation reported, nothing
    /// changed on error), renders its templates, writes `config.json`, runs `configure`.
    pub async fn configure(
        &self,
        spec: &str,
        config: Value,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<InstalledModule> {
        let _g = self.lock.lock().await;
        self.configure_locked(spec, config, sup, actor).await
    }

    async fn configure_locked(
        &self,
        spec: &str,
        config: Value,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<InstalledModule> {
        let mut m = self.resolve(spec).await?;
        let dir = self.dir(&m.module_ref());
        let given = if config.is_null() { json!({}) } else { config };
        // The worker validates (every violation), renders the templates and writes the
        // config file; a refused configuration or an unreadable manifest changes nothing.
        let args = vec!["configure".into(), "--dir".into(), dir.clone().into()];
        let input = serde_json::to_vec(&given).map_err(|e| failed(e.to_string()))?;
        let mut last = self.worker_line(args, Some(input), |_| {}).await?;
        if let Some(e) = last.get("manifest_error") {
            return Err(failed(text_of(e)));
        }
        if let Some(errs) = last.get("invalid") {
            let errs: Vec<String> = serde_json::from_value(errs.clone())
                .map_err(|e| failed(format!("module worker: {e}")))?;
            return Err(bad(format!(
                "invalid configuration for {}: {}",
                m.name,
                errs.join("; ")
            )));
        }
        let res: Result<()> = match last.get_mut("done") {
            Some(done) => match serde_json::from_value::<Configured>(done.take()) {
                Ok(c) => run_hook(&dir, &c.summary, CONFIGURE, Some(&dir.join(CONFIG_FILE))).await,
                Err(e) => Err(failed(format!("module worker: {e}"))),
            },
            None => Err(worker_error(&last)),
        };
        match res {
            Ok(()) => {
                m.config = Some(given);
                self.save(&m).await?;
                self.note(
                    &m.name,
                    actor,
                    format!("configured {}", m.module_ref()),
                    json!({"action": "configure", "ok": true}),
                )
                .await;
                if m.running {
                    // A running module picks the new configuration up: its services restart.
                    sup.restart_module_services(&m.name, actor).await;
                }
                Ok(m)
            }
            Err(e) => {
                self.note(
                    &m.name,
                    actor,
                    format!("configure of {} failed: {e}", m.module_ref()),
                    json!({"action": "configure", "ok": false, "error": e.to_string()}),
                )
                .await;
                Err(e)
            }
        }
    }

    /// Runs the `start` hook, then hands the module's services to the supervisor.
    pub async fn start(
        &self,
        spec: &str,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<InstalledModule> {
        let _g = self.lock.lock().await;
        self.start_locked(spec, sup, actor).await
    }

    async fn start_locked(
        &self,
        spec: &str,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<InstalledModule> {
        let mut m = self.resolve(spec).await?;
        let dir = self.dir(&m.module_ref());
        let manifest = self.manifest(&dir).await?;
        if manifest.has_config_schema && m.config.is_none() {
            return Err(bad(format!(
                "{} is not configured yet: `reeve module configure {} --config …` first",
                m.module_ref(),
                m.name
            )));
        }
        let defs = service_defs_of(&m, &manifest, &dir)?;
        run_hook(&dir, &manifest, START, config_path(&dir).as_deref()).await?;
        let not_started = sup.add_module_services(defs, actor).await;
        m.running = true;
        self.save(&m).await?;
        self.note(
            &m.name,
            actor,
            format!("started {}", m.module_ref()),
            json!({"action": "start", "ok": not_started.is_empty(), "not_started": not_started}),
        )
        .await;
        if !not_started.is_empty() {
            return Err(failed(format!(
                "services not started: {}",
                not_started.join("; ")
            )));
        }
        Ok(m)
    }

    /// Stops the module's services (reverse order), then runs the `stop` hook.
    pub async fn stop(&self, spec: &str, sup: &Supervisor, actor: &str) -> Result<InstalledModule> {
        let _g = self.lock.lock().await;
        self.stop_locked(spec, sup, actor).await
    }

    async fn stop_locked(
        &self,
        spec: &str,
        sup: &Supervisor,
        actor: &str,
    ) -> Result<InstalledModule> {
        let mut m = self.resolve(spec).await?;
        let dir = self.dir(&m.module_ref());
        sup.remove_module_services(&m.name, actor).await;
        if let Some(manifest) = self.manifest_if_any(&dir).await {
            run_hook(&dir, &manifest, STOP, config_path(&dir).as_deref()).await?;
        }
        m.running = false;
        self.save(&m).await?;
        self.note(
            &m.name,
            actor,
            format!("stopped {}", m.module_ref()),
            json!({"action": "stop", "ok": true}),
        )
        .await;
        Ok(m)
    }

    /// Stops the module if it runs, runs `uninstall`, removes its directory (the cache keeps
    /// the package) and forgets it.
    pub async fn uninstall(&self, spec: &str, sup: &Supervisor, actor: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        self.uninstall_locked(spec, sup, actor).await
    }

    async fn uninstall_locked(&self, spec: &str, sup: &Supervisor, actor: &str) -> Result<()> {
        let m = self.resolve(spec).await?;
        if m.running {
            self.stop_locked(spec, sup, actor).await?;
        }
        let dir = self.dir(&m.module_ref());
        if let Some(manifest) = self.manifest_if_any(&dir).await {
            run_hook(&dir, &manifest, UNINSTALL, config_path(&dir).as_deref()).await?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| failed(format!("cannot remove {}: {e}", dir.display())))?;
        }
        self.log
            .write(Write::DeleteModule {
                name: m.name.clone(),
                version: m.version.to_string(),
            })
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        self.note(
            &m.name,
            actor,
            format!("uninstalled {}", m.module_ref()),
            json!({"action": "uninstall", "ok": true}),
        )
        .await;
        Ok(())
    }

    /// The module's declared services as service definitions named `module/service`, run in
    /// the module directory with `REEVE_MODULE_DIR` and `REEVE_CONFIG` set.
    async fn service_defs(&self, m: &InstalledModule) -> Result<Vec<ServiceDef>> {
        let dir = self.dir(&m.module_ref());
        let manifest = self.manifest(&dir).await?;
        service_defs_of(m, &manifest, &dir)
    }

    /// The manifest of a module being stopped or removed, if it can still be read (its
    /// hook is skipped otherwise).
    async fn manifest_if_any(&self, dir: &Path) -> Option<ModuleSummary> {
        if !dir.is_dir() {
            return None;
        }
        match self.manifest(dir).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "module manifest unreadable; hook skipped");
                None
            }
        }
    }
}

/// The services of `manifest` (already with the module's defaults, from the worker) as
/// service definitions named `module/service`.
fn service_defs_of(
    m: &InstalledModule,
    manifest: &ModuleSummary,
    dir: &Path,
) -> Result<Vec<ServiceDef>> {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for svc in &manifest.services {
        let name = format!("{}/{}", m.name, svc.name);
        let file = dir
            .join("services")
            .join(format!("{}.{}", svc.name, svc.extension));
        match reeve_config::parse_service(&name, &file, &svc.text) {
            Ok(d) => defs.push(d),
            Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
        }
    }
    if errors.is_empty() {
        Ok(defs)
    } else {
        Err(bad(format!(
            "invalid services in {}: {}",
            m.module_ref(),
            errors.join("; ")
        )))
    }
}

/// A JSON string as its text, anything else as JSON.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The error a final line of the worker other than `done` stands for.
fn worker_error(last: &Value) -> ControlError {
    match last.get("error").or_else(|| last.get("manifest_error")) {
        Some(e) => failed(text_of(e)),
        None => failed(format!("unexpected answer of the module worker: {last}")),
    }
}

fn config_path(dir: &Path) -> Option<PathBuf> {
    let p = dir.join(CONFIG_FILE);
    p.exists().then_some(p)
}

/// Runs a lifecycle hook, if the module has it, in the module directory with the documented
/// environment and its time limit (then its whole process group is killed).
async fn run_hook(
    dir: &Path,
    manifest: &ModuleSummary,
    kind: &str,
    config: Option<&Path>,
) -> Result<()> {
    let Some(hook) = manifest.hooks.get(kind) else {
        return Ok(());
    };
    let timeout = Duration::from_millis(hook.timeout_ms);
    let exe = dir.join(&hook.path);
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.current_dir(dir)
        .env("REEVE_MODULE_NAME", &manifest.name)
        .env("REEVE_MODULE_VERSION", manifest.version.to_string())
        .env("REEVE_MODULE_DIR", dir)
        .env("REEVE_HOOK", kind)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(c) = config {
        cmd.env("REEVE_CONFIG", c);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{kind} hook {}: cannot run: {e}", exe.display())))?;
    let pid = child.id();
    // A hook whose apply is cancelled is dropped mid-wait: its whole group goes with it.
    let mut group = GroupGuard(pid);
    let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if waited.is_ok() {
        group.0 = None;
    }
    match waited {
        Err(_) => {
            drop(group);
            Err(failed(format!(
                "{kind} hook of {} timed out after {:?}",
                manifest.name, timeout
            )))
        }
        Ok(Err(e)) => Err(failed(format!("{kind} hook {}: {e}", exe.display()))),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            Err(failed(format!(
                "{kind} hook of {} failed ({}): {}",
                manifest.name,
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )))
        }
    }
}

/// Kills process group `.0` when dropped (unless cleared).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(p) = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
        }
    }
}

/// Parses `name@version`.
pub fn parse_ref(s: &str) -> Result<ModuleRef> {
    s.parse::<ModuleRef>()
        .map_err(|e| bad(format!("{s:?} is not NAME@VERSION: {e}")))
}
