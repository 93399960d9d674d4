//! Spec documents for tests, built from typed values: the library's own `spec::raw` types (the
//! file format as written), filled in by a builder and printed as YAML. A test that needs an
//! ordinary agent says what it wants (`service("web").user("agent").env("K", "v")`) instead of
//! writing YAML by hand, so a change of the format or a typo in a fixture is a compile error or
//! one place to fix, not thirty strings.
//!
//! The text is JSON, which is YAML (flow style): one document per line, every string quoted.
//! Tests about the text itself — positions in diagnostics, odd quoting, comments, hostile
//! input — keep their literal YAML.

#![allow(dead_code)]

use std::collections::BTreeMap;

use fleetwright::spec::raw::{
    AgentDoc, BackupSpec, ConcurrencySpec, FleetDoc, HealthSpec, HeartbeatSpec, JournalSpec, KeepSpec, LogSpec, ResourcesSpec, RunSpec, Scalar, ScheduleSpec,
    ServiceSpec, Typed,
};

/// Print a document of the spec as YAML (JSON flow style, one line). Unset fields are left out
/// rather than written as `null`.
pub fn to_yaml(doc: &impl serde::Serialize) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(doc).expect("a spec document serializes");
    strip(&mut v);
    format!("{v}\n")
}

/// Several documents in one file.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

fn text(s: &str) -> Scalar {
    Scalar(s.to_string())
}

fn list(items: &[&str]) -> Option<Typed<Vec<String>>> {
    Some(Typed::Ok(items.iter().map(|s| s.to_string()).collect()))
}

/// A `kind: Agent` document.
#[derive(Debug, Clone)]
pub struct AgentSpec(pub AgentDoc);

/// An agent without a schedule (a long-running service) and without a command yet.
pub fn agent(name: &str) -> AgentSpec {
    AgentSpec(AgentDoc { api_version: "fleetwright/v1".into(), kind: "Agent".into(), name: Some(name.into()), ..Default::default() })
}

impl AgentSpec {
    pub fn yaml(&self) -> String {
        to_yaml(&self.0)
    }
    /// Anything the shorthands below do not cover, on the library's type itself.
    pub fn with(mut self, f: impl FnOnce(&mut AgentDoc)) -> Self {
        f(&mut self.0);
        self
    }
    fn run(&mut self) -> &mut RunSpec {
        self.0.run.get_or_insert_with(Default::default)
    }
    fn schedule(&mut self) -> &mut ScheduleSpec {
        self.0.schedule.get_or_insert_with(Default::default)
    }
    fn service(&mut self) -> &mut ServiceSpec {
        self.0.service.get_or_insert_with(Default::default)
    }
    fn health(&mut self) -> &mut HealthSpec {
        self.0.health.get_or_insert_with(Default::default)
    }
    fn resources(&mut self) -> &mut ResourcesSpec {
        self.0.resources.get_or_insert_with(Default::default)
    }

