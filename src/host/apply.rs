//! Observe the host, and execute a plan: files first, one daemon-reload, then jobs awaited to
//! their result. The order follows switch-to-configuration: stop → disable → files → enable →
//! reload → reload jobs → restarts → starts.

use std::collections::BTreeMap;
use std::path::Path;

use crate::desired::Desired;
use crate::inventory::{AgentRecord, ConfigRecord, FileRecord, Inventory, VERSION, sha256};
use crate::plan::{Action, FileOp, Observed, Plan, UnitStatus};

use super::crash_point;
use super::state::{StateDir, StateError, remove_durable, sweep_temps, write_atomic};
use super::systemd::{JobResult, Systemd, SystemdError};
use super::{HostConfig, journal_tail};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the plan cannot be applied, nothing was changed:\n  {}", .0.join("\n  "))]
    Refused(Vec<String>),
}

/// A unit that did not reach the state the plan wanted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub unit: String,
    pub what: String,
    pub status: UnitStatus,
    pub journal: String,
}

#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub jobs: Vec<JobResult>,
    pub failures: Vec<Failure>,
    pub files_written: usize,
    pub files_removed: usize,
    pub reloaded: bool,
}

/// Read one unit file as it is on disk. A symlink is reported as such: fleetwright never writes
/// symlinks there, so one of our names is always foreign.
fn read_unit_file(path: &Path) -> Result<Option<String>, ApplyError> {
    Ok(read_unit_file_with_mode(path)?.map(|(text, _)| text))
}

/// `read_unit_file`, with the file's permission bits (None for a symlink).
fn read_unit_file_with_mode(path: &Path) -> Result<Option<(String, Option<u32>)>, ApplyError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ApplyError::Io { path: path.display().to_string(), source };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
        Ok(m) if m.file_type().is_symlink() => Ok(Some((format!("# symlink to {}\n", std::fs::read_link(path).map_err(io)?.display()), None))),
        Ok(m) => std::fs::read(path).map(|b| Some((String::from_utf8_lossy(&b).into_owned(), Some(m.permissions().mode() & 0o7777)))).map_err(io),
    }
}

/// Observe every unit that is desired or owned: its file and its manager state.
pub async fn observe(sd: &Systemd, cfg: &HostConfig, desired: &Desired, inventory: Inventory) -> Result<Observed, ApplyError> {
    let mut names: Vec<&str> = desired.units.keys().map(String::as_str).collect();
    names.extend(inventory.files.keys().map(String::as_str).filter(|n| !desired.units.contains_key(*n)));
    let t = std::time::Instant::now();
    let mut files = BTreeMap::new();
    let mut modes = BTreeMap::new();
    for n in &names {
        let file = read_unit_file_with_mode(&cfg.unit_dir.join(n))?;
        if let Some((_, Some(mode))) = &file {
            modes.insert(n.to_string(), *mode);
        }
        files.insert(n.to_string(), file.map(|(text, _)| text));
    }
    tracing::debug!(units = names.len(), ms = t.elapsed().as_millis() as u64, "observe: unit files read");
    let mut config = BTreeMap::new();
    for path in desired.config.keys().chain(inventory.config.keys()) {
        config.insert(path.clone(), read_unit_file(Path::new(path))?);
    }
    let mut observed = observe_with(sd, cfg, files, config, inventory).await?;
    observed.modes = modes;
    Ok(observed)
}

/// `observe`, with the files (unit files and host config files, `None` when absent) already read.
async fn observe_with(
    sd: &Systemd,
    cfg: &HostConfig,
    files: BTreeMap<String, Option<String>>,
    config: BTreeMap<String, Option<String>>,
    inventory: Inventory,
) -> Result<Observed, ApplyError> {
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let mut units = sd.statuses(&names).await?;
    for (name, content) in &files {
        if let Some(u) = units.get_mut(name) {
            u.unit_file_state = cfg.enablement(name, content.as_deref()).to_string();
        }
    }
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "observe: unit states read");
    let resume: Vec<&str> = inventory.pending_restarts.keys().map(String::as_str).collect();
    for (name, id) in sd.invocation_ids(&resume).await? {
        if let Some(u) = units.get_mut(&name) {
            u.invocation_id = id;
        }
    }
    Ok(Observed { files, units, inventory, config, modes: BTreeMap::new() })
}

