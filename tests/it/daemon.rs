//! The daemon against a real systemd: commits converge by themselves, webhooks, drift repair,
//! automatic rollback, revert, and crash recovery.

use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::real::*;

pub(crate) struct Daemon {
    pub(crate) child: Child,
    log: std::path::PathBuf,
    pub(crate) port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Host {
    pub(crate) fn daemon(&self, repo: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let log = tempfile::Builder::new().prefix("daemon-log-").tempfile_in(env!("CARGO_TARGET_TMPDIR")).unwrap().into_temp_path().keep().unwrap();
        let mut c = self.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
        c.args(["--host", "vps-1", "daemon", "--repo", repo, "--listen", &format!("127.0.0.1:{port}")]).args(extra);
        c.envs(env.iter().copied());
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        Daemon { child: c.spawn().unwrap(), log, port }
    }
    pub(crate) fn history(&self) -> serde_json::Value {
        serde_json::from_slice(&self.fw(&["history", "--json", "-n", "100"]).stdout).unwrap()
    }
}

impl Daemon {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// One request to the daemon's endpoint: (status, body).
    pub(crate) fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        crate::http::request(("127.0.0.1", self.port), method, path, headers, body)
    }
    /// Wait until the endpoint accepts connections.
    pub(crate) fn wait_http(&self) {
        wait_for("the daemon to listen", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", self.port)).ok());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // nsenter forks the daemon; the sandbox's shutdown ends it. End nsenter itself, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("--- daemon log\n{}", self.log());
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The daemon tests' fleet: `web` (a [`service`] named web, as the test shapes it) and an
/// hourly job `tick`.
pub(crate) fn fleet(web: AgentSpec) -> Vec<(&'static str, String)> {
    vec![("fleet.yaml", FLEET.to_string()), ("web.yaml", web.yaml()), ("tick.yaml", job("tick", "echo tick").every("1h").yaml())]
}

pub(crate) fn commit(repo: &Repo, files: &[(&'static str, String)], msg: &str) -> String {
    repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), msg)
}

#[test]
fn commits_converge_by_themselves_and_a_revert_rolls_back() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web").description("one")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "1s", "--resync", "1h"], &[]);
    host.wait("the first commit to converge", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    // The marker is written before the starts (the agent reads it at exec): the start follows.
    host.wait("web to start", 10, || host.prop("agent-web.service", "ActiveState") == "active");
    d.wait_http();
    host.wait("healthz once the health gate passed", 10, || d.http("GET", "/healthz", &[], "").0 == 200);
    assert!(d.http("GET", "/healthz", &[], "").1.contains(&c1));

    // A commit converges without any manual step; measure commit → converged.
    let t0 = Instant::now();
    let c2 = commit(&repo, &fleet(service("web").description("two").restart("always")), "two");
    host.wait("the second commit to converge", 10, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
    let latency = t0.elapsed();
    eprintln!("commit to converged: {latency:?}");
    assert_eq!(host.prop("agent-web.service", "Restart"), "always");
    // The marker is written before the restart; the metrics when the reconcile has ended.
    let applied = format!("fleetwright_applied_commit_info{{commit=\"{c2}\"}} 1");
    host.wait("the metrics to name the second commit", 10, || d.http("GET", "/metrics", &[], "").1.contains(&applied));
    let (_, metrics) = d.http("GET", "/metrics", &[], "");
    let sample = metrics.lines().find_map(|l| l.strip_prefix("fleetwright_commit_to_converged_seconds ")).and_then(|v| v.parse::<f64>().ok());
    assert!(sample.is_some_and(|s| s > 0.0), "a commit-to-converged sample: {metrics}");
    assert!(metrics.contains("fleetwright_reconcile_duration_seconds_count "), "{metrics}");

    // git revert: a new commit with the old tree converges back.
    let c3 = commit(&repo, &fleet(service("web").description("one")), "Revert \"two\"");
    host.wait("the revert to converge", 10, || host.marker_commit("web").as_deref() == Some(c3.as_str()));
    assert_eq!(host.prop("agent-web.service", "Restart"), "on-failure");
    assert_eq!(host.prop("agent-web.service", "Description"), "one");
    host.wait("the revert to pass its health gate", 10, || host.history()["lastGood"] == c3.as_str());
    let h = host.history();
    let rows = h["reconciles"].as_array().unwrap();
    let applied_as = |c: &str, result: &str| rows.iter().any(|r| r["applied"] == c && r["result"] == result);
    assert!(applied_as(&c1, "converged") && applied_as(&c3, "converged"), "{h}");
    // c2 either passed its gate or was superseded by the revert while it was being watched.
    assert!(applied_as(&c2, "converged") || applied_as(&c2, "superseded"), "{h}");
}

#[test]
fn a_remote_over_file_url_follows_the_webhook_and_refuses_bad_signatures() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let secret = repo.dir.path().parent().unwrap().join(format!("secret-{}", std::process::id()));
    std::fs::write(&secret, "5f0b6c1e9d2a4b7c8e3f1a6d9b2c4e7f\n").unwrap();
    let url = format!("file://{}", repo.path().display());
    let d = host.daemon(
        &url,
        &["--branch", "master", "--interval", "1h", "--resync", "1h", "--health-grace", "0s", "--webhook-secret-file", secret.to_str().unwrap()],
        &[],
    );
    host.wait("the remote's first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    assert!(host.state_dir().join("cache").read_dir().unwrap().count() == 1, "fetched into a cache in the state directory");
    d.wait_http();

    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    let body = r#"{"ref":"refs/heads/master"}"#;
    let (code, _) = d.http("POST", "/webhook", &[("X-Hub-Signature-256", "sha256=0000"), ("X-GitHub-Delivery", "d1")], body);
    assert_eq!(code, 401);
    let (code, _) = d.http("POST", "/webhook", &[("X-Gitea-Signature", &fleetwright::daemon::webhook::sign(b"wrong", body.as_bytes()))], body);
    assert_eq!(code, 401);
    let sig = format!("sha256={}", fleetwright::daemon::webhook::sign(b"5f0b6c1e9d2a4b7c8e3f1a6d9b2c4e7f", body.as_bytes()));
    let (code, _) = d.http("POST", "/webhook", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d2")], body);
    assert_eq!(code, 202);
    host.wait("the webhook to converge the new commit", 10, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
    let (code, _) = d.http("POST", "/webhook", &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "d2")], body);
    assert_eq!(code, 409, "a replayed delivery is refused");
    // The refused deliveries fetched nothing: one reconcile came from a webhook, the signed one.
    let webhooks: i64 = host.reconciles().iter().filter(|r| r["trigger"] == "webhook").map(|r| r["repeats"].as_i64().unwrap_or(1)).sum();
    assert_eq!(webhooks, 1);
    let _ = std::fs::remove_file(secret);
}

#[test]
fn drift_is_repaired_and_reported() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--resync", "1s", "--health-grace", "0s"], &[]);
    host.wait("converged", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    host.wait("the timer", 5, || host.prop("agent-tick.timer", "ActiveState") == "active");
    // By hand: stop the timer, edit a unit file.
    host.systemctl(&["stop", "agent-tick.timer"]);
    let path = host.unit_dir().join("agent-web.service");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("sleep 100000", "sleep 5")).unwrap();
    host.wait("drift to be repaired", 15, || host.prop("agent-tick.timer", "ActiveState") == "active" && std::fs::read_to_string(&path).unwrap() == good);
    let drift = || -> String {
        let h = host.history();
        h["reconciles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["result"] == "repaired")
            .map(|r| r["drift"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    host.wait("both repairs in the history", 5, || drift().contains("agent-web.service") && drift().contains("agent-tick.timer"));
    let drift = drift();
    assert!(drift.contains("agent-tick.timer") && drift.contains("agent-web.service: the file was edited outside fleetwright"), "{drift}");
}

#[test]
fn a_crashing_deploy_is_rolled_back_and_not_retried() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web").restart("always").restart_sec("200ms")), "good");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "3s", "--resync", "1s"], &[]);
    host.wait("the good commit", 20, || {
        host.fw(&["history", "--json"]).stdout.windows(c1.len()).any(|w| w == c1.as_bytes()) && host.history()["lastGood"] == c1.as_str()
    });
    let bad_web = agent("web").sh("echo crashing; exit 3").restart("always").restart_sec("200ms");
    let c2 = commit(&repo, &fleet(bad_web), "bad");
    host.wait("the rollback", 20, || host.history()["reconciles"].as_array().unwrap().iter().any(|r| r["result"] == "rolled-back"));
    host.wait("the good definition to run again", 10, || {
        host.prop("agent-web.service", "ActiveState") == "active" && host.prop("agent-web.service", "ExecStart").contains("sleep 100000")
    });
    assert_eq!(host.marker_commit("web").as_deref(), Some(c1.as_str()));
    // Resyncs do not apply the bad commit again.
    let invocation = host.prop("agent-web.service", "InvocationID");
    let seen = |h: &serde_json::Value| -> i64 { h["reconciles"].as_array().unwrap().iter().map(|r| r["repeats"].as_i64().unwrap_or(1)).sum() };
    let base = seen(&host.history());
    host.wait("three more resyncs", 20, || seen(&host.history()) >= base + 3);
    assert!(host.prop("agent-web.service", "ExecStart").contains("sleep 100000"));
    assert_eq!(host.prop("agent-web.service", "InvocationID"), invocation);
    let h = host.history();
    assert_eq!(h["lastGood"], c1.as_str());
    assert!(h["reconciles"].as_array().unwrap().iter().any(|r| r["result"] == "refused" && r["error"].as_str().unwrap_or("").contains("marked bad")), "{h}");
    assert!(d.log().contains("rolling back"), "{}", d.log());
    // A newer, good commit is applied.
    let c3 = commit(&repo, &fleet(service("web").description("fixed").restart("always").restart_sec("200ms")), "fixed");
    host.wait("the fix", 20, || host.marker_commit("web").as_deref() == Some(c3.as_str()));
    let _ = c2;
}

#[test]
fn a_daemon_killed_mid_apply_converges_after_restart() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let mut d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s"], &[("FLEETWRIGHT_CRASH_AT", "after-write:2")]);
    host.wait("the daemon to reach its crash point", 15, || d.log().contains("crash point after-write reached"));
    let _ = d.child.wait();
    // Half done: one file written, nothing reloaded or started.
    assert_ne!(host.prop("agent-web.service", "ActiveState"), "active");
    let inv = host.inventory();
    assert_eq!(inv.files.len(), 3, "every file is recorded before it is written: {inv:?}");
    assert!(inv.reload_pending);
    drop(d);
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s"], &[]);
    host.wait("convergence after the restart", 15, || {
        host.marker_commit("web").as_deref() == Some(c1.as_str()) && host.prop("agent-web.service", "ActiveState") == "active"
    });
    host.wait("the timer", 5, || host.prop("agent-tick.timer", "ActiveState") == "active");
    let again = host.fw(&["plan", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(code(&again), 0, "converged: {}", stdout(&again));
}

#[test]
fn the_shipped_unit_runs_the_daemon_hardened_with_notify_and_watchdog() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/systemd/fleetwright.service")).unwrap();
    let exec = shipped.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let unit = shipped
        .replace(
            exec,
            &format!("ExecStart={} --host vps-1 daemon --repo {} --no-listen --health-grace 0s", env!("CARGO_BIN_EXE_fleetwright"), repo.path().display()),
        )
        .replace("WatchdogSec=2min", "WatchdogSec=2s");
    std::fs::write(host.sb.host_path("/etc/systemd/system/fleetwright.service"), unit).unwrap();
    host.systemctl(&["daemon-reload"]);
    let o = host.sb.systemctl(&["start", "fleetwright.service"]).unwrap();
    assert!(o.status.success(), "start (Type=notify: READY=1 was sent): {}\n{}", String::from_utf8_lossy(&o.stderr), host.sb.journal("fleetwright.service"));
    host.wait("the fleet", 10, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    // The keep-alives arrive: the manager heard one more than two watchdog periods (2 s) after
    // the start.
    host.wait("a keep-alive two watchdog periods after the start", 15, || host.watchdog_fed_for("fleetwright.service") > Duration::from_secs(4));
    assert_eq!(host.prop("fleetwright.service", "ActiveState"), "active", "{}", host.sb.journal("fleetwright.service"));
    assert_eq!(host.prop("fleetwright.service", "NRestarts"), "0");
    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    host.wait("the next commit", 10, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
    // SIGTERM: a clean stop.
    host.systemctl(&["stop", "fleetwright.service"]);
    assert_eq!(host.prop("fleetwright.service", "Result"), "success", "{}", host.sb.journal("fleetwright.service"));
    assert!(!host.state_dir().join("daemon.pid").exists());
}

#[test]
fn sync_rollback_resume_and_notifications() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let sink = crate::http::Sink::start();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let url = format!("file://{}", repo.path().display());
    let _d = host.daemon(&url, &["--branch", "master", "--interval", "1h", "--resync", "1h", "--health-grace", "0s", "--notify-url", &sink.url], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    host.wait("a deployed notification", 5, || sink.count("deployed", &c1) >= 1);

    // A remote is polled hourly here: `fleetwright sync` makes it fetch now.
    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("sync to converge", 10, || host.marker_commit("web").as_deref() == Some(c2.as_str()));

    // Roll back to c1 and stay there, even when the branch moves, until resume.
    let o = host.fw(&["rollback", "--to", &c1]);
    assert_eq!(code(&o), 0);
    host.wait("the rollback", 10, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    let c3 = commit(&repo, &fleet(service("web").description("three")), "three");
    let signalled = |h: &serde_json::Value| -> i64 {
        h["reconciles"].as_array().unwrap().iter().filter(|r| r["trigger"] == "signal").map(|r| r["repeats"].as_i64().unwrap_or(1)).sum()
    };
    let base = signalled(&host.history());
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("the reconcile asked for", 10, || signalled(&host.history()) > base);
    assert_eq!(host.marker_commit("web").as_deref(), Some(c1.as_str()), "the pin holds");
    let h = host.history();
    assert!(h["reconciles"][0]["head"] == c1.as_str() && h["pin"] == c1.as_str(), "{h}");
    assert_eq!(code(&host.fw(&["resume"])), 0);
    host.wait("resume to follow the branch", 10, || host.marker_commit("web").as_deref() == Some(c3.as_str()));
}

#[test]
fn force_pushes_and_unsigned_commits_are_refused() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    // Rewrite history: a new root commit replaces the branch.
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["checkout", "-q", "--orphan", "rewritten"]);
    std::fs::write(repo.path().join("web.yaml"), service("web").description("rewritten").yaml()).unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "rewritten history"]);
    git(&["branch", "-f", "master", "rewritten"]);
    git(&["checkout", "-q", "master"]);
    host.wait("the force-push to be refused", 10, || {
        host.history()["reconciles"].as_array().unwrap().iter().any(|r| r["result"] == "refused" && r["error"].as_str().unwrap_or("").contains("force-push"))
    });
    assert_eq!(host.marker_commit("web").as_deref(), Some(c1.as_str()));
    assert_ne!(host.prop("agent-web.service", "Description"), "rewritten");
}

#[test]
fn signed_commit_mode_applies_only_signed_commits() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let keys = tempfile::Builder::new().prefix("keys-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let key = keys.path().join("id_ed25519");
    let o = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@example.com", "-f"]).arg(&key).output().unwrap();
    assert!(o.status.success());
    let public = std::fs::read_to_string(keys.path().join("id_ed25519.pub")).unwrap();
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("ops@example.com {}", public.trim())).unwrap();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["-c", "user.name=ops", "-c", "user.email=ops@example.com", "-c", "gpg.format=ssh", "-c", &format!("user.signingkey={}", key.display())])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let write = |desc: &str| {
        for (p, t) in fleet(service("web").description(desc)) {
            std::fs::write(repo.path().join(p), t).unwrap();
        }
    };
    write("signed");
    git(&["add", "-A"]);
    git(&["commit", "-q", "-S", "-m", "signed"]);
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h", "--allowed-signers", signers.to_str().unwrap()], &[]);
    host.wait("the signed commit", 15, || host.prop("agent-web.service", "Description") == "signed");
    write("unsigned");
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "unsigned"]);
    host.wait("the unsigned commit to be refused", 10, || {
        host.history()["reconciles"].as_array().unwrap().iter().any(|r| r["result"] == "refused" && r["error"].as_str().unwrap_or("").contains("is not signed"))
    });
    assert_eq!(host.prop("agent-web.service", "Description"), "signed");
    write("signed again");
    git(&["add", "-A"]);
    git(&["commit", "-q", "-S", "-m", "signed again"]);
    host.wait("the next signed commit", 10, || host.prop("agent-web.service", "Description") == "signed again");
}

impl Host {
    /// Whether a process with exactly these arguments runs in the sandbox.
    pub(crate) fn running(&self, args: &str) -> bool {
        let o = self.sb.command("ps").args(["-e", "-o", "args="]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == args)
    }
    /// The daemon's pid inside the sandbox (from its pid file).
    pub(crate) fn daemon_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join("daemon.pid")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }
    pub(crate) fn reconciles(&self) -> Vec<serde_json::Value> {
        self.history()["reconciles"].as_array().cloned().unwrap_or_default()
    }
}

