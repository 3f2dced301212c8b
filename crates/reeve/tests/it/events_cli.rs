//! The event log through the CLI: filters, --since, the live stream, retention; and
//! `reeve top` drawing a real terminal.

use crate::helper::BoundedOutput;
use crate::helper::{Agent, wait_for};
use reeve_proto::api::ServiceState;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn follow_streams_new_events_as_they_happen() {
    let mut a = Agent::new();
    a.service("svc", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    a.wait_status("svc", T, "running", |s| s.state == ServiceState::Running);
    let mut child = Command::new(crate::helper::reeve_bin())
        .args(["events", "-f", "--json", "--service", "svc", "-n", "0"])
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("events -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    a.ok(&["stop", "svc"]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"kind\":\"stopped\""))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no stopped event streamed; got {seen:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("\"kind\":\"action\"") && l.contains("uid:"))
    );
    assert!(
        seen.iter().all(|l| l.contains("\"service\":\"svc\"")),
        "filtered: {seen:?}"
    );
}

#[test]
fn since_and_text_output() {
    let mut a = Agent::new();
    a.service("svc", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    a.wait_status("svc", T, "running", |s| s.state == ServiceState::Running);
    let all = a.ok(&["events"]);
    assert!(
        all.contains("agent_started") && all.contains("svc"),
        "{all}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let recent = a.ok(&["events", "--since", "1s"]);
    assert!(!recent.contains("agent_started"), "{recent}");
    a.ok(&["restart", "svc"]);
    let recent = a.ok(&["events", "--since", "1s", "--service", "svc"]);
    assert!(recent.contains("restart requested"), "{recent}");
}

#[test]
fn retention_keeps_at_most_max_count() {
    let mut a = Agent::new();
    a.service("svc", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    for _ in 0..5 {
        a.ok(&["restart", "svc"]);
    }
    assert!(a.events(None).len() > 10);
    a.stop();
    // Retention runs at start.
    let child = a
        .agent_command()
        .args(["--events-max-count", "10"])
        .spawn()
        .expect("agent");
    a.child = Some(child);
    wait_for(T, "agent up", || {
        a.cli(&["ps"]).status.success().then_some(())
    });
    wait_for(T, "retention applied", || {
        (a.events(None).len() <= 10).then_some(())
    });
}

#[test]
fn top_draws_services_in_a_terminal() {
    if Command::new("script")
        .arg("--version")
        .bounded_output()
        .is_err()
    {
        eprintln!("script(1) missing: cannot give top a terminal here");
        return;
    }
    let mut a = Agent::new();
    a.service("shown", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    a.wait_status("shown", T, "running", |s| s.state == ServiceState::Running);
    // --foreground: top must stay in the terminal's foreground process group, or its first
    // tcsetattr (raw mode) stops it with SIGTTOU and SIGINT never gets through; -k: whatever
    // happens, nothing outlives 8 s.
    let cmd = format!(
        "stty cols 120 rows 30; timeout --foreground -k 5 -s INT 3 {} top --interval 200ms",
        crate::helper::reeve_bin().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt"))
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .output_within(Duration::from_secs(30))
        .expect("script");
    assert!(
        out.status.success() || out.status.code() == Some(124) || out.status.code() == Some(0),
        "{:?}",
        out.status
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("\u{1b}[?1049l"),
        "the terminal was restored after SIGINT; status {:?}, screen: {screen:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        screen.contains("shown")
            && screen.contains("running")
            && screen.contains("latest")
            && screen.contains("buddy_attached"),
        "{screen}"
    );
}
