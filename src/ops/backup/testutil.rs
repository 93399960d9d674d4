//! What the tests of taking, listing, sweeping and restoring backups share: real SQLite
//! databases in temporary directories, and ways to look at them.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags};

use super::{Policy, sqlite_header, suffixed};

pub fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

/// The names in `dir`, less the ledgers of the order backups were taken (`.<stem>.taken`).
pub fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".taken")).collect()
}

/// A small database with rows 1..=n.
pub fn make_db(path: &Path, n: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t(v);").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=n {
        tx.execute("INSERT INTO t(id, v) VALUES (?1, ?2)", (i, format!("row {i} {}", "x".repeat(50)))).unwrap();
    }
    tx.commit().unwrap();
}

pub fn ids(path: &Path) -> (i64, i64, i64) {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("SELECT coalesce(min(id),0), coalesce(max(id),0), count(*) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap()
}

pub fn journal_mode_of(path: &Path) -> String {
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap()
}

pub const NO_PRUNE: Policy = Policy { last: 1000, daily: 0, weekly: 0 };

/// `path` with `suffix` appended to its file name (`m.db` → `m.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(suffixed(path.as_os_str(), suffix))
}

/// Byte 18 of the database header: 1 = rollback journal, 2 = WAL. `None`
/// for an empty or non-SQLite file.
pub fn header_write_version(path: &Path) -> io::Result<Option<u8>> {
    Ok(sqlite_header(&File::open(path)?)?.ok())
}

pub fn corrupt_page_2(path: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&[0xA5u8; 2048]).unwrap();
}

pub fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (ownership and file-system identity)");
    false
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory others may search (a user's directory can be below it).
pub fn open_tmp() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o755);
    t
}

pub fn bytes_and_names(db: &Path) -> (Vec<u8>, BTreeSet<String>) {
    (fs::read(db).unwrap(), names(db.parent().unwrap()))
}

/// An agent's directory (uid 4242) under `tmp`, with a database of its own.
pub fn agent_db(tmp: &Path) -> PathBuf {
    let agent = tmp.join("agent");
    fs::create_dir(&agent).unwrap();
    let db = agent.join("m.db");
    make_db(&db, 7);
    for p in [&agent, &db] {
        std::os::unix::fs::chown(p, Some(4242), Some(4242)).unwrap();
    }
    db
}
