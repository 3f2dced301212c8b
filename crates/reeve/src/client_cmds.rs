//! Client commands: they talk to the running agent over its control socket.

use crate::cli::{AgentSub, Command, ControlArgs};
use crate::format;
use anyhow::{Context, Result, bail};
use reeve_agent::client::{Client, segment};
use reeve_proto::api::{AgentInfo, LogLines, ReloadReport, ServiceState, ServiceStatus};
use reeve_proto::event::Event;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `reeve agent reload|info`.
pub async fn agent_sub(socket: &Path, sub: AgentSub) -> Result<ExitCode> {
    let c = Client::new(socket);
    match sub {
        AgentSub::Reload { json } => {
            let r: ReloadReport = c.post("/v1/reload").await?;
            if json {
                print_json(&r)?;
            } else {
                for (what, list) in [
                    ("added", &r.added),
                    ("changed", &r.changed),
                    ("removed", &r.removed),
                ] {
                    if !list.is_empty() {
                        println!("{what}: {}", list.join(", "));
                    }
                }
                println!("unchanged: {}", r.unchanged.len());
                for e in &r.errors {
                    eprintln!("invalid: {e}");
                }
            }
            Ok(if r.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        AgentSub::Update {
            version,
            force,
            trial_timeout,
            no_wait,
            json,
        } => {
            let req = reeve_agent::update::UpdateRequest {
                version,
                force,
                trial_timeout_ms: Some(trial_timeout.as_millis() as u64),
            };
            crate::update_cmd::update(&c, req, no_wait, json).await
        }
        AgentSub::ReexecBuddies { path, json } => {
            let body = match path {
                Some(p) => {
                    let p = std::fs::canonicalize(&p)
                        .with_context(|| format!("cannot find {}", p.display()))?;
                    serde_json::json!({"path": p})
                }
                None => serde_json::json!({}),
            };
            let r: serde_json::Value = c.post_json("/v1/buddies/reexec", &body).await?;
            let failed = r["failed"].as_array().map_or(0, Vec::len);
            if json {
                println!("{r}");
            } else {
                let done = r["done"].as_array().map_or(0, Vec::len);
                println!(
                    "{done} buddies now run {}",
                    r["path"].as_str().unwrap_or("?")
                );
                for f in r["failed"].as_array().into_iter().flatten() {
                    eprintln!(
                        "{}: {}",
                        f["service"].as_str().unwrap_or("?"),
                        f["error"].as_str().unwrap_or("?")
                    );
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AgentSub::Info { json } => {
            let i: AgentInfo = c.get("/v1/agent").await?;
            if json {
                print_json(&i)?;
            } else {
                println!("reeve agent {} (pid {})", i.version, i.pid);
                println!("data dir:     {}", i.data_dir);
                println!("services dir: {}", i.services_dir);
                println!(
                    "up:           {}",
                    format::age(format::now_ms().saturating_sub(i.started_ms))
                );
                if let Ok(u) = c
                    .get::<reeve_agent::update::UpdateStatus>("/v1/agent/update")
                    .await
                {
                    print_update_status(&u);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentSub::Leave { json } => {
            let r: serde_json::Value = c.post("/v1/node/leave").await?;
            let (node, state) = (
                r.get("node").and_then(|v| v.as_str()).unwrap_or("?"),
                r.get("state").and_then(|v| v.as_str()).unwrap_or("?"),
            );
            if json {
                println!("{r}");
            } else if state == "left" {
                println!(
                    "{node} left the fleet: the hub removed it and its key is deleted; \
                     services keep running (reeve agent join enrols it again)"
                );
            } else {
                println!(
                    "{node} is leaving: the hub has not confirmed yet (is it reachable?); \
                     the leave completes when it does"
                );
            }
            Ok(if state == "left" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        AgentSub::RotateKey { overlap, json } => {
            let body = serde_json::json!({"overlap_ms": overlap.as_millis() as u64});
            let r: serde_json::Value = c.post_json("/v1/node/rotate-key", &body).await?;
            let field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let rotated = field("state") == "rotated";
            if json {
                println!("{r}");
            } else if rotated {
                println!(
                    "{}: key rotated to {}; the hub accepts the old one for {} more",
                    field("node"),
                    field("fingerprint"),
                    humantime::format_duration(overlap)
                );
            } else {
                println!(
                    "{}: new key {} made; the hub has not recorded it yet (is it reachable?): \
                     the agent presents it at its next link",
                    field("node"),
                    field("fingerprint")
                );
            }
            Ok(if rotated {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        AgentSub::Init { .. } | AgentSub::Join { .. } => {
            bail!("internal: agent init and join are dispatched elsewhere")
        }
    }
}

/// Every other client command.
pub async fn run(socket: &Path, cmd: Command) -> Result<ExitCode> {
    let c = Client::new(socket);
    match cmd {
        Command::Ps { json } => {
            let list: Vec<ServiceStatus> = c.get("/v1/services").await?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no services (put *.toml files in the services directory, then `reeve agent reload`)"
                );
            } else {
                print!("{}", format::ps_table(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start(a) => control(&c, "start", a).await,
        Command::Stop(a) => control(&c, "stop", a).await,
        Command::Restart(a) => control(&c, "restart", a).await,
        Command::Reload(a) => control(&c, "reload", a).await,
        Command::Action { name, action, json } => {
            let s: ServiceStatus = c
                .post(&format!(
                    "/v1/services/{}/actions/{}",
                    segment(&name),
                    segment(&action)
                ))
                .await?;
            if json {
                print_json(&s)?;
            } else {
                println!("{name}: {action} done");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            name,
            follow,
            lines,
        } => {
            let path = format!("/v1/services/{}/logs?lines={lines}", segment(&name));
            if follow {
                let mut out = std::io::stdout();
                c.stream(&format!("{path}&follow=true"), |chunk| {
                    out.write_all(chunk).and_then(|_| out.flush()).is_ok()
                })
                .await?;
            } else {
                let l: LogLines = c.get(&path).await?;
                for line in l.lines {
                    println!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events {
            service,
            since,
            limit,
            follow,
            json,
        } => {
            let mut q = format!("limit={limit}");
            if let Some(s) = &service {
                q.push_str(&format!("&service={}", segment(s)));
            }
            if let Some(d) = since {
                q.push_str(&format!(
                    "&since_ms={}",
                    format::now_ms().saturating_sub(d.as_millis() as u64)
                ));
            }
            if follow {
                let mut buf = Vec::new();
                let mut out = std::io::stdout();
                c.stream(&format!("/v1/events/stream?{q}"), |chunk| {
                    buf.extend_from_slice(chunk);
                    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let text = if json {
                            String::from_utf8_lossy(&line).trim_end().to_owned()
                        } else {
                            match serde_json::from_slice::<Event>(&line) {
                                Ok(e) => format::event_line(&e),
                                Err(_) => continue,
                            }
                        };
                        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                            return false;
                        }
                    }
                    true
                })
                .await?;
            } else {
                let evs: Vec<Event> = c.get(&format!("/v1/events?{q}")).await?;
                if json {
                    print_json(&evs)?;
                } else {
                    for e in &evs {
                        println!("{}", format::event_line(e));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { interval } => crate::top::run(c, interval).await,
        Command::Agent(_)
        | Command::Module(_)
        | Command::State(_)
        | Command::Key(_)
        | Command::Hub(_)
        | Command::Dev(_)
        | Command::Send(_)
        | Command::Nodes { .. }
        | Command::Messages { .. }
        | Command::Errors { .. } => {
            bail!("internal: agent, module and hub commands are dispatched elsewhere")
        }
    }
}

async fn control(c: &Client, op: &str, a: ControlArgs) -> Result<ExitCode> {
    if a.all {
        if op != "start" && op != "stop" {
            bail!("--all works with start and stop only");
        }
        #[derive(serde::Deserialize, serde::Serialize)]
        struct AllReport {
            not_done: Vec<String>,
        }
        let r: AllReport = c.post(&format!("/v1/all/{op}")).await?;
        if a.json {
            print_json(&r)?;
        } else if r.not_done.is_empty() {
            println!("all services: {op} done");
        } else {
            for n in &r.not_done {
                eprintln!("not done: {n}");
            }
        }
        return Ok(if r.not_done.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let Some(name) = a.name else {
        bail!("name a service or pass --all")
    };
    let s: ServiceStatus = c
        .post(&format!(
            "/v1/services/{}/{op}?wait={}",
            segment(&name),
            !a.no_wait
        ))
        .await?;
    if a.json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    println!("{}: {}{pid}", s.name, s.state);
    let bad = !a.no_wait
        && match op {
            "stop" => s.state != ServiceState::Stopped,
            "start" | "restart" => matches!(s.state, ServiceState::Failed | ServiceState::Stopped),
            _ => false,
        };
    Ok(if bad {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The launcher lines of `reeve agent info`.
fn print_update_status(u: &reeve_agent::update::UpdateStatus) {
    if !u.launcher {
        println!("launcher:     none (self-update needs `reeve-buddy launch`)");
        return;
    }
    println!(
        "launcher:     yes{}",
        if u.on_trial {
            ", this agent is on trial"
        } else {
            ""
        }
    );
    if let Some(last) = u.state.as_ref().and_then(|s| s.last.as_ref()) {
        let when = format::age(format::now_ms().saturating_sub(last.at_ms));
        if last.committed {
            println!("last update:  to {} {when} ago", last.version);
        } else {
            println!(
                "last update:  to {} switched back {when} ago: {}",
                last.version, last.reason
            );
        }
    }
}
