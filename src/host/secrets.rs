//! Secrets on the host: the repository's age files are decrypted in memory with the host's
//! identity, each value is named by a keyed hash, and systemd gets it encrypted with its own
//! credential key (`systemd-creds encrypt`, bound to the host's
//! `/var/lib/systemd/credential.secret`, and its TPM where it has one), read by the unit's
//! `LoadCredentialEncrypted=`. So the plaintext never rests on disk; the manager decrypts
//! it into the service's `$CREDENTIALS_DIRECTORY` (a non-swappable in-memory file system) at
//! every start, after a reboot and a plain `systemctl restart` too, without fleetwright.
//!
//! The credential file is named by the value's id: an HMAC-SHA256 of the plaintext keyed with
//! the host's identity file. The same value encrypted again has the same id (nothing
//! restarts); a new value is a new file name, so a changed unit, restarted per `onChange`
//! like any change — and recorded, by hash, in the inventory with the unit. Without the
//! identity the id tells nothing about the value.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{KeyInit, Mac as _};
use zeroize::Zeroizing;

use super::HostConfig;
use crate::desired::Desired;
use crate::spec::Fleet;

/// Where the host's identity is looked for when `--identity` names none, in this order.
pub const DEFAULT_IDENTITIES: [&str; 2] = crate::secrets::HOST_IDENTITIES;

/// An identity file is small; a larger one is not read.
const MAX_IDENTITY_BYTES: u64 = 64 << 10;

/// The host's identity: the keys that decrypt its secrets.
pub struct Identity {
    pub path: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Keys the value ids (the file's bytes).
    mac_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The identity file `explicit` names, or the first of [`DEFAULT_IDENTITIES`] there is.
pub fn identity_path(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    DEFAULT_IDENTITIES.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        format!(
            "this host has no identity to decrypt secrets with: none of {} exists. Give one with --identity FILE (an age identity from age-keygen, or an OpenSSH ed25519 private key), and list its public key under the host's `keys` in the Fleet document",
            DEFAULT_IDENTITIES.join(", ")
        )
    })
}

impl Identity {
    /// Read the identity at `path`: an age identity file (`AGE-SECRET-KEY-1…` lines) or an
    /// OpenSSH private key without a passphrase.
    pub fn load(path: &Path) -> Result<Identity, String> {
        let shown = path.display();
        let mut bytes = Zeroizing::new(Vec::new());
        let f = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!("{shown}: cannot read the host's identity (it is root's): run this as root"),
            _ => format!("{shown}: cannot read the host's identity: {e}"),
        })?;
        f.take(MAX_IDENTITY_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
        if bytes.len() as u64 > MAX_IDENTITY_BYTES {
            return Err(format!("{shown} is too large to be an identity file"));
        }
        let keys: Vec<Box<dyn age::Identity + Send + Sync>> = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            match age::ssh::Identity::from_buffer(&bytes[..], Some(shown.to_string())) {
                Ok(id @ age::ssh::Identity::Unencrypted(_)) => vec![Box::new(id)],
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    return Err(format!("{shown} is protected by a passphrase; a host's identity must be readable unattended (root only, mode 0600)"));
                }
                Ok(age::ssh::Identity::Unsupported(_)) | Err(_) => {
                    return Err(format!("{shown} is not an OpenSSH ed25519 private key age can use (use the host's ssh_host_ed25519_key, or an age identity)"));
                }
            }
        } else {
            let file = age::IdentityFile::from_buffer(&bytes[..]).map_err(|e| format!("{shown} is not an age identity file: {e}"))?;
            let keys = file.into_identities().map_err(|e| format!("{shown}: {e}"))?;
            if keys.is_empty() {
                return Err(format!("{shown} holds no identity"));
            }
            keys
        };
        let mut mac_key = Zeroizing::new(b"fleetwright secret id v1\0".to_vec());
        mac_key.extend_from_slice(&bytes);
        Ok(Identity { path: path.to_path_buf(), keys, mac_key })
    }

    /// Decrypt one secret file (`shown`: its path, for errors). The plaintext stays in memory
    /// that is wiped when dropped.
    pub fn decrypt(&self, shown: &str, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let reader = age::armor::ArmoredReader::new(ciphertext);
        let d = age::Decryptor::new(reader).map_err(|e| format!("{shown}: not a readable age file: {e}"))?;
        let mut r = d.decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => format!(
                "{shown} is not encrypted to this host's key ({}); encrypt it again to the Fleet's recipients (`fleetwright secret rekey {shown}`) and list this host's public key under its `keys`",
                self.path.display()
            ),
            e => format!("{shown}: cannot be decrypted with {}: {e}", self.path.display()),
        })?;
        let mut out = Zeroizing::new(Vec::new());
        r.by_ref()
            .take(crate::secrets::MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("{shown}: the encrypted content is corrupt or truncated ({e})"))?;
        if out.len() > crate::secrets::MAX_SECRET_BYTES {
            return Err(format!("{shown}: the secret is larger than 1 MiB, the most systemd delivers as a credential"));
        }
        Ok(out)
    }

    /// The id of a value: hex of HMAC-SHA256(identity, plaintext), 128 bits of it.
    pub fn value_id(&self, plaintext: &[u8]) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.mac_key).expect("HMAC takes keys of any length");
        mac.update(plaintext);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// The secrets of `fleet` this host's agents use: path → the first place that names it.
