//! reeve's configuration: raw serde types checked into validated ones.
//!
//! Configuration is read in two phases: the text is deserialized into raw types that reject
//! unknown fields, then checked into validated types. The check reports **every** problem at
//! once, each as a [`ConfigError`] naming the file, the field (a dotted path as written:
//! `restart.backoff_max`, `health.url`, `actions.rotate.signal`, `limits.nofile`) and the
//! reason. Nothing here has side effects: files are read, never written (user and group
//! names are looked up by reading `/etc/passwd` and `/etc/group`).
//!
//! # Service definition files
//!
//! A services directory holds one file per service: `NAME.toml`, or `NAME.json` with the
//! same fields. [`load_services_dir`] reads every `*.toml` and `*.json` file in it (not
//! recursively, sorted by name; other files are ignored). The file stem is the service's
//! name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-` (module
//! services are named `module/service`). Two files with the same stem (`web.toml`,
//! `web.json`) are both rejected.
//!
//! ```toml
//! description = "The web front end"
//! command = ["/usr/bin/web", "--port", "8080"]   # or a string, run by /bin/sh -c
//! args = ["--verbose"]                           # appended to an array command
//! working_dir = "/srv/web"                       # alias: cwd; must be absolute
//! env = { RUST_LOG = "info" }
//! inherit_env = true                             # start from the agent's environment
//! user = "web"                                   # name or uid; group defaults to its primary group
//! group = "www"                                  # name or gid
//! provides = ["http"]                            # besides the service's own name
//! requires = ["database"]                        # started after whatever provides these
//! priority = 0                                   # lower starts first among independent services
//! initial_state = "running"                      # or "stopped"
//!
//! [restart]
//! policy = "always"              # "always" | "on-failure" | "never"
//! backoff_initial = "100ms"      # delay before the first restart of a failure streak (0: at once)
//! backoff_max = "30s"            # upper bound; default max(30s, backoff_initial); ≥ backoff_initial
//! backoff_multiplier = 2.0       # ≥ 1
//! jitter = 0.0                   # random extra fraction of the delay, 0 ..= 1
//! reset_after = "10s"            # up this long: back-off and failure count reset
//! max_restarts = 10              # at most this many restarts within restart_window (default: no limit)
//! restart_window = "60s"
//! max_consecutive_failures = 5   # then the service is failed (default: no limit; ≥ 1)
//!
//! [stop]
//! signal = "TERM"                # "TERM", "SIGTERM" or 15
//! kill_timeout = "10s"           # then SIGKILL to the process group; may be 0
//!
//! [reload]                       # exactly one of signal and command
//! signal = "HUP"
//!
//! [actions.rotate]               # custom actions; names like service names, without '/'
//! command = ["/usr/bin/web-ctl", "rotate"]
//!
//! [health]
//! kind = "http"                  # see the kinds below
//! url = "http://127.0.0.1:8080/healthz"
//! expect_status = 200            # default: any 2xx
//! interval = "10s"               # > 0
//! timeout = "5s"                 # > 0 and ≤ interval; default min(5s, interval)
//! threshold = 3                  # failures in a row before acting; ≥ 1
//! on_failure = "restart"         # or "mark" (only mark unhealthy)
//! start_period = "0s"            # failures this soon after a start do not count
//!
//! [log]
//! max_size = "10MiB"             # rotate at this size; ≥ 4096 bytes
//! keep = 5                       # rotated files kept; 0 ..= 100
//! pipe = "logger -t web"         # also feed output to this shell command
//! to_file = true                 # write the rotated files
//!
//! [limits]                       # nofile nproc core as cpu fsize data stack memlock
//! nofile = 65536                 # soft and hard
//! nproc = { soft = 512, hard = 1024 }
//! core = "unlimited"
//! as = "2GiB"                    # byte-valued limits also take sizes
//! ```
//!
//! Every field but `command` is optional; the comments show the defaults.
//!
//! **Health check kinds**, each with its own fields (a field of another kind is an error):
//! - `kind = "exec"`, `command = [..]` (or a shell string): exit code 0 is healthy;
//! - `kind = "http"`, `url = "http://host:port/path"` (plain http, port required), optional
//!   `expect_status`;
//! - `kind = "tcp"`, `address = "host:port"` (`[::1]:5432` for IPv6): a connect succeeds;
//! - `kind = "file_modified_within"`, `path = "/absolute"`, `within = "30s"`;
//! - `kind = "max_uptime"`, `max = "24h"`: past it the check fails (a periodic restart).
//!
//! **Values.** Durations are humantime strings (`"100ms"`, `"30s"`, `"1h 30m"`) or numbers
//! of seconds (`10`, `0.5`); see [`parse_duration`]. Sizes are byte counts or strings with a
//! unit: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` are powers of 1024, `KB`/`MB`/`GB`/`TB`
//! powers of 1000; see [`parse_size`]. Signals are names with or without `SIG`, or numbers
//! 1 to 64; see [`parse_signal`]. Environment variable names must be non-empty without `=`
//! or NUL; no value or argument may contain NUL.
//!
//! **Upkeeper compatibility.** Files written for Upkeeper keep working through these
//! top-level names (a name and its reeve equivalent may not both be set):
//!
//! | Upkeeper | reeve |
//! |---|---|
//! | `ExecStart` | `command` (a string runs through `/bin/sh -c`) |
//! | `ShortDescription` | `description` |
//! | `Provides` | `provides` |
//! | `Prerequisites` | `requires` |
//! | `StartPriority` | `priority` |
//! | `InitialState` | `initial_state` |
//! | `SetUID`, `SetGID` | `user`, `group` |
//! | `KillTimeout` (seconds) | `stop.kill_timeout` |
//! | `MaxConsecutiveFailures` (negative: no limit) | `restart.max_consecutive_failures` |
//! | `UserMaxRestarts` (negative: no limit) | `restart.max_restarts` |
//! | `UserRestartWindow` (seconds) | `restart.restart_window` |
//! | `UserRateLimit` (seconds) | `restart.backoff_initial` |
//! | `RandomizeRateLimit = true` | `restart.jitter = 0.5` |
//! | `CustomActions = { name = "script" }` | `[actions.name] command = "script"` |
//!
//! # Start order
//!
//! A service implicitly provides its own name. It starts after every service that provides
//! something it `requires`; among services free to start, lower `priority` goes first, then
//! the name. Stop order is the reverse. [`load_services_dir`] leaves out (with an error on
//! the file, field `requires`) services whose requirements nothing valid provides and
//! services on a dependency cycle (`dependency cycle: a → b → a`), and returns the rest in
//! start order; [`start_order`] orders an already loaded set.
#![deny(unsafe_code)]

pub mod error;
pub mod load;
pub mod order;
pub mod service;
pub mod units;

pub use error::ConfigError;
pub use load::{LoadReport, load_services_dir};
pub use order::{OrderError, start_order};
pub use service::{
    ActionDef, HealthCheck, HealthKind, LogConfig, OnFailure, ServiceDef, parse_service,
    validate_name,
};
pub use units::{parse_duration, parse_signal, parse_size};
