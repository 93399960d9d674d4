//! Online SQLite backups with grandfather-father-son retention, listing and
//! restore.
//!
//! What the user writes:
//!
//! ```yaml
//! backups:
//!   - sqlite: /srv/outreach/store/messages.db
//!     to: /var/backups/fleetwright/outreach
//!     keep: {last: 7, daily: 7, weekly: 4}
//!     verify: true
//!     wal: true
//! ```
//!
//! # How a backup is taken
//!
//! [`backup`] copies the live database with SQLite's online backup API
//! (`sqlite3_backup_step`) into a hidden temporary file in the backup
//! directory, fsyncs it, optionally runs `PRAGMA integrity_check` on it, and
//! only then renames it (without ever replacing an existing file) to
//! `<db file stem>-<YYYYMMDDTHHMMSSZ>.sqlite`, fsyncs the directory and
//! prunes old backups by the [`Policy`].
//!
//! Consistency while the agent keeps writing:
//!
//! * **WAL databases** (recommended, `wal: true`): the source connection
//!   opens one read transaction before the first step and holds it until the
//!   last one. Every step copies pages from that one snapshot, so the backup
//!   is exactly the database as of the moment the backup began, and it never
//!   restarts. In WAL mode a reader does not block writers, so the agent
//!   keeps committing the whole time (the WAL just cannot be checkpointed
//!   past our snapshot until we finish).
//! * **Rollback-journal databases**: holding a read lock would block every
//!   writer for the whole copy, so each step takes and drops its own read
//!   lock and we pause between steps so a waiting writer gets the lock.
//!   SQLite restarts the copy when another connection commits in between
//!   (that is how it stays consistent). After [`Tuning::max_restarts`]
//!   restarts the rest is copied in one step (`step(-1)`), holding the read
//!   lock until done: writers wait for it (their `busy_timeout`), the backup
//!   is guaranteed to finish.
//!
//! Backups are always written as rollback-journal (single file) databases,
//! even when the live one is in WAL mode, so a backup is one self-contained
//! file and opening it read-only creates nothing beside it.
//!
//! # Files in the backup directory
//!
//! Only regular files named exactly `<stem>-<YYYYMMDDTHHMMSSZ>.sqlite` or
//! `<stem>-<YYYYMMDDTHHMMSSZ>-<n>.sqlite` (`n` ≥ 1, used when the same second
//! repeats) belong to database `<stem>`: [`list`](fn@list) returns only those and
//! pruning deletes only those. Anything else (a README, other databases'
//! backups, temporary files) is never touched. Two databases with the same
//! file stem must not share a backup directory.
//!
//! Temporary files are `.<stem>-<ts>.sqlite.tmp-<pid>-<n>`; one left behind by
//! a process that died (its pid no longer exists) is removed by the next
//! backup of the same database, the next restore, and the next apply.
//!
//! The order backups were taken is kept in `.<stem>.taken` (root's 0600, one file name
//! a line, appended before each backup is renamed into place, rewritten without the
//! pruned ones): [`list`](fn@list) and `restore --latest` go by it, not by the dates in the
//! names, which come from a clock that may have been wrong. A name dated more than
//! [`FUTURE_SLACK`] ahead of now is marked `future`: listed, never preferred, and out
//! of [`keep`](fn@keep)'s counts.
//!
//! # Who touches what (the helper runs as root)
//!
//! The backup unit runs as root, on the agent's behalf, in directories the
//! agent's user may own. Nothing here follows a symbolic link or re-resolves a
//! path that user could swap (see [`super::walk`]):
//!
//! * **The backup directory `to`** must be root's: every directory from `/` to
//!   it belongs to root and none is writable by group or others (a root-owned
//!   sticky directory such as `/tmp` on the way is fine), else the backup is
//!   refused, naming the directory. Not the agent's user: the backups are kept
//!   where the agent cannot touch them, and a directory it owned is one where
//!   it could swap files between two steps. It is created (0750) by a walk that
//!   never follows a link. Backups are created 0600 there, and every operation
//!   in it (temporary file, rename, prune, sweep) is relative to the directory
//!   descriptor the walk holds.
//! * **The database** is reached by a walk too ([`super::walk::Trust::Owner`]):
//!   its directory may belong to the agent's user (who may own the directories
//!   above it too), any other directory on the way to root. The file must be a
//!   regular file (not a link) with one link, belong to the owner of its
//!   directory when that is not root, and start with the 16-byte SQLite header —
//!   all checked through a descriptor before anything touches it, so an empty or
//!   non-SQLite file is an error that changes nothing (`wal: true` included).
//! * **SQLite opens files by path** (the database, `-wal`, `-shm`, `-journal`).
//!   It is given `SQLITE_OPEN_NOFOLLOW` (no link anywhere in the path), and while
//!   it reads the live database this thread has the file-system identity of the
//!   owner of the database's directory ([`super::walk::act_as`]): whatever that
//!   user swaps in between, SQLite can open no more than the user could. The copy
//!   is opened (as root) before that, in the backup directory.
//! * **Restore** reads the backup through a walk of root's directories, writes
//!   its copy beside the live database through the held descriptor of the
//!   database's directory, checks the copy as the directory's owner, and moves
//!   files with `renameat2` relative to that descriptor: a directory swapped for
//!   a link after the walk redirects nothing.
//!
//! # Where things are
//!
//! * `mod.rs`: the public types, the errors, and what taking and restoring share (the checks
//!   of a database file, its header, `PRAGMA integrity_check`, the temporary file's guard,
//!   SQLite's side files);
//! * `take.rs`: [`backup`] — the copy, publishing it under its name, pruning;
//! * `ledger.rs`: `.<stem>.taken`, the order backups were taken in;
//! * `list.rs`: [`list`](fn@list) and [`latest`], by the ledger;
//! * `keep.rs`: [`keep`](fn@keep), the pure grandfather-father-son selection;
//! * `names.rs`: backup names and the compact UTC timestamps in them (jiff);
//! * `restore.rs`: [`prepare_restore`] and the atomic swap, [`PreparedRestore::swap`];
//! * `sweep.rs`: [`sweep`](fn@sweep), what killed backups and restores left.

