//! The fleet page: hosts, their VMs and migration cards.

use leptos::prelude::*;

/// Hosts, VMs and migrations. Until the server drives libvirt, it says so plainly.
#[component]
pub fn FleetPage() -> impl IntoView {
    view! {
        <section class="fleet">
            <h1>"Fleet"</h1>
            <div class="empty-state" data-testid="fleet-empty">
                <h2>"No hosts connected yet"</h2>
                <p>
                    "Converge shows every libvirt host it is configured for, their VMs, and "
                    "a live card for each migration. None is configured on this server yet."
                </p>
            </div>
        </section>
    }
}
