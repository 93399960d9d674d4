//! Where specs come from: a commit read through git2 from the object database (never the
//! working tree, so a half-written file is never applied), or a directory for `validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::diag::{escape_bytes, printable};
use crate::spec::is_spec_path;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {}", open_problem(.path, .source))]
    Open { path: PathBuf, source: git2::Error },
    #[error("{path}: no commit {rev:?} here{}", .hint)]
    Rev { path: PathBuf, rev: String, source: git2::Error, hint: String },
    #[error("{path}: reading the commit: {}", .source.message())]
    Git { path: PathBuf, source: git2::Error },
    #[error("{path}: {subdir:?} is not a directory in commit {commit}")]
    NoSubdir { path: PathBuf, subdir: String, commit: String },
    #[error("{file}: not UTF-8 text")]
    NotUtf8 { file: String },
    #[error(
        "{path}: a file name that is not UTF-8 in the fleet directory; fleetwright cannot tell what it is, so the commit is refused. Rename it (or move it out of the fleet directory, or into a hidden directory)"
    )]
    NotUtf8Path { path: String },
    #[error(
        "more than {limit} spec files (*.yaml, *.yml) under the fleet directory; the commit is refused (a limit of one commit). Split the fleet over several repositories or directories (--path), or hide what is not a spec (a leading '.')"
    )]
    TooManyFiles { limit: usize },
    #[error(
        "the spec files under the fleet directory add up to more than {} MiB ({file} is where the limit was crossed); the commit is refused (a limit of one commit; a fleet's files are a few KiB each). Remove or hide (a leading '.') what is not a spec", .limit >> 20
    )]
    TooLarge { file: String, limit: u64 },
    #[error(
        "{file}: a symbolic link; specs are read from regular files only (what a link points to is not part of the commit it is in). Copy the file instead"
    )]
    Symlink { file: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl SourceError {
    /// Whether the repository could not be read (an I/O error, the process out of file
    /// descriptors, ...), as opposed to a verdict on what the commit holds: reading again later
    /// may succeed, and the commit must not be blamed for it.
    pub fn is_io(&self) -> bool {
        match self {
            SourceError::Open { .. } | SourceError::Git { .. } | SourceError::Io { .. } => true,
            SourceError::Rev { source, .. } => source.code() != git2::ErrorCode::NotFound,
            _ => false,
        }
    }
}

/// The spec files of one commit.
#[derive(Debug, Clone)]
pub struct CommitFiles {
    pub commit: String,
    pub summary: String,
    /// `(path relative to the fleet directory, text)`, sorted.
    pub files: Vec<(String, String)>,
    /// Every `*.age` file of the fleet directory (the secrets agents may name), by path.
    pub secrets: SecretFiles,
}

/// Secret files by path (relative to the fleet directory) → their bytes.
pub type SecretFiles = BTreeMap<String, Vec<u8>>;

/// Is this path (relative to the fleet root) a secret file? `*.age`, no hidden segment.
pub fn is_secret_path(rel: &str) -> bool {
    rel.ends_with(".age") && !rel.split('/').any(|seg| seg.starts_with('.'))
}

/// Why `path` could not be opened as a repository, in plain words and with what to do (never
/// libgit2's `class=…; code=…`).
fn open_problem(path: &Path, e: &git2::Error) -> String {
    if !path.exists() {
        return "no such directory; give --repo the path of the fleet's git repository (or its URL)".into();
    }
    if e.code() == git2::ErrorCode::Owner {
        return format!(
            "the repository belongs to another user, and git refuses to read it for this one; if you trust it, run: git config --global --add safe.directory {}",
            path.display()
        );
    }
    if e.code() == git2::ErrorCode::NotFound {
        return "not a git repository; fleetwright applies commits: make it one with `git init`, `git add .` and `git commit -m fleet`".into();
    }
    format!("cannot open the git repository: {}", e.message())
}

/// Opens the repository at `repo`.
fn open_repo(repo: &Path) -> Result<git2::Repository, SourceError> {
    git2::Repository::open(repo).map_err(|source| SourceError::Open { path: repo.to_path_buf(), source })
}

/// The commit `rev` names in `r`; when there is none, the error says what there is.
fn find_commit<'r>(r: &'r git2::Repository, repo: &Path, rev: &str) -> Result<git2::Commit<'r>, SourceError> {
    r.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(|source| {
        let hint = if r.head().is_err() && r.is_empty().unwrap_or(false) {
            " (the repository has no commit yet: `git add .` and `git commit -m fleet` make the first)".to_string()
        } else if source.code() == git2::ErrorCode::NotFound {
            let branches: Vec<String> = r
                .branches(None)
                .map(|bs| bs.filter_map(|b| b.ok()).filter_map(|(b, _)| b.name().ok().flatten().map(str::to_string)).collect())
                .unwrap_or_default();
            if branches.is_empty() { String::new() } else { format!(" (the branches here are: {})", branches.join(", ")) }
        } else {
            format!(": {}", source.message())
        };
        SourceError::Rev { path: repo.to_path_buf(), rev: rev.to_string(), source, hint }
    })
}

/// The commit `rev` names in the repository at `repo`, without reading its tree.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<String, SourceError> {
    let r = open_repo(repo)?;
    Ok(find_commit(&r, repo, rev)?.id().to_string())
}

