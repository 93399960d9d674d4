//! The state directory: the inventory, deploy markers and the apply lock. Every write is
//! atomic (temp file, fsync, rename, fsync of the directory): a crash leaves the old or the new
//! file, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::inventory::{AgentRecord, Inventory, VERSION};

/// Write `content` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_at(path, content, mode, "mid-write")
}

const TEMP_MARK: &str = ".fleetwright-tmp-";

/// `write_atomic`, with the crash point (`crash`) between the durable temp file and the rename.
fn write_atomic_at(path: &Path, content: &[u8], mode: u32, crash: &str) -> std::io::Result<()> {
    write_via_temp(path, content, mode, Some(crash))
}

/// `write_atomic` without the fsyncs: a file that is never half written (temp, rename), but
/// whose durability rides on the next fsync of the file system. For deploy markers: one per
/// agent, rewritten on every commit (they carry the applied commit), where a thousand fsyncs
/// would cost seconds; the inventory, saved (and fsynced) after them, decides whether they
/// are written again after a crash.
pub fn write_replace(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    write_via_temp(path, content, mode, None)
}

/// Write a temp file beside `path` and rename it over `path`. `durable`: fsync the file before
/// the rename (with that crash point between) and the directory after it.
fn write_via_temp(path: &Path, content: &[u8], mode: u32, durable: Option<&str>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // Exactly `mode`, before anything is written: the umask may have taken bits away, and a
        // temp file left by a killed writer of the same pid keeps the mode it was made with.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        if let Some(crash) = durable {
            f.sync_all()?;
            super::crash_point(crash);
        }
        fs::rename(&tmp, path)?;
        if durable.is_some() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Remove the temp files (`.NAME.fleetwright-tmp-PID`) in `dir` whose writer is no longer
/// running: what a write killed before its rename leaves. The real file was never touched.
/// Returns what was removed; a missing `dir` has none.
pub fn sweep_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut removed = vec![];
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.starts_with('.')).and_then(|n| n.rsplit_once(TEMP_MARK)).and_then(|(_, pid)| pid.parse::<i32>().ok()) else {
            continue;
        };
        // Signal 0 only asks whether the pid exists (EPERM: it does, as someone else's).
        let alive = pid == std::process::id() as i32 || !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
        if !alive && e.file_type()?.is_file() {
            remove_durable(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Remove a file and make the removal durable.
pub fn remove_durable(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

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
    pub fn inventory_path(&self) -> PathBuf {
        self.root.join("inventory.json")
    }
    pub fn markers_dir(&self) -> PathBuf {
        self.root.join("markers")
    }

    /// Take the apply lock, failing at once when another process holds it.
    pub fn lock(&self) -> Result<Lock, StateError> {
        let path = self.root.join("apply.lock");
        self.try_lock(&path)?.ok_or(StateError::Locked { path })
    }

    /// Take the daemon's lock for as long as it runs (one daemon per state directory), and
    /// write its pid next to it for `sync` and `status`.
    pub fn lock_daemon(&self) -> Result<Lock, StateError> {
        let path = self.root.join("daemon.lock");
        let pid_file = self.root.join("daemon.pid");
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
        let dir = self.markers_dir();
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
        [(dir.join(format!("{agent}.json")), json), (dir.join(format!("{agent}.env")), env.into_bytes())]
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
        let files = ["json", "env"].map(|ext| self.markers_dir().join(format!("{agent}.{ext}")));
        for p in files.iter().chain([&crate::ops::heartbeat::record_path(&self.root, agent)]) {
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

    #[test]
    fn temp_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(format!(".a.service{TEMP_MARK}{}", std::process::id()));
        // pid_max is at most 2^22: this pid cannot be running.
        let dead = dir.path().join(format!(".b.service{TEMP_MARK}{}", 1 << 23));
        let real = dir.path().join("b.service");
        for p in [&mine, &dead, &real] {
            fs::write(p, "x").unwrap();
        }
        assert_eq!(sweep_temps(dir.path()).unwrap(), vec![dead.clone()]);
        assert!(mine.exists() && real.exists() && !dead.exists());
        assert!(sweep_temps(&dir.path().join("missing")).unwrap().is_empty());
    }
}
