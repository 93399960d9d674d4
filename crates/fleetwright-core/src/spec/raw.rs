//! The file format as written: serde + schemars types for `kind: Agent` and `kind: Fleet`.
//!
//! Leaves that need checking (durations, sizes, percentages, calendar expressions) are kept as
//! [`Scalar`] text here, so that one bad value does not hide the others: `validate` turns these
//! into the typed model in `model.rs` and reports every problem at once. Unknown fields are
//! collected by `serde_ignored` for the same reason. The JSON Schema in `schema/` is generated
//! from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Any YAML scalar (string, number, boolean), kept as the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Scalar(#[schemars(with = "ScalarSchema")] pub String);

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ScalarSchema {
    S(String),
    N(f64),
    B(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        // As a string: the tree hands over a plain scalar exactly as written (`1.10` stays
        // `1.10`, `0x1F` stays `0x1F`), where `deserialize_any` would re-print a number.
        d.deserialize_str(V)
    }
}

/// A leaf of a fixed type (a boolean, a count, a list) whose wrong type is kept as a message
/// for `check` to report at the value's position, instead of failing the whole document:
/// one `enabled: yes` must not hide every other problem of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Typed<T> {
    Ok(T),
    /// What was wrong with the value, e.g. `expected true or false, not "yes"`.
    Bad(String),
}

impl<T> Typed<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Typed::Ok(t) => Some(t),
            Typed::Bad(_) => None,
        }
    }
}

/// How a [`Typed`] leaf takes each kind of YAML node; anything not taken is a wrong type.
pub trait Leaf: Sized {
    /// What the leaf is, for messages: `true or false`, `a whole number`, `a list`.
    const WHAT: &'static str;
    /// A list: a single value in its place gets the hint to write it as a list of one.
    const LIST: bool = false;
    fn from_bool(_: bool) -> Option<Result<Self, String>> {
        None
    }
    fn from_i128(_: i128) -> Option<Result<Self, String>> {
        None
    }
    fn from_seq<'de, A: serde::de::SeqAccess<'de>>(_: &mut A) -> Option<Result<Self, A::Error>> {
        None
    }
}

impl Leaf for bool {
    const WHAT: &'static str = "true or false";
    fn from_bool(b: bool) -> Option<Result<Self, String>> {
        Some(Ok(b))
    }
}

macro_rules! count_leaf {
    ($($t:ty),*) => {$(
        impl Leaf for $t {
            const WHAT: &'static str = "a whole number";
            fn from_i128(n: i128) -> Option<Result<Self, String>> {
                Some(<$t>::try_from(n).map_err(|_| format!("{n} is out of range ({}..={})", <$t>::MIN, <$t>::MAX)))
            }
        }
    )*};
}
count_leaf!(u32, u64, i64);

