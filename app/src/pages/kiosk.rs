//! The NOC board: every live migration, most in need of attention first, legible from
//! across a room; no controls. It signs in with the kiosk token in the address
//! (`/kiosk#token=…`, a fragment, so the secret never reaches a server log), signs in
//! again by itself when its session lapses, and says since when it has been cut off.

use converge_api::{MigrationState, Verdict};
use leptos::prelude::*;

use crate::api::{self, ApiError, StreamState};
use crate::components::levers::countdown;
use crate::live::{Live, MigrationView};
use crate::{Auth, Session, format};

/// How long to wait before trying again when the server cannot be reached.
const RETRY: std::time::Duration = std::time::Duration::from_secs(3);
/// A deadline closer than this counts as near.
const NEAR_DEADLINE_MS: i64 = 120_000;
/// A throttle at least this high counts as "the guest is being slowed hard".
const HARD_THROTTLE_PCT: u32 = 50;

/// Where the board stands with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    SigningIn,
    Ready,
    /// Cannot sign in: revoked token, no token; the reason for the screen.
    Refused(String),
}

/// `/kiosk`.
#[component]
pub fn KioskPage() -> impl IntoView {
    let session = expect_context::<Session>();
    // A kiosk account signed in with a password is already in.
    let access = RwSignal::new(
        if session.0.with_untracked(|a| matches!(a, Auth::SignedIn(_))) {
            Access::Ready
        } else {
            Access::SigningIn
        },
    );
    // When the server could not be reached (unix ms), for the banner.
    let offline_since = RwSignal::new(None::<i64>);
    let token = token_from_address();

    let sign_in = move || {
        let token = token.clone();
        leptos::task::spawn_local(async move {
            let result = match token {
                Some(token) => api::kiosk_sign_in(token).await,
                None => api::me().await,
            };
            match result {
                Ok(me) => {
                    offline_since.set(None);
                    session.0.set(Auth::SignedIn(me));
                    access.set(Access::Ready);
                }
                Err(ApiError::Unauthenticated(message)) => access.set(Access::Refused(message)),
                Err(_) => {
                    offline_since.update(|s| {
                        s.get_or_insert(js_sys::Date::now() as i64);
                    });
                    // Retried by the effect below, which sees the session still out.
                    set_timeout(move || session.end(None), RETRY);
                }
            }
        });
    };
    // Signs in at first, and again whenever the session ends (lifetime, restart of a
    // server that lost it, revocation, which then shows as refused).
    Effect::new(move |_| {
        if matches!(session.0.get(), Auth::SignedOut { .. } | Auth::Checking)
            && !matches!(access.get_untracked(), Access::Refused(_))
        {
            access.set(Access::SigningIn);
            sign_in();
        }
    });

    view! {
        <div class="kiosk" data-testid="kiosk">
            {move || match access.get() {
                Access::Ready => view! { <Board offline_since=offline_since /> }.into_any(),
                Access::SigningIn => view! {
                    <p class="kiosk-message">"Connecting to Converge…"</p>
                    <Offline since=offline_since />
                }.into_any(),
                Access::Refused(why) => view! {
                    <div class="kiosk-message" role="alert" data-testid="kiosk-refused">
                        <p>"This screen cannot show the board."</p>
                        <p class="muted">{why}</p>
                    </div>
                }.into_any(),
            }}
        </div>
    }
}

/// The token from `#token=…`, taken out of the address bar (and so out of the browser's
/// history) once read: the page keeps it in memory to sign in again by itself. A kiosk
/// browser restarted with the link gets it back from its command line.
fn token_from_address() -> Option<String> {
    let hash = window().location().hash().ok()?;
    let token = hash
        .strip_prefix("#token=")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)?;
    crate::route::replace(&crate::route::Route::Kiosk);
    Some(token)
}

/// "Disconnected since 14:03:07 — reconnecting".
#[component]
fn Offline(since: RwSignal<Option<i64>>) -> impl IntoView {
    move || {
        since.get().map(|at| {
            let time = format::time_of_day(at);
            view! {
                <p class="kiosk-offline" role="status" data-testid="kiosk-offline">
                    "Disconnected since " {time} " — reconnecting by itself"
                </p>
            }
        })
    }
}

