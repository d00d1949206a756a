//! Reloading the config file while mend runs (SIGHUP, `POST /api/v1/reload`): what can change at once
//! is applied, what cannot is listed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mend_api::EventCounter;
use mend_config::{Config, ScrapeTarget};
use mend_observe::scrape::{ScrapeJob, ScrapeStats, Scraper, ScraperHandle};
use mend_observe::series::SeriesStore;
use mend_supervisor::Supervisor;
use mend_types::{Clock, Event, EventKind, EventSink as _};

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
/// targets; healing policies; services added (their proxy bound first, their replicas started after
/// their `depends_on`) and removed (drained through their proxy and stopped, the proxy closed after its
/// in-flight requests, their series ended, their incidents closed); a service's spec (a changed
/// command, environment, working directory, probe, metrics or port range replaces its replicas
/// rolling; a changed restart policy, stop timeout, dependency list or log rotation is taken in place),
/// its proxy table (a changed one: a new listener binds beside the old one, which then closes; an added
/// one binds and serves the ready replicas, which drain through it from then on; one taken away closes
/// once its requests in flight have finished, unless a canary needs it) and its replica count (when the
/// file's count changed). A `[service.NAME.canary]` table (`mend deploy` starts canaries while mend
/// runs), the API and the series store keep the configuration they started with; a reload lists what
/// the file changes there, applied on the next start. Whatever cannot be applied (a taken proxy
/// address, an overlapping port range, a count that does not fit, a proxy a canary needs) refuses the
/// whole reload: nothing changes.
pub(crate) struct Reloadable {
    /// What runs: the start-up configuration with the sections of the last reload.
    pub(crate) running: Config,
    /// The file as last loaded (replica counts as written, not as scaled since).
    pub(crate) file: Config,
    pub(crate) scrapers: Vec<(ScrapeTarget, ScraperHandle)>,
    pub(crate) scrape_context: ScrapeContext,
    pub(crate) detection: DetectLoop,
    pub(crate) supervisor: Arc<Supervisor>,
    /// The proxies: an added service's opens, a removed service's closes.
    pub(crate) traffic: Arc<crate::traffic::Traffic>,
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
        // Compared with what runs (replica counts as scaled, by `mend scale` too), so that a change that
        // waits for a restart stays listed until then; replica counts are compared with the file's last
        // count, so that a reload of another section does not undo a `mend scale`.
        for service in &mut self.running.services {
            if let Some(handle) = self.supervisor.service(service.name.as_str()) {
                service.replicas = handle.config().replicas;
            }
        }
        let ServicePlan {
            updates,
            added,
            removed,
            proxies: rebinds,
            proxies_added,
            proxies_removed,
            not_applied,
            mut conflicts,
        } = plan_services(&self.file, &self.running, &new);
        // A canary a rollout started (`mend deploy`) is the rollout's: the file's table does not replace it.
        for update in updates.iter().filter(|update| update.canary.is_some()) {
            let file_canary = self.running.service(&update.name).and_then(|run| run.canary.as_ref());
            let live = self.supervisor.service(&update.name).and_then(|handle| handle.config().canary.clone());
            let same = |a: Option<&mend_config::Canary>, b: Option<&mend_config::Canary>| {
                a.map(|c| (&c.release, c.replicas)) == b.map(|c| (&c.release, c.replicas))
            };
            if !same(file_canary, live.as_ref()) {
                let release =
                    live.as_ref().map_or_else(String::new, |canary| format!(" of release {}", canary.release));
                conflicts.push(Conflict {
                    keys: vec!["service".to_owned(), update.name.clone(), "canary".to_owned()],
                    message: format!(
                        "a rollout runs a canary{release}: promote or abort it (`mend rollout promote|abort {}`) before \
                         changing the canary table",
                        update.name
                    ),
                });
            }
        }
        // A rollout's canary (`mend deploy`) needs the proxy too, as a configured one does.
        for name in &proxies_removed {
            if let Some(handle) = self.supervisor.service(name.as_str())
                && handle.config().total_replicas() > handle.config().replicas
            {
                conflicts.push(Conflict {
                    keys: vec!["service".to_owned(), name.to_string(), "proxy".to_owned()],
                    message:
                        "a canary runs and the proxy is what splits its traffic: keep the proxy until the rollout \
                              is promoted or aborted"
                            .to_owned(),
                });
            }
        }
        if !conflicts.is_empty() {
            // All or nothing: a file that cannot be applied to what runs changes nothing, like an invalid one.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let each: Vec<String> = conflicts
                .iter()
                .map(|conflict| {
                    let keys: Vec<&str> = conflict.keys.iter().map(String::as_str).collect();
                    let at = mend_config::locate(&text, &keys)
                        .map_or(String::new(), |(line, column)| format!(":{line}:{column}"));
                    format!("{file}{at}: {}: {}", keys.join("."), conflict.message)
                })
                .collect();
            return checked(
                "invalid",
                format!("{file} cannot be applied to what runs; nothing applied: {}", each.join("; ")),
            );
        }
        // The proxies of added services bind first: a taken address refuses the reload, nothing changed
        // (the proxies bound so far close as they are dropped).
        let mut proxies = Vec::new();
        for service in &added {
            match self.traffic.bind_added(service).await {
                Ok(proxy) => proxies.push(proxy),
                Err(error) => {
                    return checked(
                        "invalid",
                        format!("{file} cannot be applied to what runs; nothing applied: {error:#}"),
                    );
                }
            }
        }
        // So do the new listeners of changed proxy tables, beside the running ones (a bind failure keeps
        // the old listener and changes nothing).
        let mut rebound = Vec::new();
        for service in &rebinds {
            match self.traffic.rebind(service).await {
                Ok(Some(listener)) => rebound.push((service.clone(), listener)),
                Ok(None) => {}
                Err(error) => {
                    return checked(
                        "invalid",
                        format!("{file} cannot be applied to what runs; nothing applied: {error:#}"),
                    );
                }
            }
        }
        // And the proxies a reload gives running services (nothing served until they are fed below).
        let mut given = Vec::new();
        for service in &proxies_added {
            match self.traffic.bind_added(service).await {
                Ok(Some(proxy)) => given.push((service.name.clone(), proxy)),
                Ok(None) => {}
                Err(error) => {
                    return checked(
                        "invalid",
                        format!("{file} cannot be applied to what runs; nothing applied: {error:#}"),
                    );
                }
            }
        }
        self.file = new.clone();
        let mut said = Vec::new();
        for (name, proxy) in given {
            let at = proxy.local_addr();
            // The hook first: the respec below hands it to the running replicas.
            self.supervisor.set_traffic(&name, Some(proxy.clone() as Arc<dyn mend_supervisor::TrafficControl>));
            self.traffic.add(proxy, &self.supervisor);
            said.push(format!("{name} is served through a new proxy on {at}"));
        }
        for name in &proxies_removed {
            self.supervisor.set_traffic(name, None);
            said.push(format!("the proxy of {name} closes once its requests in flight have finished"));
            let traffic = self.traffic.clone();
            let name = name.clone();
            self.scale_tasks.push(tokio::spawn(async move { traffic.remove(name.as_str()).await }));
        }
        for (service, listener) in rebound {
            let at = listener.local_addr();
            let was = self.traffic.proxy(service.name.as_str()).map(|proxy| proxy.local_addr());
            let moved = match was {
                Some(was) if was != at => format!(", moved from {was} to {at}"),
                _ => format!(" on {at}"),
            };
            said.push(format!("the proxy of {} takes its new settings{moved}", service.name));
            if let Some(running) = self.running.services.iter_mut().find(|s| s.name == service.name) {
                running.proxy = service.proxy.clone();
            }
            // New connections go to the new listener at once; the old one closes once its requests in
            // flight have finished.
            let traffic = self.traffic.clone();
            self.scale_tasks.push(tokio::spawn(async move { traffic.swap(listener).await }));
        }
        // Added services join in dependency order (the file validated that every `depends_on` names a
        // service it has): each one's replicas wait for its dependencies as at start-up.
        let mut to_add: Vec<(mend_config::Service, Option<Arc<crate::traffic::ServiceProxy>>)> =
            added.into_iter().zip(proxies).collect();
        while !to_add.is_empty() {
            let supervised = |name: &mend_types::ServiceName| self.supervisor.service(name.as_str()).is_some();
            let idx = to_add.iter().position(|(service, _)| service.depends_on.iter().all(supervised)).unwrap_or(0);
            let (service, proxy) = to_add.remove(idx);
            let control = proxy.clone().map(|proxy| proxy as Arc<dyn mend_supervisor::TrafficControl>);
            if let Err(error) = self.supervisor.add(&service, control) {
                said.push(format!("cannot add {}: {error}", service.name));
                continue;
            }
            let listens = match &proxy {
                Some(proxy) => {
                    let at = proxy.local_addr();
                    self.traffic.add(proxy.clone(), &self.supervisor);
                    format!(", proxy on {at}")
                }
                None => String::new(),
            };
            said.push(format!("adding service {} ({} replicas{listens})", service.name, service.total_replicas()));
            self.running.services.push(service);
        }
        // Removed services go in the background, dependents first (reverse start order): each one's
        // replicas drain through its proxy and stop, then its proxy closes and its series end.
        if !removed.is_empty() {
            for name in &removed {
                said.push(format!("removing service {name}"));
            }
            self.running.services.retain(|service| !removed.contains(&service.name));
            let order: Vec<mend_types::ServiceName> = self
                .supervisor
                .services()
                .iter()
                .rev()
                .map(|service| service.config().name.clone())
                .filter(|name| removed.contains(name))
                .collect();
            let (supervisor, traffic, heal) = (self.supervisor.clone(), self.traffic.clone(), self.heal.clone());
            let (series, events, clock) = (
                self.scrape_context.series.clone(),
                self.scrape_context.events.clone(),
                self.scrape_context.clock.clone(),
            );
            self.scale_tasks.push(tokio::spawn(async move {
                for name in order {
                    let stop_timeout =
                        supervisor.service(name.as_str()).map(|s| s.config().stop_timeout).unwrap_or_default();
                    let started = clock.now();
                    if let Err(error) = supervisor.remove(name.as_str(), SCALE_WAIT).await {
                        tracing::warn!(service = %name, error = %error, "removing a service on reload failed");
                        continue;
                    }
                    traffic.remove(name.as_str()).await;
                    let now = clock.wall();
                    let n_series =
                        series.write().map_or(0, |mut store| store.end_matching("service", name.as_str(), now));
                    let n_closed = heal.service_removed(name.clone()).await.unwrap_or(0);
                    let took = clock.now().saturating_duration_since(started);
                    let message = format!(
                        "service {name} removed: its replicas drained and stopped (stop timeout {}s), its proxy closed, {n_series} series ended, {n_closed} open incidents closed, in {:.1}s",
                        stop_timeout.as_secs(),
                        took.as_secs_f64()
                    );
                    tracing::info!("{message}");
                    events.emit(
                        Event::new(now, EventKind::ServiceRemoved, message)
                            .service(&name)
                            .detail("series_ended", n_series)
                            .detail("incidents_closed", n_closed),
                    );
                }
            }));
        }
        let roster_changed = !said.is_empty();
        let pending = if not_applied.is_empty() {
            String::new()
        } else {
            format!("; applied on the next start only: {}", not_applied.join(", "))
        };
        // Specs and replica counts change at once, in the background (a rolling replacement and a scale-in
        // drain, which takes a while): per service, the new spec first, then the count.
        self.scale_tasks.retain(|task| !task.is_finished());
        for update in &updates {
            let Some(service) = self.running.services.iter_mut().find(|s| s.name.as_str() == update.name) else {
                continue;
            };
            if let Some(respec) = &update.respec {
                let replicas = service.replicas;
                *service = respec.spec.clone();
                service.replicas = replicas;
                said.push(if respec.replace {
                    format!("replacing the replicas of {} ({} changed)", update.name, respec.keys.join(", "))
                } else {
                    format!("{} takes its new {}", update.name, respec.keys.join(", "))
                });
            }
            if let Some(replicas) = update.scale {
                service.replicas = replicas;
                said.push(format!("scaling {} to {replicas}", update.name));
            }
            if let Some(change) = &update.canary {
                service.canary = change.to.clone();
                said.push(match (&change.to, change.restart) {
                    (Some(to), true) => format!(
                        "starting {} canary replicas of {} for {}% of {}'s requests",
                        to.replicas, to.release, to.weight_percent, update.name
                    ),
                    (Some(to), false) => {
                        format!("{}'s canary takes {}% of its requests", update.name, to.weight_percent)
                    }
                    (None, _) => format!("taking {}'s canary away (weight 0, drained, stopped)", update.name),
                });
            }
            let max_unavailable = service.healing.max_unavailable.unwrap_or(self.running.healing.max_unavailable);
            let (supervisor, traffic, update) = (self.supervisor.clone(), self.traffic.clone(), update.clone());
            self.scale_tasks.push(tokio::spawn(async move {
                let name = update.name.as_str();
                if let Some(respec) = &update.respec {
                    let request = mend_supervisor::Request {
                        reason: format!("replaced: the configuration changed ({})", respec.keys.join(", ")).into(),
                        counted: false,
                    };
                    let respecced =
                        supervisor.respec(name, &respec.spec, respec.replace, max_unavailable, request, SCALE_WAIT);
                    if let Err(error) = respecced.await {
                        tracing::warn!(service = %name, error = %error, "replacing replicas on reload failed");
                        return;
                    }
                }
                if let Some(replicas) = update.scale
                    && let Err(error) = supervisor.scale(name, replicas, SCALE_WAIT).await
                {
                    tracing::warn!(service = %name, error = %error, "scaling on reload failed");
                }
                if let Some(change) = &update.canary
                    && let Err(error) = apply_canary(&supervisor, &traffic, name, change).await
                {
                    tracing::warn!(service = %name, error = %error, "changing the canary on reload failed");
                }
            }));
        }
        let services_changed = !updates.is_empty() || roster_changed;
        let scaled = if said.is_empty() { String::new() } else { format!("; {}", said.join("; ")) };
        // Healing ([healing], [[heal]], hooks, targets, services' healing and autoscale tables) applies at
        // once, like rules.
        // A service added or removed changes the healer's view of the services too.
        let policies_changed = healing_of(&self.running) != healing_of(&new);
        let healing_changed = policies_changed || roster_changed;
        if healing_changed {
            self.running.healing = new.healing.clone();
            self.running.heal = new.heal.clone();
            self.running.hooks = new.hooks.clone();
            self.running.notify = new.notify.clone();
            for service in &mut self.running.services {
                if let Some(changed) = new.service(service.name.as_str()) {
                    service.healing = changed.healing.clone();
                    service.autoscale = changed.autoscale.clone();
                }
            }
            self.heal.reconfigure(&self.running).await;
        }
        let healed = if policies_changed { "; healing policies applied" } else { "" };
        let running = &self.running;
        // Detection is rebuilt when its sections changed, or services came or went (implicit memory
        // forecasts follow the services).
        if (&running.rules, &running.detects, &running.forecasts, &running.scrapes)
            == (&new.rules, &new.detects, &new.forecasts, &new.scrapes)
            && !roster_changed
            && (services_changed || healing_changed)
        {
            let scaled = format!("{scaled}{healed}");
            return Event::new(now, EventKind::ConfigReloaded, format!("{trigger}: reloaded {file}{scaled}{pending}"))
                .detail("file", file.to_string())
                .detail("outcome", "reloaded")
                .detail("not_applied", not_applied);
        }
        if (&running.rules, &running.detects, &running.forecasts, &running.scrapes)
            == (&new.rules, &new.detects, &new.forecasts, &new.scrapes)
            && !roster_changed
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

/// The healing sections of a config (with the services' autoscalers, which act through the heal stage),
/// for comparing two.
fn healing_of(config: &Config) -> impl PartialEq + '_ {
    let services: Vec<(&mend_config::ServiceHealing, &Option<mend_config::Autoscale>)> =
        config.services.iter().map(|s| (&s.healing, &s.autoscale)).collect();
    (&config.healing, &config.heal, &config.hooks, &config.notify, services)
}

