//! Numbers in human units: binary sizes (MiB, GiB), rates, durations.

const KIB: f64 = 1024.0;
const MIB: f64 = KIB * 1024.0;
const GIB: f64 = MIB * 1024.0;

/// `512 MiB`, `1.93 GiB`, `740 KiB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= GIB {
        format!("{:.2} GiB", n / GIB)
    } else if n >= 10.0 * MIB {
        format!("{:.0} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n / MIB)
    } else if n >= KIB {
        format!("{:.0} KiB", n / KIB)
    } else {
        format!("{n:.0} B")
    }
}

/// `32.0 MiB/s`.
pub fn rate(bytes_per_s: u64) -> String {
    let n = bytes_per_s as f64;
    if n >= GIB {
        format!("{:.2} GiB/s", n / GIB)
    } else if n >= MIB {
        format!("{:.1} MiB/s", n / MIB)
    } else {
        format!("{:.0} KiB/s", n / KIB)
    }
}

/// `33 ms`, `4.1 s`, `2 min 05 s`, `1 h 02 min`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `63 %`.
pub fn pct(p: f64) -> String {
    format!("{p:.0} %")
}
