//! Drift within a second, and the live state of every managed unit, without polling.
//!
//! Two sources of events: the manager's D-Bus signals (`PropertiesChanged` of every unit while
//! subscribed, `UnitFilesChanged`, `Reloading`), on a connection of their own that does
//! nothing but read them; and an inotify watch of the unit directory, its drop-in directories
//! (`<unit>.d/`) and link directories (`*.wants/`) included. An event only marks a unit or a
//! file dirty: after a short debounce the dirty ones are looked at (states read in one call,
//! files hashed against the inventory), and only a real difference — a unit that should run
//! and does not, a file that is not what fleetwright wrote, a link gone, a drop-in that appeared
//! or went — wakes the reconciler (`Trigger::Drift`), which re-observes and repairs (or, for a
//! drop-in, reports: fleetwright never removes what it did not write).
//!
//! The reconciler's own work causes events too (its writes, its restarts): while a reconcile
//! runs they are only collected, and looked at once it is done, against the new inventory —
//! by then they show no difference, so a deploy wakes nothing. A unit that keeps drifting (a
//! service that dies as soon as it is started) is repaired at once three times, then after
//! 1 s, 2 s, 4 s … (at most 5 minutes) while it keeps coming back within a minute (`flap_wait`).
//!
//! Idle, nothing runs: no timer, no polling; the tasks wait on their channels.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

use super::Trigger;
use super::report::{LiveUnit, Report, state_word};
use crate::host::HostConfig;
use crate::host::state::StateDir;
use crate::host::systemd::{ManagerSignal, Systemd};
use crate::inventory::Inventory;
use crate::types::Role;
use sha2::{Digest, Sha256};

/// What the reconciler and the watcher share.
pub struct Shared {
    /// A reconcile is running: events are collected, not acted on.
    pub busy: AtomicBool,
    /// A reconcile has ended.
    pub done: Notify,
    /// Bumped at every signal about a unit (the health gate waits on it).
    pub changes: watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared { busy: AtomicBool::new(false), done: Notify::new(), changes: watch::channel(0).0 }
    }
}

/// How long a burst of events is collected before it is looked at.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// A unit that drifts again within this long of its last repair is flapping.
const FLAP_WINDOW: Duration = Duration::from_secs(60);

/// How long the repair of a unit that drifted `streak` times in a row (each within
/// `FLAP_WINDOW` of the one before) waits: the first three at once, then 1 s, 2 s, 4 s, … at
/// most 5 minutes. A service that dies as soon as it is started is not restarted in a loop.
pub fn flap_wait(streak: u32) -> Duration {
    const AT_ONCE: u32 = 3;
    const MAX: Duration = Duration::from_secs(300);
    if streak < AT_ONCE { Duration::ZERO } else { Duration::from_secs(1).saturating_mul(2u32.saturating_pow((streak - AT_ONCE).min(20))).min(MAX) }
}

/// Start watching. Runs for as long as the runtime does.
pub fn spawn(cfg: HostConfig, report: Arc<Mutex<Report>>, tx: mpsc::UnboundedSender<Trigger>, shared: Arc<Shared>) {
    let (sig_tx, sig_rx) = mpsc::unbounded_channel::<ManagerSignal>();
    tokio::spawn(signals(cfg.clone(), report.clone(), sig_tx, shared.clone()));
    let (evaluator, files_rx) = Evaluator::new(cfg, report, tx, shared);
    tokio::spawn(run(evaluator, files_rx, sig_rx));
}

