//! The D-Bus seam to a systemd manager: our own `#[proxy]` definitions of the parts of
//! org.freedesktop.systemd1 we use, the connection to the bus, and jobs awaited to their result.
//!
//! See org.freedesktop.systemd1(5) for every method and property used here.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, proxy};
use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue};

use crate::plan::UnitStatus;
use crate::types::Scope;

#[proxy(interface = "org.freedesktop.systemd1.Manager", default_service = "org.freedesktop.systemd1", default_path = "/org/freedesktop/systemd1")]
pub trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn list_units_by_names(
        &self,
        names: &[&str],
    ) -> zbus::Result<Vec<(String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath)>>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: zbus::ObjectPath<'_>, unit: &str, result: &str) -> zbus::Result<()>;
}

#[proxy(interface = "org.freedesktop.DBus.Properties", default_service = "org.freedesktop.systemd1")]
pub trait Props {
    fn get_all(&self, interface: &str) -> zbus::Result<BTreeMap<String, OwnedValue>>;
    fn get(&self, interface: &str, name: &str) -> zbus::Result<OwnedValue>;
}

/// How long one D-Bus call may take: a daemon-reload under load can take seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach the systemd {scope} manager over D-Bus: {source}")]
    Bus { scope: &'static str, source: zbus::Error },
    #[error("systemd {what}: {source}")]
    Call { what: String, source: zbus::Error },
}

impl SystemdError {
    /// The bus or the manager out of reach (not an answer about a unit): see `host::fault`.
    pub fn is_transient(&self) -> bool {
        match self {
            SystemdError::Bus { .. } => true,
            SystemdError::Call { source, .. } => super::fault::bus_is_transient(source),
        }
    }
}

