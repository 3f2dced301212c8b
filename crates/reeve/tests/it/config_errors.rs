//! Bad input: invalid service files are reported with file, field and reason, every error
//! at once, and do not affect the other services; bad requests change nothing.

use crate::helper::Agent;
use reeve_proto::api::ServiceState;
use std::time::Duration;

#[test]
fn invalid_files_are_reported_and_others_still_run() {
    let mut a = Agent::new();
    a.service("good", "command = [\"sleep\", \"1000\"]\n");
    a.service(
        "bad",
        r#"
command = []
working_dir = "relative"
[restart]
policy = "sometimes"
"#,
    );
    a.service("typo", "comand = [\"sleep\"]\n");
    a.start();
    a.wait_status("good", Duration::from_secs(20), "running", |s| {
        s.state == ServiceState::Running
    });
    let names: Vec<String> = a.ps().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["good"]);
    let invalid: Vec<String> = a
        .events(None)
        .into_iter()
        .filter(|e| e.kind.as_str() == "config_invalid")
        .map(|e| e.message)
        .collect();
    let bad: Vec<&String> = invalid.iter().filter(|m| m.contains("bad.toml")).collect();
    assert!(
        bad.len() >= 2,
        "every error of bad.toml at once: {invalid:?}"
    );
    assert!(
        invalid
            .iter()
            .any(|m| m.contains("bad.toml") && m.contains("command"))
    );
    assert!(
        invalid
            .iter()
            .any(|m| m.contains("typo.toml") && m.contains("comand"))
    );

    // Reload reports the same, exits non-zero, and leaves `good` alone.
    let pid = a.status("good").pid;
    let out = a.cli(&["agent", "reload"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("typo.toml"),
        "{err}"
    );
    assert_eq!(a.status("good").pid, pid);

    // A running service whose file turns invalid keeps running as it was.
    a.service("good", "command = \n");
    let out = a.cli(&["agent", "reload"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(a.status("good").pid, pid);
}

#[test]
fn bad_api_requests_get_clear_errors() {
    let mut a = Agent::new();
    a.service("one", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    let out = a.cli(&["start", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\""));
    let out = a.cli(&["reload", "one"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no reload"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        a.status("one").state,
        ServiceState::Running,
        "nothing changed"
    );
    // Starting a running service is a no-op that answers at once (not after a time-out).
    let pid = a.status("one").pid;
    let t = std::time::Instant::now();
    let out = a.ok(&["start", "one"]);
    assert!(out.contains("running"), "{out}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "start of a running service hung"
    );
    assert_eq!(a.status("one").pid, pid);
}