mod keep;
mod ledger;
mod list;
mod names;
mod restore;
mod sweep;
mod take;
#[cfg(test)]
mod testutil;

pub use keep::keep;
pub use list::{FUTURE_SLACK, latest, list};
pub use restore::{PreparedRestore, prepare_restore, restore};
pub use sweep::sweep;
pub use take::{backup, backup_with};

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

use super::walk::{self, Dir, Identity, WalkError};

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Grandfather-father-son retention: which backups to keep.
///
/// A backup is kept when any rule keeps it; all zero keeps nothing but the
/// backup just taken (see [`backup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The newest `last` backups.
    pub last: u32,
    /// The newest backup of each of the `daily` most recent UTC days that have one.
    pub daily: u32,
    /// The newest backup of each of the `weekly` most recent ISO weeks (UTC,
    /// Monday to Sunday) that have one.
    pub weekly: u32,
}

/// One backup file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupFile {
    pub path: String,
    /// When the backup was taken, RFC 3339 UTC to the second
    /// (`2025-01-31T04:00:00Z`), read from the file name (the clock of the moment: see
    /// `future`).
    pub taken_at: String,
    pub bytes: u64,
    /// Its place in the order the backups were taken (the directory's ledger,
    /// `.<stem>.taken`): a higher number was taken later. 0: taken before the ledger knew it
    /// (by an older version, or copied in); those count as taken before every numbered one,
    /// in the order of their names.
    pub seq: u64,
    /// Its name is dated in the future (a clock that was wrong when it was taken, or a file
    /// copied in): never preferred by `restore --latest`, and not counted in `keep`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub future: bool,
}

/// What [`backup`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub file: BackupFile,
    /// `PRAGMA integrity_check` ran on the backup and said "ok".
    pub verified: bool,
    /// Pages in the backup.
    pub pages: i64,
    /// Wall-clock seconds for the whole operation (copy, fsync, verify, prune).
    pub seconds: f64,
    /// Old backups deleted by the retention policy.
    pub pruned: Vec<String>,
    /// `sqlite3_backup_step` calls made.
    pub steps: u32,
    /// How often SQLite restarted the copy because another connection
    /// committed between two steps (only possible for rollback-journal
    /// databases; always 0 in WAL mode).
    pub restarts: u32,
    /// Journal mode of the live database while it was copied ("wal", "delete", ...).
    pub journal_mode: String,
    /// Temporary files of earlier, crashed backups that were cleaned up.
    pub removed_temps: Vec<String>,
}

/// How the copy is paced. [`Tuning::default`] is what [`backup`] uses.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Pages per `sqlite3_backup_step` call (must be > 0).
    pub pages_per_step: i32,
    /// Sleep between two steps.
    pub pause: Duration,
    /// Rollback-journal mode only: after this many restarts caused by
    /// concurrent commits, copy the rest in one step.
    pub max_restarts: u32,
    /// Give up when the source stays locked (SQLITE_BUSY/LOCKED) this long
    /// without any progress. Also the connection's busy_timeout.
    pub lock_timeout: Duration,
}

