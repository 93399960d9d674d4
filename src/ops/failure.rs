//! The failure reporter (`fleetwright notify-report`), run by `<base>.notify@<unit>.service`,
//! which every unit of an agent names in `OnFailure=` when the Fleet has a `notify` list (and
//! with `--success` by `<base>.recovered@<unit>.service`, a job's `OnSuccess=`). systemd (≥ 251) gives it `$MONITOR_SERVICE_RESULT`,
//! `$MONITOR_EXIT_CODE`, `$MONITOR_EXIT_STATUS`, `$MONITOR_INVOCATION_ID` and `$MONITOR_UNIT`
//! of the unit that triggered it (systemd.exec(5), "Environment variables in spawned
//! processes").
//!
//! A failure: the unit, its agent (the inventory), the result and exit status, the agent's
//! deploy marker commit and the last lines of the failed run's journal (at most
//! `JOURNAL_LINES` lines of `LINE_BYTES`) are queued in the history's outbox, durable in the
//! state directory, and the daemon is woken (`<state>/notify/wake`). Repeated failures of the
//! same unit are grouped: at most one report per `GROUP_INTERVAL`, the failures in between
//! folded into a summary (sent by the daemon when the interval is over, or with the next
//! report). A job's next successful run reports the recovery once; a service's recovery is
//! seen by the daemon (the unit active again). When no daemon runs, the reporter delivers
//! itself, bounded by its unit's `TimeoutStartSec=`. It never fails: its own trouble is said
//! in its journal, and the unit it reports on has ended anyway.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::daemon::history::{Failing, History, HistoryError};
use crate::layout::StateLayout;
use crate::notify::Event;

/// At most one report per unit in this interval; the failures in between are folded. The
/// daemon's `--notify-interval` replaces it (kept in the history, where the reporter reads it).
pub const GROUP_INTERVAL: Duration = Duration::from_secs(600);

/// The settings key of the daemon's `--notify-interval`, in seconds.
pub const INTERVAL_KEY: &str = "notify_group_secs";

/// The grouping interval in force: the daemon's, else `GROUP_INTERVAL`.
pub fn group_interval(h: &History) -> Duration {
    h.get_json(INTERVAL_KEY).ok().flatten().and_then(|v| v.as_u64()).map(Duration::from_secs).unwrap_or(GROUP_INTERVAL)
}
/// The journal's last lines of the failed run that go with a report.
pub const JOURNAL_LINES: usize = 20;
/// Each line cut at this many bytes; the whole at `JOURNAL_BYTES`.
pub const LINE_BYTES: usize = 300;
pub const JOURNAL_BYTES: usize = 4096;

/// What systemd says of the run that triggered the reporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitor {
    pub unit: String,
    /// `success`, `exit-code`, `signal`, `timeout`, `core-dump`, `watchdog`, `start-limit-hit`, …
    pub result: String,
    /// `exited`, `killed`, `dumped`.
    pub exit_code: String,
    pub exit_status: String,
    pub invocation: String,
    /// NRestarts: how often the manager restarted it by itself before it failed for good. A
    /// service that failed after restarts was given up on: a crash loop (its Result= still
    /// names the last run's end, e.g. exit-code, not start-limit-hit).
    pub restarts: u32,
}

impl Monitor {
    /// From `$MONITOR_*`, else (systemd sets none when it sees more than one trigger source
    /// candidate — "skipping" in its log; one template per direction avoids that for the
    /// reporters fleetwright renders) from the unit itself, which keeps its last run's Result=,
    /// ExecMainCode=, ExecMainStatus= and InvocationID= until it runs again; its NRestarts
    /// in any case.
    pub fn gather(unit: &str, user: bool) -> Monitor {
        let m = Monitor::from_env(unit);
        let mut cmd = std::process::Command::new("systemctl");
        if user {
            cmd.arg("--user");
        }
        cmd.args(["show", "--property=Result,ExecMainCode,ExecMainStatus,InvocationID,NRestarts", "--", &m.unit]);
        let text =
            fleetwright_sys::proc::output_with_timeout(cmd, Duration::from_secs(5)).map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
        let shown = Monitor::from_show(&m.unit, &text);
        if m.result.is_empty() { shown } else { Monitor { restarts: shown.restarts, ..m } }
    }

