//! One migration: live while it runs, replayed from the history once it is over.

use leptos::prelude::*;

use crate::components::migration_card::MigrationCard;
use crate::live::{self, Live, MigrationView};
use crate::{Auth, Session, api};

/// The card of migration `id`, with its full series.
#[component]
pub fn MigrationPage(
    /// The migration's id.
    id: String,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let can_operate = session
        .0
        .with_untracked(|a| matches!(a, Auth::SignedIn(me) if me.role.can_operate()));
    let live = Live::start(session);
    // A past migration is not in the live set: replay it from the history.
    let replay = RwSignal::new(None::<Result<RwSignal<MigrationView>, String>>);
    let wanted = id.clone();
    leptos::task::spawn_local(async move {
        let result = api::migration(&wanted).await.map(|d| {
            RwSignal::new(MigrationView {
                migration: d.migration,
                samples: d.samples,
                iterations: d.iterations,
            })
        });
        replay.set(Some(result.map_err(|e| e.to_string())));
    });
    let shown = move || live.migrations.with(|m| live::find(m, &id));
    view! {
        <section class="migration-page">
            {move || match (shown(), replay.get()) {
                (Some(view), _) | (None, Some(Ok(view))) => view! {
                    <div class="cards single"><MigrationCard view=view can_operate=can_operate /></div>
                }.into_any(),
                (None, Some(Err(e))) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                (None, None) => view! { <p class="muted">"Loading…"</p> }.into_any(),
            }}
        </section>
    }
}
