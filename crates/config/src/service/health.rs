//! Phase two for `[health]`: the kind, its own fields, and the timing shared by all kinds.

use super::raw::RawHealth;
use super::sections::{argv, duration};
use super::{HealthCheck, HealthKind, OnFailure};
use crate::error::Issues;
use std::path::PathBuf;
use std::time::Duration;

const KINDS: &str = "exec, http, tcp, file_modified_within, max_uptime";

/// Checks `[health]`; `None` if anything in it is wrong.
pub(crate) fn check(is: &mut Issues, h: &RawHealth) -> Option<HealthCheck> {
    let before = is.errors.len();
    let kind = kind(is, h);
    let interval = timing(is, "health.interval", h.interval.as_ref(), 10, true);
    // Without its own timeout, a check gets 5s or the interval, whichever is shorter.
    let timeout = timing(is, "health.timeout", h.timeout.as_ref(), 5, true).map(|t| {
        match (h.timeout.is_none(), interval) {
            (true, Some(i)) => t.min(i),
            _ => t,
        }
    });
    let start_period = timing(is, "health.start_period", h.start_period.as_ref(), 0, false);
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        is.add("health.timeout", "must not be longer than health.interval");
    }
    let threshold = match h.threshold {
        None => Some(3),
        Some(n) => is.check(
            "health.threshold",
            u32::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{n} must be a whole number ≥ 1")),
        ),
    };
    let on_failure = match h.on_failure.as_deref() {
        None | Some("restart") => Some(OnFailure::Restart),
        Some("mark") => Some(OnFailure::Mark),
        Some(o) => {
            is.add(
                "health.on_failure",
                format!("`{o}` is not an action (expected \"restart\" or \"mark\")"),
            );
            None
        }
    };
    if is.errors.len() != before {
        return None;
    }
    Some(HealthCheck {
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        threshold: threshold?,
        on_failure: on_failure?,
        start_period: start_period?,
    })
}

fn timing(
    is: &mut Issues,
    field: &str,
    v: Option<&super::raw::Scalar>,
    default_secs: u64,
    positive: bool,
) -> Option<Duration> {
    let Some(v) = v else {
        return Some(Duration::from_secs(default_secs));
    };
    let d = duration(is, field, v)?;
    if positive && d.is_zero() {
        is.add(field, "must be longer than 0");
        return None;
    }
    Some(d)
}

fn kind(is: &mut Issues, h: &RawHealth) -> Option<HealthKind> {
    let Some(kind) = h.kind.as_deref() else {
        is.add("health.kind", format!("required (one of {KINDS})"));
        return None;
    };
    let set: [(&str, bool); 7] = [
        ("command", h.command.is_some()),
        ("url", h.url.is_some()),
        ("expect_status", h.expect_status.is_some()),
        ("address", h.address.is_some()),
        ("path", h.path.is_some()),
        ("within", h.within.is_some()),
        ("max", h.max.is_some()),
    ];
    let own: &[&str] = match kind {
        "exec" => &["command"],
        "http" => &["url", "expect_status"],
        "tcp" => &["address"],
        "file_modified_within" => &["path", "within"],
        "max_uptime" => &["max"],
        _ => {
            is.add(
                "health.kind",
                format!("unknown kind `{kind}` (expected one of {KINDS})"),
            );
            return None;
        }
    };
    for (name, present) in set {
        if present && !own.contains(&name) {
            is.add(
                format!("health.{name}"),
                format!("not used by kind \"{kind}\""),
            );
        }
    }
    let missing = |is: &mut Issues, name: &str| {
        is.add(
            format!("health.{name}"),
            format!("required for kind \"{kind}\""),
        );
    };
    match kind {
        "exec" => match &h.command {
            Some(c) => argv(is, "health.command", c).map(|argv| HealthKind::Exec { argv }),
            None => {
                missing(is, "command");
                None
            }
        },
        "http" => {
            let url = match &h.url {
                Some(u) => is.check("health.url", http_url(u).map(|()| u.clone())),
                None => {
                    missing(is, "url");
                    None
                }
            };
            let expect_status = match h.expect_status {
                None => Some(None),
                Some(s) => is.check(
                    "health.expect_status",
                    u16::try_from(s)
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .map(Some)
                        .ok_or_else(|| format!("{s} is not an HTTP status (100 to 599)")),
                ),
            };
            Some(HealthKind::Http {
                url: url?,
                expect_status: expect_status?,
            })
        }
        "tcp" => match &h.address {
            Some(a) => is
                .check("health.address", host_port(a).map(|()| a.clone()))
                .map(|address| HealthKind::Tcp { address }),
            None => {
                missing(is, "address");
                None
            }
        },
        "file_modified_within" => {
            let path = match h.path.as_deref() {
                Some(p) if PathBuf::from(p).is_absolute() && !p.contains('\0') => {
                    Some(PathBuf::from(p))
                }
                Some(p) => {
                    is.add("health.path", format!("`{p}` is not an absolute path"));
                    None
                }
                None => {
                    missing(is, "path");
                    None
                }
            };
            let within = required_positive(is, "within", kind, h.within.as_ref());
            Some(HealthKind::FileModifiedWithin {
                path: path?,
                within: within?,
            })
        }
        _ => required_positive(is, "max", kind, h.max.as_ref())
            .map(|max| HealthKind::MaxUptime { max }),
    }
}

fn required_positive(
    is: &mut Issues,
    name: &str,
    kind: &str,
    v: Option<&super::raw::Scalar>,
) -> Option<Duration> {
    let field = format!("health.{name}");
    let Some(v) = v else {
        is.add(field, format!("required for kind \"{kind}\""));
        return None;
    };
    let d = duration(is, &field, v)?;
    if d.is_zero() {
        is.add(field, "must be longer than 0");
        return None;
    }
    Some(d)
}

/// Checks `http://host:port/path` (the port is required; no user info; `https` is not
/// supported).
pub(crate) fn http_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{u}` must start with http:// (https is not supported)"))?;
    let (authority, _path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(format!("`{u}`: user info is not supported"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{u}` contains whitespace or control characters"));
    }
    host_port(authority).map_err(|e| format!("`{u}`: {e}"))
}

/// Checks `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
pub(crate) fn host_port(a: &str) -> Result<(), String> {
    let expected = || format!("`{a}` is not host:port (e.g. 127.0.0.1:8080 or [::1]:8080)");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(expected)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| expected())?;
        (h, p)
    } else {
        a.rsplit_once(':').ok_or_else(expected)?
    };
    let host_ok = !host.is_empty()
        && (a.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return Err(expected());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{a}`: port must be a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(http_url("http://127.0.0.1:8080/healthz").is_ok());
        assert!(http_url("http://localhost:80").is_ok());
        assert!(http_url("http://[::1]:8080/x?y=1").is_ok());
        assert!(http_url("https://a:1/").is_err());
        assert!(http_url("http://a/").is_err());
        assert!(http_url("http://:80/").is_err());
        assert!(http_url("http://u@a:80/").is_err());
        assert!(http_url("http://a:0/").is_err());
        assert!(http_url("http://a:99999/").is_err());
        assert!(http_url("http://a b:80/").is_err());
    }

    #[test]
    fn addresses() {
        assert!(host_port("127.0.0.1:5432").is_ok());
        assert!(host_port("db.local:5432").is_ok());
        assert!(host_port("[::1]:5432").is_ok());
        assert!(host_port("::1:5432").is_err());
        assert!(host_port("5432").is_err());
        assert!(host_port("[zz]:1").is_err());
        assert!(host_port("a:").is_err());
    }
}
