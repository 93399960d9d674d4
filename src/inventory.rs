//! What fleetwright owns on a host: every file it wrote with its hash, and each agent's deploy
//! record. Pure data; `host::state` reads and writes it atomically in the state directory.
//! Pruning reads only this: a unit we did not record is never removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::render::{Role, Scope};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub version: u32,
    pub scope: Option<Scope>,
    pub unit_dir: String,
    pub applied_commit: Option<String>,
    pub applied_at: Option<String>,
    /// Unit file name → what we wrote.
    pub files: BTreeMap<String, FileRecord>,
    /// Agent name → its deploy record.
    pub agents: BTreeMap<String, AgentRecord>,
    /// Files were written but the manager may not have been reloaded since (an apply was
    /// interrupted): the next apply reloads even if it writes nothing.
    #[serde(default)]
    pub reload_pending: bool,
    /// Host configuration files we wrote outside the unit directory (the journald drop-in).
    #[serde(default)]
    pub config: BTreeMap<String, ConfigRecord>,
    /// Restarts and reloads an apply planned, recorded before it wrote the new files and cleared
    /// after its jobs ran: an apply interrupted in between leaves new files on disk that no
    /// longer differ, and the next apply must still restart what runs the old definition (the
    /// resume list of NixOS's switch-to-configuration).
    #[serde(default)]
    pub pending_restarts: BTreeMap<String, crate::plan::Action>,
    /// For each pending restart, the InvocationID of the run it replaces: a resumed apply
    /// that finds another run there knows the restart was done and does not do it twice.
    #[serde(default)]
    pub restart_from: BTreeMap<String, String>,
    /// What the files were rendered from (`host::apply::render_key`): the same key and the
    /// same files on disk mean the same desired state, without reading the commit again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRecord {
    pub sha256: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    pub sha256: String,
    pub agent: String,
    pub role: Role,
}

/// The deploy marker of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub spec_hash: String,
    /// The commit that last changed this agent.
    pub changed_commit: String,
    pub changed_at: String,
    /// The commit applied last, whether or not it changed this agent.
    pub applied_commit: String,
    pub applied_at: String,
    /// The agent's `enabled` at the last apply: its timer or service should be running.
    pub enabled: bool,
    /// Its SQLite backups: `(database, backup directory)`, for `backups` and `restore`.
    #[serde(default)]
    pub backups: Vec<(String, String)>,
}

pub fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
