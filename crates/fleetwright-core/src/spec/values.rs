//! Typed leaf values of the spec: durations, sizes, percentages, limits, names and paths.
//! Each parser takes the text as written and returns a message that says how to fix it.

use std::fmt;

use serde::Serialize;

/// A span of time, kept in milliseconds; printed in the largest exact systemd unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Duration(pub u64);

impl Duration {
    pub fn as_millis(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.to_string()
    }
}

impl fmt::Display for Duration {
    /// systemd.time(7) spelling: `14d`, `2h`, `30min`, `10s`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1000, "s"), (1, "ms")];
        if self.0 == 0 {
            return f.write_str("0");
        }
        let mut rest = self.0;
        let mut parts = Vec::new();
        for (n, u) in UNITS {
            if rest >= n {
                parts.push(format!("{}{u}", rest / n));
                rest %= n;
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// Parse a duration: `30s`, `10m`, `2h`, `14d`, `1w`, `500ms`, `1h30m`, or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "write a number and a unit, like 30s, 10m, 2h, 14d or 1h30m";
    if t.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    if let Ok(n) = t.parse::<u64>() {
        return n.checked_mul(1000).map(Duration).ok_or_else(|| format!("duration {t:?} is too large"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("invalid duration {t:?}; {hint}"));
        }
        let num: f64 = rest[..num_end].parse().map_err(|_| format!("invalid number in duration {t:?}; {hint}"))?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let ms: f64 = match unit {
            "ms" | "msec" => 1.0,
            "s" | "sec" | "second" | "seconds" => 1000.0,
            "m" | "min" | "minute" | "minutes" => 60_000.0,
            "h" | "hr" | "hour" | "hours" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            "w" | "week" | "weeks" => 604_800_000.0,
            "" => return Err(format!("duration {t:?} needs a unit after {num}; {hint}")),
            other => return Err(format!("unknown time unit {other:?} in {t:?}; {hint}")),
        };
        let add = num * ms;
        if !add.is_finite() || add > 1e15 {
            return Err(format!("duration {t:?} is too large"));
        }
        total = total.saturating_add(add.round() as u64);
    }
    Ok(Duration(total))
}

/// A byte size, a share of physical memory, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Size {
    Bytes(u64),
    Percent(u32),
    Infinity,
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

impl Size {
    pub fn bytes(self) -> Option<u64> {
        match self {
            Size::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Size::Infinity => f.write_str("infinity"),
            Size::Percent(p) => write!(f, "{p}%"),
            Size::Bytes(b) => {
                for (n, u) in [(1u64 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")] {
                    if b >= n && b % n == 0 {
                        return write!(f, "{}{u}", b / n);
                    }
                }
                write!(f, "{b}")
            }
        }
    }
}

/// Parse a size: `512M`, `2G`, `1.5G`, `1024`, `50%` (with `allow_percent`), `infinity`.
/// Suffixes are base 1024, as in systemd.resource-control(5).
pub fn parse_size(s: &str, allow_percent: bool) -> Result<Size, String> {
    let t = s.trim();
    let hint = "write bytes with an optional K, M, G or T suffix (base 1024), like 512M or 2G";
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(Size::Infinity);
    }
    if let Some(p) = t.strip_suffix('%') {
        if !allow_percent {
            return Err(format!("a percentage is not allowed here; {hint}"));
        }
        return match p.trim().parse::<u32>() {
            Ok(v) if (1..=100).contains(&v) => Ok(Size::Percent(v)),
            _ => Err(format!("invalid percentage {t:?}; write 1% to 100%")),
        };
    }
    let t2 = t.trim_end_matches(['B', 'b']).trim_end_matches('i');
    let (num, mult) = match t2.chars().last() {
        Some(c @ ('K' | 'k' | 'M' | 'G' | 'T')) => (
            &t2[..t2.len() - 1],
            match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => 1 << 40,
            },
        ),
        _ => (t2, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("invalid size {t:?}; {hint}"))?;
    if !n.is_finite() || n < 0.0 || n * mult as f64 > 1.8e19 {
        return Err(format!("invalid size {t:?}; {hint}"));
    }
    Ok(Size::Bytes((n * mult as f64).round() as u64))
}

/// A CPU quota in percent of one CPU (200% is two full CPUs), as CPUQuota= takes it.
pub fn parse_cpu_quota(s: &str) -> Result<u32, String> {
    let t = s.trim();
    match t.strip_suffix('%').map(|p| p.trim().parse::<u32>()) {
        Some(Ok(v)) if (1..=100_000).contains(&v) => Ok(v),
        _ => Err(format!("invalid CPU quota {t:?}; write a percentage of one CPU like 80% (200% = two CPUs)")),
    }
}

/// A count limit (TasksMax=, LimitNOFILE=): a positive number or `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Limit {
    Count(u64),
    Infinity,
}

impl From<Limit> for String {
    fn from(l: Limit) -> String {
        l.to_string()
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Infinity => f.write_str("infinity"),
        }
    }
}

