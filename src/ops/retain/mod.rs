//! Log-retention engine (run by the cleanup timer).
//!
//! A [`Rule`] names a directory (optionally with `*` standing for one whole
//! path level, e.g. `/srv/groups/*/logs`), a glob on file *names*, and up to
//! three limits. [`apply`] enforces them, per directory: `max_age`, then `max_files`, then
//! `max_size`, and what goes is always the oldest files, a prefix of the directory's matching
//! files sorted by (mtime, name). Which files that is, and why, is decided by `select.rs`
//! from what was listed, with no file system (its docs say exactly how); this file walks to
//! the directories, lists them and carries the decision out. (Deletes are carried out in
//! directory order, which is much cheaper on hashed ext4 directories; the report lists them
//! oldest first.)
//!
//! # Safety model
//!
//! * Symlinks are never followed. The directory path is resolved component by
//!   component from `/` with `openat(O_NOFOLLOW|O_DIRECTORY)`; a symlinked
//!   component makes the rule fail for that directory (reported in
//!   `errors`), a symlink matched by a `*` level is skipped (counted in
//!   `skipped_symlinks`). Symlinks inside the log directory are neither
//!   deleted, counted nor followed (those whose name matches the pattern are
//!   counted in `skipped_symlinks`).
//! * All stats and deletes are relative to the directory's file descriptor
//!   (`fstatat`/`unlinkat`), so a directory swapped for a symlink while the
//!   run is in progress cannot redirect a delete. Right before each unlink the
//!   entry is re-checked with `fstatat(AT_SYMLINK_NOFOLLOW)`: it must still be
//!   a regular file with the same device, inode and mtime as when listed
//!   (otherwise it was replaced or written to meanwhile and is left alone).
//! * Directories are never deleted (`unlinkat` without `AT_REMOVEDIR`, and
//!   directories are never candidates); there is no recursion.
//! * Files vanishing underneath (ENOENT) are counted in `vanished`; other
//!   per-file failures go to `errors` and the run continues.
//! * Glob matching follows shell conventions: a leading `.` must be matched
//!   literally, so `*` matches neither hidden files nor hidden directories.
//!
//! Linux only (uses `O_PATH`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

mod select;

use select::{Limits, Listed, select};
pub use select::{REASON_MAX_AGE, REASON_MAX_FILES, REASON_MAX_SIZE};

/// One `logs:` entry of the user's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Absolute directory path, no `..`; a component `*` stands for exactly
    /// one path level (any component containing `*`, `?` or `[` is a glob on
    /// that level's directory names).
    pub path: String,
    /// Glob on file names (no `/`). Empty means `*`.
    pub pattern: String,
    pub max_age: Option<Duration>,
    pub max_files: Option<u64>,
    pub max_size: Option<u64>,
}

impl Rule {
    /// A rule for `path` matching every (non-hidden) file, with no limits.
    pub fn new(path: impl Into<String>) -> Rule {
        Rule { path: path.into(), pattern: "*".into(), max_age: None, max_files: None, max_size: None }
    }
}

/// A file that was (or, in a dry run, would be) removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub path: String,
    pub bytes: u64,
    /// `"max-age"`, `"max-files"` or `"max-size"`.
    pub reason: &'static str,
}

/// What a run did. `kept` counts matching regular files left in place, so
/// `examined == kept + removed.len() + (files that vanished before their unlink)`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    /// Directories processed (after `*` expansion).
    pub directories: u64,
    /// Matching regular files found.
    pub examined: u64,
    /// Removed (or, in a dry run, to-be-removed) files, oldest first per directory.
    pub removed: Vec<Removed>,
    /// Bytes freed (or that would be freed).
    pub freed: u64,
    pub kept: u64,
    /// Symlinks that were skipped: matching entries in a log directory, and
    /// entries matched by a `*` path level.
    pub skipped_symlinks: u64,
    /// Entries that disappeared between listing and stat/unlink.
    pub vanished: u64,
    /// Problems that need attention (permission errors, refused symlinked
    /// path components, unreadable directories...).
    pub errors: Vec<String>,
    /// Informational messages (missing directory, entries that changed
    /// underneath and were left alone...).
    pub notes: Vec<String>,
    pub dry_run: bool,
}

