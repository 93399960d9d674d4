//! Day-two operations in a real systemd: concurrency caps, heartbeats, health checks, journal.

use crate::real::*;

/// A job of the concurrency group `inference` that logs its start and end to
/// /run/fw-test/runs and takes `secs` in between; hourly, with a timeout of a minute, unless
/// the test says otherwise.
fn group_job(name: &str, when_full: &str, limit: u32, secs: f64) -> AgentSpec {
    job(
        name,
        &format!("mkdir -p /run/fw-test; echo \"start $(date +%s.%N) {name}\" >> /run/fw-test/runs; sleep {secs}; echo \"end $(date +%s.%N) {name}\" >> /run/fw-test/runs"),
    )
    .timeout("1m")
    .concurrency("inference", limit)
    .when_full(when_full)
}

/// A calendar expression firing once, `secs` from now (UTC, to the second).
fn in_seconds(secs: u64) -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(secs)).to_string();
    format!("{} {} UTC", &t[..10], &t[11..19])
}

/// The most runs that were ever in progress at the same time, from the start/end log.
fn max_overlap(log: &str) -> (usize, usize) {
    let mut events: Vec<(f64, i32)> = log
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next()?;
            let t: f64 = w.next()?.parse().ok()?;
            Some((t, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    // At equal times, an end comes before a start (the slot was free again).
    events.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in &events {
        cur += d;
        max = max.max(cur);
    }
    (max as usize, events.iter().filter(|e| e.1 == 1).count())
}

/// Five jobs of one group whose timers all fire at the same second, `at` seconds from now.
fn five(when_full: &str, limit: u32, secs: f64, at: u64) -> Vec<(String, String)> {
    let mut files = vec![("fleet.yaml".to_string(), FLEET.to_string())];
    let when = in_seconds(at);
    for n in ["a", "b", "c", "d", "e"] {
        files.push((format!("{n}.yaml"), group_job(&format!("job-{n}"), when_full, limit, secs).calendar(&when).accuracy("1s").yaml()));
    }
    files
}

fn commit_all(repo: &Repo, files: &[(String, String)]) -> String {
    repo.commit(&files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>(), "fleet")
}

const JOBS: [&str; 5] = ["agent-job-a.service", "agent-job-b.service", "agent-job-c.service", "agent-job-d.service", "agent-job-e.service"];

/// Wait for the five timers to fire (each job has run) and every run to end.
fn wait_for_the_timers(host: &Host) {
    host.wait("the timers to fire and the runs to end", 40, || {
        JOBS.iter().all(|u| host.prop(u, "ExecMainExitTimestampMonotonic") != "0" && matches!(host.prop(u, "ActiveState").as_str(), "inactive" | "failed"))
    });
}

#[test]
fn five_runs_of_a_group_with_limit_two_never_overlap_more_than_two() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit_all(&repo, &five("skip", 2, 1.5, 8));
    assert_eq!(code(&host.apply(&repo)), 0);
    wait_for_the_timers(&host);
    let log = std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).unwrap();
    let (max, runs) = max_overlap(&log);
    assert!(max <= 2, "at most 2 at once, saw {max}:\n{log}");
    assert!((1..=2).contains(&runs), "with skip, the full group's runs are skipped: {runs} ran\n{log}");
    for u in JOBS {
        assert_eq!(host.prop(u, "Result"), "success", "a skipped run counts as success: {u}");
    }
    let skipped = JOBS.iter().filter(|u| host.sb.journal(u).contains("is full")).count();
    assert_eq!(skipped, 5 - runs, "skips are logged");

    // whenFull: wait — all five run, still never more than two at once.
    std::fs::remove_file(host.sb.host_path("/run/fw-test/runs")).unwrap();
    let fired: Vec<String> = JOBS.iter().map(|u| host.prop(u, "ExecMainExitTimestampMonotonic")).collect();
    commit_all(&repo, &five("wait", 2, 1.0, 8));
    assert_eq!(code(&host.apply(&repo)), 0);
    host.wait("the second firing", 40, || {
        JOBS.iter().zip(&fired).all(|(u, f)| host.prop(u, "ExecMainExitTimestampMonotonic") != *f && host.prop(u, "ActiveState") == "inactive")
    });
    let log = std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).unwrap();
    let (max, runs) = max_overlap(&log);
    assert_eq!(runs, 5, "{log}");
    assert!(max <= 2, "at most 2 at once, saw {max}:\n{log}");
    assert_eq!(max, 2, "the cap is used, not serialized to one:\n{log}");
}

