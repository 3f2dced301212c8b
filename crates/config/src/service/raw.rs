//! Phase one: the service file exactly as written, with serde and nothing else.
//!
//! Values people write in several shapes (durations, sizes, signals, limits, commands) are
//! kept loose here ([`Scalar`], [`Command`], [`Limit`]) and checked in phase two, so one
//! mistake does not hide the others.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// A whole service file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    #[serde(alias = "ShortDescription")]
    pub description: Option<String>,
    #[serde(alias = "ExecStart")]
    pub command: Option<Command>,
    pub args: Option<Vec<String>>,
    #[serde(alias = "cwd")]
    pub working_dir: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub inherit_env: Option<bool>,
    #[serde(alias = "SetUID")]
    pub user: Option<Scalar>,
    #[serde(alias = "SetGID")]
    pub group: Option<Scalar>,
    #[serde(alias = "Provides")]
    pub provides: Option<Vec<String>>,
    #[serde(alias = "Prerequisites")]
    pub requires: Option<Vec<String>>,
    #[serde(alias = "StartPriority")]
    pub priority: Option<i64>,
    #[serde(alias = "InitialState")]
    pub initial_state: Option<String>,
    pub restart: Option<RawRestart>,
    pub stop: Option<RawStop>,
    pub reload: Option<RawAction>,
    pub actions: Option<BTreeMap<String, RawAction>>,
    pub health: Option<RawHealth>,
    pub log: Option<RawLog>,
    pub limits: Option<BTreeMap<String, Limit>>,

    // Upkeeper's top-level fields that feed a section here.
    #[serde(rename = "KillTimeout")]
    pub upk_kill_timeout: Option<Scalar>,
    #[serde(rename = "MaxConsecutiveFailures")]
    pub upk_max_consecutive_failures: Option<i64>,
    #[serde(rename = "UserMaxRestarts")]
    pub upk_max_restarts: Option<i64>,
    #[serde(rename = "UserRestartWindow")]
    pub upk_restart_window: Option<Scalar>,
    #[serde(rename = "UserRateLimit")]
    pub upk_rate_limit: Option<Scalar>,
    #[serde(rename = "RandomizeRateLimit")]
    pub upk_randomize_rate_limit: Option<bool>,
    #[serde(rename = "CustomActions")]
    pub upk_custom_actions: Option<BTreeMap<String, String>>,
}

/// `[restart]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRestart {
    pub policy: Option<String>,
    pub backoff_initial: Option<Scalar>,
    pub backoff_max: Option<Scalar>,
    pub backoff_multiplier: Option<f64>,
    pub jitter: Option<f64>,
    pub reset_after: Option<Scalar>,
    pub max_restarts: Option<i64>,
    pub restart_window: Option<Scalar>,
    pub max_consecutive_failures: Option<i64>,
}

/// `[stop]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStop {
    pub signal: Option<Scalar>,
    pub kill_timeout: Option<Scalar>,
}

/// `[reload]` and `[actions.NAME]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    pub signal: Option<Scalar>,
    pub command: Option<Command>,
}

/// `[health]`; which fields apply depends on `kind`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub kind: Option<String>,
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub threshold: Option<i64>,
    pub on_failure: Option<String>,
    pub start_period: Option<Scalar>,
    pub command: Option<Command>,
    pub url: Option<String>,
    pub expect_status: Option<i64>,
    pub address: Option<String>,
    pub path: Option<String>,
    pub within: Option<Scalar>,
    pub max: Option<Scalar>,
}

/// `[log]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub max_size: Option<Scalar>,
    pub keep: Option<i64>,
    pub pipe: Option<String>,
    pub to_file: Option<bool>,
}

/// A number or a string, told apart in phase two.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("number {v} is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
}

/// A command: a string (run by `/bin/sh -c`) or an array (program and arguments).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string (a shell command) or an array of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
        Ok(Command::Shell(v.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut argv = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            argv.push(s);
        }
        Ok(Command::Argv(argv))
    }
}

/// A resource limit: one value for both soft and hard, or a `{ soft, hard }` table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Limit {
    Both(Scalar),
    Pair { soft: Scalar, hard: Scalar },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitPair {
    soft: Scalar,
    hard: Scalar,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LimitVisitor)
    }
}

struct LimitVisitor;

impl<'de> Visitor<'de> for LimitVisitor {
    type Value = Limit;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, \"unlimited\", or a table { soft = …, hard = … }")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
        ScalarVisitor.visit_i64(v).map(Limit::Both)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
        ScalarVisitor.visit_u64(v).map(Limit::Both)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Limit, E> {
        ScalarVisitor.visit_f64(v).map(Limit::Both)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Limit, E> {
        ScalarVisitor.visit_str(v).map(Limit::Both)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Limit, A::Error> {
        let p = LimitPair::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Limit::Pair {
            soft: p.soft,
            hard: p.hard,
        })
    }
}

/// The top-level keys a file uses, to name fields in errors as they are written (a file that
/// says `ExecStart` gets errors about `ExecStart`, not `command`).
#[derive(Debug, Default)]
pub(crate) struct Keys(pub std::collections::BTreeSet<String>);

impl Keys {
    /// How the file spells `canonical` (one of its `aliases` if the file uses one).
    pub(crate) fn written(&self, canonical: &str) -> String {
        for (name, aliases) in ALIASES {
            if *name == canonical
                && let Some(a) = aliases.iter().find(|a| self.0.contains(**a))
            {
                return (*a).to_owned();
            }
        }
        canonical.to_owned()
    }
}

/// The serde aliases of [`RawService`], kept in step with its attributes.
const ALIASES: &[(&str, &[&str])] = &[
    ("description", &["ShortDescription"]),
    ("command", &["ExecStart"]),
    ("working_dir", &["cwd"]),
    ("user", &["SetUID"]),
    ("group", &["SetGID"]),
    ("provides", &["Provides"]),
    ("requires", &["Prerequisites"]),
    ("priority", &["StartPriority"]),
    ("initial_state", &["InitialState"]),
];