impl Report {
    /// Adds `other` (e.g. the report of another rule) into `self`.
    pub fn merge(&mut self, other: Report) {
        self.directories = self.directories.saturating_add(other.directories);
        self.examined = self.examined.saturating_add(other.examined);
        self.removed.extend(other.removed);
        self.freed = self.freed.saturating_add(other.freed);
        self.kept = self.kept.saturating_add(other.kept);
        self.skipped_symlinks = self.skipped_symlinks.saturating_add(other.skipped_symlinks);
        self.vanished = self.vanished.saturating_add(other.vanished);
        self.errors.extend(other.errors);
        self.notes.extend(other.notes);
        self.dry_run |= other.dry_run;
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Apply `rule` at time `now`. With dry_run nothing is deleted (the report says what would be).
///
/// Returns `Err(InvalidInput)` for a relative path, a path with `..`, a NUL
/// byte, or an invalid glob; `Err` if `/` itself cannot be opened. Everything
/// else (missing directory, symlinked component, permission problems) is
/// reported in the [`Report`].
pub fn apply(rule: &Rule, now: SystemTime, dry_run: bool) -> io::Result<Report> {
    apply_with_hook(rule, now, dry_run, &mut |_| {})
}

/// [`apply`] with a hook called once per directory, after the directory has
/// been listed and the deletions planned, right before they are carried out
/// (with the directory's display path). Used by tests to simulate races.
fn apply_with_hook(rule: &Rule, now: SystemTime, dry_run: bool, hook: &mut dyn FnMut(&str)) -> io::Result<Report> {
    let components = parse_dir_path(&rule.path)?;
    let pattern = parse_name_pattern(&rule.pattern)?;
    let limits = Limits::new(rule, now);
    let root = open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("cannot open /: {e}")))?;
    let mut ctx = Ctx { pattern, limits, dry_run, report: Report { dry_run, ..Report::default() }, hook };
    ctx.walk(&root, String::new(), &components, false);
    Ok(ctx.report)
}

// ---------------------------------------------------------------------------
// Parsing

enum Component {
    Literal(CString),
    Glob(glob::Pattern),
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn match_options() -> glob::MatchOptions {
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true }
}

fn parse_dir_path(path: &str) -> io::Result<Vec<Component>> {
    if !path.starts_with('/') {
        return Err(invalid(format!("log path {path:?} is not absolute")));
    }
    if path.contains('\0') {
        return Err(invalid(format!("log path {path:?} contains a NUL byte")));
    }
    let mut out = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(invalid(format!("log path {path:?} contains '..'"))),
            c if c.contains(['*', '?', '[']) => {
                let p = glob::Pattern::new(c).map_err(|e| invalid(format!("log path {path:?}: bad glob {c:?}: {e}")))?;
                out.push(Component::Glob(p));
            }
            c => {
                let c = CString::new(c).map_err(|_| invalid(format!("log path {path:?} contains a NUL byte")))?;
                out.push(Component::Literal(c));
            }
        }
    }
    Ok(out)
}

fn parse_name_pattern(pattern: &str) -> io::Result<Option<glob::Pattern>> {
    let pattern = if pattern.is_empty() { "*" } else { pattern };
    if pattern.contains('/') || pattern.contains('\0') {
        return Err(invalid(format!("match pattern {pattern:?} must be a file-name glob (no '/')")));
    }
    let p = glob::Pattern::new(pattern).map_err(|e| invalid(format!("bad match pattern {pattern:?}: {e}")))?;
    Ok(Some(p))
}

fn name_matches(pattern: &glob::Pattern, name: &CStr) -> bool {
    match name.to_str() {
        Ok(s) => pattern.matches_with(s, match_options()),
        Err(_) => pattern.matches_with(&String::from_utf8_lossy(name.to_bytes()), match_options()),
    }
}

fn join(dir: &str, name: &CStr) -> String {
    format!("{dir}/{}", String::from_utf8_lossy(name.to_bytes()))
}

fn shown(dir: &str) -> &str {
    if dir.is_empty() { "/" } else { dir }
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

fn mtime_ns(st: &FileStat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

// ---------------------------------------------------------------------------
// Engine

/// A listed file's identity: what the re-check before its unlink compares.
struct Identity {
    dev: u64,
    ino: u64,
}

struct Ctx<'h> {
    pattern: Option<glob::Pattern>,
    limits: Limits,
    dry_run: bool,
    report: Report,
    hook: &'h mut dyn FnMut(&str),
}

const DIR_FLAGS: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);

