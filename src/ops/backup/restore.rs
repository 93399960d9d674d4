//! Restoring a backup: [`prepare_restore`] makes a verified copy beside the live database,
//! [`PreparedRestore::swap`] moves the live files aside and the copy into place, atomically
//! (see [`restore`]). Stopping and starting the agent around the swap is the caller's.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use rusqlite::{Connection, OpenFlags};

use super::names::compact_timestamp;
use super::sweep::sweep_restore_temps;
use super::{
    AUX_SUFFIXES, BackupError, TEMP_COUNTER, TempGuard, check_database_file, integrity_check, io_err, remove_aux_files, split, sqlite_header, suffixed,
};
use crate::ops::walk::{self, Dir, Trust, WalkError};

/// Swap `backup_file` in as the live database `db`, atomically:
///
/// 1. copy it to a temporary file beside `db`, with the owner, group and
///    mode (without execute or special bits) of the current `db` (of `db`'s
///    directory and 0640 when there is no current `db`), fsync;
/// 2. check that the copy opens and `PRAGMA integrity_check` says ok, and
///    give it the journal mode (WAL or rollback) of the current `db`;
/// 3. refuse if another process holds a lock on `db` (any open connection to
///    a WAL database, or a transaction in progress);
/// 4. move the current `db` and its `-wal`, `-shm`, `-journal` files aside
///    as `<db>.replaced-<YYYYMMDDTHHMMSSZ>` (plus the same suffixes, so the
///    kept copy opens with its uncheckpointed WAL); never deleted, never
///    overwritten;
/// 5. rename the copy into place and fsync the directory.
///
/// The backup file itself is only read, through a walk of root's directories
/// (see [the module docs](super)); `db`'s directory is reached by a walk too and every
/// step above is relative to its descriptor, the check of step 2 done as the
/// directory's owner. The caller stops the agent's units before and starts
/// them after. Returns where the replaced database was kept, or `None` when
/// there was nothing to move aside (restoring onto a host that lost its
/// database).
pub fn restore(db: &Path, backup_file: &Path, now: SystemTime) -> Result<Option<PathBuf>, BackupError> {
    prepare_restore(db, backup_file, now)?.swap()
}

/// A verified copy of a backup beside the live database, ready to take its place: steps 1
/// and 2 of [`restore`], which take as long as the database is big and need not wait for the
/// agent to stop. Dropped without [`PreparedRestore::swap`], the copy is removed.
pub struct PreparedRestore {
    db: PathBuf,
    backup_file: PathBuf,
    /// The live database's directory, as walked.
    dir: Dir,
    name: OsString,
    tmp_name: OsString,
    /// Device and inode of the verified copy: what is renamed into place must be it.
    copy: (u64, u64),
    guard: TempGuard,
    ts: String,
}

/// Open a backup to read it: through a walk of root's directories, never through a link.
fn open_backup_file(path: &Path) -> Result<File, String> {
    let abs = std::path::absolute(path).map_err(|e| e.to_string())?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err("it has no file name".into());
    };
    let dir = walk::open_dir(parent, Trust::Root).map_err(|e| format!("{e} (backups are read only from directories that only root can change)"))?;
    match dir.stat(name).map_err(|e| e.to_string())? {
        None => return Err("it does not exist".into()),
        Some(st) if walk::kind(&st) == SFlag::S_IFLNK => return Err(WalkError::Symlink { path: abs.clone() }.to_string()),
        Some(st) if walk::kind(&st) != SFlag::S_IFREG => return Err("not a regular file".into()),
        Some(_) => {}
    }
    let f = dir.open(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(|e| e.to_string())?;
    if !f.metadata().map_err(|e| e.to_string())?.file_type().is_file() {
        return Err("not a regular file".into());
    }
    Ok(f)
}

