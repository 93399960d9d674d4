//! The validated fleet: typed, defaults merged, sorted by name. Everything downstream (render,
//! plan, inventory, status) reads these types, never the raw YAML.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::values::{Duration, Limit, Size};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub unit_prefix: String,
    pub allow_root: bool,
    /// Host name → its labels.
    pub hosts: BTreeMap<String, Vec<String>>,
    pub journal: Option<Journal>,
    /// The directories from which `credentials` and `environmentFile` may come (PID 1 reads
    /// them as root for the agent).
    pub credential_dirs: Vec<String>,
    /// Host name → the public keys its secrets are encrypted to (`hosts.NAME.keys`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub host_keys: BTreeMap<String, Vec<String>>,
    /// Operators' public keys: every secret is encrypted to them too (`operators`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<String>,
    /// Where the daemon reports (the `notify` list): commit statuses, events, agents' failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySink>,
    /// What is valid but unwise (a secret-looking environment variable), at its position.
    #[serde(skip)]
    pub warnings: Vec<crate::spec::Diagnostic>,
    /// Sorted by name.
    pub agents: Vec<Agent>,
}

/// Where `credentials` and `environmentFile` may come from when the Fleet lists nothing.
pub const DEFAULT_CREDENTIAL_DIRS: [&str; 2] = ["/etc/fleetwright/env", "/etc/fleetwright/secrets"];

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            unit_prefix: "agent-".into(),
            allow_root: false,
            hosts: BTreeMap::new(),
            journal: None,
            credential_dirs: DEFAULT_CREDENTIAL_DIRS.iter().map(|d| d.to_string()).collect(),
            host_keys: BTreeMap::new(),
            operators: Vec::new(),
            notify: Vec::new(),
            warnings: Vec::new(),
            agents: Vec::new(),
        }
    }
}

impl Fleet {
    /// The agents that run on `host`: those with no `hosts`, or naming the host or one of its labels.
    pub fn agents_for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Agent> + 'a {
        self.agents.iter().filter(move |a| self.runs_on(a, host))
    }
    /// Does `agent` run on `host` ([`Fleet::agents_for_host`])?
    pub fn runs_on(&self, agent: &Agent, host: &str) -> bool {
        let labels = self.hosts.get(host);
        agent.hosts.is_empty() || agent.hosts.iter().any(|h| h == host || labels.is_some_and(|l| l.contains(h)))
    }
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }
}

/// One sink of the Fleet's `notify` list, checked (docs/notifications.md). Kept by the daemon
/// in its history too (the failure reporter reads it there), hence `Deserialize`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifySink {
    pub kind: SinkKind,
    /// The base URL (a forge's API or web root, the receiver's URL); None with `url_file`.
    pub url: Option<String>,
    /// A file on the host holding the URL (`urlFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<String>,
    /// owner/name (gitea, github) or the project's path or id (gitlab); None: from the URL of
    /// the repository the daemon follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// A link shown with each status or message; `{host}` and `{commit}` replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// Only these events; empty: every event the kind shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Only the failures of these agents; empty: every agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Gitea,
    Github,
    Gitlab,
    Webhook,
    Slack,
    Ntfy,
}

