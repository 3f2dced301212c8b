//! Outpost's quick start in reeve's words: pack and sign the example `my-server` module,
//! serve a registry folder over real HTTP, install, configure with a port, start, reach the
//! server on that port, stop, uninstall. Plus the refusals: no trusted key, bad config.

use crate::helper::registry::{Registry, free_port, publish, python3_present, serve};
use crate::helper::{Agent, wait_for};
use reeve_modules::{pack, sign};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Packs and signs the example module into `<root>/registry`, writes the public key to
/// `<root>/trusted-keys/vendor.pub`.
fn publish_example(root: &Path) -> PathBuf {
    publish_example_with_keys(root).0
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/examples/my-server")
}

fn publish_example_with_keys(root: &Path) -> (PathBuf, sign::KeyPair) {
    let example = example_dir();
    let reg = root.join("registry/my-server/my-server-1.0.0");
    std::fs::create_dir_all(&reg).expect("registry dir");
    let package = pack::pack(&example, &reg).expect("pack");
    let keys = sign::generate_keypair().expect("keygen");
    let sig = sign::sign_package(&package, &keys.secret).expect("sign");
    std::fs::write(
        reg.join(format!(
            "{}.minisig",
            package.file_name().and_then(|n| n.to_str()).expect("name")
        )),
        sig,
    )
    .expect("write sig");
    let trusted = root.join("trusted-keys");
    std::fs::create_dir_all(&trusted).expect("keys dir");
    std::fs::write(trusted.join("vendor.pub"), keys.public.to_file_text()).expect("write key");
    (root.join("registry"), keys)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

/// Publishes my-server 2.0.0 into `registry`: the example with `configure_hook` as its
/// configure hook, signed with `key`.
fn publish_v2(root: &Path, registry: &Path, key: &sign::SecretKey, configure_hook: &str) {
    use std::os::unix::fs::PermissionsExt;
    let v2 = root.join("my-server-2");
    copy_dir(&example_dir(), &v2);
    let manifest = std::fs::read_to_string(v2.join("module.toml")).expect("manifest");
    std::fs::write(
        v2.join("module.toml"),
        manifest.replace("version = \"1.0.0\"", "version = \"2.0.0\""),
    )
    .expect("write");
    let hook = v2.join("hooks/configure");
    std::fs::write(&hook, configure_hook).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    publish(&v2, registry, "my-server", "2.0.0", key);
}

#[test]
fn a_failing_hook_mid_apply_rolls_back_to_the_previous_version_and_config() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let mut a = Agent::new();
    let (reg_dir, keys) = publish_example_with_keys(a.dir.path());
    // Version 2.0.0 whose configure hook fails.
    publish_v2(
        a.dir.path(),
        &reg_dir,
        &keys.secret,
        "#!/bin/sh\necho 'v2 refuses this configuration' >&2\nexit 1\n",
    );
    let reg = serve(&reg_dir);
    let keydir = a.dir.path().join("trusted-keys");
    start_agent(&mut a, &reg.url, &keydir);

    let p1 = free_port();
    let s1 = format!(
        r#"{{"modules": [{{"name": "my-server", "version": "1.0.0", "config": {{"port": {p1}, "message": "one"}}}}]}}"#
    );
    let plan = a.ok(&["state", "plan", "--state", &s1]);
    assert!(
        plan.contains("install my-server@1.0.0") && plan.contains("start my-server@1.0.0"),
        "{plan}"
    );
    let out = a.ok(&["state", "apply", "--state", &s1]);
    assert!(out.contains("applied"), "{out}");
    let body = wait_for(T, "v1 answering", || {
        http_get(p1).filter(|b| b.contains("200"))
    });
    assert!(body.contains("one"));
    let pid_before = a.status("my-server/server").pid;

    let p2 = free_port();
    let s2 = format!(
        r#"{{"modules": [{{"name": "my-server", "version": "2.0.0", "config": {{"port": {p2}, "message": "two"}}}}]}}"#
    );
    let out = a.cli(&["state", "apply", "--state", &s2, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "rolled back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["outcome"], "rolled_back", "{report}");
    assert!(
        report["failed_step"]
            .as_str()
            .unwrap_or("")
            .contains("configure my-server@2.0.0"),
        "{report}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("v2 refuses"),
        "{report}"
    );
    // The previous version runs again with its previous configuration.
    let body = wait_for(T, "v1 back", || http_get(p1).filter(|b| b.contains("200")));
    assert!(body.contains("one"), "{body}");
    assert!(http_get(p2).is_none());
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["module", "list", "--json"])).expect("json");
    let mods = list.as_array().expect("array");
    assert_eq!(mods.len(), 1, "{list}");
    assert_eq!(mods[0]["version"], "1.0.0");
    assert_eq!(mods[0]["running"], true);
    assert_eq!(mods[0]["config"]["message"], "one");
    assert_ne!(a.status("my-server/server").pid, None);
    let _ = pid_before;
}

