//! Desired state on this node: plan the steps from what is installed to what is wanted,
//! execute them with a durable journal, and on any failure roll back to the state before,
//! reporting which step failed and why. A crash mid-apply is finished on the next start:
//! the journal says how far the apply (or its rollback) got, and the rollback completes.
//!
//! Guarantees: the journal is written before each step starts and after it ends (one
//! SQLite row, `synchronous=FULL`); steps are idempotent (installing what is installed,
//! stopping what is stopped … succeed), so re-running a half-done step is safe; one apply
//! at a time (the module lock). Every step has a time limit through its hooks and
//! downloads. An apply can be cancelled ([`Modules::cancel_apply`]: the `apply.cancel`
//! method on the priority lane, `reeve state cancel` locally): the step under way is
//! stopped (its hook or worker process killed) and counts as failed, and the apply rolls
//! back as after any failure (a rollback itself is not cancellable).

use crate::events::{event, now_ms};
use crate::modules::Modules;
use crate::service::ControlError;
use crate::supervisor::Supervisor;
use reeve_modules::plan::{self, DesiredState, InstalledState, Step, Submodules};
use reeve_proto::event::EventKind;
use reeve_store::Write;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;

/// An apply in progress, as seen from outside.
pub(crate) struct Running {
    /// The apply's id.
    id: String,
    /// Wakes the apply to stop.
    stop: Arc<Notify>,
    /// Who asked it to stop.
    by: Arc<std::sync::Mutex<Option<String>>>,
}