    /// From `systemctl show`'s `Key=value` lines (ExecMainCode is a CLD_* number).
    pub fn from_show(unit: &str, text: &str) -> Monitor {
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").trim().to_string();
        let exit_code = match get("ExecMainCode").as_str() {
            "1" => "exited",
            "2" => "killed",
            "3" => "dumped",
            _ => "",
        };
        Monitor {
            unit: unit.to_string(),
            result: get("Result"),
            exit_code: exit_code.into(),
            exit_status: get("ExecMainStatus"),
            invocation: get("InvocationID"),
            restarts: get("NRestarts").parse().unwrap_or(0),
        }
    }

    /// From `$MONITOR_*`; `unit` (the instance name) when systemd set none.
    pub fn from_env(unit: &str) -> Monitor {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let named = var("MONITOR_UNIT");
        Monitor {
            unit: if named.is_empty() { unit.to_string() } else { named },
            result: var("MONITOR_SERVICE_RESULT"),
            exit_code: var("MONITOR_EXIT_CODE"),
            exit_status: var("MONITOR_EXIT_STATUS"),
            invocation: var("MONITOR_INVOCATION_ID"),
            restarts: 0,
        }
    }
}

/// What the reporter did, for its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Queued(String),
    Folded(i64),
    Recovered,
    Nothing,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Bounded lines: the last `JOURNAL_LINES`, each at most `LINE_BYTES`, all at most `JOURNAL_BYTES`.
