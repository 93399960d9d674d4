//! Run an agent's `health.check` the way its (new) service would run: in a transient unit
//! of the service's manager (`systemd-run --wait --pipe`) with the unit's user, group,
//! environment, credentials, directory, sandboxing and limits, bounded in time. Not in
//! fleetwright's own process: the daemon's hardening (MemoryDenyWriteExecute=, a private
//! /tmp) would not be the agent's, and its environment is not the agent's either.

use std::process::Command;
use std::time::Duration;

use crate::desired::HealthCheck;
use crate::types::Scope;

/// How long a check may take (the transient unit's RuntimeMaxSec=).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The `systemd-run` command line of a check.
pub fn command(check: &HealthCheck, scope: Scope, bus_address: Option<&str>, unit: &str) -> Command {
    let mut cmd = Command::new("systemd-run");
    if scope == Scope::User {
        cmd.arg("--user");
    }
    if let Some(addr) = bus_address {
        cmd.env(if scope == Scope::User { "DBUS_SESSION_BUS_ADDRESS" } else { "DBUS_SYSTEM_BUS_ADDRESS" }, addr);
    }
    cmd.args(["--wait", "--pipe", "--collect", "--quiet", "--service-type=exec"]);
    cmd.arg(format!("--description=health.check of {unit}"));
    cmd.arg(format!("--property=RuntimeMaxSec={}", TIMEOUT.as_secs()));
    for (k, v) in &check.properties {
        if scope == Scope::User && matches!(k.as_str(), "User" | "Group") {
            continue;
        }
        cmd.arg(format!("--property={k}={v}"));
    }
    // The manager expands `$VAR` and `${VAR}` in a transient unit's command line; run.command
    // is written with `$$` for the same reason. The check's argv is passed verbatim.
    cmd.arg("--").args(check.argv.iter().map(|a| a.replace('$', "$$")));
    cmd
}

/// Ok when the check exits 0; Err with why (exit status and its last output) otherwise.
pub fn run(check: &HealthCheck, scope: Scope, bus_address: Option<&str>, unit: &str) -> Result<(), String> {
    let cmd = command(check, scope, bus_address, unit);
    // The output is read while the check runs (a check that prints a lot must not block on a
    // full pipe); the manager ends it at RuntimeMaxSec=, this a little later at the latest.
    let out = match fleetwright_sys::proc::output_with_timeout(cmd, TIMEOUT + Duration::from_secs(10)) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(format!("{} did not finish within {}s", check.argv.join(" "), TIMEOUT.as_secs())),
        Err(e) => return Err(format!("cannot run systemd-run for {}: {e}", check.argv.join(" "))),
    };
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{} exited with {}: {}", check.argv.join(" "), out.status, tail.join(" / ")))
}

/// `run` on a thread for blocking work (the check takes up to `TIMEOUT`): never on the async
/// runtime's worker threads, which serve the daemon's HTTP endpoint and signals meanwhile.
pub async fn run_blocking(check: &HealthCheck, scope: Scope, bus_address: Option<&str>, unit: &str) -> Result<(), String> {
    let (check, bus, unit) = (check.clone(), bus_address.map(str::to_string), unit.to_string());
    tokio::task::spawn_blocking(move || run(&check, scope, bus.as_deref(), &unit))
        .await
        .unwrap_or_else(|e| Err(format!("the health.check could not be run: {e}")))
}
