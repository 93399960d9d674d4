//! The hostile corpus (`tests/hostile/*.yaml`): one file per way a spec author has tried, or
//! could try, to make fleetwright run something a reviewer did not approve — `User=root`
//! hidden from the checks, injected directives, files root reads or deletes for the agent.
//! Every case is refused by `validate`, by `render` of a commit and (the dangerous ones, marked
//! `# apply: yes`) by `apply` in the real sandbox systemd, where nothing of it may run.
//!
//! A case file starts with three comment lines: `# hostile: what it tries`, `# expect: the
//! diagnostic (FILE:LINE:COL: message, or the start of it)`, and `# apply: yes` or `#`. Add a
//! file for every hole found; never remove one.

use std::path::PathBuf;

use crate::real::*;

struct Case {
    file: String,
    text: String,
    expect: String,
    apply: bool,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let file = p.file_name().unwrap().to_str().unwrap().to_string();
            let header: Vec<&str> = text.split('\n').take(3).collect();
            assert!(header[0].starts_with("# hostile: "), "{file}: first line must be `# hostile: …`");
            let expect = header[1].strip_prefix("# expect: ").unwrap_or_else(|| panic!("{file}: second line must be `# expect: …`")).to_string();
            assert!(expect.starts_with(&format!("{file}:")), "{file}: the expected diagnostic names the file itself");
            let apply = header[2] == "# apply: yes";
            Case { file, text, expect, apply }
        })
        .collect();
    cases.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(cases.len() >= 30, "the corpus shrank to {} cases", cases.len());
    cases
}

/// A valid agent next to every case: the hostile file must still fail the whole commit.
fn good() -> String {
    agent("good").sh("echo up > /tmp/alive; exec sleep 100000").user("agent").yaml()
}