/// Read the manager's signals for ever: reconnect (with backoff) when the bus goes away.
async fn signals(cfg: HostConfig, report: Arc<Mutex<Report>>, out: mpsc::UnboundedSender<ManagerSignal>, shared: Arc<Shared>) {
    let mut wait: Option<Duration> = None;
    loop {
        let subscribed = async {
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await?;
            let stream = sd.signals().await?;
            Ok::<_, crate::host::systemd::SystemdError>((sd, stream))
        }
        .await;
        match subscribed {
            Ok((_sd, stream)) => {
                report.lock().expect("report lock").watching = true;
                if wait.is_some() {
                    info!("receiving the manager's signals again");
                }
                wait = None;
                // Whatever happened while not watching.
                let _ = out.send(ManagerSignal::Everything);
                let mut stream = std::pin::pin!(stream);
                while let Some(sig) = stream.next().await {
                    if matches!(sig, ManagerSignal::Unit(_)) {
                        shared.changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    if out.send(sig).is_err() {
                        return;
                    }
                }
                report.lock().expect("report lock").watching = false;
                warn!("the manager's signals stopped (the bus went away?); drift is seen at the next resync until they are back");
            }
            Err(e) => {
                report.lock().expect("report lock").watching = false;
                if wait.is_none() {
                    warn!(error = %e, "cannot subscribe to the manager's signals; drift is seen at the next resync until this works");
                }
            }
        }
        let w = super::decide::backoff(wait);
        wait = Some(w);
        tokio::time::sleep(w).await;
    }
}

/// What the inventory says of one unit. An idle daemon holds one for every unit of the fleet:
/// the agent's name is shared (with its other units, and the report's record of the unit), the
/// hash is its 32 bytes.
#[derive(Debug, Clone)]
struct Managed {
    agent: Arc<str>,
    role: Role,
    /// The SHA-256 of the file fleetwright wrote (None: the inventory's was not one).
    sha: Option<[u8; 32]>,
    /// Its agent is enabled: the unit's links should be there (if it has an [Install] section),
    /// and a service or timer should be active.
    enabled: bool,
}

impl Managed {
    fn should_run(&self) -> bool {
        self.enabled && (self.role == Role::Service || self.role.is_timer())
    }
}

struct Evaluator {
    cfg: HostConfig,
    state: StateDir,
    report: Arc<Mutex<Report>>,
    tx: mpsc::UnboundedSender<Trigger>,
    shared: Arc<Shared>,
    sd: Option<Systemd>,
    managed: BTreeMap<Arc<str>, Managed>,
    dirty_units: BTreeSet<String>,
    dirty_files: BTreeSet<PathBuf>,
    everything: bool,
    /// Drop-ins last seen (unit, path).
    dropins: BTreeSet<(String, PathBuf)>,
    /// Per unit: when its drift last woke the reconciler, and how many times in a row.
    flaps: HashMap<String, (Instant, u32)>,
    files_tx: mpsc::UnboundedSender<PathBuf>,
    inotify: Option<notify::RecommendedWatcher>,
}

impl Evaluator {
    fn new(
        cfg: HostConfig,
        report: Arc<Mutex<Report>>,
        tx: mpsc::UnboundedSender<Trigger>,
        shared: Arc<Shared>,
    ) -> (Evaluator, mpsc::UnboundedReceiver<PathBuf>) {
        let (files_tx, files_rx) = mpsc::unbounded_channel();
        let state = StateDir::new(&cfg.state_dir);
        let e = Evaluator {
            cfg,
            state,
            report,
            tx,
            shared,
            sd: None,
            managed: BTreeMap::new(),
            dirty_units: BTreeSet::new(),
            dirty_files: BTreeSet::new(),
            everything: true,
            dropins: BTreeSet::new(),
            flaps: HashMap::new(),
            files_tx,
            inotify: None,
        };
        (e, files_rx)
    }
}

/// Collect events, and look at them once they have settled (and no reconcile runs).
async fn run(mut e: Evaluator, mut files_rx: mpsc::UnboundedReceiver<PathBuf>, mut sig_rx: mpsc::UnboundedReceiver<ManagerSignal>) {
    e.load_inventory().await;
    e.dropins = e.current_dropins();
    e.watch_files();
    let mut due: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    let arm = |due: &mut Option<tokio::time::Instant>, after: Duration| {
        let at = tokio::time::Instant::now() + after;
        if due.is_none_or(|d| d > at) {
            *due = Some(at);
        }
    };
    loop {
        tokio::select! {
            sig = sig_rx.recv() => match sig {
                Some(ManagerSignal::Unit(u)) => if e.managed.contains_key(u.as_str()) {
                    e.dirty_units.insert(u);
                    arm(&mut due, DEBOUNCE);
                },
                Some(ManagerSignal::Everything) => {
                    e.everything = true;
                    arm(&mut due, DEBOUNCE);
                }
                None => return,
            },
            p = files_rx.recv() => if let Some(p) = p {
                e.dirty_files.insert(p);
                arm(&mut due, DEBOUNCE);
            },
            _ = e.shared.done.notified() => {
                e.load_inventory().await;
                e.watch_files();
                e.everything = true;
                arm(&mut due, Duration::ZERO);
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                due = None;
                // A reconcile is running: its end (`done`) brings us back.
                if !e.shared.busy.load(Ordering::SeqCst)
                    && let Some(again) = e.evaluate().await
                {
                    arm(&mut due, again);
                }
            }
        }
    }
}

/// Bring the watcher's record of the managed units to the inventory's, in place: entries and
/// names already held stay where the first look put them, instead of being allocated again at
/// every look, scattered among the inventory the look read and then freed (pages an idle
/// daemon would keep). An agent's name is shared by all its units.
fn sync_managed(managed: &mut BTreeMap<Arc<str>, Managed>, inv: &Inventory) {
    managed.retain(|u, _| inv.files.contains_key(&**u));
    let mut agents: HashSet<Arc<str>> = managed.values().map(|m| m.agent.clone()).collect();
    let mut agent_of = |name: &str| match agents.get(name) {
        Some(a) => a.clone(),
        None => {
            let a: Arc<str> = Arc::from(name);
            agents.insert(a.clone());
            a
        }
    };
    for (unit, f) in &inv.files {
        let enabled = inv.agents.get(&f.agent).is_none_or(|a| a.enabled);
        let sha = sha_bytes(&f.sha256);
        match managed.get_mut(unit.as_str()) {
            Some(m) => {
                if *m.agent != *f.agent {
                    m.agent = agent_of(&f.agent);
                }
                m.role = f.role;
                m.sha = sha;
                m.enabled = enabled;
            }
            None => {
                let m = Managed { agent: agent_of(&f.agent), role: f.role, sha, enabled };
                managed.insert(Arc::from(unit.as_str()), m);
            }
        }
    }
}

impl Evaluator {
    async fn load_inventory(&mut self) {
        let state = StateDir::new(&self.state.root);
        let inv = tokio::task::spawn_blocking(move || state.load_inventory()).await.ok().and_then(Result::ok).unwrap_or_else(Inventory::default);
        sync_managed(&mut self.managed, &inv);
        let mut r = self.report.lock().expect("report lock");
        r.units.retain(|u, _| self.managed.contains_key(u));
        for (u, m) in &self.managed {
            let l = r.units.entry(u.clone()).or_default();
            l.agent = m.agent.clone();
            l.role = Some(m.role);
            l.should_run = m.should_run();
        }
    }

    /// Watch the unit directory (and the link directory) with its subdirectories, once it exists.
    fn watch_files(&mut self) {
        use notify::Watcher;
        if self.inotify.is_some() || !self.cfg.unit_dir.is_dir() {
            return;
        }
        let tx = self.files_tx.clone();
        let w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        });
        let mut w = match w {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch the unit directory; drift in files is seen at the next resync");
                return;
            }
        };
        let mut dirs = vec![self.cfg.unit_dir.clone()];
        let links = self.cfg.links_dir();
        if links != self.cfg.unit_dir && links.is_dir() {
            dirs.push(links);
        }
        for d in dirs {
            if let Err(e) = w.watch(&d, notify::RecursiveMode::Recursive) {
                warn!(error = %e, dir = %d.display(), "cannot watch the unit directory; drift in files is seen at the next resync");
            }
        }
        self.inotify = Some(w);
    }

    fn current_dropins(&self) -> BTreeSet<(String, PathBuf)> {
        crate::host::dropin::foreign(&self.cfg, self.managed.keys().map(|k| &**k))
            .into_iter()
            .flat_map(|(u, paths)| paths.into_iter().map(move |p| (u.clone(), p)))
            .collect()
    }

    /// Look at what is dirty; wake the reconciler for real drift. Returns when to look again
    /// (a unit whose repair is being held back).
    async fn evaluate(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut drift: Vec<(String, String)> = vec![];
        let everything = std::mem::take(&mut self.everything);
        let units: Vec<Arc<str>> = if everything {
            self.dirty_units.clear();
            self.managed.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.dirty_units).iter().filter_map(|u| self.managed.get_key_value(u.as_str()).map(|(k, _)| k.clone())).collect()
        };
        if !units.is_empty() {
            drift.extend(self.refresh_units(&units, now).await);
        }
        // Files are read (and hashed) on this thread, made a blocking one.
        let (file_drift, dropins_dirty) = tokio::task::block_in_place(|| self.files_changed());
        drift.extend(file_drift);
        let mut fire: Vec<String> = vec![];
        if dropins_dirty || !units.is_empty() {
            let now_set = tokio::task::block_in_place(|| self.current_dropins());
            if now_set != self.dropins {
                let added: Vec<String> = now_set.difference(&self.dropins).map(|(u, p)| format!("{u}: {}", p.display())).collect();
                let removed = self.dropins.difference(&now_set).count();
                self.dropins = now_set;
                fire.push(if added.is_empty() { format!("{removed} drop-in(s) removed") } else { format!("drop-in(s) appeared: {}", added.join(", ")) });
            }
        }
        // Hold back a unit that keeps drifting.
        let mut again: Option<Duration> = None;
        for (unit, why) in drift {
            let (last, streak) = match self.flaps.get(&unit) {
                Some(&(last, streak)) if now.saturating_duration_since(last) <= FLAP_WINDOW => (last, streak),
                _ => (now, 0),
            };
            let at = last + flap_wait(streak);
            if now >= at {
                self.flaps.insert(unit.clone(), (now, streak + 1));
                fire.push(format!("{unit}: {why}"));
            } else {
                debug!(unit, wait = ?flap_wait(streak), "drift again soon after its repair: held back");
                // Looked at again (its state and its file) once the wait is over.
                self.dirty_files.insert(self.cfg.unit_dir.join(&unit));
                self.dirty_units.insert(unit);
                let left = at - now;
                again = Some(again.map_or(left, |a: Duration| a.min(left)));
            }
        }
        if !fire.is_empty() {
            info!(drift = ?fire, "drift seen: reconciling");
            let _ = self.tx.send(Trigger::Drift);
        } else if everything {
            // The look after a reconcile read the whole inventory and every unit's state: give
            // what it freed back, so an idle daemon stays small (the loop trims after the
            // reconcile itself, before this look).
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        again
    }

    /// The dirty files that differ from what fleetwright wrote, and whether a drop-in
    /// directory changed.
    fn files_changed(&mut self) -> (Vec<(String, String)>, bool) {
        let mut drift = vec![];
        let mut dropins_dirty = false;
        for p in std::mem::take(&mut self.dirty_files) {
            match self.classify(&p) {
                FileEvent::Unit(unit) => {
                    if let Some(why) = self.file_drift(&unit) {
                        drift.push((unit, why));
                    }
                }
                FileEvent::DropIn => dropins_dirty = true,
                FileEvent::Link(unit) => {
                    if let Some(why) = self.link_drift(&unit) {
                        drift.push((unit, why));
                    }
                }
                FileEvent::Other => {}
            }
        }
        (drift, dropins_dirty)
    }

    /// Read the state (and, for services, the restart counter) of `units`; returns those that
    /// should run and do not.
    async fn refresh_units(&mut self, units: &[Arc<str>], now: Instant) -> Vec<(String, String)> {
        if self.sd.is_none() {
            self.sd = Systemd::connect(self.cfg.scope, self.cfg.bus_address.as_deref()).await.ok();
        }
        let Some(sd) = &self.sd else { return vec![] };
        let names: Vec<&str> = units.iter().map(|u| &**u).collect();
        let states = match sd.statuses(&names).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "reading unit states failed");
                self.sd = None;
                return vec![];
            }
        };
        let services: Vec<&str> = names.iter().copied().filter(|u| self.managed.get(*u).is_some_and(|m| m.role == Role::Service)).collect();
        let counters = sd.restart_counters(&services).await.unwrap_or_default();
        let mut drift = vec![];
        let mut r = self.report.lock().expect("report lock");
        for u in units {
            let Some(m) = self.managed.get(u) else { continue };
            let st = states.get(&**u).cloned().unwrap_or_default();
            let l = r.units.entry(u.clone()).or_insert_with(|| LiveUnit { agent: m.agent.clone(), role: Some(m.role), ..Default::default() });
            l.should_run = m.should_run();
            if *l.active_state != *st.active_state {
                l.active_state = state_word(&st.active_state);
            }
            if *l.sub_state != *st.sub_state {
                l.sub_state = state_word(&st.sub_state);
            }
            if let Some(n) = counters.get(&**u) {
                l.saw_restarts(*n, now);
            }
            if m.should_run() && matches!(st.active_state.as_str(), "inactive" | "failed") {
                drift.push((u.to_string(), format!("it is {} and should be running", st.active_state)));
            }
        }
        drift
    }

    fn classify(&self, p: &Path) -> FileEvent {
        let Some(parent) = p.parent() else { return FileEvent::Other };
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let parent_name = parent.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if parent == self.cfg.unit_dir && self.managed.contains_key(name.as_str()) {
            return FileEvent::Unit(name);
        }
        // A drop-in directory itself (made or removed), or a file in one.
        if name.ends_with(".d") || parent_name.ends_with(".d") {
            return FileEvent::DropIn;
        }
        if (parent_name.ends_with(".wants") || parent_name.ends_with(".requires")) && self.managed.contains_key(name.as_str()) {
            return FileEvent::Link(name);
        }
        FileEvent::Other
    }

    /// A unit file that is not what the inventory says fleetwright wrote.
    fn file_drift(&self, unit: &str) -> Option<String> {
        let m = self.managed.get(unit)?;
        let path = self.cfg.unit_dir.join(unit);
        let meta = match std::fs::symlink_metadata(&path) {
            Err(_) => return Some("the file was deleted".into()),
            Ok(meta) => meta,
        };
        if !meta.file_type().is_file() {
            return Some("the file was replaced by something that is not a file".into());
        }
        let content = std::fs::read(&path).ok().map(|b| String::from_utf8_lossy(&b).into_owned())?;
        if m.sha != Some(Sha256::digest(&content).into()) {
            return Some("the file was edited".into());
        }
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o7777 != crate::plan::unit_file_mode(&content) {
            return Some("the file's mode was changed".into());
        }
        None
    }

    /// A link of `systemctl enable` made or removed by hand.
    fn link_drift(&self, unit: &str) -> Option<String> {
        let m = self.managed.get(unit)?;
        let content = std::fs::read_to_string(self.cfg.unit_dir.join(unit)).ok();
        let state = self.cfg.enablement(unit, content.as_deref());
        match (m.enabled, state) {
            (true, "disabled") => Some("it was disabled".into()),
            (false, "enabled" | "enabled-runtime") => Some("it was enabled".into()),
            _ => None,
        }
    }
}

