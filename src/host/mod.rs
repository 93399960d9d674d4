//! The host layer: the only code that touches the file system, D-Bus and the clock. It
//! observes the host into a `plan::Observed`, executes a `plan::Plan`, and reports status.

pub mod apply;
pub mod check;
pub mod dropin;
pub mod exe;
pub mod fault;
pub mod guard;
pub mod secrets;
pub mod state;
pub mod status;
pub mod systemd;
pub mod zones;

use std::path::PathBuf;

use crate::types::Scope;

/// Where and what fleetwright manages on this host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub scope: Scope,
    pub unit_dir: PathBuf,
    pub state_dir: PathBuf,
    pub host: String,
    /// The D-Bus address to reach the manager at, when not the default bus.
    pub bus_address: Option<String>,
    /// Where the [Install] links go when not where this scope's manager reads them
    /// ([`HostConfig::links_dir`]): a test's own directory, for the tests that run `execute`
    /// without a manager's mount namespace and must never link into the machine's
    /// /etc/systemd/system. `None` everywhere else.
    pub links: Option<PathBuf>,
    /// The identity that decrypts the fleet's secrets (`--identity`); `None`: the first of
    /// [`secrets::DEFAULT_IDENTITIES`] there is.
    pub identity: Option<PathBuf>,
}

impl HostConfig {
    /// The system manager's fleet, in the default directories.
    pub fn system(host: impl Into<String>) -> HostConfig {
        use crate::layout::{SYSTEM_STATE_DIR, SYSTEM_UNIT_DIR};
        HostConfig {
            scope: Scope::System,
            unit_dir: SYSTEM_UNIT_DIR.into(),
            state_dir: SYSTEM_STATE_DIR.into(),
            host: host.into(),
            bus_address: None,
            links: None,
            identity: None,
        }
    }

    /// The files of its state directory.
    pub fn layout(&self) -> crate::layout::StateLayout {
        crate::layout::StateLayout::new(&self.state_dir)
    }

    /// The desired state of `fleet` on this host, with what this host refuses of it
    /// ([`guard::refusals`]) among its refusals, so that such a plan cannot be applied.
    pub fn desired(&self, fleet: &crate::spec::Fleet, commit: &str, prior: &crate::inventory::Inventory) -> crate::desired::Desired {
        let mut ctx = self.render_ctx_for(fleet);
        // Each secret's value id, decrypted with this host's identity: what cannot be
        // decrypted here refuses the commit, and its agents are not rendered.
        let secret_errors = match secrets::value_ids(self, fleet) {
            Ok(ids) => {
                ctx.secret_ids = crate::render::SecretIds::Known(ids);
                Vec::new()
            }
            Err(errors) => errors,
        };
        let mut want = crate::desired::desired(fleet, &self.host, &ctx, commit, prior);
        if !secret_errors.is_empty() {
            // Said once, by file, rather than once per agent that uses it.
            want.refused.retain(|r| !r.contains(crate::render::SECRET_NOT_READ));
            want.refused.extend(secret_errors);
        }
        want.refused.extend(guard::refusals(fleet, self));
        // The helper units (backups, log cleanup, heartbeats, slots) run this very binary (its
        // copy in the state directory, which apply makes): it must be there for them, or they
        // would be written to fail at every run.
        let program =
            if std::path::Path::new(&ctx.exe).exists() { ctx.exe.clone() } else { exe::HelperBinary::of(&self.state_dir).source.display().to_string() };
        if let Some(why) = helper_program_problem(&program)
            && want.units.values().any(|u| u.content.contains(&ctx.exe))
        {
            want.refused.push(format!(
                "the helper units would run {}, which {why}: run fleetwright from where it is installed (the units name the binary that writes them)",
                program
            ));
        }
        want
    }

    /// Units in a directory under /run are enabled at runtime (links under /run too): that is
    /// how a host with a read-only /etc/systemd/system (NixOS) is managed.
    pub fn runtime_links(&self) -> bool {
        self.unit_dir.starts_with("/run")
    }

