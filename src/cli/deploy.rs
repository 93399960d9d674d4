//! The commands that read a fleet and plan or apply it: validate, plan (and its review form),
//! apply (and in a sandbox), render.

use std::path::Path;
use std::time::Duration;

use fleetwright::host::apply::{ApplyError, ApplyReport, Failure, deploy, observe};
use fleetwright::host::state::StateDir;
use fleetwright::host::systemd::Systemd;
use fleetwright::plan::{self, Plan, PlanOptions};
use fleetwright::spec;

use super::args::{Globals, ReviewFormat, SourceArgs};
use super::{Error, Outcome, invalid, json, load_commit, print_warnings, runtime};

/// `validate [PATH…]`: the spec files under each directory, and each file named, checked
/// together as one fleet (a file alone is checked without the rest of its fleet: its Fleet
/// document's defaults and groups are not known then).
pub fn validate(paths: &[std::path::PathBuf]) -> Result<Outcome, Error> {
    let mut files = Vec::new();
    // The secret files, when the fleet is one directory (secrets are named relative to it);
    // checked alone, a spec file's secrets are not looked for.
    let mut secrets = None;
    for p in paths {
        if p.is_dir() {
            let (found, age_files) = fleetwright::source::read_dir_with_secrets(p).map_err(Error::failed)?;
            files.extend(found.into_iter().map(|(rel, text)| (super::shown_path(p, &rel), text)));
            if paths.len() == 1 {
                secrets = Some(age_files);
            }
        } else {
            let text = std::fs::read(p).map_err(|e| Error::failed(format!("{}: {e}", p.display())))?;
            let text = String::from_utf8(text).map_err(|_| Error::failed(format!("{}: not UTF-8 text", p.display())))?;
            files.push((p.display().to_string(), text));
        }
    }
    let fleet = spec::load_with(&files, secrets.as_ref(), &fleetwright::host::zones::Tzdata).map_err(|diags| invalid(&diags, &files, Path::new("")))?;
    print_warnings(&fleet, Path::new(""));
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    println!("{} valid: {} agents in {} files", shown.join(" "), fleet.agents.len(), files.len());
    Ok(Outcome::Done)
}

/// What a fleet asks for that this scope cannot do, said once on stderr.
fn scope_notes(cfg: &fleetwright::host::HostConfig, fleet: &spec::Fleet) {
    if cfg.scope == fleetwright::types::Scope::User && fleet.journal.is_some() {
        eprintln!("note: the Fleet's journal limits are for the system's journald; with --user they are not written");
    }
}

pub fn plan(g: &Globals, src: &SourceArgs, as_json: bool, diffs: bool, allow_empty: bool) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    let (files, fleet) = load_commit(g, src, &src.rev, false)?;
    scope_notes(&cfg, &fleet);
    let p = runtime()?.block_on(async {
        let inv = StateDir::new(&cfg.state_dir).load_inventory().map_err(Error::failed)?;
        let want = cfg.desired(&fleet, &files.commit, &inv);
        let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.map_err(super::unreachable)?;
        let observed = observe(&sd, &cfg, &want, inv).await.map_err(Error::failed)?;
        Ok::<_, Error>(plan::plan(&want, &observed, PlanOptions { allow_empty }))
    })?;
    if as_json {
        println!("{}", json(&p)?);
    } else {
        print!("{}", plan::render_text(&p, diffs));
    }
    if !p.errors.is_empty() {
        Err(Error::Refused(anyhow::anyhow!("the plan cannot be applied: {}", p.errors.join("; "))))
    } else if p.has_changes() {
        Ok(Outcome::Changes)
    } else {
        Ok(Outcome::Done)
    }
}

