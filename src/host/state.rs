//! The state directory: the inventory, deploy markers and the apply lock. Every write is
//! atomic (temp file, fsync, rename, fsync of the directory): a crash leaves the old or the new
//! file, never half of one.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fleetwright_sys::fsutil::{remove_durable, write_atomic_at, write_replace};

use crate::inventory::{AgentRecord, Inventory, VERSION};
use crate::layout::StateLayout;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: the inventory is damaged ({source}); fleetwright will not guess what it owns. Restore it from a backup, or move it away to start over (files it wrote will then be refused as foreign)"
    )]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("another fleetwright apply holds the lock {path}; it runs one apply at a time")]
    Locked { path: PathBuf },
    #[error("another fleetwright daemon already runs on this state directory (it holds {path}{}); stop it first, or give this one its own --state-dir", .pid.map(|p| format!(", pid {p}")).unwrap_or_default())]
    DaemonRunning { path: PathBuf, pid: Option<i32> },
}

pub struct StateDir {
    pub root: PathBuf,
}

/// Holds a lock (flock) until dropped.
pub struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    }
    fn layout(&self) -> StateLayout {
        StateLayout::new(&self.root)
    }
    pub fn inventory_path(&self) -> PathBuf {
        self.layout().inventory()
    }
    pub fn markers_dir(&self) -> PathBuf {
        self.layout().markers()
    }

    /// Take the apply lock, failing at once when another process holds it.
    pub fn lock(&self) -> Result<Lock, StateError> {
        let path = self.layout().apply_lock();
        self.try_lock(&path)?.ok_or(StateError::Locked { path })
    }

    /// Take the daemon's lock for as long as it runs (one daemon per state directory), and
    /// write its pid next to it for `sync` and `status`.
    pub fn lock_daemon(&self) -> Result<Lock, StateError> {
        let path = self.layout().daemon_lock();
        let pid_file = self.layout().daemon_pid();
        let Some(lock) = self.try_lock(&path)? else {
            let pid = fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok());
            return Err(StateError::DaemonRunning { path, pid });
        };
        fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(self.io(&pid_file))?;
        Ok(lock)
    }

    /// An exclusive flock on `path`, or None when another process holds it.
    fn try_lock(&self, path: &Path) -> Result<Option<Lock>, StateError> {
        fs::create_dir_all(&self.root).map_err(self.io(&self.root))?;
        let file = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map_err(self.io(path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(Lock { _flock: flock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(StateError::Io { path: path.to_path_buf(), source: e.into() }),
        }
    }

    pub fn load_inventory(&self) -> Result<Inventory, StateError> {
        let path = self.inventory_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Inventory { version: VERSION, ..Default::default() }),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    pub fn save_inventory(&self, inv: &Inventory) -> Result<(), StateError> {
        let path = self.inventory_path();
        let json = serde_json::to_vec_pretty(inv).expect("inventory serializes");
        write_atomic_at(&path, &json, 0o644, "mid-inventory-write").map_err(self.io(&path))
    }

    /// What an agent's deploy marker files must hold for `rec`: `<name>.json` (everything)
    /// and `<name>.env` (FLEETWRIGHT_COMMIT, FLEETWRIGHT_SPEC_HASH, FLEETWRIGHT_CHANGED_AT; read
    /// by the agent's units at each start).
    fn marker_files(&self, agent: &str, rec: &AgentRecord) -> [(PathBuf, Vec<u8>); 2] {
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "agent": agent,
            "commit": rec.changed_commit,
            "changedAt": rec.changed_at,
            "appliedCommit": rec.applied_commit,
            "appliedAt": rec.applied_at,
            "specHash": rec.spec_hash,
        }))
        .expect("marker serializes");
        // Only what changes with the agent itself: an unrelated commit rewrites nothing here.
        let env = format!("FLEETWRIGHT_COMMIT={}\nFLEETWRIGHT_SPEC_HASH={}\nFLEETWRIGHT_CHANGED_AT={}\n", rec.changed_commit, rec.spec_hash, rec.changed_at);
        [(self.layout().marker(agent, "json"), json), (self.layout().marker(agent, "env"), env.into_bytes())]
    }

    /// What is wrong with an agent's deploy marker files, measured against its record: each
    /// one missing, emptied, changed, or not a regular file. Empty when they are as written.
    pub fn marker_problems(&self, agent: &str, rec: &AgentRecord) -> Vec<String> {
        let mut out = Vec::new();
        for (path, bytes) in self.marker_files(agent, rec) {
            let shown = path.display();
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(format!("its deploy marker {shown} is missing")),
                Err(e) => out.push(format!("its deploy marker {shown} cannot be read: {e}")),
                Ok(m) if m.file_type().is_dir() => out.push(format!("its deploy marker {shown} is a directory, not a file")),
                Ok(m) if !m.file_type().is_file() => out.push(format!("its deploy marker {shown} is not a regular file")),
                Ok(m) if m.len() == 0 => out.push(format!("its deploy marker {shown} is empty")),
                Ok(_) => match fs::read(&path) {
                    Ok(have) if have == bytes => {}
                    Ok(_) => out.push(format!("its deploy marker {shown} was changed outside fleetwright")),
                    Err(e) => out.push(format!("its deploy marker {shown} cannot be read: {e}")),
                },
            }
        }
        out
    }

    /// Write an agent's deploy marker (`marker_files`). Each file is written only when it is
    /// not already exactly that; whatever else is in its place (a directory, a link — the
    /// markers directory is fleetwright's own) is removed first. Returns whether anything was
    /// written.
    pub fn write_marker(&self, agent: &str, rec: &AgentRecord) -> Result<bool, StateError> {
        let mut wrote = false;
        for (path, bytes) in self.marker_files(agent, rec) {
            let meta = fs::symlink_metadata(&path).ok();
            if meta.as_ref().is_some_and(|m| m.file_type().is_file()) && fs::read(&path).ok().as_deref() == Some(&bytes[..]) {
                continue;
            }
            match meta {
                Some(m) if m.file_type().is_dir() => {
                    tracing::warn!(path = %path.display(), "a directory is in the place of a deploy marker: removing it");
                    fs::remove_dir_all(&path).map_err(self.io(&path))?;
                }
                Some(m) if !m.file_type().is_file() => fs::remove_file(&path).map_err(self.io(&path))?,
                _ => {}
            }
            write_replace(&path, &bytes, 0o644).map_err(self.io(&path))?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Remove a pruned agent's deploy marker and its heartbeat record.
    pub fn remove_marker(&self, agent: &str) -> Result<(), StateError> {
        let files = ["json", "env"].map(|ext| self.layout().marker(agent, ext));
        for p in files.iter().chain([&self.layout().health(agent)]) {
            remove_durable(p).map_err(self.io(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apply_lock_is_held_until_dropped_and_one_daemon_runs_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.lock().unwrap();
        // flock locks belong to the open file description: a second open, as a second process
        // would make, is refused while the first is held.
        assert!(matches!(state.lock(), Err(StateError::Locked { .. })));
        drop(held);
        let again = state.lock().unwrap();
        drop(again);

        let daemon = state.lock_daemon().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("daemon.pid")).unwrap().trim(), std::process::id().to_string());
        match state.lock_daemon() {
            Err(e @ StateError::DaemonRunning { pid: Some(_), .. }) => assert!(e.to_string().contains("another fleetwright daemon already runs"), "{e}"),
            other => panic!("a second daemon was not refused: {:?}", other.map(|_| ())),
        }
        // The apply lock is separate: the daemon takes it per reconcile.
        drop(state.lock().unwrap());
        drop(daemon);
        drop(state.lock_daemon().unwrap());
    }
}
