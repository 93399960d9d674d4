//! The operator's tools on example fleets: schedule, inventory, pull-request plans, schema.

use crate::build::{AgentSpec, agent, backup, documents, fleet_doc, logs};
use crate::common::*;

/// A fleet in one file `f.yaml`: a Fleet document that allows root, then `agents`.
fn one_file(agents: &[AgentSpec]) -> fleetwright::spec::Fleet {
    let docs: Vec<String> = std::iter::once(fleet_doc().allow_root().yaml()).chain(agents.iter().map(AgentSpec::yaml)).collect();
    fleet(&[("f.yaml", &documents(&docs))])
}

const AT: i64 = 1_795_392_000; // 2026-11-23T00:00:00Z

/// The fleet's timers as a system host renders them.
fn timers(f: &fleetwright::spec::Fleet) -> Vec<fleetwright::schedule::FleetTimer> {
    let ctx = fleetwright::host::HostConfig::system("test").render_ctx();
    fleetwright::schedule::timers(f, None, &ctx, &fleetwright::host::zones::Tzdata)
}

#[test]
fn schedule_of_the_personal_infrastructure() {
    let (_, f) = example("personal-infra");
    let s = fleetwright::schedule::compute(&timers(&f), AT, 86_400, &fleetwright::schedule::Zones::utc());
    insta::assert_snapshot!(fleetwright::schedule::render_text(&s, 48));
}

#[test]
fn schedule_warns_about_pile_ups_and_full_groups() {
    let f = one_file(&[
        agent("a").command(&["/bin/true"]).timeout("20m").calendar("hourly").concurrency("gpu", 1),
        agent("b").command(&["/bin/true"]).cron("0 * * * *").concurrency("gpu", 1),
        agent("c").command(&["/bin/true"]).calendar("*:00"),
    ]);
    let s = fleetwright::schedule::compute(&timers(&f), AT, 3 * 3600, &fleetwright::schedule::Zones::utc());
    assert_eq!(s.rows.iter().map(|r| r.runs.len()).collect::<Vec<_>>(), [3, 3, 3]);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("3 runs start in the same minute 3 time(s) (first at 00:00 UTC): a, b, c"), "{:?}", s.warnings);
    assert!(s.warnings[1].contains("concurrency group gpu: up to 2 runs may overlap"), "{:?}", s.warnings);
}

#[test]
fn schedule_agrees_with_systemd_analyze() {
    let (_, f) = example("timers");
    let (_, p) = example("personal-infra");
    let s = fleetwright::schedule::compute(&timers(&p), AT, 7 * 86_400, &fleetwright::schedule::Zones::utc());
    let s2 = fleetwright::schedule::compute(&timers(&f), AT, 7 * 86_400, &fleetwright::schedule::Zones::utc());
    let mut checked = 0;
    // (A row of several expressions is their union; systemd-analyze lists each on its own.)
    for row in s.rows.iter().chain(s2.rows.iter()).filter(|r| !r.relative && !r.runs.is_empty() && !r.when.contains(" or ")) {
        let n = row.runs.len().min(5);
        let out = std::process::Command::new("systemd-analyze")
            .env("TZ", "UTC")
            .args(["calendar", &format!("--iterations={n}"), &format!("--base-time=@{}", AT - 1), &row.when])
            .output()
            .expect("systemd-analyze (CI installs systemd)");
        assert!(out.status.success(), "{}: {}", row.when, String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        // With TZ=UTC: "Next elapse: Mon 2026-11-23 03:15:00 UTC", then "Iter. #2: …".
        let theirs: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("Next elapse:") || l.starts_with("Iter. #"))
            .map(|l| l.split_once(": ").unwrap().1.trim())
            .collect();
        let ours: Vec<String> = row
            .runs
            .iter()
            .take(n)
            .map(|t| {
                let s = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*t as u64)).to_string();
                s.replace('T', " ").trim_end_matches('Z').to_string()
            })
            .collect();
        let theirs_trimmed: Vec<String> = theirs.iter().map(|t| t.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(ours, theirs_trimmed, "{}", row.when);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} expressions checked");
}

#[test]
fn schedule_in_the_hosts_zone_agrees_with_systemd_analyze() {
    // A host in New York: expressions without a zone are its local time, as systemd has it.
    let (_, f) = example("personal-infra");
    let zone = "America/New_York";
    let zones = fleetwright::schedule::Zones { local: jiff::tz::TimeZone::get(zone).unwrap(), local_name: zone.into(), named: Default::default() };
    let s = fleetwright::schedule::compute(&timers(&f), AT, 7 * 86_400, &zones);
    let mut checked = 0;
    for row in s.rows.iter().filter(|r| !r.relative && !r.runs.is_empty() && !r.when.contains(" or ")) {
        let n = row.runs.len().min(5);
        let out = std::process::Command::new("systemd-analyze")
            .env("TZ", zone)
            .args(["calendar", &format!("--iterations={n}"), &format!("--base-time=@{}", AT - 1), &row.when])
            .output()
            .expect("systemd-analyze (CI installs systemd)");
        let text = String::from_utf8_lossy(&out.stdout);
        // "(in UTC): Mon 2026-11-23 08:15:00 UTC" under each elapse.
        let theirs: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("(in UTC): "))
            .map(|t| t.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "))
            .collect();
        let ours: Vec<String> = row
            .runs
            .iter()
            .take(n)
            .map(|t| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*t as u64))
                    .to_string()
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string()
            })
            .collect();
        assert_eq!(ours, theirs, "{} in {zone}", row.when);
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} expressions checked");
    // The timeline is shown in that zone.
    assert!(
        fleetwright::schedule::render_text(&s, 48).lines().next().unwrap().contains("America/New_York  runs"),
        "{}",
        fleetwright::schedule::render_text(&s, 48)
    );
}

