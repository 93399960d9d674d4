//! Calendar schedules: systemd `OnCalendar=` expressions and cron translation.
//!
//! This module owns everything fleetwright knows about *when* a timer fires:
//!
//! * [`parse_calendar`] (`parse.rs`) parses and validates an `OnCalendar=` expression using
//!   the grammar and acceptance rules of systemd 252 (the "Calendar Events"
//!   section of [systemd.time(7)]). Errors are one-line messages that say what
//!   is wrong and how to fix it, suitable for showing next to a config file.
//! * [`CalendarSpec::normalized`] (here) renders the canonical form exactly as
//!   `systemd-analyze calendar` prints it on its `Normalized form:` line, so
//!   desired and deployed timers can be compared without spurious diffs.
//! * [`CalendarSpec::next_elapse`] and [`CalendarSpec::next_elapse_in`] (`eval.rs`) compute
//!   the next firing time, in UTC or in the zones systemd evaluates the expression in. They
//!   mirror systemd's own search (`find_next()` in `calendarspec.c`), quirks
//!   included, so previews shown to operators match what the host will do.
//! * [`cron_to_calendar`] and [`cron_to_calendars`] (`cron.rs`) translate classic 5-field
//!   cron schedules into `OnCalendar=` expressions with the same firing times.
//!
//! The module is pure: it spawns nothing and reads no file, clock or environment. Which zones
//! the host has installed is the caller's [`ZoneLookup`]; the zones themselves are jiff
//! `TimeZone`s the caller resolved. Its unit tests use fixed lists of zones; the comparisons
//! with the host's `systemd-analyze` and tzdata are in `tests/it/calendar.rs`.
//!
//! # Deliberate limitations
//!
//! * Fractional seconds (`*:*:00.5`) are valid for systemd but rejected here:
//!   fleetwright schedules in whole seconds and [`CalendarSpec::next_elapse`]
//!   returns whole seconds.
//! * [`CalendarSpec::next_elapse`] only evaluates in UTC. Expressions without a
//!   timezone are treated as UTC (systemd would use the host's zone); a timezone
//!   suffix is accepted for parsing and normalization, but only UTC and its
//!   fixed-offset-zero aliases (`Etc/UTC`, `GMT`, ...) can be evaluated.
//!   [`CalendarSpec::next_elapse_in`] evaluates in the zones it is given.
//! * Timezone names are validated like systemd does, by asking whether the host has the zone
//!   installed: the caller's [`ZoneLookup`] (the host's looks for a `TZif` file under
//!   `/usr/share/zoneinfo`; [`NoDatabase`] accepts only `Area/Location`-style names and UTC
//!   aliases). systemd also accepts the host's own zone abbreviation (e.g. `CET` on a Berlin
//!   host); that only works here when the abbreviation is also an installed zone.
//! * Control characters (including tabs) are always rejected, even in the few
//!   spots where systemd's use of `strtoul()` would skip them (`@\t5`).
//!
//! [systemd.time(7)]: https://www.freedesktop.org/software/systemd/man/systemd.time.html#Calendar%20Events

use std::fmt;
use std::fmt::Write as _;

mod cron;
mod eval;
mod parse;
#[cfg(test)]
mod testkit;

pub use cron::{cron_to_calendar, cron_to_calendars};
pub use eval::SearchEnd;
pub use parse::parse_calendar;

/// systemd refuses years outside this window (`MIN_YEAR`/`MAX_YEAR` in
/// `calendarspec.c`); the upper bound also stops searches for impossible
/// dates such as `*-02-30`.
const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 2199;

const WEEKDAY_ABBREVIATIONS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Bit mask with all seven weekday bits (bit 0 = Monday ... bit 6 = Sunday).
const ALL_WEEKDAYS: u8 = 0x7f;

/// Is `zone` UTC under another name (`Etc/UTC`, `GMT`, …)?
pub fn is_utc_alias(zone: &str) -> bool {
    UTC_ALIASES.contains(&zone)
}

/// Zones with a constant zero offset: evaluating in them is evaluating in UTC.
const UTC_ALIASES: [&str; 18] = [
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "GMT",
    "Etc/GMT",
    "GMT0",
    "GMT+0",
    "GMT-0",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Greenwich",
    "Etc/Greenwich",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
];

// ---------------------------------------------------------------------------
// Data model
// ---------------------------------------------------------------------------

