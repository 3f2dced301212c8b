//! The agent's own settings: where its data, services and control socket live, and how it
//! runs. Files say what to run (the services directory); these settings say how this
//! process runs. Each one can come from the TOML file, a `REEVE_…` variable or a flag; the
//! flag wins, then the variable, then the file, then the default.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent's settings file as written (every field optional).
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Data directory (SQLite store, buddies' run directories, logs).
    pub data_dir: Option<PathBuf>,
    /// Directory of `*.toml` / `*.json` service files.
    pub services_dir: Option<PathBuf>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// The `reeve-buddy` binary.
    pub buddy_path: Option<PathBuf>,
    /// The `reeve-modwork` binary (the module worker).
    pub modwork_path: Option<PathBuf>,
    /// Run even as root.
    pub allow_root: Option<bool>,
    /// Drop events older than this.
    #[serde(default, with = "humantime_serde")]
    pub events_max_age: Option<Duration>,
    /// Keep at most this many events.
    pub events_max_count: Option<u64>,
    /// Module registry base URL (`https://…/registry`).
    pub registry: Option<String>,
    /// Trusted public keys for modules: a minisign `.pub` file or a directory of them.
    pub trusted_keys: Option<PathBuf>,
    /// HTTP(S) proxy for the registry (default: the standard environment variables).
    pub proxy: Option<String>,
    /// Serve Prometheus metrics on this address (default: no port at all).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Allow `metrics_listen` on an address other than loopback.
    pub metrics_allow_remote: Option<bool>,
}

impl AgentFile {
    /// Reads a settings file; a missing file is an error only if `required`.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid agent settings in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Validated agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Services directory.
    pub services_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// The `reeve-buddy` binary.
    pub buddy_path: PathBuf,
    /// The `reeve-modwork` binary: the module worker that does the package work
    /// (download, verify, unpack, schemas, templates) in its own process.
    pub modwork_path: PathBuf,
    /// Run even as root.
    pub allow_root: bool,
    /// Drop events older than this.
    pub events_max_age: Duration,
    /// Keep at most this many events.
    pub events_max_count: u64,
    /// Module registry base URL, if modules are installed from one.
    pub registry: Option<String>,
    /// Trusted module keys: a `.pub` file or a directory of them. Nothing installs
    /// without one.
    pub trusted_keys: PathBuf,
    /// Proxy for the registry (`None`: the standard environment variables).
    pub proxy: Option<String>,
    /// Where to serve Prometheus metrics (`None`: the agent opens no port).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// Fills the gaps of `file` (already overlaid with flags and variables) with defaults.
    pub fn resolve(file: AgentFile) -> Result<Self> {
        let root = is_root();
        let data_dir = match file.data_dir {
            Some(d) => d,
            None => default_data_dir(root)?,
        };
        let services_dir = match file.services_dir {
            Some(d) => d,
            None => default_config_dir(root)?.join("services"),
        };
        let socket = match file.socket {
            Some(s) => s,
            None => default_socket(root)?,
        };
        let trusted_keys = match file.trusted_keys {
            Some(p) => p,
            None => default_config_dir(root)?.join("trusted-keys"),
        };
        let buddy_path = match file.buddy_path {
            Some(p) => p,
            None => default_buddy_path()?,
        };
        let modwork_path = match file.modwork_path {
            Some(p) => p,
            None => sibling_binary("reeve-modwork")?,
        };
        let cfg = Self {
            data_dir: absolute(data_dir)?,
            services_dir: absolute(services_dir)?,
            socket: absolute(socket)?,
            buddy_path,
            modwork_path,
            allow_root: file.allow_root.unwrap_or(false),
            events_max_age: file
                .events_max_age
                .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
            events_max_count: file.events_max_count.unwrap_or(1_000_000),
            registry: file.registry,
            trusted_keys: absolute(trusted_keys)?,
            proxy: file.proxy,
            metrics_listen: file.metrics_listen,
        };
        if let Some(a) = cfg.metrics_listen
            && !a.ip().is_loopback()
            && !file.metrics_allow_remote.unwrap_or(false)
        {
            bail!(
                "metrics address {a} is not a loopback address: the agent serves metrics to this \
                 machine only (127.0.0.1:PORT), unless --metrics-allow-remote says otherwise"
            );
        }
        if cfg.socket.as_os_str().len() > 100 {
            bail!(
                "control socket path {} is too long for a Unix socket (at most 100 bytes)",
                cfg.socket.display()
            );
        }
        Ok(cfg)
    }

    /// Where the agent's SQLite store lives.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("agent.db")
    }

    /// The run directory of one service's buddy.
    pub fn run_dir(&self, service: &str) -> PathBuf {
        self.data_dir.join("run").join(service.replace('/', "~"))
    }

    /// Where installed modules live (`<name>@<version>` each).
    pub fn modules_dir(&self) -> PathBuf {
        self.data_dir.join("modules")
    }

    /// Where downloaded packages are kept.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    /// The log directory of one service.
    pub fn log_dir(&self, service: &str) -> PathBuf {
        self.data_dir.join("logs").join(service.replace('/', "~"))
    }
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set; give --data-dir and --services-dir")
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => Ok(PathBuf::from(v)),
        None => Ok(home()?.join(fallback)),
    }
}

fn default_data_dir(root: bool) -> Result<PathBuf> {
    if root && std::env::var_os("XDG_DATA_HOME").is_none() {
        return Ok(PathBuf::from("/var/lib/reeve"));
    }
    Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("reeve"))
}

fn default_config_dir(root: bool) -> Result<PathBuf> {
    if root && std::env::var_os("XDG_CONFIG_HOME").is_none() {
        return Ok(PathBuf::from("/etc/reeve"));
    }
    Ok(xdg("XDG_CONFIG_HOME", ".config")?.join("reeve"))
}

/// The default control socket: `$XDG_RUNTIME_DIR/reeve/agent.sock`, else
/// `/run/reeve/agent.sock` (root) or `/run/user/UID/reeve/agent.sock`. Never in /tmp.
pub fn default_socket(root: bool) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("reeve").join("agent.sock"));
    }
    if root {
        return Ok(PathBuf::from("/run/reeve/agent.sock"));
    }
    let uid = rustix::process::geteuid().as_raw();
    let dir = PathBuf::from(format!("/run/user/{uid}"));
    if dir.is_dir() {
        return Ok(dir.join("reeve").join("agent.sock"));
    }
    bail!(
        "XDG_RUNTIME_DIR is not set and {} does not exist; give --socket",
        dir.display()
    )
}

fn default_buddy_path() -> Result<PathBuf> {
    sibling_binary("reeve-buddy")
}

/// One of reeve's own binaries (`reeve-buddy`, `reeve-modwork`): beside the running
/// executable, else its name (looked up in `PATH` when run).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    // `cargo test` runs binaries from target/<profile>/deps; the others sit one level up.
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Ok(PathBuf::from(name))
}
