//! A hub and agents as real processes: enrolment, requests through the relay, policy,
//! store-and-forward for an offline node, at-most-once `exec` across an agent crash.

use crate::helper::hub::{Hub, Operator};
use crate::helper::{Agent, read, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// An agent joined to `hub` as `name`, with a policy that lets `exec_ops` call `exec`.
pub(crate) fn joined(hub: &Hub, name: &str, exec_ops: &[&Operator]) -> Agent {
    let a = hub.join(name, None);
    let data = a.data_dir();
    let mut policy = String::from("[keys]\n");
    for op in exec_ops {
        policy += &format!("{} = \"{}\"\n", op.name, hub.public_key(op));
    }
    let names: Vec<String> = exec_ops.iter().map(|o| format!("\"{}\"", o.name)).collect();
    policy += &format!("[methods]\n\"exec\" = [{}]\n", names.join(", "));
    std::fs::write(data.join("policy.toml"), policy).expect("policy");
    a
}

pub(crate) fn send(hub: &Hub, op: &Operator, args: &[&str]) -> serde_json::Value {
    // --json before the method: what follows `--` is the command's.
    let mut a = vec!["send", "--json"];
    a.extend_from_slice(args);
    let out = hub.as_op(op, &a);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "reeve {a:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Sends `method` with `flags` to n1 without waiting, running `sh -c script`; the id.
pub(crate) fn queue_sh(
    hub: &Hub,
    op: &Operator,
    flags: &[&str],
    method: &str,
    script: &str,
) -> String {
    let mut args = vec!["--to", "n1", "--no-wait"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[method, "--", "sh", "-c", script]);
    let r = send(hub, op, &args);
    r["id"].as_str().expect("id").to_string()
}

#[test]
fn exec_round_trip_policy_and_audit() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let bob = hub.operator("bob", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");

    let r = send(
        &hub,
        &alice,
        &[
            "--to",
            "n1",
            "exec",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(r["state"], "replied", "{r}");
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    assert_eq!(r["reply"]["exit_code"], 3, "{r}");
    assert_eq!(r["reply"]["stdout"], "hi\n");
    assert_eq!(r["reply"]["stderr"], "oops\n");

    // bob is an operator at the hub but not named in the node's policy: refused there,
    // never run.
    let marker = a.dir.path().join("bob-ran");
    let cmd = format!("touch {}", marker.display());
    let r = send(&hub, &bob, &["--to", "n1", "exec", "--", "sh", "-c", &cmd]);
    assert_eq!(r["reply"]["status"], "refused", "{r}");
    assert!(!marker.exists(), "a refused exec never runs");

    // exec is off by default even for a named key when the policy does not name it; the
    // read-only and service methods are open to named keys.
    let r = send(&hub, &alice, &["--to", "n1", "ops.ps"]);
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    // tail is off by default too; logs.query answers for known services only.
    let r = send(&hub, &alice, &["--to", "n1", "tail", "/etc/hostname"]);
    assert_eq!(r["reply"]["status"], "refused", "{r}");
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "--args", "{\"name\": \"nope\"}", "logs.query"],
    );
    assert_eq!(r["reply"]["status"], "error", "{r}");

    // Every message is in the node's audit trail, with the signer.
    let ev = a.events(None);
    let msgs: Vec<&str> = ev
        .iter()
        .filter(|e| e.kind.as_str() == "message")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("exec from alice") && m.ends_with("ok")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("exec from bob") && m.ends_with("refused")),
        "{msgs:?}"
    );

    // The CLI's exit code follows the command's.
    let out = hub.as_op(&alice, &["send", "--to", "n1", "exec", "--", "false"]);
    assert!(!out.status.success());
    let out = hub.as_op(&alice, &["send", "--to", "n1", "exec", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `reeve send` stamps expiry with the hub's clock, cached from the last answer: a cache
    // saying the hub is 31 days behind makes a 30-day request expired on arrival, refused.
    let cache = hub.dir.path().join("cli-cache/reeve/hub-clock.json");
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).expect("the CLI cached the hub's clock"))
            .expect("json");
    let entry = &cached[hub.url.as_str()];
    assert!(
        entry["offset_ms"].as_i64().expect("offset").abs() < 5_000,
        "{cached}"
    );
    let now = entry["at_ms"].as_i64().expect("at");
    let behind =
        serde_json::json!({ hub.url.as_str(): {"offset_ms": -31 * 86_400_000i64, "at_ms": now} });
    std::fs::write(&cache, behind.to_string()).expect("write cache");
    let out = hub.as_op(&alice, &["send", "--to", "n1", "ops.ps"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a cache the CLI asks the hub, and caches again.
    std::fs::remove_file(&cache).expect("rm cache");
    let r = send(&hub, &alice, &["--to", "n1", "ops.ps"]);
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    assert!(cache.exists());

    // An operator who shares the node's name is not taken for the node: the reply to what
    // it sent stays at the hub and is not forwarded to the node n1 as a node-to-node reply.
    let namesake = hub.operator("n1", "operator");
    let r = send(&hub, &namesake, &["--to", "n1", "ops.ps"]);
    assert_eq!(r["reply"]["status"], "refused", "not in n1's policy: {r}");
    let all = hub.json(&alice, &["messages"]);
    let forwarded: Vec<_> = all
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["sender"] == "hub")
        .collect();
    assert!(forwarded.is_empty(), "{forwarded:?}");
}

#[test]
fn an_offline_node_gets_its_messages_in_order_once_when_it_is_back() {
    let mut hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    a.stop();
    let file = a.dir.path().join("order.txt");
    let mut ids = Vec::new();
    for i in 0..20 {
        let cmd = format!("echo {i} >> {}", file.display());
        let r = send(
            &hub,
            &alice,
            &["--to", "n1", "--no-wait", "exec", "--", "sh", "-c", &cmd],
        );
        assert_eq!(r["state"], "accepted");
        ids.push(r["id"].as_str().expect("id").to_string());
        if i == 10 {
            // The hub crashes with messages queued: they are durable in its outbox.
            hub.kill9();
            hub.restart();
        }
    }
    let pending = hub.json(&alice, &["messages", "--pending"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(20), "{pending}");
    a.start();
    wait_for(T, "all 20 replied", || {
        let list = hub.json(&alice, &["messages"]);
        let replied = list
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "replied")
            .count();
        (replied == 20).then_some(())
    });
    let lines: Vec<String> = read(&file).lines().map(str::to_string).collect();
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(lines, want, "each once, in order");
    let shown = hub.json(&alice, &["messages", "show", &ids[5]]);
    assert_eq!(shown["reply"]["exit_code"], 0);
}

/// Operator alice (allowed `exec`) and agent n1, joined and online.
fn n1_online(hub: &Hub) -> (Operator, Agent) {
    let alice = hub.operator("alice", "operator");
    let mut a = joined(hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    (alice, a)
}

#[test]
fn exec_survives_an_agent_crash_and_is_never_run_twice() {
    let hub = Hub::start();
    let (alice, mut a) = n1_online(&hub);
    let log = a.dir.path().join("runs.txt");
    let cmd = format!("echo start >> {0}; sleep 2; echo end >> {0}", log.display());
    let id = queue_sh(&hub, &alice, &[], "exec", &cmd);
    wait_for(T, "the command started", || {
        read(&log).contains("start").then_some(())
    });
    a.kill9();
    a.start();
    let shown = wait_for(T, "the reply", || {
        let m = hub.json_any(&alice, &["messages", "show", &id]);
        (m["state"] == "replied").then_some(m)
    });
    // The detached runner finished the command; the new agent collected its result.
    assert_eq!(shown["reply"]["status"], "ok", "{shown}");
    assert_eq!(shown["reply"]["exit_code"], 0, "{shown}");
    assert_eq!(read(&log), "start\nend\n", "ran exactly once");
}

/// The instants a test cannot hit with a `kill -9`: the agent stopped right after fencing
/// a request, before its command began. In this boot, the run left no trace, so it is
/// started (its first run); a fence from another boot (the machine went down, files may be
/// lost) is answered `interrupted` and never run.
#[test]
fn a_fence_without_a_start_runs_once_in_the_same_boot_and_is_interrupted_after_a_reboot() {
    let hub = Hub::start();
    let (alice, mut a) = n1_online(&hub);
    let log = a.dir.path().join("runs.txt");
    let mut ids = Vec::new();
    for step in ["first", "second", "third"] {
        let cmd = match step {
            "first" => format!(
                "echo first >> {0}; sleep 2; echo first-end >> {0}",
                log.display()
            ),
            _ => format!("echo {step} >> {}", log.display()),
        };
        ids.push(queue_sh(&hub, &alice, &[], "exec", &cmd));
    }
    // The first runs; the other two wait behind it in the node's inbox.
    for id in &ids[1..] {
        wait_for(T, "in the node's inbox", || {
            let m = hub.json_any(&alice, &["messages", "show", id]);
            (m["state"] == "delivered").then_some(())
        });
    }
    wait_for(T, "the first started", || {
        read(&log).contains("first").then_some(())
    });
    a.kill9();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    {
        let db = rusqlite::Connection::open(a.data_dir().join("delivery.db")).expect("inbox");
        let fence = |id: &str, boot: &str| {
            let n = db
                .execute(
                    "UPDATE inbox SET state = 'running', fence_boot = ?2 WHERE id = ?1 AND state = 'ready'",
                    rusqlite::params![id, boot],
                )
                .expect("fence");
            assert_eq!(n, 1, "{id} was waiting in the inbox");
        };
        fence(&ids[1], boot.trim());
        fence(&ids[2], "a-boot-before-a-power-cut");
    }
    a.start();
    let replies: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            wait_for(T, "the reply", || {
                let m = hub.json_any(&alice, &["messages", "show", id]);
                (m["state"] == "replied").then_some(m)
            })
        })
        .collect();
    assert_eq!(
        replies[0]["reply"]["status"], "ok",
        "collected: {}",
        replies[0]
    );
    assert_eq!(
        replies[1]["reply"]["status"], "ok",
        "started now: {}",
        replies[1]
    );
    assert_eq!(
        replies[2]["reply"]["status"], "interrupted",
        "{}",
        replies[2]
    );
    assert_eq!(
        read(&log),
        "first\nfirst-end\nsecond\n",
        "each at most once, in order"
    );
}