pub fn parse_limit(s: &str) -> Result<Limit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(Limit::Infinity);
    }
    match t.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Limit::Count(n)),
        _ => Err(format!("invalid limit {t:?}; write a positive whole number or infinity")),
    }
}

/// Agent names: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn check_agent_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit (like {:?})", s, suggest_name(s)))
    }
}

fn suggest_name(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect::<String>().trim_matches('-').to_string();
    out.truncate(63);
    if out.is_empty() { "my-agent".into() } else { out }
}

/// A unit-name prefix: may be empty; otherwise `[a-z0-9][a-z0-9._-]{0,31}`.
pub fn check_unit_prefix(s: &str) -> Result<(), String> {
    let ok = s.is_empty()
        || (s.len() <= 32 && s.as_bytes()[0].is_ascii_alphanumeric() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
    if ok { Ok(()) } else { Err(format!("invalid unitPrefix {s:?}: use up to 32 lowercase letters, digits, '-', '_' or '.', like \"agent-\"")) }
}

/// User and group names as useradd(8) accepts them, or a numeric id.
pub fn check_user_name(s: &str) -> Result<(), String> {
    // A numeric id as systemd takes it (user_record_valid / parse_uid): no leading zero, at most
    // 4294967294, and never 65535 (the 16-bit -1).
    let numeric = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u32>().is_ok_and(|n| n != 65535 && n != u32::MAX);
    let named = !s.is_empty()
        && s.len() <= 32
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0] == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if numeric || named {
        Ok(())
    } else {
        Err(format!(
            "invalid user or group name {s:?}: use lowercase letters, digits, '_' and '-', starting with a letter, or a numeric id without leading zeros"
        ))
    }
}

/// Is `path` in a directory that PrivateTmp= replaces?
pub fn in_tmp(path: &str) -> bool {
    ["/tmp", "/var/tmp"].iter().any(|t| path == *t || path.strip_prefix(t).is_some_and(|r| r.starts_with('/')))
}

/// An absolute, normalized path with nothing systemd would read as syntax: no `.` or `..`
/// component (`/srv/.` is `/srv`, and a check on the spelling would not be a check on the place).
pub fn check_abs_path(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("path {s:?} contains the control character {c:?}; remove it"));
    }
    if !s.starts_with('/') {
        return Err(format!("path {s:?} is not absolute; write it from the root, like /srv/{}", s.trim_start_matches("./")));
    }
    if s.split('/').any(|seg| seg == "..") {
        return Err(format!("path {s:?} contains '..'; write the resolved path"));
    }
    if s.split('/').any(|seg| seg == ".") {
        return Err(format!("path {s:?} contains a '.' component; write the path without it"));
    }
    check_no_continuation(s).map_err(|e| format!("path {s:?} {e}"))
}

/// The components of an absolute path, empty ones (`//`, a trailing `/`) dropped.
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// How a path may relate to a protected place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The place itself and everything above it (cleaning `/var` would clean `/var/lib`).
    AtOrAbove,
    /// The place, above it, and everything below it.
    Tree,
}

