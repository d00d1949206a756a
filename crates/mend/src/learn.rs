//! The learn stage at the edge: operators' feedback on detection, what was learnt (`mend learn`), and
//! forgetting it. The decisions are pure (`mend_act::Learner` inside the healer for the order of a
//! policy's actions, `mend_detection::feedback::Sensitivities` for detection); this module reads the
//! journal, persists what changes (a snapshot through the store's acknowledged path, before the change
//! is applied), publishes an event per change and hands the detect loop its relaxations on a `watch`.

use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use mend_api::{
    FeedbackAnswer, FeedbackError, FeedbackVerdict, LearnApi, LearnReport, Pending, ResetAnswer, SensitivityChange,
    SensitivityRow, SourceKind,
};
use mend_config::Config;
use mend_detection::feedback::{Relaxations, SNAPSHOT_VERSION, Sensitivities, Source, Verdict, relaxed_for};
use mend_store::{JournalEntry, Snapshot, Store};
use mend_types::{Clock, Event, EventKind, EventSink, IncidentId, ServiceName, SignalKind};
use tokio::sync::watch;

use crate::heal::HealStage;

/// The store key of the sensitivities' snapshot.
const SENSITIVITIES_KEY: &str = "sensitivities";
/// The store key of the detect stage's snapshot.
const DETECT_KEY: &str = "detect";

/// Says that a snapshot was refused: an event and a warning, and what is lost is learnt again.
pub(crate) fn refused(
    events: &dyn EventSink,
    clock: &dyn Clock,
    key: &str,
    version: u32,
    error: &dyn std::error::Error,
    then: &str,
) {
    let message = format!("the learnt {key} snapshot was refused ({error}): {then}");
    tracing::warn!(key, version, error = %error, "{message}");
    events.emit(
        Event::new(clock.wall(), EventKind::LearntStateRefused, message)
            .detail("key", key)
            .detail("version", version)
            .detail("error", error.to_string()),
    );
}

/// Restores the detect stage's snapshot into `detection` before its loop starts; a bad or newer one is
/// refused (an event and a warning) and the detectors learn from scratch.
pub(crate) fn restore_detection(
    store: &Store,
    events: &dyn EventSink,
    clock: &dyn Clock,
    detection: &mut mend_detection::Detection,
) -> anyhow::Result<()> {
    let Some(snapshot) = store.snapshot(DETECT_KEY).context("cannot read the detect stage's snapshot")? else {
        return Ok(());
    };
    match detection.restore(snapshot.version, &snapshot.body, clock.wall().as_secs_f64()) {
        Ok(restored) => tracing::info!(
            n_attachments = restored.n_attachments,
            n_series = restored.n_series,
            taken_at = %snapshot.at,
            "detector and forecaster state restored: no warm-up"
        ),
        Err(error) => refused(events, clock, DETECT_KEY, snapshot.version, &error, "detectors learn from scratch"),
    }
    Ok(())
}

/// What the learn stage reads of the config: `[learn]`, and each rule's `for` and detector's name.
struct Configured {
    enabled: bool,
    rules: Vec<(String, std::time::Duration)>,
    detects: Vec<String>,
}