fn start_agent(a: &mut Agent, registry: &str, keys: &Path) {
    let child = a
        .agent_command()
        .args(["--registry", registry, "--trusted-keys"])
        .arg(keys)
        .spawn()
        .expect("agent");
    a.child = Some(child);
    wait_for(T, "agent", || a.cli(&["ps"]).status.success().then_some(()));
}

#[test]
fn quick_start_install_configure_start_stop_uninstall() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing (scripts/test installs it)");
        return;
    }
    let mut a = Agent::new();
    let reg_dir = publish_example(a.dir.path());
    let reg = serve(&reg_dir);
    let keys = a.dir.path().join("trusted-keys");
    start_agent(&mut a, &reg.url, &keys);

    let out = a.ok(&["module", "install", "my-server@1.0.0"]);
    assert!(out.contains("installed"), "{out}");
    // A bad configuration is refused with every violation, and changes nothing.
    let bad = a.cli(&[
        "module",
        "configure",
        "my-server",
        "--config",
        r#"{"port": "eighty", "colour": 1}"#,
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("port"),
        "{err}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["module", "list", "--json"])).expect("json");
    assert!(list[0]["config"].is_null(), "nothing changed: {list}");

    let port = free_port();
    a.ok(&[
        "module",
        "configure",
        "my-server",
        "--config",
        &format!(r#"{{"port": {port}}}"#),
    ]);
    a.ok(&["module", "start", "my-server"]);
    let body = wait_for(T, "my-server answering", || {
        http_get(port).filter(|b| b.contains("200"))
    });
    assert!(body.contains("kept running by reeve"), "{body}");
    let svc = a.status("my-server/server");
    assert_eq!(svc.state, reeve_proto::api::ServiceState::Running);

    a.ok(&["module", "stop", "my-server"]);
    assert!(
        http_get(port).is_none(),
        "stopped: nothing listens on {port}"
    );
    assert!(a.ps().iter().all(|s| s.name != "my-server/server"));
    a.ok(&["module", "uninstall", "my-server"]);
    assert!(a.ok(&["module", "list"]).contains("no modules installed"));
    let events = a.ok(&["events"]);
    for step in [
        "installed my-server@1.0.0",
        "configured",
        "started",
        "stopped",
        "uninstalled",
    ] {
        assert!(events.contains(step), "{step} in {events}");
    }
}

#[test]
fn nothing_installs_without_a_trusted_key() {
    let mut a = Agent::new();
    let reg_dir = publish_example(a.dir.path());
    let reg = serve(&reg_dir);
    let empty = a.dir.path().join("no-keys");
    std::fs::create_dir_all(&empty).expect("dir");
    start_agent(&mut a, &reg.url, &empty);
    let out = a.cli(&["module", "install", "my-server@1.0.0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("trusted key"), "{err}");
    assert!(a.ok(&["module", "list"]).contains("no modules installed"));
    assert!(!a.data_dir().join("modules/my-server@1.0.0").exists());
}

#[test]
fn running_modules_come_back_after_a_reboot() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let mut a = Agent::new();
    let reg_dir = publish_example(a.dir.path());
    let reg = serve(&reg_dir);
    let keys = a.dir.path().join("trusted-keys");
    start_agent(&mut a, &reg.url, &keys);
    let port = free_port();
    a.ok(&["module", "install", "my-server@1.0.0"]);
    a.ok(&[
        "module",
        "configure",
        "my-server",
        "--config",
        &format!(r#"{{"port": {port}}}"#),
    ]);
    a.ok(&["module", "start", "my-server"]);
    wait_for(T, "answering", || {
        http_get(port).filter(|b| b.contains("200"))
    });
    // A "reboot": the agent, the buddies and the services all die; the registry is gone.
    let s = a.status("my-server/server");
    a.kill9();
    crate::helper::kill("KILL", s.buddy_pid.expect("buddy"));
    crate::helper::kill("KILL", s.pid.expect("pid"));
    drop(reg);
    wait_for(T, "port free", || http_get(port).is_none().then_some(()));
    start_agent(&mut a, "http://127.0.0.1:9", &keys);
    let body = wait_for(T, "my-server back by itself", || {
        http_get(port).filter(|b| b.contains("200"))
    });
    assert!(body.contains("reeve"));
}

/// An agent running my-server 1.0.0 (port `p1`, message "one", desired state `s1`) from a
/// registry that also holds 2.0.0 whose configure hook is `hook(marker)`; `s2` moves to
/// 2.0.0 on another port.
struct MidApply {
    a: Agent,
    reg: Registry,
    keydir: PathBuf,
    marker: PathBuf,
    p1: u16,
    s1: String,
    s2: String,
}

fn v1_running_with_v2_hook(hook: impl FnOnce(&Path) -> String) -> MidApply {
    let mut a = Agent::new();
    let (reg_dir, keys) = publish_example_with_keys(a.dir.path());
    let marker = a.dir.path().join("v2-configuring");
    publish_v2(a.dir.path(), &reg_dir, &keys.secret, &hook(&marker));
    let reg = serve(&reg_dir);
    let keydir = a.dir.path().join("trusted-keys");
    start_agent(&mut a, &reg.url, &keydir);
    let p1 = free_port();
    let s1 = format!(
        r#"{{"modules": [{{"name": "my-server", "version": "1.0.0", "config": {{"port": {p1}, "message": "one"}}}}]}}"#
    );
    a.ok(&["state", "apply", "--state", &s1]);
    wait_for(T, "v1 answering", || {
        http_get(p1).filter(|b| b.contains("200"))
    });
    let p2 = free_port();
    let s2 = format!(
        r#"{{"modules": [{{"name": "my-server", "version": "2.0.0", "config": {{"port": {p2}}}}}]}}"#
    );
    MidApply {
        a,
        reg,
        keydir,
        marker,
        p1,
        s1,
        s2,
    }
}

#[test]
fn kill9_of_the_agent_mid_apply_is_rolled_back_at_restart() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    // Version 2.0.0's configure hook announces itself, then takes its time.
    let MidApply {
        mut a,
        reg,
        keydir,
        marker,
        p1,
        s1,
        s2,
    } = v1_running_with_v2_hook(|marker| {
        format!("#!/bin/sh\ntouch {}\nsleep 5\n", marker.display())
    });
    let mut apply = Command::new(crate::helper::reeve_bin())
        .args(["state", "apply", "--state", &s2])
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    wait_for(T, "v2's configure hook running", || {
        marker.exists().then_some(())
    });
    a.kill9();
    let _ = apply.wait();

    start_agent(&mut a, &reg.url, &keydir);
    let body = wait_for(T, "v1 back after recovery", || {
        http_get(p1).filter(|b| b.contains("200"))
    });
    assert!(body.contains("one"), "{body}");
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["module", "list", "--json"])).expect("json");
    let mods = list.as_array().expect("array");
    assert_eq!(mods.len(), 1, "{list}");
    assert_eq!(mods[0]["version"], "1.0.0");
    assert_eq!(mods[0]["running"], true);
    let events = a.ok(&["events"]);
    assert!(
        events.contains("interrupted by an agent restart") && events.contains("rolled back"),
        "{events}"
    );
    // The journal is gone: a new apply is accepted.
    let again = a.ok(&["state", "apply", "--state", &s1]);
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn a_downgrade_needs_force() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let mut a = Agent::new();
    let (reg_dir, keys) = publish_example_with_keys(a.dir.path());
    let good_hook = std::fs::read_to_string(example_dir().join("hooks/configure")).expect("hook");
    publish_v2(a.dir.path(), &reg_dir, &keys.secret, &good_hook);
    let reg = serve(&reg_dir);
    let keydir = a.dir.path().join("trusted-keys");
    start_agent(&mut a, &reg.url, &keydir);
    let port = free_port();
    let state = |v: &str| {
        format!(
            r#"{{"modules": [{{"name": "my-server", "version": "{v}", "config": {{"port": {port}}}}}]}}"#
        )
    };
    a.ok(&["state", "apply", "--state", &state("2.0.0")]);
    let out = a.cli(&["state", "apply", "--state", &state("1.0.0")]);
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("downgrade needs --force"), "{err}");

    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["module", "list", "--json"])).expect("json");
    assert_eq!(list[0]["version"], "2.0.0", "nothing changed");
    let out = a.ok(&["state", "apply", "--force", "--state", &state("1.0.0")]);
    assert!(out.contains("applied"), "{out}");
    let list: serde_json::Value =
        serde_json::from_str(&a.ok(&["module", "list", "--json"])).expect("json");
    assert_eq!(list[0]["version"], "1.0.0", "{list}");
}

