//! Which files of one directory a [`Rule`] removes, and why. Pure: it is given what was listed
//! (name, mtime, size) and `now`, and touches neither the file system nor the clock; the
//! walk, the re-check and the `unlinkat` are the parent module's.
//!
//! The limits apply in this order:
//!
//! 1. `max_age`: matching files whose mtime is older than `now - max_age` go;
//! 2. `max_files`: of what remains, the newest N stay;
//! 3. `max_size`: of what remains, the oldest go until the total is `<= max_size`.
//!
//! "Oldest" is one order for all three: by mtime, ties broken by name (of two files with the
//! same mtime, the greater name counts as newer; names are unique in a directory). Each limit
//! removes a prefix of that order from what the one before left, so what is removed is always
//! a prefix of the directory's files sorted by (mtime, name): never a newer file while an
//! older one stays.

use std::ffi::CString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Rule;

/// `Removed::reason` for files removed because of `max_age`.
pub const REASON_MAX_AGE: &str = "max-age";
/// `Removed::reason` for files removed because of `max_files`.
pub const REASON_MAX_FILES: &str = "max-files";
/// `Removed::reason` for files removed because of `max_size`.
pub const REASON_MAX_SIZE: &str = "max-size";

/// A matching regular file, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub name: CString,
    /// Nanoseconds since the epoch (negative before it).
    pub mtime: i128,
    pub size: u64,
}

/// A rule's limits at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Files with an mtime (ns since the epoch) strictly below this are too old.
    cutoff: Option<i128>,
    max_files: Option<u64>,
    max_size: Option<u64>,
}

impl Limits {
    /// The limits of `rule` at `now`. Saturating: a `max_age` beyond any clock removes nothing
    /// by age, a `now` before the epoch is no error.
    pub(super) fn new(rule: &Rule, now: SystemTime) -> Limits {
        Limits { cutoff: rule.max_age.map(|age| system_time_ns(now).saturating_sub(duration_ns(age))), max_files: rule.max_files, max_size: rule.max_size }
    }
}

/// One file to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Doomed {
    /// Its index in the listed files.
    pub index: usize,
    /// Its place in the (mtime, name) order: 0 is the oldest.
    pub rank: usize,
    /// The limit that removes it: the first of the three (in the order above) that does.
    pub reason: &'static str,
}

/// Which of `files` `limits` remove (see the module docs), in the order of `files`: the
/// directory's order, in which the deletes are cheapest (hashed ext4 directories); `rank`
/// gives the oldest-first order the report is written in.
pub(super) fn select(files: &[Listed], limits: &Limits) -> Vec<Doomed> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_unstable_by(|&a, &b| (files[a].mtime, &files[a].name).cmp(&(files[b].mtime, &files[b].name)));
    let age_end = match limits.cutoff {
        Some(cutoff) => order.partition_point(|&i| files[i].mtime < cutoff),
        None => 0,
    };
    let files_end = match limits.max_files {
        Some(n) => {
            let remaining = (order.len() - age_end) as u64;
            age_end + usize::try_from(remaining.saturating_sub(n)).unwrap_or(0)
        }
        None => age_end,
    };
    let mut size_end = files_end;
    if let Some(max) = limits.max_size {
        let mut total: u128 = order[files_end..].iter().map(|&i| u128::from(files[i].size)).sum();
        while total > u128::from(max) && size_end < order.len() {
            total -= u128::from(files[order[size_end]].size);
            size_end += 1;
        }
    }
    let mut doomed: Vec<Doomed> = order[..size_end]
        .iter()
        .enumerate()
        .map(|(rank, &index)| {
            let reason = if rank < age_end {
                REASON_MAX_AGE
            } else if rank < files_end {
                REASON_MAX_FILES
            } else {
                REASON_MAX_SIZE
            };
            Doomed { index, rank, reason }
        })
        .collect();
    doomed.sort_unstable_by_key(|d| d.index);
    doomed
}

fn system_time_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ns(d),
        Err(e) => duration_ns(e.duration()).saturating_neg(),
    }
}

