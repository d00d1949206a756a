//! The commented example config that `mend init` writes.

/// A complete, commented example configuration; it validates as written.
pub const EXAMPLE_CONFIG: &str = r#"# mend configuration. Durations are strings with units: "500ms", "10s", "5m".
# Check it with `mend check-config mend.toml`; run it with `mend run -c mend.toml`.

[api]
listen = "127.0.0.1:7070"          # the HTTP API and /metrics; loopback unless a token is set
# token = "change-me"              # when set, mutating calls need `Authorization: Bearer <token>`

[service.web]
command = ["mend-demo", "--port", "{port}"]   # argv, no shell; {port}, {replica}, {service} are filled in
replicas = 2
ports = "9101-9110"                 # replica i gets port 9101 + i and keeps it across restarts
# shell = false                     # true: command is one string run by /bin/sh -c
# working_dir = "."                 # relative to this file
# env = { RUST_LOG = "info", INSTANCE = "web-{replica}" }
# restart = "always"                # always | on-failure | never
# stop_signal = "SIGTERM"
# stop_timeout = "10s"              # grace period before SIGKILL
# depends_on = ["db"]               # start after these services are ready

[service.web.liveness]              # failing: the replica is replaced
http = "http://127.0.0.1:{port}/health"
# interval = "500ms"
# timeout = "400ms"
# failure_threshold = 3
# busy_timeout = "30s"              # unresponsive but using CPU = busy, not hung: replaced only after this

# [service.web.readiness]           # failing: no traffic; defaults to the liveness result
# http = "http://127.0.0.1:{port}/health"
# status = "200-399"
# body_contains = "ok"

# [service.web.startup]             # holds liveness off until the service has started
# tcp = "127.0.0.1:{port}"
# failure_threshold = 300           # 300 x 100ms = 30s to start

# [service.web.backoff]             # first restart is immediate, then initial, doubling up to max
# initial = "100ms"
# max = "30s"
# reset_after = "10s"

# [service.web.restart_limit]       # more restarts than this within the window: give up and escalate
# max_restarts = 10
# within = "5m"

# [service.web.logs]
# max_file_bytes = 10485760
# keep_files = 3

# [service.web.metrics]             # scraped from each replica while it runs
# scrape = "http://127.0.0.1:{port}/metrics"
# interval = "1s"

# [[detect]]                        # a streaming detector on every series the expression yields
# name = "latency"
# series = 'histogram_quantile(0.99, sum by (le) (rate(mend_demo_request_duration_seconds_bucket[30s])))'
# detector = "default"
# It learns before it judges: 150 points, and an expression (anything but a plain selector) is
# evaluated every 5 s: 12.5 minutes (a plain selector gets every scraped point). Until then only a gross
# jump alarms, from the 30th point on (2.5 minutes here). A quantile of requests needs requests.

# Healing: what mend does when something fires. Without any [[heal]], mend heals as a supervisor does
# (crashes and hangs are restarted by the service's restart policy) and escalates a crash loop to the
# [notify.*] targets. Each policy maps a trigger to actions tried in order: the next runs when the
# incident has not resolved within the verify window; after the last, the incident is escalated.
# Triggers: a [[rule]], [[detect]] or [[forecast]] name, "alert:NAME" (Alertmanager), or a built-in
# diagnosis: crashed, crash_loop, hung, memory_exhaustion, unhealthy, bad_replica, overload, and from the
# live diagnosis fd_exhaustion, disk_exhaustion, dependency_failure (acts on the cause, not the victim).
# Actions: restart, rolling-restart, scale +N / scale -N, eject [DURATION], hook NAME, notify NAME,
# escalate. Every action is journalled before it runs and with its outcome (`mend incidents`).

# [healing]
# mode = "auto"                     # auto | approve (`mend approve ID`) | dry-run (decide, record, change nothing)
# verify = "30s"                    # how long an action has to resolve its incident before the next one
# max_actions_per_hour = 30         # budget for all services (a token bucket)
# service_max_actions_per_hour = 10 # budget per service
# cooldown = "60s"                  # between two actions of one kind on one target
# max_unavailable = 1               # replicas down or draining at once (never the last ready one)
# pending_expiry = "10m"            # approve mode: unapproved actions expire (and the incident escalates)
# window = "5m"                     # signals this close (per service, along dependencies) are one incident
# escalate_after = "30m"            # an incident still open then is escalated
# settle = "3s"                     # a rule/detector/forecast/alert on a service that calls others waits
#                                   # this long for the diagnosis to name the root (the callee's trouble
#                                   # shows on the caller too)

# [service.web.healing]             # overrides for one service
# mode = "approve"
# min_replicas = 2                  # scale -N stops here
# max_replicas = 10                 # scale +N stops here (default: the size of the port range)

# [[heal]]
# when = "bad_replica"              # errors concentrated on one replica (from the proxy's figures)
# service = "web"                   # only this service's incidents
# actions = ["eject 30s", "restart", "notify ops", "escalate"]
# verify = "1m"

# [hook.page]                       # `hook page`: argv, killed after timeout; the incident is in its
# command = ["/usr/local/bin/page-oncall"]  # environment (MEND_INCIDENT_ID, MEND_INCIDENT_JSON, ...)
# timeout = "30s"

# [notify.ops]                      # `notify ops` and escalations: the incident POSTed as JSON
# url = "http://127.0.0.1:9095/hooks/mend"  # plain http; for https, use a hook running curl
# attempts = 3
# timeout = "5s"
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn example_config_is_valid() {
        let config = crate::parse("example.toml", super::EXAMPLE_CONFIG, std::path::Path::new("/"));
        let config = config.unwrap_or_else(|errors| panic!("example config is invalid:\n{errors}"));
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.services[0].replicas, 2);
        // Every commented line of the healing part is valid once uncommented.
        let uncommented: String = super::EXAMPLE_CONFIG
            .lines()
            .skip_while(|line| !line.starts_with("# [healing]"))
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|l| {
                        !l.starts_with(char::is_uppercase) && !l.starts_with("Triggers") && !l.starts_with("Actions")
                    })
                    .unwrap_or("")
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let with_service = format!("[service.web]\ncommand = [\"web\"]\nports = \"9101-9110\"\n{uncommented}");
        let healed = crate::parse("example.toml", &with_service, std::path::Path::new("/"))
            .unwrap_or_else(|errors| panic!("the healing example is invalid:\n{errors}\n{with_service}"));
        assert_eq!((healed.heal.len(), healed.hooks.len(), healed.notify.len()), (1, 1, 1));
    }
}
