//! Raw manifest → [`Manifest`]: every check, every problem reported at once, no side effects.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use semver::Version;
use serde::de::DeserializeOwned;

use super::raw::{RawHook, RawManifest, RawSubmodule, RawTemplate};
use super::{
    DEFAULT_HOOK_TIMEOUT, Hook, HookKind, Manifest, ManifestError, ManifestErrors, ManifestFormat,
    ServiceSpec, Template,
};
use crate::identity::{ModuleRef, Platform, check_name, check_version};

/// Collects the problems of one manifest.
struct Issues<'a> {
    file: &'a Path,
    errors: Vec<ManifestError>,
}

impl Issues<'_> {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ManifestError {
            file: self.file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        });
    }
}

/// A free-form manifest value: what both TOML and JSON values can do for the checks.
trait FreeValue: DeserializeOwned + serde::Serialize {
    fn into_service(self) -> Option<ServiceSpec>;
    fn as_path(&self) -> Option<&str>;
}

impl FreeValue for toml::Value {
    fn into_service(self) -> Option<ServiceSpec> {
        match self {
            toml::Value::Table(t) => Some(ServiceSpec::Toml(t)),
            _ => None,
        }
    }
    fn as_path(&self) -> Option<&str> {
        self.as_str()
    }
}

impl FreeValue for serde_json::Value {
    fn into_service(self) -> Option<ServiceSpec> {
        match self {
            serde_json::Value::Object(m) => Some(ServiceSpec::Json(m)),
            _ => None,
        }
    }
    fn as_path(&self) -> Option<&str> {
        self.as_str()
    }
}

/// Parses `text` (the manifest `file`) and checks it; `dir` is the module directory when
/// known.
pub(super) fn parse(
    file: &Path,
    text: &str,
    format: ManifestFormat,
    dir: Option<&Path>,
) -> Result<Manifest, ManifestErrors> {
    let one = |reason: String| {
        ManifestErrors(vec![ManifestError {
            file: file.to_path_buf(),
            field: String::new(),
            reason,
        }])
    };
    match format {
        ManifestFormat::Toml => {
            let raw: RawManifest<toml::Value> =
                toml::from_str(text).map_err(|e| one(e.to_string()))?;
            check(raw, file, format, dir)
        }
        ManifestFormat::Json => {
            let raw: RawManifest<serde_json::Value> =
                serde_json::from_str(text).map_err(|e| one(e.to_string()))?;
            check(raw, file, format, dir)
        }
    }
}

fn check<V: FreeValue>(
    raw: RawManifest<V>,
    file: &Path,
    format: ManifestFormat,
    dir: Option<&Path>,
) -> Result<Manifest, ManifestErrors> {
    let mut issues = Issues {
        file,
        errors: Vec::new(),
    };
    let name = match raw.name {
        None => {
            issues.add("name", "missing");
            String::new()
        }
        Some(n) => {
            if let Err(r) = check_name(&n) {
                issues.add("name", r);
            }
            n
        }
    };
    let version = match raw.version.as_deref().map(Version::parse) {
        None => {
            issues.add("version", "missing");
            Version::new(0, 0, 0)
        }
        Some(Err(e)) => {
            issues.add("version", format!("not a semver version: {e}"));
            Version::new(0, 0, 0)
        }
        Some(Ok(v)) => {
            if let Err(r) = check_version(&v) {
                issues.add("version", r);
            }
            v
        }
    };
    let platform = match raw.platform.as_deref().map(str::parse::<Platform>) {
        None => Platform::Any,
        Some(Ok(p)) => p,
        Some(Err(r)) => {
            issues.add("platform", r);
            Platform::Any
        }
    };
    let submodules = check_submodules(raw.submodules, &name, &mut issues);
    let default_timeout = match raw.hook_timeout {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(t) => duration(&t, "hook_timeout", &mut issues).unwrap_or(DEFAULT_HOOK_TIMEOUT),
    };
    let hooks = check_hooks(raw.hooks, default_timeout, dir, &mut issues);
    let mut services = BTreeMap::new();
    for (sname, value) in raw.services {
        let field = format!("services.{sname}");
        if let Err(r) = check_name(&sname) {
            issues.add(&field, format!("service name {r}"));
        }
        match value.into_service() {
            Some(s) => {
                services.insert(sname, s);
            }
            None => issues.add(&field, "must be a table"),
        }
    }
    let templates = check_templates(raw.templates, dir, &mut issues);
    let config_schema = check_schema(raw.config_schema, raw.schema, format, dir, &mut issues);
    if issues.errors.is_empty() {
        Ok(Manifest {
            name,
            version,
            description: raw.description,
            platform,
            submodules,
            hooks,
            services,
            templates,
            config_schema,
            format,
        })
    } else {
        Err(ManifestErrors(issues.errors))
    }
}

fn duration(text: &str, field: &str, issues: &mut Issues<'_>) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if d > Duration::ZERO => Some(d),
        Ok(_) => {
            issues.add(field, "must be more than 0");
            None
        }
        Err(e) => {
            issues.add(
                field,
                format!("{text:?} is not a duration like \"30s\": {e}"),
            );
            None
        }
    }
}

