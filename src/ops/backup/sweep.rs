//! What killed backups and restores leave: their temporary files, removed once the process
//! that made them is gone.
//!
//! Not `fsutil::sweep_temps`: that one reads and removes by path, in directories fleetwright
//! alone writes. These temporary files lie in the backup directory and beside an agent's
//! database, whose owner can swap entries: every look and removal here goes through the
//! directory's held descriptor (`unlinkat`, never through a link). Whether the process that
//! left one still runs is `fsutil::pid_alive`, the same question that sweep asks.

use std::ffi::OsStr;
use std::path::Path;

use fleetwright_sys::fsutil;

use super::names::db_stem;
use super::{BackupError, io_err, remove_aux_files, split};
use crate::ops::walk::{self, Dir, Trust, WalkError};

/// Remove the entries of `dir` whose name `owner` maps to the pid of the process that left
/// them, when that process is gone (never this one), with their SQLite side files. Never
/// through a link (`unlinkat` in the held directory). Returns what was removed.
fn sweep_dead_owners(dir: &Dir, owner: impl Fn(&str) -> Option<u32>) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(names) = dir.names() else { return removed };
    for name in names {
        let Some(pid) = name.to_str().and_then(&owner) else { continue };
        if fsutil::pid_alive(pid) {
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
pub(super) fn sweep_stale_temps(dir: &Dir, stem: &str) -> Vec<String> {
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
pub(super) fn sweep_restore_temps(dir: &Dir, name: &OsStr) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use super::*;
    use crate::ops::backup::backup;
    use crate::ops::backup::testutil::*;

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
}
