//! The state directory: the inventory, deploy markers and the apply lock. Every write is
//! atomic (temp file, fsync, rename, fsync of the directory): a crash leaves the old or the new
//! file, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::inventory::{AgentRecord, Inventory, VERSION};

/// Write `content` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_at(path, content, mode, "mid-write")
}

const TEMP_MARK: &str = ".fleetwright-tmp-";

/// `write_atomic`, with the crash point (`crash`) between the durable temp file and the rename.
fn write_atomic_at(path: &Path, content: &[u8], mode: u32, crash: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        super::crash_point(crash);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
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
        let Some(pid) = name.to_str().filter(|n| n.starts_with('.')).and_then(|n| n.rsplit_once(TEMP_MARK)).and_then(|(_, pid)| pid.parse::<i32>().ok()) else { continue };
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
    #[error("{path}: the inventory is damaged ({source}); fleetwright will not guess what it owns. Restore it from a backup, or move it away to start over (files it wrote will then be refused as foreign)")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("another fleetwright apply holds the lock {path}; it runs one apply at a time")]
    Locked { path: PathBuf },
}

pub struct StateDir {
    pub root: PathBuf,
}

/// Holds the apply lock (flock) until dropped.
pub struct Lock {
    _file: File,
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
        fs::create_dir_all(&self.root).map_err(self.io(&self.root))?;
        let file = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(self.io(&path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Lock { _file: l.unlock().map_err(|(_, e)| StateError::Io { path: path.clone(), source: e.into() })? }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StateError::Locked { path }),
            Err((_, e)) => Err(StateError::Io { path, source: e.into() }),
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

    /// Write an agent's deploy marker: `<name>.json` (everything) and `<name>.env`
    /// (FLEETWRIGHT_COMMIT, FLEETWRIGHT_SPEC_HASH; read by the agent's units at each start).
    /// Each file is written only when its content changes.
    pub fn write_marker(&self, agent: &str, rec: &AgentRecord) -> Result<(), StateError> {
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
        let env = format!("FLEETWRIGHT_COMMIT={}\nFLEETWRIGHT_SPEC_HASH={}\n", rec.changed_commit, rec.spec_hash);
        for (path, bytes) in [(dir.join(format!("{agent}.json")), json), (dir.join(format!("{agent}.env")), env.into_bytes())] {
            if fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                write_atomic(&path, &bytes, 0o644).map_err(self.io(&path))?;
            }
        }
        Ok(())
    }

    pub fn remove_marker(&self, agent: &str) -> Result<(), StateError> {
        for ext in ["json", "env"] {
            let p = self.markers_dir().join(format!("{agent}.{ext}"));
            remove_durable(&p).map_err(self.io(&p))?;
        }
        Ok(())
    }
}
