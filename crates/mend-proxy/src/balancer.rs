//! A compiled route-table snapshot and backend selection: canary split, then least-request (power of two
//! choices, weighted) or weighted round robin among the eligible backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::HeaderName;

use crate::backend::BackendRef;
use crate::clock::Nanos;
use crate::config::LoadBalancing;
use crate::headers::cookie_value;
use crate::route::CanarySplit;

/// Most attempts a request can make (and so the most backends it remembers having tried).
pub(crate) const MAX_TRIED: usize = 8;

/// One route-table generation, ready for the request path: read through `ArcSwap`, never locked.
#[derive(Debug, Default)]
pub(crate) struct RouteState {
    /// `pools[0]` = stable, `pools[1]` = canary; without a split every backend is in `pools[0]`.
    pools: [Vec<BackendRef>; 2],
    split: Option<CompiledSplit>,
    /// Every backend of the table, in table order.
    pub(crate) all: Vec<BackendRef>,
    round_robin: AtomicUsize,
}

#[derive(Debug)]
struct CompiledSplit {
    weight_percent: u8,
    pin_header: Option<(HeaderName, Bytes)>,
    pin_cookie: Option<(String, Bytes)>,
}

/// The backends a request already tried, by address of their state.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tried {
    ptrs: [usize; MAX_TRIED],
    len: usize,
}

impl Tried {
    pub(crate) fn push(&mut self, backend: &BackendRef) {
        if self.len < MAX_TRIED {
            self.ptrs[self.len] = Arc::as_ptr(backend) as usize;
            self.len += 1;
        }
    }

    fn contains(&self, backend: &BackendRef) -> bool {
        self.ptrs[..self.len].contains(&(Arc::as_ptr(backend) as usize))
    }
}

/// What selection needs besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PickParams {
    pub(crate) policy: LoadBalancing,
    pub(crate) slow_start: Duration,
    /// `OutlierPolicy::panic_threshold_percent`.
    pub(crate) panic_threshold: u8,
    pub(crate) now: Nanos,
}