#[test]
fn join_tokens_are_one_time_and_clones_are_refused() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "viewer");
    let token = hub.token();
    let a = Agent::new();
    let data = a.data_dir();
    let join = |agent: &Agent, data: &std::path::Path, name: &str| {
        agent.cli(&[
            "agent",
            "join",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--token",
            &token,
            "--name",
            name,
        ])
    };
    assert!(join(&a, &data, "n1").status.success());
    // The same token again: refused.
    let b = Agent::new();
    let out = join(&b, &b.data_dir(), "n2");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("used already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a token at all.
    let out = b.cli(&[
        "agent",
        "join",
        "--data-dir",
        b.data_dir().to_str().expect("utf-8"),
        "--token",
        "nonsense",
        "--name",
        "n2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reeve join token"));

    // A clone: a second machine with n1's identity files.
    let mut a = a;
    a.start();
    hub.wait_online(&alice, "n1");
    let mut clone = Agent::new();
    std::fs::create_dir_all(clone.data_dir()).expect("dir");
    for f in ["node.toml", "node.key"] {
        std::fs::copy(data.join(f), clone.data_dir().join(f)).expect("copy identity");
    }
    clone.start();
    wait_for(T, "the clone reported", || {
        let errors = hub.json(&alice, &["errors"]);
        errors
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "clone" && e["node"] == "n1")
            .then_some(())
    });
    // The original stays connected.
    hub.wait_online(&alice, "n1");
}

