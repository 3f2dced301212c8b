//! The arguments of `reeve module pack|keygen|sign|verify` (the offline package tools):
//! one definition for the `reeve` CLI, which shows them in its help and hands the parsed
//! command to `reeve-modwork tool …`, and for `reeve-modwork`, which runs it.
//!
//! This file is compiled into both crates (`#[path]`): it needs only clap.

use clap::Subcommand;
use std::ffi::OsString;
use std::path::PathBuf;

/// The default base name of the key files `keygen` writes.
pub const DEFAULT_KEY_NAME: &str = "reeve-module";

const PACK_HELP: &str = "\
Packs the module in --dir (its module.toml, or module.json, is checked first) into
<out>/<name>-<version>[-<os>-<arch>].tar.gz and prints the package's path.

The package is reproducible: the same directory gives the same bytes on any machine
(entries sorted, times, owners and modes normalised), so a package can be rebuilt and
compared, and a signature stays valid for a rebuilt package.";

const PACK_AFTER: &str = "\
Examples:
  reeve module pack --dir ./my-server --out ./dist
  reeve module pack --dir ./my-server --out ./dist --json

Pack into a directory outside the module: the module directory is packed whole, so other
files in it (an older package, a signature) would end up inside the package.";

const KEYGEN_HELP: &str = "\
Makes an Ed25519 signing key pair in minisign's format: NAME.pub (the public key: give it to
the agents and to `reeve module verify`) and NAME.key (the secret key). Prints the key id.

The secret key is NOT ENCRYPTED (as `minisign -G -W`): anyone who can read NAME.key can sign
packages that your agents will install. It is written with mode 0600 in a directory created
with mode 0700; keep it on the machine that signs releases (better: offline, on an encrypted
disk or hardware token), back it up, and never commit it. For a password-protected key, make
it with `minisign -G` and sign with `reeve module sign --password-file`.

Existing key files are never replaced without --force: a lost secret key cannot be recovered,
and the agents trusting it would have to be given a new public key.";

const KEYGEN_AFTER: &str = "\
Examples:
  reeve module keygen --out-dir ~/.reeve-keys
  reeve module keygen --out-dir ~/.reeve-keys --name release-2025
  # then, on each node, trust ~/.reeve-keys/release-2025.pub";

const SIGN_HELP: &str = "\
Signs a package made by `reeve module pack`. Writes FILE.minisig (or --out) in minisign's
format; its trusted comment names the module, version and platform read from the manifest
inside the package:

  reeve-module name=NAME version=VERSION platform=PLATFORM

The agent checks that comment against the package's manifest, so a signature only ever
vouches for the one package it was made for. The standard tool verifies it too:
`minisign -Vm FILE -p KEY.pub`.";

const SIGN_AFTER: &str = "\
Examples:
  reeve module sign dist/my-server-1.0.0.tar.gz --key ~/.reeve-keys/reeve-module.key
  reeve module sign dist/my-server-1.0.0.tar.gz --key enc.key --password-file /run/secrets/pw

Signing with the minisign tool instead (same result for the agent):
  minisign -S -s KEY -m dist/my-server-1.0.0.tar.gz \\
      -t 'reeve-module name=my-server version=1.0.0 platform=any'";

const VERIFY_HELP: &str = "\
Checks a package as the agent will before installing it:
  1. the signature (FILE.minisig, or --sig) was made by one of the given public keys and
     matches the file;
  2. its trusted comment names the module, version and platform that the manifest inside
     the package says (a signed 1.0 presented as 2.0 fails);
  3. the file has the package's own name, <name>-<version>[-<os>-<arch>].tar.gz
     (registries find packages by file name; --any-file-name skips this check).

Prints `ok: NAME VERSION PLATFORM (key id KEYID)` and exits 0; otherwise says what is wrong
and exits non-zero. At least one public key is required: no key, no trust.";

const VERIFY_AFTER: &str = "\
Examples:
  reeve module verify dist/my-server-1.0.0.tar.gz --pubkey ~/.reeve-keys/reeve-module.pub
  reeve module verify my-server-1.0.0.tar.gz --sig sigs/my-server-1.0.0.tar.gz.minisig \\
      --pubkey-dir /etc/reeve/trusted-keys --json";

