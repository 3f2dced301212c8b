//! `reeve agent init|join`: the node's identity and its enrolment at a hub.

use anyhow::Result;
use reeve_agent::node::{enrol, identity};
use std::path::Path;
use std::process::ExitCode;

/// `reeve agent init`.
pub fn init(data_dir: &Path, name: &str, force: bool) -> Result<ExitCode> {
    let file = identity::NodeFile {
        name: name.into(),
        hub_url: None,
        hub_key: None,
        hub_key_previous: None,
        hub_key_previous_until_ms: None,
        proxy: None,
        keepalive_min: None,
    };
    let key = identity::init(data_dir, &file, force)?;
    println!(
        "node {name} initialised in {} (key {}); next: reeve agent join --token …",
        data_dir.display(),
        key.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

/// `reeve agent join`.
pub async fn join(
    data_dir: &Path,
    url: Option<String>,
    token: &str,
    name: Option<String>,
    proxy: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let f = enrol::join(
        data_dir,
        url.as_deref(),
        token,
        name.as_deref(),
        proxy.as_deref(),
    )
    .await?;
    let url = f.hub_url.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"node": f.name, "hub_url": url, "hub_key": f.hub_key})
        );
    } else {
        println!(
            "node {} joined the hub at {url}; (re)start the agent to connect",
            f.name
        );
    }
    Ok(ExitCode::SUCCESS)
}
