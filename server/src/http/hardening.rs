//! What every response and every state-changing request goes through: the `Host`
//! allow-list (DNS rebinding), the Content-Security-Policy and framing headers, and the
//! cross-site request check (CSRF).
//!
//! Host: a page on `evil.test` whose name an attacker points at this server's address
//! is same-origin with itself, so its requests carry `Host: evil.test` and a matching
//! `Origin` — the CSRF check alone would pass them. Every request whose `Host` is not one
//! this server answers to (`server.allowed_hosts`, the listen address, `localhost`) is
//! refused first, with 421, before a session is read or a file served.
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

use crate::http::error::ApiError;

/// The host names this server answers to, lower-case, each with an optional port.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts(Arc<[(String, Option<u16>)]>);

impl AllowedHosts {
    /// `server.allowed_hosts`, the listen address (unless it is a wildcard) and the
    /// loopback names.
    pub(crate) fn from_config(server: &crate::config::ServerConfig) -> Self {
        let mut hosts: Vec<(String, Option<u16>)> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| ((*h).to_owned(), None))
            .collect();
        let ip = server.listen.ip();
        if !ip.is_unspecified() {
            let name = match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            hosts.push((name, None));
        }
        hosts.extend(server.allowed_hosts.iter().map(|h| split_host(h)));
        Self(hosts.into())
    }

    /// Whether a request with this `Host` value is for us. An entry without a port
    /// accepts any: what rebinding changes is the name, not the port.
    fn admits(&self, host: &str) -> bool {
        let (name, port) = split_host(host);
        self.0
            .iter()
            .any(|(n, p)| *n == name && (p.is_none() || *p == port))
    }
}

/// `name[:port]` as lower-case name (a trailing dot dropped) and port.
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    let (name, port) = match host.rfind(':') {
        // `[::1]` alone has colons inside its brackets only.
        Some(i) if !host[i..].contains(']') => (&host[..i], host[i + 1..].parse().ok()),
        _ => (host, None),
    };
    (name.trim_end_matches('.').to_ascii_lowercase(), port)
}

/// Refuses a request whose `Host` (or, without one, the URI's authority) is not one we
/// answer to.
pub(crate) async fn refuse_foreign_host(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(host) if allowed.admits(&host) => next.run(request).await,
        Some(host) => {
            let shown: String = host.chars().take(80).collect();
            tracing::warn!(host = %shown, path = %request.uri().path(), "request for a foreign host refused");
            ApiError::ForeignHost(format!(
                "this server does not answer to the host \"{shown}\"; use its own address \
                 (an admin can add a name to server.allowed_hosts)"
            ))
            .into_response()
        }
        None => ApiError::BadRequest("the request has no Host header".into()).into_response(),
    }
}

/// Marks every API answer as not to be stored by browsers or proxies: they carry a
/// signed-in user's data (the live stream's `no-cache` included).
pub(crate) async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

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
    fn hosts_are_matched_by_name_and_pinned_ports() {
        let config = crate::config::ServerConfig {
            listen: "10.0.0.9:8080".parse().unwrap(),
            allowed_hosts: vec!["Converge.Example.org".into(), "pinned.example:8443".into()],
            ..Default::default()
        };
        let hosts = AllowedHosts::from_config(&config);
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.9:8080",
            "converge.example.org",
            "CONVERGE.example.org.:443",
            "pinned.example:8443",
        ] {
            assert!(hosts.admits(ok), "{ok}");
        }
        for refused in [
            "evil.test:8080",
            "localhost.evil.test",
            "pinned.example:8080",
            "10.0.0.90:8080",
            "",
        ] {
            assert!(!hosts.admits(refused), "{refused}");
        }
        let wildcard = crate::config::ServerConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Default::default()
        };
        assert!(!AllowedHosts::from_config(&wildcard).admits("0.0.0.0:8080"));
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
