//! Evaluation: when an expression elapses next, by systemd's own search (`find_next()` in
//! `calendarspec.c`), quirks included.

use std::cmp::Ordering;

use super::{CalendarSpec, Component, MAX_YEAR, UTC_ALIASES, Zone};

/// systemd gives up on a search after this many loop iterations and reports
/// an error instead of an elapse (`MAX_CALENDAR_ITERATIONS`); we report `None`.
const MAX_SEARCH_ITERATIONS: u32 = 1000;

const USEC_PER_SEC: i64 = 1_000_000;

impl CalendarSpec {
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

    /// The search behind [`CalendarSpec::next_elapse`] and [`CalendarSpec::next_elapse_in`],
    /// on naive civil time (the expression's fields read as UTC, whatever zone it names), with
    /// the reason when it finds nothing: systemd tells an expression that never elapses again
    /// from one whose search it gave up on (an error, and the timer does not fire).
    pub fn search(&self, after_unix: i64) -> Result<i64, SearchEnd> {
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
}

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
pub enum SearchEnd {
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

#[cfg(test)]
mod tests {
    use super::super::testkit::{BASE, parse, utc};
    use super::*;
    use jiff::tz::{Offset, TimeZone};

    #[test]
    fn next_elapse_hand_checked() {
        let next = |expr: &str, after: i64| parse(expr).unwrap().next_elapse(after);
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
        assert_eq!(next("2199-12-31 23:59:59", BASE), Some(utc(2199, 12, 31, 23, 59, 59)));
        assert_eq!(next("2199-12-31 23:59:59", utc(2199, 12, 31, 23, 59, 59)), None);
    }

    /// systemd gives up after 1000 search steps ("Infinite loop in calendar
    /// calculation", exit status 1); with fewer steps left before 2199 it
    /// says "never". The flip point was measured with systemd-analyze 252
    /// (`tests/it/calendar.rs` measures it again).
    #[test]
    fn iteration_cap_matches_systemd() {
        let spec = parse("*-02,04,06,09,11-31").unwrap();
        let flip = utc(2033, 7, 1, 0, 0, 0);
        assert_eq!(spec.search(flip - 1), Err(SearchEnd::GaveUp));
        assert_eq!(spec.search(flip), Err(SearchEnd::Never));
        assert_eq!(spec.next_elapse(flip - 1), None);
    }

    /// systemd 252 carries an overflowing open repetition into the next
    /// field but only resets the field right below the one that changed, so
    /// some firings are skipped. We reproduce that (it is what the host will
    /// do); `cron_to_calendar` avoids emitting such forms.
    #[test]
    fn next_elapse_reproduces_systemd_carry_quirks() {
        let next = |expr: &str, after: i64| parse(expr).unwrap().next_elapse(after);
        assert_eq!(next("*:00/24", utc(2023, 11, 14, 23, 48, 0)), Some(utc(2023, 11, 15, 0, 24, 0)));
        assert_eq!(next("*:00,24,48", utc(2023, 11, 14, 23, 48, 0)), Some(utc(2023, 11, 15, 0, 0, 0)));
        assert_eq!(next("00/5:00", utc(2024, 1, 31, 21, 0, 0)), Some(utc(2024, 2, 1, 5, 0, 0)));
        assert_eq!(next("*-*-01/7", utc(2023, 12, 29, 12, 0, 0)), Some(utc(2024, 1, 8, 0, 0, 0)));
        assert_eq!(next("*-*-01..29/7", utc(2023, 12, 29, 12, 0, 0)), Some(utc(2024, 1, 1, 0, 0, 0)));
        // The search starts 1µs after `after`, inside the same second.
        assert_eq!(next("*:00/7:30", utc(2024, 2, 28, 23, 59, 59)), Some(utc(2024, 2, 29, 0, 7, 30)));
    }