#[test]
fn a_slot_is_released_when_its_run_is_killed() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let files = vec![
        ("fleet.yaml".to_string(), FLEET.to_string()),
        ("a.yaml".into(), group_job("hog", "skip", 1, 1000.0).every("1h").yaml()),
        ("b.yaml".into(), group_job("next", "skip", 1, 0.1).every("1h").yaml()),
    ];
    commit_all(&repo, &files);
    assert_eq!(code(&host.apply(&repo)), 0);
    host.systemctl(&["start", "--no-block", "agent-hog.service"]);
    host.wait("the hog to hold the slot", 10, || std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).is_ok_and(|l| l.contains("start")));
    host.systemctl(&["start", "agent-next.service"]);
    assert!(host.sb.journal("agent-next.service").contains("is full"), "the slot is held");
    host.systemctl(&["kill", "--signal=KILL", "agent-hog.service"]);
    host.wait("the hog to die", 10, || host.prop("agent-hog.service", "ActiveState") != "activating");
    host.systemctl(&["start", "agent-next.service"]);
    host.wait("next to run", 10, || {
        std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).is_ok_and(|l| l.lines().any(|x| x.starts_with("end") && x.ends_with(" next")))
    });
}

#[test]
fn a_run_that_waits_for_a_slot_gives_up_at_its_timeout() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let files = vec![
        ("fleet.yaml".to_string(), FLEET.to_string()),
        ("a.yaml".into(), group_job("hog", "skip", 1, 1000.0).every("1h").yaml()),
        ("b.yaml".into(), group_job("waiter", "wait", 1, 0.1).every("1h").timeout("2s").yaml()),
    ];
    commit_all(&repo, &files);
    assert_eq!(code(&host.apply(&repo)), 0);
    host.systemctl(&["start", "--no-block", "agent-hog.service"]);
    host.wait("the hog to hold the slot", 10, || std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).is_ok_and(|l| l.contains("start")));
    let t0 = std::time::Instant::now();
    host.systemctl(&["start", "agent-waiter.service"]);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(1900), "it waited: {:?}", t0.elapsed());
    assert_eq!(host.prop("agent-waiter.service", "ActiveState"), "failed", "{}", host.sb.journal("agent-waiter.service"));
    assert!(!std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).unwrap().contains("waiter"), "it never ran");
}

