//! Snapshot tests of rendered units: every spec field mapped to its directive.

use crate::build::{agent, backup, logs};
use crate::common::*;
use fleetwright::inventory::Inventory;

fn render_all(fleet: &fleetwright::spec::Fleet) -> String {
    let d = want(fleet, "0123456789abcdef0123456789abcdef01234567", &Inventory::default());
    d.units.iter().map(|(name, u)| format!("### {name} ({:?})\n{}", u.role, u.content)).collect::<Vec<_>>().join("\n")
}

/// Written as a user writes it (not with `build`): the reference of every field, with the
/// quoting (`"hello \"world\""`, `%`) whose way into the unit file is part of what is shown.
#[test]
fn every_field_maps_to_a_directive() {
    let f = fleet(&[(
        "agents/all.yaml",
        r#"apiVersion: fleetwright/v1
kind: Fleet
unitPrefix: fw-
defaults:
  run: {user: agent, group: agent}
  hardening: {noNewPrivileges: true, privateTmp: true, protectSystem: strict, protectHome: read-only}
---
apiVersion: fleetwright/v1
kind: Agent
name: outreach
description: Works the outreach queue at 100%
run:
  command: [/usr/bin/node, dist/outreach.js, --greeting, "hello \"world\"", "$HOME"]
  workingDirectory: /srv/outreach
  environment: {LOG_LEVEL: info, QUOTE: "a \"b\" 50%"}
  environmentFile: /etc/fleetwright/env/outreach
  credentials: {anthropic: /etc/fleetwright/secrets/anthropic}
  timeout: 30m
  successExitCodes: [75, 3]
schedule: {calendar: "*:0/30", persistent: true, randomizedDelay: 2m, accuracy: 1m}
resources: {memoryMax: 2G, memorySwapMax: 0, cpuQuota: 80%, tasksMax: 256, nofile: 65536}
hardening: {readWritePaths: [/srv/outreach/data]}
backups: [{sqlite: /srv/outreach/store/messages.db, to: /var/backups/outreach}]
logs: [{path: /srv/outreach/logs, maxAge: 14d}]
after: [db]
---
apiVersion: fleetwright/v1
kind: Agent
name: db
run: {command: [/usr/bin/db-server]}
service: {restart: always, restartSec: 10s, watchdog: 60s, onChange: reload}
health: {heartbeat: {file: /srv/db/run/health, maxAge: 30s}}
---
apiVersion: fleetwright/v1
kind: Agent
name: ticker
run: {command: [/bin/true]}
schedule: {every: 10m}
after: [outreach]
"#,
    )]);
    insta::assert_snapshot!(render_all(&f));
}

#[test]
fn example_fleets_render() {
    for name in ["orchestrator", "timers", "notifications"] {
        let (_, f) = example(name);
        insta::assert_snapshot!(format!("example_{name}"), render_all(&f));
    }
}

#[test]
fn personal_infra_example_is_valid_and_large() {
    let (files, f) = example("personal-infra");
    assert!(f.agents.len() >= 25, "{} agents", f.agents.len());
    assert!(files.len() >= 8);
    let d = want(&f, "c0ffee", &Inventory::default());
    assert!(d.units.len() > f.agents_for_host("vps-1").count());
}

#[test]
fn user_scope_omits_user_and_wants_default_target() {
    let f = fleet(&[("a.yaml", &agent("a").command(&["/bin/sleep", "9"]).user("me").yaml())]);
    let ctx = fleetwright::render::RenderCtx {
        scope: fleetwright::types::Scope::User,
        state_dir: "/home/me/.local/state/fleetwright".into(),
        exe: "/usr/bin/fleetwright".into(),
        secret_ids: Default::default(),
    };
    let d = fleetwright::desired::desired(&f, "h", &ctx, "c", &Inventory::default());
    let svc = &d.units["agent-a.service"].content;
    assert!(!svc.contains("User="), "{svc}");
    assert!(svc.contains("WantedBy=default.target"), "{svc}");
}

#[test]
fn the_schema_in_the_repository_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/fleetwright-v1.json");
    let now = serde_json::to_string_pretty(&fleetwright::spec::json_schema_any()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &now).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(stored == now, "schema/fleetwright-v1.json is out of date: run `UPDATE_SCHEMA=1 cargo test --test it schema`");
}

