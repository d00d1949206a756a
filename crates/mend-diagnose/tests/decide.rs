//! The decision procedure as data: each diagnosis, and the near-misses that must not be it.

use mend_diagnose::{
    Component, DecideInput, DecideParams, DependencyGraph, DiagnosisKind, EdgeSource, Lifecycle, LifecycleFact,
    ProbeKind, RankInput, RankParams, Resource, ResourceUse, SeriesInput, ServiceFacts, decide, rank,
};
use mend_types::{ExitCause, ExitInfo, LastExit, ProbeOutcome, ProcessEvidence, StopReason, Timestamp};

/// 2023-11-14T22:13:20Z plus `secs`.
fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
}

fn fact(secs: i64, replica: u32, what: Lifecycle) -> LifecycleFact {
    LifecycleFact { at: at(secs), replica, what }
}

/// An ejection after 5 failures in a row, the last `status`, beside siblings (replica, attempts, errors).
fn ejected(status: Option<u16>, siblings: &[(u32, u64, u64)]) -> Lifecycle {
    Lifecycle::Ejected(mend_diagnose::EjectionFacts {
        status,
        in_a_row: if status.is_some() { 5 } else { 0 },
        siblings: siblings
            .iter()
            .map(|&(replica, attempts, errors)| mend_diagnose::SiblingAnswers { replica, attempts, errors })
            .collect(),
        window: std::time::Duration::from_secs(30),
    })
}

fn exited(secs: i64, cause: ExitCause, exit: ExitInfo) -> LifecycleFact {
    fact(secs, 0, Lifecycle::Exited(LastExit { exit, cause }))
}

fn timeout(secs: i64, state: char, cpu_seconds: f64) -> LifecycleFact {
    let evidence = ProcessEvidence { state, cpu_seconds, window_seconds: 2.0 };
    fact(
        secs,
        0,
        Lifecycle::ProbeFailed {
            probe: ProbeKind::Liveness,
            outcome: ProbeOutcome::Timeout { evidence: Some(evidence) },
        },
    )
}

fn failure(secs: i64, reason: &str) -> LifecycleFact {
    fact(
        secs,
        0,
        Lifecycle::ProbeFailed {
            probe: ProbeKind::Readiness,
            outcome: ProbeOutcome::Failure { reason: reason.to_owned() },
        },
    )
}

fn resource(resource: Resource, used: f64, limit: f64, seconds_to_limit: Option<f64>) -> ResourceUse {
    ResourceUse { replica: Some(0), resource, used, limit, seconds_to_limit }
}

/// A series steady at `base` (with a little noise) for an hour, then at `after` from `change_secs` on
/// (the incident's onset is at 3600 s).
fn series(
    component: &str,
    instance: Option<&str>,
    metric: &str,
    base: f64,
    after: f64,
    change_secs: i64,
) -> SeriesInput {
    SeriesInput {
        component: Component::new(component),
        instance: instance.map(str::to_owned),
        metric: metric.to_owned(),
        points: (0..3900)
            .step_by(10)
            .map(|t| (at(t), if t >= change_secs { after } else { base * (1.0 + 0.02 * ((t / 10) % 5) as f64) }))
            .collect(),
    }
}

/// One case: a service's facts, the incident's series and graph, and what the procedure must say.
struct Case {
    name: &'static str,
    facts: ServiceFacts,
    series: Vec<SeriesInput>,
    graph: DependencyGraph,
    kind: DiagnosisKind,
    confidence: f64,
    cause: Option<&'static str>,
    /// The first evidence line, exactly (empty: not checked).
    evidence: &'static str,
}

fn case(name: &'static str, kind: DiagnosisKind, confidence: f64) -> Case {
    Case {
        name,
        facts: ServiceFacts::new(Component::new("web"), 1),
        series: Vec::new(),
        graph: DependencyGraph::new(),
        kind,
        confidence,
        cause: None,
        evidence: "",
    }
}

