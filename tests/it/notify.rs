//! Issue 17, in the real tier: commit statuses on each forge's documented API for a good and a
//! rolled-back commit, a sink that is down for a while and then gets every report once, in
//! order, and an agent's failing job reported through the real systemd's `OnFailure=` with its
//! own stderr line, then its recovery. The receivers are local HTTP servers that keep every
//! request whole (`http::Receiver`).

use crate::daemon::{commit, fleet};
use crate::http::{Received, Receiver};
use crate::real::*;

/// A token file on the host's file system (the sandbox sees it: the build tree is shared).
struct TokenFile(std::path::PathBuf);

impl TokenFile {
    fn new(token: &str) -> TokenFile {
        std::fs::create_dir_all(token_dir()).unwrap();
        let p = std::path::Path::new(&token_dir()).join(format!("notify-token-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::write(&p, format!("{token}\n")).unwrap();
        TokenFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where the tests' token files are: a directory the Fleet lists in `credentialDirs` (root
/// reads sinks' tokens only from there).
fn token_dir() -> String {
    format!("{}/notify-tokens", env!("CARGO_TARGET_TMPDIR"))
}

/// The real tier's Fleet with a `notify` list (and the tests' token directory among its
/// credential directories).
fn fleet_notifying(notify: &str) -> String {
    let dirs = "credentialDirs: [/etc/fleetwright/secrets, /srv/creds]";
    assert!(FLEET.contains(dirs));
    format!("{}notify:\n{notify}", FLEET.replace(dirs, &format!("credentialDirs: [/etc/fleetwright/secrets, /srv/creds, {}]", token_dir())))
}

/// `(state, description)` of each accepted status under `prefix` for `commit`, in order.
fn states(r: &Receiver, prefix: &str, commit: &str, state_field: &str) -> Vec<String> {
    r.accepted(prefix)
        .iter()
        .filter(|q| q.path.ends_with(&format!("/statuses/{commit}")))
        .map(|q| q.json()[state_field].as_str().unwrap_or("").to_string())
        .collect()
}

fn check_gitea(q: &Received, commit: &str, token: &str) {
    assert_eq!(q.method, "POST");
    assert_eq!(q.path, format!("/gitea/api/v1/repos/ops/fleet/statuses/{commit}"));
    assert_eq!(q.header("authorization"), Some(format!("token {token}").as_str()));
    assert!(q.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{q:?}");
    let b = q.json();
    assert_eq!(b["context"], "fleetwright/vps-1");
    assert!(b["description"].as_str().is_some_and(|d| !d.is_empty() && !d.contains('\n') && d.chars().count() <= 140), "{b}");
    assert_eq!(b["target_url"], format!("https://dash.example/vps-1/{commit}"));
}

fn check_github(q: &Received, commit: &str, token: &str) {
    assert_eq!(q.method, "POST");
    assert_eq!(q.path, format!("/github/repos/ops/fleet/statuses/{commit}"));
    assert_eq!(q.header("authorization"), Some(format!("Bearer {token}").as_str()));
    assert_eq!(q.header("accept"), Some("application/vnd.github+json"));
    assert!(q.header("user-agent").is_some_and(|u| u.starts_with("fleetwright/")), "{q:?}");
    assert_eq!(q.json()["context"], "fleetwright/vps-1");
}

fn check_gitlab(q: &Received, commit: &str, token: &str) {
    assert_eq!(q.method, "POST");
    assert_eq!(q.path, format!("/gitlab/api/v4/projects/ops%2Ffleet/statuses/{commit}"));
    assert_eq!(q.header("private-token"), Some(token));
    assert_eq!(q.json()["name"], "fleetwright/vps-1");
}

/// A good commit gets `pending` then `success` on Gitea, GitHub and GitLab, each in its own
/// API's shape; a commit that crashes gets `pending` then `failure` (GitLab: `failed`) once it
/// is rolled back. The GitHub receiver is down (503) until the first verdict is in: it then
/// gets every status it missed, once each, in order.
#[test]
fn forge_statuses_for_a_good_and_a_rolled_back_commit() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let forge = Receiver::start();
    forge.answer(201);
    let github = Receiver::start();
    github.answer(503);
    let token = TokenFile::new("s3cr3t-token");
    let notify = format!(
        "  - {{kind: gitea, url: \"{f}/gitea\", repo: ops/fleet, tokenFile: {t}, targetUrl: \"https://dash.example/{{host}}/{{commit}}\"}}\n\
         \x20 - {{kind: github, url: \"{g}/github\", repo: ops/fleet, tokenFile: {t}}}\n\
         \x20 - {{kind: gitlab, url: \"{f}/gitlab\", project: ops/fleet, tokenFile: {t}}}\n",
        f = forge.base,
        g = github.base,
        t = token.path()
    );
    let files = |web: AgentSpec| {
        let mut f = fleet(web);
        f[0].1 = fleet_notifying(&notify);
        f
    };
    let c1 = commit(&repo, &files(service("web").restart("always").restart_sec("200ms")), "good");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "2s", "--resync", "1h"], &[]);
    host.wait("c1's success on gitea and gitlab", 40, || {
        states(&forge, "/gitea", &c1, "state") == ["pending", "success"] && states(&forge, "/gitlab", &c1, "state") == ["pending", "success"]
    });
    for q in forge.accepted("/gitea") {
        check_gitea(&q, &c1, "s3cr3t-token");
    }
    for q in forge.accepted("/gitlab") {
        check_gitlab(&q, &c1, "s3cr3t-token");
    }
    // GitHub was down all along: it was asked, and answered 503.
    assert!(github.all().iter().any(|q| q.status == 503), "the down receiver was tried");
    assert!(github.accepted("/github").is_empty());
    github.answer(201);
    // Woken by the next report at the latest: the rolled-back commit.
    let bad_web = agent("web").sh("echo crashing; exit 3").restart("always").restart_sec("200ms");
    let c2 = commit(&repo, &files(bad_web), "bad");
    host.wait("c2's failure on every forge", 60, || {
        states(&forge, "/gitea", &c2, "state") == ["pending", "failure"]
            && states(&forge, "/gitlab", &c2, "state") == ["pending", "failed"]
            && states(&github, "/github", &c2, "state") == ["pending", "failure"]
    });
    assert_eq!(host.history()["lastGood"], c1.as_str());
    let rolled = forge.accepted("/gitea").into_iter().find(|q| q.path.ends_with(&c2) && q.json()["state"] == "failure").unwrap();
    check_gitea(&rolled, &c2, "s3cr3t-token");
    assert!(rolled.json()["description"].as_str().unwrap().starts_with("rolled back on vps-1"), "{}", rolled.body);
    // The down receiver got everything it missed, once each, in order.
    let order: Vec<(String, String)> = github
        .accepted("/github")
        .iter()
        .map(|q| {
            check_github(q, q.path.rsplit('/').next().unwrap(), "s3cr3t-token");
            (q.path.rsplit('/').next().unwrap().to_string(), q.json()["state"].as_str().unwrap().to_string())
        })
        .collect();
    let want: Vec<(String, String)> =
        [(&c1, "pending"), (&c1, "success"), (&c2, "pending"), (&c2, "failure")].iter().map(|(c, s)| (c.to_string(), s.to_string())).collect();
    assert_eq!(order, want);
    let metrics = d.http("GET", "/metrics", &[], "").1;
    assert!(metrics.contains("fleetwright_notify_sent_total{sink=\"github:"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("fleetwright_notify_failed_total{sink=\"github:") && !l.ends_with(" 0")), "{metrics}");
}

/// A job that fails writes its reason to stderr; the real systemd starts its `OnFailure=`
/// reporter, which queues the failure with that line, the result, the exit status and the
/// deploy marker's commit; the daemon delivers it to the chat and the webhook within seconds.
/// Its next good run reports the recovery, once.
#[test]
fn an_agents_failing_job_is_reported_with_its_own_stderr_line_then_its_recovery() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let hooks = Receiver::start();
    hooks.answer(200);
    let notify = format!(
        "  - {{kind: slack, url: \"{b}/slack\"}}\n  - {{kind: webhook, url: \"{b}/hook\", events: [agent-failed, agent-recovered], agents: [boom]}}\n",
        b = hooks.base
    );
    let script = "if [ -e /run/fw-test/fixed ]; then echo all good; else echo \"disk full writing /srv/boom/out\" >&2; exit 3; fi";
    let files = vec![("fleet.yaml", fleet_notifying(&notify)), ("web.yaml", service("web").yaml()), ("boom.yaml", job("boom", script).every("1h").yaml())];
    let c1 = commit(&repo, &files, "with a failing job");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("c1 to be good", 30, || host.history()["lastGood"] == c1.as_str());
    let unit = std::fs::read_to_string(host.unit_dir().join("agent-boom.service")).unwrap();
    assert!(unit.contains("OnFailure=agent-boom.notify@%n.service") && unit.contains("OnSuccess=agent-boom.recovered@%n.service"), "{unit}");

    // A run that fails.
    let _ = host.systemctl(&["start", "agent-boom.service"]);
    let failure = |r: &Receiver| r.accepted("/hook").into_iter().find(|q| q.json()["event"] == "agent-failed");
    host.wait("the failure at the webhook", 30, || failure(&hooks).is_some());
    let ev = failure(&hooks).unwrap().json();
    assert_eq!(ev["unit"], "agent-boom.service");
    assert_eq!(ev["agent"], "boom");
    assert_eq!(ev["result"], "exit-code");
    assert_eq!(ev["exitStatus"], "3");
    assert_eq!(ev["commit"], c1.as_str(), "the deploy marker's commit");
    assert!(ev["journal"].as_array().unwrap().iter().any(|l| l == "disk full writing /srv/boom/out"), "{ev}");
    let chat = |what: &str| hooks.accepted("/slack").into_iter().find(|q| q.json()["text"].as_str().is_some_and(|t| t.contains(what)));
    host.wait("the failure in the chat", 30, || chat("agent failed: agent-boom.service").is_some());
    let text = chat("agent failed").unwrap().json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("disk full writing /srv/boom/out"), "{text}");

