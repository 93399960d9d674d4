//! Plan (pure): desired × observed → a value of typed actions with reasons. `plan` prints it,
//! `apply` executes the same value. Nothing here does I/O or knows of D-Bus.
//!
//! The rules, per unit:
//! - a file is written only when its bytes differ; a change to comments or cosmetic keys
//!   (`unit::COSMETIC_KEYS`) rewrites it and restarts nothing;
//! - a timer's job service is never started or restarted: a run in progress finishes with the
//!   old definition, the next run uses the new one; the timer restarts when the timer changed;
//! - a long-running service follows `service.onChange` (restart, reload or nothing);
//! - a unit in the inventory but no longer desired is stopped, disabled and removed;
//! - a file of our name that the inventory does not record is an error, never overwritten;
//! - an empty desired state never prunes everything unless allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::desired::Desired;
use crate::inventory::{Inventory, sha256};
use crate::render::Role;
use crate::spec::model::OnChange;
use crate::unit::{Change, compare};

/// What systemd says about a unit, as observed by the host layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, … or empty when there is no file.
    pub unit_file_state: String,
    /// The current run's InvocationID (hex), read only for units on the resume list (empty
    /// otherwise, or when the unit is not running).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub invocation_id: String,
}

impl UnitStatus {
    pub fn is_active(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating" | "reloading")
    }
    pub fn is_enabled(&self) -> bool {
        matches!(self.unit_file_state.as_str(), "enabled" | "enabled-runtime" | "linked")
    }
}

/// The host as observed: file contents in the unit directory, unit states, the inventory.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Unit name → file content (None: no file).
    pub files: BTreeMap<String, Option<String>>,
    pub units: BTreeMap<String, UnitStatus>,
    pub inventory: Inventory,
    /// Host configuration files (absolute path → content), desired or owned.
    pub config: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOp {
    Keep,
    Create,
    Update(Change),
    Remove,
}

