//! Health checks: `exec`, `http`, `tcp`, `file_modified_within` and `max_uptime`. Each check
//! runs under its timeout and answers pass (with a short note) or fail (with the reason).
//! A check task exists only while its service runs, so a service without a health check
//! costs no wake-ups at all.

use reeve_config::HealthKind;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs one check. `started_ms` is when the current service process started.
pub async fn check(
    kind: &HealthKind,
    timeout: Duration,
    started_ms: u64,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, run(kind, started_ms)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}", humantime_short(timeout))),
    }
}

async fn run(kind: &HealthKind, started_ms: u64) -> Result<String, String> {
    match kind {
        HealthKind::Exec { argv } => exec(argv).await,
        HealthKind::Http { url, expect_status } => http(url, *expect_status).await,
        HealthKind::Tcp { address } => TcpStream::connect(address.as_str())
            .await
            .map(|_| format!("connected to {address}"))
            .map_err(|e| format!("cannot connect to {address}: {e}")),
        HealthKind::FileModifiedWithin { path, within } => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let modified = meta
                .modified()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO);
            if age <= *within {
                Ok(format!(
                    "{} modified {} ago",
                    path.display(),
                    humantime_short(age)
                ))
            } else {
                Err(format!(
                    "{} last modified {} ago (limit {})",
                    path.display(),
                    humantime_short(age),
                    humantime_short(*within)
                ))
            }
        }
        HealthKind::MaxUptime { max } => {
            let up = Duration::from_millis(crate::events::now_ms().saturating_sub(started_ms));
            if up <= *max {
                Ok(format!("up {}", humantime_short(up)))
            } else {
                Err(format!(
                    "up {}, longer than max_uptime {}",
                    humantime_short(up),
                    humantime_short(*max)
                ))
            }
        }
    }
}

async fn exec(argv: &[String]) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty health command")?;
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    });
    let first = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    if out.status.success() {
        Ok(if first.is_empty() {
            "exit 0".into()
        } else {
            first
        })
    } else {
        Err(format!("{} {}", out.status, first).trim().to_owned())
    }
}

async fn http(url: &str, expect: Option<u16>) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(hostport)
        .await
        .map_err(|e| format!("cannot connect to {hostport}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: reeve-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("cannot send request: {e}"))?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    while n < buf.len() {
        let k = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("cannot read response: {e}"))?;
        if k == 0 || buf[..n + k].contains(&b'\n') {
            n += k;
            break;
        }
        n += k;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let status_line = head.lines().next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let ok = match expect {
        Some(e) => code == e,
        None => (200..400).contains(&code),
    };
    if ok {
        Ok(format!("HTTP {code}"))
    } else {
        Err(format!("HTTP {code} from {url}"))
    }
}

/// Formats a duration briefly (`1.5s`, `250ms`, `3m`).
pub fn humantime_short(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_checks_against_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"HTTP/1.0 503 Busy\r\n\r\n").await;
            }
        });
        let tcp = HealthKind::Tcp {
            address: addr.to_string(),
        };
        assert!(check(&tcp, Duration::from_secs(2), 0).await.is_ok());
        let http = HealthKind::Http {
            url: format!("http://{addr}/h"),
            expect_status: None,
        };
        let err = check(&http, Duration::from_secs(2), 0)
            .await
            .expect_err("503 fails");
        assert!(err.contains("503"), "{err}");
        let http = HealthKind::Http {
            url: format!("http://{addr}/h"),
            expect_status: Some(503),
        };
        assert!(check(&http, Duration::from_secs(2), 0).await.is_ok());
    }

    #[tokio::test]
    async fn exec_and_uptime_checks() {
        let ok = HealthKind::Exec {
            argv: vec!["true".into()],
        };
        assert!(check(&ok, Duration::from_secs(2), 0).await.is_ok());
        let bad = HealthKind::Exec {
            argv: vec!["sh".into(), "-c".into(), "echo broken; exit 3".into()],
        };
        let err = check(&bad, Duration::from_secs(2), 0)
            .await
            .expect_err("exit 3 fails");
        assert!(err.contains("broken"), "{err}");
        let slow = HealthKind::Exec {
            argv: vec!["sleep".into(), "5".into()],
        };
        let err = check(&slow, Duration::from_millis(100), 0)
            .await
            .expect_err("timeout");
        assert!(err.contains("timed out"), "{err}");
        let up = HealthKind::MaxUptime {
            max: Duration::from_secs(60),
        };
        assert!(
            check(&up, Duration::from_secs(1), crate::events::now_ms())
                .await
                .is_ok()
        );
        assert!(check(&up, Duration::from_secs(1), 0).await.is_err());
    }
}