fn used_here<'f>(cfg: &'f HostConfig, fleet: &'f Fleet) -> BTreeMap<&'f str, &'f crate::spec::model::SecretRef> {
    let mut used = BTreeMap::new();
    for s in fleet.agents_for_host(&cfg.host).flat_map(|a| a.run.secrets.values()) {
        used.entry(s.path.as_str()).or_insert(s);
    }
    used
}

/// The identity this host decrypts with (`--identity`, or the first default there is).
fn host_identity(cfg: &HostConfig) -> Result<Identity, String> {
    identity_path(cfg.identity.as_deref()).and_then(|p| Identity::load(&p))
}

/// The id of every secret this host's agents use, by path; or why some cannot be read here
/// (one message per file, never a value).
pub fn value_ids(cfg: &HostConfig, fleet: &Fleet) -> Result<BTreeMap<String, String>, Vec<String>> {
    let used = used_here(cfg, fleet);
    if used.is_empty() {
        return Ok(BTreeMap::new());
    }
    let id = host_identity(cfg).map_err(|e| vec![e])?;
    let mut ids = BTreeMap::new();
    let mut errors = Vec::new();
    for (path, secret) in used {
        match id.decrypt(path, &secret.ciphertext) {
            Ok(plain) => {
                ids.insert(path.to_string(), id.value_id(&plain));
            }
            // Where the spec names it, as every error about a spec says.
            Err(e) => errors.push(format!("{}: {e}", secret.loc)),
        }
    }
    if errors.is_empty() { Ok(ids) } else { Err(errors) }
}

/// How long `systemd-creds encrypt` may take.
const CREDS_TIMEOUT: Duration = Duration::from_secs(30);

