//! The agent's own life: kill -9 and restart with nothing lost, a killed buddy, one agent
//! per data directory, root refused, services never blocked by a missing agent.

use crate::helper::BoundedOutput;
use crate::helper::{Agent, alive, kill, kinds, wait_for};
use reeve_proto::api::ServiceState;
use std::process::Stdio;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn agent_kill9_keeps_services_and_loses_no_event() {
    let mut a = Agent::new();
    a.service("steady", "command = [\"sleep\", \"1000\"]\n");
    a.service(
        "victim",
        "command = [\"sleep\", \"1000\"]\n[restart]\nbackoff_initial = \"0s\"\n",
    );
    a.start();
    let steady = a.wait_status("steady", T, "running", |s| s.state == ServiceState::Running);
    let victim = a.wait_status("victim", T, "running", |s| s.state == ServiceState::Running);
    let (steady_pid, victim_pid) = (steady.pid.expect("pid"), victim.pid.expect("pid"));

    a.kill9();
    // While the agent is away, the victim crashes twice; its buddy restarts it each time.
    kill("KILL", victim_pid);
    let new_pid = wait_for(T, "restart by the buddy", || {
        // Find the new victim: a `sleep 1000` that leads its own session and is neither old pid.
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| *p != victim_pid && *p != steady_pid && is_service_of(*p, &a))
    });
    kill("KILL", new_pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(steady_pid),
        "a service keeps running with the agent gone"
    );

    a.start();
    let s = a.status("steady");
    assert_eq!(s.pid, Some(steady_pid), "same pid after re-attach");
    let v = a.wait_status("victim", T, "running", |s| s.state == ServiceState::Running);
    assert!(v.pid.is_some() && v.pid != Some(victim_pid) && v.pid != Some(new_pid));
    let evs = a.events(Some("victim"));
    let exits: Vec<u64> = evs
        .iter()
        .filter(|e| e.kind.as_str() == "exited")
        .filter_map(|e| e.detail["pid"].as_u64())
        .collect();
    assert_eq!(
        exits,
        vec![victim_pid as u64, new_pid as u64],
        "both exits of the gap are in the log"
    );
    let restarts = evs
        .iter()
        .filter(|e| e.kind.as_str() == "running" && e.message.contains("restarted"))
        .count();
    assert_eq!(
        restarts,
        2,
        "both restarts of the gap are in the log: {:?}",
        kinds(&evs)
    );
    assert!(kinds(&evs).contains(&"buddy_attached"));
    // Nothing is stored twice after a second restart of the agent.
    a.stop();
    a.start();
    let again = a.events(Some("victim"));
    assert_eq!(
        again.iter().filter(|e| e.kind.as_str() == "exited").count(),
        2
    );
}

/// True if `pid` is a `sleep 1000` under this fixture's buddies (its parent is a buddy).
fn is_service_of(pid: u32, a: &Agent) -> bool {
    let Ok(cmd) = std::fs::read_to_string(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if cmd != "sleep\u{0}1000\u{0}" {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let ppid: u32 = rest
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let Ok(pcmd) = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")) else {
        return false;
    };
    pcmd.contains("reeve-buddy")
        && pcmd.contains(&a.data_dir().join("run/victim").display().to_string())
}

#[test]
fn fast_output_is_never_blocked_while_the_agent_is_away() {
    let mut a = Agent::new();
    let done = a.dir.path().join("done");
    a.service(
        "firehose",
        &format!(
            r#"
command = ["sh", "-c", "head -c 30000000 /dev/zero | tr '\\0' 'x' | fold -w 100; touch {d}; sleep 1000"]
[log]
max_size = "1MiB"
keep = 2
"#,
            d = done.display()
        ),
    );
    a.start();
    a.kill9();
    wait_for(
        Duration::from_secs(60),
        "30 MB written with no agent",
        || done.exists().then_some(()),
    );
}

#[test]
fn killed_buddy_is_recorded_and_its_service_not_orphaned() {
    let mut a = Agent::new();
    a.service("guarded", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    let s = a.wait_status("guarded", T, "running", |s| {
        s.state == ServiceState::Running
    });
    let (pid, buddy) = (s.pid.expect("pid"), s.buddy_pid.expect("buddy"));
    kill("KILL", buddy);
    let s2 = a.wait_status("guarded", T, "running under a new buddy", |s| {
        s.state == ServiceState::Running && s.buddy_pid.is_some() && s.buddy_pid != Some(buddy)
    });
    assert!(
        !alive(pid),
        "the orphaned service was stopped, not left unsupervised"
    );
    assert_ne!(s2.pid, Some(pid));
    let evs = a.events(Some("guarded"));
    let lost = evs
        .iter()
        .find(|e| e.kind.as_str() == "buddy_lost")
        .expect("buddy_lost event");
    assert_eq!(lost.detail["orphan_pid"].as_u64(), Some(pid as u64));
    assert!(lost.message.contains("was stopped"), "{}", lost.message);
}

#[test]
fn a_second_agent_on_the_same_data_dir_is_refused() {
    let mut a = Agent::new();
    a.start();
    let out = a
        .agent_command()
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt2"))
        .stderr(Stdio::piped())
        .bounded_output()
        .expect("run second agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = a.child.as_ref().map(|c| c.id()).expect("first agent");
    assert!(
        err.contains("another agent") && err.contains(&pid.to_string()),
        "{err}"
    );
}

#[test]
fn root_is_refused_without_allow_root() {
    let a = Agent::new();
    let mut cmd = std::process::Command::new(crate::helper::reeve_bin());
    cmd.args(["agent", "--data-dir"])
        .arg(a.data_dir())
        .arg("--services-dir")
        .arg(a.services_dir())
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt"))
        .env_remove("REEVE_ALLOW_ROOT")
        .stderr(Stdio::piped());
    let out = cmd.bounded_output().expect("run agent");
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to run as root") && err.contains("--allow-root"),
            "{err}"
        );
        assert!(!a.data_dir().exists(), "a refused agent changes nothing");
    } else {
        eprintln!("not root: the refusal cannot be exercised here");
    }
}

#[test]
fn agent_opens_no_tcp_port_and_socket_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut a = Agent::new();
    a.start();
    let pid = a.child.as_ref().map(|c| c.id()).expect("agent");
    let mode = std::fs::metadata(a.socket().parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // No listening TCP socket belongs to the agent: compare its socket inodes with /proc/net/tcp*.
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) == Some(&"0A") {
                assert!(
                    !inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)),
                    "agent listens on TCP: {line}"
                );
            }
        }
    }
}

#[test]
fn buddy_killed_while_the_agent_is_away_leaves_no_orphan() {
    let mut a = Agent::new();
    a.service("lonely", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    let s = a.wait_status("lonely", T, "running", |s| s.state == ServiceState::Running);
    let (pid, buddy) = (s.pid.expect("pid"), s.buddy_pid.expect("buddy"));
    a.kill9();
    kill("KILL", buddy);
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pid), "the orphan runs on until an agent sees it");
    a.start();
    let s2 = a.wait_status("lonely", T, "running under a new buddy", |s| {
        s.state == ServiceState::Running && s.buddy_pid.is_some() && s.buddy_pid != Some(buddy)
    });
    assert!(!alive(pid), "the orphan was stopped");
    assert_ne!(s2.pid, Some(pid));
    let lost = a
        .events(Some("lonely"))
        .into_iter()
        .find(|e| e.kind.as_str() == "buddy_lost")
        .expect("buddy_lost");
    assert_eq!(lost.detail["orphan_pid"].as_u64(), Some(pid as u64));
}