impl<T: for<'a> Deserialize<'a>> Leaf for Vec<T> {
    const WHAT: &'static str = "a list, like [a, b]";
    const LIST: bool = true;
    fn from_seq<'de, A: serde::de::SeqAccess<'de>>(seq: &mut A) -> Option<Result<Self, A::Error>> {
        let mut v = Vec::new();
        loop {
            match seq.next_element::<T>() {
                Ok(Some(t)) => v.push(t),
                Ok(None) => return Some(Ok(v)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<'de, T: Leaf> Deserialize<'de> for Typed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, SeqAccess};
        struct V<T>(std::marker::PhantomData<T>);
        /// `found` describes the value; `scalar` is its text, when it is a single value.
        fn wrong<T: Leaf, E>(found: String, scalar: Option<String>) -> Result<Typed<T>, E> {
            let hint = match scalar {
                Some(v) if T::LIST && v.split_whitespace().count() > 1 => {
                    format!(" (one item each: [{}])", v.split_whitespace().collect::<Vec<_>>().join(", "))
                }
                Some(v) if T::LIST => format!(" (for one item, write [{v}])"),
                _ => String::new(),
            };
            Ok(Typed::Bad(format!("expected {}, not {found}{hint}", T::WHAT)))
        }
        /// Consumes any node without telling serde_ignored (which reports what `IgnoredAny`
        /// reads as unknown fields).
        struct Skip;
        impl<'de> Deserialize<'de> for Skip {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct S;
                impl<'de> serde::de::Visitor<'de> for S {
                    type Value = Skip;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("anything")
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_i128<E>(self, _: i128) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_unit<E>(self) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_none<E>(self) -> Result<Skip, E> {
                        Ok(Skip)
                    }
                    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
                        Skip::deserialize(d)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                        while seq.next_element::<Skip>()?.is_some() {}
                        Ok(Skip)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                        while map.next_entry::<Skip, Skip>()?.is_some() {}
                        Ok(Skip)
                    }
                }
                d.deserialize_any(S)
            }
        }
        impl<'de, T: Leaf> serde::de::Visitor<'de> for V<T> {
            type Value = Typed<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Typed<T>, E> {
                match T::from_bool(b) {
                    Some(r) => Ok(r.map_or_else(Typed::Bad, Typed::Ok)),
                    None => wrong(format!("`{b}`"), Some(b.to_string())),
                }
            }
            fn visit_i64<E>(self, n: i64) -> Result<Typed<T>, E> {
                match T::from_i128(n.into()) {
                    Some(r) => Ok(r.map_or_else(Typed::Bad, Typed::Ok)),
                    None => wrong(format!("the number {n}"), Some(n.to_string())),
                }
            }
            fn visit_u64<E>(self, n: u64) -> Result<Typed<T>, E> {
                match T::from_i128(n.into()) {
                    Some(r) => Ok(r.map_or_else(Typed::Bad, Typed::Ok)),
                    None => wrong(format!("the number {n}"), Some(n.to_string())),
                }
            }
            fn visit_i128<E>(self, n: i128) -> Result<Typed<T>, E> {
                match T::from_i128(n) {
                    Some(r) => Ok(r.map_or_else(Typed::Bad, Typed::Ok)),
                    None => wrong(format!("the number {n}"), Some(n.to_string())),
                }
            }
            fn visit_f64<E>(self, n: f64) -> Result<Typed<T>, E> {
                wrong(format!("the number {n}"), Some(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Typed<T>, E> {
                wrong(format!("the text {s:?}"), Some(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Typed<T>, A::Error> {
                if let Some(r) = T::from_seq(&mut seq) {
                    return r.map(Typed::Ok);
                }
                while seq.next_element::<Skip>()?.is_some() {}
                wrong("a list".into(), None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Typed<T>, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                wrong("a mapping".into(), None)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `kind: Agent` — one bounded job on a schedule, or one long-running service.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields, title = "fleetwright Agent")]
pub struct AgentDoc {
    /// Always `fleetwright/v1`.
    pub api_version: String,
    /// `Agent`.
    pub kind: String,
    /// `[a-z0-9][a-z0-9-]{0,62}`, unique in the fleet; the unit is `<unitPrefix><name>.service`.
    pub name: Option<String>,
    pub description: Option<String>,
    /// `false`: units are installed but the timer/service is stopped and disabled.
    #[schemars(with = "Option<bool>")]
    pub enabled: Option<Typed<bool>>,
    /// Host names or labels that run this agent; default every host.
    #[schemars(with = "Option<Vec<String>>")]
    pub hosts: Option<Typed<Vec<String>>>,
    pub run: Option<RunSpec>,
    /// Present: a timer and a oneshot service. Absent: a long-running service.
    pub schedule: Option<ScheduleSpec>,
    pub service: Option<ServiceSpec>,
    pub resources: Option<ResourcesSpec>,
    pub hardening: Option<HardeningSpec>,
    pub concurrency: Option<ConcurrencySpec>,
    pub logs: Option<Vec<LogSpec>>,
    pub backups: Option<Vec<BackupSpec>>,
    pub health: Option<HealthSpec>,
    /// Agents this one is ordered after (`After=` and `Wants=`).
    #[schemars(with = "Option<Vec<String>>")]
    pub after: Option<Typed<Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RunSpec {
    /// argv, no shell; the program is an absolute path.
    #[schemars(with = "Option<Vec<String>>")]
    pub command: Option<Typed<Vec<String>>>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub environment: Option<BTreeMap<String, Scalar>>,
    /// May be missing at apply time.
    pub environment_file: Option<String>,
    /// `LoadCredential=NAME:PATH`: secrets never live in the repository.
    pub credentials: Option<BTreeMap<String, String>>,
    /// Credential name → an age-encrypted file of the fleet repository (relative to the fleet
    /// directory, ending in `.age`), decrypted on the host and delivered like `credentials`
    /// (`$CREDENTIALS_DIRECTORY/NAME`); the plaintext never rests on disk.
    pub secrets: Option<BTreeMap<String, String>>,
    /// Hard wall-clock cap for one run.
    pub timeout: Option<Scalar>,
    /// Extra exit codes that count as success.
    #[schemars(with = "Option<Vec<i64>>")]
    pub success_exit_codes: Option<Typed<Vec<i64>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A systemd OnCalendar expression.
    pub calendar: Option<String>,
    /// A 5-field cron expression, translated to an equivalent OnCalendar.
    pub cron: Option<String>,
    /// Run every so often (OnBootSec + OnUnitActiveSec).
    pub every: Option<Scalar>,
    #[schemars(with = "Option<bool>")]
    pub persistent: Option<Typed<bool>>,
    pub randomized_delay: Option<Scalar>,
    pub accuracy: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `no` | `on-failure` | `always`.
    pub restart: Option<String>,
    pub restart_sec: Option<Scalar>,
    /// WatchdogSec; the agent must send WATCHDOG=1.
    pub watchdog: Option<Scalar>,
    /// `restart` | `reload` | `none`: what a changed spec does to a running service.
    pub on_change: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ResourcesSpec {
    pub memory_max: Option<Scalar>,
    pub memory_swap_max: Option<Scalar>,
    pub cpu_quota: Option<Scalar>,
    pub tasks_max: Option<Scalar>,
    pub nofile: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HardeningSpec {
    #[schemars(with = "Option<bool>")]
    pub no_new_privileges: Option<Typed<bool>>,
    #[schemars(with = "Option<bool>")]
    pub private_tmp: Option<Typed<bool>>,
    /// `true` | `false` | `full` | `strict`.
    pub protect_system: Option<Scalar>,
    /// `true` | `false` | `read-only` | `tmpfs`.
    pub protect_home: Option<Scalar>,
    #[schemars(with = "Option<Vec<String>>")]
    pub read_write_paths: Option<Typed<Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ConcurrencySpec {
    pub group: Option<String>,
    #[schemars(with = "Option<u32>")]
    pub limit: Option<Typed<u32>>,
    /// `skip` | `wait`.
    pub when_full: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct LogSpec {
    pub path: Option<String>,
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub max_age: Option<Scalar>,
    #[schemars(with = "Option<u64>")]
    pub max_files: Option<Typed<u64>>,
    pub max_size: Option<Scalar>,
    pub schedule: Option<ScheduleSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct BackupSpec {
    pub sqlite: Option<String>,
    pub to: Option<String>,
    pub schedule: Option<ScheduleSpec>,
    pub keep: Option<KeepSpec>,
    #[schemars(with = "Option<bool>")]
    pub verify: Option<Typed<bool>>,
    #[schemars(with = "Option<bool>")]
    pub wal: Option<Typed<bool>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct KeepSpec {
    #[schemars(with = "Option<u32>")]
    pub last: Option<Typed<u32>>,
    #[schemars(with = "Option<u32>")]
    pub daily: Option<Typed<u32>>,
    #[schemars(with = "Option<u32>")]
    pub weekly: Option<Typed<u32>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HealthSpec {
    pub heartbeat: Option<HeartbeatSpec>,
    #[schemars(with = "Option<Vec<String>>")]
    pub check: Option<Typed<Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HeartbeatSpec {
    pub file: Option<String>,
    pub max_age: Option<Scalar>,
}

/// `kind: Fleet` — at most one per repository.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields, title = "fleetwright Fleet")]
pub struct FleetDoc {
    pub api_version: String,
    pub kind: String,
    /// Unit names are `<prefix><name>.service`; default `agent-`.
    pub unit_prefix: Option<String>,
    /// May an agent run as root.
    #[schemars(with = "Option<bool>")]
    pub allow_root: Option<Typed<bool>>,
    /// Directories from which agents' `credentials` and `environmentFile` may come (root reads
    /// them for the agent); default `/etc/fleetwright/env` and `/etc/fleetwright/secrets`.
    #[schemars(with = "Option<Vec<String>>")]
    pub credential_dirs: Option<Typed<Vec<String>>>,
    /// Operators' public keys (`age1…` or `ssh-ed25519 …`): every secret is encrypted to them
    /// too, so that they can edit it (`fleetwright secret edit`).
    #[schemars(with = "Option<Vec<String>>")]
    pub operators: Option<Typed<Vec<String>>>,
    /// Merged under every Agent; the agent's own value wins.
    pub defaults: Option<DefaultsSpec>,
    pub hosts: Option<BTreeMap<String, HostSpec>>,
    /// A journald drop-in for the host.
    pub journal: Option<JournalSpec>,
    /// Where the daemon reports: commit statuses on the forge, deploy events, agents'
    /// failures (docs/notifications.md).
    pub notify: Option<Vec<NotifySpec>>,
}

/// One notification sink of the Fleet's `notify` list. Credentials are never written here:
/// `tokenFile` names a file on the host.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct NotifySpec {
    /// gitea, github, gitlab (commit statuses), webhook (JSON), slack (Slack-compatible
    /// incoming webhooks), ntfy.
    pub kind: Option<String>,
    /// The forge's or the receiver's base URL (github: https://api.github.com by default).
    pub url: Option<String>,
    /// A file on the host holding the URL, for receivers whose URL is itself the secret (a
    /// Slack incoming webhook); instead of `url`.
    pub url_file: Option<String>,
    /// owner/name on gitea or github (default: from the repository URL the daemon follows).
    pub repo: Option<String>,
    /// The project's path (group/name) or numeric id on gitlab (default: from the repository URL).
    pub project: Option<String>,
    /// An absolute path on the host to a file holding the API token (forges; optional for
    /// webhook and ntfy, sent as a bearer token).
    pub token_file: Option<String>,
    /// A link shown with each status or message (a dashboard); `{host}` and `{commit}` are
    /// replaced.
    pub target_url: Option<String>,
    /// Only these events (default: every event the kind can show).
    #[schemars(with = "Option<Vec<String>>")]
    pub events: Option<Typed<Vec<String>>>,
    /// Only the failures of these agents (default: every agent).
    #[schemars(with = "Option<Vec<String>>")]
    pub agents: Option<Typed<Vec<String>>>,
    /// Never a literal credential in the repository: refused, with the way to a `tokenFile`.
    #[schemars(skip)]
    pub token: Option<Scalar>,
    #[schemars(skip)]
    pub password: Option<Scalar>,
    #[schemars(skip)]
    pub secret: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct DefaultsSpec {
    pub run: Option<RunSpec>,
    pub schedule: Option<ScheduleSpec>,
    pub service: Option<ServiceSpec>,
    pub resources: Option<ResourcesSpec>,
    pub hardening: Option<HardeningSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HostSpec {
    #[schemars(with = "Option<Vec<String>>")]
    pub labels: Option<Typed<Vec<String>>>,
    /// The host's public keys (its `/etc/ssh/ssh_host_ed25519_key.pub` line, or an `age1…`
    /// recipient): secrets of the agents it runs must be encrypted to one of them.
    #[schemars(with = "Option<Vec<String>>")]
    pub keys: Option<Typed<Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct JournalSpec {
    pub max_use: Option<Scalar>,
    pub max_retention: Option<Scalar>,
}

/// Fill every unset field of `self` from `defaults` (the agent's own value wins; maps merge key
/// by key).
pub trait MergeDefaults {
    fn merge_defaults(&mut self, defaults: &Self);
}

macro_rules! merge_fields {
    ($ty:ty { $($f:ident),* } maps { $($m:ident),* }) => {
        impl MergeDefaults for $ty {
            fn merge_defaults(&mut self, d: &Self) {
                $( if self.$f.is_none() { self.$f = d.$f.clone(); } )*
                $(
                    match (&mut self.$m, &d.$m) {
                        (Some(mine), Some(theirs)) => {
                            for (k, v) in theirs {
                                mine.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                        }
                        (None, Some(theirs)) => self.$m = Some(theirs.clone()),
                        _ => {}
                    }
                )*
            }
        }
    };
}

merge_fields!(RunSpec { command, working_directory, user, group, environment_file, timeout, success_exit_codes } maps { environment, credentials, secrets });
merge_fields!(ScheduleSpec { persistent, randomized_delay, accuracy } maps {});
merge_fields!(ServiceSpec { restart, restart_sec, watchdog, on_change } maps {});
merge_fields!(ResourcesSpec { memory_max, memory_swap_max, cpu_quota, tasks_max, nofile } maps {});
merge_fields!(HardeningSpec { no_new_privileges, private_tmp, protect_system, protect_home, read_write_paths } maps {});

fn merge_opt<T: MergeDefaults + Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
    match (mine.as_mut(), theirs) {
        (Some(m), Some(t)) => m.merge_defaults(t),
        (None, Some(t)) => *mine = Some(t.clone()),
        _ => {}
    }
}

impl AgentDoc {
    /// Merge the Fleet's defaults under this agent. A schedule default only fills in a schedule
    /// the agent already has (it never turns a service into a timer); service defaults apply to
    /// long-running agents only.
    pub fn merge_defaults(&mut self, d: &DefaultsSpec) {
        merge_opt(&mut self.run, &d.run);
        if let (Some(s), Some(ds)) = (self.schedule.as_mut(), d.schedule.as_ref()) {
            s.merge_defaults(ds);
        }
        if self.schedule.is_none() {
            merge_opt(&mut self.service, &d.service);
        }
        merge_opt(&mut self.resources, &d.resources);
        merge_opt(&mut self.hardening, &d.hardening);
    }
}
