//! `reeve-modwork http-get`: one HTTP(S) GET for the agent's `http.get` method, in this
//! process so that the HTTP client and TLS (with the system's certificate store) stay out
//! of the agent. At most `max_bytes` of the body are kept; the answer says if it was cut.

use serde_json::{Value, json};
use std::time::Duration;

/// Fetches `url` within `timeout`; `{"done": {http_status, content_type, body, truncated,
/// bytes}}`. A body that is not UTF-8 is returned with replacement characters.
pub fn run(url: &str, max_bytes: usize, timeout: Duration) -> Result<Value, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url}: only http and https URLs"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the worker's runtime: {e}"))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("reeve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut resp = client
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?
        {
            let room = max_bytes.saturating_sub(body.len());
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({"done": {
            "http_status": status,
            "content_type": content_type,
            "bytes": body.len(),
            "truncated": truncated,
            "body": String::from_utf8_lossy(&body),
        }}))
    })
}
