//! The one client of Converge's HTTP API: every request the dashboard makes passes here.
//!
//! Built on the browser's `fetch` directly; a general HTTP client would add tens of
//! kilobytes to the bundle for nothing the dashboard needs.

use std::fmt;

use converge_api::{
    AuditEntry, CreatedKioskToken, Drain, DrainRequest, ErrorBody, Host, ItemAction, ItemCommand,
    KioskSignIn, KioskToken, LeverChange, LeverResult, LoginRequest, Me, Migration,
    MigrationDetail, NewKioskToken, Preset, StartMigration, TenantVm, TenantVmDetail, Vm,
};
use converge_api::{LiveEvent, names, paths};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestCredentials, RequestInit, Response};

/// Why a request did not give the answer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401: no valid session (or wrong credentials at sign-in); the server's message.
    Unauthenticated(String),
    /// Any other refusal (4xx/5xx), with the server's message.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's message, meant for a person.
        message: String,
    },
    /// The server could not be reached or answered nonsense.
    Network(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unauthenticated(message) | ApiError::Refused { message, .. } => {
                f.write_str(message)
            }
            ApiError::Network(detail) => write!(f, "cannot reach the Converge server ({detail})"),
        }
    }
}

/// `GET /api/me`: who the session belongs to.
pub async fn me() -> Result<Me, ApiError> {
    json(request("GET", paths::ME, None).await?)
}

/// `POST /api/login`.
pub async fn login(username: String, password: String) -> Result<Me, ApiError> {
    let body = LoginRequest { username, password };
    json(request("POST", paths::LOGIN, Some(to_json(&body)?)).await?)
}

/// `POST /api/logout`.
pub async fn logout() -> Result<(), ApiError> {
    request("POST", paths::LOGOUT, None).await.map(drop)
}

/// `GET /api/hosts`.
pub async fn hosts() -> Result<Vec<Host>, ApiError> {
    json(request("GET", paths::HOSTS, None).await?)
}

/// `GET /api/vms`.
pub async fn vms() -> Result<Vec<Vm>, ApiError> {
    json(request("GET", paths::VMS, None).await?)
}

/// `GET /api/migrations`.
pub async fn migrations() -> Result<Vec<Migration>, ApiError> {
    json(request("GET", paths::MIGRATIONS, None).await?)
}

/// `GET /api/migrations/{id}`: one migration with its series.
pub async fn migration(id: &str) -> Result<MigrationDetail, ApiError> {
    json(request("GET", &paths::migration(id), None).await?)
}

/// `POST /api/migrations`.
pub async fn start_migration(body: &StartMigration) -> Result<Migration, ApiError> {
    json(request("POST", paths::MIGRATIONS, Some(to_json(body)?)).await?)
}

/// `PATCH /api/migrations/{id}`: move one lever.
pub async fn lever(id: &str, change: &LeverChange) -> Result<LeverResult, ApiError> {
    json(request("PATCH", &paths::migration(id), Some(to_json(change)?)).await?)
}

/// `GET /api/presets`.
pub async fn presets() -> Result<Vec<Preset>, ApiError> {
    json(request("GET", paths::PRESETS, None).await?)
}

/// `GET /api/history`: past migrations, newest first.
pub async fn history() -> Result<Vec<Migration>, ApiError> {
    json(request("GET", &[paths::HISTORY, "?limit=200"].concat(), None).await?)
}

/// `GET /api/audit`: the audit log, newest first.
pub async fn audit() -> Result<Vec<AuditEntry>, ApiError> {
    json(request("GET", &[paths::AUDIT, "?limit=500"].concat(), None).await?)
}

/// `POST /api/migrations/{id}/abort`.
pub async fn abort_migration(id: &str) -> Result<Migration, ApiError> {
    json(request("POST", &paths::migration_abort(id), None).await?)
}

