//! Host maintenance: plan a drain (hosts to empty, destinations, window, limits), look at
//! the plan — each VM's destination, order, outlook and time — change destinations and
//! order, start it; then follow every drain live: progress, ETA, the queue, the running
//! cards, and the VMs that need attention with the reason and the advice.

use converge_api::{
    Drain, DrainItem, DrainLimits, DrainPolicy, DrainRequest, DrainState, HostState, ItemAction,
    ItemState, Outlook, Placement,
};
use leptos::prelude::*;

use crate::components::error_alert;
use crate::components::migration_card::MigrationCard;
use crate::live::{Live, find};
use crate::pages::fleet::StreamBadge;
use crate::{Auth, Session, api, format};

/// `/maintenance`.
#[component]
pub fn MaintenancePage() -> impl IntoView {
    let session = expect_context::<Session>();
    let can_operate = session
        .0
        .with_untracked(|a| matches!(a, Auth::SignedIn(me) if me.role.can_operate()));
    let live = Live::start(session);
    view! {
        <section class="maintenance">
            <div class="page-head">
                <h1>"Host maintenance"</h1>
                <StreamBadge state=live.stream />
            </div>
            {can_operate.then(|| view! { <PlanForm live=live /> })}
            <section class="drains" data-testid="drains">
                <h2>"Drains"</h2>
                {move || {
                    let drains = live.drains.get();
                    if drains.is_empty() {
                        view! { <p class="muted">"No drain yet. A drain empties hosts for maintenance: it moves every VM elsewhere within limits, in an order that empties them soonest, and says why for any VM it cannot move."</p> }.into_any()
                    } else {
                        drains.into_iter().map(|d| view! { <DrainView drain=d live=live can_operate=can_operate /> }).collect_view().into_any()
                    }
                }}
            </section>
        </section>
    }
}