/// What a reload does to the services that run on.
#[derive(Debug, Default)]
struct ServicePlan {
    /// Services whose spec or replica count changes at once.
    updates: Vec<ServiceUpdate>,
    /// Services the file adds: they start at once.
    added: Vec<mend_config::Service>,
    /// Services the file no longer has: they drain and stop.
    removed: Vec<mend_types::ServiceName>,
    /// Running services whose proxy table changed (as the file has them): a new listener takes over.
    proxies: Vec<mend_config::Service>,
    /// Running services the file gives a proxy (as the file has them): it binds, then serves their ready
    /// replicas, which drain through it from then on.
    proxies_added: Vec<mend_config::Service>,
    /// Running services whose proxy the file takes away: it closes once its requests in flight finish.
    proxies_removed: Vec<mend_types::ServiceName>,
    /// What waits for the next start (`service.web.ports`, `service.api (added)`, `api`).
    not_applied: Vec<String>,
    /// What the file asks that cannot be applied to what runs: the reload applies nothing.
    conflicts: Vec<Conflict>,
}

/// A key whose new value cannot be applied to what runs.
#[derive(Debug, Clone, PartialEq)]
struct Conflict {
    /// Its key path (`["service", "web", "replicas"]`).
    keys: Vec<String>,
    /// Why.
    message: String,
}

