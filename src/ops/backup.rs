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
//! repeats) belong to database `<stem>`: [`list`] returns only those and
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
//! pruned ones): [`list`] and `restore --latest` go by it, not by the dates in the
//! names, which come from a clock that may have been wrong. A name dated more than
//! [`FUTURE_SLACK`] ahead of now is marked `future`: listed, never preferred, and out
//! of [`keep`]'s counts.
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

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetwright_sys::fsutil;
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::walk::{self, Dir, Identity, Trust, WalkError};

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

// ---------------------------------------------------------------------------
// backup
// ---------------------------------------------------------------------------

/// Mode of a backup file: root's alone (the directory is root's too).
const BACKUP_MODE: u32 = 0o600;

/// Take one backup of `db` into `dir` at `now` (see the module docs), then
/// prune by `policy`. With `wal`, first switch the live database to WAL
/// mode. `dir` is created (mode 0750) if missing. An existing backup is
/// never overwritten: when the same second repeats the new file gets a
/// `-1`, `-2`, ... suffix. The backup just taken is never pruned, whatever
/// the policy.
pub fn backup(db: &Path, dir: &Path, policy: &Policy, verify: bool, wal: bool, now: SystemTime) -> Result<BackupReport, BackupError> {
    backup_with(db, dir, policy, verify, wal, now, &Tuning::default())
}

/// [`backup`] with explicit pacing.
pub fn backup_with(db: &Path, dir: &Path, policy: &Policy, verify: bool, wal: bool, now: SystemTime, tuning: &Tuning) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let ts = compact_timestamp(now)?;
    let stem = db_stem(db)?;

    // The live database, checked through a descriptor before anything is made or changed.
    let live = Live::open(db)?;
    let out = backup_dir(dir)?;
    let mut removed_temps = sweep_stale_temps(&out, &stem);
    if let Some(name) = live.path.file_name() {
        removed_temps.extend(sweep_restore_temps(&live.dir, name));
    }
    // What the policy drops already (a `keep` lowered since the last backup) goes first, so
    // that a full backup directory has room for this one; the newest backup stays until this
    // one is taken, whatever the policy.
    let mut pruned = prune(&out, &stem, policy, None, now, "nothing was backed up")?;

    // The temporary file, created exclusively with the backup's final mode.
    let tmp_name = OsString::from(format!(".{stem}-{ts}.sqlite.tmp-{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = out.join(&tmp_name);
    let tmp_file =
        out.create_new(&tmp_name, BACKUP_MODE).map_err(io_err("creating", &tmp, "check that the backup directory is writable (nothing was backed up)"))?;
    let mut guard = TempGuard::new(&out, &tmp_name).map_err(io_err("holding", out.path(), "nothing was backed up"))?;

    #[cfg(test)]
    if let Some(hook) = test_hooks::BEFORE_COPY.with(|h| h.get()) {
        hook(&live.path);
    }

    let (stats, journal_mode) = copy_live(&live, &tmp, wal, tuning)?;

    // Backups are single-file rollback-journal databases, even of a WAL source.
    to_rollback_journal(&tmp, &tmp_file).map_err(|detail| BackupError::Copy {
        db: live.path.clone(),
        tmp: tmp.clone(),
        detail: format!("cannot take the copy out of WAL mode: {detail}"),
    })?;
    remove_aux_files(&out, &tmp_name);

    tmp_file.sync_all().map_err(io_err("fsync of", &tmp, UNTOUCHED))?;

    #[cfg(test)]
    if let Some(hook) = test_hooks::BEFORE_VERIFY.with(|h| h.get()) {
        hook(&tmp);
    }

    if verify {
        integrity_check(&tmp).map_err(|detail| BackupError::Integrity { path: tmp.clone(), detail })?;
    }

    let final_name = publish(&out, &tmp_name, &stem, &ts)?;
    guard.disarm();
    fleetwright_sys::crash_point("backup-published");
    let final_path = out.join(&final_name);
    out.sync().map_err(io_err("fsync of directory", out.path(), "the rename may not survive a power failure; check the filesystem"))?;

    // The same file, renamed: its descriptor is still ours.
    let bytes = tmp_file.metadata().map_err(io_err("reading", &final_path, "the backup was taken but cannot be read back; check the backup directory"))?.len();
    drop(tmp_file);
    let taken_at = humantime::format_rfc3339_seconds(now).to_string();
    let mut file = BackupFile { path: final_path.to_string_lossy().into_owned(), taken_at, bytes, seq: 0, future: false };

    // Prune.
    pruned.extend(prune(&out, &stem, policy, Some(&final_name), now, "the backup was taken")?);
    if let Ok(listed) = list_in(&stem, &out, now)
        && let Some((_, f)) = listed.into_iter().find(|(n, _)| *n == final_name)
    {
        file.seq = f.seq;
    }

    Ok(BackupReport {
        file,
        verified: verify,
        pages: stats.pages,
        seconds: started.elapsed().as_secs_f64(),
        pruned,
        steps: stats.steps,
        restarts: stats.restarts,
        journal_mode,
        removed_temps,
    })
}

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

/// The backup directory, made if missing: root's (see the module docs).
fn backup_dir(dir: &Path) -> Result<Dir, BackupError> {
    let abs = std::path::absolute(dir).map_err(io_err("resolving", dir, "give an absolute path"))?;
    walk::make_dir(&abs, 0o750, Trust::Root).map_err(|e| match e {
        WalkError::Io { source, .. } => BackupError::CreateDir { path: dir.to_path_buf(), source },
        e => BackupError::Unsafe { what: "backup directory", path: dir.to_path_buf(), source: e, state: "nothing was backed up" },
    })
}

/// The live database: its directory reached by a walk, the file checked through a descriptor.
struct Live {
    dir: Dir,
    /// The database as SQLite is given it: the walked directory and the file name.
    path: PathBuf,
    /// Whom SQLite runs as while it has the database open (the directory's owner).
    identity: Option<Identity>,
}

impl Live {
    fn open(db: &Path) -> Result<Live, BackupError> {
        const STATE: &str = "nothing was backed up";
        let (parent, name) = split(db)?;
        let dir = walk::open_dir(&parent, Trust::Owner).map_err(|e| match e {
            WalkError::Missing { .. } => BackupError::MissingDatabase { path: db.to_path_buf() },
            e => BackupError::Unsafe { what: "database", path: db.to_path_buf(), source: e, state: STATE },
        })?;
        let path = dir.join(&name);
        let identity = dir.identity();
        let reading = |e| BackupError::Io {
            action: "reading",
            path: path.clone(),
            source: e,
            hint: "check the permissions of the database and its directory (nothing was backed up)",
        };
        match dir.stat(&name).map_err(reading)? {
            None => return Err(BackupError::MissingDatabase { path: db.to_path_buf() }),
            Some(st) if walk::kind(&st) == SFlag::S_IFLNK => {
                return Err(BackupError::Unsafe { what: "database", path: db.to_path_buf(), source: WalkError::Symlink { path }, state: STATE });
            }
            Some(_) => {}
        }
        let f = dir.open(&name, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(reading)?;
        let meta = f.metadata().map_err(reading)?;
        check_database_file(&path, &meta, identity.as_ref(), STATE)?;
        match sqlite_header(&f).map_err(reading)? {
            Ok(_) => {}
            Err(why) => return Err(BackupError::NotSqlite { path, detail: why.into() }),
        }
        Ok(Live { dir, path, identity })
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

struct CopyStats {
    pages: i64,
    steps: u32,
    restarts: u32,
}

/// Copy the live database into the (empty) temporary file `tmp`. The copy is opened first, as
/// root, in the backup directory; then everything SQLite does with the live database (open,
/// `-wal`, `-shm`, a hot journal) runs with the file-system identity of the owner of its
/// directory. Returns the copy's statistics and the live database's journal mode.
fn copy_live(live: &Live, tmp: &Path, wal: bool, tuning: &Tuning) -> Result<(CopyStats, String), BackupError> {
    let db = live.path.as_path();
    let copy_err = |detail: String| BackupError::Copy { db: db.to_path_buf(), tmp: tmp.to_path_buf(), detail };
    let mut dst = Connection::open_with_flags(tmp, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW)
        .map_err(|e| copy_err(format!("cannot open the temporary file: {e}")))?;
    // The temporary file is thrown away on any failure and fsynced by us
    // once complete: no journal, no syncs of its own.
    dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").map_err(|e| copy_err(e.to_string()))?;

    let who = live.identity.as_ref().map(|i| format!(" (opened as {i}, the owner of its directory)")).unwrap_or_default();
    let open_err = |source| BackupError::OpenDatabase { path: db.to_path_buf(), who: who.clone(), source };
    let acting =
        walk::act_as(live.identity.as_ref()).map_err(io_err("taking the file-system identity of the owner of", live.dir.path(), "nothing was backed up"))?;
    // The live database: never created here (no SQLITE_OPEN_CREATE), never through a link.
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW)
        .map_err(open_err)?;
    src.busy_timeout(tuning.lock_timeout).map_err(open_err)?;
    // What SQLite opened must be a database with pages before its journal mode is touched: WAL
    // mode would turn an empty file into a database.
    let pages: i64 = src
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| BackupError::NotSqlite { path: db.to_path_buf(), detail: format!("cannot be read as an SQLite database ({e})") })?;
    if pages == 0 {
        return Err(BackupError::NotSqlite { path: db.to_path_buf(), detail: "is empty".into() });
    }
    if wal {
        let mode: String = src.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| match full(&e).or_else(|| no_space(&src)) {
            // The -wal and -shm files cannot be made: the database's directory is full.
            Some(errno) => BackupError::NoSpace {
                what: format!("switching {} to WAL mode", db.display()),
                dir: db.parent().unwrap_or(Path::new("/")).to_path_buf(),
                errno,
                hint: "",
            },
            None => BackupError::Wal { path: db.to_path_buf(), detail: e.to_string() },
        })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BackupError::Wal { path: db.to_path_buf(), detail: format!("SQLite kept journal_mode={mode}") });
        }
    }
    let journal_mode: String = src.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(open_err)?;
    let journal_mode = journal_mode.to_ascii_lowercase();
    let stats = copy_online(&src, &mut dst, db, tmp, journal_mode == "wal", tuning)?;
    // The live database is closed as its owner, the copy as root.
    drop(src);
    drop(acting);
    dst.close().map_err(|(_, e)| copy_err(format!("cannot close the temporary file: {e}")))?;
    Ok((stats, journal_mode))
}

