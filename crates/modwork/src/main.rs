//! `reeve-modwork`: the module worker. The agent runs it as a child process for the package
//! work, so that the registry client (HTTP, TLS), the unpacking of untrusted archives, JSON
//! Schema validation and template rendering happen outside the agent's address space, and
//! their code (half the size of reeve) is not part of the agent's resident memory.
//!
//! Commands for the agent print JSON lines on standard output (see
//! `reeve_modules::worker`): `fetch`, `install`, `manifest`, `configure`, and `http-get` for
//! the node method `http.get`; exit status 0 on
//! `{"done": …}`, 1 otherwise. `tool` runs the offline package tools of
//! `reeve module pack|keygen|sign|verify` for the `reeve` CLI.
//!
//! The worker keeps no state and runs hooks of no module: hooks, records, the supervisor
//! and the apply journal stay with the agent.

mod http_get;
mod tool_args;
mod tools;

use clap::{Parser, Subcommand};
use reeve_modules::identity::{ModuleRef, PackageIdentity};
use reeve_modules::manifest::Manifest;
use reeve_modules::registry::{Progress, ProxySetting, Registry, RegistryConfig};
use reeve_modules::sign::PublicKey;
use reeve_modules::worker::{CONFIG_FILE, Configured, Fetched, ModuleSummary};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// reeve's module worker (run by the agent and the `reeve` CLI, not by people).
#[derive(Parser, Debug)]
#[command(name = "reeve-modwork", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Download and verify a package into the cache (progress lines, then the package).
    Fetch {
        /// The registry's base URL.
        #[arg(long)]
        registry: String,
        /// The proxy (default: the standard environment variables).
        #[arg(long)]
        proxy: Option<String>,
        /// The download cache.
        #[arg(long)]
        cache_dir: PathBuf,
        /// Trusted keys: a minisign `.pub` file or a directory of them.
        #[arg(long)]
        trusted_keys: PathBuf,
        /// NAME@VERSION.
        module: String,
    },
    /// Unpack a fetched package into a fresh directory, checked against its identity.
    Install {
        /// The package file.
        #[arg(long)]
        archive: PathBuf,
        /// The module directory to create.
        #[arg(long)]
        target: PathBuf,
        /// The identity the signature names (its trusted comment).
        #[arg(long)]
        identity: String,
    },
    /// Read and check the manifest of an installed module.
    Manifest {
        /// The module directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Validate the configuration on standard input (JSON) against the module's schema,
    /// render its templates and write its config file.
    Configure {
        /// The module directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The offline package tools (`reeve module pack|keygen|sign|verify`).
    #[command(subcommand)]
    Tool(tool_args::ModuleTool),
    /// One HTTP(S) GET for the agent's `http.get` method (proxy from the environment).
    HttpGet {
        /// The URL (http or https).
        #[arg(long)]
        url: String,
        /// Keep at most this many bytes of the body.
        #[arg(long, default_value_t = 1 << 20)]
        max_bytes: usize,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Tool(t) => {
            return match tools::run(t) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        Cmd::Fetch {
            registry,
            proxy,
            cache_dir,
            trusted_keys,
            module,
        } => fetch(registry, proxy, cache_dir, &trusted_keys, &module),
        Cmd::Install {
            archive,
            target,
            identity,
        } => install(&archive, &target, &identity),
        Cmd::Manifest { dir } => load(&dir).map(|m| json!({"done": ModuleSummary::of(&m, &dir)})),
        Cmd::Configure { dir } => Ok(configure(&dir)),
        Cmd::HttpGet {
            url,
            max_bytes,
            timeout_ms,
        } => http_get::run(
            &url,
            max_bytes,
            std::time::Duration::from_millis(timeout_ms),
        ),
    };
    let (line, code) = match out {
        Ok(v) => {
            let ok = v.get("done").is_some();
            (
                v,
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                },
            )
        }
        Err(e) => (json!({ "error": e }), ExitCode::from(1)),
    };
    emit(&line);
    code
}

/// Prints one JSON line and flushes it (progress lines are read as they come).
fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn load(dir: &Path) -> Result<Manifest, String> {
    Manifest::load(dir).map_err(|e| format!("{e}"))
}

fn fetch(
    url: String,
    proxy: Option<String>,
    cache_dir: PathBuf,
    trusted_keys: &Path,
    module: &str,
) -> Result<Value, String> {
    let module: ModuleRef = module.parse()?;
    let keys = load_trusted_keys(trusted_keys)?;
    let mut rc = RegistryConfig::new(url, cache_dir, keys);
    if let Some(p) = proxy {
        rc.proxy = ProxySetting::Url(p);
    }
    let registry = Registry::new(rc).map_err(|e| format!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the module worker's runtime: {e}"))?;
    let mut report = |p: &Progress| {
        emit(&json!({"progress": {"file": p.file, "downloaded": p.downloaded, "total": p.total}}));
    };
    let fetched = rt
        .block_on(registry.fetch(&module, &mut report))
        .map_err(|e| format!("{e}"))?;
    let done = Fetched {
        path: fetched.path,
        identity: fetched.identity.trusted_comment(),
        sha256: fetched.sha256,
        size: fetched.size,
        from_cache: fetched.from_cache,
    };
    Ok(json!({ "done": done }))
}

fn install(archive: &Path, target: &Path, identity: &str) -> Result<Value, String> {
    let identity = PackageIdentity::from_trusted_comment(identity)?;
    let manifest = reeve_modules::unpack::unpack(
        archive,
        target,
        &reeve_modules::unpack::Limits::default(),
        &identity,
    )
    .map_err(|e| format!("{e}"))?;
    Ok(json!({"done": ModuleSummary::of(&manifest, target)}))
}

/// `configure`: nothing is written unless the configuration is valid.
fn configure(dir: &Path) -> Value {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        return json!({"error": format!("cannot read the configuration: {e}")});
    }
    let given: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("the configuration is not JSON: {e}")}),
    };
    let manifest = match load(dir) {
        Ok(m) => m,
        Err(e) => return json!({ "manifest_error": e }),
    };
    let full = match manifest.validate_config(&given) {
        Ok(full) => full,
        Err(errs) => return json!({ "invalid": errs }),
    };
    if let Err(e) = reeve_modules::template::render_templates(dir, &manifest, &full) {
        return json!({"error": format!("{e}")});
    }
    let path = dir.join(CONFIG_FILE);
    let written = serde_json::to_vec_pretty(&full)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            std::fs::write(&path, t).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
    match written {
        Ok(()) => {
            json!({"done": Configured { summary: ModuleSummary::of(&manifest, dir), config: full }})
        }
        Err(e) => json!({ "error": e }),
    }
}

/// Reads the trusted keys: one minisign `.pub` file, or every `*.pub` in a directory.
/// A missing file or directory means no key: nothing will install (fail closed).
fn load_trusted_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        v.sort();
        v
    } else if path.is_file() {
        vec![path.to_owned()]
    } else {
        Vec::new()
    };
    files
        .iter()
        .map(|f| PublicKey::from_file(f).map_err(|e| format!("trusted key {}: {e}", f.display())))
        .collect()
}