/// `plan --base --head`: review a change without a host. Both commits are read (and both
/// their diagnostics printed) before either error ends it.
pub fn review(g: &Globals, src: &SourceArgs, base: &str, head: &str, format: ReviewFormat, diffs: bool) -> Result<Outcome, Error> {
    let ((base_files, base_fleet), (head_files, head_fleet)) = match (load_commit(g, src, base, true), load_commit(g, src, head, false)) {
        (Ok(b), Ok(h)) => (b, h),
        (Err(Error::Invalid { count: a }), Err(Error::Invalid { count: b })) => return Err(Error::Invalid { count: a + b }),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let cfg = g.host_config();
    // The binary is hashed to be named only when a unit of either side runs it.
    let runs = |f: &spec::Fleet| f.agents.iter().any(|a| fleetwright::render::runs_fleetwright(f, a));
    let mut ctx = if runs(&base_fleet) || runs(&head_fleet) { cfg.render_ctx() } else { cfg.render_ctx_for(&head_fleet) };
    // Without keys: each secret told by a hash of its encrypted file.
    ctx.secret_ids = fleetwright::render::SecretIds::FromCiphertext;
    let mut r = fleetwright::review::review((&base_files.commit, &base_fleet), (&head_files.commit, &head_fleet), g.host.as_deref(), &ctx);
    if !diffs {
        for u in &mut r.plan.units {
            u.diff = None;
        }
    }
    match format {
        ReviewFormat::Markdown => print!("{}", fleetwright::review::render_markdown(&r)),
        ReviewFormat::Json => println!("{}", json(&r)?),
        ReviewFormat::Text => print!("{}", fleetwright::review::render_text(&r)),
    }
    if !r.plan.errors.is_empty() {
        return Err(Error::Refused(anyhow::anyhow!("commit {} cannot be applied: {}", plan::short(&head_files.commit), r.plan.errors.join("; "))));
    }
    Ok(if r.plan.has_changes() { Outcome::Changes } else { Outcome::Done })
}

/// `apply --json`: the plan and what executing it did (one shape, whichever path applied).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AppliedJson<'a> {
    plan: &'a Plan,
    failures: &'a [Failure],
    files_written: usize,
    files_removed: usize,
    reloaded: bool,
}

/// Print what an apply did: the JSON shape, or the failures and a summary line.
fn print_applied(p: &Plan, r: &ApplyReport, commit: &str, as_json: bool) -> Result<(), Error> {
    if as_json {
        let shape = AppliedJson { plan: p, failures: &r.failures, files_written: r.files_written, files_removed: r.files_removed, reloaded: r.reloaded };
        println!("{}", json(&shape)?);
        return Ok(());
    }
    for f in &r.failures {
        eprintln!("FAILED {}: {} (active: {}, sub: {})", f.unit, f.what, f.status.active_state, f.status.sub_state);
        for line in f.journal.lines() {
            eprintln!("    {line}");
        }
    }
    if r.failures.is_empty() {
        println!("converged to {}: {} files written, {} removed, {} jobs.", plan::short(commit), r.files_written, r.files_removed, r.jobs.len());
    } else {
        eprintln!("applied {} with {} failing unit(s).", plan::short(commit), r.failures.len());
    }
    Ok(())
}

/// An apply's error, by what it means for the host: refused (nothing applied), interrupted
/// after a change (exit 3: apply again), or failed before anything changed.
fn apply_error(e: ApplyError) -> Error {
    match e {
        ApplyError::Refused(_) => Error::Refused(e.into()),
        e if e.changed_host() => Error::Interrupted(e.into()),
        e => Error::Failed(anyhow::anyhow!("{e}\nnothing on the host was changed")),
    }
}

pub fn apply(g: &Globals, src: &SourceArgs, allow_empty: bool, as_json: bool, wait: Duration) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    let state = StateDir::new(&cfg.state_dir);
    let rt = runtime()?;
    // The commit the host was last converged from, again: planned from the inventory and the
    // files on disk, without reading and rendering the commit (when anything differs, the
    // full apply below does).
    if !fleetwright::source::looks_like_url(&src.repo)
        && let Ok(commit) = fleetwright::source::resolve_commit(Path::new(&src.repo), &src.rev)
    {
        let key = fleetwright::host::apply::render_key(&cfg, &commit, src.path.as_deref());
        let fast = rt.block_on(async {
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.ok()?;
            fleetwright::host::apply::deploy_unchanged(&sd, &cfg, &state, &key, PlanOptions { allow_empty }).await.ok().flatten()
        });
        if let Some(d) = fast {
            tracing::debug!("apply: the same commit, converged: nothing read or rendered");
            if !as_json {
                print!("{}", plan::render_text(&d.plan, false));
            }
            print_applied(&d.plan, &d.report, &commit, as_json)?;
            return Ok(Outcome::Done);
        }
    }
    let t = std::time::Instant::now();
    let (files, fleet) = load_commit(g, src, &src.rev, false)?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, files = files.files.len(), "apply: commit read and validated");
    scope_notes(&cfg, &fleet);
    remember_sinks(&cfg, &fleet, &src.repo);
    let (p, report) = rt.block_on(async {
        let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.map_err(|e| match super::unreachable(e) {
            Error::Failed(e) => Error::Failed(anyhow::anyhow!("{e}\nnothing on the host was changed")),
            other => other,
        })?;
        let key = fleetwright::host::apply::render_key(&cfg, &files.commit, src.path.as_deref());
        let mut d = deploy(&sd, &cfg, &state, &files.commit, &key, &fleet, PlanOptions { allow_empty }).await.map_err(apply_error)?;
        if !as_json {
            print!("{}", plan::render_text(&d.plan, false));
        }
        if d.report.failures.is_empty() {
            // The commit is applied by now: a fault while watching stops a finished job.
            d.report.failures = fleetwright::host::apply::watch_after(&sd, &cfg, &d.plan, wait).await.map_err(|e| {
                Error::Interrupted(
                    ApplyError::Interrupted { done: format!("{}; then watching the services failed", d.report.summary()), source: Box::new(e) }.into(),
                )
            })?;
        }
        Ok::<_, Error>((d.plan, d.report))
    })?;
    print_applied(&p, &report, &files.commit, as_json)?;
    Ok(if report.failures.is_empty() { Outcome::Done } else { Outcome::UnitFailed })
}

