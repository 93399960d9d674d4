//! Every choice the daemon makes, as one pure function: `decide(&Facts) -> Decision`.
//!
//! kube-runtime splits a controller into `reconcile` and an error policy; here the split is
//! between this file, which knows no clock, no git, no D-Bus and no database, and the loop
//! (`reconcile.rs`), which only gathers the facts `decide` asks for and carries out what it
//! decides. One reconcile is a conversation:
//!
//! ```text
//! facts ← what is known at once (head, pin, last good, applied commit)
//! loop { match decide(&facts) {
//!     Gather(need)  → find that fact out (a verdict, lineage, signature, validity), add it
//!     Apply(c)      → apply c (the target, or the fallback: the last good commit), add the result
//!     Gate(c)       → watch what changed since the last good commit, add the outcome
//!     Record(v)     → store the verdict and queue its notification, note it is stored
//!     Done(outcome) → record the reconcile; retry with backoff if it says so
//! }}
//! ```
//!
//! The rules, in the order they are applied:
//! - The target is the pin, else the head of the branch (as last fetched when a fetch fails:
//!   an outage never stops the host from being healed from what is already fetched).
//! - A target marked bad is never applied again (a pin with `--force` gets one more try),
//!   nor one the branch reached by a force-push, nor an unsigned one in signed mode, nor an
//!   invalid one: the host is held on (and repaired towards) the last good commit.
//! - Every commit other than the last good one — a pin included — is gated: the services
//!   changed since the last good commit must stay up for the grace period. Then it is good;
//!   a `health.check` that held a change back makes it `held`, never good.
//! - A failed gate, or a commit that keeps failing to apply, is bad: the host goes back to the
//!   last good commit. A transient fault of the host (the manager out of reach) is no verdict:
//!   retried with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::types::Role;

pub use super::history::Verdict;

/// A commit that fails to apply this many times in a row (not for a transient reason) is bad.
pub const MAX_APPLY_ATTEMPTS: u32 = 5;

/// What the daemon knows, gathered by the loop. `None` in a gathered field means "not found
/// out yet"; `decide` asks for what it needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The head of the followed branch: as fetched now, or the last one fetched when the fetch
    /// failed. None: never fetched, or the branch does not exist.
    pub head: Option<String>,
    /// Why the fetch failed (the remote is unreachable): the head above is the cached one.
    pub fetch_error: Option<String>,
    pub pin: Option<Pin>,
    pub last_good: Option<String>,
    /// The commit the host was last converged to (the inventory's).
    pub applied: Option<String>,
    pub policy: Policy,
    /// The target's standing: `Some(None)` when it has none.
    pub verdict: Option<Option<Standing>>,
    pub lineage: Option<Lineage>,
    pub signature: Option<Check>,
    pub validity: Option<Check>,
    /// What applying the target did.
    pub apply: Option<Applied>,
    /// How the gate ended.
    pub gate: Option<GateOutcome>,
    /// The verdict `decide` asked to record has been recorded.
    pub recorded: bool,
    /// What applying the fallback (the last good commit) did.
    pub fallback: Option<Applied>,
    /// How many times in a row the target failed to apply before (not counting this run).
    pub failed_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub commit: String,
    /// `rollback --force`: pinned although it is marked bad.
    pub force: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_force_push: bool,
    /// Only commits signed by an allowed key are applied.
    pub signatures: bool,
    /// The health gate is on (a grace period above zero).
    pub gate: bool,
}

/// A recorded verdict on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub verdict: Verdict,
    pub reason: String,
    /// Given after the pin was set (the outcome of a forced pin's try).
    pub since_pin: bool,
}

/// Does the target descend from the applied commit?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lineage {
    Descends,
    /// No: the branch was rewritten (or the applied commit is not in the repository).
    Diverged,
    /// The repository could not be read: no evidence either way.
    Unknown(String),
}

/// A check of the target (signature, validity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Pass,
    /// A verdict on the commit: why.
    Fail(String),
    /// The check could not be made (a read error, a program that cannot be run): try again.
    Transient(String),
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done {
        /// Something changed on the host.
        changed: bool,
        /// What it repaired that nobody committed.
        drift: bool,
        /// Units whose change a failing `health.check` held back: `unit: why`.
        held_back: Vec<String>,
        /// Failures of units changed since the last good commit: `unit: what`.
        failed: Vec<String>,
        /// Failures of units that did not change since the last good commit.
        elsewhere: Vec<String>,
    },
    /// The plan was refused (a foreign file, the empty-fleet guard, a host check): nothing
    /// was applied.
    Refused(String),
    /// The apply stopped part-way. `transient`: a fault of the host (the manager or the state
    /// directory out of reach, the apply lock held), never the commit's doing.
    Failed { why: String, transient: bool },
}

