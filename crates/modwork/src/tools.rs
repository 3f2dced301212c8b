//! `reeve module pack|keygen|sign|verify`: offline tools for module packages.
//!
//! None of these talk to the agent. They wrap `reeve_modules` ([`pack`], [`sign`]) with
//! the checks and messages a person at a terminal needs:
//!
//! - `pack` turns a module directory into a reproducible `<name>-<version>[-<os>-<arch>].tar.gz`
//!   (same directory, same bytes) and reports its SHA-256 and size;
//! - `keygen` writes a minisign key pair (`NAME.pub`, and `NAME.key`: **unencrypted**, mode
//!   0600), refusing to overwrite either file without `--force`;
//! - `sign` writes `FILE.minisig`, whose trusted comment names the module, version and
//!   platform read from the package's own manifest;
//! - `verify` checks the signature against the given public keys **and** that the trusted
//!   comment names what the manifest inside the archive says (so a signed 1.0 presented as
//!   2.0 fails), and that the file carries the package's own file name.
//!
//! Signatures and keys are minisign's formats: `minisign -Vm FILE -p KEY.pub` verifies what
//! `sign` writes, and `verify` accepts what `minisign -S` writes with the right trusted
//! comment. Every error names the file concerned and ends with a `hint:` line saying what
//! to do.

use crate::tool_args::ModuleTool;
use anyhow::{Context, Result, anyhow, bail};
use reeve_modules::identity::PackageIdentity;
use reeve_modules::pack::{self, PackError};
use reeve_modules::sign::{self, PublicKey, SecretKey, SignError};
use sha2::Digest;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs an offline tool. Errors name the file concerned and end with a `hint:` line.
pub fn run(tool: ModuleTool) -> Result<ExitCode> {
    match tool {
        ModuleTool::Pack { dir, out, json } => pack_cmd(&dir, &out, json),
        ModuleTool::Keygen {
            out_dir,
            name,
            force,
        } => keygen_cmd(&out_dir, &name, force),
        ModuleTool::Sign {
            file,
            key,
            out,
            password_file,
        } => sign_cmd(&file, &key, out.as_deref(), password_file.as_deref()),
        ModuleTool::Verify {
            file,
            sig,
            pubkey,
            pubkey_dir,
            any_file_name,
            json,
        } => verify_cmd(
            &file,
            sig.as_deref(),
            &pubkey,
            &pubkey_dir,
            any_file_name,
            json,
        ),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// An error whose message is `what: cause` followed by a `hint:` line.
fn hinted(
    what: impl std::fmt::Display,
    cause: impl std::fmt::Display,
    hint: &str,
) -> anyhow::Error {
    anyhow!("{what}: {cause}\nhint: {hint}")
}

/// `path` with `.minisig` appended to its file name.
fn default_sig_path(file: &Path) -> PathBuf {
    let mut s = OsString::from(file.as_os_str());
    s.push(".minisig");
    PathBuf::from(s)
}

// ---------------------------------------------------------------------------------------
// pack

fn pack_cmd(dir: &Path, out: &Path, json: bool) -> Result<()> {
    if !dir.is_dir() {
        return Err(hinted(
            dir.display(),
            "not a directory",
            "--dir takes the module's directory, the one holding module.toml",
        ));
    }
    if out.exists() && !out.is_dir() {
        return Err(hinted(
            out.display(),
            "exists and is not a directory",
            "--out takes the directory to write the package into; the file name is made from \
             the manifest (<name>-<version>[-<os>-<arch>].tar.gz)",
        ));
    }
    fs::create_dir_all(out).with_context(|| {
        format!(
            "{}: cannot create the output directory (check the path and its permissions)",
            out.display()
        )
    })?;
    let path = pack::pack(dir, out).map_err(|e| {
        let hint = match &e {
            PackError::Manifest(_) => "fix the manifest and pack again",
            PackError::Io { .. } => {
                "check that every file of the module is readable and the output directory writable"
            }
            PackError::SpecialFile { .. } => {
                "remove it from the module directory (only files, directories and links are packed)"
            }
            PackError::LinkOutside { .. } => {
                "make the link relative and pointing inside the module, or copy the file in"
            }
            PackError::NoIdentity { .. } => "check the module's manifest",
            PackError::SecretKey { .. } => {
                "keep signing keys outside the module directory; anyone with the package would have it"
            }
        };
        hinted(format_args!("cannot pack {}", dir.display()), &e, hint)
    })?;
    warn_stray_packages(dir, &path);
    let (sha256, size) = sha256_file(&path)?;
    let identity = pack::read_package_identity(&path)
        .with_context(|| format!("{}: cannot read back the package just made", path.display()))?;
    if json {
        let v = serde_json::json!({
            "path": path.to_string_lossy(),
            "name": identity.name,
            "version": identity.version.to_string(),
            "platform": identity.platform.to_string(),
            "sha256": sha256,
            "size": size,
        });
        println!("{v}");
    } else {
        println!("{}", path.display());
    }
    Ok(())
}

/// Warns about packages and signatures at the module's root: they were packed too.
fn warn_stray_packages(dir: &Path, made: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let made_name = made.file_name();
    let mut stray: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| Some(n.as_os_str()) != made_name)
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.ends_with(".tar.gz") || n.ends_with(".minisig") || n.ends_with(".key"))
        .collect();
    stray.sort();
    for name in stray {
        eprintln!(
            "warning: {} was packed into the package too; pack with --out outside the module \
             directory, or move it away",
            dir.join(name).display()
        );
    }
}

