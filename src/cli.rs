//! The commands behind the binary: each returns its exit code and prints what the user sees.
//! Errors are printed here, once, with their context.

use std::path::{Path, PathBuf};

use crate::host::apply::{ApplyReport, deploy, observe};
use crate::host::state::StateDir;
use crate::host::systemd::Systemd;
use crate::host::{HostConfig, status};
use crate::layout;
use crate::plan::{self, PlanOptions};
use crate::source::{CommitFiles, read_dir};
use crate::spec::{self, Diagnostics};
use crate::types::Scope;

/// Exit codes, as documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    /// validate: invalid; plan: changes pending; apply: nothing applied.
    pub const CHANGES_OR_INVALID: u8 = 1;
    pub const ERROR: u8 = 2;
    /// apply: changed part of the host, then stopped on an error (the bus or the manager went
    /// away, a disk filled up): nothing is lost, the next apply finishes it.
    pub const INTERRUPTED: u8 = 3;
    /// apply: applied, but a unit failed.
    pub const UNIT_FAILED: u8 = 4;
}

pub struct Globals {
    pub unit_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub user: bool,
    pub host: Option<String>,
    pub bus_address: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// The fleet repository: a local path, or a URL (file://, https://, ssh://) fetched into the state directory's cache
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// With a URL: the branch to fetch
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The commit to use
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// The directory of the repository that holds the specs
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

impl Globals {
    pub fn host_config(&self) -> HostConfig {
        let scope = if self.user { Scope::User } else { Scope::System };
        let xdg = |var: &str, fallback: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| home().join(fallback));
        let unit_dir = self.unit_dir.clone().unwrap_or_else(|| match scope {
            Scope::System => PathBuf::from(layout::SYSTEM_UNIT_DIR),
            Scope::User => xdg("XDG_CONFIG_HOME", ".config").join(layout::USER_UNIT_SUBDIR),
        });
        let state_dir = self.state_dir.clone().unwrap_or_else(|| match scope {
            Scope::System => PathBuf::from(layout::SYSTEM_STATE_DIR),
            Scope::User => xdg("XDG_STATE_HOME", ".local/state").join(layout::USER_STATE_SUBDIR),
        });
        let host =
            self.host.clone().unwrap_or_else(|| nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_else(|_| "localhost".into()));
        HostConfig { scope, unit_dir, state_dir, host, bus_address: self.bus_address.clone(), links: None }
    }
}

/// A spec file's name as the user gave its directory: `prefix/file` (just `file` for `.`).
fn shown_path(prefix: &Path, file: &str) -> String {
    if prefix != Path::new("") && prefix != Path::new(".") { prefix.join(file).display().to_string() } else { file.to_string() }
}

/// The diagnostics of a load on stderr, bounded (`Diagnostics::render`: at most 100 per file
/// and 1000 in all, source lines cut at 200 characters, control characters escaped), then
/// how many there are.
fn print_diagnostics(diags: &Diagnostics, files: &[(String, String)], prefix: &Path) {
    let sources = spec::sources(files);
    eprint!("{}", diags.render(|f| sources.get(f).copied(), |f| shown_path(prefix, f)));
    eprintln!("{} error{}", diags.0.len(), if diags.0.len() == 1 { "" } else { "s" });
}

/// Warnings of a valid fleet (a secret in `run.environment`): one line each, without the
/// source line (which would print the very secret the warning is about).
fn print_warnings(fleet: &spec::Fleet, prefix: &Path) {
    for w in &fleet.warnings {
        eprintln!("{}:{}:{}: {}", spec::diag::printable(&shown_path(prefix, &w.loc.file)), w.loc.line, w.loc.col, w.message);
    }
}

pub fn validate(dir: &Path) -> u8 {
    let files = match read_dir(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CHANGES_OR_INVALID;
        }
    };
    match spec::load(&files, &crate::host::zones::Tzdata) {
        Ok(fleet) => {
            print_warnings(&fleet, dir);
            println!("{} valid: {} agents in {} files", dir.display(), fleet.agents.len(), files.len());
            exit::OK
        }
        Err(diags) => {
            print_diagnostics(&diags, &files, dir);
            exit::CHANGES_OR_INVALID
        }
    }
}

/// Where repositories fetched from a URL are kept: the state directory's cache, and nowhere
/// else (never a shared directory such as /tmp, where another user could plant one). Nothing
/// is made here: a local repository is read in place and never needs it; for a URL,
/// `source::GitSource::open` makes it private (0700) or says why it cannot be used, and which
/// option to pass instead.
fn cache_dir(g: &Globals) -> PathBuf {
    g.host_config().layout().cache()
}

/// Read and validate a commit; print why when it is not valid.
fn load_commit(g: &Globals, src: &SourceArgs) -> Result<(CommitFiles, spec::Fleet), u8> {
    load_commit_with(g, src, false)
}

