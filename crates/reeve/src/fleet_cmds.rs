//! Commands that talk to the hub's API as an operator: `reeve send`, `nodes`, `messages`,
//! `errors`. The hub URL, API token and signing key come from flags or `REEVE_HUB`,
//! `REEVE_TOKEN`, `REEVE_KEY`; the hub's certificate is pinned by `REEVE_HUB_CERT` or
//! trusted on first use (`hub_trust.rs`).

use crate::hub_trust::HubApi;
use anyhow::{Context, Result, bail};
use clap::Args;
use reeve_agent::node::cert_pin::CertFingerprint;
use reeve_agent::node::transport::Call;
use reeve_delivery::envelope::{Request, authorize};
use reeve_hub::api::settled;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the hub is and who the operator is.
#[derive(Args, Debug, Clone)]
pub struct HubConn {
    /// The hub's URL.
    #[arg(
        long,
        env = "REEVE_HUB",
        default_value = "https://127.0.0.1:7443",
        global = true
    )]
    pub hub: String,
    /// The operator's API token (from `reeve hub operator add`).
    #[arg(long, env = "REEVE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The SHA-256 fingerprint of the hub's TLS certificate (`reeve hub cert-fingerprint`
    /// prints it): nothing is sent unless the hub presents that certificate. Without it the
    /// certificate is trusted on first use and recorded in $XDG_CONFIG_HOME/reeve/known_hubs
    /// (~/.config/reeve/known_hubs); a hub presenting another one later is refused.
    #[arg(long, env = "REEVE_HUB_CERT", value_name = "SHA256", global = true)]
    pub hub_cert: Option<CertFingerprint>,
    /// HTTP CONNECT proxy to reach the hub through.
    #[arg(long, env = "REEVE_HUB_PROXY", global = true)]
    pub proxy: Option<String>,
    /// The connection, opened at the first call and kept for the next.
    #[arg(skip)]
    api: Arc<tokio::sync::Mutex<Option<HubApi>>>,
}

impl HubConn {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let token = self.token.as_deref().context(
            "no API token: pass --token or set REEVE_TOKEN (reeve hub operator add makes one)",
        )?;
        self.call_as(method, path, body, Some(token)).await
    }

    async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
    ) -> Result<Value> {
        let call = Call {
            method,
            path,
            body,
            bearer,
        };
        let mut api = self.api.lock().await;
        if api.is_none() {
            *api = Some(HubApi::new(
                &self.hub,
                self.proxy.as_deref(),
                self.hub_cert,
            )?);
        }
        let conn = api.as_mut().context("internal: no connection to the hub")?;
        let (status, v) = conn.call(call).await?;
        if !(200..300).contains(&status) {
            let why = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            bail!("the hub answered {status}: {why}");
        }
        Ok(v)
    }
}

/// `reeve send`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  reeve send --to n1 exec -- uname -a
  reeve send --to n1,n2 service.restart web
  reeve send --to n1 ops.ps --json
  reeve send --to n1 --unordered exec -- long-job.sh
  reeve send --to n1 --method-timeout 1h exec.stream -- apt-get -y upgrade
  reeve send --to n1 events.query --args '{\"limit\": 10}'")]