#[test]
fn an_old_failure_elsewhere_does_not_fail_a_new_commit_and_an_invalid_commit_is_held() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    // `flaky` runs while its program exists; without it, every start fails (203/EXEC).
    let flaky = agent("flaky").command(&["/srv/flaky-prog"]).restart("no").yaml();
    let files = |web: AgentSpec| {
        let mut f = fleet(web);
        f.push(("flaky.yaml", flaky.clone()));
        f
    };
    std::fs::write(host.sb.host_path("/srv/flaky-prog"), "#!/bin/sh\nexec sleep 100000\n").unwrap();
    std::fs::set_permissions(host.sb.host_path("/srv/flaky-prog"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let c1 = commit(&repo, &files(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "1s", "--resync", "1h"], &[]);
    host.wait("the first commit to pass its gate", 15, || host.history()["lastGood"] == c1.as_str());
    // By hand, outside any deploy: flaky breaks.
    std::fs::remove_file(host.sb.host_path("/srv/flaky-prog")).unwrap();
    host.systemctl(&["restart", "agent-flaky.service"]);
    host.wait("flaky to fail", 10, || host.prop("agent-flaky.service", "ActiveState") == "failed");
    // A commit that changes only web: its gate passes; flaky's repair failure is reported,
    // not blamed on it (no rollback).
    let c2 = commit(&repo, &files(service("web").restart_sec("3s")), "web only");
    host.wait("the web-only commit to pass its gate", 15, || host.history()["lastGood"] == c2.as_str());
    assert_eq!(host.prop("agent-web.service", "RestartUSec"), "3s");
    let rows = host.reconciles();
    assert!(!rows.iter().any(|r| r["result"] == "rolled-back"), "{rows:?}");
    assert!(rows.iter().any(|r| r["applied"] == c2.as_str() && r["error"].as_str().unwrap_or("").contains("agent-flaky.service")), "{rows:?}");

    // An invalid commit is rejected whole and the last good state keeps running.
    let c3 = commit(&repo, &files(service("web").restart_sec("3s").memory_max("lots")), "broken");
    host.wait("the invalid commit to be held", 10, || host.reconciles().iter().any(|r| r["head"] == c3.as_str() && r["result"] == "invalid"));
    let row = host.reconciles().into_iter().find(|r| r["head"] == c3.as_str() && r["result"] == "invalid").unwrap();
    assert!(row["error"].as_str().unwrap().contains("memoryMax: invalid size \"lots\""), "{row}");
    assert_eq!(row["applied"], c2.as_str(), "the last good commit is re-applied: {row}");
    assert_eq!(host.marker_commit("web").as_deref(), Some(c2.as_str()));
}

#[test]
fn a_newer_commit_cancels_the_health_gate_wait_and_a_remote_is_polled() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let url = format!("file://{}", repo.path().display());
    // No webhook, no sync: a 1 s poll finds every commit.
    let _d = host.daemon(&url, &["--branch", "master", "--interval", "1s", "--resync", "1h", "--health-grace", "6s"], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    host.wait("its gate", 15, || host.history()["lastGood"] == c1.as_str());
    let c2 = commit(&repo, &fleet(service("web").restart_sec("2s")), "two");
    host.wait("the poll to find the second commit", 10, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
    // c2's gate waits 6 s; c3 arrives at once and does not wait for it.
    let t0 = Instant::now();
    let c3 = commit(&repo, &fleet(service("web").restart_sec("3s")), "three");
    host.wait("the third commit", 10, || host.marker_commit("web").as_deref() == Some(c3.as_str()));
    assert!(t0.elapsed() < Duration::from_secs(5), "c3 waited out c2's gate: {:?}", t0.elapsed());
    host.wait("the third commit's gate", 15, || host.history()["lastGood"] == c3.as_str());
    let rows = host.reconciles();
    assert!(rows.iter().any(|r| r["applied"] == c2.as_str() && r["result"] == "superseded"), "{rows:?}");
    assert!(rows.iter().any(|r| r["trigger"] == "poll"), "{rows:?}");
}

#[test]
fn sigterm_during_an_apply_finishes_it_and_a_second_daemon_is_refused() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    // One daemon per state directory.
    let mut second = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    second.args(["--host", "vps-1", "daemon", "--repo", repo.path().to_str().unwrap(), "--no-listen"]);
    let out = second.output().unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("another fleetwright daemon already runs"), "{}", stderr(&out));

    // A slow step: web's health.check takes 2 s before its restart. SIGTERM in the middle: once
    // the check runs.
    let c2 = commit(&repo, &fleet(service("web").check(&["/bin/sleep", "2"]).restart_sec("4s")), "slow");
    host.wait("web's health.check to run", 15, || host.running("/bin/sleep 2"));
    let pid = host.daemon_pid().expect("the daemon's pid");
    let o = host.sb.command("kill").args(["-TERM", &pid]).output().unwrap();
    assert!(o.status.success());
    host.wait("the daemon to stop", 15, || host.daemon_pid().is_none());
    // It finished the apply it was in: restarted with the new definition, nothing pending.
    assert_eq!(host.marker_commit("web").as_deref(), Some(c2.as_str()));
    assert_eq!(host.prop("agent-web.service", "RestartUSec"), "4s");
    let inv = host.inventory();
    assert_eq!(inv.applied_commit.as_deref(), Some(c2.as_str()));
    assert!(inv.pending_restarts.is_empty(), "{inv:?}");
}

