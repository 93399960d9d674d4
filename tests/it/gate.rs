//! Issue 12, in the real tier: every scenario of "What goes wrong today", run as a team would —
//! a bare origin followed by URL (pushes and webhooks), or a local repository — against a real
//! systemd, asserting the end state, the verdicts, `/healthz`, `status`, the metrics and the
//! notifications. The same scenarios are in the decision table (src/daemon/decide_tests.rs)
//! without systemd.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, commit, fleet};
use crate::http::Sink;
use crate::real::*;

/// A bare repository followed by URL, and a work tree that pushes to it.
struct Origin {
    bare: tempfile::TempDir,
    work: Repo,
}

impl Origin {
    fn new() -> Origin {
        let bare = tempfile::Builder::new().prefix("origin-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        git(bare.path(), &["init", "-q", "--bare", "-b", "master"]);
        Origin { bare, work: Repo::new() }
    }
    fn url(&self) -> String {
        format!("file://{}", self.bare.path().display())
    }
    /// Commit `files` in the work tree and push it.
    fn push(&self, files: &[(&'static str, String)], msg: &str) -> String {
        let c = commit(&self.work, files, msg);
        git(self.work.path(), &["push", "-q", "--force", self.bare.path().to_str().unwrap(), "HEAD:refs/heads/master"]);
        c
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git").arg("-C").arg(dir).args(["-c", "user.name=t", "-c", "user.email=t@example.com"]).args(args).output().unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

const SECRET: &str = "3b8e1f0c7a2d4e6f9a1c5b7d0e2f4a6c";

/// A secret file for `--webhook-secret-file`, removed with the value.
struct SecretFile(std::path::PathBuf);

impl SecretFile {
    fn new() -> SecretFile {
        let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gate-secret-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::write(&p, SECRET).unwrap();
        SecretFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A signed push webhook (each one new: a replay would be refused).
fn hook(d: &Daemon, n: u32) {
    let body = format!(r#"{{"ref":"refs/heads/master","after":"push-{n}"}}"#);
    let sig = format!("sha256={}", fleetwright::daemon::webhook::sign(SECRET.as_bytes(), body.as_bytes()));
    let (code, text) = d.http("POST", "/webhook", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", &format!("d{n}"))], &body);
    assert_eq!(code, 202, "{text}");
}

/// `web` running `script` instead of the good service's.
fn web_runs(script: &str) -> AgentSpec {
    agent("web").sh(script)
}

fn short(c: &str) -> &str {
    &c[..12]
}

impl Host {
    /// The latest verdict on `commit` (history --json "verdicts").
    fn verdict(&self, commit: &str) -> Option<String> {
        self.history()["verdicts"].as_array()?.iter().find(|v| v["commit"] == commit).and_then(|v| v["verdict"].as_str().map(str::to_string))
    }
    fn verdicts_of(&self, commit: &str) -> Vec<serde_json::Value> {
        self.history()["verdicts"].as_array().cloned().unwrap_or_default().into_iter().filter(|v| v["commit"] == commit).collect()
    }
    fn status_json(&self) -> serde_json::Value {
        let o = self.fw(&["status", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }
    /// Reconciles recorded so far, a folded row counting for each reconcile it stands for.
    fn reconcile_count(&self) -> i64 {
        self.reconciles().iter().map(|r| r["repeats"].as_i64().unwrap_or(1)).sum()
    }
    /// Wait for `n` more reconciles than now.
    fn wait_reconciles(&self, n: i64, secs: u64) {
        let base = self.reconcile_count();
        self.wait(&format!("{n} more reconciles"), secs, || self.reconcile_count() >= base + n);
    }
    fn web_is_good(&self) -> bool {
        self.prop("agent-web.service", "ActiveState") == "active" && self.prop("agent-web.service", "ExecStart").contains("sleep 100000")
    }
}

impl Daemon {
    fn healthz(&self) -> (u16, String) {
        self.http("GET", "/healthz", &[], "")
    }
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.http("GET", "/metrics", &[], "");
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok())
    }
}

/// Observed 1: a commit that makes web crash 4 s after it starts is followed at once by a
/// commit that changes only a timer. The first is superseded; the second is gated on what
/// changed since the last good commit — web included — so the crash loop is caught, the host
/// goes back to the last good commit, and nothing says it was deployed.
#[test]
fn a_quick_follow_up_commit_cannot_carry_a_crash_loop_past_the_gate() {
    let Some(host) = Host::boot() else { return };
    let origin = Origin::new();
    let sink = Sink::start();
    let secret = SecretFile::new();
    let good = fleet(service("web").restart("always").restart_sec("200ms"));
    let c1 = origin.push(&good, "good");
    let d = host.daemon(
        &origin.url(),
        &[
            "--branch",
            "master",
            "--interval",
            "1h",
            "--resync",
            "1h",
            "--health-grace",
            "8s",
            "--webhook-secret-file",
            secret.path(),
            "--notify-url",
            &sink.url,
        ],
        &[],
    );
    host.wait("c1 to pass its gate", 40, || host.history()["lastGood"] == c1.as_str());
    d.wait_http();
    host.wait("/healthz at c1", 10, || d.healthz().0 == 200);
    let converged_c1 = d.metric("fleetwright_commit_to_converged_seconds").expect("c1's commit-to-verdict time");
    assert!(converged_c1 >= 8.0, "measured to the verdict, after the 8 s grace period: {converged_c1}");

    let mut crashing = good.clone();
    crashing[1].1 = web_runs("sleep 4; exit 3").restart("always").restart_sec("200ms").yaml();
    let c2 = origin.push(&crashing, "web crashes 4 s after it starts");
    hook(&d, 1);
    host.wait("c2 to be applied", 15, || host.prop("agent-web.service", "ExecStart").contains("exit 3"));
    let mut follow_up = crashing.clone();
    follow_up[2].1 = job("tick", "echo tick").every("2h").yaml();
    let c3 = origin.push(&follow_up, "only the timer");
    hook(&d, 2);
    // While c3 is gated, /healthz does not say ok.
    host.wait("/healthz to report c3's gate", 15, || {
        let (code, body) = d.healthz();
        code == 503 && body.contains(&format!("gating {}", short(&c3))) && body.contains("agent-web.service")
    });
    host.wait("c3 to fail its gate", 30, || host.verdict(&c3).as_deref() == Some("bad"));
    host.wait("the good web to run again", 15, || host.web_is_good());
    let rows = host.reconciles();
    assert!(rows.iter().any(|r| r["applied"] == c2.as_str() && r["result"] == "superseded"), "{rows:?}");
    let bad = rows.iter().find(|r| r["head"] == c3.as_str() && r["result"] == "rolled-back").expect("c3's rollback");
    assert!(bad["error"].as_str().unwrap().contains("agent-web.service is crash-looping"), "{bad}");
    assert_eq!(host.history()["lastGood"], c1.as_str());
    assert_eq!(host.verdict(&c2), None, "c2 was superseded: no verdict");

    // Every report says so.
    let (code, body) = d.healthz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("held at {} instead of {}", short(&c1), short(&c3))), "{body}");
    let st = host.status_json();
    assert_eq!((st["head"]["commit"].as_str(), st["head"]["verdict"].as_str()), (Some(c3.as_str()), Some("bad")), "{st}");
    assert_eq!(st["lastGood"], c1.as_str());
    assert!(st["pinned"].is_null() && st["gate"].is_null(), "{st}");
    assert_eq!(d.metric("fleetwright_head_held"), Some(1.0));
    assert_eq!(d.metric("fleetwright_rollbacks_total"), Some(1.0));
    assert_eq!(d.metric("fleetwright_commit_to_converged_seconds"), Some(converged_c1), "a rolled-back commit sets no commit-to-converged time");

    // A fix: deployed. Then the notifications, all of them in: exactly one per verdict.
    let mut fixed = follow_up.clone();
    fixed[1].1 = service("web").description("fixed").restart("always").restart_sec("200ms").yaml();
    let c4 = origin.push(&fixed, "fixed");
    hook(&d, 3);
    host.wait("the fix to be deployed and notified", 40, || sink.count("deployed", &c4) == 1);
    assert_eq!(sink.count("deployed", &c1), 1);
    assert_eq!(sink.count("rolled-back", &c3), 1);
    assert_eq!(sink.all().len(), 3, "deployed c1, rolled-back c3, deployed c4: {:?}", sink.all());
    assert!(d.metric("fleetwright_commit_to_converged_seconds").unwrap() != converged_c1);
    assert_eq!(d.healthz().0, 200);
}

/// Observed 2: a long-running service that exits 0 a second after it starts is not good: it
/// fails the gate, and the host does not keep "repairing" it afterwards.
#[test]
fn a_service_that_exits_0_fails_the_gate_and_is_not_restarted_for_ever() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "good");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "4s", "--resync", "1s"], &[]);
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet(web_runs("sleep 1; exit 0")), "web ends after a second, with status 0");
    host.wait("c2 to fail its gate", 20, || host.verdict(&c2).as_deref() == Some("bad"));
    let v = &host.verdicts_of(&c2)[0];
    assert!(v["reason"].as_str().unwrap().contains("agent-web.service exited after the deploy"), "{v}");
    host.wait("the good web to run again", 15, || host.web_is_good());
    let invocation = host.prop("agent-web.service", "InvocationID");
    // Resyncs every second: none applies c2 or restarts web.
    host.wait_reconciles(4, 20);
    assert_eq!(host.prop("agent-web.service", "InvocationID"), invocation, "web was not restarted");
    let newest = host.reconciles()[0].clone();
    assert_eq!((newest["result"].as_str(), newest["actions"].as_i64(), newest["applied"].as_str()), (Some("refused"), Some(0), Some(c1.as_str())), "{newest}");
    assert!(newest["repeats"].as_i64().unwrap() >= 3, "{newest}");
    assert_eq!(host.history()["lastGood"], c1.as_str());
}

/// Observed 3: a failing `health.check` held the change back and the commit was marked good.
/// It is `held`: not good, said by /healthz, status, the metrics and one `held` notification.
#[test]
fn a_failing_health_check_holds_the_commit_and_every_report_says_so() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let sink = Sink::start();
    let c1 = commit(&repo, &fleet(service("web")), "good");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "2s", "--resync", "1s", "--notify-url", &sink.url], &[]);
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet(service("web").restart_sec("3s").check(&["/bin/false"])), "a change whose check fails");
    host.wait("c2 to be held", 20, || host.verdict(&c2).as_deref() == Some("held"));
    let v = &host.verdicts_of(&c2)[0];
    assert!(v["reason"].as_str().unwrap().contains("health.check"), "{v}");
    assert_ne!(host.prop("agent-web.service", "RestartUSec"), "3s", "the old version keeps running");
    assert_eq!(host.history()["lastGood"], c1.as_str(), "a held commit is never good");
    d.wait_http();
    let (code, body) = d.healthz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("{} runs only in part: a health.check held back its change", short(&c2))), "{body}");
    let st = host.status_json();
    assert_eq!(st["head"]["verdict"], "held", "{st}");
    assert_eq!(st["lastGood"], c1.as_str());
    assert_eq!(d.metric("fleetwright_head_held"), Some(1.0));
    // Resyncs try the check again; the verdict stands and is not notified again.
    host.wait_reconciles(3, 20);
    assert_eq!(host.verdicts_of(&c2).len(), 1, "{:?}", host.verdicts_of(&c2));
    // Without the failing check, the change goes through.
    let c3 = commit(&repo, &fleet(service("web").restart_sec("3s")), "no check");
    host.wait("c3 deployed and notified", 30, || sink.count("deployed", &c3) == 1);
    assert_eq!(host.prop("agent-web.service", "RestartUSec"), "3s");
    assert_eq!((sink.count("held", &c2), sink.count("deployed", &c2)), (1, 0), "{:?}", sink.all());
    assert!(!d.log().contains("did not change"), "{}", d.log());
}