/// The board itself, once signed in.
#[component]
fn Board(offline_since: RwSignal<Option<i64>>) -> impl IntoView {
    let session = expect_context::<Session>();
    let live = Live::start(session);
    let now = RwSignal::new(js_sys::Date::now() as i64);
    if let Ok(tick) = set_interval_with_handle(
        move || now.set(js_sys::Date::now() as i64),
        std::time::Duration::from_secs(1),
    ) {
        on_cleanup(move || tick.clear());
    }
    // Connecting at first is not news; losing a stream that was live is.
    let was_live = StoredValue::new(false);
    Effect::new(move |_| match live.stream.get() {
        StreamState::Live => {
            was_live.set_value(true);
            offline_since.set(None);
        }
        _ if was_live.get_value() => offline_since.update(|s| {
            s.get_or_insert(js_sys::Date::now() as i64);
        }),
        _ => {}
    });
    let active = move || {
        let t = now.get();
        let mut tiles: Vec<(u8, i64, RwSignal<MigrationView>)> = live
            .migrations
            .get()
            .into_iter()
            .filter_map(|(_, view)| {
                view.with(|v| {
                    v.migration
                        .state
                        .is_active()
                        .then(|| (attention(v, t).0, v.migration.started_at_ms, view))
                })
            })
            .collect();
        by_attention(&mut tiles);
        tiles
    };
    let totals = move || {
        let tiles = active();
        let bandwidth: u64 = tiles
            .iter()
            .map(|(_, _, v)| {
                v.with(|v| {
                    v.migration
                        .last_sample
                        .as_ref()
                        .map_or(0, |s| s.transfer_rate_bytes_per_s)
                })
            })
            .sum();
        let hosts = live.hosts.get();
        let connected = hosts
            .iter()
            .filter(|h| h.state == converge_api::HostState::Connected)
            .count();
        (tiles.len(), bandwidth, connected, hosts.len())
    };

    view! {
        <header class="kiosk-head">
            <span class="brand">"Converge"</span>
            {move || {
                let (running, bandwidth, up, hosts) = totals();
                view! {
                    <span data-testid="kiosk-running"><b>{running}</b> {if running == 1 { " migration running" } else { " migrations running" }}</span>
                    <span data-testid="kiosk-bandwidth"><b>{format::rate(bandwidth)}</b> " in total"</span>
                    <span class=if up < hosts { "warn" } else { "" }><b>{format!("{up}/{hosts}")}</b> " hosts connected"</span>
                }
            }}
            <span class="kiosk-clock">{move || format::time_of_day(now.get())}</span>
        </header>
        <Offline since=offline_since />
        <Drains live=live />
        {move || {
            let tiles = active();
            if tiles.is_empty() {
                view! { <p class="kiosk-message" data-testid="kiosk-idle">"No migration running"</p> }.into_any()
            } else {
                view! {
                    <ol class="board" data-testid="board">
                        {tiles.into_iter().map(|(_, _, view)| view! { <Tile view=view now=now /> }).collect_view()}
                    </ol>
                }.into_any()
            }
        }}
    }
}

/// A progress bar per drain under way: VMs moved of all, the ETA, and how many need
/// attention.
#[component]
fn Drains(live: Live) -> impl IntoView {
    move || {
        live.drains
            .get()
            .into_iter()
            .filter(|d| d.state.is_active())
            .map(|d| {
                let (moved, total, attention) = (d.moved(), d.items.len(), d.needing_attention());
                let pct = d.moved_pct();
                view! {
                    <section class="kiosk-drain" data-testid="kiosk-drain">
                        <div class="tile-head">
                            <span class="tile-vm">{format!("Draining {}", d.hosts.join(", "))}</span>
                            <span class="tile-why">{d.state.wire_name()}</span>
                        </div>
                        <progress class="drain-progress" max="100" value=pct.to_string()></progress>
                        <div class="tile-figures">
                            <span data-testid="kiosk-drain-moved"><b>{format!("{moved}/{total}")}</b> " VMs moved"</span>
                            {d.eta_at_ms.map(|at| view! { <span><b>{format::time_of_day(at)}</b> " expected done"</span> })}
                            {(attention > 0).then(|| view! { <span class="warn"><b>{attention}</b> " need attention"</span> })}
                        </div>
                    </section>
                }
            })
            .collect_view()
    }
}

