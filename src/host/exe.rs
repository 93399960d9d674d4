//! The binary the helper units run (log cleanup, backups, heartbeats, slots, mkdir): not the
//! operator's `fleetwright`, wherever it happens to be (a build tree in a 0700 home directory
//! that the agents' users cannot reach, a file that is rebuilt or moved), but a copy of it in
//! the state directory named by its content, `<state>/bin/fleetwright-<sha256 prefix>`, made by
//! `apply` (root's, 0755, in a directory every user can traverse). The same binary anywhere is
//! the same path, so a rebuild that changes nothing changes no unit; an upgrade rewrites the
//! helper units, one visible step of the plan. Copies no unit refers to any more are pruned
//! after an apply that finished.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// How much of the hash names the copy: 64 bits tell binaries apart; the record beside it
/// keeps the whole hash.
const NAME_HEX: usize = 16;

/// This binary, and the copy of it the helper units run.
#[derive(Debug, Clone)]
pub struct HelperBinary {
    /// The running binary (resolved).
    pub source: PathBuf,
    /// `<state>/bin/fleetwright-<hash>`; the source itself when it cannot be read to hash.
    pub path: PathBuf,
    /// The source's SHA-256 and what it was taken of (None: not hashed).
    hashed: Option<Hashed>,
}

/// What the last hash of the source was taken from: its identity and times, so the next
/// command hashes again only when the binary changed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Hashed {
    source: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

