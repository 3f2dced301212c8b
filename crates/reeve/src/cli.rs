//! Command-line interface: every command, its flags and their `REEVE_…` twins.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use reeve_agent::config::{AgentConfig, AgentFile};
use std::path::PathBuf;
use std::process::ExitCode;

/// reeve keeps application software installed, configured, running and answerable.
#[derive(Parser, Debug)]
#[command(name = "reeve", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The agent's control socket [default: $XDG_RUNTIME_DIR/reeve/agent.sock, or /run/reeve/agent.sock for root]
    #[arg(long, global = true, env = "REEVE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (supervises the services of a services directory), or talk to it.
    Agent(AgentCmd),
    /// List services with their state, pid, uptime and restarts.
    Ps {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a service (or every service, in dependency order).
    Start(ControlArgs),
    /// Stop a service (or every service, in reverse dependency order).
    Stop(ControlArgs),
    /// Stop then start a service.
    Restart(ControlArgs),
    /// Reload a service with its reload signal or command.
    Reload(ControlArgs),
    /// Run a named custom action of a service.
    Action {
        /// The service.
        name: String,
        /// The action, as named in the service file's [actions.NAME].
        action: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a service's output (timestamped, `o` = stdout, `e` = stderr).
    Logs {
        /// The service.
        name: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many recent lines.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Show the event log: every state change and control action.
    Events {
        /// Only this service.
        #[arg(long, short)]
        service: Option<String>,
        /// Only events newer than this (e.g. 10m, 1h, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// At most this many (the newest).
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: u32,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Print JSON (one object per line with --follow).
        #[arg(long)]
        json: bool,
    },
    /// Module packages: pack, sign, verify, keygen (offline); install and run them (agent).
    Module(crate::module_cmds::ModuleArgs),
    /// Ed25519 keys for operators: create, show.
    #[command(subcommand)]
    Key(crate::key_cmds::KeyCmd),
    /// Desired state of this node's modules: plan, apply (with rollback).
    #[command(subcommand)]
    State(crate::state_cmds::StateCmd),
    /// Start a hub and a local agent with the signed example module, all in one folder, and
    /// print the dashboard URL (the quickest way to see reeve at work).
    Dev(crate::dev_cmd::DevArgs),
    /// Run the hub (relay, API), or administer its data directory: tokens, operators.
    Hub(crate::hub_cmds::HubCmd),
    /// Send a request to nodes through the hub, signed with your key; waits for the replies.
    Send(crate::fleet_cmds::SendArgs),
    /// List the nodes known to the hub: online or not, last seen, services;
    /// `reeve nodes remove NAME` removes one (admin): its key can no longer connect, the
    /// messages waiting for it are purged, and the name is free for a new join.
    #[command(after_help = "Examples:\n  reeve nodes --search edge\n  reeve nodes remove edge-17")]
    Nodes {
        #[command(flatten)]
        conn: crate::fleet_cmds::HubConn,
        /// `remove NAME`: remove that node from the fleet.
        #[arg(value_names = ["remove", "NAME"], num_args = 0..=2)]
        words: Vec<String>,
        /// Only nodes whose name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Messages sent through the hub: their state (accepted, delivered, replied, expired,
    /// purged); `reeve messages show ID` shows one and its reply; `reeve messages purge
    /// --id ID | --older-than 2d [--node N]` purges messages not yet delivered (each
    /// becomes a dead letter and a signed skip marker takes its place).
    #[command(
        after_help = "Examples:\n  reeve messages --pending\n  reeve messages show 01J…\n  \
        reeve messages purge --id 01J…\n  reeve messages purge --older-than 7d --node n1"
    )]
    Messages {
        #[command(flatten)]
        conn: crate::fleet_cmds::HubConn,
        /// `show ID`, or `ID`: one message and its reply; `purge`: purge (with --id or
        /// --older-than).
        #[arg(value_names = ["show|purge", "ID"], num_args = 0..=2)]
        show: Vec<String>,
        /// With `purge`: this message (repeat for more).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        /// With `purge`: every message still waiting that was accepted longer ago than
        /// this (e.g. 2h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// With `purge --older-than`: only messages to this node.
        #[arg(long)]
        node: Option<String>,
        /// Only messages not yet delivered.
        #[arg(long, conflicts_with = "dead")]
        pending: bool,
        /// Only dead letters (expired before delivery).
        #[arg(long)]
        dead: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The hub's central error log: dead letters, refusals, node errors.
    Errors {
        #[command(flatten)]
        conn: crate::fleet_cmds::HubConn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the services and the latest events.
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
}

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// The service (omit with --all).
    #[arg(required_unless_present = "all")]
    pub name: Option<String>,
    /// Every service, in dependency order (start) or reverse order (stop).
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Return once the request is sent instead of waiting for its outcome.
    #[arg(long)]
    pub no_wait: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCmd {
    #[command(subcommand)]
    pub sub: Option<AgentSub>,
    #[command(flatten)]
    pub run: AgentRunArgs,
}

#[derive(Subcommand, Debug)]
pub enum AgentSub {
    /// Re-read the services directory; only changed services are touched (same as SIGHUP).
    Reload {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the running agent's version, pid and directories.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leave the fleet: the running agent asks its hub to remove this node (signed, after
    /// everything it sent before); once the hub confirms, the link closes for good, the
    /// node forgets the hub and deletes its key. Services keep running. `reeve agent join`
    /// enrols it again (with a new key).
    Leave {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate this node's fleet key: the running agent makes a new key and presents it to
    /// the hub at once, signed by the old and the new key. The hub keeps accepting the old
    /// key for the overlap (messages sealed with it are still on their way). Exit status:
    /// 0 rotated, 3 pending (the hub has not recorded it yet: it will at the next link).
    #[command(after_help = "Example: reeve agent rotate-key --overlap 7d")]
    RotateKey {
        /// How long the hub keeps accepting the old key (at most 90 days).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Update the running agent to another version of the signed `reeve-agent` module from
    /// the registry. The agent must run under its launcher (`reeve-buddy launch`), which
    /// starts the new agent on trial and switches back if it exits or is not healthy in
    /// time. Services keep running, with the same pids. Exit status: 0 updated, 3 switched
    /// back, 1 refused or failed.
    #[command(
        disable_version_flag = true,
        after_help = "Example: reeve agent update --version 0.2.0\n\nThe package is reeve-agent-VERSION[-OS-ARCH].tar.gz in the registry, signed by a\ntrusted key, with the new binaries in bin/ (reeve, reeve-buddy, reeve-modwork)."
    )]
    Update {
        /// The version to switch to.
        #[arg(long)]
        version: String,
        /// Allow a lower version than the running one.
        #[arg(long)]
        force: bool,
        /// How long the new agent has to report healthy before the launcher switches back.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        trial_timeout: std::time::Duration,
        /// Return once the switch has started instead of waiting for its outcome.
        #[arg(long)]
        no_wait: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute every running buddy into the agent's buddy binary (after an update
    /// brought a new one): each keeps its pid and its service, which never stops. Buddies
    /// too old to know how keep running as they are.
    ReexecBuddies {
        /// The buddy binary to run [default: the agent's buddy_path]
        #[arg(long)]
        path: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create this node's identity: its name and Ed25519 key pair (in the data directory).
    Init {
        #[command(flatten)]
        dir: NodeDirArgs,
        /// The node's name at the hub (lowercase letters, digits, '-', '.', '_').
        #[arg(long)]
        name: String,
        /// Replace existing settings (the key is kept).
        #[arg(long)]
        force: bool,
    },
    /// Enrol this node at a hub with a one-time token (pins the hub's key; the token's secret is proved, never sent). Restart the agent to connect.
    #[command(after_help = "Example: reeve agent join --token reeve1.… --name edge-17")]
    Join {
        #[command(flatten)]
        dir: NodeDirArgs,
        /// The hub's URL [default: the one in the token]
        url: Option<String>,
        /// The join token from `reeve hub token create`.
        #[arg(long, env = "REEVE_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// The node's name [default: the one from `reeve agent init`]
        #[arg(long)]
        name: Option<String>,
        /// HTTP CONNECT proxy to reach the hub through.
        #[arg(long, env = "REEVE_HUB_PROXY")]
        proxy: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the node's identity lives (the agent's data directory).
#[derive(Args, Debug)]
pub struct NodeDirArgs {
    /// Settings file (TOML), to find the data directory.
    #[arg(long, env = "REEVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's data directory.
    #[arg(long, env = "REEVE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl NodeDirArgs {
    /// The data directory the agent would use.
    pub fn resolve(&self) -> Result<PathBuf> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (default_config_file(), false),
        };
        let mut file = AgentFile::load(&path, required)?;
        if self.data_dir.is_some() {
            file.data_dir = self.data_dir.clone();
        }
        Ok(AgentConfig::resolve(file)?.data_dir)
    }
}

/// Settings of `reeve agent`; each also in the TOML file given by --config.
#[derive(Args, Debug, Default)]
pub struct AgentRunArgs {
    /// Settings file (TOML) [default: $XDG_CONFIG_HOME/reeve/agent.toml or /etc/reeve/agent.toml; optional]
    #[arg(long, env = "REEVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite store, buddies, logs [default: $XDG_DATA_HOME/reeve or /var/lib/reeve]
    #[arg(long, env = "REEVE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of service files (*.toml, *.json) [default: $XDG_CONFIG_HOME/reeve/services or /etc/reeve/services]
    #[arg(long, env = "REEVE_SERVICES_DIR", value_name = "DIR")]
    pub services_dir: Option<PathBuf>,
    /// The reeve-buddy binary [default: beside reeve]
    #[arg(long, env = "REEVE_BUDDY_PATH", value_name = "PATH")]
    pub buddy_path: Option<PathBuf>,
    /// The reeve-modwork binary, the module worker [default: beside reeve]
    #[arg(long, env = "REEVE_MODWORK_PATH", value_name = "PATH")]
    pub modwork_path: Option<PathBuf>,
    /// Run even as root (services then run as root unless they name a user).
    #[arg(long, env = "REEVE_ALLOW_ROOT")]
    pub allow_root: bool,
    /// Drop events older than this [default: 30d]
    #[arg(long, env = "REEVE_EVENTS_MAX_AGE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub events_max_age: Option<std::time::Duration>,
    /// Keep at most this many events [default: 1000000]
    #[arg(long, env = "REEVE_EVENTS_MAX_COUNT", value_name = "N")]
    pub events_max_count: Option<u64>,
    /// Module registry base URL (static HTTP server or bucket)
    #[arg(long, env = "REEVE_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,
    /// Trusted module keys: a minisign .pub file or a directory of them; nothing installs without one [default: $XDG_CONFIG_HOME/reeve/trusted-keys or /etc/reeve/trusted-keys]
    #[arg(long, env = "REEVE_TRUSTED_KEYS", value_name = "PATH")]
    pub trusted_keys: Option<PathBuf>,
    /// HTTP(S) proxy for the registry [default: the standard environment variables]
    #[arg(long, env = "REEVE_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 [default: no port is opened]
    #[arg(long, env = "REEVE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Allow --metrics-listen on an address other than loopback.
    #[arg(long, env = "REEVE_METRICS_ALLOW_REMOTE")]
    pub metrics_allow_remote: bool,
    /// Log format of the agent's own diagnostics.
    #[arg(long, env = "REEVE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (e.g. info, debug, reeve_agent=debug).
    #[arg(long, env = "REEVE_LOG", default_value = "info")]
    pub log_level: String,
}

pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    // Resolved only by commands that talk to the agent, so offline tools work anywhere.
    let socket = |given: &Option<PathBuf>| -> Result<PathBuf> {
        match given {
            Some(s) => Ok(s.clone()),
            None => reeve_agent::config::default_socket(reeve_agent::config::is_root()),
        }
    };
    match cli.command {
        Command::Agent(AgentCmd { sub: None, run }) => run_agent(run, cli.socket).await,
        Command::Agent(AgentCmd {
            sub: Some(AgentSub::Init { dir, name, force }),
            ..
        }) => crate::node_cmds::init(&dir.resolve()?, &name, force),
        Command::Agent(AgentCmd {
            sub:
                Some(AgentSub::Join {
                    dir,
                    url,
                    token,
                    name,
                    proxy,
                    json,
                }),
            ..
        }) => crate::node_cmds::join(&dir.resolve()?, url, &token, name, proxy, json).await,
        Command::Hub(h) => crate::hub_cmds::run(h).await,
        Command::Dev(d) => crate::dev_cmd::run(d).await,
        Command::Send(a) => crate::fleet_cmds::send(a).await,
        Command::Nodes {
            conn,
            words,
            search,
            json,
        } => match words.as_slice() {
            [] => crate::fleet_cmds::nodes(&conn, search, json).await,
            [verb, name] if verb == "remove" => {
                crate::fleet_cmds::remove_node(&conn, name, json).await
            }
            _ => anyhow::bail!("usage: reeve nodes [--search S] | reeve nodes remove NAME"),
        },
        Command::Messages {
            conn,
            show,
            ids,
            older_than,
            node,
            pending,
            dead,
            json,
        } => {
            if show.first().map(String::as_str) == Some("purge") {
                if show.len() > 1 {
                    anyhow::bail!("give the messages to purge with --id ID (repeatable)");
                }
                return crate::fleet_cmds::purge(&conn, ids, older_than, node, json).await;
            }
            if !ids.is_empty() || older_than.is_some() || node.is_some() {
                anyhow::bail!("--id, --older-than and --node go with `reeve messages purge`");
            }
            let id = match show.as_slice() {
                [] => None,
                [id] | [_, id] => Some(id.clone()),
                _ => None,
            };
            let state = if pending {
                Some("accepted")
            } else if dead {
                Some("expired")
            } else {
                None
            };
            crate::fleet_cmds::messages(&conn, id, state, json).await
        }
        Command::Errors { conn, json } => crate::fleet_cmds::errors(&conn, json).await,
        Command::Agent(AgentCmd { sub: Some(sub), .. }) => {
            crate::client_cmds::agent_sub(&socket(&cli.socket)?, sub).await
        }
        Command::Module(m) => crate::module_cmds::run(|| socket(&cli.socket), m).await,
        Command::State(st) => crate::state_cmds::run(|| socket(&cli.socket), st).await,
        Command::Key(k) => crate::key_cmds::run(k),
        other => crate::client_cmds::run(&socket(&cli.socket)?, other).await,
    }
}

async fn run_agent(args: AgentRunArgs, socket: Option<PathBuf>) -> Result<ExitCode> {
    init_tracing(&args.log_format, &args.log_level);
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (default_config_file(), false),
    };
    let mut file = AgentFile::load(&path, required)?;
    // Flags and variables win over the file.
    if args.data_dir.is_some() {
        file.data_dir = args.data_dir;
    }
    if args.services_dir.is_some() {
        file.services_dir = args.services_dir;
    }
    if socket.is_some() {
        file.socket = socket;
    }
    if args.buddy_path.is_some() {
        file.buddy_path = args.buddy_path;
    }
    if args.modwork_path.is_some() {
        file.modwork_path = args.modwork_path;
    }
    if args.allow_root {
        file.allow_root = Some(true);
    }
    if args.events_max_age.is_some() {
        file.events_max_age = args.events_max_age;
    }
    if args.events_max_count.is_some() {
        file.events_max_count = args.events_max_count;
    }
    if args.registry.is_some() {
        file.registry = args.registry;
    }
    if args.trusted_keys.is_some() {
        file.trusted_keys = args.trusted_keys;
    }
    if args.proxy.is_some() {
        file.proxy = args.proxy;
    }
    if args.metrics_listen.is_some() {
        file.metrics_listen = args.metrics_listen;
    }
    if args.metrics_allow_remote {
        file.metrics_allow_remote = Some(true);
    }
    let cfg = AgentConfig::resolve(file).context("invalid agent settings")?;
    reeve_agent::run(cfg, std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

fn default_config_file() -> PathBuf {
    if reeve_agent::config::is_root() && std::env::var_os("XDG_CONFIG_HOME").is_none() {
        return PathBuf::from("/etc/reeve/agent.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("reeve").join("agent.toml")
}

/// Sets up diagnostics on stderr.
pub fn init_tracing(format: &str, level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `Targets` ("info", "warn,reeve_agent=debug") needs no regex engine, which keeps the
    // agent's code small and resident memory low.
    let filter: tracing_subscriber::filter::Targets = level.parse().unwrap_or_else(|_| {
        eprintln!("warning: invalid log filter {level:?}; using info");
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    });
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}
