//! The continuous side: the daemon itself, and the commands that read or steer it (status,
//! history, rollback, resume, sync).

use std::path::Path;

use fleetwright::daemon::history::{History, Verdict};
use fleetwright::host::state::StateDir;
use fleetwright::host::status;
use fleetwright::host::systemd::Systemd;
use fleetwright::plan;

use super::args::{DaemonArgs, Globals};
use super::{Error, Outcome, json, runtime};

pub fn status(g: &Globals, as_json: bool) -> Result<Outcome, Error> {
    let cfg = g.host_config();
    let deployment = fleetwright::daemon::history::deployment(&cfg.state_dir).map_err(Error::failed)?;
    let (inv, agents) = runtime()?.block_on(async {
        let sd = Systemd::connect(cfg.scope, cfg.bus_address.as_deref()).await.map_err(super::unreachable)?;
        status::collect(&sd, &cfg, &StateDir::new(&cfg.state_dir)).await.map_err(Error::failed)
    })?;
    if as_json {
        let d = deployment.unwrap_or_default();
        let report = serde_json::json!({
            "host": cfg.host,
            "appliedCommit": inv.applied_commit,
            "appliedAt": inv.applied_at,
            "head": d.head,
            "lastGood": d.last_good,
            "pinned": d.pinned,
            "gate": d.gate,
            "source": d.source,
            "restartWindowSecs": status::RESTART_WINDOW.as_secs(),
            "agents": agents,
        });
        println!("{}", json(&report)?);
    } else {
        use std::io::IsTerminal;
        let text = status::render_text(&inv, &agents, deployment.as_ref());
        print!("{}", if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() { status::colorize(&text) } else { text });
    }
    Ok(Outcome::Done)
}

pub fn daemon(g: &Globals, a: DaemonArgs) -> Result<Outcome, Error> {
    let host = g.host_config();
    let repo =
        if Path::new(&a.repo).exists() { std::fs::canonicalize(&a.repo).map(|p| p.display().to_string()).unwrap_or(a.repo.clone()) } else { a.repo.clone() };
    let webhook_secret = match &a.webhook_secret_file {
        Some(f) => {
            let read = std::fs::read(f).map_err(|e| e.to_string()).and_then(|s| fleetwright::daemon::webhook::secret_from_file(&s).map_err(|e| e.to_string()));
            Some(read.map_err(|e| Error::failed(format!("--webhook-secret-file {}: {e}", f.display())))?)
        }
        None => None,
    };
    let listen = if a.no_listen { None } else { a.listen };
    if let Some(addr) = listen {
        fleetwright::daemon::server::check_listen(addr, a.listen_any).map_err(Error::failed)?;
    }
    let cfg = fleetwright::daemon::DaemonConfig {
        host,
        repo,
        branch: a.branch,
        path: a.path,
        interval: a.interval,
        resync: a.resync,
        health_grace: a.health_grace,
        allow_force_push: a.allow_force_push,
        allow_empty: a.allow_empty,
        allowed_signers: a.allowed_signers,
        listen,
        listen_any: a.listen_any,
        webhook_secret,
        notify_url: a.notify_url,
        notify_interval: a.notify_interval,
    };
    // glibc gives every thread that allocates an arena of its own, and what is freed in one
    // stays there: with a pool of blocking threads, a daemon that renders a fleet now and then
    // would keep several arenas' worth of freed memory. Two arenas for the whole process.
    // And what is freed at the top of an arena goes back to the system past 128 KiB (glibc's
    // default, held fixed): left dynamic, glibc raises that threshold after a large free (up to
    // 64 MiB), and malloc_trim does not trim the top of the second arena, so the top of the
    // arena the reconcile's blocking threads used stayed resident (7 MB at N=5000).
    // SAFETY: mallopt before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    // Blocking work (git, parsing, the history, an apply) runs on blocking threads: few at a
    // time, and not kept idle for long, so that an idle daemon holds no thread (and no memory of
    // one) it does not need.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async { fleetwright::daemon::Daemon::new(cfg)?.run().await }).map_err(|e| {
        tracing::error!(error = %e, "the daemon stopped");
        Error::failed(format!("the daemon stopped: {e}"))
    })?;
    Ok(Outcome::Done)
}

fn open_history(g: &Globals) -> Result<History, Error> {
    History::open(&g.host_config().state_dir).map_err(Error::failed)
}