    // It works again: one recovery, and the run after it says nothing.
    host.sb.command("sh").args(["-c", "mkdir -p /run/fw-test && touch /run/fw-test/fixed"]).status().unwrap();
    let _ = host.systemctl(&["start", "agent-boom.service"]);
    host.wait("the recovery", 30, || hooks.accepted("/hook").iter().any(|q| q.json()["event"] == "agent-recovered"));
    let _ = host.systemctl(&["start", "agent-boom.service"]);
    // Broken again: a new failure, reported (a recovered unit starts a new group). Everything
    // the good runs could have queued is in before it.
    host.sb.command("rm").args(["-f", "/run/fw-test/fixed"]).status().unwrap();
    let _ = host.systemctl(&["start", "agent-boom.service"]);
    host.wait("the second failure", 30, || hooks.accepted("/hook").iter().filter(|q| q.json()["event"] == "agent-failed").count() == 2);
    let events: Vec<String> = hooks.accepted("/hook").iter().map(|q| q.json()["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["agent-failed", "agent-recovered", "agent-failed"], "the webhook gets only the events it asked for");
}

/// A crash loop (systemd gives up: start-limit-hit) and a stale heartbeat (the heartbeat check
/// restarts the hung service and its own run fails) are failures too, reported as such. With
/// no daemon running (a host run by `apply` alone), the reporter delivers them itself to the
/// sinks `apply` recorded.
#[test]
fn crash_loops_and_stale_heartbeats_are_reported_even_without_a_daemon() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let hooks = Receiver::start();
    hooks.answer(204);
    let notify = format!("  - {{kind: webhook, url: \"{}/hook\"}}\n", hooks.base);
    let looping = agent("loop").sh("echo \"cannot bind :8080\" >&2; exit 1").restart("always").restart_sec("100ms");
    let hung = agent("hung").sh("mkdir -p /run/fw-test; touch /run/fw-test/hb; exec sleep 100000").heartbeat("/run/fw-test/hb", "2s");
    let files = [("fleet.yaml", fleet_notifying(&notify)), ("loop.yaml", looping.yaml()), ("hung.yaml", hung.yaml())];
    repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), "loops and hangs");
    let _ = host.apply(&repo);
    let reported = |unit: &str| hooks.accepted("/hook").into_iter().map(|q| q.json()).find(|e| e["event"] == "agent-failed" && e["unit"] == unit);
    host.wait("the crash loop reported", 40, || reported("agent-loop.service").is_some());
    let e = reported("agent-loop.service").unwrap();
    assert!(e["message"].as_str().unwrap().contains("crash loop: restarted"), "{e}");
    assert!(e["journal"].as_array().unwrap().iter().any(|l| l == "cannot bind :8080"), "{e}");
    host.wait("the stale heartbeat reported", 40, || reported("agent-hung.heartbeat.service").is_some());
    let e = reported("agent-hung.heartbeat.service").unwrap();
    assert_eq!(e["agent"], "hung");
    assert!(e["journal"].as_array().unwrap().iter().any(|l| l.as_str().unwrap_or("").contains("stale heartbeat")), "{e}");
    // The reporter said in its own journal that it delivered (no daemon ran).
    let journal = host.sb.journal("agent-loop.notify@agent-loop.service.service");
    assert!(journal.contains("delivered"), "{journal}");
    let status = host.fw(&["status", "--json"]);
    assert!(!stderr(&status).contains("instance name"), "status reads the template: {}", stderr(&status));
}