/// `load_commit`; with `missing_is_empty`, a commit without the fleet directory is an empty
/// fleet (the base of the pull request that creates it).
fn load_commit_with(g: &Globals, src: &SourceArgs, missing_is_empty: bool) -> Result<(CommitFiles, spec::Fleet), u8> {
    let t = std::time::Instant::now();
    let read = crate::source::read_location(&src.repo, &src.rev, Some(&src.branch), src.path.as_deref(), &cache_dir(g));
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "commit read");
    let files = match read {
        Ok(f) => f,
        Err(crate::source::FetchError::Source(crate::source::SourceError::NoSubdir { commit, .. })) if missing_is_empty => {
            return Ok((CommitFiles { commit, summary: String::new(), files: vec![] }, spec::Fleet::default()));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Err(exit::ERROR);
        }
    };
    match spec::load(&files.files, &crate::host::zones::Tzdata) {
        Ok(fleet) => {
            print_warnings(&fleet, Path::new(src.path.as_deref().unwrap_or("")));
            Ok((files, fleet))
        }
        Err(diags) => {
            eprintln!("commit {} is invalid; nothing of it is applied:", plan::short(&files.commit));
            print_diagnostics(&diags, &files.files, Path::new(src.path.as_deref().unwrap_or("")));
            Err(exit::CHANGES_OR_INVALID)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// What a fleet asks for that this scope cannot do, said once on stderr.
fn scope_notes(cfg: &crate::host::HostConfig, fleet: &spec::Fleet) {
    if cfg.scope == crate::types::Scope::User && fleet.journal.is_some() {
        eprintln!("note: the Fleet's journal limits are for the system's journald; with --user they are not written");
    }
}

pub fn plan(g: &Globals, src: &SourceArgs, json: bool, diffs: bool, allow_empty: bool) -> u8 {
    let cfg = g.host_config();
    let Ok((files, fleet)) = load_commit(g, src) else { return exit::ERROR };
    scope_notes(&cfg, &fleet);
    runtime().block_on(async {
        let state = StateDir::new(&cfg.state_dir);
        let result = async {
            let inv = state.load_inventory()?;
            let want = cfg.desired(&fleet, &files.commit, &inv);
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await?;
            let observed = observe(&sd, &cfg, &want, inv).await?;
            Ok::<_, Box<dyn std::error::Error>>(plan::plan(&want, &observed, PlanOptions { allow_empty }))
        }
        .await;
        match result {
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
            Ok(p) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&p).expect("plan serializes"));
                } else {
                    print!("{}", plan::render_text(&p, diffs));
                }
                if !p.errors.is_empty() {
                    exit::ERROR
                } else if p.has_changes() {
                    exit::CHANGES_OR_INVALID
                } else {
                    exit::OK
                }
            }
        }
    })
}

pub fn apply(g: &Globals, src: &SourceArgs, allow_empty: bool, json: bool, wait: std::time::Duration) -> u8 {
    let cfg = g.host_config();
    // The commit the host was last converged from, again: planned from the inventory and the
    // files on disk, without reading and rendering the commit (when anything differs, the
    // full apply below does).
    if !crate::source::looks_like_url(&src.repo)
        && let Ok(commit) = crate::source::resolve_commit(Path::new(&src.repo), &src.rev)
    {
        let key = crate::host::apply::render_key(&cfg, &commit, src.path.as_deref());
        let fast = runtime().block_on(async {
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.ok()?;
            crate::host::apply::deploy_unchanged(&sd, &cfg, &StateDir::new(&cfg.state_dir), &key, PlanOptions { allow_empty }).await.ok().flatten()
        });
        if let Some(d) = fast {
            tracing::debug!("apply: the same commit, converged: nothing read or rendered");
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "plan": d.plan, "failures": d.report.failures, "filesWritten": 0, "filesRemoved": 0, "reloaded": false })
                    )
                    .expect("serializes")
                );
            } else {
                print!("{}", plan::render_text(&d.plan, false));
                print_report(&d.report, &commit);
            }
            return exit::OK;
        }
    }
    let t = std::time::Instant::now();
    let (files, fleet) = match load_commit(g, src) {
        Ok(x) => x,
        Err(code) => return if code == exit::ERROR { exit::ERROR } else { exit::CHANGES_OR_INVALID },
    };
    tracing::debug!(ms = t.elapsed().as_millis() as u64, files = files.files.len(), "apply: commit read and validated");
    scope_notes(&cfg, &fleet);
    runtime().block_on(async {
        let state = StateDir::new(&cfg.state_dir);
        let result = async {
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await?;
            let key = crate::host::apply::render_key(&cfg, &files.commit, src.path.as_deref());
            let mut d = deploy(&sd, &cfg, &state, &files.commit, &key, &fleet, PlanOptions { allow_empty }).await?;
            if !json {
                print!("{}", plan::render_text(&d.plan, false));
            }
            if d.report.failures.is_empty() {
                // The commit is applied by now: a fault while watching stops a finished job.
                d.report.failures = crate::host::apply::watch_after(&sd, &cfg, &d.plan, wait).await.map_err(|e| {
                    crate::host::apply::ApplyError::Interrupted { done: format!("{}; then watching the services failed", d.report.summary()), source: Box::new(e) }
                })?;
            }
            Ok::<_, Box<dyn std::error::Error>>((d.plan, d.report))
        }
        .await;
        match result {
            Err(e) => {
                use crate::host::apply::ApplyError;
                eprintln!("error: {e}");
                match e.downcast_ref::<ApplyError>() {
                    Some(ApplyError::Refused(_)) => exit::CHANGES_OR_INVALID,
                    Some(a) if a.changed_host() => exit::INTERRUPTED,
                    _ => {
                        eprintln!("nothing on the host was changed");
                        exit::ERROR
                    }
                }
            }
            Ok((p, report)) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plan": p, "failures": report.failures, "filesWritten": report.files_written, "filesRemoved": report.files_removed, "reloaded": report.reloaded })).expect("serializes"));
                } else {
                    print_report(&report, &files.commit);
                }
                if report.failures.is_empty() { exit::OK } else { exit::UNIT_FAILED }
            }
        }
    })
}

