//! The continuous reconciler (`fleetwright daemon`): follows a branch, converges on every new
//! commit, repairs drift on a resync, gates changed services on their health and rolls back by
//! itself. Level-triggered (kube-runtime's shape): the reconciler is told *that* something may
//! have changed, never *what*; it re-reads the branch and re-observes the host each time, and
//! triggers that arrive while it runs are coalesced into one more run. Never two at once.
//!
//! The daemon owns time and git; everything it applies goes through `host::apply::deploy`.

pub mod history;
pub mod server;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::host::apply::{deploy, Deployment};
use crate::host::state::StateDir;
use crate::host::systemd::Systemd;
use crate::host::{now_rfc3339, HostConfig};
use crate::plan::{short, Action, PlanOptions};
use crate::render::Role;
use crate::source::{FetchError, GitSource};
use history::{History, Reconcile, Verdict};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub host: HostConfig,
    /// A local repository path or a remote URL.
    pub repo: String,
    pub branch: Option<String>,
    pub path: Option<String>,
    /// How often a remote is fetched (with up to 10% jitter).
    pub interval: Duration,
    /// How often the host is re-observed and drift repaired, without a new commit.
    pub resync: Duration,
    /// How long changed services are watched after a deploy before the commit counts as good.
    pub health_grace: Duration,
    pub allow_force_push: bool,
    pub allow_empty: bool,
    /// Apply only commits signed by a key in this allowed-signers file.
    pub allowed_signers: Option<PathBuf>,
    /// Serve the webhook, /healthz and /metrics here.
    pub listen: Option<SocketAddr>,
    pub webhook_secret: Option<Vec<u8>>,
    /// POST a JSON event here on deployed / failed / rolled back.
    pub notify_url: Option<String>,
}

/// Why the reconciler runs (for the history; it never changes what a run does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Watch,
    Poll,
    Resync,
    Webhook,
    Signal,
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Watch => "watch",
            Trigger::Poll => "poll",
            Trigger::Resync => "resync",
            Trigger::Webhook => "webhook",
            Trigger::Signal => "signal",
            Trigger::Retry => "retry",
        }
    }
}

/// What the metrics endpoint and /healthz show; updated after each reconcile.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub applied_commit: Option<String>,
    pub last_good: Option<String>,
    pub reconciles: std::collections::BTreeMap<String, u64>,
    pub failures: u64,
    pub rollbacks: u64,
    pub last_duration: f64,
    pub last_success_unix: u64,
    pub drift_units: u64,
    pub commit_to_converged: Option<f64>,
    pub healthy: bool,
}

/// How one reconcile ended.
#[derive(Debug)]
enum Outcome {
    /// Converged (changed or not) to this commit.
    Converged { changed: bool },
    /// A transient failure: retry with backoff.
    Transient(String),
    /// Held at the last good state (bad/invalid/refused head); wait for a new commit.
    Held(String),
    RolledBack,
    Superseded,
}

pub struct Daemon {
    cfg: DaemonConfig,
    source: GitSource,
    state: StateDir,
    history: History,
    metrics: Arc<Mutex<Metrics>>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
    tx: mpsc::UnboundedSender<Trigger>,
    /// When the head we last saw first appeared (for commit-to-converged latency).
    head_seen: Option<(String, Instant)>,
}

fn jitter(d: Duration) -> Duration {
    // Up to 10% more, from the clock's low bits: enough to spread hosts; no RNG needed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0) as u64;
    d + Duration::from_millis((d.as_millis() as u64 / 10).max(1) * (nanos % 1000) / 1000)
}

impl Daemon {
    pub fn new(cfg: DaemonConfig) -> Result<Daemon, Box<dyn std::error::Error>> {
        let state = StateDir::new(&cfg.host.state_dir);
        let source = GitSource::open(&cfg.repo, cfg.branch.as_deref(), cfg.path.as_deref(), &cfg.host.state_dir.join("cache"))?;
        let history = History::open(&cfg.host.state_dir)?;
        let (tx, triggers) = mpsc::unbounded_channel();
        let metrics = Arc::new(Mutex::new(Metrics { last_good: history.last_good()?, ..Default::default() }));
        Ok(Daemon { cfg, source, state, history, metrics, triggers, tx, head_seen: None })
    }

