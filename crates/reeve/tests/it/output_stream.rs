//! `exec.stream`: output comes back while the command runs, the message's reply holds all
//! of it once, and an agent killed mid-stream goes on where it was, sending nothing twice.
//! `tail --follow` streams what is appended to a file the same way.

use crate::fleet::{joined, queue_sh, send};
use crate::helper::hub::{Hub, Operator};
use crate::helper::{Agent, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// An agent where alice may call `exec`, `exec.stream` and `tail`, online.
fn streaming_node(hub: &Hub, alice: &Operator) -> Agent {
    let mut a = joined(hub, "n1", &[alice]);
    let policy = a.data_dir().join("policy.toml");
    let mut text = std::fs::read_to_string(&policy).expect("policy");
    text += "\"exec.stream\" = [\"alice\"]\n\"tail\" = [\"alice\"]\n";
    std::fs::write(&policy, text).expect("policy");
    a.start();
    hub.wait_online(alice, "n1");
    a
}

/// The stdout streamed so far for message `id`.
fn streamed(hub: &Hub, op: &Operator, id: &str) -> String {
    let (status, body) = hub.api(op, "GET", &format!("/api/v1/messages/{id}/output"), None);
    assert_eq!(status, 200, "{body}");
    body["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["stdout"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn output_streams_while_the_command_runs_and_survives_an_agent_crash() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = streaming_node(&hub, &alice);
    let gate = a.dir.path().join("gate");
    let cmd = format!(
        "echo one; i=0; while [ ! -e {g} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo two; echo warn >&2",
        g = gate.display()
    );
    let id = queue_sh(&hub, &alice, &[], "exec.stream", &cmd);
    // The first line arrives while the command still waits at the gate.
    wait_for(T, "the first line, streamed", || {
        (streamed(&hub, &alice, &id) == "one\n").then_some(())
    });
    // The agent dies mid-stream; the command runs on under its runner. The next agent
    // follows it from where the last one was.
    a.kill9();
    a.start();
    std::fs::write(&gate, "").expect("gate");
    let m = hub.wait_replied(&alice, &id);
    assert_eq!(m["reply"]["status"], "ok", "{m}");
    assert_eq!(m["reply"]["exit_code"], 0, "{m}");
    assert_eq!(m["reply"]["stdout"], "one\ntwo\n", "all of it, once: {m}");
    assert_eq!(m["reply"]["stderr"], "warn\n", "{m}");
    assert!(m["reply"]["chunks"].as_u64() >= Some(2), "{m}");
    assert_eq!(streamed(&hub, &alice, &id), "one\ntwo\n");
}

#[test]
fn the_cli_prints_streamed_output_once_and_exits_with_the_command() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let _a = streaming_node(&hub, &alice);
    let out = hub.as_op(
        &alice,
        &[
            "send",
            "--to",
            "n1",
            "exec.stream",
            "--",
            "sh",
            "-c",
            "echo a; sleep 0.5; echo b; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oops\n") && err.contains("exit code 3"),
        "{err}"
    );
    assert_eq!(err.matches("oops").count(), 1, "{err}");
    assert!(!out.status.success());
    // exec.stream is off by default, like exec: bob is not named.
    let bob = hub.operator("bob", "operator");
    let r = send(&hub, &bob, &["--to", "n1", "exec.stream", "--", "true"]);
    assert_eq!(r["reply"]["status"], "refused", "{r}");
}

#[test]
fn tail_follow_streams_what_is_appended_until_its_time_limit() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let a = streaming_node(&hub, &alice);
    let file = a.dir.path().join("app.log");
    std::fs::write(&file, "a\nb\n").expect("write");
    let r = send(
        &hub,
        &alice,
        &[
            "--to",
            "n1",
            "--no-wait",
            "--follow",
            "--method-timeout",
            "3s",
            "tail",
            file.to_str().expect("utf-8"),
        ],
    );
    let id = r["id"].as_str().expect("id").to_string();
    wait_for(T, "the last lines", || {
        (streamed(&hub, &alice, &id) == "a\nb\n").then_some(())
    });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    std::io::Write::write_all(&mut f, b"c\n").expect("append");
    wait_for(T, "the appended line", || {
        (streamed(&hub, &alice, &id) == "a\nb\nc\n").then_some(())
    });
    let m = hub.wait_replied(&alice, &id);
    assert_eq!(m["reply"]["status"], "ok", "{m}");
    assert_eq!(m["reply"]["stdout"], "a\nb\nc\n", "{m}");
}