#[test]
fn schedule_shows_helper_timers_and_names_zones_it_cannot_evaluate() {
    let f = one_file(&[
        agent("db").command(&["/bin/db"]).user("root").backup(backup("/srv/db/a.db", "/srv/bk")).logs(logs("/srv/db/logs").max_age("7d")),
        agent("far").command(&["/bin/true"]).user("root").calendar("*-*-* 03:00:00 Europe/Berlin"),
    ]);
    // Zones resolved without Europe/Berlin: as on a machine without that zone installed.
    let s = fleetwright::schedule::compute(&timers(&f), AT, 86_400, &fleetwright::schedule::Zones::utc());
    let names: Vec<&str> = s.rows.iter().map(|r| r.agent.as_str()).collect();
    assert_eq!(names, ["db.logs", "db.backup", "far"]);
    assert_eq!(s.rows[1].runs.len(), 1, "daily");
    assert_eq!(s.rows[0].spread, 300, "the cleanup's randomized delay");
    assert!(s.rows[2].runs.is_empty());
    assert!(s.warnings.iter().any(|w| w.contains("far: the zone Europe/Berlin is not installed here")), "{:?}", s.warnings);
}

#[test]
fn inventory_of_the_day_two_example() {
    let (_, f) = example("day-two");
    insta::assert_snapshot!(fleetwright::catalog::render_markdown(&f, Some("c0ffee")));
}

#[test]
fn pull_request_plan_as_markdown() {
    let base = one_file(&[agent("web").command(&["/usr/bin/web"]), agent("old").command(&["/usr/bin/old"]).calendar("daily")]);
    let head = one_file(&[agent("web").command(&["/usr/bin/web", "--fast"]), agent("new").command(&["/usr/bin/new"]).calendar("hourly").hosts(&["gpu"])]);
    let r = fleetwright::review::review(("base0000", &base), ("head1111", &head), None, &ctx());
    assert_eq!(r.added, ["new"]);
    assert_eq!(r.changed, ["web"]);
    assert_eq!(r.removed, ["old"]);
    assert_eq!(r.restarts, ["web"]);
    insta::assert_snapshot!(fleetwright::review::render_markdown(&r));
    let same = fleetwright::review::review(("base0000", &base), ("head2222", &base), None, &ctx());
    assert!(!same.plan.has_changes());
}

/// Every document of a YAML file as JSON, the way an editor's YAML language server sees it.
fn as_json(text: &str) -> Vec<serde_json::Value> {
    fleetwright::spec::yaml::parse_documents(text).unwrap().into_iter().filter_map(|d| d.root).map(|n| n.to_json()).filter(|v| !v.is_null()).collect()
}

