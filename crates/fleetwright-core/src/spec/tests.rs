use super::*;

/// The tests' zones: names shaped like `Area/Location` (no database is read).
fn load(files: &[(String, String)]) -> Result<Fleet, Diagnostics> {
    super::load(files, &calendar::NoDatabase)
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

fn errors(list: &[(&str, &str)]) -> String {
    match load(&files(list)) {
        Ok(f) => panic!("expected errors, got a fleet of {} agents", f.agents.len()),
        Err(d) => d.to_string(),
    }
}

const FLEET: &str = "apiVersion: fleetwright/v1
kind: Fleet
unitPrefix: ag-
defaults:
  run: {user: agent, environment: {LOG_LEVEL: info, TZ: UTC}}
  resources: {memoryMax: 2G, cpuQuota: 80%}
  hardening: {noNewPrivileges: true, privateTmp: true}
hosts:
  vps-1: {labels: [gpu]}
journal: {maxUse: 500M, maxRetention: 30d}
";

#[test]
fn loads_a_full_agent_with_defaults_merged() {
    let agent = "apiVersion: fleetwright/v1
kind: Agent
name: outreach
description: Works the outreach queue
hosts: [gpu]
run:
  command: [/usr/bin/node, dist/outreach.js]
  workingDirectory: /srv/outreach
  environment: {LOG_LEVEL: debug}
  credentials: {anthropic: /etc/fleetwright/secrets/anthropic}
  timeout: 30m
  successExitCodes: [75]
schedule:
  cron: \"*/30 * * * *\"
  persistent: true
  randomizedDelay: 2m
resources:
  memoryMax: 1G
  nofile: 65536
after: [db]
---
apiVersion: fleetwright/v1
kind: Agent
name: db
run: {command: [/usr/bin/sqlite-server]}
service: {restart: always, onChange: reload, watchdog: 60s}
";
    let fleet = load(&files(&[("fleet.yaml", FLEET), ("agents/outreach.yml", agent)])).unwrap();
    insta::assert_json_snapshot!(fleet);
    assert_eq!(fleet.agents[1].source, model::Source { file: "agents/outreach.yml".into(), line: 1 });
    assert_eq!(fleet.agents_for_host("vps-1").count(), 2);
    assert_eq!(fleet.agents_for_host("other").map(|a| a.name.as_str()).collect::<Vec<_>>(), ["db"]);
}

#[test]
fn reports_every_error_at_once_with_positions() {
    let bad = "apiVersion: fleetwright/v1
kind: Agent
name: Bad_Name
run:
  comand: [node]
  user: root
schedule: {calendar: \"\", every: 10m}
resources: {memoryMax: lots, cpuQuota: 80}
hardening: {protectSystem: strictt}
service: {restart: sometimes}
after: [nobody]
---
apiVersion: fleetwright/v1
kind: Agnet
---
apiVersion: fleetwright/v2
kind: Agent
";
    let also_bad = "apiVersion: fleetwright/v1\nkind: Agent\nname: ok\nrun: {command: [bin/x, \"a\\nb\"], user: agent, environment: {1BAD: x}}\nresources: {tasksMax: 0}\n";
    insta::assert_snapshot!(errors(&[("a.yaml", bad), ("b.yaml", also_bad)]));
}

#[test]
fn semantic_errors_are_all_reported_in_one_document() {
    let bad = "apiVersion: fleetwright/v1
kind: Agent
name: Bad_Name
run:
  command: [node, x]
  user: root
  timeout: forever
schedule: {calendar: \"*:0/30\", every: 10m}
resources: {memoryMax: lots, cpuQuota: 80}
hardening: {protectSystem: strictt}
after: [nobody]
";
    insta::assert_snapshot!(errors(&[("a.yaml", bad)]));
}

#[test]
fn defaults_errors_are_reported_once_at_the_fleet() {
    let fleet = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults:\n  resources: {memoryMax: huge}\n";
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: x}\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: b\nrun: {command: [/bin/true], user: x}\n";
    assert_eq!(
        errors(&[("fleet.yaml", fleet), ("a.yaml", a)]),
        "fleet.yaml:4:26: memoryMax: invalid size \"huge\"; write bytes with an optional K, M, G or T suffix (base 1024), like 512M or 2G\n"
    );
}

#[test]
fn duplicate_names_cycles_and_second_fleet() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: x}\nafter: [b]\n";
    let b = "apiVersion: fleetwright/v1\nkind: Agent\nname: b\nrun: {command: [/bin/true], user: x}\nafter: [a]\n---\napiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: x}\n";
    let f = "apiVersion: fleetwright/v1\nkind: Fleet\n---\napiVersion: fleetwright/v1\nkind: Fleet\n";
    insta::assert_snapshot!(errors(&[("a.yaml", a), ("b.yaml", b), ("f.yaml", f)]));
}

