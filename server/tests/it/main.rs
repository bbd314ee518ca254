//! Integration tests of the server: one binary, one module per area.

// Test helpers are `pub` for the sibling modules, not for a public API.
#![allow(unreachable_pub)]
// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_api;
mod auth_api;
mod authz;
mod binary;
mod config_file;
mod drains_api;
mod events;
mod fleet_api;
mod fuzz;
mod hardening;
mod kiosk_api;
mod layers;
mod limits;
mod metrics_api;
mod sessions;
mod shutdown;
mod static_files;
mod support;
