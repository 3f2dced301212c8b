//! Phase two for the simple sections: commands, `[restart]`, `[stop]`, `[reload]` and
//! actions, `[log]`, `[limits]`, and the loose values they share.

use super::raw::{Command, Limit, RawAction, RawLog, RawService, Scalar};
use super::{ActionDef, LogConfig};
use crate::error::Issues;
use crate::units::{millis, parse_duration, parse_signal, parse_size, seconds, signal_number};
use reeve_proto::buddy::{RestartMode, RestartSpec, Rlimit, StopSpec};
use std::collections::BTreeMap;
use std::time::Duration;

/// Program and arguments of a command; a string runs through `/bin/sh -c`.
pub(crate) fn argv(is: &mut Issues, field: &str, c: &Command) -> Option<Vec<String>> {
    let argv = match c {
        Command::Shell(s) if s.trim().is_empty() => {
            is.add(field, "must not be empty");
            return None;
        }
        Command::Shell(s) => vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()],
        Command::Argv(v) if v.first().is_none_or(|p| p.is_empty()) => {
            is.add(field, "must name a program (a non-empty first element)");
            return None;
        }
        Command::Argv(v) => v.clone(),
    };
    if argv.iter().any(|a| a.contains('\0')) {
        is.add(field, "must not contain NUL");
        return None;
    }
    Some(argv)
}

/// A duration: a humantime string, or a number of seconds.
pub(crate) fn duration(is: &mut Issues, field: &str, v: &Scalar) -> Option<Duration> {
    let r = match v {
        Scalar::Int(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {n} is negative")),
        Scalar::Float(f) => seconds(*f),
        Scalar::Str(s) => parse_duration(s),
    };
    is.check(field, r)
}

/// A duration in milliseconds that must be at least 1ms.
fn positive_ms(is: &mut Issues, field: &str, v: &Scalar) -> Option<u64> {
    let ms = millis(duration(is, field, v)?);
    if ms == 0 {
        is.add(field, "must be at least 1ms");
        return None;
    }
    Some(ms)
}

/// A signal: a name or a number.
pub(crate) fn signal(is: &mut Issues, field: &str, v: &Scalar) -> Option<i32> {
    let r = match v {
        Scalar::Int(n) => signal_number(*n),
        Scalar::Float(f) => Err(format!("signal {f} is not a whole number")),
        Scalar::Str(s) => parse_signal(s),
    };
    is.check(field, r)
}

/// One value from either our field or Upkeeper's top-level one; both set is an error.
fn either<'a, T>(
    is: &mut Issues,
    ours: Option<&'a T>,
    our_field: &str,
    theirs: Option<&'a T>,
    their_field: &str,
) -> Option<(&'a T, String)> {
    match (ours, theirs) {
        (Some(_), Some(_)) => {
            is.add(
                their_field,
                format!("conflicts with `{our_field}`; set only one"),
            );
            None
        }
        (Some(v), None) => Some((v, our_field.to_owned())),
        (None, Some(v)) => Some((v, their_field.to_owned())),
        (None, None) => None,
    }
}