/// The SHA-256 (lower-case hex) and size of a file, streamed.
fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file =
        fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = hasher.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), size))
}

fn keygen_cmd(out_dir: &Path, name: &str, force: bool) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        bail!(
            "{name:?}: not a usable key name\nhint: --name takes a plain file base name such \
             as \"release-2025\" (NAME.pub and NAME.key are written in --out-dir)"
        );
    }
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(hinted(
            out_dir.display(),
            "exists and is not a directory",
            "--out-dir takes the directory to write the key files into",
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| {
            format!(
                "{}: cannot create the key directory (check the path and its permissions)",
                out_dir.display()
            )
        })?;
    let pub_path = out_dir.join(format!("{name}.pub"));
    let key_path = out_dir.join(format!("{name}.key"));
    if !force {
        for p in [&key_path, &pub_path] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(hinted(
                    p.display(),
                    "already exists: refusing to overwrite a key (a lost secret key cannot be \
                     recovered, and agents trusting it would need a new public key)",
                    "choose another --name or --out-dir, or pass --force to replace the key pair",
                ));
            }
        }
    }

    let keys = sign::generate_keypair().context("cannot generate a key pair")?;
    let secret_text = keys
        .secret
        .to_file_text()
        .context("cannot encode the new secret key")?;
    let public_text = keys.public.to_file_text();
    write_file(&key_path, secret_text.as_bytes(), 0o600, force)?;
    if let Err(e) = write_file(&pub_path, public_text.as_bytes(), 0o644, force) {
        if !force {
            // Leave no half pair behind: the secret key without its public key is useless.
            let _ = fs::remove_file(&key_path);
        }
        return Err(e);
    }
    let key_id = keys.public.key_id();
    println!("{key_id}");
    eprintln!(
        "public key: {} (give it to the agents, and to `reeve module verify --pubkey`)",
        pub_path.display()
    );
    eprintln!(
        "secret key: {} (UNENCRYPTED, mode 0600: keep it private and backed up; anyone who \
         reads it can sign packages your agents will install)",
        key_path.display()
    );
    Ok(())
}

