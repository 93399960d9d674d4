//! Desired state (pure): a validated fleet, the host it is for and the commit → every unit file
//! this host should have, with each agent's deploy identity.

use std::collections::BTreeMap;

use crate::inventory::Inventory;
use crate::render::{RenderCtx, render_agent};
use crate::spec::model::{Fleet, Mode, OnChange};
use crate::types::Role;
use crate::unit::UnitFile;

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub commit: String,
    pub units: BTreeMap<String, DesiredUnit>,
    pub agents: BTreeMap<String, AgentDeploy>,
    /// Host configuration files outside the unit directory (absolute path → content), each
    /// with the unit to try-restart when it changes: the journald drop-in.
    pub config: BTreeMap<String, (String, String)>,
    /// Agents whose units the renderer's last-line check refused, with why: the plan of such a
    /// desired state cannot be applied.
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUnit {
    pub agent: String,
    pub role: Role,
    /// The file as a value: what its settings are read from ([Install] links, health checks).
    pub file: UnitFile,
    /// `file` printed: the bytes written, hashed and diffed.
    pub content: String,
    /// The agent's `enabled`.
    pub enabled: bool,
    pub on_change: OnChange,
    /// `health.check` of a long-running service: run before it is restarted or reloaded.
    pub check: Option<HealthCheck>,
}

/// A command run the way the agent's (new) service runs: with these properties of its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub argv: Vec<String>,
    /// `[Service]` settings of the unit that shape how it runs (user, environment, directory,
    /// credentials, sandboxing, resources), as `systemd-run --property` takes them.
    pub properties: Vec<(String, String)>,
}

/// The settings of a service that a health check runs with, as `systemd-run -p` takes them;
/// the ones that control the service's own life (Type, Restart, Exec*, timeouts, watchdog)
/// are not among them.
const CHECK_PROPERTIES: [&str; 17] = [
    "User",
    "Group",
    "WorkingDirectory",
    "Environment",
    "EnvironmentFile",
    "LoadCredential",
    "NoNewPrivileges",
    "PrivateTmp",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "MemoryMax",
    "MemorySwapMax",
    "CPUQuota",
    "TasksMax",
    "LimitNOFILE",
    "UMask",
];

fn check_properties(file: &UnitFile) -> Vec<(String, String)> {
    file.entries("Service")
        .filter(|(k, _)| CHECK_PROPERTIES.contains(k))
        // Transient properties get no specifier expansion: `%%` is a plain `%` there.
        .map(|(k, v)| (k.to_string(), v.replace("%%", "%")))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDeploy {
    /// Its SQLite backups: `(database, backup directory)`.
    pub backups: Vec<(String, String)>,
    pub spec_hash: String,
    /// The commit that last changed the agent: kept from the inventory while the spec hash is
    /// the same, else this commit.
    pub changed_commit: String,
}

pub fn desired(fleet: &Fleet, host: &str, ctx: &RenderCtx, commit: &str, prior: &Inventory) -> Desired {
    let mut units = BTreeMap::new();
    let mut agents = BTreeMap::new();
    let mut refused = Vec::new();
    for agent in fleet.agents_for_host(host) {
        let spec_hash = agent.spec_hash();
        let changed_commit =
            prior.agents.get(&agent.name).filter(|r| r.spec_hash == spec_hash).map(|r| r.changed_commit.clone()).unwrap_or_else(|| commit.to_string());
        let on_change = match &agent.mode {
            Mode::Service(s) => s.on_change,
            Mode::Scheduled(_) => OnChange::None,
        };
        let rendered = match render_agent(fleet, agent, ctx, &changed_commit) {
            Ok(r) => r,
            Err(e) => {
                refused.push(format!("agent {:?}: {e}", agent.name));
                continue;
            }
        };
        for u in rendered {
            let check = match (u.role, agent.health.as_ref().and_then(|h| h.check.clone())) {
                (Role::Service, Some(argv)) => Some(HealthCheck { argv, properties: check_properties(&u.file) }),
                _ => None,
            };
            let unit = DesiredUnit { agent: agent.name.clone(), role: u.role, file: u.file, content: u.content, enabled: agent.enabled, on_change, check };
            units.insert(u.name, unit);
        }
        let backups = agent.backups.iter().map(|b| (b.sqlite.clone(), b.to.clone())).collect();
        agents.insert(agent.name.clone(), AgentDeploy { backups, spec_hash, changed_commit });
    }
    let mut config = BTreeMap::new();
    if ctx.scope == crate::types::Scope::System {
        // The commit in its header is the one that last changed the Fleet's journal: kept from
        // the inventory while the limits are the same, like an agent's.
        if let Some(content) = crate::render::render_journal(fleet, commit) {
            let stable = prior.config.get(crate::render::JOURNALD_DROPIN).and_then(|r| {
                let old = crate::render::render_journal(fleet, &r.commit)?;
                (crate::types::sha256(&old) == r.sha256).then_some(old)
            });
            config.insert(crate::render::JOURNALD_DROPIN.to_string(), (stable.unwrap_or(content), "systemd-journald.service".to_string()));
        }
    }
    Desired { commit: commit.to_string(), units, agents, config, refused }
}
