//! The fault-injection tier (issue 13): faults that are nobody's commit — the bus daemon killed,
//! the manager re-executed, a full disk, a clock that jumped, a killed restore — injected into a
//! real systemd (`host::sandbox`). What the host runs afterwards is proven by its processes
//! (their arguments, pids and InvocationIDs) and files, never by fleetwright's own records.
//!
//! A fault is injected at a chosen point of an apply with `FLEETWRIGHT_STOP_AT`: the process
//! stops itself (SIGSTOP) there, the test kills the bus or re-executes the manager, and then
//! continues it (SIGCONT). One round of each kind is injected without a stop point, when the
//! first restarted process appears, as a fault comes in real life.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::real::*;

/// Services in the big fleet: a few hundred, restarted in a couple of seconds.
const N: usize = 240;

fn sleeper(i: usize, version: u32) -> String {
    agent(&format!("s{i:03}")).command(&["/bin/sleep", &arg(i, version)]).yaml()
}

/// The argument service `i` runs with at `version`: `1IIIVVV` seconds (about 12 days).
fn arg(i: usize, version: u32) -> String {
    format!("1{i:03}{version:03}")
}

fn fleet_v(n: usize, version: u32) -> Vec<(&'static str, String)> {
    let docs: Vec<String> = (0..n).map(|i| sleeper(i, version)).collect();
    vec![("fleet.yaml", FLEET.to_string()), ("agents.yaml", documents(&docs))]
}

fn commit(repo: &Repo, files: &[(&'static str, String)], msg: &str) -> String {
    repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), msg)
}

/// What the sleepers run: service index → pid of its process with the arguments of `version`,
/// and the indexes that still have a process of another version.
struct Census {
    new: BTreeMap<usize, u32>,
    old: BTreeSet<usize>,
}

fn census(host: &Host, n: usize, version: u32) -> Census {
    let o = host.sb.command("ps").args(["-e", "-o", "pid=,args="]).output().unwrap();
    let mut c = Census { new: BTreeMap::new(), old: BTreeSet::new() };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some("/bin/sleep"), Some(a), None) = (f.next(), f.next(), f.next(), f.next()) else { continue };
        if a.len() != 7 || !a.starts_with('1') {
            continue;
        }
        let (Ok(i), Ok(v)) = (a[1..4].parse::<usize>(), a[4..7].parse::<u32>()) else { continue };
        if i >= n {
            continue;
        }
        if v == version {
            c.new.insert(i, pid.parse().unwrap());
        } else {
            c.old.insert(i);
        }
    }
    c
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillBus,
    Reexec,
}

fn inject(host: &Host, fault: Fault) {
    let o = match fault {
        Fault::KillBus => host.sb.command("sh").args(["-c", "kill -9 $(pgrep -x dbus-daemon)"]).output().unwrap(),
        Fault::Reexec => host.sb.command("systemctl").arg("daemon-reexec").output().unwrap(),
    };
    assert!(o.status.success(), "{fault:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The system bus back (systemctl talks to the manager's private socket), and answering.
fn bus_back(host: &Host) {
    host.sb.command("systemctl").args(["start", "dbus.socket", "dbus.service"]).output().unwrap();
    host.wait("the system bus to answer", 20, || {
        host.sb.command("busctl").args(["--system", "--no-pager", "status", "org.freedesktop.systemd1"]).output().is_ok_and(|o| o.status.success())
    });
}

/// Run fleetwright inside the sandbox in the background.
fn spawn_fw(host: &Host, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    c.envs(env.iter().copied()).args(["--host", "vps-1"]).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// The host pid of the process `nsenter` (our child) runs: its only child.
fn inner_pid(child: &Child) -> u32 {
    poll("nsenter to start its child", Duration::from_secs(10), Duration::from_millis(10), || {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap_or_default();
        kids.split_whitespace().next().map(|p| p.parse().unwrap())
    })
}

/// Wait until the process stopped itself at its stop point.
fn wait_stopped(pid: u32, what: &str) {
    poll(&format!("the stop point {what}"), Duration::from_secs(120), Duration::from_millis(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.is_empty(), "{what}: the process ended before its stop point");
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')).then_some(())
    })
}

/// Wait for the first service of `version` to run, watching closely (every 5 ms): a fault
/// injected then comes in the middle of the restarts.
fn first_restarted(host: &Host, n: usize, version: u32, within: Duration) {
    poll(&format!("a service of version {version} to run"), within, Duration::from_millis(5), || (!census(host, n, version).new.is_empty()).then_some(()))
}

/// Continue the stopped process, and `nsenter` (which stops itself when its child stops, and
/// waits for a SIGCONT of its own).
fn cont(child: &Child, pid: u32) {
    for p in [pid, child.id()] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGCONT);
    }
}

