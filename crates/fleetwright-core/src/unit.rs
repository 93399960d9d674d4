//! systemd unit files as values: build them section by section, print them, parse them back,
//! and compare two of them the way a running service cares about ("equal except these keys").

use std::collections::BTreeMap;

/// The first line of every file fleetwright writes; a file without it is never ours.
pub const MARKER: &str = "# Managed by fleetwright: edits are overwritten on the next apply.";

/// Keys that change what a file says but not what a unit runs: a change to these alone rewrites
/// the file and reloads the manager, but restarts nothing (as NixOS switch-to-configuration
/// treats `Description=`). `OnFailure=`/`OnSuccess=` (the failure reporter, added with the
/// Fleet's `notify` list) are read by the manager at the reload and act after a run: adding
/// notifications restarts no agent.
pub const COSMETIC_KEYS: [&str; 4] = ["Description", "Documentation", "OnFailure", "OnSuccess"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub header: Vec<String>,
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl UnitFile {
    pub fn new(header: Vec<String>) -> Self {
        UnitFile { header, sections: Vec::new() }
    }
    /// Start a new section; the following `set` calls add to it.
    pub fn section(&mut self, name: &str) -> &mut Self {
        self.sections.push((name.to_string(), Vec::new()));
        self
    }
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.sections.last_mut().expect("a section first").1.push((key.to_string(), value.into()));
        self
    }
    pub fn set_opt(&mut self, key: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }
    /// The `(key, value)` lines of every `[section]` of this file, in order. The renderer writes
    /// each section once; all of them are read, as systemd (and [`parse`]) would.
    pub fn entries<'a>(&'a self, section: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.sections.iter().filter(move |(name, _)| name == section).flat_map(|(_, kv)| kv.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
    /// The values of `key` in `[section]`, in order.
    pub fn values<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries(section).filter(move |(k, _)| *k == key).map(|(_, v)| v)
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            out.push_str(h);
            out.push('\n');
        }
        for (name, entries) in &self.sections {
            out.push_str(&format!("\n[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
        out
    }
}

/// What a rendered file may say, for [`UnitFile::check`].
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The Fleet's `allowRoot`: without it no unit runs an agent's program as root.
    pub allow_root: bool,
    /// A system manager's unit (`User=`/`Group=` apply); a user manager runs everything as its user.
    pub system: bool,
    /// fleetwright's own binary, as the renderer quotes it: the only program a privileged (`+`)
    /// command line, or a unit without `User=`, may run when root is not allowed.
    pub exe: &'a str,
    /// The directory of the host's encrypted credentials (`render::credential_dir` without
    /// the agent): the only place `LoadCredentialEncrypted=` may read from.
    pub credentials: &'a str,
}

/// The sections and keys the renderer writes; anything else in a rendered file is a bug.
const SECTIONS: [&str; 5] = ["Unit", "Service", "Timer", "Install", "Journal"];
const KEYS: [&str; 52] = [
    "AccuracySec",
    "After",
    "CPUQuota",
    "Description",
    "Environment",
    "EnvironmentFile",
    "ExecReload",
    "ExecStart",
    "ExecStartPre",
    "Group",
    "IOSchedulingClass",
    "LimitNOFILE",
    "LoadCredential",
    "LoadCredentialEncrypted",
    "MaxRetentionSec",
    "MemoryMax",
    "MemorySwapMax",
    "Nice",
    "NoNewPrivileges",
    "NotifyAccess",
    "OnActiveSec",
    "OnBootSec",
    "OnCalendar",
    "OnUnitActiveSec",
    "Persistent",
    "PrivateTmp",
    "ProtectHome",
    "ProtectSystem",
    "RandomizedDelaySec",
    "ReadWritePaths",
    "Restart",
    "RestartSec",
    "RuntimeMaxSec",
    "RuntimeMaxUse",
    "SuccessExitStatus",
    "SystemMaxUse",
    "TasksMax",
    "TimeoutStartSec",
    "Type",
    "Unit",
    "User",
    "WantedBy",
    "Wants",
    "WatchdogSec",
    "WorkingDirectory",
    "UMask",
    "ReadOnlyPaths",
    "Documentation",
    "Requires",
    "PartOf",
    "OnFailure",
    "OnSuccess",
];

impl UnitFile {
    /// The last line of defence: re-check every line this file would print, so that a value the
    /// spec checks missed can never become a directive, a privileged command or `User=root`.
    /// Errors name the unit line.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        let bad_text = |s: &str| s.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'));
        for h in &self.header {
            if !h.starts_with('#') || bad_text(h) {
                return Err(format!("header line {h:?} is not a one-line comment"));
            }
        }
        for (section, entries) in &self.sections {
            if !SECTIONS.contains(&section.as_str()) {
                return Err(format!("unexpected section [{section}]"));
            }
            let mut user = None;
            let mut programs = Vec::new();
            for (k, v) in entries {
                if !KEYS.contains(&k.as_str()) {
                    return Err(format!("unexpected key {k}= in [{section}]"));
                }
                if bad_text(v) {
                    return Err(format!("{k}= holds a control character: {v:?}"));
                }
                if v.ends_with('\\') || v.trim() != v {
                    return Err(format!("{k}= would not be read as written (a trailing backslash or surrounding space): {v:?}"));
                }
                match k.as_str() {
                    "User" | "Group" => {
                        let named = !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
                        if !named {
                            return Err(format!("{k}={v} is not a user or group name"));
                        }
                        if !policy.allow_root && (v == "root" || v == "0" || (k == "Group" && crate::spec::values::PRIVILEGED_GROUPS.contains(&v.as_str()))) {
                            return Err(format!("{k}={v} without allowRoot"));
                        }
                        if k == "User" {
                            user = Some(v.as_str());
                        }
                    }
                    "ExecStart" | "ExecStartPre" | "ExecReload" => {
                        let cmd = v.trim_start_matches(['+', '!', '@', '-', ':']);
                        let privileged = cmd.len() != v.len();
                        if !cmd.starts_with('"') {
                            return Err(format!("{k}= does not start with a quoted program: {v:?}"));
                        }
                        if privileged && !(v.starts_with('+') && cmd.starts_with(policy.exe) && v.len() == cmd.len() + 1) {
                            return Err(format!("{k}= runs a program with privileges that is not fleetwright itself: {v:?}"));
                        }
                        programs.push(cmd);
                    }
                    // Only the agent's own failure reporter (render::notify_template).
                    "OnFailure" if !v.ends_with(".notify@%n.service") || v.contains(char::is_whitespace) => {
                        return Err(format!("{k}={v} is not fleetwright's failure reporter"));
                    }
                    "OnSuccess" if !v.ends_with(".recovered@%n.service") || v.contains(char::is_whitespace) => {
                        return Err(format!("{k}={v} is not fleetwright's failure reporter"));
                    }
                    "WorkingDirectory" | "EnvironmentFile" if !v.trim_start_matches('-').starts_with('/') => {
                        return Err(format!("{k}={v} is not an absolute path"));
                    }
                    "LoadCredential" => {
                        let ok = v.split_once(':').is_some_and(|(name, path)| !name.is_empty() && !name.contains('/') && path.starts_with('/'));
                        if !ok {
                            return Err(format!("LoadCredential={v} is not NAME:/absolute/path"));
                        }
                    }
                    "LoadCredentialEncrypted" => {
                        let ok = v.split_once(':').is_some_and(|(name, path)| {
                            !name.is_empty()
                                && !name.contains('/')
                                && path.strip_prefix(policy.credentials).is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|s| s == ".."))
                        });
                        if !ok {
                            return Err(format!("LoadCredentialEncrypted={v} is not NAME:PATH of a credential fleetwright encrypted for this host"));
                        }
                    }
                    _ => {}
                }
            }
            // A service without User= runs as the manager's user: root, for a system manager.
            if section == "Service"
                && policy.system
                && !policy.allow_root
                && user.is_none()
                && let Some(p) = programs.iter().find(|p| !p.starts_with(policy.exe))
            {
                return Err(format!("a service without User= (so as root) runs {p}, which is not fleetwright itself, without allowRoot"));
            }
        }
        Ok(())
    }
}

