//! Prometheus metrics: the hub's `/metrics` and the agent's opt-in one, as real processes.
//! `promtool check metrics` (Debian `prometheus`, installed by scripts/test) passes on both,
//! and the numbers are right: one node connected, a restart and a health check failure
//! counted, the relay up. The agent refuses a non-loopback metrics address.

use crate::helper::BoundedOutput;
use crate::helper::hub::Hub;
use crate::helper::{Agent, wait_for};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// GET `url` (TLS certificates unchecked: the hub's is self-signed); (status, body).
pub fn fetch(url: &str) -> (u16, String) {
    const PY: &str = r#"
import ssl, sys, urllib.request, urllib.error
ctx = ssl._create_unverified_context()
try:
    r = urllib.request.urlopen(sys.argv[1], context=ctx, timeout=20)
    sys.stdout.write(str(r.status) + "\n" + r.headers.get("content-type", "") + "\n" + r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(str(e.code) + "\n\n" + e.read().decode())
except Exception as e:
    sys.stdout.write("0\n\n" + str(e))
"#;
    let out = Command::new("python3")
        .args(["-c", PY, url])
        .bounded_output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.splitn(3, '\n');
    let status = parts.next().unwrap_or("0").trim().parse().unwrap_or(0);
    let ct = parts.next().unwrap_or("");
    if status == 200 {
        assert!(ct.starts_with("text/plain"), "{url}: content type {ct}");
    }
    (status, parts.next().unwrap_or("").to_string())
}

/// The value of the sample `series` (name with labels, exactly as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `promtool check metrics` on `text`; None when promtool is not installed.
fn promtool(text: &str) -> Option<Result<(), String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

fn check_with_promtool(what: &str, text: &str) {
    match promtool(text) {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            panic!("promtool check metrics failed on the {what}'s metrics:\n{e}\n{text}")
        }
        None => eprintln!(
            "promtool is not installed (Debian package prometheus; scripts/test installs it): \
             the {what}'s metrics were not linted"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn hub_and_agent_metrics_pass_promtool_and_count_right() {
    let hub = Hub::start();
    let op = hub.operator("alice", "operator");

    let mut a = hub.join("n1", None);
    a.service("web", "command = [\"sleep\", \"1000\"]\n");
    a.service(
        "crashy",
        r#"
command = ["sh", "-c", "sleep 0.2; exit 3"]
[restart]
backoff_initial = "50ms"
backoff_max = "100ms"
max_consecutive_failures = 2
"#,
    );
    let flag = a.dir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    a.service(
        "checked",
        &format!(
            r#"
command = ["sleep", "1000"]
[health]
kind = "exec"
command = ["test", "-e", "{}"]
interval = "200ms"
timeout = "200ms"
threshold = 2
on_failure = "mark"
"#,
            flag.display()
        ),
    );
    let port = free_port();
    let child = a
        .agent_command()
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("spawn agent");
    a.child = Some(child);
    wait_for(T, "the agent", || {
        a.cli(&["ps", "--json"]).status.success().then_some(())
    });
    hub.wait_online(&op, "n1");

    // A restart, a failure, a health check failing.
    a.wait_status("crashy", T, "failed", |s| {
        s.state == reeve_proto::api::ServiceState::Failed
    });
    a.wait_status("checked", T, "running", |s| {
        s.state == reeve_proto::api::ServiceState::Running
    });
    std::fs::remove_file(&flag).expect("unflag");
    a.wait_status("checked", T, "unhealthy", |s| {
        s.state == reeve_proto::api::ServiceState::Unhealthy
    });
    // A message through the hub, replied.
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

    let agent_url = format!("http://127.0.0.1:{port}/metrics");
    let agent = wait_for(T, "the agent's metrics to settle", || {
        let (status, text) = fetch(&agent_url);
        (status == 200
            && sample(&text, "reeve_agent_relay_connected") == Some(1.0)
            && sample(&text, "reeve_agent_outbox_pending") == Some(0.0))
        .then_some(text)
    });
    check_with_promtool("agent", &agent);
    let s =
        |series: &str| sample(&agent, series).unwrap_or_else(|| panic!("no {series} in\n{agent}"));
    assert_eq!(s("reeve_agent_services{state=\"running\"}"), 1.0, "{agent}");
    assert_eq!(s("reeve_agent_services{state=\"failed\"}"), 1.0, "{agent}");
    assert_eq!(
        s("reeve_agent_services{state=\"unhealthy\"}"),
        1.0,
        "{agent}"
    );
    assert!(
        s("reeve_agent_service_restarts_total{service=\"crashy\"}") >= 1.0,
        "{agent}"
    );
    assert_eq!(
        s("reeve_agent_service_restarts_total{service=\"web\"}"),
        0.0
    );
    assert_eq!(
        s("reeve_agent_health_check_failures_total{service=\"checked\"}"),
        1.0,
        "{agent}"
    );
    assert!(
        s("reeve_agent_events_total{kind=\"exited\"}") >= 2.0,
        "{agent}"
    );
    assert_eq!(s("reeve_agent_inbox_pending"), 0.0, "{agent}");

    let hub_url = format!("{}/metrics", hub.url);
    let text = wait_for(T, "the hub's metrics to settle", || {
        let (status, text) = fetch(&hub_url);
        (status == 200 && sample(&text, "reeve_hub_messages{state=\"replied\"}") == Some(1.0))
            .then_some(text)
    });
    check_with_promtool("hub", &text);
    let s =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(s("reeve_hub_nodes_connected"), 1.0, "{text}");
    assert_eq!(s("reeve_hub_nodes_enrolled"), 1.0, "{text}");
    assert_eq!(
        s("reeve_hub_join_attempts_total{outcome=\"enrolled\"}"),
        1.0
    );
    assert_eq!(s("reeve_hub_messages_accepted_total"), 1.0, "{text}");
    assert_eq!(s("reeve_hub_messages{state=\"accepted\"}"), 0.0);
    assert_eq!(s("reeve_hub_dead_letters_total"), 0.0);
    assert!(
        s("reeve_hub_api_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"200\"}")
            >= 1.0,
        "{text}"
    );

    // Once the agent is gone, the hub counts no connected node.
    a.stop();
    wait_for(T, "the hub to see n1 go", || {
        let (_, text) = fetch(&hub_url);
        (sample(&text, "reeve_hub_nodes_connected") == Some(0.0)).then_some(())
    });
}

#[test]
fn the_agent_refuses_a_non_loopback_metrics_address() {
    let a = Agent::new();
    let out = a
        .agent_command()
        .args(["--metrics-listen", "0.0.0.0:9464"])
        .stderr(Stdio::piped())
        .bounded_output()
        .expect("run agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
