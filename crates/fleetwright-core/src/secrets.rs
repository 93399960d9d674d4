//! Secrets in the repository (pure): age-encrypted files that agents name in `run.secrets`.
//!
//! Nothing here decrypts (the host does, with the `age` crate and the host's identity). What can
//! be known without any key is checked here, so that review on a laptop catches it: that a
//! secret file is an age file at all (its header parses), and to whom it is encrypted. An
//! `ssh-ed25519` recipient stanza carries a tag of the key it is for (the first four bytes of
//! the SHA-256 of the public key, age-encryption.org/v1), so a file that a host listed in the
//! Fleet document cannot decrypt is an error at the line that names it. An `X25519` stanza says
//! nothing about its recipient (that is age's design): only that there is one can be checked.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

use crate::spec::diag::{Diagnostics, Stage};
use crate::spec::model::Fleet;

/// The first line of every age file.
const AGE_V1: &str = "age-encryption.org/v1";
const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";
/// Where a host keeps the identity that decrypts its secrets (`host::secrets` looks there when
/// `--identity` names none): no agent's credential, environment file or sink token may come
/// from a directory holding one.
pub const HOST_IDENTITIES: [&str; 2] = ["/etc/fleetwright/identity", "/etc/ssh/ssh_host_ed25519_key"];

/// A secret file larger than this is refused (systemd's credentials are at most 1 MiB; an
/// encrypted one is a little larger than its value).
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// One recipient stanza of an age header: its type (`X25519`, `ssh-ed25519`, `ssh-rsa`,
/// `scrypt`, a plugin's) and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub kind: String,
    pub args: Vec<String>,
}

/// The header of an age file: to whom it is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub stanzas: Vec<Stanza>,
    pub armored: bool,
}

/// A public key a secret can be encrypted to: a host's or an operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `ssh-ed25519 AAAA… [comment]`, with its age stanza tag.
    SshEd25519 { line: String, tag: String },
    /// `age1…` (an X25519 recipient).
    X25519(String),
}

impl PublicKey {
    /// The key as `age -r` takes it (an ssh key without its comment).
    pub fn recipient(&self) -> String {
        match self {
            PublicKey::SshEd25519 { line, .. } => line.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            PublicKey::X25519(k) => k.clone(),
        }
    }
}

/// Parse a public key as the Fleet document lists it.
pub fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("ssh-ed25519 ") {
        let b64 = rest.split_whitespace().next().unwrap_or("");
        let blob = STANDARD.decode(b64).map_err(|_| "the ssh-ed25519 key is not valid base64; paste the whole line of the .pub file".to_string())?;
        // The wire format: string "ssh-ed25519", string <32 bytes>.
        let ok = blob.len() == 4 + 11 + 4 + 32 && blob[..4] == [0, 0, 0, 11] && &blob[4..15] == b"ssh-ed25519" && blob[15..19] == [0, 0, 0, 32];
        if !ok {
            return Err("this is not an ssh-ed25519 public key (its encoded part is not one); paste the whole line of the .pub file".into());
        }
        let tag = STANDARD_NO_PAD.encode(&Sha256::digest(&blob)[..4]);
        return Ok(PublicKey::SshEd25519 { line: s.to_string(), tag });
    }
    if s.starts_with("age1") {
        check_bech32(s, "age")?;
        return Ok(PublicKey::X25519(s.to_string()));
    }
    if s.starts_with("ssh-") || s.starts_with("ecdsa-") {
        let kind = s.split_whitespace().next().unwrap_or(s);
        return Err(format!("{kind} keys are not supported; use the host's ssh-ed25519 key (/etc/ssh/ssh_host_ed25519_key.pub) or an age key (age1…)"));
    }
    if s.starts_with("AGE-SECRET-KEY-") {
        return Err(
            "this is a PRIVATE age key: never put it in the repository (remove it from the history too); list the public key, which `age-keygen -y` prints"
                .into(),
        );
    }
    Err("not a public key: expected `ssh-ed25519 AAAA…` (an OpenSSH .pub line) or `age1…` (an age X25519 recipient)".into())
}

