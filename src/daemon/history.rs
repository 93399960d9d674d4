//! The reconcile history in SQLite (WAL mode) in the state directory: the reconciles (a no-op
//! repeated is one row with a count; the newest `MAX_RECONCILES` are kept), every verdict on a
//! commit (kept for ever: an append-only log, with the unit hashes of each good commit), the
//! rollback pin, what the daemon last knew of the branch and its gate, and the outbox of
//! notifications (each event once per commit, kept until it is delivered).
//! `fleetwright history`, `status`, `rollback` and `resume` read it; the daemon writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::layout::StateLayout;

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
    /// What woke the reconciler: startup, watch, poll, resync, webhook, signal, retry, drift.
    pub trigger: String,
    /// The commit it meant to run: the pin if one is set, else the head of the followed branch.
    pub head: Option<String>,
    /// The commit it converged the host to.
    pub applied: Option<String>,
    /// converged | unchanged | repaired | invalid | refused | held | failed | rolled-back |
    /// rollback-failed | superseded | interrupted | error
    pub result: String,
    pub actions: i64,
    pub drift: Option<String>,
    pub error: Option<String>,
    /// How many reconciles in a row this row stands for: the same trigger, commits, result and
    /// error with nothing done (a poll of an unchanged branch, a refused head) are one row.
    pub repeats: i64,
    /// When the last of them started (the first one's is `started_at`).
    pub last_at: Option<String>,
}

/// A commit's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Passed its health gate: the last good commit is the newest of these.
    Good,
    /// Invalid, failed to apply, or failed its gate: never applied again by the daemon.
    Bad,
    /// Applied only in part (a `health.check` held a change back), or not at all (its plan was
    /// refused: the empty-fleet guard, a foreign file): not good, tried again.
    Held,
    /// Not applied on purpose: the branch was force-pushed past the applied commit, or the
    /// commit is not signed by an allowed key. Checked again each time.
    Refused,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Held => "held",
            Verdict::Refused => "refused",
        }
    }
    fn parse(s: &str) -> Verdict {
        match s {
            "good" => Verdict::Good,
            "held" => Verdict::Held,
            "refused" => Verdict::Refused,
            // Unknown text is read as bad: a verdict that cannot be read must not let a commit
            // through.
            _ => Verdict::Bad,
        }
    }
}

/// One entry of the verdict log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictRecord {
    /// Its place in the log: later verdicts have greater ids.
    pub id: i64,
    pub commit: String,
    pub verdict: Verdict,
    pub reason: String,
    pub at: String,
}

/// The rollback pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    pub commit: String,
    /// Pinned with `--force` although it was marked bad: applied (and gated) once more.
    pub force: bool,
    /// The newest verdict id when it was pinned: a verdict on the commit after it is the
    /// outcome of the pin.
    #[serde(skip)]
    pub seq: i64,
    pub at: Option<String>,
}

/// A notification waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: i64,
    pub event: String,
    pub commit: String,
    pub body: String,
    pub attempts: i64,
}

/// What a sink has done (metrics, `notify test`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Reports not handled yet (waiting, or being retried).
    pub queued: u64,
    /// Failed attempts in a row on the report at the head of its queue, and the last error.
    pub attempts: u64,
    pub last_error: Option<String>,
}

/// A unit whose failure was reported and which has not recovered yet (the grouping of
/// repeated failures: `ops::failure::GROUP_INTERVAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub unit: String,
    pub agent: String,
    pub since: String,
    /// When its last report was queued (unix seconds).
    pub reported_at: i64,
    /// Failures since then that were folded, not reported one by one.
    pub folded: i64,
    pub last_result: Option<String>,
    pub last_journal: Option<String>,
}

/// How a sink's head report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Sent,
    /// Refused for good by the receiver (counted as failed), or not for this sink: the queue
    /// moves on.
    Rejected,
    Skipped,
}

/// How long a wait for another connection's lock may take.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reconcile rows kept: about a year of a daemon at work with its no-op polls folded.
pub const MAX_RECONCILES: i64 = 10_000;

/// Delivered notifications are forgotten after this long; undelivered ones are given up then
/// (counted in each sink's `dropped`). docs/notifications.md says so.
pub const OUTBOX_DAYS: i64 = 7;

/// What a sink seen for the first time is sent of what was queued before it.
pub const NEW_SINK_BACKLOG: std::time::Duration = std::time::Duration::from_secs(3600);

