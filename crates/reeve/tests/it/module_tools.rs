//! Module tooling through the CLI: pack, sign, verify, keygen, interop with minisign.
//!
//! Real files, the real `reeve` binary, and the real `minisign` tool when it is installed
//! (`/usr/bin/minisign`, installed by scripts/test; the interop tests print why they skip
//! otherwise). The module packed is the example at `crates/modules/examples/my-server`.

use crate::helper::BoundedOutput;
use crate::helper::reeve_bin;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MINISIGN: &str = "/usr/bin/minisign";

/// The example module's directory.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/examples/my-server")
}

/// Runs `reeve module ARGS…` (no agent involved).
fn module<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(reeve_bin())
        .arg("module")
        .args(args)
        .env_remove("REEVE_SOCKET")
        .stdin(Stdio::null())
        .bounded_output()
        .expect("run reeve module")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts failure (exit code 1, an `error:` and a `hint:`) and returns stderr.
fn refused(o: Output, what: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what} should fail:\nstdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert!(err.contains("error:"), "{what}: {err}");
    assert!(
        err.contains("hint:"),
        "{what}: every error says what to do: {err}"
    );
    err
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("reeve-module-tools")
        .tempdir()
        .expect("tempdir")
}

fn p(path: &Path) -> &OsStr {
    path.as_os_str()
}

/// Copies a directory tree (files, directories, modes), giving every file a new mtime.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    let mut entries: Vec<_> = fs::read_dir(from)
        .expect("read module dir")
        .map(|e| e.expect("dir entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// A copy of the example module with its version changed.
fn module_at_version(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("src-{version}"));
    copy_tree(&example(), &dir);
    let manifest = dir.join("module.toml");
    let text = fs::read_to_string(&manifest).expect("read manifest");
    let text = text.replace("version = \"1.0.0\"", &format!("version = \"{version}\""));
    assert!(text.contains(version), "version replaced");
    fs::write(&manifest, text).expect("write manifest");
    dir
}

/// Packs `dir` into `out`; returns the package path.
fn pack(dir: &Path, out: &Path) -> PathBuf {
    let printed = ok(
        module(&[
            OsStr::new("pack"),
            "--dir".as_ref(),
            p(dir),
            "--out".as_ref(),
            p(out),
        ]),
        "pack",
    );
    PathBuf::from(printed.trim())
}

/// Makes a key pair NAME in `dir`; returns (public, secret, key id).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let id = ok(
        module(&[
            OsStr::new("keygen"),
            "--out-dir".as_ref(),
            p(dir),
            "--name".as_ref(),
            name.as_ref(),
        ]),
        "keygen",
    );
    (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
        id.trim().to_owned(),
    )
}

fn sign(file: &Path, key: &Path) -> PathBuf {
    let printed = ok(
        module(&[OsStr::new("sign"), p(file), "--key".as_ref(), p(key)]),
        "sign",
    );
    PathBuf::from(printed.trim())
}

fn verify(file: &Path, sig: &Path, pubkey: &Path) -> Output {
    module(&[
        OsStr::new("verify"),
        p(file),
        "--sig".as_ref(),
        p(sig),
        "--pubkey".as_ref(),
        p(pubkey),
    ])
}

/// The minisign tool, or None after printing why the test skips.
fn minisign_tool(test: &str) -> Option<&'static str> {
    if Path::new(MINISIGN).is_file() {
        Some(MINISIGN)
    } else {
        eprintln!("skipping {test}: {MINISIGN} is not installed (scripts/test installs it)");
        None
    }
}

fn run_tool(args: &[&OsStr]) -> Output {
    Command::new(MINISIGN)
        .args(args)
        .stdin(Stdio::null())
        .bounded_output()
        .expect("run minisign")
}

#[test]
fn pack_is_reproducible_and_reports_hash_and_size() {
    let work = tmp();
    let a = pack(&example(), &work.path().join("a"));
    let b = pack(&example(), &work.path().join("b"));
    // A fresh copy (new mtimes, new inode order) packs to the same bytes as well.
    let copy = work.path().join("copy");
    copy_tree(&example(), &copy);
    let c = pack(&copy, &work.path().join("c"));
    assert_eq!(
        a.file_name().and_then(|n| n.to_str()),
        Some("my-server-1.0.0.tar.gz")
    );
    let bytes = fs::read(&a).expect("read package a");
    assert_eq!(
        bytes,
        fs::read(&b).expect("read package b"),
        "same input, same bytes"
    );
    assert_eq!(
        bytes,
        fs::read(&c).expect("read package c"),
        "a copy packs the same"
    );

    let out = ok(
        module(&[
            OsStr::new("pack"),
            "--dir".as_ref(),
            p(&example()),
            "--out".as_ref(),
            p(&work.path().join("d")),
            "--json".as_ref(),
        ]),
        "pack --json",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("pack --json prints JSON");
    assert_eq!(v["name"], "my-server");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["platform"], "any");
    assert_eq!(v["size"], bytes.len() as u64);
    let path = PathBuf::from(v["path"].as_str().expect("path"));
    assert_eq!(fs::read(&path).expect("read package d"), bytes);
    let sha = v["sha256"].as_str().expect("sha256");
    assert_eq!(sha.len(), 64);
    if let Ok(o) = Command::new("sha256sum").arg(&path).bounded_output()
        && o.status.success()
    {
        assert!(
            stdout(&o).starts_with(sha),
            "sha256sum agrees: {}",
            stdout(&o)
        );
    }
}

