//! The command line, as clap parses it. Every option says what it does and its default; the
//! choices are `ValueEnum`s and every duration goes through the one parser of the spec.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::logging::LogFormat;

#[derive(Parser)]
#[command(name = "fleetwright", version, about = "GitOps for systemd: converge this host to the fleet in a git repository")]
pub struct Args {
    #[command(flatten)]
    pub globals: Globals,
    /// Log lines: auto (the journal's priorities when stderr is the journal, else text), text, json or journal
    #[arg(long, global = true, help_heading = "Global options", value_name = "FORMAT", default_value = "auto", env = "FLEETWRIGHT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes: where and what fleetwright manages on this host.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct Globals {
    /// Where unit files are written [default: /etc/systemd/system, or ~/.config/systemd/user with --user]
    #[arg(long, global = true, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// Inventory, deploy markers and lock [default: /var/lib/fleetwright, or ~/.local/state/fleetwright with --user]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Manage the calling user's systemd manager instead of the system's
    #[arg(long, global = true)]
    pub user: bool,
    /// This host's name, for `hosts:` [default: the machine's host name]
    #[arg(long, global = true, value_name = "NAME")]
    pub host: Option<String>,
    /// The D-Bus address of the bus the manager is on [default: the system bus, or the session bus with --user]
    #[arg(long, global = true, value_name = "ADDRESS", env = "FLEETWRIGHT_BUS_ADDRESS")]
    pub bus_address: Option<String>,
    /// The identity that decrypts the fleet's secrets (an age identity or an OpenSSH ed25519 private key) [default: /etc/fleetwright/identity, then /etc/ssh/ssh_host_ed25519_key]; for `secret edit|rekey`, the operator's [default: ~/.config/fleetwright/identity, then ~/.ssh/id_ed25519]
    #[arg(long, global = true, value_name = "FILE", env = "FLEETWRIGHT_IDENTITY")]
    pub identity: Option<std::path::PathBuf>,
    /// Run in the sandbox `fleetwright sandbox up` started (plan, apply, status, history, rollback, resume, sync, daemon); apply without one tries the commit in a throw-away sandbox
    #[arg(long, global = true)]
    pub sandbox: bool,
}

/// Where a command reads the fleet from.
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

/// How `plan --base --head` prints the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    Text,
    Json,
    /// A pull-request comment
    #[value(alias = "md")]
    Markdown,
}

/// What `slot` does when every slot of the group is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhenFull {
    /// Exit 0 at once: the cap working is not a failure
    Skip,
    /// Wait for a slot, up to --timeout
    Wait,
}

/// A duration as the spec writes them (`30s`, `10m`, `1h30m`): the one parser of durations.
pub fn duration(s: &str) -> Result<Duration, String> {
    fleetwright::spec::values::parse_duration(s).map(|d| Duration::from_millis(d.as_millis()))
}

/// An octal file mode (`0750`, `750`, `0o750`).
fn octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| format!("{s:?} is not an octal mode, like 0750"))
}

/// A process id: 0 and negative numbers name process groups, never one process.
fn process_id(s: &str) -> Result<i32, String> {
    s.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{s:?} is not a process id"))
}

/// An instant, RFC 3339 (`2026-11-23T09:00:00Z`), as unix seconds.
fn instant(s: &str) -> Result<i64, String> {
    s.parse::<jiff::Timestamp>().map(|t| t.as_second()).map_err(|e| format!("{e}; write it like 2026-11-23T09:00:00Z"))
}

