//! Concurrency slots: at most `limit` runs of a group at once on this host. A slot is an
//! exclusive flock(2) on one of `limit` lock files, taken on a descriptor that survives exec:
//! the kernel releases it when the run ends, however it ends (SIGKILL included), so there is no
//! PID file to go stale.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// The group's lock files are `DIR/<group>/<n>.lock` (`render::SLOT_DIR` for the system
/// manager, `$XDG_RUNTIME_DIR/fleetwright/slots` for a user's).
fn group_dir(dir: &Path, group: &str) -> std::io::Result<PathBuf> {
    crate::spec::values::check_agent_name(group).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    Ok(dir.join(group))
}

/// Make the group's lock files (as root, before the run): readable by every agent user.
pub fn prepare(dir: &Path, group: &str, limit: u32) -> std::io::Result<()> {
    let dir = group_dir(dir, group)?;
    std::fs::create_dir_all(&dir)?;
    for i in 0..limit {
        OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(dir.join(format!("{i}.lock")))?;
    }
    Ok(())
}

/// Try every slot once; the held lock on success.
fn try_once(dir: &Path, group: &str, limit: u32) -> std::io::Result<Option<Flock<File>>> {
    let dir = group_dir(dir, group)?;
    for i in 0..limit {
        let f = match File::open(dir.join(format!("{i}.lock"))) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Some(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Take a slot: at once (`wait` false), or waiting up to `timeout` (forever when None).
pub fn acquire(dir: &Path, group: &str, limit: u32, wait: bool, timeout: Option<Duration>) -> std::io::Result<Option<Flock<File>>> {
    let until = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(l) = try_once(dir, group, limit)? {
            return Ok(Some(l));
        }
        if !wait || until.is_some_and(|u| Instant::now() >= u) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keep the lock across exec: clear close-on-exec and never drop the lock (dropping would
/// unlock), so the exec'd program holds the slot until it exits.
pub fn keep_across_exec(lock: Flock<File>) -> std::io::Result<()> {
    let fd = lock.as_raw_fd();
    // SAFETY: F_SETFD on a descriptor we own; no memory is involved.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(lock);
    Ok(())
}
