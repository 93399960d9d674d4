//! The benchmark's view of a sandboxed systemd: timed commands run inside it, unit-file
//! snapshots (mtimes, contents) read through `/proc/PID/root`, and manager properties.

use std::collections::BTreeMap;
use std::io;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fleetwright_sandbox::{Sandbox, SandboxOptions};
use fleetwright_sys::proc::output_with_timeout;

/// The fleetwright binary measured: this build's, or `FLEETWRIGHT_BENCH_BIN` (another build,
/// to compare two trees with the same harness on the same machine).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("FLEETWRIGHT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetwright").to_string()))
}
/// The unit directory inside the sandbox (a private tmpfs there).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// fleetwright's state directory inside the sandbox (a private tmpfs there).
pub const STATE_DIR: &str = "/var/lib/fleetwright";
/// The unit of the daemon-reload probe (see [`Host::arm_reload_probe`]).
const PROBE: &str = "bench-reload-probe.service";

pub struct Host {
    pub sb: Sandbox,
}

/// `FLEETWRIGHT_BENCH_PHASES=1`: fleetwright's commands log at debug level, and the cold
/// apply's own phase timings are printed (where its time goes, against systemd's).
pub fn phases() -> bool {
    std::env::var("FLEETWRIGHT_BENCH_PHASES").as_deref() == Ok("1")
}

/// A command's outcome: its wall time, and its output unless it ran out of time.
pub struct Timed {
    pub took: Duration,
    pub out: Option<Output>,
}

impl Timed {
    pub fn ok(&self) -> bool {
        self.out.as_ref().is_some_and(|o| o.status.success())
    }
    pub fn code(&self) -> Option<i32> {
        self.out.as_ref().and_then(|o| o.status.code())
    }
    pub fn stdout(&self) -> String {
        self.out.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }
    /// A short description of what went wrong, for the report.
    pub fn why(&self) -> String {
        match &self.out {
            None => format!("timed out after {:.0} s", self.took.as_secs_f64()),
            Some(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                format!("exit {:?}: {}", o.status.code(), tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
            }
        }
    }
}

/// Run `cmd` to its end (or `timeout`) and time it from spawn to exit.
pub fn timed(cmd: Command, timeout: Duration) -> Timed {
    let t0 = Instant::now();
    match output_with_timeout(cmd, timeout) {
        Ok(out) => Timed { took: t0.elapsed(), out: Some(out) },
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Timed { took: t0.elapsed(), out: None },
        Err(e) => panic!("cannot run a command in the sandbox: {e}"),
    }
}

impl Host {
    pub fn boot() -> Host {
        let sb = Sandbox::boot(SandboxOptions { dbus: true, ..Default::default() }).expect("boot a sandboxed systemd");
        Host { sb }
    }

    pub fn shutdown(self) {
        self.sb.shutdown();
    }

    /// `fleetwright --host bench ARGS` inside the sandbox, timed.
    pub fn fw(&self, args: &[&str], timeout: Duration) -> Timed {
        let mut c = self.sb.command(bin());
        // The defaults a user gets (logging included): no RUST_LOG from the caller's environment.
        c.args(["--host", "bench"]).args(args).env_remove("RUST_LOG");
        if phases() {
            c.env("RUST_LOG", "fleetwright=debug");
        }
        timed(c, timeout)
    }

    /// `systemctl ARGS` inside the sandbox, timed.
    pub fn systemctl_timed(&self, args: &[String], timeout: Duration) -> Timed {
        let mut c = self.sb.command("systemctl");
        c.args(args);
        timed(c, timeout)
    }

    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut c = self.sb.command("systemctl");
        c.args(args).stdin(Stdio::null());
        let o = c.output().expect("systemctl in the sandbox");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// When the manager last started loading units (changes with every daemon-reload).
    pub fn units_load_start(&self) -> String {
        self.systemctl(&["show", "-P", "UnitsLoadStartTimestampMonotonic"])
    }