pub fn bound_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out: Vec<String> = lines[lines.len().saturating_sub(JOURNAL_LINES)..].iter().map(|l| cut(l, LINE_BYTES)).collect();
    while out.iter().map(|l| l.len() + 1).sum::<usize>() > JOURNAL_BYTES && !out.is_empty() {
        out.remove(0);
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The failed run's last journal lines (its invocation's, when known). journald takes a
/// service's output through a stream and may not have written the last lines yet when the
/// reporter starts: asked again for up to three seconds while nothing is there, then for the
/// unit's last lines whatever their run (a busy journald, an invocation id it has not seen).
fn journal(m: &Monitor, user: bool) -> Vec<String> {
    let read = |invocation: Option<&str>| {
        let mut cmd = std::process::Command::new("journalctl");
        if user {
            cmd.arg("--user");
        }
        cmd.args(["--no-pager", "-o", "cat", "-n", &JOURNAL_LINES.to_string(), "-u", &m.unit]);
        if let Some(id) = invocation {
            cmd.arg(format!("_SYSTEMD_INVOCATION_ID={id}"));
        }
        fleetwright_sys::proc::output_with_timeout(cmd, Duration::from_secs(5)).map(|o| bound_lines(&String::from_utf8_lossy(&o.stdout))).unwrap_or_default()
    };
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let invocation = (!m.invocation.is_empty()).then_some(m.invocation.as_str());
    loop {
        let lines = read(invocation);
        if !lines.is_empty() {
            return lines;
        }
        if std::time::Instant::now() >= until {
            return if invocation.is_some() { read(None) } else { lines };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The unit's agent (the inventory) and that agent's deploy marker commit.
fn agent_of(state_dir: &Path, unit: &str) -> (String, String) {
    let inv = crate::host::state::StateDir::new(state_dir).load_inventory().unwrap_or_default();
    let agent = inv.files.get(unit).map(|f| f.agent.clone()).unwrap_or_default();
    let commit = std::fs::read_to_string(StateLayout::new(state_dir).marker(&agent, "json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["commit"].as_str().map(str::to_string))
        .or_else(|| inv.agents.get(&agent).map(|a| a.changed_commit.clone()))
        .unwrap_or_default();
    (agent, commit)
}

/// What a failed run says, one line.
pub fn failure_line(m: &Monitor) -> String {
    let status = match (m.exit_code.as_str(), m.exit_status.as_str()) {
        (_, "") => String::new(),
        ("killed" | "dumped", s) => format!(", signal {s}"),
        (_, s) => format!(", status {s}"),
    };
    let what = match m.result.as_str() {
        _ if m.restarts > 0 => format!(
            "crash loop: restarted {} times, then systemd gave up (start limit); the last run {}{status}",
            m.restarts,
            if m.result.is_empty() { "failed".to_string() } else { format!("ended with {}", m.result) }
        ),
        "start-limit-hit" => "crash loop: restarted too often, systemd gave up (start-limit-hit)".to_string(),
        "" => "failed".to_string(),
        r => format!("failed ({r}{status})"),
    };
    format!("{} {what}", m.unit)
}

/// Report the run of `m.unit` that just ended.
pub fn report(state_dir: &Path, host: &str, m: &Monitor, user: bool) -> Result<Reported, HistoryError> {
    // A unit name is one path component (it names the failing mark): systemd's never hold a
    // slash; anything else is nothing to report.
    if m.unit.is_empty() || m.unit.contains('/') || m.unit.starts_with('.') {
        return Ok(Reported::Nothing);
    }
    let layout = StateLayout::new(state_dir);
    let marker = layout.notify_failing(&m.unit);
    if m.result == "success" {
        // A job ran well: a recovery only when its failure was reported (no database opened
        // for a healthy job's runs).
        if !marker.exists() {
            return Ok(Reported::Nothing);
        }
        let h = History::open(state_dir)?;
        let done = recovered(&h, host, &m.unit, &format!("its run {} succeeded", m.invocation))?;
        let _ = std::fs::remove_file(&marker);
        wake(state_dir);
        return Ok(if done { Reported::Recovered } else { Reported::Nothing });
    }
    let (agent, commit) = agent_of(state_dir, &m.unit);
    let lines = journal(m, user);
    let h = History::open(state_dir)?;
    let now = unix_now();
    let at = crate::host::now_rfc3339();
    let line = failure_line(m);
    let interval = group_interval(&h).as_secs() as i64;
    let outcome = h.atomically(|h| {
        let prior = h.failing(&m.unit)?;
        let journal_text = lines.join("\n");
        if let Some(p) = prior.as_ref().filter(|p| now - p.reported_at < interval) {
            let f = Failing { folded: p.folded + 1, last_result: Some(line.clone()), last_journal: Some(journal_text), ..p.clone() };
            h.set_failing(&f)?;
            return Ok(Reported::Folded(f.folded));
        }
        let folded = prior.as_ref().map(|p| p.folded).unwrap_or(0);
        let ev = Event {
            id: format!("agent-failed:{}:{}", m.unit, if m.invocation.is_empty() { at.clone() } else { m.invocation.clone() }),
            event: "agent-failed".into(),
            commit: commit.clone(),
            host: host.into(),
            message: if folded > 0 { format!("{line}; {folded} more failures since the last report") } else { line.clone() },
            at: at.clone(),
            agent: (!agent.is_empty()).then(|| agent.clone()),
            unit: Some(m.unit.clone()),
            result: (!m.result.is_empty()).then(|| m.result.clone()),
            exit_status: (!m.exit_status.is_empty()).then(|| m.exit_status.clone()),
            journal: lines.clone(),
            count: (folded > 0).then_some(folded as u32 + 1),
            ..Default::default()
        };
        h.queue("agent-failed", &ev.id, &serde_json::to_string(&ev).expect("an event serializes"), &at)?;
        let since = prior.map(|p| p.since).unwrap_or_else(|| at.clone());
        h.set_failing(&Failing {
            unit: m.unit.clone(),
            agent: agent.clone(),
            since,
            reported_at: now,
            folded: 0,
            last_result: Some(line.clone()),
            last_journal: Some(journal_text),
        })?;
        Ok(Reported::Queued(ev.id))
    })?;
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&marker, b"");
    wake(state_dir);
    Ok(outcome)
}

/// The recovery of `unit`, reported once (false: it was not failing).
pub fn recovered(h: &History, host: &str, unit: &str, how: &str) -> Result<bool, HistoryError> {
    h.atomically(|h| {
        let Some(f) = h.failing(unit)? else { return Ok(false) };
        let at = crate::host::now_rfc3339();
        let folded = if f.folded > 0 { format!(" ({} more failures were folded since the last report)", f.folded) } else { String::new() };
        let ev = Event {
            id: format!("agent-recovered:{unit}:{at}"),
            event: "agent-recovered".into(),
            host: host.into(),
            message: format!("{unit} recovered: {how}; failing since {}{folded}", f.since),
            at: at.clone(),
            agent: (!f.agent.is_empty()).then(|| f.agent.clone()),
            unit: Some(unit.to_string()),
            ..Default::default()
        };
        h.queue("agent-recovered", &ev.id, &serde_json::to_string(&ev).expect("an event serializes"), &at)?;
        h.clear_failing(unit)?;
        Ok(true)
    })
}

/// The summary of a unit whose folded failures' interval is over (false: nothing to say).
pub fn summarize(h: &History, host: &str, unit: &str) -> Result<bool, HistoryError> {
    let now = unix_now();
    let interval = group_interval(h);
    h.atomically(|h| {
        let Some(f) = h.failing(unit)? else { return Ok(false) };
        if f.folded == 0 || now - f.reported_at < interval.as_secs() as i64 {
            return Ok(false);
        }
        let at = crate::host::now_rfc3339();
        let ev = Event {
            id: format!("agent-failed:{unit}:summary:{at}"),
            event: "agent-failed".into(),
            host: host.into(),
            message: format!(
                "{unit} failed {} more times in the {} since its last report; the last: {}",
                f.folded,
                humantime::format_duration(Duration::from_secs((now - f.reported_at).max(0) as u64)),
                f.last_result.as_deref().unwrap_or("?")
            ),
            at: at.clone(),
            agent: (!f.agent.is_empty()).then(|| f.agent.clone()),
            unit: Some(unit.to_string()),
            journal: f.last_journal.as_deref().map(bound_lines).unwrap_or_default(),
            count: Some(f.folded as u32),
            ..Default::default()
        };
        h.queue("agent-failed", &ev.id, &serde_json::to_string(&ev).expect("an event serializes"), &at)?;
        h.set_failing(&Failing { reported_at: now, folded: 0, ..f })?;
        Ok(true)
    })
}

/// How long until the first summary of a folded group is due (None: no folded failures).
pub fn next_summary(h: &History) -> Result<Option<Duration>, HistoryError> {
    let interval = group_interval(h).as_secs() as i64;
    let now = unix_now();
    Ok(h.failing_units()?.iter().filter(|f| f.folded > 0).map(|f| Duration::from_secs((f.reported_at + interval - now).max(0) as u64)).min())
}

/// Tell a running daemon there is something to send (it watches `<state>/notify`).
pub fn wake(state_dir: &Path) {
    let path = StateLayout::new(state_dir).notify_wake();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, crate::host::now_rfc3339());
}

/// Whether a daemon runs on this state directory (its pid file names a live process).
pub fn daemon_running(state_dir: &Path) -> bool {
    std::fs::read_to_string(StateLayout::new(state_dir).daemon_pid())
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(fleetwright_sys::fsutil::pid_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_are_bounded() {
        let text: String = (0..100).map(|i| format!("line {i} {}\n", "x".repeat(i * 10))).collect();
        let lines = bound_lines(&text);
        assert!(lines.len() <= JOURNAL_LINES);
        assert!(lines.iter().all(|l| l.len() <= LINE_BYTES));
        assert!(lines.iter().map(|l| l.len() + 1).sum::<usize>() <= JOURNAL_BYTES);
        assert!(lines.last().unwrap().starts_with("line 99"), "the newest lines are kept");
    }

    #[test]
    fn what_systemctl_show_says_of_the_last_run() {
        let m = Monitor::from_show("agent-x.service", "Result=exit-code\nExecMainCode=1\nExecMainStatus=3\nInvocationID=ab12\n");
        assert_eq!((m.result.as_str(), m.exit_code.as_str(), m.exit_status.as_str(), m.invocation.as_str()), ("exit-code", "exited", "3", "ab12"));
    }

    #[test]
    fn a_crash_loop_says_so() {
        let m = Monitor { unit: "agent-web.service".into(), result: "start-limit-hit".into(), ..Default::default() };
        assert!(failure_line(&m).contains("crash loop"), "{}", failure_line(&m));
        let m = Monitor { unit: "agent-web.service".into(), result: "exit-code".into(), exit_status: "1".into(), restarts: 5, ..Default::default() };
        assert!(failure_line(&m).contains("crash loop: restarted 5 times"), "{}", failure_line(&m));
        let m =
            Monitor { unit: "agent-job.service".into(), result: "exit-code".into(), exit_code: "exited".into(), exit_status: "3".into(), ..Default::default() };
        assert_eq!(failure_line(&m), "agent-job.service failed (exit-code, status 3)");
    }

    /// Failures of one unit within the interval are folded into one report, then summarized
    /// once the interval is over; the recovery is reported once.
    #[test]
    fn repeated_failures_are_grouped_and_a_recovery_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let m = Monitor {
            unit: "agent-x.service".into(),
            result: "exit-code".into(),
            exit_code: "exited".into(),
            exit_status: "1".into(),
            invocation: "i1".into(),
            restarts: 0,
        };
        // journalctl finds nothing for this unit here: no lines, after its bounded wait.
        assert!(matches!(report(dir.path(), "h", &m, false).unwrap(), Reported::Queued(_)));
        assert_eq!(report(dir.path(), "h", &Monitor { invocation: "i2".into(), ..m.clone() }, false).unwrap(), Reported::Folded(1));
        assert_eq!(report(dir.path(), "h", &Monitor { invocation: "i3".into(), ..m.clone() }, false).unwrap(), Reported::Folded(2));
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.after(0, 100).unwrap().len(), 1, "one report for three failures");
        assert!(!summarize(&h, "h", &m.unit).unwrap(), "not before the interval is over");
        // The interval is over.
        let f = h.failing(&m.unit).unwrap().unwrap();
        h.set_failing(&Failing { reported_at: f.reported_at - GROUP_INTERVAL.as_secs() as i64, ..f }).unwrap();
        assert!(summarize(&h, "h", &m.unit).unwrap());
        let queued = h.after(0, 100).unwrap();
        assert_eq!(queued.len(), 2);
        let summary: Event = serde_json::from_str(&queued[1].body).unwrap();
        assert_eq!(summary.count, Some(2));
        assert!(summary.message.contains("failed 2 more times in the 10m"), "{}", summary.message);
        // Recovered: once.
        let ok = Monitor { result: "success".into(), invocation: "i4".into(), ..m.clone() };
        assert_eq!(report(dir.path(), "h", &ok, false).unwrap(), Reported::Recovered);
        assert_eq!(report(dir.path(), "h", &ok, false).unwrap(), Reported::Nothing);
        assert_eq!(h.after(0, 100).unwrap().iter().filter(|o| o.event == "agent-recovered").count(), 1);
    }
}
