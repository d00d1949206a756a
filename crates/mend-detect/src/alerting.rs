//! Alerting-rule state, with Prometheus's semantics: pending for `for`, firing, kept firing for
//! `keep_firing_for` after the condition stops holding, then resolved.

use std::collections::BTreeMap;

/// A label set identifying one alert of a rule (one sample of the rule's result).
pub type LabelSet = BTreeMap<String, String>;

/// A change of an alert's state worth reporting.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertTransition {
    /// Which alert.
    pub labels: LabelSet,
    /// True when it starts firing, false when it resolves.
    pub firing: bool,
    /// When the condition started to hold (seconds).
    pub active_since: f64,
    /// The value of the rule's expression for it when it starts firing; NaN when it resolves: the
    /// expression no longer returns the alert, so there is no value at resolution (the last firing
    /// value would be stale).
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct Alert {
    active_since: f64,
    last_active: f64,
    firing: bool,
}

/// The alerts of one rule.
#[derive(Clone, Debug, Default)]
pub struct RuleState {
    alerts: BTreeMap<LabelSet, Alert>,
}

impl RuleState {
    /// Feeds one evaluation at `now` (seconds): `active` holds every sample the expression returned.
    /// Returns the alerts that started firing or resolved.
    pub fn evaluate(
        &mut self,
        active: impl IntoIterator<Item = (LabelSet, f64)>,
        now: f64,
        for_secs: f64,
        keep_firing_for_secs: f64,
    ) -> Vec<AlertTransition> {
        let mut transitions = Vec::new();
        let mut seen: Vec<LabelSet> = Vec::new();
        for (labels, value) in active {
            let alert = self.alerts.entry(labels.clone()).or_insert(Alert {
                active_since: now,
                last_active: now,
                firing: false,
            });
            alert.last_active = now;
            if !alert.firing && now - alert.active_since >= for_secs {
                alert.firing = true;
                transitions.push(AlertTransition {
                    labels: labels.clone(),
                    firing: true,
                    active_since: alert.active_since,
                    value,
                });
            }
            seen.push(labels);
        }
        self.alerts.retain(|labels, alert| {
            if seen.contains(labels) {
                return true;
            }
            if !alert.firing {
                // Pending alerts that stop holding are forgotten silently, as in Prometheus.
                return false;
            }
            if now - alert.last_active < keep_firing_for_secs {
                return true;
            }
            transitions.push(AlertTransition {
                labels: labels.clone(),
                firing: false,
                active_since: alert.active_since,
                value: f64::NAN,
            });
            false
        });
        transitions
    }

    /// Alerts currently firing.
    pub fn firing(&self) -> impl Iterator<Item = &LabelSet> {
        self.alerts.iter().filter(|(_, alert)| alert.firing).map(|(labels, _)| labels)
    }

    /// Alerts currently pending (holding, but not yet for `for`).
    pub fn pending(&self) -> usize {
        self.alerts.values().filter(|alert| !alert.firing).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(service: &str) -> LabelSet {
        LabelSet::from([("service".to_owned(), service.to_owned())])
    }

    /// Runs evaluations `(now, active services)` and renders transitions as `+web@t` / `-web@t`.
    fn check(for_secs: f64, keep_secs: f64, steps: &[(f64, &[&str])], expected: &[&str]) {
        let mut state = RuleState::default();
        let mut rendered = Vec::new();
        for (now, active) in steps {
            let samples = active.iter().map(|service| (labels(service), 1.0));
            for transition in state.evaluate(samples, *now, for_secs, keep_secs) {
                let sign = if transition.firing { '+' } else { '-' };
                rendered.push(format!("{sign}{}@{now}", transition.labels["service"]));
            }
        }
        assert_eq!(rendered, expected);
    }

    #[test]
    fn fires_after_for_and_resolves_when_the_condition_stops() {
        check(
            10.0,
            0.0,
            &[(0.0, &["web"]), (5.0, &["web"]), (10.0, &["web"]), (11.0, &["web"]), (12.0, &[])],
            &["+web@10", "-web@12"],
        );
    }

    #[test]
    fn a_pending_alert_that_stops_holding_never_fires() {
        check(
            10.0,
            0.0,
            &[(0.0, &["web"]), (5.0, &["web"]), (6.0, &[]), (7.0, &["web"]), (16.0, &["web"]), (17.0, &["web"])],
            &["+web@17"],
        );
    }

    #[test]
    fn zero_for_fires_at_once_and_keep_firing_for_holds_through_flaps() {
        check(
            0.0,
            5.0,
            &[(0.0, &["web"]), (1.0, &[]), (2.0, &["web"]), (3.0, &[]), (6.0, &[]), (7.0, &[])],
            &["+web@0", "-web@7"],
        );
    }

    #[test]
    fn a_resolved_alert_does_not_repeat_its_firing_value() {
        let mut state = RuleState::default();
        let fired = state.evaluate([(labels("web"), 0.3)], 0.0, 0.0, 0.0);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].firing, fired[0].value), (true, 0.3));
        let resolved = state.evaluate([], 1.0, 0.0, 0.0);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing && resolved[0].value.is_nan(), "{resolved:?}");
    }

    #[test]
    fn label_sets_are_independent() {
        check(0.0, 0.0, &[(0.0, &["web", "db"]), (1.0, &["db"]), (2.0, &[])], &["+web@0", "+db@0", "-web@1", "-db@2"]);
    }
}
