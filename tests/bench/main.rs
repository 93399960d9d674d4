//! The benchmark harness (issue 6): fleetwright against a real systemd, at N = 100, 1000 and
//! 5000 agents, next to systemd's own floor for the same work and a naive per-unit script.
//!
//! Does nothing unless `FLEETWRIGHT_BENCH=1` (`cargo test` runs every test target in CI):
//!
//!     FLEETWRIGHT_BENCH=1 cargo test --release --test bench
//!
//! `FLEETWRIGHT_BENCH_N=100,1000` picks the fleet sizes (default `100,1000,5000`), and
//! `FLEETWRIGHT_BENCH_LIMIT=SECONDS` the time after which a scenario is stopped (default 300);
//! `FLEETWRIGHT_BENCH_LABEL` is printed with the build (to say what tree was measured).
//!
//! For each N, in fresh sandboxes (`fleetwright-sandbox`, booted one after the other, never side by
//! side, so that they do not compete for the CPU):
//!
//! * A — fleetwright: cold apply; the same commit again (5 runs, checked: no file written, no
//!   daemon-reload, no restart); `plan` on the converged host; one agent changed (checked: only
//!   its files written); every agent removed (`--allow-empty`); then the daemon: startup converge
//!   of the whole fleet again, commit → converged latency (3 commits), and its memory and CPU
//!   over 10 s idle. The sandbox's shutdown ends the daemon.
//! * B — systemd's floor: the very files fleetwright wrote in A, written straight into the unit
//!   directory, one `systemctl daemon-reload`, one `systemctl start` of every unit fleetwright
//!   starts; then, timed apart, one `systemctl --no-reload enable` of the same units (fleetwright
//!   enables them too).
//! * C — the naive script (N ≤ 1000): per agent, copy its files, `systemctl daemon-reload`,
//!   `systemctl start` (what fetchit does per unit).
//! * D — the day-two engines (`ops.rs`, no systemd): `fleetwright backup` of a 1 GiB SQLite database
//!   against `sqlite3 .backup`, and `fleetwright logs-clean` over 100 000 files against
//!   `find -delete` (`FLEETWRIGHT_BENCH_BACKUP_MIB`, `FLEETWRIGHT_BENCH_FILES`,
//!   `FLEETWRIGHT_BENCH_ROUNDS` change the sizes and the repetitions).
//!
//! `FLEETWRIGHT_BENCH_ONLY=fleet,backup,retention` picks the parts (default: all three);
//! `daemon` instead of `fleet` runs only A's daemon part (startup converge from nothing, the
//! commits, the idle memory and CPU) at each N, with `FLEETWRIGHT_BENCH_DAEMON_RUNS` fresh
//! sandboxes one after the other (default 1): the idle memory varies from run to run, and
//! comparing two builds' takes several runs of each. `cold` instead of `fleet` runs only the
//! cold apply and the floor, `FLEETWRIGHT_BENCH_COLD_REPS` times each, alternated (default 3
//! up to N=1000, 1 above). `FLEETWRIGHT_BENCH_BIN` measures another fleetwright binary (say, a
//! build of an older commit) with this harness; `FLEETWRIGHT_BENCH_PHASES=1` prints the cold
//! apply's own phase timings.
//! The results go to stdout as an aligned table and as Markdown (docs/performance.md holds a run).

mod fleet;
mod host;
mod ops;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet::{Kind, Repo};
use host::{Host, STATE_DIR, UNIT_DIR, timed};
use report::{M, Table, dur, median, ratio, runs, verdict};

/// A scenario that runs longer than this is stopped and reported as skipped: 300 s, or
/// `FLEETWRIGHT_BENCH_LIMIT` seconds.
fn limit() -> Duration {
    static LIMIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| Duration::from_secs(std::env::var("FLEETWRIGHT_BENCH_LIMIT").ok().and_then(|s| s.parse().ok()).unwrap_or(300)))
}
/// How often "the same commit again" runs (median reported).
const AGAIN_RUNS: usize = 5;
/// Repeated measurements stop repeating once they have taken this long (at N=5000 one run of
/// some of them takes a minute).
const REPEAT_BUDGET: Duration = Duration::from_secs(60);
/// How many commits the daemon's commit → converged latency is measured over.
const DAEMON_COMMITS: usize = 3;
/// How long the daemon is left idle before its memory and CPU are read.
const IDLE: Duration = Duration::from_secs(10);
/// Cold apply and floor are repeated (fresh sandboxes, alternated) this often up to REPS_MAX_N.
const COLD_REPS: usize = 3;
const REPS_MAX_N: usize = 1000;
/// The naive script runs only up to this N (its daemon-reload per agent makes it quadratic).
const NAIVE_MAX: usize = 1000;

/// Everything measured at one N.
struct Run {
    n: usize,
    files: usize,
    started: usize,
    nsenter: Duration,
    render: Vec<Duration>,
    cold: M,
    /// Every successful cold apply (one per repetition, each in a fresh sandbox).
    cold_runs: Vec<Duration>,
    /// Every floor repetition: (write, daemon-reload, start, enable).
    floor_runs: Vec<[Duration; 4]>,
    again: Vec<Duration>,
    plan: Vec<Duration>,
    changed: M,
    /// systemd's own cost of a change with the fleet running: `systemctl daemon-reload` and a
    /// `systemctl restart` of the changed service (each repetition).
    change_floor: Vec<Duration>,
    removed: M,
    floor_write: M,
    floor_reload: M,
    floor_start: M,
    floor_enable: M,
    naive: M,
    daemon_startup: M,
    daemon_marker: Vec<Duration>,
    daemon_recorded: Vec<Duration>,
    daemon_reconcile_ms: Vec<i64>,
    /// How many reconciles each commit caused.
    daemon_reconciles: Vec<usize>,
    rss_kb: Option<u64>,
    hwm_kb: Option<u64>,
    idle_cpu: Option<Duration>,
    idle_reconciles: Option<usize>,
    /// (what was checked, held?, detail)
    checks: Vec<(String, bool, String)>,
    /// Observations worth reporting that are not checks.
    notes: Vec<String>,
}

