//! Listing the backups of a database: [`list`] and [`latest`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::stat::SFlag;

use super::BackupFile;
use super::ledger::read_ledger;
use super::names::{db_stem, parse_backup_name, rfc3339, system_time};
use crate::ops::walk::{self, Dir, Trust, WalkError};

/// A name dated further than this ahead of now is dated in the future.
pub const FUTURE_SLACK: Duration = Duration::from_secs(600);

/// The backups in `dir` for database `db` (only regular files matching our
/// naming pattern), newest first: in the order they were taken (the ledger), those the ledger
/// does not know before them by name; `future` set by `now` (see [the module docs](super)). A missing
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
pub(super) fn list_in(stem: &str, dir: &Dir, now: SystemTime) -> io::Result<Vec<(OsString, BackupFile)>> {
    let ledger = read_ledger(dir, stem)?;
    // A name's place is its last line: a name used again was taken again.
    let place: HashMap<&str, u64> = ledger.iter().enumerate().map(|(i, n)| (n.as_str(), i as u64 + 1)).collect();
    let mut found = Vec::new();
    for name in dir.names()? {
        let Some(n) = name.to_str() else { continue };
        let Some((ts, seq, taken)) = parse_backup_name(stem, n) else {
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
        let future = now.checked_add(FUTURE_SLACK).is_some_and(|limit| system_time(taken) > limit);
        let taken_at = rfc3339(taken);
        let order = place.get(n).copied().unwrap_or(0);
        let file =
            BackupFile { path: dir.join(&name).to_string_lossy().into_owned(), taken_at, bytes: u64::try_from(st.st_size).unwrap_or(0), seq: order, future };
        found.push((order, ts, seq, name, file));
    }
    found.sort_by(|a, b| (b.0, &b.1, b.2).cmp(&(a.0, &a.1, a.2)));
    Ok(found.into_iter().map(|(_, _, _, n, f)| (n, f)).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ops::backup::testutil::*;
    use crate::ops::backup::{Policy, backup, keep};

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
}
