//! The restart decision, pure: given the policy, the counters and how the service ended,
//! decide whether to stop, restart at once, back off, or give up.
//!
//! Rules (DESIGN §2.3):
//! - a run that lasted at least `reset_after_ms` was healthy: the consecutive-failure count
//!   (and with it the back-off delay) is reset before this exit is counted;
//! - `never` never restarts; `on-failure` stops after exit code 0;
//! - every unexpected exit that leads to a restart counts as a failure for the back-off,
//!   including exit code 0 under `always` (a service that keeps exiting 0 at once is a crash
//!   loop too);
//! - `max_consecutive_failures = n`: the n-th failure in a row gives up;
//! - `max_restarts = n` within `restart_window_ms`: the (n+1)-th restart in the window gives up;
//! - delay = min(max, initial · multiplier^(failures−1)) plus `jitter · delay · r`, r ∈ [0,1).

use reeve_proto::buddy::{ExitStatus, RestartMode, RestartSpec};
use std::collections::VecDeque;

/// Failure bookkeeping of one service.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    /// Failures in a row since the last healthy window or explicit start.
    pub consecutive_failures: u32,
    /// Monotonic times (ms) of the restarts within the current window.
    pub restart_times: VecDeque<u64>,
}

impl Counters {
    /// Forgets everything (explicit start).
    pub fn clear(&mut self) {
        *self = Counters::default();
    }

    /// The service stayed up for the healthy window.
    pub fn healthy(&mut self) {
        self.consecutive_failures = 0;
    }
}

/// What to do after an exit that nobody asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Do not restart; the service is stopped.
    Stop,
    /// Restart right away.
    RestartNow,
    /// Restart after `delay_ms`.
    BackOff {
        /// The delay.
        delay_ms: u64,
    },
    /// Give up; the service is failed.
    Fail {
        /// Which limit was reached.
        reason: String,
    },
}

