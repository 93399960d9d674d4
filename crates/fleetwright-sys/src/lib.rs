//! fleetwright-sys: the host plumbing every I/O crate of the workspace shares (the main crate,
//! its helper jobs and the test sandbox): one atomic write, one durable removal, one sweep of
//! dead writers' temporary files, one answer to "is this pid alive", one command runner with a
//! time limit, and the crash points the fault tests stop or kill a process at.

pub mod fsutil;
pub mod proc;

pub use proc::crash_point;