#[test]
fn syntax_and_type_errors_point_at_the_spot() {
    insta::assert_snapshot!(errors(&[
        ("syntax.yaml", "apiVersion: fleetwright/v1\nkind: Agent\nname: [unclosed\n"),
        ("type.yaml", "apiVersion: fleetwright/v1\nkind: Agent\nname: x\nrun:\n  command: /bin/true\n"),
        ("nokind.yaml", "apiVersion: fleetwright/v1\nname: x\n"),
    ]));
}

#[test]
fn an_unclosed_bracket_is_shown_where_it_was_opened() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/sleep, 1], user: agent\n\nschedule: {every: 1m}\n";
    let files = files(&[("a.yaml", a)]);
    let d = load(&files).unwrap_err();
    let sources = sources(&files);
    assert_eq!(
        d.render(|f| sources.get(f).copied(), str::to_string),
        "a.yaml:4:6: YAML syntax error: this '{' is never closed; close it with '}' (the parser noticed at 6:9: while parsing a flow mapping, did not find expected ',' or '}')
 4 | run: {command: [/bin/sleep, 1], user: agent
   |      ^
"
    );
}

#[test]
fn a_misspelled_required_field_is_said_once_as_the_unknown_field() {
    // `run:` on line 5, the typo on line 6: "run.command is required" would be its consequence.
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\n# the worker\nrun:\n  comand: [/bin/true]\n  usr: agent\n";
    assert_eq!(
        errors(&[("a.yaml", a)]),
        "a.yaml:6:3: unknown field `comand`; did you mean `command`?\na.yaml:7:3: unknown field `usr`; did you mean `user`?\n"
    );
    // A misspelled `schedule` makes a service, which a concurrency group does not fit: said once.
    let b = "apiVersion: fleetwright/v1\nkind: Agent\nname: b\nrun: {command: [/bin/true], user: x}\nconcurrency: {group: g, limit: 1}\nschedul: {calendar: daily}\n";
    assert_eq!(errors(&[("b.yaml", b)]), "b.yaml:6:1: unknown field `schedul`; did you mean `schedule`?\n");
    // Entries of a list: `pth` for `path`, `maxage` for `maxAge`.
    let c = "apiVersion: fleetwright/v1\nkind: Agent\nname: c\nrun: {command: [/bin/true], user: x}\nlogs: [{pth: /srv/c/logs, maxage: 7d}]\n";
    assert_eq!(
        errors(&[("c.yaml", c)]),
        "c.yaml:5:9: unknown field `pth`; did you mean `path`?\nc.yaml:5:27: unknown field `maxage`; did you mean `maxAge`?\n"
    );
}

#[test]
fn a_cause_is_listed_before_its_consequences() {
    // No "did you mean" for `cmd`: both are said, the unknown field first, though the missing
    // command is reported further left (at the mapping).
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {cmd: [/bin/true], user: x}\n";
    let e = errors(&[("a.yaml", a)]);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with("a.yaml:4:7: unknown field `cmd`; expected one of: "), "{e}");
    assert!(lines[1].starts_with("a.yaml:4:6: run.command is required"), "{e}");

    // Across files: the Fleet document whose defaults would have given the user, before the
    // agent without one (though `agents/` sorts before `fleet.yaml`); a file that cannot be
    // read before the `after` that names the agent written in it.
    let fleet = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults:\n  run: {usr: agent}\n";
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true]}\n";
    let b = "apiVersion: fleetwright/v1\nkind: Agent\nname: worker\nrun: {command: [/bin/true], user: w}\nafter: [db]\n";
    let db = "apiVersion: fleetwright/v1\nkind: Agent\nname: db\nrun: {command: [/bin/db], user: db\n";
    let e = errors(&[("agents/a.yaml", a), ("agents/b.yaml", b), ("fleet.yaml", fleet), ("agents/db.yaml", db)]);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert!(lines[0].starts_with("agents/db.yaml:4:6: YAML syntax error: this '{' is never closed"), "{e}");
    assert_eq!(lines[1], "fleet.yaml:4:9: unknown field `usr`; did you mean `user`?");
    assert!(lines[2].starts_with("agents/a.yaml:4:6: run.user is not set"), "{e}");
    assert_eq!(lines[3], "agents/b.yaml:5:9: `after` names \"db\", which is not an agent of this fleet");
}

