//! What fleetwright does as root to clean up after faults (the temporary copies of killed
//! restores and backups it sweeps by every apply, backup and restore), attacked by the agent's
//! user, who owns the database's directory and so chooses what stands there under the names
//! of those temporary files. Each case stays here for good.

use std::os::unix::fs::{MetadataExt, lchown, symlink};

use crate::real::*;

const AGENT_UID: u32 = 4242;

fn sh(host: &Host, script: &str) {
    let o = host.sb.command("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn what_the_agent_plants_under_the_name_of_a_killed_restores_copy_never_leads_root_elsewhere() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The agent's own directory and database, backed up by root.
    sh(&host, "mkdir -p /srv/agentdb && sqlite3 /srv/agentdb/data.db 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'");
    let dir = host.sb.host_path("/srv/agentdb");
    for p in [dir.clone(), dir.join("data.db")] {
        lchown(&p, Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    }
    // Root's files the agent would like gone or changed.
    sh(&host, "mkdir -p /srv/root-only && echo precious > /srv/root-only/file && mkdir -p /srv/root-only/tree && echo inner > /srv/root-only/tree/x");
    let keeper = agent("keeper").command(&["/bin/sleep", "100000"]).user("agent").backup(backup("/srv/agentdb/data.db", "/srv/backups/keeper"));
    repo.commit(&[("fleet.yaml", FLEET), ("keeper.yaml", &keeper.yaml())], "keeper");
    assert_eq!(code(&host.apply(&repo)), 0);

    // Under names of dead restores' copies: a link to a root file, a link to a root directory,
    // a directory of its own with something in it. (A hard link to a root file would only lose
    // the agent's own name for it.)
    let dead = |n: u32| dir.join(format!(".data.db.restore-{}-0.tmp", 9_999_000 + n));
    symlink("/srv/root-only/file", dead(1)).unwrap();
    symlink("/srv/root-only/tree", dead(2)).unwrap();
    std::fs::create_dir(dead(3)).unwrap();
    std::fs::write(dead(3).join("mine"), "x").unwrap();
    for n in 1..=3 {
        lchown(dead(n), Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    }

    // Every writer sweeps: an apply (the same commit), a backup, a restore.
    assert_eq!(code(&host.apply(&repo)), 0);
    assert!(host.sb.command("systemctl").args(["start", "agent-keeper.backup.service"]).output().unwrap().status.success());
    let out = host.fw(&["restore", "keeper", "--latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The links were removed as links; what they pointed at is untouched; the agent's own
    // directory (not a temporary file of ours) is left alone.
    assert!(std::fs::symlink_metadata(dead(1)).is_err() && std::fs::symlink_metadata(dead(2)).is_err());
    let root_only = host.sb.host_path("/srv/root-only");
    assert_eq!(std::fs::read_to_string(root_only.join("file")).unwrap(), "precious\n");
    assert_eq!(std::fs::read_to_string(root_only.join("tree/x")).unwrap(), "inner\n");
    assert_eq!(std::fs::metadata(root_only.join("file")).unwrap().uid(), 0);
    assert!(dead(3).join("mine").exists(), "the agent's directory was removed");
    // The restored database is still the agent's.
    assert_eq!(std::fs::metadata(dir.join("data.db")).unwrap().uid(), AGENT_UID);
}
