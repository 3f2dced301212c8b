//! The manifest as written: serde types for `module.toml` and Outpost's `module.json`, before
//! any check. Unknown fields are refused; everything else is checked in `check.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A manifest as parsed, generic over the value type of its free-form parts (services and
/// the inline config schema): `toml::Value` for `module.toml`, `serde_json::Value` for
/// `module.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest<V> {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub platform: Option<String>,
    #[serde(default)]
    pub submodules: Vec<RawSubmodule>,
    /// Outpost calls the hooks `scripts`.
    #[serde(default, alias = "scripts")]
    pub hooks: BTreeMap<String, RawHook>,
    pub hook_timeout: Option<String>,
    #[serde(default = "BTreeMap::new")]
    pub services: BTreeMap<String, V>,
    #[serde(default)]
    pub templates: Vec<RawTemplate>,
    /// A JSON Schema (inline table) or the path of a JSON file in the module holding one.
    pub config_schema: Option<V>,
    /// Outpost's `schema`: `{"configure": {"field": {"type": …, "required": true}}}`.
    pub schema: Option<serde_json::Value>,
}

/// A submodule: `"name@version"` or `{ name, version }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSubmodule {
    Text(String),
    Table { name: String, version: String },
}

/// A hook: a path, or a path with its own time limit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawHook {
    Path(String),
    Full {
        path: String,
        timeout: Option<String>,
    },
}

/// A config template: `{ source = "templates/app.conf.j2", target = "etc/app.conf" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    pub source: String,
    pub target: String,
}

/// Just what names a package, read without checking the rest (to sign an archive).
#[derive(Debug, Deserialize)]
pub(crate) struct RawIdentity {
    pub name: String,
    pub version: String,
    pub platform: Option<String>,
}
