//! `mend run`: validate the config, then wire store, supervisor and API together and run until a signal.
//!
//! Order matters: nothing is bound, spawned or migrated until the whole config is valid; leftovers of an
//! earlier mend are replaced before any replica starts; the API port is bound before any replica starts,
//! so a port conflict fails fast instead of leaving services half started.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use mend_api::{ApiState, EventCounter, ObserveStats, SignalCounter};
use mend_config::{Config, ScrapeTarget};
use mend_observe::scrape::{ScrapeStats, ScraperHandle};
use mend_observe::series::{Limits, SeriesStore};
use mend_store::{Retention, Store};
use mend_supervisor::{RunnerContext, Spawner, Supervisor, orphans};
use mend_types::{Clock, Event, EventKind, EventSink, Signal, SignalSink, SignalState, SystemClock};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::notify::Systemd;
use crate::output;
use crate::reload::{Reloadable, ScrapeContext};
use crate::traffic::{self, Traffic};
use mend_detection::{DetectLoop, Detection};

/// Messages a stream subscriber may fall behind by before it loses the oldest.
const STREAM_CAPACITY: usize = 1024;

/// How often replicas' /proc metrics are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a shutdown waits for remote write to send what it has.
const REMOTE_WRITE_FLUSH: Duration = Duration::from_secs(5);

/// Runs the daemon; returns when it has shut down.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    let config = match mend_config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            output::error_line(&error.to_string());
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = init_tracing(&args.log) {
        output::error_line(&format!("error: {error}"));
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("mend-worker")
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error_line(&format!("error: cannot start the runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, &args.state_dir())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::error_line(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .with_context(|| format!("invalid log filter {filter:?} (e.g. \"info\" or \"warn,mend_supervisor=debug\")"))?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(targets)
        .try_init()
        .context("cannot install the logger")
}

/// How many files mend may open (`RLIMIT_NOFILE`'s soft limit); 1024, the usual default, if unknown.
fn fd_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Holds the state directory's lock for the daemon's lifetime: two mends on one state directory would
/// fight over the same replicas and ports.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    mend_supervisor::statedir::check_root(state_dir)?;
    let path = state_dir.join("mend.lock");
    let file =
        mend_supervisor::statedir::open_read_write(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, errno)) => {
            let holder = mend_supervisor::statedir::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another mend (pid {}) is running with the state directory {}: {errno}",
                holder.trim(),
                state_dir.display()
            );
        }
    };
    use std::io::{Seek, Write};
    let _ = lock.set_len(0);
    let _ = lock.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(lock, "{}", std::process::id());
    Ok(lock)
}

