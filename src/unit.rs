//! systemd unit files as values: build them section by section, print them, parse them back,
//! and compare two of them the way a running service cares about ("equal except these keys").

use std::collections::BTreeMap;

/// The first line of every file fleetwright writes; a file without it is never ours.
pub const MARKER: &str = "# Managed by fleetwright: edits are overwritten on the next apply.";

/// Keys that change what a file says but not what a unit runs: a change to these alone rewrites
/// the file and reloads the manager, but restarts nothing (as NixOS switch-to-configuration
/// treats `Description=`).
pub const COSMETIC_KEYS: [&str; 2] = ["Description", "Documentation"];

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

/// A unit file parsed as systemd reads it: sections of ordered key/value pairs; comments and
/// blank lines dropped, continuation lines joined.
pub type Parsed = BTreeMap<String, Vec<(String, String)>>;

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