fn duration_ns(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;
    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// A file `age` seconds old at `now()`.
    fn file(name: &str, age: u64, size: u64) -> Listed {
        Listed { name: CString::new(name).unwrap(), mtime: (1_700_000_000 - i128::from(age)) * S, size }
    }

    fn limits(max_age: Option<u64>, max_files: Option<u64>, max_size: Option<u64>) -> Limits {
        Limits::new(&Rule { max_age: max_age.map(Duration::from_secs), max_files, max_size, ..Rule::new("/logs") }, now())
    }

    /// (name, reason) of what goes, oldest first.
    fn removed(files: &[Listed], limits: &Limits) -> Vec<(String, &'static str)> {
        let mut d = select(files, limits);
        d.sort_by_key(|d| d.rank);
        d.iter().map(|d| (files[d.index].name.to_str().unwrap().to_string(), d.reason)).collect()
    }

    /// a..f, 10 bytes each, 1..6 days old (a the newest), listed in a scrambled order.
    fn six() -> Vec<Listed> {
        ["c", "a", "f", "d", "b", "e"].iter().map(|n| file(n, (u64::from(n.as_bytes()[0] - b'a') + 1) * DAY, 10)).collect()
    }

    #[test]
    fn max_age_removes_what_is_strictly_older_than_the_cutoff() {
        let r = removed(&six(), &limits(Some(3 * DAY), None, None));
        assert_eq!(r, [("f".into(), REASON_MAX_AGE), ("e".into(), REASON_MAX_AGE), ("d".into(), REASON_MAX_AGE)], "c, exactly at the cutoff, stays");
        assert!(removed(&six(), &limits(Some(6 * DAY), None, None)).is_empty());
        assert_eq!(removed(&six(), &limits(Some(0), None, None)).len(), 6);
    }

    #[test]
    fn max_files_keeps_the_newest_and_breaks_ties_by_name() {
        let mut files = six();
        files.push(file("c2", 3 * DAY, 10)); // c's mtime, a greater name: newer than c
        let r = removed(&files, &limits(None, Some(3), None));
        assert_eq!(r.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["f", "e", "d", "c"]);
        assert!(r.iter().all(|(_, why)| *why == REASON_MAX_FILES));
        assert!(removed(&files, &limits(None, Some(100), None)).is_empty());
        assert_eq!(removed(&files, &limits(None, Some(0), None)).len(), 7);
    }

    #[test]
    fn max_size_removes_the_oldest_until_the_rest_fits() {
        let files = [file("new", DAY, 100), file("mid", 2 * DAY, 50), file("old", 3 * DAY, 30), file("older", 4 * DAY, 1)];
        // 181 in all; 150 fits once older and old are gone (exactly).
        assert_eq!(removed(&files, &limits(None, None, Some(150))), [("older".into(), REASON_MAX_SIZE), ("old".into(), REASON_MAX_SIZE)]);
        assert_eq!(removed(&files, &limits(None, None, Some(99))).len(), 4, "smaller than the newest: everything goes");
        assert!(removed(&files, &limits(None, None, Some(181))).is_empty());
        // Sizes that overflow a u64 when added.
        let huge = [file("x", DAY, u64::MAX), file("y", 2 * DAY, u64::MAX)];
        assert_eq!(removed(&huge, &limits(None, None, Some(u64::MAX))), [("y".into(), REASON_MAX_SIZE)]);
    }

    #[test]
    fn the_three_apply_in_turn_and_each_file_says_which_removed_it() {
        let files: Vec<Listed> = [("f01", 1), ("f02", 2), ("f03", 3), ("f04", 4), ("f05", 5), ("f06", 6), ("f07", 7), ("f08", 20), ("f09", 21)]
            .iter()
            .map(|&(n, age)| file(n, age * DAY, 40))
            .collect();
        // Age: f08, f09. Files (5 of f01..f07): f06, f07. Size (f01..f05 = 200 > 130): f05, f04.
        let r = removed(&files, &limits(Some(14 * DAY), Some(5), Some(130)));
        let want = [
            ("f09", REASON_MAX_AGE),
            ("f08", REASON_MAX_AGE),
            ("f07", REASON_MAX_FILES),
            ("f06", REASON_MAX_FILES),
            ("f05", REASON_MAX_SIZE),
            ("f04", REASON_MAX_SIZE),
        ];
        assert_eq!(r, want.map(|(n, why)| (n.to_string(), why)));
    }

    #[test]
    fn the_result_is_in_listing_order_with_ranks_oldest_first() {
        let files = six();
        let d = select(&files, &limits(None, Some(2), None));
        assert!(d.windows(2).all(|w| w[0].index < w[1].index), "{d:?}");
        let mut ranks: Vec<usize> = d.iter().map(|d| d.rank).collect();
        ranks.sort_unstable();
        assert_eq!(ranks, [0, 1, 2, 3]);
        for x in &d {
            // Rank 0 is f (6 days old), rank 3 is c.
            assert_eq!(files[x.index].name.as_bytes()[0], b'f' - x.rank as u8);
        }
        assert!(select(&[], &limits(Some(0), Some(0), Some(0))).is_empty());
        assert!(select(&files, &limits(None, None, None)).is_empty(), "no limit removes nothing");
    }

    #[test]
    fn clocks_and_limits_at_their_extremes_do_not_panic() {
        // b: the oldest mtime a stat can report (st_mtime is an i64 of seconds).
        let files = [file("a", DAY, 1), Listed { name: CString::new("b").unwrap(), mtime: i128::from(i64::MIN) * S, size: 0 }];
        let rule = |age| Rule { max_age: Some(age), max_files: Some(u64::MAX), max_size: Some(u64::MAX), ..Rule::new("/logs") };
        for now in [UNIX_EPOCH, UNIX_EPOCH - Duration::from_secs(1 << 40), UNIX_EPOCH + Duration::from_secs(1 << 40)] {
            for age in [Duration::ZERO, Duration::MAX] {
                let d = select(&files, &Limits::new(&rule(age), now));
                assert!(d.len() <= 2);
            }
        }
        // An age beyond any clock removes nothing by age; age zero at the epoch removes what is older.
        assert!(select(&files, &Limits::new(&rule(Duration::MAX), now())).is_empty());
        assert_eq!(removed(&files, &Limits::new(&rule(Duration::ZERO), UNIX_EPOCH)), [("b".into(), REASON_MAX_AGE)]);
    }

    /// Many directories made up by a fixed generator: what goes is always the shortest prefix of
    /// the (mtime, name) order after which every limit holds.
    #[test]
    fn what_goes_is_the_shortest_oldest_first_prefix_that_meets_every_limit() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let count = next(12) as usize;
            // Few distinct ages, so that ties (broken by name) are common.
            let files: Vec<Listed> = (0..count).map(|i| file(&format!("{:02}", next(100) * 100 + i as u64), next(5) * DAY, next(50))).collect();
            let mut pick = |n: u64| (next(3) > 0).then(|| next(n));
            let (age, max_files, max_size) = (pick(6).map(|d| d * DAY), pick(8), pick(200));
            let lim = limits(age, max_files, max_size);
            let doomed = select(&files, &lim);

            let mut order: Vec<&Listed> = files.iter().collect();
            order.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
            let fits = |cut: usize| {
                let rest = &order[cut..];
                let cutoff = age.map(|a| (1_700_000_000 - i128::from(a)) * S);
                rest.iter().all(|f| cutoff.is_none_or(|c| f.mtime >= c))
                    && max_files.is_none_or(|n| rest.len() as u64 <= n)
                    && max_size.is_none_or(|m| rest.iter().map(|f| f.size).sum::<u64>() <= m)
            };
            let shortest = (0..=order.len()).find(|&cut| fits(cut)).unwrap();
            let mut gone: Vec<&Listed> = doomed.iter().map(|d| &files[d.index]).collect();
            gone.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
            assert_eq!(gone, order[..shortest], "age {age:?} files {max_files:?} size {max_size:?}: {files:?}");
            let mut ranks: Vec<usize> = doomed.iter().map(|d| d.rank).collect();
            ranks.sort_unstable();
            assert_eq!(ranks, (0..shortest).collect::<Vec<_>>());
        }
    }
}
