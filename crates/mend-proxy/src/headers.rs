//! Header rewriting: hop-by-hop headers (RFC 9110 §7.6.1) out, forwarding headers (X-Forwarded-*,
//! RFC 7239 `Forwarded`, `Via`) in.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// RFC 9113 §3.2.1 (RFC 7540): connection-specific, sent only with `Upgrade: h2c`.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(crate) static X_MEND_CALLER: HeaderName = HeaderName::from_static("x-mend-caller");
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Removes a request's hop-by-hop headers: those named in `Connection`, and `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `HTTP2-Settings`, `Proxy-Authorization`, and `TE`
/// except its `trailers` token (the only value a proxy may pass on). Responses are filtered while they
/// are parsed (`upstream`), with [`is_hop_by_hop_response`].
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    headers.remove(&HTTP2_SETTINGS);
    headers.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = headers.remove(header::TE)
        && te.to_str().is_ok_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("trailers")))
    {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol a request asks to switch to (RFC 9110 §7.8): its `Upgrade` value when `Connection`
/// lists `upgrade`, without `h2c`. Read before [`strip_hop_by_hop`] removes both.
///
/// An `h2c` upgrade (RFC 7540 §3.2, removed from RFC 9113) is never passed on: a backend that accepted it
/// would answer the request over HTTP/2 on a connection the proxy reads as HTTP/1.1. The request goes on
/// as a plain HTTP/1.1 request, which is what the client must expect when a server ignores the offer; a
/// client that wants HTTP/2 speaks it with prior knowledge, which the proxy serves.
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let listed = headers.get_all(header::CONNECTION).iter().any(|value| {
        value.as_bytes().split(|&byte| byte == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let offered = headers.get(header::UPGRADE).filter(|_| listed)?;
    let is_h2c = |token: &[u8]| token.trim_ascii().eq_ignore_ascii_case(b"h2c");
    if !offered.as_bytes().split(|&byte| byte == b',').any(is_h2c) {
        return Some(offered.clone());
    }
    let kept: Vec<&[u8]> =
        offered.as_bytes().split(|&byte| byte == b',').filter(|token| !is_h2c(token)).map(<[u8]>::trim_ascii).collect();
    HeaderValue::from_bytes(&kept.join(&b", "[..])).ok().filter(|value| !value.is_empty())
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == HTTP2_SETTINGS
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::TE
}

/// The hop-by-hop headers of a response (besides those its `Connection` header lists).
pub(crate) fn is_hop_by_hop_response(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
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
}

/// The forwarding headers the proxy adds to (or appends to) on each request.
const FORWARDING: [&HeaderName; 3] = [&X_FORWARDED_FOR, &header::FORWARDED, &header::VIA];

/// Writes a request's header lines for the backend, appending the client to `X-Forwarded-For` and
/// `Forwarded` and the proxy to `Via` (earlier lines of each joined into one comma-separated line), and
/// `X-Forwarded-Proto: http` in place of any the client sent: the proxy says which protocol it was
/// reached by, as its `Forwarded` element does (`proto=http`), and a client cannot claim `https`.
/// Writing them here rather than inserting them into the map keeps the request's `HeaderMap`
/// untouched, so a retry needs no copy.
pub(crate) fn encode_request_headers(headers: &HeaderMap, forwarded: &ForwardedValues, out: &mut Vec<u8>) {
    let ours: [&[u8]; 3] = [forwarded.client_ip.as_bytes(), forwarded.forwarded.as_bytes(), b"1.1 mend"];
    let mut seen = [false; 3];
    // The forwarding list whose line is still open, and the name it belongs to.
    let mut open: Option<(usize, &HeaderName)> = None;
    for (name, value) in headers {
        if let Some((list_idx, list_name)) = open {
            if list_name == name {
                out.extend_from_slice(b", ");
                out.extend_from_slice(value.as_bytes());
                continue;
            }
            close_list(out, ours[list_idx]);
            open = None;
        }
        match FORWARDING.iter().position(|list| *list == name) {
            Some(list_idx) => {
                seen[list_idx] = true;
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                open = Some((list_idx, name));
            }
            None if name == X_FORWARDED_PROTO => {}
            None => push_line(out, name.as_str().as_bytes(), value.as_bytes()),
        }
    }
    if let Some((list_idx, _)) = open {
        close_list(out, ours[list_idx]);
    }
    for (list_idx, list) in FORWARDING.iter().enumerate() {
        if !seen[list_idx] {
            push_line(out, list.as_str().as_bytes(), ours[list_idx]);
        }
    }
    push_line(out, X_FORWARDED_PROTO.as_str().as_bytes(), b"http");
}

/// The same forwarding headers as [`encode_request_headers`], set in a header map (for an HTTP/2
/// upstream, whose requests are built as maps): each list joined into one value with this hop appended,
/// and `X-Forwarded-Proto` replaced.
pub(crate) fn add_forwarding_headers(headers: &mut HeaderMap, forwarded: &ForwardedValues) {
    let ours: [&[u8]; 3] = [forwarded.client_ip.as_bytes(), forwarded.forwarded.as_bytes(), b"1.1 mend"];
    for (name, ours) in FORWARDING.iter().zip(ours) {
        let mut joined = Vec::new();
        for value in headers.get_all(*name) {
            joined.extend_from_slice(value.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(ours);
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(*name, value);
        }
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

fn close_list(out: &mut Vec<u8>, ours: &[u8]) {
    out.extend_from_slice(b", ");
    out.extend_from_slice(ours);
    out.extend_from_slice(b"\r\n");
}

/// Writes one `name: value` line.
pub(crate) fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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

    fn check_strip(input: &[(&str, &str)], expected: &[&str]) {
        let mut map = headers(input);
        strip_hop_by_hop(&mut map);
        assert_eq!(render(&map), expected, "{input:?}");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        check_strip(
            &[
                ("host", "a"),
                ("connection", "close, x-secret, Host"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
                ("proxy-authorization", "Basic x"),
                ("te", "gzip, trailers"),
                ("x-kept", "1"),
            ],
            &["host: a", "te: trailers", "x-kept: 1"],
        );
        check_strip(&[("te", "gzip")], &[]);
    }

    /// The header lines written for the backend, sorted.
    fn encoded(values: &ForwardedValues, map: &HeaderMap) -> Vec<String> {
        let mut out = Vec::new();
        encode_request_headers(map, values, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.ends_with("\r\n"), "{text:?}");
        let mut lines: Vec<String> = text.split_terminator("\r\n").map(str::to_owned).collect();
        lines.sort();
        lines
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let values = ForwardedValues::new(SocketAddr::from(([10, 0, 0, 7], 5000)));
        assert_eq!(
            encoded(&values, &headers(&[])),
            [
                "forwarded: for=10.0.0.7;proto=http",
                "via: 1.1 mend",
                "x-forwarded-for: 10.0.0.7",
                "x-forwarded-proto: http"
            ]
        );
        let chained = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("host", "svc"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.1.1.1"),
            ("via", "1.0 edge"),
            ("x-last", "1"),
        ]);
        assert_eq!(
            encoded(&values, &chained),
            [
                "forwarded: for=1.1.1.1, for=10.0.0.7;proto=http",
                "host: svc",
                "via: 1.0 edge, 1.1 mend",
                "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7",
                "x-forwarded-proto: http",
                "x-last: 1",
            ]
        );
        let v6 = ForwardedValues::new("[::1]:80".parse().expect("addr"));
        assert!(encoded(&v6, &headers(&[])).contains(&"forwarded: for=\"[::1]\";proto=http".to_owned()));
    }

    #[test]
    fn forwarding_headers_set_in_a_map_match_the_encoded_ones() {
        let values = ForwardedValues::new(SocketAddr::from(([10, 0, 0, 7], 5000)));
        for pairs in [
            &[][..],
            &[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("x-forwarded-proto", "https")][..],
            &[("forwarded", "for=1.1.1.1"), ("via", "1.0 edge"), ("host", "svc")][..],
        ] {
            let mut map = headers(pairs);
            add_forwarding_headers(&mut map, &values);
            assert_eq!(render(&map), encoded(&values, &headers(pairs)), "{pairs:?}");
        }
    }

    #[test]
    fn h2c_is_never_an_upgrade_to_pass_on() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: [Case<'_>; 6] = [
            (&[("connection", "upgrade"), ("upgrade", "websocket")], Some("websocket")),
            (&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")], None),
            (&[("connection", "upgrade"), ("upgrade", "H2C")], None),
            (&[("connection", "upgrade"), ("upgrade", "h2c, websocket")], Some("websocket")),
            (&[("connection", "upgrade"), ("upgrade", "foo/2 , h2c,bar")], Some("foo/2, bar")),
            (&[("upgrade", "websocket")], None),
        ];
        for (pairs, expected) in cases {
            let got = requested_upgrade(&headers(pairs));
            assert_eq!(got.as_ref().map(|value| value.to_str().expect("ascii")), expected, "{pairs:?}");
        }
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
