//! Converge's dashboard: Leptos (client-side rendered) compiled to WebAssembly.
//!
//! [`App`] decides between the sign-in page and the signed-in pages; every request to
//! the server goes through [`api`]; [`route`] is a small history-based router.

pub mod api;
pub mod components;
pub mod format;
pub mod hints;
pub mod live;
pub mod pages;
pub mod route;

use converge_api::{Me, Role};
use leptos::prelude::*;

use components::header::Header;
use pages::audit::AuditPage;
use pages::fleet::FleetPage;
use pages::history::HistoryPage;
use pages::kiosk::KioskPage;
use pages::kiosk_tokens::KioskTokensPage;
use pages::login::LoginPage;
use pages::maintenance::MaintenancePage;
use pages::migration::MigrationPage;
use pages::tenant::TenantPage;
use route::Route;

/// Where the dashboard stands with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Still asking the server who we are.
    Checking,
    /// No session: show the sign-in page.
    SignedOut {
        /// Why, when it is news to the user (e.g. "your session has ended").
        notice: Option<String>,
    },
    /// Signed in as this user.
    SignedIn(Me),
}

/// Shared handle on the sign-in state, provided as context to every page.
#[derive(Debug, Clone, Copy)]
pub struct Session(pub RwSignal<Auth>);

impl Session {
    /// Go back to the sign-in page, saying why.
    pub fn end(&self, notice: Option<String>) {
        self.0.set(Auth::SignedOut { notice });
    }
}

/// The whole dashboard.
#[component]
pub fn App() -> impl IntoView {
    let auth = RwSignal::new(Auth::Checking);
    let session = Session(auth);
    provide_context(session);
    let route = route::provide();

    // Who are we? A still-valid session cookie skips the sign-in page. (The wall board
    // signs itself in.)
    let on_board = Memo::new(move |_| route.get() == Route::Kiosk);
    if !on_board.get_untracked() {
        leptos::task::spawn_local(async move {
            auth.set(match api::me().await {
                Ok(me) => Auth::SignedIn(me),
                Err(_) => Auth::SignedOut { notice: None },
            });
        });
    }
    watch_session(session);
    redirect_by_session(auth, route);

    view! {
        // The wall screen signs itself in, with the token in its address, and stays one
        // page through every change of its session.
        {move || if on_board.get() { view! { <KioskPage /> }.into_any() } else { signed_in_pages(auth, route) }}
    }
}

fn signed_in_pages(auth: RwSignal<Auth>, route: ReadSignal<Route>) -> AnyView {
    view! {
        {move || match auth.get() {
            Auth::Checking => view! { <p class="loading">"Connecting to Converge…"</p> }.into_any(),
            Auth::SignedOut { notice } => view! { <LoginPage notice=notice /> }.into_any(),
            Auth::SignedIn(me) if me.role == Role::Kiosk => view! { <KioskPage /> }.into_any(),
            Auth::SignedIn(me) if me.role == Role::Tenant => {
                let projects = me.projects.clone();
                view! {
                    <Header me=me />
                    <main><TenantPage projects=projects /></main>
                }.into_any()
            }
            Auth::SignedIn(me) => {
                view! {
                    <Header me=me />
                    <main>{move || match route.get() {
                        Route::Fleet | Route::Login | Route::Kiosk => view! { <FleetPage /> }.into_any(),
                        Route::KioskTokens => view! { <KioskTokensPage /> }.into_any(),
                        Route::History => view! { <HistoryPage /> }.into_any(),
                        Route::Maintenance => view! { <MaintenancePage /> }.into_any(),
                        Route::Audit => view! { <AuditPage /> }.into_any(),
                        Route::Migration(id) => view! { <MigrationPage id=id /> }.into_any(),
                        Route::NotFound(path) => view! {
                            <section class="empty-state">
                                <h1>"Nothing here"</h1>
                                <p>"There is no page at " <code>{path}</code> "."</p>
                                <a href="/" on:click=route::link(Route::Fleet)>"Go to the fleet"</a>
                            </section>
                        }.into_any(),
                    }}</main>
                }.into_any()
            }
        }}
    }
    .into_any()
}

/// Keeps the address bar honest: `/login` while signed out, and back to the page the
/// user first asked for once signed in.
fn redirect_by_session(auth: RwSignal<Auth>, route: ReadSignal<Route>) {
    let wanted = StoredValue::new(Route::Fleet);
    Effect::new(move |_| match (auth.get(), route.get()) {
        (Auth::SignedOut { .. }, current) if current != Route::Login && current != Route::Kiosk => {
            wanted.set_value(current);
            route::replace(&Route::Login);
        }
        (Auth::SignedIn(_), Route::Login) => {
            route::replace(&wanted.get_value());
            wanted.set_value(Route::Fleet);
        }
        _ => {}
    });
}

/// Notices a session that ended elsewhere (signed out in another tab, expired, revoked):
/// re-checks when the tab regains focus and once a minute, and returns to sign-in.
fn watch_session(session: Session) {
    let check = move || {
        if matches!(session.0.get_untracked(), Auth::SignedIn(_)) {
            leptos::task::spawn_local(async move {
                if let Err(api::ApiError::Unauthenticated(message)) = api::me().await {
                    session.end(Some(message));
                }
            });
        }
    };
    let on_focus = window_event_listener(leptos::ev::focus, move |_| check());
    let every_minute = set_interval_with_handle(check, std::time::Duration::from_secs(60));
    on_cleanup(move || {
        on_focus.remove();
        if let Ok(handle) = every_minute {
            handle.clear();
        }
    });
}
