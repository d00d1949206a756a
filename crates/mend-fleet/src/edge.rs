//! The etcd edge: the client, this host's lease and registration, its published state, the fleet view
//! it reads back, permits taken in transactions, and the election. The decisions are in
//! [`crate::decide`]; nothing here decides beyond "did etcd confirm it".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mend_config::Fleet;
use mend_types::Clock;

use crate::decide::{FleetRefusal, Limits, PermitRequest, PermitView, decide_permit, fleet_incidents, window_of};
use crate::etcd::{Etcd, EtcdError, ModRevisionBelow, Put, prefix_end};
use crate::state::{FleetIncident, FleetView, HostState, HostView, IncidentSummary, ServiceHealth};
use crate::tls::{TlsClient, TlsFileError};

/// What this host publishes, asked for at each tick: its services' health and its open incidents.
pub type LocalState = Box<dyn Fn() -> (Vec<ServiceHealth>, Vec<IncidentSummary>) + Send + Sync>;

/// Why the fleet could not start, or why etcd did not answer.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The machine's host name cannot be read (set `[fleet] host`).
    #[error("cannot read the host name from /proc/sys/kernel/hostname (set host in [fleet])")]
    HostName(#[source] std::io::Error),
    /// The machine's host name cannot stand in an etcd key.
    #[error("the host name {0:?} cannot name this host in the fleet (set host in [fleet])")]
    InvalidHost(String),
    /// A TLS file of `[fleet]` cannot be used (read when the fleet starts).
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    /// etcd answered with an error, or could not be reached.
    #[error("etcd")]
    Etcd(#[from] EtcdError),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// The lease expired (etcd was away longer than its TTL): registered again with a new one.
    #[error("this host's lease expired")]
    LeaseLost,
}

/// A fleet permit held while its action runs; [`FleetHandle::release`] gives it back (the lease takes it
/// if this host dies first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPermit {
    /// The in-flight entry (a disruptive action's); None for an action that only spends the budget.
    key: Option<String>,
}

impl FleetPermit {
    /// Its in-flight key in etcd, if the action disrupts.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// The fleet's answer before an automatic disruptive action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermitAnswer {
    /// Granted: hold it while acting.
    Granted(FleetPermit),
    /// Refused by the fleet's limits or a fleet incident.
    Refused(FleetRefusal),
    /// etcd did not confirm (unreachable, timed out, not registered yet): the host acts on its local
    /// budgets alone.
    Unreachable(String),
}

/// Attempts at a permit transaction when other hosts write permits at the same moment.
const PERMIT_ATTEMPTS: usize = 8;
/// Bound on one etcd call made by the background loop.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The fleet as this host takes part in it; cheap to clone.
#[derive(Clone)]
pub struct FleetHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: Fleet,
    host: String,
    clock: Arc<dyn Clock>,
    local: LocalState,
    etcd: Etcd,
    lease: Mutex<Option<i64>>,
    /// The budget's lease: (window index, lease id).
    budget_lease: Mutex<Option<(i64, i64)>>,
    view: Mutex<FleetView>,
    stopping: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, EtcdError>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FleetError::Timeout(limit)),
    }
}

/// `error` and its causes, `: `-separated: what the view, a permit's answer and the log say (a TLS
/// handshake's reason is a cause, and the one thing an operator needs to read).
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The machine's host name.
fn machine_host_name() -> Result<String, FleetError> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(FleetError::HostName)?;
    Ok(text.trim().to_owned())
}

/// Loop state of the background task.
#[derive(Default)]
struct LoopState {
    kept_at: Option<Instant>,
    published: Option<(HostState, Instant)>,
    read_at: Option<Instant>,
}

/// The fleet's settings made ready before anything runs: the host name read, the endpoints parsed, the
/// TLS files read. etcd is not contacted yet.
pub struct FleetSetup {
    config: Fleet,
    host: String,
    etcd: Etcd,
}

