//! The order of `execute`'s steps, against a recording `UnitManager` (the real manager's
//! tier is tests/it).

use super::*;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::plan::PlanOptions;
use crate::types::Scope;

/// One manager call, and the host as it was when it came.
#[derive(Debug, Clone)]
struct Call {
    /// `reload`, a job verb, `invocation-ids`, `statuses` or `runs`.
    op: String,
    units: Vec<String>,
    files: BTreeMap<String, String>,
    links: BTreeSet<String>,
    inventory: Inventory,
    markers: BTreeSet<String>,
}

/// A manager that does what it is asked to its own table of units and records it.
struct Recorder {
    cfg: HostConfig,
    calls: Mutex<Vec<Call>>,
    /// The unit files it read at its last reload: a unit without one is `not-found`.
    loaded: Mutex<BTreeSet<String>>,
    /// Unit → its run: (InvocationID, start time).
    running: Mutex<BTreeMap<String, (String, u64)>>,
    /// How many runs it began: each has the next InvocationID.
    runs_begun: std::sync::atomic::AtomicU64,
    /// The operation that fails, with a bus error, instead of being done.
    fail: Mutex<Option<&'static str>>,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    names.sort();
    names
}

impl Recorder {
    fn new(cfg: &HostConfig) -> Recorder {
        Recorder {
            cfg: cfg.clone(),
            calls: Mutex::new(Vec::new()),
            loaded: Mutex::new(BTreeSet::new()),
            running: Mutex::new(BTreeMap::new()),
            runs_begun: 0.into(),
            fail: Mutex::new(None),
        }
    }