pub fn render(g: &Globals, src: &SourceArgs, agents: &[String]) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    let (files, fleet) = load_commit(g, src, &src.rev, false)?;
    let want = cfg.desired(&fleet, &files.commit, &Default::default());
    if !want.refused.is_empty() {
        return Err(Error::Refused(anyhow::anyhow!("{}", want.refused.join("\nerror: "))));
    }
    let here: std::collections::BTreeSet<&str> = fleet.agents_for_host(&cfg.host).map(|a| a.name.as_str()).collect();
    let unknown: Vec<&str> = agents.iter().map(String::as_str).filter(|a| !here.contains(a)).collect();
    if !unknown.is_empty() {
        return Err(Error::failed(format!(
            "no agent {} on host {:?} in {}; the agents here are: {}",
            unknown.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
            cfg.host,
            plan::short(&files.commit),
            if here.is_empty() { "none".to_string() } else { here.into_iter().collect::<Vec<_>>().join(", ") }
        )));
    }
    for (name, u) in &want.units {
        if agents.is_empty() || agents.contains(&u.agent) {
            println!("### {name}\n{}", u.content);
        }
    }
    Ok(Outcome::Done)
}

#[cfg(not(feature = "sandbox"))]
pub fn apply_in_sandbox(_: &Globals, _: &SourceArgs, _: bool, _: bool) -> Result<Outcome, Error> {
    Err(Error::failed("this fleetwright was built without the `sandbox` feature; build it with the default features to use apply --sandbox"))
}

