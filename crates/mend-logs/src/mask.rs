//! Masking of variables: the parts of a token that change from one line of a template to the next
//! (numbers, hex, IP addresses, paths, URLs, UUIDs, identifiers with digits) become `<*>` before mining.
//!
//! Generic by design: no rule names a system. A token is cut at the delimiters that separate a key
//! from its value (`=`, `:`, `,`, brackets, quotes), and each piece is judged alone, so `uid=0` keeps
//! its key (`uid=<*>`) and `[10.0.0.1]` its brackets (`[<*>]`).

/// The wildcard that stands for a variable.
pub const WILDCARD: &str = "<*>";

/// Characters that split a token into pieces judged separately (and kept).
fn is_delimiter(c: char) -> bool {
    matches!(c, '=' | ':' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '"' | '\'' | '|')
}

/// Masks one whitespace-free token, appending the result to `out`.
pub fn mask_token(token: &str, out: &mut String) {
    if token == WILDCARD {
        out.push_str(WILDCARD);
        return;
    }
    // Whole-token variables that contain delimiters: URLs (`http://host:80/x`), IPv6 addresses.
    if is_url(token) || is_ipv6(token) {
        push_wildcard(out);
        return;
    }
    let mut start = 0;
    for (idx, c) in token.char_indices() {
        if is_delimiter(c) {
            push_piece(&token[start..idx], out);
            out.push(c);
            start = idx + c.len_utf8();
        }
    }
    push_piece(&token[start..], out);
}

/// Masks a whole message: tokens split on whitespace, each masked, joined by one space.
pub fn mask_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for token in message.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        mask_token(token, &mut out);
    }
    out
}

fn push_piece(piece: &str, out: &mut String) {
    if piece.is_empty() {
        return;
    }
    if is_variable(piece) {
        push_wildcard(out);
    } else {
        out.push_str(piece);
    }
}

/// Appends `<*>` unless `out` already ends with one (two variables side by side are one).
fn push_wildcard(out: &mut String) {
    if !out.ends_with(WILDCARD) {
        out.push_str(WILDCARD);
    }
}

/// Whether a delimiter-free piece is a variable.
fn is_variable(piece: &str) -> bool {
    if piece.bytes().any(|b| b.is_ascii_digit()) {
        // Numbers, versions, IPv4, hex with digits, ids such as `blk_-123` or `task_01`, sizes (`12ms`).
        return true;
    }
    is_path(piece) || is_long_hex(piece)
}

/// An absolute or relative path with at least two separators (`/var/log`, `./a/b`), not a lone `/`.
fn is_path(piece: &str) -> bool {
    piece.matches('/').count() >= 2 && piece.len() > 2
}

/// A hex string without decimal digits, long enough not to be a word (`deadbeefcafe`).
fn is_long_hex(piece: &str) -> bool {
    piece.len() >= 12 && piece.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_url(token: &str) -> bool {
    token.find("://").is_some_and(|idx| idx > 0 && token[..idx].bytes().all(|b| b.is_ascii_alphabetic()))
}

/// Three or more colon-separated hex groups (`fe80::1`, `0:0:0:0:0:0:0:0`), brackets allowed.
fn is_ipv6(token: &str) -> bool {
    let core = token.trim_matches(|c| matches!(c, '[' | ']' | '/'));
    core.matches(':').count() >= 2
        && core.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        && core.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(mask_message(input), expected, "masking {input:?}");
    }

    #[test]
    fn masks_variables_and_keeps_words() {
        check(
            "PacketResponder 1 for block blk_-6952295868487656571 terminating",
            "PacketResponder <*> for block <*> terminating",
        );
        check("uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4", "uid=<*> euid=<*> tty=NODEVssh ruser= rhost=<*>");
        check("for ns.example.com [173.234.31.186] failed", "for ns.example.com [<*>] failed");
        check("Received connection request /10.10.34.11:45307", "Received connection request <*>:<*>");
        check("open /var/lib/mend/state.db failed", "open <*> failed");
        check("GET http://127.0.0.1:8080/x?y=1 took 12ms", "GET <*> took <*>");
        check("id 123e4567-e89b-12d3-a456-426614174000 ptr 0x7ffd", "id <*> ptr <*>");
        check("peer fe80::1ff:fe23:4567:890a gone", "peer <*> gone");
        check("hash deadbeefcafe ok", "hash <*> ok");
        check("connection refused to db.internal:5432", "connection refused to db.internal:<*>");
        check("a  b\tc", "a b c");
    }
}
