//! Leaf types shared by every stage of the pipeline (and the host layer): which manager, what a
//! unit is to its agent, what is done to it, and the one content hash. They depend on nothing
//! else in the crate, so no stage depends on another just for a name.

use sha2::{Digest, Sha256};

/// Which manager the units are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    System,
    User,
}

/// What a rendered unit is to its agent; decides how a change reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A long-running service: started, follows `service.onChange`.
    Service,
    /// The oneshot service a timer runs: never started or restarted by a deploy.
    Job,
    /// The timer of a scheduled agent.
    Timer,
    /// A day-two helper job of an agent (log cleanup, backup, heartbeat check): a oneshot run by
    /// its timer, never started or restarted by a deploy, like `Job`.
    AuxJob,
    /// The timer of a helper job: restarted when it changes, like `Timer`.
    AuxTimer,
}

impl Role {
    /// Started by its timer, never by a deploy.
    pub fn is_job(self) -> bool {
        matches!(self, Role::Job | Role::AuxJob)
    }
    pub fn is_timer(self) -> bool {
        matches!(self, Role::Timer | Role::AuxTimer)
    }
}

/// One thing done to a unit through the manager; executed in this order across all units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Stop,
    Disable,
    Enable,
    Reload,
    Restart,
    Start,
}

/// The hex SHA-256 of a text: the hash recorded for every file fleetwright writes, and of specs.
pub fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