/// The form, the plan it previews, and the start.
#[component]
fn PlanForm(live: Live) -> impl IntoView {
    let sources = RwSignal::new(Vec::<String>::new());
    let destinations = RwSignal::new(Vec::<String>::new());
    let window = RwSignal::new("60".to_owned());
    let per_source = RwSignal::new("2".to_owned());
    let per_destination = RwSignal::new("2".to_owned());
    let total = RwSignal::new("4".to_owned());
    let bandwidth = RwSignal::new(String::new());
    let post_copy = RwSignal::new(true);
    let advice = RwSignal::new(true);
    let plan = RwSignal::new(None::<Drain>);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    let request = move |dry_run: bool| {
        let number =
            |s: RwSignal<String>, default: u32| s.get_untracked().trim().parse().unwrap_or(default);
        let shown = plan.get_untracked();
        DrainRequest {
            hosts: sources.get_untracked(),
            destinations: Some(destinations.get_untracked()),
            window_minutes: window.get_untracked().trim().parse().ok(),
            limits: Some(DrainLimits {
                per_source: number(per_source, 2),
                per_destination: number(per_destination, 2),
                total: number(total, 4),
                bandwidth_mib_s: bandwidth.get_untracked().trim().parse().ok(),
                link_budget_mib_s: None,
            }),
            policy: Some(DrainPolicy {
                apply_advice: advice.get_untracked(),
                allow_post_copy: post_copy.get_untracked(),
                ..DrainPolicy::default()
            }),
            preset: None,
            // What the operator saw and changed in the preview.
            placements: shown.as_ref().filter(|_| !dry_run).map(|p| {
                p.items
                    .iter()
                    .filter(|i| i.state == ItemState::Pending)
                    .filter_map(|i| {
                        Some(Placement {
                            vm_uuid: i.vm_uuid.clone(),
                            destination: i.destination.clone()?,
                        })
                    })
                    .collect()
            }),
            order: shown
                .filter(|_| !dry_run)
                .map(|p| p.items.into_iter().map(|i| i.vm_uuid).collect()),
            dry_run,
        }
    };
    let send = move |dry_run: bool| {
        busy.set(true);
        error.set(None);
        let body = request(dry_run);
        leptos::task::spawn_local(async move {
            match api::drain(&body).await {
                Ok(d) if dry_run => plan.set(Some(d)),
                Ok(_) => plan.set(None),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    let toggle = |list: RwSignal<Vec<String>>, name: String| {
        move |_| {
            list.update(|l| match l.iter().position(|n| *n == name) {
                Some(at) => {
                    l.remove(at);
                }
                None => l.push(name.clone()),
            })
        }
    };
    let number_field = |label: &'static str, value: RwSignal<String>, id: &'static str| {
        view! {
            <label class="field">{label}
                <input inputmode="numeric" data-testid=id prop:value=move || value.get()
                    on:input=move |ev| value.set(event_target_value(&ev)) />
            </label>
        }
    };
    view! {
        <section class="plan-form" data-testid="plan-form">
            <h2>"Plan a drain"</h2>
            <div class="row">
                <fieldset class="hostpick"><legend>"Empty"</legend>
                    {move || live.hosts.get().into_iter().map(|h| {
                        let name = h.name.clone();
                        let checked = sources.with(|s| s.contains(&name));
                        view! { <label class="check"><input type="checkbox" data-host=name.clone() prop:checked=checked
                            on:change=toggle(sources, name.clone()) />{name.clone()}</label> }
                    }).collect_view()}
                </fieldset>
                <fieldset class="hostpick"><legend>"Into (none ticked: every other)"</legend>
                    {move || live.hosts.get().into_iter()
                        .filter(|h| h.state == HostState::Connected && h.draining.is_none())
                        .map(|h| {
                            let name = h.name.clone();
                            let checked = destinations.with(|s| s.contains(&name));
                            view! { <label class="check"><input type="checkbox" data-dest=name.clone() prop:checked=checked
                                on:change=toggle(destinations, name.clone()) />{name.clone()}</label> }
                        }).collect_view()}
                </fieldset>
            </div>
            <div class="row">
                {number_field("Window, minutes", window, "window")}
                {number_field("Out of a host at once", per_source, "per-source")}
                {number_field("Into a host at once", per_destination, "per-destination")}
                {number_field("In total at once", total, "total")}
                {number_field("Bandwidth per move, MiB/s", bandwidth, "bandwidth")}
                <label class="check"><input type="checkbox" data-testid="allow-post-copy" prop:checked=move || post_copy.get()
                    on:change=move |_| post_copy.update(|v| *v = !*v) />"Allow post-copy"</label>
                <label class="check"><input type="checkbox" prop:checked=move || advice.get()
                    on:change=move |_| advice.update(|v| *v = !*v) />"Apply the forecast's advice"</label>
            </div>
            <div class="actions">
                <button class="secondary" data-testid="preview" disabled=move || busy.get() || sources.with(Vec::is_empty)
                    on:click=move |_| send(true)>"Preview the plan"</button>
            </div>
            {error_alert(error)}
            {move || plan.get().map(|p| view! {
                <PlanTable plan=plan />
                <div class="actions">
                    <button class="secondary" on:click=move |_| plan.set(None)>"Discard"</button>
                    <button data-testid="start-drain" disabled=move || busy.get()
                        on:click=move |_| send(false)>{format!("Start draining {}", p.hosts.join(", "))}</button>
                </div>
            })}
        </section>
    }
}

/// The previewed plan, with each VM's destination and place in line editable.
#[component]
fn PlanTable(plan: RwSignal<Option<Drain>>) -> impl IntoView {
    let edit = move |f: Box<dyn FnOnce(&mut Drain)>| {
        plan.update(|p| {
            if let Some(p) = p {
                f(p);
            }
        })
    };
    move || {
        plan.get().map(|p| {
        let total = p.predicted_total_s.map_or_else(
            || "some VMs are not expected to finish".to_owned(),
            |s| format!("about {}", format::duration_ms(s * 1000)),
        );
        let destinations = p.destinations.clone();
        let count = p.items.len();
        view! {
            <div class="plan" data-testid="plan">
                <p>{format!("{} VMs; link {} MiB/s per move ({}); the drain takes {total}.", count, p.link_mib_s, p.link_basis)}</p>
                <ul class="warnings">{p.warnings.iter().map(|w| view! { <li class="warn">{w.clone()}</li> }).collect_view()}</ul>
                <table>
                    <thead><tr><th>"#"</th><th>"VM"</th><th>"Memory"</th><th>"Dirty rate"</th><th>"Outlook"</th><th>"Time"</th><th>"To"</th><th></th></tr></thead>
                    <tbody>
                        {p.items.iter().enumerate().map(|(n, i)| {
                            let uuid = i.vm_uuid.clone();
                            let (up, down, pick) = (uuid.clone(), uuid.clone(), uuid.clone());
                            let movable = i.state == ItemState::Pending;
                            let dests = destinations.clone();
                            let current = i.destination.clone().unwrap_or_default();
                            view! {
                                <tr data-vm=i.vm_name.clone()>
                                    <td>{n + 1}</td>
                                    <td>{i.vm_name.clone()}</td>
                                    <td>{format::bytes(i.memory_bytes)}</td>
                                    <td>{i.dirty_rate.map(|r| format::rate(r.bytes_per_s)).unwrap_or_else(|| "not measured".into())}</td>
                                    <td title=i.outlook_reason.clone() class=format!("outlook {}", i.outlook.wire_name())>{outlook(i.outlook)}<div class="small muted">{i.reason.clone().unwrap_or_else(|| i.outlook_reason.clone())}</div></td>
                                    <td>{i.predicted_s.map(|s| format::duration_ms(s * 1000)).unwrap_or_else(|| "–".into())}</td>
                                    <td>{if movable {
                                        view! {
                                            <select on:change=move |ev| {
                                                let to = event_target_value(&ev);
                                                let uuid = pick.clone();
                                                edit(Box::new(move |p| if let Some(i) = p.items.iter_mut().find(|i| i.vm_uuid == uuid) { i.destination = Some(to); }));
                                            }>
                                                {dests.iter().map(|d| view! { <option value=d.clone() selected=*d == current>{d.clone()}</option> }).collect_view()}
                                            </select>
                                        }.into_any()
                                    } else {
                                        view! { <span>{i.destination.clone().unwrap_or_else(|| "stays".into())}</span> }.into_any()
                                    }}</td>
                                    <td class="controls">
                                        <button class="secondary small" title="earlier" disabled=n == 0
                                            on:click=move |_| { let u = up.clone(); edit(Box::new(move |p| shift(p, &u, -1))) }>"↑"</button>
                                        <button class="secondary small" title="later" disabled=n + 1 == count
                                            on:click=move |_| { let u = down.clone(); edit(Box::new(move |p| shift(p, &u, 1))) }>"↓"</button>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        }
    })
    }
}

/// Moves `uuid` one place earlier (`-1`) or later (`1`) in the plan.
fn shift(plan: &mut Drain, uuid: &str, by: isize) {
    if let Some(at) = plan.items.iter().position(|i| i.vm_uuid == uuid) {
        let to = at as isize + by;
        if to >= 0 && (to as usize) < plan.items.len() {
            plan.items.swap(at, to as usize);
        }
    }
}

fn outlook(o: Outlook) -> &'static str {
    match o {
        Outlook::Converges => "converges as is",
        Outlook::NeedsXbzrle => "needs xbzrle",
        Outlook::NeedsPostCopy => "needs post-copy",
        Outlook::LikelyToStall => "likely to stall",
        Outlook::Unknown => "not measured",
    }
}

fn item_state(s: ItemState) -> &'static str {
    match s {
        ItemState::Pending => "waiting its turn",
        ItemState::Migrating => "moving",
        ItemState::Waiting => "waiting to be quieter",
        ItemState::Moved => "moved",
        ItemState::Left => "left on its host",
        ItemState::Skipped => "skipped",
    }
}

/// One drain: progress, ETA, controls, the running cards, what needs attention and the
/// queue.
#[component]
fn DrainView(drain: Drain, live: Live, can_operate: bool) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let id = drain.id.clone();
    let act = move |what: &'static str| {
        let id = id.clone();
        move |_| {
            let id = id.clone();
            leptos::task::spawn_local(async move {
                if let Err(e) = api::drain_control(&id, what).await {
                    error.set(Some(e.to_string()));
                }
            });
        }
    };
    let moved = drain.moved();
    let total = drain.items.len();
    let attention: Vec<DrainItem> = drain
        .items
        .iter()
        .filter(|i| matches!(i.state, ItemState::Waiting | ItemState::Left))
        .cloned()
        .collect();
    let running: Vec<String> = drain
        .items
        .iter()
        .filter(|i| i.state == ItemState::Migrating)
        .filter_map(|i| i.migration_id.clone())
        .collect();
    let state = drain.state;
    let eta = drain.eta_at_ms.map(format::clock);
    let items = drain.items.clone();
    let drain_id = drain.id.clone();
    view! {
        <article class=format!("drain drain-{}", state.wire_name()) data-testid="drain" data-drain=drain.id.clone()>
            <header>
                <h3>{format!("Emptying {} → {}", drain.hosts.join(", "), drain.destinations.join(", "))}</h3>
                <span class="badge" data-testid="drain-state">{state.wire_name()}</span>
                <span class="muted">{format!("by {}, {}", drain.created_by, format::clock(drain.created_at_ms))}</span>
            </header>
            <div class="progress" title=format!("{moved} of {total} moved")>
                <div class="bar" style=format!("width: {}%", drain.moved_pct())></div>
            </div>
            <p data-testid="drain-summary">
                {format!("{moved} of {total} VMs moved")}
                {(!attention.is_empty()).then(|| format!(", {} need attention", attention.len()))}
                {eta.map(|e| format!("; expected done by {e}"))}
                {format!("; window until {}", format::clock(drain.deadline_ms))}
            </p>
            {error_alert(error)}
            {(can_operate && state.is_active()).then(|| view! {
                <div class="controls">
                    {(state == DrainState::Running).then(|| view! { <button class="secondary" data-testid="drain-pause" on:click=act("pause")>"Pause"</button> })}
                    {(state == DrainState::Paused).then(|| view! { <button class="secondary" data-testid="drain-resume" on:click=act("resume")>"Resume"</button> })}
                    {(state != DrainState::Cancelling).then(|| view! { <button class="danger" data-testid="drain-cancel" on:click=act("cancel")>"Cancel the drain"</button> })}
                </div>
            })}
            {(!attention.is_empty()).then(|| view! {
                <section class="attention" data-testid="attention">
                    <h4>"Needs attention"</h4>
                    <ul>{attention.into_iter().map(|i| {
                        let advice = i.migration_ids.last().and_then(|m| find(&live.migrations.get_untracked(), m))
                            .and_then(|v| v.with_untracked(|v| v.migration.forecast.as_ref().and_then(|f| f.advice.first().map(|a| a.action.clone()))));
                        view! { <li><b>{i.vm_name.clone()}</b> ": " {i.reason.clone().unwrap_or_default()}
                            {advice.map(|a| view! { <span class="muted">" Advice: " {a}</span> })}</li> }
                    }).collect_view()}</ul>
                </section>
            })}
            {(!running.is_empty()).then(|| view! {
                <div class="cards">
                    {move || running.iter().filter_map(|m| find(&live.migrations.get(), m))
                        .map(|v| view! { <MigrationCard view=v can_operate=can_operate /> }).collect_view()}
                </div>
            })}
            <table class="queue" data-testid="queue">
                <thead><tr><th>"#"</th><th>"VM"</th><th>"From → to"</th><th>"Outlook"</th><th>"State"</th><th>"Why / when"</th>{can_operate.then(|| view! { <th></th> })}</tr></thead>
                <tbody>
                    {items.into_iter().enumerate().map(|(n, i)| {
                        let waiting = matches!(i.state, ItemState::Pending | ItemState::Waiting) && state.is_active();
                        let (skip_id, fwd_id, skip_vm, fwd_vm) = (drain_id.clone(), drain_id.clone(), i.vm_uuid.clone(), i.vm_uuid.clone());
                        let when = i.reason.clone().or_else(|| i.expected_at_ms.map(|at| format!("expected to start by {}", format::clock(at))));
                        view! {
                            <tr data-vm=i.vm_name.clone() data-state=i.state.wire_name()>
                                <td>{n + 1}</td>
                                <td>{i.vm_name.clone()}</td>
                                <td>{format!("{} → {}", i.source, i.destination.clone().unwrap_or_else(|| "–".into()))}</td>
                                <td title=i.outlook_reason.clone()>{outlook(i.outlook)}</td>
                                <td>{item_state(i.state)}{(i.attempts > 1).then(|| format!(" (try {})", i.attempts))}</td>
                                <td class="small">{when}</td>
                                {can_operate.then(|| view! { <td class="controls">{waiting.then(|| view! {
                                    <button class="secondary small" on:click=move |_| item_action(skip_id.clone(), skip_vm.clone(), ItemAction::Skip, error)>"Skip"</button>
                                    <button class="secondary small" on:click=move |_| item_action(fwd_id.clone(), fwd_vm.clone(), ItemAction::Forward, error)>"Next"</button>
                                })}</td> })}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </article>
    }
}

fn item_action(id: String, uuid: String, action: ItemAction, error: RwSignal<Option<String>>) {
    leptos::task::spawn_local(async move {
        if let Err(e) = api::drain_vm(&id, &uuid, action).await {
            error.set(Some(e.to_string()));
        }
    });
}
