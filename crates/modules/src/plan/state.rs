//! Desired and installed state: what an apply is asked to reach, and what is on the node.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::identity::{ModuleRef, check_name, check_version};

/// A whole desired state: every module that should be installed, nothing else.
///
/// TOML:
/// ```toml
/// [[modules]]
/// name = "my-server"
/// version = "1.0.0"
/// config = { port = 8989 }
/// running = true          # default true
/// ```
/// JSON: `{"modules": [{"name": "my-server", "version": "1.0.0", "config": {"port": 8989}}]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The modules, one per name.
    #[serde(default)]
    pub modules: Vec<DesiredModule>,
}

/// One module of a desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredModule {
    /// Module name.
    pub name: String,
    /// The version to have installed.
    pub version: Version,
    /// Its configuration (validated against the module's schema at `configure`; `null`
    /// counts as `{}`).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Whether it should run.
    #[serde(default = "yes")]
    pub running: bool,
}

fn yes() -> bool {
    true
}

impl DesiredModule {
    /// `name@version`.
    pub fn module_ref(&self) -> ModuleRef {
        ModuleRef::new(self.name.clone(), self.version.clone())
    }
}

/// Why a desired state was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not valid TOML or JSON of this shape.
    #[error("cannot parse the desired state: {reason}")]
    Parse {
        /// The parser's message.
        reason: String,
    },
    /// Every problem with its contents, at once (`modules[1].name: …`).
    #[error("invalid desired state: {}", .problems.join("; "))]
    Invalid {
        /// The problems.
        problems: Vec<String>,
    },
}

impl DesiredState {
    /// Parses a desired state from JSON (text starting with `{`) or TOML, and checks it.
    pub fn parse(text: &str) -> Result<Self, StateError> {
        let parsed: Self = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| StateError::Parse {
                reason: e.to_string(),
            })?
        } else {
            toml::from_str(text).map_err(|e| StateError::Parse {
                reason: e.to_string(),
            })?
        };
        parsed.check()?;
        Ok(parsed)
    }

    /// Checks names, versions, configs (objects or null) and that no name repeats.
    pub fn check(&self) -> Result<(), StateError> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (i, m) in self.modules.iter().enumerate() {
            if let Err(r) = check_name(&m.name) {
                problems.push(format!("modules[{i}].name: {r}"));
            }
            if let Err(r) = check_version(&m.version) {
                problems.push(format!("modules[{i}].version: {r}"));
            }
            if !(m.config.is_object() || m.config.is_null()) {
                problems.push(format!("modules[{i}].config: must be an object"));
            }
            if !names.insert(m.name.as_str()) {
                problems.push(format!("modules[{i}].name: {} appears twice", m.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StateError::Invalid { problems })
        }
    }
}

/// A module installed on the node, as the agent records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstalledModule {
    /// Module name.
    pub name: String,
    /// Installed version.
    pub version: Version,
    /// The configuration last applied as given (before defaults), or `None` if never
    /// configured (or unknown after a failed step).
    pub config: Option<serde_json::Value>,
    /// Whether it is started.
    pub running: bool,
    /// Its manifest's submodules: what it depends on.
    #[serde(default)]
    pub submodules: Vec<ModuleRef>,
}

impl InstalledModule {
    /// `name@version`.
    pub fn module_ref(&self) -> ModuleRef {
        ModuleRef::new(self.name.clone(), self.version.clone())
    }
}

/// Everything installed on the node. Several versions of one name may be installed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstalledState {
    /// The installed modules.
    pub modules: Vec<InstalledModule>,
}

impl InstalledState {
    /// The installed module `r`, if any.
    pub fn get(&self, r: &ModuleRef) -> Option<&InstalledModule> {
        self.modules
            .iter()
            .find(|m| m.name == r.name && m.version == r.version)
    }

    /// This state as a desired state (to roll back to it). A module never configured keeps
    /// `config: null`; see [`super::rollback`] for how that is kept exact.
    pub fn to_desired(&self) -> DesiredState {
        DesiredState {
            modules: self
                .modules
                .iter()
                .map(|m| DesiredModule {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    config: m.config.clone().unwrap_or(serde_json::Value::Null),
                    running: m.running,
                })
                .collect(),
        }
    }

    /// The installed modules keyed by reference, with their dependencies.
    pub(crate) fn deps(&self) -> BTreeMap<ModuleRef, Vec<ModuleRef>> {
        self.modules
            .iter()
            .map(|m| (m.module_ref(), m.submodules.clone()))
            .collect()
    }
}
