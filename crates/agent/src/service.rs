//! One actor task per service: it owns the connection to the service's buddy, turns the
//! buddy's journal into stored events (acknowledging only what is durable), runs health
//! checks, and carries out control requests. Its status is published on a watch channel.
//!
//! Invariant: only this task talks to its buddy, and it sends an `Ack` for a journal entry
//! only after the event log has stored it.

use crate::buddy_conn::{self, BuddyConn, BuddyMsg};
use crate::config::AgentConfig;
use crate::events::{EventLog, event, now_ms};
use crate::{health, orphan};
use reeve_config::{ActionDef, HealthCheck, OnFailure, ServiceDef};
use reeve_proto::api::{Desired, ServiceState, ServiceStatus};
use reeve_proto::buddy::{BuddyEvent, BuddyStatus, Frame, JournalEntry, Op, ProcState, Reply};
use reeve_proto::event::{Event, EventKind};
use reeve_store::{BuddyIdentity, ServiceRecord};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    /// Start (clears `failed`).
    Start,
    /// Stop and keep stopped.
    Stop,
    /// Stop then start.
    Restart,
    /// Reload by signal or command.
    Reload,
    /// A named custom action.
    Action(String),
}

impl ControlOp {
    /// Name used in events.
    pub fn name(&self) -> String {
        match self {
            Self::Start => "start".into(),
            Self::Stop => "stop".into(),
            Self::Restart => "restart".into(),
            Self::Reload => "reload".into(),
            Self::Action(a) => format!("action {a}"),
        }
    }
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The request makes no sense for this service (unknown action, not running …).
    BadRequest(String),
    /// The agent could not carry it out.
    Failed(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

mod reexec;

type ControlReply = oneshot::Sender<Result<(), ControlError>>;

enum Cmd {
    Control(ControlOp, String, ControlReply),
    Update(Arc<ServiceDef>, oneshot::Sender<()>),
    Remove(String, oneshot::Sender<()>),
    Reexec(String, String, ControlReply),
}

/// A health check's outcome for the service process with this pid (boxed, like every
/// message to an actor: see [`buddy_conn::MsgTx`]).
type HealthMsg = Box<(u64, Result<String, String>)>;

/// Handle to a service actor.
#[derive(Clone)]
pub struct ServiceHandle {
    /// Commands are boxed, like every message to an actor (see [`buddy_conn::MsgTx`]).
    tx: mpsc::Sender<Box<Cmd>>,
    status: watch::Receiver<ServiceStatus>,
    def: Arc<ServiceDef>,
}

impl ServiceHandle {
    /// The definition the actor was started with (updated ones go through [`Self::update`]).
    pub fn def(&self) -> &ServiceDef {
        &self.def
    }

    /// Current status.
    pub fn status(&self) -> ServiceStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<ServiceStatus> {
        self.status.clone()
    }

    /// Carries out a control request on behalf of `actor`.
    pub async fn control(&self, op: ControlOp, actor: &str) -> Result<(), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(Cmd::Control(op, actor.to_owned(), tx)))
            .await
            .map_err(|_| ControlError::Failed("the service's actor has stopped".into()))?;
        rx.await
            .map_err(|_| ControlError::Failed("the service's actor has stopped".into()))?
    }