impl Applied {
    pub fn ok(changed: bool) -> Applied {
        Applied::Done { changed, drift: false, held_back: vec![], failed: vec![], elsewhere: vec![] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    Healthy,
    Unhealthy(String),
    /// A newer target appeared while waiting.
    Superseded,
    /// The daemon is stopping.
    Interrupted,
    /// The manager could not be asked.
    Unknown(String),
}

/// Which commit an apply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The pin or the head.
    Target,
    /// The last good commit, while the target is held off or after it failed.
    Fallback,
}

/// A fact `decide` needs before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Verdict(String),
    /// Does `commit` descend from `from`?
    Lineage {
        commit: String,
        from: String,
    },
    Signature(String),
    /// Read and validate `commit`.
    Validity(String),
}

/// A notification (docs/operations.md, "Notifications"): exactly one per verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Good: passed its gate.
    Deployed,
    /// Bad (a failed gate, or failing to apply), and the host went back to the last good commit.
    RolledBack,
    /// Bad, and there was no earlier good commit to go back to: the host stays on it.
    Failed,
    /// Bad because invalid: nothing was applied.
    Invalid,
    /// Held: a `health.check` held a change back, or its plan was refused.
    Held,
    /// Refused: a force-push, or not signed by an allowed key.
    Refused,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Deployed => "deployed",
            Event::RolledBack => "rolled-back",
            Event::Failed => "failed",
            Event::Invalid => "invalid",
            Event::Held => "held",
            Event::Refused => "refused",
        }
    }
}

/// How a reconcile ended (the history's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Converged,
    Unchanged,
    Repaired,
    Invalid,
    Refused,
    Held,
    /// Bad, with no earlier good commit to go back to.
    Failed,
    RolledBack,
    RollbackFailed,
    Superseded,
    Interrupted,
    Error,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Converged => "converged",
            Ended::Unchanged => "unchanged",
            Ended::Repaired => "repaired",
            Ended::Invalid => "invalid",
            Ended::Refused => "refused",
            Ended::Held => "held",
            Ended::Failed => "failed",
            Ended::RolledBack => "rolled-back",
            Ended::RollbackFailed => "rollback-failed",
            Ended::Superseded => "superseded",
            Ended::Interrupted => "interrupted",
            Ended::Error => "error",
        }
    }
}

/// Where the host stands against what it should run, after a reconcile (what `/healthz` says
/// of the fleet, with the units' health on top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// It runs the target (the pin, or the head), which is good.
    AtTarget { commit: String },
    /// The target does not (fully) run: the host is `at` another commit (or the target in
    /// part), for `why`.
    Held { target: Option<String>, at: Option<String>, why: String },
    /// Not known yet: a transient failure, a superseded gate.
    Unknown { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: Ended,
    pub position: Position,
    /// For the history and the log.
    pub error: Option<String>,
    /// The error policy: try again with backoff.
    pub retry: bool,
    /// Run again at once (a newer commit cut a gate short).
    pub rerun: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Gather(Need),
    Apply {
        commit: String,
        role: Purpose,
    },
    /// Gate `commit`: watch the services changed since the last good commit.
    Gate {
        commit: String,
    },
    /// Record this verdict on `commit`, and its notification.
    Record {
        commit: String,
        verdict: Verdict,
        reason: String,
        event: Event,
    },
    Done(Outcome),
}

