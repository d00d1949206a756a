//! Precursors at the edge (issue 15, item 5): the pure model (`mend_act::precursor`) reads every signal
//! on the stream; its early warnings go back on the stream as `precursor` signals, so that they reach
//! the store, `mend signals` and the heal stage (a `[[heal]]` policy with `when = "precursor"`) like any
//! other signal. What it learnt is a snapshot in the store (periodically, and at a clean shutdown),
//! restored at start; a bad or newer one is refused and relearnt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use mend_act::precursor::{Ending, PRECURSOR_SNAPSHOT_VERSION, PrecursorDecision, PrecursorSettings, Precursors};
use mend_api::PrecursorRow;
use mend_bus::{Message, Subscription};
use mend_config::PRECURSOR_TRIGGER;
use mend_store::{JournalEntry, Snapshot, Store};
use mend_types::{Clock, EventSink, ServiceName, Severity, Signal, SignalKind, SignalSink, SignalState};

/// The store key of the precursors' snapshot.
const PRECURSORS_KEY: &str = "precursors";
/// How often sightings past the window are decided (missed) when no signal arrives.
const TICK: Duration = Duration::from_secs(1);

/// The text of a service's log template (the log stage's), to name it in warnings.
pub(crate) type TemplateText = Arc<dyn Fn(&ServiceName, u64) -> Option<String> + Send + Sync>;

/// The model, shared by its loop and the learn stage (report, reset, reload).
pub(crate) struct PrecursorStage {
    model: Mutex<Precursors>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// Where the warnings go (also their ends when what they stood on is forgotten).
    signals: Arc<dyn SignalSink>,
}

impl PrecursorStage {
    /// Restores what was learnt and starts reading `subscription`; warnings are published on `signals`.
    pub(crate) fn start(
        learn: &mend_config::Learn,
        mut subscription: Subscription,
        store: Arc<Store>,
        events: &dyn EventSink,
        clock: Arc<dyn Clock>,
        signals: Arc<dyn SignalSink>,
        templates: TemplateText,
    ) -> anyhow::Result<Arc<Self>> {
        let mut model = Precursors::new(PrecursorSettings::of(learn));
        if let Some(snapshot) = store.snapshot(PRECURSORS_KEY).context("cannot read the learnt precursors")? {
            match model.restore(snapshot.version, &snapshot.body) {
                Ok(n_cues) => tracing::info!(n_cues, "precursors of services' failures restored"),
                Err(error) => crate::learn::refused(
                    events,
                    clock.as_ref(),
                    PRECURSORS_KEY,
                    snapshot.version,
                    &error,
                    "precursors are learnt again",
                ),
            }
        }
        let stage = Arc::new(Self { model: Mutex::new(model), store, clock, signals: signals.clone() });
        let weak = Arc::downgrade(&stage);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Decisions are published under the model's lock, so that a warning and the end that
            // `forget` gives it go out in the order they were decided.
            loop {
                tokio::select! {
                    message = subscription.recv() => {
                        let Some(message) = message else { return };
                        let Message::Signal(signal) = message else { continue };
                        let signal = with_template_text(&signal, templates.as_ref());
                        let Some(stage) = weak.upgrade() else { return };
                        let Ok(mut model) = stage.model.lock() else { return };
                        for decision in model.observe(&signal) {
                            signals.signal(signal_of(decision));
                        }
                    }
                    _ = ticker.tick() => {
                        let Some(stage) = weak.upgrade() else { return };
                        let now = stage.clock.wall();
                        let Ok(mut model) = stage.model.lock() else { return };
                        for decision in model.tick(now) {
                            signals.signal(signal_of(decision));
                        }
                    }
                }
            }
        });
        Ok(stage)
    }

    /// New bounds from a reloaded `[learn]`.
    pub(crate) fn reconfigure(&self, learn: &mend_config::Learn) {
        if let Ok(mut model) = self.model.lock() {
            model.reconfigure(PrecursorSettings::of(learn));
        }
    }

    /// What was learnt, for `mend learn`.
    pub(crate) fn rows(&self) -> Vec<PrecursorRow> {
        let Ok(model) = self.model.lock() else { return Vec::new() };
        model
            .rows()
            .map(|row| {
                let leads = row.record.leads();
                let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                PrecursorRow {
                    service: row.service.clone(),
                    kind: row.cue.kind,
                    name: row.cue.name.clone(),
                    template: row.cue.template,
                    n_incidents: row.record.n_incidents,
                    n_service_incidents: row.n_service_incidents,
                    n_seen: row.record.n_seen,
                    n_followed: row.record.n_followed,
                    n_missed: row.record.n_missed,
                    precision: row.record.precision(),
                    lead_min_ms: leads.map(|l| millis(l.min)),
                    lead_median_ms: leads.map(|l| millis(l.median)),
                    lead_max_ms: leads.map(|l| millis(l.max)),
                    warns: row.warns,
                    evidence: row.record.evidence.clone(),
                }
            })
            .collect()
    }

    /// Forgets one service's precursors, or every one, and persists that (a restart must not bring
    /// them back).
    pub(crate) async fn forget(&self, service: Option<&ServiceName>) {
        if let Ok(mut model) = self.model.lock() {
            for decision in model.forget(service, self.clock.wall()) {
                self.signals.signal(signal_of(decision));
            }
        }
        self.snapshot().await;
    }

    /// Writes what was learnt to the store.
    pub(crate) async fn snapshot(&self) {
        let body = match self.model.lock().map(|model| model.encode()) {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "cannot encode the precursors");
                return;
            }
            Err(_) => return,
        };
        let snapshot = Snapshot {
            key: PRECURSORS_KEY.to_owned(),
            service: None,
            version: PRECURSOR_SNAPSHOT_VERSION,
            at: self.clock.wall(),
            body,
        };
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.journal(vec![JournalEntry::Learnt(Box::new(snapshot))])).await {
            Ok(Ok(())) => tracing::debug!("precursors snapshot written"),
            Ok(Err(error)) => tracing::warn!(error = %error, "cannot write the precursors' snapshot"),
            Err(error) => tracing::warn!(error = %error, "cannot write the precursors' snapshot"),
        }
    }
}

