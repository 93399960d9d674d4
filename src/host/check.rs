//! Run an agent's `health.check` the way its service would run: as its user and group, with
//! its environment and working directory, bounded in time.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::desired::HealthCheck;
use crate::render::Scope;

/// How long a check may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Ok when the check exits 0; Err with why (exit status and its last output) otherwise.
pub fn run(check: &HealthCheck, scope: Scope) -> Result<(), String> {
    let mut cmd = Command::new(&check.argv[0]);
    cmd.args(&check.argv[1..]).envs(&check.environment).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = &check.working_directory {
        cmd.current_dir(dir);
    }
    if scope == Scope::System {
        if let Some(user) = &check.user {
            let u = nix::unistd::User::from_name(user).ok().flatten().ok_or_else(|| format!("user {user:?} does not exist"))?;
            let gid = match &check.group {
                Some(g) => nix::unistd::Group::from_name(g).ok().flatten().ok_or_else(|| format!("group {g:?} does not exist"))?.gid,
                None => u.gid,
            };
            cmd.uid(u.uid.as_raw()).gid(gid.as_raw()).env("HOME", &u.dir).env("USER", user);
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", check.argv[0]))?;
    let until = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within {}s", check.argv.join(" "), TIMEOUT.as_secs()));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{} exited with {}: {}", check.argv.join(" "), out.status, tail.join(" / ")))
}