/// The back-off delay for the `failures`-th consecutive failure (≥ 1), `r` in [0, 1).
pub fn backoff_delay(spec: &RestartSpec, failures: u32, r: f64) -> u64 {
    let initial = spec.backoff_initial_ms as f64;
    let mult = if spec.backoff_multiplier.is_finite() && spec.backoff_multiplier > 1.0 {
        spec.backoff_multiplier
    } else {
        1.0
    };
    let exp = failures.saturating_sub(1).min(i32::MAX as u32) as i32;
    let max = spec.backoff_max_ms as f64;
    let base = (initial * mult.powi(exp)).min(max);
    let jitter = if spec.jitter.is_finite() {
        spec.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let r = if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let total = base + base * jitter * r;
    if total.is_finite() && total >= 0.0 {
        total.round().min(u64::MAX as f64) as u64
    } else {
        spec.backoff_max_ms
    }
}

/// Decides after an unexpected exit; updates the counters. `now_ms` is monotonic.
pub fn on_exit(
    spec: &RestartSpec,
    c: &mut Counters,
    status: ExitStatus,
    uptime_ms: u64,
    now_ms: u64,
    r: f64,
) -> Decision {
    if uptime_ms >= spec.reset_after_ms {
        c.healthy();
    }
    match spec.mode {
        RestartMode::Never => return Decision::Stop,
        RestartMode::OnFailure if status.success() => return Decision::Stop,
        _ => {}
    }
    c.consecutive_failures = c.consecutive_failures.saturating_add(1);
    if let Some(n) = spec.max_consecutive_failures
        && c.consecutive_failures >= n
    {
        return Decision::Fail {
            reason: format!(
                "{} consecutive failures (max_consecutive_failures = {n})",
                c.consecutive_failures
            ),
        };
    }
    if let Some(n) = spec.max_restarts {
        let window_start = now_ms.saturating_sub(spec.restart_window_ms);
        while c.restart_times.front().is_some_and(|&t| t < window_start) {
            c.restart_times.pop_front();
        }
        if c.restart_times.len() >= n as usize {
            return Decision::Fail {
                reason: format!(
                    "{} restarts within {} ms (max_restarts = {n})",
                    c.restart_times.len(),
                    spec.restart_window_ms
                ),
            };
        }
        c.restart_times.push_back(now_ms);
    }
    match backoff_delay(spec, c.consecutive_failures, r) {
        0 => Decision::RestartNow,
        delay_ms => Decision::BackOff { delay_ms },
    }
}

/// Smallest delay before retrying after a spawn failure: retrying a failed exec in a tight
/// loop helps nobody.
pub const SPAWN_RETRY_FLOOR_MS: u64 = 1_000;

/// Decides after the service could not be spawned: like an exit with code 127 after no
/// uptime, but never restarting sooner than [`SPAWN_RETRY_FLOOR_MS`].
pub fn on_spawn_failure(spec: &RestartSpec, c: &mut Counters, now_ms: u64, r: f64) -> Decision {
    let status = ExitStatus {
        code: Some(127),
        signal: None,
    };
    match on_exit(spec, c, status, 0, now_ms, r) {
        Decision::RestartNow => Decision::BackOff {
            delay_ms: SPAWN_RETRY_FLOOR_MS,
        },
        Decision::BackOff { delay_ms } => Decision::BackOff {
            delay_ms: delay_ms.max(SPAWN_RETRY_FLOOR_MS),
        },
        d => d,
    }
}

/// A tiny xorshift64* generator for jitter (no `rand` dependency).
pub struct XorShift(u64);

impl XorShift {
    /// Seeds from `seed` (zero is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RestartSpec {
        RestartSpec {
            mode: RestartMode::Always,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            backoff_multiplier: 2.0,
            jitter: 0.0,
            reset_after_ms: 10_000,
            max_restarts: None,
            restart_window_ms: 60_000,
            max_consecutive_failures: None,
        }
    }
    const FAIL: ExitStatus = ExitStatus {
        code: Some(1),
        signal: None,
    };
    const OK: ExitStatus = ExitStatus {
        code: Some(0),
        signal: None,
    };
    const KILLED: ExitStatus = ExitStatus {
        code: None,
        signal: Some(9),
    };

    #[test]
    fn delay_grows_and_caps() {
        let s = spec();
        let d: Vec<_> = (1..=6).map(|f| backoff_delay(&s, f, 0.0)).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff_delay(&s, u32::MAX, 0.0), 1_000);
        assert_eq!(backoff_delay(&s, 0, 0.0), 100);
    }

    #[test]
    fn jitter_adds_a_fraction_after_the_cap() {
        let mut s = spec();
        s.jitter = 0.5;
        assert_eq!(backoff_delay(&s, 1, 0.5), 125);
        assert_eq!(backoff_delay(&s, 10, 0.999_999), 1_500);
        s.jitter = 7.0; // clamped to 1
        assert_eq!(backoff_delay(&s, 1, 0.5), 150);
        s.jitter = f64::NAN;
        assert_eq!(backoff_delay(&s, 1, 0.5), 100);
    }

    #[test]
    fn odd_multipliers_are_treated_as_one() {
        let mut s = spec();
        for m in [0.0, 0.5, -3.0, f64::NAN, f64::INFINITY] {
            s.backoff_multiplier = m;
            assert_eq!(backoff_delay(&s, 5, 0.0), 100, "multiplier {m}");
        }
    }

    #[test]
    fn zero_initial_restarts_at_once() {
        let mut s = spec();
        s.backoff_initial_ms = 0;
        let mut c = Counters::default();
        for _ in 0..5 {
            assert_eq!(on_exit(&s, &mut c, KILLED, 1, 0, 0.3), Decision::RestartNow);
        }
        assert_eq!(c.consecutive_failures, 5);
    }

    #[test]
    fn modes() {
        let mut c = Counters::default();
        let mut s = spec();
        s.mode = RestartMode::Never;
        assert_eq!(on_exit(&s, &mut c, FAIL, 1, 0, 0.0), Decision::Stop);
        s.mode = RestartMode::OnFailure;
        assert_eq!(on_exit(&s, &mut c, OK, 1, 0, 0.0), Decision::Stop);
        assert_eq!(
            on_exit(&s, &mut c, KILLED, 1, 0, 0.0),
            Decision::BackOff { delay_ms: 100 }
        );
        s.mode = RestartMode::Always;
        assert_eq!(
            on_exit(&s, &mut c, OK, 1, 0, 0.0),
            Decision::BackOff { delay_ms: 200 }
        );
        assert_eq!(c.consecutive_failures, 2);
    }

    #[test]
    fn max_consecutive_failures_gives_up_on_the_nth() {
        let mut s = spec();
        s.max_consecutive_failures = Some(3);
        let mut c = Counters::default();
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 0, 0.0),
            Decision::BackOff { .. }
        ));
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 0, 0.0),
            Decision::BackOff { .. }
        ));
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 0, 0.0),
            Decision::Fail { .. }
        ));
        s.max_consecutive_failures = Some(0);
        let mut c = Counters::default();
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 0, 0.0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn healthy_run_resets_before_counting() {
        let mut s = spec();
        s.reset_after_ms = 1_000;
        s.max_consecutive_failures = Some(3);
        let mut c = Counters::default();
        on_exit(&s, &mut c, FAIL, 1, 0, 0.0);
        on_exit(&s, &mut c, FAIL, 1, 0, 0.0);
        assert_eq!(
            on_exit(&s, &mut c, FAIL, 1_000, 0, 0.0),
            Decision::BackOff { delay_ms: 100 }
        );
        assert_eq!(c.consecutive_failures, 1);
        // The reset also applies to stop decisions.
        s.mode = RestartMode::Never;
        on_exit(&s, &mut c, FAIL, 5_000, 0, 0.0);
        assert_eq!(c.consecutive_failures, 0);
    }

    #[test]
    fn max_restarts_within_window() {
        let mut s = spec();
        s.backoff_initial_ms = 0;
        s.max_restarts = Some(2);
        s.restart_window_ms = 1_000;
        let mut c = Counters::default();
        assert_eq!(on_exit(&s, &mut c, FAIL, 1, 0, 0.0), Decision::RestartNow);
        assert_eq!(on_exit(&s, &mut c, FAIL, 1, 500, 0.0), Decision::RestartNow);
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 900, 0.0),
            Decision::Fail { .. }
        ));
        // Later, the first restarts left the window.
        let mut c2 = c.clone();
        assert_eq!(
            on_exit(&s, &mut c2, FAIL, 1, 1_600, 0.0),
            Decision::RestartNow
        );
        assert_eq!(c2.restart_times.len(), 1);
        s.max_restarts = Some(0);
        let mut c = Counters::default();
        assert!(matches!(
            on_exit(&s, &mut c, FAIL, 1, 0, 0.0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn spawn_failures_never_retry_at_once() {
        let mut s = spec();
        s.backoff_initial_ms = 0;
        let mut c = Counters::default();
        assert_eq!(
            on_spawn_failure(&s, &mut c, 0, 0.0),
            Decision::BackOff {
                delay_ms: SPAWN_RETRY_FLOOR_MS
            }
        );
        s.backoff_initial_ms = 5_000;
        s.backoff_max_ms = 5_000;
        assert_eq!(
            on_spawn_failure(&s, &mut c, 0, 0.0),
            Decision::BackOff { delay_ms: 5_000 }
        );
        s.mode = RestartMode::Never;
        assert_eq!(on_spawn_failure(&s, &mut c, 0, 0.0), Decision::Stop);
    }

    #[test]
    fn clear_and_healthy() {
        let mut c = Counters {
            consecutive_failures: 4,
            restart_times: [1, 2].into(),
        };
        c.healthy();
        assert_eq!(c.consecutive_failures, 0);
        assert_eq!(c.restart_times.len(), 2);
        c.clear();
        assert_eq!(c, Counters::default());
    }

    #[test]
    fn xorshift_is_in_unit_interval() {
        let mut r = XorShift::new(0);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
