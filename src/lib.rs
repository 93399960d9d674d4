//! fleetwright: a GitOps reconciler for systemd. See ARCHITECTURE.md for the map.

pub mod desired;
pub mod inventory;
pub mod plan;
pub mod render;
pub mod spec;
pub mod unit;
pub mod host;
pub mod source;
pub mod cli;
pub mod daemon;
pub mod ops;
pub mod review;
pub mod schedule;
pub mod catalog;
