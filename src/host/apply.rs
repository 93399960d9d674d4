//! Observe the host, and execute a plan: files first, one daemon-reload, then jobs awaited to
//! their result. The order follows switch-to-configuration: stop → disable → files → enable →
//! reload → reload jobs → restarts → starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::desired::Desired;
use crate::inventory::{AgentRecord, ConfigRecord, FileRecord, Inventory, Loaded, VERSION};
use crate::plan::{FileOp, Observed, Plan, UnitStatus};
use crate::types::Action;
use crate::types::sha256;

use fleetwright_sys::crash_point;
use fleetwright_sys::fsutil::{remove_durable, sweep_temps, write_atomic};

use super::state::{StateDir, StateError};
use super::systemd::{JobResult, Systemd, SystemdError, UnitManager};
use super::{HostConfig, journal_tail};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error("{path}: {source}{}", super::fault::io_condition(source).map(|c| format!(" ({c})")).unwrap_or_default())]
    Io { path: String, source: std::io::Error },
    #[error("the plan cannot be applied, nothing was changed:\n  {}", .0.join("\n  "))]
    Refused(Vec<String>),
    /// Jobs whose outcome the host hid from us: the bus or the manager went away, or another
    /// job canceled them. What runs is observed again by the next apply.
    #[error("the outcome of {} job(s) is unknown, a fault of the host, not of the units: {}", .0.len(), summarize(.0))]
    Lost(Vec<String>),
    /// The apply changed part of the host, then stopped on an error: what it had done, and why.
    #[error(
        "{source}\nthe apply stopped part-way, after it had changed the host ({done}); nothing is lost: what is left to do (restarts included) is recorded, and the next apply, or the daemon's retry, finishes it"
    )]
    Interrupted { done: String, source: Box<ApplyError> },
}

fn summarize(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    let more = items.len().saturating_sub(shown.len());
    format!("{}{}", shown.join("; "), if more > 0 { format!("; and {more} more") } else { String::new() })
}

impl ApplyError {
    /// A fault of the host (the bus, the manager, the disks, descriptors, the state directory,
    /// another apply holding the lock), not of the commit being applied: retried, and never
    /// counted against the commit (`host::fault`). A refused plan and a call the manager
    /// refused are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::State(_) | ApplyError::Io { .. } | ApplyError::Lost(_) => true,
            ApplyError::Systemd(e) => e.is_transient(),
            ApplyError::Refused(_) => false,
            ApplyError::Interrupted { source, .. } => source.is_transient(),
        }
    }

    /// Whether the host was changed before the error (`Interrupted`).
    pub fn changed_host(&self) -> bool {
        matches!(self, ApplyError::Interrupted { .. })
    }
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
    /// Deploy markers written (changed, or repaired).
    pub markers_written: usize,
    /// [Install] links made or removed.
    pub links_changed: bool,
}

impl ApplyReport {
    /// Whether anything on the host was changed (a file, a link, a marker, the manager's state).
    pub fn changed_host(&self) -> bool {
        self.files_written + self.files_removed + self.markers_written > 0 || self.reloaded || self.links_changed || !self.jobs.is_empty()
    }

    /// What was done, in words.
    pub fn summary(&self) -> String {
        let done = self.jobs.iter().filter(|j| j.done()).count();
        let mut parts = vec![format!("{} file(s) written, {} removed", self.files_written, self.files_removed)];
        if self.markers_written > 0 {
            parts.push(format!("the deploy markers of {} agent(s) written", self.markers_written));
        }
        parts.push(if self.reloaded { "the manager reloaded".to_string() } else { "no daemon-reload".to_string() });
        parts.push(format!("{done} of {} job(s) done", self.jobs.len()));
        parts.join(", ")
    }
}

/// One entry of the unit directory (or a host configuration file's place).
enum Entry {
    Missing,
    File {
        text: String,
        mode: u32,
    },
    /// Something fleetwright never writes there: what it is, and how it is shown in a diff.
    Foreign {
        what: String,
        shown: String,
    },
}