impl UnitFile {
    /// Read back a file as [`UnitFile::render`] prints it, strictly: comments first, then
    /// `[Section]` and `Key=Value` lines only. For checking a rendered text line by line
    /// (the fuzz target): anything else is an error naming the line.
    pub fn from_rendered(text: &str) -> Result<UnitFile, String> {
        let mut f = UnitFile::default();
        for (i, line) in text.split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') && f.sections.is_empty() {
                f.header.push(line.to_string());
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                f.sections.push((name.to_string(), Vec::new()));
            } else if let (Some((k, v)), Some(sec)) = (line.split_once('='), f.sections.last_mut()) {
                sec.1.push((k.to_string(), v.to_string()));
            } else {
                return Err(format!("line {}: {line:?} is not a line the renderer writes", i + 1));
            }
        }
        Ok(f)
    }
}

/// A unit file parsed as systemd reads it: sections of ordered key/value pairs; comments and
/// blank lines dropped, continuation lines joined.
pub type Parsed = BTreeMap<String, Vec<(String, String)>>;

/// Read a unit file's text as systemd would. For text that comes from disk (an observed file,
/// or one of two versions being compared): a unit fleetwright renders carries its [`UnitFile`]
/// value (`render::RenderedUnit::file`), which is read instead.
pub fn parse(text: &str) -> Parsed {
    let mut out: Parsed = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = if pending.is_empty() { raw.trim().to_string() } else { format!("{pending} {}", raw.trim()) };
        if let Some(stripped) = line.strip_suffix('\\') {
            pending = stripped.trim_end().to_string();
            continue;
        }
        pending.clear();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            out.entry(section.clone()).or_default();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone()).or_default().push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// How two versions of a unit differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Byte for byte the same.
    Identical,
    /// Only comments, whitespace or cosmetic keys differ.
    Cosmetic,
    /// Only `[Install]` differs: re-enable, restart nothing.
    Install,
    /// What runs differs.
    Semantic,
}

