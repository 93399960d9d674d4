//! fleetwright-core: the pure pipeline. Spec files (text) → `Fleet` → rendered units →
//! `Desired` → `Plan`, plus the review, schedule and catalog views of them.
//!
//! Nothing here does I/O, reads a clock or the environment, or spawns a process: the crate
//! depends on nothing that could (no tokio, zbus, git2, rusqlite, nix, libc, HTTP, notify —
//! see Cargo.toml), and `clippy.toml` beside it refuses `std::fs`, `std::process`, `std::env`,
//! `std::net` and the clocks, which CI runs with `-D warnings`. What a stage needs from the
//! host — which time zones exist, the host's own zone, the time — is passed in.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod desired;
pub mod inventory;
pub mod layout;
pub mod notify;
pub mod plan;
pub mod render;
pub mod review;
pub mod schedule;
pub mod secrets;
pub mod spec;
pub mod types;
pub mod unit;
