//! One module per page.

pub mod audit;
pub mod fleet;
pub mod history;
pub mod kiosk;
pub mod kiosk_tokens;
pub mod login;
pub mod maintenance;
pub mod migration;
pub mod tenant;
