//! One module per page.

pub mod fleet;
pub mod login;
