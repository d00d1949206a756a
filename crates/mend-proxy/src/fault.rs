//! Toxiproxy-style fault injection on a fraction of requests, expiring by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::clock::{Clock, Nanos};

/// What an injected fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Delay the request this long before forwarding it.
    Latency(Duration),
    /// Answer with this status (and a short body) without forwarding.
    Status(u16),
    /// Close the client connection without an answer.
    Abort,
}

/// A fault applied to `percent` % of the requests until `until`.
///
/// One fault of each kind is active at a time: setting a fault replaces the earlier one of the same kind.
/// The kinds roll independently, in the order latency, abort, status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// Share of requests affected, 0..=100 (clamped).
    pub percent: f64,
    /// When it stops by itself (a `std::time::Instant`, as from `mend_types::Clock::now`).
    pub until: Instant,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultDecision {
    pub(crate) delay: Option<Duration>,
    pub(crate) abort: bool,
    pub(crate) status: Option<u16>,
}

#[derive(Debug, Clone, Copy)]
struct ActiveFault {
    kind: FaultKind,
    /// Probability in 0..=1.
    probability: f64,
    /// The share as set, in percent (clamped to 0..=100), for [`Faults::active`].
    percent: f64,
    until: Nanos,
}

/// A partition: requests from one caller (its `x-mend-caller` header) are refused until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The calling service, as it names itself in `x-mend-caller`.
    pub caller: String,
    /// When it heals by itself (a `std::time::Instant`, as from `mend_types::Clock::now`).
    pub until: Instant,
}

#[derive(Debug, Clone)]
struct ActivePartition {
    caller: Box<[u8]>,
    until: Nanos,
}

/// The active faults, swapped whole on change and read lock-free per request.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    active: ArcSwapOption<Vec<ActiveFault>>,
    partitions: ArcSwapOption<Vec<ActivePartition>>,
}

impl Faults {
    pub(crate) fn set(&self, fault: Fault, clock: &Clock) {
        let until = clock.nanos_at(tokio::time::Instant::from_std(fault.until));
        let now = clock.now();
        let probability = if fault.percent.is_nan() { 0.0 } else { fault.percent.clamp(0.0, 100.0) / 100.0 };
        let current = self.active.load_full();
        let mut next: Vec<ActiveFault> = current
            .iter()
            .flat_map(|faults| faults.iter())
            .filter(|active| {
                std::mem::discriminant(&active.kind) != std::mem::discriminant(&fault.kind) && active.until > now
            })
            .copied()
            .collect();
        next.push(ActiveFault { kind: fault.kind, probability, percent: probability * 100.0, until });
        self.active.store(Some(Arc::new(next)));
    }

    pub(crate) fn clear(&self) {
        self.active.store(None);
        self.partitions.store(None);
    }

    /// Refuses requests from `partition.caller` until `partition.until`, replacing a partition of the
    /// same caller.
    pub(crate) fn partition(&self, partition: &Partition, clock: &Clock) {
        let until = clock.nanos_at(tokio::time::Instant::from_std(partition.until));
        let now = clock.now();
        let current = self.partitions.load_full();
        let mut next: Vec<ActivePartition> = current
            .iter()
            .flat_map(|partitions| partitions.iter())
            .filter(|active| &*active.caller != partition.caller.as_bytes() && active.until > now)
            .cloned()
            .collect();
        next.push(ActivePartition { caller: partition.caller.as_bytes().into(), until });
        self.partitions.store(Some(Arc::new(next)));
    }

    /// Ends the partition of `caller` now; false if there was none.
    pub(crate) fn heal_partition(&self, caller: &str, clock: &Clock) -> bool {
        let now = clock.now();
        let current = self.partitions.load_full();
        let Some(current) = current else { return false };
        let had = current.iter().any(|active| &*active.caller == caller.as_bytes() && active.until > now);
        let next: Vec<ActivePartition> = current
            .iter()
            .filter(|active| &*active.caller != caller.as_bytes() && active.until > now)
            .cloned()
            .collect();
        self.partitions.store(if next.is_empty() { None } else { Some(Arc::new(next)) });
        had
    }

    /// The partitions not expired at `clock`'s now.
    pub(crate) fn partitions(&self, clock: &Clock) -> Vec<Partition> {
        let now = clock.now();
        let guard = self.partitions.load();
        let Some(partitions) = guard.as_ref() else { return Vec::new() };
        partitions
            .iter()
            .filter(|active| active.until > now)
            .map(|active| Partition {
                caller: String::from_utf8_lossy(&active.caller).into_owned(),
                until: clock.instant(active.until).into_std(),
            })
            .collect()
    }

    /// Whether a request from `caller` (its `x-mend-caller` header) is refused at `now`.
    pub(crate) fn partitioned(&self, caller: Option<&[u8]>, now: Nanos) -> bool {
        let Some(caller) = caller else { return false };
        let guard = self.partitions.load();
        let Some(partitions) = guard.as_ref() else { return false };
        partitions.iter().any(|active| now < active.until && &*active.caller == caller)
    }

    /// The faults not expired at `clock`'s now, as set.
    pub(crate) fn active(&self, clock: &Clock) -> Vec<Fault> {
        let now = clock.now();
        let guard = self.active.load();
        let Some(faults) = guard.as_ref() else { return Vec::new() };
        faults
            .iter()
            .filter(|fault| fault.until > now)
            .map(|fault| Fault {
                kind: fault.kind,
                percent: fault.percent,
                until: clock.instant(fault.until).into_std(),
            })
            .collect()
    }

    /// Rolls the dice for one request.
    pub(crate) fn decide(&self, now: Nanos) -> FaultDecision {
        let mut decision = FaultDecision::default();
        let guard = self.active.load();
        let Some(faults) = guard.as_ref() else { return decision };
        for fault in faults.iter() {
            if now >= fault.until || fastrand::f64() >= fault.probability {
                continue;
            }
            match fault.kind {
                FaultKind::Latency(delay) => decision.delay = Some(delay),
                FaultKind::Abort => decision.abort = true,
                FaultKind::Status(status) => decision.status = Some(status),
            }
        }
        decision
    }
}