/// Offline module package tools: pack, keygen, sign, verify.
#[derive(Subcommand, Debug)]
pub enum ModuleTool {
    /// Pack a module directory into a reproducible package.
    #[command(long_about = PACK_HELP, after_help = PACK_AFTER)]
    Pack {
        /// The module directory (the one holding module.toml or module.json).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The directory to write the package into (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Print JSON: path, name, version, platform, sha256, size.
        #[arg(long)]
        json: bool,
    },
    /// Make a signing key pair (minisign format; the secret key is unencrypted).
    #[command(long_about = KEYGEN_HELP, after_help = KEYGEN_AFTER)]
    Keygen {
        /// The directory to write NAME.pub and NAME.key into (created with mode 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// The key files' base name.
        #[arg(long, default_value = DEFAULT_KEY_NAME)]
        name: String,
        /// Replace existing key files of that name (the old secret key is lost).
        #[arg(long)]
        force: bool,
    },
    /// Sign a package: writes FILE.minisig naming its module, version and platform.
    #[command(long_about = SIGN_HELP, after_help = SIGN_AFTER)]
    Sign {
        /// The package to sign (a .tar.gz made by `reeve module pack`).
        file: PathBuf,
        /// The secret key file (NAME.key from `reeve module keygen`, or from `minisign -G`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Where to write the signature [default: FILE.minisig].
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
        /// A file holding the password of an encrypted secret key (first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Verify a package's signature and that it names what the package holds.
    #[command(long_about = VERIFY_HELP, after_help = VERIFY_AFTER)]
    Verify {
        /// The package to verify.
        file: PathBuf,
        /// The signature file [default: FILE.minisig].
        #[arg(long, value_name = "SIG")]
        sig: Option<PathBuf>,
        /// A trusted public key: a minisign .pub file, or its base64 line (repeatable).
        #[arg(long, value_name = "KEY", required_unless_present = "pubkey_dir")]
        pubkey: Vec<String>,
        /// A directory of trusted public keys: every *.pub file in it (repeatable).
        #[arg(long, value_name = "DIR")]
        pubkey_dir: Vec<PathBuf>,
        /// Accept the package under any file name (e.g. saved by a browser as x.tar.gz).
        #[arg(long)]
        any_file_name: bool,
        /// Print JSON: ok, path, signature, name, version, platform, key_id, trusted_comment.
        #[arg(long)]
        json: bool,
    },
}

impl ModuleTool {
    /// The arguments that give this command back to `reeve-modwork tool` (positional
    /// arguments last, after `--`).
    #[allow(dead_code)] // used by the `reeve` CLI only
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match self {
            ModuleTool::Pack { dir, out, json } => {
                a.push("pack".into());
                a.extend(["--dir".into(), dir.into(), "--out".into(), out.into()]);
                if *json {
                    a.push("--json".into());
                }
            }
            ModuleTool::Keygen {
                out_dir,
                name,
                force,
            } => {
                a.push("keygen".into());
                a.extend([
                    "--out-dir".into(),
                    out_dir.into(),
                    "--name".into(),
                    name.into(),
                ]);
                if *force {
                    a.push("--force".into());
                }
            }
            ModuleTool::Sign {
                file,
                key,
                out,
                password_file,
            } => {
                a.push("sign".into());
                a.extend(["--key".into(), key.into()]);
                if let Some(o) = out {
                    a.extend(["--out".into(), o.into()]);
                }
                if let Some(p) = password_file {
                    a.extend(["--password-file".into(), p.into()]);
                }
                a.extend(["--".into(), file.into()]);
            }
            ModuleTool::Verify {
                file,
                sig,
                pubkey,
                pubkey_dir,
                any_file_name,
                json,
            } => {
                a.push("verify".into());
                if let Some(s) = sig {
                    a.extend(["--sig".into(), s.into()]);
                }
                for k in pubkey {
                    a.extend(["--pubkey".into(), k.into()]);
                }
                for d in pubkey_dir {
                    a.extend(["--pubkey-dir".into(), d.into()]);
                }
                if *any_file_name {
                    a.push("--any-file-name".into());
                }
                if *json {
                    a.push("--json".into());
                }
                a.extend(["--".into(), file.into()]);
            }
        }
        a
    }
}