/// The places a job that deletes or writes files (log retention, backup targets, heartbeat
/// files) may never be pointed at, by any spelling or depth. `*` in a component of a pattern
/// here matches any name that starts with what is before it (`lib*`: `/lib`, `/lib64`, …).
const SYSTEM_PLACES: &[(&str, Guard)] = &[
    ("/etc", Guard::Tree),
    ("/usr", Guard::Tree),
    ("/boot", Guard::Tree),
    ("/bin", Guard::Tree),
    ("/sbin", Guard::Tree),
    ("/lib*", Guard::Tree),
    ("/proc", Guard::Tree),
    ("/sys", Guard::Tree),
    ("/dev", Guard::Tree),
    ("/var/lib/systemd", Guard::Tree),
    ("/var/lib/fleetwright", Guard::Tree),
    ("/run/systemd", Guard::Tree),
    ("/root/.ssh", Guard::Tree),
    ("/home/*/.ssh", Guard::Tree),
    ("/var/lib", Guard::AtOrAbove),
    ("/var/log", Guard::AtOrAbove),
    ("/var/tmp", Guard::AtOrAbove),
    ("/run", Guard::AtOrAbove),
    ("/tmp", Guard::AtOrAbove),
    ("/home", Guard::AtOrAbove),
    ("/root", Guard::AtOrAbove),
    ("/srv", Guard::AtOrAbove),
    ("/opt", Guard::AtOrAbove),
    ("/mnt", Guard::AtOrAbove),
    ("/media", Guard::AtOrAbove),
    ("/nix", Guard::Tree),
];

/// Does a component of the path (`*` is any name, from a logs pattern) match a component of a
/// protected place (`lib*` is a prefix, `*` any name)?
fn component_matches(path_seg: &str, place_seg: &str) -> bool {
    path_seg == "*" || place_seg == "*" || path_seg == place_seg || place_seg.strip_suffix('*').is_some_and(|p| path_seg.starts_with(p))
}