/// Copy `src` into `dst` (an empty database) with the online backup API.
fn copy_online(src: &Connection, dst: &mut Connection, db: &Path, tmp: &Path, snapshot: bool, tuning: &Tuning) -> Result<CopyStats, BackupError> {
    let copy_err = |detail: String| BackupError::Copy { db: db.to_path_buf(), tmp: tmp.to_path_buf(), detail };

    if snapshot {
        // WAL: pin one read snapshot for the whole copy (see module docs).
        src.execute_batch("BEGIN DEFERRED")
            .and_then(|_| src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)))
            .map_err(|e| copy_err(format!("cannot start a read transaction: {e}")))?;
    }

    // SAFETY: the raw handle is only given to `sqlite3_system_errno`, while `dst` is open.
    let dst_handle = unsafe { dst.handle() };
    let result = (|| -> Result<CopyStats, BackupError> {
        let b = Backup::new(src, dst).map_err(|e| copy_err(e.to_string()))?;
        let per_step = tuning.pages_per_step.max(1);
        let mut stats = CopyStats { pages: 0, steps: 0, restarts: 0 };
        let mut copied_before: Option<i64> = None;
        let mut all_at_once = false;
        let mut stuck_since: Option<Instant> = None;
        loop {
            let r = b.step(if all_at_once { -1 } else { per_step }).map_err(|e| match full(&e).or_else(|| no_space_of(dst_handle)) {
                Some(errno) => BackupError::NoSpace {
                    what: format!("copying {} into {}", db.display(), tmp.display()),
                    dir: tmp.parent().unwrap_or(Path::new("/")).to_path_buf(),
                    errno,
                    hint: " (lower `keep` in the spec: the next backup prunes first)",
                },
                None => copy_err(e.to_string()),
            })?;
            stats.steps += 1;
            let p = b.progress();
            let copied = i64::from(p.pagecount) - i64::from(p.remaining);
            match r {
                StepResult::Done => {
                    stats.pages = i64::from(p.pagecount);
                    return Ok(stats);
                }
                StepResult::Busy | StepResult::Locked => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > tuning.lock_timeout {
                        return Err(copy_err(format!(
                            "the database stayed locked for more than {}s; find what holds it locked and retry",
                            tuning.lock_timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(tuning.pause.max(Duration::from_millis(5)));
                    continue;
                }
                _ => {
                    stuck_since = None;
                    // A normal step copies `per_step` more pages; a restart
                    // (another connection committed) starts again at page 1.
                    if let Some(before) = copied_before
                        && copied <= before
                    {
                        stats.restarts += 1;
                        if stats.restarts >= tuning.max_restarts {
                            all_at_once = true;
                        }
                    }
                    copied_before = Some(copied);
                }
            }
            if !tuning.pause.is_zero() {
                std::thread::sleep(tuning.pause);
            }
        }
    })();

    if snapshot {
        let _ = src.execute_batch("COMMIT");
    }
    result
}

/// A backup of a WAL database carries the WAL flag in its header; switch the
/// copy (`path`, open as `f`) to rollback-journal mode so that it is one
/// self-contained file.
fn to_rollback_journal(path: &Path, f: &File) -> Result<(), String> {
    if sqlite_header(f).map_err(|e| e.to_string())? != Ok(2) {
        return Ok(());
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW)
        .map_err(|e| e.to_string())?;
    let mode: String = c.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("SQLite kept journal_mode={mode}"));
    }
    c.close().map_err(|(_, e)| e.to_string())
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

/// Byte 18 of the database header: 1 = rollback journal, 2 = WAL. `None`
/// for an empty or non-SQLite file.
#[cfg(test)]
fn header_write_version(path: &Path) -> io::Result<Option<u8>> {
    Ok(sqlite_header(&File::open(path)?)?.ok())
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

/// Rename `tmp` to the first free `<stem>-<ts>[-n].sqlite` in `dir`; returns that name.
fn publish(dir: &Dir, tmp: &OsStr, stem: &str, ts: &str) -> Result<OsString, BackupError> {
    for seq in 0..10_000u32 {
        let name = OsString::from(if seq == 0 { format!("{stem}-{ts}.sqlite") } else { format!("{stem}-{ts}-{seq}.sqlite") });
        if matches!(dir.stat(&name), Ok(Some(_))) {
            continue;
        }
        // Its place in the order of backups first: a name the ledger has but the directory
        // does not (a rename that did not happen) is skipped when listing.
        note_taken(dir, stem, &name.to_string_lossy()).map_err(io_err("recording the order of backups in", &dir.join(ledger_name(stem)), UNTOUCHED))?;
        match dir.rename_noreplace(tmp, &name) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io_err("renaming the finished backup to", &dir.join(&name), UNTOUCHED)(e));
            }
        }
    }
    Err(BackupError::Io {
        action: "finding a free name for",
        path: dir.join(format!("{stem}-{ts}.sqlite")),
        source: io::Error::new(io::ErrorKind::AlreadyExists, "10000 backups in the same second"),
        hint: UNTOUCHED,
    })
}

/// A name dated further than this ahead of now is dated in the future.
pub const FUTURE_SLACK: Duration = Duration::from_secs(600);

/// The ledger of the order `stem`'s backups were taken in.
fn ledger_name(stem: &str) -> OsString {
    OsString::from(format!(".{stem}.taken"))
}

