//! Restart policy, back-off, health checks, stop escalation, logs: driven through a real
//! agent and real buddies.

use crate::helper::{Agent, alive, kill, kinds, wait_for};
use reeve_proto::api::ServiceState;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn crash_loop_backs_off_then_fails() {
    let mut a = Agent::new();
    a.service(
        "crashy",
        r#"
command = ["sh", "-c", "echo dying >&2; exit 3"]
[restart]
backoff_initial = "50ms"
backoff_max = "200ms"
max_consecutive_failures = 4
"#,
    );
    a.start();
    let s = a.wait_status("crashy", T, "failed", |s| s.state == ServiceState::Failed);
    assert_eq!(s.last_exit.and_then(|e| e.code), Some(3));
    let evs = a.events(Some("crashy"));
    let k = kinds(&evs);
    assert_eq!(k.iter().filter(|k| **k == "exited").count(), 4, "{k:?}");
    let delays: Vec<u64> = evs
        .iter()
        .filter(|e| e.kind.as_str() == "backing_off")
        .map(|e| e.detail["delay_ms"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        delays,
        vec![50, 100, 200],
        "exponential, capped at backoff_max"
    );
    let failed = evs
        .iter()
        .find(|e| e.kind.as_str() == "failed")
        .expect("failed event");
    let last_lines = failed.detail["last_lines"].to_string();
    assert!(
        last_lines.contains("dying"),
        "failure carries the last log lines: {last_lines}"
    );
    // An explicit start clears `failed`.
    a.ok(&["start", "crashy", "--no-wait"]);
    wait_for(T, "a new start after failed", || {
        (a.events(Some("crashy"))
            .iter()
            .filter(|e| e.kind.as_str() == "exited")
            .count()
            > 4)
        .then_some(())
    });
}

#[test]
fn backoff_resets_after_a_healthy_window() {
    let mut a = Agent::new();
    let flag = a.dir.path().join("long");
    // Crashes at once until the flag exists; then runs 1.5 s (longer than reset_after) and crashes.
    a.service(
        "flappy",
        &format!(
            r#"
command = ["sh", "-c", "if [ -e {flag} ]; then sleep 1.5; fi; exit 1"]
[restart]
backoff_initial = "100ms"
backoff_max = "5s"
reset_after = "1s"
"#,
            flag = flag.display()
        ),
    );
    a.start();
    wait_for(T, "three back-offs", || {
        let n = a
            .events(Some("flappy"))
            .iter()
            .filter(|e| e.kind.as_str() == "backing_off")
            .count();
        (n >= 3).then_some(())
    });
    std::fs::write(&flag, "").expect("flag");
    let evs = wait_for(T, "a back-off after a long run", || {
        let evs = a.events(Some("flappy"));
        let long_exit = evs.iter().position(|e| {
            e.kind.as_str() == "exited" && e.detail["uptime_ms"].as_u64() >= Some(1400)
        })?;
        evs[long_exit..]
            .iter()
            .any(|e| e.kind.as_str() == "backing_off")
            .then_some(evs)
    });
    let long_exit = evs
        .iter()
        .position(|e| e.kind.as_str() == "exited" && e.detail["uptime_ms"].as_u64() >= Some(1400))
        .expect("long exit");
    let before: Vec<u64> = evs[..long_exit]
        .iter()
        .filter(|e| e.kind.as_str() == "backing_off")
        .map(|e| e.detail["delay_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        before.iter().any(|d| *d >= 400),
        "back-off grew before: {before:?}"
    );
    let after = evs[long_exit..]
        .iter()
        .find(|e| e.kind.as_str() == "backing_off")
        .and_then(|e| e.detail["delay_ms"].as_u64());
    assert_eq!(
        after,
        Some(100),
        "back-off reset to the initial delay after a healthy window"
    );
}

#[test]
fn failing_health_check_restarts_the_service() {
    let mut a = Agent::new();
    let ok = a.dir.path().join("healthy");
    std::fs::write(&ok, "").expect("flag");
    a.service(
        "checked",
        &format!(
            r#"
command = ["sleep", "1000"]
[health]
kind = "exec"
command = ["test", "-e", "{ok}"]
interval = "200ms"
timeout = "200ms"
threshold = 2
"#,
            ok = ok.display()
        ),
    );
    a.start();
    let first = a.wait_status("checked", T, "ready", |s| s.state == ServiceState::Running);
    let pid = first.pid.expect("pid");
    std::fs::remove_file(&ok).expect("unflag");
    let evs = wait_for(T, "unhealthy and restarted", || {
        let evs = a.events(Some("checked"));
        (evs.iter().any(|e| e.kind.as_str() == "unhealthy")
            && evs.iter().any(|e| {
                e.kind.as_str() == "exited" && e.detail["pid"].as_u64() == Some(pid as u64)
            }))
        .then_some(evs)
    });
    assert!(
        evs.iter()
            .any(|e| e.kind.as_str() == "unhealthy" && e.message.contains("restarting"))
    );
    let s = a.status("checked");
    assert_ne!(s.pid, Some(pid), "a new process replaced the unhealthy one");
    // Not ready again until the check passes.
    assert_eq!(s.state, ServiceState::Starting);
    std::fs::write(&ok, "").expect("flag");
    a.wait_status("checked", T, "ready again", |s| {
        s.state == ServiceState::Running
    });
}

#[test]
fn stop_escalates_to_sigkill_of_the_whole_group() {
    let mut a = Agent::new();
    let pidfile = a.dir.path().join("grandchild.pid");
    a.service(
        "stubborn",
        &format!(
            r#"
command = ["sh", "-c", "trap '' TERM; sleep 1000 & echo $! > {p}; while true; do sleep 1; done"]
[stop]
kill_timeout = "300ms"
"#,
            p = pidfile.display()
        ),
    );
    a.start();
    let s = a.wait_status("stubborn", T, "running", |s| {
        s.state == ServiceState::Running
    });
    let grandchild: u32 = wait_for(T, "grandchild pid", || {
        crate::helper::read(&pidfile).trim().parse().ok()
    });
    assert!(alive(grandchild));
    let out = a.ok(&["stop", "stubborn"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(s.pid.expect("pid")), "service gone");
    wait_for(Duration::from_secs(5), "grandchild gone", || {
        (!alive(grandchild)).then_some(())
    });
    let k = kinds(&a.events(Some("stubborn")));
    let stopping = k.iter().position(|k| *k == "stopping").expect("stopping");
    let killed = k
        .iter()
        .position(|k| *k == "killed")
        .expect("killed after kill_timeout");
    assert!(stopping < killed);
    assert_eq!(k.last(), Some(&"stopped"));
    // The actor of the stop is the local user.
    let evs = a.events(Some("stubborn"));
    assert!(
        evs.iter()
            .any(|e| e.kind.as_str() == "action" && e.actor.starts_with("uid:"))
    );
}

#[test]
fn logs_are_captured_with_streams_and_rotated() {
    let mut a = Agent::new();
    a.service(
        "talker",
        r#"
command = ["sh", "-c", "i=0; while [ $i -lt 150 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done; sleep 1000"]
[log]
max_size = "4KiB"
keep = 2
"#,
    );
    a.start();
    let dir = a.log_dir("talker");
    // stdout and stderr are separate pipes: their lines interleave by chunk, not by line.
    let all = || -> String {
        ["current.log.2", "current.log.1", "current.log"]
            .iter()
            .map(|f| crate::helper::read(&dir.join(f)))
            .collect()
    };
    wait_for(T, "rotated logs with both streams", || {
        let text = all();
        (dir.join("current.log.2").exists()
            && text.contains(" e err-149\n")
            && text.contains(" o out-149\n"))
        .then_some(())
    });
    assert!(!dir.join("current.log.3").exists(), "keep = 2");
    for f in ["current.log", "current.log.1", "current.log.2"] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 4096, "{f} is {len} bytes");
    }
    let out = a.ok(&["logs", "talker", "-n", "20"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20, "{out}");
    assert!(out.contains("-149"), "{out}");
    assert!(lines[0].starts_with("20"), "timestamped: {}", lines[0]);
}

#[test]
fn signals_reload_and_custom_actions() {
    let mut a = Agent::new();
    let marker = a.dir.path().join("marker");
    a.service(
        "sig",
        &format!(
            r#"
command = ["sh", "-c", "trap 'echo hup >> {m}' HUP; trap 'echo usr1 >> {m}' USR1; while true; do sleep 0.05; done"]
[reload]
signal = "HUP"
[actions.rotate]
signal = "USR1"
[actions.touch]
command = ["sh", "-c", "echo cmd-$REEVE_SERVICE >> {m}"]
"#,
            m = marker.display()
        ),
    );
    a.start();
    a.wait_status("sig", T, "running", |s| s.state == ServiceState::Running);
    std::thread::sleep(Duration::from_millis(200));
    a.ok(&["reload", "sig"]);
    a.ok(&["action", "sig", "rotate"]);
    a.ok(&["action", "sig", "touch"]);
    wait_for(T, "all three effects", || {
        let m = crate::helper::read(&marker);
        (m.contains("hup") && m.contains("usr1") && m.contains("cmd-sig")).then_some(())
    });
    let bad = a.cli(&["action", "sig", "nope"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no action \"nope\"") && err.contains("rotate"),
        "{err}"
    );
    let missing = a.cli(&["stop", "ghost"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no service named"));
    let _ = kill; // silence unused import on some cfgs
}
