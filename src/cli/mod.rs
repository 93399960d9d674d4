//! The commands behind the binary. Each returns `Result<Outcome, Error>` and prints only what
//! it produces (a plan, a report, diagnostics); `exit::finish` says how it ended.

pub mod args;
mod daemon;
mod deploy;
pub mod exit;
mod jobs;
pub mod logging;
#[cfg(feature = "sandbox")]
mod sandbox;
mod secret;
mod views;

use std::path::{Path, PathBuf};

use fleetwright::host::HostConfig;
use fleetwright::layout;
use fleetwright::source::CommitFiles;
use fleetwright::spec::{self, Diagnostics};
use fleetwright::types::Scope;

use args::{Args, Command, Globals, SourceArgs};
pub use exit::{Error, Outcome};

/// Which row of the exit-code table `command` is.
pub fn kind(command: &Command) -> exit::Kind {
    match command {
        Command::Validate { .. } => exit::Kind::Validate,
        Command::Apply { .. } => exit::Kind::Apply,
        _ => exit::Kind::Other,
    }
}

/// Run one command.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let g = &args.globals;
    if g.sandbox {
        return in_sandbox(args);
    }
    match args.command {
        Command::Validate { paths } => deploy::validate(&paths),
        Command::Plan { src, base: Some(base), head: Some(head), format, json, no_diff, .. } => {
            deploy::review(g, &src, &base, &head, if json { args::ReviewFormat::Json } else { format }, !no_diff)
        }
        Command::Plan { src, json, no_diff, allow_empty, .. } => deploy::plan(g, &src, json, !no_diff, allow_empty),
        Command::Apply { src, allow_empty, json, wait, .. } => deploy::apply(g, &src, allow_empty, json, wait),
        Command::Render { src, agents } => deploy::render(g, &src, &agents),
        Command::Status { json } => daemon::status(g, json),
        Command::Daemon(d) => daemon::daemon(g, d),
        Command::History { limit, json } => daemon::history(g, limit, json),
        Command::Rollback { to, force } => daemon::rollback(g, to.as_deref(), force),
        Command::Resume => daemon::resume(g),
        Command::Sync => daemon::sync(g),
        Command::Slot { dir, group, limit, when_full, timeout, command } => jobs::slot(&dir, &group, limit, when_full, timeout, &command),
        Command::SlotPrepare { dir, group, limit, users } => jobs::slot_prepare(&dir, &group, limit, &users),
        Command::Heartbeat { agent, file, max_age, unit } => jobs::heartbeat(g, &agent, &file, max_age, &unit),
        Command::Notify(args::NotifyCommand::Test { repo, branch, rev, path, notify_url }) => {
            jobs::notify_test(g, repo.as_deref(), &branch, &rev, path.as_deref(), notify_url.as_deref())
        }
        Command::NotifyReport { unit, success } => jobs::notify_report(g, &unit, success),
        Command::Mkdir { mode, path } => jobs::mkdir(&path, mode),
        Command::Signal { signal, pid } => jobs::signal(&signal, pid),
        Command::LogsClean { path, pattern, max_age, max_files, max_size, dry_run, json } => {
            jobs::logs_clean(&path, &pattern, max_age, max_files, max_size.as_deref(), dry_run, json)
        }
        Command::Backup { sqlite, to, keep_last, keep_daily, keep_weekly, verify, wal } => {
            jobs::backup(&sqlite, &to, fleetwright::ops::backup::Policy { last: keep_last, daily: keep_daily, weekly: keep_weekly }, verify, wal)
        }
        Command::Backups { agent, json } => jobs::backups(g, &agent, json),
        Command::Restore { agent, from, latest, db } => jobs::restore(g, &agent, from.as_deref(), latest, db.as_deref()),
        Command::Schedule { src, window, at, columns, tz, json } => views::schedule(g, &src, window, at, columns, tz.as_deref(), json),
        Command::Inventory { src } => views::inventory(g, &src),
        Command::Sandbox(s) => sandbox_command(s),
        Command::Secret(s) => secret::run(g, s),
        Command::Schema => views::schema(),
        Command::Completions { shell } => views::completions(shell),
        Command::Man => views::man(),
    }
}

/// `--sandbox`: the command runs in the sandbox `sandbox up` started; `apply` without one tries
/// the commit in a throw-away sandbox.
#[cfg(feature = "sandbox")]
fn in_sandbox(args: Args) -> Result<Outcome, Error> {
    let g = &args.globals;
    match args.command {
        Command::Apply { src, offline, run_jobs, .. } if !sandbox::is_up() => deploy::apply_in_sandbox(g, &src, offline, run_jobs),
        Command::Plan { base: None, .. }
        | Command::Apply { .. }
        | Command::Status { .. }
        | Command::History { .. }
        | Command::Rollback { .. }
        | Command::Resume
        | Command::Sync
        | Command::Daemon(_) => sandbox::relay(g.user),
        _ => Err(Error::failed("--sandbox is for the commands that act on a host: plan, apply, status, history, rollback, resume, sync and daemon")),
    }
}

#[cfg(feature = "sandbox")]
fn sandbox_command(s: args::SandboxCommand) -> Result<Outcome, Error> {
    match s {
        args::SandboxCommand::Up { offline } => sandbox::up(offline),
        args::SandboxCommand::Down => sandbox::down(),
        args::SandboxCommand::Keep { offline } => sandbox::keep(offline),
    }
}

