//! The NATS side of the round-trip comparison: a `nats-server` we start on a free loopback
//! port, one connection that answers requests (the responder) and one that asks (the
//! requester), speaking NATS's text protocol directly (`CONNECT`, `SUB`, `PUB` with a reply
//! subject, `MSG`). A minimal client adds the least possible overhead, so this is NATS's
//! best case: the server's own request/reply round trip.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A running `nats-server`.
pub struct Server {
    child: Child,
    /// Its client port.
    pub port: u16,
    /// Its version line.
    pub version: String,
}

impl Server {
    /// Starts `bin` on a free port and waits until it accepts connections.
    pub async fn start(bin: &Path) -> Result<Self> {
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let port = crate::util::free_port()?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let s = Self {
            child,
            port,
            version,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nats-server did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client connection.
struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// A message delivered to a subscription.
struct Msg {
    reply: Option<String>,
    payload: Vec<u8>,
}

impl Conn {
    async fn connect(port: u16) -> Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Self {
            r: BufReader::new(r),
            w,
        };
        let mut info = String::new();
        c.r.read_line(&mut info).await?;
        if !info.starts_with("INFO") {
            bail!("not a NATS server: {info}");
        }
        c.w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n")
            .await?;
        // Wait for the PONG: the connection is registered.
        loop {
            let mut l = String::new();
            if c.r.read_line(&mut l).await? == 0 {
                bail!("NATS closed the connection");
            }
            if l.starts_with("PONG") {
                return Ok(c);
            }
            if l.starts_with("-ERR") {
                bail!("NATS: {l}");
            }
        }
    }

    /// Next `MSG` (answers server `PING`s on the way).
    async fn next_msg(&mut self) -> Result<Msg> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await? == 0 {
                bail!("NATS closed the connection");
            }
            let mut f = line.split_whitespace();
            match f.next() {
                Some("MSG") => {
                    let parts: Vec<&str> = f.collect();
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let (reply, n) = match parts.as_slice() {
                        [_, _, reply, n] => (Some(reply.to_string()), n.parse::<usize>()?),
                        [_, _, n] => (None, n.parse::<usize>()?),
                        _ => bail!("bad MSG line {line:?}"),
                    };
                    let mut payload = vec![0u8; n + 2];
                    self.r.read_exact(&mut payload).await?;
                    payload.truncate(n);
                    return Ok(Msg { reply, payload });
                }
                Some("PING") => self.w.write_all(b"PONG\r\n").await?,
                Some("-ERR") => bail!("NATS: {line}"),
                _ => {}
            }
        }
    }
}

fn publish(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let mut b = match reply {
        Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
        None => format!("PUB {subject} {}\r\n", payload.len()),
    }
    .into_bytes();
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\r\n");
    b
}

/// `n` request/reply round trips (after `warmup` unmeasured ones) through the server:
/// requester → server → responder → server → requester, one at a time. Returns each
/// round trip in milliseconds.
pub async fn round_trips(port: u16, warmup: usize, n: usize) -> Result<Vec<f64>> {
    let mut responder = Conn::connect(port).await?;
    responder.w.write_all(b"SUB bench.rr 1\r\nPING\r\n").await?;
    let mut requester = Conn::connect(port).await?;
    requester
        .w
        .write_all(b"SUB _INBOX.bench 1\r\nPING\r\n")
        .await?;
    // Let both subscriptions register (the PINGs above are answered after the SUBs).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let serve = tokio::spawn(async move {
        loop {
            let m = responder.next_msg().await?;
            if let Some(r) = m.reply {
                responder
                    .w
                    .write_all(&publish(&r, None, &m.payload))
                    .await?;
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    });
    let payload = b"true";
    let mut out = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        requester
            .w
            .write_all(&publish("bench.rr", Some("_INBOX.bench"), payload))
            .await?;
        let m = tokio::time::timeout(Duration::from_secs(5), requester.next_msg())
            .await
            .context("no NATS reply within 5 s")??;
        if m.payload != payload {
            bail!("NATS echoed the wrong payload");
        }
        if i >= warmup {
            out.push(crate::util::ms(t.elapsed()));
        }
    }
    serve.abort();
    Ok(out)
}