/// One entry of a comma-separated list: `start`, `start..stop`, `start/repeat`
/// or `start..stop/repeat`. Field order matters: the derived `Ord` sorts the
/// way systemd's `component_compare()` does (start, then stop with "no stop"
/// first, then repeat), which decides the order in the normalized form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Component {
    start: i64,
    stop: Option<i64>,
    /// 0 means "no repetition".
    repeat: i64,
}

impl Component {
    fn single(value: i64) -> Self {
        Component { start: value, stop: None, repeat: 0 }
    }
}

/// The seconds chain systemd stores for `*`: "0, then every second".
const EVERY_SECOND: Component = Component { start: 0, stop: None, repeat: 1 };

/// Where an expression is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Zone {
    /// No suffix: the host's local time. fleetwright evaluates it as UTC.
    Local,
    /// A ` UTC` suffix (matched case-insensitively, printed as `UTC`).
    Utc,
    /// A zoneinfo name such as `Europe/Berlin`, kept exactly as written.
    Named(String),
}

/// A parsed OnCalendar expression (systemd.time(7) "Calendar Events").
///
/// Holds the weekday set, the year/month/day lists (with `~` meaning "counted
/// back from the end of the month"), the hour/minute/second lists (whole
/// seconds only) and the optional timezone suffix. An empty list means `*`.
/// Values are stored normalized (sorted, de-duplicated, two-digit years
/// expanded), so two expressions with the same normalized form compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarSpec {
    /// `None` = any weekday; otherwise bit 0 = Monday ... bit 6 = Sunday.
    weekdays: Option<u8>,
    year: Vec<Component>,
    month: Vec<Component>,
    day: Vec<Component>,
    /// `~` between month and day: day values count back from the month's end.
    end_of_month: bool,
    hour: Vec<Component>,
    minute: Vec<Component>,
    /// Never empty: systemd stores `*` seconds as [`EVERY_SECOND`].
    second: Vec<Component>,
    zone: Zone,
}

impl CalendarSpec {
    /// Everything `*`, which is what systemd starts from before parsing.
    fn any() -> Self {
        CalendarSpec {
            weekdays: None,
            year: Vec::new(),
            month: Vec::new(),
            day: Vec::new(),
            end_of_month: false,
            hour: Vec::new(),
            minute: Vec::new(),
            second: vec![EVERY_SECOND],
            zone: Zone::Local,
        }
    }

    /// The timezone suffix, if any (`"UTC"` for a ` UTC` suffix).
    pub fn timezone(&self) -> Option<&str> {
        match &self.zone {
            Zone::Local => None,
            Zone::Utc => Some("UTC"),
            Zone::Named(name) => Some(name),
        }
    }

    /// The normalized form as `systemd-analyze calendar` prints it on its "Normalized form:" line.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        if let Some(bits) = self.weekdays {
            out.push_str(&format_weekdays(bits));
            out.push(' ');
        }
        format_chain(&mut out, &self.year, 4);
        out.push('-');
        format_chain(&mut out, &self.month, 2);
        out.push(if self.end_of_month { '~' } else { '-' });
        format_chain(&mut out, &self.day, 2);
        out.push(' ');
        format_chain(&mut out, &self.hour, 2);
        out.push(':');
        format_chain(&mut out, &self.minute, 2);
        out.push(':');
        // systemd prints the whole seconds list as `*` as soon as one entry
        // covers every second (`normalize` has already dropped the others).
        if self.second.contains(&EVERY_SECOND) {
            out.push('*');
        } else {
            format_chain(&mut out, &self.second, 2);
        }
        match &self.zone {
            Zone::Local => {}
            Zone::Utc => out.push_str(" UTC"),
            Zone::Named(name) => {
                out.push(' ');
                out.push_str(name);
            }
        }
        out
    }
}

impl fmt::Display for CalendarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

/// Which time-zone names the host has installed. systemd accepts a zone suffix only when its
/// zoneinfo database has the zone (`timezone_is_valid()`), so whether an expression is valid
/// depends on the host: the answer is passed in (the host layer reads its tzdata; tests and
/// `validate` elsewhere may pass a list), and this module stays pure.
pub trait ZoneLookup: Sync {
    /// Is `name` (already known to be made of zone-name characters) an installed zone?
    fn is_installed(&self, name: &str) -> bool;
}

/// A fixed list of installed zones.
impl<T: AsRef<str> + Sync> ZoneLookup for [T] {
    fn is_installed(&self, name: &str) -> bool {
        self.iter().any(|z| z.as_ref() == name)
    }
}

