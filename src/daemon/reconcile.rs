//! One reconcile: gather the facts `decide` asks for, carry out what it decides, record it.
//!
//! Everything blocking runs on tokio's blocking threads, never on the async workers that serve
//! `/healthz`, the webhook and the manager's signals: git (fetch, read, lineage, signatures),
//! parsing, the history (SQLite) and `health.check` (in `host::check::run_blocking`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::decide::{self, Applied, Check, Decision, Ended, Event, Facts, GateOutcome, Lineage, Need, Outcome, Position, Purpose, Standing, Verdict};
use super::history::{History, HistoryError, Reconcile};
use super::{Daemon, Trigger};
use crate::host::apply::{ApplyError, deploy};
use crate::host::now_rfc3339;
use crate::host::systemd::Systemd;
use crate::plan::{PlanOptions, short};
use crate::source::{FetchError, GitSource};
use crate::types::Role;

/// How often the gate looks even without a signal (none may come: the subscription failed).
const GATE_LOOK: Duration = Duration::from_secs(2);

/// Whether an apply error is the host's condition rather than the commit's: the manager or the
/// state directory out of reach, another apply holding the lock. Such a failure is retried with
/// backoff and never counted against the commit: the host layer's classification,
/// `ApplyError::is_transient` (bus, manager re-exec, full or failing disks, descriptors, the
/// state directory, the apply lock, a job whose outcome was lost).
pub fn host_fault(e: &ApplyError) -> bool {
    e.is_transient()
}

/// An error of the daemon's own machinery (the history cannot be read or written): retried.
fn machinery(why: String) -> Outcome {
    Outcome { result: Ended::Error, position: Position::Unknown { why: why.clone() }, error: Some(why), retry: true, rerun: false }
}