fn print_report(r: &ApplyReport, commit: &str) {
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
}

pub fn status(g: &Globals, json: bool) -> u8 {
    let cfg = g.host_config();
    let deployment = match crate::daemon::history::deployment(&cfg.state_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    runtime().block_on(async {
        let state = StateDir::new(&cfg.state_dir);
        let result = async {
            let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await?;
            status::collect(&sd, &cfg, &state).await
        }
        .await;
        match result {
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
            Ok((inv, agents)) => {
                if json {
                    let d = deployment.clone().unwrap_or_default();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "host": cfg.host,
                            "appliedCommit": inv.applied_commit,
                            "appliedAt": inv.applied_at,
                            "head": d.head,
                            "lastGood": d.last_good,
                            "pinned": d.pinned,
                            "gate": d.gate,
                            "source": d.source,
                            "restartWindowSecs": status::RESTART_WINDOW.as_secs(),
                            "agents": agents,
                        }))
                        .expect("serializes")
                    );
                } else {
                    use std::io::IsTerminal;
                    let text = status::render_text(&inv, &agents, deployment.as_ref());
                    print!("{}", if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() { status::colorize(&text) } else { text });
                }
                exit::OK
            }
        }
    })
}

pub fn render(g: &Globals, src: &SourceArgs, agents: &[String]) -> u8 {
    let cfg = g.host_config();
    let Ok((files, fleet)) = load_commit(g, src) else { return exit::ERROR };
    let want = cfg.desired(&fleet, &files.commit, &Default::default());
    if !want.refused.is_empty() {
        for r in &want.refused {
            eprintln!("error: {r}");
        }
        return exit::ERROR;
    }
    for (name, u) in &want.units {
        if agents.is_empty() || agents.contains(&u.agent) {
            println!("### {name}\n{}", u.content);
        }
    }
    exit::OK
}

/// `apply --sandbox`: boot a throw-away systemd, apply the commit there (this binary, run
/// inside the sandbox's namespaces), report what failed to start and which programs are missing,
/// show the status, and tear it all down. The host's systemd is never touched.
/// What can be known of an agent without running it, and would make it fail on this machine:
/// a program, a user or group, a working directory or a credential that is not there.
#[cfg(feature = "sandbox")]
fn missing_on_this_machine(a: &crate::spec::model::Agent, user_scope: bool) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut program = |what: &str, p: &str| match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
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

#[cfg(feature = "sandbox")]
pub fn apply_in_sandbox(g: &Globals, src: &SourceArgs, offline: bool) -> u8 {
    use fleetwright_sandbox::{Sandbox, SandboxOptions};
    let cfg = g.host_config();
    let Ok((files, fleet)) = load_commit(g, src) else { return exit::CHANGES_OR_INVALID };
    if crate::source::looks_like_url(&src.repo) {
        eprintln!("error: apply --sandbox takes a local repository; clone {} first", src.repo);
        return exit::ERROR;
    }
    let repo = match std::fs::canonicalize(&src.repo) {
        Ok(r) if r.starts_with("/tmp") || r.starts_with("/var/tmp") || r.starts_with("/run") => {
            eprintln!("error: {} is under /tmp, /var/tmp or /run, which the sandbox replaces with its own; clone the repository elsewhere", r.display());
            return exit::ERROR;
        }
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", src.repo);
            return exit::ERROR;
        }
    };
    if !Sandbox::available() {
        eprintln!("error: the sandbox needs root, /lib/systemd/systemd, unshare, nsenter and a cgroup2 mount");
        return exit::ERROR;
    }
    let sb = match Sandbox::boot(SandboxOptions { dbus: true, user_manager: g.user, offline, ..Default::default() }) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("error: booting the sandbox: {e}");
            return exit::ERROR;
        }
    };
    println!("sandbox: a throw-away systemd is running as pid {}; applying {} for host {:?}", sb.pid(), plan::short(&files.commit), cfg.host);
    let missing: Vec<String> = fleet.agents_for_host(&cfg.host).flat_map(|a| missing_on_this_machine(a, g.user)).collect();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "fleetwright".into());
    let run = |args: &[&str]| {
        let mut c = sb.command(&exe);
        if g.user {
            c.envs(sb.user_env()).arg("--user");
        }
        c.args(["--host", &cfg.host]).args(args);
        c.status().map(|s| s.code().unwrap_or(exit::ERROR as i32) as u8).unwrap_or(exit::ERROR)
    };
    let repo_s = repo.display().to_string();
    // Services are watched a few seconds: one that crash-loops is reported like a failed start.
    let mut args = vec!["apply", "--wait", "3s", "--repo", repo_s.as_str(), "--rev", files.commit.as_str()];
    if let Some(p) = &src.path {
        args.extend(["--path", p.as_str()]);
    }
    let code = run(&args);
    println!("\nsandbox status:");
    run(&["status"]);
    for m in &missing {
        eprintln!("missing: {m}");
    }
    sb.shutdown();
    println!(
        "sandbox: shut down. This host's systemd and unit files were not changed; the services did run for a moment, as this machine's users, on its files{}. Scheduled jobs were not run (their timers were checked).",
        if offline { " (without network)" } else { " and network (--offline to cut them off)" }
    );
    if code == exit::OK && !missing.is_empty() { exit::UNIT_FAILED } else { code }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// The fleet repository: a local path (watched) or a URL (file://, https://, ssh://, git@host:path; polled)
    #[arg(long)]
    pub repo: String,
    /// The branch to follow [default: the local repository's HEAD, or main for a URL]
    #[arg(long)]
    pub branch: Option<String>,
    /// The directory of the repository that holds the specs
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
    /// How often a remote is fetched (plus up to 10% jitter)
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    pub interval: std::time::Duration,
    /// How often the host is re-observed and drift repaired without a new commit
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg)]
    pub resync: std::time::Duration,
    /// How long the services changed since the last good commit must stay up before a new commit counts as good (0 disables the gate)
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub health_grace: std::time::Duration,
    /// Follow a branch that was force-pushed past the applied commit
    #[arg(long)]
    pub allow_force_push: bool,
    #[arg(long)]
    pub allow_empty: bool,
    /// Apply only commits signed (SSH signatures) by a key in this allowed-signers file
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// Serve /healthz, /metrics and POST /webhook on this loopback address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9797")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow a --listen address that is not loopback (/healthz and /metrics have no authentication)
    #[arg(long)]
    pub listen_any: bool,
    /// Do not serve HTTP at all
    #[arg(long)]
    pub no_listen: bool,
    /// The webhook's shared secret (HMAC-SHA256), read from this file: at least 16 bytes, whitespace around it ignored
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// POST a JSON event here for every verdict: deployed, rolled-back, failed, invalid, held, refused
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    spec::values::parse_duration(s).map(|d| std::time::Duration::from_millis(d.as_millis()))
}

