//! The dashboard's files: precompressed variants, client-side routes, cache headers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::support::TestApp;

const INDEX: &str = "<!doctype html><title>Converge</title>";
const APP_JS: &str = "converge-app-0123456789abcdef.js";

async fn app_with_dist() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("index.html"), INDEX).unwrap();
    std::fs::write(dist.join("index.html.br"), b"brotli bytes of index").unwrap();
    std::fs::write(dist.join(APP_JS), "export default 1;").unwrap();
    std::fs::write(dist.join(format!("{APP_JS}.gz")), b"gzip bytes of js").unwrap();
    TestApp::in_dir(Arc::new(dir), "").await
}

async fn get_with(app: &TestApp, path: &str, accept_encoding: &str) -> crate::support::Reply {
    app.send(
        Request::get(path)
            .header(header::ACCEPT_ENCODING, accept_encoding)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn client_routes_get_index_html_revalidated_on_each_load() {
    let app = app_with_dist().await;
    for path in ["/", "/login", "/fleet", "/migrations/7"] {
        let reply = get_with(&app, path, "identity").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.text(), INDEX, "{path}");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-cache", "{path}");
    }
}

#[tokio::test]
async fn precompressed_files_are_served_with_vary() {
    let app = app_with_dist().await;
    let reply = get_with(&app, "/fleet", "br, gzip").await;
    assert_eq!(reply.headers[header::CONTENT_ENCODING], "br");
    assert_eq!(reply.body, b"brotli bytes of index");
    assert_eq!(reply.headers[header::VARY], "accept-encoding");

    let reply = get_with(&app, &format!("/{APP_JS}"), "gzip").await;
    assert_eq!(reply.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(reply.body, b"gzip bytes of js");
    assert_eq!(reply.headers[header::VARY], "accept-encoding");
}

#[tokio::test]
async fn hashed_assets_are_cached_for_good() {
    let app = app_with_dist().await;
    let reply = get_with(&app, &format!("/{APP_JS}"), "identity").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "export default 1;");
    assert_eq!(
        reply.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn a_missing_asset_is_a_404_not_the_dashboard() {
    let app = app_with_dist().await;
    let reply = get_with(&app, "/converge-app-ffffffffffffffff.js", "identity").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_ne!(reply.text(), INDEX);
}
