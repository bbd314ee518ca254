//! Every `/api` route, in one table.
//!
//! Who may call a route is decided by its handler's extractors (`Require<P>` for a
//! permission from [`crate::auth::allows`], `Principal` for anyone signed in, nothing
//! for the few public routes); this table is where routes are added, and [`ROUTES`]
//! lets the authorization matrix test walk all of them: a route added here without a
//! row in that test fails it.

use axum::Router;
use axum::routing::{delete, get, patch, post};
use converge_api::paths;

use super::state::AppState;
use super::{audit, auth, drains, events, health, hosts, kiosk, migrations, tenant};

/// One route: its method and its path under `/api`, as axum spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// The path under `/api`, with `{name}` for a path parameter.
    pub path: &'static str,
}

macro_rules! routes {
    ($($method:ident $path:ident => $handler:path;)*) => {
        /// Every `/api` route the server answers.
        pub const ROUTES: &[Route] = &[
            $(Route {
                method: method_name(stringify!($method)),
                path: paths::under_prefix(paths::$path),
            },)*
        ];

        /// The `/api` router, built from the same table.
        pub(crate) fn api() -> Router<AppState> {
            Router::new()
                $(.route(paths::under_prefix(paths::$path), $method($handler)))*
        }
    };
}

// Only ever evaluated in `ROUTES`'s constant: a method missing here fails the build.
#[expect(
    clippy::panic,
    reason = "const evaluation: a compile error, never a runtime panic"
)]
const fn method_name(routing_fn: &'static str) -> &'static str {
    match routing_fn.as_bytes() {
        b"get" => "GET",
        b"post" => "POST",
        b"patch" => "PATCH",
        b"delete" => "DELETE",
        _ => panic!("add the method to method_name"),
    }
}

// The paths are `converge_api::paths`, which the dashboard requests too.
routes! {
    get HEALTH => health::health;
    post LOGIN => auth::login;
    post LOGOUT => auth::logout;
    get ME => auth::me;
    get EVENTS => events::events;
    get HOSTS => hosts::hosts;
    get VMS => hosts::vms;
    get MIGRATIONS => migrations::list;
    post MIGRATIONS => migrations::start;
    get MIGRATION => migrations::detail;
    patch MIGRATION => migrations::lever;
    post MIGRATION_ABORT => migrations::abort;
    get HISTORY => migrations::history;
    get PRESETS => migrations::list_presets;
    get AUDIT => audit::list_entries;
    get KIOSK_TOKENS => kiosk::list;
    post KIOSK_TOKENS => kiosk::create;
    delete KIOSK_TOKEN => kiosk::revoke;
    post KIOSK_SESSION => kiosk::sign_in;
    get TENANT_VMS => tenant::list;
    get TENANT_VM => tenant::detail;
    get DRAINS => drains::list;
    post DRAINS => drains::create;
    get DRAIN => drains::detail;
    post DRAIN_PAUSE => drains::pause;
    post DRAIN_RESUME => drains::resume;
    post DRAIN_CANCEL => drains::cancel;
    post DRAIN_VM => drains::item;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_is_listed_twice() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(!ROUTES[i + 1..].contains(a), "{a:?} is listed twice");
        }
    }
}
