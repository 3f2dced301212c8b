//! Start order (requires/provides/priority), reverse stop order, and reload touching only
//! what changed.

use crate::helper::{Agent, wait_for};
use reeve_proto::api::ServiceState;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn first_event(a: &Agent, service: &str, kind: &str) -> i64 {
    a.events(Some(service))
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .map(|e| e.id)
        .next_back()
        .unwrap_or_else(|| panic!("no {kind} event for {service}"))
}

#[test]
fn start_in_dependency_order_and_stop_in_reverse() {
    let mut a = Agent::new();
    let ready = a.dir.path().join("db.ready");
    // db becomes ready only after 300 ms; web must not start before that.
    a.service(
        "db",
        &format!(
            r#"
command = ["sh", "-c", "sleep 0.3; touch {r}; exec sleep 1000"]
provides = ["database"]
[health]
kind = "file_modified_within"
path = "{r}"
within = "1h"
interval = "100ms"
"#,
            r = ready.display()
        ),
    );
    a.service(
        "web",
        "command = [\"sleep\", \"1000\"]\nrequires = [\"database\"]\n",
    );
    a.service("cache", "command = [\"sleep\", \"1000\"]\npriority = -1\n");
    a.start();
    for s in ["db", "web", "cache"] {
        a.wait_status(s, T, "running", |st| st.state == ServiceState::Running);
    }
    let order: Vec<String> = a.ps().into_iter().map(|s| s.name).collect();
    assert_eq!(order, vec!["cache", "db", "web"]);
    assert!(
        first_event(&a, "db", "running") < first_event(&a, "web", "starting"),
        "web waited for db to be ready"
    );

    a.ok(&["stop", "--all"]);
    let web = first_event(&a, "web", "stopped");
    let db = first_event(&a, "db", "stopped");
    let cache = first_event(&a, "cache", "stopped");
    assert!(
        web < db && db < cache,
        "reverse order: web {web}, db {db}, cache {cache}"
    );
    a.ok(&["start", "--all"]);
    assert!(a.ps().iter().all(|s| s.state == ServiceState::Running));
}

#[test]
fn reload_touches_only_changed_services() {
    let mut a = Agent::new();
    a.service("keep", "command = [\"sleep\", \"1000\"]\n");
    a.service("change", "command = [\"sleep\", \"1000\"]\n");
    a.service("drop", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    let keep = a
        .wait_status("keep", T, "running", |s| s.state == ServiceState::Running)
        .pid;
    let change = a
        .wait_status("change", T, "running", |s| s.state == ServiceState::Running)
        .pid;
    let drop_pid = a
        .wait_status("drop", T, "running", |s| s.state == ServiceState::Running)
        .pid
        .expect("pid");

    a.service("change", "command = [\"sleep\", \"2000\"]\n");
    std::fs::remove_file(a.services_dir().join("drop.toml")).expect("rm");
    a.service("added", "command = [\"sleep\", \"1000\"]\n");
    let out = a.ok(&["agent", "reload", "--json"]);
    let report: reeve_proto::api::ReloadReport = serde_json::from_str(&out).expect("json");
    assert_eq!(report.added, vec!["added"]);
    assert_eq!(report.changed, vec!["change"]);
    assert_eq!(report.removed, vec!["drop"]);
    assert_eq!(report.unchanged, vec!["keep"]);

    assert_eq!(a.status("keep").pid, keep, "untouched");
    a.wait_status("change", T, "restarted with the new command", |s| {
        s.state == ServiceState::Running && s.pid.is_some() && s.pid != change
    });
    a.wait_status("added", T, "running", |s| s.state == ServiceState::Running);
    wait_for(T, "dropped service stopped", || {
        (!crate::helper::alive(drop_pid)).then_some(())
    });
    assert!(a.ps().iter().all(|s| s.name != "drop"));
    // Its buddy, the agent's child, exited: the agent reaped it (no zombie left behind).
    let agent = a.child.as_ref().map(|c| c.id()).expect("agent");
    wait_for(T, "the dropped service's buddy reaped", || {
        crate::helper::zombie_children(agent)
            .is_empty()
            .then_some(())
    });

    // SIGHUP does the same.
    a.service("hup", "command = [\"sleep\", \"1000\"]\n");
    let pid = a.child.as_ref().map(|c| c.id()).expect("agent");
    crate::helper::kill("HUP", pid);
    a.wait_status("hup", T, "added by SIGHUP", |s| {
        s.state == ServiceState::Running
    });
    assert_eq!(a.status("keep").pid, keep, "still untouched");
}
