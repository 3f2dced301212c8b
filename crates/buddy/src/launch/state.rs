//! The launcher's decisions on its state file, kept pure (the loop in `mod.rs` does the
//! processes), and the file's atomic persistence.

use reeve_proto::UnixMillis;
use reeve_proto::launcher::{
    AgentPackage, LauncherState, MAX_TRIAL_BOOTS, STATE_FILE, ToLauncher, Trial, UpdateOutcome,
};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// What to start next.
#[derive(Debug, PartialEq)]
pub enum Boot {
    /// The current agent: a package, or (`None`) the command line's program.
    Current(Option<AgentPackage>),
    /// The package on trial, which must report healthy within `timeout_ms`.
    Trial {
        /// The package.
        to: AgentPackage,
        /// Must it reach the hub?
        need_hub: bool,
        /// Its time limit.
        timeout_ms: u64,
        /// Which trial boot this is (1-based).
        boot: u32,
    },
}

/// Decides the next boot and counts it when it is a trial boot. A trial that has used up
/// its boots without reporting is switched back first.
pub fn next_boot(state: &mut LauncherState, now: UnixMillis) -> Boot {
    if let Some(t) = &state.trial
        && t.boots >= MAX_TRIAL_BOOTS
    {
        let why = format!(
            "it did not report healthy in {} boots (the launcher or the machine stopped during its trials)",
            t.boots
        );
        roll_back(state, &why, now);
    }
    match &mut state.trial {
        Some(t) => {
            t.boots += 1;
            Boot::Trial {
                to: t.to.clone(),
                need_hub: t.need_hub,
                timeout_ms: t.timeout_ms,
                boot: t.boots,
            }
        }
        None => Boot::Current(state.current.clone()),
    }
}

/// The agent on trial reported healthy: it becomes current. `false` when no trial is on.
pub fn commit(state: &mut LauncherState, now: UnixMillis) -> bool {
    let Some(t) = state.trial.take() else {
        return false;
    };
    state.last = Some(UpdateOutcome {
        version: t.to.version.clone(),
        from: state.current_version().map(str::to_string),
        committed: true,
        reason: format!("healthy on trial boot {}", t.boots),
        requested_by: t.requested_by,
        at_ms: now,
    });
    state.previous = state.current.replace(t.to);
    true
}

/// The trial failed: back to the current agent, with the reason recorded.
pub fn roll_back(state: &mut LauncherState, reason: &str, now: UnixMillis) {
    if let Some(t) = state.trial.take() {
        state.last = Some(UpdateOutcome {
            version: t.to.version,
            from: state.current_version().map(str::to_string),
            committed: false,
            reason: reason.to_string(),
            requested_by: t.requested_by,
            at_ms: now,
        });
    }
}

/// Takes a message of the agent. `on_trial`: the agent that sent it is on trial and has not
/// reported healthy yet. Answers what happened, for the launcher's log.
pub fn take(state: &mut LauncherState, msg: ToLauncher, on_trial: bool, now: UnixMillis) -> String {
    match msg {
        ToLauncher::Healthy if on_trial && commit(state, now) => {
            let v = state.current_version().unwrap_or("?");
            format!("agent {v} reported healthy: it is now the current agent")
        }
        ToLauncher::Healthy => "agent reported healthy".into(),
        ToLauncher::Switch { .. } if on_trial => {
            "ignored a switch asked by an agent still on trial".into()
        }
        ToLauncher::Switch {
            to,
            need_hub,
            timeout_ms,
            requested_by,
        } => {
            let note = format!(
                "switch to agent {} ({}) asked by {requested_by}; it runs on trial when this agent exits",
                to.version, to.exe
            );
            state.trial = Some(Trial {
                to,
                need_hub,
                timeout_ms,
                boots: 0,
                requested_by,
                requested_ms: now,
            });
            note
        }
    }
}