impl Case {
    fn lifecycle(mut self, facts: Vec<LifecycleFact>) -> Self {
        self.facts.lifecycle = facts;
        self
    }
    fn resources(mut self, resources: Vec<ResourceUse>) -> Self {
        self.facts.resources = resources;
        self
    }
    fn replicas(mut self, replicas: u32) -> Self {
        self.facts.replicas = replicas;
        self
    }
    fn series(mut self, series: Vec<SeriesInput>) -> Self {
        self.series = series;
        self
    }
    fn calls(mut self, caller: &str, callee: &str) -> Self {
        self.graph.add(Component::new(caller), Component::new(callee), EdgeSource::Declared);
        self
    }
    fn cause(mut self, cause: &'static str) -> Self {
        self.cause = Some(cause);
        self
    }
    fn evidence(mut self, evidence: &'static str) -> Self {
        self.evidence = evidence;
        self
    }
}

fn check(case: Case) {
    let params = RankParams::default();
    let ranking = rank(&RankInput { onset: at(3600), now: at(3890), series: &case.series, graph: &case.graph, params });
    let found = decide(&DecideInput {
        service: &case.facts,
        // The cases' facts are the incident's own; the onset's filter has its own test.
        onset: None,
        ranking: Some(&ranking),
        rank_params: params,
        params: DecideParams::default(),
    });
    let lines = found.explain();
    assert_eq!(found.kind, case.kind, "{}: {lines:?}", case.name);
    assert_eq!(found.confidence.value(), case.confidence, "{}: {lines:?}", case.name);
    assert_eq!(found.cause.as_ref().map(Component::as_str), case.cause, "{}", case.name);
    if !case.evidence.is_empty() {
        assert_eq!(lines.first().map(String::as_str), Some(case.evidence), "{}", case.name);
    }
}

#[test]
fn crashes_and_crash_loops() {
    use DiagnosisKind::*;
    let program = |code| ExitInfo::code(code);
    let cases = [
        case("one exit with a code is a crash", Crashed, 0.9)
            .lifecycle(vec![exited(10, ExitCause::Program, program(1))])
            .evidence("replica 0 ended at 22:13:30: exit code 1"),
        case("a fault signal is a crash, surely", Crashed, 0.95)
            .lifecycle(vec![exited(10, ExitCause::Program, ExitInfo::signal(11))])
            .evidence("replica 0 ended at 22:13:30: crashed: SIGSEGV (11)"),
        case("an outside kill is a crash, less surely", Crashed, 0.7).lifecycle(vec![exited(
            10,
            ExitCause::ExternalSignal,
            ExitInfo::signal(15),
        )]),
        case("near-miss: mend's own planned stop is no crash", Unknown, 0.1).lifecycle(vec![exited(
            10,
            ExitCause::Mend(StopReason::Stop),
            program(0),
        )]),
        case("three exits within five minutes are a loop", CrashLoop, 0.9)
            .lifecycle(vec![
                exited(0, ExitCause::Program, program(1)),
                exited(60, ExitCause::Program, program(1)),
                exited(130, ExitCause::Program, program(2)),
            ])
            .evidence("replica 0 ended 3 times within 2m10s (last: exit code 2)"),
        case("near-miss: three exits over an hour are crashes, not a loop", Crashed, 0.9).lifecycle(vec![
            exited(0, ExitCause::Program, program(1)),
            exited(1800, ExitCause::Program, program(1)),
            exited(3600, ExitCause::Program, program(1)),
        ]),
        case("near-miss: two quick exits are not yet a loop", Crashed, 0.9)
            .lifecycle(vec![exited(0, ExitCause::Program, program(1)), exited(5, ExitCause::Program, program(1))]),
        case("mend giving up is a loop", CrashLoop, 0.95)
            .lifecycle(vec![exited(0, ExitCause::Program, program(1)), fact(30, 0, Lifecycle::GaveUp)])
            .evidence("mend gave up restarting replica 0 at 22:13:50 (restart limit reached)"),
    ];
    for case in cases {
        check(case);
    }
    // An exit seconds before the incident began ended an earlier one (a replica killed and back): this
    // incident, a replica stopped 7 s later, is a hang, not that crash; an exit at the onset is its crash.
    let mut facts = ServiceFacts::new(Component::new("edge"), 2);
    facts.lifecycle = vec![
        LifecycleFact { replica: 1, ..exited(3593, ExitCause::ExternalSignal, ExitInfo::signal(9)) },
        timeout(3600, 'T', 0.0),
    ];
    // A service drawn in without signals of its own (a dependency) reads every recent fact: its crash of
    // 7 s ago may be the cause.
    let dependency = ServiceFacts { lifecycle: vec![facts.lifecycle[0].clone()], ..facts.clone() };
    facts.signals = vec![mend_types::Signal {
        at: at(3600),
        since: at(3600),
        state: mend_types::SignalState::Firing,
        kind: mend_types::SignalKind::Diagnosis,
        name: "hung".to_owned(),
        severity: mend_types::Severity::Warning,
        service: Some(mend_types::ServiceName::new("edge").expect("a name")),
        replica: Some(1),
        value: 1.0,
        labels: [("service".to_owned(), "edge".to_owned())].into(),
        evidence: "edge[1] is stopped".to_owned(),
    }];
    let params = RankParams::default();
    let decided = |facts: &ServiceFacts, onset: i64| {
        decide(&DecideInput {
            service: facts,
            onset: Some(at(onset)),
            ranking: None,
            rank_params: params,
            params: DecideParams::default(),
        })
        .kind
    };
    assert_eq!(decided(&facts, 3600), Hung);
    assert_eq!(decided(&facts, 3594), Crashed, "within the moment events take");
    facts.lifecycle.pop();
    assert_eq!(decided(&facts, 3600), Unknown, "nothing of its own");
    assert_eq!(decided(&dependency, 3600), Crashed);
    // So are a liveness replacement and failed probes that ended an earlier incident: now unknown, at
    // their time unhealthy.
    facts.lifecycle = vec![
        LifecycleFact { replica: 1, ..failure(3580, "status 500") },
        LifecycleFact { replica: 1, ..failure(3581, "status 500") },
        fact(3582, 1, Lifecycle::Replaced(StopReason::Liveness)),
    ];
    assert_eq!(decided(&facts, 3600), Unknown, "an earlier incident's replacement");
    assert_eq!(decided(&facts, 3582), Unhealthy);
    facts.lifecycle.pop();
    assert_eq!(decided(&facts, 3600), Unknown, "an earlier incident's failed probes");
    assert_eq!(decided(&facts, 3581), Unhealthy);
}

