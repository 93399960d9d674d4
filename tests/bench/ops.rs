//! The day-two engines against the tools an operator would otherwise use, as the rendered units
//! run them: the `fleetwright backup` command against `sqlite3 DB ".backup FILE"`, and the
//! `fleetwright logs-clean` command against `find -delete`. Neither needs systemd: they run on the
//! machine itself, in a directory under the target directory (a real disk, not tmpfs), each
//! timed from spawn to exit, alternating which goes first, with `sync` and a pause before
//! every timed run so that neither pays for the other's dirty pages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::host::{bin, timed};
use crate::report::{Table, dur, median, runs};

/// What one ops scenario measured: table rows, and checks (what, held?, detail).
pub struct Ops {
    pub rows: Vec<Vec<String>>,
    pub checks: Vec<(String, bool, String)>,
}

impl Ops {
    fn new() -> Ops {
        Ops { rows: vec![], checks: vec![] }
    }
    fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (what, detail) = (what.into(), detail.into());
        eprintln!("    check [{}] {what}{}", crate::report::verdict(ok), if detail.is_empty() { String::new() } else { format!(": {detail}") });
        self.checks.push((what, ok, detail));
    }
    /// A row comparing fleetwright's runs with the baseline's, ratio of the medians.
    fn row(&mut self, label: &str, ours: &[Duration], base: &[Duration], target: Option<f64>) {
        let r = match (median(ours), median(base)) {
            (Some(o), Some(b)) if !b.is_zero() => crate::report::ratio(Some(o.as_secs_f64()), Some(b.as_secs_f64()), target),
            _ => "—".into(),
        };
        let t = target.map(|t| format!("≤ {t}×")).unwrap_or_default();
        self.rows.push(vec![label.to_string(), runs(ours), runs(base), r, t]);
    }
    fn skipped(&mut self, label: &str, why: &str) {
        self.rows.push(vec![label.to_string(), format!("skipped: {why}"), "—".into(), "—".into(), String::new()]);
    }
}

pub fn table(parts: &[Ops]) -> Table {
    let header = ["scenario", "fleetwright (median, min–max)", "baseline (median, min–max)", "fleetwright / baseline", "target"].map(String::from).to_vec();
    Table { header, rows: parts.iter().flat_map(|p| p.rows.iter().cloned()).collect() }
}

fn rounds() -> usize {
    std::env::var("FLEETWRIGHT_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5).max(1)
}

/// Write back dirty pages and let the disk settle before a timed run.
fn settle() {
    nix::unistd::sync();
    std::thread::sleep(Duration::from_millis(500));
}

fn workdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("bench-{tag}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a bench directory")
}

/// Run `a` and `b` `rounds()` times each, alternating which goes first; their times.
fn alternate(mut a: impl FnMut(usize) -> Option<Duration>, mut b: impl FnMut(usize) -> Option<Duration>) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ra, mut rb) = (vec![], vec![]);
    for round in 0..rounds() {
        let (x, y) = if round % 2 == 0 {
            let x = a(round);
            (x, b(round))
        } else {
            let y = b(round);
            (a(round), y)
        };
        ra.extend(x);
        rb.extend(y);
    }
    (ra, rb)
}