/// Board order of `(attention rank, started at, tile)`: most in need of attention first,
/// then the longest running; ties keep their order.
fn by_attention<T>(tiles: &mut [(u8, i64, T)]) {
    // An insertion sort, as in `Live::ordered`: a std sort costs kilobytes of wasm.
    for i in 1..tiles.len() {
        let mut j = i;
        while j > 0 && (tiles[j - 1].0, tiles[j - 1].1) > (tiles[j].0, tiles[j].1) {
            tiles.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// How much a migration needs someone to look at it (0 = most), and why in words.
fn attention(v: &MigrationView, now_ms: i64) -> (u8, &'static str) {
    let m = &v.migration;
    let verdict = m.forecast.as_ref().map(|f| f.verdict);
    let throttle = m
        .last_sample
        .as_ref()
        .and_then(|s| s.throttle_pct)
        .unwrap_or(0);
    let near = m
        .deadline
        .as_ref()
        .is_some_and(|d| d.at_ms - now_ms < NEAR_DEADLINE_MS);
    if verdict == Some(Verdict::WillNotConverge) {
        (0, "will not converge")
    } else if verdict == Some(Verdict::Stalled) {
        (1, "stalled")
    } else if throttle >= HARD_THROTTLE_PCT {
        (2, "throttled")
    } else if near {
        (3, "near deadline")
    } else if m.state == MigrationState::PostCopy {
        (4, "post-copy")
    } else if verdict == Some(Verdict::SwitchingOver) {
        (5, "switching over")
    } else if verdict == Some(Verdict::Converging) {
        (6, "converging")
    } else {
        (7, "starting")
    }
}

/// One migration, in type big enough for the back of the room.
#[component]
fn Tile(view: RwSignal<MigrationView>, now: RwSignal<i64>) -> impl IntoView {
    move || {
        let t = now.get();
        view.with(|v| {
            let (rank, why) = attention(v, t);
            let m = &v.migration;
            let s = m.last_sample.as_ref();
            let eta = m.forecast.as_ref().and_then(|f| f.eta_max_s).map(|hi| {
                format!("ends within {}", format::duration_ms(hi * 1000))
            });
            let throttle = s.and_then(|s| s.throttle_pct).filter(|p| *p > 0);
            view! {
                <li class=format!("tile attention-{rank}") data-testid="tile" data-vm=m.vm_name.clone()>
                    <div class="tile-head">
                        <span class="tile-vm">{m.vm_name.clone()}</span>
                        <span class="tile-why" data-testid="tile-why">{why}</span>
                    </div>
                    <div class="tile-route">{m.source.clone()} " → " {m.destination.clone().unwrap_or_default()}</div>
                    <div class="tile-figures">
                        <span><b>{m.progress_pct.map(format::pct).unwrap_or_else(|| "–".into())}</b> " done"</span>
                        <span><b>{s.map(|s| format::rate(s.transfer_rate_bytes_per_s)).unwrap_or_default()}</b> " sent"</span>
                        <span><b>{s.map(|s| format::rate(s.dirty_rate_bytes_per_s)).unwrap_or_default()}</b> " dirtied"</span>
                        {throttle.map(|p| view! { <span><b>{format!("{p} %")}</b> " CPU throttle"</span> })}
                    </div>
                    {m.forecast.as_ref().map(|f| view! { <div class="tile-reason">{f.reason.clone()}</div> })}
                    <div class="tile-foot">
                        {eta}
                        {countdown(v, t).map(|c| view! { <span class="tile-deadline">{c}</span> })}
                    </div>
                </li>
            }
        })
    }
}

#[cfg(test)]
mod tests;