/// Encrypt `plaintext` as credential `name` with systemd's host key: what
/// `LoadCredentialEncrypted=` reads. The plaintext goes through a pipe, never a file.
fn systemd_encrypt(name: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    let run = |key: Option<&str>| {
        let mut cmd = std::process::Command::new("systemd-creds");
        cmd.arg("encrypt").arg(format!("--name={name}"));
        if let Some(k) = key {
            cmd.arg(format!("--with-key={k}"));
        }
        cmd.args(["-", "-"]);
        fleetwright_sys::proc::output_with_input(cmd, Some(plaintext), CREDS_TIMEOUT).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "systemd-creds is not installed (secrets need systemd 250 or later)".to_string(),
            _ => format!("systemd-creds encrypt: {e}"),
        })
    };
    // systemd's own choice first: the TPM2 and the host key, where the machine has them.
    let mut out = run(None)?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("temporary file system") {
        // /var/lib/systemd on a tmpfs (a stateless machine, a container): its host key goes at
        // the next boot, and credentials sealed with it cannot be opened after. The key of
        // this boot still seals them for now, said loudly.
        tracing::warn!(
            "systemd's credential key (/var/lib/systemd/credential.secret) is on a temporary file system and no TPM2 is available: the credential of secret {name} is sealed with it, and will not open after a reboot"
        );
        out = run(Some("host"))?;
    }
    if !out.status.success() {
        return Err(format!("systemd-creds encrypt failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// Write every credential file `want` names that is not there yet (before any unit that reads
/// it is written): decrypted from `fleet`, encrypted again by systemd, written atomically,
/// root only. Returns the files written.
pub fn write_credentials(cfg: &HostConfig, fleet: &Fleet, want: &Desired) -> Result<Vec<String>, String> {
    let missing: Vec<(&String, &crate::desired::Credential)> = want.credentials.iter().filter(|(p, _)| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    let id = host_identity(cfg)?;
    let root = cfg.layout().credentials();
    make_private_dir(&root)?;
    let mut written = Vec::new();
    for (path, cred) in missing {
        let secret = fleet
            .agent(&cred.agent)
            .and_then(|a| a.run.secrets.get(&cred.name))
            .ok_or_else(|| format!("secret {} of agent {} is not in the fleet", cred.name, cred.agent))?;
        let plain = id.decrypt(&secret.path, &secret.ciphertext)?;
        // The same value's id, or the file would be named for another.
        if !path.contains(&format!("/{}-{}.cred", cred.name, id.value_id(&plain))) {
            return Err(format!("secret {}: its value changed while it was applied; apply again", secret.path));
        }
        let sealed = systemd_encrypt(&cred.name, &plain)?;
        let dir = Path::new(path).parent().expect("credential files are in a directory");
        make_private_dir(dir)?;
        fleetwright_sys::fsutil::write_atomic(Path::new(path), &sealed, 0o600).map_err(|e| format!("{path}: {e}"))?;
        written.push(path.clone());
    }
    Ok(written)
}

/// A directory of root's, mode 0700 (made if missing, its mode set if not).
fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory; fleetwright keeps the host's encrypted credentials there", dir.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Remove the credential files no unit names any more: not desired, and not read by a unit
/// that kept its old file (`keep`: the contents of such units). Empty agent directories go too.
pub fn prune_credentials(cfg: &HostConfig, want: &Desired, keep: &[String]) -> Vec<PathBuf> {
    let root = cfg.layout().credentials();
    let kept: std::collections::BTreeSet<&str> =
        want.credentials.keys().map(String::as_str).chain(keep.iter().flat_map(|c| crate::unit::encrypted_credentials(c).map(|(_, p)| p))).collect();
    let mut gone = Vec::new();
    let Ok(agents) = std::fs::read_dir(&root) else { return gone };
    for a in agents.flatten() {
        let dir = a.path();
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        let mut left = 0;
        for f in files.flatten() {
            let p = f.path();
            let named = p.to_str().is_some_and(|s| kept.contains(s));
            if named || p.extension().is_none_or(|e| e != "cred") {
                left += 1;
                continue;
            }
            match fleetwright_sys::fsutil::remove_durable(&p) {
                Ok(()) => gone.push(p),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "an old credential file was not removed");
                    left += 1;
                }
            }
        }
        if left == 0 {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    gone
}

/// Encrypt `plaintext` to `recipients` (`age1…` or `ssh-ed25519 …` lines), armored: what
/// `fleetwright secret encrypt|edit|rekey` commit, and what `age -d` reads.
pub fn encrypt_to(recipients: &[String], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::str::FromStr as _;
    if recipients.is_empty() {
        return Err("there is no one to encrypt to: list the hosts' public keys (hosts.NAME.keys) and the operators' (operators) in the Fleet document".into());
    }
    let mut parsed: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
    for r in recipients {
        if r.starts_with("age1") {
            parsed.push(Box::new(age::x25519::Recipient::from_str(r).map_err(|e| format!("{r}: {e}"))?));
        } else {
            parsed.push(Box::new(age::ssh::Recipient::from_str(r).map_err(|e| format!("{r}: {e:?}"))?));
        }
    }
    let enc = age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient)).map_err(|e| e.to_string())?;
    let armor = age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor).map_err(|e| e.to_string())?;
    let mut w = enc.wrap_output(armor).map_err(|e| e.to_string())?;
    w.write_all(plaintext).map_err(|e| e.to_string())?;
    w.finish().and_then(|a| a.finish()).map_err(|e| e.to_string())
}

/// Where an operator's identity is looked for when `--identity` names none, in this order
/// (relative to the home directory).
pub const OPERATOR_IDENTITIES: [&str; 2] = [".config/fleetwright/identity", ".ssh/id_ed25519"];