fn check_submodules(raw: Vec<RawSubmodule>, own: &str, issues: &mut Issues<'_>) -> Vec<ModuleRef> {
    let mut out: Vec<ModuleRef> = Vec::new();
    for (i, sub) in raw.into_iter().enumerate() {
        let field = format!("submodules[{i}]");
        let text = match sub {
            RawSubmodule::Text(t) => t,
            RawSubmodule::Table { name, version } => format!("{name}@{version}"),
        };
        match text.parse::<ModuleRef>() {
            Ok(r) if r.name == own => issues.add(field, "a module cannot be its own submodule"),
            Ok(r) if out.iter().any(|o| o.name == r.name) => {
                issues.add(field, format!("{} is listed twice", r.name));
            }
            Ok(r) => out.push(r),
            Err(reason) => issues.add(field, reason),
        }
    }
    out
}

fn check_hooks(
    raw: BTreeMap<String, RawHook>,
    default_timeout: Duration,
    dir: Option<&Path>,
    issues: &mut Issues<'_>,
) -> BTreeMap<HookKind, Hook> {
    let mut hooks = BTreeMap::new();
    for (key, hook) in raw {
        let field = format!("hooks.{key}");
        let Some(kind) = HookKind::ALL.into_iter().find(|k| k.as_str() == key) else {
            issues.add(
                field,
                "unknown hook; known: install, configure, start, stop, uninstall",
            );
            continue;
        };
        let (path, timeout) = match hook {
            RawHook::Path(p) => (p, None),
            RawHook::Full { path, timeout } => (path, timeout),
        };
        let timeout = match timeout {
            None => default_timeout,
            Some(t) => duration(&t, &format!("{field}.timeout"), issues).unwrap_or(default_timeout),
        };
        let Some(path) = relative_path(&path, &field, issues) else {
            continue;
        };
        if let Some(dir) = dir {
            check_executable(&dir.join(&path), &field, issues);
        }
        hooks.insert(kind, Hook { path, timeout });
    }
    hooks
}

fn check_executable(path: &Path, field: &str, issues: &mut Issues<'_>) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => issues.add(field, format!("{} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            issues.add(field, format!("{} is not executable", path.display()));
        }
        Ok(_) => {}
        Err(e) => issues.add(field, format!("{}: {e}", path.display())),
    }
}

fn check_templates(
    raw: Vec<RawTemplate>,
    dir: Option<&Path>,
    issues: &mut Issues<'_>,
) -> Vec<Template> {
    let mut out: Vec<Template> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let field = format!("templates[{i}]");
        let source = relative_path(&t.source, &format!("{field}.source"), issues);
        let target = relative_path(&t.target, &format!("{field}.target"), issues);
        if let (Some(dir), Some(source)) = (dir, &source)
            && !dir.join(source).is_file()
        {
            issues.add(
                format!("{field}.source"),
                format!("{} is not a file in the module", source.display()),
            );
        }
        if let (Some(source), Some(target)) = (source, target) {
            if out.iter().any(|o| o.target == target) {
                issues.add(
                    format!("{field}.target"),
                    format!("{} is the target of another template", target.display()),
                );
            }
            out.push(Template { source, target });
        }
    }
    out
}

fn check_schema<V: FreeValue>(
    reeve: Option<V>,
    outpost: Option<serde_json::Value>,
    format: ManifestFormat,
    dir: Option<&Path>,
    issues: &mut Issues<'_>,
) -> Option<serde_json::Value> {
    let (field, schema) = match (reeve, outpost) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            issues.add("schema", "give config_schema or Outpost's schema, not both");
            return None;
        }
        (None, Some(outpost)) => ("schema", super::schema::from_outpost(&outpost)),
        (Some(v), None) => ("config_schema", schema_value(v, format, dir)),
    };
    let schema = match schema {
        Ok(s) => s,
        Err(reason) => {
            issues.add(field, reason);
            return None;
        }
    };
    if let Err(reason) = super::schema::compile(&schema) {
        issues.add(field, reason);
        return None;
    }
    Some(schema)
}

fn schema_value<V: FreeValue>(
    v: V,
    format: ManifestFormat,
    dir: Option<&Path>,
) -> Result<serde_json::Value, String> {
    let Some(path) = v.as_path() else {
        let what = match format {
            ManifestFormat::Toml => "TOML",
            ManifestFormat::Json => "JSON",
        };
        return serde_json::to_value(&v)
            .map_err(|e| format!("this {what} value cannot be a JSON Schema: {e}"));
    };
    let mut scratch = Issues {
        file: Path::new(""),
        errors: Vec::new(),
    };
    let rel = relative_path(path, "", &mut scratch).ok_or_else(|| {
        scratch
            .errors
            .iter()
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let dir = dir.ok_or("a schema file can only be read from a module directory")?;
    let text =
        std::fs::read_to_string(dir.join(&rel)).map_err(|e| format!("{}: {e}", rel.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", rel.display()))
}

/// Checks that `text` is a relative path of normal components (a leading `./` is dropped)
/// and returns it.
fn relative_path(text: &str, field: &str, issues: &mut Issues<'_>) -> Option<PathBuf> {
    match clean_relative(Path::new(text)) {
        Ok(p) => Some(p),
        Err(reason) => {
            issues.add(field, format!("{text:?}: {reason}"));
            None
        }
    }
}

/// A path relative to a module directory, of normal components only (`.` dropped): no
/// absolute paths, no `..`, not empty.
pub(crate) fn clean_relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("must not contain '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("must be relative"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("must not be empty");
    }
    Ok(out)
}