/// Read every spec file of `rev` (default HEAD) under `subdir` of the repository at `repo`.
pub fn read_commit(repo: &Path, rev: &str, subdir: Option<&str>) -> Result<CommitFiles, SourceError> {
    let r = open_repo(repo)?;
    let commit = find_commit(&r, repo, rev)?;
    read_tree(&r, &commit, repo, subdir)
}

/// How many spec files under `subdir` (the whole work tree without it) differ from HEAD in the
/// repository at `repo` (edited, new, deleted, staged or not): what an apply of HEAD does not
/// see. None when it cannot be told (a bare repository, an error).
pub fn uncommitted_changes(repo: &Path, subdir: Option<&str>) -> Option<usize> {
    let r = git2::Repository::open(repo).ok()?;
    if r.is_bare() {
        return None;
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    if let Some(sub) = subdir.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
        opts.pathspec(sub);
    }
    let statuses = r.statuses(Some(&mut opts)).ok()?;
    Some(
        statuses
            .iter()
            .filter(|s| s.path().is_ok_and(|p| is_spec_path(p.strip_prefix(subdir.unwrap_or("").trim_matches('/')).unwrap_or(p).trim_start_matches('/'))))
            .count(),
    )
}

pub fn read_tree(r: &git2::Repository, commit: &git2::Commit, repo: &Path, subdir: Option<&str>) -> Result<CommitFiles, SourceError> {
    let git = |source| SourceError::Git { path: repo.to_path_buf(), source };
    let id = commit.id().to_string();
    let mut tree = commit.tree().map_err(git)?;
    if let Some(sub) = subdir.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
        let no_subdir = || SourceError::NoSubdir { path: repo.to_path_buf(), subdir: sub.into(), commit: id.clone() };
        // Only "not there" (or not a directory) is a fact about the commit; any other failure is
        // a failure to read it.
        let entry = match tree.get_path(Path::new(sub)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(no_subdir()),
            Err(e) => return Err(git(e)),
        };
        if entry.kind() != Some(git2::ObjectType::Tree) {
            return Err(no_subdir());
        }
        tree = entry.to_object(r).and_then(|o| o.peel_to_tree()).map_err(git)?;
    }
    let mut files = Vec::new();
    let mut secrets = BTreeMap::new();
    let mut budget = Budget::default();
    let odb = r.odb().map_err(git)?;
    // Depth first, by hand rather than `Tree::walk`: its callback gets the directory as `&str`
    // and gives up on a directory whose name is not UTF-8, and an entry's name is bytes.
    let mut stack = vec![(tree, String::new())];
    while let Some((tree, dir)) = stack.pop() {
        for entry in tree.iter() {
            let bytes = entry.name_bytes();
            // Hidden paths are skipped, whatever their name holds.
            if bytes.starts_with(b".") {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                return Err(SourceError::NotUtf8Path { path: format!("{}{}", printable(&dir), escape_bytes(bytes)) });
            };
            let rel = format!("{dir}{name}");
            match entry.kind() {
                Some(git2::ObjectType::Tree) => stack.push((entry.to_object(r).and_then(|o| o.peel_to_tree()).map_err(git)?, format!("{rel}/"))),
                Some(git2::ObjectType::Blob) if is_spec_path(&rel) => {
                    if entry.filemode() == 0o120000 {
                        return Err(SourceError::Symlink { file: rel });
                    }
                    // The size from the object's header: a blob past the budget is never read.
                    let (size, _) = odb.read_header(entry.id()).map_err(git)?;
                    budget.add(&rel, size as u64)?;
                    let blob = r.find_blob(entry.id()).map_err(git)?;
                    match std::str::from_utf8(blob.content()) {
                        Ok(t) => files.push((rel, t.to_string())),
                        Err(_) => return Err(SourceError::NotUtf8 { file: rel }),
                    }
                }
                Some(git2::ObjectType::Blob) if is_secret_path(&rel) && entry.filemode() != 0o120000 => {
                    let (size, _) = odb.read_header(entry.id()).map_err(git)?;
                    budget.add(&rel, size as u64)?;
                    secrets.insert(rel, r.find_blob(entry.id()).map_err(git)?.content().to_vec());
                }
                _ => {}
            }
        }
    }
    files.sort();
    Ok(CommitFiles { commit: id, summary: commit.summary().ok().flatten().unwrap_or("").to_string(), files, secrets })
}

/// At most this many spec files in one commit (or directory).
pub const MAX_SPEC_FILES: usize = 10_000;
/// At most this many bytes of spec files in one commit (or directory), together; one file is
/// refused past `spec::MAX_FILE_BYTES` by the checker.
pub const MAX_COMMIT_BYTES: u64 = 16 << 20;

/// The spec files read so far, against `MAX_SPEC_FILES` and `MAX_COMMIT_BYTES`.
#[derive(Default)]
struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    /// Count one more spec file of `size` bytes, before it is read.
    fn add(&mut self, file: &str, size: u64) -> Result<(), SourceError> {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.files > MAX_SPEC_FILES {
            return Err(SourceError::TooManyFiles { limit: MAX_SPEC_FILES });
        }
        if self.bytes > MAX_COMMIT_BYTES {
            return Err(SourceError::TooLarge { file: printable(file).into_owned(), limit: MAX_COMMIT_BYTES });
        }
        Ok(())
    }
}

