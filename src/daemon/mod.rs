//! The continuous reconciler (`fleetwright daemon`): follows a branch, converges on every new
//! commit, gates new commits on the health of everything that changed since the last good one,
//! rolls back by itself, and repairs drift as soon as the manager or the unit directory says
//! something changed. Level-triggered (kube-runtime's shape): the reconciler is told *that*
//! something may have changed, never *what*; it re-reads the branch and re-observes the host
//! each time, and triggers that arrive while it runs are coalesced into one more run. Never two
//! at once.
//!
//! - `decide.rs`: every choice, as one pure function of the facts (with its decision table).
//! - `reconcile.rs`: one reconcile — gathers the facts `decide` asks for (git, parsing and the
//!   history on blocking threads), applies, gates, records, reports.
//! - `watch.rs`: the manager's signals and the unit directory's events: drift within a second.
//! - `report.rs`: what `/healthz` and `/metrics` say; `server.rs` serves them and the webhook.
//! - `history.rs`: reconciles, verdicts, the pin, the notification outbox; `notifications.rs` delivers it.
//!
//! This file: the configuration, the loop that waits for triggers, and what feeds it (the
//! watch of a local repository's refs, the poll of a remote, the resync, signals).

pub mod decide;
pub mod history;
pub mod notifications;
mod reconcile;
pub mod report;
pub mod server;
mod watch;
pub mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use crate::host::HostConfig;
use crate::host::state::StateDir;
use crate::plan::short;
use crate::source::GitSource;
use history::History;
use report::Report;

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
    /// How long the services changed since the last good commit must stay up before a new
    /// commit counts as good.
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
    /// POST a JSON event here for every verdict: a `webhook` sink beside the Fleet's `notify`.
    pub notify_url: Option<String>,
    /// At most one report of an agent's unit failing per this interval; the failures in
    /// between are folded into a summary.
    pub notify_interval: Duration,
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
    /// The manager or the unit directory showed a difference.
    Drift,
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
            Trigger::Drift => "drift",
        }
    }
    /// Whether the branch or the pin may have moved (a health gate then looks).
    fn may_move_target(self) -> bool {
        matches!(self, Trigger::Watch | Trigger::Poll | Trigger::Webhook | Trigger::Signal)
    }
}

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
    /// Used on blocking threads only (git is blocking I/O).
    source: Arc<Mutex<GitSource>>,
    state: StateDir,
    /// Used on blocking threads only (SQLite is blocking I/O).
    db: Arc<Mutex<History>>,
    report: Arc<Mutex<Report>>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
    tx: mpsc::UnboundedSender<Trigger>,
    /// Set once SIGTERM or SIGINT arrived.
    stop: tokio::sync::watch::Receiver<bool>,
    liveness: Arc<Liveness>,
    shared: Arc<watch::Shared>,
    /// A Retry trigger is scheduled: further failures do not schedule (or double) another.
    retry_pending: bool,
    backoff: Option<Duration>,
    /// The target that failed to apply, and how many times in a row.
    failing: Option<(String, u32)>,
    /// Signature checks already made, by commit (a refused head is not checked at every poll).
    signatures: HashMap<String, decide::Check>,
    /// What the last reconcile ended with, as logged: the same again is logged at debug level.
    last_logged: Option<(String, Option<String>, Option<String>)>,
    /// Wakes the notification delivery after a verdict.
    notifier: Arc<Notify>,
    /// Where notifications go: the last valid Fleet's `notify` list and `--notify-url`.
    sinks: notifications::Sinks,
}

fn jitter(d: Duration) -> Duration {
    // Up to 10% more, from the clock's low bits: enough to spread hosts; no RNG needed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0) as u64;
    d + Duration::from_millis((d.as_millis() as u64 / 10).max(1) * (nanos % 1000) / 1000)
}

