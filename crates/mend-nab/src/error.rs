//! The crate's error type: every variant names the file (and line) it is about.

use std::path::PathBuf;

/// Everything that can go wrong while running or scoring NAB.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file or directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV line could not be parsed.
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A JSON file (labels or profiles) could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The underlying parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A labels or profiles file parsed but its content is invalid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A window edge does not match the timestamp of any row of its data file.
    #[error("{path}: window edge {timestamp} matches no row")]
    WindowEdge {
        /// The data file concerned.
        path: PathBuf,
        /// The edge timestamp as written in the labels.
        timestamp: String,
    },
    /// A results file does not have one row per data row.
    #[error("{path}: {found} result rows but the data file has {expected}")]
    RowCount {
        /// The results file concerned.
        path: PathBuf,
        /// Rows in the data file.
        expected: usize,
        /// Rows in the results file.
        found: usize,
    },
    /// The detector name is not in the registry.
    #[error("unknown detector {name:?}")]
    UnknownDetector {
        /// The name asked for.
        name: String,
        /// The underlying registry error.
        #[source]
        source: mend_detect::UnknownDetector,
    },
}

impl NabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