/// The BIP-173 checksum of a bech32 string with human-readable part `hrp` (how an age
/// recipient is written): a mistyped key is caught here, not at encryption time.
fn check_bech32(s: &str, hrp: &str) -> Result<(), String> {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let bad = || format!("{s:?} is not a valid age recipient (a mistyped or truncated key?); age-keygen -y prints it from the identity");
    if s != s.to_ascii_lowercase() {
        return Err(bad());
    }
    let Some((h, data)) = s.rsplit_once('1') else { return Err(bad()) };
    if h != hrp || data.len() < 6 {
        return Err(bad());
    }
    let mut values = Vec::with_capacity(data.len());
    for c in data.bytes() {
        values.push(CHARSET.iter().position(|&x| x == c).ok_or_else(bad)? as u32);
    }
    let mut chk: u32 = 1;
    let mut feed = |v: u32| {
        const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
        let top = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ v;
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    };
    for b in h.bytes() {
        feed(u32::from(b >> 5));
    }
    feed(0);
    for b in h.bytes() {
        feed(u32::from(b & 31));
    }
    for v in values {
        feed(v);
    }
    // An X25519 key is 32 bytes: 52 data characters and 6 of checksum.
    if chk == 1 && data.len() == 58 { Ok(()) } else { Err(bad()) }
}

/// Read the header of an age file (binary or armored), without any key.
pub fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.is_empty() {
        return Err("the file is empty; it should be an age-encrypted file (`fleetwright secret encrypt` writes one)".into());
    }
    let trimmed = bytes.trim_ascii_start();
    let (binary, armored) = if trimmed.starts_with(ARMOR_BEGIN.as_bytes()) {
        let text = std::str::from_utf8(trimmed).map_err(|_| "the armored age file is not text".to_string())?;
        let body = text[ARMOR_BEGIN.len()..].trim_ascii();
        let Some(body) = body.strip_suffix(ARMOR_END) else {
            return Err("the armored age file has no END line (truncated?)".into());
        };
        let b64: String = body.split_ascii_whitespace().collect();
        (STANDARD.decode(b64).map_err(|_| "the armored age file is not valid base64 (corrupt?)".to_string())?, true)
    } else {
        (bytes.to_vec(), false)
    };
    let first = binary.split(|&b| b == b'\n').next().unwrap_or(&[]);
    if first != AGE_V1.as_bytes() {
        return Err(if binary.starts_with(b"age-encryption.org/") {
            "the file is of an age version this fleetwright does not read".into()
        } else {
            "the file is not encrypted with age (it does not start with `age-encryption.org/v1`); a secret is committed only encrypted: `fleetwright secret encrypt`".into()
        });
    }
    let mut stanzas: Vec<Stanza> = Vec::new();
    let mut rest = &binary[AGE_V1.len() + 1..];
    let mut in_body = false;
    loop {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err("the age header ends early (the file is truncated or corrupt)".into());
        };
        let line = std::str::from_utf8(&rest[..nl]).map_err(|_| "the age header is corrupt".to_string())?;
        rest = &rest[nl + 1..];
        if let Some(mac) = line.strip_prefix("--- ") {
            if in_body || stanzas.is_empty() || mac.len() != 43 {
                return Err("the age header is corrupt (its MAC line is malformed)".into());
            }
            break;
        }
        if let Some(st) = line.strip_prefix("-> ") {
            if in_body {
                return Err("the age header is corrupt (a stanza body does not end)".into());
            }
            let mut words = st.split(' ');
            let kind = words.next().unwrap_or("").to_string();
            if kind.is_empty() {
                return Err("the age header is corrupt (a stanza without a type)".into());
            }
            stanzas.push(Stanza { kind, args: words.map(str::to_string).collect() });
            in_body = true;
            continue;
        }
        if !in_body || line.len() > 64 {
            return Err("the age header is corrupt".into());
        }
        // A body ends with its first line shorter than 64 columns.
        if line.len() < 64 {
            in_body = false;
        }
    }
    if rest.is_empty() {
        return Err("the age file has a header and no content (truncated)".into());
    }
    Ok(Header { stanzas, armored })
}

impl Header {
    /// Whether a file with this header is (as far as can be told without the key) encrypted to
    /// `key`: an ssh-ed25519 stanza of its tag, or for an X25519 key any X25519 stanza.
    pub fn may_be_for(&self, key: &PublicKey) -> bool {
        match key {
            PublicKey::SshEd25519 { tag, .. } => self.stanzas.iter().any(|s| s.kind == "ssh-ed25519" && s.args.first() == Some(tag)),
            PublicKey::X25519(_) => self.stanzas.iter().any(|s| s.kind == "X25519"),
        }
    }
}

