//! The daemon's HTTP endpoint and the cache of fetched repositories against those who are not
//! root: local users who can connect to the endpoint or write to shared directories, and
//! webhook senders who replay what they captured. Every case is a hole that was open once.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{commit, fleet};
use crate::http::{closed_within, is_closed, try_get};
use crate::real::*;

/// A secret long enough for the daemon (at least 16 bytes).
const SECRET: &str = "8d3c0a9e51f24b7d96e0c3a1f5b8d2e4";

#[test]
fn healthz_answers_within_a_second_while_200_idle_connections_are_held_and_slow_bodies_cannot_lock_it_out() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    d.wait_http();
    host.wait("healthz", 10, || d.http("GET", "/healthz", &[], "").0 == 200);
    // A local user opens connections and sends nothing.
    let mut idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap()).collect();
    let t0 = Instant::now();
    let (code, body) = d.http("GET", "/healthz", &[], "");
    let took = t0.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&c1), "{body}");
    assert!(took < Duration::from_secs(1), "/healthz took {took:?} behind 200 idle connections");
    // The daemon keeps at most 64 open: it closed the oldest 136 to make room.
    wait_for("the daemon to close 136 of the 200 idle connections", Duration::from_secs(5), || {
        (idle.iter_mut().map(is_closed).filter(|c| *c).count() >= 200 - 64).then_some(())
    });
    // Requests whose bodies never come, on every connection the daemon allows: once they have
    // run 2 s, the oldest make room, and /healthz gets through.
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            s.write_all(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx").unwrap();
            s
        })
        .collect();
    wait_for("/healthz to get through 64 slow requests", Duration::from_secs(10), || {
        (try_get(("127.0.0.1", d.port), "/healthz", Duration::from_secs(2)) == Some(200)).then_some(())
    });
    drop(slow);
    // And it still reconciles: a new commit converges.
    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    host.wait("the second commit", 15, || host.marker_commit("web").as_deref() == Some(c2.as_str()));
}

#[test]
fn idle_and_trickling_connections_are_closed_within_the_idle_timeout() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &fleet(service("web")), "one");
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h"], &[]);
    d.wait_http();
    let addr = ("127.0.0.1", d.port);
    // The idle (header-read) timeout is 10 s: the deadline leaves room for a loaded machine.
    let deadline = Duration::from_secs(14);
    let silent = std::thread::spawn(move || closed_within(&mut TcpStream::connect(addr).unwrap(), deadline));
    // One byte of a request head every 300 ms: never idle, never complete.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let t0 = Instant::now();
        for b in b"POST /webhook HTTP/1.1\r\nHost: localhost\r\n".iter().cycle() {
            if t0.elapsed() > deadline || s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        closed_within(&mut s, Duration::from_secs(1)).map(|_| t0.elapsed())
    });
    // A finished exchange kept alive, then nothing.
    let kept = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        closed_within(&mut s, deadline)
    });
    let (silent, trickle, kept) = (silent.join().unwrap(), trickle.join().unwrap(), kept.join().unwrap());
    assert!(
        silent.is_some() && trickle.is_some_and(|t| t < deadline) && kept.is_some(),
        "closed after: silent {silent:?}, trickling {trickle:?}, kept alive {kept:?}"
    );
    assert!(d.http("GET", "/healthz", &[], "").0 != 0, "the endpoint still answers");
}

