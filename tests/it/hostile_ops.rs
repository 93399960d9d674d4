//! The helpers that run as root on an agent's behalf (backups, restore, concurrency slots),
//! attacked by the agent's user and by other local users, in a real systemd: a symlinked or
//! swapped path, a file that is not a database, a lock file another user opens. Each case is a
//! hole that was open once; it stays here for good.

use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::real::*;

const AGENT_UID: u32 = 4242;
const NOBODY: &str = "65534";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The agent's user owns `p` (not following a link).
fn agent_owns(p: &Path) {
    lchown(p, Some(AGENT_UID), Some(AGENT_UID)).unwrap();
}

/// Run SQL on a database inside the sandbox (SQLite resolves /proc/PID/root: never from the host).
fn sqlite(host: &Host, db: &str, sql: &str) -> String {
    let o = host.sb.command("sqlite3").args([db, sql]).output().unwrap();
    assert!(o.status.success(), "sqlite3 {db}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `program args` inside the sandbox as user `uid` (gid the same, no other groups).
fn as_user(host: &Host, uid: &str, program: &str, args: &[&str]) -> Command {
    let mut c = host.sb.command("setpriv");
    c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--", program]).args(args);
    c
}

/// The copy of fleetwright apply installed in the sandbox's state directory (`host::exe`), as
/// a path inside the sandbox.
fn installed_fleetwright(host: &Host) -> String {
    let bin = host.sb.host_path("/var/lib/fleetwright/bin");
    let name = std::fs::read_dir(&bin)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("fleetwright-"))
        .unwrap_or_else(|| panic!("no installed fleetwright in {}", bin.display()));
    format!("/var/lib/fleetwright/bin/{name}")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Start a helper unit and wait for its journal to say `what`; the unit must have failed.
fn start_and_expect_failure(host: &Host, unit: &str, what: &str) -> String {
    host.systemctl(&["start", unit]);
    assert_eq!(host.prop(unit, "Result"), "exit-code", "{unit}: {}", host.sb.journal(unit));
    host.wait(&format!("{unit} to report {what:?}"), 10, || host.sb.journal(unit).contains(what));
    host.sb.journal(unit)
}

fn backup_agent(name: &str, sqlite: &str, to: &str) -> String {
    agent(name).command(&["/bin/sleep", "100000"]).user("agent").backup(backup(sqlite, to).wal()).yaml()
}

#[test]
fn a_symlinked_database_to_a_root_only_database_is_never_copied() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let p = |rel: &str| host.sb.host_path(rel);
    // Another program's database, root's alone.
    std::fs::create_dir_all(p("/srv/secret")).unwrap();
    chmod(&p("/srv/secret"), 0o700);
    sqlite(&host, "/srv/secret/root.db", "CREATE TABLE s(x); INSERT INTO s VALUES ('root only');");
    chmod(&p("/srv/secret/root.db"), 0o600);
    let secret_before = std::fs::read(p("/srv/secret/root.db")).unwrap();
    // The agent's own directory, where it points its `sqlite:` at the secret one: a link at
    // the end (the database) and one in the middle (a directory on the way).
    std::fs::create_dir_all(p("/srv/agentdata")).unwrap();
    agent_owns(&p("/srv/agentdata"));
    symlink("/srv/secret/root.db", p("/srv/agentdata/messages.db")).unwrap();
    symlink("/srv/secret", p("/srv/agentdata/store")).unwrap();
    agent_owns(&p("/srv/agentdata/messages.db"));
    agent_owns(&p("/srv/agentdata/store"));
    repo.commit(
        &[
            ("fleet.yaml", FLEET),
            ("a.yaml", &backup_agent("link-end", "/srv/agentdata/messages.db", "/srv/fw-backups/end")),
            ("b.yaml", &backup_agent("link-mid", "/srv/agentdata/store/root.db", "/srv/fw-backups/mid")),
        ],
        "links",
    );
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (unit, to) in [("agent-link-end.backup.service", "/srv/fw-backups/end"), ("agent-link-mid.backup.service", "/srv/fw-backups/mid")] {
        let journal = start_and_expect_failure(&host, unit, "is a symbolic link");
        assert!(journal.contains("nothing was backed up"), "{journal}");
        assert_eq!(names(&p(to)), Vec::<String>::new(), "{unit}: no backup, no temporary file in `to`");
    }
    assert_eq!(std::fs::read(p("/srv/secret/root.db")).unwrap(), secret_before, "wal: true did not touch the other database");
    assert_eq!(names(&p("/srv/secret")), ["root.db"], "no -wal or -shm beside it");
    let status: serde_json::Value = serde_json::from_slice(&host.fw(&["status", "--json"]).stdout).unwrap();
    let a = status["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "link-end").unwrap().clone();
    assert_eq!(a["state"], "failed", "a refused backup is a failed unit: {a}");
}

#[test]
fn wal_true_on_an_empty_or_non_sqlite_file_changes_nothing() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let p = |rel: &str| host.sb.host_path(rel);
    std::fs::create_dir_all(p("/srv/agentdata")).unwrap();
    agent_owns(&p("/srv/agentdata"));
    std::fs::write(p("/srv/agentdata/empty.db"), "").unwrap();
    std::fs::write(p("/srv/agentdata/notes.db"), "meeting notes, not a database, however long they are\n").unwrap();
    for f in ["/srv/agentdata/empty.db", "/srv/agentdata/notes.db"] {
        agent_owns(&p(f));
    }
    repo.commit(
        &[
            ("fleet.yaml", FLEET),
            ("a.yaml", &backup_agent("empty", "/srv/agentdata/empty.db", "/srv/fw-backups/empty")),
            ("b.yaml", &backup_agent("notes", "/srv/agentdata/notes.db", "/srv/fw-backups/notes")),
        ],
        "not databases",
    );
    assert_eq!(code(&host.apply(&repo)), 0);
    let before = names(&p("/srv/agentdata"));
    let journal = start_and_expect_failure(&host, "agent-empty.backup.service", "/srv/agentdata/empty.db is empty");
    assert!(journal.contains("nothing was changed"), "{journal}");
    start_and_expect_failure(&host, "agent-notes.backup.service", "/srv/agentdata/notes.db is not an SQLite database");
    assert_eq!(std::fs::read(p("/srv/agentdata/empty.db")).unwrap(), b"", "the empty file was not made a database");
    assert_eq!(std::fs::read_to_string(p("/srv/agentdata/notes.db")).unwrap(), "meeting notes, not a database, however long they are\n");
    assert_eq!(names(&p("/srv/agentdata")), before, "no -wal, -shm or anything else beside them");
    assert_eq!(names(&p("/srv/fw-backups/empty")), Vec::<String>::new());
}

#[test]
fn backups_are_roots_alone_and_restore_through_a_symlinked_parent_writes_nothing_outside() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let p = |rel: &str| host.sb.host_path(rel);
    // The agent's database in its own directory (the agent owns the directories above too).
    std::fs::create_dir_all(p("/srv/keeper/store")).unwrap();
    sqlite(&host, "/srv/keeper/store/messages.db", "CREATE TABLE m(body); INSERT INTO m VALUES ('one'), ('two');");
    for f in ["/srv/keeper", "/srv/keeper/store", "/srv/keeper/store/messages.db"] {
        agent_owns(&p(f));
    }
    // A directory of root's that the agent would like written into.
    std::fs::create_dir_all(p("/srv/victim")).unwrap();
    std::fs::write(p("/srv/victim/precious"), "root's").unwrap();
    let keeper = backup_agent("keeper", "/srv/keeper/store/messages.db", "/srv/fw-backups/keeper");
    // And an agent whose `to:` is below its own directory: refused, nothing made there.
    std::fs::create_dir_all(p("/srv/careless")).unwrap();
    agent_owns(&p("/srv/careless"));
    std::fs::copy(p("/srv/keeper/store/messages.db"), p("/srv/careless/c.db")).unwrap();
    agent_owns(&p("/srv/careless/c.db"));
    let careless = backup_agent("careless", "/srv/careless/c.db", "/srv/careless/backups");
    repo.commit(&[("fleet.yaml", FLEET), ("keeper.yaml", &keeper), ("careless.yaml", &careless)], "keeper");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    host.systemctl(&["start", "agent-keeper.backup.service"]);
    assert_eq!(host.prop("agent-keeper.backup.service", "Result"), "success", "{}", host.sb.journal("agent-keeper.backup.service"));
    let backups = names(&p("/srv/fw-backups/keeper"));
    // The backup, and the ledger of the order backups were taken in.
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert_eq!(backups[0], ".messages.taken");
    for b in &backups {
        let m = std::fs::metadata(p(&format!("/srv/fw-backups/keeper/{b}"))).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600), "{b}: a backup (and its ledger) is root's alone");
    }
    let d = std::fs::metadata(p("/srv/fw-backups/keeper")).unwrap();
    assert_eq!((d.uid(), d.mode() & 0o7777), (0, 0o750));
    assert_eq!(sqlite(&host, "/srv/keeper/store/messages.db", "PRAGMA journal_mode;"), "wal");

    let journal = start_and_expect_failure(&host, "agent-careless.backup.service", "/srv/careless belongs to agent (uid 4242)");
    assert!(journal.contains("must belong to root"), "{journal}");
    assert_eq!(names(&p("/srv/careless")), ["c.db"], "nothing made in the agent's directory");

    // The agent swaps its directory for a link to root's directory, then root restores.
    std::fs::rename(p("/srv/keeper/store"), p("/srv/keeper/store-old")).unwrap();
    symlink("/srv/victim", p("/srv/keeper/store")).unwrap();
    agent_owns(&p("/srv/keeper/store"));
    let running = host.prop("agent-keeper.service", "InvocationID");
    let out = host.fw(&["restore", "keeper", "--latest"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("/srv/keeper/store is a symbolic link"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was changed"), "{}", stderr(&out));
    assert_eq!(names(&p("/srv/victim")), ["precious"], "nothing written where the link points");
    assert_eq!(std::fs::read_to_string(p("/srv/victim/precious")).unwrap(), "root's");
    assert_eq!(host.prop("agent-keeper.service", "InvocationID"), running, "nothing was stopped");

    // With the real directory back, the same restore works.
    std::fs::remove_file(p("/srv/keeper/store")).unwrap();
    std::fs::rename(p("/srv/keeper/store-old"), p("/srv/keeper/store")).unwrap();
    let out = host.fw(&["restore", "keeper", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sqlite(&host, "/srv/keeper/store/messages.db", "SELECT count(*) FROM m;"), "2");
    assert_eq!(std::fs::metadata(p("/srv/keeper/store/messages.db")).unwrap().uid(), AGENT_UID, "the restored database is the agent's");

    // Backups are only read through root's directories: a `to:` reached by a link is refused,
    // and said so (not "no backups").
    std::fs::rename(p("/srv/fw-backups/keeper"), p("/srv/fw-backups/keeper-real")).unwrap();
    symlink("/srv/fw-backups/keeper-real", p("/srv/fw-backups/keeper")).unwrap();
    let out = host.fw(&["restore", "keeper", "--latest"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("/srv/fw-backups/keeper is a symbolic link"), "{}", stderr(&out));
    assert_eq!(sqlite(&host, "/srv/keeper/store/messages.db", "SELECT count(*) FROM m;"), "2");
}

#[test]
fn a_user_outside_the_group_cannot_take_a_slot_and_an_old_open_lock_file_blocks_nothing() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let p = |rel: &str| host.sb.host_path(rel);
    std::fs::create_dir_all(p("/srv/gpu")).unwrap();
    agent_owns(&p("/srv/gpu"));
    // A lock file as an older version left it (0644), which another user opened and holds.
    let lock = "/run/fleetwright/slots/gpu/0.lock";
    std::fs::create_dir_all(p("/run/fleetwright/slots/gpu")).unwrap();
    std::fs::write(p(lock), "").unwrap();
    chmod(&p(lock), 0o644);
    let mut squatter =
        as_user(&host, NOBODY, "flock", &[lock, "sleep", "1000"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    host.wait("the other user to hold the old lock file", 10, || {
        host.sb.command("flock").args(["-n", lock, "true"]).status().is_ok_and(|s| s.code() == Some(1))
    });

    let gpu_job = job("gpu-job", "echo ran >> /srv/gpu/runs").user("agent").timeout("1m").every("1h").concurrency("gpu", 1).when_full("skip");
    repo.commit(&[("fleet.yaml", FLEET), ("gpu.yaml", &gpu_job.yaml())], "gpu");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let unit = std::fs::read_to_string(host.unit_dir().join("agent-gpu-job.service")).unwrap();
    assert!(unit.contains("slot-prepare --dir /run/fleetwright/slots --group gpu --limit 1 --agent-user \"agent\""), "{unit}");

    // The run takes its slot: the squatter's lock is on a file no run uses any more.
    host.systemctl(&["start", "agent-gpu-job.service"]);
    let journal = host.sb.journal("agent-gpu-job.service");
    assert_eq!(host.prop("agent-gpu-job.service", "Result"), "success", "{journal}");
    assert_eq!(std::fs::read_to_string(p("/srv/gpu/runs")).unwrap_or_default(), "ran\n", "it ran, not skipped: {journal}");
    host.wait("the replacement to be reported", 10, || host.sb.journal("agent-gpu-job.service").contains("replaced /run/fleetwright/slots/gpu/0.lock"));
    let m = std::fs::metadata(p(lock)).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o640), "root's, read access by ACL only");

    // Another local user cannot even open the lock file, so it cannot hold a slot.
    let open = as_user(&host, NOBODY, "/bin/sh", &["-c", &format!("exec 3< {lock}")]).output().unwrap();
    assert!(!open.status.success(), "nobody opened the lock file");
    assert!(String::from_utf8_lossy(&open.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&open.stderr));
    // The binary the units run (its copy in the state directory): the test binary itself may
    // sit where other users cannot reach (a clone in a 0700 home).
    let fw = &installed_fleetwright(&host);
    let took = as_user(&host, NOBODY, fw, &["slot", "--group", "gpu", "--limit", "1", "--", "/bin/true"]).output().unwrap();
    assert_eq!(took.status.code(), Some(2), "{}", String::from_utf8_lossy(&took.stderr));
    assert!(
        String::from_utf8_lossy(&took.stderr).contains("only root and the users of the group's agents may take its slots"),
        "{}",
        String::from_utf8_lossy(&took.stderr)
    );
    // The group's own user can.
    let took = as_user(&host, &AGENT_UID.to_string(), fw, &["slot", "--group", "gpu", "--limit", "1", "--", "/bin/sh", "-c", "echo agent >> /srv/gpu/runs"])
        .output()
        .unwrap();
    assert_eq!(took.status.code(), Some(0), "{}", String::from_utf8_lossy(&took.stderr));
    assert_eq!(std::fs::read_to_string(p("/srv/gpu/runs")).unwrap(), "ran\nagent\n");

    drop(host);
    // The sandbox is gone, and the squatter with it; reap the nsenter we started.
    let _ = squatter.kill();
    let _ = squatter.wait();
}
