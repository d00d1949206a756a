//! Config validation as data: each case is a file and the exact errors it must produce.

use std::path::Path;
use std::time::Duration;

use mend_config::{Check, ProbeRole, RestartPolicy};

/// Validates `text` as `mend.toml` and compares the rendered errors (one per line) with `expected`.
fn check_errors(text: &str, expected: &[&str]) {
    let errors = match mend_config::parse("mend.toml", text, Path::new("/srv/app")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(errors, expected, "config:\n{text}");
}

#[test]
fn the_contract_example_from_the_issue_is_valid_as_written() {
    let text = r#"
[api]
listen = "127.0.0.1:7070"      # token = "..." enables auth for mutating calls
[service.web]
command = ["mend-demo", "--port", "{port}"]
replicas = 2
ports = "9101-9110"
[service.web.liveness]
http = "http://127.0.0.1:{port}/health"
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/srv/app")).expect("valid config");
    let web = &config.services[0];
    assert_eq!(web.name.as_str(), "web");
    assert_eq!(web.replicas, 2);
    assert_eq!((web.port_of(0), web.port_of(1)), (Some(9101), Some(9102)));
    assert_eq!(web.restart, RestartPolicy::Always);
    assert_eq!(web.working_dir, Path::new("/srv/app"));
    let liveness = web.probe(ProbeRole::Liveness).expect("liveness configured");
    assert_eq!(liveness.interval, Duration::from_millis(500));
    assert!(matches!(&liveness.check, Check::Http { status: (200, 399), .. }));
    assert_eq!(config.api.listen.to_string(), "127.0.0.1:7070");
}

#[test]
fn services_start_after_their_dependencies() {
    let text = r#"
[service.web]
command = ["web"]
depends_on = ["api"]
[service.api]
command = ["api"]
depends_on = ["db", "cache"]
[service.db]
command = ["db"]
[service.cache]
command = ["cache"]
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).expect("valid config");
    let order: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    let position = |name| order.iter().position(|n| *n == name).expect("service present");
    assert!(position("db") < position("api"));
    assert!(position("cache") < position("api"));
    assert!(position("api") < position("web"));
}

