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
use crate::inventory::Inventory;
use crate::spec::model::OnChange;
use crate::types::sha256;
use crate::types::{Action, Role};
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
    /// The current run's InvocationID (hex), read only for units whose run is in question (on
    /// the resume list, or not confirmed to be of their current definition); empty otherwise,
    /// or when the unit is not running.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub invocation_id: String,
    /// When the current run began, CLOCK_MONOTONIC µs (read with `invocation_id`; 0 unknown).
    #[serde(skip)]
    pub run_started: u64,
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
    /// Unit name → permission bits of its file on disk (absent: no file, or not known; then
    /// the mode is not checked).
    pub modes: BTreeMap<String, u32>,
    /// Unit names whose place holds something fleetwright never writes (a symbolic link, a
    /// directory), with what it is: foreign, whatever the inventory says.
    pub foreign: BTreeMap<String, String>,
    /// Agent → what is wrong with its deploy marker files (missing, changed, not a file).
    pub markers: BTreeMap<String, Vec<String>>,
    /// This boot's id, to compare the inventory's load times with the runs' start times.
    pub boot: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOp {
    Keep,
    Create,
    Update(Change),
    /// The same bytes rewritten with the mode the file should have (`unit_file_mode`).
    Mode,
    Remove,
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
    /// Deploy markers that are not what the inventory says (missing, changed, a directory in
    /// their place): written again.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub markers: Vec<MarkerChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkerChange {
    pub agent: String,
    pub drift: Vec<String>,
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
        self.daemon_reload || self.units.iter().any(|u| !u.is_noop()) || self.config.iter().any(|c| c.file != FileOp::Keep) || !self.markers.is_empty()
    }
    pub fn changes(&self) -> impl Iterator<Item = &UnitChange> {
        self.units.iter().filter(|u| !u.is_noop())
    }
    pub fn drift(&self) -> impl Iterator<Item = (&str, &str)> {
        let units = self.units.iter().flat_map(|u| u.drift.iter().map(move |d| (u.unit.as_str(), d.as_str())));
        units.chain(self.markers.iter().flat_map(|m| m.drift.iter().map(move |d| (m.agent.as_str(), d.as_str()))))
    }
}

/// Whether a unit's current run demonstrably runs its current definition: it is active, it
/// is not `replaced` (the run an apply set out to replace), and it began after the manager
/// loaded the definition (`rec.loaded`) on this boot, or on a later boot than that load. A
/// definition not known to be loaded has no run of it.
pub fn runs_current_definition(rec: &crate::inventory::FileRecord, status: &UnitStatus, boot: &str, replaced: Option<&str>) -> bool {
    if !status.is_active() || replaced.is_some_and(|id| !id.is_empty() && id == status.invocation_id) {
        return false;
    }
    match &rec.loaded {
        None => false,
        Some(l) if !boot.is_empty() && l.boot != boot => true,
        Some(l) => status.run_started > 0 && status.run_started >= l.usec,
    }
}

impl FileOp {
    /// Whether the manager must reload to see this: any change of content (not of a mode).
    pub fn needs_reload(self) -> bool {
        !matches!(self, FileOp::Keep | FileOp::Mode)
    }
}