pub fn daemon(g: &Globals, a: DaemonArgs) -> u8 {
    let host = g.host_config();
    let repo =
        if Path::new(&a.repo).exists() { std::fs::canonicalize(&a.repo).map(|p| p.display().to_string()).unwrap_or(a.repo.clone()) } else { a.repo.clone() };
    let webhook_secret = match &a.webhook_secret_file {
        Some(f) => match std::fs::read(f).map(|s| crate::daemon::webhook::secret_from_file(&s)) {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                eprintln!("error: --webhook-secret-file {}: {e}", f.display());
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: --webhook-secret-file {}: {e}", f.display());
                return exit::ERROR;
            }
        },
        None => None,
    };
    let listen = if a.no_listen { None } else { a.listen };
    if let Some(addr) = listen
        && let Err(e) = crate::daemon::server::check_listen(addr, a.listen_any)
    {
        eprintln!("error: {e}");
        return exit::ERROR;
    }
    let cfg = crate::daemon::DaemonConfig {
        host,
        repo,
        branch: a.branch,
        path: a.path,
        interval: a.interval,
        resync: a.resync,
        health_grace: a.health_grace,
        allow_force_push: a.allow_force_push,
        allow_empty: a.allow_empty,
        allowed_signers: a.allowed_signers,
        listen,
        listen_any: a.listen_any,
        webhook_secret,
        notify_url: a.notify_url,
    };
    // Blocking work (git, parsing, the history, an apply) runs on blocking threads: few at a
    // time, and not kept idle for long, so that an idle daemon holds no thread (and no memory of
    // one) it does not need.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(async { crate::daemon::Daemon::new(cfg)?.run().await });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "the daemon stopped");
            exit::ERROR
        }
    }
}

fn open_history(g: &Globals) -> Result<crate::daemon::history::History, u8> {
    crate::daemon::history::History::open(&g.host_config().state_dir).map_err(|e| {
        eprintln!("error: {e}");
        exit::ERROR
    })
}

pub fn history(g: &Globals, limit: usize, json: bool) -> u8 {
    let Ok(h) = open_history(g) else { return exit::ERROR };
    let rows = match h.recent(limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    // What cannot be read is said, never shown as "none".
    let (last_good, pin) = match (h.last_good(), h.pin()) {
        (Ok(g), Ok(p)) => (g, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "lastGood": last_good,
                "pin": pin,
                "reconciles": rows,
                "verdicts": h.verdicts(limit).unwrap_or_default(),
            }))
            .expect("serializes")
        );
        return exit::OK;
    }
    println!("last good: {}   pin: {}", last_good.as_deref().map(plan::short).unwrap_or("none"), pin.as_deref().map(plan::short).unwrap_or("none"));
    println!("{:<22} {:<8} {:<12} {:<12} {:<15} {:>7} {:>7}  ERROR", "STARTED", "TRIGGER", "HEAD", "APPLIED", "RESULT", "ACTIONS", "MS");
    for r in rows {
        let result = if r.repeats > 1 { format!("{} ×{}", r.result, r.repeats) } else { r.result.clone() };
        println!(
            "{:<22} {:<8} {:<12} {:<12} {:<15} {:>7} {:>7}  {}",
            r.started_at,
            r.trigger,
            r.head.as_deref().map(plan::short).unwrap_or("-"),
            r.applied.as_deref().map(plan::short).unwrap_or("-"),
            result,
            r.actions,
            r.duration_ms,
            crate::spec::diag::printable_lines(&r.error.unwrap_or_default())
        );
    }
    exit::OK
}

