//! The sign-in page.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;

use crate::components::error_alert;
use crate::{Auth, Session, api};

/// Username and password form; on success the session state switches to signed in.
#[component]
pub fn LoginPage(
    /// Shown above the form, e.g. why the previous session ended.
    notice: Option<String>,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        error.set(None);
        let (user, pass) = (username.get_untracked(), password.get_untracked());
        leptos::task::spawn_local(async move {
            match api::login(user, pass).await {
                Ok(me) => session.0.set(Auth::SignedIn(me)),
                Err(err) => {
                    password.set(String::new());
                    error.set(Some(err.to_string()));
                }
            }
            pending.set(false);
        });
    };

    view! {
        <main class="login">
            <form class="login-card" on:submit=submit>
                <h1>"Converge"</h1>
                <p class="tagline">"Live migrations you can see and steer"</p>
                {notice.map(|text| view! { <p class="notice" role="status">{text}</p> })}
                <label>
                    "Username"
                    <input name="username" autocomplete="username" required autofocus
                        bind:value=username />
                </label>
                <label>
                    "Password"
                    <input name="password" type="password" autocomplete="current-password" required
                        bind:value=password />
                </label>
                {error_alert(error)}
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
