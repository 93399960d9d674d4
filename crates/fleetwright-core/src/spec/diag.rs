//! Diagnostics: every user error carries the file, line and column it is about, and a hint.
//!
//! `validate` collects all of them rather than stopping at the first; they print as
//! `FILE:LINE:COL: message`, the form editors and CI annotators understand, each cause before
//! the problems it may cause ([`Diagnostics::sorted`], by [`Stage`]).

use std::borrow::Cow;
use std::fmt;

/// A position in a spec file; line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// How far reading a spec got when a problem was found. A problem can cause problems of later
/// stages (a field that cannot be read is then missing) and never of earlier ones, so
/// diagnostics are listed in this order ([`Diagnostics::sorted`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The file cannot be read at all (YAML syntax, a refused construct, its size, its name):
    /// every document in it is missing from the fleet.
    Read,
    /// A document or a field is not in the format: no or an unsupported `apiVersion` or `kind`,
    /// an unknown field, a value of the wrong type, an empty section. What it holds is dropped,
    /// and may be reported as missing in the next stage.
    Shape,
    /// One document's values: invalid, missing, or contradicting one another.
    #[default]
    Value,
    /// Between documents: duplicate names, `after` targets and cycles, a concurrency group's
    /// limit, a second Fleet.
    Fleet,
}

/// One user error in a spec, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub loc: Loc,
    pub message: String,
    /// Where in the reading it was found; decides the order, not printed.
    #[serde(skip)]
    pub stage: Stage,
}

impl Diagnostic {
    /// A problem with a document's values ([`Stage::Value`]).
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic { loc, message: message.into(), stage: Stage::Value }
    }

    /// A problem found at another stage of the reading.
    pub fn at_stage(stage: Stage, loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic { loc, message: message.into(), stage }
    }

    /// The diagnostic followed by the offending source line and a caret under the column,
    /// when the source is at hand (the style of `just` and rustc). The line is cut to
    /// [`MAX_SOURCE_CHARS`] around the column and its control characters are escaped.
    pub fn render_with_source(&self, source: Option<&str>) -> String {
        self.render_with_line(source.and_then(|s| source_lines(s).into_iter().nth(self.loc.line.saturating_sub(1))))
    }

    /// `render_with_source` with the line already looked up (`source_lines` of the file, once
    /// for all of its diagnostics).
    pub fn render_with_line(&self, line: Option<&str>) -> String {
        let mut out = self.to_string();
        if let Some(line) = line {
            let (shown, pad) = excerpt(line, self.loc.col);
            let width = self.loc.line.to_string().len();
            out.push_str(&format!("\n {:>width$} | {}\n {:>width$} | {}^", self.loc.line, shown, "", pad));
        }
        out
    }
}

/// At most this many characters of a source line are quoted under a diagnostic.
pub const MAX_SOURCE_CHARS: usize = 200;
/// At most this many characters of a message are printed (a message may quote a value).
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// At most this many diagnostics of one file are printed; the rest are counted.
pub const MAX_PER_FILE: usize = 100;
/// At most this many diagnostics are printed in all.
pub const MAX_TOTAL: usize = 1000;

/// The lines of a spec file as YAML (and so a diagnostic's line number) counts them: a lone
/// `\r` ends one too.
pub fn source_lines(text: &str) -> Vec<&str> {
    text.lines().flat_map(|l| l.split('\r')).collect()
}

/// A character a terminal would act on rather than show: C0 and C1 controls and DEL, and the
/// bidirectional overrides and isolates (which reorder what is shown, "Trojan Source").
/// A bidirectional text control (ALM, LRM, RLM, the embeddings, overrides and isolates): text
/// holding one displays differently from what it says.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn is_unprintable(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// `s` safe to print to a terminal: every control character (newlines and tabs included),
/// DEL, C1 controls and bidirectional overrides written as an escape (`\x1b`, `\n`,
/// `\u{202e}`). For one-line values: names, messages, quoted source.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unprintable(c) { escape_char(c, &mut out) } else { out.push(c) }
    }
    Cow::Owned(out)
}

/// `printable` for text of several lines: newlines and tabs are kept, every other control
/// character is escaped.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unprintable(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unprintable(c) && c != '\n' && c != '\t' { escape_char(c, &mut out) } else { out.push(c) }
    }
    Cow::Owned(out)
}