fn call(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> SystemdError {
    let what = what.into();
    move |source| SystemdError::Call { what, source }
}

/// A connection to one manager.
pub struct Systemd {
    conn: Connection,
    pub scope: Scope,
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub unit: String,
    pub verb: &'static str,
    /// `done`, `failed`, `timeout`, `dependency`, `canceled`, `skipped`, `invalid`, …, or
    /// `refused: …` (the manager refused to queue it), `lost: …` (its outcome is unknown).
    pub result: String,
    /// The outcome says nothing about the unit: the bus or the manager went away before the
    /// job was queued or before its result was seen, or another job canceled it. What the unit
    /// runs is then to be observed, not assumed (`host::fault`).
    pub fault: bool,
}

impl JobResult {
    pub fn done(&self) -> bool {
        self.result == "done"
    }
}

/// What an apply asks of a manager (`host::apply::observe`, `execute`, `deploy`): its units'
/// states and runs, jobs awaited to their result, and the one daemon-reload. [`Systemd`] is the
/// manager over D-Bus, proven against a real systemd by the real tier (tests/it); the seam is
/// there so that the order `execute` promises (record, stop, files, reload, jobs) is checked by
/// unit tests that record the calls (host::apply's tests).
pub trait UnitManager {
    /// Each unit's load, active and sub state; the unit-file state left empty.
    fn statuses(&self, names: &[&str]) -> impl Future<Output = Result<BTreeMap<String, UnitStatus>, SystemdError>> + Send;
    /// Each unit's current run: InvocationID (hex, empty without one) and when it began
    /// (CLOCK_MONOTONIC µs, 0 when unknown).
    fn runs(&self, units: &[&str]) -> impl Future<Output = Result<BTreeMap<String, (String, u64)>, SystemdError>> + Send;
    /// Each unit's current InvocationID (hex, empty without a run).
    fn invocation_ids(&self, units: &[&str]) -> impl Future<Output = Result<BTreeMap<String, String>, SystemdError>> + Send;
    /// daemon-reload: the manager reads the unit files and links again.
    fn reload(&self) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// Queue `verb` (start, stop, restart, reload, try-restart) for every unit at once; each
    /// job's result, or a fault (`JobResult::fault`).
    fn run_jobs(&self, verb: &'static str, units: &[&str]) -> impl Future<Output = Result<Vec<JobResult>, SystemdError>> + Send;
}

impl UnitManager for Systemd {
    fn statuses(&self, names: &[&str]) -> impl Future<Output = Result<BTreeMap<String, UnitStatus>, SystemdError>> + Send {
        Systemd::statuses(self, names)
    }
    fn runs(&self, units: &[&str]) -> impl Future<Output = Result<BTreeMap<String, (String, u64)>, SystemdError>> + Send {
        Systemd::runs(self, units)
    }
    fn invocation_ids(&self, units: &[&str]) -> impl Future<Output = Result<BTreeMap<String, String>, SystemdError>> + Send {
        Systemd::invocation_ids(self, units)
    }
    fn reload(&self) -> impl Future<Output = Result<(), SystemdError>> + Send {
        Systemd::reload(self)
    }
    fn run_jobs(&self, verb: &'static str, units: &[&str]) -> impl Future<Output = Result<Vec<JobResult>, SystemdError>> + Send {
        Systemd::run_jobs(self, verb, units)
    }
}

/// How long a wait for jobs goes without a word before it says what it waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Systemd {
    /// Connect to the manager of `scope` over D-Bus: the system bus, or the user's session bus
    /// (`$DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus`); `address` overrides either.
    ///
    /// Not the manager's private socket: systemd stamps its replies there with the sender
    /// `org.freedesktop.systemd1`, a well-known name, which zbus rejects as an invalid unique
    /// name in a peer-to-peer connection.
    pub async fn connect(scope: Scope, address: Option<&str>) -> Result<Systemd, SystemdError> {
        let scope_name = if scope == Scope::System { "system" } else { "user" };
        let bus = |source| SystemdError::Bus { scope: scope_name, source };
        let builder = match (address, scope) {
            (Some(a), _) => zbus::connection::Builder::address(a),
            (None, Scope::System) => zbus::connection::Builder::system(),
            (None, Scope::User) => zbus::connection::Builder::session(),
        };
        let conn = builder.method_timeout(CALL_TIMEOUT).build().await.map_err(bus)?;
        Ok(Systemd { conn, scope })
    }

    async fn manager(&self) -> Result<ManagerProxy<'_>, SystemdError> {
        ManagerProxy::new(&self.conn).await.map_err(call("proxy"))
    }

    /// Status of each unit (load, active, sub state), in one call whatever the number of
    /// units. The unit-file state is left empty: `HostConfig::enablement` reads it.
    pub async fn statuses(&self, names: &[&str]) -> Result<BTreeMap<String, UnitStatus>, SystemdError> {
        let mut out = BTreeMap::new();
        let (templates, names) = split_templates(names);
        for t in templates {
            out.insert(t.to_string(), UnitStatus { active_state: "inactive".into(), sub_state: "dead".into(), ..Default::default() });
        }
        if names.is_empty() {
            return Ok(out);
        }
        let names = &names[..];
        let m = self.manager().await?;
        for (name, _desc, load, active, sub, ..) in m.list_units_by_names(names).await.map_err(call("ListUnitsByNames"))? {
            out.insert(name, UnitStatus { load_state: load, active_state: active, sub_state: sub, ..Default::default() });
        }
        Ok(out)
    }

    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.manager().await?.reload().await.map_err(call("daemon-reload"))
    }

    /// Queue `verb` (start, stop, restart, reload) for every unit at once and wait for each job's
    /// JobRemoved signal. Units are ordered by systemd itself (After=) within the queue.
    ///
    /// A job whose call failed because the bus or the manager went away, one whose signal never
    /// came (the manager re-executed meanwhile, or the bus closed), and one another job
    /// canceled, are results with `fault` set: their outcome says nothing about the unit. A job
    /// that is gone from the manager without a signal is noticed by asking for it after a second
    /// without news; a wait of more than ten seconds says, every ten seconds, what it waits for.
    pub async fn run_jobs(&self, verb: &'static str, units: &[&str]) -> Result<Vec<JobResult>, SystemdError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let m = self.manager().await?;
        // One subscription per connection is enough; a second one is refused as
        // AlreadySubscribed, which is fine.
        match m.subscribe().await {
            Err(zbus::Error::MethodError(name, ..)) if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => {}
            other => other.map_err(call("Subscribe"))?,
        }
        // Listen before queueing, so that no JobRemoved is missed.
        let mut removed = m.receive_job_removed().await.map_err(call("JobRemoved"))?;
        // The signals are read while the jobs are queued, not after: zbus holds at most a few
        // dozen unread messages of a stream and then stops reading the socket, replies
        // included, so queueing hundreds of jobs before reading their signals deadlocks
        // (StartUnit's reply waits behind an unread JobRemoved). A signal may also arrive
        // before the reply that names its job: `seen` keeps it until the reply does.
        let queue = async {
            let mut out = Vec::with_capacity(units.len());
            for unit in units {
                let queued = match verb {
                    "start" => m.start_unit(unit, "replace").await,
                    "stop" => m.stop_unit(unit, "replace").await,
                    "restart" => m.restart_unit(unit, "replace").await,
                    "try-restart" => m.try_restart_unit(unit, "replace").await,
                    _ => m.reload_unit(unit, "replace").await,
                };
                fleetwright_sys::crash_point("queued");
                out.push((unit.to_string(), queued));
            }
            out
        };
        let mut queue = std::pin::pin!(queue);
        let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        let mut closed = false;
        let queued = loop {
            tokio::select! {
                out = &mut queue => break out,
                sig = removed.next(), if !closed => match sig {
                    Some(sig) => {
                        if let Ok(args) = sig.args() {
                            seen.insert(args.job.to_string(), args.result.to_string());
                        }
                    }
                    None => closed = true,
                },
            }
        };
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        let mut results = Vec::new();
        let result = |unit: String, result: String| {
            // A job canceled by another (a stop by hand, a heartbeat's restart, a shutdown) did
            // not fail: the unit is to be looked at again.
            let fault = result == "canceled";
            JobResult { unit, verb, result, fault }
        };
        for (unit, queued) in queued {
            match queued {
                Ok(job) => match seen.remove(job.as_str()) {
                    Some(r) => results.push(result(unit, r)),
                    None => {
                        pending.insert(job.to_string(), unit);
                    }
                },
                Err(e) if super::fault::bus_is_transient(&e) => {
                    results.push(JobResult { unit, verb, result: format!("lost: the call did not reach the manager ({e})"), fault: true })
                }
                Err(e) => results.push(JobResult { unit, verb, result: format!("refused: {e}"), fault: false }),
            }
        }
        let waiting_since = std::time::Instant::now();
        let mut said = waiting_since;
        // Jobs found gone at the last look, given one more second for a signal in flight.
        let mut gone: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        while !pending.is_empty() && !closed {
            match tokio::time::timeout(Duration::from_secs(1), removed.next()).await {
                Ok(Some(sig)) => {
                    let Ok(args) = sig.args() else { continue };
                    if let Some(unit) = pending.remove(args.job.as_str()) {
                        results.push(result(unit, args.result.to_string()));
                    }
                }
                Ok(None) => closed = true,
                Err(_) => {
                    for job in std::mem::take(&mut gone) {
                        if let Some(unit) = pending.remove(&job) {
                            results.push(JobResult {
                                unit,
                                verb,
                                result: "lost: the job ended without a word from the manager (it re-executed?)".into(),
                                fault: true,
                            });
                        }
                    }
                    for job in pending.keys() {
                        match self.job_exists(job).await {
                            Ok(true) => {}
                            Ok(false) => {
                                gone.insert(job.clone());
                            }
                            Err(_) => closed = true,
                        }
                    }
                    if said.elapsed() >= PROGRESS_EVERY {
                        said = std::time::Instant::now();
                        let names: Vec<&str> = pending.values().take(5).map(String::as_str).collect();
                        let more = pending.len().saturating_sub(names.len());
                        tracing::info!(
                            "waiting for {} {verb} job(s) to finish ({}s so far): {}{}",
                            pending.len(),
                            waiting_since.elapsed().as_secs(),
                            names.join(", "),
                            if more > 0 { format!(" and {more} more") } else { String::new() }
                        );
                    }
                }
            }
        }
        for (_, unit) in pending {
            results.push(JobResult { unit, verb, result: "lost: the connection to the manager closed before the job ended".into(), fault: true });
        }
        results.sort_by(|a, b| a.unit.cmp(&b.unit));
        Ok(results)
    }

    /// Whether the manager still has the job at this object path (a job it finished or dropped
    /// is gone). An error is the bus's.
    async fn job_exists(&self, job: &str) -> Result<bool, SystemdError> {
        let path = zbus::ObjectPath::try_from(job.to_string()).map_err(call(format!("job {job}")))?;
        let props = PropsProxy::builder(&self.conn).path(path).build().await.map_err(call("proxy"))?;
        match props.get("org.freedesktop.systemd1.Job", "State").await {
            Ok(_) => Ok(true),
            Err(e) if super::fault::bus_is_transient(&e) => Err(SystemdError::Call { what: format!("job {job}"), source: e }),
            Err(_) => Ok(false),
        }
    }

    /// Each unit's current run, as systemd knows it: its InvocationID (hex, empty when it has
    /// none) and when it began on CLOCK_MONOTONIC, in µs (`ExecMainStartTimestampMonotonic` for
    /// a service with a main process, else `ActiveEnterTimestampMonotonic`; 0 when unknown).
    pub async fn runs(&self, units: &[&str]) -> Result<BTreeMap<String, (String, u64)>, SystemdError> {
        let mut out = BTreeMap::new();
        let (templates, units) = split_templates(units);
        out.extend(templates.into_iter().map(|t| (t.to_string(), (String::new(), 0))));
        if units.is_empty() {
            return Ok(out);
        }
        let units = &units[..];
        let m = self.manager().await?;
        for (name, _, load, _, _, _, path, ..) in m.list_units_by_names(units).await.map_err(call("ListUnitsByNames"))? {
            if load != "loaded" {
                out.insert(name, (String::new(), 0));
                continue;
            }
            let props = PropsProxy::builder(&self.conn).path(path).build().await.map_err(call("proxy"))?;
            let get = |iface: &'static str, prop: &'static str| {
                let props = &props;
                let name = &name;
                async move { props.get(iface, prop).await.map_err(call(format!("{prop} of {name}"))) }
            };
            let id = Vec::<u8>::try_from(get("org.freedesktop.systemd1.Unit", "InvocationID").await?).map(hex::encode).unwrap_or_default();
            let mut started = 0u64;
            if name.ends_with(".service") {
                started = u64::try_from(get("org.freedesktop.systemd1.Service", "ExecMainStartTimestampMonotonic").await?).unwrap_or(0);
            }
            if started == 0 {
                started = u64::try_from(get("org.freedesktop.systemd1.Unit", "ActiveEnterTimestampMonotonic").await?).unwrap_or(0);
            }
            out.insert(name, (id, started));
        }
        Ok(out)
    }

    /// Each unit's current InvocationID as hex (empty when it has no run), by its object path:
    /// a unit that is not loaded is not loaded for this.
    pub async fn invocation_ids(&self, units: &[&str]) -> Result<BTreeMap<String, String>, SystemdError> {
        let mut out = BTreeMap::new();
        let (templates, units) = split_templates(units);
        out.extend(templates.into_iter().map(|t| (t.to_string(), String::new())));
        if units.is_empty() {
            return Ok(out);
        }
        let units = &units[..];
        let m = self.manager().await?;
        for (name, _, load, _, _, _, path, ..) in m.list_units_by_names(units).await.map_err(call("ListUnitsByNames"))? {
            let id = if load == "loaded" {
                let props = PropsProxy::builder(&self.conn).path(path).build().await.map_err(call("proxy"))?;
                let v = props.get("org.freedesktop.systemd1.Unit", "InvocationID").await.map_err(call(format!("InvocationID of {name}")))?;
                Vec::<u8>::try_from(v).map(hex::encode).unwrap_or_default()
            } else {
                String::new()
            };
            out.insert(name, id);
        }
        Ok(out)
    }

    /// All properties of a unit on one interface (`org.freedesktop.systemd1.Unit`, `.Service`,
    /// `.Timer`).
    pub async fn properties(&self, unit: &str, interface: &str) -> Result<BTreeMap<String, OwnedValue>, SystemdError> {
        if is_template(unit) {
            // A template has no properties of its own: its instances have.
            return Ok(BTreeMap::new());
        }
        let m = self.manager().await?;
        let path = m.load_unit(unit).await.map_err(call(format!("LoadUnit {unit}")))?;
        let props = PropsProxy::builder(&self.conn).path(path).build().await.map_err(call("proxy"))?;
        props.get_all(interface).await.map_err(call(format!("properties of {unit}")))
    }
}

