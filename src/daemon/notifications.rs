//! Notifications: every report — each verdict (queued in the same transaction as the verdict,
//! so a daemon killed in between loses neither), a commit about to be applied (`pending`), an
//! agent's failure or recovery (queued by `fleetwright notify-report`, run by the agent's
//! `OnFailure=`) — is a row of the history's outbox, durable in the state directory. Each sink
//! (the Fleet's `notify` list, and `--notify-url` as a `webhook`) has its own cursor in that
//! queue: it is sent every report it wants, in order, at least once (a receiver whose answer
//! was lost gets the report again, with the same `id`).
//!
//! This task delivers: at start (what an earlier run left), when woken (a verdict, a report),
//! and on each sink's own backoff after a failure (1 s, doubling, at most 5 minutes). Sinks are
//! sent to side by side, each on its own thread, with ten seconds for a request: a dead sink
//! delays no other sink, and nothing here is on the path of a reconcile or a unit. A report
//! older than `history::OUTBOX_DAYS` that a sink could not be sent is dropped for it and counted
//! (`fleetwright_notify_dropped_total`). A request the receiver refuses for good (400, 422) is
//! counted as failed and skipped, so that one bad report cannot block a sink's queue.
//!
//! The requests themselves (each forge's API, Slack, ntfy, the JSON webhook) are built by the
//! pure `notify` module of the core.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::history::{Handled, History, HistoryError, Outgoing, SinkCounts};
use crate::notify::{Answer, Event, Request, Resolved};
use crate::spec::model::{NotifySink, SinkKind};

/// The settings key under which the daemon keeps the sinks it delivers to (with their
/// repository filled in): the failure reporter and `notify test` read them there.
pub const SINKS_KEY: &str = "notify_sinks";

/// The settings key of the last valid Fleet's own `notify` list (without `--notify-url`).
pub const FLEET_SINKS_KEY: &str = "notify_fleet_sinks";

/// How long a request may take, connection and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON document of a verdict's event.
pub fn body(event: &str, commit: &str, host: &str, message: &str, at: &str, last_good: Option<&str>) -> String {
    let ev = Event {
        id: format!("{event}:{commit}"),
        event: event.into(),
        commit: commit.into(),
        host: host.into(),
        message: message.into(),
        at: at.into(),
        last_good: last_good.map(str::to_string),
        ..Default::default()
    };
    serde_json::to_string(&ev).expect("an event serializes")
}

/// The sinks the daemon delivers to, shared with the reconciler (which replaces them when a
/// commit's Fleet names others).
#[derive(Clone, Default)]
pub struct Sinks(Arc<Mutex<Vec<NotifySink>>>);

impl Sinks {
    pub fn get(&self) -> Vec<NotifySink> {
        self.0.lock().expect("sinks lock").clone()
    }
    /// Replace the sinks; whether they changed.
    pub fn set(&self, sinks: Vec<NotifySink>) -> bool {
        let mut s = self.0.lock().expect("sinks lock");
        if *s == sinks {
            return false;
        }
        *s = sinks;
        true
    }
}

/// The sinks of a Fleet and the `--notify-url` webhook, each forge sink's repository filled in
/// from the followed repository's URL when it names none.
pub fn sinks_for(fleet: &[NotifySink], notify_url: Option<&str>, repo_url: &str) -> Vec<NotifySink> {
    let mut out: Vec<NotifySink> = fleet
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if s.kind.is_forge() && s.repo.is_none() {
                s.repo = crate::notify::repo_from_url(repo_url);
            }
            s
        })
        .collect();
    if let Some(url) = notify_url {
        out.push(NotifySink {
            kind: SinkKind::Webhook,
            url: Some(url.to_string()),
            url_file: None,
            repo: None,
            token_file: None,
            target_url: None,
            events: vec![],
            agents: vec![],
        });
    }
    out.sort();
    out.dedup();
    out
}

/// Per-sink delivery state in the daemon: when it may be tried again.
#[derive(Default)]
struct Backoff {
    wait: Option<Duration>,
    until: Option<Instant>,
}

