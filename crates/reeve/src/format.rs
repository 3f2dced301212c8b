//! Human-readable output: durations, timestamps, exit statuses and the `ps` table.

use reeve_proto::api::ServiceStatus;
use reeve_proto::buddy::ExitStatus;
use reeve_proto::event::Event;
use reeve_proto::time::civil_from_days;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `3d4h`, `5m12s`, `42s`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A UTC timestamp `2026-11-21 23:05:01.123`.
pub fn timestamp(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// `code 1`, `signal 9`.
pub fn exit(e: &Option<ExitStatus>) -> String {
    match e {
        Some(ExitStatus {
            signal: Some(s), ..
        }) => format!("signal {s}"),
        Some(ExitStatus { code: Some(c), .. }) => format!("code {c}"),
        _ => "-".into(),
    }
}

/// The `reeve ps` table.
pub fn ps_table(services: &[ServiceStatus]) -> String {
    let now = now_ms();
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "LAST EXIT".into(),
        "HEALTH".into(),
    ]];
    for s in services {
        rows.push([
            s.name.clone(),
            s.state.to_string(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            if s.pid.is_some() {
                age(now.saturating_sub(s.since_ms))
            } else {
                "-".into()
            },
            s.restarts.to_string(),
            exit(&s.last_exit),
            s.health.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows)
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == N {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One event as a line.
pub fn event_line(e: &Event) -> String {
    format!(
        "{}  {:<14} {:<13} {:<9} {}",
        timestamp(e.ts_ms),
        e.service.as_deref().unwrap_or("-"),
        e.kind.as_str(),
        e.actor,
        e.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_ages() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(1_795_302_301_123), "2026-11-21 23:05:01.123");
        assert_eq!(age(61_000), "1m1s");
        assert_eq!(age(90_061_000), "1d1h");
    }
}
