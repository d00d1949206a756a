//! Log levels, and finding a line's level (and where its message starts) in the common formats:
//! `ERROR msg`, `[ERROR] msg`, `2024-01-01T00:00:00Z ERROR crate: msg` (Rust's tracing and env_logger),
//! `2024-01-01 00:00:00,123 ERROR [main] x: msg` (log4j, Python's default formatter), `ERROR:root:msg`
//! (Python's basicConfig), `level=error msg="..."` (logfmt, Go's slog and logrus), `E0101 12:00:00 1 f.go:1]
//! msg` (glog, Kubernetes' klog), syslog priorities (`<3>msg`, `<27>Jan ...`). A line without a level is
//! `Unknown`, never a guess from words inside its message.

use std::fmt;

/// How severe a line says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The line names no level.
    Unknown,
    /// `trace`, `finest`.
    Trace,
    /// `debug`, `fine`.
    Debug,
    /// `info`, `notice`.
    Info,
    /// `warn`, `warning`.
    Warn,
    /// `error`, `err`, `severe`.
    Error,
    /// `fatal`, `critical`, `crit`, `alert`, `emerg`, `panic`.
    Fatal,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 7] =
        [Level::Unknown, Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error, Level::Fatal];

    /// The stable lowercase name (a label value in `mend_log_template_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }

    /// Parses a level word in any case (`ERROR`, `Warning`, `crit`, `E`...): the names the common
    /// formats use. One-letter forms only when `short` (glog's `E0101`, klog).
    pub fn parse_word(word: &str) -> Option<Self> {
        let lower = word.to_ascii_lowercase();
        Some(match lower.as_str() {
            "trace" | "trc" | "finest" | "finer" => Self::Trace,
            "debug" | "dbg" | "fine" => Self::Debug,
            "info" | "inf" | "information" | "notice" => Self::Info,
            "warn" | "warning" | "wrn" => Self::Warn,
            "error" | "err" | "eror" | "severe" => Self::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" | "dpanic" => Self::Fatal,
            _ => return None,
        })
    }

    /// Whether an operator should hear of a new line at this level.
    pub fn is_error(self) -> bool {
        self >= Self::Error
    }

    /// The level of a syslog priority (`<PRI>`: severity is PRI mod 8).
    fn of_syslog(priority: u32) -> Self {
        match priority % 8 {
            0..=2 => Self::Fatal,
            3 => Self::Error,
            4 => Self::Warn,
            5 | 6 => Self::Info,
            _ => Self::Debug,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many leading tokens may come before the level (timestamps, a pid, a thread name).
const MAX_HEADER_TOKENS: usize = 6;

/// A line's level and the byte offset where its message starts (after the level and, when a logger
/// name with a colon follows it, that too). `(Unknown, 0)` when no level is found.
pub fn extract(line: &str) -> (Level, usize) {
    let trimmed_start = line.len() - line.trim_start().len();
    let rest = &line[trimmed_start..];
    // Syslog priority: `<3>` or `<27>`.
    if let Some(after) = rest.strip_prefix('<')
        && let Some(close) = after.find('>')
        && close <= 3
        && let Ok(priority) = after[..close].parse::<u32>()
    {
        let offset = trimmed_start + 1 + close + 1;
        let (level, more) = extract(&line[offset..]);
        // A level word after the priority (systemd's journal) is more precise.
        return if level == Level::Unknown { (Level::of_syslog(priority), offset) } else { (level, offset + more) };
    }
    // glog / klog: `E0101 12:00:00.000000 1 file.go:10] msg`.
    if let Some(level) = glog_level(rest)
        && let Some(close) = rest.find("] ")
    {
        return (level, trimmed_start + close + 2);
    }
    for (start, token) in tokens(line).take(MAX_HEADER_TOKENS + 1) {
        if let Some((level, lead, word_len)) = token_level(token) {
            let level_end = start + lead + word_len;
            let end = match line[level_end..].strip_prefix(':') {
                // `ERROR:root:msg` (Python's basicConfig): a logger name up to the next colon, if any.
                Some(after) if !after.starts_with(' ') => match after.find(':') {
                    Some(colon) if !after[..colon].contains(' ') => level_end + 1 + colon + 1,
                    _ => level_end + 1,
                },
                _ => start + token.len(),
            };
            return (level, skip_spaces(line, end));
        }
        // logfmt: `level=error` among the first tokens; the message is `msg=`.
        if let Some(value) = token.strip_prefix("level=").or_else(|| token.strip_prefix("lvl="))
            && let Some(level) = Level::parse_word(value.trim_matches('"'))
        {
            let message_at = line.find("msg=").map_or(start + token.len(), |at| at + 4);
            return (level, skip_spaces(line, message_at));
        }
        if !is_header_token(token) {
            break;
        }
    }
    (Level::Unknown, 0)
}

fn skip_spaces(line: &str, at: usize) -> usize {
    let at = at.min(line.len());
    at + (line[at..].len() - line[at..].trim_start().len())
}

/// Whitespace-separated tokens with their byte offsets.
fn tokens(line: &str) -> impl Iterator<Item = (usize, &str)> {
    line.split_ascii_whitespace().map(move |token| (token.as_ptr() as usize - line.as_ptr() as usize, token))
}

/// A header token that is a level: the word alone, in brackets (`[ERROR]`), or followed by a colon.
/// Returns the level, the bytes before the word and the word's length.
fn token_level(token: &str) -> Option<(Level, usize, usize)> {
    let inner = token.trim_start_matches(['[', '(', '<', '|']);
    let lead = token.len() - inner.len();
    let word_len = inner.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(inner.len());
    if word_len < 3 {
        return None;
    }
    Level::parse_word(&inner[..word_len]).map(|level| (level, lead, word_len))
}

/// Whether a token before the level can be part of a header: a timestamp, a pid, a date's words, a
/// bracketed field, a dash. A plain word ends the header: `the error was` has no level.
fn is_header_token(token: &str) -> bool {
    const NAMES: [&str; 19] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Mon", "Tue", "Wed", "Thu",
        "Fri", "Sat", "Sun",
    ];
    token.bytes().any(|b| b.is_ascii_digit())
        || token.starts_with('[')
        || token == "-"
        || NAMES.contains(&token.trim_start_matches('['))
}

fn glog_level(rest: &str) -> Option<Level> {
    let bytes = rest.as_bytes();
    if bytes.len() < 6 || !bytes[1..5].iter().all(u8::is_ascii_digit) || bytes[5] != b' ' {
        return None;
    }
    match bytes[0] {
        b'I' => Some(Level::Info),
        b'W' => Some(Level::Warn),
        b'E' => Some(Level::Error),
        b'F' => Some(Level::Fatal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, level: Level, message: &str) {
        let (found, at) = extract(line);
        assert_eq!((found, &line[at..]), (level, message), "line {line:?}");
    }

    #[test]
    fn finds_the_level_of_common_formats() {
        check("ERROR connection refused", Level::Error, "connection refused");
        check("[WARN] disk almost full", Level::Warn, "disk almost full");
        check(
            "2024-05-01T10:00:00.123Z  INFO mend_demo: listening on 8080",
            Level::Info,
            "mend_demo: listening on 8080",
        );
        check("[2024-05-01T10:00:00Z ERROR app] boom", Level::Error, "app] boom");
        check("2024-05-01 10:00:00,123 WARNING [main] slow request", Level::Warn, "[main] slow request");
        check("ERROR:root:cannot connect", Level::Error, "cannot connect");
        check("WARNING:urllib3.connectionpool:Retrying", Level::Warn, "Retrying");
        check(
            "time=2024-05-01T10:00:00Z level=error msg=\"db down\" err=timeout",
            Level::Error,
            "\"db down\" err=timeout",
        );
        check("E0501 10:00:00.000000       1 main.go:42] failed to sync", Level::Error, "failed to sync");
        check("<3>kernel oops", Level::Error, "kernel oops");
        check("<30>systemd started", Level::Info, "systemd started");
        check("081109 203615 148 INFO dfs.DataNode: Receiving block", Level::Info, "dfs.DataNode: Receiving block");
        check(
            "[Sun Dec 04 04:47:44 2005] [error] mod_jk child in error state 6",
            Level::Error,
            "mod_jk child in error state 6",
        );
        check(
            "2015-07-29 17:41:44,747 - INFO  [main:Q@774] - Notification",
            Level::Info,
            "[main:Q@774] - Notification",
        );
        check("2023/01/01 12:00:00 listening on :8080", Level::Unknown, "2023/01/01 12:00:00 listening on :8080");
        check("the error was ignored", Level::Unknown, "the error was ignored");
        check("", Level::Unknown, "");
    }
}
