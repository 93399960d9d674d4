//! Render (pure): one agent → its systemd unit files. Every spec field maps to a directive here.

use crate::spec::model::{Agent, Fleet, Mode, OnChange, Trigger};
use crate::unit::{escape_specifiers, quote, UnitFile, MARKER};

/// Which manager the units are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    System,
    User,
}

/// What a rendered unit is to its agent; decides how a change reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A long-running service: started, follows `service.onChange`.
    Service,
    /// The oneshot service a timer runs: never started or restarted by a deploy.
    Job,
    /// The timer of a scheduled agent.
    Timer,
}

/// Everything render needs beyond the spec.
#[derive(Debug, Clone)]
pub struct RenderCtx {
    pub scope: Scope,
    /// The state directory, where deploy markers live (visible to agents).
    pub state_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedUnit {
    pub name: String,
    pub role: Role,
    pub content: String,
}

pub fn unit_base(fleet: &Fleet, agent: &str) -> String {
    format!("{}{}", fleet.unit_prefix, agent)
}

/// The unit an `after:` reference points at: a service's own unit; a scheduled agent's job.
fn main_unit(fleet: &Fleet, agent: &str) -> String {
    format!("{}.service", unit_base(fleet, agent))
}

pub fn marker_paths(ctx: &RenderCtx, agent: &str) -> (String, String) {
    let dir = format!("{}/markers", ctx.state_dir.trim_end_matches('/'));
    (format!("{dir}/{agent}.json"), format!("{dir}/{agent}.env"))
}

fn header(agent: &Agent, changed_commit: &str) -> Vec<String> {
    vec![
        MARKER.to_string(),
        // The file, not the line: editing one agent of a multi-document file must not rewrite
        // the others.
        format!("# Agent: {} (from {})", agent.name, agent.source.file),
        format!("# Commit: {changed_commit}"),
    ]
}

/// Render an agent's units. `changed_commit` is the commit that last changed this agent; it goes
/// into the header (a comment, so a new commit that does not change the agent restarts nothing).
pub fn render_agent(fleet: &Fleet, agent: &Agent, ctx: &RenderCtx, changed_commit: &str) -> Vec<RenderedUnit> {
    let base = unit_base(fleet, &agent.name);
    let mut out = Vec::new();
    let description = escape_specifiers(agent.description.as_deref().unwrap_or(&agent.name));

    let mut svc = UnitFile::new(header(agent, changed_commit));
    svc.section("Unit").set("Description", description.clone());
    for dep in &agent.after {
        let unit = main_unit(fleet, dep);
        svc.set("After", unit.clone());
        // Pull in a long-running dependency; a scheduled one runs on its own timer.
        if fleet.agent(dep).is_some_and(|d| matches!(d.mode, Mode::Service(_))) {
            svc.set("Wants", unit);
        }
    }
    svc.section("Service");
    match &agent.mode {
        Mode::Scheduled(_) => {
            svc.set("Type", "oneshot");
            // RuntimeMaxSec= has no effect on oneshot units; TimeoutStartSec= caps the run.
            svc.set_opt("TimeoutStartSec", agent.run.timeout.map(|d| d.to_string()));
        }
        Mode::Service(s) => {
            // Type=exec: the start job fails when the program cannot be executed, so a broken
            // ExecStart is reported by apply rather than discovered later.
            svc.set("Type", if s.watchdog.is_some() { "notify" } else { "exec" });
            svc.set("Restart", s.restart.as_systemd());
            svc.set_opt("RestartSec", s.restart_sec.map(|d| d.to_string()));
            svc.set_opt("WatchdogSec", s.watchdog.map(|d| d.to_string()));
            if s.watchdog.is_some() {
                svc.set("NotifyAccess", "main");
            }
            svc.set_opt("RuntimeMaxSec", agent.run.timeout.map(|d| d.to_string()));
            if s.on_change == OnChange::Reload {
                svc.set("ExecReload", "/bin/kill -HUP $MAINPID");
            }
        }
    }
    let argv: Vec<String> = agent.run.command.iter().map(|w| quote(w, true)).collect();
    svc.set("ExecStart", argv.join(" "));
    svc.set_opt("WorkingDirectory", agent.run.working_directory.as_deref().map(escape_specifiers));
    if ctx.scope == Scope::System {
        svc.set_opt("User", agent.run.user.clone());
        svc.set_opt("Group", agent.run.group.clone());
    }
    let (marker_json, marker_env) = marker_paths(ctx, &agent.name);
    svc.set("Environment", quote(&format!("FLEETWRIGHT_AGENT={}", agent.name), false));
    svc.set("Environment", quote(&format!("FLEETWRIGHT_DEPLOY_MARKER={marker_json}"), false));
    for (k, v) in &agent.run.environment {
        svc.set("Environment", quote(&format!("{k}={v}"), false));
    }
    if let Some(f) = &agent.run.environment_file {
        svc.set("EnvironmentFile", format!("-{}", escape_specifiers(f)));
    }
    // The deploy marker as environment: FLEETWRIGHT_COMMIT and FLEETWRIGHT_SPEC_HASH. The file
    // changes only when the agent does, and is read at each start.
    svc.set("EnvironmentFile", format!("-{}", escape_specifiers(&marker_env)));
    for (name, path) in &agent.run.credentials {
        svc.set("LoadCredential", format!("{name}:{}", escape_specifiers(path)));
    }
    if !agent.run.success_exit_codes.is_empty() {
        svc.set("SuccessExitStatus", agent.run.success_exit_codes.iter().map(u8::to_string).collect::<Vec<_>>().join(" "));
    }
    let r = &agent.resources;
    svc.set_opt("MemoryMax", r.memory_max.map(|s| s.to_string()));
    svc.set_opt("MemorySwapMax", r.memory_swap_max.map(|s| s.to_string()));
    svc.set_opt("CPUQuota", r.cpu_quota.map(|q| format!("{q}%")));
    svc.set_opt("TasksMax", r.tasks_max.map(|t| t.to_string()));
    svc.set_opt("LimitNOFILE", r.nofile.map(|t| t.to_string()));
    let h = &agent.hardening;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    svc.set_opt("NoNewPrivileges", h.no_new_privileges.map(yes_no));
    svc.set_opt("PrivateTmp", h.private_tmp.map(yes_no));
    svc.set_opt("ProtectSystem", h.protect_system.clone());
    svc.set_opt("ProtectHome", h.protect_home.clone());
    let mut rw: Vec<String> = h.read_write_paths.iter().map(|p| quote(p, false)).collect();
    // The agent's own paths stay writable under ProtectSystem=strict; `-` tolerates a path that
    // does not exist yet (systemd.exec(5), ReadWritePaths=).
    if h.protect_system.is_some() {
        let own = agent.logs.iter().map(|l| l.path.split("/*").next().unwrap_or(&l.path).to_string())
            .chain(agent.backups.iter().map(|b| parent(&b.sqlite)))
            .chain(agent.health.iter().filter_map(|h| h.heartbeat.as_ref()).map(|hb| parent(&hb.file)));
        for p in own {
            let q = format!("-{}", quote(&p, false));
            if !h.read_write_paths.contains(&p) && !rw.contains(&q) {
                rw.push(q);
            }
        }
    }
    if !rw.is_empty() {
        svc.set("ReadWritePaths", rw.join(" "));
    }
    if let Mode::Service(_) = agent.mode {
        svc.section("Install").set("WantedBy", if ctx.scope == Scope::System { "multi-user.target" } else { "default.target" });
    }
    out.push(RenderedUnit {
        name: format!("{base}.service"),
        role: if matches!(agent.mode, Mode::Service(_)) { Role::Service } else { Role::Job },
        content: svc.render(),
    });

    if let Mode::Scheduled(s) = &agent.mode {
        let mut t = UnitFile::new(header(agent, changed_commit));
        t.section("Unit").set("Description", format!("Timer of {description}"));
        t.section("Timer");
        match &s.trigger {
            Trigger::Calendar { expr, .. } => {
                t.set("OnCalendar", escape_specifiers(expr));
                t.set("Persistent", yes_no(s.persistent));
            }
            Trigger::Every(d) => {
                t.set("OnBootSec", d.to_string());
                t.set("OnUnitActiveSec", d.to_string());
            }
        }
        t.set_opt("RandomizedDelaySec", s.randomized_delay.map(|d| d.to_string()));
        t.set_opt("AccuracySec", s.accuracy.map(|d| d.to_string()));
        t.set("Unit", format!("{base}.service"));
        t.section("Install").set("WantedBy", "timers.target");
        out.push(RenderedUnit { name: format!("{base}.timer"), role: Role::Timer, content: t.render() });
    }
    out
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.to_string(),
    }
}
