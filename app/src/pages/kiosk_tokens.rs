//! `/kiosk-tokens` (admins): the links wall screens open. A new link is shown once; the
//! server keeps only a hash of it. Revoking one drops its screens within seconds.

use converge_api::{CreatedKioskToken, KioskToken};
use leptos::prelude::*;

use crate::components::error_alert;
use crate::{api, format};

/// Create, list and revoke kiosk links.
#[component]
pub fn KioskTokensPage() -> impl IntoView {
    let tokens = RwSignal::new(Vec::<KioskToken>::new());
    let error = RwSignal::new(None::<String>);
    let created = RwSignal::new(None::<CreatedKioskToken>);
    let label = RwSignal::new(String::new());
    let load = move || {
        leptos::task::spawn_local(async move {
            match api::kiosk_tokens().await {
                Ok(list) => tokens.set(list),
                Err(err) => error.set(Some(err.to_string())),
            }
        });
    };
    load();
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        leptos::task::spawn_local(async move {
            match api::create_kiosk_token(label.get_untracked()).await {
                Ok(new) => {
                    created.set(Some(new));
                    label.set(String::new());
                    error.set(None);
                    load();
                }
                Err(err) => error.set(Some(err.to_string())),
            }
        });
    };
    let revoke = move |id: i64| {
        leptos::task::spawn_local(async move {
            match api::revoke_kiosk_token(id).await {
                Ok(()) => load(),
                Err(err) => error.set(Some(err.to_string())),
            }
        });
    };
    let origin = window().location().origin().unwrap_or_default();

    view! {
        <section class="kiosk-tokens">
            <h1>"Kiosk screens"</h1>
            <p class="muted">"A kiosk link opens the read-only NOC board on a wall screen without a password. Revoke it and the screen drops off within seconds."</p>
            <form class="inline-form" on:submit=create>
                <label>"Screen " <input name="label" placeholder="NOC wall, left" maxlength="64" required
                    prop:value=move || label.get() on:input=move |ev| label.set(event_target_value(&ev)) /></label>
                <button type="submit">"Create link"</button>
            </form>
            {error_alert(error)}
            {move || created.get().map(|c| {
                let link = format!("{origin}{}", c.path);
                view! {
                    <div class="created-link" data-testid="kiosk-link">
                        <p><b>"Open this on the screen \"" {c.token.label} "\". It is shown only now:"</b></p>
                        <code>{link}</code>
                    </div>
                }
            })}
            <table data-testid="kiosk-tokens">
                <thead><tr><th>"Screen"</th><th>"Created"</th><th>"Last used"</th><th>"Status"</th><th></th></tr></thead>
                <tbody>
                    {move || tokens.get().into_iter().map(|t| {
                        let id = t.id;
                        let live = t.revoked_at_ms.is_none();
                        let row = t.label.clone();
                        view! {
                            <tr data-token=row>
                                <td>{t.label}</td>
                                <td>{format::clock(t.created_at_ms)} " by " {t.created_by}</td>
                                <td>{t.last_used_at_ms.map(format::clock).unwrap_or_else(|| "never".into())}</td>
                                <td>{match (t.revoked_at_ms, t.expires_at_ms) {
                                    (Some(at), _) => format!("revoked {}", format::clock(at)),
                                    (None, Some(at)) => format!("until {}", format::clock(at)),
                                    (None, None) => "active".into(),
                                }}</td>
                                <td>{live.then(|| view! {
                                    <button class="danger small" data-testid="revoke" on:click=move |_| revoke(id)>"Revoke"</button>
                                })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}
