//! Notifications: each verdict queues one event in the history's outbox, in the same
//! transaction as the verdict (so a daemon killed in between loses neither, and sends none
//! twice), and this task delivers the outbox to `--notify-url`: at start (what an earlier run
//! left undelivered), when woken after a verdict, and after a failure with backoff (1 s,
//! doubling, at most 5 minutes). Delivery is at least once: a receiver that answered but whose
//! answer was lost gets the event again, with the same `id`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::history::History;

/// The JSON document of an event.
pub fn body(event: &str, commit: &str, host: &str, message: &str, at: &str, last_good: Option<&str>) -> String {
    serde_json::json!({
        "id": format!("{event}:{commit}"),
        "event": event,
        "commit": commit,
        "host": host,
        "message": message,
        "at": at,
        "lastGood": last_good,
    })
    .to_string()
}

/// Deliver the outbox of the history in `state_dir` to `url`, for as long as the runtime runs.
pub fn spawn(url: String, state_dir: PathBuf, wake: Arc<Notify>) {
    tokio::spawn(async move {
        let mut backoff: Option<Duration> = None;
        loop {
            let (url2, dir) = (url.clone(), state_dir.clone());
            // SQLite and HTTP are blocking: off the runtime's worker threads.
            let result = tokio::task::spawn_blocking(move || deliver(&url2, &dir)).await;
            let failed = match result {
                Ok(Ok(failed)) => failed,
                Ok(Err(e)) => {
                    warn!(error = %e, "notifications: the outbox cannot be read");
                    true
                }
                Err(e) => {
                    warn!(error = %e, "notifications: the delivery task failed");
                    true
                }
            };
            if failed {
                let wait = super::decide::backoff(backoff);
                backoff = Some(wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            } else {
                backoff = None;
                wake.notified().await;
            }
        }
    });
}

/// The HTTP client of notifications: ten seconds for a whole request, TLS by the system's
/// OpenSSL and its trust store (the stack git's https fetches use).
fn http_agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let tls = TlsConfig::builder().provider(TlsProvider::NativeTls).root_certs(RootCerts::PlatformVerifier).build();
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).tls_config(tls).build().new_agent()
}

/// Send what is waiting; true when something could not be sent.
fn deliver(url: &str, state_dir: &std::path::Path) -> Result<bool, super::history::HistoryError> {
    let h = History::open(state_dir)?;
    let given_up = h.prune_outbox(std::time::SystemTime::now())?;
    if given_up > 0 {
        warn!(count = given_up, "notifications older than a week could not be delivered and were given up");
    }
    let agent = http_agent();
    for o in h.outgoing(100)? {
        match agent.post(url).header("content-type", "application/json").send(o.body.as_str()) {
            Ok(_) => {
                info!(event = o.event, commit = crate::plan::short(&o.commit), "notification delivered");
                h.delivered(o.id, &crate::host::now_rfc3339())?;
            }
            Err(e) => {
                // Once per event at warning level: a receiver that is down for a day is not a
                // warning a minute.
                if o.attempts == 0 {
                    warn!(error = %e, event = o.event, url, "notification webhook failed; retrying with backoff");
                } else {
                    debug!(error = %e, event = o.event, attempts = o.attempts + 1, "notification webhook failed again");
                }
                h.delivery_failed(o.id, &e.to_string())?;
                return Ok(true);
            }
        }
    }
    Ok(false)
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
}
