//! Calendar schedules: systemd `OnCalendar=` expressions and cron translation.
//!
//! This module owns everything fleetwright knows about *when* a timer fires:
//!
//! * [`parse_calendar`] parses and validates an `OnCalendar=` expression using
//!   the grammar and acceptance rules of systemd 252 (the "Calendar Events"
//!   section of [systemd.time(7)]). Errors are one-line messages that say what
//!   is wrong and how to fix it, suitable for showing next to a config file.
//! * [`CalendarSpec::normalized`] renders the canonical form exactly as
//!   `systemd-analyze calendar` prints it on its `Normalized form:` line, so
//!   desired and deployed timers can be compared without spurious diffs.
//! * [`CalendarSpec::next_elapse`] computes the next firing time in UTC. It
//!   mirrors systemd's own search (`find_next()` in `calendarspec.c`), quirks
//!   included, so previews shown to operators match what the host will do.
//! * [`cron_to_calendar`] and [`cron_to_calendars`] translate classic 5-field
//!   cron schedules into `OnCalendar=` expressions with the same firing times.
//!
//! The module is pure `std`: it never shells out. Its tests compare it against
//! `/usr/bin/systemd-analyze` when that binary is present.
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
//! * Timezone names are validated like systemd does, by looking for a `TZif`
//!   file under `/usr/share/zoneinfo`. If that directory is missing, only
//!   `Area/Location`-style names and UTC aliases are accepted. systemd also
//!   accepts the host's own zone abbreviation (e.g. `CET` on a Berlin host);
//!   that only works here when the abbreviation is also a zoneinfo file.
//! * Control characters (including tabs) are always rejected, even in the few
//!   spots where systemd's use of `strtoul()` would skip them (`@\t5`).
//!
//! [systemd.time(7)]: https://www.freedesktop.org/software/systemd/man/systemd.time.html#Calendar%20Events

use std::cmp::Ordering;
use std::fmt;
use std::fmt::Write as _;

/// systemd refuses years outside this window (`MIN_YEAR`/`MAX_YEAR` in
/// `calendarspec.c`); the upper bound also stops searches for impossible
/// dates such as `*-02-30`.
const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 2199;

/// systemd caps a comma-separated list at 241 entries (`CALENDARSPEC_COMPONENTS_MAX`
/// is checked against a zero-based nesting depth of 240).
const MAX_CHAIN_LEN: usize = 241;

/// systemd gives up on a search after this many loop iterations and reports
/// an error instead of an elapse (`MAX_CALENDAR_ITERATIONS`); we report `None`.
const MAX_SEARCH_ITERATIONS: u32 = 1000;

const USEC_PER_SEC: i64 = 1_000_000;

const WEEKDAY_ABBREVIATIONS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Weekday names in the order systemd tries them: the long name must be
/// tried before its abbreviation, because matching is by prefix.
const WEEKDAY_NAMES: [(&str, u8); 14] = [
    ("monday", 0),
    ("mon", 0),
    ("tuesday", 1),
    ("tue", 1),
    ("wednesday", 2),
    ("wed", 2),
    ("thursday", 3),
    ("thu", 3),
    ("friday", 4),
    ("fri", 4),
    ("saturday", 5),
    ("sat", 5),
    ("sunday", 6),
    ("sun", 6),
];

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

/// The calendar field a list belongs to; used for bounds and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Year => "year",
            Field::Month => "month",
            Field::Day => "day",
            Field::Hour => "hour",
            Field::Minute => "minute",
            Field::Second => "second",
        }
    }

    fn bounds(self) -> (i64, i64) {
        match self {
            Field::Year => (MIN_YEAR, MAX_YEAR),
            Field::Month => (1, 12),
            Field::Day => (1, 31),
            Field::Hour => (0, 23),
            Field::Minute | Field::Second => (0, 59),
        }
    }
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

    /// Next elapse strictly after `after`, given as a naive UTC timestamp (seconds since epoch);
    /// treat the expression as UTC (ignore/accept a timezone suffix of UTC only for computing;
    /// others may return None). Returns seconds since epoch, or None if it never elapses again.
    ///
    /// Details: expressions without a timezone are evaluated as UTC; named
    /// zones other than UTC aliases yield `None`. Like systemd, the search
    /// stops at the end of year 2199 and gives up (returning `None`) after
    /// 1000 steps for pathological expressions. Timestamps before 1970 are
    /// treated as 1970-01-01T00:00:00Z, as systemd cannot represent them.
    pub fn next_elapse(&self, after_unix: i64) -> Option<i64> {
        match &self.zone {
            Zone::Local | Zone::Utc => {}
            Zone::Named(name) if UTC_ALIASES.contains(&name.as_str()) => {}
            Zone::Named(_) => return None,
        }
        self.search(after_unix).ok()
    }

    /// Next elapse strictly after `after_unix`, evaluated where systemd evaluates it: in the
    /// host's zone `local` when the expression names none, in `named` (the zone it names,
    /// resolved by the caller) when it does, in UTC for ` UTC` and its aliases. None when the
    /// expression names a zone and `named` is not given, or when it never elapses again.
    ///
    /// The search runs on civil (wall-clock) time as systemd's does on `localtime()`'s
    /// result; a civil time is turned back into an instant as `mktime()` does, with the
    /// "compatible" rule: a time in a spring-forward gap moves forward by the gap, a time in
    /// a fall-back fold is its first occurrence.
    pub fn next_elapse_in(&self, after_unix: i64, local: &jiff::tz::TimeZone, named: Option<&jiff::tz::TimeZone>) -> Option<i64> {
        let tz = match &self.zone {
            Zone::Utc => return self.next_elapse(after_unix),
            Zone::Named(name) if UTC_ALIASES.contains(&name.as_str()) => return self.next_elapse(after_unix),
            Zone::Local => local,
            Zone::Named(_) => named?,
        };
        let offset = |t: i64| jiff::Timestamp::from_second(t).map(|ts| i64::from(tz.to_offset(ts).seconds())).unwrap_or(0);
        // The instant of a civil time; None in a spring-forward gap (such a time does not
        // exist, and systemd skips it: mktime() moves it, and the moved time no longer
        // matches the expression).
        let real = |naive: i64| -> Option<Option<i64>> {
            let dt = jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::from_second(naive).ok()?);
            let amb = tz.to_ambiguous_timestamp(dt);
            if matches!(amb.offset(), jiff::tz::AmbiguousOffset::Gap { .. }) {
                return Some(None);
            }
            Some(Some(amb.compatible().ok()?.as_second()))
        };
        let mut naive_after = after_unix.max(0) + offset(after_unix.max(0));
        // A civil time found may not exist (a gap) or map to an instant not after
        // `after_unix` (a fold repeats an hour): search on from it. A gap is at most a few
        // hours: a per-second expression needs a few thousand steps through it.
        for _ in 0..10_000 {
            let naive = self.search(naive_after).ok()?;
            match real(naive)? {
                Some(t) if t > after_unix => return Some(t),
                _ => naive_after = naive,
            }
        }
        None
    }

    /// [`CalendarSpec::next_elapse`] with the reason a search found nothing.
    fn search(&self, after_unix: i64) -> Result<i64, SearchEnd> {
        // Every elapse is >= 0 because years start at 1970; clamping also
        // keeps the date arithmetic far away from overflow.
        let after = after_unix.max(-1);
        if after >= Tm::first_second_after_max_year() {
            return Err(SearchEnd::Never);
        }
        // systemd searches from `after + 1µs`, not from `after + 1s`: the
        // search state starts inside the second `after`, which matters when
        // carrying a minute or hour over a day boundary (see `within_bounds`).
        self.find_next(Tm::from_unix(after), 1).map(Tm::to_unix)
    }

    /// The search loop of systemd's `find_next()`: fix the fields from the
    /// largest to the smallest; whenever a field has no further match, bump
    /// the next larger field and start over. We keep its exact structure (and
    /// its normalize-and-retry steps) because that is what decides behaviour
    /// for impossible dates, `~` days, carries and the iteration cap.
    /// `usec` is the sub-second part of the start time, which systemd keeps
    /// separately and compares against the seconds list in microseconds.
    fn find_next(&self, mut c: Tm, mut usec: i64) -> Result<Tm, SearchEnd> {
        for _ in 0..MAX_SEARCH_ITERATIONS {
            c = c.normalized();

            let (year, changed) = find_matching(&self.year, None, 1, c.year).ok_or(SearchEnd::Never)?;
            c.year = year;
            if changed {
                c.reset_below_year();
                usec = 0;
            }
            if within_bounds(&mut c) != Bounds::Same {
                return Err(SearchEnd::Never);
            }

            let step = match find_matching(&self.month, None, 1, c.mon + 1) {
                None => Bounds::Bad,
                Some((month, changed)) => {
                    c.mon = month - 1;
                    if changed {
                        c.reset_below_month();
                        usec = 0;
                    }
                    within_bounds(&mut c)
                }
            };
            match step {
                Bounds::Bad => {
                    c.year += 1;
                    c.reset_below_year();
                    usec = 0;
                    continue;
                }
                Bounds::Moved => continue,
                Bounds::Same => {}
            }

            let eom = self.end_of_month.then_some((c.year, c.mon));
            let step = match find_matching(&self.day, eom, 1, c.mday) {
                None => Bounds::Bad,
                Some((day, changed)) => {
                    c.mday = day;
                    if changed {
                        c.reset_below_day();
                        usec = 0;
                    }
                    within_bounds(&mut c)
                }
            };
            match step {
                Bounds::Bad => {
                    c.mon += 1;
                    c.reset_below_month();
                    usec = 0;
                    continue;
                }
                Bounds::Moved => continue,
                Bounds::Same => {}
            }

            if self.weekdays.is_some_and(|bits| bits & (1 << c.weekday_from_monday()) == 0) {
                c.mday += 1;
                c.reset_below_day();
                usec = 0;
                continue;
            }

            let step = match find_matching(&self.hour, None, 1, c.hour) {
                None => Bounds::Bad,
                Some((hour, changed)) => {
                    c.hour = hour;
                    if changed {
                        c.min = 0;
                        c.sec = 0;
                        usec = 0;
                    }
                    within_bounds(&mut c)
                }
            };
            match step {
                Bounds::Bad => {
                    c.mday += 1;
                    c.reset_below_day();
                    usec = 0;
                    continue;
                }
                Bounds::Moved => continue,
                Bounds::Same => {}
            }

            let step = match find_matching(&self.minute, None, 1, c.min) {
                None => Bounds::Bad,
                Some((minute, changed)) => {
                    c.min = minute;
                    if changed {
                        c.sec = 0;
                        usec = 0;
                    }
                    within_bounds(&mut c)
                }
            };
            match step {
                Bounds::Bad => {
                    c.hour += 1;
                    c.min = 0;
                    c.sec = 0;
                    usec = 0;
                    continue;
                }
                Bounds::Moved => continue,
                Bounds::Same => {}
            }

            let step = match find_matching(&self.second, None, USEC_PER_SEC, c.sec * USEC_PER_SEC + usec) {
                None => Bounds::Bad,
                Some((micros, _)) => {
                    c.sec = micros / USEC_PER_SEC;
                    usec = micros % USEC_PER_SEC;
                    within_bounds(&mut c)
                }
            };
            match step {
                Bounds::Bad => {
                    c.min += 1;
                    c.sec = 0;
                    usec = 0;
                    continue;
                }
                Bounds::Moved => continue,
                // All list values are whole seconds, so a match has usec == 0.
                Bounds::Same => return Ok(c),
            }
        }
        Err(SearchEnd::GaveUp)
    }

    /// Applies systemd's `calendar_spec_normalize()`: drop no-op weekday sets
    /// and `~` without a day, expand two-digit years, and sort/de-duplicate
    /// every list.
    fn normalize(&mut self) {
        if self.zone == Zone::Named("UTC".to_string()) {
            self.zone = Zone::Utc;
        }
        if self.weekdays.is_some_and(|bits| bits == 0 || bits >= ALL_WEEKDAYS) {
            self.weekdays = None;
        }
        if self.end_of_month && self.day.is_empty() {
            self.end_of_month = false;
        }
        for c in &mut self.year {
            c.start = expand_two_digit_year(c.start);
            c.stop = c.stop.map(expand_two_digit_year);
        }
        for chain in [&mut self.year, &mut self.month, &mut self.day, &mut self.hour, &mut self.minute, &mut self.second] {
            normalize_chain(chain);
        }
    }

    /// A seconds list containing "every second" matches every second, and
    /// systemd prints it as `*`; store it that way so that equal normalized
    /// forms mean equal specs. Runs after validation, because systemd still
    /// rejects invalid entries next to it (`*:*:0/1,59/1`).
    fn collapse_every_second(&mut self) {
        if self.second.contains(&EVERY_SECOND) {
            self.second = vec![EVERY_SECOND];
        }
    }

    /// Applies systemd's `calendar_spec_valid()` with explanatory messages.
    fn validate(&self) -> Result<(), String> {
        validate_chain(&self.year, Field::Year, false)?;
        validate_chain(&self.month, Field::Month, false)?;
        validate_chain(&self.day, Field::Day, self.end_of_month)?;
        validate_chain(&self.hour, Field::Hour, false)?;
        validate_chain(&self.minute, Field::Minute, false)?;
        validate_chain(&self.second, Field::Second, false)
    }
}

