//! The command line from the outside, without a host: what each command leaves behind, what it
//! says when something is wrong, its exit codes, and its help.

use std::path::Path;
use std::process::{Command, Output};

use crate::real::Repo;

const AGENT: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: web\nrun: {command: [/bin/sleep, infinity], user: agent}\n";

fn fw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["--host", "h1"]).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Every entry under `dir`, for an assertion message.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            out.extend(listing(&e.path()));
        }
    }
    out
}

#[test]
fn read_only_commands_leave_no_trace() {
    let repo = Repo::new();
    let c1 = repo.commit(&[("fleet/web.yaml", AGENT)], "one");
    let c2 = repo.commit(&[("fleet/web.yaml", &AGENT.replace("infinity", "1000"))], "two");
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let (r, s) = (repo.path().to_str().unwrap(), state.to_str().unwrap());
    let runs: &[&[&str]] = &[
        &["validate", &format!("{r}/fleet")],
        &["render", "--repo", r, "--path", "fleet"],
        &["inventory", "--repo", r, "--path", "fleet"],
        &["schedule", "--repo", r, "--path", "fleet"],
        &["plan", "--repo", r, "--path", "fleet", "--base", &c1, "--head", &c2],
        &["schema"],
        &["history"],
        &["history", "--json"],
    ];
    for args in runs {
        let o = Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["--host", "h1", "--state-dir", s]).args(*args).output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.code().is_some_and(|c| c <= 1), "{args:?}: {out}{err}");
        assert!(!state.exists(), "{args:?} made {:?}", listing(&state));
    }
    // And the repository is as it was: nothing written into it either.
    let status = Command::new("git").args(["-C", r, "status", "--porcelain"]).output().unwrap();
    assert!(status.stdout.is_empty(), "{}", String::from_utf8_lossy(&status.stdout));
}