impl RouteState {
    pub(crate) fn new(all: Vec<BackendRef>, split: Option<&CanarySplit>) -> Self {
        let mut pools: [Vec<BackendRef>; 2] = [Vec::new(), Vec::new()];
        for backend in &all {
            let pool_idx = if split.is_some() { backend.id.release.idx() } else { 0 };
            pools[pool_idx].push(backend.clone());
        }
        let split = split.map(|split| CompiledSplit {
            weight_percent: split.weight_percent.min(100),
            pin_header: split.pin_header.as_ref().and_then(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                Some((name, Bytes::copy_from_slice(value.as_bytes())))
            }),
            pin_cookie: split
                .pin_cookie
                .as_ref()
                .map(|(name, value)| (name.clone(), Bytes::copy_from_slice(value.as_bytes()))),
        });
        Self { pools, split, all, round_robin: AtomicUsize::new(0) }
    }

    /// The pool (release) a request goes to first: pinned by header, then cookie, else by weight.
    pub(crate) fn choose_pool(&self, headers: &HeaderMap) -> usize {
        let Some(split) = &self.split else { return 0 };
        if let Some((name, value)) = &split.pin_header
            && let Some(given) = headers.get(name)
        {
            return usize::from(given.as_bytes() == value.as_ref());
        }
        if let Some((name, value)) = &split.pin_cookie
            && let Some(given) = cookie_value(headers, name)
        {
            return usize::from(given == value.as_ref());
        }
        match split.weight_percent {
            0 => 0,
            100.. => 1,
            percent => usize::from(fastrand::u8(0..100) < percent),
        }
    }

    /// A backend of `pool_idx` (or, if it has none eligible, of the other pool) not yet tried.
    ///
    /// Never nothing because of ejections: when too few backends are free of ejection (Envoy's panic
    /// threshold), ejected ones are eligible again, so a table with a backend that is not draining always
    /// gives one to a request that has tried none.
    pub(crate) fn pick(&self, pool_idx: usize, tried: &Tried, params: PickParams) -> Option<&BackendRef> {
        let panic = self.panic(params.now, params.panic_threshold);
        self.pick_in(&self.pools[pool_idx & 1], tried, params, panic)
            .or_else(|| self.pick_in(&self.pools[(pool_idx + 1) & 1], tried, params, panic))
    }

    /// Whether ejections are ignored: fewer than `threshold` percent of the backends that are not
    /// draining are free of ejection, or none is. One pass over the table's (few) backends, two atomic
    /// loads each.
    fn panic(&self, now: Nanos, threshold: u8) -> bool {
        let (mut n_available, mut n_healthy) = (0usize, 0usize);
        for backend in &self.all {
            if !backend.draining.load(Relaxed) {
                n_available += 1;
                n_healthy += usize::from(!backend.is_ejected(now));
            }
        }
        n_healthy < n_available && (n_healthy == 0 || n_healthy * 100 < n_available * usize::from(threshold))
    }

    /// Whether one more backend may be ejected now: at most `max_percent` of the backends that are not
    /// draining would then be ejected, and never all of them.
    pub(crate) fn may_eject(&self, now: Nanos, max_percent: u8) -> bool {
        let (mut n_available, mut n_ejected) = (0usize, 0usize);
        for backend in &self.all {
            if !backend.draining.load(Relaxed) {
                n_available += 1;
                n_ejected += usize::from(backend.is_ejected(now));
            }
        }
        n_ejected + 1 < n_available && (n_ejected + 1) * 100 <= n_available * usize::from(max_percent)
    }

    fn pick_in<'a>(
        &self,
        pool: &'a [BackendRef],
        tried: &Tried,
        params: PickParams,
        panic: bool,
    ) -> Option<&'a BackendRef> {
        let eligible = |backend: &&BackendRef| backend.is_eligible(params.now, panic) && !tried.contains(backend);
        let weight = |backend: &BackendRef| backend.effective_weight(params.now, params.slow_start);
        let mut n_eligible = 0usize;
        let mut total = 0u64;
        let mut first_weight = None;
        let mut uniform = true;
        for backend in pool.iter().filter(eligible) {
            let backend_weight = weight(backend);
            n_eligible += 1;
            total += backend_weight;
            uniform &= *first_weight.get_or_insert(backend_weight) == backend_weight;
        }
        if n_eligible == 0 || total == 0 {
            return None;
        }
        if n_eligible == 1 {
            return pool.iter().find(eligible);
        }
        match params.policy {
            LoadBalancing::RoundRobin => {
                let turn = self.round_robin.fetch_add(1, Relaxed);
                if uniform {
                    pool.iter().filter(eligible).nth(turn % n_eligible)
                } else {
                    // A golden-ratio sequence spreads weighted turns evenly (low discrepancy).
                    let fraction = (turn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let point = u64::try_from((u128::from(fraction) * u128::from(total)) >> 64).unwrap_or(0);
                    walk(pool.iter().filter(eligible), point, weight, None)
                }
            }
            LoadBalancing::LeastRequest if uniform => {
                // Two distinct candidates uniformly at random: what the weighted walks below give for equal
                // weights, without computing the weights again.
                let first_idx = fastrand::usize(..n_eligible);
                let second_idx = fastrand::usize(..n_eligible - 1);
                let second_idx = if second_idx >= first_idx { second_idx + 1 } else { second_idx };
                let first = pool.iter().filter(eligible).nth(first_idx)?;
                let second = pool.iter().filter(eligible).nth(second_idx)?;
                let fewer = second.in_flight.load(Relaxed) < first.in_flight.load(Relaxed);
                Some(if fewer { second } else { first })
            }
            LoadBalancing::LeastRequest => {
                let first = walk(pool.iter().filter(eligible), fastrand::u64(..total), weight, None)?;
                let rest = total - weight(first);
                if rest == 0 {
                    return Some(first);
                }
                let second = walk(pool.iter().filter(eligible), fastrand::u64(..rest), weight, Some(first))?;
                let fewer = second.in_flight.load(Relaxed) < first.in_flight.load(Relaxed);
                Some(if fewer { second } else { first })
            }
        }
    }
}

