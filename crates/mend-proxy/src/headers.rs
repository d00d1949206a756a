//! Header rewriting: hop-by-hop headers (RFC 9110 §7.6.1) out, forwarding headers (X-Forwarded-*,
//! RFC 7239 `Forwarded`, `Via`) in.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(crate) static X_MEND_CALLER: HeaderName = HeaderName::from_static("x-mend-caller");

/// Which way a message travels, for the headers that exist in one direction only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// Removes hop-by-hop headers: those named in `Connection`, and `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization` / `Proxy-Authenticate`, and
/// `TE` except its `trailers` token (the only value a proxy may pass on).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, direction: Direction) {
    // One pass over the distinct names first: most messages carry none of these.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(connection) = headers.remove(header::CONNECTION) {
        remove_listed(headers, &connection);
        // Further `Connection` lines were taken out with the first; `remove` returns only the first value.
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    match direction {
        Direction::Request => {
            headers.remove(header::PROXY_AUTHORIZATION);
            if let Some(te) = headers.remove(header::TE)
                && te
                    .to_str()
                    .is_ok_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("trailers")))
            {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        }
        Direction::Response => {
            headers.remove(header::PROXY_AUTHENTICATE);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::TE
}

/// Removes the headers a `Connection` value lists, except `Host`, which the proxy must keep.
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(value) = connection.to_str() else { return };
    for token in value.split(',') {
        let token = token.trim();
        if token.is_empty() || token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            && name != header::HOST
        {
            headers.remove(name);
        }
    }
}

/// The forwarding header values for one client connection, made once per connection.
#[derive(Debug, Clone)]
pub(crate) struct ForwardedValues {
    client_ip: HeaderValue,
    forwarded: HeaderValue,
}

impl ForwardedValues {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip();
        let client_ip = HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let node = match ip {
            IpAddr::V4(v4) => format!("for={v4};proto=http"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=http"),
        };
        let forwarded = HeaderValue::try_from(node).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"));
        Self { client_ip, forwarded }
    }

    /// Appends the client to `X-Forwarded-For` and `Forwarded`, sets `X-Forwarded-Proto: http` unless a
    /// proxy in front already said, and appends `Via`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        append_list(headers, &X_FORWARDED_FOR, &self.client_ip);
        append_list(headers, &header::FORWARDED, &self.forwarded);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        append_list(headers, &header::VIA, &HeaderValue::from_static("1.1 mend"));
    }
}

/// Appends `value` to a comma-separated list header, joining earlier lines into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut existing = headers.get_all(name).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(name.clone(), value.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for line in existing {
        joined.extend_from_slice(line.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(name.clone(), joined);
    }
}

/// Whether the value of a `Cookie` header carries `name=value`.
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|line| {
        line.as_bytes().split(|&byte| byte == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&byte| byte == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    fn render(map: &HeaderMap) -> Vec<String> {
        let mut lines: Vec<String> =
            map.iter().map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?"))).collect();
        lines.sort();
        lines
    }

    fn check_strip(direction: Direction, input: &[(&str, &str)], expected: &[&str]) {
        let mut map = headers(input);
        strip_hop_by_hop(&mut map, direction);
        assert_eq!(render(&map), expected, "{input:?}");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        check_strip(
            Direction::Request,
            &[
                ("host", "a"),
                ("connection", "close, x-secret, Host"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("proxy-authorization", "Basic x"),
                ("te", "gzip, trailers"),
                ("x-kept", "1"),
            ],
            &["host: a", "te: trailers", "x-kept: 1"],
        );
        check_strip(Direction::Request, &[("te", "gzip")], &[]);
        check_strip(
            Direction::Response,
            &[("connection", "x-a"), ("x-a", "1"), ("proxy-authenticate", "Basic"), ("x-b", "2")],
            &["x-b: 2"],
        );
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let values = ForwardedValues::new(SocketAddr::from(([10, 0, 0, 7], 5000)));
        let mut fresh = headers(&[]);
        values.apply(&mut fresh);
        assert_eq!(
            render(&fresh),
            [
                "forwarded: for=10.0.0.7;proto=http",
                "via: 1.1 mend",
                "x-forwarded-for: 10.0.0.7",
                "x-forwarded-proto: http"
            ]
        );
        let mut chained = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.1.1.1"),
        ]);
        values.apply(&mut chained);
        assert_eq!(
            render(&chained),
            [
                "forwarded: for=1.1.1.1, for=10.0.0.7;proto=http",
                "via: 1.1 mend",
                "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7",
                "x-forwarded-proto: https"
            ]
        );
        let v6 = ForwardedValues::new("[::1]:80".parse().expect("addr"));
        let mut map = headers(&[]);
        v6.apply(&mut map);
        assert_eq!(map.get(header::FORWARDED).map(HeaderValue::as_bytes), Some(&b"for=\"[::1]\";proto=http"[..]));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let map = headers(&[("cookie", "a=1; canary=yes ; b=2"), ("cookie", "c=3")]);
        let cases = [("canary", Some(&b"yes"[..])), ("c", Some(b"3")), ("b", Some(b"2")), ("z", None), ("canar", None)];
        for (name, expected) in cases {
            assert_eq!(cookie_value(&map, name), expected, "{name}");
        }
    }
}