/// Deliver the outbox of the history in `state_dir` to the sinks, for as long as the runtime
/// runs. `stats` receives each sink's counts after every pass (the metrics).
pub fn spawn(sinks: Sinks, state_dir: PathBuf, host: String, wake: Arc<Notify>, report: Arc<Mutex<super::report::Report>>) {
    // The failure reporter touches `<state>/notify/wake`: delivered at once, not at the next tick.
    let watcher = watch_wake(&state_dir, wake.clone());
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut backoff: HashMap<String, Backoff> = HashMap::new();
        loop {
            // Services seen running again, and groups of failures whose interval is over.
            let running: Vec<String> = {
                let r = report.lock().expect("report lock");
                r.units
                    .iter()
                    .filter(|(_, u)| u.role == Some(crate::types::Role::Service) && u.active_state == "active" && u.sub_state == "running")
                    .map(|(n, _)| n.to_string())
                    .collect()
            };
            let (dir, h2) = (state_dir.clone(), host.clone());
            let (failing, summary_due) =
                tokio::task::spawn_blocking(move || follow_up(&dir, &h2, &running)).await.ok().and_then(Result::ok).unwrap_or_default();
            let now = Instant::now();
            let all = sinks.get();
            let due: Vec<NotifySink> =
                all.iter().filter(|s| backoff.get(&crate::notify::sink_key(s)).and_then(|b| b.until).is_none_or(|t| t <= now)).cloned().collect();
            let dir = state_dir.clone();
            let every = all.clone();
            // SQLite and HTTP are blocking: off the runtime's worker threads.
            let result = tokio::task::spawn_blocking(move || pass(&dir, &every, &due, None)).await;
            match result {
                Ok(Ok((outcomes, counts))) => {
                    for (key, ok) in outcomes {
                        let b = backoff.entry(key).or_default();
                        if ok {
                            *b = Backoff::default();
                        } else {
                            let wait = super::decide::backoff(b.wait);
                            *b = Backoff { wait: Some(wait), until: Some(Instant::now() + wait) };
                        }
                    }
                    report.lock().expect("report lock").sinks = counts;
                }
                Ok(Err(e)) => warn!(error = %e, "notifications: the outbox cannot be read"),
                Err(e) => warn!(error = %e, "notifications: the delivery task failed"),
            }
            backoff.retain(|k, _| all.iter().any(|s| crate::notify::sink_key(s) == *k));
            let next = backoff.values().filter_map(|b| b.until).min();
            let idle = Duration::from_secs(60);
            let wait = next.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(idle).min(idle);
            // A folded group's summary is sent when its interval is over (a second later: the
            // interval is counted in whole seconds).
            let wait = summary_due.map(|d| d + Duration::from_secs(1)).map_or(wait, |d| d.min(wait));
            let deadline = Instant::now() + wait;
            // While a unit's failure stands, a look every RECOVERY_LOOK at the live states the
            // watch keeps (memory only): a service running again is reported at once.
            loop {
                let step = if failing.is_empty() { wait } else { RECOVERY_LOOK };
                let woken = tokio::select! {
                    _ = tokio::time::sleep(step.min(deadline.saturating_duration_since(Instant::now()))) => false,
                    _ = wake.notified() => true,
                };
                if woken || Instant::now() >= deadline {
                    break;
                }
                let r = report.lock().expect("report lock");
                let back = failing.iter().any(|f| {
                    r.units
                        .get(f.as_str())
                        .is_some_and(|u| u.role == Some(crate::types::Role::Service) && u.active_state == "active" && u.sub_state == "running")
                });
                if back {
                    break;
                }
            }
        }
    });
}

/// Watch `<state>/notify` for the reporter's `wake` (None when it cannot be watched: the
/// tick of the delivery loop still finds the report).
fn watch_wake(state_dir: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = crate::layout::StateLayout::new(state_dir).notify();
    std::fs::create_dir_all(&dir).ok()?;
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            wake.notify_one();
        }
    })
    .ok()?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

