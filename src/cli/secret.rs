//! `fleetwright secret encrypt|edit|rekey|recipients`: the operator's tools for the fleet's
//! age-encrypted secrets. The recipients come from the Fleet document of the working tree
//! (the keys of every host that runs an agent using the secret, and the operators'), so nobody
//! assembles `age -r` lines by hand. Files are written atomically; a plaintext exists only in
//! memory, and for `edit` in a file of a private directory (the user's runtime directory, a
//! memory file system where there is one) that is overwritten and removed afterwards.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use fleetwright::host::secrets::{Identity, OPERATOR_IDENTITIES, encrypt_to};
use fleetwright::spec;
use zeroize::Zeroizing;

use super::args::{Globals, SecretCommand};
use super::{Error, Outcome, invalid};

pub fn run(g: &Globals, cmd: SecretCommand) -> Result<Outcome, Error> {
    match cmd {
        SecretCommand::Encrypt { file, fleet } => {
            let (rel, f) = locate(&fleet, &file)?;
            let plain = read_stdin()?;
            write(&file, &rel, &f, &plain)
        }
        SecretCommand::Edit { file, fleet } => {
            let (rel, f) = locate(&fleet, &file)?;
            let id = operator_identity(g)?;
            let old = std::fs::read(&file).map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
            let plain = id.decrypt(&rel, &old).map_err(Error::failed)?;
            let edited = edit(&plain)?;
            if *edited == *plain {
                eprintln!("{rel}: unchanged; the file is left as it was");
                return Ok(Outcome::Done);
            }
            write(&file, &rel, &f, &edited)
        }
        SecretCommand::Rekey { files, fleet } => {
            let f = load(&fleet)?;
            let id = operator_identity(g)?;
            let files: Vec<PathBuf> = if files.is_empty() {
                let mut used: Vec<String> = f.agents.iter().flat_map(|a| a.run.secrets.values().map(|s| s.path.clone())).collect();
                used.sort();
                used.dedup();
                used.into_iter().map(|p| fleet.join(p)).collect()
            } else {
                files
            };
            if files.is_empty() {
                eprintln!("no agent of the fleet uses a secret: nothing to encrypt again");
            }
            for file in files {
                let rel = relative(&fleet, &file)?;
                let old = std::fs::read(&file).map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
                let plain = id.decrypt(&rel, &old).map_err(Error::failed)?;
                write(&file, &rel, &f, &plain)?;
            }
            Ok(Outcome::Done)
        }
        SecretCommand::Recipients { file, fleet } => {
            let (rel, f) = locate(&fleet, &file)?;
            for r in fleetwright::secrets::recipients_for(&f, &rel) {
                println!("{r}");
            }
            Ok(Outcome::Done)
        }
    }
}

/// The fleet in `dir` (the working tree: what is about to be committed), and `file`'s path
/// relative to it, as agents name it.
fn locate(dir: &Path, file: &Path) -> Result<(String, spec::Fleet), Error> {
    Ok((relative(dir, file)?, load(dir)?))
}