/// `notify test` sends a test event to every sink and says what each answered; one refused is
/// exit 1.
#[test]
fn notify_test_says_what_each_sink_answered() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let ok = Receiver::start();
    let down = Receiver::start();
    down.answer(500);
    let token = TokenFile::new("t0k");
    let notify = format!(
        "  - {{kind: gitea, url: \"{o}/gitea\", repo: ops/fleet, tokenFile: {t}}}\n  - {{kind: ntfy, url: \"{o}/topic\"}}\n",
        o = ok.base,
        t = token.path()
    );
    let files = [("fleet.yaml", fleet_notifying(&notify)), ("web.yaml", service("web").yaml())];
    let c = repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), "sinks");
    let r = repo.path().to_str().unwrap();
    let o = host.fw(&["notify", "test", "--repo", r]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("gitea:") && stdout(&o).contains("HTTP 201"), "{}", stdout(&o));
    let status = ok.accepted("/gitea").pop().expect("a test status");
    assert_eq!(status.path, format!("/gitea/api/v1/repos/ops/fleet/statuses/{c}"));
    assert_eq!((status.json()["state"].as_str(), status.json()["context"].as_str()), (Some("success"), Some("fleetwright/vps-1/test")));
    let push = ok.accepted("/topic").pop().expect("an ntfy message");
    assert_eq!(push.header("title"), Some(format!("vps-1: test: {}", &c[..12]).as_str()));
    let o = host.fw(&["notify", "test", "--repo", r, "--notify-url", &format!("{}/hook", down.base)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("FAILED: HTTP 500"), "{}", stdout(&o));
}