/// The backend whose cumulative weight range holds `point`, skipping `skip`.
fn walk<'a>(
    candidates: impl Iterator<Item = &'a BackendRef>,
    mut point: u64,
    weight: impl Fn(&BackendRef) -> u64,
    skip: Option<&BackendRef>,
) -> Option<&'a BackendRef> {
    let mut last = None;
    for backend in candidates {
        if skip.is_some_and(|skip| Arc::ptr_eq(skip, backend)) {
            continue;
        }
        let backend_weight = weight(backend);
        if point < backend_weight {
            return Some(backend);
        }
        point -= backend_weight;
        last = Some(backend);
    }
    last
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::backend::BackendState;
    use crate::route::{BackendId, Release};

    fn state(release: Release, index: u32, weight: u32) -> BackendRef {
        let id = BackendId { release, index, generation: 1 };
        Arc::new(BackendState::new(id, SocketAddr::from(([127, 0, 0, 1], 1)), weight, Nanos(0)))
    }

    fn params(policy: LoadBalancing) -> PickParams {
        PickParams { policy, slow_start: Duration::ZERO, panic_threshold: 50, now: Nanos(1) }
    }

    /// Picks `n` times from pool 0 and counts per backend index.
    fn shares(routes: &RouteState, policy: LoadBalancing, n: usize) -> Vec<usize> {
        let mut counts = vec![0; routes.all.len()];
        for _ in 0..n {
            if let Some(backend) = routes.pick(0, &Tried::default(), params(policy)) {
                counts[backend.id.index as usize] += 1;
            }
        }
        counts
    }

    #[test]
    fn round_robin_alternates_and_honours_weights() {
        let equal = RouteState::new(vec![state(Release::Stable, 0, 1), state(Release::Stable, 1, 1)], None);
        let order: Vec<u32> = (0..4)
            .filter_map(|_| equal.pick(0, &Tried::default(), params(LoadBalancing::RoundRobin)))
            .map(|b| b.id.index)
            .collect();
        assert_eq!(order, [0, 1, 0, 1]);
        let weighted = RouteState::new(vec![state(Release::Stable, 0, 1), state(Release::Stable, 1, 3)], None);
        // A low-discrepancy sequence: within one turn of the exact shares.
        let counts = shares(&weighted, LoadBalancing::RoundRobin, 4000);
        assert!(counts[0].abs_diff(1000) <= 1 && counts[1].abs_diff(3000) <= 1, "{counts:?}");
    }

    #[test]
    fn least_request_prefers_the_less_loaded_and_honours_weights_when_idle() {
        let routes = RouteState::new(vec![state(Release::Stable, 0, 1), state(Release::Stable, 1, 1)], None);
        routes.all[0].in_flight.store(5, Relaxed);
        assert_eq!(shares(&routes, LoadBalancing::LeastRequest, 100), [0, 100]);
        let weighted = RouteState::new(vec![state(Release::Stable, 0, 1), state(Release::Stable, 1, 3)], None);
        let counts = shares(&weighted, LoadBalancing::LeastRequest, 4000);
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        // Equal weights take the uniform path: an even spread when idle, never the loaded one otherwise.
        let three = RouteState::new((0..3).map(|index| state(Release::Stable, index, 1)).collect(), None);
        let counts = shares(&three, LoadBalancing::LeastRequest, 3000);
        assert!(counts.iter().all(|&count| (850..1150).contains(&count)), "{counts:?}");
        three.all[1].in_flight.store(5, Relaxed);
        let counts = shares(&three, LoadBalancing::LeastRequest, 3000);
        assert_eq!(counts[1], 0, "{counts:?}");
    }

    #[test]
    fn tried_draining_and_ejected_backends_are_skipped() {
        let routes = RouteState::new(
            vec![state(Release::Stable, 0, 1), state(Release::Stable, 1, 1), state(Release::Stable, 2, 1)],
            None,
        );
        routes.all[0].draining.store(true, Relaxed);
        routes.all[1].ejected_until.store(10, Relaxed);
        let mut tried = Tried::default();
        let picked = routes.pick(0, &tried, params(LoadBalancing::LeastRequest)).map(|b| b.id.index);
        assert_eq!(picked, Some(2));
        tried.push(&routes.all[2]);
        assert!(routes.pick(0, &tried, params(LoadBalancing::LeastRequest)).is_none());
    }

    #[test]
    fn ejections_hold_until_too_few_backends_are_left_then_panic_routes_to_all() {
        let routes = RouteState::new((0..4).map(|index| state(Release::Stable, index, 1)).collect(), None);
        let now = params(LoadBalancing::RoundRobin).now;
        let eject = |idx: usize| routes.all[idx].ejected_until.store(now.0 + 10, Relaxed);
        assert!(routes.may_eject(now, 50));
        eject(0);
        assert!(routes.may_eject(now, 50), "2 of 4 may be ejected");
        eject(1);
        assert!(!routes.may_eject(now, 50), "not a third");
        assert!(!routes.panic(now, 50), "half are healthy");
        assert_eq!(shares(&routes, LoadBalancing::RoundRobin, 100)[..2], [0, 0], "ejected backends get nothing");
        // One of the healthy ones drains: 1 of 3 left healthy is below the threshold.
        routes.all[2].draining.store(true, Relaxed);
        assert!(routes.panic(now, 50));
        let counts = shares(&routes, LoadBalancing::RoundRobin, 300);
        assert!(counts[0] > 0 && counts[1] > 0 && counts[2] == 0 && counts[3] > 0, "{counts:?}");
        // With a threshold of 0, panic only when no backend is healthy.
        assert!(!routes.panic(now, 0));
        routes.all[3].draining.store(true, Relaxed);
        assert!(routes.panic(now, 0));
        assert!(!routes.may_eject(now, 100), "never all of them");
    }

    /// One step of the model-based test below.
    #[derive(Debug, Clone)]
    enum Op {
        /// A replica joins the table (canary when true).
        Add(bool),
        /// The table loses one.
        Remove(usize),
        /// Outlier detection asks to eject one (the proxy's policy decides).
        Eject(usize),
        /// An ejection happens regardless of the policy (as racing ejections could do).
        ForceEject(usize),
        /// An ejection ends.
        Recover(usize),
        /// One is drained before a planned stop.
        Drain(usize),
        /// Time passes (ejections run out).
        Wait(u64),
        /// The canary split comes or goes.
        Split(bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            2 => any::<bool>().prop_map(Op::Add),
            2 => (0..8usize).prop_map(Op::Remove),
            3 => (0..8usize).prop_map(Op::Eject),
            1 => (0..8usize).prop_map(Op::ForceEject),
            1 => (0..8usize).prop_map(Op::Recover),
            1 => (0..8usize).prop_map(Op::Drain),
            1 => (0..3000u64).prop_map(Op::Wait),
            1 => any::<bool>().prop_map(Op::Split),
        ]
    }

    proptest::proptest! {
        /// Issue 12: whatever the order of ejections, removals, additions, recoveries and drains, a table
        /// with a backend that is not draining always routes a fresh request somewhere (in either
        /// release), never to a draining backend, and to an ejected one only in panic.
        #[test]
        fn issue_12_ejection_never_leaves_a_pool_without_a_backend(
            ops in proptest::collection::vec(op(), 1..60),
            threshold in 0u8..=100,
            max_percent in 0u8..=100,
        ) {
            const EJECTION: u64 = 1_000_000_000;
            let mut now = Nanos(1);
            let mut members: Vec<BackendRef> = vec![state(Release::Stable, 0, 1)];
            let mut next_index = 1;
            let mut split = false;
            let canary = CanarySplit { weight_percent: 50, pin_header: None, pin_cookie: None };
            let mut routes = RouteState::new(members.clone(), None);
            for op in ops {
                let mut rebuild = false;
                match op {
                    Op::Add(is_canary) => {
                        let release = if is_canary { Release::Canary } else { Release::Stable };
                        members.push(state(release, next_index, 1));
                        next_index += 1;
                        rebuild = true;
                    }
                    Op::Remove(idx) if !members.is_empty() => {
                        members.remove(idx % members.len());
                        rebuild = true;
                    }
                    Op::Eject(idx) if !members.is_empty() => {
                        let backend = &members[idx % members.len()];
                        if !backend.draining.load(Relaxed) && !backend.is_ejected(now) && routes.may_eject(now, max_percent) {
                            backend.ejected_until.store(now.0 + EJECTION, Relaxed);
                        }
                    }
                    Op::ForceEject(idx) if !members.is_empty() => {
                        members[idx % members.len()].ejected_until.store(now.0 + EJECTION, Relaxed);
                    }
                    Op::Recover(idx) if !members.is_empty() => {
                        members[idx % members.len()].ejected_until.store(0, Relaxed);
                    }
                    Op::Drain(idx) if !members.is_empty() => {
                        members[idx % members.len()].draining.store(true, Relaxed);
                    }
                    Op::Wait(millis) => now = Nanos(now.0 + millis * 1_000_000),
                    Op::Split(on) => {
                        split = on;
                        rebuild = true;
                    }
                    _ => {}
                }
                if rebuild {
                    routes = RouteState::new(members.clone(), split.then_some(&canary));
                }
                let available: Vec<&BackendRef> = members.iter().filter(|b| !b.draining.load(Relaxed)).collect();
                let n_healthy = available.iter().filter(|b| !b.is_ejected(now)).count();
                let panic = n_healthy == 0 || n_healthy * 100 < available.len() * usize::from(threshold);
                let pick_params = PickParams {
                    policy: LoadBalancing::LeastRequest,
                    slow_start: Duration::ZERO,
                    panic_threshold: threshold,
                    now,
                };
                for pool_idx in 0..2 {
                    for _ in 0..4 {
                        let picked = routes.pick(pool_idx, &Tried::default(), pick_params);
                        proptest::prop_assert_eq!(picked.is_some(), !available.is_empty());
                        if let Some(picked) = picked {
                            proptest::prop_assert!(!picked.draining.load(Relaxed));
                            proptest::prop_assert!(panic || !picked.is_ejected(now), "an ejected backend outside panic");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn canary_pins_and_falls_back_to_the_other_release() {
        let split = CanarySplit {
            weight_percent: 0,
            pin_header: Some(("X-Canary".to_owned(), "1".to_owned())),
            pin_cookie: Some(("release".to_owned(), "canary".to_owned())),
        };
        let routes = RouteState::new(vec![state(Release::Stable, 0, 1), state(Release::Canary, 1, 1)], Some(&split));
        let cases: [(&[(&str, &str)], usize); 5] = [
            (&[], 0),
            (&[("x-canary", "1")], 1),
            (&[("x-canary", "0"), ("cookie", "release=canary")], 0),
            (&[("cookie", "a=b; release=canary")], 1),
            (&[("cookie", "release=stable")], 0),
        ];
        for (pairs, expected) in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(HeaderName::from_static(name), value.parse().expect("value"));
            }
            assert_eq!(routes.choose_pool(&headers), expected, "{pairs:?}");
        }
        routes.all[1].draining.store(true, Relaxed);
        let picked = routes.pick(1, &Tried::default(), params(LoadBalancing::LeastRequest)).map(|b| b.id.release);
        assert_eq!(picked, Some(Release::Stable));
    }
}
