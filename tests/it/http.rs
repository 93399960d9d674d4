//! A raw HTTP/1.1 client for the daemon's endpoint, and a receiver for its notifications: plain
//! sockets, so that a test controls every byte (idle connections, bodies that never come,
//! trickled heads) and sees every close. One copy, used by the integration tests and by the
//! unit tests of `src/daemon/server.rs` (which include this file by path), so it needs nothing
//! but std and serde_json.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request on a connection of its own (`Connection: close`): (status, body). Panics when
/// it cannot connect or the answer does not come within 10 s.
pub fn request(addr: impl ToSocketAddrs, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, resp.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default())
}

/// One `GET path` that may go unanswered: its status, or None when the connection, the
/// request or the answer (within `within`) fails. For polling an endpoint that is busy.
pub fn try_get(addr: impl ToSocketAddrs, path: &str, within: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Wait for the server to close `s` (end of file or reset), reading and dropping what it sends
/// meanwhile, for up to `within`: how long it took, or None.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(t0.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
}

/// Whether the server has closed `s`, without waiting.
pub fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.read(&mut [0u8; 64]);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A notification receiver on loopback: every JSON document POSTed to it, answered 204.
pub struct Sink {
    pub url: String,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Sink {
    /// On a port of its own.
    pub fn start() -> Sink {
        Sink::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }
    /// On `listener` (a port chosen before the receiver is up).
    pub fn on(listener: TcpListener) -> Sink {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen = events.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                let body = loop {
                    let Ok(n) = conn.read(&mut buf) else { break None };
                    if n == 0 {
                        break None;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..i]).to_lowercase();
                        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        if got.len() >= i + 4 + len {
                            break Some(got[i + 4..i + 4 + len].to_vec());
                        }
                    }
                };
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                if let Some(v) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    seen.lock().unwrap().push(v);
                }
            }
        });
        Sink { url, events }
    }
    /// How many `event`s came for `commit`.
    pub fn count(&self, event: &str, commit: &str) -> usize {
        self.events.lock().unwrap().iter().filter(|e| e["event"] == event && e["commit"] == commit).count()
    }
    /// Every (event, commit) received, in order.
    pub fn all(&self) -> Vec<(String, String)> {
        self.events.lock().unwrap().iter().map(|e| (e["event"].as_str().unwrap_or("").to_string(), e["commit"].as_str().unwrap_or("").to_string())).collect()
    }
}

/// One request a [`Receiver`] got: what it checks of a forge's or a chat's API, and what it
/// answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == &name.to_lowercase()).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A receiver that keeps every request whole (method, path, headers, body) and answers each
/// with the status it is set to (201 unless told otherwise): a forge's status API, a chat's
/// webhook, an ntfy topic, down (503) for a while.
pub struct Receiver {
    pub base: String,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(Mutex::new(201u16));
        let (seen, answer) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = vec![0u8; 65536];
                let mut all = Vec::new();
                let parsed = loop {
                    let Ok(n) = conn.read(&mut buf) else { break None };
                    if n == 0 {
                        break None;
                    }
                    all.extend_from_slice(&buf[..n]);
                    if let Some(i) = all.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&all[..i]).to_string();
                        let mut lines = head.lines();
                        let first: Vec<String> = lines.next().unwrap_or("").split_whitespace().map(str::to_string).collect();
                        let headers: Vec<(String, String)> =
                            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
                        let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                        if all.len() >= i + 4 + len {
                            let body = String::from_utf8_lossy(&all[i + 4..i + 4 + len]).to_string();
                            break Some((first.first().cloned().unwrap_or_default(), first.get(1).cloned().unwrap_or_default(), headers, body));
                        }
                    }
                };
                let code = *answer.lock().unwrap();
                let _ = conn
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes());
                if let Some((method, path, headers, body)) = parsed {
                    seen.lock().unwrap().push(Received { method, path, headers, body, status: code });
                }
            }
        });
        Receiver { base, got, status }
    }
    /// Answer every request from now on with `code`.
    pub fn answer(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }
    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
    /// The requests to paths starting with `prefix` that were answered 2xx.
    pub fn accepted(&self, prefix: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path.starts_with(prefix) && (200..300).contains(&r.status)).collect()
    }
}
