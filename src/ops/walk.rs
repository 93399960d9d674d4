//! Paths that fleetwright walks as root on an agent's behalf (backups, restore, concurrency
//! slots, the `mkdir` of the backup unit): never through a symbolic link, never through a
//! directory that another user could swap, and every operation after the walk done relative to
//! the directory descriptor the walk ended on, never by resolving the path string again.
//!
//! # The walk
//!
//! [`open_dir`] opens `/` and then each component of the path with
//! `openat(parent, name, O_PATH|O_DIRECTORY|O_NOFOLLOW)`: a component that is a symbolic link
//! fails the walk (`ELOOP`/`ENOTDIR`, told apart with `fstatat(AT_SYMLINK_NOFOLLOW)`), and so
//! does `..`. Each step resolves exactly one name, where `O_NOFOLLOW` is what
//! `openat2(RESOLVE_NO_SYMLINKS)` would do for a whole path; the walk goes component by
//! component anyway because every directory on the way is checked ([`Trust`]) with `fstat` on
//! the descriptor it holds, so that what is checked is what is used.
//!
//! # Who may own the directories on the way ([`Trust`])
//!
//! A directory that a user can write is one in which that user can rename, replace or add
//! entries: the next component could become a symbolic link or another directory between a
//! check and its use. So every directory from `/` on must belong to a trusted user and must not
//! be writable by its group or by others. A world-writable directory with the sticky bit that
//! belongs to root (`/tmp`) is accepted *on the way* — in it only an entry's owner can rename
//! or remove the entry, and the next component must belong to a trusted user — but never as
//! the directory the walk ends in.
//!
//! - [`Trust::Root`]: root only (and the user fleetwright itself runs as, under a user
//!   manager). For the places root writes for itself: the backup directory `to:`, the directory
//!   of a backup restored from, the concurrency slots, `mkdir`.
//! - [`Trust::Owner`]: also the owner of the directory the walk ends in, for an agent's own data
//!   directory (it belongs to the agent's user, who may own directories above it too). That user
//!   can still swap entries *in* its directory: fleetwright's own operations there go through
//!   the held descriptor (`openat`/`renameat2`/`unlinkat`/`fstatat` with `O_NOFOLLOW` or
//!   `AT_SYMLINK_NOFOLLOW`), and SQLite, which opens files by path, runs with that user's
//!   file-system identity ([`act_as`]): a swap can then only point it at what the user could
//!   open anyway.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir as DirIter;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, open, openat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, geteuid, linkat, unlinkat};

/// Whose directories a walk accepts; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Root's only (and the user fleetwright runs as, when that is not root).
    Root,
    /// Root's, and those of the user who owns the directory the walk ends in.
    Owner,
}