#[test]
fn the_api_refuses_wrong_callers_and_foreign_signatures() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let viewer = hub.operator("val", "viewer");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    let bad_token = crate::helper::hub::Operator {
        token: "rvo_wrong".into(),
        ..alice.clone()
    };
    let out = hub.as_op(&bad_token, &["nodes"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A viewer may look but not send.
    let out = hub.as_op(&viewer, &["send", "--to", "n1", "ops.ps"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // alice's token with val's key: the signature is not alice's.
    let mixed = Operator {
        key: viewer.key.clone(),
        ..alice.clone()
    };
    let out = hub.as_op(&mixed, &["send", "--to", "n1", "--as", "alice", "ops.ps"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not by alice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown node.
    let out = hub.as_op(&alice, &["send", "--to", "nobody", "ops.ps"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_requests_are_hub_signed_and_node_events_reach_the_hub() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.service("web", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    hub.wait_online(&alice, "n1");
    // A request from the dashboard: signed by the hub for alice; service control is open
    // to the hub's key by default.
    let body = serde_json::json!({"method": "service.stop", "args": {"name": "web"}});
    let (status, r) = hub.api(&alice, "POST", "/api/v1/nodes/n1/requests", Some(&body));
    assert_eq!(status, 202, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    let (_, m) = hub.api(
        &alice,
        "GET",
        &format!("/api/v1/messages/{id}?wait=20"),
        None,
    );
    assert_eq!(m["reply"]["status"], "ok", "{m}");
    assert_eq!(m["reply"]["service"]["state"], "stopped", "{m}");
    // exec through the hub's key is refused by the node (policy names only alice for it).
    let body = serde_json::json!({"method": "exec", "args": {"argv": ["true"]}});
    let (_, r) = hub.api(&alice, "POST", "/api/v1/nodes/n1/requests", Some(&body));
    let id = r["id"].as_str().expect("id").to_string();
    let (_, m) = hub.api(
        &alice,
        "GET",
        &format!("/api/v1/messages/{id}?wait=20"),
        None,
    );
    assert_eq!(m["reply"]["status"], "refused", "{m}");
    // The node's events arrive at the hub, the stop among them, with alice as the one the
    // hub acted for; the node's facts follow the service's state.
    wait_for(T, "the stop event at the hub", || {
        let (_, ev) = hub.api(&alice, "GET", "/api/v1/events?node=n1&service=web", None);
        ev.as_array()?
            .iter()
            .any(|e| e["kind"] == "stopped")
            .then_some(())
    });
    wait_for(T, "facts with web stopped", || {
        let (_, n) = hub.api(&alice, "GET", "/api/v1/nodes/n1", None);
        n["facts"]["service_states"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "web" && s["state"] == "stopped")
            .then_some(())
    });
    let (_, ev) = hub.api(&alice, "GET", "/api/v1/events?node=n1&kind=message", None);
    let texts: Vec<&str> = ev
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        texts.iter().any(|t| t.starts_with("service.stop from hub")),
        "{texts:?}"
    );
    // A viewer cannot act.
    let val = hub.operator("val", "viewer");
    let (status, _) = hub.api(
        &val,
        "POST",
        "/api/v1/nodes/n1/requests",
        Some(&serde_json::json!({"method": "ops.ps"})),
    );
    assert_eq!(status, 403);
}

/// Writes `input` to an agent's control socket as a raw stream (like `nc -U`), returns the
/// one-line JSON answer.
fn steward_socket(a: &Agent, input: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(a.socket()).expect("connect");
    s.write_all(input.as_bytes()).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("answer: {out}"))
}

#[test]
fn steward_json_on_the_socket_goes_node_to_node_and_the_reply_lands_in_a_file() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "viewer");
    let mut n1 = joined(&hub, "n1", &[]);
    let mut n2 = joined(&hub, "n2", &[]);
    // n2 lets n1 run commands: its policy names n1's node key.
    let shown = n1.ok(&[
        "key",
        "show",
        n1.data_dir().join("node.key").to_str().expect("utf-8"),
        "--json",
    ]);
    let n1_key: serde_json::Value = serde_json::from_str(&shown).expect("json");
    let policy = format!(
        "[keys]\nn1 = \"{}\"\n[methods]\n\"exec\" = [\"n1\"]\n",
        n1_key["public"].as_str().expect("public")
    );
    std::fs::write(n2.data_dir().join("policy.toml"), policy).expect("policy");
    n1.start();
    n2.start();
    hub.wait_online(&alice, "n1");
    hub.wait_online(&alice, "n2");

    let msg = r#"[{"toNode": "n2", "method": "REQCliCommand", "data": ["sh", "-c", "echo hello from $(cat /proc/sys/kernel/hostname | head -c0)n2"],
        "replyMethod": "REQToFile", "directory": "out", "fileName": "hello.txt", "ACKTimeout": 60, "retries": 3, "methodTimeout": 10}]"#;
    let answer = steward_socket(&n1, msg);
    assert_eq!(answer["accepted"][0]["to"], "n2", "{answer}");
    assert_eq!(answer["accepted"][0]["method"], "exec", "{answer}");
    let file = n1.data_dir().join("replies/out/hello.txt");
    wait_for(T, "the reply file at n1", || {
        (read(&file) == "hello from n2\n").then_some(())
    });
    // The node that did not ask gets nothing; n2 recorded who asked.
    assert!(!n2.data_dir().join("replies").exists());
    let ev = n2.events(None);
    assert!(
        ev.iter()
            .any(|e| e.kind.as_str() == "message" && e.message.starts_with("exec from n1")),
        "{:?}",
        ev.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // n1 may not run commands on... itself through n2's policy: n1's policy names nobody,
    // so n2 → n1 exec is refused there (and replied as refused).
    let answer = steward_socket(
        &n2,
        r#"{"toNode": "n1", "method": "REQCliCommand", "data": ["touch", "/tmp/never"], "replyMethod": "REQToConsole", "ACKTimeout": 60}"#,
    );
    let id = answer["accepted"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let console = n2.data_dir().join(format!("replies/{id}.json"));
    wait_for(T, "the refusal back at n2", || {
        read(&console).contains("refused").then_some(())
    });
    // Bad input changes nothing: an absolute directory is refused up front.
    let answer = steward_socket(
        &n1,
        r#"[{"toNode": "n2", "method": "REQCliCommand", "data": ["true"], "replyMethod": "REQToFile", "directory": "/etc", "fileName": "x"}]"#,
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("relative")),
        "{answer}"
    );
    // And the local API still speaks HTTP on the same socket.
    n1.ok(&["ps"]);
}

#[test]
fn purged_messages_never_run_and_the_stream_moves_on() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let vic = hub.operator("vic", "viewer");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    a.stop();
    let file = a.dir.path().join("ran.txt");
    let queue = |i: u32| {
        let cmd = format!("echo {i} >> {}", file.display());
        let r = send(
            &hub,
            &alice,
            &["--to", "n1", "--no-wait", "exec", "--", "sh", "-c", &cmd],
        );
        r["id"].as_str().expect("id").to_string()
    };
    let ids: Vec<String> = (0..4).map(queue).collect();
    // A viewer may look but not purge.
    let refused = hub.as_op(&vic, &["messages", "purge", "--id", &ids[1]]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let purged = hub.json(&alice, &["messages", "purge", "--id", &ids[1]]);
    assert_eq!(purged["purged"], serde_json::json!([ids[1]]), "{purged}");
    // Purged once is not waiting any more: said so, and the exit code says it too.
    let again = hub.as_op(&alice, &["messages", "purge", "--id", &ids[1]]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not waiting"));
    // Bad input changes nothing.
    let bad = hub.as_op(&alice, &["messages", "purge"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--older-than"));
    a.start();
    wait_for(T, "the others replied", || {
        let list = hub.json(&alice, &["messages"]);
        let replied = list
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "replied")
            .count();
        (replied == 3).then_some(())
    });
    assert_eq!(
        read(&file),
        "0\n2\n3\n",
        "the purged one never ran; the rest in order"
    );
    let shown = hub.json_any(&alice, &["messages", "show", &ids[1]]);
    assert_eq!(shown["state"], "purged", "{shown}");
    let errors = hub.json(&alice, &["errors"]);
    assert!(
        errors
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["kind"] == "purged" && e["message"].as_str().unwrap_or("").contains("alice")),
        "{errors}"
    );
    // By age, for one node: everything still waiting goes, and the stream still moves.
    a.stop();
    let old: Vec<String> = (4..6).map(queue).collect();
    std::thread::sleep(Duration::from_millis(20));
    let purged = hub.json(
        &alice,
        &["messages", "purge", "--older-than", "10ms", "--node", "n1"],
    );
    let mut got: Vec<String> = purged["purged"]
        .as_array()
        .expect("purged")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    got.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(got, want, "{purged}");
    a.start();
    let cmd = format!("echo 6 >> {}", file.display());
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "exec", "--", "sh", "-c", &cmd],
    );
    assert_eq!(r["state"], "replied", "{r}");
    assert_eq!(read(&file), "0\n2\n3\n6\n");
}

#[test]
fn a_removed_node_is_cut_off_and_one_that_leaves_can_join_again_afresh() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let root = hub.operator("root", "admin");
    let mut n1 = joined(&hub, "n1", &[&alice]);
    let mut n2 = joined(&hub, "n2", &[&alice]);
    n1.start();
    n2.start();
    hub.wait_online(&alice, "n1");
    hub.wait_online(&alice, "n2");
    let names = |hub: &Hub| -> Vec<String> {
        hub.json(&alice, &["nodes"])
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    };

    // An admin removes n1 while a message waits for it.
    n1.stop();
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "--no-wait", "exec", "--", "true"],
    );
    let id = r["id"].as_str().expect("id").to_string();
    let weak = hub.as_op(&alice, &["nodes", "remove", "n1"]);
    assert!(!weak.status.success(), "an operator may not remove nodes");
    let out = hub.json(&root, &["nodes", "remove", "n1"]);
    assert_eq!(out["purged"], 1, "{out}");
    assert_eq!(
        hub.json_any(&alice, &["messages", "show", &id])["state"],
        "purged"
    );
    assert_eq!(names(&hub), ["n2"]);
    let again = hub.as_op(&root, &["nodes", "remove", "n1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no node named"));
    // Its key no longer gets in.
    n1.start();
    wait_for(T, "n1's connection refused", || {
        hub.json(&alice, &["errors"])
            .as_array()?
            .iter()
            .any(|e| e["node"] == "n1" && e["kind"] == "refused")
            .then_some(())
    });
    assert_eq!(names(&hub), ["n2"], "a refused key does not come back");

    // n2 leaves by itself: the hub removes it, its key is deleted, services still answer.
    let out: serde_json::Value =
        serde_json::from_str(&n2.ok(&["agent", "leave", "--json"])).expect("json");
    assert_eq!(out["state"], "left", "{out}");
    assert!(
        !n2.data_dir().join("node.key").exists(),
        "the key is deleted"
    );
    assert!(names(&hub).is_empty());
    let errors = hub.json(&alice, &["errors"]);
    assert!(
        errors
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["node"] == "n2"
                && e["kind"] == "node_removed"
                && e["message"].as_str().unwrap_or("").contains("left")),
        "{errors}"
    );
    n2.ok(&["ps"]);
    let twice = n2.cli(&["agent", "leave"]);
    assert!(!twice.status.success(), "nothing left to leave");

    // It joins again: a new key, a stream that starts afresh, and requests run.
    n2.stop();
    let token = hub.token();
    let data = n2.data_dir();
    n2.ok(&[
        "agent",
        "join",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--token",
        &token,
    ]);
    assert!(data.join("node.key").exists());
    let old_store = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".old"));
    assert!(old_store, "the earlier message store is kept aside");
    n2.start();
    hub.wait_online(&alice, "n2");
    let r = send(&hub, &alice, &["--to", "n2", "exec", "--", "true"]);
    assert_eq!(r["state"], "replied", "{r}");
}

