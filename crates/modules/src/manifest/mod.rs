//! The module manifest: `module.toml` (or Outpost's `module.json`) at the root of a package.
//!
//! ```toml
//! name = "my-server"
//! version = "1.0.0"
//! description = "Serves a cool message"
//! platform = "any"                   # or "linux-x86_64", "linux-aarch64", …
//! submodules = ["base@1.2.0"]        # or [{ name = "base", version = "1.2.0" }]
//! hook_timeout = "2m"                # default time limit of every hook (default 2m)
//!
//! [hooks]                            # executables inside the module, all optional
//! install = "hooks/install"
//! configure = { path = "hooks/configure", timeout = "30s" }
//! # start, stop, uninstall
//!
//! [services.server]                  # declared like the agent's service files
//! command = ["python3", "serve.py"]
//!
//! [[templates]]                      # rendered with the configuration at `configure`
//! source = "templates/server.json.j2"
//! target = "etc/server.json"
//!
//! [config_schema]                    # a JSON Schema, or a path: config_schema = "schema.json"
//! type = "object"
//! properties.port = { type = "integer", default = 8080 }
//! ```
//!
//! `module.json` takes the same fields, plus Outpost's names: `scripts` for `hooks`, and
//! `schema` in Outpost's form (`{"configure": {"port": {"type": "integer", "required":
//! true}}}`), which becomes an object schema whose `required` lists the fields marked so.
//!
//! Reading is two-phase: serde parses the raw form (unknown fields are refused), then
//! [`check`](check) turns it into a [`Manifest`], reporting every problem at once as
//! [`ManifestError`]s (file, field, reason). Paths (hooks, templates, schema file) must be
//! relative, without `..`; when the module directory is known, hook files must exist and be
//! executable, template sources must exist and the schema file is read.

mod check;
mod raw;
mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use semver::Version;

use crate::identity::{ModuleRef, PackageIdentity, Platform};

pub(crate) use raw::RawIdentity;

/// The manifest file name reeve writes and prefers.
pub const MANIFEST_TOML: &str = "module.toml";
/// Outpost's manifest file name, also accepted.
pub const MANIFEST_JSON: &str = "module.json";
/// The time limit of a hook that names none, when the manifest sets no `hook_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// One problem found in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", .file.display(), if .field.is_empty() { String::new() } else { format!("{}: ", .field) }, .reason)]
pub struct ManifestError {
    /// The manifest file (or the module directory when no manifest was found).
    pub file: PathBuf,
    /// Dotted path of the field (`hooks.start`, `templates[0].target`), or `""` for the file.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Every problem found in a manifest, at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid module manifest: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ManifestErrors(pub Vec<ManifestError>);

/// Which format a manifest was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `module.toml`.
    Toml,
    /// `module.json` (Outpost's fields accepted).
    Json,
}

/// A lifecycle hook's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookKind {
    /// After unpacking (and submodules).
    Install,
    /// After the config is validated and the templates rendered.
    Configure,
    /// Before the declared services go to the supervisor.
    Start,
    /// After the declared services are stopped.
    Stop,
    /// Before the module directory is removed.
    Uninstall,
}

impl HookKind {
    /// Every hook kind, in lifecycle order.
    pub const ALL: [HookKind; 5] = [
        HookKind::Install,
        HookKind::Configure,
        HookKind::Start,
        HookKind::Stop,
        HookKind::Uninstall,
    ];

    /// The hook's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Install => "install",
            HookKind::Configure => "configure",
            HookKind::Start => "start",
            HookKind::Stop => "stop",
            HookKind::Uninstall => "uninstall",
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle hook: an executable inside the module and its time limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Path relative to the module directory (normal components only).
    pub path: PathBuf,
    /// How long it may run before it is killed and counted as failed.
    pub timeout: Duration,
}

/// A config template rendered at `configure` (see [`crate::template`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The template, relative to the module directory.
    pub source: PathBuf,
    /// The rendered file, relative to the module directory.
    pub target: PathBuf,
}

/// A declared service, kept as written; the agent checks it with its service-file rules
/// (reeve-config). The manifest only checks that it is a table.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceSpec {
    /// From `module.toml`.
    Toml(toml::Table),
    /// From `module.json`.
    Json(serde_json::Map<String, serde_json::Value>),
}

