//! The desired-state planner: from what is installed and what is wanted, the ordered steps
//! that get there ([`plan`]), what the steps do to the recorded state ([`apply_step`]), and
//! the steps that undo a partly applied plan ([`rollback`]). Pure: no IO, no clock.
//!
//! **Order** of a plan:
//! 1. `Download` every package to install (nothing changes yet, so a missing or badly
//!    signed package fails the apply before anything is stopped);
//! 2. `Stop` what must stop (removed, replaced, reconfigured while running, or wanted
//!    stopped), dependents before what they depend on; a running module that depends on one
//!    that stops is stopped too and started again at the end;
//! 3. `Uninstall` what is removed or replaced (a module is always stopped first);
//! 4. `Install` and `Configure`, dependencies first;
//! 5. `Start`, dependencies first.
//!
//! "Depends on" means: a submodule of X has the name of another module of the state. The
//! submodules of installed modules come from [`InstalledModule::submodules`]; those of
//! modules not installed yet from `known` (the agent fills it from the downloaded
//! manifests: plan, run the `Download` steps, read the manifests, plan again).
//!
//! **Rollback**: [`rollback`] takes the state before the apply, the steps completed and the
//! step that failed, and plans back to the state before. The failed step is assumed to have
//! half happened (a failed `Start` may have started something, a failed `Stop` may have
//! stopped it, a failed `Install` left files, a failed `Uninstall` removed some), so the
//! executor's steps must be idempotent: stopping a stopped module, starting a started one,
//! uninstalling a partial one and installing over a leftover directory all succeed. A module
//! that was installed but never configured before the apply keeps the configuration the
//! apply gave it (there is no "unconfigured" to go back to); it is stopped as it was.
//!
//! The configuration compared is the one given in the desired state (before schema
//! defaults); the agent records that one in [`InstalledModule::config`].

mod order;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::ModuleRef;
pub use state::{DesiredModule, DesiredState, InstalledModule, InstalledState, StateError};

/// Submodules of modules, by module: what each depends on.
pub type Submodules = BTreeMap<ModuleRef, Vec<ModuleRef>>;

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Fetch and verify the package into the cache (no change to the node).
    Download {
        /// The module.
        module: ModuleRef,
    },
    /// Unpack the package (and its submodules) and run its `install` hook.
    Install {
        /// The module.
        module: ModuleRef,
    },
    /// Validate `config`, render the templates, run the `configure` hook.
    Configure {
        /// The module.
        module: ModuleRef,
        /// The configuration as given (defaults not applied).
        config: Value,
    },
    /// Run the `start` hook and hand the declared services to the supervisor.
    Start {
        /// The module.
        module: ModuleRef,
    },
    /// Stop the declared services and run the `stop` hook.
    Stop {
        /// The module.
        module: ModuleRef,
    },
    /// Run the `uninstall` hook and remove the module directory (the cache keeps the
    /// package).
    Uninstall {
        /// The module.
        module: ModuleRef,
    },
}

impl Step {
    /// The module the step acts on.
    pub fn module(&self) -> &ModuleRef {
        match self {
            Step::Download { module }
            | Step::Install { module }
            | Step::Configure { module, .. }
            | Step::Start { module }
            | Step::Stop { module }
            | Step::Uninstall { module } => module,
        }
    }

    /// The step's kind as a word: `download`, `install`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Download { .. } => "download",
            Step::Install { .. } => "install",
            Step::Configure { .. } => "configure",
            Step::Start { .. } => "start",
            Step::Stop { .. } => "stop",
            Step::Uninstall { .. } => "uninstall",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Configure { module, config } => write!(f, "configure {module} with {config}"),
            other => write!(f, "{} {}", other.kind(), other.module()),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The desired state is invalid.
    #[error("invalid desired state: {}", .problems.join("; "))]
    Invalid {
        /// Every problem.
        problems: Vec<String>,
    },
    /// Modules depend on each other in a circle.
    #[error("modules depend on each other in a circle: {}", .modules.join(", "))]
    Cycle {
        /// The modules in or behind the circle.
        modules: Vec<String>,
    },
}

/// What one module should end as. `config: None` leaves the configuration as it is.
#[derive(Clone, Debug)]
struct Target {
    module: ModuleRef,
    config: Option<Value>,
    running: bool,
}

/// Plans the steps from `current` to `desired`; `known` adds the submodules of modules not
/// installed yet. See the module docs for the order.
pub fn plan(
    current: &InstalledState,
    desired: &DesiredState,
    known: &Submodules,
) -> Result<Vec<Step>, PlanError> {
    desired.check().map_err(|e| match e {
        StateError::Invalid { problems } => PlanError::Invalid { problems },
        StateError::Parse { reason } => PlanError::Invalid {
            problems: vec![reason],
        },
    })?;
    let targets = desired
        .modules
        .iter()
        .map(|m| Target {
            module: m.module_ref(),
            config: Some(if m.config.is_null() {
                Value::Object(Default::default())
            } else {
                m.config.clone()
            }),
            running: m.running,
        })
        .collect();
    plan_targets(current, targets, known)
}

/// Plans the steps that undo a partly applied plan: from `before` (the state when the apply
/// began), after `completed` and the half-done `failed` step, back to `before`.
pub fn rollback(
    before: &InstalledState,
    completed: &[Step],
    failed: Option<&Step>,
    known: &Submodules,
) -> Result<Vec<Step>, PlanError> {
    let mut known = known.clone();
    known.extend(before.deps());
    let mut now = before.clone();
    for step in completed {
        apply_step(&mut now, step, &known);
    }
    if let Some(step) = failed {
        apply_failed_step(&mut now, step, &known);
    }
    let targets = before
        .modules
        .iter()
        .map(|m| Target {
            module: m.module_ref(),
            config: m.config.clone(),
            running: m.running,
        })
        .collect();
    plan_targets(&now, targets, &known)
}