/// Why a walk refused a path. Every message names the offending directory and says how to fix it.
#[derive(Debug)]
pub enum WalkError {
    /// Not absolute, or with a `..` component.
    Invalid {
        path: PathBuf,
        why: &'static str,
    },
    /// A component does not exist.
    Missing {
        path: PathBuf,
    },
    /// A component is a symbolic link.
    Symlink {
        path: PathBuf,
    },
    /// A component is not a directory.
    NotDir {
        path: PathBuf,
    },
    /// A directory on the way belongs to a user who is not trusted here.
    Owner {
        path: PathBuf,
        uid: u32,
        allowed: String,
    },
    /// A directory on the way is writable by its group or by others.
    Writable {
        path: PathBuf,
        mode: u32,
        last: bool,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

/// `name (uid N)`, or `uid N` for a uid without a passwd entry.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Invalid { path, why } => write!(f, "{}: {why}", path.display()),
            WalkError::Missing { path } => write!(f, "{} does not exist", path.display()),
            WalkError::Symlink { path } => write!(
                f,
                "{} is a symbolic link, which fleetwright does not follow here (whoever can change the link could point it anywhere); use the real path",
                path.display()
            ),
            WalkError::NotDir { path } => write!(f, "{} is not a directory", path.display()),
            WalkError::Owner { path, uid, allowed } => write!(
                f,
                "{} belongs to {}, and {allowed}: that user could swap what is below it; give it to root (chown root) or use another directory",
                path.display(),
                user_name(*uid)
            ),
            WalkError::Writable { path, mode, last: true } => write!(
                f,
                "{} is writable by its group or by others (mode {:04o}): other users could add or swap files in it; remove those rights (chmod go-w {})",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            WalkError::Writable { path, mode, last: false } => write!(
                f,
                "{} is writable by its group or by others (mode {:04o}) and is not a root-owned sticky directory like /tmp: other users could swap what is below it; remove those rights (chmod go-w {})",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            WalkError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WalkError {}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> io::Error {
        let kind = match &e {
            WalkError::Missing { .. } => io::ErrorKind::NotFound,
            WalkError::Invalid { .. } => io::ErrorKind::InvalidInput,
            WalkError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A directory reached by a walk, held open (`O_PATH`).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    uid: u32,
    gid: u32,
}

const STEP: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

/// Walk to the existing directory `path` (absolute) under `trust`.
pub fn open_dir(path: &Path, trust: Trust) -> Result<Dir, WalkError> {
    walk(path, trust, None)
}

/// Walk to `path` under `trust`, creating what is missing with `mode` (exactly: the umask does
/// not apply). Nothing is created below a directory that fails the checks.
pub fn make_dir(path: &Path, mode: u32, trust: Trust) -> Result<Dir, WalkError> {
    walk(path, trust, Some(mode))
}

fn names(path: &Path) -> Result<Vec<&OsStr>, WalkError> {
    if !path.is_absolute() {
        return Err(WalkError::Invalid { path: path.to_path_buf(), why: "not an absolute path" });
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(WalkError::Invalid { path: path.to_path_buf(), why: "contains '..'" }),
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

fn io_at(path: &Path) -> impl FnOnce(Errno) -> WalkError + '_ {
    move |e| WalkError::Io { path: path.to_path_buf(), source: e.into() }
}

/// Why `openat(parent, name)` of a directory failed, in our words.
fn refused(parent: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> WalkError {
    match e {
        Errno::ENOENT => WalkError::Missing { path: path.to_path_buf() },
        Errno::ELOOP | Errno::ENOTDIR => match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == SFlag::S_IFLNK => WalkError::Symlink { path: path.to_path_buf() },
            _ => WalkError::NotDir { path: path.to_path_buf() },
        },
        e => WalkError::Io { path: path.to_path_buf(), source: e.into() },
    }
}

pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn walk(path: &Path, trust: Trust, create: Option<u32>) -> Result<Dir, WalkError> {
    let names = names(path)?;
    let root = Path::new("/");
    let mut cur = open(root, STEP, Mode::empty()).map_err(io_at(root))?;
    let mut shown = PathBuf::from("/");
    let mut chain: Vec<(PathBuf, FileStat)> = vec![(shown.clone(), fstat(&cur).map_err(io_at(root))?)];
    for name in names {
        shown.push(name);
        let fd = match openat(&cur, name, STEP, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create.is_some() => {
                let mode = create.unwrap_or(0o750);
                // Nothing is made inside a directory that fails the checks.
                check(&chain, trust, false)?;
                let made = match mkdirat(&cur, name, Mode::from_bits_truncate(mode)) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => false,
                    Err(e) => return Err(io_at(&shown)(e)),
                };
                let fd = openat(&cur, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| refused(&cur, name, &shown, e))?;
                if made {
                    // The umask may have taken bits away; `mode` is what was asked for.
                    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io_at(&shown))?;
                    // Best effort: the new entry made durable in the directory the walk holds.
                    let _ = sync_at(&cur);
                }
                fd
            }
            Err(e) => return Err(refused(&cur, name, &shown, e)),
        };
        chain.push((shown.clone(), fstat(&fd).map_err(io_at(&shown))?));
        cur = fd;
    }
    check(&chain, trust, true)?;
    let st = chain.last().map(|(_, st)| *st).expect("the chain holds / at least");
    Ok(Dir { fd: cur, path: shown, uid: st.st_uid, gid: st.st_gid })
}

/// The checks of the module docs on `chain` (from `/`); `complete`: its last entry is where
/// the walk ends (else it is the parent of something about to be created).
fn check(chain: &[(PathBuf, FileStat)], trust: Trust, complete: bool) -> Result<(), WalkError> {
    let euid = geteuid().as_raw();
    let end = chain.last().map(|(_, st)| st.st_uid).unwrap_or(0);
    let other = match trust {
        Trust::Root => None,
        Trust::Owner if euid == 0 => Some(end),
        Trust::Owner => None,
    };
    let trusted = |uid: u32| uid == 0 || uid == euid || other == Some(uid);
    let allowed = || {
        let mut who = vec!["root".to_string()];
        if euid != 0 {
            who.push(user_name(euid));
        }
        if let Some(o) = other.filter(|o| *o != 0) {
            who.push(format!("{} (the owner of {})", user_name(o), chain.last().map(|(p, _)| p.display().to_string()).unwrap_or_default()));
        }
        format!("every directory on the way must belong to {}", who.join(" or "))
    };
    for (i, (path, st)) in chain.iter().enumerate() {
        let last = complete && i + 1 == chain.len();
        if !trusted(st.st_uid) {
            return Err(WalkError::Owner { path: path.clone(), uid: st.st_uid, allowed: allowed() });
        }
        if st.st_mode & 0o022 != 0 {
            let sticky_root = st.st_mode & libc::S_ISVTX != 0 && st.st_uid == 0;
            if last || !sticky_root {
                return Err(WalkError::Writable { path: path.clone(), mode: st.st_mode, last });
            }
        }
    }
    Ok(())
}

/// fsync of the directory held by `dir` (an `O_PATH` descriptor, which fsync refuses: the
/// directory is opened again through it, as `.`, for reading).
///
/// Not `fsutil::sync_dir`, which opens the directory by its path: after the walk that path
/// may lead somewhere else (a directory moved away and a link put in its place), and the
/// fsync would make some other directory durable while the entries just written here stay
/// at the mercy of a power failure. Relative to the held descriptor, it is the directory the
/// walk checked and everything was written in.
fn sync_at(dir: &OwnedFd) -> io::Result<()> {
    let d = openat(dir, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    File::from(d).sync_all()
}

fn nofollow(e: Errno, dir: &Dir, name: &OsStr) -> io::Error {
    if matches!(e, Errno::ELOOP) || (e == Errno::ENOTDIR && dir.stat(name).ok().flatten().is_some_and(|st| kind(&st) == SFlag::S_IFLNK)) {
        return io::Error::new(io::ErrorKind::PermissionDenied, WalkError::Symlink { path: dir.join(name) }.to_string());
    }
    e.into()
}

impl Dir {
    /// The path the walk took (what it was when walked: the directory may have been moved since,
    /// the descriptor still refers to it).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
    /// A second descriptor of the same directory.
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of an entry; `None` when there is none.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<FileStat>> {
        match fstatat(&self.fd, name.as_ref(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open an entry with `flags` plus `O_NOFOLLOW|O_CLOEXEC|O_NOCTTY`: a symbolic link is an
    /// error (`PermissionDenied`, saying so).
    pub fn open(&self, name: impl AsRef<OsStr>, flags: OFlag) -> io::Result<File> {
        let name = name.as_ref();
        openat(&self.fd, name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())
            .map(File::from)
            .map_err(|e| nofollow(e, self, name))
    }

    /// Create a new file (never an existing one, never through a link) with exactly `mode`.
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = name.as_ref();
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(mode)).map_err(|e| nofollow(e, self, name))?;
        fchmod(&fd, Mode::from_bits_truncate(mode))?;
        Ok(File::from(fd))
    }

    /// `rename(2)` inside this directory that fails with `AlreadyExists` instead of replacing
    /// `to`: `renameat2(RENAME_NOREPLACE)`, or link + unlink where the filesystem lacks it.
    pub fn rename_noreplace(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        match renameat2(&self.fd, from, &self.fd, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => Ok(()),
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::ENOTSUP) => {
                linkat(&self.fd, from, &self.fd, to, AtFlags::empty())?;
                self.unlink(from)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replace `to` by `from` (both in this directory).
    pub fn rename_over(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        nix::fcntl::renameat(&self.fd, from.as_ref(), &self.fd, to.as_ref()).map_err(io::Error::from)
    }

    /// Remove an entry that is not a directory (a symbolic link itself, never its target).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        unlinkat(&self.fd, name.as_ref(), UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)
    }

    /// Make a subdirectory (missing) with exactly `mode`, or open the existing one, without
    /// following a link; checked like the last step of a walk under `trust`.
    pub fn sub_dir(&self, name: &str, mode: u32, trust: Trust) -> Result<Dir, WalkError> {
        let path = self.join(name);
        let made = match mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(io_at(&path)(e)),
        };
        let fd = openat(&self.fd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| refused(&self.fd, OsStr::new(name), &path, e))?;
        if made {
            fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io_at(&path))?;
        }
        let st = fstat(&fd).map_err(io_at(&path))?;
        let me = fstat(&self.fd).map_err(io_at(&self.path))?;
        check(&[(self.path.clone(), me), (path.clone(), st)], trust, true)?;
        Ok(Dir { fd, path, uid: st.st_uid, gid: st.st_gid })
    }

    /// fsync of the directory: makes the entries created, renamed or removed in it durable.
    pub fn sync(&self) -> io::Result<()> {
        sync_at(&self.fd)
    }

    /// The names in the directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let d = openat(&self.fd, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut d = DirIter::from_fd(d)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(out)
    }

    /// Whom fleetwright acts as ([`act_as`]) for what opens files by path in this directory
    /// (SQLite): its owner, when fleetwright runs as root and the owner is another user; `None`
    /// (fleetwright itself) otherwise.
    pub fn identity(&self) -> Option<Identity> {
        if !geteuid().is_root() || self.uid == 0 {
            return None;
        }
        Some(Identity::of(self.uid, self.gid))
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A user's file-system identity: uid, primary gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// `uid` with its passwd entry's primary group and its groups; a uid without an entry gets
    /// `fallback_gid` alone.
    pub fn of(uid: u32, fallback_gid: u32) -> Identity {
        if let Ok(Some(u)) = nix::unistd::User::from_uid(Uid::from_raw(uid)) {
            let groups = CString::new(u.name.as_bytes())
                .ok()
                .and_then(|n| nix::unistd::getgrouplist(&n, u.gid).ok())
                .map(|g| g.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_else(|| vec![u.gid.as_raw()]);
            return Identity { uid, gid: u.gid.as_raw(), groups };
        }
        Identity { uid, gid: fallback_gid, groups: vec![fallback_gid] }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&user_name(self.uid))
    }
}

/// While alive, this thread's file accesses are checked as another user's (see [`act_as`]).
#[must_use]
pub struct ActingAs {
    saved: Option<(u32, u32, Vec<libc::gid_t>)>,
}

/// The calling thread's supplementary groups, per thread (the raw system call: glibc's
/// `setgroups` changes every thread of the process).
fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of gid_t.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len() as libc::size_t, groups.as_ptr()) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn thread_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: a size query, then a buffer of the size the kernel reported.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut g: Vec<libc::gid_t> = vec![0; n as usize];
    let m = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    g.truncate(m as usize);
    Ok(g)
}

/// Make this thread's file accesses those of `who` (`setfsuid`, `setfsgid` and its groups,
/// for this thread only) until the guard is dropped; `None` changes nothing. With a file-system
/// uid other than 0 the kernel also drops root's file capabilities (`CAP_DAC_OVERRIDE`,
/// `CAP_FOWNER`, ...) from this thread, so a path that was swapped for a link or another file
/// gives access to no more than `who` has. The effective uid stays 0 (the caller can go back).
pub fn act_as(who: Option<&Identity>) -> io::Result<ActingAs> {
    let Some(who) = who else { return Ok(ActingAs { saved: None }) };
    let groups = thread_groups()?;
    set_thread_groups(&who.groups)?;
    let prev_fsgid = nix::unistd::setfsgid(Gid::from_raw(who.gid)).as_raw();
    let prev_fsuid = nix::unistd::setfsuid(Uid::from_raw(who.uid)).as_raw();
    let guard = ActingAs { saved: Some((prev_fsuid, prev_fsgid, groups)) };
    // setfsuid(2) reports no error: ask for the current values (an invalid id changes nothing).
    let now_uid = nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw();
    let now_gid = nix::unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw();
    if now_uid != who.uid || now_gid != who.gid {
        drop(guard);
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("cannot take the file-system identity of {who}")));
    }
    Ok(guard)
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        if let Some((uid, gid, groups)) = self.saved.take() {
            // The file-system ids first; then the groups (setgroups needs CAP_SETGID, which a
            // file-system uid change does not touch).
            nix::unistd::setfsuid(Uid::from_raw(uid));
            nix::unistd::setfsgid(Gid::from_raw(gid));
            if let Err(e) = set_thread_groups(&groups) {
                // Continuing with the wrong groups would be silent damage: stop here.
                eprintln!("fatal: cannot restore this thread's groups: {e}");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn root() -> bool {
        if geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: needs root (ownership and file-system identity)");
        false
    }

    /// A private directory under the system temporary directory (root's, 0700 when root).
    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_plain_directory_is_walked_to_and_operations_are_relative_to_it() {
        let t = tmp();
        let d = t.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(t.path().join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let dir = open_dir(&d, Trust::Root).unwrap();
        assert_eq!(dir.path(), d);
        let mut f = dir.create_new("x", 0o600).unwrap();
        io::Write::write_all(&mut f, b"hi").unwrap();
        assert_eq!(std::fs::metadata(d.join("x")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(dir.create_new("x", 0o600).is_err(), "never an existing file");
        dir.rename_noreplace("x", "y").unwrap();
        assert_eq!(dir.names().unwrap(), vec![OsString::from("y")]);
        std::fs::write(d.join("z"), "").unwrap();
        assert_eq!(dir.rename_noreplace("y", "z").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_symlink_in_the_middle_or_at_the_end_is_refused() {
        let t = tmp();
        std::fs::create_dir_all(t.path().join("real/inner")).unwrap();
        symlink(t.path().join("real"), t.path().join("link")).unwrap();
        let e = open_dir(&t.path().join("link/inner"), Trust::Root).unwrap_err();
        assert!(matches!(&e, WalkError::Symlink { path } if *path == t.path().join("link")), "{e}");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let e = open_dir(&t.path().join("link"), Trust::Root).unwrap_err();
        assert!(matches!(&e, WalkError::Symlink { .. }), "{e}");
        // Not even made through a link.
        let e = make_dir(&t.path().join("link/new"), 0o750, Trust::Root).unwrap_err();
        assert!(matches!(&e, WalkError::Symlink { .. }), "{e}");
        assert!(!t.path().join("real/new").exists());
        // A file opened through the held directory: never through a link at its name.
        symlink(t.path().join("real/target"), t.path().join("real/inner/f")).unwrap();
        let dir = open_dir(&t.path().join("real/inner"), Trust::Root).unwrap();
        let e = dir.open("f", OFlag::O_RDONLY).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let e = dir.create_new("f", 0o600).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link") || e.kind() == io::ErrorKind::AlreadyExists, "{e}");
        assert!(!t.path().join("real/target").exists(), "nothing was created through the link");
        // `..` and relative paths are refused outright.
        assert!(matches!(open_dir(&t.path().join("real/../real"), Trust::Root), Err(WalkError::Invalid { .. })));
        assert!(matches!(open_dir(Path::new("real"), Trust::Root), Err(WalkError::Invalid { .. })));
    }

    #[test]
    fn a_directory_others_can_write_is_refused_on_the_way_and_at_the_end() {
        let t = tmp();
        let d = t.path().join("open/inner");
        std::fs::create_dir_all(&d).unwrap();
        for mode in [0o775, 0o757, 0o777] {
            std::fs::set_permissions(t.path().join("open"), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = open_dir(&d, Trust::Root).unwrap_err();
            assert!(matches!(&e, WalkError::Writable { path, last: false, .. } if *path == t.path().join("open")), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod go-w"), "{e}");
            // Nothing is made below it either.
            assert!(make_dir(&d.join("new"), 0o750, Trust::Root).is_err());
            assert!(!d.join("new").exists());
        }
        std::fs::set_permissions(t.path().join("open"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = open_dir(&d, Trust::Root).unwrap_err();
        assert!(matches!(&e, WalkError::Writable { last: true, .. }), "{e}");
        // Sticky and root's: fine on the way (like /tmp), never at the end.
        if root() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
            std::fs::create_dir(d.join("mine")).unwrap();
            std::fs::set_permissions(d.join("mine"), std::fs::Permissions::from_mode(0o700)).unwrap();
            open_dir(&d.join("mine"), Trust::Root).unwrap();
            assert!(matches!(open_dir(&d, Trust::Root), Err(WalkError::Writable { last: true, .. })));
        }
    }

    #[test]
    fn ownership_root_only_or_the_owner_of_the_last_directory() {
        if !root() {
            return;
        }
        let t = tmp();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let agent = t.path().join("agent");
        let data = agent.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::chown(&agent, Some(4242), Some(4242)).unwrap();
        std::os::unix::fs::chown(&data, Some(4242), Some(4242)).unwrap();
        // Root only: the agent's directory is refused, named.
        let e = open_dir(&data, Trust::Root).unwrap_err();
        assert!(matches!(&e, WalkError::Owner { path, uid: 4242, .. } if *path == agent), "{e}");
        assert!(e.to_string().contains("uid 4242"), "{e}");
        // The owner of the last directory may own the ones above it too.
        let d = open_dir(&data, Trust::Owner).unwrap();
        assert_eq!(d.identity().map(|i| i.uid), Some(4242));
        // ... but not a third user.
        std::os::unix::fs::chown(&agent, Some(4343), Some(4343)).unwrap();
        let e = open_dir(&data, Trust::Owner).unwrap_err();
        assert!(matches!(&e, WalkError::Owner { uid: 4343, .. }), "{e}");
        // A root-owned directory below the agent's: the agent could swap it, refused.
        std::os::unix::fs::chown(&agent, Some(4242), Some(4242)).unwrap();
        std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
        assert!(matches!(open_dir(&data, Trust::Owner), Err(WalkError::Owner { uid: 4242, .. })));
    }

    #[test]
    fn a_directory_swapped_for_a_link_after_the_walk_is_not_followed() {
        let t = tmp();
        let d = t.path().join("d");
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let dir = open_dir(&d, Trust::Root).unwrap();
        // Swapped after the check: the directory moved away, a link in its place.
        std::fs::rename(&d, t.path().join("moved")).unwrap();
        symlink(&elsewhere, &d).unwrap();
        dir.create_new("file", 0o600).unwrap();
        assert!(t.path().join("moved/file").exists(), "written where the walk went");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing through the link");
    }

    #[test]
    fn make_dir_creates_with_the_mode_asked_for() {
        let t = tmp();
        let d = t.path().join("x/y");
        let dir = make_dir(&d, 0o750, Trust::Root).unwrap();
        assert_eq!(dir.path(), d);
        for p in [t.path().join("x"), d.clone()] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o750, "{}", p.display());
        }
        // Existing: left as it is.
        make_dir(&d, 0o700, Trust::Root).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777, 0o750);
    }

    #[test]
    fn acting_as_another_user_is_per_thread_and_ends_with_the_guard() {
        if !root() {
            return;
        }
        let t = tmp();
        let secret = t.path().join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let who = Identity { uid: 4242, gid: 4242, groups: vec![4242] };
        // Another thread, started before (a new thread starts with its creator's identity).
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel::<bool>();
        let s = secret.clone();
        let other = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                tell.send(File::open(&s).is_ok()).unwrap();
            }
        });
        {
            let _as = act_as(Some(&who)).unwrap();
            let e = File::open(&secret).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "root's file capabilities are gone, root's group too");
            // The other thread of the process is still root.
            ask.send(()).unwrap();
            assert!(told.recv().unwrap(), "only this thread acts as the user");
            // What is created is the user's.
            std::fs::create_dir(t.path().join("w")).unwrap_err();
        }
        File::open(&secret).unwrap();
        assert!(!thread_groups().unwrap().contains(&4242));
        drop(ask);
        other.join().unwrap();
        // `None`: nothing changes.
        let _as = act_as(None).unwrap();
        File::open(&secret).unwrap();
    }
}