impl fmt::Display for CalendarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parse an OnCalendar expression; Err carries a one-line human message saying what is wrong
/// and how to fix it (e.g. "hour 25 is out of range 0..23").
///
/// Accepts what systemd 252 accepts (minus the limitations listed in the
/// module docs): shorthands (`daily`, `weekly`, `quarterly`, ...), an
/// optional weekday list, an optional `[year-]month-day` or `month~day`
/// date, an optional `hh:mm[:ss]` time, `@epoch` timestamps, and an optional
/// trailing timezone.
pub fn parse_calendar(expr: &str, zones: &dyn ZoneLookup) -> Result<CalendarSpec, String> {
    check_characters(expr)?;
    let (body, zone) = split_timezone(expr, zones);
    if body.is_empty() {
        // Unreachable after `check_characters` (it refuses leading spaces),
        // but an empty body must never reach the parsers as "all defaults".
        return Err("missing date or time before the timezone".into());
    }
    let mut spec = match parse_shorthand(body) {
        Some(spec) => spec,
        None => parse_full(body)?,
    };
    // An @timestamp is always UTC, whatever suffix follows it (as in systemd).
    if spec.zone == Zone::Local {
        spec.zone = zone;
    }
    spec.normalize();
    spec.validate()?;
    spec.collapse_every_second();
    Ok(spec)
}

/// Rejects input that can never be valid before any real parsing, so the
/// messages can be specific (and so everything after this can index bytes).
fn check_characters(expr: &str) -> Result<(), String> {
    if expr.is_empty() {
        return Err("calendar expression is empty; write e.g. 'daily' or '*-*-* 03:00:00'".into());
    }
    if let Some((i, c)) = expr.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!("calendar expression contains the control character '{}' at byte {i}; it must be a single line of plain text", c.escape_debug()));
    }
    if let Some((i, c)) = expr.char_indices().find(|(_, c)| !c.is_ascii()) {
        return Err(format!("calendar expression contains the non-ASCII character '{c}' at byte {i}; only ASCII is allowed"));
    }
    if expr.trim().is_empty() {
        return Err("calendar expression is blank; write e.g. 'daily' or '*-*-* 03:00:00'".into());
    }
    if expr.starts_with(' ') || expr.ends_with(' ') {
        return Err(format!("remove the leading/trailing spaces from '{}'", snippet(expr.trim())));
    }
    Ok(())
}

/// Splits off a trailing timezone the way systemd does: first a literal
/// ` UTC` (any case), otherwise the last space-separated word if it names an
/// installed zone. Anything else stays in the body and fails to parse there.
fn split_timezone<'e>(expr: &'e str, zones: &dyn ZoneLookup) -> (&'e str, Zone) {
    let n = expr.len();
    if n >= 4 && expr[n - 4..].eq_ignore_ascii_case(" UTC") {
        return (&expr[..n - 4], Zone::Utc);
    }
    if let Some(i) = expr.rfind(' ') {
        let name = &expr[i + 1..];
        if timezone_is_valid(name, zones) {
            return (&expr[..i], Zone::Named(name.to_string()));
        }
    }
    (expr, Zone::Local)
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

/// systemd's `timezone_is_valid()`: `UTC`, or an acceptable name the host has installed.
fn timezone_is_valid(name: &str, zones: &dyn ZoneLookup) -> bool {
    name == "UTC" || (zone_name_acceptable(name) && zones.is_installed(name))
}

/// The named shorthands of systemd.time(7), matched case-insensitively.
fn parse_shorthand(body: &str) -> Option<CalendarSpec> {
    let zero = || vec![Component::single(0)];
    let mut spec = CalendarSpec::any();
    spec.second = zero();
    let lower = body.to_ascii_lowercase();
    let midnight = |spec: &mut CalendarSpec| {
        spec.hour = zero();
        spec.minute = zero();
    };
    match lower.as_str() {
        "minutely" => {}
        "hourly" => spec.minute = zero(),
        "daily" => midnight(&mut spec),
        "weekly" => {
            spec.weekdays = Some(1); // Monday
            midnight(&mut spec);
        }
        "monthly" => {
            spec.day = vec![Component::single(1)];
            midnight(&mut spec);
        }
        // "anually" is a misspelling systemd keeps for compatibility.
        "yearly" | "annually" | "anually" => {
            spec.month = vec![Component::single(1)];
            spec.day = vec![Component::single(1)];
            midnight(&mut spec);
        }
        "quarterly" => {
            spec.month = [1, 4, 7, 10].into_iter().map(Component::single).collect();
            spec.day = vec![Component::single(1)];
            midnight(&mut spec);
        }
        "semiannually" | "semi-annually" | "biannually" | "bi-annually" => {
            spec.month = [1, 7].into_iter().map(Component::single).collect();
            spec.day = vec![Component::single(1)];
            midnight(&mut spec);
        }
        _ => return None,
    }
    Some(spec)
}

/// `[weekdays] [date] [time]` or `[weekdays] @timestamp`.
fn parse_full(body: &str) -> Result<CalendarSpec, String> {
    let mut spec = CalendarSpec::any();
    let rest = parse_weekdays(body, &mut spec)?;
    let rest = match parse_date(rest, &mut spec)? {
        AfterDate::Timestamp(rest) => {
            if !rest.is_empty() {
                return Err(format!("unexpected '{}' after the @timestamp; a timestamp stands alone (only a timezone may follow)", snippet(rest)));
            }
            rest
        }
        AfterDate::Time(rest) => parse_time(rest, &mut spec)?,
    };
    debug_assert!(rest.is_empty());
    Ok(spec)
}

/// A weekday list such as `Mon..Fri`, `Sat,Sun` or the legacy `Mon-Fri`,
/// followed by spaces. Returns the rest of the input.
fn parse_weekdays<'a>(input: &'a str, spec: &mut CalendarSpec) -> Result<&'a str, String> {
    let mut p = input;
    let mut bits: u8 = 0;
    let mut range_start: Option<u8> = None;
    let mut first = true;
    loop {
        let found = WEEKDAY_NAMES.iter().find(|(name, _)| p.len() >= name.len() && p[..name.len()].eq_ignore_ascii_case(name));
        let Some(&(name, day)) = found else {
            if first {
                // No weekday at all: the expression starts with the date.
                return Ok(p);
            }
            let word = leading_word(p);
            return Err(if word.is_empty() {
                format!("expected a weekday name after '{}'", snippet(&input[..input.len() - p.len()]))
            } else {
                format!("unknown weekday '{word}'; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or their full names")
            });
        };
        match p.as_bytes().get(name.len()) {
            None | Some(b'-' | b'.' | b',' | b' ') => {}
            Some(c) if c.is_ascii_alphanumeric() => {
                return Err(format!("unknown weekday '{}'; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or their full names", leading_word(p)));
            }
            Some(&c) => {
                return Err(format!(
                    "unexpected '{}' after weekday '{}'; separate weekdays with ',' or '..' and put a space before the date/time",
                    c as char,
                    &p[..name.len()]
                ));
            }
        }
        bits |= 1 << day;
        if let Some(from) = range_start {
            if from > day {
                return Err(format!(
                    "weekday range {}..{} runs backwards; weeks start on Monday, so write {}",
                    WEEKDAY_ABBREVIATIONS[from as usize],
                    WEEKDAY_ABBREVIATIONS[day as usize],
                    format_weekdays(!((1u8 << from) - 1) & ALL_WEEKDAYS | ((2u8 << day) - 1))
                ));
            }
            for d in from + 1..day {
                bits |= 1 << d;
            }
        }
        p = &p[name.len()..];

        if p.is_empty() {
            break;
        }
        if p.starts_with(' ') {
            p = p.trim_start_matches(' ');
            break;
        }
        if p.starts_with('.') || p.starts_with('-') {
            if range_start.is_some() {
                return Err("a weekday range can only have two ends; write e.g. Mon..Wed,Fri..Sun".into());
            }
            if p.starts_with('.') {
                if !p.starts_with("..") {
                    return Err("weekday ranges are written with '..', e.g. Mon..Fri".into());
                }
                p = &p[2..];
            } else {
                // "Mon-Fri" is accepted for backwards compatibility.
                p = &p[1..];
            }
            range_start = Some(day);
        } else if let Some(rest) = p.strip_prefix(',') {
            range_start = None;
            p = rest;
        }
        // A trailing comma is fine ("Mon,Tue, 12:00"), an open range is not.
        if p.is_empty() || p.starts_with(' ') {
            if range_start.is_some() {
                return Err(format!(
                    "weekday range starting at {} has no end; write e.g. {}..Fri",
                    WEEKDAY_ABBREVIATIONS[day as usize], WEEKDAY_ABBREVIATIONS[day as usize]
                ));
            }
            p = p.trim_start_matches(' ');
            break;
        }
        first = false;
    }
    spec.weekdays = Some(bits);
    Ok(p)
}

/// What follows a successfully parsed (possibly absent) date.
enum AfterDate<'a> {
    /// An `@timestamp` was parsed; no time may follow.
    Timestamp(&'a str),
    /// Continue with the time part.
    Time(&'a str),
}

/// `year-month-day`, `month-day`, `month~day`, `year-month~day` or
/// `@timestamp`. If the first list is followed by `:` it was an hour, so the
/// input is handed back untouched for the time parser, as systemd does.
fn parse_date<'a>(input: &'a str, spec: &mut CalendarSpec) -> Result<AfterDate<'a>, String> {
    if input.is_empty() {
        return Ok(AfterDate::Time(input));
    }
    if let Some(ts) = input.strip_prefix('@') {
        return parse_timestamp(ts, spec);
    }
    if input.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("unknown weekday or keyword '{}'; expected e.g. 'daily', 'Mon..Fri 09:00' or '*-*-* 03:00:00'", leading_word(input)));
    }
    let (first, t) = parse_chain(input, Field::Year)?;
    if t.is_empty() || t.starts_with(':') {
        return Ok(AfterDate::Time(input));
    }
    let mut end_of_month = false;
    let t = date_separator(input, t, &mut end_of_month)?;
    let (second, t) = parse_chain(t, Field::Month)?;
    if t.is_empty() || t.starts_with(' ') {
        spec.month = first;
        spec.day = second;
        spec.end_of_month = end_of_month;
        return Ok(AfterDate::Time(t.trim_start_matches(' ')));
    }
    if end_of_month {
        return Err(format!("'~' must sit between month and day (e.g. '*-02~03' for the third-last day of February), near '{}'", snippet(input)));
    }
    let t = date_separator(input, t, &mut end_of_month)?;
    let (third, t) = parse_chain(t, Field::Day)?;
    if !(t.is_empty() || t.starts_with(' ')) {
        return Err(format!("unexpected '{}' after the date '{}'; put a space between date and time", snippet(t), &input[..input.len() - t.len()]));
    }
    spec.year = first;
    spec.month = second;
    spec.day = third;
    spec.end_of_month = end_of_month;
    Ok(AfterDate::Time(t.trim_start_matches(' ')))
}

