//! How a process ended: exit code or signal.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a supervised process ended, recorded on every exit.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal number, when a signal ended the process.
    pub signal: Option<i32>,
    /// Whether the kernel wrote a core dump.
    #[serde(default)]
    pub core_dumped: bool,
}

impl ExitInfo {
    /// The process called `exit(code)`.
    pub const fn code(code: i32) -> Self {
        Self { code: Some(code), signal: None, core_dumped: false }
    }

    /// The process was ended by signal `signal`.
    pub const fn signal(signal: i32) -> Self {
        Self { code: None, signal: Some(signal), core_dumped: false }
    }

    /// True when the process exited with code 0, the only exit a restart policy of `on-failure` accepts.
    pub fn is_success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

/// Conventional name of a Linux signal number, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (_, Some(signal)) => {
                write!(f, "killed by {} ({signal})", signal_name(signal))?;
                if self.core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

impl fmt::Debug for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Signals a program brings on itself, by a fault, on purpose (`abort()`), or by what it did (writing to a
/// closed pipe, exceeding its CPU or file-size limit): they end it as a crash, not as someone else's kill.
pub fn is_fault_signal(signal: i32) -> bool {
    // SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGPIPE, SIGXCPU, SIGXFSZ, SIGSYS.
    matches!(signal, 4 | 5 | 6 | 7 | 8 | 11 | 13 | 24 | 25 | 31)
}

/// Why mend stopped a process. On the wire as [`StopReason::as_str`] writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Hung: stopped (state T), or not answering its liveness probe while using no CPU; killed at once.
    Hung,
    /// Its liveness probe failed `failure_threshold` times in a row.
    Liveness,
    /// Unresponsive while busy for longer than `busy_timeout`.
    Busy,
    /// Its startup probe did not pass in time.
    Startup,
    /// Its resident memory went above `max_memory_bytes`.
    Memory,
    /// A stop was asked for: `mend stop`, a scale-in, shutdown.
    Stop,
    /// A restart was asked for: `mend restart`.
    Restart,
}

impl StopReason {
    /// Stable snake_case name, for the API and event details.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hung => "hung",
            Self::Liveness => "liveness",
            Self::Busy => "busy",
            Self::Startup => "startup",
            Self::Memory => "memory",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }

    /// For people: `mend status` says "killed by mend: hung".
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Hung => "hung",
            Self::Liveness => "liveness probe failing",
            Self::Busy => "busy past busy_timeout",
            Self::Startup => "startup probe failing",
            Self::Memory => "over its memory limit",
            Self::Stop => "stop requested",
            Self::Restart => "restart requested",
        }
    }
}

/// Who ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCause {
    /// The program itself: it exited, or a fault of its own (SIGSEGV, SIGABRT, ...) ended it.
    Program,
    /// A signal that mend did not send: an operator's `kill`, the kernel's OOM killer, another manager.
    ExternalSignal,
    /// mend stopped it, for this reason.
    Mend(StopReason),
}

impl ExitCause {
    /// Stable snake_case name: `program`, `external_signal` or `mend`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Program => "program",
            Self::ExternalSignal => "external_signal",
            Self::Mend(_) => "mend",
        }
    }

    /// Why mend stopped the process, when it did.
    pub const fn stop_reason(self) -> Option<StopReason> {
        match self {
            Self::Mend(reason) => Some(reason),
            Self::Program | Self::ExternalSignal => None,
        }
    }
}

/// How a replica's last process ended, and who ended it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LastExit {
    /// Exit code or signal.
    pub exit: ExitInfo,
    /// Who ended it.
    pub cause: ExitCause,
}

impl fmt::Display for LastExit {
    /// `exit code 1`, `crashed: SIGSEGV (11)`, `killed by SIGKILL (9) from outside mend`,
    /// `killed by mend: hung`, `stopped by mend: over its memory limit (exit code 0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exit = self.exit;
        match (self.cause, exit.signal) {
            (ExitCause::Program, Some(signal)) => {
                write!(f, "crashed: {} ({signal})", signal_name(signal))?;
                if exit.core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
            (ExitCause::Program, None) => write!(f, "{exit}"),
            (ExitCause::ExternalSignal, _) => write!(f, "{exit} from outside mend"),
            (ExitCause::Mend(reason), Some(9)) => write!(f, "killed by mend: {}", reason.describe()),
            (ExitCause::Mend(reason), Some(signal)) => {
                write!(f, "stopped by mend: {} ({})", reason.describe(), signal_name(signal))
            }
            (ExitCause::Mend(reason), None) => write!(f, "stopped by mend: {} ({exit})", reason.describe()),
        }
    }
}

impl fmt::Debug for LastExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_serialize_as_their_names() {
        let reasons = [
            StopReason::Hung,
            StopReason::Liveness,
            StopReason::Busy,
            StopReason::Startup,
            StopReason::Memory,
            StopReason::Stop,
            StopReason::Restart,
        ];
        for reason in reasons {
            let json = serde_json::to_value(reason).expect("serializes");
            assert_eq!(json, reason.as_str(), "{reason:?}");
            assert_eq!(serde_json::from_value::<StopReason>(json).ok(), Some(reason));
        }
    }

    #[test]
    fn describes_exits_for_people() {
        assert_eq!(ExitInfo::code(3).to_string(), "exit code 3");
        assert_eq!(ExitInfo::signal(9).to_string(), "killed by SIGKILL (9)");
        let dumped = ExitInfo { core_dumped: true, ..ExitInfo::signal(11) };
        assert_eq!(dumped.to_string(), "killed by SIGSEGV (11), core dumped");
        assert!(ExitInfo::code(0).is_success());
        assert!(!ExitInfo::code(1).is_success());
        assert!(!ExitInfo::signal(15).is_success());
    }

    #[test]
    fn last_exits_say_who_ended_the_process() {
        let dumped = ExitInfo { core_dumped: true, ..ExitInfo::signal(11) };
        let cases = [
            (ExitInfo::code(1), ExitCause::Program, "exit code 1"),
            (dumped, ExitCause::Program, "crashed: SIGSEGV (11), core dumped"),
            (ExitInfo::signal(9), ExitCause::ExternalSignal, "killed by SIGKILL (9) from outside mend"),
            (ExitInfo::signal(9), ExitCause::Mend(StopReason::Hung), "killed by mend: hung"),
            (
                ExitInfo::code(0),
                ExitCause::Mend(StopReason::Memory),
                "stopped by mend: over its memory limit (exit code 0)",
            ),
            (
                ExitInfo::signal(15),
                ExitCause::Mend(StopReason::Restart),
                "stopped by mend: restart requested (SIGTERM)",
            ),
        ];
        for (exit, cause, expected) in cases {
            assert_eq!(LastExit { exit, cause }.to_string(), expected);
        }
        assert!(
            is_fault_signal(6)
                && is_fault_signal(11)
                && is_fault_signal(13)
                && !is_fault_signal(9)
                && !is_fault_signal(15)
        );
    }
}
