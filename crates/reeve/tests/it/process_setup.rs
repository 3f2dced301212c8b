//! What a service gets at exec: user and group, resource limits, environment, working
//! directory, a clean signal mask, no inherited descriptors; and its output piped to a
//! command.

use crate::helper::{Agent, read, wait_for};
use reeve_proto::api::ServiceState;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    read(std::path::Path::new(&format!("/proc/{pid}/{file}")))
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn environment_directory_limits_and_clean_state() {
    let mut a = Agent::new();
    let work = a.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    a.service(
        "env",
        &format!(
            r#"
command = ["sh", "-c", "echo \"$GREETING from $(pwd)\"; exec sleep 1000"]
working_dir = "{w}"
env = {{ GREETING = "hello" }}
[limits]
nofile = {{ soft = 123, hard = 456 }}
"#,
            w = work.display()
        ),
    );
    a.start();
    let s = a.wait_status("env", T, "running", |s| s.state == ServiceState::Running);
    let pid = s.pid.expect("pid");
    let limits = read(std::path::Path::new(&format!("/proc/{pid}/limits")));
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile line");
    assert!(nofile.contains("123") && nofile.contains("456"), "{nofile}");
    wait_for(T, "greeting in the log", || {
        a.ok(&["logs", "env"])
            .contains(&format!("hello from {}", work.display()))
            .then_some(())
    });
    // Signal mask and ignored signals are reset; only 0, 1, 2 are open.
    assert_eq!(
        proc_field(pid, "status", "SigBlk:")
            .split_whitespace()
            .nth(1),
        Some("0000000000000000")
    );
    assert_eq!(
        proc_field(pid, "status", "SigIgn:")
            .split_whitespace()
            .nth(1),
        Some("0000000000000000")
    );
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    let mut fds = fds;
    fds.sort();
    assert_eq!(fds, vec!["0", "1", "2"], "no inherited descriptors");
    // Its own session and process group.
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
    let rest: Vec<&str> = stat[stat.rfind(')').expect("stat") + 1..]
        .split_whitespace()
        .collect();
    assert_eq!(rest[2], pid.to_string(), "process group leader");
    assert_eq!(rest[3], pid.to_string(), "session leader");
}

#[test]
fn runs_as_another_user_when_the_agent_may() {
    let is_root = read(std::path::Path::new("/proc/self/status"))
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root {
        eprintln!("not root: switching users cannot be exercised here");
        return;
    }
    let mut a = Agent::new();
    a.service(
        "nobody",
        "command = [\"sleep\", \"1000\"]\nuser = \"nobody\"\n",
    );
    a.start();
    let s = a.wait_status("nobody", T, "running", |s| s.state == ServiceState::Running);
    let pid = s.pid.expect("pid");
    let uid = proc_field(pid, "status", "Uid:");
    let nobody = read(std::path::Path::new("/etc/passwd"))
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .and_then(|l| l.split(':').nth(2).map(str::to_owned))
        .expect("nobody in /etc/passwd");
    assert!(uid.split_whitespace().skip(1).all(|u| u == nobody), "{uid}");
    let groups = proc_field(pid, "status", "Groups:");
    assert!(
        !groups.split_whitespace().skip(1).any(|g| g == "0"),
        "no root supplementary group: {groups}"
    );
}

#[test]
fn output_can_be_piped_to_a_command() {
    let mut a = Agent::new();
    let sink = a.dir.path().join("sink");
    a.service(
        "piped",
        &format!(
            r#"
command = ["sh", "-c", "echo to-the-pipe; exec sleep 1000"]
[log]
pipe = "cat >> {s}"
to_file = false
"#,
            s = sink.display()
        ),
    );
    a.start();
    wait_for(T, "output in the pipe command's file", || {
        read(&sink).contains("to-the-pipe").then_some(())
    });
    let current = a.log_dir("piped").join("current.log");
    assert!(
        !read(&current).contains("to-the-pipe"),
        "to_file = false writes no file"
    );
}