    /// Where the manager puts the [Install] links of `systemctl enable` for this scope
    /// (systemd.unit(5), "Unit File Load Path"): /etc/systemd/system, /run/systemd/system,
    /// ~/.config/systemd/user or $XDG_RUNTIME_DIR/systemd/user.
    pub fn links_dir(&self) -> PathBuf {
        if let Some(dir) = &self.links {
            return dir.clone();
        }
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        match (self.scope, self.runtime_links()) {
            (Scope::System, false) => PathBuf::from("/etc/systemd/system"),
            (Scope::System, true) => PathBuf::from("/run/systemd/system"),
            (Scope::User, false) => env("XDG_CONFIG_HOME").unwrap_or_else(|| env("HOME").unwrap_or_default().join(".config")).join("systemd/user"),
            (Scope::User, true) => env("XDG_RUNTIME_DIR").unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid()))).join("systemd/user"),
        }
    }

    /// A unit file's enablement, as `systemctl is-enabled` would say for the files
    /// fleetwright writes: `enabled` (or `enabled-runtime`) when the link of every
    /// `WantedBy=` target of its [Install] section is there, `disabled` when not, `static`
    /// without an [Install] section, "" without a file. Read from the file system: the
    /// manager's ListUnitFilesByPatterns looks every unit file up against every link, and at
    /// a thousand units takes seconds.
    pub fn enablement(&self, unit: &str, content: Option<&str>) -> &'static str {
        let Some(content) = content else { return "" };
        // The file as found on disk (observed): its text is all there is to read.
        let parsed = crate::unit::parse(content);
        let targets: Vec<&str> = parsed.get("Install").into_iter().flatten().filter(|(k, _)| k == "WantedBy").flat_map(|(_, v)| v.split_whitespace()).collect();
        if targets.is_empty() {
            return "static";
        }
        let linked = targets.iter().all(|t| std::fs::symlink_metadata(self.wants_link(t, unit)).is_ok());
        match (linked, self.runtime_links()) {
            (true, false) => "enabled",
            (true, true) => "enabled-runtime",
            (false, _) => "disabled",
        }
    }

    /// Enable `units` (name, rendered file): the links `systemctl enable` makes for the [Install]
    /// sections fleetwright renders (only `WantedBy=`): `<links_dir>/<target>.wants/<unit>` → the
    /// unit file, an existing link of that name replaced (as EnableUnitFiles with force). Made
    /// here rather than by the manager's EnableUnitFiles, which looks every unit up on the whole
    /// search path and at a thousand units takes a second; the daemon-reload that follows makes
    /// the manager read them, as after `systemctl enable`. Something there that is not a link
    /// is not ours: an error, left alone.
    pub fn link(&self, units: &[(&str, &[String])]) -> std::io::Result<()> {
        let unit_dir = std::path::absolute(&self.unit_dir)?;
        let mut touched = std::collections::BTreeSet::new();
        for (unit, wanted_by) in units {
            let target = unit_dir.join(unit);
            for t in wanted_by.iter() {
                let link = self.wants_link(t, unit);
                let wants = link.parent().unwrap_or(&link).to_path_buf();
                match std::fs::symlink_metadata(&link) {
                    Ok(m) if m.file_type().is_symlink() => {
                        if std::fs::read_link(&link)? == target {
                            continue;
                        }
                        std::fs::remove_file(&link)?;
                    }
                    Ok(_) => {
                        return Err(std::io::Error::other(format!(
                            "{}: not a link; fleetwright enables {unit} by a link there and will not replace what it did not make",
                            link.display()
                        )));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::DirBuilder::new().recursive(true).create(&wants)?;
                    }
                    Err(e) => return Err(e),
                }
                std::os::unix::fs::symlink(&target, &link).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", link.display())))?;
                touched.insert(wants);
            }
        }
        sync_dirs(touched)
    }

    /// Disable `units`, as DisableUnitFiles would: remove every link to them in the `.wants`,
    /// `.requires` and `.upholds` directories of the links directory (the ones of fleetwright's
    /// [Install] sections, and any a user made with `systemctl add-wants`). Only symlinks to a
    /// file of the unit's name are removed; anything else is left alone.
    pub fn unlink(&self, units: &[&str]) -> std::io::Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let dir = self.links_dir();
        let deps: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wants" || x == "requires" || x == "upholds") && p.is_dir())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut touched = std::collections::BTreeSet::new();
        for unit in units {
            for wants in &deps {
                let link = wants.join(unit);
                let ours = std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink())
                    && std::fs::read_link(&link).is_ok_and(|to| to.file_name() == Some(std::ffi::OsStr::new(unit)));
                if ours {
                    std::fs::remove_file(&link)?;
                    touched.insert(wants);
                }
            }
        }
        sync_dirs(touched)
    }

    /// Where `systemctl enable` links `unit` for `WantedBy=target`.
    fn wants_link(&self, target: &str, unit: &str) -> PathBuf {
        self.links_dir().join(format!("{target}.wants")).join(unit)
    }

    pub fn render_ctx(&self) -> crate::render::RenderCtx {
        // Helper units run this very binary, from its content-addressed copy in the state
        // directory (`exe`): reachable by every agent's user, and unmoved by a rebuild.
        let exe = self.helper_binary().path.display().to_string();
        crate::render::RenderCtx { scope: self.scope, state_dir: self.state_dir.to_string_lossy().to_string(), exe, secret_ids: Default::default() }
    }

    /// `render_ctx` for `fleet`: when no agent of it on this host runs fleetwright's own binary
    /// (`render::runs_fleetwright`), no unit names it, and it is not hashed to be named.
    pub fn render_ctx_for(&self, fleet: &crate::spec::Fleet) -> crate::render::RenderCtx {
        if self.runs_fleetwright(fleet) {
            return self.render_ctx();
        }
        let exe = exe::this_binary().display().to_string();
        crate::render::RenderCtx { scope: self.scope, state_dir: self.state_dir.to_string_lossy().to_string(), exe, secret_ids: Default::default() }
    }

    /// Does an agent of `fleet` on this host run fleetwright's own binary?
    pub fn runs_fleetwright(&self, fleet: &crate::spec::Fleet) -> bool {
        fleet.agents_for_host(&self.host).any(|a| crate::render::runs_fleetwright(fleet, a))
    }

    /// The binary the helper units run (once per process and state directory: naming it may
    /// hash this binary).
    pub fn helper_binary(&self) -> exe::HelperBinary {
        static KNOWN: std::sync::Mutex<Vec<(PathBuf, exe::HelperBinary)>> = std::sync::Mutex::new(Vec::new());
        let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, hb)) = known.iter().find(|(dir, _)| *dir == self.state_dir) {
            return hb.clone();
        }
        let hb = exe::HelperBinary::of(&self.state_dir);
        known.push((self.state_dir.clone(), hb.clone()));
        hb
    }
}

/// What is wrong with `path` as the program of a helper unit: missing, not a regular file, or
/// not executable. `None` when it can run.
pub fn helper_program_problem(path: &str) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(_) => Some("does not exist"),
        Ok(m) if !m.is_file() => Some("is not a regular file"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable"),
        Ok(_) => None,
    }
}

/// Make the links made or removed in these directories durable.
fn sync_dirs<P: AsRef<std::path::Path>>(dirs: impl IntoIterator<Item = P>) -> std::io::Result<()> {
    for dir in dirs {
        fleetwright_sys::fsutil::sync_dir(dir.as_ref())?;
    }
    Ok(())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): CLOCK_MONOTONIC times recorded in the
/// inventory are compared only within the boot they were taken in.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// CLOCK_MONOTONIC now, in µs: the clock systemd stamps unit state changes with.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000).unwrap_or(0)
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
