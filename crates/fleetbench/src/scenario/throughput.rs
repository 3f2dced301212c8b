//! Durable delivery of 256-byte messages, acknowledged end to end: operators' requests
//! (pre-signed, `ops.ps` with 256 bytes of `data`) are POSTed in batches by several
//! producers over persistent HTTPS connections; the hub accepts each into its outbox and
//! pushes it to one of the simulated nodes, which stores it in its SQLite inbox and
//! acknowledges. Two passes over the same fleet: nodes only store and acknowledge
//! (delivered/s), then nodes also execute and reply (delivered/s and replied/s, a reply
//! counting when the hub acknowledged it, i.e. stored and applied it). Run once as is
//! and once with the fsync shim preloaded (hub and nodes).

use super::{Ctx, payload_256};
use crate::report::{Figure, Outcome};
use crate::simfleet::{SimFleet, names};
use crate::util::{cpu_seconds, fsync_latency, now_us};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One pass's measurements.
struct Pass {
    messages: usize,
    accepted_per_s: f64,
    delivered_per_s: f64,
    hub_delivered_per_s: f64,
    replied_per_s: Option<f64>,
    sign_per_s: f64,
    hub_cpu: f64,
    bench_cpu: f64,
    seconds: f64,
}

impl Pass {
    fn json(&self) -> Value {
        json!({
            "messages": self.messages,
            "accepted_per_s": self.accepted_per_s,
            "delivered_per_s": self.delivered_per_s,
            "hub_marked_delivered_per_s": self.hub_delivered_per_s,
            "replied_per_s": self.replied_per_s,
            "operator_signing_per_s": self.sign_per_s,
            "hub_cpu_cores": self.hub_cpu,
            "bench_cpu_cores": self.bench_cpu,
            "seconds": self.seconds,
        })
    }
}

