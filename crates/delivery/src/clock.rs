//! Hub-adjusted time. A node may boot with its clock in 1970 (no RTC) or years ahead: every
//! handshake brings the hub's signed time, the agent keeps the offset, and never lets its
//! notion of time go backwards below a persisted floor. Only hub time raises the floor:
//! before the first handshake the local clock is a guess (never below the floor) that is
//! not remembered, so a clock that was wrong cannot stick. Expiry is judged on this clock.

/// The node's view of hub time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubClock {
    offset_ms: i64,
    floor_ms: u64,
    synced: bool,
}

impl HubClock {
    /// A clock with no hub time yet, never below `floor_ms` (the persisted floor).
    pub fn new(floor_ms: u64) -> Self {
        Self {
            offset_ms: 0,
            floor_ms,
            synced: false,
        }
    }

    /// Takes the hub's time from a handshake, seen at local time `local_ms`.
    pub fn sync(&mut self, hub_ms: u64, local_ms: u64) {
        self.offset_ms = hub_ms as i64 - local_ms as i64;
        self.floor_ms = self.floor_ms.max(hub_ms);
        self.synced = true;
    }

    /// Hub time now, given local time now; after a handshake it also raises the floor
    /// (persist it now and then). Before any: the local clock, but never below the floor.
    pub fn now(&mut self, local_ms: u64) -> u64 {
        if !self.synced {
            return self.floor_ms.max(local_ms);
        }
        let t = (local_ms as i64).saturating_add(self.offset_ms).max(0) as u64;
        self.floor_ms = self.floor_ms.max(t);
        self.floor_ms
    }

    /// The floor to persist.
    pub fn floor(&self) -> u64 {
        self.floor_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_booted_in_1970_uses_hub_time_and_never_goes_back() {
        // Persisted floor from the last run: 2026.
        let mut c = HubClock::new(1_795_000_000_000);
        // Local clock says 1970 + 5 s: the floor wins.
        assert_eq!(c.now(5_000), 1_795_000_000_000);
        // The hub says it is a bit later.
        c.sync(1_795_000_100_000, 6_000);
        assert_eq!(c.now(7_000), 1_795_000_101_000);
        // The local clock jumps backwards: hub time does not.
        assert_eq!(c.now(1_000), 1_795_000_101_000);
        assert_eq!(c.floor(), 1_795_000_101_000);
    }

    #[test]
    fn a_clock_years_ahead_before_the_first_handshake_does_not_stick() {
        let year_2045 = 2_380_000_000_000;
        let mut c = HubClock::new(1_795_000_000_000);
        assert_eq!(
            c.now(year_2045),
            year_2045,
            "the local guess before any handshake"
        );
        assert_eq!(c.floor(), 1_795_000_000_000, "but it is not remembered");
        c.sync(1_795_000_100_000, year_2045);
        assert_eq!(
            c.now(year_2045 + 1_000),
            1_795_000_101_000,
            "hub time from then on"
        );
    }
}