/// A fixed list of installed zones as an array, which (unlike a slice) is sized, so that
/// `&["Europe/Berlin", "CET"]` is a `&dyn ZoneLookup`.
impl<T: AsRef<str> + Sync, const N: usize> ZoneLookup for [T; N] {
    fn is_installed(&self, name: &str) -> bool {
        self[..].is_installed(name)
    }
}

/// The answer without a database to ask: UTC aliases and `Area/Location` names, which cannot
/// be mistaken for a date, time or weekday.
pub struct NoDatabase;

impl ZoneLookup for NoDatabase {
    fn is_installed(&self, name: &str) -> bool {
        UTC_ALIASES.contains(&name) || (name.contains('/') && name.starts_with(|c: char| c.is_ascii_uppercase()))
    }
}

/// systemd's character rules for a zone name, checked before any lookup: a conservative set
/// that also rules out path traversal, so a lookup may join the name to a directory.
pub fn zone_name_acceptable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !(name.starts_with('/') || name.ends_with('/') || name.contains("//"))
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/'))
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// systemd's `format_chain()`: zero-padded values, `a..b` for ranges, `/n`
/// for repetitions (omitted for plain ranges, whose step is 1).
fn format_chain(out: &mut String, chain: &[Component], width: usize) {
    if chain.is_empty() {
        out.push('*');
        return;
    }
    for (i, c) in chain.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{:0width$}", c.start);
        if let Some(stop) = c.stop {
            let _ = write!(out, "..{stop:0width$}");
        }
        if c.repeat > 0 && !(c.stop.is_some() && c.repeat == 1) {
            let _ = write!(out, "/{}", c.repeat);
        }
    }
}

/// systemd's `format_weekdays()`: runs of three or more days become `A..C`,
/// runs of two are written `A,B`.
fn format_weekdays(bits: u8) -> String {
    let mut out = String::new();
    let mut run_start: Option<usize> = None;
    for x in 0..=7 {
        let set = x < 7 && bits & (1 << x) != 0;
        match (set, run_start) {
            (true, None) => {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(WEEKDAY_ABBREVIATIONS[x]);
                run_start = Some(x);
            }
            (false, Some(start)) => {
                if x > start + 1 {
                    out.push_str(if x > start + 2 { ".." } else { "," });
                    out.push_str(WEEKDAY_ABBREVIATIONS[x - 1]);
                }
                run_start = None;
            }
            _ => {}
        }
    }
    out
}

/// At most 40 characters of user input for error messages.
fn snippet(s: &str) -> String {
    if s.len() <= 40 { s.to_string() } else { format!("{}...", &s[..40]) }
}

/// The run of ASCII letters at the start of `s` (for "unknown word" errors).
fn leading_word(s: &str) -> &str {
    let n = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    &s[..n.min(40)]
}

#[cfg(test)]
mod tests {
    use super::testkit::{BASE, Rng, parse};
    use super::*;