/// Consumes the `-` or `~` between two date parts.
fn date_separator<'a>(input: &str, t: &'a str, end_of_month: &mut bool) -> Result<&'a str, String> {
    match t.as_bytes()[0] {
        b'-' => Ok(&t[1..]),
        b'~' => {
            *end_of_month = true;
            Ok(&t[1..])
        }
        b' ' => {
            Err(format!("'{}' is neither a date nor a time; dates are written [YYYY-]MM-DD and times HH:MM[:SS]", snippet(&input[..input.len() - t.len()])))
        }
        c => {
            Err(format!("unexpected '{}' after '{}'; dates are written [YYYY-]MM-DD and times HH:MM[:SS]", c as char, snippet(&input[..input.len() - t.len()])))
        }
    }
}

/// `@SECONDS`: a single point in time, always UTC. Parsed like systemd's
/// `strtoul()` (an optional sign is accepted; negative values are before
/// 1970 and therefore rejected, except `-0`).
fn parse_timestamp<'a>(input: &'a str, spec: &mut CalendarSpec) -> Result<AfterDate<'a>, String> {
    let p = input.trim_start_matches(' ');
    let (negative, p) = match p.as_bytes().first() {
        Some(b'-') => (true, &p[1..]),
        Some(b'+') => (false, &p[1..]),
        _ => (false, p),
    };
    let digits = p.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("'@' must be followed by seconds since the epoch, e.g. '@1700000000'".into());
    }
    let (number, rest) = p.split_at(digits);
    let too_late = || format!("timestamp @{} is after the year {MAX_YEAR}, the latest systemd supports", snippet(number));
    let value: i64 = number.parse().map_err(|_| too_late())?;
    if negative && value != 0 {
        return Err(format!("timestamp @-{value} is before 1970; use a non-negative number of seconds"));
    }
    let time = jiff::Timestamp::from_second(value).ok().map(|t| jiff::tz::Offset::UTC.to_datetime(t)).filter(|t| i64::from(t.year()) <= MAX_YEAR);
    let time = time.ok_or_else(too_late)?;
    spec.year = vec![Component::single(time.year().into())];
    spec.month = vec![Component::single(time.month().into())];
    spec.day = vec![Component::single(time.day().into())];
    spec.hour = vec![Component::single(time.hour().into())];
    spec.minute = vec![Component::single(time.minute().into())];
    spec.second = vec![Component::single(time.second().into())];
    spec.zone = Zone::Utc;
    Ok(AfterDate::Timestamp(rest))
}

/// `hour:minute[:second]`, or nothing at all (meaning 00:00:00).
fn parse_time<'a>(input: &'a str, spec: &mut CalendarSpec) -> Result<&'a str, String> {
    if input.is_empty() {
        spec.hour = vec![Component::single(0)];
        spec.minute = vec![Component::single(0)];
        spec.second = vec![Component::single(0)];
        return Ok(input);
    }
    let (hour, t) = parse_chain(input, Field::Hour)?;
    let Some(t) = t.strip_prefix(':') else {
        return Err(if t.is_empty() {
            format!("time '{}' needs minutes too; write HH:MM or HH:MM:SS", snippet(input))
        } else {
            format!("unexpected '{}' in the time '{}'; write HH:MM or HH:MM:SS", snippet(t), snippet(input))
        });
    };
    let (minute, t) = parse_chain(t, Field::Minute)?;
    let (second, t) = if t.is_empty() {
        (vec![Component::single(0)], t)
    } else if let Some(t) = t.strip_prefix(':') {
        let (second, t) = parse_chain(t, Field::Second)?;
        (if second.is_empty() { vec![EVERY_SECOND] } else { second }, t)
    } else {
        (Vec::new(), t)
    };
    if !t.is_empty() {
        return Err(format!(
            "unexpected '{}' after the time '{}'; the order is [weekdays] [date] time [timezone], and the timezone must be UTC or an installed zone such as Europe/Berlin",
            snippet(t.trim_start()),
            &input[..input.len() - t.len()]
        ));
    }
    spec.hour = hour;
    spec.minute = minute;
    spec.second = second;
    Ok(t)
}

/// One field: `*` (returned as an empty list) or a comma-separated list of
/// `start[..stop][/repeat]` entries. Mirrors systemd's `parse_chain()` and
/// `prepend_component()`, including which characters may end an entry.
fn parse_chain(input: &str, field: Field) -> Result<(Vec<Component>, &str), String> {
    if let Some(rest) = input.strip_prefix('*') {
        if let Some(after_slash) = rest.strip_prefix('/') {
            // Always invalid for systemd too; cron users write this a lot.
            let digits = after_slash.bytes().take_while(u8::is_ascii_digit).count();
            let step = &after_slash[..digits];
            return Err(format!("'*/{step}' is cron syntax; OnCalendar repeats from a start value, so write '0/{step}' (or '1/{step}' for days and months)"));
        }
        return Ok((Vec::new(), rest));
    }
    let seconds = field == Field::Second;
    let mut chain = Vec::new();
    let mut p = input;
    loop {
        if chain.len() >= MAX_CHAIN_LEN {
            return Err(format!("too many comma-separated values (more than {MAX_CHAIN_LEN}); use ranges such as 1..10 or repetitions such as 0/5"));
        }
        let (start, mut e) = parse_number(p, seconds)?;
        let mut stop = None;
        let mut repeat = 0;
        if let Some(rest) = e.strip_prefix("..") {
            let (value, rest) = parse_number(rest, seconds)?;
            stop = Some(value);
            repeat = 1;
            e = rest;
        }
        if let Some(rest) = e.strip_prefix('/') {
            let (value, rest) = parse_number(rest, seconds)?;
            if value == 0 {
                return Err(format!(
                    "repetition '{}' is not allowed; the value after '/' is a step and must be at least 1",
                    snippet(&p[..p.len() - rest.len()])
                ));
            }
            repeat = value;
            e = rest;
        } else if let (true, Some(stop)) = (seconds, stop) {
            // systemd keeps seconds in microseconds and refuses a range whose
            // implied one-second step cannot fit even once.
            if start >= stop {
                return Err(format!("seconds range {start}..{stop} is empty; the end must be greater than the start"));
            }
        }
        match e.as_bytes().first() {
            None | Some(b' ' | b',' | b'-' | b'~' | b':') => {}
            Some(b'T') => {
                return Err(format!("unexpected 'T' in '{}'; separate date and time with a space, e.g. '2026-11-23 12:00'", snippet(p)));
            }
            Some(&c) => {
                return Err(format!("unexpected '{}' in '{}'; a value is a number, a range a..b or a repetition a/step (or a..b/step)", c as char, snippet(p)));
            }
        }
        chain.push(Component { start, stop, repeat });
        match e.strip_prefix(',') {
            Some(rest) => p = rest,
            None => return Ok((chain, e)),
        }
    }
}

/// A non-negative decimal number that fits systemd's `int`.
fn parse_number(input: &str, seconds: bool) -> Result<(i64, &str), String> {
    let digits = input.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(match input.as_bytes().first() {
            None => "expression ends where a number or '*' was expected".to_string(),
            Some(_) => format!("expected a number or '*' at '{}'", snippet(input)),
        });
    }
    let (number, rest) = input.split_at(digits);
    let value = number.parse::<i64>().ok().filter(|v| *v <= i64::from(i32::MAX)).ok_or_else(|| format!("number {} is too large", snippet(number)))?;
    if seconds && rest.starts_with('.') && !rest.starts_with("..") {
        return Err(format!(
            "fractional seconds ('{number}{}') are not supported; use whole seconds",
            snippet(&rest[..1 + rest[1..].bytes().take_while(u8::is_ascii_digit).count()])
        ));
    }
    Ok((value, rest))
}

/// systemd reads `12` as 2012 and `89` as 1989 (`fix_year()`).
fn expand_two_digit_year(year: i64) -> i64 {
    match year {
        0..=69 => year + 2000,
        70..=99 => year + 1900,
        _ => year,
    }
}

/// systemd's `normalize_chain()`: shorten ranges to their last reachable
/// value, turn degenerate ranges into single values, then sort and dedup.
fn normalize_chain(chain: &mut Vec<Component>) {
    for c in chain.iter_mut() {
        let Some(mut stop) = c.stop else { continue };
        if stop > c.start && c.repeat > 0 {
            stop -= (stop - c.start) % c.repeat;
            c.stop = Some(stop);
        }
        if (stop > c.start && c.repeat > 0 && c.start + c.repeat > stop) || stop == c.start {
            c.repeat = 0;
            c.stop = None;
        }
    }
    chain.sort();
    chain.dedup();
}

/// systemd's `chain_valid()`, which also insists that every repetition can
/// fire at least twice inside the field's range.
fn validate_chain(chain: &[Component], field: Field, end_of_month: bool) -> Result<(), String> {
    let name = field.name();
    let (from, mut to) = field.bounds();
    for (position, c) in chain.iter().enumerate() {
        // "~N" counts back from the last day; systemd allows at most ~28 so
        // that every month has such a day. Its recursive check lowers the
        // bound by 3 again for every further list entry (~28, ~25, ~22, ...
        // after sorting), which we must mirror to accept the same input.
        if end_of_month {
            to -= 3;
        }
        let out_of_range = |value: i64| {
            if end_of_month && position > 0 {
                format!(
                    "day ~{value} is out of range ~{from}..~{to} for list entry {} (systemd 252 allows ~28 for the smallest entry and 3 days less for each further one); use a range like ~1..~7 instead of a list",
                    position + 1
                )
            } else if end_of_month {
                format!("day ~{value} is out of range ~{from}..~{to} (days are counted back from the end of the month)")
            } else if field == Field::Year {
                format!("year {value} is out of range {from}..{to} (two-digit years 00..69 mean 20xx, 70..99 mean 19xx)")
            } else {
                format!("{name} {value} is out of range {from}..{to}")
            }
        };
        if c.start < from || c.start > to {
            return Err(out_of_range(c.start));
        }
        if c.repeat > to - from {
            return Err(format!("{name} repetition /{} is too large; within {from}..{to} it can be at most {}", c.repeat, to - from));
        }
        match c.stop {
            Some(stop) => {
                if stop < from || stop > to {
                    return Err(out_of_range(stop));
                }
                if c.start + c.repeat > stop {
                    return Err(format!("{name} range {}..{stop} runs backwards; write the smaller value first", c.start));
                }
            }
            None if c.repeat == 0 => {}
            None if end_of_month => {
                if c.start - c.repeat < from {
                    return Err(format!("day ~{}/{} can never repeat within the month; use a smaller step or drop '/{}'", c.start, c.repeat, c.repeat));
                }
            }
            None => {
                if c.start + c.repeat > to {
                    return Err(format!(
                        "{name} {}/{} can never repeat within {from}..{to}; use a smaller start or step, or drop '/{}'",
                        c.start, c.repeat, c.repeat
                    ));
                }
            }
        }
    }
    Ok(())
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

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// systemd's search state: a broken-down UTC time like C's `struct tm` (with a full year),
/// whose fields the search pushes out of their range (day 30 of February, hour 24, month 12)
/// before [`Tm::normalized`] carries them over as `timegm()` does. That carrying, not the
/// calendar, decides which elapse systemd finds for impossible dates and overflowing
/// repetitions (see [`within_bounds`]), so it stays here; the calendar itself (month lengths,
/// weekdays, the epoch) is jiff's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tm {
    year: i64,
    /// 0..=11
    mon: i64,
    mday: i64,
    hour: i64,
    min: i64,
    sec: i64,
}

