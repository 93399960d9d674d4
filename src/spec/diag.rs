//! Diagnostics: every user error carries the file, line and column it is about, and a hint.
//!
//! `validate` collects all of them rather than stopping at the first; they print as
//! `FILE:LINE:COL: message`, the form editors and CI annotators understand.

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

/// One user error in a spec, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub loc: Loc,
    pub message: String,
}

impl Diagnostic {
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        Diagnostic { loc, message: message.into() }
    }

    /// The diagnostic followed by the offending source line and a caret under the column,
    /// when the source is at hand (the style of `just` and rustc).
    pub fn render_with_source(&self, source: Option<&str>) -> String {
        let mut out = self.to_string();
        // Lines as YAML (and so the line number) counts them: a lone `\r` ends one too.
        let nth_line = |s: &str| s.lines().flat_map(|l| l.split('\r')).nth(self.loc.line.saturating_sub(1)).map(str::to_string);
        if let Some(line) = source.and_then(nth_line) {
            let width = self.loc.line.to_string().len();
            let caret_pad: String = line.chars().take(self.loc.col.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            out.push_str(&format!("\n {:>width$} | {}\n {:>width$} | {}^", self.loc.line, line, "", caret_pad));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)
    }
}

/// All diagnostics of one load, sorted by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, loc: Loc, message: impl Into<String>) {
        self.0.push(Diagnostic::new(loc, message));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn sorted(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
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
    fn renders_caret_under_column() {
        let d = Diagnostic::new(Loc { file: "a.yaml".into(), line: 2, col: 7 }, "bad");
        let s = d.render_with_source(Some("x: 1\nname: Bad_Name\n"));
        assert_eq!(s, "a.yaml:2:7: bad\n 2 | name: Bad_Name\n   |       ^");
    }
}