#[test]
fn a_stale_heartbeat_restarts_the_service_and_status_says_so() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let hung = agent("hung").sh("mkdir -p /run/fw-test; touch /run/fw-test/hb; exec sleep 100000").heartbeat("/run/fw-test/hb", "2s");
    repo.commit(&[("fleet.yaml", FLEET), ("hung.yaml", &hung.yaml())], "hung");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(host.prop("agent-hung.heartbeat.timer", "ActiveState"), "active");
    let first = host.prop("agent-hung.service", "InvocationID");
    host.wait("the heartbeat check to restart the hung service", 15, || host.prop("agent-hung.service", "InvocationID") != first);
    assert!(host.sb.journal("agent-hung.heartbeat.service").contains("heartbeat stale"), "{}", host.sb.journal("agent-hung.heartbeat.service"));
    let status = host.fw(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let hung = s["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "hung").unwrap().clone();
    assert!(hung["problems"][0].as_str().unwrap_or("").contains("heartbeat went stale"), "{hung}");
    assert_eq!(host.prop("agent-hung.service", "ActiveState"), "active");
}

#[test]
fn a_failing_health_check_keeps_the_old_version_running() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The check runs as the agent runs: its user, environment, credentials, private /tmp; and
    // its arguments reach it verbatim (`$HOME` is not expanded by the manager).
    // (Only that the credentials are loaded: in the sandbox, systemd 252 cannot hand their
    // directory to a user other than root, for the service itself as much as for the check.)
    std::fs::create_dir_all(host.sb.host_path("/srv/creds")).unwrap();
    std::fs::write(host.sb.host_path("/srv/creds/tok"), "secret").unwrap();
    std::fs::write(host.sb.host_path("/tmp/host-only"), "").unwrap();
    let check = r#"echo checking as $(id -un); test "$(id -un)" = agent && test -n "$CREDENTIALS_DIRECTORY" && test ! -e /tmp/host-only && test -e "$WANT" && test "$1" = "\$HOME""#;
    let checked = |v: &str| {
        agent("checked")
            .sh(&format!("echo {v}; exec sleep 100000"))
            .user("agent")
            .env("WANT", "/run/fw-test/ok")
            .credential("tok", "/srv/creds/tok")
            .private_tmp(true)
            .check(&["/bin/sh", "-c", check, "check", "$HOME"])
            .yaml()
    };
    repo.commit(&[("fleet.yaml", FLEET), ("c.yaml", &checked("v1"))], "v1");
    assert_eq!(code(&host.apply(&repo)), 0);
    let first = host.prop("agent-checked.service", "InvocationID");
    let file = std::fs::read_to_string(host.unit_dir().join("agent-checked.service")).unwrap();

    repo.commit(&[("fleet.yaml", FLEET), ("c.yaml", &checked("v2"))], "v2");
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert!(stdout(&plan).contains("health.check runs first"), "{}", stdout(&plan));
    let out = host.apply(&repo);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("health.check failed, not restarted (the old version keeps running)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("checking as agent"), "the check's output is in the report: {}", stderr(&out));
    assert!(stdout(&out).contains("health.check failed, the old version keeps running"), "the plan printed is the one executed: {}", stdout(&out));
    assert_eq!(host.prop("agent-checked.service", "InvocationID"), first);
    assert_eq!(std::fs::read_to_string(host.unit_dir().join("agent-checked.service")).unwrap(), file, "the old file stays");

    // Once the check passes, the change goes through.
    std::fs::create_dir_all(host.sb.host_path("/run/fw-test")).unwrap();
    std::fs::write(host.sb.host_path("/run/fw-test/ok"), "").unwrap();
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_ne!(host.prop("agent-checked.service", "InvocationID"), first);
    assert!(host.prop("agent-checked.service", "ExecStart").contains("v2"));
}

#[test]
fn the_fleet_journal_limits_become_an_owned_journald_drop_in() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let dropin = host.sb.host_path("/etc/systemd/journald.conf.d/fleetwright.conf");
    let with_journal = format!("{FLEET}journal: {{maxUse: 64M, maxRetention: 7d}}\n");
    let web = service("web").yaml();
    repo.commit(&[("fleet.yaml", &with_journal), ("web.yaml", &web)], "journal");
    let before = host.prop("systemd-journald.service", "InvocationID");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(text.contains("SystemMaxUse=64M") && text.contains("RuntimeMaxUse=64M") && text.contains("MaxRetentionSec=7d"), "{text}");
    host.wait("journald to restart with the limits", 10, || host.prop("systemd-journald.service", "InvocationID") != before);
    host.wait("journald to report the cap", 10, || host.sb.journal("systemd-journald.service").contains("max 64.0M"));
    let inv = host.inventory();
    let recorded = &inv.config.get("/etc/systemd/journald.conf.d/fleetwright.conf").expect("the drop-in is recorded in the inventory").sha256;
    assert_eq!(*recorded, fleetwright::types::sha256(&text), "the inventory records what was written");
    // The same commit again: nothing, journald keeps running.
    let running = host.prop("systemd-journald.service", "InvocationID");
    assert!(stdout(&host.apply(&repo)).contains("Nothing to do"));
    assert_eq!(host.prop("systemd-journald.service", "InvocationID"), running);
    // Dropping `journal` removes our drop-in.
    repo.commit(&[("fleet.yaml", FLEET), ("web.yaml", &web)], "no journal");
    assert_eq!(code(&host.apply(&repo)), 0);
    assert!(!dropin.exists());
}

