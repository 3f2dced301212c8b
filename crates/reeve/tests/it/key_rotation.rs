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