/// Read every spec file under `dir` from the file system (for `validate`, which checks what is
/// about to be committed). Hidden paths are skipped; symlinks are not followed.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, SourceError> {
    read_dir_with_secrets(dir).map(|(files, _)| files)
}

/// [`read_dir`], with the directory's secret files (`*.age`, by path; a symlink is not
/// followed, and is left out).
pub fn read_dir_with_secrets(dir: &Path) -> Result<(Vec<(String, String)>, SecretFiles), SourceError> {
    use std::io::Read as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = Vec::new();
    let mut secrets = BTreeMap::new();
    let mut budget = Budget::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| SourceError::Io { path: d.clone(), source })?;
        for e in entries {
            let e = e.map_err(|source| SourceError::Io { path: d.clone(), source })?;
            let path = e.path();
            let bytes = e.file_name();
            // The same rules as for a commit: hidden paths are skipped, a name that is not
            // UTF-8 is refused.
            if bytes.as_bytes().starts_with(b".") {
                continue;
            }
            if bytes.to_str().is_none() {
                return Err(SourceError::NotUtf8Path { path: escape_bytes(path.strip_prefix(dir).unwrap_or(&path).as_os_str().as_bytes()) });
            }
            let ft = e.file_type().map_err(|source| SourceError::Io { path: path.clone(), source })?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
                if is_spec_path(&rel) {
                    return Err(SourceError::Symlink { file: rel });
                }
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
                let (spec, secret) = (is_spec_path(&rel), is_secret_path(&rel));
                if !spec && !secret {
                    continue;
                }
                let io = |source| SourceError::Io { path: path.clone(), source };
                let f = std::fs::File::open(&path).map_err(io)?;
                let size = f.metadata().map_err(io)?.len();
                budget.add(&rel, size)?;
                // No more than was counted, should the file grow meanwhile.
                let mut bytes = Vec::new();
                f.take(size).read_to_end(&mut bytes).map_err(io)?;
                if spec {
                    let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { file: rel.clone() })?;
                    out.push((rel, text));
                } else {
                    secrets.insert(rel, bytes);
                }
            }
        }
    }
    out.sort();
    Ok((out, secrets))
}

/// How long a fetch waits to connect, and then for each read, before it fails (a server that
/// accepts and never answers must not hang the daemon).
pub const CONNECT_TIMEOUT_MS: i32 = 30_000;
pub const READ_TIMEOUT_MS: i32 = 60_000;

/// Whether `init_libgit2` started libgit2 without its CA certificates (then `init_network`
/// loads them before the first fetch).
static TLS_ROOTS_DEFERRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Start libgit2 without reading the CA certificate bundle. libgit2 sets up OpenSSL when it
/// starts, and OpenSSL's default verify paths parse the whole bundle file: about 25 ms, in every
/// command, for a local repository that never speaks TLS. It starts here with an empty bundle
/// file (`SSL_CERT_FILE=/dev/null` for that moment; the hashed certificate directory, read
/// lazily, stays); the bundle (`SSL_CERT_FILE` as it was, or the system's) is loaded before the
/// first fetch from a remote, by `init_network`.
///
/// # Safety
/// It changes the environment for a moment: call it first thing in `main`, before any other
/// thread exists. Without it, libgit2 starts the usual way at its first use.
pub unsafe fn init_libgit2() {
    let before = std::env::var_os("SSL_CERT_FILE");
    // SAFETY: the caller guarantees that no other thread runs (and reads the environment).
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
    // Any call starts libgit2; this one sets what is the default anyway.
    git2::opts::enable_caching(true);
    match before {
        // SAFETY: as above.
        Some(v) => unsafe { std::env::set_var("SSL_CERT_FILE", v) },
        None => unsafe { std::env::remove_var("SSL_CERT_FILE") },
    }
    TLS_ROOTS_DEFERRED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Before the first fetch: libgit2's network timeouts, and the CA certificates `init_libgit2`
/// left out.
fn init_network() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if TLS_ROOTS_DEFERRED.load(std::sync::atomic::Ordering::SeqCst) {
            // SSL_CERT_FILE if set, else the system's bundle (the probe libgit2's own start uses).
            let roots = openssl_probe::probe();
            // SAFETY: as for the timeouts below; OpenSSL's store is set before any TLS stream.
            if let Some(file) = roots.cert_file
                && let Err(e) = unsafe { git2::opts::set_ssl_cert_file(&file) }
            {
                tracing::warn!(file = %file.display(), "could not load the CA certificates: {e}");
            }
        }
        // SAFETY: libgit2 keeps these in plain globals, read by its network code. They are
        // set before the first fetch and never again, and fleetwright fetches from one
        // thread at a time: nothing reads them while they are written.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(READ_TIMEOUT_MS);
        }
    });
}

