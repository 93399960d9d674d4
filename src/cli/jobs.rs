//! What the rendered helper units run (slots, heartbeats, log retention, backups, mkdir,
//! signal), and the operator's backups and restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fleetwright::host::state::StateDir;
use fleetwright::ops;

use super::args::{Globals, WhenFull};
use super::{Error, Outcome, json, runtime};

pub fn slot_prepare(dir: &Path, group: &str, limit: u32, users: &[String]) -> Result<Outcome, Error> {
    let done = ops::slot::prepare(dir, group, limit, users).map_err(|e| Error::failed(format!("preparing the slots of {group}: {e}")))?;
    for u in &done.unknown_users {
        eprintln!("note: user {u} of concurrency group {group} does not exist on this host: no slot access granted to it");
    }
    for p in &done.replaced {
        eprintln!("note: replaced {} (a lock file others could open) by a new one", p.display());
    }
    Ok(Outcome::Done)
}

/// Take a slot of `group`, then become `command` (exec), holding the slot until it exits.
pub fn slot(dir: &Path, group: &str, limit: u32, when_full: WhenFull, timeout: Option<Duration>, command: &[String]) -> Result<Outcome, Error> {
    use std::os::unix::process::CommandExt;
    let wait = when_full == WhenFull::Wait;
    let taken = ops::slot::acquire(dir, group, limit, wait, timeout)
        .map_err(|e| Error::failed(format!("taking a slot of {group}: {e} (is `fleetwright slot-prepare` run before?)")))?;
    let Some(lock) = taken else {
        if wait {
            return Err(Error::job_failed(format!("concurrency group {group} stayed full for the whole timeout: this run did not start")));
        }
        // Counted as success: a full group is the cap working, not a failure.
        println!("concurrency group {group} is full ({limit} of {limit} runs): skipped this run");
        return Ok(Outcome::Done);
    };
    ops::slot::keep_across_exec(lock).map_err(Error::failed)?;
    let e = std::process::Command::new(&command[0]).args(&command[1..]).exec();
    Err(Error::failed(format!("cannot execute {}: {e}", command[0])))
}

pub fn heartbeat(g: &Globals, agent: &str, file: &Path, max_age: Duration, unit: &str) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    match runtime()?.block_on(ops::heartbeat::check(agent, file, max_age, unit, &cfg.state_dir, cfg.scope)).map_err(Error::failed)? {
        ops::heartbeat::Verdict::Fine(m) => println!("{m}"),
        // A failed run: a hung service is a failure to report (`OnFailure=` of this unit, when
        // the Fleet has a `notify` list), though the restart is done.
        ops::heartbeat::Verdict::Restarted(m) => return Err(Error::job_failed(format!("stale heartbeat: {m}"))),
    }
    Ok(Outcome::Done)
}

/// `notify-report`: what the rendered `<agent>.notify@<unit>.service` runs. It always ends
/// well (the unit it reports on has ended anyway); its own trouble is said in its journal.
pub fn notify_report(g: &Globals, unit: &str, success: bool) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    let user = cfg.scope == fleetwright::types::Scope::User;
    // A successful run needs nothing from systemd: only the unit's failing mark is looked at.
    let m = if success {
        ops::failure::Monitor { unit: unit.to_string(), result: "success".into(), ..Default::default() }
    } else {
        ops::failure::Monitor::gather(unit, user)
    };
    match ops::failure::report(&cfg.state_dir, &cfg.host, &m, user) {
        Ok(ops::failure::Reported::Queued(id)) => println!("queued report {id}: {}", ops::failure::failure_line(&m)),
        Ok(ops::failure::Reported::Folded(n)) => println!("{}: folded ({n} since the last report)", ops::failure::failure_line(&m)),
        Ok(ops::failure::Reported::Recovered) => println!("{} recovered: reported", m.unit),
        Ok(ops::failure::Reported::Nothing) => return Ok(Outcome::Done),
        Err(e) => {
            eprintln!("cannot queue the report of {}: {e}", m.unit);
            return Ok(Outcome::Done);
        }
    }
    // No daemon to deliver it: deliver now, to the sinks the daemon last used (bounded by the
    // unit's TimeoutStartSec=).
    if !ops::failure::daemon_running(&cfg.state_dir) {
        // Well within the unit's TimeoutStartSec=30s, a request's 10 s included.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let sinks = fleetwright::daemon::history::History::open(&cfg.state_dir).and_then(|h| fleetwright::daemon::notifications::stored_sinks(&h));
        match sinks {
            Ok(sinks) if !sinks.is_empty() => match fleetwright::daemon::notifications::pass(&cfg.state_dir, &sinks, &sinks, Some(deadline)) {
                Ok((outcomes, _)) => {
                    for (sink, ok) in outcomes {
                        println!("{sink}: {}", if ok { "delivered" } else { "not delivered now; kept for the daemon" });
                    }
                }
                Err(e) => eprintln!("cannot deliver: {e}"),
            },
            Ok(_) => println!("no daemon runs and none recorded a sink: the report waits in the outbox"),
            Err(e) => eprintln!("cannot read the sinks: {e}"),
        }
    }
    Ok(Outcome::Done)
}