impl ServiceSpec {
    /// The extension a service file with this content would have: `toml` or `json`.
    pub fn file_extension(&self) -> &'static str {
        match self {
            ServiceSpec::Toml(_) => "toml",
            ServiceSpec::Json(_) => "json",
        }
    }

    /// The content as a service file's text, for the agent's service-file parser.
    pub fn to_file_text(&self) -> String {
        match self {
            ServiceSpec::Toml(t) => t.to_string(),
            ServiceSpec::Json(m) => serde_json::Value::Object(m.clone()).to_string(),
        }
    }
}

/// A checked module manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Module name (see [`crate::identity::check_name`]).
    pub name: String,
    /// Module version (semver, no build metadata).
    pub version: Version,
    /// One line for people.
    pub description: Option<String>,
    /// What the package is built for (default `any`).
    pub platform: Platform,
    /// Modules installed with this one, before it.
    pub submodules: Vec<ModuleRef>,
    /// The hooks the module has.
    pub hooks: BTreeMap<HookKind, Hook>,
    /// Declared services by name (unique within the module; the agent names them
    /// `module/service`).
    pub services: BTreeMap<String, ServiceSpec>,
    /// Config templates.
    pub templates: Vec<Template>,
    /// The JSON Schema of the configuration, already compiled once (so it is valid and has
    /// no remote `$ref`). `None`: any JSON object is accepted.
    pub config_schema: Option<serde_json::Value>,
    /// The format it was read from.
    pub format: ManifestFormat,
}

impl Manifest {
    /// Reads and checks the manifest of the module in `dir` (`module.toml`, or `module.json`;
    /// both present is an error), including the files it names.
    pub fn load(dir: &Path) -> Result<Self, ManifestErrors> {
        let toml_path = dir.join(MANIFEST_TOML);
        let json_path = dir.join(MANIFEST_JSON);
        let (path, format) = match (toml_path.is_file(), json_path.is_file()) {
            (true, false) => (toml_path, ManifestFormat::Toml),
            (false, true) => (json_path, ManifestFormat::Json),
            (both, _) => {
                let reason = if both {
                    format!("both {MANIFEST_TOML} and {MANIFEST_JSON}: keep one")
                } else {
                    format!("no {MANIFEST_TOML} (or {MANIFEST_JSON}) at the module's root")
                };
                return Err(ManifestErrors(vec![ManifestError {
                    file: dir.to_path_buf(),
                    field: String::new(),
                    reason,
                }]));
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ManifestErrors(vec![ManifestError {
                file: path.clone(),
                field: String::new(),
                reason: format!("cannot read: {e}"),
            }])
        })?;
        check::parse(&path, &text, format, Some(dir))
    }

    /// Parses and checks manifest text without a module directory: paths are checked
    /// lexically only, and a schema given as a file path is an error. `file` names the
    /// manifest in error messages.
    pub fn parse(file: &Path, text: &str, format: ManifestFormat) -> Result<Self, ManifestErrors> {
        check::parse(file, text, format, None)
    }

    /// The package this manifest describes.
    pub fn identity(&self) -> PackageIdentity {
        PackageIdentity {
            name: self.name.clone(),
            version: self.version.clone(),
            platform: self.platform.clone(),
        }
    }

    /// Checks a configuration against the module's schema, after filling in the schema's
    /// `default`s (recursively through `properties`, `items` and `allOf`; defaults behind a
    /// `$ref` are not applied). `null` counts as `{}`. Returns the configuration with the
    /// defaults, or every violation as `"/json/pointer: message"`.
    pub fn validate_config(
        &self,
        config: &serde_json::Value,
    ) -> Result<serde_json::Value, Vec<String>> {
        schema::validate(self.config_schema.as_ref(), config)
    }
}

/// `path` as a clean relative path (`./` dropped), or `None` when it is absolute, empty or
/// has `..`.
pub(crate) fn check_clean(path: &Path) -> Option<PathBuf> {
    check::clean_relative(path).ok()
}

/// Reads just the name, version and platform from manifest text (no other check): what
/// signing needs from an archive.
pub(crate) fn read_identity(text: &str, format: ManifestFormat) -> Result<PackageIdentity, String> {
    let raw: RawIdentity = match format {
        ManifestFormat::Toml => toml::from_str(text).map_err(|e| e.to_string())?,
        ManifestFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string())?,
    };
    crate::identity::check_name(&raw.name).map_err(|r| format!("name: {r}"))?;
    let version = Version::parse(&raw.version).map_err(|e| format!("version: {e}"))?;
    let platform = match raw.platform {
        Some(p) => p.parse()?,
        None => Platform::Any,
    };
    Ok(PackageIdentity {
        name: raw.name,
        version,
        platform,
    })
}

#[cfg(test)]
mod tests;
