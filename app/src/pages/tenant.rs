//! A tenant's status page: their projects' VMs and any move of them, in plain words.
//! Everything shown comes from the tenant endpoints, which carry no hosts and nothing of
//! other projects; there are no controls.

use std::rc::Rc;

use converge_api::{LiveEvent, MigrationState, TenantMove, TenantVm, VmState};
use leptos::prelude::*;

use crate::api::{self, ApiError, StreamState};
use crate::components::error_alert;
use crate::live::follow_events;
use crate::pages::fleet::StreamBadge;
use crate::{Session, format};

/// The tenant's VMs, kept current by the event stream.
#[component]
pub fn TenantPage(
    /// The tenant's projects, from `/api/me`.
    projects: Vec<String>,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let vms = RwSignal::new(None::<Vec<TenantVm>>);
    let error = RwSignal::new(None::<String>);
    let stream = RwSignal::new(StreamState::Connecting);
    let load = move || {
        leptos::task::spawn_local(async move {
            match api::tenant_vms().await {
                Ok(list) => {
                    vms.set(Some(list));
                    error.set(None);
                }
                Err(ApiError::Unauthenticated(message)) => session.end(Some(message)),
                Err(err) => error.set(Some(err.to_string())),
            }
        });
    };
    let on_event = move |event: LiveEvent| match event {
        LiveEvent::Tenant(vm) => vms.update(|list| {
            if let Some(list) = list {
                match list.iter_mut().find(|v| v.uuid == vm.uuid) {
                    Some(slot) => *slot = vm,
                    None => list.push(vm),
                }
            }
        }),
        LiveEvent::Resync(_) => load(),
        _ => {}
    };
    follow_events(session, stream, Rc::new(on_event), Rc::new(load));
    load();

    view! {
        <section class="tenant">
            <div class="page-head">
                <h1>"Your VMs"</h1>
                <StreamBadge state=stream />
            </div>
            <p class="muted">"Projects: " {projects.join(", ")}</p>
            {error_alert(error)}
            {move || vms.get().map(|list| if list.is_empty() {
                view! {
                    <div class="empty-state" data-testid="tenant-empty">
                        <h2>"No VMs in your projects right now"</h2>
                        <p>"When one of your VMs is moved for maintenance, you will see it here as it happens."</p>
                    </div>
                }.into_any()
            } else {
                view! {
                    <ul class="tenant-vms" data-testid="tenant-vms">
                        {list.into_iter().map(|vm| view! { <VmStatus vm=vm /> }).collect_view()}
                    </ul>
                }.into_any()
            })}
        </section>
    }
}

/// One VM: its state and its current or latest move; past moves on request.
#[component]
fn VmStatus(vm: TenantVm) -> impl IntoView {
    let past = RwSignal::new(None::<Result<Vec<TenantMove>, String>>);
    let uuid = vm.uuid.clone();
    let show_past = move |_| {
        let uuid = uuid.clone();
        leptos::task::spawn_local(async move {
            past.set(Some(
                api::tenant_vm(&uuid)
                    .await
                    .map(|d| d.moves)
                    .map_err(|e| e.to_string()),
            ));
        });
    };
    let state = match vm.state {
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Incoming => "arriving",
        VmState::Shutoff => "shut off",
        VmState::Other => "unknown",
    };
    let name = vm.name.clone();
    view! {
        <li class="card tenant-vm" data-vm=name>
            <header>
                <h3>{vm.name}</h3>
                <span class="muted">{vm.project}</span>
                <span class="badge">{state}</span>
            </header>
            {vm.scheduled.map(|s| view! { <p class="notice" data-testid="scheduled">{s}</p> })}
            {match vm.latest_move {
                Some(m) => view! { <Move m=m /> }.into_any(),
                None => view! { <p class="muted">"Not moved recently."</p> }.into_any(),
            }}
            {move || match past.get() {
                None => view! { <button class="secondary small" on:click=show_past.clone()>"Past moves"</button> }.into_any(),
                Some(Err(e)) => view! { <p class="error">{e}</p> }.into_any(),
                Some(Ok(moves)) => view! {
                    <ol class="past-moves" data-testid="past-moves">
                        {moves.into_iter().map(|m| view! { <li><Move m=m /></li> }).collect_view()}
                    </ol>
                }.into_any(),
            }}
        </li>
    }
}

/// One move in words, with a progress bar while it runs.
#[component]
fn Move(m: TenantMove) -> impl IntoView {
    let class = match m.state {
        MigrationState::Completed => "done",
        MigrationState::Aborted | MigrationState::Failed | MigrationState::Unknown => "off",
        _ => "moving",
    };
    view! {
        <div class=format!("move {class}") data-testid="move">
            <p><b data-testid="move-headline">{m.headline}</b> " · " <span class="muted">{format::clock(m.started_at_ms)}</span></p>
            {m.progress_pct.map(|p| view! { <progress max="100" value=p.to_string()></progress> })}
            <p data-testid="move-detail">{m.detail}</p>
            {m.outlook.filter(|o| !o.is_empty()).map(|o| view! { <p class="outlook" data-testid="move-outlook">{o}</p> })}
        </div>
    }
}
