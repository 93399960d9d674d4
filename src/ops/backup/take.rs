//! Taking a backup: [`backup`] (see [the module docs](super) for how, and what it may touch).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::keep::keep;
use super::ledger::{compact_ledger, ledger_name, note_taken};
use super::list::list_in;
use super::names::{compact, db_stem, rfc3339, utc};
use super::sweep::{sweep_restore_temps, sweep_stale_temps};
use super::{
    BackupError, BackupFile, BackupReport, Policy, TEMP_COUNTER, TempGuard, Tuning, UNTOUCHED, check_database_file, full, integrity_check, io_err, no_space,
    no_space_of, remove_aux_files, split, sqlite_header,
};
use crate::ops::walk::{self, Dir, Identity, Trust, WalkError};

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
    let when = utc(now)?;
    let ts = compact(when);
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
    if let Some(hook) = super::test_hooks::BEFORE_COPY.with(|h| h.get()) {
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
    if let Some(hook) = super::test_hooks::BEFORE_VERIFY.with(|h| h.get()) {
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
    let taken_at = rfc3339(when);
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
        // The switch takes the database's exclusive lock. SQLite does not wait for it when it
        // would have to upgrade a lock another connection's write holds (it cannot know that
        // would not deadlock): SQLITE_BUSY at once, whatever the busy timeout. The writer's
        // transaction ends in a moment: ask again, until the lock timeout.
        let deadline = Instant::now() + tuning.lock_timeout;
        let switched = loop {
            match src.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline => {
                    #[cfg(test)]
                    if let Some(hook) = super::test_hooks::ON_WAL_BUSY.with(|h| h.get()) {
                        hook(db);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other,
            }
        };
        let mode: String = switched.map_err(|e| match full(&e).or_else(|| no_space(&src)) {
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

/// Copy `src` into `dst` (an empty database) with the online backup API, one
/// `sqlite3_backup_step` of [`Tuning::pages_per_step`] pages at a time.
///
/// This is rusqlite's `Backup::run_to_completion(pages_per_step, pause, progress)` loop with
/// the three things that one lacks:
///
/// * **An end to restarts.** A commit to a rollback-journal database between two steps makes
///   SQLite start the copy again at page 1; `run_to_completion` steps the same number of pages
///   every time, so under a steady writer it never finishes. Here a step that copied no further
///   than the one before counts as a restart, and after [`Tuning::max_restarts`] the rest is
///   copied in one `step(-1)` that holds the read lock until it is done.
/// * **An end to waiting.** `run_to_completion` answers SQLITE_BUSY/LOCKED by sleeping and
///   stepping again, without limit; here the source staying locked for
///   [`Tuning::lock_timeout`] without a step going through is an error that says so.
/// * **Counts.** Its progress callback is a plain `fn(Progress)`, which captures nothing: the
///   steps and restarts [`BackupReport`] reports could not be counted (the tests check both:
///   several steps for a WAL source, restarts bounded for a rollback-journal one).
///
/// (A full disk is no reason: `run_to_completion` returns a step's error too, and the errno
/// is read from `dst`'s handle afterwards either way.)
///
/// Nor is it `VACUUM INTO`, though for a WAL source that also copies one read snapshot:
/// SQLite would open the target by path on the *source* connection, so with the file-system
/// identity of the database's owner ([`walk::act_as`]), who cannot write root's backup
/// directory — the copy is opened as root before that identity is taken. And `VACUUM`
/// rebuilds the database from its rows instead of copying its pages: a source with a corrupt
/// page could not be backed up without `verify` either, where a page copy is faithful,
/// corruption included, and the integrity check is what tells.
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

#[cfg(test)]
#[path = "take_tests.rs"]
mod tests;
