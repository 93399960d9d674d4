//! The ledger `.<stem>.taken`: the names of `stem`'s backups in the order they were taken,
//! one a line, root's 0600 in the backup directory. Appended (and fsynced) before a backup is
//! renamed into place, rewritten without the pruned ones; [`list`](fn@super::list) goes by it, not by
//! the dates in the names, which come from a clock that may have been wrong.
//!
//! Every access is relative to the backup directory's held descriptor, never by path (see
//! the module docs of [`super`]): that is why the rewrite is not `fsutil::write_atomic`,
//! which opens, renames and fsyncs by path.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;

use crate::ops::walk::Dir;

/// The ledger of the order `stem`'s backups were taken in.
pub(super) fn ledger_name(stem: &str) -> OsString {
    OsString::from(format!(".{stem}.taken"))
}

/// The ledger's names, oldest first (a missing ledger has none).
pub(super) fn read_ledger(dir: &Dir, stem: &str) -> io::Result<Vec<String>> {
    use std::io::Read;
    match dir.open(ledger_name(stem), OFlag::O_RDONLY) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The ledger open and locked (flock) for writing: the one at its name now (a rewrite may
/// have replaced the one opened while waiting for the lock).
fn lock_ledger(dir: &Dir, stem: &str) -> io::Result<nix::fcntl::Flock<File>> {
    let name = ledger_name(stem);
    loop {
        let flags = OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name.as_os_str(), flags, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(io::Error::from)?;
        let locked = nix::fcntl::Flock::lock(File::from(fd), nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let held = locked.metadata()?;
        if dir.stat(&name)?.is_some_and(|st| (st.st_dev, st.st_ino) == (held.dev(), held.ino())) {
            return Ok(locked);
        }
    }
}

/// Append `name` to the ledger, durably.
pub(super) fn note_taken(dir: &Dir, stem: &str, name: &str) -> io::Result<()> {
    let mut f = lock_ledger(dir, stem)?;
    f.write_all(format!("{name}\n").as_bytes())?;
    f.sync_data()
}

/// Rewrite the ledger with only the names still there (after pruning), atomically.
pub(super) fn compact_ledger(dir: &Dir, stem: &str) -> io::Result<()> {
    let _held = lock_ledger(dir, stem)?;
    let present: Vec<String> = read_ledger(dir, stem)?.into_iter().filter(|n| matches!(dir.stat(n), Ok(Some(_)))).collect();
    let tmp = format!(".{stem}.taken.tmp-{}", std::process::id());
    let _ = dir.unlink(&tmp);
    let mut f = dir.create_new(&tmp, 0o600)?;
    f.write_all(present.iter().map(|n| format!("{n}\n")).collect::<String>().as_bytes())?;
    f.sync_all()?;
    dir.rename_over(&tmp, ledger_name(stem))?;
    dir.sync()
}