async fn pass(
    fleet: &SimFleet,
    names: &[String],
    m: usize,
    producers: usize,
    batch: usize,
    replies: bool,
) -> Result<Pass> {
    fleet.execute.store(replies, Ordering::Relaxed);
    let payload = payload_256();
    let t_sign = std::time::Instant::now();
    let mut reqs = Vec::with_capacity(m);
    for k in 0..m {
        let (_, a) = fleet.op.request_with_data(
            &names[k % names.len()],
            "ops.ps",
            json!({}),
            payload.clone(),
        )?;
        reqs.push(a);
    }
    let sign_per_s = m as f64 / t_sign.elapsed().as_secs_f64();
    let bodies: VecDeque<Vec<u8>> = reqs
        .chunks(batch)
        .map(|c| serde_json::to_vec(&json!({ "requests": c })))
        .collect::<Result<_, _>>()?;
    drop(reqs);
    let queue = Arc::new(Mutex::new(bodies));
    let mut apis = Vec::new();
    for _ in 0..producers {
        apis.push(fleet.api().await?);
    }
    let s = &fleet.stats;
    let (stored0, replied0) = (
        s.stored.load(Ordering::Relaxed),
        s.replies_acked.load(Ordering::Relaxed),
    );
    let hub_pid = fleet.hub.pid();
    let (hcpu0, bcpu0) = (
        cpu_seconds(hub_pid).unwrap_or(0.0),
        cpu_seconds(std::process::id()).unwrap_or(0.0),
    );
    let t0 = now_us();
    let mut tasks = Vec::new();
    for mut api in apis {
        let q = queue.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let body = q.lock().ok().and_then(|mut q| q.pop_front());
                let Some(body) = body else { break };
                let (status, answer) = api.raw("POST", "/api/v1/messages", body).await?;
                if status != 202 {
                    bail!("POST: {status} {}", String::from_utf8_lossy(&answer));
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("producer")??;
    }
    let t_acc = now_us();
    fleet
        .wait_count(
            "delivered",
            stored0 + m as u64,
            Duration::from_secs(60),
            |s| s.stored.load(Ordering::Relaxed),
        )
        .await?;
    let t_del = s.last_stored_us.load(Ordering::Relaxed);
    let mut t_end = t_del;
    let replied_per_s = if replies {
        fleet
            .wait_count(
                "replied",
                replied0 + m as u64,
                Duration::from_secs(60),
                |s| s.replies_acked.load(Ordering::Relaxed),
            )
            .await?;
        t_end = s.last_reply_acked_us.load(Ordering::Relaxed);
        Some(m as f64 / ((t_end - t0) as f64 / 1e6))
    } else {
        None
    };
    let secs = (t_end.max(t_acc) - t0) as f64 / 1e6;
    let hub_cpu = (cpu_seconds(hub_pid).unwrap_or(0.0) - hcpu0) / secs;
    let bench_cpu = (cpu_seconds(std::process::id()).unwrap_or(0.0) - bcpu0) / secs;
    // The hub's own record catches up: nothing is left merely `accepted` (it marks a
    // message `delivered` when it has processed the node's acknowledgement). Polled
    // sparingly: the query scans the hub's message table.
    let mut api = fleet.api().await?;
    let mut last = std::time::Instant::now();
    let mut left = usize::MAX;
    loop {
        let n = api.messages("accepted", 1000).await?.len();
        if n == 0 {
            break;
        }
        if n < left {
            (left, last) = (n, std::time::Instant::now());
        } else if last.elapsed() > Duration::from_secs(60) {
            bail!("{n} messages still only `accepted` at the hub, no progress for 60 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t_hub = now_us();
    Ok(Pass {
        hub_delivered_per_s: m as f64 / ((t_hub - t0) as f64 / 1e6),
        messages: m,
        accepted_per_s: m as f64 / ((t_acc - t0) as f64 / 1e6),
        delivered_per_s: m as f64 / ((t_del - t0) as f64 / 1e6),
        replied_per_s,
        sign_per_s,
        hub_cpu,
        bench_cpu,
        seconds: secs,
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let shim = ctx.shim();
    let fsync = fsync_latency(&ctx.dir, 200)?;
    let n_nodes = 32;
    let producers = 16;
    let batch = 200;
    let m = ctx.size(3_000, 30_000);
    let fleet = SimFleet::start(&ctx.bins, &ctx.dir, ctx.threads)?;
    let names = names("tp", n_nodes);
    let url = fleet.hub.url.clone();
    let nodes = fleet.enrol(&names, &url, 4).await?;
    fleet.connect(&nodes, 0.0).await;
    fleet
        .wait_connected(n_nodes as u64, Duration::from_secs(60))
        .await?;
    // A short warm-up pass (connections, stores, caches).
    pass(&fleet, &names, 500.min(m), producers, batch, true).await?;
    let a = pass(&fleet, &names, m, producers, batch, false).await?;
    let b = pass(&fleet, &names, m, producers, batch, true).await?;
    let (target, name) = if shim {
        (5000.0, "throughput (fsync +2 ms)")
    } else {
        (20000.0, "throughput")
    };
    let errors = fleet.stats.errors.load(Ordering::Relaxed);
    let mut notes = vec![format!(
        "{n_nodes} simulated nodes, {producers} producers posting batches of {batch} pre-signed requests over persistent HTTPS connections; hub and nodes share the machine's 2 cores"
    )];
    if errors > 0 {
        notes.push(format!("{errors} node errors"));
    }
    fleet
        .stats
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Outcome {
        scenario: name.into(),
        fsync_ms: fsync,
        fsync_shim: shim,
        figures: vec![
            Figure::at_least(
                "delivered/s, nodes store + ack only",
                a.delivered_per_s,
                "msg/s",
                target,
            ),
            Figure::at_least(
                "delivered/s, nodes also execute + reply",
                b.delivered_per_s,
                "msg/s",
                target,
            ),
            Figure::info(
                "replied/s (reply stored at the hub)",
                b.replied_per_s.unwrap_or(0.0),
                "msg/s",
            ),
            Figure::info(
                "accepted/s (POST answered, durable in the hub's outbox)",
                a.accepted_per_s,
                "msg/s",
            ),
            Figure::info(
                "hub CPU during the store-only pass",
                a.hub_cpu * 100.0,
                "% of a core",
            ),
        ],
        details: json!({
            "nodes": n_nodes,
            "producers": producers,
            "batch": batch,
            "store_only": a.json(),
            "with_replies": b.json(),
        }),
        notes,
        ..Default::default()
    })
}