/// `GET /api/drains`: running drains, then past ones.
pub async fn drains() -> Result<Vec<Drain>, ApiError> {
    json(request("GET", paths::DRAINS, None).await?)
}

/// `POST /api/drains`: the plan (`dry_run`), or the drain started.
pub async fn drain(body: &DrainRequest) -> Result<Drain, ApiError> {
    json(request("POST", paths::DRAINS, Some(to_json(body)?)).await?)
}

/// `POST /api/drains/{id}/{pause|resume|cancel}`.
pub async fn drain_control(id: &str, what: &str) -> Result<Drain, ApiError> {
    json(request("POST", &paths::drain_control(id, what), None).await?)
}

/// `POST /api/drains/{id}/vms/{uuid}`: skip a VM or move it forward.
pub async fn drain_vm(id: &str, uuid: &str, action: ItemAction) -> Result<Drain, ApiError> {
    let body = ItemCommand { action };
    json(request("POST", &paths::drain_vm(id, uuid), Some(to_json(&body)?)).await?)
}

/// `GET /api/tenant/vms`: a tenant's own VMs.
pub async fn tenant_vms() -> Result<Vec<TenantVm>, ApiError> {
    json(request("GET", paths::TENANT_VMS, None).await?)
}

/// `GET /api/tenant/vms/{uuid}`: one of a tenant's VMs with its past moves.
pub async fn tenant_vm(uuid: &str) -> Result<TenantVmDetail, ApiError> {
    json(request("GET", &paths::tenant_vm(uuid), None).await?)
}

/// `POST /api/kiosk/session`: a wall screen signs in with its token.
pub async fn kiosk_sign_in(token: String) -> Result<Me, ApiError> {
    let body = KioskSignIn { token };
    json(request("POST", paths::KIOSK_SESSION, Some(to_json(&body)?)).await?)
}

/// `GET /api/kiosk-tokens`.
pub async fn kiosk_tokens() -> Result<Vec<KioskToken>, ApiError> {
    json(request("GET", paths::KIOSK_TOKENS, None).await?)
}

/// `POST /api/kiosk-tokens`: a new token, its secret shown this once.
/// The page makes links that last until revoked; an expiry is set through the API.
pub async fn create_kiosk_token(label: String) -> Result<CreatedKioskToken, ApiError> {
    let body = NewKioskToken {
        label,
        expires_in_days: None,
    };
    json(request("POST", paths::KIOSK_TOKENS, Some(to_json(&body)?)).await?)
}

/// `DELETE /api/kiosk-tokens/{id}`.
pub async fn revoke_kiosk_token(id: i64) -> Result<(), ApiError> {
    request("DELETE", &paths::kiosk_token(id), None)
        .await
        .map(drop)
}

// miniserde, not serde_json: serde's derived code and serde_json's parser were a sixth of
// the wasm bundle. The server keeps serde; `converge-api`'s tests check both agree.
fn to_json(body: &impl miniserde::Serialize) -> Result<String, ApiError> {
    Ok(miniserde::json::to_string(body))
}

fn json<T: miniserde::Deserialize>(text: String) -> Result<T, ApiError> {
    miniserde::json::from_str(&text)
        .map_err(|_| ApiError::Network("the server's answer could not be read".into()))
}

/// Sends one request; a 2xx answer's body comes back as text, anything else as an error.
async fn request(method: &str, path: &str, body: Option<String>) -> Result<String, ApiError> {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_credentials(RequestCredentials::SameOrigin);
    let headers = web_sys::Headers::new().map_err(js_error)?;
    headers
        .set("accept", "application/json")
        .map_err(js_error)?;
    if let Some(body) = &body {
        headers
            .set("content-type", "application/json")
            .map_err(js_error)?;
        init.set_body(&JsValue::from_str(body));
    }
    init.set_headers(&headers);
    let request = web_sys::Request::new_with_str_and_init(path, &init).map_err(js_error)?;
    let window = web_sys::window().ok_or_else(|| ApiError::Network("no window".into()))?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(js_error)?
        .dyn_into()
        .map_err(js_error)?;
    let text = JsFuture::from(response.text().map_err(js_error)?)
        .await
        .map_err(js_error)?
        .as_string()
        .unwrap_or_default();
    let status = response.status();
    if (200..300).contains(&status) {
        return Ok(text);
    }
    let message = miniserde::json::from_str::<ErrorBody>(&text)
        .map(|body| body.error)
        .unwrap_or_else(|_| format!("the server answered {status}"));
    Err(match status {
        401 => ApiError::Unauthenticated(message),
        _ => ApiError::Refused { status, message },
    })
}