/// Bytes that should be a path, for a message: UTF-8 runs as `printable`, every byte that is
/// not UTF-8 as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&printable(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `s` cut to `max` characters, with `…` where it was cut.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// The part of `line` shown under a diagnostic, and the padding that puts a caret under
/// column `col` (1-based, in characters): the whole line when it is short, else
/// [`MAX_SOURCE_CHARS`] characters around the column with `…` where it was cut; control
/// characters escaped (the caret still under the right character).
fn excerpt(line: &str, col: usize) -> (String, String) {
    let chars: Vec<char> = line.chars().collect();
    let at = col.saturating_sub(1).min(chars.len());
    let (start, end) = if chars.len() <= MAX_SOURCE_CHARS {
        (0, chars.len())
    } else if at < MAX_SOURCE_CHARS * 3 / 4 {
        (0, MAX_SOURCE_CHARS)
    } else {
        let start = at.saturating_sub(MAX_SOURCE_CHARS / 2).min(chars.len() - MAX_SOURCE_CHARS);
        (start, start + MAX_SOURCE_CHARS)
    };
    let (mut shown, mut pad) = (String::new(), String::new());
    if start > 0 {
        shown.push('…');
        pad.push(' ');
    }
    for (i, &c) in chars[start..end].iter().enumerate() {
        let before = shown.chars().count();
        if c == '\t' {
            shown.push('\t');
        } else if is_unprintable(c) {
            escape_char(c, &mut shown);
        } else {
            shown.push(c);
        }
        if start + i < at {
            if c == '\t' {
                pad.push('\t');
            } else {
                pad.extend(std::iter::repeat_n(' ', shown.chars().count() - before));
            }
        }
    }
    if end < chars.len() {
        shown.push('…');
    }
    (shown, pad)
}

/// `FILE:LINE:COL: message`, the file name and the message made printable (control
/// characters escaped) and the message cut to [`MAX_MESSAGE_CHARS`].
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", printable(&self.loc.file), self.loc.line, self.loc.col, printable(&truncate(&self.message, MAX_MESSAGE_CHARS)))
    }
}