/// Where the fault comes: a stop point of the apply, or (None) when the first restarted
/// process of the new version appears.
fn fault_during_apply(host: &Host, repo: &Repo, version: u32, point: Option<&str>, fault: Fault) -> std::process::Output {
    let repo_arg = repo.path().to_str().unwrap();
    let child = match point {
        Some(p) => {
            let child = spawn_fw(host, &[("FLEETWRIGHT_STOP_AT", p)], &["apply", "--repo", repo_arg]);
            let pid = inner_pid(&child);
            wait_stopped(pid, p);
            inject(host, fault);
            cont(&child, pid);
            child
        }
        None => {
            let child = spawn_fw(host, &[], &["apply", "--repo", repo_arg]);
            first_restarted(host, N, version, Duration::from_secs(120));
            inject(host, fault);
            child
        }
    };
    let out = child.wait_with_output().unwrap();
    eprintln!("$ fleetwright apply ({fault:?} at {point:?})\n{}", stderr(&out).chars().take(4000).collect::<String>());
    out
}

/// One round: a new version, a fault during its apply, the bus back, one more apply; then
/// every service runs the new version, none the old, and none that had been restarted before
/// the recovery was restarted again.
fn round(host: &Host, repo: &Repo, version: u32, point: Option<&str>, fault: Fault) {
    let what = format!("{fault:?} at {}", point.unwrap_or("the first restarted process"));
    commit(repo, &fleet_v(N, version), &format!("v{version}"));
    let out = fault_during_apply(host, repo, version, point, fault);
    // The fault is the host's: never reported as a failed unit.
    assert!(!stderr(&out).contains("FAILED"), "{what}: a unit was blamed:\n{}", stderr(&out));
    match fault {
        Fault::KillBus => {
            assert_eq!(code(&out), 3, "{what}: an apply stopped part-way by the host says so:\n{}", stderr(&out));
            assert!(stderr(&out).contains("nothing is lost"), "{what}: {}", stderr(&out));
        }
        // The manager is back at once: the apply may have finished its work.
        Fault::Reexec => assert!(matches!(code(&out), 0 | 3), "{what}: {}", stderr(&out)),
    }
    bus_back(host);
    let after_fault = census(host, N, version);
    if !after_fault.old.is_empty() {
        // Until the next apply, status says what is owed rather than "ok".
        let status = host.fw(&["status"]);
        let owed = stdout(&status);
        assert!(owed.contains("yet to restart") || owed.contains("a restart was lost"), "{what}: status hides the owed restarts:\n{owed}");
    }

    let out = host.apply(repo);
    assert_eq!(code(&out), 0, "{what}: recovery: {}", stderr(&out));
    let done = census(host, N, version);
    assert!(done.old.is_empty(), "{what}: {} services still run an old definition: {:?}", done.old.len(), done.old);
    assert_eq!(done.new.len(), N, "{what}: {} of {N} services run the new definition", done.new.len());
    for (i, pid) in &after_fault.new {
        assert_eq!(done.new.get(i), Some(pid), "{what}: s{i:03} was restarted twice");
    }
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap(), "--no-diff"]);
    assert_eq!(code(&plan), 0, "{what}: not converged: {}", stdout(&plan));
    let status = host.fw(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let not_ok: Vec<&serde_json::Value> = v["agents"].as_array().unwrap().iter().filter(|a| a["state"] != "ok").collect();
    assert!(not_ok.is_empty(), "{what}: {not_ok:?}");
}

/// None: skipped ([`Host::boot`]).
fn big_host() -> Option<(Host, Repo)> {
    let host = Host::boot()?;
    let repo = Repo::new();
    commit(&repo, &fleet_v(N, 1), "v1");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(census(&host, N, 1).new.len(), N);
    Some((host, repo))
}

/// One round of an apply of `N` services per point (`None`: once the first service runs),
/// with `fault` injected there, on one host.
fn fault_rounds(fault: Fault, points: &[Option<&str>]) {
    let Some((host, repo)) = big_host() else { return };
    for (k, point) in points.iter().enumerate() {
        round(&host, &repo, k as u32 + 2, *point, fault);
    }
}

#[test]
fn the_bus_killed_at_any_point_of_an_apply_loses_no_restart_and_does_none_twice() {
    let last = format!("queued:{N}");
    let points = [Some("after-write:100"), Some("before-reload"), Some("after-reload"), Some("queued:1"), Some("queued:120"), Some(last.as_str()), None];
    fault_rounds(Fault::KillBus, &points);
}

#[test]
fn the_manager_reexecuted_at_any_point_of_an_apply_loses_no_restart_and_does_none_twice() {
    let last = format!("queued:{N}");
    let points = [Some("after-write:100"), Some("after-reload"), Some("queued:1"), Some("queued:120"), Some(last.as_str()), None];
    fault_rounds(Fault::Reexec, &points);
}

// --- the daemon -------------------------------------------------------------------------

