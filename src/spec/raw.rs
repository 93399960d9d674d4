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
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
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
    pub enabled: Option<bool>,
    /// Host names or labels that run this agent; default every host.
    pub hosts: Option<Vec<String>>,
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
    pub after: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct RunSpec {
    /// argv, no shell; the program is an absolute path.
    pub command: Option<Vec<String>>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub environment: Option<BTreeMap<String, Scalar>>,
    /// May be missing at apply time.
    pub environment_file: Option<String>,
    /// `LoadCredential=NAME:PATH`: secrets never live in the repository.
    pub credentials: Option<BTreeMap<String, String>>,
    /// Hard wall-clock cap for one run.
    pub timeout: Option<Scalar>,
    /// Extra exit codes that count as success.
    pub success_exit_codes: Option<Vec<i64>>,
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
    pub persistent: Option<bool>,
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
    pub no_new_privileges: Option<bool>,
    pub private_tmp: Option<bool>,
    /// `true` | `false` | `full` | `strict`.
    pub protect_system: Option<Scalar>,
    /// `true` | `false` | `read-only` | `tmpfs`.
    pub protect_home: Option<Scalar>,
    pub read_write_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ConcurrencySpec {
    pub group: Option<String>,
    pub limit: Option<u32>,
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
    pub max_files: Option<u64>,
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
    pub verify: Option<bool>,
    pub wal: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct KeepSpec {
    pub last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct HealthSpec {
    pub heartbeat: Option<HeartbeatSpec>,
    pub check: Option<Vec<String>>,
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
    pub allow_root: Option<bool>,
    /// Merged under every Agent; the agent's own value wins.
    pub defaults: Option<DefaultsSpec>,
    pub hosts: Option<BTreeMap<String, HostSpec>>,
    /// A journald drop-in for the host.
    pub journal: Option<JournalSpec>,
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
    pub labels: Option<Vec<String>>,
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

merge_fields!(RunSpec { command, working_directory, user, group, environment_file, timeout, success_exit_codes } maps { environment, credentials });
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