/// One thing done to a unit through the manager; executed in this order across all units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Stop,
    Disable,
    Enable,
    Reload,
    Restart,
    Start,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitChange {
    pub unit: String,
    pub agent: String,
    pub role: Role,
    pub file: FileOp,
    /// The new content, when the file is written.
    #[serde(skip)]
    pub content: Option<String>,
    /// Unified diff of the file, when it changes.
    pub diff: Option<String>,
    pub actions: Vec<Action>,
    pub reasons: Vec<String>,
    /// Differences from the last apply that nobody committed (edited or stopped by hand).
    pub drift: Vec<String>,
    /// Why its change was held back at apply time (its health.check failed): the old version
    /// keeps running, file and process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl UnitChange {
    pub fn is_noop(&self) -> bool {
        self.file == FileOp::Keep && self.actions.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub commit: String,
    /// Every desired or owned unit, sorted by name; unchanged ones have FileOp::Keep and no actions.
    pub units: Vec<UnitChange>,
    pub daemon_reload: bool,
    /// Problems that make the plan unappliable (a foreign file of our name, an empty fleet).
    pub errors: Vec<String>,
    /// Host configuration files outside the unit directory (the journald drop-in).
    pub config: Vec<ConfigChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChange {
    pub path: String,
    pub file: FileOp,
    #[serde(skip)]
    pub content: Option<String>,
    pub diff: Option<String>,
    /// Try-restarted after the change (it reads the file at start).
    pub restart: Option<String>,
    pub drift: Vec<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.daemon_reload || self.units.iter().any(|u| !u.is_noop()) || self.config.iter().any(|c| c.file != FileOp::Keep)
    }
    pub fn changes(&self) -> impl Iterator<Item = &UnitChange> {
        self.units.iter().filter(|u| !u.is_noop())
    }
    pub fn drift(&self) -> impl Iterator<Item = (&str, &str)> {
        self.units.iter().flat_map(|u| u.drift.iter().map(move |d| (u.unit.as_str(), d.as_str())))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Allow a desired state with no units to prune everything we own.
    pub allow_empty: bool,
}

pub fn plan(desired: &Desired, observed: &Observed, opts: PlanOptions) -> Plan {
    let inv = &observed.inventory;
    let mut errors: Vec<String> = desired.refused.clone();
    let mut units = Vec::new();
    let no_status = UnitStatus::default();

    if desired.units.is_empty() && !inv.files.is_empty() && !opts.allow_empty {
        errors.push(format!(
            "this commit has no agents for this host, and applying it would remove all {} units fleetwright manages here; if that is intended, pass --allow-empty",
            inv.files.len()
        ));
    }

    let names: BTreeSet<&String> = desired.units.keys().chain(inv.files.keys()).collect();
    for name in names {
        let status = observed.units.get(name.as_str()).unwrap_or(&no_status);
        let on_disk = observed.files.get(name.as_str()).cloned().flatten();
        let record = inv.files.get(name.as_str());
        let mut drift = Vec::new();
        if let (Some(rec), Some(text)) = (record, &on_disk) {
            if sha256(text) != rec.sha256 {
                drift.push("the file was edited outside fleetwright".to_string());
            }
        }
        if let (Some(_), None) = (record, &on_disk) {
            drift.push("the file was deleted outside fleetwright".to_string());
        }

        let Some(want) = desired.units.get(name.as_str()) else {
            // Owned but no longer desired: prune.
            let rec = record.expect("name comes from desired or inventory");
            let mut actions = Vec::new();
            if status.is_active() {
                actions.push(Action::Stop);
            }
            if status.is_enabled() {
                actions.push(Action::Disable);
            }
            let reason = if desired.agents.contains_key(&rec.agent) {
                "no longer part of its agent"
            } else {
                "its agent was removed from the fleet (or from this host)"
            };
            units.push(UnitChange {
                unit: name.clone(),
                agent: rec.agent.clone(),
                role: rec.role,
                file: if on_disk.is_some() { FileOp::Remove } else { FileOp::Keep },
                content: None,
                diff: on_disk.as_deref().map(|old| unified_diff(name, old, "")),
                actions,
                reasons: vec![reason.to_string()],
                drift,
                held: None,
            });
            continue;
        };

        if record.is_none() && on_disk.is_some() {
            errors.push(format!(
                "{name} exists in the unit directory but fleetwright did not write it; it is never overwritten. Remove or rename that file, or rename the agent {:?}",
                want.agent
            ));
        } else if record.is_none() && matches!(status.load_state.as_str(), "loaded" | "masked") {
            // Defined elsewhere (a package's unit in /lib/systemd/system, a generator, /run): a
            // file of ours would shadow it, and removing ours later would disable theirs.
            errors.push(format!(
                "{name} is already a unit on this host ({}), from a file fleetwright did not write; it is never shadowed. Rename the agent {:?}, or set a unitPrefix",
                status.load_state, want.agent
            ));
        }
        let mut reasons = Vec::new();
        let (file, change) = match &on_disk {
            None => {
                reasons.push("new unit".to_string());
                (FileOp::Create, Change::Semantic)
            }
            Some(old) => match compare(old, &want.content) {
                Change::Identical => (FileOp::Keep, Change::Identical),
                c => {
                    reasons.push(
                        match c {
                            Change::Cosmetic => "only comments or descriptions changed: nothing restarts",
                            Change::Install => "its [Install] section changed",
                            _ => "its definition changed",
                        }
                        .to_string(),
                    );
                    (FileOp::Update(c), c)
                }
            },
        };
        let semantic = change == Change::Semantic && file != FileOp::Create;
        let mut actions = Vec::new();
        match want.role {
            Role::Job | Role::AuxJob => {
                if record.is_some_and(|r| r.role == Role::Service) {
                    // It was a long-running service: stop it and drop its boot-time link; from
                    // now on its timer starts it.
                    if status.is_active() {
                        actions.push(Action::Stop);
                    }
                    if status.is_enabled() {
                        actions.push(Action::Disable);
                    }
                    reasons.push("it was a long-running service and is now a scheduled job".to_string());
                } else if semantic {
                    reasons.push("a run in progress keeps its definition; the next run uses the new one".to_string());
                }
            }
            Role::Timer | Role::AuxTimer | Role::Service => {
                if want.enabled {
                    if !status.is_enabled() || change == Change::Install {
                        actions.push(Action::Enable);
                    }
                    if !status.is_active() {
                        actions.push(Action::Start);
                        if file == FileOp::Keep {
                            let what = if status.active_state == "failed" { "failed" } else { "not running" };
                            drift.push(format!("it is {what}, and should be running"));
                        }
                    } else if let (false, Some(a)) = (semantic, inv.pending_restarts.get(name.as_str())) {
                        // An interrupted apply wrote this file and planned to restart it. If the
                        // run it meant to replace is gone, the restart was done (after the
                        // reload, so the new run has the new definition): not again.
                        let replaced = inv.restart_from.get(name.as_str()).filter(|id| !id.is_empty());
                        if *a == Action::Restart && replaced.is_some_and(|id| *id != status.invocation_id) {
                            reasons.push("an interrupted apply already restarted it".to_string());
                        } else {
                            actions.push(*a);
                            reasons.push(format!("an interrupted apply had planned to {} it", format!("{a:?}").to_lowercase()));
                        }
                    } else if semantic {
                        if want.check.is_some() && want.on_change != OnChange::None {
                            reasons.push("health.check runs first; if it fails, the old version keeps running".to_string());
                        }
                        match (want.role, want.on_change) {
                            (Role::Timer | Role::AuxTimer, _) | (_, OnChange::Restart) => actions.push(Action::Restart),
                            (_, OnChange::Reload) => actions.push(Action::Reload),
                            (_, OnChange::None) => reasons.push("onChange: none — the running service keeps its old definition until it restarts".to_string()),
                        }
                    }
                } else {
                    if status.is_active() {
                        actions.push(Action::Stop);
                        reasons.push("the agent is disabled (enabled: false)".to_string());
                    }
                    if status.is_enabled() {
                        actions.push(Action::Disable);
                    }
                }
            }
        }
        units.push(UnitChange {
            unit: name.clone(),
            agent: want.agent.clone(),
            role: want.role,
            file,
            content: (file != FileOp::Keep).then(|| want.content.clone()),
            diff: (file != FileOp::Keep).then(|| unified_diff(name, on_disk.as_deref().unwrap_or(""), &want.content)),
            actions,
            reasons,
            drift,
            held: None,
        });
    }
    let daemon_reload = inv.reload_pending || units.iter().any(|u| u.file != FileOp::Keep);
    let config = plan_config(desired, observed, &mut errors);
    Plan { commit: desired.commit.clone(), units, daemon_reload, errors, config }
}

/// Host configuration files: written when their bytes differ, removed when no longer desired
/// (only if ours), refused when a file we did not write is in the way.
fn plan_config(desired: &Desired, observed: &Observed, errors: &mut Vec<String>) -> Vec<ConfigChange> {
    let inv = &observed.inventory;
    let paths: BTreeSet<&String> = desired.config.keys().chain(inv.config.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let on_disk = observed.config.get(path.as_str()).cloned().flatten();
        let record = inv.config.get(path.as_str());
        let mut drift = Vec::new();
        if let (Some(r), Some(text)) = (record, &on_disk) {
            if sha256(text) != r.sha256 {
                drift.push("the file was edited outside fleetwright".to_string());
            }
        }
        let (file, content, restart) = match desired.config.get(path.as_str()) {
            Some((content, unit)) => {
                if record.is_none() && on_disk.is_some() {
                    errors.push(format!(
                        "{path} exists but fleetwright did not write it; it is never overwritten. Move it away, or drop `journal` from the Fleet document"
                    ));
                }
                match &on_disk {
                    Some(old) if old == content => (FileOp::Keep, None, None),
                    Some(old) => (FileOp::Update(compare(old, content)), Some(content.clone()), Some(unit.clone())),
                    None => (FileOp::Create, Some(content.clone()), Some(unit.clone())),
                }
            }
            None if on_disk.is_some() => (FileOp::Remove, None, Some("systemd-journald.service".to_string())),
            None => (FileOp::Keep, None, None),
        };
        let diff = (file != FileOp::Keep).then(|| unified_diff(path, on_disk.as_deref().unwrap_or(""), content.as_deref().unwrap_or("")));
        out.push(ConfigChange { path: path.clone(), file, content, diff, restart, drift });
    }
    out
}

pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header(&format!("a/{name}"), &format!("b/{name}")).to_string()
}

/// The plan as text, unit by unit (what `fleetwright plan` prints).
pub fn render_text(plan: &Plan, with_diffs: bool) -> String {
    let mut out = String::new();
    for e in &plan.errors {
        let _ = writeln!(out, "error: {e}");
    }
    let changes: Vec<&UnitChange> = plan.units.iter().filter(|u| !u.is_noop() || u.held.is_some()).collect();
    if changes.is_empty() && !plan.has_changes() && plan.errors.is_empty() {
        let _ = writeln!(out, "Nothing to do: {} units up to date at {}.", plan.units.len(), short(&plan.commit));
        return out;
    }
    for u in &changes {
        let file = match u.file {
            FileOp::Keep => "keep",
            FileOp::Create => "write (new)",
            FileOp::Update(Change::Cosmetic) => "write (cosmetic)",
            FileOp::Update(_) => "write",
            FileOp::Remove => "remove",
        };
        let actions: Vec<String> = u.actions.iter().map(|a| format!("{a:?}").to_lowercase()).collect();
        let file = if u.held.is_some() { "held back" } else { file };
        let _ = writeln!(out, "{} ({}): {}{}{}", u.unit, u.agent, file, if actions.is_empty() { "" } else { ", " }, actions.join(", "));
        for r in &u.reasons {
            let _ = writeln!(out, "    because {r}");
        }
        for d in &u.drift {
            let _ = writeln!(out, "    drift: {d}");
        }
        if with_diffs {
            if let Some(d) = &u.diff {
                for line in d.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    for c in plan.config.iter().filter(|c| c.file != FileOp::Keep) {
        let _ = writeln!(out, "{}: {:?}{}", c.path, c.file, c.restart.as_deref().map(|u| format!(", then try-restart {u}")).unwrap_or_default());
        for d in &c.drift {
            let _ = writeln!(out, "    drift: {d}");
        }
        if with_diffs {
            for line in c.diff.iter().flat_map(|d| d.lines()) {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    if plan.daemon_reload {
        let _ = writeln!(out, "then: one daemon-reload");
    }
    let unchanged = plan.units.len() - changes.len();
    let _ = writeln!(out, "{} units change, {unchanged} unchanged, at {}.", changes.len(), short(&plan.commit));
    out
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The host exactly as applying `d` would leave it (files written, timers and services active
/// and enabled unless disabled, the inventory recording it all). `plan --base --head` plans the
/// head against this of the base, without a host.
pub fn assume_converged(d: &Desired) -> Observed {
    let mut o = Observed::default();
    for (name, u) in &d.units {
        o.files.insert(name.clone(), Some(u.content.clone()));
        let running = u.enabled && !u.role.is_job();
        o.units.insert(
            name.clone(),
            UnitStatus {
                load_state: "loaded".into(),
                active_state: if running { "active" } else { "inactive" }.into(),
                sub_state: if running { "running" } else { "dead" }.into(),
                unit_file_state: if u.role.is_job() {
                    "static"
                } else if u.enabled {
                    "enabled"
                } else {
                    "disabled"
                }
                .into(),
                ..Default::default()
            },
        );
        o.inventory.files.insert(name.clone(), crate::inventory::FileRecord { sha256: sha256(&u.content), agent: u.agent.clone(), role: u.role });
    }
    for (name, a) in &d.agents {
        let enabled = d.units.values().find(|u| &u.agent == name).is_some_and(|u| u.enabled);
        o.inventory.agents.insert(
            name.clone(),
            crate::inventory::AgentRecord {
                spec_hash: a.spec_hash.clone(),
                changed_commit: a.changed_commit.clone(),
                changed_at: String::new(),
                applied_commit: d.commit.clone(),
                applied_at: String::new(),
                enabled,
                backups: a.backups.clone(),
            },
        );
    }
    for (path, (content, _)) in &d.config {
        o.config.insert(path.clone(), Some(content.clone()));
        o.inventory.config.insert(path.clone(), crate::inventory::ConfigRecord { sha256: sha256(content), commit: d.commit.clone() });
    }
    o.inventory.applied_commit = Some(d.commit.clone());
    o
}