/// A followed branch: a local repository (watched in place) or a remote URL (file://, https,
/// ssh) fetched into a bare cache in the state directory.
pub struct GitSource {
    repo: git2::Repository,
    /// The local repository path, or the remote URL.
    pub location: String,
    remote: bool,
    pub branch: Option<String>,
    pub subdir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{location}: {source}")]
    Git { location: String, source: git2::Error },
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A verdict on a commit's signature (unsigned, unknown key, bad signature).
    #[error("{0}")]
    Signature(String),
    /// The cache of fetched repositories is not private to this user, or cannot be made.
    #[error("{path}: {why}")]
    Cache { path: PathBuf, why: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl FetchError {
    /// Whether trying again later may succeed (the network, the disk, the process out of file
    /// descriptors): such a failure says nothing about the commit, which must not be held off
    /// or marked bad for it.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Git { .. } | FetchError::Io { .. } => true,
            FetchError::Source(e) => e.is_io(),
            FetchError::Signature(_) | FetchError::Cache { .. } => false,
        }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| format!("{} (uid {uid})", u.name))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Make `root` (`<state-dir>/cache`) ready to hold fetched repositories, or say why it cannot
/// be trusted. What is read from the cache is the fleet that gets applied, so nobody but this
/// user may have written it: the cache is created 0700, and refused when it is a symbolic link,
/// is owned by someone else or can be written by group or others; the state directory above it
/// must belong to this user or root and be writable by nobody else (or the cache could be
/// swapped). There is no fallback to a shared directory such as /tmp: when the state directory
/// cannot be made, the error says which option to use.
pub fn private_cache(root: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let euid = nix::unistd::geteuid().as_raw();
    let refuse = |path: &Path, why: String| FetchError::Cache { path: path.to_path_buf(), why };
    let state = root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let hint = "pass --state-dir DIR (a directory of your own), or clone the repository and give its path to --repo";
    if !state.exists() {
        let made = state.parent().filter(|p| !p.as_os_str().is_empty()).map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            match std::fs::DirBuilder::new().mode(0o755).create(state) {
                // Made here: its mode is ours to set, whatever the umask left.
                Ok(()) => std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        });
        if let Err(e) = made {
            return Err(refuse(state, format!("the state directory cannot be created ({e}); repositories fetched from a URL are kept in its cache/: {hint}")));
        }
    }
    let meta = std::fs::metadata(state).map_err(|e| refuse(state, format!("the state directory cannot be read ({e}): {hint}")))?;
    if !meta.is_dir() {
        return Err(refuse(state, format!("the state directory is not a directory: {hint}")));
    }
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(refuse(
            state,
            format!(
                "the state directory is owned by {}, not by you or root: its owner could replace the cache of fetched repositories and choose the fleet that is read; {hint}",
                user_name(meta.uid())
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(
            state,
            format!(
                "the state directory can be written by other users (mode {:04o}): they could replace the cache of fetched repositories and choose the fleet that is read. Run chmod go-w {}, or {hint}",
                meta.mode() & 0o7777,
                state.display()
            ),
        ));
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| refuse(root, format!("cannot make the cache private ({e}): {hint}")))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(root, format!("the cache of fetched repositories cannot be created ({e}): {hint}"))),
    }
    // lstat: a symbolic link is refused, never followed.
    let meta = std::fs::symlink_metadata(root).map_err(|e| refuse(root, format!("the cache cannot be read ({e})")))?;
    let remove = format!("remove it (rm -rf {}) if you do not know why it is there, or {hint}", root.display());
    if meta.file_type().is_symlink() {
        return Err(refuse(root, format!("the cache of fetched repositories is a symbolic link; it must be a directory of its own: {remove}")));
    }
    if !meta.is_dir() {
        return Err(refuse(root, format!("the cache of fetched repositories is not a directory: {remove}")));
    }
    if meta.uid() != euid {
        return Err(refuse(
            root,
            format!(
                "the cache of fetched repositories is owned by {}, not by you ({}): whoever owns it could have planted the repositories in it, and the fleet read from them would be theirs. Nothing was read from it; {remove}",
                user_name(meta.uid()),
                user_name(euid)
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(
            root,
            format!(
                "the cache of fetched repositories can be written by group or others (mode {:04o}): anyone who can write it could plant repositories in it. Nothing was read from it; {remove}",
                meta.mode() & 0o7777
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        // Ours, and written by nobody else: only made private (a cache of a private repository
        // is no one else's to read either).
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| refuse(root, format!("cannot make the cache private ({e})")))?;
    }
    Ok(())
}

pub fn looks_like_url(s: &str) -> bool {
    s.contains("://") || (s.contains('@') && s.contains(':') && !s.starts_with('/'))
}

impl GitSource {
    pub fn open(location: &str, branch: Option<&str>, subdir: Option<&str>, cache_root: &Path) -> Result<GitSource, FetchError> {
        let git = |source| FetchError::Git { location: location.to_string(), source };
        let (repo, remote) = if looks_like_url(location) {
            private_cache(cache_root)?;
            let key = &crate::types::sha256(location)[..16];
            let dir = cache_root.join(key);
            if let Ok(meta) = std::fs::symlink_metadata(&dir) {
                use std::os::unix::fs::MetadataExt;
                if meta.file_type().is_symlink() || !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
                    return Err(FetchError::Cache {
                        path: dir,
                        why: format!("not a directory of yours (a symbolic link, or owned by {}): remove it; it is fetched again", user_name(meta.uid())),
                    });
                }
            }
            let repo = match git2::Repository::open_bare(&dir) {
                Ok(r) => r,
                Err(_) => git2::Repository::init_bare(&dir).map_err(git)?,
            };
            (repo, true)
        } else {
            (git2::Repository::open(location).map_err(git)?, false)
        };
        Ok(GitSource { repo, location: location.to_string(), remote, branch: branch.map(str::to_string), subdir: subdir.map(str::to_string) })
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The directory whose changes mean "the refs moved" (watched for local repositories).
    pub fn git_dir(&self) -> PathBuf {
        self.repo.path().to_path_buf()
    }

    fn branch_name(&self) -> String {
        self.branch.clone().unwrap_or_else(|| "main".to_string())
    }

    /// Fetch the branch from the remote (no-op for a local repository).
    pub fn fetch(&self) -> Result<(), FetchError> {
        if !self.remote {
            return Ok(());
        }
        init_network();
        let git = |source| FetchError::Git { location: self.location.clone(), source };
        let mut cb = git2::RemoteCallbacks::new();
        let mut tried_agent = false;
        // libgit2 asks again after every rejected credential: a key the server refuses would
        // otherwise be offered forever.
        let mut asked = 0;
        cb.credentials(move |_url, user, allowed| {
            asked += 1;
            if asked > 3 {
                return Err(git2::Error::from_str("the server refused every credential offered (FLEETWRIGHT_SSH_KEY, the ssh agent, the default)"));
            }
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                if let Ok(key) = std::env::var("FLEETWRIGHT_SSH_KEY") {
                    return git2::Cred::ssh_key(user.unwrap_or("git"), None, Path::new(&key), None);
                }
                if !tried_agent {
                    tried_agent = true;
                    return git2::Cred::ssh_key_from_agent(user.unwrap_or("git"));
                }
            }
            git2::Cred::default()
        });
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(cb);
        let branch = self.branch_name();
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        let mut remote = self.repo.remote_anonymous(&self.location).map_err(git)?;
        remote.fetch(&[&refspec], Some(&mut opts), None).map_err(git)
    }

    /// The commit at the head of the followed branch.
    pub fn head(&self) -> Result<String, FetchError> {
        let git = |source| FetchError::Git { location: self.location.clone(), source };
        let reference = if self.remote {
            format!("refs/remotes/origin/{}", self.branch_name())
        } else if let Some(b) = &self.branch {
            format!("refs/heads/{b}")
        } else {
            "HEAD".to_string()
        };
        let commit = self.repo.revparse_single(&reference).and_then(|o| o.peel_to_commit()).map_err(git)?;
        Ok(commit.id().to_string())
    }

    /// A revision (a commit id, a tag, a ref) of the repository or of what was fetched.
    pub fn resolve(&self, rev: &str) -> Result<String, FetchError> {
        let git = |source| FetchError::Git { location: self.location.clone(), source };
        Ok(self.repo.revparse_single(rev).and_then(|o| o.peel_to_commit()).map_err(git)?.id().to_string())
    }

    /// The spec files of `commit`.
    pub fn read(&self, commit: &str) -> Result<CommitFiles, FetchError> {
        let git = |source| FetchError::Git { location: self.location.clone(), source };
        let oid = git2::Oid::from_str(commit).map_err(git)?;
        let c = self.repo.find_commit(oid).map_err(git)?;
        Ok(read_tree(&self.repo, &c, Path::new(&self.location), self.subdir.as_deref())?)
    }

    /// Is `new` a descendant of (or equal to) `old`? None when `old` is not in the repository
    /// any more (a force-push dropped it and the cache was pruned, or it never was); Err when
    /// the repository could not be read (that is no evidence of a force-push).
    pub fn descends_from(&self, new: &str, old: &str) -> Result<Option<bool>, FetchError> {
        let git = |source| FetchError::Git { location: self.location.clone(), source };
        let (Ok(n), Ok(o)) = (git2::Oid::from_str(new), git2::Oid::from_str(old)) else { return Ok(None) };
        match self.repo.find_commit(o) {
            Ok(_) => {}
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git(e)),
        }
        Ok(Some(n == o || self.repo.graph_descendant_of(n, o).map_err(git)?))
    }

    /// Verify `commit`'s SSH signature against an allowed-signers file (ssh-keygen(1),
    /// ALLOWED SIGNERS), as `git verify-commit` does with gpg.format=ssh.
    /// A verdict on the signature is `FetchError::Signature`; a failure to check it (the
    /// repository or a temporary file cannot be read or written, ssh-keygen cannot be run) is
    /// transient (`FetchError::is_transient`).
    pub fn verify_ssh_signature(&self, commit: &str, allowed_signers: &Path) -> Result<String, FetchError> {
        let fail = |m: String| FetchError::Signature(format!("commit {}: {m}", &commit[..commit.len().min(12)]));
        let io = |what: &str| {
            let what = format!("checking the signature of commit {}: {what}", &commit[..commit.len().min(12)]);
            move |source| FetchError::Io { what, source }
        };
        let oid = git2::Oid::from_str(commit).map_err(|e| fail(e.to_string()))?;
        let (sig, data) = match self.repo.extract_signature(&oid, None) {
            Ok(x) => x,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(fail("is not signed".into())),
            Err(source) => return Err(FetchError::Git { location: self.location.clone(), source }),
        };
        if !sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            return Err(fail("is signed, but not with an SSH key".into()));
        }
        let dir = tempfile::tempdir().map_err(io("a temporary directory"))?;
        let sig_path = dir.path().join("commit.sig");
        std::fs::write(&sig_path, &*sig).map_err(io("writing the signature"))?;
        let run = |args: &[&str], stdin: &[u8]| -> Result<std::process::Output, FetchError> {
            use std::io::Write;
            let mut child = std::process::Command::new("ssh-keygen")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(io("running ssh-keygen"))?;
            child.stdin.take().expect("piped").write_all(stdin).map_err(io("writing to ssh-keygen"))?;
            child.wait_with_output().map_err(io("waiting for ssh-keygen"))
        };
        let signers = allowed_signers.to_string_lossy().to_string();
        let sig_s = sig_path.to_string_lossy().to_string();
        let found = run(&["-Y", "find-principals", "-f", &signers, "-s", &sig_s], b"")?;
        let principal = String::from_utf8_lossy(&found.stdout).lines().next().unwrap_or("").trim().to_string();
        if !found.status.success() || principal.is_empty() {
            return Err(fail(format!("its signing key is not in {}", allowed_signers.display())));
        }
        let verified = run(&["-Y", "verify", "-f", &signers, "-I", &principal, "-n", "git", "-s", &sig_s], &data)?;
        if !verified.status.success() {
            return Err(fail(format!("bad signature: {}", String::from_utf8_lossy(&verified.stderr).trim())));
        }
        Ok(principal)
    }
}