/// The mode a unit file is written with: 0600 (root only; the manager reads it as root) when
/// it sets an environment variable of the spec's (`run.environment`, which may hold an API
/// key), or one it cannot split; 0644 otherwise (the `FLEETWRIGHT_*` variables fleetwright sets
/// itself are no secret, and a readable unit file is what `systemctl cat` shows to users).
pub fn unit_file_mode(content: &str) -> u32 {
    let private = logical_lines(&content.split_inclusive('\n').collect::<Vec<_>>()).iter().filter_map(environment_value).any(|v| match env_words(v) {
        None => true,
        Some(words) => words.iter().any(|(_, text)| !text.starts_with("FLEETWRIGHT_")),
    });
    if private { 0o600 } else { 0o644 }
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
        // A file an interrupted apply was changing is its business, not drift, while it is still
        // as it was before that apply (or not there yet).
        let unfinished = inv.pending_files.get(name.as_str()).is_some_and(|before| match &on_disk {
            None => true,
            Some(text) => before.as_deref() == Some(sha256(text).as_str()),
        });
        if let Some(what) = observed.foreign.get(name.as_str()) {
            errors.push(format!(
                "{name} in the unit directory is {what}, which fleetwright never writes: it is foreign and never replaced or removed. Move it away, and the next apply writes {name} again"
            ));
        } else if unfinished {
            // Said once below, as a reason.
        } else if let (Some(rec), Some(text)) = (record, &on_disk)
            && sha256(text) != rec.sha256
        {
            drift.push("the file was edited outside fleetwright".to_string());
        } else if let (Some(_), None) = (record, &on_disk) {
            drift.push("the file was deleted outside fleetwright".to_string());
        }
        // A file of ours whose mode is not the one its content asks for (0644 with secrets in
        // it, from an older version or a chmod by hand): drift, repaired by rewriting it.
        let bad_mode = match (record, &on_disk, observed.modes.get(name.as_str()), desired.units.get(name.as_str())) {
            (Some(_), Some(_), Some(&m), Some(want)) if m & 0o7777 != unit_file_mode(&want.content) => {
                let should = unit_file_mode(&want.content);
                let why = if should == 0o600 { " (it holds Environment=, readable by root only)" } else { "" };
                drift.push(format!("its mode is {:04o}, and should be {should:04o}{why}", m & 0o7777));
                true
            }
            _ => false,
        };

        let Some(want) = desired.units.get(name.as_str()) else {
            // Owned but no longer desired: prune.
            let rec = record.expect("name comes from desired or inventory");
            // Only what fleetwright wrote is removed: a file whose bytes are not the ones
            // recorded, and which does not even say it is fleetwright's (a hand-made inventory
            // entry, a file put in the place of ours), is not.
            if let Some(text) = &on_disk
                && sha256(text) != rec.sha256
                && !text.starts_with(crate::unit::MARKER)
                && !unfinished
            {
                errors.push(format!(
                    "{name} is in the inventory, but the file there is not one fleetwright wrote (its content does not match the record, and it has no fleetwright header): it is never removed. Move it away by hand if it should go, or take its entry out of the inventory"
                ));
            }
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

        if record.is_none() && on_disk.is_some() && !observed.foreign.contains_key(name.as_str()) {
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
        if unfinished && record.is_some() {
            reasons.push("an interrupted apply had not finished writing it".to_string());
        }
        let mut secret_changed = false;
        let (file, change) = match &on_disk {
            None if record.is_some() => (FileOp::Create, Change::Semantic),
            None => {
                reasons.push("new unit".to_string());
                (FileOp::Create, Change::Semantic)
            }
            Some(old) => match compare(old, &want.content) {
                Change::Identical if bad_mode => {
                    reasons.push("only its mode changes: nothing restarts".to_string());
                    (FileOp::Mode, Change::Identical)
                }
                Change::Identical => (FileOp::Keep, Change::Identical),
                c => {
                    let secrets = secret_changes(old, &want.content);
                    // A unit whose only change is the value of a secret says just that.
                    let only_secrets = !secrets.is_empty() && compare(&without_secrets(old), &without_secrets(&want.content)) == Change::Identical;
                    if !only_secrets {
                        reasons.push(
                            match c {
                                Change::Cosmetic => "only comments or descriptions changed: nothing restarts",
                                Change::Install => "its [Install] section changed",
                                _ => "its definition changed",
                            }
                            .to_string(),
                        );
                    }
                    secret_changed = !secrets.is_empty();
                    reasons.extend(secrets);
                    (FileOp::Update(c), c)
                }
            },
        };
        let semantic = change == Change::Semantic && file != FileOp::Create;
        // A restart or reload owed to this unit: planned by an apply that did not see it done
        // (the resume list), or the run not confirmed to be of the definition on disk.
        let policy = match (want.role, want.on_change) {
            (Role::Timer | Role::AuxTimer, _) | (_, OnChange::Restart) => Some(Action::Restart),
            (Role::Service, OnChange::Reload) => Some(Action::Reload),
            _ => None,
        };
        let owed = inv.pending_restarts.get(name.as_str()).copied().or_else(|| {
            let want_sha = sha256(&want.content);
            record.filter(|r| r.confirmed.as_ref().is_some_and(|c| *c != r.sha256 && *c != want_sha)).and(policy)
        });
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
                        if matches!(file, FileOp::Keep | FileOp::Mode) {
                            let what = if status.active_state == "failed" { "failed" } else { "not running" };
                            drift.push(format!("it is {what}, and should be running"));
                        }
                    } else if let Some(a) = owed.filter(|_| !semantic) {
                        // An apply wrote this file and planned to restart (or reload) it, and
                        // systemd has not said it did: the resume list has it, or the inventory
                        // does not know its run to be of this definition. A run that demonstrably
                        // began after the definition was loaded is of it: not again.
                        let pending = inv.pending_restarts.contains_key(name.as_str());
                        let replaced = inv.restart_from.get(name.as_str()).map(String::as_str);
                        if record.is_some_and(|r| runs_current_definition(r, status, &observed.boot, replaced)) {
                            reasons.push(
                                if pending { "an interrupted apply already restarted it" } else { "it was restarted since its definition changed" }.to_string(),
                            );
                        } else {
                            actions.push(a);
                            let verb = format!("{a:?}").to_lowercase();
                            if pending {
                                reasons.push(format!("an interrupted apply had planned to {verb} it"));
                            } else {
                                drift.push(format!("it runs an invocation that began before its current definition was loaded (a {verb} was lost)"));
                            }
                        }
                    } else if semantic {
                        if want.check.is_some() && want.on_change != OnChange::None {
                            reasons.push("health.check runs first; if it fails, the old version keeps running".to_string());
                        }
                        match (want.role, want.on_change) {
                            (Role::Timer | Role::AuxTimer, _) | (_, OnChange::Restart) => actions.push(Action::Restart),
                            (_, OnChange::Reload) if secret_changed => {
                                // A reload cannot deliver a credential: they are set up at start.
                                actions.push(Action::Restart);
                                reasons.push("a secret changed, which only a restart delivers (onChange: reload)".to_string());
                            }
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
            diff: file.needs_reload().then(|| unified_diff(name, on_disk.as_deref().unwrap_or(""), &want.content)),
            actions,
            reasons,
            drift,
            held: None,
        });
    }
    let daemon_reload = inv.reload_pending || units.iter().any(|u| u.file.needs_reload());
    let config = plan_config(desired, observed, &mut errors);
    // Deploy markers of agents that stay: what the inventory records is what they must say.
    let markers = observed
        .markers
        .iter()
        .filter(|(agent, problems)| desired.agents.contains_key(*agent) && !problems.is_empty())
        .map(|(agent, problems)| MarkerChange { agent: agent.clone(), drift: problems.clone() })
        .collect();
    Plan { commit: desired.commit.clone(), units, daemon_reload, errors, config, markers }
}

