//! A small history-API router: the dashboard has a handful of pages, which does not
//! justify leptos_router's ~50 KB (brotli) in the bundle.

use leptos::prelude::*;
use wasm_bindgen::JsValue;

/// A page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/login`
    Login,
    /// `/`: hosts, VMs and migrations.
    Fleet,
    /// `/history`: past migrations.
    History,
    /// `/migrations/{id}`: one migration, live or replayed.
    Migration(String),
    /// `/audit`: who did what (admins).
    Audit,
    /// `/kiosk`: the wall-screen board (signs in with `#token=` from the address).
    Kiosk,
    /// `/kiosk-tokens`: the links wall screens open (admins).
    KioskTokens,
    /// `/maintenance`: host drains.
    Maintenance,
    /// Anything else.
    NotFound(String),
}

impl Route {
    /// The route a path names.
    pub fn parse(path: &str) -> Self {
        match path.trim_end_matches('/') {
            "" | "/fleet" => Route::Fleet,
            "/login" => Route::Login,
            "/history" => Route::History,
            "/audit" => Route::Audit,
            "/kiosk" => Route::Kiosk,
            "/kiosk-tokens" => Route::KioskTokens,
            "/maintenance" => Route::Maintenance,
            other => match other.strip_prefix("/migrations/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Migration(id.to_owned()),
                _ => Route::NotFound(other.to_owned()),
            },
        }
    }

    /// The path of this route.
    pub fn path(&self) -> String {
        match self {
            Route::Login => "/login".into(),
            Route::Fleet => "/".into(),
            Route::History => "/history".into(),
            Route::Audit => "/audit".into(),
            Route::Kiosk => "/kiosk".into(),
            Route::KioskTokens => "/kiosk-tokens".into(),
            Route::Maintenance => "/maintenance".into(),
            Route::Migration(id) => format!("/migrations/{id}"),
            Route::NotFound(path) => path.clone(),
        }
    }
}

/// Starts tracking the address bar (including back/forward) and returns the current route.
pub fn provide() -> ReadSignal<Route> {
    let (current, set_current) = signal(Route::parse(&location_path()));
    let on_pop = window_event_listener(leptos::ev::popstate, move |_| {
        set_current.set(Route::parse(&location_path()));
    });
    on_cleanup(move || on_pop.remove());
    current
}

/// Goes to `route`, adding a history entry.
pub fn navigate(route: &Route) {
    set(route, |history, path| {
        history.push_state_with_url(&JsValue::NULL, "", Some(path))
    });
}

/// Goes to `route`, replacing the current history entry (for redirects).
pub fn replace(route: &Route) {
    set(route, |history, path| {
        history.replace_state_with_url(&JsValue::NULL, "", Some(path))
    });
}

/// An `on:click` handler for an `<a>` that navigates without reloading the page.
pub fn link(route: Route) -> impl Fn(leptos::ev::MouseEvent) + 'static {
    move |ev| {
        ev.prevent_default();
        navigate(&route);
    }
}

/// Changes the address, then announces it the way the browser announces back/forward, so
/// the one `popstate` listener in [`provide`] is the only writer of the current route.
fn set(route: &Route, change: impl Fn(&web_sys::History, &str) -> Result<(), JsValue>) {
    let window = window();
    if let Ok(history) = window.history()
        && change(&history, &route.path()).is_ok()
        && let Ok(event) = web_sys::PopStateEvent::new("popstate")
    {
        let _ = window.dispatch_event(&event);
    }
}

fn location_path() -> String {
    window()
        .location()
        .pathname()
        .unwrap_or_else(|_| "/".into())
}

#[cfg(test)]
mod tests;