fn units_with(plan: &Plan, action: Action) -> Vec<&str> {
    plan.units.iter().filter(|u| u.actions.contains(&action)).map(|u| u.unit.as_str()).collect()
}

/// Execute `plan` (made from `desired` and the inventory in `observed`). Returns the plan as
/// executed: `plan` less the changes a failing health.check held back (with the reason).
pub async fn execute(
    sd: &Systemd,
    cfg: &HostConfig,
    state: &StateDir,
    plan: &Plan,
    desired: &Desired,
    prior: &Inventory,
    key: &str,
) -> Result<(Plan, ApplyReport), ApplyError> {
    if !plan.errors.is_empty() {
        return Err(ApplyError::Refused(plan.errors.clone()));
    }
    let now = super::now_rfc3339();
    let mut report = ApplyReport::default();

    // 0. health.check: a changed service whose check fails is left alone, old file and all.
    let mut vetoed: BTreeMap<String, String> = BTreeMap::new();
    for u in plan.units.iter().filter(|u| u.actions.iter().any(|a| matches!(a, Action::Restart | Action::Reload))) {
        if let Some(check) = desired.units.get(&u.unit).and_then(|d| d.check.as_ref())
            && let Err(why) = super::check::run_blocking(check, cfg.scope, cfg.bus_address.as_deref(), &u.unit).await
        {
            vetoed.insert(u.unit.clone(), why);
        }
    }
    let vetoed_plan;
    let plan = if vetoed.is_empty() {
        plan
    } else {
        let mut p = plan.clone();
        for u in p.units.iter_mut().filter(|u| vetoed.contains_key(&u.unit)) {
            u.file = FileOp::Keep;
            u.content = None;
            u.actions.retain(|a| !matches!(a, Action::Restart | Action::Reload));
            u.held = Some(format!("health.check failed, the old version keeps running: {}", vetoed[&u.unit]));
            u.reasons.push(u.held.clone().unwrap_or_default());
        }
        p.daemon_reload = p.units.iter().any(|u| u.file.needs_reload()) || prior.reload_pending;
        vetoed_plan = p;
        &vetoed_plan
    };
    let vetoed_agents: std::collections::BTreeSet<&str> = plan.units.iter().filter(|u| vetoed.contains_key(&u.unit)).map(|u| u.agent.as_str()).collect();

    let phase = std::time::Instant::now();
    // 1. Record what we are about to write before writing it: a crash after a write never
    //    leaves a file of ours that the inventory does not know.
    let mut pending = prior.clone();
    pending.version = VERSION;
    pending.scope = Some(cfg.scope);
    pending.unit_dir = cfg.unit_dir.display().to_string();
    for u in plan.units.iter().filter(|u| matches!(u.file, FileOp::Create | FileOp::Update(_) | FileOp::Mode)) {
        let content = u.content.as_deref().unwrap_or_default();
        pending.files.insert(u.unit.clone(), FileRecord { sha256: sha256(content), agent: u.agent.clone(), role: u.role });
    }
    for c in plan.config.iter().filter(|c| matches!(c.file, FileOp::Create | FileOp::Update(_))) {
        pending.config.insert(c.path.clone(), ConfigRecord { sha256: sha256(c.content.as_deref().unwrap_or_default()), commit: desired.commit.clone() });
    }
    pending.reload_pending |= plan.daemon_reload;
    // Until this deploy is done, the files are not what any one key renders to.
    pending.render_key = None;
    for u in &plan.units {
        if let Some(a) = u.actions.iter().find(|a| matches!(a, Action::Restart | Action::Reload)) {
            pending.pending_restarts.insert(u.unit.clone(), *a);
        }
    }
    // The runs the restarts replace, unless an interrupted apply recorded them already.
    let restarts: Vec<&str> = units_with(plan, Action::Restart).into_iter().filter(|u| !pending.restart_from.contains_key(*u)).collect();
    pending.restart_from.extend(sd.invocation_ids(&restarts).await?);
    if pending != *prior {
        state.save_inventory(&pending)?;
    }
    crash_point("after-pending-inventory");

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 2");
    // 2. Stop and disable what goes away or is disabled.
    report.jobs.extend(sd.run_jobs("stop", &units_with(plan, Action::Stop)).await?);
    crash_point("after-stop");
    let io = |source| ApplyError::Io { path: cfg.links_dir().display().to_string(), source };
    cfg.unlink(&units_with(plan, Action::Disable)).map_err(io)?;

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 3");
    // 3. Files.
    for u in &plan.units {
        let path = cfg.unit_dir.join(&u.unit);
        let io = |source| ApplyError::Io { path: path.display().to_string(), source };
        match u.file {
            FileOp::Create | FileOp::Update(_) | FileOp::Mode => {
                // 0600 when it holds environment values (API keys), 0644 otherwise; a file
                // that exists gets the mode too (a new file replaces it).
                let content = u.content.as_deref().unwrap_or_default();
                write_atomic(&path, content.as_bytes(), crate::plan::unit_file_mode(content)).map_err(io)?;
                report.files_written += 1;
                crash_point("after-write");
            }
            FileOp::Remove => {
                remove_durable(&path).map_err(io)?;
                report.files_removed += 1;
                crash_point("after-remove");
            }
            FileOp::Keep => {}
        }
    }

    for c in &plan.config {
        let path = Path::new(&c.path);
        let io = |source| ApplyError::Io { path: c.path.clone(), source };
        match c.file {
            FileOp::Create | FileOp::Update(_) | FileOp::Mode => write_atomic(path, c.content.as_deref().unwrap_or_default().as_bytes(), 0o644).map_err(io)?,
            FileOp::Remove => remove_durable(path).map_err(io)?,
            FileOp::Keep => {}
        }
    }

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 4");
    // 4. Enable (the [Install] links), then exactly one reload: it makes the manager see both
    //    the new files and the new links.
    let enable: Vec<(&str, &str)> =
        units_with(plan, Action::Enable).into_iter().filter_map(|u| desired.units.get(u).map(|d| (u, d.content.as_str()))).collect();
    cfg.link(&enable).map_err(io)?;
    crash_point("before-reload");
    if plan.daemon_reload {
        sd.reload().await?;
        report.reloaded = true;
    }
    crash_point("after-reload");

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 5");
    // 5. Deploy markers, before any start: a (re)started agent reads its marker at exec.
    let mut inv = pending;
    inv.reload_pending = false;
    inv.config.retain(|path, _| desired.config.contains_key(path));
    for (path, (content, _)) in &desired.config {
        let keep = prior.config.get(path).filter(|r| r.sha256 == sha256(content)).cloned();
        inv.config.insert(path.clone(), keep.unwrap_or(ConfigRecord { sha256: sha256(content), commit: desired.commit.clone() }));
    }
    inv.files.retain(|name, _| desired.units.contains_key(name));
    for (name, d) in &desired.units {
        match (vetoed.contains_key(name), prior.files.get(name)) {
            // Not written: what is on disk is still what we wrote before.
            (true, Some(old)) => inv.files.insert(name.clone(), old.clone()),
            _ => inv.files.insert(name.clone(), FileRecord { sha256: sha256(&d.content), agent: d.agent.clone(), role: d.role }),
        };
    }
    let mut agents = BTreeMap::new();
    let enabled_of: BTreeMap<&str, bool> = desired.units.values().map(|u| (u.agent.as_str(), u.enabled)).collect();
    for (name, deploy) in &desired.agents {
        if let (true, Some(old)) = (vetoed_agents.contains(name.as_str()), prior.agents.get(name)) {
            // Its change did not go through: it still runs the commit it ran.
            agents.insert(name.clone(), old.clone());
            continue;
        }
        let enabled = enabled_of.get(name.as_str()).copied().unwrap_or(false);
        let changed_at = prior
            .agents
            .get(name)
            .filter(|r| r.changed_commit == deploy.changed_commit && r.spec_hash == deploy.spec_hash)
            .map(|r| r.changed_at.clone())
            .unwrap_or_else(|| now.clone());
        let applied_at = prior.agents.get(name).filter(|r| r.applied_commit == desired.commit).map(|r| r.applied_at.clone()).unwrap_or_else(|| now.clone());
        let rec = AgentRecord {
            spec_hash: deploy.spec_hash.clone(),
            changed_commit: deploy.changed_commit.clone(),
            changed_at,
            applied_commit: desired.commit.clone(),
            applied_at,
            enabled,
            backups: deploy.backups.clone(),
        };
        // The same record as the inventory's: its marker files say that already.
        if prior.agents.get(name) != Some(&rec) {
            state.write_marker(name, &rec)?;
        }
        agents.insert(name.clone(), rec);
    }
    for gone in prior.agents.keys().filter(|n| !agents.contains_key(*n)) {
        state.remove_marker(gone)?;
    }
    inv.agents = agents;

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 6");
    // 6. Jobs. Once reloads and restarts are done they are off the resume list, at once, so
    //    that an interrupted apply never restarts a unit twice.
    let mut saved = prior.clone();
    for (verb, action) in [("reload", Action::Reload), ("restart", Action::Restart), ("start", Action::Start)] {
        report.jobs.extend(sd.run_jobs(verb, &units_with(plan, action)).await?);
        if action == Action::Restart && !inv.pending_restarts.is_empty() {
            inv.pending_restarts.clear();
            inv.restart_from.clear();
            state.save_inventory(&inv)?;
            saved = inv.clone();
        }
        crash_point("between-jobs");
    }

    let restart: Vec<&str> = plan.config.iter().filter(|c| c.file != FileOp::Keep).filter_map(|c| c.restart.as_deref()).collect();
    report.jobs.extend(sd.run_jobs("try-restart", &restart).await?);

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 7");
    // 7. The final inventory: exactly what is desired now.
    if inv.applied_commit.as_deref() != Some(&desired.commit) {
        inv.applied_commit = Some(desired.commit.clone());
        inv.applied_at = Some(now);
    }
    // Only a deploy that did all it planned may say what the files were rendered from: with a
    // change held back by its health.check, the next apply must render again.
    inv.render_key = vetoed.is_empty().then(|| key.to_string());
    if inv != *prior && inv != saved {
        crash_point("before-final-inventory");
        state.save_inventory(&inv)?;
    }

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 8");
    // 8. What did not work, with the unit's state and its last journal lines.
    let started: Vec<&str> =
        plan.units.iter().filter(|u| u.actions.iter().any(|a| matches!(a, Action::Start | Action::Restart))).map(|u| u.unit.as_str()).collect();
    let after = sd.statuses(&started).await?;
    let failed_jobs: Vec<&JobResult> = report.jobs.iter().filter(|j| j.result != "done").collect();
    let mut failures: Vec<Failure> = Vec::new();
    for j in failed_jobs {
        failures.push(Failure {
            unit: j.unit.clone(),
            what: format!("{} {}", j.verb, j.result),
            status: after.get(&j.unit).cloned().unwrap_or_default(),
            journal: journal_tail(cfg.scope, &j.unit, 10),
        });
    }
    for (unit, st) in &after {
        // A service that exited at once and waits to be restarted (Restart=) is crash-looping
        // even though its start job said done (Type=exec: done once the program is executed).
        let what = match (st.active_state.as_str(), st.sub_state.as_str()) {
            ("failed", _) => "failed after start",
            (_, "auto-restart") => "exited after start and is being restarted (crash loop?)",
            _ => continue,
        };
        if !failures.iter().any(|f| &f.unit == unit) {
            failures.push(Failure { unit: unit.clone(), what: what.into(), status: st.clone(), journal: journal_tail(cfg.scope, unit, 10) });
        }
    }
    for (unit, why) in vetoed {
        failures.push(Failure {
            unit: unit.clone(),
            what: format!("health.check failed, not restarted (the old version keeps running): {why}"),
            status: UnitStatus::default(),
            journal: String::new(),
        });
    }
    report.failures = failures;
    Ok((plan.clone(), report))
}

