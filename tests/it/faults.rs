//! The fault-injection tier (issue 13): faults that are nobody's commit — the bus daemon killed,
//! the manager re-executed, a full disk, a clock that jumped, a killed restore — injected into a
//! real systemd (`host::sandbox`). What the host runs afterwards is proven by its processes
//! (their arguments, pids and InvocationIDs) and files, never by fleetwright's own records.
//!
//! A fault is injected at a chosen point of an apply with `FLEETWRIGHT_STOP_AT`: the process
//! stops itself (SIGSTOP) there, the test kills the bus or re-executes the manager, and then
//! continues it (SIGCONT). One round of each kind is injected without a stop point, when the
//! first restarted process appears, as a fault comes in real life.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::real::*;

/// Services in the big fleet: a few hundred, restarted in a couple of seconds.
const N: usize = 240;

fn sleeper(i: usize, version: u32) -> String {
    format!("apiVersion: fleetwright/v1\nkind: Agent\nname: s{i:03}\nrun:\n  command: [/bin/sleep, \"{}\"]\n", arg(i, version))
}

/// The argument service `i` runs with at `version`: `1IIIVVV` seconds (about 12 days).
fn arg(i: usize, version: u32) -> String {
    format!("1{i:03}{version:03}")
}

fn fleet_v(n: usize, version: u32) -> Vec<(&'static str, String)> {
    let docs: Vec<String> = (0..n).map(|i| sleeper(i, version)).collect();
    vec![("fleet.yaml", FLEET.to_string()), ("agents.yaml", docs.join("---\n"))]
}

fn commit(repo: &Repo, files: &[(&'static str, String)], msg: &str) -> String {
    repo.commit(&files.iter().map(|(a, b)| (*a, b.as_str())).collect::<Vec<_>>(), msg)
}

/// What the sleepers run: service index → pid of its process with the arguments of `version`,
/// and the indexes that still have a process of another version.
struct Census {
    new: BTreeMap<usize, u32>,
    old: BTreeSet<usize>,
}

fn census(host: &Host, n: usize, version: u32) -> Census {
    let o = host.sb.command("ps").args(["-e", "-o", "pid=,args="]).output().unwrap();
    let mut c = Census { new: BTreeMap::new(), old: BTreeSet::new() };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some("/bin/sleep"), Some(a), None) = (f.next(), f.next(), f.next(), f.next()) else { continue };
        if a.len() != 7 || !a.starts_with('1') {
            continue;
        }
        let (Ok(i), Ok(v)) = (a[1..4].parse::<usize>(), a[4..7].parse::<u32>()) else { continue };
        if i >= n {
            continue;
        }
        if v == version {
            c.new.insert(i, pid.parse().unwrap());
        } else {
            c.old.insert(i);
        }
    }
    c
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillBus,
    Reexec,
}

