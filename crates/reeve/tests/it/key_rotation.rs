//! Rotating an operator's key with an overlap window: at the hub both keys sign for the
//! operator until the window closes; on a node, whose policy is its own, both keys are
//! listed under the operator's name for as long as its admin wants.

use crate::fleet::{joined, send};
use crate::helper::BoundedOutput;
use crate::helper::hub::{Hub, Operator};
use crate::helper::reeve_bin;
use std::process::Command;

/// A new key file for `op` (same name and API token).
fn new_key(hub: &Hub, op: &Operator, file: &str) -> Operator {
    Operator {
        name: op.name.clone(),
        token: op.token.clone(),
        key: hub.new_key(file),
    }
}

/// `reeve hub operator rotate-key alice --key NEW.pub --overlap OVERLAP EXTRA…`; its output.
fn rotate(hub: &Hub, new: &Operator, overlap: &str, extra: &[&str]) -> String {
    let pubfile = new.key.with_extension("pub");
    let mut args = vec![
        "hub",
        "operator",
        "rotate-key",
        "alice",
        "--key",
        pubfile.to_str().expect("utf-8"),
        "--overlap",
        overlap,
    ];
    args.extend_from_slice(extra);
    hub.admin(&args)
}

fn exec_true(hub: &Hub, op: &Operator) -> serde_json::Value {
    send(
        hub,
        op,
        &["--as", &op.name, "--to", "n1", "exec", "--", "true"],
    )
}

#[test]
fn an_operator_key_rotates_with_an_overlap_window() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    let second = new_key(&hub, &alice, "alice-2");
    // The node's admin lists the new key beside the old one for the overlap.
    let policy = a.data_dir().join("policy.toml");
    let text = std::fs::read_to_string(&policy).expect("policy").replace(
        &format!("alice = \"{}\"", hub.public_key(&alice)),
        &format!(
            "alice = [\"{}\", \"{}\"]",
            hub.public_key(&second),
            hub.public_key(&alice)
        ),
    );
    std::fs::write(&policy, text).expect("policy");
    a.start();
    hub.wait_online(&alice, "n1");

    let out = rotate(&hub, &second, "1h", &["--json"]);
    let rotated: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rotated["key"], hub.public_key(&second));
    // Within the window both keys sign for alice, at the hub and on the node.
    for op in [&alice, &second] {
        let r = exec_true(&hub, op);
        assert_eq!(r["reply"]["status"], "ok", "{r}");
    }

    // Rotating on without an overlap retires the second key at once; the first still has
    // its hour.
    let third = new_key(&hub, &alice, "alice-3");
    rotate(&hub, &third, "0s", &[]);
    let refused = hub.as_op(
        &second,
        &["send", "--as", "alice", "--to", "n1", "exec", "--", "true"],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not by alice's key"), "{err}");
    let r = exec_true(&hub, &alice);
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    // The third key is alice's at the hub, but the node's policy does not name it: the
    // node refuses (its policy is its own).
    let r = exec_true(&hub, &third);
    assert_eq!(r["reply"]["status"], "refused", "{r}");
    // A rotation to the key already current, or for nobody, is an error that changes
    // nothing.
    let bad = Command::new(reeve_bin())
        .args(["hub", "operator", "rotate-key", "alice", "--key"])
        .arg(third.key.with_extension("pub"))
        .env("REEVE_HUB_DATA_DIR", hub.data_dir())
        .bounded_output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("already"));
}

