//! A replica runner against a real child process, without the daemon around it.
#![allow(clippy::disallowed_methods)] // The test waits in real time.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mend_observe::series::{Limits, SeriesStore};
use mend_supervisor::{Control, ReplicaHandle, RunnerContext, Spawner};
use mend_types::{Event, EventKind, EventSink, SystemClock, Timestamp};

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0.lock().expect("lock").push(event);
    }
}

fn service(text: &str) -> Arc<mend_config::Service> {
    let config = mend_config::parse("test.toml", text, Path::new("/")).expect("valid config");
    Arc::new(config.services[0].clone())
}

/// A runner context on the current runtime, sampling every 50 ms.
fn context(state_dir: &Path, events: Arc<Recorder>, series: Arc<RwLock<SeriesStore>>) -> RunnerContext {
    RunnerContext {
        spawner: Spawner::start(tokio::runtime::Handle::current(), None).expect("spawner"),
        events,
        clock: Arc::new(SystemClock),
        series,
        state_dir: state_dir.to_path_buf(),
        run_tag: mend_supervisor::detached::new_run_tag(state_dir).expect("run tag"),
        sample_interval: Duration::from_millis(50),
        scrape_stats: Default::default(),
        lines: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_samples_proc_into_the_series_store_and_stops_its_process() {
    let state = tempfile::tempdir().expect("temp dir");
    let events = Arc::new(Recorder::default());
    let series = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let context = context(state.path(), events.clone(), series.clone());
    let sleeper = service("[service.sleeper]\ncommand = [\"sleep\", \"30\"]\n");
    let replica = ReplicaHandle::start(sleeper.clone(), sleeper.stable().clone(), 0, context, None);
    assert!(replica.send(Control::Start).await);
    let mut status = replica.watch();
    let running = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| s.ready)).await;
    let pid = running.expect("ready in time").expect("runner alive").pid.expect("pid");
    assert!(state.path().join("run/sleeper.0.pid").exists(), "pid file written");

    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            {
                let mut store = series.write().expect("lock");
                let labels =
                    store.labels("mend_replica_resident_memory_bytes", &[("service", "sleeper"), ("replica", "0")]);
                if store.latest(&labels).is_some_and(|point| point.value > 0.0) {
                    let uptime =
                        store.labels("mend_replica_uptime_seconds", &[("service", "sleeper"), ("replica", "0")]);
                    assert!(
                        !store.range(&uptime, Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX)).is_empty()
                    );
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("process metrics sampled");

    assert!(replica.send(Control::Stop).await);
    let stopped = tokio::time::timeout(Duration::from_secs(15), status.wait_for(|s| s.down)).await;
    assert_eq!(stopped.expect("stopped in time").expect("runner alive").state, mend_supervisor::ReplicaState::Stopped);
    assert!(mend_observe::process::sample(pid).is_none_or(|s| s.state == 'Z'), "the process is gone");
    assert!(!state.path().join("run/sleeper.0.pid").exists(), "pid file removed");
    let kinds: Vec<EventKind> = events.0.lock().expect("lock").iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Started,
            EventKind::Ready,
            EventKind::Unready,
            EventKind::Stopping,
            EventKind::Exited,
            EventKind::Stopped
        ]
    );
    replica.join().await;
}

/// A restart tagged with a generation that was replaced since does nothing (it happened already); a
/// retired replica stops, its task ends, and it reads no command after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_restart_is_skipped_and_a_retired_replica_ends() {
    let state = tempfile::tempdir().expect("temp dir");
    let series = Arc::new(RwLock::new(SeriesStore::new(Limits::default())));
    let events = Arc::new(Recorder::default());
    let context = context(state.path(), events.clone(), series.clone());
    let sleeper = service("[service.sleeper]\ncommand = [\"sleep\", \"30\"]\n");
    let replica = ReplicaHandle::start(sleeper.clone(), sleeper.stable().clone(), 0, context, None);
    assert!(replica.send(Control::Start).await);
    let mut status = replica.watch();
    let ready = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| s.ready)).await;
    let first = ready.expect("ready in time").expect("runner alive").clone();
    let n_started = || events.0.lock().expect("lock").iter().filter(|e| e.kind == EventKind::Started).count();
    let n_stopping = || events.0.lock().expect("lock").iter().filter(|e| e.kind == EventKind::Stopping).count();

    // The runner's loop prefers commands to its sampling tick: two presence samples recorded after the
    // command was sent prove that the runner read it (and acted on it, if it was going to).
    let n_samples = || {
        let mut store = series.write().expect("lock");
        let labels = store.labels("mend_replica_up", &[("service", "sleeper"), ("replica", "0")]);
        store.range(&labels, Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX)).len()
    };
    let before = n_samples();
    assert!(
        replica
            .send(Control::Replace {
                generation: first.generation + 1,
                request: mend_supervisor::Request::operator(None)
            })
            .await
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while n_samples() < before + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the runner samples on");
    assert_eq!(n_stopping(), 0, "a restart of a generation that is not running is skipped");
    assert_eq!(replica.status().pid, first.pid);

    assert!(
        replica
            .send(Control::Replace { generation: first.generation, request: mend_supervisor::Request::operator(None) })
            .await
    );
    let replaced =
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.ready && s.generation > first.generation))
            .await;
    let second = replaced.expect("restarted in time").expect("runner alive").clone();
    assert_ne!(second.pid, first.pid);
    assert_eq!(n_started(), 2);

    assert!(replica.send(Control::Retire).await);
    let _ = replica.send(Control::Start).await;
    tokio::time::timeout(Duration::from_secs(15), async {
        while !replica.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the retired replica's task ends");
    let pid = second.pid.expect("pid");
    assert!(mend_observe::process::sample(pid).is_none_or(|s| s.state == 'Z'), "its process is gone");
    assert!(!replica.send(Control::Start).await, "no command is read after it");
    assert_eq!(n_started(), 2, "nothing started after the replacement, nor after the retirement");
}