/// `apply --sandbox`: boot a throw-away systemd, apply the commit there (this binary, run
/// inside the sandbox's namespaces), report what failed to start and which programs are missing,
/// show the status, and tear it all down. The host's systemd is never touched.
#[cfg(feature = "sandbox")]
pub fn apply_in_sandbox(g: &Globals, src: &SourceArgs, offline: bool, run_jobs: bool) -> Result<Outcome, Error> {
    use fleetwright_sandbox::{Sandbox, SandboxOptions};
    let cfg = g.host_config();
    let (files, fleet) = load_commit(g, src, &src.rev, false)?;
    if fleetwright::source::looks_like_url(&src.repo) {
        return Err(Error::failed(format!("apply --sandbox takes a local repository; clone {} first", src.repo)));
    }
    let repo = match std::fs::canonicalize(&src.repo) {
        Ok(r) if r.starts_with("/tmp") || r.starts_with("/var/tmp") || r.starts_with("/run") => {
            return Err(Error::failed(format!(
                "{} is under /tmp, /var/tmp or /run, which the sandbox replaces with its own; clone the repository elsewhere",
                r.display()
            )));
        }
        Ok(r) => r,
        Err(e) => return Err(Error::failed(format!("{}: {e}", src.repo))),
    };
    if !Sandbox::available() {
        return Err(Error::failed("the sandbox needs root, /lib/systemd/systemd, unshare, nsenter and a cgroup2 mount"));
    }
    let sb = Sandbox::boot(SandboxOptions { dbus: true, user_manager: g.user, offline, ..Default::default() })
        .map_err(|e| Error::failed(format!("booting the sandbox: {e}")))?;
    println!("sandbox: a throw-away systemd is running as pid {}; applying {} for host {:?}", sb.pid(), plan::short(&files.commit), cfg.host);
    let missing: Vec<String> = fleet.agents_for_host(&cfg.host).flat_map(|a| missing_on_this_machine(a, g.user)).collect();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "fleetwright".into());
    let run = |args: &[&str]| {
        let mut c = sb.command(&exe);
        if g.user {
            c.envs(sb.user_env()).arg("--user");
        }
        c.args(["--host", &cfg.host]).args(args);
        c.status().map(|s| s.code())
    };
    let repo_s = repo.display().to_string();
    // Services are watched a few seconds: one that crash-loops is reported like a failed start.
    let mut args = vec!["apply", "--wait", "3s", "--repo", repo_s.as_str(), "--rev", files.commit.as_str()];
    if let Some(p) = &src.path {
        args.extend(["--path", p.as_str()]);
    }
    let applied = run(&args);
    // Each job once, on request: a job's program, user, directories and credentials are only
    // proven by running it (its timer would, hours later).
    let mut jobs_failed = 0;
    if run_jobs && matches!(applied, Ok(Some(0 | 4))) {
        let want = cfg.desired(&fleet, &files.commit, &Default::default());
        let jobs: Vec<&String> = want.units.iter().filter(|(_, u)| u.role.is_job()).map(|(n, _)| n).collect();
        println!("\nsandbox: running {} job(s) once", jobs.len());
        for unit in jobs {
            let mut c = sb.command("systemctl");
            if g.user {
                c.envs(sb.user_env()).arg("--user");
            }
            c.args(["start", unit.as_str()]);
            let done = fleetwright_sys::proc::output_with_timeout(c, Duration::from_secs(120));
            match done {
                Ok(o) if o.status.success() => println!("  {unit}: done"),
                Ok(o) => {
                    jobs_failed += 1;
                    eprintln!("FAILED {unit}: {}", String::from_utf8_lossy(&o.stderr).trim());
                    let journal = if g.user { sb.user_journal(unit) } else { sb.journal(unit) };
                    for line in journal.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
                        eprintln!("    {line}");
                    }
                }
                Err(e) => {
                    jobs_failed += 1;
                    eprintln!("FAILED {unit}: {e} (given two minutes)");
                }
            }
        }
    }
    println!("\nsandbox status:");
    let _ = run(&["status"]);
    for m in &missing {
        eprintln!("missing: {m}");
    }
    sb.shutdown();
    println!(
        "sandbox: shut down. This host's systemd and unit files were not changed; the services did run for a moment, as this machine's users, on its files{}. {}",
        if offline { " (without network)" } else { " and network (--offline to cut them off)" },
        if run_jobs { "The jobs ran once each (above)." } else { "Scheduled jobs were not run (their timers were checked; --run-jobs runs each once)." }
    );
    // The apply inside printed what it did and why it failed; its code says how it ended.
    match applied {
        Ok(Some(0)) if missing.is_empty() && jobs_failed == 0 => Ok(Outcome::Done),
        Ok(Some(0 | 4)) => Ok(Outcome::UnitFailed),
        Ok(Some(1)) => Err(Error::Refused(anyhow::anyhow!("nothing was applied in the sandbox"))),
        Ok(Some(3)) => Err(Error::Interrupted(anyhow::anyhow!("the apply in the sandbox stopped part-way"))),
        Ok(code) => Err(Error::failed(format!("the apply in the sandbox failed ({})", code.map_or("killed by a signal".to_string(), |c| format!("exit {c}"))))),
        Err(e) => Err(Error::failed(format!("cannot run fleetwright in the sandbox: {e}"))),
    }
}

/// A user's uid, gid and groups, by name or number (None: no such user here).
#[cfg(feature = "sandbox")]
fn user_ids(user: &str) -> Option<(String, (u32, Vec<u32>))> {
    let u = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()?,
        Err(_) => nix::unistd::User::from_name(user).ok().flatten()?,
    };
    let name = std::ffi::CString::new(u.name.clone()).ok()?;
    let groups = nix::unistd::getgrouplist(&name, u.gid).map(|gs| gs.into_iter().map(|g| g.as_raw()).collect()).unwrap_or_else(|_| vec![u.gid.as_raw()]);
    Some((u.name, (u.uid.as_raw(), groups)))
}

