//! Loading a directory of service files: parse each, drop what cannot start, order the rest.

use crate::error::ConfigError;
use crate::order::{OrderError, plan};
use crate::service::{ServiceDef, parse_service};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What [`load_services_dir`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// The services that can run, in start order.
    pub services: Vec<ServiceDef>,
    /// Every problem, in file order, then ordering problems.
    pub errors: Vec<ConfigError>,
}

/// Reads every `*.toml` and `*.json` file in `dir` (not recursively, sorted by file name;
/// other files are ignored). Each file defines the service named by its stem. Files with
/// errors are left out; so are services whose `requires` nothing valid provides and services
/// on a dependency cycle. The rest come back in start order. Never writes anything.
pub fn load_services_dir(dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(ConfigError::new(
                dir,
                "",
                format!("cannot read the services directory: {e}"),
            ));
            return report;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml" || x == "json") && p.is_file())
        .collect();
    files.sort();

    let mut parsed: Vec<ServiceDef> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for file in &files {
        match load_file(file) {
            Ok(def) => parsed.push(def),
            Err((name, errors)) => {
                failed.extend(name);
                report.errors.extend(errors);
            }
        }
    }
    let parsed = drop_duplicates(parsed, &mut report.errors);

    let plan = plan(&parsed);
    for (i, e) in &plan.dropped {
        let Some(s) = parsed.get(*i) else { continue };
        let reason = match e {
            OrderError::Cycle(_) => e.to_string(),
            OrderError::Missing { requires, .. } => {
                let provided = parsed
                    .iter()
                    .any(|p| &p.name == requires || p.provides.contains(requires));
                if provided {
                    format!("`{requires}` is provided only by services that cannot start")
                } else if failed.contains(requires) {
                    format!("`{requires}` is not available: its file has errors")
                } else {
                    format!("no service provides `{requires}`")
                }
            }
        };
        report
            .errors
            .push(ConfigError::new(&s.file, "requires", reason));
    }
    report.services = plan
        .order
        .iter()
        .filter_map(|&i| parsed.get(i).cloned())
        .collect();
    report
}

/// One file; on failure, the service name (if the file had one) and its errors.
fn load_file(file: &Path) -> Result<ServiceDef, (Option<String>, Vec<ConfigError>)> {
    let Some(name) = file.file_stem().and_then(|s| s.to_str()) else {
        return Err((
            None,
            vec![ConfigError::new(file, "", "file name is not UTF-8")],
        ));
    };
    let fail = |reason: String| {
        (
            Some(name.to_owned()),
            vec![ConfigError::new(file, "", reason)],
        )
    };
    let bytes = std::fs::read(file).map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("file is not UTF-8".to_owned()))?;
    parse_service(name, file, &text).map_err(|e| (Some(name.to_owned()), e))
}

/// Two files for one name (`web.toml` and `web.json`) are ambiguous: both are left out.
fn drop_duplicates(parsed: Vec<ServiceDef>, errors: &mut Vec<ConfigError>) -> Vec<ServiceDef> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for s in &parsed {
        files
            .entry(s.name.clone())
            .or_default()
            .push(s.file.clone());
    }
    parsed
        .into_iter()
        .filter(|s| {
            let same = files.get(&s.name).map_or(&[][..], Vec::as_slice);
            if same.len() < 2 {
                return true;
            }
            let others: Vec<String> = same
                .iter()
                .filter(|f| **f != s.file)
                .map(|f| f.display().to_string())
                .collect();
            errors.push(ConfigError::new(
                &s.file,
                "",
                format!(
                    "service `{}` is also defined by {}",
                    s.name,
                    others.join(", ")
                ),
            ));
            false
        })
        .collect()
}