#[test]
fn syntax_errors_name_the_line() {
    check_errors("[api\nlisten = 1\n", &["mend.toml:1:5: invalid TOML: unclosed table, expected `]`"]);
    check_errors(
        "[service.web]\ncommand = [\"a\"]\n[service.web]\ncommand = [\"b\"]\n",
        &["mend.toml:3:10: invalid TOML: duplicate key `web`"],
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_line_and_key() {
    check_errors(
        "[service.web]\ncommand = [\"x\"]\nreplica = 2\n",
        &[
            "mend.toml:3:1: service.web.replica: unknown field `replica`, expected one of `command`, `shell`, `working_dir`, `env`, `replicas`, `ports`, `restart`, `stop_signal`, `stop_timeout`, `depends_on`, `backoff`, `restart_limit`, `liveness`, `readiness`, `startup`, `logs`, `metrics`, `max_memory_bytes`, `proxy`, `canary`, `release`, `stable_release`, `healing`, `autoscale`",
        ],
    );
    check_errors(
        "[service.web]\ncommand = [\"x\"]\nreplicas = \"two\"\n",
        &["mend.toml:3:12: service.web.replicas: invalid type: string \"two\", expected i64"],
    );
    check_errors(
        "[service.web]\ncommand = [\"x\"]\n[service.web.liveness]\nhttp = \"http://127.0.0.1:1/\"\nintervall = \"1s\"\n",
        &[
            "mend.toml:5:1: service.web.liveness.intervall: unknown field `intervall`, expected one of `http`, `tcp`, `exec`, `interval`, `timeout`, `initial_delay`, `failure_threshold`, `success_threshold`, `status`, `body_contains`, `busy_timeout`",
        ],
    );
    check_errors(
        "[servics.web]\ncommand = [\"x\"]\n",
        &[
            "mend.toml:1:2: servics: unknown key \"servics\" (expected one of: api, service, scrape, rule, detect, forecast, storage, healing, heal, hook, notify, chaos, learn, tracing, remote_write, fleet)",
        ],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = r#"
[service.web]
command = ["web", "--port", "{port}"]
replicas = 3
ports = "9101-9102"
restart = "sometimes"
stop_timeout = "10"
[service.web.liveness]
http = "http://127.0.0.1:{port}/health"
interval = "5x"
failure_threshold = 0
[service.db]
command = []
[service.worker]
command = ["w"]
replicaz = 1
"#;
    check_errors(
        text,
        &[
            "mend.toml:4:12: service.web.replicas: 3 replicas need 3 ports but ports = \"9101-9102\" holds only 2",
            "mend.toml:6:11: service.web.restart: unknown restart policy \"sometimes\" (allowed: \"always\", \"on-failure\", \"never\")",
            "mend.toml:7:16: service.web.stop_timeout: invalid duration \"10\": missing unit (use ms, s, m, h or d, e.g. \"10s\")",
            "mend.toml:10:12: service.web.liveness.interval: invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h or d)",
            "mend.toml:11:21: service.web.liveness.failure_threshold: 0 is out of range (allowed: 1 to 100000)",
            "mend.toml:13:11: service.db.command: the command is empty: the first element must name the program to run",
            "mend.toml:16:1: service.worker.replicaz: unknown field `replicaz`, expected one of `command`, `shell`, `working_dir`, `env`, `replicas`, `ports`, `restart`, `stop_signal`, `stop_timeout`, `depends_on`, `backoff`, `restart_limit`, `liveness`, `readiness`, `startup`, `logs`, `metrics`, `max_memory_bytes`, `proxy`, `canary`, `release`, `stable_release`, `healing`, `autoscale`",
        ],
    );
}

#[test]
fn ports_may_not_collide() {
    let text = r#"
[api]
listen = "127.0.0.1:9105"
[service.a]
command = ["a"]
ports = "9101-9110"
[service.b]
command = ["b"]
ports = 9110
[service.c]
command = ["c"]
ports = "9200-9100"
[service.d]
command = ["d"]
ports = 0
"#;
    check_errors(
        text,
        &[
            "mend.toml:6:9: service.a.ports: ports 9101-9110 include the API's port 9105 (api.listen)",
            "mend.toml:9:9: service.b.ports: ports 9110 overlap ports 9101-9110 of service \"a\"",
            "mend.toml:12:9: service.c.ports: invalid port range \"9200-9100\": the first port is greater than the last",
            "mend.toml:15:9: service.d.ports: invalid ports \"0\" (expected a port 1-65535 or a range like \"9101-9110\")",
        ],
    );
}

#[test]
fn commands_must_be_argv_unless_shell_is_asked_for() {
    check_errors(
        "[service.a]\ncommand = \"python -m http.server\"\n",
        &[
            "mend.toml:2:11: service.a.command: a command string needs shell = true; otherwise write it as an argv array, e.g. [\"my-server\", \"--port\", \"{port}\"]",
        ],
    );
    check_errors("[service.a]\ncommand = \"python -m http.server\"\nshell = true\n", &[]);
    check_errors(
        "[service.a]\ncommand = [\"\"]\n",
        &["mend.toml:2:11: service.a.command: the command is empty: the first element must name the program to run"],
    );
    check_errors(
        "[service.a]\nreplicas = 1\n",
        &[
            "mend.toml:1:10: service.a: missing required key \"command\" (an argv array, e.g. [\"my-server\", \"--port\", \"{port}\"])",
        ],
    );
}

#[test]
fn templates_are_checked() {
    check_errors(
        "[service.a]\ncommand = [\"a\", \"--port={port}\", \"{prot}\"]\n",
        &[
            "mend.toml:2:17: service.a.command[1]: uses {port} but the service has no ports (add e.g. ports = \"9101-9110\")",
            "mend.toml:2:34: service.a.command[2]: unknown placeholder {prot} in \"{prot}\" (known: {port}, {replica}, {service}; write {{ for a literal brace)",
        ],
    );
    check_errors(
        "[service.a]\ncommand = [\"a\", \"--port={port}\"]\n[service.a.liveness]\ntcp = \"127.0.0.1:{port}\"\n",
        &[
            "mend.toml:2:17: service.a.command[1]: uses {port} but the service has no ports (add e.g. ports = \"9101-9110\")",
            "mend.toml:4:7: service.a.liveness.tcp: uses {port} but the service has no ports (add e.g. ports = \"9101-9110\")",
        ],
    );
}

#[test]
fn dependencies_must_exist_and_not_loop() {
    check_errors(
        "[service.a]\ncommand = [\"a\"]\ndepends_on = [\"b\", \"ghost\"]\n[service.b]\ncommand = [\"b\"]\ndepends_on = [\"a\"]\n",
        &[
            "mend.toml:3:14: service.a.depends_on: dependency cycle: a -> b -> a",
            "mend.toml:3:20: service.a.depends_on[1]: unknown service \"ghost\" (configured: a, b)",
        ],
    );
    check_errors(
        "[service.a]\ncommand = [\"a\"]\ndepends_on = [\"a\"]\n",
        &["mend.toml:3:15: service.a.depends_on[0]: a service cannot depend on itself"],
    );
}

#[test]
fn probes_need_exactly_one_check_and_sane_values() {
    check_errors(
        "[service.a]\ncommand = [\"a\"]\n[service.a.readiness]\ninterval = \"1s\"\n",
        &[
            "mend.toml:3:12: service.a.readiness: a probe needs exactly one of http = \"URL\", tcp = \"HOST:PORT\" or exec = [argv]",
        ],
    );
    check_errors(
        "[service.a]\ncommand = [\"a\"]\n[service.a.liveness]\nhttp = \"https://x/\"\nstatus = \"600\"\n",
        &[
            "mend.toml:4:8: service.a.liveness.http: \"https://x/\": https probes are not supported; probe the plain HTTP port",
            "mend.toml:5:10: service.a.liveness.status: invalid status (expected a code like 200, a range like \"200-399\" or a class like \"2xx\")",
        ],
    );
    check_errors(
        "[service.a]\ncommand = [\"a\"]\n[service.a.startup]\ntcp = \"localhost\"\nbusy_timeout = \"1s\"\n",
        &[
            "mend.toml:4:7: service.a.startup.tcp: invalid address \"localhost\": missing port (expected HOST:PORT)",
            "mend.toml:5:16: service.a.startup.busy_timeout: busy_timeout applies to liveness probes only",
        ],
    );
}

#[test]
fn api_refuses_public_listen_without_token() {
    check_errors(
        "[api]\nlisten = \"0.0.0.0:7070\"\n",
        &[
            "mend.toml:2:10: api.listen: refusing to serve the API on non-loopback address 0.0.0.0:7070 without api.token: set a token or listen on 127.0.0.1",
        ],
    );
    check_errors("[api]\nlisten = \"0.0.0.0:7070\"\ntoken = \"s3cret-token\"\n", &[]);
    check_errors(
        "[api]\nlisten = \"localhost\"\n",
        &["mend.toml:2:10: api.listen: invalid address \"localhost\" (expected IP:PORT, e.g. \"127.0.0.1:7070\")"],
    );
}

#[test]
fn backoff_and_restart_limit_reject_impossible_values() {
    check_errors(
        "[service.a]\ncommand = [\"a\"]\n[service.a.backoff]\ninitial = \"1m\"\nmax = \"1s\"\njitter = 2.0\n[service.a.restart_limit]\nmax_restarts = 0\nwithin = \"0s\"\n",
        &[
            "mend.toml:4:11: service.a.backoff.initial: the initial delay is longer than backoff.max",
            "mend.toml:6:10: service.a.backoff.jitter: 2 is out of range (allowed: 0.0 to 1.0, a fraction of each delay)",
            "mend.toml:8:16: service.a.restart_limit.max_restarts: 0 restarts allowed: use restart = \"never\" instead",
            "mend.toml:9:10: service.a.restart_limit.within: the window must be longer than 0s",
        ],
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[service.a]\ncommand = 3\n").expect("write config");
    let error = mend_config::load(&path).expect_err("invalid config").to_string();
    assert_eq!(
        error,
        format!(
            "{}:2:11: service.a.command: invalid type: integer `3`, expected an array of strings (argv), or a string with shell = true",
            path.display()
        )
    );
    let missing = mend_config::load(&dir.path().join("missing.toml")).expect_err("missing file").to_string();
    assert!(missing.starts_with("cannot read config file"), "{missing}");
}

#[test]
fn observe_and_detect_sections_validate() {
    let text = r#"
[storage]
retention = "30m"
max_series = 5000
[service.web]
command = ["web", "--port", "{port}"]
ports = "9101"
max_memory_bytes = "256MiB"
metrics = { scrape = "http://127.0.0.1:{port}/metrics", interval = "1s" }
[[scrape]]
name = "node"
url = "http://127.0.0.1:9100/metrics"
labels = { instance = "host1" }
[[rule]]
name = "HighErrorRate"
expr = 'rate(errors_total[30s]) > 0.1'
for = "10s"
keep_firing_for = "5s"
severity = "critical"
labels = { team = "web" }
[[detect]]
name = "rss"
series = 'mend_replica_resident_memory_bytes{service="web"}'
sensitivity = 0.7
[[forecast]]
name = "disk"
series = "node_filesystem_avail_bytes"
limit = 1e9
horizon = "30m"
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let web = &config.services[0];
    assert_eq!(web.max_memory_bytes, Some(256 * 1024 * 1024));
    let metrics = web.metrics.as_ref().expect("metrics");
    assert_eq!((metrics.interval, metrics.timeout), (Duration::from_secs(1), Duration::from_secs(1)));
    assert_eq!(config.scrapes[0].url.port, 9100);
    assert_eq!(config.scrapes[0].interval, Duration::from_secs(5));
    assert_eq!(config.rules[0].for_duration, Duration::from_secs(10));
    assert_eq!(config.rules[0].severity, mend_types::Severity::Critical);
    assert_eq!(config.detects[0].detector, "default");
    assert_eq!(config.detects[0].sensitivity, 0.7);
    assert_eq!(config.forecasts[0].limit, 1e9);
    assert_eq!(config.storage.retention, Duration::from_secs(1800));
    assert_eq!(config.storage.max_points_per_series, 1000);
}

#[test]
fn observe_and_detect_sections_report_every_problem() {
    let text = r#"
[service.web]
command = ["web"]
max_memory_bytes = "lots"
[service.web.metrics]
scrape = "http://127.0.0.1:{port}/metrics"
interval = "1s"
timeout = "2s"
[[scrape]]
url = "http://127.0.0.1:9100/metrics"
[[rule]]
name = "A"
[[rule]]
name = "A"
expr = "up == 0"
severity = "apocalyptic"
[[detect]]
name = "d"
series = "x"
detector = "magic"
sensitivity = 3
[[forecast]]
name = "f"
series = "y"
"#;
    check_errors(
        text,
        &[
            "mend.toml:4:20: service.web.max_memory_bytes: invalid size \"lots\" (e.g. \"512MiB\" or 536870912)",
            "mend.toml:8:11: service.web.metrics.timeout: the timeout must be longer than 0s and at most the interval",
            "mend.toml:9:1: scrape[0]: missing key \"name\" (e.g. name = \"HighErrorRate\")",
            "mend.toml:11:1: rule[0]: missing key \"expr\" (e.g. expr = 'rate(errors_total[1m]) > 0.1')",
            "mend.toml:16:12: rule[1].severity: unknown severity \"apocalyptic\" (allowed: \"info\", \"warning\", \"critical\")",
            "mend.toml:20:12: detect[0].detector: unknown detector \"magic\" (allowed: default, ewma, mad, seasonal, cusum, shift, cad_ose)",
            "mend.toml:21:15: detect[0].sensitivity: 3 is out of range (allowed: 0.0 to 1.0; higher flags more)",
            "mend.toml:22:1: forecast[0]: missing key \"limit\" (the value the series must not reach, e.g. limit = \"512MiB\")",
        ],
    );
    check_errors("[rule]\nname = \"x\"\n", &["mend.toml:1:2: rule: expected an array of tables: write [[rule]]"]);
}

#[test]
fn promql_is_checked_at_load() {
    check_errors(
        "[[rule]]\nname = \"a\"\nexpr = 'rate(x[5m]'\n[[rule]]\nname = \"b\"\nexpr = 'predict_linear(x[5m], 60) > 0'\n[[detect]]\nname = \"c\"\nseries = 'x[5m]'\n",
        &[
            "mend.toml:3:8: rule[0].expr: invalid PromQL: unclosed left parenthesis",
            "mend.toml:6:8: rule[1].expr: unsupported function \"predict_linear\"",
            "mend.toml:9:10: detect[0].series: a range vector cannot be followed point by point; wrap it in a function such as rate(...)",
        ],
    );
}

#[test]
fn proxy_and_canary_validate() {
    let text = r#"
[service.web]
command = ["web", "--port", "{port}"]
replicas = 2
ports = "9101-9103"
env = { VERSION = "1", REGION = "eu" }
[service.web.proxy]
listen = "127.0.0.1:8080"
load_balancing = "round_robin"
upstream_protocol = "h2c"
attempt_timeout = "100ms"
read_timeout = "5m"
max_attempts = 2
[service.web.canary]
command = ["web-next", "--port", "{port}"]
env = { VERSION = "2" }
replicas = 1
weight = 20
pin_header = "x-canary: 1"
pin_cookie = "canary=yes"
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let web = &config.services[0];
    assert_eq!(web.total_replicas(), 3);
    // The legacy table is a release called `canary` beside the implicit `stable` one.
    assert_eq!(web.stable_release.as_str(), "stable");
    let canary = web.canary.as_ref().expect("canary");
    assert_eq!(canary.release.as_str(), "canary");
    let canary_release = web.release(&canary.release).expect("canary release");
    assert_eq!(canary_release.command[0].source(), "web-next");
    assert_eq!(web.role_of(&canary.release), mend_types::ReleaseRole::Canary);
    assert_eq!(web.role_of(&web.stable_release), mend_types::ReleaseRole::Stable);
    let env: Vec<(String, String)> =
        web.env_of(canary_release).iter().map(|(k, v)| (k.clone(), v.source().to_owned())).collect();
    assert_eq!(env, [("REGION".to_owned(), "eu".to_owned()), ("VERSION".to_owned(), "2".to_owned())]);
    let canary = web.canary.as_ref().expect("canary");
    assert_eq!((canary.weight_percent, canary.pin_header.clone()), (20, Some(("x-canary".to_owned(), "1".to_owned()))));
    let proxy = web.proxy.as_ref().expect("proxy");
    assert_eq!(proxy.listen.port(), 8080);
    assert_eq!(proxy.load_balancing, Some(mend_config::LoadBalancing::RoundRobin));
    assert_eq!(proxy.upstream_protocol, Some(mend_config::UpstreamProtocol::H2c));
    assert_eq!(proxy.attempt_timeout, Some(Duration::from_millis(100)));
    assert_eq!(proxy.read_timeout, Some(Duration::from_secs(300)));
    assert_eq!(proxy.connect_timeout, None, "unset knobs keep the proxy's defaults");
}

#[test]
fn proxy_and_canary_report_every_problem() {
    let text = r#"
[service.web]
command = ["web", "--port", "{port}"]
replicas = 2
ports = "9101-9102"
[service.web.proxy]
listen = "127.0.0.1:8080"
load_balancing = "random"
retry_budget = 3.0
upstream_protocol = "h2"
[service.web.canary]
weight = 101
pin_header = "x-canary"
[service.api]
command = ["api"]
[service.api.canary]
replicas = 1
"#;
    check_errors(
        text,
        &[
            "mend.toml:8:18: service.web.proxy.load_balancing: unknown load balancing \"random\" (allowed: \"least_request\", \"round_robin\")",
            "mend.toml:9:16: service.web.proxy.retry_budget: 3 is out of range (allowed: 0.0 to 1.0, a fraction of the request rate)",
            "mend.toml:10:21: service.web.proxy.upstream_protocol: unknown upstream protocol \"h2\" (allowed: \"http1\", \"h2c\")",
            "mend.toml:12:10: service.web.canary.weight: 101 is out of range (allowed: 0 to 100)",
            "mend.toml:13:14: service.web.canary.pin_header: invalid pin \"x-canary\" (expected \"x-canary: 1\")",
            "mend.toml:16:14: service.api.canary: a canary needs [service.NAME.proxy]: the proxy is what splits the traffic",
        ],
    );
    // Valid sections that collide: ports for the canary, the API's port, another service's ports.
    let text = r#"
[api]
listen = "127.0.0.1:7070"
[service.web]
command = ["web", "--port", "{port}"]
replicas = 2
ports = "9101-9102"
[service.web.proxy]
listen = "127.0.0.1:7070"
[service.web.canary]
replicas = 1
[service.db]
command = ["db"]
[service.db.proxy]
listen = "127.0.0.1:9102"
"#;
    check_errors(
        text,
        &[
            "mend.toml:6:12: service.web.replicas: 2 stable and 1 canary replicas need 3 ports but ports = \"9101-9102\" holds only 2",
        ],
    );
    let text = text.replace("replicas = 1\n", "replicas = 0\n");
    check_errors(
        &text,
        &[
            "mend.toml:9:10: service.web.proxy.listen: port 7070 is the API's port (api.listen)",
            "mend.toml:15:10: service.db.proxy.listen: port 9102 is in the ports 9101-9102 of service \"web\"",
        ],
    );
}

#[test]
fn a_value_of_the_wrong_type_does_not_hide_the_other_problems() {
    let text = r#"[storage]
max_series = "many"
retention = "-5m"
[service.a]
command = 5
replicas = "1"
shell = "yes"
bogus = 1
[service.b]
command = ["b"]
depends_on = ["c"]
[service.c]
command = ["c"]
depends_on = ["b"]
[service.d]
command = ["d"]
depends_on = ["d"]
"#;
    check_errors(
        text,
        &[
            "mend.toml:2:14: storage.max_series: invalid type: string \"many\", expected i64",
            "mend.toml:3:13: storage.retention: invalid duration \"-5m\": expected a number at \"-5m\"",
            "mend.toml:5:11: service.a.command: invalid type: integer `5`, expected an array of strings (argv), or a string with shell = true",
            "mend.toml:6:12: service.a.replicas: invalid type: string \"1\", expected i64",
            "mend.toml:7:9: service.a.shell: invalid type: string \"yes\", expected a boolean",
            "mend.toml:8:1: service.a.bogus: unknown field `bogus`, expected one of `command`, `shell`, `working_dir`, `env`, `replicas`, `ports`, `restart`, `stop_signal`, `stop_timeout`, `depends_on`, `backoff`, `restart_limit`, `liveness`, `readiness`, `startup`, `logs`, `metrics`, `max_memory_bytes`, `proxy`, `canary`, `release`, `stable_release`, `healing`, `autoscale`",
            "mend.toml:11:14: service.b.depends_on: dependency cycle: b -> c -> b",
            "mend.toml:17:15: service.d.depends_on[0]: a service cannot depend on itself",
        ],
    );
}

#[test]
fn log_file_sizes_take_units_like_memory_limits() {
    let text = "[service.web]\ncommand = [\"a\"]\n[service.web.logs]\nmax_file_bytes = \"1MiB\"\n";
    let config = mend_config::parse("mend.toml", text, Path::new("/srv/app")).expect("valid");
    assert_eq!(config.services[0].logs.max_file_bytes, 1_048_576);
    check_errors(
        &text.replace("\"1MiB\"", "\"1 parsec\""),
        &[
            "mend.toml:4:18: service.web.logs.max_file_bytes: invalid size \"1 parsec\": unknown unit \"parsec\" (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)",
        ],
    );
}

/// Issue 20 (7): check-config passed what could not run: NUL bytes (no program can be given one), a
/// 10 MB environment value ("Argument list too long" at spawn), port 0 for the API (the log says :0 and
/// the CLI cannot find the daemon), a token no HTTP client can send.
#[test]
fn issue_20_check_config_refuses_what_cannot_run() {
    check_errors(
        "[service.web]\ncommand = [\"web\", \"a\\u0000b\"]\nworking_dir = \"srv\\u0000\"\n[service.web.env]\nX = \"1\\u0000\"\n",
        &[
            "mend.toml:2:19: service.web.command[1]: contains a NUL byte (\\0), which no program can be given: remove it",
            "mend.toml:3:15: service.web.working_dir: contains a NUL byte (\\0), which no program can be given: remove it",
            "mend.toml:5:5: service.web.env.X: contains a NUL byte (\\0), which no program can be given: remove it",
        ],
    );
    check_errors(
        "[service.web]\ncommand = [\"web\"]\n[service.web.liveness]\nexec = [\"check\", \"\\u0000\"]\n",
        &[
            "mend.toml:4:18: service.web.liveness.exec[1]: contains a NUL byte (\\0), which no program can be given: remove it",
        ],
    );
    let huge = "x".repeat(10_000_000);
    check_errors(
        &format!("[service.web]\ncommand = [\"web\"]\n[service.web.env]\nBIG = \"{huge}\"\n"),
        &[
            "mend.toml:3:14: service.web.env: the command and environment take 10000009 bytes: at most 1048576 (Linux passes about 2 MiB of arguments and environment in all, mend's own included)",
            "mend.toml:4:7: service.web.env.BIG: is 10000004 bytes: the kernel passes at most 131071 bytes per argument or variable (the spawn would fail with \"Argument list too long\")",
        ],
    );
    check_errors(
        "[api]\nlisten = \"127.0.0.1:0\"\n",
        &[
            "mend.toml:2:10: api.listen: port 0 would pick a random port that the CLI cannot find: give a port (e.g. \"127.0.0.1:7070\")",
        ],
    );
    for token in ["s3cret-tökén", "tab\there", "bell\u{7}"] {
        let text = format!("[api]\ntoken = {}\n", toml_string(token));
        check_errors(
            &text,
            &[
                "mend.toml:2:9: api.token: the token must be non-empty visible ASCII (letters, digits, punctuation; no spaces or other characters): clients send it in an HTTP header",
            ],
        );
    }
    check_errors("[api]\ntoken = \"Ab0-._~+/=!#$%&'*^`|\"\n", &[]);
}

/// A TOML basic string for `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn issue_9_heal_policies_parse_into_triggers_and_actions() {
    use mend_config::Trigger;
    use mend_types::{ActionKind, BuiltinDiagnosis, HealMode};
    let text = r#"
[healing]
mode = "approve"
verify = "10s"
max_unavailable = 2
[service.web]
command = ["web"]
ports = "9101-9104"
replicas = 2
[service.web.healing]
mode = "dry-run"
min_replicas = 2
[[rule]]
name = "HighErrorRate"
expr = "vector(1) > 0"
[hook.page]
command = ["/usr/local/bin/page", "ops"]
timeout = "5s"
[notify.ops]
url = "http://127.0.0.1:9095/hooks"
[[heal]]
when = "HighErrorRate"
service = "web"
actions = ["restart", "scale +1", "eject 30s", "hook page", "notify ops", "escalate"]
[[heal]]
when = "alert:DiskFull"
actions = ["rolling-restart"]
verify = "1m"
[[heal]]
when = "crash_loop"
actions = ["escalate"]
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).expect("valid config");
    assert_eq!((config.healing.mode, config.healing.verify), (HealMode::Approve, Duration::from_secs(10)));
    assert_eq!(config.healing.max_unavailable, 2);
    let web = &config.services[0].healing;
    assert_eq!((web.mode, web.min_replicas, web.max_replicas), (Some(HealMode::DryRun), 2, 4));
    assert_eq!(config.heal.len(), 3);
    assert_eq!(config.heal[0].when, Trigger::Rule("HighErrorRate".into()));
    assert_eq!(
        config.heal[0].actions,
        [
            ActionKind::Restart,
            ActionKind::Scale { delta: 1 },
            ActionKind::Eject { for_ms: 30_000 },
            ActionKind::Hook { name: "page".into() },
            ActionKind::Notify { name: "ops".into() },
            ActionKind::Escalate
        ]
    );
    assert_eq!(config.heal[1].when, Trigger::Alert("DiskFull".into()));
    assert_eq!(config.heal[1].verify, Some(Duration::from_secs(60)));
    assert_eq!(config.heal[2].when, Trigger::Builtin(BuiltinDiagnosis::CrashLoop));
    assert_eq!(config.hooks[0].command, ["/usr/local/bin/page", "ops"]);
    assert_eq!(config.notify[0].url.port, 9095);
}

#[test]
fn issue_9_unknown_triggers_and_actions_are_errors_with_line_and_key() {
    check_errors(
        r#"[service.web]
command = ["web"]
[[heal]]
when = "HighErrors"
actions = ["restart"]
[[heal]]
when = "crashed"
actions = ["reboot", "rollback now", "notify ops", "scale 2", "escalate", "restart"]
[notify.pager]
url = "https://example.invalid/x"
[healing]
mode = "yolo"
"#,
        &[
            "mend.toml:4:8: heal[0].when: unknown trigger \"HighErrors\": not a [[rule]], [[detect]] or [[forecast]] \
             name nor a built-in diagnosis (known: crashed, crash_loop, hung, memory_exhaustion, unhealthy, \
             bad_replica, overload, fd_exhaustion, disk_exhaustion, dependency_failure, bad_release, ServiceErrors; an \
             Alertmanager alert is written \"alert:NAME\", a learnt precursor's early warning \"precursor\")",
            "mend.toml:8:12: heal[1].actions[0]: unknown action \"reboot\" (allowed: restart, rolling-restart, \
             scale +N, scale -N, eject [DURATION], rollback, hook NAME, notify NAME, escalate)",
            "mend.toml:8:22: heal[1].actions[1]: \"rollback\" takes no argument: it returns to the service's last good \
             release",
            "mend.toml:8:38: heal[1].actions[2]: unknown notification target \"ops\": define it in a [notify.ops] table",
            "mend.toml:8:52: heal[1].actions[3]: invalid scale \"2\": write \"scale +N\" or \"scale -N\" with N from 1 \
             to 100",
            "mend.toml:8:75: heal[1].actions[5]: nothing runs after \"escalate\": it stops acting on the incident",
            "mend.toml:10:7: notify.pager.url: \"https://example.invalid/x\": https is not supported by mend's \
             client; POST through a [hook.NAME] running curl",
            "mend.toml:12:8: healing.mode: unknown mode \"yolo\" (allowed: \"auto\", \"approve\", \"dry-run\")",
        ],
    );
}

#[test]
fn a_detector_without_a_sensitivity_gets_the_actionable_one() {
    let text = r#"
[[detect]]
name = "latency"
series = 'request_latency_seconds'
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.detects[0].sensitivity, mend_detect::Sensitivity::ACTIONABLE.value());
    assert_eq!(config.detects[0].sensitivity, 0.2);
}

#[test]
fn issue_15_learn_bounds_are_checked_with_line_and_key() {
    check_errors(
        "[learn]\nmax_relax = 0.5\nfeedback_step = 0\nmin_outcomes = 0\nsnapshot_every = \"10ms\"\nmin_for = \"soon\"\n",
        &[
            "mend.toml:2:13: learn.max_relax: 0.5 is out of range (allowed: 1 to 100)",
            "mend.toml:3:17: learn.feedback_step: 0 is out of range (allowed: 0.01 to 10)",
            "mend.toml:4:16: learn.min_outcomes: 0 is out of range (allowed: 1 to 10000)",
            "mend.toml:5:18: learn.snapshot_every: snapshots must be at least 1s apart",
            "mend.toml:6:11: learn.min_for: invalid duration \"soon\": expected a number at \"soon\"",
        ],
    );
    check_errors(
        "[learn]\nforget_everything = true\n",
        &[
            "mend.toml:2:1: learn.forget_everything: unknown field `forget_everything`, expected one of `enabled`, `min_outcomes`, `prior_weight`, `feedback_step`, `max_relax`, `correct_run`, `min_for`, `snapshot_every`, `precursors`, `precursor_window`, `precursor_min_support`, `precursor_min_precision`",
        ],
    );
    let config = mend_config::parse("mend.toml", "[learn]\nenabled = false\n", Path::new("/")).expect("valid");
    assert!(!config.learn.enabled);
    assert_eq!(config.learn.max_relax, 4.0, "the other keys keep their defaults");
}

#[test]
fn issue_15_precursor_keys_are_checked_and_a_policy_can_act_on_an_early_warning() {
    check_errors(
        "[learn]\nprecursor_window = \"0s\"\nprecursor_min_support = 0\nprecursor_min_precision = 1.5\n",
        &[
            "mend.toml:2:20: learn.precursor_window: precursor_window must be between 1s and 24h",
            "mend.toml:3:25: learn.precursor_min_support: 0 is out of range (allowed: 1 to 10000)",
            "mend.toml:4:27: learn.precursor_min_precision: 1.5 is out of range (allowed: 0 to 1)",
        ],
    );
    let text = "[learn]\nprecursor_window = \"90s\"\nprecursor_min_support = 3\n\n[service.orders]\ncommand = [\"orders\"]\n\n[[heal]]\nwhen = \"precursor\"\nservice = \"orders\"\nactions = [\"restart\"]\n";
    let config = mend_config::parse("mend.toml", text, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.learn.precursors, "on by default");
    assert_eq!(config.learn.precursor_window, std::time::Duration::from_secs(90));
    assert_eq!((config.learn.precursor_min_support, config.learn.precursor_min_precision), (3, 0.5));
    assert_eq!(config.heal[0].when, mend_config::Trigger::Precursor);
    assert_eq!(config.heal[0].when.name(), "precursor");
}

#[test]
fn named_releases_validate() {
    let text = r#"
[service.web]
command = ["web", "--port", "{port}"]
replicas = 2
ports = "9101-9104"
env = { VERSION = "0", REGION = "eu" }
stable_release = "v1"
[service.web.proxy]
listen = "127.0.0.1:8080"
[service.web.release.v1]
env = { VERSION = "1" }
[service.web.release."v2.0"]
command = ["web-next", "--port", "{port}"]
working_dir = "next"
[service.web.release.v3]
args = ["--fast"]
[service.web.canary]
release = "v2.0"
replicas = 1
weight = 5
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/srv/app")).unwrap_or_else(|e| panic!("{e}"));
    let web = &config.services[0];
    let names: Vec<&str> = web.releases.iter().map(|release| release.name.as_str()).collect();
    assert_eq!(names, ["v1", "v2.0", "v3"]);
    assert_eq!(web.stable().name.as_str(), "v1");
    assert_eq!(web.stable().command[0].source(), "web", "a release without a command runs the service's");
    let next = web.release(&web.canary.as_ref().expect("canary").release).expect("v2.0");
    assert_eq!(next.command[0].source(), "web-next");
    assert_eq!(web.working_dir_of(next), Path::new("/srv/app/next"));
    assert_eq!(web.working_dir_of(web.stable()), Path::new("/srv/app"));
    let v1_env: Vec<(String, String)> =
        web.env_of(web.stable()).iter().map(|(k, v)| (k.clone(), v.source().to_owned())).collect();
    assert_eq!(v1_env, [("REGION".to_owned(), "eu".to_owned()), ("VERSION".to_owned(), "1".to_owned())]);
    let v3 = web.releases.iter().find(|release| release.name.as_str() == "v3").expect("v3");
    let argv: Vec<&str> = v3.command.iter().map(|arg| arg.source()).collect();
    assert_eq!(argv, ["web", "--port", "{port}", "--fast"], "args extend the service's command");
}

#[test]
fn named_releases_report_every_problem() {
    let text = r#"
[service.web]
command = ["web"]
[service.web.proxy]
listen = "127.0.0.1:8080"
[service.web.release.v1]
[service.web.release.v2]
command = ["web-next"]
args = ["--x"]
[service.web.release.Bad]
[service.web.canary]
release = "v9"
[service.api]
command = ["api"]
stable_release = "v1"
[service.db]
command = ["db"]
stable_release = "v1"
[service.db.proxy]
listen = "127.0.0.1:8081"
[service.db.release.v1]
[service.db.release.v2]
[service.db.canary]
release = "v1"
command = ["db2"]
"#;
    check_errors(
        text,
        &[
            "mend.toml:2:10: service.web: the service has 3 releases (Bad, v1, v2): say which one runs by default with stable_release = \"v1\"",
            "mend.toml:9:8: service.web.release.v2.args: give either command (the whole argv) or args (appended to the service's command), not both",
            "mend.toml:10:22: service.web.release.Bad: invalid release name \"Bad\": it must start with a lowercase letter or a digit",
            "mend.toml:12:11: service.web.canary.release: no release \"v9\": add [service.NAME.release.v9] with its command",
            "mend.toml:15:18: service.api.stable_release: names a release but the service has none: add [service.NAME.release.RELEASE] tables",
            "mend.toml:23:13: service.db.canary: a canary that names its release takes the release's command and env: move them to [service.NAME.release.v1]",
            "mend.toml:24:11: service.db.canary.release: \"v1\" is the stable release: a canary runs another release",
        ],
    );
}

#[test]
fn releases_that_bring_their_own_commands_need_no_service_command() {
    let text = r#"
[service.web]
stable_release = "v1"
[service.web.release.v1]
command = ["web-1"]
[service.web.release.v2]
command = ["web-2"]
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.services[0].command[0].source(), "web-1", "the service's command is the stable release's");
}

