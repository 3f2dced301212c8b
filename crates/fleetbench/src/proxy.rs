//! A TCP forwarder that delays every byte by a fixed time in each direction (order kept,
//! no bandwidth limit: a long, fat link such as a satellite hop) and counts the bytes it
//! carries. Nodes reach the hub through it by using its address as the hub URL (the TLS
//! certificate is not what they trust; the pinned hub key is).

use anyhow::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Byte counters of a proxy (TCP payload, i.e. TLS records as sent).
#[derive(Default, Debug)]
pub struct Counters {
    /// Node → hub.
    pub up: AtomicU64,
    /// Hub → node.
    pub down: AtomicU64,
    /// Connections accepted.
    pub conns: AtomicU64,
}

impl Counters {
    /// Both directions.
    pub fn total(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
}

/// A running proxy.
pub struct Proxy {
    /// Where nodes connect.
    pub addr: SocketAddr,
    /// What it carried.
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// `https://ADDR`, the URL nodes use to reach the hub through this proxy.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy on a runtime of `pool` (so that nothing the caller does blocks it).
pub async fn start_on(
    pool: &crate::pool::Pool,
    target: SocketAddr,
    delay: Duration,
) -> Result<Proxy> {
    pool.spawn(start(target, delay))
        .await
        .map_err(|e| anyhow::anyhow!("proxy task: {e}"))?
}

/// Starts a proxy to `target` that delays each direction by `delay`, on the current
/// runtime.
pub async fn start(target: SocketAddr, delay: Duration) -> Result<Proxy> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((down, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let _ = down.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let c2 = c.clone();
                let a = tokio::spawn(pump(dr, uw, delay, move |n| {
                    c2.up.fetch_add(n, Ordering::Relaxed);
                }));
                pump(ur, dw, delay, move |n| {
                    c.down.fetch_add(n, Ordering::Relaxed);
                })
                .await;
                a.abort();
            });
        }
    });
    Ok(Proxy {
        addr,
        counters,
        task,
    })
}

/// Copies `r` to `w`, each chunk written `delay` after it was read.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    delay: Duration,
    count: impl Fn(u64) + Send + 'static,
) {
    if delay.is_zero() {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count(n as u64);
                    if w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = w.shutdown().await;
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count(n as u64);
                if tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_each_direction_and_counts() -> Result<()> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let target = echo.local_addr()?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = echo.accept().await {
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                }
            }
        });
        let p = start(target, Duration::from_millis(100)).await?;
        let mut s = TcpStream::connect(p.addr).await?;
        let t = std::time::Instant::now();
        s.write_all(b"hello").await?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await?;
        let rtt = t.elapsed();
        assert_eq!(&b, b"hello");
        assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
        assert!(rtt < Duration::from_millis(600), "{rtt:?}");
        assert_eq!(p.counters.total(), 10);
        Ok(())
    }
}