impl Default for Tuning {
    /// 4096 pages (16 MiB with the default 4 KiB page) per step and a 1 ms
    /// pause: a 1 GiB database is copied in 64 steps, so the pauses add
    /// ~64 ms, while in rollback-journal mode a writer waits at most for one
    /// step (a few milliseconds of memcpy and page-cache I/O) before it gets
    /// the lock. In WAL mode writers are never blocked by the copy at all.
    fn default() -> Self {
        Tuning { pages_per_step: 4096, pause: Duration::from_millis(1), max_restarts: 3, lock_timeout: Duration::from_secs(30) }
    }
}

/// Why a backup or restore failed. Every message names the file and says
/// what state things were left in.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("database {path} does not exist; check the `sqlite:` path of this backup (nothing was backed up)")]
    MissingDatabase { path: PathBuf },

    #[error("cannot open database {path}{who}: {source}; check that it is an SQLite database and readable by fleetwright (nothing was backed up)")]
    OpenDatabase { path: PathBuf, who: String, source: rusqlite::Error },

    #[error(
        "cannot switch {path} to WAL mode: {detail}; the database is still in its old journal mode — set `wal: false` or move it to a local filesystem that supports shared memory"
    )]
    Wal { path: PathBuf, detail: String },

    #[error("cannot create backup directory {path}: {source}; create it by hand (mode 0750) or fix the permissions of its parent")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("online backup of {db} into {tmp} failed: {detail}; the partial backup was discarded, the live database was not touched")]
    Copy { db: PathBuf, tmp: PathBuf, detail: String },

    #[error(
        "integrity check of {path} failed: {detail}; the backup was discarded, the live database was not touched — run `PRAGMA integrity_check` on the live database"
    )]
    Integrity { path: PathBuf, detail: String },

    #[error("{action} {path} failed: {source}; {hint}")]
    Io { action: &'static str, path: PathBuf, source: io::Error, hint: &'static str },

    #[error("backup {taken} was taken, but deleting the old backup {path} failed: {source}; delete it by hand or fix the permissions of its directory")]
    Prune { taken: PathBuf, path: PathBuf, source: io::Error },

    #[error("backup {path} cannot be restored: {detail}; pick another backup — the live database {db} was not touched")]
    BadBackup { path: PathBuf, db: PathBuf, detail: String },

    #[error("database {path} is in use by process {pid}; stop the units that use it before restoring — nothing was changed")]
    InUse { path: PathBuf, pid: i32 },

    #[error("restoring {backup} as {db} failed while {step}: {source}; {state}")]
    Swap { backup: PathBuf, db: PathBuf, step: &'static str, source: io::Error, state: String },

    #[error("timestamp {0:?} is before 1970 or after 9999; fix the system clock")]
    Clock(SystemTime),

    #[error("{path} has no file name to name backups after; give the database file a name")]
    NoFileName { path: PathBuf },

    #[error("{what} {path}: {source}; {state}")]
    Unsafe { what: &'static str, path: PathBuf, source: WalkError, state: &'static str },

    #[error("{path} {detail}; point `sqlite:` at the SQLite database file — nothing was changed (its journal mode neither)")]
    NotSqlite { path: PathBuf, detail: String },

    #[error("{path} {detail}; {state}")]
    Refused { path: PathBuf, detail: String, state: &'static str },

    #[error("{what}: no space left on the file system of {dir} ({errno}); free space there{hint} — nothing was backed up, the live database was not changed")]
    NoSpace { what: String, dir: PathBuf, errno: &'static str, hint: &'static str },
}

/// SQLITE_FULL: a write found the file system full (SQLite keeps no errno for it).
fn full(e: &rusqlite::Error) -> Option<&'static str> {
    (e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)).then_some("ENOSPC")
}

/// What an SQLite error on `conn` says about the disk: the error number behind it (SQLite
/// reports a full disk under a WAL as "disk I/O error") when it is a full file system or quota.
fn no_space(conn: &Connection) -> Option<&'static str> {
    // SAFETY: the handle of a live connection, used for one call while `conn` is borrowed.
    no_space_of(unsafe { conn.handle() })
}

/// `no_space` of a connection's raw handle, which must be a live connection's.
fn no_space_of(handle: *mut rusqlite::ffi::sqlite3) -> Option<&'static str> {
    // SAFETY: the caller passes the handle of a connection that is still open.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(handle) };
    match errno {
        libc::ENOSPC => Some("ENOSPC"),
        libc::EDQUOT => Some("EDQUOT, the disk quota is exceeded"),
        _ => None,
    }
}