#[test]
fn a_cancelled_apply_stops_its_step_and_rolls_back() {
    if !python3_present() {
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    // Version 2.0.0's configure hook announces itself, then waits a minute for a child of
    // its own.
    let MidApply {
        a,
        reg: _reg,
        marker,
        p1,
        s2,
        ..
    } = v1_running_with_v2_hook(|marker| {
        format!(
            "#!/bin/sh\nsleep 60 &\necho $! > {}\ntouch {}\nwait\n",
            marker.with_file_name("sleeper.pid").display(),
            marker.display()
        )
    });
    let sleeper = marker.with_file_name("sleeper.pid");
    // Nothing to cancel yet.
    let none = a.cli(&["state", "cancel"]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");

    let report = a.dir.path().join("report.json");
    let mut apply = Command::new(crate::helper::reeve_bin())
        .args(["state", "apply", "--json", "--state", &s2])
        .env("XDG_RUNTIME_DIR", a.dir.path().join("rt"))
        .stdout(std::fs::File::create(&report).expect("report"))
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    wait_for(T, "v2's configure hook running", || {
        marker.exists().then_some(())
    });
    let out = a.ok(&["state", "cancel"]);
    assert!(out.starts_with("cancelled apply-"), "{out}");
    // The apply ends long before its hook would have (rolled back: exit status 3).
    let status = wait_for(T, "the apply's end", || apply.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(3));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["outcome"], "rolled_back", "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cancelled by")),
        "{r}"
    );
    // The hook's whole process group went with it (its child too).
    let pid = std::fs::read_to_string(&sleeper).expect("pid");
    let stat = format!("/proc/{}/stat", pid.trim());
    wait_for(T, "the hook's child gone", || {
        let gone = std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "));
        gone.then_some(())
    });
    // The hook's whole process group went with it (its child too).
    let pid = std::fs::read_to_string(&sleeper).expect("pid");
    let stat = format!("/proc/{}/stat", pid.trim());
    wait_for(T, "the hook's child gone", || {
        let gone = std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "));
        gone.then_some(())
    });
    let body = wait_for(T, "v1 back", || http_get(p1).filter(|b| b.contains("200")));
    assert!(body.contains("one"), "{body}");
    assert!(
        a.ok(&["events"]).contains("cancelled by"),
        "the cancel is in the audit trail"
    );
}
