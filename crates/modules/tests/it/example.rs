//! The example module `my-server` (Outpost's quick start) through every library piece:
//! pack, sign, serve from a registry, fetch, unpack, validate a config with a port, render
//! its template, run its configure hook and its declared service, and reach it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reeve_modules::manifest::HookKind;
use reeve_modules::pack::pack;
use reeve_modules::registry::{ProxySetting, Registry, RegistryConfig};
use reeve_modules::sign::{generate_keypair, sign_package};
use reeve_modules::template::render_templates;
use reeve_modules::unpack::{Limits, unpack};
use serde_json::json;

use crate::helper::server;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/my-server")
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test]
async fn my_server_quick_start() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    let folder = reg.join("my-server/my-server-1.0.0");
    std::fs::create_dir_all(&folder).unwrap();
    let key = generate_keypair().unwrap();
    let pkg = pack(&example_dir(), &folder).unwrap();
    assert_eq!(pkg.file_name().unwrap(), "my-server-1.0.0.tar.gz");
    let sig = sign_package(&pkg, &key.secret).unwrap();
    std::fs::write(folder.join("my-server-1.0.0.tar.gz.minisig"), sig).unwrap();

    let srv = server::start(reg).await;
    let mut config = RegistryConfig::new(srv.url(), tmp.path().join("cache"), vec![key.public]);
    config.proxy = ProxySetting::None;
    let registry = Registry::new(config).unwrap();
    let fetched = registry
        .fetch(&"my-server@1.0.0".parse().unwrap(), &mut |_| {})
        .await
        .unwrap();

    let dir = tmp.path().join("modules/my-server@1.0.0");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let manifest = unpack(&fetched.path, &dir, &Limits::default(), &fetched.identity).unwrap();

    // Configure: a bad config is refused, a good one gets its defaults.
    assert!(manifest.validate_config(&json!({"port": "high"})).is_err());
    let port = free_port();
    let config = manifest.validate_config(&json!({"port": port})).unwrap();
    assert_eq!(config["port"], json!(port));
    render_templates(&dir, &manifest, &config).unwrap();
    let hook = &manifest.hooks[&HookKind::Configure];
    let status = Command::new(dir.join(&hook.path))
        .current_dir(&dir)
        .env("REEVE_MODULE_DIR", &dir)
        .status()
        .unwrap();
    assert!(status.success());

    // Start: what the supervisor will do with the declared service.
    let spec = manifest.services["server"].to_file_text();
    assert!(spec.contains("serve.py"), "{spec}");
    let child = Kill(
        Command::new("python3")
            .arg("serve.py")
            .current_dir(&dir)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Some(r) = get(port) {
            break r;
        }
        assert!(Instant::now() < deadline, "my-server did not answer");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(reply.contains("Hello from my-server"), "{reply}");
    drop(child);
}