/// The protected place a path is at, above or (for a tree) under, if any. `extra` adds places
/// of this host (the state and unit directories) as trees.
pub fn system_place<'a>(path: &str, extra: &'a [&'a str]) -> Option<&'a str>
where
    'static: 'a,
{
    let p = components(path);
    if p.is_empty() {
        return Some("/");
    }
    let places = || SYSTEM_PLACES.iter().map(|(pl, g)| (*pl, *g)).chain(extra.iter().map(|pl| (*pl, Guard::Tree)));
    // The place the path is at, if it is one, names the problem best.
    if let Some((place, _)) = places().find(|(pl, _)| {
        let q = components(pl);
        q.len() == p.len() && p.iter().zip(&q).all(|(a, b)| component_matches(a, b))
    }) {
        return Some(place);
    }
    for (place, guard) in places() {
        let q = components(place);
        let common = p.len().min(q.len());
        if !p.iter().zip(&q).take(common).all(|(a, b)| component_matches(a, b)) {
            continue;
        }
        // p is at or above q when it is no longer; under it when it is longer.
        if p.len() <= q.len() || guard == Guard::Tree {
            return Some(place);
        }
    }
    None
}

/// A directory or file that a job deletes in or writes to, checked against [`system_place`].
pub fn check_not_system(path: &str) -> Result<(), String> {
    match system_place(path, &[]) {
        None => Ok(()),
        Some("/") => Err(format!("{path:?} is the root directory; name the agent's own directory, like /srv/<agent>/logs")),
        Some(place) => Err(format!(
            "{path:?} is at, above or inside {place}, a system location that a job must never clean or write to; name the agent's own directory, like /srv/<agent>/logs"
        )),
    }
}

/// Is `path` strictly inside `dir` (component-wise, not by string prefix)?
pub fn is_inside(path: &str, dir: &str) -> bool {
    let (p, d) = (components(path), components(dir));
    p.len() > d.len() && p.iter().zip(&d).all(|(a, b)| a == b)
}

/// Does an environment variable's name say that its value is a secret (an API key, a token)?
pub fn looks_secret(name: &str) -> bool {
    const WORDS: [&str; 8] = ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE"];
    let upper = name.to_ascii_uppercase();
    WORDS.iter().any(|w| upper.contains(w))
}

/// Groups whose members can read or change what only root should (the shadow file, raw disks,
/// kernel memory, every log, the container runtimes, sudo).
pub const PRIVILEGED_GROUPS: &[&str] = &[
    "root",
    "0",
    "wheel",
    "sudo",
    "admin",
    "adm",
    "shadow",
    "disk",
    "kmem",
    "mem",
    "docker",
    "lxd",
    "libvirt",
    "systemd-journal",
    "systemd-network",
    "tty",
    "video",
    "input",
    "staff",
];

/// Text written unquoted as a unit value (`Description=`, `WorkingDirectory=`, …) must not end
/// in a backslash: systemd reads it as a line continuation and the next directive (`User=`!)
/// would become part of this value.
pub fn check_no_continuation(s: &str) -> Result<(), String> {
    if s.ends_with('\\') {
        return Err("ends with '\\', which systemd reads as a line continuation (the next directive would be swallowed); remove it".into());
    }
    Ok(())
}

/// Text a unit file holds verbatim (unquoted, `Description=`): systemd drops the spaces around
/// a value and reads a trailing backslash as a continuation, so either would make what runs
/// differ from what was reviewed.
pub fn check_verbatim(s: &str) -> Result<(), String> {
    check_no_continuation(s)?;
    if s.trim() != s {
        return Err("starts or ends with white space, which systemd drops from a unit file's value; remove it".into());
    }
    Ok(())
}

/// Text that ends up inside a unit file value: one line, no control characters.
pub fn check_text(s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("contains the control character {c:?} (newlines could inject unit directives); keep it on one line")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_systemd_units() {
        for (input, ms, shown) in [
            ("30s", 30_000, "30s"),
            ("10m", 600_000, "10min"),
            ("2h", 7_200_000, "2h"),
            ("14d", 1_209_600_000, "14d"),
            ("1h30m", 5_400_000, "1h 30min"),
            ("500ms", 500, "500ms"),
            ("90", 90_000, "1min 30s"),
            ("1w", 604_800_000, "7d"),
        ] {
            let d = parse_duration(input).unwrap();
            assert_eq!(d.0, ms, "{input}");
            assert_eq!(d.to_string(), shown, "{input}");
        }
        for bad in ["", "abc", "10x", "m", "1.2.3s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_base_1024() {
        assert_eq!(parse_size("2G", false).unwrap(), Size::Bytes(2 << 30));
        assert_eq!(parse_size("512M", false).unwrap().to_string(), "512M");
        assert_eq!(parse_size("1.5G", false).unwrap().to_string(), "1536M");
        assert_eq!(parse_size("0", false).unwrap(), Size::Bytes(0));
        assert_eq!(parse_size("50%", true).unwrap(), Size::Percent(50));
        assert_eq!(parse_size("infinity", false).unwrap(), Size::Infinity);
        assert!(parse_size("50%", false).is_err());
        assert!(parse_size("lots", false).is_err());
        assert!(parse_size("-1G", false).is_err());
    }

    #[test]
    fn names_and_paths() {
        assert!(check_agent_name("outreach-2").is_ok());
        let e = check_agent_name("Bad_Name").unwrap_err();
        assert!(e.contains("\"bad-name\""), "{e}");
        assert!(check_agent_name("../etc").is_err());
        assert!(check_agent_name("a\nb").is_err());
        assert!(check_agent_name(&"a".repeat(64)).is_err());
        assert!(check_abs_path("/srv/x").is_ok());
        assert!(check_abs_path("srv/x").is_err());
        assert!(check_abs_path("/srv/../etc").is_err());
        assert!(check_abs_path("/srv/x\n[Service]").is_err());
        assert!(check_abs_path("/srv/x\\").unwrap_err().contains("line continuation"));
        assert!(check_abs_path("/srv/a\\b").is_ok());
        assert!(check_user_name("agent").is_ok());
        assert!(check_user_name("1000").is_ok());
        assert!(check_user_name("Agent;rm").is_err());
        assert_eq!(parse_cpu_quota("80%").unwrap(), 80);
        assert!(parse_cpu_quota("80").is_err());
        assert_eq!(parse_limit("65536").unwrap(), Limit::Count(65536));
        assert!(parse_limit("0").is_err());
    }
}
