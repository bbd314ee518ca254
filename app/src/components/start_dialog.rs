//! Starting a migration: destination, preset, capabilities, levers' first values and the
//! deadline — with the same linter the server enforces, run as you type.

use converge_api::{
    AutoConverge, Capabilities, Deadline, DowntimeSteps, Host, HostState, MigrationSettings,
    Preset, Severity, StartMigration, TimeoutAction, Vm, lint,
};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;

use crate::components::error_alert;
use crate::{api, format};

/// The form's fields: text as typed, parsed on every change.
#[derive(Debug, Clone, Copy)]
struct Form {
    bandwidth: RwSignal<String>,
    downtime: RwSignal<String>,
    xbzrle: RwSignal<bool>,
    cache_mib: RwSignal<String>,
    auto_converge: RwSignal<bool>,
    ac_initial: RwSignal<String>,
    ac_increment: RwSignal<String>,
    postcopy: RwSignal<bool>,
    parallel: RwSignal<bool>,
    parallel_n: RwSignal<String>,
    per_gib: RwSignal<String>,
    max_s: RwSignal<String>,
    stall_s: RwSignal<String>,
    action: RwSignal<String>,
    steps: RwSignal<Option<DowntimeSteps>>,
    adaptive: RwSignal<bool>,
}

fn text(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl Form {
    fn new() -> Self {
        Self {
            bandwidth: RwSignal::new(String::new()),
            downtime: RwSignal::new(String::new()),
            xbzrle: RwSignal::new(false),
            cache_mib: RwSignal::new("256".into()),
            auto_converge: RwSignal::new(false),
            ac_initial: RwSignal::new("20".into()),
            ac_increment: RwSignal::new("10".into()),
            postcopy: RwSignal::new(false),
            parallel: RwSignal::new(false),
            parallel_n: RwSignal::new("4".into()),
            per_gib: RwSignal::new(String::new()),
            max_s: RwSignal::new(String::new()),
            stall_s: RwSignal::new(String::new()),
            action: RwSignal::new("abort".into()),
            steps: RwSignal::new(None),
            adaptive: RwSignal::new(false),
        }
    }

    /// Fills the form from a preset.
    fn load(&self, s: &MigrationSettings) {
        let c = &s.capabilities;
        self.bandwidth.set(text(s.bandwidth_mib_s));
        self.downtime.set(text(s.downtime_limit_ms));
        self.xbzrle.set(c.xbzrle_cache_bytes.is_some());
        if let Some(b) = c.xbzrle_cache_bytes {
            self.cache_mib.set((b >> 20).to_string());
        }
        self.auto_converge.set(c.auto_converge.is_some());
        if let Some(a) = c.auto_converge {
            self.ac_initial.set(a.initial_pct.to_string());
            self.ac_increment.set(a.increment_pct.to_string());
        }
        self.postcopy.set(c.postcopy);
        self.parallel.set(c.parallel_connections.is_some());
        if let Some(n) = c.parallel_connections {
            self.parallel_n.set(n.to_string());
        }
        let d = &s.deadline;
        self.per_gib.set(text(d.completion_s_per_gib));
        self.max_s.set(text(d.completion_max_s));
        self.stall_s.set(text(d.stall_s));
        self.action.set(action_name(d.action).into());
        self.steps.set(s.downtime_steps);
        self.adaptive.set(s.adaptive);
    }

    /// The settings as typed, or what cannot be read.
    fn settings(&self) -> Result<MigrationSettings, String> {
        let num = |label: &str, sig: RwSignal<String>| -> Result<Option<u64>, String> {
            let t = sig.get();
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{label}: \"{t}\" is not a whole number"))
        };
        let need =
            |label: &str, sig| num(label, sig)?.ok_or_else(|| format!("{label}: give a number"));
        let pct = |label: &str, sig| need(label, sig).map(|v| v.min(u64::from(u32::MAX)) as u32);
        Ok(MigrationSettings {
            capabilities: Capabilities {
                xbzrle_cache_bytes: if self.xbzrle.get() {
                    Some(need("xbzrle cache", self.cache_mib)?.saturating_mul(1 << 20))
                } else {
                    None
                },
                auto_converge: if self.auto_converge.get() {
                    Some(AutoConverge {
                        initial_pct: pct("first throttle", self.ac_initial)?,
                        increment_pct: pct("throttle step", self.ac_increment)?,
                    })
                } else {
                    None
                },
                postcopy: self.postcopy.get(),
                parallel_connections: if self.parallel.get() {
                    Some(pct("connections", self.parallel_n)?)
                } else {
                    None
                },
            },
            bandwidth_mib_s: num("bandwidth", self.bandwidth)?,
            downtime_limit_ms: num("downtime limit", self.downtime)?,
            downtime_steps: self.steps.get(),
            adaptive: self.adaptive.get(),
            deadline: Deadline {
                completion_s_per_gib: num("seconds per GiB", self.per_gib)?,
                completion_max_s: num("cap", self.max_s)?,
                stall_s: num("stall timeout", self.stall_s)?,
                action: match self.action.get().as_str() {
                    "post_copy" => TimeoutAction::PostCopy,
                    "pause" => TimeoutAction::Pause,
                    _ => TimeoutAction::Abort,
                },
            },
        })
    }
}

