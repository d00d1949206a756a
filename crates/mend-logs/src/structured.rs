//! Structured lines: a JSON object with a level and a message (Go's slog and zap, Rust's tracing JSON,
//! Python's json loggers, Bunyan/pino, Serilog's compact form). Its level is read, not guessed, and only
//! its message is mined, so the other fields (timestamps, request ids) never split a template.

use serde_json::Value;

use crate::level::Level;

/// Keys that hold the message, most specific first (Serilog's `@mt` is the template itself).
const MESSAGE_KEYS: [&str; 6] = ["@mt", "msg", "message", "@m", "event", "MESSAGE"];
/// Keys that hold the level.
const LEVEL_KEYS: [&str; 7] = ["level", "lvl", "severity", "levelname", "log.level", "@l", "PRIORITY"];

/// A structured line's level and message; `None` when the line is not a JSON object with a message.
pub fn parse(line: &str) -> Option<(Level, String)> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') || !trimmed.ends_with('}') {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed) else { return None };
    // tracing's JSON puts the message under `fields`.
    let fields = object.get("fields").and_then(Value::as_object);
    let message = MESSAGE_KEYS.iter().find_map(|key| {
        object.get(*key).or_else(|| fields.and_then(|fields| fields.get(*key))).and_then(Value::as_str)
    })?;
    let level = LEVEL_KEYS
        .iter()
        .find_map(|key| object.get(*key))
        .and_then(|value| match value {
            Value::String(word) => Level::parse_word(word),
            // Bunyan and pino: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
            Value::Number(number) => number.as_u64().map(|n| match n {
                0..=19 => Level::Trace,
                20..=29 => Level::Debug,
                30..=39 => Level::Info,
                40..=49 => Level::Warn,
                50..=59 => Level::Error,
                _ => Level::Fatal,
            }),
            _ => None,
        })
        .unwrap_or(Level::Unknown);
    Some((level, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<(Level, &str)>) {
        let parsed = parse(line);
        assert_eq!(parsed.as_ref().map(|(level, message)| (*level, message.as_str())), expected, "line {line:?}");
    }

    #[test]
    fn reads_level_and_message_of_common_json_loggers() {
        check(
            r#"{"time":"2024-01-01T00:00:00Z","level":"ERROR","msg":"db down","attempt":3}"#,
            Some((Level::Error, "db down")),
        );
        check(
            r#"{"timestamp":"x","level":"WARN","fields":{"message":"slow query"},"target":"app"}"#,
            Some((Level::Warn, "slow query")),
        );
        check(
            r#"{"levelname":"ERROR","message":"cannot connect to 10.0.0.1"}"#,
            Some((Level::Error, "cannot connect to 10.0.0.1")),
        );
        check(r#"{"level":50,"msg":"request failed","pid":1}"#, Some((Level::Error, "request failed")));
        check(
            r#"{"@t":"x","@mt":"User {Id} logged in","@l":"Information","Id":3}"#,
            Some((Level::Info, "User {Id} logged in")),
        );
        check(r#"{"msg":"no level here"}"#, Some((Level::Unknown, "no level here")));
        check(r#"{"no":"message"}"#, None);
        check(r#"{"broken": "#, None);
        check("plain text", None);
    }
}