/// Normalize a secret's path as written in `run.secrets` (relative to the fleet directory).
pub fn normalize_path(p: &str) -> Result<String, String> {
    if p.starts_with('/') {
        return Err("a secret is a file of the fleet repository: give its path relative to the fleet directory (secrets/token.age), not an absolute path; for a file on the host use run.credentials".into());
    }
    let mut parts = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("a secret's path may not leave the fleet directory (`..`)".into()),
            s if s.starts_with('.') => return Err(format!("{s:?} is hidden; fleetwright does not read hidden paths of the repository")),
            s => parts.push(s),
        }
    }
    let norm = parts.join("/");
    if !norm.ends_with(".age") || norm.len() <= 4 || norm.ends_with("/.age") {
        return Err("secret files end in `.age` (they are age-encrypted; `fleetwright secret encrypt` makes one)".into());
    }
    Ok(norm)
}

/// Check every secret the fleet's agents name against the files of the commit (`files`:
/// normalized path → bytes, every `*.age` file of the fleet directory), and keep each one's
/// ciphertext in the fleet. `None`: the files are not known (a spec file checked alone): only
/// the spec's own checks apply. The hosts are checked where the Fleet document lists their keys.
pub fn attach(fleet: &mut Fleet, files: Option<&BTreeMap<String, Vec<u8>>>, diags: &mut Diagnostics) {
    let Some(files) = files else { return };
    let keys: BTreeMap<&str, Vec<PublicKey>> =
        fleet.host_keys.iter().map(|(h, ks)| (h.as_str(), ks.iter().filter_map(|k| parse_public_key(k).ok()).collect())).collect();
    // The hosts with keys that run each agent using a secret.
    let hosts_of: BTreeMap<String, Vec<&str>> = fleet
        .agents
        .iter()
        .filter(|a| !a.run.secrets.is_empty())
        .map(|a| (a.name.clone(), keys.keys().copied().filter(|h| fleet.runs_on(a, h)).collect()))
        .collect();
    for agent in &mut fleet.agents {
        for (name, secret) in &mut agent.run.secrets {
            let Some(bytes) = files.get(&secret.path) else {
                diags.push_at(
                    Stage::Fleet,
                    secret.loc.clone(),
                    format!(
                        "secret {name}: there is no file {} in the fleet directory (secrets are files of the repository, relative to the fleet directory); make it with `fleetwright secret encrypt {}` and commit it",
                        secret.path, secret.path
                    ),
                );
                continue;
            };
            if bytes.len() > MAX_SECRET_BYTES {
                diags.push_at(
                    Stage::Fleet,
                    secret.loc.clone(),
                    format!("secret {name}: {} is larger than 1 MiB, the most systemd delivers as a credential", secret.path),
                );
                continue;
            }
            let header = match parse_header(bytes) {
                Ok(h) => h,
                Err(e) => {
                    diags.push_at(Stage::Fleet, secret.loc.clone(), format!("secret {name}: {}: {e}", secret.path));
                    continue;
                }
            };
            for host in hosts_of.get(&agent.name).into_iter().flatten() {
                let host_keys = &keys[host];
                if !host_keys.is_empty() && !host_keys.iter().any(|k| header.may_be_for(k)) {
                    let what = if host_keys.iter().all(|k| matches!(k, PublicKey::X25519(_))) {
                        "has no X25519 recipient at all (an X25519 stanza does not say whose key it is, so only that can be checked)"
                    } else {
                        "is not encrypted to any of its keys"
                    };
                    diags.push_at(
                        Stage::Fleet,
                        secret.loc.clone(),
                        format!(
                            "secret {name}: {} {what}, and host {host} runs agent {:?}: it could not decrypt it. Encrypt it again to the Fleet's recipients: fleetwright secret rekey {}",
                            secret.path, agent.name, secret.path
                        ),
                    );
                }
            }
            secret.ciphertext = bytes.clone();
        }
    }
}

