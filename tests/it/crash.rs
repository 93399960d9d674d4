//! Crash safety: kill apply at every crash point (FLEETWRIGHT_CRASH_AT), run it again, and
//! check that the host converged — no half-written file, no orphaned unit, no unit we own
//! missing from the inventory, and no restart done twice.

use crate::real::*;

fn v1() -> Vec<(&'static str, String)> {
    vec![
        ("fleet.yaml", FLEET.to_string()),
        ("web.yaml", service("web").yaml()),
        ("bot.yaml", service("bot").yaml()),
        ("tick.yaml", job("tick", "echo tick").calendar("hourly").yaml()),
    ]
}

fn v2() -> Vec<(&'static str, String)> {
    vec![
        ("fleet.yaml", FLEET.to_string()),
        ("web.yaml", service("web").restart("always").yaml()),
        ("fresh.yaml", service("fresh").yaml()),
        ("tick.yaml", job("tick", "echo tick").calendar("daily").yaml()),
    ]
}

fn commit(repo: &Repo, files: &[(&'static str, String)], msg: &str) {
    repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), msg);
}

fn crash_at(point: &str) {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &v1(), "v1");
    assert_eq!(code(&host.apply(&repo)), 0);
    let web_v1 = host.prop("agent-web.service", "InvocationID");
    commit(&repo, &v2(), "v2");
    let before = host.inventory();

    let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    c.env("FLEETWRIGHT_CRASH_AT", point).args(["--host", "vps-1", "apply", "--repo", repo.path().to_str().unwrap()]);
    let out = c.output().unwrap();
    assert!(stderr(&out).contains("crash point"), "{point}: did not crash: {}", stderr(&out));
    assert_ne!(code(&out), 0);
    let web_after_crash = host.prop("agent-web.service", "InvocationID");

    // A crash in the middle of a write leaves its temp file (a name systemd does not load),
    // never half a file under the real name; the next apply removes it.
    let temps = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).filter(|n| n.contains("fleetwright-tmp")).collect()
    };
    let check_files = |when: &str| {
        let inv = host.inventory();
        for e in std::fs::read_dir(host.unit_dir()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if name.starts_with("agent-") {
                assert!(inv.files.contains_key(&name), "{point} {when}: {name} is on disk but not in the inventory (orphan)");
                // Whole: the old version or the new one, byte for byte.
                let hash = fleetwright::types::sha256(&std::fs::read_to_string(host.unit_dir().join(&name)).unwrap());
                let known = [&inv, &before].iter().any(|i| i.files.get(&name).is_some_and(|f| f.sha256 == hash));
                assert!(known, "{point} {when}: {name} is neither the version before nor the one recorded");
            }
        }
        inv.files.keys().cloned().collect::<Vec<_>>()
    };
    check_files("after the crash");
    // What the killed apply had not written yet is its unfinished business, not drift.
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert!(!stdout(&plan).contains("outside fleetwright"), "{point}: the unfinished apply's files are reported as drift:\n{}", stdout(&plan));
    let status = host.fw(&["status"]);
    assert!(!stdout(&status).contains("outside fleetwright"), "{point}: status reports the unfinished apply's files as drift:\n{}", stdout(&status));
    let left = [temps(&host.unit_dir()), temps(&host.state_dir())].concat();
    if point.starts_with("mid-") {
        assert!(!left.is_empty(), "{point}: the crash point is after the temp file is written, yet none is there");
    } else {
        assert!(left.is_empty(), "{point}: a temp file was left: {left:?}");
    }

    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{point}: recovery: {}", stderr(&out));
    let owned = check_files("after recovery");
    let left = [temps(&host.unit_dir()), temps(&host.state_dir()), temps(&host.state_dir().join("markers"))].concat();
    assert!(left.is_empty(), "{point}: recovery left temp files: {left:?}");
    let inv = host.inventory();
    for name in &owned {
        let text = std::fs::read_to_string(host.unit_dir().join(name)).unwrap_or_else(|_| panic!("{point}: {name} is in the inventory but missing"));
        assert_eq!(fleetwright::types::sha256(&text), inv.files[name].sha256, "{point}: {name} differs from its record");
    }
    assert!(!inv.reload_pending);
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&plan), 0, "{point}: not converged: {}", stdout(&plan));
    assert_eq!(host.prop("agent-web.service", "Restart"), "always");
    assert_eq!(host.prop("agent-web.service", "ActiveState"), "active");
    assert_eq!(host.prop("agent-fresh.service", "ActiveState"), "active");
    assert_ne!(host.prop("agent-bot.service", "ActiveState"), "active", "{point}: bot was pruned");
    assert!(!host.unit_dir().join("agent-bot.service").exists());
    assert_eq!(host.prop("agent-tick.timer", "ActiveState"), "active");
    assert!(host.prop("agent-tick.timer", "TimersCalendar").contains("*-*-* 00:00:00"), "{point}: {}", host.prop("agent-tick.timer", "TimersCalendar"));
    // Restarted once: if the crashed run already restarted web, recovery does not again.
    let web_now = host.prop("agent-web.service", "InvocationID");
    if web_after_crash != web_v1 {
        assert_eq!(web_now, web_after_crash, "{point}: web was restarted twice");
    } else {
        assert_ne!(web_now, web_v1, "{point}: web never restarted");
    }
}

macro_rules! crash_points {
    ($($name:ident => $point:literal),* $(,)?) => {
        $( #[test] fn $name() { crash_at($point); } )*
    };
}

crash_points! {
    crash_after_the_pending_inventory => "after-pending-inventory",
    crash_after_stopping => "after-stop",
    crash_after_the_first_file => "after-write:1",
    crash_after_the_third_file => "after-write:3",
    crash_after_a_removal => "after-remove",
    crash_before_the_reload => "before-reload",
    crash_after_the_reload => "after-reload",
    crash_between_reloads_and_restarts => "between-jobs:1",
    crash_between_restarts_and_starts => "between-jobs:2",
    crash_before_the_final_inventory => "before-final-inventory",
    crash_while_writing_a_unit_file => "mid-write:1",
    crash_while_writing_the_pending_inventory => "mid-inventory-write:1",
    crash_while_writing_the_inventory_after_the_reload => "mid-inventory-write:2",
    crash_while_writing_the_inventory_after_restarts => "mid-inventory-write:3",
    crash_while_writing_the_final_inventory => "mid-inventory-write:4",
    crash_between_two_queued_restarts => "queued:2",
    crash_after_the_last_restart_was_queued => "queued:3",
}