#[test]
fn proxy_retry_policy_validates_and_reports_every_problem() {
    let service = |proxy: &str| {
        format!(
            "[service.web]\ncommand = [\"web\"]\nreplicas = 2\nports = \"9101-9102\"\n[service.web.proxy]\nlisten = \"127.0.0.1:8080\"\n{proxy}"
        )
    };
    let parse = |proxy: &str| {
        let config = mend_config::parse("mend.toml", &service(proxy), Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
        let proxy = config.services[0].proxy.clone().expect("proxy");
        (proxy.retry_on, proxy.retry_methods)
    };
    assert_eq!(parse(""), (None, None), "unset: the proxy's default");
    let (retry_on, methods) = parse(
        "retry_on = [\"gateway-error\", \"retriable-status-codes\"]\nretriable_status_codes = [500, 507]\nretry_methods = [\"GET\", \"POST\"]\n",
    );
    assert_eq!(
        retry_on,
        Some(mend_config::RetryOn { gateway_errors: true, statuses: vec![500, 507], ..Default::default() })
    );
    assert_eq!(methods, Some(vec!["GET".to_owned(), "POST".to_owned()]));
    // Nothing is retried: an empty list says so.
    assert_eq!(parse("retry_on = []\n").0, Some(mend_config::RetryOn::default()));
    // The codes alone add to the default conditions.
    let (retry_on, _) = parse("retriable_status_codes = [501]\n");
    assert_eq!(
        retry_on,
        Some(mend_config::RetryOn {
            server_errors: true,
            gateway_errors: true,
            reset: true,
            connect_failure: true,
            statuses: vec![501]
        })
    );

    check_errors(
        &service(
            "retry_on = [\"5xx\", \"http_500\"]\nretriable_status_codes = [404, 503]\nretry_methods = [\"get\"]\n",
        ),
        &[
            "mend.toml:7:20: service.web.proxy.retry_on[1]: unknown retry condition \"http_500\" (allowed: \"5xx\", \"gateway-error\", \"reset\", \"connect-failure\", \"retriable-status-codes\")",
            "mend.toml:8:26: service.web.proxy.retriable_status_codes: is used only with \"retriable-status-codes\" in retry_on: add it there",
            "mend.toml:8:27: service.web.proxy.retriable_status_codes[0]: 404 is not a server error (allowed: 500 to 599; a 4xx is the client's and is never retried)",
            "mend.toml:9:18: service.web.proxy.retry_methods[0]: unknown method \"get\" (allowed: \"GET\", \"HEAD\", \"OPTIONS\", \"PUT\", \"DELETE\", \"TRACE\", \"POST\", \"PATCH\")",
        ],
    );
    // mend-proxy makes at most 8 attempts: more is refused here, naming the key, not at start-up.
    check_errors(
        &service("max_attempts = 9\n"),
        &["mend.toml:7:16: service.web.proxy.max_attempts: 9 is out of range (allowed: 1 to 8)"],
    );
    check_errors(
        &service("retry_on = [\"retriable-status-codes\"]\n"),
        &[
            "mend.toml:7:12: service.web.proxy.retry_on: \"retriable-status-codes\" needs retriable_status_codes (e.g. retriable_status_codes = [500, 503])",
        ],
    );
}

#[test]
fn tracing_is_off_without_its_table_and_validated_with_it() {
    let off = mend_config::parse("mend.toml", "[service.web]\ncommand = [\"web\"]\n", Path::new("/")).expect("valid");
    assert!(!off.tracing.enabled);
    let text = r#"
[tracing]
ratio = 0.05
slow = "250ms"
store_max_bytes = "8MiB"
[tracing.export]
endpoint = "http://127.0.0.1:4318/v1/traces"
batch_spans = 100
[service.web]
command = ["web"]
[service.web.proxy]
listen = "127.0.0.1:8080"
trace_ratio = 1.0
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/")).expect("valid config");
    assert!(config.tracing.enabled);
    assert_eq!(config.tracing.ratio, 0.05);
    assert_eq!(config.tracing.slow, Duration::from_millis(250));
    assert_eq!(config.tracing.store_max_bytes, 8 << 20);
    let export = config.tracing.export.as_ref().expect("export");
    assert_eq!((export.endpoint.as_str(), export.batch_spans), ("http://127.0.0.1:4318/v1/traces", 100));
    assert_eq!(config.services[0].proxy.as_ref().and_then(|proxy| proxy.trace_ratio), Some(1.0));
}

#[test]
fn tracing_errors_name_line_and_key() {
    check_errors(
        r#"[tracing]
ratio = 1.5
slow = "soon"
store_max_bytes = "lots"
colour = "blue"
"#,
        &[
            "mend.toml:2:9: tracing.ratio: 1.5 is out of range (allowed: 0 to 1)",
            "mend.toml:3:8: tracing.slow: invalid duration \"soon\": expected a number at \"soon\"",
            "mend.toml:4:19: tracing.store_max_bytes: invalid size \"lots\" (e.g. \"512MiB\" or 536870912)",
            "mend.toml:5:1: tracing.colour: unknown field `colour`, expected one of `enabled`, `ratio`, `slow`, \
             `keep_errors`, `store_max_bytes`, `otlp_max_body_bytes`, `export`",
        ],
    );
    check_errors(
        r#"[tracing]
ratio = 1.5
slow = "soon"
store_max_bytes = "lots"
[tracing.export]
endpoint = "https://collector:4318/v1/traces"
batch_spans = 0
[service.web]
command = ["web"]
[service.web.proxy]
listen = "127.0.0.1:8080"
trace_ratio = -1.0
"#,
        &[
            "mend.toml:2:9: tracing.ratio: 1.5 is out of range (allowed: 0 to 1)",
            "mend.toml:3:8: tracing.slow: invalid duration \"soon\": expected a number at \"soon\"",
            "mend.toml:4:19: tracing.store_max_bytes: invalid size \"lots\" (e.g. \"512MiB\" or 536870912)",
            "mend.toml:6:12: tracing.export.endpoint: invalid endpoint \"https://collector:4318/v1/traces\" \
             (expected http://HOST:PORT/v1/traces; there is no TLS client)",
            "mend.toml:7:15: tracing.export.batch_spans: 0 is out of range (allowed: 1 to 10000)",
            "mend.toml:12:15: service.web.proxy.trace_ratio: -1 is out of range (allowed: 0 to 1)",
        ],
    );
}

#[test]
fn remote_write_is_off_without_its_table_and_validated_with_it() {
    let off = mend_config::parse("mend.toml", "[service.web]\ncommand = [\"web\"]\n", Path::new("/")).expect("valid");
    assert_eq!(off.remote_write, None);
    let text = r#"
[remote_write]
url = "http://127.0.0.1:9090/api/v1/write"
interval = "5s"
max_samples_per_request = 500
labels = { host = "web-1", dc = "a" }
[remote_write.basic_auth]
username = "mend"
password_file = "secrets/prometheus"
"#;
    let config = mend_config::parse("mend.toml", text, Path::new("/etc/mend")).expect("valid config");
    let remote = config.remote_write.expect("configured");
    assert_eq!(remote.url, "http://127.0.0.1:9090/api/v1/write");
    assert_eq!(remote.interval, Duration::from_secs(5));
    assert_eq!((remote.max_samples_per_request, remote.queue_requests), (500, 64));
    assert_eq!(remote.timeout, Duration::from_secs(10));
    assert_eq!(
        remote.auth,
        mend_config::RemoteWriteAuth::Basic {
            username: "mend".into(),
            password_file: Path::new("/etc/mend/secrets/prometheus").into()
        }
    );
    assert_eq!(remote.labels.get("host").map(String::as_str), Some("web-1"));
}

#[test]
fn remote_write_errors_name_line_and_key() {
    check_errors(
        r#"[remote_write]
url = "https://prometheus:9090/api/v1/write"
interval = "10ms"
max_samples_per_request = 0
queue_requests = 5000
timeout = "soon"
bearer_token_file = "token"
labels = { "__name__" = "x", host = "" }
[remote_write.basic_auth]
username = "mend"
"#,
        &[
            "mend.toml:2:7: remote_write.url: invalid url \"https://prometheus:9090/api/v1/write\" (expected \
             http://HOST:PORT/api/v1/write; there is no TLS client)",
            "mend.toml:3:12: remote_write.interval: must be at least 100ms",
            "mend.toml:4:27: remote_write.max_samples_per_request: 0 is out of range (allowed: 1 to 100000)",
            "mend.toml:5:18: remote_write.queue_requests: 5000 is out of range (allowed: 1 to 1000)",
            "mend.toml:6:11: remote_write.timeout: invalid duration \"soon\": expected a number at \"soon\"",
            "mend.toml:8:25: remote_write.labels.__name__: invalid label name \"__name__\" (letters, digits and '_', \
             not starting with a digit or \"__\")",
            "mend.toml:8:37: remote_write.labels.host: a label value must not be empty (Prometheus drops it)",
            "mend.toml:9:15: remote_write.basic_auth: give either bearer_token_file or basic_auth, not both",
        ],
    );
    check_errors(
        "[remote_write]\ninterval = \"1s\"\nurl_typo = \"x\"\n",
        &[
            "mend.toml:1:2: remote_write: missing key \"url\" (e.g. url = \"http://127.0.0.1:9090/api/v1/write\")",
            "mend.toml:3:1: remote_write.url_typo: unknown field `url_typo`, expected one of `url`, `interval`, \
             `max_samples_per_request`, `queue_requests`, `timeout`, `bearer_token_file`, `basic_auth`, `labels`",
        ],
    );
    check_errors(
        "[remote_write]\ninterval = \"1s\"\n",
        &["mend.toml:1:2: remote_write: missing key \"url\" (e.g. url = \"http://127.0.0.1:9090/api/v1/write\")"],
    );
}

#[test]
fn issue_18_fleet_defaults_and_every_problem_located() {
    let config = mend_config::parse(
        "mend.toml",
        "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        std::path::Path::new("/srv"),
    )
    .expect("valid");
    let fleet = config.fleet.expect("a [fleet] table turns the fleet on");
    assert_eq!(fleet.prefix, "/mend");
    assert_eq!(fleet.host, None, "the machine's host name, read at start");
    assert_eq!(fleet.lease_ttl, std::time::Duration::from_secs(10));
    assert_eq!((fleet.max_actions_per_window, fleet.max_unavailable), (10, 1));
    assert!(fleet.auth.is_none() && fleet.tls.is_none());
    let without = mend_config::parse("mend.toml", "", std::path::Path::new("/srv")).expect("valid");
    assert!(without.fleet.is_none(), "no [fleet]: no fleet");

    check_errors(
        "[fleet]\nendpoints = [\"127.0.0.1\", \"http://etcd:2379\"]\nprefix = \"mend/\"\nhost = \"-bad host\"\nlease_ttl = \"1500ms\"\npublish_every = \"20s\"\nuser = \"mend\"\nmax_unavailable = 0\nincident_ratio = 1.5\ncert_file = \"client.pem\"\n",
        &[
            "mend.toml:1:2: fleet: \"user\" is set without \"password\": set both or neither",
            "mend.toml:1:2: fleet: \"cert_file\" is set without \"key_file\": set both or neither",
            "mend.toml:1:2: fleet: TLS to etcd (\"cert_file\" is set) needs \"ca_file\": the CA certificate (PEM) that signs etcd's certificate (the system's roots are not used)",
            "mend.toml:2:14: fleet.endpoints[0]: invalid endpoint \"127.0.0.1\" (expected http://HOST:PORT, https://HOST:PORT or HOST:PORT)",
            "mend.toml:2:27: fleet.endpoints[1]: \"http://etcd:2379\" is not https:// while \"cert_file\" is set: with TLS, every endpoint is https://HOST:PORT",
            "mend.toml:3:10: fleet.prefix: invalid prefix \"mend/\" (expected a key path such as \"/mend\": a leading /, no trailing /, letters, digits, / . - _)",
            "mend.toml:4:8: fleet.host: invalid host name \"-bad host\" (allowed: 1 to 253 letters, digits, . - _, not starting with . or -)",
            "mend.toml:5:13: fleet.lease_ttl: 1.5s is out of range (allowed: 2s to 300s)",
            "mend.toml:6:17: fleet.publish_every: must be shorter than lease_ttl (the lease is renewed as often)",
            "mend.toml:8:19: fleet.max_unavailable: 0 is out of range (allowed: 1 to 10000)",
            "mend.toml:9:18: fleet.incident_ratio: 1.5 is out of range (allowed: more than 0, less than 1)",
        ],
    );
    check_errors(
        "[fleet]\n",
        &[
            "mend.toml:1:2: fleet: missing or empty key \"endpoints\" (e.g. endpoints = [\"http://127.0.0.1:2379\"]): the fleet needs etcd",
        ],
    );
}

#[test]
fn issue_18_fleet_tls_keys_all_or_nothing_and_every_problem_located() {
    let config = mend_config::parse(
        "mend.toml",
        "[fleet]\nendpoints = [\"https://etcd-1:2379\", \"https://10.0.0.2:2379\"]\nca_file = \"tls/ca.pem\"\ncert_file = \"tls/mend.pem\"\nkey_file = \"/etc/mend/mend-key.pem\"\nserver_name = \"etcd.example\"\n",
        Path::new("/srv"),
    )
    .expect("valid");
    let tls = config.fleet.and_then(|fleet| fleet.tls).expect("TLS to etcd");
    assert_eq!(
        tls,
        mend_config::FleetTls {
            ca_file: "/srv/tls/ca.pem".into(),
            identity: Some(("/srv/tls/mend.pem".into(), "/etc/mend/mend-key.pem".into())),
            server_name: Some("etcd.example".to_owned()),
        },
        "paths against the config file's directory"
    );
    // A CA alone (etcd without --client-cert-auth) is TLS too.
    let config = mend_config::parse(
        "mend.toml",
        "[fleet]\nendpoints = [\"https://127.0.0.1:2379\"]\nca_file = \"/etc/etcd/ca.pem\"\n",
        Path::new("/srv"),
    )
    .expect("valid");
    let tls = config.fleet.and_then(|fleet| fleet.tls).expect("TLS to etcd");
    assert_eq!((tls.identity, tls.server_name), (None, None));

    check_errors(
        "[fleet]\nendpoints = [\"http://etcd-1:2379\", \"etcd-2:2379\"]\nca_file = \"ca.pem\"\n",
        &[
            "mend.toml:2:14: fleet.endpoints[0]: \"http://etcd-1:2379\" is not https:// while \"ca_file\" is set: with TLS, every endpoint is https://HOST:PORT",
            "mend.toml:2:36: fleet.endpoints[1]: \"etcd-2:2379\" is not https:// while \"ca_file\" is set: with TLS, every endpoint is https://HOST:PORT",
        ],
    );
    check_errors(
        "[fleet]\nendpoints = [\"https://etcd-1:2379\"]\n",
        &[
            "mend.toml:1:2: fleet: TLS to etcd (endpoints[0] is https://) needs \"ca_file\": the CA certificate (PEM) that signs etcd's certificate (the system's roots are not used)",
        ],
    );
    check_errors(
        "[fleet]\nendpoints = [\"http://etcd-1:2379\", \"https://etcd-2:2379\"]\nca_file = \"ca.pem\"\n",
        &[
            "mend.toml:2:14: fleet.endpoints[0]: \"http://etcd-1:2379\" is not https:// while endpoints[1] is https://: with TLS, every endpoint is https://HOST:PORT",
        ],
    );
    check_errors(
        "[fleet]\nendpoints = [\"https://etcd-1:2379\"]\nca_file = \"\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nserver_name = \"bad name!\"\n",
        &[
            "mend.toml:3:11: fleet.ca_file: the path is empty",
            "mend.toml:6:15: fleet.server_name: invalid server name \"bad name!\" (expected a DNS name such as \"etcd-1.example\" or an IP address)",
        ],
    );
    check_errors(
        "[fleet]\nendpoints = [\"http://etcd-1:2379\"]\nserver_name = \"etcd.example\"\n",
        &[
            "mend.toml:1:2: fleet: TLS to etcd (\"server_name\" is set) needs \"ca_file\": the CA certificate (PEM) that signs etcd's certificate (the system's roots are not used)",
            "mend.toml:2:14: fleet.endpoints[0]: \"http://etcd-1:2379\" is not https:// while \"server_name\" is set: with TLS, every endpoint is https://HOST:PORT",
        ],
    );
}

#[test]
fn the_built_in_rules_name_is_taken() {
    let text = "[[rule]]\nname = \"ServiceErrors\"\nexpr = \"up == 0\"\n[[detect]]\nname = \"ServiceErrors\"\nseries = \"x\"\n";
    check_errors(
        text,
        &[
            "mend.toml:2:8: rule[0].name: \"ServiceErrors\" is the name of mend's built-in rule; choose another",
            "mend.toml:5:8: detect[0].name: \"ServiceErrors\" is the name of mend's built-in rule; choose another",
        ],
    );
}
