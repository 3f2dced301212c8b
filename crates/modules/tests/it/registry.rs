//! The registry client against a real HTTP server on loopback: platform file first, fail
//! closed, bad signatures, a package served under another version, resume after a cut,
//! a server that ignores ranges, and the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use reeve_modules::identity::{ModuleRef, Platform};
use reeve_modules::pack::pack;
use reeve_modules::registry::{Progress, ProxySetting, Registry, RegistryConfig, RegistryError};
use reeve_modules::sign::{KeyPair, generate_keypair, sign_package};
use sha2::Digest;

use crate::helper::server;

/// Packs a module `name@version` for `platform` with `size` bytes of incompressible data,
/// signs it with `key` and puts both into the registry folder `reg`. Returns the package.
fn publish(
    reg: &Path,
    name: &str,
    version: &str,
    platform: &str,
    size: usize,
    key: &KeyPair,
) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    fs::write(
        src.path().join("module.toml"),
        format!("name = \"{name}\"\nversion = \"{version}\"\nplatform = \"{platform}\"\n"),
    )
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(src.path().join("data.bin"), data).unwrap();
    let dir = reg.join(name).join(format!("{name}-{version}"));
    fs::create_dir_all(&dir).unwrap();
    let pkg = pack(src.path(), &dir).unwrap();
    let sig = sign_package(&pkg, &key.secret).unwrap();
    fs::write(format!("{}.minisig", pkg.display()), sig).unwrap();
    pkg
}

fn config(url: String, cache: &Path, key: &KeyPair) -> RegistryConfig {
    let mut c = RegistryConfig::new(url, cache, vec![key.public.clone()]);
    c.proxy = ProxySetting::None;
    c.platform = "linux-x86_64".parse().unwrap();
    c
}

fn m(s: &str) -> ModuleRef {
    s.parse().unwrap()
}

fn sha256(path: &Path) -> String {
    sha2::Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cache_listing(cache: &Path) -> Vec<String> {
    if !cache.exists() {
        return Vec::new();
    }
    crate::helper::listing(cache)
}

#[tokio::test]
async fn platform_package_first_then_generic() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    publish(&reg, "a", "1.0.0", "any", 1000, &key);
    publish(&reg, "a", "1.0.0", "linux-x86_64", 1000, &key);
    publish(&reg, "b", "2.0.0", "any", 1000, &key);
    let srv = server::start(reg.clone()).await;
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let a = r.fetch(&m("a@1.0.0"), &mut |_| {}).await.unwrap();
    assert_eq!(a.identity.platform.to_string(), "linux-x86_64");
    assert_eq!(a.path, cache.join("a-1.0.0-linux-x86_64.tar.gz"));
    assert_eq!(a.sha256, sha256(&a.path));
    assert!(!a.from_cache);
    let b = r.fetch(&m("b@2.0.0"), &mut |_| {}).await.unwrap();
    assert_eq!(b.identity.platform, Platform::Any);
    assert!(b.signature_path.is_file());
    // Again: from the cache, verified, no package bytes sent.
    let sent = srv.knobs.package_bytes_sent.load(Ordering::SeqCst);
    let again = r.fetch(&m("b@2.0.0"), &mut |_| {}).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(again.sha256, b.sha256);
    assert_eq!(srv.knobs.package_bytes_sent.load(Ordering::SeqCst), sent);
    let err = r.fetch(&m("c@1.0.0"), &mut |_| {}).await.unwrap_err();
    match err {
        RegistryError::NotFound { tried, .. } => {
            assert_eq!(tried.len(), 2);
            assert!(tried[0].ends_with("/registry/c/c-1.0.0/c-1.0.0-linux-x86_64.tar.gz.minisig"));
            assert!(tried[1].ends_with("/registry/c/c-1.0.0/c-1.0.0.tar.gz.minisig"));
        }
        e => panic!("{e}"),
    }
}

#[tokio::test]
async fn no_trusted_key_fetches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let key = generate_keypair().unwrap();
    publish(&tmp.path().join("reg"), "a", "1.0.0", "any", 100, &key);
    let srv = server::start(tmp.path().join("reg")).await;
    let mut c = config(srv.url(), &tmp.path().join("cache"), &key);
    c.trusted_keys.clear();
    let err = Registry::new(c)
        .unwrap()
        .fetch(&m("a@1.0.0"), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoTrustedKeys { .. }), "{err}");
    assert_eq!(srv.knobs.requests.load(Ordering::SeqCst), 0);
    assert!(!tmp.path().join("cache").exists());
}