#[test]
fn every_case_is_refused_by_the_spec_loader_at_its_position() {
    let mut failed = Vec::new();
    for c in corpus() {
        let files = vec![("good.yaml".to_string(), good()), (c.file.clone(), c.text.clone())];
        match fleetwright::spec::load(&files, &fleetwright::host::zones::Tzdata) {
            Ok(_) => failed.push(format!("{}: accepted", c.file)),
            Err(d) => {
                let all = d.to_string();
                if !all.lines().any(|l| l.starts_with(&c.expect)) {
                    failed.push(format!("{}: expected a line starting with\n  {}\ngot:\n{all}", c.file, c.expect));
                }
            }
        }
    }
    assert!(failed.is_empty(), "{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn every_case_is_refused_by_validate_and_by_render_of_a_commit() {
    let exe = env!("CARGO_BIN_EXE_fleetwright");
    let mut failed = Vec::new();
    for c in corpus() {
        // `validate DIR`, as a contributor runs it before pushing.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        std::fs::write(dir.path().join("good.yaml"), good()).unwrap();
        std::fs::write(dir.path().join(&c.file), &c.text).unwrap();
        let out = std::process::Command::new(exe).args(["validate", dir.path().to_str().unwrap()]).output().unwrap();
        let text = stdout(&out) + &stderr(&out);
        if code(&out) != 1 || !text.lines().any(|l| l.ends_with(&c.expect) || l.contains(&format!("/{}", c.expect))) {
            failed.push(format!("{}: validate exited {} with:\n{text}", c.file, code(&out)));
        }
        // `render` of a commit, as plan and apply read it: nothing rendered at all.
        let repo = Repo::new();
        repo.commit(&[("good.yaml", &good()), (&c.file, &c.text)], "hostile");
        let out = std::process::Command::new(exe).args(["--host", "vps-1", "render", "--repo", repo.path().to_str().unwrap()]).output().unwrap();
        let (o, e) = (stdout(&out), stderr(&out));
        if code(&out) == 0 || !e.contains(&c.expect) || o.contains("[Service]") {
            failed.push(format!("{}: render exited {} with stdout:\n{o}\nstderr:\n{e}", c.file, code(&out)));
        }
    }
    assert!(failed.is_empty(), "{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn nothing_of_a_dangerous_case_runs_in_a_real_systemd() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The control: the same sandbox runs what it is given.
    repo.commit(&[("good.yaml", &good())], "good");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    host.wait("the good agent to start", 20, || host.sb.host_path("/tmp/alive").exists());
    let good_run = host.prop("agent-good.service", "InvocationID");
    let units_before: Vec<String> = std::fs::read_dir(host.unit_dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let cases: Vec<Case> = corpus().into_iter().filter(|c| c.apply).collect();
    assert!(cases.len() >= 8, "only {} cases are applied", cases.len());
    for c in &cases {
        repo.commit(&[("good.yaml", &good()), (&c.file, &c.text)], &c.file);
        let out = host.apply(&repo);
        assert_eq!(code(&out), 1, "{}: apply of an invalid commit: {}", c.file, stderr(&out));
        assert!(stderr(&out).contains(&c.expect), "{}: {}", c.file, stderr(&out));
        // Nothing written: the unit directory is as it was, so nothing of the case can run.
        let units: Vec<String> = std::fs::read_dir(host.unit_dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(units, units_before, "{}: the unit directory changed", c.file);
        assert!(!host.sb.host_path("/tmp/pwned").exists(), "{}: the payload ran", c.file);
        assert_eq!(host.prop("agent-good.service", "InvocationID"), good_run, "{}: the last good state was disturbed", c.file);
    }
}

/// The renderer's last line of defence on values no spec check produced: a model built (or
/// changed) by hand, as a bug in the checks would leave it.
#[test]
fn the_renderer_refuses_hand_built_values_that_would_break_the_unit_format() {
    use fleetwright::render::{RenderCtx, render_agent};
    use fleetwright::types::Scope;
    let ctx = RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() };
    let fleet = crate::common::fleet(&[("good.yaml", &good())]);
    assert!(render_agent(&fleet, &fleet.agents[0], &ctx, "c").is_ok());
    type Mutation = fn(&mut fleetwright::spec::model::Agent);
    let cases: [(&str, Mutation); 7] = [
        ("user root", |a| a.run.user = Some("root".into())),
        ("no user", |a| a.run.user = None),
        ("group shadow", |a| a.run.group = Some("shadow".into())),
        ("user with a newline", |a| a.run.user = Some("agent\nExecStartPre=+/bin/sh".into())),
        ("description with a directive", |a| a.description = Some("x\n[Service]\nExecStartPre=+/bin/sh".into())),
        ("environment value with a newline", |a| {
            a.run.environment.insert("A".into(), "1\nUser=root".into());
        }),
        ("working directory ending in a backslash", |a| a.run.working_directory = Some("/srv/x\\".into())),
    ];
    for (what, mutate) in cases {
        let mut agent = fleet.agents[0].clone();
        mutate(&mut agent);
        let r = render_agent(&fleet, &agent, &ctx, "c");
        assert!(r.is_err(), "{what}: rendered {r:?}");
        // And the desired state carries the refusal, so that the plan cannot be applied.
        let mut f = fleet.clone();
        f.agents[0] = agent;
        let d = fleetwright::desired::desired(&f, "vps-1", &ctx, "c", &Default::default());
        assert!(d.units.is_empty() && d.refused.len() == 1, "{what}: {:?}", d.refused);
        let p = fleetwright::plan::plan(&d, &crate::common::converged(&d), Default::default());
        assert!(p.errors.iter().any(|e| e.contains("refusing to render it")), "{what}: {:?}", p.errors);
    }
}

/// A credential directory the agent's user can write would let it plant a symlink to any file
/// that root then reads for it: the host refuses to apply until only root can change it.
#[test]
fn a_credential_directory_that_an_agent_can_change_is_refused_at_apply() {
    use std::os::unix::fs::PermissionsExt;
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let creds = host.sb.host_path("/srv/creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::set_permissions(host.sb.host_path("/srv"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(creds.join("tok"), "secret").unwrap();
    let fleet = fleet_doc().credential_dirs(&["/srv/creds"]).yaml();
    let reader = agent("reader").command(&["/bin/sleep", "100000"]).user("agent").credential("tok", "/srv/creds/tok").yaml();
    repo.commit(&[("fleet.yaml", &fleet), ("reader.yaml", &reader)], "creds");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("credentialDirs: /srv/creds: /srv/creds is writable by group or others (mode 777)"), "{}", stderr(&out));
    assert!(!host.unit_dir().join("agent-reader.service").exists());
    // Once only root can change it, the same commit applies.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(host.unit_dir().join("agent-reader.service").exists());
}

/// A secret written into `run.environment` is valid, but `validate` (and plan and apply) say
/// where it is and what to use instead, without printing the value (no source line).
#[test]
fn validate_warns_of_a_secret_in_the_environment() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Written by hand: the warning names the line and column of the value.
    let agent = "apiVersion: fleetwright/v1\nkind: Agent\nname: bot\nrun:\n  command: [/bin/true]\n  user: agent\n  environment: {SLACK_BOT_TOKEN: xoxb-not-a-real-token}\n";
    std::fs::write(dir.path().join("bot.yaml"), agent).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["validate", dir.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bot.yaml:7:17: warning: environment variable SLACK_BOT_TOKEN looks like a secret"), "{err}");
    assert!(err.contains("run.credentials"), "{err}");
    assert!(!err.contains("xoxb-not-a-real-token") && !stdout(&out).contains("xoxb-not-a-real-token"), "{err}");
    assert!(stdout(&out).contains("valid: 1 agents"), "{}", stdout(&out));
}
