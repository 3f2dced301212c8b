//! Config templates: rendered at `configure` with the module's configuration (defaults
//! applied), by minijinja (Jinja2 syntax), confined to the module directory.
//!
//! The context holds every top-level field of the configuration (`{{ port }}`, as Outpost's
//! templates use them), and also `config` (the whole configuration) and `module` (`name`,
//! `version`). An undefined variable is an error, so a typo fails the configure instead of
//! rendering an empty string. Rendering is bounded (minijinja fuel). Files are read and
//! written through a `cap_std` handle on the module directory, so neither a template path
//! nor a symbolic link can reach outside it; each target is written beside and renamed into
//! place.

use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::manifest::Manifest;

/// Fuel for one template: enough for any config file, not for a runaway loop.
const FUEL: u64 = 1_000_000;

/// Why a template could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file could not be read or written inside the module directory.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path, relative to the module directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The template is invalid or failed to render.
    #[error("{}: {source}", .path.display())]
    Render {
        /// The template, relative to the module directory.
        path: PathBuf,
        /// minijinja's error.
        source: minijinja::Error,
    },
    /// The configuration is not a JSON object.
    #[error("the configuration must be a JSON object")]
    NotAnObject,
}

/// Renders every template of `manifest` in `module_dir` with `config` (already validated,
/// defaults applied). Returns the targets written, relative to the module directory.
pub fn render_templates(
    module_dir: &Path,
    manifest: &Manifest,
    config: &Value,
) -> Result<Vec<PathBuf>, TemplateError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { path, source }
    };
    let Value::Object(fields) = config else {
        return Err(TemplateError::NotAnObject);
    };
    let mut ctx: Map<String, Value> = fields.clone();
    ctx.insert("config".into(), config.clone());
    ctx.insert(
        "module".into(),
        serde_json::json!({"name": manifest.name, "version": manifest.version.to_string()}),
    );
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    let dir = Dir::open_ambient_dir(module_dir, ambient_authority()).map_err(io_at(module_dir))?;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    let mut written = Vec::new();
    for t in &manifest.templates {
        let source = dir.read_to_string(&t.source).map_err(io_at(&t.source))?;
        let text =
            env.render_str(&source, ctx.clone())
                .map_err(|source| TemplateError::Render {
                    path: t.source.clone(),
                    source,
                })?;
        if let Some(parent) = t.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            dir.create_dir_all(parent).map_err(io_at(parent))?;
        }
        let mut tmp = t.target.clone().into_os_string();
        tmp.push(".reeve-tmp");
        let tmp = PathBuf::from(tmp);
        dir.write(&tmp, text.as_bytes()).map_err(io_at(&tmp))?;
        dir.rename(&tmp, &dir, &t.target)
            .map_err(io_at(&t.target))?;
        written.push(t.target.clone());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;

    fn module(dir: &Path, template: &str) -> Manifest {
        fs::create_dir_all(dir.join("templates")).unwrap();
        fs::write(dir.join("templates/app.j2"), template).unwrap();
        fs::write(
            dir.join("module.toml"),
            "name = \"m\"\nversion = \"1.0.0\"\n[[templates]]\nsource = \"templates/app.j2\"\ntarget = \"etc/app.json\"\n",
        )
        .unwrap();
        Manifest::load(dir).unwrap()
    }

    #[test]
    fn renders_with_the_config() {
        let d = tempfile::tempdir().unwrap();
        let m = module(
            d.path(),
            "{\"port\": {{ port }}, \"all\": {{ config | tojson }}, \"m\": \"{{ module.name }}\"}",
        );
        let out = render_templates(d.path(), &m, &json!({"port": 8989})).unwrap();
        assert_eq!(out, [PathBuf::from("etc/app.json")]);
        let text = fs::read_to_string(d.path().join("etc/app.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"port": 8989, "all": {"port": 8989}, "m": "m"}));
    }

    #[test]
    fn undefined_variables_and_escapes_fail() {
        let d = tempfile::tempdir().unwrap();
        let m = module(d.path(), "{{ prot }}");
        assert!(matches!(
            render_templates(d.path(), &m, &json!({"port": 1})),
            Err(TemplateError::Render { .. })
        ));
        // A target directory that is a link out of the module.
        let m = module(d.path(), "x");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("etc")).unwrap();
        assert!(matches!(
            render_templates(d.path(), &m, &json!({})),
            Err(TemplateError::Io { .. })
        ));
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        let m = module(
            d.path(),
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        );
        fs::remove_file(d.path().join("etc")).unwrap();
        assert!(render_templates(d.path(), &m, &json!({})).is_err());
    }
}