/// Read `rev` of a local repository, or fetch `branch` of a remote URL into `cache_root` and
/// read `rev` there (`HEAD`: the branch's head).
pub fn read_location(repo: &str, rev: &str, branch: Option<&str>, subdir: Option<&str>, cache_root: &Path) -> Result<CommitFiles, FetchError> {
    if !looks_like_url(repo) {
        return Ok(read_commit(Path::new(repo), rev, subdir)?);
    }
    let s = GitSource::open(repo, branch, subdir, cache_root)?;
    s.fetch()?;
    let commit = if rev == "HEAD" { s.head()? } else { s.resolve(rev)? };
    s.read(&commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &git2::Repository, files: &[(&str, &str)], msg: &str) -> String {
        let root = repo.workdir().unwrap();
        for (p, t) in files {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parent.iter().collect::<Vec<_>>()).unwrap().to_string()
    }

    #[test]
    fn reads_a_subdirectory_skipping_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let c = commit(
            &repo,
            &[("fleet/a.yaml", "a"), ("fleet/sub/b.yml", "b"), ("fleet/.hidden/c.yaml", "c"), ("fleet/notes.md", "n"), ("other/d.yaml", "d")],
            "one",
        );
        let files = read_commit(dir.path(), "HEAD", Some("fleet")).unwrap();
        assert_eq!(files.commit, c);
        assert_eq!(files.files, vec![("a.yaml".to_string(), "a".to_string()), ("sub/b.yml".to_string(), "b".to_string())]);
        assert!(matches!(read_commit(dir.path(), "HEAD", Some("nope")), Err(SourceError::NoSubdir { .. })));
        // The working tree is never read: an uncommitted edit is invisible.
        std::fs::write(dir.path().join("fleet/a.yaml"), "edited").unwrap();
        assert_eq!(read_commit(dir.path(), "HEAD", Some("fleet")).unwrap().files[0].1, "a");
    }

    #[test]
    fn a_symlinked_spec_is_refused_the_same_way_in_a_commit_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        std::os::unix::fs::symlink("shared/web.yaml", dir.path().join("link.yaml")).unwrap();
        commit(&repo, &[("shared/web.yaml", "w")], "one");
        let e = read_commit(dir.path(), "HEAD", None).unwrap_err();
        assert!(matches!(&e, SourceError::Symlink { file } if file == "link.yaml"), "{e}");
        let e = read_dir(dir.path()).unwrap_err();
        assert!(matches!(&e, SourceError::Symlink { file } if file == "link.yaml"), "{e}");
        assert!(e.to_string().contains("Copy the file instead"), "{e}");
    }

    #[test]
    fn a_remote_is_fetched_into_a_cache_and_force_pushes_are_detected() {
        let origin_dir = tempfile::tempdir().unwrap();
        let origin = git2::Repository::init(origin_dir.path()).unwrap();
        origin.set_head("refs/heads/main").unwrap();
        let c1 = commit(&origin, &[("fleet/a.yaml", "1")], "one");
        let c2 = commit(&origin, &[("fleet/a.yaml", "2")], "two");
        let state = tempfile::tempdir().unwrap();
        let cache = state.path().join("cache");
        let url = format!("file://{}", origin_dir.path().display());
        let src = GitSource::open(&url, Some("main"), Some("fleet"), &cache).unwrap();
        assert!(src.is_remote());
        src.fetch().unwrap();
        assert_eq!(src.head().unwrap(), c2);
        assert_eq!(src.read(&c1).unwrap().files[0].1, "1");
        assert_eq!(src.descends_from(&c2, &c1).unwrap(), Some(true));
        assert_eq!(src.descends_from(&c1, &c2).unwrap(), Some(false));
        assert_eq!(src.descends_from(&c2, "0123456789012345678901234567890123456789").unwrap(), None);
        // The same URL reuses the cache directory, which only its owner can enter.
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions()) & 0o777, 0o700);
        let again = GitSource::open(&url, Some("main"), None, &cache).unwrap();
        assert_eq!(again.resolve(&c1[..10]).unwrap(), c1);
    }

    /// A commit of `entries` (path bytes → content) made directly from tree objects: names
    /// need not be UTF-8, and one blob may stand for many files.
    fn commit_tree(repo: &git2::Repository, entries: &[(&[u8], &[u8])]) -> String {
        type Entries<'a> = Vec<(Vec<u8>, &'a [u8])>;
        fn build(repo: &git2::Repository, entries: &[(Vec<u8>, &[u8])]) -> git2::Oid {
            let mut tb = repo.treebuilder(None).unwrap();
            let mut dirs: std::collections::BTreeMap<Vec<u8>, Entries> = Default::default();
            for (path, content) in entries {
                match path.iter().position(|b| *b == b'/') {
                    Some(i) => dirs.entry(path[..i].to_vec()).or_default().push((path[i + 1..].to_vec(), content)),
                    None => {
                        tb.insert(path.clone(), repo.blob(content).unwrap(), 0o100644).unwrap();
                    }
                }
            }
            for (dir, sub) in dirs {
                tb.insert(dir, build(repo, &sub), 0o040000).unwrap();
            }
            tb.write().unwrap()
        }
        let owned: Entries = entries.iter().map(|(p, c)| (p.to_vec(), *c)).collect();
        let tree = repo.find_tree(build(repo, &owned)).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parent.iter().collect::<Vec<_>>()).unwrap().to_string()
    }

    #[test]
    fn a_name_that_is_not_utf8_under_the_fleet_directory_refuses_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let ok: &[u8] = b"apiVersion: fleetwright/v1\n";
        for (bad, shown) in [
            (&b"fleet/web\xff.yaml"[..], "web\\xff.yaml"),
            (b"fleet/sub\xfe\x1b/web.yaml", "sub\\xfe\\x1b"),
            // Not even a spec file's name: still refused (nobody can tell what it was meant to be).
            (b"fleet/notes\xff", "notes\\xff"),
        ] {
            commit_tree(&repo, &[(b"fleet/a.yaml", ok), (bad, ok)]);
            let e = read_commit(dir.path(), "HEAD", Some("fleet")).unwrap_err();
            assert!(matches!(&e, SourceError::NotUtf8Path { path } if path == shown), "{e}");
            assert!(e.to_string().contains("the commit is refused"), "{e}");
        }
        // Outside the fleet directory, or hidden: not read, not refused.
        commit_tree(&repo, &[(b"fleet/a.yaml", ok), (b"other/\xff.yaml", ok), (b"fleet/.old\xff/b.yaml", ok), (b"fleet/.x\xff.yaml", ok)]);
        assert_eq!(read_commit(dir.path(), "HEAD", Some("fleet")).unwrap().files.len(), 1);

        // The same in a directory, for `validate`.
        use std::os::unix::ffi::OsStrExt as _;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), ok).unwrap();
        std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(b"web\xff.yaml")), ok).unwrap();
        let e = read_dir(d.path()).unwrap_err();
        assert!(matches!(&e, SourceError::NotUtf8Path { path } if path == "web\\xff.yaml"), "{e}");
    }

    #[test]
    fn a_commit_with_too_many_or_too_large_spec_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let small: &[u8] = b"x: 1\n";
        let names: Vec<Vec<u8>> = (0..=MAX_SPEC_FILES).map(|i| format!("f/a{i:05}.yaml").into_bytes()).collect();
        let entries: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_slice(), small)).collect();
        commit_tree(&repo, &entries[..MAX_SPEC_FILES]);
        assert_eq!(read_commit(dir.path(), "HEAD", None).unwrap().files.len(), MAX_SPEC_FILES);
        commit_tree(&repo, &entries);
        let e = read_commit(dir.path(), "HEAD", None).unwrap_err();
        assert!(matches!(e, SourceError::TooManyFiles { .. }), "{e}");
        assert!(e.to_string().contains("more than 10000 spec files"), "{e}");
        // Files other than specs do not count.
        let other: Vec<Vec<u8>> = (0..=MAX_SPEC_FILES).map(|i| format!("f/a{i:05}.txt").into_bytes()).collect();
        commit_tree(&repo, &other.iter().map(|n| (n.as_slice(), small)).collect::<Vec<_>>());
        assert!(read_commit(dir.path(), "HEAD", None).unwrap().files.is_empty());

        // 17 files of 1 MiB (one blob): past 16 MiB together, although each is within the
        // checker's limit of one file.
        let big = vec![b'#'; crate::spec::MAX_FILE_BYTES];
        let names: Vec<Vec<u8>> = (0..17).map(|i| format!("b{i:02}.yaml").into_bytes()).collect();
        commit_tree(&repo, &names[..16].iter().map(|n| (n.as_slice(), big.as_slice())).collect::<Vec<_>>());
        assert_eq!(read_commit(dir.path(), "HEAD", None).unwrap().files.len(), 16);
        commit_tree(&repo, &names.iter().map(|n| (n.as_slice(), big.as_slice())).collect::<Vec<_>>());
        let e = read_commit(dir.path(), "HEAD", None).unwrap_err();
        assert!(matches!(&e, SourceError::TooLarge { file, .. } if file.starts_with('b')), "{e}");
        assert!(e.to_string().contains("add up to more than 16 MiB"), "{e}");

        // The same limit for a directory.
        let d = tempfile::tempdir().unwrap();
        for n in &names {
            std::fs::write(d.path().join(std::str::from_utf8(n).unwrap()), &big).unwrap();
        }
        assert!(matches!(read_dir(d.path()), Err(SourceError::TooLarge { .. })));
    }

    /// Out of file descriptors, a spec file that cannot be read is a read error (transient: the
    /// daemon retries it), never "not UTF-8 text" (a verdict that held the head off). In a child
    /// process (this test binary again), whose descriptors `emfile_child` uses up.
    #[test]
    fn a_blob_that_cannot_be_read_is_an_io_error_not_a_verdict_on_its_text() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "source::tests::emfile_child", "--ignored", "--nocapture", "--test-threads=1"])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        assert!(text.contains("emfile_child: done"), "the child ran the test: {text}");
    }

    #[test]
    #[ignore = "run in its own process by a_blob_that_cannot_be_read_is_an_io_error_not_a_verdict_on_its_text"]
    fn emfile_child() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        commit(&repo, &[("a.yaml", "a: 1"), ("b.yaml", "b: 2")], "one");
        let c = repo.head().unwrap().peel_to_commit().unwrap();
        // The tree stays in libgit2's object cache: the walk gets as far as the blobs, which are
        // read from disk.
        let _tree = c.tree().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on a struct of ours.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            let low = libc::rlimit { rlim_cur: 64.min(limit.rlim_max), rlim_max: limit.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        }
        let mut hog = Vec::new();
        let exhausted = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) => break e,
            }
        };
        assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE), "{exhausted}");
        let e = read_tree(&repo, &c, dir.path(), None).unwrap_err();
        drop(hog);
        assert!(matches!(e, SourceError::Git { .. }), "{e}");
        assert!(e.to_string().contains("Too many open files"), "{e}");
        assert!(e.is_io() && FetchError::from(e).is_transient());
        // With descriptors again, the same commit reads.
        assert_eq!(read_tree(&repo, &c, dir.path(), None).unwrap().files.len(), 2);
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        println!("emfile_child: done");
    }

    #[test]
    fn content_errors_are_verdicts_and_read_errors_are_transient() {
        assert!(!FetchError::from(SourceError::NotUtf8 { file: "a.yaml".into() }).is_transient());
        assert!(!FetchError::from(SourceError::Symlink { file: "a.yaml".into() }).is_transient());
        assert!(!FetchError::from(SourceError::NoSubdir { path: "/r".into(), subdir: "fleet".into(), commit: "c".into() }).is_transient());
        assert!(!FetchError::Signature("commit c: is not signed".into()).is_transient());
        let io = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(FetchError::from(SourceError::Io { path: "/r".into(), source: io }).is_transient());
        assert!(FetchError::Io { what: "running ssh-keygen".into(), source: std::io::Error::from_raw_os_error(libc::ENFILE) }.is_transient());
    }

    /// A subdirectory that is a file, or not there, is a verdict; one that is there is read.
    #[test]
    fn a_subdirectory_that_is_a_file_is_no_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        commit(&repo, &[("fleet", "not a directory"), ("x/a.yaml", "a")], "one");
        assert!(matches!(read_commit(dir.path(), "HEAD", Some("fleet")), Err(SourceError::NoSubdir { .. })));
        assert_eq!(read_commit(dir.path(), "HEAD", Some("x")).unwrap().files.len(), 1);
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn the_cache_is_made_private_and_refused_when_others_could_write_it() {
        let base = tempfile::tempdir().unwrap();
        // Made: the state directory and a 0700 cache in it, whatever the umask.
        let state = base.path().join("state");
        let cache = state.join("cache");
        private_cache(&cache).unwrap();
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&state), 0o755);
        // An old cache of ours that others could read: made private.
        set_mode(&cache, 0o755);
        private_cache(&cache).unwrap();
        assert_eq!(mode(&cache), 0o700);
        // Writable by the group: refused, and left as it is.
        set_mode(&cache, 0o770);
        let e = private_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("can be written by group or others (mode 0770)") && e.contains("--state-dir"), "{e}");
        assert_eq!(mode(&cache), 0o770);
        set_mode(&cache, 0o700);
        // A state directory others can write (as /tmp): they could swap the cache.
        set_mode(&state, 0o1777);
        let e = private_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("the state directory can be written by other users (mode 1777)"), "{e}");
        set_mode(&state, 0o755);
        // A symbolic link is refused, not followed.
        std::fs::remove_dir(&cache).unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
        let e = private_cache(&cache).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        // A remote is never opened through such a cache.
        let e = GitSource::open("file:///nonexistent/fleet", None, None, &cache).err().expect("refused").to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing was made through the link");
    }
}