/// Why user `ids` (uid, groups) cannot execute `path`: a directory on the way it may not
/// enter, or the file's mode. By the owner/group/other bits (ACLs are not read).
#[cfg(feature = "sandbox")]
fn not_executable_by(ids: &(u32, Vec<u32>), path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let (uid, groups) = ids;
    if *uid == 0 {
        return None;
    }
    let allowed = |m: &std::fs::Metadata| {
        let bits = if m.uid() == *uid {
            m.mode() >> 6
        } else if groups.contains(&m.gid()) {
            m.mode() >> 3
        } else {
            m.mode()
        };
        bits & 0o1 != 0
    };
    let mut dir = std::path::PathBuf::from("/");
    let parts: Vec<_> = path.parent().map(|p| p.components().skip(1).collect()).unwrap_or_default();
    for c in parts {
        dir.push(c);
        match std::fs::metadata(&dir) {
            Ok(m) if !allowed(&m) => return Some(format!("it may not enter {} (mode {:o})", dir.display(), m.mode() & 0o7777)),
            Ok(_) => {}
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if !allowed(&m) => Some(format!("the file's mode {:o} does not let it", m.mode() & 0o7777)),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// What can be known of an agent without running it, and would make it fail on this machine:
/// a program, a user or group, a working directory or a credential that is not there.
#[cfg(feature = "sandbox")]
fn missing_on_this_machine(a: &spec::model::Agent, user_scope: bool) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    // Who runs it: the agent's user (root without one, or in a user manager: the caller).
    let runner = if user_scope { None } else { a.run.user.as_deref().and_then(user_ids) };
    let mut program = |what: &str, p: &str| match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            if let Some((name, ids)) = &runner
                && let Some(why) = not_executable_by(ids, Path::new(p))
            {
                out.push(format!("{}: {what} {p} cannot be run by user {name}: {why}", a.name));
            }
        }
        Ok(_) => out.push(format!("{}: {what} {p} is not an executable file", a.name)),
        Err(_) => out.push(format!("{}: {what} {p} does not exist", a.name)),
    };
    program("ExecStart program", &a.run.command[0]);
    if let Some(check) = a.health.as_ref().and_then(|h| h.check.as_ref()) {
        program("health.check program", &check[0]);
    }
    if !user_scope {
        if let Some(u) = &a.run.user
            && u.parse::<u32>().is_err()
            && nix::unistd::User::from_name(u).ok().flatten().is_none()
        {
            out.push(format!("{}: user {u} does not exist", a.name));
        }
        if let Some(g) = &a.run.group
            && g.parse::<u32>().is_err()
            && nix::unistd::Group::from_name(g).ok().flatten().is_none()
        {
            out.push(format!("{}: group {g} does not exist", a.name));
        }
    }
    if let Some(d) = &a.run.working_directory
        && !Path::new(d).is_dir()
    {
        out.push(format!("{}: workingDirectory {d} does not exist", a.name));
    }
    for (name, path) in &a.run.credentials {
        if !Path::new(path).exists() {
            out.push(format!("{}: credential {name} ({path}) does not exist", a.name));
        }
    }
    out
}

/// A host run by `apply` alone (no daemon) still reports its agents' failures: the Fleet's
/// sinks are kept in the history, where the failure reporter finds them and delivers itself.
/// A running daemon keeps its own (with its --notify-url): left alone.
fn remember_sinks(cfg: &fleetwright::host::HostConfig, fleet: &spec::Fleet, repo: &str) {
    use fleetwright::daemon::notifications as n;
    if fleet.notify.is_empty() || fleetwright::ops::failure::daemon_running(&cfg.state_dir) {
        return;
    }
    let stored = fleetwright::daemon::history::History::open(&cfg.state_dir).and_then(|h| {
        h.set_json(n::FLEET_SINKS_KEY, serde_json::to_value(&fleet.notify).ok().as_ref())?;
        let all = n::sinks_for(&fleet.notify, None, repo);
        for s in &all {
            h.ensure_sink(&fleetwright::notify::sink_key(s))?;
        }
        h.set_json(n::SINKS_KEY, serde_json::to_value(&all).ok().as_ref())
    });
    if let Err(e) = stored {
        eprintln!("note: the notification sinks could not be recorded for the failure reporter: {e}");
    }
}