/// The recipients a secret is encrypted to: the keys of every host that runs an agent using
/// it (every host with keys, when no agent uses it yet), and every operator. Sorted, deduplicated.
pub fn recipients_for(fleet: &Fleet, path: &str) -> Vec<String> {
    let users: Vec<&crate::spec::model::Agent> = fleet.agents.iter().filter(|a| a.run.secrets.values().any(|s| s.path == path)).collect();
    let mut out: Vec<String> = Vec::new();
    for (host, keys) in &fleet.host_keys {
        if users.is_empty() || users.iter().any(|a| fleet.runs_on(a, host)) {
            out.extend(keys.iter().filter_map(|k| parse_public_key(k).ok()).map(|k| k.recipient()));
        }
    }
    out.extend(fleet.operators.iter().filter_map(|k| parse_public_key(k).ok()).map(|k| k.recipient()));
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519` output (its private half thrown away: a header is read without
    /// it), and the recipient of age's own documentation. That the tags agree with what the
    /// `age` tool writes is the real tier's test (tests/it/secrets.rs).
    const SSH_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGobtR3ulgnbrPHo+HnRZDcsBndOWlXeUID2hsWwNWEa test@fleetwright";
    const AGE_PUB: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn header_with(stanzas: &[&str]) -> Vec<u8> {
        let mut h = format!("{AGE_V1}\n");
        for s in stanzas {
            h.push_str(&format!("-> {s}\n"));
            h.push_str("c29tZSBib2R5\n");
        }
        h.push_str(&format!("--- {}\n", "A".repeat(43)));
        let mut b = h.into_bytes();
        b.extend_from_slice(&[0u8; 32]);
        b
    }

    #[test]
    fn ssh_keys_get_the_tag_age_writes() {
        let PublicKey::SshEd25519 { tag, .. } = parse_public_key(SSH_PUB).unwrap() else { panic!("not ssh") };
        // The tag: base64 of the first four bytes of SHA-256 over the key's wire format.
        let blob = STANDARD.decode(SSH_PUB.split(' ').nth(1).unwrap()).unwrap();
        assert_eq!(tag, STANDARD_NO_PAD.encode(&Sha256::digest(&blob)[..4]));
        assert_eq!(tag.len(), 6);
        assert_eq!(parse_public_key(SSH_PUB).unwrap().recipient(), SSH_PUB.rsplit_once(' ').unwrap().0);
    }

    #[test]
    fn age_recipients_are_checked_by_their_checksum() {
        assert_eq!(parse_public_key(AGE_PUB), Ok(PublicKey::X25519(AGE_PUB.into())));
        let typo = AGE_PUB.replace("ql3z", "ql3y");
        assert!(parse_public_key(&typo).unwrap_err().contains("not a valid age recipient"));
        assert!(parse_public_key(&AGE_PUB[..40]).is_err());
        assert!(parse_public_key("AGE-SECRET-KEY-1QQQ").unwrap_err().contains("PRIVATE"));
        assert!(parse_public_key("ssh-rsa AAAAB3NzaC1yc2E= x").unwrap_err().contains("not supported"));
        assert!(parse_public_key("ssh-ed25519 AAAAB3NzaC1yc2E= x").unwrap_err().contains("not an ssh-ed25519 public key"));
        assert!(parse_public_key("hello").is_err());
    }

    #[test]
    fn headers_say_to_whom_a_file_is_encrypted() {
        let PublicKey::SshEd25519 { tag, .. } = parse_public_key(SSH_PUB).unwrap() else { panic!() };
        let h = parse_header(&header_with(&[&format!("ssh-ed25519 {tag} c2hhcmU"), "X25519 c2hhcmU"])).unwrap();
        assert_eq!(h.stanzas.len(), 2);
        assert!(h.may_be_for(&parse_public_key(SSH_PUB).unwrap()));
        assert!(h.may_be_for(&parse_public_key(AGE_PUB).unwrap()));
        let only_other = parse_header(&header_with(&["ssh-ed25519 AAAAAA c2hhcmU"])).unwrap();
        assert!(!only_other.may_be_for(&parse_public_key(SSH_PUB).unwrap()));
        assert!(!only_other.may_be_for(&parse_public_key(AGE_PUB).unwrap()));
    }

    #[test]
    fn armored_files_are_read_too() {
        let bin = header_with(&["X25519 c2hhcmU"]);
        let b64 = STANDARD.encode(&bin);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let armored = format!("{ARMOR_BEGIN}\n{}\n{ARMOR_END}\n", lines.join("\n"));
        let h = parse_header(armored.as_bytes()).unwrap();
        assert!(h.armored);
        assert_eq!(h.stanzas[0].kind, "X25519");
        assert!(parse_header(format!("{ARMOR_BEGIN}\n{}\n", lines[0]).as_bytes()).unwrap_err().contains("truncated"));
    }

    #[test]
    fn what_is_not_an_age_file_says_so() {
        assert!(parse_header(b"").unwrap_err().contains("empty"));
        assert!(parse_header(b"sk-live-1234\n").unwrap_err().contains("not encrypted with age"));
        let full = header_with(&["X25519 c2hhcmU"]);
        // Truncated anywhere in the header, or right after it.
        for cut in [10, 30, full.len() - 33, full.len() - 32] {
            assert!(parse_header(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_header(b"age-encryption.org/v2\n").unwrap_err().contains("version"));
    }

    #[test]
    fn a_secret_must_be_there_and_for_every_host_that_runs_its_agent() {
        let PublicKey::SshEd25519 { tag, .. } = parse_public_key(SSH_PUB).unwrap() else { panic!() };
        let fleet = format!(
            "apiVersion: fleetwright/v1\nkind: Fleet\nhosts:\n  a: {{keys: [\"{SSH_PUB}\"]}}\n  b: {{keys: [{AGE_PUB}]}}\n  c: {{}}\noperators: [{AGE_PUB}]\n"
        );
        let agent = |name: &str, hosts: &str| {
            format!(
                "apiVersion: fleetwright/v1\nkind: Agent\nname: {name}\nhosts: [{hosts}]\nrun:\n  command: [/bin/true]\n  user: u\n  secrets: {{token: s/{name}.age}}\n"
            )
        };
        let files = vec![
            ("fleet.yaml".to_string(), fleet),
            ("on-a.yaml".to_string(), agent("on-a", "a")),
            ("on-b.yaml".to_string(), agent("on-b", "b")),
            ("on-c.yaml".to_string(), agent("on-c", "c")),
        ];
        let load = |secrets: &BTreeMap<String, Vec<u8>>| crate::spec::load_with(&files, Some(secrets), &crate::spec::calendar::NoDatabase);
        let for_a = header_with(&[&format!("ssh-ed25519 {tag} c2hhcmU")]);
        let x25519 = header_with(&["X25519 c2hhcmU"]);
        let ok: BTreeMap<String, Vec<u8>> =
            [("s/on-a.age".to_string(), for_a.clone()), ("s/on-b.age".to_string(), x25519.clone()), ("s/on-c.age".to_string(), x25519.clone())].into();
        let f = load(&ok).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(f.agent("on-a").unwrap().run.secrets["token"].ciphertext, for_a, "the ciphertext is kept for the host");
        assert_eq!(recipients_for(&f, "s/on-a.age"), [AGE_PUB.to_string(), SSH_PUB.rsplit_once(' ').unwrap().0.to_string()]);
        // Swapped: a's file has no stanza of a's key; b's has no X25519 stanza at all. Host c
        // lists no keys: nothing to check it against.
        let swapped: BTreeMap<String, Vec<u8>> =
            [("s/on-a.age".to_string(), x25519.clone()), ("s/on-b.age".to_string(), for_a.clone()), ("s/on-c.age".to_string(), for_a)].into();
        let d = load(&swapped).unwrap_err().to_string();
        assert!(d.contains("on-a.yaml:8:20: secret token: s/on-a.age is not encrypted to any of its keys, and host a runs agent \"on-a\""), "{d}");
        assert!(d.contains("on-b.yaml:8:20: secret token: s/on-b.age has no X25519 recipient at all"), "{d}");
        assert!(!d.contains("on-c.yaml"), "{d}");
        let mut missing = ok.clone();
        missing.remove("s/on-c.age");
        assert!(load(&missing).unwrap_err().to_string().contains("on-c.yaml:8:20: secret token: there is no file s/on-c.age in the fleet directory"));
        // Files not known (a spec file checked alone): only the spec's own checks.
        assert!(crate::spec::load_with(&files, None, &crate::spec::calendar::NoDatabase).is_ok());
    }

    #[test]
    fn secret_paths_stay_in_the_fleet_directory() {
        assert_eq!(normalize_path("./secrets//token.age"), Ok("secrets/token.age".into()));
        assert!(normalize_path("/etc/token.age").is_err());
        assert!(normalize_path("../token.age").is_err());
        assert!(normalize_path("secrets/.hidden/token.age").is_err());
        assert!(normalize_path("secrets/token.txt").unwrap_err().contains(".age"));
        assert!(normalize_path(".age").is_err());
    }
}
