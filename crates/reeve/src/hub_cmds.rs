//! `reeve hub`: run the hub, and local administration of its data directory (join tokens,
//! operators, backup and restore, the certificate's fingerprint operators pin).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reeve_agent::node::cert_pin::CertFingerprint;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `reeve hub …`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubCmd {
    #[command(subcommand)]
    pub sub: Option<HubSub>,
    #[command(flatten)]
    pub run: HubRunArgs,
}

/// Settings of `reeve hub`.
#[derive(Args, Debug, Clone)]
pub struct HubRunArgs {
    /// The hub's data directory (key, certificate, database) [default: $XDG_DATA_HOME/reeve-hub or /var/lib/reeve-hub]
    #[arg(long, env = "REEVE_HUB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TLS listener for nodes (relay), the API and the dashboard.
    #[arg(long, env = "REEVE_HUB_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener for the API and dashboard (no relay), e.g. 127.0.0.1:7080.
    #[arg(long, env = "REEVE_HUB_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// The URL nodes reach the hub at (put in join tokens) [default: https://<listen address>]
    #[arg(long, env = "REEVE_HUB_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Log filter (e.g. info, debug).
    #[arg(long, env = "REEVE_LOG", default_value = "info")]
    pub log_level: String,
    /// Worker threads serving connections [default: one per core]
    #[arg(long, env = "REEVE_HUB_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Keep node events this long (pruned hourly).
    #[arg(long, env = "REEVE_HUB_RETAIN_EVENTS", default_value = "30d", value_parser = humantime::parse_duration, value_name = "AGE")]
    pub retain_events: std::time::Duration,
    /// Keep settled messages (replied, expired, purged) this long; a message still
    /// waiting or in flight is never pruned.
    #[arg(long, env = "REEVE_HUB_RETAIN_MESSAGES", default_value = "90d", value_parser = humantime::parse_duration, value_name = "AGE")]
    pub retain_messages: std::time::Duration,
    /// Keep the central error log this long.
    #[arg(long, env = "REEVE_HUB_RETAIN_ERRORS", default_value = "90d", value_parser = humantime::parse_duration, value_name = "AGE")]
    pub retain_errors: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum HubSub {
    /// Join tokens for nodes.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Operators: who may use the API, with which role and key.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Print the SHA-256 fingerprint of the hub's TLS certificate: operators pin it
    /// (REEVE_HUB_CERT or --hub-cert), so their API token goes to this hub and nobody
    /// in between.
    #[command(
        after_help = "Example (on the hub's machine): reeve hub cert-fingerprint --data-dir /var/lib/reeve-hub
then, on the operator's: export REEVE_HUB_CERT=sha256:…"
    )]
    CertFingerprint {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up the data directory (database, key, certificate) into one tar file; works
    /// while the hub runs.
    #[command(
        after_help = "Example: reeve hub backup --data-dir /var/lib/reeve-hub --out hub-$(date +%F).tar"
    )]
    Backup {
        #[command(flatten)]
        dir: DirArg,
        /// The backup file to create (never overwritten; mode 0600: it holds the hub's key).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate the hub's key (the hub must be stopped). Nodes pinned the old key: it endorses
    /// the new one, and the hub presents that in every handshake for the overlap, so
    /// connected and offline nodes follow. After the overlap, a node still pinned to the
    /// old key must join again. Join tokens made before the rotation name the old key:
    /// make new ones.
    #[command(
        after_help = "Example: reeve hub rotate-key --data-dir /var/lib/reeve-hub --overlap 30d"
    )]
    RotateKey {
        #[command(flatten)]
        dir: DirArg,
        /// How long nodes pinned to the old key may still follow it (at most 90 days).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a data directory (the hub there must be stopped).
    #[command(
        after_help = "Example: reeve hub restore --data-dir /var/lib/reeve-hub --from hub-2026-05-01.tar"
    )]
    Restore {
        #[command(flatten)]
        dir: DirArg,
        /// The backup file (from `reeve hub backup`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace a data directory that holds a hub's data (it is kept beside, renamed).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a one-time join token (give it to `reeve agent join`).
    #[command(
        after_help = "Example: reeve hub token create --ttl 1h --url https://hub.example.com:7443"
    )]
    Create {
        #[command(flatten)]
        dir: DirArg,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The URL nodes reach the hub at.
        #[arg(long, env = "REEVE_HUB_URL", default_value = "https://127.0.0.1:7443")]
        url: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum OperatorCmd {
    /// Add (or update) an operator; prints their API token (and, on stderr, the hub
    /// certificate's fingerprint to pin: REEVE_HUB_CERT).
    #[command(
        after_help = "Example: reeve key create alice && reeve hub operator add alice --role operator --key alice.pub"
    )]
    Add {
        #[command(flatten)]
        dir: DirArg,
        /// The operator's name (what their signed requests say in `from`).
        name: String,
        /// viewer (read), operator (send), admin.
        #[arg(long, default_value = "operator")]
        role: String,
        /// Their public key file (NAME.pub from `reeve key create`): what they send is signed with it.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate an operator's signing key: the new key signs from now on, the current one
    /// still does for the overlap window, then no more. Their API token stays.
    #[command(
        after_help = "Example: reeve key create alice-2026 && reeve hub operator rotate-key alice --key alice-2026.pub --overlap 7d\n\nNodes decide on their own keys: list the new key beside the old one in each node's policy ([keys] alice = [\"NEW\", \"OLD\"]) for the overlap, then drop the old one."
    )]
    RotateKey {
        #[command(flatten)]
        dir: DirArg,
        /// The operator's name.
        name: String,
        /// Their new public key file (NAME.pub from `reeve key create`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// How long the current key keeps working.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an operator (their token stops working at once).
    Remove {
        #[command(flatten)]
        dir: DirArg,
        /// The operator's name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct DirArg {
    /// The hub's data directory [default: $XDG_DATA_HOME/reeve-hub or /var/lib/reeve-hub]
    #[arg(long, env = "REEVE_HUB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The default data directory of the hub.
pub fn default_data_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(d) = given {
        return d;
    }
    if reeve_agent::config::is_root() && std::env::var_os("XDG_DATA_HOME").is_none() {
        return PathBuf::from("/var/lib/reeve-hub");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("reeve-hub")
}

/// Runs `reeve hub …`.
pub async fn run(cmd: HubCmd) -> Result<ExitCode> {
    match cmd.sub {
        None => serve(cmd.run).await,
        Some(HubSub::Token(TokenCmd::Create {
            dir,
            ttl,
            url,
            json,
        })) => {
            let t = reeve_hub::admin::create_token(
                &default_data_dir(dir.data_dir),
                &url,
                ttl.as_millis() as u64,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": t.encode(), "url": t.url, "hub": t.hub, "expires_at_ms": t.expires_at_ms})
                );
            } else {
                println!("{}", t.encode());
                eprintln!(
                    "one-time token for {} (hub key {}), valid {}: reeve agent join --token <token> --name <node>",
                    t.url,
                    t.hub,
                    humantime::format_duration(ttl)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::Operator(OperatorCmd::Add {
            dir,
            name,
            role,
            key,
            json,
        })) => {
            let key = match key {
                Some(p) => Some(crate::key_cmds::read_public(&p)?.to_base64()),
                None => None,
            };
            let dir = default_data_dir(dir.data_dir);
            let token = reeve_hub::admin::add_operator(&dir, &name, &role, key.as_deref())?;
            let cert = CertFingerprint::of(&reeve_hub::identity::ensure_tls_cert(&dir)?);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "role": role, "token": token, "hub_cert": cert.to_string()})
                );
            } else {
                println!("{token}");
                eprintln!("API token of {name} ({role}); keep it secret. Use it as REEVE_TOKEN.");
                eprintln!(
                    "The hub's certificate, for the CLI to pin (not secret):\nexport REEVE_HUB_CERT={cert}"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::CertFingerprint { dir, json }) => {
            let dir = default_data_dir(dir.data_dir);
            let cert = cert_fingerprint(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"hub_cert": cert.to_string(), "file": dir.join(reeve_hub::identity::TLS_CERT)})
                );
            } else {
                println!("{cert}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::Backup { dir, out, json }) => {
            let s = reeve_hub::backup::backup(&default_data_dir(dir.data_dir), &out)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                eprintln!(
                    "backed up {} ({} nodes, {} messages, hub key {}) to {}",
                    s.data_dir.display(),
                    s.nodes,
                    s.messages,
                    s.hub_fingerprint,
                    s.file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::RotateKey { dir, overlap, json }) => {
            let overlap_ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
            let r = reeve_hub::rekey::rotate_key(&default_data_dir(dir.data_dir), overlap_ms)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!(
                    "hub key rotated from {} to {}; nodes pinned to the old key follow until {} ({} waiting message(s) sealed again); start the hub again",
                    r.previous,
                    r.fingerprint,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.until_ms)
                    ),
                    r.resealed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::Restore {
            dir,
            from,
            force,
            json,
        }) => {
            let s = reeve_hub::backup::restore(&default_data_dir(dir.data_dir), &from, force)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                eprintln!(
                    "restored {} ({} nodes, {} messages, hub key {}) into {}",
                    s.file.display(),
                    s.nodes,
                    s.messages,
                    s.hub_fingerprint,
                    s.data_dir.display()
                );
                if let Some(old) = &s.replaced {
                    eprintln!("the previous data directory is kept as {}", old.display());
                }
                if let Some(n) = s.resealed {
                    eprintln!(
                        "new streams towards the nodes: {n} waiting message(s) sealed again onto them; what nodes sent after the backup was taken is lost (see `reeve errors`)"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::Operator(OperatorCmd::RotateKey {
            dir,
            name,
            key,
            overlap,
            json,
        })) => {
            let key = crate::key_cmds::read_public(&key)?.to_base64();
            let until = reeve_hub::admin::rotate_operator_key(
                &default_data_dir(dir.data_dir),
                &name,
                &key,
                overlap,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "key": key, "old_key_until_ms": until})
                );
            } else {
                eprintln!(
                    "{name} now signs with {}; the previous key works for {} more",
                    reeve_delivery::keys::PublicKey::from_base64(&key)?.fingerprint(),
                    humantime::format_duration(overlap)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(HubSub::Operator(OperatorCmd::Remove { dir, name })) => {
            reeve_hub::admin::remove_operator(&default_data_dir(dir.data_dir), &name)?;
            eprintln!("removed operator {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The fingerprint of the TLS certificate of the hub in `dir` (which must have one).
pub fn cert_fingerprint(dir: &Path) -> Result<CertFingerprint> {
    Ok(CertFingerprint::of(&reeve_hub::identity::read_tls_cert(
        dir,
    )?))
}

async fn serve(args: HubRunArgs) -> Result<ExitCode> {
    crate::cli::init_tracing("text", &args.log_level);
    let data_dir = default_data_dir(args.data_dir);
    let config = reeve_hub::Config {
        data_dir: data_dir.clone(),
        listen: args.listen,
        http: args.http,
        url: args.url,
        registry_dir: None,
        retention: reeve_hub::retention::Retention {
            events: args.retain_events,
            messages: args.retain_messages,
            errors: args.retain_errors,
        },
    };
    let running = reeve_hub::start(&config)
        .await
        .context("cannot start the hub")?;
    eprintln!(
        "reeve hub {} listening on https://{} (key {}, certificate {}){}",
        env!("CARGO_PKG_VERSION"),
        running.tls_addr,
        running.hub.public_key().fingerprint(),
        cert_fingerprint(&data_dir)?,
        running
            .http_addr
            .map(|a| format!(", http://{a}"))
            .unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("hub stopping");
    drop(running);
    Ok(ExitCode::SUCCESS)
}
