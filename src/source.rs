//! Where specs come from: a commit read through git2 from the object database (never the
//! working tree, so a half-written file is never applied), or a directory for `validate`.

use std::path::{Path, PathBuf};

use crate::spec::is_spec_path;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: not a git repository ({source})")]
    Open { path: PathBuf, source: git2::Error },
    #[error("{path}: cannot resolve revision {rev:?} to a commit: {source}")]
    Rev { path: PathBuf, rev: String, source: git2::Error },
    #[error("{path}: reading the commit: {source}")]
    Git { path: PathBuf, source: git2::Error },
    #[error("{path}: {subdir:?} is not a directory in commit {commit}")]
    NoSubdir { path: PathBuf, subdir: String, commit: String },
    #[error("{file}: not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The spec files of one commit.
#[derive(Debug, Clone)]
pub struct CommitFiles {
    pub commit: String,
    pub summary: String,
    /// `(path relative to the fleet directory, text)`, sorted.
    pub files: Vec<(String, String)>,
}

/// Read every spec file of `rev` (default HEAD) under `subdir` of the repository at `repo`.
pub fn read_commit(repo: &Path, rev: &str, subdir: Option<&str>) -> Result<CommitFiles, SourceError> {
    let r = git2::Repository::open(repo).map_err(|source| SourceError::Open { path: repo.to_path_buf(), source })?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| SourceError::Rev { path: repo.to_path_buf(), rev: rev.to_string(), source })?;
    read_tree(&r, &commit, repo, subdir)
}

pub fn read_tree(r: &git2::Repository, commit: &git2::Commit, repo: &Path, subdir: Option<&str>) -> Result<CommitFiles, SourceError> {
    let git = |source| SourceError::Git { path: repo.to_path_buf(), source };
    let id = commit.id().to_string();
    let mut tree = commit.tree().map_err(git)?;
    if let Some(sub) = subdir.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
        let entry = tree.get_path(Path::new(sub)).map_err(|_| SourceError::NoSubdir { path: repo.to_path_buf(), subdir: sub.into(), commit: id.clone() })?;
        tree = entry
            .to_object(r)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| SourceError::NoSubdir { path: repo.to_path_buf(), subdir: sub.into(), commit: id.clone() })?;
    }
    let mut files = Vec::new();
    let mut err = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        if name.starts_with('.') {
            return git2::TreeWalkResult::Skip;
        }
        let rel = format!("{dir}{name}");
        if entry.kind() == Some(git2::ObjectType::Blob) && is_spec_path(&rel) {
            match entry.to_object(r).ok().and_then(|o| o.into_blob().ok()) {
                Some(blob) => match std::str::from_utf8(blob.content()) {
                    Ok(t) => files.push((rel, t.to_string())),
                    Err(_) => err = Some(SourceError::NotUtf8 { file: rel }),
                },
                None => err = Some(SourceError::NotUtf8 { file: rel }),
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(git)?;
    if let Some(e) = err {
        return Err(e);
    }
    files.sort();
    Ok(CommitFiles { commit: id, summary: commit.summary().ok().flatten().unwrap_or("").to_string(), files })
}

/// Read every spec file under `dir` from the file system (for `validate`, which checks what is
/// about to be committed). Hidden paths are skipped; symlinks are not followed.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, SourceError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| SourceError::Io { path: d.clone(), source })?;
        for e in entries {
            let e = e.map_err(|source| SourceError::Io { path: d.clone(), source })?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            let path = e.path();
            let ft = e.file_type().map_err(|source| SourceError::Io { path: path.clone(), source })?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
                if is_spec_path(&rel) {
                    let bytes = std::fs::read(&path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
                    let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { file: rel.clone() })?;
                    out.push((rel, text));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
