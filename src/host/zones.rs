//! The host's time zones, for the pure core: which names are installed (the calendar parser
//! accepts a zone suffix only then, as systemd does) and the zones themselves (the schedule).

use std::io::Read as _;
use std::path::Path;

use crate::spec::calendar::{NoDatabase, ZoneLookup};

/// Where systemd (and jiff) find the zone database.
const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

/// The host's tzdata: a name is installed when `/usr/share/zoneinfo/<name>` is a regular file
/// that starts with the `TZif` magic, as systemd's `timezone_is_valid()` asks. Without a
/// database, `NoDatabase`'s answer (UTC aliases and `Area/Location` names).
pub struct Tzdata;

impl ZoneLookup for Tzdata {
    fn is_installed(&self, name: &str) -> bool {
        let dir = Path::new(ZONEINFO_DIR);
        if !dir.is_dir() {
            return NoDatabase.is_installed(name);
        }
        // The core checked the name's characters: no `..`, no leading `/`.
        let Ok(mut file) = std::fs::File::open(dir.join(name)) else {
            return false;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).is_ok() && &magic == b"TZif"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_zones_are_regular_tzif_files() {
        if !Path::new(ZONEINFO_DIR).join("Europe/Berlin").is_file() {
            assert!(std::env::var_os("CI").is_none(), "tzdata is missing on CI");
            return;
        }
        assert!(Tzdata.is_installed("Europe/Berlin"));
        assert!(!Tzdata.is_installed("Europe"), "a directory is not a zone");
        assert!(!Tzdata.is_installed("Mars/Olympus"));
        assert!(!crate::spec::calendar::zone_name_acceptable("../../etc/passwd"));
    }
}
