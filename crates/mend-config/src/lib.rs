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

mod duration;
mod error;
mod example;
mod model;
mod promql;
mod raw;
mod template;
mod validate;

use std::path::Path;

pub use duration::{format_duration, parse_duration, parse_since};
pub use error::{ConfigError, ConfigErrors, LoadError};
pub use example::EXAMPLE_CONFIG;
pub use model::{
    Api, Backoff, Canary, Check, Config, DEFAULT_MAX_SERIES_PER_TARGET, DEFAULT_SCRAPE_INTERVAL, Detect, Forecast,
    HttpTarget, LoadBalancing, Logs, Metrics, PortRange, Probe, ProbeRole, ProxySettings, Release, RestartLimit,
    RestartPolicy, Rule, ScrapeTarget, Service, StopSignal, Storage, parse_size, split_host_port,
};
pub use template::{Placeholder, Template, TemplateVars};

/// Parses and validates config `text`; `file` names it in errors and relative paths resolve against
/// `base_dir`.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::parse_config(file, text, base_dir)
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
}