/// What the daemon reports of agents' failures on its own: the recovery of a failing service
/// that runs again (a job's is reported by its next successful run), and the summary of a
/// unit whose folded failures' interval is over.
/// Returns the units still failing, and when the next summary is due.
fn follow_up(state_dir: &Path, host: &str, running: &[String]) -> Result<(Vec<String>, Option<Duration>), HistoryError> {
    let h = History::open(state_dir)?;
    let mut still = vec![];
    for f in h.failing_units()? {
        if running.contains(&f.unit) {
            if crate::ops::failure::recovered(&h, host, &f.unit, "it runs again")? {
                info!(unit = f.unit, "the unit recovered");
            }
            let _ = std::fs::remove_file(crate::layout::StateLayout::new(state_dir).notify_failing(&f.unit));
        } else {
            crate::ops::failure::summarize(&h, host, &f.unit)?;
            still.push(f.unit);
        }
    }
    Ok((still, crate::ops::failure::next_summary(&h)?))
}

/// How often the live state of a failing service is looked at (in memory) for its recovery.
const RECOVERY_LOOK: Duration = Duration::from_secs(2);

/// The HTTP client of notifications: `REQUEST_TIMEOUT` for a whole request, TLS by the system's
/// OpenSSL and its trust store (the stack git's https fetches use); every status is an answer
/// (read, not an error).
fn http_agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let tls = TlsConfig::builder().provider(TlsProvider::NativeTls).root_certs(RootCerts::PlatformVerifier).build();
    ureq::Agent::config_builder().timeout_global(Some(REQUEST_TIMEOUT)).http_status_as_error(false).tls_config(tls).build().new_agent()
}

/// A file's text, trimmed (a token or URL written with a newline).
fn read_secret(path: &str, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} file {path}: {e}"))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("the {what} file {path} is empty"));
    }
    Ok(t.to_string())
}

/// What `sink` needs from the host: its URL and token, read now (a token replaced on disk is
/// used at the next try).
pub fn resolve(sink: &NotifySink) -> Result<Resolved, String> {
    let url = match (&sink.url, &sink.url_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => read_secret(f, "URL")?,
        (None, None) => return Err("the sink has no url".into()),
    };
    let token = sink.token_file.as_deref().map(|f| read_secret(f, "token")).transpose()?;
    Ok(Resolved { url, repo: sink.repo.clone(), token })
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The start of its body, one line.
    pub body: String,
}

/// Send one request.
pub fn send(agent: &ureq::Agent, r: &Request) -> Result<Reply, String> {
    let mut req = agent.post(&r.url);
    for (k, v) in &r.headers {
        req = req.header(k, v);
    }
    let mut resp = req.send(r.body.as_str()).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    Ok(Reply { status, body: crate::notify::one_line(&body, 200) })
}

/// The event a queued row holds.
pub fn event_of(o: &Outgoing) -> Option<Event> {
    serde_json::from_str(&o.body).ok()
}

/// One pass over the due sinks (each on a thread of its own, none past `until`), after
/// expiring what is too old for every sink. Returns each due sink's outcome (true: its queue is empty or moved on) and
/// every sink's counts.
#[allow(clippy::type_complexity)]
pub fn pass(
    state_dir: &Path,
    all: &[NotifySink],
    due: &[NotifySink],
    until: Option<Instant>,
) -> Result<(Vec<(String, bool)>, BTreeMap<String, SinkCounts>), HistoryError> {
    let h = History::open(state_dir)?;
    let keys: Vec<String> = all.iter().map(crate::notify::sink_key).collect();
    for k in &keys {
        h.ensure_sink(k)?;
    }
    let by_key: HashMap<&str, &NotifySink> = keys.iter().map(String::as_str).zip(all.iter()).collect();
    let wants = |key: &str, o: &Outgoing| by_key.get(key).is_some_and(|s| event_of(o).is_some_and(|e| crate::notify::wants(s, &e)));
    let dropped = h.expire(std::time::SystemTime::now(), &keys, wants)?;
    if dropped > 0 {
        warn!(count = dropped, days = super::history::OUTBOX_DAYS, "notifications that could not be delivered in time were dropped");
    }
    drop(h);
    let outcomes: Vec<(String, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = due.iter().map(|s| scope.spawn(move || (crate::notify::sink_key(s), deliver(state_dir, s, until)))).collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .map(|(k, r)| match r {
                Ok(ok) => (k, ok),
                Err(e) => {
                    warn!(error = %e, sink = k, "notifications: the outbox cannot be read");
                    (k, false)
                }
            })
            .collect()
    });
    let h = History::open(state_dir)?;
    let mut counts = BTreeMap::new();
    for (k, s) in keys.iter().zip(all) {
        let c = h.sink_counts(k, |o| event_of(o).is_some_and(|e| crate::notify::wants(s, &e)))?;
        counts.insert(k.clone(), c);
    }
    Ok((outcomes, counts))
}

