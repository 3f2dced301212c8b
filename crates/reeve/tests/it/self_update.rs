//! Self-update through the launcher (DESIGN §2.4): the agent runs under
//! `reeve-buddy launch`; `reeve agent update` fetches the signed `reeve-agent` package from
//! a real HTTP registry, and the launcher runs the new agent on trial. A good update is
//! committed; one that crashes at start or never reports healthy is switched back. The
//! services keep their pids through all of it.
//!
//! The packages hold a `bin/reeve` script: for the good one it execs the `reeve` under test
//! (a package of the real debug binary would be hundreds of megabytes), for the broken ones
//! it crashes or hangs. The launcher tells the agent which package version it runs.

use crate::fleet::{joined, send};
use crate::helper::hub::Hub;
use crate::helper::registry::{Registry, publish, python3_present, serve};
use crate::helper::{Agent, reeve_bin, wait_for};
use reeve_modules::sign;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct Fixture {
    a: Agent,
    reg: Registry,
    reg_dir: PathBuf,
    keys: sign::KeyPair,
    home: PathBuf,
}

/// An agent with one `sleep` service under its launcher, a registry and a trusted key.
fn launched() -> Option<Fixture> {
    launched_as(Agent::new())
}

/// Like [`launched`], with the agent fixture `a` (a node joined to a hub, say).
fn launched_as(mut a: Agent) -> Option<Fixture> {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing (scripts/test installs it)");
        return None;
    }
    a.service("sleeper", "command = [\"sleep\", \"1000\"]\n");
    let root = a.dir.path().to_path_buf();
    let reg_dir = root.join("registry");
    std::fs::create_dir_all(&reg_dir).expect("registry dir");
    let keys = sign::generate_keypair().expect("keygen");
    let trusted = root.join("trusted-keys");
    std::fs::create_dir_all(&trusted).expect("keys dir");
    std::fs::write(trusted.join("vendor.pub"), keys.public.to_file_text()).expect("key");
    let reg = serve(&reg_dir);
    let home = root.join("launcher");
    let trusted = trusted.display().to_string();
    let child = a
        .launcher_command(&home, &["--registry", &reg.url, "--trusted-keys", &trusted])
        .spawn()
        .expect("launcher");
    a.child = Some(child);
    wait_for(T, "the agent under its launcher", || {
        a.cli(&["ps"]).status.success().then_some(())
    });
    a.wait_status("sleeper", T, "sleeper running", |s| s.pid.is_some());
    Some(Fixture {
        a,
        reg,
        reg_dir,
        keys,
        home,
    })
}

/// Publishes `reeve-agent@version` whose `bin/reeve` is `script`.
fn publish_agent(f: &Fixture, version: &str, script: &str) {
    publish_agent_with(f, version, script, false);
}

/// Like [`publish_agent`]; `with_buddy`: the package carries its own `bin/reeve-buddy` (a
/// copy of the one under test), which the script makes the new agent use.
fn publish_agent_with(f: &Fixture, version: &str, script: &str, with_buddy: bool) {
    let dir = f.a.dir.path().join(format!("pkg-{version}"));
    std::fs::create_dir_all(dir.join("bin")).expect("pkg dir");
    if with_buddy {
        std::fs::copy(crate::helper::buddy_bin(), dir.join("bin/reeve-buddy")).expect("copy");
    }
    std::fs::write(
        dir.join("module.toml"),
        format!("name = \"reeve-agent\"\nversion = \"{version}\"\n"),
    )
    .expect("manifest");
    let exe = dir.join("bin/reeve");
    std::fs::write(&exe, script).expect("script");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    publish(&dir, &f.reg_dir, "reeve-agent", version, &f.keys.secret);
}

/// A `bin/reeve` that answers `--version` and otherwise runs `body`.
fn broken(body: &str) -> String {
    format!("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'reeve 9'; exit 0; fi\n{body}\n")
}

fn info(a: &Agent) -> serde_json::Value {
    serde_json::from_str(&a.ok(&["agent", "info", "--json"])).expect("info json")
}

