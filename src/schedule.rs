//! `fleetwright schedule` (pure): when every timer of the fleet fires in a window, as a
//! timeline, with warnings where runs pile up in the same minute or overlap beyond their
//! concurrency group's limit. Computed from the OnCalendar expressions themselves (UTC), with
//! the RandomizedDelaySec span of each run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::spec::calendar::parse_calendar;
use crate::spec::model::{Fleet, Mode, Trigger};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub agent: String,
    /// The OnCalendar expression, or `every 30min`.
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
    pub rows: Vec<Row>,
    pub warnings: Vec<String>,
}

/// At most this many runs per agent are listed (a `minutely` timer has 1440 a day).
const MAX_RUNS: usize = 10_000;

pub fn compute(fleet: &Fleet, host: Option<&str>, from: i64, window: i64) -> Schedule {
    let to = from + window;
    let mut rows = Vec::new();
    let agents: Vec<_> = match host {
        Some(h) => fleet.agents_for_host(h).collect(),
        None => fleet.agents.iter().collect(),
    };
    for a in agents {
        let Mode::Scheduled(s) = &a.mode else { continue };
        let (when, runs) = match &s.trigger {
            Trigger::Calendar { expr, also, .. } => {
                // The union of every expression's runs (a timer with several OnCalendar= lines).
                let mut runs = Vec::new();
                for e in std::iter::once(expr).chain(also) {
                    if let Ok(spec) = parse_calendar(e) {
                        let mut t = from - 1;
                        while let Some(n) = spec.next_elapse(t) {
                            if n >= to || runs.len() >= MAX_RUNS {
                                break;
                            }
                            runs.push(n);
                            t = n;
                        }
                    }
                }
                runs.sort_unstable();
                runs.dedup();
                runs.truncate(MAX_RUNS);
                (std::iter::once(expr).chain(also).cloned().collect::<Vec<_>>().join(" or "), runs)
            }
            // Relative to the last run: shown as if the first run were at the window's start.
            Trigger::Every(d) => {
                let step = (d.0 / 1000).max(1) as i64;
                (format!("every {d}"), (0..).map(|k| from + k * step).take_while(|t| *t < to).take(MAX_RUNS).collect())
            }
        };
        rows.push(Row {
            agent: a.name.clone(),
            when,
            runs,
            spread: s.randomized_delay.map(|d| (d.0 / 1000) as i64).unwrap_or(0),
            length: a.run.timeout.map(|d| (d.0 / 1000).max(1) as i64).unwrap_or(60),
            group: a.concurrency.as_ref().map(|c| (c.group.clone(), c.limit)),
            enabled: a.enabled,
            relative: matches!(s.trigger, Trigger::Every(_)),
        });
    }
    let warnings = warnings(&rows);
    Schedule { from, to, rows, warnings }
}

fn rfc3339(t: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64)).to_string()
}

fn hhmm(t: i64) -> String {
    rfc3339(t)[11..16].to_string()
}

fn day_hhmm(t: i64) -> String {
    let s = rfc3339(t);
    format!("{} {}", &s[..10], &s[11..16])
}

fn warnings(rows: &[Row]) -> Vec<String> {
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
            "{} runs start in the same minute {} time(s) (first at {} UTC): {}; add randomizedDelay or move one",
            agents.len(),
            at.len(),
            hhmm(at[0]),
            agents.join(", ")
        ));
    }
    // Concurrency: intervals [start, start + spread + length) per group.
    let mut groups: BTreeMap<&str, (u32, Vec<(i64, i32)>)> = BTreeMap::new();
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
            out.push(format!("concurrency group {g}: up to {max} runs may overlap (first at {} UTC), over its limit of {limit}; the extra ones will skip or wait", hhmm(at)));
        }
    }
    out
}

/// The timeline: one row per agent, one column per slice of the window.
pub fn render_text(s: &Schedule, columns: usize) -> String {
    let mut o = String::new();
    let span = (s.to - s.from).max(1);
    let name_w = s.rows.iter().map(|r| r.agent.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(o, "{:<name_w$}  {:<columns$}  runs  when", "agent", format!("{} → {} UTC", day_hhmm(s.from), day_hhmm(s.to)));
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
    let _ = writeln!(o, "\n| = a run starts, ~ = its randomized delay span; times are UTC; `every` timers count from their last run, shown from the window's start.");
    for w in &s.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}