/// One service's live change.
#[derive(Debug, Clone, PartialEq)]
struct ServiceUpdate {
    name: String,
    respec: Option<Respec>,
    /// The replica count the file now asks for.
    scale: Option<u32>,
    /// The `[service.NAME.canary]` table changed.
    canary: Option<CanaryChange>,
}

/// A changed `[service.NAME.canary]` table, as it applies to a running service.
#[derive(Debug, Clone, PartialEq)]
struct CanaryChange {
    /// The canary as the file now has it (none: taken away).
    to: Option<mend_config::Canary>,
    /// The canary's replicas go (drained) and, with a table, start again: its release, replica count or
    /// pins changed, or the release's own command or environment; otherwise only its weight changes.
    restart: bool,
}

/// Applies a changed canary table to running `name`: the old canary out of the split, drained and
/// stopped; the new one started, its table set, and its weight given once it is ready (a canary that
/// does not become ready keeps weight 0 and the reload's warning says so).
async fn apply_canary(
    supervisor: &Supervisor,
    traffic: &crate::traffic::Traffic,
    name: &str,
    change: &CanaryChange,
) -> Result<(), mend_supervisor::ControlError> {
    use mend_api::TrafficApi;
    if change.restart {
        traffic.set_canary_weight(name, 0);
        supervisor.stop_canary(name, SCALE_WAIT).await?;
        if let Some(to) = &change.to {
            let started = supervisor.start_canary(name, &to.release, to.replicas, SCALE_WAIT).await?;
            supervisor.set_canary_table(name, Some(to.clone()))?;
            if !started.iter().all(|status| status.ready) {
                return Err(mend_supervisor::ControlError::CannotRelease {
                    service: name.to_owned(),
                    reason: format!("the canary of release {} is not ready: it keeps weight 0", to.release),
                });
            }
        }
    } else if let Some(to) = &change.to {
        supervisor.set_canary_table(name, Some(to.clone()))?;
    }
    if let Some(to) = &change.to {
        traffic.set_canary_weight(name, to.weight_percent);
    }
    Ok(())
}

