//! Secrets in the repository (issue 16), against a real systemd: files encrypted with the `age`
//! tool (Debian's package) to an ssh-ed25519 key made here reach their agents as credentials;
//! the plaintext is nowhere on disk or in any output; a new value restarts exactly its
//! consumers, the same value encrypted again nothing; a restart and a reboot deliver it
//! without fleetwright; what this host cannot decrypt is refused with nothing changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::real::*;

/// A host key pair (`ssh-keygen -t ed25519`) and an operator's age identity, made for the test
/// under the target directory (visible inside the sandbox; the host's /tmp is not).
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Option<Keys> {
        let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok() || Command::new(tool).arg("-h").output().is_ok();
        if !have("age") || !have("ssh-keygen") {
            missing("the age and ssh-keygen tools (Debian packages age, openssh-client)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("keys-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        for name in ["host", "other"] {
            let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(dir.path().join(name)).output().unwrap();
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = Command::new("age-keygen").arg("-o").arg(dir.path().join("operator")).output().unwrap();
        assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
        Some(Keys { dir })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn public(&self, name: &str) -> String {
        if name == "operator" {
            let out = Command::new("age-keygen").arg("-y").arg(self.path("operator")).output().unwrap();
            return String::from_utf8(out.stdout).unwrap().trim().to_string();
        }
        std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap().trim().to_string()
    }
    /// The path of the public key file `NAME.pub` (for `age -R`).
    fn pub_file(&self, name: &str) -> String {
        self.path(&format!("{name}.pub")).display().to_string()
    }
    /// `--identity FILE` of the host.
    fn identity(&self) -> String {
        self.path("host").display().to_string()
    }
}

/// `value` encrypted by the `age` tool to the public key files or recipients given (`-R` for a
/// file, `-r` for an `age1…`), armored or binary.
fn age_encrypt(value: &str, recipients: &[&str], armor: bool) -> Vec<u8> {
    let mut c = Command::new("age");
    if armor {
        c.arg("-a");
    }
    for r in recipients {
        if r.starts_with("age1") {
            c.args(["-r", r])
        } else {
            c.args(["-R", r])
        };
    }
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn fleet_doc(keys: &Keys) -> String {
    format!("{FLEET}hosts:\n  vps-1: {{keys: [\"{}\"]}}\noperators: [\"{}\"]\n", keys.public("host"), keys.public("operator"))
}

/// `bot` reads its token into /run/fw-test (the sandbox's, for the test to see) at every start;
/// `cron` is a job using the same secret; `plain` uses none.
fn agents() -> Vec<(&'static str, String)> {
    let bot = agent("bot")
        .sh("mkdir -p /run/fw-test; cat \"$CREDENTIALS_DIRECTORY/token\" > /run/fw-test/bot.token; exec sleep 100000")
        .secret("token", "secrets/token.age");
    let cron = job("cron", "cat \"$CREDENTIALS_DIRECTORY/token\" > /run/fw-test/cron.token").every("1h").secret("token", "secrets/token.age");
    vec![("bot.yaml", bot.yaml()), ("cron.yaml", cron.yaml()), ("plain.yaml", service("plain").yaml())]
}

/// The Fleet document with the keys ([`fleet_doc`]), the [`agents`] and `secret` as their
/// secrets/token.age, committed.
fn commit(repo: &Repo, keys: &Keys, secret: &[u8], message: &str) -> String {
    commit_fleet(repo, &fleet_doc(keys), Some(secret), message)
}

/// `fleet` as the Fleet document, the [`agents`], and `secret` (if any) as secrets/token.age,
/// committed.
fn commit_fleet(repo: &Repo, fleet: &str, secret: Option<&[u8]>, message: &str) -> String {
    let agents = agents();
    let mut files: Vec<(&str, &str)> = vec![("fleet.yaml", fleet)];
    files.extend(agents.iter().map(|(n, t)| (*n, t.as_str())));
    let secrets: Vec<(&str, &[u8])> = secret.map(|b| ("secrets/token.age", b)).into_iter().collect();
    repo.commit_with(&files, &secrets, message)
}

/// fleetwright in the sandbox with `--identity` the host's key.
fn with_identity<'a>(host: &'a Host, keys: &'a Keys) -> impl Fn(&[&str]) -> std::process::Output + 'a {
    let id = keys.identity();
    move |args: &[&str]| host.fw(&[&["--identity", id.as_str()][..], args].concat())
}

/// Every file under `dir` (following no links) that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) => found.push(p),
                _ => {}
            }
        }
    }
    found
}