fn inject(host: &Host, fault: Fault) {
    let o = match fault {
        Fault::KillBus => host.sb.command("sh").args(["-c", "kill -9 $(pgrep -x dbus-daemon)"]).output().unwrap(),
        Fault::Reexec => host.sb.command("systemctl").arg("daemon-reexec").output().unwrap(),
    };
    assert!(o.status.success(), "{fault:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The system bus back (systemctl talks to the manager's private socket), and answering.
fn bus_back(host: &Host) {
    host.sb.command("systemctl").args(["start", "dbus.socket", "dbus.service"]).output().unwrap();
    host.wait("the system bus to answer", 20, || {
        host.sb.command("busctl").args(["--system", "--no-pager", "status", "org.freedesktop.systemd1"]).output().is_ok_and(|o| o.status.success())
    });
}

/// Run fleetwright inside the sandbox in the background.
fn spawn_fw(host: &Host, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    c.envs(env.iter().copied()).args(["--host", "vps-1"]).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// The host pid of the process `nsenter` (our child) runs: its only child.
fn inner_pid(child: &Child) -> u32 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next() {
            return p.parse().unwrap();
        }
        assert!(Instant::now() < until, "nsenter started nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the process stopped itself at its stop point.
fn wait_stopped(pid: u32, what: &str) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')) {
            return;
        }
        assert!(!stat.is_empty(), "{what}: the process ended before its stop point");
        assert!(Instant::now() < until, "{what}: the stop point was never reached");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Continue the stopped process, and `nsenter` (which stops itself when its child stops, and
/// waits for a SIGCONT of its own).
fn cont(child: &Child, pid: u32) {
    for p in [pid, child.id()] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGCONT);
    }
}

/// Where the fault comes: a stop point of the apply, or (None) when the first restarted
/// process of the new version appears.
fn fault_during_apply(host: &Host, repo: &Repo, version: u32, point: Option<&str>, fault: Fault) -> std::process::Output {
    let repo_arg = repo.path().to_str().unwrap();
    let child = match point {
        Some(p) => {
            let child = spawn_fw(host, &[("FLEETWRIGHT_STOP_AT", p)], &["apply", "--repo", repo_arg]);
            let pid = inner_pid(&child);
            wait_stopped(pid, p);
            inject(host, fault);
            cont(&child, pid);
            child
        }
        None => {
            let child = spawn_fw(host, &[], &["apply", "--repo", repo_arg]);
            let until = Instant::now() + Duration::from_secs(120);
            while census(host, N, version).new.is_empty() {
                assert!(Instant::now() < until, "no service restarted");
                std::thread::sleep(Duration::from_millis(5));
            }
            inject(host, fault);
            child
        }
    };
    let out = child.wait_with_output().unwrap();
    eprintln!("$ fleetwright apply ({fault:?} at {point:?})\n{}", stderr(&out).chars().take(4000).collect::<String>());
    out
}

/// One round: a new version, a fault during its apply, the bus back, one more apply; then
/// every service runs the new version, none the old, and none that had been restarted before
/// the recovery was restarted again.
fn round(host: &Host, repo: &Repo, version: u32, point: Option<&str>, fault: Fault) {
    let what = format!("{fault:?} at {}", point.unwrap_or("the first restarted process"));
    commit(repo, &fleet_v(N, version), &format!("v{version}"));
    let out = fault_during_apply(host, repo, version, point, fault);
    // The fault is the host's: never reported as a failed unit.
    assert!(!stderr(&out).contains("FAILED"), "{what}: a unit was blamed:\n{}", stderr(&out));
    match fault {
        Fault::KillBus => {
            assert_eq!(code(&out), 3, "{what}: an apply stopped part-way by the host says so:\n{}", stderr(&out));
            assert!(stderr(&out).contains("nothing is lost"), "{what}: {}", stderr(&out));
        }
        // The manager is back at once: the apply may have finished its work.
        Fault::Reexec => assert!(matches!(code(&out), 0 | 3), "{what}: {}", stderr(&out)),
    }
    bus_back(host);
    let after_fault = census(host, N, version);
    if !after_fault.old.is_empty() {
        // Until the next apply, status says what is owed rather than "ok".
        let status = host.fw(&["status"]);
        let owed = stdout(&status);
        assert!(owed.contains("yet to restart") || owed.contains("a restart was lost"), "{what}: status hides the owed restarts:\n{owed}");
    }

    let out = host.apply(repo);
    assert_eq!(code(&out), 0, "{what}: recovery: {}", stderr(&out));
    let done = census(host, N, version);
    assert!(done.old.is_empty(), "{what}: {} services still run an old definition: {:?}", done.old.len(), done.old);
    assert_eq!(done.new.len(), N, "{what}: {} of {N} services run the new definition", done.new.len());
    for (i, pid) in &after_fault.new {
        assert_eq!(done.new.get(i), Some(pid), "{what}: s{i:03} was restarted twice");
    }
    let plan = host.fw(&["plan", "--repo", repo.path().to_str().unwrap(), "--no-diff"]);
    assert_eq!(code(&plan), 0, "{what}: not converged: {}", stdout(&plan));
    let status = host.fw(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let not_ok: Vec<&serde_json::Value> = v["agents"].as_array().unwrap().iter().filter(|a| a["state"] != "ok").collect();
    assert!(not_ok.is_empty(), "{what}: {not_ok:?}");
}

fn big_host() -> (Host, Repo) {
    let host = Host::boot();
    let repo = Repo::new();
    commit(&repo, &fleet_v(N, 1), "v1");
    let out = host.apply(&repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(census(&host, N, 1).new.len(), N);
    (host, repo)
}

#[test]
fn the_bus_killed_at_any_point_of_an_apply_loses_no_restart_and_does_none_twice() {
    let (host, repo) = big_host();
    let last = N.to_string();
    let points = [
        Some("after-write:100".to_string()),
        Some("before-reload".into()),
        Some("after-reload".into()),
        Some("queued:1".into()),
        Some("queued:120".into()),
        Some(format!("queued:{last}")),
        None,
    ];
    for (k, point) in points.iter().enumerate() {
        round(&host, &repo, k as u32 + 2, point.as_deref(), Fault::KillBus);
    }
}

#[test]
fn the_manager_reexecuted_at_any_point_of_an_apply_loses_no_restart_and_does_none_twice() {
    let (host, repo) = big_host();
    let last = N.to_string();
    let points = [
        Some("after-write:100".to_string()),
        Some("after-reload".into()),
        Some("queued:1".into()),
        Some("queued:120".into()),
        Some(format!("queued:{last}")),
        None,
    ];
    for (k, point) in points.iter().enumerate() {
        round(&host, &repo, k as u32 + 2, point.as_deref(), Fault::Reexec);
    }
}