impl SinkKind {
    pub const ALL: [&'static str; 6] = ["gitea", "github", "gitlab", "webhook", "slack", "ntfy"];

    pub fn parse(s: &str) -> Option<SinkKind> {
        Some(match s {
            "gitea" => SinkKind::Gitea,
            "github" => SinkKind::Github,
            "gitlab" => SinkKind::Gitlab,
            "webhook" => SinkKind::Webhook,
            "slack" => SinkKind::Slack,
            "ntfy" => SinkKind::Ntfy,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Gitea => "gitea",
            SinkKind::Github => "github",
            SinkKind::Gitlab => "gitlab",
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Ntfy => "ntfy",
        }
    }
    /// A forge: it shows commit statuses, and only those.
    pub fn is_forge(self) -> bool {
        matches!(self, SinkKind::Gitea | SinkKind::Github | SinkKind::Gitlab)
    }
}

/// GitHub's API when a `github` sink names no `url`.
pub const GITHUB_API: &str = "https://api.github.com";

/// Every event a sink can be sent (`events:` filters by these names). The first seven are about
/// a commit (a forge shows them as its status), the others about an agent or a test.
pub const NOTIFY_EVENTS: [&str; 10] = ["pending", "deployed", "rolled-back", "failed", "invalid", "held", "refused", "agent-failed", "agent-recovered", "test"];

/// Whether `event` is about a commit (a commit status on a forge).
pub fn is_commit_event(event: &str) -> bool {
    NOTIFY_EVENTS[..7].contains(&event)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub max_use: Option<Size>,
    pub max_retention: Option<Duration>,
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub hosts: Vec<String>,
    pub run: Run,
    pub mode: Mode,
    pub resources: Resources,
    pub hardening: Hardening,
    pub concurrency: Option<Concurrency>,
    pub logs: Vec<LogRule>,
    pub backups: Vec<Backup>,
    pub health: Option<Health>,
    pub after: Vec<String>,
    /// Not part of the spec hash: moving an agent to another file changes nothing it runs.
    #[serde(skip)]
    pub source: Source,
}

impl Agent {
    /// A stable hash of everything that defines the agent (not where it is written).
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("agent model serializes");
        hex::encode(Sha256::digest(&json))
    }
    pub fn schedule(&self) -> Option<&Schedule> {
        match &self.mode {
            Mode::Scheduled(s) => Some(s),
            Mode::Service(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub command: Vec<String>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub environment_file: Option<String>,
    pub credentials: BTreeMap<String, String>,
    /// `run.secrets`: credential name → an age-encrypted file of the repository. (Left out
    /// of the spec hash when empty, so that agents without secrets hash as they always have.)
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretRef>,
    pub timeout: Option<Duration>,
    pub success_exit_codes: Vec<u8>,
}

/// A secret file of the repository, as an agent names it. Only its path is part of the agent's
/// spec (and its hash): a file encrypted again, to the same value or not, is told apart by the
/// host (`secrets`), never by the spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretRef {
    /// Relative to the fleet directory, normalized (`secrets::normalize_path`).
    pub path: String,
    /// Where the spec names it.
    #[serde(skip)]
    pub loc: crate::spec::Loc,
    /// The file's bytes in the commit (`secrets::attach`); empty until then.
    #[serde(skip)]
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// A timer plus a oneshot service.
    Scheduled(Schedule),
    /// A long-running service.
    Service(Service),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub trigger: Trigger,
    pub persistent: bool,
    pub randomized_delay: Option<Duration>,
    pub accuracy: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// An OnCalendar expression, as written or translated from cron (`cron` keeps the original).
    /// `also`: further expressions the timer fires on too (a cron line restricting both its
    /// day-of-month and its day-of-week fires when either matches: two `OnCalendar=` lines).
    Calendar {
        expr: String,
        cron: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        also: Vec<String>,
    },
    /// OnBootSec + OnUnitActiveSec.
    Every(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

impl Restart {
    pub fn as_systemd(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// What a changed spec does to a running long-running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    Restart,
    Reload,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub restart: Restart,
    pub restart_sec: Option<Duration>,
    pub watchdog: Option<Duration>,
    pub on_change: OnChange,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub memory_max: Option<Size>,
    pub memory_swap_max: Option<Size>,
    pub cpu_quota: Option<u32>,
    pub tasks_max: Option<Limit>,
    pub nofile: Option<Limit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hardening {
    pub no_new_privileges: Option<bool>,
    pub private_tmp: Option<bool>,
    /// `true`, `false`, `full` or `strict`.
    pub protect_system: Option<String>,
    /// `true`, `false`, `read-only` or `tmpfs`.
    pub protect_home: Option<String>,
    pub read_write_paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    Skip,
    Wait,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub group: String,
    pub limit: u32,
    pub when_full: WhenFull,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRule {
    pub path: String,
    pub pattern: String,
    pub max_age: Option<Duration>,
    pub max_files: Option<u64>,
    pub max_size: Option<Size>,
    pub calendar: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub sqlite: String,
    pub to: String,
    pub calendar: String,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub verify: bool,
    pub wal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub heartbeat: Option<Heartbeat>,
    pub check: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub file: String,
    pub max_age: Duration,
}