#[test]
fn exhaustion_of_memory_descriptors_and_disk() {
    use DiagnosisKind::*;
    let gib = 1024.0 * 1024.0 * 1024.0;
    let cases = [
        case("mend replaced it over its memory limit", MemoryExhaustion, 0.95)
            .lifecycle(vec![fact(10, 0, Lifecycle::Replaced(StopReason::Memory))])
            .evidence("mend replaced replica 0 at 22:13:30: over its memory limit"),
        case("the OOM killer: an outside SIGKILL at 95 % of the limit", MemoryExhaustion, 0.9)
            .lifecycle(vec![exited(10, ExitCause::ExternalSignal, ExitInfo::signal(9))])
            .resources(vec![resource(Resource::Memory, 0.95 * gib, gib, None)])
            .evidence("replica 0 ended at 22:13:30: killed by SIGKILL (9) from outside mend"),
        case("near-miss: an outside SIGKILL at half the limit is a kill, not memory", Crashed, 0.7)
            .lifecycle(vec![exited(10, ExitCause::ExternalSignal, ExitInfo::signal(9))])
            .resources(vec![resource(Resource::Memory, 0.5 * gib, gib, None)]),
        case("memory at 95 % of its limit", MemoryExhaustion, 0.8)
            .resources(vec![resource(Resource::Memory, 0.95 * gib, gib, None)])
            .evidence("replica 0: memory at 972.8 MiB of its limit 1.0 GiB (95%)"),
        case("memory forecast to reach its limit in 5 minutes", MemoryExhaustion, 0.7)
            .resources(vec![resource(Resource::Memory, 0.6 * gib, gib, Some(300.0))])
            .evidence("replica 0: memory at 614.4 MiB reaches its limit 1.0 GiB in 5m00s at the current trend"),
        case("near-miss: memory at 60 %, no trend toward the limit", Unknown, 0.1).resources(vec![resource(
            Resource::Memory,
            0.6 * gib,
            gib,
            None,
        )]),
        case("near-miss: a limit two hours away", Unknown, 0.1).resources(vec![resource(
            Resource::Memory,
            0.6 * gib,
            gib,
            Some(7200.0),
        )]),
        case("file descriptors at 93 %", FdExhaustion, 0.8)
            .resources(vec![resource(Resource::FileDescriptors, 950.0, 1024.0, None)])
            .evidence("replica 0: open file descriptors at 950 of its limit 1024 (93%)"),
        case("near-miss: file descriptors at 59 %", Unknown, 0.1).resources(vec![resource(
            Resource::FileDescriptors,
            600.0,
            1024.0,
            None,
        )]),
        case("disk 96 % used", DiskExhaustion, 0.8).resources(vec![ResourceUse {
            replica: None,
            resource: Resource::Disk,
            used: 96.0 * gib,
            limit: 100.0 * gib,
            seconds_to_limit: None,
        }]),
        case("near-miss: disk 70 % used", Unknown, 0.1).resources(vec![resource(Resource::Disk, 70.0, 100.0, None)]),
        case("memory exhaustion explains the crash that follows it", MemoryExhaustion, 0.95).lifecycle(vec![
            fact(10, 0, Lifecycle::Replaced(StopReason::Memory)),
            exited(12, ExitCause::Mend(StopReason::Memory), ExitInfo::signal(9)),
        ]),
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn hangs_overload_and_unhealthy_probes() {
    use DiagnosisKind::*;
    let cpu = |after| series("web", None, "cpu_usage_cores", 0.2, after, 3600);
    let latency = |after| series("web", None, "latency_p99_seconds", 0.040, after, 3600);
    let cases = [
        case("a probe timed out while the process was stopped", Hung, 0.95)
            .lifecycle(vec![timeout(10, 'T', 0.0)])
            .evidence("replica 0 did not answer its probe in time at 22:13:30 (the process was stopped, state T)"),
        case("a probe timed out while the process sat idle", Hung, 0.75)
            .lifecycle(vec![timeout(10, 'S', 0.001)])
            .evidence("replica 0 did not answer its probe in time at 22:13:30 (state S, 1 ms of CPU in 2 s)"),
        case("mend replaced it as hung", Hung, 0.9)
            .lifecycle(vec![timeout(10, 'S', 0.0), fact(12, 0, Lifecycle::Replaced(StopReason::Hung))]),
        case("near-miss: a probe timed out while the process burned CPU: overload", Overload, 0.75)
            .lifecycle(vec![timeout(10, 'R', 1.8)]),
        case("mend replaced it as busy", Overload, 0.85).lifecycle(vec![fact(
            10,
            0,
            Lifecycle::Replaced(StopReason::Busy),
        )]),
        case("CPU and latency rose together", Overload, 0.6)
            .series(vec![cpu(0.95), latency(0.9)])
            .evidence("cpu_usage_cores of web rose from 0.208 to 0.95 at 23:13:20"),
        case("near-miss: CPU rose alone", Unknown, 0.3).series(vec![cpu(0.95), latency(0.041)]),
        case("near-miss: a quiet process's CPU moved a point while latency rose", Unknown, 0.3)
            .series(vec![series("web", None, "mend_replica_cpu_percent", 2.0, 3.0, 3600), latency(0.9)]),
        case("near-miss: CPU up by half while latency rose", Unknown, 0.3).series(vec![cpu(0.3), latency(0.9)]),
        case("mend replaced it for its liveness probe", Unhealthy, 0.8).lifecycle(vec![fact(
            10,
            0,
            Lifecycle::Replaced(StopReason::Liveness),
        )]),
        case("a replica is not ready", Unhealthy, 0.6)
            .lifecycle(vec![failure(5, "HTTP 503"), failure(7, "HTTP 503"), fact(8, 0, Lifecycle::Unready)])
            .evidence("replica 0 not ready since 22:13:28"),
        case("two failed probes", Unhealthy, 0.6)
            .lifecycle(vec![failure(5, "HTTP 503"), failure(7, "connection refused")])
            .evidence("replica 0 failed 2 probes (last: connection refused)"),
        case("near-miss: one failed probe", Unknown, 0.1).lifecycle(vec![failure(5, "HTTP 503")]),
        case("near-miss: unready, then ready again", Unknown, 0.1)
            .lifecycle(vec![fact(8, 0, Lifecycle::Unready), fact(20, 0, Lifecycle::Ready)]),
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn bad_replicas_and_dependency_failures() {
    use DiagnosisKind::*;
    let replica_latency = |instance, after| series("web", Some(instance), "latency_p99_seconds", 0.040, after, 3600);
    let cases = [
        case("the proxy ejected one replica of three", BadReplica, 0.8)
            .replicas(3)
            .lifecycle(vec![fact(10, 1, ejected(None, &[]))])
            .evidence("the proxy took replica 1 out of rotation at 22:13:30"),
        case("the proxy ejected one replica of three for 500s, its siblings answering", BadReplica, 0.9)
            .replicas(3)
            .lifecycle(vec![fact(10, 2, ejected(Some(500), &[(0, 400, 0), (1, 412, 0)]))])
            .evidence(
                "replica 2 answered 500 to 5 attempts in a row and was ejected at 22:13:30; replicas 0 and 1 \
                 answered 0 errors to 812 attempts in the 30s before",
            ),
        case("near-miss: it ejected two different replicas", Unknown, 0.1)
            .replicas(3)
            .lifecycle(vec![fact(10, 1, ejected(None, &[])), fact(11, 2, ejected(None, &[]))]),
        case("near-miss: ejected for 500s while its siblings fail too", Unknown, 0.1)
            .replicas(3)
            .lifecycle(vec![fact(10, 2, ejected(Some(500), &[(0, 100, 50), (1, 100, 60)]))]),
        case("one replica slow while its siblings are not", BadReplica, 0.7)
            .replicas(3)
            .series(vec![replica_latency("0", 0.041), replica_latency("1", 0.9), replica_latency("2", 0.042)])
            .evidence(
                "latency_p99_seconds of web (1) rose from 41.6 ms to 900 ms at 23:13:20 while its siblings (2) stayed \
                 at their baseline",
            ),
        case("near-miss: every replica equally slow", Unknown, 0.3).replicas(3).series(vec![
            replica_latency("0", 0.9),
            replica_latency("1", 0.9),
            replica_latency("2", 0.9),
        ]),
        case("near-miss: a single replica cannot be the odd one out", Unknown, 0.3)
            .series(vec![replica_latency("0", 0.9)]),
        case("web's latency follows orders' errors, which web calls", DependencyFailure, 0.85)
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
                series("orders", None, "errors_ratio", 0.01, 0.4, 3600),
            ])
            .calls("web", "orders")
            .cause("orders")
            .evidence(
                "latency_p99_seconds of web rose from 41.6 ms to 900 ms at 23:14:20, 1m00s after orders' errors_ratio \
                 rose from 1.04% to 40%; orders is called by web",
            ),
        case("through a chain: web calls db through orders", DependencyFailure, 0.85)
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
                series("db", None, "latency_p99_seconds", 0.002, 0.5, 3600),
            ])
            .calls("web", "orders")
            .calls("orders", "db")
            .cause("db")
            .evidence(
                "latency_p99_seconds of web rose from 41.6 ms to 900 ms at 23:14:20, 1m00s after db's \
                 latency_p99_seconds rose from 2.08 ms to 500 ms; web calls db through orders",
            ),
        case("simultaneous onsets: less sure", DependencyFailure, 0.7)
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3600),
                series("orders", None, "errors_ratio", 0.01, 0.4, 3600),
            ])
            .calls("web", "orders")
            .cause("orders"),
        case("near-miss: the dependency moved after web did", Unknown, 0.3)
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3600),
                series("orders", None, "errors_ratio", 0.01, 0.4, 3720),
            ])
            .calls("web", "orders"),
        case("near-miss: no edge between them", Unknown, 0.3).series(vec![
            series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
            series("orders", None, "errors_ratio", 0.01, 0.4, 3600),
        ]),
        case("near-miss: web calls orders, but orders only saw less traffic", Unknown, 0.3)
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
                series("orders", None, "http_requests_per_second", 100.0, 20.0, 3600),
            ])
            .calls("web", "orders"),
        case("its own crash comes before a dependency's trouble", Crashed, 0.9)
            .lifecycle(vec![exited(3700, ExitCause::Program, ExitInfo::code(1))])
            .series(vec![
                series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
                series("orders", None, "errors_ratio", 0.01, 0.4, 3600),
            ])
            .calls("web", "orders"),
        case("nothing moved, nothing happened", Unknown, 0.1),
        case("something moved, no rule says what", Unknown, 0.3)
            .series(vec![series("web", None, "queue_depth", 10.0, 500.0, 3600)])
            .evidence("queue_depth of web rose from 10.4 to 500 at 23:13:20"),
    ];
    for case in cases {
        check(case);
    }
}