/// The ledger's names, oldest first (a missing ledger has none).
fn read_ledger(dir: &Dir, stem: &str) -> io::Result<Vec<String>> {
    use std::io::Read;
    match dir.open(ledger_name(stem), OFlag::O_RDONLY) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The ledger open and locked (flock) for writing: the one at its name now (a rewrite may
/// have replaced the one opened while waiting for the lock).
fn lock_ledger(dir: &Dir, stem: &str) -> io::Result<nix::fcntl::Flock<File>> {
    let name = ledger_name(stem);
    loop {
        let flags = OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name.as_os_str(), flags, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(io::Error::from)?;
        let locked = nix::fcntl::Flock::lock(File::from(fd), nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let held = locked.metadata()?;
        if dir.stat(&name)?.is_some_and(|st| (st.st_dev, st.st_ino) == (held.dev(), held.ino())) {
            return Ok(locked);
        }
    }
}

/// Append `name` to the ledger, durably.
fn note_taken(dir: &Dir, stem: &str, name: &str) -> io::Result<()> {
    let mut f = lock_ledger(dir, stem)?;
    f.write_all(format!("{name}\n").as_bytes())?;
    f.sync_data()
}

/// Rewrite the ledger with only the names still there (after pruning), atomically.
fn compact_ledger(dir: &Dir, stem: &str) -> io::Result<()> {
    let _held = lock_ledger(dir, stem)?;
    let present: Vec<String> = read_ledger(dir, stem)?.into_iter().filter(|n| matches!(dir.stat(n), Ok(Some(_)))).collect();
    let tmp = format!(".{stem}.taken.tmp-{}", std::process::id());
    let _ = dir.unlink(&tmp);
    let mut f = dir.create_new(&tmp, 0o600)?;
    f.write_all(present.iter().map(|n| format!("{n}\n")).collect::<String>().as_bytes())?;
    f.sync_all()?;
    dir.rename_over(&tmp, ledger_name(stem))?;
    dir.sync()
}

/// Delete the backups of `stem` that `policy` does not keep, but never `protect` (the backup
/// just taken) nor, when there is none, the newest one. Returns what was deleted.
fn prune(out: &Dir, stem: &str, policy: &Policy, protect: Option<&OsStr>, now: SystemTime, state: &'static str) -> Result<Vec<String>, BackupError> {
    let listed = list_in(stem, out, now).map_err(io_err("listing", out.path(), state))?;
    let files: Vec<BackupFile> = listed.iter().map(|(_, f)| f.clone()).collect();
    let mut kept = keep(&files, policy);
    if protect.is_none()
        && let Some((_, newest)) = listed.iter().find(|(_, f)| !f.future)
    {
        kept.insert(newest.path.clone());
    }
    let mut pruned = Vec::new();
    for (name, f) in &listed {
        if kept.contains(&f.path) || Some(name.as_os_str()) == protect {
            continue;
        }
        match out.unlink(name) {
            Ok(()) => pruned.push(f.path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BackupError::Prune { taken: protect.map(|p| out.join(p)).unwrap_or_default(), path: out.join(name), source });
            }
        }
    }
    if !pruned.is_empty() {
        out.sync().map_err(io_err("fsync of directory", out.path(), "the removals may not survive a power failure; check the filesystem"))?;
        compact_ledger(out, stem).map_err(io_err("rewriting the order of backups in", &out.join(ledger_name(stem)), state))?;
    }
    Ok(pruned)
}

/// Remove the entries of `dir` whose name `owner` maps to the pid of the process that left
/// them, when that process is gone (never this one), with their SQLite side files. Never
/// through a link (`unlinkat` in the held directory). Needs /proc; without it nothing is
/// removed. Returns what was removed.
fn sweep_dead_owners(dir: &Dir, owner: impl Fn(&str) -> Option<u32>) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(names) = dir.names() else { return removed };
    let me = std::process::id();
    for name in names {
        let Some(pid) = name.to_str().and_then(&owner) else { continue };
        if pid == me || fsutil::pid_alive(pid) {
            continue;
        }
        if dir.unlink(&name).is_ok() {
            remove_aux_files(dir, &name);
            removed.push(dir.join(&name).to_string_lossy().into_owned());
        }
    }
    removed
}

/// Remove temporary files of `stem` left in `dir` by processes that no longer exist: a
/// backup's `.<stem>-<ts>.sqlite.tmp-<pid>-<n>`, or a ledger rewrite's `.<stem>.taken.tmp-<pid>`.
fn sweep_stale_temps(dir: &Dir, stem: &str) -> Vec<String> {
    let prefix = format!(".{stem}-");
    let ledger_tmp = format!(".{stem}.taken.tmp-");
    sweep_dead_owners(dir, |n| {
        let owner = match (n.strip_prefix(&prefix).and_then(|rest| rest.split_once(".sqlite.tmp-")), n.strip_prefix(&ledger_tmp)) {
            (Some((_, owner)), _) => owner.split(['-']).next().unwrap_or(""),
            (None, Some(pid)) => pid,
            (None, None) => return None,
        };
        owner.parse::<u32>().ok()
    })
}

/// Remove the temporary copies killed restores of `name` left in `dir`
/// (`.<name>.restore-<pid>-<n>.tmp`, as big as the database) whose process is gone, with
/// their SQLite side files.
fn sweep_restore_temps(dir: &Dir, name: &OsStr) -> Vec<String> {
    let prefix = format!(".{}.restore-", name.to_string_lossy());
    sweep_dead_owners(dir, |n| {
        n.strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.bytes().all(|b| b.is_ascii_digit()).then_some(pid))
            .and_then(|pid| pid.parse::<u32>().ok())
    })
}

/// Remove what killed backups and restores of `db` left: the temporary files of backups in
/// the backup directory `dir`, and the temporary copies of restores beside `db`, whose process
/// is gone. Both directories are reached as a backup and a restore reach them (a walk, no link
/// followed; a missing one has nothing). Returns what was removed.
pub fn sweep(db: &Path, dir: &Path) -> Result<Vec<String>, BackupError> {
    let stem = db_stem(db)?;
    let mut removed = Vec::new();
    match walk::open_dir(&std::path::absolute(dir).map_err(io_err("resolving", dir, "give an absolute path"))?, Trust::Root) {
        Ok(out) => removed.extend(sweep_stale_temps(&out, &stem)),
        Err(WalkError::Missing { .. }) => {}
        Err(e) => return Err(BackupError::Unsafe { what: "backup directory", path: dir.to_path_buf(), source: e, state: "nothing was removed" }),
    }
    let (parent, name) = split(db)?;
    match walk::open_dir(&parent, Trust::Owner) {
        Ok(d) => removed.extend(sweep_restore_temps(&d, &name)),
        Err(WalkError::Missing { .. }) => {}
        Err(e) => return Err(BackupError::Unsafe { what: "directory of database", path: db.to_path_buf(), source: e, state: "nothing was removed" }),
    }
    Ok(removed)
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

#[cfg(test)]
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(suffixed(path.as_os_str(), suffix))
}

/// Remove SQLite's side files of `name` in the directory `dir` (never through a link).
fn remove_aux_files(dir: &impl std::os::fd::AsFd, name: &OsStr) {
    for s in AUX_SUFFIXES {
        let _ = nix::unistd::unlinkat(dir, suffixed(name, s).as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

// ---------------------------------------------------------------------------
// Names and timestamps
// ---------------------------------------------------------------------------

fn db_stem(db: &Path) -> Result<String, BackupError> {
    db.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).map(str::to_owned).ok_or_else(|| BackupError::NoFileName { path: db.to_path_buf() })
}

/// `2025-01-31T04:05:06Z` → `20250131T040506Z`.
fn compact_timestamp(t: SystemTime) -> Result<String, BackupError> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| BackupError::Clock(t))?.as_secs();
    if secs >= 253_402_300_800 {
        return Err(BackupError::Clock(t));
    }
    let s = humantime::format_rfc3339_seconds(t).to_string();
    Ok(s.chars().filter(|c| *c != '-' && *c != ':').collect())
}

/// `20250131T040506Z` → `2025-01-31T04:05:06Z`, only if it is a real time.
fn expand_timestamp(c: &str) -> Option<String> {
    let b = c.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return None;
    }
    let s = format!("{}-{}-{}T{}:{}:{}Z", &c[0..4], &c[4..6], &c[6..8], &c[9..11], &c[11..13], &c[13..15]);
    humantime::parse_rfc3339(&s).ok()?;
    Some(s)
}

/// If `name` is a backup of `stem`: (compact timestamp, sequence, RFC 3339).
fn parse_backup_name<'a>(stem: &str, name: &'a str) -> Option<(&'a str, u32, String)> {
    let rest = name.strip_prefix(stem)?.strip_prefix('-')?.strip_suffix(".sqlite")?;
    let (ts, seq) = match rest.len() {
        16 => (rest, 0),
        n if n > 17 && rest.as_bytes()[16] == b'-' => {
            let digits = &rest[17..];
            if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
                return None;
            }
            (&rest[..16], digits.parse().ok()?)
        }
        _ => return None,
    };
    let taken_at = expand_timestamp(ts)?;
    Some((ts, seq, taken_at))
}

// ---------------------------------------------------------------------------
// list and keep
// ---------------------------------------------------------------------------

/// The backups in `dir` for database `db` (only regular files matching our
/// naming pattern), newest first: in the order they were taken (the ledger), those the ledger
/// does not know before them by name; `future` set by `now` (see the module docs). A missing
/// `dir` has no backups; `dir` is reached like a backup directory (root's, no link on the way).
pub fn list(db: &Path, dir: &Path, now: SystemTime) -> io::Result<Vec<BackupFile>> {
    let stem = db_stem(db).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let d = match walk::open_dir(&std::path::absolute(dir)?, Trust::Root) {
        Ok(d) => d,
        Err(WalkError::Missing { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("backup directory {}: {e}", dir.display()))),
    };
    Ok(list_in(&stem, &d, now)?.into_iter().map(|(_, f)| f).collect())
}

/// The backup `restore --latest` takes: the last one taken that is not dated in the future;
/// with the ones taken after it that are (never preferred, but said).
pub fn latest(files: &[BackupFile]) -> (Option<&BackupFile>, Vec<&BackupFile>) {
    let skipped: Vec<&BackupFile> = files.iter().take_while(|f| f.future).collect();
    (files.iter().find(|f| !f.future), skipped)
}