/// `notify test`: a test event to every sink, each answer printed.
pub fn notify_test(g: &Globals, repo: Option<&str>, branch: &str, rev: &str, path: Option<&str>, notify_url: Option<&str>) -> Result<Outcome, Error> {
    use fleetwright::daemon::notifications as n;
    let cfg = g.host_config();
    let (sinks, commit) = match repo {
        Some(r) => {
            let src = super::args::SourceArgs { repo: r.to_string(), branch: branch.to_string(), rev: rev.to_string(), path: path.map(str::to_string) };
            let (files, fleet) = super::load_commit(g, &src, rev, false)?;
            (n::sinks_for(&fleet.notify, notify_url, r), files.commit)
        }
        // The sinks the daemon (or apply) last recorded; none when neither ever ran here (the
        // history is not created to find that out).
        None if cfg.layout().history().exists() => {
            let h = fleetwright::daemon::history::History::open(&cfg.state_dir).map_err(Error::failed)?;
            let mut sinks = n::stored_sinks(&h).map_err(Error::failed)?;
            sinks.extend(n::sinks_for(&[], notify_url, ""));
            let commit = h.last_good().map_err(Error::failed)?.unwrap_or_default();
            (sinks, commit)
        }
        None => (n::sinks_for(&[], notify_url, ""), String::new()),
    };
    if sinks.is_empty() {
        return Err(Error::failed(
            "no sink to test: the Fleet has no `notify` list (give --repo to read one, or run the daemon once with it), and no --notify-url was given",
        ));
    }
    let ev = fleetwright::notify::Event {
        id: format!("test:{}", fleetwright::host::now_rfc3339()),
        event: "test".into(),
        commit: commit.clone(),
        host: cfg.host.clone(),
        message: format!("a test of fleetwright's notifications from {}", cfg.host),
        at: fleetwright::host::now_rfc3339(),
        ..Default::default()
    };
    let answers = n::test_all(&sinks, &ev);
    let mut failed = 0;
    for (key, answer) in &answers {
        match answer {
            Ok(reply) if (200..300).contains(&reply.status) => println!("{key}: HTTP {} {}", reply.status, reply.body),
            Ok(reply) => {
                failed += 1;
                println!("{key}: FAILED: HTTP {} {}", reply.status, reply.body);
            }
            Err(e) => {
                failed += 1;
                println!("{key}: FAILED: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Error::job_failed(format!("{failed} of {} sinks failed", answers.len())));
    }
    Ok(Outcome::Done)
}

pub fn logs_clean(
    path: &str,
    pattern: &str,
    max_age: Option<Duration>,
    max_files: Option<u64>,
    max_size: Option<&str>,
    dry_run: bool,
    as_json: bool,
) -> Result<Outcome, Error> {
    let max_size = max_size.map(|s| fleetwright::spec::values::parse_size(s, false)).transpose().map_err(|e| Error::failed(format!("--max-size: {e}")))?;
    let rule = ops::retain::Rule { path: path.to_string(), pattern: pattern.to_string(), max_age, max_files, max_size: max_size.and_then(|s| s.bytes()) };
    let report = ops::retain::apply(&rule, SystemTime::now(), dry_run).map_err(|e| Error::failed(format!("{path}: {e}")))?;
    if as_json {
        println!("{}", report.to_json());
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for r in &report.removed {
            println!("{verb} {} ({} bytes, {})", r.path, r.bytes, r.reason);
        }
        println!(
            "{path}/{pattern}: {verb} {} files, {} bytes freed; kept {}; {} symlinks left alone; {} vanished meanwhile",
            report.removed.len(),
            report.freed,
            report.kept,
            report.skipped_symlinks,
            report.vanished
        );
    }
    if report.errors.is_empty() { Ok(Outcome::Done) } else { Err(Error::job_failed(report.errors.join("\nerror: "))) }
}

pub fn backup(sqlite: &Path, to: &Path, policy: ops::backup::Policy, verify: bool, wal: bool) -> Result<Outcome, Error> {
    // A failed backup is a failed unit: visible in `status` and the journal.
    let r = ops::backup::backup(sqlite, to, &policy, verify, wal, SystemTime::now()).map_err(Error::job_failed)?;
    println!(
        "backed up {} to {} ({} bytes, {} pages, {:.2}s{}); pruned {}",
        sqlite.display(),
        r.file.path,
        r.file.bytes,
        r.pages,
        r.seconds,
        if r.verified { ", verified" } else { "" },
        r.pruned.len()
    );
    Ok(Outcome::Done)
}

pub fn backups(g: &Globals, agent: &str, as_json: bool) -> Result<Outcome, Error> {
    let inv = StateDir::new(g.host_config().state_dir).load_inventory().map_err(Error::failed)?;
    let rec = inv.agents.get(agent).ok_or_else(|| Error::failed(format!("no agent {agent:?} is deployed on this host")))?;
    let mut all = Vec::new();
    for (db, dir) in &rec.backups {
        let files = ops::backup::list(Path::new(db), Path::new(dir), SystemTime::now()).map_err(|e| Error::failed(format!("{dir}: {e}")))?;
        all.push((db.clone(), files));
    }
    if as_json {
        println!("{}", json(&all)?);
        return Ok(Outcome::Done);
    }
    for (db, files) in &all {
        println!("{db}: {} backups, the last taken first", files.len());
        for f in files {
            let note =
                if f.future { "  (dated in the future: its clock was wrong, or it was copied in; never taken by --latest, not counted in keep)" } else { "" };
            println!("  {}  {:>12} bytes  {}{note}", f.taken_at, f.bytes, f.path);
        }
    }
    Ok(Outcome::Done)
}

pub fn restore(g: &Globals, agent: &str, from: Option<&Path>, latest: bool, db: Option<&str>) -> Result<Outcome, Error> {
    use ops::restore::{agent_backups, latest_backup, restore};
    let cfg = g.host_config();
    let inv = StateDir::new(&cfg.state_dir).load_inventory().map_err(Error::failed)?;
    let (db, dir) = agent_backups(&inv, agent, db).map_err(Error::failed)?;
    let file: PathBuf = match (from, latest) {
        (Some(f), _) => f.to_path_buf(),
        (None, true) => {
            let (newest, skipped) = latest_backup(&db, &dir, SystemTime::now()).map_err(Error::failed)?;
            for s in skipped {
                eprintln!(
                    "note: {} was taken later, but its name is dated in the future ({}): --latest never prefers it; restore it with --from if it is the one you want",
                    s.path, s.taken_at
                );
            }
            newest
        }
        (None, false) => return Err(Error::failed(format!("say which backup: --from FILE, or --latest (see `fleetwright backups {agent}`)"))),
    };
    let done = runtime()?
        .block_on(restore(&cfg, agent, &db, &file, |stopping| {
            println!("stopping {}", if stopping.is_empty() { "nothing (no unit of it is running)".to_string() } else { stopping.join(", ") });
        }))
        .map_err(Error::failed)?;
    println!(
        "restored {db} from {}{}",
        file.display(),
        done.replaced.map(|p| format!("; the replaced database is kept at {}", p.display())).unwrap_or_default()
    );
    for (unit, what) in &done.not_started {
        eprintln!("error: starting {unit} again: {what} (see `systemctl status {unit}`)");
    }
    Ok(if done.not_started.is_empty() { Outcome::Done } else { Outcome::UnitFailed })
}

/// `mkdir -p -m MODE PATH`: what a rendered unit needs made before it runs (the backup
/// directory, as root): never through a link, only in directories root alone can change
/// (`ops::walk`).
pub fn mkdir(path: &Path, mode: u32) -> Result<Outcome, Error> {
    std::path::absolute(path)
        .map_err(|e| e.to_string())
        .and_then(|p| ops::walk::make_dir(&p, mode, ops::walk::Trust::Root).map_err(|e| e.to_string()))
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    Ok(Outcome::Done)
}

/// `kill -SIGNAL PID`.
pub fn signal(name: &str, pid: i32) -> Result<Outcome, Error> {
    use nix::sys::signal::Signal;
    let bare = name.trim_start_matches("SIG");
    let sig = bare.parse::<Signal>().or_else(|_| format!("SIG{bare}").parse()).map_err(|_| Error::failed(format!("unknown signal {name:?}")))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| Error::failed(format!("signal {sig} to {pid}: {e}")))?;
    Ok(Outcome::Done)
}
