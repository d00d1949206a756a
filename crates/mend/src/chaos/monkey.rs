//! The chaos monkey's decision, pure: the state of mend and the listed services, the time and a random
//! source in; a fault to inject, or the reason for none, out.
//!
//! Safety rules, in the order they are checked (the first that holds is the reason for no fault):
//! outside the configured window; healing paused (nobody would heal it); an incident open (mend is busy
//! healing already); a fault active (one at a time); too soon since the last fault (`every`); no listed
//! service healthy (every desired replica ready). Only listed services are ever picked.

use std::fmt;

use mend_config::Monkey;
use mend_types::{ChaosFault, Timestamp};

/// What the monkey sees at one look.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    pub(crate) now: Timestamp,
    /// The last fault's start, or when the monkey started (it waits a whole `every` first).
    pub(crate) since: Timestamp,
    pub(crate) healing_paused: bool,
    pub(crate) open_incidents: usize,
    pub(crate) active_faults: usize,
    /// The listed services, in the config's order.
    pub(crate) services: Vec<ServiceView>,
}

/// One listed service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceView {
    pub(crate) name: String,
    /// Replicas it should have.
    pub(crate) desired: u32,
    /// Indices of its ready replicas.
    pub(crate) ready: Vec<u32>,
}

impl ServiceView {
    fn healthy(&self) -> bool {
        self.desired > 0 && self.ready.len() as u32 == self.desired
    }
}

/// Why the monkey does nothing now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Skip {
    OutsideWindow,
    HealingPaused,
    IncidentOpen(usize),
    FaultActive(usize),
    TooSoon { next: Timestamp },
    NoHealthyService,
}

/// The monkey's decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Inject { service: String, fault: ChaosFault, replica: Option<u32> },
    Skip(Skip),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inject { service, fault, replica: Some(replica) } => write!(f, "{fault} {service}/{replica}"),
            Self::Inject { service, fault, replica: None } => write!(f, "{fault} {service}"),
            Self::Skip(Skip::OutsideWindow) => f.write_str("nothing: outside its window"),
            Self::Skip(Skip::HealingPaused) => f.write_str("nothing: healing is paused"),
            Self::Skip(Skip::IncidentOpen(n)) => write!(f, "nothing: {n} incident(s) open"),
            Self::Skip(Skip::FaultActive(n)) => write!(f, "nothing: {n} fault(s) active"),
            Self::Skip(Skip::TooSoon { next }) => write!(f, "nothing until {next}"),
            Self::Skip(Skip::NoHealthyService) => f.write_str("nothing: no listed service is healthy"),
        }
    }
}

/// Decides what to inject at `view.now`, drawing from `rng`.
pub(crate) fn decide(monkey: &Monkey, view: &View, rng: &mut fastrand::Rng) -> Decision {
    if monkey.window.is_some_and(|window| !window.contains(view.now)) {
        return Decision::Skip(Skip::OutsideWindow);
    }
    if view.healing_paused {
        return Decision::Skip(Skip::HealingPaused);
    }
    if view.open_incidents > 0 {
        return Decision::Skip(Skip::IncidentOpen(view.open_incidents));
    }
    if view.active_faults > 0 {
        return Decision::Skip(Skip::FaultActive(view.active_faults));
    }
    let next = view.since.saturating_add(monkey.every);
    if view.now < next {
        return Decision::Skip(Skip::TooSoon { next });
    }
    let healthy: Vec<&ServiceView> = view
        .services
        .iter()
        .filter(|service| service.healthy() && monkey.services.iter().any(|name| name.as_str() == service.name))
        .collect();
    if healthy.is_empty() || monkey.faults.is_empty() {
        return Decision::Skip(Skip::NoHealthyService);
    }
    let service = healthy[rng.usize(..healthy.len())];
    let fault = monkey.faults[rng.usize(..monkey.faults.len())];
    let replica = fault.per_replica().then(|| service.ready[rng.usize(..service.ready.len())]);
    Decision::Inject { service: service.name.clone(), fault, replica }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mend_config::DailyWindow;
    use mend_types::ServiceName;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn monkey() -> Monkey {
        Monkey {
            every: Duration::from_secs(600),
            services: vec![ServiceName::new("web").expect("valid")],
            faults: vec![ChaosFault::Kill, ChaosFault::Slow],
            duration: Duration::from_secs(30),
            window: None,
            dry_run: true,
            seed: Some(7),
        }
    }

    fn view() -> View {
        View {
            now: Timestamp::from_millis(12 * 60 * MINUTE + 20 * MINUTE),
            since: Timestamp::from_millis(12 * 60 * MINUTE),
            healing_paused: false,
            open_incidents: 0,
            active_faults: 0,
            services: vec![
                ServiceView { name: "web".into(), desired: 2, ready: vec![0, 1] },
                ServiceView { name: "db".into(), desired: 1, ready: vec![0] },
            ],
        }
    }

    fn check(monkey: &Monkey, view: &View, expected: &str) {
        let decision = decide(monkey, view, &mut fastrand::Rng::with_seed(7));
        assert_eq!(decision.to_string(), expected, "{view:?}");
    }

    #[test]
    fn safety_rules_hold_in_order() {
        let m = monkey();
        let mut windowed = monkey();
        windowed.window = Some(DailyWindow::parse("09:00-11:00").expect("valid"));
        check(&windowed, &View { healing_paused: true, ..view() }, "nothing: outside its window");
        check(&m, &View { healing_paused: true, open_incidents: 1, ..view() }, "nothing: healing is paused");
        check(&m, &View { open_incidents: 2, active_faults: 1, ..view() }, "nothing: 2 incident(s) open");
        check(&m, &View { active_faults: 1, ..view() }, "nothing: 1 fault(s) active");
        check(
            &m,
            &View { since: Timestamp::from_millis(12 * 60 * MINUTE + 15 * MINUTE), ..view() },
            "nothing until 1970-01-01T12:25:00.000Z",
        );
        let degraded = View {
            services: vec![
                ServiceView { name: "web".into(), desired: 2, ready: vec![1] },
                ServiceView { name: "db".into(), desired: 1, ready: vec![0] },
            ],
            ..view()
        };
        // db is healthy but not listed: never touched.
        check(&m, &degraded, "nothing: no listed service is healthy");
    }

    #[test]
    fn picks_only_listed_healthy_services_and_ready_replicas() {
        let m = monkey();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            match decide(&m, &view(), &mut rng) {
                Decision::Inject { service, fault: ChaosFault::Kill, replica: Some(replica) } => {
                    assert_eq!(service, "web");
                    assert!(replica < 2);
                    seen.insert(format!("kill {replica}"));
                }
                Decision::Inject { service, fault: ChaosFault::Slow, replica: None } => {
                    assert_eq!(service, "web");
                    seen.insert("slow".to_owned());
                }
                other => panic!("unexpected decision {other:?}"),
            }
        }
        assert_eq!(seen.len(), 3, "every fault and replica comes up: {seen:?}");
        // The same seed and state give the same decision: runs are reproducible.
        check(&m, &view(), &decide(&m, &view(), &mut fastrand::Rng::with_seed(7)).to_string());
    }
}