fn io_err(action: &'static str, path: &Path, hint: &'static str) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { action, path, source, hint }
}

const UNTOUCHED: &str = "the backup was discarded, the live database was not touched";

/// Numbers the temporary files of this process (backups' and restores' copies), so two at
/// once never share a name.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `path` made absolute (against the working directory, no link resolved), split into its
/// directory and file name.
fn split(path: &Path) -> Result<(PathBuf, OsString), BackupError> {
    let abs = std::path::absolute(path).map_err(io_err("resolving", path, "give an absolute path"))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_os_string())),
        _ => Err(BackupError::NoFileName { path: path.to_path_buf() }),
    }
}

/// A live database must be a regular file with one link, and in a user's directory, that
/// user's: a second link or another owner would mean someone else's file put in its place.
fn check_database_file(path: &Path, meta: &fs::Metadata, identity: Option<&Identity>, state: &'static str) -> Result<(), BackupError> {
    let refuse = |detail: String| Err(BackupError::Refused { path: path.to_path_buf(), detail, state });
    if !meta.file_type().is_file() {
        return refuse("is not a regular file; point `sqlite:` at the database file".into());
    }
    if meta.nlink() != 1 {
        return refuse(format!(
            "has {} hard links: it could be another file linked into this directory, and a database has one link; copy it to a file of its own",
            meta.nlink()
        ));
    }
    if let Some(who) = identity
        && meta.uid() != who.uid
    {
        return refuse(format!(
            "belongs to {}, but its directory to {who}: a database in a user's directory must belong to that user (chown it)",
            walk::user_name(meta.uid())
        ));
    }
    Ok(())
}

/// The database header of the open file `f`: byte 18, the write version (1 =
/// rollback journal, 2 = WAL), or why it is no SQLite database.
fn sqlite_header(f: &File) -> io::Result<Result<u8, &'static str>> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 20];
    let mut n = 0;
    while n < header.len() {
        match f.read_at(&mut header[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    if n == 0 {
        return Ok(Err("is empty"));
    }
    if n < header.len() || &header[..16] != b"SQLite format 3\0" {
        return Ok(Err("is not an SQLite database (it does not begin with the 16-byte SQLite header)"));
    }
    Ok(Ok(header[18]))
}

/// `PRAGMA integrity_check` on a closed database file, read-only.
fn integrity_check(path: &Path) -> Result<(), String> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW)
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> =
        c.prepare("PRAGMA integrity_check").and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect()).map_err(|e| e.to_string())?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let mut detail = rows.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    if rows.len() > 5 {
        detail.push_str(&format!("; … {} more", rows.len() - 5));
    }
    if detail.is_empty() {
        detail = "no result".into();
    }
    Err(detail)
}

/// Removes a temporary database file and its SQLite side files on drop,
/// unless disarmed; relative to a descriptor of its directory.
struct TempGuard {
    dir: OwnedFd,
    name: OsString,
    armed: bool,
}

impl TempGuard {
    fn new(dir: &Dir, name: &OsStr) -> io::Result<Self> {
        Ok(TempGuard { dir: dir.try_clone()?, name: name.to_os_string(), armed: true })
    }
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::unistd::unlinkat(&self.dir, self.name.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            remove_aux_files(&self.dir, &self.name);
        }
    }
}

const AUX_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// `name` + `suffix`.
fn suffixed(name: &OsStr, suffix: &str) -> OsString {
    let mut s = name.to_os_string();
    s.push(suffix);
    s
}

/// Remove SQLite's side files of `name` in the directory `dir` (never through a link).
fn remove_aux_files(dir: &impl std::os::fd::AsFd, name: &OsStr) {
    for s in AUX_SUFFIXES {
        let _ = nix::unistd::unlinkat(dir, suffixed(name, s).as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

#[cfg(test)]
mod test_hooks {
    use std::cell::Cell;
    use std::path::Path;
    thread_local! {
        /// Called on the finished, fsynced temporary file right before verification.
        pub static BEFORE_VERIFY: Cell<Option<fn(&Path)>> = const { Cell::new(None) };
        /// Called with the live database's path after its checks, right before SQLite opens it.
        pub static BEFORE_COPY: Cell<Option<fn(&Path)>> = const { Cell::new(None) };
        /// Called with the live database's path each time its switch to WAL is told "busy".
        pub static ON_WAL_BUSY: Cell<Option<fn(&Path)>> = const { Cell::new(None) };
    }
}
