//! The hybrid logical clock that orders writes, and its policy for peers whose wall
//! clocks are wrong.
//!
//! # Policy for a remote clock far in the future
//!
//! Field tablets often have wrong clocks. Two rules keep them syncing without letting
//! one bad clock win every conflict forever:
//!
//! 1. **Quarantine.** [`Clock::observe`] adopts a remote timestamp (the usual HLC
//!    merge) only when it is at most [`Clock::max_forward_drift_ms`] ahead of our own
//!    wall clock. A timestamp further ahead is still accepted as data (sync never
//!    refuses it), but it does not drag our clock forward, so the bad clock does not
//!    spread to the mesh. [`Observation::Quarantined`] lets the caller log and count it.
//! 2. **Causal overwrite.** A local write always gets a stamp greater than every stamp
//!    it replaces (see [`Hlc::after`] and the document model's write functions). So a
//!    value written with a clock in 2099 wins only over writes made *concurrently*
//!    with it; the first person who sees it and changes it wins over it, whatever the
//!    clocks say.

use serde::{Deserialize, Serialize};

/// Bits of an [`Hlc`] that hold the logical counter.
const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// Default for how far ahead of our wall clock a remote clock may be and still be
/// adopted: five minutes, generous for devices synced by NTP or GPS now and then.
pub const DEFAULT_MAX_FORWARD_DRIFT_MS: u64 = 5 * 60 * 1000;

/// A hybrid logical timestamp: milliseconds since the Unix epoch in the high 48 bits,
/// a logical counter in the low 16. Ordered as a plain integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc(u64);

impl Hlc {
    /// The smallest timestamp.
    pub const ZERO: Hlc = Hlc(0);

    /// A timestamp from wall milliseconds and a logical counter.
    pub const fn new(physical_ms: u64, logical: u16) -> Self {
        Self((physical_ms << LOGICAL_BITS) | logical as u64)
    }

    /// A timestamp from its raw 64-bit form.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw 64-bit form.
    pub const fn to_raw(self) -> u64 {
        self.0
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub const fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The smallest timestamp greater than `self`. A full logical counter carries into
    /// the millisecond, which keeps the order total.
    pub const fn successor(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// `self` if it is already greater than `seen`, else the successor of `seen`: the
    /// stamp for a write that must supersede something stamped `seen`.
    pub fn after(self, seen: Hlc) -> Self {
        if self > seen { self } else { seen.successor() }
    }
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hlc({}.{})", self.physical_ms(), self.logical())
    }
}

/// What [`Clock::observe`] did with a remote timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The clock now orders after the remote timestamp.
    Adopted,
    /// The remote timestamp is too far ahead of our wall clock; our clock ignored it.
    Quarantined {
        /// How far ahead of our wall clock it was.
        ahead_ms: u64,
    },
}

/// A node's hybrid logical clock. Sans-IO: the caller passes the wall time.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    max_forward_drift_ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FORWARD_DRIFT_MS)
    }
}

impl Clock {
    /// A clock that adopts remote timestamps up to `max_forward_drift_ms` ahead of the
    /// local wall clock.
    pub fn new(max_forward_drift_ms: u64) -> Self {
        Self {
            last: Hlc::ZERO,
            max_forward_drift_ms,
        }
    }

    /// A clock that resumes after `last` (for example the greatest stamp found in the
    /// store on restart), so stamps never repeat across restarts.
    pub fn resume(last: Hlc, max_forward_drift_ms: u64) -> Self {
        Self {
            last,
            max_forward_drift_ms,
        }
    }

    /// The configured drift limit.
    pub fn max_forward_drift_ms(&self) -> u64 {
        self.max_forward_drift_ms
    }

    /// The last timestamp issued or adopted.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new timestamp, strictly greater than every one issued or adopted before.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        self.last = Hlc::new(wall_ms, 0).after(self.last);
        self.last
    }

    /// Merges a timestamp received from a peer, following the module's policy.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Observation {
        let limit = wall_ms.saturating_add(self.max_forward_drift_ms);
        if remote.physical_ms() > limit {
            return Observation::Quarantined {
                ahead_ms: remote.physical_ms() - wall_ms,
            };
        }
        self.last = self.last.max(remote);
        Observation::Adopted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_the_wall_clock_goes_back() {
        let mut clock = Clock::default();
        let a = clock.tick(1_000);
        let b = clock.tick(1_000);
        let c = clock.tick(900);
        assert!(a < b && b < c);
        assert_eq!(c.physical_ms(), 1_000);
        assert_eq!(c.logical(), 2);
        let d = clock.tick(2_000);
        assert_eq!(d, Hlc::new(2_000, 0));
    }

    #[test]
    fn a_remote_timestamp_within_the_drift_is_adopted() {
        let mut clock = Clock::new(60_000);
        let remote = Hlc::new(1_030_000, 4);
        assert_eq!(clock.observe(remote, 1_000_000), Observation::Adopted);
        assert!(clock.tick(1_000_000) > remote);
    }

    #[test]
    fn a_remote_clock_far_in_the_future_is_quarantined() {
        let mut clock = Clock::new(60_000);
        let year_2099 = Hlc::new(4_070_908_800_000, 0);
        let wall = 1_790_000_000_000;
        assert_eq!(
            clock.observe(year_2099, wall),
            Observation::Quarantined {
                ahead_ms: 4_070_908_800_000 - wall
            }
        );
        let next = clock.tick(wall);
        assert_eq!(next.physical_ms(), wall, "our clock must not jump to 2099");
    }

    #[test]
    fn a_write_after_a_future_stamp_still_supersedes_it() {
        let mut clock = Clock::default();
        let future = Hlc::new(4_070_908_800_000, 9);
        let mine = clock.tick(1_790_000_000_000).after(future);
        assert!(mine > future);
        assert_eq!(mine, future.successor());
        assert_eq!(
            clock.tick(1_790_000_000_001).physical_ms(),
            1_790_000_000_001
        );
    }

    #[test]
    fn the_logical_counter_carries_into_the_millisecond() {
        let full = Hlc::new(5, u16::MAX);
        assert_eq!(full.successor(), Hlc::new(6, 0));
    }
}
