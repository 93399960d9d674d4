//! The `fleetwright` binary: parse the command line, call the library, map outcomes to exit
//! codes. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetwright::cli;

#[derive(Parser)]
#[command(name = "fleetwright", version, about = "GitOps for systemd: converge this host to the fleet in a git repository")]
struct Args {
    /// Where unit files are written [default: /etc/systemd/system, or ~/.config/systemd/user with --user]
    #[arg(long, global = true, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// Inventory, deploy markers and lock [default: /var/lib/fleetwright, or ~/.local/state/fleetwright with --user]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Manage the calling user's systemd manager instead of the system's
    #[arg(long, global = true)]
    user: bool,
    /// This host's name, for `hosts:` [default: the machine's host name]
    #[arg(long, global = true, value_name = "NAME")]
    host: Option<String>,
    /// The D-Bus address of the bus the manager is on [default: the system bus, or the session bus with --user]
    #[arg(long, global = true, value_name = "ADDRESS", env = "FLEETWRIGHT_BUS_ADDRESS")]
    bus_address: Option<String>,
    /// Log lines: auto (the journal's priorities when stderr is the journal, else text), text, json or journal
    #[arg(long, global = true, value_name = "FORMAT", default_value = "auto", env = "FLEETWRIGHT_LOG_FORMAT")]
    log_format: fleetwright::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every spec document under DIR (committed or not). Exit 0 valid, 1 invalid.
    Validate {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show what `apply` would do on this host, unit by unit, with diffs. Exit 0 nothing to do, 1 changes pending, 2 error.
    Plan {
        #[command(flatten)]
        src: cli::SourceArgs,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Leave out the unit file diffs
        #[arg(long)]
        no_diff: bool,
        #[arg(long)]
        allow_empty: bool,
        /// Review a change without a host: plan HEAD against BASE as if BASE were applied
        #[arg(long, value_name = "REV", requires = "head")]
        base: Option<String>,
        #[arg(long, value_name = "REV", requires = "base")]
        head: Option<String>,
        /// With --base/--head: text, json or markdown (a pull-request comment)
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Converge this host to a commit once. Exit 0 converged; 1 nothing applied (invalid commit or refused plan); 2 error; 4 applied, but a unit failed.
    Apply {
        #[command(flatten)]
        src: cli::SourceArgs,
        /// Allow a commit with no agents for this host to remove every unit fleetwright manages here
        #[arg(long)]
        allow_empty: bool,
        /// Print the plan and the outcome as JSON
        #[arg(long)]
        json: bool,
        /// Watch the services it started or restarted this long: one that fails or restarts by
        /// itself meanwhile fails the apply (exit 4), like a failed start
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// Try the commit in a throw-away systemd (booted in a namespace; needs root) instead of this host
        #[arg(long)]
        sandbox: bool,
        /// With --sandbox: give the sandbox no network
        #[arg(long, requires = "sandbox")]
        offline: bool,
    },
    /// Every agent on this host: unit states, last run and result, next run, deploy marker, drift.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Reconcile continuously: follow a branch, converge on every commit, repair drift, roll back unhealthy deploys.
    Daemon(cli::DaemonArgs),
    /// The last reconciles: when, why, which commit, what happened.
    History {
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Pin a commit until `resume` (default: the last good commit before the one applied now); the daemon gates it like any deploy
    Rollback {
        #[arg(long, value_name = "COMMIT")]
        to: Option<String>,
        /// Pin a commit marked bad anyway: it is applied and gated once more
        #[arg(long)]
        force: bool,
    },
    /// Drop the rollback pin: follow the branch again.
    Resume,
    /// Ask the running daemon to reconcile now.
    Sync,
    /// Run a command in a concurrency slot of GROUP (used by rendered units): at most LIMIT at once
    Slot {
        /// Where the groups' lock files are
        #[arg(long, default_value = fleetwright::render::SLOT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        group: String,
        #[arg(long)]
        limit: u32,
        /// skip: exit 0 at once when the group is full; wait: wait for a slot (up to --timeout)
        #[arg(long, default_value = "skip")]
        when_full: String,
        #[arg(long)]
        timeout: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Create GROUP's slot lock files (run privileged before `slot`): only root and each --agent-user may take them
    SlotPrepare {
        #[arg(long, default_value = fleetwright::render::SLOT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        group: String,
        #[arg(long)]
        limit: u32,
        /// A user of the group's agents (repeatable): given read access to the lock files
        #[arg(long = "agent-user", value_name = "USER")]
        users: Vec<String>,
    },
    /// Restart UNIT when FILE is older than MAX_AGE (used by rendered heartbeat timers)
    Heartbeat {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        max_age: String,
        #[arg(long)]
        unit: String,
    },
    /// Make a directory and its parents (used by rendered units, which cannot count on /bin)
    #[command(hide = true)]
    Mkdir {
        /// The new directories' mode, in octal
        #[arg(long, default_value = "0755")]
        mode: String,
        path: PathBuf,
    },
    /// Send a signal to a process (used by rendered units for `onChange: reload`)
    #[command(hide = true)]
    Signal {
        #[arg(long, default_value = "HUP")]
        signal: String,
        pid: i32,
    },
    /// When every timer of the fleet runs in the next 24 hours (or --window), as a timeline, with warnings
    Schedule {
        #[command(flatten)]
        src: cli::SourceArgs,
        #[arg(long, default_value = "24h")]
        window: String,
        /// Start of the window (RFC 3339) [default: now]
        #[arg(long)]
        at: Option<String>,
        #[arg(long, default_value_t = 72)]
        columns: usize,
        /// The zone of the host the timers run on (expressions without a zone are in its local
        /// time, as systemd evaluates them) [default: this machine's zone]
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A Markdown inventory of the fleet, from its specs
    Inventory {
        #[command(flatten)]
        src: cli::SourceArgs,
    },
    /// Shell completions (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// The man page (roff)
    Man,
    /// Apply a log-retention rule once (used by rendered units): oldest first, never outside PATH, never through a symlink
    LogsClean {
        #[arg(long)]
        path: String,
        #[arg(long = "match", default_value = "*")]
        pattern: String,
        #[arg(long)]
        max_age: Option<String>,
        #[arg(long)]
        max_files: Option<u64>,
        #[arg(long)]
        max_size: Option<String>,
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Take one online backup of a SQLite database (used by rendered units)
    Backup {
        #[arg(long)]
        sqlite: PathBuf,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value_t = 7)]
        keep_last: u32,
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        wal: bool,
    },
    /// List an agent's backups, newest first
    Backups {
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Swap a backup in as an agent's live database: stops its units, swaps atomically (keeping the replaced file), starts them again
    Restore {
        agent: String,
        /// The backup file [default: with --latest, the newest]
        #[arg(long, conflicts_with = "latest")]
        from: Option<PathBuf>,
        #[arg(long)]
        latest: bool,
        /// Which database, when the agent backs up several
        #[arg(long)]
        db: Option<String>,
    },
    /// Print the JSON Schema of fleet documents (for editors: see docs/spec.md)
    Schema,
    /// Print the unit files a commit renders for this host (all agents, or the ones named).
    Render {
        #[command(flatten)]
        src: cli::SourceArgs,
        agents: Vec<String>,
    },
}

fn main() -> ExitCode {
    // SAFETY: first thing, before any thread is started.
    unsafe { fleetwright::source::init_libgit2() };
    let args = Args::parse();
    // A command whose output is piped into `head` ends quietly when the pipe closes, like any
    // Unix tool (Rust ignores SIGPIPE, and println! would panic). Not the daemon: a client
    // closing its connection must not kill it.
    if !matches!(args.command, Command::Daemon(_)) {
        // SAFETY: restoring a default signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    fleetwright::logging::init(args.log_format);
    let globals = cli::Globals { unit_dir: args.unit_dir, state_dir: args.state_dir, user: args.user, host: args.host, bus_address: args.bus_address };
    let code = match args.command {
        Command::Validate { dir } => cli::validate(&dir),
        Command::Plan { src, base: Some(base), head: Some(head), format, json, .. } => {
            cli::review(&globals, &src, &base, &head, if json { "json" } else { &format })
        }
        Command::Plan { src, json, no_diff, allow_empty, .. } => cli::plan(&globals, &src, json, !no_diff, allow_empty),
        #[cfg(feature = "sandbox")]
        Command::Apply { src, sandbox: true, offline, .. } => cli::apply_in_sandbox(&globals, &src, offline),
        #[cfg(not(feature = "sandbox"))]
        Command::Apply { sandbox: true, .. } => {
            eprintln!("error: this fleetwright was built without the `sandbox` feature; build it with the default features to use apply --sandbox");
            cli::exit::ERROR
        }
        Command::Apply { src, allow_empty, json, wait, .. } => cli::apply(&globals, &src, allow_empty, json, wait),
        Command::Status { json } => cli::status(&globals, json),
        Command::Daemon(d) => cli::daemon(&globals, d),
        Command::History { limit, json } => cli::history(&globals, limit, json),
        Command::Rollback { to, force } => cli::rollback(&globals, to.as_deref(), force),
        Command::Resume => cli::resume(&globals),
        Command::Sync => cli::sync(&globals),
        Command::Slot { dir, group, limit, when_full, timeout, command } => cli::slot(&dir, &group, limit, &when_full, timeout.as_deref(), &command),
        Command::SlotPrepare { dir, group, limit, users } => cli::slot_prepare(&dir, &group, limit, &users),
        Command::Heartbeat { agent, file, max_age, unit } => cli::heartbeat(&globals, &agent, &file, &max_age, &unit),
        Command::Mkdir { mode, path } => cli::mkdir(&path, &mode),
        Command::Signal { signal, pid } => cli::signal(&signal, pid),
        Command::Schedule { src, window, at, columns, tz, json } => cli::schedule(&globals, &src, &window, at.as_deref(), columns, tz.as_deref(), json),
        Command::Inventory { src } => cli::inventory(&globals, &src),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Args as clap::CommandFactory>::command(), "fleetwright", &mut std::io::stdout());
            0
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Args as clap::CommandFactory>::command());
            match page.render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    2
                }
            }
        }
        Command::LogsClean { path, pattern, max_age, max_files, max_size, dry_run, json } => {
            cli::logs_clean(&path, &pattern, max_age.as_deref(), max_files, max_size.as_deref(), dry_run, json)
        }
        Command::Backup { sqlite, to, keep_last, keep_daily, keep_weekly, verify, wal } => {
            cli::backup(&sqlite, &to, keep_last, keep_daily, keep_weekly, verify, wal)
        }
        Command::Backups { agent, json } => cli::backups(&globals, &agent, json),
        Command::Restore { agent, from, latest, db } => cli::restore(&globals, &agent, from.as_deref(), latest, db.as_deref()),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&fleetwright::spec::json_schema_any()).expect("schema serializes"));
            0
        }
        Command::Render { src, agents } => cli::render(&globals, &src, &agents),
    };
    ExitCode::from(code)
}
