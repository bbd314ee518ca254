//! What every response and every state-changing request goes through: the
//! Content-Security-Policy and framing headers, and the cross-site request check (CSRF).
//!
//! CSRF: session cookies are `SameSite=Strict`, and every state-changing route reads JSON
//! (which a cross-site HTML form cannot send without a CORS preflight that nothing here
//! answers). On top of that, a request that is not GET/HEAD/OPTIONS is refused when the
//! browser says it came from another site: `Sec-Fetch-Site` other than `same-origin` or
//! `none`, or an `Origin` that is neither the `Host` it was sent to nor a configured
//! allowed origin. Clients that send neither header (curl, scripts) are not browsers
//! and carry no ambient cookie, so they pass.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Origins allowed besides the request's own `Host`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedOrigins(pub(crate) Arc<[String]>);

/// Refuses a state-changing request a browser made from another site.
pub(crate) async fn refuse_cross_site(
    State(allowed): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && let Err(why) = same_site(request.headers(), &allowed.0) {
        tracing::warn!(method = %request.method(), path = %request.uri().path(), %why, "cross-site request refused");
        return ApiError::CrossSite(why).into_response();
    }
    next.run(request).await
}

/// `Ok` unless the headers show the request came from another site.
fn same_site(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)"))
    };
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(format!(
            "refused: this request came from another site (Sec-Fetch-Site: {site}); \
             use Converge's own pages"
        ));
    }
    let Some(origin) = text("origin") else {
        return Ok(());
    };
    let own = text("host").is_some_and(|host| {
        let without_scheme = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        without_scheme.is_some_and(|o| o.eq_ignore_ascii_case(host))
    });
    if own || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(format!(
            "refused: this request came from {origin}, not from Converge's own pages \
             (an admin can allow an origin in server.allowed_origins)"
        ))
    }
}

/// The policy for the dashboard's current `index.html`, recomputed when the file changes:
/// the inline bootstrap's hash changes with every build, and a release dropped into
/// `dist/` is served at once (see `web.rs`), so its policy must follow at once too.
#[derive(Debug)]
pub(crate) struct Policy {
    index: PathBuf,
    current: Mutex<(Option<SystemTime>, HeaderValue)>,
}

impl Policy {
    pub(crate) fn new(index: PathBuf) -> Self {
        Self {
            index,
            current: Mutex::new((None, content_security_policy(None))),
        }
    }

    /// The policy for the `index.html` on disk now.
    pub(crate) fn current(&self) -> HeaderValue {
        let modified = std::fs::metadata(&self.index)
            .and_then(|m| m.modified())
            .ok();
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != modified || modified.is_none() {
            let html = std::fs::read_to_string(&self.index).ok();
            *current = (modified, content_security_policy(html.as_deref()));
        }
        current.1.clone()
    }
}

/// The Content-Security-Policy for the dashboard in `index_html`: only its own files, the
/// one inline bootstrap script Trunk writes (by hash), wasm compilation, and requests to
/// itself; no framing.
pub(crate) fn content_security_policy(index_html: Option<&str>) -> HeaderValue {
    let hashes: String = index_html
        .map(inline_scripts)
        .unwrap_or_default()
        .iter()
        .map(|script| {
            let digest = Sha256::digest(script.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    let policy = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
}

/// The bodies of `<script>` elements without a `src`.
fn inline_scripts(html: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body_and_more = &after[tag_end + 1..];
        let Some(close) = body_and_more.find("</script>") else {
            break;
        };
        if !tag.contains("src=") {
            found.push(&body_and_more[..close]);
        }
        rest = &body_and_more[close..];
    }
    found
}

/// Adds the security headers every response carries (unless the handler set its own).
pub(crate) fn with_security_headers(mut response: Response, csp: HeaderValue) -> Response {
    {
        let headers = response.headers_mut();
        let defaults = [
            (header::CONTENT_SECURITY_POLICY, csp.clone()),
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
                header::HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ];
        for (name, value) in defaults {
            headers.entry(name).or_insert(value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn own_origin_and_headerless_clients_pass() {
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_site(&own, &[]).is_ok());
        assert!(same_site(&headers(&[("host", "127.0.0.1:8080")]), &[]).is_ok());
    }

    #[test]
    fn another_site_is_refused_by_either_header() {
        let foreign_origin = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.test")]);
        let why = same_site(&foreign_origin, &[]).unwrap_err();
        assert!(why.contains("http://evil.test"), "{why}");
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(same_site(&cross, &[]).is_err());
        let same_site_other_port = headers(&[("sec-fetch-site", "same-site")]);
        assert!(same_site(&same_site_other_port, &[]).is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(same_site(&null, &[]).is_err());
    }

    #[test]
    fn a_configured_origin_passes() {
        let proxied = headers(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "https://converge.example.org"),
        ]);
        assert!(same_site(&proxied, &["https://converge.example.org".into()]).is_ok());
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_bootstrap() {
        let html = "<html><script type=module>import init from '/a.js';</script>\
                    <script src=/x.js></script><script>second()</script></html>";
        assert_eq!(
            inline_scripts(html),
            ["import init from '/a.js';", "second()"]
        );
        let csp = content_security_policy(Some(html));
        let csp = csp.to_str().unwrap();
        let expected = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(b"import init from '/a.js';"));
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}
