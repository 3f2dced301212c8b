//! What the module worker (`reeve-modwork`) tells the agent: the results of its commands,
//! as JSON lines on its standard output. These types are always built (serde only), so the
//! agent links them without the package work itself (the `worker` feature).
//!
//! Every command prints exactly one final line: `{"done": …}` on success, `{"error": "…"}`
//! on failure (exit status 1); `configure` prints `{"invalid": ["…", …]}` for a refused
//! configuration and `{"manifest_error": "…"}` when the module's manifest cannot be read.
//! `fetch` prints `{"progress": {"file", "downloaded", "total"}}` lines before.

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::identity::ModuleRef;

/// A package fetched and verified into the cache (the worker's `fetch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// The package file in the cache.
    pub path: std::path::PathBuf,
    /// What the signature says it is, as the signed trusted comment (give it to `install`).
    pub identity: String,
    /// SHA-256 of the package, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was already in the cache.
    pub from_cache: bool,
}

/// A lifecycle hook of a module: what the agent needs to run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookInfo {
    /// Path relative to the module directory.
    pub path: std::path::PathBuf,
    /// Time limit in milliseconds.
    pub timeout_ms: u64,
}

/// A service a module declares, as the text of a service file with the module's defaults
/// applied (working directory the module directory, `REEVE_MODULE_DIR`, `REEVE_CONFIG`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFile {
    /// The service's name inside the module (the agent names it `module/service`).
    pub name: String,
    /// `toml` or `json`.
    pub extension: String,
    /// The service file's text.
    pub text: String,
}

/// What the agent needs to know of a checked manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSummary {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: Version,
    /// Modules installed with this one.
    pub submodules: Vec<ModuleRef>,
    /// Its hooks by name (`install` … `uninstall`).
    pub hooks: BTreeMap<String, HookInfo>,
    /// Its services, by name.
    pub services: Vec<ServiceFile>,
    /// Whether it has a configuration schema (then it must be configured before a start).
    pub has_config_schema: bool,
}

/// The result of a successful `configure`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Configured {
    /// The module (as after `manifest`).
    pub summary: ModuleSummary,
    /// The configuration with the schema's defaults, as written to the config file.
    pub config: serde_json::Value,
}

/// The name of the validated configuration file written into a module's directory.
pub const CONFIG_FILE: &str = "config.json";

#[cfg(feature = "worker")]
mod summarize {
    use super::{CONFIG_FILE, HookInfo, ModuleSummary, ServiceFile};
    use crate::manifest::{Manifest, ServiceSpec};
    use serde_json::{Value, json};
    use std::path::Path;

    impl ModuleSummary {
        /// The summary of `manifest`, for a module installed in `dir` (its services get
        /// the module's defaults for that directory).
        pub fn of(manifest: &Manifest, dir: &Path) -> Self {
            Self {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                submodules: manifest.submodules.clone(),
                hooks: manifest
                    .hooks
                    .iter()
                    .map(|(k, h)| {
                        (
                            k.as_str().to_owned(),
                            HookInfo {
                                path: h.path.clone(),
                                timeout_ms: u64::try_from(h.timeout.as_millis())
                                    .unwrap_or(u64::MAX),
                            },
                        )
                    })
                    .collect(),
                services: manifest
                    .services
                    .iter()
                    .map(|(name, spec)| {
                        let spec = with_module_defaults(spec, dir);
                        ServiceFile {
                            name: name.clone(),
                            extension: spec.file_extension().to_owned(),
                            text: spec.to_file_text(),
                        }
                    })
                    .collect(),
                has_config_schema: manifest.config_schema.is_some(),
            }
        }
    }

    /// A service of a module runs in the module's directory unless it says otherwise, and
    /// learns where its module and configuration are.
    fn with_module_defaults(spec: &ServiceSpec, dir: &Path) -> ServiceSpec {
        let dir_s = dir.display().to_string();
        let config = dir.join(CONFIG_FILE).display().to_string();
        match spec {
            ServiceSpec::Toml(t) => {
                let mut t = t.clone();
                if !t.contains_key("working_dir") && !t.contains_key("cwd") {
                    t.insert("working_dir".into(), toml::Value::String(dir_s.clone()));
                }
                let env = t
                    .entry("env")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(env) = env {
                    env.entry("REEVE_MODULE_DIR")
                        .or_insert(toml::Value::String(dir_s));
                    env.entry("REEVE_CONFIG")
                        .or_insert(toml::Value::String(config));
                }
                ServiceSpec::Toml(t)
            }
            ServiceSpec::Json(m) => {
                let mut m = m.clone();
                if !m.contains_key("working_dir") && !m.contains_key("cwd") {
                    m.insert("working_dir".into(), Value::String(dir_s.clone()));
                }
                let env = m.entry("env").or_insert_with(|| json!({}));
                if let Value::Object(env) = env {
                    env.entry("REEVE_MODULE_DIR")
                        .or_insert(Value::String(dir_s));
                    env.entry("REEVE_CONFIG").or_insert(Value::String(config));
                }
                ServiceSpec::Json(m)
            }
        }
    }
}