impl Tm {
    /// The UTC civil time of a Unix second.
    fn from_unix(t: i64) -> Tm {
        let dt = jiff::tz::Offset::UTC.to_datetime(timestamp(t));
        Tm {
            year: dt.year().into(),
            mon: i64::from(dt.month()) - 1,
            mday: dt.day().into(),
            hour: dt.hour().into(),
            min: dt.minute().into(),
            sec: dt.second().into(),
        }
    }

    /// `timegm()`: the Unix second these fields denote, out-of-range ones carried over (month
    /// 12 is January of the next year, day 0 the last day of the month before, hour 24 the
    /// next midnight). The month is carried into the year; the other fields are counted in
    /// seconds from the first of that month, which is what carrying them one by one comes to.
    fn to_unix(self) -> i64 {
        let year = self.year + self.mon.div_euclid(12);
        let month = self.mon.rem_euclid(12) + 1;
        month_start(year, month) + (self.mday - 1) * 86_400 + self.hour * 3600 + self.min * 60 + self.sec
    }

    fn normalized(self) -> Tm {
        Tm::from_unix(self.to_unix())
    }

    /// 0 = Monday ... 6 = Sunday.
    fn weekday_from_monday(self) -> i64 {
        jiff::tz::Offset::UTC.to_datetime(timestamp(self.to_unix())).weekday().to_monday_zero_offset().into()
    }

    fn first_second_after_max_year() -> i64 {
        month_start(MAX_YEAR + 1, 1)
    }

    fn reset_below_year(&mut self) {
        self.mon = 0;
        self.reset_below_month();
    }

    fn reset_below_month(&mut self) {
        self.mday = 1;
        self.reset_below_day();
    }

    fn reset_below_day(&mut self) {
        self.hour = 0;
        self.min = 0;
        self.sec = 0;
    }
}

/// Why a search found no elapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchEnd {
    /// No match before the end of year 2199.
    Never,
    /// systemd's iteration cap was hit; systemd logs "Infinite loop in
    /// calendar calculation" and the timer does not fire.
    GaveUp,
}

/// Outcome of systemd's `tm_within_bounds()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bounds {
    /// All fields were already in range.
    Same,
    /// A field overflowed; `tm` now holds the carried-over (later) time.
    Moved,
    /// Past year 2199, or carrying would go backwards.
    Bad,
}

/// Checks whether `tm` is a real date; if a field overflowed (e.g. Feb 30),
/// moves `tm` forward to the carried-over time with the field below the one
/// that changed reset, as systemd does to avoid skipping the first match.
fn within_bounds(tm: &mut Tm) -> Bounds {
    if tm.year > MAX_YEAR {
        return Bounds::Bad;
    }
    let mut t = tm.normalized();
    let order = if t.year != tm.year {
        t.mon = 0;
        t.year.cmp(&tm.year)
    } else if t.mon != tm.mon {
        t.mday = 1;
        t.mon.cmp(&tm.mon)
    } else if t.mday != tm.mday {
        t.hour = 0;
        t.mday.cmp(&tm.mday)
    } else if t.hour != tm.hour {
        t.min = 0;
        t.hour.cmp(&tm.hour)
    } else if t.min != tm.min {
        t.sec = 0;
        t.min.cmp(&tm.min)
    } else {
        t.sec.cmp(&tm.sec)
    };
    match order {
        Ordering::Less => Bounds::Bad,
        Ordering::Greater => {
            *tm = t;
            Bounds::Moved
        }
        Ordering::Equal => Bounds::Same,
    }
}

/// systemd's `find_matching_component()`: the smallest value >= `val` that
/// one of the entries produces, and whether it differs from `val`. `None`
/// means no entry matches any more. For `~` days, `end_of_month` carries the
/// (year, month) the days are counted back from. `scale` converts list values
/// to the unit of `val` (microseconds for the seconds list).
fn find_matching(chain: &[Component], end_of_month: Option<(i64, i64)>, scale: i64, val: i64) -> Option<(i64, bool)> {
    if chain.is_empty() {
        return Some((val, false));
    }
    let mut best: Option<i64> = None;
    for c in chain {
        let (mut start, mut stop) = (c.start * scale, c.stop.map_or(-1, |s| s * scale));
        let repeat = c.repeat * scale;
        if let Some((year, mon)) = end_of_month {
            start = day_from_end_of_month(year, mon, start);
            stop = day_from_end_of_month(year, mon, stop);
            // "~1..7" counts backwards, so the ends swap.
            if stop > 0 {
                std::mem::swap(&mut start, &mut stop);
            }
        }
        if start >= val {
            if best.is_none_or(|b| start < b) {
                best = Some(start);
            }
        } else if repeat > 0 {
            let k = start + repeat * (val - start + repeat - 1).div_euclid(repeat);
            if best.is_none_or(|b| k < b) && (stop < 0 || k <= stop) {
                best = Some(k);
            }
        }
    }
    best.map(|d| (d, d != val))
}

/// The day of month that is `day` days counted back from the end (1 = the last day), or -1
/// if that falls outside the month (systemd's `find_end_of_month()`). `mon` is 0..=11.
fn day_from_end_of_month(year: i64, mon: i64, day: i64) -> i64 {
    let Some(length) = first_of_month(year, mon + 1).map(|d| i64::from(d.days_in_month())) else {
        return -1;
    };
    if (1..=length).contains(&day) { length - day + 1 } else { -1 }
}

/// The instant of Unix second `t`. The search stays within 1969..=2200, far inside jiff's
/// range (years -9999..=9999); beyond it, the nearer end.
fn timestamp(t: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t).unwrap_or(if t < 0 { jiff::Timestamp::MIN } else { jiff::Timestamp::MAX })
}

/// The first day of `month` (1..=12) of `year`, if it is a date jiff can represent.
fn first_of_month(year: i64, month: i64) -> Option<jiff::civil::Date> {
    jiff::civil::Date::new(i16::try_from(year).ok()?, i8::try_from(month).ok()?, 1).ok()
}

/// The Unix second of midnight UTC on the first of `month` (1..=12) of `year`; out of jiff's
/// range (never reached, as for [`timestamp`]), the nearer end.
fn month_start(year: i64, month: i64) -> i64 {
    let start = first_of_month(year, month).and_then(|d| jiff::tz::Offset::UTC.to_timestamp(d.to_datetime(jiff::civil::Time::midnight())).ok());
    start.unwrap_or(if year < 1970 { jiff::Timestamp::MIN } else { jiff::Timestamp::MAX }).as_second()
}

// ---------------------------------------------------------------------------
// Cron translation
// ---------------------------------------------------------------------------

/// The five cron fields, with their value ranges and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const CRON_MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const CRON_WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronField {
    const ALL: [CronField; 5] = [CronField::Minute, CronField::Hour, CronField::DayOfMonth, CronField::Month, CronField::DayOfWeek];

    fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Accepted values; day-of-week allows 7 as a second spelling of Sunday.
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// The range `*` stands for.
    fn star_bounds(self) -> (u32, u32) {
        match self {
            CronField::DayOfWeek => (0, 6),
            other => other.bounds(),
        }
    }
}

/// One parsed cron field: the set of matching values plus whether it was
/// written starting with `*`, which is how cron decides the day-of-month /
/// day-of-week combination rule (see [`cron_to_calendars`]).
#[derive(Debug, Clone, Copy)]
struct CronSet {
    bits: u64,
    starred: bool,
}

/// Translate a 5-field cron expression (minute hour day-of-month month day-of-week; supports *,
/// lists, ranges, steps like */15 and 1-30/5, month names jan-dec, weekday names sun-sat, 0 and
/// 7 = Sunday, and the macros @hourly @daily @midnight @weekly @monthly @yearly @annually) into an
/// OnCalendar string with the same firing times. Err with a clear message for anything invalid or
/// unsupported (e.g. @reboot).
///
/// When both day-of-month and day-of-week are restricted, cron fires when
/// EITHER matches, which a single OnCalendar expression cannot express; this
/// returns an error naming the two expressions that together are equivalent.
/// Use [`cron_to_calendars`] to get them as a list instead (a unit may carry
/// several `OnCalendar=` lines, and fires on their union).
///
/// The result is in systemd's normalized form and is evaluated in the
/// host's local time, exactly like cron itself.
pub fn cron_to_calendar(cron: &str) -> Result<String, String> {
    let mut expressions = cron_to_calendars(cron)?;
    if expressions.len() == 1 {
        return Ok(expressions.remove(0));
    }
    Err(format!(
        "cron '{}' restricts both day-of-month and day-of-week, so cron fires when EITHER matches; one OnCalendar expression can only require both. Write a `calendar:` schedule instead, e.g. the two OnCalendar= lines '{}' and '{}'",
        snippet(cron.trim()),
        expressions[0],
        expressions[1]
    ))
}

/// Like [`cron_to_calendar`], but expresses cron's "day-of-month OR
/// day-of-week" rule as several OnCalendar expressions whose union has the
/// same firing times (one per `OnCalendar=` line). Always returns one or two
/// expressions.
///
/// Semantics follow Vixie cron/cronie: a field counts as restricted unless
/// it starts with `*` (so `*/2` in day-of-month still combines with a
/// weekday by AND); `N/step` means `N-max/step`; `L`, `W`, `#` and `?` are
/// not supported.
///
/// Steps are written as closed ranges (`*/24` minutes becomes `00..48/24`)
/// unless they wrap around evenly (`*/15` becomes `00/15`): systemd 252
/// skips firings when an open repetition carries over a day, month or year
/// boundary (see `cron_list`).
pub fn cron_to_calendars(cron: &str) -> Result<Vec<String>, String> {
    let text = cron.trim_matches(|c| c == ' ' || c == '\t');
    if text.is_empty() {
        return Err("cron expression is empty; expected 5 fields: minute hour day-of-month month day-of-week".into());
    }
    if let Some((i, c)) = text.char_indices().find(|&(_, c)| c != '\t' && (c.is_control() || !c.is_ascii())) {
        return Err(format!("cron expression contains the character '{}' at byte {i}; only a single line of ASCII is allowed", c.escape_debug()));
    }
    if let Some(name) = text.strip_prefix('@') {
        let expanded = match name.to_ascii_lowercase().as_str() {
            "hourly" => "0 * * * *",
            "daily" | "midnight" => "0 0 * * *",
            "weekly" => "0 0 * * 0",
            "monthly" => "0 0 1 * *",
            "yearly" | "annually" => "0 0 1 1 *",
            "reboot" => {
                return Err("@reboot runs once at boot and has no calendar equivalent; use a service enabled for boot (WantedBy=multi-user.target) or a timer with OnBootSec= instead".into());
            }
            _ => {
                return Err(format!(
                    "unknown cron macro '@{}'; supported are @hourly, @daily, @midnight, @weekly, @monthly, @yearly and @annually",
                    snippet(name)
                ));
            }
        };
        return cron_to_calendars(expanded);
    }

    let fields: Vec<&str> = text.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    if fields.len() != 5 {
        return Err(format!(
            "cron expression '{}' has {} fields, expected 5 (minute hour day-of-month month day-of-week); seconds, years and commands are not supported",
            snippet(text),
            fields.len()
        ));
    }
    let mut sets = [CronSet { bits: 0, starred: false }; 5];
    for ((set, field), text) in sets.iter_mut().zip(CronField::ALL).zip(&fields) {
        *set = parse_cron_field(text, field)?;
    }
    let [minute, hour, dom, month, dow] = sets;

    let dom_all = bits_between(1, 31);
    let dow_all = bits_between(0, 6);
    // Which (day-of-month, weekday) filters each resulting expression uses.
    let day_filters: Vec<(u64, u64)> = if !dom.starred && !dow.starred {
        if dom.bits == dom_all || dow.bits == dow_all {
            // "fires when either matches" and one of them matches every day.
            vec![(dom_all, dow_all)]
        } else if !day_exists(dom.bits, month.bits) {
            // The day-of-month half can never fire; only weekdays remain.
            vec![(dom_all, dow.bits)]
        } else {
            vec![(dom.bits, dow_all), (dom_all, dow.bits)]
        }
    } else {
        vec![(dom.bits, dow.bits)]
    };

    let mut out = Vec::new();
    for (dom_bits, dow_bits) in day_filters {
        if !day_exists(dom_bits, month.bits) {
            return Err(format!("cron '{}' can never fire: day-of-month {} does not exist in month {}", snippet(text), fields[2], fields[3]));
        }
        let mut expr = String::new();
        if dow_bits != dow_all {
            // cron counts from Sunday = 0, systemd from Monday = bit 0.
            let weekdays = (0..7).filter(|d| dow_bits & (1 << d) != 0).fold(0u8, |acc, d| acc | 1 << ((d + 6) % 7));
            expr.push_str(&format_weekdays(weekdays));
            expr.push(' ');
        }
        let _ = write!(
            expr,
            "*-{}-{} {}:{}:00",
            cron_list(month.bits, 1, 12, true),
            cron_list(dom_bits, 1, 31, false),
            cron_list(hour.bits, 0, 23, true),
            cron_list(minute.bits, 0, 59, true)
        );
        // Round-trip through our parser: validates the translation and yields
        // the canonical form systemd would print.
        // A translation names no zone: no lookup is asked.
        let spec = parse_calendar(&expr, &NoDatabase).map_err(|e| format!("internal error translating cron '{}' to '{expr}': {e}", snippet(text)))?;
        out.push(spec.normalized());
    }
    Ok(out)
}

