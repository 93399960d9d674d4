//! fleetwright: a GitOps reconciler for systemd. See ARCHITECTURE.md for the map.

pub mod spec;
