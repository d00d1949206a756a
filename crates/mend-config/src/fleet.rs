//! Fleet configuration: `[fleet]`, from its raw table to the validated [`Fleet`]. Without a `[fleet]`
//! table mend is one host on its own: no etcd client is made and nothing about the fleet runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::validate::{KeyPath, Problems, duration, integer};

/// `[fleet]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    host: Option<String>,
    lease_ttl: Option<String>,
    publish_every: Option<String>,
    permit_timeout: Option<String>,
    max_actions_per_window: Option<i64>,
    action_window: Option<String>,
    max_unavailable: Option<i64>,
    incident_ratio: Option<f64>,
    user: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    server_name: Option<String>,
}

/// `[fleet]`: many mends (one per host) coordinating through etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// etcd's client endpoints (`http://HOST:PORT` or `HOST:PORT`; with TLS, every one `https://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Key prefix of everything mend writes (`/mend`: hosts under `/mend/hosts/`, state under
    /// `/mend/state/`, permits under `/mend/permits/` and `/mend/budget/`, the election at `/mend/leader`).
    pub prefix: String,
    /// This host's name in the fleet; None: the machine's host name, read at start.
    pub host: Option<String>,
    /// TTL of this host's lease (whole seconds): a host that stops renewing it is gone this long after,
    /// and so are its permits.
    pub lease_ttl: Duration,
    /// This host's state is published on each change and at least this often.
    pub publish_every: Duration,
    /// How long an automatic action waits for etcd to confirm its fleet permit before it is decided
    /// without the fleet (local budgets only).
    pub permit_timeout: Duration,
    /// Automatic actions allowed across the whole fleet within one `action_window`.
    pub max_actions_per_window: u32,
    /// The fleet budget's window (fixed windows since the Unix epoch).
    pub action_window: Duration,
    /// Disruptive automatic actions in flight on one service across all hosts at once.
    pub max_unavailable: u32,
    /// A service unhealthy on more than this share of the hosts that run it (and on at least two) is a
    /// fleet incident: no host acts on it alone, the incident is escalated.
    pub incident_ratio: f64,
    /// etcd authentication, if set.
    pub auth: Option<FleetAuth>,
    /// TLS to etcd, if set (then every endpoint is `https://`).
    pub tls: Option<FleetTls>,
}

/// etcd user and password.
#[derive(Clone, PartialEq)]
pub struct FleetAuth {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for FleetAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetAuth").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// TLS to etcd: its files (paths resolved against the config file's directory) and the name checked in
/// etcd's certificate. The files are read when the fleet starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetTls {
    /// CA certificates (PEM) that sign etcd's server certificate: the only roots trusted (etcd clusters
    /// have their own CA; the system's roots are not read).
    pub ca_file: PathBuf,
    /// Client certificate chain and its private key (PEM), for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name etcd's certificate must carry, instead of each endpoint's host (for endpoints given by an
    /// address that the certificate does not name).
    pub server_name: Option<String>,
}

impl Fleet {
    /// The defaults of everything but `endpoints`.
    pub fn with_endpoints(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/mend".to_owned(),
            host: None,
            lease_ttl: Duration::from_secs(10),
            publish_every: Duration::from_secs(2),
            permit_timeout: Duration::from_secs(2),
            max_actions_per_window: 10,
            action_window: Duration::from_secs(600),
            max_unavailable: 1,
            incident_ratio: 0.5,
            auth: None,
            tls: None,
        }
    }
}

/// A fleet host name: what may stand in an etcd key segment.
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['.', '-'])
}

/// A DNS name or an IP address, as a certificate names a server.
fn valid_server_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

fn endpoint_ok(endpoint: &str) -> bool {
    let authority = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://")).unwrap_or(endpoint);
    let Some((host, port)) = authority.rsplit_once(':') else { return false };
    let host_ok =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    host_ok && port.parse::<u16>().is_ok_and(|port| port != 0)
}

