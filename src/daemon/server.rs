//! The daemon's loopback HTTP endpoint: `POST /webhook` (a forge's push hook, HMAC-verified,
//! replays refused) triggers a fetch at once; `GET /healthz` and `GET /metrics` (Prometheus
//! text exposition format) report on the reconciler.
//!
//! Whoever can connect must not be able to take the daemon's descriptors or time: each
//! connection is served here (hyper, not `axum::serve`) with a header-read timeout that is also
//! the idle timeout, a time limit on each request, and a cap on open connections. At the cap, the
//! oldest connection that is not in the middle of a request is closed to make room, so idle
//! connections never lock a real client (or `/healthz`) out. Running out of descriptors when
//! accepting is waited out with backoff (and an idle connection closed), never fatal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::{debug, info, warn};

use super::Trigger;
use super::report::Report;
use super::webhook::{MIN_SECRET_BYTES, Seen, delivery_id, verify};

/// What bounds the endpoint's use of descriptors and time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's head must have arrived this long after the connection was accepted, or
    /// after the previous response on it: a connection that sends nothing, or keeps a finished
    /// exchange open, is closed then (the idle timeout), and so is one that trickles its head.
    pub header_read: Duration,
    /// A request's body must have arrived and its answer been made this long after its head
    /// (else 408, and the connection is closed).
    pub request: Duration,
    /// Connections open at once, at most. At the cap, the oldest connection not in the middle
    /// of a request is closed for each new one; when there is none, the oldest whose request has
    /// run longer than `slow_request` (a body sent slowly on purpose: the routes answer at once);
    /// and when there is none of those either, the new connection is closed.
    pub max_connections: usize,
    pub slow_request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read: Duration::from_secs(10), request: Duration::from_secs(30), max_connections: 64, slow_request: Duration::from_secs(2) }
    }
}

/// Where and how to serve.
#[derive(Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Allow an address that is not loopback (`--listen-any`).
    pub listen_any: bool,
    pub limits: Limits,
    /// The webhook's HMAC key (`webhook::secret_from_file`); None refuses every webhook.
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerConfig {
    // Never the secret, whoever prints this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("listen_any", &self.listen_any)
            .field("limits", &self.limits)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Refuse an address other hosts can reach unless that was asked for explicitly:
/// `/healthz` and `/metrics` answer anyone who can connect.
pub fn check_listen(addr: SocketAddr, listen_any: bool) -> Result<(), String> {
    if listen_any || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "--listen {addr} is not a loopback address: /healthz and /metrics answer anyone who can connect, and the webhook would be exposed without TLS. Listen on 127.0.0.1 (or [::1]) and publish POST /webhook through a reverse proxy with TLS, or pass --listen-any to listen on {addr} anyway"
    ))
}

#[derive(Clone)]
struct AppState {
    secret: Option<Arc<Vec<u8>>>,
    seen: Arc<Mutex<Seen>>,
    tx: mpsc::UnboundedSender<Trigger>,
    stats: Arc<Mutex<Report>>,
}

/// One open connection: since when it serves its current request (None between requests;
/// HTTP/1.1 serves one at a time), and how to close it to make room.
struct Conn {
    accepted: Instant,
    serving: Arc<Mutex<Option<Instant>>>,
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Conns {
    /// Close, to make room, the oldest connection that serves no request and was accepted at
    /// least `idle_age` ago, else the oldest whose request has run for `slow` or longer; false
    /// when there is none.
    fn evict(&mut self, idle_age: Duration, slow: Duration) -> bool {
        let serving = |c: &Conn| *c.serving.lock().expect("connection lock");
        let idle = self.open.iter().find(|(_, c)| serving(c).is_none() && c.accepted.elapsed() >= idle_age);
        let victim = idle.or_else(|| self.open.iter().find(|(_, c)| serving(c).is_some_and(|t| t.elapsed() >= slow))).map(|(id, _)| *id);
        let Some(c) = victim.and_then(|id| self.open.remove(&id)) else { return false };
        c.close.notify_one();
        true
    }
}

/// Removes a connection from `Conns` when its task ends, however it ends.
struct Registered {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.lock().expect("connections lock").open.remove(&self.id);
    }
}

/// Marks its connection as serving a request while it lives.
struct Serving(Arc<Mutex<Option<Instant>>>);

