//! `reeve agent join`: enrols this node at a hub with a one-time token and pins the hub's
//! key. The token names the hub key's fingerprint, so the hub is checked before anything is
//! sent, and again in its signed answer: no trust on first use. The token's secret never
//! leaves this machine: the node sends a signature by the key it seeds, bound to the hub,
//! this node's name and key (see `reeve_delivery::join`), so whoever sits between the node
//! and the hub can neither enrol another key with it nor alter the hub's time.

use super::identity::{self, NodeFile};
use super::transport::{self, Call};
use anyhow::{Context, Result, bail};
use reeve_delivery::join::{self, JoinToken};
use reeve_delivery::keys::PublicKey;
use serde_json::json;
use std::path::Path;

fn hub_key_of(body: &serde_json::Value) -> Result<PublicKey> {
    let k = body
        .get("hub_key")
        .and_then(|v| v.as_str())
        .context("the hub's answer has no hub_key")?;
    PublicKey::from_base64(k).context("the hub's key is malformed")
}

fn check(found: &PublicKey, token: &JoinToken, url: &str) -> Result<()> {
    if found.fingerprint() != token.hub {
        bail!(
            "the hub at {url} presented key {}, but the token names {}: not joining (wrong hub, or someone in the middle)",
            found.fingerprint(),
            token.hub
        );
    }
    Ok(())
}

/// Joins the hub named by `token` (or at `url`); returns the saved node settings.
pub async fn join(
    data_dir: &Path,
    url: Option<&str>,
    token: &str,
    name: Option<&str>,
    proxy: Option<&str>,
) -> Result<NodeFile> {
    let token = JoinToken::decode(token)?;
    let url = url.unwrap_or(&token.url).trim_end_matches('/').to_string();
    let existing = identity::load_file(data_dir)?;
    let name = match (name, &existing) {
        (Some(n), _) => n.to_string(),
        (None, Some(f)) => f.name.clone(),
        (None, None) => bail!(
            "give the node a name: reeve agent join --name NAME (or run reeve agent init first)"
        ),
    };
    if !identity::valid_name(&name) {
        bail!(
            "node name {name:?}: use 1-63 lowercase letters, digits, '-', '.', '_' (not \"hub\")"
        );
    }
    let base = NodeFile {
        name: name.clone(),
        hub_url: None,
        hub_key: None,
        hub_key_previous: None,
        hub_key_previous_until_ms: None,
        proxy: proxy.map(str::to_string),
        keepalive_min: existing.as_ref().and_then(|f| f.keepalive_min.clone()),
    };
    if existing.is_none() {
        identity::init(data_dir, &base, false)?;
    }
    let key = identity::ensure_key(data_dir)?;
    let fresh = existing.as_ref().is_none_or(|f| f.hub_key.is_none());
    let get = Call {
        method: "GET",
        path: "/api/v1/health",
        body: None,
        bearer: None,
    };
    let (status, health) = transport::request(&url, proxy, get).await?;
    if status != 200 {
        bail!("{url} does not answer like a reeve hub (HTTP {status})");
    }
    check(&hub_key_of(&health)?, &token, &url)?;
    let node_key = key.public().to_base64();
    let p = token.prove(&name, &node_key)?;
    let body = json!({"node": name, "key": node_key, "token_key": p.token_key, "proof": p.proof});
    let post = Call {
        method: "POST",
        path: "/api/v1/join",
        body: Some(&body),
        bearer: None,
    };
    let (status, answer) = transport::request(&url, proxy, post).await?;
    if status != 200 {
        let why = answer
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        bail!("the hub refused to enrol {name}: {why}");
    }
    let hub_key = hub_key_of(&answer)?;
    check(&hub_key, &token, &url)?;
    let hub_ms = answer
        .get("hub_time_ms")
        .and_then(serde_json::Value::as_u64)
        .context("the hub's answer has no hub_time_ms")?;
    let signature = answer
        .get("signature")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !join::joined_valid(&hub_key, &name, &node_key, hub_ms, signature) {
        bail!(
            "the answer from {url} is not signed by the hub's key {}: not joining (someone in the middle, or a hub older than this agent)",
            token.hub
        );
    }
    let file = NodeFile {
        hub_url: Some(url),
        hub_key: Some(hub_key.to_base64()),
        ..base
    };
    if fresh && let Some(aside) = identity::set_aside_old_delivery(data_dir)? {
        tracing::info!(to = %aside.display(), "moved the message store of an earlier enrolment aside");
    }
    // The hub's time now is the floor of this node's clock from the start, so what it
    // sends before its first handshake is not dated 1970 on a clockless machine.
    let path = data_dir.join("delivery.db");
    let mut store = reeve_delivery::store::DeliveryStore::open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    store.raise_clock_floor(hub_ms)?;
    identity::save(data_dir, &file)?;
    Ok(file)
}