fn sqlite3_cli() -> Option<PathBuf> {
    ["/usr/bin/sqlite3", "/usr/local/bin/sqlite3"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// `sqlite3 DB SQL` → its stdout, trimmed.
fn sql(cli: &Path, db: &Path, sql: &str) -> String {
    let o = Command::new(cli).arg(db).arg(sql).stdin(Stdio::null()).output().expect("run sqlite3");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A backup of a `mib` MiB database (rows of 3 900 random bytes): `fleetwright backup` against
/// `sqlite3 DB ".backup FILE"`, for a rollback-journal and a WAL database, and once with
/// `--verify` (integrity check) for what that costs.
pub fn backup(mib: u64) -> Ops {
    let mut ops = Ops::new();
    let label = format!("backup of a {mib} MiB SQLite database");
    let Some(cli) = sqlite3_cli() else {
        ops.skipped(&label, "no sqlite3 command (apt-get install sqlite3)");
        return ops;
    };
    eprintln!("\n== backup: {mib} MiB");
    let dir = workdir("backup");
    let db = dir.path().join("live.db");
    let t = Instant::now();
    {
        let c = rusqlite::Connection::open(&db).expect("open the source database");
        c.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);").expect("create");
        c.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < ?1) INSERT INTO t(id, v) SELECT x, randomblob(3900) FROM n",
            [(mib * 1024 * 1024 / 4096) as i64],
        )
        .expect("fill");
        c.execute_batch("PRAGMA journal_mode=DELETE").expect("journal mode");
    }
    let size = std::fs::metadata(&db).expect("source size").len();
    let rows = sql(&cli, &db, "SELECT count(*) FROM t");
    eprintln!("  source: {size} bytes, {rows} rows, built in {}", dur(t.elapsed()));

    for mode in ["delete", "wal"] {
        if mode == "wal" {
            sql(&cli, &db, "PRAGMA journal_mode=WAL");
        }
        let ours_dir = |round: usize| dir.path().join(format!("ours-{mode}-{round}"));
        let mut checked = false;
        let mut ours = |round: usize| {
            let to = ours_dir(round);
            settle();
            let mut c = Command::new(bin());
            c.args(["backup", "--keep-last", "1", "--sqlite"]).arg(&db).arg("--to").arg(&to);
            let t = timed(c, Duration::from_secs(1800));
            let file = std::fs::read_dir(&to)
                .ok()
                .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sqlite" || x == "db"))));
            if !checked {
                checked = true;
                let ok =
                    t.ok() && file.as_ref().is_some_and(|f| sql(&cli, f, "PRAGMA integrity_check") == "ok" && sql(&cli, f, "SELECT count(*) FROM t") == rows);
                ops.check(
                    format!("backup ({mode}): exit 0, the backup passes integrity_check and holds all {rows} rows"),
                    ok,
                    format!("{}; file {file:?}", t.why()),
                );
            }
            let _ = std::fs::remove_dir_all(&to);
            t.ok().then_some(t.took)
        };
        let base = |round: usize| {
            let to = dir.path().join(format!("cli-{mode}-{round}.db"));
            settle();
            let mut c = Command::new(&cli);
            c.arg(&db).arg(format!(".backup {}", to.display()));
            let t = timed(c, Duration::from_secs(1800));
            let _ = std::fs::remove_file(&to);
            t.ok().then_some(t.took)
        };
        // An untimed warm-up of each: the first big write after building the source is slow
        // for whoever goes first.
        let (_, _) = (ours(usize::MAX - 1), base(usize::MAX - 1));
        let (o, b) = alternate(&mut ours, base);
        eprintln!("  {mode}: fleetwright backup {}, sqlite3 .backup {}", runs(&o), runs(&b));
        ops.row(&format!("{label} ({mode} journal) vs `sqlite3 .backup`"), &o, &b, Some(1.1));
    }
    // The cost of `verify: true` (PRAGMA integrity_check of the copy before it counts).
    let mut verified = vec![];
    for round in 0..rounds().min(3) {
        let to = dir.path().join(format!("verify-{round}"));
        settle();
        let mut c = Command::new(bin());
        c.args(["backup", "--verify", "--keep-last", "1", "--sqlite"]).arg(&db).arg("--to").arg(&to);
        let t = timed(c, Duration::from_secs(1800));
        if t.ok() {
            verified.push(t.took);
        } else {
            ops.check("backup --verify: exit 0", false, t.why());
        }
        let _ = std::fs::remove_dir_all(&to);
    }
    let mut plain = vec![];
    for round in 0..rounds().min(3) {
        let to = dir.path().join(format!("plain-{round}"));
        settle();
        let mut c = Command::new(bin());
        c.args(["backup", "--keep-last", "1", "--sqlite"]).arg(&db).arg("--to").arg(&to);
        let t = timed(c, Duration::from_secs(1800));
        plain.extend(t.ok().then_some(t.took));
        let _ = std::fs::remove_dir_all(&to);
    }
    eprintln!("  wal: --verify {}, without {}", runs(&verified), runs(&plain));
    ops.row(&format!("{label} (wal): `--verify` vs without"), &verified, &plain, None);
    ops
}