#[test]
fn a_journald_drop_in_we_did_not_write_is_refused() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let dropin = host.sb.host_path("/etc/systemd/journald.conf.d/fleetwright.conf");
    std::fs::write(&dropin, "[Journal]\nSystemMaxUse=1G\n").unwrap();
    repo.commit(&[("fleet.yaml", &format!("{FLEET}journal: {{maxUse: 64M}}\n")), ("web.yaml", &service("web").yaml())], "journal");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("fleetwright.conf exists but fleetwright did not write it"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&dropin).unwrap(), "[Journal]\nSystemMaxUse=1G\n");
}

#[test]
fn backups_run_while_the_agent_writes_and_restore_round_trips() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The agent: a long-running writer inserting rows into its SQLite database.
    let writer = agent("store")
        .sh(r#"mkdir -p /srv/fw-store; i=0; while true; do i=$((i+1)); sqlite3 /srv/fw-store/messages.db "CREATE TABLE IF NOT EXISTS m (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO m (body) VALUES ('row $i');" || exit 1; done"#)
        .backup(backup("/srv/fw-store/messages.db", "/srv/fw-backups/store").calendar("*-*-* 03:00:00").keep_last(3).verify().wal())
        .logs(logs("/srv/fw-store").matching("*.log").max_files(2));
    repo.commit(&[("fleet.yaml", FLEET), ("store.yaml", &writer.yaml())], "store");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let q = |path: &str, sql: &str| -> String {
        let o = host.sb.command("sqlite3").args(["-cmd", ".timeout 5000", path, sql]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let committed = || q("/srv/fw-store/messages.db", "SELECT count(*) FROM m;").parse::<u64>().unwrap_or(0);
    // (The database made by the writer, not by a query of ours.)
    host.wait("the database to be made", 10, || host.sb.host_path("/srv/fw-store/messages.db").exists());
    host.wait("rows to be written", 10, || committed() > 0);
    // Four backups while the writer keeps inserting (another process: each row its own
    // committed transaction); keep: last 3.
    let mut committed_before = 0;
    for _ in 0..4 {
        // Every row committed before the backup starts must be in it; and each backup has
        // rows the one before did not.
        host.wait("the writer to commit more rows", 10, || committed() > committed_before);
        committed_before = committed();
        host.systemctl(&["start", "agent-store.backup.service"]);
        assert_eq!(host.prop("agent-store.backup.service", "Result"), "success", "{}", host.sb.journal("agent-store.backup.service"));
    }
    let listed = host.fw(&["backups", "store", "--json"]);
    let l: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let files = l[0][1].as_array().unwrap();
    assert_eq!(files.len(), 3, "keep last 3: {l}");
    let newest = files[0]["path"].as_str().unwrap().to_string();
    // The backup is consistent: integrity ok, rows 1..=n with no gap, none committed before
    // it started missing.
    assert_eq!(q(&newest, "PRAGMA integrity_check;"), "ok");
    let (n, max): (u64, u64) = {
        let r = q(&newest, "SELECT count(*) || ' ' || max(id) FROM m;");
        let mut it = r.split_whitespace().map(|x| x.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(n > 0 && n == max, "a consistent prefix: {n} rows, max id {max}");
    assert!(committed_before > 0 && n >= committed_before, "{committed_before} rows were committed before the backup started, {n} are in it");
    assert_eq!(q("/srv/fw-store/messages.db", "PRAGMA journal_mode;"), "wal", "wal: true");

    // Restore: stops the writer, swaps the newest backup in, keeps the replaced file, starts it.
    let before = host.prop("agent-store.service", "InvocationID");
    let out = host.fw(&["restore", "store", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("the replaced database is kept at"), "{}", stdout(&out));
    assert_ne!(host.prop("agent-store.service", "InvocationID"), before, "restarted");
    assert_eq!(host.prop("agent-store.service", "ActiveState"), "active");
    let kept = std::fs::read_dir(host.sb.host_path("/srv/fw-store"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("replaced"))
        .count();
    assert!(kept >= 1, "the replaced database is kept");
    // The live database is now the backup: the restarted writer (counting from 1 again)
    // writes its first row right after the backup's last one. In the replaced database that
    // id held a later row of the first run.
    host.wait("the writer to write after the restore", 10, || q("/srv/fw-store/messages.db", "SELECT count(*) FROM m;").parse::<u64>().unwrap_or(0) > max);
    assert_eq!(q("/srv/fw-store/messages.db", &format!("SELECT body FROM m WHERE id = {};", max + 1)), "row 1", "the restored rows are the backup's");
    assert_eq!(q("/srv/fw-store/messages.db", &format!("SELECT count(*) FROM m WHERE id <= {max};")).parse::<u64>().unwrap(), max);

    // Log retention as a unit: keeps the newest two *.log files, runs as the agent. Their
    // times a minute apart, agent-4.log the newest.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for i in 0..5 {
        let path = host.sb.host_path(format!("/srv/fw-store/agent-{i}.log"));
        std::fs::write(&path, "x").unwrap();
        let t = nix::sys::time::TimeSpec::new(now - 60 * (5 - i), 0);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    }
    host.systemctl(&["start", "agent-store.logs.service"]);
    assert_eq!(host.prop("agent-store.logs.service", "Result"), "success", "{}", host.sb.journal("agent-store.logs.service"));
    let mut logs: Vec<String> = std::fs::read_dir(host.sb.host_path("/srv/fw-store"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    assert_eq!(logs, ["agent-3.log", "agent-4.log"]);
}

#[test]
fn a_failed_backup_is_a_failed_unit_visible_in_status() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let nodb = agent("nodb").command(&["/bin/sleep", "100000"]).backup(backup("/srv/fw-none/missing.db", "/srv/fw-none-backups"));
    repo.commit(&[("fleet.yaml", FLEET), ("nodb.yaml", &nodb.yaml())], "nodb");
    assert_eq!(code(&host.apply(&repo)), 0);
    host.systemctl(&["start", "agent-nodb.backup.service"]);
    assert_eq!(host.prop("agent-nodb.backup.service", "ActiveState"), "failed");
    let s: serde_json::Value = serde_json::from_slice(&host.fw(&["status", "--json"]).stdout).unwrap();
    let a = s["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "nodb").unwrap().clone();
    assert_eq!(a["state"], "failed", "{a}");
    assert!(a["problems"][0].as_str().unwrap().contains("agent-nodb.backup.service failed"), "{a}");
}

#[test]
fn success_exit_codes_count_as_success() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let noop = job("noop", "echo nothing to do; exit 75").calendar("hourly");
    repo.commit(&[("fleet.yaml", FLEET), ("noop.yaml", &noop.clone().success_exit_codes(&[75]).yaml())], "75 ok");
    assert_eq!(code(&host.apply(&repo)), 0);
    host.systemctl(&["start", "agent-noop.service"]);
    assert_eq!(host.prop("agent-noop.service", "Result"), "success");
    assert_eq!(host.prop("agent-noop.service", "ExecMainStatus"), "75");
    repo.commit(&[("fleet.yaml", FLEET), ("noop.yaml", &noop.yaml())], "75 is a failure");
    assert_eq!(code(&host.apply(&repo)), 0);
    host.systemctl(&["start", "agent-noop.service"]);
    assert_eq!(host.prop("agent-noop.service", "Result"), "exit-code");
}

#[test]
fn log_retention_as_a_unit_keeps_what_it_should_and_never_follows_a_symlink() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let p = |rel: &str| host.sb.host_path(format!("/srv/{rel}"));
    let now = std::time::SystemTime::now();
    let age = |path: &std::path::Path, days: u64| {
        let t = now - std::time::Duration::from_secs(days * 86_400);
        let ts = nix::sys::time::TimeSpec::new(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64, 0);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    };
    let agent_owns = |path: &std::path::Path| std::os::unix::fs::lchown(path, Some(4242), Some(4242)).unwrap();
    // Outside the declared directories: a file and a directory that symlinks point to.
    std::fs::create_dir_all(p("outside/dir")).unwrap();
    std::fs::write(p("outside/victim.log"), "keep me").unwrap();
    std::fs::write(p("outside/dir/also.log"), "keep me").unwrap();
    age(&p("outside/victim.log"), 30);
    age(&p("outside/dir/also.log"), 30);
    std::fs::create_dir_all(p("groups")).unwrap();
    agent_owns(&p("groups"));
    for g in ["g1", "g2"] {
        std::fs::create_dir_all(p(&format!("groups/{g}/logs/sub.log"))).unwrap();
        for d in [&p(&format!("groups/{g}")), &p(&format!("groups/{g}/logs")), &p(&format!("groups/{g}/logs/sub.log"))] {
            agent_owns(d);
        }
        for days in [1, 2, 3, 4, 5, 10] {
            let f = p(&format!("groups/{g}/logs/agent-{days:02}d.log"));
            std::fs::write(&f, "x".repeat(100)).unwrap();
            agent_owns(&f);
            age(&f, days);
        }
        std::fs::write(p(&format!("groups/{g}/logs/notes.txt")), "not matched").unwrap();
        age(&p(&format!("groups/{g}/logs/notes.txt")), 30);
        // An old-looking link to a file outside: never followed, never removed.
        std::os::unix::fs::symlink("/srv/outside/victim.log", p(&format!("groups/{g}/logs/old-link.log"))).unwrap();
        age(&p(&format!("groups/{g}/logs/old-link.log")), 30);
    }
    // A whole group whose `logs` is a link to a directory outside: skipped.
    std::fs::create_dir_all(p("groups/g3")).unwrap();
    std::os::unix::fs::symlink("/srv/outside/dir", p("groups/g3/logs")).unwrap();
    let groups = agent("groups").command(&["/bin/sleep", "100000"]).user("agent").logs(logs("/srv/groups/*/logs").matching("*.log").max_age("7d").max_files(3));
    repo.commit(&[("fleet.yaml", FLEET), ("groups.yaml", &groups.yaml())], "groups");
    assert_eq!(code(&host.apply(&repo)), 0);
    assert!(std::fs::read_to_string(host.unit_dir().join("agent-groups.logs.service")).unwrap().contains("User=agent"));
    host.systemctl(&["start", "agent-groups.logs.service"]);
    let journal = host.sb.journal("agent-groups.logs.service");
    assert_eq!(host.prop("agent-groups.logs.service", "Result"), "success", "{journal}");
    for g in ["g1", "g2"] {
        let mut left: Vec<String> =
            std::fs::read_dir(p(&format!("groups/{g}/logs"))).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        left.sort();
        // Older than 7 days: gone; of the rest, the newest 3 stay. The link, the directory
        // and the unmatched file are left alone.
        assert_eq!(left, ["agent-01d.log", "agent-02d.log", "agent-03d.log", "notes.txt", "old-link.log", "sub.log"], "{g}: {journal}");
    }
    assert_eq!(std::fs::read_to_string(p("outside/victim.log")).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(p("outside/dir/also.log")).unwrap(), "keep me");
    // What it removed and freed is in the journal: 3 files of 100 bytes per group.
    assert!(journal.contains("removed 6 files, 600 bytes freed"), "{journal}");
}

#[test]
fn concurrency_slots_work_for_a_user_manager() {
    let Some(host) = Host::boot_with(true) else { return };
    let repo = Repo::new();
    let files = vec![
        ("a.yaml".to_string(), group_job("hog", "skip", 1, 1000.0).every("1h").user("me").yaml()),
        ("b.yaml".into(), group_job("next", "skip", 1, 0.1).every("1h").user("me").yaml()),
    ];
    commit_all(&repo, &files);
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    host.systemctl(&["start", "--no-block", "agent-hog.service"]);
    host.wait("the hog to hold the slot", 10, || std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).is_ok_and(|l| l.contains("start")));
    host.systemctl(&["start", "agent-next.service"]);
    assert_eq!(host.prop("agent-next.service", "Result"), "success");
    assert!(!std::fs::read_to_string(host.sb.host_path("/run/fw-test/runs")).unwrap().contains("next"), "the group was full: skipped");
    // The slots live in the user's runtime directory.
    let slots = host.sb.host_path(format!("{}/fleetwright/slots/inference/0.lock", fleetwright_sandbox::USER_RUNTIME_DIR));
    assert!(slots.exists(), "{}", slots.display());
}
