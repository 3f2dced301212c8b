//! Tests of parsing and checking service files.

use super::accounts::Accounts;
use super::*;
use reeve_proto::buddy::RestartMode;

fn accounts() -> Accounts {
    Accounts::parse(
        "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n",
        "root:x:0:\nwww:x:1001:\nadm:x:4:\n",
    )
}

fn parse_as(file: &str, text: &str) -> Result<ServiceDef, Vec<ConfigError>> {
    let file = Path::new(file);
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
    let (raw, keys) = syntax::read(file, text).map_err(|e| vec![e])?;
    check::service(name, file, raw, &keys, &accounts())
}

fn ok(text: &str) -> ServiceDef {
    match parse_as("/s/web.toml", text) {
        Ok(d) => d,
        Err(e) => panic!("unexpected errors: {e:#?}"),
    }
}

fn errs(text: &str) -> Vec<ConfigError> {
    match parse_as("/s/web.toml", text) {
        Ok(d) => panic!("expected errors, got {d:#?}"),
        Err(e) => e,
    }
}

fn fields(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[test]
fn minimal_file_gets_the_defaults() {
    let d = ok("command = [\"/usr/bin/web\", \"--port\", \"80\"]\n");
    assert_eq!(d.name, "web");
    assert_eq!(d.file, Path::new("/s/web.toml"));
    assert_eq!(d.argv, vec![s("/usr/bin/web"), s("--port"), s("80")]);
    assert_eq!(d.description, None);
    assert_eq!(d.cwd, None);
    assert!(d.env.is_empty());
    assert!(d.inherit_env);
    assert_eq!((d.uid, d.gid), (None, None));
    assert!(d.provides.is_empty() && d.requires.is_empty());
    assert_eq!(d.priority, 0);
    assert_eq!(d.initial_state, Desired::Running);
    assert_eq!(d.restart, RestartSpec::default());
    assert_eq!(
        d.stop,
        StopSpec {
            signal: libc::SIGTERM,
            kill_timeout_ms: 10_000
        }
    );
    assert_eq!(d.reload, None);
    assert!(d.actions.is_empty());
    assert_eq!(d.health, None);
    assert_eq!(d.log, LogConfig::default());
    assert_eq!(d.log.max_size, 10 << 20);
    assert_eq!(d.log.keep, 5);
    assert!(d.rlimits.is_empty());
}

const FULL: &str = r#"
description = "The web front end"
command = ["/usr/bin/web"]
args = ["--port", "80"]
working_dir = "/srv/web"
env = { RUST_LOG = "info", PORT = "80" }
inherit_env = false
user = "web"
group = "adm"
provides = ["http"]
requires = ["db", "cache"]
priority = -5
initial_state = "stopped"

[restart]
policy = "on-failure"
backoff_initial = "250ms"
backoff_max = 60
backoff_multiplier = 1.5
jitter = 0.2
reset_after = "5m"
max_restarts = 10
restart_window = "2m"
max_consecutive_failures = 4

[stop]
signal = "SIGINT"
kill_timeout = "3s"

[reload]
signal = "HUP"

[actions.rotate]
signal = "USR1"

[actions.flush]
command = ["/usr/bin/web-ctl", "flush"]

[health]
kind = "http"
url = "http://127.0.0.1:8080/healthz"
expect_status = 204
interval = "15s"
timeout = "2s"
threshold = 2
on_failure = "mark"
start_period = "30s"

[log]
max_size = "1MiB"
keep = 9
pipe = "logger -t web"
to_file = false

[limits]
nofile = 4096
nproc = { soft = 100, hard = 200 }
core = "unlimited"
as = "1G"
"#;

#[test]
fn every_field_is_parsed() {
    let d = ok(FULL);
    assert_eq!(d.description.as_deref(), Some("The web front end"));
    assert_eq!(d.argv, vec![s("/usr/bin/web"), s("--port"), s("80")]);
    assert_eq!(d.cwd.as_deref(), Some(Path::new("/srv/web")));
    assert_eq!(d.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(d.env.len(), 2);
    assert!(!d.inherit_env);
    assert_eq!((d.uid, d.gid), (Some(1000), Some(4)));
    assert_eq!(d.provides, vec![s("http")]);
    assert_eq!(d.requires, vec![s("db"), s("cache")]);
    assert_eq!(d.priority, -5);
    assert_eq!(d.initial_state, Desired::Stopped);
    assert_eq!(
        d.restart,
        RestartSpec {
            mode: RestartMode::OnFailure,
            backoff_initial_ms: 250,
            backoff_max_ms: 60_000,
            backoff_multiplier: 1.5,
            jitter: 0.2,
            reset_after_ms: 300_000,
            max_restarts: Some(10),
            restart_window_ms: 120_000,
            max_consecutive_failures: Some(4),
        }
    );
    assert_eq!(
        d.stop,
        StopSpec {
            signal: libc::SIGINT,
            kill_timeout_ms: 3_000
        }
    );
    assert_eq!(d.reload, Some(ActionDef::Signal(libc::SIGHUP)));
    assert_eq!(
        d.actions.get("rotate"),
        Some(&ActionDef::Signal(libc::SIGUSR1))
    );
    assert_eq!(
        d.actions.get("flush"),
        Some(&ActionDef::Command(vec![s("/usr/bin/web-ctl"), s("flush")]))
    );
    assert_eq!(
        d.health,
        Some(HealthCheck {
            kind: HealthKind::Http {
                url: s("http://127.0.0.1:8080/healthz"),
                expect_status: Some(204),
            },
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
            threshold: 2,
            on_failure: OnFailure::Mark,
            start_period: Duration::from_secs(30),
        })
    );
    assert_eq!(
        d.log,
        LogConfig {
            max_size: 1 << 20,
            keep: 9,
            pipe: Some(s("logger -t web")),
            to_file: false
        }
    );
    let lim = |r: &str, soft, hard| Rlimit {
        resource: s(r),
        soft,
        hard,
    };
    assert_eq!(
        d.rlimits,
        vec![
            lim("as", 1 << 30, 1 << 30),
            lim("core", u64::MAX, u64::MAX),
            lim("nofile", 4096, 4096),
            lim("nproc", 100, 200),
        ]
    );
}

#[test]
fn the_same_service_in_json() {
    let json = r#"{
        "command": "exec /usr/bin/web",
        "cwd": "/srv",
        "restart": { "policy": "never", "backoff_initial": 0.5 },
        "health": { "kind": "tcp", "address": "[::1]:5432" },
        "limits": { "nofile": { "soft": 10, "hard": "unlimited" } },
        "description": null
    }"#;
    let d = match parse_as("/s/web.json", json) {
        Ok(d) => d,
        Err(e) => panic!("{e:#?}"),
    };
    assert_eq!(d.argv, vec![s("/bin/sh"), s("-c"), s("exec /usr/bin/web")]);
    assert_eq!(d.cwd.as_deref(), Some(Path::new("/srv")));
    assert_eq!(d.restart.mode, RestartMode::Never);
    assert_eq!(d.restart.backoff_initial_ms, 500);
    assert_eq!(
        d.health.map(|h| h.kind),
        Some(HealthKind::Tcp {
            address: s("[::1]:5432")
        })
    );
    assert_eq!(d.rlimits[0].hard, u64::MAX);
}

#[test]
fn string_command_runs_through_sh() {
    let d = ok("command = \"echo hi; sleep 1\"\n");
    assert_eq!(d.argv, vec![s("/bin/sh"), s("-c"), s("echo hi; sleep 1")]);
    let e = errs("command = \"echo\"\nargs = [\"x\"]\n");
    assert_eq!(fields(&e), ["args"]);
}

#[test]
fn upkeeper_aliases() {
    let d = ok(r#"
ShortDescription = "legacy"
ExecStart = "/usr/bin/old --daemon"
Provides = ["old"]
Prerequisites = ["db"]
StartPriority = 3
KillTimeout = 60
MaxConsecutiveFailures = -1
UserMaxRestarts = 5
UserRestartWindow = 30
UserRateLimit = 45
RandomizeRateLimit = true
SetUID = 0
SetGID = 4
InitialState = "stopped"
CustomActions = { dump = "kill -USR2 $1" }
"#);
    assert_eq!(d.description.as_deref(), Some("legacy"));
    assert_eq!(
        d.argv,
        vec![s("/bin/sh"), s("-c"), s("/usr/bin/old --daemon")]
    );
    assert_eq!(d.provides, vec![s("old")]);
    assert_eq!(d.requires, vec![s("db")]);
    assert_eq!(d.priority, 3);
    assert_eq!(d.stop.kill_timeout_ms, 60_000);
    assert_eq!(d.restart.max_consecutive_failures, None);
    assert_eq!(d.restart.max_restarts, Some(5));
    assert_eq!(d.restart.restart_window_ms, 30_000);
    assert_eq!(d.restart.backoff_initial_ms, 45_000);
    // backoff_max follows a larger initial delay when not set.
    assert_eq!(d.restart.backoff_max_ms, 45_000);
    assert!((d.restart.jitter - 0.5).abs() < f64::EPSILON);
    assert_eq!((d.uid, d.gid), (Some(0), Some(4)));
    assert_eq!(d.initial_state, Desired::Stopped);
    assert_eq!(
        d.actions.get("dump"),
        Some(&ActionDef::Command(vec![
            s("/bin/sh"),
            s("-c"),
            s("kill -USR2 $1")
        ]))
    );
}

#[test]
fn upkeeper_and_native_fields_conflict() {
    let e = errs(
        "command = [\"a\"]\nKillTimeout = 5\nMaxConsecutiveFailures = 0\n[stop]\nkill_timeout = 1\n",
    );
    assert_eq!(fields(&e), ["MaxConsecutiveFailures", "KillTimeout"]);
    let e = errs("ExecStart = \"\"\n");
    assert_eq!(fields(&e), ["ExecStart"]);
}

#[test]
fn every_mistake_is_reported_at_once() {
    let e = errs(
        r#"
command = ["/usr/bin/web"]
working_dir = "relative/dir"

[restart]
backoff_initial = "10s"
backoff_max = "1s"

[health]
kind = "http"
url = "https://example.com/"

[actions.rotate]
signal = "SIGNOPE"
"#,
    );
    assert_eq!(
        fields(&e),
        [
            "working_dir",
            "restart.backoff_max",
            "actions.rotate.signal",
            "health.url"
        ],
        "{e:#?}"
    );
    assert!(e.iter().all(|e| e.file == Path::new("/s/web.toml")));
    assert_eq!(
        e[1].to_string(),
        "/s/web.toml: restart.backoff_max: must be at least the initial back-off (10000ms)"
    );
}

#[test]
fn many_more_mistakes() {
    let e = errs(
        r#"
command = []
env = { "A=B" = "x", OK = "nul\u0000" }
user = "nosuchuser"
group = "nosuchgroup"
requires = ["bad name"]
priority = 99999999999
initial_state = "paused"

[restart]
policy = "sometimes"
backoff_multiplier = 0.5
jitter = 1.5
reset_after = 0
max_restarts = -1
restart_window = "0s"
max_consecutive_failures = 0

[stop]
signal = 99
kill_timeout = -1

[reload]
signal = "HUP"
command = ["x"]

[actions."-bad"]
command = "x"

[actions.empty]

[health]
kind = "exec"
url = "http://a:1/"
interval = "1s"
timeout = "2s"
threshold = 0
on_failure = "panic"

[log]
max_size = 100
keep = 101
pipe = " "

[limits]
nofile = { soft = 10, hard = 5 }
bogus = 1
cpu = "1G"
"#,
    );
    assert_eq!(
        fields(&e),
        [
            "command",
            "env.A=B",
            "env.OK",
            "user",
            "group",
            "requires",
            "priority",
            "initial_state",
            "restart.policy",
            "restart.backoff_multiplier",
            "restart.jitter",
            "restart.reset_after",
            "restart.max_restarts",
            "restart.restart_window",
            "restart.max_consecutive_failures",
            "stop.signal",
            "stop.kill_timeout",
            "reload",
            "actions.-bad",
            "actions.empty",
            "health.url",
            "health.command",
            "health.timeout",
            "health.threshold",
            "health.on_failure",
            "log.max_size",
            "log.keep",
            "log.pipe",
            "limits.bogus",
            "limits.cpu",
            "limits.nofile",
        ],
        "{e:#?}"
    );
}

#[test]
fn missing_command() {
    let e = errs("description = \"nothing to run\"\n");
    assert_eq!(fields(&e), ["command"]);
}

#[test]
fn unknown_fields_are_errors_naming_the_field() {
    let e = errs("command = [\"a\"]\n[stop]\nsignal = \"TERM\"\ngrace = \"5s\"\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "stop.grace");
    assert!(e[0].reason.contains("unknown field `grace`"), "{}", e[0]);
    assert!(e[0].reason.contains("line 4"), "{}", e[0]);
}

#[test]
fn health_kinds() {
    let h = |t: &str| {
        ok(&format!("command = [\"a\"]\n[health]\n{t}"))
            .health
            .map(|h| h.kind)
    };
    assert_eq!(
        h("kind = \"exec\"\ncommand = [\"/bin/check\"]\n"),
        Some(HealthKind::Exec {
            argv: vec![s("/bin/check")]
        })
    );
    assert_eq!(
        h("kind = \"file_modified_within\"\npath = \"/run/hb\"\nwithin = \"30s\"\n"),
        Some(HealthKind::FileModifiedWithin {
            path: PathBuf::from("/run/hb"),
            within: Duration::from_secs(30)
        })
    );
    assert_eq!(
        h("kind = \"max_uptime\"\nmax = \"24h\"\n"),
        Some(HealthKind::MaxUptime {
            max: Duration::from_secs(86_400)
        })
    );
    let d = ok("command = [\"a\"]\n[health]\nkind = \"tcp\"\naddress = \"db:5432\"\n");
    let hc = d.health.unwrap_or_else(|| panic!("health"));
    assert_eq!(
        (hc.interval, hc.timeout, hc.threshold),
        (Duration::from_secs(10), Duration::from_secs(5), 3)
    );
    assert_eq!(
        (hc.on_failure, hc.start_period),
        (OnFailure::Restart, Duration::ZERO)
    );

    let d = ok("command = [\"a\"]\n[health]\nkind = \"max_uptime\"\nmax = 60\ninterval = \"1s\"\n");
    let hc = d.health.unwrap_or_else(|| panic!("health"));
    assert_eq!(
        hc.timeout,
        Duration::from_secs(1),
        "the default timeout shrinks to the interval"
    );
    let e = errs(
        "command = [\"a\"]\n[health]\nkind = \"max_uptime\"\nmax = 60\ninterval = \"1s\"\ntimeout = \"2s\"\n",
    );
    assert_eq!(fields(&e), ["health.timeout"]);

    let e = errs("command = [\"a\"]\n[health]\nkind = \"file_modified_within\"\npath = \"rel\"\n");
    assert_eq!(fields(&e), ["health.path", "health.within"]);
    let e = errs("command = [\"a\"]\n[health]\nkind = \"tcp\"\naddress = \"nope\"\n");
    assert_eq!(fields(&e), ["health.address"]);
    let e = errs("command = [\"a\"]\n[health]\nkind = \"dns\"\n");
    assert_eq!(fields(&e), ["health.kind"]);
    let e = errs("command = [\"a\"]\n[health]\ninterval = \"1s\"\n");
    assert_eq!(fields(&e), ["health.kind"]);
}

#[test]
fn names() {
    for good in ["web", "a", "my_svc-2.0", "mod/web", &"x".repeat(64)] {
        assert_eq!(validate_name(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        ".hidden",
        "-x",
        "a b",
        "a/b/c",
        "/a",
        "a/",
        "é",
        &"x".repeat(65),
        "a/.b",
    ] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
    let e = match parse_as("/s/.web.toml", "command = [\"a\"]\n") {
        Err(e) => e,
        Ok(_) => panic!("a bad name must fail"),
    };
    assert_eq!(fields(&e), [""]);
}

#[test]
fn buddy_spec_compiles_env_log_and_policies() {
    let mut d = ok(r#"
command = ["/usr/bin/web"]
env = { PORT = "80", PATH = "/opt/bin" }
[restart]
backoff_initial = "1.5s"
backoff_max = "1m"
[stop]
signal = 2
kill_timeout = 0
[log]
max_size = 8192
keep = 2
"#);
    let base = vec![(s("PATH"), s("/usr/bin")), (s("HOME"), s("/root"))];
    let spec = d.buddy_spec(Path::new("/var/lib/reeve/logs/web"), &base);
    assert_eq!(spec.service, "web");
    assert_eq!(spec.argv, vec![s("/usr/bin/web")]);
    assert_eq!(
        spec.env,
        vec![
            (s("HOME"), s("/root")),
            (s("PATH"), s("/opt/bin")),
            (s("PORT"), s("80"))
        ]
    );
    assert_eq!(spec.restart.backoff_initial_ms, 1_500);
    assert_eq!(spec.restart.backoff_max_ms, 60_000);
    assert_eq!(
        spec.stop,
        StopSpec {
            signal: 2,
            kill_timeout_ms: 0
        }
    );
    assert_eq!(spec.log.dir, Path::new("/var/lib/reeve/logs/web"));
    assert_eq!(
        (spec.log.max_size, spec.log.keep, spec.log.to_file),
        (8192, 2, true)
    );

    d.inherit_env = false;
    let spec = d.buddy_spec(Path::new("/l"), &base);
    assert_eq!(
        spec.env,
        vec![(s("PATH"), s("/opt/bin")), (s("PORT"), s("80"))]
    );
}

#[test]
fn system_accounts_resolve_root() {
    let d = parse_service(
        "r",
        Path::new("/s/r.toml"),
        "command = [\"a\"]\nuser = \"root\"\n",
    );
    if std::fs::read_to_string("/etc/passwd").is_ok_and(|p| p.starts_with("root:")) {
        let d = d.unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!((d.uid, d.gid), (Some(0), Some(0)));
    }
}

#[test]
fn the_documented_example_parses() {
    let lib = include_str!("../lib.rs");
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| *l == "```toml")
        .map_or(0, |i| i + 1);
    let len = doc[start..].iter().position(|l| *l == "```").unwrap_or(0);
    let example = doc[start..start + len].join("\n");
    assert!(example.contains("[restart]"));
    let d = ok(&example);
    assert_eq!((d.uid, d.gid), (Some(1000), Some(1001)));
    assert_eq!(d.argv.len(), 4);
    assert_eq!(d.rlimits.len(), 4);
    assert!(matches!(
        d.health.map(|h| h.kind),
        Some(HealthKind::Http { .. })
    ));
}
