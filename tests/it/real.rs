//! The real tier: a real systemd 252 booted in a namespace (host::sandbox), real git
//! repositories, and the real `fleetwright` binary run inside the sandbox's namespaces.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

pub use crate::build::{AgentSpec, agent, backup, documents, fleet_doc, logs};
use fleetwright::host::state::StateDir;
use fleetwright::inventory::Inventory;
use fleetwright::layout::StateLayout;
use fleetwright_sandbox::{Sandbox, SandboxOptions};

/// A fleet repository made for the test, under the target directory (the host's /tmp is a
/// private tmpfs inside the sandbox, so the repository must live elsewhere).
pub struct Repo {
    pub dir: tempfile::TempDir,
    repo: git2::Repository,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::Builder::new().prefix("fleet-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        // The tests follow `master`, whatever init.defaultBranch says on this machine.
        repo.set_head("refs/heads/master").unwrap();
        Repo { dir, repo }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Replace the whole tree with `files` and commit it; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.commit_with(files, &[], message)
    }
    /// [`Repo::commit`], with files of any bytes too.
    pub fn commit_with(&self, files: &[(&str, &str)], binary: &[(&str, &[u8])], message: &str) -> String {
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name().unwrap() != ".git" {
                if p.is_dir() { std::fs::remove_dir_all(&p).unwrap() } else { std::fs::remove_file(&p).unwrap() }
            }
        }
        let all = files.iter().map(|(rel, text)| (*rel, text.as_bytes())).chain(binary.iter().copied());
        for (rel, bytes) in all {
            let p = self.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("test", "test@example.com").unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap().to_string()
    }
}

pub struct Host {
    pub sb: Sandbox,
    user: bool,
}

/// The one skip policy of the tier: `what` this test needs is missing on this machine. On CI
/// that fails the test (CI must run the real tier, and a skip there would hide that it did
/// not); elsewhere the test says why on stderr and is skipped. Always false, for
/// `have || missing(...)`.
pub fn missing(what: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    assert!(std::env::var_os("CI").is_none(), "{test}: {what} is not available on this CI machine, where the real tier must run");
    eprintln!("{test}: {what} is not available here, so what needs it is skipped (on CI this fails)");
    false
}

/// Whether a test of the real tier can run here: the sandbox's needs (root, systemd, unshare,
/// nsenter, a cgroup2 mount). See [`missing`] for what happens when it cannot.
#[must_use]
pub fn sandbox_or_skip() -> bool {
    Sandbox::available() || missing("the sandbox (root, systemd, unshare, nsenter and a cgroup2 mount)")
}

/// Whether a test that acts as root (chown, other users' processes) but boots no sandbox can
/// run here; [`missing`] otherwise.
#[must_use]
pub fn root_or_skip() -> bool {
    nix::unistd::geteuid().is_root() || missing("root")
}

/// Poll `f` until it gives a value, for up to `within`, every 50 ms: how the tests wait for
/// something to happen (never a bare sleep). Panics with `what` when the time is up.
pub fn wait_for<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(what, within, Duration::from_millis(50), f)
}

/// [`wait_for`], polling every `every`: for what must be caught soon after it happens (a
/// fault injected when the first restarted process appears).
pub fn poll<T>(what: &str, within: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(every);
    }
}

