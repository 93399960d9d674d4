//! A real, throw-away systemd manager for tests and for `apply --sandbox`.
//!
//! [`Sandbox::boot`] starts the machine's own `/lib/systemd/systemd --system` as PID 1 of a
//! fresh PID + mount (+ UTS + IPC + cgroup) namespace. The host is protected as described in
//! `shared/real-systemd.md` ("the hazard"): before the manager starts, every place it (or
//! `systemd-tmpfiles`, or fleetwright itself) would write to is covered by a private tmpfs, the
//! vendor `*.wants` directories and the generators are hidden behind an empty directory, and the
//! manager boots into its own target with `DefaultDependencies=no`, so `sysinit.target` pulls
//! nothing that touches the machine.
//!
//! On top of the recipe this module adds, each for a reason measured on the build machines:
//!
//! * **cgroups**: the manager gets its own cgroup (`<cgroup2 mount>/fleetwright-sandbox/<id>`)
//!   and a cgroup namespace rooted there, with only a cgroup2 hierarchy mounted on
//!   `/sys/fs/cgroup`. Without this, on a v1/hybrid host, the manager moves itself out of the
//!   host's cgroups (e.g. out of the memory cgroup the harness accounts us in) into
//!   `/init.scope` of every v1 hierarchy, and two sandboxes share the very same
//!   `system.slice/<unit>` cgroups.
//! * **console**: PID 1 would log to the *host's* `/dev/console`. Inside the namespace
//!   `/dev/console` is `/dev/null` and `/dev/kmsg` is the sandbox's log file; the manager runs
//!   with `--log-target=journal-or-kmsg`, so its log lands in [`Sandbox::console_log`] until
//!   journald runs (boot failures show there) and in the sandbox's journal after that (so
//!   `journalctl -u UNIT` shows the manager's "Started/Failed" lines as on a real machine).
//! * `/proc/sys` is read-only inside (PID 1 otherwise bumps global sysctls such as
//!   `fs.file-max`), and the hostname lives in its own UTS namespace.
//! * **watchdog**: the boot script keeps the read end of a pipe whose write end only this
//!   process holds. If the process owning the [`Sandbox`] dies without dropping it (SIGKILL,
//!   abort, a leaked value), the pipe closes and the sandbox powers itself off, so no manager is
//!   left behind.
//!
//! Everything is killed by pid only, never by name.
//!
//! What still reaches the host filesystem: anything a unit writes outside the tmpfs paths
//! (e.g. `StateDirectory=` under `/var/lib`, log files under `/var/log`). Use
//! [`SandboxOptions::extra_tmpfs`] to cover more paths.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use fleetwright_sys::fsutil::pid_alive;
use fleetwright_sys::proc::output_with_timeout;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The manager binary started inside the namespace.
pub const SYSTEMD: &str = "/lib/systemd/systemd";
/// The target the sandbox boots into (written to `/run/systemd/system` inside).
pub const SANDBOX_TARGET: &str = "fw-sandbox.target";
/// The system service that runs root's user manager when [`SandboxOptions::user_manager`].
pub const USER_MANAGER_SERVICE: &str = "fw-user-manager.service";
/// The target the user manager boots into (written to `/etc/systemd/user` inside).
pub const USER_TARGET: &str = "fw-user.target";
/// `$HOME` of root's user manager inside the sandbox (on the sandbox's `/run` tmpfs).
pub const USER_HOME: &str = "/run/fw-home";
/// `$XDG_RUNTIME_DIR` of root's user manager inside the sandbox.
pub const USER_RUNTIME_DIR: &str = "/run/user/0";

/// How long [`Sandbox::boot`] waits for the manager(s) to report running/degraded.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(15);

const CGROUP_PARENT: &str = "fleetwright-sandbox";

/// Options for [`Sandbox::boot`]. `Default` gives a bare manager with journald only.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Also run `systemd --user` for root inside (see [`Sandbox::user_env`]).
    pub user_manager: bool,
    /// Also start `dbus.socket` + `dbus.service` so the system bus works
    /// (`/run/dbus/system_bus_socket` inside, [`Sandbox::system_bus_socket`] from the host),
    /// and with `user_manager` the user bus (`$XDG_RUNTIME_DIR/bus`) the user manager joins.
    pub dbus: bool,
    /// More absolute paths to cover with a private tmpfs inside the sandbox (created on the host
    /// with `mkdir -p` if missing, as mount points).
    pub extra_tmpfs: Vec<PathBuf>,
    /// Users (with a group of the same name and id) that exist only inside the sandbox:
    /// `/etc/passwd` and `/etc/group` are private copies there with these added. For tests
    /// of agents that are not root; the machine's own files are untouched.
    pub users: Vec<(String, u32)>,
    /// A network namespace of its own (no interface but a loopback): what runs inside cannot
    /// reach the network.
    pub offline: bool,
    /// Keep the sandbox's "disk" (/etc/systemd/system, /var/lib/systemd, /var/lib/fleetwright)
    /// in this host directory (absolute, not under /tmp) rather than in private tmpfs: a
    /// sandbox booted again on it is the same machine after a reboot (a fresh /run, a fresh
    /// manager, the files kept).
    pub persist: Option<PathBuf>,
}