/// `[restart]` plus Upkeeper's top-level restart fields.
pub(crate) fn restart(is: &mut Issues, raw: &RawService) -> RestartSpec {
    let mut spec = RestartSpec::default();
    let r = raw.restart.as_ref();
    let get = |f: fn(&super::raw::RawRestart) -> Option<&Scalar>| r.and_then(f);

    if let Some(p) = r.and_then(|r| r.policy.as_deref()) {
        spec.mode = match p {
            "always" => RestartMode::Always,
            "on-failure" | "on_failure" => RestartMode::OnFailure,
            "never" => RestartMode::Never,
            _ => {
                is.add(
                    "restart.policy",
                    format!(
                        "`{p}` is not a policy (expected \"always\", \"on-failure\" or \"never\")"
                    ),
                );
                spec.mode
            }
        };
    }
    let initial = either(
        is,
        get(|r| r.backoff_initial.as_ref()),
        "restart.backoff_initial",
        raw.upk_rate_limit.as_ref(),
        "UserRateLimit",
    );
    let mut initial_ok = true;
    if let Some((v, f)) = initial {
        match duration(is, &f, v) {
            Some(d) => spec.backoff_initial_ms = millis(d),
            None => initial_ok = false,
        }
    }
    match get(|r| r.backoff_max.as_ref()) {
        Some(v) => {
            if let Some(ms) = positive_ms(is, "restart.backoff_max", v) {
                spec.backoff_max_ms = ms;
                if initial_ok && ms < spec.backoff_initial_ms {
                    is.add(
                        "restart.backoff_max",
                        format!(
                            "must be at least the initial back-off ({}ms)",
                            spec.backoff_initial_ms
                        ),
                    );
                }
            }
        }
        None => spec.backoff_max_ms = spec.backoff_max_ms.max(spec.backoff_initial_ms),
    }
    if let Some(m) = r.and_then(|r| r.backoff_multiplier) {
        if m.is_finite() && m >= 1.0 {
            spec.backoff_multiplier = m;
        } else {
            is.add(
                "restart.backoff_multiplier",
                format!("{m} must be a number ≥ 1"),
            );
        }
    }
    let upk_jitter = raw.upk_randomize_rate_limit.filter(|b| *b).map(|_| 0.5);
    match either(
        is,
        r.and_then(|r| r.jitter.as_ref()),
        "restart.jitter",
        upk_jitter.as_ref(),
        "RandomizeRateLimit",
    ) {
        Some((j, _)) if (0.0..=1.0).contains(j) => spec.jitter = *j,
        Some((j, f)) => is.add(f, format!("{j} must be between 0 and 1")),
        None => {}
    }
    if let Some(v) = get(|r| r.reset_after.as_ref())
        && let Some(ms) = positive_ms(is, "restart.reset_after", v)
    {
        spec.reset_after_ms = ms;
    }
    if let Some((n, f)) = either(
        is,
        r.and_then(|r| r.max_restarts.as_ref()),
        "restart.max_restarts",
        raw.upk_max_restarts.as_ref(),
        "UserMaxRestarts",
    ) {
        if f == "UserMaxRestarts" && *n < 0 {
            spec.max_restarts = None;
        } else {
            spec.max_restarts = is.check(&f, count(*n, 0));
        }
    }
    if let Some((v, f)) = either(
        is,
        get(|r| r.restart_window.as_ref()),
        "restart.restart_window",
        raw.upk_restart_window.as_ref(),
        "UserRestartWindow",
    ) && let Some(ms) = positive_ms(is, &f, v)
    {
        spec.restart_window_ms = ms;
    }
    if let Some((n, f)) = either(
        is,
        r.and_then(|r| r.max_consecutive_failures.as_ref()),
        "restart.max_consecutive_failures",
        raw.upk_max_consecutive_failures.as_ref(),
        "MaxConsecutiveFailures",
    ) {
        if f == "MaxConsecutiveFailures" && *n < 0 {
            spec.max_consecutive_failures = None;
        } else {
            spec.max_consecutive_failures = is.check(&f, count(*n, 1));
        }
    }
    spec
}

/// A count that must be at least `min` and fit a `u32`.
fn count(n: i64, min: u32) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|v| *v >= min)
        .ok_or_else(|| format!("{n} must be a whole number from {min} to {}", u32::MAX))
}

/// `[stop]` plus Upkeeper's `KillTimeout`.
pub(crate) fn stop(is: &mut Issues, raw: &RawService) -> StopSpec {
    let mut spec = StopSpec {
        signal: libc::SIGTERM,
        kill_timeout_ms: 10_000,
    };
    let s = raw.stop.as_ref();
    if let Some(v) = s.and_then(|s| s.signal.as_ref())
        && let Some(n) = signal(is, "stop.signal", v)
    {
        spec.signal = n;
    }
    if let Some((v, f)) = either(
        is,
        s.and_then(|s| s.kill_timeout.as_ref()),
        "stop.kill_timeout",
        raw.upk_kill_timeout.as_ref(),
        "KillTimeout",
    ) && let Some(d) = duration(is, &f, v)
    {
        spec.kill_timeout_ms = millis(d);
    }
    spec
}

