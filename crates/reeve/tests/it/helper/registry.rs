//! A module registry for tests: signed packages in Outpost's layout, served over real HTTP
//! by Python's http.server.

use super::{BoundedOutput, wait_for};
use reeve_modules::{pack, sign};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A registry folder served by Python's http.server; killed on drop.
pub struct Registry {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `dir` over HTTP on a free loopback port.
pub fn serve(dir: &Path) -> Registry {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    wait_for(Duration::from_secs(30), "registry server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Registry {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Packs and signs a module directory into the registry layout under `registry`.
pub fn publish(dir: &Path, registry: &Path, name: &str, version: &str, key: &sign::SecretKey) {
    let reg = registry.join(name).join(format!("{name}-{version}"));
    std::fs::create_dir_all(&reg).expect("registry dir");
    let package = pack::pack(dir, &reg).expect("pack");
    let sig = sign::sign_package(&package, key).expect("sign");
    let file = package.file_name().and_then(|n| n.to_str()).expect("name");
    std::fs::write(reg.join(format!("{file}.minisig")), sig).expect("write sig");
}

/// Whether python3 runs (the registry server needs it).
pub fn python3_present() -> bool {
    Command::new("python3")
        .arg("--version")
        .bounded_output()
        .is_ok()
}
