//! The bar at the top of every signed-in page.

use converge_api::{Me, Role};
use leptos::prelude::*;

use crate::route::{self, Route};
use crate::{Session, api};

/// Product name, the signed-in user and their role, and sign-out.
#[component]
pub fn Header(
    /// Who is signed in.
    me: Me,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let signing_out = RwSignal::new(false);
    let sign_out = move |_| {
        signing_out.set(true);
        leptos::task::spawn_local(async move {
            // Whatever the server says, this browser no longer holds a usable session:
            // a 401 means it had already ended.
            let _ = api::logout().await;
            session.end(None);
        });
    };
    let role = me.role.as_str();
    view! {
        <header class="top">
            <a class="brand" href="/" on:click=route::link(Route::Fleet)>"Converge"</a>
            <nav>
                {if me.role == Role::Tenant {
                    view! { <a href="/" on:click=route::link(Route::Fleet)>"Your VMs"</a> }.into_any()
                } else {
                    view! {
                        <a href="/" on:click=route::link(Route::Fleet)>"Fleet"</a>
                        <a href="/maintenance" on:click=route::link(Route::Maintenance)>"Maintenance"</a>
                        <a href="/history" on:click=route::link(Route::History)>"History"</a>
                    }.into_any()
                }}
                {(me.role == Role::Admin).then(|| view! {
                    <a href="/audit" on:click=route::link(Route::Audit)>"Audit"</a>
                    <a href="/kiosk-tokens" on:click=route::link(Route::KioskTokens)>"Kiosk screens"</a>
                })}
            </nav>
            <span class="who">
                <span class="username" data-testid="username">{me.username}</span>
                <span class=format!("role role-{role}")>{role}</span>
            </span>
            <button class="sign-out" on:click=sign_out disabled=move || signing_out.get()>
                "Sign out"
            </button>
        </header>
    }
}