/// A firing signal about a log template (the log stage's, or a rule on its counts) names the template's
/// text in its evidence, so that a warning says which line to look for.
fn with_template_text<'a>(
    signal: &'a Signal,
    templates: &(dyn Fn(&ServiceName, u64) -> Option<String> + Send + Sync),
) -> std::borrow::Cow<'a, Signal> {
    let template = signal.labels.get("template_id").and_then(|id| id.parse::<u64>().ok());
    let (Some(service), Some(template), SignalState::Firing) = (&signal.service, template, signal.state) else {
        return std::borrow::Cow::Borrowed(signal);
    };
    if signal.kind == SignalKind::Precursor {
        return std::borrow::Cow::Borrowed(signal);
    }
    let Some(text) = templates(service, template) else { return std::borrow::Cow::Borrowed(signal) };
    let mut named = signal.clone();
    named.evidence = format!("{service} logged `{text}`: {}", signal.evidence);
    std::borrow::Cow::Owned(named)
}

/// A decision as a signal on the stream: a warning fires; its end resolves it.
fn signal_of(decision: PrecursorDecision) -> Signal {
    let (service, cue, since, at, state, evidence, value) = match decision {
        PrecursorDecision::Warn(warning) => (
            warning.service,
            warning.cue,
            warning.at,
            warning.at,
            SignalState::Firing,
            warning.evidence,
            warning.leads.median.as_secs_f64(),
        ),
        PrecursorDecision::End { service, cue, since, at, ending } => {
            let evidence = match ending {
                Ending::Followed(lead) => {
                    format!("resolved: {service} failed {} after {cue} was seen", mend_types::format_duration(lead))
                }
                Ending::Missed => format!("resolved: no failure of {service} followed {cue} within the window"),
                Ending::Forgotten => format!("resolved: what was learnt about {cue} on {service} was forgotten"),
            };
            (service, cue, since, at, SignalState::Resolved, evidence, 0.0)
        }
    };
    // The cue's identity is the warning's: warnings of two precursors of one service are two conditions.
    let mut labels = BTreeMap::from([
        ("service".to_owned(), service.as_str().to_owned()),
        ("cue_kind".to_owned(), cue.kind.as_str().to_owned()),
        ("cue_name".to_owned(), cue.name.clone()),
    ]);
    if let Some(template) = cue.template {
        labels.insert("cue_template".to_owned(), template.to_string());
    }
    Signal {
        at,
        since,
        state,
        kind: SignalKind::Precursor,
        name: PRECURSOR_TRIGGER.to_owned(),
        severity: Severity::Warning,
        service: Some(service),
        replica: None,
        value,
        labels,
        evidence,
    }
}
