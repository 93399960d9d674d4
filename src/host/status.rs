//! `fleetwright status`: every agent this host runs, from the inventory and the manager —
//! unit states, last run and its result, next run, deploy marker, drift, drop-ins it did not
//! write, and how often the manager restarted it over the last `RESTART_WINDOW` (from the
//! journal: a service that restarts every few seconds looks fine at any one instant).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::inventory::{AgentRecord, Inventory};
use crate::plan::{UnitStatus, short};
use crate::types::Role;
use crate::types::sha256;

use super::HostConfig;
use super::state::StateDir;
use super::systemd::{Systemd, prop};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitReport {
    pub unit: String,
    pub role: Role,
    #[serde(flatten)]
    pub status: UnitStatus,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    pub started: Option<String>,
    pub finished: Option<String>,
    pub duration_secs: Option<f64>,
    /// systemd's Result: `success`, `exit-code`, `timeout`, `signal`, …
    pub result: String,
    pub exit_status: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub agent: String,
    /// `timer` or `service`.
    pub kind: &'static str,
    /// `ok`, `failed`, `drift`, `stopped` (disabled on purpose), `running` (a job run in progress).
    pub state: &'static str,
    pub enabled: bool,
    pub units: Vec<UnitReport>,
    pub last_run: Option<LastRun>,
    pub next_run: Option<String>,
    pub marker: Option<AgentRecord>,
    pub drift: Vec<String>,
    /// Failed helper jobs (backups, log cleanup), stale heartbeats, restart loops.
    pub problems: Vec<String>,
    /// How many times the manager restarted the agent's services by itself in the last
    /// `RESTART_WINDOW` (None: the journal could not be read).
    pub restarts: Option<u32>,
}

/// The window restarts are counted over.
pub const RESTART_WINDOW: Duration = Duration::from_secs(15 * 60);

/// This many automatic restarts within `RESTART_WINDOW` is a restart loop: the agent is
/// `failed`, whatever state it is in at this instant.
pub const RESTART_LOOP: u32 = 3;

/// The manager's "Automatic restarting of a unit has been scheduled" (journalctl
/// --list-catalog), logged once per automatic restart with the unit in `UNIT=` (`USER_UNIT=`
/// from a user manager).
const RESTART_SCHEDULED: &str = "MESSAGE_ID=5eb03494b6584870a536b337290809b3";

/// Automatic restarts per unit over the last `window`, from the journal; None when it cannot
/// be read. Only entries the manager itself wrote count (`_PID=1`, or the user's own manager):
/// anyone may log a message with that id and a `UNIT=` field, which must not make another
/// user's agent look broken.
pub fn restarts_in_window(scope: crate::types::Scope, window: Duration) -> Option<BTreeMap<String, u32>> {
    let since = std::time::SystemTime::now().checked_sub(window)?.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let mut c = std::process::Command::new("journalctl");
    let field = match scope {
        crate::types::Scope::System => {
            c.arg("_PID=1");
            "UNIT"
        }
        crate::types::Scope::User => {
            c.args(["--user", &format!("_UID={}", nix::unistd::getuid()), "_COMM=systemd"]);
            "USER_UNIT"
        }
    };
    c.args([RESTART_SCHEDULED, "-o", "json", "--output-fields", field, "--no-pager", "-q"]).arg(format!("--since=@{since}"));
    let out = c.stderr(std::process::Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(unit) = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v[field].as_str().map(str::to_string)) {
            *counts.entry(unit).or_insert(0u32) += 1;
        }
    }
    Some(counts)
}

/// What the heartbeat check last did for `agent`, if it restarted it and the heartbeat has
/// not been fresh since.
fn heartbeat_state(state_dir: &std::path::Path, agent: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(crate::layout::StateLayout::new(state_dir).health(agent)).ok()?).ok()?;
    if v["recoveredAt"].is_string() {
        return None;
    }
    Some(format!("heartbeat went stale; restarted {} time(s), last at {}", v["restarts"], v["lastRestart"].as_str().unwrap_or("?")))
}

/// The program of a unit file's first `ExecStart=` (its prefixes `-@:+!` dropped, unquoted).
fn exec_program(text: &str) -> Option<String> {
    let parsed = crate::unit::parse(text);
    let (_, value) = parsed.get("Service")?.iter().find(|(k, v)| k == "ExecStart" && !v.is_empty())?;
    let word = value.trim_start_matches(['-', '@', ':', '+', '!']).split_whitespace().next()?;
    Some(word.trim_matches('"').to_string())
}

fn usec_to_rfc3339(us: u64) -> Option<String> {
    (us > 0 && us != u64::MAX).then(|| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(us)).to_string())
}