impl History {
    pub fn open(state_dir: &Path) -> Result<History, HistoryError> {
        let path = StateLayout::new(state_dir).history();
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
                Err(e) if busy(&e) && std::time::Instant::now() < until => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return Err(err(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // The schema, created or brought up to date, once at a time (the same race as above).
        let until = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::migrate(&conn) {
                Ok(()) => break,
                Err(e) if busy(&e) && std::time::Instant::now() < until => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return Err(err(e)),
            }
        }
        // A damaged file can open, and even answer some queries: look at all of it once.
        let check: Vec<String> =
            conn.prepare("PRAGMA quick_check(3)").and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect()).map_err(err)?;
        if check != ["ok"] {
            return Err(HistoryError::Damaged { path: shown, detail: check.join("; ") });
        }
        let h = History { conn, path: shown };
        // That check read every page of the file into the cache.
        h.release_memory();
        Ok(h)
    }

    /// Give back the pages SQLite caches (up to 2 MB; the daemon holds its history for weeks,
    /// and reads it rarely: the operating system's cache of the file serves those reads).
    pub fn release_memory(&self) {
        let _ = self.conn.release_memory();
    }

    fn migrate(conn: &Connection) -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        // A history from before per-sink delivery: what its --notify-url had not been sent yet
        // is owed to the first sink (`ensure_sink`), however old.
        let had_outbox: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'outbox')", [], |r| r.get(0))?;
        let had_sinks: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sinks')", [], |r| r.get(0))?;
        tx.execute_batch(
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
             CREATE TABLE IF NOT EXISTS verdicts (
                id INTEGER PRIMARY KEY,
                commit_id TEXT NOT NULL,
                verdict TEXT NOT NULL,
                reason TEXT NOT NULL,
                at TEXT NOT NULL,
                units TEXT);
             CREATE INDEX IF NOT EXISTS verdicts_commit ON verdicts (commit_id, id);
             CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY,
                event TEXT NOT NULL,
                commit_id TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                delivered_at TEXT,
                last_error TEXT,
                UNIQUE (event, commit_id));
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS sinks (
                key TEXT PRIMARY KEY,
                cursor INTEGER NOT NULL,
                sent INTEGER NOT NULL DEFAULT 0,
                failed INTEGER NOT NULL DEFAULT 0,
                dropped INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT);
             CREATE TABLE IF NOT EXISTS failing (
                unit TEXT PRIMARY KEY,
                agent TEXT NOT NULL,
                since TEXT NOT NULL,
                reported_at INTEGER NOT NULL,
                folded INTEGER NOT NULL DEFAULT 0,
                last_result TEXT,
                last_journal TEXT);",
        )?;
        if had_outbox && !had_sinks {
            tx.execute(
                "INSERT OR IGNORE INTO settings (key, value) SELECT 'outbox_owed', CAST(MIN(id) - 1 AS TEXT) FROM outbox WHERE delivered_at IS NULL HAVING COUNT(*) > 0",
                [],
            )?;
        }
        // Columns added since the first version.
        let columns: Vec<String> = tx.prepare("PRAGMA table_info(reconciles)")?.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<_, _>>()?;
        if !columns.iter().any(|c| c == "repeats") {
            tx.execute_batch("ALTER TABLE reconciles ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1; ALTER TABLE reconciles ADD COLUMN last_at TEXT;")?;
        }
        // Verdicts from before the log: one entry each, in the order they were given.
        let logged: i64 = tx.query_row("SELECT COUNT(*) FROM verdicts", [], |r| r.get(0))?;
        if logged == 0 {
            tx.execute(
                "INSERT INTO verdicts (commit_id, verdict, reason, at) SELECT commit_id, verdict, COALESCE(reason, ''), at FROM commits ORDER BY at",
                [],
            )?;
        }
        tx.commit()
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
        let path = StateLayout::new(state_dir).history();
        let stamp: String = crate::host::now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let aside = StateLayout::new(state_dir).history_damaged(&stamp);
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

    /// Record a reconcile. One that did nothing and ended as the previous row did (same
    /// trigger, commits, result, drift and error) is folded into it: its count goes up.
    pub fn record(&self, r: &Reconcile) -> Result<i64, HistoryError> {
        if r.actions == 0 {
            let last = self
                .conn
                .query_row("SELECT id, trigger, head, applied, result, actions, drift, error FROM reconciles ORDER BY id DESC LIMIT 1", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, Option<String>>(7)?,
                    ))
                })
                .optional()
                .map_err(self.err())?;
            if let Some((id, trigger, head, applied, result, actions, drift, error)) = last
                && actions == 0
                && (trigger, head, applied, result, drift, error)
                    == (r.trigger.clone(), r.head.clone(), r.applied.clone(), r.result.clone(), r.drift.clone(), r.error.clone())
            {
                self.conn
                    .execute(
                        "UPDATE reconciles SET repeats = repeats + 1, last_at = ?2, duration_ms = ?3 WHERE id = ?1",
                        params![id, r.started_at, r.duration_ms],
                    )
                    .map_err(self.err())?;
                return Ok(id);
            }
        }
        self.conn
            .execute(
                "INSERT INTO reconciles (started_at, duration_ms, trigger, head, applied, result, actions, drift, error, repeats) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
                params![r.started_at, r.duration_ms, r.trigger, r.head, r.applied, r.result, r.actions, r.drift, r.error],
            )
            .map_err(self.err())?;
        let id = self.conn.last_insert_rowid();
        // Bounded: only the newest rows are kept (verdicts live in their own log).
        if id % 100 == 0 {
            self.conn.execute("DELETE FROM reconciles WHERE id <= ?1", params![id - MAX_RECONCILES]).map_err(self.err())?;
        }
        Ok(id)
    }

    pub fn recent(&self, n: usize) -> Result<Vec<Reconcile>, HistoryError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, started_at, duration_ms, trigger, head, applied, result, actions, drift, error, repeats, last_at FROM reconciles ORDER BY id DESC LIMIT ?1",
            )
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
                    repeats: r.get(10)?,
                    last_at: r.get(11)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// How many reconcile rows are kept now.
    pub fn reconcile_rows(&self) -> Result<i64, HistoryError> {
        self.conn.query_row("SELECT COUNT(*) FROM reconciles", [], |r| r.get(0)).map_err(self.err())
    }

    /// Record a verdict without units or notification (`record_verdict`).
    pub fn mark(&self, commit: &str, verdict: Verdict, reason: &str, at: &str) -> Result<i64, HistoryError> {
        self.record_verdict(commit, verdict, reason, at, None, None)
    }

    /// Record a verdict on `commit`, in one transaction: its standing, an entry in the log (with
    /// the unit hashes of a good commit: what the next gate compares with), the last good
    /// commit, and the notification `event` (event name, JSON body) unless that event was
    /// already queued for this commit. The gate record is cleared when it was this commit's.
    pub fn record_verdict(
        &self,
        commit: &str,
        verdict: Verdict,
        reason: &str,
        at: &str,
        units: Option<&BTreeMap<String, String>>,
        event: Option<(&str, &str)>,
    ) -> Result<i64, HistoryError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let v = verdict.as_str();
        tx.execute(
            "INSERT INTO commits (commit_id, verdict, reason, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(commit_id) DO UPDATE SET verdict = excluded.verdict, reason = excluded.reason, at = excluded.at",
            params![commit, v, reason, at],
        )
        .map_err(self.err())?;
        let units = units.map(|u| serde_json::to_string(u).expect("a map of strings serializes"));
        tx.execute("INSERT INTO verdicts (commit_id, verdict, reason, at, units) VALUES (?1, ?2, ?3, ?4, ?5)", params![commit, v, reason, at, units])
            .map_err(self.err())?;
        let id = tx.last_insert_rowid();
        if verdict == Verdict::Good {
            tx.execute("INSERT INTO settings (key, value) VALUES ('last_good', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![commit])
                .map_err(self.err())?;
        }
        if let Some((event, body)) = event {
            tx.execute("INSERT OR IGNORE INTO outbox (event, commit_id, body, created_at) VALUES (?1, ?2, ?3, ?4)", params![event, commit, body, at])
                .map_err(self.err())?;
        }
        let gate: Option<String> = tx.query_row("SELECT value FROM settings WHERE key = 'gate'", [], |r| r.get(0)).optional().map_err(self.err())?;
        if gate.and_then(|g| serde_json::from_str::<serde_json::Value>(&g).ok()).is_some_and(|g| g["commit"] == commit) {
            tx.execute("DELETE FROM settings WHERE key = 'gate'", []).map_err(self.err())?;
        }
        tx.commit().map_err(self.err())?;
        Ok(id)
    }

    /// A commit's current standing and why.
    pub fn verdict(&self, commit: &str) -> Result<Option<(Verdict, String)>, HistoryError> {
        Ok(self.verdict_record(commit)?.map(|r| (r.verdict, r.reason)))
    }

    /// A commit's latest verdict.
    pub fn verdict_record(&self, commit: &str) -> Result<Option<VerdictRecord>, HistoryError> {
        self.conn
            .query_row("SELECT id, commit_id, verdict, reason, at FROM verdicts WHERE commit_id = ?1 ORDER BY id DESC LIMIT 1", params![commit], row_verdict)
            .optional()
            .map_err(self.err())
    }

    /// The verdict log, newest first.
    pub fn verdicts(&self, n: usize) -> Result<Vec<VerdictRecord>, HistoryError> {
        let mut st = self.conn.prepare("SELECT id, commit_id, verdict, reason, at FROM verdicts ORDER BY id DESC LIMIT ?1").map_err(self.err())?;
        let rows = st.query_map(params![n as i64], row_verdict).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// The newest verdict id (0 without any).
    pub fn verdict_seq(&self) -> Result<i64, HistoryError> {
        self.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM verdicts", [], |r| r.get(0)).map_err(self.err())
    }

    /// The last good commit before `now`: the commit that most recently passed a gate on this
    /// host, other than `now` (the one applied now).
    pub fn good_before(&self, now: Option<&str>) -> Result<Option<String>, HistoryError> {
        self.conn
            .query_row("SELECT commit_id FROM verdicts WHERE verdict = 'good' AND commit_id IS NOT ?1 ORDER BY id DESC LIMIT 1", params![now], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Commits the history knows (verdicts and reconciles) that start with `prefix`.
    pub fn commits_starting_with(&self, prefix: &str) -> Result<std::collections::BTreeSet<String>, HistoryError> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        let mut st = self
            .conn
            .prepare(
                "SELECT commit_id FROM verdicts WHERE commit_id LIKE ?1
                 UNION SELECT head FROM reconciles WHERE head LIKE ?1 UNION SELECT applied FROM reconciles WHERE applied LIKE ?1",
            )
            .map_err(self.err())?;
        let rows = st.query_map(params![pattern], |r| r.get::<_, String>(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The unit hashes recorded when `commit` passed its gate (None: not recorded, as for a
    /// verdict given by an older version).
    pub fn snapshot(&self, commit: &str) -> Result<Option<BTreeMap<String, String>>, HistoryError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT units FROM verdicts WHERE commit_id = ?1 AND verdict = 'good' AND units IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![commit],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    pub fn last_good(&self) -> Result<Option<String>, HistoryError> {
        self.get("last_good")
    }

    pub fn pin(&self) -> Result<Option<String>, HistoryError> {
        self.get("pin")
    }

    pub fn pin_record(&self) -> Result<Option<Pin>, HistoryError> {
        let Some(commit) = self.get("pin")? else { return Ok(None) };
        let force = self.get("pin_force")?.as_deref() == Some("1");
        let seq = self.get("pin_seq")?.and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(Some(Pin { commit, force, seq, at: self.get("pin_at")? }))
    }

    /// Pin `commit` (None: unpin). `force`: it is marked bad and is to be tried once more.
    pub fn set_pin(&self, commit: Option<&str>) -> Result<(), HistoryError> {
        self.set_pin_with(commit, false, None)
    }

    pub fn set_pin_with(&self, commit: Option<&str>, force: bool, at: Option<&str>) -> Result<(), HistoryError> {
        let seq = self.verdict_seq()?.to_string();
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let set = |key: &str, value: Option<&str>| -> rusqlite::Result<usize> {
            match value {
                Some(v) => {
                    tx.execute("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", params![key, v])
                }
                None => tx.execute("DELETE FROM settings WHERE key = ?1", params![key]),
            }
        };
        let pinned = commit.is_some();
        set("pin", commit).map_err(self.err())?;
        set("pin_force", (pinned && force).then_some("1")).map_err(self.err())?;
        set("pin_seq", pinned.then_some(seq.as_str())).map_err(self.err())?;
        set("pin_at", at.filter(|_| pinned)).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Whether `commit` got a verdict after the verdict `seq`.
    pub fn verdict_since(&self, commit: &str, seq: i64) -> Result<bool, HistoryError> {
        self.conn.query_row("SELECT EXISTS (SELECT 1 FROM verdicts WHERE commit_id = ?1 AND id > ?2)", params![commit, seq], |r| r.get(0)).map_err(self.err())
    }

    /// A JSON value the daemon keeps for `status` (`head`, `gate`, `source`).
    pub fn get_json(&self, key: &str) -> Result<Option<serde_json::Value>, HistoryError> {
        Ok(self.get(key)?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub fn set_json(&self, key: &str, value: Option<&serde_json::Value>) -> Result<(), HistoryError> {
        self.set(key, value.map(|v| v.to_string()).as_deref())
    }

    /// Every notification queued for `commit`: (event, delivered).
    pub fn events_of(&self, commit: &str) -> Result<Vec<(String, bool)>, HistoryError> {
        let mut st = self.conn.prepare("SELECT event, delivered_at IS NOT NULL FROM outbox WHERE commit_id = ?1 ORDER BY id").map_err(self.err())?;
        let rows = st.query_map(params![commit], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Queue a report (not tied to a verdict): `key` makes it once only (an agent's failure by
    /// its unit and invocation). Returns whether it was new.
    pub fn queue(&self, event: &str, key: &str, body: &str, at: &str) -> Result<bool, HistoryError> {
        let n = self
            .conn
            .execute("INSERT OR IGNORE INTO outbox (event, commit_id, body, created_at) VALUES (?1, ?2, ?3, ?4)", params![event, key, body, at])
            .map_err(self.err())?;
        Ok(n > 0)
    }

    /// Make `sink` known. A new sink starts with the reports of the last `NEW_SINK_BACKLOG`
    /// (the `pending` of the commit that adds it, a failure reported just before), not with
    /// a week of history. Its cursor.
    pub fn ensure_sink(&self, sink: &str) -> Result<i64, HistoryError> {
        let cutoff = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - NEW_SINK_BACKLOG).to_string();
        let owed: Option<i64> = self.get("outbox_owed")?.and_then(|v| v.parse().ok());
        let added = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO sinks (key, cursor) VALUES (?1, MIN(COALESCE((SELECT MAX(id) FROM outbox WHERE created_at < ?2), 0), COALESCE(?3, 1 << 62)))",
                params![sink, cutoff, owed],
            )
            .map_err(self.err())?;
        if added > 0 && owed.is_some() {
            self.set("outbox_owed", None)?;
        }
        self.conn.query_row("SELECT cursor FROM sinks WHERE key = ?1", params![sink], |r| r.get(0)).map_err(self.err())
    }

    /// The reports after `cursor`, oldest first.
    pub fn after(&self, cursor: i64, n: usize) -> Result<Vec<Outgoing>, HistoryError> {
        let mut st = self.conn.prepare("SELECT id, event, commit_id, body, attempts FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2").map_err(self.err())?;
        let rows = st
            .query_map(params![cursor, n as i64], |r| Ok(Outgoing { id: r.get(0)?, event: r.get(1)?, commit: r.get(2)?, body: r.get(3)?, attempts: r.get(4)? }))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// `sink` is done with report `id`.
    pub fn handled(&self, sink: &str, id: i64, how: Handled) -> Result<(), HistoryError> {
        let (sent, failed) = match how {
            Handled::Sent => (1, 0),
            Handled::Rejected => (0, 1),
            Handled::Skipped => (0, 0),
        };
        self.conn
            .execute(
                "UPDATE sinks SET cursor = MAX(cursor, ?2), sent = sent + ?3, failed = failed + ?4, attempts = 0, last_error = NULL WHERE key = ?1",
                params![sink, id, sent, failed],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// `sink` could not be sent its head report: counted, kept at the head of its queue.
    pub fn sink_failed(&self, sink: &str, error: &str) -> Result<(), HistoryError> {
        self.conn
            .execute("UPDATE sinks SET failed = failed + 1, attempts = attempts + 1, last_error = ?2 WHERE key = ?1", params![sink, error])
            .map_err(self.err())?;
        Ok(())
    }

    /// Reports older than `OUTBOX_DAYS`: each sink still behind them counts the ones it wanted
    /// (`wants`) as dropped and moves past them; then they are deleted with the delivered
    /// ones. Also marks as delivered what every one of `sinks` is past. Returns the drops.
    pub fn expire(&self, now: std::time::SystemTime, sinks: &[String], wants: impl Fn(&str, &Outgoing) -> bool) -> Result<u64, HistoryError> {
        let cutoff = humantime::format_rfc3339_seconds(now - std::time::Duration::from_secs(OUTBOX_DAYS as u64 * 86_400)).to_string();
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let last_old: Option<i64> = tx.query_row("SELECT MAX(id) FROM outbox WHERE created_at < ?1", params![cutoff], |r| r.get(0)).map_err(self.err())?;
        let mut drops = 0;
        if let Some(last_old) = last_old {
            for s in sinks {
                let cursor: Option<i64> = tx.query_row("SELECT cursor FROM sinks WHERE key = ?1", params![s], |r| r.get(0)).optional().map_err(self.err())?;
                let Some(cursor) = cursor.filter(|c| *c < last_old) else { continue };
                let old = self.after(cursor, usize::MAX >> 1)?;
                let n = old.iter().filter(|o| o.id <= last_old && wants(s, o)).count() as u64;
                tx.execute("UPDATE sinks SET cursor = ?2, dropped = dropped + ?3, attempts = 0 WHERE key = ?1", params![s, last_old, n as i64])
                    .map_err(self.err())?;
                drops += n;
            }
            tx.execute("DELETE FROM outbox WHERE created_at < ?1", params![cutoff]).map_err(self.err())?;
        }
        if !sinks.is_empty() {
            let placeholders = vec!["?"; sinks.len()].join(",");
            let min: Option<i64> = tx
                .query_row(&format!("SELECT MIN(cursor) FROM sinks WHERE key IN ({placeholders})"), rusqlite::params_from_iter(sinks.iter()), |r| r.get(0))
                .map_err(self.err())?;
            if let Some(min) = min {
                tx.execute("UPDATE outbox SET delivered_at = ?2 WHERE id <= ?1 AND delivered_at IS NULL", params![min, crate::host::now_rfc3339()])
                    .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(drops)
    }

    /// What `sink` has done, with `queued` counted by `wants`.
    pub fn sink_counts(&self, sink: &str, wants: impl Fn(&Outgoing) -> bool) -> Result<SinkCounts, HistoryError> {
        let row = self
            .conn
            .query_row("SELECT cursor, sent, failed, dropped, attempts, last_error FROM sinks WHERE key = ?1", params![sink], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, Option<String>>(5)?))
            })
            .optional()
            .map_err(self.err())?;
        let Some((cursor, sent, failed, dropped, attempts, last_error)) = row else { return Ok(SinkCounts::default()) };
        let queued = self.after(cursor, 100_000)?.iter().filter(|o| wants(o)).count() as u64;
        Ok(SinkCounts { sent: sent as u64, failed: failed as u64, dropped: dropped as u64, queued, attempts: attempts as u64, last_error })
    }

    /// The unit's failing record, if its failure was reported and it has not recovered.
    pub fn failing(&self, unit: &str) -> Result<Option<Failing>, HistoryError> {
        self.conn
            .query_row("SELECT unit, agent, since, reported_at, folded, last_result, last_journal FROM failing WHERE unit = ?1", params![unit], row_failing)
            .optional()
            .map_err(self.err())
    }

    /// Every unit that failed and has not recovered.
    pub fn failing_units(&self) -> Result<Vec<Failing>, HistoryError> {
        let mut st =
            self.conn.prepare("SELECT unit, agent, since, reported_at, folded, last_result, last_journal FROM failing ORDER BY unit").map_err(self.err())?;
        let rows = st.query_map([], row_failing).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    pub fn set_failing(&self, f: &Failing) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO failing (unit, agent, since, reported_at, folded, last_result, last_journal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(unit) DO UPDATE SET agent = excluded.agent, reported_at = excluded.reported_at, folded = excluded.folded,
                   last_result = excluded.last_result, last_journal = excluded.last_journal",
                params![f.unit, f.agent, f.since, f.reported_at, f.folded, f.last_result, f.last_journal],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn clear_failing(&self, unit: &str) -> Result<bool, HistoryError> {
        Ok(self.conn.execute("DELETE FROM failing WHERE unit = ?1", params![unit]).map_err(self.err())? > 0)
    }

    /// One transaction for the reporter: `f` with the history, all or nothing (two reporters
    /// of the same unit never both decide it is the first failure).
    pub fn atomically<T>(&self, f: impl FnOnce(&History) -> Result<T, HistoryError>) -> Result<T, HistoryError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err())?;
        match f(self) {
            Ok(t) => {
                self.conn.execute_batch("COMMIT").map_err(self.err())?;
                Ok(t)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
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

fn row_failing(r: &rusqlite::Row) -> rusqlite::Result<Failing> {
    Ok(Failing {
        unit: r.get(0)?,
        agent: r.get(1)?,
        since: r.get(2)?,
        reported_at: r.get(3)?,
        folded: r.get(4)?,
        last_result: r.get(5)?,
        last_journal: r.get(6)?,
    })
}

/// What the daemon's history says of the branch, the last good commit, the pin, the gate and
/// the source, for `status` (None when no daemon ever ran on this state directory: the history
/// is not created to find that out).
pub fn deployment(state_dir: &Path) -> Result<Option<crate::host::status::Deployment>, HistoryError> {
    use crate::host::status::{Deployment, Head, PinInfo};
    if !StateLayout::new(state_dir).history().exists() {
        return Ok(None);
    }
    let h = History::open(state_dir)?;
    let head = match h.get_json("head")?.as_ref().and_then(|v| Some((v["commit"].as_str()?.to_string(), v["seenAt"].as_str().map(str::to_string)))) {
        Some((commit, seen_at)) => {
            let verdict = h.verdict_record(&commit)?;
            Some(Head { commit, seen_at, verdict: verdict.as_ref().map(|r| r.verdict.as_str().to_string()), reason: verdict.map(|r| r.reason) })
        }
        None => None,
    };
    Ok(Some(Deployment {
        head,
        last_good: h.last_good()?,
        pinned: h.pin_record()?.map(|p| PinInfo { commit: p.commit, force: p.force, at: p.at }),
        gate: h.get_json("gate")?,
        source: h.get_json("source")?,
    }))
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn row_verdict(r: &rusqlite::Row<'_>) -> rusqlite::Result<VerdictRecord> {
    Ok(VerdictRecord { id: r.get(0)?, commit: r.get(1)?, verdict: Verdict::parse(&r.get::<_, String>(2)?), reason: r.get(3)?, at: r.get(4)? })
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
            h.record(&Reconcile { started_at: format!("t{i}"), trigger: format!("poll{i}"), result: "unchanged".into(), ..Default::default() }).unwrap();
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

    #[test]
    fn repeated_no_ops_are_one_row_and_the_rows_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let poll = |i: usize, head: &str| Reconcile {
            started_at: format!("t{i}"),
            trigger: "poll".into(),
            head: Some(head.into()),
            applied: Some("c1".into()),
            result: "refused".into(),
            error: Some(format!("commit {head} is marked bad")),
            ..Default::default()
        };
        for i in 0..50 {
            h.record(&poll(i, "c2")).unwrap();
        }
        // Something done is a row of its own, and so is the next no-op after it.
        h.record(&Reconcile { started_at: "t50".into(), trigger: "poll".into(), result: "converged".into(), actions: 2, ..Default::default() }).unwrap();
        h.record(&poll(51, "c2")).unwrap();
        let rows = h.recent(10).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!((rows[2].repeats, rows[2].started_at.as_str(), rows[2].last_at.as_deref()), (50, "t0", Some("t49")));
        assert_eq!(rows[0].repeats, 1);
        // A year of reconciles that each did something stays bounded.
        for i in 0..(MAX_RECONCILES + 500) {
            h.record(&Reconcile { started_at: format!("u{i}"), trigger: "watch".into(), result: "converged".into(), actions: 1, ..Default::default() })
                .unwrap();
        }
        let kept = h.reconcile_rows().unwrap();
        assert!((MAX_RECONCILES..MAX_RECONCILES + 100).contains(&kept), "{kept} rows kept");
        // Verdicts are never pruned.
        h.mark("c0", Verdict::Good, "healthy", "t").unwrap();
        assert_eq!(h.verdicts(10).unwrap().len(), 1);
    }

    #[test]
    fn the_verdict_log_orders_good_commits_and_keeps_their_units() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let units: BTreeMap<String, String> = [("agent-web.service".to_string(), "aa".to_string())].into();
        h.record_verdict("c1", Verdict::Good, "healthy", "t1", Some(&units), None).unwrap();
        h.mark("c2", Verdict::Good, "healthy", "t1").unwrap();
        h.mark("c3", Verdict::Bad, "crash", "t1").unwrap();
        assert_eq!(h.good_before(Some("c2")).unwrap().as_deref(), Some("c1"));
        assert_eq!(h.good_before(Some("c1")).unwrap().as_deref(), Some("c2"));
        assert_eq!(h.good_before(None).unwrap().as_deref(), Some("c2"));
        // c1 passes again (a pin): it is now the most recent good commit before c2.
        h.mark("c1", Verdict::Good, "healthy", "t2").unwrap();
        assert_eq!(h.good_before(Some("c2")).unwrap().as_deref(), Some("c1"));
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
        assert_eq!(h.snapshot("c1").unwrap(), Some(units));
        assert_eq!(h.snapshot("c2").unwrap(), None);
        // The pin knows which verdicts came after it.
        h.set_pin_with(Some("c3"), true, Some("t3")).unwrap();
        let pin = h.pin_record().unwrap().unwrap();
        assert!(pin.force);
        assert!(!h.verdict_since("c3", pin.seq).unwrap());
        h.mark("c3", Verdict::Bad, "crash again", "t4").unwrap();
        assert!(h.verdict_since("c3", pin.seq).unwrap());
        h.set_pin_with(None, true, None).unwrap();
        assert_eq!(h.pin_record().unwrap(), None);
        assert_eq!(h.commits_starting_with("c").unwrap().len(), 3);
    }

    #[test]
    fn an_event_is_queued_once_per_commit_and_kept_until_every_sink_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        h.ensure_sink("webhook:a").unwrap();
        h.record_verdict("c1", Verdict::Held, "check", "2020-01-01T00:00:00Z", None, Some(("held", "{}"))).unwrap();
        h.record_verdict("c1", Verdict::Held, "check again", "2020-01-01T00:00:01Z", None, Some(("held", "{}"))).unwrap();
        h.record_verdict("c1", Verdict::Good, "healthy", "2020-01-01T00:00:02Z", None, Some(("deployed", "{}"))).unwrap();
        let out = h.after(h.ensure_sink("webhook:a").unwrap(), 10).unwrap();
        assert_eq!(out.iter().map(|o| o.event.as_str()).collect::<Vec<_>>(), ["held", "deployed"]);
        h.sink_failed("webhook:a", "connection refused").unwrap();
        // Reopened (a daemon restart): the sink is still before both, and has failed once.
        drop(h);
        let h = History::open(dir.path()).unwrap();
        let c = h.sink_counts("webhook:a", |_| true).unwrap();
        assert_eq!((c.queued, c.failed, c.attempts, c.last_error.as_deref()), (2, 1, 1, Some("connection refused")));
        h.handled("webhook:a", out[0].id, Handled::Sent).unwrap();
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800 + 60);
        h.expire(now, &["webhook:a".to_string()], |_, _| true).unwrap();
        assert_eq!(h.events_of("c1").unwrap(), [("held".to_string(), true), ("deployed".to_string(), false)]);
        // A week later: the one the sink never got is dropped for it, counted, and both are gone.
        let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800 + 8 * 86_400);
        assert_eq!(h.expire(later, &["webhook:a".to_string()], |_, _| true).unwrap(), 1);
        assert!(h.events_of("c1").unwrap().is_empty());
        let c = h.sink_counts("webhook:a", |_| true).unwrap();
        assert_eq!((c.queued, c.sent, c.dropped), (0, 1, 1));
    }

    #[test]
    fn a_history_of_the_first_version_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("history.sqlite")).unwrap();
            c.execute_batch(
                "CREATE TABLE reconciles (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, duration_ms INTEGER NOT NULL, trigger TEXT NOT NULL,
                    head TEXT, applied TEXT, result TEXT NOT NULL, actions INTEGER NOT NULL, drift TEXT, error TEXT);
                 CREATE TABLE commits (commit_id TEXT PRIMARY KEY, verdict TEXT NOT NULL, reason TEXT, at TEXT NOT NULL);
                 CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO reconciles (started_at, duration_ms, trigger, result, actions) VALUES ('t0', 1, 'startup', 'converged', 3);
                 INSERT INTO commits VALUES ('c1', 'good', 'healthy', '2020-01-01T00:00:00Z'), ('c2', 'bad', 'crash', '2020-01-02T00:00:00Z');
                 INSERT INTO settings VALUES ('last_good', 'c1');",
            )
            .unwrap();
        }
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.recent(1).unwrap()[0].repeats, 1);
        assert_eq!(h.verdict("c2").unwrap(), Some((Verdict::Bad, "crash".into())));
        assert_eq!(h.good_before(None).unwrap().as_deref(), Some("c1"));
        assert_eq!(h.last_good().unwrap().as_deref(), Some("c1"));
    }

    /// An outbox from before per-sink delivery: what its --notify-url was never sent, however
    /// old, goes to the first sink; a sink added later starts at the last hour.
    #[test]
    fn what_an_older_version_had_not_sent_is_owed_to_the_first_sink() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("history.sqlite")).unwrap();
            c.execute_batch(
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY, event TEXT NOT NULL, commit_id TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, delivered_at TEXT, last_error TEXT, UNIQUE (event, commit_id));
                 INSERT INTO outbox (event, commit_id, body, created_at, delivered_at) VALUES ('deployed', 'c1', '{}', '2020-01-01T00:00:00Z', '2020-01-01T00:00:01Z');
                 INSERT INTO outbox (event, commit_id, body, created_at) VALUES ('rolled-back', 'c2', '{}', '2020-01-02T00:00:00Z');",
            )
            .unwrap();
        }
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.ensure_sink("webhook:http://h/hook").unwrap(), 1, "c2's event is still owed");
        assert_eq!(h.ensure_sink("slack:http://h/slack").unwrap(), 2, "a later sink does not get old history");
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