#[test]
fn injection_through_text_fields_is_refused() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\ndescription: \"x\\n[Service]\\nExecStartPre=/bin/rm -rf /\"\nrun: {command: [/bin/true], user: x, environment: {A: \"1\\nExecStart=/bin/sh\"}}\n";
    let e = errors(&[("a.yaml", a)]);
    assert!(e.contains("a.yaml:4:14: description contains the control character"), "{e}");
    assert!(e.contains("a.yaml:5:55: environment value of A contains the control character"), "{e}");
}

#[test]
fn empty_and_comment_only_files_are_fine() {
    let fleet = load(&files(&[("empty.yaml", ""), ("c.yaml", "# nothing\n"), ("d.yaml", "---\n---\n")])).unwrap();
    assert!(fleet.agents.is_empty());
    assert_eq!(fleet.unit_prefix, "agent-");
}

#[test]
fn spec_hash_ignores_where_the_agent_is_written() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: x}\n";
    let moved = format!("# moved\n\n{a}");
    let h1 = load(&files(&[("a.yaml", a)])).unwrap().agents[0].spec_hash();
    let h2 = load(&files(&[("b/c.yaml", &moved)])).unwrap().agents[0].spec_hash();
    let h3 = load(&files(&[("a.yaml", &a.replace("/bin/true", "/bin/false"))])).unwrap().agents[0].spec_hash();
    assert_eq!(h1, h2);
    assert_ne!(h1, h3);
}

#[test]
fn spec_paths_skip_hidden_and_non_yaml() {
    assert!(is_spec_path("agents/a.yaml"));
    assert!(is_spec_path("b.yml"));
    assert!(!is_spec_path(".github/workflows/ci.yaml"));
    assert!(!is_spec_path("agents/.draft.yaml"));
    assert!(!is_spec_path("README.md"));
}

#[test]
fn root_from_the_fleet_defaults_is_refused_unless_allowed() {
    let fleet = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults:\n  run: {user: root}\n";
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true]}\n";
    assert_eq!(
        errors(&[("fleet.yaml", fleet), ("a.yaml", a)]),
        "fleet.yaml:4:15: run.user is root, which the Fleet does not allow; use an unprivileged user, or set allowRoot: true in the Fleet document\n"
    );
    let allowed = fleet.replace("kind: Fleet\n", "kind: Fleet\nallowRoot: true\n");
    assert_eq!(load(&files(&[("fleet.yaml", &allowed), ("a.yaml", a)])).unwrap().agents[0].run.user.as_deref(), Some("root"));
}

#[test]
fn persistent_with_every_is_an_error_where_it_is_written() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: x}\nschedule: {every: 10m, persistent: true}\n";
    assert!(errors(&[("a.yaml", a)]).starts_with("a.yaml:5:36: persistent: applies to calendar and cron schedules only"), "{}", errors(&[("a.yaml", a)]));
    // From the Fleet's defaults it is not the agent's mistake: accepted (and meaningless).
    let fleet = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults: {schedule: {persistent: true}}\n";
    let b = "apiVersion: fleetwright/v1\nkind: Agent\nname: b\nrun: {command: [/bin/true], user: x}\nschedule: {every: 10m}\n";
    assert!(load(&files(&[("f.yaml", fleet), ("b.yaml", b)])).is_ok());
}

#[test]
fn a_concurrency_group_has_one_limit() {
    let a = |n: &str, l: u32| {
        format!(
            "apiVersion: fleetwright/v1\nkind: Agent\nname: {n}\nrun: {{command: [/bin/true], user: x}}\nschedule: {{calendar: hourly}}\nconcurrency: {{group: gpu, limit: {l}}}\n"
        )
    };
    let e = errors(&[("a.yaml", &a("a", 2)), ("b.yaml", &a("b", 3))]);
    assert_eq!(e, "b.yaml:3:7: concurrency group \"gpu\" has limit 3 here but 2 in agent \"a\"; give every agent of a group the same limit\n");
}