    /// Re-executes the service's buddy into the buddy binary `path`, keeping the service
    /// running (see `reeve_proto::buddy::Op::Reexec`); returns once the agent has
    /// re-attached to it.
    pub async fn reexec(&self, path: &str, actor: &str) -> Result<(), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(Cmd::Reexec(path.to_owned(), actor.to_owned(), tx)))
            .await
            .map_err(|_| ControlError::Failed("the service's actor has stopped".into()))?;
        rx.await
            .map_err(|_| ControlError::Failed("the service's actor has stopped".into()))?
    }

    /// Replaces the definition (restarting the service if it runs).
    pub async fn update(&mut self, def: ServiceDef) {
        let (tx, rx) = oneshot::channel();
        self.def = Arc::new(def);
        if self
            .tx
            .send(Box::new(Cmd::Update(self.def.clone(), tx)))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Stops the service, shuts its buddy down and ends the actor.
    pub async fn remove(&self, actor: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Box::new(Cmd::Remove(actor.to_owned(), tx)))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Waits until the status satisfies `pred`, at most `limit`.
    pub async fn wait_for(&self, limit: Duration, pred: impl Fn(&ServiceStatus) -> bool) -> bool {
        let mut rx = self.status.clone();
        tokio::time::timeout(limit, async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// Health bookkeeping of the current service process.
#[derive(Default)]
struct HealthState {
    passed_once: bool,
    failures: u32,
    unhealthy: bool,
    last: Option<String>,
}

struct Actor {
    def: Arc<ServiceDef>,
    cfg: Arc<AgentConfig>,
    log: EventLog,
    conn: Option<BuddyConn>,
    generation: u64,
    desired: Desired,
    journal_seq: u64,
    proc_state: ProcState,
    pid: Option<u32>,
    buddy_pid: Option<u32>,
    since_ms: u64,
    restarts: u64,
    last_exit: Option<reeve_proto::buddy::ExitStatus>,
    health: HealthState,
    health_task: Option<tokio::task::JoinHandle<()>>,
    pending: HashMap<u64, ControlReply>,
    removing: Option<oneshot::Sender<()>>,
    status_tx: watch::Sender<ServiceStatus>,
    frames_tx: buddy_conn::MsgTx,
    health_tx: mpsc::Sender<HealthMsg>,
    lost_streak: u32,
    /// A re-exec under way: the request's id, whether the buddy accepted it, the caller.
    reexec: Option<reexec::Pending>,
}

/// The service pid a record remembers, if the machine has not rebooted since (after a
/// reboot every process of the old boot is gone).
fn recorded_pid(rec: &ServiceRecord) -> Option<u32> {
    let boot = rec.buddy.as_ref()?.boot_id.clone();
    (orphan::boot_id().as_deref() == Some(boot.as_str()))
        .then_some(rec.service_pid)
        .flatten()
}

/// Starts the actor for `def`. `record` is what the store remembers (None for a new
/// service). Returns once the actor has attached to (or spawned) its buddy.
pub async fn spawn(
    def: ServiceDef,
    record: Option<ServiceRecord>,
    cfg: Arc<AgentConfig>,
    log: EventLog,
) -> ServiceHandle {
    let (tx, rx) = mpsc::channel(32);
    let (frames_tx, frames_rx) = mpsc::channel(64);
    let (health_tx, health_rx) = mpsc::channel(4);
    let desired = record.as_ref().map_or(def.initial_state, |r| r.desired);
    let initial = ServiceStatus {
        name: def.name.clone(),
        state: ServiceState::Unknown,
        desired,
        pid: None,
        buddy_pid: None,
        since_ms: now_ms(),
        restarts: 0,
        last_exit: None,
        health: None,
        actions: def.actions.keys().cloned().collect(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    // One copy of the definition, shared by the handle and the actor.
    let def = Arc::new(def);
    let handle = ServiceHandle {
        tx,
        status: status_rx,
        def: def.clone(),
    };
    let mut actor = Actor {
        def,
        cfg,
        log,
        conn: None,
        generation: 0,
        desired,
        journal_seq: record.as_ref().map_or(0, |r| r.journal_seq),
        proc_state: ProcState::Stopped,
        pid: record.as_ref().and_then(recorded_pid),
        buddy_pid: None,
        since_ms: now_ms(),
        restarts: 0,
        last_exit: None,
        health: HealthState::default(),
        health_task: None,
        pending: HashMap::new(),
        reexec: None,
        removing: None,
        status_tx,
        frames_tx,
        health_tx,
        lost_streak: 0,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(async move {
        actor.attach(record).await;
        let _ = ready_tx.send(());
        actor.run(rx, frames_rx, health_rx).await;
    });
    let _ = ready_rx.await;
    handle
}

impl Actor {
    fn name(&self) -> &str {
        &self.def.name
    }

    async fn record(&self, kind: EventKind, actor: &str, msg: String, detail: serde_json::Value) {
        let ev = event(Some(self.name()), kind, actor, msg, detail);
        if let Err(e) = self.log.record(ev).await {
            tracing::error!(service = %self.name(), error = %format!("{e:#}"), "cannot store event");
        }
    }

    fn spec(&self) -> reeve_proto::buddy::BuddySpec {
        // The agent's environment, without what its launcher told the agent alone (it
        // changes with every update and means nothing to a service).
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !reeve_proto::launcher::is_launcher_variable(k))
            .collect();
        self.def.buddy_spec(&self.cfg.log_dir(self.name()), &env)
    }

    /// At agent start (or when the service is new): re-attach to the recorded buddy, or
    /// clean up after a lost one, or spawn a new one; then reconcile desired vs actual.
    async fn attach(&mut self, record: Option<ServiceRecord>) {
        let known = record.is_some();
        if known {
            match self.connect().await {
                Ok(status) => {
                    self.adopt(&status);
                    self.record(
                        EventKind::BuddyAttached,
                        "agent",
                        format!("re-attached to buddy {} ({:?})", status.buddy_pid, status.state),
                        json!({"buddy_pid": status.buddy_pid, "pid": status.pid, "state": status.state}),
                    )
                    .await;
                    self.reconcile(&status).await;
                    self.save_record().await;
                    self.publish();
                    return;
                }
                Err(e) => {
                    self.buddy_lost(&format!("{e:#}")).await;
                    return;
                }
            }
        } else if self
            .cfg
            .run_dir(self.name())
            .join(reeve_proto::buddy::files::SOCKET)
            .exists()
            && let Ok(status) = self.connect().await
        {
            // A buddy spawned just before an agent crash, before its record was stored.
            // (Checked for first: a new service has no socket, and a failed connect costs
            // an error with a backtrace when RUST_BACKTRACE is set.)
            self.adopt(&status);
            self.reconcile(&status).await;
            self.save_record().await;
            self.publish();
            return;
        }
        // Spawn first and persist afterwards: a new agent finds the buddy either way (the
        // connect above), so nothing waits for the disk before the service starts.
        self.start_buddy().await;
    }

    /// The buddy's view wins or loses as DESIGN.md §2.3's table says.
    async fn reconcile(&mut self, status: &BuddyStatus) {
        let running = matches!(status.state, ProcState::Running | ProcState::BackingOff);
        match (self.desired, running) {
            (Desired::Running, false) if status.state != ProcState::Failed => {
                self.record(
                    EventKind::Disagreement,
                    "agent",
                    "stored state is running but the buddy reports stopped: starting it".into(),
                    json!({"desired": "running", "buddy": status.state, "winner": "store"}),
                )
                .await;
                let _ = self.send(Op::Start).await;
            }
            (Desired::Stopped, true) => {
                self.record(
                    EventKind::Disagreement,
                    "agent",
                    "stored state is stopped but the buddy reports running: leaving it running"
                        .into(),
                    json!({"desired": "stopped", "buddy": status.state, "winner": "buddy"}),
                )
                .await;
                self.desired = Desired::Running;
            }
            _ => {}
        }
    }

    async fn connect(&mut self) -> anyhow::Result<BuddyStatus> {
        self.generation += 1;
        let (conn, status) = BuddyConn::connect(
            &self.cfg.run_dir(self.name()),
            self.journal_seq,
            self.generation,
            self.frames_tx.clone(),
        )
        .await?;
        self.conn = Some(conn);
        Ok(status)
    }

    fn adopt(&mut self, s: &BuddyStatus) {
        self.proc_state = s.state;
        self.pid = s.pid;
        self.buddy_pid = Some(s.buddy_pid);
        self.since_ms = s.since_ms;
        self.restarts = s.restarts;
        self.last_exit = s.last_exit;
        if s.state == ProcState::Running && self.def.health.is_some() {
            self.start_health();
        }
    }

    async fn save_record(&self) {
        let rec = ServiceRecord {
            name: self.name().to_owned(),
            desired: self.desired,
            buddy: self.buddy_identity(),
            journal_seq: self.journal_seq,
            service_pid: self.pid,
        };
        if let Err(e) = self.log.put_service(rec).await {
            tracing::error!(service = %self.name(), error = %format!("{e:#}"), "cannot store service record");
        }
    }

    fn buddy_identity(&self) -> Option<BuddyIdentity> {
        let pid = self.buddy_pid?;
        let (ticks, boot) = orphan::process_identity(pid)?;
        Some(BuddyIdentity {
            pid,
            start_ticks: ticks,
            boot_id: boot,
        })
    }

    /// Spawns a fresh buddy (starting the service if it should run) and attaches.
    async fn start_buddy(&mut self) {
        let start = self.desired == Desired::Running;
        let run_dir = self.cfg.run_dir(self.name());
        // A new buddy continues the old journal's numbering; anything of the old one not
        // yet stored was collected by `buddy_lost`.
        if let Err(e) =
            buddy_conn::spawn_buddy(&self.cfg.buddy_path, &run_dir, &self.spec(), start).await
        {
            self.proc_state = ProcState::Failed;
            self.record(
                EventKind::SpawnFailed,
                "agent",
                format!("cannot start a buddy: {e:#}"),
                serde_json::Value::Null,
            )
            .await;
            self.publish();
            return;
        }
        if start {
            // Stored together with the service record below (same batch, in order).
            self.log.record_nowait(event(
                Some(self.name()),
                EventKind::Starting,
                "agent",
                "starting",
                serde_json::Value::Null,
            ));
        }
        match self.connect().await {
            Ok(status) => {
                self.adopt(&status);
                self.save_record().await;
            }
            Err(e) => {
                self.record(
                    EventKind::BuddyLost,
                    "agent",
                    format!("new buddy does not answer: {e:#}"),
                    serde_json::Value::Null,
                )
                .await;
            }
        }
        self.publish();
    }

    /// The buddy is gone: collect what it journaled, make sure its service does not run
    /// unsupervised, record the outcome, and bring the service back under a new buddy.
    async fn buddy_lost(&mut self, why: &str) {
        self.conn = None;
        self.stop_health();
        let run_dir = self.cfg.run_dir(self.name());
        let missed = buddy_conn::read_journal_file(&run_dir, self.journal_seq);
        self.store_entries(missed).await;
        let exiting = self.proc_state == ProcState::Stopped && self.removing.is_some();
        let orphan = self.pid.take();
        let outcome = match orphan {
            Some(pid) => {
                let kill_timeout = Duration::from_millis(self.def.stop.kill_timeout_ms);
                match orphan::kill_orphan_group(pid, self.def.stop.signal, kill_timeout).await {
                    orphan::Outcome::Killed => format!("its service (pid {pid}) was stopped"),
                    orphan::Outcome::Gone => format!("its service (pid {pid}) had already exited"),
                    orphan::Outcome::Failed(e) => {
                        format!("could not stop its service (pid {pid}): {e}")
                    }
                }
            }
            None => "no service process was running".into(),
        };
        if exiting {
            return;
        }
        self.lost_streak += 1;
        let restart = self.desired == Desired::Running;
        self.record(
            EventKind::BuddyLost,
            "agent",
            format!(
                "buddy {} lost ({why}); {outcome}; {}",
                self.buddy_pid.map_or("?".into(), |p| p.to_string()),
                if restart { "starting a new buddy" } else { "service stays stopped" }
            ),
            json!({"buddy_pid": self.buddy_pid, "orphan_pid": orphan, "outcome": outcome, "reason": why}),
        )
        .await;
        self.proc_state = ProcState::Stopped;
        self.buddy_pid = None;
        if self.lost_streak > 1 {
            // A buddy that keeps dying must not turn into a spin.
            let delay = Duration::from_millis(200u64 << self.lost_streak.min(8));
            tokio::time::sleep(delay).await;
        }
        self.start_buddy().await;
    }

    async fn send(&mut self, op: Op) -> Result<u64, ControlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ControlError::Failed(format!(
                "no buddy is attached to {}",
                self.def.name
            )));
        };
        conn.send(op)
            .await
            .map_err(|e| ControlError::Failed(format!("{e:#}")))
    }

    async fn run(
        &mut self,
        mut cmds: mpsc::Receiver<Box<Cmd>>,
        mut frames: mpsc::Receiver<Box<BuddyMsg>>,
        mut health_rx: mpsc::Receiver<HealthMsg>,
    ) {
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(c) => self.on_cmd(*c).await,
                    None => return,
                },
                Some(msg) = frames.recv() => {
                    let mut batch = vec![*msg];
                    while let Ok(m) = frames.try_recv() {
                        batch.push(*m);
                    }
                    self.on_msgs(batch).await;
                    if self.removing.is_some() && self.conn.is_none() {
                        if let Some(done) = self.removing.take() {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
                Some(h) = health_rx.recv() => {
                    let (pid, result) = *h;
                    self.on_health(pid, result).await;
                }
            }
        }
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Control(op, actor, reply) => {
                self.record(
                    EventKind::Action,
                    &actor,
                    format!("{} requested", op.name()),
                    json!({"action": op.name()}),
                )
                .await;
                match self.control(op, reply).await {
                    Ok(()) => {}
                    Err((e, reply)) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Update(def, done) => {
                self.def = def;
                let spec = self.spec();
                let _ = self
                    .send(Op::SetSpec {
                        spec: Box::new(spec),
                    })
                    .await;
                if matches!(self.proc_state, ProcState::Running | ProcState::BackingOff) {
                    let _ = self.send(Op::Restart).await;
                }
                let _ = done.send(());
            }
            Cmd::Reexec(path, actor, reply) => self.start_reexec(path, actor, reply).await,
            Cmd::Remove(actor, done) => {
                self.stop_health();
                self.record(
                    EventKind::ConfigChanged,
                    &actor,
                    "service removed: stopping it and its buddy".into(),
                    serde_json::Value::Null,
                )
                .await;
                if self.send(Op::Shutdown).await.is_err() {
                    let _ = done.send(());
                    return;
                }
                self.removing = Some(done);
            }
        }
    }

    async fn control(
        &mut self,
        op: ControlOp,
        reply: ControlReply,
    ) -> Result<(), (ControlError, ControlReply)> {
        let bo = |m: String| ControlError::BadRequest(m);
        let buddy_op = match &op {
            ControlOp::Start => Op::Start,
            ControlOp::Stop => Op::Stop,
            ControlOp::Restart => Op::Restart,
            ControlOp::Reload => match self.def.reload.clone() {
                Some(a) => return self.run_action("reload", a, reply).await,
                None => {
                    return Err((
                        bo(format!("{} has no reload signal or command", self.name())),
                        reply,
                    ));
                }
            },
            ControlOp::Action(name) => match self.def.actions.get(name).cloned() {
                Some(a) => return self.run_action(name, a, reply).await,
                None => {
                    let known: Vec<_> = self.def.actions.keys().cloned().collect();
                    return Err((
                        bo(format!(
                            "{} has no action {name:?} (it has: {})",
                            self.name(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        )),
                        reply,
                    ));
                }
            },
        };
        let new_desired = match op {
            ControlOp::Stop => Desired::Stopped,
            _ => Desired::Running,
        };
        if new_desired != self.desired {
            self.desired = new_desired;
            self.save_record().await;
        }
        if self.conn.is_none() {
            self.start_buddy().await;
            if self.conn.is_some() && new_desired == Desired::Running {
                let _ = reply.send(Ok(()));
                return Ok(());
            }
        }
        match self.send(buddy_op).await {
            Ok(id) => {
                self.pending.insert(id, reply);
                Ok(())
            }
            Err(e) => Err((e, reply)),
        }
    }

    async fn run_action(
        &mut self,
        name: &str,
        action: ActionDef,
        reply: ControlReply,
    ) -> Result<(), (ControlError, ControlReply)> {
        match action {
            ActionDef::Signal(signal) => match self.send(Op::Signal { signal }).await {
                Ok(id) => {
                    self.pending.insert(id, reply);
                    Ok(())
                }
                Err(e) => Err((e, reply)),
            },
            ActionDef::Command(argv) => {
                let Some((prog, args)) = argv.split_first() else {
                    return Err((ControlError::BadRequest("empty command".into()), reply));
                };
                let mut cmd = tokio::process::Command::new(prog);
                cmd.args(args)
                    .env("REEVE_SERVICE", self.name())
                    .env(
                        "REEVE_PID",
                        self.pid.map(|p| p.to_string()).unwrap_or_default(),
                    )
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                let limit = Duration::from_millis(self.def.stop.kill_timeout_ms.max(10_000));
                let res = match tokio::time::timeout(limit, cmd.output()).await {
                    Err(_) => Err(ControlError::Failed(format!("{name} timed out"))),
                    Ok(Err(e)) => Err(ControlError::Failed(format!("cannot run {prog}: {e}"))),
                    Ok(Ok(out)) if out.status.success() => Ok(()),
                    Ok(Ok(out)) => Err(ControlError::Failed(format!(
                        "{name} failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))),
                };
                self.record(
                    EventKind::Action,
                    "agent",
                    match &res {
                        Ok(()) => format!("{name} command succeeded"),
                        Err(e) => format!("{name} command failed: {e}"),
                    },
                    json!({"action": name, "ok": res.is_ok()}),
                )
                .await;
                let _ = reply.send(res);
                Ok(())
            }
        }
    }

    async fn on_msgs(&mut self, batch: Vec<BuddyMsg>) {
        let mut entries = Vec::new();
        for msg in batch {
            match msg {
                BuddyMsg::Frame(f) => match f {
                    Frame::Event(e) => entries.push(e),
                    Frame::Reply { id, reply } => {
                        if self.reexec_answered(id, &reply) {
                            continue;
                        }
                        let res = match reply {
                            Reply::Error { message } => Err(ControlError::BadRequest(message)),
                            _ => Ok(()),
                        };
                        if let Some(tx) = self.pending.remove(&id) {
                            let _ = tx.send(res);
                        }
                    }
                },
                BuddyMsg::Closed { generation, error } => {
                    if generation != self.generation {
                        continue;
                    }
                    self.store_entries(std::mem::take(&mut entries)).await;
                    for (_, tx) in self.pending.drain() {
                        let _ = tx.send(Err(ControlError::Failed("the buddy went away".into())));
                    }
                    if self.removing.is_some() {
                        self.conn = None;
                        self.stop_health();
                        let _ = self.log.delete_service(&self.def.name).await;
                        self.publish();
                        return;
                    }
                    if self.resume_after_reexec().await {
                        continue;
                    }
                    let why = error.unwrap_or_else(|| "its socket closed".into());
                    self.buddy_lost(&why).await;
                    self.save_record().await;
                    return;
                }
            }
        }
        if !entries.is_empty() {
            self.store_entries(entries).await;
            self.lost_streak = 0;
        }
    }

    /// Stores journal entries as events (with the journal position, atomically), updates
    /// the status, then acknowledges them to the buddy.
    async fn store_entries(&mut self, entries: Vec<JournalEntry>) {
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|e| e.seq > self.journal_seq)
            .collect();
        let Some(last) = entries.last().map(|e| e.seq) else {
            return;
        };
        let pid_before = self.pid;
        let mut events = Vec::new();
        for e in &entries {
            if let Some(ev) = self.translate(e) {
                events.push(ev);
            }
        }
        if let Err(e) = self.log.append_buddy(self.name(), events, last).await {
            tracing::error!(service = %self.name(), error = %format!("{e:#}"), "cannot store buddy events; will retry on next attach");
            return;
        }
        self.journal_seq = last;
        if self.pid != pid_before {
            // Remembered so that an orphan can be found if the buddy dies with the agent away.
            self.save_record().await;
        }
        if self.conn.is_some() {
            let _ = self.send(Op::Ack { seq: last }).await;
        }
        self.publish();
    }

    /// Applies one journal entry to the status and turns it into an event.
    fn translate(&mut self, e: &JournalEntry) -> Option<Event> {
        let (kind, msg, detail) = match &e.kind {
            BuddyEvent::BuddyStarted { buddy_pid, version } => {
                self.buddy_pid = Some(*buddy_pid);
                (
                    EventKind::BuddyAttached,
                    format!("buddy {buddy_pid} started (version {version})"),
                    json!({"buddy_pid": buddy_pid}),
                )
            }
            BuddyEvent::Started { pid, restart } => {
                self.proc_state = ProcState::Running;
                self.pid = Some(*pid);
                self.since_ms = e.ts_ms;
                self.restarts = *restart;
                self.health = HealthState::default();
                let kind = if self.def.health.is_some() {
                    self.start_health();
                    EventKind::Starting
                } else {
                    EventKind::Running
                };
                let msg = if *restart > 0 {
                    format!("restarted as pid {pid} (restart {restart})")
                } else {
                    format!("started as pid {pid}")
                };
                (kind, msg, json!({"pid": pid, "restart": restart}))
            }
            BuddyEvent::SpawnFailed { error } => (
                EventKind::SpawnFailed,
                format!("cannot start: {error}"),
                json!({"error": error}),
            ),
            BuddyEvent::Exited {
                pid,
                status,
                uptime_ms,
                expected,
            } => {
                self.pid = None;
                self.last_exit = Some(*status);
                self.stop_health();
                let how = match (status.code, status.signal) {
                    (_, Some(s)) => format!("killed by signal {s}"),
                    (Some(c), _) => format!("exited with code {c}"),
                    _ => "exited".into(),
                };
                let mut detail = json!({"pid": pid, "code": status.code, "signal": status.signal,
                    "uptime_ms": uptime_ms, "expected": expected});
                if !expected && !status.success() {
                    detail["last_lines"] =
                        json!(crate::logs::tail(&self.cfg.log_dir(self.name()), 10));
                }
                (
                    EventKind::Exited,
                    format!(
                        "pid {pid} {how} after {}",
                        health::humantime_short(Duration::from_millis(*uptime_ms))
                    ),
                    detail,
                )
            }
            BuddyEvent::BackingOff { delay_ms, failures } => {
                self.proc_state = ProcState::BackingOff;
                self.since_ms = e.ts_ms;
                (
                    EventKind::BackingOff,
                    format!(
                        "restarting in {} ({failures} failures in a row)",
                        health::humantime_short(Duration::from_millis(*delay_ms))
                    ),
                    json!({"delay_ms": delay_ms, "failures": failures}),
                )
            }
            BuddyEvent::Stopping { pid, signal } => {
                self.proc_state = ProcState::Stopping;
                (
                    EventKind::Stopping,
                    format!("sent signal {signal} to pid {pid}"),
                    json!({"pid": pid, "signal": signal}),
                )
            }
            BuddyEvent::Killed { pid } => (
                EventKind::Killed,
                format!("kill_timeout passed: SIGKILL to process group {pid}"),
                json!({"pid": pid}),
            ),
            BuddyEvent::Stopped => {
                self.proc_state = ProcState::Stopped;
                self.since_ms = e.ts_ms;
                (
                    EventKind::Stopped,
                    "stopped".into(),
                    serde_json::Value::Null,
                )
            }
            BuddyEvent::Failed { reason } => {
                self.proc_state = ProcState::Failed;
                self.since_ms = e.ts_ms;
                (
                    EventKind::Failed,
                    format!("failed: {reason}"),
                    json!({"reason": reason,
                    "last_lines": crate::logs::tail(&self.cfg.log_dir(self.name()), 10)}),
                )
            }
            BuddyEvent::Signalled { pid, signal } => (
                EventKind::Signalled,
                format!("sent signal {signal} to pid {pid}"),
                json!({"pid": pid, "signal": signal}),
            ),
            BuddyEvent::LogDropped { bytes } => (
                EventKind::LogDropped,
                format!("{bytes} bytes of output dropped (log not writable)"),
                json!({"bytes": bytes}),
            ),
            BuddyEvent::SpecChanged => (
                EventKind::ConfigChanged,
                "buddy took the new definition".into(),
                serde_json::Value::Null,
            ),
            BuddyEvent::BuddyExiting => {
                self.proc_state = ProcState::Stopped;
                (
                    EventKind::Stopped,
                    "buddy exiting".into(),
                    serde_json::Value::Null,
                )
            }
        };
        Some(Event {
            id: 0,
            ts_ms: e.ts_ms,
            service: Some(self.name().to_owned()),
            kind,
            actor: "buddy".into(),
            message: msg,
            detail,
        })
    }

    fn start_health(&mut self) {
        self.stop_health();
        let Some(check) = self.def.health.clone() else {
            return;
        };
        let Some(pid) = self.pid else { return };
        let tx = self.health_tx.clone();
        let started = self.since_ms;
        self.health_task = Some(tokio::spawn(health_loop(check, pid, started, tx)));
    }

    fn stop_health(&mut self) {
        if let Some(t) = self.health_task.take() {
            t.abort();
        }
    }

    async fn on_health(&mut self, pid: u64, result: Result<String, String>) {
        if self.pid.map(u64::from) != Some(pid) {
            return;
        }
        let Some(check) = self.def.health.clone() else {
            return;
        };
        match result {
            Ok(note) => {
                self.health.failures = 0;
                self.health.last = Some(format!("ok: {note}"));
                if !self.health.passed_once {
                    self.health.passed_once = true;
                    self.record(
                        EventKind::Running,
                        "agent",
                        format!("ready: health check passed ({note})"),
                        json!({"pid": pid}),
                    )
                    .await;
                } else if self.health.unhealthy {
                    self.health.unhealthy = false;
                    self.record(
                        EventKind::Healthy,
                        "agent",
                        format!("healthy again ({note})"),
                        json!({"pid": pid}),
                    )
                    .await;
                }
            }
            Err(why) => {
                self.health.last = Some(format!("failing: {why}"));
                let in_grace =
                    now_ms().saturating_sub(self.since_ms) < check.start_period.as_millis() as u64;
                if !in_grace {
                    self.health.failures += 1;
                }
                if self.health.failures >= check.threshold && !self.health.unhealthy {
                    self.health.unhealthy = true;
                    let restart = check.on_failure == OnFailure::Restart;
                    self.record(
                        EventKind::Unhealthy,
                        "agent",
                        format!(
                            "health check failed {} times: {why}{}",
                            self.health.failures,
                            if restart { "; restarting" } else { "" }
                        ),
                        json!({"pid": pid, "failures": self.health.failures, "reason": why}),
                    )
                    .await;
                    if restart {
                        self.stop_health();
                        let _ = self.send(Op::Restart).await;
                    }
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let state = match self.proc_state {
            _ if self.conn.is_none() && self.buddy_pid.is_none() => ServiceState::Unknown,
            ProcState::Running if self.def.health.is_some() && !self.health.passed_once => {
                ServiceState::Starting
            }
            ProcState::Running if self.health.unhealthy => ServiceState::Unhealthy,
            ProcState::Running => ServiceState::Running,
            ProcState::BackingOff => ServiceState::BackingOff,
            ProcState::Stopping => ServiceState::Stopping,
            ProcState::Stopped => ServiceState::Stopped,
            ProcState::Failed => ServiceState::Failed,
        };
        let status = ServiceStatus {
            name: self.def.name.clone(),
            state,
            desired: self.desired,
            pid: self.pid,
            buddy_pid: self.buddy_pid,
            since_ms: self.since_ms,
            restarts: self.restarts,
            last_exit: self.last_exit,
            health: self.health.last.clone(),
            actions: self.def.actions.keys().cloned().collect(),
        };
        self.status_tx.send_replace(status);
    }
}

async fn health_loop(check: HealthCheck, pid: u32, started_ms: u64, tx: mpsc::Sender<HealthMsg>) {
    // Until the first pass the check runs often, for readiness; then once per interval.
    let soon = check.interval.min(Duration::from_millis(250));
    let mut passed = false;
    loop {
        tokio::time::sleep(if passed { check.interval } else { soon }).await;
        let r = health::check(&check.kind, check.timeout, started_ms).await;
        passed |= r.is_ok();
        if tx.send(Box::new((u64::from(pid), r))).await.is_err() {
            return;
        }
    }
}