fn token(host: &Host, agent: &str) -> Option<String> {
    std::fs::read_to_string(host.sb.host_path(format!("/run/fw-test/{agent}.token"))).ok()
}

fn creds(host: &Host, agent: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(host.state_dir().join("credentials").join(agent))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// No plaintext in the unit directory, the state directory, or `outputs`.
fn nowhere(host: &Host, value: &str, outputs: &[&std::process::Output]) {
    assert_eq!(files_holding(&host.unit_dir(), value), Vec::<PathBuf>::new(), "the plaintext in the unit directory");
    assert_eq!(files_holding(&host.state_dir(), value), Vec::<PathBuf>::new(), "the plaintext in the state directory");
    for o in outputs {
        assert!(!stdout(o).contains(value) && !stderr(o).contains(value), "the plaintext in a command's output");
    }
}

#[test]
fn a_secret_from_the_age_tool_reaches_its_agents_and_a_new_value_restarts_only_them() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    let fw = with_identity(&host, &keys);
    let repo = Repo::new();
    let r = repo.path().to_str().unwrap().to_string();
    let host_pub = keys.pub_file("host");
    let operator = keys.public("operator");
    commit(&repo, &keys, &age_encrypt("tok-v1", &[&host_pub, &operator], true), "one");

    let validate = host.fw(&["validate", &r]);
    assert_eq!(code(&validate), 0, "reviewed without any key: {}", stderr(&validate));
    let plan = fw(&["plan", "--repo", &r]);
    assert_eq!(code(&plan), 1);
    assert!(stdout(&plan).contains("LoadCredentialEncrypted=token:"), "{}", stdout(&plan));
    let apply = fw(&["apply", "--repo", &r]);
    assert_eq!(code(&apply), 0, "{}", stderr(&apply));
    host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-v1"));
    host.systemctl(&["start", "agent-cron.service"]);
    host.wait("the job to read its token", 10, || token(&host, "cron").as_deref() == Some("tok-v1"));
    let status = fw(&["status"]);
    nowhere(&host, "tok-v1", &[&validate, &plan, &apply, &status]);
    assert_eq!(creds(&host, "bot").len(), 1, "one credential file: {:?}", creds(&host, "bot"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(host.state_dir().join("credentials")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the credentials directory is root's only");

    // A plain restart gets it again from the encrypted file (no fleetwright involved).
    std::fs::remove_file(host.sb.host_path("/run/fw-test/bot.token")).unwrap();
    host.systemctl(&["restart", "agent-bot.service"]);
    host.wait("bot to read its token after a restart", 10, || token(&host, "bot").as_deref() == Some("tok-v1"));

    // The same value encrypted again (another file, byte for byte): nothing to do.
    let (bot, plain) = (host.prop("agent-bot.service", "InvocationID"), host.prop("agent-plain.service", "InvocationID"));
    commit(&repo, &keys, &age_encrypt("tok-v1", &[&host_pub, &operator], false), "the same value, encrypted again");
    let plan = fw(&["plan", "--repo", &r]);
    assert_eq!(code(&plan), 0, "nothing to do: {}", stdout(&plan));
    assert_eq!(code(&fw(&["apply", "--repo", &r])), 0);
    assert_eq!(host.prop("agent-bot.service", "InvocationID"), bot, "bot not restarted");

    // A new value: the plan says which secret changed (never a value); its service restarts,
    // nothing else does; the old credential file goes.
    let c3 = commit(&repo, &keys, &age_encrypt("tok-v2", &[&host_pub, &operator], true), "rotate the token");
    let plan = fw(&["plan", "--repo", &r]);
    assert_eq!(code(&plan), 1);
    assert!(stdout(&plan).contains("secret token changed"), "{}", stdout(&plan));
    let review = host.fw(&["plan", "--repo", &r, "--base", "HEAD~1", "--head", "HEAD"]);
    assert!(stdout(&review).contains("secret token changed"), "a review without keys says so too: {}", stdout(&review));
    let apply = fw(&["apply", "--repo", &r]);
    assert_eq!(code(&apply), 0, "{}", stderr(&apply));
    host.wait("bot to read the new token", 10, || token(&host, "bot").as_deref() == Some("tok-v2"));
    assert_ne!(host.prop("agent-bot.service", "InvocationID"), bot, "bot restarted");
    assert_eq!(host.prop("agent-plain.service", "InvocationID"), plain, "an agent without the secret is not restarted");
    assert_eq!(creds(&host, "bot").len(), 1, "the old credential file is removed: {:?}", creds(&host, "bot"));
    // The job gets it at its next run.
    host.systemctl(&["start", "agent-cron.service"]);
    host.wait("the job to read the new token", 10, || token(&host, "cron").as_deref() == Some("tok-v2"));
    assert_eq!(host.marker("bot").expect("bot's marker").commit, c3);
    nowhere(&host, "tok-v2", &[&plan, &review, &apply]);
    nowhere(&host, "tok-v1", &[]);

    // The operator's tools, interoperable with the age tool: rekey keeps the value and the
    // host's keyed id (nothing restarts), and `age -d` reads what they wrote.
    let fleet_dir = tempfile::Builder::new().prefix("fleet-wt-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for f in ["fleet.yaml", "bot.yaml", "cron.yaml", "plain.yaml", "secrets/token.age"] {
        std::fs::create_dir_all(fleet_dir.path().join(f).parent().unwrap()).unwrap();
        std::fs::copy(repo.path().join(f), fleet_dir.path().join(f)).unwrap();
    }
    let tool = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(args).arg("--fleet").arg(fleet_dir.path()).current_dir(fleet_dir.path()).output().unwrap()
    };
    let rekey = tool(&["--identity", keys.path("operator").to_str().unwrap(), "secret", "rekey"]);
    assert_eq!(code(&rekey), 0, "{}", stderr(&rekey));
    let sealed = std::fs::read(fleet_dir.path().join("secrets/token.age")).unwrap();
    assert_ne!(sealed, std::fs::read(repo.path().join("secrets/token.age")).unwrap(), "encrypted again");
    let out = Command::new("age").arg("-d").arg("-i").arg(keys.path("host")).arg(fleet_dir.path().join("secrets/token.age")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tok-v2", "age -d reads what rekey wrote");
    nowhere(&host, "tok-v2", &[&rekey]);
}

#[test]
fn a_secret_is_delivered_after_a_reboot_without_fleetwright() {
    let Some(keys) = Keys::new() else { return };
    let disk = tempfile::Builder::new().prefix("disk-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let repo = Repo::new();
    let r = repo.path().to_str().unwrap().to_string();
    let host_pub = keys.pub_file("host");
    commit(&repo, &keys, &age_encrypt("tok-boot", &[&host_pub], true), "one");
    {
        let Some(host) = Host::boot_persistent(disk.path()) else { return };
        let apply = host.fw(&["--identity", &keys.identity(), "apply", "--repo", &r]);
        assert_eq!(code(&apply), 0, "{}", stderr(&apply));
        host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-boot"));
        host.sb.shutdown();
    }
    // A new manager, an empty /run, the same files: what a reboot leaves. No fleetwright
    // runs; the manager decrypts the credential with its own host key.
    let Some(host) = Host::boot_persistent(disk.path()) else { return };
    assert_eq!(token(&host, "bot"), None, "/run is new");
    host.systemctl(&["start", "agent-bot.service"]);
    host.wait("bot to read its token after the reboot", 10, || token(&host, "bot").as_deref() == Some("tok-boot"));
    nowhere(&host, "tok-boot", &[]);
}

#[test]
fn a_secret_this_host_cannot_decrypt_is_refused_and_nothing_changes() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    let fw = with_identity(&host, &keys);
    let repo = Repo::new();
    let r = repo.path().to_str().unwrap().to_string();
    let host_pub = keys.pub_file("host");
    let other_pub = keys.pub_file("other");
    commit(&repo, &keys, &age_encrypt("tok-good", &[&host_pub], true), "good");
    assert_eq!(code(&fw(&["apply", "--repo", &r])), 0);
    host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-good"));
    let before = host.inventory();
    let bot = host.prop("agent-bot.service", "InvocationID");

    // Encrypted to another key, which the Fleet lists: an error at the line, with no key.
    commit(&repo, &keys, &age_encrypt("tok-bad", &[&other_pub], true), "for another host");
    let validate = host.fw(&["validate", &r]);
    assert_eq!(code(&validate), 1);
    assert!(stderr(&validate).contains("bot.yaml:") && stderr(&validate).contains("is not encrypted to any of its keys"), "{}", stderr(&validate));
    // Without the keys in the Fleet, the host finds out: refused, naming the file.
    commit_fleet(&repo, FLEET, Some(&age_encrypt("tok-bad", &[&other_pub], false)), "no keys listed");
    assert_eq!(code(&host.fw(&["validate", &r])), 0, "nothing to check it against");
    let apply = fw(&["apply", "--repo", &r]);
    assert_ne!(code(&apply), 0);
    let err = stderr(&apply);
    let line = err.lines().find(|l| l.contains("secrets/token.age is not encrypted to this host's key")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("bot.yaml:") && line.contains(&keys.identity()), "the spec's place and the identity: {line}");
    // Corrupt, truncated, missing, not age: refused, each naming the file.
    let good = age_encrypt("tok-good", &[&host_pub], false);
    for (what, bytes, says) in [
        ("truncated", good[..good.len() - 10].to_vec(), "secrets/token.age"),
        ("corrupt", [&good[..good.len() - 20], &[0u8; 20][..]].concat(), "secrets/token.age"),
        ("not age", b"sk-plaintext\n".to_vec(), "not encrypted with age"),
    ] {
        commit_fleet(&repo, FLEET, Some(&bytes), what);
        let apply = fw(&["apply", "--repo", &r]);
        assert_ne!(code(&apply), 0, "{what}");
        assert!(stderr(&apply).contains(says), "{what}: {}", stderr(&apply));
    }
    commit_fleet(&repo, FLEET, None, "the file is missing");
    let apply = fw(&["apply", "--repo", &r]);
    assert_ne!(code(&apply), 0);
    assert!(stderr(&apply).contains("there is no file secrets/token.age"), "{}", stderr(&apply));
    // Nothing changed: the inventory, the running bot, its credential.
    assert_eq!(host.inventory().files, before.files);
    assert_eq!(host.prop("agent-bot.service", "InvocationID"), bot);
    assert_eq!(creds(&host, "bot").len(), 1);
    nowhere(&host, "tok-good", &[]);
}

#[test]
fn under_the_daemon_an_undecryptable_secret_holds_the_commit_once() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let host_pub = keys.pub_file("host");
    let other_pub = keys.pub_file("other");
    let c1 = commit(&repo, &keys, &age_encrypt("tok-good", &[&host_pub], true), "good");
    let id = keys.identity();
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--identity", &id, "--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("the first commit", 20, || host.history()["lastGood"] == c1.as_str());
    host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-good"));
    // A commit this host cannot decrypt (the Fleet does not list keys to check it by).
    let c2 = commit_fleet(&repo, FLEET, Some(&age_encrypt("tok-bad", &[&other_pub], true)), "for another host");
    host.wait("the commit to be held", 20, || host.reconciles().iter().any(|r| r["head"] == c2.as_str() && r["result"] == "held"));
    let held: Vec<serde_json::Value> = host.reconciles().into_iter().filter(|r| r["head"] == c2.as_str() && r["result"] == "held").collect();
    assert!(held[0]["error"].as_str().unwrap().contains("secrets/token.age is not encrypted to this host's key"), "{held:?}");
    // Asked again (a sync), it is not tried again: the verdict stands, reported once.
    let before = host.reconciles().first().and_then(|r| r["id"].as_i64()).unwrap_or(0);
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("the sync to be recorded", 20, || {
        host.reconciles().first().and_then(|r| r["id"].as_i64()).unwrap_or(0) > before
            || host.reconciles().first().is_some_and(|r| r["repeats"].as_i64().unwrap_or(1) > 1)
    });
    let verdicts: Vec<serde_json::Value> =
        host.history()["verdicts"].as_array().cloned().unwrap_or_default().into_iter().filter(|v| v["commit"] == c2.as_str()).collect();
    assert_eq!(verdicts.len(), 1, "one verdict, one report: {verdicts:?}");
    assert_eq!(verdicts[0]["verdict"], "held");
    assert_eq!(host.history()["lastGood"], c1.as_str());
    assert_eq!(token(&host, "bot").as_deref(), Some("tok-good"));
}

#[test]
fn the_operators_tools_encrypt_edit_and_rekey_to_the_fleets_recipients_and_leave_no_plaintext() {
    let Some(keys) = Keys::new() else { return };
    let fleet = tempfile::Builder::new().prefix("fleet-wt-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtime = tempfile::Builder::new().prefix("xdg-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(fleet.path().join("fleet.yaml"), fleet_doc(&keys)).unwrap();
    for (name, text) in agents() {
        std::fs::write(fleet.path().join(name), text).unwrap();
    }
    std::fs::create_dir(fleet.path().join("secrets")).unwrap();
    let file = fleet.path().join("secrets/token.age");
    let tool = |args: &[&str], stdin: &str, editor: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetwright"));
        c.args(["--identity", keys.path("operator").to_str().unwrap()]).args(args).current_dir(fleet.path());
        c.env("XDG_RUNTIME_DIR", runtime.path()).env("EDITOR", editor).env_remove("VISUAL");
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let decrypt = |key: &str| {
        let out = Command::new("age").arg("-d").arg("-i").arg(keys.path(key)).arg(&file).output().unwrap();
        assert!(out.status.success(), "age -d -i {key}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    // encrypt: to the host that runs its agents and to the operator, readable by both with `age`.
    let out = tool(&["secret", "encrypt", "secrets/token.age"], "tok-one", "false");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("encrypted to 2 recipients (used by bot, cron)"), "{}", stderr(&out));
    assert_eq!((decrypt("host"), decrypt("operator")), ("tok-one".to_string(), "tok-one".to_string()));
    let recipients = tool(&["secret", "recipients", "secrets/token.age"], "", "false");
    assert_eq!(stdout(&recipients).lines().count(), 2, "{}", stdout(&recipients));
    assert_eq!(code(&host_validate(fleet.path())), 0, "what the tools write validates");

    // edit: the editor gets the value in a private directory, and what it saves is encrypted.
    let sealed = std::fs::read(&file).unwrap();
    let out = tool(&["secret", "edit", "secrets/token.age"], "", "sh -c 'test \"$(stat -c %a \"$(dirname \"$1\")\")\" = 700 && sed -i s/one/two/ \"$1\"' sh");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(decrypt("host"), "tok-two");
    // An editor that saves nothing new, or fails: the file is left as it was.
    let sealed_two = std::fs::read(&file).unwrap();
    assert_ne!(sealed, sealed_two);
    let out = tool(&["secret", "edit", "secrets/token.age"], "", "true");
    assert!(code(&out) == 0 && stderr(&out).contains("unchanged"), "{}", stderr(&out));
    let out = tool(&["secret", "edit", "secrets/token.age"], "", "sh -c 'echo leaked > \"$1\"; exit 1' sh");
    assert_ne!(code(&out), 0);
    assert_eq!(std::fs::read(&file).unwrap(), sealed_two, "nothing written when the editor fails");
    // No plaintext left anywhere: not in the runtime directory, not in the fleet directory.
    assert_eq!(std::fs::read_dir(runtime.path()).unwrap().count(), 0, "the private directory is removed");
    for needle in ["tok-one", "tok-two", "leaked"] {
        assert_eq!(files_holding(fleet.path(), needle), Vec::<PathBuf>::new(), "{needle} in the fleet directory");
    }

    // rekey: after a new operator is listed, every secret is encrypted to them too; the value stays.
    let second = keys.public("other");
    let doc = fleet_doc(&keys).replace("operators: [", &format!("operators: [\"{second}\", "));
    std::fs::write(fleet.path().join("fleet.yaml"), doc).unwrap();
    let out = tool(&["secret", "rekey"], "", "false");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("encrypted to 3 recipients"), "{}", stderr(&out));
    assert_eq!(decrypt("other"), "tok-two");

    // Outside the fleet directory, or not an .age file: refused, nothing written.
    let out = tool(&["secret", "encrypt", "secrets/token.txt"], "x", "false");
    assert!(code(&out) != 0 && stderr(&out).contains(".age"), "{}", stderr(&out));
    assert!(!fleet.path().join("secrets/token.txt").exists());
    let out = tool(&["secret", "encrypt", "../token.age"], "x", "false");
    assert!(code(&out) != 0 && stderr(&out).contains("not inside the fleet directory"), "{}", stderr(&out));
}

fn host_validate(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetwright")).arg("validate").arg(dir).output().unwrap()
}

#[test]
fn the_shipped_hardened_daemon_unit_delivers_a_secret() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &keys, &age_encrypt("tok-unit", &[&keys.pub_file("host")], true), "one");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/systemd/fleetwright.service")).unwrap();
    let exec = shipped.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let unit = shipped.replace(
        exec,
        &format!(
            "ExecStart={} --host vps-1 --identity {} daemon --repo {} --no-listen --health-grace 0s",
            env!("CARGO_BIN_EXE_fleetwright"),
            keys.identity(),
            repo.path().display()
        ),
    );
    assert!(!host.sb.host_path("/var/lib/systemd/credential.secret").exists(), "systemd's key is made by the unit");
    std::fs::write(host.sb.host_path("/etc/systemd/system/fleetwright.service"), unit).unwrap();
    host.systemctl(&["daemon-reload"]);
    let o = host.sb.systemctl(&["start", "fleetwright.service"]).unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), host.sb.journal("fleetwright.service"));
    host.wait("the fleet", 15, || host.marker_commit("bot").as_deref() == Some(c1.as_str()));
    host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-unit"));
    host.systemctl(&["stop", "fleetwright.service"]);
    nowhere(&host, "tok-unit", &[]);
    assert!(!host.sb.journal("fleetwright.service").contains("tok-unit"), "the plaintext in the daemon's log");
}