/// Set a file's access and modification times to `t`, not following a symlink.
fn set_mtime(path: &Path, t: SystemTime) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970");
    let ts = nix::sys::time::TimeSpec::new(d.as_secs() as i64, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink).expect("utimensat");
}

/// `files` log files of 16 bytes, 30 days old, spread over `groups` directories
/// `ROOT/gNNN/logs/` (one group: `ROOT/g000/logs/`).
fn log_tree(root: &Path, files: usize, groups: usize) {
    let old = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let per = files.div_ceil(groups);
    for g in 0..groups {
        let dir = root.join(format!("g{g:03}/logs"));
        std::fs::create_dir_all(&dir).expect("a log directory");
        for i in 0..per.min(files - g * per) {
            let p = dir.join(format!("agent-{i:06}.log"));
            std::fs::write(&p, b"0123456789abcdef").expect("a log file");
            set_mtime(&p, old);
        }
    }
}

/// Regular files left under `root`.
fn files_left(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Retention over `files` files older than `maxAge`: `fleetwright logs-clean --max-age 14d`
/// against `find … -type f -mtime +14 -delete`, in one directory and over 100 directories
/// matched by a `*` level. Both remove every file; each round builds two identical trees.
pub fn retention(files: usize) -> Ops {
    let mut ops = Ops::new();
    eprintln!("\n== retention: {files} files");
    let dir = workdir("retention");
    for groups in [1, 100] {
        let mut checked = false;
        let tree = |who: &str, round: usize| -> PathBuf {
            let root = dir.path().join(format!("{who}-{groups}-{round}"));
            log_tree(&root, files, groups);
            root
        };
        let mut ours = |round: usize| {
            let root = tree("ours", round);
            let path = if groups == 1 { root.join("g000/logs") } else { root.join("*/logs") };
            settle();
            let mut c = Command::new(bin());
            c.args(["logs-clean", "--max-age", "14d", "--path"]).arg(&path);
            let t = timed(c, Duration::from_secs(1800));
            let left = files_left(&root);
            if !checked || !t.ok() || left != 0 {
                checked = true;
                let summary = t.stdout().lines().last().unwrap_or("").to_string();
                ops.check(
                    format!(
                        "logs-clean over {files} files in {groups} director{}: exit 0, every file removed and reported",
                        if groups == 1 { "y" } else { "ies" }
                    ),
                    t.ok() && left == 0 && summary.contains(&format!("removed {files} files")),
                    format!("{}; {left} left; {summary}", t.why()),
                );
            }
            let _ = std::fs::remove_dir_all(&root);
            t.ok().then_some(t.took)
        };
        let base = |round: usize| {
            let root = tree("find", round);
            settle();
            let mut c = Command::new("find");
            if groups == 1 {
                c.arg(root.join("g000/logs")).args(["-mindepth", "1", "-maxdepth", "1"]);
            } else {
                c.arg(&root).args(["-mindepth", "3", "-maxdepth", "3", "-path"]).arg(root.join("*/logs/*"));
            }
            c.args(["-type", "f", "-mtime", "+14", "-delete"]);
            let t = timed(c, Duration::from_secs(1800));
            let left = files_left(&root);
            let _ = std::fs::remove_dir_all(&root);
            (t.ok() && left == 0).then_some(t.took)
        };
        let (o, b) = alternate(&mut ours, base);
        eprintln!("  {groups} dir(s): logs-clean {}, find -delete {}", runs(&o), runs(&b));
        let label = if groups == 1 {
            format!("retention: {files} files in one directory vs `find -delete`")
        } else {
            format!("retention: {files} files in {groups} directories (`*/logs`) vs `find -delete`")
        };
        ops.row(&label, &o, &b, Some(1.5));
    }
    ops
}
