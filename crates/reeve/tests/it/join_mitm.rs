//! `reeve agent join` through a man in the middle. The join accepts any TLS certificate
//! (the token pins the hub's Ed25519 key, not its certificate), so whoever sits on the path
//! sees the request. Here a python3 relay in the middle (plain HTTP on the node's side, the
//! real hub's HTTPS on the other) reads the node's request, tries to enrol its own key and
//! another name with it, then passes the genuine request on and alters the hub's answer.

use crate::helper::hub::{Hub, Operator};
use crate::helper::{Agent, read};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const MITM: &str = r#"
import http.server, json, ssl, sys, urllib.error, urllib.request
upstream, report, thief_key = sys.argv[1:4]
ctx = ssl._create_unverified_context()
seen = {}

def call(method, path, body=None):
    req = urllib.request.Request(upstream + path, method=method, data=body,
        headers={"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, context=ctx, timeout=30)
        return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

class Relay(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(*call("GET", self.path))

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen["request"] = body.decode()
        j = json.loads(body)
        seen["stolen_key"] = call("POST", self.path, json.dumps(dict(j, key=thief_key)).encode())
        seen["other_name"] = call("POST", self.path, json.dumps(dict(j, node="thief")).encode())
        status, answer = call("POST", self.path, body)
        seen["genuine"] = status
        a = json.loads(answer)
        a["hub_time_ms"] += 10 * 365 * 86400 * 1000
        self.answer(status, json.dumps(a).encode())
        seen["stolen_key"] = seen["stolen_key"][0]
        seen["other_name"] = seen["other_name"][0]
        with open(report, "w") as f:
            json.dump(seen, f)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Relay)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The relay, killed when dropped.
struct Mitm(Child);

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_man_in_the_middle_of_a_join_gets_no_secret_no_enrolment_and_no_clock_change() {
    let hub = Hub::start();
    let alice: Operator = hub.operator("alice", "viewer");
    let token = hub.token();
    let thief_key = hub.public_key(&hub.operator("mallory", "viewer"));
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("seen.json");
    let mut child = Command::new("python3")
        .args(["-c", MITM, &hub.url])
        .arg(&report)
        .arg(&thief_key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .expect("port");
    let _mitm = Mitm(child);
    let a = Agent::new();
    let data = a.data_dir();
    let out = a.cli(&[
        "agent",
        "join",
        &format!("http://127.0.0.1:{}", port.trim()),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--token",
        &token,
        "--name",
        "n1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "joined through an altered answer");
    assert!(err.contains("not signed by the hub's key"), "{err}");
    // The node kept no hub and no clock floor from the altered answer.
    let node_toml = read(&data.join("node.toml"));
    assert!(!node_toml.contains("hub_key"), "{node_toml}");
    assert!(!data.join("delivery.db").exists());

    let seen: serde_json::Value = serde_json::from_str(&read(&report)).expect("report");
    let secret = token_secret(&token);
    let request = seen["request"].as_str().expect("request");
    assert!(
        !request.contains(&secret),
        "the secret went over the wire: {request}"
    );
    assert_eq!(seen["stolen_key"], 403, "{seen}");
    assert_eq!(seen["other_name"], 403, "{seen}");
    assert_eq!(seen["genuine"], 200, "{seen}");
    // The hub enrolled the node's own key and nothing else; the refusals are logged.
    let nodes = hub.json(&alice, &["nodes"]);
    let names: Vec<_> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["n1"], "{nodes}");
    let errors = hub.json(&alice, &["errors"]);
    let refusals = errors
        .as_array()
        .expect("errors")
        .iter()
        .filter(|e| e["kind"] == "join_refused")
        .count();
    assert_eq!(refusals, 2, "{errors}");
}

/// The token's secret, read from its text form by hand (base64url JSON after `reeve1.`).
fn token_secret(token: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,json,sys; b=sys.argv[1].split('.',1)[1]; \
             print(json.loads(base64.urlsafe_b64decode(b + '=' * (-len(b) % 4)))['secret'])",
            token,
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
