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

use crate::host::apply::{Deployment, deploy};
use crate::host::state::StateDir;
use crate::host::systemd::Systemd;
use crate::host::{HostConfig, now_rfc3339};
use crate::plan::{Action, FileOp, PlanOptions, short};
use crate::render::Role;
use crate::source::{FetchError, GitSource};
use history::{History, Reconcile, Verdict};

#[derive(Clone)]
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
    /// Serve the webhook, /healthz and /metrics here (loopback unless `listen_any`).
    pub listen: Option<SocketAddr>,
    /// Allow a `listen` address that is not loopback.
    pub listen_any: bool,
    /// The webhook's HMAC key, at least `webhook::MIN_SECRET_BYTES` long
    /// (`webhook::secret_from_file`).
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
    /// Every reconcile's duration.
    pub durations: Histogram,
}

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

/// How one reconcile ended.
#[derive(Debug)]
enum Outcome {
    /// Converged (changed or not) to this commit.
    Converged {
        changed: bool,
    },
    /// A transient failure: retry with backoff.
    Transient(String),
    /// Applying the commit failed part-way on a call the manager refused (a fault of the host,
    /// a file that cannot be written included, is `Transient`): retried like a transient
    /// failure, but counted against the commit.
    ApplyFailed(String),
    /// Held at the last good state (bad/invalid/refused head); wait for a new commit.
    Held(String),
    RolledBack,
    /// The rollback itself failed: the host may still run the bad commit; retried with backoff
    /// (the next run holds the bad head and re-applies the last good commit).
    RollbackFailed(String),
    Superseded,
    /// SIGTERM arrived while the health gate waited: no verdict yet.
    Interrupted,
}

impl Outcome {
    fn retries(&self) -> bool {
        matches!(self, Outcome::Transient(_) | Outcome::ApplyFailed(_) | Outcome::RollbackFailed(_))
    }
}

/// How many reconciles in a row may fail to apply the same new commit before it is marked bad
/// and the host rolled back: a failure that does not go away (a call systemd refuses) must not
/// leave the host half-applied, retrying forever. Faults of the host never count here.
const MAX_APPLY_ATTEMPTS: u32 = 5;

/// A fetch that has not finished after this long stops the watchdog pings, so that systemd
/// restarts a daemon whose fetch hangs (libgit2's own timeouts should end it long before).
const FETCH_STALL: Duration = Duration::from_secs(300);

/// What the watchdog looks at: whether the loop is stuck in a fetch.
#[derive(Default)]
struct Liveness {
    fetching_since: Mutex<Option<Instant>>,
}

impl Liveness {
    fn alive(&self) -> bool {
        self.fetching_since.lock().expect("liveness lock").is_none_or(|t| t.elapsed() < FETCH_STALL)
    }
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
    /// Set once SIGTERM or SIGINT arrived.
    stop: tokio::sync::watch::Receiver<bool>,
    liveness: Arc<Liveness>,
    /// A Retry trigger is scheduled: further failures do not schedule (or double) another.
    retry_pending: bool,
    backoff: Duration,
    /// The new commit that failed to apply, and how many times in a row.
    failing: Option<(String, u32)>,
    /// The last notification sent (event, commit), so a held head is announced once.
    notified: Option<(String, String)>,
}

