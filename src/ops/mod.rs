//! Day-two operations run by the helper units fleetwright renders (log retention, SQLite
//! backups, heartbeat checks, concurrency slots), and `restore`. Each is a subcommand of the
//! same binary, so the units need nothing else installed.

pub mod backup;
pub mod heartbeat;
pub mod retain;
pub mod slot;
