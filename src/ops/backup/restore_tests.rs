//! Tests of [`super::restore`] and [`super::prepare_restore`]: the round trip, what is kept
//! aside, what is refused (a corrupt backup, a database in use, links and swapped
//! directories), and the owner and mode the restored database keeps.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::Connection;

use super::*;
use crate::ops::backup::testutil::*;
use crate::ops::backup::{BackupError, backup, integrity_check, list};
use crate::ops::walk::WalkError;

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
