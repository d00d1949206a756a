//! The learner: outcomes of policies' actions in, the order in which a policy tries its actions out.
//!
//! Each (trigger, service, action) has a Beta posterior on "this action resolves the incident within
//! its verify window". Its prior comes from the configured order (the first action is believed a
//! little more than the second, and so on) and weighs `prior_weight` outcomes; an action's own record
//! counts only once it has `min_outcomes` outcomes. Actions are ranked by posterior mean, less a small
//! penalty for a slow recovery; ties keep the configured order. Only healing actions move: `notify` and
//! `escalate` keep their places, and nothing the policy does not list is ever added.
//!
//! Pure: no IO, no clock. The store keeps the outcomes; a restarted mend feeds them back in.

use std::collections::BTreeMap;
use std::time::Duration;

use mend_config::Learn;
use mend_types::{ActionKind, ActionOutcome, ServiceName, Verdict};

/// The outcomes of one action for one trigger and service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Outcomes.
    pub n: u32,
    /// Of which the incident resolved within the verify window.
    pub n_resolved: u32,
    /// Of which the action itself failed.
    pub n_failed: u32,
    /// Sum of the times to recover of the resolved ones, in milliseconds.
    pub recover_ms_sum: u64,
}

impl Tally {
    /// Counts `outcome`.
    pub fn add(&mut self, outcome: &ActionOutcome) {
        self.n += 1;
        match outcome.verdict {
            Verdict::Resolved => {
                self.n_resolved += 1;
                self.recover_ms_sum += outcome.recover_ms.unwrap_or(outcome.verify_ms);
            }
            Verdict::Failed => self.n_failed += 1,
            Verdict::NotResolved => {}
        }
    }

    /// Mean time to recover of the resolved outcomes.
    pub fn mean_recover(&self) -> Option<Duration> {
        (self.n_resolved > 0).then(|| Duration::from_millis(self.recover_ms_sum / u64::from(self.n_resolved)))
    }
}

/// What the tallies are kept by: trigger, service and action (as a policy writes it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TallyKey {
    /// The policy's `when`.
    pub trigger: String,
    /// The service acted on.
    pub service: Option<ServiceName>,
    /// The action, as a policy writes it (`restart`, `scale +1`).
    pub action: String,
}

/// The order a policy's actions are tried in for one trigger and service.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The configured actions, in the order to try them.
    pub actions: Vec<ActionKind>,
    /// Why, in figures, when it differs from the configured order.
    pub why: Option<String>,
    /// The record of each action, in the order chosen (empty when nothing is learnt or learning is off).
    pub figures: String,
}

/// Outcomes counted, and the orders last announced.
#[derive(Debug, Clone)]
pub struct Learner {
    settings: Learn,
    tallies: BTreeMap<TallyKey, Tally>,
    /// The last order used per (trigger, service): a different one is a reordering (announced once).
    announced: BTreeMap<(String, Option<ServiceName>), Vec<ActionKind>>,
}

/// Whether `action` heals (and so may move): notifying and escalating keep their places.
fn movable(action: &ActionKind) -> bool {
    !matches!(action, ActionKind::Escalate | ActionKind::Notify { .. })
}

/// How much a recovery as long as the verify window costs an action's score.
const SLOW_PENALTY: f64 = 0.1;

impl Learner {
    /// A learner with nothing learnt.
    pub fn new(settings: Learn) -> Self {
        Self { settings, tallies: BTreeMap::new(), announced: BTreeMap::new() }
    }

    /// New settings (a reload); what was learnt stays.
    pub fn reconfigure(&mut self, settings: Learn) {
        self.settings = settings;
    }

    /// Counts one outcome.
    pub fn record(&mut self, outcome: &ActionOutcome) {
        let key = TallyKey {
            trigger: outcome.trigger.clone(),
            service: outcome.service.clone(),
            action: outcome.kind.describe(),
        };
        self.tallies.entry(key).or_default().add(outcome);
    }

    /// Forgets what was learnt (for `service`, or everything).
    pub fn forget(&mut self, service: Option<&ServiceName>) {
        match service {
            Some(service) => {
                self.tallies.retain(|key, _| key.service.as_ref() != Some(service));
                self.announced.retain(|(_, s), _| s.as_ref() != Some(service));
            }
            None => {
                self.tallies.clear();
                self.announced.clear();
            }
        }
    }

    /// The tallies.
    pub fn tallies(&self) -> impl Iterator<Item = (&TallyKey, &Tally)> {
        self.tallies.iter()
    }