/// Read one unit file as it is on disk. A symlink or a directory is foreign: fleetwright never
/// writes either there.
fn read_entry(path: &Path) -> Result<Entry, ApplyError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ApplyError::Io { path: path.display().to_string(), source };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entry::Missing),
        Err(e) => Err(io(e)),
        Ok(m) if m.file_type().is_symlink() => {
            let to = std::fs::read_link(path).map_err(io)?;
            Ok(Entry::Foreign { what: format!("a symbolic link to {}", to.display()), shown: format!("# symlink to {}\n", to.display()) })
        }
        Ok(m) if !m.file_type().is_file() => {
            let what = if m.file_type().is_dir() { "a directory" } else { "not a regular file" };
            Ok(Entry::Foreign { what: what.to_string(), shown: format!("# {what}\n") })
        }
        Ok(m) => std::fs::read(path).map(|b| Entry::File { text: String::from_utf8_lossy(&b).into_owned(), mode: m.permissions().mode() & 0o7777 }).map_err(io),
    }
}

/// `read_entry`: the content of a regular file, `None` for anything else.
fn read_regular(path: &Path) -> Result<Option<(String, u32)>, ApplyError> {
    Ok(match read_entry(path)? {
        Entry::File { text, mode } => Some((text, mode)),
        _ => None,
    })
}

/// Observe every unit that is desired or owned: its file and its manager state; and the deploy
/// markers of the agents the inventory records.
pub async fn observe(sd: &impl UnitManager, cfg: &HostConfig, desired: &Desired, inventory: Inventory) -> Result<Observed, ApplyError> {
    let mut names: Vec<&str> = desired.units.keys().map(String::as_str).collect();
    names.extend(inventory.files.keys().map(String::as_str).filter(|n| !desired.units.contains_key(*n)));
    let t = std::time::Instant::now();
    let mut files = BTreeMap::new();
    let mut modes = BTreeMap::new();
    let mut foreign = BTreeMap::new();
    for n in &names {
        let text = match read_entry(&cfg.unit_dir.join(n))? {
            Entry::Missing => None,
            Entry::File { text, mode } => {
                modes.insert(n.to_string(), mode);
                Some(text)
            }
            Entry::Foreign { what, shown } => {
                foreign.insert(n.to_string(), what);
                Some(shown)
            }
        };
        files.insert(n.to_string(), text);
    }
    tracing::debug!(units = names.len(), ms = t.elapsed().as_millis() as u64, "observe: unit files read");
    let mut config = BTreeMap::new();
    for path in desired.config.keys().chain(inventory.config.keys()) {
        let text = match read_entry(Path::new(path))? {
            Entry::Missing => None,
            Entry::File { text, .. } => Some(text),
            Entry::Foreign { what, shown } => {
                foreign.insert(path.clone(), what);
                Some(shown)
            }
        };
        config.insert(path.clone(), text);
    }
    let markers = marker_problems(&StateDir::new(&cfg.state_dir), &inventory);
    let mut observed = observe_with(sd, cfg, files, config, inventory).await?;
    observed.modes = modes;
    observed.foreign = foreign;
    observed.markers = markers;
    Ok(observed)
}