impl Daemon {
    pub fn new(cfg: DaemonConfig) -> Result<Daemon, Box<dyn std::error::Error>> {
        let state = StateDir::new(&cfg.host.state_dir);
        let source = GitSource::open(&cfg.repo, cfg.branch.as_deref(), cfg.path.as_deref(), &cfg.host.layout().cache())?;
        // A damaged history is set aside and a fresh one started from what the host runs.
        let applied = state.load_inventory().ok().and_then(|i| i.applied_commit);
        let (history, recovered) = History::open_or_recover(&cfg.host.state_dir, applied.as_deref())?;
        if let Some(what) = recovered {
            error!("{what}");
        }
        let (tx, triggers) = mpsc::unbounded_channel();
        let report = Report { last_good: history.last_good()?, pinned: history.pin()?, ..Default::default() };
        // The sinks of the Fleet last read, until a commit is read again.
        let fleet_sinks: Vec<crate::spec::model::NotifySink> =
            history.get_json(notifications::FLEET_SINKS_KEY)?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        let sinks = notifications::Sinks::default();
        sinks.set(notifications::sinks_for(&fleet_sinks, cfg.notify_url.as_deref(), &cfg.repo));
        history.set_json(notifications::SINKS_KEY, Some(&serde_json::to_value(sinks.get())?))?;
        // The reporters read the grouping interval here.
        history.set_json(crate::ops::failure::INTERVAL_KEY, Some(&serde_json::Value::from(cfg.notify_interval.as_secs().max(1))))?;
        let (_, stop) = tokio::sync::watch::channel(false);
        Ok(Daemon {
            cfg,
            source: Arc::new(Mutex::new(source)),
            state,
            db: Arc::new(Mutex::new(history)),
            report: Arc::new(Mutex::new(report)),
            triggers,
            tx,
            stop,
            liveness: Arc::default(),
            shared: Arc::default(),
            retry_pending: false,
            backoff: None,
            failing: None,
            signatures: HashMap::new(),
            last_logged: None,
            notifier: Arc::new(Notify::new()),
            sinks,
        })
    }

    /// Run until SIGTERM/SIGINT. The step in progress always finishes: a signal stops the
    /// loop between reconciles (or ends a health gate's wait), so no apply is cut in half.
    pub async fn run(mut self) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::signal::unix::{SignalKind, signal};
        let _instance = self.state.lock_daemon()?;
        let pid_file = self.cfg.host.layout().daemon_pid();
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

