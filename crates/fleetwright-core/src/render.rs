//! Render (pure): one agent → its systemd unit files. Every spec field maps to a directive here.

use crate::spec::model::{Agent, Fleet, Mode, OnChange, Trigger, WhenFull};
use crate::types::{Role, Scope};
use crate::unit::{MARKER, Policy, UnitFile, escape_specifiers, quote};

/// Everything render needs beyond the spec.
#[derive(Debug, Clone)]
pub struct RenderCtx {
    pub scope: Scope,
    /// The state directory, where deploy markers live (visible to agents).
    pub state_dir: String,
    /// The fleetwright binary the helper units run (log cleanup, backups, heartbeat, slots).
    pub exe: String,
    /// What tells each secret's value apart; it names the credential file, so that a new
    /// value is a changed unit.
    pub secret_ids: SecretIds,
}

/// How the renderer names a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretIds {
    /// Secret file (its path in the repository) → the host's keyed hash of its plaintext
    /// (`host::secrets`): the same value encrypted again is the same id.
    Known(std::collections::BTreeMap<String, String>),
    /// A review without keys: a hash of each encrypted file (a file encrypted again looks
    /// changed; the host decides whether its value is).
    FromCiphertext,
}

impl Default for SecretIds {
    fn default() -> Self {
        SecretIds::Known(Default::default())
    }
}

impl SecretIds {
    pub fn of(&self, secret: &crate::spec::model::SecretRef) -> Option<String> {
        match self {
            SecretIds::Known(ids) => ids.get(&secret.path).cloned(),
            SecretIds::FromCiphertext => Some(format!("c{}", &crate::types::sha256_bytes(&secret.ciphertext)[..31])),
        }
    }
}

/// What the refusal of an agent whose secret has no value id says (the host, which says why
/// in its own words, leaves these out).
pub const SECRET_NOT_READ: &str = "was not read on this host";

/// Where the host keeps the encrypted credentials of `agent` (systemd-creds, bound to the
/// host's key; root only): `<state>/credentials/<agent>/`.
pub fn credential_dir(ctx: &RenderCtx, agent: &str) -> String {
    format!("{}/{agent}", credentials_root(ctx))
}

/// `<state>/credentials`: where every credential file is (`StateLayout::credentials`).
fn credentials_root(ctx: &RenderCtx) -> String {
    format!("{}/{}", ctx.state_dir.trim_end_matches('/'), crate::layout::CREDENTIALS_SUBDIR)
}

/// The credential file of secret `name` of `agent` with value id `id`.
pub fn credential_path(ctx: &RenderCtx, agent: &str, name: &str, id: &str) -> String {
    format!("{}/{name}-{id}.cred", credential_dir(ctx, agent))
}

/// The journald drop-in fleetwright owns when the Fleet sets `journal` (system scope only).
pub const JOURNALD_DROPIN: &str = "/etc/systemd/journald.conf.d/fleetwright.conf";

/// The Fleet's `journal` as a journald.conf(5) drop-in: the caps apply to the persistent and
/// the volatile journal alike.
pub fn render_journal(fleet: &Fleet, commit: &str) -> Option<String> {
    let j = fleet.journal.as_ref()?;
    let mut f = UnitFile::new(vec![MARKER.to_string(), "# The journal limits of the Fleet document.".into(), format!("# Commit: {commit}")]);
    f.section("Journal");
    if let Some(u) = j.max_use {
        f.set("SystemMaxUse", u.to_string()).set("RuntimeMaxUse", u.to_string());
    }
    f.set_opt("MaxRetentionSec", j.max_retention.map(|d| d.to_string()));
    Some(f.render())
}

/// One rendered unit file: the value it was built as, and that value printed. What reads a
/// setting of it (health checks, the schedule, [Install] links) reads `file`; what writes,
/// hashes or diffs it uses `content`, the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedUnit {
    pub name: String,
    pub role: Role,
    /// The file as a value, checked ([`UnitFile::check`]).
    pub file: UnitFile,
    /// `file.render()`: the bytes written to the unit directory.
    pub content: String,
}

/// Where concurrency slots live (lock files, one per slot, per group).
pub const SLOT_DIR: &str = "/run/fleetwright/slots";

/// Where the concurrency slots of `scope` are: a user manager's under its runtime directory
/// (`%t` is $XDG_RUNTIME_DIR in a user unit, systemd.unit(5)).
pub fn slot_dir(scope: Scope) -> &'static str {
    match scope {
        Scope::System => SLOT_DIR,
        Scope::User => "%t/fleetwright/slots",
    }
}

