//! Where log lines go, and how they look.
//!
//! - Under systemd with stderr connected to the journal (`$JOURNAL_STREAM` names stderr's
//!   device and inode, sd_journal_stream_fd(3)): one line per entry, prefixed `<N>` with its
//!   syslog priority (sd-daemon(3)), which journald takes as the entry's PRIORITY — so
//!   `journalctl -p warning` shows the warnings. No timestamp and no colour: the journal keeps
//!   its own. A message of several lines is several entries of the same priority.
//! - On a terminal: readable text with colours.
//! - Anywhere else (a file, a pipe): the same text, without colours.
//! - `--log-format json` (or `FLEETWRIGHT_LOG_FORMAT=json`): one JSON object per line, for a
//!   log shipper that wants fields.
//!
//! `RUST_LOG` filters (default `info`; the notify crate's own chatter only from `warn`).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The journal's priorities when stderr is the journal, text otherwise.
    Auto,
    Text,
    Json,
    /// `<N>` priority prefixes, as for the journal.
    Journal,
}

/// The syslog priority of a level (sd-daemon(3): `<3>` error, `<4>` warning, `<6>` info, `<7>` debug).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether stderr is a stream to the journal: `$JOURNAL_STREAM` is `DEVICE:INODE` of it.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Each event as `<N>message key=value`, one entry per line of it.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut text = String::new();
        ctx.format_fields(Writer::new(&mut text), event)?;
        let p = priority(event.metadata().level());
        if text.is_empty() {
            return writeln!(writer, "<{p}>");
        }
        for line in text.lines() {
            writeln!(writer, "<{p}>{line}")?;
        }
        Ok(())
    }
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"))
}

/// Set up logging to stderr in `format`.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        other => other,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Journal => builder.with_ansi(false).event_format(JournalFormat).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        _ if std::io::stderr().is_terminal() => builder.try_init(),
        _ => builder.with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_carries_its_priority_for_the_journal() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt().with_ansi(false).event_format(JournalFormat).with_max_level(Level::DEBUG).with_writer(move || out.clone()).finish();
        tracing::subscriber::with_default(sub, || {
            tracing::error!(commit = "abc", "the deploy failed");
            tracing::warn!("drift repaired");
            tracing::info!(repository = "/srv/fleet", "fleetwright daemon starting");
            tracing::debug!("reconciled (as before)");
            tracing::warn!("the plan cannot be applied:\n  agent-web.service is foreign");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "<3>the deploy failed commit=\"abc\"\n<4>drift repaired\n<6>fleetwright daemon starting repository=\"/srv/fleet\"\n<7>reconciled (as before)\n<4>the plan cannot be applied:\n<4>  agent-web.service is foreign\n"
        );
    }

    #[test]
    fn stderr_is_the_journal_only_when_journal_stream_names_it() {
        // SAFETY: this test's process reads JOURNAL_STREAM only here; no other thread sets it.
        let st = nix::sys::stat::fstat(std::io::stderr()).unwrap();
        unsafe { std::env::set_var("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino)) };
        assert!(stderr_is_journal());
        unsafe { std::env::set_var("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino + 1)) };
        assert!(!stderr_is_journal());
        unsafe { std::env::set_var("JOURNAL_STREAM", "garbage") };
        assert!(!stderr_is_journal());
        unsafe { std::env::remove_var("JOURNAL_STREAM") };
        assert!(!stderr_is_journal());
    }
}
