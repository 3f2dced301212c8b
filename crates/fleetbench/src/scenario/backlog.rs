//! Backlog: a node is offline while messages queue for it at the hub (256 bytes of data
//! each, numbered in `args.i`); then it connects, and the hub replays the queue. Measured:
//! delivered/s (stored in the node's inbox and acknowledged), order (stream positions and
//! `args.i` both strictly consecutive), retransmissions; once on loopback and once
//! through a proxy that delays each direction by 300 ms (600 ms round trip). The node is
//! simulated and executes what it receives, replying like an agent.

use super::{Ctx, payload_256};
use crate::proxy;
use crate::report::{Figure, Outcome};
use crate::simfleet::{SimFleet, names};
use crate::util::{cpu_seconds, fsync_latency, now_us};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Phase {
    finished: bool,
    stored: u64,
    tail_rate: f64,
    timeline: Vec<u64>,
    messages: usize,
    queue_per_s: f64,
    delivered_per_s: f64,
    delivered_per_s_steady: f64,
    replied_by_then: u64,
    retransmitted: u64,
    out_of_order: u64,
    connect_to_first_ms: f64,
    hub_cpu: f64,
    seconds: f64,
}

impl Phase {
    fn json(&self) -> Value {
        json!({
            "finished": self.finished,
            "delivered": self.stored,
            "delivered_per_s_last_5s": self.tail_rate,
            "delivered_each_second": self.timeline,
            "messages": self.messages,
            "queued_per_s": self.queue_per_s,
            "delivered_per_s_from_connect": self.delivered_per_s,
            "delivered_per_s_first_to_last": self.delivered_per_s_steady,
            "replies_acked_when_all_delivered": self.replied_by_then,
            "retransmissions_received": self.retransmitted,
            "out_of_order": self.out_of_order,
            "connect_to_first_delivery_ms": self.connect_to_first_ms,
            "hub_cpu_cores": self.hub_cpu,
            "seconds": self.seconds,
        })
    }
}