/// The decision for what is known.
pub fn decide(f: &Facts) -> Decision {
    let target = match (&f.pin, &f.head) {
        (Some(p), _) => p.commit.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => {
            let why = match &f.fetch_error {
                Some(e) => format!("the branch head is not known: {e}"),
                None => "the branch has no head".to_string(),
            };
            return fall_back(f, None, Ended::Error, why, None, true);
        }
    };
    let pinned = f.pin.is_some();
    let what = if pinned { "the pinned commit" } else { "commit" };

    // 1. Its standing.
    let Some(standing) = &f.verdict else { return Decision::Gather(Need::Verdict(target)) };
    let forced = f.pin.as_ref().is_some_and(|p| p.force);
    if let Some(s) = standing
        && s.verdict == Verdict::Bad
        && (!forced || s.since_pin)
    {
        let why = if pinned {
            format!(
                "{what} {} is marked bad ({}); holding the last good state: pin another commit (`fleetwright rollback`) or `fleetwright resume`",
                short(&target),
                s.reason
            )
        } else {
            format!("{what} {} is marked bad ({}); holding the last good state until a newer commit", short(&target), s.reason)
        };
        return fall_back(f, Some(&target), Ended::Refused, why, None, false);
    }
    let known_good = f.last_good.as_deref() == Some(target.as_str());

    // 2. Lineage: the branch must not have been rewritten past what runs.
    if !pinned
        && !f.policy.allow_force_push
        && !known_good
        && let Some(applied) = f.applied.as_ref().filter(|a| **a != target)
    {
        match &f.lineage {
            None => return Decision::Gather(Need::Lineage { commit: target, from: applied.clone() }),
            Some(Lineage::Descends) => {}
            Some(Lineage::Diverged) => {
                let why = format!(
                    "the branch no longer contains the applied commit {} (force-push?); refusing {} — pass --allow-force-push to follow it",
                    short(applied),
                    short(&target)
                );
                return fall_back(f, Some(&target), Ended::Refused, why, Some((Verdict::Refused, Event::Refused)), false);
            }
            Some(Lineage::Unknown(e)) => return fall_back(f, Some(&target), Ended::Error, e.clone(), None, true),
        }
    }

    // 3. Signature.
    if f.policy.signatures && (pinned || !known_good) {
        match &f.signature {
            None => return Decision::Gather(Need::Signature(target)),
            Some(Check::Pass) => {}
            Some(Check::Fail(e)) => return fall_back(f, Some(&target), Ended::Refused, e.clone(), Some((Verdict::Refused, Event::Refused)), false),
            Some(Check::Transient(e)) => return fall_back(f, Some(&target), Ended::Error, e.clone(), None, true),
        }
    }

    // 4. Validity: the last good commit was valid when it passed.
    if !known_good {
        match &f.validity {
            None => return Decision::Gather(Need::Validity(target)),
            Some(Check::Pass) => {}
            Some(Check::Fail(e)) => {
                let why = format!("{what} {} is invalid: {e}", short(&target));
                return fall_back(f, Some(&target), Ended::Invalid, why, Some((Verdict::Bad, Event::Invalid)), false);
            }
            Some(Check::Transient(e)) => return fall_back(f, Some(&target), Ended::Error, e.clone(), None, true),
        }
    }

    // 5. Apply it.
    let Some(applied) = &f.apply else { return Decision::Apply { commit: target, role: Purpose::Target } };
    let new = !known_good;
    let (changed, drift, held_back, failed, elsewhere) = match applied {
        Applied::Failed { why, transient: true } => {
            return done(f, Ended::Error, Position::Unknown { why: why.clone() }, why.clone(), true);
        }
        Applied::Failed { why, transient: false } => {
            let tries = f.failed_attempts + 1;
            if new && tries >= MAX_APPLY_ATTEMPTS {
                let why = format!("it failed to apply {MAX_APPLY_ATTEMPTS} times in a row: {why}");
                return roll_back(f, &target, why);
            }
            let why = if new { format!("{why} (attempt {tries} of {MAX_APPLY_ATTEMPTS} for {})", short(&target)) } else { why.clone() };
            return done(f, Ended::Error, Position::Unknown { why: why.clone() }, why, true);
        }
        Applied::Refused(why) => {
            if !new {
                return done(f, Ended::Held, Position::Held { target: Some(target.clone()), at: f.applied.clone(), why: why.clone() }, why.clone(), false);
            }
            return fall_back(f, Some(&target), Ended::Held, why.clone(), Some((Verdict::Held, Event::Held)), false);
        }
        Applied::Done { changed, drift, held_back, failed, elsewhere } => (*changed, *drift, held_back, failed, elsewhere),
    };
    let mut notes: Vec<String> = vec![];
    if !elsewhere.is_empty() {
        notes.push(format!("failing, and unchanged since the last good commit: {}", elsewhere.join("; ")));
    }
    let converged = if drift {
        Ended::Repaired
    } else if changed {
        Ended::Converged
    } else {
        Ended::Unchanged
    };
    if !new {
        // The last good commit, again: a resync, a repair. What fails now is reported, never
        // a verdict on it.
        notes.extend(failed.iter().cloned());
        notes.extend(held_back.iter().map(|h| format!("held back: {h}")));
        let position = Position::AtTarget { commit: target.clone() };
        return done_with(f, converged, position, notes, false);
    }
    if !failed.is_empty() {
        return roll_back(f, &target, failed.join("; "));
    }

    // 6. The gate.
    let gate = match (&f.gate, f.policy.gate) {
        (Some(g), _) => g.clone(),
        (None, true) => return Decision::Gate { commit: target },
        (None, false) => GateOutcome::Healthy,
    };
    match gate {
        GateOutcome::Unhealthy(why) => roll_back(f, &target, why),
        GateOutcome::Superseded => Decision::Done(Outcome {
            result: Ended::Superseded,
            position: Position::Unknown { why: format!("{} was superseded during its gate", short(&target)) },
            error: None,
            retry: false,
            rerun: true,
        }),
        GateOutcome::Interrupted => done(f, Ended::Interrupted, Position::Unknown { why: "stopping".into() }, String::new(), false),
        GateOutcome::Unknown(e) => done(f, Ended::Error, Position::Unknown { why: e.clone() }, format!("cannot watch the deploy's health: {e}"), true),
        GateOutcome::Healthy if !held_back.is_empty() => {
            let why = format!("a health.check held back its change: {}", held_back.join("; "));
            let stands = matches!(&f.verdict, Some(Some(s)) if s.verdict == Verdict::Held);
            if !f.recorded && !stands {
                return Decision::Record { commit: target, verdict: Verdict::Held, reason: why, event: Event::Held };
            }
            notes.insert(0, why.clone());
            let position = Position::Held { target: Some(target.clone()), at: Some(target.clone()), why };
            done_with(f, Ended::Held, position, notes, false)
        }
        GateOutcome::Healthy => {
            if !f.recorded {
                return Decision::Record { commit: target, verdict: Verdict::Good, reason: "healthy".into(), event: Event::Deployed };
            }
            done_with(f, converged, Position::AtTarget { commit: target }, notes, false)
        }
    }
}