/// Reads the state file of `home`; a missing file is the empty state. A file that cannot
/// be read is reported and treated as empty (the command line's program runs), so a
/// damaged file never keeps the agent down.
pub fn load(home: &Path) -> (LauncherState, Option<String>) {
    let path = home.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => (s, None),
            Err(e) => (
                LauncherState::default(),
                Some(format!(
                    "{} is damaged ({e}); starting afresh",
                    path.display()
                )),
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (LauncherState::default(), None),
        Err(e) => (
            LauncherState::default(),
            Some(format!(
                "cannot read {} ({e}); starting afresh",
                path.display()
            )),
        ),
    }
}

/// Writes the state file of `home` atomically: temp file, fsync, rename, directory fsync.
pub fn save(home: &Path, state: &LauncherState) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    let path = home.join(STATE_FILE);
    let tmp = home.join(format!("{STATE_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(home)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(v: &str) -> AgentPackage {
        AgentPackage {
            version: v.into(),
            exe: format!("/v/{v}/bin/reeve"),
        }
    }

    fn switch(v: &str) -> ToLauncher {
        ToLauncher::Switch {
            to: pkg(v),
            need_hub: true,
            timeout_ms: 1000,
            requested_by: "uid:0".into(),
        }
    }

    #[test]
    fn a_healthy_trial_becomes_current() {
        let mut s = LauncherState::default();
        assert_eq!(next_boot(&mut s, 1), Boot::Current(None));
        take(&mut s, switch("2.0"), false, 2);
        let Boot::Trial { to, boot: 1, .. } = next_boot(&mut s, 3) else {
            panic!("expected a first trial boot");
        };
        assert_eq!(to, pkg("2.0"));
        take(&mut s, ToLauncher::Healthy, true, 4);
        assert_eq!(s.current, Some(pkg("2.0")));
        assert_eq!(s.previous, None);
        assert!(s.trial.is_none());
        let last = s.last.clone().expect("an outcome");
        assert!(last.committed);
        assert_eq!(last.from, None);
        assert_eq!(next_boot(&mut s, 5), Boot::Current(Some(pkg("2.0"))));
    }

    #[test]
    fn a_failed_trial_goes_back_and_says_why() {
        let mut s = LauncherState {
            current: Some(pkg("1.0")),
            ..Default::default()
        };
        take(&mut s, switch("2.0"), false, 1);
        next_boot(&mut s, 2);
        roll_back(&mut s, "exited with status 1", 3);
        assert_eq!(s.current, Some(pkg("1.0")));
        let last = s.last.clone().expect("an outcome");
        assert!(!last.committed);
        assert_eq!(last.from.as_deref(), Some("1.0"));
        assert_eq!(last.reason, "exited with status 1");
        assert_eq!(next_boot(&mut s, 4), Boot::Current(Some(pkg("1.0"))));
    }

    #[test]
    fn interrupted_trial_boots_are_counted_then_given_up() {
        let mut s = LauncherState::default();
        take(&mut s, switch("2.0"), false, 1);
        for n in 1..=MAX_TRIAL_BOOTS {
            assert!(matches!(next_boot(&mut s, 2), Boot::Trial { boot, .. } if boot == n));
        }
        assert_eq!(next_boot(&mut s, 3), Boot::Current(None));
        assert!(!s.last.expect("an outcome").committed);
    }

    #[test]
    fn an_agent_on_trial_cannot_switch_again_and_healthy_outside_a_trial_changes_nothing() {
        let mut s = LauncherState::default();
        take(&mut s, switch("2.0"), false, 1);
        next_boot(&mut s, 2);
        take(&mut s, switch("3.0"), true, 3);
        assert_eq!(s.trial.as_ref().map(|t| t.to.version.as_str()), Some("2.0"));
        let mut idle = LauncherState::default();
        take(&mut idle, ToLauncher::Healthy, false, 1);
        assert_eq!(idle, LauncherState::default());
    }

    #[test]
    fn state_survives_a_round_trip_and_damage_is_not_fatal() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut s = LauncherState::default();
        take(&mut s, switch("2.0"), false, 1);
        save(dir.path(), &s)?;
        assert_eq!(load(dir.path()), (s, None));
        std::fs::write(dir.path().join(STATE_FILE), b"{not json")?;
        let (s, note) = load(dir.path());
        assert_eq!(s, LauncherState::default());
        assert!(note.is_some_and(|n| n.contains("damaged")));
        Ok(())
    }
}
