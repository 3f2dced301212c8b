//! Signatures: our keys and signatures with ourselves and with the real `minisign` tool,
//! tampering, wrong keys, no keys, and the trusted comment.

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use reeve_modules::pack::pack;
use reeve_modules::sign::{
    PublicKey, SecretKey, SignError, generate_keypair, sign, sign_package, verify, verify_file,
};

use crate::helper::write_module;

/// Whether the `minisign` tool is installed; prints why a test is skipped when not.
fn have_minisign() -> bool {
    let ok = Command::new("minisign").arg("-v").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: the minisign tool is not installed (apt-get install minisign)");
    }
    ok
}

#[test]
fn sign_and_verify_a_package() {
    let tmp = tempfile::tempdir().unwrap();
    write_module(&tmp.path().join("src"), "my-server", "1.2.0");
    let pkg = pack(&tmp.path().join("src"), tmp.path()).unwrap();
    let keys = generate_keypair().unwrap();
    let sig = sign_package(&pkg, &keys.secret).unwrap();
    let v = verify_file(&pkg, &sig, std::slice::from_ref(&keys.public)).unwrap();
    assert_eq!(v.key_id, keys.public.key_id());
    assert_eq!(
        v.trusted_comment,
        "reeve-module name=my-server version=1.2.0 platform=any"
    );
    let id = v.identity().unwrap();
    assert_eq!(id.file_name(), "my-server-1.2.0.tar.gz");

    // Tampered data.
    let mut bytes = fs::read(&pkg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = verify(
        Cursor::new(&bytes),
        &sig,
        std::slice::from_ref(&keys.public),
    )
    .unwrap_err();
    assert!(matches!(err, SignError::Invalid { .. }), "{err}");

    // Tampered trusted comment (a 1.2.0 claimed as 2.0.0).
    let forged = sig.replace("version=1.2.0", "version=2.0.0");
    let err = verify_file(&pkg, &forged, std::slice::from_ref(&keys.public)).unwrap_err();
    assert!(matches!(err, SignError::Invalid { .. }), "{err}");

    // Wrong key, no key.
    let other = generate_keypair().unwrap();
    let err = verify_file(&pkg, &sig, std::slice::from_ref(&other.public)).unwrap_err();
    assert!(matches!(err, SignError::UntrustedKey { .. }), "{err}");
    let err = verify_file(&pkg, &sig, &[]).unwrap_err();
    assert!(matches!(err, SignError::NoTrustedKeys), "{err}");
    // Several keys: the right one is found.
    verify_file(&pkg, &sig, &[other.public, keys.public]).unwrap();
}

#[test]
fn key_files_round_trip() {
    let keys = generate_keypair().unwrap();
    let pub_text = keys.public.to_file_text();
    let sec_text = keys.secret.to_file_text().unwrap();
    let public = PublicKey::from_text(&pub_text).unwrap();
    let bare = PublicKey::from_text(pub_text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(public.key_id(), keys.public.key_id());
    assert_eq!(bare.key_id(), keys.public.key_id());
    let secret = SecretKey::from_text(&sec_text, None).unwrap();
    assert_eq!(secret.key_id(), keys.public.key_id());
    assert_eq!(secret.public_key().unwrap().key_id(), keys.public.key_id());
    assert!(PublicKey::from_text("nonsense").is_err());
    assert!(SecretKey::from_text("nonsense\nmore", None).is_err());
    let sig = sign(Cursor::new(b"data"), &secret, "c").unwrap();
    verify(Cursor::new(b"data"), &sig, &[public]).unwrap();
    assert!(sign(Cursor::new(b"data"), &secret, "two\nlines").is_err());
}

#[test]
fn minisign_tool_verifies_ours() {
    if !have_minisign() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keys = generate_keypair().unwrap();
    fs::write(d.join("k.pub"), keys.public.to_file_text()).unwrap();
    fs::write(d.join("data"), vec![7u8; 100_000]).unwrap();
    let sig = sign(
        fs::File::open(d.join("data")).unwrap(),
        &keys.secret,
        "reeve-module name=a version=1.0.0 platform=any",
    )
    .unwrap();
    fs::write(d.join("data.minisig"), &sig).unwrap();
    let out = Command::new("minisign")
        .args(["-V", "-p", "k.pub", "-m", "data"])
        .current_dir(d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("reeve-module name=a version=1.0.0 platform=any"),
        "{stdout}"
    );
    // The tool also refuses a tampered file.
    fs::write(d.join("data"), vec![8u8; 100_000]).unwrap();
    let out = Command::new("minisign")
        .args(["-V", "-p", "k.pub", "-m", "data"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn we_verify_the_minisign_tools_and_read_its_keys() {
    if !have_minisign() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = |args: &[&str]| {
        let out = Command::new("minisign")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "minisign {args:?}: {out:?}");
    };
    run(&["-G", "-W", "-p", "tool.pub", "-s", "tool.key"]);
    write_module(&d.join("src"), "my-server", "1.0.0");
    let pkg = pack(&d.join("src"), d).unwrap();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    let comment = "reeve-module name=my-server version=1.0.0 platform=any";
    run(&["-S", "-s", "tool.key", "-m", &name, "-t", comment]);
    let sig = fs::read_to_string(d.join(format!("{name}.minisig"))).unwrap();
    let public = PublicKey::from_file(&d.join("tool.pub")).unwrap();
    let v = verify_file(&pkg, &sig, std::slice::from_ref(&public)).unwrap();
    assert_eq!(v.trusted_comment, comment);
    assert_eq!(v.identity().unwrap().version.to_string(), "1.0.0");

    // The tool's unencrypted secret key signs with us, and the tool verifies that.
    let secret = SecretKey::from_file(&d.join("tool.key"), None).unwrap();
    assert_eq!(secret.key_id(), public.key_id());
    let ours = sign_package(&pkg, &secret).unwrap();
    fs::write(d.join(format!("{name}.minisig")), ours).unwrap();
    run(&["-V", "-p", "tool.pub", "-m", &name]);

    // Default trusted comments ("timestamp:… file:…") are not a reeve package identity.
    run(&["-S", "-s", "tool.key", "-m", &name]);
    let sig = fs::read_to_string(d.join(format!("{name}.minisig"))).unwrap();
    let v = verify_file(&pkg, &sig, &[public]).unwrap();
    assert!(matches!(v.identity(), Err(SignError::BadComment { .. })));
    assert!(Path::new(&d.join("tool.key")).exists());
}
