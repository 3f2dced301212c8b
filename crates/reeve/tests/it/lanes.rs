//! Lanes (DESIGN.md §2.1): a command holding up the ordered lane delays neither control
//! messages (priority lane) nor unordered commands, and unordered commands run side by
//! side.

use crate::fleet::{joined, queue_sh, send};
use crate::helper::hub::Hub;
use crate::helper::wait_for;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A shell line that marks `mine` and then waits for `theirs` (for at most 20 s).
fn meet(mine: &Path, theirs: &Path) -> String {
    format!(
        "touch {m}; i=0; while [ ! -e {t} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; [ -e {t} ]",
        m = mine.display(),
        t = theirs.display()
    )
}

#[test]
fn control_and_unordered_messages_pass_a_command_that_holds_the_ordered_lane() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    let dir = a.dir.path().to_path_buf();
    let (started, gate) = (dir.join("started"), dir.join("gate"));

    // The ordered lane is held until the test opens the gate.
    let holder = queue_sh(&hub, &alice, &[], "exec", &meet(&started, &gate));
    wait_for(T, "the holding command started", || {
        started.exists().then_some(())
    });

    // A status query takes the priority lane: answered while the holder runs.
    let ps = send(&hub, &alice, &["--to", "n1", "--wait", "20s", "ops.ps"]);
    assert_eq!(ps["reply"]["status"], "ok", "{ps}");
    // ...and lists what runs now: the holder (and itself).
    let running = ps["reply"]["running"].as_array().expect("running");
    assert!(
        running
            .iter()
            .any(|r| r["id"] == holder.as_str() && r["method"] == "exec"),
        "{ps}"
    );
    assert!(
        ps["reply"]["methods"]
            .as_array()
            .is_some_and(|m| m.len() > 10),
        "{ps}"
    );
    let shown = hub.json_any(&alice, &["messages", "show", &holder]);
    assert_eq!(shown["state"], "delivered", "still running: {shown}");
    assert_eq!(shown["lane"], "ordered", "{shown}");

    // Two unordered commands that each wait for the other: only side by side can both
    // succeed (one after the other, the first gives up after 20 s and exits 1).
    let (ping, pong) = (dir.join("ping"), dir.join("pong"));
    let mut ids = Vec::new();
    for (mine, theirs) in [(&ping, &pong), (&pong, &ping)] {
        ids.push(queue_sh(
            &hub,
            &alice,
            &["--unordered"],
            "exec",
            &meet(mine, theirs),
        ));
    }
    for id in &ids {
        let m = hub.wait_replied(&alice, id);
        assert_eq!(m["lane"], "unordered", "{m}");
        assert_eq!(m["reply"]["exit_code"], 0, "ran side by side: {m}");
    }
    let shown = hub.json_any(&alice, &["messages", "show", &holder]);
    assert_eq!(shown["state"], "delivered", "still running: {shown}");
    // `reeve messages` shows each message's lane.
    let table = String::from_utf8_lossy(&hub.as_op(&alice, &["messages"]).stdout).to_string();
    assert!(
        table.lines().next().is_some_and(|h| h.contains("LANE")),
        "{table}"
    );
    for lane in ["ordered", "priority", "unordered"] {
        assert!(table.contains(lane), "{lane}: {table}");
    }

    // The gate opens: the holder finishes, having seen none of this.
    std::fs::write(&gate, "").expect("gate");
    let m = hub.wait_replied(&alice, &holder);
    assert_eq!(m["reply"]["exit_code"], 0, "{m}");
}

#[test]
fn one_sender_runs_at_most_four_unordered_commands_at_once() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let mut a = joined(&hub, "n1", &[&alice]);
    a.start();
    hub.wait_online(&alice, "n1");
    let dir = a.dir.path().to_path_buf();
    let gate = dir.join("gate");
    let mut ids = Vec::new();
    for i in 0..6 {
        let cmd = meet(&dir.join(format!("started-{i}")), &gate);
        ids.push(queue_sh(&hub, &alice, &["--unordered"], "exec", &cmd));
    }
    let running = || {
        (0..6)
            .filter(|i| dir.join(format!("started-{i}")).exists())
            .count()
    };
    wait_for(T, "four started", || (running() >= 4).then_some(()));
    // Give a fifth every chance to start if the cap did not hold.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(), 4, "the cap per sender");
    std::fs::write(&gate, "").expect("gate");
    for id in &ids {
        let m = hub.wait_replied(&alice, id);
        assert_eq!(m["reply"]["exit_code"], 0, "{m}");
    }
    assert_eq!(running(), 6);
}