/// The `WantedBy=` targets of a unit file's [Install] section, from its text (a file read
/// from disk; a rendered unit has them as a value).
/// The `LoadCredentialEncrypted=NAME:PATH` settings of a unit file's text (one a renderer wrote:
/// one setting per line), as `(NAME, PATH)`: which secrets it reads, and from which files.
pub fn encrypted_credentials(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.strip_prefix("LoadCredentialEncrypted=")).filter_map(|v| v.split_once(':'))
}

pub fn wanted_by(text: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if section == "Install"
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "WantedBy"
        {
            out.extend(v.split_whitespace().map(str::to_string));
        }
    }
    out
}

pub fn compare(old: &str, new: &str) -> Change {
    if old == new {
        return Change::Identical;
    }
    let strip =
        |p: Parsed| -> Parsed { p.into_iter().map(|(s, kv)| (s, kv.into_iter().filter(|(k, _)| !COSMETIC_KEYS.contains(&k.as_str())).collect())).collect() };
    let (a, b) = (strip(parse(old)), strip(parse(new)));
    if a == b {
        return Change::Cosmetic;
    }
    let without_install = |p: &Parsed| -> Parsed { p.iter().filter(|(s, _)| s.as_str() != "Install").map(|(s, kv)| (s.clone(), kv.clone())).collect() };
    if without_install(&a) == without_install(&b) { Change::Install } else { Change::Semantic }
}

