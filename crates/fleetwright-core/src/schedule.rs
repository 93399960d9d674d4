//! `fleetwright schedule` (pure): when every timer of the fleet fires in a window, as a
//! timeline, with warnings where runs pile up in the same minute or overlap beyond their
//! concurrency group's limit. Computed from the timers the fleet renders to (the agents' own
//! and their log-retention and backup timers, the same files `apply` writes), with the
//! RandomizedDelaySec span of each run, in the zones systemd evaluates them in: the host's
//! local zone, or the one an expression names. The zones are given by the caller (the host
//! layer reads the zone database); nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::render::{RenderCtx, render_agent};
use crate::spec::calendar::{CalendarSpec, ZoneLookup, parse_calendar};
use crate::spec::model::Fleet;
use crate::types::Role;
use crate::unit::UnitFile;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The agent, or `agent.backup` / `agent.logs` for its helper timers.
    pub agent: String,
    /// The OnCalendar expressions (`a or b`), or `every 30min`.
    pub when: String,
    /// Run start times (unix seconds) in the window.
    pub runs: Vec<i64>,
    /// Each run may start up to this many seconds later (RandomizedDelaySec).
    pub spread: i64,
    /// A run's assumed length for overlap checks: run.timeout, else one minute.
    pub length: i64,
    pub group: Option<(String, u32)>,
    /// Disabled agents are listed but do not run.
    pub enabled: bool,
    /// `every`: the phase depends on the last run, unknown here; left out of pile-up warnings.
    pub relative: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub from: i64,
    pub to: i64,
    /// The zone times are shown in.
    pub zone: String,
    #[serde(skip)]
    pub display: jiff::tz::TimeZone,
    pub rows: Vec<Row>,
    pub warnings: Vec<String>,
}

/// The zones a schedule is computed in: the host's (for expressions that name none, as
/// systemd does), and each zone an expression names, resolved (missing: not installed).
#[derive(Debug, Clone)]
pub struct Zones {
    pub local: jiff::tz::TimeZone,
    /// Its name, for display (`UTC`, `Europe/Berlin`).
    pub local_name: String,
    pub named: BTreeMap<String, jiff::tz::TimeZone>,
}

impl Zones {
    pub fn utc() -> Zones {
        Zones { local: jiff::tz::TimeZone::UTC, local_name: "UTC".into(), named: BTreeMap::new() }
    }
}

/// At most this many runs per agent are listed (a `minutely` timer has 1440 a day).
const MAX_RUNS: usize = 10_000;

/// One timer as rendered: its calendar expressions, or its interval; its randomized delay.
struct Timer {
    /// Each OnCalendar= expression, parsed once.
    calendars: Vec<(String, CalendarSpec)>,
    every: Option<i64>,
    spread: i64,
}

/// The timer of a rendered `[Timer]` section; `None` for a heartbeat check's, or a file without one.
fn timer_of(file: &UnitFile, installed: &dyn ZoneLookup) -> Option<Timer> {
    if !file.sections.iter().any(|(name, _)| name == "Timer") {
        return None;
    }
    let secs = |v: &str| crate::spec::values::parse_duration(v).map(|d| (d.0 / 1000) as i64).ok();
    let mut t = Timer { calendars: vec![], every: None, spread: 0 };
    for (k, v) in file.entries("Timer") {
        match k {
            // Unit files escape `%` as `%%`; the expression itself has one.
            "OnCalendar" => {
                let expr = v.replace("%%", "%");
                // The spec's expressions were parsed with the same zones when the fleet loaded.
                if let Ok(spec) = parse_calendar(&expr, installed) {
                    t.calendars.push((expr, spec));
                }
            }
            "OnUnitActiveSec" => t.every = secs(v),
            "RandomizedDelaySec" => t.spread = secs(v).unwrap_or(0),
            // Heartbeat checks (OnActiveSec=) are short and frequent: not runs to schedule.
            "OnActiveSec" => return None,
            _ => {}
        }
    }
    Some(t)
}

