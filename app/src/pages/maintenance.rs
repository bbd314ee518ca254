//! Host maintenance: plan a drain (hosts to empty, destinations, window, limits), look at
//! the plan — each VM's destination, order, outlook and time — change destinations and
//! order, start it; then follow every drain live: progress, ETA, the queue, the running
//! cards, and the VMs that need attention with the reason and the advice.
//!
//! Written for size: the tables share one cell renderer, and the buttons are built from
//! lists, so each kind of element is compiled once.

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
                    let empty = drains.is_empty().then_some("No drain yet. A drain empties hosts for maintenance: it moves every VM elsewhere within limits, in an order that empties them soonest, and says why for any VM it cannot move.");
                    view! {
                        <p class="muted">{empty}</p>
                        {drains.into_iter().map(|d| drain_view(d, live, can_operate)).collect_view()}
                    }
                }}
            </section>
        </section>
    }
}

/// The form's fields, as typed.
#[derive(Clone, Copy)]
struct Form {
    sources: RwSignal<Vec<String>>,
    destinations: RwSignal<Vec<String>>,
    numbers: [RwSignal<String>; 6],
    post_copy: RwSignal<bool>,
    advice: RwSignal<bool>,
}

/// The number fields: label, test id, default.
const NUMBERS: [(&str, &str, &str); 6] = [
    ("Window, minutes", "window", "60"),
    ("Out of a host at once", "per-source", "2"),
    ("Into a host at once", "per-destination", "2"),
    ("In total at once", "total", "4"),
    ("Bandwidth per move, MiB/s", "bandwidth", ""),
    ("Tries per VM", "tries", "3"),
];

impl Form {
    fn number<T: std::str::FromStr>(&self, i: usize) -> Option<T> {
        self.numbers[i].get_untracked().trim().parse().ok()
    }

