//! The HTTP edge: handlers that parse a request, check who asks, call one domain operation
//! and map its typed result. (Handlers move here from the modules beside the domain code
//! one resource at a time; see the README's layout.)

pub(crate) mod audit;
pub mod auth;
pub(crate) mod kiosk;
pub mod state;
pub(crate) mod tenant;
