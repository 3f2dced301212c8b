//! Node events: every state transition of a service and every control action, as stored in
//! the agent's event log, streamed to subscribers and (later) forwarded to the hub.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// What happened. The names are stable: they are stored and queried.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The agent asked a buddy to start the service.
    Starting,
    /// The service process runs (and, with a health check, passed it once).
    Running,
    /// A health check passed after failing.
    Healthy,
    /// Health checks failed `threshold` times in a row.
    Unhealthy,
    /// The service process ended.
    Exited,
    /// The service could not be spawned.
    SpawnFailed,
    /// Waiting before a restart.
    BackingOff,
    /// Restart limits reached.
    Failed,
    /// The stop signal was sent.
    Stopping,
    /// SIGKILL sent to the process group after `kill_timeout`.
    Killed,
    /// The service is stopped.
    Stopped,
    /// A signal was sent to the service (reload, custom action).
    Signalled,
    /// A control action was requested (start, stop, reload, action, agent reload …).
    Action,
    /// A service definition was added, changed or removed.
    ConfigChanged,
    /// A service definition is invalid.
    ConfigInvalid,
    /// The agent attached to a buddy (at start or after spawning it).
    BuddyAttached,
    /// A buddy disappeared; the outcome is in the detail.
    BuddyLost,
    /// The stored desired state and the buddy disagree; the detail says who won.
    Disagreement,
    /// Output was dropped (disk full).
    LogDropped,
    /// The agent started.
    AgentStarted,
    /// The agent stopped.
    AgentStopped,
    /// A module lifecycle step (install, configure, start, stop, uninstall) and its outcome.
    Module,
    /// A message from the hub or a peer was run, refused or answered (the audit trail of
    /// remote requests).
    Message,
    /// A self-update of the agent: switching to a new version, or how its trial ended
    /// (committed or switched back, with the reason).
    AgentUpdate,
}

impl EventKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Exited => "exited",
            Self::SpawnFailed => "spawn_failed",
            Self::BackingOff => "backing_off",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Killed => "killed",
            Self::Stopped => "stopped",
            Self::Signalled => "signalled",
            Self::Action => "action",
            Self::ConfigChanged => "config_changed",
            Self::ConfigInvalid => "config_invalid",
            Self::BuddyAttached => "buddy_attached",
            Self::BuddyLost => "buddy_lost",
            Self::Disagreement => "disagreement",
            Self::LogDropped => "log_dropped",
            Self::AgentStarted => "agent_started",
            Self::AgentStopped => "agent_stopped",
            Self::Module => "module",
            Self::Message => "message",
            Self::AgentUpdate => "agent_update",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event as stored and served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the node's event log (assigned by the store; 0 before it is stored).
    pub id: i64,
    /// When it happened (for buddy events: when the buddy saw it, not when the agent
    /// collected it).
    pub ts_ms: UnixMillis,
    /// The service it is about, if any.
    pub service: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// Who caused it: `uid:1000` for a local user, `buddy` for the buddy's own policy,
    /// `agent` for the agent's decisions.
    pub actor: String,
    /// A one-line human description.
    pub message: String,
    /// Structured details (pid, exit status, delay, last log lines …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_stable_and_parse_back() {
        for k in [
            EventKind::Starting,
            EventKind::BackingOff,
            EventKind::SpawnFailed,
            EventKind::BuddyLost,
            EventKind::AgentStopped,
            EventKind::AgentUpdate,
        ] {
            let json = serde_json::to_string(&k).expect("serialize");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
