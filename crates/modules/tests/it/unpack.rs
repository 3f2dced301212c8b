//! Safe unpack: a good package unpacks; every kind of malicious archive is refused with
//! nothing written outside and the target absent.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reeve_modules::identity::PackageIdentity;
use reeve_modules::pack::{pack, read_package_identity};
use reeve_modules::unpack::{Limits, UnpackError, unpack};
use tar::EntryType;

use crate::helper::tarball::{Tar, gzip_bomb, raw_header};
use crate::helper::{listing, write_module};

/// A sandbox: `root/cache` holds the archive, `root/modules` receives the target, and
/// `root/outside` must stay empty.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["cache", "modules", "modules/sub", "outside"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        Sandbox { _tmp: tmp, root }
    }

    fn archive(&self, bytes: &[u8]) -> PathBuf {
        let p = self.root.join("cache/m-1.0.0.tar.gz");
        fs::write(&p, bytes).unwrap();
        p
    }

    fn target(&self) -> PathBuf {
        self.root.join("modules/sub/m-1.0.0")
    }

    /// Unpacks `bytes` with `limits`, expecting a refusal; checks nothing was left.
    fn refuse(&self, bytes: &[u8], limits: &Limits) -> UnpackError {
        let archive = self.archive(bytes);
        let err = unpack(&archive, &self.target(), limits, &id("m", "1.0.0")).unwrap_err();
        self.assert_clean();
        err
    }

    fn assert_clean(&self) {
        assert!(!self.target().exists());
        assert!(listing(&self.root.join("modules/sub")).is_empty());
        assert_eq!(listing(&self.root.join("modules")), ["sub"]);
        assert!(listing(&self.root.join("outside")).is_empty());
        assert_eq!(listing(&self.root), ["cache", "modules", "outside"]);
        assert!(!Path::new("/etc/evil").exists());
    }
}

fn id(name: &str, version: &str) -> PackageIdentity {
    PackageIdentity {
        name: name.into(),
        version: version.parse().unwrap(),
        platform: "any".parse().unwrap(),
    }
}

#[test]
fn a_packed_module_unpacks() {
    let sb = Sandbox::new();
    let src = sb.root.join("outside/src");
    write_module(&src, "m", "1.0.0");
    std::os::unix::fs::symlink("bin/install", src.join("run")).unwrap();
    let pkg = pack(&src, &sb.root.join("cache")).unwrap();
    fs::remove_dir_all(&src).unwrap();
    let identity = read_package_identity(&pkg).unwrap();
    let m = unpack(&pkg, &sb.target(), &Limits::default(), &identity).unwrap();
    assert_eq!(m.name, "m");
    let t = sb.target();
    assert_eq!(fs::read_to_string(t.join("README")).unwrap(), "hello\n");
    let mode = |p: &str| fs::metadata(t.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/install"), 0o755);
    assert_eq!(mode("README"), 0o644);
    assert_eq!(
        fs::read_link(t.join("run")).unwrap(),
        Path::new("bin/install")
    );
    // The same again: the target exists now.
    assert!(matches!(
        unpack(&pkg, &t, &Limits::default(), &identity),
        Err(UnpackError::TargetExists { .. })
    ));
}

#[test]
fn a_signed_1_0_served_as_2_0_is_refused() {
    let sb = Sandbox::new();
    let bytes = Tar::with_manifest().gz();
    let archive = sb.archive(&bytes);
    let err = unpack(
        &archive,
        &sb.target(),
        &Limits::default(),
        &id("m", "2.0.0"),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::IdentityMismatch { .. }), "{err}");
    sb.assert_clean();
}

#[test]
fn parent_and_absolute_paths_are_refused() {
    let sb = Sandbox::new();
    for path in [
        &b"../evil"[..],
        b"../../outside/evil",
        b"a/../../evil",
        b"/etc/evil",
        b"//etc/evil",
    ] {
        let bytes = Tar::with_manifest().file(path, b"pwned").gz();
        let err = sb.refuse(&bytes, &Limits::default());
        assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
    }
    // The same through a PAX path record and a GNU long name.
    let bytes = Tar::with_manifest()
        .pax(&[("path", b"../../outside/evil")])
        .file(b"harmless", b"pwned")
        .gz();
    assert!(matches!(
        sb.refuse(&bytes, &Limits::default()),
        UnpackError::UnsafePath { .. }
    ));
    let long = [&b"../"[..], &[b'x'; 200]].concat();
    let mut t = Tar::with_manifest();
    let h = raw_header(
        b"././@LongLink",
        EntryType::GNULongName,
        long.len() as u64,
        b"",
    );
    t.raw(&h, &long).file(b"short", b"pwned");
    assert!(matches!(
        sb.refuse(&t.gz(), &Limits::default()),
        UnpackError::UnsafePath { .. }
    ));
}