/// What a commit renders to on this host depends on: the commit and the fleet directory in
/// it, the host's name, the scope and directories, and the binary (its path is in helper
/// units, and another version may render otherwise).
pub fn render_key(cfg: &HostConfig, commit: &str, path: Option<&str>) -> String {
    let ctx = cfg.render_ctx();
    format!(
        "{commit} path={} host={} scope={:?} units={} state={} exe={} fleetwright={}",
        path.unwrap_or(""),
        cfg.host,
        cfg.scope,
        cfg.unit_dir.display(),
        cfg.state_dir.display(),
        ctx.exe,
        env!("CARGO_PKG_VERSION")
    )
}

/// The same commit again, without reading it: when the inventory says the host was last
/// converged from `key` (and nothing was left pending), the desired state is what the
/// inventory records, with each file's content as on disk where its hash matches. Planned
/// against the host like any commit; when that plan has nothing to do, this is the answer
/// (`Some`). Anything else (a file edited or gone, a unit stopped, another key) is `None`:
/// the caller reads, validates and renders the commit and deploys it in full.
pub async fn deploy_unchanged(
    sd: &Systemd,
    cfg: &HostConfig,
    state: &StateDir,
    key: &str,
    opts: crate::plan::PlanOptions,
) -> Result<Option<Deployment>, ApplyError> {
    let _lock = state.lock()?;
    let inv = state.load_inventory()?;
    if inv.render_key.as_deref() != Some(key) || inv.reload_pending || !inv.pending_restarts.is_empty() {
        return Ok(None);
    }
    let Some(commit) = inv.applied_commit.clone() else { return Ok(None) };
    let mut units = BTreeMap::new();
    for (name, rec) in &inv.files {
        let Some((content, mode)) = read_unit_file_with_mode(&cfg.unit_dir.join(name))? else { return Ok(None) };
        // A file edited, or of the wrong mode: the full apply repairs it.
        if sha256(&content) != rec.sha256 || mode != Some(crate::plan::unit_file_mode(&content)) {
            return Ok(None);
        }
        let enabled = inv.agents.get(&rec.agent).is_some_and(|a| a.enabled);
        units.insert(
            name.clone(),
            crate::desired::DesiredUnit {
                agent: rec.agent.clone(),
                role: rec.role,
                content,
                enabled,
                on_change: crate::spec::model::OnChange::None,
                check: None,
            },
        );
    }
    let mut config = BTreeMap::new();
    for (path, rec) in &inv.config {
        let Some(content) = read_unit_file(Path::new(path))? else { return Ok(None) };
        if sha256(&content) != rec.sha256 || path != crate::render::JOURNALD_DROPIN {
            return Ok(None);
        }
        config.insert(path.clone(), (content, "systemd-journald.service".to_string()));
    }
    let agents = inv
        .agents
        .iter()
        .map(|(n, r)| {
            (n.clone(), crate::desired::AgentDeploy { backups: r.backups.clone(), spec_hash: r.spec_hash.clone(), changed_commit: r.changed_commit.clone() })
        })
        .collect();
    let want = Desired { commit, units, agents, config, refused: Vec::new() };
    // What is on disk is what was just read (the desired state is made of it).
    let files = want.units.iter().map(|(n, u)| (n.clone(), Some(u.content.clone()))).collect();
    let on_disk = want.config.iter().map(|(p, (c, _))| (p.clone(), Some(c.clone()))).collect();
    let observed = observe_with(sd, cfg, files, on_disk, inv).await?;
    let plan = crate::plan::plan(&want, &observed, opts);
    if plan.has_changes() || !plan.errors.is_empty() {
        return Ok(None);
    }
    Ok(Some(Deployment { plan, report: ApplyReport::default() }))
}

