//! Job statistics (`virsh domjobinfo`), read safely.

use crate::typed_params::ParamValue;

/// What kind of job a reading describes (`virDomainJobType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// No job is running.
    None,
    /// A job with a known end (e.g. a migration's size is known).
    Bounded,
    /// A job without a known end.
    Unbounded,
    /// The last job finished successfully (only with the `completed` flag).
    Completed,
    /// The last job failed.
    Failed,
    /// The last job was cancelled.
    Cancelled,
    /// A value this code does not know.
    Other(i32),
}

impl JobKind {
    pub(crate) fn from_raw(raw: i32) -> Self {
        match raw {
            0 => JobKind::None,
            1 => JobKind::Bounded,
            2 => JobKind::Unbounded,
            3 => JobKind::Completed,
            4 => JobKind::Failed,
            5 => JobKind::Cancelled,
            other => JobKind::Other(other),
        }
    }

    /// Whether a job is running now.
    pub fn is_active(self) -> bool {
        matches!(self, JobKind::Bounded | JobKind::Unbounded)
    }
}

/// One reading of a domain's job statistics: every field libvirt returned, by libvirt's
/// name (`memory_remaining`, `memory_dirty_rate`, …), in libvirt's units.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStats {
    /// The job's kind.
    pub kind: JobKind,
    /// Every parameter, as returned.
    pub params: Vec<(String, ParamValue)>,
}

impl JobStats {
    /// The parameter called `name`, if libvirt returned it.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// An unsigned integer parameter.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(ParamValue::as_u64)
    }

    /// A signed integer parameter.
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(ParamValue::as_i64)
    }

    /// A string parameter (e.g. `errmsg`).
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(ParamValue::String(s)) => Some(s),
            _ => None,
        }
    }
}
