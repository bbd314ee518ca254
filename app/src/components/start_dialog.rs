//! Starting a migration: destination and bandwidth for one VM.

use converge_api::{Host, HostState, StartMigration, Vm};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;

use crate::{api, format};

/// A modal form to migrate `vm`; closes itself on success or cancel.
#[component]
pub fn StartDialog(
    /// The VM to move.
    vm: Vm,
    /// Every host, to offer destinations.
    #[prop(into)]
    hosts: Signal<Vec<Host>>,
    /// Called when the dialog should close.
    on_close: Callback<()>,
) -> impl IntoView {
    let source = vm.host.clone();
    let destinations = Memo::new(move |_| {
        hosts
            .get()
            .into_iter()
            .filter(|h| h.name != source && h.state == HostState::Connected)
            .map(|h| h.name)
            .collect::<Vec<_>>()
    });
    let destination = RwSignal::new(
        destinations
            .get_untracked()
            .first()
            .cloned()
            .unwrap_or_default(),
    );
    let bandwidth = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let vm_uuid = vm.uuid.clone();

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let text = bandwidth.get_untracked();
        let bandwidth_mib_s = match text.trim() {
            "" => None,
            t => match t.parse::<u64>() {
                Ok(v) if v > 0 => Some(v),
                _ => {
                    error.set(Some(
                        "Bandwidth is a whole number of MiB/s, or empty for no limit.".into(),
                    ));
                    return;
                }
            },
        };
        let body = StartMigration {
            vm_uuid: vm_uuid.clone(),
            destination: destination.get_untracked(),
            bandwidth_mib_s,
        };
        pending.set(true);
        leptos::task::spawn_local(async move {
            match api::start_migration(&body).await {
                Ok(_) => on_close.run(()),
                Err(err) => error.set(Some(err.to_string())),
            }
            pending.set(false);
        });
    };

    view! {
        <div class="backdrop" on:click=move |_| on_close.run(())></div>
        <form class="dialog" role="dialog" aria-label="Start a migration" on:submit=submit
            data-testid="start-dialog">
            <h2>"Migrate " {vm.name.clone()}</h2>
            <p class="muted">
                {format!("{} · {} vCPU · now on {}", format::bytes(vm.memory_bytes), vm.vcpus, vm.host)}
            </p>
            <label>
                "Destination"
                <select name="destination" bind:value=destination required>
                    {move || destinations.get().into_iter().map(|name| view! {
                        <option value=name.clone()>{name.clone()}</option>
                    }).collect_view()}
                </select>
            </label>
            <Show when=move || destinations.get().is_empty()>
                <p class="error">"No other connected host to migrate to."</p>
            </Show>
            <label>
                "Bandwidth limit (MiB/s)"
                <input name="bandwidth" inputmode="numeric" placeholder="no limit" bind:value=bandwidth />
            </label>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <div class="actions">
                <button type="button" class="secondary" on:click=move |_| on_close.run(())>"Cancel"</button>
                <button type="submit" data-testid="start-submit"
                    disabled=move || pending.get() || destinations.get().is_empty()>
                    {move || if pending.get() { "Starting…" } else { "Start migration" }}
                </button>
            </div>
        </form>
    }
}