pub struct SendArgs {
    #[command(flatten)]
    pub conn: HubConn,
    /// Target node(s), comma-separated: one message per node.
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Your secret key file (NAME.key from `reeve key create`): signs the request.
    #[arg(long, env = "REEVE_KEY", value_name = "FILE")]
    pub key: PathBuf,
    /// Your operator name [default: the key file's name]
    #[arg(long = "as", env = "REEVE_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
    /// The method's arguments as JSON (instead of the words after the method).
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// The message is dropped (dead letter) if not delivered within this.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Time limit of the method on the node.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub method_timeout: Option<Duration>,
    /// How long to wait for the replies.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Print the message ids and return (fetch results with `reeve messages show ID`).
    #[arg(long)]
    pub no_wait: bool,
    /// Run it as soon as it arrives, beside whatever else runs on the node, instead of
    /// after the messages sent before it (Steward's REQn…; a node runs at most 4 at once
    /// per sender). Control methods (ops.ps, service.status, …) always take the priority
    /// lane.
    #[arg(long)]
    pub unordered: bool,
    /// tail: keep sending what is appended to the file until --method-timeout (default
    /// 60 s), shown as it comes.
    #[arg(long)]
    pub follow: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The method: exec, exec.stream (output shown as it comes), service.start|stop|
    /// restart|reload|status, ops.ps, events.query, …
    pub method: String,
    /// The method's words: exec ARGV…, service.* NAME, tail FILE, http.get URL,
    /// agent.update VERSION.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

fn method_args(a: &SendArgs) -> Result<Value> {
    if let Some(j) = &a.args {
        return serde_json::from_str(j).context("--args is not valid JSON");
    }
    let w = &a.words;
    Ok(match a.method.as_str() {
        "exec" | "exec.stream" => {
            if w.is_empty() {
                bail!("exec needs a command: reeve send --to NODE exec -- ARGV…");
            }
            json!({ "argv": w })
        }
        "service.action" if w.len() == 2 => json!({ "name": w[0], "action": w[1] }),
        m if m.starts_with("service.") => match w.as_slice() {
            [name] => json!({ "name": name }),
            _ => bail!("{m} needs one service name"),
        },
        "tail" if a.follow => {
            json!({ "path": w.first().context("tail needs a file")?, "follow": true })
        }
        "tail" => json!({ "path": w.first().context("tail needs a file")? }),
        "http.get" => json!({ "url": w.first().context("http.get needs a URL")? }),
        "agent.update" => json!({ "version": w.first().context("agent.update needs a version")? }),
        _ if w.is_empty() => json!({}),
        m => bail!("{m}: give its arguments with --args JSON"),
    })
}

/// Runs `reeve send`.
pub async fn send(a: SendArgs) -> Result<ExitCode> {
    let key = crate::key_cmds::read_secret(&a.key)?;
    let from = match &a.operator {
        Some(n) => n.clone(),
        None => a
            .key
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot tell the operator's name: pass --as NAME")?,
    };
    let args = method_args(&a)?;
    // Expiry is judged on hub time, so a skewed laptop clock is harmless: the hub's clock,
    // as the last command saw it, or asked now.
    let hub_now = match crate::hub_clock::now(&a.conn.hub) {
        Some(t) => t,
        None => a
            .conn
            .call_as("GET", "/api/v1/health", None, None)
            .await?
            .get("hub_time_ms")
            .and_then(Value::as_u64)
            .context("the hub did not say its time")?,
    };
    let mut requests = Vec::new();
    let mut ids = Vec::new();
    for node in &a.to {
        let mut r = Request::new(
            &from,
            node,
            &a.method,
            args.clone(),
            hub_now.saturating_add(a.ttl.as_millis() as u64),
        );
        r.method_timeout_ms = a.method_timeout.map(|d| d.as_millis() as u64);
        r.unordered = a.unordered;
        ids.push((node.clone(), r.id.clone()));
        requests.push(authorize(&r, &key)?);
    }
    // exec.stream: the output as it comes, then the rest of the result; anything else: the
    // hub waits for the replies before it answers the POST (one call instead of two).
    let streams = a.method == "exec.stream" || (a.method == "tail" && a.follow);
    let wait_in_post = (!a.no_wait && (a.json || !streams))
        .then(|| a.wait.as_secs().min(30))
        .filter(|s| *s > 0);
    let path = match wait_in_post {
        Some(s) => format!("/api/v1/messages?wait={s}"),
        None => "/api/v1/messages".to_string(),
    };
    let answer = a
        .conn
        .call("POST", &path, Some(&json!({ "requests": requests })))
        .await?;
    if let Some(t) = answer.get("hub_time_ms").and_then(Value::as_u64) {
        crate::hub_clock::learn(&a.conn.hub, t);
    }
    if a.no_wait {
        for (node, id) in &ids {
            if a.json {
                println!("{}", json!({"node": node, "id": id, "state": "accepted"}));
            } else {
                println!("{id}\t{node}\taccepted");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut answered: std::collections::HashMap<String, Value> = answer
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|row| Some((row.get("id")?.as_str()?.to_string(), row.clone())))
        .collect();
    let deadline = Instant::now() + a.wait;
    let mut ok = true;
    for (node, id) in &ids {
        let printed = if streams && !a.json {
            follow_output(&a.conn, id, deadline).await?
        } else {
            (0, 0)
        };
        let mut row = loop {
            if let Some(row) = answered.remove(id.as_str()) {
                let state = row.get("state").and_then(Value::as_str).unwrap_or("");
                if settled(state) || Instant::now() >= deadline {
                    break row;
                }
            }
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .clamp(0, 30);
            let row = a
                .conn
                .call("GET", &format!("/api/v1/messages/{id}?wait={left}"), None)
                .await?;
            let state = row.get("state").and_then(Value::as_str).unwrap_or("");
            if settled(state) || Instant::now() >= deadline {
                break row;
            }
        };
        skip_printed(&mut row, printed);
        ok &= print_result(node, &row, a.json);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints an `exec.stream` message's output as the node streams it, until the message is
/// settled or `deadline`; returns the bytes printed of stdout and stderr.
async fn follow_output(conn: &HubConn, id: &str, deadline: Instant) -> Result<(usize, usize)> {
    use std::io::Write;
    let (mut after, mut printed) = (0u64, (0usize, 0usize));
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .clamp(0, 30);
        let page = conn
            .call(
                "GET",
                &format!("/api/v1/messages/{id}/output?after={after}&wait={left}"),
                None,
            )
            .await?;
        for c in page["chunks"].as_array().into_iter().flatten() {
            let (out, err) = (
                c["stdout"].as_str().unwrap_or(""),
                c["stderr"].as_str().unwrap_or(""),
            );
            print!("{out}");
            eprint!("{err}");
            printed.0 += out.len();
            printed.1 += err.len();
            after = c["n"].as_u64().unwrap_or(after);
        }
        let _ = std::io::stdout().flush();
        let state = page["state"].as_str().unwrap_or("");
        if settled(state) || Instant::now() >= deadline {
            return Ok(printed);
        }
    }
}

/// Drops from a reply's output what [`follow_output`] printed already.
fn skip_printed(row: &mut Value, (out, err): (usize, usize)) {
    let Some(reply) = row.get_mut("reply").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, n) in [("stdout", out), ("stderr", err)] {
        if let Some(text) = reply.get(k).and_then(Value::as_str) {
            let rest = text.get(n..).unwrap_or("").to_string();
            reply.insert(k.into(), Value::String(rest));
        }
    }
}

/// Prints one message's outcome; false when it did not succeed.
fn print_result(node: &str, row: &Value, as_json: bool) -> bool {
    let state = row.get("state").and_then(Value::as_str).unwrap_or("?");
    let reply = row.get("reply").cloned().unwrap_or(Value::Null);
    let status = reply.get("status").and_then(Value::as_str).unwrap_or("");
    let code = reply.get("exit_code").and_then(Value::as_i64);
    let ok = state == "replied" && status == "ok" && code.is_none_or(|c| c == 0);
    if as_json {
        println!("{row}");
        return ok;
    }
    let id = row.get("id").and_then(Value::as_str).unwrap_or("?");
    if state != "replied" {
        eprintln!("{node}: {state} (no reply yet; reeve messages show {id})");
        return false;
    }
    if let Some(out) = reply.get("stdout").and_then(Value::as_str) {
        print!("{out}");
    }
    if let Some(err) = reply.get("stderr").and_then(Value::as_str) {
        eprint!("{err}");
    }
    // http.get: the body, as curl would print it.
    if let Some(body) = reply.get("body").and_then(Value::as_str) {
        print!("{body}");
        if reply.get("truncated") == Some(&Value::Bool(true)) {
            eprintln!("{node}: (body cut at {} bytes)", body.len());
        }
        return match status {
            "ok" => ok,
            _ => {
                let why = reply.get("error").and_then(Value::as_str).unwrap_or("");
                eprintln!("{node}: {status}: {why}");
                false
            }
        };
    }
    match (status, code) {
        ("ok", Some(0)) => {}
        ("ok", Some(c)) => eprintln!("{node}: exit code {c}"),
        ("ok", None) => {
            let mut body = reply.clone();
            if let Some(o) = body.as_object_mut() {
                o.remove("status");
            }
            println!(
                "{node}: {}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        (s, _) => {
            let why = reply.get("error").and_then(Value::as_str).unwrap_or("");
            eprintln!("{node}: {s}: {why}");
        }
    }
    ok
}

/// Runs `reeve nodes`.
pub async fn nodes(conn: &HubConn, search: Option<String>, as_json: bool) -> Result<ExitCode> {
    let path = match search {
        Some(s) => format!("/api/v1/nodes?limit=1000&search={}", urlencode(&s)),
        None => "/api/v1/nodes?limit=1000".into(),
    };
    let list = conn.call("GET", &path, None).await?;
    if as_json {
        println!("{list}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<8} {:<20} SERVICES", "NODE", "STATE", "LAST SEEN");
    let now = crate::format::now_ms();
    for n in list.as_array().into_iter().flatten() {
        let online = n.get("online").and_then(Value::as_bool).unwrap_or(false);
        let seen = n
            .get("last_seen_ms")
            .and_then(Value::as_u64)
            .map_or("never".into(), |t| {
                format!("{} ago", crate::format::age(now.saturating_sub(t)))
            });
        let facts = n.get("facts").cloned().unwrap_or(Value::Null);
        let svc = match (
            facts.get("services_running").and_then(Value::as_u64),
            facts.get("services").and_then(Value::as_u64),
        ) {
            (Some(r), Some(t)) => format!("{r}/{t} running"),
            _ => "-".into(),
        };
        println!(
            "{:<24} {:<8} {:<20} {}",
            n.get("name").and_then(Value::as_str).unwrap_or("?"),
            if online { "online" } else { "offline" },
            if online { "now".into() } else { seen },
            svc
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `reeve nodes remove NAME`.
pub async fn remove_node(conn: &HubConn, name: &str, as_json: bool) -> Result<ExitCode> {
    let answer = conn
        .call(
            "DELETE",
            &format!("/api/v1/nodes/{}", urlencode(name)),
            None,
        )
        .await?;
    if as_json {
        println!("{answer}");
    } else {
        println!(
            "removed {name}: its key can no longer connect; {} waiting messages purged",
            answer.get("purged").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `reeve messages [show ID]`.
pub async fn messages(
    conn: &HubConn,
    show: Option<String>,
    state: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    if let Some(id) = show {
        let row = conn
            .call("GET", &format!("/api/v1/messages/{}", urlencode(&id)), None)
            .await?;
        let node = row
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        return Ok(if print_result(&node, &row, as_json) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let path = match state {
        Some(s) => format!("/api/v1/messages?state={s}"),
        None => "/api/v1/messages".into(),
    };
    let list = conn.call("GET", &path, None).await?;
    if as_json {
        println!("{list}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<16} {:<18} {:<10} {:<10} FROM",
        "ID", "NODE", "METHOD", "LANE", "STATE"
    );
    for m in list.as_array().into_iter().flatten() {
        let f = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        println!(
            "{:<28} {:<16} {:<18} {:<10} {:<10} {}",
            f("id"),
            f("node"),
            f("method"),
            f("lane"),
            f("state"),
            f("sender")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `reeve messages purge`.
pub async fn purge(
    conn: &HubConn,
    ids: Vec<String>,
    older_than: Option<Duration>,
    node: Option<String>,
    as_json: bool,
) -> Result<ExitCode> {
    if ids.is_empty() && older_than.is_none() {
        anyhow::bail!("say what to purge: --id ID (repeatable) or --older-than AGE");
    }
    if node.is_some() && older_than.is_none() {
        anyhow::bail!("--node narrows --older-than; with --id, name the messages themselves");
    }
    let mut body = serde_json::json!({ "ids": ids });
    if let Some(age) = older_than {
        body["older_than_ms"] = (age.as_millis() as u64).into();
    }
    if let Some(n) = node {
        body["node"] = n.into();
    }
    let answer = conn
        .call("POST", "/api/v1/messages/purge", Some(&body))
        .await?;
    let list = |k: &str| -> Vec<String> {
        answer
            .get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let (purged, not_waiting) = (list("purged"), list("not_waiting"));
    if as_json {
        println!("{answer}");
    } else {
        for id in &purged {
            println!("purged {id}");
        }
        for id in &not_waiting {
            eprintln!(
                "not purged {id}: not waiting for delivery (unknown, delivered, expired or purged already)"
            );
        }
        if purged.is_empty() && not_waiting.is_empty() {
            println!("nothing to purge");
        }
    }
    Ok(if not_waiting.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `reeve errors`.
pub async fn errors(conn: &HubConn, as_json: bool) -> Result<ExitCode> {
    let list = conn.call("GET", "/api/v1/errors", None).await?;
    if as_json {
        println!("{list}");
        return Ok(ExitCode::SUCCESS);
    }
    for e in list.as_array().into_iter().flatten() {
        let ts = e
            .get("at_ms")
            .and_then(Value::as_u64)
            .map(crate::format::timestamp)
            .unwrap_or_default();
        println!(
            "{ts}  {:<14} {:<16} {}",
            e.get("kind").and_then(Value::as_str).unwrap_or("?"),
            e.get("node").and_then(Value::as_str).unwrap_or("-"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
