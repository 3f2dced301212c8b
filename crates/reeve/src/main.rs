//! The `reeve` command: parses arguments and dispatches to the agent or to a client command.

mod cli;
mod client_cmds;
mod dev_cmd;
mod fleet_cmds;
mod format;
mod hub_clock;
mod hub_cmds;
mod hub_trust;
mod key_cmds;
mod module_cmds;
mod module_tools;
mod node_cmds;
mod state_cmds;
mod top;
mod update_cmd;

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
    // The hub serves many connections (TLS, signatures, JSON): it gets a worker per core.
    // Everything else (the agent above all, whose memory is counted) is one thread.
    let rt = match &args.command {
        cli::Command::Hub(h) if h.sub.is_none() => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(h.run.workers.unwrap_or(cores).clamp(1, 64))
                .enable_all()
                .build()?
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    rt.block_on(cli::dispatch(args))
}