impl Ctx<'_> {
    /// `dir` is an O_PATH descriptor of the directory shown as `shown_path`;
    /// resolve `rest` below it and process every resulting directory.
    /// `below_glob`: a `*` level was matched above: one of the directories it matched that
    /// is not what the rest of the path needs (a symlink, a missing `logs`) is skipped with
    /// a note, not an error: the other matches are cleaned all the same.
    fn walk(&mut self, dir: &OwnedFd, shown_path: String, rest: &[Component], below_glob: bool) {
        let Some((first, rest)) = rest.split_first() else {
            self.process_dir(dir, &shown_path);
            return;
        };
        match first {
            Component::Literal(name) => {
                let child_path = join(&shown_path, name);
                match openat(dir, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                    Ok(child) => self.walk(&child, child_path, rest, below_glob),
                    Err(_) if below_glob && is_symlink(dir, name) => {
                        self.report.skipped_symlinks += 1;
                        self.report.notes.push(format!("{child_path}: symlink, not followed"));
                    }
                    Err(e) => self.open_failed(dir, name, &child_path, e),
                }
            }
            Component::Glob(pattern) => {
                let mut names = Vec::new();
                let listed = self.list(dir, &shown_path, |ctx, ent| {
                    let name = ent.file_name();
                    if is_dot(name) || !name_matches(pattern, name) {
                        return;
                    }
                    match ent.file_type() {
                        Some(Type::Directory) | None => names.push(name.to_owned()),
                        Some(Type::Symlink) => {
                            ctx.report.skipped_symlinks += 1;
                            ctx.report.notes.push(format!("{}: symlink, not followed", join(&shown_path, name)));
                        }
                        Some(_) => {}
                    }
                });
                if !listed {
                    return;
                }
                names.sort_unstable();
                for name in names {
                    let child_path = join(&shown_path, &name);
                    match openat(dir, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                        Ok(child) => self.walk(&child, child_path, rest, true),
                        Err(Errno::ENOENT) => {} // vanished meanwhile
                        Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(dir, &name) => {
                            self.report.skipped_symlinks += 1;
                            self.report.notes.push(format!("{child_path}: symlink, not followed"));
                        }
                        Err(Errno::ENOTDIR) => {} // d_type was unknown: not a directory
                        Err(e) => self.report.errors.push(format!("{child_path}: cannot open: {e}")),
                    }
                }
            }
        }
    }

    fn open_failed(&mut self, parent: &OwnedFd, name: &CStr, path: &str, e: Errno) {
        match e {
            Errno::ENOENT => self.report.notes.push(format!("{path}: does not exist, nothing to do")),
            Errno::ELOOP | Errno::ENOTDIR if is_symlink(parent, name) => {
                self.report.errors.push(format!("{path}: is a symlink; refusing to follow it (use the real path)"))
            }
            Errno::ENOTDIR => self.report.errors.push(format!("{path}: not a directory")),
            e => self.report.errors.push(format!("{path}: cannot open: {e}")),
        }
    }

    /// Reads the directory `dir` (an O_PATH fd) calling `f` for every entry.
    /// Returns false (after recording an error) if it could not be read fully.
    fn list(&mut self, dir: &OwnedFd, path: &str, mut f: impl FnMut(&mut Self, &nix::dir::Entry)) -> bool {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut d = match openat(dir, c".", flags, Mode::empty()).and_then(Dir::from_fd) {
            Ok(d) => d,
            Err(e) => {
                self.report.errors.push(format!("{}: cannot read directory: {e}", shown(path)));
                return false;
            }
        };
        for ent in d.iter() {
            match ent {
                Ok(ent) => f(self, &ent),
                Err(e) => {
                    self.report.errors.push(format!("{}: reading directory failed, skipped: {e}", shown(path)));
                    return false;
                }
            }
        }
        true
    }

    fn process_dir(&mut self, dir: &OwnedFd, path: &str) {
        self.report.directories += 1;
        // What `select` decides on, and beside it (same index) what the re-check compares.
        let mut files: Vec<Listed> = Vec::new();
        let mut ids: Vec<Identity> = Vec::new();
        let pattern = self.pattern.take();
        let listed = self.list(dir, path, |ctx, ent| {
            let name = ent.file_name();
            if is_dot(name) || !pattern.as_ref().is_none_or(|p| name_matches(p, name)) {
                return;
            }
            match ent.file_type() {
                Some(Type::File) | None => {}
                Some(Type::Symlink) => {
                    ctx.report.skipped_symlinks += 1;
                    return;
                }
                Some(_) => return, // directories, fifos, sockets, devices
            }
            match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => match file_kind(&st) {
                    SFlag::S_IFREG => {
                        files.push(Listed { name: name.to_owned(), mtime: mtime_ns(&st), size: u64::try_from(st.st_size).unwrap_or(0) });
                        ids.push(Identity { dev: st.st_dev, ino: st.st_ino });
                    }
                    SFlag::S_IFLNK => ctx.report.skipped_symlinks += 1,
                    _ => {}
                },
                Err(Errno::ENOENT) => ctx.report.vanished += 1,
                Err(e) => ctx.report.errors.push(format!("{}: cannot stat: {e}", join(path, name))),
            }
        });
        self.pattern = pattern;
        if !listed {
            return;
        }
        let examined = files.len() as u64;
        self.report.examined += examined;

        // The doomed set is fixed now, in directory (readdir) order, which on hashed
        // directories (ext4 htree) is markedly cheaper than mtime order; the report is put
        // back in oldest-first order.
        let doomed = select(&files, &self.limits);

        (self.hook)(shown(path));

        let mut removed: Vec<(usize, Removed)> = Vec::with_capacity(doomed.len());
        let mut vanished_here = 0u64;
        for d in doomed {
            let (f, id) = (&files[d.index], &ids[d.index]);
            let full = || join(path, &f.name);
            if self.dry_run {
                removed.push((d.rank, Removed { path: full(), bytes: f.size, reason: d.reason }));
                continue;
            }
            // Re-check right before unlinking: still the same regular file?
            let st = match fstatat(dir, f.name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => {
                    vanished_here += 1;
                    continue;
                }
                Err(e) => {
                    self.report.errors.push(format!("{}: cannot stat: {e}", full()));
                    continue;
                }
            };
            if file_kind(&st) != SFlag::S_IFREG || st.st_dev != id.dev || st.st_ino != id.ino || mtime_ns(&st) != f.mtime {
                self.report.notes.push(format!("{}: replaced or modified since it was listed, left alone", full()));
                continue;
            }
            match unlinkat(dir, f.name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => {
                    let bytes = u64::try_from(st.st_size).unwrap_or(0);
                    removed.push((d.rank, Removed { path: full(), bytes, reason: d.reason }));
                }
                Err(Errno::ENOENT) => vanished_here += 1,
                Err(e) => self.report.errors.push(format!("{}: cannot delete: {e}", full())),
            }
        }
        removed.sort_unstable_by_key(|(rank, _)| *rank);
        let removed_here = removed.len() as u64;
        for (_, r) in removed {
            self.report.freed = self.report.freed.saturating_add(r.bytes);
            self.report.removed.push(r);
        }
        self.report.vanished += vanished_here;
        self.report.kept += examined.saturating_sub(removed_here).saturating_sub(vanished_here);
    }
}