impl Daemon {
    /// `f` with the history, on a blocking thread.
    async fn db<T: Send + 'static>(&self, f: impl FnOnce(&History) -> Result<T, HistoryError> + Send + 'static) -> Result<T, String> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&db.lock().expect("history lock"))).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the history task failed: {e}")),
        }
    }

    /// `f` with the repository, on a blocking thread.
    async fn git<T: Send + 'static>(&self, f: impl FnOnce(&GitSource) -> Result<T, FetchError> + Send + 'static) -> Result<T, FetchError> {
        let source = self.source.clone();
        match tokio::task::spawn_blocking(move || f(&source.lock().expect("source lock"))).await {
            Ok(r) => r,
            Err(e) => Err(FetchError::Io { what: "the git task".into(), source: std::io::Error::other(e.to_string()) }),
        }
    }

    /// Fetch the branch (a no-op for a local repository) and read its head, visible to the
    /// watchdog meanwhile. A failed fetch leaves the head as last fetched.
    async fn fetch(&self) -> (Option<String>, Option<String>) {
        *self.liveness.fetching_since.lock().expect("liveness lock") = Some(Instant::now());
        let r = self.git(|s| Ok((s.fetch().map_err(|e| e.to_string()), s.head().map_err(|e| e.to_string())))).await;
        *self.liveness.fetching_since.lock().expect("liveness lock") = None;
        match r {
            Ok((Ok(()), Ok(head))) => (Some(head), None),
            Ok((Err(e), head)) => (head.ok(), Some(e)),
            Ok((Ok(()), Err(e))) => (None, Some(format!("reading the branch head: {e}"))),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    pub(super) async fn reconcile(&mut self, trigger: Trigger) -> Outcome {
        self.shared.busy.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let mut rec = Reconcile { started_at: now_rfc3339(), trigger: trigger.as_str().into(), ..Default::default() };
        let outcome = self.converse(&mut rec).await;
        rec.duration_ms = started.elapsed().as_millis() as i64;
        rec.result = outcome.result.as_str().into();
        rec.error = outcome.error.clone();
        // Drop-ins nobody committed: reported with the drift, never removed.
        let cfg = self.cfg.host.clone();
        let state = crate::host::state::StateDir::new(&cfg.state_dir);
        let dropins = tokio::task::spawn_blocking(move || {
            let inv = state.load_inventory().unwrap_or_default();
            crate::host::dropin::foreign(&cfg, inv.files.keys().map(String::as_str))
        })
        .await
        .unwrap_or_default();
        let lines: Vec<String> = dropins.iter().flat_map(|(u, ps)| ps.iter().map(move |p| crate::host::dropin::describe(u, p))).collect();
        if !lines.is_empty() {
            let mut all: Vec<String> = rec.drift.take().into_iter().collect();
            all.extend(lines.iter().cloned());
            rec.drift = Some(all.join("; "));
        }
        let row = rec.clone();
        if let Err(e) = self.db(move |h| h.record(&row)).await {
            error!(error = %e, "cannot record the reconcile");
        }
        {
            let mut m = self.report.lock().expect("report lock");
            *m.reconciles.entry(rec.result.clone()).or_default() += 1;
            m.last_duration = rec.duration_ms as f64 / 1000.0;
            let secs = m.last_duration;
            m.durations.observe(secs);
            m.foreign_dropins = lines.len() as u64;
            match &outcome.position {
                Position::AtTarget { .. } => {
                    m.last_success_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                }
                _ if matches!(outcome.result, Ended::Superseded | Ended::Interrupted) => {}
                _ => m.failures += 1,
            }
            if !matches!(outcome.result, Ended::Superseded | Ended::Interrupted) {
                m.position = Some(outcome.position.clone());
            }
            m.host_error = match (&outcome.result, &outcome.position) {
                (Ended::Error, Position::Unknown { why }) => Some(why.clone()),
                _ => None,
            };
        }
        self.log_reconcile(&rec, &lines);
        self.shared.busy.store(false, Ordering::SeqCst);
        self.shared.done.notify_one();
        outcome
    }

    /// One line per reconcile; the same outcome again (a poll of a held head) only at debug.
    fn log_reconcile(&mut self, rec: &Reconcile, dropins: &[String]) {
        let key = (rec.result.clone(), rec.head.clone(), rec.error.clone());
        let again = self.last_logged.as_ref() == Some(&key);
        self.last_logged = Some(key);
        let head = rec.head.as_deref().map(short);
        let applied = rec.applied.as_deref().map(short);
        let error = rec.error.as_deref();
        if again {
            debug!(trigger = rec.trigger, result = rec.result, head, applied, ms = rec.duration_ms, error, "reconciled (as before)");
            return;
        }
        if !dropins.is_empty() {
            warn!(dropins = ?dropins, "drop-ins fleetwright did not write change managed units");
        }
        match rec.result.as_str() {
            "converged" | "unchanged" | "repaired" | "superseded" | "interrupted" if error.is_none() => {
                info!(trigger = rec.trigger, result = rec.result, head, applied, ms = rec.duration_ms, "reconciled")
            }
            "failed" | "rollback-failed" => error!(trigger = rec.trigger, result = rec.result, head, applied, ms = rec.duration_ms, error, "reconciled"),
            _ => warn!(trigger = rec.trigger, result = rec.result, head, applied, ms = rec.duration_ms, error, "reconciled"),
        }
    }

    async fn converse(&mut self, rec: &mut Reconcile) -> Outcome {
        let (head, fetch_error) = self.fetch().await;
        let base = self.db(|h| Ok((h.pin_record()?, h.last_good()?))).await;
        let (pin, last_good) = match base {
            Ok(x) => x,
            Err(e) => return machinery(e),
        };
        let state = crate::host::state::StateDir::new(&self.cfg.host.state_dir);
        let applied = match tokio::task::spawn_blocking(move || state.load_inventory()).await {
            Ok(Ok(inv)) => inv.applied_commit,
            Ok(Err(e)) => return machinery(e.to_string()),
            Err(e) => return machinery(e.to_string()),
        };
        let target = pin.as_ref().map(|p| p.commit.clone()).or_else(|| head.clone());
        rec.head = target.clone();
        self.note_source(head.as_deref(), pin.as_ref().map(|p| p.commit.as_str()), fetch_error.as_deref(), last_good.as_deref()).await;
        let policy = decide::Policy {
            allow_force_push: self.cfg.allow_force_push,
            signatures: self.cfg.allowed_signers.is_some(),
            gate: !self.cfg.health_grace.is_zero(),
        };
        let failed_attempts = match (&self.failing, &target) {
            (Some((c, n)), Some(t)) if c == t => *n,
            _ => 0,
        };
        let pin_seq = pin.as_ref().map(|p| p.seq).unwrap_or(i64::MAX);
        let mut f = Facts {
            head,
            fetch_error,
            pin: pin.as_ref().map(|p| decide::Pin { commit: p.commit.clone(), force: p.force }),
            last_good: last_good.clone(),
            applied,
            policy,
            failed_attempts,
            ..Default::default()
        };
        let mut fleet: Option<crate::spec::Fleet> = None;
        loop {
            match decide::decide(&f) {
                Decision::Gather(Need::Verdict(c)) => {
                    let pinned = pin.as_ref().is_some_and(|p| p.commit == c);
                    match self.db(move |h| Ok((h.verdict_record(&c)?, pinned && h.verdict_since(&c, pin_seq)?))).await {
                        Ok((v, since_pin)) => f.verdict = Some(v.map(|v| Standing { verdict: v.verdict, reason: v.reason, since_pin })),
                        Err(e) => return machinery(e),
                    }
                }
                Decision::Gather(Need::Lineage { commit, from }) => {
                    f.lineage = Some(match self.git(move |s| s.descends_from(&commit, &from)).await {
                        Ok(Some(true)) => Lineage::Descends,
                        Ok(_) => Lineage::Diverged,
                        // The repository could not be read: no evidence of a force-push.
                        Err(e) => Lineage::Unknown(e.to_string()),
                    });
                }
                Decision::Gather(Need::Signature(c)) => {
                    let check = match self.signatures.get(&c) {
                        Some(known) => known.clone(),
                        None => {
                            let signers = self.cfg.allowed_signers.clone().unwrap_or_default();
                            let commit = c.clone();
                            let check = match self.git(move |s| s.verify_ssh_signature(&commit, &signers)).await {
                                Ok(_) => Check::Pass,
                                Err(e) if e.is_transient() => Check::Transient(e.to_string()),
                                Err(e) => Check::Fail(format!(
                                    "{e}; only commits signed by a key in {} are applied",
                                    self.cfg.allowed_signers.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                                )),
                            };
                            if !matches!(check, Check::Transient(_)) {
                                // Bounded: a year of commits is far less than this.
                                if self.signatures.len() >= 10_000 {
                                    self.signatures.clear();
                                }
                                self.signatures.insert(c, check.clone());
                            }
                            check
                        }
                    };
                    f.signature = Some(check);
                }
                Decision::Gather(Need::Validity(c)) => {
                    let (check, parsed) = self.read_fleet(&c).await;
                    if let Some(f) = &parsed {
                        self.update_sinks(&f.notify).await;
                    }
                    fleet = parsed;
                    f.validity = Some(check);
                }
                Decision::Apply { commit, role } => {
                    // A commit that never had a verdict: a forge shows it pending until its
                    // verdict (an old good commit pinned again keeps its status; a held one
                    // tried again keeps its failure).
                    if role == Purpose::Target && last_good.as_deref() != Some(commit.as_str()) && f.verdict == Some(None) {
                        self.queue_pending(&commit).await;
                    }
                    let parsed = if role == Purpose::Target && target.as_deref() == Some(commit.as_str()) { fleet.take() } else { None };
                    let a = self.apply_commit(rec, &commit, parsed, role, last_good.as_deref()).await;
                    match role {
                        Purpose::Target => {
                            match &a {
                                Applied::Failed { transient: false, .. } => self.failing = Some((commit.clone(), f.failed_attempts + 1)),
                                Applied::Failed { transient: true, .. } => {}
                                _ => self.failing = None,
                            }
                            f.apply = Some(a);
                        }
                        Purpose::Fallback => f.fallback = Some(a),
                    }
                }
                Decision::Gate { commit } => f.gate = Some(self.gate(&commit, last_good.as_deref()).await),
                Decision::Record { commit, verdict, reason, event } => {
                    if let Err(e) = self.record_verdict(&commit, verdict, &reason, event, last_good.as_deref()).await {
                        return machinery(e);
                    }
                    f.recorded = true;
                }
                Decision::Done(o) => return o,
            }
        }
    }

    /// What the daemon knows of the source, for `/healthz`, `/metrics` and `status`: the head
    /// (and when it was first seen: the start of its commit-to-verdict time) and whether the
    /// fetch works.
    async fn note_source(&self, head: Option<&str>, pin: Option<&str>, fetch_error: Option<&str>, last_good: Option<&str>) {
        let now = now_rfc3339();
        let since = {
            let mut r = self.report.lock().expect("report lock");
            r.head = head.map(str::to_string).or(r.head.take());
            r.pinned = pin.map(str::to_string);
            r.last_good = last_good.map(str::to_string);
            match fetch_error {
                Some(e) => {
                    r.source.fetch_failures += 1;
                    let since = r.source.failing.as_ref().map(|(_, s)| s.clone()).unwrap_or(now.clone());
                    if r.source.failing.is_none() {
                        warn!(error = e, "fetching the branch failed; the host is kept converged to the last fetched head");
                    }
                    r.source.failing = Some((e.to_string(), since.clone()));
                    Some(since)
                }
                None => {
                    if r.source.failing.take().is_some() {
                        info!("fetching the branch works again");
                    }
                    None
                }
            }
        };
        let head = head.map(str::to_string);
        let source = serde_json::json!({ "ok": fetch_error.is_none(), "error": fetch_error, "since": since });
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let r = self
            .db(move |h| {
                if let Some(head) = head
                    && h.get_json("head")?.is_none_or(|v| v["commit"] != head.as_str())
                {
                    h.set_json("head", Some(&serde_json::json!({ "commit": head, "seenAt": now, "seenUnix": unix })))?;
                }
                if h.get_json("source")?.as_ref() != Some(&source) {
                    h.set_json("source", Some(&source))?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot record the head in the history");
        }
    }

    /// Read and validate `commit`: the check, and the fleet when it passes.
    async fn read_fleet(&self, commit: &str) -> (Check, Option<crate::spec::Fleet>) {
        let c = commit.to_string();
        let read = self.git(move |s| s.read(&c)).await.map_err(|e| if e.is_transient() { Check::Transient(e.to_string()) } else { Check::Fail(e.to_string()) });
        let files = match read {
            Ok(f) => f,
            Err(check) => return (check, None),
        };
        match tokio::task::spawn_blocking(move || crate::spec::load_with(&files.files, Some(&files.secrets), &crate::host::zones::Tzdata)).await {
            Ok(Ok(fleet)) => (Check::Pass, Some(fleet)),
            Ok(Err(diags)) => (Check::Fail(diags.0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")), None),
            Err(e) => (Check::Transient(format!("parsing {}: {e}", short(commit))), None),
        }
    }

    /// `host::apply::deploy_unchanged` for `commit`: whether the host is converged to it. It
    /// reads every unit file: on this thread, made a blocking one (`blocking`).
    async fn unchanged(&self, commit: &str) -> bool {
        let Ok(sd) = Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await else { return false };
        let key = crate::host::apply::render_key(&self.cfg.host, commit, self.cfg.path.as_deref());
        let opts = PlanOptions { allow_empty: self.cfg.allow_empty };
        let r = blocking(crate::host::apply::deploy_unchanged(&sd, &self.cfg.host, &self.state, &key, opts));
        matches!(r, Ok(Some(_)))
    }

    /// The inventory's units: file hash, role, and whether the agent is enabled.
    async fn inventory_files(&self) -> BTreeMap<String, (String, Role, bool)> {
        let state = crate::host::state::StateDir::new(&self.cfg.host.state_dir);
        let inv = tokio::task::spawn_blocking(move || state.load_inventory().unwrap_or_default()).await.unwrap_or_default();
        inv.files.iter().map(|(u, f)| (u.clone(), (f.sha256.clone(), f.role, inv.agents.get(&f.agent).is_none_or(|a| a.enabled)))).collect()
    }

    /// The units as they were when `last_good` passed its gate (None: not known).
    async fn snapshot(&self, last_good: Option<&str>) -> Option<BTreeMap<String, String>> {
        let good = last_good?.to_string();
        self.db(move |h| h.snapshot(&good)).await.ok().flatten()
    }

    /// Apply `commit` (its fleet when already read) and say what happened.
    async fn apply_commit(&self, rec: &mut Reconcile, commit: &str, fleet: Option<crate::spec::Fleet>, role: Purpose, last_good: Option<&str>) -> Applied {
        let fleet = match fleet {
            Some(f) => f,
            None => {
                // The last good commit when nothing has drifted: known from the inventory and
                // the files on disk, without reading the commit again.
                if last_good == Some(commit) && self.unchanged(commit).await {
                    rec.applied = Some(commit.to_string());
                    let mut m = self.report.lock().expect("report lock");
                    m.drift_units = 0;
                    m.applied_commit = Some(commit.to_string());
                    return Applied::ok(false);
                }
                match self.read_fleet(commit).await {
                    (Check::Pass, Some(f)) => f,
                    (Check::Transient(e), _) => return Applied::Failed { why: format!("reading {}: {e}", short(commit)), transient: true },
                    (check, _) => {
                        let why = match check {
                            Check::Fail(e) => e,
                            _ => "it could not be read".into(),
                        };
                        return Applied::Failed { why: format!("{} cannot be applied: {why}", short(commit)), transient: false };
                    }
                }
            }
        };
        let sd = match Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await {
            Ok(sd) => sd,
            Err(e) => return Applied::Failed { why: e.to_string(), transient: true },
        };
        let key = crate::host::apply::render_key(&self.cfg.host, commit, self.cfg.path.as_deref());
        let opts = PlanOptions { allow_empty: self.cfg.allow_empty };
        let d = match blocking(deploy(&sd, &self.cfg.host, &self.state, commit, &key, &fleet, opts)) {
            Ok(d) => d,
            Err(ApplyError::Refused(why)) => return Applied::Refused(why.join("; ")),
            // A fault of the host says so: it is retried and never held against the commit.
            Err(e) if host_fault(&e) => return Applied::Failed { transient: true, why: format!("a fault of the host, not of commit {}: {e}", short(commit)) },
            Err(e) => return Applied::Failed { transient: false, why: e.to_string() },
        };
        drop(fleet);
        rec.applied = Some(commit.to_string());
        rec.actions = d.plan.changes().count() as i64;
        let drift: Vec<String> = d.plan.drift().map(|(u, w)| format!("{u}: {w}")).collect();
        if !drift.is_empty() {
            warn!(drift = ?drift, "drift repaired");
            rec.drift = Some(drift.join("; "));
        }
        {
            let mut m = self.report.lock().expect("report lock");
            m.drift_units = drift.len() as u64;
            m.applied_commit = Some(commit.to_string());
        }
        let held: BTreeMap<&str, &str> = d.plan.units.iter().filter_map(|u| u.held.as_deref().map(|h| (u.unit.as_str(), h))).collect();
        let held_back: Vec<String> = held.iter().map(|(u, h)| format!("{u}: {h}")).collect();
        // What the gate covers: what changed since the last good commit.
        let scope = match role {
            Purpose::Target => decide::changed_since_good(&self.inventory_files().await, self.snapshot(last_good).await.as_ref()),
            Purpose::Fallback => BTreeSet::new(),
        };
        let (mut failed, mut elsewhere) = (vec![], vec![]);
        for fl in d.report.failures.iter().filter(|fl| !held.contains_key(fl.unit.as_str())) {
            let line = format!("{}: {}", fl.unit, fl.what);
            if scope.contains(&fl.unit) { failed.push(line) } else { elsewhere.push(line) }
        }
        Applied::Done { changed: d.plan.has_changes(), drift: !drift.is_empty(), held_back, failed, elsewhere }
    }

    /// Watch the services changed since the last good commit for the grace period: woken by
    /// the manager's signals about any unit (and every `GATE_LOOK` in case none come), by the
    /// end of the grace period, by a stop, and by a trigger that may have moved the target
    /// (then a newer commit cuts the wait short, as Flux users ask).
    async fn gate(&mut self, commit: &str, last_good: Option<&str>) -> GateOutcome {
        let files = self.inventory_files().await;
        let watched = decide::gate_watch(&files, self.snapshot(last_good).await.as_ref());
        if watched.is_empty() {
            return GateOutcome::Healthy;
        }
        let sd = match Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await {
            Ok(sd) => sd,
            Err(e) => return GateOutcome::Unknown(e.to_string()),
        };
        let names: Vec<&str> = watched.iter().map(String::as_str).collect();
        let base = match sd.restart_counters(&names).await {
            Ok(b) => b,
            Err(e) => return GateOutcome::Unknown(e.to_string()),
        };
        let may_exit: BTreeMap<String, bool> = tokio::task::block_in_place(|| {
            watched.iter().map(|u| (u.clone(), std::fs::read_to_string(self.cfg.host.unit_dir.join(u)).is_ok_and(|c| decide::declared_to_exit(&c)))).collect()
        });
        let now = Instant::now();
        let until = now + self.cfg.health_grace;
        let record = serde_json::json!({
            "commit": commit,
            "startedAt": now_rfc3339(),
            "until": super::report::wall_clock_of(until, now),
            "units": watched,
        });
        if let Err(e) = self.db(move |h| h.set_json("gate", Some(&record))).await {
            warn!(error = %e, "cannot record the gate in the history");
        }
        self.report.lock().expect("report lock").gating = Some(super::report::Gating { commit: commit.to_string(), until, units: watched.clone() });
        info!(commit = short(commit), grace = ?self.cfg.health_grace, watching = ?watched, "gating");
        let mut changes = self.shared.changes.subscribe();
        let mut stop = self.stop.clone();
        let mut deferred: Vec<Trigger> = vec![];
        let outcome = loop {
            let at_end = Instant::now() >= until;
            match look(&sd, &names, &base, &may_exit, at_end).await {
                Err(e) => break GateOutcome::Unknown(e),
                Ok(Some(why)) => break GateOutcome::Unhealthy(why),
                Ok(None) if at_end => break GateOutcome::Healthy,
                Ok(None) => {}
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break GateOutcome::Interrupted,
                t = self.triggers.recv() => if let Some(t) = t {
                    if !deferred.contains(&t) {
                        deferred.push(t);
                    }
                    if t.may_move_target() && self.target_moved(commit).await {
                        break GateOutcome::Superseded;
                    }
                },
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = tokio::time::sleep(GATE_LOOK) => {}
            }
        };
        self.report.lock().expect("report lock").gating = None;
        if outcome == GateOutcome::Superseded {
            let _ = self.db(|h| h.set_json("gate", None)).await;
        }
        // Triggers seen while waiting are answered after the gate.
        for t in deferred {
            let _ = self.tx.send(t);
        }
        outcome
    }

    /// Whether the commit that should run is no longer `commit` (a new head, a pin set or
    /// dropped).
    async fn target_moved(&self, commit: &str) -> bool {
        let (head, _) = self.fetch().await;
        let pin = self.db(|h| h.pin()).await.ok().flatten();
        match pin.or(head) {
            Some(t) => t != commit,
            None => false,
        }
    }

    /// The sinks of a Fleet just read (with `--notify-url`): delivered to from now on, and kept
    /// in the history for the failure reporter, `notify test` and the next start.
    async fn update_sinks(&self, fleet_sinks: &[crate::spec::model::NotifySink]) {
        let all = super::notifications::sinks_for(fleet_sinks, self.cfg.notify_url.as_deref(), &self.cfg.repo);
        if !self.sinks.set(all.clone()) {
            return;
        }
        info!(sinks = ?all.iter().map(crate::notify::sink_key).collect::<Vec<_>>(), "notification sinks");
        let own = serde_json::to_value(fleet_sinks).ok();
        let every = serde_json::to_value(&all).ok();
        let r = self
            .db(move |h| {
                h.set_json(super::notifications::FLEET_SINKS_KEY, own.as_ref())?;
                h.set_json(super::notifications::SINKS_KEY, every.as_ref())?;
                for s in &all {
                    h.ensure_sink(&crate::notify::sink_key(s))?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot record the notification sinks in the history");
        }
        self.notifier.notify_one();
    }

    /// A commit that has no verdict yet is about to be applied (and gated): `pending`, once
    /// per commit (a forge shows it until the verdict's status replaces it).
    async fn queue_pending(&self, commit: &str) {
        let at = now_rfc3339();
        let message = format!("applying {} on {}", short(commit), self.cfg.host.host);
        let body = super::notifications::body("pending", commit, &self.cfg.host.host, &message, &at, None);
        let c = commit.to_string();
        match self.db(move |h| h.queue("pending", &c, &body, &at)).await {
            Ok(true) => self.notifier.notify_one(),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot queue the pending status"),
        }
    }

    /// Record a verdict and queue its notification (one transaction), then say it.
    async fn record_verdict(&self, commit: &str, verdict: Verdict, reason: &str, event: Event, last_good: Option<&str>) -> Result<(), String> {
        let units: Option<BTreeMap<String, String>> =
            (verdict == Verdict::Good).then_some(self.inventory_files().await.into_iter().map(|(u, (sha, _, _))| (u, sha)).collect());
        let at = now_rfc3339();
        let message = match event {
            Event::RolledBack => format!("{reason}; rolled back to {}", last_good.map(short).unwrap_or("?")),
            _ => reason.to_string(),
        };
        let body = Some(super::notifications::body(event.as_str(), commit, &self.cfg.host.host, &message, &at, last_good));
        let (c, r, a, ev) = (commit.to_string(), reason.to_string(), at.clone(), event.as_str());
        let head = self.db(move |h| {
            h.record_verdict(&c, verdict, &r, &a, units.as_ref(), body.as_deref().map(|b| (ev, b)))?;
            h.get_json("head")
        });
        let head = head.await?;
        match verdict {
            Verdict::Good => info!(commit = short(commit), "the commit passed its health gate: it is the last good commit"),
            Verdict::Bad if event == Event::Invalid => warn!(commit = short(commit), reason, "the commit is invalid: nothing of it is applied"),
            Verdict::Bad => error!(
                commit = short(commit),
                reason,
                "the deploy failed; {}",
                match last_good {
                    Some(g) => format!("rolling back to {}", short(g)),
                    None => "there is no earlier good commit to roll back to".into(),
                }
            ),
            Verdict::Held => warn!(commit = short(commit), reason, "the commit is held: not good"),
            Verdict::Refused => warn!(commit = short(commit), reason, "the commit is refused"),
        }
        {
            let mut m = self.report.lock().expect("report lock");
            if verdict == Verdict::Good {
                m.last_good = Some(commit.to_string());
                // From the head's first sight to its verdict, once per commit.
                if let Some(h) = head.filter(|h| h["commit"] == commit)
                    && let Some(seen) = h["seenUnix"].as_f64()
                {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(seen);
                    let secs = (now - seen).max(0.0);
                    m.commit_to_converged = Some(secs);
                    info!(commit = short(commit), seconds = secs, "commit to verdict");
                }
            }
            if event == Event::RolledBack {
                m.rollbacks += 1;
            }
        }
        self.notifier.notify_one();
        Ok(())
    }
}

/// Run `f` to its end on this thread, made a blocking thread first: an apply reads and writes
/// files, renders and plans a whole fleet and runs `journalctl` for failures, none of which may
/// hold up the runtime's worker threads (the HTTP endpoint, the manager's signals). Its D-Bus
/// calls still run on this runtime.
fn blocking<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// One look at the watched services: why the first unhealthy one is, or None.
async fn look(sd: &Systemd, names: &[&str], base: &BTreeMap<String, u32>, may_exit: &BTreeMap<String, bool>, at_end: bool) -> Result<Option<String>, String> {
    let states = sd.statuses(names).await.map_err(|e| e.to_string())?;
    let counters = sd.restart_counters(names).await.map_err(|e| e.to_string())?;
    let units: BTreeMap<String, decide::UnitNow> = names
        .iter()
        .map(|u| {
            let st = states.get(*u).cloned().unwrap_or_default();
            (
                u.to_string(),
                decide::UnitNow {
                    active_state: st.active_state,
                    sub_state: st.sub_state,
                    restarts: counters.get(*u).copied().unwrap_or(0),
                    may_exit: may_exit.get(*u).copied().unwrap_or(false),
                },
            )
        })
        .collect();
    Ok(decide::gate_check(&units, base, at_end))
}