impl Run {
    fn new(n: usize) -> Run {
        let skip = || M::Skipped("not reached".into());
        Run {
            n,
            files: (0..n).map(|i| fleet::unit_files(i).len()).sum(),
            started: n,
            nsenter: Duration::ZERO,
            render: vec![],
            cold: skip(),
            cold_runs: vec![],
            floor_runs: vec![],
            again: vec![],
            plan: vec![],
            changed: skip(),
            change_floor: vec![],
            removed: skip(),
            floor_write: skip(),
            floor_reload: skip(),
            floor_start: skip(),
            floor_enable: skip(),
            naive: skip(),
            daemon_startup: skip(),
            daemon_marker: vec![],
            daemon_recorded: vec![],
            daemon_reconcile_ms: vec![],
            daemon_reconciles: vec![],
            rss_kb: None,
            hwm_kb: None,
            idle_cpu: None,
            idle_reconciles: None,
            checks: vec![],
            notes: vec![],
        }
    }
    fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (what, detail) = (what.into(), detail.into());
        eprintln!("    check [{}] {what}{}", verdict(ok), if detail.is_empty() { String::new() } else { format!(": {detail}") });
        self.checks.push((what, ok, detail));
    }
    fn note(&mut self, what: String) {
        eprintln!("    note: {what}");
        self.notes.push(what);
    }
    /// Median of the floor's totals (write + daemon-reload + start).
    fn floor(&self) -> Option<f64> {
        median(&self.floor_runs.iter().map(|f| f[0] + f[1] + f[2]).collect::<Vec<_>>()).map(|d| d.as_secs_f64())
    }
    /// Median of the floor's totals with the enable call.
    fn floor_enable(&self) -> Option<f64> {
        median(&self.floor_runs.iter().map(|f| f[0] + f[1] + f[2] + f[3]).collect::<Vec<_>>()).map(|d| d.as_secs_f64())
    }
}

fn main() {
    if std::env::var("FLEETWRIGHT_BENCH").as_deref() != Ok("1") {
        println!("bench: skipped (it boots systemd and takes minutes); run it with: FLEETWRIGHT_BENCH=1 cargo test --release --test bench");
        return;
    }
    let only = std::env::var("FLEETWRIGHT_BENCH_ONLY").unwrap_or_else(|_| "fleet,backup,retention".into());
    let only: BTreeSet<&str> = only.split(',').map(str::trim).collect();
    if let Some(bad) = only.iter().find(|s| !["fleet", "cold", "daemon", "backup", "retention"].contains(s)) {
        eprintln!("bench: FLEETWRIGHT_BENCH_ONLY: unknown scenario {bad:?} (fleet, cold, daemon, backup, retention)");
        std::process::exit(2);
    }
    let daemon_only = only.contains("daemon") && !only.contains("fleet");
    let cold_only = only.contains("cold") && !only.contains("fleet");
    if (only.contains("fleet") || daemon_only || cold_only) && !fleetwright_sandbox::Sandbox::available() {
        eprintln!("bench: the sandbox needs root, /lib/systemd/systemd, unshare, nsenter and a cgroup2 mount");
        std::process::exit(1);
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: a debug build; the numbers mean little (use --release)");
    }
    let env_usize = |key: &str, default: &str| -> Vec<usize> {
        std::env::var(key)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{key}: comma-separated numbers")))
            .collect()
    };
    let sizes = if only.contains("fleet") || daemon_only || cold_only { env_usize("FLEETWRIGHT_BENCH_N", "100,1000,5000") } else { vec![] };

    let started = Instant::now();
    let load_start = loadavg();
    let machine = machine();
    eprintln!("{machine}");
    let mut results = Vec::new();
    for &n in &sizes {
        if daemon_only {
            for _ in 0..env_usize("FLEETWRIGHT_BENCH_DAEMON_RUNS", "1")[0].max(1) {
                results.push(bench_daemon(n));
            }
            continue;
        }
        let naive_projection = naive_projection(&results, n);
        results.push(bench(n, naive_projection, cold_only));
    }
    let mut day_two = Vec::new();
    if only.contains("backup") {
        day_two.push(ops::backup(env_usize("FLEETWRIGHT_BENCH_BACKUP_MIB", "1024")[0] as u64));
    }
    if only.contains("retention") {
        day_two.push(ops::retention(env_usize("FLEETWRIGHT_BENCH_FILES", "100000")[0]));
    }
    let total = started.elapsed();
    let load_end = loadavg();

    let table = table(&results);
    let ops_table = ops::table(&day_two);
    let ops_checks: Vec<&(String, bool, String)> = day_two.iter().flat_map(|o| &o.checks).collect();
    let mut out = String::new();
    writeln!(out, "fleetwright benchmark — {}", machine.lines().next().unwrap_or("")).unwrap();
    writeln!(out, "{machine}\n").unwrap();
    if !results.is_empty() {
        out += &table.text();
        out += "\n";
    }
    if !day_two.is_empty() {
        out += &ops_table.text();
        out += "\n";
    }
    out += &checks_text(&results, &ops_checks);
    writeln!(out, "\ntotal benchmark time: {}; load average (1/5/15 min) at the start {load_start}, at the end {load_end}", dur(total)).unwrap();
    writeln!(out, "\n--- Markdown ---\n").unwrap();
    writeln!(out, "{}", machine.lines().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")).unwrap();
    writeln!(out).unwrap();
    if !results.is_empty() {
        out += &table.markdown();
        out += "\n";
    }
    if !day_two.is_empty() {
        out += &ops_table.markdown();
        out += "\n";
    }
    out += &checks_markdown(&results, &ops_checks);
    writeln!(out, "\nTotal benchmark time: {}; load average (1/5/15 min) at the start {load_start}, at the end {load_end}.", dur(total)).unwrap();
    print!("{out}");
    let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-results.txt");
    if std::fs::write(&saved, &out).is_ok() {
        eprintln!("(also written to {})", saved.display());
    }
}

/// The machine's load average (other work on the machine skews every number).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One line per fact about the machine and the build.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kb: u64 =
        read("/proc/meminfo").lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())).unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let systemd = std::process::Command::new(fleetwright_sandbox::SYSTEMD)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into());
    let dbus = std::process::Command::new("dbus-daemon")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into());
    let head = git2::Repository::open(env!("CARGO_MANIFEST_DIR"))
        .ok()
        .and_then(|r| {
            let id = r.head().ok()?.peel_to_commit().ok()?.id().to_string();
            let dirty = r.statuses(Some(git2::StatusOptions::new().include_untracked(false))).map(|s| !s.is_empty()).unwrap_or(false);
            Some(format!("{}{}", &id[..12], if dirty { " (+ uncommitted changes)" } else { "" }))
        })
        .unwrap_or_else(|| "not a git checkout".into());
    let mut label = std::env::var("FLEETWRIGHT_BENCH_LABEL").map(|l| format!(" — {l}")).unwrap_or_default();
    if let Ok(other) = std::env::var("FLEETWRIGHT_BENCH_BIN") {
        label.push_str(&format!(" — the binary measured: {other} (FLEETWRIGHT_BENCH_BIN), not this tree's"));
    }
    format!(
        "machine: {nproc} CPUs ({cpu}), {:.1} GiB memory, kernel {kernel}\nsystemd: {systemd}; {dbus}\nfleetwright: {head}, {} build{label}",
        mem_kb as f64 / 1024.0 / 1024.0,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    )
}