/// The error policy: how long to wait before the next try after `previous` (None: the first).
pub fn backoff(previous: Option<Duration>) -> Duration {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);
    previous.map_or(MIN, |p| (p * 2).clamp(MIN, MAX))
}

/// Mark `target` bad and go back to the last good commit.
fn roll_back(f: &Facts, target: &str, why: String) -> Decision {
    let event = if f.last_good.is_some() { Event::RolledBack } else { Event::Failed };
    if !f.recorded {
        return Decision::Record { commit: target.to_string(), verdict: Verdict::Bad, reason: why, event };
    }
    let Some(good) = &f.last_good else {
        let why = format!("{why}; there is no earlier good commit to roll back to: the host stays at {}", short(target));
        return done(f, Ended::Failed, Position::Held { target: Some(target.to_string()), at: Some(target.to_string()), why: why.clone() }, why, false);
    };
    match &f.fallback {
        None => Decision::Apply { commit: good.clone(), role: Purpose::Fallback },
        Some(Applied::Done { failed, elsewhere, .. }) => {
            let mut notes = vec![why.clone()];
            notes.extend(failed.iter().chain(elsewhere).map(|e| format!("after the rollback: {e}")));
            let position = Position::Held { target: Some(target.to_string()), at: Some(good.clone()), why };
            done_with(f, Ended::RolledBack, position, notes, false)
        }
        Some(Applied::Failed { why: e, .. } | Applied::Refused(e)) => {
            let why = format!("{why}; the rollback to {} failed: {e}", short(good));
            done(f, Ended::RollbackFailed, Position::Unknown { why: why.clone() }, why, true)
        }
    }
}

/// The target is held off: record `verdict` (unless it stands already), then converge the
/// last good commit (repairing drift, honouring nothing newer).
fn fall_back(f: &Facts, target: Option<&str>, result: Ended, why: String, verdict: Option<(Verdict, Event)>, retry: bool) -> Decision {
    if let (Some(t), Some((v, event))) = (target, verdict) {
        let stands = matches!(&f.verdict, Some(Some(s)) if s.verdict == v);
        // A forced pin's try is recorded even when the verdict stands: it ends the try.
        let forced = v == Verdict::Bad && f.pin.as_ref().is_some_and(|p| p.force && p.commit == t);
        if !f.recorded && (!stands || forced) {
            return Decision::Record { commit: t.to_string(), verdict: v, reason: why, event };
        }
    }
    let position = Position::Held { target: target.map(str::to_string), at: f.last_good.clone().or_else(|| f.applied.clone()), why: why.clone() };
    let Some(good) = &f.last_good else {
        // Nothing known good to go back to: what runs stays.
        return done(f, result, position, why, retry);
    };
    match &f.fallback {
        None => Decision::Apply { commit: good.clone(), role: Purpose::Fallback },
        Some(Applied::Done { failed, elsewhere, held_back, .. }) => {
            let mut notes = vec![why];
            notes.extend(failed.iter().chain(elsewhere).map(|e| format!("at {}: {e}", short(good))));
            notes.extend(held_back.iter().map(|h| format!("at {}: held back: {h}", short(good))));
            done_with(f, result, position, notes, retry)
        }
        Some(Applied::Refused(e)) => done(f, result, position, format!("{why}; the last good commit {} cannot be applied either: {e}", short(good)), retry),
        Some(Applied::Failed { why: e, .. }) => done(f, result, position, format!("{why}; re-applying the last good commit {} failed: {e}", short(good)), true),
    }
}