/// `content` without its `LoadCredentialEncrypted=` lines.
fn without_secrets(content: &str) -> String {
    content.split_inclusive('\n').filter(|l| !l.starts_with("LoadCredentialEncrypted=")).collect()
}

/// What changed of a unit's secrets, by name (never a value: the credential file is named by a
/// keyed hash of it).
fn secret_changes(old: &str, new: &str) -> Vec<String> {
    let by_name = |text| crate::unit::encrypted_credentials(text).collect::<BTreeMap<&str, &str>>();
    let (a, b) = (by_name(old), by_name(new));
    let mut out = Vec::new();
    for (name, path) in &b {
        match a.get(name) {
            None => out.push(format!("secret {name} added")),
            Some(p) if p != path => out.push(format!("secret {name} changed")),
            Some(_) => {}
        }
    }
    out.extend(a.keys().filter(|n| !b.contains_key(*n)).map(|n| format!("secret {n} removed")));
    out
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
        let unfinished = inv.pending_files.get(path.as_str()).is_some_and(|before| match &on_disk {
            None => true,
            Some(text) => before.as_deref() == Some(sha256(text).as_str()),
        });
        if let Some(what) = observed.foreign.get(path.as_str()) {
            errors.push(format!("{path} is {what}, which fleetwright never writes: it is foreign and never replaced or removed. Move it away"));
            out.push(ConfigChange { path: path.clone(), file: FileOp::Keep, content: None, diff: None, restart: None, drift });
            continue;
        }
        if let (Some(r), Some(text), false) = (record, &on_disk, unfinished)
            && sha256(text) != r.sha256
        {
            drift.push("the file was edited outside fleetwright".to_string());
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

/// The unified diff of two versions of a file, with the values of secret-looking environment
/// variables redacted (`redact_lines`): computed on the real text, so that a changed secret
/// shows as a changed line, and printed from the redacted one.
pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = diff.iter_old_slices().collect();
    let new_lines: Vec<&str> = diff.iter_new_slices().collect();
    let (old_env, new_env) = (environment(&old_lines), environment(&new_lines));
    let state = |n: &str| if old_env.get(n) == new_env.get(n) { "unchanged" } else { "changed" };
    let (old_shown, new_shown) = (redact_lines(&old_lines, &state), redact_lines(&new_lines, &state));
    let mut out = String::new();
    for (i, hunk) in diff.unified_diff().context_radius(3).iter_hunks().enumerate() {
        if i == 0 {
            let _ = writeln!(out, "--- a/{name}\n+++ b/{name}");
        }
        let _ = writeln!(out, "{}", hunk.header());
        for change in hunk.iter_changes() {
            let line = match (change.tag(), change.old_index(), change.new_index()) {
                (similar::ChangeTag::Insert, _, Some(i)) => &new_shown[i],
                (_, Some(i), _) => &old_shown[i],
                _ => continue,
            };
            let _ = writeln!(out, "{}{line}", change.tag());
            if change.missing_newline() {
                let _ = writeln!(out, "\\ No newline at end of file");
            }
        }
    }
    out
}

/// Does an environment variable of this name probably hold a secret? Names containing TOKEN,
/// KEY, SECRET, PASSWORD, PASSWD, CREDENTIAL, AUTH or PRIVATE, in any case. Their values are
/// never shown by `plan` (text, JSON, the pull-request comment).
pub use crate::spec::values::looks_secret;

/// A line of a unit file as systemd reads it: physical lines `first..=last` joined where one
/// ends in `\` (as `unit::parse` joins them), trimmed.
struct Logical {
    first: usize,
    last: usize,
    text: String,
}

fn logical_lines(lines: &[&str]) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in lines.iter().enumerate() {
        let (first, text) = match pending.take() {
            None => (i, raw.trim().to_string()),
            Some((first, p)) => (first, format!("{p} {}", raw.trim())),
        };
        match text.strip_suffix('\\') {
            Some(stripped) => pending = Some((first, stripped.trim_end().to_string())),
            None => out.push(Logical { first, last: i, text }),
        }
    }
    if let Some((first, text)) = pending {
        out.push(Logical { first, last: lines.len() - 1, text });
    }
    out
}