#[test]
fn transient_failures_retry_with_one_backoff_chain() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &fleet(service("web")), "one");
    // A bus that is not there: every reconcile fails to connect.
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h", "--bus-address", "unix:path=/run/no-such-bus"], &[]);
    host.wait("the first failure", 10, || host.reconciles().iter().any(|r| r["result"] == "error"));
    let t0 = Instant::now();
    // Syncs meanwhile run (and fail) but start no further retry chains and do not double it.
    // Each one is seen to run (a reconcile more) before the next is sent.
    let seen = || -> i64 { host.reconciles().iter().map(|r| r["repeats"].as_i64().unwrap_or(1)).sum() };
    for _ in 0..4 {
        let before = seen();
        assert_eq!(code(&host.fw(&["sync"])), 0);
        host.wait("the reconcile the sync asked for", 10, || seen() > before);
    }
    // Repeated failures are folded into one row each: count what each row stands for.
    let retries = || -> i64 { host.reconciles().iter().filter(|r| r["trigger"] == "retry").map(|r| r["repeats"].as_i64().unwrap_or(1)).sum() };
    host.wait("the third retry", 30, || retries() >= 3);
    // Backoff 1 s, 2 s, 4 s after the first failure: one chain needs about 7 s for three
    // retries; chains started by the syncs, or a doubled one, would be faster.
    assert!(t0.elapsed() >= Duration::from_secs(5), "three retries after {:?}", t0.elapsed());
    let rows = host.reconciles();
    assert!(rows.iter().all(|r| r["result"] == "error"), "{rows:?}");
    assert!(rows[0]["error"].as_str().unwrap().contains("cannot reach the systemd"), "{rows:?}");
}