/// Writes `bytes` to `path` with `mode`, through a temporary file beside it. Without
/// `replace`, an existing `path` is left alone and is an error (no-clobber by hard link).
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            fs::rename(&tmp, path)
        } else {
            fs::hard_link(&tmp, path)
        }
    };
    let result = write();
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            hinted(
                path.display(),
                "already exists: refusing to overwrite it",
                "move it away, or pass --force",
            )
        } else {
            hinted(
                path.display(),
                format_args!("cannot write: {e}"),
                "check that the directory exists and is writable, and the disk is not full",
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// sign

fn sign_cmd(
    file: &Path,
    key_path: &Path,
    out: Option<&Path>,
    password_file: Option<&Path>,
) -> Result<()> {
    let password = match password_file {
        Some(p) => {
            let text = fs::read_to_string(p).map_err(|e| {
                hinted(
                    p.display(),
                    format_args!("cannot read the password file: {e}"),
                    "--password-file takes a file whose first line is the secret key's password",
                )
            })?;
            Some(text.lines().next().unwrap_or_default().to_owned())
        }
        None => None,
    };
    let key =
        SecretKey::from_file(key_path, password).map_err(|e| secret_key_error(key_path, e))?;
    warn_readable_key(key_path);

    let identity = read_identity(file)?;
    warn_file_name(file, &identity);
    let text = sign::sign_package(file, &key).map_err(|e| match e {
        SignError::Io { path, source } => hinted(
            path.display(),
            format_args!("cannot read: {source}"),
            "check the package exists and is readable",
        ),
        other => hinted(
            format_args!("cannot sign {}", file.display()),
            other,
            "check the package with `reeve module verify` after packing it again",
        ),
    })?;
    // Check what was written before anyone relies on it.
    let public = key
        .public_key()
        .map_err(|e| secret_key_error(key_path, e))?;
    sign::verify_file(file, &text, &[public]).map_err(|e| {
        hinted(
            format_args!("{}: the new signature does not verify", file.display()),
            e,
            "the file changed while it was signed; sign it again",
        )
    })?;

    let sig_path = out.map_or_else(|| default_sig_path(file), Path::to_path_buf);
    write_file(&sig_path, text.as_bytes(), 0o644, true)?;
    println!("{}", sig_path.display());
    eprintln!(
        "signed {} {} {} with key id {} (trusted comment: {})",
        identity.name,
        identity.version,
        identity.platform,
        key.key_id(),
        identity.trusted_comment()
    );
    Ok(())
}

fn secret_key_error(path: &Path, e: SignError) -> anyhow::Error {
    match e {
        SignError::Io { source, .. } => hinted(
            path.display(),
            format_args!("cannot read the secret key: {source}"),
            "--key takes the secret key file written by `reeve module keygen` (NAME.key) or \
             `minisign -G`",
        ),
        SignError::EncryptedKey => hinted(
            path.display(),
            "the secret key is encrypted",
            "pass --password-file FILE, a file whose first line is the key's password",
        ),
        other => hinted(
            path.display(),
            other,
            "--key takes a minisign secret key (NAME.key), not the public key (NAME.pub); an \
             encrypted key needs its right password",
        ),
    }
}

/// Warns when the secret key file can be read by others than its owner.
fn warn_readable_key(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by others (mode {mode:04o}): run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// Reads what the package says it is, with a message for files that are not packages.
fn read_identity(file: &Path) -> Result<PackageIdentity> {
    pack::read_package_identity(file).map_err(|e| match e {
        PackError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => hinted(
            file.display(),
            "no such file",
            "give the path of a package made by `reeve module pack`",
        ),
        PackError::Io { source, .. } => hinted(
            file.display(),
            format_args!("not a readable module package (.tar.gz): {source}"),
            "give a package made by `reeve module pack`; if it was downloaded, fetch it again",
        ),
        other => hinted(
            file.display(),
            format_args!("not a module package: {other}"),
            "give a package made by `reeve module pack` (a .tar.gz with module.toml at its root)",
        ),
    })
}

/// The file's name, when it is not the package's own.
fn misnamed(file: &Path, identity: &PackageIdentity) -> Option<String> {
    let expected = identity.file_name();
    let actual = file.file_name().map(|n| n.to_string_lossy().into_owned());
    (actual.as_deref() != Some(expected.as_str())).then(|| actual.unwrap_or_default())
}

fn warn_file_name(file: &Path, identity: &PackageIdentity) {
    if let Some(actual) = misnamed(file, identity) {
        eprintln!(
            "warning: {} holds {identity} but is named {actual:?}; registries and `reeve \
             module verify` expect {:?}",
            file.display(),
            identity.file_name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// verify

fn verify_cmd(
    file: &Path,
    sig: Option<&Path>,
    pubkeys: &[String],
    pubkey_dirs: &[PathBuf],
    any_file_name: bool,
    json: bool,
) -> Result<()> {
    let keys = load_public_keys(pubkeys, pubkey_dirs)?;
    let sig_path = sig.map_or_else(|| default_sig_path(file), Path::to_path_buf);
    if !file.exists() {
        return Err(hinted(
            file.display(),
            "no such file",
            "give the path of a package (<name>-<version>[-<os>-<arch>].tar.gz)",
        ));
    }
    let sig_text = fs::read_to_string(&sig_path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            hinted(
                sig_path.display(),
                "no such signature file",
                &format!(
                    "sign the package with `reeve module sign {} --key KEY`, or pass --sig \
                     where its signature is",
                    file.display()
                ),
            )
        } else {
            hinted(
                sig_path.display(),
                format_args!("cannot read the signature: {e}"),
                "check the file is readable",
            )
        }
    })?;

    let verified = sign::verify_file(file, &sig_text, &keys).map_err(|e| {
        let ids = keys
            .iter()
            .map(PublicKey::key_id)
            .collect::<Vec<_>>()
            .join(", ");
        match e {
            SignError::UntrustedKey { key_id } => hinted(
                file.display(),
                format_args!(
                    "signed by key {key_id}, which is not among the given public keys ({ids})"
                ),
                "pass the signer's public key with --pubkey, or have the package signed by a \
                 key you trust",
            ),
            SignError::Invalid { key_id, reason } => hinted(
                file.display(),
                format_args!(
                    "the signature {} (key {key_id}) does not match the file: {reason}",
                    sig_path.display()
                ),
                "the package or its signature was altered, or the signature belongs to another \
                 file: do not install it; fetch both again from their source, or pack and sign \
                 again",
            ),
            SignError::BadSignature { reason } => hinted(
                sig_path.display(),
                format_args!("not a usable minisign signature: {reason}"),
                "sign again with `reeve module sign` or `minisign -S` (pre-hashed signatures, \
                 minisign's default; legacy `-l` signatures are refused)",
            ),
            SignError::Io { path, source } => hinted(
                path.display(),
                format_args!("cannot read: {source}"),
                "check the file exists and is readable",
            ),
            other => hinted(
                format_args!("cannot verify {}", file.display()),
                other,
                "check the package, its signature and the public keys",
            ),
        }
    })?;

    // Only now is the archive read: its bytes are the ones that were signed.
    let identity = read_identity(file)?;
    let signed = verified.identity().map_err(|e| {
        hinted(
            sig_path.display(),
            e,
            &format!(
                "a module signature's trusted comment must be exactly {:?}: sign with `reeve \
                 module sign`, or with `minisign -S … -t '{}'`",
                identity.trusted_comment(),
                identity.trusted_comment()
            ),
        )
    })?;
    if signed != identity {
        return Err(hinted(
            file.display(),
            format_args!(
                "the signature vouches for {} {} {} but the manifest inside the package says {} \
                 {} {}",
                signed.name,
                signed.version,
                signed.platform,
                identity.name,
                identity.version,
                identity.platform
            ),
            "a signature vouches for one package only: do not install this; sign the package \
             itself with `reeve module sign`",
        ));
    }
    if !any_file_name && let Some(actual) = misnamed(file, &identity) {
        return Err(hinted(
            file.display(),
            format_args!(
                "named {actual:?} but it is {} {} {}, whose package file is {:?}",
                identity.name,
                identity.version,
                identity.platform,
                identity.file_name()
            ),
            "a renamed package is refused (registries find packages by file name): rename it \
             back, or pass --any-file-name if it was only saved under another name",
        ));
    }

    if json {
        let v = serde_json::json!({
            "ok": true,
            "path": file.to_string_lossy(),
            "signature": sig_path.to_string_lossy(),
            "name": identity.name,
            "version": identity.version.to_string(),
            "platform": identity.platform.to_string(),
            "key_id": verified.key_id,
            "trusted_comment": verified.trusted_comment,
        });
        println!("{v}");
    } else {
        println!(
            "ok: {} {} {} (key id {})",
            identity.name, identity.version, identity.platform, verified.key_id
        );
    }
    Ok(())
}

/// The trusted keys: each `--pubkey` (a file, or a bare base64 key) and every `*.pub` in
/// each `--pubkey-dir`. At least one key, or an error.
fn load_public_keys(pubkeys: &[String], dirs: &[PathBuf]) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for arg in pubkeys {
        let path = Path::new(arg);
        let key = if path.exists() {
            PublicKey::from_file(path).map_err(|e| public_key_error(path, e))?
        } else if looks_like_base64_key(arg) {
            PublicKey::from_text(arg).map_err(|e| {
                hinted(
                    format_args!("--pubkey {arg}"),
                    e,
                    "give a minisign public key file (NAME.pub) or its base64 line",
                )
            })?
        } else {
            return Err(hinted(
                path.display(),
                "no such public key file",
                "--pubkey takes a minisign public key file (NAME.pub from `reeve module \
                 keygen`) or its base64 line (RW…)",
            ));
        };
        keys.push(key);
    }
    for dir in dirs {
        let entries = fs::read_dir(dir).map_err(|e| {
            hinted(
                dir.display(),
                format_args!("cannot read the key directory: {e}"),
                "--pubkey-dir takes a directory of minisign public key files (*.pub)",
            )
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pub") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(hinted(
                dir.display(),
                "holds no public key (*.pub) file",
                "put the trusted minisign public keys there as NAME.pub, or use --pubkey FILE",
            ));
        }
        for f in files {
            keys.push(PublicKey::from_file(&f).map_err(|e| public_key_error(&f, e))?);
        }
    }
    if keys.is_empty() {
        bail!(
            "no public key given: nothing is trusted without one\nhint: pass --pubkey FILE \
             (NAME.pub from `reeve module keygen`) or --pubkey-dir DIR"
        );
    }
    Ok(keys)
}

fn looks_like_base64_key(s: &str) -> bool {
    s.len() == 56
        && s.starts_with("RW")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')
}

fn public_key_error(path: &Path, e: SignError) -> anyhow::Error {
    match e {
        SignError::Io { source, .. } => hinted(
            path.display(),
            format_args!("cannot read the public key: {source}"),
            "check the file exists and is readable",
        ),
        other => hinted(
            path.display(),
            other,
            "--pubkey takes a minisign public key (NAME.pub), not the secret key (NAME.key) \
             nor a signature",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_signature_path_appends() {
        assert_eq!(
            default_sig_path(Path::new("d/m-1.0.0.tar.gz")),
            PathBuf::from("d/m-1.0.0.tar.gz.minisig")
        );
    }

    #[test]
    fn base64_key_shape() {
        assert!(looks_like_base64_key(
            "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
        ));
        assert!(!looks_like_base64_key("key.pub"));
    }
}
