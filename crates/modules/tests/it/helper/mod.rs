//! Fixtures shared by the integration tests: hand-made tarballs and module directories.

#![allow(dead_code)]

pub mod server;
pub mod tarball;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes a small valid module `name@version` (platform any) into `dir`.
pub fn write_module(dir: &Path, name: &str, version: &str) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(
        dir.join("module.toml"),
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\n\n[hooks]\ninstall = \"bin/install\"\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("bin/install"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(dir.join("bin/install"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("README"), "hello\n").unwrap();
}

/// Names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
