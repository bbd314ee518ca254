//! Converge's layer over libvirt: the calls the `virt` crate lacks or gets wrong, made
//! safe once, so the server never touches a raw pointer.
//!
//! - [`Domain::job_stats`] replaces `virt`'s, which builds a `Vec` from libvirt's array
//!   with `Vec::from_raw_parts` — undefined behaviour when no job runs (the pointer is
//!   NULL), and it frees libvirt's memory with Rust's allocator instead of
//!   `virTypedParamsFree`.
//! - Abort, post-copy switch and reading the downtime limit go through `virt::sys`.
//! - Domain events (job completed, migration iteration, lifecycle) and the connection's
//!   close callback, delivered to a Rust closure.
//!
//! Every call blocks on the network: call from a thread of your own, never from an async
//! executor. Call [`init`] once before opening any connection.

mod connection;
mod domain;
mod error;
mod events;
mod job;
mod typed_params;

pub use connection::{CloseReason, Connection, DomainSummary, NovaInstance};
pub use domain::{Domain, DomainState, MigrationFlags, MigrationRequest};
pub use error::Error;
pub use events::{DomainEvent, DomainEventKind, EventSubscription, LifecycleEvent};
pub use job::{JobKind, JobStats};
pub use typed_params::ParamValue;

use std::sync::OnceLock;

/// Registers libvirt's default event loop and runs it on a background thread, and stops
/// libvirt from printing every error to stderr (errors are returned instead). Domain
/// events and keepalive both need the loop. Idempotent; fails only if libvirt cannot
/// register its loop.
pub fn init() -> Result<(), Error> {
    static STARTED: OnceLock<Result<(), Error>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            virt::error::clear_error_callback();
            virt::event::event_register_default_impl().map_err(Error::from)?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| {
                    loop {
                        if let Err(err) = virt::event::event_run_default_impl() {
                            tracing::error!(error = %err, "libvirt event loop iteration failed");
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
                .map_err(|err| {
                    Error::other(format!("cannot start the libvirt event thread: {err}"))
                })?;
            Ok(())
        })
        .clone()
}
