//! The `reeve` command: parses arguments and dispatches to the agent or to a client command.

mod cli;
mod client_cmds;
mod dev_cmd;
mod fleet_cmds;
mod format;
mod hub_cmds;
mod key_cmds;
mod module_cmds;
mod module_tools;
mod node_cmds;
mod state_cmds;
mod top;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: cli::Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(cli::dispatch(args))
}