/// A daemon inside the sandbox, its log kept in a file.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(host: &Host, repo: &Repo, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = tempfile::Builder::new().prefix("faults-daemon-").tempfile_in(env!("CARGO_TARGET_TMPDIR")).unwrap().into_temp_path().keep().unwrap();
        let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
        c.envs(env.iter().copied()).args(["--host", "vps-1", "daemon", "--repo", repo.path().to_str().unwrap(), "--no-listen", "--resync", "1h"]).args(extra);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        Daemon { child: c.spawn().unwrap(), log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // nsenter forks the daemon; the sandbox's shutdown ends it. End nsenter itself, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("--- daemon log\n{}", self.log().chars().take(20_000).collect::<String>());
        let _ = std::fs::remove_file(&self.log);
    }
}

fn history(host: &Host) -> serde_json::Value {
    let o = host.sb.command(env!("CARGO_BIN_EXE_fleetwright")).args(["history", "--json", "-n", "500"]).output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn reconciles(host: &Host) -> Vec<serde_json::Value> {
    history(host)["reconciles"].as_array().cloned().unwrap_or_default()
}

/// A commit's verdict in the daemon's history (read inside the sandbox, as the daemon has it).
fn verdict(host: &Host, commit: &str) -> Option<String> {
    let o = host
        .sb
        .command("sqlite3")
        .args(["-readonly", "/var/lib/fleetwright/history.sqlite", &format!("SELECT verdict FROM commits WHERE commit_id = '{commit}'")])
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|v| !v.is_empty())
}

fn no_rollback_and_nothing_bad(host: &Host, commits: &[&str]) {
    let rows = reconciles(host);
    assert!(rows.iter().all(|r| r["result"] != "rolled-back"), "a rollback: {rows:?}");
    for c in commits {
        assert_ne!(verdict(host, c).as_deref(), Some("bad"), "{c} was marked bad: {rows:?}");
    }
}

#[test]
fn the_daemon_rides_out_a_reexec_and_a_dead_bus_and_marks_nothing_bad() {
    const M: usize = 150;
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet_v(M, 1), "v1");
    // The first apply queues M starts; the daemon stops itself at the 40th restart of v2.
    let stop = format!("queued:{}", M + 40);
    let d = Daemon::start(&host, &repo, &["--health-grace", "1s"], &[("FLEETWRIGHT_STOP_AT", &stop)]);
    host.wait("v1 to pass its gate", 90, || history(&host)["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet_v(M, 2), "v2");
    let pid = inner_pid(&d.child);
    wait_stopped(pid, &stop);
    inject(&host, Fault::Reexec);
    cont(&d.child, pid);
    host.wait("v2 to pass its gate", 90, || history(&host)["lastGood"] == c2.as_str());
    let c = census(&host, M, 2);
    assert!(c.old.is_empty() && c.new.len() == M, "{} old, {} new", c.old.len(), c.new.len());

    // The bus killed when the first service of v3 runs.
    let c3 = commit(&repo, &fleet_v(M, 3), "v3");
    first_restarted(&host, M, 3, Duration::from_secs(60));
    inject(&host, Fault::KillBus);
    host.wait("the daemon to record the host's fault", 60, || {
        reconciles(&host)
            .iter()
            .any(|r| r["head"] == c3.as_str() && r["result"] == "error" && r["error"].as_str().is_some_and(|e| e.contains("a fault of the host")))
    });
    bus_back(&host);
    host.wait("v3 to pass its gate", 90, || history(&host)["lastGood"] == c3.as_str());
    let c = census(&host, M, 3);
    assert!(c.old.is_empty() && c.new.len() == M, "{} old, {} new", c.old.len(), c.new.len());
    no_rollback_and_nothing_bad(&host, &[&c1, &c2, &c3]);
    assert_eq!(verdict(&host, &c3).as_deref(), Some("good"));
}

// --- full disks ---------------------------------------------------------------------------

/// Make the tmpfs at `dir` (inside the sandbox) small, and fill it.
fn fill(host: &Host, dir: &str) {
    let script = format!("mount -o remount,size=4m {dir} && (dd if=/dev/zero of={dir}/.fw-fill bs=64k 2>/dev/null; true) && sync");
    let o = host.sb.command("sh").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = host.sb.command("sh").args(["-c", &format!("echo x > {dir}/.fw-probe")]).output().unwrap();
    assert!(!o.status.success(), "{dir} is not full");
}

fn free(host: &Host, dir: &str) {
    let o = host.sb.command("rm").args(["-f", &format!("{dir}/.fw-fill")]).output().unwrap();
    assert!(o.status.success());
}

/// `web` (a [`service`] named web, as the test shapes it) and an hourly job.
fn web_fleet(web: AgentSpec) -> Vec<(&'static str, String)> {
    vec![("fleet.yaml", FLEET.to_string()), ("web.yaml", web.yaml()), ("tick.yaml", job("tick", "echo tick").calendar("hourly").yaml())]
}

#[test]
fn a_full_unit_or_state_directory_under_the_daemon_is_the_hosts_fault_and_converges_once_freed() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &web_fleet(service("web")), "one");
    let d = Daemon::start(&host, &repo, &["--health-grace", "1s"], &[]);
    host.wait("the first commit to pass its gate", 30, || history(&host)["lastGood"] == c1.as_str());

    // The unit directory full: every attempt fails to write, for longer than it took the
    // daemon to give a commit up before (five attempts).
    fill(&host, "/etc/systemd/system");
    let c2 = commit(&repo, &web_fleet(service("web").restart("always")), "two");
    host.wait("five attempts on a full unit directory", 60, || {
        // Identical failed attempts are one history row with a count (`repeats`).
        reconciles(&host).iter().filter(|r| r["head"] == c2.as_str() && r["result"] == "error").map(|r| r["repeats"].as_i64().unwrap_or(1)).sum::<i64>() >= 5
    });
    let rows = reconciles(&host);
    let failed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["head"] == c2.as_str() && r["result"] == "error").collect();
    for r in &failed {
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("a fault of the host") && e.contains("no space left on the file system"), "{r}");
    }
    no_rollback_and_nothing_bad(&host, &[&c2]);
    assert_eq!(history(&host)["lastGood"], c1.as_str());
    // Space back: the same commit converges by the daemon's own retry, no new commit.
    free(&host, "/etc/systemd/system");
    host.wait("the commit to converge once there is space", 60, || history(&host)["lastGood"] == c2.as_str());
    assert_eq!(host.prop("agent-web.service", "Restart"), "always");

    // The state directory full: the inventory (and the history) cannot be written.
    fill(&host, "/var/lib/fleetwright");
    let c3 = commit(&repo, &web_fleet(service("web").restart("always").description("three")), "three");
    host.wait("the daemon to meet the full state directory", 30, || d.log().contains("No space left on device"));
    assert_ne!(host.prop("agent-web.service", "Description"), "three");
    free(&host, "/var/lib/fleetwright");
    host.wait("the commit to converge once there is space", 60, || history(&host)["lastGood"] == c3.as_str());
    assert_eq!(host.prop("agent-web.service", "Description"), "three");
    no_rollback_and_nothing_bad(&host, &[&c1, &c2, &c3]);
}

