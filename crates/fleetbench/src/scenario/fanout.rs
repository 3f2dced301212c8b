//! Fan-out: one command (`ops.ps`) to 1,000 connected nodes in one `POST /api/v1/messages`
//! (what `reeve send --to n1,…,n1000` does), until every reply is back at the hub. The
//! nodes are simulated (see `sim.rs`): 1,000 `reeve agent` processes do not fit on two
//! cores. Also timed once: the real CLI doing the same, as a user sees it.

use super::Ctx;
use crate::report::{Figure, Outcome};
use crate::simfleet::{SimFleet, names};
use crate::util::{fsync_latency, ms, now_us, summary};
use anyhow::{Result, bail};
use serde_json::json;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let fsync = fsync_latency(&ctx.dir, 200)?;
    let n = ctx.count.unwrap_or(1000);
    let trials = if ctx.quick { 2 } else { 7 };
    let fleet = SimFleet::start(&ctx.bins, &ctx.dir, ctx.threads)?;
    let names = names("fan", n);
    let url = fleet.hub.url.clone();
    let t = Instant::now();
    let nodes = fleet.enrol(&names, &url, 4).await?;
    let enrol_s = t.elapsed().as_secs_f64();
    fleet.connect(&nodes, 0.0).await;
    let connect_s = fleet
        .wait_connected(n as u64, Duration::from_secs(120))
        .await?
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut api = fleet.api().await?;
    let s = fleet.stats.clone();
    let mut all = Vec::new();
    let mut accepted = Vec::new();
    let mut delivered = Vec::new();
    // One unmeasured trial first: it creates the nodes' stores (opened on first use).
    for trial in 0..=trials {
        let mut ids = HashSet::new();
        let mut reqs = Vec::with_capacity(n);
        for name in &names {
            let (id, a) = fleet.op.request(name, "ops.ps", json!({}))?;
            ids.insert(id);
            reqs.push(a);
        }
        let (stored0, replied0) = (
            s.stored.load(Ordering::Relaxed),
            s.replies_acked.load(Ordering::Relaxed),
        );
        let t0 = now_us();
        api.send(&reqs).await?;
        let t_acc = now_us();
        fleet
            .wait_count(
                "replies",
                replied0 + n as u64,
                Duration::from_secs(30),
                |s| s.replies_acked.load(Ordering::Relaxed),
            )
            .await?;
        let t_rep = s.last_reply_acked_us.load(Ordering::Relaxed);
        if s.stored.load(Ordering::Relaxed) < stored0 + n as u64 {
            bail!("replies came back without every request stored");
        }
        let t_del = s.last_stored_us.load(Ordering::Relaxed);
        // The hub agrees: every one of them is `replied`.
        let replied: HashSet<String> = api
            .messages("replied", 1000)
            .await?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        let missing = ids.difference(&replied).count();
        if missing > 0 && n <= 1000 {
            bail!("{missing} of {n} messages are not `replied` at the hub");
        }
        if trial == 0 {
            continue;
        }
        all.push((t_rep - t0) as f64 / 1e3);
        accepted.push((t_acc - t0) as f64 / 1e3);
        delivered.push((t_del - t0) as f64 / 1e3);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The real CLI, once: signs, POSTs, then long-polls each id (one TLS connection each).
    let to = names.join(",");
    let pin = fleet.hub.cert_pin()?;
    let t = Instant::now();
    let out = Command::new(&ctx.bins.reeve)
        .args(["send", "--json", "--to", &to, "ops.ps"])
        .env("REEVE_HUB", &fleet.hub.url)
        .env("REEVE_TOKEN", &fleet.op.token)
        .env("REEVE_HUB_CERT", &pin)
        .env("REEVE_KEY", &fleet.op.key_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    let cli_ms = ms(t.elapsed());
    let cli_ok = out.status.success();
    let all_s = summary(&all);
    let mut notes = vec![format!(
        "{n} simulated nodes (real protocol and stores, see crates/fleetbench/src/sim.rs): {n} reeve agent processes do not fit on 2 cores"
    )];
    if !cli_ok {
        notes.push(format!(
            "reeve send to {n} nodes failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fleet
        .stats
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Outcome {
        scenario: "fan-out".into(),
        fsync_ms: fsync,
        fsync_shim: ctx.shim(),
        figures: vec![
            Figure::at_most(
                &format!("one command to {n} nodes, all replies back (median of {trials})"),
                all_s.p50 / 1e3,
                "s",
                2.0,
            ),
            Figure::info(
                "  of which: POST until all accepted (median)",
                summary(&accepted).p50 / 1e3,
                "s",
            ),
            Figure::info(
                "  all stored in the nodes' inboxes (median)",
                summary(&delivered).p50 / 1e3,
                "s",
            ),
            Figure::info(
                &format!("reeve send --to <{n} nodes> ops.ps, CLI wall time"),
                cli_ms / 1e3,
                "s",
            ),
        ],
        details: json!({
            "nodes": n,
            "all_replies_ms": all,
            "accepted_ms": accepted,
            "delivered_ms": delivered,
            "enrol_s": enrol_s,
            "connect_s": connect_s,
            "cli_ms": cli_ms,
            "cli_ok": cli_ok,
        }),
        notes,
        ..Default::default()
    })
}