async fn serve(config: Config, state_dir: &Path) -> anyhow::Result<()> {
    // Watched from the start: a SIGHUP while services start must not kill mend (its default action).
    let mut signals_in = DaemonSignals::new()?;
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let _lock = lock_state_dir(&state_dir)?;
    // `[fleet]`'s host name and TLS files, read before anything starts (an unreadable certificate stops
    // mend here, not after its replicas started).
    let fleet_setup = crate::fleet::prepare(&config)?;
    // How late the event loop runs: a probe that times out meanwhile is mend's trouble, not the replica's.
    let _lag_monitor = mend_observe::lag::start();
    let store =
        Arc::new(Store::open(&state_dir.join("mend.db"), Retention::default()).context("cannot open the event store")?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The stream between stages: the store takes every event and signal inline (its queue sheds load and
    // counts it); stages subscribe (a subscriber that falls behind loses the oldest and counts it). The
    // counters for /metrics count at the publisher, so that their figures are exact.
    let bus = mend_bus::Bus::builder(STREAM_CAPACITY)
        .tap("store", Arc::new(mend_bus::SinkTap { events: store.sink(), signals: store.signal_sink() }))
        .build();
    let events = Arc::new(EventCounter::new(bus.clone()));
    let signals = Arc::new(SignalCounter::new(bus.clone()));
    // Subscribed before any replica starts: the heal stage misses nothing they publish.
    let heal_subscription = bus.subscribe("heal");
    let precursor_subscription = bus.subscribe("precursor");

    resolve_conditions_of_the_last_run(&store, &signals, clock.as_ref());
    let n_orphans = orphans::replace_orphans(&state_dir, events.as_ref(), clock.as_ref()).await;
    if n_orphans > 0 {
        tracing::warn!(n_orphans, "replaced processes left behind by an earlier mend");
    }
    // Started before any replica, held until every replica has stopped: if mend dies first (kill -9), the
    // reaper kills what the replicas forked (their own processes die by their parent-death signal).
    let run_tag = mend_supervisor::detached::new_run_tag(&state_dir)
        .with_context(|| format!("cannot write the run tag in {}", state_dir.display()))?;
    let reaper = Reaper::start(&state_dir, &run_tag).context("cannot start the reaper process")?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", config.api.listen))?;
    // Proxies bind before any replica starts, so that a taken port fails fast.
    // Tracing (`[tracing]`): the span store, OTLP export and intake; off, the proxies read no trace header.
    let tracing = config.tracing.enabled.then(|| Arc::new(crate::traces::start(&config.tracing)));
    let mut traffic =
        Traffic::bind(&config, events.clone(), clock.clone(), tracing.as_ref().map(|t| t.recorder()).as_ref()).await?;

    // Replicas are spawned through `mend __exec` so that they die with mend (see mend_supervisor::spawn).
    let spawner = Spawner::start(tokio::runtime::Handle::current(), Some("/proc/self/exe".into()))
        .context("cannot start the spawner thread")?;
    let series = Arc::new(RwLock::new(SeriesStore::new(Limits {
        points_per_series: config.storage.max_points_per_series,
        retention: config.storage.retention,
        max_series: config.storage.max_series,
    })));
    // The last hour of series from before a restart: diagnosis keeps its baselines. Restored before
    // anything writes the store; remote write sends only what is newer (the rest went out already).
    let restored_until = crate::history::restore(&store, events.as_ref(), clock.as_ref(), &series)?;
    let series_snapshots =
        crate::history::spawn_snapshots(store.clone(), series.clone(), clock.clone(), config.learn.snapshot_every);
    // `[remote_write]`: new points of the series store to Prometheus; the store is only read, briefly.
    let remote_write = crate::remote_write::start(config.remote_write.as_ref(), series.clone(), restored_until)?;
    let scrape_stats = Arc::new(ScrapeStats::default());
    let scrape_context = ScrapeContext {
        series: series.clone(),
        events: events.clone(),
        clock: clock.clone(),
        stats: scrape_stats.clone(),
    };
    let static_scrapers: Vec<(ScrapeTarget, ScraperHandle)> =
        config.scrapes.iter().map(|target| (target.clone(), scrape_context.spawn(target))).collect();
    let n_replicas: u32 = config.services.iter().map(|s| s.total_replicas()).sum();
    events.emit(
        Event::new(
            clock.wall(),
            EventKind::ConfigLoaded,
            format!("loaded {} ({} services, {n_replicas} replicas)", config.source.display(), config.services.len()),
        )
        .detail("file", config.source.display().to_string())
        .detail("pid", std::process::id()),
    );
    tracing::info!(config = %config.source.display(), api = %config.api.listen, state_dir = %state_dir.display(), "mend is running");

    // The log stage mines what the replicas write; its sink queues lines and never blocks capture.
    let (log_stage, log_sink) = mend_detection::logs::LogStage::start(
        mend_detection::logs::LogWatchConfig::default(),
        series.clone(),
        signals.clone(),
        clock.clone(),
    )
    .context("cannot start the log stage")?;
    let log_stage = Arc::new(log_stage);
    let context = RunnerContext {
        spawner,
        events: events.clone(),
        clock: clock.clone(),
        series: series.clone(),
        state_dir: state_dir.clone(),
        run_tag,
        sample_interval: SAMPLE_INTERVAL,
        scrape_stats: scrape_stats.clone(),
        lines: Some(log_sink),
    };
    // Each service runs the release it promoted last, not the file's, when the store says so.
    let mut config = config;
    crate::rollout::apply_persisted_releases(&mut config, &store);
    let supervisor = Arc::new(Supervisor::start(&config, context, &traffic.controls()));
    traffic.follow(&supervisor);
    let traffic = Arc::new(traffic);
    // Proxy statistics, ejections and chaos expiry are sampled (a reload may add a proxy later).
    let proxy_sampler = tokio::spawn(traffic::sample_loop(traffic.clone(), series.clone()));
    // Stale series are swept every minute whether or not anything is detected on them.
    let sweeper = tokio::spawn(sweep_loop(series.clone(), clock.clone()));
    // What start-up left resident (its code, its freed heap) goes back once it is done, and now and then.
    let releaser = tokio::spawn(mend_memory::release_loop());
    // What operators' feedback relaxed reaches the detect loop on this watch (the learn stage restores it).
    let (relaxations, relaxations_in) = tokio::sync::watch::channel(mend_detection::feedback::Relaxations::default());
    // What the detectors learnt in the last run goes on (a bad or newer snapshot is refused and relearnt).
    let mut detection = Detection::new(&config);
    crate::learn::restore_detection(&store, events.as_ref(), clock.as_ref(), &mut detection)?;
    let detect_loop = DetectLoop::start(detection, series.clone(), signals.clone(), clock.clone(), relaxations_in);
    let executor = Arc::new(crate::heal::Executor::new(&config, &supervisor, &traffic));
    // The fleet (`[fleet]`): started without waiting for etcd; the heal stage asks it for permits.
    let open_incidents = crate::fleet::OpenIncidents::default();
    let fleet = crate::fleet::start(fleet_setup, &supervisor, &open_incidents, clock.clone());
    let parts = crate::heal::StageParts {
        store: store.clone(),
        supervisor: supervisor.clone(),
        signals: signals.clone(),
        executor: executor.clone(),
        clock: clock.clone(),
        series: series.clone(),
        events: events.clone(),
        spans: tracing.clone(),
        fleet: fleet.as_ref().map(|(handle, _)| handle.clone()),
        open_incidents,
    };
    let (heal, mut heal_task) = crate::heal::HealStage::start(&config, heal_subscription, parts)?;
    // Precursors read every signal and publish their early warnings on the stream, as any stage does.
    let precursors = crate::precursor::PrecursorStage::start(
        &config.learn,
        precursor_subscription,
        store.clone(),
        events.as_ref(),
        clock.clone(),
        signals.clone(),
        {
            let log_stage = log_stage.clone();
            Arc::new(move |service: &mend_types::ServiceName, template: u64| {
                let patterns = log_stage.patterns(service.as_str())?;
                patterns.into_iter().find(|pattern| u64::from(pattern.id.0) == template).map(|pattern| pattern.template)
            })
        },
    )?;
    let learning = crate::learn::Learning::start(
        &config,
        heal.clone(),
        store.clone(),
        events.clone(),
        clock.clone(),
        relaxations,
        crate::learn::Learners { detect: detect_loop.handle(), precursors },
    )?;
    let replica_changes = crate::heal::publish_replica_changes(&supervisor, bus.clone(), clock.clone());
    let rollouts = crate::rollout::Rollouts::start(crate::rollout::RolloutParts {
        supervisor: supervisor.clone(),
        traffic: traffic.clone(),
        healing: Arc::new(heal.clone()),
        store: store.clone(),
        events: events.clone(),
        signals: signals.clone(),
        clock: clock.clone(),
        executor: executor.clone(),
    });
    let (api_closing, api_closing_in) = tokio::sync::watch::channel(false);
    let (reload_requests, mut reloads_asked) = tokio::sync::mpsc::channel::<mend_api::ReloadRequest>(4);
    // Process chaos (`mend chaos ...`) and, when configured, the chaos monkey.
    let chaos = crate::chaos::Chaos::new(supervisor.clone(), traffic.clone(), events.clone(), clock.clone());
    let chaos_monkey = config
        .chaos
        .monkey
        .clone()
        .map(|monkey| tokio::spawn(chaos.clone().monkey_loop(monkey, Arc::new(heal.clone()))));
    let api_state = ApiState {
        supervisor: supervisor.clone(),
        store: store.clone(),
        events: events.clone(),
        signals: signals.clone(),
        observe: Arc::new(ObserveStats { scrapes: scrape_stats.clone(), series: series.clone() }),
        traffic: traffic.clone(),
        token: config.api.token.as_deref().map(Arc::from),
        state_dir: state_dir.clone(),
        clock: clock.clone(),
        reload: reload_requests,
        healing: Arc::new(heal.clone()),
        learn: Arc::new(crate::learn::LearnHandle(learning.clone())),
        log_patterns: {
            let log_stage = log_stage.clone();
            Arc::new(move |service: &str| log_stage.patterns(service))
        },
        closing: api_closing_in,
        stream: Arc::new(mend_api::StreamHub::new(bus.clone())),
        chaos: Arc::new(chaos.clone()),
        rollouts: Arc::new(crate::rollout::RolloutHandle(rollouts.clone())),
        reports: Arc::new(crate::report::Reports {
            store: store.clone(),
            series: series.clone(),
            clock: clock.clone(),
            exprs: Arc::new(crate::report::Reports::exprs(&config)),
        }),
        fleet: fleet.as_ref().map(|(handle, _)| {
            let handle = handle.clone();
            let source: mend_api::FleetSource =
                Arc::new(move || serde_json::to_value(handle.view()).unwrap_or(serde_json::Value::Null));
            source
        }),
        traces: tracing.clone().map(|tracing| {
            Arc::new(mend_api::TraceApi {
                tracing,
                slow: config.tracing.slow,
                max_body_bytes: config.tracing.otlp_max_body_bytes,
            })
        }),
        remote_write: remote_write.clone().map(|metrics| metrics as Arc<dyn mend_api::MetricsSource>),
    };
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_limits = mend_api::ServeLimits::for_fd_limit(fd_limit());
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = api_stopped.await;
        };
        mend_api::serve(listener, mend_api::router(api_state), api_limits, shutdown).await
    });

    let systemd = Arc::new(Systemd::from_environment());
    let watchdog = systemd.clone().watchdog();
    systemd.ready(&format!("supervising {} services ({n_replicas} replicas)", config.services.len()));

    let mut reloadable = Reloadable {
        running: config.clone(),
        file: config.clone(),
        scrapers: static_scrapers,
        scrape_context,
        detection: detect_loop,
        supervisor: supervisor.clone(),
        traffic: traffic.clone(),
        heal: heal.clone(),
        scale_tasks: Vec::new(),
    };
    let mut stage_failed: Option<String> = None;
    let signal_name = loop {
        let (trigger, answer) = tokio::select! {
            signal = signals_in.next() => match signal {
                DaemonSignal::Shutdown(name) => break name,
                DaemonSignal::Reload => ("SIGHUP", None),
            },
            Some(answer) = reloads_asked.recv() => ("POST /api/v1/reload", Some(answer)),
            // A stage that ends by itself is a bug: mend stops loudly rather than run without healing.
            ended = &mut heal_task => {
                let why = match ended {
                    Err(error) if error.is_panic() => "it panicked".to_owned(),
                    Err(error) => error.to_string(),
                    Ok(()) => "it ended".to_owned(),
                };
                tracing::error!(why = %why, "the heal stage stopped; shutting down");
                stage_failed = Some(why);
                break "a failed heal stage";
            }
        };
        systemd.reloading();
        let event = reloadable.reload(trigger, clock.wall()).await;
        systemd.ready(&event.message);
        tracing::info!("{}", event.message);
        events.emit(event.clone());
        if let Some(answer) = answer {
            let _ = answer.send(event);
        }
    };
    // Reloads asked from now on are refused at once (503) rather than left waiting.
    drop(reloads_asked);
    events.emit(Event::new(
        clock.wall(),
        EventKind::ShuttingDown,
        format!("received {signal_name}: stopping all services"),
    ));
    tracing::info!(signal = signal_name, "shutting down");
    systemd.stopping();
    // A second signal means "stop now": exit at once; the parent-death signal takes every replica along.
    tokio::spawn(async move {
        loop {
            match signals_in.next().await {
                DaemonSignal::Shutdown(again) => {
                    tracing::warn!(signal = again, "second signal: exiting now");
                    std::process::exit(130);
                }
                DaemonSignal::Reload => tracing::info!("SIGHUP while shutting down: nothing reloaded"),
            }
        }
    });
    // What the detectors and precursors learnt is kept for the next start (a clean shutdown's
    // snapshot), and the series diagnosis measures baselines on.
    learning.snapshot_learnt().await;
    series_snapshots.abort();
    crate::history::snapshot(store.clone(), series.clone(), clock.clone()).await;
    // Rollouts and healing stop first: nothing new is decided while services stop (a rollout stays
    // persisted where it was and resumes at the next start); nor does chaos start or revert anything
    // (stopping a replica resumes it if it was stopped).
    rollouts.abort();
    heal_task.abort();
    // The fleet sees this host gone at once (its lease revoked), not a lease TTL later.
    if let Some((fleet, fleet_task)) = &fleet {
        fleet.leave().await;
        fleet_task.abort();
    }
    if let Some(monkey) = &chaos_monkey {
        monkey.abort();
    }
    chaos.shutdown();
    drop(chaos);
    replica_changes.abort();
    for (_, scraper) in reloadable.scrapers.drain(..) {
        scraper.stop(clock.wall());
    }
    // A scale a reload started ends here (the supervisor stops whatever it added); the reloader's hold
    // on the supervisor goes, so that the proxies can be shut down once the replicas are.
    for task in reloadable.scale_tasks.drain(..) {
        task.abort();
    }
    reloadable.detection.abort();
    drop(reloadable);
    sweeper.abort();
    releaser.abort();
    proxy_sampler.abort();
    // Replicas drain through their proxies as they stop (up to the drain timeout), then get their grace
    // period; the proxies go last.
    supervisor.shutdown(traffic.longest_drain() + Duration::from_secs(2)).await;
    // What the store took since remote write's last pass (the replicas' last samples, their staleness
    // markers) goes out, within a bound: a receiver that is down does not hold the shutdown up.
    if let Some(remote_write) = &remote_write
        && !remote_write.0.flush(REMOTE_WRITE_FLUSH).await
    {
        tracing::warn!("remote write: not everything was sent before shutdown");
    }
    // Followers (`mend logs -f`) read their last lines and end; then the server stops.
    api_closing.send_replace(true);
    let _ = stop_api.send(());
    let server_abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(error))) => tracing::warn!(error = %error, "api server error"),
        Ok(Err(error)) => tracing::warn!(error = %error, "api server task failed"),
        Ok(Ok(Ok(()))) => {}
        // A follower (`mend logs -f`, say) keeps a connection open: cut it.
        Err(_) => server_abort.abort(),
    }
    // The rollouts hold the supervisor and the proxies too (their tasks were aborted above).
    drop(rollouts);
    drop(supervisor);
    // The runners release their handles on the proxies as they end.
    for _ in 0..50 {
        if Arc::strong_count(&traffic) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(traffic) {
        Ok(traffic) => traffic.shutdown().await,
        Err(_) => tracing::warn!("proxies still in use at shutdown; closing them with the process"),
    }
    store.close().context("cannot flush the event store")?;
    reaper.finish();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    drop(executor);
    match stage_failed {
        Some(why) => anyhow::bail!("the heal stage stopped ({why}); mend shut down"),
        None => Ok(()),
    }
}

