//! `reeve-fleetbench`: the benchmarks of reeve's message layer (issue 3), run by
//! `bench/fleet`. Each scenario starts its own `reeve hub` process on a free loopback port
//! with its own data directory:
//!
//! - `roundtrip`: `reeve send --to n1 exec -- true` to a real `reeve agent`, as a CLI
//!   invocation and at the API level, beside NATS request/reply and ansible ad hoc;
//! - `throughput`: durable delivery of 256-byte messages to simulated nodes, delivered/s
//!   and replied/s (run again under the fsync shim by `all --fsync-shim`);
//! - `fanout`: one command to 1,000 simulated nodes, until every reply is back;
//! - `backlog`: 100,000 messages queued for an offline node, replayed on loopback and
//!   through a proxy adding 600 ms of round trip;
//! - `idle`: hub memory per connected idle node, bytes on the wire per idle node-hour.
//!
//! `all` runs each scenario in a child process of its own (so the fsync shim can be
//! preloaded into one), prints a table and writes every figure as JSON.

mod fleet;
mod nats;
mod pool;
mod proxy;
mod report;
mod scenario;
mod sim;
mod simfleet;
mod util;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use report::Outcome;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Parser, Debug)]
#[command(
    name = "reeve-fleetbench",
    about = "Benchmarks of reeve's message layer (bench/fleet)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Short versions: fewer samples, smaller counts.
    #[arg(long, global = true)]
    quick: bool,
    /// The `reeve` binary [default: beside this one].
    #[arg(long, global = true)]
    reeve: Option<PathBuf>,
    /// The `reeve-buddy` binary [default: beside this one].
    #[arg(long, global = true)]
    buddy: Option<PathBuf>,
    /// Working directory [default: a new one under the system's temporary directory].
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,
    /// Keep the working directory (hub data, logs) afterwards.
    #[arg(long, global = true)]
    keep: bool,
    /// `nats-server` for the round-trip comparison.
    #[arg(long, global = true, default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
    /// `ansible` for the round-trip comparison (skipped when absent).
    #[arg(long, global = true)]
    ansible: Option<PathBuf>,
    /// Threads that run the simulated nodes.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Override the scenario's size (messages, nodes).
    #[arg(long, global = true)]
    count: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Every scenario, each in a child process; prints the table, writes JSON.
    All {
        /// Where to write the JSON results.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The fsync shim (`bench/fsync-shim.c`, compiled): runs `throughput` again with it
        /// preloaded.
        #[arg(long)]
        fsync_shim: Option<PathBuf>,
        /// Only these scenarios (roundtrip, throughput, throughput-shim, fanout, backlog, idle).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// One scenario; prints its outcome as JSON.
    Run {
        /// roundtrip, throughput, fanout, backlog or idle.
        scenario: String,
        /// Write the outcome here instead of standard output.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
}

fn beside_me(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("where am I")?;
    Ok(me.with_file_name(name))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reeve-fleetbench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    util::now_us();
    util::raise_nofile();
    let bins = fleet::Bins {
        reeve: match &cli.reeve {
            Some(p) => p.clone(),
            None => beside_me("reeve")?,
        },
        buddy: match &cli.buddy {
            Some(p) => p.clone(),
            None => beside_me("reeve-buddy")?,
        },
    };
    if !bins.reeve.exists() {
        bail!("no reeve binary at {} (use --reeve)", bins.reeve.display());
    }
    let (work, _tmp) = match &cli.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("reeve-fleetbench-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let _tmp = match _tmp {
        Some(t) if cli.keep => {
            let _ = t.keep();
            None
        }
        other => other,
    };
    match &cli.cmd {
        Cmd::All {
            out,
            fsync_shim,
            only,
        } => all(&cli, &work, out.as_deref(), fsync_shim.as_deref(), only),
        Cmd::Run { scenario, json_out } => {
            let ctx = scenario::Ctx {
                bins,
                quick: cli.quick,
                dir: work.clone(),
                nats_server: cli.nats_server.clone(),
                ansible: cli.ansible.clone(),
                threads: cli.threads,
                count: cli.count,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = rt.block_on(async {
                match scenario.as_str() {
                    "roundtrip" => scenario::roundtrip::run(&ctx).await,
                    "throughput" => scenario::throughput::run(&ctx).await,
                    "fanout" => scenario::fanout::run(&ctx).await,
                    "backlog" => scenario::backlog::run(&ctx).await,
                    "idle" => scenario::idle::run(&ctx).await,
                    other => bail!("unknown scenario {other:?}"),
                }
            })?;
            let text = serde_json::to_string_pretty(&outcome)?;
            match json_out {
                Some(p) => std::fs::write(p, text)?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The scenarios `all` runs, in order: (name, scenario, preload the shim).
const PLAN: &[(&str, &str, bool)] = &[
    ("roundtrip", "roundtrip", false),
    ("throughput", "throughput", false),
    ("throughput-shim", "throughput", true),
    ("fanout", "fanout", false),
    ("backlog", "backlog", false),
    ("idle", "idle", false),
];

fn all(
    cli: &Cli,
    work: &Path,
    out: Option<&Path>,
    shim: Option<&Path>,
    only: &[String],
) -> Result<ExitCode> {
    let me = std::env::current_exe()?;
    let started = std::time::Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failed = false;
    for (name, scenario, preload) in PLAN {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        if *preload && shim.is_none() {
            outcomes.push(Outcome {
                scenario: (*name).into(),
                notes: vec!["skipped: no --fsync-shim".into()],
                ..Default::default()
            });
            continue;
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let json = dir.join("outcome.json");
        eprintln!(
            "[fleetbench] {name}{} … ({:.0} s so far)",
            if cli.quick { " (quick)" } else { "" },
            started.elapsed().as_secs_f64()
        );
        let mut c = Command::new(&me);
        c.args(["run", scenario, "--json-out"])
            .arg(&json)
            .arg("--work-dir")
            .arg(&dir)
            .arg("--reeve")
            .arg(
                cli.reeve
                    .clone()
                    .unwrap_or_else(|| me.with_file_name("reeve")),
            )
            .arg("--buddy")
            .arg(
                cli.buddy
                    .clone()
                    .unwrap_or_else(|| me.with_file_name("reeve-buddy")),
            )
            .arg("--nats-server")
            .arg(&cli.nats_server)
            .arg("--threads")
            .arg(cli.threads.to_string());
        if cli.quick {
            c.arg("--quick");
        }
        if let Some(a) = &cli.ansible {
            c.arg("--ansible").arg(a);
        }
        if let Some(n) = cli.count {
            c.arg("--count").arg(n.to_string());
        }
        if *preload && let Some(s) = shim {
            c.env("LD_PRELOAD", s);
        }
        let t = std::time::Instant::now();
        let (busy0, ours0, me0) = (
            util::system_busy_seconds(),
            util::children_cpu_seconds(),
            util::cpu_seconds(std::process::id()).unwrap_or(0.0),
        );
        let status = c.status().context("run a scenario")?;
        let wall = t.elapsed().as_secs_f64();
        let other = ((util::system_busy_seconds() - busy0)
            - (util::children_cpu_seconds() - ours0)
            - (util::cpu_seconds(std::process::id()).unwrap_or(0.0) - me0))
            / wall;
        let read = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str::<Outcome>(&t).ok());
        match (status.success(), read) {
            (true, Some(mut o)) => {
                o.other_load_cores = Some(other.max(0.0));
                o.scenario = if *preload {
                    "throughput (fsync +2 ms)".into()
                } else {
                    o.scenario
                };
                eprintln!(
                    "[fleetbench] {name} done in {:.0} s",
                    t.elapsed().as_secs_f64()
                );
                outcomes.push(o);
            }
            _ => {
                failed = true;
                eprintln!("[fleetbench] {name} FAILED ({status})");
                outcomes.push(Outcome {
                    scenario: (*name).into(),
                    notes: vec![format!("failed ({status}); see the output above")],
                    ..Default::default()
                });
            }
        }
    }
    let table = report::table(&outcomes);
    println!("\n{table}");
    for o in &outcomes {
        for n in &o.notes {
            println!("- {}: {n}", o.scenario);
        }
    }
    let revision = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let doc = serde_json::json!({
        "quick": cli.quick,
        "date_ms": util::wall_ms(),
        "revision": revision,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": kernel.trim(),
        },
        "seconds": started.elapsed().as_secs_f64(),
        "outcomes": outcomes,
        "table": table,
    });
    if let Some(p) = out {
        std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("[fleetbench] results in {}", p.display());
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
