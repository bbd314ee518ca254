//! Past migrations, newest first, each opening its replay.

use converge_api::{Migration, MigrationState};
use leptos::prelude::*;

use crate::components::migration_card::state_label;
use crate::route::{self, Route};
use crate::{api, format};

/// Every recorded migration with its outcome.
#[component]
pub fn HistoryPage() -> impl IntoView {
    let rows = RwSignal::new(None::<Result<Vec<Migration>, String>>);
    leptos::task::spawn_local(async move {
        rows.set(Some(api::history().await.map_err(|e| e.to_string())));
    });
    view! {
        <section class="history">
            <h1>"History"</h1>
            {move || match rows.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(list)) if list.is_empty() => view! {
                    <p class="muted">"No migration has been recorded yet."</p>
                }.into_any(),
                Some(Ok(list)) => view! {
                    <table data-testid="history">
                        <thead><tr>
                            <th>"VM"</th><th>"Route"</th><th>"Preset"</th><th>"Outcome"</th>
                            <th>"Took"</th><th>"Pause"</th><th>"Sent"</th><th>"By"</th><th>"Started"</th>
                        </tr></thead>
                        <tbody>{list.into_iter().map(row).collect_view()}</tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}

fn row(m: Migration) -> impl IntoView {
    let f = m.final_stats.clone().unwrap_or_default();
    let took = f.total_time_ms.or_else(|| {
        m.ended_at_ms
            .map(|e| u64::try_from(e - m.started_at_ms).unwrap_or(0))
    });
    let outcome = match (&m.state, &m.error) {
        (MigrationState::Completed, _) => state_label(m.state).to_owned(),
        (_, Some(e)) => format!("{}: {e}", state_label(m.state)),
        _ => state_label(m.state).to_owned(),
    };
    let advice: Vec<String> = m
        .advice_log
        .iter()
        .filter_map(format::advice_outcome)
        .collect();
    let target = Route::Migration(m.id.clone());
    view! {
        <tr data-migration=m.id.clone()>
            <td><a href=target.path() on:click=route::link(target.clone())>{m.vm_name.clone()}</a></td>
            <td>{format!("{} → {}", m.source, m.destination.clone().unwrap_or_else(|| "?".into()))}</td>
            <td>{format::preset(m.preset.as_deref(), m.settings_changed.as_deref())}</td>
            <td class=format!("outcome-{}", if m.state == MigrationState::Completed { "ok" } else { "bad" })>{outcome}
                {(!advice.is_empty()).then(|| view! { <div class="muted" data-testid="advice-applied">{advice.join("; ")}</div> })}</td>
            <td>{took.map(format::duration_ms).unwrap_or_else(|| "–".into())}</td>
            <td>{f.downtime_ms.map(format::duration_ms).unwrap_or_else(|| "–".into())}</td>
            <td>{f.data_sent_bytes.map(format::bytes).unwrap_or_else(|| "–".into())}</td>
            <td>{m.started_by.clone().unwrap_or_else(|| "found running".into())}</td>
            <td>{format::clock(m.started_at_ms)}</td>
        </tr>
    }
}