impl Serving {
    fn start(since: &Arc<Mutex<Option<Instant>>>) -> Serving {
        *since.lock().expect("connection lock") = Some(Instant::now());
        Serving(since.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        *self.0.lock().expect("connection lock") = None;
    }
}

/// Serve `/webhook`, `/healthz` and `/metrics` at `cfg.addr`; returns the bound address.
pub async fn spawn(cfg: ServerConfig, tx: mpsc::UnboundedSender<Trigger>, metrics: Arc<Mutex<Report>>) -> std::io::Result<SocketAddr> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    check_listen(cfg.addr, cfg.listen_any).map_err(invalid)?;
    if cfg.secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(invalid(format!("the webhook secret must be at least {MIN_SECRET_BYTES} bytes long")));
    }
    if cfg.limits.max_connections == 0 {
        return Err(invalid("the HTTP endpoint needs room for at least one connection".into()));
    }
    let state = AppState { secret: cfg.secret.map(Arc::new), seen: Arc::default(), tx, stats: metrics };
    let app = Router::new().route("/webhook", post(webhook)).route("/healthz", get(healthz)).route("/metrics", get(metrics_handler)).with_state(state);
    let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, app, cfg.limits));
    Ok(bound)
}

/// Out of descriptors (or kernel memory for sockets): wait and try again.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, limits: Limits) {
    const MIN_WAIT: Duration = Duration::from_millis(10);
    const MAX_WAIT: Duration = Duration::from_secs(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns: Arc<Mutex<Conns>> = Arc::default();
    let mut wait = MIN_WAIT;
    // At most one warning every 10 s.
    let mut warned: Option<Instant> = None;
    let mut warn_once = |what: &str, e: &dyn std::fmt::Display| {
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            warn!(error = %e, "HTTP endpoint: {what}");
            warned = Some(Instant::now());
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) => continue,
            Err(e) => {
                if exhausted(&e) {
                    // An idle connection's descriptor is the one to give back first; not one
                    // accepted a moment ago, which has had no time to send its request.
                    conns.lock().expect("connections lock").evict(Duration::from_secs(1), limits.slow_request);
                    warn_once("out of file descriptors while accepting; closing an idle connection and retrying with backoff", &e);
                } else {
                    warn_once("accepting a connection failed; retrying with backoff", &e);
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
                continue;
            }
        };
        wait = MIN_WAIT;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !conns.lock().expect("connections lock").evict(Duration::ZERO, limits.slow_request) {
                    warn_once("every connection is busy with a request; a new one was closed", &format!("{} connections", limits.max_connections));
                    continue;
                }
                // The evicted connection's task ends at its next poll and frees its slot.
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        debug!(%peer, "HTTP connection");
        let serving: Arc<Mutex<Option<Instant>>> = Arc::default();
        let close = Arc::new(Notify::new());
        let registered = {
            let mut c = conns.lock().expect("connections lock");
            let id = c.next;
            c.next += 1;
            c.open.insert(id, Conn { accepted: Instant::now(), serving: serving.clone(), close: close.clone() });
            Registered { conns: conns.clone(), id }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _registered = registered;
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let guard = Serving::start(&serving);
                let inner = hyper_util::service::TowerToHyperService::new(app.clone());
                async move {
                    let _guard = guard;
                    match tokio::time::timeout(limits.request, hyper::service::Service::call(&inner, req)).await {
                        Ok(response) => response,
                        Err(_) => Ok((StatusCode::REQUEST_TIMEOUT, format!("the request was not received within {:?}\n", limits.request)).into_response()),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(%peer, error = %e, "HTTP connection ended") },
                _ = close.notified() => debug!(%peer, "HTTP connection closed to make room for a new one"),
            }
        });
    }
}

async fn webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let Some(secret) = &st.secret else {
        return (StatusCode::FORBIDDEN, "no webhook secret is configured; webhooks are refused\n".into());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = delivery_id(header).unwrap_or("-");
    if let Err(e) = verify(secret, header, &body) {
        warn!(error = %e, delivery = id, "webhook refused");
        return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    // After the signature: only what it covers tells a replay, never the (unsigned) delivery id.
    if let Err(e) = st.seen.lock().expect("seen lock").check(&body) {
        warn!(error = %e, delivery = id, "webhook refused");
        return (StatusCode::CONFLICT, format!("{e}\n"));
    }
    info!(delivery = id, "webhook accepted: fetching");
    let _ = st.tx.send(Trigger::Webhook);
    (StatusCode::ACCEPTED, "fetching\n".into())
}

async fn healthz(State(st): State<AppState>) -> (StatusCode, String) {
    let (code, body) = super::report::healthz(&st.stats.lock().expect("report lock"), Instant::now());
    (StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), body)
}