#[test]
fn pack_errors_name_the_directory() {
    let work = tmp();
    let missing = work.path().join("nope");
    let err = refused(
        module(&[OsStr::new("pack"), "--dir".as_ref(), p(&missing)]),
        "pack of a missing directory",
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let bad = work.path().join("bad");
    fs::create_dir_all(&bad).expect("mkdir");
    fs::write(bad.join("module.toml"), "name = \"Bad Name\"\n").expect("write manifest");
    let err = refused(
        module(&[
            OsStr::new("pack"),
            "--dir".as_ref(),
            p(&bad),
            "--out".as_ref(),
            p(&work.path().join("out")),
        ]),
        "pack of a bad manifest",
    );
    assert!(err.contains("module.toml"), "{err}");
    assert!(
        err.contains("version"),
        "every manifest error at once: {err}"
    );
}

#[test]
fn keygen_sign_verify() {
    let work = tmp();
    let keys = work.path().join("keys");
    let (public, secret, id) = keygen(&keys, "release");
    assert_eq!(id.len(), 16, "key id printed: {id}");
    let mode = |f: &Path| fs::metadata(f).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600, "the secret key is private");
    assert_eq!(mode(&keys), 0o700, "the key directory is private");
    let pub_text = fs::read_to_string(&public).expect("read public key");
    assert!(
        pub_text.starts_with(&format!("untrusted comment: minisign public key {id}\n")),
        "{pub_text}"
    );

    let package = pack(&example(), &work.path().join("dist"));
    let sig = sign(&package, &secret);
    assert_eq!(sig, PathBuf::from(format!("{}.minisig", package.display())));
    let sig_text = fs::read_to_string(&sig).expect("read signature");
    assert!(
        sig_text
            .contains("trusted comment: reeve-module name=my-server version=1.0.0 platform=any\n"),
        "{sig_text}"
    );

    let out = ok(verify(&package, &sig, &public), "verify");
    assert_eq!(out.trim(), format!("ok: my-server 1.0.0 any (key id {id})"));

    // Default signature path, a key directory, JSON.
    let out = ok(
        module(&[
            OsStr::new("verify"),
            p(&package),
            "--pubkey-dir".as_ref(),
            p(&keys),
            "--json".as_ref(),
        ]),
        "verify --pubkey-dir --json",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify --json prints JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["name"], "my-server");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["platform"], "any");
    assert_eq!(v["key_id"], id.as_str());

    // A public key given as its base64 line, among other keys.
    let (other, _, _) = keygen(&keys, "other");
    let line = pub_text.lines().nth(1).expect("base64 line").to_owned();
    ok(
        module(&[
            OsStr::new("verify"),
            p(&package),
            "--pubkey".as_ref(),
            p(&other),
            "--pubkey".as_ref(),
            line.as_ref(),
        ]),
        "verify with a base64 key",
    );

    // --out puts the signature elsewhere.
    let elsewhere = work.path().join("sig/elsewhere.minisig");
    fs::create_dir_all(work.path().join("sig")).expect("mkdir");
    ok(
        module(&[
            OsStr::new("sign"),
            p(&package),
            "--key".as_ref(),
            p(&secret),
            "--out".as_ref(),
            p(&elsewhere),
        ]),
        "sign --out",
    );
    ok(verify(&package, &elsewhere, &public), "verify --sig");
}