#[test]
fn a_full_state_directory_at_the_final_inventory_exits_3_and_the_next_apply_finishes() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &fleet_v(20, 1), "v1");
    assert_eq!(code(&host.apply(&repo)), 0);
    commit(&repo, &fleet_v(20, 2), "v2");
    let child = spawn_fw(&host, &[("FLEETWRIGHT_STOP_AT", "before-final-inventory")], &["apply", "--repo", repo.path().to_str().unwrap()]);
    let pid = inner_pid(&child);
    wait_stopped(pid, "before-final-inventory");
    fill(&host, "/var/lib/fleetwright");
    cont(&child, pid);
    let out = child.wait_with_output().unwrap();
    // The services were restarted: "nothing changed" would be a lie.
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left on device") && stderr(&out).contains("after it had changed the host"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("nothing on the host was changed"), "{}", stderr(&out));
    assert_eq!(census(&host, 20, 2).new.len(), 20);
    free(&host, "/var/lib/fleetwright");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&plan), 0, "{}", stdout(&plan));
    assert!(census(&host, 20, 2).old.is_empty());
}

fn sh(host: &Host, script: &str) -> String {
    let o = host.sb.command("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A service `db` whose database /srv/db/data.db is backed up daily, the last `keep` kept.
fn db_agent(keep: u32) -> Vec<(&'static str, String)> {
    let db = service("db").backup(backup("/srv/db/data.db", "/srv/backups/db").keep_last(keep).calendar("daily"));
    vec![("fleet.yaml", FLEET.to_string()), ("db.yaml", db.yaml())]
}

#[test]
fn a_full_backup_directory_says_so_and_a_lowered_keep_frees_it() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // A database of about 100 KiB, and backups on a 512 KiB file system.
    sh(&host, "mkdir -p /srv/db /srv/backups && mount -t tmpfs -o size=512k,mode=755 tmpfs /srv/backups");
    sh(
        &host,
        "sqlite3 /srv/db/data.db 'CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<100) INSERT INTO t SELECT randomblob(1000) FROM c;'",
    );
    let c1 = commit(&repo, &db_agent(20), "keep 20");
    let _d = Daemon::start(&host, &repo, &["--health-grace", "1s"], &[]);
    host.wait("the first commit to pass its gate", 30, || history(&host)["lastGood"] == c1.as_str());
    // (reset-failed: many starts in a row would hit the manager's start rate limit.)
    let run_backup = || {
        host.systemctl(&["reset-failed", "agent-db.backup.service"]);
        host.sb.command("systemctl").args(["start", "agent-db.backup.service"]).output().unwrap().status.success()
    };
    let mut taken = 0;
    while run_backup() {
        taken += 1;
        assert!(taken < 20, "the backup directory never filled up");
    }
    assert!(taken >= 2, "{taken} backups before the disk was full");
    let journal = host.sb.journal("agent-db.backup.service");
    assert!(journal.contains("no space left on the file system of /srv/backups/db (ENOSPC)"), "{journal}");
    assert!(!journal.contains("disk I/O error"), "{journal}");
    let status = host.fw(&["status"]);
    assert!(stdout(&status).contains("agent-db.backup.service failed"), "{}", stdout(&status));
    // Space freed by hand (the oldest backup deleted): the next run succeeds, no new commit.
    let listed = host.fw(&["backups", "db", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let oldest = v[0][1].as_array().unwrap().last().unwrap()["path"].as_str().unwrap().to_string();
    std::fs::remove_file(host.sb.host_path(&oldest)).unwrap();
    assert!(run_backup(), "{}", host.sb.journal("agent-db.backup.service"));
    assert!(!stdout(&host.fw(&["status"])).contains("agent-db.backup.service failed"));
    // Full again; a lowered keep (a commit the daemon applies) makes room: the next backup
    // prunes first, and fits.
    for _ in 0..20 {
        if !run_backup() {
            break;
        }
    }
    let c2 = commit(&repo, &db_agent(2), "keep 2");
    host.wait("the lowered keep to pass its gate", 30, || history(&host)["lastGood"] == c2.as_str());
    assert!(run_backup(), "{}", host.sb.journal("agent-db.backup.service"));
    let listed = host.fw(&["backups", "db", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v[0][1].as_array().unwrap().len(), 2, "{v}");
    no_rollback_and_nothing_bad(&host, &[&c1, &c2]);

    // A full database directory at the WAL switch says so too, not "disk I/O error".
    sh(&host, "mkdir -p /srv/full && mount -t tmpfs -o size=256k,mode=755 tmpfs /srv/full");
    sh(
        &host,
        "sqlite3 /srv/full/x.db 'CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<100) INSERT INTO t SELECT randomblob(1000) FROM c;' && (dd if=/dev/zero of=/srv/full/.fill bs=4k 2>/dev/null; true)",
    );
    let out = host.fw(&["backup", "--sqlite", "/srv/full/x.db", "--to", "/srv/backups/x", "--wal"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("switching /srv/full/x.db to WAL mode: no space left on the file system of /srv/full (ENOSPC)"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("disk I/O error"), "{}", stderr(&out));
}

// --- what fleetwright owns besides unit files ---------------------------------------------

fn commit_seen_by(host: &Host, agent: &str) -> String {
    std::fs::read_to_string(host.sb.host_path(format!("/run/fw-test/{agent}.commit"))).unwrap_or_default().trim().to_string()
}

#[test]
fn deploy_markers_deleted_emptied_or_replaced_are_seen_and_repaired() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &web_fleet(service("web")), "one");
    assert_eq!(code(&host.apply(&repo)), 0);
    let markers = host.state_dir().join("markers");
    let env = markers.join("web.env");
    let good = std::fs::read_to_string(&env).unwrap();
    assert!(good.contains(&format!("FLEETWRIGHT_COMMIT={c1}")), "{good}");
    let plan = || host.fw(&["plan", "--repo", repo.path().to_str().unwrap(), "--no-diff"]);

    // Deleted.
    std::fs::remove_file(&env).unwrap();
    let p = plan();
    assert_eq!(code(&p), 1, "{}", stdout(&p));
    assert!(stdout(&p).contains("deploy marker of web: write") && stdout(&p).contains("web.env is missing"), "{}", stdout(&p));
    let s = host.fw(&["status"]);
    assert!(stdout(&s).contains("web.env is missing"), "{}", stdout(&s));
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains("Nothing to do"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&env).unwrap(), good);

    // Emptied.
    std::fs::write(markers.join("web.json"), "").unwrap();
    assert!(stdout(&plan()).contains("web.json is empty"));
    assert_eq!(code(&host.apply(&repo)), 0);
    assert_eq!(host.marker_commit("web"), Some(c1.clone()));
    assert_eq!(code(&plan()), 0);

    // A directory in its place (with something in it): seen, and no later apply is blocked
    // by it — a new commit that restarts web goes through, and web sees its commit.
    std::fs::remove_file(&env).unwrap();
    std::fs::create_dir_all(env.join("inside")).unwrap();
    std::fs::write(env.join("inside/file"), "x").unwrap();
    assert!(stdout(&plan()).contains("web.env is a directory, not a file"));
    let c2 = commit(&repo, &web_fleet(service("web").restart("always")), "two");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&env).unwrap().is_file());
    assert!(std::fs::read_to_string(&env).unwrap().contains(&format!("FLEETWRIGHT_COMMIT={c2}")));
    host.wait("web to see its commit", 10, || commit_seen_by(&host, "web") == c2);
    assert_eq!(code(&plan()), 0);
}

#[test]
fn the_next_run_of_any_writer_sweeps_what_a_killed_restore_left_and_a_restore_killed_at_any_step_is_finished_by_the_next() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    sh(&host, "mkdir -p /srv/db && sqlite3 /srv/db/data.db 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'");
    commit(&repo, &db_agent(5), "db");
    assert_eq!(code(&host.apply(&repo)), 0);
    let backup = || assert!(host.sb.command("systemctl").args(["start", "agent-db.backup.service"]).output().unwrap().status.success());
    backup();
    // Live data the backup does not have: what a restore replaces.
    sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (2);'");
    let rows = || sh(&host, "sqlite3 -readonly /srv/db/data.db 'SELECT count(*) FROM t'").trim().to_string();
    let temps = || -> Vec<String> {
        std::fs::read_dir(host.sb.host_path("/srv/db"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".restore-"))
            .collect()
    };
    let killed_restore = |point: &str| {
        let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
        let out = c.env("FLEETWRIGHT_CRASH_AT", point).args(["--host", "vps-1", "restore", "db", "--latest"]).output().unwrap();
        assert!(stderr(&out).contains("crash point"), "{point}: {}", stderr(&out));
    };
    // Killed during its copy: a hidden copy as big as the database, swept by the next backup,
    // the next apply, or the next restore; the live database untouched until a restore is done.
    for sweeper in ["backup", "apply", "restore"] {
        if sweeper == "restore" {
            sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (3);'");
        }
        let live = rows();
        killed_restore("restore-copied");
        assert_eq!(temps().len(), 1, "{sweeper}: {:?}", temps());
        assert_eq!(rows(), live, "the live database was not touched");
        match sweeper {
            // (This backup has the two rows: the latest from now on.)
            "backup" => backup(),
            "apply" => assert_eq!(code(&host.apply(&repo)), 0),
            _ => assert_eq!(code(&host.fw(&["restore", "db", "--latest"])), 0),
        }
        assert!(temps().is_empty(), "{sweeper} left {:?}", temps());
    }
    assert_eq!(rows(), "2", "the last restore restored the latest backup");
    sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (3);'");
    // Killed with the agent stopped: the next apply starts it; the database is untouched.
    killed_restore("restore-stopped");
    assert_ne!(host.prop("agent-db.service", "ActiveState"), "active");
    assert_eq!(rows(), "3");
    assert_eq!(code(&host.apply(&repo)), 0);
    assert_eq!(host.prop("agent-db.service", "ActiveState"), "active");
    // Killed with the live database moved aside: the next restore finishes the job.
    killed_restore("restore-aside");
    assert!(!host.sb.host_path("/srv/db/data.db").exists());
    let out = host.fw(&["restore", "db", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(rows(), "2");
    assert_eq!(host.prop("agent-db.service", "ActiveState"), "active");
    assert!(temps().is_empty(), "{:?}", temps());
}

#[test]
fn a_backup_dated_in_the_future_is_reported_never_preferred_and_counted_in_no_keep() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    sh(&host, "mkdir -p /srv/db && sqlite3 /srv/db/data.db 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'");
    commit(&repo, &db_agent(2), "db");
    assert_eq!(code(&host.apply(&repo)), 0);
    let fw = env!("CARGO_BIN_EXE_fleetwright");
    let take = |faked: Option<&str>| {
        let mut c = match faked {
            Some(offset) => {
                let mut c = host.sb.command("faketime");
                c.args(["-f", offset, fw]);
                c
            }
            None => host.sb.command(fw),
        };
        let o = c.args(["backup", "--sqlite", "/srv/db/data.db", "--to", "/srv/backups/db", "--keep-last", "2"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let listed = || -> Vec<serde_json::Value> {
        let o = host.fw(&["backups", "db", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0][1].as_array().unwrap().clone()
    };
    take(None);
    sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (2);'");
    // A clock 400 days ahead, for this one backup.
    take(Some("+400d"));
    let l = listed();
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l[0]["future"], true, "{l:?}");
    let text = stdout(&host.fw(&["backups", "db"]));
    assert!(text.contains("dated in the future"), "{text}");
    sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (3);'");
    take(None);
    // The future one is kept out of `last: 2`: the first backup is still there.
    let l = listed();
    assert_eq!(l.len(), 3, "{l:?}");
    // --latest takes the one taken last, with 3 rows; the future one is not preferred.
    sh(&host, "sqlite3 /srv/db/data.db 'INSERT INTO t VALUES (4);'");
    let out = host.fw(&["restore", "db", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sh(&host, "sqlite3 -readonly /srv/db/data.db 'SELECT count(*) FROM t'").trim(), "3");
    // Newer backups push it out like any other: it does not survive pruning for ever.
    take(None);
    let l = listed();
    assert!(l.iter().all(|f| f["future"] != true), "{l:?}");
    assert_eq!(l.len(), 2, "{l:?}");
    // When the last one taken is dated in the future, --latest says so and takes the one before.
    take(Some("+400d"));
    let out = host.fw(&["restore", "db", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("dated in the future") && stderr(&out).contains("--latest never prefers it"), "{}", stderr(&out));
}

#[test]
fn a_damaged_history_is_reported_as_damaged_and_the_daemon_starts_a_fresh_one() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &web_fleet(service("web")), "one");
    assert_eq!(code(&host.apply(&repo)), 0);
    let path = host.state_dir().join("history.sqlite");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let out = host.fw(&["history"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stderr(&out).contains("is damaged") && stderr(&out).contains("A damaged history"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("last good: none"), "{}", stdout(&out));
    // The daemon sets it aside, keeps the commit the host runs as good, and works on.
    let c2 = commit(&repo, &web_fleet(service("web").restart("always")), "two");
    let d = Daemon::start(&host, &repo, &["--health-grace", "1s"], &[]);
    host.wait("the daemon to converge with a fresh history", 30, || history(&host)["lastGood"] == c2.as_str());
    assert!(d.log().contains("a fresh history started"), "{}", d.log());
    assert_eq!(verdict(&host, &c1).as_deref(), Some("good"));
    let aside: Vec<String> = std::fs::read_dir(host.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.sqlite.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(host.state_dir().join(&aside[0])).unwrap(), vec![0x5au8; 8192]);
}

// --- the smaller items ----------------------------------------------------------------------

#[test]
fn a_symlink_in_an_owned_units_place_is_foreign_and_left_alone() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &web_fleet(service("web")), "one");
    assert_eq!(code(&host.apply(&repo)), 0);
    let unit = host.unit_dir().join("agent-web.service");
    let copy = host.sb.host_path("/run/fw-copy.service");
    std::fs::copy(&unit, &copy).unwrap();
    std::fs::remove_file(&unit).unwrap();
    std::os::unix::fs::symlink("/run/fw-copy.service", &unit).unwrap();
    let id = host.prop("agent-web.service", "InvocationID");
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&plan), 2, "{}", stdout(&plan));
    assert!(stdout(&plan).contains("agent-web.service in the unit directory is a symbolic link to /run/fw-copy.service"), "{}", stdout(&plan));
    commit(&repo, &web_fleet(service("web").restart("always")), "two");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&unit).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(host.prop("agent-web.service", "InvocationID"), id, "web was restarted");
    let status = host.fw(&["status"]);
    assert!(stdout(&status).contains("agent-web.service is a symbolic link"), "{}", stdout(&status));
}

#[test]
fn a_hand_added_inventory_entry_never_lets_prune_remove_a_file_fleetwright_did_not_write() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &web_fleet(service("web")), "one");
    assert_eq!(code(&host.apply(&repo)), 0);
    // An entry added by hand for a unit someone wrote, with a hash of something else.
    let hand = "[Service]\nExecStart=/bin/sleep 100000\n";
    std::fs::write(host.unit_dir().join("agent-ghost.service"), hand).unwrap();
    let mut inv = host.inventory();
    inv.files.insert("agent-ghost.service".into(), fleetwright::inventory::FileRecord::new("0".repeat(64), "ghost".into(), fleetwright::types::Role::Service));
    host.save_inventory(&inv);
    let out = host.apply(&repo);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("agent-ghost.service is in the inventory, but the file there is not one fleetwright wrote"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(host.unit_dir().join("agent-ghost.service")).unwrap(), hand);
}