    pub fn description(mut self, d: &str) -> Self {
        self.0.description = Some(d.into());
        self
    }
    pub fn enabled(mut self, on: bool) -> Self {
        self.0.enabled = Some(Typed::Ok(on));
        self
    }
    /// `hosts`: host names or labels.
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.0.hosts = list(hosts);
        self
    }
    pub fn after(mut self, agents: &[&str]) -> Self {
        self.0.after = list(agents);
        self
    }

    // run
    pub fn command(mut self, argv: &[&str]) -> Self {
        self.run().command = list(argv);
        self
    }
    /// `run.command: [/bin/sh, -c, script]`.
    pub fn sh(self, script: &str) -> Self {
        self.command(&["/bin/sh", "-c", script])
    }
    pub fn user(mut self, user: &str) -> Self {
        self.run().user = Some(user.into());
        self
    }
    pub fn working_directory(mut self, dir: &str) -> Self {
        self.run().working_directory = Some(dir.into());
        self
    }
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.run().environment.get_or_insert_with(BTreeMap::new).insert(name.into(), text(value));
        self
    }
    /// `run.secrets.NAME: PATH` (a file of the fleet repository).
    pub fn secret(mut self, name: &str, path: &str) -> Self {
        self.run().secrets.get_or_insert_with(BTreeMap::new).insert(name.into(), path.into());
        self
    }
    pub fn credential(mut self, name: &str, path: &str) -> Self {
        self.run().credentials.get_or_insert_with(BTreeMap::new).insert(name.into(), path.into());
        self
    }
    pub fn timeout(mut self, t: &str) -> Self {
        self.run().timeout = Some(text(t));
        self
    }
    pub fn success_exit_codes(mut self, codes: &[i64]) -> Self {
        self.run().success_exit_codes = Some(Typed::Ok(codes.to_vec()));
        self
    }

    // schedule: any of these makes the agent a job.
    pub fn every(mut self, d: &str) -> Self {
        self.schedule().every = Some(text(d));
        self
    }
    pub fn calendar(mut self, expr: &str) -> Self {
        self.schedule().calendar = Some(expr.into());
        self
    }
    pub fn cron(mut self, expr: &str) -> Self {
        self.schedule().cron = Some(expr.into());
        self
    }
    pub fn persistent(mut self, on: bool) -> Self {
        self.schedule().persistent = Some(Typed::Ok(on));
        self
    }
    pub fn randomized_delay(mut self, d: &str) -> Self {
        self.schedule().randomized_delay = Some(text(d));
        self
    }
    pub fn accuracy(mut self, d: &str) -> Self {
        self.schedule().accuracy = Some(text(d));
        self
    }

    // service
    pub fn restart(mut self, when: &str) -> Self {
        self.service().restart = Some(when.into());
        self
    }
    pub fn restart_sec(mut self, d: &str) -> Self {
        self.service().restart_sec = Some(text(d));
        self
    }
    pub fn watchdog(mut self, d: &str) -> Self {
        self.service().watchdog = Some(text(d));
        self
    }
    pub fn on_change(mut self, what: &str) -> Self {
        self.service().on_change = Some(what.into());
        self
    }

    // health
    pub fn check(mut self, argv: &[&str]) -> Self {
        self.health().check = list(argv);
        self
    }
    pub fn heartbeat(mut self, file: &str, max_age: &str) -> Self {
        self.health().heartbeat = Some(HeartbeatSpec { file: Some(file.into()), max_age: Some(text(max_age)) });
        self
    }

    // the rest
    pub fn memory_max(mut self, size: &str) -> Self {
        self.resources().memory_max = Some(text(size));
        self
    }
    pub fn private_tmp(mut self, on: bool) -> Self {
        self.0.hardening.get_or_insert_with(Default::default).private_tmp = Some(Typed::Ok(on));
        self
    }
    /// `concurrency: {group, limit}`; `when_full` adds what a full group does.
    pub fn concurrency(mut self, group: &str, limit: u32) -> Self {
        self.0.concurrency = Some(ConcurrencySpec { group: Some(group.into()), limit: Some(Typed::Ok(limit)), when_full: None });
        self
    }
    pub fn when_full(mut self, what: &str) -> Self {
        self.0.concurrency.get_or_insert_with(Default::default).when_full = Some(what.into());
        self
    }
    pub fn backup(mut self, b: Backup) -> Self {
        self.0.backups.get_or_insert_with(Vec::new).push(b.0);
        self
    }
    pub fn logs(mut self, l: Logs) -> Self {
        self.0.logs.get_or_insert_with(Vec::new).push(l.0);
        self
    }
}

/// One entry of `backups`.
pub struct Backup(pub BackupSpec);

/// A backup of the database `sqlite` into the directory `to`.
pub fn backup(sqlite: &str, to: &str) -> Backup {
    Backup(BackupSpec { sqlite: Some(sqlite.into()), to: Some(to.into()), ..Default::default() })
}

impl Backup {
    pub fn calendar(mut self, expr: &str) -> Self {
        self.0.schedule = Some(ScheduleSpec { calendar: Some(expr.into()), ..Default::default() });
        self
    }
    pub fn keep_last(mut self, n: u32) -> Self {
        self.0.keep = Some(KeepSpec { last: Some(Typed::Ok(n)), ..Default::default() });
        self
    }
    pub fn verify(mut self) -> Self {
        self.0.verify = Some(Typed::Ok(true));
        self
    }
    pub fn wal(mut self) -> Self {
        self.0.wal = Some(Typed::Ok(true));
        self
    }
}

/// One entry of `logs`.
pub struct Logs(pub LogSpec);

/// Log retention in the directories `path` (a glob).
pub fn logs(path: &str) -> Logs {
    Logs(LogSpec { path: Some(path.into()), ..Default::default() })
}

