//! Domain events, delivered to a Rust closure: migration iterations and job completion
//! make progress exact instead of inferred from polls.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Arc;

use virt::connect::Connect;
use virt::sys;

use crate::error::Error;
use crate::job::{JobKind, JobStats};
use crate::typed_params;

/// A lifecycle change (`virDomainEventType`), with libvirt's detail code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// Defined (detail 2: by an incoming migration).
    Defined(i32),
    /// Undefined.
    Undefined(i32),
    /// Started (detail 1: by an incoming migration).
    Started(i32),
    /// Suspended (detail 1: paused for the switchover; 7: post-copy).
    Suspended(i32),
    /// Resumed (detail 1: after migration; 3: post-copy).
    Resumed(i32),
    /// Stopped (detail 3: migrated away; 4: saved; 1: destroyed).
    Stopped(i32),
    /// Shut down, crashed, PM-suspended or unknown: (event, detail).
    Other(i32, i32),
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEventKind {
    /// A job finished successfully, with its final statistics (for a migration on the
    /// source: downtime, total time, data sent).
    JobCompleted(JobStats),
    /// A pre-copy pass over memory began; `iteration` counts from 1.
    MigrationIteration(u32),
    /// The domain's lifecycle changed.
    Lifecycle(LifecycleEvent),
}

/// An event about one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    /// The domain's UUID.
    pub uuid: String,
    /// The domain's name.
    pub name: String,
    /// What happened.
    pub kind: DomainEventKind,
}

type Callback = Arc<dyn Fn(DomainEvent) + Send + Sync>;

/// Registered event callbacks; dropping this deregisters them.
#[derive(Debug)]
pub struct EventSubscription {
    conn: Connect,
    ids: Vec<c_int>,
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            // SAFETY: `id` was returned by `virConnectDomainEventRegisterAny` on this
            // connection; libvirt frees the opaque box through `free_callback`. On a dead
            // connection this fails harmlessly.
            unsafe {
                sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), id);
            }
        }
    }
}

pub(crate) fn subscribe(conn: Connect, callback: Callback) -> Result<EventSubscription, Error> {
    // libvirt's C API takes every callback through one generic pointer type and calls it
    // with the signature that belongs to the event ID (the VIR_DOMAIN_EVENT_CALLBACK cast
    // in libvirt's own headers). The transmutes below are that cast.
    // SAFETY: each function has exactly the C signature libvirt documents for its event ID.
    let handlers: [(u32, sys::virConnectDomainEventGenericCallback); 3] = unsafe {
        [
            (
                sys::VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        sys::virTypedParameterPtr,
                        c_int,
                        *mut c_void,
                    ),
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_job_completed)),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *mut c_void),
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_iteration)),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        c_int,
                        c_int,
                        *mut c_void,
                    ),
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_lifecycle)),
            ),
        ]
    };
    let mut subscription = EventSubscription {
        conn,
        ids: Vec::new(),
    };
    for (event_id, handler) in handlers {
        let opaque: *mut Callback = Box::into_raw(Box::new(callback.clone()));
        // SAFETY: `opaque` is reclaimed exactly once by `free_callback` (on deregistration)
        // or below if registration fails. A NULL domain means "every domain".
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                subscription.conn.as_ptr(),
                std::ptr::null_mut(),
                event_id as c_int,
                handler,
                opaque.cast::<c_void>(),
                Some(free_callback),
            )
        };
        if id < 0 {
            // SAFETY: registration failed, so libvirt did not keep `opaque`.
            drop(unsafe { Box::from_raw(opaque) });
            return Err(Error::last()); // `subscription` drops and deregisters the others
        }
        subscription.ids.push(id);
    }
    Ok(subscription)
}

/// Name and UUID of the domain an event is about.
///
/// # Safety
/// `dom` must be the live domain pointer libvirt passed to the callback.
unsafe fn identify(dom: sys::virDomainPtr) -> (String, String) {
    let mut uuid = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `uuid` has VIR_UUID_STRING_BUFLEN bytes, as libvirt requires.
    let uuid = if unsafe { sys::virDomainGetUUIDString(dom, uuid.as_mut_ptr()) } == 0 {
        // SAFETY: libvirt NUL-terminated the buffer.
        unsafe { CStr::from_ptr(uuid.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    // SAFETY: the name belongs to `dom` and stays valid during the callback.
    let name = unsafe { sys::virDomainGetName(dom) };
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL, NUL-terminated, owned by `dom`.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    (uuid, name)
}

/// # Safety
/// `opaque` must be a live `Callback` box registered by `subscribe`; `dom` a live domain.
unsafe fn deliver(dom: sys::virDomainPtr, opaque: *mut c_void, kind: DomainEventKind) {
    // SAFETY: guaranteed by the caller.
    let (uuid, name) = unsafe { identify(dom) };
    // SAFETY: guaranteed by the caller; libvirt does not free it during a callback.
    let callback = unsafe { &*opaque.cast::<Callback>() };
    let event = DomainEvent { uuid, name, kind };
    // A panic must not unwind into libvirt's C frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(event)));
}

unsafe extern "C" fn on_job_completed(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    params: sys::virTypedParameterPtr,
    nparams: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: libvirt passes `nparams` parameters it owns for the callback's duration.
    let params = unsafe { typed_params::read(params, nparams) };
    let stats = JobStats {
        kind: JobKind::Completed,
        params,
    };
    // SAFETY: arguments as libvirt passed them.
    unsafe { deliver(dom, opaque, DomainEventKind::JobCompleted(stats)) };
}

unsafe extern "C" fn on_iteration(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    iteration: c_int,
    opaque: *mut c_void,
) {
    let iteration = u32::try_from(iteration).unwrap_or(0);
    // SAFETY: arguments as libvirt passed them.
    unsafe { deliver(dom, opaque, DomainEventKind::MigrationIteration(iteration)) };
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) {
    let lifecycle = match event as u32 {
        sys::VIR_DOMAIN_EVENT_DEFINED => LifecycleEvent::Defined(detail),
        sys::VIR_DOMAIN_EVENT_UNDEFINED => LifecycleEvent::Undefined(detail),
        sys::VIR_DOMAIN_EVENT_STARTED => LifecycleEvent::Started(detail),
        sys::VIR_DOMAIN_EVENT_SUSPENDED => LifecycleEvent::Suspended(detail),
        sys::VIR_DOMAIN_EVENT_RESUMED => LifecycleEvent::Resumed(detail),
        sys::VIR_DOMAIN_EVENT_STOPPED => LifecycleEvent::Stopped(detail),
        _ => LifecycleEvent::Other(event, detail),
    };
    // SAFETY: arguments as libvirt passed them.
    unsafe { deliver(dom, opaque, DomainEventKind::Lifecycle(lifecycle)) };
}

unsafe extern "C" fn free_callback(opaque: *mut c_void) {
    // SAFETY: libvirt calls this once per registration, with our `Box::into_raw` pointer.
    drop(unsafe { Box::from_raw(opaque.cast::<Callback>()) });
}
