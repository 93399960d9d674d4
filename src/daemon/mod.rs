//! The continuous reconciler (`fleetwright daemon`). See `run`.

pub mod history;
pub mod webhook;
