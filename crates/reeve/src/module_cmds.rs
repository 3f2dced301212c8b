//! `reeve module …`: offline package tools (see `module_tools`) and, through the agent,
//! the module lifecycle: install, configure, start, stop, uninstall, list.

use crate::module_tools::{self, ModuleTool};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reeve_agent::client::{Client, segment};
use reeve_modules::plan::InstalledModule;
use std::path::PathBuf;
use std::process::ExitCode;

/// `reeve module`.
#[derive(Args, Debug)]
pub struct ModuleArgs {
    #[command(subcommand)]
    pub cmd: ModuleCmd,
}

/// Every `reeve module` subcommand.
#[derive(Subcommand, Debug)]
pub enum ModuleCmd {
    #[command(flatten)]
    Tool(ModuleTool),
    /// Download, verify and install a module (and its submodules) from the registry.
    #[command(after_help = "Example: reeve module install my-server@1.0.0")]
    Install {
        /// NAME@VERSION.
        module: String,
        /// Allow installing a lower version than the one installed.
        #[arg(long)]
        force: bool,
        /// Print JSON (no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration against the module's schema and apply it.
    #[command(after_help = "Example: reeve module configure my-server --config '{\"port\": 8989}'")]
    Configure {
        /// NAME (one version installed) or NAME@VERSION.
        module: String,
        /// JSON, or the path of a JSON file.
        #[arg(long)]
        config: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the start hook and supervise the module's services (`module/service`).
    Start {
        /// NAME or NAME@VERSION.
        module: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the module's services and run its stop hook.
    Stop {
        /// NAME or NAME@VERSION.
        module: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop, run the uninstall hook and remove the module (the download cache keeps it).
    Uninstall {
        /// NAME or NAME@VERSION.
        module: String,
    },
    /// List installed modules.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `reeve module` subcommand; `socket` resolves the agent's socket when needed.
pub async fn run(socket: impl FnOnce() -> Result<PathBuf>, args: ModuleArgs) -> Result<ExitCode> {
    let cmd = match args.cmd {
        ModuleCmd::Tool(t) => return module_tools::run(t),
        other => other,
    };
    let c = Client::new(&socket()?);
    match cmd {
        ModuleCmd::Tool(_) => bail!("internal: offline tools are handled above"),
        ModuleCmd::Install {
            module,
            force,
            json,
        } => install(&c, &module, force, json).await,
        ModuleCmd::Configure {
            module,
            config,
            json,
        } => {
            let value = read_config(&config)?;
            let m: InstalledModule = c
                .post_json(
                    &format!("/v1/modules/{}/configure", segment(&module)),
                    &value,
                )
                .await?;
            print_module(&m, json, "configured")
        }
        ModuleCmd::Start { module, json } => {
            let m: InstalledModule = c
                .post(&format!("/v1/modules/{}/start", segment(&module)))
                .await?;
            print_module(&m, json, "started")
        }
        ModuleCmd::Stop { module, json } => {
            let m: InstalledModule = c
                .post(&format!("/v1/modules/{}/stop", segment(&module)))
                .await?;
            print_module(&m, json, "stopped")
        }
        ModuleCmd::Uninstall { module } => {
            let _: serde_json::Value = c
                .post(&format!("/v1/modules/{}/uninstall", segment(&module)))
                .await?;
            println!("{module}: uninstalled");
            Ok(ExitCode::SUCCESS)
        }
        ModuleCmd::List { json } => {
            let list: Vec<InstalledModule> = c.get("/v1/modules").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no modules installed");
            } else {
                println!(
                    "{:<24} {:<12} {:<8} CONFIGURED",
                    "NAME", "VERSION", "RUNNING"
                );
                for m in &list {
                    println!(
                        "{:<24} {:<12} {:<8} {}",
                        m.name,
                        m.version,
                        if m.running { "yes" } else { "no" },
                        if m.config.is_some() { "yes" } else { "no" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_module(m: &InstalledModule, json: bool, what: &str) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
    } else {
        println!("{}@{}: {what}", m.name, m.version);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--config` is JSON when it looks like JSON, else the path of a JSON file.
fn read_config(arg: &str) -> Result<serde_json::Value> {
    let t = arg.trim_start();
    let text = if t.starts_with('{') || t.starts_with('[') || t == "null" {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg)
            .with_context(|| format!("cannot read the config file {arg}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("--config is not valid JSON: {arg}"))
}

async fn install(c: &Client, module: &str, force: bool, json: bool) -> Result<ExitCode> {
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(format!("downloading {module}"));
        b
    };
    let mut buf = Vec::new();
    let mut last: Option<serde_json::Value> = None;
    c.post_stream(
        &format!(
            "/v1/modules/install?module={}&force={force}",
            segment(module)
        ),
        |chunk| {
            buf.extend_from_slice(chunk);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(p) = v.get("progress") {
                    if let Some(t) = p.get("total").and_then(serde_json::Value::as_u64) {
                        bar.set_length(t);
                    }
                    if let Some(d) = p.get("downloaded").and_then(serde_json::Value::as_u64) {
                        bar.set_position(d);
                    }
                } else {
                    last = Some(v);
                }
            }
            true
        },
    )
    .await?;
    bar.finish_and_clear();
    match last {
        Some(v) if v.get("done").is_some() => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v["done"])?);
            } else {
                println!("{module}: installed");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(v) => bail!(
            "{}",
            v.get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("install failed")
        ),
        None => bail!("the agent ended the install without an answer"),
    }
}