/// The backups of `stem` in the walked directory `dir`: (name, file), newest first (see `list`).
fn list_in(stem: &str, dir: &Dir, now: SystemTime) -> io::Result<Vec<(OsString, BackupFile)>> {
    let ledger = read_ledger(dir, stem)?;
    // A name's place is its last line: a name used again was taken again.
    let place: std::collections::HashMap<&str, u64> = ledger.iter().enumerate().map(|(i, n)| (n.as_str(), i as u64 + 1)).collect();
    let mut found = Vec::new();
    for name in dir.names()? {
        let Some(n) = name.to_str() else { continue };
        let Some((ts, seq, taken_at)) = parse_backup_name(stem, n) else {
            continue;
        };
        let ts = ts.to_owned();
        let st = match dir.stat(&name)? {
            Some(st) => st,
            None => continue,
        };
        if walk::kind(&st) != SFlag::S_IFREG {
            continue;
        }
        let future = humantime::parse_rfc3339(&taken_at).is_ok_and(|t| t > now + FUTURE_SLACK);
        let order = place.get(n).copied().unwrap_or(0);
        let file =
            BackupFile { path: dir.join(&name).to_string_lossy().into_owned(), taken_at, bytes: u64::try_from(st.st_size).unwrap_or(0), seq: order, future };
        found.push((order, ts, seq, name, file));
    }
    found.sort_by(|a, b| (b.0, &b.1, b.2).cmp(&(a.0, &a.1, a.2)));
    Ok(found.into_iter().map(|(_, _, _, n, f)| (n, f)).collect())
}

/// Which of `files` the policy keeps, by path: the newest `last`; plus the newest backup of
/// each of the `daily` most recent UTC days that have a backup; plus the newest of each of the
/// `weekly` most recent ISO weeks that have a backup. Newest by the order they were taken
/// (`seq`), then by the time in their names; a file whose `taken_at` does not parse is always
/// kept (never delete what we do not understand). A file dated in the future counts in none
/// of these (it would take a slot, or stand for a day, forever): it is kept while it is among
/// the newest `max(last, 1)` taken, then pruned like any other. Pure; the input's order does
/// not matter.
pub fn keep(files: &[BackupFile], policy: &Policy) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    let mut order: Vec<(Option<SystemTime>, &BackupFile)> = files.iter().map(|f| (humantime::parse_rfc3339(&f.taken_at).ok(), f)).collect();
    order.sort_by_key(|&(t, f)| std::cmp::Reverse((f.seq, t)));
    let mut days = HashSet::new();
    let mut weeks = HashSet::new();
    let mut slots = 0usize;
    for (i, (taken, f)) in order.iter().enumerate() {
        if f.future {
            if i < policy.last.max(1) as usize {
                kept.insert(f.path.clone());
            }
            continue;
        }
        let Some(day) = taken.and_then(utc_day) else {
            kept.insert(f.path.clone());
            continue;
        };
        if slots < policy.last as usize {
            kept.insert(f.path.clone());
        }
        slots += 1;
        if days.len() < policy.daily as usize && days.insert(day) {
            kept.insert(f.path.clone());
        }
        let week = iso_week_monday(day);
        if weeks.len() < policy.weekly as usize && weeks.insert(week) {
            kept.insert(f.path.clone());
        }
    }
    kept
}

/// Days since 1970-01-01 (UTC).
fn utc_day(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(secs.div_euclid(86_400))
}

/// The Monday (as days since 1970-01-01) of the ISO week holding `day`;
/// identifies the ISO week (1970-01-01 was a Thursday).
fn iso_week_monday(day: i64) -> i64 {
    day - (day + 3).rem_euclid(7)
}