    /// Arm the daemon-reload probe: an active unit of ours (outside fleetwright's unit
    /// directory, in the sandbox's /run/systemd/system) whose file is then edited on disk, so
    /// that the manager reports `NeedDaemonReload=yes` for it until the next daemon-reload.
    /// (`UnitsLoadStartTimestampMonotonic` is set at the manager's start only in systemd 252,
    /// not by a daemon-reload: the probe is what tells a reload happened.) The first call does a
    /// daemon-reload of its own: call it before what it watches.
    pub fn arm_reload_probe(&self) -> bool {
        use std::sync::atomic::{AtomicU64, Ordering};
        static GEN: AtomicU64 = AtomicU64::new(0);
        let path = self.sb.host_path(format!("/run/systemd/system/{PROBE}"));
        let unit = |g: u64| {
            format!("[Unit]\nDescription=bench reload probe {g}\nDefaultDependencies=no\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
        };
        if self.systemctl(&["show", "-P", "ActiveState", PROBE]) != "active" {
            std::fs::write(&path, unit(0)).expect("write the reload probe");
            self.systemctl(&["daemon-reload"]);
            self.systemctl(&["start", PROBE]);
        }
        std::fs::write(&path, unit(GEN.fetch_add(1, Ordering::SeqCst) + 1)).expect("edit the reload probe");
        self.systemctl(&["show", "-P", "NeedDaemonReload", PROBE]) == "yes"
    }

    /// Whether the manager reloaded its units since the probe was last armed.
    pub fn reloaded_since_armed(&self) -> bool {
        self.systemctl(&["show", "-P", "NeedDaemonReload", PROBE]) == "no"
    }

    /// `InvocationID` of each of `units` (one `systemctl show` call).
    pub fn invocation_ids(&self, units: &[String]) -> BTreeMap<String, String> {
        let mut args = vec!["show", "-p", "Id", "-p", "InvocationID"];
        args.extend(units.iter().map(String::as_str));
        let out = self.systemctl(&args);
        let mut ids = BTreeMap::new();
        for block in out.split("\n\n") {
            let mut id = None;
            let mut inv = String::new();
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("Id=") {
                    id = Some(v.to_string());
                } else if let Some(v) = l.strip_prefix("InvocationID=") {
                    inv = v.to_string();
                }
            }
            if let Some(id) = id {
                ids.insert(id, inv);
            }
        }
        ids
    }

    /// Names of the loaded `agent-*` units in `state` (e.g. `active`, `failed`).
    pub fn units_in(&self, state: &str) -> std::collections::BTreeSet<String> {
        self.systemctl(&["list-units", "--all", "--no-legend", "--plain", &format!("--state={state}"), "agent-*"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Every `agent-*` file of the unit directory with its mtime.
    pub fn unit_mtimes(&self) -> BTreeMap<String, SystemTime> {
        let dir = self.sb.host_path(UNIT_DIR);
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(&dir).expect("read the sandbox's unit directory") {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("agent-") {
                let md = e.metadata().expect("metadata");
                if md.is_file() {
                    m.insert(name, md.modified().expect("mtime"));
                }
            }
        }
        m
    }

    /// Every `agent-*` file of the unit directory with its content.
    pub fn unit_contents(&self) -> BTreeMap<String, Vec<u8>> {
        self.unit_mtimes()
            .into_keys()
            .map(|n| {
                let c = std::fs::read(self.sb.host_path(UNIT_DIR).join(&n)).expect("read a unit file");
                (n, c)
            })
            .collect()
    }

    /// The `commit` of an agent's deploy marker.
    pub fn marker_commit(&self, agent: &str) -> Option<String> {
        let bytes = std::fs::read(self.sb.host_path(format!("{STATE_DIR}/markers/{agent}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["commit"].as_str().map(str::to_string)
    }

    /// The daemon's recorded reconciles, newest first.
    pub fn reconciles(&self) -> Vec<serde_json::Value> {
        let t = self.fw(&["history", "--json", "-n", "20"], Duration::from_secs(30));
        serde_json::from_str::<serde_json::Value>(&t.stdout()).ok().and_then(|v| v["reconciles"].as_array().cloned()).unwrap_or_default()
    }

    /// `/proc/PID/FILE` of a process of the sandbox, by its pid inside the namespace.
    pub fn proc_file(&self, pid: &str, file: &str) -> String {
        let mut c = self.sb.command("cat");
        c.arg(format!("/proc/{pid}/{file}")).stdin(Stdio::null());
        String::from_utf8_lossy(&c.output().expect("cat in the sandbox").stdout).into_owned()
    }
}