/// SIGTERM, SIGINT and SIGHUP, watched for the whole life of the daemon (tokio never unregisters its
/// handlers, so the streams must stay in use for a second signal to be seen).
struct DaemonSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl DaemonSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }

    /// The next signal: SIGTERM or SIGINT (by name) ask for a shutdown, SIGHUP (`systemctl reload`, say)
    /// for a reload instead of killing mend and every replica with it, as its default action would.
    async fn next(&mut self) -> DaemonSignal {
        tokio::select! {
            _ = self.terminate.recv() => DaemonSignal::Shutdown("SIGTERM"),
            _ = self.interrupt.recv() => DaemonSignal::Shutdown("SIGINT"),
            _ = self.hangup.recv() => DaemonSignal::Reload,
        }
    }
}

/// What a signal asks of the daemon.
enum DaemonSignal {
    Shutdown(&'static str),
    Reload,
}

/// The reaper process (`mend __reaper`, see `mend_supervisor::orphans::run_reaper`) and the write end of
/// its pipe: the pipe closes when mend ends, however it ends.
struct Reaper {
    child: std::process::Child,
}

impl Reaper {
    fn start(state_dir: &Path, run_tag: &str) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("/proc/self/exe")
            // Shown as `mend __reaper DIR` in ps, not as the path it was started through.
            .arg0("mend")
            .arg(mend_supervisor::orphans::REAPER_SUBCOMMAND)
            .arg(state_dir)
            .arg(run_tag)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            // Its own process group: signals sent to mend's group (a terminal's Ctrl-C) are not its business.
            .process_group(0)
            .spawn()?;
        Ok(Self { child })
    }