    fn record(&self, op: &str, units: &[&str]) -> Result<(), SystemdError> {
        let files = names_in(&self.cfg.unit_dir).into_iter().filter_map(|n| std::fs::read_to_string(self.cfg.unit_dir.join(&n)).ok().map(|t| (n, t))).collect();
        let links_dir = self.cfg.links_dir();
        let links = names_in(&links_dir).into_iter().flat_map(|w| names_in(&links_dir.join(&w)).into_iter().map(move |u| format!("{w}/{u}"))).collect();
        let state = StateDir::new(&self.cfg.state_dir);
        let call = Call {
            op: op.to_string(),
            units: units.iter().map(|u| u.to_string()).collect(),
            files,
            links,
            inventory: state.load_inventory().expect("the inventory reads"),
            markers: names_in(&state.markers_dir()).into_iter().collect(),
        };
        self.calls.lock().unwrap().push(call);
        if *self.fail.lock().unwrap() == Some(op) {
            let gone = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the bus went away (a test's fault)");
            return Err(SystemdError::Call { what: op.to_string(), source: zbus::Error::from(gone) });
        }
        Ok(())
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls that change what the manager runs or knows, as `op unit unit…`.
    fn changes(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| !matches!(c.op.as_str(), "statuses" | "runs" | "invocation-ids"))
            .map(|c| [c.op.clone()].into_iter().chain(c.units.clone()).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn call(&self, op: &str) -> Call {
        self.calls().into_iter().find(|c| c.op == op).unwrap_or_else(|| panic!("no {op} call"))
    }

    fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl UnitManager for Recorder {
    async fn statuses(&self, names: &[&str]) -> Result<BTreeMap<String, UnitStatus>, SystemdError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.record("statuses", names)?;
        let (loaded, running) = (self.loaded.lock().unwrap(), self.running.lock().unwrap());
        let status = |n: &str| {
            let (active, sub) = if running.contains_key(n) { ("active", "running") } else { ("inactive", "dead") };
            let load = if loaded.contains(n) { "loaded" } else { "not-found" };
            UnitStatus { load_state: load.into(), active_state: active.into(), sub_state: sub.into(), ..Default::default() }
        };
        Ok(names.iter().map(|n| (n.to_string(), status(n))).collect())
    }

    async fn runs(&self, units: &[&str]) -> Result<BTreeMap<String, (String, u64)>, SystemdError> {
        if units.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.record("runs", units)?;
        let running = self.running.lock().unwrap();
        Ok(units.iter().map(|u| (u.to_string(), running.get(*u).cloned().unwrap_or_default())).collect())
    }

    async fn invocation_ids(&self, units: &[&str]) -> Result<BTreeMap<String, String>, SystemdError> {
        if units.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.record("invocation-ids", units)?;
        let running = self.running.lock().unwrap();
        Ok(units.iter().map(|u| (u.to_string(), running.get(*u).map(|r| r.0.clone()).unwrap_or_default())).collect())
    }

    async fn reload(&self) -> Result<(), SystemdError> {
        self.record("reload", &[])?;
        *self.loaded.lock().unwrap() = names_in(&self.cfg.unit_dir).into_iter().collect();
        Ok(())
    }

    async fn run_jobs(&self, verb: &'static str, units: &[&str]) -> Result<Vec<JobResult>, SystemdError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        self.record(verb, units)?;
        let mut running = self.running.lock().unwrap();
        for u in units {
            match verb {
                "start" | "restart" => {
                    let id = format!("{:032x}", self.runs_begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
                    running.insert(u.to_string(), (id, super::super::monotonic_usec()));
                }
                "stop" => {
                    running.remove(*u);
                }
                _ => {}
            }
        }
        Ok(units.iter().map(|u| JobResult { unit: u.to_string(), verb, result: "done".into(), fault: false }).collect())
    }
}

struct Host {
    _dir: tempfile::TempDir,
    cfg: HostConfig,
    state: StateDir,
}

fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| -> PathBuf {
        let p = dir.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let cfg = HostConfig {
        scope: Scope::System,
        unit_dir: path("units"),
        state_dir: path("state"),
        host: "h".into(),
        bus_address: None,
        links: Some(path("links")),
        identity: None,
    };
    let state = StateDir::new(&cfg.state_dir);
    Host { _dir: dir, cfg, state }
}

const FLEET: &str = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults: {run: {user: agent}}\n";

/// A fleet of agents, each `name: yaml body`.
fn fleet(agents: &[(&str, &str)]) -> crate::spec::Fleet {
    let mut files = vec![("fleet.yaml".to_string(), FLEET.to_string())];
    files.extend(agents.iter().map(|(name, body)| (format!("{name}.yaml"), format!("apiVersion: fleetwright/v1\nkind: Agent\nname: {name}\n{body}"))));
    crate::spec::load(&files, &crate::spec::calendar::NoDatabase).unwrap_or_else(|d| panic!("the fleet does not load: {d:?}"))
}

async fn deploy_to(sd: &Recorder, h: &Host, commit: &str, f: &crate::spec::Fleet) -> Result<Deployment, ApplyError> {
    deploy(sd, &h.cfg, &h.state, commit, &format!("key of {commit}"), f, PlanOptions::default()).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_first_deploy_records_writes_and_links_then_reloads_once_then_starts() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let f = fleet(&[("web", "run: {command: [/usr/bin/web]}\n"), ("job", "run: {command: [/usr/bin/job]}\nschedule: {calendar: daily}\n")]);
    let d = runtime().block_on(deploy_to(&sd, &h, "c1", &f)).unwrap();
    assert_eq!(sd.changes(), ["reload", "start agent-job.timer agent-web.service"]);
    assert!(d.report.reloaded && d.report.failures.is_empty(), "{:?}", d.report);

    // At the reload: every file and link there, and the inventory recorded them, with the
    // reload still owed, before any was written.
    let all = ["agent-job.service", "agent-job.timer", "agent-web.service"];
    let reload = sd.call("reload");
    assert_eq!(reload.files.keys().map(String::as_str).collect::<Vec<_>>(), all);
    assert_eq!(reload.links, BTreeSet::from(["multi-user.target.wants/agent-web.service".to_string(), "timers.target.wants/agent-job.timer".to_string()]));
    assert_eq!(reload.inventory.pending_files.keys().map(String::as_str).collect::<Vec<_>>(), all);
    assert!(reload.inventory.pending_files.values().all(Option::is_none), "new files: nothing was there before");
    assert!(reload.inventory.reload_pending);
    for (name, text) in &reload.files {
        assert_eq!(reload.inventory.files[name].sha256, sha256(text), "{name}: recorded as written");
    }
    // At the start: the manager has the files, and each agent's deploy marker is there to read.
    let start = sd.call("start");
    assert!(!start.inventory.reload_pending && start.inventory.files.values().all(|r| r.loaded.is_some()));
    assert_eq!(start.markers, BTreeSet::from(["job.env", "job.json", "web.env", "web.json"].map(String::from)));

    // The final inventory: nothing pending, the services' runs of their files.
    let inv = h.state.load_inventory().unwrap();
    assert!(inv.pending_files.is_empty() && inv.pending_restarts.is_empty() && !inv.reload_pending);
    assert_eq!(inv.render_key.as_deref(), Some("key of c1"));
    assert_eq!(inv.files["agent-web.service"].confirmed.as_ref(), Some(&inv.files["agent-web.service"].sha256));
}

#[test]
fn nothing_changed_is_no_reload_and_no_job() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let f = fleet(&[("web", "run: {command: [/usr/bin/web]}\n"), ("job", "run: {command: [/usr/bin/job]}\nschedule: {calendar: daily}\n")]);
    let rt = runtime();
    rt.block_on(deploy_to(&sd, &h, "c1", &f)).unwrap();
    sd.clear();
    // Another commit of the same fleet: the inventory and markers say so, nothing else moves.
    let d = rt.block_on(deploy_to(&sd, &h, "c2", &f)).unwrap();
    assert_eq!(sd.changes(), Vec::<String>::new());
    assert!(!d.report.reloaded && d.report.jobs.is_empty() && d.report.files_written == 0, "{:?}", d.report);
    // The same key again: the fast path reads its desired units back from the files, and
    // finds nothing to do either.
    sd.clear();
    let same = rt.block_on(deploy_unchanged(&sd, &h.cfg, &h.state, "key of c2", PlanOptions::default())).unwrap();
    assert!(same.is_some_and(|d| !d.plan.has_changes()));
    assert_eq!(sd.changes(), Vec::<String>::new());
}

#[test]
fn stop_and_disable_come_before_the_files_then_enable_reload_and_the_jobs_in_action_order() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let rt = runtime();
    let before = fleet(&[
        ("gone", "run: {command: [/usr/bin/gone]}\n"),
        ("paused", "run: {command: [/usr/bin/paused]}\n"),
        ("web", "run: {command: [/usr/bin/web]}\n"),
        ("hup", "run: {command: [/usr/bin/hup]}\nservice: {onChange: reload}\n"),
    ]);
    rt.block_on(deploy_to(&sd, &h, "c1", &before)).unwrap();
    let old_web = std::fs::read_to_string(h.cfg.unit_dir.join("agent-web.service")).unwrap();
    sd.clear();
    let after = fleet(&[
        ("paused", "enabled: false\nrun: {command: [/usr/bin/paused]}\n"),
        ("web", "run: {command: [/usr/bin/web, --v2]}\n"),
        ("hup", "run: {command: [/usr/bin/hup, --v2]}\nservice: {onChange: reload}\n"),
        ("new", "run: {command: [/usr/bin/new]}\n"),
    ]);
    let d = rt.block_on(deploy_to(&sd, &h, "c2", &after)).unwrap();
    assert!(d.report.failures.is_empty(), "{:?}", d.report.failures);
    assert_eq!(
        sd.changes(),
        ["stop agent-gone.service agent-paused.service", "reload", "reload agent-hup.service", "restart agent-web.service", "start agent-new.service"]
    );

    // Before the first change: the run a restart replaces, and an inventory that records
    // every file this apply is about to change, with the restarts owed.
    let calls = sd.calls();
    let first = calls.iter().position(|c| c.op == "stop").unwrap();
    assert!(calls[..first].iter().any(|c| c.op == "invocation-ids" && c.units == ["agent-web.service"]));
    let stop = &calls[first];
    assert_eq!(
        stop.inventory.pending_files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["agent-gone.service", "agent-hup.service", "agent-new.service", "agent-paused.service", "agent-web.service"]
    );
    assert!(stop.inventory.pending_restarts.contains_key("agent-web.service") && stop.inventory.pending_restarts.contains_key("agent-hup.service"));
    assert!(stop.inventory.restart_from.contains_key("agent-web.service"));
    assert!(stop.inventory.reload_pending);
    // The stop is before the files and the links change: what is stopped is still as it ran.
    assert!(stop.files.contains_key("agent-gone.service") && !stop.files.contains_key("agent-new.service"));
    assert_eq!(stop.files["agent-web.service"], old_web);
    assert!(stop.links.contains("multi-user.target.wants/agent-gone.service") && stop.links.contains("multi-user.target.wants/agent-paused.service"));

    // The one reload: files written and removed, disabled and enabled, all at once.
    let reload = sd.call("reload");
    assert!(!reload.files.contains_key("agent-gone.service") && reload.files.contains_key("agent-new.service"));
    assert!(reload.files["agent-web.service"].contains("--v2"));
    assert_eq!(reload.links, BTreeSet::from(["agent-hup.service", "agent-new.service", "agent-web.service"].map(|u| format!("multi-user.target.wants/{u}"))));
    // The jobs come after it, each of the new definitions, markers written first.
    let restart = sd.call("restart");
    assert!(!restart.inventory.reload_pending && restart.markers.contains("new.env") && !restart.markers.contains("gone.env"));
    let inv = h.state.load_inventory().unwrap();
    assert!(inv.pending_restarts.is_empty() && inv.pending_files.is_empty() && !inv.files.contains_key("agent-gone.service"));
}

#[test]
fn an_error_after_a_change_is_interrupted_with_what_is_left_recorded() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let rt = runtime();
    rt.block_on(deploy_to(&sd, &h, "c1", &fleet(&[("web", "run: {command: [/usr/bin/web]}\n")]))).unwrap();
    *sd.fail.lock().unwrap() = Some("restart");
    let e = rt.block_on(deploy_to(&sd, &h, "c2", &fleet(&[("web", "run: {command: [/usr/bin/web, --v2]}\n")]))).err().expect("the restart fails");
    let ApplyError::Interrupted { done, source } = &e else { panic!("not Interrupted: {e}") };
    assert!(done.contains("1 file(s) written") && done.contains("the manager reloaded"), "{done}");
    assert!(matches!(**source, ApplyError::Systemd(_)) && e.is_transient() && e.changed_host(), "{e}");
    // The restart is still owed, from the run it was to replace; the file is written and loaded.
    let inv = h.state.load_inventory().unwrap();
    assert_eq!(inv.pending_restarts.get("agent-web.service"), Some(&Action::Restart));
    assert!(inv.restart_from.contains_key("agent-web.service") && !inv.reload_pending && inv.render_key.is_none());
    // The next apply finishes it: the restart, and no second reload.
    *sd.fail.lock().unwrap() = None;
    sd.clear();
    rt.block_on(deploy_to(&sd, &h, "c2", &fleet(&[("web", "run: {command: [/usr/bin/web, --v2]}\n")]))).unwrap();
    assert_eq!(sd.changes(), ["restart agent-web.service"]);
}

#[test]
fn an_error_before_any_change_is_only_the_error() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let rt = runtime();
    rt.block_on(deploy_to(&sd, &h, "c1", &fleet(&[("gone", "run: {command: [/usr/bin/gone]}\n"), ("web", "run: {command: [/usr/bin/web]}\n")]))).unwrap();
    *sd.fail.lock().unwrap() = Some("stop");
    let e = rt.block_on(deploy_to(&sd, &h, "c2", &fleet(&[("web", "run: {command: [/usr/bin/web]}\n")]))).err().expect("the stop fails");
    assert!(matches!(e, ApplyError::Systemd(_)) && !e.changed_host(), "{e}");
    // Recorded as begun (so that the next apply finishes the removal), and nothing removed.
    assert!(h.cfg.unit_dir.join("agent-gone.service").exists());
    assert!(h.state.load_inventory().unwrap().pending_files.contains_key("agent-gone.service"));
}

#[test]
fn a_refused_plan_asks_nothing_of_the_manager() {
    let h = host();
    let sd = Recorder::new(&h.cfg);
    let f = fleet(&[("web", "run: {command: [/usr/bin/web]}\n")]);
    let ctx = crate::render::RenderCtx {
        scope: Scope::System,
        state_dir: h.cfg.state_dir.display().to_string(),
        exe: "/usr/bin/fleetwright".into(),
        secret_ids: Default::default(),
    };
    let mut want = crate::desired::desired(&f, "h", &ctx, "c1", &Inventory::default());
    want.refused.push("a reason".into());
    let plan = crate::plan::plan(&want, &Observed::default(), PlanOptions::default());
    let e = runtime().block_on(execute(&sd, &h.cfg, &h.state, &plan, &want, &Inventory::default(), "k")).expect_err("refused");
    assert!(matches!(&e, ApplyError::Refused(r) if r == &["a reason".to_string()]), "{e}");
    assert!(sd.calls().is_empty() && names_in(&h.cfg.unit_dir).is_empty() && !h.state.inventory_path().exists());
}
