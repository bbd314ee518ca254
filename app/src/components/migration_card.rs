//! A live card per migration: numbers, two charts, and abort for operators.

use converge_api::{MigrationState, Sample, Verdict};
use leptos::prelude::*;

use super::chart::{LineChart, Series};
use super::levers::{Levers, countdown};
use crate::live::MigrationView;
use crate::{api, format};

/// One migration: who moves where, how far, how fast against how dirty, and the pause
/// to expect.
#[component]
pub fn MigrationCard(
    /// The migration and its series.
    view: RwSignal<MigrationView>,
    /// Show the abort control.
    can_operate: bool,
) -> impl IntoView {
    let m = move || view.with(|v| v.migration.clone());
    let last = move || view.with(|v| v.migration.last_sample.clone());
    let state = move || view.with(|v| v.migration.state);

    // Readings taken during setup (before QEMU reports any memory) would draw a drop to 0.
    let series = move |f: fn(&Sample) -> u64| {
        view.with(|v| {
            let t0 = v.samples.first().map_or(0, |s| s.at_ms);
            v.samples
                .iter()
                .filter(|s| s.mem_total_bytes > 0)
                .map(|s| ((s.at_ms - t0) as f64 / 1000.0, f(s) as f64))
                .collect::<Vec<_>>()
        })
    };
    let rates = Signal::derive(move || {
        vec![
            Series {
                name: "transfer",
                class: "transfer",
                points: series(|s| s.transfer_rate_bytes_per_s),
            },
            Series {
                name: "dirty (libvirt)",
                class: "dirty",
                points: series(|s| s.dirty_rate_bytes_per_s),
            },
            Series {
                name: "dirty (per pass)",
                class: "dirty-est",
                points: view.with(estimated_dirty_rate),
            },
        ]
    });
    let remaining = Signal::derive(move || {
        vec![Series {
            name: "remaining",
            class: "remaining",
            points: series(|s| s.mem_remaining_bytes),
        }]
    });
    let marks = Signal::derive(move || {
        view.with(|v| {
            let t0 = v.samples.first().map_or(0, |s| s.at_ms);
            v.iterations
                .iter()
                .filter(|i| i.at_ms >= t0 && i.iteration >= 2)
                .map(|i| (i.at_ms - t0) as f64 / 1000.0)
                .collect()
        })
    });

    view! {
        <article class=move || format!("card migration state-{}", state_class(state()))
            data-testid="migration-card" data-migration=move || m().id>
            <header>
                <h3>{move || m().vm_name}</h3>
                <span class="route">
                    {move || m().source} " → " {move || m().destination.unwrap_or_else(|| "?".into())}
                    " · " {move || { let m = m(); format::preset(m.preset.as_deref(), m.settings_changed.as_deref()) }}
                </span>
                <span class=move || format!("badge state-{}", state_class(state()))>{move || state_label(state())}</span>
            </header>
            <dl class="figures">
                <div><dt>"Elapsed"</dt><dd>{move || last().map(|s| format::duration_ms(s.elapsed_ms)).unwrap_or_else(|| "–".into())}</dd></div>
                <div title="Memory at the destination and not dirtied since: during the first pass the share copied, then one minus the smallest dirty set any pass has had to send"><dt>"Progress"</dt><dd data-testid="progress">{move || m().progress_pct.map(format::pct).unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Iteration"</dt><dd data-testid="iteration">{move || last().map(|s| s.iteration.to_string()).unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Data sent"</dt><dd data-testid="data-sent">{move || last().map(|s| format!("{} of {}", format::bytes(s.data_processed_bytes), format::bytes(s.data_total_bytes))).unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Transfer"</dt><dd class="transfer" data-testid="transfer">{move || last().map(|s| format::rate(s.transfer_rate_bytes_per_s)).unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Dirty rate"</dt><dd class="dirty">{move || last().map(|s| format::rate(s.dirty_rate_bytes_per_s)).unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Expected pause"</dt><dd>{move || downtime_text(last(), m().levers.downtime_limit_ms)}</dd></div>
                <div><dt>"Throttle"</dt><dd>{move || last().and_then(|s| s.throttle_pct).map(|p| format!("{p} %")).unwrap_or_else(|| "off".into())}</dd></div>
                <div><dt>"xbzrle hits"</dt><dd data-testid="xbzrle">{move || last().and_then(|s| s.xbzrle).map(|x| x.hit_rate_pct().map_or("–".into(), |h| format::pct(f64::from(h)))).unwrap_or_else(|| "off".into())}</dd></div>
            </dl>
            <div class="charts">
                <LineChart title="Transfer vs dirty rate" series=rates marks=marks format_y=|y| format::rate(y as u64) />
                <LineChart title="Remaining memory" series=remaining marks=marks format_y=|y| format::bytes(y as u64) />
            </div>
            <ForecastView view=view can_operate=can_operate />
            <Outcome view=view />
            <Deadline view=view />
            <Actions view=view />
            {can_operate.then(|| view! { <Levers view=view /> })}
        </article>
    }
}

/// The guest's dirty rate pass by pass, as the forecast estimates it: each pass's dirty
/// set over the time the pass before it took (a step per pass).
fn estimated_dirty_rate(v: &MigrationView) -> Vec<(f64, f64)> {
    let t0 = v.samples.first().map_or(0, |s| s.at_ms);
    let mut points = Vec::new();
    for pair in v.iterations.windows(2) {
        let (pass, next) = (&pair[0], &pair[1]);
        let ms = next.at_ms - pass.at_ms;
        if ms > 0 && next.mem_remaining_bytes > 0 && pass.at_ms >= t0 {
            let rate = next.mem_remaining_bytes as f64 * 1000.0 / ms as f64;
            points.push(((pass.at_ms - t0) as f64 / 1000.0, rate));
            points.push(((next.at_ms - t0) as f64 / 1000.0, rate));
        }
    }
    points
}

/// The verdict, the ETA, and what would fix it.
#[component]
fn ForecastView(view: RwSignal<MigrationView>, can_operate: bool) -> impl IntoView {
    move || {
        let (id, forecast) = view.with(|v| (v.migration.id.clone(), v.migration.forecast.clone()));
        forecast.map(|f| {
            let eta = match (f.eta_min_s, f.eta_max_s) {
                (Some(lo), Some(hi)) if lo == hi => format!("ends in about {}", format::duration_ms(lo * 1000)),
                (Some(lo), Some(hi)) => format!("ends in {}–{}", format::duration_ms(lo * 1000), format::duration_ms(hi * 1000)),
                (Some(lo @ 1..), None) => format!("at least {} more", format::duration_ms(lo * 1000)),
                (Some(_), None) => "end not known yet".into(),
                _ => "no end in sight".into(),
            };
            let verdict = f.verdict.wire_name();
            view! {
                <div class="forecast" data-testid="forecast">
                    <p>
                        <span class=format!("verdict verdict-{verdict}") data-testid="verdict">{verdict_label(f.verdict)}</span>
                        " " <span data-testid="eta">{eta}</span>
                    </p>
                    <p class="hint">{f.reason}</p>
                    <ul class="advice" data-testid="advice">
                        {f.advice.into_iter().map(|a| {
                            let change = a.lever.and_then(|l| l.change());
                            let id = id.clone();
                            view! {
                                <li>
                                    <b>{a.action}</b> " — " {a.effect}
                                    {change.filter(|_| can_operate).map(|c| view! {
                                        <button class="secondary small" data-testid="advice-apply"
                                            on:click=move |_| {
                                                let id = id.clone();
                                                leptos::task::spawn_local(async move { let _ = api::lever(&id, &c).await; });
                                            }>"Apply"</button>
                                    })}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                </div>
            }
        })
    }
}

/// The countdown to the policy's next deadline.
#[component]
fn Deadline(view: RwSignal<MigrationView>) -> impl IntoView {
    move || {
        let now = js_sys::Date::now() as i64;
        view.with(|v| countdown(v, now)).map(|text| {
            view! {
                <p class="deadline" data-testid="deadline">"Deadline: " {text}</p>
            }
        })
    }
}

/// What operators and the policy did, newest last.
#[component]
fn Actions(view: RwSignal<MigrationView>) -> impl IntoView {
    move || {
        let actions = view.with(|v| v.migration.actions.clone());
        (!actions.is_empty()).then(|| view! {
            <ul class="actions-log" data-testid="actions">
                {actions.into_iter().rev().take(6).map(|a| view! {
                    <li><b>{a.actor}</b> ": " {a.what} " — " {a.reason} " · " <i>{a.result}</i></li>
                }).collect_view()}
            </ul>
        })
    }
}

/// How it ended, once it has.
#[component]
fn Outcome(view: RwSignal<MigrationView>) -> impl IntoView {
    move || {
        let m = view.with(|v| v.migration.clone());
        match m.state {
            MigrationState::Completed => {
                let f = m.final_stats.unwrap_or_default();
                let mut parts = vec!["Completed".to_owned()];
                if let Some(t) = f.total_time_ms {
                    parts.push(format!("in {}", format::duration_ms(t)));
                }
                if let Some(d) = f.downtime_ms {
                    parts.push(format!("· paused {}", format::duration_ms(d)));
                }
                if let Some(b) = f.data_sent_bytes {
                    parts.push(format!("· {} sent", format::bytes(b)));
                }
                Some(
                    view! { <p class="outcome ok" data-testid="outcome">{parts.join(" ")}</p> }
                        .into_any(),
                )
            }
            MigrationState::Failed | MigrationState::Aborted | MigrationState::Unknown => {
                let why = m.error.unwrap_or_default();
                Some(view! {
                    <p class="outcome bad" data-testid="outcome">
                        {state_label(m.state)} ": " {why} " The VM keeps running on " {m.source} "."
                    </p>
                }.into_any())
            }
            _ => None,
        }
    }
}

fn downtime_text(last: Option<Sample>, limit_ms: Option<u64>) -> String {
    let expected = last.and_then(|s| s.expected_downtime_ms);
    match (expected, limit_ms) {
        (Some(e), Some(l)) => format!(
            "{} (limit {})",
            format::duration_ms(e),
            format::duration_ms(l)
        ),
        (Some(e), None) => format::duration_ms(e),
        (None, Some(l)) => format!("– (limit {})", format::duration_ms(l)),
        (None, None) => "–".into(),
    }
}

/// The verdict in words: its wire name with spaces (a `match`, not `str::replace`, which
/// costs more wasm than these strings).
fn verdict_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Converging => "converging",
        Verdict::Stalled => "stalled",
        Verdict::WillNotConverge => "will not converge",
        Verdict::SwitchingOver => "switching over",
        Verdict::PostCopy => "post copy",
        Verdict::Completed => "completed",
        Verdict::Failed => "failed",
        Verdict::Aborted => "aborted",
    }
}

fn state_class(state: MigrationState) -> &'static str {
    match state {
        MigrationState::Starting => "starting",
        MigrationState::Running => "running",
        MigrationState::PostCopy => "postcopy",
        MigrationState::Completed => "completed",
        MigrationState::Failed => "failed",
        MigrationState::Aborted => "aborted",
        MigrationState::Unknown => "unknown",
    }
}

/// The state in words.
pub fn state_label(state: MigrationState) -> &'static str {
    match state {
        MigrationState::Starting => "Starting",
        MigrationState::Running => "Running",
        MigrationState::PostCopy => "Post-copy",
        MigrationState::Completed => "Completed",
        MigrationState::Failed => "Failed",
        MigrationState::Aborted => "Aborted",
        MigrationState::Unknown => "Outcome unknown",
    }
}
