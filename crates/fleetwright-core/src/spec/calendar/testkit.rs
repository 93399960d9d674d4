//! Test support shared by the calendar's unit tests and by the comparisons with the host's
//! systemd in `tests/it/calendar.rs`, which includes this file by its path: the corpora, a
//! brute-force cron oracle and a small random generator. It asks nothing of the host, so the
//! core's tests may use it; what each side checks differs (ours against the oracle here,
//! systemd's against ours there), the inputs are the same.

use super::{CalendarSpec, cron_to_calendar, cron_to_calendars, parse_calendar};

/// 2023-11-14 22:13:20 UTC: not aligned to anything, mid-month.
pub const BASE: i64 = 1_700_000_000;
/// 2024-02-28 23:59:59 UTC: the eve of a leap day.
pub const BASE_LEAP: i64 = 1_709_164_799;
/// 2024-12-31 23:59:59 UTC: the last second of a year.
pub const BASE_YEAR_END: i64 = 1_735_689_599;

/// The zones the unit tests take as installed (the host's tzdata has them all; Mars/Olympus,
/// which the tests use as a zone that is not installed, is not among them).
pub const INSTALLED: [&str; 3] = ["Europe/Berlin", "Etc/UTC", "America/New_York"];

/// [`parse_calendar`] on a host with the [`INSTALLED`] zones.
pub fn parse(expr: &str) -> Result<CalendarSpec, String> {
    parse_calendar(expr, &INSTALLED)
}

/// The Unix second of a UTC civil time.
pub fn utc(year: i16, month: i8, day: i8, hour: i8, minute: i8, second: i8) -> i64 {
    let dt = jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0).expect("a valid civil time");
    jiff::tz::Offset::UTC.to_timestamp(dt).expect("within jiff's range").as_second()
}

/// Our chain of up to `n` elapses, each strictly after the previous one.
pub fn our_elapses(spec: &CalendarSpec, base: i64, n: usize) -> Vec<i64> {
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

/// The first `n` of the union of several chains of elapses (a unit with several
/// `OnCalendar=` lines fires on their union).
pub fn first_of_union(lists: impl IntoIterator<Item = Vec<i64>>, n: usize) -> Vec<i64> {
    let mut all: Vec<i64> = lists.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all.truncate(n);
    all
}

/// Valid expressions, each accepted by systemd 252 with the normalized form we print.
pub const VALID: [&str; 54] = [
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

/// Invalid expressions, each refused by us and by systemd 252 (the ones that name a zone name
/// one that is not installed).
pub const INVALID: [&str; 47] = [
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

/// Cron lines each translated to one OnCalendar expression.
pub const CRONS: [&str; 34] = [
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

/// Cron lines restricting both day-of-month and day-of-week: cron fires when EITHER matches,
/// so each becomes two OnCalendar expressions.
pub const DOM_OR_DOW_CRONS: [&str; 3] = ["0 0 13 * 5", "30 6 1,15 * mon", "0 12 1-7 * sat,sun"];

/// xorshift64*: small, deterministic, good enough for test input.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A deliberately simple, independent cron matcher used as the oracle.
pub struct BruteCron {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

impl BruteCron {
    pub fn new(cron: &str) -> BruteCron {
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
        let value = |s: &str| -> u32 { names.iter().position(|n| n.eq_ignore_ascii_case(s)).map(|i| i as u32 + base).unwrap_or_else(|| s.parse().unwrap()) };
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
    pub fn next_n(&self, after: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut day = after.div_euclid(86_400);
        // systemd (and so the module) never schedules past 2199.
        let last_day = utc(2200, 1, 1, 0, 0, 0) / 86_400;
        while out.len() < n && day < last_day {
            let date = jiff::tz::Offset::UTC.to_datetime(jiff::Timestamp::from_second(day * 86_400).expect("a day before 2200"));
            let dom_ok = self.dom & (1 << date.day()) != 0;
            let dow_ok = self.dow & (1 << date.weekday().to_sunday_zero_offset()) != 0;
            let day_ok = if self.dom_star || self.dow_star { dom_ok && dow_ok } else { dom_ok || dow_ok };
            if self.month & (1 << date.month()) != 0 && day_ok {
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
        }
        out
    }
}

/// A random cron line, mostly valid, with names, ranges, steps and lists.
pub fn random_cron(rng: &mut Rng) -> String {
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

/// What [`check_random_crons`] saw.
#[derive(Debug, Default)]
pub struct CronRun {
    pub translated: usize,
    /// Translations that needed two expressions (day-of-month OR day-of-week).
    pub split: usize,
    /// Lines refused because they can never fire.
    pub refused: usize,
}

/// `cases` random cron lines from `seed`: each is translated, and the union of its
/// expressions' elapses after a random base must be the brute-force oracle's first ten
/// firings. Only lines that can never fire may be refused. `also` gets every translation
/// `(cron, expressions, base, expected)` for a further check (systemd's).
pub fn check_random_crons(cases: u64, seed: u64, mut also: impl FnMut(&str, &[String], i64, &[i64])) -> CronRun {
    let mut rng = Rng(seed);
    let mut run = CronRun::default();
    for _ in 0..cases {
        let cron = random_cron(&mut rng);
        let exprs = match cron_to_calendars(&cron) {
            Ok(exprs) => exprs,
            Err(e) => {
                assert!(e.contains("can never fire"), "{cron:?} refused: {e}");
                assert!(BruteCron::new(&cron).next_n(BASE, 1).is_empty(), "{cron:?} fires after all");
                run.refused += 1;
                continue;
            }
        };
        run.translated += 1;
        run.split += usize::from(exprs.len() > 1);
        assert_eq!(cron_to_calendar(&cron).is_ok(), exprs.len() == 1);
        let base = match rng.below(4) {
            0 => BASE,
            1 => BASE_LEAP,
            2 => BASE_YEAR_END,
            _ => 946_684_800 + (rng.next() % 3_155_760_000) as i64, // 2000..2100
        };
        let expected = BruteCron::new(&cron).next_n(base, 10);
        let ours = first_of_union(exprs.iter().map(|e| our_elapses(&parse(e).unwrap(), base, 10)), 10);
        assert_eq!(ours, expected, "cron {cron:?} -> {exprs:?} after {base}");
        also(&cron, &exprs, base, &expected);
    }
    run
}