fn jitter(d: Duration) -> Duration {
    // Up to 10% more, from the clock's low bits: enough to spread hosts; no RNG needed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0) as u64;
    d + Duration::from_millis((d.as_millis() as u64 / 10).max(1) * (nanos % 1000) / 1000)
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Daemon {
    pub fn new(cfg: DaemonConfig) -> Result<Daemon, Box<dyn std::error::Error>> {
        let state = StateDir::new(&cfg.host.state_dir);
        let source = GitSource::open(&cfg.repo, cfg.branch.as_deref(), cfg.path.as_deref(), &cfg.host.state_dir.join("cache"))?;
        // A damaged history is set aside and a fresh one started from what the host runs.
        let applied = state.load_inventory().ok().and_then(|i| i.applied_commit);
        let (history, recovered) = History::open_or_recover(&cfg.host.state_dir, applied.as_deref())?;
        if let Some(what) = recovered {
            error!("{what}");
        }
        let (tx, triggers) = mpsc::unbounded_channel();
        let metrics = Arc::new(Mutex::new(Metrics { last_good: history.last_good()?, ..Default::default() }));
        let (_, stop) = tokio::sync::watch::channel(false);
        Ok(Daemon {
            cfg,
            source,
            state,
            history,
            metrics,
            triggers,
            tx,
            head_seen: None,
            stop,
            liveness: Arc::default(),
            retry_pending: false,
            backoff: MIN_BACKOFF,
            failing: None,
            notified: None,
        })
    }

    /// Run until SIGTERM/SIGINT. The step in progress always finishes: a signal stops the
    /// loop between reconciles (or ends a health gate's wait), so no apply is cut in half.
    pub async fn run(mut self) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::signal::unix::{SignalKind, signal};
        let _instance = self.state.lock_daemon()?;
        let pid_file = self.cfg.host.state_dir.join("daemon.pid");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        self.stop = stop;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping once the step in progress is done"),
                _ = int.recv() => info!("SIGINT: stopping once the step in progress is done"),
            }
            let _ = stop_tx.send(true);
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(Trigger::Signal).is_err() {
                    break;
                }
            }
        });

        let _watcher = self.watch_local()?;
        self.spawn_timers();
        if let Some(addr) = self.cfg.listen {
            let cfg =
                server::ServerConfig { addr, listen_any: self.cfg.listen_any, limits: server::Limits::default(), secret: self.cfg.webhook_secret.clone() };
            let addr = server::spawn(cfg, self.tx.clone(), self.metrics.clone()).await?;
            info!(%addr, "serving /healthz, /metrics and the webhook");
        }
        self.spawn_watchdog();
        // Ready once set up: the first reconcile (a fetch, a whole fleet) may take longer than
        // a start timeout, and what it does is reported in STATUS= and the history.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("set up; reconciling")]);
        let _ = self.tx.send(Trigger::Startup);

        let mut stop = self.stop.clone();
        loop {
            let trigger = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                t = self.triggers.recv() => match t { Some(t) => t, None => break },
            };
            // Coalesce a burst: everything queued now is served by this one run.
            let mut trigger = trigger;
            while let Ok(t) = self.triggers.try_recv() {
                if t == Trigger::Retry {
                    self.retry_pending = false;
                }
                if trigger == Trigger::Resync || trigger == Trigger::Poll {
                    trigger = t;
                }
            }
            if trigger == Trigger::Retry {
                self.retry_pending = false;
            }
            let outcome = self.reconcile(trigger).await;
            if outcome.retries() {
                if !self.retry_pending {
                    warn!(retry_in = ?self.backoff, "retrying after a transient failure");
                    self.retry_pending = true;
                    let tx = self.tx.clone();
                    let wait = self.backoff;
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.send(Trigger::Retry);
                    });
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            } else {
                self.backoff = MIN_BACKOFF;
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
            // A reconcile of a big fleet allocates (and parses on several threads, each with
            // its own malloc arena): give what it freed back, so an idle daemon stays small.
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
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
        let git_dir = self.source.git_dir();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                // Ref updates: refs/…, packed-refs, HEAD. Not git's `<ref>.lock` files: a ref is
                // written to one and then renamed over the ref, and only the rename moves it
                // (a reconcile woken by the lock would read the old head).
                // Nor the reflogs under logs/, written beside the ref.
                let relevant = ev.paths.iter().any(|p| {
                    let Ok(rel) = p.strip_prefix(&git_dir) else { return false };
                    let s = rel.to_string_lossy();
                    !s.ends_with(".lock") && (s.starts_with("refs/") || s == "packed-refs" || s == "HEAD")
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

    /// WATCHDOG=1 at half the watchdog interval, as long as the loop is not stuck: a fetch
    /// that hangs past FETCH_STALL stops the pings and systemd restarts the daemon. An apply
    /// never does (its D-Bus calls have their own timeouts): it is never cut by the watchdog.
    fn spawn_watchdog(&self) {
        if let Some(timeout) = sd_notify::watchdog_enabled() {
            let every = timeout / 2;
            let liveness = self.liveness.clone();
            tokio::spawn(async move {
                loop {
                    if liveness.alive() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    } else {
                        warn!("a fetch has not finished in {FETCH_STALL:?}; no watchdog ping");
                    }
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
            Outcome::Transient(e) | Outcome::ApplyFailed(e) => {
                rec.error = Some(e.clone());
                "error".into()
            }
            Outcome::Held(why) => {
                rec.error.get_or_insert(why.clone());
                if rec.result.is_empty() { "held".into() } else { rec.result.clone() }
            }
            Outcome::RolledBack => "rolled-back".into(),
            Outcome::RollbackFailed(e) => {
                rec.error = Some(e.clone());
                "rollback-failed".into()
            }
            Outcome::Superseded => "superseded".into(),
            Outcome::Interrupted => "interrupted".into(),
        };
        if let Err(e) = self.history.record(&rec) {
            error!(error = %e, "cannot record the reconcile");
        }
        let last_good = self.history.last_good();
        let mut m = self.metrics.lock().expect("metrics lock");
        *m.reconciles.entry(rec.result.clone()).or_default() += 1;
        m.last_duration = rec.duration_ms as f64 / 1000.0;
        let secs = m.last_duration;
        m.durations.observe(secs);
        match outcome {
            Outcome::Converged { .. } => {
                m.last_success_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                m.healthy = true;
            }
            Outcome::Superseded | Outcome::Interrupted => m.healthy = true,
            _ => {
                m.failures += 1;
                m.healthy = false;
            }
        }
        if matches!(outcome, Outcome::RolledBack) {
            m.rollbacks += 1;
        }
        if let Ok(good) = last_good {
            m.last_good = good;
        }
        info!(
            trigger = rec.trigger,
            result = rec.result,
            head = rec.head.as_deref().map(short),
            applied = rec.applied.as_deref().map(short),
            ms = rec.duration_ms,
            error = rec.error.as_deref(),
            "reconciled"
        );
        outcome
    }

    /// Fetch the branch (a no-op for a local repository), visible to the watchdog meanwhile.
    fn fetch(&self) -> Result<(), FetchError> {
        *self.liveness.fetching_since.lock().expect("liveness lock") = Some(Instant::now());
        let r = tokio::task::block_in_place(|| self.source.fetch());
        *self.liveness.fetching_since.lock().expect("liveness lock") = None;
        r
    }

    async fn reconcile_inner(&mut self, rec: &mut Reconcile) -> Outcome {
        let transient = |e: &dyn std::fmt::Display| Outcome::Transient(e.to_string());
        // 1. What should run: the pin, else the branch head. A history that cannot be read is
        //    transient: a pin or a verdict must never be silently ignored.
        if let Err(e) = self.fetch() {
            return transient(&e);
        }
        let head = match self.source.head() {
            Ok(h) => h,
            Err(e) => return transient(&e),
        };
        if self.head_seen.as_ref().is_none_or(|(h, _)| *h != head) {
            self.head_seen = Some((head.clone(), Instant::now()));
        }
        let (pin, last_good) = match (self.history.pin(), self.history.last_good()) {
            (Ok(p), Ok(g)) => (p, g),
            (Err(e), _) | (_, Err(e)) => return transient(&e),
        };
        let target = pin.clone().unwrap_or_else(|| head.clone());
        rec.head = Some(target.clone());

        // 2. Is it allowed? Marked bad, force-pushed, unsigned: hold the last good state.
        let mut hold: Option<String> = None;
        if pin.is_none() {
            match self.history.verdict(&target) {
                Ok(Some((Verdict::Bad, why))) => {
                    hold = Some(format!("commit {} is marked bad ({why}); holding the last good state until a newer commit", short(&target)))
                }
                Ok(_) => {}
                Err(e) => return transient(&e),
            }
        }
        if hold.is_none() && pin.is_none() && !self.cfg.allow_force_push {
            let applied = match self.state.load_inventory() {
                Ok(i) => i.applied_commit,
                Err(e) => return transient(&e),
            };
            if let Some(applied) = applied.filter(|a| *a != target) {
                let descends = match self.source.descends_from(&target, &applied) {
                    Ok(d) => d,
                    // The repository could not be read: no evidence of a force-push.
                    Err(e) => return transient(&e),
                };
                if descends != Some(true) {
                    hold = Some(format!(
                        "the branch no longer contains the applied commit {} (force-push?); refusing {} — pass --allow-force-push to follow it",
                        short(&applied),
                        short(&target)
                    ));
                }
            }
        }
        if hold.is_none()
            && let Some(signers) = &self.cfg.allowed_signers
        {
            match self.source.verify_ssh_signature(&target, signers) {
                Ok(_) => {}
                // The check could not run (a file, ssh-keygen, descriptors): try again.
                Err(e) if e.is_transient() => return transient(&e),
                Err(e) => hold = Some(format!("{e}; only commits signed by a key in {} are applied", signers.display())),
            }
        }
        if let Some(why) = hold {
            rec.result = "refused".into();
            warn!("{why}");
            self.notify_once("refused", &target, &why);
            return self.hold(rec, why, last_good).await;
        }

        // The good commit the host already runs: when nothing has drifted, that is known
        // from the inventory and the files on disk, without reading the commit again.
        if last_good.as_deref() == Some(target.as_str()) && self.unchanged(&target).await {
            rec.applied = Some(target.clone());
            let mut m = self.metrics.lock().expect("metrics lock");
            m.drift_units = 0;
            m.applied_commit = Some(target.clone());
            return Outcome::Converged { changed: false };
        }

        // 3. Read and validate. An invalid commit is rejected whole; the last good one keeps
        //    running (and is still re-applied, so drift keeps being repaired).
        let files = match self.source.read(&target) {
            Ok(f) => f,
            // A commit that could not be read (I/O, out of file descriptors) is retried, never
            // held off: only what it contains is a verdict on it.
            Err(e) if e.is_transient() => return transient(&e),
            Err(e) => return self.hold(rec, e.to_string(), last_good).await,
        };
        let fleet = match crate::spec::load(&files.files) {
            Ok(f) => f,
            Err(diags) => {
                let why = format!("commit {} is invalid: {}", short(&target), diags.0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "));
                if let Err(e) = self.history.mark(&target, Verdict::Bad, "invalid spec", &now_rfc3339()) {
                    return transient(&e);
                }
                rec.result = "invalid".into();
                warn!("{why}");
                self.notify_once("failed", &target, &why);
                return self.hold(rec, why, last_good).await;
            }
        };

        // 4. Apply. A new commit that keeps failing to apply is, after a few tries, bad.
        let is_new = last_good.as_deref() != Some(target.as_str());
        let d = match self.converge(rec, &target, &fleet).await {
            Ok(d) => {
                self.failing = None;
                d
            }
            Err(Outcome::ApplyFailed(e)) if is_new && pin.is_none() => {
                let tries = match &mut self.failing {
                    Some((c, n)) if *c == target => {
                        *n += 1;
                        *n
                    }
                    other => {
                        *other = Some((target.clone(), 1));
                        1
                    }
                };
                if tries < MAX_APPLY_ATTEMPTS {
                    return Outcome::ApplyFailed(format!("{e} (attempt {tries} of {MAX_APPLY_ATTEMPTS} for {})", short(&target)));
                }
                self.failing = None;
                let why = format!("it failed to apply {MAX_APPLY_ATTEMPTS} times in a row: {e}");
                if let Err(e) = self.history.mark(&target, Verdict::Bad, &why, &now_rfc3339()) {
                    return transient(&e);
                }
                rec.error = Some(why.clone());
                return self.roll_back(rec, &target, last_good, &why).await;
            }
            Err(o) => return o,
        };
        let changed = d.plan.has_changes();

        // 5. Health gate: a new commit counts as good once what it changed stayed up for the
        //    grace period; a failed job or a crash loop of its own units rolls it back. A unit
        //    it did not change (drift repair of an old crash) is reported, never blamed on it.
        let ours = self.changed_by(&d);
        let (mine, others): (Vec<_>, Vec<_>) = d.report.failures.iter().partition(|f| ours.contains(&f.unit));
        if !others.is_empty() {
            let why: Vec<String> = others.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
            warn!(failures = ?why, "units this commit did not change are failing");
            rec.error = Some(why.join("; "));
        }
        if is_new && pin.is_none() {
            let mut failed: Vec<String> = mine.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
            if failed.is_empty() {
                match self.health_gate(&d, &ours).await {
                    Gate::Healthy => {}
                    Gate::Failed(why) => failed.push(why),
                    Gate::Superseded => return Outcome::Superseded,
                    Gate::Interrupted => return Outcome::Interrupted,
                    Gate::Unknown(e) => return Outcome::Transient(format!("cannot watch the deploy's health: {e}")),
                }
            }
            if !failed.is_empty() {
                let why = failed.join("; ");
                if let Err(e) = self.history.mark(&target, Verdict::Bad, &why, &now_rfc3339()) {
                    return transient(&e);
                }
                rec.error = Some(why.clone());
                return self.roll_back(rec, &target, last_good, &why).await;
            }
            if let Err(e) = self.history.mark(&target, Verdict::Good, "healthy", &now_rfc3339()) {
                return transient(&e);
            }
            if changed {
                self.notify_event("deployed", &target, &format!("{} units changed", d.plan.changes().count()));
            }
        } else if !mine.is_empty() {
            let why: Vec<String> = mine.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
            rec.error = Some(why.join("; "));
        }
        Outcome::Converged { changed }
    }

    /// The units a deploy changed: every unit of an agent whose last change is this commit,
    /// and every unit whose file this plan wrote or which it restarted or reloaded.
    fn changed_by(&self, d: &Deployment) -> std::collections::BTreeSet<String> {
        let agents: std::collections::BTreeSet<String> = self
            .state
            .load_inventory()
            .map(|i| i.agents.into_iter().filter(|(_, r)| r.changed_commit == d.plan.commit).map(|(a, _)| a).collect())
            .unwrap_or_default();
        d.plan
            .units
            .iter()
            .filter(|u| agents.contains(&u.agent) || u.file != FileOp::Keep || u.actions.iter().any(|a| matches!(a, Action::Restart | Action::Reload)))
            .map(|u| u.unit.clone())
            .collect()
    }

    async fn apply(&self, commit: &str, fleet: &crate::spec::Fleet) -> Result<Deployment, Outcome> {
        let sd = Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await.map_err(|e| Outcome::Transient(e.to_string()))?;
        use crate::host::apply::ApplyError;
        let key = crate::host::apply::render_key(&self.cfg.host, commit, self.cfg.path.as_deref());
        deploy(&sd, &self.cfg.host, &self.state, commit, &key, fleet, PlanOptions { allow_empty: self.cfg.allow_empty }).await.map_err(|e| match e {
            ApplyError::Refused(why) => Outcome::Held(why.join("; ")),
            // A fault of the host (the bus or the manager gone, a disk full, the state directory
            // out of reach, another apply running): nothing to do with the commit; retried with
            // backoff, never counted against it (host::fault).
            e if e.is_transient() => Outcome::Transient(format!("a fault of the host, not of commit {}: {e}", short(commit))),
            e => Outcome::ApplyFailed(e.to_string()),
        })
    }

    /// `host::apply::deploy_unchanged` for `commit`: whether the host is converged to it.
    async fn unchanged(&self, commit: &str) -> bool {
        let Ok(sd) = Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await else { return false };
        let key = crate::host::apply::render_key(&self.cfg.host, commit, self.cfg.path.as_deref());
        matches!(
            crate::host::apply::deploy_unchanged(&sd, &self.cfg.host, &self.state, &key, PlanOptions { allow_empty: self.cfg.allow_empty }).await,
            Ok(Some(_))
        )
    }

    /// Apply `commit` and record what it did (whichever commit it is: the head, the pin, the
    /// last good one while the head is held): the commit applied, its actions, the drift it
    /// repaired.
    async fn converge(&mut self, rec: &mut Reconcile, commit: &str, fleet: &crate::spec::Fleet) -> Result<Deployment, Outcome> {
        let d = self.apply(commit, fleet).await?;
        rec.applied = Some(commit.to_string());
        rec.actions = d.plan.changes().count() as i64;
        let drift: Vec<String> = d.plan.drift().map(|(u, w)| format!("{u}: {w}")).collect();
        if !drift.is_empty() {
            warn!(drift = ?drift, "drift repaired");
            rec.drift = Some(drift.join("; "));
        }
        let mut m = self.metrics.lock().expect("metrics lock");
        m.drift_units = drift.len() as u64;
        m.applied_commit = Some(commit.to_string());
        if let Some((h, at)) = &self.head_seen
            && h == commit
            && d.plan.has_changes()
        {
            let secs = at.elapsed().as_secs_f64();
            m.commit_to_converged = Some(secs);
            info!(commit = short(commit), seconds = secs, "commit converged");
        }
        Ok(d)
    }

    /// Keep (re-)converging the last good commit while the head cannot be applied; drift is
    /// repaired and reported as on any run, and a failure to apply it is retried.
    async fn hold(&mut self, rec: &mut Reconcile, why: String, last_good: Option<String>) -> Outcome {
        rec.error = Some(why.clone());
        if let Some(good) = last_good {
            let fleet = match self.source.read(&good) {
                Ok(files) => crate::spec::load(&files.files).map_err(|d| d.to_string()),
                Err(e) if e.is_transient() => {
                    return Outcome::Transient(format!("{why}; reading the last good commit {} to re-apply it failed: {e}", short(&good)));
                }
                Err(e) => Err(e.to_string()),
            };
            match fleet {
                Ok(fleet) => match self.converge(rec, &good, &fleet).await {
                    Ok(d) if !d.report.failures.is_empty() => {
                        let failed: Vec<String> = d.report.failures.iter().map(|f| format!("{}: {}", f.unit, f.what)).collect();
                        rec.error = Some(format!("{why}; and at {}: {}", short(&good), failed.join("; ")));
                    }
                    Ok(_) => {}
                    Err(Outcome::Transient(e) | Outcome::ApplyFailed(e)) => {
                        return Outcome::Transient(format!("{why}; re-applying the last good commit {} failed: {e}", short(&good)));
                    }
                    Err(_) => {}
                },
                Err(e) => warn!(error = %e, commit = short(&good), "the last good commit cannot be read"),
            }
        }
        Outcome::Held(why)
    }

    async fn roll_back(&mut self, rec: &mut Reconcile, bad: &str, last_good: Option<String>, why: &str) -> Outcome {
        error!(commit = short(bad), reason = why, "the deploy failed; rolling back");
        let Some(good) = last_good else {
            let msg = format!("{why}; there is no earlier good commit to roll back to: the host stays at {}", short(bad));
            self.notify_event("failed", bad, &msg);
            rec.result = "failed".into();
            return Outcome::Held(msg);
        };
        let fleet = match self.source.read(&good) {
            Ok(f) => crate::spec::load(&f.files).map_err(|d| d.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let result = match fleet {
            Ok(fleet) => self.converge(rec, &good, &fleet).await.map(|_| ()).map_err(|o| match o {
                Outcome::Transient(e) | Outcome::ApplyFailed(e) | Outcome::Held(e) => e,
                other => format!("{other:?}"),
            }),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.notify_event("rolled-back", bad, &format!("{why}; rolled back to {}", short(&good)));
                Outcome::RolledBack
            }
            Err(e) => {
                let msg = format!("{why}; the rollback to {} failed too: {e}", short(&good));
                self.notify_event("failed", bad, &msg);
                Outcome::RollbackFailed(msg)
            }
        }
    }

    /// Watch the services this deploy changed for the grace period. A newer commit cancels
    /// the wait (as Flux users ask: stop waiting once something newer exists), and so does a
    /// SIGTERM (the commit then has no verdict and is watched again after a restart).
    async fn health_gate(&mut self, d: &Deployment, ours: &std::collections::BTreeSet<String>) -> Gate {
        // Every service of what this commit changed: after a daemon restart in the middle of a
        // gate, the re-apply starts nothing, and a crash-looping service must still be caught.
        let watched: Vec<String> = d.plan.units.iter().filter(|u| u.role == Role::Service && ours.contains(&u.unit)).map(|u| u.unit.clone()).collect();
        if watched.is_empty() || self.cfg.health_grace.is_zero() {
            return Gate::Healthy;
        }
        let sd = match Systemd::connect(self.cfg.host.scope, self.cfg.host.bus_address.as_deref()).await {
            Ok(sd) => sd,
            Err(e) => return Gate::Unknown(e.to_string()),
        };
        let names: Vec<&str> = watched.iter().map(String::as_str).collect();
        let base = match crate::host::apply::restart_counts(&sd, &names).await {
            Ok(b) => b,
            Err(e) => return Gate::Unknown(e.to_string()),
        };
        let until = Instant::now() + self.cfg.health_grace;
        let mut stop = self.stop.clone();
        // Triggers seen while waiting are answered once, after the gate (or at once by the main
        // loop when a newer commit supersedes the wait).
        let mut deferred: Option<Trigger> = None;
        let verdict = loop {
            if Instant::now() >= until {
                break Gate::Healthy;
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break Gate::Interrupted,
                t = self.triggers.recv() => {
                    if let Some(t) = t {
                        deferred = Some(t);
                        let moved = self.fetch().is_ok() && self.source.head().ok() != self.head_seen.as_ref().map(|(h, _)| h.clone());
                        if moved && matches!(self.history.pin(), Ok(None)) {
                            break Gate::Superseded;
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if let Ok(Some((_, why))) = crate::host::apply::unhealthy(&sd, &names, &base).await {
                return self.after_gate(deferred, Gate::Failed(why));
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

    /// `notify_event`, once per (event, commit): a held head is announced when it is first
    /// refused, not at every resync.
    fn notify_once(&mut self, event: &str, commit: &str, message: &str) {
        let key = (event.to_string(), commit.to_string());
        if self.notified.as_ref() != Some(&key) {
            self.notify_event(event, commit, message);
            self.notified = Some(key);
        }
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
    Interrupted,
    /// The manager could not be asked: no verdict.
    Unknown(String),
}