/// Send `sink` its queue, in order, until it is empty, a report cannot be sent, or `until`
/// (true: empty).
pub fn deliver(state_dir: &Path, sink: &NotifySink, until: Option<Instant>) -> Result<bool, HistoryError> {
    let h = History::open(state_dir)?;
    let key = crate::notify::sink_key(sink);
    let agent = http_agent();
    let kind = sink.kind.as_str();
    let mut first_failure = true;
    loop {
        let batch = h.after(h.ensure_sink(&key)?, 100)?;
        if batch.is_empty() {
            return Ok(true);
        }
        for o in batch {
            // The reporter delivering by itself stops in time (its unit's TimeoutStartSec=):
            // what is left waits in the outbox.
            if until.is_some_and(|t| Instant::now() >= t) {
                return Ok(false);
            }
            let Some(ev) = event_of(&o).filter(|e| crate::notify::wants(sink, e)) else {
                h.handled(&key, o.id, Handled::Skipped)?;
                continue;
            };
            let request = resolve(sink).and_then(|r| crate::notify::request(sink, &r, &ev));
            let outcome = match &request {
                Ok(req) => send(&agent, req).map(|reply| (crate::notify::answer(reply.status), reply)),
                Err(e) => Err(e.clone()),
            };
            match outcome {
                Ok((Answer::Sent, _)) => {
                    info!(event = ev.event, sink = key, commit = crate::plan::short(&ev.commit), "notification delivered");
                    h.handled(&key, o.id, Handled::Sent)?;
                }
                Ok((Answer::Rejected, reply)) => {
                    warn!(
                        event = ev.event,
                        sink = key,
                        status = reply.status,
                        answer = reply.body,
                        "the receiver refused the notification; it is not sent again"
                    );
                    h.handled(&key, o.id, Handled::Rejected)?;
                }
                Ok((Answer::Retry, reply)) => {
                    let e = format!("HTTP {}: {}", reply.status, reply.body);
                    failed(&h, &key, kind, &ev, &e, first_failure)?;
                    return Ok(false);
                }
                Err(e) => {
                    failed(&h, &key, kind, &ev, &e, first_failure)?;
                    return Ok(false);
                }
            }
            first_failure = false;
        }
    }
}

fn failed(h: &History, key: &str, kind: &str, ev: &Event, e: &str, first: bool) -> Result<(), HistoryError> {
    let attempts = h.sink_counts(key, |_| false)?.attempts;
    // Once per report at warning level: a receiver that is down for a day is not a warning a
    // minute.
    if attempts == 0 && first {
        warn!(error = e, event = ev.event, sink = key, "notification {kind} failed; retrying with backoff");
    } else {
        debug!(error = e, event = ev.event, attempts = attempts + 1, sink = key, "notification {kind} failed again");
    }
    h.sink_failed(key, e)
}