/// Adding a `notify` list restarts no agent (the `OnFailure=` line is read at the reload); a
/// service that fails is reported, and its recovery once the daemon sees it running again;
/// removing the list removes the reporters.
#[test]
fn adding_notify_restarts_nothing_and_a_services_recovery_is_seen_by_the_daemon() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let hooks = Receiver::start();
    let flaky =
        agent("flaky").sh("if [ -e /run/fw-test/broken ]; then echo \"config missing: /srv/flaky.toml\" >&2; exit 2; fi; exec sleep 100000").restart("no");
    let plain = |notify: Option<&str>| {
        let fleet = match notify {
            Some(n) => fleet_notifying(n),
            None => FLEET.to_string(),
        };
        vec![("fleet.yaml", fleet), ("web.yaml", service("web").yaml()), ("flaky.yaml", flaky.yaml())]
    };
    let c1 = commit(&repo, &plain(None), "no notifications");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "1s", "--resync", "1h"], &[]);
    host.wait("c1 to be good", 30, || host.history()["lastGood"] == c1.as_str());
    let (web, flaky_run) = (host.prop("agent-web.service", "InvocationID"), host.prop("agent-flaky.service", "InvocationID"));
    let notify = format!("  - {{kind: webhook, url: \"{}/hook\", events: [agent-failed, agent-recovered]}}\n", hooks.base);
    let c2 = commit(&repo, &plain(Some(&notify)), "notifications");
    host.wait("c2 to be good", 30, || host.history()["lastGood"] == c2.as_str());
    assert!(std::fs::read_to_string(host.unit_dir().join("agent-web.service")).unwrap().contains("OnFailure=agent-web.notify@%n.service"));
    assert!(host.unit_dir().join("agent-web.notify@.service").exists());
    assert_eq!(host.prop("agent-web.service", "InvocationID"), web, "adding notifications restarted web");
    assert_eq!(host.prop("agent-flaky.service", "InvocationID"), flaky_run, "adding notifications restarted flaky");

    // It breaks, and is started again by hand: it fails, reported with its line.
    host.sb.command("sh").args(["-c", "mkdir -p /run/fw-test && touch /run/fw-test/broken"]).status().unwrap();
    let _ = host.systemctl(&["restart", "agent-flaky.service"]);
    let events = || hooks.accepted("/hook").iter().map(|q| q.json()).filter(|e| e["unit"] == "agent-flaky.service").collect::<Vec<_>>();
    host.wait("flaky's failure", 30, || events().iter().any(|e| e["event"] == "agent-failed"));
    let failed = events().into_iter().find(|e| e["event"] == "agent-failed").unwrap();
    assert!(failed["journal"].as_array().is_some_and(|j| j.iter().any(|l| l == "config missing: /srv/flaky.toml")), "{failed}");
    // Fixed: running again, which the daemon sees and reports, once.
    host.sb.command("rm").args(["-f", "/run/fw-test/broken"]).status().unwrap();
    let _ = host.systemctl(&["restart", "agent-flaky.service"]);
    host.wait("flaky's recovery", 30, || events().iter().any(|e| e["event"] == "agent-recovered"));
    assert_eq!(events().iter().filter(|e| e["event"] == "agent-recovered").count(), 1);

    // Without the list, the reporters go and the units lose their OnFailure= line.
    let c3 = commit(&repo, &plain(None), "no notifications again");
    host.wait("c3 to be good", 30, || host.history()["lastGood"] == c3.as_str());
    assert!(!host.unit_dir().join("agent-web.notify@.service").exists());
    assert!(!std::fs::read_to_string(host.unit_dir().join("agent-web.service")).unwrap().contains("OnFailure="));
}

