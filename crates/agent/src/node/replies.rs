//! Requests this node sends to other nodes (through the hub) and the replies that come
//! back. What the node asked for is remembered (`node_sent` in the delivery store, written
//! in the transaction that queues the request); a reply — a request from the hub's key
//! with `in_reply_to` naming one of ours — is handled by its reply method, confined to the
//! node's `replies/` folder: `console` (an event, and `replies/<id>.json`), `file` and
//! `file.append` (`replies/<directory>/<file_name>`, relative paths only).

use super::Node;
use crate::events::event;
use anyhow::{Context, Result, bail};
use reeve_delivery::envelope::{Content, ReplyTo, Request, Sequenced, authorize, seal};
use reeve_delivery::store::StoreError;
use reeve_proto::event::EventKind;
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};
use std::io::Write;

/// The table of what this node asked others for.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS node_sent (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, method TEXT NOT NULL, reply TEXT, created_ms INTEGER NOT NULL);";

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { what, source }
}

/// Is this a reply method?
pub fn is_reply_method(m: &str) -> bool {
    matches!(m, "console" | "file" | "file.append")
}

impl Node {
    /// Sends `request` (from this node, to another node) through the hub: durable in the
    /// outbox when this returns.
    pub async fn send_request(&self, mut request: Request) -> Result<String> {
        request.from = self.name().to_string();
        if request.to == self.name() || request.to == "hub" {
            bail!("a request must name another node (to: {:?})", request.to);
        }
        let own = self.own();
        let key = own.key.clone();
        let auth = authorize(&request, &key)?;
        let stream = own.stream();
        let reply = request
            .reply
            .as_ref()
            .map(|r| serde_json::to_string(r).unwrap_or_default());
        let (id, to, method, exp) = (
            request.id.clone(),
            request.to.clone(),
            request.method.clone(),
            request.expires_at_ms,
        );
        let now = super::local_ms();
        self.writer
            .run(move |s| {
                s.conn()
                    .execute(
                        "INSERT INTO node_sent (id, target, method, reply, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, to, method, reply, now as i64],
                    )
                    .map_err(sql("remember request"))?;
                let st = stream.clone();
                s.enqueue(&stream, &id, exp, move |seq| {
                    seal(&Sequenced { stream: st, seq: Some(seq), content: Content::Request { auth } }, &key)
                        .unwrap_or_default()
                })
            })
            .await?;
        self.out_wake.notify_one();
        Ok(request.id)
    }

    /// Handles a reply the hub brought back for one of our requests.
    pub(crate) async fn take_reply(&self, reply: &Request) -> Result<()> {
        let Some(to) = reply.in_reply_to.clone() else {
            return Ok(());
        };
        let t2 = to.clone();
        let asked: Option<Option<String>> = self
            .writer
            .run(move |s| {
                s.conn()
                    .query_row(
                        "SELECT reply FROM node_sent WHERE id = ?1",
                        params![t2],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql("read request"))
            })
            .await?;
        let Some(asked) = asked else {
            bail!("a reply to {to}, which this node never sent");
        };
        let reply_to: ReplyTo =
            asked
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or(ReplyTo {
                    method: "console".into(),
                    directory: None,
                    file_name: None,
                });
        let from = reply
            .args
            .get("from")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let body = reply.args.get("reply").cloned().unwrap_or(Value::Null);
        let dir = self.ctx.data_dir.join("replies");
        match reply_to.method.as_str() {
            "file" | "file.append" => {
                let rel = std::path::Path::new(reply_to.directory.as_deref().unwrap_or("."))
                    .join(reply_to.file_name.as_deref().unwrap_or(&to));
                let clean: std::path::PathBuf = rel
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .collect();
                if !super::methods::confined(&clean) {
                    bail!(
                        "reply path {} is not a relative path inside the replies folder",
                        rel.display()
                    );
                }
                let path = dir.join(&clean);
                std::fs::create_dir_all(path.parent().context("path")?)?;
                let text = body
                    .get("stdout")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{body}\n"));
                // `file` holds one result: it starts afresh with a result's first part
                // (a whole reply, or an `exec.stream`'s first chunk) and the other parts
                // follow it.
                let first_part = match body.get("chunk").and_then(Value::as_u64) {
                    Some(n) => n == 1,
                    None => body.get("chunks").and_then(Value::as_u64).unwrap_or(0) == 0,
                };
                let fresh = reply_to.method == "file" && first_part;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(!fresh)
                    .truncate(fresh)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                f.write_all(text.as_bytes())?;
            }
            _ => {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(
                    dir.join(format!("{to}.json")),
                    format!("{}\n", json!({"from": from, "reply": body})),
                )?;
            }
        }
        let status = body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let ev = event(
            None,
            EventKind::Message,
            "key:hub",
            format!("reply to {to} from {from}: {status}"),
            json!({"in_reply_to": to, "from": from, "reply": body}),
        );
        self.ctx.log.record(ev).await
    }
}