/// Observed 4: with the remote unreachable, drift is still repaired, a pin is still honoured
/// from what was fetched, and /healthz stays 200 with the fetch failure as the source's own
/// condition.
#[test]
fn an_unreachable_remote_does_not_stop_healing_or_turn_healthz_red() {
    let Some(host) = Host::boot() else { return };
    let origin = Origin::new();
    let c1 = origin.push(&fleet(service("web")), "one");
    let d = host.daemon(&origin.url(), &["--branch", "master", "--interval", "1h", "--resync", "1h", "--health-grace", "1s"], &[]);
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    let c2 = origin.push(&fleet(service("web").description("two")), "two");
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("c2 to pass its gate", 30, || host.history()["lastGood"] == c2.as_str());
    d.wait_http();
    host.wait("/healthz at c2", 10, || d.healthz().0 == 200);

    // The forge goes away.
    let away = origin.bare.path().with_extension("away");
    std::fs::rename(origin.bare.path(), &away).unwrap();
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("the failed fetch to be reported", 10, || d.healthz().1.contains("source: fetch failing"));
    let (code_, body) = d.healthz();
    assert_eq!(code_, 200, "the fleet is healthy although the remote is not: {body}");
    assert_eq!(d.metric("fleetwright_source_up"), Some(0.0));
    assert_eq!(d.metric("fleetwright_fleet_healthy"), Some(1.0));
    // Drift is repaired meanwhile.
    host.systemctl(&["stop", "agent-tick.timer"]);
    host.wait("the timer to be started again", 10, || host.prop("agent-tick.timer", "ActiveState") == "active");
    let rows = host.reconciles();
    let repair = rows.iter().find(|r| r["result"] == "repaired").expect("a repair");
    assert!(repair["drift"].as_str().unwrap().contains("agent-tick.timer"), "{repair}");
    assert!(repair["error"].as_str().unwrap().contains("fetching the branch failed"), "{repair}");
    // A pin is honoured from the cache.
    let o = host.fw(&["rollback"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("pinned {}", short(&c1))), "{}", stdout(&o));
    host.wait("the pin to be applied", 20, || {
        host.marker_commit("web").as_deref() == Some(c1.as_str()) && host.prop("agent-web.service", "Description") != "two"
    });
    let st = host.status_json();
    assert_eq!((st["pinned"]["commit"].as_str(), st["source"]["ok"].as_bool()), (Some(c1.as_str()), Some(false)), "{st}");
    host.wait("/healthz at the pin", 20, || d.healthz().0 == 200);
    // The forge is back.
    std::fs::rename(&away, origin.bare.path()).unwrap();
    assert_eq!(code(&host.fw(&["resume"])), 0);
    host.wait("the branch to be followed again", 30, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
    host.wait("the source to be healthy", 10, || d.healthz().1.contains("source: ok"));
}

/// Observed 5: pinning a commit marked bad is refused unless forced; a forced pin is gated and
/// rolled back again (once), and `rollback` without `--to` after a pin and a resume means the
/// last good commit before the one applied now.
#[test]
fn rollback_is_safe() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "3s", "--resync", "1s"], &[]);
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet(web_runs("echo crashing; exit 3").restart("always").restart_sec("200ms")), "bad");
    host.wait("c2 to be rolled back", 30, || host.verdict(&c2).as_deref() == Some("bad") && host.web_is_good());

    let o = host.fw(&["rollback", "--to", &c2]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is marked bad") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(host.status_json()["pinned"].is_null(), "nothing was pinned");

    let o = host.fw(&["rollback", "--to", &c2[..10], "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    host.wait("the forced pin to be tried and rolled back", 30, || host.verdicts_of(&c2).len() == 2 && host.web_is_good());
    d.wait_http();
    let (code_, body) = d.healthz();
    assert_eq!(code_, 503, "{body}");
    assert!(body.contains(&format!("held at {} instead of {}", short(&c1), short(&c2))), "{body}");
    let st = host.status_json();
    assert_eq!((st["pinned"]["commit"].as_str(), st["pinned"]["force"].as_bool()), (Some(c2.as_str()), Some(true)), "{st}");
    // Tried once: the resyncs after do not try again.
    host.wait_reconciles(3, 20);
    assert_eq!(host.verdicts_of(&c2).len(), 2);
    assert!(host.web_is_good());

    // resume: the head is c2, bad: held. Then good commits; a pin, a resume, and a rollback
    // without --to.
    assert_eq!(code(&host.fw(&["resume"])), 0);
    let c3 = commit(&repo, &fleet(service("web").description("three")), "three");
    host.wait("c3 to pass", 30, || host.history()["lastGood"] == c3.as_str());
    assert_eq!(code(&host.fw(&["rollback", "--to", &c1])), 0);
    host.wait("the pin of c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    assert_eq!(code(&host.fw(&["resume"])), 0);
    host.wait("c3 to pass again", 30, || host.history()["lastGood"] == c3.as_str());
    let c4 = commit(&repo, &fleet(service("web").description("four")), "four");
    host.wait("c4 to pass", 30, || host.history()["lastGood"] == c4.as_str());
    let o = host.fw(&["rollback"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("pinned {}", short(&c3))), "the last good commit before c4, not the first one: {}", stdout(&o));
    host.wait("c3 to run", 30, || host.prop("agent-web.service", "Description") == "three");
}

/// Observed 6: a service that restarts every couple of seconds is active at most instants;
/// /healthz, status and the metrics report the loop over a window.
#[test]
fn a_restart_loop_is_reported_over_a_window_not_an_instant() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // A cycle of 4 s: under the manager's start limit (5 starts in 10 s), active most of the time.
    let files = fleet(web_runs("sleep 2; exit 1").restart("always").restart_sec("2s"));
    // No gate (grace 0): the loop is deployed, and must be reported.
    commit(&repo, &files, "a restart loop");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    d.wait_http();
    host.wait("status to report the loop", 30, || {
        let st = host.status_json();
        let web = st["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "web").cloned().unwrap_or_default();
        web["restarts"].as_u64().unwrap_or(0) >= 3 && web["state"] == "failed"
    });
    let text = stdout(&host.fw(&["status"]));
    assert!(text.contains("problem: restart loop: the manager restarted it"), "{text}");
    host.wait("/healthz to report the loop", 20, || {
        let (code, body) = d.healthz();
        code == 503 && (body.contains("agent-web.service is in a restart loop") || body.contains("agent-web.service is crash-looping"))
    });
    // The metrics come from the daemon's own watch of the unit: wait for them to say the same.
    host.wait("the metrics to report the loop", 20, || {
        d.metric("fleetwright_agent_restarts{agent=\"web\"}").unwrap_or(0.0) >= 3.0
            && d.metric("fleetwright_agent_state{agent=\"web\",state=\"failed\"}") == Some(1.0)
            && d.metric("fleetwright_fleet_healthy") == Some(0.0)
    });
}

/// Observed 7: notifications. A verdict reached while the receiver is down is delivered after a
/// daemon restart; a gate cut by a restart is gated again and notified once; an invalid commit
/// sends `invalid` (nothing else); an empty fleet held by the guard sends `held`.
#[test]
fn each_verdict_is_notified_exactly_once_across_restarts() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // The receiver's port, not listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let args = |grace: &'static str| -> Vec<String> { ["--health-grace", grace, "--resync", "1h", "--notify-url", &url].map(str::to_string).to_vec() };
    let start = |grace| {
        let a = args(grace);
        host.daemon(repo.path().to_str().unwrap(), &a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let stop = |d: Daemon| {
        let pid = host.daemon_pid().expect("the daemon's pid");
        assert!(host.sb.command("kill").args(["-TERM", &pid]).output().unwrap().status.success());
        host.wait("the daemon to stop", 20, || host.daemon_pid().is_none());
        drop(d);
    };
    let d = start("1s");
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    host.wait("the failed delivery to be seen", 20, || d.log().contains("notification webhook failed"));
    stop(d);
    let sink = Sink::on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    let d = start("6s");
    host.wait("c1's deployed, delivered after the restart", 20, || sink.count("deployed", &c1) == 1);

    // A restart in the middle of c2's gate.
    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    host.wait("c2's gate", 20, || host.status_json()["gate"]["commit"] == c2.as_str());
    stop(d);
    assert!(host.reconciles().iter().any(|r| r["head"] == c2.as_str() && r["result"] == "interrupted"));
    let d = start("2s");
    host.wait("c2 gated again and notified", 30, || sink.count("deployed", &c2) == 1);

    // An invalid commit.
    let c3 = commit(&repo, &fleet(service("web").description("three").memory_max("lots")), "invalid");
    host.wait("invalid", 20, || sink.count("invalid", &c3) == 1);
    // An empty fleet: held by the guard, nothing removed.
    let c4 = commit(&repo, &[("fleet.yaml", FLEET.to_string())], "empty");
    host.wait("held", 20, || sink.count("held", &c4) == 1);
    assert!(host.web_is_good(), "nothing was removed");
    let held = host.verdicts_of(&c4);
    assert!(held[0]["reason"].as_str().unwrap().contains("allow-empty"), "{held:?}");
    // And a good one after them, so that everything before has had its chance to be sent.
    let c5 = commit(&repo, &fleet(service("web").description("five")), "five");
    host.wait("c5 deployed", 30, || sink.count("deployed", &c5) == 1);
    let all = sink.all();
    let expected: Vec<(String, String)> = [("deployed", &c1), ("deployed", &c2), ("invalid", &c3), ("held", &c4), ("deployed", &c5)]
        .iter()
        .map(|(e, c)| (e.to_string(), c.to_string()))
        .collect();
    assert_eq!(all, expected);
    drop(d);
}

/// Observed 8: under systemd, each line at its priority in the journal, one startup line that
/// says what is followed, and a refused head warned about once, not at every reconcile; the
/// history folds the repeats.
#[test]
fn logs_are_journald_native_and_a_refused_head_is_warned_about_once() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let unit = format!(
        "[Unit]\nDescription=fleetwright\n[Service]\nType=notify\nNotifyAccess=main\nExecStart={} --host vps-1 daemon --repo {} --branch master --no-listen --health-grace 1s --resync 1s\n",
        env!("CARGO_BIN_EXE_fleetwright"),
        repo.path().display()
    );
    std::fs::write(host.sb.host_path("/etc/systemd/system/fleetwright.service"), unit).unwrap();
    host.systemctl(&["daemon-reload"]);
    let o = host.sb.systemctl(&["start", "fleetwright.service"]).unwrap();
    assert!(o.status.success(), "{}", host.sb.journal("fleetwright.service"));
    host.wait("c1 to pass its gate", 30, || host.history()["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet(service("web").memory_max("lots")), "invalid");
    host.wait("c2 to be invalid", 20, || host.verdict(&c2).as_deref() == Some("bad"));
    // Many reconciles of the same refused head.
    host.wait_reconciles(5, 30);
    let entries = || -> Vec<(u64, String)> {
        let mut c = host.sb.command("journalctl");
        c.args(["-u", "fleetwright.service", "-o", "json", "--no-pager"]);
        String::from_utf8_lossy(&c.output().unwrap().stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| (v["PRIORITY"].as_str().and_then(|p| p.parse().ok()).unwrap_or(9), v["MESSAGE"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    host.wait("the journal to have the daemon's lines", 10, || entries().iter().any(|(_, m)| m.contains("marked bad")));
    let all = entries();
    let startup: Vec<&(u64, String)> = all.iter().filter(|(_, m)| m.contains("fleetwright daemon starting")).collect();
    assert_eq!(startup.len(), 1, "{all:?}");
    let (p, line) = startup[0];
    assert_eq!(*p, 6);
    let repository = format!("repository=\"{}\"", repo.path().display());
    for field in [repository.as_str(), "branch=\"master\"", "interval=1m", "resync=1s", "health_grace=1s", "version="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!line.starts_with("<6>") && !line.contains("\u{1b}["), "no prefix or colour left in the message: {line}");
    let invalid: Vec<_> = all.iter().filter(|(_, m)| m.contains("is invalid")).collect();
    assert!(invalid.iter().all(|(p, _)| *p == 4), "warnings at priority 4: {invalid:?}");
    let held: Vec<_> = all.iter().filter(|(p, m)| *p <= 4 && m.contains("marked bad")).collect();
    assert_eq!(held.len(), 1, "one warning for the refused head, whatever the number of reconciles: {all:?}");
    // `journalctl -p warning` shows them, and not the info lines.
    let mut c = host.sb.command("journalctl");
    c.args(["-u", "fleetwright.service", "-p", "warning", "-o", "cat", "--no-pager"]);
    let warnings = String::from_utf8_lossy(&c.output().unwrap().stdout).to_string();
    assert!(warnings.contains("is invalid") && !warnings.contains("fleetwright daemon starting"), "{warnings}");
    // The history folds the repeated refusals into one row.
    let rows = host.reconciles();
    let refused: Vec<_> = rows.iter().filter(|r| r["head"] == c2.as_str() && r["result"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{rows:?}");
    assert!(refused[0]["repeats"].as_i64().unwrap() >= 4, "{rows:?}");
    host.systemctl(&["stop", "fleetwright.service"]);
}

/// Observed 8: pushes into a local bare repository followed by path are seen by the ref watch,
/// without the inotify noise of git's quarantine directories under objects/.
#[test]
fn pushes_into_a_local_bare_repository_converge_without_watch_noise() {
    let Some(host) = Host::boot() else { return };
    let origin = Origin::new();
    let c1 = origin.push(&fleet(service("web")), "one");
    let d = host.daemon(origin.bare.path().to_str().unwrap(), &["--branch", "master", "--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    for i in 2..5 {
        let c = origin.push(&fleet(service("web").description(&format!("push {i}"))), &format!("push {i}"));
        host.wait("the push to converge", 15, || host.marker_commit("web").as_deref() == Some(c.as_str()));
    }
    let log = d.log();
    assert!(!log.contains("unable to remove watch descriptor"), "{log}");
    assert!(log.contains("fleetwright daemon starting") && log.contains("mode=\"local: watched\""), "{log}");
}

/// Observed 9: drift is seen through the manager's signals and the unit directory's events, and
/// repaired within a second — a stopped timer, a hand-edited unit — and a drop-in fleetwright did
/// not write is reported within a second and left in place.
#[test]
fn drift_is_seen_and_repaired_within_a_second() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.history()["lastGood"] == c1.as_str() && host.prop("agent-tick.timer", "ActiveState") == "active");
    d.wait_http();
    host.wait("/healthz", 10, || d.healthz().0 == 200);
    let converged = d.metric("fleetwright_commit_to_converged_seconds");

    let within = |what: &str, act: &dyn Fn(), done: &dyn Fn() -> bool| -> Duration {
        let t0 = Instant::now();
        act();
        host.wait(what, 10, done);
        let took = t0.elapsed();
        eprintln!("{what}: {took:?}");
        took
    };
    let mut took = vec![];
    for _ in 0..3 {
        took.push(within("a stopped timer to run again", &|| drop(host.systemctl(&["stop", "agent-tick.timer"])), &|| {
            host.prop("agent-tick.timer", "ActiveState") == "active"
        }));
    }
    let path = host.unit_dir().join("agent-web.service");
    let good = std::fs::read_to_string(&path).unwrap();
    took.push(within("a hand-edited unit to be written back", &|| std::fs::write(&path, good.replace("sleep 100000", "sleep 5")).unwrap(), &|| {
        std::fs::read_to_string(&path).unwrap() == good
    }));
    // The repair is done and recorded before the next change (else that reconcile's own look at
    // the drop-ins would report it, and the time would say nothing of the watch).
    host.wait("the repair to be recorded", 10, || host.reconciles().iter().any(|r| r["drift"].as_str().unwrap_or("").contains("edited outside fleetwright")));
    let dropin = host.unit_dir().join("agent-web.service.d/override.conf");
    took.push(within(
        "a drop-in to be reported",
        &|| {
            std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
            std::fs::write(&dropin, "[Service]\nEnvironment=X=1\n").unwrap();
        },
        &|| host.reconciles().iter().any(|r| r["drift"].as_str().unwrap_or("").contains("override.conf")),
    ));
    took.sort();
    assert!(took[took.len() / 2] < Duration::from_secs(1), "the median of detection to repair or report: {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(2)), "{took:?}");
    // Reported everywhere, never removed.
    assert!(dropin.exists());
    let st = host.status_json();
    let web = st["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "web").unwrap().clone();
    assert!(web["drift"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("drop-in") && l.as_str().unwrap().contains("override.conf")), "{web}");
    assert_eq!(d.metric("fleetwright_foreign_dropins"), Some(1.0));
    let before = host.reconcile_count();
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("the reconcile asked for", 10, || host.reconcile_count() > before);
    assert!(dropin.exists(), "a drop-in fleetwright did not write is never removed");
    assert_eq!(d.metric("fleetwright_commit_to_converged_seconds"), converged, "drift repairs set no commit-to-converged time");
    let rows = host.reconciles();
    assert!(rows.iter().filter(|r| r["trigger"] == "drift").count() >= 3, "{rows:?}");
}

/// The daemon idle: no CPU, under 30 MB resident (docs/performance.md).
#[test]
fn an_idle_daemon_uses_no_cpu_and_little_memory() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.history()["lastGood"] == c1.as_str());
    let pid = host.daemon_pid().unwrap();
    let read = |file: &str| String::from_utf8_lossy(&host.sb.command("cat").arg(format!("/proc/{pid}/{file}")).output().unwrap().stdout).to_string();
    let cpu = || -> u64 {
        let stat = read("stat");
        let rest = stat.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let rows = host.reconcile_count();
    let (t0, c0) = (Instant::now(), cpu());
    // The sleep is the measurement, not a wait for something: idle is measured over a window
    // of time, and what is measured is how much CPU the daemon spends in it.
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu() - c0;
    let hz = 100.0;
    let cpu_ms = ticks as f64 * 1000.0 / hz;
    let rss_kb: u64 = read("status").lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap();
    eprintln!("idle over {:?}: {cpu_ms} ms of CPU, RSS {rss_kb} kB, {} reconciles", t0.elapsed(), host.reconcile_count() - rows);
    assert!(cpu_ms <= 50.0, "{cpu_ms} ms of CPU in 10 s idle");
    // The target (under 30 MB) is for a release build; a debug build maps more of its much
    // larger binary (docs/performance.md has the release measurement).
    let limit = if cfg!(debug_assertions) { 45 } else { 30 };
    assert!(rss_kb < limit * 1024, "{rss_kb} kB resident");
}

/// Verdict latency: from a commit to its verdict is the grace period, plus the time to see and
/// apply the commit, plus one last look at the watched services (docs/performance.md).
#[test]
fn the_verdict_comes_right_after_the_grace_period() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "3s", "--resync", "1h"], &[]);
    host.wait("c1", 30, || host.history()["lastGood"] == c1.as_str());
    d.wait_http();
    for i in 2..5 {
        let t0 = Instant::now();
        let c = commit(&repo, &fleet(service("web").restart_sec(&format!("{i}s"))), &format!("change {i}"));
        host.wait("the change to be applied", 10, || host.marker_commit("web").as_deref() == Some(c.as_str()));
        let applied = t0.elapsed();
        host.wait("its verdict", 20, || host.history()["lastGood"] == c.as_str());
        let verdict = t0.elapsed();
        let measured = d.metric("fleetwright_commit_to_converged_seconds").unwrap();
        eprintln!("commit → applied {applied:?}, → verdict {verdict:?}; the daemon's commit-to-verdict {measured:.3} s (grace 3 s)");
        assert!((3.0..5.0).contains(&measured), "{measured}");
        assert!(verdict >= Duration::from_secs(3), "{verdict:?}");
    }
}