#[test]
fn backups_with_a_damaged_inventory_and_restore_with_a_unit_that_will_not_start_say_what_is_wrong() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    sh(&host, "mkdir -p /srv/db && sqlite3 /srv/db/data.db 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'");
    commit(&repo, &db_agent(5), "db");
    assert_eq!(code(&host.apply(&repo)), 0);
    assert!(host.sb.command("systemctl").args(["start", "agent-db.backup.service"]).output().unwrap().status.success());
    // The service cannot start again after the swap (a drop-in by hand points it at nothing).
    let dropin = host.unit_dir().join("agent-db.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("broken.conf"), "[Service]\nExecStart=\nExecStart=/nonexistent/program\n").unwrap();
    host.systemctl(&["daemon-reload"]);
    let out = host.fw(&["restore", "db", "--latest"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("error: starting agent-db.service again: failed"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("JobResult") && !stderr(&out).contains("Ok(["), "a Debug dump: {}", stderr(&out));
    // A damaged inventory: said, not a silent exit 2.
    let inv_path = host.state_dir().join("inventory.json");
    std::fs::write(&inv_path, "{ not json").unwrap();
    let out = host.fw(&["backups", "db"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("the inventory is damaged"), "{}", stderr(&out));
}

#[test]
fn a_long_wait_for_a_start_says_what_it_waits_for() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // web is ordered after a job that takes 20 s: its start waits for it.
    let slow = ("slow.yaml", job("slow", "sleep 20").calendar("daily").yaml());
    commit(&repo, &[("fleet.yaml", FLEET.to_string()), slow.clone()], "slow");
    assert_eq!(code(&host.apply(&repo)), 0);
    // A run of the job in progress; web, ordered after it, starts once it is done.
    host.systemctl(&["start", "--no-block", "agent-slow.service"]);
    host.wait("the job to run", 10, || host.prop("agent-slow.service", "ActiveState") == "activating");
    commit(&repo, &[("fleet.yaml", FLEET.to_string()), slow, ("web.yaml", service("web").after(&["slow"]).yaml())], "web");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("waiting for 1 start job(s) to finish") && stderr(&out).contains("agent-web.service"), "{}", stderr(&out));
}

/// The helper units run a content-addressed copy of the binary in the state directory: the
/// binary that applied may move, be rebuilt the same or sit where the agents' users cannot
/// reach (a 0700 home); a copy that is gone is reported and put back by the next apply.
#[test]
fn helper_units_run_the_installed_copy_of_the_binary_wherever_it_was_applied_from() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The agent is not root, and keeps its logs: its log cleanup runs as `agent`.
    let agent = service("db")
        .user("agent")
        .logs(logs("/srv/logs").max_files(1))
        .backup(backup("/srv/db/data.db", "/srv/backups/db").keep_last(2).calendar("daily"))
        .yaml();
    sh(
        &host,
        "mkdir -p /srv/db /srv/logs /srv/private && chown agent /srv/logs /srv/db && chmod 700 /srv/private && sqlite3 /srv/db/data.db 'CREATE TABLE t(x);' && chown agent /srv/db/data.db && touch /srv/logs/a.log /srv/logs/b.log",
    );
    // Applied by a copy of the binary in a directory only root can enter.
    let copy = host.sb.host_path("/srv/private/fleetwright");
    std::fs::copy(env!("CARGO_BIN_EXE_fleetwright"), &copy).unwrap();
    commit(&repo, &[("fleet.yaml", FLEET.to_string()), ("db.yaml", agent)], "db");
    let o = host.sb.command("/srv/private/fleetwright").args(["--host", "vps-1", "apply", "--repo", repo.path().to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(host.unit_dir().join("agent-db.logs.service")).unwrap();
    let installed = unit.split_whitespace().find_map(|w| {
        w.trim_matches('"')
            .strip_prefix("ExecStart=")
            .map(|p| p.trim_matches('"').to_string())
            .or_else(|| w.trim_matches('"').starts_with("/var/lib/fleetwright/bin/").then(|| w.trim_matches('"').to_string()))
    });
    let installed =
        installed.filter(|p| p.starts_with("/var/lib/fleetwright/bin/fleetwright-")).unwrap_or_else(|| panic!("the helper runs the installed copy: {unit}"));
    let bin_mode = |p: &str| std::fs::metadata(host.sb.host_path(p)).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777);
    assert_eq!((bin_mode(&installed).unwrap(), bin_mode("/var/lib/fleetwright/bin").unwrap()), (0o755, 0o755));
    // The agent's user runs its log cleanup from there (the copy it was applied with, it could not reach).
    let run = |unit: &str| host.sb.command("systemctl").args(["start", unit]).output().unwrap();
    let o = run("agent-db.logs.service");
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), host.sb.journal("agent-db.logs.service"));
    assert_eq!(std::fs::read_dir(host.sb.host_path("/srv/logs")).unwrap().count(), 1, "maxFiles: 1 kept one");
    // The same binary from elsewhere is the same helper binary: nothing to do.
    std::fs::remove_file(&copy).unwrap();
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&plan), 0, "{}{}", stdout(&plan), stderr(&plan));
    assert!(run("agent-db.backup.service").status.success(), "{}", host.sb.journal("agent-db.backup.service"));
    // Another binary (an upgrade): the helper units are rewritten to its copy, a step the plan shows.
    let upgraded = host.sb.host_path("/srv/upgraded-fleetwright");
    std::fs::copy(env!("CARGO_BIN_EXE_fleetwright"), &upgraded).unwrap();
    std::fs::OpenOptions::new().append(true).open(&upgraded).unwrap().write_all(b"another build").unwrap();
    let plan = host.sb.command("/srv/upgraded-fleetwright").args(["--host", "vps-1", "plan", "--repo", repo.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(plan.status.code(), Some(1), "{}", String::from_utf8_lossy(&plan.stderr));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(shown.contains("agent-db.logs.service") && shown.contains("agent-db.backup.service") && shown.contains("+ExecStart="), "{shown}");
    // The installed copy gone: status says so, and the next apply puts it back.
    std::fs::remove_file(host.sb.host_path(&installed)).unwrap();
    let status = host.fw(&["status"]);
    assert!(stdout(&status).contains(&format!("agent-db.backup.service runs {installed}, which does not exist")), "{}", stdout(&status));
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(host.sb.host_path(&installed).is_file());
    assert!(run("agent-db.backup.service").status.success());
    assert!(!stdout(&host.fw(&["status"])).contains("does not exist"));
}
