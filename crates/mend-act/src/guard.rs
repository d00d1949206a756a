//! The guard: the one place that grants actions. Every action runs with a [`Permit`]; only
//! [`Guard`] constructs one, so an action that skipped the guard does not compile.
//!
//! Limits on policy actions: a token bucket for all services and one per service (refilled over an
//! hour), a cooldown per action and target, `max_unavailable` replicas of a service down or draining at
//! once counting the actions in flight (never the last ready replica of a service that has more than
//! one), scale bounds, and no action on a service that is only a victim of an incident rooted elsewhere.
//! Operators' commands are granted without these limits (a human takes responsibility) but are counted in
//! the budgets; notifications, hooks and escalations are not disruptive and pass.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mend_config::{Healing, ServiceHealing};
use mend_types::{ActionId, ActionKind, ActionRecord, Actor, Diagnosis, ServiceName, Timestamp};

use crate::World;

/// Permission to run one action: made only by [`Guard`].
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    record: ActionRecord,
}

impl Permit {
    /// The action permitted, as journalled.
    pub fn record(&self) -> &ActionRecord {
        &self.record
    }
}

/// Why the guard refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The action budget is spent (`scope`: all services, or one).
    Budget {
        /// `all services` or the service's name.
        scope: String,
        /// Actions per hour allowed.
        per_hour: u32,
    },
    /// The same action on the same target ran too recently.
    Cooldown {
        /// Time left.
        remaining: Duration,
    },
    /// More replicas would be down or draining than `max_unavailable`, or the last ready one would go.
    Unavailable {
        /// Why, for people.
        reason: String,
    },
    /// Outside the service's replica bounds.
    Bounds {
        /// Why.
        reason: String,
    },
    /// The service only suffers from an incident rooted elsewhere.
    Victim {
        /// Where the cause is.
        root: ServiceName,
    },
    /// No such service.
    UnknownService,
    /// A trigger fired on a service that calls others, and the incident is younger than `[healing]
    /// settle`: the diagnosis may yet name one of them as the root (see [`crate::policy::settling`]).
    Settling {
        /// The services it calls.
        calls: Vec<ServiceName>,
        /// Time left.
        remaining: Duration,
    },
}

impl Refusal {
    /// Whether waiting may change the answer (a cooldown passes, a replica comes back, the root is named).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Cooldown { .. } | Self::Unavailable { .. } | Self::Settling { .. })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Budget { scope, per_hour } => write!(f, "action budget of {scope} spent ({per_hour} per hour)"),
            Self::Cooldown { remaining } => write!(f, "cooling down ({}s left)", remaining.as_secs().max(1)),
            Self::Unavailable { reason } | Self::Bounds { reason } => f.write_str(reason),
            Self::Victim { root } => write!(f, "only a victim: the cause is in {root}"),
            Self::UnknownService => f.write_str("no such service"),
            Self::Settling { calls, remaining } => {
                let calls: Vec<&str> = calls.iter().map(ServiceName::as_str).collect();
                write!(
                    f,
                    "it calls {}, whose trouble shows on it too: waiting up to {:.1}s for the diagnosis to name the root",
                    calls.join(", "),
                    remaining.as_secs_f64()
                )
            }
        }
    }
}