fn update(a: &Agent, version: &str, trial: &str) -> (Option<i32>, serde_json::Value, String) {
    let out = a.cli(&[
        "agent",
        "update",
        "--version",
        version,
        "--trial-timeout",
        trial,
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

fn sleeper_pid(a: &mut Agent) -> Option<u32> {
    a.status("sleeper").pid
}

#[test]
fn a_good_update_is_committed_and_services_keep_their_pids() {
    let Some(mut f) = launched() else { return };
    let before = info(&f.a);
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    let service_pid = sleeper_pid(&mut f.a);
    let buddy_pid = f.a.status("sleeper").buddy_pid.expect("buddy");
    publish_agent_with(
        &f,
        "0.2.0",
        &format!(
            "#!/bin/sh\nREEVE_BUDDY_PATH=\"$(dirname \"$0\")/reeve-buddy\" exec '{}' \"$@\"\n",
            reeve_bin().display()
        ),
        true,
    );

    let (code, out, stderr) = update(&f.a, "0.2.0", "20s");
    assert_eq!(code, Some(0), "{out} {stderr}");
    assert_eq!(out["outcome"]["committed"], true, "{out}");
    assert_eq!(out["running"], "0.2.0", "{out}");

    let after = info(&f.a);
    assert_eq!(after["version"], "0.2.0");
    assert_ne!(after["pid"], before["pid"], "a new agent process runs");
    assert_eq!(
        sleeper_pid(&mut f.a),
        service_pid,
        "the service never restarted"
    );
    // Once committed, the new agent moved the buddy to the package's buddy binary: same
    // process, new program.
    let new_buddy = std::fs::canonicalize(f.home.join("versions/0.2.0/bin/reeve-buddy"))
        .expect("the package's buddy");
    wait_for(T, "the buddy re-executed into the package's binary", || {
        let exe = std::fs::read_link(format!("/proc/{buddy_pid}/exe")).ok()?;
        (exe == new_buddy).then_some(())
    });
    assert_eq!(f.a.status("sleeper").buddy_pid, Some(buddy_pid));
    assert_eq!(
        sleeper_pid(&mut f.a),
        service_pid,
        "the service never restarted"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.home.join("launcher.json")).expect("state file"),
    )
    .expect("state json");
    assert_eq!(state["current"]["version"], "0.2.0", "{state}");
    assert!(state["trial"].is_null(), "{state}");
    let events = f.a.events(None);
    assert!(
        events
            .iter()
            .any(|e| e.kind.as_str() == "agent_update" && e.message.contains("updated from")),
        "the outcome is in the event log"
    );
    let text = f.a.ok(&["agent", "info"]);
    assert!(text.contains("last update:  to 0.2.0"), "{text}");
    // The same version again is refused, and changes nothing.
    let (code, _, stderr) = update(&f.a, "0.2.0", "20s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already runs 0.2.0"), "{stderr}");
    drop(f.reg);
}

#[test]
fn an_operator_updates_a_node_through_the_hub_and_it_comes_back_online() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let Some(mut f) = launched_as(joined(&hub, "n1", &[&alice])) else {
        return;
    };
    hub.wait_online(&alice, "n1");
    let service_pid = sleeper_pid(&mut f.a);
    let before = info(&f.a);
    publish_agent(
        &f,
        "0.2.0",
        &format!("#!/bin/sh\nexec '{}' \"$@\"\n", reeve_bin().display()),
    );
    let r = send(
        &hub,
        &alice,
        &["--to", "n1", "--wait", "30s", "agent.update", "0.2.0"],
    );
    assert_eq!(r["reply"]["status"], "ok", "{r}");
    assert_eq!(r["reply"]["to"], "0.2.0", "{r}");
    // The new agent was on trial until it reached the hub again; its facts say 0.2.0.
    wait_for(T, "n1 reporting agent 0.2.0", || {
        let (_, n) = hub.api(&alice, "GET", "/api/v1/nodes/n1", None);
        (n["facts"]["agent_version"] == "0.2.0" && n["online"] == true).then_some(())
    });
    wait_for(T, "the launcher's commit", || {
        let state = std::fs::read_to_string(f.home.join("launcher.json")).ok()?;
        let state: serde_json::Value = serde_json::from_str(&state).ok()?;
        (state["current"]["version"] == "0.2.0" && state["trial"].is_null()).then_some(())
    });
    let st: serde_json::Value =
        serde_json::from_str(&f.a.ok(&["agent", "info", "--json"])).expect("info");
    assert_ne!(st["pid"], before["pid"]);
    assert_eq!(
        sleeper_pid(&mut f.a),
        service_pid,
        "the service never restarted"
    );
    // A lower version needs force.
    let r = send(
        &hub,
        &alice,
        &[
            "--to",
            "n1",
            "--wait",
            "30s",
            "--args",
            r#"{"version":"0.1.0"}"#,
            "agent.update",
        ],
    );
    assert_eq!(r["reply"]["status"], "error", "{r}");
    let why = r["reply"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("downgrade needs force"), "{r}");
}

