//! `reeve state plan|apply|cancel`: converge this node's modules to a desired state.

use anyhow::{Context, Result};
use clap::Subcommand;
use reeve_agent::apply::ApplyReport;
use reeve_agent::client::Client;
use reeve_modules::plan::{DesiredState, Step};
use std::path::PathBuf;
use std::process::ExitCode;

/// `reeve state …`.
#[derive(Subcommand, Debug)]
pub enum StateCmd {
    /// Show the ordered steps that would take this node to the desired state.
    #[command(after_help = "Example: reeve state plan --state state.toml")]
    Plan {
        /// The desired state: a TOML or JSON file, or JSON inline.
        #[arg(long)]
        state: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a desired state; on any failure the node rolls back to the state before.
    #[command(
        after_help = "Example: reeve state apply --state '{\"modules\": [{\"name\": \"my-server\", \"version\": \"1.0.0\", \"config\": {\"port\": 8989}}]}'\n\nExit status: 0 applied (or nothing to do), 3 rolled back, 4 rollback failed."
    )]
    Apply {
        /// The desired state: a TOML or JSON file, or JSON inline.
        #[arg(long)]
        state: String,
        /// Allow versions lower than the installed ones (a downgrade).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the apply in progress: the step under way is stopped and the node rolls back
    /// to the state before (the apply's own command reports it). From a hub:
    /// `reeve send --to NODE apply.cancel`.
    #[command(after_help = "Exit status: 0 cancelled, 1 no apply was in progress.")]
    Cancel,
}

fn read_state(arg: &str) -> Result<DesiredState> {
    let t = arg.trim_start();
    let text = if t.starts_with('{') {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read the state file {arg}"))?
    };
    DesiredState::parse(&text).with_context(|| format!("invalid desired state in {arg}"))
}

/// Runs a `reeve state` subcommand.
pub async fn run(socket: impl FnOnce() -> Result<PathBuf>, cmd: StateCmd) -> Result<ExitCode> {
    let c = Client::new(&socket()?);
    match cmd {
        StateCmd::Plan { state, json } => {
            let desired = serde_json::to_value(read_state(&state)?)?;
            let steps: Vec<Step> = c.post_json("/v1/state/plan", &desired).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else if steps.is_empty() {
                println!("nothing to do");
            } else {
                for (i, s) in steps.iter().enumerate() {
                    println!("{:>3}. {s}", i + 1);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Cancel => {
            let r: Result<serde_json::Value> = c
                .post_json("/v1/state/cancel", &serde_json::json!({}))
                .await;
            match r {
                Ok(v) => {
                    println!("cancelled {}", v["cancelled"].as_str().unwrap_or("?"));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("reeve state cancel: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        StateCmd::Apply { state, force, json } => {
            let desired = serde_json::to_value(read_state(&state)?)?;
            let path = if force {
                "/v1/state/apply?force=true"
            } else {
                "/v1/state/apply"
            };
            let r: ApplyReport = c.post_json(path, &desired).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for s in &r.steps {
                    println!("done: {s}");
                }
                if let Some(f) = &r.failed_step {
                    eprintln!("FAILED: {f}: {}", r.error.as_deref().unwrap_or("?"));
                    for s in &r.rollback_steps {
                        eprintln!("rolled back: {s}");
                    }
                }
                if let Some(e) = &r.rollback_error {
                    eprintln!("ROLLBACK FAILED: {e}");
                }
                println!("{}: {}", r.id, r.outcome.replace('_', " "));
            }
            Ok(match r.outcome.as_str() {
                "applied" | "nothing_to_do" => ExitCode::SUCCESS,
                "rolled_back" => ExitCode::from(3),
                _ => ExitCode::from(4),
            })
        }
    }
}