impl Logs {
    /// `match`: the file names it keeps within bounds.
    pub fn matching(mut self, pattern: &str) -> Self {
        self.0.pattern = Some(pattern.into());
        self
    }
    pub fn max_age(mut self, d: &str) -> Self {
        self.0.max_age = Some(text(d));
        self
    }
    pub fn max_files(mut self, n: u64) -> Self {
        self.0.max_files = Some(Typed::Ok(n));
        self
    }
}

/// A `kind: Fleet` document.
#[derive(Debug, Clone)]
pub struct FleetSpec(pub FleetDoc);

pub fn fleet_doc() -> FleetSpec {
    FleetSpec(FleetDoc { api_version: "fleetwright/v1".into(), kind: "Fleet".into(), ..Default::default() })
}

impl FleetSpec {
    pub fn yaml(&self) -> String {
        to_yaml(&self.0)
    }
    pub fn with(mut self, f: impl FnOnce(&mut FleetDoc)) -> Self {
        f(&mut self.0);
        self
    }
    pub fn allow_root(mut self) -> Self {
        self.0.allow_root = Some(Typed::Ok(true));
        self
    }
    pub fn credential_dirs(mut self, dirs: &[&str]) -> Self {
        self.0.credential_dirs = list(dirs);
        self
    }
    pub fn unit_prefix(mut self, prefix: &str) -> Self {
        self.0.unit_prefix = Some(prefix.into());
        self
    }
    /// `defaults.run.user`.
    pub fn default_user(mut self, user: &str) -> Self {
        let d = self.0.defaults.get_or_insert_with(Default::default);
        d.run.get_or_insert_with(Default::default).user = Some(user.into());
        self
    }
    pub fn journal(mut self, max_use: &str, max_retention: Option<&str>) -> Self {
        self.0.journal = Some(JournalSpec { max_use: Some(text(max_use)), max_retention: max_retention.map(text) });
        self
    }
    /// `hosts: {name: {keys: [...]}}` (labels kept).
    pub fn host_keys(mut self, name: &str, keys: &[&str]) -> Self {
        let h = self.0.hosts.get_or_insert_with(BTreeMap::new).entry(name.into()).or_default();
        h.keys = list(keys);
        self
    }
    /// `operators: [...]`.
    pub fn operators(mut self, keys: &[&str]) -> Self {
        self.0.operators = list(keys);
        self
    }
    /// `hosts: {name: {labels: [...]}}`.
    pub fn host(mut self, name: &str, labels: &[&str]) -> Self {
        let h = fleetwright::spec::raw::HostSpec { labels: list(labels), keys: None };
        self.0.hosts.get_or_insert_with(BTreeMap::new).insert(name.into(), h);
        self
    }
}

/// What the builder prints is read back by the spec loader as the values it was given.
#[test]
fn built_documents_load_as_built() {
    let web = agent("web")
        .sh("echo \"it's\" $HOME \\n; exec sleep 100000")
        .user("agent")
        .env("MODE", "fast")
        .env("ZERO", "0")
        .credential("tok", "/srv/creds/tok")
        .restart("no")
        .restart_sec("200ms")
        .check(&["/bin/sh", "-c", r"printf '\033]0;x\007'"]);
    let tick = agent("tick").command(&["/bin/true"]).user("agent").calendar("*-*-* 03:00:00").persistent(true).concurrency("gpu", 2).when_full("wait");
    let fleet = fleet_doc().credential_dirs(&["/srv/creds"]).journal("64M", Some("7d"));
    let files = vec![("f.yaml".to_string(), fleet.yaml()), ("a.yaml".to_string(), documents(&[web.yaml(), tick.yaml()]))];
    let f = fleetwright::spec::load(&files, &fleetwright::host::zones::Tzdata).unwrap_or_else(|d| panic!("{d}\n{files:?}"));
    let web = f.agents.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.run.command, ["/bin/sh", "-c", "echo \"it's\" $HOME \\n; exec sleep 100000"]);
    assert_eq!(web.run.user.as_deref(), Some("agent"));
    assert_eq!(web.run.environment.get("ZERO").map(String::as_str), Some("0"));
    let tick = f.agents.iter().find(|a| a.name == "tick").unwrap();
    assert!(format!("{:?}", tick.mode).contains("03:00:00"), "{:?}", tick.mode);
}
