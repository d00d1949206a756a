//! What one probe found, and what the process itself showed while it waited.

use serde::{Deserialize, Serialize};

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// The check passed.
    Success,
    /// The check answered wrongly or could not connect: refused, bad status, missing body text, non-zero
    /// exit.
    Failure {
        /// Why, for people.
        reason: String,
    },
    /// No answer within the timeout. The evidence says whether the process was stopped, busy or idle
    /// meanwhile, which tells a hang from overload.
    Timeout {
        /// What /proc showed during the wait, if it could be read.
        evidence: Option<ProcessEvidence>,
    },
}

/// What a process did while a probe waited for it, read from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvidence {
    /// The scheduler state letter at the end of the wait (`R`, `S`, `D`, `T`, `t`, `Z`...).
    pub state: char,
    /// CPU time the process used during the wait, in seconds (all threads).
    pub cpu_seconds: f64,
    /// How long the wait was, in seconds.
    pub window_seconds: f64,
}

impl ProcessEvidence {
    /// Share of one core used during the wait above which an unresponsive process counts as busy:
    /// real work under load uses far more, a deadlocked process with a timer thread far less.
    pub const BUSY_CPU_SHARE: f64 = 0.05;

    /// The process is stopped by a signal (SIGSTOP, SIGTSTP): it cannot answer until continued.
    pub fn is_stopped(&self) -> bool {
        self.state == 'T'
    }

    /// The process is doing work (using CPU, or waiting on disk IO) even though it does not answer.
    pub fn is_busy(&self) -> bool {
        self.state == 'D'
            || (self.window_seconds > 0.0 && self.cpu_seconds / self.window_seconds >= Self::BUSY_CPU_SHARE)
    }
}