fn bits_between(low: u32, high: u32) -> u64 {
    (low..=high).fold(0, |acc, v| acc | 1 << v)
}

/// Whether some month in `months` (bits 1..=12) has some day in `days` (bits 1..=31), each
/// month at its longest: February counts as 29 days because leap years exist.
fn day_exists(days: u64, months: u64) -> bool {
    // 2000 is a leap year.
    let longest = |month: i8| u32::from(jiff::civil::date(2000, month, 1).days_in_month().unsigned_abs());
    (1..=12).any(|m| months & (1 << m) != 0 && days & bits_between(1, longest(m)) != 0)
}

/// Parses one cron field into the set of values it matches.
fn parse_cron_field(text: &str, field: CronField) -> Result<CronSet, String> {
    let name = field.name();
    let (min, max) = field.bounds();
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty list entry in {name} field '{}'", snippet(text)));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_cron_step(step, item, field)?)),
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            field.star_bounds()
        } else if let Some((a, b)) = range.split_once('-') {
            (cron_value(a, field, item)?, cron_value(b, field, item)?)
        } else {
            let value = cron_value(range, field, item)?;
            // "N/step" is "N-max/step" (cronie and most modern crons).
            if step.is_some() { (value, field.star_bounds().1) } else { (value, value) }
        };
        if low > high {
            let hint = if field == CronField::DayOfWeek { " (use 7 for Sunday at the end, e.g. 5-7)" } else { "" };
            return Err(format!("{name} range '{range}' runs backwards; write the smaller value first{hint}"));
        }
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v = v.saturating_add(step);
        }
    }
    if field == CronField::DayOfWeek && bits & (1 << 7) != 0 {
        bits = (bits & !(1 << 7)) | 1; // 7 is Sunday too
    }
    debug_assert!(bits & !bits_between(min, max) == 0);
    Ok(CronSet { bits, starred: text.starts_with('*') })
}

fn parse_cron_step(step: &str, item: &str, field: CronField) -> Result<u32, String> {
    match step.parse::<u32>() {
        Ok(0) => Err(format!("step '/0' in {} entry '{item}' must be at least 1", field.name())),
        Ok(n) if step.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("invalid step '/{}' in {} entry '{item}'; expected a number", snippet(step), field.name())),
    }
}

/// A single cron value: a number, or a month/weekday name where allowed.
fn cron_value(token: &str, field: CronField, item: &str) -> Result<u32, String> {
    let name = field.name();
    let (min, max) = field.bounds();
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => {
                let note = if field == CronField::DayOfWeek { " (0 and 7 are Sunday)" } else { "" };
                Err(format!("{name} {} is out of range {min}-{max}{note}", snippet(token)))
            }
        };
    }
    let names: &[&str] = match field {
        CronField::Month => &CRON_MONTH_NAMES,
        CronField::DayOfWeek => &CRON_WEEKDAY_NAMES,
        _ => &[],
    };
    let offset = if field == CronField::Month { 1 } else { 0 };
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Ok(i as u32 + offset);
    }
    if token.contains(['?', '#']) || token.eq_ignore_ascii_case("l") || token.to_ascii_uppercase().ends_with(['L', 'W']) {
        return Err(format!(
            "'{}' in {name} uses a Quartz/extended cron feature (?, L, W or #) that is not supported; write an OnCalendar expression instead (e.g. '*-*~01' is the last day of every month)",
            snippet(item)
        ));
    }
    Err(match field {
        CronField::Month => format!("unknown month '{}'; use 1-12 or jan..dec", snippet(token)),
        CronField::DayOfWeek => format!("unknown day-of-week '{}'; use 0-7 or sun..sat", snippet(token)),
        _ if token.is_empty() => format!("missing number in {name} entry '{}'", snippet(item)),
        _ => format!("invalid {name} value '{}'; expected a number", snippet(token)),
    })
}

