//! The calendar against the host's truth: `systemd-analyze calendar` (systemd 252) for what
//! is accepted, how it is normalized and when it elapses, and the host's tzdata for the zones.
//! The core's unit tests check the same corpora against fixed answers and a brute-force cron
//! oracle; here the answer is the host's. Without `/usr/bin/systemd-analyze` these tests are
//! skipped, except on CI (`CI` set), where they fail.

use std::path::Path;
use std::process::Command;

use fleetwright::host::zones::Tzdata;
use fleetwright::spec::calendar::{CalendarSpec, SearchEnd, ZoneLookup, cron_to_calendar, cron_to_calendars, is_utc_alias, parse_calendar};

// The corpora, the cron oracle and the random generator the core's unit tests use.
#[path = "../../crates/fleetwright-core/src/spec/calendar/testkit.rs"]
mod testkit;

use testkit::{BASE, BASE_LEAP, BASE_YEAR_END, BruteCron, CRONS, DOM_OR_DOW_CRONS, INSTALLED, INVALID, Rng, VALID, first_of_union, our_elapses, utc};

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// [`parse_calendar`] with the host's installed zones, as systemd-analyze sees them.
fn parse_here(expr: &str) -> Result<CalendarSpec, String> {
    parse_calendar(expr, &Tzdata)
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

/// An environment knob for longer one-off runs.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug)]
struct Analyzed {
    /// Exit status 0.
    accepted: bool,
    /// The expression parsed (it may still fail to compute an elapse).
    parsed: bool,
    normalized: Option<String>,
    elapses: Vec<i64>,
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

/// `Tue 2023-11-14 22:30:00 UTC` -> epoch seconds.
fn parse_analyze_time(value: &str) -> Option<i64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, date, time, "UTC"] = parts.as_slice() else {
        return None;
    };
    let civil: jiff::civil::DateTime = format!("{date}T{time}").parse().ok()?;
    Some(jiff::tz::Offset::UTC.to_timestamp(civil).ok()?.as_second())
}

/// The zones the unit tests take as installed are installed here, and systemd's rule holds:
/// a zone suffix is one the host has.
#[test]
fn host_zones_decide_suffixes() {
    if !Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        assert!(std::env::var_os("CI").is_none(), "tzdata is missing on CI");
        eprintln!("SKIPPED: no tzdata");
        return;
    }
    for zone in INSTALLED {
        assert!(Tzdata.is_installed(zone), "{zone}");
    }
    assert_eq!(parse_here("daily Europe/Berlin").unwrap().timezone(), Some("Europe/Berlin"));
    assert!(parse_here("daily Mars/Olympus").is_err());
    if have_systemd_analyze() {
        assert!(analyze("daily Europe/Berlin", BASE, 1).accepted);
        assert!(!analyze("daily Mars/Olympus", BASE, 1).accepted);
    }
}

