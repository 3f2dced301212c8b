//! `reeve module pack|keygen|sign|verify`: the offline package tools. Their arguments are
//! defined once, in `crates/modwork/src/tool_args.rs`; they run in `reeve-modwork` (beside
//! `reeve`, or `REEVE_MODWORK_PATH`), which holds the packing, signing
//! and archive code, so that none of it is part of the `reeve` binary and the agent's
//! memory. Output, messages and the exit status are the worker's.

#[path = "../../modwork/src/tool_args.rs"]
mod tool_args;

pub use tool_args::ModuleTool;

use anyhow::{Result, anyhow};
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs an offline tool in `reeve-modwork` and returns its exit status.
pub fn run(tool: ModuleTool) -> Result<ExitCode> {
    let exe = match std::env::var_os("REEVE_MODWORK_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => reeve_agent::config::sibling_binary("reeve-modwork")?,
    };
    let status = std::process::Command::new(&exe)
        .arg("tool")
        .args(tool.to_args())
        .status()
        .map_err(|e| {
            anyhow!(
                "cannot run {}: {e}\nhint: install reeve-modwork beside reeve, or give its path in REEVE_MODWORK_PATH",
                exe.display()
            )
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}
