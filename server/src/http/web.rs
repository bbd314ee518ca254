//! The dashboard's static files: precompressed, cached by content hash, and `index.html`
//! for every client-side route.

use std::convert::Infallible;
use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;

use crate::http::error::ApiError;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_http::services::{ServeDir, ServeFile};

/// A cloneable service answering every non-API path.
pub(crate) type StaticService = BoxCloneSyncService<Request, Response<Body>, Infallible>;

/// Serves `dist` with `.br` / `.gz` siblings when the client accepts them. A path without a
/// file extension that matches no file is a client-side route and gets `index.html`; a
/// missing file with an extension is a plain 404, so a broken asset link shows as one.
pub(crate) fn service(dist: &Path) -> StaticService {
    let index = ServeFile::new(dist.join("index.html"))
        .precompressed_br()
        .precompressed_gzip();
    let spa_fallback = tower::service_fn(move |request: Request| {
        let index = index.clone();
        async move {
            if has_extension(request.uri().path()) {
                return Ok::<_, Infallible>((StatusCode::NOT_FOUND, "not found").into_response());
            }
            Ok(index.oneshot(request).await?.map(Body::new))
        }
    });
    let files = ServeDir::new(dist)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(spa_fallback);
    BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
        let files = files.clone();
        async move {
            let path = request.uri().path().to_owned();
            // `/api/` (and anything under it the API router did not take, whatever the
            // method) is an API path, not a file or a client-side route.
            let prefix = converge_api::paths::PREFIX;
            if path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            {
                return Ok(ApiError::NotFound("no such API route".into()).into_response());
            }
            let immutable = is_hashed_asset(&path);
            let mut response = files.oneshot(request).await?.map(Body::new);
            // A path the file system cannot even look up (a name over 255 bytes, a NUL) is
            // no file: not found, not a server fault.
            if response.status().is_server_error() {
                tracing::debug!(path = %path.chars().take(80).collect::<String>(), status = %response.status(), "static file lookup failed");
                response = (StatusCode::NOT_FOUND, "not found").into_response();
            }
            let cache = if immutable && response.status().is_success() {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            Ok(response)
        }
    }))
}

fn has_extension(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.contains('.'))
}

/// Trunk names the assets it builds `name-<hex content hash>[_bg].ext`: those never change
/// and may be cached for good. Everything else (`index.html`, client routes, copied files)
/// is revalidated on each load, so a new release is picked up at once.
fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        (8..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_routes_have_no_extension() {
        assert!(!has_extension("/"));
        assert!(!has_extension("/fleet"));
        assert!(!has_extension("/migrations/42"));
        assert!(has_extension("/converge-app-0123456789abcdef.js"));
        assert!(has_extension("/assets/logo.svg"));
    }

    #[test]
    fn only_content_hashed_names_are_immutable() {
        assert!(is_hashed_asset("/converge-app-0123456789abcdef.js"));
        assert!(is_hashed_asset("/converge-app-0123456789abcdef_bg.wasm"));
        assert!(is_hashed_asset("/main-3c1f00aa77d21b09.css"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/favicon.svg"));
        assert!(!is_hashed_asset("/fleet"));
        assert!(!is_hashed_asset("/converge-app.js"));
    }
}