/// Steps 1 and 2 of [`restore`]: copy and verify.
pub fn prepare_restore(db: &Path, backup_file: &Path, now: SystemTime) -> Result<PreparedRestore, BackupError> {
    const STATE: &str = "nothing was changed";
    let ts = compact_timestamp(now)?;
    let bad = |detail: String| BackupError::BadBackup { path: backup_file.to_path_buf(), db: db.to_path_buf(), detail };

    let mut source = open_backup_file(backup_file).map_err(bad)?;

    // The live database's directory: walked to once, then only used through its descriptor.
    let (parent, name) = split(db)?;
    let dir = walk::open_dir(&parent, Trust::Owner).map_err(|e| BackupError::Unsafe {
        what: "directory of database",
        path: db.to_path_buf(),
        source: e,
        state: STATE,
    })?;
    let identity = dir.identity();
    // What earlier restores, killed during their copy, left here.
    for gone in sweep_restore_temps(&dir, &name) {
        tracing::info!(file = %gone, "removed the temporary copy of a killed restore");
    }
    let reading = |e| BackupError::Io { action: "reading", path: db.to_path_buf(), source: e, hint: STATE };
    let live = match dir.stat(&name).map_err(reading)? {
        None => None,
        Some(st) if walk::kind(&st) == SFlag::S_IFLNK => {
            return Err(BackupError::Unsafe { what: "database", path: db.to_path_buf(), source: WalkError::Symlink { path: dir.join(&name) }, state: STATE });
        }
        Some(_) => {
            let f = dir.open(&name, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(reading)?;
            let meta = f.metadata().map_err(reading)?;
            check_database_file(&dir.join(&name), &meta, identity.as_ref(), STATE)?;
            let wal = sqlite_header(&f).map_err(reading)? == Ok(2);
            Some((meta, wal))
        }
    };
    let (uid, gid, mode) = match &live {
        Some((m, _)) => (m.uid(), m.gid(), m.mode() & 0o666),
        None => (dir.uid(), dir.gid(), 0o640),
    };

    // 1. Copy beside the live database.
    let tmp_name = OsString::from(format!(".{}.restore-{}-{}.tmp", name.to_string_lossy(), std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(&tmp_name);
    let hint = "the copy was discarded, the live database was not touched";
    let mut out = dir.create_new(&tmp_name, 0o600).map_err(io_err("creating", &tmp, "check that the database's directory is writable; nothing was changed"))?;
    let guard = TempGuard::new(&dir, &tmp_name).map_err(io_err("holding", dir.path(), STATE))?;
    io::copy(&mut source, &mut out).map_err(io_err("copying the backup to", &tmp, hint))?;
    out.flush().map_err(io_err("writing", &tmp, hint))?;
    fleetwright_sys::crash_point("restore-copied");
    let meta = out.metadata().map_err(io_err("reading", &tmp, hint))?;
    if (meta.uid(), meta.gid()) != (uid, gid) {
        std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).map_err(io_err("changing the owner of", &tmp, hint))?;
    }
    out.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("changing the mode of", &tmp, hint))?;
    out.sync_all().map_err(io_err("fsync of", &tmp, hint))?;
    let copy = (meta.dev(), meta.ino());

    // 2. Verify, and match the live database's journal mode. SQLite opens the copy by path: as
    // the owner of the directory, which could swap it.
    {
        let _acting = walk::act_as(identity.as_ref()).map_err(io_err("taking the file-system identity of the owner of", dir.path(), hint))?;
        integrity_check(&tmp).map_err(|d| bad(format!("integrity check of its copy {} failed: {d}", tmp.display())))?;
        if let Some((_, live_is_wal)) = &live {
            let want = if *live_is_wal { "wal" } else { "delete" };
            let c = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW)
                .map_err(|e| bad(e.to_string()))?;
            let got: String = c
                .query_row(&format!("PRAGMA journal_mode={want}"), [], |r| r.get(0))
                .map_err(|e| bad(format!("cannot set journal_mode={want} on the copy: {e}")))?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(bad(format!("cannot set journal_mode={want} on the copy: SQLite kept {got}")));
            }
            c.close().map_err(|(_, e)| bad(e.to_string()))?;
        }
    }
    out.sync_all().map_err(io_err("fsync of", &tmp, hint))?;
    remove_aux_files(&dir, &tmp_name);
    Ok(PreparedRestore { db: db.to_path_buf(), backup_file: backup_file.to_path_buf(), dir, name, tmp_name, copy, guard, ts })
}