/// One whole apply of a validated commit: lock, observe, plan, execute. Used by `apply` and by
/// the daemon's reconcile. `key`: `render_key` of the commit, recorded in the inventory.
pub struct Deployment {
    pub plan: Plan,
    pub report: ApplyReport,
}

pub async fn deploy(
    sd: &Systemd,
    cfg: &HostConfig,
    state: &StateDir,
    commit: &str,
    key: &str,
    fleet: &crate::spec::Fleet,
    opts: crate::plan::PlanOptions,
) -> Result<Deployment, ApplyError> {
    let t = std::time::Instant::now();
    let _lock = state.lock()?;
    let inv = state.load_inventory()?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: lock and inventory");
    // What a killed apply left half-written (never under a real name): temp files.
    let mut dirs = vec![cfg.unit_dir.clone(), state.root.clone(), state.markers_dir()];
    dirs.extend(inv.config.keys().filter_map(|p| Path::new(p).parent().map(Path::to_path_buf)));
    for dir in dirs {
        for gone in sweep_temps(&dir).map_err(|source| ApplyError::Io { path: dir.display().to_string(), source })? {
            tracing::info!(file = %gone.display(), "removed the temp file of an interrupted write");
        }
    }
    let t = std::time::Instant::now();
    let want = cfg.desired(fleet, commit, &inv);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: desired");
    let t = std::time::Instant::now();
    let observed = observe(sd, cfg, &want, inv.clone()).await?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: observed");
    let t = std::time::Instant::now();
    let plan = crate::plan::plan(&want, &observed, opts);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: planned");
    let t = std::time::Instant::now();
    let (plan, report) = execute(sd, cfg, state, &plan, &want, &inv, key).await?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: executed");
    Ok(Deployment { plan, report })
}

