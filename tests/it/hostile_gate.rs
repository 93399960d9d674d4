//! The daemon's reports against those who are not root: a local user who writes to the journal,
//! and an agent whose health.check prints what it likes. What the reports say must be what the
//! manager said; what an agent printed never reaches a terminal raw.

use crate::daemon::{commit, fleet};
use crate::real::*;

/// The manager's "restart scheduled" message (journalctl --list-catalog).
const RESTART_SCHEDULED: &str = "5eb03494b6584870a536b337290809b3";

/// Anyone may write a journal entry with the restart message's id and a `UNIT=` field. `status`
/// counts restarts from the journal: only the manager's own entries (`_PID=1`) may count, or any
/// local user could make an agent look crash-looping (and `failed`).
#[test]
fn a_local_user_cannot_make_an_agent_look_crash_looping_through_the_journal() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.history()["lastGood"] == c1.as_str());
    let entry = format!(
        "MESSAGE_ID={RESTART_SCHEDULED}\nUNIT=agent-web.service\nN_RESTARTS=7\nMESSAGE=agent-web.service: Scheduled restart job, restart counter is at 7.\n"
    );
    for _ in 0..5 {
        let mut c = host.sb.command("setpriv");
        c.args(["--reuid=4242", "--regid=4242", "--clear-groups", "--", "logger", "--journald"]).stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), entry.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    // The forged entries are in the journal…
    host.wait("the forged entries", 10, || {
        let o = host
            .sb
            .command("journalctl")
            .args([&format!("MESSAGE_ID={RESTART_SCHEDULED}"), "UNIT=agent-web.service", "-o", "cat", "--no-pager"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count() >= 5
    });
    // …and count for nothing.
    let o = host.fw(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let web = st["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "web").unwrap().clone();
    assert_eq!((web["restarts"].as_u64(), web["state"].as_str()), (Some(0), Some("ok")), "{web}");
    d.wait_http();
    host.wait("/healthz", 10, || d.http("GET", "/healthz", &[], "").0 == 200);
}

/// A failing health.check's last lines are the reason its commit is held: /healthz, `status`
/// and `history` show them escaped, never as terminal control sequences.
#[test]
fn what_a_health_check_prints_reaches_no_report_raw() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "1s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.history()["lastGood"] == c1.as_str());
    let check = ["/bin/sh", "-c", r#"printf "\033]0;owned\007\033[2J\302\233"; exit 1"#];
    let c2 = commit(&repo, &fleet(service("web").restart_sec("3s").check(&check)), "a check that prints escapes");
    host.wait("c2 to be held", 30, || {
        host.history()["verdicts"].as_array().is_some_and(|v| v.iter().any(|v| v["commit"] == c2.as_str() && v["verdict"] == "held"))
    });
    let raw = |s: &str| s.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{9b}');
    d.wait_http();
    let (code, body) = d.http("GET", "/healthz", &[], "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r"\x1b]0;owned") && !raw(&body), "{body:?}");
    let status = stdout(&host.fw(&["status"]));
    assert!(status.contains("held") && !raw(&status), "{status:?}");
    let history = stdout(&host.fw(&["history"]));
    assert!(history.contains(r"\x1b]0;owned") && !raw(&history), "{history:?}");
    assert!(!raw(&d.log()), "the daemon's own log: {:?}", d.log());
}
