//! `fleetwright restore`: swap a backup in as an agent's live database. Under the apply lock
//! (no apply or reconcile starts the agent again meanwhile): copy and check the backup while
//! the agent still runs, stop its timers then its services, swap atomically (the replaced file
//! kept), and start again what ran before and what should run. docs/operations.md, "Restore".

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::host::HostConfig;
use crate::host::state::StateDir;
use crate::host::systemd::Systemd;
use crate::inventory::Inventory;
use crate::types::Role;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no agent {0:?} is deployed on this host")]
    NoAgent(String),
    #[error("agent {agent:?} has no backups{}", .db.as_ref().map(|d| format!(" of {d}")).unwrap_or_default())]
    NoBackups { agent: String, db: Option<String> },
    #[error("agent {agent:?} backs up several databases; name one with --db: {}", .dbs.join(", "))]
    WhichDatabase { agent: String, dbs: Vec<String> },
    #[error("no backups of {db} in {dir}")]
    Empty { db: String, dir: String },
    #[error("every backup of {db} in {dir} is dated in the future; name the one to restore with --from")]
    AllInFuture { db: String, dir: String },
    #[error("{0}; nothing was changed")]
    List(std::io::Error),
    #[error(transparent)]
    State(#[from] crate::host::state::StateError),
    #[error("{0}; the live database was not replaced")]
    Backup(crate::ops::backup::BackupError),
    #[error("{0}; the live database was not replaced")]
    Bus(crate::host::systemd::SystemdError),
    #[error("stopping {agent}: {source}; the live database was not replaced")]
    Stop { agent: String, source: crate::host::systemd::SystemdError },
}

/// Which backups of which database: `db` names one when the agent backs up several.
pub fn agent_backups(inv: &Inventory, agent: &str, db: Option<&str>) -> Result<(String, String), RestoreError> {
    let rec = inv.agents.get(agent).ok_or_else(|| RestoreError::NoAgent(agent.to_string()))?;
    let matching: Vec<&(String, String)> = rec.backups.iter().filter(|(d, _)| db.is_none_or(|x| x == d)).collect();
    match matching.as_slice() {
        [one] => Ok((one.0.clone(), one.1.clone())),
        [] => Err(RestoreError::NoBackups { agent: agent.to_string(), db: db.map(str::to_string) }),
        many => Err(RestoreError::WhichDatabase { agent: agent.to_string(), dbs: many.iter().map(|(d, _)| d.clone()).collect() }),
    }
}

/// The newest backup of `db` in `dir` that is not dated in the future, and the ones dated in
/// the future that were passed over (said to the operator: `--from` restores them).
pub fn latest_backup(db: &str, dir: &str, now: SystemTime) -> Result<(PathBuf, Vec<crate::ops::backup::BackupFile>), RestoreError> {
    let files = crate::ops::backup::list(Path::new(db), Path::new(dir), now).map_err(RestoreError::List)?;
    let (newest, skipped) = crate::ops::backup::latest(&files);
    let skipped: Vec<_> = skipped.into_iter().cloned().collect();
    match newest {
        Some(f) => Ok((PathBuf::from(&f.path), skipped)),
        None if skipped.is_empty() => Err(RestoreError::Empty { db: db.to_string(), dir: dir.to_string() }),
        None => Err(RestoreError::AllInFuture { db: db.to_string(), dir: dir.to_string() }),
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// Where the replaced database is kept (None when there was none).
    pub replaced: Option<PathBuf>,
    /// Units that did not start again: `(unit, what happened)`, or the whole start's error.
    pub not_started: Vec<(String, String)>,
}

/// Restore `db` of `agent` from `file`. `stopping` is told which units are stopped, before they
/// are. On an error nothing was replaced, and what was stopped was started again.
pub async fn restore(cfg: &HostConfig, agent: &str, db: &str, file: &Path, stopping: impl FnOnce(&[&str])) -> Result<Restored, RestoreError> {
    let state = StateDir::new(&cfg.state_dir);
    let _lock = state.lock()?;
    let inv = state.load_inventory()?;
    // What killed applies, backups and restores left behind (temporary copies as big as the
    // database among them) goes first.
    if let Err(e) = crate::host::apply::sweep_apply_temps(cfg, &state, &inv) {
        tracing::warn!(error = %e, "temporary files of interrupted applies not swept");
    }
    crate::host::apply::sweep_backup_temps(&inv);
    // The copy and its integrity check first, while the agent still runs: it is down only
    // for the swap.
    let prepared = crate::ops::backup::prepare_restore(Path::new(db), file, SystemTime::now()).map_err(RestoreError::Backup)?;
    // Timers first (no new run starts), then the services.
    let mut units: Vec<&String> = inv.files.iter().filter(|(_, r)| r.agent == agent).map(|(n, _)| n).collect();
    units.sort_by_key(|u| (!u.ends_with(".timer"), u.to_string()));
    let enabled = inv.agents.get(agent).is_some_and(|r| r.enabled);
    let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.map_err(RestoreError::Bus)?;
    let names: Vec<&str> = units.iter().map(|u| u.as_str()).collect();
    let before = sd.statuses(&names).await.unwrap_or_default();
    let active: Vec<&str> = names.iter().copied().filter(|u| before.get(*u).is_some_and(|s| s.is_active())).collect();
    stopping(&active);
    if let Err(source) = sd.run_jobs("stop", &active).await {
        // Whatever did stop comes back.
        let _ = sd.run_jobs("start", &active).await;
        return Err(RestoreError::Stop { agent: agent.to_string(), source });
    }
    fleetwright_sys::crash_point("restore-stopped");
    let swapped = prepared.swap();
    // Start again what ran before, and what should run (an enabled agent's timers and service:
    // one that had failed on a broken database comes back too), whether or not the swap
    // worked. Never a job by itself: its timer starts it.
    let should_run = |u: &&str| enabled && inv.files.get(*u).is_some_and(|r| matches!(r.role, Role::Timer | Role::AuxTimer | Role::Service));
    let mut start: Vec<&str> = names.iter().copied().filter(|u| active.contains(u) || should_run(u)).collect();
    start.dedup();
    let started = sd.run_jobs("start", &start).await;
    let replaced = swapped.map_err(RestoreError::Backup)?;
    let not_started = match started {
        Ok(jobs) => jobs.iter().filter(|j| !j.done()).map(|j| (j.unit.clone(), j.result.clone())).collect(),
        Err(e) => vec![(agent.to_string(), format!("{e}; its units are stopped: the next apply (or the daemon) starts them"))],
    };
    Ok(Restored { replaced, not_started })
}