/// Validates `[fleet]` (absent: None, no fleet), collecting every problem.
pub(crate) fn validate(problems: &mut Problems<'_>, raw: Option<&RawFleet>, base_dir: &Path) -> Option<Fleet> {
    let raw = raw?;
    let root = KeyPath::default().key("fleet");
    let mut fleet = Fleet::with_endpoints(Vec::new());
    match raw.endpoints.as_deref() {
        None | Some([]) => problems.add(
            &root,
            "missing or empty key \"endpoints\" (e.g. endpoints = [\"http://127.0.0.1:2379\"]): the fleet needs etcd",
        ),
        Some(endpoints) if endpoints.len() > 16 => {
            problems.add(&root.key("endpoints"), format!("{} endpoints (allowed: 1 to 16)", endpoints.len()));
        }
        Some(endpoints) => {
            for (idx, endpoint) in endpoints.iter().enumerate() {
                if !endpoint_ok(endpoint) {
                    problems.add(
                        &root.key("endpoints").index(idx),
                        format!(
                            "invalid endpoint {endpoint:?} (expected http://HOST:PORT, https://HOST:PORT or HOST:PORT)"
                        ),
                    );
                }
            }
            fleet.endpoints = endpoints.to_vec();
        }
    }
    if let Some(prefix) = &raw.prefix {
        let ok = prefix.starts_with('/')
            && prefix.len() > 1
            && prefix.len() <= 128
            && !prefix.ends_with('/')
            && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_'));
        if ok {
            fleet.prefix = prefix.clone();
        } else {
            problems.add(
                &root.key("prefix"),
                format!(
                    "invalid prefix {prefix:?} (expected a key path such as \"/mend\": a leading /, no trailing /, letters, digits, / . - _)"
                ),
            );
        }
    }
    if let Some(host) = &raw.host {
        if valid_host_name(host) {
            fleet.host = Some(host.clone());
        } else {
            problems.add(
                &root.key("host"),
                format!(
                    "invalid host name {host:?} (allowed: 1 to 253 letters, digits, . - _, not starting with . or -)"
                ),
            );
        }
    }
    let seconds =
        |problems: &mut Problems<'_>, key: &str, value: Option<&String>, default: Duration, min_max: (u64, u64)| {
            let Some(value) = duration(problems, &root.key(key), value, default) else { return default };
            if value < Duration::from_secs(min_max.0) || value > Duration::from_secs(min_max.1) {
                problems.add(
                    &root.key(key),
                    format!("{value:?} is out of range (allowed: {}s to {}s)", min_max.0, min_max.1),
                );
                return default;
            }
            value
        };
    fleet.lease_ttl = seconds(problems, "lease_ttl", raw.lease_ttl.as_ref(), fleet.lease_ttl, (2, 300));
    if fleet.lease_ttl.subsec_nanos() != 0 {
        problems.add(&root.key("lease_ttl"), "etcd leases are whole seconds (e.g. \"10s\")");
    }
    fleet.action_window =
        seconds(problems, "action_window", raw.action_window.as_ref(), fleet.action_window, (1, 86_400));
    if fleet.action_window.subsec_nanos() != 0 {
        problems.add(&root.key("action_window"), "the window is whole seconds (e.g. \"10m\")");
    }
    let short = |problems: &mut Problems<'_>, key: &str, value: Option<&String>, default: Duration| {
        let Some(value) = duration(problems, &root.key(key), value, default) else { return default };
        if value < Duration::from_millis(100) || value > Duration::from_secs(60) {
            problems.add(&root.key(key), format!("{value:?} is out of range (allowed: 100ms to 60s)"));
            return default;
        }
        value
    };
    fleet.publish_every = short(problems, "publish_every", raw.publish_every.as_ref(), fleet.publish_every);
    fleet.permit_timeout = short(problems, "permit_timeout", raw.permit_timeout.as_ref(), fleet.permit_timeout);
    if fleet.publish_every >= fleet.lease_ttl {
        problems.add(&root.key("publish_every"), "must be shorter than lease_ttl (the lease is renewed as often)");
    }
    fleet.max_actions_per_window = integer(
        problems,
        &root.key("max_actions_per_window"),
        raw.max_actions_per_window,
        1..=100_000,
        i64::from(fleet.max_actions_per_window),
    )
    .map_or(fleet.max_actions_per_window, |n| n as u32);
    fleet.max_unavailable = integer(
        problems,
        &root.key("max_unavailable"),
        raw.max_unavailable,
        1..=10_000,
        i64::from(fleet.max_unavailable),
    )
    .map_or(fleet.max_unavailable, |n| n as u32);
    if let Some(ratio) = raw.incident_ratio {
        if ratio.is_finite() && ratio > 0.0 && ratio < 1.0 {
            fleet.incident_ratio = ratio;
        } else {
            problems.add(
                &root.key("incident_ratio"),
                format!("{ratio} is out of range (allowed: more than 0, less than 1)"),
            );
        }
    }
    match (&raw.user, &raw.password) {
        (Some(user), Some(password)) if !user.is_empty() => {
            fleet.auth = Some(FleetAuth { user: user.clone(), password: password.clone() });
        }
        (Some(_), Some(_)) => problems.add(&root.key("user"), "the user is empty"),
        (Some(_), None) => problems.add(&root, "\"user\" is set without \"password\": set both or neither"),
        (None, Some(_)) => problems.add(&root, "\"password\" is set without \"user\": set both or neither"),
        (None, None) => {}
    }
    let file = |problems: &mut Problems<'_>, key: &str, value: &Option<String>| -> Option<PathBuf> {
        let value = value.as_ref()?;
        if value.is_empty() {
            problems.add(&root.key(key), "the path is empty");
            return None;
        }
        Some(base_dir.join(value))
    };
    let ca_file = file(problems, "ca_file", &raw.ca_file);
    let cert_file = file(problems, "cert_file", &raw.cert_file);
    let key_file = file(problems, "key_file", &raw.key_file);
    let identity = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => {
            problems.add(&root, "\"cert_file\" is set without \"key_file\": set both or neither");
            None
        }
        (None, Some(_)) => {
            problems.add(&root, "\"key_file\" is set without \"cert_file\": set both or neither");
            None
        }
        (None, None) => None,
    };
    let server_name = match &raw.server_name {
        Some(name) if valid_server_name(name) => Some(name.clone()),
        Some(name) => {
            problems.add(
                &root.key("server_name"),
                format!(
                    "invalid server name {name:?} (expected a DNS name such as \"etcd-1.example\" or an IP address)"
                ),
            );
            None
        }
        None => None,
    };
    // TLS is all or nothing: every endpoint https:// as soon as one is or a TLS key is set, so that no
    // call goes out in clear to an etcd meant to be reached over TLS.
    let endpoints = raw.endpoints.as_deref().unwrap_or_default();
    let first_https = endpoints.iter().position(|e| e.starts_with("https://"));
    let tls_key = [
        ("ca_file", raw.ca_file.is_some()),
        ("cert_file", raw.cert_file.is_some()),
        ("key_file", raw.key_file.is_some()),
        ("server_name", raw.server_name.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key));
    let why_tls = match (first_https, tls_key) {
        (Some(idx), _) => Some(format!("endpoints[{idx}] is https://")),
        (None, Some(key)) => Some(format!("\"{key}\" is set")),
        (None, None) => None,
    };
    let Some(why_tls) = why_tls else { return Some(fleet) };
    for (idx, endpoint) in endpoints.iter().enumerate() {
        if !endpoint.starts_with("https://") && endpoint_ok(endpoint) {
            problems.add(
                &root.key("endpoints").index(idx),
                format!("{endpoint:?} is not https:// while {why_tls}: with TLS, every endpoint is https://HOST:PORT"),
            );
        }
    }
    match ca_file {
        Some(ca_file) => fleet.tls = Some(FleetTls { ca_file, identity, server_name }),
        None if raw.ca_file.is_none() => problems.add(
            &root,
            format!(
                "TLS to etcd ({why_tls}) needs \"ca_file\": the CA certificate (PEM) that signs etcd's certificate (the system's roots are not used)"
            ),
        ),
        // An empty ca_file: already said.
        None => {}
    }
    Some(fleet)
}
