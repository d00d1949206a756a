//! Criterion benchmark: the decision core's cost per signal transition.
//!
//! Inputs, and why each exists:
//! - `quiet`: a signal that fires and resolves on a service with no policy, with no other incident open:
//!   the common case of a detector blip (grouping, diagnosis, no action).
//! - `busy`: the same pair of transitions while 50 other incidents are open (a bad day): grouping scans
//!   the open incidents, the guard its budgets.
//! - `acting`: a signal whose policy restarts a replica, then the action's outcome and the resolution: the
//!   full path through the guard to a permit and back.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mend_act::{Healer, ReplicaView, ServiceView, Settings, World};
use mend_incident::BuiltinDiagnoser;
use mend_types::{ActionId, ServiceName, Severity, Signal, SignalKind, SignalState, Timestamp};

const CONFIG: &str = r#"
[healing]
cooldown = "1ms"
max_actions_per_hour = 100000
service_max_actions_per_hour = 100000
window = "1s"
[service.web]
command = ["web"]
replicas = 4
[[heal]]
when = "alert:Act"
actions = ["restart"]
"#;

fn signal(name: &str, service: &str, replica: u32, state: SignalState, at: Timestamp) -> Signal {
    Signal {
        at,
        since: at,
        state,
        kind: SignalKind::External,
        name: name.to_owned(),
        severity: Severity::Warning,
        service: ServiceName::new(service).ok(),
        replica: Some(replica),
        value: 1.0,
        labels: BTreeMap::from([("service".into(), service.into()), ("replica".into(), replica.to_string())]),
        evidence: "bench".into(),
    }
}

fn setup(extra_open: usize) -> (Healer, World) {
    let config = mend_config::parse("bench.toml", CONFIG, std::path::Path::new("/")).expect("valid config");
    let world = World {
        services: [(
            ServiceName::new("web").expect("valid"),
            ServiceView { replicas: (0..4).map(|index| ReplicaView { index, ready: true }).collect() },
        )]
        .into(),
    };
    let mut healer = Healer::new(Settings::of(&config), 1, 1, Box::new(BuiltinDiagnoser));
    for idx in 0..extra_open {
        let service = format!("other{idx}");
        healer.signal(
            &signal("Open", &service, 0, SignalState::Firing, Timestamp::from_millis(0)),
            &world,
            Timestamp::from_millis(0),
        );
    }
    (healer, world)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("healer");
    group.throughput(Throughput::Elements(2));
    for (name, extra_open) in [("quiet", 0), ("busy", 50)] {
        let (mut healer, world) = setup(extra_open);
        let mut now = 10_000_i64;
        group.bench_function(name, |b| {
            b.iter(|| {
                // Each pair is a new incident: past the window, it does not join the last one.
                now += 2_000;
                let at = Timestamp::from_millis(now);
                black_box(healer.signal(&signal("Blip", "web", 1, SignalState::Firing, at), &world, at));
                black_box(healer.signal(&signal("Blip", "web", 1, SignalState::Resolved, at), &world, at));
                black_box(healer.tick(&world, at));
            })
        });
    }
    group.throughput(Throughput::Elements(3));
    let (mut healer, world) = setup(0);
    let mut now = 10_000_i64;
    let mut next_action = 1;
    group.bench_function("acting", |b| {
        b.iter(|| {
            now += 2_000;
            let at = Timestamp::from_millis(now);
            black_box(healer.signal(&signal("Act", "web", 1, SignalState::Firing, at), &world, at));
            let running: Vec<ActionId> = healer.open_actions().map(|a| a.id).collect();
            assert_eq!(running, [ActionId(next_action)], "the policy acts on every incident");
            black_box(healer.outcome(ActionId(next_action), true, "done".into(), String::new(), &world, at));
            black_box(healer.signal(&signal("Act", "web", 1, SignalState::Resolved, at), &world, at));
            black_box(healer.tick(&world, at));
            next_action += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
