//! Service definitions: the validated types, and [`parse_service`] which builds them from a
//! file's text in two phases (raw serde types, then checks that report every problem).

mod accounts;
mod check;
mod health;
mod raw;
mod sections;
mod syntax;

use crate::error::ConfigError;
use reeve_proto::api::Desired;
use reeve_proto::buddy::{BuddySpec, LogSpec, RestartSpec, Rlimit, StopSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checked service definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDef {
    /// The service's name: the file stem (`web`), or `module/service`.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// One line saying what the service is.
    pub description: Option<String>,
    /// Program and arguments (a string `command` becomes `["/bin/sh", "-c", command]`).
    pub argv: Vec<String>,
    /// Working directory (absolute).
    pub cwd: Option<PathBuf>,
    /// Environment set for the service (on top of the agent's when `inherit_env`).
    pub env: BTreeMap<String, String>,
    /// Whether the service starts from the agent's environment (default true).
    pub inherit_env: bool,
    /// Run as this uid.
    pub uid: Option<u32>,
    /// Run with this gid (the user's primary group when only a user is given).
    pub gid: Option<u32>,
    /// Names this service provides to others' `requires` (besides its own name).
    pub provides: Vec<String>,
    /// Names that must be provided by started services before this one starts.
    pub requires: Vec<String>,
    /// Among services free to start, lower priorities start first.
    pub priority: i32,
    /// Desired state when the service is first seen.
    pub initial_state: Desired,
    /// Restart and back-off policy.
    pub restart: RestartSpec,
    /// How the service is stopped.
    pub stop: StopSpec,
    /// How the service reloads its configuration, if it can.
    pub reload: Option<ActionDef>,
    /// Named custom actions.
    pub actions: BTreeMap<String, ActionDef>,
    /// Health check, if any.
    pub health: Option<HealthCheck>,
    /// Output capture.
    pub log: LogConfig,
    /// Resource limits applied before exec.
    pub rlimits: Vec<Rlimit>,
}

/// What a reload or custom action does.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionDef {
    /// Send this signal to the service's process group.
    Signal(i32),
    /// Run this command (program and arguments).
    Command(Vec<String>),
}

/// A periodic health check run by the agent.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// What is checked.
    pub kind: HealthKind,
    /// Time between checks (default 10s).
    pub interval: Duration,
    /// Time a check may take (default 5s, at most `interval`).
    pub timeout: Duration,
    /// Failures in a row before the service counts as unhealthy (default 3, at least 1).
    pub threshold: u32,
    /// What an unhealthy service gets (default restart).
    pub on_failure: OnFailure,
    /// Failures during this time after a start do not count (default 0).
    pub start_period: Duration,
}

/// The kinds of health check.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthKind {
    /// Run a command; exit code 0 is healthy.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// HTTP GET; a 2xx (or `expect_status`) answer is healthy.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// The exact status expected, if not any 2xx.
        expect_status: Option<u16>,
    },
    /// A TCP connect succeeds.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A file was modified recently (a heartbeat file).
    FileModifiedWithin {
        /// Absolute path of the file.
        path: PathBuf,
        /// Maximum age of its modification time.
        within: Duration,
    },
    /// The service has run for less than this (past it, it "fails" and is restarted).
    MaxUptime {
        /// Maximum uptime.
        max: Duration,
    },
}

/// What happens when a health check fails `threshold` times in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Restart the service.
    Restart,
    /// Only mark it unhealthy.
    Mark,
}

/// Output capture settings (the directory is the agent's choice).
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Rotate at this size in bytes (default 10 MiB, at least 4096).
    pub max_size: u64,
    /// Rotated files kept (default 5, at most 100).
    pub keep: u32,
    /// Shell command that also receives the output, if set.
    pub pipe: Option<String>,
    /// Whether output is written to the log files (default true).
    pub to_file: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_size: 10 << 20,
            keep: 5,
            pipe: None,
            to_file: true,
        }
    }
}

/// Parses and checks one service definition. `text` is TOML unless `file` ends in `.json`.
/// Every problem found is returned, each with the file and the field. Reads `/etc/passwd` and
/// `/etc/group` when a user or group is named; writes nothing.
pub fn parse_service(name: &str, file: &Path, text: &str) -> Result<ServiceDef, Vec<ConfigError>> {
    let (raw, keys) = syntax::read(file, text).map_err(|e| vec![e])?;
    let needs_accounts = raw.user.is_some() || raw.group.is_some();
    let accounts = if needs_accounts {
        accounts::Accounts::system()
    } else {
        accounts::Accounts::default()
    };
    check::service(name, file, raw, &keys, &accounts)
}

/// Checks a service name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, not starting with `.`
/// or `-`; a module service has two such parts joined by one `/` (`module/service`).
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    if parts.next().is_some() {
        return Err(format!(
            "invalid name `{name}`: at most one `/` (module/service)"
        ));
    }
    validate_part(first).map_err(|e| format!("invalid name `{name}`: {e}"))?;
    if let Some(s) = second {
        validate_part(s).map_err(|e| format!("invalid name `{name}`: {e}"))?;
    }
    Ok(())
}

/// Checks one part of a name (no `/`); also used for action names.
pub(crate) fn validate_part(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("must not be empty".into());
    }
    if part.len() > 64 {
        return Err("longer than 64 characters".into());
    }
    if part.starts_with('.') || part.starts_with('-') {
        return Err("must not start with `.` or `-`".into());
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "character {c:?} not allowed (use A-Z a-z 0-9 _ . -)"
        ));
    }
    Ok(())
}

impl ServiceDef {
    /// Compiles the definition into what the buddy runs. `log_dir` is this service's own log
    /// directory (used as is); `base_env` is the agent's environment, the starting point when
    /// `inherit_env` is set, overlaid with `env`. The environment comes out sorted by name.
    pub fn buddy_spec(&self, log_dir: &Path, base_env: &[(String, String)]) -> BuddySpec {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if self.inherit_env {
            env.extend(base_env.iter().cloned());
        }
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        BuddySpec {
            service: self.name.clone(),
            argv: self.argv.clone(),
            env: env.into_iter().collect(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.gid,
            rlimits: self.rlimits.clone(),
            restart: self.restart.clone(),
            stop: self.stop.clone(),
            log: LogSpec {
                dir: log_dir.to_path_buf(),
                max_size: self.log.max_size,
                keep: self.log.keep,
                pipe: self.log.pipe.clone(),
                to_file: self.log.to_file,
            },
        }
    }
}

#[cfg(test)]
mod tests;
