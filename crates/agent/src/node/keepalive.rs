//! Adaptive keepalive for the hub link. A ping goes out after `interval` without sending
//! anything; the interval starts short (45 s: NAT idle timeouts set the floor) and grows
//! by half each time a ping after a full idle interval is answered — the path kept its
//! mapping that long — up to a ceiling (4.5 min, ≈ 13 pings an hour, well under 1.5 KB).
//! A ping left unanswered for [`PONG_WAIT`] means the link is dead (a NAT or firewall
//! dropped it silently): the link is rebuilt, the interval shrinks, and the ceiling comes
//! down below the interval that failed, so the next links stay alive.

use std::time::{Duration, Instant};

/// The shortest interval (and the first).
pub const MIN: Duration = Duration::from_secs(45);
/// The longest interval.
pub const MAX: Duration = Duration::from_secs(270);
/// How long a ping may go unanswered before the link counts as dead (at the default
/// floor; a shorter floor waits half of it, at least 2 s).
pub const PONG_WAIT: Duration = Duration::from_secs(20);

/// What the link should do at a tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    Wait,
    /// Send a ping now.
    Ping,
    /// The last ping went unanswered: drop the link.
    Dead,
}

/// The keepalive state of a node; it outlives its links (what was learned stays).
#[derive(Debug, Clone)]
pub struct Keepalive {
    min: Duration,
    interval: Duration,
    ceiling: Duration,
    pong_wait: Duration,
    ping_sent: Option<Instant>,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self::with_min(MIN)
    }
}

impl Keepalive {
    /// A keepalive whose shortest (and first) interval is `min` (node.toml
    /// `keepalive_min`, for NATs that forget sooner than 45 s).
    pub fn with_min(min: Duration) -> Self {
        let min = min.clamp(Duration::from_secs(1), MAX);
        Self {
            min,
            interval: min,
            ceiling: MAX,
            pong_wait: (min / 2).clamp(Duration::from_secs(2), PONG_WAIT),
            ping_sent: None,
        }
    }

    /// How long a ping may go unanswered.
    pub fn pong_wait(&self) -> Duration {
        self.pong_wait
    }

    /// The current interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A new link: nothing is in flight on it.
    pub fn on_connect(&mut self) {
        self.ping_sent = None;
    }

    /// At a tick, given when this side last sent anything.
    pub fn tick(&mut self, now: Instant, last_sent: Instant) -> Action {
        if let Some(at) = self.ping_sent {
            if now.duration_since(at) > self.pong_wait {
                self.ping_sent = None;
                self.ceiling = self.interval.mul_f64(0.8).max(self.min);
                self.interval = self.interval.mul_f64(2.0 / 3.0).max(self.min);
                return Action::Dead;
            }
            return Action::Wait;
        }
        if now.duration_since(last_sent) >= self.interval {
            self.ping_sent = Some(now);
            return Action::Ping;
        }
        Action::Wait
    }

    /// When [`Keepalive::tick`] has something to do next, given when this side last sent
    /// anything: the answer to a pending ping falls due, or the idle interval ends.
    pub fn next_check(&self, last_sent: Instant) -> Instant {
        match self.ping_sent {
            Some(at) => at + self.pong_wait + Duration::from_millis(1),
            None => last_sent + self.interval,
        }
    }

    /// Anything arrived from the hub: a pending ping is answered, and the path kept its
    /// mapping for a whole interval, so the next may be longer.
    pub fn on_frame(&mut self) {
        if self.ping_sent.take().is_some() {
            self.interval = self.interval.mul_f64(1.5).min(self.ceiling).max(self.min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_check_is_exactly_when_tick_has_work() {
        let mut k = Keepalive::default();
        let t0 = Instant::now();
        let at = k.next_check(t0);
        assert_eq!(at, t0 + MIN);
        assert_eq!(k.tick(at - Duration::from_millis(1), t0), Action::Wait);
        assert_eq!(k.tick(at, t0), Action::Ping);
        let dead_at = k.next_check(at);
        assert_eq!(k.tick(dead_at - Duration::from_millis(2), at), Action::Wait);
        assert_eq!(k.tick(dead_at, at), Action::Dead);
    }

    #[test]
    fn grows_while_answered_shrinks_and_caps_after_a_silent_drop() {
        let mut k = Keepalive::default();
        let t0 = Instant::now();
        assert_eq!(k.tick(t0 + Duration::from_secs(10), t0), Action::Wait);
        let mut now = t0 + MIN;
        assert_eq!(k.tick(now, t0), Action::Ping);
        assert_eq!(
            k.tick(now + Duration::from_secs(5), now),
            Action::Wait,
            "one ping at a time"
        );
        k.on_frame();
        assert_eq!(
            k.interval(),
            Duration::from_secs(67) + Duration::from_millis(500)
        );
        // Answered pings grow it to the ceiling, no further.
        for _ in 0..10 {
            now += k.interval();
            assert_eq!(k.tick(now, now - k.interval()), Action::Ping);
            k.on_frame();
        }
        assert_eq!(k.interval(), MAX);
        // A ping left unanswered: dead, shorter, and the ceiling comes down.
        now += MAX;
        assert_eq!(k.tick(now, now - MAX), Action::Ping);
        assert_eq!(
            k.tick(now + PONG_WAIT + Duration::from_secs(1), now),
            Action::Dead
        );
        assert_eq!(k.interval(), Duration::from_secs(180));
        k.on_connect();
        for _ in 0..10 {
            now += k.interval();
            assert_eq!(k.tick(now, now - k.interval()), Action::Ping);
            k.on_frame();
        }
        assert_eq!(
            k.interval(),
            MAX.mul_f64(0.8),
            "never again up to what failed"
        );
        // It never goes under the floor.
        let mut k = Keepalive::default();
        assert_eq!(k.tick(t0 + MIN, t0), Action::Ping);
        assert_eq!(
            k.tick(t0 + MIN + PONG_WAIT + Duration::from_secs(1), t0),
            Action::Dead
        );
        assert_eq!(k.interval(), MIN);
    }
}
