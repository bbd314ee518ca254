//! The fleet page: hosts, live migration cards, and every VM.

use converge_api::{HostState, Vm, VmState};
use leptos::prelude::*;

use crate::api::StreamState;
use crate::components::migration_card::MigrationCard;
use crate::components::start_dialog::StartDialog;
use crate::live::Live;
use crate::{Auth, Session, format};

/// Hosts with their connection state, migrations as live cards, and the VM table.
#[component]
pub fn FleetPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let can_operate = session
        .0
        .with_untracked(|a| matches!(a, Auth::SignedIn(me) if me.role.can_operate()));
    let live = Live::start(session);
    let loaded = RwSignal::new(false);
    Effect::new(move |_| {
        if !live.hosts.get().is_empty() || live.error.get().is_some() {
            loaded.set(true);
        }
    });
    let migrating = RwSignal::new(None::<Vm>);

    view! {
        <section class="fleet">
            <div class="page-head">
                <h1>"Fleet"</h1>
                <StreamBadge state=live.stream />
            </div>
            {move || live.error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <Show when=move || live.hosts.with(Vec::is_empty)
                fallback=move || view! { <Hosts live=live /> }>
                <div class="empty-state" data-testid="fleet-empty">
                    <h2>"No hosts connected yet"</h2>
                    <p>
                        "Converge shows every libvirt host it is configured for, their VMs, and "
                        "a live card for each migration. Add hosts under [[hosts]] in the "
                        "server's configuration."
                    </p>
                </div>
            </Show>
            <section class="migrations">
                <h2>"Migrations"</h2>
                <Show when=move || !live.migrations.with(|m| m.is_empty())
                    fallback=|| view! { <p class="muted">"No migration is running or recently finished."</p> }>
                    <div class="cards">
                        <For each=move || live.ordered() key=|(id, _)| id.clone()
                            children=move |(_, view)| view! { <MigrationCard view=view can_operate=can_operate /> } />
                    </div>
                </Show>
            </section>
            {move || (!live.vms.with(Vec::is_empty)).then(|| view! {
                <VmTable live=live can_operate=can_operate on_migrate=Callback::new(move |vm| migrating.set(Some(vm))) />
            })}
            {move || migrating.get().map(|vm| view! {
                <StartDialog vm=vm hosts=live.hosts on_close=Callback::new(move |_| migrating.set(None)) />
            })}
        </section>
    }
}

/// "Live" / "Reconnecting…" next to the title.
#[component]
pub fn StreamBadge(state: RwSignal<StreamState>) -> impl IntoView {
    view! {
        <span class=move || format!("stream {}", match state.get() {
            StreamState::Live => "live",
            StreamState::Connecting => "connecting",
            StreamState::Closed => "closed",
        }) data-testid="stream">
            {move || match state.get() {
                StreamState::Live => "● Live",
                StreamState::Connecting => "○ Reconnecting…",
                StreamState::Closed => "○ Disconnected",
            }}
        </span>
    }
}

/// One chip per host.
#[component]
fn Hosts(live: Live) -> impl IntoView {
    view! {
        <ul class="hosts" data-testid="hosts">
            {move || live.hosts.get().into_iter().map(|h| {
                let state = match h.state {
                    HostState::Connected => "connected",
                    HostState::Connecting => "connecting",
                    HostState::Disconnected => "disconnected",
                };
                view! {
                    <li class=format!("host {state}") data-host=h.name.clone()>
                        <span class="host-name">{h.name.clone()}</span>
                        <span class="host-state">{state}</span>
                        <span class="muted">{format!("{} VMs", h.vm_count)}</span>
                        {h.libvirt_version.map(|v| view! { <span class="muted">"libvirt " {v}</span> })}
                        {h.draining.map(|d| view! { <span class="host-draining" data-testid="draining" title=format!("drain {d}: nothing moves into it")>"draining"</span> })}
                        {h.degraded.or(h.error).map(|e| { let title = e.clone(); view! { <span class="host-error" title=title>{e}</span> } })}
                    </li>
                }
            }).collect_view()}
        </ul>
    }
}

/// Every VM, with a migrate button for operators.
#[component]
fn VmTable(live: Live, can_operate: bool, on_migrate: Callback<Vm>) -> impl IntoView {
    view! {
        <section class="vms">
            <h2>"VMs"</h2>
            <table data-testid="vms">
                <thead><tr>
                    <th>"Name"</th><th>"Host"</th><th>"State"</th><th>"Memory"</th><th>"vCPUs"</th><th title="measured while it does not migrate">"Dirty rate"</th>
                    {can_operate.then(|| view! { <th></th> })}
                </tr></thead>
                <tbody>
                    {move || {
                        live.vms.get().into_iter().map(|vm| {
                            let movable = vm.state == VmState::Running && vm.migration_id.is_none();
                            let row = vm.clone();
                            view! {
                                <tr data-vm=vm.name.clone()>
                                    <td>{vm.name.clone() + if vm.nova_managed { " (Nova)" } else { "" }}</td>
                                    <td>{vm.host.clone()}</td>
                                    <td>{vm_state(vm.state, vm.migration_id.is_some())}</td>
                                    <td>{format::bytes(vm.memory_bytes)}</td>
                                    <td>{vm.vcpus}</td>
                                    <td class="dirty">{vm.dirty_rate.map(|r| format::dirty_rate(&r, js_sys::Date::now() as i64))}</td>
                                    {can_operate.then(|| view! {
                                        <td><button class="secondary" data-testid="migrate" disabled=!movable
                                            on:click=move |_| on_migrate.run(row.clone())>"Migrate…"</button></td>
                                    })}
                                </tr>
                            }
                        }).collect_view()
                    }}
                </tbody>
            </table>
        </section>
    }
}

fn vm_state(state: VmState, migrating: bool) -> &'static str {
    match (state, migrating) {
        (VmState::Running, true) | (VmState::Paused, true) => "migrating",
        (VmState::Running, false) => "running",
        (VmState::Paused, false) => "paused",
        (VmState::Incoming, _) => "incoming",
        (VmState::Shutoff, _) => "shut off",
        (VmState::Other, _) => "other",
    }
}