pub fn history(g: &Globals, limit: usize, as_json: bool) -> Result<Outcome, Error> {
    // Read-only: a state directory without a history gets none made by looking.
    let layout = g.host_config().layout();
    if !layout.history().exists() {
        if as_json {
            println!("{}", json(&serde_json::json!({ "lastGood": null, "pin": null, "reconciles": [], "verdicts": [] }))?);
        } else {
            println!("no history: no daemon has run with the state directory {}", layout.root().display());
        }
        return Ok(Outcome::Done);
    }
    let h = open_history(g)?;
    let rows = h.recent(limit).map_err(Error::failed)?;
    // What cannot be read is said, never shown as "none".
    let last_good = h.last_good().map_err(Error::failed)?;
    let pin = h.pin().map_err(Error::failed)?;
    if as_json {
        let verdicts = h.verdicts(limit).map_err(Error::failed)?;
        println!("{}", json(&serde_json::json!({ "lastGood": last_good, "pin": pin, "reconciles": rows, "verdicts": verdicts }))?);
        return Ok(Outcome::Done);
    }
    println!("last good: {}   pin: {}", last_good.as_deref().map(plan::short).unwrap_or("none"), pin.as_deref().map(plan::short).unwrap_or("none"));
    println!("{:<22} {:<8} {:<12} {:<12} {:<15} {:>7} {:>7}  ERROR", "STARTED", "TRIGGER", "HEAD", "APPLIED", "RESULT", "ACTIONS", "MS");
    for r in rows {
        let result = if r.repeats > 1 { format!("{} ×{}", r.result, r.repeats) } else { r.result.clone() };
        println!(
            "{:<22} {:<8} {:<12} {:<12} {:<15} {:>7} {:>7}  {}",
            r.started_at,
            r.trigger,
            r.head.as_deref().map(plan::short).unwrap_or("-"),
            r.applied.as_deref().map(plan::short).unwrap_or("-"),
            result,
            r.actions,
            r.duration_ms,
            fleetwright::spec::diag::printable_lines(&r.error.unwrap_or_default())
        );
    }
    Ok(Outcome::Done)
}

/// The commit `to` names: a full id as given, or the one commit the daemon has seen that an
/// abbreviation starts with.
fn resolve_pin(h: &History, to: &str) -> Result<String, Error> {
    if to.len() == 40 && to.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(to.to_ascii_lowercase());
    }
    let seen = if to.len() >= 4 && to.bytes().all(|b| b.is_ascii_hexdigit()) {
        h.commits_starting_with(&to.to_ascii_lowercase()).map_err(Error::failed)?
    } else {
        Default::default()
    };
    match seen.len() {
        1 => Ok(seen.into_iter().next().unwrap_or_default()),
        0 => Err(Error::failed(format!("no commit starting with {to:?} is in the daemon's history; give the full 40-character commit id"))),
        _ => Err(Error::failed(format!("{to:?} is ambiguous ({}); give more of the commit id", seen.into_iter().collect::<Vec<_>>().join(", ")))),
    }
}

/// Pin a commit. Without `to`: the last good commit before the one applied now (the commit
/// that most recently passed a gate on this host, other than the applied one). A commit marked
/// bad is refused unless `force`.
pub fn rollback(g: &Globals, to: Option<&str>, force: bool) -> Result<Outcome, Error> {
    let h = open_history(g)?;
    let applied = StateDir::new(g.host_config().state_dir).load_inventory().ok().and_then(|i| i.applied_commit);
    let target = match to {
        // The daemon reads the pin as a full commit id.
        Some(t) => resolve_pin(&h, t)?,
        None => h.good_before(applied.as_deref()).map_err(Error::failed)?.ok_or_else(|| {
            Error::failed(format!(
                "no good commit before {} is recorded; name one with --to COMMIT",
                applied.as_deref().map(plan::short).unwrap_or("the applied one")
            ))
        })?,
    };
    if let Some(v) = h.verdict_record(&target).map_err(Error::failed)?
        && v.verdict == Verdict::Bad
        && !force
    {
        return Err(Error::failed(format!(
            "commit {} is marked bad ({}, at {}): the daemon rolled it back or refused it. Pinning it would deploy it again. Pin another commit, or pass --force to try it once more (it is gated like any deploy, and rolled back again if it fails)",
            plan::short(&target),
            v.reason,
            v.at
        )));
    }
    h.set_pin_with(Some(&target), force, Some(&fleetwright::host::now_rfc3339())).map_err(Error::failed)?;
    println!(
        "pinned {}{}: the daemon applies it (gated like any deploy) and ignores the branch until `fleetwright resume`",
        plan::short(&target),
        if force { " (forced: it is marked bad and gets one more try)" } else { "" }
    );
    signal_daemon(g);
    Ok(Outcome::Done)
}

pub fn resume(g: &Globals) -> Result<Outcome, Error> {
    open_history(g)?.set_pin_with(None, false, None).map_err(Error::failed)?;
    println!("unpinned: following the branch again");
    signal_daemon(g);
    Ok(Outcome::Done)
}

/// SIGHUP to the running daemon (its pid file is in the state directory). False, said as a
/// note, when no daemon runs.
fn signal_daemon(g: &Globals) -> bool {
    let pid_file = g.host_config().layout().daemon_pid();
    // Only a live fleetwright daemon: a stale pid file must not make us signal a stranger.
    let pid =
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| *p > 0 && super::is_fleetwright(*p as u32, &["daemon"]));
    match pid.map(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGHUP)) {
        Some(Ok(())) => true,
        _ => {
            eprintln!("note: no daemon is running (no live pid in {}); nothing was signalled", pid_file.display());
            false
        }
    }
}

pub fn sync(g: &Globals) -> Result<Outcome, Error> {
    if !signal_daemon(g) {
        return Err(Error::failed("no daemon to ask; run `fleetwright apply` to converge once"));
    }
    println!("asked the daemon to reconcile now");
    Ok(Outcome::Done)
}
