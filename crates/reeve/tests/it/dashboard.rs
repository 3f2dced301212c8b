//! The hub's web dashboard in a real browser: a hub and an agent as processes, then
//! `tests/browser/dashboard.mjs` (headless Chromium through playwright-core) logs in, stops
//! and starts a service, sends a request and checks that nothing leaves the hub's origin.
//! Skipped (with a message) where Chromium or the script's node modules are missing;
//! `scripts/test` installs both.

use crate::helper::hub::Hub;
use crate::helper::wait_for;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[test]
fn dashboard_in_a_real_browser() {
    let dir = browser_dir();
    if !Path::new(CHROMIUM).exists() || !dir.join("node_modules/playwright-core").is_dir() {
        eprintln!(
            "skipping the dashboard browser test: needs {CHROMIUM} and {}/node_modules \
             (scripts/test installs both)",
            dir.display()
        );
        return;
    }
    let hub = Hub::start();
    let op = hub.operator("alice", "operator");
    let mut a = hub.join("n1", None);
    a.service("web", "command = [\"sleep\", \"1000\"]\n");
    a.start();
    hub.wait_online(&op, "n1");
    // The hub knows the service is running before the browser looks.
    wait_for(Duration::from_secs(30), "n1's facts: web running", || {
        let (_, n) = hub.api(&op, "GET", "/api/v1/nodes/n1", None);
        (n["facts"]["services_running"] == 1).then_some(())
    });

    let mut child = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .env("HUB_URL", &hub.url)
        .env("OPERATOR_TOKEN", &op.token)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .spawn()
        .expect("run node");
    // Bounded: each step of the script waits 20 s at most; the whole run 5 minutes.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for node") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tests/browser/dashboard.mjs did not finish in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tests/browser/dashboard.mjs: {status}");
}