#[test]
fn a_new_agent_that_crashes_or_hangs_is_switched_back_and_services_keep_their_pids() {
    let Some(mut f) = launched() else { return };
    let before = info(&f.a);
    let service_pid = sleeper_pid(&mut f.a);

    // Crashes at start, like a panic.
    publish_agent(
        &f,
        "0.3.0",
        &broken("echo 'thread main panicked at start' >&2; exit 101"),
    );
    let (code, out, stderr) = update(&f.a, "0.3.0", "20s");
    assert_eq!(code, Some(3), "switched back: {out} {stderr}");
    assert_eq!(out["outcome"]["committed"], false, "{out}");
    let reason = out["outcome"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with status 101"), "{reason}");
    let back = info(&f.a);
    assert_eq!(back["version"], before["version"]);
    assert_eq!(sleeper_pid(&mut f.a), service_pid);

    // Starts but never reports healthy: stopped when its trial's time is up.
    publish_agent(&f, "0.4.0", &broken("exec sleep 1000"));
    let (code, out, stderr) = update(&f.a, "0.4.0", "3s");
    assert_eq!(code, Some(3), "switched back: {out} {stderr}");
    let reason = out["outcome"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("did not report healthy within 3 s"),
        "{reason}"
    );
    assert_eq!(info(&f.a)["version"], before["version"]);
    assert_eq!(sleeper_pid(&mut f.a), service_pid);
    let events = f.a.events(None);
    let switched_back = events
        .iter()
        .filter(|e| e.kind.as_str() == "agent_update" && e.message.contains("switched back"))
        .count();
    assert_eq!(switched_back, 2, "both outcomes are in the event log");
}

#[test]
fn an_update_is_refused_without_a_launcher_or_a_valid_signature() {
    let Some(f) = launched() else { return };
    // Signed by a key the agent does not trust.
    let other = sign::generate_keypair().expect("keygen");
    let dir = f.a.dir.path().join("pkg-evil");
    std::fs::create_dir_all(dir.join("bin")).expect("dir");
    std::fs::write(
        dir.join("module.toml"),
        "name = \"reeve-agent\"\nversion = \"0.5.0\"\n",
    )
    .expect("manifest");
    std::fs::write(dir.join("bin/reeve"), broken("exit 1")).expect("script");
    publish(&dir, &f.reg_dir, "reeve-agent", "0.5.0", &other.secret);
    let pid = info(&f.a)["pid"].clone();
    let (code, _, stderr) = update(&f.a, "0.5.0", "20s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("signature") || stderr.contains("key"),
        "{stderr}"
    );
    assert_eq!(info(&f.a)["pid"], pid, "the agent did not restart");
    assert!(
        !f.home.join("versions/0.5.0").exists(),
        "nothing was unpacked"
    );

    // A plain agent (no launcher) refuses: nothing could switch it back.
    let mut plain = Agent::new();
    plain.start();
    let out = plain.cli(&["agent", "update", "--version", "0.2.0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reeve-buddy launch"), "{stderr}");
}

#[test]
fn buddies_reexecute_into_a_new_buddy_binary_and_keep_their_services() {
    let mut a = Agent::new();
    a.service(
        "ticker",
        "command = [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done\"]\n",
    );
    a.start();
    let before = a.wait_status("ticker", T, "ticker running", |s| s.pid.is_some());
    let (buddy, pid) = (
        before.buddy_pid.expect("buddy pid"),
        before.pid.expect("service pid"),
    );
    // The "new" buddy binary: a copy somewhere else.
    let new = a.dir.path().join("new-buddy/reeve-buddy");
    std::fs::create_dir_all(new.parent().expect("dir")).expect("dir");
    std::fs::copy(crate::helper::buddy_bin(), &new).expect("copy buddy");
    let out = a.ok(&[
        "agent",
        "reexec-buddies",
        "--path",
        new.to_str().expect("utf-8"),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(r["done"], serde_json::json!(["ticker"]), "{r}");
    let exe = std::fs::read_link(format!("/proc/{buddy}/exe")).expect("buddy exe");
    assert_eq!(exe, std::fs::canonicalize(&new).expect("canonical"));

    let after = a.status("ticker");
    assert_eq!(after.buddy_pid, Some(buddy), "the same buddy process");
    assert_eq!(after.pid, Some(pid), "the service never stopped");
    // Its output still reaches the log through the pipes the buddy kept.
    let log = a.log_dir("ticker").join("current.log");
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let n = lines();
    wait_for(T, "new output in the log", || {
        (lines() > n + 3).then_some(())
    });
    // And the re-executed buddy still restarts it.
    crate::helper::kill("KILL", pid);
    let restarted = a.wait_status("ticker", T, "ticker restarted", |s| {
        s.pid.is_some_and(|p| p != pid)
    });
    assert_eq!(restarted.buddy_pid, Some(buddy));
    let events = a.events(Some("ticker"));
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("re-executed into")),
        "the re-exec is in the event log"
    );
}