#[test]
fn status_screen() {
    use fleetwright::host::status::{AgentStatus, LastRun, UnitReport, render_text};
    use fleetwright::plan::UnitStatus;
    let unit = |u: &str, role, active: &str, sub: &str| UnitReport {
        unit: u.into(),
        role,
        status: UnitStatus {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            unit_file_state: "enabled".into(),
            ..Default::default()
        },
    };
    let marker = |c: &str| fleetwright::inventory::AgentRecord {
        spec_hash: "h".into(),
        changed_commit: c.into(),
        changed_at: "t".into(),
        applied_commit: "c2".into(),
        applied_at: "t".into(),
        enabled: true,
        backups: vec![],
    };
    let agents = vec![
        AgentStatus {
            agent: "digest".into(),
            kind: "timer",
            state: "failed",
            enabled: true,
            units: vec![unit("agent-digest.timer", fleetwright::types::Role::Timer, "active", "waiting")],
            last_run: Some(LastRun {
                started: Some("2026-11-23T03:00:00Z".into()),
                finished: Some("2026-11-23T03:00:09Z".into()),
                duration_secs: Some(9.0),
                result: "exit-code".into(),
                exit_status: Some(1),
            }),
            next_run: Some("2026-11-24T03:00:00Z".into()),
            marker: Some(marker("aaaaaaaaaaaa1111")),
            drift: vec![],
            problems: vec!["agent-digest.backup.service failed (exit-code)".into()],
            restarts: Some(0),
        },
        AgentStatus {
            agent: "web".into(),
            kind: "service",
            state: "drift",
            enabled: true,
            units: vec![unit("agent-web.service", fleetwright::types::Role::Service, "active", "running")],
            last_run: None,
            next_run: None,
            marker: Some(marker("bbbbbbbbbbbb2222")),
            drift: vec!["agent-web.service was edited outside fleetwright".into()],
            problems: vec!["restart loop: the manager restarted it 9 times in the last 15 minutes".into()],
            restarts: Some(9),
        },
        AgentStatus {
            agent: "zeta".into(),
            kind: "timer",
            state: "ok",
            enabled: true,
            units: vec![],
            last_run: None,
            next_run: Some("2026-11-23T10:00:00Z".into()),
            marker: None,
            drift: vec![],
            problems: vec![],
            restarts: None,
        },
    ];
    let inv = fleetwright::inventory::Inventory {
        applied_commit: Some("c2c2c2c2c2c2c2c2".into()),
        applied_at: Some("2026-11-23T09:00:00Z".into()),
        ..Default::default()
    };
    // What the daemon knows: the head (refused), the last good commit, a forced pin, a gate.
    let deployment = fleetwright::host::status::Deployment {
        head: Some(fleetwright::host::status::Head {
            commit: "d3d3d3d3d3d3d3d3".into(),
            seen_at: Some("2026-11-23T09:10:00Z".into()),
            verdict: Some("bad".into()),
            reason: Some("agent-web.service is crash-looping (2 restarts since the deploy)".into()),
        }),
        last_good: Some("c2c2c2c2c2c2c2c2".into()),
        pinned: Some(fleetwright::host::status::PinInfo { commit: "b1b1b1b1b1b1b1b1".into(), force: true, at: None }),
        gate: Some(
            serde_json::json!({"commit": "b1b1b1b1b1b1b1b1", "startedAt": "2026-11-23T09:20:00Z", "until": "2026-11-23T09:20:30Z", "units": ["agent-web.service"]}),
        ),
        source: Some(serde_json::json!({"ok": false, "error": "failed to connect to git.example.com", "since": "2026-11-23T09:15:00Z"})),
    };
    insta::assert_snapshot!(render_text(&inv, &agents, Some(&deployment)));
    let colored = fleetwright::host::status::colorize(&render_text(&inv, &agents, None));
    assert!(colored.contains("\x1b[31mfailed\x1b[0m") && colored.contains("\x1b[33mdrift\x1b[0m"), "{colored}");
}