fn done(f: &Facts, result: Ended, position: Position, why: String, retry: bool) -> Decision {
    done_with(f, result, position, if why.is_empty() { vec![] } else { vec![why] }, retry)
}

fn done_with(f: &Facts, result: Ended, position: Position, mut notes: Vec<String>, retry: bool) -> Decision {
    // A fetch that failed is said, and retried, whatever else happened: the host was still
    // converged from what had been fetched.
    if let Some(e) = &f.fetch_error {
        notes.push(format!("fetching the branch failed, the last fetched head was used: {e}"));
    }
    let error = (!notes.is_empty()).then(|| notes.join("; "));
    Decision::Done(Outcome { result, position, error, retry: retry || f.fetch_error.is_some(), rerun: false })
}

pub fn short(commit: &str) -> &str {
    crate::plan::short(commit)
}

/// The units the gate covers: every unit whose file differs from what it was when the last
/// good commit passed (`snapshot`: unit → sha256; None when nothing is known of it, and then
/// every unit). Of those, `watch` are the long-running services of enabled agents, which must
/// stay up for the grace period.
pub fn changed_since_good(files: &BTreeMap<String, (String, Role, bool)>, snapshot: Option<&BTreeMap<String, String>>) -> BTreeSet<String> {
    files.iter().filter(|(unit, (sha, _, _))| snapshot.is_none_or(|s| s.get(*unit) != Some(sha))).map(|(u, _)| u.clone()).collect()
}

/// `changed_since_good`, only the services of enabled agents: what the gate watches.
pub fn gate_watch(files: &BTreeMap<String, (String, Role, bool)>, snapshot: Option<&BTreeMap<String, String>>) -> Vec<String> {
    changed_since_good(files, snapshot).into_iter().filter(|u| matches!(files.get(u), Some((_, Role::Service, true)))).collect()
}

/// Whether a service is declared to exit (a `Type=oneshot` service, or `RemainAfterExit=yes`):
/// only such a service may end during its gate. fleetwright renders every long-running agent
/// as `Type=exec`, so today none of its services is.
pub fn declared_to_exit(unit_content: &str) -> bool {
    let parsed = crate::unit::parse(unit_content);
    let service = parsed.get("Service").cloned().unwrap_or_default();
    service.iter().any(|(k, v)| (k == "Type" && v == "oneshot") || (k == "RemainAfterExit" && matches!(v.as_str(), "yes" | "true" | "1" | "on")))
}

/// A watched service as the gate sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitNow {
    pub active_state: String,
    pub sub_state: String,
    /// The manager's restart counter (NRestarts).
    pub restarts: u32,
    pub may_exit: bool,
}

/// The gate's judgement of one look at the watched services: why the first unhealthy one is
/// unhealthy, or None. `base`: each one's restart counter when the gate began. A service
/// restarted by the manager since, failed, waiting to be restarted, or ended (even with exit
/// status 0, unless it is declared to exit) fails the gate; `at_end`: the grace period is
/// over, and each must be up (`active`) now.
pub fn gate_check(units: &BTreeMap<String, UnitNow>, base: &BTreeMap<String, u32>, at_end: bool) -> Option<String> {
    for (unit, u) in units {
        let restarted = u.restarts.saturating_sub(base.get(unit).copied().unwrap_or(u.restarts));
        if u.active_state == "failed" {
            return Some(format!("{unit} failed after the deploy"));
        }
        if restarted > 0 || u.sub_state == "auto-restart" {
            return Some(format!("{unit} is crash-looping ({restarted} restarts since the deploy)"));
        }
        if !u.may_exit && matches!(u.active_state.as_str(), "inactive" | "deactivating") {
            return Some(format!("{unit} exited after the deploy ({}): a long-running service must keep running", u.sub_state));
        }
        if at_end && !u.may_exit && u.active_state != "active" {
            return Some(format!("{unit} is {} ({}) at the end of the grace period, and should be active", u.active_state, u.sub_state));
        }
    }
    None
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
