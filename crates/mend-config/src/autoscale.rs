//! `[service.NAME.autoscale]` (or `autoscale = { min = 2, max = 8, target = "cpu 70%" }`): the replica
//! count follows a metric per replica, as Kubernetes' HorizontalPodAutoscaler does.

use std::time::Duration;

use serde::Deserialize;

use crate::PortRange;
use crate::validate::{KeyPath, Problems, duration, integer};

/// The raw table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAutoscale {
    min: Option<i64>,
    max: Option<i64>,
    target: Option<RawTarget>,
    query: Option<String>,
    tolerance: Option<f64>,
    window: Option<String>,
    interval: Option<String>,
    rate_window: Option<String>,
    max_up: Option<i64>,
    max_down: Option<i64>,
    flap_budget: Option<i64>,
}

/// `target = "cpu 70%"`, or a number (with `query`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawTarget {
    Number(f64),
    Text(String),
}

/// What the autoscaler measures per replica.
#[derive(Debug, Clone, PartialEq)]
pub enum AutoscaleMetric {
    /// CPU per replica, in percent of one core (`mend_replica_cpu_percent`), averaged over the replicas
    /// that report it.
    Cpu,
    /// A PromQL expression: its values summed and divided by the replicas running (a request rate from
    /// the proxy's `mend_proxy_*` series, say).
    Query(String),
}

/// A service's autoscaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// What is measured.
    pub metric: AutoscaleMetric,
    /// The value per replica aimed at (percent for CPU).
    pub target: f64,
    /// No change while the observed value is within this fraction of the target (0.1: 10 %).
    pub tolerance: f64,
    /// Scale-down stabilisation: the count goes down only to the highest recommendation over this window.
    pub window: Duration,
    /// How often the autoscaler decides.
    pub interval: Duration,
    /// The window over which `max_up` and `max_down` count.
    pub rate_window: Duration,
    /// Most replicas added within `rate_window`.
    pub max_up: u32,
    /// Most replicas removed within `rate_window`.
    pub max_down: u32,
    /// Most replica starts and stops per hour; beyond it the count holds and a signal is raised.
    pub flap_budget: u32,
}

impl AutoscaleMetric {
    /// `cpu` or `query`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Query(_) => "query",
        }
    }
}

/// Checks a service's `autoscale` table against its replicas and ports.
pub(crate) fn validate(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    raw: &RawAutoscale,
    replicas: Option<u32>,
    ports: Option<PortRange>,
) -> Option<Autoscale> {
    let errors_before = problems.count();
    let min = match raw.min {
        None => {
            problems.add(path, "missing key \"min\" (e.g. autoscale = { min = 2, max = 8, target = \"cpu 70%\" })");
            None
        }
        Some(min) => integer(problems, &path.key("min"), Some(min), 1..=1024, 1),
    };
    let max = match raw.max {
        None => {
            problems.add(path, "missing key \"max\" (e.g. autoscale = { min = 2, max = 8, target = \"cpu 70%\" })");
            None
        }
        Some(max) => integer(problems, &path.key("max"), Some(max), 1..=1024, 1),
    };
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            problems.add(&path.key("min"), format!("min {min} is above max {max}"));
        }
        if let Some(ports) = ports
            && max > i64::from(ports.len())
        {
            problems.add(
                &path.key("max"),
                format!("max {max} needs more ports than ports = \"{ports}\" holds ({})", ports.len()),
            );
        }
        if let Some(replicas) = replicas
            && (i64::from(replicas) < min || i64::from(replicas) > max)
        {
            problems.add(&path.key("min"), format!("replicas = {replicas} is outside min {min} .. max {max}"));
        }
    }
    let target_path = path.key("target");
    let metric_and_target = match (&raw.target, &raw.query) {
        (None, _) => {
            problems.add(path, "missing key \"target\" (\"cpu 70%\", or a number per replica with query)");
            None
        }
        (Some(RawTarget::Text(text)), None) => match parse_cpu(text) {
            Ok(percent) => Some((AutoscaleMetric::Cpu, percent)),
            Err(message) => {
                problems.add(&target_path, message);
                None
            }
        },
        (Some(RawTarget::Text(_)), Some(_)) => {
            problems.add(&target_path, "with query, target is the query's value per replica: a number (e.g. 50)");
            None
        }
        (Some(RawTarget::Number(_)), None) => {
            problems.add(
                &target_path,
                "a number needs query (the PromQL expression it is the target of), or write \"cpu 70%\"",
            );
            None
        }
        (Some(RawTarget::Number(value)), Some(expr)) => {
            let mut ok = true;
            if !(value.is_finite() && *value > 0.0) {
                problems.add(&target_path, format!("{value} is not a positive number"));
                ok = false;
            }
            if let Err(message) = crate::promql::check(expr, crate::promql::Expect::Series) {
                problems.add(&path.key("query"), message);
                ok = false;
            }
            ok.then(|| (AutoscaleMetric::Query(expr.clone()), *value))
        }
    };
    let tolerance = match raw.tolerance {
        None => Some(0.1),
        Some(t) if (0.0..1.0).contains(&t) => Some(t),
        Some(t) => {
            problems.add(&path.key("tolerance"), format!("{t} is out of range (a fraction from 0 to below 1)"));
            None
        }
    };
    let window = duration(problems, &path.key("window"), raw.window.as_ref(), Duration::from_secs(300));
    let interval = duration(problems, &path.key("interval"), raw.interval.as_ref(), Duration::from_secs(15));
    if interval.is_some_and(|i| i < Duration::from_millis(100)) {
        problems.add(&path.key("interval"), "the interval must be at least 100ms");
    }
    let rate_window = duration(problems, &path.key("rate_window"), raw.rate_window.as_ref(), Duration::from_secs(60));
    let max_up = integer(problems, &path.key("max_up"), raw.max_up, 1..=1024, 4);
    let max_down = integer(problems, &path.key("max_down"), raw.max_down, 1..=1024, 1);
    let flap_budget = integer(problems, &path.key("flap_budget"), raw.flap_budget, 1..=100_000, 30);
    if problems.count() > errors_before {
        return None;
    }
    let (metric, target) = metric_and_target?;
    Some(Autoscale {
        min: min? as u32,
        max: max? as u32,
        metric,
        target,
        tolerance: tolerance?,
        window: window?,
        interval: interval?,
        rate_window: rate_window?,
        max_up: max_up? as u32,
        max_down: max_down? as u32,
        flap_budget: flap_budget? as u32,
    })
}

