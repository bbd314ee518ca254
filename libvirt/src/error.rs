//! Errors from libvirt, with the codes the server needs to tell apart.

/// Something libvirt refused or could not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// libvirt's `virErrorNumber` (0 when the error did not come from libvirt).
    pub code: i32,
    /// libvirt's `virErrorDomain`: which subsystem raised it.
    pub domain: i32,
    /// libvirt's message, meant for people.
    pub message: String,
}

/// `VIR_ERR_NO_DOMAIN`: the domain does not exist on this host.
const VIR_ERR_NO_DOMAIN: i32 = 42;
/// `VIR_ERR_NO_DOMAIN_METADATA`: the domain has no metadata of the kind asked.
const VIR_ERR_NO_DOMAIN_METADATA: i32 = 80;
/// `VIR_ERR_OPERATION_ABORTED`: the job was cancelled (`virDomainAbortJob`).
const VIR_ERR_OPERATION_ABORTED: i32 = 78;

impl Error {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self {
            code: 0,
            domain: 0,
            message: message.into(),
        }
    }

    /// libvirt's error for the call that just failed on this thread.
    pub(crate) fn last() -> Self {
        virt::error::Error::last_error().into()
    }

    /// The domain does not exist (any more) on the host asked.
    pub fn is_no_domain(&self) -> bool {
        self.code == VIR_ERR_NO_DOMAIN
    }

    /// The call's job was cancelled by an abort (from this process or any other).
    pub fn is_aborted(&self) -> bool {
        self.code == VIR_ERR_OPERATION_ABORTED
    }

    /// The domain has no metadata of the kind asked.
    pub fn is_no_metadata(&self) -> bool {
        self.code == VIR_ERR_NO_DOMAIN_METADATA
    }
}

impl From<virt::error::Error> for Error {
    fn from(err: virt::error::Error) -> Self {
        Self {
            code: err.code().to_raw() as i32,
            domain: err.domain().to_raw() as i32,
            message: err.message().to_owned(),
        }
    }
}
