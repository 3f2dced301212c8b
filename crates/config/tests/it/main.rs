//! Integration tests of reeve-config: loading directories, ordering, and robustness.

mod fuzz;
mod load;
mod order;

use reeve_config::{ServiceDef, parse_service};
use std::path::Path;

/// Parses a service named `name` from TOML, panicking on errors.
pub fn svc(name: &str, toml: &str) -> ServiceDef {
    let file = format!("/etc/reeve/services/{name}.toml");
    match parse_service(name, Path::new(&file), toml) {
        Ok(d) => d,
        Err(e) => panic!("{name}: {e:#?}"),
    }
}