#[tokio::test]
async fn wrong_key_and_tampered_package_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    let other = generate_keypair().unwrap();
    publish(&reg, "a", "1.0.0", "any", 5000, &other);
    let pkg = publish(&reg, "b", "1.0.0", "any", 5000, &key);
    let mut bytes = fs::read(&pkg).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&pkg, bytes).unwrap();
    let srv = server::start(reg).await;
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let err = r.fetch(&m("a@1.0.0"), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, RegistryError::Signature { .. }), "{err}");
    let err = r.fetch(&m("b@1.0.0"), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, RegistryError::Signature { .. }), "{err}");
    assert!(
        cache_listing(&cache).is_empty(),
        "{:?}",
        cache_listing(&cache)
    );
}

#[tokio::test]
async fn a_signed_1_0_served_as_2_0_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    let pkg = publish(&reg, "a", "1.0.0", "any", 100, &key);
    let two = reg.join("a/a-2.0.0");
    fs::create_dir_all(&two).unwrap();
    fs::copy(&pkg, two.join("a-2.0.0.tar.gz")).unwrap();
    fs::copy(
        format!("{}.minisig", pkg.display()),
        two.join("a-2.0.0.tar.gz.minisig"),
    )
    .unwrap();
    let srv = server::start(reg).await;
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let err = r.fetch(&m("a@2.0.0"), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, RegistryError::WrongPackage { .. }), "{err}");
    assert!(cache_listing(&cache).is_empty());
}

#[tokio::test]
async fn a_cut_download_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    let pkg = publish(&reg, "big", "1.0.0", "any", 4 << 20, &key);
    let size = fs::metadata(&pkg).unwrap().len();
    let srv = server::start(reg).await;
    srv.knobs.cut_next.store(true, Ordering::SeqCst);
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    let got = r
        .fetch(&m("big@1.0.0"), &mut |p| seen.push(p.clone()))
        .await
        .unwrap();
    assert_eq!(got.size, size);
    assert_eq!(got.sha256, sha256(&pkg));
    assert_eq!(fs::read(&got.path).unwrap(), fs::read(&pkg).unwrap());
    let sent = srv.knobs.package_bytes_sent.load(Ordering::SeqCst);
    let again = sent - size;
    assert!(again <= size / 100, "fetched {again} bytes again of {size}");
    let resumed = seen.iter().map(|p| p.resumed_from).max().unwrap();
    assert!(resumed >= size / 2 - size / 100, "resumed from {resumed}");
    assert_eq!(seen.last().unwrap().downloaded, size);
    assert_eq!(
        cache_listing(&cache).len(),
        2,
        "{:?}",
        cache_listing(&cache)
    );
}

#[tokio::test]
async fn a_server_ignoring_ranges_gets_a_fresh_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    let pkg = publish(&reg, "big", "1.0.0", "any", 1 << 20, &key);
    let srv = server::start(reg).await;
    srv.knobs.cut_next.store(true, Ordering::SeqCst);
    srv.knobs.ignore_range.store(true, Ordering::SeqCst);
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let got = r.fetch(&m("big@1.0.0"), &mut |_| {}).await.unwrap();
    assert_eq!(got.sha256, sha256(&pkg));
    assert_eq!(fs::read(&got.path).unwrap(), fs::read(&pkg).unwrap());
}

#[tokio::test]
async fn a_leftover_part_file_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, cache) = (tmp.path().join("reg"), tmp.path().join("cache"));
    let key = generate_keypair().unwrap();
    let pkg = publish(&reg, "big", "1.0.0", "any", 1 << 20, &key);
    let bytes = fs::read(&pkg).unwrap();
    fs::create_dir_all(&cache).unwrap();
    fs::write(
        cache.join("big-1.0.0.tar.gz.part"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let srv = server::start(reg).await;
    let r = Registry::new(config(srv.url(), &cache, &key)).unwrap();
    let got = r.fetch(&m("big@1.0.0"), &mut |_| {}).await.unwrap();
    assert_eq!(got.sha256, sha256(&pkg));
    let sent = srv.knobs.package_bytes_sent.load(Ordering::SeqCst);
    assert_eq!(sent, (bytes.len() - bytes.len() / 3) as u64);
}
