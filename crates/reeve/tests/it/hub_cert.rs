//! The operator commands send their API token only to the hub's own TLS certificate:
//! pinned with `REEVE_HUB_CERT` (`--hub-cert`), or trusted on first use and recorded in
//! `$XDG_CONFIG_HOME/reeve/known_hubs`. A hub presenting another certificate is refused in
//! the handshake, before any request. (Every other fleet test runs with the pin set by
//! `Hub::as_op`.)

use crate::fleet::send;
use crate::helper::BoundedOutput;
use crate::helper::hub::{Hub, Operator};
use crate::helper::reeve_bin;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `reeve ARGS…` as `op` with no pin: the certificate is judged by the known hubs file
/// under `config` (`XDG_CONFIG_HOME`).
fn unpinned(hub: &Hub, op: &Operator, config: &Path, args: &[&str]) -> Output {
    hub.op_command(op)
        .env_remove("REEVE_HUB_CERT")
        .env("XDG_CONFIG_HOME", config)
        .args(args)
        .bounded_output()
        .expect("run reeve")
}

/// SHA-256 of the hub's certificate file, computed by python (not by reeve's own code).
fn sha256_of_cert(hub: &Hub) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
        ])
        .arg(hub.data_dir().join("tls-cert.der"))
        .bounded_output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A valid fingerprint that is not `hub`'s.
fn other_cert(hub: &Hub) -> String {
    let last = if hub.cert.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &hub.cert[..hub.cert.len() - 1])
}

