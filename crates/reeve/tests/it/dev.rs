//! `reeve dev`, the README's first command: a hub, an agent and the example module come up
//! from nothing; the node is online, the module answers, the operator token works; Ctrl-C
//! stops everything (no service and no buddy left).

use crate::helper::BoundedOutput;
use crate::helper::{alive, reeve_bin, wait_for};
use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Stops `reeve dev` if the test fails half-way (everything it started stops with it).
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            crate::helper::kill("INT", self.0.id());
            let _ = wait_for(Duration::from_secs(30), "reeve dev to exit", || {
                self.0.try_wait().ok().flatten()
            });
        }
    }
}

#[test]
fn reeve_dev_brings_everything_up_and_ctrl_c_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, http, example) = (free_port(), free_port(), free_port());
    let child = Command::new(reeve_bin())
        .arg("dev")
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .args(["--hub-port", &hub.to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--example-port", &example.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("reeve dev");
    let mut dev = Dev(child);
    let stdout = dev.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut token = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if let Some(t) = line.split("operator token:").nth(1) {
            token = Some(t.trim().to_string());
        }
        if line.starts_with("Ctrl-C stops everything") {
            break;
        }
    }
    let token = token.expect("reeve dev printed an operator token");
    // The example module answers, the dashboard is served, the API knows the node.
    let page = wait_for(
        Duration::from_secs(20),
        "the example module answers",
        || http_get(example, "/").filter(|p| p.contains("200 OK")),
    );
    assert!(page.contains("kept running by reeve"), "{page}");
    let dash = http_get(http, "/").expect("dashboard");
    assert!(
        dash.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{dash}"
    );
    let env = std::fs::read_to_string(dir.path().join("dev/env")).expect("env file");
    assert!(env.contains(&token));
    // The CLI with what the env file exports (the hub's certificate pinned by it): no
    // trust on first use, nothing written to the known hubs file.
    let cert = Command::new(reeve_bin())
        .args(["hub", "cert-fingerprint", "--data-dir"])
        .arg(dir.path().join("dev/hub"))
        .bounded_output()
        .expect("cert-fingerprint");
    let cert = String::from_utf8_lossy(&cert.stdout).trim().to_string();
    assert!(
        env.contains(&format!("export REEVE_HUB_CERT={cert}\n")),
        "{env}"
    );
    let mut cli = Command::new(reeve_bin());
    cli.args(["nodes", "--json"])
        .env_remove("REEVE_HUB_CERT")
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    for line in env.lines() {
        let (k, v) = line
            .strip_prefix("export ")
            .and_then(|kv| kv.split_once('='))
            .unwrap_or_else(|| panic!("env file line {line:?}"));
        cli.env(k, v);
    }
    let nodes = cli.bounded_output().expect("reeve nodes");
    assert!(
        !String::from_utf8_lossy(&nodes.stderr).contains("first use"),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    assert!(!dir.path().join("config/reeve/known_hubs").exists());
    let list: serde_json::Value = serde_json::from_slice(&nodes.stdout).expect("json");
    assert_eq!(list[0]["name"], "dev", "{list}");
    assert_eq!(list[0]["online"], true, "{list}");
    // The buddy of the example's service, to check it is gone afterwards.
    let ps = Command::new(reeve_bin())
        .args(["ps", "--json"])
        .env("REEVE_SOCKET", dir.path().join("dev/agent.sock"))
        .bounded_output()
        .expect("reeve ps");
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps json");
    let buddy = ps[0]["buddy_pid"].as_u64().expect("buddy pid") as u32;
    let service = ps[0]["pid"].as_u64().expect("pid") as u32;

    crate::helper::kill("INT", dev.0.id());
    let status = wait_for(Duration::from_secs(30), "reeve dev to exit", || {
        dev.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
    wait_for(Duration::from_secs(10), "buddy and service gone", || {
        (!alive(buddy) && !alive(service)).then_some(())
    });
    assert!(
        http_get(example, "/").is_none(),
        "the example module stopped"
    );
}