        {
            let source = self.source.lock().expect("source lock");
            info!(
                repository = source.location,
                branch = source.branch.as_deref().unwrap_or(if source.is_remote() { "main" } else { "HEAD" }),
                path = self.cfg.path.as_deref().unwrap_or("/"),
                interval = %humantime::format_duration(self.cfg.interval),
                resync = %humantime::format_duration(self.cfg.resync),
                health_grace = %humantime::format_duration(self.cfg.health_grace),
                mode = if source.is_remote() { "remote: polled" } else { "local: watched" },
                state_dir = %self.cfg.host.state_dir.display(),
                version = env!("CARGO_PKG_VERSION"),
                "fleetwright daemon starting"
            );
        }
        let _repo_watch = self.watch_local()?;
        self.spawn_timers();
        watch::spawn(self.cfg.host.clone(), self.report.clone(), self.tx.clone(), self.shared.clone());
        notifications::spawn(self.sinks.clone(), self.cfg.host.state_dir.clone(), self.cfg.host.host.clone(), self.notifier.clone(), self.report.clone());
        if let Some(addr) = self.cfg.listen {
            let cfg =
                server::ServerConfig { addr, listen_any: self.cfg.listen_any, limits: server::Limits::default(), secret: self.cfg.webhook_secret.clone() };
            let addr = server::spawn(cfg, self.tx.clone(), self.report.clone()).await?;
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
            // Coalesce a burst: everything queued now is served by this one run (named after
            // the most telling trigger).
            let mut trigger = trigger;
            while let Ok(t) = self.triggers.try_recv() {
                if t == Trigger::Retry {
                    self.retry_pending = false;
                }
                if matches!(trigger, Trigger::Resync | Trigger::Poll | Trigger::Drift) {
                    trigger = t;
                }
            }
            if trigger == Trigger::Retry {
                self.retry_pending = false;
            }
            let outcome = self.reconcile(trigger).await;
            if outcome.retry {
                if !self.retry_pending {
                    let wait = decide::backoff(self.backoff);
                    self.backoff = Some(wait);
                    warn!(retry_in = ?wait, "retrying after a transient failure");
                    self.retry_pending = true;
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.send(Trigger::Retry);
                    });
                }
            } else {
                self.backoff = None;
            }
            if outcome.rerun {
                let _ = self.tx.send(Trigger::Watch);
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
            // A reconcile of a big fleet allocates (and parses on several threads, each with
            // its own malloc arena): give what it freed back, so an idle daemon stays small.
            // (Not waited for: the history's cache is given back at the next one.)
            if let Ok(db) = self.db.try_lock() {
                db.release_memory();
            }
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
        let m = self.report.lock().expect("report lock");
        format!("applied {} (last good {})", m.applied_commit.as_deref().map(short).unwrap_or("nothing"), m.last_good.as_deref().map(short).unwrap_or("none"))
    }

    /// Watch a local repository's refs: a commit triggers a reconcile at once. Only the refs:
    /// `refs/` (recursive), and `HEAD` and `packed-refs` in the git directory (not recursive).
    /// Objects are never watched: a push into the repository makes and removes quarantine
    /// directories under `objects/`, which is nothing to react to.
    fn watch_local(&self) -> Result<Option<notify::RecommendedWatcher>, Box<dyn std::error::Error>> {
        use notify::Watcher;
        let source = self.source.lock().expect("source lock");
        if source.is_remote() {
            return Ok(None);
        }
        let tx = self.tx.clone();
        let git_dir = source.git_dir();
        let dir = git_dir.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && moves_a_ref(&ev, &dir)
            {
                let _ = tx.send(Trigger::Watch);
            }
        })?;
        w.watch(&git_dir, notify::RecursiveMode::NonRecursive)?;
        w.watch(&git_dir.join("refs"), notify::RecursiveMode::Recursive)?;
        Ok(Some(w))
    }

    fn spawn_timers(&self) {
        if self.source.lock().expect("source lock").is_remote() {
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
}

/// Whether a file system event in the git directory `dir` is a ref update: refs/…,
/// packed-refs, HEAD. Not git's `<ref>.lock` files: a ref is written to one and then renamed
/// over the ref, and only the rename moves it (a reconcile woken by the lock would read the old
/// head). A rename is reported three times (from, to, and both): `both` repeats the other two,
/// so one update wakes one reconcile, not a second that finds nothing to do.
fn moves_a_ref(ev: &notify::Event, dir: &std::path::Path) -> bool {
    use notify::EventKind;
    use notify::event::{ModifyKind, RenameMode};
    if matches!(ev.kind, EventKind::Access(_) | EventKind::Modify(ModifyKind::Name(RenameMode::Both))) {
        return false;
    }
    ev.paths.iter().any(|p| {
        let Ok(rel) = p.strip_prefix(dir) else { return false };
        let s = rel.to_string_lossy();
        !s.ends_with(".lock") && (s.starts_with("refs/") || s == "packed-refs" || s == "HEAD")
    })
}

#[cfg(test)]
mod ref_watch_tests {
    use notify::event::{AccessKind, CreateKind, DataChange, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    use super::moves_a_ref;

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(std::path::PathBuf::from(format!("/repo/.git/{p}")));
        }
        e
    }

    #[test]
    fn one_ref_update_is_one_wake() {
        let dir = std::path::Path::new("/repo/.git");
        // What inotify reports for `git commit` (or git2's reference update): the lock made and
        // written, then renamed over the ref (from, to, both).
        let commit = [
            ev(EventKind::Create(CreateKind::File), &["refs/heads/main.lock"]),
            ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["refs/heads/main.lock"]),
            ev(EventKind::Access(AccessKind::Close(notify::event::AccessMode::Write)), &["refs/heads/main.lock"]),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["refs/heads/main.lock"]),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["refs/heads/main"]),
            ev(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["refs/heads/main.lock", "refs/heads/main"]),
        ];
        assert_eq!(commit.iter().filter(|e| moves_a_ref(e, dir)).count(), 1);
        // A ref written in place, packed refs, HEAD: each wakes; objects and logs never.
        assert!(moves_a_ref(&ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["refs/heads/main"]), dir));
        assert!(moves_a_ref(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["packed-refs"]), dir));
        assert!(moves_a_ref(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["HEAD"]), dir));
        assert!(!moves_a_ref(&ev(EventKind::Create(CreateKind::File), &["objects/ab/cdef"]), dir));
        assert!(!moves_a_ref(&ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["logs/HEAD"]), dir));
        // A ref deleted (a branch removed) wakes too.
        assert!(moves_a_ref(&ev(EventKind::Remove(notify::event::RemoveKind::File), &["refs/heads/main"]), dir));
    }

    /// The same with the kernel's own events: a ref written to its lock and renamed over it, as
    /// git does, watched as the daemon watches a repository.
    #[test]
    fn a_real_ref_update_is_one_wake() {
        use notify::Watcher as _;
        let tmp = tempfile::tempdir().unwrap();
        let git = tmp.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<Event>| {
            if let Ok(ev) = ev {
                let _ = tx.send(ev);
            }
        })
        .unwrap();
        w.watch(&git, notify::RecursiveMode::NonRecursive).unwrap();
        w.watch(&git.join("refs"), notify::RecursiveMode::Recursive).unwrap();
        std::fs::write(git.join("refs/heads/main.lock"), "0123456789abcdef0123456789abcdef01234567\n").unwrap();
        std::fs::rename(git.join("refs/heads/main.lock"), git.join("refs/heads/main")).unwrap();
        // Every event up to the rename's last report (`both`, which inotify gives with `to`).
        let mut seen = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !seen.iter().any(|e: &Event| e.kind == EventKind::Modify(ModifyKind::Name(RenameMode::Both))) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            seen.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("no rename reported: {seen:?}")));
        }
        assert_eq!(seen.iter().filter(|e| moves_a_ref(e, &git)).count(), 1, "{seen:?}");
    }
}