/// `file`'s path relative to the fleet directory `dir`, as agents name it (`.age`, inside).
fn relative(dir: &Path, file: &Path) -> Result<String, Error> {
    let root = dir.canonicalize().map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    let name = file.file_name().ok_or_else(|| Error::failed(format!("{} is not a file name", file.display())))?;
    let parent = match file.parent() {
        Some(p) if p != Path::new("") => p,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().map_err(|e| Error::failed(format!("{}: {e} (make the directory first)", parent.display())))?;
    let rel = parent.join(name);
    let rel = rel
        .strip_prefix(&root)
        .map_err(|_| Error::failed(format!("{} is not inside the fleet directory {} (give it with --fleet DIR)", file.display(), root.display())))?;
    fleetwright::secrets::normalize_path(&rel.to_string_lossy()).map_err(|e| Error::failed(format!("{}: {e}", file.display())))
}

/// The working tree's fleet (its spec files checked; its secrets not, which are what is
/// being made).
fn load(dir: &Path) -> Result<spec::Fleet, Error> {
    let files = fleetwright::source::read_dir(dir).map_err(Error::failed)?;
    spec::load(&files, &fleetwright::host::zones::Tzdata).map_err(|d| invalid(&d, &files, dir))
}

/// Encrypt `plain` to `file`'s recipients and write it in its place, atomically.
fn write(file: &Path, rel: &str, fleet: &spec::Fleet, plain: &[u8]) -> Result<Outcome, Error> {
    let recipients = fleetwright::secrets::recipients_for(fleet, rel);
    let sealed = encrypt_to(&recipients, plain).map_err(|e| Error::failed(format!("{rel}: {e}")))?;
    fleetwright_sys::fsutil::write_atomic(file, &sealed, 0o644).map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
    let users: Vec<&str> = fleet.agents.iter().filter(|a| a.run.secrets.values().any(|s| s.path == rel)).map(|a| a.name.as_str()).collect();
    let users = if users.is_empty() { "no agent uses it yet: encrypted to every host with keys".to_string() } else { format!("used by {}", users.join(", ")) };
    eprintln!("{rel}: encrypted to {} recipient{} ({users})", recipients.len(), if recipients.len() == 1 { "" } else { "s" });
    Ok(Outcome::Done)
}

/// The value to encrypt, from standard input, as it is (`printf %s` leaves no newline).
fn read_stdin() -> Result<Zeroizing<Vec<u8>>, Error> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Enter the secret, then Ctrl-D (it is not echoed anywhere else):");
    }
    let mut v = Zeroizing::new(Vec::new());
    stdin.lock().take(fleetwright::secrets::MAX_SECRET_BYTES as u64 + 1).read_to_end(&mut v).map_err(|e| Error::failed(format!("reading the secret: {e}")))?;
    if v.len() > fleetwright::secrets::MAX_SECRET_BYTES {
        return Err(Error::failed("the secret is larger than 1 MiB, the most systemd delivers as a credential"));
    }
    if v.is_empty() {
        return Err(Error::failed("the secret is empty: give its value on standard input (printf %s \"$TOKEN\" | fleetwright secret encrypt FILE)"));
    }
    Ok(v)
}

/// The operator's identity: `--identity`, else the first of [`OPERATOR_IDENTITIES`] in the home
/// directory.
fn operator_identity(g: &Globals) -> Result<Identity, Error> {
    let path = match &g.identity {
        Some(p) => p.clone(),
        None => {
            let home = super::home();
            OPERATOR_IDENTITIES.iter().map(|p| home.join(p)).find(|p| p.exists()).ok_or_else(|| {
                Error::failed(format!(
                    "no identity to decrypt with: give yours with --identity FILE (or put it at ~/{} or ~/{}), and list its public key under `operators` in the Fleet document",
                    OPERATOR_IDENTITIES[0], OPERATOR_IDENTITIES[1]
                ))
            })?
        }
    };
    Identity::load(&path).map_err(Error::failed)
}

/// A private directory for a moment's plaintext: the user's runtime directory (a memory file
/// system, the user's only) where there is one, else /dev/shm, else the temporary directory;
/// the directory itself is made mode 0700.
fn private_dir() -> Result<tempfile::TempDir, Error> {
    let bases: Vec<PathBuf> =
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).into_iter().chain([PathBuf::from("/dev/shm"), std::env::temp_dir()]).collect();
    let base = bases.into_iter().find(|b| b.is_dir()).unwrap_or_else(std::env::temp_dir);
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix("fleetwright-secret-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| Error::failed(format!("{}: {e}", base.display())))
}

/// Open `plain` in the user's editor and give back what it saved.
fn edit(plain: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = private_dir()?;
    let path = dir.path().join("secret");
    let io = |e: std::io::Error| Error::failed(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).and_then(|mut f| f.write_all(plain)).map_err(io)?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    // The editor may be a command line ("code --wait"): the shell splits it.
    let status = std::process::Command::new("/bin/sh").arg("-c").arg(format!("{editor} \"$1\"")).arg("sh").arg(&path).status();
    let result = match status {
        Ok(s) if s.success() => std::fs::read(&path).map(Zeroizing::new).map_err(io),
        Ok(s) => Err(Error::failed(format!("the editor ({editor}) exited with {s}: nothing is written"))),
        Err(e) => Err(Error::failed(format!("cannot run the editor ({editor}): {e}"))),
    };
    // Overwritten before it goes (on a memory file system this is all there is of it).
    if let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) {
        let _ = std::fs::OpenOptions::new().write(true).open(&path).and_then(|mut f| f.write_all(&vec![0u8; len as usize]).and_then(|()| f.sync_all()));
    }
    drop(dir);
    result
}
