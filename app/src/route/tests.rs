//! The router's address grammar: every page's path leads back to that page.

use super::Route;

/// One of each route, with an id shaped like the server's (`m` + hex).
fn every_route() -> Vec<Route> {
    vec![
        Route::Login,
        Route::Fleet,
        Route::History,
        Route::Migration("m6331f2a8c5e000003".into()),
        Route::Audit,
        Route::Kiosk,
        Route::KioskTokens,
        Route::Maintenance,
        Route::NotFound("/no-such-page".into()),
    ]
}

#[test]
fn every_route_round_trips_through_its_path() {
    for route in every_route() {
        let path = route.path();
        assert!(path.starts_with('/'), "{route:?} has path {path:?}");
        assert_eq!(Route::parse(&path), route, "path {path:?}");
    }
}

#[test]
fn paths_are_the_links_the_pages_use() {
    assert_eq!(Route::Fleet.path(), "/");
    assert_eq!(Route::Login.path(), "/login");
    assert_eq!(Route::History.path(), "/history");
    assert_eq!(Route::Audit.path(), "/audit");
    assert_eq!(Route::Kiosk.path(), "/kiosk");
    assert_eq!(Route::KioskTokens.path(), "/kiosk-tokens");
    assert_eq!(Route::Migration("m1".into()).path(), "/migrations/m1");
}

#[test]
fn distinct_routes_have_distinct_paths() {
    let paths: Vec<String> = every_route().iter().map(Route::path).collect();
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn the_fleet_answers_at_the_root_and_its_aliases() {
    // `location.pathname` is never empty in a browser, but "/" trimmed is.
    for path in ["/", "", "//", "/fleet", "/fleet/"] {
        assert_eq!(Route::parse(path), Route::Fleet, "{path:?}");
    }
}

#[test]
fn a_trailing_slash_names_the_same_page() {
    assert_eq!(Route::parse("/login/"), Route::Login);
    assert_eq!(Route::parse("/history/"), Route::History);
    assert_eq!(Route::parse("/audit/"), Route::Audit);
    assert_eq!(Route::parse("/kiosk/"), Route::Kiosk);
    assert_eq!(Route::parse("/kiosk-tokens/"), Route::KioskTokens);
    assert_eq!(
        Route::parse("/migrations/m42/"),
        Route::Migration("m42".into())
    );
}

#[test]
fn a_migration_keeps_its_id() {
    assert_eq!(
        Route::parse("/migrations/m6331f2a8c5e000003"),
        Route::Migration("m6331f2a8c5e000003".into())
    );
    // Not lower-cased, not trimmed of anything but the slash.
    assert_eq!(
        Route::parse("/migrations/M-1_x.y"),
        Route::Migration("M-1_x.y".into())
    );
}

#[test]
fn percent_encoded_ids_are_kept_as_the_address_has_them() {
    // The browser's pathname is percent-encoded; the id goes back into
    // `/api/migrations/{id}` as it came, where the server decodes it once.
    for id in ["a%20b", "a%2Fb", "%E2%9C%93"] {
        let route = Route::parse(&format!("/migrations/{id}"));
        assert_eq!(route, Route::Migration(id.into()));
        assert_eq!(route.path(), format!("/migrations/{id}"));
    }
}

#[test]
fn unknown_paths_are_not_found_with_the_path_as_typed() {
    for path in [
        "/nope",
        "/migrations",
        "/migrations/",
        "/migrations//",
        "/migrations/m1/extra",
        "/migration/m1",
        "/Login",
        "/history/2026",
        "/login.html",
        "/index.html",
        "/kiosk-token",
        "fleet",
    ] {
        let expected = path.trim_end_matches('/');
        assert_eq!(
            Route::parse(path),
            Route::NotFound(expected.into()),
            "{path:?}"
        );
    }
}

#[test]
fn a_not_found_path_is_stable() {
    // What the "Nothing here" page shows is what parse makes of its own path.
    for path in ["/nope", "/nope/", "/a/b/c/", "/migrations/m1/x"] {
        let once = Route::parse(path);
        assert_eq!(Route::parse(&once.path()), once, "{path:?}");
    }
}
