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
use crate::render::Scope;

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
    /// `done`, `failed`, `timeout`, `dependency`, `canceled`, `skipped`, `invalid`, …
    pub result: String,
}

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
        if names.is_empty() {
            return Ok(out);
        }
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
        let mut pending: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        let mut results = Vec::new();
        for (unit, queued) in queued {
            match queued {
                Ok(job) => match seen.remove(job.as_str()) {
                    Some(result) => results.push(JobResult { unit, verb, result }),
                    None => {
                        pending.insert(job.to_string(), unit);
                    }
                },
                Err(e) => results.push(JobResult { unit, verb, result: format!("refused: {e}") }),
            }
        }
        while !pending.is_empty() && !closed {
            let Some(sig) = removed.next().await else { break };
            let Ok(args) = sig.args() else { continue };
            if let Some(unit) = pending.remove(args.job.as_str()) {
                results.push(JobResult { unit, verb, result: args.result.to_string() });
            }
        }
        for (_, unit) in pending {
            results.push(JobResult { unit, verb, result: "lost: the manager closed the connection".into() });
        }
        results.sort_by(|a, b| a.unit.cmp(&b.unit));
        Ok(results)
    }

    /// Each unit's current InvocationID as hex (empty when it has no run), by its object path:
    /// a unit that is not loaded is not loaded for this.
    pub async fn invocation_ids(&self, units: &[&str]) -> Result<BTreeMap<String, String>, SystemdError> {
        let mut out = BTreeMap::new();
        if units.is_empty() {
            return Ok(out);
        }
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

/// Read a property as a plain value.
pub fn prop<T: TryFrom<OwnedValue>>(props: &BTreeMap<String, OwnedValue>, key: &str) -> Option<T> {
    props.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| T::try_from(v).ok())
}