/// How `running`'s canary table becomes `new`'s.
fn canary_change(running: &mend_config::Service, new: &mend_config::Service) -> Option<CanaryChange> {
    if running.canary == new.canary
        && running.canary.iter().all(|canary| running.release(&canary.release) == new.release(&canary.release))
    {
        return None;
    }
    let restart = match (&running.canary, &new.canary) {
        (Some(from), Some(to)) => {
            let weight_only = mend_config::Canary { weight_percent: from.weight_percent, ..to.clone() };
            weight_only != *from || running.release(&from.release) != new.release(&to.release)
        }
        _ => true,
    };
    Some(CanaryChange { to: new.canary.clone(), restart })
}

/// A new spec for a running service.
#[derive(Debug, Clone, PartialEq)]
struct Respec {
    /// What runs, with the keys that apply live taken from the file.
    spec: mend_config::Service,
    /// The replicas are replaced (rolling) rather than keep running.
    replace: bool,
    /// The keys that changed, for the event.
    keys: Vec<&'static str>,
}

/// The service keys whose change replaces the replicas (rolling).
const REPLACING: &[&str] =
    &["command", "shell", "working_dir", "env", "liveness", "readiness", "startup", "metrics", "release"];
/// The service keys a running replica takes without being replaced (`depends_on` orders starts and
/// removals, which read it when they happen; `logs` rotation limits apply from each replica's next
/// start, when its log file is opened again).
const IN_PLACE: &[&str] = &[
    "restart",
    "backoff",
    "restart_limit",
    "stop_signal",
    "stop_timeout",
    "max_memory_bytes",
    "releases",
    "depends_on",
    "logs",
];
/// The service keys that wait for the next start. (`ports` has its own rule: see [`ports_change`];
/// `proxy` too: a table changed in place is rebound, one added binds, one taken away closes; and
/// `canary`: see [`canary_change`].)
const WAITING: &[&str] = &["stable_release"];

