//! Round trip of `reeve send --to n1 exec -- true` through the hub on loopback, with a real
//! `reeve agent` as n1; side by side with a NATS request/reply round trip and an ansible
//! ad hoc command. For reeve: the whole CLI invocation (process start, three TLS
//! connections: health, POST, long-poll GET) and the API-level round trip over one
//! persistent HTTPS connection (sign, POST, GET with `?wait`), with the hub's own
//! timestamps splitting the latter into accept → delivered → replied.

use super::Ctx;
use crate::fleet::{AgentProc, Api, HubProc};
use crate::report::{Figure, Outcome};
use crate::util::{fsync_latency, ms, summary};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One API round trip's parts, in ms.
struct ApiSample {
    total: f64,
    sign: f64,
    post: f64,
    wait: f64,
    hub_accept_to_delivered: f64,
    hub_delivered_to_replied: f64,
}

async fn api_round_trip(
    api: &mut Api,
    op: &crate::fleet::Operator,
    method: &str,
    args: Value,
) -> Result<ApiSample> {
    let t0 = Instant::now();
    let (id, auth) = op.request("n1", method, args)?;
    let t1 = Instant::now();
    api.send(&[auth]).await?;
    let t2 = Instant::now();
    let (status, row) = api
        .call("GET", &format!("/api/v1/messages/{id}?wait=20"), None)
        .await?;
    let t3 = Instant::now();
    if status != 200 || row["state"] != "replied" || row["reply"]["status"] != "ok" {
        bail!("{method} round trip did not succeed: {status} {row}");
    }
    let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    Ok(ApiSample {
        total: ms(t3 - t0),
        sign: ms(t1 - t0),
        post: ms(t2 - t1),
        wait: ms(t3 - t2),
        hub_accept_to_delivered: f("delivered_ms") - f("created_ms"),
        hub_delivered_to_replied: f("replied_ms") - f("delivered_ms"),
    })
}

