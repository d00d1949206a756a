//! Reloading the config file while mend runs (SIGHUP, `POST /api/v1/reload`): what can change at once
//! is applied, what cannot is listed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mend_api::EventCounter;
use mend_config::{Config, ScrapeTarget};
use mend_observe::scrape::{ScrapeJob, ScrapeStats, Scraper, ScraperHandle};
use mend_observe::series::SeriesStore;
use mend_supervisor::Supervisor;
use mend_types::{Clock, Event, EventKind};

use mend_detection::{DetectLoop, Detection};

/// What a static scraper needs.
pub(crate) struct ScrapeContext {
    pub(crate) series: Arc<RwLock<SeriesStore>>,
    pub(crate) events: Arc<EventCounter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Arc<ScrapeStats>,
}

impl ScrapeContext {
    /// Starts scraping a `[[scrape]]` target until the handle stops it.
    pub(crate) fn spawn(&self, target: &ScrapeTarget) -> ScraperHandle {
        let mut labels =
            vec![("job".to_owned(), target.name.clone()), ("instance".to_owned(), target.url.authority.clone())];
        labels.extend(target.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let job = ScrapeJob {
            name: target.name.clone(),
            target: target.url.clone(),
            interval: target.interval,
            timeout: target.timeout,
            labels,
            max_series: target.max_series,
            sample_limit: target.sample_limit,
            service: None,
            replica: None,
            // A static target is expected to answer already: its first failure is news.
            startup_grace: std::time::Duration::ZERO,
        };
        let scraper =
            Scraper::new(job, self.series.clone(), self.events.clone(), self.clock.clone(), self.stats.clone());
        scraper.spawn()
    }
}

/// What a reload (SIGHUP, `POST /api/v1/reload`) changes while mend runs: the detect stage (rules,
/// detector attachments, forecasts) and the static scrape targets, as Prometheus reloads its rules and
/// targets, and the replica count of a service whose only change it is. Other service changes, the
/// proxies, the API and the series store keep the configuration they started with; a reload lists what
/// the file changes there, applied on the next start.
pub(crate) struct Reloadable {
    /// What runs: the start-up configuration with the sections of the last reload.
    pub(crate) running: Config,
    pub(crate) scrapers: Vec<(ScrapeTarget, ScraperHandle)>,
    pub(crate) scrape_context: ScrapeContext,
    pub(crate) detection: DetectLoop,
    pub(crate) supervisor: Arc<Supervisor>,
    /// The heal stage: takes reloaded policies, limits, modes, hooks and targets.
    pub(crate) heal: crate::heal::HealStage,
    /// Scales started by reloads (aborted at shutdown).
    pub(crate) scale_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a reload's scale waits for new replicas to be ready or surplus ones to stop.
const SCALE_WAIT: Duration = Duration::from_secs(120);

impl Reloadable {
    /// Reads the config file again and applies what can be applied; the event says what happened.
    pub(crate) async fn reload(&mut self, trigger: &str, now: mend_types::Timestamp) -> Event {
        let path = self.running.source.clone();
        let file = path.display();
        let checked = |outcome: &str, message: String| {
            Event::new(now, EventKind::ConfigChecked, format!("{trigger}: {message}"))
                .detail("file", file.to_string())
                .detail("outcome", outcome)
        };
        let new = match mend_config::load(&path) {
            Ok(new) => new,
            Err(error @ mend_config::LoadError::Read { .. }) => {
                return checked("unreadable", format!("{error}; the running configuration stays"));
            }
            Err(error) => {
                return checked("invalid", format!("{file} is invalid; the running configuration stays: {error}"));
            }
        };
        // Compared with what runs (replica counts as scaled, by `mend scale` too), so that a service
        // change stays listed until mend restarts.
        for service in &mut self.running.services {
            if let Some(handle) = self.supervisor.service(service.name.as_str()) {
                service.replicas = handle.config().replicas;
            }
        }
        let (scales, not_applied) = service_changes(&self.running, &new);
        let pending = if not_applied.is_empty() {
            String::new()
        } else {
            format!("; applied on the next start only: {}", not_applied.join(", "))
        };
        // Replica counts change at once, in the background (scaling in drains, which takes a while).
        for (name, replicas) in &scales {
            if let Some(service) = self.running.services.iter_mut().find(|s| s.name.as_str() == name) {
                service.replicas = *replicas;
            }
            let (supervisor, name, replicas) = (self.supervisor.clone(), name.clone(), *replicas);
            self.scale_tasks.retain(|task| !task.is_finished());
            self.scale_tasks.push(tokio::spawn(async move {
                if let Err(error) = supervisor.scale(&name, replicas, SCALE_WAIT).await {
                    tracing::warn!(service = %name, error = %error, "scaling on reload failed");
                }
            }));
        }
        let scaled = if scales.is_empty() {
            String::new()
        } else {
            let each: Vec<String> = scales.iter().map(|(name, n)| format!("{name} to {n}")).collect();
            format!("; scaling {}", each.join(", "))
        };
        // Healing ([healing], [[heal]], hooks, targets, services' healing tables) applies at once, like rules.
        let healing_changed = healing_of(&self.running) != healing_of(&new);
        if healing_changed {
            self.running.healing = new.healing.clone();
            self.running.heal = new.heal.clone();
            self.running.hooks = new.hooks.clone();
            self.running.notify = new.notify.clone();
            for service in &mut self.running.services {
                if let Some(changed) = new.service(service.name.as_str()) {
                    service.healing = changed.healing.clone();
                }
            }
            self.heal.reconfigure(&self.running).await;
        }
        let healed = if healing_changed { "; healing policies applied" } else { "" };
        let running = &self.running;
        if (&running.rules, &running.detects, &running.forecasts, &running.scrapes)
            == (&new.rules, &new.detects, &new.forecasts, &new.scrapes)
            && (!scales.is_empty() || healing_changed)
        {
            let scaled = format!("{scaled}{healed}");
            return Event::new(now, EventKind::ConfigReloaded, format!("{trigger}: reloaded {file}{scaled}{pending}"))
                .detail("file", file.to_string())
                .detail("outcome", "reloaded")
                .detail("not_applied", not_applied);
        }
        if (&running.rules, &running.detects, &running.forecasts, &running.scrapes)
            == (&new.rules, &new.detects, &new.forecasts, &new.scrapes)
        {
            let what = if not_applied.is_empty() {
                format!("{file} is unchanged")
            } else {
                format!("{file}: rules, detectors, forecasts and scrape targets are unchanged{pending}")
            };
            return checked("unchanged", what).detail("not_applied", not_applied);
        }
        let mut applied = self.running.clone();
        applied.rules = new.rules;
        applied.detects = new.detects;
        applied.forecasts = new.forecasts;
        applied.scrapes = new.scrapes;
        // Built from the running services, so that implicit memory forecasts follow the limits enforced.
        let detection = Detection::new(&applied);
        let (n_rules, n_detects, n_forecasts) = detection.counts();
        if !self.detection.apply(detection).await {
            return checked("stopping", format!("{file} changed, but mend is stopping; nothing applied"));
        }
        // Targets no longer wanted stop first (their markers are stamped `now`), then new ones start.
        let mut previous = std::mem::take(&mut self.scrapers);
        let mut to_start = Vec::new();
        for target in &applied.scrapes {
            match previous.iter().position(|(running, _)| running == target) {
                Some(idx) => self.scrapers.push(previous.remove(idx)),
                None => to_start.push(target.clone()),
            }
        }
        let (kept, started, stopped) = (self.scrapers.len(), to_start.len(), previous.len());
        for (_, scraper) in previous {
            scraper.stop(now);
        }
        for target in to_start {
            let scraper = self.scrape_context.spawn(&target);
            self.scrapers.push((target, scraper));
        }
        self.running = applied;
        let message = format!(
            "{trigger}: reloaded {file}: {n_rules} rules, {n_detects} detectors, {n_forecasts} forecasts; scrape targets: {kept} kept, {started} started, {stopped} stopped{scaled}{healed}{pending}"
        );
        Event::new(now, EventKind::ConfigReloaded, message)
            .detail("file", file.to_string())
            .detail("outcome", "reloaded")
            .detail("rules", n_rules)
            .detail("detectors", n_detects)
            .detail("forecasts", n_forecasts)
            .detail("not_applied", not_applied)
    }
}

/// The healing sections of a config, for comparing two.
fn healing_of(config: &Config) -> impl PartialEq + '_ {
    let services: Vec<&mend_config::ServiceHealing> = config.services.iter().map(|s| &s.healing).collect();
    (&config.healing, &config.heal, &config.hooks, &config.notify, services)
}

/// What a changed file asks of the services: replica counts mend can change at once (a service that
/// differs only there, without a canary), and the sections that only take effect when mend starts
/// again.
fn service_changes(running: &Config, new: &Config) -> (Vec<(String, u32)>, Vec<String>) {
    let (mut scales, mut changes) = (Vec::new(), Vec::new());
    for service in &new.services {
        match running.service(service.name.as_str()) {
            None => changes.push(format!("service.{} (added)", service.name)),
            Some(old) if old != service => {
                let mut rescaled = old.clone();
                rescaled.replicas = service.replicas;
                // A service's healing table applies at once (with the policies).
                rescaled.healing = service.healing.clone();
                if rescaled == *service && old.replicas == service.replicas {
                    continue;
                }
                if rescaled == *service && service.canary.is_none() {
                    scales.push((service.name.to_string(), service.replicas));
                } else {
                    changes.push(format!("service.{} (changed)", service.name));
                }
            }
            Some(_) => {}
        }
    }
    for service in &running.services {
        if new.service(service.name.as_str()).is_none() {
            changes.push(format!("service.{} (removed)", service.name));
        }
    }
    if running.api != new.api {
        changes.push("api".to_owned());
    }
    if running.storage != new.storage {
        changes.push("storage".to_owned());
    }
    (scales, changes)
}