#[test]
fn matches_systemd_analyze() {
    if !have_systemd_analyze() {
        return;
    }
    let mut compared_chains = 0;
    for expr in VALID {
        let spec = parse_here(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        for base in [BASE, BASE_LEAP, BASE_YEAR_END] {
            let sd = analyze(expr, base, 5);
            assert!(sd.accepted, "systemd-analyze rejected {expr:?}");
            assert_eq!(Some(spec.normalized()), sd.normalized, "normalized form of {expr:?}");
            if spec.timezone().is_none_or(is_utc_alias) {
                assert_eq!(our_elapses(&spec, base, 5), sd.elapses, "elapses of {expr:?} after {base}");
                compared_chains += 1;
            }
        }
    }
    assert_eq!(compared_chains, 3 * (VALID.len() - 1), "every corpus entry but the one in Europe/Berlin compared its elapses");
}

#[test]
fn invalid_rejected_by_us_and_systemd() {
    for expr in INVALID {
        assert!(parse_here(expr).is_err(), "we accepted invalid {expr:?}");
    }
    if !have_systemd_analyze() {
        return;
    }
    for expr in INVALID {
        let sd = analyze(expr, BASE, 1);
        assert!(!sd.accepted, "systemd-analyze accepted {expr:?}, which we reject");
    }
}

#[test]
fn documented_divergence_fractional_seconds() {
    // systemd accepts fractional seconds; fleetwright deliberately does not.
    assert!(parse_here("*:*:00.5").is_err());
    if have_systemd_analyze() {
        assert!(analyze("*:*:00.5", BASE, 1).accepted);
    }
}

/// systemd gives up after 1000 search steps ("Infinite loop in calendar calculation", exit
/// status 1); with fewer steps left before 2199 it says "never". So do we, at the same point.
#[test]
fn iteration_cap_matches_systemd() {
    if !have_systemd_analyze() {
        return;
    }
    let expr = "*-02,04,06,09,11-31";
    let spec = parse_here(expr).unwrap();
    let flip = utc(2033, 7, 1, 0, 0, 0);
    assert_eq!(spec.search(flip - 1), Err(SearchEnd::GaveUp));
    assert!(!analyze(expr, flip - 1, 1).accepted);
    assert_eq!(spec.search(flip), Err(SearchEnd::Never));
    let sd = analyze(expr, flip, 1);
    assert!(sd.accepted && sd.elapses.is_empty());
}

#[test]
fn cron_translation_matches_brute_force_and_systemd() {
    if !have_systemd_analyze() {
        return;
    }
    for cron in CRONS {
        let expr = cron_to_calendar(cron).unwrap_or_else(|e| panic!("{cron:?}: {e}"));
        let expected = BruteCron::new(cron).next_n(BASE, 10);
        let sd = analyze(&expr, BASE, 10);
        assert!(sd.accepted, "systemd-analyze rejected {expr:?} (from {cron:?})");
        assert_eq!(sd.normalized.as_deref(), Some(expr.as_str()), "{cron:?}");
        assert_eq!(sd.elapses, expected, "cron {cron:?} -> {expr:?} (systemd evaluation)");
    }
}

#[test]
fn cron_day_of_month_or_day_of_week() {
    if !have_systemd_analyze() {
        return;
    }
    for cron in DOM_OR_DOW_CRONS {
        let exprs = cron_to_calendars(cron).unwrap();
        let expected = BruteCron::new(cron).next_n(BASE, 10);
        let theirs = first_of_union(exprs.iter().map(|e| analyze(e, BASE, 10).elapses), 10);
        assert_eq!(theirs, expected, "{cron} -> {exprs:?} (systemd)");
    }
}

/// Random expressions built from the grammar (valid and subtly invalid).
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

/// Random expressions must be accepted/rejected, normalized and evaluated exactly like
/// systemd does.
#[test]
fn random_expressions_agree_with_systemd() {
    if !have_systemd_analyze() {
        return;
    }
    // FLEETWRIGHT_CALENDAR_DIFF_{CASES,SEED,ITERATIONS} allow longer one-off runs.
    let cases = knob("FLEETWRIGHT_CALENDAR_DIFF_CASES", 400);
    let iterations = knob("FLEETWRIGHT_CALENDAR_DIFF_ITERATIONS", 3) as u32;
    let mut rng = Rng(knob("FLEETWRIGHT_CALENDAR_DIFF_SEED", 0x0123_4567_89ab_cdef));
    let mut mismatches = Vec::new();
    let mut valid = 0;
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
        let ours = parse_here(&expr);
        let sd = analyze(&expr, base, iterations);
        let utc_evaluable = |spec: &CalendarSpec| spec.timezone().is_none_or(is_utc_alias);
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
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    // The generator must reach expressions both accept, not only refusals.
    assert!(cases < 100 || valid * 10 > cases as usize, "only {valid} of {cases} random expressions were valid");
}

/// Random cron lines: translated, checked against the brute-force oracle (as in the core's
/// unit test) and the first `FLEETWRIGHT_CALENDAR_CRON_SYSTEMD` of them against systemd.
#[test]
fn random_crons_match_brute_force_and_systemd() {
    if !have_systemd_analyze() {
        return;
    }
    // FLEETWRIGHT_CALENDAR_CRON_{CASES,SEED,SYSTEMD} allow longer one-off runs.
    let systemd_checks = knob("FLEETWRIGHT_CALENDAR_CRON_SYSTEMD", 60);
    let cases = knob("FLEETWRIGHT_CALENDAR_CRON_CASES", 600);
    let mut via_systemd = 0;
    let run = testkit::check_random_crons(cases, knob("FLEETWRIGHT_CALENDAR_CRON_SEED", 0x5eed_c0de_1234_5678), |cron, exprs, base, expected| {
        if via_systemd < systemd_checks {
            via_systemd += 1;
            let theirs = first_of_union(exprs.iter().map(|e| analyze(e, base, 10).elapses), 10);
            assert_eq!(theirs, expected, "cron {cron:?} -> {exprs:?} after {base} (systemd)");
        }
    });
    assert_eq!(run.translated + run.refused, cases as usize, "{run:?}");
    assert_eq!(via_systemd, systemd_checks.min(run.translated as u64), "{run:?}");
    eprintln!(
        "{} translated ({} needed two expressions), {} refused as never firing, {via_systemd} also checked with systemd",
        run.translated, run.split, run.refused
    );
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
            let spec = parse_here(expr).unwrap();
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
                let named = parse_here(&format!("{expr} {zone}")).unwrap();
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