    /// The request, with the operator's changes to `plan` when starting it.
    fn request(&self, plan: Option<Drain>) -> DrainRequest {
        let defaults = DrainLimits::default();
        DrainRequest {
            hosts: self.sources.get_untracked(),
            destinations: Some(self.destinations.get_untracked()),
            window_minutes: self.number(0),
            limits: Some(DrainLimits {
                per_source: self.number(1).unwrap_or(defaults.per_source),
                per_destination: self.number(2).unwrap_or(defaults.per_destination),
                total: self.number(3).unwrap_or(defaults.total),
                bandwidth_mib_s: self.number(4),
                link_budget_mib_s: None,
            }),
            policy: Some(DrainPolicy {
                apply_advice: self.advice.get_untracked(),
                allow_post_copy: self.post_copy.get_untracked(),
                max_tries: self.number(5).unwrap_or(3),
                attempt_max_s: None,
            }),
            preset: None,
            dry_run: plan.is_none(),
            placements: plan.as_ref().map(|p| {
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
            order: plan.map(|p| p.items.into_iter().map(|i| i.vm_uuid).collect()),
        }
    }
}

/// The form, the plan it previews, and the start.
#[component]
fn PlanForm(live: Live) -> impl IntoView {
    let form = Form {
        sources: RwSignal::new(Vec::new()),
        destinations: RwSignal::new(Vec::new()),
        numbers: NUMBERS.map(|(_, _, d)| RwSignal::new(d.to_owned())),
        post_copy: RwSignal::new(true),
        advice: RwSignal::new(true),
    };
    let plan = RwSignal::new(None::<Drain>);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    // Preview (no plan yet) or start the plan shown.
    let send = move |start: bool| {
        busy.set(true);
        error.set(None);
        let body = form.request(plan.get_untracked().filter(|_| start));
        leptos::task::spawn_local(async move {
            match api::drain(&body).await {
                Ok(d) => plan.set((!start).then_some(d)),
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    // Host checkboxes: (list, attribute, whether a host is offered).
    let pick = move |list: RwSignal<Vec<String>>, attr: &'static str, into: bool| {
        move || {
            live.hosts
                .get()
                .into_iter()
                .filter(|h| {
                    !into
                        || (h.state == HostState::Connected
                            && h.draining.is_none()
                            && !form.sources.with(|s| s.contains(&h.name)))
                })
                .map(|h| {
                    let name = h.name;
                    let checked = list.with(|l| l.contains(&name));
                    let flip = name.clone();
                    view! {
                        <label class="check"><input type="checkbox" data-pick=attr value=name.clone() prop:checked=checked
                            on:change=move |_| list.update(|l| match l.iter().position(|n| *n == flip) {
                                Some(at) => { l.remove(at); }
                                None => l.push(flip.clone()),
                            }) />{name}</label>
                    }
                })
                .collect_view()
        }
    };
    let flags = [
        ("Allow post-copy", "allow-post-copy", form.post_copy),
        ("Apply the forecast's advice", "apply-advice", form.advice),
    ];
    view! {
        <section class="plan-form" data-testid="plan-form">
            <h2>"Plan a drain"</h2>
            <div class="row">
                <fieldset class="hostpick"><legend>"Empty"</legend>{pick(form.sources, "host", false)}</fieldset>
                <fieldset class="hostpick"><legend>"Into (none ticked: every other)"</legend>{pick(form.destinations, "dest", true)}</fieldset>
            </div>
            <div class="row">
                {NUMBERS.iter().zip(form.numbers).map(|(&(label, id, _), value)| view! {
                    <label class="field">{label}
                        <input inputmode="numeric" data-testid=id prop:value=move || value.get()
                            on:input=move |ev| value.set(event_target_value(&ev)) />
                    </label>
                }).collect_view()}
                {flags.map(|(label, id, value)| view! {
                    <label class="check"><input type="checkbox" data-testid=id prop:checked=move || value.get()
                        on:change=move |_| value.update(|v| *v = !*v) />{label}</label>
                }).collect_view()}
            </div>
            <div class="actions">
                <button class="secondary" data-testid="preview" disabled=move || busy.get() || form.sources.with(Vec::is_empty)
                    on:click=move |_| send(false)>"Preview the plan"</button>
            </div>
            {error_alert(error)}
            {move || plan.get().map(|p| view! {
                {plan_table(p, plan)}
                <div class="actions">
                    <button class="secondary" on:click=move |_| plan.set(None)>"Discard"</button>
                    <button data-testid="start-drain" disabled=move || busy.get()
                        on:click=move |_| send(true)>"Start the drain"</button>
                </div>
            })}
        </section>
    }
}

/// One table row of text cells.
fn text_cells(cells: Vec<String>) -> impl IntoView {
    cells
        .into_iter()
        .map(|c| view! { <td>{c}</td> })
        .collect_view()
}

/// A table head.
fn head(names: &[&'static str]) -> impl IntoView {
    view! { <thead><tr>{names.iter().map(|n| view! { <th>{*n}</th> }).collect_view()}</tr></thead> }
}

/// The previewed plan, with each VM's destination and place in line editable.
fn plan_table(p: Drain, plan: RwSignal<Option<Drain>>) -> impl IntoView {
    let total = p.predicted_total_s.map_or_else(
        || "some VMs are not expected to finish".to_owned(),
        |s| "about ".to_owned() + &format::duration_ms(s * 1000),
    );
    let count = p.items.len();
    let summary = format!(
        "{count} VMs; link {} MiB/s per move ({}); the drain takes {total}.",
        p.link_mib_s, p.link_basis
    );
    let destinations = p.destinations;
    let rows = p.items.into_iter().enumerate().map(|(n, i)| {
        let uuid = i.vm_uuid.clone();
        let dests = if i.state == ItemState::Pending {
            destinations.clone()
        } else {
            Vec::new()
        };
        let current = i.destination.clone().unwrap_or_default();
        let moves = [("↑", -1isize), ("↓", 1)].map(|(label, by)| {
            let uuid = uuid.clone();
            view! { <button class="secondary small" on:click=move |_| plan.update(|p| if let Some(p) = p { shift(p, &uuid, by) })>{label}</button> }
        });
        let pick = uuid.clone();
        view! {
            <tr data-vm=i.vm_name.clone()>
                {text_cells(vec![
                    (n + 1).to_string(),
                    i.vm_name.clone(),
                    format::bytes(i.memory_bytes),
                    i.dirty_rate.map_or_else(|| "not measured".into(), |r| format::rate(r.bytes_per_s)),
                    outlook(i.outlook).to_owned() + ": " + &i.reason.unwrap_or(i.outlook_reason),
                    i.predicted_s.map_or_else(|| "–".into(), |s| format::duration_ms(s * 1000)),
                ])}
                <td>
                    {(dests.is_empty()).then(|| i.destination.unwrap_or_else(|| "stays".into()))}
                    {(!dests.is_empty()).then(|| view! {
                        <select on:change=move |ev| {
                            let to = event_target_value(&ev);
                            plan.update(|p| if let Some(i) = p.as_mut().and_then(|p| p.items.iter_mut().find(|i| i.vm_uuid == pick)) {
                                i.destination = Some(to);
                            });
                        }>
                            {dests.iter().map(|d| view! { <option value=d.clone() selected=*d == current>{d.clone()}</option> }).collect_view()}
                        </select>
                    })}
                </td>
                <td class="controls">{moves}</td>
            </tr>
        }
    }).collect_view();
    view! {
        <div class="plan" data-testid="plan">
            <p>{summary}</p>
            <ul class="warnings">{p.warnings.into_iter().map(|w| view! { <li class="warn">{w}</li> }).collect_view()}</ul>
            <table>
                {head(&["#", "VM", "Memory", "Dirty rate", "Outlook", "Time", "To", ""])}
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// Moves `uuid` one place earlier (`-1`) or later (`1`) in the plan.
fn shift(plan: &mut Drain, uuid: &str, by: isize) {
    if let Some(at) = plan.items.iter().position(|i| i.vm_uuid == uuid) {
        let to = at.wrapping_add_signed(by);
        if to < plan.items.len() {
            plan.items.swap(at, to);
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
fn drain_view(drain: Drain, live: Live, can_operate: bool) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let (moved, total, pct) = (drain.moved(), drain.items.len(), drain.moved_pct());
    let state = drain.state;
    let attention: Vec<DrainItem> = drain
        .items
        .iter()
        .filter(|i| matches!(i.state, ItemState::Waiting | ItemState::Left))
        .cloned()
        .collect();
    let mut summary = format!("{moved} of {total} VMs moved");
    if !attention.is_empty() {
        summary += &format!(", {} need attention", attention.len());
    }
    if let Some(at) = drain.eta_at_ms {
        summary += &(", expected done by ".to_owned() + &format::time_of_day(at));
    }
    summary += &("; window until ".to_owned() + &format::time_of_day(drain.deadline_ms));
    let running: Vec<String> = drain
        .items
        .iter()
        .filter(|i| i.state == ItemState::Migrating)
        .filter_map(|i| i.migration_id.clone())
        .collect();
    let controls = [
        ("Pause", "pause", state == DrainState::Running),
        ("Resume", "resume", state == DrainState::Paused),
        (
            "Cancel the drain",
            "cancel",
            state.is_active() && state != DrainState::Cancelling,
        ),
    ]
    .into_iter()
    .filter(|c| can_operate && c.2)
    .map(|(label, what, _)| {
        let id = drain.id.clone();
        view! {
            <button class="secondary" data-testid=what on:click=move |_| {
                let id = id.clone();
                leptos::task::spawn_local(async move {
                    if let Err(e) = api::drain_control(&id, what).await {
                        error.set(Some(e.to_string()));
                    }
                });
            }>{label}</button>
        }
    })
    .collect_view();
    let migrations = live.migrations.get_untracked();
    let attention = attention
        .into_iter()
        .map(|i| {
            let advice = i
                .migration_ids
                .last()
                .and_then(|m| find(&migrations, m))
                .and_then(|v| {
                    v.with_untracked(|v| {
                        Some(
                            v.migration
                                .forecast
                                .as_ref()?
                                .advice
                                .first()?
                                .action
                                .clone(),
                        )
                    })
                })
                .map(|a| " Advice: ".to_owned() + &a);
            view! { <li><b>{i.vm_name}</b> ": " {i.reason} {advice}</li> }
        })
        .collect_view();
    let id = drain.id.clone();
    let rows = drain
        .items
        .into_iter()
        .enumerate()
        .map(|(n, i)| {
            let open = matches!(i.state, ItemState::Pending | ItemState::Waiting)
                && state.is_active()
                && can_operate;
            let actions = [("Skip", ItemAction::Skip), ("Next", ItemAction::Forward)]
                .into_iter()
                .filter(|_| open)
                .map(|(label, action)| {
                    let (id, uuid) = (id.clone(), i.vm_uuid.clone());
                    view! { <button class="secondary small" on:click=move |_| {
                        let (id, uuid) = (id.clone(), uuid.clone());
                        leptos::task::spawn_local(async move {
                            if let Err(e) = api::drain_vm(&id, &uuid, action).await {
                                error.set(Some(e.to_string()));
                            }
                        });
                    }>{label}</button> }
                })
                .collect_view();
            let when = i.reason.or_else(|| {
                i.expected_at_ms
                    .map(|at| "expected to start by ".to_owned() + &format::time_of_day(at))
            });
            let mut status = item_state(i.state).to_owned();
            if i.attempts > 1 {
                status += &format!(" (try {})", i.attempts);
            }
            view! {
                <tr data-vm=i.vm_name.clone() data-state=i.state.wire_name()>
                    {text_cells(vec![
                        (n + 1).to_string(),
                        i.vm_name.clone(),
                        i.source + " → " + &i.destination.unwrap_or_else(|| "–".into()),
                        outlook(i.outlook).to_owned(),
                        status,
                        when.unwrap_or_default(),
                    ])}
                    <td class="controls">{actions}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <article class=format!("drain drain-{}", state.wire_name()) data-testid="drain">
            <header>
                <h3>{format!("Emptying {} → {}", drain.hosts.join(", "), drain.destinations.join(", "))}</h3>
                <span class="badge" data-testid="drain-state">{state.wire_name()}</span>
                <span class="muted">{"by ".to_owned() + &drain.created_by + ", " + &format::clock(drain.created_at_ms)}</span>
            </header>
            // A <progress>, not a styled <div>: the CSP allows no inline style.
            <progress class="drain-progress" max="100" value=pct.to_string()></progress>
            <p data-testid="drain-summary">{summary}</p>
            {error_alert(error)}
            <div class="controls">{controls}</div>
            <ul class="attention" data-testid="attention">{attention}</ul>
            <div class="cards">
                {move || running.iter().filter_map(|m| find(&live.migrations.get(), m))
                    .map(|v| view! { <MigrationCard view=v can_operate=can_operate /> }).collect_view()}
            </div>
            <table class="queue" data-testid="queue">
                {head(&["#", "VM", "From → to", "Outlook", "State", "Why / when", ""])}
                <tbody>{rows}</tbody>
            </table>
        </article>
    }
}