/// Pin a commit. Without `to`: the last good commit before the one applied now (the commit
/// that most recently passed a gate on this host, other than the applied one). A commit marked
/// bad is refused unless `force`.
pub fn rollback(g: &Globals, to: Option<&str>, force: bool) -> u8 {
    let Ok(h) = open_history(g) else { return exit::ERROR };
    let state = StateDir::new(g.host_config().state_dir);
    let applied = state.load_inventory().ok().and_then(|i| i.applied_commit);
    let target = match to {
        // The daemon reads the pin as a full commit id: resolve an abbreviation against the
        // commits it has seen.
        Some(t) if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t.to_ascii_lowercase(),
        Some(t) => {
            let seen = if t.len() >= 4 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                h.commits_starting_with(&t.to_ascii_lowercase()).unwrap_or_default()
            } else {
                Default::default()
            };
            match seen.len() {
                1 => seen.into_iter().next().expect("one"),
                0 => {
                    eprintln!("error: no commit starting with {t:?} is in the daemon's history; give the full 40-character commit id");
                    return exit::ERROR;
                }
                _ => {
                    eprintln!("error: {t:?} is ambiguous ({}); give more of the commit id", seen.into_iter().collect::<Vec<_>>().join(", "));
                    return exit::ERROR;
                }
            }
        }
        None => match h.good_before(applied.as_deref()) {
            Ok(Some(c)) => c,
            Ok(None) => {
                eprintln!(
                    "error: no good commit before {} is recorded; name one with --to COMMIT",
                    applied.as_deref().map(plan::short).unwrap_or("the applied one")
                );
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
    };
    match h.verdict_record(&target) {
        Ok(Some(v)) if v.verdict == crate::daemon::history::Verdict::Bad && !force => {
            eprintln!(
                "error: commit {} is marked bad ({}, at {}): the daemon rolled it back or refused it. Pinning it would deploy it again. Pin another commit, or pass --force to try it once more (it is gated like any deploy, and rolled back again if it fails)",
                plan::short(&target),
                v.reason,
                v.at
            );
            return exit::ERROR;
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    }
    if let Err(e) = h.set_pin_with(Some(&target), force, Some(&crate::host::now_rfc3339())) {
        eprintln!("error: {e}");
        return exit::ERROR;
    }
    println!(
        "pinned {}{}: the daemon applies it (gated like any deploy) and ignores the branch until `fleetwright resume`",
        plan::short(&target),
        if force { " (forced: it is marked bad and gets one more try)" } else { "" }
    );
    signal_daemon(g);
    exit::OK
}

pub fn resume(g: &Globals) -> u8 {
    let Ok(h) = open_history(g) else { return exit::ERROR };
    if let Err(e) = h.set_pin_with(None, false, None) {
        eprintln!("error: {e}");
        return exit::ERROR;
    }
    println!("unpinned: following the branch again");
    signal_daemon(g);
    exit::OK
}

/// SIGHUP to the running daemon (its pid file is in the state directory).
fn signal_daemon(g: &Globals) -> bool {
    let pid_file = g.host_config().layout().daemon_pid();
    // Only a live fleetwright daemon: a stale pid file must not make us signal a stranger.
    let pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"fleetwright")) && args.iter().any(|a| *a == b"daemon")
    });
    match pid.map(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGHUP)) {
        Some(Ok(())) => true,
        _ => {
            eprintln!("note: no daemon is running (no live pid in {}); nothing was signalled", pid_file.display());
            false
        }
    }
}

pub fn sync(g: &Globals) -> u8 {
    if signal_daemon(g) {
        println!("asked the daemon to reconcile now");
        exit::OK
    } else {
        exit::ERROR
    }
}

