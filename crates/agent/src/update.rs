//! Self-update (DESIGN §2.4): `reeve agent update --version V` and the `agent.update`
//! method. The new agent is the signed module `reeve-agent@V` from the registry: the module
//! worker downloads and verifies it against the agent's trusted keys (no key, no update)
//! and unpacks it under the launcher's home; the agent checks that its `bin/reeve` runs,
//! then asks the launcher (`reeve-buddy launch`, see `reeve_proto::launcher`) to switch and
//! exits. The launcher runs the new agent on trial and switches back unless it reports
//! healthy in time. Health, reported by [`Updater::report_health`]: the buddies are
//! re-attached (the supervisor has started) and, when the old agent was connected to its
//! hub, the hub is reached again. Services keep running throughout: they belong to their
//! buddies, which the new agent re-attaches and, once committed, re-executes into its own
//! buddy binary (`Supervisor::reexec_buddies`).
//!
//! Invariants: an agent that was not started by the launcher refuses to update (nothing
//! could switch it back); an agent on trial cannot start another update; a lower version is
//! refused unless forced by a local admin or an operator key (never by the hub's key).
#![allow(unsafe_code)] // adopting the launcher's pipe descriptor (two blocks, each with its SAFETY)

use crate::events::{EventLog, event};
use crate::modules::Modules;
use crate::service::ControlError;
use reeve_modules::identity::ModuleRef;
use reeve_proto::event::EventKind;
use reeve_proto::launcher::{
    AgentPackage, ENV_FD, ENV_HOME, ENV_PACKAGE, ENV_TRIAL, LauncherState, STATE_FILE, ToLauncher,
    VERSIONS_DIR,
};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The module name of agent packages in the registry.
pub const PACKAGE: &str = "reeve-agent";
/// How long a new agent has to report healthy unless the request says otherwise.
pub const DEFAULT_TRIAL_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest trial a request may ask for.
const MAX_TRIAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the staged agent's `--version` may take.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Where the last update outcome already recorded as an event is remembered.
const SEEN_KEY: &str = "update.outcome_seen_ms";

type Result<T> = std::result::Result<T, ControlError>;

fn bad(m: impl Into<String>) -> ControlError {
    ControlError::BadRequest(m.into())
}

fn failed(m: impl Into<String>) -> ControlError {
    ControlError::Failed(m.into())
}

/// A request to update (the body of `POST /v1/agent/update`, the args of `agent.update`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpdateRequest {
    /// The version to switch to.
    pub version: String,
    /// Allow a lower version than the running one.
    #[serde(default)]
    pub force: bool,
    /// How long the new agent has to report healthy (default 120 s).
    #[serde(default)]
    pub trial_timeout_ms: Option<u64>,
}

/// The answer of `GET /v1/agent/update`: what runs and how the last update ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpdateStatus {
    /// The agent package version running (the build's version when it runs from the
    /// launcher's command line).
    pub version: String,
    /// The version this binary was built as.
    pub build: String,
    /// This agent's pid.
    pub pid: u32,
    /// Whether a launcher runs this agent (self-update needs one).
    pub launcher: bool,
    /// Whether this agent is on trial.
    pub on_trial: bool,
    /// The launcher's state file, when there is a launcher.
    pub state: Option<LauncherState>,
}

/// A staged update, ready for the switch.
#[derive(Clone, Debug)]
pub struct Staged {
    /// The package.
    pub to: AgentPackage,
    /// The version it replaces.
    pub from: String,
    /// Its trial's time limit.
    pub timeout: Duration,
}

/// The launcher this agent runs under, as its environment describes it.
struct Launcher {
    pipe: std::sync::Mutex<std::fs::File>,
    home: PathBuf,
    /// `Some(need_hub)` while this agent is on trial.
    trial: Option<bool>,
}

impl Launcher {
    fn from_env() -> Option<Self> {
        let fd: i32 = std::env::var(ENV_FD).ok()?.parse().ok()?;
        let home = PathBuf::from(std::env::var_os(ENV_HOME)?);
        if fd < 3 || rustix::io::fcntl_getfd(unsafe_borrow(fd)?).is_err() {
            tracing::warn!(fd, "{ENV_FD} names no open descriptor: no launcher");
            return None;
        }
        // SAFETY: the launcher passed this descriptor for this process alone; nothing else
        // in the agent owns or closes it (checked open just above).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Keep it from the agent's children (buddies, workers, hooks).
        let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
        let trial = std::env::var(ENV_TRIAL).ok().map(|v| v == "hub");
        Some(Self {
            pipe: std::sync::Mutex::new(std::fs::File::from(owned)),
            home,
            trial,
        })
    }

