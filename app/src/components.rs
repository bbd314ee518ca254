//! Pieces shared by several pages.

pub mod chart;
pub mod header;
pub mod levers;
pub mod migration_card;
pub mod start_dialog;

use leptos::either::Either;
use leptos::prelude::*;

/// The message in `error`, while there is one, as an alert: every page's error line.
pub fn error_alert(error: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        error
            .get()
            .map(|e| view! { <p class="error" role="alert">{e}</p> })
    }
}

/// [`Show`], with one copy of its code in the bundle however often it is used: `Show` is
/// generic over its condition and its children, so each use compiles its own copy; here
/// the condition is a [`Signal`] and the children are boxed.
#[component]
pub fn ShowIf(
    /// The children are shown while this is `true`; they are rebuilt only when it changes.
    #[prop(into)]
    when: Signal<bool>,
    children: ChildrenFn,
    /// Shown instead; nothing by default.
    #[prop(optional, into)]
    fallback: ViewFn,
) -> impl IntoView {
    let shown = ArcMemo::new(move |_| when.get());
    move || match shown.get() {
        true => Either::Left(children()),
        false => Either::Right(fallback.run()),
    }
}
