//! The launcher protocol (DESIGN §2.4): what `reeve-buddy launch` and the agent it runs
//! share. The launcher keeps one state file in its home directory and is its only writer;
//! the agent reads it and talks to the launcher by JSON lines on an inherited pipe.
//!
//! A self-update goes: the agent unpacks a verified agent package under
//! `HOME/versions/VERSION/`, sends [`ToLauncher::Switch`] and exits; the launcher records the
//! trial, starts the new agent with [`ENV_TRIAL`] set and counts the boot; the new agent
//! sends [`ToLauncher::Healthy`] once its buddies are re-attached (and the hub reached, when
//! it was reachable before); the launcher then makes it current. If the new agent exits
//! first, or is not healthy within the trial's time limit, or a trial boot was cut short
//! [`MAX_TRIAL_BOOTS`] times, the launcher switches back and records why.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// Environment variable: the number of the pipe descriptor the agent writes to.
pub const ENV_FD: &str = "REEVE_LAUNCHER_FD";
/// Environment variable: the launcher's home directory (state file, versions).
pub const ENV_HOME: &str = "REEVE_LAUNCHER_HOME";
/// Environment variable, set only while the agent runs on trial: `hub` when it must reach
/// the hub to count as healthy, `local` when re-attaching its buddies is enough.
pub const ENV_TRIAL: &str = "REEVE_LAUNCHER_TRIAL";
/// Environment variable: the package version the launcher started (absent for the
/// program named on the launcher's command line).
pub const ENV_PACKAGE: &str = "REEVE_AGENT_PACKAGE";
/// Is `name` one of the variables the launcher sets for the agent alone (services never
/// inherit them)?
pub fn is_launcher_variable(name: &str) -> bool {
    [ENV_FD, ENV_HOME, ENV_TRIAL, ENV_PACKAGE].contains(&name)
}

/// The state file, in the launcher's home.
pub const STATE_FILE: &str = "launcher.json";
/// Unpacked agent packages, one folder per version, in the launcher's home.
pub const VERSIONS_DIR: &str = "versions";
/// A trial boot that never reported (the launcher itself was stopped or the machine lost
/// power) is tried again until this many boots; then the launcher switches back.
pub const MAX_TRIAL_BOOTS: u32 = 2;

/// The launcher's state file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LauncherState {
    /// The agent the launcher runs; `None`: the program on its command line.
    #[serde(default)]
    pub current: Option<AgentPackage>,
    /// What ran before the last committed update.
    #[serde(default)]
    pub previous: Option<AgentPackage>,
    /// An update on trial.
    #[serde(default)]
    pub trial: Option<Trial>,
    /// How the last update ended.
    #[serde(default)]
    pub last: Option<UpdateOutcome>,
}

impl LauncherState {
    /// The version label of what runs when no trial is on: the current package's, or
    /// `None` for the command line's program.
    pub fn current_version(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.version.as_str())
    }
}

/// An unpacked agent package.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AgentPackage {
    /// Its version.
    pub version: String,
    /// The `reeve` executable in it (absolute path).
    pub exe: String,
}

/// An update on trial.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Trial {
    /// The package tried.
    pub to: AgentPackage,
    /// Must the new agent reach the hub to count as healthy?
    pub need_hub: bool,
    /// How long a trial boot may take to report healthy.
    pub timeout_ms: u64,
    /// Trial boots started so far.
    #[serde(default)]
    pub boots: u32,
    /// Who asked for the update.
    pub requested_by: String,
    /// When.
    pub requested_ms: UnixMillis,
}

/// How an update ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpdateOutcome {
    /// The version tried.
    pub version: String,
    /// The version it replaced (`None`: the command line's program).
    pub from: Option<String>,
    /// Committed (`true`) or switched back (`false`).
    pub committed: bool,
    /// Why it was switched back, or a note on the commit.
    pub reason: String,
    /// Who asked for it.
    pub requested_by: String,
    /// When it ended.
    pub at_ms: UnixMillis,
}

/// A line the agent writes to the launcher's pipe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ToLauncher {
    /// The agent on trial is healthy.
    Healthy,
    /// Switch to `to` when this agent exits (it exits by itself right after).
    Switch {
        /// The unpacked package.
        to: AgentPackage,
        /// Must the new agent reach the hub to count as healthy?
        need_hub: bool,
        /// How long a trial boot may take to report healthy.
        timeout_ms: u64,
        /// Who asked for the update.
        requested_by: String,
    },
}