    fn tally(&self, trigger: &str, service: Option<&ServiceName>, action: &ActionKind) -> Tally {
        let key = TallyKey { trigger: trigger.to_owned(), service: service.cloned(), action: action.describe() };
        self.tallies.get(&key).copied().unwrap_or_default()
    }

    /// The order to try `configured` in for `trigger` on `service` (pure: see [`Learner::decide`] for
    /// the announcing one).
    pub fn order(
        &self,
        trigger: &str,
        service: Option<&ServiceName>,
        configured: &[ActionKind],
        verify: Duration,
    ) -> Order {
        let slots: Vec<usize> = (0..configured.len()).filter(|&idx| movable(&configured[idx])).collect();
        if !self.settings.enabled || slots.len() < 2 {
            return Order { actions: configured.to_vec(), why: None, figures: String::new() };
        }
        let n_slots = slots.len();
        let weight = self.settings.prior_weight;
        let verify_ms = verify.as_millis().max(1) as f64;
        let mut scored: Vec<(f64, usize, usize)> = slots
            .iter()
            .enumerate()
            .map(|(rank, &idx)| {
                // The configured order as the prior: from 0.75 for the first down to 0.5 for the last.
                let prior = 0.5 + 0.25 * (n_slots - 1 - rank) as f64 / (n_slots - 1) as f64;
                let tally = self.tally(trigger, service, &configured[idx]);
                let score = if tally.n >= self.settings.min_outcomes {
                    let mean = (prior * weight + f64::from(tally.n_resolved)) / (weight + f64::from(tally.n));
                    let slow = tally.mean_recover().map_or(0.0, |d| (d.as_millis() as f64 / verify_ms).min(1.0));
                    mean - SLOW_PENALTY * slow
                } else {
                    prior
                };
                (score, rank, idx)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut actions = configured.to_vec();
        for (slot, (_, _, idx)) in slots.iter().zip(&scored) {
            actions[*slot] = configured[*idx].clone();
        }
        let service_text = service.map(|s| format!(" on {s}")).unwrap_or_default();
        let figures: Vec<String> = scored
            .iter()
            .enumerate()
            .map(|(position, (_, _, idx))| {
                let action = &configured[*idx];
                let tally = self.tally(trigger, service, action);
                let record = if tally.n == 0 {
                    "never tried".to_owned()
                } else if position == 0 {
                    format!("healed `{trigger}`{service_text} {} of {} times", tally.n_resolved, tally.n)
                } else {
                    format!("{} of {}", tally.n_resolved, tally.n)
                };
                let thin = if tally.n > 0 && tally.n < self.settings.min_outcomes { " (too few to count)" } else { "" };
                let recover = match tally.mean_recover() {
                    Some(mean) if position == 0 && tally.n >= self.settings.min_outcomes => {
                        format!(" in {}s on average", mean.as_secs())
                    }
                    _ => String::new(),
                };
                format!("{} {record}{recover}{thin}", action.describe())
            })
            .collect();
        let figures = figures.join(", ");
        if actions == configured {
            return Order { actions, why: None, figures };
        }
        let first = scored.first().map(|(_, _, idx)| configured[*idx].describe()).unwrap_or_default();
        let why = format!("{figures}: {first} first");
        Order { actions, why: Some(why), figures }
    }

    /// The order for an incident about to act, and the reordering to announce when it differs from the
    /// last one used for this trigger and service (the configured order at first).
    pub fn decide(
        &mut self,
        trigger: &str,
        service: Option<&ServiceName>,
        configured: &[ActionKind],
        verify: Duration,
    ) -> (Order, Option<String>) {
        let order = self.order(trigger, service, configured, verify);
        let key = (trigger.to_owned(), service.cloned());
        let last = self.announced.get(&key).map(Vec::as_slice).unwrap_or(configured);
        let announce = if last == order.actions.as_slice() {
            None
        } else {
            Some(order.why.clone().unwrap_or_else(|| format!("{}: back to the configured order", order.figures)))
        };
        self.announced.insert(key, order.actions.clone());
        (order, announce)
    }
}

#[cfg(test)]
mod tests {
    use mend_types::{ActionId, IncidentId, Timestamp};

    use super::*;

    fn web() -> ServiceName {
        ServiceName::new("web").expect("valid name")
    }

    fn outcome(kind: &ActionKind, verdict: Verdict, recover_s: u64) -> ActionOutcome {
        ActionOutcome {
            action: ActionId(1),
            incident: IncidentId(1),
            trigger: "hung".to_owned(),
            diagnosis: "hung".to_owned(),
            service: Some(web()),
            kind: kind.clone(),
            verdict,
            started_at: Timestamp::from_millis(0),
            decided_at: Timestamp::from_millis(0),
            verify_ms: 30_000,
            recover_ms: (verdict == Verdict::Resolved).then_some(recover_s * 1000),
        }
    }

    fn feed(learner: &mut Learner, kind: &ActionKind, n_resolved: u32, n: u32) {
        for idx in 0..n {
            let verdict = if idx < n_resolved { Verdict::Resolved } else { Verdict::NotResolved };
            learner.record(&outcome(kind, verdict, 5));
        }
    }

    const SCALE: ActionKind = ActionKind::Scale { delta: 1 };

    /// Restart resolved, restart n, scale resolved, scale n.
    type Record = (u32, u32, u32, u32);

    /// Each record → the first action tried.
    fn check(cases: &[(Record, &str)]) {
        for ((restart_ok, restart_n, scale_ok, scale_n), expected) in cases {
            let mut learner = Learner::new(Learn::default());
            feed(&mut learner, &ActionKind::Restart, *restart_ok, *restart_n);
            feed(&mut learner, &SCALE, *scale_ok, *scale_n);
            let configured = [SCALE, ActionKind::Restart, ActionKind::Escalate];
            let order = learner.order("hung", Some(&web()), &configured, Duration::from_secs(30));
            assert_eq!(
                order.actions[0].describe(),
                *expected,
                "restart {restart_ok}/{restart_n}, scale {scale_ok}/{scale_n}: {:?}",
                order.why
            );
            assert_eq!(order.actions[2], ActionKind::Escalate, "escalate keeps its place");
            assert_eq!(order.actions.len(), 3, "nothing added");
        }
    }

    #[test]
    fn configured_order_holds_until_enough_evidence() {
        check(&[
            // Nothing learnt: as configured.
            ((0, 0, 0, 0), "scale +1"),
            // Restart healed every time but only 4 times (min_outcomes is 5): too few to count.
            ((4, 4, 0, 4), "scale +1"),
            // Enough: restart 9 of 10, scale 2 of 5.
            ((9, 10, 2, 5), "restart"),
            // Both about as good: the configured order breaks the tie.
            ((5, 5, 5, 5), "scale +1"),
            // Scale failing on its own record; restart untried keeps its prior (0.5) above 2/7 of evidence.
            ((0, 0, 0, 6), "restart"),
        ]);
    }

    #[test]
    fn a_reordering_says_why_in_figures_and_is_announced_once() {
        let mut learner = Learner::new(Learn::default());
        feed(&mut learner, &ActionKind::Restart, 9, 10);
        feed(&mut learner, &SCALE, 2, 5);
        let configured = [SCALE, ActionKind::Restart];
        let (order, announce) = learner.decide("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(order.actions, vec![ActionKind::Restart, SCALE]);
        assert_eq!(
            announce.as_deref(),
            Some("restart healed `hung` on web 9 of 10 times in 5s on average, scale +1 2 of 5: restart first")
        );
        let (_, again) = learner.decide("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(again, None, "the same order is not announced twice");
        // Scale does better from then on: back to the configured order, announced.
        feed(&mut learner, &SCALE, 20, 20);
        let (order, back) = learner.decide("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(order.actions, configured.to_vec());
        assert_eq!(
            back.as_deref(),
            Some(
                "scale +1 healed `hung` on web 22 of 25 times in 5s on average, restart 9 of 10: back to the configured order"
            )
        );
        // Forgotten: the configured order, nothing to announce (the reset itself is the operator's).
        feed(&mut learner, &SCALE, 0, 30);
        learner.forget(Some(&web()));
        let (order, after_reset) = learner.decide("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(order.actions, configured.to_vec());
        assert_eq!(after_reset, None);
    }

    #[test]
    fn disabled_learning_keeps_the_configured_order() {
        let mut learner = Learner::new(Learn { enabled: false, ..Learn::default() });
        feed(&mut learner, &ActionKind::Restart, 10, 10);
        feed(&mut learner, &SCALE, 0, 10);
        let configured = [SCALE, ActionKind::Restart];
        let order = learner.order("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(order.actions, configured.to_vec());
    }

    #[test]
    fn a_faster_recovery_breaks_an_even_record() {
        let mut learner = Learner::new(Learn::default());
        for _ in 0..10 {
            learner.record(&outcome(&SCALE, Verdict::Resolved, 28));
            learner.record(&outcome(&ActionKind::Restart, Verdict::Resolved, 2));
        }
        let configured = [SCALE, ActionKind::Restart];
        let order = learner.order("hung", Some(&web()), &configured, Duration::from_secs(30));
        assert_eq!(order.actions, vec![ActionKind::Restart, SCALE]);
    }
}