fn is_symlink(dir: &impl AsFd, name: &CStr) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| file_kind(&st) == SFlag::S_IFLNK)
}

// ---------------------------------------------------------------------------
// Tests

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::time::UNIX_EPOCH;

    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        // A fixed "now" keeps the tests independent of the wall clock.
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// Creates `dir/name` with `size` bytes and mtime `now() - age_secs`.
    fn mkfile(dir: &Path, name: &str, size: usize, age_secs: u64) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, vec![b'x'; size]).unwrap();
        set_age(&p, age_secs);
        p
    }

    fn set_age(p: &Path, age_secs: u64) {
        let t = nix::sys::time::TimeSpec::new((1_700_000_000 - age_secs) as i64, 0);
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rule(dir: &Path) -> Rule {
        Rule::new(dir.to_str().unwrap())
    }

    /// a.log..f.log, 10 bytes each, ages 1..6 days (a newest).
    fn six_files(dir: &Path) {
        for (i, n) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
            mkfile(dir, &format!("{n}.log"), 10, (i as u64 + 1) * DAY);
        }
    }

    #[test]
    fn max_age_alone() {
        let t = tempfile::tempdir().unwrap();
        six_files(t.path());
        // Exactly at the cutoff is not "older than".
        let r = apply(&Rule { max_age: Some(Duration::from_secs(3 * DAY)), ..rule(t.path()) }, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["a.log", "b.log", "c.log"]));
        assert_eq!(r.removed.len(), 3);
        assert!(r.removed.iter().all(|x| x.reason == REASON_MAX_AGE));
        assert_eq!((r.examined, r.kept, r.freed, r.directories), (6, 3, 30, 1));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // Removed oldest first.
        assert!(r.removed[0].path.ends_with("/f.log"));
    }

    #[test]
    fn max_files_alone_with_ties_by_name() {
        let t = tempfile::tempdir().unwrap();
        six_files(t.path());
        mkfile(t.path(), "c2.log", 10, 3 * DAY); // same mtime as c.log, greater name -> newer
        let r = apply(&Rule { max_files: Some(3), ..rule(t.path()) }, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["a.log", "b.log", "c2.log"]));
        assert!(r.removed.iter().all(|x| x.reason == REASON_MAX_FILES));
        assert_eq!((r.examined, r.kept, r.removed.len()), (7, 3, 4));
        // max_files = 0 removes everything; far more than present removes nothing.
        let r = apply(&Rule { max_files: Some(100), ..rule(t.path()) }, now(), false).unwrap();
        assert!(r.removed.is_empty());
        apply(&Rule { max_files: Some(0), ..rule(t.path()) }, now(), false).unwrap();
        assert!(names(t.path()).is_empty());
    }

    #[test]
    fn max_size_alone() {
        let t = tempfile::tempdir().unwrap();
        mkfile(t.path(), "new.log", 100, DAY);
        mkfile(t.path(), "mid.log", 50, 2 * DAY);
        mkfile(t.path(), "old.log", 30, 3 * DAY);
        mkfile(t.path(), "older.log", 1, 4 * DAY);
        // total 181; cap 150: drop older (180), old (150) -> fits exactly.
        let r = apply(&Rule { max_size: Some(150), ..rule(t.path()) }, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["new.log", "mid.log"]));
        assert!(r.removed.iter().all(|x| x.reason == REASON_MAX_SIZE));
        assert_eq!(r.freed, 31);
        // Cap smaller than the newest file: everything goes.
        apply(&Rule { max_size: Some(99), ..rule(t.path()) }, now(), false).unwrap();
        assert!(names(t.path()).is_empty());
    }

    #[test]
    fn all_three_combined() {
        let t = tempfile::tempdir().unwrap();
        // ages in days / sizes
        for (name, age, size) in
            [("f01", 1, 40), ("f02", 2, 40), ("f03", 3, 40), ("f04", 4, 40), ("f05", 5, 40), ("f06", 6, 40), ("f07", 7, 40), ("f08", 20, 40), ("f09", 21, 40)]
        {
            mkfile(t.path(), name, size, age * DAY);
        }
        let r = Rule {
            max_age: Some(Duration::from_secs(14 * DAY)), // f08, f09
            max_files: Some(5),                           // f06, f07 (of f01..f07)
            max_size: Some(130),                          // f01..f05 = 200 -> drop f05, f04 = 120
            ..rule(t.path())
        };
        let dry = apply(&r, now(), true).unwrap();
        let rep = apply(&r, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["f01", "f02", "f03"]));
        let reasons: Vec<(String, &str)> =
            rep.removed.iter().map(|x| (Path::new(&x.path).file_name().unwrap().to_str().unwrap().to_string(), x.reason)).collect();
        let expect: Vec<(String, &str)> = [
            ("f09", REASON_MAX_AGE),
            ("f08", REASON_MAX_AGE),
            ("f07", REASON_MAX_FILES),
            ("f06", REASON_MAX_FILES),
            ("f05", REASON_MAX_SIZE),
            ("f04", REASON_MAX_SIZE),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), *b))
        .collect();
        assert_eq!(reasons, expect);
        assert_eq!((rep.examined, rep.kept, rep.freed), (9, 3, 240));
        assert_eq!(dry.removed, rep.removed);
    }

    #[test]
    fn star_level_groups_are_independent() {
        let t = tempfile::tempdir().unwrap();
        let groups = t.path().join("groups");
        for g in ["alpha", "beta", "gamma"] {
            let logs = groups.join(g).join("logs");
            fs::create_dir_all(&logs).unwrap();
            six_files(&logs);
        }
        fs::create_dir_all(groups.join("nologs")).unwrap(); // no logs dir: fine
        fs::write(groups.join("plainfile"), "x").unwrap(); // not a directory: ignored
        fs::create_dir_all(groups.join(".hidden/logs")).unwrap(); // `*` skips hidden
        mkfile(&groups.join(".hidden/logs"), "x.log", 1, 100 * DAY);
        // A symlinked group pointing outside must not be followed.
        let outside = t.path().join("outside/logs");
        fs::create_dir_all(&outside).unwrap();
        mkfile(&outside, "victim.log", 1, 100 * DAY);
        symlink(t.path().join("outside"), groups.join("evil")).unwrap();

        let path = format!("{}/*/logs", groups.to_str().unwrap());
        let r = apply(&Rule { max_files: Some(2), ..Rule::new(path) }, now(), false).unwrap();
        for g in ["alpha", "beta", "gamma"] {
            assert_eq!(names(&groups.join(g).join("logs")), set(&["a.log", "b.log"]), "group {g}");
        }
        assert_eq!(names(&outside), set(&["victim.log"]));
        assert_eq!(names(&groups.join(".hidden/logs")), set(&["x.log"]));
        assert_eq!((r.directories, r.examined, r.kept, r.removed.len()), (3, 18, 6, 12));
        assert_eq!(r.skipped_symlinks, 1);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }

    #[test]
    fn match_glob_limits_candidates() {
        let t = tempfile::tempdir().unwrap();
        mkfile(t.path(), "agent-1.log", 10, 30 * DAY);
        mkfile(t.path(), "agent-2.log", 10, DAY);
        mkfile(t.path(), "agent-3.log.gz", 10, 30 * DAY);
        mkfile(t.path(), "server-1.log", 10, 30 * DAY);
        mkfile(t.path(), ".agent-9.log", 10, 30 * DAY);
        let r = Rule { pattern: "agent-*.log".into(), max_age: Some(Duration::from_secs(14 * DAY)), ..rule(t.path()) };
        let rep = apply(&r, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["agent-2.log", "agent-3.log.gz", "server-1.log", ".agent-9.log"]));
        assert_eq!((rep.examined, rep.removed.len()), (2, 1));
        // Default pattern: everything except hidden files.
        let rep = apply(&Rule { max_files: Some(0), pattern: String::new(), ..rule(t.path()) }, now(), false).unwrap();
        assert_eq!(rep.removed.len(), 3);
        assert_eq!(names(t.path()), set(&[".agent-9.log"]));
    }

    #[test]
    fn symlinks_inside_and_their_targets_survive() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        let outside = t.path().join("outside");
        fs::create_dir_all(&logs).unwrap();
        fs::create_dir_all(outside.join("dir")).unwrap();
        let target_file = mkfile(&outside, "target.log", 1000, 100 * DAY);
        mkfile(&outside.join("dir"), "inner.log", 1000, 100 * DAY);
        symlink(&target_file, logs.join("link-file.log")).unwrap();
        symlink(outside.join("dir"), logs.join("link-dir.log")).unwrap();
        symlink("/nonexistent/dangling", logs.join("dangling.log")).unwrap();
        mkfile(&logs, "real.log", 10, 100 * DAY);
        for dry in [true, false] {
            let r = Rule { pattern: "*.log".into(), max_age: Some(Duration::ZERO), max_files: Some(0), max_size: Some(0), ..rule(&logs) };
            let rep = apply(&r, now(), dry).unwrap();
            assert_eq!(rep.skipped_symlinks, 3);
            assert_eq!(rep.examined, 1);
            assert_eq!(rep.removed.len(), 1);
            assert_eq!(rep.freed, 10); // symlinks never counted
        }
        assert_eq!(names(&logs), set(&["link-file.log", "link-dir.log", "dangling.log"]));
        assert_eq!(fs::metadata(&target_file).unwrap().len(), 1000);
        assert_eq!(names(&outside.join("dir")), set(&["inner.log"]));
        // A rule pointing *at* the outside dir through the symlink is refused.
        let rep = apply(&Rule { max_files: Some(0), ..rule(&logs.join("link-dir.log")) }, now(), false).unwrap();
        assert_eq!(rep.directories, 0);
        assert!(rep.errors[0].contains("symlink"), "{:?}", rep.errors);
        assert_eq!(names(&outside.join("dir")), set(&["inner.log"]));
    }

    #[test]
    fn symlinked_path_component_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real/logs");
        fs::create_dir_all(&real).unwrap();
        mkfile(&real, "old.log", 10, 100 * DAY);
        symlink(t.path().join("real"), t.path().join("link")).unwrap();
        let r = Rule { max_files: Some(0), ..rule(&t.path().join("link/logs")) };
        for dry in [true, false] {
            let rep = apply(&r, now(), dry).unwrap();
            assert_eq!((rep.directories, rep.examined), (0, 0));
            assert!(rep.removed.is_empty());
            assert_eq!(rep.errors.len(), 1);
            assert!(rep.errors[0].contains("symlink"), "{:?}", rep.errors);
        }
        assert_eq!(names(&real), set(&["old.log"]));
        // The real path works.
        let rep = apply(&Rule { max_files: Some(0), ..rule(&real) }, now(), false).unwrap();
        assert_eq!(rep.removed.len(), 1);
        // A file in the middle of the path is an error, not a panic.
        fs::write(t.path().join("file"), "x").unwrap();
        let rep = apply(&Rule { max_files: Some(0), ..rule(&t.path().join("file/logs")) }, now(), false).unwrap();
        assert!(rep.errors[0].contains("not a directory"), "{:?}", rep.errors);
    }

    #[test]
    fn subdirectories_survive() {
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join("agent-old.log");
        fs::create_dir(&sub).unwrap();
        mkfile(&sub, "agent-inner.log", 10, 100 * DAY);
        set_age(&sub, 100 * DAY);
        mkfile(t.path(), "agent-1.log", 10, 100 * DAY);
        let r = Rule { pattern: "agent-*".into(), max_age: Some(Duration::ZERO), max_files: Some(0), max_size: Some(0), ..rule(t.path()) };
        let rep = apply(&r, now(), false).unwrap();
        assert_eq!(names(t.path()), set(&["agent-old.log"]));
        assert_eq!(names(&sub), set(&["agent-inner.log"]));
        assert_eq!((rep.examined, rep.removed.len()), (1, 1));
    }

    #[test]
    fn dry_run_deletes_nothing_and_reports_the_same_set() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..50u64 {
            mkfile(t.path(), &format!("{i:03}.log"), (i as usize) * 7, i * 3600 * 7);
        }
        let before = names(t.path());
        let r = Rule {
            max_age: Some(Duration::from_secs(10 * DAY)),
            max_files: Some(20),
            max_size: Some(1000), // f19, f18, f17 (1330 -> 952)
            ..rule(t.path())
        };
        let dry = apply(&r, now(), true).unwrap();
        assert!(dry.dry_run);
        assert_eq!(names(t.path()), before);
        assert!(!dry.removed.is_empty());
        let real = apply(&r, now(), false).unwrap();
        assert_eq!(dry.removed, real.removed);
        assert_eq!((dry.freed, dry.kept, dry.examined), (real.freed, real.kept, real.examined));
        assert_eq!(names(t.path()).len() as u64, real.kept);
        for reason in [REASON_MAX_AGE, REASON_MAX_FILES, REASON_MAX_SIZE] {
            assert!(real.removed.iter().any(|x| x.reason == reason), "no {reason}");
        }
    }

    #[test]
    fn files_vanishing_mid_run_are_tolerated() {
        let t = tempfile::tempdir().unwrap();
        six_files(t.path());
        let dir = t.path().to_path_buf();
        let mut hook = |_: &str| {
            fs::remove_file(dir.join("f.log")).unwrap();
            fs::remove_file(dir.join("d.log")).unwrap();
        };
        let r = Rule { max_files: Some(2), ..rule(t.path()) };
        let rep = apply_with_hook(&r, now(), false, &mut hook).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.vanished, 2);
        assert_eq!(rep.removed.len(), 2); // e, c
        assert_eq!(rep.kept, 2);
        assert_eq!(names(t.path()), set(&["a.log", "b.log"]));
    }

    #[test]
    fn concurrent_applies_on_the_same_tree() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..3000u64 {
            mkfile(t.path(), &format!("{i:05}.log"), 1, i * 60 + 1);
        }
        let r = Rule { max_files: Some(1000), ..rule(t.path()) };
        let reports: Vec<Report> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2).map(|_| s.spawn(|| apply(&r, now(), false).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all = BTreeSet::new();
        for rep in &reports {
            assert!(rep.errors.is_empty(), "{:?}", rep.errors);
            for x in &rep.removed {
                assert!(all.insert(x.path.clone()), "removed twice: {}", x.path);
            }
        }
        assert_eq!(all.len(), 2000);
        let expect: BTreeSet<String> = (0..1000u64).map(|i| format!("{i:05}.log")).collect();
        assert_eq!(names(t.path()), expect);
    }

    #[test]
    fn directory_swapped_for_symlink_mid_run_cannot_redirect_deletes() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        let outside = t.path().join("outside");
        fs::create_dir_all(&logs).unwrap();
        fs::create_dir_all(&outside).unwrap();
        six_files(&logs);
        six_files(&outside);
        let (l, o, moved) = (logs.clone(), outside.clone(), t.path().join("logs.moved"));
        let mut hook = |_: &str| {
            fs::rename(&l, &moved).unwrap();
            symlink(&o, &l).unwrap();
        };
        let r = Rule { max_files: Some(1), ..rule(&logs) };
        let rep = apply_with_hook(&r, now(), false, &mut hook).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.removed.len(), 5);
        assert_eq!(names(&outside), set(&["a.log", "b.log", "c.log", "d.log", "e.log", "f.log"]));
        assert_eq!(names(&t.path().join("logs.moved")), set(&["a.log"]));
    }

    #[test]
    fn file_swapped_for_symlink_or_replaced_mid_run_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        six_files(&logs);
        let target = mkfile(t.path(), "precious", 5, 100 * DAY);
        let (l, tg) = (logs.clone(), target.clone());
        let mut hook = |_: &str| {
            fs::remove_file(l.join("f.log")).unwrap();
            symlink(&tg, l.join("f.log")).unwrap(); // now a symlink
            fs::remove_file(l.join("e.log")).unwrap();
            fs::write(l.join("e.log"), "new").unwrap(); // new inode
        };
        let r = Rule { max_files: Some(0), ..rule(&logs) };
        let rep = apply_with_hook(&r, now(), false, &mut hook).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.removed.len(), 4);
        assert_eq!(rep.notes.len(), 2, "{:?}", rep.notes);
        assert_eq!(names(&logs), set(&["e.log", "f.log"]));
        assert!(fs::symlink_metadata(logs.join("f.log")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"xxxxx");
    }

    #[test]
    fn invalid_input_is_rejected() {
        for p in ["relative/logs", "", "/srv/../etc", "/srv/logs/..", "/srv/lo\0gs", "/srv/[/logs"] {
            let e = apply(&Rule::new(p), now(), true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}");
        }
        for pat in ["a/b", "[", "x\0"] {
            let e = apply(&Rule { pattern: pat.into(), ..Rule::new("/tmp") }, now(), true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{pat:?}");
        }
        // `..` inside a name is fine.
        assert!(apply(&Rule::new("/nonexistent/a..b"), now(), true).is_ok());
    }

    #[test]
    fn missing_directory_is_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        let rep = apply(&Rule { max_files: Some(0), ..rule(&t.path().join("nope/logs")) }, now(), false).unwrap();
        assert!(rep.errors.is_empty());
        assert_eq!((rep.directories, rep.examined), (0, 0));
        assert_eq!(rep.notes.len(), 1);
        let rep = apply(&Rule::new(format!("{}/*/logs", t.path().display())), now(), false).unwrap();
        assert!(rep.errors.is_empty() && rep.directories == 0);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { nix::libc::geteuid() == 0 }
    }

    /// Per-thread fsuid (raw syscall, not broadcast to other threads).
    fn set_fsuid(uid: u32) {
        unsafe { nix::libc::syscall(nix::libc::SYS_setfsuid, uid as nix::libc::c_long) };
    }

    #[test]
    fn permission_error_on_one_file_does_not_stop_the_run() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let logs = t.path().join("logs");
        fs::create_dir(&logs).unwrap();
        six_files(&logs);
        if is_root() {
            // Sticky, world-writable dir: an unprivileged user may delete its
            // own files only. c.log stays root's.
            fs::set_permissions(&logs, fs::Permissions::from_mode(0o1777)).unwrap();
            for n in ["a", "b", "d", "e", "f"] {
                std::os::unix::fs::lchown(logs.join(format!("{n}.log")), Some(65534), Some(65534)).unwrap();
            }
            let r = Rule { max_files: Some(0), ..rule(&logs) };
            let rep = std::thread::spawn(move || {
                set_fsuid(65534);
                apply(&r, now(), false).unwrap()
            })
            .join()
            .unwrap();
            assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
            assert!(rep.errors[0].contains("c.log"));
            assert_eq!(rep.removed.len(), 5);
            assert_eq!(rep.kept, 1);
            assert_eq!(names(&logs), set(&["c.log"]));
        } else {
            // Unprivileged: a read-only directory fails every delete, each
            // reported, and nothing panics.
            fs::set_permissions(&logs, fs::Permissions::from_mode(0o555)).unwrap();
            let rep = apply(&Rule { max_files: Some(0), ..rule(&logs) }, now(), false).unwrap();
            fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(rep.errors.len(), 6, "{:?}", rep.errors);
            assert_eq!(rep.kept, 6);
        }
    }

    #[test]
    fn unreadable_directory_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let logs = t.path().join("logs");
        fs::create_dir(&logs).unwrap();
        six_files(&logs);
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o311)).unwrap(); // no read
        let r = Rule { max_files: Some(0), ..rule(&logs) };
        let rep = std::thread::spawn(move || {
            if is_root() {
                set_fsuid(65534);
            }
            apply(&r, now(), false).unwrap()
        })
        .join()
        .unwrap();
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert_eq!(names(&logs).len(), 6);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        mkfile(t.path(), "a.log", 10, DAY);
        fs::write(t.path().join(OsStr::from_bytes(b"bad-\xff-name.log")), "xx").unwrap();
        let extremes = [UNIX_EPOCH, UNIX_EPOCH - Duration::from_secs(1 << 40), UNIX_EPOCH + Duration::from_secs(1 << 40)];
        for now in extremes {
            for age in [Duration::ZERO, Duration::MAX] {
                let r = Rule { max_age: Some(age), max_files: Some(u64::MAX), max_size: Some(u64::MAX), ..rule(t.path()) };
                let rep = apply(&r, now, true).unwrap();
                assert_eq!(rep.examined, 2);
            }
        }
        let rep = apply(&Rule { max_files: Some(0), ..rule(t.path()) }, now(), false).unwrap();
        assert_eq!(rep.removed.len(), 2);
        assert!(rep.removed.iter().any(|x| x.path.contains('\u{fffd}')));
        // The root as log dir, dry run, pattern that matches nothing.
        let rep = apply(&Rule { pattern: "fleetwright-no-such-*".into(), max_files: Some(0), ..Rule::new("/") }, now(), true).unwrap();
        assert_eq!((rep.directories, rep.examined), (1, 0));
        // Report serializes.
        let json = rep.to_json();
        assert!(json.contains("\"skipped_symlinks\""));
        let mut total = Report::default();
        total.merge(rep);
        assert_eq!(total.directories, 1);
    }
}
