//! Pieces shared by several pages.

pub mod chart;
pub mod header;
pub mod levers;
pub mod migration_card;
pub mod start_dialog;