/// The key the hub has enrolled for `node`.
fn enrolled_key(hub: &Hub, op: &Operator, node: &str) -> String {
    let list = hub.json(op, &["nodes"]);
    list.as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == node))
        .and_then(|n| n["key"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{node} not in {list}"))
}

/// Does the hub's error log hold an entry of `kind` for n1 whose message has `needle`?
fn logged(hub: &Hub, op: &Operator, kind: &str, needle: &str) -> bool {
    let errors = hub.json(op, &["errors"]);
    errors.as_array().is_some_and(|l| {
        l.iter().any(|e| {
            e["kind"] == kind
                && e["node"] == "n1"
                && e["message"].as_str().is_some_and(|m| m.contains(needle))
        })
    })
}

#[test]
fn a_node_key_rotates_with_an_overlap_window() {
    use crate::helper::wait_for;
    use std::time::Duration;
    const T: Duration = Duration::from_secs(30);
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    let first_secret = std::fs::read_to_string(a.data_dir().join("node.key")).expect("key");
    let first = enrolled_key(&hub, &alice, "n1");

    // A message waits for the node while it rotates: nothing in flight is lost.
    let r: serde_json::Value =
        serde_json::from_str(&a.ok(&["agent", "rotate-key", "--overlap", "1h", "--json"]))
            .expect("json");
    assert_eq!(r["state"], "rotated", "{r}");
    let second = r["key"].as_str().expect("key").to_string();
    assert_ne!(second, first);
    assert_eq!(enrolled_key(&hub, &alice, "n1"), second);
    assert!(!a.data_dir().join("node.key.next").exists());
    assert_ne!(
        std::fs::read_to_string(a.data_dir().join("node.key")).expect("key"),
        first_secret,
        "node.key holds the new key"
    );
    assert!(logged(&hub, &alice, "key_rotated", "accepted until"));
    // Replies travel on the new key's streams.
    let reply = exec_true(&hub, &alice);
    assert_eq!(reply["reply"]["status"], "ok", "{reply}");
    let events = a.events(None);
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("node key rotated to")),
        "the node's event log records the rotation"
    );

    // Within the overlap the old key still connects: an agent restored with it (its store
    // moved to the new key) moves what waits back under the old key and is served.
    a.stop();
    let second_secret = std::fs::read_to_string(a.data_dir().join("node.key")).expect("key");
    std::fs::write(a.data_dir().join("node.key"), &first_secret).expect("old key back");
    a.start();
    hub.wait_online(&alice, "n1");
    let reply = exec_true(&hub, &alice);
    assert_eq!(reply["reply"]["status"], "ok", "{reply}");

    // Rotating on with no overlap: the key it rotated from (the first) stops at once.
    std::fs::write(a.data_dir().join("node.key"), &second_secret).expect("second key");
    a.stop();
    a.start();
    hub.wait_online(&alice, "n1");
    let r: serde_json::Value =
        serde_json::from_str(&a.ok(&["agent", "rotate-key", "--overlap", "0s", "--json"]))
            .expect("json");
    assert_eq!(r["state"], "rotated", "{r}");
    a.stop();
    let third_secret = std::fs::read_to_string(a.data_dir().join("node.key")).expect("key");
    std::fs::write(a.data_dir().join("node.key"), &second_secret).expect("retired key");
    a.start();
    wait_for(T, "the retired key refused", || {
        logged(&hub, &alice, "refused", "not enrolled").then_some(())
    });

    // A node that never heard the hub record its rotation (its store never moved to the
    // new key: here, a store started afresh) and came back after the overlap: refused with
    // its old key, it presents the pending new one and takes it.
    a.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(a.data_dir().join(format!("delivery.db{suffix}")));
    }
    let next = format!("secret = \"{}\"\noverlap_ms = 0\n", third_secret.trim());
    std::fs::write(a.data_dir().join("node.key.next"), next).expect("pending rotation");
    a.start();
    hub.wait_online(&alice, "n1");
    let reply = exec_true(&hub, &alice);
    assert_eq!(reply["reply"]["status"], "ok", "{reply}");
    assert_eq!(
        std::fs::read_to_string(a.data_dir().join("node.key")).expect("key"),
        third_secret
    );
    assert!(!a.data_dir().join("node.key.next").exists());
}

/// `reeve hub rotate-key ARGS… --json` on the hub's (stopped) data directory.
fn rotate_hub_key(hub: &Hub, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["hub", "rotate-key", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&hub.admin(&all)).expect("json")
}

/// The hub key `node.toml` pins.
fn pinned(a: &crate::helper::Agent) -> String {
    let text = std::fs::read_to_string(a.data_dir().join("node.toml")).expect("node.toml");
    text.lines()
        .find_map(|l| l.strip_prefix("hub_key = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no hub_key in {text}"))
        .to_string()
}

#[test]
fn the_hub_key_rotates_and_its_nodes_follow_the_endorsement() {
    let mut hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    let first = pinned(&a);
    // A request waits for the node (offline) in the hub's outbox across the rotation.
    a.stop();
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "--no-wait", "exec", "--", "true"],
    );
    let waiting = r["id"].as_str().expect("id").to_string();

    // The key cannot change under a running hub.
    let busy = Command::new(reeve_bin())
        .args(["hub", "rotate-key"])
        .env("REEVE_HUB_DATA_DIR", hub.data_dir())
        .bounded_output()
        .expect("run");
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("is running"));

    hub.kill9();
    let rotated = rotate_hub_key(&hub, &["--overlap", "1h"]);
    assert_eq!(rotated["resealed"], 1, "{rotated}");
    let second = rotated["key"].as_str().expect("key").to_string();
    assert_ne!(second, first);
    hub.restart();
    a.start();
    hub.wait_online(&alice, "n1");
    // The node followed the endorsement, took the waiting request (sealed again under the
    // new key) and new ones, and pinned the new key (before its link served anything).
    let done = hub.wait_replied(&alice, &waiting);
    assert_eq!(done["reply"]["status"], "ok", "{done}");
    assert_eq!(pinned(&a), second);
    let reply = exec_true(&hub, &alice);
    assert_eq!(reply["reply"]["status"], "ok", "{reply}");
    assert!(
        a.events(None)
            .iter()
            .any(|e| e.message.contains("the hub rotated its key")),
        "the node's event log records the new pin"
    );
    let errors = hub.json(&alice, &["errors"]);
    assert!(
        errors
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["kind"] == "hub_key_rotated")),
        "{errors}"
    );

    // Rotated again with no overlap: the endorsement is closed at once, and the node
    // (pinned to the second key) refuses the third: it must join again.
    hub.kill9();
    let third = rotate_hub_key(&hub, &["--overlap", "0s"]);
    hub.restart();
    // The node answers the unendorsed key's challenge by hanging up: the hub logs the
    // handshake it could not finish.
    crate::helper::wait_for(
        std::time::Duration::from_secs(30),
        "the node refusing the hub's new key",
        || logged(&hub, &alice, "refused", "bad proof").then_some(()),
    );
    let nodes = hub.json(&alice, &["nodes"]);
    assert!(
        nodes
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["name"] == "n1" && n["online"] == false)),
        "{nodes}"
    );
    assert_eq!(pinned(&a), second, "{third}");
}