/// How a changed port range applies to a running service.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PortsChange {
    /// Same first port: every replica keeps its port; only the room for more changes.
    InPlace,
    /// A range apart from the running one: the replicas are replaced rolling onto the new ports.
    Replace,
}

/// How `running`'s ports can become `new`'s, or why not (a replica replaced onto a port that a replica
/// not yet replaced holds would fail to start, and stop the roll).
fn ports_change(
    running: Option<mend_config::PortRange>,
    new: Option<mend_config::PortRange>,
    n_running: u32,
) -> Result<PortsChange, String> {
    if let Some(new) = new
        && n_running > 0
        && new.port_of(n_running - 1).is_none()
    {
        return Err(format!("the {n_running} replicas running do not fit the new port range {new}"));
    }
    match (running, new) {
        (Some(running), Some(new)) if running.first == new.first => Ok(PortsChange::InPlace),
        (Some(running), Some(new)) if running.overlaps(&new) => Err(format!(
            "the new port range {new} overlaps the running {running} at other indexes: a replica replaced onto a port \
             another still holds could not start; choose a range apart from {running} (or the same first port)"
        )),
        _ => Ok(PortsChange::Replace),
    }
}

/// The keys in which two specs of a service differ (outside `replicas` and `healing`, which have their
/// own paths).
fn changed_keys(old: &mend_config::Service, new: &mend_config::Service) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differs("command", old.command != new.command);
    differs("shell", old.shell != new.shell);
    differs("working_dir", old.working_dir != new.working_dir);
    differs("env", old.env != new.env);
    differs("liveness", old.liveness != new.liveness);
    differs("readiness", old.readiness != new.readiness);
    differs("startup", old.startup != new.startup);
    differs("metrics", old.metrics != new.metrics);
    differs("restart", old.restart != new.restart);
    differs("backoff", old.backoff != new.backoff);
    differs("restart_limit", old.restart_limit != new.restart_limit);
    differs("stop_signal", old.stop_signal != new.stop_signal);
    differs("stop_timeout", old.stop_timeout != new.stop_timeout);
    differs("max_memory_bytes", old.max_memory_bytes != new.max_memory_bytes);
    differs("ports", old.ports != new.ports);
    differs("depends_on", old.depends_on != new.depends_on);
    differs("logs", old.logs != new.logs);
    differs("proxy", old.proxy != new.proxy);
    differs("canary", old.canary != new.canary);
    // The release that runs (the stable one as running: a promotion may have changed it) replaces its
    // replicas when its own table changed; the other releases' tables only matter to the next deploy.
    // (A service's `command` is its stable release's: a changed command is listed once, as `command`.)
    let stable_changed = old.release(&old.stable_release) != new.release(&old.stable_release);
    let listed = old.command != new.command || old.env != new.env;
    differs("release", stable_changed && !listed);
    let others = |service: &mend_config::Service| -> Vec<mend_config::ReleaseSpec> {
        service.releases.iter().filter(|release| release.name != old.stable_release).cloned().collect()
    };
    differs("releases", others(old) != others(new));
    // Which release is stable changes by deploying it (`mend deploy`), not by a reload.
    differs("stable_release", old.stable_release != new.stable_release);
    keys
}

/// `spec` with the live keys of `from`.
fn with_live_keys(spec: &mend_config::Service, from: &mend_config::Service) -> mend_config::Service {
    let mut spec = spec.clone();
    spec.command = from.command.clone();
    spec.shell = from.shell;
    spec.working_dir = from.working_dir.clone();
    spec.env = from.env.clone();
    spec.liveness = from.liveness.clone();
    spec.readiness = from.readiness.clone();
    spec.startup = from.startup.clone();
    spec.metrics = from.metrics.clone();
    spec.restart = from.restart;
    spec.backoff = from.backoff;
    spec.restart_limit = from.restart_limit;
    spec.stop_signal = from.stop_signal;
    spec.stop_timeout = from.stop_timeout;
    spec.max_memory_bytes = from.max_memory_bytes;
    // Every release's table as the file has it, but the stable release stays the one running.
    spec.releases = from.releases.clone();
    spec.depends_on = from.depends_on.clone();
    spec.logs = from.logs;
    spec.ports = from.ports;
    spec.proxy = from.proxy.clone();
    // The canary table changes with its replicas (after this respec), by `set_canary_table`.
    spec
}