/// A timer the fleet renders on this host, parsed: what `named_zones` and `compute` read
/// (the fleet is rendered once for both).
pub struct FleetTimer {
    /// The agent, or `agent.backup` / `agent.logs` for a helper timer.
    name: String,
    timer: Timer,
    /// How long a run is taken to last, and its concurrency group (the agent's own timer).
    length: i64,
    group: Option<(String, u32)>,
    enabled: bool,
}

/// Every timer of the agents for `host` (all of them without one), as `apply` renders them with
/// `ctx`; `installed`: the host's zone names, as `spec::load` was given them.
pub fn timers(fleet: &Fleet, host: Option<&str>, ctx: &RenderCtx, installed: &dyn ZoneLookup) -> Vec<FleetTimer> {
    let agents: Vec<_> = match host {
        Some(h) => fleet.agents_for_host(h).collect(),
        None => fleet.agents.iter().collect(),
    };
    let base_len = crate::render::unit_base(fleet, "").len();
    let mut out = Vec::new();
    for a in agents {
        // A render the last-line check refuses has no timers to show; plan, apply and render
        // report it.
        let Ok(units) = render_agent(fleet, a, ctx, "") else { continue };
        for u in units {
            if !matches!(u.role, Role::Timer | Role::AuxTimer) {
                continue;
            }
            let Some(timer) = timer_of(&u.file, installed) else { continue };
            let main = u.role == Role::Timer;
            out.push(FleetTimer {
                name: u.name.trim_end_matches(".timer")[base_len..].to_string(),
                timer,
                length: if main { a.run.timeout.map(|d| (d.0 / 1000).max(1) as i64).unwrap_or(60) } else { 60 },
                group: if main { a.concurrency.as_ref().map(|c| (c.group.clone(), c.limit)) } else { None },
                enabled: a.enabled,
            });
        }
    }
    out
}

/// Every zone the timers name, for the caller to resolve.
pub fn named_zones(timers: &[FleetTimer]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, spec) in timers.iter().flat_map(|t| &t.timer.calendars) {
        if let Some(z) = spec.timezone().map(str::to_string)
            && z != "UTC"
            && !out.contains(&z)
        {
            out.push(z);
        }
    }
    out.sort();
    out
}

pub fn compute(timers: &[FleetTimer], from: i64, window: i64, zones: &Zones) -> Schedule {
    let to = from + window;
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for ft in timers {
        let (name, t) = (&ft.name, &ft.timer);
        let (when, runs, relative) = if let Some(step) = t.every {
            // Relative to the last run: shown as if the first run were at the window's start.
            let step = step.max(1);
            (
                format!("every {}", crate::spec::values::Duration(step as u64 * 1000)),
                (0..).map(|k| from + k * step).take_while(|t| *t < to).take(MAX_RUNS).collect(),
                true,
            )
        } else {
            // The union of every expression's runs (a timer with several OnCalendar= lines).
            let mut runs = Vec::new();
            for (e, spec) in &t.calendars {
                let named = spec.timezone().filter(|z| *z != "UTC").map(|z| (z, zones.named.get(z)));
                if let Some((z, None)) = named
                    && !crate::spec::calendar::is_utc_alias(z)
                {
                    warnings.push(format!("{name}: the zone {z} is not installed here; its runs of {e:?} are not shown"));
                    continue;
                }
                let mut at = from - 1;
                while let Some(n) = spec.next_elapse_in(at, &zones.local, named.and_then(|(_, tz)| tz)) {
                    if n >= to || runs.len() >= MAX_RUNS {
                        break;
                    }
                    runs.push(n);
                    at = n;
                }
            }
            runs.sort_unstable();
            runs.dedup();
            runs.truncate(MAX_RUNS);
            (t.calendars.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(" or "), runs, false)
        };
        rows.push(Row { agent: name.clone(), when, runs, spread: t.spread, length: ft.length, group: ft.group.clone(), enabled: ft.enabled, relative });
    }
    let display = zones.local.clone();
    warnings.extend(self::warnings(&rows, &display, &zones.local_name));
    Schedule { from, to, zone: zones.local_name.clone(), display, rows, warnings }
}