    fn send(&self, msg: &ToLauncher) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        pipe.write_all(&line)
    }

    fn state(&self) -> Option<LauncherState> {
        let bytes = std::fs::read(self.home.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A borrowed descriptor for a check, or `None` for a negative number.
fn unsafe_borrow(fd: i32) -> Option<std::os::fd::BorrowedFd<'static>> {
    if fd < 0 {
        return None;
    }
    // SAFETY: only used for an F_GETFD probe right away, which fails harmlessly with EBADF
    // on a number that is not open.
    Some(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

/// Self-update of this agent.
pub struct Updater {
    launcher: Option<Launcher>,
    package: Option<String>,
    /// Set once a switch was sent: the agent's main loop exits.
    exit: tokio::sync::watch::Sender<bool>,
    /// Set once the launcher committed this agent (after a trial boot).
    committed: tokio::sync::watch::Sender<bool>,
    /// A staged update waiting for its request's reply to be stored (`agent.update`).
    pending: std::sync::Mutex<Option<Staged>>,
}

impl Updater {
    /// The updater of this agent, from the environment the launcher set.
    pub fn from_env() -> Self {
        Self {
            launcher: Launcher::from_env(),
            package: std::env::var(ENV_PACKAGE).ok(),
            exit: tokio::sync::watch::Sender::new(false),
            committed: tokio::sync::watch::Sender::new(false),
            pending: std::sync::Mutex::new(None),
        }
    }

    /// The running package version (the build's version without a package).
    pub fn version(&self) -> String {
        self.package
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
    }

    /// What runs and how the last update ended.
    pub fn status(&self) -> UpdateStatus {
        UpdateStatus {
            version: self.version(),
            build: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            launcher: self.launcher.is_some(),
            on_trial: self.on_trial(),
            state: self.launcher.as_ref().and_then(Launcher::state),
        }
    }

    /// Is this agent on trial (started so, and the launcher has not committed it yet)?
    pub fn on_trial(&self) -> bool {
        self.launcher
            .as_ref()
            .is_some_and(|l| l.trial.is_some() && l.state().is_some_and(|s| s.trial.is_some()))
    }

    /// Resolves once the launcher has committed this agent after its trial boot (never on
    /// a boot that is not a trial).
    pub async fn committed(&self) {
        let mut rx = self.committed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Resolves once a switch was sent (the agent then exits for the launcher).
    pub async fn exit_requested(&self) {
        let mut rx = self.exit.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Downloads, verifies and unpacks `reeve-agent@VERSION` and checks that it runs.
    /// `by_hub`: the hub's own key asked (it may not force a downgrade).
    pub async fn stage(
        &self,
        modules: &Modules,
        req: &UpdateRequest,
        by_hub: bool,
        progress: &tokio::sync::mpsc::Sender<Value>,
    ) -> Result<Staged> {
        let launcher = self.launcher.as_ref().ok_or_else(|| {
            bad("this agent was not started by its launcher, so nothing could switch it back \
                 if the new version failed: run it as `reeve-buddy launch --home DIR -- reeve agent …`")
        })?;
        if self.on_trial() {
            return Err(bad(
                "this agent is itself on trial after an update; update again once it is committed",
            ));
        }
        let to = Version::parse(&req.version)
            .map_err(|e| bad(format!("invalid version {:?}: {e}", req.version)))?;
        let from = self.version();
        if let Ok(running) = Version::parse(&from) {
            if to == running {
                return Err(bad(format!("the agent already runs {from}")));
            }
            if to < running && !req.force {
                return Err(bad(format!(
                    "{to} is older than the running {from}: a downgrade needs force"
                )));
            }
            if to < running && by_hub {
                return Err(bad(
                    "the hub's key may not force a downgrade: a local admin or an operator key must",
                ));
            }
        }
        let timeout = req
            .trial_timeout_ms
            .map_or(DEFAULT_TRIAL_TIMEOUT, Duration::from_millis);
        if timeout.is_zero() || timeout > MAX_TRIAL_TIMEOUT {
            return Err(bad(format!(
                "trial_timeout_ms must be between 1 and {}",
                MAX_TRIAL_TIMEOUT.as_millis()
            )));
        }
        let versions = launcher.home.join(VERSIONS_DIR);
        std::fs::create_dir_all(&versions)
            .map_err(|e| failed(format!("cannot create {}: {e}", versions.display())))?;
        let dir = versions.join(to.to_string());
        let keep = self.version();
        prune_versions(&versions, &[keep.as_str(), &to.to_string()]);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| failed(format!("cannot remove {}: {e}", dir.display())))?;
        }
        let module = ModuleRef::new(PACKAGE, to.clone());
        modules.unpack_package(&module, &dir, progress).await?;
        let exe = dir.join("bin").join("reeve");
        smoke_test(&exe).await?;
        Ok(Staged {
            to: AgentPackage {
                version: to.to_string(),
                exe: exe.display().to_string(),
            },
            from,
            timeout,
        })
    }

    /// Keeps `staged` until the reply of the request that staged it is stored.
    pub fn hold(&self, staged: Staged) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(staged);
    }

    /// Switches to the update [`hold`](Self::hold) kept, if any.
    pub async fn switch_held(&self, need_hub: bool, actor: &str, log: &EventLog) {
        let held = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(staged) = held
            && let Err(e) = self.switch(staged, need_hub, actor, log).await
        {
            tracing::error!("cannot hand the update to the launcher: {e}");
        }
    }

    /// Asks the launcher to switch to `staged` and makes the agent exit.
    pub async fn switch(
        &self,
        staged: Staged,
        need_hub: bool,
        actor: &str,
        log: &EventLog,
    ) -> Result<()> {
        let launcher = self
            .launcher
            .as_ref()
            .ok_or_else(|| bad("no launcher runs this agent"))?;
        let msg = ToLauncher::Switch {
            to: staged.to.clone(),
            need_hub,
            timeout_ms: staged.timeout.as_millis() as u64,
            requested_by: actor.to_string(),
        };
        launcher
            .send(&msg)
            .map_err(|e| failed(format!("cannot reach the launcher: {e}")))?;
        let _ = log
            .record(event(
                None,
                EventKind::AgentUpdate,
                actor,
                format!(
                    "switching from agent {} to {} (on trial for {} s)",
                    staged.from,
                    staged.to.version,
                    staged.timeout.as_secs()
                ),
                json!({"action": "switch", "from": staged.from, "to": staged.to.version, "need_hub": need_hub}),
            ))
            .await;
        self.exit.send_replace(true);
        Ok(())
    }

    /// On a trial boot: reports healthy to the launcher once `connected` answers true (when
    /// the trial needs the hub) — call after the supervisor has re-attached the buddies —
    /// and records the commit in `log`.
    pub fn report_health(
        self: &std::sync::Arc<Self>,
        connected: Option<Box<dyn Fn() -> bool + Send + Sync>>,
        log: EventLog,
    ) {
        let Some(need_hub) = self.launcher.as_ref().and_then(|l| l.trial) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            if need_hub {
                let Some(connected) = connected else {
                    tracing::error!(
                        "on trial with the hub required, but this agent has no hub link"
                    );
                    return;
                };
                while !connected() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let Some(l) = &me.launcher else { return };
            if let Err(e) = l.send(&ToLauncher::Healthy) {
                tracing::error!("cannot report healthy to the launcher: {e}");
                return;
            }
            tracing::info!("reported healthy to the launcher");
            // Record the commit once the launcher has written it.
            for _ in 0..100 {
                if l.state().is_some_and(|s| s.trial.is_none()) {
                    me.record_outcome(&log).await;
                    me.committed.send_replace(true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Records how the last update ended as an `agent_update` event, once.
    pub async fn record_outcome(&self, log: &EventLog) {
        let Some(last) = self
            .launcher
            .as_ref()
            .and_then(Launcher::state)
            .and_then(|s| s.last)
        else {
            return;
        };
        let seen = log.kv(SEEN_KEY).await.ok().flatten();
        if seen.as_deref() == Some(last.at_ms.to_string().as_str()) {
            return;
        }
        let from = last
            .from
            .clone()
            .unwrap_or_else(|| "(launcher default)".into());
        let message = if last.committed {
            format!("updated from agent {from} to {}", last.version)
        } else {
            format!(
                "update from agent {from} to {} switched back: {}",
                last.version, last.reason
            )
        };
        let _ = log
            .record(event(
                None,
                EventKind::AgentUpdate,
                "launcher",
                message,
                serde_json::to_value(&last).unwrap_or(Value::Null),
            ))
            .await;
        let _ = log
            .write(reeve_store::Write::PutKv {
                key: SEEN_KEY.into(),
                value: last.at_ms.to_string(),
            })
            .await;
    }
}

/// Runs the staged agent's `--version`: a package built for another machine, or not an
/// executable at all, is refused before anything switches.
async fn smoke_test(exe: &Path) -> Result<()> {
    let run = tokio::process::Command::new(exe)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(SMOKE_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(failed(format!(
            "the new agent {} does not run: `--version` {}: {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Ok(Err(e)) => Err(failed(format!(
            "the new agent {} does not run: {e}",
            exe.display()
        ))),
        Err(_) => Err(failed(format!(
            "the new agent {} did not answer `--version` within {} s",
            exe.display(),
            SMOKE_TIMEOUT.as_secs()
        ))),
    }
}

/// Removes unpacked versions other than `keep` (best effort).
fn prune_versions(versions: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(versions) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !keep.contains(&name.as_ref()) && !name.starts_with('.') {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
