//! What the hub does with what a node sent, inside the transaction that stored it:
//! replies (and `exec.stream` chunks), `hello` facts, forwarded events, node-to-node
//! requests (re-sequenced into the target's stream), and a node's leave.

use crate::db::{self, NewEvent, NewMessage, fleet};
use crate::{now_ms, output};
use reeve_delivery::envelope::{Payload, StreamId, reopen};
use reeve_delivery::lane::{Lane, lane_of};
use std::sync::Arc;

/// Applies what a node sent, in stream order, inside the transaction that stored it; each
/// request is marked done with its effect. Returns the events that were new.
pub(super) fn apply(
    s: &mut reeve_delivery::store::DeliveryStore,
    fw: &Forwarder,
    node: &str,
    ids: Vec<String>,
) -> Result<Applied, reeve_delivery::store::StoreError> {
    let now = now_ms();
    let mut fresh = Vec::new();
    let mut wake = Vec::new();
    for id in ids {
        let Some((env, _)) = s.inbox_get(&id)? else {
            continue;
        };
        // Verified when it arrived (in `from_node`), in this process.
        let Ok(opened) = reopen(&env) else {
            continue;
        };
        let Payload::Request { request, .. } = opened.payload else {
            continue;
        };
        match (&request.in_reply_to, request.method.as_str()) {
            (Some(to), _) => {
                let f = fleet(s);
                let fresh = match output::chunk_number(&request.args) {
                    Some(chunk) => output::record_chunk(f, to, node, chunk, &request.args, now)?,
                    None => {
                        let whole = output::assemble(f, to, request.args.clone())?;
                        let reply = serde_json::to_string(&whole).unwrap_or_default();
                        f.mark_replied(to, node, &reply, now)?
                    }
                };
                // A request one node sent another: the reply goes back to the sender, signed
                // by the hub (the sender's policy trusts the hub's key for replies).
                let sender = f.node_sender(to)?;
                if let Some(origin) = sender.filter(|_| fresh)
                    && f.node_key(&origin)?.is_some()
                {
                    let mut back = reeve_delivery::envelope::Request::new(
                        "hub",
                        &origin,
                        &request.method,
                        serde_json::json!({ "from": node, "reply": request.args }),
                        now.saturating_add(crate::DEFAULT_TTL_MS),
                    );
                    back.in_reply_to = Some(to.clone());
                    if let Ok(auth) = reeve_delivery::envelope::authorize(&back, &fw.key) {
                        fw.forward(s, &back, None, auth, now)?;
                        wake.push(origin);
                    }
                }
            }
            (None, _) if request.to != "hub" => {
                // Node to node, through the hub: the hub sequences it into the target's
                // stream, keeping the sender's own authorization for the target to judge.
                let known = fleet(s).node_key(&request.to)?.is_some();
                match reeve_delivery::envelope::authorization_of(&env) {
                    Some(auth) if known => {
                        fw.forward(s, &request, Some(node), auth, now)?;
                        wake.push(request.to.clone());
                    }
                    _ => {
                        fleet(s).log_error(
                            now,
                            Some(node),
                            "refused",
                            &format!(
                                "{} sent {} to unknown node {:?}",
                                node, request.method, request.to
                            ),
                        )?;
                    }
                }
            }
            (None, "leave") => {
                // The node leaves the fleet: signed by its own key, in its stream's order
                // (after everything it sent before). It closes its link once this is acked.
                let stream = StreamId::new(fw.key.public(), &fw.instance, node, Lane::Ordered);
                crate::removal::remove_in(s, &stream, node, node, now)?;
            }
            (None, "hello") => {
                let facts = serde_json::to_string(&request.args).unwrap_or_default();
                fleet(s).record_facts(node, &facts, now)?;
            }
            (None, "events") => {
                let list = request
                    .args
                    .get("events")
                    .and_then(|e| e.as_array())
                    .cloned()
                    .unwrap_or_default();
                for e in list {
                    if let Some(event) = NewEvent::from_json(&e)
                        && fleet(s).insert_event(node, &event)?
                    {
                        fresh.push(db::event_json(node, &e));
                    }
                }
            }
            (None, "error.log") => {
                let msg = request
                    .args
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string();
                fleet(s).log_error(now, Some(node), "node_error", &msg)?;
            }
            (None, other) => {
                fleet(s).log_error(
                    now,
                    Some(node),
                    "refused",
                    &format!("the hub has no method {other:?}"),
                )?;
            }
        }
        s.complete(&id, None)?;
    }
    Ok(Applied { fresh, wake })
}

/// What [`apply`] did that the caller acts on after the commit.
pub(super) struct Applied {
    /// Events new to the hub (for live streams).
    pub(super) fresh: Vec<serde_json::Value>,
    /// Nodes whose streams got messages.
    pub(super) wake: Vec<String>,
}

/// What the hub needs to sequence forwarded messages inside a writer job.
pub(crate) struct Forwarder {
    pub(crate) key: Arc<reeve_delivery::keys::KeyPair>,
    pub(crate) instance: String,
}

impl Forwarder {
    /// Puts an authorized request in `target`'s stream and records it (once per id), as
    /// sent by `node`, or by the hub itself when `None`.
    fn forward(
        &self,
        s: &mut reeve_delivery::store::DeliveryStore,
        request: &reeve_delivery::envelope::Request,
        node: Option<&str>,
        auth: reeve_delivery::envelope::Authorized,
        now: u64,
    ) -> Result<(), reeve_delivery::store::StoreError> {
        let (target, id, method) = (&request.to, &request.id, &request.method);
        let (expires_at_ms, lane) = (request.expires_at_ms, lane_of(request));
        let fresh = fleet(s).insert_message(&NewMessage {
            id,
            node: target,
            lane,
            seq: None,
            method,
            sender: node.unwrap_or("hub"),
            from_node: node.is_some(),
            created_ms: now,
            expires_at_ms,
        })?;
        if !fresh {
            return Ok(());
        }
        let stream = StreamId::new(self.key.public(), &self.instance, target, lane);
        let key = self.key.clone();
        let st = stream.clone();
        let seq = s.enqueue(&stream, id, expires_at_ms, move |seq| {
            reeve_delivery::envelope::seal(
                &reeve_delivery::envelope::Sequenced {
                    stream: st,
                    seq: Some(seq),
                    content: reeve_delivery::envelope::Content::Request { auth },
                },
                &key,
            )
            .unwrap_or_default()
        })?;
        fleet(s).set_message_seq(id, seq)?;
        Ok(())
    }
}