/// A one-file HTTP server on loopback: `/hello` answers 200 with a body, anything else 404.
/// Serves `n` requests, then stops.
fn tiny_http_server(n: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let got = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..got]);
            let (status, body) = if head.starts_with("GET /hello ") {
                ("200 OK", "hello from the node's side\n")
            } else {
                ("404 Not Found", "no such page\n")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn http_get_is_off_by_default_and_fetches_from_the_node_when_allowed() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let bob = hub.operator("bob", "operator");
    let mut a = joined(&hub, "n1", &[&alice, &bob]);
    let policy = a.data_dir().join("policy.toml");
    let text = std::fs::read_to_string(&policy).expect("policy") + "\"http.get\" = [\"alice\"]\n";
    std::fs::write(&policy, text).expect("policy");
    a.start();
    hub.wait_online(&alice, "n1");
    let port = tiny_http_server(3);
    let url = format!("http://127.0.0.1:{port}/hello");
    let r = send(&hub, &bob, &["--to", "n1", "http.get", &url]);
    assert_eq!(r["reply"]["status"], "refused", "bob is not named: {r}");
    let r = send(&hub, &alice, &["--to", "n1", "http.get", &url]);
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    assert_eq!(r["reply"]["http_status"], 200, "{r}");
    assert_eq!(r["reply"]["body"], "hello from the node's side\n", "{r}");
    // Without --json the body is printed as curl would, and the exit code follows.
    let out = hub.as_op(&alice, &["send", "--to", "n1", "http.get", &url]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the node's side\n"
    );
    let missing = format!("http://127.0.0.1:{port}/nope");
    let r = send(&hub, &alice, &["--to", "n1", "http.get", &missing]);
    assert_eq!(r["reply"]["status"], "error", "{r}");
    assert_eq!(r["reply"]["http_status"], 404, "{r}");
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "http.get", "ftp://example.com/x"],
    );
    assert_eq!(r["reply"]["status"], "error", "{r}");
    assert!(
        r["reply"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("only http and https"),
        "{r}"
    );
}