#[test]
fn a_replayed_signed_delivery_is_refused_even_under_a_new_delivery_id() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let secret = repo.dir.path().parent().unwrap().join(format!("secret-replay-{}", std::process::id()));
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let d = host.daemon(repo.path().to_str().unwrap(), &["--health-grace", "0s", "--resync", "1h", "--webhook-secret-file", secret.to_str().unwrap()], &[]);
    host.wait("the first commit", 15, || host.marker_commit("web").as_deref() == Some(c1.as_str()));
    d.wait_http();
    let sign = |body: &str| format!("sha256={}", fleetwright::daemon::webhook::sign(SECRET.as_bytes(), body.as_bytes()));
    let push = format!(r#"{{"ref":"refs/heads/master","after":"{c1}"}}"#);
    let (code, body) = d.http("POST", "/webhook", &[("X-Hub-Signature-256", &sign(&push)), ("X-GitHub-Delivery", "72d3162e-1")], &push);
    assert_eq!(code, 202, "{body}");
    // Captured and sent again: under the same id, a new id, or with no id at all.
    let signature = sign(&push);
    for id in ["72d3162e-1", "ffffffff-2", ""] {
        let headers: Vec<(&str, &str)> =
            [("X-Hub-Signature-256", signature.as_str())].into_iter().chain((!id.is_empty()).then_some(("X-GitHub-Delivery", id))).collect();
        let (code, body) = d.http("POST", "/webhook", &headers, &push);
        assert_eq!(code, 409, "replay with delivery id {id:?}: {body}");
        assert!(body.contains("was accepted before (replay)"), "{body}");
    }
    // A real new delivery passes.
    let next = format!(r#"{{"ref":"refs/heads/master","before":"{c1}","after":"0000"}}"#);
    assert_eq!(d.http("POST", "/webhook", &[("X-Hub-Signature-256", &sign(&next)), ("X-GitHub-Delivery", "72d3162e-1")], &next).0, 202);
    let _ = std::fs::remove_file(secret);
}

/// Run `fleetwright daemon ARGS` in the sandbox; it must stop by itself at once (refused).
fn refused_at_start(host: &Host, args: &[&str]) -> Output {
    let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    c.args(["--host", "vps-1", "daemon"]).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            // nsenter, which we started; the daemon it forked ends with the sandbox.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the daemon was not refused: it ran with {args:?}\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn short_secrets_and_non_loopback_addresses_are_refused_at_start() {
    let Some(host) = Host::boot() else { return };
    let repo = Repo::new();
    commit(&repo, &fleet(service("web")), "one");
    let path = repo.path().to_str().unwrap().to_string();
    let file = |name: &str, content: &str| {
        let f = repo.dir.path().parent().unwrap().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&f, content).unwrap();
        f.to_str().unwrap().to_string()
    };
    let short = file("secret-short", "s3cret\n");
    let blank = file("secret-blank", " \n\t\n");
    let padded = file("secret-padded", "   0123456789abcde   \n");
    for (secret, says) in [
        (&short, "the webhook secret is 6 bytes long; use at least 16"),
        (&blank, "the webhook secret is empty (the file holds only whitespace)"),
        (&padded, "the webhook secret is 15 bytes long"),
    ] {
        let out = refused_at_start(&host, &["--repo", &path, "--webhook-secret-file", secret]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(says) && stderr(&out).contains(secret.as_str()), "{}", stderr(&out));
    }
    for addr in ["0.0.0.0:9797", "[::]:9797", "10.1.2.3:9797"] {
        let out = refused_at_start(&host, &["--repo", &path, "--listen", addr]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--listen {addr} is not a loopback address")) && stderr(&out).contains("--listen-any"), "{}", stderr(&out));
    }
    // Refused before anything: no daemon ran, nothing was applied.
    assert!(!host.state_dir().join("daemon.lock").exists());
    assert!(!host.unit_dir().join("agent-web.service").exists());
    for f in [short, blank, padded] {
        let _ = std::fs::remove_file(f);
    }
}

/// A directory under the target directory, traversable by every user.
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("hostile-cache-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn fw(state: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["--host", "vps-1", "--state-dir", state.to_str().unwrap()]).args(args).output().unwrap();
    eprintln!("$ fleetwright {}\n{}{}", args.join(" "), stdout(&out), stderr(&out));
    out
}

#[test]
fn a_cache_another_user_owns_or_can_write_is_refused_and_nothing_is_read_from_it() {
    if !root_or_skip() {
        return;
    }
    let base = open_dir();
    let repo = Repo::new();
    commit(&repo, &fleet(service("web")), "one");
    let url = format!("file://{}", repo.path().display());
    let state = base.path().join("state");
    let cache = state.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // Planted by nobody: a cache of theirs, which could hold their repositories.
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let out = fw(&state, &["render", "--repo", &url, "--branch", "master"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("the cache of fetched repositories is owned by nobody (uid 65534), not by you"), "{}", stderr(&out));
    assert!(stderr(&out).contains("Nothing was read from it"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "nothing was rendered: {}", stdout(&out));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "nothing was fetched into it");
    // Ours, but others may write it.
    std::os::unix::fs::chown(&cache, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fw(&state, &["render", "--repo", &url, "--branch", "master"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("can be written by group or others (mode 0777)"), "{}", stderr(&out));
    // A symbolic link to a directory of theirs.
    std::fs::remove_dir(&cache).unwrap();
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, &cache).unwrap();
    let out = fw(&state, &["render", "--repo", &url, "--branch", "master"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    // Removed, it is made again, private, and the fleet is read.
    std::fs::remove_file(&cache).unwrap();
    let out = fw(&state, &["render", "--repo", &url, "--branch", "master"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("### agent-web.service"), "{}", stdout(&out));
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn without_a_usable_state_directory_nothing_falls_back_to_a_shared_temporary_directory() {
    if !root_or_skip() {
        return;
    }
    // Everything nobody must reach sits outside the build tree (a clone in a 0700 home is
    // closed to it): a root-owned 0755 directory, with a copy of the binary to run.
    let base = tempfile::Builder::new().prefix("fw-hostile-state-").tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = base.path().join("fleetwright");
    std::fs::copy(env!("CARGO_BIN_EXE_fleetwright"), &exe).unwrap();
    // A temporary directory every user can write, as /tmp.
    let tmp = base.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // A state directory nobody cannot create (its parent is root's, 0755).
    let state = base.path().join("root-only").join("state");
    std::fs::create_dir(base.path().join("root-only")).unwrap();
    let out = Command::new(&exe)
        .args(["--host", "vps-1", "--state-dir", state.to_str().unwrap(), "render", "--repo", "file:///nonexistent/fleet.git"])
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("the state directory cannot be created") && e.contains("Permission denied"), "{e}");
    assert!(e.contains("pass --state-dir DIR"), "it says which option to use: {e}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing was made in the shared temporary directory");
    assert!(!state.exists());
}

#[test]
fn read_only_commands_on_a_local_repository_need_no_cache_and_make_nothing() {
    if !sandbox_or_skip() {
        return;
    }
    let base = open_dir();
    let repo = Repo::new();
    let c1 = commit(&repo, &fleet(service("web")), "one");
    let c2 = commit(&repo, &fleet(service("web").description("two")), "two");
    let path = repo.path().to_str().unwrap();
    let state = base.path().join("state");
    for args in [
        vec!["render", "--repo", path],
        vec!["schedule", "--repo", path],
        vec!["inventory", "--repo", path],
        vec!["plan", "--repo", path, "--base", &c1, "--head", &c2],
    ] {
        let out = fw(&state, &args);
        assert!(matches!(code(&out), 0 | 1), "{args:?}: {}", stderr(&out));
    }
    assert!(!state.exists(), "they made {}", state.display());
    // Even a state directory whose cache could not be trusted does not matter to them.
    std::fs::create_dir_all(state.join("cache")).unwrap();
    std::os::unix::fs::chown(state.join("cache"), Some(65534), Some(65534)).unwrap();
    assert_eq!(code(&fw(&state, &["render", "--repo", path])), 0);
    // `plan` against a host (the sandbox's systemd): nothing under the state directory either.
    let Some(host) = Host::boot() else { return };
    let out = host.fw(&["plan", "--repo", path]);
    assert_eq!(code(&out), 1, "changes pending: {}", stderr(&out));
    assert!(!host.state_dir().join("cache").exists(), "plan made a cache");
}