pub fn slot_prepare(dir: &Path, group: &str, limit: u32, users: &[String]) -> u8 {
    match crate::ops::slot::prepare(dir, group, limit, users) {
        Ok(done) => {
            for u in &done.unknown_users {
                eprintln!("note: user {u} of concurrency group {group} does not exist on this host: no slot access granted to it");
            }
            for p in &done.replaced {
                eprintln!("note: replaced {} (a lock file others could open) by a new one", p.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: preparing the slots of {group}: {e}");
            exit::ERROR
        }
    }
}

/// Take a slot of `group`, then become `command` (exec), holding the slot until it exits.
pub fn slot(dir: &Path, group: &str, limit: u32, when_full: &str, timeout: Option<&str>, command: &[String]) -> u8 {
    use std::os::unix::process::CommandExt;
    let wait = match when_full {
        "skip" => false,
        "wait" => true,
        other => {
            eprintln!("error: --when-full takes skip or wait, not {other:?}");
            return exit::ERROR;
        }
    };
    let timeout = match timeout.map(parse_duration_arg).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return exit::ERROR;
        }
    };
    match crate::ops::slot::acquire(dir, group, limit, wait, timeout) {
        Err(e) => {
            eprintln!("error: taking a slot of {group}: {e} (is `fleetwright slot-prepare` run before?)");
            exit::ERROR
        }
        Ok(None) if !wait => {
            // Counted as success: a full group is the cap working, not a failure.
            println!("concurrency group {group} is full ({limit} of {limit} runs): skipped this run");
            exit::OK
        }
        Ok(None) => {
            eprintln!("concurrency group {group} stayed full for the whole timeout: this run did not start");
            exit::CHANGES_OR_INVALID
        }
        Ok(Some(lock)) => {
            if let Err(e) = crate::ops::slot::keep_across_exec(lock) {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
            let e = std::process::Command::new(&command[0]).args(&command[1..]).exec();
            eprintln!("error: cannot execute {}: {e}", command[0]);
            exit::ERROR
        }
    }
}

pub fn heartbeat(g: &Globals, agent: &str, file: &Path, max_age: &str, unit: &str) -> u8 {
    let cfg = g.host_config();
    let max_age = match parse_duration_arg(max_age) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --max-age: {e}");
            return exit::ERROR;
        }
    };
    match runtime().block_on(crate::ops::heartbeat::check(agent, file, max_age, unit, &cfg.state_dir, cfg.scope)) {
        Ok(crate::ops::heartbeat::Verdict::Fine(m)) => {
            println!("{m}");
            exit::OK
        }
        Ok(crate::ops::heartbeat::Verdict::Restarted(m)) => {
            eprintln!("{m}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// Read a commit and validate it; Err(exit code) after printing why.
fn load_rev(g: &Globals, src: &SourceArgs, rev: &str, missing_is_empty: bool) -> Result<(CommitFiles, spec::Fleet), u8> {
    let mut s = src.clone();
    s.rev = rev.to_string();
    load_commit_with(g, &s, missing_is_empty)
}

/// `plan --base --head`: review a change without a host.
pub fn review(g: &Globals, src: &SourceArgs, base: &str, head: &str, format: &str) -> u8 {
    let (Ok((bf, b)), Ok((hf, h))) = (load_rev(g, src, base, true), load_rev(g, src, head, false)) else { return exit::ERROR };
    let cfg = g.host_config();
    let r = crate::review::review((&bf.commit, &b), (&hf.commit, &h), g.host.as_deref(), &cfg.render_ctx());
    match format {
        "markdown" | "md" => print!("{}", crate::review::render_markdown(&r)),
        "json" => println!("{}", serde_json::to_string_pretty(&r).expect("review serializes")),
        "text" => print!("{}", crate::review::render_text(&r)),
        other => {
            eprintln!("error: --format takes text, json or markdown, not {other:?}");
            return exit::ERROR;
        }
    }
    if r.plan.has_changes() { exit::CHANGES_OR_INVALID } else { exit::OK }
}

pub fn schedule(g: &Globals, src: &SourceArgs, window: &str, at: Option<&str>, columns: usize, tz: Option<&str>, json: bool) -> u8 {
    let Ok((_, fleet)) = load_commit(g, src) else { return exit::ERROR };
    let window = match parse_duration_arg(window) {
        Ok(w) => w.as_secs() as i64,
        Err(e) => {
            eprintln!("error: --window: {e}");
            return exit::ERROR;
        }
    };
    let from = match at {
        Some(t) => match humantime::parse_rfc3339_weak(t) {
            Ok(t) => t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
            Err(e) => {
                eprintln!("error: --at {t:?}: {e}; write it like 2026-11-23T09:00:00Z");
                return exit::ERROR;
            }
        },
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    };
    // The zones from the zone database, here at the edge: the schedule itself is pure.
    let (local, local_name) = match tz {
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(z) => (z, name.to_string()),
            Err(e) => {
                eprintln!("error: --tz {name}: {e}");
                return exit::ERROR;
            }
        },
        None => {
            let z = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
            let name = z.iana_name().unwrap_or("local time").to_string();
            (z, name)
        }
    };
    let timers = crate::schedule::timers(&fleet, g.host.as_deref(), &g.host_config().render_ctx(), &crate::host::zones::Tzdata);
    let named = crate::schedule::named_zones(&timers).into_iter().filter_map(|n| jiff::tz::TimeZone::get(&n).ok().map(|z| (n, z))).collect();
    let zones = crate::schedule::Zones { local, local_name, named };
    let s = crate::schedule::compute(&timers, from, window, &zones);
    if json {
        println!("{}", serde_json::to_string_pretty(&s).expect("schedule serializes"));
    } else {
        print!("{}", crate::schedule::render_text(&s, columns.clamp(12, 400)));
    }
    exit::OK
}

pub fn inventory(g: &Globals, src: &SourceArgs) -> u8 {
    let Ok((files, fleet)) = load_commit(g, src) else { return exit::ERROR };
    print!("{}", crate::catalog::render_markdown(&fleet, Some(&files.commit)));
    exit::OK
}

pub fn logs_clean(path: &str, pattern: &str, max_age: Option<&str>, max_files: Option<u64>, max_size: Option<&str>, dry_run: bool, json: bool) -> u8 {
    let max_age = match max_age.map(parse_duration_arg).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --max-age: {e}");
            return exit::ERROR;
        }
    };
    let max_size = match max_size.map(|s| spec::values::parse_size(s, false)).transpose() {
        Ok(s) => s.and_then(|s| s.bytes()),
        Err(e) => {
            eprintln!("error: --max-size: {e}");
            return exit::ERROR;
        }
    };
    let rule = crate::ops::retain::Rule { path: path.to_string(), pattern: pattern.to_string(), max_age, max_files, max_size };
    match crate::ops::retain::apply(&rule, std::time::SystemTime::now(), dry_run) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for r in &report.removed {
                    println!("{verb} {} ({} bytes, {})", r.path, r.bytes, r.reason);
                }
                println!(
                    "{path}/{pattern}: {verb} {} files, {} bytes freed; kept {}; {} symlinks left alone; {} vanished meanwhile",
                    report.removed.len(),
                    report.freed,
                    report.kept,
                    report.skipped_symlinks,
                    report.vanished
                );
                for e in &report.errors {
                    eprintln!("error: {e}");
                }
            }
            if report.errors.is_empty() { exit::OK } else { exit::CHANGES_OR_INVALID }
        }
        Err(e) => {
            eprintln!("error: {path}: {e}");
            exit::ERROR
        }
    }
}