/// The escaping of a unit name in an object path (sd_bus_path_encode): every byte but ASCII
/// letters and digits becomes `_` and two lower-case hex digits.
pub fn unit_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// The unit name of a unit's object path, or None for another path.
pub fn unit_of_path(path: &str) -> Option<String> {
    let label = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the manager says changed, from its signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerSignal {
    /// A unit's properties changed (its state, its restart counter, …).
    Unit(String),
    /// Unit files were enabled, disabled or linked (`UnitFilesChanged`), or the manager
    /// reloaded (`Reloading`): every unit may have changed.
    Everything,
}

impl Systemd {
    /// Subscribe to the manager's signals on this connection and return them as they come:
    /// `PropertiesChanged` of every unit (the manager sends them only while someone is
    /// subscribed), `UnitFilesChanged` and `Reloading`. Read the stream without pause: zbus
    /// stops reading the socket when a stream's queue is full. A connection of its own keeps
    /// calls on other connections from ever waiting behind unread signals.
    pub async fn signals(&self) -> Result<impl futures_util::Stream<Item = ManagerSignal> + use<>, SystemdError> {
        use zbus::message::Type;
        let m = self.manager().await?;
        match m.subscribe().await {
            Err(zbus::Error::MethodError(name, ..)) if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => {}
            other => other.map_err(call("Subscribe"))?,
        }
        let units = zbus::MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.systemd1")
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit")
            .build()
            .map_err(call("match rule"))?;
        let manager = zbus::MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.systemd1")
            .interface("org.freedesktop.systemd1.Manager")
            .path("/org/freedesktop/systemd1")
            .build()
            .map_err(call("match rule"))?;
        // The queue is allocated whole, and a reader that keeps up never fills it: a full queue
        // only makes zbus wait before it reads on (nothing else is read on this connection).
        let room = std::num::NonZeroUsize::new(1024);
        let a = zbus::MessageStream::for_match_rule(units, &self.conn, room).await.map_err(call("AddMatch"))?;
        let b = zbus::MessageStream::for_match_rule(manager, &self.conn, room).await.map_err(call("AddMatch"))?;
        Ok(futures_util::stream::select(a, b).filter_map(|msg| async move {
            let msg = msg.ok()?;
            let header = msg.header();
            match header.member().map(|m| m.as_str()) {
                Some("PropertiesChanged") => unit_of_path(header.path()?.as_str()).map(ManagerSignal::Unit),
                Some("UnitFilesChanged" | "Reloading") => Some(ManagerSignal::Everything),
                _ => None,
            }
        }))
    }

    /// Each service's restart counter (NRestarts): how often the manager restarted it by
    /// itself since it was last started on purpose.
    pub async fn restart_counters(&self, services: &[&str]) -> Result<BTreeMap<String, u32>, SystemdError> {
        let mut out = BTreeMap::new();
        for u in services {
            let props = PropsProxy::builder(&self.conn).path(unit_path(u)).build().await.map_err(call("proxy"))?;
            let n = match props.get("org.freedesktop.systemd1.Service", "NRestarts").await {
                Ok(v) => u32::try_from(v).unwrap_or(0),
                // Not loaded (no such unit): never restarted.
                Err(zbus::Error::MethodError(..)) => 0,
                Err(e) => return Err(call(format!("NRestarts of {u}"))(e)),
            };
            out.insert(u.to_string(), n);
        }
        Ok(out)
    }
}

/// A template unit (`name@.service`, the failure reporter): the manager never loads one
/// (ListUnitsByNames and LoadUnit refuse it as "missing the instance name"); it is a file, with
/// no state of its own, never started by a deploy.
pub fn is_template(unit: &str) -> bool {
    unit.split_once('@').is_some_and(|(_, rest)| rest.starts_with('.'))
}

/// (templates, the other units) of `units`.
fn split_templates<'a>(units: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    units.iter().partition(|u| is_template(u))
}

/// Read a property as a plain value.
pub fn prop<T: TryFrom<OwnedValue>>(props: &BTreeMap<String, OwnedValue>, key: &str) -> Option<T> {
    props.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| T::try_from(v).ok())
}
