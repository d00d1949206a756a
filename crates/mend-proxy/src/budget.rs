//! The retry budget: retries may add at most `ratio` of the request rate, plus a few per second.
//!
//! Two lock-free buckets. Every request deposits `ratio` of a token into the ratio bucket (kept in
//! thousandths, capped at [`MAX_BANKED_RETRIES`] tokens so a long calm period cannot bank a storm); a retry
//! spends one whole token. When that bucket is empty, a retry may still use one of
//! `min_retries_per_second` slots of the current second, so that a service with little traffic can retry.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::clock::Nanos;

/// Tokens the ratio bucket can hold.
const MAX_BANKED_RETRIES: i64 = 100;
const MILLI: i64 = 1000;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    deposit_milli: i64,
    min_per_second: u64,
    balance_milli: AtomicI64,
    /// The current second (upper 40 bits) and the floor retries used in it (lower 24 bits).
    floor_slot: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            deposit_milli: (ratio * MILLI as f64).round() as i64,
            min_per_second: u64::from(min_per_second).min(0xff_ffff),
            balance_milli: AtomicI64::new(0),
            floor_slot: AtomicU64::new(0),
        }
    }

    /// Credits one request.
    pub(crate) fn deposit(&self) {
        // A full bank is the steady state of a healthy service: look before writing, so that requests on
        // different threads do not all write this cache line.
        if self.deposit_milli == 0 || self.balance_milli.load(Relaxed) >= MAX_BANKED_RETRIES * MILLI {
            return;
        }
        let before = self.balance_milli.fetch_add(self.deposit_milli, Relaxed);
        if before + self.deposit_milli > MAX_BANKED_RETRIES * MILLI {
            self.balance_milli.fetch_min(MAX_BANKED_RETRIES * MILLI, Relaxed);
        }
    }

    /// Takes one retry's worth, if there is one.
    pub(crate) fn try_withdraw(&self, now: Nanos) -> bool {
        let spent =
            self.balance_milli.fetch_update(Relaxed, Relaxed, |balance| (balance >= MILLI).then_some(balance - MILLI));
        spent.is_ok() || self.try_floor(now)
    }

    fn try_floor(&self, now: Nanos) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let second = now.0 / 1_000_000_000;
        self.floor_slot
            .fetch_update(Relaxed, Relaxed, |slot| {
                let (slot_second, used) = (slot >> 24, slot & 0xff_ffff);
                let used = if slot_second == second { used } else { 0 };
                (used < self.min_per_second).then_some((second << 24) | (used + 1))
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// Replays `requests` requests each wanting a retry at `at`; returns retries granted.
    fn granted(budget: &RetryBudget, requests: u32, at: u64) -> u32 {
        (0..requests)
            .map(|_| {
                budget.deposit();
                u32::from(budget.try_withdraw(Nanos(at)))
            })
            .sum()
    }

    #[test]
    fn retries_are_bounded_by_ratio_plus_floor() {
        let cases = [
            // (ratio, floor per second, requests in one second, retries granted)
            (0.2, 10, 1000, 200 + 10),
            (0.2, 0, 1000, 200),
            (0.0, 10, 1000, 10),
            (0.2, 10, 5, 5),
            (1.0, 0, 50, 50),
        ];
        for (ratio, floor, requests, expected) in cases {
            let budget = RetryBudget::new(ratio, floor);
            assert_eq!(granted(&budget, requests, SECOND), expected, "{ratio} {floor} {requests}");
        }
    }

    #[test]
    fn floor_refills_each_second_and_bank_is_capped() {
        let budget = RetryBudget::new(0.0, 3);
        assert_eq!(granted(&budget, 10, SECOND), 3);
        assert_eq!(granted(&budget, 10, SECOND + SECOND / 2), 0);
        assert_eq!(granted(&budget, 10, 2 * SECOND), 3);

        let banked = RetryBudget::new(0.5, 0);
        for _ in 0..10_000 {
            banked.deposit();
        }
        let retries = (0..1000).filter(|_| banked.try_withdraw(Nanos(0))).count();
        assert_eq!(retries, MAX_BANKED_RETRIES as usize);
    }
}