/// What a changed file asks of the services (pure): `file` is the file as last loaded, `running` what
/// runs (replica counts as scaled), `new` the file now. A spec key is compared with what runs, so that
/// a key that waits for a restart stays listed until then; a replica count with the file's last count,
/// so that a count scaled by hand (`mend scale`, a healing policy) stays unless the file's count changed.
fn plan_services(file: &Config, running: &Config, new: &Config) -> ServicePlan {
    let mut plan = ServicePlan::default();
    for service in &new.services {
        let name = service.name.as_str();
        let Some(run) = running.service(name) else {
            plan.added.push(service.clone());
            continue;
        };
        let keys = changed_keys(run, service);
        for key in keys.iter().filter(|key| WAITING.contains(key)) {
            plan.not_applied.push(format!("service.{name}.{key}"));
        }
        let mut live: Vec<&'static str> =
            keys.iter().copied().filter(|key| REPLACING.contains(key) || IN_PLACE.contains(key)).collect();
        if keys.contains(&"proxy") {
            match (&run.proxy, &service.proxy) {
                (Some(_), Some(_)) => plan.proxies.push(service.clone()),
                // The running replicas take the proxy (to drain through) or lose it in place.
                (None, Some(_)) => {
                    plan.proxies_added.push(service.clone());
                    live.push("proxy");
                }
                (Some(_), None) if run.canary.is_some() => plan.conflicts.push(Conflict {
                    keys: vec!["service".to_owned(), name.to_owned(), "proxy".to_owned()],
                    message: "a canary runs and the proxy is what splits its traffic: keep the proxy until the canary \
                              is promoted or taken away"
                        .to_owned(),
                }),
                (Some(_), None) => {
                    plan.proxies_removed.push(service.name.clone());
                    live.push("proxy");
                }
                (None, None) => {}
            }
        }
        let mut replace = live.iter().any(|key| REPLACING.contains(key));
        // The range replicas get once this reload applies.
        let mut ports = run.ports;
        if keys.contains(&"ports") {
            match ports_change(run.ports, service.ports, run.total_replicas()) {
                Ok(change) => {
                    live.push("ports");
                    replace |= change == PortsChange::Replace;
                    ports = service.ports;
                }
                Err(why) => plan.conflicts.push(Conflict {
                    keys: vec!["service".to_owned(), name.to_owned(), "ports".to_owned()],
                    message: why,
                }),
            }
        }
        let canary = canary_change(run, service);
        if canary.is_some() && !live.contains(&"canary") {
            live.push("canary");
        }
        let respec = (!live.is_empty()).then(|| Respec { spec: with_live_keys(run, service), replace, keys: live });
        let last_count = file.service(name).map_or(run.replicas, |last| last.replicas);
        let mut scale =
            (service.replicas != last_count && service.replicas != run.replicas).then_some(service.replicas);
        if let Some(replicas) = scale
            && let Some(ports) = ports
            && replicas > 0
            && ports.port_of(replicas - 1).is_none()
        {
            let which = if ports == run.ports.unwrap_or(ports) { "running" } else { "new" };
            plan.conflicts.push(Conflict {
                keys: vec!["service".to_owned(), name.to_owned(), "replicas".to_owned()],
                message: format!("{replicas} replicas do not fit the {which} port range {ports}"),
            });
            scale = None;
        }
        if respec.is_some() || scale.is_some() || canary.is_some() {
            plan.updates.push(ServiceUpdate { name: name.to_owned(), respec, scale, canary });
        }
    }
    for service in &running.services {
        if new.service(service.name.as_str()).is_none() {
            plan.removed.push(service.name.clone());
        }
    }
    if running.api != new.api {
        plan.not_applied.push("api".to_owned());
    }
    if running.storage != new.storage {
        plan.not_applied.push("storage".to_owned());
    }
    if running.remote_write != new.remote_write {
        plan.not_applied.push("remote_write".to_owned());
    }
    // The fleet's etcd client, lease and limits are made once, at start.
    if running.fleet != new.fleet {
        plan.not_applied.push("fleet".to_owned());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(service: &str) -> Config {
        let text =
            format!("[service.web]\ncommand = [\"demo\", \"--port\", \"{{port}}\"]\nports = \"9000-9003\"\n{service}");
        mend_config::parse("mend.toml", &text, std::path::Path::new("/tmp")).expect("valid config")
    }

    fn scaled(mut config: Config, replicas: u32) -> Config {
        config.services[0].replicas = replicas;
        config
    }

    #[test]
    fn the_running_release_replaces_its_replicas_other_releases_wait_for_a_deploy() {
        let releases = |v1: &str, v2: &str, stable: &str| {
            config(&format!(
                "replicas = 2\nstable_release = \"{stable}\"\n[service.web.release.v1]\nenv = {{ V = \"{v1}\" }}\n\
                 [service.web.release.v2]\nenv = {{ V = \"{v2}\" }}\n"
            ))
        };
        let running = releases("1", "2", "v1");
        // The stable release's own table changed: its replicas are replaced, running the new table.
        let plan = plan_services(&running, &running, &releases("1b", "2", "v1"));
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert!(respec.replace && respec.keys == vec!["release"], "{respec:?}");
        let v1 = respec.spec.release(&running.services[0].stable_release).expect("v1");
        assert_eq!(v1.env[0].1.source(), "1b");
        // Another release's table: taken in place, for the next deploy; nothing is replaced.
        let plan = plan_services(&running, &running, &releases("1", "2b", "v1"));
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert!(!respec.replace && respec.keys == vec!["releases"], "{respec:?}");
        // Which release is stable is a deploy's business: listed as waiting, the running one stays.
        let plan = plan_services(&running, &running, &releases("1", "2", "v2"));
        assert!(plan.not_applied.iter().any(|key| key == "service.web.stable_release"), "{plan:?}");
        assert!(plan.updates.iter().all(|update| update.respec.is_none()), "{plan:?}");
    }

    #[test]
    fn a_changed_remote_write_waits_for_the_next_start() {
        let remote = |interval: &str| {
            let mut config = config("");
            let text =
                format!("[remote_write]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\ninterval = \"{interval}\"\n");
            config.remote_write = mend_config::parse("mend.toml", &text, std::path::Path::new("/tmp"))
                .expect("valid config")
                .remote_write;
            config
        };
        let running = remote("10s");
        assert!(plan_services(&running, &running, &remote("10s")).not_applied.is_empty());
        let plan = plan_services(&running, &running, &remote("5s"));
        assert_eq!(plan.not_applied, ["remote_write"], "{plan:?}");
        assert!(plan.updates.is_empty() && plan.conflicts.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_reload_of_another_key_keeps_a_manual_scale() {
        // Regression (issue 13): the file's count (2) was compared with the running count (3, by `mend
        // scale`), so any reload scaled back to 2.
        let file = config("replicas = 2");
        let running = scaled(config("replicas = 2"), 3);
        let new = config("replicas = 2\nstop_timeout = \"7s\"");
        let plan = plan_services(&file, &running, &new);
        assert_eq!(plan.updates.len(), 1, "{plan:?}");
        assert_eq!(plan.updates[0].scale, None, "the scaled count stays");
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert_eq!((respec.replace, respec.keys.clone()), (false, vec!["stop_timeout"]));
        assert!(plan.not_applied.is_empty(), "{plan:?}");
        // Log rotation and dependencies: taken in place, nothing replaced, nothing waits.
        let new = config("replicas = 2\ndepends_on = []\n[service.web.logs]\nmax_file_bytes = 4096");
        let plan = plan_services(&file, &running, &new);
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert_eq!((respec.replace, respec.keys.clone()), (false, vec!["logs"]), "{plan:?}");
        assert_eq!(respec.spec.logs.max_file_bytes, 4096);
        assert!(plan.not_applied.is_empty(), "{plan:?}");
        // Nothing changed at all: nothing to do, the scale stays.
        let plan = plan_services(&file, &running, &file);
        assert!(plan.updates.is_empty() && plan.not_applied.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_changed_count_in_the_file_applies_over_a_manual_scale() {
        let plan = plan_services(&config("replicas = 2"), &scaled(config("replicas = 2"), 3), &config("replicas = 4"));
        assert_eq!(plan.updates[0].scale, Some(4));
        assert_eq!(plan.updates[0].respec, None);
    }

    #[test]
    fn a_changed_command_env_or_probe_replaces_the_replicas() {
        let running = config("replicas = 2");
        for (change, key) in [
            ("replicas = 2\nenv = { A = \"1\" }", "env"),
            ("replicas = 2\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{port}/health\"", "liveness"),
        ] {
            let plan = plan_services(&running, &running, &config(change));
            let respec = plan.updates[0].respec.as_ref().expect("a new spec");
            assert!(respec.replace && respec.keys == vec![key], "{change}: {respec:?}");
        }
        let mut new = running.clone();
        new.services[0].command.pop();
        let plan = plan_services(&running, &running, &new);
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert!(respec.replace && respec.keys == vec!["command"], "{respec:?}");
        assert_eq!(respec.spec.command, new.services[0].command);
    }

    #[test]
    fn a_changed_proxy_table_is_rebound_one_added_binds_one_taken_away_closes() {
        let running = config("replicas = 2\n[service.web.proxy]\nlisten = \"127.0.0.1:8000\"");
        let moved = config("replicas = 2\n[service.web.proxy]\nlisten = \"127.0.0.1:8001\"\nrequest_timeout = \"2s\"");
        let plan = plan_services(&running, &running, &moved);
        assert_eq!(plan.proxies.len(), 1, "{plan:?}");
        assert!(plan.updates.is_empty() && plan.not_applied.is_empty() && plan.conflicts.is_empty(), "{plan:?}");
        // With a respec in the same reload, the running spec takes the new table too.
        let mut both = moved.clone();
        both.services[0].stop_timeout = std::time::Duration::from_secs(7);
        let plan = plan_services(&running, &running, &both);
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert_eq!(respec.spec.proxy, both.services[0].proxy);
        // A proxy added to a running service binds; its replicas take it in place (to drain through).
        let bare = config("replicas = 2");
        let plan = plan_services(&bare, &bare, &running);
        assert!(plan.not_applied.is_empty() && plan.conflicts.is_empty() && plan.proxies.is_empty(), "{plan:?}");
        assert_eq!(plan.proxies_added.len(), 1);
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert_eq!((respec.keys.as_slice(), respec.replace), (["proxy"].as_slice(), false));
        assert_eq!(respec.spec.proxy, running.services[0].proxy);
        // One taken away closes; the replicas run on without it.
        let plan = plan_services(&running, &running, &bare);
        assert!(plan.not_applied.is_empty() && plan.conflicts.is_empty() && plan.proxies.is_empty(), "{plan:?}");
        assert_eq!(plan.proxies_removed, [mend_types::ServiceName::new("web").expect("a name")]);
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert_eq!((respec.spec.proxy.as_ref(), respec.replace), (None, false));
    }

    #[test]
    fn a_canary_table_starts_changes_its_weight_or_goes() {
        let proxied = "replicas = 2\n[service.web.proxy]\nlisten = \"127.0.0.1:8000\"\n";
        let table = |weight: u8, pin: &str| {
            format!("{proxied}[service.web.canary]\nreplicas = 1\nweight = {weight}\n{pin}env = {{ NOTE = \"c\" }}\n")
        };
        let (bare, light) = (config(proxied), config(&table(10, "")));
        let change = |from: &Config, to: &Config| {
            let plan = plan_services(from, from, to);
            assert!(plan.conflicts.is_empty() && plan.not_applied.is_empty(), "{plan:?}");
            plan.updates[0].canary.clone().expect("a canary change")
        };
        // Added, or taken away: its replicas start, or go.
        assert_eq!(change(&bare, &light), CanaryChange { to: light.services[0].canary.clone(), restart: true });
        assert_eq!(change(&light, &bare), CanaryChange { to: None, restart: true });
        // Only the weight: the same replicas, another share.
        let heavy = config(&table(60, ""));
        assert_eq!(change(&light, &heavy), CanaryChange { to: heavy.services[0].canary.clone(), restart: false });
        // Pins, or what the canary's release runs: its replicas start again.
        assert!(change(&light, &config(&table(10, "pin_header = \"x-canary: 1\"\n"))).restart);
        let other_env = config(&table(10, "").replace("NOTE = \"c\"", "NOTE = \"d\""));
        assert!(change(&light, &other_env).restart);
        // Unchanged: nothing.
        assert!(plan_services(&light, &light, &light).updates.is_empty());
    }

    #[test]
    fn a_proxy_that_splits_a_canary_is_not_taken_away() {
        let canary = "replicas = 2\n[service.web.proxy]\nlisten = \"127.0.0.1:8000\"\n\
                      [service.web.canary]\nreplicas = 1\nweight = 10\nenv = { NOTE = \"canary\" }\n";
        let running = config(canary);
        let mut bare = running.clone();
        bare.services[0].proxy = None;
        let plan = plan_services(&running, &running, &bare);
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        assert_eq!(plan.conflicts[0].keys, ["service", "web", "proxy"]);
        assert!(plan.proxies_removed.is_empty());
    }

    #[test]
    fn changed_ports_roll_onto_a_range_apart_or_say_why_not() {
        let running = config("replicas = 2");
        let with = |replicas: u32, first: u16, last: u16| {
            let mut new = config("replicas = 2");
            new.services[0].replicas = replicas;
            new.services[0].ports = Some(mend_config::PortRange { first, last });
            new
        };
        // A range apart, with a count that fits it: replaced rolling onto the new ports, then scaled.
        let plan = plan_services(&running, &running, &with(6, 9100, 9109));
        assert!(plan.conflicts.is_empty() && plan.not_applied.is_empty(), "{plan:?}");
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert!(respec.replace && respec.keys == vec!["ports"], "{respec:?}");
        assert_eq!(respec.spec.ports, Some(mend_config::PortRange { first: 9100, last: 9109 }));
        assert_eq!(plan.updates[0].scale, Some(6));
        // The same first port: every replica keeps its port; taken in place, and the count fits.
        let plan = plan_services(&running, &running, &with(6, 9000, 9009));
        let respec = plan.updates[0].respec.as_ref().expect("a new spec");
        assert!(!respec.replace && respec.keys == vec!["ports"], "{respec:?}");
        assert_eq!(plan.updates[0].scale, Some(6));
        // Overlapping at other indexes: refused, naming the key, and nothing else applies.
        let plan = plan_services(&running, &running, &with(2, 9001, 9004));
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        assert_eq!(plan.conflicts[0].keys, ["service", "web", "ports"]);
        assert!(plan.conflicts[0].message.starts_with("the new port range 9001-9004 overlaps the running 9000-9003"));
        // A count that does not fit the new range: refused, naming the count.
        let plan = plan_services(&running, &running, &with(6, 9100, 9103));
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        assert_eq!(plan.conflicts[0].keys, ["service", "web", "replicas"]);
        assert_eq!(plan.conflicts[0].message, "6 replicas do not fit the new port range 9100-9103");
        // Too small for the replicas that run: refused, naming the ports.
        let plan = plan_services(&running, &scaled(running.clone(), 3), &with(2, 9000, 9001));
        assert_eq!(plan.conflicts[0].keys, ["service", "web", "ports"], "{plan:?}");
        assert_eq!(plan.conflicts[0].message, "the 3 replicas running do not fit the new port range 9000-9001");
    }
}