/// `notify test`: `ev` to every sink, side by side; each one's answer (a forge without a commit
/// to show the status on, or one `wants` would not send `ev` to, says so).
pub fn test_all(sinks: &[NotifySink], ev: &Event) -> Vec<(String, Result<Reply, String>)> {
    let agent = http_agent();
    std::thread::scope(|scope| {
        let handles: Vec<_> = sinks
            .iter()
            .map(|s| {
                let agent = &agent;
                scope.spawn(move || {
                    let key = crate::notify::sink_key(s);
                    if s.kind.is_forge() && ev.commit.is_empty() {
                        return (key, Err("no commit to set a test status on: give --repo".to_string()));
                    }
                    let r = resolve(s).and_then(|r| crate::notify::request(s, &r, ev)).and_then(|req| send(agent, &req));
                    (key, r)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// The sinks the daemon last delivered to, as it kept them in the history.
pub fn stored_sinks(h: &History) -> Result<Vec<NotifySink>, HistoryError> {
    Ok(h.get_json(SINKS_KEY)?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// https goes through OpenSSL (no second TLS stack, and no panic for want of bundled
    /// roots): a server that does not speak TLS is a TLS error, said as such.
    #[test]
    fn https_is_spoken_through_the_one_tls_stack() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut hello = [0u8; 5];
            // A TLS ClientHello starts with a handshake record: type 22, version 3.x.
            conn.read_exact(&mut hello).unwrap();
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            hello
        });
        let err = http_agent().post(&format!("https://127.0.0.1:{port}/hook")).send("{}").expect_err("not a TLS server");
        let hello = server.join().unwrap();
        assert_eq!((hello[0], hello[1]), (22, 3), "the client opened with a TLS handshake");
        assert!(matches!(err, ureq::Error::Tls(_) | ureq::Error::Io(_)) || err.to_string().to_lowercase().contains("tls"), "{err:?}");
    }

    fn webhook(url: &str) -> NotifySink {
        sinks_for(&[], Some(url), "/srv/fleet").remove(0)
    }

    /// A sink that is down keeps its queue, in order; once it answers, it gets each report
    /// once, oldest first. A report past its age is dropped and counted.
    #[test]
    fn a_dead_sink_keeps_its_queue_in_order_and_old_reports_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        // A port with nobody listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let sink = webhook(&format!("http://127.0.0.1:{port}/hook"));
        let key = crate::notify::sink_key(&sink);
        h.ensure_sink(&key).unwrap();
        for (i, ev) in ["deployed", "rolled-back", "deployed"].iter().enumerate() {
            h.queue(ev, &format!("c{i}"), &body(ev, &format!("c{i}"), "h", "m", "2026-01-01T00:00:00Z", None), "2099-01-01T00:00:00Z").unwrap();
        }
        assert!(!deliver(dir.path(), &sink, None).unwrap(), "nobody listens");
        let c = h.sink_counts(&key, |_| true).unwrap();
        assert_eq!((c.queued, c.failed, c.sent), (3, 1, 0));
        // Up now: everything, in order.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let got = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut bodies = vec![];
            for _ in 0..3 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = vec![0u8; 65536];
                let mut all = vec![];
                loop {
                    let n = conn.read(&mut buf).unwrap();
                    all.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&all).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize =
                            head.lines().find_map(|l| l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).unwrap_or(0);
                        if body.len() >= len {
                            bodies.push(serde_json::from_str::<serde_json::Value>(body).unwrap()["commit"].as_str().unwrap().to_string());
                            break;
                        }
                    }
                }
                conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
            bodies
        });
        assert!(deliver(dir.path(), &sink, None).unwrap());
        assert_eq!(got.join().unwrap(), ["c0", "c1", "c2"]);
        let c = h.sink_counts(&key, |_| true).unwrap();
        assert_eq!((c.queued, c.sent, c.attempts), (0, 3, 0));

        // Too old to be sent: dropped for the sink, counted, and gone from the queue.
        h.queue("deployed", "old", &body("deployed", "old", "h", "m", "2020-01-01T00:00:00Z", None), "2020-01-01T00:00:00Z").unwrap();
        let dropped = h.expire(std::time::SystemTime::now(), std::slice::from_ref(&key), |_, _| true).unwrap();
        assert_eq!(dropped, 1);
        let c = h.sink_counts(&key, |_| true).unwrap();
        assert_eq!((c.queued, c.dropped), (0, 1));
    }

    #[test]
    fn forge_sinks_take_their_repository_from_the_followed_url() {
        let gitea = NotifySink {
            kind: SinkKind::Gitea,
            url: Some("https://git.example.com".into()),
            url_file: None,
            repo: None,
            token_file: Some("/etc/t".into()),
            target_url: None,
            events: vec![],
            agents: vec![],
        };
        let s = sinks_for(std::slice::from_ref(&gitea), Some("http://h/hook"), "git@git.example.com:ops/fleet.git");
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().find(|s| s.kind == SinkKind::Gitea).unwrap().repo.as_deref(), Some("ops/fleet"));
    }
}