async fn metrics_handler(State(st): State<AppState>) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let text = super::report::metrics(&st.stats.lock().expect("report lock"), Instant::now());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The integration tests' raw HTTP client, included rather than copied (a unit test cannot name
/// the `it` crate's modules); its notification receiver is not needed here. (At this level: a
/// path inside `mod tests` would be resolved under a `server/tests/` directory that does not
/// exist.)
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/it/http.rs"]
mod test_http;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_http::{closed_within, is_closed, request, try_get};
    use std::io::{BufRead, Read, Write};
    use std::net::TcpStream;

    struct Served {
        _rt: tokio::runtime::Runtime,
        addr: SocketAddr,
        triggers: mpsc::UnboundedReceiver<Trigger>,
    }

    /// The endpoint on a port of its own, served by a runtime of its own (the tests are the
    /// blocking clients).
    fn serve(limits: Limits, secret: Option<&[u8]>) -> Served {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (tx, triggers) = mpsc::unbounded_channel();
        let cfg = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), listen_any: false, limits, secret: secret.map(<[u8]>::to_vec) };
        let addr = rt.block_on(spawn(cfg, tx, Arc::default())).unwrap();
        Served { _rt: rt, addr, triggers }
    }

    #[test]
    fn idle_connections_never_lock_a_request_out_and_the_cap_holds() {
        let srv = serve(Limits { header_read: Duration::from_secs(60), request: Duration::from_secs(60), max_connections: 8, ..Limits::default() }, None);
        let mut idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(srv.addr).unwrap()).collect();
        let t0 = Instant::now();
        let (code, body) = request(srv.addr, "GET", "/healthz", &[], "");
        assert!(t0.elapsed() < Duration::from_secs(1), "/healthz took {:?} behind 50 idle connections", t0.elapsed());
        assert_eq!((code, body.lines().next()), (503, Some("degraded")), "{body}");
        // At most 8 open at once: the 42 oldest idle connections were closed to make room.
        let until = Instant::now() + Duration::from_secs(5);
        while !idle[..42].iter_mut().all(is_closed) {
            assert!(Instant::now() < until, "the oldest idle connections are still open");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn requests_whose_bodies_never_come_cannot_hold_every_connection() {
        let limits =
            Limits { header_read: Duration::from_secs(60), request: Duration::from_secs(60), max_connections: 4, slow_request: Duration::from_millis(300) };
        let srv = serve(limits, None);
        // Every connection serves a request whose body does not come.
        let mut slow: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(srv.addr).unwrap();
                s.write_all(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx").unwrap();
                s
            })
            .collect();
        // Once they have run longer than slow_request, a new request gets through.
        let until = Instant::now() + Duration::from_secs(5);
        let answered = loop {
            if try_get(srv.addr, "/healthz", Duration::from_secs(2)) == Some(503) {
                break true;
            }
            if Instant::now() > until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(answered, "no request got through four connections held by slow bodies");
        assert!(closed_within(&mut slow[0], Duration::from_secs(2)).is_some(), "the oldest slow request was closed to make room");
    }

    #[test]
    fn silent_trickling_and_kept_alive_connections_are_closed_at_the_header_timeout() {
        let srv = serve(Limits { header_read: Duration::from_secs(1), request: Duration::from_secs(60), ..Limits::default() }, None);
        let mut silent = TcpStream::connect(srv.addr).unwrap();
        // One byte of a request head every 100 ms: the connection is never idle, and its head
        // never complete.
        let mut trickle = TcpStream::connect(srv.addr).unwrap();
        let mut writer = trickle.try_clone().unwrap();
        let dribbler = std::thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if writer.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        // A finished exchange, kept alive, then nothing.
        let mut kept = TcpStream::connect(srv.addr).unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let waits: Vec<Option<Duration>> = [&mut silent, &mut trickle, &mut kept].into_iter().map(|s| closed_within(s, Duration::from_secs(4))).collect();
        assert!(waits.iter().all(Option::is_some), "closed after (silent, trickling, kept alive): {waits:?}");
        assert!(waits[0].unwrap() >= Duration::from_millis(800), "the silent connection was closed by the timeout: {waits:?}");
        assert!(dribbler.join().unwrap(), "the trickling head was cut off before it was complete");
    }

    #[test]
    fn a_body_that_does_not_arrive_in_time_gets_408() {
        let srv = serve(
            Limits { header_read: Duration::from_secs(60), request: Duration::from_secs(1), ..Limits::default() },
            Some(b"0123456789abcdef0123456789abcdef"),
        );
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_replayed_delivery_is_refused_whatever_its_delivery_id() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let mut srv = serve(Limits::default(), Some(secret));
        let push = |after: &str| format!(r#"{{"ref":"refs/heads/main","after":"{after}"}}"#);
        let signed = |body: &str| format!("sha256={}", super::super::webhook::sign(secret, body.as_bytes()));
        let (one, two) = (push("c1"), push("c2"));
        assert_eq!(request(srv.addr, "POST", "/webhook", &[("X-Hub-Signature-256", &signed(&one)), ("X-GitHub-Delivery", "d1")], &one).0, 202);
        // The same signed body under a new delivery id (the id is not signed): a replay.
        let (code, body) = request(srv.addr, "POST", "/webhook", &[("X-Hub-Signature-256", &signed(&one)), ("X-GitHub-Delivery", "d2")], &one);
        assert_eq!(code, 409, "{body}");
        assert!(body.contains("was accepted before (replay)"), "{body}");
        assert_eq!(request(srv.addr, "POST", "/webhook", &[("X-Gitea-Signature", &signed(&one)[7..])], &one).0, 409);
        // A new push is accepted, even under an old delivery id.
        assert_eq!(request(srv.addr, "POST", "/webhook", &[("X-Hub-Signature-256", &signed(&two)), ("X-GitHub-Delivery", "d1")], &two).0, 202);
        // An unsigned request is refused before it is remembered: the signed one still passes.
        let three = push("c3");
        assert_eq!(request(srv.addr, "POST", "/webhook", &[("X-Hub-Signature-256", "sha256=00"), ("X-GitHub-Delivery", "d3")], &three).0, 401);
        assert_eq!(request(srv.addr, "POST", "/webhook", &[("X-Hub-Signature-256", &signed(&three)), ("X-GitHub-Delivery", "d3")], &three).0, 202);
        let mut fetches = 0;
        while srv.triggers.try_recv().is_ok() {
            fetches += 1;
        }
        assert_eq!(fetches, 3, "one fetch per accepted delivery");
    }

    #[test]
    fn only_loopback_unless_asked_and_no_short_secret() {
        for ok in ["127.0.0.1:9797", "127.8.0.1:1", "[::1]:9797", "[::ffff:127.0.0.1]:9797"] {
            assert_eq!(check_listen(ok.parse().unwrap(), false), Ok(()), "{ok}");
        }
        for remote in ["0.0.0.0:9797", "[::]:9797", "192.168.1.5:9797", "[::ffff:10.0.0.1]:80"] {
            let e = check_listen(remote.parse().unwrap(), false).unwrap_err();
            assert!(e.contains("is not a loopback address") && e.contains("--listen-any"), "{e}");
            assert_eq!(check_listen(remote.parse().unwrap(), true), Ok(()));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let refused = |cfg: ServerConfig| rt.block_on(spawn(cfg, tx.clone(), Arc::default())).unwrap_err().to_string();
        let cfg = ServerConfig { addr: "0.0.0.0:0".parse().unwrap(), listen_any: false, limits: Limits::default(), secret: None };
        assert!(refused(cfg.clone()).contains("is not a loopback address"));
        let short = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), secret: Some(b"s3cret".to_vec()), ..cfg };
        assert!(refused(short.clone()).contains("at least 16 bytes"));
        assert!(!format!("{short:?}").contains("s3cret"), "the secret is never printed");
    }

    /// Out of descriptors, the accept loop neither dies nor spins: it closes an idle connection
    /// and accepts the new one. In a child process (this test binary again), whose descriptors
    /// `emfile_child` uses up once the parent's idle connection is open.
    #[test]
    fn out_of_descriptors_an_idle_connection_makes_room_for_a_new_one() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "daemon::server::tests::emfile_child", "--ignored", "--nocapture", "--test-threads=1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        // The child ends when its stdin closes: when this test ends, however it ends.
        let mut to_child = child.stdin.take().unwrap();
        let mut from_child = std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
        // (The harness prints the test's name on the same line.)
        let addr: SocketAddr =
            from_child.find_map(|l| l.split_once("emfile_child: listening ").map(|(_, a)| a.to_string())).expect("the child's address").parse().unwrap();
        // An idle connection, known to be accepted: it has been answered, and is kept alive.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        idle.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 503");
        writeln!(to_child, "go").unwrap();
        assert!(from_child.any(|l| l.contains("emfile_child: exhausted")), "the child used up its descriptors");
        let t0 = Instant::now();
        let (code, _) = request(addr, "GET", "/healthz", &[], "");
        let answered = t0.elapsed();
        let idle_closed = closed_within(&mut idle, Duration::from_secs(5));
        writeln!(to_child, "done").unwrap();
        let status = child.wait().unwrap();
        assert_eq!(code, 503, "answered although the server had no descriptor left");
        assert!(answered < Duration::from_secs(3), "{answered:?}");
        assert!(idle_closed.is_some(), "the idle connection was closed to free a descriptor");
        assert!(status.success());
    }

    #[test]
    #[ignore = "run in its own process by out_of_descriptors_an_idle_connection_makes_room_for_a_new_one"]
    fn emfile_child() {
        let srv = serve(Limits { header_read: Duration::from_secs(60), ..Limits::default() }, None);
        println!("emfile_child: listening {}", srv.addr);
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        if stdin.read_line(&mut line).unwrap() == 0 {
            return;
        }
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on a struct of ours.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            let low = libc::rlimit { rlim_cur: 128.min(limit.rlim_max), rlim_max: limit.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        }
        let mut hog = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hog.push(f);
        }
        println!("emfile_child: exhausted");
        line.clear();
        stdin.read_line(&mut line).unwrap();
        drop(hog);
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}