/// How many times each service has been restarted by the manager (NRestarts).
pub async fn restart_counts(sd: &Systemd, services: &[&str]) -> Result<BTreeMap<String, u32>, ApplyError> {
    let mut out = BTreeMap::new();
    for u in services {
        let p = sd.properties(u, "org.freedesktop.systemd1.Service").await?;
        out.insert(u.to_string(), crate::host::systemd::prop::<u32>(&p, "NRestarts").unwrap_or(0));
    }
    Ok(out)
}

/// The first of `services` that is unhealthy now, and why: failed, waiting to be restarted,
/// or restarted by the manager since `base` (`restart_counts` when the watch began).
pub async fn unhealthy(sd: &Systemd, services: &[&str], base: &BTreeMap<String, u32>) -> Result<Option<(String, String)>, ApplyError> {
    let st = sd.statuses(services).await?;
    let now = restart_counts(sd, services).await?;
    for u in services {
        let s = st.get(*u).cloned().unwrap_or_default();
        let n = now.get(*u).copied().unwrap_or(0);
        if s.active_state == "failed" {
            return Ok(Some((u.to_string(), format!("{u} failed after the deploy"))));
        }
        if n > base.get(*u).copied().unwrap_or(0) || s.sub_state == "auto-restart" {
            return Ok(Some((u.to_string(), format!("{u} is crash-looping ({n} restarts since the deploy)"))));
        }
    }
    Ok(None)
}

/// Watch the services `plan` started or restarted for `grace`; a failure or crash loop in
/// that time is reported like a failed job (`apply --wait`).
pub async fn watch_after(sd: &Systemd, cfg: &HostConfig, plan: &Plan, grace: std::time::Duration) -> Result<Vec<Failure>, ApplyError> {
    let services: Vec<&str> = plan
        .units
        .iter()
        .filter(|u| u.role == crate::render::Role::Service && u.actions.iter().any(|a| matches!(a, Action::Start | Action::Restart | Action::Reload)))
        .map(|u| u.unit.as_str())
        .collect();
    if services.is_empty() || grace.is_zero() {
        return Ok(vec![]);
    }
    let base = restart_counts(sd, &services).await?;
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if let Some((unit, what)) = unhealthy(sd, &services, &base).await? {
            let status = sd.statuses(&[unit.as_str()]).await?.remove(&unit).unwrap_or_default();
            return Ok(vec![Failure { journal: journal_tail(cfg.scope, &unit, 10), unit, what, status }]);
        }
    }
    Ok(vec![])
}