/// Quote one word for a command line or list setting (systemd.syntax(7)): double quotes with
/// `\` and `"` escaped; `%` doubled so it is not a specifier; `$` doubled where variables expand.
pub fn quote(word: &str, expands_vars: bool) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if expands_vars => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value written as-is on one line: only `%` needs escaping (it would be a specifier).
pub fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(entries: &[(&str, &str)]) -> UnitFile {
        let mut u = UnitFile::new(vec![MARKER.to_string()]);
        u.section("Service");
        for (k, v) in entries {
            u.set(k, *v);
        }
        u
    }

    const POLICY: Policy = Policy { allow_root: false, system: true, exe: "\"/usr/bin/fleetwright\"", credentials: "/var/lib/fleetwright/credentials" };

    #[test]
    fn the_last_line_of_defence_refuses_what_the_renderer_never_means() {
        let fine = unit(&[("ExecStart", "\"/bin/true\""), ("User", "agent"), ("ExecStartPre", "+\"/usr/bin/fleetwright\" slot-prepare --dir /run/x")]);
        assert_eq!(fine.check(&POLICY), Ok(()));
        let reported = unit(&[
            ("ExecStart", "\"/bin/true\""),
            ("User", "agent"),
            ("OnFailure", "agent-x.notify@%n.service"),
            ("OnSuccess", "agent-x.recovered@%n.service"),
        ]);
        assert_eq!(reported.check(&POLICY), Ok(()));
        for (entries, why) in [
            (vec![("ExecStart", "\"/bin/true\""), ("User", "root")], "User=root without allowRoot"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "0")], "User=0 without allowRoot"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("Group", "shadow")], "Group=shadow without allowRoot"),
            (vec![("ExecStart", "\"/bin/true\"")], "a service without User= (so as root) runs \"/bin/true\""),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent\nUser=root")], "holds a control character"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("ExecStartPre", "+/bin/sh -c id")], "does not start with a quoted program"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("ExecStartPre", "+\"/bin/sh\" -c id")], "runs a program with privileges"),
            (vec![("ExecStart", "!!\"/usr/bin/fleetwright\""), ("User", "agent")], "runs a program with privileges"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("Description", "x\\")], "trailing backslash"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("Description", "a\u{2028}b")], "control character"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("PAMName", "login")], "unexpected key PAMName="),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("WorkingDirectory", "srv")], "not an absolute path"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("LoadCredential", "a/b:/x")], "not NAME:/absolute/path"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("OnFailure", "reboot.target")], "not fleetwright's failure reporter"),
            (vec![("ExecStart", "\"/bin/true\""), ("User", "agent"), ("OnSuccess", "agent-x.notify@%n.service")], "not fleetwright's"),
        ] {
            let e = unit(&entries).check(&POLICY).unwrap_err();
            assert!(e.contains(why), "{entries:?}: {e}");
        }
        // With allowRoot, root is the Fleet's decision; privileged prefixes stay fleetwright's.
        let root = Policy { allow_root: true, ..POLICY };
        assert_eq!(unit(&[("ExecStart", "\"/bin/true\""), ("User", "root")]).check(&root), Ok(()));
        assert!(unit(&[("ExecStart", "+\"/bin/true\"")]).check(&root).is_err());
        let mut bad_header = unit(&[("ExecStart", "\"/bin/true\""), ("User", "agent")]);
        bad_header.header.push("# x\n[Service]".into());
        assert!(bad_header.check(&POLICY).is_err());
        let mut bad_section = unit(&[]);
        bad_section.section("Socket");
        assert!(bad_section.check(&POLICY).unwrap_err().contains("unexpected section [Socket]"));
    }

    #[test]
    fn settings_are_read_from_every_section_of_their_name_in_order() {
        let mut u = unit(&[("Environment", "\"A=1\""), ("User", "agent"), ("Environment", "\"B=2\"")]);
        u.section("Install").set("WantedBy", "multi-user.target timers.target");
        u.section("Service").set("Environment", "\"C=3\"");
        assert_eq!(u.values("Service", "Environment").collect::<Vec<_>>(), ["\"A=1\"", "\"B=2\"", "\"C=3\""]);
        assert_eq!(u.entries("Install").collect::<Vec<_>>(), [("WantedBy", "multi-user.target timers.target")]);
        assert_eq!(u.values("Timer", "OnCalendar").count(), 0);
        // As systemd (and `parse`) read the printed text.
        let parsed = parse(&u.render());
        assert!(parsed["Service"].iter().map(|(k, v)| (k.as_str(), v.as_str())).eq(u.entries("Service")));
    }

    #[test]
    fn a_rendered_file_reads_back_exactly() {
        let u = unit(&[("ExecStart", "\"/bin/true\" a=b"), ("User", "agent")]);
        assert_eq!(UnitFile::from_rendered(&u.render()), Ok(u));
        assert!(UnitFile::from_rendered("# x\n\n[Service]\nUser=agent\n  injected\n").is_err());
    }

    #[test]
    fn comparison_ignores_comments_and_cosmetic_keys() {
        let a = "# a\n[Unit]\nDescription=one\n[Service]\nExecStart=/bin/a\n[Install]\nWantedBy=multi-user.target\n";
        assert_eq!(compare(a, a), Change::Identical);
        assert_eq!(compare(a, &a.replace("# a", "# b")), Change::Cosmetic);
        assert_eq!(compare(a, &a.replace("=one", "=two")), Change::Cosmetic);
        assert_eq!(compare(a, &a.replace("multi-user", "default")), Change::Install);
        assert_eq!(compare(a, &a.replace("/bin/a", "/bin/b")), Change::Semantic);
    }

    #[test]
    fn parse_joins_continuations_and_keeps_repeated_keys() {
        let p = parse("[Service]\nEnvironment=A=1\nEnvironment=B=2 \\\n  C=3\n; comment\n");
        assert_eq!(p["Service"], vec![("Environment".into(), "A=1".into()), ("Environment".into(), "B=2 C=3".into())]);
    }

    #[test]
    fn quoting_escapes_what_systemd_would_interpret() {
        assert_eq!(quote(r#"a "b" \c 100% $HOME"#, true), r#""a \"b\" \\c 100%% $$HOME""#);
        assert_eq!(quote("50%", false), "\"50%%\"");
    }
}