/// Repeated failures of one unit are one report per interval (`--notify-interval`), then one
/// summary with the count and the last run's lines when the interval is over.
#[test]
fn repeated_failures_are_one_report_then_a_summary() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let hooks = Receiver::start();
    let notify = format!("  - {{kind: webhook, url: \"{}/hook\", events: [agent-failed]}}\n", hooks.base);
    let files = [("fleet.yaml", fleet_notifying(&notify)), ("boom.yaml", job("boom", "echo \"run $$ failed\" >&2; exit 1").every("1h").yaml())];
    let c1 = repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), "a job that always fails");
    let _d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h", "--notify-interval", "6s"], &[]);
    host.wait("c1 to be good", 30, || host.history()["lastGood"] == c1.as_str());
    let reports = || hooks.accepted("/hook").iter().map(|q| q.json()).filter(|e| e["unit"] == "agent-boom.service").collect::<Vec<_>>();
    let _ = host.systemctl(&["start", "agent-boom.service"]);
    host.wait("the first failure", 20, || reports().len() == 1);
    assert_eq!(reports()[0]["count"], serde_json::Value::Null);
    // Two more within the interval: folded (each reporter has finished when start returns
    // and the next run is started).
    for _ in 0..2 {
        let _ = host.systemctl(&["start", "agent-boom.service"]);
        host.wait("the reporter to finish", 10, || host.prop("agent-boom.notify@agent-boom.service.service", "ActiveState") != "activating");
    }
    host.wait("the summary", 30, || reports().len() == 2);
    let summary = &reports()[1];
    assert_eq!(summary["count"], 2, "{summary}");
    assert!(summary["message"].as_str().unwrap().contains("failed 2 more times"), "{summary}");
    assert!(summary["journal"].as_array().is_some_and(|j| j.iter().any(|l| l.as_str().unwrap_or("").ends_with("failed"))), "{summary}");
    assert_eq!(reports().len(), 2, "no report for the folded runs themselves");
}
