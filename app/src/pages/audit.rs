//! The audit log (admins): who did what, when, from where, and how it went.

use converge_api::AuditEntry;
use leptos::prelude::*;

use crate::{api, format};

/// Newest entries first.
#[component]
pub fn AuditPage() -> impl IntoView {
    let rows = RwSignal::new(None::<Result<Vec<AuditEntry>, String>>);
    leptos::task::spawn_local(async move {
        rows.set(Some(api::audit().await.map_err(|e| e.to_string())));
    });
    view! {
        <section class="audit">
            <h1>"Audit log"</h1>
            {move || match rows.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(list)) => view! {
                    <table data-testid="audit">
                        <thead><tr>
                            <th>"When"</th><th>"Who"</th><th>"From"</th><th>"Action"</th>
                            <th>"VM"</th><th>"Details"</th><th>"Result"</th>
                        </tr></thead>
                        <tbody>{list.into_iter().map(|e| view! {
                            <tr>
                                <td>{format::clock(e.at_ms)}</td>
                                <td>{e.actor}</td>
                                <td>{e.client_addr.unwrap_or_default()}</td>
                                <td>{e.action}</td>
                                <td>{e.vm.unwrap_or_default()}</td>
                                <td>{e.details}</td>
                                <td>{e.result}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}