#[derive(Subcommand)]
pub enum Command {
    /// Check every spec document under DIR (committed or not), or the files named, as one fleet. Exit 0 valid, 1 invalid.
    Validate {
        /// Directories of spec files, or spec files
        #[arg(default_value = ".", value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show what `apply` would do on this host, unit by unit, with diffs. Exit 0 nothing to do, 1 changes pending, 2 error.
    Plan {
        #[command(flatten)]
        src: SourceArgs,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Leave out the unit file diffs
        #[arg(long)]
        no_diff: bool,
        /// Allow a commit with no agents for this host (its plan removes every unit fleetwright manages here)
        #[arg(long)]
        allow_empty: bool,
        /// Review a change without a host: plan HEAD against BASE as if BASE were applied
        #[arg(long, value_name = "REV", requires = "head")]
        base: Option<String>,
        /// With --base: the commit under review
        #[arg(long, value_name = "REV", requires = "base")]
        head: Option<String>,
        /// With --base/--head: how to print the review
        #[arg(long, value_enum, default_value = "text")]
        format: ReviewFormat,
    },
    /// Converge this host to a commit once. Exit 0 converged; 1 nothing applied (invalid commit or refused plan); 2 error; 3 stopped part-way by a fault of the host; 4 applied, but a unit failed.
    Apply {
        #[command(flatten)]
        src: SourceArgs,
        /// Allow a commit with no agents for this host to remove every unit fleetwright manages here
        #[arg(long)]
        allow_empty: bool,
        /// Print the plan and the outcome as JSON
        #[arg(long)]
        json: bool,
        /// Watch the services it started or restarted this long: one that fails or restarts by
        /// itself meanwhile fails the apply (exit 4), like a failed start
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
        wait: Duration,
        /// With --sandbox and no sandbox up: give the throw-away sandbox no network
        #[arg(long, requires = "sandbox")]
        offline: bool,
        /// With --sandbox and no sandbox up: also run every job (scheduled agents, log cleanup, backups) once, and report those that fail with their journal
        #[arg(long, requires = "sandbox")]
        run_jobs: bool,
    },
    /// Every agent on this host: unit states, last run and result, next run, deploy marker, drift.
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Reconcile continuously: follow a branch, converge on every commit, repair drift, roll back unhealthy deploys.
    Daemon(DaemonArgs),
    /// The last reconciles: when, why, which commit, what happened.
    History {
        /// How many reconciles (and verdicts) to show
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// Print the history as JSON
        #[arg(long)]
        json: bool,
    },
    /// Pin a commit until `resume` (default: the last good commit before the one applied now); the daemon gates it like any deploy
    Rollback {
        /// The commit to pin (an abbreviation the daemon has seen will do)
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
        /// The concurrency group
        #[arg(long)]
        group: String,
        /// How many runs of the group at once
        #[arg(long)]
        limit: u32,
        /// What to do when the group is full
        #[arg(long, value_enum, default_value = "skip")]
        when_full: WhenFull,
        /// With --when-full wait: how long to wait for a slot [default: for ever]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        timeout: Option<Duration>,
        /// The command, after `--`
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Create GROUP's slot lock files (run privileged before `slot`): only root and each --agent-user may take them
    SlotPrepare {
        /// Where the groups' lock files are
        #[arg(long, default_value = fleetwright::render::SLOT_DIR)]
        dir: PathBuf,
        /// The concurrency group
        #[arg(long)]
        group: String,
        /// How many runs of the group at once (one lock file each)
        #[arg(long)]
        limit: u32,
        /// A user of the group's agents (repeatable): given read access to the lock files
        #[arg(long = "agent-user", value_name = "USER")]
        users: Vec<String>,
    },
    /// Restart UNIT when FILE is older than MAX_AGE (used by rendered heartbeat timers)
    Heartbeat {
        /// The agent whose heartbeat it is
        #[arg(long)]
        agent: String,
        /// The heartbeat file the agent touches
        #[arg(long)]
        file: PathBuf,
        /// How old the file may be
        #[arg(long, value_parser = duration)]
        max_age: Duration,
        /// The service to restart when it is older
        #[arg(long)]
        unit: String,
    },
    /// Notifications: `notify test` sends a test event to every sink and says what each answered
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Report the failure (or a job's recovery) of UNIT (run by the rendered `<agent>.notify@.service`, from $MONITOR_*)
    #[command(hide = true)]
    NotifyReport {
        /// The unit that failed (its full name); $MONITOR_UNIT wins when systemd sets it
        #[arg(long)]
        unit: String,
        /// The unit's run succeeded (OnSuccess=): report a recovery if it was failing, else nothing
        #[arg(long)]
        success: bool,
    },
    /// Make a directory and its parents (used by rendered units, which cannot count on /bin)
    #[command(hide = true)]
    Mkdir {
        /// The new directories' mode, in octal
        #[arg(long, default_value = "0755", value_parser = octal_mode)]
        mode: u32,
        /// The directory
        path: PathBuf,
    },
    /// Send a signal to a process (used by rendered units for `onChange: reload`)
    #[command(hide = true)]
    Signal {
        /// The signal's name (HUP, SIGUSR1, …)
        #[arg(long, default_value = "HUP")]
        signal: String,
        /// The process
        #[arg(value_parser = process_id)]
        pid: i32,
    },
    /// When every timer of the fleet runs in the next 24 hours (or --window), as a timeline, with warnings
    Schedule {
        #[command(flatten)]
        src: SourceArgs,
        /// How far ahead
        #[arg(long, default_value = "24h", value_parser = duration)]
        window: Duration,
        /// Start of the window (RFC 3339) [default: now]
        #[arg(long, value_parser = instant)]
        at: Option<i64>,
        /// Width of the timeline, in characters (12 to 400)
        #[arg(long, default_value_t = 72)]
        columns: usize,
        /// The zone of the host the timers run on (expressions without a zone are in its local
        /// time, as systemd evaluates them) [default: this machine's zone]
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// Print the schedule as JSON
        #[arg(long)]
        json: bool,
    },
    /// A Markdown inventory of the fleet, from its specs
    Inventory {
        #[command(flatten)]
        src: SourceArgs,
    },
    /// Shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// The man page (roff)
    Man,
    /// Apply a log-retention rule once (used by rendered units): oldest first, never outside PATH, never through a symlink
    LogsClean {
        /// The log directory (a `*` stands for one whole path level)
        #[arg(long)]
        path: String,
        /// Which file names (a glob)
        #[arg(long = "match", default_value = "*")]
        pattern: String,
        /// Remove files older than this
        #[arg(long, value_parser = duration)]
        max_age: Option<Duration>,
        /// Keep at most this many files, the newest
        #[arg(long)]
        max_files: Option<u64>,
        /// Keep at most this many bytes (10M, 1G, …), the newest
        #[arg(long)]
        max_size: Option<String>,
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Take one online backup of a SQLite database (used by rendered units)
    Backup {
        /// The database
        #[arg(long)]
        sqlite: PathBuf,
        /// The backup directory
        #[arg(long)]
        to: PathBuf,
        /// Keep the last N backups
        #[arg(long, default_value_t = 7)]
        keep_last: u32,
        /// Also keep the last backup of each of the last N days
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Also keep the last backup of each of the last N weeks
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        /// Check the copy's integrity (PRAGMA integrity_check) before it is kept
        #[arg(long)]
        verify: bool,
        /// Keep the copy in WAL mode, like its source
        #[arg(long)]
        wal: bool,
    },
    /// List an agent's backups, newest first
    Backups {
        /// The agent
        agent: String,
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Swap a backup in as an agent's live database: stops its units, swaps atomically (keeping the replaced file), starts them again
    Restore {
        /// The agent
        agent: String,
        /// The backup file [default: with --latest, the newest]
        #[arg(long, conflicts_with = "latest")]
        from: Option<PathBuf>,
        /// Restore the newest backup
        #[arg(long)]
        latest: bool,
        /// Which database, when the agent backs up several
        #[arg(long)]
        db: Option<String>,
    },
    /// A throw-away systemd that lives across commands, for trying a fleet change by change (needs root)
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// The fleet's age-encrypted secrets: encrypt, edit and re-encrypt them to the recipients the Fleet document lists (docs/secrets.md)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the JSON Schema of fleet documents (for editors: see docs/spec.md)
    Schema,
    /// Print the unit files a commit renders for this host (all agents, or the ones named).
    Render {
        #[command(flatten)]
        src: SourceArgs,
        /// Only these agents
        agents: Vec<String>,
    },
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
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub interval: Duration,
    /// How often the host is re-observed and drift repaired without a new commit
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub resync: Duration,
    /// How long the services changed since the last good commit must stay up before a new commit counts as good (0 disables the gate)
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub health_grace: Duration,
    /// Follow a branch that was force-pushed past the applied commit
    #[arg(long)]
    pub allow_force_push: bool,
    /// Allow a commit with no agents for this host (it removes every unit fleetwright manages here)
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
    /// POST a JSON event here for every verdict (deployed, rolled-back, failed, invalid, held, refused) and agent failure: a `webhook` sink beside the Fleet's `notify` list
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,
    /// At most one report of an agent's unit failing per this interval; the failures in between are folded into one summary when it is over
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub notify_interval: Duration,
}

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Send a test event to every sink (a forge gets a `success` status with the context fleetwright/<host>/test on the commit), print each answer; exit 1 when one failed
    Test {
        /// Test the sinks of this repository's Fleet (a local path or a URL; forge sinks without repo take it from a URL) instead of the ones the daemon last used
        #[arg(long)]
        repo: Option<String>,
        /// With --repo: the branch of a URL
        #[arg(long, default_value = "main")]
        branch: String,
        /// With --repo: the commit whose Fleet is read and that forges get the test status on
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// With --repo: the directory of the repository that holds the specs
        #[arg(long, value_name = "DIR")]
        path: Option<String>,
        /// Also test this URL as a `webhook` sink (as the daemon's --notify-url)
        #[arg(long, value_name = "URL")]
        notify_url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Boot the sandbox (system and user manager, both buses) and keep it until `sandbox down`
    Up {
        /// Give the sandbox no network
        #[arg(long)]
        offline: bool,
    },
    /// Stop the sandbox: its systemd, its units and its state directory go
    Down,
    /// Boot the sandbox and keep it until SIGTERM (what `up` starts)
    #[command(hide = true)]
    Keep {
        /// Give the sandbox no network
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Encrypt a value read from standard input into FILE, to the hosts that run its agents and the operators
    Encrypt {
        /// The secret file (ending in .age) inside the fleet directory
        file: PathBuf,
        /// The fleet directory (the working tree of the repository, or its --path)
        #[arg(long, default_value = ".", value_name = "DIR")]
        fleet: PathBuf,
    },
    /// Decrypt FILE with your identity, open it in $VISUAL or $EDITOR, and encrypt what you save
    Edit {
        /// The secret file (ending in .age) inside the fleet directory
        file: PathBuf,
        /// The fleet directory (the working tree of the repository, or its --path)
        #[arg(long, default_value = ".", value_name = "DIR")]
        fleet: PathBuf,
    },
    /// Encrypt secrets again to the recipients the Fleet document lists now (every secret an agent uses, when none is named)
    Rekey {
        /// Secret files; default: every secret an agent of the fleet uses
        files: Vec<PathBuf>,
        /// The fleet directory (the working tree of the repository, or its --path)
        #[arg(long, default_value = ".", value_name = "DIR")]
        fleet: PathBuf,
    },
    /// Print the recipients FILE is encrypted to by encrypt, edit and rekey, one per line
    Recipients {
        /// The secret file (ending in .age) inside the fleet directory
        file: PathBuf,
        /// The fleet directory (the working tree of the repository, or its --path)
        #[arg(long, default_value = ".", value_name = "DIR")]
        fleet: PathBuf,
    },
}
