//! The web dashboard: static assets embedded in the binary (nothing from the internet, no
//! build step), talking to the JSON API with the operator's token. See docs/dashboard.md.
//!
//! The page keeps the token in the tab's session storage and sends it as a bearer header, so
//! there is no cookie for another site to ride on (no CSRF surface). Every answer carries a
//! strict Content-Security-Policy (same origin only, no inline script or style), refuses
//! framing and MIME sniffing, and is revalidated on each load (`no-cache`), so an upgraded hub
//! serves its new dashboard at once.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const ICON_SVG: &str = include_str!("dashboard/icon.svg");

/// The Content-Security-Policy of every dashboard answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The dashboard's routes: `/` (the page) and its assets under `/ui/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

/// The headers every dashboard answer carries (besides its content type).
pub fn security_headers() -> [(HeaderName, HeaderValue); 7] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        security_headers(),
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_assets() {
        for tag in INDEX_HTML.split("<script").skip(1) {
            let open = &tag[..tag.find('>').expect("tag end")];
            assert!(open.contains("src=\"/ui/"), "inline script: <script{open}>");
        }
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains(" style="), "inline style attribute");
        for (i, _) in INDEX_HTML.match_indices(" on") {
            let name: String = INDEX_HTML[i + 1..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            assert!(
                !INDEX_HTML[i + 1 + name.len()..].starts_with('='),
                "inline event handler {name}"
            );
        }
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{name} names {scheme}");
            }
        }
    }

    #[test]
    fn data_never_goes_through_html_parsing() {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(bad), "app.js uses {bad}");
        }
    }

    #[test]
    fn every_answer_is_framed_out_and_revalidated() {
        let r = asset("text/css; charset=utf-8", APP_CSS);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/css; charset=utf-8");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
