//! mend's configuration: a TOML file becomes raw types, then a validated [`Config`].
//!
//! Validation gathers every problem before failing, and each [`ConfigError`] names the file, line,
//! column and key path (`service.web.liveness.interval`), the value given and what is allowed. Nothing
//! is spawned or bound until the whole file is valid.
//!
//! ```
//! let text = r#"
//! [service.web]
//! command = ["mend-demo", "--port", "{port}"]
//! replicas = 2
//! ports = "9101-9110"
//! [service.web.liveness]
//! http = "http://127.0.0.1:{port}/health"
//! "#;
//! let config = mend_config::parse("mend.toml", text, std::path::Path::new("/srv")).unwrap();
//! assert_eq!(config.services[0].port_of(1), Some(9102));
//!
//! let errors = mend_config::parse("mend.toml", "[service.web]\ncommand = []\n", std::path::Path::new("/")).unwrap_err();
//! assert_eq!(errors.to_string(), "mend.toml:2:11: service.web.command: the command is empty: the first element must name the program to run");
//! ```

mod autoscale;
mod chaos;
mod duration;
mod error;
mod example;
mod fleet;
mod gameday;
mod heal;
mod learn;
mod model;
mod promql;
mod raw;
mod remote_write;
mod retry;
mod template;
mod trace;
mod validate;

use std::path::Path;

pub use autoscale::{Autoscale, AutoscaleMetric};
pub use chaos::{Chaos, DailyWindow, Monkey};
pub use duration::{parse_duration, parse_since};
pub use error::{ConfigError, ConfigErrors, LoadError};
pub use example::EXAMPLE_CONFIG;
pub use fleet::{Fleet, FleetAuth, FleetTls, valid_host_name};
pub use gameday::{
    Expect, FaultAction, Load, LoopbackUrl, MAX_CONCURRENCY, MAX_GAMEDAY, MAX_RATE, Scenario, ScheduledFault, Slo,
    Topology, load_scenario, parse_scenario,
};
pub use heal::{HealPolicy, Healing, Hook, NotifyTarget, PRECURSOR_TRIGGER, ServiceHealing, Trigger};
pub use learn::Learn;
pub use model::{
    Api, Backoff, Canary, Check, Config, DEFAULT_MAX_SERIES_PER_TARGET, DEFAULT_SAMPLE_LIMIT, DEFAULT_SCRAPE_INTERVAL,
    Detect, Forecast, HttpTarget, LoadBalancing, Logs, Metrics, PortRange, Probe, ProbeRole, ProxySettings,
    ReleaseSpec, RestartLimit, RestartPolicy, Rule, ScrapeTarget, Service, StopSignal, Storage, UpstreamProtocol,
    parse_size, split_host_port,
};
pub use remote_write::{RemoteWrite, RemoteWriteAuth};
pub use retry::RetryOn;
pub use template::{Placeholder, Template, TemplateVars};
pub use trace::{TraceExport, Tracing};

/// Parses and validates config `text`; `file` names it in errors and relative paths resolve against
/// `base_dir`.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::parse_config(file, text, base_dir)
}

/// Reads the config file at `path` for its `[api]` table alone, as client commands need it: a problem
/// elsewhere in the file (a PromQL typo, say) does not keep them from finding the daemon. Problems in
/// `[api]`, and TOML syntax errors, are reported with file, line and column.
pub fn load_api(path: &Path) -> Result<Api, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    validate::parse_api(&path.display().to_string(), &text).map_err(LoadError::Invalid)
}

/// 1-based line and column of the value at `keys` (table keys, `["service", "web", "command"]`) in config
/// `text`, for messages about a valid config (a program that is not installed, say); None when `text` is
/// not TOML.
pub fn locate(text: &str, keys: &[&str]) -> Option<(usize, usize)> {
    validate::locate(text, keys)
}

/// Reads and validates the config file at `path`; relative paths in it resolve against its directory.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let base_dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    parse(&path.display().to_string(), &text, &base_dir).map_err(LoadError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_values_by_key_path() {
        let text = "[api]\nlisten = \"127.0.0.1:7070\"\n\n[service.web]\nreplicas = 2\ncommand = [\"web-server\"]\n";
        assert_eq!(locate(text, &["service", "web", "command"]), Some((6, 11)));
        assert_eq!(locate(text, &["api", "listen"]), Some((2, 10)));
        // A key that is not there: the deepest one that is.
        assert_eq!(locate(text, &["service", "web", "env"]), Some((4, 10)));
        assert_eq!(locate("[service.web", &["service"]), None);
    }

    #[test]
    fn the_api_table_is_read_alone() {
        let api = |text: &str| validate::parse_api("mend.toml", text).map_err(|errors| errors.to_string());
        // Problems elsewhere do not matter: client commands only need to find the daemon.
        let broken_rule =
            "[api]\nlisten = \"127.0.0.1:7071\"\ntoken = \"t\"\n[[rule]]\nname = \"X\"\nexpr = 'rate(x[5m'\n";
        assert!(parse("mend.toml", broken_rule, Path::new("/")).is_err());
        let read = api(broken_rule).expect("the [api] table");
        assert_eq!((read.listen.to_string(), read.token.as_deref()), ("127.0.0.1:7071".to_owned(), Some("t")));
        assert_eq!(
            api("[service.web]\nreplicas = \"two\"\n").map(|a| a.listen.to_string()),
            Ok("127.0.0.1:7070".to_owned())
        );
        // Its own problems and syntax errors are reported where they are.
        assert_eq!(
            api("[service.web]\n\n[api]\nlisten = \"nowhere\"\n"),
            Err("mend.toml:4:10: api.listen: invalid address \"nowhere\" (expected IP:PORT, e.g. \"127.0.0.1:7070\")"
                .to_owned())
        );
        assert_eq!(
            api("[api]\nport = 1\n").map_err(|e| e.starts_with("mend.toml:2:1: api.port: unknown field")),
            Err(true)
        );
        assert!(api("[api\n").is_err_and(|e| e.starts_with("mend.toml:1:")));
    }
}
