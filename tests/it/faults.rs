//! The fault-injection tier (issue 13).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::real::*;

const N: usize = 300;

fn sleeper(i: usize, version: u32) -> String {
    format!("apiVersion: fleetwright/v1\nkind: Agent\nname: s{i:03}\nrun:\n  command: [/bin/sleep, \"{}\"]\n", arg(i, version))
}

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

/// The arguments of every process running in the sandbox.
fn running(host: &Host) -> Vec<String> {
    let o = host.sb.command("ps").args(["-e", "-o", "args="]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect()
}

fn census(host: &Host, n: usize, version: u32) -> (usize, usize) {
    let procs = running(host);
    let count = |v: u32| (0..n).filter(|i| procs.iter().any(|p| *p == format!("/bin/sleep {}", arg(*i, v)))).count();
    (count(version), count(version - 1))
}

#[test]
fn explore_bus_kill() {
    let host = Host::boot();
    let repo = Repo::new();
    commit(&repo, &fleet_v(N, 1), "v1");
    let t = Instant::now();
    let out = host.apply(&repo);
    eprintln!("v1 apply took {:?}", t.elapsed());
    assert_eq!(code(&out), 0);
    eprintln!("census v1: {:?}", census(&host, N, 1));
    commit(&repo, &fleet_v(N, 2), "v2");
    let mut c = host.sb.command(env!("CARGO_BIN_EXE_fleetwright"));
    c.args(["--host", "vps-1", "apply", "--repo", repo.path().to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let child: Child = c.spawn().unwrap();
    loop {
        let (new, _) = census(&host, N, 2);
        if new > 0 {
            eprintln!("first new after {:?}: {new}", t.elapsed());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    let k = host.sb.command("sh").args(["-c", "kill -9 $(pgrep -x dbus-daemon)"]).output().unwrap();
    eprintln!("killed dbus at {:?}: {:?}", t.elapsed(), k.status);
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "apply ended {:?} code {}\n{}\n{}",
        t.elapsed(),
        code(&out),
        stdout(&out).lines().rev().take(5).collect::<Vec<_>>().join("\n"),
        stderr(&out).chars().take(3000).collect::<String>()
    );
    eprintln!("census after: {:?}", census(&host, N, 2));
    eprintln!("dbus: {}", host.systemctl(&["is-active", "dbus.service", "dbus.socket"]));
    host.systemctl(&["start", "dbus.socket", "dbus.service"]);
    std::thread::sleep(Duration::from_secs(1));
    let out = host.apply(&repo);
    eprintln!("second apply code {}: {}", code(&out), stdout(&out).lines().rev().take(3).collect::<Vec<_>>().join("\n"));
    eprintln!("census after second: {:?}", census(&host, N, 2));
}