#[test]
fn symlinks_out_are_refused() {
    let sb = Sandbox::new();
    for (path, target) in [
        (&b"passwd"[..], &b"/etc/passwd"[..]),
        (b"up", b".."),
        (b"deep/up", b"../.."),
        (b"sneaky", b"a/../../x"),
        (b"empty", b""),
    ] {
        let bytes = Tar::with_manifest()
            .entry(path, EntryType::Symlink, target)
            .gz();
        let err = sb.refuse(&bytes, &Limits::default());
        assert!(matches!(err, UnpackError::BadLink { .. }), "{err}");
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let sb = Sandbox::new();
    // A link that stays inside, then a file written through it.
    let bytes = Tar::with_manifest()
        .entry(b"dir", EntryType::Directory, b"")
        .entry(b"link", EntryType::Symlink, b"dir")
        .file(b"link/evil", b"pwned")
        .gz();
    let err = sb.refuse(&bytes, &Limits::default());
    assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
    // A link out (refused at once), then a file through it.
    let bytes = Tar::with_manifest()
        .entry(b"out", EntryType::Symlink, b"../../../outside")
        .file(b"out/evil", b"pwned")
        .gz();
    assert!(matches!(
        sb.refuse(&bytes, &Limits::default()),
        UnpackError::BadLink { .. }
    ));
    // A file over an earlier symlink.
    let bytes = Tar::with_manifest()
        .entry(b"x", EntryType::Symlink, b"README")
        .file(b"x", b"pwned")
        .gz();
    assert!(matches!(
        sb.refuse(&bytes, &Limits::default()),
        UnpackError::UnsafePath { .. }
    ));
}

#[test]
fn hard_links_out_are_refused() {
    let sb = Sandbox::new();
    for target in [
        &b"/etc/passwd"[..],
        b"../../outside/x",
        b"later",
        b"module.toml/..",
    ] {
        let bytes = Tar::with_manifest()
            .entry(b"hl", EntryType::Link, target)
            .file(b"later", b"x")
            .gz();
        let err = sb.refuse(&bytes, &Limits::default());
        assert!(matches!(err, UnpackError::BadLink { .. }), "{err}");
    }
    // A hard link to a file of the archive is fine.
    let bytes = Tar::with_manifest()
        .entry(b"copy.toml", EntryType::Link, b"module.toml")
        .gz();
    let archive = sb.archive(&bytes);
    unpack(
        &archive,
        &sb.target(),
        &Limits::default(),
        &id("m", "1.0.0"),
    )
    .unwrap();
    assert!(sb.target().join("copy.toml").is_file());
}

#[test]
fn devices_and_fifos_are_refused() {
    let sb = Sandbox::new();
    for kind in [
        EntryType::Char,
        EntryType::Block,
        EntryType::Fifo,
        EntryType::GNUSparse,
    ] {
        let bytes = Tar::with_manifest().entry(b"dev", kind, b"").gz();
        let err = sb.refuse(&bytes, &Limits::default());
        assert!(matches!(err, UnpackError::Unsupported { .. }), "{err}");
    }
    // A directory claiming content.
    let mut t = Tar::with_manifest();
    t.raw(&raw_header(b"d", EntryType::Directory, 512, b""), &[0; 512]);
    assert!(matches!(
        sb.refuse(&t.gz(), &Limits::default()),
        UnpackError::Unsupported { .. }
    ));
}

#[test]
fn a_gzip_bomb_is_stopped() {
    let sb = Sandbox::new();
    let limits = Limits {
        max_entries: 1000,
        max_bytes: 64 << 20,
    };
    // One file declaring 2 GiB: refused from its header.
    let header = raw_header(b"big", EntryType::Regular, 2 << 30, b"");
    let mut prefix = Tar::with_manifest();
    prefix.raw(&header, &[]);
    let bomb = gzip_bomb(&prefix_bytes(&prefix), 2048);
    assert!(bomb.len() < 4 << 20, "{}", bomb.len());
    let err = sb.refuse(&bomb, &limits);
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    // Many files of 4 MiB each: stopped once the total passes the limit.
    let mut t = Tar::with_manifest();
    for i in 0..40 {
        t.file(format!("f{i}").as_bytes(), &vec![0u8; 4 << 20]);
    }
    let err = sb.refuse(&t.gz(), &limits);
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
}

fn prefix_bytes(t: &Tar) -> Vec<u8> {
    // The uncompressed bytes of `t`: decompress its gzip form and drop the end blocks.
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&t.gz()[..])
        .read_to_end(&mut out)
        .unwrap();
    out.truncate(out.len() - 1024);
    out
}

#[test]
fn too_many_entries_and_duplicates() {
    let sb = Sandbox::new();
    let mut t = Tar::with_manifest();
    for i in 0..20 {
        t.file(format!("f{i}").as_bytes(), b"x");
    }
    let limits = Limits {
        max_entries: 10,
        max_bytes: 1 << 20,
    };
    assert!(matches!(
        sb.refuse(&t.gz(), &limits),
        UnpackError::TooManyEntries { limit: 10 }
    ));
    let bytes = Tar::with_manifest().file(b"./module.toml", b"x").gz();
    assert!(matches!(
        sb.refuse(&bytes, &Limits::default()),
        UnpackError::UnsafePath { .. }
    ));
}

#[test]
fn corrupt_archives_and_bad_manifests() {
    let sb = Sandbox::new();
    assert!(matches!(
        sb.refuse(b"not gzip at all", &Limits::default()),
        UnpackError::Corrupt { .. }
    ));
    let bytes = Tar::default().file(b"README", b"no manifest").gz();
    assert!(matches!(
        sb.refuse(&bytes, &Limits::default()),
        UnpackError::Manifest(_)
    ));
}
