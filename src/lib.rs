//! fleetwright: a GitOps reconciler for systemd. See ARCHITECTURE.md for the map.

pub mod catalog;
pub mod cli;
pub mod daemon;
pub mod desired;
pub mod host;
pub mod inventory;
pub mod logging;
pub mod ops;
pub mod plan;
pub mod render;
pub mod review;
pub mod schedule;
pub mod source;
pub mod spec;
pub mod unit;
