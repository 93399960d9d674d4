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
//! backup of the same database.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

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
    /// (`2025-01-31T04:00:00Z`), read from the file name.
    pub taken_at: String,
    pub bytes: u64,
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

    #[error("cannot open database {path}: {source}; check that it is an SQLite database and readable by fleetwright (nothing was backed up)")]
    OpenDatabase { path: PathBuf, source: rusqlite::Error },

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
}

fn io_err(action: &'static str, path: &Path, hint: &'static str) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { action, path, source, hint }
}

const UNTOUCHED: &str = "the backup was discarded, the live database was not touched";

// ---------------------------------------------------------------------------
// backup
// ---------------------------------------------------------------------------

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

    match fs::metadata(db) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(BackupError::Io {
                action: "reading",
                path: db.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                hint: "point `sqlite:` at the database file (nothing was backed up)",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BackupError::MissingDatabase { path: db.to_path_buf() });
        }
        Err(e) => {
            return Err(BackupError::Io {
                action: "reading",
                path: db.to_path_buf(),
                source: e,
                hint: "check the permissions of the database and its directory (nothing was backed up)",
            });
        }
    }

    ensure_dir(dir)?;
    let removed_temps = sweep_stale_temps(dir, &stem);

    // The live database: never created here (no SQLITE_OPEN_CREATE).
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|source| BackupError::OpenDatabase { path: db.to_path_buf(), source })?;
    src.busy_timeout(tuning.lock_timeout).map_err(|source| BackupError::OpenDatabase { path: db.to_path_buf(), source })?;
    if wal {
        let mode: String =
            src.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| BackupError::Wal { path: db.to_path_buf(), detail: e.to_string() })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BackupError::Wal { path: db.to_path_buf(), detail: format!("SQLite kept journal_mode={mode}") });
        }
    }
    let journal_mode: String =
        src.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|source| BackupError::OpenDatabase { path: db.to_path_buf(), source })?;
    let journal_mode = journal_mode.to_ascii_lowercase();

    // The temporary file, created exclusively with the backup's final mode.
    let tmp = dir.join(format!(".{stem}-{ts}.sqlite.tmp-{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    OpenOptions::new().write(true).create_new(true).mode(0o640).open(&tmp).map_err(io_err(
        "creating",
        &tmp,
        "check that the backup directory is writable (nothing was backed up)",
    ))?;
    let mut guard = TempGuard::new(tmp.clone());

    let stats = copy_online(&src, db, &tmp, journal_mode == "wal", tuning)?;
    drop(src);

    // Backups are single-file rollback-journal databases, even of a WAL source.
    to_rollback_journal(&tmp).map_err(|detail| BackupError::Copy {
        db: db.to_path_buf(),
        tmp: tmp.clone(),
        detail: format!("cannot take the copy out of WAL mode: {detail}"),
    })?;
    remove_aux_files(&tmp);

    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err("fsync of", &tmp, UNTOUCHED))?;

    #[cfg(test)]
    if let Some(hook) = test_hooks::BEFORE_VERIFY.with(|h| h.get()) {
        hook(&tmp);
    }

    if verify {
        integrity_check(&tmp).map_err(|detail| BackupError::Integrity { path: tmp.clone(), detail })?;
    }

    let final_path = publish(&tmp, dir, &stem, &ts)?;
    guard.disarm();
    fsync_dir(dir)?;

    let bytes =
        fs::metadata(&final_path).map_err(io_err("reading", &final_path, "the backup was taken but cannot be read back; check the backup directory"))?.len();
    let taken_at = humantime::format_rfc3339_seconds(now).to_string();
    let file = BackupFile { path: final_path.to_string_lossy().into_owned(), taken_at, bytes };

    // Prune.
    let listed = list_paths(&stem, dir).map_err(io_err("listing", dir, "the backup was taken; old backups were not pruned"))?;
    let files: Vec<BackupFile> = listed.iter().map(|(_, f)| f.clone()).collect();
    let kept = keep(&files, policy);
    let mut pruned = Vec::new();
    for (path, f) in &listed {
        if kept.contains(&f.path) || *path == final_path {
            continue;
        }
        match fs::remove_file(path) {
            Ok(()) => pruned.push(f.path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BackupError::Prune { taken: final_path, path: path.clone(), source });
            }
        }
    }
    if !pruned.is_empty() {
        fsync_dir(dir)?;
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

struct CopyStats {
    pages: i64,
    steps: u32,
    restarts: u32,
}

/// Copy `src` into the (empty) file `tmp` with the online backup API.
fn copy_online(src: &Connection, db: &Path, tmp: &Path, snapshot: bool, tuning: &Tuning) -> Result<CopyStats, BackupError> {
    let copy_err = |detail: String| BackupError::Copy { db: db.to_path_buf(), tmp: tmp.to_path_buf(), detail };
    let mut dst = Connection::open_with_flags(tmp, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| copy_err(format!("cannot open the temporary file: {e}")))?;
    // The temporary file is thrown away on any failure and fsynced by us
    // once complete: no journal, no syncs of its own.
    dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").map_err(|e| copy_err(e.to_string()))?;

    if snapshot {
        // WAL: pin one read snapshot for the whole copy (see module docs).
        src.execute_batch("BEGIN DEFERRED")
            .and_then(|_| src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)))
            .map_err(|e| copy_err(format!("cannot start a read transaction: {e}")))?;
    }

    let result = (|| -> Result<CopyStats, BackupError> {
        let b = Backup::new(src, &mut dst).map_err(|e| copy_err(e.to_string()))?;
        let per_step = tuning.pages_per_step.max(1);
        let mut stats = CopyStats { pages: 0, steps: 0, restarts: 0 };
        let mut copied_before: Option<i64> = None;
        let mut all_at_once = false;
        let mut stuck_since: Option<Instant> = None;
        loop {
            let r = b.step(if all_at_once { -1 } else { per_step }).map_err(|e| copy_err(e.to_string()))?;
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
/// copy to rollback-journal mode so that it is one self-contained file.
fn to_rollback_journal(path: &Path) -> Result<(), String> {
    if header_write_version(path).map_err(|e| e.to_string())? != Some(2) {
        return Ok(());
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| e.to_string())?;
    let mode: String = c.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("SQLite kept journal_mode={mode}"));
    }
    c.close().map_err(|(_, e)| e.to_string())
}

/// Byte 18 of the database header: 1 = rollback journal, 2 = WAL. `None`
/// for an empty or non-SQLite file.
fn header_write_version(path: &Path) -> io::Result<Option<u8>> {
    let mut header = [0u8; 20];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < header.len() {
        match f.read(&mut header[n..])? {
            0 => return Ok(None),
            k => n += k,
        }
    }
    if &header[..16] != b"SQLite format 3\0" {
        return Ok(None);
    }
    Ok(Some(header[18]))
}

/// `PRAGMA integrity_check` on a closed database file, read-only.
fn integrity_check(path: &Path) -> Result<(), String> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| e.to_string())?;
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

