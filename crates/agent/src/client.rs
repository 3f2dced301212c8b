//! The CLI's side of the local API: HTTP/1.1 requests over the agent's Unix socket.

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reeve_proto::api::ApiError;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A client of one agent's control socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

/// Percent-encodes a path segment (service names may contain `/`).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    /// A client for the socket at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.request_with(method, path, None).await
    }

    async fn request_with(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot reach the agent at {} (is `reeve agent` running? --socket / REEVE_SOCKET choose another)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the agent failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "reeve-agent")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(
                body.unwrap_or_default(),
            )))
            .context("cannot build the request")?;
        let resp = sender
            .send_request(req)
            .await
            .context("the agent did not answer")?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let msg = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(resp)
    }

    async fn json<T: DeserializeOwned>(&self, method: hyper::Method, path: &str) -> Result<T> {
        let resp = self.request(method, path).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .context("cannot read the agent's answer")?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| anyhow!("unexpected answer from the agent: {e}"))
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(hyper::Method::GET, path).await
    }

    /// POST without a body, expecting a JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(hyper::Method::POST, path).await
    }

    /// POST a JSON body, expecting a JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body).context("cannot encode the request")?;
        let resp = self
            .request_with(hyper::Method::POST, path, Some(bytes))
            .await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .context("cannot read the agent's answer")?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| anyhow!("unexpected answer from the agent: {e}"))
    }

    /// POST without a body and read a streaming answer (see [`Self::stream`]).
    pub async fn post_stream(&self, path: &str, each: impl FnMut(&[u8]) -> bool) -> Result<()> {
        let resp = self.request_with(hyper::Method::POST, path, None).await?;
        drain(resp, each).await
    }

    /// GET a streaming answer, calling `each` with every chunk until the stream ends or
    /// `each` returns false.
    pub async fn stream(&self, path: &str, each: impl FnMut(&[u8]) -> bool) -> Result<()> {
        let resp = self.request(hyper::Method::GET, path).await?;
        drain(resp, each).await
    }
}

/// Hands every chunk of a streaming answer to `each` until the end or until it says stop.
async fn drain(
    resp: hyper::Response<hyper::body::Incoming>,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<()> {
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the agent's stream broke")?;
        if let Some(data) = frame.data_ref()
            && !each(data)
        {
            break;
        }
    }
    Ok(())
}