/// Renders a cron value set as an OnCalendar list: `*`, an arithmetic
/// progression (`a..b`, `a/step`, `a..b/step`), or runs joined by commas.
///
/// An open repetition `a/step` is only used when it wraps around evenly
/// (e.g. minutes `00/15`), and never for days of the month. systemd 252's
/// search carries an overflowing repetition into the next larger field but
/// resets only the field directly below the one that changed, so e.g.
/// `*:00/24` after 23:48 next fires at 00:24 (00:00 is skipped), `00/5` hours
/// skip 00:00 on the 1st of a month, and `*-*-01/7` skips January 1st. A
/// closed range `a..b/step` never overflows and keeps cron's firing times.
fn cron_list(bits: u64, min: u32, max: u32, allow_open_repetition: bool) -> String {
    let values: Vec<u32> = (min..=max).filter(|v| bits & (1 << v) != 0).collect();
    if values.len() == (max - min + 1) as usize {
        return "*".into();
    }
    if values.len() >= 3 {
        let step = values[1] - values[0];
        if values.windows(2).all(|w| w[1] - w[0] == step) {
            let (first, last) = (values[0], values[values.len() - 1]);
            let wraps_evenly = last + step == first + (max - min + 1);
            return if step == 1 {
                format!("{first:02}..{last:02}")
            } else if allow_open_repetition && wraps_evenly {
                format!("{first:02}/{step}")
            } else {
                format!("{first:02}..{last:02}/{step}")
            };
        }
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => parts.push(format!("{:02}", values[i])),
            1 => parts.push(format!("{:02},{:02}", values[i], values[j])),
            _ => parts.push(format!("{:02}..{:02}", values[i], values[j])),
        }
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
// These tests ask the host's systemd-analyze and zoneinfo for the truth they compare against.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// The host's installed zones, as systemd-analyze sees them.
    struct HostZones;
    impl ZoneLookup for HostZones {
        fn is_installed(&self, name: &str) -> bool {
            use std::io::Read as _;
            let mut magic = [0u8; 4];
            std::fs::File::open(std::path::Path::new("/usr/share/zoneinfo").join(name)).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"TZif"
        }
    }

    fn parse_calendar(expr: &str) -> Result<CalendarSpec, String> {
        super::parse_calendar(expr, &HostZones)
    }

    const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

    /// 2023-11-14 22:13:20 UTC: not aligned to anything, mid-month.
    const BASE: i64 = 1_700_000_000;
    /// 2024-02-28 23:59:59 UTC: the eve of a leap day.
    const BASE_LEAP: i64 = 1_709_164_799;
    /// 2024-12-31 23:59:59 UTC: the last second of a year.
    const BASE_YEAR_END: i64 = 1_735_689_599;

    fn norm(expr: &str) -> String {
        parse_calendar(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}")).normalized()
    }

    /// An independent UTC date -> epoch conversion (plain day counting), so
    /// the tests do not trust the module's own calendar arithmetic.
    fn utc(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = |y: i64, m: i64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut days = 0;
        for y in 1970..year {
            days += if leap(y) { 366 } else { 365 };
        }
        for m in 1..month {
            days += month_days(year, m);
        }
        days += day - 1;
        ((days * 24 + hour) * 60 + minute) * 60 + second
    }

    /// (year, month, day, weekday with 0 = Sunday) for a day number since
    /// 1970-01-01, counted independently of the module.
    fn civil_independent(mut days: i64) -> (i64, i64, i64, i64) {
        let weekday = (days + 4).rem_euclid(7);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut year = 1970;
        loop {
            let len = if leap(year) { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut month = 1;
        for len in lengths {
            if days < len {
                break;
            }
            days -= len;
            month += 1;
        }
        (year, month, days + 1, weekday)
    }

    // -----------------------------------------------------------------------
    // systemd-analyze harness
    // -----------------------------------------------------------------------

    #[derive(Debug)]
    struct Analyzed {
        /// Exit status 0.
        accepted: bool,
        /// The expression parsed (it may still fail to compute an elapse).
        parsed: bool,
        normalized: Option<String>,
        elapses: Vec<i64>,
    }

    fn have_systemd_analyze() -> bool {
        let present = Path::new(SYSTEMD_ANALYZE).exists();
        // CI installs systemd: there the comparison must run, never be skipped.
        assert!(present || std::env::var_os("CI").is_none(), "{SYSTEMD_ANALYZE} is missing on CI");
        if !present {
            eprintln!("SKIPPED: {SYSTEMD_ANALYZE} not found; systemd comparison not run");
        }
        present
    }

    /// Runs `systemd-analyze calendar` in UTC and parses its report, e.g.
    /// `Normalized form: *-*-* 00:00:00` / `Next elapse: Wed 2023-11-15
    /// 00:00:00 UTC` / `Iter. #2: Thu 2023-11-16 00:00:00 UTC`.
    fn analyze(expr: &str, base: i64, iterations: u32) -> Analyzed {
        let output = Command::new(SYSTEMD_ANALYZE)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .env("SYSTEMD_COLORS", "0")
            .arg("calendar")
            .arg(format!("--iterations={iterations}"))
            .arg(format!("--base-time=@{base}"))
            .arg("--")
            .arg(expr)
            .output()
            .expect("failed to run systemd-analyze");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut normalized = None;
        let mut elapses = Vec::new();
        for line in stdout.lines() {
            let Some((key, value)) = line.trim().split_once(": ") else {
                continue;
            };
            match key {
                "Normalized form" => normalized = Some(value.to_string()),
                _ if key == "Next elapse" || key.starts_with("Iter. #") => {
                    if value == "never" {
                        continue;
                    }
                    elapses.push(parse_analyze_time(value).unwrap_or_else(|| panic!("bad time line {line:?}")));
                }
                _ => {}
            }
        }
        Analyzed { accepted: output.status.success(), parsed: !stderr.contains("Failed to parse calendar specification"), normalized, elapses }
    }

    /// `Tue 2023-11-14 22:30:00 UTC` -> epoch seconds.
    fn parse_analyze_time(value: &str) -> Option<i64> {
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [_, date, time, "UTC"] = parts.as_slice() else {
            return None;
        };
        let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        Some(utc(d[0], d[1], d[2], t[0], t[1], t[2]))
    }

    /// Our chain of up to `n` elapses, each strictly after the previous one.
    fn our_elapses(spec: &CalendarSpec, base: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = base;
        while out.len() < n {
            match spec.next_elapse(t) {
                Some(next) => {
                    assert!(next > t, "{} went backwards: {t} -> {next}", spec.normalized());
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    // -----------------------------------------------------------------------
    // (1) normalized() unit tests (expected values printed by systemd 252)
    // -----------------------------------------------------------------------

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
            assert_eq!(parse_calendar(expected), parse_calendar(input), "{input:?} vs {expected:?}");
        }
        eprintln!("normalized_forms: {} expressions checked", cases.len());
    }

    #[test]
    fn accessors_and_traits() {
        let spec = parse_calendar("Mon *-*-* 09:00 Europe/Berlin").unwrap();
        assert_eq!(spec.timezone(), Some("Europe/Berlin"));
        assert_eq!(spec.to_string(), "Mon *-*-* 09:00:00 Europe/Berlin");
        assert_eq!(parse_calendar("daily utc").unwrap().timezone(), Some("UTC"));
        assert_eq!(parse_calendar("daily").unwrap().timezone(), None);
        assert_eq!(parse_calendar("daily").unwrap(), parse_calendar("*-*-* 00:00:00").unwrap());
    }

    #[test]
    fn error_messages_explain_the_problem() {
        let cases = [
            ("*-*-* 25:00", "hour 25 is out of range 0..23"),
            ("*-*-* 12:60", "minute 60 is out of range 0..59"),
            ("00:00:60", "second 60 is out of range 0..59"),
            ("*-13-01", "month 13 is out of range 1..12"),
            ("*-*-32", "day 32 is out of range 1..31"),
            ("*-*~29", "day ~29 is out of range ~1..~28"),
            ("*~12,24..28", "for list entry 2"),
            ("1969-01-01", "year 1969 is out of range 1970..2199"),
            ("", "empty"),
            ("   ", "blank"),
            ("daily ", "trailing spaces"),
            ("daily\n", "control character '\\n'"),
            ("Sun..Mon", "runs backwards; weeks start on Monday, so write Mon,Sun"),
            ("Fri..Tue", "so write Mon,Tue,Fri..Sun"),
            ("*/2:00", "'*/2' is cron syntax"),
            ("2026-11-23T12:00", "separate date and time with a space"),
            ("5 12:00", "'5' is neither a date nor a time"),
            ("Mon..", "has no end"),
            ("Mox 12:00", "unknown weekday or keyword 'Mox'"),
            ("Mon,Mox", "unknown weekday 'Mox'"),
            ("foo", "unknown weekday or keyword 'foo'"),
            ("12:00 Mon", "the order is [weekdays] [date] time [timezone]"),
            ("*:30/30", "can never repeat"),
            ("*:0/60", "repetition /60 is too large"),
            ("*:*:0.5", "fractional seconds"),
            ("*:0/0", "at least 1"),
            ("12", "needs minutes too"),
            ("*-*-* 10..05:00", "runs backwards"),
            ("*:*:05..05", "seconds range 5..5 is empty"),
            ("2026~11-23", "'~' must sit between month and day"),
            ("*-*-* 03:00 Mars/Olympus", "unexpected 'Mars/Olympus'"),
            ("99999999999:00", "too large"),
            ("@-5", "before 1970"),
            ("@99999999999", "after the year 2199"),
        ];
        for (input, needle) in cases {
            let err = parse_calendar(input).expect_err(input);
            assert!(err.contains(needle), "error for {input:?} should mention {needle:?}, got {err:?}");
            assert!(!err.contains('\n'), "error for {input:?} must be one line: {err:?}");
        }
    }

    #[test]
    fn next_elapse_hand_checked() {
        let next = |expr: &str, after: i64| parse_calendar(expr).unwrap().next_elapse(after);
        assert_eq!(next("daily", BASE), Some(utc(2023, 11, 15, 0, 0, 0)));
        // Strictly after: an elapse exactly at `after` is skipped.
        assert_eq!(next("daily", utc(2023, 11, 15, 0, 0, 0)), Some(utc(2023, 11, 16, 0, 0, 0)));
        assert_eq!(next("*-02~03", BASE), Some(utc(2024, 2, 27, 0, 0, 0)));
        assert_eq!(next("*-02-29", BASE), Some(utc(2024, 2, 29, 0, 0, 0)));
        assert_eq!(next("2026-11-23", BASE), Some(utc(2026, 11, 23, 0, 0, 0)));
        assert_eq!(next("2026-11-23", utc(2026, 11, 23, 0, 0, 0)), None);
        assert_eq!(next("*-02-30", BASE), None);
        assert_eq!(next("daily", i64::MAX), None);
        assert_eq!(next("daily", i64::MIN), Some(0));
        assert_eq!(next("*-*-* 03:00:00 Europe/Berlin", BASE), None);
        assert_eq!(next("*-*-* 03:00:00 Etc/UTC", BASE), Some(utc(2023, 11, 15, 3, 0, 0)));
    }

    /// systemd gives up after 1000 search steps ("Infinite loop in calendar
    /// calculation", exit status 1); with fewer steps left before 2199 it
    /// says "never". The flip point was measured with systemd-analyze 252.
    #[test]
    fn iteration_cap_matches_systemd() {
        let spec = parse_calendar("*-02,04,06,09,11-31").unwrap();
        let flip = utc(2033, 7, 1, 0, 0, 0);
        assert_eq!(spec.search(flip - 1), Err(SearchEnd::GaveUp));
        assert_eq!(spec.search(flip), Err(SearchEnd::Never));
        assert_eq!(spec.next_elapse(flip - 1), None);
        if have_systemd_analyze() {
            assert!(!analyze("*-02,04,06,09,11-31", flip - 1, 1).accepted);
            let sd = analyze("*-02,04,06,09,11-31", flip, 1);
            assert!(sd.accepted && sd.elapses.is_empty());
        }
    }

    /// systemd 252 carries an overflowing open repetition into the next
    /// field but only resets the field right below the one that changed, so
    /// some firings are skipped. We reproduce that (it is what the host will
    /// do); `cron_to_calendar` avoids emitting such forms.
    #[test]
    fn next_elapse_reproduces_systemd_carry_quirks() {
        let next = |expr: &str, after: i64| parse_calendar(expr).unwrap().next_elapse(after);
        assert_eq!(next("*:00/24", utc(2023, 11, 14, 23, 48, 0)), Some(utc(2023, 11, 15, 0, 24, 0)));
        assert_eq!(next("*:00,24,48", utc(2023, 11, 14, 23, 48, 0)), Some(utc(2023, 11, 15, 0, 0, 0)));
        assert_eq!(next("00/5:00", utc(2024, 1, 31, 21, 0, 0)), Some(utc(2024, 2, 1, 5, 0, 0)));
        assert_eq!(next("*-*-01/7", utc(2023, 12, 29, 12, 0, 0)), Some(utc(2024, 1, 8, 0, 0, 0)));
        assert_eq!(next("*-*-01..29/7", utc(2023, 12, 29, 12, 0, 0)), Some(utc(2024, 1, 1, 0, 0, 0)));
        // The search starts 1µs after `after`, inside the same second.
        assert_eq!(next("*:00/7:30", utc(2024, 2, 28, 23, 59, 59)), Some(utc(2024, 2, 29, 0, 7, 30)));
    }

    // -----------------------------------------------------------------------
    // (2) normalized() and next_elapse() against systemd-analyze
    // -----------------------------------------------------------------------

    const VALID: [&str; 54] = [
        "*~1..3,5",
        "*~2,3..4,20",
        "minutely",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "annually",
        "quarterly",
        "semiannually",
        "Mon..Fri",
        "Sat,Sun",
        "Mon-Wed,Fri 07:45",
        "*-*-* 03:00:00",
        "*:0/30",
        "*:00/15",
        "*:*",
        "Mon *-*-* 09:00",
        "*-*-1,15 12:00",
        "*-02~03",
        "*-*~01",
        "*~03 18:00",
        "*-*~1..7/2",
        "*-*~5/2 06:00",
        "2026-11-23",
        "2024-02-29 12:00",
        "12:00",
        "*:*:*",
        "*:*:0/20",
        "*:*:30/29",
        "*-*-* 0..23/5:00",
        "*-*-* 1,2,3:00",
        "Mon,Wed,Fri 08:30:15",
        "Mon..Wed,Fri..Sun 23:59:59",
        "Thu..Sat *-12-24..26 18:00",
        "*-02-29",
        "Fri *-*-13",
        "Mon *-*-31 23:59:59",
        "*-02-30",
        "2023..2025-*-* 12:00",
        "25-*-* 06:00",
        "*-1/2-1 00:00",
        "*-*-1..31/7 04:00",
        "*:00/7:30",
        "1..5/10:00",
        "@1700000000",
        "@1800000000",
        "daily UTC",
        "Mon *-*-* 09:00 UTC",
        "weekly Etc/UTC",
        "*-*-* 03:00:00 Europe/Berlin",
        "2199-12-31 23:59:59",
        "mon,tue,wed,thu,fri,sat,sun 05:06:07",
    ];

    #[test]
    fn matches_systemd_analyze() {
        if !have_systemd_analyze() {
            return;
        }
        let mut compared_chains = 0;
        for expr in VALID {
            let spec = parse_calendar(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
            for base in [BASE, BASE_LEAP, BASE_YEAR_END] {
                let sd = analyze(expr, base, 5);
                assert!(sd.accepted, "systemd-analyze rejected {expr:?}");
                assert_eq!(Some(spec.normalized()), sd.normalized, "normalized form of {expr:?}");
                if spec.timezone().is_none_or(|tz| UTC_ALIASES.contains(&tz)) {
                    assert_eq!(our_elapses(&spec, base, 5), sd.elapses, "elapses of {expr:?} after {base}");
                    compared_chains += 1;
                }
            }
        }
        eprintln!("matches_systemd_analyze: {} expressions, {compared_chains} elapse chains compared", VALID.len());
    }

    // -----------------------------------------------------------------------
    // (3) invalid expressions are rejected by both
    // -----------------------------------------------------------------------

    const INVALID: [&str; 47] = [
        "*:1:29,0/1,59/1",
        "*~12,24..28",
        "*~24..28,27",
        "",
        "   ",
        "foo",
        "daily ",
        " daily",
        "*",
        "12",
        "*-*-* 24:00",
        "*-*-* 25:00",
        "*-*-* 12:60",
        "00:00:60",
        "*-13-01",
        "*-00-01",
        "*-*-32",
        "*-*-0",
        "1969-12-31",
        "2200-01-01",
        "Mon..",
        "Sun..Mon",
        "Mon,,Tue",
        "Monx",
        "Mon.Fri",
        "Mon..Wed..Fri",
        "12:00 Mon",
        "*:30/30",
        "*:0/60",
        "*:*/15",
        "*/2:00",
        "*-*~29",
        "*-*~7..1",
        "*-*~2/2",
        "*-*-* 10..05:00",
        "*:*:05..05",
        "*-*-* 12:00\n",
        "daily\tUTC",
        "*-*-* 03:00:00 Mars/Olympus",
        "*:*:0/0",
        "99999999999:00",
        "*-*-* 12:00:00 UTC UTC",
        "2026-11-23 12:00 extra",
        "2026~11-23",
        "@-5",
        "@",
        "Mon-",
    ];

    #[test]
    fn invalid_rejected_by_us_and_systemd() {
        for expr in INVALID {
            assert!(parse_calendar(expr).is_err(), "we accepted invalid {expr:?}");
        }
        if !have_systemd_analyze() {
            return;
        }
        for expr in INVALID {
            let sd = analyze(expr, BASE, 1);
            assert!(!sd.accepted, "systemd-analyze accepted {expr:?}, which we reject");
        }
        eprintln!("invalid_rejected_by_us_and_systemd: {} expressions", INVALID.len());
    }

    #[test]
    fn documented_divergence_fractional_seconds() {
        // systemd accepts fractional seconds; fleetwright deliberately does not.
        assert!(parse_calendar("*:*:00.5").is_err());
        if have_systemd_analyze() {
            assert!(analyze("*:*:00.5", BASE, 1).accepted);
        }
    }

    // -----------------------------------------------------------------------
    // (4) cron translation vs. a brute-force cron evaluator and systemd
    // -----------------------------------------------------------------------

    /// A deliberately simple, independent cron matcher used as the oracle.
    struct BruteCron {
        minute: u64,
        hour: u64,
        dom: u64,
        month: u64,
        dow: u64,
        dom_star: bool,
        dow_star: bool,
    }

    impl BruteCron {
        fn new(cron: &str) -> BruteCron {
            let cron = match cron {
                "@hourly" => "0 * * * *",
                "@daily" | "@midnight" => "0 0 * * *",
                "@weekly" => "0 0 * * 0",
                "@monthly" => "0 0 1 * *",
                "@yearly" | "@annually" => "0 0 1 1 *",
                other => other,
            };
            let f: Vec<&str> = cron.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{cron}");
            let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
            let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
            let mut dow = Self::field(f[4], 0, 6, &days, 0);
            if dow & (1 << 7) != 0 {
                dow |= 1;
            }
            BruteCron {
                minute: Self::field(f[0], 0, 59, &[], 0),
                hour: Self::field(f[1], 0, 23, &[], 0),
                dom: Self::field(f[2], 1, 31, &[], 0),
                month: Self::field(f[3], 1, 12, &months, 1),
                dow,
                dom_star: f[2].starts_with('*'),
                dow_star: f[4].starts_with('*'),
            }
        }

        fn field(text: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> u64 {
            let value =
                |s: &str| -> u32 { names.iter().position(|n| n.eq_ignore_ascii_case(s)).map(|i| i as u32 + base).unwrap_or_else(|| s.parse().unwrap()) };
            let mut bits = 0u64;
            for item in text.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => (r, s.parse::<u32>().unwrap()),
                    None => (item, 1),
                };
                let (a, b) = if range == "*" {
                    (lo, hi)
                } else if let Some((a, b)) = range.split_once('-') {
                    (value(a), value(b))
                } else if item.contains('/') {
                    (value(range), hi)
                } else {
                    (value(range), value(range))
                };
                let mut v = a;
                while v <= b {
                    bits |= 1 << v;
                    v += step;
                }
            }
            bits
        }

        /// The first `n` firing times strictly after `after`, found by
        /// checking every minute (whole days are skipped only when the day
        /// itself cannot match).
        fn next_n(&self, after: i64, n: usize) -> Vec<i64> {
            let mut out = Vec::new();
            let mut day = after.div_euclid(86_400);
            while out.len() < n {
                let (_, m, d, wd) = civil_independent(day);
                let dom_ok = self.dom & (1 << d) != 0;
                let dow_ok = self.dow & (1 << wd) != 0;
                let day_ok = if self.dom_star || self.dow_star { dom_ok && dow_ok } else { dom_ok || dow_ok };
                if self.month & (1 << m) != 0 && day_ok {
                    for minute_of_day in 0..1440 {
                        let t = day * 86_400 + minute_of_day * 60;
                        if t > after && self.hour & (1 << (minute_of_day / 60)) != 0 && self.minute & (1 << (minute_of_day % 60)) != 0 {
                            out.push(t);
                            if out.len() == n {
                                break;
                            }
                        }
                    }
                }
                day += 1;
                // systemd (and so the module) never schedules past 2199.
                if day >= utc(2200, 1, 1, 0, 0, 0) / 86_400 {
                    break;
                }
            }
            out
        }
    }

    const CRONS: [&str; 34] = [
        "*/15 * * * *",
        "0 * * * *",
        "30 3 * * *",
        "0 9 * * 1-5",
        "0 9 * * mon-fri",
        "0,30 9-17 * * 1-5",
        "5 4 * * sun",
        "5 4 * * 0",
        "5 4 * * 7",
        "0 0 * * 6,0",
        "45 23 * * 5-7",
        "0 0 1 * *",
        "0 0 1 1 *",
        "0 12 1,15 * *",
        "1-30/5 * * * *",
        "7/20 * * * *",
        "0 */6 * * *",
        "23 0-23/2 * * *",
        "10 */4 */2 * *",
        "0 0 * JAN,jul *",
        "0 0 1 */3 *",
        "0 8 * feb-apr mon",
        "0 0 29 2 *",
        "0 0 31 * *",
        "59 23 31 12 *",
        "0 0 */2 * 1",
        "0 0 1-31 * 1",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ];

    #[test]
    fn cron_translation_matches_brute_force_and_systemd() {
        let systemd = have_systemd_analyze();
        for cron in CRONS {
            let expr = cron_to_calendar(cron).unwrap_or_else(|e| panic!("{cron:?}: {e}"));
            let expected = BruteCron::new(cron).next_n(BASE, 10);
            let spec = parse_calendar(&expr).unwrap();
            assert_eq!(spec.normalized(), expr, "translation of {cron:?} is not normalized");
            assert_eq!(our_elapses(&spec, BASE, 10), expected, "cron {cron:?} -> {expr:?} (our evaluation)");
            if systemd {
                let sd = analyze(&expr, BASE, 10);
                assert!(sd.accepted, "systemd-analyze rejected {expr:?} (from {cron:?})");
                assert_eq!(sd.normalized.as_deref(), Some(expr.as_str()), "{cron:?}");
                assert_eq!(sd.elapses, expected, "cron {cron:?} -> {expr:?} (systemd evaluation)");
            }
        }
        eprintln!("cron_translation_matches_brute_force_and_systemd: {} cron expressions", CRONS.len());
    }

    #[test]
    fn cron_translations_are_readable() {
        let cases = [
            ("*/15 * * * *", "*-*-* *:00/15:00"),
            ("0 9 * * 1-5", "Mon..Fri *-*-* 09:00:00"),
            ("0,30 9-17 * * mon-fri", "Mon..Fri *-*-* 09..17:00,30:00"),
            ("1-30/5 * * * *", "*-*-* *:01..26/5:00"),
            ("1/5 * * * *", "*-*-* *:01/5:00"),
            ("*/24 * * * *", "*-*-* *:00..48/24:00"),
            ("0 */6 * * *", "*-*-* 00/6:00:00"),
            ("0 */5 * * *", "*-*-* 00..20/5:00:00"),
            ("0 0 */7 * *", "*-*-01..29/7 00:00:00"),
            ("0 0 1 */3 *", "*-01/3-01 00:00:00"),
            ("0-29/5 * * * *", "*-*-* *:00..25/5:00"),
            ("@weekly", "Sun *-*-* 00:00:00"),
            ("@yearly", "*-01-01 00:00:00"),
            ("0 0 31 2 mon", "Mon *-02-* 00:00:00"),
            ("0 0 1-31 * 1", "*-*-* 00:00:00"),
        ];
        for (cron, expected) in cases {
            assert_eq!(cron_to_calendar(cron).as_deref(), Ok(expected), "{cron}");
        }
    }

    #[test]
    fn cron_day_of_month_or_day_of_week() {
        let systemd = have_systemd_analyze();
        for cron in ["0 0 13 * 5", "30 6 1,15 * mon", "0 12 1-7 * sat,sun"] {
            let err = cron_to_calendar(cron).expect_err(cron);
            assert!(err.contains("EITHER") && err.contains("`calendar:`"), "{err}");
            let exprs = cron_to_calendars(cron).unwrap();
            let expected = BruteCron::new(cron).next_n(BASE, 10);
            let specs: Vec<CalendarSpec> = exprs.iter().map(|e| parse_calendar(e).unwrap()).collect();
            let mut ours: Vec<i64> = specs.iter().flat_map(|s| our_elapses(s, BASE, 10)).collect();
            ours.sort();
            ours.dedup();
            ours.truncate(10);
            assert_eq!(ours, expected, "{cron} -> {exprs:?}");
            if systemd {
                let mut theirs: Vec<i64> = exprs.iter().flat_map(|e| analyze(e, BASE, 10).elapses).collect();
                theirs.sort();
                theirs.dedup();
                theirs.truncate(10);
                assert_eq!(theirs, expected, "{cron} -> {exprs:?} (systemd)");
            }
        }
    }

    #[test]
    fn cron_and_quirk_for_starred_day_of_month() {
        // Vixie cron: "*/10" starts with '*', so it ANDs with the weekday.
        assert_eq!(cron_to_calendar("0 12 */10 * 2").unwrap(), "Tue *-*-01..31/10 12:00:00");
    }

    #[test]
    fn cron_errors_are_clear() {
        let cases = [
            ("@reboot", "@reboot"),
            ("@every 5m", "unknown cron macro"),
            ("", "empty"),
            ("* * * *", "has 4 fields"),
            ("0 0 * * * /bin/true", "has 6 fields"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("* 24 * * *", "hour 24 is out of range 0-23"),
            ("* * 0 * *", "day-of-month 0 is out of range 1-31"),
            ("* * * 13 *", "month 13 is out of range 1-12"),
            ("* * * * 8", "day-of-week 8 is out of range 0-7"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "runs backwards"),
            ("* * * * fri-sun", "runs backwards"),
            ("* * * foo *", "unknown month"),
            ("* * * * funday", "unknown day-of-week"),
            ("* * L * *", "not supported"),
            ("* * 15W * *", "not supported"),
            ("* * ? * 1", "not supported"),
            ("* * * * 5#3", "not supported"),
            ("1,,2 * * * *", "empty list entry"),
            ("0 0 30 2 *", "can never fire"),
            ("x * * * *", "invalid minute value"),
            ("0 0 13 * 5", "EITHER"),
        ];
        for (cron, needle) in cases {
            let err = cron_to_calendar(cron).expect_err(cron);
            assert!(err.contains(needle), "error for {cron:?} should mention {needle:?}, got {err:?}");
            assert!(!err.contains('\n'));
        }
    }

    // -----------------------------------------------------------------------
    // Robustness: random input never panics; random expressions agree with systemd
    // -----------------------------------------------------------------------

    /// xorshift64*: small, deterministic, good enough for test input.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Checks every property that must hold for any input.
    fn exercise(input: &str) {
        if let Ok(spec) = parse_calendar(input) {
            let normalized = spec.normalized();
            let again = parse_calendar(&normalized).unwrap_or_else(|e| panic!("normalized {normalized:?} of {input:?} does not parse: {e}"));
            assert_eq!(again, spec, "round trip of {input:?} via {normalized:?}");
            for after in [i64::MIN, -1, 0, BASE, i64::MAX - 1, i64::MAX] {
                if let Some(next) = spec.next_elapse(after) {
                    assert!(next > after && next >= 0, "{input:?}: {after} -> {next}");
                }
            }
        }
        if let Ok(exprs) = cron_to_calendars(input) {
            for e in exprs {
                assert!(parse_calendar(&e).is_ok(), "cron {input:?} produced unparsable {e:?}");
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
            accepted += usize::from(parse_calendar(&input).is_ok());
        }
        eprintln!("random_garbage_never_panics: {cases} inputs, {accepted} accepted as OnCalendar");
    }

    /// Random expressions built from the grammar (valid and subtly invalid)
    /// must be accepted/rejected, normalized and evaluated exactly like
    /// systemd does.
    fn random_expression(rng: &mut Rng) -> String {
        let number = |rng: &mut Rng| -> String {
            let pool = ["0", "1", "2", "3", "5", "7", "10", "12", "13", "15", "23", "24", "28", "29", "30", "31", "45", "59", "60"];
            rng.pick(&pool).to_string()
        };
        let chain = |rng: &mut Rng, year: bool| -> String {
            if rng.chance(30) {
                return "*".into();
            }
            let mut parts = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let mut s = if year { rng.pick(&["2023", "2024", "25", "2030", "1969", "2199"]).to_string() } else { number(rng) };
                if rng.chance(25) {
                    s.push_str("..");
                    s.push_str(&if year { rng.pick(&["2024", "2026", "2200"]).to_string() } else { number(rng) });
                }
                if rng.chance(25) {
                    s.push('/');
                    s.push_str(rng.pick(&["0", "1", "2", "3", "5", "7", "10", "15", "30"]));
                }
                parts.push(s);
            }
            parts.join(",")
        };
        if rng.chance(5) {
            return rng.pick(&["hourly", "Daily", "weekly", "quarterly", "semi-annually", "minutely"]).to_string();
        }
        if rng.chance(3) {
            return rng.pick(&["@0", "@1700000000", "@+86400", "@-0", "@7258118399", "@7258118400", "@1700000000 UTC", "Mon @1700000000"]).to_string();
        }
        let mut out = Vec::new();
        if rng.chance(40) {
            let days = ["Mon", "tue", "Wednesday", "Thu", "fri", "Sat", "Sun", "sunday"];
            let mut s = String::new();
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    s.push_str(rng.pick(&[",", ",", "..", "-"]));
                }
                s.push_str(rng.pick(&days));
            }
            out.push(s);
        }
        if rng.chance(70) {
            let sep = if rng.chance(15) { "~" } else { "-" };
            if rng.chance(50) {
                out.push(format!("{}-{}{sep}{}", chain(rng, true), chain(rng, false), chain(rng, false)));
            } else {
                out.push(format!("{}{sep}{}", chain(rng, false), chain(rng, false)));
            }
        }
        if rng.chance(75) || out.is_empty() {
            let mut s = format!("{}:{}", chain(rng, false), chain(rng, false));
            if rng.chance(50) {
                s.push(':');
                s.push_str(&chain(rng, false));
            }
            out.push(s);
        }
        if rng.chance(15) {
            out.push(rng.pick(&["UTC", "utc", "Etc/UTC", "Europe/Berlin", "Mars/Base"]).to_string());
        }
        out.join(" ")
    }

    #[test]
    fn random_expressions_agree_with_systemd() {
        if !have_systemd_analyze() {
            return;
        }
        // FLEETWRIGHT_CALENDAR_DIFF_{CASES,SEED,ITERATIONS} allow longer one-off runs.
        let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let cases = env("FLEETWRIGHT_CALENDAR_DIFF_CASES", 400);
        let iterations = env("FLEETWRIGHT_CALENDAR_DIFF_ITERATIONS", 3) as u32;
        let mut rng = Rng(env("FLEETWRIGHT_CALENDAR_DIFF_SEED", 0x0123_4567_89ab_cdef));
        let mut mismatches = Vec::new();
        let (mut total, mut valid) = (0, 0);
        for _ in 0..cases {
            let expr = random_expression(&mut rng);
            let base = match rng.below(5) {
                0 => BASE,
                1 => BASE_LEAP,
                2 => BASE_YEAR_END,
                3 => 951_868_799, // 2000-02-29 23:59:59
                // Any second between 2000 and 2100.
                _ => 946_684_800 + (rng.next() % 3_155_760_000) as i64,
            };
            total += 1;
            let ours = parse_calendar(&expr);
            let sd = analyze(&expr, base, iterations);
            let utc_evaluable = |spec: &CalendarSpec| spec.timezone().is_none_or(|tz| UTC_ALIASES.contains(&tz));
            match (&ours, sd.parsed) {
                // systemd parsed it but failed to compute an elapse (its
                // iteration cap); it prints no report then. Our chain must
                // hit the same cap within the same number of steps.
                (Ok(spec), true) if !sd.accepted => {
                    valid += 1;
                    let mut t = base;
                    let mut gave_up = false;
                    for _ in 0..iterations {
                        match spec.search(t) {
                            Ok(next) => t = next,
                            Err(end) => {
                                gave_up = end == SearchEnd::GaveUp;
                                break;
                            }
                        }
                    }
                    if utc_evaluable(spec) && !gave_up {
                        mismatches.push(format!("{expr:?} after {base}: systemd gave up, we did not"));
                    }
                }
                (Ok(spec), true) => {
                    valid += 1;
                    if Some(spec.normalized()) != sd.normalized {
                        mismatches.push(format!("{expr:?}: normalized {:?} vs systemd {:?}", spec.normalized(), sd.normalized));
                    } else if utc_evaluable(spec) {
                        let ours = our_elapses(spec, base, iterations as usize);
                        if ours != sd.elapses {
                            mismatches.push(format!("{expr:?} after {base}: elapses {ours:?} vs systemd {:?}", sd.elapses));
                        }
                    }
                }
                (Err(_), false) => {}
                (Ok(_), false) => mismatches.push(format!("{expr:?}: we accept, systemd rejects")),
                (Err(e), true) => mismatches.push(format!("{expr:?}: we reject ({e}), systemd accepts")),
            }
        }
        eprintln!("random_expressions_agree_with_systemd: {total} expressions, {valid} valid for both");
        assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    }

    fn random_cron(rng: &mut Rng) -> String {
        // (low, high, names, name offset) per field
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let fields: [(u32, u32, &[&str], u32); 5] = [(0, 59, &[], 0), (0, 23, &[], 0), (1, 31, &[], 0), (1, 12, &months, 1), (0, 7, &days, 0)];
        let mut out = Vec::new();
        for (i, (lo, hi, names, offset)) in fields.into_iter().enumerate() {
            // Keep most fields wide open so that 10 elapses come quickly.
            if rng.chance(if i >= 2 { 55 } else { 25 }) {
                out.push("*".to_string());
                continue;
            }
            let value = |rng: &mut Rng, v: u32| -> String {
                if !names.is_empty() && rng.chance(30) && v - offset < names.len() as u32 { names[(v - offset) as usize].to_string() } else { v.to_string() }
            };
            let mut items = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let a = lo + rng.below((hi - lo + 1) as usize) as u32;
                let b = lo + rng.below((hi - lo + 1) as usize) as u32;
                let (a, b) = (a.min(b), a.max(b));
                let step = 1 + rng.below(((hi - lo) / 2).max(1) as usize);
                items.push(match rng.below(6) {
                    0 => value(rng, a),
                    1 => format!("{}-{}", value(rng, a), value(rng, b)),
                    2 => format!("{}-{}/{step}", value(rng, a), value(rng, b)),
                    3 => format!("*/{step}"),
                    4 if i != 4 => format!("{a}/{step}"),
                    _ => value(rng, b),
                });
            }
            out.push(items.join(","));
        }
        out.join(" ")
    }

    #[test]
    fn random_crons_match_brute_force() {
        let systemd = have_systemd_analyze();
        // FLEETWRIGHT_CALENDAR_CRON_{CASES,SEED,SYSTEMD} allow longer one-off runs.
        let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let systemd_checks = env("FLEETWRIGHT_CALENDAR_CRON_SYSTEMD", 60);
        let mut rng = Rng(env("FLEETWRIGHT_CALENDAR_CRON_SEED", 0x5eed_c0de_1234_5678));
        let (mut translated, mut split, mut refused, mut via_systemd) = (0, 0, 0, 0);
        for _ in 0..env("FLEETWRIGHT_CALENDAR_CRON_CASES", 600) {
            let cron = random_cron(&mut rng);
            let exprs = match cron_to_calendars(&cron) {
                Ok(exprs) => exprs,
                Err(e) => {
                    // Only impossible dates may be refused; they never fire.
                    assert!(e.contains("can never fire"), "{cron:?} refused: {e}");
                    assert!(BruteCron::new(&cron).next_n(BASE, 1).is_empty(), "{cron:?} fires after all");
                    refused += 1;
                    continue;
                }
            };
            translated += 1;
            split += usize::from(exprs.len() > 1);
            assert_eq!(cron_to_calendar(&cron).is_ok(), exprs.len() == 1);
            let base = match rng.below(4) {
                0 => BASE,
                1 => BASE_LEAP,
                2 => BASE_YEAR_END,
                _ => 946_684_800 + (rng.next() % 3_155_760_000) as i64, // 2000..2100
            };
            let expected = BruteCron::new(&cron).next_n(base, 10);
            let union = |lists: Vec<Vec<i64>>| {
                let mut all: Vec<i64> = lists.into_iter().flatten().collect();
                all.sort();
                all.dedup();
                all.truncate(10);
                all
            };
            let ours = union(exprs.iter().map(|e| our_elapses(&parse_calendar(e).unwrap(), base, 10)).collect());
            assert_eq!(ours, expected, "cron {cron:?} -> {exprs:?} after {base}");
            if systemd && via_systemd < systemd_checks {
                via_systemd += 1;
                let theirs = union(exprs.iter().map(|e| analyze(e, base, 10).elapses).collect());
                assert_eq!(theirs, expected, "cron {cron:?} -> {exprs:?} after {base} (systemd)");
            }
        }
        eprintln!(
            "random_crons_match_brute_force: {translated} translated ({split} needed two expressions), {refused} refused as never firing, {via_systemd} also checked with systemd"
        );
    }

    /// `systemd-analyze calendar` with `TZ=tz`: the elapses' "(in UTC)" lines (or, for TZ=UTC,
    /// the elapse lines themselves).
    fn analyze_in(tz: &str, expr: &str, base: i64, n: u32) -> Vec<i64> {
        let out = Command::new(SYSTEMD_ANALYZE)
            .env("TZ", tz)
            .env("LC_ALL", "C")
            .env("SYSTEMD_COLORS", "0")
            .args(["calendar", &format!("--iterations={n}"), &format!("--base-time=@{base}"), "--", expr])
            .output()
            .expect("systemd-analyze");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut v = Vec::new();
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once(": ") else { continue };
            let utc_line = key == "(in UTC)" || ((key == "Next elapse" || key.starts_with("Iter. #")) && value.ends_with(" UTC"));
            if utc_line {
                v.push(parse_analyze_time(value).unwrap_or_else(|| panic!("bad line {line:?}")));
            }
        }
        v
    }

    /// Local time and named zones, around daylight-saving changes (a gap skips a run, a fold
    /// runs once), against systemd in those zones.
    #[test]
    fn zones_and_daylight_saving_match_systemd() {
        if !have_systemd_analyze() {
            return;
        }
        let exprs = ["*-*-* 02:30:00", "*-*-* 01:30:00", "hourly", "*:0/20", "*:*:00", "daily", "Mon..Fri 09:00", "*-*-* 00/3:15:00", "*-*~1 23:00"];
        // Around the 2026 changes: US 8 March / 1 November, EU 29 March / 25 October.
        let bases = [1_772_870_400, 1_772_953_200, 1_793_491_200, 1_774_746_000, 1_792_800_000, 1_792_886_400, 1_800_000_000];
        let mut checked = 0;
        for zone in ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"] {
            let tz = jiff::tz::TimeZone::get(zone).expect("tzdata is installed");
            for expr in exprs {
                let spec = parse_calendar(expr).unwrap();
                for base in bases {
                    let n = 6;
                    let theirs = analyze_in(zone, expr, base, n);
                    let mut ours = Vec::new();
                    let mut t = base;
                    while ours.len() < n as usize {
                        match spec.next_elapse_in(t, &tz, None) {
                            Some(x) => {
                                ours.push(x);
                                t = x;
                            }
                            None => break,
                        }
                    }
                    assert_eq!(ours, theirs, "{expr:?} in {zone} after @{base}");
                    // The same expression naming the zone, from a UTC host.
                    let named = parse_calendar(&format!("{expr} {zone}")).unwrap();
                    let theirs = analyze_in("UTC", &format!("{expr} {zone}"), base, 1);
                    assert_eq!(
                        named.next_elapse_in(base, &jiff::tz::TimeZone::UTC, Some(&tz)).into_iter().collect::<Vec<_>>(),
                        theirs,
                        "{expr:?} {zone} after @{base}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 4 * exprs.len() * bases.len());
    }
}