#[cfg(not(feature = "sandbox"))]
fn in_sandbox(args: Args) -> Result<Outcome, Error> {
    match args.command {
        Command::Apply { src, offline, run_jobs, .. } => deploy::apply_in_sandbox(&args.globals, &src, offline, run_jobs),
        _ => Err(Error::failed("this fleetwright was built without the `sandbox` feature; build it with the default features to use --sandbox")),
    }
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_command(_: args::SandboxCommand) -> Result<Outcome, Error> {
    Err(Error::failed("this fleetwright was built without the `sandbox` feature; build it with the default features to use the sandbox"))
}

/// Is `pid` a running fleetwright whose command line holds `words` in a row (`daemon`,
/// `sandbox keep`)? A stale pid file must not make us signal or enter a stranger.
fn is_fleetwright(pid: u32, words: &[&str]) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first().is_some_and(|a| a.ends_with(b"fleetwright")) && args.windows(words.len()).any(|w| w.iter().zip(words).all(|(a, b)| *a == b.as_bytes()))
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
        HostConfig { scope, unit_dir, state_dir, host, bus_address: self.bus_address.clone(), links: None, identity: self.identity.clone() }
    }
}

/// A spec file's name as the user gave its directory: `prefix/file` (just `file` for `.`).
fn shown_path(prefix: &Path, file: &str) -> String {
    if prefix != Path::new("") && prefix != Path::new(".") { prefix.join(file).display().to_string() } else { file.to_string() }
}

/// The diagnostics of a load on stderr, bounded (`Diagnostics::render`: at most 100 per file
/// and 1000 in all, source lines cut at 200 characters, control characters escaped); the
/// returned error says how many there are.
fn invalid(diags: &Diagnostics, files: &[(String, String)], prefix: &Path) -> Error {
    let sources = spec::sources(files);
    eprint!("{}", diags.render(|f| sources.get(f).copied(), |f| shown_path(prefix, f)));
    Error::Invalid { count: diags.0.len() }
}

/// Warnings of a valid fleet (a secret in `run.environment`): one line each, without the
/// source line (which would print the very secret the warning is about).
fn print_warnings(fleet: &spec::Fleet, prefix: &Path) {
    for w in &fleet.warnings {
        eprintln!("{}:{}:{}: {}", spec::diag::printable(&shown_path(prefix, &w.loc.file)), w.loc.line, w.loc.col, w.message);
    }
}

/// Read and validate a commit (`missing_is_empty`: a commit without the fleet directory is an
/// empty fleet, the base of the pull request that creates it). Its diagnostics are printed.
fn load_commit(g: &Globals, src: &SourceArgs, rev: &str, missing_is_empty: bool) -> Result<(CommitFiles, spec::Fleet), Error> {
    use fleetwright::source::{FetchError, SourceError};
    let t = std::time::Instant::now();
    // Where repositories fetched from a URL are kept: the state directory's cache, and nowhere
    // else (never a shared directory such as /tmp, where another user could plant one).
    // `GitSource::open` makes it private (0700) or says why it cannot be used.
    let read = fleetwright::source::read_location(&src.repo, rev, Some(&src.branch), src.path.as_deref(), &g.host_config().layout().cache());
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "commit read");
    let files = match read {
        Ok(f) => f,
        Err(FetchError::Source(SourceError::NoSubdir { commit, .. })) if missing_is_empty => {
            return Ok((CommitFiles { commit, summary: String::new(), files: vec![], secrets: Default::default() }, spec::Fleet::default()));
        }
        Err(e) => return Err(Error::failed(e)),
    };
    // What is read is a commit: edits not committed are not in it, and are said to be left out.
    if rev == "HEAD"
        && !fleetwright::source::looks_like_url(&src.repo)
        && let Some(n @ 1..) = fleetwright::source::uncommitted_changes(Path::new(&src.repo), src.path.as_deref())
    {
        eprintln!(
            "warning: fleetwright reads commits: {n} uncommitted change{} to spec files {} not in {} (commit {} first)",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            fleetwright::plan::short(&files.commit),
            if n == 1 { "it" } else { "them" }
        );
    }
    let prefix = Path::new(src.path.as_deref().unwrap_or(""));
    match spec::load_with(&files.files, Some(&files.secrets), &fleetwright::host::zones::Tzdata) {
        Ok(fleet) => {
            print_warnings(&fleet, prefix);
            Ok((files, fleet))
        }
        Err(diags) => {
            eprintln!("commit {} is invalid; nothing of it is applied:", fleetwright::plan::short(&files.commit));
            let e = invalid(&diags, &files.files, prefix);
            if src.path.is_none() && spread_over_directories(&files.files) {
                eprintln!(
                    "hint: every *.yaml and *.yml file of the repository is read as a spec; if the fleet is one directory of it, name it with --path DIR"
                );
            }
            Err(e)
        }
    }
}

/// Do the spec files of a commit sit in more than one top-level directory? Then a YAML file
/// that is no spec (CI configuration, documentation) may be among them. Files at the root and
/// one directory (`fleet.yaml` beside `agents/`) is the usual layout, and no reason for a hint.
fn spread_over_directories(files: &[(String, String)]) -> bool {
    let tops: std::collections::BTreeSet<&str> = files.iter().filter_map(|(p, _)| p.split_once('/').map(|(top, _)| top)).collect();
    tops.len() > 1
}

/// The manager could not be reached: say so, and where a fleet can be tried without one.
fn unreachable(e: fleetwright::host::systemd::SystemdError) -> Error {
    if e.is_transient() && matches!(e, fleetwright::host::systemd::SystemdError::Bus { .. }) {
        return Error::failed(format!(
            "{e}\nhint: no systemd to manage here (a container, CI, WSL)? `fleetwright sandbox up` boots a throw-away one; then give --sandbox to plan, apply and status"
        ));
    }
    Error::failed(e)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::failed(format!("cannot start the async runtime: {e}")))
}

/// JSON for stdout. Our values always serialize; should one not, that is an error like any.
fn json(value: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::failed(format!("cannot print JSON: {e}")))
}