/// A running throw-away systemd manager. Dropping it kills it (see [`Sandbox::shutdown`]).
#[derive(Debug)]
pub struct Sandbox {
    /// The `unshare` process we spawned; its only child is the namespace's PID 1.
    unshare: Option<Child>,
    /// Write end of the watchdog pipe; dropping it (after the kill) is harmless.
    watchdog: Option<ChildStdin>,
    /// Host pid of the namespace's PID 1 (systemd). 0 until known.
    pid: u32,
    /// Host directory with the boot script and the console log.
    state_dir: PathBuf,
    /// Host path of the sandbox's own cgroup2 directory.
    cgroup: Option<PathBuf>,
    user_manager: bool,
    dbus: bool,
    keep_state: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Sandbox {
    /// Whether this machine can run sandboxes at all: root, the systemd binary, `unshare`,
    /// `nsenter` and a cgroup2 mount. Tests use it to skip on machines that can't.
    pub fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Path::new(SYSTEMD).exists() && which("unshare").is_some() && which("nsenter").is_some() && cgroup2_mount().is_some()
    }

    /// Boot a sandbox and wait until `systemctl is-system-running --wait` says `running` or
    /// `degraded` (and, with the options, until the user manager and the system bus answer).
    /// Fails after [`BOOT_TIMEOUT`] with the tail of the console log in the error, after killing
    /// everything it started.
    pub fn boot(opts: SandboxOptions) -> io::Result<Sandbox> {
        Self::boot_with_timeout(opts, BOOT_TIMEOUT)
    }

