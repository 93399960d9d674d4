//! The state directory's layout, in one place: every file fleetwright keeps under
//! `<state>` is named here, and nowhere else. Pure: it joins paths, it does not look at them.

use std::path::{Path, PathBuf};

/// The state directory of the system manager's fleet.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/fleetwright";
/// The unit directory of the system manager's fleet.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";
/// Under `$XDG_STATE_HOME` (or `~/.local/state`): a user manager's state directory.
pub const USER_STATE_SUBDIR: &str = "fleetwright";
/// Under `$XDG_CONFIG_HOME` (or `~/.config`): a user manager's unit directory.
pub const USER_UNIT_SUBDIR: &str = "systemd/user";
/// Under the state directory: the secrets' credential files ([`StateLayout::credentials`]).
pub const CREDENTIALS_SUBDIR: &str = "credentials";

/// The files of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateLayout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// What we own: unit name → hash of what we wrote; agent → deploy record.
    pub fn inventory(&self) -> PathBuf {
        self.root.join("inventory.json")
    }
    /// The deploy markers, `<agent>.json` and `<agent>.env` (agents read them).
    pub fn markers(&self) -> PathBuf {
        self.root.join("markers")
    }
    pub fn marker(&self, agent: &str, ext: &str) -> PathBuf {
        self.markers().join(format!("{agent}.{ext}"))
    }
    /// Held by every apply, the daemon's included.
    pub fn apply_lock(&self) -> PathBuf {
        self.root.join("apply.lock")
    }
    /// Held by the one daemon of this state directory.
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    /// The running daemon's pid (`fleetwright sync` signals it).
    pub fn daemon_pid(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    /// Bare clones of remote fleet repositories.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// The daemon's SQLite history: reconciles, verdicts, the pin, the notification outbox.
    pub fn history(&self) -> PathBuf {
        self.root.join("history.sqlite")
    }
    /// Where a damaged history is moved aside, stamped with when.
    pub fn history_damaged(&self, stamp: &str) -> PathBuf {
        self.root.join(format!("history.sqlite.damaged-{stamp}"))
    }
    /// Content-addressed copies of the fleetwright binary the helper units run.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }
    /// Notifications' files beside the history: `wake`, touched by the failure reporter to
    /// wake the daemon's delivery at once (it watches this directory).
    pub fn notify(&self) -> PathBuf {
        self.root.join("notify")
    }
    pub fn notify_wake(&self) -> PathBuf {
        self.notify().join("wake")
    }
    /// A unit whose failure was reported and that has not recovered: its job's successful run
    /// looks for this file only (no database opened for a run of a healthy job).
    pub fn notify_failing(&self, unit: &str) -> PathBuf {
        self.notify().join("failing").join(unit)
    }
    /// The secrets' credential files, sealed with systemd's key (root only): one directory
    /// per agent (`render::credential_dir` names the same place in unit files).
    pub fn credentials(&self) -> PathBuf {
        self.root.join(CREDENTIALS_SUBDIR)
    }
    /// What the heartbeat check did for `agent`.
    pub fn health(&self, agent: &str) -> PathBuf {
        self.root.join("health").join(format!("{agent}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_under_the_root() {
        let l = StateLayout::new("/var/lib/fleetwright");
        for p in [
            l.inventory(),
            l.marker("a", "json"),
            l.apply_lock(),
            l.daemon_lock(),
            l.daemon_pid(),
            l.cache(),
            l.history(),
            l.health("a"),
            l.notify_wake(),
            l.notify_failing("u.service"),
        ] {
            assert!(p.starts_with("/var/lib/fleetwright"), "{p:?}");
        }
        assert_eq!(l.marker("web", "env"), PathBuf::from("/var/lib/fleetwright/markers/web.env"));
        assert_eq!(l.health("web"), PathBuf::from("/var/lib/fleetwright/health/web.json"));
    }
}