pub fn backup(sqlite: &Path, to: &Path, last: u32, daily: u32, weekly: u32, verify: bool, wal: bool) -> u8 {
    let policy = crate::ops::backup::Policy { last, daily, weekly };
    match crate::ops::backup::backup(sqlite, to, &policy, verify, wal, std::time::SystemTime::now()) {
        Ok(r) => {
            println!(
                "backed up {} to {} ({} bytes, {} pages, {:.2}s{}); pruned {}",
                sqlite.display(),
                r.file.path,
                r.file.bytes,
                r.pages,
                r.seconds,
                if r.verified { ", verified" } else { "" },
                r.pruned.len()
            );
            exit::OK
        }
        Err(e) => {
            // A failed backup is a failed unit: visible in `status` and the journal.
            eprintln!("error: {e}");
            exit::CHANGES_OR_INVALID
        }
    }
}

fn agent_backups(g: &Globals, agent: &str, db: Option<&str>) -> Result<(String, String), u8> {
    let state = StateDir::new(g.host_config().state_dir);
    let inv = state.load_inventory().map_err(|e| {
        eprintln!("error: {e}");
        exit::ERROR
    })?;
    let Some(rec) = inv.agents.get(agent) else {
        eprintln!("error: no agent {agent:?} is deployed on this host");
        return Err(exit::ERROR);
    };
    let matching: Vec<&(String, String)> = rec.backups.iter().filter(|(d, _)| db.is_none_or(|x| x == d)).collect();
    match matching.as_slice() {
        [one] => Ok((one.0.clone(), one.1.clone())),
        [] => {
            eprintln!("error: agent {agent:?} has no backups{}", db.map(|d| format!(" of {d}")).unwrap_or_default());
            Err(exit::ERROR)
        }
        many => {
            eprintln!(
                "error: agent {agent:?} backs up several databases; name one with --db: {}",
                many.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>().join(", ")
            );
            Err(exit::ERROR)
        }
    }
}

pub fn backups(g: &Globals, agent: &str, json: bool) -> u8 {
    let state = StateDir::new(g.host_config().state_dir);
    let inv = match state.load_inventory() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let Some(rec) = inv.agents.get(agent) else {
        eprintln!("error: no agent {agent:?} is deployed on this host");
        return exit::ERROR;
    };
    let mut all = Vec::new();
    for (db, dir) in &rec.backups {
        match crate::ops::backup::list(Path::new(db), Path::new(dir), std::time::SystemTime::now()) {
            Ok(files) => all.push((db.clone(), files)),
            Err(e) => {
                eprintln!("error: {dir}: {e}");
                return exit::ERROR;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all).expect("serializes"));
    } else {
        for (db, files) in &all {
            println!("{db}: {} backups, the last taken first", files.len());
            for f in files {
                let note = if f.future {
                    "  (dated in the future: its clock was wrong, or it was copied in; never taken by --latest, not counted in keep)"
                } else {
                    ""
                };
                println!("  {}  {:>12} bytes  {}{note}", f.taken_at, f.bytes, f.path);
            }
        }
    }
    exit::OK
}

