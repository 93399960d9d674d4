//! What the daemon reports: one `Report` value, kept by the reconciler (where the host stands
//! against what it should run, counters) and the watcher (each managed unit's state and
//! restarts, live from the manager's signals), and read by `/healthz` and `/metrics` through
//! the pure functions here.
//!
//! `/healthz` tells three things apart: the fleet (is the host converged to the commit it
//! should run, and is every managed service up and not restarting in a loop), the daemon itself
//! (can it reach the manager, its state), and the source (can the remote be fetched). It
//! answers 200 only when the fleet and the daemon are healthy; a remote that cannot be
//! fetched is reported in the body, never as a fleet that is unhealthy — the host is still
//! converged from what was fetched.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use super::decide::Position;
use crate::host::status::{RESTART_LOOP, RESTART_WINDOW};
use crate::types::Role;

/// A Prometheus histogram of seconds with fixed buckets.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Count of observations at or below each of `BUCKETS` (cumulative).
    pub counts: [u64; Histogram::BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    pub fn observe(&mut self, v: f64) {
        for (b, c) in Self::BUCKETS.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// One managed unit, as the manager last said. An idle daemon holds one for every unit of the
/// fleet (8 000 at N=5000): the agent's name is shared with the watcher's record of the unit,
/// and the manager's words for its state are static ([`state_word`]).
#[derive(Debug, Clone, Default)]
pub struct LiveUnit {
    pub agent: Arc<str>,
    pub role: Option<Role>,
    /// A service or timer of an enabled agent: it should be active.
    pub should_run: bool,
    pub active_state: Cow<'static, str>,
    pub sub_state: Cow<'static, str>,
    /// The manager's restart counter (NRestarts) when last read.
    pub n_restarts: u32,
    /// When the counter was seen to go up, one entry per restart (within the window).
    pub restarts: VecDeque<Instant>,
}

/// A unit's ActiveState or SubState as a static string when it is one of the manager's own
/// words (for services and timers, the units fleetwright manages), else a copy.
pub fn state_word(s: &str) -> Cow<'static, str> {
    const WORDS: &[&str] = &[
        "",
        "active",
        "reloading",
        "inactive",
        "failed",
        "activating",
        "deactivating",
        "maintenance",
        "refreshing",
        "dead",
        "condition",
        "start-pre",
        "start",
        "start-post",
        "running",
        "exited",
        "reload",
        "stop",
        "stop-watchdog",
        "stop-sigterm",
        "stop-sigkill",
        "stop-post",
        "final-watchdog",
        "final-sigterm",
        "final-sigkill",
        "auto-restart",
        "cleaning",
        "waiting",
        "elapsed",
    ];
    match WORDS.iter().find(|w| **w == s) {
        Some(w) => Cow::Borrowed(w),
        None => Cow::Owned(s.to_string()),
    }
}

impl LiveUnit {
    /// Automatic restarts within `RESTART_WINDOW` before `now`.
    pub fn restarts_within(&self, now: Instant) -> u32 {
        self.restarts.iter().filter(|t| now.saturating_duration_since(**t) <= RESTART_WINDOW).count() as u32
    }
    /// Record a new reading of the restart counter.
    pub fn saw_restarts(&mut self, n: u32, now: Instant) {
        // The counter starts again at 0 when the unit is started on purpose.
        for _ in 0..n.saturating_sub(self.n_restarts).min(1000) {
            self.restarts.push_back(now);
        }
        self.n_restarts = n;
        while self.restarts.front().is_some_and(|t| now.saturating_duration_since(*t) > RESTART_WINDOW) {
            self.restarts.pop_front();
        }
    }
    /// Why this unit is not healthy now, or None.
    pub fn trouble(&self, unit: &str, now: Instant) -> Option<String> {
        if !self.should_run {
            return None;
        }
        let n = self.restarts_within(now);
        let minutes = RESTART_WINDOW.as_secs() / 60;
        match (&*self.active_state, &*self.sub_state) {
            ("failed", _) => Some(format!("{unit} has failed")),
            (_, "auto-restart") => Some(format!("{unit} is crash-looping (waiting to be restarted; {n} restarts in {minutes} minutes)")),
            _ if n >= RESTART_LOOP => Some(format!("{unit} is in a restart loop ({n} restarts in {minutes} minutes)")),
            ("active" | "reloading" | "activating", _) => None,
            ("", _) => Some(format!("{unit} is not loaded")),
            (state, sub) => Some(format!("{unit} is {state} ({sub}), and should be running")),
        }
    }
}

/// The health gate in progress.
#[derive(Debug, Clone)]
pub struct Gating {
    pub commit: String,
    pub until: Instant,
    pub units: Vec<String>,
}

/// Whether the remote can be fetched.
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    /// The last fetch failed: why, and since when (RFC 3339).
    pub failing: Option<(String, String)>,
    pub fetch_failures: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub reconciles: BTreeMap<String, u64>,
    pub failures: u64,
    pub rollbacks: u64,
    pub last_duration: f64,
    pub durations: Histogram,
    pub last_success_unix: u64,
    pub drift_units: u64,
    /// From a head's first sight to its good verdict, for the last commit that got one.
    pub commit_to_converged: Option<f64>,
    /// The head of the followed branch, and the pin.
    pub head: Option<String>,
    pub pinned: Option<String>,
    pub applied_commit: Option<String>,
    pub last_good: Option<String>,
    /// Where the last reconcile left the host (None: none has finished).
    pub position: Option<Position>,
    pub gating: Option<Gating>,
    pub source: SourceState,
    /// Why the daemon cannot do its work (the manager out of reach), or None.
    pub host_error: Option<String>,
    /// Every managed unit, live (its name shared with the watcher's record of it).
    pub units: BTreeMap<Arc<str>, LiveUnit>,
    /// The manager's signals are being received (else drift is seen at the next resync).
    pub watching: bool,
    /// Drop-ins fleetwright did not write on the units it manages.
    pub foreign_dropins: u64,
    /// Each notification sink's counts, by its key (`notify::sink_key`).
    pub sinks: BTreeMap<String, super::history::SinkCounts>,
}