#[test]
fn a_value_of_the_wrong_type_hides_no_other_error() {
    let a = "apiVersion: fleetwright/v1
kind: Agent
name: Bad_Name
enabled: yes
hosts: vps-1
run: {command: \"/bin/true --x\", user: agent, successExitCodes: 75, timeout: 5 parsecs}
schedule: {calendar: daily, persistent: \"maybe\"}
hardening: {noNewPrivileges: {a: 1}, readWritePaths: /srv/x, protectSystem: strikt}
concurrency: {group: g, limit: two}
backups: [{sqlite: /srv/a.db, to: /srv/b, keep: {last: -1}, verify: 1}]
after: db
environment_typo: 1
";
    let f = "apiVersion: fleetwright/v1\nkind: Fleet\nallowRoot: no\nhosts: {h: {labels: gpu}}\n";
    insta::assert_snapshot!(errors(&[("a.yaml", a), ("fleet.yaml", f)]));
}

#[test]
fn scalars_are_kept_as_written() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/echo, 1.10, 0x1F, 1e3, 007, true], user: agent, environment: {V: 1.10, F: 3.0, H: 0x1F, O: 0o17, E: 1e3, B: yes}}\n";
    let fleet = load(&files(&[("a.yaml", a)])).unwrap();
    let run = &fleet.agents[0].run;
    assert_eq!(run.command, ["/bin/echo", "1.10", "0x1F", "1e3", "007", "true"]);
    let env: Vec<(&str, &str)> = run.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("B", "yes"), ("E", "1e3"), ("F", "3.0"), ("H", "0x1F"), ("O", "0o17"), ("V", "1.10")]);
}

#[test]
fn empty_sections_byte_order_marks_numeric_users_and_systemd_booleans() {
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: agent}\nschedule:\nhealth: ~\n";
    let e = errors(&[("a.yaml", a)]);
    assert!(e.contains("a.yaml:5:9: `schedule` is empty; fill it in or remove the line"), "{e}");
    assert!(e.contains("a.yaml:6:9: `health` is empty"), "{e}");

    let bom = "\u{feff}apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: agent}\n";
    assert_eq!(load(&files(&[("a.yaml", bom)])).unwrap().agents[0].name, "a");

    for (user, ok) in [("0", true), ("1000", true), ("00", false), ("0100", false), ("65535", false), ("4294967295", false), ("4294967294", true)] {
        let a = format!("apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {{command: [/bin/true], user: \"{user}\"}}\n");
        let f = "apiVersion: fleetwright/v1\nkind: Fleet\nallowRoot: true\n";
        assert_eq!(load(&files(&[("a.yaml", &a), ("f.yaml", f)])).is_ok(), ok, "user {user}");
    }

    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: agent}\nhardening: {protectSystem: yes, protectHome: no}\n";
    let h = &load(&files(&[("a.yaml", a)])).unwrap().agents[0].hardening;
    assert_eq!((h.protect_system.as_deref(), h.protect_home.as_deref()), (Some("true"), Some("false")));
}

#[test]
fn settings_that_would_do_nothing_are_refused_where_they_are_written() {
    let job = "apiVersion: fleetwright/v1\nkind: Agent\nname: j\nrun: {command: [/bin/true], user: a}\nschedule: {calendar: daily}\nhealth: {heartbeat: {file: /srv/j/hb, maxAge: 30s}, check: [/bin/true]}\n";
    let svc = "apiVersion: fleetwright/v1\nkind: Agent\nname: s\nrun: {command: [/bin/true], user: a}\nconcurrency: {group: g, limit: 1}\n";
    let tmp = "apiVersion: fleetwright/v1\nkind: Agent\nname: t\nrun: {command: [/bin/true], user: a}\nhardening: {privateTmp: true}\nlogs: [{path: /tmp/t/logs, maxAge: 1d}]\nbackups: [{sqlite: /var/tmp/t.db, to: /srv/bk}]\nhealth: {heartbeat: {file: /tmp/t/hb, maxAge: 30s}}\n";
    let e = errors(&[("j.yaml", job), ("s.yaml", svc), ("t.yaml", tmp)]);
    for want in [
        "j.yaml:6:21: health.heartbeat: applies to long-running agents only",
        "j.yaml:6:60: health.check: applies to long-running agents only",
        "s.yaml:5:14: concurrency: applies to scheduled agents only",
        "t.yaml:6:15: path: \"/tmp/t/logs\" is in the agent's private /tmp",
        "t.yaml:7:20: sqlite: \"/var/tmp/t.db\" is in the agent's private /tmp",
        "t.yaml:8:28: file: \"/tmp/t/hb\" is in the agent's private /tmp",
    ] {
        assert!(e.contains(want), "{want}\n{e}");
    }
    // Without privateTmp, /tmp is the real one, for the helpers too.
    let ok = tmp.replace("hardening: {privateTmp: true}\n", "");
    assert!(load(&files(&[("t.yaml", &ok)])).is_ok());
}