fn action_name(action: TimeoutAction) -> &'static str {
    match action {
        TimeoutAction::Abort => "abort",
        TimeoutAction::PostCopy => "post_copy",
        TimeoutAction::Pause => "pause",
    }
}

/// A labelled number input.
#[component]
fn Number(
    label: &'static str,
    name: &'static str,
    value: RwSignal<String>,
    #[prop(optional)] placeholder: &'static str,
) -> impl IntoView {
    view! {
        <label class="field">
            <span>{label}</span>
            <input inputmode="numeric" placeholder=placeholder bind:value=value name=name />
        </label>
    }
}

/// A labelled checkbox.
#[component]
fn Check(label: &'static str, value: RwSignal<bool>, name: &'static str) -> impl IntoView {
    view! {
        <label class="check"><input type="checkbox" name=name bind:checked=value />{label}</label>
    }
}

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
    let presets = RwSignal::new(Vec::<Preset>::new());
    let preset = RwSignal::new(String::new());
    let form = Form::new();
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);

    leptos::task::spawn_local(async move {
        match api::presets().await {
            Ok(list) => {
                if let Some(first) = list.first() {
                    preset.set(first.name.clone());
                    form.load(&first.settings);
                }
                presets.set(list);
            }
            Err(err) => error.set(Some(err.to_string())),
        }
    });
    let choose = move |name: String| {
        if let Some(p) = presets.with_untracked(|l| l.iter().find(|p| p.name == name).cloned()) {
            form.load(&p.settings);
        }
        preset.set(name);
    };
    let description = move || {
        presets.with(|l| {
            l.iter()
                .find(|p| p.name == preset.get())
                .map(|p| p.description.clone())
        })
    };
    let memory = vm.memory_bytes;
    let findings = Memo::new(move |_| form.settings().map(|s| lint(&s, memory)));
    let refused = move || match findings.get() {
        Err(_) => true,
        Ok(f) => f.iter().any(|f| f.severity == Severity::Refused),
    };

    let vm_uuid = vm.uuid.clone();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let settings = match form.settings() {
            Ok(s) => s,
            Err(e) => return error.set(Some(e)),
        };
        let body = StartMigration {
            vm_uuid: vm_uuid.clone(),
            destination: destination.get_untracked(),
            preset: Some(preset.get_untracked()),
            settings: Some(settings),
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
        <form class="dialog wide" role="dialog" aria-label="Start a migration" on:submit=submit
            data-testid="start-dialog">
            <h2>"Migrate " {vm.name.clone()}</h2>
            <p class="muted">
                {format!("{} · {} vCPU · now on {}", format::bytes(vm.memory_bytes), vm.vcpus, vm.host)}
            </p>
            <div class="row">
                <label class="field">
                    <span>"Destination"</span>
                    <select name="destination" bind:value=destination required>
                        {move || destinations.get().into_iter().map(|name| view! {
                            <option value=name.clone()>{name.clone()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label class="field">
                    <span>"Preset"</span>
                    <select name="preset" prop:value=move || preset.get()
                        on:change=move |ev| choose(event_target_value(&ev))>
                        {move || presets.get().into_iter().map(|p| view! {
                            <option value=p.name.clone()>{p.name.clone()}</option>
                        }).collect_view()}
                    </select>
                </label>
            </div>
            <p class="muted small">{description}</p>
            <Check label="adaptive: measure the guest, choose capabilities, act on the forecast" value=form.adaptive name="adaptive" />
            <fieldset>
                <legend>"Capabilities — fixed once it starts"</legend>
                <div class="row">
                    <Check label="xbzrle" value=form.xbzrle name="xbzrle" />
                    {move || form.xbzrle.get().then(|| view! { <Number label="cache MiB" name="cache_mib" value=form.cache_mib /> })}
                </div>
                <div class="row">
                    <Check label="auto-converge" value=form.auto_converge name="auto_converge" />
                    {move || form.auto_converge.get().then(|| view! {
                        <Number label="first throttle %" name="ac_initial" value=form.ac_initial />
                        <Number label="throttle step %" name="ac_increment" value=form.ac_increment />
                    })}
                </div>
                <div class="row">
                    <Check label="allow post-copy" value=form.postcopy name="postcopy" />
                    <Check label="parallel connections" value=form.parallel name="parallel" />
                    {move || form.parallel.get().then(|| view! { <Number label="connections" name="parallel_n" value=form.parallel_n /> })}
                </div>
            </fieldset>
            <fieldset>
                <legend>"Levers — changeable mid-flight"</legend>
                <div class="row">
                    <Number label="bandwidth MiB/s" name="bandwidth" value=form.bandwidth placeholder="no limit" />
                    <Number label="downtime limit ms" name="downtime" value=form.downtime placeholder="300" />
                </div>
                {move || form.steps.get().map(|s| view! {
                    <p class="muted small">{format!("Downtime steps from the preset: {} → {} ms", s.start_ms, s.max_ms)}</p>
                })}
            </fieldset>
            <fieldset>
                <legend>"Deadline"</legend>
                <div class="row">
                    <Number label="s per GiB" name="per_gib" value=form.per_gib placeholder="none" />
                    <Number label="cap s" name="max_s" value=form.max_s placeholder="none" />
                    <Number label="stall s" name="stall_s" value=form.stall_s placeholder="none" />
                    <label class="field">
                        <span>"then"</span>
                        <select name="action" bind:value=form.action>
                            <option value="abort">"abort"</option>
                            <option value="post_copy">"switch to post-copy"</option>
                            <option value="pause">"pause the guest"</option>
                        </select>
                    </label>
                </div>
            </fieldset>
            <ul class="lint" data-testid="lint">
                {move || match findings.get() {
                    Err(e) => view! { <li class="refused">{e}</li> }.into_any(),
                    Ok(list) => list.into_iter().map(|f| view! {
                        <li class=if f.severity == Severity::Refused { "refused" } else { "warning" }>{f.message}</li>
                    }).collect_view().into_any(),
                }}
            </ul>
            {error_alert(error)}
            <div class="actions">
                <button type="button" class="secondary" on:click=move |_| on_close.run(())>"Cancel"</button>
                <button type="submit" data-testid="start-submit"
                    disabled=move || pending.get() || destinations.get().is_empty() || refused()>
                    {move || if pending.get() { "Starting…" } else { "Start migration" }}
                </button>
            </div>
        </form>
    }
}