impl Report {
    /// Why the fleet is not healthy, or None.
    pub fn fleet_trouble(&self, now: Instant) -> Option<String> {
        if let Some(g) = &self.gating {
            let left = g.until.saturating_duration_since(now);
            return Some(format!("gating {} ({}s left), watching {}", short(&g.commit), left.as_secs(), join_or(&g.units, "nothing")));
        }
        match &self.position {
            None => return Some("no reconcile has finished yet".into()),
            Some(Position::Unknown { why }) => return Some(format!("not known: {why}")),
            Some(Position::Held { target, at, why }) if target.is_some() && target == at => {
                return Some(format!("{} runs only in part: {why}", target.as_deref().map(short).unwrap_or("?")));
            }
            Some(Position::Held { target, at, why }) => {
                return Some(format!(
                    "held at {} instead of {}: {why}",
                    at.as_deref().map(short).unwrap_or("nothing"),
                    target.as_deref().map(short).unwrap_or("the head")
                ));
            }
            Some(Position::AtTarget { .. }) => {}
        }
        let troubles: Vec<String> = self.units.iter().filter_map(|(u, l)| l.trouble(u, now)).collect();
        match troubles.len() {
            0 => None,
            1..=3 => Some(troubles.join("; ")),
            n => Some(format!("{}; and {} more", troubles[..3].join("; "), n - 3)),
        }
    }

