//! The receiving side of one stream: messages are released in `seq` order, each once; a
//! gap holds later messages until the missing one or its signed skip marker arrives.
//! Replays (a `seq` already released) are reported as duplicates, never released again.
//!
//! Pure: the durable inbox (issue 3) persists `next` and the held messages; this type
//! decides.

use std::collections::BTreeMap;

/// What arrived at a position.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot<T> {
    /// A message.
    Message(T),
    /// The owner's skip marker: nothing will come at this position.
    Skip,
}

/// What the receiver does with an arrival.
#[derive(Clone, Debug, PartialEq)]
pub enum Offer<T> {
    /// These positions are now released, in order (messages to run, skips to record).
    Release(Vec<(u64, Slot<T>)>),
    /// Held until the gap before it closes.
    Held,
    /// Already released (a replay or a retransmission): acknowledge, do not run.
    Duplicate,
    /// Too far ahead of the gap (beyond the window): refused, the sender retries later.
    TooFarAhead,
}

/// One stream's receiving state.
#[derive(Clone, Debug)]
pub struct StreamReceiver<T> {
    next: u64,
    held: BTreeMap<u64, Slot<T>>,
    window: u64,
}

impl<T> StreamReceiver<T> {
    /// A new stream (positions start at 1) accepting up to `window` positions ahead.
    pub fn new(window: u64) -> Self {
        Self::resume(1, window)
    }

    /// A stream whose positions before `next` were all released.
    pub fn resume(next: u64, window: u64) -> Self {
        Self {
            next: next.max(1),
            held: BTreeMap::new(),
            window: window.max(1),
        }
    }

    /// The next position to release.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The cumulative acknowledgement: every position up to this one is done.
    pub fn acked(&self) -> u64 {
        self.next - 1
    }

    /// Positions held behind a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes an arrival at `seq`.
    pub fn offer(&mut self, seq: u64, slot: Slot<T>) -> Offer<T> {
        if seq < self.next {
            return Offer::Duplicate;
        }
        if seq >= self.next + self.window {
            return Offer::TooFarAhead;
        }
        if seq > self.next {
            if self.held.contains_key(&seq) {
                return Offer::Duplicate;
            }
            self.held.insert(seq, slot);
            return Offer::Held;
        }
        let mut out = vec![(seq, slot)];
        self.next += 1;
        while let Some(s) = self.held.remove(&self.next) {
            out.push((self.next, s));
            self.next += 1;
        }
        Offer::Release(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gaps_hold_and_skips_release() {
        let mut r = StreamReceiver::new(100);
        assert_eq!(r.offer(2, Slot::Message("b")), Offer::Held);
        assert_eq!(r.offer(2, Slot::Message("b")), Offer::Duplicate);
        assert_eq!(
            r.offer(1, Slot::Message("a")),
            Offer::Release(vec![(1, Slot::Message("a")), (2, Slot::Message("b"))])
        );
        assert_eq!(r.offer(1, Slot::Message("a")), Offer::Duplicate);
        assert_eq!(r.offer(4, Slot::Message("d")), Offer::Held);
        assert_eq!(
            r.offer(3, Slot::Skip),
            Offer::Release(vec![(3, Slot::Skip), (4, Slot::Message("d"))])
        );
        assert_eq!(r.acked(), 4);
        assert_eq!(r.offer(200, Slot::Message("z")), Offer::TooFarAhead);
    }

    proptest! {
        /// Any arrival order with any duplicates releases every position exactly once, in
        /// order; skipped positions are released as skips.
        #[test]
        fn every_position_once_in_order(
            n in 1u64..60,
            order in proptest::collection::vec(0u64..1000, 1..300),
            skips in proptest::collection::btree_set(1u64..60, 0..10),
        ) {
            let mut r = StreamReceiver::new(1_000);
            let mut released = Vec::new();
            // Arrivals: a shuffled multiset covering 1..=n at least once.
            let mut arrivals: Vec<u64> = order.iter().map(|x| x % n + 1).collect();
            arrivals.extend(1..=n);
            for seq in arrivals {
                let slot = if skips.contains(&seq) { Slot::Skip } else { Slot::Message(seq) };
                if let Offer::Release(items) = r.offer(seq, slot) {
                    released.extend(items);
                }
            }
            let seqs: Vec<u64> = released.iter().map(|(s, _)| *s).collect();
            prop_assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
            for (s, slot) in &released {
                prop_assert_eq!(matches!(slot, Slot::Skip), skips.contains(s));
            }
            prop_assert_eq!(r.held(), 0);
        }
    }
}
