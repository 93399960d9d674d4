//! Parsing: an `OnCalendar=` expression → a normalized, validated [`CalendarSpec`], by
//! systemd 252's grammar and acceptance rules, with one-line messages that say how to fix it.

use super::{
    ALL_WEEKDAYS, CalendarSpec, Component, EVERY_SECOND, MAX_YEAR, MIN_YEAR, WEEKDAY_ABBREVIATIONS, Zone, ZoneLookup, format_weekdays, leading_word, snippet,
    zone_name_acceptable,
};

/// systemd caps a comma-separated list at 241 entries (`CALENDARSPEC_COMPONENTS_MAX`
/// is checked against a zero-based nesting depth of 240).
const MAX_CHAIN_LEN: usize = 241;

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

impl CalendarSpec {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::{INVALID, VALID, parse};

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
            let err = parse(input).expect_err(input);
            assert!(err.contains(needle), "error for {input:?} should mention {needle:?}, got {err:?}");
            assert!(!err.contains('\n'), "error for {input:?} must be one line: {err:?}");
        }
    }

    /// The corpus `tests/it/calendar.rs` checks against systemd-analyze: every expression
    /// parses, and its normalized form is a fixed point that parses to the same spec.
    #[test]
    fn valid_corpus_parses_to_fixed_points() {
        for expr in VALID {
            let spec = parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
            let normalized = spec.normalized();
            assert_eq!(parse(&normalized), Ok(spec), "{expr:?} via {normalized:?}");
        }
    }

    #[test]
    fn invalid_corpus_is_refused() {
        for expr in INVALID {
            assert!(parse(expr).is_err(), "we accepted invalid {expr:?}");
        }
    }

    /// An `@timestamp` is a UTC civil time up to the last second of 2199, systemd's last year.
    #[test]
    fn timestamps_up_to_the_end_of_2199() {
        let norm = |expr: &str| parse(expr).map(|s| s.normalized());
        assert_eq!(norm("@0").as_deref(), Ok("1970-01-01 00:00:00 UTC"));
        assert_eq!(norm("@-0").as_deref(), Ok("1970-01-01 00:00:00 UTC"));
        assert_eq!(norm("@+86400").as_deref(), Ok("1970-01-02 00:00:00 UTC"));
        assert_eq!(norm("@951782400").as_deref(), Ok("2000-02-29 00:00:00 UTC"));
        assert_eq!(norm("@7258118399").as_deref(), Ok("2199-12-31 23:59:59 UTC"));
        for too_late in ["@7258118400", "@9223372036854775807", "@99999999999999999999"] {
            let err = parse(too_late).expect_err(too_late);
            assert!(err.contains("after the year 2199"), "{too_late}: {err}");
        }
    }
}