#[test]
fn the_hosts_identity_is_never_an_agents_credential_or_a_sinks_token() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    // The identity where the Fleet lets root read credentials from (/srv/creds, the test
    // tier's credential directory), under another name too (a hard link).
    let creds = host.sb.host_path("/srv/creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::copy(keys.path("host"), creds.join("host-key")).unwrap();
    std::fs::hard_link(creds.join("host-key"), creds.join("innocent")).unwrap();
    let repo = Repo::new();
    let r = repo.path().to_str().unwrap().to_string();
    let thief = agent("thief").sh("cat \"$CREDENTIALS_DIRECTORY/k\" > /run/fw-test/stolen; exec sleep 100000").credential("k", "/srv/creds/innocent").yaml();
    let sink = format!("{FLEET}notify: [{{kind: webhook, url: \"http://127.0.0.1:9/x\", tokenFile: /srv/creds/host-key}}]\n");
    for (what, fleet, agents) in [("an agent's credential", FLEET.to_string(), vec![("thief.yaml", thief.as_str())]), ("a sink's token", sink, vec![])] {
        let mut files: Vec<(&str, &str)> = vec![("fleet.yaml", fleet.as_str())];
        files.extend(agents);
        files.push(("plain.yaml", "apiVersion: fleetwright/v1\nkind: Agent\nname: plain\nrun: {command: [/bin/sleep, \"100000\"]}\n"));
        repo.commit(&files, what);
        let apply = host.fw(&["--identity", "/srv/creds/host-key", "apply", "--repo", &r]);
        assert_eq!(code(&apply), 1, "{what}: refused, nothing applied: {}", stderr(&apply));
        assert!(stderr(&apply).contains("is this host's identity"), "{what}: {}", stderr(&apply));
        assert_eq!(host.prop("agent-plain.service", "ActiveState"), "inactive", "{what}: nothing of the commit applied");
        assert!(!host.sb.host_path("/run/fw-test/stolen").exists());
    }
}