    /// [`Sandbox::boot`] with a different time limit.
    pub fn boot_with_timeout(opts: SandboxOptions, timeout: Duration) -> io::Result<Sandbox> {
        let deadline = Instant::now() + timeout;
        for p in &opts.extra_tmpfs {
            if !p.is_absolute() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("sandbox: extra_tmpfs path {} is not absolute", p.display())));
            }
        }
        if let Some(p) = &opts.persist
            && (!p.is_absolute() || p.starts_with("/tmp") || p.starts_with("/run"))
        {
            // Under /tmp or /run it would be hidden by the sandbox's own tmpfs there.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sandbox: persist directory {} is not absolute, or is under /tmp or /run", p.display()),
            ));
        }
        let cg_root = cgroup2_mount().ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "sandbox: no cgroup2 mount on this host"))?;
        let id = unique_id();
        let state_dir = std::env::temp_dir().join(format!("fleetwright-sandbox-{id}"));
        // create_dir, not create_dir_all: the directory must be new, and ours.
        fs::create_dir(&state_dir).map_err(|e| ctx(e, &format!("sandbox: {}", state_dir.display())))?;
        let mut sb = Sandbox {
            unshare: None,
            watchdog: None,
            pid: 0,
            state_dir: state_dir.clone(),
            cgroup: None,
            user_manager: opts.user_manager,
            dbus: opts.dbus,
            keep_state: std::env::var_os("FLEETWRIGHT_SANDBOX_KEEP").is_some(),
        };
        // From here on, `sb`'s Drop cleans up whatever was started if we return early.
        let script = state_dir.join("boot.sh");
        fs::write(&script, BOOT_SCRIPT)?;
        let log = sb.console_log();
        let log_file = fs::File::create(&log)?;
        sweep_stale(&cg_root, sb.keep_state);
        let cgroup = make_cgroup(&cg_root, &id)?;
        sb.cgroup = Some(cgroup.clone());

        let mut cmd = Command::new("unshare");
        if opts.offline {
            cmd.arg("--net");
        }
        cmd.args(["--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--propagation", "private", "--uts", "--ipc", "--", "bash"])
            .arg(&script)
            .arg("stage1")
            .arg(&cgroup)
            .arg(&log)
            .arg(if opts.user_manager { "1" } else { "0" })
            .arg(if opts.dbus { "1" } else { "0" })
            .args(&opts.extra_tmpfs)
            .env("FW_SANDBOX_PERSIST", opts.persist.as_deref().map(|p| p.as_os_str().to_owned()).unwrap_or_default())
            .env("FW_SANDBOX_USERS", opts.users.iter().map(|(n, id)| format!("{n}:{id}")).collect::<Vec<_>>().join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            // Own process group: a terminal's Ctrl-C ends only the owning process, whose death
            // closes the watchdog pipe, which powers the sandbox off (no half-killed namespace).
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| ctx(e, "sandbox: spawning unshare"))?;
        sb.watchdog = child.stdin.take();
        let unshare_pid = child.id();
        sb.unshare = Some(child);

        // The namespace's PID 1 is the only child of unshare.
        sb.pid = loop {
            if let Some(p) = only_child(unshare_pid) {
                break p;
            }
            sb.check_alive("starting the namespace")?;
            if Instant::now() > deadline {
                return Err(sb.boot_error("the namespace's PID 1 did not appear"));
            }
            thread::sleep(Duration::from_millis(5));
        };

        // Wait for the manager's private socket, then ask it.
        let private = sb.system_private_socket();
        while !private.exists() {
            sb.check_alive("waiting for /run/systemd/private")?;
            if Instant::now() > deadline {
                return Err(sb.boot_error("systemd's private socket did not appear"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut c = sb.command("systemctl");
        c.args(["is-system-running", "--wait"]);
        sb.wait_state(c, deadline, "systemctl is-system-running --wait")?;

        if opts.user_manager {
            let sock = sb.user_private_socket().expect("user manager requested");
            while !sock.exists() {
                sb.check_alive("waiting for the user manager")?;
                if Instant::now() > deadline {
                    let status = sb
                        .systemctl(&["status", "--no-pager", USER_MANAGER_SERVICE])
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    return Err(sb.boot_error(&format!("the user manager's private socket did not appear\n{status}")));
                }
                thread::sleep(Duration::from_millis(10));
            }
            let mut c = sb.command("systemctl");
            c.envs(sb.user_env()).args(["--user", "is-system-running", "--wait"]);
            sb.wait_state(c, deadline, "systemctl --user is-system-running --wait")?;
        }

        if opts.dbus {
            loop {
                let mut c = sb.command("busctl");
                c.args(["--system", "--no-pager", "status"]);
                if opts.user_manager {
                    // The user bus too (dbus-user-session's dbus.socket): ask the user
                    // manager itself over it, which also waits for it to join the bus.
                    c = sb.command("busctl");
                    c.envs(sb.user_env()).args(["--user", "--no-pager", "status", "org.freedesktop.systemd1"]);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if let Ok(o) = output_with_timeout(c, left.max(Duration::from_millis(100)))
                    && o.status.success()
                {
                    break;
                }
                sb.check_alive("waiting for the system bus")?;
                if Instant::now() > deadline {
                    return Err(sb.boot_error("the system bus did not answer"));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(sb)
    }

    /// Host pid of the namespace's PID 1 (the sandbox's systemd).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The sandbox's root filesystem as seen from the host: `/proc/PID/root`. Files written
    /// below it land in the sandbox's mount namespace, e.g. `root().join("etc/systemd/system/x.service")`
    /// lands on the sandbox's private `/etc/systemd/system` tmpfs.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// Host path of a path inside the sandbox (`/proc/PID/root/<inside>`).
    pub fn host_path(&self, inside: impl AsRef<Path>) -> PathBuf {
        let inside = inside.as_ref();
        self.root().join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// A command that runs `program` inside the sandbox:
    /// `nsenter -t PID -m -p -u -i -- program`. The caller adds args, env and stdio.
    pub fn command(&self, program: &str) -> Command {
        command_in(self.pid, program)
    }

    /// Runs `systemctl ARGS...` inside the sandbox (system manager) and returns its output.
    pub fn systemctl(&self, args: &[&str]) -> io::Result<Output> {
        let mut c = self.command("systemctl");
        c.args(args).stdin(Stdio::null());
        c.output()
    }

    /// Runs `systemctl --user ARGS...` inside the sandbox against root's user manager.
    pub fn systemctl_user(&self, args: &[&str]) -> io::Result<Output> {
        let mut c = self.command("systemctl");
        c.envs(self.user_env()).arg("--user").args(args).stdin(Stdio::null());
        c.output()
    }

    /// The system manager's private (peer-to-peer D-Bus) socket as seen from the host.
    pub fn system_private_socket(&self) -> PathBuf {
        self.host_path("/run/systemd/private")
    }

    /// The system bus socket as seen from the host (only listening with [`SandboxOptions::dbus`]).
    pub fn system_bus_socket(&self) -> Option<PathBuf> {
        self.dbus.then(|| self.host_path("/run/dbus/system_bus_socket"))
    }

    /// The user manager's private socket as seen from the host, when it was requested.
    pub fn user_private_socket(&self) -> Option<PathBuf> {
        self.user_manager.then(|| self.host_path(format!("{USER_RUNTIME_DIR}/systemd/private")))
    }

    /// Environment for a process inside the sandbox so that `systemctl --user` reaches the
    /// sandbox's user manager and `~/.config/systemd/user` is the one that manager reads.
    pub fn user_env(&self) -> Vec<(String, String)> {
        user_env()
    }

    /// `journalctl -u UNIT --no-pager` run inside the sandbox (stdout, lossily decoded).
    /// Journald receives service output asynchronously: poll for what you expect.
    pub fn journal(&self, unit: &str) -> String {
        let mut c = self.command("journalctl");
        c.args(["-u", unit, "--no-pager"]).stdin(Stdio::null());
        match c.output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(journalctl failed: {e})"),
        }
    }

    /// `journalctl --user-unit UNIT --no-pager` inside: output of a unit of the user manager.
    pub fn user_journal(&self, unit: &str) -> String {
        let mut c = self.command("journalctl");
        c.args(["--user-unit", unit, "--no-pager"]).stdin(Stdio::null());
        match c.output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(journalctl failed: {e})"),
        }
    }

    /// Host path of the log of the manager (PID 1's own log, boot script errors). Removed with
    /// the sandbox unless `FLEETWRIGHT_SANDBOX_KEEP` is set in the environment.
    pub fn console_log(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }

    /// Kill the sandbox: SIGKILL to the namespace's PID 1 (by pid), which takes every process
    /// of the namespace with it; reap `unshare`; wait until the pid is gone; remove the
    /// sandbox's cgroup and state directory. Same as dropping it.
    pub fn shutdown(mut self) {
        self.teardown();
    }

    /// Whether the sandbox's manager is still running.
    pub fn is_running(&mut self) -> bool {
        match self.unshare.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn teardown(&mut self) {
        if let Some(mut child) = self.unshare.take() {
            // Boot may have failed before the namespace's PID 1 was seen: look again (unshare
            // forks it right away).
            if self.pid == 0 {
                let until = Instant::now() + Duration::from_secs(2);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                    if let Some(p) = only_child(child.id()) {
                        self.pid = p;
                        break;
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            }
            // Only signal the pid while unshare has not been reaped: as long as unshare lives,
            // its child's pid cannot have been reused.
            if self.pid != 0 && matches!(child.try_wait(), Ok(None)) {
                // SAFETY: plain kill(2) on a pid we started.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            }
            // unshare exits once its child (the namespace's PID 1, which the kernel only lets
            // exit after every process of the namespace is gone) has exited. With
            // --kill-child, killing unshare kills the namespace too: fall back to that.
            if !wait_timeout(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
            if self.pid != 0 {
                let until = Instant::now() + Duration::from_secs(5);
                while pid_alive(self.pid) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
        // Closing the watchdog pipe now is harmless: the namespace is gone.
        self.watchdog.take();
        if let Some(cg) = self.cgroup.take() {
            remove_cgroup(&cg);
        }
        if !self.keep_state && self.state_dir.exists() {
            let _ = fs::remove_dir_all(&self.state_dir);
        }
    }

    fn check_alive(&mut self, what: &str) -> io::Result<()> {
        if let Some(c) = self.unshare.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            return Err(self.boot_error(&format!("the sandbox exited ({st}) while {what}")));
        }
        Ok(())
    }

    /// Runs an `is-system-running --wait` command until the deadline and accepts
    /// running/degraded.
    fn wait_state(&mut self, cmd: Command, deadline: Instant, what: &str) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match output_with_timeout(cmd, left.max(Duration::from_millis(100))) {
            Ok(o) => {
                let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if state == "running" || state == "degraded" {
                    Ok(())
                } else {
                    Err(self.boot_error(&format!("`{what}` said {state:?} ({}), stderr: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(self.boot_error(&format!("`{what}` did not finish in time"))),
            Err(e) => Err(self.boot_error(&format!("`{what}` failed: {e}"))),
        }
    }

    /// A boot error that carries the tail of the console log; kills the sandbox.
    fn boot_error(&mut self, msg: &str) -> io::Error {
        let log = fs::read(self.console_log()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        self.teardown();
        io::Error::new(io::ErrorKind::TimedOut, format!("sandbox boot failed: {msg}\n--- console log (tail) ---\n{}", tail.join("\n")))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A command that runs `program` inside the sandbox whose manager (its namespace's PID 1) is
/// host pid `pid`: `nsenter -t PID -m -p -u -i -- program`. For a sandbox booted by another
/// process (`fleetwright sandbox up`).
pub fn command_in(pid: u32, program: &str) -> Command {
    command_in_dir(pid, None, program)
}

/// [`command_in`], in the working directory `dir` inside (entering a mount namespace starts
/// at its root).
pub fn command_in_dir(pid: u32, dir: Option<&Path>, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(pid.to_string()).args(["-m", "-p", "-u", "-i"]);
    if let Some(d) = dir {
        c.arg(format!("--wd={}", d.display()));
    }
    c.arg("--").arg(program);
    c
}

/// Environment for a process inside a sandbox so that `systemctl --user` reaches the
/// sandbox's user manager and `~/.config/systemd/user` is the one that manager reads.
pub fn user_env() -> Vec<(String, String)> {
    [
        ("XDG_RUNTIME_DIR", USER_RUNTIME_DIR.to_string()),
        ("HOME", USER_HOME.to_string()),
        ("XDG_CONFIG_HOME", format!("{USER_HOME}/.config")),
        ("USER", "root".to_string()),
        ("LOGNAME", "root".to_string()),
        // The user bus (with `dbus`), never one from the host's environment.
        ("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={USER_RUNTIME_DIR}/bus")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The boot script. Runs as `bash boot.sh stage1 CGROUP LOG USER(0|1) DBUS(0|1) [TMPFS...]`
/// as PID 1 of the new PID + mount namespace (made by `unshare`), and ends by exec'ing systemd.
const BOOT_SCRIPT: &str = include_str!("boot.sh");

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{}-{:08x}", std::process::id(), n, t)
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file())
}

/// The first cgroup2 mount point of the host (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in info.lines() {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() == Some("cgroup2") {
            let mp = pre.split_whitespace().nth(4)?;
            return Some(PathBuf::from(unescape_mountinfo(mp)));
        }
    }
    None
}

fn unescape_mountinfo(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsStr::from_bytes(&out).to_os_string()
}

/// Sandboxes whose owning process died without dropping them (SIGKILL, abort) power
/// themselves off (watchdog) but leave an empty cgroup and a state directory behind. Remove
/// those whose owner pid (the first part of the id) is gone. cgroupfs refuses to remove a
/// cgroup that still has processes, so this never touches a live sandbox's cgroup.
fn sweep_stale(cg_root: &Path, keep_state: bool) {
    fn owner_dead(name: &str, prefix: &str) -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .map(|p| p != std::process::id() && !pid_alive(p))
            .unwrap_or(false)
    }
    if let Ok(rd) = fs::read_dir(cg_root.join(CGROUP_PARENT)) {
        for e in rd.flatten() {
            if owner_dead(&e.file_name().to_string_lossy(), "") {
                remove_cgroup_tree(&e.path(), Duration::ZERO);
            }
        }
    }
    if keep_state {
        return;
    }
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_dead(&name, "fleetwright-sandbox-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn make_cgroup(root: &Path, id: &str) -> io::Result<PathBuf> {
    let parent = root.join(CGROUP_PARENT);
    let dir = parent.join(id);
    // Another sandbox may remove the (empty) parent between our two mkdirs: retry.
    for _ in 0..20 {
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ctx(e, &format!("sandbox: creating cgroup {}", parent.display()))),
        }
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ctx(e, &format!("sandbox: creating cgroup {}", dir.display()))),
        }
    }
    Err(io::Error::other("sandbox: could not create its cgroup"))
}

/// Remove a cgroup directory tree bottom-up (cgroupfs only allows rmdir of empty leaves), then
/// the shared parent if no other sandbox uses it. Retries while dying tasks still populate it.
fn remove_cgroup(dir: &Path) {
    remove_cgroup_tree(dir, Duration::from_secs(5));
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent); // fails (EBUSY) while other sandboxes run: fine
    }
}

fn remove_cgroup_tree(dir: &Path, patience: Duration) {
    fn subdirs_first(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    subdirs_first(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let until = Instant::now() + patience;
    loop {
        let mut dirs = Vec::new();
        subdirs_first(dir, &mut dirs);
        for d in &dirs {
            let _ = fs::remove_dir(d);
        }
        if !dir.exists() || Instant::now() >= until {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The only child of `pid`, from `/proc/PID/task/PID/children`, else by scanning `/proc`.
fn only_child(pid: u32) -> Option<u32> {
    if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return s.split_whitespace().next().and_then(|p| p.parse().ok());
    }
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        let Some(cpid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(format!("/proc/{cpid}/stat")) {
            // pid (comm) state ppid ...; comm may contain spaces/parens: split after last ')'.
            if let Some((_, rest)) = stat.rsplit_once(')')
                && rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            {
                return Some(cpid);
            }
        }
    }
    None
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > until => return false,
            Ok(None) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip() -> bool {
        if !Sandbox::available() {
            // CI must run the real tier: never skip there.
            assert!(std::env::var_os("CI").is_none(), "the sandbox is not available on this CI machine");
            eprintln!("skipping: sandbox not available here (needs root, systemd, cgroup2)");
            return true;
        }
        false
    }

    fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            match f() {
                Some(s) => return s,
                None => thread::sleep(Duration::from_millis(50)),
            }
        }
        panic!("timed out waiting for {what}");
    }

    fn ok(o: io::Result<Output>) -> String {
        let o = o.expect("command ran");
        assert!(o.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn write(sb: &Sandbox, inside: &str, text: &str) {
        let p = sb.host_path(inside);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }

    #[test]
    fn boots_and_shuts_down() {
        if skip() {
            return;
        }
        let mut sb = Sandbox::boot(SandboxOptions::default()).expect("boot");
        let pid = sb.pid();
        assert!(sb.is_running());
        assert!(sb.system_private_socket().exists());
        assert_eq!(fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "systemd");
        let state = ok(sb.systemctl(&["is-system-running"]));
        assert!(state.trim() == "running" || state.trim() == "degraded", "{state}");
        // It really is PID 1 of its namespace.
        let o = ok(sb.command("cat").arg("/proc/1/comm").output());
        assert_eq!(o.trim(), "systemd");
        // Nothing from the host's enablement or sysinit was pulled in.
        let units = ok(sb.systemctl(&["list-units", "--all", "--no-legend", "--plain", "--type=service,socket,timer,path"]));
        for bad in ["systemd-tmpfiles", "getty", "postgresql", "apt-daily", "systemd-logind", "udev"] {
            assert!(!units.lines().any(|l| l.trim_start().starts_with(bad)), "{bad} loaded in sandbox:\n{units}");
        }
        // The manager's cgroup is its own.
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cg.contains("fleetwright-sandbox/"), "{cg}");
        let cgdir = sb.cgroup.clone().unwrap();
        let log = sb.console_log();
        assert!(fs::read_to_string(&log).unwrap().contains("running in system mode"));
        sb.shutdown();
        assert!(!pid_alive(pid), "sandbox pid {pid} still alive after shutdown");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!cgdir.exists(), "cgroup {} left behind", cgdir.display());
        assert!(!log.exists(), "state dir left behind");
    }

    #[test]
    fn oneshot_output_reaches_journal() {
        if skip() {
            return;
        }
        let sb = Sandbox::boot(SandboxOptions::default()).expect("boot");
        // File-based oneshot, written through /proc/PID/root into the sandbox's tmpfs.
        write(&sb, "/etc/systemd/system/fw-hello.service", "[Service]\nType=oneshot\nExecStart=/bin/echo hello-from-fw-oneshot\n");
        ok(sb.systemctl(&["daemon-reload"]));
        ok(sb.systemctl(&["start", "fw-hello.service"]));
        wait_for("oneshot output in journal", Duration::from_secs(10), || sb.journal("fw-hello.service").contains("hello-from-fw-oneshot").then(String::new));
        // Transient unit too. (`systemd-run --wait` needs a real bus: see system_bus_works.)
        let o = sb.command("systemd-run").args(["--unit=fw-transient", "--service-type=oneshot", "--", "/bin/echo", "hello-transient"]).output();
        ok(o);
        wait_for("transient output in journal", Duration::from_secs(10), || sb.journal("fw-transient.service").contains("hello-transient").then(String::new));
        // The unit file never reached the host.
        assert!(!Path::new("/etc/systemd/system/fw-hello.service").exists());
        let pid = sb.pid();
        drop(sb);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn timer_fires() {
        if skip() {
            return;
        }
        let sb = Sandbox::boot(SandboxOptions::default()).expect("boot");
        write(&sb, "/etc/systemd/system/fw-tick.service", "[Service]\nType=oneshot\nExecStart=/bin/echo fw-tick-fired\n");
        write(&sb, "/etc/systemd/system/fw-tick.timer", "[Timer]\nOnActiveSec=1s\nAccuracySec=10ms\n");
        ok(sb.systemctl(&["daemon-reload"]));
        let started = Instant::now();
        ok(sb.systemctl(&["start", "fw-tick.timer"]));
        wait_for("timer to fire", Duration::from_secs(10), || sb.journal("fw-tick.service").contains("fw-tick-fired").then(String::new));
        assert!(started.elapsed() >= Duration::from_millis(900), "fired too early");
        let show = ok(sb.systemctl(&["show", "-p", "Result", "-p", "NMainPID", "fw-tick.service"]));
        assert!(show.contains("Result=success"), "{show}");
        let pid = sb.pid();
        sb.shutdown();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn two_sandboxes_side_by_side() {
        if skip() {
            return;
        }
        let h = thread::spawn(|| Sandbox::boot(SandboxOptions::default()).expect("boot b"));
        let a = Sandbox::boot(SandboxOptions::default()).expect("boot a");
        let b = h.join().unwrap();
        assert_ne!(a.pid(), b.pid());
        write(&a, "/etc/systemd/system/fw-only-a.service", "[Service]\nExecStart=/bin/sleep 300\n");
        ok(a.systemctl(&["daemon-reload"]));
        ok(a.systemctl(&["start", "fw-only-a.service"]));
        // B sees neither the unit file nor the process.
        let o = b.systemctl(&["is-active", "fw-only-a.service"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "inactive");
        assert!(!b.host_path("/etc/systemd/system/fw-only-a.service").exists());
        let ps_b = ok(b.command("ps").args(["-e", "-o", "args"]).output());
        assert!(!ps_b.contains("sleep 300"), "{ps_b}");
        // Stopping journald in B leaves A's alone (separate cgroups).
        ok(b.systemctl(&["stop", "systemd-journald.service", "systemd-journald.socket"]));
        let o = a.systemctl(&["is-active", "systemd-journald.service", "fw-only-a.service"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active\nactive");
        let (pa, pb) = (a.pid(), b.pid());
        a.shutdown();
        // B survives A's end.
        let o = b.systemctl(&["is-active", "init.scope"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active");
        assert!(pid_alive(pb));
        b.shutdown();
        assert!(!pid_alive(pa) && !pid_alive(pb));
    }

    #[test]
    fn user_manager_round_trip() {
        if skip() {
            return;
        }
        let sb = Sandbox::boot(SandboxOptions { user_manager: true, ..Default::default() }).expect("boot");
        let sock = sb.user_private_socket().unwrap();
        assert!(sock.exists(), "{}", sock.display());
        let st = ok(sb.systemctl_user(&["is-system-running"]));
        assert!(st.trim() == "running" || st.trim() == "degraded", "{st}");
        // A unit in $HOME/.config/systemd/user, written from inside (as fleetwright would).
        let home = sb.user_env().into_iter().find(|(k, _)| k == "HOME").unwrap().1;
        let unit = format!("{home}/.config/systemd/user/fw-user-hello.service");
        let body = "[Service]\nType=oneshot\nRemainAfterExit=yes\n\
                    ExecStart=/bin/sh -c 'echo user-hello; echo ran > %h/fw-user-hello.out'\n";
        let o = sb
            .command("sh")
            .envs(sb.user_env())
            .args(["-c", &format!("mkdir -p \"$(dirname {unit})\" && cat > {unit}")])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body.as_bytes())?;
                c.wait_with_output()
            });
        ok(o);
        ok(sb.systemctl_user(&["daemon-reload"]));
        let o = ok(sb.systemctl_user(&["show", "-p", "LoadState", "-p", "FragmentPath", "fw-user-hello.service"]));
        assert!(o.contains("LoadState=loaded"), "{o}");
        assert!(o.contains(&unit), "{o}");
        ok(sb.systemctl_user(&["start", "fw-user-hello.service"]));
        let o = ok(sb.systemctl_user(&["is-active", "fw-user-hello.service"]));
        assert_eq!(o.trim(), "active");
        assert_eq!(fs::read_to_string(sb.host_path(format!("{home}/fw-user-hello.out"))).unwrap().trim(), "ran");
        wait_for("user unit output in journal", Duration::from_secs(10), || sb.user_journal("fw-user-hello.service").contains("user-hello").then(String::new));
        // Nothing landed in the host's home.
        assert!(!Path::new("/root/.config/systemd/user/fw-user-hello.service").exists());
        let pid = sb.pid();
        sb.shutdown();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn system_bus_works() {
        if skip() {
            return;
        }
        let sb = Sandbox::boot(SandboxOptions { dbus: true, ..Default::default() }).expect("boot");
        let sock = sb.system_bus_socket().unwrap();
        // From the host, over /proc/PID/root.
        let o = Command::new("busctl")
            .arg(format!("--address=unix:path={}", sock.display()))
            .args(["get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Version"])
            .output();
        let v = ok(o);
        assert!(v.contains("252"), "{v}");
        // Inside, the bus makes `systemd-run --wait` work (it refuses without a bus).
        let o = sb.command("systemd-run").args(["--wait", "--unit=fw-wait", "--", "/bin/true"]).output();
        ok(o);
        let pid = sb.pid();
        sb.shutdown();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn extra_tmpfs_is_private() {
        if skip() {
            return;
        }
        let dir = tempfile::tempdir_in("/var/tmp").unwrap(); // host-side dir
        let sb = Sandbox::boot(SandboxOptions { extra_tmpfs: vec![dir.path().to_path_buf()], ..Default::default() }).expect("boot");
        ok(sb.command("sh").args(["-c", &format!("echo x > {}/inside", dir.path().display())]).output());
        ok(sb.command("sh").args(["-c", "echo x > /var/lib/fleetwright/state"]).output());
        assert!(!dir.path().join("inside").exists());
        assert!(!Path::new("/var/lib/fleetwright/state").exists());
        sb.shutdown();
    }

    #[test]
    fn boot_failure_is_clean() {
        if skip() {
            return;
        }
        let e = Sandbox::boot(SandboxOptions { extra_tmpfs: vec![PathBuf::from("relative/path")], ..Default::default() }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A timeout too short to boot: error, nothing left running.
        let e = Sandbox::boot_with_timeout(SandboxOptions::default(), Duration::from_millis(1)).unwrap_err();
        assert!(e.to_string().contains("sandbox boot failed"), "{e}");
    }

    /// Not a test on its own: the body of `watchdog_ends_orphaned_sandbox`'s child process.
    #[test]
    fn watchdog_helper() {
        if std::env::var_os("FW_SANDBOX_WATCHDOG_HELPER").is_none() || skip() {
            return;
        }
        let sb = Sandbox::boot(SandboxOptions::default()).expect("boot");
        println!("SANDBOX {} {}", sb.pid(), sb.cgroup.as_ref().unwrap().display());
        thread::sleep(Duration::from_secs(60));
        panic!("helper was not killed");
    }

    /// The owner of a Sandbox dies by SIGKILL (no Drop): the sandbox must power itself off.
    #[test]
    fn watchdog_ends_orphaned_sandbox() {
        if skip() {
            return;
        }
        use std::io::BufRead;
        // Orphans of the helper (its `unshare`) get reparented to us, so we can reap them
        // instead of leaving zombies to the machine's init.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                // This module's test path without the crate name, wherever the module lives.
                &format!("{}::watchdog_helper", module_path!().split_once("::").map_or("", |p| p.1)),
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FW_SANDBOX_WATCHDOG_HELPER", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.find_map(|l| l.ok().and_then(|l| l.find("SANDBOX ").map(|i| l[i..].to_string()))).expect("helper reported its sandbox");
        let mut f = line.split_whitespace().skip(1);
        let pid: u32 = f.next().unwrap().parse().unwrap();
        let cg = PathBuf::from(f.next().unwrap());
        assert!(pid_alive(pid));
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let unshare_pid: libc::pid_t = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap();
        child.kill().unwrap(); // SIGKILL, by pid
        child.wait().unwrap();
        wait_for("orphaned sandbox to power off", Duration::from_secs(10), || (!pid_alive(pid)).then(String::new));
        wait_for("orphaned unshare to be reaped", Duration::from_secs(10), || {
            let mut st = 0;
            // SAFETY: waitpid on one specific pid that was reparented to us.
            let r = unsafe { libc::waitpid(unshare_pid, &mut st, libc::WNOHANG) };
            (r == unshare_pid || (r < 0 && !pid_alive(unshare_pid as u32))).then(String::new)
        });
        // Its leftovers are swept by the next boot (or here, directly).
        sweep_stale(cg.parent().unwrap().parent().unwrap(), false);
        assert!(!cg.exists(), "stale cgroup {} not swept", cg.display());
    }

    /// THE HAZARD: a sandbox must never touch the host's /tmp.
    #[test]
    fn host_tmp_survives() {
        if skip() {
            return;
        }
        let marker = tempfile::Builder::new().prefix("fw-hazard-marker-").tempfile_in("/tmp").unwrap();
        let sb = Sandbox::boot(SandboxOptions { user_manager: true, dbus: true, ..Default::default() }).expect("boot");
        // Exercise it: services with default dependencies pull sysinit.target, the unit that
        // would run systemd-tmpfiles --boot --remove if it were not hidden.
        write(&sb, "/etc/systemd/system/fw-hazard.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'ls /tmp; touch /tmp/inside-only'\n");
        ok(sb.systemctl(&["daemon-reload"]));
        ok(sb.systemctl(&["start", "fw-hazard.service", "sysinit.target", "basic.target"]));
        let o = sb.command("systemd-tmpfiles").args(["--cat-config"]).output();
        assert!(o.is_ok());
        let pid = sb.pid();
        sb.shutdown();
        assert!(!pid_alive(pid));
        assert!(marker.path().exists(), "host /tmp was emptied: {} is gone", marker.path().display());
        assert!(!Path::new("/tmp/inside-only").exists());
    }
}
