//! A hub fixture: `reeve hub` in a temporary directory on a free loopback port, with
//! operators made through the real CLI.

use super::BoundedOutput;
use super::{reeve_bin, wait_for};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// An operator: name, API token, secret key file.
#[derive(Clone, Debug)]
pub struct Operator {
    pub name: String,
    pub token: String,
    pub key: PathBuf,
}

/// A running hub.
pub struct Hub {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    /// The fingerprint of its TLS certificate, as its start-up line printed it: what the
    /// CLI pins (`REEVE_HUB_CERT`) in [`Hub::as_op`].
    pub cert: String,
    addr: Option<String>,
}

impl Hub {
    /// Starts a hub on a free port.
    pub fn start() -> Self {
        Self::start_at(None)
    }

    /// Starts a new hub (its own data directory, so its own certificate) on `addr`
    /// (host:port), e.g. where another one ran.
    pub fn start_on(addr: &str) -> Self {
        Self::start_at(Some(addr.to_string()))
    }

    fn start_at(addr: Option<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reeve-hub-it")
            .tempdir()
            .expect("tempdir");
        let mut h = Self {
            dir,
            child: None,
            url: String::new(),
            cert: String::new(),
            addr,
        };
        h.restart();
        h
    }

    /// Where it listens (host:port).
    pub fn addr(&self) -> &str {
        self.addr.as_deref().expect("started")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// (Re)starts the hub process on the same port as before (a free one the first time).
    pub fn restart(&mut self) {
        let listen = self.addr.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let mut child = Command::new(reeve_bin())
            .args(["hub", "--listen", &listen, "--log-level", "warn"])
            .env("REEVE_HUB_DATA_DIR", self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hub");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let cert = rest
                        .split("certificate ")
                        .nth(1)
                        .and_then(|c| c.split(')').next())
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send((addr, cert));
                } else {
                    eprintln!("hub: {line}");
                }
            }
        });
        let (addr, cert) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the hub printed its address");
        assert!(
            cert.starts_with("sha256:"),
            "no certificate in its start-up line"
        );
        self.url = format!("https://{addr}");
        self.addr = Some(addr);
        self.cert = cert;
        self.child = Some(child);
    }

    /// Kills the hub with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `reeve ARGS…` with the hub's data directory.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(reeve_bin())
            .args(args)
            .env("REEVE_HUB_DATA_DIR", self.data_dir())
            .bounded_output()
            .expect("run reeve");
        assert!(
            out.status.success(),
            "reeve {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A one-time join token.
    pub fn token(&self) -> String {
        self.admin(&["hub", "token", "create", "--url", &self.url])
    }

    /// A new key pair `file` (.key and .pub) in this hub's keys folder; the secret's path.
    pub fn new_key(&self, file: &str) -> PathBuf {
        let keys = self.dir.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        let out = Command::new(reeve_bin())
            .args(["key", "create", file, "--out-dir"])
            .arg(&keys)
            .bounded_output()
            .expect("key create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        keys.join(format!("{file}.key"))
    }

    /// Waits (30 s at most) until message `id` is replied; its record.
    pub fn wait_replied(&self, op: &Operator, id: &str) -> serde_json::Value {
        wait_for(Duration::from_secs(30), &format!("a reply to {id}"), || {
            let m = self.json_any(op, &["messages", "show", id]);
            (m["state"] == "replied").then_some(m)
        })
    }

    /// Creates operator `name` with `role` and a key of their own.
    pub fn operator(&self, name: &str, role: &str) -> Operator {
        let key = self.new_key(name);
        let pubkey = key.with_extension("pub");
        let token = self.admin(&[
            "hub",
            "operator",
            "add",
            name,
            "--role",
            role,
            "--key",
            pubkey.to_str().expect("utf-8 path"),
        ]);
        Operator {
            name: name.into(),
            token,
            key,
        }
    }

    /// The public key (base64) of an operator, for node policies.
    pub fn public_key(&self, op: &Operator) -> String {
        std::fs::read_to_string(op.key.with_extension("pub"))
            .expect("pub")
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .expect("key line")
            .trim()
            .to_string()
    }

    /// `reeve` as operator `op`, the hub's certificate pinned (`REEVE_HUB_CERT`), to run.
    pub fn op_command(&self, op: &Operator) -> Command {
        let mut c = Command::new(reeve_bin());
        c.env("REEVE_HUB", &self.url)
            .env("REEVE_TOKEN", &op.token)
            .env("REEVE_KEY", &op.key)
            .env("REEVE_HUB_CERT", &self.cert)
            // The CLI's cache of the hub's clock: this hub's own (another test's hub may
            // have had the same port, under a fake clock).
            .env("XDG_CACHE_HOME", self.dir.path().join("cli-cache"))
            // Its known hubs file too (never root's own), should a test trust on first use.
            .env("XDG_CONFIG_HOME", self.dir.path().join("cli-config"))
            .stdin(Stdio::null());
        c
    }

    /// `reeve ARGS…` as operator `op`.
    pub fn as_op(&self, op: &Operator, args: &[&str]) -> Output {
        self.op_command(op)
            .args(args)
            .bounded_output()
            .expect("run reeve")
    }

    /// JSON output of `reeve ARGS… --json` as `op` (must succeed).
    pub fn json(&self, op: &Operator, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.as_op(op, &a);
        assert!(
            out.status.success(),
            "reeve {a:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// JSON output of `reeve ARGS… --json` as `op`, whatever the exit code (which follows
    /// the message's outcome for `messages show`).
    pub fn json_any(&self, op: &Operator, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.as_op(op, &a);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("reeve {a:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// One API call as `op` (through python3's urllib: any real HTTP client will do);
    /// returns the status and the JSON body.
    pub fn api(
        &self,
        op: &Operator,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        const PY: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
url, token, method, body = sys.argv[1:5]
req = urllib.request.Request(url, method=method, data=(body.encode() if body else None),
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
ctx = ssl._create_unverified_context()
try:
    r = urllib.request.urlopen(req, context=ctx, timeout=30)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
        let out = Command::new("python3")
            .args(["-c", PY, &format!("{}{path}", self.url), &op.token, method])
            .arg(body.map(|b| b.to_string()).unwrap_or_default())
            .bounded_output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (status, body) = text.split_once('\n').unwrap_or_else(|| {
            panic!(
                "api call failed: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            status.trim().parse().expect("status"),
            serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A new agent fixture joined to this hub as `name` (through `url` when given, e.g. a
    /// proxy; the hub's own URL otherwise), not started. Its policy is the default one.
    pub fn join(&self, name: &str, url: Option<&str>) -> super::Agent {
        let a = super::Agent::new();
        let data = a.data_dir();
        let token = self.token();
        let mut args = vec!["agent", "join"];
        if let Some(u) = url {
            args.push(u);
        }
        args.extend([
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--token",
            &token,
            "--name",
            name,
        ]);
        a.ok(&args);
        a
    }

    /// Waits until `node` is online at the hub.
    pub fn wait_online(&self, op: &Operator, node: &str) {
        wait_for(Duration::from_secs(30), &format!("{node} online"), || {
            let list = self.json(op, &["nodes"]);
            list.as_array()?
                .iter()
                .any(|n| n["name"] == node && n["online"] == true)
                .then_some(())
        });
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill9();
    }
}
