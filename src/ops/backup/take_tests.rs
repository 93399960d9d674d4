//! Tests of [`super::backup`]: a consistent copy while the agent writes, names that never
//! collide, pruning that touches only its own files, verification, WAL, and the hostile paths
//! a helper running as root on an agent's behalf must refuse.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use super::*;
use crate::ops::backup::testutil::*;
use crate::ops::backup::{BackupError, Policy, Tuning, integrity_check, list, test_hooks};
use crate::ops::walk::WalkError;

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

/// The switch to WAL while another connection holds a write lock: SQLite answers SQLITE_BUSY at
/// once (no busy handler for that upgrade); the backup asks again until the writer is done.
/// The writer commits once the backup has been told "busy" (the hook says so), not after a
/// guessed while.
#[test]
fn wal_switch_waits_for_a_writer_that_holds_the_lock() {
    use std::sync::{Condvar, Mutex};
    /// How often the switch was told busy, and whether the backup has returned.
    static STATE: (Mutex<(u32, bool)>, Condvar) = (Mutex::new((0, false)), Condvar::new());
    fn refused(_: &Path) {
        STATE.0.lock().unwrap().0 += 1;
        STATE.1.notify_all();
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("m.db");
    let dir = tmp.path().join("b");
    make_db(&db, 10);
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('held');").unwrap();
    // The writer commits once the backup has been told "busy" (or has given up).
    let release = std::thread::spawn(move || {
        let state = STATE.0.lock().unwrap();
        drop(STATE.1.wait_while(state, |(refused, returned)| *refused == 0 && !*returned).unwrap());
        writer.execute_batch("COMMIT;").unwrap();
    });
    test_hooks::ON_WAL_BUSY.with(|h| h.set(Some(refused)));
    let r = backup(&db, &dir, &NO_PRUNE, false, true, SystemTime::now());
    test_hooks::ON_WAL_BUSY.with(|h| h.set(None));
    STATE.0.lock().unwrap().1 = true;
    STATE.1.notify_all();
    release.join().unwrap();
    let r = r.unwrap_or_else(|e| panic!("the switch gave up on a lock a writer held: {e}"));
    assert!(STATE.0.lock().unwrap().0 >= 1, "the switch was refused while the writer held the lock");
    assert_eq!((r.journal_mode.as_str(), journal_mode_of(&db).as_str()), ("wal", "wal"));
    assert_eq!(ids(Path::new(&r.file.path)).2, 11, "the writer's row, committed before the switch, is in the backup");
}

// --- 6. hostile paths (the helper runs as root on the agent's behalf) ----

#[test]
fn wal_true_on_an_empty_or_non_sqlite_file_changes_nothing() {
    let tmp = open_tmp();
    let dir = tmp.path().join("backups");
    for (name, content) in [("empty.db", &b""[..]), ("notes.db", &b"some notes, not a database at all, long enough"[..]), ("short.db", &b"SQLite for"[..])] {
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