fn api_details(s: &[ApiSample]) -> Value {
    let col = |f: fn(&ApiSample) -> f64| summary(&s.iter().map(f).collect::<Vec<_>>());
    json!({
        "total_ms": col(|x| x.total),
        "sign_ms": col(|x| x.sign),
        "post_until_accepted_ms": col(|x| x.post),
        "get_wait_until_replied_ms": col(|x| x.wait),
        "hub_created_to_delivered_ms": col(|x| x.hub_accept_to_delivered),
        "hub_delivered_to_replied_ms": col(|x| x.hub_delivered_to_replied),
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let fsync = fsync_latency(&ctx.dir, 200)?;
    let mut notes = Vec::new();
    let hub = HubProc::start(&ctx.bins, &ctx.dir, None)?;
    let op = hub.operator(&ctx.bins, "bench")?;
    let agent = AgentProc::start(
        &ctx.bins,
        &hub,
        &ctx.dir.join("n1"),
        "n1",
        &hub.url,
        Some(&op),
    )?;
    let mut api = Api::connect(&hub.url, Some(&op.token)).await?;
    if let Err(e) = api.wait_online("n1", Duration::from_secs(30)).await {
        bail!("{e:#}: {}", agent.log());
    }
    // Let the agent's first messages (hello, events) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. The CLI, as a user runs it.
    let n_cli = ctx.size(20, 200);
    let pin = hub.cert_pin()?;
    let mut cli = Vec::new();
    for i in 0..n_cli + 3 {
        let t = Instant::now();
        let out = Command::new(&ctx.bins.reeve)
            .args(["send", "--to", "n1", "exec", "--", "true"])
            .env("REEVE_HUB", &hub.url)
            .env("REEVE_TOKEN", &op.token)
            .env("REEVE_HUB_CERT", &pin)
            .env("REEVE_KEY", &op.key_file)
            .stdin(Stdio::null())
            .output()
            .context("reeve send")?;
        let d = ms(t.elapsed());
        if !out.status.success() {
            bail!(
                "reeve send failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i >= 3 {
            cli.push(d);
        }
    }
    // The CLI's fixed cost: process start and argument parsing alone.
    let mut help = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let _ = Command::new(&ctx.bins.reeve)
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        help.push(ms(t.elapsed()));
    }

    // 2. The API, one persistent HTTPS connection.
    let n_api = ctx.size(200, 1000);
    let mut exec = Vec::new();
    for i in 0..n_api + 10 {
        let s = api_round_trip(&mut api, &op, "exec", json!({"argv": ["true"]})).await?;
        if i >= 10 {
            exec.push(s);
        }
    }
    let mut ps = Vec::new();
    for i in 0..n_api + 10 {
        let s = api_round_trip(&mut api, &op, "ops.ps", json!({})).await?;
        if i >= 10 {
            ps.push(s);
        }
    }
    drop(agent);
    drop(hub);

    // 3. NATS request/reply through a nats-server of our own.
    let n_nats = ctx.size(2000, 10000);
    let (nats, nats_version) = match crate::nats::Server::start(&ctx.nats_server).await {
        Ok(server) => {
            let v = server.version.clone();
            (crate::nats::round_trips(server.port, 200, n_nats).await?, v)
        }
        Err(e) => {
            notes.push(format!("NATS skipped: {e:#}"));
            (Vec::new(), String::new())
        }
    };

    // 4. ansible ad hoc, connection=local.
    let mut ansible = Vec::new();
    let mut ansible_version = String::new();
    if let Some(bin) = &ctx.ansible {
        let home = ctx.dir.join("ansible-home");
        std::fs::create_dir_all(&home)?;
        let python = bin.with_file_name("python3");
        ansible_version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let n = ctx.size(3, 20);
        for i in 0..n + 1 {
            let t = Instant::now();
            let out = Command::new(bin)
                .args([
                    "localhost",
                    "-i",
                    "localhost,",
                    "-c",
                    "local",
                    "-m",
                    "command",
                    "-a",
                    "true",
                ])
                .arg("-e")
                .arg(format!("ansible_python_interpreter={}", python.display()))
                .env("ANSIBLE_HOME", &home)
                .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
                .env("ANSIBLE_NOCOLOR", "1")
                .stdin(Stdio::null())
                .output()
                .context("ansible")?;
            let d = ms(t.elapsed());
            if !out.status.success() {
                notes.push(format!(
                    "ansible failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
                break;
            }
            if i >= 1 {
                ansible.push(d);
            }
        }
    } else {
        notes.push(
            "ansible skipped: not installed (bench/fleet installs ansible-core into a venv)".into(),
        );
    }

    let cli_s = summary(&cli);
    let exec_total = summary(&exec.iter().map(|s| s.total).collect::<Vec<_>>());
    let ps_total = summary(&ps.iter().map(|s| s.total).collect::<Vec<_>>());
    let nats_s = summary(&nats);
    let ansible_s = summary(&ansible);
    let mut figures = vec![
        Figure::at_most(
            "reeve send exec true, CLI (process + 1 TLS connection), p50",
            cli_s.p50,
            "ms",
            5.0,
        ),
        Figure::info("reeve send exec true, CLI, p99", cli_s.p99, "ms"),
        Figure::at_most(
            "exec true via API (sign + POST + GET ?wait, 1 HTTPS conn), p50",
            exec_total.p50,
            "ms",
            5.0,
        ),
        Figure::info("exec true via API, p99", exec_total.p99, "ms"),
        Figure::info(
            "ops.ps via API (no process spawned), p50",
            ps_total.p50,
            "ms",
        ),
    ];
    if !nats.is_empty() {
        figures.push(Figure::info("NATS request/reply, p50", nats_s.p50, "ms"));
        figures.push(Figure::info("NATS request/reply, p99", nats_s.p99, "ms"));
    }
    if !ansible.is_empty() {
        figures.push(Figure::info(
            "ansible localhost -c local -m command -a true, p50",
            ansible_s.p50,
            "ms",
        ));
    }
    Ok(Outcome {
        scenario: "roundtrip".into(),
        fsync_ms: fsync,
        fsync_shim: ctx.shim(),
        figures,
        details: json!({
            "cli_ms": cli_s,
            "cli_process_start_ms": summary(&help),
            "api_exec": api_details(&exec),
            "api_ops_ps": api_details(&ps),
            "nats_ms": nats_s,
            "nats_server": nats_version,
            "ansible_ms": ansible_s,
            "ansible_version": ansible_version,
        }),
        notes,
        ..Default::default()
    })
}
