//! Concurrency slots: at most `limit` runs of a group at once on this host. A slot is an
//! exclusive flock(2) on one of `limit` lock files, taken on a descriptor that survives exec:
//! the kernel releases it when the run ends, however it ends (SIGKILL included), so there is no
//! PID file to go stale.
//!
//! # Who can take a slot
//!
//! Whoever can open a lock file can flock it, and hold it forever: a user who could open them
//! all would fill the group, and every run of it would then be skipped (and counted a success).
//! So the lock files are `0600` and belong to root (to the user, under a user manager, whose
//! runtime directory is private anyway); [`prepare`] (run as root before each run) gives each
//! user of the group's agents read access with a POSIX ACL entry (`user:<name>:r--`), and nobody
//! else has any. The ACL is set whole at each prepare: a user no longer in the group loses it. A
//! lock file of an older version (mode 0644, or any file that is not a root-owned regular file
//! with no rights for others) is *replaced* by a new file, not changed in place: a descriptor
//! someone opened while it was readable then locks a file that no run uses any more. The
//! directories are made by [`super::walk`] (no link followed, root's only).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::walk::{self, Trust};

/// The group's lock files are `DIR/<group>/<n>.lock` (`render::SLOT_DIR` for the system
/// manager, `$XDG_RUNTIME_DIR/fleetwright/slots` for a user's).
fn group_dir(dir: &Path, group: &str) -> io::Result<PathBuf> {
    crate::spec::values::check_agent_name(group).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(dir.join(group))
}

/// The uid of `user` (a name or a number); `None` when there is no such user here.
fn uid_of(user: &str) -> Option<u32> {
    if let Ok(n) = user.parse::<u32>() {
        return Some(n);
    }
    nix::unistd::User::from_name(user).ok().flatten().map(|u| u.uid.as_raw())
}

/// What [`prepare`] did worth telling.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Users given that do not exist on this host (nothing granted to them).
    pub unknown_users: Vec<String>,
    /// Lock files of an older version or of the wrong kind, replaced by new ones.
    pub replaced: Vec<PathBuf>,
}

/// Make the group's lock files (as root, before the run) so that root and `users` (the users
/// of the group's agents; root needs no entry) and nobody else can take them.
pub fn prepare(dir: &Path, group: &str, limit: u32, users: &[String]) -> io::Result<Prepared> {
    group_dir(dir, group)?;
    let mut done = Prepared::default();
    let mut readers: Vec<u32> = Vec::new();
    for u in users {
        match uid_of(u) {
            Some(0) => {}
            Some(uid) => readers.push(uid),
            None => done.unknown_users.push(u.clone()),
        }
    }
    readers.sort_unstable();
    readers.dedup();
    let base = walk::make_dir(&std::path::absolute(dir)?, 0o755, Trust::Root)?;
    let gdir = base.sub_dir(group, 0o755, Trust::Root)?;
    for i in 0..limit {
        let name = format!("{i}.lock");
        let current = gdir.stat(&name)?;
        let ours = current.as_ref().is_some_and(|st| {
            walk::kind(st) == nix::sys::stat::SFlag::S_IFREG && st.st_uid == nix::unistd::geteuid().as_raw() && st.st_nlink == 1 && st.st_mode & 0o007 == 0
        });
        if ours {
            let f = gdir.open(&name, nix::fcntl::OFlag::O_RDONLY)?;
            grant(&f, &readers).map_err(|e| annotate(e, &gdir.join(&name)))?;
            continue;
        }
        // Missing, or not one we can keep: a fresh file, renamed into place.
        let tmp = OsString::from(format!(".{i}.lock.new-{}", std::process::id()));
        let _ = gdir.unlink(&tmp);
        let f = gdir.create_new(&tmp, 0o600)?;
        let made = grant(&f, &readers).map_err(|e| annotate(e, &gdir.join(&name))).and_then(|()| gdir.rename_over(&tmp, &name));
        if let Err(e) = made {
            let _ = gdir.unlink(&tmp);
            return Err(e);
        }
        if current.is_some() {
            done.replaced.push(gdir.join(&name));
        }
    }
    let _ = gdir.sync();
    Ok(done)
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    let hint = if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        " (the filesystem does not support POSIX ACLs, which the slots of a group with non-root agents need; /run is a tmpfs with ACLs on common kernels)"
    } else {
        ""
    };
    io::Error::new(e.kind(), format!("setting the access of {}: {e}{hint}", path.display()))
}

/// The access ACL `user::rw-, user:<uid>:r-- …, group::---, mask::r--, other::---` as the
/// kernel reads it (`system.posix_acl_access`, version 2), entries sorted by tag then id.
fn acl_xattr(readers: &[u32]) -> Vec<u8> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const UNDEFINED: u32 = u32::MAX;
    let mut v = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u16, id: u32| {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    };
    entry(USER_OBJ, 6, UNDEFINED);
    for uid in readers {
        entry(USER, 4, *uid);
    }
    entry(GROUP_OBJ, 0, UNDEFINED);
    entry(MASK, 4, UNDEFINED);
    entry(OTHER, 0, UNDEFINED);
    v
}

