//! Prometheus metrics, on a listener of their own (`[metrics]` in the config).
//!
//! Read from the fleet and the database at each scrape, not counted on the side: the
//! numbers are the ones the dashboard shows, and nothing is kept for them in between.
//! Hosts and running migrations are gauges; finished migrations are counters taken from
//! the history, which keeps every migration, so they only ever grow.
//!
//! Every scrape must carry `Authorization: Bearer <token>`; the config holds the token's
//! SHA-256, so the file never contains a credential that works.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use converge_api::{DirtyRate, Drain, Host, HostState, ItemState, Migration, MigrationState};
use tokio::net::TcpListener;

use crate::AppState;

/// The exposition format the body is written in.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the server shuts down.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        // Not "listening url=…": that line is the dashboard's, which scripts look for.
        tracing::info!(metrics = %format!("http://{addr}/metrics"), "serving Prometheus metrics");
    }
    let stopping = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .await
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = state.config.metrics.as_ref().map(|m| &m.token_sha256) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|token| token_matches(token, expected)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need `Authorization: Bearer <token>` with the token whose SHA-256 is [metrics] token_sha256\n",
        )
            .into_response();
    }
    let now_ms = crate::clock::unix_ms_now(&*state.clock);
    let (hosts, migrations, dirty_rates) = {
        let fleet = state.fleet.read();
        (fleet.hosts(), fleet.migrations(), fleet.dirty_rates())
    };
    let drains = state.drains.active();
    let finished = match state.store.count_finished().await {
        Ok(counts) => counts,
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot count finished migrations");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the migration history cannot be read right now\n",
            )
                .into_response();
        }
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(
            &Fleet {
                hosts: &hosts,
                migrations: &migrations,
                dirty_rates: &dirty_rates,
                drains: &drains,
            },
            &finished,
            now_ms,
        ),
    )
        .into_response()
}