async fn phase(
    ctx: &Ctx,
    dir: &std::path::Path,
    delay: Duration,
    m: usize,
    budget: Duration,
) -> Result<Phase> {
    let fleet = SimFleet::start(&ctx.bins, dir, ctx.threads)?;
    let ppool = crate::pool::Pool::new(1, "proxy")?;
    let proxy = proxy::start_on(&ppool, fleet.hub.addr, delay).await?;
    let url = if delay.is_zero() {
        fleet.hub.url.clone()
    } else {
        proxy.url()
    };
    let name = names("backlog", 1);
    let nodes = fleet.enrol(&name, &url, 1).await?;
    // Queue while the node has never connected: one producer, in order.
    let payload = payload_256();
    let mut api = fleet.api().await?;
    let t = Instant::now();
    let mut i = 0u64;
    while (i as usize) < m {
        let mut batch = Vec::with_capacity(1000);
        while batch.len() < 1000 && (i as usize) < m {
            i += 1;
            let (_, a) = fleet.op.request_with_data(
                &name[0],
                "ops.ps",
                json!({ "i": i }),
                payload.clone(),
            )?;
            batch.push(a);
        }
        api.send(&batch).await?;
    }
    let queue_per_s = m as f64 / t.elapsed().as_secs_f64();
    // The node comes online; delivery is followed for at most `budget`.
    let s = fleet.stats.clone();
    let cpu0 = cpu_seconds(fleet.hub.pid()).unwrap_or(0.0);
    let t0 = now_us();
    fleet.connect(&nodes, 0.0).await;
    let mut timeline = Vec::new();
    let started = Instant::now();
    let mut next_sample = Duration::from_secs(1);
    loop {
        let stored = s.stored.load(Ordering::Relaxed);
        if started.elapsed() >= next_sample {
            timeline.push(stored);
            next_sample += Duration::from_secs(1);
        }
        if stored >= m as u64 || started.elapsed() > budget {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = s.stored.load(Ordering::Relaxed);
    let finished = stored >= m as u64;
    let (first, last) = (
        s.first_stored_us.load(Ordering::Relaxed),
        s.last_stored_us.load(Ordering::Relaxed),
    );
    if first == 0 {
        bail!("nothing was delivered within {:.0} s", budget.as_secs_f64());
    }
    let secs = (last - t0) as f64 / 1e6;
    let hub_cpu = (cpu_seconds(fleet.hub.pid()).unwrap_or(0.0) - cpu0) / secs;
    let replied_by_then = s.replies_acked.load(Ordering::Relaxed);
    let out_of_order = s.out_of_order.load(Ordering::Relaxed);
    if out_of_order > 0 {
        bail!("{out_of_order} messages arrived or ran out of order");
    }
    // Rate over the last 5 s of the timeline (falls if the per-message cost grows with
    // the position in the stream).
    let tail_rate = match timeline.len() {
        l if l >= 6 => (timeline[l - 1] - timeline[l - 6]) as f64 / 5.0,
        _ => f64::NAN,
    };
    fleet.stats.stopping.store(true, Ordering::Relaxed);
    drop(proxy);
    Ok(Phase {
        finished,
        stored,
        tail_rate,
        timeline,
        messages: m,
        queue_per_s,
        delivered_per_s: stored as f64 / secs,
        delivered_per_s_steady: (stored as f64 - 1.0) / ((last - first).max(1) as f64 / 1e6),
        replied_by_then,
        retransmitted: s.duplicates.load(Ordering::Relaxed),
        out_of_order,
        connect_to_first_ms: (first - t0) as f64 / 1e3,
        hub_cpu,
        seconds: secs,
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let fsync = fsync_latency(&ctx.dir, 200)?;
    let m = ctx.size(3_000, 100_000);
    let budget = Duration::from_secs(if ctx.quick { 30 } else { 180 });
    let lo = phase(ctx, &ctx.dir.join("loopback"), Duration::ZERO, m, budget).await?;
    let wan = phase(
        ctx,
        &ctx.dir.join("wan"),
        Duration::from_millis(300),
        m,
        budget,
    )
    .await?;
    let label = |p: &Phase, what: &str| {
        if p.finished {
            format!("{m} queued, all delivered in order after reconnect, {what}")
        } else {
            format!(
                "{m} queued, {} delivered in order within {:.0} s (unfinished), {what}",
                p.stored,
                budget.as_secs_f64()
            )
        }
    };
    let mut notes = vec![
        "one simulated node (real protocol and stores) that executes and replies like an agent; order checked on stream positions and on the requests' own numbering".to_string(),
    ];
    for (p, what) in [(&lo, "loopback"), (&wan, "600 ms RTT")] {
        if !p.finished {
            notes.push(format!(
                "{what}: delivery did not finish within the {:.0} s budget; rate over the last 5 s: {:.0}/s; {} retransmitted envelopes arrived again",
                budget.as_secs_f64(),
                p.tail_rate,
                p.retransmitted
            ));
        }
    }
    Ok(Outcome {
        scenario: "backlog".into(),
        fsync_ms: fsync,
        fsync_shim: ctx.shim(),
        figures: vec![
            Figure::at_least(&label(&lo, "loopback"), lo.delivered_per_s, "msg/s", 5000.0),
            Figure::at_least(
                &label(&wan, "600 ms RTT proxy"),
                wan.delivered_per_s,
                "msg/s",
                1000.0,
            ),
            Figure::info(
                "retransmitted envelopes received again, loopback",
                lo.retransmitted as f64,
                "",
            ),
            Figure::info(
                "queued (accepted) while offline, one producer",
                lo.queue_per_s,
                "msg/s",
            ),
        ],
        details: json!({ "loopback": lo.json(), "rtt_600ms": wan.json() }),
        notes,
        ..Default::default()
    })
}