    fn norm(expr: &str) -> String {
        parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}")).normalized()
    }

    /// Expected values printed by systemd 252.
    #[test]
    fn normalized_forms() {
        let cases = [
            ("minutely", "*-*-* *:*:00"),
            ("hourly", "*-*-* *:00:00"),
            ("daily", "*-*-* 00:00:00"),
            ("weekly", "Mon *-*-* 00:00:00"),
            ("monthly", "*-*-01 00:00:00"),
            ("yearly", "*-01-01 00:00:00"),
            ("annually", "*-01-01 00:00:00"),
            ("anually", "*-01-01 00:00:00"),
            ("quarterly", "*-01,04,07,10-01 00:00:00"),
            ("semiannually", "*-01,07-01 00:00:00"),
            ("semi-annually", "*-01,07-01 00:00:00"),
            ("biannually", "*-01,07-01 00:00:00"),
            ("bi-annually", "*-01,07-01 00:00:00"),
            ("DAILY", "*-*-* 00:00:00"),
            ("Weekly", "Mon *-*-* 00:00:00"),
            ("*-*-* 03:00:00", "*-*-* 03:00:00"),
            ("*:0/30", "*-*-* *:00/30:00"),
            ("*:00/15", "*-*-* *:00/15:00"),
            ("*:*", "*-*-* *:*:00"),
            ("Mon *-*-* 09:00", "Mon *-*-* 09:00:00"),
            ("*-*-1,15 12:00", "*-*-01,15 12:00:00"),
            ("*-02~03", "*-02~03 00:00:00"),
            ("*~03", "*-*~03 00:00:00"),
            ("*-02~*", "*-02-* 00:00:00"),
            ("2026-11-23", "2026-11-23 00:00:00"),
            ("26-11-23 4:5:6", "2026-11-23 04:05:06"),
            ("Mon..Fri", "Mon..Fri *-*-* 00:00:00"),
            ("Sat,Sun", "Sat,Sun *-*-* 00:00:00"),
            ("Sat,Sun 10:00", "Sat,Sun *-*-* 10:00:00"),
            ("Mon-Wed,Fri", "Mon..Wed,Fri *-*-* 00:00:00"),
            ("monday..friday", "Mon..Fri *-*-* 00:00:00"),
            ("Monday,Tuesday,Wednesday", "Mon..Wed *-*-* 00:00:00"),
            ("Mon,Tue,Thu", "Mon,Tue,Thu *-*-* 00:00:00"),
            ("Mon..Mon", "Mon *-*-* 00:00:00"),
            ("mon,tue,wed,thu,fri,sat,sun", "*-*-* 00:00:00"),
            ("Mon,Tue, 12:00", "Mon,Tue *-*-* 12:00:00"),
            ("Mon  12:00", "Mon *-*-* 12:00:00"),
            ("12:00", "*-*-* 12:00:00"),
            ("4:5", "*-*-* 04:05:00"),
            ("*:*:*", "*-*-* *:*:*"),
            ("*:*:0/1", "*-*-* *:*:*"),
            ("*:*:0/1,5", "*-*-* *:*:*"),
            ("*:*:5..7,0/1", "*-*-* *:*:*"),
            ("*:*:05..05/1", "*-*-* *:*:05"),
            ("*-*-* 0/1:0/1:0/1", "*-*-* 00/1:00/1:*"),
            ("*-*-* 0..23/5:00", "*-*-* 00..20/5:00:00"),
            ("1..5/10:00", "*-*-* 01:00:00"),
            ("1..3,2..5:00", "*-*-* 01..03,02..05:00:00"),
            ("*-*-* 5,3,1,3:00", "*-*-* 01,03,05:00:00"),
            ("*-*-* 05..05:00", "*-*-* 05:00:00"),
            ("*-*~1..7/2", "*-*~01..07/2 00:00:00"),
            ("*-*~5/2", "*-*~05/2 00:00:00"),
            ("2023..2025-*-* 12:00", "2023..2025-*-* 12:00:00"),
            ("*-1/2-1 00:00", "*-01/2-01 00:00:00"),
            ("@1700000000", "2023-11-14 22:13:20 UTC"),
            ("@1700000000 Europe/Berlin", "2023-11-14 22:13:20 UTC"),
            ("daily UTC", "*-*-* 00:00:00 UTC"),
            ("daily utc", "*-*-* 00:00:00 UTC"),
            ("Mon *-*-* 09:00 UTC", "Mon *-*-* 09:00:00 UTC"),
            ("*-*-* 03:00:00 Europe/Berlin", "*-*-* 03:00:00 Europe/Berlin"),
            ("weekly Etc/UTC", "Mon *-*-* 00:00:00 Etc/UTC"),
            ("Fri *-*-13", "Fri *-*-13 00:00:00"),
            ("*-02-30", "*-02-30 00:00:00"),
            ("2199-12-31 23:59:59", "2199-12-31 23:59:59"),
        ];
        for (input, expected) in cases {
            assert_eq!(norm(input), expected, "normalized form of {input:?}");
            // The normalized form is a fixed point and parses to the same spec.
            assert_eq!(norm(expected), expected, "re-normalizing {expected:?}");
            assert_eq!(parse(expected), parse(input), "{input:?} vs {expected:?}");
        }
    }

    #[test]
    fn accessors_and_traits() {
        let spec = parse("Mon *-*-* 09:00 Europe/Berlin").unwrap();
        assert_eq!(spec.timezone(), Some("Europe/Berlin"));
        assert_eq!(spec.to_string(), "Mon *-*-* 09:00:00 Europe/Berlin");
        assert_eq!(parse("daily utc").unwrap().timezone(), Some("UTC"));
        assert_eq!(parse("daily").unwrap().timezone(), None);
        assert_eq!(parse("daily").unwrap(), parse("*-*-* 00:00:00").unwrap());
    }

    /// A zone suffix is accepted only when the lookup has the zone, and only a name of zone
    /// characters is ever looked up.
    #[test]
    fn zone_lookups_decide_suffixes() {
        let installed = &["Europe/Berlin", "CET"];
        let with = |lookup: &dyn ZoneLookup, expr: &str| parse_calendar(expr, lookup).map(|s| s.timezone().map(str::to_string));
        assert_eq!(with(installed, "daily CET"), Ok(Some("CET".into())));
        assert!(with(installed, "daily Europe/Paris").is_err(), "a zone not in the list");
        assert_eq!(with(installed, "daily UTC"), Ok(Some("UTC".into())), "UTC needs no lookup");
        // Without a database: UTC aliases and Area/Location names, never a bare word.
        assert_eq!(with(&NoDatabase, "daily Mars/Olympus"), Ok(Some("Mars/Olympus".into())));
        assert_eq!(with(&NoDatabase, "daily Etc/UTC"), Ok(Some("Etc/UTC".into())));
        assert_eq!(with(&NoDatabase, "daily GMT"), Ok(Some("GMT".into())));
        assert!(with(&NoDatabase, "daily CET").is_err());
        assert!(with(&NoDatabase, "daily lowercase/zone").is_err());

        /// Panics if asked: the name should have been refused before any lookup.
        struct Unasked;
        impl ZoneLookup for Unasked {
            fn is_installed(&self, name: &str) -> bool {
                panic!("{name:?} was looked up");
            }
        }
        for name in ["../../etc/passwd", "/etc/localtime", "Europe//Berlin", "Europe/", "a.b", "Ber lin"] {
            assert!(!zone_name_acceptable(name), "{name:?}");
        }
        assert!(!zone_name_acceptable(&"A".repeat(256)));
        assert!(zone_name_acceptable("America/Argentina/Buenos_Aires") && zone_name_acceptable("Etc/GMT+5"));
        assert!(parse_calendar("daily ../../etc/passwd", &Unasked).is_err());
        assert!(parse_calendar("daily Etc/..", &Unasked).is_err());
        assert!(is_utc_alias("Etc/Zulu") && !is_utc_alias("Europe/London"));
    }

    /// Checks every property that must hold for any input.
    fn exercise(input: &str) {
        if let Ok(spec) = parse(input) {
            let normalized = spec.normalized();
            let again = parse(&normalized).unwrap_or_else(|e| panic!("normalized {normalized:?} of {input:?} does not parse: {e}"));
            assert_eq!(again, spec, "round trip of {input:?} via {normalized:?}");
            for after in [i64::MIN, -1, 0, BASE, i64::MAX - 1, i64::MAX] {
                if let Some(next) = spec.next_elapse(after) {
                    assert!(next > after && next >= 0, "{input:?}: {after} -> {next}");
                }
            }
        }
        if let Ok(exprs) = cron_to_calendars(input) {
            for e in exprs {
                assert!(parse(&e).is_ok(), "cron {input:?} produced unparsable {e:?}");
            }
        }
        let _ = cron_to_calendar(input);
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let tokens = [
            "*",
            "-",
            "~",
            ":",
            ",",
            "..",
            ".",
            "/",
            " ",
            "  ",
            "0",
            "1",
            "7",
            "12",
            "23",
            "24",
            "29",
            "31",
            "59",
            "60",
            "69",
            "70",
            "99",
            "2024",
            "2199",
            "2200",
            "4294967296",
            "99999999999999999999",
            "Mon",
            "fri",
            "Sunday",
            "daily",
            "weekly",
            "UTC",
            "utc",
            "Europe/Berlin",
            "Etc/UTC",
            "@",
            "@1700000000",
            "-",
            "+",
            "L",
            "W",
            "#",
            "?",
            "jan",
            "@reboot",
            "@hourly",
            "\t",
            "\n",
            "\0",
            "é",
            "€",
        ];
        let mut accepted = 0;
        let cases = 40_000;
        for i in 0..cases {
            let input: String = if i % 2 == 0 {
                (0..rng.below(12)).map(|_| rng.pick(&tokens)).collect()
            } else {
                (0..rng.below(24))
                    .map(|_| match rng.below(10) {
                        0 => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
                        1 => (rng.below(32) as u8) as char,
                        _ => (b' ' + rng.below(95) as u8) as char,
                    })
                    .collect()
            };
            exercise(&input);
            accepted += usize::from(parse(&input).is_ok());
        }
        // The generator must reach the parser's accepting paths, not only its refusals.
        assert!(accepted > 50, "only {accepted} of {cases} random inputs parsed");
    }
}