/// libfaketime's preload library (Debian `libfaketime`, which scripts/test installs).
fn faketime_lib() -> String {
    let found = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|t| format!("/usr/lib/{t}/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists());
    found.expect("libfaketime is missing: apt-get install libfaketime (scripts/test does)")
}

#[test]
fn nodes_whose_clocks_say_1970_or_2045_judge_expiry_on_hub_time() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let lib = faketime_lib();
    let mut past = joined(&hub, "past", &[&alice]);
    let mut future = joined(&hub, "future", &[&alice]);
    // Wall clocks far off; monotonic time (timers) left alone.
    for (agent, when) in [
        (&mut past, "@1970-01-02 00:00:00"),
        (&mut future, "@2045-06-01 00:00:00"),
    ] {
        agent.start_with_env(&[
            ("LD_PRELOAD", &lib),
            ("FAKETIME", when),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]);
    }
    hub.wait_online(&alice, "past");
    hub.wait_online(&alice, "future");
    for node in ["past", "future"] {
        // The request expires an hour from now on hub time: the node from 2045 must not
        // think it expired decades ago, and the node from 1970 must date its reply so
        // that the hub does not take it for one that expired.
        let marker = format!("ran on {node}");
        let r = send(
            &hub,
            &alice,
            &["--to", node, "--ttl", "1h", "exec", "--", "echo", &marker],
        );
        assert_eq!(r["state"], "replied", "{node}: {r}");
        assert_eq!(r["reply"]["exit_code"], 0, "{node}: {r}");
        assert!(
            r["reply"]["stdout"]
                .as_str()
                .unwrap_or("")
                .contains(&marker),
            "{node}: {r}"
        );
    }
    let errors = hub.json(&alice, &["errors"]);
    assert!(
        !errors
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["kind"] == "refused" || e["kind"] == "dead_letter"),
        "nothing refused or dead-lettered for its time: {errors}"
    );
}
