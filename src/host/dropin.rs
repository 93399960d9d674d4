//! Drop-ins on the units fleetwright manages. fleetwright writes none for them, so every
//! `*.conf` in a drop-in directory that applies to one of its units is someone else's
//! (`systemctl edit`, a package, a hand): it changes what the unit runs without a commit. They
//! are reported (`status`, the daemon's history and log, metrics), never removed: deleting a
//! file fleetwright did not write is not its call.
//!
//! For `agent-web.service` the manager reads (systemd.unit(5), "Drop-in directories")
//! `agent-web.service.d/`, then each dash prefix (`agent-.service.d/`), then the unit type's
//! (`service.d/`), in every directory of the unit search path. The directories looked at here
//! are the ones an administrator writes to: fleetwright's unit directory, where `systemctl
//! enable` and `edit` write (/etc/systemd/system, or the user's), and the runtime one (/run).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::HostConfig;
use crate::types::Scope;

/// The directories whose drop-ins are looked at: fleetwright's unit directory, the
/// administrator's (`/etc/systemd/system`, or `~/.config/systemd/user`; on NixOS the one its
/// own configuration writes drop-ins to) and the runtime one (`/run/systemd/system`, or
/// `$XDG_RUNTIME_DIR/systemd/user`).
pub fn search_dirs(cfg: &HostConfig) -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let (config, runtime) = match cfg.scope {
        Scope::System => (PathBuf::from("/etc/systemd/system"), PathBuf::from("/run/systemd/system")),
        Scope::User => (
            env("XDG_CONFIG_HOME").unwrap_or_else(|| env("HOME").unwrap_or_default().join(".config")).join("systemd/user"),
            env("XDG_RUNTIME_DIR").unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid()))).join("systemd/user"),
        ),
    };
    let mut dirs = vec![cfg.unit_dir.clone(), config, runtime];
    let mut seen = std::collections::BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The drop-in directory names that apply to `unit`: its own, its dash prefixes', its type's.
pub fn dir_names(unit: &str) -> Vec<String> {
    let Some((stem, kind)) = unit.rsplit_once('.') else { return vec![] };
    let mut names = vec![format!("{unit}.d")];
    let mut prefix = stem;
    while let Some((p, _)) = prefix.rsplit_once('-') {
        names.push(format!("{p}-.{kind}.d"));
        prefix = p;
    }
    names.push(format!("{kind}.d"));
    names
}

/// Every drop-in (`*.conf`) that applies to one of `units`, by unit. Each search directory is
/// listed once and only the drop-in directories in it are read: a fleet of thousands of units
/// costs a few directory reads, not a lookup per unit and name.
pub fn foreign<'a>(cfg: &HostConfig, units: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Vec<PathBuf>> {
    // Drop-in directory name → its *.conf files, over every search directory.
    let mut confs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in search_dirs(cfg) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with(".d") || !e.path().is_dir() {
                continue;
            }
            let mut found: Vec<PathBuf> = std::fs::read_dir(e.path())
                .map(|it| it.flatten().map(|f| f.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect())
                .unwrap_or_default();
            found.sort();
            confs.entry(name).or_default().extend(found);
        }
    }
    let mut out = BTreeMap::new();
    if confs.values().all(Vec::is_empty) {
        return out;
    }
    for unit in units {
        let found: Vec<PathBuf> = dir_names(unit).iter().filter_map(|n| confs.get(n)).flatten().cloned().collect();
        if !found.is_empty() {
            out.insert(unit.to_string(), found);
        }
    }
    out
}

/// How a drop-in is reported.
pub fn describe(unit: &str, path: &std::path::Path) -> String {
    format!("{unit}: drop-in {} was not written by fleetwright (it stays: move the change into the fleet, or remove it)", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_directories_of_a_unit_are_its_own_its_prefixes_and_its_types() {
        assert_eq!(dir_names("agent-web-api.service"), ["agent-web-api.service.d", "agent-web-.service.d", "agent-.service.d", "service.d"]);
        assert_eq!(dir_names("agent-tick.timer"), ["agent-tick.timer.d", "agent-.timer.d", "timer.d"]);
        assert!(dir_names("noext").is_empty());
    }

    #[test]
    fn drop_ins_are_found_in_every_directory_that_applies() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = HostConfig {
            scope: Scope::System,
            unit_dir: dir.path().join("units"),
            state_dir: dir.path().join("state"),
            host: "h".into(),
            bus_address: None,
            links: None,
            identity: None,
        };
        for (d, f) in [("agent-web.service.d", "override.conf"), ("agent-.service.d", "all.conf"), ("agent-web.service.d", "notes.txt")] {
            std::fs::create_dir_all(cfg.unit_dir.join(d)).unwrap();
            std::fs::write(cfg.unit_dir.join(d).join(f), "[Service]\n").unwrap();
        }
        let found = foreign(&cfg, ["agent-web.service", "agent-tick.timer", "agent-db.service"]);
        // Only what is under the test's directory (the machine's own /etc and /run are searched too).
        let names = |u: &str| {
            found
                .get(u)
                .into_iter()
                .flatten()
                .filter(|p| p.starts_with(dir.path()))
                .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("agent-web.service"), ["override.conf", "all.conf"]);
        assert_eq!(names("agent-db.service"), ["all.conf"]);
        assert!(names("agent-tick.timer").is_empty());
        assert!(describe("agent-web.service", &found["agent-web.service"][0]).contains("was not written by fleetwright"));
    }
}