    /// Run until SIGTERM/SIGINT. The step in progress always finishes: a signal is seen only
    /// between reconciles, so no apply is cut in half.
    pub async fn run(mut self) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::signal::unix::{signal, SignalKind};
        std::fs::create_dir_all(&self.cfg.host.state_dir)?;
        let pid_file = self.cfg.host.state_dir.join("daemon.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;

        let _watcher = self.watch_local()?;
        self.spawn_timers();
        if let Some(addr) = self.cfg.listen {
            server::spawn(addr, self.cfg.webhook_secret.clone(), self.tx.clone(), self.metrics.clone()).await?;
            info!(%addr, "serving /healthz, /metrics and the webhook");
        }
        self.spawn_watchdog();
        let _ = self.tx.send(Trigger::Startup);

        let mut backoff = Duration::from_secs(1);
        let mut ready = false;
        loop {
            let trigger = tokio::select! {
                t = self.triggers.recv() => match t { Some(t) => t, None => break },
                _ = term.recv() => { info!("SIGTERM: stopping between reconciles"); break }
                _ = int.recv() => { info!("SIGINT: stopping between reconciles"); break }
                _ = hup.recv() => Trigger::Signal,
            };
            // Coalesce a burst: everything queued now is served by this one run.
            let mut trigger = trigger;
            while let Ok(t) = self.triggers.try_recv() {
                if trigger == Trigger::Resync || trigger == Trigger::Poll {
                    trigger = t;
                }
            }
            let outcome = self.reconcile(trigger).await;
            if !ready {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                ready = true;
            }
            match outcome {
                Outcome::Transient(e) => {
                    warn!(error = %e, retry_in = ?backoff, "transient failure; retrying");
                    let tx = self.tx.clone();
                    let wait = backoff;
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.send(Trigger::Retry);
                    });
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
                _ => backoff = Duration::from_secs(1),
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = std::fs::remove_file(pid_file);
        Ok(())
    }

    fn status_line(&self) -> String {
        let m = self.metrics.lock().expect("metrics lock");
        format!("applied {} (last good {})", m.applied_commit.as_deref().map(short).unwrap_or("nothing"), m.last_good.as_deref().map(short).unwrap_or("none"))
    }

    /// Watch a local repository's refs: a commit triggers a reconcile at once.
    fn watch_local(&self) -> Result<Option<notify::RecommendedWatcher>, Box<dyn std::error::Error>> {
        use notify::Watcher;
        if self.source.is_remote() {
            return Ok(None);
        }
        let tx = self.tx.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                // Ref updates: refs/…, packed-refs, HEAD (and their .lock renames).
                let relevant = ev.paths.iter().any(|p| {
                    let s = p.to_string_lossy();
                    s.contains("/refs/") || s.ends_with("packed-refs") || s.ends_with("/HEAD")
                });
                if relevant && !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(Trigger::Watch);
                }
            }
        })?;
        w.watch(&self.source.git_dir(), notify::RecursiveMode::Recursive)?;
        Ok(Some(w))
    }

    fn spawn_timers(&self) {
        if self.source.is_remote() {
            let tx = self.tx.clone();
            let every = self.cfg.interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(jitter(every)).await;
                    if tx.send(Trigger::Poll).is_err() {
                        break;
                    }
                }
            });
        }
        let tx = self.tx.clone();
        let resync = self.cfg.resync;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(jitter(resync)).await;
                if tx.send(Trigger::Resync).is_err() {
                    break;
                }
            }
        });
    }

    fn spawn_watchdog(&self) {
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            let every = timeout / 2;
            tokio::spawn(async move {
                loop {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    tokio::time::sleep(every).await;
                }
            });
        }
    }

    async fn reconcile(&mut self, trigger: Trigger) -> Outcome {
        let started = Instant::now();
        let started_at = now_rfc3339();
        let mut rec = Reconcile { started_at, trigger: trigger.as_str().into(), ..Default::default() };
        let outcome = self.reconcile_inner(&mut rec).await;
        rec.duration_ms = started.elapsed().as_millis() as i64;
        rec.result = match &outcome {
            Outcome::Converged { .. } if rec.drift.is_some() => "repaired".into(),
            Outcome::Converged { changed: true } => "converged".into(),
            Outcome::Converged { changed: false } => "unchanged".into(),
            Outcome::Transient(e) => {
                rec.error = Some(e.clone());
                "error".into()
            }
            Outcome::Held(why) => {
                rec.error.get_or_insert(why.clone());
                if rec.result.is_empty() { "held".into() } else { rec.result.clone() }
            }
            Outcome::RolledBack => "rolled-back".into(),
            Outcome::Superseded => "superseded".into(),
        };
        if let Err(e) = self.history.record(&rec) {
            error!(error = %e, "cannot record the reconcile");
        }
        let mut m = self.metrics.lock().expect("metrics lock");
        *m.reconciles.entry(rec.result.clone()).or_default() += 1;
        m.last_duration = rec.duration_ms as f64 / 1000.0;
        if matches!(outcome, Outcome::Converged { .. }) {
            m.last_success_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            m.healthy = true;
        } else if matches!(outcome, Outcome::Superseded) {
            m.healthy = true;
        } else {
            m.failures += 1;
            m.healthy = false;
        }
        if matches!(outcome, Outcome::RolledBack) {
            m.rollbacks += 1;
        }
        m.last_good = self.history.last_good().ok().flatten();
        info!(trigger = rec.trigger, result = rec.result, head = rec.head.as_deref().map(short), applied = rec.applied.as_deref().map(short), ms = rec.duration_ms, error = rec.error.as_deref(), "reconciled");
        outcome
    }

    async fn reconcile_inner(&mut self, rec: &mut Reconcile) -> Outcome {
        // 1. What should run: the pin, else the branch head.
        if let Err(e) = tokio::task::block_in_place(|| self.source.fetch()) {
            return Outcome::Transient(e.to_string());
        }
        let head = match self.source.head() {
            Ok(h) => h,
            Err(e) => return Outcome::Transient(e.to_string()),
        };
        if self.head_seen.as_ref().is_none_or(|(h, _)| *h != head) {
            self.head_seen = Some((head.clone(), Instant::now()));
        }
        let pin = self.history.pin().ok().flatten();
        let last_good = self.history.last_good().ok().flatten();
        let target = pin.clone().unwrap_or_else(|| head.clone());
        rec.head = Some(target.clone());

        // 2. Is it allowed? Marked bad, force-pushed, unsigned: hold the last good state.
        let mut hold: Option<String> = None;
        if pin.is_none() {
            if let Ok(Some((Verdict::Bad, why))) = self.history.verdict(&target) {
                hold = Some(format!("commit {} is marked bad ({why}); holding the last good state until a newer commit", short(&target)));
            }
        }
        if hold.is_none() && pin.is_none() && !self.cfg.allow_force_push {
            let applied = self.state.load_inventory().ok().and_then(|i| i.applied_commit);
            if let Some(applied) = applied.filter(|a| *a != target) {
                if self.source.descends_from(&target, &applied) != Some(true) {
                    hold = Some(format!("the branch no longer contains the applied commit {} (force-push?); refusing {} — pass --allow-force-push to follow it", short(&applied), short(&target)));
                }
            }
        }
        if hold.is_none() {
            if let Some(signers) = &self.cfg.allowed_signers {
                if let Err(e) = self.source.verify_ssh_signature(&target, signers) {
                    hold = Some(format!("{e}; only commits signed by a key in {} are applied", signers.display()));
                }
            }
        }
        if let Some(why) = hold {
            rec.result = "refused".into();
            warn!("{why}");
            return self.hold(rec, why, last_good).await;
        }

        // 3. Read and validate. An invalid commit is rejected whole; the last good one keeps
        //    running (and is still re-applied, so drift keeps being repaired).
        let files = match self.source.read(&target) {
            Ok(f) => f,
            Err(FetchError::Git { source, .. }) => return Outcome::Transient(source.to_string()),
            Err(e) => return self.hold(rec, e.to_string(), last_good).await,
        };
        let fleet = match crate::spec::load(&files.files) {
            Ok(f) => f,
            Err(diags) => {
                let why = format!("commit {} is invalid: {}", short(&target), diags.0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "));
                let _ = self.history.mark(&target, Verdict::Bad, "invalid spec", &now_rfc3339());
                rec.result = "invalid".into();
                warn!("{why}");
                self.notify_event("failed", &target, &why);
                return self.hold(rec, why, last_good).await;
            }
        };

        // 4. Apply.
        let d = match self.apply(&target, &fleet).await {
            Ok(d) => d,
            Err(e) => return e,
        };
        rec.applied = Some(target.clone());
        rec.actions = d.plan.changes().count() as i64;
        let drift: Vec<String> = d.plan.drift().map(|(u, w)| format!("{u}: {w}")).collect();
        if !drift.is_empty() {
            warn!(drift = ?drift, "drift repaired");
            rec.drift = Some(drift.join("; "));
        }
        self.metrics.lock().expect("metrics lock").drift_units = drift.len() as u64;
        self.metrics.lock().expect("metrics lock").applied_commit = Some(target.clone());
        let changed = d.plan.has_changes();
        let is_new = last_good.as_deref() != Some(target.as_str());

        // 5. Health gate: a new commit counts as good once its changed services stayed up for
        //    the grace period; failed jobs or a crash loop roll it back.
        if is_new && pin.is_none() {
            let mut failed: Vec<String> = d.report.failures.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
            if failed.is_empty() {
                match self.health_gate(&d).await {
                    Gate::Healthy => {}
                    Gate::Failed(why) => failed.push(why),
                    Gate::Superseded => return Outcome::Superseded,
                }
            }
            if !failed.is_empty() {
                let why = failed.join("; ");
                let _ = self.history.mark(&target, Verdict::Bad, &why, &now_rfc3339());
                rec.error = Some(why.clone());
                return self.roll_back(rec, &target, last_good, &why).await;
            }
            let _ = self.history.mark(&target, Verdict::Good, "healthy", &now_rfc3339());
            if let Some((h, at)) = &self.head_seen {
                if *h == target {
                    let secs = at.elapsed().as_secs_f64();
                    self.metrics.lock().expect("metrics lock").commit_to_converged = Some(secs);
                    info!(commit = short(&target), seconds = secs, "commit converged");
                }
            }
            if changed {
                self.notify_event("deployed", &target, &format!("{} units changed", d.plan.changes().count()));
            }
        } else if !d.report.failures.is_empty() {
            let why: Vec<String> = d.report.failures.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
            rec.error = Some(why.join("; "));
        }
        Outcome::Converged { changed }
    }

    async fn apply(&self, commit: &str, fleet: &crate::spec::Fleet) -> Result<Deployment, Outcome> {
        let sd = Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await.map_err(|e| Outcome::Transient(e.to_string()))?;
        deploy(&sd, &self.cfg.host, &self.state, commit, fleet, PlanOptions { allow_empty: self.cfg.allow_empty }).await.map_err(|e| match e {
            crate::host::apply::ApplyError::Refused(why) => Outcome::Held(why.join("; ")),
            other => Outcome::Transient(other.to_string()),
        })
    }

    /// Keep (re-)converging the last good commit while the head cannot be applied.
    async fn hold(&mut self, rec: &mut Reconcile, why: String, last_good: Option<String>) -> Outcome {
        rec.error = Some(why.clone());
        if let Some(good) = last_good {
            if let Ok(files) = self.source.read(&good) {
                if let Ok(fleet) = crate::spec::load(&files.files) {
                    if let Ok(d) = self.apply(&good, &fleet).await {
                        rec.applied = Some(good);
                        rec.actions = d.plan.changes().count() as i64;
                    }
                }
            }
        }
        Outcome::Held(why)
    }

    async fn roll_back(&mut self, rec: &mut Reconcile, bad: &str, last_good: Option<String>, why: &str) -> Outcome {
        error!(commit = short(bad), reason = why, "deploy failed its health gate; rolling back");
        let Some(good) = last_good else {
            let msg = format!("{why}; there is no earlier good commit to roll back to: the host stays at {}", short(bad));
            self.notify_event("failed", bad, &msg);
            rec.result = "failed".into();
            return Outcome::Held(msg);
        };
        let result = match self.source.read(&good).map_err(|e| e.to_string()).and_then(|f| crate::spec::load(&f.files).map_err(|d| d.to_string())) {
            Ok(fleet) => self.apply(&good, &fleet).await.map(|_| ()).map_err(|o| format!("{o:?}")),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                rec.applied = Some(good.clone());
                self.notify_event("rolled-back", bad, &format!("{why}; rolled back to {}", short(&good)));
                self.metrics.lock().expect("metrics lock").applied_commit = Some(good.clone());
            }
            Err(e) => self.notify_event("failed", bad, &format!("{why}; the rollback to {} failed too: {e}", short(&good))),
        }
        Outcome::RolledBack
    }

    /// Watch the services a deploy started or restarted for the grace period. A newer commit
    /// cancels the wait (as Flux users ask: stop waiting once something newer exists).
    async fn health_gate(&mut self, d: &Deployment) -> Gate {
        // The services this deploy (re)started, and every service of an agent this commit changed:
        // after a daemon restart in the middle of a gate, the re-apply starts nothing, and a
        // crash-looping service must still be caught.
        let changed_here: std::collections::BTreeSet<String> = self
            .state
            .load_inventory()
            .map(|i| i.agents.into_iter().filter(|(_, r)| r.changed_commit == d.plan.commit).map(|(a, _)| a).collect())
            .unwrap_or_default();
        let watched: Vec<String> = d
            .plan
            .units
            .iter()
            .filter(|u| u.role == Role::Service && (u.actions.iter().any(|a| matches!(a, Action::Start | Action::Restart)) || changed_here.contains(&u.agent)))
            .map(|u| u.unit.clone())
            .collect();
        if watched.is_empty() || self.cfg.health_grace.is_zero() {
            return Gate::Healthy;
        }
        let Ok(sd) = Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await else { return Gate::Healthy };
        let names: Vec<&str> = watched.iter().map(String::as_str).collect();
        let restarts = |props: &std::collections::BTreeMap<String, zbus::OwnedVariant>| crate::host::systemd::prop::<u32>(props, "NRestarts").unwrap_or(0);
        let mut base = std::collections::BTreeMap::new();
        for u in &names {
            if let Ok(p) = sd.properties(u, "org.freedesktop.systemd1.Service").await {
                base.insert(u.to_string(), restarts(&p));
            }
        }
        let until = Instant::now() + self.cfg.health_grace;
        // Triggers seen while waiting are answered once, after the gate (or at once by the main
        // loop when a newer commit supersedes the wait).
        let mut deferred: Option<Trigger> = None;
        let verdict = loop {
            if Instant::now() >= until {
                break Gate::Healthy;
            }
            tokio::select! {
                t = self.triggers.recv() => {
                    if let Some(t) = t {
                        deferred = Some(t);
                        let moved = tokio::task::block_in_place(|| self.source.fetch()).is_ok() && self.source.head().ok() != self.head_seen.as_ref().map(|(h, _)| h.clone());
                        if moved && self.history.pin().ok().flatten().is_none() {
                            break Gate::Superseded;
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let Ok(st) = sd.statuses(&names).await else { continue };
            for u in &names {
                let s = st.get(*u).cloned().unwrap_or_default();
                if s.active_state == "failed" {
                    return self.after_gate(deferred, Gate::Failed(format!("{u} failed after the deploy")));
                }
                if let Ok(p) = sd.properties(u, "org.freedesktop.systemd1.Service").await {
                    let n = restarts(&p);
                    if n > base.get(*u).copied().unwrap_or(0) || s.sub_state == "auto-restart" {
                        return self.after_gate(deferred, Gate::Failed(format!("{u} is crash-looping ({n} restarts since the deploy)")));
                    }
                }
            }
        };
        self.after_gate(deferred, verdict)
    }

    fn after_gate(&self, deferred: Option<Trigger>, verdict: Gate) -> Gate {
        if let Some(t) = deferred {
            let _ = self.tx.send(t);
        }
        verdict
    }

    fn notify_event(&self, event: &str, commit: &str, message: &str) {
        let Some(url) = self.cfg.notify_url.clone() else { return };
        let body = serde_json::json!({ "event": event, "commit": commit, "host": self.cfg.host.host, "message": message, "at": now_rfc3339() });
        tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().new_agent();
            if let Err(e) = agent.post(&url).header("content-type", "application/json").send(body.to_string()) {
                warn!(error = %e, url, "notification webhook failed");
            }
        });
    }
}

enum Gate {
    Healthy,
    Failed(String),
    Superseded,
}
