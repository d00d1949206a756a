//! Root-cause ranking on synthetic incidents: chains, hubs, no graph, noise.

use mend_diagnose::{Component, DependencyGraph, EdgeSource, Propagation, RankInput, RankParams, SeriesInput, rank};
use mend_types::Timestamp;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
}

/// The incident's onset.
const ONSET: i64 = 3600;

/// Ten-second samples for an hour and five minutes: `base` with deterministic noise of ±`noise` (a
/// share of `base`) until `change_secs`, then `after(t)` (with the same noise).
fn series(component: &str, metric: &str, base: f64, noise: f64, change_secs: i64, after: f64) -> SeriesInput {
    let mut state = component.bytes().fold(17_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    SeriesInput {
        component: Component::new(component),
        instance: None,
        metric: metric.to_owned(),
        points: (0..3900)
            .step_by(10)
            .map(|t| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let jitter = 1.0 + noise * (((state >> 33) % 1000) as f64 / 500.0 - 1.0);
                (at(t), if t >= change_secs { after * jitter } else { base * jitter })
            })
            .collect(),
    }
}

fn graph(edges: &[(&str, &str)]) -> DependencyGraph {
    let mut graph = DependencyGraph::new();
    for (caller, callee) in edges {
        graph.add(Component::new(caller), Component::new(callee), EdgeSource::Declared);
    }
    graph
}

fn ranked(series: &[SeriesInput], graph: &DependencyGraph) -> Vec<String> {
    let ranking = rank(&RankInput { onset: at(ONSET), now: at(3890), series, graph, params: RankParams::default() });
    ranking.names().into_iter().map(str::to_owned).collect()
}

/// web → orders → db, a fault at db: every service's latency rose, and the caller's the most (it adds
/// its own time to what it waits for, and its baseline is the tightest).
fn chain(onsets: [i64; 3]) -> Vec<SeriesInput> {
    vec![
        series("web", "latency_p99_seconds", 0.040, 0.05, onsets[0], 2.0),
        series("orders", "latency_p99_seconds", 0.030, 0.10, onsets[1], 1.5),
        series("db", "latency_p99_seconds", 0.005, 0.20, onsets[2], 0.8),
    ]
}

#[test]
fn a_fault_at_the_end_of_a_chain_ranks_the_root_first_though_every_latency_rose() {
    let calls = graph(&[("web", "orders"), ("orders", "db")]);
    // Seen in the same sample (a minute's resolution), or each a step later up the chain.
    for onsets in [[ONSET, ONSET, ONSET], [ONSET + 20, ONSET + 10, ONSET]] {
        let series = chain(onsets);
        // Without the graph the loudest victim wins: the test can tell.
        assert_eq!(ranked(&series, &DependencyGraph::new())[0], "web", "{onsets:?}");
        assert_eq!(ranked(&series, &calls), ["db", "orders", "web"], "{onsets:?}");
    }
    let series = chain([ONSET, ONSET, ONSET]);
    let ranking = rank(&RankInput {
        onset: at(ONSET),
        now: at(3890),
        series: &series,
        graph: &calls,
        params: RankParams::default(),
    });
    let web = ranking.candidate(&Component::new("web")).expect("ranked");
    // Link by link: web by orders, orders by db.
    let explanation = web.explained_by.as_ref().expect("web is a victim");
    assert_eq!((explanation.by.as_str(), explanation.propagation), ("orders", Propagation::FromDependency));
    let orders = ranking.candidate(&Component::new("orders")).expect("ranked");
    let explanation = orders.explained_by.as_ref().expect("orders is a victim");
    assert_eq!((explanation.by.as_str(), &explanation.path[..]), ("db", &[Component::new("db")][..]));
    // Its own score is kept; only the order changes.
    assert!(web.score > ranking.candidates[0].score, "{web:?}");
}

#[test]
fn a_service_whose_own_memory_doubled_is_not_explained_by_a_dependency() {
    // catalogue calls catalogue-db; both moved at once: catalogue's memory by far the most, the
    // database's CPU a little. The memory is catalogue's own doing.
    let memory = vec![
        series("catalogue", "memory_working_set_bytes", 36e6, 0.01, ONSET, 555e6),
        series("catalogue-db", "cpu_usage_cores", 0.01, 0.05, ONSET, 0.02),
    ];
    let calls = graph(&[("catalogue", "catalogue-db")]);
    assert_eq!(ranked(&memory, &calls), ["catalogue", "catalogue-db"]);
    // Its latency, though, would be the database's doing.
    let latency = vec![
        series("catalogue", "latency_p99_seconds", 0.01, 0.01, ONSET, 0.5),
        series("catalogue-db", "cpu_usage_cores", 0.01, 0.05, ONSET, 0.02),
    ];
    assert_eq!(ranked(&latency, &calls), ["catalogue-db", "catalogue"]);
}

#[test]
fn a_dependency_that_moved_later_explains_nothing() {
    let calls = graph(&[("web", "orders"), ("orders", "db")]);
    // db's latency rose two minutes after web's: it is no cause of web's.
    let series = chain([ONSET, ONSET + 120, ONSET + 120]);
    assert_eq!(ranked(&series, &calls)[0], "web");
}