/// A token bucket of `capacity` tokens refilled at `capacity` per hour.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    fn new(per_hour: u32, now: Timestamp) -> Self {
        Self { capacity: f64::from(per_hour), tokens: f64::from(per_hour), at: now }
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed = (now.as_millis() - self.at.as_millis()).max(0) as f64 / 3_600_000.0;
        self.tokens = (self.tokens + elapsed * self.capacity).min(self.capacity);
        self.at = now;
    }

    /// A new capacity; the tokens left (or the debt) stay, within it.
    fn resize(&mut self, per_hour: u32) {
        self.capacity = f64::from(per_hour);
        self.tokens = self.tokens.clamp(-self.capacity, self.capacity);
    }

    fn has(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token; returns how much was taken (less than one when the debt is already at its floor, an
    /// operator acting past the budget), which is what a refund gives back.
    fn take(&mut self, now: Timestamp) -> f64 {
        self.refill(now);
        let before = self.tokens;
        self.tokens = (self.tokens - 1.0).max(-self.capacity);
        before - self.tokens
    }

    /// Gives back what was taken for an action that did not run.
    fn give_back(&mut self, taken: f64, now: Timestamp) {
        self.refill(now);
        self.tokens = (self.tokens + taken.max(0.0)).min(self.capacity);
    }
}

/// The guard.
#[derive(Debug, Clone)]
pub struct Guard {
    healing: Healing,
    services: BTreeMap<ServiceName, ServiceHealing>,
    global: Option<Bucket>,
    per_service: BTreeMap<ServiceName, Bucket>,
    /// When each action last started on each target, and the grant that started it.
    last: BTreeMap<(&'static str, ServiceName, Option<u32>), (Timestamp, ActionId)>,
    /// Disruptive actions running: their service and replica (None: the whole service, one at a time).
    in_flight: BTreeMap<ActionId, (ServiceName, Option<u32>)>,
    /// For each granted action not finished yet, what [`Guard::refund`] puts back when it never ran.
    granted: BTreeMap<ActionId, Grant>,
}

/// What a grant changed, to be undone if its action never runs.
#[derive(Debug, Clone, Copy)]
struct Grant {
    /// The cooldown start it replaced.
    replaced: Option<(Timestamp, ActionId)>,
    /// Tokens it took from the global and the service's bucket.
    taken: (f64, f64),
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Guard {
    /// A guard with `healing`'s limits and the services' own.
    pub fn new(healing: Healing, services: BTreeMap<ServiceName, ServiceHealing>) -> Self {
        Self {
            healing,
            services,
            global: None,
            per_service: BTreeMap::new(),
            last: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            granted: BTreeMap::new(),
        }
    }

    /// Takes new limits (a reload), keeping what was spent: a bucket takes its new capacity and keeps its
    /// tokens (at most the new capacity), so that a reload never refills a spent budget.
    pub fn reconfigure(&mut self, healing: Healing, services: BTreeMap<ServiceName, ServiceHealing>) {
        self.healing = healing;
        self.services = services;
        let global_per_hour = self.healing.max_actions_per_hour;
        if let Some(global) = &mut self.global {
            global.resize(global_per_hour);
        }
        let per_hour: Vec<(ServiceName, u32)> =
            self.per_service.keys().map(|service| (service.clone(), self.service_per_hour(service))).collect();
        for (service, per_hour) in per_hour {
            if let Some(bucket) = self.per_service.get_mut(&service) {
                bucket.resize(per_hour);
            }
        }
    }

    fn service_per_hour(&self, service: &ServiceName) -> u32 {
        self.services
            .get(service)
            .and_then(|s| s.max_actions_per_hour)
            .unwrap_or(self.healing.service_max_actions_per_hour)
    }

    /// The `max_unavailable` of `service`.
    pub fn max_unavailable(&self, service: &ServiceName) -> u32 {
        self.services.get(service).and_then(|s| s.max_unavailable).unwrap_or(self.healing.max_unavailable)
    }

    fn global(&mut self, now: Timestamp) -> &mut Bucket {
        let per_hour = self.healing.max_actions_per_hour;
        self.global.get_or_insert_with(|| Bucket::new(per_hour, now))
    }

    fn bucket(&mut self, service: &ServiceName, now: Timestamp) -> &mut Bucket {
        let per_hour = self.service_per_hour(service);
        self.per_service.entry(service.clone()).or_insert_with(|| Bucket::new(per_hour, now))
    }

    /// Whether `record` (a policy's action) may run now, without spending anything.
    pub fn check(
        &mut self,
        record: &ActionRecord,
        world: &World,
        diagnosis: &Diagnosis,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let Some(service) = record.service.clone() else { return Ok(()) };
        if !record.action.spends_budget() {
            return Ok(());
        }
        if let Some(root) = &diagnosis.root
            && *root != service
            && diagnosis.victims.contains(&service)
        {
            return Err(Refusal::Victim { root: root.clone() });
        }
        let view = world.services.get(&service).ok_or(Refusal::UnknownService)?;
        if !self.global(now).has(now) {
            return Err(Refusal::Budget { scope: "all services".into(), per_hour: self.healing.max_actions_per_hour });
        }
        if !self.bucket(&service, now).has(now) {
            return Err(Refusal::Budget { scope: service.to_string(), per_hour: self.service_per_hour(&service) });
        }
        let key = (record.action.label(), service.clone(), record.replica);
        if let Some((last, _)) = self.last.get(&key) {
            let since = now.as_millis() - last.as_millis();
            let cooldown = millis(self.healing.cooldown);
            if since < cooldown {
                return Err(Refusal::Cooldown { remaining: Duration::from_millis((cooldown - since) as u64) });
            }
        }
        if !record.action.disrupts() && !matches!(record.action, ActionKind::Scale { .. }) {
            // A rollback starts the other release beside the running one before draining it: no capacity
            // is taken.
            return Ok(());
        }
        self.check_capacity(record, &service, view)
    }

    /// Bounds (a scale) and `max_unavailable` (a disruptive action, a scale-in): what no actor but an
    /// operator may exceed.
    fn check_capacity(
        &self,
        record: &ActionRecord,
        service: &ServiceName,
        view: &crate::ServiceView,
    ) -> Result<(), Refusal> {
        let service = service.clone();
        let bounds = self.services.get(&service).map_or((1, u32::MAX), |s| (s.min_replicas, s.max_replicas));
        let n_replicas = view.replicas.len() as u32;
        if let ActionKind::Scale { delta } = record.action {
            let wanted = i64::from(n_replicas) + i64::from(delta);
            if wanted < i64::from(bounds.0) || wanted > i64::from(bounds.1) {
                return Err(Refusal::Bounds {
                    reason: format!(
                        "{service} would have {wanted} replicas, outside min_replicas {} .. max_replicas {}",
                        bounds.0, bounds.1
                    ),
                });
            }
            if delta > 0 {
                return Ok(());
            }
        }
        // Replicas down or draining now: not ready, or being acted on; the target itself not counted.
        let mut unavailable: Vec<u32> = view.replicas.iter().filter(|r| !r.ready).map(|r| r.index).collect();
        let mut whole_service_busy = false;
        for (other_service, replica) in self.in_flight.values() {
            if *other_service == service {
                match replica {
                    Some(index) => unavailable.push(*index),
                    None => whole_service_busy = true,
                }
            }
        }
        unavailable.sort_unstable();
        unavailable.dedup();
        if let Some(target) = record.replica {
            unavailable.retain(|index| *index != target);
        }
        let taking: usize = match record.action {
            ActionKind::Scale { delta } => delta.unsigned_abs() as usize,
            _ => 1,
        };
        let max_unavailable = self.max_unavailable(&service) as usize;
        let busy = unavailable.len() + usize::from(whole_service_busy);
        if busy + taking > max_unavailable {
            return Err(Refusal::Unavailable {
                reason: format!(
                    "{busy} of {n_replicas} replicas of {service} are down or draining; max_unavailable is {max_unavailable}"
                ),
            });
        }
        // Never the last ready replica of a service that has others (one that has a single replica has no
        // other to serve meanwhile: restarting it is what the supervisor would do too).
        let target_ready = record.replica.is_none_or(|index| view.is_ready(index));
        let ready_after = view.n_ready().saturating_sub(if target_ready { taking } else { 0 });
        if n_replicas > 1 && ready_after == 0 {
            return Err(Refusal::Unavailable {
                reason: format!("it would take the last ready replica of {service} out"),
            });
        }
        Ok(())
    }

    /// Grants a policy's action: checks it, spends a token of each bucket, starts its cooldown.
    pub fn grant(
        &mut self,
        record: ActionRecord,
        world: &World,
        diagnosis: &Diagnosis,
        now: Timestamp,
    ) -> Result<Permit, Refusal> {
        self.check(&record, world, diagnosis, now)?;
        Ok(self.issue(record, now))
    }

    /// Grants the autoscaler's scale of `record.service`: within the replica bounds and, scaling in,
    /// `max_unavailable`; not limited by (nor spent from) the policies' budgets and cooldowns, as the
    /// autoscaler has its own rate limits and flap budget.
    pub fn grant_autoscale(&mut self, record: ActionRecord, world: &World) -> Result<Permit, Refusal> {
        let Some(service) = record.service.clone() else { return Err(Refusal::UnknownService) };
        debug_assert!(matches!(record.action, ActionKind::Scale { .. }), "the autoscaler only scales");
        let view = world.services.get(&service).ok_or(Refusal::UnknownService)?;
        self.check_capacity(&record, &service, view)?;
        if record.action.disrupts() {
            self.in_flight.insert(record.id, (service, record.replica));
        }
        Ok(Permit { record })
    }

    /// Grants an operator's command (no limits; counted in the budgets and cooldowns) or a notification.
    pub fn grant_unchecked(&mut self, record: ActionRecord, now: Timestamp) -> Permit {
        debug_assert!(
            matches!(record.actor, Actor::Operator) || !record.action.disrupts(),
            "only operators and notifications pass unchecked"
        );
        self.issue(record, now)
    }

    fn issue(&mut self, record: ActionRecord, now: Timestamp) -> Permit {
        if let Some(service) = record.service.clone()
            && record.action.spends_budget()
        {
            let taken = (self.global(now).take(now), self.bucket(&service, now).take(now));
            let replaced = self.last.insert((record.action.label(), service.clone(), record.replica), (now, record.id));
            self.granted.insert(record.id, Grant { replaced, taken });
            if record.action.disrupts() {
                self.in_flight.insert(record.id, (service, record.replica));
            }
        }
        Permit { record }
    }

    /// Action `id` ended: it no longer counts as in flight.
    pub fn finished(&mut self, id: ActionId) {
        self.in_flight.remove(&id);
        self.granted.remove(&id);
    }

    /// Granted action `record` was refused after the grant (by the fleet, before it ran): nothing was done,
    /// so the budgets get their tokens back and its cooldown is the one before it, as if it had never been
    /// granted. Otherwise a refusal would hold the service's next action for a whole cooldown although
    /// nothing ran.
    pub fn refund(&mut self, record: &ActionRecord, now: Timestamp) {
        self.in_flight.remove(&record.id);
        let Some(Grant { replaced, taken }) = self.granted.remove(&record.id) else { return };
        let Some(service) = record.service.clone() else { return };
        self.global(now).give_back(taken.0, now);
        self.bucket(&service, now).give_back(taken.1, now);
        let key = (record.action.label(), service, record.replica);
        if self.last.get(&key).is_some_and(|(_, id)| *id == record.id) {
            match replaced {
                Some(before) => self.last.insert(key, before),
                None => self.last.remove(&key),
            };
        } else {
            // A later grant (an operator's, say) started the cooldown since: it stands, and should that
            // one be refunded too, what it puts back is what stood before this one.
            for later in self.granted.values_mut() {
                if later.replaced.is_some_and(|(_, id)| id == record.id) {
                    later.replaced = replaced;
                }
            }
        }
    }

    /// Disruptive actions in flight on `service`.
    pub fn in_flight(&self, service: &ServiceName) -> usize {
        self.in_flight.values().filter(|(s, _)| s == service).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReplicaView, ServiceView};

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    /// `web` with `n` replicas, ready as `ready` says.
    fn web_world(n: u32, ready: impl Fn(u32) -> bool) -> World {
        let replicas = (0..n).map(|index| ReplicaView { index, ready: ready(index) }).collect();
        World { services: BTreeMap::from([(name("web"), ServiceView { replicas })]) }
    }

    fn restart(id: u64, replica: u32, now: Timestamp) -> ActionRecord {
        ActionRecord {
            id: ActionId(id),
            incident: None,
            action: ActionKind::Restart,
            service: Some(name("web")),
            replica: Some(replica),
            actor: Actor::Policy { when: "alert:Slow".into(), step: 0 },
            reason: "test".into(),
            state: mend_types::ActionState::Running,
            requested_at: now,
            started_at: Some(now),
            finished_at: None,
            outcome: None,
            output: String::new(),
        }
    }

    #[test]
    fn a_reload_keeps_what_the_budgets_have_spent() {
        let world = web_world(4, |_| true);
        let healing = Healing {
            max_actions_per_hour: 100,
            service_max_actions_per_hour: 2,
            cooldown: Duration::ZERO,
            ..Healing::default()
        };
        let mut guard = Guard::new(healing.clone(), BTreeMap::new());
        let now = Timestamp::from_millis(1_000_000);
        let diagnosis = Diagnosis::default();
        for (id, replica) in [(1, 0), (2, 1)] {
            let permit = guard.grant(restart(id, replica, now), &world, &diagnosis, now).expect("within budget");
            guard.finished(permit.record().id);
        }
        let spent = guard.check(&restart(3, 2, now), &world, &diagnosis, now);
        assert_eq!(spent, Err(Refusal::Budget { scope: "web".into(), per_hour: 2 }));
        // A reload with the same limits does not refill the buckets; a lower limit lowers what is left.
        guard.reconfigure(healing.clone(), BTreeMap::new());
        assert_eq!(guard.check(&restart(3, 2, now), &world, &diagnosis, now), spent);
        let stricter = Healing { service_max_actions_per_hour: 1, ..healing.clone() };
        guard.reconfigure(stricter, BTreeMap::new());
        assert_eq!(
            guard.check(&restart(3, 2, now), &world, &diagnosis, now),
            Err(Refusal::Budget { scope: "web".into(), per_hour: 1 })
        );
        // Time refills at the configured rate: two per hour, one token after half an hour.
        guard.reconfigure(healing, BTreeMap::new());
        let later = Timestamp::from_millis(now.as_millis() + 30 * 60 * 1000 + 1000);
        assert_eq!(guard.check(&restart(3, 2, later), &world, &diagnosis, later), Ok(()));
    }

    #[test]
    fn a_policys_rollback_spends_the_budget_and_cools_down_but_takes_no_capacity() {
        // Every replica but one down: a restart would exceed max_unavailable, a rollback (surge first) not.
        let world = web_world(3, |index| index == 0);
        let healing = Healing {
            max_actions_per_hour: 100,
            service_max_actions_per_hour: 2,
            cooldown: Duration::from_secs(60),
            ..Healing::default()
        };
        let mut guard = Guard::new(healing, BTreeMap::new());
        let now = Timestamp::from_millis(1_000_000);
        let diagnosis = Diagnosis::default();
        let rollback = |id: u64| ActionRecord { action: ActionKind::Rollback, replica: None, ..restart(id, 0, now) };
        guard.grant(rollback(1), &world, &diagnosis, now).expect("a rollback takes no capacity");
        // A bad_release that keeps firing does not swap releases again within the cooldown...
        assert!(matches!(guard.check(&rollback(2), &world, &diagnosis, now), Err(Refusal::Cooldown { .. })));
        // ...and after it, only within the budget.
        let later = Timestamp::from_millis(now.as_millis() + 61_000);
        guard.grant(rollback(2), &world, &diagnosis, later).expect("the second within budget");
        let after = Timestamp::from_millis(later.as_millis() + 61_000);
        assert_eq!(
            guard.check(&rollback(3), &world, &diagnosis, after),
            Err(Refusal::Budget { scope: "web".into(), per_hour: 2 })
        );
    }

    #[test]
    fn an_action_refused_after_its_grant_gives_back_its_budget_and_cooldown() {
        let world = web_world(2, |_| true);
        let healing = Healing {
            max_actions_per_hour: 100,
            service_max_actions_per_hour: 2,
            cooldown: Duration::from_secs(60),
            ..Healing::default()
        };
        let mut guard = Guard::new(healing, BTreeMap::new());
        let now = Timestamp::from_millis(1_000_000);
        let diagnosis = Diagnosis::default();
        let permit = guard.grant(restart(1, 0, now), &world, &diagnosis, now).expect("the first");
        assert_eq!(guard.in_flight(&name("web")), 1);
        // Granted, then refused (by the fleet) before it ran: as if never granted.
        guard.refund(permit.record(), now);
        assert_eq!(guard.in_flight(&name("web")), 0);
        let soon = Timestamp::from_millis(now.as_millis() + 4_000);
        let permit = guard.grant(restart(2, 0, soon), &world, &diagnosis, soon).expect("no cooldown, budget back");
        // One that ran keeps both: its cooldown holds and its token stays spent.
        guard.finished(permit.record().id);
        guard.refund(permit.record(), soon);
        assert!(matches!(guard.check(&restart(3, 0, soon), &world, &diagnosis, soon), Err(Refusal::Cooldown { .. })));
        guard.grant(restart(3, 1, soon), &world, &diagnosis, soon).expect("the second token");
        let later = Timestamp::from_millis(soon.as_millis() + 61_000);
        assert_eq!(
            guard.check(&restart(4, 0, later), &world, &diagnosis, later),
            Err(Refusal::Budget { scope: "web".into(), per_hour: 2 })
        );
    }

    #[test]
    fn a_refund_leaves_a_cooldown_a_later_grant_started() {
        let world = web_world(2, |_| true);
        let healing = Healing { cooldown: Duration::from_secs(60), ..Healing::default() };
        let mut guard = Guard::new(healing, BTreeMap::new());
        let now = Timestamp::from_millis(1_000_000);
        let diagnosis = Diagnosis::default();
        let automatic = guard.grant(restart(1, 0, now), &world, &diagnosis, now).expect("granted");
        // An operator restarts the same replica meanwhile; then the automatic one is refused by the fleet.
        let soon = Timestamp::from_millis(now.as_millis() + 2_000);
        let operator = guard.grant_unchecked(ActionRecord { actor: Actor::Operator, ..restart(2, 0, soon) }, soon);
        guard.finished(operator.record().id);
        guard.refund(automatic.record(), soon);
        // The operator's restart ran: its cooldown holds.
        assert!(matches!(guard.check(&restart(3, 0, soon), &world, &diagnosis, soon), Err(Refusal::Cooldown { .. })));

        // Both refused, the later first: no cooldown is left of either.
        let later = Timestamp::from_millis(now.as_millis() + 120_000);
        let first = guard.grant(restart(4, 0, later), &world, &diagnosis, later).expect("granted");
        let after = Timestamp::from_millis(later.as_millis() + 1_000);
        let second = guard.grant_unchecked(ActionRecord { actor: Actor::Operator, ..restart(5, 0, after) }, after);
        guard.refund(first.record(), after);
        assert!(matches!(guard.check(&restart(6, 0, after), &world, &diagnosis, after), Err(Refusal::Cooldown { .. })));
        guard.refund(second.record(), after);
        assert_eq!(guard.check(&restart(6, 0, after), &world, &diagnosis, after), Ok(()));
    }

    #[test]
    fn a_refund_gives_back_only_what_its_grant_took() {
        let world = web_world(4, |_| true);
        let healing = Healing {
            max_actions_per_hour: 100,
            service_max_actions_per_hour: 2,
            cooldown: Duration::ZERO,
            ..Healing::default()
        };
        let mut guard = Guard::new(healing, BTreeMap::new());
        let now = Timestamp::from_millis(1_000_000);
        let diagnosis = Diagnosis::default();
        // An operator acts past the budget: 2 tokens, 5 restarts; the debt stops at −2, so the last ones
        // took nothing.
        let operator = |id: u64| ActionRecord { actor: Actor::Operator, ..restart(id, (id % 4) as u32, now) };
        let mut permits: Vec<Permit> = (1..=5).map(|id| guard.grant_unchecked(operator(id), now)).collect();
        let last = permits.pop().expect("five");
        for permit in &permits[1..] {
            guard.finished(permit.record().id);
        }
        // Refunding one that took nothing leaves the debt where it is: an hour's refill (2) brings the
        // bucket back to 0, not to 1, so the next automatic restart still waits.
        guard.refund(last.record(), now);
        let hour = Timestamp::from_millis(now.as_millis() + 3_600_000);
        let next = guard.check(&restart(9, 0, hour), &world, &diagnosis, hour);
        assert_eq!(next, Err(Refusal::Budget { scope: "web".into(), per_hour: 2 }));
        // Refunding one that took a token gives that token back.
        guard.refund(permits[0].record(), hour);
        assert_eq!(guard.check(&restart(9, 0, hour), &world, &diagnosis, hour), Ok(()));
    }
}