/// `cpu 70%` → 70.
fn parse_cpu(text: &str) -> Result<f64, String> {
    let wrong = || {
        format!("{text:?} is not a target: write \"cpu 70%\" (percent of one core per replica), or a number with query")
    };
    let rest = text.trim().strip_prefix("cpu").ok_or_else(wrong)?;
    let percent = rest.trim().strip_suffix('%').ok_or_else(wrong)?;
    let percent: f64 = percent.trim().parse().map_err(|_| wrong())?;
    if percent.is_finite() && percent > 0.0 { Ok(percent) } else { Err(wrong()) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(autoscale: &str) -> Result<crate::Config, String> {
        let text = format!(
            "[service.web]\ncommand = [\"demo\", \"--port\", \"{{port}}\"]\nreplicas = 2\nports = \"9000-9007\"\n{autoscale}\n"
        );
        crate::parse("mend.toml", &text, Path::new("/tmp")).map_err(|errors| errors.to_string())
    }

    #[test]
    fn cpu_and_query_targets_with_defaults() {
        let config = parse("autoscale = { min = 2, max = 8, target = \"cpu 70%\" }").expect("valid");
        let autoscale = config.services[0].autoscale.clone().expect("autoscale");
        assert_eq!((autoscale.min, autoscale.max, autoscale.target), (2, 8, 70.0));
        assert_eq!(autoscale.metric, super::AutoscaleMetric::Cpu);
        assert_eq!((autoscale.tolerance, autoscale.window.as_secs(), autoscale.flap_budget), (0.1, 300, 30));
        // The bounds are those of `scale ±N` in a policy too.
        let healing = &config.services[0].healing;
        assert_eq!((healing.min_replicas, healing.max_replicas), (2, 8));
        let config = parse(
            "[service.web.autoscale]\nmin = 1\nmax = 4\nquery = 'sum(rate(mend_proxy_requests_total{service=\"web\"}[30s]))'\ntarget = 50\nwindow = \"30s\"",
        )
        .expect("valid");
        let autoscale = config.services[0].autoscale.clone().expect("autoscale");
        assert!(matches!(autoscale.metric, super::AutoscaleMetric::Query(_)));
        assert_eq!((autoscale.target, autoscale.window.as_secs()), (50.0, 30));
    }

    #[test]
    fn every_problem_is_named_with_its_line_and_key() {
        let errors = parse("[service.web.autoscale]\nmin = 3\nmax = 9\ntarget = \"memory 70%\"\nspeed = 1")
            .expect_err("invalid");
        assert!(errors.contains("mend.toml:9:") && errors.contains("speed"), "{errors}");
        let errors = parse("[service.web.autoscale]\nmin = 3\nmax = 9\ntarget = \"memory 70%\"").expect_err("invalid");
        assert!(
            errors.contains("mend.toml:7:")
                && errors.contains("service.web.autoscale.max")
                && errors.contains("holds (8)"),
            "{errors}"
        );
        assert!(
            errors.contains("service.web.autoscale.min") && errors.contains("replicas = 2 is outside min 3 .. max 9"),
            "{errors}"
        );
        assert!(
            errors.contains("mend.toml:8:")
                && errors.contains("service.web.autoscale.target")
                && errors.contains("\"memory 70%\" is not a target"),
            "{errors}"
        );
        let errors = parse("[service.web.autoscale]\nmin = 1\nmax = 4\ntarget = 5").expect_err("invalid");
        assert!(errors.contains("needs query"), "{errors}");
        let errors =
            parse("[service.web.autoscale]\nmin = 1\nmax = 4\ntarget = 5\nquery = 'rate(x[1m]'").expect_err("invalid");
        assert!(errors.contains("service.web.autoscale.query"), "{errors}");
        let errors =
            parse("[service.web.autoscale]\nmax = 4\ntarget = \"cpu 50%\"\ntolerance = 2.0").expect_err("invalid");
        assert!(errors.contains("missing key \"min\"") && errors.contains("autoscale.tolerance"), "{errors}");
    }
}
