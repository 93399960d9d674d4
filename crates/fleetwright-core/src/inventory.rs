//! What fleetwright owns on a host: every file it wrote with its hash, and each agent's deploy
//! record. Pure data; `host::state` reads and writes it atomically in the state directory.
//! Pruning reads only this: a unit we did not record is never removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Role, Scope};

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
    pub pending_restarts: BTreeMap<String, crate::types::Action>,
    /// For each pending restart, the InvocationID of the run it replaces: a resumed apply
    /// that finds another run there knows the restart was done and does not do it twice.
    #[serde(default)]
    pub restart_from: BTreeMap<String, String>,
    /// What the files were rendered from (`host::apply::render_key`): the same key and the
    /// same files on disk mean the same desired state, without reading the commit again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_key: Option<String>,
    /// Files (unit names, and host configuration files by path) an apply is changing, with the
    /// hash of what was there before it (`None`: no file). Recorded before the first write and
    /// cleared once every file is written: until then, a file still as it was before, or not
    /// yet there, is the unfinished apply's, not drift.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_files: BTreeMap<String, Option<String>>,
    /// Agents whose deploy markers an apply is rewriting, until its final inventory.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub pending_markers: std::collections::BTreeSet<String>,
}

impl Inventory {
    /// Long-running units (services and timers) whose run systemd has not confirmed to be of
    /// their current definition: a restart (or reload) an apply planned is not known to be
    /// done. Their run is looked at before anything is taken as converged.
    pub fn unconfirmed(&self) -> impl Iterator<Item = &str> {
        self.files.iter().filter(|(_, r)| !r.role.is_job() && r.confirmed.as_ref().is_some_and(|c| *c != r.sha256)).map(|(n, _)| n.as_str())
    }
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
    /// When the manager loaded this content (the daemon-reload after it was written): a run
    /// of the unit that began after it runs this definition. `None`: not loaded yet, or
    /// written by a version that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<Loaded>,
    /// For a service or timer: the definition (sha256) its current run is known to be of, by
    /// systemd's word (a start, restart or reload job it said was done, or a run seen to have
    /// begun after the definition was loaded), or by its `onChange` (none: the run keeps its
    /// old definition on purpose). Another hash than `sha256` means a restart is owed.
    /// `None`: not recorded yet (a version before this one); taken as current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<String>,
}

impl FileRecord {
    pub fn new(sha256: String, agent: String, role: Role) -> FileRecord {
        FileRecord { sha256, agent, role, loaded: None, confirmed: None }
    }
}

/// A moment on this boot's CLOCK_MONOTONIC (the clock systemd stamps unit state changes with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Loaded {
    /// `/proc/sys/kernel/random/boot_id`: after a reboot every run began after every load.
    pub boot: String,
    /// CLOCK_MONOTONIC, µs.
    pub usec: u64,
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
