//! Phase two, top level: turns a [`RawService`] into a [`ServiceDef`], collecting every
//! problem instead of stopping at the first.

use super::accounts::Accounts;
use super::raw::{Keys, RawService};
use super::{ActionDef, ServiceDef, health, sections, validate_name, validate_part};
use crate::error::{ConfigError, Issues};
use reeve_proto::api::Desired;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Checks everything; `Err` carries every problem found.
pub(crate) fn service(
    name: &str,
    file: &Path,
    raw: RawService,
    keys: &Keys,
    accounts: &Accounts,
) -> Result<ServiceDef, Vec<ConfigError>> {
    let mut is = Issues::new(file);
    if let Err(e) = validate_name(name) {
        is.add("", e);
    }
    let argv = command(&mut is, &raw, keys);
    let cwd = raw.working_dir.as_deref().and_then(|d| {
        let field = keys.written("working_dir");
        let p = PathBuf::from(d);
        if d.contains('\0') {
            is.add(field, "must not contain NUL");
            None
        } else if p.is_absolute() {
            Some(p)
        } else {
            is.add(field, format!("`{d}` is not an absolute path"));
            None
        }
    });
    let env = raw.env.clone().unwrap_or_default();
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            is.add(
                format!("env.{k}"),
                "variable names must be non-empty, without `=` or NUL",
            );
        }
        if v.contains('\0') {
            is.add(format!("env.{k}"), "value must not contain NUL");
        }
    }
    let (uid, gid, errs) = accounts.resolve(
        raw.user.as_ref(),
        raw.group.as_ref(),
        &keys.written("user"),
        &keys.written("group"),
    );
    for (f, r) in errs {
        is.add(f, r);
    }
    let provides = names(&mut is, &keys.written("provides"), raw.provides.as_deref());
    let requires = names(&mut is, &keys.written("requires"), raw.requires.as_deref());
    let priority = raw.priority.map_or(0, |p| {
        i32::try_from(p).unwrap_or_else(|_| {
            is.add(keys.written("priority"), format!("{p} is out of range"));
            0
        })
    });
    let initial_state = match raw.initial_state.as_deref().map(str::to_ascii_lowercase) {
        None => Desired::Running,
        Some(s) if s == "running" => Desired::Running,
        Some(s) if s == "stopped" => Desired::Stopped,
        Some(s) => {
            is.add(
                keys.written("initial_state"),
                format!("`{s}` is not a state (expected \"running\" or \"stopped\")"),
            );
            Desired::Running
        }
    };
    let restart = sections::restart(&mut is, &raw);
    let stop = sections::stop(&mut is, &raw);
    let reload = raw
        .reload
        .as_ref()
        .and_then(|a| sections::action(&mut is, "reload", a));
    let actions = actions(&mut is, &raw);
    let health = raw.health.as_ref().and_then(|h| health::check(&mut is, h));
    let log = sections::log(&mut is, raw.log.as_ref());
    let rlimits = sections::limits(&mut is, raw.limits.as_ref());

    if !is.errors.is_empty() {
        return Err(is.errors);
    }
    Ok(ServiceDef {
        name: name.to_owned(),
        file: file.to_path_buf(),
        description: raw.description,
        argv,
        cwd,
        env,
        inherit_env: raw.inherit_env.unwrap_or(true),
        uid,
        gid,
        provides,
        requires,
        priority,
        initial_state,
        restart,
        stop,
        reload,
        actions,
        health,
        log,
        rlimits,
    })
}

fn command(is: &mut Issues, raw: &RawService, keys: &Keys) -> Vec<String> {
    let field = keys.written("command");
    let Some(c) = &raw.command else {
        is.add(field, "required: the program to run");
        return Vec::new();
    };
    let mut argv = sections::argv(is, &field, c).unwrap_or_default();
    if let Some(args) = &raw.args {
        if matches!(c, super::raw::Command::Shell(_)) {
            is.add("args", format!("only allowed when `{field}` is an array"));
        } else if args.iter().any(|a| a.contains('\0')) {
            is.add("args", "must not contain NUL");
        } else {
            argv.extend(args.iter().cloned());
        }
    }
    argv
}

fn names(is: &mut Issues, field: &str, list: Option<&[String]>) -> Vec<String> {
    let list = list.unwrap_or_default();
    for n in list {
        if let Err(e) = validate_name(n) {
            is.add(field, e);
        }
    }
    list.to_vec()
}

fn actions(is: &mut Issues, raw: &RawService) -> BTreeMap<String, ActionDef> {
    let mut out = BTreeMap::new();
    for (name, a) in raw.actions.iter().flatten() {
        let field = format!("actions.{name}");
        if let Err(e) = validate_part(name) {
            is.add(&field, format!("invalid action name: {e}"));
        }
        if let Some(def) = sections::action(is, &field, a) {
            out.insert(name.clone(), def);
        }
    }
    for (name, script) in raw.upk_custom_actions.iter().flatten() {
        let field = format!("CustomActions.{name}");
        if let Err(e) = validate_part(name) {
            is.add(&field, format!("invalid action name: {e}"));
        }
        if out.contains_key(name) {
            is.add(
                &field,
                format!("action `{name}` is also defined in [actions]"),
            );
        } else if script.trim().is_empty() {
            is.add(&field, "script must not be empty");
        } else if script.contains('\0') {
            is.add(&field, "script must not contain NUL");
        } else {
            out.insert(
                name.clone(),
                ActionDef::Command(vec!["/bin/sh".into(), "-c".into(), script.clone()]),
            );
        }
    }
    out
}