#[test]
fn a_deleted_credential_file_is_written_again_by_the_same_commit_without_a_restart() {
    let Some(keys) = Keys::new() else { return };
    let Some(host) = Host::boot() else { return };
    let fw = with_identity(&host, &keys);
    let repo = Repo::new();
    let r = repo.path().to_str().unwrap().to_string();
    commit(&repo, &keys, &age_encrypt("tok-again", &[&keys.pub_file("host")], true), "one");
    assert_eq!(code(&fw(&["apply", "--repo", &r])), 0);
    host.wait("bot to read its token", 10, || token(&host, "bot").as_deref() == Some("tok-again"));
    let bot = host.prop("agent-bot.service", "InvocationID");
    let files = creds(&host, "bot");
    assert_eq!(files.len(), 1);
    std::fs::remove_file(host.state_dir().join("credentials/bot").join(&files[0])).unwrap();
    // The same commit: the fast path sees the file gone and the full apply writes it again.
    let apply = fw(&["apply", "--repo", &r]);
    assert_eq!(code(&apply), 0, "{}", stderr(&apply));
    assert_eq!(creds(&host, "bot"), files, "the same value, the same file");
    assert_eq!(host.prop("agent-bot.service", "InvocationID"), bot, "nothing restarted");
    // And the next start reads it.
    std::fs::remove_file(host.sb.host_path("/run/fw-test/bot.token")).unwrap();
    host.systemctl(&["restart", "agent-bot.service"]);
    host.wait("bot to read its token again", 10, || token(&host, "bot").as_deref() == Some("tok-again"));
}
