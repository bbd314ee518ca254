//! Mid-flight levers on a migration card, each saying what it will do before it is
//! applied and showing the value libvirt reports after; and abort, with confirmation.

use converge_api::{LeverChange, MigrationState};
use leptos::prelude::*;

use crate::components::{ShowIf, error_alert};
use crate::live::MigrationView;
use crate::{api, format, hints};

/// The levers of one running migration.
#[component]
pub fn Levers(view: RwSignal<MigrationView>) -> impl IntoView {
    let active = move || view.with(|v| v.migration.state == MigrationState::Running);
    let caps = move || {
        view.with(|v| {
            v.migration
                .settings
                .as_ref()
                .map(|s| s.capabilities.clone())
        })
    };
    let xbzrle = move || caps().is_none_or(|c| c.xbzrle_cache_bytes.is_some());
    let postcopy = move || caps().is_none_or(|c| c.postcopy);
    view! {
        <ShowIf when=active>
            <div class="levers" data-testid="levers">
                <Lever view=view name="downtime" label="Downtime limit" unit="ms"
                    make=|v| LeverChange::DowntimeLimit { ms: v } />
                <Lever view=view name="bandwidth" label="Bandwidth" unit="MiB/s"
                    make=|v| LeverChange::Bandwidth { mib_s: v } />
                <ShowIf when=xbzrle>
                    <Lever view=view name="xbzrle" label="xbzrle cache" unit="MiB"
                        make=|v| LeverChange::XbzrleCache { bytes: v.saturating_mul(1 << 20) } />
                </ShowIf>
                <ShowIf when=postcopy><PostCopy view=view /></ShowIf>
            </div>
        </ShowIf>
        <AbortControl view=view />
    }
}

/// One numeric lever: input, the hint for the typed value, Apply, the read-back value.
#[component]
fn Lever(
    view: RwSignal<MigrationView>,
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    make: fn(u64) -> LeverChange,
) -> impl IntoView {
    let value = RwSignal::new(String::new());
    let outcome = RwSignal::new(None::<Result<String, String>>);
    let parsed = move || value.get().trim().parse::<u64>().ok().filter(|v| *v > 0);
    let hint = move || {
        parsed().map(|v| {
            view.with(|m| {
                hints::hint(
                    make(v),
                    &m.migration,
                    hints::dirty_set(&m.migration, &m.iterations),
                )
            })
        })
    };
    let apply = move |_| {
        let Some(v) = parsed() else { return };
        let id = view.with_untracked(|m| m.migration.id.clone());
        outcome.set(None);
        leptos::task::spawn_local(async move {
            let result = api::lever(&id, &make(v)).await;
            outcome.set(Some(match result {
                Ok(r) => Ok(match r.read_back {
                    Some(back) => format!(
                        "libvirt now reports {back} {}",
                        if unit == "MiB" { "bytes" } else { unit }
                    ),
                    None => "applied".into(),
                }),
                Err(e) => Err(e.to_string()),
            }));
        });
    };
    view! {
        <div class="lever" data-lever=name>
            <label class="field">
                <span>{label} " (" {unit} ")"</span>
                <input inputmode="numeric" bind:value=value name=name />
            </label>
            <button class="secondary" on:click=apply disabled=move || parsed().is_none()>"Apply"</button>
            {move || hint().map(|h| view! { <p class="hint">{h}</p> })}
            {move || outcome.get().map(|o| match o {
                Ok(t) => view! { <p class="hint ok" data-testid="lever-ok">{t}</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            })}
        </div>
    }
}

/// Switch to post-copy, with its consequences spelled out.
#[component]
fn PostCopy(view: RwSignal<MigrationView>) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let hint = move || view.with(|m| hints::hint(LeverChange::PostCopy, &m.migration, None));
    let switch = move |_| {
        let id = view.with_untracked(|m| m.migration.id.clone());
        leptos::task::spawn_local(async move {
            if let Err(e) = api::lever(&id, &LeverChange::PostCopy).await {
                error.set(Some(e.to_string()));
            }
        });
    };
    view! {
        <div class="lever" data-lever="postcopy">
            <button class="secondary" data-testid="postcopy" on:click=switch>"Switch to post-copy"</button>
            <p class="hint">{hint}</p>
            {error_alert(error)}
        </div>
    }
}

/// Abort, with a confirmation step.
#[component]
fn AbortControl(view: RwSignal<MigrationView>) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let abort = move |_| {
        let id = view.with_untracked(|v| v.migration.id.clone());
        pending.set(true);
        leptos::task::spawn_local(async move {
            match api::abort_migration(&id).await {
                Ok(_) => confirming.set(false),
                Err(err) => error.set(Some(err.to_string())),
            }
            pending.set(false);
        });
    };
    let active = move || view.with(|v| v.migration.state.is_active());
    view! {
        <ShowIf when=active>
            <div class="controls">
                <ShowIf when=move || confirming.get()
                    fallback=move || view! {
                        <button class="danger" data-testid="abort" on:click=move |_| confirming.set(true)>"Abort…"</button>
                    }>
                    <span class="confirm">
                        {move || format!("Abort the migration of {}? It keeps running on {}.",
                            view.with(|v| v.migration.vm_name.clone()),
                            view.with(|v| v.migration.source.clone()))}
                    </span>
                    <button class="danger" data-testid="abort-confirm" on:click=abort disabled=move || pending.get()>"Abort migration"</button>
                    <button class="secondary" on:click=move |_| confirming.set(false)>"Keep going"</button>
                </ShowIf>
                {error_alert(error)}
            </div>
        </ShowIf>
    }
}

/// "aborts in 3 min 12 s (completion timeout)".
pub fn countdown(view: &MigrationView, now_ms: i64) -> Option<String> {
    let d = view.migration.deadline.as_ref()?;
    let what = match d.action {
        converge_api::TimeoutAction::Abort => "aborts",
        converge_api::TimeoutAction::PostCopy => "switches to post-copy",
        converge_api::TimeoutAction::Pause => "pauses the guest",
    };
    let left = u64::try_from(d.at_ms - now_ms).unwrap_or(0);
    Some(format!(
        "{what} in {} ({} timeout)",
        format::duration_ms(left),
        d.kind
    ))
}

#[cfg(test)]
mod tests;