/// The users (not root) of every agent of the fleet in concurrency group `group`, sorted: the
/// only ones besides root that may take its slots.
fn group_users(fleet: &Fleet, group: &str) -> Vec<String> {
    let mut users: Vec<String> = fleet
        .agents
        .iter()
        .filter(|a| a.concurrency.as_ref().is_some_and(|c| c.group == group))
        .filter_map(|a| a.run.user.clone())
        .filter(|u| u != "root" && u != "0")
        .collect();
    users.sort();
    users.dedup();
    users
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
///
/// Whether any unit of `agent` runs fleetwright's own binary (`RenderCtx::exe`): its helper
/// jobs (logs, backups, a heartbeat), a concurrency slot, or `onChange: reload`. The host names
/// that binary by its content (a hash of it), so it asks first: a fleet that never runs it
/// needs no name. May say yes where no unit ends up naming it, never the other way round (a
/// test renders every example and case to hold it to that).
pub fn runs_fleetwright(fleet: &Fleet, agent: &Agent) -> bool {
    if !fleet.notify.is_empty() {
        // Its failure reporter (`<base>.notify@.service`).
        return true;
    }
    let reloads = matches!(&agent.mode, Mode::Service(s) if s.on_change == OnChange::Reload);
    let heartbeat = agent.health.as_ref().is_some_and(|h| h.heartbeat.is_some());
    reloads || heartbeat || agent.concurrency.is_some() || !agent.logs.is_empty() || !agent.backups.is_empty()
}

/// Every file is re-checked before it is returned ([`UnitFile::check`]): a value that would print
/// as something else than the renderer meant (a directive, a privileged command, `User=root`
/// without `allowRoot`) refuses the agent's units with the reason, whatever the spec checks said.
pub fn render_agent(fleet: &Fleet, agent: &Agent, ctx: &RenderCtx, changed_commit: &str) -> Result<Vec<RenderedUnit>, String> {
    let base = unit_base(fleet, &agent.name);
    let exe_q = quote(&ctx.exe, true);
    let creds = credentials_root(ctx);
    let policy = Policy { allow_root: fleet.allow_root, system: ctx.scope == Scope::System, exe: &exe_q, credentials: &creds };
    let finish = |name: String, role: Role, file: UnitFile| match file.check(&policy) {
        Ok(()) => Ok(RenderedUnit { content: file.render(), name, role, file }),
        Err(e) => Err(format!("{name}: {e}; refusing to render it")),
    };
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
    report_failures(fleet, &base, &mut svc, matches!(agent.mode, Mode::Scheduled(_)));
    svc.section("Service");
    match &agent.mode {
        Mode::Scheduled(_) => {
            svc.set("Type", "oneshot");
            // RuntimeMaxSec= has no effect on oneshot units; TimeoutStartSec= caps the run.
            svc.set_opt("TimeoutStartSec", agent.run.timeout.map(|d| d.to_string()));
        }
        Mode::Service(s) => {
            // Type=exec: the start job fails when the program cannot be executed, so a broken
            // ExecStart is reported by apply rather than discovered later. With a watchdog too:
            // the agent sends WATCHDOG=1, and need not send READY=1 (systemd.service(5): the
            // watchdog runs for any type once start-up is complete).
            svc.set("Type", "exec");
            svc.set("Restart", s.restart.as_systemd());
            svc.set_opt("RestartSec", s.restart_sec.map(|d| d.to_string()));
            svc.set_opt("WatchdogSec", s.watchdog.map(|d| d.to_string()));
            if s.watchdog.is_some() {
                // Any process of the service may send WATCHDOG=1 (a shell loop calling
                // systemd-notify, a helper process), not only the main one.
                svc.set("NotifyAccess", "all");
            }
            svc.set_opt("RuntimeMaxSec", agent.run.timeout.map(|d| d.to_string()));
            if s.on_change == OnChange::Reload {
                // This very binary, not /bin/kill: NixOS has no /bin.
                svc.set("ExecReload", format!("{} signal --signal HUP $MAINPID", quote(&ctx.exe, true)));
            }
        }
    }
    let mut argv: Vec<String> = agent.run.command.iter().map(|w| quote(w, true)).collect();
    if let Some(c) = &agent.concurrency {
        // The slot is an flock held on a descriptor that survives exec: released when the run
        // ends, however it ends (SIGKILL included). The lock files are made with privileges
        // (`+`) so that the users of the group's agents, and nobody else, can take them
        // read-only (`--agent-user`, each; a user manager's are all its own).
        let when = if c.when_full == WhenFull::Wait { "wait" } else { "skip" };
        let dir = slot_dir(ctx.scope);
        let mut prepare = format!("+{} slot-prepare --dir {dir} --group {} --limit {}", quote(&ctx.exe, true), c.group, c.limit);
        if ctx.scope == Scope::System {
            for u in group_users(fleet, &c.group) {
                prepare.push_str(&format!(" --agent-user {}", quote(&u, true)));
            }
        }
        svc.set("ExecStartPre", prepare);
        let mut wrap = vec![
            quote(&ctx.exe, true),
            "slot".into(),
            "--dir".into(),
            dir.into(),
            "--group".into(),
            c.group.clone(),
            "--limit".into(),
            c.limit.to_string(),
            "--when-full".into(),
            when.into(),
        ];
        if let Some(t) = agent.run.timeout {
            wrap.extend(["--timeout".into(), quote(&t.to_string(), true)]);
        }
        wrap.push("--".into());
        argv.splice(0..0, wrap);
    }
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
    for (name, secret) in &agent.run.secrets {
        if ctx.scope == Scope::User {
            return Err(format!(
                "secret {name}: run.secrets needs the system manager (a user manager of systemd 252 cannot decrypt credentials bound to the host's key); run this agent under the system manager, or give it a file with run.credentials"
            ));
        }
        let Some(id) = ctx.secret_ids.of(secret) else {
            return Err(format!("secret {name}: {} {SECRET_NOT_READ}; refusing to render the agent without it", secret.path));
        };
        svc.set("LoadCredentialEncrypted", format!("{name}:{}", escape_specifiers(&credential_path(ctx, &agent.name, name, &id))));
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
    svc.set_opt("NoNewPrivileges", h.no_new_privileges.map(yes_no));
    svc.set_opt("PrivateTmp", h.private_tmp.map(yes_no));
    svc.set_opt("ProtectSystem", h.protect_system.clone());
    svc.set_opt("ProtectHome", h.protect_home.clone());
    let mut rw: Vec<String> = h.read_write_paths.iter().map(|p| quote(p, false)).collect();
    // The agent's own paths stay writable under ProtectSystem=strict; `-` tolerates a path that
    // does not exist yet (systemd.exec(5), ReadWritePaths=).
    if h.protect_system.is_some() {
        let own = agent
            .logs
            .iter()
            .map(|l| l.path.split("/*").next().unwrap_or(&l.path).to_string())
            .chain(agent.backups.iter().map(|b| parent(&b.sqlite)))
            .chain(agent.health.iter().filter_map(|h| h.heartbeat.as_ref()).map(|hb| parent(&hb.file)));
        for p in own {
            let q = format!("-{}", quote(&p, false));
            if !h.read_write_paths.contains(&p) && !rw.contains(&q) {
                rw.push(q);
            }
        }
        // Written as is: for a user manager it holds the %t specifier.
        if agent.concurrency.is_some() {
            rw.push(format!("-{}", slot_dir(ctx.scope)));
        }
    }
    if !rw.is_empty() {
        svc.set("ReadWritePaths", rw.join(" "));
    }
    if let Mode::Service(_) = agent.mode {
        svc.section("Install").set("WantedBy", if ctx.scope == Scope::System { "multi-user.target" } else { "default.target" });
    }
    out.push(finish(format!("{base}.service"), if matches!(agent.mode, Mode::Service(_)) { Role::Service } else { Role::Job }, svc)?);

    if let Mode::Scheduled(s) = &agent.mode {
        let mut t = UnitFile::new(header(agent, changed_commit));
        t.section("Unit").set("Description", format!("Timer of {description}"));
        t.section("Timer");
        match &s.trigger {
            Trigger::Calendar { expr, also, .. } => {
                // Several OnCalendar= lines: the timer fires on their union (systemd.timer(5)).
                for e in std::iter::once(expr).chain(also) {
                    t.set("OnCalendar", escape_specifiers(e));
                }
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
        out.push(finish(format!("{base}.timer"), Role::Timer, t)?);
    }
    let aux = render_aux(fleet, agent, ctx, changed_commit);
    let has_jobs = matches!(agent.mode, Mode::Scheduled(_)) || !aux.is_empty();
    for u in aux {
        out.push(finish(u.name, u.role, u.file)?);
    }
    if !fleet.notify.is_empty() {
        out.push(finish(notify_template(fleet, &agent.name), Role::AuxJob, render_reporter(agent, ctx, changed_commit, &description, false))?);
        if has_jobs {
            out.push(finish(recovery_template(fleet, &agent.name), Role::AuxJob, render_reporter(agent, ctx, changed_commit, &description, true))?);
        }
    }
    Ok(out)
}

/// The failure reporter of an agent's units: a template, one instance per unit it reports on
/// (`OnFailure=<base>.notify@%n.service`; systemd sets `$MONITOR_*` in its environment when the
/// instance has one trigger source, which a template per unit keeps so).
pub fn notify_template(fleet: &Fleet, agent: &str) -> String {
    format!("{}.notify@.service", unit_base(fleet, agent))
}

/// The recovery reporter of an agent's jobs (`OnSuccess=<base>.recovered@%n.service`): a
/// template of its own, so that each instance has one trigger source, and a successful run
/// needs nothing but a look for the unit's failing mark.
pub fn recovery_template(fleet: &Fleet, agent: &str) -> String {
    format!("{}.recovered@.service", unit_base(fleet, agent))
}

/// What every unit of an agent that runs something gets when the Fleet has a `notify` list: its
/// failures go to the failure reporter (`OnFailure=`), and a job's successful runs to the
/// recovery reporter (`OnSuccess=`, systemd ≥ 249), which reports a recovery once and
/// otherwise only looks for a file.
fn report_failures(fleet: &Fleet, base: &str, unit: &mut UnitFile, job: bool) {
    if fleet.notify.is_empty() {
        return;
    }
    // `%n`: the full name of the unit that ended, as the reporter's instance.
    unit.set("OnFailure", format!("{base}.notify@%n.service"));
    if job {
        unit.set("OnSuccess", format!("{base}.recovered@%n.service"));
    }
}

/// A reporter template (see `notify_template`, `recovery_template`): runs `fleetwright
/// notify-report` as root (it reads the journal of another user's unit), bounded in time,
/// writing only the state directory, where the report is queued.
fn render_reporter(agent: &Agent, ctx: &RenderCtx, changed_commit: &str, description: &str, success: bool) -> UnitFile {
    let mut svc = UnitFile::new(header(agent, changed_commit));
    let what = if success { "recovery report" } else { "failure report" };
    svc.section("Unit").set("Description", format!("{what} of {description} (%i)"));
    svc.section("Service").set("Type", "oneshot");
    let mut exec = vec![quote(&ctx.exe, true), "notify-report".into(), "--state-dir".into(), quote(&ctx.state_dir, true), "--unit".into(), "%i".into()];
    if success {
        exec.push("--success".into());
    }
    if ctx.scope == Scope::User {
        exec.push("--user".into());
    }
    svc.set("ExecStart", exec.join(" "));
    // Never long, and never blocking the unit it reports on (it runs after that one ended).
    svc.set("TimeoutStartSec", "30s");
    svc.set("NoNewPrivileges", "yes").set("PrivateTmp", "yes").set("ProtectSystem", "strict").set("ProtectHome", "read-only");
    svc.set("ReadWritePaths", format!("-{}", quote(&ctx.state_dir, false)));
    svc
}

/// A helper unit before its final check.
struct AuxUnit {
    name: String,
    role: Role,
    file: UnitFile,
}

/// A helper job and its timer: `<base>.<kind>.service` / `.timer`. Agent names cannot hold a
/// dot, so these never collide with another agent's units.
struct Aux<'a> {
    kind: String,
    /// Directories made (privileged) before the job runs, so that they can be written to.
    make_dirs: Vec<String>,
    what: String,
    exec: Vec<String>,
    user: Option<&'a str>,
    writable: Vec<String>,
    /// Every path the job reads or writes: one under /tmp or /var/tmp keeps the job off a
    /// private /tmp (where it would not see the file).
    touches: Vec<String>,
    timer: Vec<(&'static str, String)>,
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Entries grouped by their calendar, in the order each calendar first appears.
fn group_by_calendar<T>(items: &[T], cal: impl Fn(&T) -> &String) -> Vec<(&String, Vec<&T>)> {
    let mut groups: Vec<(&String, Vec<&T>)> = Vec::new();
    for it in items {
        let c = cal(it);
        match groups.iter_mut().find(|(g, _)| *g == c) {
            Some((_, v)) => v.push(it),
            None => groups.push((c, vec![it])),
        }
    }
    groups
}

fn numbered(kind: &str, i: usize) -> String {
    if i == 0 { kind.to_string() } else { format!("{kind}-{}", i + 1) }
}

fn render_aux(fleet: &Fleet, agent: &Agent, ctx: &RenderCtx, changed_commit: &str) -> Vec<AuxUnit> {
    let base = unit_base(fleet, &agent.name);
    let exe = quote(&ctx.exe, true);
    let mut aux = Vec::new();
    // One unit and timer per distinct schedule: `<base>.logs`, then `<base>.logs-2`, … so that
    // each entry runs on its own calendar.
    for (i, (cal, rules)) in group_by_calendar(&agent.logs, |l| &l.calendar).into_iter().enumerate() {
        let exec = rules
            .iter()
            .map(|l| {
                let mut a = vec![exe.clone(), "logs-clean".into(), "--path".into(), quote(&l.path, true), "--match".into(), quote(&l.pattern, true)];
                if let Some(d) = l.max_age {
                    a.extend(["--max-age".into(), quote(&d.to_string(), true)]);
                }
                if let Some(n) = l.max_files {
                    a.extend(["--max-files".into(), n.to_string()]);
                }
                if let Some(s) = l.max_size {
                    a.extend(["--max-size".into(), s.to_string()]);
                }
                a.join(" ")
            })
            .collect();
        aux.push(Aux {
            kind: numbered("logs", i),
            make_dirs: Vec::new(),
            what: "log retention".into(),
            exec,
            // As the agent's user: it can delete only what the agent itself could.
            user: agent.run.user.as_deref(),
            writable: rules.iter().map(|l| l.path.split("/*").next().unwrap_or(&l.path).to_string()).collect(),
            touches: rules.iter().map(|l| l.path.clone()).collect(),
            timer: vec![("OnCalendar", escape_specifiers(cal)), ("Persistent", "yes".to_string()), ("RandomizedDelaySec", "5min".to_string())],
        });
    }
    for (i, (cal, backups)) in group_by_calendar(&agent.backups, |b| &b.calendar).into_iter().enumerate() {
        let exec = backups
            .iter()
            .map(|b| {
                let mut a = vec![
                    exe.clone(),
                    "backup".into(),
                    "--sqlite".into(),
                    quote(&b.sqlite, true),
                    "--to".into(),
                    quote(&b.to, true),
                    "--keep-last".into(),
                    b.keep_last.to_string(),
                    "--keep-daily".into(),
                    b.keep_daily.to_string(),
                    "--keep-weekly".into(),
                    b.keep_weekly.to_string(),
                ];
                if b.verify {
                    a.push("--verify".into());
                }
                if b.wal {
                    a.push("--wal".into());
                }
                a.join(" ")
            })
            .collect();
        aux.push(Aux {
            kind: numbered("backup", i),
            make_dirs: backups.iter().map(|b| b.to.clone()).collect(),
            what: "SQLite backup".into(),
            exec,
            user: None,
            writable: backups.iter().flat_map(|b| [parent(&b.sqlite), b.to.clone()]).collect(),
            touches: backups.iter().flat_map(|b| [b.sqlite.clone(), b.to.clone()]).collect(),
            timer: vec![("OnCalendar", escape_specifiers(cal)), ("Persistent", "yes".to_string())],
        });
    }
    if let (Some(hb), Mode::Service(_)) = (agent.health.as_ref().and_then(|h| h.heartbeat.as_ref()), &agent.mode) {
        let every = crate::spec::values::Duration((hb.max_age.0 / 2).max(1000));
        let mut exec = vec![
            exe.clone(),
            "heartbeat".into(),
            "--agent".into(),
            agent.name.clone(),
            "--file".into(),
            quote(&hb.file, true),
            "--max-age".into(),
            quote(&hb.max_age.to_string(), true),
            "--unit".into(),
            format!("{base}.service"),
        ];
        exec.extend(["--state-dir".into(), quote(&ctx.state_dir, true)]);
        if ctx.scope == Scope::User {
            exec.push("--user".into());
        }
        aux.push(Aux {
            kind: "heartbeat".into(),
            make_dirs: Vec::new(),
            what: "heartbeat check".into(),
            exec: vec![exec.join(" ")],
            user: None,
            // The state directory (it exists: apply writes the inventory there); health/ inside
            // may not exist yet, and a missing ReadWritePaths= entry would stay read-only.
            writable: vec![ctx.state_dir.clone()],
            touches: vec![hb.file.clone()],
            timer: vec![("OnActiveSec", hb.max_age.to_string()), ("OnUnitActiveSec", every.to_string()), ("AccuracySec", "1s".to_string())],
        });
    }
    let description = escape_specifiers(agent.description.as_deref().unwrap_or(&agent.name));
    let mut out = Vec::new();
    for a in aux {
        let mut svc = UnitFile::new(header(agent, changed_commit));
        svc.section("Unit").set("Description", format!("{} of {description}", a.what));
        report_failures(fleet, &base, &mut svc, true);
        svc.section("Service").set("Type", "oneshot");
        for d in &a.make_dirs {
            // This very binary, not /bin/mkdir: NixOS has no /bin.
            svc.set("ExecStartPre", format!("+{exe} mkdir --mode 0750 {}", quote(d, true)));
        }
        for e in a.exec {
            svc.set("ExecStart", e);
        }
        if ctx.scope == Scope::System {
            svc.set_opt("User", a.user.map(str::to_string));
        }
        svc.set("Nice", "10").set("IOSchedulingClass", "idle");
        let private_tmp = !a.touches.iter().any(|p| crate::spec::values::in_tmp(p));
        svc.set("NoNewPrivileges", "yes").set("PrivateTmp", yes_no(private_tmp)).set("ProtectSystem", "strict").set("ProtectHome", "read-only");
        let rw: Vec<String> = a.writable.iter().map(|p| format!("-{}", quote(p, false))).collect();
        svc.set("ReadWritePaths", rw.join(" "));
        out.push(AuxUnit { name: format!("{base}.{}.service", a.kind), role: Role::AuxJob, file: svc });

        let mut t = UnitFile::new(header(agent, changed_commit));
        t.section("Unit").set("Description", format!("Timer of the {} of {description}", a.what));
        t.section("Timer");
        for (k, v) in a.timer {
            t.set(k, v);
        }
        t.set("Unit", format!("{base}.{}.service", a.kind));
        t.section("Install").set("WantedBy", "timers.target");
        out.push(AuxUnit { name: format!("{base}.{}.timer", a.kind), role: Role::AuxTimer, file: t });
    }
    out
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(yaml: &str) -> Fleet {
        crate::spec::load(&[("agents.yaml".to_string(), yaml.to_string())], &crate::spec::calendar::NoDatabase).expect("a valid fleet")
    }

    /// The value a unit carries is the file its text is: every reader of `file` sees what
    /// systemd will read of `content`.
    #[test]
    fn a_rendered_unit_carries_the_value_its_text_was_printed_from() {
        let f = fleet(
            "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults: {run: {user: agent}}\n---\n\
             apiVersion: fleetwright/v1\nkind: Agent\nname: web\ndescription: Serves 100%\nrun: {command: [/usr/bin/web, \"a b\"], environment: {K: v}}\n\
             service: {onChange: reload}\nhealth: {heartbeat: {file: /srv/web/health, maxAge: 30s}}\n\
             backups: [{sqlite: /srv/web/db.sqlite, to: /var/backups/web}]\nlogs: [{path: /srv/web/logs, maxAge: 7d}]\n---\n\
             apiVersion: fleetwright/v1\nkind: Agent\nname: job\nrun: {command: [/usr/bin/job]}\nschedule: {calendar: \"*-*-* 03:00\", randomizedDelay: 5m}\n",
        );
        let ctx =
            RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() };
        let mut roles = Vec::new();
        for agent in &f.agents {
            for u in render_agent(&f, agent, &ctx, "c0ffee").expect("rendered") {
                assert_eq!(u.content, u.file.render(), "{}", u.name);
                let parsed = crate::unit::parse(&u.content);
                let sections: std::collections::BTreeSet<&str> = u.file.sections.iter().map(|(s, _)| s.as_str()).collect();
                assert!(parsed.keys().map(String::as_str).eq(sections.iter().copied()), "{}", u.name);
                for s in sections {
                    let read: Vec<(&str, &str)> = parsed[s].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    assert_eq!(read, u.file.entries(s).collect::<Vec<_>>(), "{} [{s}]", u.name);
                }
                roles.push(u.role);
            }
        }
        roles.sort();
        roles.dedup();
        assert_eq!(roles, [Role::Service, Role::Job, Role::Timer, Role::AuxJob, Role::AuxTimer]);
    }
}