/// The store key of the journal of the apply in progress.
const JOURNAL_KEY: &str = "apply";

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The apply's id.
    pub id: String,
    /// `applied`, `nothing_to_do`, `rolled_back` or `rollback_failed`.
    pub outcome: String,
    /// The steps that completed, in order (before any rollback).
    pub steps: Vec<String>,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The rollback's steps, in order.
    pub rollback_steps: Vec<String>,
    /// Why the rollback itself failed, if it did.
    pub rollback_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Phase {
    Applying,
    RollingBack { steps: Vec<Step>, done: usize },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Journal {
    id: String,
    actor: String,
    before: InstalledState,
    steps: Vec<Step>,
    done: usize,
    phase: Phase,
}

fn failed(m: impl Into<String>) -> ControlError {
    ControlError::Failed(m.into())
}

impl Modules {
    async fn installed_state(&self) -> Result<InstalledState, ControlError> {
        Ok(InstalledState {
            modules: self.list().await?,
        })
    }

    fn known(state: &InstalledState) -> Submodules {
        state
            .modules
            .iter()
            .map(|m| (m.module_ref(), m.submodules.clone()))
            .collect()
    }

    /// The ordered steps that would take this node to `desired`.
    pub async fn plan_state(&self, desired: &DesiredState) -> Result<Vec<Step>, ControlError> {
        let now = self.installed_state().await?;
        plan::plan(&now, desired, &Self::known(&now))
            .map_err(|e| ControlError::BadRequest(format!("{e}")))
    }

    async fn save_journal(&self, j: &Journal) -> Result<(), ControlError> {
        let value = serde_json::to_string(j).map_err(|e| failed(e.to_string()))?;
        self.log()
            .write(Write::PutKv {
                key: JOURNAL_KEY.into(),
                value,
            })
            .await
            .map_err(|e| failed(format!("cannot write the apply journal: {e:#}")))
    }

    /// Stops the apply in progress on behalf of `by`; returns its id, or `None` when no
    /// apply is under way.
    pub fn cancel_apply(&self, by: &str) -> Option<String> {
        let running = self.running().lock().ok()?;
        let r = running.as_ref()?;
        if let Ok(mut b) = r.by.lock() {
            b.get_or_insert_with(|| by.to_owned());
        }
        r.stop.notify_one();
        Some(r.id.clone())
    }

    async fn clear_journal(&self) {
        let _ = self.log().write(Write::DeleteKv(JOURNAL_KEY.into())).await;
    }

    /// Applies `desired`: plan, journaled steps, rollback on failure. `force` lets it put
    /// a lower version than the installed one (a local admin or an operator's key, never
    /// the hub's own key, may ask for that).
    pub async fn apply_state(
        &self,
        desired: DesiredState,
        sup: &Supervisor,
        actor: &str,
        force: bool,
    ) -> Result<ApplyReport, ControlError> {
        let _g = self.lock().lock().await;
        if self.log().kv(JOURNAL_KEY).await.ok().flatten().is_some() {
            return Err(ControlError::BadRequest(
                "another apply is unfinished; it completes when the agent restarts".into(),
            ));
        }
        let before = self.installed_state().await?;
        if !force {
            // A downgrade is refused before anything changes (the plan would uninstall the
            // newer version first, so the install step alone cannot tell).
            for d in &desired.modules {
                let newer = before
                    .modules
                    .iter()
                    .map(|m| m.module_ref())
                    .find(|r| r.name == d.name && r.version > d.version);
                if let Some(r) = newer {
                    return Err(ControlError::BadRequest(format!(
                        "{}@{} is older than the installed {r}: a downgrade needs --force",
                        d.name, d.version
                    )));
                }
            }
        }
        let steps = plan::plan(&before, &desired, &Self::known(&before))
            .map_err(|e| ControlError::BadRequest(format!("{e}")))?;
        let id = format!("apply-{}", now_ms());
        let mut report = ApplyReport {
            id: id.clone(),
            outcome: "applied".into(),
            steps: Vec::new(),
            failed_step: None,
            error: None,
            rollback_steps: Vec::new(),
            rollback_error: None,
        };
        if steps.is_empty() {
            report.outcome = "nothing_to_do".into();
            return Ok(report);
        }
        let mut j = Journal {
            id: id.clone(),
            actor: actor.to_owned(),
            before,
            steps: steps.clone(),
            done: 0,
            phase: Phase::Applying,
        };
        self.save_journal(&j).await?;
        self.record(
            actor,
            format!("{id}: applying {} steps", steps.len()),
            json!({"id": id, "steps": steps}),
        )
        .await;
        let (stop, by) = (
            Arc::new(Notify::new()),
            Arc::new(std::sync::Mutex::new(None)),
        );
        let cancellable = RunningGuard::set(
            self,
            Running {
                id: id.clone(),
                stop: stop.clone(),
                by: by.clone(),
            },
        );
        for (i, step) in steps.iter().enumerate() {
            let outcome = tokio::select! {
                r = self.run_step(step, sup, actor, force) => r,
                _ = stop.notified() => {
                    let who = by.lock().ok().and_then(|b| b.clone()).unwrap_or_default();
                    Err(ControlError::Failed(format!("cancelled by {who}")))
                }
            };
            if let Err(e) = outcome {
                report.failed_step = Some(step.to_string());
                report.error = Some(e.to_string());
                self.record(
                    actor,
                    format!("{id}: {step} failed: {e}; rolling back"),
                    json!({"id": id, "step": step, "error": e.to_string()}),
                )
                .await;
                drop(cancellable); // a rollback runs to its end
                self.roll_back(&mut j, Some(step), sup, &mut report).await;
                self.clear_journal().await;
                return Ok(report);
            }
            report.steps.push(step.to_string());
            j.done = i + 1;
            self.save_journal(&j).await?;
        }
        self.clear_journal().await;
        self.record(
            actor,
            format!("{id}: applied"),
            json!({"id": id, "outcome": "applied"}),
        )
        .await;
        Ok(report)
    }

    /// Runs the rollback of `j` (computing it if the apply was still going forward) and
    /// fills the report.
    async fn roll_back(
        &self,
        j: &mut Journal,
        failed_step: Option<&Step>,
        sup: &Supervisor,
        report: &mut ApplyReport,
    ) {
        let (steps, start) = match &j.phase {
            Phase::RollingBack { steps, done } => (steps.clone(), *done),
            Phase::Applying => {
                let known = Self::known(&j.before);
                match plan::rollback(&j.before, &j.steps[..j.done], failed_step, &known) {
                    Ok(steps) => (steps, 0),
                    Err(e) => {
                        report.outcome = "rollback_failed".into();
                        report.rollback_error = Some(format!("no rollback plan: {e}"));
                        return;
                    }
                }
            }
        };
        j.phase = Phase::RollingBack {
            steps: steps.clone(),
            done: start,
        };
        let _ = self.save_journal(j).await;
        let mut errors = Vec::new();
        for (i, step) in steps.iter().enumerate().skip(start) {
            // Best effort: a failing rollback step is reported and the others still run.
            if let Err(e) = self.run_step(step, sup, &j.actor, true).await {
                errors.push(format!("{step}: {e}"));
            }
            report.rollback_steps.push(step.to_string());
            j.phase = Phase::RollingBack {
                steps: steps.clone(),
                done: i + 1,
            };
            let _ = self.save_journal(j).await;
        }
        if errors.is_empty() {
            report.outcome = "rolled_back".into();
        } else {
            report.outcome = "rollback_failed".into();
            report.rollback_error = Some(errors.join("; "));
        }
        self.record(
            &j.actor,
            format!("{}: {}", j.id, report.outcome.replace('_', " ")),
            json!({"id": j.id, "outcome": report.outcome, "rollback_error": report.rollback_error}),
        )
        .await;
    }

    /// At agent start: an apply interrupted by a crash is rolled back (or its rollback
    /// finished), so the node is consistent again. Returns the report, if there was one.
    pub async fn recover(&self, sup: &Supervisor) -> Option<ApplyReport> {
        let _g = self.lock().lock().await;
        let text = self.log().kv(JOURNAL_KEY).await.ok().flatten()?;
        let Ok(mut j) = serde_json::from_str::<Journal>(&text) else {
            tracing::error!("unreadable apply journal; leaving it for inspection");
            return None;
        };
        let mut report = ApplyReport {
            id: j.id.clone(),
            outcome: "rolled_back".into(),
            steps: j.steps[..j.done.min(j.steps.len())]
                .iter()
                .map(ToString::to_string)
                .collect(),
            failed_step: j.steps.get(j.done).map(ToString::to_string),
            error: Some("the agent stopped during the apply".into()),
            rollback_steps: Vec::new(),
            rollback_error: None,
        };
        self.record(
            "agent",
            format!("{}: interrupted by an agent restart; rolling back", j.id),
            json!({"id": j.id}),
        )
        .await;
        let failed_step = j.steps.get(j.done).cloned();
        self.roll_back(&mut j, failed_step.as_ref(), sup, &mut report)
            .await;
        self.clear_journal().await;
        Some(report)
    }

    async fn run_step(
        &self,
        step: &Step,
        sup: &Supervisor,
        actor: &str,
        downgrade_ok: bool,
    ) -> Result<(), ControlError> {
        let r = step.module();
        let spec = r.to_string();
        match step {
            Step::Download { module } => self.download(module).await,
            // A rollback may put back an older version: it restores what was there. A
            // forced apply may too.
            Step::Install { module } => self.install_step(module, downgrade_ok).await,
            Step::Configure { config, .. } => {
                self.configure_step(&spec, config.clone(), sup, actor).await
            }
            Step::Start { .. } => self.start_step(&spec, sup, actor).await,
            Step::Stop { .. } => self.stop_step(&spec, sup, actor).await,
            Step::Uninstall { .. } => self.uninstall_step(&spec, sup, actor).await,
        }
    }

    /// Records a module event.
    async fn record(&self, actor: &str, msg: String, detail: serde_json::Value) {
        let _ = self
            .log()
            .record(event(None, EventKind::Module, actor, msg, detail))
            .await;
    }
}

/// Makes an apply cancellable for as long as it lives.
struct RunningGuard<'a>(&'a Modules);

impl<'a> RunningGuard<'a> {
    fn set(m: &'a Modules, r: Running) -> Self {
        if let Ok(mut slot) = m.running().lock() {
            *slot = Some(r);
        }
        Self(m)
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.0.running().lock() {
            *slot = None;
        }
    }
}