#[test]
fn a_secret_in_the_environment_is_a_warning_where_it_is_written() {
    let fleet = "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults:\n  run: {user: agent, environment: {DB_PASSWORD: hunter2}}\n";
    let a = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun:\n  command: [/bin/true]\n  environment: {LOG_LEVEL: info, API_TOKEN: abc}\n";
    let f = load(&files(&[("fleet.yaml", fleet), ("a.yaml", a)])).unwrap();
    let w: Vec<String> = f.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("a.yaml:6:34: warning: environment variable API_TOKEN looks like a secret"), "{w:?}");
    assert!(w[1].starts_with("fleet.yaml:4:36: warning: environment variable DB_PASSWORD looks like a secret"), "{w:?}");
    assert!(w[0].contains("use `run.credentials`"), "{w:?}");
    // The agent is still valid and runs with it: a warning, not an error.
    assert_eq!(f.agents[0].run.environment["API_TOKEN"], "abc");
}

/// The Fleet's `notify` list: each kind's defaults, and every mistake at its position with the
/// way to fix it — above all a credential written in the repository.
#[test]
fn notify_sinks_are_checked_where_they_are_written() {
    let agent = "apiVersion: fleetwright/v1\nkind: Agent\nname: web\nrun: {command: [/usr/bin/web], user: web}\n";
    let good = "apiVersion: fleetwright/v1
kind: Fleet
notify:
  - {kind: gitea, url: \"https://git.example.com/\", repo: ops/fleet, tokenFile: /etc/fleetwright/secrets/forge.token}
  - {kind: github, tokenFile: /etc/fleetwright/secrets/github.token}
  - {kind: gitlab, url: \"https://gitlab.example.com\", project: group/sub/fleet, tokenFile: /etc/fleetwright/secrets/gl.token}
  - {kind: slack, urlFile: /etc/fleetwright/secrets/slack.url, events: [agent-failed, rolled-back], agents: [web]}
  - {kind: ntfy, url: \"https://ntfy.sh/fleet\"}
";
    let f = load(&files(&[("fleet.yaml", good), ("web.yaml", agent)])).expect("valid");
    assert_eq!(f.notify.len(), 5);
    assert_eq!(f.notify[0].url.as_deref(), Some("https://git.example.com"), "a trailing slash is dropped");
    assert_eq!(f.notify[1].url.as_deref(), Some(model::GITHUB_API), "github's API by default");
    assert_eq!(f.notify[1].repo, None, "from the followed repository's URL, by the daemon");
    assert_eq!(f.notify[2].repo.as_deref(), Some("group/sub/fleet"));
    assert_eq!(f.notify[3].events, ["agent-failed", "rolled-back"]);

    let bad = "apiVersion: fleetwright/v1
kind: Fleet
notify:
  - {kind: gitea, url: \"https://git.example.com\", repo: ops/fleet, token: ghp_abcdef1234567890}
  - {kind: github, repo: fleet}
  - {kind: teams, url: \"https://x.example\"}
  - {kind: webhook, url: \"https://user:pw@hooks.example.com/x\"}
  - {kind: slack}
  - {kind: ntfy, url: \"https://ntfy.sh/t\", events: [deployed, exploded]}
  - {kind: gitea, url: \"https://git.example.com\", tokenFile: /etc/t, events: [agent-failed]}
  - {kind: webhook, url: \"https://h.example\", agents: [wbe]}
";
    let e = errors(&[("fleet.yaml", bad), ("web.yaml", agent)]);
    for want in [
        "fleet.yaml:4:75: token: a credential is never written in the repository",
        "name that file with tokenFile",
        "fleet.yaml:5:5: notify.1: a github sink needs tokenFile",
        "fleet.yaml:5:26: repo: \"fleet\" is not owner/name",
        "fleet.yaml:6:12: kind: invalid value \"teams\"",
        "fleet.yaml:7:26: url: \"https://user:pw@hooks.example.com/x\" holds credentials",
        "fleet.yaml:8:5: notify.4: a slack sink needs where to send: urlFile:",
        "fleet.yaml:9:63: events: invalid value \"exploded\"",
        "fleet.yaml:10:79: events: a forge shows commit statuses only",
        "fleet.yaml:11:56: notify.7.agents names \"wbe\", which is not an agent of this fleet; did you mean `web`?",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}
