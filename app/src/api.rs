//! The one client of Converge's HTTP API: every request the dashboard makes passes here.
//!
//! Built on the browser's `fetch` directly; a general HTTP client would add tens of
//! kilobytes to the bundle for nothing the dashboard needs.

use std::fmt;

use converge_api::{ErrorBody, LoginRequest, Me};
use serde::Serialize;
use serde::de::DeserializeOwned;
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
    json(request("GET", "/api/me", None).await?)
}

/// `POST /api/login`.
pub async fn login(username: String, password: String) -> Result<Me, ApiError> {
    let body = LoginRequest { username, password };
    json(request("POST", "/api/login", Some(to_json(&body)?)).await?)
}

/// `POST /api/logout`.
pub async fn logout() -> Result<(), ApiError> {
    request("POST", "/api/logout", None).await.map(drop)
}

fn to_json(body: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(body).map_err(|err| ApiError::Network(err.to_string()))
}

fn json<T: DeserializeOwned>(text: String) -> Result<T, ApiError> {
    serde_json::from_str(&text)
        .map_err(|err| ApiError::Network(format!("unexpected answer: {err}")))
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
    let message = serde_json::from_str::<ErrorBody>(&text)
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
