//! Hostile output: what fleetwright prints and writes about a fleet must not leak its secrets
//! or flood a terminal. Secret-looking environment values never appear in `plan` (text, JSON,
//! the pull-request comment) and sit in root-only unit files; a commit with a name that is not
//! UTF-8, or too much spec, is refused whole; diagnostics of a hostile file are bounded and
//! escaped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::real::*;

/// Values no output may show.
const SECRET_1: &str = "tok-3f9a1c77e2";
const SECRET_2: &str = "tok-3f9a1c77e3";
const STRIPE: &str = "sk_live_51Hx9q";

fn files(secret: &str, level: &str) -> Vec<(String, String)> {
    let web = agent("web").sh("exec sleep 100000").env("API_TOKEN", secret).env("STRIPE_KEY", STRIPE).env("LOG_LEVEL", level);
    vec![("fleet.yaml".into(), FLEET.into()), ("web.yaml".into(), web.yaml()), ("tick.yaml".into(), job("tick", "echo tick").calendar("daily").yaml())]
}

fn refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn all_output(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

fn assert_no_secret(what: &str, o: &std::process::Output) {
    let all = all_output(o);
    for s in [SECRET_1, SECRET_2, STRIPE] {
        assert!(!all.contains(s), "{what} shows the secret {s}:\n{all}");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `plan --base --head` as a pull request's CI runs it: text, JSON and the Markdown comment
/// say that a secret changed (or not), never what it is.
#[test]
fn pull_request_plans_redact_secret_values() {
    let repo = Repo::new();
    let path = repo.path().to_str().unwrap().to_string();
    let c1 = repo.commit(&refs(&files(SECRET_1, "info")), "one");
    let c2 = repo.commit(&refs(&files(SECRET_2, "debug")), "rotate the token");
    let fw = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(args).output().unwrap();
    for format in ["text", "json", "markdown"] {
        let o = fw(&["plan", "--repo", &path, "--base", &c1, "--head", &c2, "--format", format]);
        assert_eq!(code(&o), 1, "changes: {}", all_output(&o));
        assert_no_secret(format, &o);
        let out = stdout(&o);
        // In JSON the quotes of the unit file are escaped.
        let (changed, unchanged) = if format == "json" {
            (r#"+Environment=\"API_TOKEN=<redacted, changed>\""#, r#" Environment=\"STRIPE_KEY=<redacted, unchanged>\""#)
        } else {
            (r#"+Environment="API_TOKEN=<redacted, changed>""#, r#" Environment="STRIPE_KEY=<redacted, unchanged>""#)
        };
        assert!(out.contains(changed), "{format}:\n{out}");
        assert!(out.contains(unchanged), "{format}:\n{out}");
        assert!(out.contains("+Environment=\"LOG_LEVEL=debug\"") || out.contains(r#"+Environment=\"LOG_LEVEL=debug\""#), "{format}:\n{out}");
    }
    // A new agent: every value is new, none shown.
    let c0 = repo.commit(&[("README.md", "fleet")], "nothing yet");
    let o = fw(&["plan", "--repo", &path, "--base", &c0, "--head", &c2, "--format", "markdown"]);
    assert_no_secret("markdown of a new agent", &o);
    assert!(stdout(&o).contains(r#"+Environment="API_TOKEN=<redacted, changed>""#), "{}", stdout(&o));
}

/// On a real host: `plan` hides the values, `apply` writes the unit file that holds them 0600
/// (and others 0644), a file found 0644 is drift that the next apply repairs without a restart
/// or a daemon-reload, and a file rewritten for a change gets 0600 too.
#[test]
fn units_with_environment_are_written_root_only_and_plans_hide_their_values() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let path = repo.path().to_str().unwrap().to_string();
    repo.commit(&refs(&files(SECRET_1, "info")), "one");

    for args in [&["plan", "--repo", &path][..], &["plan", "--json", "--repo", &path]] {
        let o = host.fw(args);
        assert_eq!(code(&o), 1, "{}", all_output(&o));
        assert_no_secret(&args.join(" "), &o);
        assert!(stdout(&o).contains("API_TOKEN=<redacted, changed>"), "{}", stdout(&o));
    }
    let o = host.apply(&repo);
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_no_secret("apply", &o);
    let unit = |u: &str| host.unit_dir().join(u);
    assert_eq!(mode(&unit("agent-web.service")), 0o600, "the file with API_TOKEN is root only");
    assert_eq!(mode(&unit("agent-tick.timer")), 0o644);
    // The manager read it (as root) and the service runs with the value.
    assert_eq!(host.prop("agent-web.service", "ActiveState"), "active");
    assert!(host.prop("agent-web.service", "Environment").contains(&format!("API_TOKEN={SECRET_1}")));

    // Made world-readable by hand (or written by an older version): drift, and repaired.
    std::fs::set_permissions(unit("agent-web.service"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = host.fw(&["plan", "--no-diff", "--repo", &path]);
    assert_eq!(code(&o), 1, "{}", all_output(&o));
    assert!(stdout(&o).contains("agent-web.service (web): write (mode only)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("drift: its mode is 0644, and should be 0600"), "{}", stdout(&o));
    let status = host.fw(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let web = s["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "web").unwrap().clone();
    assert_eq!(web["state"], "drift", "{web}");
    assert!(web["drift"].to_string().contains("agent-web.service has mode 0644, and should be 0600"), "{web}");
    let id = host.prop("agent-web.service", "InvocationID");
    host.arm_reload_probe();
    let o = host.apply(&repo);
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_eq!(mode(&unit("agent-web.service")), 0o600);
    assert_eq!(host.prop("agent-web.service", "InvocationID"), id, "a mode is no reason to restart");
    assert!(!host.reloaded_since_armed(), "the same content: no daemon-reload");
    assert_eq!(code(&host.fw(&["plan", "--repo", &path])), 0, "converged");

    // 0644 again, then a new token: the rewritten file is 0600, the plan says it changed.
    std::fs::set_permissions(unit("agent-web.service"), std::fs::Permissions::from_mode(0o644)).unwrap();
    repo.commit(&refs(&files(SECRET_2, "info")), "rotate the token");
    let o = host.fw(&["plan", "--repo", &path]);
    assert_no_secret("plan of a rotated token", &o);
    assert!(stdout(&o).contains("-Environment=\"API_TOKEN=<redacted, changed>\"\n    +Environment=\"API_TOKEN=<redacted, changed>\""), "{}", stdout(&o));
    assert!(stdout(&o).contains(" Environment=\"STRIPE_KEY=<redacted, unchanged>\""), "{}", stdout(&o));
    let o = host.apply(&repo);
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_eq!(mode(&unit("agent-web.service")), 0o600);
    assert!(host.prop("agent-web.service", "Environment").contains(&format!("API_TOKEN={SECRET_2}")));
}

/// Commit every `(path bytes, content)` of `files` (names need not be UTF-8) on top of HEAD,
/// the work tree replaced by them.
fn commit_raw(repo: &Repo, files: &[(&[u8], &[u8])]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let r = git2::Repository::open(repo.path()).unwrap();
    for entry in std::fs::read_dir(repo.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != ".git" {
            if p.is_dir() { std::fs::remove_dir_all(&p).unwrap() } else { std::fs::remove_file(&p).unwrap() }
        }
    }
    for (rel, content) in files {
        let p = repo.path().join(std::ffi::OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let mut index = r.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("test", "test@example.com").unwrap();
    let parent = r.head().ok().and_then(|h| h.peel_to_commit().ok());
    r.commit(Some("HEAD"), &sig, &sig, "raw", &tree, &parent.iter().collect::<Vec<_>>()).unwrap().to_string()
}

/// A fleetwright command on this machine that must fail before it touches any host: its
/// directories are throw-away ones.
fn fw_offline(args: &[&str]) -> std::process::Output {
    let state = tempfile::Builder::new().prefix("state-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright"))
        .arg("--state-dir")
        .arg(state.path())
        .arg("--unit-dir")
        .arg(state.path().join("units"))
        .args(["--host", "vps-1"])
        .args(args)
        .output()
        .unwrap()
}

/// A commit with a file name that is not UTF-8 used to be read without that file (and
/// `validate` read it): now the commit is refused, the name shown escaped, by every command
/// that reads a commit, and by `apply` before anything is written.
#[test]
fn a_commit_with_a_name_that_is_not_utf8_is_refused_whole() {
    let repo = Repo::new();
    let path = repo.path().to_str().unwrap().to_string();
    let fleet = files(SECRET_1, "info");
    let c1 = repo.commit(&refs(&fleet), "good");
    let mut raw: Vec<(&[u8], &[u8])> = fleet.iter().map(|(p, t)| (p.as_bytes(), t.as_bytes())).collect();
    let evil = job("evil", "echo evil").calendar("daily").yaml();
    raw.push((b"agents/evil\xff\x1b[2J.yaml", evil.as_bytes()));
    let c2 = commit_raw(&repo, &raw);
    let r = git2::Repository::open(repo.path()).unwrap();
    let agents = r.find_commit(git2::Oid::from_str(&c2).unwrap()).unwrap().tree().unwrap().get_path(Path::new("agents")).unwrap();
    let names: Vec<Vec<u8>> = r.find_tree(agents.id()).unwrap().iter().map(|e| e.name_bytes().to_vec()).collect();
    assert_eq!(names, [b"evil\xff\x1b[2J.yaml".to_vec()], "the commit holds the file");
    let shown = r"agents/evil\xff\x1b[2J.yaml";
    for args in [
        vec!["render", "--repo", &path],
        vec!["plan", "--repo", &path],
        vec!["plan", "--repo", &path, "--base", &c1, "--head", &c2],
        vec!["inventory", "--repo", &path],
        vec!["schedule", "--repo", &path],
    ] {
        let o = fw_offline(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", all_output(&o));
        assert!(stderr(&o).contains(shown) && stderr(&o).contains("not UTF-8"), "{args:?}: {}", stderr(&o));
        assert!(!all_output(&o).contains('\x1b'), "{args:?}: a raw escape sequence reached the terminal");
    }
    // `validate` of the work tree says the same.
    let o = fw_offline(&["validate", &path]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains(shown), "{}", stderr(&o));
}

/// `apply` of a refused commit (a name that is not UTF-8; more than 16 MiB of specs) changes
/// nothing on a real host: the units of the last good commit keep running as they were.
#[test]
fn apply_of_a_refused_commit_changes_nothing() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let fleet = files(SECRET_1, "info");
    repo.commit(&refs(&fleet), "good");
    assert_eq!(code(&host.apply(&repo)), 0);
    let id = host.prop("agent-web.service", "InvocationID");
    let listing = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let units = listing(&host.unit_dir());
    let inventory = std::fs::read(host.state_dir().join("inventory.json")).unwrap();

    let evil = job("evil", "echo evil").calendar("daily").yaml();
    let mut raw: Vec<(&[u8], &[u8])> = fleet.iter().map(|(p, t)| (p.as_bytes(), t.as_bytes())).collect();
    raw.push((b"evil\xff.yaml", evil.as_bytes()));
    commit_raw(&repo, &raw);
    let o = host.apply(&repo);
    assert_ne!(code(&o), 0, "{}", all_output(&o));
    assert!(stderr(&o).contains(r"evil\xff.yaml"), "{}", stderr(&o));

    // 17 files of 1 MiB: each within the limit of one file, together past 16 MiB.
    let big = format!("#{}\n", "x".repeat(fleetwright::spec::MAX_FILE_BYTES - 2));
    let mut many: Vec<(String, String)> = fleet.clone();
    many.extend((0..17).map(|i| (format!("pad/p{i:02}.yaml"), big.clone())));
    repo.commit(&refs(&many), "too much");
    let o = host.apply(&repo);
    assert_ne!(code(&o), 0, "{}", all_output(&o));
    assert!(stderr(&o).contains("add up to more than 16 MiB"), "{}", stderr(&o));

    assert_eq!(listing(&host.unit_dir()), units, "no unit file written or removed");
    assert_eq!(std::fs::read(host.state_dir().join("inventory.json")).unwrap(), inventory, "inventory untouched");
    assert_eq!(host.prop("agent-web.service", "InvocationID"), id, "nothing restarted");
    assert_eq!(host.prop("agent-evil.timer", "LoadState"), "not-found");
}

/// 150 KB of hostile YAML (one line of 12 000 unknown fields; 5 000 bad lines; raw escape
/// sequences) used to print every diagnostic with its whole source line: gigabytes. Now: at
/// most 100 per file, then a count; lines cut at 200 characters; control characters escaped.
#[test]
fn diagnostics_of_a_hostile_file_are_bounded_and_escaped() {
    let keys: String = (0..12_000).map(|i| format!(", zz{i}: 1")).collect();
    let one_line = format!("apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {{command: [/bin/true], user: agent{keys}}}\n");
    assert!(one_line.len() > 130_000);
    let mut many = String::from("apiVersion: fleetwright/v1\nkind: Agent\nname: b\nrun:\n  command: [/bin/true]\n  user: agent\n");
    // Unknown fields whose names hold an escape sequence (YAML's \e and \a: in the message),
    // and values with a right-to-left override and NEL written as YAML escapes (a raw one
    // refuses the whole file at its position: see raw.yaml).
    for i in 0..5000 {
        many.push_str(&format!("  \"k{i}\\e]0;owned\\a\": \"\\u202e{i}\\Nx\"\n"));
    }
    assert!(many.len() > 150_000);
    // Raw control characters: refused by the checker, never shown raw.
    let raw = "apiVersion: fleetwright/v1\nkind: Agent\nname: \x1b]0;owned\x07\x1b[2J\u{202e}\u{85}\n".to_string();

    let check = |what: &str, o: &std::process::Output, files: &[&str]| {
        let err = stderr(o);
        // One file's worth: 100 diagnostics of at most a few hundred characters each.
        assert!(o.stderr.len() < 64 * 1024 * files.len().max(1), "{what}: {} bytes of diagnostics", o.stderr.len());
        assert!(!o.stderr.iter().any(|&b| b == 0x1b || b == 0x07), "{what}: a raw control character reached the terminal:\n{err}");
        assert!(!err.contains(['\u{202e}', '\u{85}']), "{what}: a raw override or NEL reached the terminal");
        for f in files {
            assert!(err.lines().any(|l| l.starts_with("… and ") && l.ends_with(f)), "{what}: no count of the rest in {f}:\n{err}");
        }
        // Every quoted source line is short.
        for l in err.lines().filter(|l| l.contains(" | ")) {
            assert!(l.chars().count() < 230, "{what}: a quoted line of {} characters", l.chars().count());
        }
        err
    };
    for (name, text) in [("one-line.yaml", &one_line), ("many.yaml", &many), ("raw.yaml", &raw)] {
        let dir = tempfile::Builder::new().prefix("hostile-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        std::fs::write(dir.path().join(name), text).unwrap();
        let o = fw_offline(&["validate", dir.path().to_str().unwrap()]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        let counted: Vec<&str> = if name == "raw.yaml" { vec![] } else { vec![name] };
        let err = check(&format!("validate {name}"), &o, &counted);
        if name == "many.yaml" {
            assert!(err.contains("unknown field `k0\\x1b]0;owned\\x07`"), "{err}");
        }
    }

    // All three in a commit, read by `render`.
    let repo = Repo::new();
    repo.commit(&[("one-line.yaml", &one_line), ("many.yaml", &many), ("raw.yaml", &raw)], "hostile");
    let o = fw_offline(&["render", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    check("render", &o, &["one-line.yaml", "many.yaml"]);
}

/// `inventory` and `status` print what a spec (or the records made from one) says: even when
/// a control character gets past the checker, none reaches a terminal raw.
#[test]
fn inventory_and_status_escape_control_characters() {
    let web = agent("web").description("the web").command(&["/usr/bin/web"]).user("agent");
    let mut f = crate::common::fleet(&[("f.yaml", &documents(&[fleet_doc().host("vps-1", &["gpu"]).yaml(), web.yaml()]))]);
    // What the checker refuses, put in after it: an OSC title, a screen clear, a bell, an
    // override, a CSI as one C1 character.
    let evil = "\x1b]0;owned\x07\x1b[2J\u{202e}\u{9b}31m\r";
    f.agents[0].description = Some(format!("the web{evil}"));
    f.agents[0].hosts = vec![format!("vps-1{evil}")];
    f.hosts.insert(format!("gpu{evil}"), vec![format!("label{evil}")]);
    let md = fleetwright::catalog::render_markdown(&f, Some("c0ffee"));
    assert!(!md.chars().any(|c| c.is_control() && c != '\n' || c == '\u{202e}'), "{md:?}");
    assert!(md.contains(r"the web\x1b]0;owned\x07\x1b[2J\u{202e}\u{9b}31m\r"), "{md}");

    use fleetwright::host::status::{AgentStatus, render_text};
    let agents = vec![AgentStatus {
        agent: format!("web{evil}"),
        kind: "service",
        state: "drift",
        enabled: true,
        units: vec![],
        last_run: None,
        next_run: None,
        marker: None,
        drift: vec![format!("agent-web{evil}.service was edited outside fleetwright")],
        problems: vec![format!("heartbeat went stale; last at {evil}")],
        restarts: Some(1),
    }];
    // A verdict's reason quotes what a unit printed: escaped too.
    let deployment = fleetwright::host::status::Deployment {
        head: Some(fleetwright::host::status::Head {
            commit: "c0ffee".into(),
            seen_at: None,
            verdict: Some("bad".into()),
            reason: Some(format!("agent-web.service: start failed {evil}")),
        }),
        ..Default::default()
    };
    let text = render_text(&Default::default(), &agents, Some(&deployment));
    assert!(text.contains(r"start failed \x1b]0;owned"), "{text}");
    assert!(!text.chars().any(|c| c.is_control() && c != '\n' || c == '\u{202e}'), "{text:?}");
    assert!(text.contains(r"drift: agent-web\x1b]0;owned\x07"), "{text}");
    // The colors `status` adds on a terminal are its own, after the escaping.
    let colored = fleetwright::host::status::colorize(&text);
    assert!(colored.contains("\x1b[33mdrift\x1b[0m") && !colored.contains("\x1b]0;"), "{colored:?}");
}
