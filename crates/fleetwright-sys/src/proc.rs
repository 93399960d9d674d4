//! Processes: a command's output within a time limit, and the crash points of the
//! fault-injection tests.

use std::io::{self, Read};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Like `Command::output`, but gives up (killing the direct child) after `timeout` with
/// `ErrorKind::TimedOut`.
pub fn output_with_timeout(cmd: Command, timeout: Duration) -> io::Result<Output> {
    output_with_input(cmd, None, timeout)
}

/// [`output_with_timeout`], with `input` written to the command's standard input (through a
/// pipe; `None`: /dev/null) and then closed.
pub fn output_with_input(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        // Small inputs (a secret, at most 1 MiB): the pipe takes them while the child reads;
        // a child that exits without reading makes this fail, which its status then says.
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let until = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            // The reader threads finish when whatever nsenter forked exits (at the latest when
            // the sandbox is killed); don't wait for them.
            return Err(io::Error::new(io::ErrorKind::TimedOut, "command timed out"));
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() })
}

/// A crash point for the crash-safety tests: when `FLEETWRIGHT_CRASH_AT` names this point
/// (`NAME`, or `NAME:N` for its Nth hit), the process aborts here as if killed. When
/// `FLEETWRIGHT_STOP_AT` names it, the process stops itself (SIGSTOP) there instead, and goes on
/// when it is continued (SIGCONT): the fault-injection tests kill the bus or re-execute the
/// manager at that very point.
pub fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CRASH_HITS: AtomicUsize = AtomicUsize::new(0);
    static STOP_HITS: AtomicUsize = AtomicUsize::new(0);
    let hit = |var: &str, hits: &AtomicUsize| {
        let Ok(want) = std::env::var(var) else { return false };
        let (point, nth) = want.split_once(':').map_or((want.as_str(), 1), |(p, n)| (p, n.parse().unwrap_or(1)));
        point == name && hits.fetch_add(1, Ordering::SeqCst) + 1 == nth
    };
    if hit("FLEETWRIGHT_CRASH_AT", &CRASH_HITS) {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
    if hit("FLEETWRIGHT_STOP_AT", &STOP_HITS) {
        eprintln!("stop point {name} reached: stopping until continued");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}