    /// Per agent: its state (`ok`, `failed`, `drift`, `stopped`) and restarts in the window.
    pub fn agents(&self, now: Instant) -> BTreeMap<String, (&'static str, u32)> {
        let mut out: BTreeMap<String, (&'static str, u32)> = BTreeMap::new();
        for (unit, l) in &self.units {
            let e = out.entry(l.agent.to_string()).or_insert(("ok", 0));
            e.1 += l.restarts_within(now);
            let state = if !l.should_run && matches!(l.role, Some(Role::Service | Role::Timer)) {
                "stopped"
            } else {
                match l.trouble(unit, now) {
                    None => "ok",
                    Some(_) if matches!(&*l.active_state, "inactive" | "") => "drift",
                    Some(_) => "failed",
                }
            };
            let rank = |s: &str| ["ok", "stopped", "drift", "failed"].iter().position(|x| *x == s).unwrap_or(0);
            if rank(state) > rank(e.0) {
                e.0 = state;
            }
        }
        out
    }
}

fn short(c: &str) -> &str {
    crate::plan::short(c)
}

fn join_or(v: &[String], none: &str) -> String {
    if v.is_empty() { none.to_string() } else { v.join(", ") }
}

/// `/healthz`: the status code and the body.
pub fn healthz(r: &Report, now: Instant) -> (u16, String) {
    let fleet = r.fleet_trouble(now);
    let daemon = r.host_error.clone();
    let healthy = fleet.is_none() && daemon.is_none();
    let mut body = String::from(if healthy { "ok\n" } else { "degraded\n" });
    match (&fleet, &r.position) {
        (None, Some(Position::AtTarget { commit })) => {
            let of = if r.pinned.as_deref() == Some(commit.as_str()) { "the pin" } else { "the head" };
            let up = r.units.values().filter(|u| u.should_run).count();
            let _ = writeln!(body, "fleet: ok: at {} ({of}), {up} units up", short(commit));
        }
        (None, _) => body.push_str("fleet: ok\n"),
        (Some(why), _) => {
            let _ = writeln!(body, "fleet: degraded: {why}");
        }
    }
    match &daemon {
        None if r.watching => body.push_str("daemon: ok\n"),
        None => body.push_str("daemon: ok (not receiving the manager's signals: drift is seen at the next resync)\n"),
        Some(why) => {
            let _ = writeln!(body, "daemon: degraded: {why}");
        }
    }
    match &r.source.failing {
        None => body.push_str("source: ok\n"),
        Some((why, since)) => {
            let _ = writeln!(
                body,
                "source: fetch failing since {since}: {why}; the host is kept converged to the last fetched head {}",
                r.head.as_deref().map(short).unwrap_or("(none)")
            );
        }
    }
    let _ = writeln!(body, "applied {}", r.applied_commit.as_deref().unwrap_or("nothing"));
    // Reasons quote what units and health checks printed: no control character of theirs
    // reaches a terminal that shows this body.
    (if healthy { 200 } else { 503 }, crate::spec::diag::printable_lines(&body).into_owned())
}

/// Prometheus text exposition of the report.
pub fn metrics(m: &Report, now: Instant) -> String {
    let mut o = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let info = |c: &Option<String>| c.iter().map(|c| (format!("{{commit=\"{}\"}}", label(c)), 1.0)).collect::<Vec<_>>();
    let one = |v: f64| vec![(String::new(), v)];
    let flag = |b: bool| one(if b { 1.0 } else { 0.0 });
    family("fleetwright_applied_commit_info", "The commit the host is converged to.", "gauge", info(&m.applied_commit));
    family("fleetwright_last_good_commit_info", "The last commit that passed its health gate.", "gauge", info(&m.last_good));
    family("fleetwright_head_commit_info", "The head of the followed branch, as last fetched.", "gauge", info(&m.head));
    family("fleetwright_pinned_commit_info", "The rollback pin (absent when none is set).", "gauge", info(&m.pinned));
    let held = matches!(m.position, Some(Position::Held { .. }));
    family(
        "fleetwright_head_held",
        "1 when the commit that should run (the pin, else the head) is held off: bad, refused, invalid or held.",
        "gauge",
        flag(held),
    );
    family("fleetwright_gate_in_progress", "1 while a new commit is being gated.", "gauge", flag(m.gating.is_some()));
    family(
        "fleetwright_fleet_healthy",
        "1 when the host runs the commit it should and every managed service is up.",
        "gauge",
        flag(m.fleet_trouble(now).is_none()),
    );
    family("fleetwright_daemon_healthy", "1 when the daemon can reach the manager and its state.", "gauge", flag(m.host_error.is_none()));
    family("fleetwright_source_up", "1 when the last fetch of the repository worked.", "gauge", flag(m.source.failing.is_none()));
    family("fleetwright_fetch_failures_total", "Fetches of the repository that failed.", "counter", one(m.source.fetch_failures as f64));
    family(
        "fleetwright_reconciles_total",
        "Reconciles by result.",
        "counter",
        m.reconciles.iter().map(|(r, n)| (format!("{{result=\"{}\"}}", label(r)), *n as f64)).collect(),
    );
    family("fleetwright_reconcile_failures_total", "Reconciles that did not leave the host at the commit it should run.", "counter", one(m.failures as f64));
    family("fleetwright_rollbacks_total", "Automatic rollbacks.", "counter", one(m.rollbacks as f64));
    family("fleetwright_last_reconcile_duration_seconds", "Duration of the last reconcile.", "gauge", one(m.last_duration));
    let h = &m.durations;
    let mut buckets: Vec<(String, f64)> = Histogram::BUCKETS.iter().zip(h.counts).map(|(b, c)| (format!("_bucket{{le=\"{b}\"}}"), c as f64)).collect();
    buckets.push(("_bucket{le=\"+Inf\"}".into(), h.count as f64));
    buckets.push(("_sum".into(), h.sum));
    buckets.push(("_count".into(), h.count as f64));
    family("fleetwright_reconcile_duration_seconds", "Duration of reconciles.", "histogram", buckets);
    family(
        "fleetwright_last_success_timestamp_seconds",
        "When the host was last converged to the commit it should run.",
        "gauge",
        one(m.last_success_unix as f64),
    );
    family("fleetwright_drift_units", "Units whose drift the last applying reconcile repaired.", "gauge", one(m.drift_units as f64));
    family(
        "fleetwright_foreign_dropins",
        "Drop-ins on managed units that fleetwright did not write (reported, never removed).",
        "gauge",
        one(m.foreign_dropins as f64),
    );
    family(
        "fleetwright_commit_to_converged_seconds",
        "From the first sight of the last commit that passed its gate to its verdict.",
        "gauge",
        m.commit_to_converged.iter().map(|s| (String::new(), *s)).collect(),
    );
    let per_sink = |f: fn(&super::history::SinkCounts) -> u64| -> Vec<(String, f64)> {
        m.sinks.iter().map(|(k, c)| (format!("{{sink=\"{}\"}}", label(k)), f(c) as f64)).collect()
    };
    family("fleetwright_notify_sent_total", "Reports each notification sink accepted.", "counter", per_sink(|c| c.sent));
    family(
        "fleetwright_notify_failed_total",
        "Failed attempts to send a report to each sink (retried), and reports it refused for good.",
        "counter",
        per_sink(|c| c.failed),
    );
    family("fleetwright_notify_queued", "Reports waiting to be sent to each sink.", "gauge", per_sink(|c| c.queued));
    family(
        "fleetwright_notify_dropped_total",
        "Reports dropped for each sink: not sent within the outbox's age limit (7 days).",
        "counter",
        per_sink(|c| c.dropped),
    );
    let agents = m.agents(now);
    let mut states = vec![];
    let mut restarts = vec![];
    for (agent, (state, n)) in &agents {
        for s in ["ok", "failed", "drift", "stopped"] {
            states.push((format!("{{agent=\"{}\",state=\"{s}\"}}", label(agent)), if s == *state { 1.0 } else { 0.0 }));
        }
        restarts.push((format!("{{agent=\"{}\"}}", label(agent)), *n as f64));
    }
    family("fleetwright_agent_state", "Each agent's state (1 for the one it is in), live from the manager.", "gauge", states);
    family(
        "fleetwright_agent_restarts",
        &format!("Automatic restarts of each agent's services in the last {} minutes.", RESTART_WINDOW.as_secs() / 60),
        "gauge",
        restarts,
    );
    o
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// How long ago an `Instant` is, for a gate's "until" in wall-clock time.
pub fn wall_clock_of(at: Instant, now: Instant) -> String {
    let wall = std::time::SystemTime::now();
    let t = if at >= now { wall + (at - now) } else { wall - (now - at) };
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn up(agent: &str, role: Role) -> LiveUnit {
        LiveUnit { agent: agent.into(), role: Some(role), should_run: true, active_state: "active".into(), sub_state: "running".into(), ..Default::default() }
    }

    fn at_head(c: &str) -> Report {
        let mut r = Report {
            position: Some(Position::AtTarget { commit: c.into() }),
            head: Some(c.into()),
            applied_commit: Some(c.into()),
            watching: true,
            ..Default::default()
        };
        r.units.insert("agent-web.service".into(), up("web", Role::Service));
        r.units.insert("agent-tick.timer".into(), up("tick", Role::Timer));
        r.units.insert("agent-tick.service".into(), LiveUnit { should_run: false, role: Some(Role::Job), agent: "tick".into(), ..Default::default() });
        r
    }

    #[test]
    fn healthz_is_200_only_at_the_target_with_every_service_up() {
        let now = Instant::now();
        let mut r = at_head("c1");
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("ok\nfleet: ok: at c1 (the head), 2 units up\ndaemon: ok\nsource: ok\napplied c1\n"), "{body}");

        // A gate in progress: not yet.
        r.gating = Some(Gating { commit: "c2".into(), until: now + Duration::from_secs(20), units: vec!["agent-web.service".into()] });
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 503);
        assert!(body.contains("fleet: degraded: gating c2 (20s left), watching agent-web.service"), "{body}");
        r.gating = None;

        // Held at the last good commit: the head does not run.
        r.position = Some(Position::Held { target: Some("c3".into()), at: Some("c1".into()), why: "commit c3 is marked bad (crash)".into() });
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 503);
        assert!(body.contains("fleet: degraded: held at c1 instead of c3: commit c3 is marked bad (crash)"), "{body}");
        r.position = Some(Position::AtTarget { commit: "c1".into() });

