//! NAB (Numenta Anomaly Benchmark) runner and scorer for `mend-detect` detectors.
#![doc = include_str!("../README.md")]

mod corpus;
pub mod crossval;
mod error;
mod runner;
mod scoring;
mod time;

pub use corpus::{
    DataFile, LabelledFile, RawWindows, Row, list_data_files, load_labelled_corpus, parse_data_csv, read_data_file,
    read_profiles, read_windows, resolve_windows,
};
pub use error::NabError;
pub use runner::{Progress, RunSummary, detect_corpus, detect_file, read_results, run_corpus, score};
pub use scoring::{
    Counts, FileOutcome, Profile, ProfileScore, ScoredFile, probationary_rows, scaled_sigmoid, score_corpus,
    score_file_at,
};
pub use time::{Timestamp, parse_timestamp};
