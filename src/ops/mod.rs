//! Day-two operations run by the helper units fleetwright renders (log retention, SQLite
//! backups, heartbeat checks, concurrency slots), and `restore`. Each is a subcommand of the
//! same binary, so the units need nothing else installed. `walk` is how the ones that run as
//! root reach their paths without following a link or a directory another user could swap.

pub mod backup;
pub mod failure;
pub mod heartbeat;
pub mod restore;
pub mod retain;
pub mod slot;
pub mod walk;