#[test]
fn the_schema_accepts_every_example_and_rejects_broken_documents() {
    let schema = fleetwright::spec::json_schema_any();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut checked = 0;
    for name in ["quickstart", "orchestrator", "timers", "personal-infra", "day-two", "secrets", "notifications"] {
        let (files, _) = example(name);
        for (path, text) in files {
            for doc in as_json(&text) {
                let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{name}/{path}: {errors:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "{checked} documents");
    for broken in [
        "apiVersion: fleetwright/v1\nkind: Agent\nname: x\nrun: {comand: [/bin/true]}\n",
        "apiVersion: fleetwright/v1\nkind: Agent\nname: x\nrun: {command: /bin/true}\n",
        "apiVersion: fleetwright/v2\nkind: Agent\nname: x\n",
        "apiVersion: fleetwright/v1\nkind: Fleet\nunitPrefx: a-\n",
        "apiVersion: fleetwright/v1\nkind: Agnet\n",
    ] {
        let doc = &as_json(broken)[0];
        assert!(!validator.is_valid(doc), "accepted: {broken}");
    }
}

#[test]
fn the_flake_parses_and_its_module_uses_real_daemon_flags() {
    let flake = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/flake.nix")).unwrap();
    // Syntax: nix-instantiate --parse needs no nixpkgs (CI installs Debian's nix-bin).
    match std::process::Command::new("nix-instantiate").args(["--parse", concat!(env!("CARGO_MANIFEST_DIR"), "/flake.nix")]).output() {
        Ok(o) => assert!(o.status.success(), "flake.nix does not parse: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            crate::real::missing(&format!("nix-instantiate ({e})"));
        }
    }
    // Every flag the NixOS module passes to `fleetwright daemon` exists.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["daemon", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = flake.split('"').filter(|s| s.starts_with("--") && s.len() > 2 && !s.contains(' ')).collect();
    assert!(flags.len() >= 4, "{flags:?}");
    for f in flags {
        assert!(help.contains(f), "flake.nix passes {f}, which `fleetwright daemon` does not take");
    }
}

/// `plan --base --head` as a fleet repository's CI runs it: on real commits, without a host.
#[test]
fn pull_request_plans_from_the_command_line() {
    use crate::real::{Repo, code, stdout};
    let repo = Repo::new();
    let fw = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(args).output().unwrap();
    let path = repo.path().to_str().unwrap().to_string();
    // The first commit has no fleet directory yet: the PR that creates it plans against nothing.
    let c0 = repo.commit(&[("README.md", "ops")], "empty");
    let daily = |name: &str, desc: &str| agent(name).description(desc).command(&["/bin/true"]).user("agent").calendar("daily").yaml();
    let c1 = repo.commit(&[("README.md", "ops"), ("fleet/a.yaml", &daily("a", "one")), ("fleet/b.yaml", &daily("b", "one"))], "fleet");
    let o = fw(&["plan", "--repo", &path, "--path", "fleet", "--base", &c0, "--head", &c1, "--format", "markdown"]);
    assert_eq!(code(&o), 1, "changes: {}", String::from_utf8_lossy(&o.stderr));
    let md = stdout(&o);
    assert!(md.starts_with(fleetwright::review::COMMENT_MARKER), "{md}");
    assert!(md.contains("| added | `a`, `b` |"), "{md}");
    // Nothing changes: exit 0.
    let o = fw(&["plan", "--repo", &path, "--path", "fleet", "--base", &c1, "--head", &c1]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // A removal and a change, as JSON.
    let c2 = repo.commit(&[("fleet/a.yaml", &daily("a", "two"))], "drop b");
    let o = fw(&["plan", "--repo", &path, "--path", "fleet", "--base", &c1, "--head", &c2, "--format", "json"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["removed"], serde_json::json!(["b"]));
    assert_eq!(v["changed"], serde_json::json!(["a"]));
    // An error: exit 2.
    let o = fw(&["plan", "--repo", &path, "--base", &c1, "--head", "no-such-rev"]);
    assert_eq!(code(&o), 2);
    // A change too big for one comment: the diffs that do not fit are left out, and it says so.
    let mut many: Vec<(String, String)> =
        (0..400).map(|i| (format!("fleet/a{i:03}.yaml"), daily(&format!("a{i:03}"), "long description ".repeat(8).trim_end()))).collect();
    many.push(("fleet/a.yaml".into(), daily("a", "two")));
    let c3 = repo.commit(&many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect::<Vec<_>>(), "many");
    let o = fw(&["plan", "--repo", &path, "--path", "fleet", "--base", &c2, "--head", &c3, "--format", "markdown"]);
    let md = stdout(&o);
    assert!(md.len() <= fleetwright::review::COMMENT_BUDGET, "{} characters", md.len());
    assert!(md.contains("more unit diffs do not fit in a comment"), "{}", &md[md.len().saturating_sub(500)..]);
}

/// libgit2 starts without the CA bundle (`source::init_libgit2`: 25 ms of every command) and
/// gets it before the first fetch: over https, the server's certificate is checked against
/// `SSL_CERT_FILE` (or the system's bundle), and a certificate it does not vouch for is refused.
/// Against `openssl s_server` with a self-signed certificate for localhost.
#[test]
fn https_fetches_verify_the_server_against_the_certificates_loaded_at_the_first_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            &d("key.pem"),
            "-out",
            &d("cert.pem"),
        ])
        .output()
        .expect("the openssl command (.ci/run installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::create_dir(d("no-certs")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}"), "-cert", &d("cert.pem"), "-key", &d("key.pem")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::real::wait_for("openssl s_server to listen", std::time::Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    let url = format!("https://localhost:{port}/fleet.git");
    let plan = |cert_file: &str, state: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetwright"))
            .env("SSL_CERT_FILE", cert_file)
            // No other certificates: only the bundle fleetwright loads at the fetch can vouch.
            .env("SSL_CERT_DIR", d("no-certs"))
            .args(["plan", "--repo", &url, "--state-dir", &d(state), "--unit-dir", &d("units")])
            .output()
            .unwrap()
    };
    let trusted = plan(&d("cert.pem"), "s1");
    let untrusted = plan(&d("no-certs/none.pem"), "s2");
    let _ = server.kill();
    let _ = server.wait();
    let (t, u) = (String::from_utf8_lossy(&trusted.stderr), String::from_utf8_lossy(&untrusted.stderr));
    // s_server answers HTTP with a status page, not git: past the TLS handshake, the fetch
    // fails on the content type.
    assert_eq!(trusted.status.code(), Some(2), "{t}");
    assert!(t.contains("content-type") && !t.contains("certificate"), "the handshake succeeded with the certificate loaded: {t}");
    assert_eq!(untrusted.status.code(), Some(2), "{u}");
    assert!(u.contains("certificate is invalid"), "a server no certificate vouches for is refused: {u}");
}