#[test]
fn the_fingerprint_printed_everywhere_is_the_certificates_sha256() {
    let hub = Hub::start();
    let hex = sha256_of_cert(&hub);
    assert_eq!(hex.len(), 64);
    let want = format!("sha256:{hex}");
    // The start-up line (what `Hub::as_op` pins), and `reeve hub cert-fingerprint`.
    assert_eq!(hub.cert, want);
    assert_eq!(hub.admin(&["hub", "cert-fingerprint"]), want);
    let j: serde_json::Value =
        serde_json::from_str(&hub.admin(&["hub", "cert-fingerprint", "--json"])).expect("json");
    assert_eq!(j["hub_cert"], want, "{j}");
    // `reeve hub operator add`: the token alone on stdout, the export line on stderr.
    let out = Command::new(reeve_bin())
        .args(["hub", "operator", "add", "carol", "--role", "viewer"])
        .env("REEVE_HUB_DATA_DIR", hub.data_dir())
        .bounded_output()
        .expect("operator add");
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        token.starts_with("rvo_") && !token.contains('\n'),
        "{token}"
    );
    assert!(
        stderr(&out).contains(&format!("export REEVE_HUB_CERT={want}\n")),
        "{}",
        stderr(&out)
    );
    let j: serde_json::Value = serde_json::from_str(&hub.admin(&[
        "hub", "operator", "add", "dave", "--role", "viewer", "--json",
    ]))
    .expect("json");
    assert_eq!(j["hub_cert"], want, "{j}");
    // openssl's form (upper case, colons) is the same pin.
    let alice = hub.operator("alice", "viewer");
    let colons: Vec<String> = hex
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let out = hub
        .op_command(&alice)
        .args(["nodes", "--json", "--hub-cert", &colons.join(":")])
        .bounded_output()
        .expect("nodes");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_wrong_pin_is_refused_before_the_token_is_sent() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "operator");
    let _n1 = hub.join("n1", None); // never started: what is sent to it waits at the hub
    let wrong = other_cert(&hub);
    let config = hub.dir.path().join("cli-config");
    for (how, out) in [
        (
            "REEVE_HUB_CERT",
            hub.op_command(&alice)
                .env("REEVE_HUB_CERT", &wrong)
                .args(["send", "--to", "n1", "--no-wait", "ops.ps"])
                .bounded_output()
                .expect("send"),
        ),
        (
            "--hub-cert over a right REEVE_HUB_CERT",
            hub.op_command(&alice)
                .args(["send", "--hub-cert", &wrong, "--to", "n1", "--no-wait"])
                .args(["ops.ps"])
                .bounded_output()
                .expect("send"),
        ),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{how}: {err}");
        assert!(out.stdout.is_empty(), "{how}");
        for part in [
            "does not match the pinned fingerprint",
            &format!("pinned:    {wrong}"),
            &format!("presented: {}", hub.cert),
            "interception",
            "not even the API token",
            "reeve hub cert-fingerprint",
        ] {
            assert!(err.contains(part), "{how}: {part:?} missing in {err}");
        }
    }
    // Nothing reached the hub: no message was created. An explicit pin writes no known
    // hubs file.
    let list = hub.json(&alice, &["messages"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    assert!(!config.join("reeve/known_hubs").exists());
    // The right pin goes through (so the refusal above was the pin's doing).
    let r = send(&hub, &alice, &["--to", "n1", "--no-wait", "ops.ps"]);
    assert!(r["id"].is_string(), "{r}");
    let list = hub.json(&alice, &["messages"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn trust_on_first_use_records_the_hub_and_refuses_another_at_its_address() {
    let mut first = Hub::start();
    let alice = first.operator("alice", "viewer");
    let config = tempfile::tempdir().expect("tempdir");
    let file = config.path().join("reeve/known_hubs");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let theirs = format!(
        "# hubs I know\nhub.example.com:7443 {}\n",
        other_cert(&first)
    );
    std::fs::write(&file, &theirs).expect("write");

    // First contact: recorded, said once on stderr, every other line kept, mode 0600.
    let out = unpinned(&first, &alice, config.path(), &["nodes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let addr = first.addr().to_string();
    assert!(
        stderr(&out).contains(&format!(
            "reeve: trusting the hub at {addr} on first use, certificate {}",
            first.cert
        )),
        "{}",
        stderr(&out)
    );
    let recorded = format!("{theirs}{addr} {}\n", first.cert);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), recorded);
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Later contacts: silent, the file as it was.
    let out = unpinned(&first, &alice, config.path(), &["nodes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("first use"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), recorded);

    // Another hub (another data directory, another certificate) at the same address.
    first.kill9();
    let second = Hub::start_on(&addr);
    assert_ne!(second.cert, first.cert);
    let bob = second.operator("bob", "operator");
    let _n1 = second.join("n1", None);
    let out = unpinned(
        &second,
        &bob,
        config.path(),
        &["send", "--to", "n1", "--no-wait", "ops.ps"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        "does not match the pinned fingerprint",
        &format!("pinned:    {}", first.cert),
        &format!("presented: {}", second.cert),
        "interception",
        &format!("{}, line 3", file.display()),
        &format!("remove line 3 of {}", file.display()),
        "--hub-cert",
    ] {
        assert!(err.contains(part), "{part:?} missing in {err}");
    }
    assert_eq!(std::fs::read_to_string(&file).expect("read"), recorded);
    // The token never reached it: nothing was created.
    let list = second.json(&bob, &["messages"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    // An explicit pin wins over the file, and leaves it alone.
    let out = unpinned(
        &second,
        &bob,
        config.path(),
        &["nodes", "--json", "--hub-cert", &second.cert],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), recorded);

    // With its line removed, the new hub is trusted on first use.
    std::fs::write(&file, &theirs).expect("write");
    let out = unpinned(&second, &bob, config.path(), &["nodes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("on first use"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        format!("{theirs}{addr} {}\n", second.cert)
    );

    // Without XDG_CONFIG_HOME the file is under $HOME/.config, its directory made.
    let home = tempfile::tempdir().expect("tempdir");
    let out = second
        .op_command(&bob)
        .env_remove("REEVE_HUB_CERT")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home.path())
        .args(["nodes", "--json"])
        .bounded_output()
        .expect("nodes");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(home.path().join(".config/reeve/known_hubs")).expect("read"),
        format!("{addr} {}\n", second.cert)
    );
}

#[test]
fn malformed_fingerprints_and_known_hubs_lines_get_a_clear_error() {
    let hub = Hub::start();
    let alice = hub.operator("alice", "viewer");
    let hex = &hub.cert["sha256:".len()..];
    for bad in [
        "xyz".to_string(),
        format!("sha1:{hex}"),
        hex[..40].to_string(),
        hex[..63].to_string(),
        format!("{hex}00"),
        format!("sha256:{}", hex.replace(|c: char| c.is_ascii_digit(), "g")),
    ] {
        for flag in [true, false] {
            let mut c = hub.op_command(&alice);
            c.args(["nodes", "--json"]);
            if flag {
                c.args(["--hub-cert", &bad]);
            } else {
                c.env("REEVE_HUB_CERT", &bad);
            }
            let out = c.bounded_output().expect("nodes");
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
            assert!(
                err.contains("--hub-cert") && err.contains("is not a certificate fingerprint"),
                "{bad}: {err}"
            );
            assert!(err.contains("expected sha256: and 64 hex digits"), "{err}");
        }
    }
    // A damaged line about this hub is an error naming the file and line, not "unknown".
    let config = tempfile::tempdir().expect("tempdir");
    let file = config.path().join("reeve/known_hubs");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let damaged = format!("{} sha256:12ab\n", hub.addr());
    std::fs::write(&file, &damaged).expect("write");
    let out = unpinned(&hub, &alice, config.path(), &["nodes", "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{} is damaged", file.display())) && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("read"), damaged);
    // A pin with a plain-HTTP URL: nothing to check it against.
    let out = hub
        .op_command(&alice)
        .args(["nodes", "--hub", "http://127.0.0.1:9"])
        .bounded_output()
        .expect("nodes");
    assert!(
        stderr(&out).contains("needs an https:// hub URL"),
        "{}",
        stderr(&out)
    );
}