/// Records in `state` what a completed `step` did.
pub fn apply_step(state: &mut InstalledState, step: &Step, known: &Submodules) {
    let find = |state: &mut InstalledState, r: &ModuleRef| {
        state.modules.iter_mut().position(|m| &m.module_ref() == r)
    };
    match step {
        Step::Download { .. } => {}
        Step::Install { module } => {
            if find(state, module).is_none() {
                state.modules.push(InstalledModule {
                    name: module.name.clone(),
                    version: module.version.clone(),
                    config: None,
                    running: false,
                    submodules: known.get(module).cloned().unwrap_or_default(),
                });
            }
        }
        Step::Configure { module, config } => {
            if let Some(i) = find(state, module) {
                state.modules[i].config = Some(config.clone());
            }
        }
        Step::Start { module } | Step::Stop { module } => {
            if let Some(i) = find(state, module) {
                state.modules[i].running = matches!(step, Step::Start { .. });
            }
        }
        Step::Uninstall { module } => {
            if let Some(i) = find(state, module) {
                state.modules.remove(i);
            }
        }
    }
}

/// Records in `state` the worst a failed `step` may have done, so that a rollback redoes
/// what is needed: a failed start counts as started, a failed stop as stopped, a failed
/// install as installed, a failed configure as an unknown configuration, a failed uninstall
/// as removed.
pub fn apply_failed_step(state: &mut InstalledState, step: &Step, known: &Submodules) {
    match step {
        Step::Configure { module, .. } => {
            if let Some(m) = state.modules.iter_mut().find(|m| &m.module_ref() == module) {
                m.config = None;
            }
        }
        other => apply_step(state, other, known),
    }
}

fn plan_targets(
    current: &InstalledState,
    targets: Vec<Target>,
    known: &Submodules,
) -> Result<Vec<Step>, PlanError> {
    let mut deps = known.clone();
    deps.extend(current.deps());
    let target_by_name: BTreeMap<&str, &Target> = targets
        .iter()
        .map(|t| (t.module.name.as_str(), t))
        .collect();

    let mut stop: BTreeSet<ModuleRef> = BTreeSet::new();
    let mut uninstall: BTreeSet<ModuleRef> = BTreeSet::new();
    let mut install: BTreeSet<ModuleRef> = BTreeSet::new();
    let mut configure: BTreeMap<ModuleRef, Value> = BTreeMap::new();
    let mut start: BTreeSet<ModuleRef> = BTreeSet::new();

    for c in &current.modules {
        let r = c.module_ref();
        match target_by_name.get(c.name.as_str()) {
            Some(t) if t.module.version == c.version => {
                let reconfigure = t
                    .config
                    .as_ref()
                    .is_some_and(|v| c.config.as_ref() != Some(v));
                if c.running && (reconfigure || !t.running) {
                    stop.insert(r.clone());
                }
                if reconfigure && let Some(v) = &t.config {
                    configure.insert(r.clone(), v.clone());
                }
                if t.running && (!c.running || reconfigure) {
                    start.insert(r);
                }
            }
            _ => {
                if c.running {
                    stop.insert(r.clone());
                }
                uninstall.insert(r);
            }
        }
    }
    for t in &targets {
        if current.get(&t.module).is_none() {
            install.insert(t.module.clone());
            if let Some(v) = &t.config {
                configure.insert(t.module.clone(), v.clone());
            }
            if t.running {
                start.insert(t.module.clone());
            }
        }
    }
    // A running module that stays, but depends on one that stops, stops and starts again.
    loop {
        let stopped: BTreeSet<&str> = stop.iter().map(|r| r.name.as_str()).collect();
        let more: Vec<ModuleRef> = current
            .modules
            .iter()
            .filter(|c| c.running && !stop.contains(&c.module_ref()))
            .filter(|c| {
                c.submodules
                    .iter()
                    .any(|s| stopped.contains(s.name.as_str()))
            })
            .map(InstalledModule::module_ref)
            .collect();
        if more.is_empty() {
            break;
        }
        for r in more {
            if target_by_name
                .get(r.name.as_str())
                .is_some_and(|t| t.module == r && t.running)
            {
                start.insert(r.clone());
            }
            stop.insert(r);
        }
    }

    let old: Vec<ModuleRef> = current
        .modules
        .iter()
        .map(InstalledModule::module_ref)
        .collect();
    let new: Vec<ModuleRef> = targets.iter().map(|t| t.module.clone()).collect();
    let old_order = order::dependencies_first(&old, &deps)?;
    let new_order = order::dependencies_first(&new, &deps)?;

    let mut steps = Vec::new();
    for r in new_order.iter().filter(|r| install.contains(r)) {
        steps.push(Step::Download { module: r.clone() });
    }
    for r in old_order.iter().rev().filter(|r| stop.contains(r)) {
        steps.push(Step::Stop { module: r.clone() });
    }
    for r in old_order.iter().rev().filter(|r| uninstall.contains(r)) {
        steps.push(Step::Uninstall { module: r.clone() });
    }
    for r in &new_order {
        if install.contains(r) {
            steps.push(Step::Install { module: r.clone() });
        }
        if let Some(config) = configure.get(r) {
            steps.push(Step::Configure {
                module: r.clone(),
                config: config.clone(),
            });
        }
    }
    for r in new_order.iter().filter(|r| start.contains(r)) {
        steps.push(Step::Start { module: r.clone() });
    }
    Ok(steps)
}
