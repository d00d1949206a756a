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
    /// The check could not be made, or its time means nothing, because of mend's own trouble: it is
    /// out of file descriptors or memory, or its event loop lagged during the wait. This says nothing
    /// about the replica: it is mend's incident, and no replica is judged (let alone stopped) on it.
    Inconclusive {
        /// What mend ran short of.
        trouble: MendTrouble,
        /// The error or the lag, for people.
        reason: String,
    },
}

/// What mend itself ran short of when a probe could not judge a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MendTrouble {
    /// mend or the system is out of file descriptors (EMFILE, ENFILE).
    FileDescriptors,
    /// Out of memory or socket buffers (ENOMEM, ENOBUFS).
    Memory,
    /// No more processes or threads may be created (EAGAIN from fork).
    Processes,
    /// mend's event loop ran late (it was not scheduled, or a task blocked it) for a large part of the
    /// probe's wait, so a timeout may be mend's own slowness.
    Lag,
}

impl MendTrouble {
    /// The stable snake_case name (the `trouble` detail of a `mend_trouble` event).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FileDescriptors => "file_descriptors",
            Self::Memory => "memory",
            Self::Processes => "processes",
            Self::Lag => "lag",
        }
    }

    /// The trouble an OS error (`errno`) means for mend, if it is mend's own: the same errors from a
    /// probe's connect or spawn say nothing about the replica.
    pub fn from_os_error(errno: i32) -> Option<MendTrouble> {
        // Linux's numbers (asm-generic/errno-base.h, errno.h); mend runs on Linux only.
        const EAGAIN: i32 = 11;
        const ENOMEM: i32 = 12;
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        const ENOBUFS: i32 = 105;
        match errno {
            EMFILE | ENFILE => Some(Self::FileDescriptors),
            ENOMEM | ENOBUFS => Some(Self::Memory),
            EAGAIN => Some(Self::Processes),
            _ => None,
        }
    }
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