/// a, b, c and d all call auth; a also calls search, a leaf. search fails: a's errors rise, and auth,
/// called less by a struggling a, sees its traffic drop sharply.
fn hub_incident() -> (Vec<SeriesInput>, DependencyGraph) {
    let series = vec![
        series("search", "http_errors_ratio", 0.05, 0.9, ONSET, 0.5),
        series("a", "http_errors_ratio", 0.05, 0.9, ONSET, 0.45),
        series("auth", "http_requests_per_second", 800.0, 0.01, ONSET, 300.0),
        series("b", "http_errors_ratio", 0.01, 0.3, 0, 0.01),
        series("c", "http_errors_ratio", 0.01, 0.3, 0, 0.01),
        series("d", "http_errors_ratio", 0.01, 0.3, 0, 0.01),
    ];
    let calls = graph(&[("a", "auth"), ("b", "auth"), ("c", "auth"), ("d", "auth"), ("a", "search")]);
    (series, calls)
}

#[test]
fn a_hub_called_by_all_is_not_blamed_for_a_leafs_fault() {
    let (series, calls) = hub_incident();
    // From the scores alone, the hub's traffic drop is the loudest anomaly: the test can tell.
    assert_eq!(ranked(&series, &DependencyGraph::new())[0], "auth");
    let order = ranked(&series, &calls);
    assert_eq!(&order[..3], ["search", "a", "auth"], "{order:?}");
    let ranking = rank(&RankInput {
        onset: at(ONSET),
        now: at(3890),
        series: &series,
        graph: &calls,
        params: RankParams::default(),
    });
    let auth = ranking.candidate(&Component::new("auth")).expect("ranked");
    let explanation = auth.explained_by.as_ref().expect("the hub is a victim");
    assert_eq!((explanation.by.as_str(), explanation.propagation), ("a", Propagation::FromCaller));
}

#[test]
fn without_a_graph_the_ranking_is_by_sustained_robust_score() {
    let series = vec![
        series("quiet", "cpu_usage_cores", 0.2, 0.05, 0, 0.2),
        series("shifted", "cpu_usage_cores", 0.2, 0.05, ONSET, 0.8),
        series("slightly", "cpu_usage_cores", 0.2, 0.05, ONSET, 0.3),
    ];
    assert_eq!(ranked(&series, &DependencyGraph::new()), ["shifted", "slightly", "quiet"]);
}

#[test]
fn a_lone_spike_is_not_a_fault_and_a_flat_series_moving_a_hair_is_not_either() {
    let mut spike = series("spiky", "cpu_usage_cores", 0.2, 0.05, 0, 0.2);
    let idx = spike.points.iter().position(|(t, _)| *t >= at(3700)).expect("a point after the onset");
    spike.points[idx].1 = 50.0;
    // A memory series flat for an hour, then a few pages more: against a zero IQR that would be an
    // infinite z-score; against 1 % of its level it is nothing.
    let flat = SeriesInput {
        component: Component::new("flat"),
        instance: None,
        metric: "memory_working_set_bytes".to_owned(),
        points: (0..3900)
            .step_by(10)
            .map(|t| (at(t), if t >= ONSET { 743_112_704.0 } else { 743_100_416.0 }))
            .collect(),
    };
    let series = vec![spike, flat, series("shifted", "cpu_usage_cores", 0.2, 0.05, ONSET, 0.5)];
    let ranking = rank(&RankInput {
        onset: at(ONSET),
        now: at(3890),
        series: &series,
        graph: &DependencyGraph::new(),
        params: RankParams::default(),
    });
    assert_eq!(ranking.names()[0], "shifted");
    let flat = ranking.candidate(&Component::new("flat")).expect("ranked");
    assert!(flat.score < 0.01, "{flat:?}");
    let spiky = ranking.candidate(&Component::new("spiky")).expect("ranked");
    assert!(spiky.score < 3.0, "{spiky:?}");
}

#[test]
fn mutual_calls_with_simultaneous_onsets_leave_the_strongest_as_root() {
    let series = vec![
        series("a", "latency_p99_seconds", 0.040, 0.05, ONSET, 0.5),
        series("b", "latency_p99_seconds", 0.040, 0.05, ONSET, 2.0),
    ];
    let calls = graph(&[("a", "b"), ("b", "a")]);
    assert_eq!(ranked(&series, &calls), ["b", "a"]);
}

#[test]
fn a_series_without_enough_baseline_is_not_scored() {
    let mut short = series("new", "cpu_usage_cores", 0.2, 0.05, ONSET, 0.9);
    short.points.retain(|(t, _)| *t >= at(ONSET - 60));
    let series = [short, series("old", "cpu_usage_cores", 0.2, 0.05, ONSET, 0.5)];
    assert_eq!(ranked(&series, &DependencyGraph::new()), ["old"]);
}

/// A fall counts as much as a rise: a delay that cut a service's throughput would show as a drop of
/// its network bytes, and the ranking scores both directions alike (docs/diagnosis.md, section 5, has
/// why this does not find Sock Shop's network delays: their traffic did not fall).
#[test]
fn a_drop_in_traffic_ranks_like_a_rise_and_keeps_its_sign() {
    let series = vec![
        series("fell", "network_receive_bytes_per_second", 1000.0, 0.05, ONSET, 300.0),
        series("rose", "network_receive_bytes_per_second", 1000.0, 0.05, ONSET, 1300.0),
        series("quiet", "network_receive_bytes_per_second", 1000.0, 0.05, 0, 1000.0),
    ];
    let ranking = rank(&RankInput {
        onset: at(ONSET),
        now: at(3890),
        series: &series,
        graph: &DependencyGraph::new(),
        params: RankParams::default(),
    });
    assert_eq!(ranking.names(), ["fell", "rose", "quiet"]);
    let fell = ranking.candidate(&Component::new("fell")).expect("ranked");
    assert!(fell.finding.z < -3.0 && fell.onset == Some(at(ONSET)), "{fell:?}");
    let rose = ranking.candidate(&Component::new("rose")).expect("ranked");
    assert!(rose.finding.z > 3.0, "{rose:?}");
}