impl PreparedRestore {
    /// Steps 3 to 5 of [`restore`]: with the agent stopped, swap the copy in. Returns where
    /// the replaced database was kept.
    pub fn swap(self) -> Result<Option<PathBuf>, BackupError> {
        let PreparedRestore { db, backup_file, dir, name, tmp_name, copy, mut guard, ts } = self;
        let (db, backup_file) = (db.as_path(), backup_file.as_path());
        // 3. Nobody may have the live database open.
        if let Some(pid) = lock_holder(&dir, &name).map_err(io_err("checking the locks of", db, "nothing was changed"))? {
            return Err(BackupError::InUse { path: db.to_path_buf(), pid });
        }

        let mut moved: Vec<(OsString, OsString)> = Vec::new();
        let mut kept_at = None;
        let swap_err = |step: &'static str, source: io::Error, moved: &[(OsString, OsString)]| {
            let state = undo(&dir, moved);
            BackupError::Swap { backup: backup_file.to_path_buf(), db: db.to_path_buf(), step, source, state }
        };
        // What takes the database's place is the copy that was checked (the directory's owner
        // could have put something else at its name since).
        match dir.stat(&tmp_name) {
            Ok(Some(st)) if walk::kind(&st) == SFlag::S_IFREG && (st.st_dev, st.st_ino) == copy => {}
            Ok(_) => {
                let e = io::Error::other(format!("{} was replaced since it was checked", dir.join(&tmp_name).display()));
                return Err(swap_err("checking the verified copy", e, &moved));
            }
            Err(e) => return Err(swap_err("checking the verified copy", e, &moved)),
        }

        // 4. Move the current files aside.
        let present: Vec<&str> = std::iter::once("").chain(AUX_SUFFIXES).filter(|s| matches!(dir.stat(suffixed(&name, s)), Ok(Some(_)))).collect();
        if !present.is_empty() {
            let aside = free_aside_name(&dir, &name, &ts);
            for s in present {
                let (from, to) = (suffixed(&name, s), suffixed(&aside, s));
                if let Err(e) = dir.rename_noreplace(&from, &to) {
                    return Err(swap_err("moving the current database aside", e, &moved));
                }
                moved.push((from, to));
            }
            kept_at = Some(dir.join(&aside));
        }
        fleetwright_sys::crash_point("restore-aside");

        // 5. The copy takes the live database's place.
        if let Err(e) = dir.rename_noreplace(&tmp_name, &name) {
            return Err(swap_err("renaming the verified copy into place", e, &moved));
        }
        guard.disarm();
        dir.sync().map_err(|source| BackupError::Swap {
            backup: backup_file.to_path_buf(),
            db: db.to_path_buf(),
            step: "fsync of the directory",
            source,
            state: format!("the restored database is in place; the replaced one is at {}", kept_at.as_deref().unwrap_or(Path::new("(none)")).display()),
        })?;
        Ok(kept_at)
    }
}

/// `<db>.replaced-<ts>`, or `<db>.replaced-<ts>-<n>` if taken (with any suffix).
fn free_aside_name(dir: &Dir, name: &OsStr, ts: &str) -> OsString {
    let mut n = 0u32;
    loop {
        let candidate = if n == 0 { suffixed(name, &format!(".replaced-{ts}")) } else { suffixed(name, &format!(".replaced-{ts}-{n}")) };
        let taken = std::iter::once("").chain(AUX_SUFFIXES).any(|s| !matches!(dir.stat(suffixed(&candidate, s)), Ok(None)));
        if !taken {
            return candidate;
        }
        n += 1;
    }
}

/// Best effort: move files back where they were; says where things are.
fn undo(dir: &Dir, moved: &[(OsString, OsString)]) -> String {
    let mut failed = Vec::new();
    for (from, to) in moved.iter().rev() {
        if dir.rename_noreplace(to, from).is_err() {
            failed.push(format!("{} (belongs at {})", dir.join(to).display(), dir.join(from).display()));
        }
    }
    if moved.is_empty() {
        "nothing was changed".into()
    } else if failed.is_empty() {
        "the previous database was put back, nothing was changed".into()
    } else {
        format!("the previous database could not be put back: move {} by hand", failed.join(", "))
    }
}

/// The pid of another process holding an SQLite lock on `name` in `dir` (a
/// shared lock is held by every open connection to a WAL database, and by
/// any transaction in a rollback-journal one). Locks of this process are not
/// seen. `None` when there is no such file.
fn lock_holder(dir: &Dir, name: &OsStr) -> io::Result<Option<i32>> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    const PENDING_BYTE: i64 = 0x4000_0000; // SQLite's lock bytes: pending, reserved, 510 shared
    let f = match dir.open(name, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = PENDING_BYTE as libc::off_t;
    fl.l_len = 512;
    fcntl(&f, FcntlArg::F_GETLK(&mut fl)).map_err(io::Error::from)?;
    Ok((fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid))
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
