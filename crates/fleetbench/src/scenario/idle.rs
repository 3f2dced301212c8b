//! Idle cost: the hub's memory per connected idle node (hub RSS before and after `n`
//! simulated nodes connect), and the bytes an idle node puts on the wire per hour,
//! counted by a proxy in front of the hub for `m` simulated nodes (connections spread
//! over one keepalive period so the window sees an even mix of phases) and for a few real
//! `reeve agent`s. Also the hub's CPU and wake-ups while everything idles.

use super::Ctx;
use crate::fleet::{AgentProc, Api};
use crate::proxy;
use crate::report::{Figure, Outcome};
use crate::sim::KEEPALIVE;
use crate::simfleet::{SimFleet, names};
use crate::util::{cpu_seconds, fsync_latency, pss_kib, rss_kib, threads};
use anyhow::Result;
use serde_json::json;
use std::time::{Duration, Instant};

/// The agent's keepalive interval once answered pings have grown it to its ceiling (after
/// about ten minutes of an idle link that kept its NAT mapping).
const SETTLED: Duration = reeve_agent::node::keepalive::MAX;

/// Context switches of every thread of `pid` (wake-ups).
fn wakeups(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let fsync = fsync_latency(&ctx.dir, 200)?;
    let n = ctx.size(2000, 10_000);
    let m = 50;
    let r = if ctx.quick { 2 } else { 3 };
    let window = Duration::from_secs(if ctx.quick { 30 } else { 300 });
    let mut notes = Vec::new();
    let fleet = SimFleet::start(&ctx.bins, &ctx.dir, ctx.threads)?;
    let hub_pid = fleet.hub.pid();
    let url = fleet.hub.url.clone();

    // Wire: m simulated nodes and r real agents, each group through its own counting
    // proxy. The simulated ones connect spread over one keepalive period (so any window
    // sees an even mix of keepalive phases), while the memory part below runs.
    let ppool = crate::pool::Pool::new(1, "proxy")?;
    let psim = proxy::start_on(&ppool, fleet.hub.addr, Duration::ZERO).await?;
    let preal = proxy::start_on(&ppool, fleet.hub.addr, Duration::ZERO).await?;
    let wire = fleet.enrol(&names("wire", m), &psim.url(), 2).await?;
    let mut agents = Vec::new();
    for i in 0..r {
        let name = format!("agent-{}", i + 1);
        agents.push(AgentProc::start(
            &ctx.bins,
            &fleet.hub,
            &ctx.dir.join(&name),
            &name,
            &preal.url(),
            None,
        )?);
    }
    // Warm up with a few nodes (first-use allocations), then the baseline.
    let warm = fleet.enrol(&names("warm", 10), &url, 2).await?;
    fleet.connect(&warm, 0.0).await;
    fleet.wait_connected(10, Duration::from_secs(30)).await?;
    let mut api: Api = fleet.api().await?;
    for a in &agents {
        api.wait_online(&a.name, Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0 = fleet
        .stats
        .connected
        .load(std::sync::atomic::Ordering::Relaxed);
    let (rss0, pss0) = (rss_kib(hub_pid).unwrap_or(0), pss_kib(hub_pid).unwrap_or(0));
    // The real agents are few: their bytes are counted from here to the end (a longer
    // window than the simulated nodes', for fewer keepalive-phase effects).
    let (real0, real_t0) = (preal.counters.total(), Instant::now());

    // n idle nodes, while the wire nodes trickle in.
    let stagger = fleet.connect(&wire, m as f64 / KEEPALIVE.as_secs_f64());
    let memory = async {
        let t = Instant::now();
        let idle = fleet.enrol(&names("idle", n), &url, 4).await?;
        let enrol_s = t.elapsed().as_secs_f64();
        // Paced, as a fleet coming up would be: a storm of thousands of TLS handshakes at
        // once on the hub's single thread makes some time out.
        fleet.connect(&idle, 500.0).await;
        Ok::<_, anyhow::Error>(enrol_s)
    };
    let t = Instant::now();
    let ((), enrol_s) = tokio::join!(stagger, memory);
    let enrol_s = enrol_s?;
    let want = (10 + m + n) as u64;
    if let Err(e) = fleet.wait_connected(want, Duration::from_secs(120)).await {
        notes.push(format!("{e:#}; measured with the nodes that did"));
    }
    let connect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c1 = fleet
        .stats
        .connected
        .load(std::sync::atomic::Ordering::Relaxed);
    let (rss1, pss1) = (rss_kib(hub_pid).unwrap_or(0), pss_kib(hub_pid).unwrap_or(0));
    let added = (c1 - c0).max(1) as f64;
    let per_node_kib = (rss1 as f64 - rss0 as f64) / added;

    let s0 = psim.counters.total();
    let (cpu0, wake0) = (cpu_seconds(hub_pid).unwrap_or(0.0), wakeups(hub_pid));
    let agent_cpu0: f64 = agents
        .iter()
        .filter_map(|a| a.pid().and_then(cpu_seconds))
        .sum();
    tokio::time::sleep(window).await;
    let secs = window.as_secs_f64();
    let (s1, real1) = (psim.counters.total(), preal.counters.total());
    let real_secs = real_t0.elapsed().as_secs_f64();
    let hub_cpu = (cpu_seconds(hub_pid).unwrap_or(0.0) - cpu0) / secs;
    let hub_wakeups = (wakeups(hub_pid) - wake0) as f64 / secs;
    let agent_cpu: f64 = (agents
        .iter()
        .filter_map(|a| a.pid().and_then(cpu_seconds))
        .sum::<f64>()
        - agent_cpu0)
        / secs
        / r as f64;
    let rss2 = rss_kib(hub_pid).unwrap_or(0);
    let sim_bph = (s1 - s0) as f64 / secs * 3600.0 / m as f64;
    let real_bph = (real1 - real0) as f64 / real_secs * 3600.0 / r as f64;
    let total_nodes = 10 + n + m + r;
    notes.push(format!(
        "memory: {n} simulated idle nodes on one hub (RSS {rss0} KiB → {rss1} KiB); wire: TCP payload (TLS records) counted by a proxy over {:.0} s for {m} simulated nodes and {r} real agents, extrapolated to an hour",
        secs
    ));
    if n < 10_000 {
        notes.push(format!(
            "--quick connects {n} nodes, not 10,000 (bench/fleet without --quick does)"
        ));
    }
    let errors = fleet
        .stats
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    if errors > 0 {
        notes.push(format!("{errors} simulated links ended with an error"));
    }
    drop(agents);
    fleet
        .stats
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Outcome {
        scenario: "idle".into(),
        fsync_ms: fsync,
        fsync_shim: ctx.shim(),
        figures: vec![
            Figure::at_most(
                &format!("hub memory per idle connected node ({n} connected)"),
                per_node_kib,
                "KiB",
                32.0,
            ),
            Figure::info(
                &format!(
                    "idle bytes on the wire per node-hour, simulated nodes (keepalive every {} s, an agent's first interval)",
                    KEEPALIVE.as_secs()
                ),
                sim_bph / 1000.0,
                "KB/h",
            ),
            Figure::at_most(
                &format!(
                    "idle bytes per node-hour once an agent's keepalive settled at {} s (the above, per exchange)",
                    SETTLED.as_secs()
                ),
                sim_bph * KEEPALIVE.as_secs_f64() / SETTLED.as_secs_f64() / 1000.0,
                "KB/h",
                1.5,
            ),
            Figure::info(
                &format!(
                    "idle bytes on the wire per node-hour, real reeve agents (their first {real_secs:.0} s: keepalive not settled yet)"
                ),
                real_bph / 1000.0,
                "KB/h",
            ),
            Figure::info(
                &format!("hub CPU while {total_nodes} nodes idle"),
                hub_cpu * 100.0,
                "% of a core",
            ),
            Figure::info("hub wake-ups while idle", hub_wakeups, "/s"),
        ],
        details: json!({
            "nodes": n,
            "hub_rss_kib": {"baseline_10_nodes": rss0, "connected": rss1, "after_window": rss2},
            "hub_pss_kib": {"baseline_10_nodes": pss0, "connected": pss1},
            "hub_threads": threads(hub_pid),
            "enrol_s": enrol_s,
            "connect_s": connect_s,
            "wire_window_s": secs,
            "wire_bytes_sim": s1 - s0,
            "wire_bytes_real": real1 - real0,
            "wire_window_real_s": real_secs,
            "wire_nodes_sim": m,
            "wire_agents_real": r,
            "real_agent_cpu_percent": agent_cpu * 100.0,
            "hub_wakeups_per_s": hub_wakeups,
            "hub_cpu_percent": hub_cpu * 100.0,
        }),
        notes,
        ..Default::default()
    })
}