    /// After a clean shutdown: closes the pipe; the reaper finds no replica left and exits.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Resolves what the last run left firing. This run evaluates rules, detectors and forecasts afresh (a
/// condition that still holds fires again after its `for`); left as they were, those conditions would be
/// listed as active for ever, since nothing would resolve them. Alerts from Alertmanager stay: it owns
/// them and resolves them itself.
fn resolve_conditions_of_the_last_run(store: &Store, signals: &SignalCounter, clock: &dyn Clock) {
    let query = mend_store::SignalQuery { active_only: true, limit: 10_000, ..Default::default() };
    let Ok(active) = store.signals(&query) else { return };
    let now = clock.wall();
    let (external, internal): (Vec<_>, Vec<_>) =
        active.into_iter().partition(|stored| stored.signal.kind == mend_types::SignalKind::External);
    signals.restore_firing(external.iter().map(|stored| &stored.signal));
    for stored in internal {
        signals.signal(Signal {
            at: now,
            state: SignalState::Resolved,
            evidence: "mend restarted: the condition is evaluated afresh".to_owned(),
            ..stored.signal
        });
    }
}

/// Drops series that stopped receiving points, once a minute.
async fn sweep_loop(series: Arc<RwLock<SeriesStore>>, clock: Arc<dyn Clock>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = clock.wall();
        let series = series.clone();
        // Off the async workers, and under the write lock only when something is stale: a store of half a
        // million series took seconds to walk in a debug build, and every task waiting on the lock (the
        // /proc sampler on an async worker) stalled the API with it.
        let swept = tokio::task::spawn_blocking(move || {
            let stale = series.read().is_ok_and(|store| store.has_stale(now));
            if !stale {
                return 0;
            }
            series.write().map_or(0, |mut store| store.sweep(now))
        })
        .await
        .unwrap_or(0);
        if swept > 0 {
            tracing::debug!(swept, "dropped stale series");
        }
    }
}