// ---------------------------------------------------------------------------
// restore
// ---------------------------------------------------------------------------

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
/// (see the module docs); `db`'s directory is reached by a walk too and every
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
mod test_hooks {
    use std::cell::Cell;
    use std::path::Path;
    thread_local! {
        /// Called on the finished, fsynced temporary file right before verification.
        pub static BEFORE_VERIFY: Cell<Option<fn(&Path)>> = const { Cell::new(None) };
        /// Called with the live database's path after its checks, right before SQLite opens it.
        pub static BEFORE_COPY: Cell<Option<fn(&Path)>> = const { Cell::new(None) };
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64};

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    /// The names in `dir`, less the ledgers of the order backups were taken (`.<stem>.taken`).
    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".taken")).collect()
    }

    /// A small database with rows 1..=n.
    fn make_db(path: &Path, n: i64) {
        let c = Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t(v);").unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 1..=n {
            tx.execute("INSERT INTO t(id, v) VALUES (?1, ?2)", (i, format!("row {i} {}", "x".repeat(50)))).unwrap();
        }
        tx.commit().unwrap();
    }

    fn ids(path: &Path) -> (i64, i64, i64) {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row("SELECT coalesce(min(id),0), coalesce(max(id),0), count(*) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap()
    }

    fn journal_mode_of(path: &Path) -> String {
        let c = Connection::open(path).unwrap();
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap()
    }

    const NO_PRUNE: Policy = Policy { last: 1000, daily: 0, weekly: 0 };

    // --- 1. consistency under load --------------------------------------

    /// Writer thread inserting ~1 KiB rows in committed transactions;
    /// returns (handle, highest committed id, stop flag).
    fn start_writer(db: PathBuf, wal: bool) -> (std::thread::JoinHandle<i64>, Arc<AtomicI64>, Arc<AtomicBool>) {
        let committed = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (committed.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            let mut c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            if wal {
                c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;").unwrap();
            } else {
                c.execute_batch("PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF;").unwrap();
            }
            c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)").unwrap();
            let mut id = 0i64;
            while !s2.load(Ordering::SeqCst) && id < 200_000 {
                let tx = c.transaction().unwrap();
                for _ in 0..5 {
                    id += 1;
                    tx.execute("INSERT INTO t(id, v) VALUES (?1, randomblob(1000))", [id]).unwrap();
                }
                tx.commit().unwrap();
                c2.store(id, Ordering::SeqCst);
            }
            id
        });
        (h, committed, stop)
    }

    fn check_consistent_under_load(wal: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("load.db");
        let dir = tmp.path().join("backups");
        let (writer, committed, stop) = start_writer(db.clone(), wal);
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed.load(Ordering::SeqCst) < 4000 {
            assert!(Instant::now() < deadline, "writer too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = committed.load(Ordering::SeqCst);
        let tuning = Tuning { pages_per_step: 16, pause: Duration::from_millis(2), ..Tuning::default() };
        let report = backup_with(&db, &dir, &NO_PRUNE, true, false, SystemTime::now(), &tuning).unwrap();
        let after = committed.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let total = writer.join().unwrap();
        let live_bytes = fs::metadata(&db).unwrap().len();
        println!("wal={wal}: before={before} after={after} total={total} live={live_bytes}B report={}", serde_json::to_string(&report).unwrap());

        assert!(report.verified);
        assert!(report.pages > 1000, "database should be several MB, got {} pages", report.pages);
        if wal {
            assert!(report.steps > 10, "backup should take several steps, took {}", report.steps);
        } else {
            // A commit between two steps restarts SQLite's copy; after
            // max_restarts the rest goes in one step, so it always finishes.
            assert!(report.restarts <= tuning.max_restarts, "{report:?}");
        }
        integrity_check(Path::new(&report.file.path)).unwrap();
        let (min, max, count) = ids(Path::new(&report.file.path));
        assert_eq!(min, 1);
        assert_eq!(count, max, "ids 1..={max} must be contiguous (a consistent snapshot)");
        assert!(max >= before, "lost committed rows: backup has up to {max}, {before} were committed before it began");
        assert!(max <= total);
        assert_eq!(max % 5, 0, "a transaction was split");
        if wal {
            assert_eq!(report.restarts, 0);
            assert_eq!(report.journal_mode, "wal");
            assert!(after > before, "the writer must keep committing during the backup");
        }
    }

    #[test]
    fn consistent_snapshot_under_load_wal() {
        check_consistent_under_load(true);
    }

    #[test]
    fn consistent_snapshot_under_load_rollback_journal() {
        // Restarts happen, and the fallback to one big step ends them.
        check_consistent_under_load(false);
    }

    // --- 2. restore -----------------------------------------------------

    #[test]
    fn restore_round_trip_with_wal_files() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("messages.db");
        let dir = tmp.path().join("backups");
        make_db(&db, 100);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
        let report = backup(&db, &dir, &NO_PRUNE, true, true, at("2025-03-01T10:00:00Z")).unwrap();
        assert_eq!(journal_mode_of(&db), "wal");

        // The agent modifies the database and "crashes": the commits are
        // only in -wal. Simulated by copying db, -wal, -shm while open.
        let crashed = tmp.path().join("crashed");
        fs::create_dir(&crashed).unwrap();
        let live = crashed.join("messages.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch("PRAGMA wal_autocheckpoint=0; DELETE FROM t WHERE id > 50; INSERT INTO t(id, v) VALUES (1000, 'new');").unwrap();
            for s in ["", "-wal", "-shm"] {
                fs::copy(with_suffix(&db, s), with_suffix(&live, s)).unwrap();
            }
        }
        fs::set_permissions(&live, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(fs::metadata(with_suffix(&live, "-wal")).unwrap().len() > 0);
        assert_eq!(ids(&live), (1, 1000, 51));

        let kept = restore(&live, Path::new(&report.file.path), at("2025-03-02T11:00:00Z")).unwrap().expect("something was replaced");
        assert_eq!(kept, crashed.join("messages.db.replaced-20250302T110000Z"));

        // Live: the backup's content, WAL mode like before, no stale side files.
        assert!(!with_suffix(&live, "-wal").exists());
        assert!(!with_suffix(&live, "-shm").exists());
        assert_eq!(header_write_version(&live).unwrap(), Some(2));
        assert_eq!(fs::metadata(&live).unwrap().mode() & 0o777, 0o600);
        assert_eq!(ids(&live), (1, 100, 100));
        integrity_check(&live).unwrap();
        // Replaced: kept with its WAL, so it still has the modified content.
        assert!(with_suffix(&kept, "-wal").exists());
        assert!(with_suffix(&kept, "-shm").exists());
        assert_eq!(ids(&kept), (1, 1000, 51));
        // Nothing else left behind; the backup itself untouched.
        let expected: BTreeSet<String> =
            ["messages.db", "messages.db.replaced-20250302T110000Z", "messages.db.replaced-20250302T110000Z-wal", "messages.db.replaced-20250302T110000Z-shm"]
                .into_iter()
                .map(String::from)
                .collect();
        let mut after = names(&crashed);
        after.retain(|n| !n.ends_with("-wal") || n.contains("replaced")); // opening `live` above may create -wal/-shm
        after.retain(|n| !n.ends_with("-shm") || n.contains("replaced"));
        assert_eq!(after, expected);
        assert_eq!(names(&dir).len(), 1);

        // Restoring again in the same second keeps both replaced copies.
        let kept2 = restore(&live, Path::new(&report.file.path), at("2025-03-02T11:00:00Z")).unwrap().unwrap();
        assert_eq!(kept2, crashed.join("messages.db.replaced-20250302T110000Z-1"));
        assert_eq!(ids(&kept2), (1, 100, 100));
        assert_eq!(ids(&kept), (1, 1000, 51));
    }

    #[test]
    fn restore_onto_missing_database() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        make_db(&db, 10);
        let r = backup(&db, tmp.path(), &NO_PRUNE, true, false, at("2025-01-01T00:00:00Z")).unwrap();
        fs::remove_file(&db).unwrap();
        assert_eq!(restore(&db, Path::new(&r.file.path), SystemTime::now()).unwrap(), None);
        assert_eq!(ids(&db), (1, 10, 10));
    }

    #[test]
    fn restore_rejects_corrupt_backup_and_leaves_live_db_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        make_db(&db, 10);
        let bogus = tmp.path().join("bogus.sqlite");
        fs::write(&bogus, vec![0x42u8; 8192]).unwrap();
        let before = names(tmp.path());
        let err = restore(&db, &bogus, SystemTime::now()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BackupError::BadBackup { .. }), "{msg}");
        assert!(msg.contains("bogus.sqlite") && msg.contains("was not touched"), "{msg}");
        assert_eq!(names(tmp.path()), before);
        assert_eq!(ids(&db), (1, 10, 10));
    }

    #[test]
    fn restore_refuses_while_another_process_has_the_db_open() {
        let sqlite3 = Path::new("/usr/bin/sqlite3");
        if !sqlite3.exists() {
            eprintln!("skipped: no /usr/bin/sqlite3");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("busy.db");
        make_db(&db, 10);
        let r = backup(&db, tmp.path(), &NO_PRUNE, true, true, SystemTime::now()).unwrap();
        let mut child = std::process::Command::new(sqlite3).arg(&db).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"SELECT count(*) FROM t;\n").unwrap();
        stdin.flush().unwrap();
        let mut buf = [0u8; 3];
        child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"10\n");
        let before = names(tmp.path());

        let err = restore(&db, Path::new(&r.file.path), SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::InUse { pid, .. } if pid == child.id() as i32), "{err}");
        assert!(err.to_string().contains("stop the units"), "{err}");
        assert_eq!(names(tmp.path()), before);

        drop(stdin); // sqlite3 exits at end of input
        child.wait().unwrap();
        restore(&db, Path::new(&r.file.path), SystemTime::now()).unwrap();
    }

    // --- 3. retention -----------------------------------------------------

    /// 40 backups over 60 days: every third day from 2024-01-01 (a Monday),
    /// at 06:00 and 18:00. Newest first.
    fn synthetic() -> Vec<BackupFile> {
        let monday = at("2024-01-01T00:00:00Z");
        let mut v = Vec::new();
        for day in (0..60u64).step_by(3) {
            for hour in [6u64, 18] {
                let t = monday + Duration::from_secs(day * 86_400 + hour * 3600);
                let ts = compact_timestamp(t).unwrap();
                v.push(BackupFile {
                    path: format!("/b/m-{ts}.sqlite"),
                    taken_at: humantime::format_rfc3339_seconds(t).to_string(),
                    bytes: 1,
                    seq: 0,
                    future: false,
                });
            }
        }
        v.reverse();
        assert_eq!(v.len(), 40);
        v
    }

    /// Path of the synthetic backup on day `d` (0 = 2024-01-01) at `h` o'clock.
    fn p(d: u64, h: u64) -> String {
        let t = at("2024-01-01T00:00:00Z") + Duration::from_secs(d * 86_400 + h * 3600);
        format!("/b/m-{}.sqlite", compact_timestamp(t).unwrap())
    }

    fn set(items: &[(u64, u64)]) -> BTreeSet<String> {
        items.iter().map(|&(d, h)| p(d, h)).collect()
    }

    #[test]
    fn keep_last_only() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 3, daily: 0, weekly: 0 });
        assert_eq!(k, set(&[(57, 18), (57, 6), (54, 18)]));
    }

    #[test]
    fn keep_daily_only() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 0, daily: 5, weekly: 0 });
        assert_eq!(k, set(&[(57, 18), (54, 18), (51, 18), (48, 18), (45, 18)]));
    }

    #[test]
    fn keep_weekly_only() {
        // Weeks are days 0-6, 7-13, ...: backups on 57 | 54, 51 | 48, 45, 42 | 39, 36 | ...
        let files = synthetic();
        let k = keep(&files, &Policy { last: 0, daily: 0, weekly: 4 });
        assert_eq!(k, set(&[(57, 18), (54, 18), (48, 18), (39, 18)]));
        let all_weeks = keep(&files, &Policy { last: 0, daily: 0, weekly: 100 });
        assert_eq!(all_weeks, set(&[(57, 18), (54, 18), (48, 18), (39, 18), (33, 18), (27, 18), (18, 18), (12, 18), (6, 18)]));
    }

    #[test]
    fn keep_combined_is_the_union() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 3, daily: 5, weekly: 4 });
        assert_eq!(k, set(&[(57, 18), (57, 6), (54, 18), (51, 18), (48, 18), (45, 18), (39, 18)]));
        // The example from the docs: {last: 7, daily: 7, weekly: 4}.
        let k = keep(&files, &Policy { last: 7, daily: 7, weekly: 4 });
        assert_eq!(
            k,
            set(&[
                (57, 18),
                (57, 6),
                (54, 18),
                (54, 6),
                (51, 18),
                (51, 6),
                (48, 18), // last 7
                (45, 18),
                (42, 18),
                (39, 18), // daily 7 adds these; weekly 4 adds none
            ])
        );
    }

    #[test]
    fn keep_edges() {
        let files = synthetic();
        assert!(keep(&files, &Policy::default()).is_empty());
        assert!(keep(&[], &Policy { last: 3, daily: 3, weekly: 3 }).is_empty());
        assert_eq!(keep(&files, &Policy { last: 100, daily: 0, weekly: 0 }).len(), 40);
        assert_eq!(keep(&files, &Policy { last: 0, daily: 100, weekly: 0 }).len(), 20);
        // Unsorted input gives the same answer.
        let mut shuffled = files.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        let pol = Policy { last: 3, daily: 5, weekly: 4 };
        assert_eq!(keep(&shuffled, &pol), keep(&files, &pol));
    }

    #[test]
    fn keep_iso_weeks_and_utc_days_across_year_end() {
        let f = |t: &str| BackupFile { path: t.to_string(), taken_at: t.to_string(), bytes: 0, seq: 0, future: false };
        // 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO week 2020-W53.
        let files = vec![
            f("2021-01-04T00:00:00Z"), // Mon, 2021-W01
            f("2021-01-03T23:59:59Z"), // Sun, 2020-W53
            f("2021-01-03T00:00:00Z"),
            f("2020-12-31T12:00:00Z"),
            f("2020-12-28T00:00:00Z"),
            f("2020-12-27T23:59:59Z"), // Sun, 2020-W52
        ];
        let k = keep(&files, &Policy { last: 0, daily: 0, weekly: 3 });
        let want: BTreeSet<String> = ["2021-01-04T00:00:00Z", "2021-01-03T23:59:59Z", "2020-12-27T23:59:59Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
        let k = keep(&files, &Policy { last: 0, daily: 2, weekly: 0 });
        let want: BTreeSet<String> = ["2021-01-04T00:00:00Z", "2021-01-03T23:59:59Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
        // Unparseable timestamps are never pruned, and use no `last` slot.
        let k = keep(&[f("yesterday"), f("2021-01-04T00:00:00Z"), f("2021-01-03T00:00:00Z")], &Policy { last: 1, daily: 0, weekly: 0 });
        let want: BTreeSet<String> = ["yesterday", "2021-01-04T00:00:00Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
    }

    #[test]
    fn backup_prunes_only_its_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("messages.db");
        let dir = tmp.path().join("backups");
        make_db(&db, 20);
        fs::create_dir(&dir).unwrap();
        let foreign = [
            "README",
            "other-20250101T000000Z.sqlite",
            "messages-archive-20250101T000000Z.sqlite",
            "messages-20250101T000000Z.sqlite.bak",
            "messages-20250101T000000Z-01.sqlite",
            "messages-2025-01-01.sqlite",
            "messages-20251301T000000Z.sqlite",           // month 13
            ".messages-20250101T000000Z.sqlite.tmp-1-0x", // not a pid of ours to parse
        ];
        for f in foreign {
            fs::write(dir.join(f), b"not ours").unwrap();
        }
        // A directory with a matching name is not a backup either.
        fs::create_dir(dir.join("messages-20240101T000000Z.sqlite")).unwrap();
        // Old backups of ours (content is irrelevant to pruning).
        for ts in ["20250107T030000Z", "20250108T030000Z", "20250109T030000Z", "20250109T030000Z-1"] {
            fs::write(dir.join(format!("messages-{ts}.sqlite")), b"old").unwrap();
        }
        assert_eq!(list(&db, &dir, SystemTime::now()).unwrap().len(), 4);

        let policy = Policy { last: 2, daily: 2, weekly: 0 };
        let r = backup(&db, &dir, &policy, true, false, at("2025-01-10T03:00:00Z")).unwrap();
        // Kept: new (last, daily 01-10), 09-1 (last, daily 01-09). Pruned: 09, 08, 07.
        let mut pruned: Vec<String> = r.pruned.iter().map(|p| p.rsplit('/').next().unwrap().to_string()).collect();
        pruned.sort();
        assert_eq!(pruned, ["messages-20250107T030000Z.sqlite", "messages-20250108T030000Z.sqlite", "messages-20250109T030000Z.sqlite"]);
        let mut want: BTreeSet<String> = foreign.iter().map(|s| s.to_string()).collect();
        want.insert("messages-20240101T000000Z.sqlite".into());
        want.insert("messages-20250109T030000Z-1.sqlite".into());
        want.insert("messages-20250110T030000Z.sqlite".into());
        assert_eq!(names(&dir), want);
        let listed: Vec<String> = list(&db, &dir, SystemTime::now()).unwrap().into_iter().map(|f| f.taken_at).collect();
        assert_eq!(listed, ["2025-01-10T03:00:00Z", "2025-01-09T03:00:00Z"]);
    }

    #[test]
    fn same_second_never_overwrites_and_new_backup_is_never_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("nested/backups");
        make_db(&db, 5);
        let now = at("2025-06-01T12:00:00Z");
        let nothing = Policy::default();
        let a = backup(&db, &dir, &NO_PRUNE, false, false, now).unwrap();
        let b = backup(&db, &dir, &NO_PRUNE, false, false, now).unwrap();
        let c = backup(&db, &dir, &NO_PRUNE, false, false, now).unwrap();
        assert!(a.file.path.ends_with("/m-20250601T120000Z.sqlite"));
        assert!(b.file.path.ends_with("/m-20250601T120000Z-1.sqlite"));
        assert!(c.file.path.ends_with("/m-20250601T120000Z-2.sqlite"));
        let l: Vec<String> = list(&db, &dir, SystemTime::now()).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(l, [c.file.path.clone(), b.file.path.clone(), a.file.path.clone()]);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o750);
        assert_eq!(fs::metadata(&a.file.path).unwrap().mode() & 0o7777, 0o600, "a backup is root's alone");
        // Keep-nothing policy: everything else goes, the new one stays.
        let d = backup(&db, &dir, &nothing, false, false, now + Duration::from_secs(1)).unwrap();
        assert_eq!(d.pruned.len(), 3);
        assert_eq!(list(&db, &dir, SystemTime::now()).unwrap(), std::slice::from_ref(&d.file));
        assert_eq!(d.file.bytes, fs::metadata(&d.file.path).unwrap().len());
        assert_eq!(d.file.taken_at, "2025-06-01T12:00:01Z");
    }

    // --- 4. verification failure -----------------------------------------

    fn corrupt_page_2(path: &Path) {
        use std::io::{Seek, SeekFrom};
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&[0xA5u8; 2048]).unwrap();
    }

    #[test]
    fn verify_failure_via_hook_discards_the_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("backups");
        make_db(&db, 500);
        test_hooks::BEFORE_VERIFY.with(|h| h.set(Some(corrupt_page_2)));
        let err = backup(&db, &dir, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        test_hooks::BEFORE_VERIFY.with(|h| h.set(None));
        let msg = err.to_string();
        assert!(matches!(err, BackupError::Integrity { .. }), "{msg}");
        assert!(msg.starts_with(&format!("integrity check of {}/.m-", dir.display())), "{msg}");
        assert!(msg.contains("the backup was discarded, the live database was not touched"), "{msg}");
        assert!(names(&dir).is_empty(), "left behind: {:?}", names(&dir));
        integrity_check(&db).unwrap();
    }

    #[test]
    fn verify_failure_of_a_corrupt_source() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("backups");
        make_db(&db, 500);
        corrupt_page_2(&db);
        let err = backup(&db, &dir, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::Integrity { .. }), "{err}");
        println!("{err}");
        assert!(names(&dir).is_empty(), "left behind: {:?}", names(&dir));
        // Without verify the copy is taken (it is a faithful copy, corruption included).
        backup(&db, &dir, &NO_PRUNE, false, false, SystemTime::now()).unwrap();
        assert_eq!(names(&dir).len(), 1);
    }

    #[test]
    fn errors_name_the_file_and_create_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("nope.db");
        let dir = tmp.path().join("backups");
        let err = backup(&db, &dir, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::MissingDatabase { .. }));
        assert!(err.to_string().contains(&*db.to_string_lossy()), "{err}");
        assert!(!db.exists() && !dir.exists());
        fs::write(&db, b"this is not a database, it is text long enough to not be empty......").unwrap();
        let err = backup(&db, &dir, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        println!("{err}");
        assert!(matches!(err, BackupError::NotSqlite { .. }), "{err}");
        assert!(err.to_string().contains("nope.db") && err.to_string().contains("SQLite header"), "{err}");
        assert!(!dir.exists(), "nothing is made for a file that is not a database");
    }

    #[test]
    fn stale_temp_of_a_dead_process_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("b");
        make_db(&db, 5);
        fs::create_dir(&dir).unwrap();
        // pid_max is at most 2^22, so this pid cannot exist.
        let stale = dir.join(".m-20250101T000000Z.sqlite.tmp-99999999-0");
        let other = dir.join(".x-20250101T000000Z.sqlite.tmp-99999999-0");
        fs::write(&stale, b"partial").unwrap();
        fs::write(&other, b"partial").unwrap();
        let r = backup(&db, &dir, &NO_PRUNE, false, false, SystemTime::now()).unwrap();
        assert_eq!(r.removed_temps, [stale.to_string_lossy().into_owned()]);
        assert!(!stale.exists() && other.exists());
    }

    #[test]
    fn killed_restores_copies_are_swept_by_the_next_backup_and_sweep_never_follows_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("b");
        make_db(&db, 5);
        // pid_max is at most 2^22, so this pid cannot exist; our own pid is alive.
        let dead = tmp.path().join(".m.db.restore-99999999-0.tmp");
        let alive = tmp.path().join(format!(".m.db.restore-{}-7.tmp", std::process::id()));
        let other = tmp.path().join(".n.db.restore-99999999-0.tmp");
        for p in [&dead, &alive, &other] {
            fs::write(p, b"a copy as big as the database").unwrap();
        }
        fs::write(with_suffix(&dead, "-journal"), b"j").unwrap();
        let r = backup(&db, &dir, &NO_PRUNE, false, false, SystemTime::now()).unwrap();
        assert_eq!(r.removed_temps, [dead.to_string_lossy().into_owned()]);
        assert!(!dead.exists() && !with_suffix(&dead, "-journal").exists() && alive.exists() && other.exists());
        // A link in a temporary copy's name is removed as a link: what it points at stays.
        let target = tmp.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let link = tmp.path().join(".m.db.restore-99999998-0.tmp");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let bdead = dir.join(".m-20250101T000000Z.sqlite.tmp-99999999-0");
        fs::write(&bdead, b"partial").unwrap();
        let gone = sweep(&db, &dir).unwrap();
        assert_eq!(gone.len(), 2, "{gone:?}");
        assert!(fs::symlink_metadata(&link).is_err() && !bdead.exists());
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        // Nothing there to sweep: nothing to say.
        assert!(sweep(&db, &tmp.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn the_order_backups_were_taken_beats_the_dates_in_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("b");
        make_db(&db, 5);
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let b1 = backup(&db, &dir, &NO_PRUNE, false, false, now - day * 2).unwrap().file;
        // A clock 400 days ahead, then right again.
        let future = backup(&db, &dir, &NO_PRUNE, false, false, now + day * 400).unwrap().file;
        let b2 = backup(&db, &dir, &NO_PRUNE, false, false, now - day).unwrap().file;
        let b3 = backup(&db, &dir, &NO_PRUNE, false, false, now).unwrap().file;
        let listed = list(&db, &dir, now).unwrap();
        let paths: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [b3.path.as_str(), b2.path.as_str(), future.path.as_str(), b1.path.as_str()]);
        assert_eq!(listed.iter().map(|f| f.future).collect::<Vec<_>>(), [false, false, true, false]);
        let (latest_one, skipped) = latest(&listed);
        assert_eq!(latest_one.map(|f| f.path.as_str()), Some(b3.path.as_str()));
        assert!(skipped.is_empty());
        // Were it taken last, it would still not be preferred, but said.
        let listed_then = list(&db, &dir, now).unwrap().into_iter().filter(|f| f.path != b3.path && f.path != b2.path).collect::<Vec<_>>();
        let (l, s) = latest(&listed_then);
        assert_eq!((l.map(|f| f.path.as_str()), s.len()), (Some(b1.path.as_str()), 1));
        // `keep` counts it in no rule: last 2 are b3 and b2; it is past the newest two taken.
        let k = keep(&listed, &Policy { last: 2, daily: 0, weekly: 0 });
        assert_eq!(k, [b3.path.clone(), b2.path.clone()].into_iter().collect::<BTreeSet<_>>());
        let k = keep(&listed, &Policy { last: 0, daily: 3, weekly: 0 });
        assert!(!k.contains(&future.path), "a future day never stands for a day: {k:?}");
        // Pruned like any other once newer ones were taken; the ledger forgets it.
        backup(&db, &dir, &Policy { last: 2, daily: 0, weekly: 0 }, false, false, now).unwrap();
        assert!(!Path::new(&future.path).exists() && !Path::new(&b1.path).exists());
        let ledger = fs::read_to_string(dir.join(".m.taken")).unwrap();
        assert_eq!(ledger.lines().count(), 2, "{ledger}");
    }

    #[test]
    fn a_lowered_keep_prunes_before_the_copy_and_keeps_the_newest_whatever_happens() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("b");
        make_db(&db, 50);
        let now = SystemTime::now();
        let taken: Vec<String> =
            (0..5u64).map(|i| backup(&db, &dir, &NO_PRUNE, false, false, now - Duration::from_secs(3600 * (5 - i))).unwrap().file.path).collect();
        // `keep` lowered to 2, and this backup fails (its copy is corrupted before the check):
        // the room was made first, and the two newest are still there.
        test_hooks::BEFORE_VERIFY.with(|h| h.set(Some(corrupt_page_2)));
        let err = backup(&db, &dir, &Policy { last: 2, daily: 0, weekly: 0 }, true, false, now).unwrap_err();
        test_hooks::BEFORE_VERIFY.with(|h| h.set(None));
        assert!(matches!(err, BackupError::Integrity { .. }), "{err}");
        let left: Vec<String> = list(&db, &dir, now).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(left, [taken[4].clone(), taken[3].clone()]);
        // Keep nothing at all: the newest stays until a new one is taken.
        backup(&db, &dir, &Policy::default(), false, false, now).unwrap();
        assert_eq!(list(&db, &dir, now).unwrap().len(), 1);
    }

    // --- 5. wal -------------------------------------------------------------

    #[test]
    fn wal_true_switches_the_live_db_and_backups_stay_single_file() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("m.db");
        let dir = tmp.path().join("b");
        make_db(&db, 50);
        assert_eq!(journal_mode_of(&db), "delete");
        let r = backup(&db, &dir, &NO_PRUNE, true, false, SystemTime::now()).unwrap();
        assert_eq!(r.journal_mode, "delete");
        assert_eq!(journal_mode_of(&db), "delete", "wal: false leaves the mode alone");
        let r = backup(&db, &dir, &NO_PRUNE, true, true, SystemTime::now()).unwrap();
        assert_eq!(r.journal_mode, "wal");
        assert_eq!(journal_mode_of(&db), "wal");
        assert_eq!(header_write_version(&db).unwrap(), Some(2));
        // The backup of a WAL database is a rollback-journal database, alone.
        assert_eq!(header_write_version(Path::new(&r.file.path)).unwrap(), Some(1));
        assert_eq!(names(&dir).len(), 2, "{:?}", names(&dir));
        assert_eq!(ids(Path::new(&r.file.path)), (1, 50, 50));
        assert_eq!(names(&dir).len(), 2, "opening a backup read-only creates nothing");
    }
    // --- 6. hostile paths (the helper runs as root on the agent's behalf) ----

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: needs root (ownership and file-system identity)");
        false
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A temporary directory others may search (a user's directory can be below it).
    fn open_tmp() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        t
    }

    fn bytes_and_names(db: &Path) -> (Vec<u8>, BTreeSet<String>) {
        (fs::read(db).unwrap(), names(db.parent().unwrap()))
    }

    #[test]
    fn wal_true_on_an_empty_or_non_sqlite_file_changes_nothing() {
        let tmp = open_tmp();
        let dir = tmp.path().join("backups");
        for (name, content) in [("empty.db", &b""[..]), ("notes.db", &b"some notes, not a database at all, long enough"[..]), ("short.db", &b"SQLite for"[..])]
        {
            let db = tmp.path().join(name);
            fs::write(&db, content).unwrap();
            let before = bytes_and_names(&db);
            let err = backup(&db, &dir, &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, BackupError::NotSqlite { .. }), "{name}: {msg}");
            assert!(msg.contains(name) && msg.contains("nothing was changed"), "{msg}");
            if content.is_empty() {
                assert!(msg.contains("is empty"), "{msg}");
            }
            assert_eq!(bytes_and_names(&db), before, "{name}: not a byte changed, no -wal or -shm beside it");
            assert!(!dir.exists(), "{name}: no backup directory made");
        }
    }

    #[test]
    fn a_symlinked_database_or_directory_is_never_backed_up() {
        let tmp = open_tmp();
        let secret_dir = tmp.path().join("secret");
        fs::create_dir(&secret_dir).unwrap();
        let secret = secret_dir.join("root.db");
        make_db(&secret, 10);
        chmod(&secret, 0o600);
        let agent = tmp.path().join("agent");
        fs::create_dir(&agent).unwrap();
        let dir = tmp.path().join("backups");
        // A link at the end (the database) and in the middle (a directory on the way).
        std::os::unix::fs::symlink(&secret, agent.join("messages.db")).unwrap();
        std::os::unix::fs::symlink(&secret_dir, agent.join("store")).unwrap();
        for db in [agent.join("messages.db"), agent.join("store/root.db")] {
            let err = backup(&db, &dir, &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, BackupError::Unsafe { .. }), "{msg}");
            assert!(msg.contains("is a symbolic link") && msg.contains("nothing was backed up"), "{msg}");
            assert!(!dir.exists(), "nothing copied anywhere");
        }
        assert_eq!(journal_mode_of(&secret), "delete", "wal: true did not reach the other database");
        assert_eq!(header_write_version(&secret).unwrap(), Some(1));
    }

    #[test]
    fn a_database_with_a_second_hard_link_is_refused() {
        let tmp = open_tmp();
        let other = tmp.path().join("other.db");
        make_db(&other, 3);
        let agent = tmp.path().join("agent");
        fs::create_dir(&agent).unwrap();
        fs::hard_link(&other, agent.join("m.db")).unwrap();
        let err = backup(&agent.join("m.db"), &tmp.path().join("b"), &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::Refused { .. }) && err.to_string().contains("2 hard links"), "{err}");
        assert_eq!(journal_mode_of(&other), "delete");
    }

    #[test]
    fn a_backup_directory_others_can_write_the_agent_owns_or_reached_by_a_link_is_refused() {
        let tmp = open_tmp();
        let db = tmp.path().join("m.db");
        make_db(&db, 3);
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let err = backup(&db, &open, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Writable { .. }, .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        assert!(names(&open).is_empty());
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let err = backup(&db, &tmp.path().join("link"), &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Symlink { .. }, .. }), "{err}");
        let err = backup(&db, &tmp.path().join("link/sub"), &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Symlink { .. }, .. }), "{err}");
        assert!(names(&real).is_empty(), "nothing was made through the link");
        if is_root() {
            let agents = tmp.path().join("agents");
            fs::create_dir(&agents).unwrap();
            std::os::unix::fs::chown(&agents, Some(4242), Some(4242)).unwrap();
            let err = backup(&db, &agents, &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
            assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Owner { uid: 4242, .. }, .. }), "{err}");
            assert!(names(&agents).is_empty());
            // Below the agent's directory: refused before anything is made in it.
            let err = backup(&db, &agents.join("b"), &NO_PRUNE, true, false, SystemTime::now()).unwrap_err();
            assert!(matches!(&err, BackupError::Unsafe { .. }), "{err}");
            assert!(names(&agents).is_empty());
        }
    }

    /// An agent's directory (uid 4242) under `tmp`, with a database of its own.
    fn agent_db(tmp: &Path) -> PathBuf {
        let agent = tmp.join("agent");
        fs::create_dir(&agent).unwrap();
        let db = agent.join("m.db");
        make_db(&db, 7);
        for p in [&agent, &db] {
            std::os::unix::fs::chown(p, Some(4242), Some(4242)).unwrap();
        }
        db
    }

    #[test]
    fn the_agents_database_is_read_as_the_agent_so_a_swap_after_the_checks_reaches_nothing_more() {
        if !is_root() {
            return;
        }
        let tmp = open_tmp();
        let db = agent_db(tmp.path());
        let dir = tmp.path().join("backups");
        // Its own database, read as the agent: fine, and the backup is root's alone.
        let r = backup(&db, &dir, &NO_PRUNE, true, true, SystemTime::now()).unwrap();
        let m = fs::metadata(&r.file.path).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
        assert_eq!(journal_mode_of(&db), "wal");
        assert_eq!(fs::metadata(&db).unwrap().uid(), 4242);
        // Between the checks and SQLite's open, the agent puts another file at the name: a
        // link to a root-only database (possible where protected_hardlinks is off).
        fn swap(db: &Path) {
            let secret = db.parent().unwrap().parent().unwrap().join("secret.db");
            make_db(&secret, 99);
            chmod(&secret, 0o600);
            fs::remove_file(db).unwrap();
            fs::hard_link(&secret, db).unwrap();
        }
        test_hooks::BEFORE_COPY.with(|h| h.set(Some(swap)));
        let err = backup(&db, &dir, &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
        test_hooks::BEFORE_COPY.with(|h| h.set(None));
        let msg = err.to_string();
        assert!(matches!(err, BackupError::OpenDatabase { .. }), "{msg}");
        assert!(msg.contains("opened as uid 4242") || msg.contains("(uid 4242)"), "{msg}");
        assert_eq!(names(&dir).len(), 1, "only the first backup: {:?}", names(&dir));
        assert_eq!(journal_mode_of(&tmp.path().join("secret.db")), "delete");
    }

    #[test]
    fn a_database_of_another_user_in_the_agents_directory_is_refused() {
        if !is_root() {
            return;
        }
        let tmp = open_tmp();
        let db = agent_db(tmp.path());
        std::os::unix::fs::chown(&db, Some(4343), Some(4343)).unwrap();
        let err = backup(&db, &tmp.path().join("b"), &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::Refused { .. }) && err.to_string().contains("uid 4343"), "{err}");
        // A directory on the way that belongs to a third user: refused too.
        std::os::unix::fs::chown(&db, Some(4242), Some(4242)).unwrap();
        let sub = tmp.path().join("agent/sub");
        fs::create_dir(&sub).unwrap();
        std::os::unix::fs::chown(tmp.path().join("agent"), Some(4343), Some(4343)).unwrap();
        std::os::unix::fs::chown(&sub, Some(4242), Some(4242)).unwrap();
        fs::rename(&db, sub.join("m.db")).unwrap();
        let err = backup(&sub.join("m.db"), &tmp.path().join("b"), &NO_PRUNE, true, true, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Owner { uid: 4343, .. }, .. }), "{err}");
    }

    #[test]
    fn restore_through_a_symlinked_parent_is_refused_and_writes_nothing() {
        let tmp = open_tmp();
        let db = tmp.path().join("m.db");
        make_db(&db, 5);
        let r = backup(&db, &tmp.path().join("b"), &NO_PRUNE, true, false, SystemTime::now()).unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::create_dir(tmp.path().join("agent")).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("agent/store")).unwrap();
        let err = restore(&tmp.path().join("agent/store/m.db"), Path::new(&r.file.path), SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Symlink { .. }, .. }), "{err}");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        assert!(names(&victim).is_empty(), "nothing written where the link points");
        // The database itself a link: refused too, the target untouched.
        std::os::unix::fs::symlink(victim.join("x.db"), tmp.path().join("agent/m.db")).unwrap();
        let err = restore(&tmp.path().join("agent/m.db"), Path::new(&r.file.path), SystemTime::now()).unwrap_err();
        assert!(matches!(&err, BackupError::Unsafe { source: WalkError::Symlink { .. }, .. }), "{err}");
        assert!(names(&victim).is_empty());
    }

    #[test]
    fn restore_into_a_directory_swapped_after_the_checks_writes_where_the_walk_went() {
        let tmp = open_tmp();
        let store = tmp.path().join("store");
        fs::create_dir(&store).unwrap();
        let db = store.join("m.db");
        make_db(&db, 5);
        let r = backup(&db, &tmp.path().join("b"), &NO_PRUNE, true, false, SystemTime::now()).unwrap();
        let prepared = prepare_restore(&db, Path::new(&r.file.path), at("2025-05-05T05:05:05Z")).unwrap();
        // The directory moves away and a link to a victim takes its place.
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::rename(&store, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, &store).unwrap();
        prepared.swap().unwrap();
        assert!(names(&victim).is_empty(), "nothing through the link: {:?}", names(&victim));
        let moved = names(&tmp.path().join("moved"));
        assert!(moved.contains("m.db") && moved.contains("m.db.replaced-20250505T050505Z"), "{moved:?}");
    }

    #[test]
    fn restore_reads_a_backup_only_through_roots_directories() {
        let tmp = open_tmp();
        let db = tmp.path().join("m.db");
        make_db(&db, 5);
        let r = backup(&db, &tmp.path().join("b"), &NO_PRUNE, true, false, SystemTime::now()).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("b"), tmp.path().join("blink")).unwrap();
        let via_link = tmp.path().join("blink").join(Path::new(&r.file.path).file_name().unwrap());
        let before = names(tmp.path());
        let err = restore(&db, &via_link, SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::BadBackup { .. }) && err.to_string().contains("is a symbolic link"), "{err}");
        std::os::unix::fs::symlink(&r.file.path, tmp.path().join("b/latest.sqlite")).unwrap();
        let err = restore(&db, &tmp.path().join("b/latest.sqlite"), SystemTime::now()).unwrap_err();
        assert!(matches!(err, BackupError::BadBackup { .. }) && err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(names(tmp.path()), before, "nothing was changed");
        if is_root() {
            let agents = tmp.path().join("agents");
            fs::create_dir(&agents).unwrap();
            fs::copy(&r.file.path, agents.join("x.sqlite")).unwrap();
            std::os::unix::fs::chown(&agents, Some(4242), Some(4242)).unwrap();
            let err = restore(&db, &agents.join("x.sqlite"), SystemTime::now()).unwrap_err();
            assert!(matches!(err, BackupError::BadBackup { .. }) && err.to_string().contains("uid 4242"), "{err}");
        }
        // The listing goes through the same walk.
        let err = list(&db, &tmp.path().join("blink"), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn restore_of_an_agents_database_keeps_its_owner_and_checks_the_copy_as_the_agent() {
        if !is_root() {
            return;
        }
        let tmp = open_tmp();
        let db = agent_db(tmp.path());
        chmod(&db, 0o4755);
        let r = backup(&db, &tmp.path().join("b"), &NO_PRUNE, true, true, SystemTime::now()).unwrap();
        restore(&db, Path::new(&r.file.path), SystemTime::now()).unwrap();
        let m = fs::metadata(&db).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4242, 0o644), "owner kept, no execute or set-id bits");
        assert_eq!(ids(&db), (1, 7, 7));
    }
}
