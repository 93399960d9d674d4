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
    /// The encrypted credential files the units read (`LoadCredentialEncrypted=`), by absolute
    /// path: the host writes each one that is missing before the units that read it.
    pub credentials: BTreeMap<String, Credential>,
}

/// One secret of one agent, as a credential file on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub agent: String,
    /// Its name in `$CREDENTIALS_DIRECTORY` (systemd checks it against the file's own).
    pub name: String,
    /// The secret file in the repository.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUnit {
    pub agent: String,
    pub role: Role,
    /// The `WantedBy=` targets of its [Install] section: the links `enable` makes. (Read from
    /// the rendered value; the value itself is not kept: a daemon holds a whole fleet of these.)
    pub wanted_by: Vec<String>,
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
const CHECK_PROPERTIES: [&str; 18] = [
    "User",
    "Group",
    "WorkingDirectory",
    "Environment",
    "EnvironmentFile",
    "LoadCredential",
    "LoadCredentialEncrypted",
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
    /// The spec's hash (`Agent::spec_hash`); with secrets, of it and their value ids.
    pub spec_hash: String,
    /// The commit that last changed the agent: kept from the inventory while the spec hash is
    /// the same, else this commit.
    pub changed_commit: String,
}

pub fn desired(fleet: &Fleet, host: &str, ctx: &RenderCtx, commit: &str, prior: &Inventory) -> Desired {
    let mut units = BTreeMap::new();
    let mut agents = BTreeMap::new();
    let mut refused = Vec::new();
    let mut credentials = BTreeMap::new();
    for agent in fleet.agents_for_host(host) {
        // A new value of a secret is a change of the agent (its deploy marker names the commit
        // that brought it): the hash it is deployed by covers the secrets' value ids.
        let mut spec_hash = agent.spec_hash();
        if !agent.run.secrets.is_empty() {
            let ids: Vec<String> = agent.run.secrets.iter().map(|(n, s)| format!("{n}={}", ctx.secret_ids.of(s).unwrap_or_default())).collect();
            spec_hash = crate::types::sha256(&format!("{spec_hash} secrets {}", ids.join(" ")));
        }
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
            let wanted_by = u.file.values("Install", "WantedBy").flat_map(str::split_whitespace).map(str::to_string).collect();
            let unit = DesiredUnit { agent: agent.name.clone(), role: u.role, wanted_by, content: u.content, enabled: agent.enabled, on_change, check };
            units.insert(u.name, unit);
        }
        for (name, secret) in &agent.run.secrets {
            if let Some(id) = ctx.secret_ids.of(secret) {
                let path = crate::render::credential_path(ctx, &agent.name, name, &id);
                credentials.insert(path, Credential { agent: agent.name.clone(), name: name.clone(), secret: secret.path.clone() });
            }
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
    Desired { commit: commit.to_string(), units, agents, config, refused, credentials }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{AgentRecord, ConfigRecord};
    use crate::render::JOURNALD_DROPIN;
    use crate::types::Scope;

    const FLEET: &str =
        "apiVersion: fleetwright/v1\nkind: Fleet\nhosts: {vps1: {labels: [edge]}, vps2: {}}\njournal: {maxUse: 64M}\ndefaults: {run: {user: agent}}\n";
    const WEB: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: web\nhosts: [vps1]\n\
        run: {command: [/usr/bin/web], workingDirectory: /srv/web, environment: {SHARE: \"50%\"}}\n\
        service: {onChange: reload}\nhealth: {check: [/usr/bin/web, --check], heartbeat: {file: /srv/web/health, maxAge: 30s}}\n";
    const EDGE: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: edge\nhosts: [edge]\nrun: {command: [/usr/bin/edge]}\nservice: {onChange: none}\n";
    const ELSEWHERE: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: elsewhere\nhosts: [vps2]\nrun: {command: [/usr/bin/elsewhere]}\n";
    const NIGHTLY: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: nightly\nenabled: false\nrun: {command: [/usr/bin/nightly]}\n\
        schedule: {calendar: daily}\nbackups: [{sqlite: /srv/nightly/db.sqlite, to: /var/backups/nightly}]\nlogs: [{path: /srv/nightly/logs, maxAge: 7d}]\n";

    fn load(files: &[(&str, &str)]) -> Fleet {
        let files: Vec<(String, String)> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        crate::spec::load(&files, &crate::spec::calendar::NoDatabase).unwrap_or_else(|d| panic!("the fleet does not load: {d:?}"))
    }

    fn fleet() -> Fleet {
        load(&[("fleet.yaml", FLEET), ("web.yaml", WEB), ("edge.yaml", EDGE), ("elsewhere.yaml", ELSEWHERE), ("nightly.yaml", NIGHTLY)])
    }

    fn ctx(scope: Scope) -> RenderCtx {
        RenderCtx { scope, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() }
    }

    fn record(spec_hash: &str, changed_commit: &str) -> AgentRecord {
        AgentRecord {
            spec_hash: spec_hash.into(),
            changed_commit: changed_commit.into(),
            changed_at: String::new(),
            applied_commit: changed_commit.into(),
            applied_at: String::new(),
            enabled: true,
            backups: vec![],
        }
    }

    #[test]
    fn every_unit_of_this_hosts_agents_with_its_role_and_flags() {
        let d = desired(&fleet(), "vps1", &ctx(Scope::System), "c1", &Inventory::default());
        assert_eq!(d.commit, "c1");
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        // By name, host, or one of the host's labels (`edge`); an agent of another host is not here.
        let got: Vec<(&str, &str, Role, bool, OnChange)> =
            d.units.iter().map(|(n, u)| (n.as_str(), u.agent.as_str(), u.role, u.enabled, u.on_change)).collect();
        assert_eq!(
            got,
            [
                ("agent-edge.service", "edge", Role::Service, true, OnChange::None),
                // Helper units only where the spec asks for them: backups and logs here, a heartbeat for web.
                ("agent-nightly.backup.service", "nightly", Role::AuxJob, false, OnChange::None),
                ("agent-nightly.backup.timer", "nightly", Role::AuxTimer, false, OnChange::None),
                ("agent-nightly.logs.service", "nightly", Role::AuxJob, false, OnChange::None),
                ("agent-nightly.logs.timer", "nightly", Role::AuxTimer, false, OnChange::None),
                ("agent-nightly.service", "nightly", Role::Job, false, OnChange::None),
                ("agent-nightly.timer", "nightly", Role::Timer, false, OnChange::None),
                ("agent-web.heartbeat.service", "web", Role::AuxJob, true, OnChange::Reload),
                ("agent-web.heartbeat.timer", "web", Role::AuxTimer, true, OnChange::Reload),
                ("agent-web.service", "web", Role::Service, true, OnChange::Reload),
            ]
        );
        for (name, u) in &d.units {
            assert_eq!(u.wanted_by, crate::unit::wanted_by(&u.content), "{name}: the links are the text's [Install]");
        }
        assert_eq!(d.agents.keys().map(String::as_str).collect::<Vec<_>>(), ["edge", "nightly", "web"]);
        assert_eq!(d.agents["nightly"].backups, [("/srv/nightly/db.sqlite".to_string(), "/var/backups/nightly".to_string())]);
        assert!(d.agents["web"].backups.is_empty());

        // Another host: its own agent and the one for every host.
        let other = desired(&fleet(), "vps2", &ctx(Scope::System), "c1", &Inventory::default());
        assert_eq!(other.agents.keys().map(String::as_str).collect::<Vec<_>>(), ["elsewhere", "nightly"]);
        assert!(other.units.contains_key("agent-elsewhere.service") && !other.units.keys().any(|n| n.starts_with("agent-web")));
    }

    #[test]
    fn a_health_check_runs_with_the_service_settings_of_its_unit() {
        let d = desired(&fleet(), "vps1", &ctx(Scope::System), "c1", &Inventory::default());
        let check = d.units["agent-web.service"].check.as_ref().expect("web has a health.check");
        assert_eq!(check.argv, ["/usr/bin/web", "--check"]);
        let props: Vec<(&str, &str)> = check.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(props.contains(&("User", "agent")), "{props:?}");
        assert!(props.contains(&("WorkingDirectory", "/srv/web")), "{props:?}");
        // `%%` in the unit file is a plain `%` for a transient unit's property.
        assert!(d.units["agent-web.service"].content.contains("Environment=\"SHARE=50%%\"\n"));
        assert!(props.contains(&("Environment", "\"SHARE=50%\"")), "{props:?}");
        // Not the settings that make it a service.
        assert!(!props.iter().any(|(k, _)| matches!(*k, "Type" | "Restart" | "ExecStart" | "ExecReload")), "{props:?}");
        // Only a long-running service's own unit gets the check.
        assert!(d.units.iter().filter(|(n, _)| *n != "agent-web.service").all(|(_, u)| u.check.is_none()));
    }

    #[test]
    fn an_agent_keeps_the_commit_that_last_changed_it_while_its_spec_is_the_same() {
        let f = fleet();
        let web_hash = f.agent("web").unwrap().spec_hash();
        let mut prior = Inventory::default();
        prior.agents.insert("web".into(), record(&web_hash, "c0"));
        prior.agents.insert("edge".into(), record("the hash of an older edge", "c0"));
        let d = desired(&f, "vps1", &ctx(Scope::System), "c2", &prior);
        assert_eq!(d.agents["web"].spec_hash, web_hash);
        assert_eq!(d.agents["web"].changed_commit, "c0");
        // Its units say so too: a new commit that does not change it rewrites nothing.
        assert!(d.units["agent-web.service"].content.contains("\n# Commit: c0\n"));
        assert_eq!(d.agents["edge"].changed_commit, "c2", "a changed spec is of this commit");
        assert!(d.units["agent-edge.service"].content.contains("\n# Commit: c2\n"));
        assert_eq!(d.agents["nightly"].changed_commit, "c2", "a new agent is of this commit");

        // A change to web's spec changes its hash, and so its commit.
        let changed = load(&[("fleet.yaml", FLEET), ("web.yaml", &WEB.replace("/usr/bin/web]", "/usr/bin/web, --fast]"))]);
        let d = desired(&changed, "vps1", &ctx(Scope::System), "c2", &prior);
        assert_ne!(d.agents["web"].spec_hash, web_hash);
        assert_eq!(d.agents["web"].changed_commit, "c2");
    }

    #[test]
    fn the_journald_drop_in_is_the_system_fleets_and_keeps_its_commit_while_its_limits_do() {
        let f = fleet();
        let d = desired(&f, "vps1", &ctx(Scope::System), "c1", &Inventory::default());
        let (content, restart) = &d.config[JOURNALD_DROPIN];
        assert_eq!(restart, "systemd-journald.service");
        assert!(content.contains("[Journal]\nSystemMaxUse=64M\nRuntimeMaxUse=64M\n") && content.contains("# Commit: c1\n"), "{content}");
        assert_eq!(d.config.len(), 1);

        let mut prior = Inventory::default();
        let old = crate::render::render_journal(&f, "c0").unwrap();
        prior.config.insert(JOURNALD_DROPIN.into(), ConfigRecord { sha256: crate::types::sha256(&old), commit: "c0".into() });
        assert_eq!(desired(&f, "vps1", &ctx(Scope::System), "c2", &prior).config[JOURNALD_DROPIN].0, old);
        // Other limits: the record is of another file, and the drop-in is of this commit.
        let other = load(&[("fleet.yaml", &FLEET.replace("64M", "128M"))]);
        let (content, _) = &desired(&other, "vps1", &ctx(Scope::System), "c2", &prior).config[JOURNALD_DROPIN];
        assert!(content.contains("SystemMaxUse=128M") && content.contains("# Commit: c2\n"), "{content}");

        // A user manager has no journald of its own to configure; a Fleet without `journal` none.
        assert!(desired(&f, "vps1", &ctx(Scope::User), "c1", &Inventory::default()).config.is_empty());
        let quiet = load(&[("fleet.yaml", &FLEET.replace("journal: {maxUse: 64M}\n", "")), ("web.yaml", WEB)]);
        assert!(desired(&quiet, "vps1", &ctx(Scope::System), "c1", &Inventory::default()).config.is_empty());
    }

    #[test]
    fn units_the_last_line_check_refuses_are_refusals_not_units() {
        // A helper program whose path would print as two lines: every unit that names it is
        // refused by `UnitFile::check`, whatever the spec checks said.
        let bad = RenderCtx { exe: "/opt/fw\nExecStart=/bin/sh".into(), ..ctx(Scope::System) };
        let d = desired(&fleet(), "vps1", &bad, "c1", &Inventory::default());
        assert_eq!(d.refused.len(), 2, "{:?}", d.refused);
        assert!(
            d.refused[0].starts_with("agent \"nightly\": agent-nightly.logs.service:") && d.refused[0].contains("refusing to render it"),
            "{:?}",
            d.refused
        );
        assert!(d.refused[1].starts_with("agent \"web\": agent-web.service:") && d.refused[1].contains("control character"), "{:?}", d.refused);
        // None of a refused agent's units is desired, nor its deploy; the others are.
        assert_eq!(d.units.keys().map(String::as_str).collect::<Vec<_>>(), ["agent-edge.service"]);
        assert_eq!(d.agents.keys().map(String::as_str).collect::<Vec<_>>(), ["edge"]);
    }

    #[test]
    fn the_same_fleet_gives_the_same_desired_state_whatever_the_order_of_its_files() {
        let files = [("fleet.yaml", FLEET), ("web.yaml", WEB), ("edge.yaml", EDGE), ("elsewhere.yaml", ELSEWHERE), ("nightly.yaml", NIGHTLY)];
        let mut reversed = files;
        reversed.reverse();
        let a = desired(&load(&files), "vps1", &ctx(Scope::System), "c1", &Inventory::default());
        let b = desired(&load(&reversed), "vps1", &ctx(Scope::System), "c1", &Inventory::default());
        assert_eq!(a, b);
        assert_eq!(a, desired(&load(&files), "vps1", &ctx(Scope::System), "c1", &Inventory::default()));
    }
}