/// Rename `tmp` to the first free `<stem>-<ts>[-n].sqlite` in `dir`.
fn publish(tmp: &Path, dir: &Path, stem: &str, ts: &str) -> Result<PathBuf, BackupError> {
    for seq in 0..10_000u32 {
        let name = if seq == 0 { format!("{stem}-{ts}.sqlite") } else { format!("{stem}-{ts}-{seq}.sqlite") };
        let target = dir.join(name);
        match rename_noreplace(tmp, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io_err("renaming the finished backup to", &target, UNTOUCHED)(e));
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

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`:
/// `renameat2(RENAME_NOREPLACE)`, or link + unlink where the filesystem does
/// not support it.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::ENOTSUP) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync of directory", dir, "the rename may not survive a power failure; check the filesystem"))
}

/// Create `dir` (and missing parents) with mode 0750.
fn ensure_dir(dir: &Path) -> Result<(), BackupError> {
    if dir.is_dir() {
        return Ok(());
    }
    let create_err = |source| BackupError::CreateDir { path: dir.to_path_buf(), source };
    fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).map_err(create_err)?;
    // The umask may have taken bits away; 0750 is what we promise.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).map_err(create_err)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Remove temporary files of `stem` left in `dir` by processes that no
/// longer exist. Needs /proc; without it nothing is removed.
fn sweep_stale_temps(dir: &Path, stem: &str) -> Vec<String> {
    let mut removed = Vec::new();
    if !Path::new("/proc/self").exists() {
        return removed;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    let prefix = format!(".{stem}-");
    let me = std::process::id();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((_, owner)) = rest.split_once(".sqlite.tmp-") else {
            continue;
        };
        let owner = owner.split(['-']).next().unwrap_or("");
        let Ok(pid) = owner.parse::<u32>() else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if fs::remove_file(&path).is_ok() {
            removed.push(path.to_string_lossy().into_owned());
        }
    }
    removed
}

/// Removes a temporary database file and its SQLite side files on drop,
/// unless disarmed.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    fn new(path: PathBuf) -> Self {
        TempGuard { path, armed: true }
    }
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
            remove_aux_files(&self.path);
        }
    }
}

const AUX_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_aux_files(path: &Path) {
    for s in AUX_SUFFIXES {
        let _ = fs::remove_file(with_suffix(path, s));
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
/// naming pattern), newest first. A missing `dir` has no backups.
pub fn list(db: &Path, dir: &Path) -> io::Result<Vec<BackupFile>> {
    let stem = db_stem(db).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(list_paths(&stem, dir)?.into_iter().map(|(_, f)| f).collect())
}

fn list_paths(stem: &str, dir: &Path) -> io::Result<Vec<(PathBuf, BackupFile)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((ts, seq, taken_at)) = parse_backup_name(stem, name) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let file = BackupFile { path: path.to_string_lossy().into_owned(), taken_at, bytes: meta.len() };
        found.push((ts.to_owned(), seq, path, file));
    }
    found.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
    Ok(found.into_iter().map(|(_, _, p, f)| (p, f)).collect())
}

/// Which of `files` (newest first) the policy keeps, by path: the newest
/// `last`; plus the newest backup of each of the `daily` most recent UTC
/// days that have a backup; plus the newest of each of the `weekly` most
/// recent ISO weeks that have a backup. A file whose `taken_at` does not
/// parse is always kept (never delete what we do not understand). Pure.
pub fn keep(files: &[BackupFile], policy: &Policy) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    // Tolerate input that is not sorted: stable sort by time, newest first
    // (unparseable timestamps last; they are kept anyway).
    let mut order: Vec<(Option<SystemTime>, &BackupFile)> = files.iter().map(|f| (humantime::parse_rfc3339(&f.taken_at).ok(), f)).collect();
    order.sort_by_key(|&(t, _)| std::cmp::Reverse(t));
    let mut days = HashSet::new();
    let mut weeks = HashSet::new();
    for (i, (taken, f)) in order.iter().enumerate() {
        if i < policy.last as usize {
            kept.insert(f.path.clone());
        }
        let Some(day) = taken.and_then(utc_day) else {
            kept.insert(f.path.clone());
            continue;
        };
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
///    mode of the current `db` (of `db`'s directory and 0640 when there is
///    no current `db`), fsync;
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
/// The backup file itself is only read. The caller stops the agent's units
/// before and starts them after. Returns where the replaced database was
/// kept, or `None` when there was nothing to move aside (restoring onto a
/// host that lost its database).
pub fn restore(db: &Path, backup_file: &Path, now: SystemTime) -> Result<Option<PathBuf>, BackupError> {
    prepare_restore(db, backup_file, now)?.swap()
}

/// A verified copy of a backup beside the live database, ready to take its place: steps 1
/// and 2 of [`restore`], which take as long as the database is big and need not wait for the
/// agent to stop. Dropped without [`PreparedRestore::swap`], the copy is removed.
pub struct PreparedRestore {
    db: PathBuf,
    backup_file: PathBuf,
    parent: PathBuf,
    tmp: PathBuf,
    guard: TempGuard,
    live: bool,
    ts: String,
}

/// Steps 1 and 2 of [`restore`]: copy and verify.
pub fn prepare_restore(db: &Path, backup_file: &Path, now: SystemTime) -> Result<PreparedRestore, BackupError> {
    let ts = compact_timestamp(now)?;
    let name = db.file_name().ok_or_else(|| BackupError::NoFileName { path: db.to_path_buf() })?.to_owned();
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let bad = |detail: String| BackupError::BadBackup { path: backup_file.to_path_buf(), db: db.to_path_buf(), detail };

    let mut source = File::open(backup_file).map_err(|e| bad(e.to_string()))?;
    if !source.metadata().map_err(|e| bad(e.to_string()))?.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let live = match fs::metadata(db) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading", db, "nothing was changed")(e)),
    };
    let live_is_wal = match &live {
        Some(_) => header_write_version(db).map_err(io_err("reading", db, "nothing was changed"))? == Some(2),
        None => false,
    };
    let (uid, gid, mode) = match &live {
        Some(m) => (m.uid(), m.gid(), m.mode() & 0o7777),
        None => {
            let d = fs::metadata(&parent).map_err(io_err("reading", &parent, "create the database's directory first; nothing was changed"))?;
            (d.uid(), d.gid(), 0o640)
        }
    };

    // 1. Copy beside the live database.
    let tmp = parent.join(format!(".{}.restore-{}-{}.tmp", name.to_string_lossy(), std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let hint = "the copy was discarded, the live database was not touched";
    let guard = TempGuard::new(tmp.clone());
    {
        let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err(
            "creating",
            &tmp,
            "check that the database's directory is writable; nothing was changed",
        ))?;
        io::copy(&mut source, &mut out).map_err(io_err("copying the backup to", &tmp, hint))?;
        out.flush().map_err(io_err("writing", &tmp, hint))?;
        let meta = out.metadata().map_err(io_err("reading", &tmp, hint))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).map_err(io_err("changing the owner of", &tmp, hint))?;
        }
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("changing the mode of", &tmp, hint))?;
        out.sync_all().map_err(io_err("fsync of", &tmp, hint))?;
    }

    // 2. Verify, and match the live database's journal mode.
    integrity_check(&tmp).map_err(|d| bad(format!("integrity check of its copy {} failed: {d}", tmp.display())))?;
    if live.is_some() {
        let want = if live_is_wal { "wal" } else { "delete" };
        let c = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| bad(e.to_string()))?;
        let got: String = c
            .query_row(&format!("PRAGMA journal_mode={want}"), [], |r| r.get(0))
            .map_err(|e| bad(format!("cannot set journal_mode={want} on the copy: {e}")))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(bad(format!("cannot set journal_mode={want} on the copy: SQLite kept {got}")));
        }
        c.close().map_err(|(_, e)| bad(e.to_string()))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err("fsync of", &tmp, hint))?;
    }
    remove_aux_files(&tmp);
    Ok(PreparedRestore { db: db.to_path_buf(), backup_file: backup_file.to_path_buf(), parent, tmp, guard, live: live.is_some(), ts })
}

impl PreparedRestore {
    /// Steps 3 to 5 of [`restore`]: with the agent stopped, swap the copy in. Returns where
    /// the replaced database was kept.
    pub fn swap(self) -> Result<Option<PathBuf>, BackupError> {
        let PreparedRestore { db, backup_file, parent, tmp, mut guard, live, ts } = self;
        let (db, backup_file) = (db.as_path(), backup_file.as_path());
        // 3. Nobody may have the live database open.
        if live && let Some(pid) = lock_holder(db).map_err(io_err("checking the locks of", db, "nothing was changed"))? {
            return Err(BackupError::InUse { path: db.to_path_buf(), pid });
        }

        // 4. Move the current files aside.
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut kept_at = None;
        let swap_err = |step: &'static str, source: io::Error, moved: &[(PathBuf, PathBuf)]| {
            let state = undo(moved);
            BackupError::Swap { backup: backup_file.to_path_buf(), db: db.to_path_buf(), step, source, state }
        };
        let present: Vec<&str> = std::iter::once("").chain(AUX_SUFFIXES).filter(|s| with_suffix(db, s).symlink_metadata().is_ok()).collect();
        if !present.is_empty() {
            let aside = free_aside_name(db, &ts);
            for s in present {
                let from = with_suffix(db, s);
                let to = with_suffix(&aside, s);
                if let Err(e) = rename_noreplace(&from, &to) {
                    return Err(swap_err("moving the current database aside", e, &moved));
                }
                moved.push((from, to));
            }
            kept_at = Some(aside);
        }

        // 5. The copy takes the live database's place.
        if let Err(e) = rename_noreplace(&tmp, db) {
            return Err(swap_err("renaming the verified copy into place", e, &moved));
        }
        guard.disarm();
        File::open(&parent).and_then(|d| d.sync_all()).map_err(|source| BackupError::Swap {
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
fn free_aside_name(db: &Path, ts: &str) -> PathBuf {
    let mut n = 0u32;
    loop {
        let candidate = if n == 0 { with_suffix(db, &format!(".replaced-{ts}")) } else { with_suffix(db, &format!(".replaced-{ts}-{n}")) };
        let taken = std::iter::once("").chain(AUX_SUFFIXES).any(|s| with_suffix(&candidate, s).symlink_metadata().is_ok());
        if !taken {
            return candidate;
        }
        n += 1;
    }
}

/// Best effort: move files back where they were; says where things are.
fn undo(moved: &[(PathBuf, PathBuf)]) -> String {
    let mut failed = Vec::new();
    for (from, to) in moved.iter().rev() {
        if rename_noreplace(to, from).is_err() {
            failed.push(format!("{} (belongs at {})", to.display(), from.display()));
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

/// The pid of another process holding an SQLite lock on `db` (a shared lock
/// is held by every open connection to a WAL database, and by any
/// transaction in a rollback-journal one). Locks of this process are not
/// seen.
fn lock_holder(db: &Path) -> io::Result<Option<i32>> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    const PENDING_BYTE: i64 = 0x4000_0000; // SQLite's lock bytes: pending, reserved, 510 shared
    let f = File::open(db)?;
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
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64};

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
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
                v.push(BackupFile { path: format!("/b/m-{ts}.sqlite"), taken_at: humantime::format_rfc3339_seconds(t).to_string(), bytes: 1 });
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
        let f = |t: &str| BackupFile { path: t.to_string(), taken_at: t.to_string(), bytes: 0 };
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
        assert_eq!(list(&db, &dir).unwrap().len(), 4);

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
        let listed: Vec<String> = list(&db, &dir).unwrap().into_iter().map(|f| f.taken_at).collect();
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
        let l: Vec<String> = list(&db, &dir).unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(l, [c.file.path.clone(), b.file.path.clone(), a.file.path.clone()]);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o750);
        assert_eq!(fs::metadata(&a.file.path).unwrap().mode() & 0o777, 0o640);
        // Keep-nothing policy: everything else goes, the new one stays.
        let d = backup(&db, &dir, &nothing, false, false, now + Duration::from_secs(1)).unwrap();
        assert_eq!(d.pruned.len(), 3);
        assert_eq!(list(&db, &dir).unwrap(), std::slice::from_ref(&d.file));
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
        assert!(err.to_string().contains("nope.db"), "{err}");
        assert!(names(&dir).is_empty());
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
}
