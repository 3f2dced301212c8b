//! `reeve agent update`: asks the running agent to switch to another version, then follows
//! the launcher's trial until it ends — the new agent committed, or switched back with the
//! launcher's reason.

use anyhow::{Result, bail};
use reeve_agent::client::Client;
use reeve_agent::update::{DEFAULT_TRIAL_TIMEOUT, UpdateRequest, UpdateStatus};
use reeve_proto::launcher::{MAX_TRIAL_BOOTS, UpdateOutcome};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the CLI asks whether the trial has ended.
const POLL: Duration = Duration::from_millis(250);

/// Runs the update and reports its outcome (exit 0 committed, 3 switched back).
pub async fn update(c: &Client, req: UpdateRequest, no_wait: bool, json: bool) -> Result<ExitCode> {
    let trial = req
        .trial_timeout_ms
        .map_or(DEFAULT_TRIAL_TIMEOUT, Duration::from_millis);
    let started_ms = crate::format::now_ms();
    if !json {
        eprintln!(
            "fetching and checking reeve-agent {} (signed package from the registry)…",
            req.version
        );
    }
    let answer: serde_json::Value = c
        .post_json("/v1/agent/update", &serde_json::to_value(&req)?)
        .await?;
    let old_pid = answer.get("pid").and_then(serde_json::Value::as_u64);
    let from = answer.get("from").and_then(|v| v.as_str()).unwrap_or("?");
    if no_wait {
        if json {
            println!("{answer}");
        } else {
            println!(
                "switching from agent {from} to {}; `reeve events` tells how its trial ends",
                req.version
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!(
            "switching from agent {from} to {}; the new agent has {} s to report healthy…",
            req.version,
            trial.as_secs()
        );
    }
    // A trial boot cut short is tried again; leave room for every boot and the restarts.
    let limit = trial * MAX_TRIAL_BOOTS + Duration::from_secs(30);
    let until = Instant::now() + limit;
    while Instant::now() < until {
        tokio::time::sleep(POLL).await;
        let Ok(st) = c.get::<UpdateStatus>("/v1/agent/update").await else {
            continue; // the agent is restarting
        };
        if old_pid == Some(u64::from(st.pid)) || st.on_trial {
            continue;
        }
        if let Some(last) = ended(&st, &req.version, started_ms) {
            return Ok(report(&st, &last, json));
        }
    }
    bail!(
        "the update's outcome is not known after {} s; `reeve agent update` status: GET /v1/agent/update, \
         events: `reeve events --since 10m`",
        limit.as_secs()
    )
}

/// The launcher's outcome of this update, once it is recorded.
fn ended(st: &UpdateStatus, version: &str, since_ms: u64) -> Option<UpdateOutcome> {
    let state = st.state.as_ref()?;
    if state.trial.is_some() {
        return None;
    }
    state
        .last
        .clone()
        .filter(|l| l.version == version && l.at_ms >= since_ms)
}

fn report(st: &UpdateStatus, last: &UpdateOutcome, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"outcome": last, "running": st.version, "pid": st.pid})
        );
    } else if last.committed {
        println!(
            "agent updated to {} (pid {}); services kept running",
            st.version, st.pid
        );
    } else {
        println!(
            "update to {} switched back to {} (pid {}): {}",
            last.version, st.version, st.pid, last.reason
        );
    }
    if last.committed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}