/// The naive script is quadratic: above NAIVE_MAX, project it from the largest N measured.
fn naive_projection(done: &[Run], n: usize) -> Option<String> {
    if n <= NAIVE_MAX {
        return None;
    }
    let (m, s) = done.iter().filter_map(|r| r.naive.secs().map(|s| (r.n, s))).max_by_key(|(m, _)| *m)?;
    let f = n as f64 / m as f64;
    Some(format!("not run above N={NAIVE_MAX} (quadratic); ≈ {} projected from N={m} × {f:.0}²", dur(Duration::from_secs_f64(s * f * f))))
}

/// A's and B's cold work, and with `cold_only` nothing else (`FLEETWRIGHT_BENCH_ONLY=cold`).
fn bench(n: usize, naive_projection: Option<String>, cold_only: bool) -> Run {
    let mut r = Run::new(n);
    eprintln!("\n== N = {n}: {} unit files, {} units to start", r.files, r.started);
    let repo = Repo::new(&format!("n{n}"));
    let t = Instant::now();
    let base = fleet::files(n, &BTreeMap::new());
    repo.commit(&base, &format!("{n} agents"));
    eprintln!("  repository: {} files committed in {}", base.len(), dur(t.elapsed()));

    // Cold apply and floor, alternated, each in a fresh sandbox (the machine's load changes
    // over a run: alternating keeps the ratio fair). The last fleetwright sandbox goes on with
    // the other scenarios.
    let reps = match std::env::var("FLEETWRIGHT_BENCH_COLD_REPS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(r) => r.max(1),
        None if n <= REPS_MAX_N => COLD_REPS,
        None => 1,
    };
    let mut rendered = BTreeMap::new();
    for rep in 0..reps {
        let last = rep + 1 == reps;
        // A: fleetwright. The reload probe's first arming reloads: do it before anything is timed.
        let a = Host::boot();
        a.arm_reload_probe();
        if rep == 0 {
            r.nsenter = median(
                &(0..5)
                    .map(|_| {
                        let mut c = a.sb.command("/bin/true");
                        c.stdin(Stdio::null());
                        timed(c, limit()).took
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default();
            // `render` (no systemd): timed, and its output is what the floor and the naive
            // script write (checked against what the cold apply writes).
            for _ in 0..3 {
                let t = a.fw(&["render", "--repo", repo.path_str()], limit());
                if !t.ok() {
                    r.check("render", false, t.why());
                    break;
                }
                r.render.push(t.took);
                rendered = parse_render(&t.stdout());
            }
            eprintln!("  render: {}", runs(&r.render));
            r.check(format!("N={n} render printed {} unit files", r.files), rendered.len() == r.files, format!("{} printed", rendered.len()));
        }
        let ok = cold_apply(&mut r, &a, &repo, &rendered, rep);
        if ok && last && !cold_only {
            scenarios_fleetwright(&mut r, &a, &repo);
        }
        a.shutdown();
        // B: systemd's floor, with the very files fleetwright writes.
        floor(&mut r, &rendered, rep);
        if !ok {
            break;
        }
    }
    if r.cold_runs.len() == reps {
        r.cold = M::Took(median(&r.cold_runs).expect("a run"));
    }
    let phase = |i: usize| median(&r.floor_runs.iter().map(|f| f[i]).collect::<Vec<_>>());
    if !r.floor_runs.is_empty() {
        r.floor_write = M::Took(phase(0).expect("a run"));
        r.floor_reload = M::Took(phase(1).expect("a run"));
        r.floor_start = M::Took(phase(2).expect("a run"));
        r.floor_enable = M::Took(phase(3).expect("a run"));
    }

    // C: the naive script.
    r.naive = match naive_projection {
        _ if cold_only => M::Skipped("not run (FLEETWRIGHT_BENCH_ONLY=cold)".into()),
        Some(why) => M::Skipped(why),
        None => naive(&mut r, &rendered),
    };
    r
}

/// Only the daemon part of A, in a fresh sandbox with nothing applied: its startup converge
/// is a cold one.
fn bench_daemon(n: usize) -> Run {
    let mut r = Run::new(n);
    eprintln!("\n== N = {n}, the daemon only: {} unit files, {} units to start", r.files, r.started);
    let repo = Repo::new(&format!("n{n}"));
    let mut variants = BTreeMap::new();
    repo.commit(&fleet::files(n, &variants), &format!("{n} agents"));
    let a = Host::boot();
    daemon(&mut r, &a, &repo, &mut variants);
    a.shutdown();
    r
}

/// `render`'s output: `### NAME` then the file, then an empty line.
fn parse_render(out: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for chunk in out.split("### ").skip(1) {
        if let Some((name, body)) = chunk.split_once('\n') {
            files.insert(name.trim().to_string(), body.strip_suffix('\n').unwrap_or(body).as_bytes().to_vec());
        }
    }
    files
}

/// The units fleetwright starts at N, in agent order.
fn started_units(n: usize) -> Vec<String> {
    (0..n).map(fleet::started_unit).collect()
}

/// About 50 of the started units, evenly spread, for InvocationID comparisons.
fn sample(n: usize) -> Vec<String> {
    let step = (n / 50).max(1);
    (0..n).step_by(step).map(fleet::started_unit).collect()
}

/// The first long-running agent at or after `i`.
fn service_at(n: usize, mut i: usize) -> usize {
    while fleet::kind(i % n) != Kind::Service {
        i += 1;
    }
    i % n
}

/// A cold apply in a fresh sandbox; whether it converged. Checks are recorded for the first
/// repetition, and for any that fails.
fn cold_apply(r: &mut Run, a: &Host, repo: &Repo, rendered: &BTreeMap<String, Vec<u8>>, rep: usize) -> bool {
    let n = r.n;
    let want: BTreeSet<String> = started_units(n).into_iter().collect();
    let t = a.fw(&["apply", "--repo", repo.path_str()], limit());
    eprintln!("  cold apply #{}: {} (exit {:?})", rep + 1, dur(t.took), t.code());
    if host::phases()
        && let Some(o) = &t.out
    {
        // The phase lines (`… ms=N`), without the timestamp and level.
        for l in String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.contains(" ms=") || l.contains(" us=")) {
            eprintln!("    phase: {}", l.split_once(" DEBUG ").map_or(l, |(_, rest)| rest));
        }
    }
    if t.out.is_none() {
        r.cold = M::Skipped(format!("did not finish within {} s", limit().as_secs()));
        let jobs = a.systemctl(&["list-jobs", "--no-legend"]).lines().count();
        let active = a.units_in("active").len();
        r.check(
            format!("N={n} cold apply finishes"),
            false,
            format!(
                "stopped after {} s; by then {active} of {} agent-* timers and services were active and the manager had {jobs} jobs queued",
                limit().as_secs(),
                want.len()
            ),
        );
        return false;
    }
    let active = a.units_in("active");
    let missing = want.difference(&active).count();
    let failed = a.units_in("failed");
    let ok = t.ok() && missing == 0 && failed.is_empty();
    if rep == 0 || !ok {
        r.check(
            format!("N={n} cold apply: exit 0, all {} timers and services active, none failed", want.len()),
            ok,
            if ok { String::new() } else { format!("{}; {missing} not active, {} failed", t.why(), failed.len()) },
        );
    }
    let contents = a.unit_contents();
    let same = contents == *rendered;
    if rep == 0 || !same {
        r.check(
            format!("N={n} cold apply wrote the {} unit files `render` prints, byte for byte", r.files),
            same,
            format!("{} written, {} differ from render", contents.len(), contents.iter().filter(|(k, v)| rendered.get(*k) != Some(v)).count()),
        );
    }
    if ok {
        r.cold_runs.push(t.took);
    } else {
        r.cold = M::Failed(t.took, t.why());
    }
    ok
}

/// Sandbox A after a cold apply: everything else fleetwright does, in order.
fn scenarios_fleetwright(r: &mut Run, a: &Host, repo: &Repo) {
    let n = r.n;

    // 2. The same commit again.
    let mtimes = a.unit_mtimes();
    let loads = a.units_load_start();
    let armed = a.arm_reload_probe();
    let sample = sample(n);
    let ids = a.invocation_ids(&sample);
    let inventory = std::fs::read(a.sb.host_path(format!("{STATE_DIR}/inventory.json"))).ok();
    let mut nothing = true;
    let budget = Instant::now() + REPEAT_BUDGET;
    for _ in 0..AGAIN_RUNS {
        let t = a.fw(&["apply", "--repo", repo.path_str()], limit());
        nothing &= t.ok() && t.stdout().contains("Nothing to do");
        r.again.push(t.took);
        if Instant::now() > budget {
            break;
        }
    }
    eprintln!("  same commit again: {}", runs(&r.again));
    r.check(format!("N={n} same commit again: exit 0 and \"Nothing to do\" ({} runs)", r.again.len()), nothing, "");
    let m2 = a.unit_mtimes();
    r.check(
        format!("N={n} same commit again: no unit file written (all {} mtimes equal)", mtimes.len()),
        m2 == mtimes,
        format!("{} differ", m2.iter().filter(|(k, v)| mtimes.get(*k) != Some(v)).count()),
    );
    let l2 = a.units_load_start();
    let reloaded = a.reloaded_since_armed();
    r.check(
        format!("N={n} same commit again: no daemon-reload (the probe unit still has NeedDaemonReload=yes; UnitsLoadStartTimestampMonotonic unchanged)"),
        armed && !reloaded && l2 == loads,
        format!("probe armed {armed}, reloaded {reloaded}; {loads} → {l2}"),
    );
    let ids2 = a.invocation_ids(&sample);
    r.check(format!("N={n} same commit again: no restart ({} InvocationIDs unchanged)", ids.len()), ids2 == ids && ids.values().all(|v| !v.is_empty()), "");
    r.check(
        format!("N={n} same commit again: inventory untouched"),
        std::fs::read(a.sb.host_path(format!("{STATE_DIR}/inventory.json"))).ok() == inventory,
        "",
    );

    let budget = Instant::now() + REPEAT_BUDGET;
    for _ in 0..3 {
        let t = a.fw(&["plan", "--repo", repo.path_str()], limit());
        if t.code() != Some(0) {
            r.check(format!("N={n} plan on the converged host exits 0"), false, t.why());
            break;
        }
        r.plan.push(t.took);
        if Instant::now() > budget {
            break;
        }
    }
    eprintln!("  plan (converged): {}", runs(&r.plan));

    // 3. One agent changed.
    let k = service_at(n, n / 2);
    let mut variants = BTreeMap::from([(k, 1)]);
    repo.commit(&fleet::files(n, &variants), &format!("change {}", fleet::name(k)));
    let before = a.unit_mtimes();
    let loads = a.units_load_start();
    let armed = a.arm_reload_probe();
    let changed_unit = fleet::started_unit(k);
    let mut probe = sample.clone();
    probe.retain(|u| *u != changed_unit);
    let ids = a.invocation_ids(&probe);
    let id_k = a.invocation_ids(std::slice::from_ref(&changed_unit));
    let t = a.fw(&["apply", "--repo", repo.path_str()], limit());
    eprintln!("  one agent changed: {} (exit {:?})", dur(t.took), t.code());
    let after = a.unit_mtimes();
    let written: BTreeSet<String> = after.iter().filter(|(u, m)| before.get(*u) != Some(m)).map(|(u, _)| u.clone()).collect();
    let expected: BTreeSet<String> = fleet::unit_files(k).into_iter().collect();
    let only = written == expected && after.len() == before.len();
    r.check(
        format!("N={n} one agent changed: only {}'s unit file written", fleet::name(k)),
        only,
        format!("written: {}", written.iter().take(5).cloned().collect::<Vec<_>>().join(", ")),
    );
    let restarted = a.invocation_ids(std::slice::from_ref(&changed_unit)) != id_k;
    let others = a.invocation_ids(&probe) == ids;
    let reloaded = a.reloaded_since_armed();
    r.check(
        format!("N={n} one agent changed: {changed_unit} restarted, {} sampled others not, a daemon-reload done", probe.len()),
        restarted && others && armed && reloaded,
        format!("restarted {restarted}, others untouched {others}, probe armed {armed}, reloaded {reloaded}"),
    );
    if loads == a.units_load_start() {
        r.note(format!("N={n}: UnitsLoadStartTimestampMonotonic did not move across the change's daemon-reload either ({loads}), so it cannot show the absence of a reload; the probe unit's NeedDaemonReload does"));
    }
    r.changed = if t.ok() && only {
        M::Took(t.took)
    } else if t.out.is_none() {
        M::Skipped(format!("did not finish within {} s", limit().as_secs()))
    } else {
        M::Failed(t.took, t.why())
    };
    // The floor of a change, on the same host with the whole fleet running: what systemd itself
    // takes to re-read the units and restart the one that changed.
    for _ in 0..3 {
        let reload = a.systemctl_timed(&["daemon-reload".to_string()], limit());
        let restart = a.systemctl_timed(&["restart".to_string(), changed_unit.clone()], limit());
        if reload.ok() && restart.ok() {
            r.change_floor.push(reload.took + restart.took);
        }
    }
    eprintln!("  change floor (daemon-reload + restart, fleet running): {}", runs(&r.change_floor));

    // 4. Every agent removed.
    let only_fleet = BTreeMap::from([("fleet.yaml".to_string(), fleet::FLEET.to_string())]);
    repo.commit(&only_fleet, "remove every agent");
    let t = a.fw(&["apply", "--allow-empty", "--repo", repo.path_str()], limit());
    eprintln!("  every agent removed: {} (exit {:?})", dur(t.took), t.code());
    let left = a.unit_mtimes().len();
    let still = a.units_in("active").len();
    let ok = t.ok() && left == 0 && still == 0;
    r.check(format!("N={n} every agent removed: no agent-* file left, no agent-* unit active"), ok, format!("{left} files, {still} active units left"));
    r.removed = if ok {
        M::Took(t.took)
    } else if t.out.is_none() {
        M::Skipped(format!("did not finish within {} s", limit().as_secs()))
    } else {
        M::Failed(t.took, t.why())
    };
    if !t.ok() {
        return;
    }

    // 5. The daemon.
    daemon(r, a, repo, &mut variants);
}

/// The daemon in sandbox A (every agent removed): startup converge of the whole fleet,
/// commit → converged latency, idle memory and CPU. The sandbox's shutdown ends it.
fn daemon(r: &mut Run, a: &Host, repo: &Repo, variants: &mut BTreeMap<usize, u32>) {
    let n = r.n;
    let c4 = repo.commit(&fleet::files(n, variants), "all agents again");
    let log = tempfile::Builder::new().prefix("bench-daemon-").suffix(".log").tempfile_in(env!("CARGO_TARGET_TMPDIR")).expect("a log file");
    let mut c = a.sb.command(host::bin());
    c.args(["--host", "bench", "daemon", "--repo", repo.path_str(), "--health-grace", "0s", "--no-listen"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("the log file"));
    let t0 = Instant::now();
    let mut child = c.spawn().expect("spawn the daemon");
    let log_tail = || {
        let s = std::fs::read_to_string(log.path()).unwrap_or_default();
        s.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    // The startup reconcile converges the whole fleet again (cold).
    let recorded = |commit: &str| a.reconciles().into_iter().find(|row| row["applied"] == commit && row["head"] == commit);
    let until = t0 + limit();
    let first = loop {
        if let Some(row) = recorded(&c4) {
            break Some(row);
        }
        if Instant::now() > until || matches!(child.try_wait(), Ok(Some(_))) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(first) = first else {
        r.daemon_startup = M::Skipped(format!("the daemon did not converge within {} s: {}", limit().as_secs(), log_tail()));
        r.check(format!("N={n} daemon converges at startup"), false, log_tail());
        return;
    };
    let took = t0.elapsed();
    let ok = first["result"] == "converged";
    eprintln!("  daemon startup converge: {} ({}, {} ms in the reconcile)", dur(took), first["result"], first["durationMs"]);
    r.check(format!("N={n} daemon startup reconcile converged the whole fleet"), ok, first.to_string());
    r.daemon_startup = if ok { M::Took(took) } else { M::Failed(took, first.to_string()) };

    // Commit → converged: the commit object is made first, the clock starts when the branch
    // moves (what a push or `git commit` does last), and stops when the changed agent's deploy
    // marker names the new commit (it is written before any start).
    let budget = Instant::now() + REPEAT_BUDGET;
    for rep in 0..DAEMON_COMMITS {
        if rep > 0 && Instant::now() > budget {
            break;
        }
        let k = service_at(n, n / 4 + 5 * rep);
        *variants.entry(k).or_default() += 1;
        let commit = repo.prepare(&fleet::files(n, variants), &format!("daemon change {rep}"));
        let id = commit.to_string();
        let agent = fleet::name(k);
        let id_of = |row: &serde_json::Value| row["id"].as_i64().unwrap_or(0);
        let last_id = a.reconciles().first().map(id_of).unwrap_or(0);
        let t0 = Instant::now();
        repo.publish(commit);
        let until = t0 + Duration::from_secs(120);
        while a.marker_commit(&agent).as_deref() != Some(id.as_str()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let marker = t0.elapsed();
        if a.marker_commit(&agent).as_deref() != Some(id.as_str()) {
            r.check(format!("N={n} daemon converges commit {rep}"), false, log_tail());
            return;
        }
        // Then the reconcile's end (restart included), as recorded in the history: the first
        // reconcile after the commit that converged to it (a second one the same commit's
        // events may trigger finds nothing to do, and is counted below).
        let first_for =
            |commit: &str| a.reconciles().into_iter().filter(|row| id_of(row) > last_id && row["applied"] == commit && row["head"] == commit).min_by_key(id_of);
        let row = loop {
            if let Some(row) = first_for(&id) {
                break Some(row);
            }
            if Instant::now() > until {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let done = t0.elapsed();
        eprintln!("  daemon commit → marker {} → recorded {}", dur(marker), dur(done));
        r.daemon_marker.push(marker);
        r.daemon_recorded.push(done);
        match row {
            Some(row) => {
                r.daemon_reconcile_ms.push(row["durationMs"].as_i64().unwrap_or(-1));
                if row["result"] != "converged" {
                    r.check(format!("N={n} daemon commit {rep} converged"), false, row.to_string());
                }
            }
            None => r.check(format!("N={n} daemon commit {rep} recorded"), false, log_tail()),
        }
        // Wait until the daemon is idle again (no new reconcile for a while), then count the
        // reconciles this one commit caused.
        let mut seen = a.reconciles().first().map(id_of).unwrap_or(0);
        loop {
            let last_ms = r.daemon_reconcile_ms.last().copied().unwrap_or(0).max(0) as u64;
            std::thread::sleep(Duration::from_millis(500 + last_ms * 3 / 2));
            let now = a.reconciles().first().map(id_of).unwrap_or(0);
            if now == seen || Instant::now() > until {
                break;
            }
            seen = now;
        }
        let rows: Vec<serde_json::Value> = a.reconciles().into_iter().filter(|row| id_of(row) > last_id).collect();
        r.daemon_reconciles.push(rows.len());
        if rows.len() > 1 {
            let what: Vec<String> = rows
                .iter()
                .rev()
                .map(|row| format!("{}→{} ({} ms)", row["trigger"].as_str().unwrap_or("?"), row["result"].as_str().unwrap_or("?"), row["durationMs"]))
                .collect();
            r.note(format!("N={n}: daemon commit {} caused {} reconciles: {}", rep + 1, rows.len(), what.join(", ")));
        }
    }

    // Idle: memory and CPU of the daemon, by its pid inside the namespace.
    let pid = std::fs::read_to_string(a.sb.host_path(format!("{STATE_DIR}/daemon.pid"))).unwrap_or_default().trim().to_string();
    if pid.is_empty() {
        r.check(format!("N={n} daemon.pid"), false, "no pid file");
        return;
    }
    let cpu = |stat: &str| -> Option<u64> {
        // Fields after the command name (which may hold spaces): state is 3rd, utime 14th, stime 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let reconciles_before = a.reconciles().len();
    let s0 = a.proc_file(&pid, "stat");
    std::thread::sleep(IDLE);
    let s1 = a.proc_file(&pid, "stat");
    let status = a.proc_file(&pid, "status");
    let kb = |key: &str| status.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()));
    r.rss_kb = kb("VmRSS:");
    r.hwm_kb = kb("VmHWM:");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if let (Some(a0), Some(a1)) = (cpu(&s0), cpu(&s1)) {
        r.idle_cpu = Some(Duration::from_secs_f64((a1 - a0) as f64 / hz));
    }
    r.idle_reconciles = Some(a.reconciles().len() - reconciles_before);
    eprintln!(
        "  daemon idle: RSS {:?} kB (peak {:?} kB; anonymous {:?} kB, file {:?} kB, {:?} threads), CPU {:?} in {} s, {:?} reconciles",
        r.rss_kb,
        r.hwm_kb,
        kb("RssAnon:"),
        kb("RssFile:"),
        kb("Threads:"),
        r.idle_cpu,
        IDLE.as_secs(),
        r.idle_reconciles
    );
    eprintln!("  daemon idle: resident by mapping: {}", by_mapping(&a.proc_file(&pid, "smaps")));
    // The sandbox's shutdown (by the caller) ends the daemon; then nsenter exits: reap it.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// The largest parts of a process's resident memory, from its `smaps`: by file (the binary,
/// each library) and "[anon]" for the heap, the arenas and the stacks together.
fn by_mapping(smaps: &str) -> String {
    let mut kb: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first().is_some_and(|h| h.contains('-') && !h.ends_with(':')) {
            current = f.get(5).filter(|p| p.starts_with('/')).map_or("[anon]", |p| p.rsplit('/').next().unwrap_or(p)).to_string();
        } else if f.first() == Some(&"Rss:") {
            *kb.entry(current.clone()).or_default() += f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = kb.into_iter().filter(|(_, k)| *k >= 256).collect();
    v.sort_by_key(|(_, k)| std::cmp::Reverse(*k));
    v.iter().map(|(m, k)| format!("{m} {:.1} MB", *k as f64 / 1024.0)).collect::<Vec<_>>().join(", ")
}

/// Sandbox B: systemd's own floor for the cold work.
fn floor(r: &mut Run, contents: &BTreeMap<String, Vec<u8>>, rep: usize) {
    let n = r.n;
    let b = Host::boot();
    let dir = b.sb.host_path(UNIT_DIR);
    let start: Vec<String> = started_units(n);
    let armed = b.arm_reload_probe();
    let loads = b.units_load_start();
    let t0 = Instant::now();
    for (name, bytes) in contents {
        std::fs::write(dir.join(name), bytes).expect("write a unit file into the sandbox");
    }
    let write = t0.elapsed();
    let reload = b.systemctl_timed(&["daemon-reload".to_string()], limit());
    let mut args = vec!["start".to_string()];
    args.extend(start.iter().cloned());
    let st = b.systemctl_timed(&args, limit());
    eprintln!("  floor #{}: write {} + daemon-reload {} + start {}", rep + 1, dur(write), dur(reload.took), dur(st.took));
    let probe_ok = armed && b.reloaded_since_armed();
    if rep == 0 || !probe_ok {
        r.check(format!("N={n} floor: the reload probe sees systemctl daemon-reload (so it would see fleetwright's)"), probe_ok, format!("armed {armed}"));
    }
    if rep == 0 && b.units_load_start() == loads {
        r.note(format!("N={n}: `systemctl daemon-reload` left UnitsLoadStartTimestampMonotonic at {loads}: in systemd 252 it is set when the manager starts, not by a reload"));
    }
    let active = b.units_in("active");
    let want: BTreeSet<String> = start.iter().cloned().collect();
    let all = want.is_subset(&active);
    if rep == 0 || !all {
        r.check(format!("N={n} floor: all {} timers and services active", want.len()), all, format!("{} not active", want.difference(&active).count()));
    }
    let mut args = vec!["--no-reload".to_string(), "enable".to_string()];
    args.extend(start.iter().cloned());
    let en = b.systemctl_timed(&args, limit());
    eprintln!("  floor #{}: enable {}", rep + 1, dur(en.took));
    if reload.ok() && st.ok() && en.ok() && all {
        r.floor_runs.push([write, reload.took, st.took, en.took]);
    } else {
        let why = [&reload, &st, &en].iter().find(|t| !t.ok()).map(|t| t.why()).unwrap_or_else(|| "not every unit active".into());
        r.check(format!("N={n} floor #{} completes", rep + 1), false, why);
    }
    b.shutdown();
}

/// Sandbox C: per agent, copy its files, daemon-reload, start — as a shell script inside,
/// with the very files fleetwright wrote in A (staged on the sandbox's /run, outside the timing).
fn naive(r: &mut Run, contents: &BTreeMap<String, Vec<u8>>) -> M {
    let n = r.n;
    let c = Host::boot();
    let stage = c.sb.host_path("/run/bench-stage");
    std::fs::create_dir_all(&stage).expect("stage directory");
    for (name, body) in contents {
        std::fs::write(stage.join(name), body).expect("stage a unit file");
    }
    let mut script = String::from("#!/bin/bash\nset -e\ncd /run/bench-stage\n");
    for i in 0..n {
        writeln!(script, "cp {} {UNIT_DIR}/", fleet::unit_files(i).join(" ")).unwrap();
        writeln!(script, "systemctl daemon-reload").unwrap();
        writeln!(script, "systemctl start {}", fleet::started_unit(i)).unwrap();
        writeln!(script, "echo {i} >> /run/bench-naive.progress").unwrap();
    }
    std::fs::write(c.sb.host_path("/run/bench-naive.sh"), script).expect("write the naive script");
    let mut cmd = c.sb.command("bash");
    cmd.arg("/run/bench-naive.sh");
    let t = timed(cmd, limit());
    eprintln!("  naive script: {} (exit {:?})", dur(t.took), t.code());
    let m = if t.out.is_none() {
        let done = std::fs::read_to_string(c.sb.host_path("/run/bench-naive.progress")).map(|s| s.lines().count()).unwrap_or(0);
        M::Skipped(format!("stopped after {} s with {done} of {n} agents done", limit().as_secs()))
    } else {
        let active = c.units_in("active");
        let missing = started_units(n).iter().filter(|u| !active.contains(*u)).count();
        r.check(format!("N={n} naive: all timers and services active"), t.ok() && missing == 0, format!("{}; {missing} not active", t.why()));
        if t.ok() { M::Took(t.took) } else { M::Failed(t.took, t.why()) }
    };
    c.shutdown();
    m
}

fn table(results: &[Run]) -> Table {
    let mut header = vec!["scenario".to_string()];
    header.extend(results.iter().map(|r| format!("N={}", r.n)));
    header.push("target".into());
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String, target: &str| {
        let mut v = vec![label.to_string()];
        v.extend(results.iter().map(f));
        v.push(target.to_string());
        rows.push(v);
    };
    let s = |d: Option<Duration>| d.map(dur).unwrap_or_else(|| "—".into());
    row("unit files / units started", &|r| format!("{} / {}", r.files, r.started), "");
    row("cold apply and floor repetitions (fresh sandboxes)", &|r| format!("{} / {}", r.cold_runs.len(), r.floor_runs.len()), "");
    row("cold apply (fleetwright; median, min–max)", &|r| if matches!(r.cold, M::Took(_)) { runs(&r.cold_runs) } else { r.cold.cell() }, "");
    row(
        "floor: write + daemon-reload + start",
        &|r| if r.floor_runs.is_empty() { r.floor_start.cell() } else { runs(&r.floor_runs.iter().map(|f| f[0] + f[1] + f[2]).collect::<Vec<_>>()) },
        "",
    );
    row("  floor: write files", &|r| r.floor_write.cell(), "");
    row("  floor: systemctl daemon-reload", &|r| r.floor_reload.cell(), "");
    row("  floor: systemctl start (one call)", &|r| r.floor_start.cell(), "");
    row("  + systemctl --no-reload enable (one call)", &|r| r.floor_enable.cell(), "");
    row("cold apply / floor (medians)", &|r| ratio(r.cold.secs(), r.floor(), Some(1.2)), "≤ 1.2×");
    row("cold apply / (floor + enable) (medians)", &|r| ratio(r.cold.secs(), r.floor_enable(), None), "");
    row("naive script (per agent: cp, daemon-reload, start)", &|r| r.naive.cell(), "");
    row("naive / cold apply", &|r| ratio(r.naive.secs(), r.cold.secs(), None), "");
    row("same commit again (median of up to 5, min–max)", &|r| runs(&r.again), "≤ 100 ms at N=1000");
    row(
        "  met?",
        &|r| {
            median(&r.again)
                .map(|m| format!("{} ({:.1}× target)", verdict(m <= Duration::from_millis(100)), m.as_secs_f64() / 0.1))
                .unwrap_or_else(|| "—".into())
        },
        "",
    );
    row("plan on the converged host (median of up to 3)", &|r| runs(&r.plan), "");
    row("render, no systemd (median of 3)", &|r| runs(&r.render), "");
    row("one agent changed (a service: rewrite, reload, restart)", &|r| r.changed.cell(), "");
    row("  floor for it: daemon-reload + restart, fleet running", &|r| runs(&r.change_floor), "");
    row("  one agent changed / its floor", &|r| ratio(r.changed.secs(), median(&r.change_floor).map(|d| d.as_secs_f64()), None), "");
    row("every agent removed (--allow-empty)", &|r| r.removed.cell(), "");
    row("daemon: startup converge of the fleet (cold)", &|r| r.daemon_startup.cell(), "");
    row("daemon: commit → marker (median of up to 3, min–max)", &|r| runs(&r.daemon_marker), "< 1 s");
    row("  met?", &|r| median(&r.daemon_marker).map(|m| verdict(m < Duration::from_secs(1)).to_string()).unwrap_or_else(|| "—".into()), "");
    row(
        "  commit → marker / floor of a change",
        &|r| ratio(median(&r.daemon_marker).map(|d| d.as_secs_f64()), median(&r.change_floor).map(|d| d.as_secs_f64()), None),
        "",
    );
    row("daemon: commit → reconcile recorded (incl. restart)", &|r| runs(&r.daemon_recorded), "");
    row(
        "daemon: its reconcile's own duration (history)",
        &|r| {
            if r.daemon_reconcile_ms.is_empty() {
                "—".into()
            } else {
                let mut v = r.daemon_reconcile_ms.clone();
                v.sort();
                format!("{} ms", v[v.len() / 2])
            }
        },
        "",
    );
    row(
        "daemon: reconciles caused by each commit",
        &|r| if r.daemon_reconciles.is_empty() { "—".into() } else { r.daemon_reconciles.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ") },
        "1",
    );
    row(
        "daemon: RSS after 10 s idle (peak)",
        &|r| match (r.rss_kb, r.hwm_kb) {
            (Some(a), Some(p)) => format!("{:.1} MB ({:.1} MB) {}", a as f64 / 1024.0, p as f64 / 1024.0, verdict(a < 30 * 1024)),
            _ => "—".into(),
        },
        "< 30 MB",
    );
    row("daemon: CPU time in 10 s idle", &|r| s(r.idle_cpu) + &r.idle_reconciles.map(|k| format!(" ({k} reconciles)")).unwrap_or_default(), "~0");
    row("nsenter + exec overhead in each time above", &|r| dur(r.nsenter), "");
    Table { header, rows }
}

/// Why each failed measurement failed.
fn failures(r: &Run) -> Vec<String> {
    let all = [
        ("cold apply", &r.cold),
        ("one agent changed", &r.changed),
        ("every agent removed", &r.removed),
        ("floor reload", &r.floor_reload),
        ("floor start", &r.floor_start),
        ("floor enable", &r.floor_enable),
        ("naive script", &r.naive),
        ("daemon startup", &r.daemon_startup),
    ];
    all.iter()
        .filter_map(|(what, m)| match m {
            M::Failed(_, why) => Some(format!("N={} {what} failed: {why}", r.n)),
            _ => None,
        })
        .collect()
}

/// Every check, failure and note of the run, a line each: `  [✓] …` as text, `- ✓ …` as
/// Markdown.
fn checks_list(results: &[Run], ops: &[&(String, bool, String)], text: bool) -> String {
    let mut out = String::new();
    let mut line = |what: &str, ok: bool, detail: &str| {
        let v = if text { format!("  [{}]", verdict(ok)) } else { format!("- {}", verdict(ok)) };
        writeln!(out, "{v} {what}{}", if ok || detail.is_empty() { String::new() } else { format!(" — {detail}") }).unwrap();
    };
    for r in results {
        for (what, ok, detail) in &r.checks {
            line(what, *ok, detail);
        }
        for f in failures(r) {
            line(&f, false, "");
        }
    }
    for (what, ok, detail) in ops {
        line(what, *ok, detail);
    }
    for note in results.iter().flat_map(|r| &r.notes) {
        writeln!(out, "{}note: {note}", if text { "  " } else { "- " }).unwrap();
    }
    out
}

fn checks_text(results: &[Run], ops: &[&(String, bool, String)]) -> String {
    String::from("checks:\n") + &checks_list(results, ops, true)
}

fn checks_markdown(results: &[Run], ops: &[&(String, bool, String)]) -> String {
    String::from("Checks made during the run:\n\n") + &checks_list(results, ops, false)
}
