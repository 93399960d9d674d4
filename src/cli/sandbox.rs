//! A sandbox that lives across commands: `sandbox up` boots a throw-away systemd (system and
//! user manager, both buses) and leaves it running under a small keeper process until `sandbox
//! down`; with `--sandbox`, plan, apply, status, history, rollback, resume, sync and daemon run
//! inside it (this binary, entered into its namespaces), against its own state directory. So a
//! fleet can be tried change by change — the tutorial, or "try before you push" — without
//! touching this machine's systemd.
//!
//! The keeper holds the sandbox's watchdog pipe: if it is killed, the sandbox powers itself off
//! (no manager is left behind). Its record (`sandbox.json`: the keeper's and the manager's
//! pids) is in `/run/fleetwright-sandbox`, root's (`FLEETWRIGHT_SANDBOX_DIR` moves it, for
//! tests that run several).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Error, Outcome};

/// Where the record of the running sandbox is kept.
fn record_dir() -> PathBuf {
    std::env::var_os("FLEETWRIGHT_SANDBOX_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/fleetwright-sandbox"))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// The `fleetwright sandbox keep` process that owns the sandbox.
    keeper: u32,
    /// The sandbox's systemd (PID 1 of its namespaces), as a host pid.
    manager: u32,
    offline: bool,
}

/// Is a sandbox up?
pub fn is_up() -> bool {
    running().is_some()
}

/// The running sandbox, if there is one.
fn running() -> Option<Record> {
    let r: Record = serde_json::from_slice(&std::fs::read(record_dir().join("sandbox.json")).ok()?).ok()?;
    super::is_fleetwright(r.keeper, &["sandbox", "keep"]).then_some(r)
}

/// `sandbox up`: start a keeper, wait until it says the sandbox runs.
pub fn up(offline: bool) -> Result<Outcome, Error> {
    if let Some(r) = running() {
        println!("a sandbox is up already (its systemd is pid {}); `fleetwright sandbox down` ends it", r.manager);
        return Ok(Outcome::Done);
    }
    if !fleetwright_sandbox::Sandbox::available() {
        return Err(Error::failed("the sandbox needs root, /lib/systemd/systemd, unshare, nsenter and a cgroup2 mount"));
    }
    let dir = record_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(dir.join("sandbox.json"));
    let log_path = dir.join("keeper.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::failed(format!("{}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("cannot find this binary: {e}")))?;
    let mut keeper = std::process::Command::new(exe);
    keeper.args(["sandbox", "keep"]).stdin(Stdio::null()).stdout(log.try_clone().map_err(Error::failed)?).stderr(log);
    if offline {
        keeper.arg("--offline");
    }
    // Its own session: the terminal's ^C or hang-up does not reach it; `sandbox down` does.
    {
        use std::os::unix::process::CommandExt;
        keeper.process_group(0);
    }
    let mut child = keeper.spawn().map_err(|e| Error::failed(format!("cannot start the sandbox's keeper: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = running() {
            println!(
                "sandbox up: a throw-away systemd runs as pid {}{}. Give --sandbox to plan, apply, status, history, rollback, resume, sync or daemon to use it; `fleetwright sandbox down` ends it.",
                r.manager,
                if offline { ", without network" } else { "" }
            );
            return Ok(Outcome::Done);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Error::failed(format!("the sandbox did not come up ({status}):\n{}", log.trim_end())));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::failed(format!("the sandbox did not come up within a minute; see {}", log_path.display())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sandbox keep` (started by `up`): boot the sandbox, record it, and keep it until SIGTERM,
/// SIGINT or SIGHUP.
pub fn keep(offline: bool) -> Result<Outcome, Error> {
    use nix::sys::signal::{SigSet, Signal};
    // Blocked before anything starts, so that a `down` during the boot waits for its end.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().map_err(|e| Error::failed(format!("blocking signals: {e}")))?;
    let opts = fleetwright_sandbox::SandboxOptions { dbus: true, user_manager: true, offline, ..Default::default() };
    let sb = fleetwright_sandbox::Sandbox::boot(opts).map_err(|e| Error::failed(format!("booting the sandbox: {e}")))?;
    let record = Record { keeper: std::process::id(), manager: sb.pid(), offline };
    let path = record_dir().join("sandbox.json");
    let body = serde_json::to_vec_pretty(&record).map_err(Error::failed)?;
    fleetwright_sys::fsutil::write_atomic(&path, &body, 0o600).map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    eprintln!("sandbox: systemd runs as pid {}; waiting for `fleetwright sandbox down`", sb.pid());
    let got = signals.wait();
    // The record goes first: nothing enters a sandbox that is going away.
    let _ = std::fs::remove_file(&path);
    sb.shutdown();
    eprintln!("sandbox: shut down ({})", got.map(|s| s.as_str()).unwrap_or("signal"));
    Ok(Outcome::Done)
}

/// `sandbox down`: ask the keeper to shut the sandbox down, and wait until it has.
pub fn down() -> Result<Outcome, Error> {
    let Some(r) = running() else {
        let _ = std::fs::remove_file(record_dir().join("sandbox.json"));
        println!("no sandbox is up");
        return Ok(Outcome::Done);
    };
    let keeper = nix::unistd::Pid::from_raw(r.keeper as i32);
    nix::sys::signal::kill(keeper, nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| Error::failed(format!("signalling the sandbox's keeper (pid {}): {e}", r.keeper)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleetwright_sys::fsutil::pid_alive(r.keeper) || fleetwright_sys::fsutil::pid_alive(r.manager) {
        if Instant::now() > deadline {
            return Err(Error::failed(format!("the sandbox (keeper pid {}, systemd pid {}) did not stop within 30 s", r.keeper, r.manager)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("sandbox down: its systemd, its units and its state directory are gone");
    Ok(Outcome::Done)
}

/// Run this very command line (without `--sandbox`) inside the running sandbox, in the same
/// working directory, and end as it ends.
pub fn relay(user: bool) -> Result<Outcome, Error> {
    let r = running().ok_or_else(|| Error::failed("no sandbox is up; start one with `fleetwright sandbox up` (or leave out --sandbox)"))?;
    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("cannot find this binary: {e}")))?;
    let cwd = std::env::current_dir().map_err(|e| Error::failed(format!("the working directory: {e}")))?;
    if [PathBuf::from("/tmp"), PathBuf::from("/var/tmp"), PathBuf::from("/run")].iter().any(|p| cwd.starts_with(p)) {
        return Err(Error::failed(format!("{} is under /tmp, /var/tmp or /run, which the sandbox replaces with its own; run from elsewhere", cwd.display())));
    }
    let mut run = fleetwright_sandbox::command_in_dir(r.manager, Some(&cwd), &exe.display().to_string());
    run.args(std::env::args_os().skip(1).filter(|a| a != "--sandbox"));
    if user {
        run.envs(fleetwright_sandbox::user_env());
    }
    let status = run.status().map_err(|e| Error::failed(format!("cannot enter the sandbox: {e}")))?;
    match status.code() {
        Some(code) => Ok(Outcome::Exit(code.clamp(0, 255) as u8)),
        None => Err(Error::failed(format!("the command in the sandbox was killed ({status})"))),
    }
}