impl FleetSetup {
    /// Reads what `config` names (the machine's host name unless set, the TLS files): an error here
    /// stops mend before any replica starts.
    pub fn new(config: Fleet) -> Result<Self, FleetError> {
        let tls = config.tls.as_ref().map(TlsClient::new).transpose()?;
        let auth = config.auth.as_ref().map(|auth| (auth.user.clone(), auth.password.clone()));
        let etcd = Etcd::new(&config.endpoints, auth, tls)?;
        let host = match &config.host {
            Some(host) => host.clone(),
            None => machine_host_name()?,
        };
        if !mend_config::valid_host_name(&host) {
            return Err(FleetError::InvalidHost(host));
        }
        Ok(Self { config, host, etcd })
    }
}

impl FleetHandle {
    /// [`FleetSetup::new`] then [`FleetHandle::start_with`].
    pub fn start(
        config: Fleet,
        clock: Arc<dyn Clock>,
        local: LocalState,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), FleetError> {
        Ok(Self::start_with(FleetSetup::new(config)?, clock, local))
    }

    /// Starts taking part in the fleet: never waits for etcd (a host that cannot reach it heals on its
    /// own meanwhile). Returns the handle and the background task (registration, state, view, election).
    pub fn start_with(
        setup: FleetSetup,
        clock: Arc<dyn Clock>,
        local: LocalState,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let FleetSetup { config, host, etcd } = setup;
        let view = FleetView {
            host: host.clone(),
            reachable: false,
            error: Some("not connected yet".to_owned()),
            last_contact_ms: None,
            leader: None,
            hosts: Vec::new(),
            incidents: Vec::new(),
        };
        let handle = Self {
            inner: Arc::new(Inner {
                config,
                host,
                clock,
                local,
                etcd,
                lease: Mutex::new(None),
                budget_lease: Mutex::new(None),
                view: Mutex::new(view),
                stopping: AtomicBool::new(false),
            }),
        };
        let background = handle.clone();
        let task = tokio::spawn(async move {
            let election = background.clone();
            let campaign = tokio::spawn(async move { election.campaign_loop().await });
            background.main_loop().await;
            campaign.abort();
        });
        (handle, task)
    }

    /// This host's name in the fleet.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The fleet as this host last read it.
    pub fn view(&self) -> FleetView {
        lock(&self.inner.view).clone()
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.config.prefix.clone();
        for part in parts {
            key.push('/');
            key.push_str(part);
        }
        key
    }

    fn lease(&self) -> Option<i64> {
        *lock(&self.inner.lease)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.wall().as_millis()
    }

    fn mark_unreachable(&self, error: &FleetError) {
        let error = with_causes(error);
        let mut view = lock(&self.inner.view);
        if view.reachable {
            tracing::warn!(error = %error, "fleet unreachable: healing on local budgets only");
        }
        view.reachable = false;
        view.error = Some(error);
    }