/// The 32 bytes of a hex SHA-256 (None if it is not one).
fn sha_bytes(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok().map(|()| out)
}

enum FileEvent {
    Unit(String),
    DropIn,
    Link(String),
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_unit_is_repaired_at_once_three_times_then_with_backoff() {
        let waits: Vec<u64> = (0..14).map(|s| flap_wait(s).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(flap_wait(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn the_record_of_managed_units_follows_the_inventory_in_place() {
        use fleetwright_core::inventory::{AgentRecord, FileRecord};
        let agent = |enabled| AgentRecord {
            spec_hash: String::new(),
            changed_commit: String::new(),
            changed_at: String::new(),
            applied_commit: String::new(),
            applied_at: String::new(),
            enabled,
            backups: vec![],
        };
        let sha = |c: char| c.to_string().repeat(64);
        let mut inv = Inventory::default();
        inv.files.insert("agent-web.service".into(), FileRecord::new(sha('a'), "web".into(), Role::Service));
        inv.files.insert("agent-tick.service".into(), FileRecord::new(sha('b'), "tick".into(), Role::Job));
        inv.files.insert("agent-tick.timer".into(), FileRecord::new(sha('c'), "tick".into(), Role::Timer));
        inv.agents.insert("web".into(), agent(true));
        inv.agents.insert("tick".into(), agent(true));
        let mut managed = BTreeMap::new();
        sync_managed(&mut managed, &inv);
        assert_eq!(managed.keys().map(|k| &**k).collect::<Vec<_>>(), ["agent-tick.service", "agent-tick.timer", "agent-web.service"]);
        // One name per agent, shared by its units.
        assert!(Arc::ptr_eq(&managed["agent-tick.service"].agent, &managed["agent-tick.timer"].agent));
        assert_eq!(managed["agent-web.service"].sha, Some([0xaa; 32]));
        assert!(managed["agent-web.service"].should_run() && managed["agent-tick.timer"].should_run());
        assert!(!managed["agent-tick.service"].should_run(), "a timer's service runs only when the timer fires");
        let name = |m: &BTreeMap<Arc<str>, Managed>, u: &str| m.get_key_value(u).map(|(k, _)| k.clone()).unwrap();
        let (web, tick) = (name(&managed, "agent-web.service"), name(&managed, "agent-tick.timer"));
        let tick_agent = managed["agent-tick.timer"].agent.clone();

        // The next look: web changed and disabled, tick's service gone, a new agent's unit, and
        // one unit that moved to another agent.
        inv.files.insert("agent-web.service".into(), FileRecord::new(sha('d'), "web".into(), Role::Service));
        inv.agents.get_mut("web").unwrap().enabled = false;
        inv.files.remove("agent-tick.service");
        inv.files.insert("agent-new.service".into(), FileRecord::new("not a hash".into(), "new".into(), Role::Service));
        inv.files.insert("agent-moved.service".into(), FileRecord::new(sha('e'), "tick".into(), Role::Service));
        sync_managed(&mut managed, &inv);
        assert_eq!(managed.keys().map(|k| &**k).collect::<Vec<_>>(), ["agent-moved.service", "agent-new.service", "agent-tick.timer", "agent-web.service"]);
        assert_eq!(managed["agent-web.service"].sha, Some([0xdd; 32]));
        assert!(!managed["agent-web.service"].should_run(), "its agent is disabled");
        assert_eq!(managed["agent-new.service"].sha, None);
        // Kept, not allocated again: the units' names and the agent's name.
        assert!(Arc::ptr_eq(&web, &name(&managed, "agent-web.service")));
        assert!(Arc::ptr_eq(&tick, &name(&managed, "agent-tick.timer")));
        assert!(Arc::ptr_eq(&tick_agent, &managed["agent-moved.service"].agent));
        inv.files.insert("agent-moved.service".into(), FileRecord::new(sha('e'), "new".into(), Role::Service));
        sync_managed(&mut managed, &inv);
        assert!(Arc::ptr_eq(&managed["agent-moved.service"].agent, &managed["agent-new.service"].agent));
        sync_managed(&mut managed, &Inventory::default());
        assert!(managed.is_empty());
    }
}
