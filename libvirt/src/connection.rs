//! One connection to one libvirt daemon.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use virt::connect::Connect;
use virt::sys;

use crate::domain::{Domain, DomainState};
use crate::error::Error;
use crate::events::{self, DomainEvent, EventSubscription};

/// Seconds between keepalive probes, and probes missed before the connection is closed:
/// a daemon that vanished is noticed within ~15 s even when no call is in flight.
const KEEPALIVE_INTERVAL_S: i32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// Why libvirt closed a connection (`virConnectCloseReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Misc I/O error.
    Error,
    /// End of file from the server (the daemon stopped or restarted).
    Eof,
    /// Keepalive timer triggered.
    Keepalive,
    /// Closed by the client.
    Client,
    /// A value this code does not know.
    Other(i32),
}

/// What the fleet page needs to know about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    /// The domain's name.
    pub name: String,
    /// The domain's UUID.
    pub uuid: String,
    /// Its state.
    pub state: DomainState,
    /// Current memory, in bytes.
    pub memory_bytes: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Nova's metadata, when Nova manages the domain.
    pub nova: Option<NovaInstance>,
}

/// What Nova writes into the metadata of a domain it manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NovaInstance {
    /// The OpenStack project that owns it (`<nova:owner><nova:project uuid>`).
    pub project: Option<String>,
    /// The server's name (`<nova:name>`).
    pub name: Option<String>,
}

type CloseCallback = Arc<dyn Fn(CloseReason) + Send + Sync>;

/// An open connection with keepalive; closes (and stops its callbacks) when dropped.
#[derive(Debug)]
pub struct Connection {
    conn: Connect,
    close_registered: bool,
}

impl Connection {
    /// Opens `uri` read-write and turns keepalive on. Needs [`crate::init`] first.
    pub fn open(uri: &str) -> Result<Self, Error> {
        let conn = Connect::open(Some(uri))?;
        conn.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)?;
        Ok(Self {
            conn,
            close_registered: false,
        })
    }

    /// Whether the connection still works as far as libvirt knows.
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    /// The host's name as the daemon reports it.
    pub fn hostname(&self) -> Result<String, Error> {
        Ok(self.conn.hostname()?)
    }

    /// The daemon's libvirt version as `major.minor.micro`.
    pub fn libvirt_version(&self) -> Result<String, Error> {
        let v = self.conn.lib_version()?;
        Ok(format!(
            "{}.{}.{}",
            v / 1_000_000,
            (v / 1000) % 1000,
            v % 1000
        ))
    }

    /// Memory free on the host, bytes (`virNodeGetFreeMemory`: the host's own figure; the
    /// node, not any domain, so it waits on no domain's job).
    pub fn free_memory_bytes(&self) -> Result<u64, Error> {
        Ok(self.conn.free_memory()?)
    }

    /// Every domain of the host, defined or running (`virConnectListAllDomains`: answers
    /// at once even while a domain is migrating; what to ask each is the caller's choice,
    /// see [`Domain`]).
    pub fn all_domains(&self) -> Result<Vec<Domain>, Error> {
        Ok(self
            .conn
            .list_all_domains(0)?
            .into_iter()
            .map(|inner| Domain { inner })
            .collect())
    }

    /// The domain with this UUID.
    pub fn domain(&self, uuid: &str) -> Result<Domain, Error> {
        Ok(Domain {
            inner: self.conn.lookup_domain_by_uuid_string(uuid)?,
        })
    }

    /// Calls `callback` (on libvirt's event thread; keep it short) when the connection
    /// closes for any reason. One callback per connection.
    pub fn on_close(
        &mut self,
        callback: impl Fn(CloseReason) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        if self.close_registered {
            return Err(Error::other("a close callback is already registered"));
        }
        let opaque: *mut CloseCallback = Box::into_raw(Box::new(Arc::new(callback)));
        // SAFETY: `opaque` is a leaked Box that `free_close` reclaims exactly once, when
        // libvirt unregisters the callback or closes the connection.
        let rc = unsafe {
            sys::virConnectRegisterCloseCallback(
                self.conn.as_ptr(),
                Some(on_close),
                opaque.cast::<c_void>(),
                Some(free_close),
            )
        };
        if rc < 0 {
            // SAFETY: registration failed, so libvirt did not take ownership of `opaque`.
            drop(unsafe { Box::from_raw(opaque) });
            return Err(Error::last());
        }
        self.close_registered = true;
        Ok(())
    }

    /// Delivers domain events of every domain on this host to `callback` (on libvirt's
    /// event thread; keep it short) until the returned subscription is dropped.
    pub fn subscribe(
        &self,
        callback: impl Fn(DomainEvent) + Send + Sync + 'static,
    ) -> Result<EventSubscription, Error> {
        events::subscribe(self.conn.clone(), Arc::new(callback))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.close_registered {
            // SAFETY: unregistering the callback we registered; libvirt calls `free_close`.
            unsafe {
                sys::virConnectUnregisterCloseCallback(self.conn.as_ptr(), Some(on_close));
            }
        }
    }
}

unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    let reason = match reason as u32 {
        sys::VIR_CONNECT_CLOSE_REASON_ERROR => CloseReason::Error,
        sys::VIR_CONNECT_CLOSE_REASON_EOF => CloseReason::Eof,
        sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => CloseReason::Keepalive,
        sys::VIR_CONNECT_CLOSE_REASON_CLIENT => CloseReason::Client,
        _ => CloseReason::Other(reason),
    };
    // SAFETY: `opaque` is the `CloseCallback` box registered in `on_close`, alive until
    // `free_close` runs, which libvirt does not do while this callback runs.
    let callback = unsafe { &*opaque.cast::<CloseCallback>() };
    // A panic must not unwind into libvirt's C frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(reason)));
}

unsafe extern "C" fn free_close(opaque: *mut c_void) {
    // SAFETY: libvirt calls this once, with the pointer from `Box::into_raw`.
    drop(unsafe { Box::from_raw(opaque.cast::<CloseCallback>()) });
}

/// Nova's namespace for the `<nova:instance>` element it writes into a domain's metadata.
pub(crate) const NOVA_NS: &str = "http://openstack.org/xmlns/libvirt/nova/1.1";

/// Nova's instance element as `virDomainGetMetadata` returns it for Nova's namespace:
/// `<instance>` with `<name>` and `<owner><project uuid>`, the namespace already dropped
/// by libvirt (it was the question). `None` for anything else or malformed XML.
pub(crate) fn nova_instance(element: &str) -> Option<NovaInstance> {
    let doc = roxmltree::Document::parse(element).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "instance" {
        return None;
    }
    fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
        node.children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
    }
    let text = |value: Option<&str>| {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Some(NovaInstance {
        project: text(
            child(root, "owner")
                .and_then(|owner| child(owner, "project"))
                .and_then(|project| project.attribute("uuid")),
        ),
        name: text(child(root, "name").and_then(|n| n.text())),
    })
}

#[cfg(test)]
mod tests {
    use super::{NovaInstance, nova_instance};

    #[test]
    fn the_metadata_element_is_read_as_libvirt_returns_it() {
        // What virDomainGetMetadata returns for Nova's namespace: no namespace left.
        let element = r#"<instance>
              <package version="converge-lab"/>
              <name>web-1</name>
              <owner><user uuid="u-1">alice</user><project uuid="p-9">acme</project></owner>
            </instance>"#;
        assert_eq!(
            nova_instance(element),
            Some(NovaInstance {
                project: Some("p-9".into()),
                name: Some("web-1".into()),
            })
        );
        // With the namespace kept, the same.
        let prefixed = r#"<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:owner><nova:project uuid="p"/></nova:owner></nova:instance>"#;
        assert_eq!(
            nova_instance(prefixed).and_then(|i| i.project).as_deref(),
            Some("p")
        );
        assert_eq!(nova_instance("<domain/>"), None);
        assert_eq!(nova_instance("not xml"), None);
    }
}