        // A failed service, or one that restarts every few seconds although it is active now.
        r.units.get_mut("agent-web.service").unwrap().active_state = "failed".into();
        assert!(healthz(&r, now).1.contains("agent-web.service has failed"));
        let web = r.units.get_mut("agent-web.service").unwrap();
        web.active_state = "active".into();
        let t0 = now - Duration::from_secs(60);
        for (i, n) in [1, 2, 3].iter().enumerate() {
            web.saw_restarts(*n, t0 + Duration::from_secs(7 * i as u64));
        }
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("agent-web.service is in a restart loop (3 restarts in 15 minutes)"), "{body}");
        // Long enough ago, the loop is over.
        assert_eq!(healthz(&r, now + RESTART_WINDOW + Duration::from_secs(60)).0, 200);
        // A job (not running between runs) and a disabled agent are fine.
        assert_eq!(r.agents(now)["tick"], ("ok", 0));
        assert_eq!(r.agents(now)["web"], ("failed", 3));
    }

    #[test]
    fn an_unreachable_remote_is_the_sources_condition_and_the_managers_the_daemons() {
        let now = Instant::now();
        let mut r = at_head("c1");
        r.source.failing = Some(("failed to resolve address for git.example.com".into(), "2026-01-01T00:00:00Z".into()));
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("source: fetch failing since 2026-01-01T00:00:00Z: failed to resolve address"), "{body}");
        r.host_error = Some("cannot reach the systemd system manager over D-Bus".into());
        let (code, body) = healthz(&r, now);
        assert_eq!(code, 503);
        assert!(body.contains("fleet: ok") && body.contains("daemon: degraded: cannot reach the systemd"), "{body}");
        // Before the first reconcile.
        let (code, body) = healthz(&Report::default(), now);
        assert_eq!((code, body.lines().next()), (503, Some("degraded")));
    }

    #[test]
    fn metrics_render_in_the_exposition_format() {
        let now = Instant::now();
        let mut m = at_head("abc");
        m.failures = 2;
        m.pinned = Some("abc".into());
        m.reconciles.insert("converged".into(), 3);
        m.units.get_mut("agent-web.service").unwrap().saw_restarts(1, now);
        let text = metrics(&m, now);
        for line in [
            "fleetwright_applied_commit_info{commit=\"abc\"} 1",
            "fleetwright_pinned_commit_info{commit=\"abc\"} 1",
            "fleetwright_head_held 0",
            "fleetwright_fleet_healthy 1",
            "fleetwright_source_up 1",
            "fleetwright_reconciles_total{result=\"converged\"} 3",
            "# TYPE fleetwright_reconcile_failures_total counter\nfleetwright_reconcile_failures_total 2",
            "fleetwright_agent_state{agent=\"web\",state=\"ok\"} 1",
            "fleetwright_agent_state{agent=\"web\",state=\"failed\"} 0",
            "fleetwright_agent_restarts{agent=\"web\"} 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}:\n{text}");
        }
        assert!(!text.lines().any(|l| l.starts_with("fleetwright_commit_to_converged_seconds ")), "absent until a commit passed: {text}");
        m.durations.observe(0.3);
        m.durations.observe(7.0);
        let text = metrics(&m, now);
        for line in [
            "# TYPE fleetwright_reconcile_duration_seconds histogram",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"0.25\"} 0",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"10\"} 2",
            "fleetwright_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "fleetwright_reconcile_duration_seconds_sum 7.3",
            "fleetwright_reconcile_duration_seconds_count 2",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}:\n{text}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_managers_words_for_a_state_are_not_copied() {
        for w in ["active", "failed", "auto-restart", "running", "waiting", ""] {
            assert!(matches!(state_word(w), Cow::Borrowed(b) if b == w), "{w}");
        }
        // A word of a later systemd is kept as it is.
        assert!(matches!(state_word("hibernating"), Cow::Owned(o) if o == "hibernating"));
    }
}