/// The value of an `Environment=` line, when `l` is one (comments are not).
fn environment_value(l: &Logical) -> Option<&str> {
    if l.text.starts_with('#') || l.text.starts_with(';') {
        return None;
    }
    l.text.split_once('=').filter(|(k, _)| k.trim() == "Environment").map(|(_, v)| v.trim())
}

/// The words of an `Environment=` value as systemd splits them (systemd.syntax(7):
/// separated by whitespace, `"…"` and `'…'` quote, `\` escapes the next character): each
/// as written and unquoted. None when systemd would refuse it (an open quote, a `\` at the end).
fn env_words(value: &str) -> Option<Vec<(&str, String)>> {
    let mut words = Vec::new();
    let mut it = value.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| matches!(c, ' ' | '\t' | '\n' | '\r')).is_some() {}
        let Some(&(start, _)) = it.peek() else { break };
        let (mut text, mut quote, mut end) = (String::new(), None, value.len());
        while let Some((i, c)) = it.next() {
            match (c, quote) {
                (' ' | '\t' | '\n' | '\r', None) => {
                    end = i;
                    break;
                }
                ('\\', _) => text.push(it.next()?.1),
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, _) => text.push(c),
            }
        }
        if quote.is_some() {
            return None;
        }
        words.push((&value[start..end], text));
    }
    Some(words)
}

