//! The file-system plumbing every writer shares: atomic writes (temp file, fsync, rename, fsync
//! of the directory: a crash leaves the old or the new file, never half of one), durable
//! removal, the sweep of temporary files whose writer died, and whether a pid still runs.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Write `content` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_at(path, content, mode, "mid-write")
}

pub const TEMP_MARK: &str = ".fleetwright-tmp-";

/// `write_atomic`, with the crash point (`crash`) between the durable temp file and the rename.
pub fn write_atomic_at(path: &Path, content: &[u8], mode: u32, crash: &str) -> std::io::Result<()> {
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
            crate::crash_point(crash);
        }
        fs::rename(&tmp, path)?;
        if durable.is_some() {
            sync_dir(dir)?;
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
        let Some(pid) = name.to_str().filter(|n| n.starts_with('.')).and_then(|n| n.rsplit_once(TEMP_MARK)).and_then(|(_, pid)| pid.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) && e.file_type()?.is_file() {
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
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Make the entries made, renamed or removed in `dir` durable (fsync of the directory).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Is process `pid` running? This process always is. Signal 0 only asks whether the pid exists
/// (EPERM: it does, as someone else's); a pid beyond `pid_t` never does.
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else { return false };
    raw > 0 && !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None), Err(nix::errno::Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pids_that_cannot_exist_are_not_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0), "pid 0 means the caller's process group to kill(2)");
        assert!(!pid_alive(u32::MAX));
    }
}
