//! fleetwright: a GitOps reconciler for systemd. See ARCHITECTURE.md for the map.
//!
//! The pure pipeline (spec → desired → plan, and the views of it) is the `fleetwright-core`
//! crate, re-exported here under the same names; this crate is the host side: git, systemd,
//! the daemon and the helper jobs.

pub use fleetwright_core::{catalog, desired, inventory, layout, notify, plan, render, review, schedule, secrets, spec, types, unit};

pub mod daemon;
pub mod host;
pub mod ops;
pub mod source;