#[test]
fn git_failures_are_said_in_plain_words_with_what_to_do() {
    let none = tempfile::tempdir().unwrap();
    let plain = none.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let empty = none.path().join("empty");
    git2::Repository::init(&empty).unwrap();
    let repo = Repo::new();
    repo.commit(&[("web.yaml", AGENT)], "one");
    let cases: [(Vec<String>, &str); 4] = [
        (vec!["render".into(), "--repo".into(), none.path().join("missing").display().to_string()], "no such directory"),
        (vec!["render".into(), "--repo".into(), plain.display().to_string()], "not a git repository; fleetwright applies commits: make it one with `git init`"),
        (vec!["render".into(), "--repo".into(), empty.display().to_string()], "the repository has no commit yet"),
        (vec!["render".into(), "--repo".into(), repo.path().display().to_string(), "--rev".into(), "main".into()], "(the branches here are: master)"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = fw(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("class=") && !err.contains("code="), "libgit2's internals leak: {err}");
        assert_eq!(err.matches("error:").count(), 1, "one message per error: {err}");
    }
    // One table everywhere: a repository that is not there is an error (2) for every command.
    let missing = none.path().join("missing");
    for args in [&["plan", "--repo"][..], &["apply", "--sandbox", "--repo"], &["apply", "--repo"], &["schedule", "--repo"], &["inventory", "--repo"]] {
        let mut args = args.to_vec();
        args.push(missing.to_str().unwrap());
        let o = fw(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?}", text(&o));
    }
    // Both commits of a review that cannot be read: said once, not once per commit.
    let o = fw(&["plan", "--repo", plain.to_str().unwrap(), "--base", "HEAD~1", "--head", "HEAD"]);
    let (_, err) = text(&o);
    assert_eq!((o.status.code(), err.matches("not a git repository").count()), (Some(2), 1), "{err}");
}

#[test]
fn uncommitted_edits_are_said_to_be_left_out() {
    let repo = Repo::new();
    let c = repo.commit(&[("fleet/web.yaml", AGENT)], "one");
    let r = repo.path().to_str().unwrap();
    let (_, err) = text(&fw(&["render", "--repo", r, "--path", "fleet"]));
    assert!(!err.contains("uncommitted"), "a clean tree has nothing to say: {err}");
    std::fs::write(repo.path().join("fleet/web.yaml"), AGENT.replace("infinity", "5")).unwrap();
    std::fs::write(repo.path().join("fleet/new.yaml"), AGENT.replace("web", "new")).unwrap();
    std::fs::write(repo.path().join("NOTES.md"), "not a spec").unwrap();
    let o = fw(&["render", "--repo", r, "--path", "fleet"]);
    let (out, err) = text(&o);
    assert!(err.contains(&format!("warning: fleetwright reads commits: 2 uncommitted changes to spec files are not in {}", &c[..12])), "{err}");
    // What is rendered is the commit, not the edit.
    assert!(out.contains(r#"ExecStart="/bin/sleep" "infinity""#) && !out.contains("agent-new"), "{out}");
}

#[test]
fn a_yaml_file_outside_the_fleet_gets_a_hint_to_use_path() {
    let repo = Repo::new();
    repo.commit(&[("fleet/web.yaml", AGENT), (".github/ci.yaml", "on: push\n"), ("docs/example.yaml", "just: [data\n")], "one");
    let (_, err) = text(&fw(&["render", "--repo", repo.path().to_str().unwrap()]));
    assert!(err.contains("docs/example.yaml:"), "{err}");
    assert!(err.contains("if the fleet is one directory of it, name it with --path DIR"), "{err}");
    let o = fw(&["render", "--repo", repo.path().to_str().unwrap(), "--path", "fleet"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn render_of_an_unknown_agent_is_an_error_naming_the_agents_there_are() {
    let repo = Repo::new();
    repo.commit(&[("web.yaml", AGENT)], "one");
    let o = fw(&["render", "--repo", repo.path().to_str().unwrap(), "nosuch"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no agent \"nosuch\" on host \"h1\"") && err.contains("the agents here are: web"), "{err}");
}

#[test]
fn validate_takes_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/web.yaml"), AGENT).unwrap();
    std::fs::write(dir.path().join("agents/bad.yaml"), AGENT.replace("name: web", "name: Bad_Name")).unwrap();
    let file = dir.path().join("agents/web.yaml");
    let o = fw(&["validate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = fw(&["validate", dir.path().join("agents").to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("agents/bad.yaml:3:7:"), "the file is named as it was reached: {err}");
    assert!(err.ends_with("1 error\n"), "{err}");
}

#[test]
fn no_diff_means_no_diff_in_a_review_too() {
    let repo = Repo::new();
    let c1 = repo.commit(&[("web.yaml", AGENT)], "one");
    let c2 = repo.commit(&[("web.yaml", &AGENT.replace("infinity", "1000"))], "two");
    let r = repo.path().to_str().unwrap();
    for format in ["text", "markdown", "json"] {
        let (with, _) = text(&fw(&["plan", "--repo", r, "--base", &c1, "--head", &c2, "--format", format]));
        let (without, _) = text(&fw(&["plan", "--repo", r, "--base", &c1, "--head", &c2, "--format", format, "--no-diff"]));
        assert!(with.contains(r#"+ExecStart=\"/bin/sleep\" \"1000\""#) || with.contains(r#"+ExecStart="/bin/sleep" "1000""#), "{format}: {with}");
        assert!(!without.contains("+ExecStart="), "{format}: {without}");
        assert!(without.contains("web"), "{format}: the change is still listed: {without}");
    }
}

/// The options of every command, from its `-h`: each has a line of help, and the global ones
/// stand under their own heading.
#[test]
fn every_option_says_what_it_does_and_global_options_have_their_own_heading() {
    let (top, _) = text(&Command::new(env!("CARGO_BIN_EXE_fleetwright")).arg("-h").output().unwrap());
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 20, "{top}");
    for c in commands.iter().map(String::as_str).chain(["mkdir", "signal"]) {
        let (help, _) = text(&Command::new(env!("CARGO_BIN_EXE_fleetwright")).args([c, "-h"]).output().unwrap());
        let (own, global) = help.split_once("Global options:").unwrap_or_else(|| panic!("{c}: no Global options heading:\n{help}"));
        assert!(global.contains("--state-dir") && !own.contains("--state-dir"), "{c}:\n{help}");
        for line in help.lines().filter(|l| l.trim_start().starts_with('-') || (l.starts_with("  ") && l.trim_start().starts_with('['))) {
            let words = line.trim().split_once("  ").map(|(_, w)| w.trim()).unwrap_or("");
            assert!(!words.is_empty(), "{c}: an option without help: {line:?}\n{help}");
        }
    }
}

/// `sandbox up`, then plan/apply/status against it change by change, then `sandbox down`: the
/// tutorial's way of trying a fleet on a machine whose systemd is not to be touched.
#[test]
fn a_sandbox_lives_across_commands_until_it_is_taken_down() {
    if !crate::real::sandbox_or_skip() {
        return;
    }
    let records = tempfile::Builder::new().prefix("sandbox-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let run = |args: &[&str]| {
        let o =
            Command::new(env!("CARGO_BIN_EXE_fleetwright")).env("FLEETWRIGHT_SANDBOX_DIR", records.path()).args(["--host", "h1"]).args(args).output().unwrap();
        let (out, err) = text(&o);
        (o.status.code(), out, err)
    };
    // Whatever happens below, the sandbox goes down with the test.
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_fleetwright")).env("FLEETWRIGHT_SANDBOX_DIR", self.0).args(["sandbox", "down"]).output();
        }
    }
    let _down = Down(records.path());
    let agent = AGENT.replace("user: agent", "user: nobody");
    let repo = Repo::new();
    repo.commit(&[("web.yaml", &agent)], "one");
    let r = repo.path().to_str().unwrap();

    let (code, out, err) = run(&["status", "--sandbox"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("no sandbox is up; start one with `fleetwright sandbox up`"), "{err}");

    let (code, out, err) = run(&["sandbox", "up"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(records.path().join("sandbox.json")).unwrap()).unwrap();
    let manager = record["manager"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{manager}")).exists(), "the sandbox's systemd runs after `up` returned: {out}");

    let (code, out, err) = run(&["apply", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("converged to"), "{out}");
    let (code, out, err) = run(&["status", "--sandbox"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("web") && l.contains(" service ") && l.contains(" ok ")), "{out}");

    // A second change, in the same sandbox: the plan sees what the first apply did.
    repo.commit(&[("web.yaml", &agent.replace("infinity", "100000"))], "two");
    let (code, out, err) = run(&["plan", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(1), "changes pending: {out}{err}");
    assert!(out.contains("agent-web.service") && out.contains("restart"), "{out}");
    let (code, out, err) = run(&["apply", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = run(&["plan", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(0), "converged: {out}");
    // Only commands that act on a host take --sandbox.
    let (code, _, err) = run(&["render", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(2), "{err}");

    let (code, out, err) = run(&["sandbox", "down"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!Path::new(&format!("/proc/{manager}")).exists(), "the sandbox's systemd is gone after `down`");
    assert!(!records.path().join("sandbox.json").exists());
    let (code, _, err) = run(&["plan", "--sandbox", "--repo", r]);
    assert_eq!(code, Some(2), "{err}");
}

/// `apply --sandbox` knows what would fail before a timer finds out: a program the agent's
/// user cannot reach, and with --run-jobs every job run once, its failure with its journal.
#[test]
fn a_sandbox_apply_checks_who_can_run_what_and_runs_the_jobs_on_request() {
    if !crate::real::sandbox_or_skip() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::Builder::new().prefix("private-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let prog = private.path().join("tick");
    std::fs::write(&prog, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let job = |name: &str, command: &str| {
        format!("apiVersion: fleetwright/v1\nkind: Agent\nname: {name}\nrun: {{command: {command}, user: nobody}}\nschedule: {{calendar: daily}}\n")
    };
    let repo = Repo::new();
    repo.commit(
        &[("tick.yaml", &job("tick", &format!("[{}]", prog.display()))), ("fails.yaml", &job("fails", "[/bin/sh, -c, 'echo boom-from-the-job; exit 3']"))],
        "one",
    );
    let o = fw(&["apply", "--sandbox", "--run-jobs", "--repo", repo.path().to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{err}");
    // The directory it may not enter: the private one, or one above it (a clone in a 0700 home).
    let refused = format!("missing: tick: ExecStart program {} cannot be run by user nobody: it may not enter ", prog.display());
    let at = err.find(&refused).unwrap_or_else(|| panic!("{err}")) + refused.len();
    let dir = err[at..].split(" (mode ").next().unwrap();
    assert!(private.path().starts_with(dir), "{dir} is not on the way to {}: {err}", prog.display());
    assert!(err.contains("FAILED agent-fails.service") && err.contains("boom-from-the-job"), "{err}");
    assert!(out.contains("running 2 job(s) once"), "{out}");
}