impl Host {
    /// A sandbox for the test, or None when the test is to be skipped ([`sandbox_or_skip`]):
    /// `let Some(host) = Host::boot() else { return };`.
    pub fn boot() -> Option<Host> {
        Host::boot_with(false)
    }
    pub fn boot_with(user: bool) -> Option<Host> {
        Host::boot_on(user, None)
    }
    /// A sandbox whose "disk" (unit files, state directory, systemd's own state) is kept in
    /// `disk`: booting another on the same directory after this one is shut down is a reboot.
    pub fn boot_persistent(disk: &Path) -> Option<Host> {
        Host::boot_on(false, Some(disk))
    }
    fn boot_on(user: bool, disk: Option<&Path>) -> Option<Host> {
        if !sandbox_or_skip() {
            return None;
        }
        // /srv is where the tests' agents keep their data: private to the sandbox too.
        // `agent` (uid 4242) exists only inside: for agents that are not root.
        let opts = || SandboxOptions {
            dbus: true,
            user_manager: user,
            extra_tmpfs: vec!["/srv".into()],
            users: vec![("agent".into(), 4242)],
            persist: disk.map(Path::to_path_buf),
            ..Default::default()
        };
        // One more try when a boot fails (it has, rarely, on a loaded 2-core machine with every
        // test booting at once); the first error is kept in the test's output.
        let sb = Sandbox::boot(opts()).or_else(|e| {
            eprintln!("booting the sandbox failed, once more: {e}");
            Sandbox::boot(opts())
        });
        let sb = sb.expect("boot a sandboxed systemd");
        Some(Host { sb, user })
    }
    /// Run fleetwright inside the sandbox.
    pub fn fw(&self, args: &[&str]) -> Output {
        let mut c = self.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
        if self.user {
            c.envs(self.sb.user_env()).arg("--user");
        }
        c.args(["--host", "vps-1"]).args(args);
        let out = c.output().unwrap();
        eprintln!("$ fleetwright {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    }
    pub fn apply(&self, repo: &Repo) -> Output {
        self.fw(&["apply", "--repo", repo.path().to_str().unwrap()])
    }
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut c = self.sb.command("systemctl");
        if self.user {
            c.envs(self.sb.user_env()).arg("--user");
        }
        let o = c.args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.systemctl(&["show", "-P", prop, unit])
    }
    pub fn unit_dir(&self) -> PathBuf {
        self.sb.host_path(if self.user { "/run/fw-home/.config/systemd/user" } else { "/etc/systemd/system" })
    }
    pub fn state_dir(&self) -> PathBuf {
        self.sb.host_path(if self.user { "/run/fw-home/.local/state/fleetwright" } else { "/var/lib/fleetwright" })
    }
    pub fn mtime(&self, unit: &str) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.unit_dir().join(unit)).and_then(|m| m.modified()).ok()
    }
    /// How long after its start the manager last heard a watchdog keep-alive (WATCHDOG=1) from
    /// `unit`'s current run: past its WatchdogSec, the keep-alives are what kept it running.
    pub fn watchdog_fed_for(&self, unit: &str) -> Duration {
        let usec = |p: &str| self.prop(unit, p).parse::<u64>().unwrap_or(0);
        Duration::from_micros(usec("WatchdogTimestampMonotonic").saturating_sub(usec("ActiveEnterTimestampMonotonic")))
    }
    /// Arm the daemon-reload probe: an active unit outside fleetwright's directory whose file
    /// is then edited, so that the manager says `NeedDaemonReload=yes` for it until the next
    /// daemon-reload. (systemd 252 sets UnitsLoadStartTimestamp only when the manager starts,
    /// not on a reload: the probe is what shows whether a reload happened.)
    pub fn arm_reload_probe(&self) {
        let path = self.sb.host_path("/run/systemd/system/fw-reload-probe.service");
        let unit = |n: u32| {
            format!("[Unit]\nDescription=reload probe {n}\nDefaultDependencies=no\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
        };
        if self
            .sb
            .systemctl(&["show", "-P", "ActiveState", "fw-reload-probe.service"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "active")
            .unwrap_or(false)
        {
            std::fs::write(&path, unit(std::process::id() ^ Instant::now().elapsed().subsec_nanos())).unwrap();
        } else {
            std::fs::write(&path, unit(0)).unwrap();
            self.sb.systemctl(&["daemon-reload"]).unwrap();
            self.sb.systemctl(&["start", "fw-reload-probe.service"]).unwrap();
            std::fs::write(&path, unit(1)).unwrap();
        }
        let o = self.sb.systemctl(&["show", "-P", "NeedDaemonReload", "fw-reload-probe.service"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "yes", "the reload probe is armed");
    }
    /// Whether the manager reloaded since the probe was armed.
    pub fn reloaded_since_armed(&self) -> bool {
        let o = self.sb.systemctl(&["show", "-P", "NeedDaemonReload", "fw-reload-probe.service"]).unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == "no"
    }
    /// Wait until `f` holds, for up to `secs`.
    pub fn wait(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        wait_for(what, Duration::from_secs(secs), || f().then_some(()))
    }
}

/// An agent's deploy marker, `<state>/markers/<agent>.json`, as `host::state` writes it. The
/// library writes it from an `AgentRecord` through a JSON value and has no type that reads it
/// back: this is the tests' reading of it, strict about its fields (a field added or renamed
/// there fails here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Marker {
    pub agent: String,
    /// The commit that last changed the agent (FLEETWRIGHT_COMMIT).
    pub commit: String,
    pub changed_at: String,
    /// The commit applied last, whether or not it changed the agent.
    pub applied_commit: String,
    pub applied_at: String,
    pub spec_hash: String,
}

impl Host {
    /// The inventory, read by the library's own reader into its own type. It must exist and
    /// be whole.
    pub fn inventory(&self) -> Inventory {
        let state = StateDir::new(self.state_dir());
        assert!(state.inventory_path().exists(), "there is no inventory at {}", state.inventory_path().display());
        state.load_inventory().unwrap_or_else(|e| panic!("{e}"))
    }
    /// Replace the inventory, as the library writes it.
    pub fn save_inventory(&self, inv: &Inventory) {
        StateDir::new(self.state_dir()).save_inventory(inv).unwrap_or_else(|e| panic!("{e}"))
    }
    /// An agent's deploy marker; None while there is none. One that cannot be read as a
    /// marker fails the test (markers are written atomically: never seen half written).
    pub fn marker(&self, agent: &str) -> Option<Marker> {
        let path = StateLayout::new(self.state_dir()).marker(agent, "json");
        match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: not a deploy marker ({e})", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    /// The commit that last changed `agent`, by its deploy marker.
    pub fn marker_commit(&self, agent: &str) -> Option<String> {
        self.marker(agent).map(|m| m.commit)
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The Fleet document of the real tier (agents run as root unless they say otherwise). Text, as
/// a few tests append a field to it (`journal:`); agents are built with `build`.
pub const FLEET: &str = "apiVersion: fleetwright/v1
kind: Fleet
allowRoot: true
credentialDirs: [/etc/fleetwright/secrets, /srv/creds]
defaults:
  run: {user: root}
  resources: {memoryMax: 256M, tasksMax: 64}
";

/// A long-running agent that writes the commit it was started for (its deploy marker's
/// FLEETWRIGHT_COMMIT) to /run/fw-test/<name>.commit, then sleeps.
pub fn service(name: &str) -> AgentSpec {
    agent(name).sh(&format!("mkdir -p /run/fw-test; echo \"$FLEETWRIGHT_COMMIT\" > /run/fw-test/{name}.commit; exec sleep 100000"))
}

/// An agent that runs `script` with sh: a job once it is given a schedule (`.every`,
/// `.calendar`).
pub fn job(name: &str, script: &str) -> AgentSpec {
    agent(name).sh(script)
}