pub fn restore(g: &Globals, agent: &str, from: Option<&Path>, latest: bool, db: Option<&str>) -> u8 {
    let cfg = g.host_config();
    let Ok((db, dir)) = agent_backups(g, agent, db) else { return exit::ERROR };
    let file = match (from, latest) {
        (Some(f), _) => f.to_path_buf(),
        (None, true) => match crate::ops::backup::list(Path::new(&db), Path::new(&dir), std::time::SystemTime::now()) {
            Ok(files) => match crate::ops::backup::latest(&files) {
                (Some(f), skipped) => {
                    for s in skipped {
                        eprintln!(
                            "note: {} was taken later, but its name is dated in the future ({}): --latest never prefers it; restore it with --from if it is the one you want",
                            s.path, s.taken_at
                        );
                    }
                    PathBuf::from(&f.path)
                }
                (None, skipped) => {
                    if skipped.is_empty() {
                        eprintln!("error: no backups of {db} in {dir}");
                    } else {
                        eprintln!("error: every backup of {db} in {dir} is dated in the future; name the one to restore with --from");
                    }
                    return exit::ERROR;
                }
            },
            Err(e) => {
                eprintln!("error: {e}; nothing was changed");
                return exit::ERROR;
            }
        },
        (None, false) => {
            eprintln!("error: say which backup: --from FILE, or --latest (see `fleetwright backups {agent}`)");
            return exit::ERROR;
        }
    };
    let state = StateDir::new(&cfg.state_dir);
    // Under the apply lock: no apply, and no reconcile of the daemon, starts the agent again
    // in the middle of the swap.
    let _lock = match state.lock() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let inv = match state.load_inventory() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    // What killed applies, backups and restores left behind (temporary copies as big as the
    // database among them) goes first.
    if let Err(e) = crate::host::apply::sweep_apply_temps(&cfg, &state, &inv) {
        tracing::warn!(error = %e, "temporary files of interrupted applies not swept");
    }
    crate::host::apply::sweep_backup_temps(&inv);
    // The copy and its integrity check first, while the agent still runs: it is down only
    // for the swap.
    let prepared = match crate::ops::backup::prepare_restore(Path::new(&db), &file, std::time::SystemTime::now()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}; the live database was not replaced");
            return exit::ERROR;
        }
    };
    // Timers first (no new run starts), then the services.
    let mut units: Vec<&String> = inv.files.iter().filter(|(_, r)| r.agent == agent).map(|(n, _)| n).collect();
    units.sort_by_key(|u| (!u.ends_with(".timer"), u.to_string()));
    let enabled = inv.agents.get(agent).is_some_and(|r| r.enabled);
    runtime().block_on(async {
        let sd = match Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await {
            Ok(sd) => sd,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let names: Vec<&str> = units.iter().map(|u| u.as_str()).collect();
        let before = sd.statuses(&names).await.unwrap_or_default();
        let active: Vec<&str> = names.iter().copied().filter(|u| before.get(*u).is_some_and(|s| s.is_active())).collect();
        println!("stopping {}", if active.is_empty() { "nothing (no unit of it is running)".to_string() } else { active.join(", ") });
        if let Err(e) = sd.run_jobs("stop", &active).await {
            eprintln!("error: stopping {agent}: {e}");
            return exit::ERROR;
        }
        fleetwright_sys::crash_point("restore-stopped");
        let result = prepared.swap();
        // Start again what ran before, and what should run (an enabled agent's timers and
        // service: one that had failed on a broken database comes back too), whether or not
        // the swap worked. Never a job by itself: its timer starts it.
        let should_run = |u: &&str| {
            enabled
                && inv.files.get(*u).is_some_and(|r| matches!(r.role, crate::types::Role::Timer | crate::types::Role::AuxTimer | crate::types::Role::Service))
        };
        let mut start: Vec<&str> = names.iter().copied().filter(|u| active.contains(u) || should_run(u)).collect();
        start.dedup();
        let started = sd.run_jobs("start", &start).await;
        match result {
            Ok(replaced) => {
                println!(
                    "restored {} from {}{}",
                    db,
                    file.display(),
                    replaced.map(|p| format!("; the replaced database is kept at {}", p.display())).unwrap_or_default()
                );
                match started {
                    Ok(jobs) if jobs.iter().all(|j| j.done()) => exit::OK,
                    Ok(jobs) => {
                        for j in jobs.iter().filter(|j| !j.done()) {
                            eprintln!("error: starting {} again: {} (see `systemctl status {}`)", j.unit, j.result, j.unit);
                        }
                        exit::UNIT_FAILED
                    }
                    Err(e) => {
                        eprintln!("error: starting {agent} again: {e}; its units are stopped: the next apply (or the daemon) starts them");
                        exit::UNIT_FAILED
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}; the live database was not replaced");
                exit::ERROR
            }
        }
    })
}

/// `mkdir -p -m MODE PATH`: what a rendered unit needs made before it runs (the backup
/// directory, as root): never through a link, only in directories root alone can change
/// (`ops::walk`).
pub fn mkdir(path: &Path, mode: &str) -> u8 {
    let Ok(mode) = u32::from_str_radix(mode.trim_start_matches("0o"), 8) else {
        eprintln!("error: --mode {mode:?}: an octal mode, like 0750");
        return exit::ERROR;
    };
    let made = std::path::absolute(path)
        .map_err(|e| e.to_string())
        .and_then(|p| crate::ops::walk::make_dir(&p, mode & 0o7777, crate::ops::walk::Trust::Root).map_err(|e| e.to_string()));
    match made {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            exit::ERROR
        }
    }
}

/// `kill -SIGNAL PID`.
pub fn signal(name: &str, pid: i32) -> u8 {
    // 0 and negative pids name process groups: never.
    if pid <= 0 {
        eprintln!("error: {pid} is not a process id");
        return exit::ERROR;
    }
    let sig = match name.trim_start_matches("SIG").parse::<nix::sys::signal::Signal>().or_else(|_| format!("SIG{}", name.trim_start_matches("SIG")).parse()) {
        Ok(s) => s,
        Err(_) => {
            eprintln!("error: unknown signal {name:?}");
            return exit::ERROR;
        }
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: signal {sig} to {pid}: {e}");
            exit::ERROR
        }
    }
}
