//! libvirt job statistics → typed samples with derived values. Pure functions.

use converge_api::{FinalStats, RawField, Sample, XbzrleStats};
use converge_libvirt::{JobStats, ParamValue};
use time::OffsetDateTime;

use crate::clock::unix_ms;

/// QEMU's page size on x86 when libvirt does not report one.
const DEFAULT_PAGE_SIZE: u64 = 4096;

/// A sample from one job-statistics reading taken at `at`. Names are libvirt's
/// `VIR_DOMAIN_JOB_*` field names (libvirt-domain.h); times are ms, sizes bytes.
pub fn sample_from(stats: &JobStats, at: OffsetDateTime) -> Sample {
    let u = |name| stats.u64(name).unwrap_or(0);
    let page_size_bytes = stats.u64("memory_page_size").unwrap_or(DEFAULT_PAGE_SIZE);
    let dirty_rate_pages_per_s = u("memory_dirty_rate");
    // xbzrle counters appear only when the migration was started with compression.
    let xbzrle = stats
        .u64("compression_cache")
        .map(|cache_bytes| XbzrleStats {
            cache_bytes,
            bytes: u("compression_bytes"),
            pages: u("compression_pages"),
            cache_misses: u("compression_cache_misses"),
            overflow: u("compression_overflow"),
        });
    Sample {
        at_ms: unix_ms(at),
        elapsed_ms: u("time_elapsed"),
        data_total_bytes: u("data_total"),
        data_processed_bytes: u("data_processed"),
        data_remaining_bytes: u("data_remaining"),
        mem_total_bytes: u("memory_total"),
        mem_processed_bytes: u("memory_processed"),
        mem_remaining_bytes: u("memory_remaining"),
        transfer_rate_bytes_per_s: u("memory_bps"),
        dirty_rate_pages_per_s,
        dirty_rate_bytes_per_s: dirty_rate_pages_per_s.saturating_mul(page_size_bytes),
        page_size_bytes,
        iteration: u32::try_from(u("memory_iteration")).unwrap_or(u32::MAX),
        constant_pages: u("memory_constant"),
        normal_pages: u("memory_normal"),
        normal_bytes: u("memory_normal_bytes"),
        // While the job runs, libvirt's `downtime` is QEMU's expected downtime.
        expected_downtime_ms: stats.u64("downtime"),
        setup_time_ms: stats.u64("setup_time"),
        throttle_pct: stats
            .u64("auto_converge_throttle")
            .map(|p| u32::try_from(p).unwrap_or(100)),
        xbzrle,
        postcopy_requests: stats.u64("memory_postcopy_requests"),
        disk_total_bytes: stats.u64("disk_total"),
        disk_processed_bytes: stats.u64("disk_processed"),
    }
}

/// Final statistics from a completed job (the job-completed event, or the completed-job
/// reading): there `downtime` is the actual pause.
pub fn final_stats(stats: &JobStats) -> FinalStats {
    FinalStats {
        downtime_ms: stats.u64("downtime"),
        total_time_ms: stats.u64("time_elapsed"),
        data_sent_bytes: stats.u64("data_processed"),
        mem_total_bytes: stats.u64("memory_total"),
        setup_time_ms: stats.u64("setup_time"),
        iterations: stats
            .u64("memory_iteration")
            .and_then(|i| u32::try_from(i).ok()),
        postcopy_requests: stats.u64("memory_postcopy_requests"),
    }
}

/// Every field of a reading as text, for the detail view.
pub fn raw_fields(stats: &JobStats) -> Vec<RawField> {
    stats
        .params
        .iter()
        .map(|(name, value)| {
            let text = match value {
                ParamValue::Int(v) => v.to_string(),
                ParamValue::UInt(v) => v.to_string(),
                ParamValue::LLong(v) => v.to_string(),
                ParamValue::ULLong(v) => v.to_string(),
                ParamValue::Double(v) => v.to_string(),
                ParamValue::Boolean(v) => v.to_string(),
                ParamValue::String(v) => v.clone(),
            };
            RawField {
                name: name.clone(),
                value: text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_libvirt::JobKind;

    fn stats(fields: &[(&str, ParamValue)]) -> JobStats {
        JobStats {
            kind: JobKind::Unbounded,
            params: fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn dirty_rate_in_bytes_is_pages_times_page_size() {
        let s = sample_from(
            &stats(&[
                ("memory_dirty_rate", ParamValue::ULLong(25_000)),
                ("memory_page_size", ParamValue::ULLong(4096)),
                ("memory_bps", ParamValue::ULLong(33_554_432)),
                ("memory_iteration", ParamValue::ULLong(7)),
                ("downtime", ParamValue::ULLong(4100)),
            ]),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(s.dirty_rate_bytes_per_s, 102_400_000);
        assert_eq!(s.transfer_rate_bytes_per_s, 33_554_432);
        assert_eq!(s.iteration, 7);
        assert_eq!(s.expected_downtime_ms, Some(4100));
        assert_eq!(s.xbzrle, None, "no compression fields, no xbzrle");
        assert_eq!(s.throttle_pct, None);
    }

    #[test]
    fn missing_page_size_defaults_to_4k_and_xbzrle_is_read_when_present() {
        let s = sample_from(
            &stats(&[
                ("memory_dirty_rate", ParamValue::ULLong(10)),
                ("compression_cache", ParamValue::ULLong(64 << 20)),
                ("compression_pages", ParamValue::ULLong(1000)),
                ("compression_cache_misses", ParamValue::ULLong(250)),
                ("auto_converge_throttle", ParamValue::Int(40)),
            ]),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(s.dirty_rate_bytes_per_s, 40_960);
        let x = s.xbzrle.unwrap();
        assert_eq!(
            (x.cache_bytes, x.pages, x.cache_misses),
            (64 << 20, 1000, 250)
        );
        assert_eq!(s.throttle_pct, Some(40));
    }

    #[test]
    fn final_stats_read_actual_downtime_and_data_sent() {
        let f = final_stats(&stats(&[
            ("downtime", ParamValue::ULLong(33)),
            ("time_elapsed", ParamValue::ULLong(2700)),
            ("data_processed", ParamValue::ULLong(90_000_000)),
            ("memory_iteration", ParamValue::ULLong(3)),
        ]));
        assert_eq!(f.downtime_ms, Some(33));
        assert_eq!(f.total_time_ms, Some(2700));
        assert_eq!(f.data_sent_bytes, Some(90_000_000));
        assert_eq!(f.iterations, Some(3));
    }
}
