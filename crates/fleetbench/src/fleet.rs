//! The real processes of a run: `reeve hub` on a free loopback port with its own data
//! directory, operators made with `reeve key create` and `reeve hub operator add`, real
//! `reeve agent`s joined with `reeve agent join`, and a persistent HTTPS client for the
//! hub's API.

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reeve_delivery::envelope::{Authorized, Request, authorize};
use reeve_delivery::keys::{KeyPair, PublicKey};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binaries under test are.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `reeve`.
    pub reeve: PathBuf,
    /// `reeve-buddy` (for real agents).
    pub buddy: PathBuf,
}

/// Runs `reeve ARGS…` with extra environment; returns stdout (fails on a non-zero exit).
pub fn reeve(bins: &Bins, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    let mut c = Command::new(&bins.reeve);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .with_context(|| format!("cannot run {}", bins.reeve.display()))?;
    if !out.status.success() {
        bail!(
            "reeve {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running `reeve hub`.
pub struct HubProc {
    child: Child,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its TLS listener.
    pub addr: std::net::SocketAddr,
    /// Its key (nodes pin it).
    pub key: PublicKey,
}

impl HubProc {
    /// Starts `reeve hub` in `dir` (data in `dir/hub`, log in `dir/hub.log`), with
    /// `LD_PRELOAD` set to `preload` when given, and waits until it listens.
    pub fn start(bins: &Bins, dir: &Path, preload: Option<&Path>) -> Result<Self> {
        let data_dir = dir.join("hub");
        std::fs::create_dir_all(&data_dir)?;
        let log_path = dir.join("hub.log");
        let log = std::fs::File::create(&log_path)?;
        let mut c = Command::new(&bins.reeve);
        c.args(["hub", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(p) = preload {
            c.env("LD_PRELOAD", p);
        }
        let child = c.spawn().context("cannot start reeve hub")?;
        let started = Instant::now();
        let addr = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = text.split("listening on https://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse::<std::net::SocketAddr>()
                    .context("the hub's address")?;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the hub did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let key_text = std::fs::read_to_string(data_dir.join("hub.key")).context("hub.key")?;
        let line = key_text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        let key = KeyPair::from_secret_base64(line.trim())
            .context("the hub's key")?
            .public();
        Ok(Self {
            child,
            data_dir,
            url: format!("https://{addr}"),
            addr,
            key,
        })
    }

    /// Its TLS certificate's fingerprint, for the CLI's `REEVE_HUB_CERT` (the CLI pins the
    /// certificate; each scenario's hub makes a new one, possibly on a port used before).
    pub fn cert_pin(&self) -> Result<String> {
        let der = reeve_hub::identity::read_tls_cert(&self.data_dir)?;
        Ok(reeve_agent::node::cert_pin::CertFingerprint::of(&der).to_string())
    }

    /// The hub's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates operator `name` (admin) with a key of their own.
    pub fn operator(&self, bins: &Bins, name: &str) -> Result<Operator> {
        let keys = self.data_dir.with_file_name("keys");
        std::fs::create_dir_all(&keys)?;
        let kd = keys.to_str().context("utf-8 path")?;
        reeve(bins, &["key", "create", name, "--out-dir", kd], &[])?;
        let pubf = keys.join(format!("{name}.pub"));
        let token = reeve(
            bins,
            &[
                "hub",
                "operator",
                "add",
                name,
                "--role",
                "admin",
                "--key",
                pubf.to_str().context("utf-8 path")?,
            ],
            &[("REEVE_HUB_DATA_DIR", &self.data_dir)],
        )?;
        let key_file = keys.join(format!("{name}.key"));
        let text = std::fs::read_to_string(&key_file)?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        Ok(Operator {
            name: name.into(),
            token: token.lines().last().unwrap_or("").trim().to_string(),
            key: KeyPair::from_secret_base64(line.trim()).context("operator key")?,
            key_file,
        })
    }

    /// A one-time join token (the hub's own code on its data directory).
    pub fn token(&self) -> Result<String> {
        let t = reeve_hub::admin::create_token(&self.data_dir, &self.url, 3_600_000)?;
        Ok(t.encode())
    }

    /// Stops the hub (SIGKILL; nothing of it is needed after a scenario).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An operator: API token and signing key.
pub struct Operator {
    /// Name (the requests' `from`).
    pub name: String,
    /// API token.
    pub token: String,
    /// Secret key.
    pub key: KeyPair,
    /// The secret key's file (for `reeve send --key`).
    pub key_file: PathBuf,
}

impl Operator {
    /// A signed request for `node`.
    pub fn request(&self, node: &str, method: &str, args: Value) -> Result<(String, Authorized)> {
        let r = Request::new(
            &self.name,
            node,
            method,
            args,
            crate::util::wall_ms() + 24 * 3600 * 1000,
        );
        Ok((r.id.clone(), authorize(&r, &self.key)?))
    }

    /// A signed request with opaque `data`.
    pub fn request_with_data(
        &self,
        node: &str,
        method: &str,
        args: Value,
        data: String,
    ) -> Result<(String, Authorized)> {
        let mut r = Request::new(
            &self.name,
            node,
            method,
            args,
            crate::util::wall_ms() + 24 * 3600 * 1000,
        );
        r.data = Some(data);
        Ok((r.id.clone(), authorize(&r, &self.key)?))
    }
}

/// One persistent HTTP/1.1 connection over TLS to the hub's API.
pub struct Api {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    token: Option<String>,
}

impl Api {
    /// Connects (TLS with any certificate: the hub's key is what nodes pin).
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self> {
        let tls = reeve_agent::node::transport::tls(url, None).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(conn);
        let (_, host) = reeve_agent::node::transport::host_port(url)?;
        Ok(Self {
            sender,
            host,
            token: token.map(str::to_string),
        })
    }

    /// One call; returns the status and the JSON body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, body) = self.raw(method, path, bytes.into_bytes()).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// One call with a raw body; returns the status and the raw answer.
    pub async fn raw(&mut self, method: &str, path: &str, body: Vec<u8>) -> Result<(u16, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.host.as_str())
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await.context("API connection")?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `POST /api/v1/messages` with these signed requests; fails unless all are accepted.
    pub async fn send(&mut self, requests: &[Authorized]) -> Result<()> {
        let body = serde_json::to_vec(&json!({ "requests": requests }))?;
        let (status, answer) = self.raw("POST", "/api/v1/messages", body).await?;
        if status != 202 {
            bail!(
                "POST /api/v1/messages: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }

    /// Is node `name` connected, as the hub sees it?
    pub async fn online(&mut self, name: &str) -> Result<bool> {
        let (_, v) = self
            .call("GET", &format!("/api/v1/nodes/{name}"), None)
            .await?;
        Ok(v["online"] == true)
    }

    /// Waits until node `name` is connected.
    pub async fn wait_online(&mut self, name: &str, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while !self.online(name).await? {
            if started.elapsed() > limit {
                bail!("{name} did not connect within {:.0} s", limit.as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Messages in `state` (at most `limit`, at most 1000; newest first).
    pub async fn messages(&mut self, state: &str, limit: usize) -> Result<Vec<Value>> {
        let (status, v) = self
            .call(
                "GET",
                &format!("/api/v1/messages?state={state}&limit={limit}"),
                None,
            )
            .await?;
        if status != 200 {
            bail!("GET /api/v1/messages: {status} {v}");
        }
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// A real `reeve agent` joined to the hub.
pub struct AgentProc {
    child: Option<Child>,
    /// Its name.
    pub name: String,
    dir: PathBuf,
}

impl AgentProc {
    /// Joins `name` through `url` (the hub, or a proxy in front of it) with a fresh token
    /// and a policy that lets `exec_for` call `exec`, then starts `reeve agent`.
    pub fn start(
        bins: &Bins,
        hub: &HubProc,
        dir: &Path,
        name: &str,
        url: &str,
        exec_for: Option<&Operator>,
    ) -> Result<Self> {
        let data = dir.join("data");
        std::fs::create_dir_all(dir.join("services"))?;
        std::fs::create_dir_all(dir.join("rt"))?;
        let token = hub.token()?;
        let dd = data.to_str().context("utf-8 path")?;
        reeve(
            bins,
            &[
                "agent",
                "join",
                url,
                "--data-dir",
                dd,
                "--token",
                &token,
                "--name",
                name,
            ],
            &[],
        )?;
        if let Some(op) = exec_for {
            let policy = format!(
                "[keys]\n{} = \"{}\"\n[methods]\n\"exec\" = [\"{}\"]\n",
                op.name,
                op.key.public().to_base64(),
                op.name
            );
            std::fs::write(data.join("policy.toml"), policy)?;
        }
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(&bins.reeve)
            .arg("agent")
            .arg("--allow-root")
            .arg("--data-dir")
            .arg(&data)
            .arg("--services-dir")
            .arg(dir.join("services"))
            .arg("--buddy-path")
            .arg(&bins.buddy)
            .env("XDG_RUNTIME_DIR", dir.join("rt"))
            .env("REEVE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start reeve agent")?;
        Ok(Self {
            child: Some(child),
            name: name.into(),
            dir: dir.to_path_buf(),
        })
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