/// All diagnostics of one load, causes before their consequences ([`Diagnostics::sorted`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// A problem with a document's values ([`Stage::Value`]).
    pub fn push(&mut self, loc: Loc, message: impl Into<String>) {
        self.0.push(Diagnostic::new(loc, message));
    }
    /// A problem found at another stage of the reading.
    pub fn push_at(&mut self, stage: Stage, loc: Loc, message: impl Into<String>) {
        self.0.push(Diagnostic::at_stage(stage, loc, message));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The order the diagnostics are listed (and printed) in: a cause before what it causes, so
    /// that the first one listed is one to fix first, and a follow-on error never comes before
    /// the typo behind it. A problem causes problems of later [`Stage`]s only, within its
    /// document and, when it drops a document or a Fleet default, in other files. So:
    ///
    /// 1. files by the earliest stage they have a problem at, then by name: a file that cannot
    ///    be read comes before the file whose `after` names an agent written in it, and a Fleet
    ///    document with an unknown field in its defaults before the agents that miss it;
    /// 2. within a file, by stage, then by line and column: an unknown field `comand:` on line 6,
    ///    or a value of the wrong type, before what its absence causes in the same document,
    ///    though that is reported higher up (at the `run:` on line 5);
    /// 3. then by message, and the same message at the same place only once.
    ///
    /// (A consequence that is certain is not reported at all: a required field whose key is
    /// misspelled is said once, as the unknown field with its "did you mean".) Deterministic:
    /// nothing here depends on the order in which the diagnostics were found.
    pub fn sorted(mut self) -> Self {
        let mut earliest: std::collections::HashMap<String, Stage> = std::collections::HashMap::new();
        for d in &self.0 {
            let e = earliest.entry(d.loc.file.clone()).or_insert(d.stage);
            *e = (*e).min(d.stage);
        }
        fn key<'d>(earliest: &std::collections::HashMap<String, Stage>, d: &'d Diagnostic) -> (Stage, &'d str, Stage, usize, usize, &'d str) {
            (earliest.get(&d.loc.file).copied().unwrap_or(d.stage), &d.loc.file, d.stage, d.loc.line, d.loc.col, &d.message)
        }
        self.0.sort_by(|a, b| key(&earliest, a).cmp(&key(&earliest, b)));
        self.0.dedup_by(|a, b| a.loc == b.loc && a.message == b.message);
        self
    }

    /// The diagnostics as printed for a person, one per line (with its quoted source line
    /// when `source` has the file's text), bounded whatever the input: at most
    /// [`MAX_PER_FILE`] of one file, then `… and N more in FILE`, and at most [`MAX_TOTAL`]
    /// in all, then `… and N more in M more files`. `name` is how a file is named (a prefix).
    pub fn render<'a>(&self, source: impl Fn(&str) -> Option<&'a str>, name: impl Fn(&str) -> String) -> String {
        // Grouped by file, in the order of first appearance (sorted diagnostics: by file).
        let mut groups: Vec<(&str, Vec<&Diagnostic>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for d in &self.0 {
            let i = *index.entry(d.loc.file.as_str()).or_insert_with(|| {
                groups.push((d.loc.file.as_str(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(d);
        }
        let mut out = String::new();
        let (mut printed, mut rest_files, mut rest) = (0, 0, 0);
        for (file, ds) in groups {
            if printed >= MAX_TOTAL {
                rest_files += 1;
                rest += ds.len();
                continue;
            }
            let lines = source(file).map(source_lines);
            let shown_name = name(file);
            let take = ds.len().min(MAX_PER_FILE).min(MAX_TOTAL - printed);
            for d in &ds[..take] {
                let mut d = (*d).clone();
                d.loc.file.clone_from(&shown_name);
                let line = lines.as_ref().and_then(|l| l.get(d.loc.line.wrapping_sub(1)).copied());
                out.push_str(&d.render_with_line(line));
                out.push('\n');
            }
            printed += take;
            if ds.len() > take {
                out.push_str(&format!("… and {} more in {}\n", ds.len() - take, printable(&shown_name)));
            }
        }
        if rest > 0 {
            out.push_str(&format!("… and {rest} more in {rest_files} more file{}\n", if rest_files == 1 { "" } else { "s" }));
        }
        out
    }
}

/// One line per diagnostic, bounded as [`Diagnostics::render`] is (without source lines).
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(|_| None, str::to_string))
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word` by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().min(word.len()) / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_field_names() {
        let fields = ["command", "workingDirectory", "user", "environment"];
        assert_eq!(did_you_mean("comand", fields), Some("command"));
        assert_eq!(did_you_mean("workingdir", fields), None);
        assert_eq!(did_you_mean("enviroment", fields), Some("environment"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn shows_the_line_yaml_counted_when_a_lone_carriage_return_ends_one() {
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 3, col: 1 }, "bad");
        assert_eq!(d.render_with_source(Some("a: 1\rb: 2\r\nc: 3\n")), "a.yaml:3:1: bad\n 3 | c: 3\n   | ^");
    }

    #[test]
    fn the_order_is_by_stage_within_a_file_and_files_by_their_earliest_stage() {
        let at = |file: &str, line| Loc { file: file.into(), line, col: 1 };
        let all = [
            Diagnostic::at_stage(Stage::Fleet, at("a.yaml", 1), "duplicate"),
            Diagnostic::new(at("a.yaml", 2), "missing"),
            Diagnostic::at_stage(Stage::Shape, at("a.yaml", 9), "unknown field"),
            Diagnostic::new(at("b.yaml", 1), "invalid"),
            Diagnostic::at_stage(Stage::Read, at("c.yaml", 7), "syntax"),
            Diagnostic::at_stage(Stage::Shape, at("a.yaml", 9), "unknown field"),
        ];
        let want = ["c.yaml:7:1: syntax", "a.yaml:9:1: unknown field", "a.yaml:2:1: missing", "a.yaml:1:1: duplicate", "b.yaml:1:1: invalid"];
        // The same whatever order they were found in.
        for rotate in 0..all.len() {
            let mut v = all.to_vec();
            v.rotate_left(rotate);
            v.reverse();
            let shown: Vec<String> = Diagnostics(v).sorted().0.iter().map(|d| d.to_string()).collect();
            assert_eq!(shown, want);
        }
    }

    #[test]
    fn renders_caret_under_column() {
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 2, col: 7 }, "bad");
        let s = d.render_with_source(Some("x: 1\nname: Bad_Name\n"));
        assert_eq!(s, "a.yaml:2:7: bad\n 2 | name: Bad_Name\n   |       ^");
    }

    /// The caret line of a rendering: the position of `^` in characters after the `| `.
    fn caret_at(rendered: &str) -> usize {
        let last = rendered.lines().last().unwrap();
        last.split_once("| ").unwrap().1.chars().count() - 1
    }

    #[test]
    fn a_long_line_is_cut_around_the_column_with_the_caret_under_it() {
        // The offending word far to the right of a 10 000-character line.
        let line = format!("{}BAD{}", "x".repeat(9000), "y".repeat(1000));
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 1, col: 9001 }, "bad");
        let s = d.render_with_source(Some(&line));
        let quoted = s.lines().nth(1).unwrap().split_once("| ").unwrap().1;
        assert!(quoted.starts_with('…') && quoted.ends_with('…'), "{quoted}");
        assert_eq!(quoted.chars().count(), MAX_SOURCE_CHARS + 2);
        assert_eq!(quoted.chars().nth(caret_at(&s)), Some('B'), "{s}");
        // Near the start: the line's beginning, cut at the end only.
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 1, col: 3 }, "bad");
        let s = d.render_with_source(Some(&line));
        let quoted = s.lines().nth(1).unwrap().split_once("| ").unwrap().1;
        assert!(!quoted.starts_with('…') && quoted.ends_with('…'), "{quoted}");
        assert_eq!(caret_at(&s), 2);
        // At the very end (the column past the last character).
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 1, col: 10_004 }, "bad");
        let s = d.render_with_source(Some(&line));
        let quoted = s.lines().nth(1).unwrap().split_once("| ").unwrap().1;
        assert!(quoted.starts_with('…') && !quoted.ends_with('…'), "{quoted}");
        assert_eq!(caret_at(&s), quoted.chars().count());
    }

    #[test]
    fn control_characters_in_source_messages_and_names_are_escaped() {
        let d = Diagnostic::new(Loc { file: "a\x1b[2J.yaml".into(), line: 1, col: 8 }, "unknown field `\x07x\u{202e}`");
        let s = d.render_with_source(Some("k: \x1b]0;pwned\x07 BAD\u{9b}"));
        assert!(!s.chars().any(|c| c.is_control() && c != '\n' || c == '\u{202e}'), "{s:?}");
        assert!(s.starts_with("a\\x1b[2J.yaml:1:8: unknown field `\\x07x\\u{202e}`"), "{s}");
        assert!(s.contains("k: \\x1b]0;pwned\\x07 BAD\\u{9b}"), "{s}");
        // Column 8 is the `p` of pwned, after ESC (shown as the 4 characters `\x1b`) and `]0;`.
        let quoted = s.lines().nth(1).unwrap().split_once("| ").unwrap().1;
        assert_eq!(quoted.chars().nth(caret_at(&s)), Some('p'), "{s}");
        assert_eq!(escape_bytes(b"fleet/a\xff\x1b.yaml"), "fleet/a\\xff\\x1b.yaml");
        assert_eq!(printable_lines("a\n\tb\x1bc"), "a\n\tb\\x1bc");
    }

    #[test]
    fn long_messages_are_cut() {
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 1, col: 1 }, "v".repeat(100_000));
        assert!(d.to_string().chars().count() < MAX_MESSAGE_CHARS + 20);
        assert!(d.to_string().ends_with('…'));
    }

    #[test]
    fn at_most_a_hundred_diagnostics_of_a_file_and_a_thousand_in_all_are_printed() {
        let mut ds = Diagnostics::default();
        for i in 1..=250 {
            ds.push(Loc { file: "a.yaml".into(), line: i, col: 1 }, "bad");
        }
        for f in 0..30 {
            for i in 1..=60 {
                ds.push(Loc { file: format!("f{f:02}.yaml"), line: i, col: 1 }, "bad");
            }
        }
        let ds = ds.sorted();
        let text = ds.render(|_| Some("x: 1\n"), |f| format!("fleet/{f}"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.iter().filter(|l| l.starts_with("fleet/a.yaml:")).count(), MAX_PER_FILE);
        assert!(lines.contains(&"… and 150 more in fleet/a.yaml"), "{text}");
        // a.yaml 100, then 15 files of 60: 1000; the other 15 files are counted.
        assert_eq!(lines.iter().filter(|l| l.starts_with("fleet/")).count(), MAX_TOTAL);
        assert_eq!(lines.last(), Some(&"… and 900 more in 15 more files"), "{text}");
        assert_eq!(ds.to_string().lines().filter(|l| l.starts_with("a.yaml:")).count(), MAX_PER_FILE);
    }
}