/// Give `readers` read access to the open lock file `f` and nobody else any: mode 0600 and, with
/// readers, an ACL naming each (the ACL sets the mode's group bits to its mask, `r`).
fn grant(f: &File, readers: &[u32]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    const NAME: &std::ffi::CStr = c"system.posix_acl_access";
    let fd = f.as_fd().as_raw_fd();
    if readers.is_empty() {
        // SAFETY: a valid descriptor and a NUL-terminated name.
        if unsafe { libc::fremovexattr(fd, NAME.as_ptr()) } == -1 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)) {
                return Err(e);
            }
        }
        return f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let acl = acl_xattr(readers);
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of `acl.len()` bytes.
    if unsafe { libc::fsetxattr(fd, NAME.as_ptr(), acl.as_ptr().cast(), acl.len(), 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let mode = f.metadata()?.mode() & 0o777;
    if mode != 0o640 {
        return Err(io::Error::other(format!("the ACL left mode {mode:04o}, not 0640")));
    }
    Ok(())
}

/// Try every slot once; the held lock on success.
fn try_once(dir: &Path, group: &str, limit: u32) -> io::Result<Option<Flock<File>>> {
    let dir = group_dir(dir, group)?;
    for i in 0..limit {
        let path = dir.join(format!("{i}.lock"));
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}: only root and the users of the group's agents may take its slots", path.display())));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::walk::{Identity, act_as};
    use std::os::unix::fs::PermissionsExt;

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: needs root (ownership, ACLs and file-system identity)");
        false
    }

    fn user(uid: u32) -> Identity {
        Identity { uid, gid: uid, groups: vec![uid] }
    }

    /// Can `uid` open the lock file (what taking a slot needs)?
    fn can_open(uid: u32, path: &Path) -> bool {
        let _as = act_as(Some(&user(uid))).unwrap();
        File::open(path).is_ok()
    }

    #[test]
    fn the_acl_is_what_the_kernel_reads() {
        let v = acl_xattr(&[1000, 4242]);
        assert_eq!(v.len(), 4 + 6 * 8);
        assert_eq!(&v[..4], &[2, 0, 0, 0], "version 2");
        let entries: Vec<(u16, u16, u32)> = v[4..]
            .chunks(8)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]]), u32::from_le_bytes([c[4], c[5], c[6], c[7]])))
            .collect();
        assert_eq!(entries, [(1, 6, u32::MAX), (2, 4, 1000), (2, 4, 4242), (4, 0, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]);
    }

    #[test]
    fn only_root_and_the_groups_users_can_open_the_lock_files() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = t.path().join("slots");
        let done = prepare(&dir, "inference", 2, &["4242".into(), "root".into(), "no-such-user-here".into()]).unwrap();
        assert_eq!(done.unknown_users, ["no-such-user-here"]);
        for i in 0..2 {
            let lock = dir.join(format!("inference/{i}.lock"));
            let m = std::fs::metadata(&lock).unwrap();
            assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o640), "root's, the group bits are the ACL's mask");
            assert!(can_open(4242, &lock), "a user of the group's agents can");
            assert!(!can_open(4343, &lock), "another user cannot");
        }
        for d in [dir.clone(), dir.join("inference")] {
            assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o755);
        }
        // A user taken out of the group loses access at the next prepare.
        prepare(&dir, "inference", 2, &[]).unwrap();
        let lock = dir.join("inference/0.lock");
        assert_eq!(std::fs::metadata(&lock).unwrap().mode() & 0o7777, 0o600);
        assert!(!can_open(4242, &lock));
        // The slots still work for root (and for the group's users once granted).
        let held = acquire(&dir, "inference", 2, false, None).unwrap().expect("a free slot");
        drop(held);
    }

    #[test]
    fn an_old_readable_lock_file_is_replaced_so_a_descriptor_opened_before_locks_nothing() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = t.path().join("slots");
        std::fs::create_dir_all(dir.join("g")).unwrap();
        let lock = dir.join("g/0.lock");
        std::fs::write(&lock, "").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Another user opened it while it was readable, and holds a lock on it.
        let squatter = {
            let _as = act_as(Some(&user(4343))).unwrap();
            File::open(&lock).unwrap()
        };
        let squat = Flock::lock(squatter, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
        let before = std::fs::metadata(&lock).unwrap().ino();
        let done = prepare(&dir, "g", 1, &["4242".into()]).unwrap();
        assert_eq!(done.replaced, std::slice::from_ref(&lock));
        assert_ne!(std::fs::metadata(&lock).unwrap().ino(), before, "a new file");
        assert!(!can_open(4343, &lock));
        let _as = act_as(Some(&user(4242))).unwrap();
        let got = acquire(&dir, "g", 1, false, None).unwrap();
        assert!(got.is_some(), "the squatter's lock is on a file no run uses any more");
        drop(squat);
    }

    #[test]
    fn the_slot_directory_is_never_reached_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join("slots")).unwrap();
        let e = prepare(&t.path().join("slots"), "g", 1, &[]).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join("real/g")).unwrap();
        let e = prepare(&t.path().join("real"), "g", 1, &[]).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing made through a link");
        assert!(prepare(&t.path().join("real"), "../x", 1, &[]).is_err(), "the group is a name");
    }
}