impl Configured {
    fn of(config: &Config) -> Self {
        Self {
            enabled: config.learn.enabled,
            rules: config.rules.iter().map(|r| (r.name.clone(), r.for_duration)).collect(),
            detects: config.detects.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

/// What learns continuously beside the learn stage, which snapshots and forgets it.
pub(crate) struct Learners {
    /// The detect loop (detectors' and forecasters' state).
    pub(crate) detect: mend_detection::DetectHandle,
    /// The precursors of services' failures.
    pub(crate) precursors: Arc<crate::precursor::PrecursorStage>,
}

/// The learn stage's handle (the API's [`LearnApi`]).
pub(crate) struct Learning {
    heal: HealStage,
    store: Arc<Store>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    sensitivities: Mutex<Sensitivities>,
    relaxations: watch::Sender<Relaxations>,
    configured: RwLock<Configured>,
    detect: mend_detection::DetectHandle,
    precursors: Arc<crate::precursor::PrecursorStage>,
}

fn source_of(kind: SignalKind, name: &str) -> Option<Source> {
    match kind {
        // The built-in rule has no `for` of the config's to relax.
        SignalKind::Rule if name == mend_types::SERVICE_ERRORS_RULE => None,
        SignalKind::Rule => Some(Source::Rule(name.to_owned())),
        SignalKind::Anomaly => Some(Source::Detect(name.to_owned())),
        _ => None,
    }
}

fn wire(source: &Source) -> (SourceKind, String) {
    match source {
        Source::Rule(name) => (SourceKind::Rule, name.clone()),
        Source::Detect(name) => (SourceKind::Detect, name.clone()),
    }
}

/// Restores the sensitivities' snapshot; a bad or newer one is refused (an event and a warning) and
/// feedback starts over.
fn restore(store: &Store, events: &dyn EventSink, clock: &dyn Clock, learnt: &mut Sensitivities) -> anyhow::Result<()> {
    let Some(snapshot) = store.snapshot(SENSITIVITIES_KEY).context("cannot read the learnt sensitivities")? else {
        return Ok(());
    };
    match learnt.restore(snapshot.version, &snapshot.body) {
        Ok(n) => tracing::info!(n_sources = n, "sensitivities learnt from feedback restored"),
        Err(error) => refused(events, clock, SENSITIVITIES_KEY, snapshot.version, &error, "feedback starts over"),
    }
    Ok(())
}

impl Learning {
    /// The stage for `config`: restores what feedback relaxed and hands it to the detect loop through
    /// `relaxations`; follows the heal stage's reloads.
    pub(crate) fn start(
        config: &Config,
        heal: HealStage,
        store: Arc<Store>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        relaxations: watch::Sender<Relaxations>,
        learners: Learners,
    ) -> anyhow::Result<Arc<Self>> {
        let Learners { detect, precursors } = learners;
        let mut sensitivities = Sensitivities::new(config.learn.clone());
        restore(&store, events.as_ref(), clock.as_ref(), &mut sensitivities)?;
        relaxations.send_replace(sensitivities.relaxations());
        let mut reloads = heal.config();
        let learning = Self {
            heal,
            store,
            events,
            clock,
            sensitivities: Mutex::new(sensitivities),
            relaxations,
            configured: RwLock::new(Configured::of(config)),
            detect,
            precursors,
        };
        let learning = Arc::new(learning);
        let snapshots = Arc::downgrade(&learning);
        let every = config.learn.snapshot_every;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(learning) = snapshots.upgrade() else { return };
                learning.snapshot_learnt().await;
            }
        });
        let follower = Arc::downgrade(&learning);
        tokio::spawn(async move {
            while reloads.changed().await.is_ok() {
                let config = reloads.borrow_and_update().clone();
                let Some(learning) = follower.upgrade() else { return };
                learning.reconfigure(&config);
            }
        });
        Ok(learning)
    }

    /// Takes a reloaded config: bounds and switches of `[learn]`, and the configured rules and detectors.
    pub(crate) fn reconfigure(&self, config: &Config) {
        self.precursors.reconfigure(&config.learn);
        if let Ok(mut configured) = self.configured.write() {
            *configured = Configured::of(config);
        }
        if let Ok(mut sensitivities) = self.sensitivities.lock() {
            sensitivities.reconfigure(config.learn.clone());
            self.relaxations.send_replace(sensitivities.relaxations());
        }
    }

    /// Writes what is learnt continuously (the detect stage's state, the precursors) to the store,
    /// periodically and at a clean shutdown.
    pub(crate) async fn snapshot_learnt(&self) {
        self.snapshot_detection().await;
        self.precursors.snapshot().await;
    }

