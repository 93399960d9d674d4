//! Grandfather-father-son retention: which backups a [`Policy`] keeps. Pure: no file system,
//! no clock; `take` deletes what this does not keep.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashSet};

use super::names::parse_taken_at;
use super::{BackupFile, Policy};

/// Which of `files` the policy keeps, by path: the newest `last`; plus the newest backup of
/// each of the `daily` most recent UTC days that have a backup; plus the newest of each of the
/// `weekly` most recent ISO weeks that have a backup. Newest by the order they were taken
/// (`seq`), then by the time in their names; a file whose `taken_at` does not parse is always
/// kept (never delete what we do not understand). A file dated in the future counts in none
/// of these (it would take a slot, or stand for a day, forever): it is kept while it is among
/// the newest `max(last, 1)` taken, then pruned like any other. Pure; the input's order does
/// not matter.
///
/// Days are UTC days, weeks ISO weeks (Monday to Sunday, numbered by their ISO year: the
/// days around New Year share one), both jiff's calendar of the time in the name.
pub fn keep(files: &[BackupFile], policy: &Policy) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    let mut order: Vec<_> = files.iter().map(|f| (parse_taken_at(&f.taken_at), f)).collect();
    order.sort_by_key(|&(t, f)| Reverse((f.seq, t)));
    let mut days = HashSet::new();
    let mut weeks = HashSet::new();
    let mut slots = 0usize;
    for (i, (taken, f)) in order.iter().enumerate() {
        if f.future {
            if i < policy.last.max(1) as usize {
                kept.insert(f.path.clone());
            }
            continue;
        }
        let Some(day) = taken.map(|t| t.date()) else {
            kept.insert(f.path.clone());
            continue;
        };
        if slots < policy.last as usize {
            kept.insert(f.path.clone());
        }
        slots += 1;
        if days.len() < policy.daily as usize && days.insert(day) {
            kept.insert(f.path.clone());
        }
        let week = day.iso_week_date();
        if weeks.len() < policy.weekly as usize && weeks.insert((week.year(), week.week())) {
            kept.insert(f.path.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::names::compact_timestamp;
    use crate::ops::backup::testutil::at;
    use std::time::Duration;

    // --- 3. retention -----------------------------------------------------

    /// 40 backups over 60 days: every third day from 2024-01-01 (a Monday),
    /// at 06:00 and 18:00. Newest first.
    fn synthetic() -> Vec<BackupFile> {
        let monday = at("2024-01-01T00:00:00Z");
        let mut v = Vec::new();
        for day in (0..60u64).step_by(3) {
            for hour in [6u64, 18] {
                let t = monday + Duration::from_secs(day * 86_400 + hour * 3600);
                let ts = compact_timestamp(t).unwrap();
                v.push(BackupFile {
                    path: format!("/b/m-{ts}.sqlite"),
                    taken_at: humantime::format_rfc3339_seconds(t).to_string(),
                    bytes: 1,
                    seq: 0,
                    future: false,
                });
            }
        }
        v.reverse();
        assert_eq!(v.len(), 40);
        v
    }

    /// Path of the synthetic backup on day `d` (0 = 2024-01-01) at `h` o'clock.
    fn p(d: u64, h: u64) -> String {
        let t = at("2024-01-01T00:00:00Z") + Duration::from_secs(d * 86_400 + h * 3600);
        format!("/b/m-{}.sqlite", compact_timestamp(t).unwrap())
    }

    fn set(items: &[(u64, u64)]) -> BTreeSet<String> {
        items.iter().map(|&(d, h)| p(d, h)).collect()
    }

    #[test]
    fn keep_last_only() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 3, daily: 0, weekly: 0 });
        assert_eq!(k, set(&[(57, 18), (57, 6), (54, 18)]));
    }

    #[test]
    fn keep_daily_only() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 0, daily: 5, weekly: 0 });
        assert_eq!(k, set(&[(57, 18), (54, 18), (51, 18), (48, 18), (45, 18)]));
    }

    #[test]
    fn keep_weekly_only() {
        // Weeks are days 0-6, 7-13, ...: backups on 57 | 54, 51 | 48, 45, 42 | 39, 36 | ...
        let files = synthetic();
        let k = keep(&files, &Policy { last: 0, daily: 0, weekly: 4 });
        assert_eq!(k, set(&[(57, 18), (54, 18), (48, 18), (39, 18)]));
        let all_weeks = keep(&files, &Policy { last: 0, daily: 0, weekly: 100 });
        assert_eq!(all_weeks, set(&[(57, 18), (54, 18), (48, 18), (39, 18), (33, 18), (27, 18), (18, 18), (12, 18), (6, 18)]));
    }

    #[test]
    fn keep_combined_is_the_union() {
        let files = synthetic();
        let k = keep(&files, &Policy { last: 3, daily: 5, weekly: 4 });
        assert_eq!(k, set(&[(57, 18), (57, 6), (54, 18), (51, 18), (48, 18), (45, 18), (39, 18)]));
        // The example from the docs: {last: 7, daily: 7, weekly: 4}.
        let k = keep(&files, &Policy { last: 7, daily: 7, weekly: 4 });
        assert_eq!(
            k,
            set(&[
                (57, 18),
                (57, 6),
                (54, 18),
                (54, 6),
                (51, 18),
                (51, 6),
                (48, 18), // last 7
                (45, 18),
                (42, 18),
                (39, 18), // daily 7 adds these; weekly 4 adds none
            ])
        );
    }

    #[test]
    fn keep_edges() {
        let files = synthetic();
        assert!(keep(&files, &Policy::default()).is_empty());
        assert!(keep(&[], &Policy { last: 3, daily: 3, weekly: 3 }).is_empty());
        assert_eq!(keep(&files, &Policy { last: 100, daily: 0, weekly: 0 }).len(), 40);
        assert_eq!(keep(&files, &Policy { last: 0, daily: 100, weekly: 0 }).len(), 20);
        // Unsorted input gives the same answer.
        let mut shuffled = files.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        let pol = Policy { last: 3, daily: 5, weekly: 4 };
        assert_eq!(keep(&shuffled, &pol), keep(&files, &pol));
    }

    #[test]
    fn keep_iso_weeks_and_utc_days_across_year_end() {
        let f = |t: &str| BackupFile { path: t.to_string(), taken_at: t.to_string(), bytes: 0, seq: 0, future: false };
        // 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO week 2020-W53.
        let files = vec![
            f("2021-01-04T00:00:00Z"), // Mon, 2021-W01
            f("2021-01-03T23:59:59Z"), // Sun, 2020-W53
            f("2021-01-03T00:00:00Z"),
            f("2020-12-31T12:00:00Z"),
            f("2020-12-28T00:00:00Z"),
            f("2020-12-27T23:59:59Z"), // Sun, 2020-W52
        ];
        let k = keep(&files, &Policy { last: 0, daily: 0, weekly: 3 });
        let want: BTreeSet<String> = ["2021-01-04T00:00:00Z", "2021-01-03T23:59:59Z", "2020-12-27T23:59:59Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
        let k = keep(&files, &Policy { last: 0, daily: 2, weekly: 0 });
        let want: BTreeSet<String> = ["2021-01-04T00:00:00Z", "2021-01-03T23:59:59Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
        // Unparseable timestamps are never pruned, and use no `last` slot.
        let k = keep(&[f("yesterday"), f("2021-01-04T00:00:00Z"), f("2021-01-03T00:00:00Z")], &Policy { last: 1, daily: 0, weekly: 0 });
        let want: BTreeSet<String> = ["yesterday", "2021-01-04T00:00:00Z"].into_iter().map(String::from).collect();
        assert_eq!(k, want);
    }

    #[test]
    fn keep_goes_by_the_order_taken_and_counts_no_file_dated_in_the_future() {
        let f = |path: &str, taken_at: &str, seq: u64, future: bool| BackupFile { path: path.into(), taken_at: taken_at.into(), bytes: 0, seq, future };
        let files = [
            f("d", "2025-01-03T00:00:00Z", 0, false),
            f("b", "2025-01-05T00:00:00Z", 1, false),
            f("future", "2026-06-01T00:00:00Z", 2, true),
            f("a", "2025-01-01T00:00:00Z", 3, false), // the oldest date, taken last (a clock put right)
            f("c", "2025-01-04T00:00:00Z", 0, false),
        ];
        let kept = |last, daily, weekly| keep(&files, &Policy { last, daily, weekly }).into_iter().collect::<Vec<_>>();
        // Newest first: a, future, b, then the two the ledger does not know, by their dates.
        assert_eq!(kept(2, 0, 0), ["a", "b", "future"], "the future one is kept among the newest `last` taken, in no slot");
        assert_eq!(kept(4, 0, 0), ["a", "b", "c", "d", "future"]);
        assert_eq!(kept(1, 0, 0), ["a"], "past the newest `max(last, 1)`, the future one goes");
        assert_eq!(kept(0, 1, 0), ["a"], "it never stands for a day");
        assert_eq!(kept(0, 3, 0), ["a", "b", "c"]);
        assert_eq!(kept(0, 0, 1), ["a"]);
    }
}