fn js_error(err: JsValue) -> ApiError {
    ApiError::Network(
        err.as_string()
            .or_else(|| {
                err.dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
            })
            .unwrap_or_else(|| "network error".into()),
    )
}

/// The live event stream (`GET /api/events`), open until dropped. The browser's
/// EventSource reconnects by itself and resumes with `Last-Event-ID`.
pub struct EventStream {
    source: web_sys::EventSource,
    _listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

/// What the stream is doing, for the "live" indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Connecting or reconnecting.
    Connecting,
    /// Receiving.
    Live,
    /// Closed for good (e.g. the session ended): the caller decides what next.
    Closed,
}

impl EventStream {
    /// Opens the stream; `on_event` gets every event, `on_state` every state change.
    pub fn open(
        on_event: impl Fn(LiveEvent) + 'static,
        on_state: impl Fn(StreamState) + 'static,
    ) -> Result<Self, ApiError> {
        let source = web_sys::EventSource::new(paths::EVENTS).map_err(js_error)?;
        let on_event = std::rc::Rc::new(on_event);
        let on_state = std::rc::Rc::new(on_state);
        let mut listeners = Vec::new();
        for name in names::ALL {
            let on_event = on_event.clone();
            let listener =
                Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
                    let data = event
                        .dyn_ref::<web_sys::MessageEvent>()
                        .and_then(|m| m.data().as_string());
                    if let Some(parsed) = data.and_then(|d| parse_event(name, &d)) {
                        on_event(parsed);
                    }
                });
            source
                .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                .map_err(js_error)?;
            listeners.push(listener);
        }
        let opened = on_state.clone();
        let open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| opened(StreamState::Live));
        source
            .add_event_listener_with_callback("open", open.as_ref().unchecked_ref())
            .map_err(js_error)?;
        listeners.push(open);
        let errored = on_state;
        let watched = source.clone();
        let error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            // CLOSED (2): the browser gave up (e.g. a 401); otherwise it is retrying.
            errored(if watched.ready_state() == 2 {
                StreamState::Closed
            } else {
                StreamState::Connecting
            });
        });
        source
            .add_event_listener_with_callback("error", error.as_ref().unchecked_ref())
            .map_err(js_error)?;
        listeners.push(error);
        Ok(Self {
            source,
            _listeners: listeners,
        })
    }
}

/// Parses an event's payload by its SSE name: one struct per name, no tagged decoding.
fn parse_event(name: &str, data: &str) -> Option<LiveEvent> {
    match name {
        names::MIGRATION => miniserde::json::from_str(data)
            .ok()
            .map(LiveEvent::Migration),
        names::HOST => miniserde::json::from_str(data).ok().map(LiveEvent::Host),
        names::VMS => miniserde::json::from_str(data).ok().map(LiveEvent::Vms),
        names::RESYNC => miniserde::json::from_str(data).ok().map(LiveEvent::Resync),
        names::TENANT_VM => miniserde::json::from_str(data).ok().map(LiveEvent::Tenant),
        names::DRAIN => miniserde::json::from_str(data).ok().map(LiveEvent::Drain),
        _ => None,
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("ready_state", &self.source.ready_state())
            .finish()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.source.close();
    }
}
