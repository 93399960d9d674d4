//! The host layer: the only code that touches the file system, D-Bus and the clock. It
//! observes the host into a `plan::Observed`, executes a `plan::Plan`, and reports status.

pub mod apply;
pub mod check;
pub mod sandbox;
pub mod state;
pub mod status;
pub mod systemd;

use std::path::PathBuf;

use crate::render::Scope;

/// Where and what fleetwright manages on this host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub scope: Scope,
    pub unit_dir: PathBuf,
    pub state_dir: PathBuf,
    pub host: String,
    /// The D-Bus address to reach the manager at, when not the default bus.
    pub bus_address: Option<String>,
}

impl HostConfig {
    /// Units in a directory under /run are enabled at runtime (links under /run too): that is
    /// how a host with a read-only /etc/systemd/system (NixOS) is managed.
    pub fn runtime_links(&self) -> bool {
        self.unit_dir.starts_with("/run")
    }

    pub fn render_ctx(&self) -> crate::render::RenderCtx {
        // Helper units run this very binary (resolved, so a relative invocation still works).
        let exe = std::env::current_exe().ok().and_then(|p| std::fs::canonicalize(p).ok()).map(|p| p.display().to_string()).unwrap_or_else(|| "/usr/local/bin/fleetwright".into());
        crate::render::RenderCtx { scope: self.scope, state_dir: self.state_dir.to_string_lossy().to_string(), exe }
    }
}

/// A crash point for the crash-safety tests: when `FLEETWRIGHT_CRASH_AT` names this point
/// (`NAME`, or `NAME:N` for its Nth hit), the process aborts here as if killed.
pub(crate) fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Ok(want) = std::env::var("FLEETWRIGHT_CRASH_AT") else { return };
    let (point, nth) = want.split_once(':').map_or((want.as_str(), 1), |(p, n)| (p, n.parse().unwrap_or(1)));
    if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}

/// Now, as RFC 3339 in UTC (deploy markers, history).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The last lines a unit wrote to the journal, for failure reports.
pub fn journal_tail(scope: Scope, unit: &str, lines: usize) -> String {
    let flag = if scope == Scope::User { "--user-unit" } else { "--unit" };
    match std::process::Command::new("journalctl").args([flag, unit, "-n", &lines.to_string(), "--no-pager", "-o", "short-iso", "-q"]).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim_end().to_string(),
        Err(e) => format!("(journalctl not available: {e})"),
    }
}