/// Whether `token` hashes to `expected_hex` (lower-case hex, checked by the config),
/// comparing every digit.
fn token_matches(token: &str, expected_hex: &str) -> bool {
    let actual = crate::auth::secret_sha256(token);
    actual.len() == expected_hex.len()
        && actual
            .bytes()
            .zip(expected_hex.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// What the metrics show of the fleet.
#[derive(Debug, Clone, Copy)]
pub struct Fleet<'a> {
    /// Every host.
    pub hosts: &'a [Host],
    /// Migrations (active ones are shown).
    pub migrations: &'a [Migration],
    /// The VMs' latest dirty-rate readings: (VM name, host, reading).
    pub dirty_rates: &'a [(String, String, DirtyRate)],
    /// Drains under way.
    pub drains: &'a [Drain],
}

/// The drains under way: state, VMs by state, ETA.
fn render_drains(out: &mut String, drains: &[Drain], now_ms: i64) {
    family(
        out,
        "converge_drain_info",
        "gauge",
        "1 per drain under way, labelled with its hosts and state.",
    );
    for d in drains {
        let hosts = d.hosts.join(",");
        sample(
            out,
            "converge_drain_info",
            &[
                ("drain", &d.id),
                ("hosts", &hosts),
                ("state", d.state.wire_name()),
            ],
            1,
        );
    }
    family(
        out,
        "converge_drain_vms",
        "gauge",
        "VMs of a drain under way, by where they stand (pending, migrating, waiting, moved, left, skipped).",
    );
    for d in drains {
        for state in [
            ItemState::Pending,
            ItemState::Migrating,
            ItemState::Waiting,
            ItemState::Moved,
            ItemState::Left,
            ItemState::Skipped,
        ] {
            sample(
                out,
                "converge_drain_vms",
                &[("drain", &d.id), ("state", state.wire_name())],
                d.count(state),
            );
        }
    }
    family(
        out,
        "converge_drain_eta_seconds",
        "gauge",
        "Seconds until a drain under way is expected to be over (absent when some VM is not expected to finish).",
    );
    for d in drains {
        if let Some(at) = d.eta_at_ms {
            sample(
                out,
                "converge_drain_eta_seconds",
                &[("drain", &d.id)],
                ((at - now_ms) / 1000).max(0),
            );
        }
    }
}

/// The exposition text for the fleet and counts of finished migrations by state.
pub fn render(fleet: &Fleet<'_>, finished: &[(String, u64)], now_ms: i64) -> String {
    let Fleet {
        hosts,
        migrations,
        dirty_rates,
        drains,
    } = *fleet;
    let mut out = String::new();

    family(
        &mut out,
        "converge_host_up",
        "gauge",
        "1 while Converge holds a libvirt connection to the host.",
    );
    for h in hosts {
        let up = u8::from(h.state == HostState::Connected);
        sample(&mut out, "converge_host_up", &[("host", &h.name)], up);
    }
    family(
        &mut out,
        "converge_host_degraded",
        "gauge",
        "1 while a libvirt call to the host has gone unanswered for longer than its bound.",
    );
    for h in hosts {
        let degraded = u8::from(h.degraded.is_some());
        sample(
            &mut out,
            "converge_host_degraded",
            &[("host", &h.name)],
            degraded,
        );
    }
    family(
        &mut out,
        "converge_host_vms",
        "gauge",
        "VMs libvirt lists on the host.",
    );
    for h in hosts {
        sample(
            &mut out,
            "converge_host_vms",
            &[("host", &h.name)],
            h.vm_count,
        );
    }

    family(
        &mut out,
        "converge_host_draining",
        "gauge",
        "1 while a drain empties the host (nothing moves into it).",
    );
    for h in hosts {
        let draining = u8::from(h.draining.is_some());
        sample(
            &mut out,
            "converge_host_draining",
            &[("host", &h.name)],
            draining,
        );
    }
    render_drains(&mut out, drains, now_ms);

    family(
        &mut out,
        "converge_vm_dirty_rate_bytes",
        "gauge",
        "The guest's dirty rate, bytes/s, as libvirt last measured it while it did not migrate.",
    );
    for (vm, host, reading) in dirty_rates {
        sample(
            &mut out,
            "converge_vm_dirty_rate_bytes",
            &[("vm", vm), ("host", host)],
            reading.bytes_per_s,
        );
    }
    family(
        &mut out,
        "converge_vm_dirty_rate_age_seconds",
        "gauge",
        "Seconds since that measurement.",
    );
    for (vm, host, reading) in dirty_rates {
        sample(
            &mut out,
            "converge_vm_dirty_rate_age_seconds",
            &[("vm", vm), ("host", host)],
            (now_ms.saturating_sub(reading.at_ms) / 1000).max(0),
        );
    }

    let active: Vec<&Migration> = migrations.iter().filter(|m| m.state.is_active()).collect();
    family(
        &mut out,
        "converge_migrations_running",
        "gauge",
        "Migrations starting, in pre-copy or in post-copy.",
    );
    sample(&mut out, "converge_migrations_running", &[], active.len());
    family(
        &mut out,
        "converge_migrations_finished_total",
        "counter",
        "Migrations that ended, by outcome, over the life of the database.",
    );
    for outcome in [
        MigrationState::Completed,
        MigrationState::Failed,
        MigrationState::Aborted,
        MigrationState::Unknown,
    ] {
        let name = outcome.wire_name();
        let count = finished
            .iter()
            .find(|(state, _)| state == name)
            .map_or(0, |(_, n)| *n);
        sample(
            &mut out,
            "converge_migrations_finished_total",
            &[("outcome", name)],
            count,
        );
    }

    // One series per running migration, labelled by VM and route (a VM has at most one).
    type Value = fn(&Migration, i64) -> Option<f64>;
    let per_migration: [(&str, &str, Value); 10] = [
        (
            "converge_migration_elapsed_seconds",
            "Time since the migration started.",
            |m, now| Some((now - m.started_at_ms).max(0) as f64 / 1000.0),
        ),
        (
            "converge_migration_iteration",
            "The pre-copy pass being sent (1 = the first, whole-memory pass).",
            |m, _| m.last_sample.as_ref().map(|s| f64::from(s.iteration)),
        ),
        (
            "converge_migration_transfer_bytes_per_second",
            "Bytes per second on the wire.",
            |m, _| {
                m.last_sample
                    .as_ref()
                    .map(|s| s.transfer_rate_bytes_per_s as f64)
            },
        ),
        (
            "converge_migration_dirty_bytes_per_second",
            "Bytes per second the guest dirties, as QEMU measures it.",
            |m, _| {
                m.last_sample
                    .as_ref()
                    .map(|s| s.dirty_rate_bytes_per_s as f64)
            },
        ),
        (
            "converge_migration_remaining_bytes",
            "Memory still to send in the current pass.",
            |m, _| m.last_sample.as_ref().map(|s| s.mem_remaining_bytes as f64),
        ),
        (
            "converge_migration_progress_ratio",
            "Share of memory at the destination and not dirtied since (0–1).",
            |m, _| m.progress_pct.map(|p| p / 100.0),
        ),
        (
            "converge_migration_expected_downtime_seconds",
            "The pause QEMU expects if it switched over now.",
            |m, _| {
                m.last_sample
                    .as_ref()
                    .and_then(|s| s.expected_downtime_ms)
                    .map(|ms| ms as f64 / 1000.0)
            },
        ),
        (
            "converge_migration_throttle_ratio",
            "How much auto-converge slows the guest's vCPUs (0–0.99).",
            |m, _| {
                m.last_sample
                    .as_ref()
                    .map(|s| f64::from(s.throttle_pct.unwrap_or(0)) / 100.0)
            },
        ),
        (
            "converge_migration_eta_max_seconds",
            "The forecast's latest end, from now.",
            |m, _| {
                m.forecast
                    .as_ref()
                    .and_then(|f| f.eta_max_s)
                    .map(|s| s as f64)
            },
        ),
        (
            "converge_migration_deadline_seconds",
            "Time until the deadline policy acts (negative: overdue).",
            |m, now| m.deadline.as_ref().map(|d| (d.at_ms - now) as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in per_migration {
        family(&mut out, name, "gauge", help);
        for m in &active {
            if let Some(v) = value(m, now_ms) {
                sample(&mut out, name, &route(m, None), v);
            }
        }
    }
    family(
        &mut out,
        "converge_migration_verdict",
        "gauge",
        "1 for the forecast's current verdict on a running migration (label verdict).",
    );
    for m in &active {
        if let Some(verdict) = verdict_name(m) {
            sample(
                &mut out,
                "converge_migration_verdict",
                &route(m, Some(verdict)),
                1,
            );
        }
    }
    out
}

fn route<'a>(m: &'a Migration, verdict: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("vm", m.vm_name.as_str()),
        ("source", m.source.as_str()),
        ("destination", m.destination.as_deref().unwrap_or("")),
    ];
    if let Some(v) = verdict {
        labels.push(("verdict", v));
    }
    labels
}

fn verdict_name(m: &Migration) -> Option<&'static str> {
    if m.state == MigrationState::PostCopy {
        return Some(MigrationState::PostCopy.wire_name());
    }
    m.forecast.as_ref().map(|f| f.verdict.wire_name())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"");
            escape_label(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and line feeds (VM names are the operators' to choose).
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
