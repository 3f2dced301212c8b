//! Human-written values: signal names, byte sizes and durations.

use std::time::Duration;

/// Signal names understood by [`parse_signal`], without the `SIG` prefix.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal: a name with or without the `SIG` prefix, in any case (`TERM`, `SIGTERM`,
/// `hup`), or a number from 1 to 64 (`15`).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return signal_number(n);
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|&(_, n)| n)
        .ok_or_else(|| format!("unknown signal `{s}` (use a name like TERM or HUP, or a number)"))
}

/// Checks a signal given as a number: 1 to 64.
pub fn signal_number(n: i64) -> Result<i32, String> {
    if (1..=64).contains(&n) {
        i32::try_from(n).map_err(|_| format!("signal {n} is out of range 1..=64"))
    } else {
        Err(format!("signal {n} is out of range 1..=64"))
    }
}

/// Parses a byte size: a number with an optional unit (`4096`, `512KB`, `10MiB`, `1G`,
/// `1.5 M`). Units are case-insensitive: `B`; `K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`
/// are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size `{s}` (expected e.g. 4096, 512KB, 10MiB or 1G)");
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("size `{s}` is too large"));
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    // Precision loss is fine: sizes with fractions are approximate by nature.
    #[allow(clippy::cast_precision_loss)]
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size `{s}` is too large"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

/// Parses a duration: a humantime string (`100ms`, `30s`, `1h 30m`, `24h`) or a bare
/// non-negative number of seconds (`10`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let secs: f64 = t.parse().map_err(|_| format!("invalid duration `{s}`"))?;
        return seconds(secs);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration `{s}`: {e} (expected e.g. 100ms, 30s, 5m, 24h)"))
}

/// A duration from a number of seconds (which may have a fraction).
pub fn seconds(secs: f64) -> Result<Duration, String> {
    if secs < 0.0 {
        return Err(format!("duration {secs} is negative"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {secs} is out of range"))
}

/// Milliseconds of a duration, saturating at `u64::MAX`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sighup"), Ok(libc::SIGHUP));
        assert_eq!(parse_signal("15"), Ok(15));
        assert_eq!(parse_signal("64"), Ok(64));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("-1").is_err());
        assert!(parse_signal("SIG").is_err());
        assert!(parse_signal("BOGUS").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 k"), Ok(1536));
        assert_eq!(parse_size("7b"), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("1.2.3K").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.").is_ok());
        assert!(parse_duration(".").is_err());
        assert!(seconds(f64::NAN).is_err());
        assert!(seconds(f64::INFINITY).is_err());
        assert!(seconds(-1.0).is_err());
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
