//! One module per page.

pub mod audit;
pub mod fleet;
pub mod history;
pub mod login;
pub mod migration;
