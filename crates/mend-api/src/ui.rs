//! The dashboard: static files embedded in the binary, served at `/ui/`, with the headers that keep a
//! page served next to a control API safe.
//!
//! The files live in `crates/mend-api/ui` (plain HTML, CSS and JavaScript modules, uPlot vendored with
//! its licence) and are compiled in with `include_bytes!`: no build step, no network, and nothing of them
//! is resident until a browser asks for them (they sit in the binary's read-only data). Every answer
//! carries a strict Content-Security-Policy (scripts from this origin only, so nothing inline, and
//! nothing from data can run even if it slipped into the page), `nosniff`, no framing, and an `ETag` so
//! that a browser revalidates (`no-cache`) and gets 304 when nothing changed.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::routes::ApiError;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the dashboard. `path` is relative to `/ui/`; the empty path is the page itself.
const ASSETS: &[Asset] = &[
    Asset { path: "", content_type: "text/html; charset=utf-8", body: include_bytes!("../ui/index.html") },
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../ui/app.js") },
    Asset { path: "api.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../ui/api.js") },
    Asset { path: "dom.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../ui/dom.js") },
    Asset { path: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../ui/style.css") },
    Asset { path: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../ui/favicon.svg") },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/vendor/uPlot.min.css"),
    },
];

/// What the page may load and do: its own scripts, styles, images and API only; no plugins, no
/// framing, no `<base>` games, forms post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The ETag of each asset, computed the first time it is asked for (the bodies are not read before).
fn etag(idx: usize) -> &'static str {
    static ETAGS: OnceLock<Vec<OnceLock<String>>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| ASSETS.iter().map(|_| OnceLock::new()).collect());
    etags[idx].get_or_init(|| format!("\"{:016x}\"", fnv1a(ASSETS[idx].body)))
}

/// FNV-1a, 64 bits: enough to tell versions of a file apart, and stable across builds and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// `GET /`: the dashboard.
pub(crate) async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// `GET /ui/`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("", &headers)
}

/// `GET /ui/{*path}`: its scripts, styles and images.
pub(crate) async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(idx) = ASSETS.iter().position(|asset| asset.path == path) else {
        let mut response = ApiError(StatusCode::NOT_FOUND, format!("no such file: /ui/{path}")).into_response();
        secure(response.headers_mut());
        return response;
    };
    let asset = &ASSETS[idx];
    let etag = etag(idx);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    // Revalidate every time: the names carry no version, and a 304 on loopback costs nothing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

/// The headers every answer under `/ui/` carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).expect("valid header"));
        }
        serve(path, &headers)
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[test]
    fn every_asset_has_its_type_and_the_security_headers() {
        for (path, content_type) in [
            ("", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
            ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ] {
            let response = get(path, None);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type, "{path}");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache", "{path}");
            let csp = header(&response, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        let missing = get("../Cargo.toml", None);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&missing, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[test]
    fn a_matching_etag_is_answered_with_304_and_no_body() {
        let first = get("app.js", None);
        let etag = header(&first, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = get("app.js", Some(&format!("\"other\", {etag}")));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), etag);
        assert_ne!(get("app.js", Some("\"other\"")).status(), StatusCode::NOT_MODIFIED);
        assert_ne!(header(&get("style.css", None), header::ETAG), etag, "each file its own tag");
    }

    /// The page loads its scripts from files only: an inline script would be refused by the policy
    /// above, and nothing on the page is built from data with `innerHTML`.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for (at, _) in page.match_indices("<script") {
            let tag = &page[at..at + page[at..].find('>').expect("a closed tag")];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(!page.contains("<style") && !page.contains(" style="), "inline style");
        // No event handler attributes (` onclick=`, ` onerror=`, ...).
        for (at, _) in page.match_indices(" on") {
            let name: String = page[at + 1..].chars().take_while(char::is_ascii_alphabetic).collect();
            assert!(!page[at + 1 + name.len()..].starts_with('='), "inline handler {name}");
        }
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js") && !a.path.starts_with("vendor/")) {
            let code = std::str::from_utf8(asset.body).expect("utf-8");
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                assert!(!code.contains(sink), "{} uses {sink}", asset.path);
            }
        }
    }
}
