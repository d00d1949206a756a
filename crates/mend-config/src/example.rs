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
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn example_config_is_valid() {
        let config = crate::parse("example.toml", super::EXAMPLE_CONFIG, std::path::Path::new("/"));
        let config = config.unwrap_or_else(|errors| panic!("example config is invalid:\n{errors}"));
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.services[0].replicas, 2);
    }
}
