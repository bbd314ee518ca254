//! The one error type of the HTTP API and the JSON extractor that reports through it.
//!
//! Every failure a handler can meet maps to a status and a sentence a person can act on.
//! Internal errors are logged here, once, with their cause; the client only learns that
//! something went wrong on the server.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_api::ErrorBody;
use serde::Serialize;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No session, or the session cookie is unknown or expired.
    #[error("sign in first")]
    Unauthenticated,
    /// The session existed but its user was removed, its password changed, or it is too old.
    #[error("your session has ended; sign in again")]
    SessionEnded,
    /// Unknown user or wrong password: deliberately the same answer for both.
    #[error("wrong username or password")]
    BadCredentials,
    /// A kiosk link whose token is unknown or revoked.
    #[error("this kiosk link is not valid (revoked, or mistyped); ask an admin for a new one")]
    KioskTokenInvalid,
    /// A state-changing request from another site.
    #[error("{0}")]
    CrossSite(String),
    /// Too many failed sign-ins.
    #[error("too many failed sign-in attempts; try again in {retry_after_secs} s")]
    Throttled {
        /// Seconds until an attempt will be considered again.
        retry_after_secs: u64,
    },
    /// Every password check slot is busy and the line for them is full.
    #[error("the server is busy checking other sign-ins; try again in a second")]
    Busy,
    /// The caller already has as many live streams open as it may.
    #[error("{0}")]
    TooManyStreams(String),
    /// The request named a `Host` this server does not answer to.
    #[error("{0}")]
    ForeignHost(String),
    /// Signed in, but the role does not allow this.
    #[error("your role does not allow this")]
    Forbidden,
    /// No such resource or route.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (already migrating, already over).
    #[error("{0}")]
    Conflict(String),
    /// The request could not be read (malformed JSON, wrong content type).
    #[error("{0}")]
    BadRequest(String),
    /// The request was read but its values cannot be used.
    #[error("{0}")]
    Unprocessable(String),
    /// The route exists but not for this method.
    #[error("this route does not answer {0} requests")]
    MethodNotAllowed(String),
    /// The body is larger than the API reads.
    #[error("the request body is too large")]
    TooLarge,
    /// The body was not sent as JSON.
    #[error("send the body as JSON with `Content-Type: application/json`")]
    NotJson,
    /// A fault on the server's side; the cause is logged, not sent.
    #[error("internal error; the server log has the details")]
    Internal {
        /// What the server was doing, for the log.
        context: &'static str,
        /// The underlying cause, for the log.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// Wraps a server-side fault with what the server was doing when it happened.
    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthenticated
            | Self::SessionEnded
            | Self::BadCredentials
            | Self::KioskTokenInvalid => StatusCode::UNAUTHORIZED,
            Self::CrossSite(_) => StatusCode::FORBIDDEN,
            Self::Throttled { .. } | Self::Busy | Self::TooManyStreams(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal { context, source } = &self {
            tracing::error!(context, error = %source, "request failed on the server");
        }
        let status = self.status_code();
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        // Errors are about one request and one caller: never to be cached (this covers
        // the refusals made before the API's own layers too).
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let retry_after_secs = match self {
            Self::Throttled { retry_after_secs } => Some(retry_after_secs),
            Self::Busy => Some(1),
            Self::TooManyStreams(_) => Some(10),
            _ => None,
        };
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => {
                Self::Unprocessable(format!("invalid request body: {}", err.body_text()))
            }
            JsonRejection::JsonSyntaxError(err) => Self::BadRequest(format!(
                "request body is not valid JSON: {}",
                err.body_text()
            )),
            JsonRejection::MissingJsonContentType(_) => Self::NotJson,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<tower_sessions::session::Error> for ApiError {
    fn from(err: tower_sessions::session::Error) -> Self {
        Self::internal("session store", err)
    }
}

/// JSON in and out; a body that cannot be read becomes an [`ApiError`] with a message.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string read into `T`; one that cannot be is a 400 with a message, in JSON like
/// every other error.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters read into `T`; ones that cannot be are a 400 with a message, in JSON.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

/// Answer for an `/api` path that no route serves.
pub(crate) async fn api_route_not_found() -> ApiError {
    ApiError::NotFound("no such API route".into())
}

/// Answer for an `/api` route asked with a method it does not take.
pub(crate) async fn api_method_not_allowed(method: axum::http::Method) -> ApiError {
    let method: String = method.as_str().chars().take(16).collect();
    ApiError::MethodNotAllowed(method)
}

impl From<crate::fleet::Refusal> for ApiError {
    fn from(refusal: crate::fleet::Refusal) -> Self {
        use crate::fleet::Refusal;
        match refusal {
            Refusal::NotFound(message) => Self::NotFound(message),
            Refusal::Conflict(message) => Self::Conflict(message),
            Refusal::Invalid(message) => Self::Unprocessable(message),
        }
    }
}
