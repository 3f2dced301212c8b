//! The sending side of one stream: a sliding window over the outbox. Up to `window`
//! messages are in flight at once (throughput over a 600 ms satellite round trip is
//! window/RTT, not 1/RTT); each is retransmitted with exponential back-off until the
//! cumulative acknowledgement covers it. Pure: the caller owns the clock and the socket.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
struct Sent {
    at_ms: u64,
    tries: u32,
}

/// The window of one stream.
#[derive(Clone, Debug)]
pub struct WindowSender {
    window: usize,
    rto_ms: u64,
    max_rto_ms: u64,
    sent: BTreeMap<u64, Sent>,
    acked: u64,
}

impl WindowSender {
    /// A sender with `window` messages in flight, a first retransmission after `rto_ms`,
    /// doubling up to `max_rto_ms`.
    pub fn new(window: usize, rto_ms: u64, max_rto_ms: u64) -> Self {
        Self {
            window: window.max(1),
            rto_ms: rto_ms.max(1),
            max_rto_ms: max_rto_ms.max(rto_ms.max(1)),
            sent: BTreeMap::new(),
            acked: 0,
        }
    }

    fn rto(&self, tries: u32) -> u64 {
        self.rto_ms
            .saturating_mul(1u64 << tries.saturating_sub(1).min(20))
            .min(self.max_rto_ms)
    }

    /// Which of the outbox's unacknowledged positions (ascending) to transmit now: the
    /// first `window` of them that were never sent, or whose back-off has passed.
    pub fn due(&mut self, now_ms: u64, unacked: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for &seq in unacked
            .iter()
            .filter(|s| **s > self.acked)
            .take(self.window)
        {
            let send = match self.sent.get(&seq) {
                None => true,
                Some(s) => now_ms >= s.at_ms.saturating_add(self.rto(s.tries)),
            };
            if send {
                let tries = self.sent.get(&seq).map_or(0, |s| s.tries) + 1;
                self.sent.insert(
                    seq,
                    Sent {
                        at_ms: now_ms,
                        tries,
                    },
                );
                out.push(seq);
            }
        }
        out
    }

    /// A cumulative acknowledgement up to `upto`.
    pub fn on_ack(&mut self, upto: u64) {
        if upto > self.acked {
            self.acked = upto;
            self.sent = self.sent.split_off(&(upto + 1));
        }
    }

    /// Starts from what the outbox records as acknowledged (a new link resumes where the
    /// last one stopped, so an ack below it is seen for what it is: a receiver that lost
    /// positions it had acknowledged).
    pub fn resume_at(&mut self, acked: u64) {
        if acked > self.acked {
            self.acked = acked;
            self.sent = self.sent.split_off(&(acked + 1));
        }
    }

    /// The receiver acknowledges only up to `upto`, below what it acknowledged before (it
    /// lost state: a hub restored from a backup). Everything past `upto` is due again.
    pub fn rewind(&mut self, upto: u64) {
        self.acked = self.acked.min(upto);
        self.sent.clear();
    }

    /// The link was re-established: whatever was in flight is due again at once.
    pub fn on_reconnect(&mut self) {
        self.sent.clear();
    }

    /// When the next retransmission falls due, if any message is in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.sent
            .values()
            .map(|s| s.at_ms.saturating_add(self.rto(s.tries)))
            .min()
    }

    /// True when a message in flight is due for retransmission at `now_ms`.
    pub fn retransmit_due(&self, now_ms: u64) -> bool {
        self.next_deadline().is_some_and(|d| now_ms >= d)
    }

    /// How many more messages may be sent before the window is full.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.sent.len())
    }

    /// The window's size.
    pub fn size(&self) -> usize {
        self.window
    }

    /// The highest position sent and not yet acknowledged, or the highest acknowledged.
    pub fn last_sent(&self) -> u64 {
        self.sent
            .last_key_value()
            .map_or(self.acked, |(s, _)| *s)
            .max(self.acked)
    }

    /// Highest acknowledged position.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_backoff_ack_and_reconnect() {
        let mut w = WindowSender::new(3, 100, 400);
        let unacked: Vec<u64> = (1..=10).collect();
        assert_eq!(
            w.due(0, &unacked),
            vec![1, 2, 3],
            "at most a window in flight"
        );
        assert!(
            w.due(50, &unacked).is_empty(),
            "nothing before the time-out"
        );
        assert_eq!(w.next_deadline(), Some(100));
        assert_eq!(
            w.due(100, &unacked),
            vec![1, 2, 3],
            "retransmitted after rto"
        );
        assert_eq!(w.next_deadline(), Some(300), "back-off doubles");
        w.on_ack(2);
        assert_eq!(w.due(100, &unacked[2..]), vec![4, 5], "the window slides");
        w.on_ack(5);
        assert_eq!(w.acked(), 5);
        assert!(w.due(150, &unacked[5..]).contains(&6));
        w.on_reconnect();
        assert_eq!(
            w.due(151, &unacked[5..]),
            vec![6, 7, 8],
            "all due again after reconnect"
        );
        // A receiver that lost positions: everything past its ack is due again.
        w.rewind(2);
        assert_eq!(w.acked(), 2);
        assert_eq!(w.due(152, &unacked[2..]), vec![3, 4, 5]);
        let mut fresh = WindowSender::new(3, 100, 400);
        fresh.resume_at(5);
        assert_eq!(
            fresh.last_sent(),
            5,
            "a new link resumes after the stored ack"
        );
        // Back-off is capped.
        let mut w = WindowSender::new(1, 100, 250);
        for t in [0, 100, 300, 550, 800] {
            assert_eq!(w.due(t, &[1]), vec![1], "at {t}");
        }
    }
}
