//! Dependency order: modules sorted so that what a module depends on (by name, through its
//! submodules) comes before it; ties broken by name, so plans are deterministic.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanError, Submodules};
use crate::identity::ModuleRef;

/// `modules` with dependencies first. A circle is an error.
pub(super) fn dependencies_first(
    modules: &[ModuleRef],
    deps: &Submodules,
) -> Result<Vec<ModuleRef>, PlanError> {
    let names: BTreeSet<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    // For each module, the modules of this set it waits for.
    let mut waits: BTreeMap<&ModuleRef, BTreeSet<&ModuleRef>> = BTreeMap::new();
    for m in modules {
        let on: BTreeSet<&str> = deps
            .get(m)
            .into_iter()
            .flatten()
            .map(|d| d.name.as_str())
            .filter(|n| names.contains(n) && *n != m.name)
            .collect();
        let waiting = modules
            .iter()
            .filter(|o| on.contains(o.name.as_str()))
            .collect();
        waits.insert(m, waiting);
    }
    let mut done: Vec<ModuleRef> = Vec::new();
    let mut left: BTreeSet<&ModuleRef> = modules.iter().collect();
    while !left.is_empty() {
        let ready: Vec<&ModuleRef> = left
            .iter()
            .copied()
            .filter(|m| {
                waits
                    .get(m)
                    .is_none_or(|w| w.iter().all(|d| !left.contains(d)))
            })
            .collect();
        if ready.is_empty() {
            return Err(PlanError::Cycle {
                modules: left.iter().map(|m| m.to_string()).collect(),
            });
        }
        for m in ready {
            left.remove(m);
            done.push(m.clone());
        }
    }
    Ok(done)
}
