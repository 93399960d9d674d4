//! Backup names, `<stem>-<YYYYMMDDTHHMMSSZ>[-n].sqlite`, and the UTC times in them, read and
//! written with jiff's `strftime`/`strptime`.
//!
//! A name is ours only when its timestamp is exactly what [`compact_timestamp`] writes for
//! some second of 1970..=9999: `strptime` alone is lenient (a sign, a space, one-digit
//! fields, a leap second clamped to :59), so every parse is checked by printing the result
//! back and comparing. Anything else is another file, never listed and never pruned.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::SignedDuration;
use jiff::civil::DateTime;

use super::BackupError;

/// The timestamp in a backup's name.
const COMPACT: &str = "%Y%m%dT%H%M%SZ";
/// `BackupFile::taken_at`: RFC 3339, UTC, to the second.
const RFC3339: &str = "%Y-%m-%dT%H:%M:%SZ";
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// What backups of `db` are named after: its file name without the extension.
pub(super) fn db_stem(db: &Path) -> Result<String, BackupError> {
    db.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).map(str::to_owned).ok_or_else(|| BackupError::NoFileName { path: db.to_path_buf() })
}

/// The UTC wall-clock time of `t`, to the second (the fraction is dropped); an error before
/// 1970 or after 9999. A civil date-time from the epoch rather than a `jiff::Timestamp`:
/// a timestamp's range ends a day before the year 10000 (it leaves room for any offset),
/// and names cover 1970..=9999 whole.
pub(super) fn utc(t: SystemTime) -> Result<DateTime, BackupError> {
    let secs = t.duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_secs()).ok()).ok_or(BackupError::Clock(t))?;
    EPOCH.checked_add(SignedDuration::from_secs(secs)).map_err(|_| BackupError::Clock(t))
}

/// `2025-01-31T04:05:06Z` → `20250131T040506Z`.
pub(super) fn compact(t: DateTime) -> String {
    t.strftime(COMPACT).to_string()
}

/// The compact timestamp of `t` (see [`utc`]).
pub(super) fn compact_timestamp(t: SystemTime) -> Result<String, BackupError> {
    utc(t).map(compact)
}

/// `2025-01-31T04:05:06Z`.
pub(super) fn rfc3339(t: DateTime) -> String {
    t.strftime(RFC3339).to_string()
}

/// A `taken_at` as [`rfc3339`] writes it; `None` for anything else.
pub(super) fn parse_taken_at(s: &str) -> Option<DateTime> {
    canonical(s, RFC3339)
}

/// `s` read by `format`, only if it is exactly how `format` prints a second of 1970..=9999.
fn canonical(s: &str, format: &str) -> Option<DateTime> {
    let t = DateTime::strptime(format, s).ok()?;
    (t.year() >= 1970 && t.strftime(format).to_string() == s).then_some(t)
}

/// The moment a time from [`parse_taken_at`] or [`parse_backup_name`] stands for.
pub(super) fn system_time(t: DateTime) -> SystemTime {
    // Never before the epoch: both parsers refuse years before 1970.
    UNIX_EPOCH + Duration::from_secs(t.duration_since(EPOCH).as_secs().unsigned_abs())
}

/// If `name` is a backup of `stem`: (compact timestamp, sequence, the time it names).
pub(super) fn parse_backup_name<'a>(stem: &str, name: &'a str) -> Option<(&'a str, u32, DateTime)> {
    let rest = name.strip_prefix(stem)?.strip_prefix('-')?.strip_suffix(".sqlite")?;
    let (ts, seq) = match rest.len() {
        16 => (rest, 0),
        n if n > 17 && rest.as_bytes()[16] == b'-' => {
            let digits = &rest[17..];
            if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
                return None;
            }
            (&rest[..16], digits.parse().ok()?)
        }
        _ => return None,
    };
    let taken = canonical(ts, COMPACT)?;
    Some((ts, seq, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_and_read_back_over_the_whole_range() {
        for (secs, compact_form, long) in [
            (0u64, "19700101T000000Z", "1970-01-01T00:00:00Z"),
            (1_738_296_306, "20250131T040506Z", "2025-01-31T04:05:06Z"),
            (1_709_164_800, "20240229T000000Z", "2024-02-29T00:00:00Z"),
            (253_402_300_799, "99991231T235959Z", "9999-12-31T23:59:59Z"),
        ] {
            // The fraction of a second is dropped, never rounded up.
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(999_999_999);
            assert_eq!(compact_timestamp(t).unwrap(), compact_form);
            assert_eq!(rfc3339(utc(t).unwrap()), long);
            let name = format!("m-{compact_form}-3.sqlite");
            let (ts, seq, taken) = parse_backup_name("m", &name).unwrap();
            assert_eq!((ts, seq, rfc3339(taken)), (compact_form, 3, long.to_string()));
            assert_eq!(parse_taken_at(long), Some(taken));
            assert_eq!(system_time(taken), UNIX_EPOCH + Duration::from_secs(secs));
        }
        for t in [UNIX_EPOCH - Duration::from_secs(1), UNIX_EPOCH + Duration::from_secs(253_402_300_800)] {
            assert!(matches!(compact_timestamp(t), Err(BackupError::Clock(_))), "{t:?}");
        }
    }

    #[test]
    fn only_the_exact_form_is_a_backup_name() {
        for name in [
            "m-20250131T040506Z.sqlite",
            "m-20250131T040506Z-1.sqlite",
            "m-20250131T040506Z-4294967295.sqlite",
            "m-20240229T235959Z.sqlite", // a leap day
        ] {
            assert!(parse_backup_name("m", name).is_some(), "{name}");
        }
        for name in [
            "m-20251301T000000Z.sqlite",            // month 13
            "m-20250229T000000Z.sqlite",            // not a leap year
            "m-20250131T240000Z.sqlite",            // hour 24
            "m-20251231T235960Z.sqlite",            // a leap second: never written
            "m-19691231T235959Z.sqlite",            // before 1970
            "m-+2025013T040506Z.sqlite",            // strptime would take the sign
            "m- 2025013T040506Z.sqlite",            // and a space
            "m-2025013T1040506Z.sqlite",            // the T in the wrong place
            "m-20250131t040506z.sqlite",            // lower case
            "m-20250131T040506Z-01.sqlite",         // a leading zero
            "m-20250131T040506Z-0.sqlite",          // -0 is the name without a suffix
            "m-20250131T040506Z-4294967296.sqlite", // beyond u32
            "m-20250131T040506Z-x.sqlite",
            "m-20250131T040506Z.sqlite.tmp-1-0",
            "mm-20250131T040506Z.sqlite",
            "m-2025-01-31.sqlite",
            "m-20250131T040506Zé.sqlite",
        ] {
            assert!(parse_backup_name("m", name).is_none(), "{name}");
        }
        for s in ["yesterday", "2021-01-04T00:00:00.5Z", "2021-01-04T00:00:60Z", "2021-01-04 00:00:00Z", "2021-01-04T00:00:00+00:00", "1969-12-31T23:59:59Z"] {
            assert_eq!(parse_taken_at(s), None, "{s}");
        }
    }
}