/// Name → value of every environment assignment of a unit file (the last one wins, as in
/// systemd).
fn environment(lines: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in logical_lines(lines) {
        for (_, text) in environment_value(&l).and_then(env_words).unwrap_or_default() {
            if let Some((k, v)) = text.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// The physical lines of a unit file (line ends dropped) with the value of every
/// secret-looking environment variable replaced by `<redacted, changed>` or `<redacted,
/// unchanged>` (`state` of its name), a word that is not `NAME=VALUE` by `<redacted>`, and a
/// value systemd cannot split by `<redacted: cannot be parsed>`. An `Environment=` line over
/// several physical lines shows whole on its first; the others show as `…`.
fn redact_lines(lines: &[&str], state: &dyn Fn(&str) -> &'static str) -> Vec<String> {
    let mut out: Vec<String> = lines.iter().map(|l| l.trim_end_matches(['\n', '\r']).to_string()).collect();
    for l in logical_lines(lines) {
        let Some(value) = environment_value(&l) else { continue };
        let shown = match env_words(value) {
            None => "<redacted: cannot be parsed>".to_string(),
            Some(words) => words
                .iter()
                .map(|(raw, text)| match text.split_once('=') {
                    Some((name, _)) if looks_secret(name) => crate::unit::quote(&format!("{name}=<redacted, {}>", state(name)), false),
                    Some(_) => raw.to_string(),
                    None => "<redacted>".to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        if l.first == l.last && shown == value {
            continue;
        }
        out[l.first] = format!("Environment={shown}");
        for line in &mut out[l.first + 1..=l.last] {
            *line = "    …".to_string();
        }
    }
    out
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
        return crate::spec::diag::printable_lines(&out).into_owned();
    }
    for u in &changes {
        let file = match u.file {
            FileOp::Keep => "keep",
            FileOp::Create => "write (new)",
            FileOp::Update(Change::Cosmetic) => "write (cosmetic)",
            FileOp::Update(_) => "write",
            FileOp::Mode => "write (mode only)",
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
        if with_diffs && let Some(d) = &u.diff {
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
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
    for m in &plan.markers {
        let _ = writeln!(out, "deploy marker of {}: write", m.agent);
        for d in &m.drift {
            let _ = writeln!(out, "    drift: {d}");
        }
    }
    if plan.daemon_reload {
        let _ = writeln!(out, "then: one daemon-reload");
    }
    let unchanged = plan.units.len() - changes.len();
    let _ = writeln!(out, "{} units change, {unchanged} unchanged, at {}.", changes.len(), short(&plan.commit));
    // Diffs show files as they are on disk: no control character reaches a terminal raw.
    crate::spec::diag::printable_lines(&out).into_owned()
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
        o.inventory.files.insert(name.clone(), crate::inventory::FileRecord::new(sha256(&u.content), u.agent.clone(), u.role));
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-abc";

    fn fleet(env: &str) -> crate::spec::Fleet {
        let doc = format!(
            "apiVersion: fleetwright/v1\nkind: Fleet\nallowRoot: true\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: web\nrun:\n  command: [/usr/bin/web]\n  environment: {env}\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: job\nrun: {{command: [/usr/bin/job]}}\nschedule: {{calendar: daily}}\n"
        );
        crate::spec::load(&[("f.yaml".to_string(), doc)], &crate::spec::calendar::NoDatabase).unwrap_or_else(|d| panic!("{d}"))
    }

    fn desired(f: &crate::spec::Fleet, commit: &str, inv: &Inventory) -> Desired {
        let ctx = crate::render::RenderCtx {
            scope: crate::types::Scope::System,
            state_dir: "/var/lib/fleetwright".into(),
            exe: "/usr/bin/fleetwright".into(),
            secret_ids: Default::default(),
        };
        crate::desired::desired(f, "h", &ctx, commit, inv)
    }

    #[test]
    fn secret_looking_names() {
        for n in ["API_TOKEN", "api_key", "GITHUB_SECRET", "DB_PASSWORD", "PASSWD", "AWS_CREDENTIALS", "BASIC_AUTH", "PRIVATE_PEM", "anthropicApiKey"] {
            assert!(looks_secret(n), "{n}");
        }
        for n in ["LOG_LEVEL", "TZ", "FLEETWRIGHT_AGENT", "PORT", "DATABASE_URL"] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn environment_values_split_as_systemd_splits_them() {
        let w = env_words(r#""A=b c" 'D=e f'  G=h\ i J="k l"m"#).unwrap();
        let texts: Vec<&str> = w.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["A=b c", "D=e f", "G=h i", "J=k lm"]);
        assert_eq!(w[3].0, r#"J="k l"m"#);
        assert_eq!(env_words(r#""A=b"#), None);
        assert_eq!(env_words(r"A=b\"), None);
        assert_eq!(env_words("  ").unwrap(), vec![]);
    }

    #[test]
    fn a_diff_shows_whether_a_secret_changed_never_its_value() {
        let old = format!(
            "[Service]\nEnvironment=\"API_TOKEN={SECRET}1\"\nEnvironment=\"LOG_LEVEL=info\"\nEnvironment=\"DB_PASSWORD={SECRET}2\" \"MODE=a\"\nEnvironment='GH_AUTH={SECRET}3' X\nEnvironment=\"OPENAI_KEY={SECRET}4 \\\n  more\"\nExecStart=/bin/a\n"
        );
        let new = old.replace(&format!("{SECRET}1"), &format!("{SECRET}5")).replace("MODE=a", "MODE=b").replace("/bin/a", "/bin/b");
        let d = unified_diff("u.service", &old, &new);
        assert!(!d.contains(SECRET), "{d}");
        assert!(d.contains("-Environment=\"API_TOKEN=<redacted, changed>\"\n+Environment=\"API_TOKEN=<redacted, changed>\"\n"), "{d}");
        assert!(d.contains(" Environment=\"LOG_LEVEL=info\"\n"), "{d}");
        assert!(
            d.contains("-Environment=\"DB_PASSWORD=<redacted, unchanged>\" \"MODE=a\"\n+Environment=\"DB_PASSWORD=<redacted, unchanged>\" \"MODE=b\"\n"),
            "{d}"
        );
        // A word that is not NAME=VALUE is not shown either (systemd ignores it).
        assert!(d.contains(" Environment=\"GH_AUTH=<redacted, unchanged>\" <redacted>\n"), "{d}");
        // Continued over two lines: whole on the first.
        assert!(d.contains(" Environment=\"OPENAI_KEY=<redacted, unchanged>\"\n     …\n"), "{d}");
        assert!(d.contains("-ExecStart=/bin/a\n+ExecStart=/bin/b\n"), "{d}");
        // A new file, a removed one: every secret changed.
        let d = unified_diff("u.service", "", &new);
        assert!(!d.contains(SECRET) && d.contains("+Environment=\"API_TOKEN=<redacted, changed>\"\n"), "{d}");
        let d = unified_diff("u.service", &old, "");
        assert!(!d.contains(SECRET) && d.contains("-Environment=\"API_TOKEN=<redacted, changed>\"\n"), "{d}");
        // What systemd cannot split is not shown at all.
        let d = unified_diff("u.service", "", &format!("Environment=\"API_TOKEN={SECRET}\n"));
        assert_eq!(d.lines().last(), Some("+Environment=<redacted: cannot be parsed>"), "{d}");
    }

    #[test]
    fn plans_as_text_and_json_show_no_secret_value() {
        let f1 = fleet(&format!("{{API_TOKEN: {SECRET}-one, STRIPE_KEY: {SECRET}-two, LOG_LEVEL: info}}"));
        let f2 = fleet(&format!("{{API_TOKEN: {SECRET}-three, STRIPE_KEY: {SECRET}-two, LOG_LEVEL: debug}}"));
        let d1 = desired(&f1, "c1", &Inventory::default());
        let host = assume_converged(&d1);
        let p = plan(&desired(&f2, "c2", &host.inventory), &host, PlanOptions::default());
        let text = render_text(&p, true);
        let json = serde_json::to_string(&p).unwrap();
        for out in [&text, &json] {
            assert!(!out.contains(SECRET), "{out}");
        }
        assert!(text.contains("+Environment=\"API_TOKEN=<redacted, changed>\""), "{text}");
        assert!(text.contains(" Environment=\"STRIPE_KEY=<redacted, unchanged>\""), "{text}");
        assert!(text.contains("+Environment=\"LOG_LEVEL=debug\""), "{text}");
        // A fresh host: every value is new.
        let p = plan(&d1, &Observed::default(), PlanOptions::default());
        assert!(!render_text(&p, true).contains(SECRET));
        assert!(!serde_json::to_string(&p).unwrap().contains(SECRET));
    }

    #[test]
    fn unit_files_with_environment_are_root_only() {
        assert_eq!(unit_file_mode("[Service]\nExecStart=/bin/a\nEnvironment=\"A=b\"\n"), 0o600);
        assert_eq!(unit_file_mode("[Service]\nEnvironment=\"FLEETWRIGHT_AGENT=a\"\nEnvironment=\"FLEETWRIGHT_DEPLOY_MARKER=/x\"\n"), 0o644);
        assert_eq!(unit_file_mode("[Service]\nEnvironment=\"FLEETWRIGHT_AGENT=a\" \"TOKEN=x\"\n"), 0o600);
        assert_eq!(unit_file_mode("[Service]\nEnvironment = A=b\n"), 0o600);
        assert_eq!(unit_file_mode("[Service]\nEnvironment=\n# Environment=A=b\nEnvironmentFile=/x\n"), 0o644);
        assert_eq!(unit_file_mode("[Timer]\nOnCalendar=daily\n"), 0o644);
    }

    #[test]
    fn a_unit_file_of_the_wrong_mode_is_drift_rewritten_without_a_restart_or_reload() {
        let d = desired(&fleet("{LOG_LEVEL: info}"), "c1", &Inventory::default());
        let mut host = assume_converged(&d);
        for (name, u) in &d.units {
            host.modes.insert(name.clone(), unit_file_mode(&u.content));
        }
        assert!(!plan(&d, &host, PlanOptions::default()).has_changes());
        assert_eq!(host.modes["agent-web.service"], 0o600);
        assert_eq!(host.modes["agent-job.timer"], 0o644);
        host.modes.insert("agent-web.service".into(), 0o644);
        let p = plan(&d, &host, PlanOptions::default());
        let u = p.units.iter().find(|u| u.unit == "agent-web.service").unwrap();
        assert_eq!((u.file, u.actions.clone(), u.diff.clone()), (FileOp::Mode, vec![], None));
        assert_eq!(u.drift, ["its mode is 0644, and should be 0600 (it holds Environment=, readable by root only)"]);
        assert!(!p.daemon_reload, "the content is the same: nothing for the manager to reload");
        assert_eq!(p.changes().count(), 1);
        assert!(render_text(&p, true).contains("agent-web.service (web): write (mode only)\n"), "{}", render_text(&p, true));
    }

    #[test]
    fn a_new_secret_value_restarts_its_users_by_name_and_the_same_value_nothing() {
        let doc = "apiVersion: fleetwright/v1\nkind: Fleet\nallowRoot: true\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: web\nrun:\n  command: [/usr/bin/web]\n  secrets: {token: s/token.age}\nservice: {onChange: reload}\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: job\nrun: {command: [/usr/bin/job], secrets: {token: s/token.age}}\nschedule: {calendar: daily}\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: other\nrun: {command: [/usr/bin/other]}\n";
        let f = crate::spec::load(&[("f.yaml".to_string(), doc.to_string())], &crate::spec::calendar::NoDatabase).unwrap();
        let with = |id: &str| {
            let ctx = crate::render::RenderCtx {
                scope: crate::types::Scope::System,
                state_dir: "/var/lib/fleetwright".into(),
                exe: "/usr/bin/fleetwright".into(),
                secret_ids: crate::render::SecretIds::Known([("s/token.age".to_string(), id.to_string())].into()),
            };
            crate::desired::desired(&f, "h", &ctx, "c1", &Inventory::default())
        };
        let d1 = with("aaaa");
        assert!(d1.units["agent-web.service"].content.contains("LoadCredentialEncrypted=token:/var/lib/fleetwright/credentials/web/token-aaaa.cred\n"));
        assert_eq!(d1.credentials.len(), 2, "one credential file per agent and secret: {:?}", d1.credentials.keys());
        let host = assume_converged(&d1);
        // The same value (the same id): nothing to do.
        assert!(!plan(&with("aaaa"), &host, PlanOptions::default()).has_changes());
        // A new value: its users change, by name; a reload cannot deliver it, so web restarts;
        // the job's next run gets it; `other` is not touched.
        let p = plan(&with("bbbb"), &host, PlanOptions::default());
        let web = p.units.iter().find(|u| u.unit == "agent-web.service").unwrap();
        assert_eq!(web.actions, [Action::Restart]);
        assert!(web.reasons.contains(&"secret token changed".to_string()), "{:?}", web.reasons);
        assert!(!web.reasons.iter().any(|r| r == "its definition changed"), "only the secret: {:?}", web.reasons);
        let job = p.units.iter().find(|u| u.unit == "agent-job.service").unwrap();
        assert!(job.actions.is_empty() && job.reasons.iter().any(|r| r.contains("the next run uses the new one")), "{job:?}");
        assert!(p.changes().all(|u| u.agent != "other"));
        assert!(render_text(&p, true).contains("secret token changed"));
        // Without ids (a host that could not read it), the agents are refused, not rendered.
        let none = crate::desired::desired(&f, "h", &crate::render::RenderCtx { secret_ids: Default::default(), ..ctx_of(&f) }, "c1", &Inventory::default());
        assert!(none.refused.iter().any(|r| r.contains("was not read on this host")), "{:?}", none.refused);
    }

    fn ctx_of(_: &crate::spec::Fleet) -> crate::render::RenderCtx {
        crate::render::RenderCtx {
            scope: crate::types::Scope::System,
            state_dir: "/var/lib/fleetwright".into(),
            exe: "/usr/bin/fleetwright".into(),
            secret_ids: Default::default(),
        }
    }

    #[test]
    fn a_run_that_began_before_its_definition_was_loaded_is_owed_a_restart_once() {
        use crate::inventory::Loaded;
        let d = desired(&fleet("{LOG_LEVEL: info}"), "c1", &Inventory::default());
        let mut host = assume_converged(&d);
        host.boot = "boot-a".into();
        let web = "agent-web.service";
        let sha = host.inventory.files[web].sha256.clone();
        let active = |id: &str, started: u64| UnitStatus {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            unit_file_state: "enabled".into(),
            invocation_id: id.into(),
            run_started: started,
        };
        // Confirmed to be of its definition: nothing to do, nothing read.
        host.inventory.files.get_mut(web).unwrap().confirmed = Some(sha.clone());
        assert!(!plan(&d, &host, PlanOptions::default()).has_changes());
        // Not confirmed (a restart whose job result was lost), loaded at t=1000.
        let rec = host.inventory.files.get_mut(web).unwrap();
        rec.confirmed = Some("the old definition".into());
        rec.loaded = Some(Loaded { boot: "boot-a".into(), usec: 1000 });
        // Its run began before the load: owed, and said so.
        host.units.insert(web.into(), active("old-run", 900));
        let p = plan(&d, &host, PlanOptions::default());
        let u = p.units.iter().find(|u| u.unit == web).unwrap();
        assert_eq!(u.actions, [Action::Restart]);
        assert!(u.drift[0].contains("began before its current definition was loaded (a restart was lost)"), "{:?}", u.drift);
        // It began after the load (the lost job was done after all): not again.
        host.units.insert(web.into(), active("new-run", 1100));
        let p = plan(&d, &host, PlanOptions::default());
        let u = p.units.iter().find(|u| u.unit == web).unwrap();
        assert!(u.actions.is_empty() && u.reasons.iter().any(|r| r.contains("restarted since its definition changed")), "{u:?}");
        // On the resume list, the run it meant to replace still there: owed even if "after".
        host.inventory.pending_restarts.insert(web.into(), Action::Restart);
        host.inventory.restart_from.insert(web.into(), "new-run".into());
        let p = plan(&d, &host, PlanOptions::default());
        let u = p.units.iter().find(|u| u.unit == web).unwrap();
        assert_eq!(u.actions, [Action::Restart]);
        assert!(u.reasons.iter().any(|r| r.contains("an interrupted apply had planned to restart it")), "{u:?}");
        // Not loaded yet (the reload never happened): no run can be of it.
        host.inventory.restart_from.insert(web.into(), "gone".into());
        host.inventory.files.get_mut(web).unwrap().loaded = None;
        assert_eq!(plan(&d, &host, PlanOptions::default()).units.iter().find(|u| u.unit == web).unwrap().actions, [Action::Restart]);
        // Another boot: every run of this one began after any load of the last.
        host.inventory.files.get_mut(web).unwrap().loaded = Some(Loaded { boot: "boot-b".into(), usec: u64::MAX });
        let p = plan(&d, &host, PlanOptions::default());
        let u = p.units.iter().find(|u| u.unit == web).unwrap();
        assert!(u.actions.is_empty() && u.reasons.iter().any(|r| r.contains("already restarted it")), "{u:?}");
    }

    #[test]
    fn what_an_interrupted_apply_had_not_written_is_not_drift() {
        let d1 = desired(&fleet("{LOG_LEVEL: info}"), "c1", &Inventory::default());
        let mut host = assume_converged(&d1);
        let d2 = desired(&fleet("{LOG_LEVEL: debug}"), "c2", &host.inventory);
        let web = "agent-web.service";
        // The pending inventory records the new file; the disk still has the old one, and
        // the new job unit is not written at all.
        let old_sha = host.inventory.files[web].sha256.clone();
        host.inventory.files.get_mut(web).unwrap().sha256 = sha256(&d2.units[web].content);
        host.inventory.pending_files.insert(web.into(), Some(old_sha));
        host.inventory.files.get_mut("agent-job.service").unwrap().sha256 = "new".into();
        host.inventory.pending_files.insert("agent-job.service".into(), Some("whatever".into()));
        host.files.insert("agent-job.service".into(), None);
        let p = plan(&d2, &host, PlanOptions::default());
        assert_eq!(p.drift().count(), 0, "{:?}", p.drift().collect::<Vec<_>>());
        let text = render_text(&p, false);
        assert!(text.contains("because an interrupted apply had not finished writing it"), "{text}");
        // Without the record of the unfinished apply, the same disk is drift.
        host.inventory.pending_files.clear();
        assert!(plan(&d2, &host, PlanOptions::default()).drift().any(|(_, d)| d.contains("outside fleetwright")));
    }

    #[test]
    fn a_symlink_in_an_owned_units_place_or_a_foreign_file_to_prune_refuses_the_plan() {
        let d = desired(&fleet("{LOG_LEVEL: info}"), "c1", &Inventory::default());
        let mut host = assume_converged(&d);
        host.foreign.insert("agent-web.service".into(), "a symbolic link to /x".into());
        let p = plan(&d, &host, PlanOptions::default());
        assert!(p.errors.iter().any(|e| e.contains("agent-web.service in the unit directory is a symbolic link to /x")), "{:?}", p.errors);
        host.foreign.clear();
        // An entry for a unit no longer desired, whose file fleetwright did not write.
        host.inventory.files.insert("agent-ghost.service".into(), crate::inventory::FileRecord::new("0".repeat(64), "ghost".into(), Role::Service));
        host.files.insert("agent-ghost.service".into(), Some("[Service]\nExecStart=/bin/true\n".into()));
        let p = plan(&d, &host, PlanOptions::default());
        assert!(
            p.errors.iter().any(|e| e.contains("agent-ghost.service is in the inventory, but the file there is not one fleetwright wrote")),
            "{:?}",
            p.errors
        );
        // Ours, edited: removed as before.
        host.files.insert("agent-ghost.service".into(), Some(format!("{}\n[Service]\nExecStart=/bin/false\n", crate::unit::MARKER)));
        let p = plan(&d, &host, PlanOptions::default());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.units.iter().find(|u| u.unit == "agent-ghost.service").unwrap().file, FileOp::Remove);
    }

    #[test]
    fn control_characters_in_a_plan_reach_no_terminal() {
        let d = desired(&fleet("{LOG_LEVEL: info}"), "c1", &Inventory::default());
        let mut host = assume_converged(&d);
        // A file edited by hand with an escape sequence in it.
        let edited = d.units["agent-web.service"].content.replace("[Service]", "[Service]\n# \x1b]0;owned\x07\x1b[2J");
        host.files.insert("agent-web.service".into(), Some(edited));
        let text = render_text(&plan(&d, &host, PlanOptions::default()), true);
        assert!(text.contains("-# \\x1b]0;owned\\x07\\x1b[2J"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }
}