/// Agent → what is wrong with its deploy marker files, for every agent the inventory records
/// (not those an unfinished apply was rewriting: they are its business).
fn marker_problems(state: &StateDir, inventory: &Inventory) -> BTreeMap<String, Vec<String>> {
    inventory
        .agents
        .iter()
        .filter(|(a, _)| !inventory.pending_markers.contains(*a))
        .map(|(a, rec)| (a.clone(), state.marker_problems(a, rec)))
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// `observe`, with the files (unit files and host config files, `None` when absent) already read.
async fn observe_with(
    sd: &impl UnitManager,
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
    // The runs in question: on the resume list, or not confirmed to be of their definition.
    let mut in_question: BTreeSet<&str> = inventory.pending_restarts.keys().map(String::as_str).collect();
    in_question.extend(inventory.unconfirmed());
    let in_question: Vec<&str> = in_question.into_iter().filter(|n| files.contains_key(*n)).collect();
    for (name, (id, started)) in sd.runs(&in_question).await? {
        if let Some(u) = units.get_mut(&name) {
            u.invocation_id = id;
            u.run_started = started;
        }
    }
    Ok(Observed { files, units, inventory, config, boot: super::boot_id(), ..Default::default() })
}

fn units_with(plan: &Plan, action: Action) -> Vec<&str> {
    plan.units.iter().filter(|u| u.actions.contains(&action)).map(|u| u.unit.as_str()).collect()
}

/// The run jobs (reload, restart, start) `plan` has for `unit`.
fn runs_a_job(plan: &Plan, unit: &str) -> bool {
    plan.units.iter().any(|u| u.unit == unit && u.actions.iter().any(|a| matches!(a, Action::Reload | Action::Restart | Action::Start)))
}

/// Execute `plan` (made from `desired` and the inventory in `observed`). Returns the plan as
/// executed: `plan` less the changes a failing health.check held back (with the reason).
///
/// An error after the host was changed is `ApplyError::Interrupted`, with what was done; the
/// inventory then says what is left (files recorded before they are written, restarts kept on
/// the resume list until systemd said they were done).
pub async fn execute(
    sd: &impl UnitManager,
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
    let mut report = ApplyReport::default();
    match execute_steps(sd, cfg, state, plan, desired, prior, key, &mut report).await {
        Ok(plan) => Ok((plan, report)),
        Err(e) if report.changed_host() => Err(ApplyError::Interrupted { done: report.summary(), source: Box::new(e) }),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute_steps(
    sd: &impl UnitManager,
    cfg: &HostConfig,
    state: &StateDir,
    plan: &Plan,
    desired: &Desired,
    prior: &Inventory,
    key: &str,
    report: &mut ApplyReport,
) -> Result<Plan, ApplyError> {
    let now = super::now_rfc3339();

    // 0. health.check: a changed service whose check fails is left alone, old file and all.
    let mut vetoed: BTreeMap<String, String> = BTreeMap::new();
    for u in plan.units.iter().filter(|u| u.actions.iter().any(|a| matches!(a, Action::Restart | Action::Reload))) {
        if let Some(check) = desired.units.get(&u.unit).and_then(|d| d.check.as_ref()) {
            tracing::info!("running the health.check of {} before its restart (at most 120s)", u.unit);
            if let Err(why) = super::check::run_blocking(check, cfg.scope, cfg.bus_address.as_deref(), &u.unit).await {
                vetoed.insert(u.unit.clone(), why);
            }
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
    let vetoed_agents: BTreeSet<&str> = plan.units.iter().filter(|u| vetoed.contains_key(&u.unit)).map(|u| u.agent.as_str()).collect();

    // Each agent's deploy record after this apply (its marker says it).
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
        agents.insert(name.clone(), rec);
    }

    let phase = std::time::Instant::now();
    // 1. Record what we are about to write before writing it: a crash after a write never
    //    leaves a file of ours that the inventory does not know. A file written now is not
    //    loaded yet, and a service or timer that is to restart for it is not of it yet.
    let mut pending = prior.clone();
    pending.version = VERSION;
    pending.scope = Some(cfg.scope);
    pending.unit_dir = cfg.unit_dir.display().to_string();
    for u in plan.units.iter().filter(|u| u.file != FileOp::Keep) {
        let before = prior.files.get(&u.unit).filter(|_| u.file != FileOp::Create).map(|r| r.sha256.clone());
        pending.pending_files.entry(u.unit.clone()).or_insert(before);
    }
    for u in plan.units.iter().filter(|u| matches!(u.file, FileOp::Create | FileOp::Update(_) | FileOp::Mode)) {
        let content = u.content.as_deref().unwrap_or_default();
        let old = prior.files.get(&u.unit);
        let sha = sha256(content);
        let (loaded, confirmed) = if u.file == FileOp::Mode {
            // The same bytes: loaded as they were, of the run they were of.
            (old.and_then(|r| r.loaded.clone()), old.and_then(|r| r.confirmed.clone()))
        } else if u.role.is_job() {
            (None, None)
        } else if runs_a_job(plan, &u.unit) {
            // Of this definition once systemd says its job is done; until then, of what it was.
            // (A file repaired to what it was: its run is of whatever was on disk meanwhile.)
            let was = old.and_then(|r| r.confirmed.clone()).or_else(|| old.map(|r| r.sha256.clone())).filter(|c| *c != sha);
            (None, Some(was.unwrap_or_default()))
        } else {
            // No restart for this change (cosmetic, [Install], onChange: none): the run
            // stands for the new definition by the agent's own rule.
            (None, Some(sha.clone()))
        };
        pending.files.insert(u.unit.clone(), FileRecord { sha256: sha, agent: u.agent.clone(), role: u.role, loaded, confirmed });
    }
    for c in plan.config.iter().filter(|c| c.file != FileOp::Keep) {
        let before = prior.config.get(&c.path).filter(|_| c.file != FileOp::Create).map(|r| r.sha256.clone());
        pending.pending_files.entry(c.path.clone()).or_insert(before);
    }
    for c in plan.config.iter().filter(|c| matches!(c.file, FileOp::Create | FileOp::Update(_))) {
        pending.config.insert(c.path.clone(), ConfigRecord { sha256: sha256(c.content.as_deref().unwrap_or_default()), commit: desired.commit.clone() });
    }
    pending.reload_pending |= plan.daemon_reload;
    // Markers about to be rewritten: until the final inventory, old or new, they are this
    // apply's business, not drift.
    pending.pending_markers.extend(agents.iter().filter(|(a, r)| prior.agents.get(*a) != Some(*r)).map(|(a, _)| a.clone()));
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
    // What the inventory on disk says, at each step.
    let mut saved = prior.clone();
    if pending != saved {
        state.save_inventory(&pending)?;
        saved = pending.clone();
    }
    crash_point("after-pending-inventory");

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 2");
    // 2. Stop and disable what goes away or is disabled. A stop whose outcome the host hid
    //    may have left the unit running: a pruned one stays in the inventory, for the next
    //    apply to stop.
    let stops = sd.run_jobs("stop", &units_with(plan, Action::Stop)).await?;
    let mut faults: Vec<String> = stops.iter().filter(|j| j.fault).map(|j| format!("stop {}: {}", j.unit, j.result)).collect();
    let unstopped: BTreeSet<String> = stops.iter().filter(|j| j.fault).map(|j| j.unit.clone()).collect();
    report.jobs.extend(stops);
    crash_point("after-stop");
    let io = |source| ApplyError::Io { path: cfg.links_dir().display().to_string(), source };
    let disable = units_with(plan, Action::Disable);
    report.links_changed |= !disable.is_empty();
    cfg.unlink(&disable).map_err(io)?;

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
            FileOp::Create | FileOp::Update(_) | FileOp::Mode => {
                write_atomic(path, c.content.as_deref().unwrap_or_default().as_bytes(), 0o644).map_err(io)?;
                report.files_written += 1;
            }
            FileOp::Remove => {
                remove_durable(path).map_err(io)?;
                report.files_removed += 1;
            }
            FileOp::Keep => {}
        }
    }

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 4");
    // 4. Enable (the [Install] links), then exactly one reload: it makes the manager see both
    //    the new files and the new links.
    let enable: Vec<(&str, &[String])> =
        units_with(plan, Action::Enable).into_iter().filter_map(|u| desired.units.get(u).map(|d| (u, d.wanted_by.as_slice()))).collect();
    report.links_changed |= !enable.is_empty();
    cfg.link(&enable).map_err(io)?;
    crash_point("before-reload");
    if plan.daemon_reload {
        sd.reload().await?;
        report.reloaded = true;
        // From now on the manager has every file written so far: a run that begins after this
        // moment is of them. Recorded before any restart, so that an apply killed among the
        // restarts knows which runs began after it.
        let loaded = Loaded { boot: super::boot_id(), usec: super::monotonic_usec() };
        let mut changed = pending.reload_pending;
        pending.reload_pending = false;
        for name in pending.pending_files.keys() {
            if let Some(r) = pending.files.get_mut(name).filter(|r| r.loaded.is_none()) {
                r.loaded = Some(loaded.clone());
                changed = true;
            }
        }
        if changed {
            state.save_inventory(&pending)?;
            saved = pending.clone();
        }
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
    let recorded = std::mem::take(&mut inv.files);
    for (name, d) in &desired.units {
        let rec = match (vetoed.contains_key(name), prior.files.get(name)) {
            // Not written: what is on disk is still what we wrote before.
            (true, Some(old)) => old.clone(),
            _ => {
                let sha = sha256(&d.content);
                let mut rec = recorded.get(name).filter(|r| r.sha256 == sha).cloned().unwrap_or_else(|| FileRecord::new(sha.clone(), d.agent.clone(), d.role));
                rec.agent = d.agent.clone();
                rec.role = d.role;
                if d.role.is_job() {
                    rec.confirmed = None;
                } else if !runs_a_job(plan, name) {
                    // Nothing to run for it: its run stands for this definition (unchanged,
                    // or changed in a way its onChange does not restart for, or seen to have
                    // begun after the definition was loaded).
                    rec.confirmed = Some(sha);
                } else if rec.confirmed.is_none()
                    && plan.units.iter().any(|u| u.unit == *name && u.actions.iter().any(|a| matches!(a, Action::Restart | Action::Reload)))
                {
                    // A restart owed to a run no version recorded: not of this definition
                    // until systemd says so.
                    rec.confirmed = Some(String::new());
                }
                rec
            }
        };
        inv.files.insert(name.clone(), rec);
    }
    for name in unstopped.iter().filter(|n| !desired.units.contains_key(*n)) {
        if let Some(old) = prior.files.get(name) {
            inv.files.insert(name.clone(), old.clone());
        }
    }
    for (name, rec) in &agents {
        // Written when they are not exactly what the record says: changed, or missing, emptied,
        // edited or replaced outside fleetwright.
        if state.write_marker(name, rec)? {
            report.markers_written += 1;
        }
    }
    for gone in prior.agents.keys().filter(|n| !agents.contains_key(*n)) {
        state.remove_marker(gone)?;
    }
    inv.agents = agents;

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 6");
    // 6. Jobs. A reload, restart or start is off the resume list once systemd said its job was
    //    done (the restarts in their own save, at once, so that an interrupted apply never
    //    restarts a unit twice); one whose outcome the host hid stays on it, and the next apply
    //    looks at what the unit runs.
    for (verb, action) in [("reload", Action::Reload), ("restart", Action::Restart), ("start", Action::Start)] {
        let jobs = sd.run_jobs(verb, &units_with(plan, action)).await?;
        for j in &jobs {
            if j.done() {
                if let Some(r) = inv.files.get_mut(&j.unit) {
                    r.confirmed = Some(r.sha256.clone());
                }
            } else if j.fault {
                faults.push(format!("{} {}: {}", verb, j.unit, j.result));
            }
        }
        report.jobs.extend(jobs);
        let settled: BTreeSet<String> = report.jobs.iter().filter(|j| j.done()).map(|j| j.unit.clone()).collect();
        let before = inv.pending_restarts.len();
        inv.pending_restarts.retain(|u, _| runs_a_job(plan, u) && !settled.contains(u));
        let keep: BTreeSet<String> = inv.pending_restarts.keys().cloned().collect();
        inv.restart_from.retain(|u, _| keep.contains(u));
        let restarted = !units_with(plan, Action::Restart).is_empty() || !units_with(plan, Action::Reload).is_empty();
        if action == Action::Restart && (restarted || before != inv.pending_restarts.len()) {
            state.save_inventory(&inv)?;
            saved = inv.clone();
        }
        crash_point("between-jobs");
    }

    let restart: Vec<&str> = plan.config.iter().filter(|c| c.file != FileOp::Keep).filter_map(|c| c.restart.as_deref()).collect();
    let journald = sd.run_jobs("try-restart", &restart).await?;
    faults.extend(journald.iter().filter(|j| j.fault).map(|j| format!("try-restart {}: {}", j.unit, j.result)));
    report.jobs.extend(journald);

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 7");
    // 7. The final inventory: exactly what is desired now, with what is left to do.
    inv.pending_files.clear();
    inv.pending_markers.clear();
    // A pruned unit whose stop was lost: its removal is not finished until it is stopped.
    for name in unstopped.iter().filter(|n| !desired.units.contains_key(*n) && inv.files.contains_key(*n)) {
        inv.pending_files.insert(name.clone(), prior.files.get(name).map(|r| r.sha256.clone()));
    }
    if inv.applied_commit.as_deref() != Some(&desired.commit) {
        inv.applied_commit = Some(desired.commit.clone());
        inv.applied_at = Some(now);
    }
    // Only a deploy that did all it planned may say what the files were rendered from: with a
    // change held back by its health.check, or a job whose outcome is unknown, the next apply
    // must render and look again.
    inv.render_key = (vetoed.is_empty() && faults.is_empty() && inv.pending_restarts.is_empty()).then(|| key.to_string());
    if inv != saved {
        crash_point("before-final-inventory");
        state.save_inventory(&inv)?;
    }
    if !faults.is_empty() {
        return Err(ApplyError::Lost(faults));
    }

    tracing::debug!(ms = phase.elapsed().as_millis() as u64, "execute: before step 8");
    // 8. What did not work, with the unit's state and its last journal lines.
    let started: Vec<&str> =
        plan.units.iter().filter(|u| u.actions.iter().any(|a| matches!(a, Action::Start | Action::Restart))).map(|u| u.unit.as_str()).collect();
    let after = sd.statuses(&started).await?;
    let failed_jobs: Vec<&JobResult> = report.jobs.iter().filter(|j| !j.done()).collect();
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
    Ok(plan.clone())
}

/// What a commit renders to on this host depends on: the commit and the fleet directory in
/// it, the host's name, the scope and directories, and the binary (helper units name its
/// content-addressed copy, and another version may render otherwise). The binary is told by
/// its identity (path, inode, size, times: `exe::identity_key`), which a stat gives: any
/// rebuild changes it, and hashing it here would cost every apply its size in reading.
pub fn render_key(cfg: &HostConfig, commit: &str, path: Option<&str>) -> String {
    format!(
        "{commit} path={} host={} scope={:?} units={} state={} exe={} fleetwright={} identity={}",
        path.unwrap_or(""),
        cfg.host,
        cfg.scope,
        cfg.unit_dir.display(),
        cfg.state_dir.display(),
        super::exe::identity_key(),
        env!("CARGO_PKG_VERSION"),
        identity_key(cfg)
    )
}

/// The host identity that decrypts secrets, as a stat (which file, and whether it changed): a
/// new identity may decrypt a commit's secrets differently, so its units are rendered again.
fn identity_key(cfg: &HostConfig) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(path) = super::secrets::identity_path(cfg.identity.as_deref()) else { return "none".into() };
    match std::fs::metadata(&path) {
        Ok(m) => format!("{}:{}:{}:{}:{}", path.display(), m.dev(), m.ino(), m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// The same commit again, without reading it: when the inventory says the host was last
/// converged from `key` (and nothing was left pending), the desired state is what the
/// inventory records, with each file's content as on disk where its hash matches. Planned
/// against the host like any commit; when that plan has nothing to do, this is the answer
/// (`Some`). Anything else (a file edited or gone, a unit stopped, another key) is `None`:
/// the caller reads, validates and renders the commit and deploys it in full.
pub async fn deploy_unchanged(
    sd: &impl UnitManager,
    cfg: &HostConfig,
    state: &StateDir,
    key: &str,
    opts: crate::plan::PlanOptions,
) -> Result<Option<Deployment>, ApplyError> {
    let t = std::time::Instant::now();
    let _lock = state.lock()?;
    let inv = state.load_inventory()?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "same commit: lock and inventory");
    let t = std::time::Instant::now();
    // What killed applies, backups and restores left, whatever else this run finds.
    sweep_apply_temps(cfg, state, &inv)?;
    sweep_backup_temps(&inv);
    tracing::debug!(us = t.elapsed().as_micros() as u64, "same commit: temporary files swept");
    // Anything left to do, or a run not known to be of its definition: the full apply looks.
    if inv.render_key.as_deref() != Some(key)
        || inv.reload_pending
        || !inv.pending_restarts.is_empty()
        || !inv.pending_files.is_empty()
        || !inv.pending_markers.is_empty()
        || inv.files.values().any(|r| !r.role.is_job() && r.confirmed.as_ref() != Some(&r.sha256))
    {
        return Ok(None);
    }
    let Some(commit) = inv.applied_commit.clone() else { return Ok(None) };
    // The copy of this binary the helper units run, gone: the full apply puts it back.
    // Whether a unit names a copy of the binary that is gone: those that name one say which.
    let copy_gone = |content: &str| {
        content
            .split_whitespace()
            .map(|w| w.trim_matches('"').trim_start_matches('+'))
            .any(|w| Path::new(w).parent().is_some_and(|d| d == cfg.layout().bin()) && w.contains("/fleetwright-") && !Path::new(w).is_file())
    };
    // Deploy markers as the inventory says (cheap: two small files per agent).
    let t = std::time::Instant::now();
    if !marker_problems(state, &inv).is_empty() {
        return Ok(None);
    }
    tracing::debug!(us = t.elapsed().as_micros() as u64, "same commit: deploy markers checked");
    let mut units = BTreeMap::new();
    for (name, rec) in &inv.files {
        let Some((content, mode)) = read_regular(&cfg.unit_dir.join(name))? else { return Ok(None) };
        // A file edited, or of the wrong mode: the full apply repairs it.
        if sha256(&content) != rec.sha256 || mode != crate::plan::unit_file_mode(&content) {
            return Ok(None);
        }
        if copy_gone(&content) {
            return Ok(None);
        }
        // A secret's credential file gone: the full apply writes it again.
        if crate::unit::encrypted_credentials(&content).any(|(_, p)| !Path::new(p).is_file()) {
            return Ok(None);
        }
        // Read back from disk, the one place a desired unit comes from text: a file of ours
        // (its hash is the inventory's); only its [Install] targets are needed.
        let wanted_by = crate::unit::wanted_by(&content);
        let enabled = inv.agents.get(&rec.agent).is_some_and(|a| a.enabled);
        units.insert(
            name.clone(),
            crate::desired::DesiredUnit {
                agent: rec.agent.clone(),
                role: rec.role,
                wanted_by,
                content,
                enabled,
                on_change: crate::spec::model::OnChange::None,
                check: None,
            },
        );
    }
    let mut config = BTreeMap::new();
    for (path, rec) in &inv.config {
        let Some((content, _)) = read_regular(Path::new(path))? else { return Ok(None) };
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
    let want = Desired { commit, units, agents, config, refused: Vec::new(), credentials: BTreeMap::new() };
    // What is on disk is what was just read (the desired state is made of it).
    let files = want.units.iter().map(|(n, u)| (n.clone(), Some(u.content.clone()))).collect();
    let on_disk = want.config.iter().map(|(p, (c, _))| (p.clone(), Some(c.clone()))).collect();
    tracing::debug!(us = t.elapsed().as_micros() as u64, "same commit: unit files read");
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
    sd: &impl UnitManager,
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
    // What a killed apply, backup or restore left half-written (never under a real name).
    sweep_apply_temps(cfg, state, &inv)?;
    sweep_backup_temps(&inv);
    let t = std::time::Instant::now();
    let want = cfg.desired(fleet, commit, &inv);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: desired");
    let t = std::time::Instant::now();
    let observed = observe(sd, cfg, &want, inv.clone()).await?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: observed");
    let t = std::time::Instant::now();
    let plan = crate::plan::plan(&want, &observed, opts);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: planned");
    // The helper units run the content-addressed copy of this binary: it is there before
    // any unit naming it is written. (A fleet that never runs it does not hash it.)
    let helper = cfg.runs_fleetwright(fleet).then(|| cfg.helper_binary());
    let exe = helper.as_ref().map(|h| h.path.display().to_string());
    if let (Some(helper), Some(exe)) = (&helper, &exe)
        && plan.errors.is_empty()
        && want.units.values().any(|u| u.content.contains(exe.as_str()))
    {
        let dir = cfg.layout().bin();
        if helper.install(&cfg.state_dir).map_err(|source| ApplyError::Io { path: dir.display().to_string(), source })? {
            tracing::info!(path = %helper.path.display(), "installed the binary the helper units run");
        }
    } else if let Some(helper) = &helper
        && plan.errors.is_empty()
    {
        // No unit runs it, but the next command need not hash the binary again to know so.
        helper.remember(&cfg.state_dir);
    }
    // The secrets' credential files, before any unit that reads them: named by their value,
    // so writing one changes nothing that runs; what no unit names is removed after.
    if plan.errors.is_empty() && !want.credentials.is_empty() {
        let written = super::secrets::write_credentials(cfg, fleet, &want).map_err(|e| ApplyError::Refused(vec![e]))?;
        for p in written {
            tracing::info!(file = %p, "wrote an encrypted credential");
        }
    }
    let t = std::time::Instant::now();
    let (plan, report) = execute(sd, cfg, state, &plan, &want, &inv, key).await?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "deploy: executed");
    // A unit held back by its health check still reads its old credential file.
    let held: Vec<String> = plan.units.iter().filter(|u| u.held.is_some()).filter_map(|u| std::fs::read_to_string(cfg.unit_dir.join(&u.unit)).ok()).collect();
    for p in super::secrets::prune_credentials(cfg, &want, &held) {
        tracing::info!(file = %p.display(), "removed a credential no unit reads any more");
    }
    // Every unit is of this commit now: older copies of the binary are named by none.
    match &helper {
        Some(helper) => prune_helper_binaries(cfg, helper),
        None => prune_helper_binaries(cfg, &super::exe::HelperBinary::none()),
    }
    Ok(Deployment { plan, report })
}

/// Remove the copies of older binaries from `<state>/bin` (a failure is only logged: they
/// take space, nothing else).
fn prune_helper_binaries(cfg: &HostConfig, helper: &super::exe::HelperBinary) {
    match helper.prune_others(&cfg.state_dir) {
        Ok(gone) => {
            for p in gone {
                tracing::info!(path = %p.display(), "removed a copy of an older fleetwright no unit runs any more");
            }
        }
        Err(e) => tracing::warn!(error = %e, "older copies of fleetwright in the state directory not removed"),
    }
}

/// Remove the temporary files killed applies left (`.NAME.fleetwright-tmp-PID` of a writer
/// that is gone) in the unit directory, the state directory, the markers and beside the host
/// configuration files.
pub fn sweep_apply_temps(cfg: &HostConfig, state: &StateDir, inv: &Inventory) -> Result<(), ApplyError> {
    let mut dirs = vec![cfg.unit_dir.clone(), state.root.clone(), state.markers_dir()];
    dirs.extend(inv.config.keys().filter_map(|p| Path::new(p).parent().map(Path::to_path_buf)));
    for dir in dirs {
        for gone in sweep_temps(&dir).map_err(|source| ApplyError::Io { path: dir.display().to_string(), source })? {
            tracing::info!(file = %gone.display(), "removed the temp file of an interrupted write");
        }
    }
    Ok(())
}

/// Remove what killed backups and restores left (their temporary copies, as big as the
/// database) beside every database and in every backup directory the inventory's agents use.
pub fn sweep_backup_temps(inv: &Inventory) {
    for (db, dir) in inv.agents.values().flat_map(|a| a.backups.iter()) {
        match crate::ops::backup::sweep(Path::new(db), Path::new(dir)) {
            Ok(gone) => {
                for f in gone {
                    tracing::info!(file = %f, "removed the temporary file of a killed backup or restore");
                }
            }
            Err(e) => tracing::debug!(db = %db, error = %e, "temporary files of backups not swept"),
        }
    }
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
        .filter(|u| u.role == crate::types::Role::Service && u.actions.iter().any(|a| matches!(a, Action::Start | Action::Restart | Action::Reload)))
        .map(|u| u.unit.as_str())
        .collect();
    if services.is_empty() || grace.is_zero() {
        return Ok(vec![]);
    }
    tracing::info!("watching {} service(s) for {}s: one that fails or restarts by itself meanwhile fails the apply", services.len(), grace.as_secs());
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

/// The order `execute` promises, checked against a manager that records each call with a
/// look at the host at that moment (the unit files, the [Install] links, the inventory and the
/// deploy markers on disk). The recording manager stands in for systemd only to see the order;
/// that the calls do what they say is the real tier's proof (tests/it `apply`, `crash`, `faults`).
#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