pub async fn collect(sd: &Systemd, cfg: &HostConfig, state: &StateDir) -> Result<(Inventory, Vec<AgentStatus>), Box<dyn std::error::Error>> {
    let inv = state.load_inventory()?;
    let names: Vec<&str> = inv.files.keys().map(String::as_str).collect();
    let mut statuses = sd.statuses(&names).await?;
    // The runs in question (a restart or reload owed, or not confirmed): what they are.
    let mut in_question: std::collections::BTreeSet<&str> = inv.pending_restarts.keys().map(String::as_str).collect();
    in_question.extend(inv.unconfirmed());
    let in_question: Vec<&str> = in_question.into_iter().filter(|n| inv.files.contains_key(*n)).collect();
    for (name, (id, started)) in sd.runs(&in_question).await? {
        if let Some(u) = statuses.get_mut(&name) {
            u.invocation_id = id;
            u.run_started = started;
        }
    }
    let boot = super::boot_id();
    let mut by_agent: BTreeMap<&str, Vec<(&str, Role)>> = BTreeMap::new();
    for (unit, rec) in &inv.files {
        by_agent.entry(rec.agent.as_str()).or_default().push((unit.as_str(), rec.role));
    }
    let restarts = restarts_in_window(cfg.scope, RESTART_WINDOW);
    let dropins = super::dropin::foreign(cfg, inv.files.keys().map(String::as_str));
    let mut out = Vec::new();
    for (agent, units) in by_agent {
        let marker = inv.agents.get(agent).cloned();
        let enabled = marker.as_ref().is_none_or(|m| m.enabled);
        let mut drift = Vec::new();
        let mut reports = Vec::new();
        let mut last_run = None;
        let mut next_run = None;
        let kind = if units.iter().any(|(_, r)| *r == Role::Timer) { "timer" } else { "service" };
        let mut failed = false;
        let mut running_job = false;
        let mut problems = Vec::new();
        if let Some(h) = heartbeat_state(&cfg.state_dir, agent) {
            problems.push(h);
        }
        if let Some(m) = marker.as_ref().filter(|_| !inv.pending_markers.contains(agent)) {
            drift.extend(state.marker_problems(agent, m));
        }
        let agent_restarts = restarts.as_ref().map(|r| units.iter().map(|(u, _)| r.get(*u).copied().unwrap_or(0)).sum::<u32>());
        if let Some(n) = agent_restarts.filter(|n| *n > 0) {
            let minutes = RESTART_WINDOW.as_secs() / 60;
            if n >= RESTART_LOOP {
                failed = true;
                problems.push(format!("restart loop: the manager restarted it {n} times in the last {minutes} minutes"));
            } else {
                problems.push(format!("the manager restarted it {n} time(s) in the last {minutes} minutes"));
            }
        }
        for (unit, role) in units.iter().copied() {
            for path in dropins.get(unit).into_iter().flatten() {
                drift.push(super::dropin::describe(unit, path));
            }
            let mut st = statuses.get(unit).cloned().unwrap_or_default();
            let path = cfg.unit_dir.join(unit);
            let rec = &inv.files[unit];
            let unfinished = inv.pending_files.contains_key(unit);
            let text = match std::fs::symlink_metadata(&path) {
                Ok(m) if !m.file_type().is_file() => {
                    let what = if m.file_type().is_symlink() { "a symbolic link" } else { "not a regular file" };
                    drift.push(format!("{unit} is {what}, which fleetwright never writes: foreign, it is neither replaced nor removed until it is moved away"));
                    Err(std::io::Error::other(what))
                }
                _ => std::fs::read_to_string(&path),
            };
            st.unit_file_state = cfg.enablement(unit, text.as_deref().ok()).to_string();
            match &text {
                _ if unfinished => drift.push(format!("{unit} is being changed by an apply that did not finish (run apply)")),
                Ok(text) if sha256(text) != rec.sha256 => drift.push(format!("{unit} was edited outside fleetwright")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => drift.push(format!("{unit} was deleted outside fleetwright")),
                _ => {}
            }
            // A restart (or reload) owed: on the resume list of an interrupted apply, or a run
            // not known to be of the definition on disk, unless it demonstrably is by now.
            if !role.is_job() && enabled {
                let replaced = inv.restart_from.get(unit).map(String::as_str);
                let current = crate::plan::runs_current_definition(rec, &st, &boot, replaced);
                match inv.pending_restarts.get(unit) {
                    Some(a) if !current => drift.push(format!("{unit}: an interrupted apply has yet to {} it (run apply)", format!("{a:?}").to_lowercase())),
                    None if rec.confirmed.as_ref().is_some_and(|c| *c != rec.sha256) && st.is_active() && !current => {
                        drift.push(format!("{unit} runs an invocation that began before its current definition was loaded: a restart was lost (run apply)"))
                    }
                    _ => {}
                }
            }
            // The mode its content asks for (0600 with Environment=), as `plan` checks it.
            if let (Ok(text), Ok(m)) = (&text, std::fs::symlink_metadata(&path)) {
                use std::os::unix::fs::PermissionsExt;
                let (is, should) = (m.permissions().mode() & 0o7777, crate::plan::unit_file_mode(text));
                if m.file_type().is_file() && is != should {
                    drift.push(format!("{unit} has mode {is:04o}, and should be {should:04o}"));
                }
            }
            if (role.is_timer() || role == Role::Service) && enabled && text.is_ok() && !st.is_enabled() && !unfinished {
                drift.push(format!("{unit} was disabled outside fleetwright"));
            }
            if (role.is_timer() || role == Role::Service) && enabled && !st.is_active() {
                drift.push(format!("{unit} is {}, and should be running", st.active_state));
            }
            // A crash loop shows as activating/auto-restart: that is failing, not fine.
            failed |= st.active_state == "failed" || st.sub_state == "auto-restart";
            // The program a helper runs (the fleetwright binary that wrote it) must be there.
            if role == Role::AuxJob
                && let Ok(text) = &text
                && let Some(program) = exec_program(text)
                && let Some(why) = super::helper_program_problem(&program)
            {
                problems.push(format!("{unit} runs {program}, which {why}: apply with the installed fleetwright to rewrite it"));
            }
            match role {
                Role::AuxJob => {
                    // A helper (log cleanup, backup, heartbeat) that failed is the agent's problem.
                    let p = sd.properties(unit, "org.freedesktop.systemd1.Service").await?;
                    let result = prop::<String>(&p, "Result").unwrap_or_default();
                    if st.active_state == "failed" || (!result.is_empty() && result != "success") {
                        failed = true;
                        problems.push(format!("{unit} failed ({result})"));
                    }
                }
                Role::AuxTimer => {}
                Role::Timer => {
                    let p = sd.properties(unit, "org.freedesktop.systemd1.Timer").await?;
                    next_run = prop::<u64>(&p, "NextElapseUSecRealtime").and_then(usec_to_rfc3339).or_else(|| {
                        // A monotonic timer (`every`): its next elapse is on CLOCK_MONOTONIC.
                        let mono = prop::<u64>(&p, "NextElapseUSecMonotonic").filter(|t| *t > 0 && *t != u64::MAX)?;
                        let now_mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
                        let now_us = now_mono.tv_sec() as u64 * 1_000_000 + now_mono.tv_nsec() as u64 / 1000;
                        let wall = std::time::SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_micros() as u64;
                        usec_to_rfc3339(wall + mono.saturating_sub(now_us))
                    });
                }
                Role::Job | Role::Service => {
                    running_job |= role == Role::Job && st.is_active();
                    let p = sd.properties(unit, "org.freedesktop.systemd1.Service").await?;
                    let start = prop::<u64>(&p, "ExecMainStartTimestamp").filter(|t| *t > 0);
                    let exit = prop::<u64>(&p, "ExecMainExitTimestamp").filter(|t| *t > 0);
                    if start.is_some() {
                        last_run = Some(LastRun {
                            started: start.and_then(usec_to_rfc3339),
                            finished: exit.and_then(usec_to_rfc3339),
                            duration_secs: match (start, exit) {
                                (Some(s), Some(e)) if e >= s => Some((e - s) as f64 / 1e6),
                                _ => None,
                            },
                            result: prop::<String>(&p, "Result").unwrap_or_default(),
                            exit_status: exit.and(prop::<i32>(&p, "ExecMainStatus")),
                        });
                    }
                    if let Some(r) = &last_run {
                        failed |= role == Role::Job && r.result != "success";
                    }
                }
            }
            reports.push(UnitReport { unit: unit.to_string(), role, status: st });
        }
        let state = if failed {
            "failed"
        } else if !drift.is_empty() {
            "drift"
        } else if !enabled {
            "stopped"
        } else if running_job {
            "running"
        } else {
            "ok"
        };
        out.push(AgentStatus {
            agent: agent.to_string(),
            kind,
            state,
            enabled,
            units: reports,
            last_run,
            next_run,
            marker,
            drift,
            problems,
            restarts: agent_restarts,
        });
    }
    // Failing agents first, then by name.
    out.sort_by_key(|a| (a.state != "failed", a.state != "drift", a.agent.clone()));
    Ok((inv, out))
}

/// What the daemon knows beyond the host: the branch, the last good commit, the pin, the gate.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The head of the followed branch as the daemon last saw it, and its standing.
    pub head: Option<Head>,
    pub last_good: Option<String>,
    pub pinned: Option<PinInfo>,
    /// The health gate in progress (or cut short by a stop: it is run again at the next start).
    pub gate: Option<serde_json::Value>,
    /// Whether the last fetch of a remote worked.
    pub source: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    pub commit: String,
    pub seen_at: Option<String>,
    /// good, bad, held, refused; None: no verdict yet (new, or being gated).
    pub verdict: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinInfo {
    pub commit: String,
    /// Pinned with `rollback --force` although it was marked bad.
    pub force: bool,
    pub at: Option<String>,
}

pub fn render_text(inv: &Inventory, agents: &[AgentStatus], deployment: Option<&Deployment>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "applied commit: {} at {}", inv.applied_commit.as_deref().map(short).unwrap_or("none"), inv.applied_at.as_deref().unwrap_or("never"));
    if inv.reload_pending {
        let _ = writeln!(out, "pending: a daemon-reload an interrupted apply did not do (run apply)");
    }
    if let Some(d) = deployment {
        match &d.head {
            Some(h) => {
                let standing = match (&h.verdict, &h.reason) {
                    (Some(v), Some(r)) if !r.is_empty() && v != "good" => format!("{v} ({r})"),
                    (Some(v), _) => v.clone(),
                    (None, _) if d.gate.as_ref().is_some_and(|g| g["commit"] == h.commit.as_str()) => "being gated".to_string(),
                    (None, _) => "no verdict yet".to_string(),
                };
                let _ = writeln!(out, "head: {} {standing}", short(&h.commit));
            }
            None => {
                let _ = writeln!(out, "head: not known (no daemon has run here)");
            }
        }
        let pin = d.pinned.as_ref().map(|p| format!("{}{}", short(&p.commit), if p.force { " (forced)" } else { "" })).unwrap_or_else(|| "none".into());
        let _ = writeln!(out, "last good: {}   pinned: {pin}", d.last_good.as_deref().map(short).unwrap_or("none"));
        if let Some(g) = &d.gate {
            let _ = writeln!(
                out,
                "gate: {} since {} until {}, watching {}",
                g["commit"].as_str().map(short).unwrap_or("?"),
                g["startedAt"].as_str().unwrap_or("?"),
                g["until"].as_str().unwrap_or("?"),
                g["units"]
                    .as_array()
                    .map(|u| u.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or("nothing".into())
            );
        }
        if let Some(s) = d.source.as_ref().filter(|s| s["ok"] == false) {
            let _ = writeln!(out, "source: fetch failing since {}: {}", s["since"].as_str().unwrap_or("?"), s["error"].as_str().unwrap_or("?"));
        }
    }
    let _ = writeln!(out, "{:<28} {:<8} {:<8} {:<36} {:<22} {:<12}", "AGENT", "KIND", "STATE", "LAST RUN", "NEXT RUN", "COMMIT");
    for a in agents {
        let last = a
            .last_run
            .as_ref()
            .map(|r| format!("{} {}{}", r.started.as_deref().unwrap_or("-"), r.result, r.duration_secs.map(|d| format!(" {d:.0}s")).unwrap_or_default()))
            .unwrap_or_else(|| "-".into());
        let commit = a.marker.as_ref().map(|m| short(&m.changed_commit).to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "{:<28} {:<8} {:<8} {:<36} {:<22} {:<12}", a.agent, a.kind, a.state, last, a.next_run.as_deref().unwrap_or("-"), commit);
        for d in &a.drift {
            let _ = writeln!(out, "    drift: {d}");
        }
        for p in &a.problems {
            let _ = writeln!(out, "    problem: {p}");
        }
    }
    // Names and problems come from the inventory, the manager and the agents' records: no
    // control character from them reaches a terminal raw (`colorize` adds its own after).
    crate::spec::diag::printable_lines(&out).into_owned()
}

/// Color the STATE column for a terminal: failed red, drift yellow, ok green.
pub fn colorize(text: &str) -> String {
    text.lines()
        .map(|l| {
            let painted = [(" failed ", "31"), (" drift ", "33"), (" ok ", "32"), (" running ", "36")]
                .iter()
                .find(|(w, _)| l.contains(w))
                .map(|(w, c)| l.replacen(w, &format!(" \x1b[{c}m{}\x1b[0m ", w.trim()), 1));
            painted.unwrap_or_else(|| l.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
