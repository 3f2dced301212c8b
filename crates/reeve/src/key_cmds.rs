//! `reeve key create|show`: Ed25519 identities for operators (and, later, nodes and hubs)
//! as used by the message layer (`reeve-delivery`): the secret seed in `NAME.key` (mode
//! 0600), the public key in `NAME.pub`. Put the public key in a node's policy file to let
//! that operator call methods there.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reeve_delivery::keys::{KeyPair, PublicKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `reeve key …`.
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key pair: NAME.key (secret, mode 0600, unencrypted — keep it private) and
    /// NAME.pub (public, for node policies and the hub).
    #[command(after_help = "Example: reeve key create alice --out-dir ~/.config/reeve/keys")]
    Create {
        /// The key's name (an operator's name).
        name: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the public key and fingerprint of a key file (.key or .pub).
    Show {
        /// The file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot write {}{}",
            path.display(),
            if force {
                ""
            } else {
                " (it may exist already: --force replaces it)"
            }
        )
    })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret key file (NAME.key).
pub fn read_secret(file: &Path) -> Result<KeyPair> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    KeyPair::from_secret_base64(line.trim())
        .with_context(|| format!("{} is not a reeve secret key", file.display()))
}

/// Reads a public key file (NAME.pub), or the public half of a NAME.key file.
pub fn read_public(file: &Path) -> Result<PublicKey> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if file.extension().is_some_and(|e| e == "key") {
        return Ok(KeyPair::from_secret_base64(line)
            .with_context(|| format!("{} is not a reeve secret key", file.display()))?
            .public());
    }
    PublicKey::from_base64(line)
        .with_context(|| format!("{} is not a reeve public key", file.display()))
}

/// Runs a `reeve key` subcommand.
pub fn run(cmd: KeyCmd) -> Result<ExitCode> {
    match cmd {
        KeyCmd::Create {
            name,
            out_dir,
            force,
            json,
        } => {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                bail!("invalid key name {name:?}: use letters, digits, '-', '_' and '.'");
            }
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let (secret_path, public_path) = (
                out_dir.join(format!("{name}.key")),
                out_dir.join(format!("{name}.pub")),
            );
            if !force {
                for p in [&secret_path, &public_path] {
                    if p.exists() {
                        bail!("{} exists already: --force replaces it", p.display());
                    }
                }
            }
            let k = KeyPair::generate()?;
            write_new(
                &secret_path,
                &format!(
                    "# reeve secret key {name}: keep it private\n{}\n",
                    k.secret_base64()
                ),
                0o600,
                force,
            )?;
            write_new(
                &public_path,
                &format!("# reeve public key {name}\n{}\n", k.public().to_base64()),
                0o644,
                force,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "public": k.public().to_base64(), "fingerprint": k.public().fingerprint(),
                        "secret_file": secret_path, "public_file": public_path})
                );
            } else {
                println!("{}", k.public().fingerprint());
                eprintln!(
                    "wrote {} (secret, 0600) and {}",
                    secret_path.display(),
                    public_path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Show { file, json } => {
            let p = read_public(&file)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"public": p.to_base64(), "fingerprint": p.fingerprint()})
                );
            } else {
                println!("{}  {}", p.fingerprint(), p.to_base64());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