    /// Writes the detect stage's state to the store (periodically, and at a clean shutdown). A loop
    /// that is not running (nothing to evaluate) has nothing to write.
    pub(crate) async fn snapshot_detection(&self) {
        let Some(body) = self.detect.snapshot().await else { return };
        let n_bytes = body.len();
        let snapshot = Snapshot {
            key: DETECT_KEY.to_owned(),
            service: None,
            version: mend_detection::snapshot::DETECT_SNAPSHOT_VERSION,
            at: self.clock.wall(),
            body,
        };
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.journal(vec![JournalEntry::Learnt(Box::new(snapshot))])).await {
            Ok(Ok(())) => tracing::debug!(n_bytes, "detect stage snapshot written"),
            Ok(Err(error)) => tracing::warn!(error = %error, "cannot write the detect stage's snapshot"),
            Err(error) => tracing::warn!(error = %error, "cannot write the detect stage's snapshot"),
        }
    }

    fn sensitivity_rows(&self) -> Vec<SensitivityRow> {
        let (Ok(configured), Ok(sensitivities)) = (self.configured.read(), self.sensitivities.lock()) else {
            return Vec::new();
        };
        let relaxations = sensitivities.relaxations();
        let relax_of = |source: &Source| sensitivities.all().find(|(s, _)| *s == source).map(|(_, r)| *r);
        let mut rows = Vec::new();
        for (name, configured_for) in &configured.rules {
            let source = Source::Rule(name.clone());
            let relax = relax_of(&source).unwrap_or_default();
            let factor = relaxations.factor(&source);
            rows.push(SensitivityRow {
                kind: SourceKind::Rule,
                name: name.clone(),
                configured: configured_for.as_secs_f64(),
                current: relaxed_for(*configured_for, factor, relaxations.min_for).as_secs_f64(),
                relax: factor,
                n_false_positive: relax.n_false_positive,
                n_correct_run: relax.n_correct_run,
            });
        }
        for name in &configured.detects {
            let source = Source::Detect(name.clone());
            let relax = relax_of(&source).unwrap_or_default();
            let factor = relaxations.factor(&source);
            let alarm = mend_detect::attach::ALARM_SCORE;
            rows.push(SensitivityRow {
                kind: SourceKind::Detect,
                name: name.clone(),
                configured: alarm,
                current: 1.0 - (1.0 - alarm) / factor,
                relax: factor,
                n_false_positive: relax.n_false_positive,
                n_correct_run: relax.n_correct_run,
            });
        }
        rows
    }

    /// Feedback on incident `id`: persisted, then applied and published.
    async fn take_feedback(&self, id: IncidentId, verdict: FeedbackVerdict) -> Result<FeedbackAnswer, FeedbackError> {
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || store.incident(id))
            .await
            .map_err(|error| FeedbackError::Failed(error.to_string()))?
            .map_err(|error| FeedbackError::Failed(format!("cannot read the journal: {error}")))?;
        let Some((incident, _)) = found else { return Err(FeedbackError::UnknownIncident(id)) };
        let mut sources: Vec<Source> =
            incident.signals.iter().filter_map(|signal| source_of(signal.kind, &signal.name)).collect();
        sources.sort();
        sources.dedup();
        let pure_verdict = match verdict {
            FeedbackVerdict::FalsePositive => Verdict::FalsePositive,
            FeedbackVerdict::Correct => Verdict::Correct,
        };
        // Decided on a copy: what is applied is what was persisted.
        let (changes, next) = {
            let sensitivities = self.sensitivities.lock().map_err(|_| FeedbackError::Failed("poisoned".into()))?;
            let mut next = sensitivities.clone();
            (next.feedback(&sources, pure_verdict), next)
        };
        let now = self.clock.wall();
        let snapshot = Snapshot {
            key: SENSITIVITIES_KEY.to_owned(),
            service: None,
            version: SNAPSHOT_VERSION,
            at: now,
            body: next.encode(),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.journal(vec![JournalEntry::Learnt(Box::new(snapshot))]))
            .await
            .map_err(|error| FeedbackError::Failed(error.to_string()))?
            .map_err(|error| FeedbackError::Failed(format!("cannot persist the sensitivities: {error}")))?;
        if let Ok(mut sensitivities) = self.sensitivities.lock() {
            *sensitivities = next;
            self.relaxations.send_replace(sensitivities.relaxations());
        }
        let verdict_text = match verdict {
            FeedbackVerdict::FalsePositive => "a false positive",
            FeedbackVerdict::Correct => "correct",
        };
        tracing::info!(incident = %id, verdict = verdict_text, n_sources = sources.len(), n_changes = changes.len(), "feedback taken");
        let mut answered = Vec::new();
        for change in changes {
            let (kind, name) = wire(&change.source);
            let message = format!("{}: incident {id} {}", change.source, change.why);
            let mut event = Event::new(now, EventKind::SensitivityChanged, message)
                .detail("kind", if kind == SourceKind::Rule { "rule" } else { "detect" })
                .detail("name", name.clone())
                .detail("incident", id.0)
                .detail("from", change.from)
                .detail("to", change.to)
                .detail("reason", change.why.clone());
            if let Some(service) = incident.diagnosis.root.as_ref().or(incident.services.iter().next()) {
                event = event.service(service);
            }
            tracing::info!(source = %change.source, from = change.from, to = change.to, "{}", change.why);
            self.events.emit(event);
            answered.push(SensitivityChange { kind, name, from: change.from, to: change.to, why: change.why });
        }
        Ok(FeedbackAnswer { incident: id, verdict, sources: sources.iter().map(wire).collect(), changes: answered })
    }

    async fn forget(&self, service: Option<ServiceName>) -> Result<ResetAnswer, String> {
        let store = self.store.clone();
        let forget = service.clone();
        tokio::task::spawn_blocking(move || store.journal(vec![JournalEntry::Forget(forget)]))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("cannot forget in the store: {error}"))?;
        self.heal.forget(service.clone()).await.ok_or("the heal stage has stopped")?;
        let mut forgot = vec!["outcomes of actions and the orders learnt from them".to_owned()];
        if self.detect.forget(service.as_ref().map(ToString::to_string)) {
            forgot.push("what detectors and forecasters learnt".to_owned());
            // The next snapshot must not bring it back after a restart.
            self.snapshot_detection().await;
        }
        self.precursors.forget(service.as_ref()).await;
        forgot.push("precursors of failures".to_owned());
        if service.is_none() {
            // Rules and detectors are not a service's: only a reset of everything forgets feedback.
            if let Ok(mut sensitivities) = self.sensitivities.lock() {
                sensitivities.forget();
                self.relaxations.send_replace(sensitivities.relaxations());
            }
            forgot.push("sensitivities learnt from feedback".to_owned());
        }
        let scope = service.as_ref().map(|s| format!(" about {s}")).unwrap_or_default();
        let message = format!("learnt state forgotten{scope}: {}", forgot.join(", "));
        tracing::warn!("{message}");
        let mut event = Event::new(self.clock.wall(), EventKind::LearntStateReset, message);
        if let Some(service) = &service {
            event = event.service(service);
        }
        self.events.emit(event);
        Ok(ResetAnswer { service, forgot })
    }
}

/// The learn stage as the API holds it.
pub(crate) struct LearnHandle(pub(crate) Arc<Learning>);

impl LearnApi for LearnHandle {
    fn report(&self) -> Pending<Result<LearnReport, String>> {
        let learning = self.0.clone();
        Box::pin(async move {
            let learnt = learning.heal.learnt().await.ok_or("the heal stage has stopped")?;
            let enabled = learning.configured.read().map(|c| c.enabled).unwrap_or(true);
            Ok(LearnReport {
                enabled,
                outcomes: learnt.outcomes,
                orders: learnt.orders,
                sensitivities: learning.sensitivity_rows(),
                precursors: learning.precursors.rows(),
            })
        })
    }

    fn feedback(
        &self,
        incident: IncidentId,
        verdict: FeedbackVerdict,
    ) -> Pending<Result<FeedbackAnswer, FeedbackError>> {
        let learning = self.0.clone();
        Box::pin(async move { learning.take_feedback(incident, verdict).await })
    }

    fn reset(&self, service: Option<ServiceName>) -> Pending<Result<ResetAnswer, String>> {
        let learning = self.0.clone();
        Box::pin(async move { learning.forget(service).await })
    }
}
