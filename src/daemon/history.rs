//! The reconcile history in SQLite (WAL mode) in the state directory: every reconcile with its
//! commit, trigger, duration, actions, result and error; which commits are good or bad; the
//! rollback pin. `fleetwright history` reads it; the daemon writes it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error(
        "history database {path} is damaged ({detail}): its verdicts and pin cannot be trusted. The daemon sets a damaged history aside ({path}.damaged-<time>) and starts a fresh one when it starts, keeping the commit the host runs as good; to do that now, restart the daemon (see \"A damaged history\" in docs/operations.md)"
    )]
    Damaged { path: String, detail: String },
}

impl HistoryError {
    fn new(path: &str, source: rusqlite::Error) -> HistoryError {
        if matches!(source.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)) {
            HistoryError::Damaged { path: path.to_string(), detail: source.to_string() }
        } else {
            HistoryError::Sqlite { path: path.to_string(), source }
        }
    }

    /// The file is not a sound SQLite database (corrupt, or not a database at all).
    pub fn is_damaged(&self) -> bool {
        matches!(self, HistoryError::Damaged { .. })
    }
}

pub struct History {
    conn: Connection,
    path: String,
}

/// One reconcile, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconcile {
    pub id: i64,
    pub started_at: String,
    pub duration_ms: i64,
    /// What woke the reconciler: startup, watch, poll, resync, webhook, signal, retry.
    pub trigger: String,
    /// The head of the followed branch (or the pin) when it ran.
    pub head: Option<String>,
    /// The commit it converged the host to.
    pub applied: Option<String>,
    /// converged | unchanged | invalid | refused | failed | rolled-back | superseded | error
    pub result: String,
    pub actions: i64,
    pub drift: Option<String>,
    pub error: Option<String>,
}

/// A commit's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Good,
    Bad,
}