impl Hashed {
    /// The same file, unchanged since it was hashed (its path, inode, size and times).
    fn same_binary(&self, other: &Hashed) -> bool {
        (&self.source, self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
            == (&other.source, other.dev, other.ino, other.size, other.mtime_ns, other.ctime_ns)
    }
}

fn identity(source: &Path, m: &std::fs::Metadata) -> Hashed {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    Hashed {
        source: source.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        sha256: String::new(),
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// This binary, resolved (a relative invocation still names it).
pub fn this_binary() -> PathBuf {
    std::env::current_exe().and_then(std::fs::canonicalize).unwrap_or_else(|_| PathBuf::from("/usr/local/bin/fleetwright"))
}

/// The record of the last hash, if there is a readable one.
fn read_record(state_dir: &Path) -> Option<Hashed> {
    std::fs::read(record_path(state_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn record_path(state_dir: &Path) -> PathBuf {
    crate::layout::StateLayout::new(state_dir).bin().join(".source.json")
}

/// This binary's identity, as the render key holds it: its path, inode, size and times (a
/// stat, no read). Any rebuild or replacement changes it.
pub fn identity_key() -> String {
    let source = this_binary();
    match std::fs::metadata(&source) {
        Ok(m) => {
            let id = identity(&source, &m);
            format!("{}@{}:{}:{}:{}:{}", source.display(), id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns)
        }
        Err(_) => source.display().to_string(),
    }
}

impl HelperBinary {
    /// No copy: pruning with it removes every copy (a fleet no unit of which runs fleetwright).
    pub fn none() -> HelperBinary {
        HelperBinary { source: PathBuf::new(), path: PathBuf::new(), hashed: None }
    }

    /// This binary's copy under `state_dir`. Reads (never writes) the record of the last hash;
    /// hashes the binary when the record is not of it.
    pub fn of(state_dir: &Path) -> HelperBinary {
        let source = this_binary();
        let Ok(meta) = std::fs::metadata(&source) else {
            return HelperBinary { path: source.clone(), source, hashed: None };
        };
        let mut id = identity(&source, &meta);
        let recorded: Option<Hashed> = read_record(state_dir);
        let sha = match recorded {
            Some(r) if r.same_binary(&id) && r.sha256.len() == 64 => r.sha256,
            _ => match hash_file(&source) {
                Ok(h) => h,
                Err(_) => return HelperBinary { path: source.clone(), source, hashed: None },
            },
        };
        id.sha256 = sha;
        let name = format!("fleetwright-{}", &id.sha256[..NAME_HEX]);
        HelperBinary { path: crate::layout::StateLayout::new(state_dir).bin().join(name), source, hashed: Some(id) }
    }

    /// Record the source's hash for the next command (a hint it checks against the binary's
    /// identity; not fsynced), unless the record says so already: without it every command
    /// hashes the binary again. Apply calls it whether or not a unit names the copy.
    pub fn remember(&self, state_dir: &Path) {
        let Some(hashed) = &self.hashed else { return };
        let recorded: Option<Hashed> = read_record(state_dir);
        if recorded.is_some_and(|r| r.same_binary(hashed) && r.sha256 == hashed.sha256) {
            return;
        }
        let bin = crate::layout::StateLayout::new(state_dir).bin();
        if std::fs::create_dir_all(&bin).is_ok() {
            let _ = std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755));
            let _ = fleetwright_sys::fsutil::write_replace(&record_path(state_dir), &serde_json::to_vec(hashed).unwrap_or_default(), 0o644);
        }
    }

    /// Make the copy (atomically: a temporary file, fsynced, renamed) when it is not there,
    /// and record the source's hash for the next command. True when it was made.
    pub fn install(&self, state_dir: &Path) -> std::io::Result<bool> {
        let Some(hashed) = &self.hashed else { return Ok(false) };
        let bin = crate::layout::StateLayout::new(state_dir).bin();
        std::fs::create_dir_all(&bin)?;
        // Traversable by every user (the agents' helpers exec from here), writable by us only.
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        let made = !std::fs::metadata(&self.path).is_ok_and(|m| m.is_file());
        if made {
            let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = bin.join(format!(".{name}{}{}", fleetwright_sys::fsutil::TEMP_MARK, std::process::id()));
            let copied = (|| {
                std::fs::copy(&self.source, &tmp)?;
                // What was copied is what was hashed: the source is the same file, unchanged.
                if !identity(&self.source, &std::fs::metadata(&self.source)?).same_binary(hashed) {
                    return Err(std::io::Error::other(format!("{} changed since it was hashed; run the command again", self.source.display())));
                }
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &self.path)?;
                fleetwright_sys::fsutil::sync_dir(&bin)
            })();
            if copied.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            copied?;
        }
        self.remember(state_dir);
        Ok(made)
    }

    /// Remove the copies other than this one (after an apply that finished, no unit refers
    /// to them). Returns what was removed.
    pub fn prune_others(&self, state_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let bin = crate::layout::StateLayout::new(state_dir).bin();
        let entries = match std::fs::read_dir(&bin) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut removed = vec![];
        for e in entries.flatten() {
            let p = e.path();
            let ours = e.file_name().to_str().is_some_and(|n| n.starts_with("fleetwright-")) && e.file_type().is_ok_and(|t| t.is_file());
            if ours && p != self.path {
                fleetwright_sys::fsutil::remove_durable(&p)?;
                removed.push(p);
            }
        }
        fleetwright_sys::fsutil::sweep_temps(&bin)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_named_by_content_installed_once_and_the_others_pruned() {
        let state = tempfile::tempdir().unwrap();
        let hb = HelperBinary::of(state.path());
        let name = hb.path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("fleetwright-") && name.len() == "fleetwright-".len() + NAME_HEX, "{name}");
        assert!(hb.path.starts_with(state.path().join("bin")));
        assert!(!state.path().exists() || !hb.path.exists(), "naming it writes nothing");
        assert!(hb.install(state.path()).unwrap(), "made the first time");
        assert!(!hb.install(state.path()).unwrap(), "there already");
        let m = std::fs::metadata(&hb.path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        assert_eq!(std::fs::metadata(state.path().join("bin")).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(hash_file(&hb.path).unwrap(), hash_file(&hb.source).unwrap(), "the copy is the binary");
        // The next command takes the hash from the record: the same path.
        assert_eq!(HelperBinary::of(state.path()).path, hb.path);
        let old = state.path().join("bin/fleetwright-0000000000000000");
        std::fs::write(&old, "an older fleetwright").unwrap();
        let keep = state.path().join("bin/not-ours");
        std::fs::write(&keep, "x").unwrap();
        assert_eq!(hb.prune_others(state.path()).unwrap(), vec![old.clone()]);
        assert!(!old.exists() && keep.exists() && hb.path.exists());
    }

    #[test]
    fn a_stale_record_is_not_believed() {
        let state = tempfile::tempdir().unwrap();
        let hb = HelperBinary::of(state.path());
        hb.install(state.path()).unwrap();
        // A record of another binary at the same path (rebuilt): its identity differs.
        let mut r: Hashed = serde_json::from_slice(&std::fs::read(record_path(state.path())).unwrap()).unwrap();
        r.size += 1;
        r.sha256 = "f".repeat(64);
        std::fs::write(record_path(state.path()), serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(HelperBinary::of(state.path()).path, hb.path, "hashed again, not taken from the record");
    }
}