    /// The hand-kept part of the search: `timegm()`'s carrying of out-of-range fields.
    #[test]
    fn out_of_range_fields_carry_like_timegm() {
        let tm = |year, mon, mday, hour, min, sec| Tm { year, mon, mday, hour, min, sec };
        let carried = |t: Tm| {
            let n = t.normalized();
            (n.year, n.mon + 1, n.mday, n.hour, n.min, n.sec)
        };
        assert_eq!(carried(tm(2024, 1, 30, 0, 0, 0)), (2024, 3, 1, 0, 0, 0), "30 February of a leap year");
        assert_eq!(carried(tm(2023, 1, 30, 0, 0, 0)), (2023, 3, 2, 0, 0, 0), "30 February");
        assert_eq!(carried(tm(2023, 12, 1, 0, 0, 0)), (2024, 1, 1, 0, 0, 0), "month 13");
        assert_eq!(carried(tm(2024, 2, 0, 0, 0, 0)), (2024, 2, 29, 0, 0, 0), "day 0 of March");
        assert_eq!(carried(tm(2024, 11, 31, 24, 0, 0)), (2025, 1, 1, 0, 0, 0), "hour 24 of New Year's Eve");
        assert_eq!(carried(tm(2024, 0, 1, 0, -1, 0)), (2023, 12, 31, 23, 59, 0), "minute -1");
        assert_eq!(carried(tm(2199, 11, 31, 23, 59, 60)), (2200, 1, 1, 0, 0, 0));
        assert_eq!(tm(2024, 0, 1, 0, 0, 0).weekday_from_monday(), 0, "1 January 2024 was a Monday");
        assert_eq!(tm(2023, 11, 31, 0, 0, 0).weekday_from_monday(), 6, "31 December 2023 was a Sunday");
        assert_eq!(Tm::first_second_after_max_year(), utc(2199, 12, 31, 23, 59, 59) + 1);
        assert_eq!(Tm::from_unix(-1), tm(1969, 11, 31, 23, 59, 59));

        // `~` days count back from the month's last day (February 2024 has 29).
        assert_eq!(day_from_end_of_month(2024, 1, 1), 29);
        assert_eq!(day_from_end_of_month(2023, 1, 1), 28);
        assert_eq!(day_from_end_of_month(2024, 1, 29), 1);
        assert_eq!(day_from_end_of_month(2024, 11, 3), 29);
        for outside in [0, -1, 30] {
            assert_eq!(day_from_end_of_month(2024, 1, outside), -1, "~{outside} of February 2024");
        }
    }

    /// Daylight saving by POSIX rules (the same as the tzdata's for 2026): a run in a
    /// spring-forward gap is skipped, one in a fall-back fold runs once, at its first
    /// occurrence. `tests/it/calendar.rs` compares the same with systemd in the real zones.
    #[test]
    fn next_elapse_in_follows_local_time() {
        let berlin = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        let kolkata = TimeZone::fixed(Offset::from_seconds(5 * 3600 + 1800).unwrap());
        let next = |expr: &str, after: i64, local: &TimeZone| parse(expr).unwrap().next_elapse_in(after, local, None);

        // Berlin springs forward at 02:00 on 29 March 2026: 02:30 does not exist that day.
        assert_eq!(next("*-*-* 02:30:00", utc(2026, 3, 28, 12, 0, 0), &berlin), Some(utc(2026, 3, 30, 0, 30, 0)));
        // It falls back at 03:00 on 25 October: 02:30 happens twice, the run once.
        assert_eq!(next("*-*-* 02:30:00", utc(2026, 10, 24, 12, 0, 0), &berlin), Some(utc(2026, 10, 25, 0, 30, 0)));
        assert_eq!(next("*-*-* 02:30:00", utc(2026, 10, 25, 0, 30, 0), &berlin), Some(utc(2026, 10, 26, 1, 30, 0)));
        assert_eq!(next("hourly", utc(2026, 10, 25, 0, 30, 0), &berlin), Some(utc(2026, 10, 25, 2, 0, 0)));
        // New York springs forward on 8 March.
        assert_eq!(next("*-*-* 02:30:00", utc(2026, 3, 7, 12, 0, 0), &new_york), Some(utc(2026, 3, 9, 6, 30, 0)));
        assert_eq!(next("daily", BASE, &kolkata), Some(utc(2023, 11, 15, 18, 30, 0)));
        assert_eq!(next("daily", BASE, &TimeZone::UTC), parse("daily").unwrap().next_elapse(BASE));

        // An expression naming a zone is evaluated there, whatever the host's zone is.
        let named = parse("daily Europe/Berlin").unwrap();
        assert_eq!(named.next_elapse_in(BASE, &kolkata, None), None, "the zone was not resolved");
        assert_eq!(named.next_elapse_in(BASE, &kolkata, Some(&berlin)), Some(utc(2023, 11, 14, 23, 0, 0)));
        for utc_named in ["daily UTC", "daily Etc/UTC"] {
            assert_eq!(parse(utc_named).unwrap().next_elapse_in(BASE, &berlin, None), Some(utc(2023, 11, 15, 0, 0, 0)), "{utc_named}");
        }
    }
}