/// How long an open, or a statement, waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl History {
    pub fn open(state_dir: &Path) -> Result<History, HistoryError> {
        let path = state_dir.join("history.sqlite");
        let shown = path.display().to_string();
        let err = |source| HistoryError::new(&shown, source);
        std::fs::create_dir_all(state_dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // WAL is kept in the file: the first opener of a new database sets it. The switch needs
        // the database to itself and SQLite's busy handler does not wait for that: another
        // opener at that moment (`fleetwright history` as the daemon starts) is waited out here.
        let until = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let set = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
                .and_then(|mode| if mode.eq_ignore_ascii_case("wal") { Ok(()) } else { conn.pragma_update(None, "journal_mode", "WAL") });
            match set {
                Ok(()) => break,
                Err(e)
                    if matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
                        && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => return Err(err(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS reconciles (
                id INTEGER PRIMARY KEY,
                started_at TEXT NOT NULL,
                duration_ms INTEGER NOT NULL,
                trigger TEXT NOT NULL,
                head TEXT,
                applied TEXT,
                result TEXT NOT NULL,
                actions INTEGER NOT NULL,
                drift TEXT,
                error TEXT);
             CREATE TABLE IF NOT EXISTS commits (
                commit_id TEXT PRIMARY KEY,
                verdict TEXT NOT NULL,
                reason TEXT,
                at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(err)?;
        // A damaged file can open, and even answer some queries: look at all of it once.
        let check: Vec<String> =
            conn.prepare("PRAGMA quick_check(3)").and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect()).map_err(err)?;
        if check != ["ok"] {
            return Err(HistoryError::Damaged { path: shown, detail: check.join("; ") });
        }
        Ok(History { conn, path: shown })
    }

    /// `open`; a damaged history is set aside (`history.sqlite.damaged-<time>`, with its `-wal`
    /// and `-shm`) and a fresh one started, with `applied` (the commit the host runs, from the
    /// inventory) marked good so that a failing commit still has somewhere to roll back to.
    /// Returns what was done, for the log, when it was.
    pub fn open_or_recover(state_dir: &Path, applied: Option<&str>) -> Result<(History, Option<String>), HistoryError> {
        let e = match History::open(state_dir) {
            Ok(h) => return Ok((h, None)),
            Err(e) if e.is_damaged() => e,
            Err(e) => return Err(e),
        };
        let path = state_dir.join("history.sqlite");
        let stamp: String = crate::host::now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let aside = state_dir.join(format!("history.sqlite.damaged-{stamp}"));
        for suffix in ["-wal", "-shm", ""] {
            let from = PathBuf::from(format!("{}{suffix}", path.display()));
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(io) if io.kind() == std::io::ErrorKind::NotFound => {}
                Err(io) => {
                    return Err(HistoryError::Sqlite { path: from.display().to_string(), source: rusqlite::Error::ToSqlConversionFailure(Box::new(io)) });
                }
            }
        }
        let h = History::open(state_dir)?;
        if let Some(c) = applied {
            h.mark(c, Verdict::Good, "assumed good: the commit this host ran when its damaged history was set aside", &crate::host::now_rfc3339())?;
        }
        let notice = format!(
            "{e}; it was moved to {} and a fresh history started{}",
            aside.display(),
            applied.map(|c| format!(", with {c} as the last good commit")).unwrap_or_default()
        );
        Ok((h, Some(notice)))
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> HistoryError + '_ {
        move |source| HistoryError::new(&self.path, source)
    }

    pub fn record(&self, r: &Reconcile) -> Result<i64, HistoryError> {
        self.conn
            .execute(
                "INSERT INTO reconciles (started_at, duration_ms, trigger, head, applied, result, actions, drift, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![r.started_at, r.duration_ms, r.trigger, r.head, r.applied, r.result, r.actions, r.drift, r.error],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn recent(&self, n: usize) -> Result<Vec<Reconcile>, HistoryError> {
        let mut st = self
            .conn
            .prepare("SELECT id, started_at, duration_ms, trigger, head, applied, result, actions, drift, error FROM reconciles ORDER BY id DESC LIMIT ?1")
            .map_err(self.err())?;
        let rows = st
            .query_map(params![n as i64], |r| {
                Ok(Reconcile {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    duration_ms: r.get(2)?,
                    trigger: r.get(3)?,
                    head: r.get(4)?,
                    applied: r.get(5)?,
                    result: r.get(6)?,
                    actions: r.get(7)?,
                    drift: r.get(8)?,
                    error: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    pub fn mark(&self, commit: &str, verdict: Verdict, reason: &str, at: &str) -> Result<(), HistoryError> {
        let v = if verdict == Verdict::Good { "good" } else { "bad" };
        self.conn
            .execute(
                "INSERT INTO commits (commit_id, verdict, reason, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(commit_id) DO UPDATE SET verdict = excluded.verdict, reason = excluded.reason, at = excluded.at",
                params![commit, v, reason, at],
            )
            .map_err(self.err())?;
        if verdict == Verdict::Good {
            self.set("last_good", Some(commit))?;
        }
        Ok(())
    }

    pub fn verdict(&self, commit: &str) -> Result<Option<(Verdict, String)>, HistoryError> {
        self.conn
            .query_row("SELECT verdict, reason FROM commits WHERE commit_id = ?1", params![commit], |r| {
                let v: String = r.get(0)?;
                Ok((if v == "good" { Verdict::Good } else { Verdict::Bad }, r.get::<_, Option<String>>(1)?.unwrap_or_default()))
            })
            .optional()
            .map_err(self.err())
    }

    pub fn last_good(&self) -> Result<Option<String>, HistoryError> {
        self.get("last_good")
    }

    pub fn pin(&self) -> Result<Option<String>, HistoryError> {
        self.get("pin")
    }

    pub fn set_pin(&self, commit: Option<&str>) -> Result<(), HistoryError> {
        self.set("pin", commit)
    }

    fn get(&self, key: &str) -> Result<Option<String>, HistoryError> {
        self.conn.query_row("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0)).optional().map_err(self.err())
    }

    fn set(&self, key: &str, value: Option<&str>) -> Result<(), HistoryError> {
        match value {
            Some(v) => {
                self.conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, v])
            }
            None => self.conn.execute("DELETE FROM settings WHERE key = ?1", params![key]),
        }
        .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_verdicts_pins_and_reconciles() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let mode: String = h.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(h.last_good().unwrap(), None);
        h.mark("c1", Verdict::Good, "healthy", "t1").unwrap();
        h.mark("c2", Verdict::Bad, "agent-web.service crash-looped", "t2").unwrap();
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
        assert_eq!(h.verdict("c2").unwrap(), Some((Verdict::Bad, "agent-web.service crash-looped".into())));
        assert_eq!(h.verdict("c3").unwrap(), None);
        h.set_pin(Some("c1")).unwrap();
        assert_eq!(h.pin().unwrap().as_deref(), Some("c1"));
        h.set_pin(None).unwrap();
        assert_eq!(h.pin().unwrap(), None);
        for i in 0..3 {
            h.record(&Reconcile { started_at: format!("t{i}"), trigger: "poll".into(), result: "unchanged".into(), ..Default::default() }).unwrap();
        }
        let recent = h.recent(2).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].started_at, "t2");
        // Reopening keeps everything.
        drop(h);
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.recent(10).unwrap().len(), 3);
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
    }
}

#[cfg(test)]
mod damaged {
    use super::*;

    #[test]
    fn a_damaged_history_is_an_error_that_says_so_and_is_set_aside_by_open_or_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let e = History::open(dir.path()).err().expect("a damaged history does not open");
        assert!(e.is_damaged(), "{e}");
        assert!(e.to_string().contains("is damaged") && e.to_string().contains("A damaged history"), "{e}");
        let (h, notice) = History::open_or_recover(dir.path(), Some("c1")).unwrap();
        let notice = notice.expect("it says what it did");
        assert!(notice.contains("a fresh history started, with c1 as the last good commit"), "{notice}");
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
        assert_eq!(h.verdict("c1").unwrap().map(|v| v.0), Some(Verdict::Good));
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("history.sqlite.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), vec![0x5a; 4096]);
        // A sound history opens as it is.
        drop(h);
        let (h, notice) = History::open_or_recover(dir.path(), Some("c2")).unwrap();
        assert!(notice.is_none());
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
    }
}

#[cfg(test)]
mod concurrent {
    use super::*;

    /// The daemon opening its history while `fleetwright history` opens it too (as at the daemon's
    /// start, with an operator or a test looking): neither fails with "database is locked".
    #[test]
    fn opening_a_new_history_from_several_processes_at_once_never_fails() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let path = dir.path().to_path_buf();
                    std::thread::spawn(move || History::open(&path).and_then(|h| h.recent(1).map(|_| ())))
                })
                .collect();
            for o in openers {
                o.join().unwrap().unwrap();
            }
        }
    }
}