/// From a CI run: stock (called by orders) fails its readiness probe; orders' request rate fell a little
/// and its latency rose a second before stock's request rate fell (samples a second apart cannot order
/// them). The ranking explains stock's falling traffic by its caller, but a caller's traffic makes no
/// probe fail: stock, unhealthy with nothing it depends on anomalous, is the root, not orders.
#[test]
fn an_unhealthy_callee_is_the_root_even_when_its_callers_noise_came_a_moment_earlier() {
    let mut stock = ServiceFacts::new(Component::new("stock"), 1);
    stock.lifecycle = vec![failure(3620, "http status 503"), fact(3620, 0, Lifecycle::Unready)];
    let orders = ServiceFacts::new(Component::new("orders"), 1);
    let series = vec![
        series("orders", None, "mend_proxy_requests_per_second", 70.0, 50.0, 3600),
        series("orders", None, "mend_proxy_request_duration_mean_seconds", 0.002, 0.004, 3600),
        series("stock", None, "mend_proxy_requests_per_second", 70.0, 50.0, 3610),
    ];
    let mut graph = DependencyGraph::new();
    graph.add(Component::new("orders"), Component::new("stock"), EdgeSource::Declared);
    let services = [orders, stock];
    let result = mend_diagnose::diagnose(&mend_diagnose::IncidentInput {
        onset: at(3600),
        now: at(3890),
        services: &services,
        series: &series,
        graph: &graph,
        rank: RankParams::default(),
        decide: DecideParams::default(),
    });
    // The ranking alone puts the caller first (what the incident followed before).
    assert_eq!(result.ranking.names().first(), Some(&"orders"), "{:?}", result.ranking.names());
    let root = result.root().expect("a root");
    assert_eq!((root.component.as_str(), root.kind), ("stock", DiagnosisKind::Unhealthy), "{:?}", result.candidates);
}