/// `YYYY-MM-DD HH:MM` of `t` in `tz`.
fn day_hhmm(t: i64, tz: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => tz.to_datetime(ts).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => "?".into(),
    }
}

fn hhmm(t: i64, tz: &jiff::tz::TimeZone) -> String {
    day_hhmm(t, tz).split_once(' ').map(|(_, hm)| hm.to_string()).unwrap_or_default()
}

fn warnings(rows: &[Row], tz: &jiff::tz::TimeZone, zone: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Pile-ups: three or more agents starting in the same minute (without a spread that
    // separates them).
    let mut per_minute: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.enabled && !r.relative && r.spread < 60) {
        for t in &r.runs {
            per_minute.entry(t / 60).or_default().push(&r.agent);
        }
    }
    let mut piles: BTreeMap<Vec<&str>, Vec<i64>> = BTreeMap::new();
    for (m, mut agents) in per_minute {
        agents.sort();
        agents.dedup();
        if agents.len() >= 3 {
            piles.entry(agents).or_default().push(m * 60);
        }
    }
    for (agents, at) in piles {
        out.push(format!(
            "{} runs start in the same minute {} time(s) (first at {} {zone}): {}; add randomizedDelay or move one",
            agents.len(),
            at.len(),
            hhmm(at[0], tz),
            agents.join(", ")
        ));
    }
    // Concurrency: intervals [start, start + spread + length) per group.
    /// A group's limit and its runs as (start, +1 or -1) events.
    type Group = (u32, Vec<(i64, i32)>);
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.enabled) {
        if let Some((g, limit)) = &r.group {
            let e = groups.entry(g.as_str()).or_insert((*limit, Vec::new()));
            e.0 = e.0.min(*limit);
            for t in &r.runs {
                e.1.push((*t, 1));
                e.1.push((t + r.spread + r.length, -1));
            }
        }
    }
    for (g, (limit, mut ev)) in groups {
        ev.sort();
        let (mut cur, mut max, mut at) = (0, 0, 0);
        for (t, d) in ev {
            cur += d;
            if cur > max {
                max = cur;
                at = t;
            }
        }
        if max > limit as i32 {
            out.push(format!(
                "concurrency group {g}: up to {max} runs may overlap (first at {} {zone}), over its limit of {limit}; the extra ones will skip or wait",
                hhmm(at, tz)
            ));
        }
    }
    out
}

/// The timeline: one row per agent, one column per slice of the window.
pub fn render_text(s: &Schedule, columns: usize) -> String {
    let mut o = String::new();
    let span = (s.to - s.from).max(1);
    let name_w = s.rows.iter().map(|r| r.agent.len()).max().unwrap_or(5).max(5);
    let _ =
        writeln!(o, "{:<name_w$}  {:<columns$}  runs  when", "agent", format!("{} → {} {}", day_hhmm(s.from, &s.display), day_hhmm(s.to, &s.display), s.zone));
    for r in &s.rows {
        let mut line = vec!['·'; columns];
        for t in &r.runs {
            let col = ((t - s.from) * columns as i64 / span) as usize;
            let end = (((t + r.spread - s.from) * columns as i64) / span).min(columns as i64 - 1) as usize;
            for c in line.iter_mut().take(end + 1).skip(col + 1) {
                if *c == '·' {
                    *c = '~';
                }
            }
            if col < columns {
                line[col] = '|';
            }
        }
        let bar: String = line.into_iter().collect();
        let flag = if r.enabled { "" } else { " (disabled)" };
        let _ = writeln!(o, "{:<name_w$}  {bar}  {:>4}  {}{flag}", r.agent, r.runs.len(), r.when);
    }
    let _ = writeln!(
        o,
        "\n| = a run starts, ~ = its randomized delay span; times are {}; `every` timers count from their last run, shown from the window's start.",
        s.zone
    );
    for w in &s.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}