#[test]
fn each_schedule_of_backups_and_logs_gets_its_own_timer() {
    let db = agent("db")
        .command(&["/bin/db"])
        .user("db")
        .backup(backup("/srv/db/a.db", "/srv/bk/a").calendar("daily"))
        .backup(backup("/srv/db/b.db", "/srv/bk/b").calendar("weekly"))
        .backup(backup("/srv/db/c.db", "/srv/bk/c").calendar("daily"))
        .logs(logs("/srv/db/logs").max_age("7d"));
    let f = fleet(&[("a.yaml", &db.yaml())]);
    let d = want(&f, "c", &Inventory::default());
    let names: Vec<&str> = d.units.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "agent-db.backup-2.service",
            "agent-db.backup-2.timer",
            "agent-db.backup.service",
            "agent-db.backup.timer",
            "agent-db.logs.service",
            "agent-db.logs.timer",
            "agent-db.service"
        ]
    );
    let daily = &d.units["agent-db.backup.service"].content;
    assert!(daily.contains("/srv/db/a.db") && daily.contains("/srv/db/c.db") && !daily.contains("/srv/db/b.db"), "{daily}");
    assert!(d.units["agent-db.backup-2.timer"].content.contains("OnCalendar=weekly"));
}

#[test]
fn a_cron_line_with_day_of_month_and_weekday_fires_on_either() {
    // cron fires when either field matches: two OnCalendar= lines, whose union systemd fires on
    // (the translation itself is checked against systemd-analyze in tests/it/calendar.rs).
    let f = fleet(&[("a.yaml", &agent("a").command(&["/bin/true"]).user("a").cron("0 3 1,15 * mon").yaml())]);
    let d = want(&f, "c", &Inventory::default());
    let timer = &d.units["agent-a.timer"].content;
    let lines: Vec<&str> = timer.lines().filter(|l| l.starts_with("OnCalendar=")).collect();
    assert_eq!(lines, ["OnCalendar=*-*-01,15 03:00:00", "OnCalendar=Mon *-*-* 03:00:00"], "{timer}");
    // The same agent for a backup schedule is refused: helper timers take one expression.
    // (Written by hand: the diagnostic names the column.)
    let bad = "apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: a}\nbackups: [{sqlite: /srv/a.db, to: /srv/bk, schedule: {cron: \"0 3 1,15 * mon\"}}]\n";
    let e = fleetwright::spec::load(&[("a.yaml".to_string(), bad.to_string())], &fleetwright::host::zones::Tzdata).unwrap_err().to_string();
    assert!(e.contains("a.yaml:5:61: cron: restricts both day-of-month and day-of-week"), "{e}");
}

/// `render::runs_fleetwright` decides whether the host hashes its binary to name it: it must
/// say yes for every agent a unit of which names that binary (every example, and every kind
/// of helper).
#[test]
fn runs_fleetwright_is_never_wrong_about_an_agent_whose_units_run_the_binary() {
    use fleetwright::render::{render_agent, runs_fleetwright};
    let helpers = fleet(&[
        ("f.yaml", "apiVersion: fleetwright/v1\nkind: Fleet\ndefaults: {run: {user: agent}}\n"),
        ("a.yaml", &agent("reloads").command(&["/bin/true"]).on_change("reload").yaml()),
        ("b.yaml", &agent("beats").command(&["/bin/true"]).heartbeat("/srv/b/beat", "5m").yaml()),
        ("c.yaml", &agent("slotted").command(&["/bin/true"]).every("1h").concurrency("g", 1).yaml()),
        ("d.yaml", &agent("logs").command(&["/bin/true"]).logs(logs("/srv/d/logs").max_files(3)).yaml()),
        ("e.yaml", &agent("backs").command(&["/bin/true"]).backup(backup("/srv/e/db.sqlite", "/srv/e/backups")).yaml()),
        ("g.yaml", &agent("plain").command(&["/bin/true"]).yaml()),
        ("h.yaml", &agent("job").command(&["/bin/true"]).every("1h").yaml()),
    ]);
    let mut fleets = vec![("helpers".to_string(), helpers)];
    for name in ["day-two", "orchestrator", "personal-infra", "quickstart", "timers", "notifications"] {
        fleets.push((name.to_string(), example(name).1));
    }
    let ctx = ctx();
    let mut running = 0;
    for (name, f) in &fleets {
        for a in &f.agents {
            let units = render_agent(f, a, &ctx, "c").unwrap_or_else(|e| panic!("{name}/{}: {e}", a.name));
            let names_it = units.iter().any(|u| u.content.contains(&ctx.exe));
            assert!(!names_it || runs_fleetwright(f, a), "{name}/{}: a unit runs {} but runs_fleetwright says no", a.name, ctx.exe);
            running += usize::from(names_it);
        }
    }
    assert!(running >= 5, "the helpers above all run it");
    let plain = &fleets[0].1.agents.iter().find(|a| a.name == "plain").unwrap();
    assert!(!runs_fleetwright(&fleets[0].1, plain), "an agent with no helper needs no name for the binary");
}