/// `[reload]` or `[actions.NAME]`: exactly one of `signal` and `command`.
pub(crate) fn action(is: &mut Issues, field: &str, a: &RawAction) -> Option<ActionDef> {
    match (&a.signal, &a.command) {
        (Some(s), None) => signal(is, &format!("{field}.signal"), s).map(ActionDef::Signal),
        (None, Some(c)) => argv(is, &format!("{field}.command"), c).map(ActionDef::Command),
        (Some(_), Some(_)) => {
            is.add(field, "set either `signal` or `command`, not both");
            None
        }
        (None, None) => {
            is.add(field, "needs `signal` or `command`");
            None
        }
    }
}

/// `[log]`.
pub(crate) fn log(is: &mut Issues, raw: Option<&RawLog>) -> LogConfig {
    let mut log = LogConfig::default();
    let Some(r) = raw else { return log };
    if let Some(v) = &r.max_size {
        let size = match v {
            Scalar::Int(n) => u64::try_from(*n).map_err(|_| format!("size {n} is negative")),
            Scalar::Float(f) => Err(format!("size {f} is not a whole number of bytes")),
            Scalar::Str(s) => parse_size(s),
        };
        if let Some(n) = is.check("log.max_size", size) {
            if n < 4096 {
                is.add(
                    "log.max_size",
                    format!("{n} bytes is below the minimum of 4096"),
                );
            } else {
                log.max_size = n;
            }
        }
    }
    if let Some(k) = r.keep {
        match u32::try_from(k) {
            Ok(k) if k <= 100 => log.keep = k,
            _ => is.add("log.keep", format!("{k} must be from 0 to 100")),
        }
    }
    if let Some(p) = &r.pipe {
        if p.trim().is_empty() || p.contains('\0') {
            is.add("log.pipe", "must be a non-empty shell command without NUL");
        } else {
            log.pipe = Some(p.clone());
        }
    }
    if let Some(t) = r.to_file {
        log.to_file = t;
    }
    log
}

/// Resources `[limits]` may set, and whether their values are byte sizes.
const RESOURCES: &[(&str, bool)] = &[
    ("as", true),
    ("core", true),
    ("cpu", false),
    ("data", true),
    ("fsize", true),
    ("memlock", true),
    ("nofile", false),
    ("nproc", false),
    ("stack", true),
];

/// `[limits]`.
pub(crate) fn limits(is: &mut Issues, raw: Option<&BTreeMap<String, Limit>>) -> Vec<Rlimit> {
    let mut out = Vec::new();
    for (name, v) in raw.into_iter().flatten() {
        let field = format!("limits.{name}");
        let Some(&(_, bytes)) = RESOURCES.iter().find(|(r, _)| r == name) else {
            let known: Vec<&str> = RESOURCES.iter().map(|(r, _)| *r).collect();
            is.add(
                field,
                format!("unknown limit (known: {})", known.join(", ")),
            );
            continue;
        };
        let (soft, hard) = match v {
            Limit::Both(s) => {
                let n = is.check(&field, limit_value(s, bytes));
                (n, n)
            }
            Limit::Pair { soft, hard } => (
                is.check(&format!("{field}.soft"), limit_value(soft, bytes)),
                is.check(&format!("{field}.hard"), limit_value(hard, bytes)),
            ),
        };
        if let (Some(soft), Some(hard)) = (soft, hard) {
            if soft > hard {
                is.add(
                    field,
                    format!("soft limit {soft} is above the hard limit {hard}"),
                );
            } else {
                out.push(Rlimit {
                    resource: name.clone(),
                    soft,
                    hard,
                });
            }
        }
    }
    out
}

fn limit_value(v: &Scalar, bytes: bool) -> Result<u64, String> {
    match v {
        Scalar::Int(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        Scalar::Float(f) => Err(format!("{f} is not a whole number")),
        Scalar::Str(s) if s == "unlimited" || s == "infinity" => Ok(u64::MAX),
        Scalar::Str(s) if bytes => parse_size(s),
        Scalar::Str(s) => Err(format!("`{s}` is not a number or \"unlimited\"")),
    }
}