#[test]
fn a_directory_in_the_place_of_a_file_to_write_holds_the_commit_and_marks_nothing_bad() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("the first commit", 15, || host.history()["lastGood"] == c1.as_str());
    // The journald drop-in's place is taken by a directory: something fleetwright never
    // writes, so foreign. The commit is held (nothing of it applied), as with a foreign file;
    // it is the host's condition, not the commit's fault: never marked bad, never rolled back.
    let dropin = host.sb.host_path(fleetwright::render::JOURNALD_DROPIN);
    std::fs::create_dir_all(&dropin).unwrap();
    let mut files = fleet(service("web").description("two"));
    files[0].1.push_str("journal: {maxUse: 100M}\n");
    let c2 = commit(&repo, &files, "two");
    host.wait("the commit to be held", 20, || host.reconciles().iter().any(|r| r["head"] == c2.as_str() && r["result"] == "held"));
    let held = host.reconciles().into_iter().find(|r| r["head"] == c2.as_str() && r["result"] == "held").unwrap();
    assert!(held["error"].as_str().unwrap().contains("is a directory, which fleetwright never writes"), "{held}");
    assert!(host.reconciles().iter().all(|r| r["result"] != "rolled-back"), "{:?}", host.reconciles());
    assert_eq!(host.history()["lastGood"], c1.as_str());
    assert_ne!(host.prop("agent-web.service", "Description"), "two");
    // Moved away: the same commit converges, without a new one.
    std::fs::remove_dir(&dropin).unwrap();
    assert_eq!(code(&host.fw(&["sync"])), 0);
    host.wait("the held commit to converge once the directory is gone", 20, || host.history()["lastGood"] == c2.as_str());
    assert_eq!(host.prop("agent-web.service", "Description"), "two");
}
