//! The control socket speaks two languages. HTTP (the local API) is the usual one; a
//! connection whose first byte is `[` or `{` is Steward's message JSON instead (DESIGN.md §5),
//! so `nc -U <socket> < msg.json` works: the messages are converted (`toNode`/`toNodes`,
//! `REQCliCommand`, `replyMethod`, `ACKTimeout`, `retries`, `methodTimeout`, `directory`,
//! `fileName`), signed with this node's key and sent through the hub; the answer is one JSON
//! line with the ids, or the reasons they were refused. Replies come back to `replies/` in
//! the data directory (see `node::replies`).

use crate::node::Node;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Largest Steward input accepted.
const MAX_INPUT: u64 = 1 << 20;

/// The control socket's listener as axum sees it: HTTP connections only.
pub struct HttpOnly {
    rx: mpsc::Receiver<(UnixStream, tokio::net::unix::SocketAddr)>,
    local: tokio::net::unix::SocketAddr,
}

/// Splits the control socket: Steward JSON is handled here, HTTP goes to axum.
pub fn split(listener: UnixListener, node: Option<Arc<Node>>) -> std::io::Result<HttpOnly> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((stream, addr)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            let (tx, node) = (tx.clone(), node.clone());
            // Each connection is sniffed on its own task, so a silent client blocks nobody.
            tokio::spawn(async move {
                match first_byte(&stream).await {
                    Some(b'[') | Some(b'{') => steward(stream, node).await,
                    Some(_) => {
                        let _ = tx.send((stream, addr)).await;
                    }
                    None => {}
                }
            });
        }
    });
    Ok(HttpOnly { rx, local })
}

async fn first_byte(stream: &UnixStream) -> Option<u8> {
    use std::os::fd::AsFd;
    let wait = async {
        loop {
            stream.readable().await.ok()?;
            let mut b = [0u8; 1];
            match rustix::net::recv(stream.as_fd(), &mut b, rustix::net::RecvFlags::PEEK) {
                Ok((0, _)) => return None,
                Ok(_) => return Some(b[0]),
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .ok()
        .flatten()
}

async fn steward(mut stream: UnixStream, node: Option<Arc<Node>>) {
    let answer = match read_and_send(&mut stream, node).await {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    let _ = stream.write_all(format!("{answer}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_and_send(
    stream: &mut UnixStream,
    node: Option<Arc<Node>>,
) -> anyhow::Result<serde_json::Value> {
    let mut text = String::new();
    let mut limited = stream.take(MAX_INPUT + 1);
    let read = limited.read_to_string(&mut text);
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .map_err(|_| {
            anyhow::anyhow!("timed out reading the messages (close the write side when done)")
        })??;
    if text.len() as u64 > MAX_INPUT {
        anyhow::bail!("more than {MAX_INPUT} bytes of messages");
    }
    let Some(node) = node else {
        anyhow::bail!(
            "this agent has not joined a hub (reeve agent join): it cannot send messages"
        );
    };
    // A single object is accepted too.
    let text = if text.trim_start().starts_with('{') {
        format!("[{text}]")
    } else {
        text
    };
    let converted = reeve_delivery::steward::convert(&text, node.name(), node.now())?;
    let mut accepted = Vec::new();
    for c in converted {
        let (to, method) = (c.request.to.clone(), c.request.method.clone());
        let id = node.send_request(c.request).await?;
        accepted
            .push(serde_json::json!({ "id": id, "to": to, "method": method, "state": "accepted" }));
    }
    Ok(serde_json::json!({ "accepted": accepted }))
}

impl axum::serve::Listener for HttpOnly {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends while the agent runs.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local.clone())
    }
}