    /// Asks the fleet for a permit for `request` (action `action_id` of this host), bounded by
    /// `permit_timeout`.
    pub async fn permit(&self, request: &PermitRequest, action_id: u64) -> PermitAnswer {
        let limit = self.inner.config.permit_timeout;
        match tokio::time::timeout(limit, self.try_permit(request, action_id)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                // The budget's lease may be what failed (expired while etcd was away): a new one next time.
                *lock(&self.inner.budget_lease) = None;
                self.mark_unreachable(&error);
                PermitAnswer::Unreachable(with_causes(&error))
            }
            Err(_) => {
                *lock(&self.inner.budget_lease) = None;
                let error = FleetError::Timeout(limit);
                self.mark_unreachable(&error);
                PermitAnswer::Unreachable(with_causes(&error))
            }
        }
    }

    async fn try_permit(&self, request: &PermitRequest, action_id: u64) -> Result<PermitAnswer, FleetError> {
        let Some(lease) = self.lease() else {
            // Why it is not: the background loop's last error (a TLS handshake refused, a wrong password).
            let why = lock(&self.inner.view).error.clone().unwrap_or_else(|| "not yet".to_owned());
            return Ok(PermitAnswer::Unreachable(format!("this host is not registered with etcd ({why})")));
        };
        let etcd = &self.inner.etcd;
        let config = &self.inner.config;
        let limits = Limits {
            max_actions_per_window: config.max_actions_per_window,
            window: config.action_window,
            max_unavailable: config.max_unavailable,
        };
        let action = action_id.to_string();
        for _ in 0..PERMIT_ATTEMPTS {
            let (window, left_ms) = window_of(self.now_ms(), config.action_window);
            let window_text = window.to_string();
            let budget_prefix = self.key(&["budget", &window_text, ""]);
            let permits_prefix = self.key(&["permits", &request.service, ""]);
            // Both counts from one snapshot (the second read at the first's revision): two reads at
            // different moments could see another host's grant half, its permit but not its budget entry.
            let budget = etcd.range_prefix(&budget_prefix, true).await?;
            let revision = budget.header.revision;
            let in_flight = etcd.range_prefix_at(&permits_prefix, true, revision).await?;
            let incident = etcd.get(&self.key(&["incidents", &request.service])).await?;
            let incident = incident.and_then(|value| serde_json::from_slice::<FleetIncident>(&value).ok());
            let (budget_revision, permits_revision) = (revision, revision);
            let view = PermitView {
                n_window_actions: u32::try_from(budget.count).unwrap_or(u32::MAX),
                n_in_flight: u32::try_from(in_flight.count).unwrap_or(u32::MAX),
                incident,
            };
            if let Err(refusal) = decide_permit(request, &view, &limits) {
                return Ok(PermitAnswer::Refused(refusal));
            }
            let budget_lease = self.budget_lease(window, left_ms).await?;
            let permit_key = self.key(&["permits", &request.service, &self.inner.host, &action]);
            let budget_key = self.key(&["budget", &window_text, &self.inner.host, &action]);
            let value = serde_json::json!({
                "host": self.inner.host, "action": request.action, "service": request.service, "at_ms": self.now_ms(),
            })
            .to_string();
            // No key under either prefix written after the reads the decision was made on.
            let unchanged_since = |prefix: &str, revision: i64| ModRevisionBelow {
                key: prefix.to_owned(),
                range_end: prefix_end(prefix),
                below: revision + 1,
            };
            let compares =
                [unchanged_since(&budget_prefix, budget_revision), unchanged_since(&permits_prefix, permits_revision)];
            let mut puts = vec![Put { key: budget_key, value: value.clone(), lease: budget_lease }];
            if request.disrupts {
                puts.push(Put { key: permit_key.clone(), value, lease });
            }
            if etcd.txn_puts(&compares, &puts).await? {
                return Ok(PermitAnswer::Granted(FleetPermit { key: request.disrupts.then_some(permit_key) }));
            }
            // Another host wrote a permit between the read and the write: read again.
        }
        Ok(PermitAnswer::Refused(FleetRefusal::Contention { attempts: PERMIT_ATTEMPTS }))
    }

    /// The lease of the budget's entries in `window` (it ends with the window, plus a lease TTL).
    async fn budget_lease(&self, window: i64, left_ms: i64) -> Result<i64, FleetError> {
        if let Some((cached_window, lease)) = *lock(&self.inner.budget_lease)
            && cached_window == window
        {
            return Ok(lease);
        }
        let ttl = (left_ms + 999) / 1000 + self.inner.config.lease_ttl.as_secs() as i64;
        let lease = self.inner.etcd.lease_grant(ttl).await?;
        *lock(&self.inner.budget_lease) = Some((window, lease));
        Ok(lease)
    }

    /// Gives `permit` back (best effort, bounded: its lease takes it otherwise).
    pub async fn release(&self, permit: FleetPermit) {
        let Some(key) = permit.key else { return };
        if let Err(error) = bounded(CALL_TIMEOUT, self.inner.etcd.delete(&key)).await {
            tracing::warn!(key = %key, error = %with_causes(&error), "cannot release a fleet permit: its lease will");
        }
    }

    /// Leaves the fleet at shutdown: revokes this host's lease (its registration, state and permits go at
    /// once), bounded.
    pub async fn leave(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        let Some(lease) = lock(&self.inner.lease).take() else { return };
        if let Err(error) = bounded(Duration::from_secs(1), self.inner.etcd.lease_revoke(lease)).await {
            tracing::warn!(error = %with_causes(&error), "cannot revoke this host's fleet lease: it expires on its own");
        }
    }

    async fn main_loop(&self) {
        let tick = self.inner.config.publish_every.min(Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut state = LoopState::default();
        // Everything is polled: each host publishes every `publish_every` (or at once on a change) and reads
        // the fleet as often, so a host that comes or goes, or a fleet incident, is seen within about one
        // `publish_every` (a host gone is seen when its lease expires, `lease_ttl` after it stopped).
        loop {
            ticker.tick().await;
            if self.inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            if let Err(error) = self.step(&mut state).await {
                self.mark_unreachable(&error);
                state.kept_at = None;
                if matches!(error, FleetError::LeaseLost) {
                    *lock(&self.inner.lease) = None;
                }
            }
        }
    }

    /// One tick: keep the lease (register anew if it was lost), publish on change or when due, read the
    /// fleet when due; as leader, declare fleet incidents.
    async fn step(&self, state: &mut LoopState) -> Result<(), FleetError> {
        let etcd = &self.inner.etcd;
        let ttl = self.inner.config.lease_ttl;
        let lease = match self.lease() {
            Some(lease) => lease,
            None => {
                let lease = bounded(CALL_TIMEOUT, etcd.lease_grant(ttl.as_secs() as i64)).await?;
                let registration =
                    serde_json::json!({ "host": self.inner.host, "since_ms": self.now_ms() }).to_string();
                bounded(CALL_TIMEOUT, etcd.put(&self.key(&["hosts", &self.inner.host]), &registration, lease)).await?;
                *lock(&self.inner.lease) = Some(lease);
                // Just granted: the first renewal is due a third of the TTL from now.
                state.kept_at = Some(self.inner.clock.now());
                state.published = None;
                tracing::info!(host = %self.inner.host, lease, ttl_s = ttl.as_secs(), "registered in the fleet");
                lease
            }
        };
        let now = self.inner.clock.now();
        if state.kept_at.is_none_or(|at| now.duration_since(at) >= ttl / 3) {
            // One renewal per POST; a TTL of 0 (or none) in the answer: the lease is gone.
            if bounded(CALL_TIMEOUT, etcd.lease_keep_alive(lease)).await? <= 0 {
                return Err(FleetError::LeaseLost);
            }
            state.kept_at = Some(self.inner.clock.now());
        }
        let (services, incidents) = (self.inner.local)();
        let host_state =
            HostState { host: self.inner.host.clone(), at_ms: self.now_ms(), services, incidents }.bounded();
        let due = state.published.as_ref().is_none_or(|(last, at)| {
            !last.same_content(&host_state) || now.duration_since(*at) >= self.inner.config.publish_every
        });
        if due {
            let value = serde_json::to_string(&host_state).unwrap_or_default();
            bounded(CALL_TIMEOUT, etcd.put(&self.key(&["state", &self.inner.host]), &value, lease)).await?;
            state.published = Some((host_state, self.inner.clock.now()));
        }
        if state.read_at.is_none_or(|at| now.duration_since(at) >= self.inner.config.publish_every) || due {
            self.read_fleet(lease).await?;
            state.read_at = Some(self.inner.clock.now());
        }
        Ok(())
    }

    /// Reads hosts, states, incidents and the leader into the view; as leader, writes fleet incidents.
    async fn read_fleet(&self, lease: i64) -> Result<(), FleetError> {
        let etcd = &self.inner.etcd;
        let hosts = bounded(CALL_TIMEOUT, etcd.range_prefix(&self.key(&["hosts", ""]), false)).await?;
        let states = bounded(CALL_TIMEOUT, etcd.range_prefix(&self.key(&["state", ""]), false)).await?;
        let incidents = bounded(CALL_TIMEOUT, etcd.range_prefix(&self.key(&["incidents", ""]), false)).await?;
        // No leader yet is an answer (None), not an outage.
        let leader = bounded(CALL_TIMEOUT, etcd.leader(&self.key(&["leader"])))
            .await?
            .and_then(|value| String::from_utf8(value).ok());
        let registered: Vec<String> = hosts
            .kvs
            .iter()
            .filter_map(|kv| std::str::from_utf8(&kv.key).ok()?.rsplit('/').next().map(str::to_owned))
            .collect();
        let states: Vec<HostState> =
            states.kvs.iter().filter_map(|kv| serde_json::from_slice::<HostState>(&kv.value).ok()).collect();
        let mut fleet_incidents_now: Vec<FleetIncident> =
            incidents.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
        if leader.as_deref() == Some(self.inner.host.as_str()) {
            fleet_incidents_now = self.lead(lease, &states, &fleet_incidents_now).await?;
        }
        let mut names: Vec<String> = registered.clone();
        names.extend(states.iter().map(|s| s.host.clone()));
        names.sort();
        names.dedup();
        let hosts = names
            .into_iter()
            .map(|host| HostView {
                registered: registered.contains(&host),
                state: states.iter().find(|s| s.host == host).cloned(),
                host,
            })
            .collect();
        let mut view = lock(&self.inner.view);
        if !view.reachable {
            tracing::info!("fleet reachable again");
        }
        *view = FleetView {
            host: self.inner.host.clone(),
            reachable: true,
            error: None,
            last_contact_ms: Some(self.now_ms()),
            leader,
            hosts,
            incidents: fleet_incidents_now,
        };
        Ok(())
    }

    /// The leader's duty: declares the fleet incidents the states show and ends those they no longer show.
    async fn lead(
        &self,
        lease: i64,
        states: &[HostState],
        open: &[FleetIncident],
    ) -> Result<Vec<FleetIncident>, FleetError> {
        let stale_ms = i64::try_from((self.inner.config.publish_every * 3 + self.inner.config.lease_ttl).as_millis())
            .unwrap_or(i64::MAX);
        let now = fleet_incidents(states, self.inner.config.incident_ratio, self.now_ms(), stale_ms);
        let mut kept = Vec::new();
        for incident in &now {
            let key = self.key(&["incidents", &incident.service]);
            match open.iter().find(|o| o.service == incident.service) {
                Some(existing) => kept.push(FleetIncident { since_ms: existing.since_ms, ..incident.clone() }),
                None => {
                    tracing::error!(
                        service = %incident.service, n_unhealthy = incident.unhealthy.len(), n_hosts = incident.n_hosts,
                        "fleet incident: a service unhealthy on most hosts at once; hosts stop acting on it alone"
                    );
                    let value = serde_json::to_string(incident).unwrap_or_default();
                    bounded(CALL_TIMEOUT, self.inner.etcd.put(&key, &value, lease)).await?;
                    kept.push(incident.clone());
                }
            }
        }
        for ended in open.iter().filter(|o| !now.iter().any(|n| n.service == o.service)) {
            tracing::info!(service = %ended.service, "fleet incident over");
            bounded(CALL_TIMEOUT, self.inner.etcd.delete(&self.key(&["incidents", &ended.service]))).await?;
        }
        Ok(kept)
    }

    /// Campaigns for leadership with this host's lease, again whenever the lease changes or the campaign
    /// fails; etcd's election hands leadership on when the leader's lease ends.
    async fn campaign_loop(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let Some(lease) = self.lease() else { continue };
            // No request timeout of its own: a campaign waits until this host leads.
            let election = self.key(&["leader"]);
            let campaign = self.inner.etcd.campaign(&election, &self.inner.host, lease);
            // Bounded so that a lease replaced meanwhile starts a new campaign.
            match tokio::time::timeout(self.inner.config.lease_ttl * 3, campaign).await {
                Ok(Ok(_)) => {
                    tracing::info!(host = %self.inner.host, "elected fleet leader");
                    while self.lease() == Some(lease) && !self.inner.stopping.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    tracing::info!(host = %self.inner.host, "no longer the fleet leader (lease ended)");
                }
                Ok(Err(error)) => {
                    tracing::debug!(error = %with_causes(&error), "campaign for fleet leader failed; again");
                }
                Err(_) => {}
            }
        }
    }
}
