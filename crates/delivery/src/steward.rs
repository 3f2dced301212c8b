//! Steward compatibility (DESIGN.md §5): Steward's message JSON — an array of objects with
//! `toNode`/`toNodes`, `method` such as `REQCliCommand`, `data`, `replyMethod`,
//! `ACKTimeout`, `retries`, `methodTimeout`, `directory`, `fileName` — turned into reeve
//! requests, one per receiving node. A Steward message's `ACKTimeout × (retries + 1)`
//! seconds becomes its expiry. Absolute or escaping `directory` values are refused.

use crate::envelope::{ReplyTo, Request};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    to_node: Option<String>,
    #[serde(default)]
    to_nodes: Option<Vec<String>>,
    #[serde(default)]
    data: Vec<String>,
    method: String,
    #[serde(default)]
    reply_method: Option<String>,
    #[serde(default, rename = "ACKTimeout")]
    ack_timeout: Option<u64>,
    #[serde(default)]
    retries: Option<u64>,
    #[serde(default)]
    method_timeout: Option<u64>,
    #[serde(default)]
    directory: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    operation: Option<serde_json::Value>,
    // Accepted and ignored: reeve's replies are retried like every message.
    #[serde(default)]
    #[allow(dead_code)]
    reply_ack_timeout: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    reply_retries: Option<u64>,
}

/// A request converted from Steward's format.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The request (Steward's `REQn…` methods set its `unordered`: they run outside the
    /// stream's order).
    pub request: Request,
}

/// Why a Steward message was refused (every problem, by message index).
#[derive(Debug, thiserror::Error)]
#[error("invalid Steward message: {}", .0.join("; "))]
pub struct StewardError(pub Vec<String>);

/// Default seconds for `ACKTimeout` and `retries` when a message omits them.
pub const DEFAULT_ACK_TIMEOUT_S: u64 = 5;
/// See [`DEFAULT_ACK_TIMEOUT_S`].
pub const DEFAULT_RETRIES: u64 = 3;

fn method(m: &str) -> Option<(&'static str, bool)> {
    Some(match m {
        "REQCliCommand" => ("exec", false),
        "REQnCliCommand" => ("exec", true),
        "REQCliCommandCont" | "REQnCliCommandCont" => ("exec.stream", m.starts_with("REQn")),
        "REQTailFile" => ("tail", false),
        "REQHttpGet" => ("http.get", false),
        "REQHello" => ("hello", true),
        "REQErrorLog" => ("error.log", false),
        "REQOpCommand" => ("ops.ps", false),
        _ => return None,
    })
}

fn reply_method(m: &str) -> Option<&'static str> {
    Some(match m {
        "REQToConsole" => "console",
        "REQToFile" => "file",
        "REQToFileAppend" => "file.append",
        _ => return None,
    })
}

fn relative_ok(dir: &str) -> bool {
    let p = std::path::Path::new(dir);
    !dir.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Converts Steward's message JSON (an array, or one object) sent by `from` at `now_ms`.
pub fn convert(json: &str, from: &str, now_ms: u64) -> Result<Vec<Converted>, StewardError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| StewardError(vec![e.to_string()]))?;
    let items = match value {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let raw: Raw = match serde_json::from_value(item) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("message {i}: {e}"));
                continue;
            }
        };
        let Some((m, unordered)) = method(&raw.method) else {
            errors.push(format!("message {i}: unknown method {:?}", raw.method));
            continue;
        };
        let mut nodes = raw.to_nodes.clone().unwrap_or_default();
        nodes.extend(raw.to_node.clone());
        if nodes.is_empty() {
            errors.push(format!("message {i}: no toNode or toNodes"));
            continue;
        }
        if let Some(d) = &raw.directory
            && !relative_ok(d)
        {
            errors.push(format!(
                "message {i}: directory {d:?} must be a relative path inside the data folder"
            ));
            continue;
        }
        if let Some(f) = &raw.file_name
            && (f.contains('/') || f == ".." || f.is_empty())
        {
            errors.push(format!(
                "message {i}: fileName {f:?} must be a plain file name"
            ));
            continue;
        }
        let reply = match raw.reply_method.as_deref() {
            None => None,
            Some(r) => match reply_method(r) {
                Some(rm) => Some(ReplyTo {
                    method: rm.into(),
                    directory: raw.directory.clone(),
                    file_name: raw.file_name.clone(),
                }),
                None => {
                    errors.push(format!("message {i}: unknown replyMethod {r:?}"));
                    continue;
                }
            },
        };
        let args = match m {
            "exec" | "exec.stream" => serde_json::json!({ "argv": raw.data }),
            "tail" => serde_json::json!({ "file": raw.data.first() }),
            "http.get" => serde_json::json!({ "url": raw.data.first() }),
            "ops.ps" => serde_json::json!({ "operation": raw.operation }),
            _ => serde_json::json!({ "data": raw.data }),
        };
        let ack = raw.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT_S);
        let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
        let expires = now_ms.saturating_add(
            ack.saturating_mul(retries.saturating_add(1))
                .saturating_mul(1000),
        );
        for node in nodes {
            let mut r = Request::new(from, &node, m, args.clone(), expires);
            r.reply = reply.clone();
            r.method_timeout_ms = raw.method_timeout.map(|s| s.saturating_mul(1000));
            r.unordered = unordered;
            out.push(Converted { request: r });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(StewardError(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_converts() {
        let json = r#"[{"directory":"cli_command__result","fileName":"some-file-name.result",
            "toNode":"ship1","data":["bash","-c","sleep 5 & tree ./"],"method":"REQCliCommand",
            "replyMethod":"REQToFileAppend","ACKTimeout":5,"retries":3,"replyACKTimeout":5,
            "replyRetries":3,"methodTimeout":10}]"#;
        let out = convert(json, "central", 1_000).expect("convert");
        assert_eq!(out.len(), 1);
        let r = &out[0].request;
        assert_eq!((r.to.as_str(), r.method.as_str()), ("ship1", "exec"));
        assert_eq!(r.args["argv"][2], "sleep 5 & tree ./");
        assert_eq!(r.expires_at_ms, 1_000 + 5 * 4 * 1000);
        assert_eq!(r.method_timeout_ms, Some(10_000));
        let reply = r.reply.as_ref().expect("reply");
        assert_eq!(reply.method, "file.append");
        assert_eq!(reply.directory.as_deref(), Some("cli_command__result"));
        assert!(!out[0].request.unordered);
    }

    #[test]
    fn fan_out_unordered_and_refusals() {
        let out = convert(
            r#"{"toNodes":["a","b"],"method":"REQnCliCommand","data":["true"]}"#,
            "c",
            0,
        )
        .expect("convert");
        assert_eq!(
            out.iter()
                .map(|c| c.request.to.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert!(out.iter().all(|c| c.request.unordered));
        let err = convert(
            r#"[{"toNode":"a","method":"REQCliCommand","directory":"/etc"},
                {"toNode":"a","method":"REQCliCommand","directory":"../x"},
                {"toNode":"a","method":"REQNope"},
                {"method":"REQCliCommand"}]"#,
            "c",
            0,
        )
        .expect_err("refused");
        assert_eq!(err.0.len(), 4, "{err}");
    }
}
