//! What the spec cannot know about this host, checked before anything is applied: the paths
//! that jobs clean or write must stay out of this host's own state and unit directories (which
//! may be elsewhere than the defaults the spec checks against), and the directories from which
//! root reads agents' credentials must be ones that no agent can plant a file or a symlink in.
//! A refusal makes the plan unappliable; nothing is changed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::HostConfig;
use crate::spec::Fleet;
use crate::spec::values::system_place;
use crate::types::Scope;

/// Why this host must not apply `fleet` as it is; empty when it may.
pub fn refusals(fleet: &Fleet, cfg: &HostConfig) -> Vec<String> {
    let mut out = Vec::new();
    let (state, units) = (cfg.state_dir.to_string_lossy().into_owned(), cfg.unit_dir.to_string_lossy().into_owned());
    let own: [&str; 2] = [&state, &units];
    // The files root reads for the fleet: agents' credentials and environment files, and
    // sinks' token and URL files (what they hold is sent to the sink), each with whose it is.
    let mut read_by_root: Vec<(String, &str)> = Vec::new();
    for a in fleet.agents_for_host(&cfg.host) {
        let mut touched: Vec<(&str, &str)> = Vec::new();
        touched.extend(a.logs.iter().map(|l| ("logs path", l.path.as_str())));
        touched.extend(a.backups.iter().flat_map(|b| [("backup database", b.sqlite.as_str()), ("backup directory", b.to.as_str())]));
        touched.extend(a.health.iter().filter_map(|h| h.heartbeat.as_ref()).map(|hb| ("heartbeat file", hb.file.as_str())));
        for (what, p) in touched {
            if let Some(place) = system_place(p, &own).filter(|pl| own.contains(pl)) {
                out.push(format!("agent {:?}: its {what} {p:?} is at, above or inside {place}, which is fleetwright's own directory on this host", a.name));
            }
        }
        read_by_root.extend(a.run.credentials.values().chain(a.run.environment_file.iter()).map(|p| (format!("agent {:?}", a.name), p.as_str())));
    }
    for (i, n) in fleet.notify.iter().enumerate() {
        read_by_root.extend(n.token_file.iter().chain(n.url_file.iter()).map(|p| (format!("notify.{i}"), p.as_str())));
    }
    let identity = identity_inode(cfg);
    let mut dirs_used = std::collections::BTreeSet::new();
    for (whose, p) in read_by_root {
        if let Some(d) = fleet.credential_dirs.iter().find(|d| crate::spec::values::is_inside(p, d)) {
            dirs_used.insert(d.clone());
        }
        if identity.is_some() && inode(Path::new(p)) == identity {
            out.push(format!("{whose}: {p} is this host's identity, which decrypts every secret of the host; root never hands it to an agent or a sink"));
        }
    }
    // A user manager reads credentials as the user itself: nothing is read with more rights.
    if cfg.scope == Scope::System {
        for d in dirs_used {
            if let Err(why) = root_only_path(Path::new(&d)) {
                out.push(format!("credentialDirs: {d}: {why}; root reads agents' credentials from it, so no other user may be able to change it"));
            }
        }
    }
    out
}

/// A file as (device, inode), following links: the same file whatever name it is reached by.
fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The identity this host decrypts secrets with, as [`inode`]; None when there is none.
fn identity_inode(cfg: &HostConfig) -> Option<(u64, u64)> {
    super::secrets::identity_path(cfg.identity.as_deref()).ok().and_then(|p| inode(&p))
}

/// Is every existing directory from `/` to `dir` owned by root and writable by nobody else?
/// A directory that does not exist yet is fine (nothing can be planted in it).
fn root_only_path(dir: &Path) -> Result<(), String> {
    let mut p = std::path::PathBuf::from("/");
    let mut parts = vec![p.clone()];
    for c in dir.components().skip(1) {
        p.push(c);
        parts.push(p.clone());
    }
    for part in parts {
        let m = match std::fs::symlink_metadata(&part) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", part.display())),
        };
        if m.file_type().is_symlink() {
            return Err(format!("{} is a symlink", part.display()));
        }
        if m.uid() != 0 {
            return Err(format!("{} is owned by uid {}, not root", part.display(), m.uid()));
        }
        // Group- or other-writable: anyone in that group could swap what is below. A sticky
        // directory (/tmp) still lets its users plant new names.
        if m.mode() & 0o022 != 0 {
            return Err(format!("{} is writable by group or others (mode {:o})", part.display(), m.mode() & 0o7777));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_directory_must_be_root_only_all_the_way_down() {
        let tmp = tempfile::tempdir().unwrap();
        // A fresh temp dir under /tmp: /tmp is writable by everyone.
        let e = root_only_path(&tmp.path().join("secrets")).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        assert_eq!(root_only_path(Path::new("/etc/fleetwright-no-such-dir")), Ok(()));
        assert_eq!(root_only_path(Path::new("/")), Ok(()));
    }

    #[test]
    fn jobs_may_not_point_at_this_hosts_own_directories() {
        let files = vec![(
            "a.yaml".to_string(),
            "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: agent}\nlogs: [{path: /srv/fw-state/markers, maxFiles: 0}]\nbackups: [{sqlite: /srv/a/db.sqlite, to: /srv/units}]\n".to_string(),
        )];
        let fleet = crate::spec::load(&files, &crate::host::zones::Tzdata).unwrap();
        let cfg = HostConfig {
            scope: Scope::System,
            unit_dir: "/srv/units".into(),
            state_dir: "/srv/fw-state".into(),
            host: "h".into(),
            bus_address: None,
            links: None,
            identity: None,
        };
        let r = refusals(&fleet, &cfg);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("logs path \"/srv/fw-state/markers\" is at, above or inside /srv/fw-state"), "{r:?}");
        assert!(r[1].contains("backup directory \"/srv/units\" is at, above or inside /srv/units"), "{r:?}");
        let elsewhere = HostConfig { state_dir: "/var/lib/fleetwright".into(), unit_dir: "/etc/systemd/system".into(), ..cfg };
        assert!(refusals(&fleet, &elsewhere).is_empty());
    }
}