#[test]
fn keygen_refuses_to_overwrite() {
    let work = tmp();
    let (public, secret, id) = keygen(work.path(), "k");
    let before = fs::read(&secret).expect("read secret key");
    let err = refused(
        module(&[
            OsStr::new("keygen"),
            "--out-dir".as_ref(),
            p(work.path()),
            "--name".as_ref(),
            "k".as_ref(),
        ]),
        "keygen over an existing key",
    );
    assert!(err.contains("k.key") && err.contains("--force"), "{err}");
    assert_eq!(
        fs::read(&secret).expect("read secret key"),
        before,
        "unchanged"
    );

    // Only the public key left: still refused (it would no longer match).
    fs::remove_file(&secret).expect("rm secret");
    let err = refused(
        module(&[
            OsStr::new("keygen"),
            "--out-dir".as_ref(),
            p(work.path()),
            "--name".as_ref(),
            "k".as_ref(),
        ]),
        "keygen over an existing public key",
    );
    assert!(err.contains("k.pub"), "{err}");
    assert!(!secret.exists(), "nothing written");

    let new_id = ok(
        module(&[
            OsStr::new("keygen"),
            "--out-dir".as_ref(),
            p(work.path()),
            "--name".as_ref(),
            "k".as_ref(),
            "--force".as_ref(),
        ]),
        "keygen --force",
    );
    assert_ne!(new_id.trim(), id, "a new key");
    assert!(
        fs::read_to_string(&public)
            .expect("read public")
            .contains(new_id.trim())
    );
    let mode = fs::metadata(&secret).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let help = stdout(&module(&["keygen", "--help"]));
    assert!(
        help.contains("NOT ENCRYPTED") && help.contains("0600"),
        "{help}"
    );
    assert!(help.contains("Examples"), "{help}");
}

