//! `reeve hub backup` of a live hub and `reeve hub restore` into another data directory: a
//! hub started there has the nodes, the operators and the messages (replied and still
//! queued). A restore refuses a directory whose hub runs and a damaged backup, changing
//! nothing.

use crate::helper::BoundedOutput;
use crate::helper::hub::Hub;
use crate::helper::reeve_bin;
use std::path::Path;
use std::process::{Command, Output};

fn reeve_hub(dir: &Path, args: &[&str]) -> Output {
    Command::new(reeve_bin())
        .arg("hub")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .bounded_output()
        .expect("run reeve")
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_live_hub_backs_up_and_restores_elsewhere_with_its_nodes_and_messages() {
    let hub = Hub::start();
    let op = hub.operator("alice", "operator");
    let mut a = hub.join("n1", None);
    a.start();
    hub.wait_online(&op, "n1");
    for _ in 0..3 {
        let out = hub.as_op(&op, &["send", "--json", "--to", "n1", "ops.ps"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        // Replied (a refusal by the node's policy: alice's key is not named there).
        assert_eq!(r["state"], "replied", "{r}");
    }
    // Two more wait in the hub's outbox for the node, which is away.
    a.stop();
    for _ in 0..2 {
        let out = hub.as_op(
            &op,
            &["send", "--json", "--no-wait", "--to", "n1", "ops.ps"],
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        // Replied (a refusal by the node's policy: alice's key is not named there).
        assert_eq!(r["state"], "accepted", "{r}");
    }
    let before = hub.json(&op, &["messages"]);
    assert_eq!(before.as_array().expect("list").len(), 5);

    // Backed up while the hub runs.
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("hub.tar");
    let s = ok_json(reeve_hub(
        &hub.data_dir(),
        &["backup", "--out", file.to_str().expect("utf-8"), "--json"],
    ));
    assert_eq!(
        (s["nodes"].as_u64(), s["messages"].as_u64()),
        (Some(1), Some(5)),
        "{s}"
    );
    // Never over an existing file.
    let out = reeve_hub(
        &hub.data_dir(),
        &["backup", "--out", file.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());

    // Not into the directory of a running hub, even forced.
    let out = reeve_hub(
        &hub.data_dir(),
        &[
            "restore",
            "--from",
            file.to_str().expect("utf-8"),
            "--force",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is running"), "{err}");

    // A damaged backup changes nothing.
    let mut bytes = std::fs::read(&file).expect("read backup");
    let n = bytes.len();
    bytes[n / 3] ^= 0x5a;
    let bad = work.path().join("bad.tar");
    std::fs::write(&bad, &bytes).expect("write");
    let mut other = Hub::start();
    other.kill9();
    let target = other.data_dir();
    let was = tree(&target);
    let out = reeve_hub(
        &target,
        &["restore", "--from", bad.to_str().expect("utf-8"), "--force"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        tree(&target),
        was,
        "a refused restore left the directory as it was"
    );
    let fresh = work.path().join("fresh");
    let out = reeve_hub(&fresh, &["restore", "--from", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(!fresh.exists());
    // A directory holding a hub's data needs --force.
    let out = reeve_hub(
        &target,
        &["restore", "--from", file.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    // Restored over the other hub's (stopped) directory, which is kept aside.
    let r = ok_json(reeve_hub(
        &target,
        &[
            "restore",
            "--from",
            file.to_str().expect("utf-8"),
            "--force",
            "--json",
        ],
    ));
    assert!(
        r["replaced"]
            .as_str()
            .is_some_and(|p| Path::new(p).join("hub.db").is_file()),
        "{r}"
    );
    assert_eq!(
        std::fs::read(target.join("hub.key")).expect("key"),
        std::fs::read(hub.data_dir().join("hub.key")).expect("key"),
        "the hub's identity came along"
    );
    other.restart();
    // alice's token works there: the operators came along too.
    let nodes = other.json(&op, &["nodes"]);
    let names: Vec<&str> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, vec!["n1"]);
    let after = other.json(&op, &["messages"]);
    let key = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = v
            .as_array()
            .expect("list")
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().expect("id").to_string(),
                    m["state"].as_str().expect("state").to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&after), key(&before));
    let states: Vec<String> = key(&after).into_iter().map(|(_, s)| s).collect();
    assert_eq!(states.iter().filter(|s| *s == "replied").count(), 3);
    assert_eq!(states.iter().filter(|s| *s == "accepted").count(), 2);
}

/// `reeve send --json [--no-wait] --to n1 ops.ps`: the message's id and state.
fn send_ps(hub: &Hub, op: &crate::helper::hub::Operator, wait: bool) -> (String, String) {
    let mut args = vec!["send", "--json", "--to", "n1"];
    if !wait {
        args.insert(2, "--no-wait");
    }
    args.push("ops.ps");
    let out = hub.as_op(op, &args);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let id = r["id"].as_str().expect("id").to_string();
    (id, r["state"].as_str().expect("state").to_string())
}

#[test]
fn a_hub_restored_from_an_older_backup_and_its_nodes_resume_both_ways() {
    let mut hub = Hub::start();
    let op = hub.operator("alice", "operator");
    let mut a = hub.join("n1", None);
    a.start();
    hub.wait_online(&op, "n1");
    assert_eq!(send_ps(&hub, &op, true).1, "replied");
    // One request waits in the outbox when the backup is taken.
    a.stop();
    let (waiting, state) = send_ps(&hub, &op, false);
    assert_eq!(state, "accepted");
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("hub.tar");
    ok_json(reeve_hub(
        &hub.data_dir(),
        &["backup", "--out", file.to_str().expect("utf-8"), "--json"],
    ));
    // After the backup, the node takes it and replies, and more goes both ways: the hub's
    // stream to the node and the node's stream to the hub move past what the backup holds.
    a.start();
    hub.wait_replied(&op, &waiting);
    assert_eq!(send_ps(&hub, &op, true).1, "replied");

    // The hub's data is lost; it comes back from the backup.
    hub.kill9();
    let r = ok_json(reeve_hub(
        &hub.data_dir(),
        &[
            "restore",
            "--from",
            file.to_str().expect("utf-8"),
            "--force",
            "--json",
        ],
    ));
    assert_eq!(r["resealed"], 1, "the waiting request moved: {r}");
    hub.restart();
    hub.wait_online(&op, "n1");

    // Both ways work again: a new request reaches the node (on the hub's new stream) and
    // its reply reaches the hub (past the positions the hub lost, now skip markers).
    let (id, state) = send_ps(&hub, &op, true);
    assert_eq!(state, "replied", "a new request after the restore: {id}");
    // The request that waited in the backup arrives again and is taken once: delivered,
    // never run twice (its reply went to the hub before the restore and is lost with it).
    crate::helper::wait_for(
        std::time::Duration::from_secs(20),
        "the restored request delivered",
        || {
            let m = hub.json_any(&op, &["messages", "show", &waiting]);
            (m["state"] == "delivered").then_some(())
        },
    );
    let runs = a
        .events(None)
        .into_iter()
        .filter(|e| e.kind.as_str() == "message" && e.detail["id"] == waiting.as_str())
        .count();
    assert_eq!(runs, 1, "the node ran {waiting} once");
    let events = a.events(None);
    assert!(
        events.iter().any(|e| e.message.contains("the hub lost")),
        "the node recorded the loss"
    );
    let errors = hub.json(&op, &["errors"]);
    let kinds: Vec<&str> = errors
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"restored"), "{errors}");
}
