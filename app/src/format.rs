//! Numbers in human units: binary sizes (MiB, GiB), rates, durations.
//!
//! Integer arithmetic only: formatting an `f64` pulls Rust's float printing into the wasm
//! bundle (~10 KB), and no figure here needs it. A number and its unit are joined with
//! `+` rather than `format!`, which sets up its formatting machinery at every call.

const KIB: u64 = 1024;
const MIB: u64 = KIB * 1024;
const GIB: u64 = MIB * 1024;

/// `whole.fraction` from a value scaled by 10^`decimals`, rounded.
fn fixed(numerator: u64, denominator: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let scaled = (u128::from(numerator) * u128::from(scale) + u128::from(denominator) / 2)
        / u128::from(denominator.max(1));
    let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
    if decimals == 0 {
        scaled.to_string()
    } else {
        format!(
            "{}.{:0width$}",
            scaled / scale,
            scaled % scale,
            width = decimals as usize
        )
    }
}

/// `512 MiB`, `1.93 GiB`, `740 KiB`. A unit takes over where the one below would round
/// up to its limit, so no figure reads `1024 MiB` or `10.0 MiB`.
pub fn bytes(n: u64) -> String {
    if n >= GIB - MIB / 2 {
        fixed(n, GIB, 2) + " GiB"
    } else if n >= 10 * MIB - MIB / 20 {
        fixed(n, MIB, 0) + " MiB"
    } else if n >= MIB - KIB / 2 {
        fixed(n, MIB, 1) + " MiB"
    } else if n >= KIB {
        fixed(n, KIB, 0) + " KiB"
    } else {
        n.to_string() + " B"
    }
}

/// `32.0 MiB/s`; like [`bytes`], never `1024 KiB/s` or `1024.0 MiB/s`.
pub fn rate(bytes_per_s: u64) -> String {
    let n = bytes_per_s;
    if n >= GIB - MIB / 20 {
        fixed(n, GIB, 2) + " GiB/s"
    } else if n >= MIB - KIB / 2 {
        fixed(n, MIB, 1) + " MiB/s"
    } else {
        fixed(n, KIB, 0) + " KiB/s"
    }
}

/// `33 ms`, `4.1 s`, `2 min 05 s`, `1 h 02 min`. Every unit rounds down, so `59.97 s`
/// reads `59.9 s`, not `60.0 s`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        ms.to_string() + " ms"
    } else if ms < 60_000 {
        fixed(ms / 100, 10, 1) + " s"
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `63 %`, rounded, but short of 100 it reads at most `99 %`: `100 %` means all of it.
pub fn pct(p: f64) -> String {
    let whole = p.round() as i64;
    format!("{} %", if p < 100.0 { whole.min(99) } else { whole })
}

/// `2026-11-28 14:03:07` in the browser's local time.
pub fn clock(unix_ms: i64) -> String {
    let d = date(unix_ms);
    format!(
        "{}-{:02}-{:02} {}",
        d.get_full_year(),
        d.get_month() + 1,
        d.get_date(),
        time_of_day(unix_ms)
    )
}

/// `14:03:07` in the browser's local time: the end of [`clock`].
pub fn time_of_day(unix_ms: i64) -> String {
    let d = date(unix_ms);
    format!(
        "{:02}:{:02}:{:02}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

fn date(unix_ms: i64) -> js_sys::Date {
    js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(unix_ms as f64))
}

/// The preset a migration started from and the settings its start changed: `converge`,
/// `converge, changed: bandwidth_mib_s`; `–` for one found running.
pub fn preset(preset: Option<&str>, changed: Option<&[String]>) -> String {
    let mut text = preset.unwrap_or("–").to_owned();
    for (i, field) in changed.unwrap_or_default().iter().enumerate() {
        text.push_str(if i == 0 { ", changed: " } else { ", " });
        text.push_str(field);
    }
    text
}

#[cfg(test)]
mod tests;

/// A background dirty-rate reading: `12.0 MiB/s ↑ 3 min ago` (the arrow when it moved by
/// a fifth or more since the reading before).
pub fn dirty_rate(r: &converge_api::DirtyRate, now_ms: i64) -> String {
    let was = r.previous_bytes_per_s.unwrap_or(r.bytes_per_s);
    let trend = if r.bytes_per_s * 5 > was * 6 {
        " ↑"
    } else if r.bytes_per_s * 6 < was * 5 {
        " ↓"
    } else {
        ""
    };
    let ago = now_ms.saturating_sub(r.at_ms).max(0) / 1000;
    let ago = if ago < 60 {
        format!("{ago} s")
    } else {
        format!("{} min", ago / 60)
    };
    format!("{}{trend} {ago} ago", rate(r.bytes_per_s))
}

/// What came of an advice that was applied: `Raise the downtime limit to 300 ms: applied
/// by ada → completed 2 s later`; `None` for one never applied.
pub fn advice_outcome(r: &converge_api::AdviceRecord) -> Option<String> {
    r.applied_at_ms?;
    Some(format!(
        "{}: applied by {} → {}",
        r.action,
        r.applied_by.as_deref().unwrap_or("?"),
        r.outcome.as_deref().unwrap_or("running")
    ))
}