#[test]
fn tampered_package_or_signature_is_refused() {
    let work = tmp();
    let (public, secret, _) = keygen(&work.path().join("keys"), "k");
    let package = pack(&example(), &work.path().join("dist"));
    let sig = sign(&package, &secret);

    // One byte changed in the package.
    let mut bytes = fs::read(&package).expect("read package");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let tampered_dir = work.path().join("tampered");
    fs::create_dir_all(&tampered_dir).expect("mkdir");
    let tampered = tampered_dir.join("my-server-1.0.0.tar.gz");
    fs::write(&tampered, &bytes).expect("write tampered");
    let err = refused(verify(&tampered, &sig, &public), "tampered package");
    assert!(
        err.contains(&tampered.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("does not match"), "{err}");

    // The trusted comment edited to another version.
    let text = fs::read_to_string(&sig).expect("read signature");
    let forged = work.path().join("forged.minisig");
    fs::write(&forged, text.replace("version=1.0.0", "version=2.0.0")).expect("write forged");
    let err = refused(verify(&package, &forged, &public), "edited trusted comment");
    assert!(err.contains("does not match"), "{err}");

    // Not a signature at all.
    let garbage = work.path().join("garbage.minisig");
    fs::write(&garbage, "hello\n").expect("write garbage");
    let err = refused(verify(&package, &garbage, &public), "garbage signature");
    assert!(err.contains("garbage.minisig"), "{err}");

    // No signature.
    let err = refused(
        module(&[
            OsStr::new("verify"),
            p(&tampered),
            "--pubkey".as_ref(),
            p(&public),
        ]),
        "missing signature",
    );
    assert!(
        err.contains(".minisig") && err.contains("reeve module sign"),
        "{err}"
    );
}

#[test]
fn wrong_or_missing_key_is_refused() {
    let work = tmp();
    let (_, secret, id) = keygen(&work.path().join("keys"), "signer");
    let (stranger, _, stranger_id) = keygen(&work.path().join("other"), "stranger");
    let package = pack(&example(), &work.path().join("dist"));
    let sig = sign(&package, &secret);

    let err = refused(verify(&package, &sig, &stranger), "wrong key");
    assert!(err.contains(&id) && err.contains(&stranger_id), "{err}");
    assert!(err.contains("not among"), "{err}");

    // No key at all: refused before anything is read.
    let out = module(&[OsStr::new("verify"), p(&package)]);
    assert!(
        !out.status.success(),
        "verify without a key: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("--pubkey"), "{}", stderr(&out));

    // An empty key directory is not "trust nothing, accept all".
    let empty = work.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let err = refused(
        module(&[
            OsStr::new("verify"),
            p(&package),
            "--pubkey-dir".as_ref(),
            p(&empty),
        ]),
        "empty key directory",
    );
    assert!(err.contains(&empty.display().to_string()), "{err}");

    // Signing with the public key instead of the secret one.
    let err = refused(
        module(&[
            OsStr::new("sign"),
            p(&package),
            "--key".as_ref(),
            p(&stranger),
        ]),
        "sign with a public key",
    );
    assert!(err.contains("stranger.pub"), "{err}");

    // Signing something that is not a package.
    let not_pkg = work.path().join("notes.txt");
    fs::write(&not_pkg, "not a package").expect("write");
    let err = refused(
        module(&[
            OsStr::new("sign"),
            p(&not_pkg),
            "--key".as_ref(),
            p(&secret),
        ]),
        "sign a non-package",
    );
    assert!(err.contains("notes.txt"), "{err}");
    assert!(!work.path().join("notes.txt.minisig").exists());
}

#[test]
fn a_signed_1_0_presented_as_2_0_is_refused() {
    let work = tmp();
    let (public, secret, _) = keygen(&work.path().join("keys"), "k");
    let v1 = pack(&example(), &work.path().join("dist"));
    let v1_sig = sign(&v1, &secret);

    // The 1.0 package and its signature renamed to 2.0.
    let renamed_dir = work.path().join("renamed");
    fs::create_dir_all(&renamed_dir).expect("mkdir");
    let renamed = renamed_dir.join("my-server-2.0.0.tar.gz");
    let renamed_sig = renamed_dir.join("my-server-2.0.0.tar.gz.minisig");
    fs::copy(&v1, &renamed).expect("copy package");
    fs::copy(&v1_sig, &renamed_sig).expect("copy signature");
    let err = refused(
        verify(&renamed, &renamed_sig, &public),
        "renamed 1.0 package",
    );
    assert!(
        err.contains("my-server-2.0.0.tar.gz") && err.contains("my-server-1.0.0.tar.gz"),
        "{err}"
    );

    // A real 2.0 package with the 1.0 signature reused.
    let v2 = pack(
        &module_at_version(work.path(), "2.0.0"),
        &work.path().join("dist2"),
    );
    assert_eq!(
        v2.file_name().and_then(|n| n.to_str()),
        Some("my-server-2.0.0.tar.gz")
    );
    let err = refused(
        verify(&v2, &v1_sig, &public),
        "1.0 signature on a 2.0 package",
    );
    assert!(err.contains("does not match"), "{err}");

    // A signature that is valid but whose trusted comment names another version than the
    // manifest inside (a signer's mistake, or a 1.0 re-signed as 2.0): refused.
    let key = reeve_modules::sign::SecretKey::from_file(&secret, None).expect("read secret key");
    let lie = reeve_modules::sign::sign(
        fs::File::open(&v1).expect("open package"),
        &key,
        "reeve-module name=my-server version=2.0.0 platform=any",
    )
    .expect("sign with another comment");
    let lie_sig = work.path().join("lie.minisig");
    fs::write(&lie_sig, lie).expect("write signature");
    let err = refused(
        verify(&v1, &lie_sig, &public),
        "comment naming 2.0 on a 1.0 package",
    );
    assert!(
        err.contains("vouches for my-server 2.0.0") && err.contains("says my-server 1.0.0"),
        "{err}"
    );
    let err = refused(
        verify(&renamed, &lie_sig, &public),
        "renamed with a lying signature",
    );
    assert!(err.contains("vouches for"), "{err}");

    // A trusted comment that is not a reeve module's.
    let plain = reeve_modules::sign::sign(
        fs::File::open(&v1).expect("open package"),
        &key,
        "timestamp:1700000000",
    )
    .expect("sign");
    let plain_sig = work.path().join("plain.minisig");
    fs::write(&plain_sig, plain).expect("write signature");
    let err = refused(verify(&v1, &plain_sig, &public), "foreign trusted comment");
    assert!(
        err.contains("reeve-module name=my-server version=1.0.0 platform=any"),
        "the hint gives the comment to use: {err}"
    );

    // Saved under another name on purpose: --any-file-name.
    let saved = work.path().join("download.tar.gz");
    fs::copy(&v1, &saved).expect("copy");
    refused(verify(&saved, &v1_sig, &public), "another file name");
    ok(
        module(&[
            OsStr::new("verify"),
            p(&saved),
            "--sig".as_ref(),
            p(&v1_sig),
            "--pubkey".as_ref(),
            p(&public),
            "--any-file-name".as_ref(),
        ]),
        "verify --any-file-name",
    );
}

#[test]
fn minisign_tool_verifies_a_reeve_signature() {
    let Some(tool) = minisign_tool("minisign_tool_verifies_a_reeve_signature") else {
        return;
    };
    let work = tmp();
    let (public, secret, _) = keygen(&work.path().join("keys"), "k");
    let package = pack(&example(), &work.path().join("dist"));
    let sig = sign(&package, &secret);
    let out = run_tool(&[
        OsStr::new("-V"),
        "-m".as_ref(),
        p(&package),
        "-x".as_ref(),
        p(&sig),
        "-p".as_ref(),
        p(&public),
    ]);
    assert!(
        out.status.success(),
        "{tool} -V refused a reeve signature: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("reeve-module name=my-server version=1.0.0 platform=any"),
        "{}",
        stdout(&out)
    );

    // The tool signs with a key from `reeve module keygen`, and reeve verifies that.
    let tool_sig = work.path().join("tool.minisig");
    let out = run_tool(&[
        OsStr::new("-S"),
        "-s".as_ref(),
        p(&secret),
        "-m".as_ref(),
        p(&package),
        "-x".as_ref(),
        p(&tool_sig),
        "-t".as_ref(),
        "reeve-module name=my-server version=1.0.0 platform=any".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "minisign -S with a reeve key: {}",
        stderr(&out)
    );
    ok(
        verify(&package, &tool_sig, &public),
        "verify the tool's signature made with a reeve key",
    );

    // The tool also refuses a tampered package.
    let mut bytes = fs::read(&package).expect("read package");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&package, bytes).expect("tamper");
    let out = run_tool(&[
        OsStr::new("-V"),
        "-m".as_ref(),
        p(&package),
        "-x".as_ref(),
        p(&sig),
        "-p".as_ref(),
        p(&public),
    ]);
    assert!(
        !out.status.success(),
        "the tool accepted a tampered package"
    );
}

#[test]
fn reeve_verifies_a_minisign_tool_signature() {
    let Some(_) = minisign_tool("reeve_verifies_a_minisign_tool_signature") else {
        return;
    };
    let work = tmp();
    let public = work.path().join("tool.pub");
    let secret = work.path().join("tool.key");
    let out = run_tool(&[
        OsStr::new("-G"),
        "-W".as_ref(),
        "-p".as_ref(),
        p(&public),
        "-s".as_ref(),
        p(&secret),
    ]);
    assert!(out.status.success(), "minisign -G: {}", stderr(&out));
    let package = pack(&example(), &work.path().join("dist"));
    let tool_sign = |comment: &str, sig: &Path| {
        let out = run_tool(&[
            OsStr::new("-S"),
            "-s".as_ref(),
            p(&secret),
            "-m".as_ref(),
            p(&package),
            "-x".as_ref(),
            p(sig),
            "-t".as_ref(),
            comment.as_ref(),
        ]);
        assert!(out.status.success(), "minisign -S: {}", stderr(&out));
    };

    let sig = work.path().join("good.minisig");
    tool_sign(
        "reeve-module name=my-server version=1.0.0 platform=any",
        &sig,
    );
    let out = ok(verify(&package, &sig, &public), "verify a tool signature");
    assert!(out.starts_with("ok: my-server 1.0.0 any (key id "), "{out}");

    // The tool's signature with a comment naming another version: refused.
    let wrong = work.path().join("wrong.minisig");
    tool_sign(
        "reeve-module name=my-server version=2.0.0 platform=any",
        &wrong,
    );
    let err = refused(
        verify(&package, &wrong, &public),
        "tool signature naming 2.0",
    );
    assert!(err.contains("vouches for my-server 2.0.0"), "{err}");

    // And `reeve module sign` takes the tool's unencrypted secret key.
    let reeve_sig = sign(&package, &secret);
    ok(
        verify(&package, &reeve_sig, &public),
        "reeve signature with the tool's key",
    );
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for cmd in ["pack", "keygen", "sign", "verify"] {
        let out = module(&[cmd, "--help"]);
        let help = ok(out, "help");
        assert!(
            help.contains(&format!("reeve module {cmd} ")),
            "{cmd} --help has an example: {help}"
        );
    }
    let help = stdout(&module(&["verify", "--help"]));
    assert!(
        help.contains("--pubkey-dir") && help.contains("2.0"),
        "{help}"
    );
}

#[test]
fn operator_keys_create_show_and_refuse_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        std::process::Command::new(crate::helper::reeve_bin())
            .args(args)
            .bounded_output()
            .expect("run reeve")
    };
    let d = dir.path().to_str().expect("utf8");
    let out = run(&["key", "create", "alice", "--out-dir", d, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let fp = v["fingerprint"].as_str().expect("fingerprint").to_owned();
    let mode = std::fs::metadata(dir.path().join("alice.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret key is private");
    for f in ["alice.key", "alice.pub"] {
        let p = dir.path().join(f);
        let out = run(&["key", "show", p.to_str().expect("utf8")]);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&fp), "{f}");
    }
    let again = run(&["key", "create", "alice", "--out-dir", d]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let bad = dir.path().join("bad.pub");
    std::fs::write(&bad, "not a key\n").expect("write");
    let out = run(&["key", "show", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reeve public key"));
}
