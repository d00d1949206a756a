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

#[cfg(test)]
mod tests {
    use super::*;

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
}
