//! Test fixtures: an agent in a temporary directory, driven through the real `reeve` CLI,
//! and bounded waits. Everything started is stopped when the fixture is dropped.

#![allow(dead_code)]

pub mod hub;
pub mod proxy;
pub mod registry;

use reeve_proto::api::ServiceStatus;
use reeve_proto::event::Event;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `reeve` binary under test.
pub fn reeve_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reeve"))
}

/// The `reeve-buddy` binary (built by `cargo test --workspace`, beside `reeve`).
pub fn buddy_bin() -> PathBuf {
    let p = reeve_bin().with_file_name("reeve-buddy");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or build reeve-buddy first)",
        p.display()
    );
    p
}

/// How long any one command run by a test may take before it is killed and the test fails:
/// a hung child must fail its test, never hang the whole suite.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// `Command::output` with a deadline: the child is killed (SIGKILL) and the call panics
/// naming the command when it runs longer than the limit.
pub trait BoundedOutput {
    /// Runs to completion within [`COMMAND_LIMIT`].
    fn bounded_output(&mut self) -> std::io::Result<Output> {
        self.output_within(COMMAND_LIMIT)
    }
    /// Runs to completion within `limit`.
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output>;
}

impl BoundedOutput for Command {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        use std::io::Read;
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        drop(child.stdin.take()); // as `output` does: the child sees end of input
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{:?} still ran after {limit:?}: killed", self);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A grandchild may still hold the pipes: give it the rest of the limit, no more.
        while !(out.is_finished() && err.is_finished()) {
            if start.elapsed() > limit {
                panic!("{:?} exited but its output stayed open for {limit:?}", self);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }
}

/// Polls `f` every 20 ms until it returns Some, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .map(|i| !s[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The children of `parent` that exited and were not reaped (zombies).
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the name in parentheses: state, then the parent's pid.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            fields.next() == Some("Z")
                && fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

/// Sends a signal by pid via kill(1) (no unsafe in tests).
pub fn kill(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// An agent with its own data, services and runtime directories.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    buddies: Vec<u32>,
}

impl Agent {
    /// A fixture with an empty services directory (not started yet).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reeve-it")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("services")).expect("services dir");
        Self {
            dir,
            child: None,
            buddies: Vec::new(),
        }
    }

    pub fn services_dir(&self) -> PathBuf {
        self.dir.path().join("services")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("rt/reeve/agent.sock")
    }
    pub fn log_dir(&self, service: &str) -> PathBuf {
        self.data_dir().join("logs").join(service)
    }

    /// Writes a service file.
    pub fn service(&self, name: &str, toml: &str) {
        std::fs::write(self.services_dir().join(format!("{name}.toml")), toml)
            .expect("write service");
    }

    /// The command line of `reeve agent` for this fixture.
    pub fn agent_command(&self) -> Command {
        let mut c = Command::new(reeve_bin());
        c.args(self.agent_args());
        self.agent_env(&mut c);
        c
    }

    /// The command line of `reeve-buddy launch --home HOME -- reeve agent …` for this
    /// fixture: the agent under its launcher. The buddy binary is given by
    /// `REEVE_BUDDY_PATH`, so that an updated agent's package may name its own.
    pub fn launcher_command(&self, home: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(buddy_bin());
        let mut args = self.agent_args();
        args.truncate(args.len() - 2);
        c.arg("launch")
            .arg("--home")
            .arg(home)
            .arg("--")
            .arg(reeve_bin())
            .args(args)
            .args(extra);
        self.agent_env(&mut c);
        c.env("REEVE_BUDDY_PATH", buddy_bin());
        c
    }

    /// `agent …` with this fixture's directories; `--buddy-path` comes last.
    fn agent_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "agent".into(),
            "--allow-root".into(),
            "--data-dir".into(),
            self.data_dir().into(),
            "--services-dir".into(),
            self.services_dir().into(),
            "--buddy-path".into(),
            buddy_bin().into(),
        ]
    }

    fn agent_env(&self, c: &mut Command) {
        c.env("XDG_RUNTIME_DIR", self.dir.path().join("rt"))
            .env(
                "REEVE_LOG",
                std::env::var("IT_AGENT_LOG").unwrap_or("error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
    }

    /// Starts the agent and waits until it answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the agent with these extra environment variables and waits until it answers.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.agent_command();
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn agent");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), "the agent's socket", || {
            let out = self.cli(&["ps", "--json"]);
            out.status.success().then_some(())
        });
        self.remember_buddies();
    }

    /// Runs `reeve ARGS…` against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(reeve_bin())
            .args(args)
            .env("XDG_RUNTIME_DIR", self.dir.path().join("rt"))
            .stdin(Stdio::null())
            .bounded_output()
            .expect("run reeve")
    }

    /// Runs `reeve ARGS…`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "reeve {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ps(&mut self) -> Vec<ServiceStatus> {
        let list: Vec<ServiceStatus> =
            serde_json::from_str(&self.ok(&["ps", "--json"])).expect("ps json");
        for s in &list {
            if let Some(b) = s.buddy_pid
                && !self.buddies.contains(&b)
            {
                self.buddies.push(b);
            }
        }
        list
    }

    fn remember_buddies(&mut self) {
        let _ = self.ps();
    }

    pub fn status(&mut self, name: &str) -> ServiceStatus {
        self.ps()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Waits until `name` satisfies `pred`.
    pub fn wait_status(
        &mut self,
        name: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        wait_for(limit, &format!("{name}: {what}"), || {
            let s = self.ps().into_iter().find(|s| s.name == name)?;
            pred(&s).then_some(s)
        })
    }

    /// Every stored event (oldest first).
    pub fn events(&self, service: Option<&str>) -> Vec<Event> {
        let mut args = vec!["events", "--json", "-n", "100000"];
        if let Some(s) = service {
            args.push("--service");
            args.push(s);
        }
        serde_json::from_str(&self.ok(&args)).expect("events json")
    }

    /// Kills the agent with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the agent with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill("TERM", c.id());
            let _ = c.wait();
        }
    }
}

/// Pids of the live `reeve-buddy` processes whose run directory lies under `dir`.
fn buddies_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("reeve-buddy"))
                && args.iter().any(|a| a.starts_with(&needle))
        })
        .collect()
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.ps();
        }
        let services = if self.child.is_some() {
            self.ps()
        } else {
            Vec::new()
        };
        self.kill9();
        // Buddies this agent started that no `ps` listed (a launcher switching agents
        // when the last one ran, say): found by their run directory, inside ours.
        for b in buddies_under(self.dir.path()) {
            if !self.buddies.contains(&b) {
                self.buddies.push(b);
            }
        }
        // SIGTERM makes a buddy stop its service and exit; SIGKILL whatever is left.
        for b in &self.buddies {
            kill("TERM", *b);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.buddies.iter().any(|b| alive(*b)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for b in &self.buddies {
            kill("KILL", *b);
        }
        for s in services {
            if let Some(p) = s.pid {
                kill("KILL", p);
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{p}")])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// The kinds of `events`, as strings, in order.
pub fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Reads a whole file to a string (empty if missing).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
