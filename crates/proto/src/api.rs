//! Bodies of the agent's local HTTP API (served over its Unix control socket).
//! The routes are documented in `docs/local-api.md`.

use crate::UnixMillis;
use crate::buddy::ExitStatus;
use serde::{Deserialize, Serialize};

/// API version prefix of every route.
pub const API_PREFIX: &str = "/v1";

/// The state of a service as the agent reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Not running.
    Stopped,
    /// Spawned, waiting for its first passing health check.
    Starting,
    /// Running (and ready, when it has a health check).
    Running,
    /// Running, but the health check fails.
    Unhealthy,
    /// Waiting before a restart.
    BackingOff,
    /// Being stopped.
    Stopping,
    /// Restart limits reached, or could not be started.
    Failed,
    /// The agent has no live buddy for it right now.
    Unknown,
}

impl ServiceState {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Unhealthy => "unhealthy",
            Self::BackingOff => "backing_off",
            Self::Stopping => "stopping",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator wants for a service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Keep it running.
    Running,
    /// Keep it stopped.
    Stopped,
}

/// One service in `GET /v1/services`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: ServiceState,
    /// What the operator wants.
    pub desired: Desired,
    /// Service pid while running.
    pub pid: Option<u32>,
    /// Buddy pid.
    pub buddy_pid: Option<u32>,
    /// When the current state began.
    pub since_ms: UnixMillis,
    /// Restarts since the buddy started.
    pub restarts: u64,
    /// Last exit.
    pub last_exit: Option<ExitStatus>,
    /// Last health check message, if the service has a health check.
    pub health: Option<String>,
    /// Names of the custom actions it offers.
    pub actions: Vec<String>,
}

/// Answer of `GET /v1/agent`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AgentInfo {
    /// reeve version.
    pub version: String,
    /// Agent pid.
    pub pid: u32,
    /// Data directory.
    pub data_dir: String,
    /// Services directory.
    pub services_dir: String,
    /// When the agent started.
    pub started_ms: UnixMillis,
}

/// Answer of `POST /v1/reload`: what a re-read of the services directory changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ReloadReport {
    /// Services added.
    pub added: Vec<String>,
    /// Services whose definition changed (restarted if running).
    pub changed: Vec<String>,
    /// Services removed (stopped).
    pub removed: Vec<String>,
    /// Services left alone.
    pub unchanged: Vec<String>,
    /// Invalid files, with every error.
    pub errors: Vec<String>,
}

/// Answer of `GET /v1/services/{name}/logs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LogLines {
    /// The last lines, oldest first, as written by the buddy (`<timestamp> <o|e> <text>`).
    pub lines: Vec<String>,
}

/// Every error answer: `{"error": "..."}` with a 4xx or 5xx status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApiError {
    /// What went wrong, for a human.
    pub error: String,
}
