//! Cron translation: a classic 5-field cron line → the `OnCalendar=` expressions with the
//! same firing times.

use std::fmt::Write as _;

use super::{NoDatabase, format_weekdays, parse_calendar, snippet};

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
mod tests {
    use super::super::testkit::{BASE, BruteCron, CRONS, DOM_OR_DOW_CRONS, check_random_crons, first_of_union, our_elapses, parse};
    use super::*;

    #[test]
    fn cron_translation_matches_brute_force() {
        for cron in CRONS {
            let expr = cron_to_calendar(cron).unwrap_or_else(|e| panic!("{cron:?}: {e}"));
            let expected = BruteCron::new(cron).next_n(BASE, 10);
            let spec = parse(&expr).unwrap();
            assert_eq!(spec.normalized(), expr, "translation of {cron:?} is not normalized");
            assert_eq!(our_elapses(&spec, BASE, 10), expected, "cron {cron:?} -> {expr:?}");
        }
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
        for cron in DOM_OR_DOW_CRONS {
            let err = cron_to_calendar(cron).expect_err(cron);
            assert!(err.contains("EITHER") && err.contains("`calendar:`"), "{err}");
            let exprs = cron_to_calendars(cron).unwrap();
            assert_eq!(exprs.len(), 2, "{cron}");
            let expected = BruteCron::new(cron).next_n(BASE, 10);
            let ours = first_of_union(exprs.iter().map(|e| our_elapses(&parse(e).unwrap(), BASE, 10)), 10);
            assert_eq!(ours, expected, "{cron} -> {exprs:?}");
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
            ("0 0 31 4,6,9,11 *", "can never fire"),
            ("x * * * *", "invalid minute value"),
            ("0 0 13 * 5", "EITHER"),
        ];
        for (cron, needle) in cases {
            let err = cron_to_calendar(cron).expect_err(cron);
            assert!(err.contains(needle), "error for {cron:?} should mention {needle:?}, got {err:?}");
            assert!(!err.contains('\n'));
        }
        // February 29 exists (in leap years), so it is not refused.
        assert_eq!(cron_to_calendar("0 0 29 2 *").as_deref(), Ok("*-02-29 00:00:00"));
    }

    /// Random cron lines against the brute-force oracle; `tests/it/calendar.rs` runs the same
    /// lines through systemd too (and has the knobs for longer runs).
    #[test]
    fn random_crons_match_brute_force() {
        let run = check_random_crons(600, 0x5eed_c0de_1234_5678, |_, _, _, _| {});
        assert_eq!(run.translated + run.refused, 600, "{run:?}");
        assert!(run.translated > 500 && run.split > 0, "most lines translate, some into two expressions: {run:?}");
    }
}