/// A victim's diagnosis carries what its calls along the path did, as the proxy (or the kept spans) saw
/// them: the edge's figures are evidence a person can check. A declared edge has none and adds nothing.
#[test]
fn a_dependency_failure_shows_the_figures_of_the_calls_along_its_path() {
    let series = vec![
        series("web", None, "latency_p99_seconds", 0.040, 0.9, 3660),
        series("db", None, "errors_ratio", 0.01, 0.4, 3600),
    ];
    let diagnose = |graph: &DependencyGraph| {
        let services = [ServiceFacts::new(Component::new("web"), 1), ServiceFacts::new(Component::new("db"), 1)];
        let result = mend_diagnose::diagnose(&mend_diagnose::IncidentInput {
            onset: at(3600),
            now: at(3890),
            services: &services,
            series: &series,
            graph,
            rank: RankParams::default(),
            decide: DecideParams::default(),
        });
        let web = result.diagnoses.iter().find(|d| d.component.as_str() == "web").expect("web's diagnosis").clone();
        assert_eq!(web.kind, DiagnosisKind::DependencyFailure, "{web:?}");
        web.evidence.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let observed = |error_ratio, p99_seconds| EdgeSource::Observed { error_ratio, p99_seconds };
    let mut graph = DependencyGraph::new();
    graph.add(Component::new("web"), Component::new("orders"), observed(Some(0.35), Some(0.85)));
    graph.add(Component::new("orders"), Component::new("db"), observed(Some(0.4), None));
    let evidence = diagnose(&graph);
    assert_eq!(
        evidence[1..],
        ["calls from web to orders: 35% failed, p99 850 ms", "calls from orders to db: 40% failed"],
        "{evidence:?}"
    );
    // Declared edges, or observed ones without figures: only the path itself.
    let mut declared = DependencyGraph::new();
    declared.add(Component::new("web"), Component::new("orders"), EdgeSource::Declared);
    declared.add(Component::new("orders"), Component::new("db"), observed(None, None));
    let evidence = diagnose(&declared);
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert!(evidence[0].ends_with("web calls db through orders"), "{evidence:?}");
}

/// Issue 16, item 5: a service's log signals are evidence, placed in time against its own first move.
#[test]
fn log_signals_are_evidence_placed_before_or_after_the_services_first_move() {
    use mend_types::{NEW_LOG_TEMPLATE_SIGNAL, Severity, Signal, SignalKind, SignalState};
    let log_signal = |secs: i64, name: &str, text: &str, state: SignalState| Signal {
        at: at(secs),
        since: at(secs),
        state,
        kind: SignalKind::Anomaly,
        name: name.to_owned(),
        severity: Severity::Warning,
        service: Some(mend_types::ServiceName::new("orders").expect("a name")),
        replica: Some(0),
        value: 1.0,
        labels: [("service".to_owned(), "orders".to_owned()), ("template_id".to_owned(), text.len().to_string())]
            .into(),
        evidence: text.to_owned(),
    };
    let series = [series("orders", None, "errors_ratio", 0.01, 0.4, 3600)];
    let graph = DependencyGraph::new();
    let params = RankParams::default();
    let ranking = rank(&RankInput { onset: at(3600), now: at(3890), series: &series, graph: &graph, params });
    let explain = |signals: Vec<Signal>| {
        let mut facts = ServiceFacts::new(Component::new("orders"), 1);
        facts.signals = signals;
        decide(&DecideInput {
            service: &facts,
            onset: Some(at(3600)),
            ranking: Some(&ranking),
            rank_params: params,
            params: DecideParams::default(),
        })
        .explain()
    };
    let refused = "orders started logging `connection refused to <*>:5432` (error)";
    let lines = explain(vec![
        log_signal(3597, NEW_LOG_TEMPLATE_SIGNAL, refused, SignalState::Firing),
        // The same condition twice (a repeat of its transition) is one line; another kind of signal is not a log.
        log_signal(3597, NEW_LOG_TEMPLATE_SIGNAL, refused, SignalState::Firing),
        Signal {
            kind: SignalKind::Rule,
            name: "HighErrors".into(),
            ..log_signal(3590, "HighErrors", "x", SignalState::Firing)
        },
        // Resolved already: not evidence.
        log_signal(3500, NEW_LOG_TEMPLATE_SIGNAL, "orders started logging `old <*>` (error)", SignalState::Resolved),
    ]);
    let logged: Vec<&String> = lines.iter().filter(|line| line.contains("logging")).collect();
    assert_eq!(
        logged,
        [&format!("{refused} since 23:13:17, 3 s before its errors_ratio rose from 1.04% to 40%")],
        "{lines:#?}"
    );
    // After the move, it says so; without series, the log line alone, with its time.
    let late = explain(vec![log_signal(3610, NEW_LOG_TEMPLATE_SIGNAL, refused, SignalState::Firing)]);
    assert!(late.iter().any(|line| line.ends_with("10 s after its errors_ratio rose from 1.04% to 40%")), "{late:#?}");
    let mut facts = ServiceFacts::new(Component::new("orders"), 1);
    facts.signals = vec![log_signal(3597, NEW_LOG_TEMPLATE_SIGNAL, refused, SignalState::Firing)];
    let alone = decide(&DecideInput {
        service: &facts,
        onset: None,
        ranking: None,
        rank_params: params,
        params: DecideParams::default(),
    });
    assert_eq!(alone.explain(), [format!("{refused} since 23:13:17")]);
}
