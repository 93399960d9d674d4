//! The one reading of a YAML file: saphyr's marked events become a tree of [`Node`]s, each with
//! its position, and everything else — the typed values (`de`), the span index that errors point
//! into ([`DocIndex`]), the JSON an editor sees — is derived from that same tree. There is no
//! second parser that could read the bytes differently from the first.
//!
//! Refused here, with their line and column, because a reviewer (or another YAML reader) could
//! see something else than what runs: mapping keys written as aliases, merge keys (`<<`), tags,
//! complex keys, duplicate keys, line separators (NEL, LS, PS), bidirectional controls and
//! other control characters in the text, nesting deeper than [`MAX_DEPTH`] and aliases expanding
//! past [`ALIAS_BUDGET`]. Scalars resolve by the YAML 1.2 core schema (`yes` is text, not true).

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

/// Line and column (1-based) of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain `~`, `null`, `Null`, `NULL` or nothing at all.
    Null,
    /// A scalar exactly as written (escapes resolved); `plain` when it was not quoted or a
    /// block scalar, so that the core schema may read it as a number or a boolean.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in the order written. Keys are text (anything else is refused while parsing).
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub pos: Pos,
}

/// How a plain scalar resolves by the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Node {
    /// The core schema's reading of a scalar (quoted scalars are always text).
    pub fn resolve(text: &str, plain: bool) -> Resolved<'_> {
        if !plain {
            return Resolved::Str(text);
        }
        match text {
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Resolved::Float(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits(unsigned, 10) {
            return match text.parse::<i128>() {
                Ok(n) => Resolved::Int(n),
                Err(_) => text.parse::<f64>().map_or(Resolved::Str(text), Resolved::Float),
            };
        }
        for (prefix, radix) in [("0o", 8), ("0x", 16)] {
            if let Some(d) = text.strip_prefix(prefix)
                && digits(d, radix)
            {
                return i128::from_str_radix(d, radix).map_or(Resolved::Str(text), Resolved::Int);
            }
        }
        // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(i) => (&unsigned[..i], Some(unsigned[i + 1..].strip_prefix(['-', '+']).unwrap_or(&unsigned[i + 1..]))),
            None => (unsigned, None),
        };
        let mantissa_ok = match mantissa.split_once('.') {
            Some((a, b)) => (a.is_empty() && digits(b, 10)) || (digits(a, 10) && (b.is_empty() || digits(b, 10))),
            None => digits(mantissa, 10),
        };
        if mantissa_ok && exponent.is_none_or(|e| digits(e, 10)) && (mantissa.contains('.') || exponent.is_some()) {
            return text.parse::<f64>().map_or(Resolved::Str(text), Resolved::Float);
        }
        Resolved::Str(text)
    }

    /// What this node is, for messages: `a list`, `a mapping`, `the text "x"`, `the number 3`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar { text, plain } => match Node::resolve(text, *plain) {
                Resolved::Bool(b) => format!("`{b}`"),
                Resolved::Int(_) | Resolved::Float(_) => format!("the number {text}"),
                Resolved::Str(s) => format!("the text {s:?}"),
            },
        }
    }

    /// The node as JSON, the way an editor's YAML language server reads it (for schema checks).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Scalar { text, plain } => match Node::resolve(text, *plain) {
                Resolved::Bool(b) => J::Bool(b),
                Resolved::Int(n) => i64::try_from(n)
                    .map(J::from)
                    .or_else(|_| u64::try_from(n).map(J::from))
                    .unwrap_or_else(|_| serde_json::Number::from_f64(n as f64).map_or(J::Null, J::Number)),
                Resolved::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
                Resolved::Str(s) => J::String(s.to_string()),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.text.clone(), v.to_json())).collect()),
        }
    }

    /// Size for the alias budget: scalar bytes plus one per node.
    fn size(&self) -> u64 {
        match &self.value {
            Value::Null => 1,
            Value::Scalar { text, .. } => text.len() as u64 + 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<u64>(),
            Value::Map(entries) => 1 + entries.iter().map(|(k, v)| k.text.len() as u64 + 1 + v.size()).sum::<u64>(),
        }
    }
}

/// One document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where the document starts.
    pub start: Pos,
    /// Its content; `None` for an empty document (only comments, or a bare `---`).
    pub root: Option<Node>,
    /// Where every path of `root` is.
    pub index: DocIndex,
}

/// The span index of one YAML document, derived from its tree. Paths are dotted: `run.command.0`,
/// `logs.1.maxAge`.
#[derive(Debug, Clone, Default)]
pub struct DocIndex {
    /// Where the document starts.
    pub start: Option<Pos>,
    /// Where the value at a path starts.
    pub values: HashMap<String, Pos>,
    /// Where the key naming a path starts (mappings only).
    pub keys: HashMap<String, Pos>,
    /// Scalar values of top-level keys (`kind`, `apiVersion`, `name`), as written.
    pub top_scalars: HashMap<String, String>,
    /// Whether the document has any content at all.
    pub has_root: bool,
    /// Paths whose value is written as null (`key:` with nothing after it, `~`, `null`).
    pub nulls: HashSet<String>,
}

impl DocIndex {
    /// Position of the value at `path`, falling back to the closest enclosing node that is known.
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return self.values.get("").copied().or(self.start).unwrap_or(Pos { line: 1, col: 1 }),
            }
        }
    }
    /// Position of the key of `path` (falls back to its value).
    pub fn key(&self, path: &str) -> Pos {
        self.keys.get(path).copied().unwrap_or_else(|| self.value(path))
    }

    fn build(start: Pos, root: Option<&Node>) -> DocIndex {
        let mut index = DocIndex { start: Some(start), has_root: root.is_some(), ..Default::default() };
        if let Some(root) = root {
            if let Value::Map(entries) = &root.value {
                for (k, v) in entries {
                    if let Value::Scalar { text, .. } = &v.value {
                        index.top_scalars.insert(k.text.clone(), text.clone());
                    }
                }
            }
            // Depth-first with an explicit stack (depth is bounded anyway by MAX_DEPTH).
            let mut stack: Vec<(String, &Node)> = vec![(String::new(), root)];
            while let Some((path, node)) = stack.pop() {
                index.values.insert(path.clone(), node.pos);
                match &node.value {
                    Value::Null => {
                        index.nulls.insert(path);
                    }
                    Value::Scalar { .. } => {}
                    Value::Seq(items) => stack.extend(items.iter().enumerate().map(|(i, n)| (join(&path, &i.to_string()), n))),
                    Value::Map(entries) => {
                        for (k, v) in entries {
                            let p = join(&path, &k.text);
                            index.keys.insert(p.clone(), k.pos);
                            stack.push((p, v));
                        }
                    }
                }
            }
        }
        index
    }
}

/// Deeper nesting is refused: a fleet document is a few levels deep, and every level costs a
/// path string as long as the nesting (10 000 `- ` would index gigabytes).
pub const MAX_DEPTH: usize = 64;

/// What aliases may add to a document, in bytes of scalar text (plus one per node) after
/// expansion: one long string aliased thousands of times would otherwise fill memory.
pub const ALIAS_BUDGET: u64 = 1 << 20;

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() { seg.to_string() } else { format!("{parent}.{seg}") }
}

/// A character that must not appear anywhere in a spec file, and why. Line separators other than
/// LF/CR end a comment for some YAML readers and editors but not for others; bidirectional
/// controls make a line display differently from what it says ("Trojan Source"); other control
/// characters are invisible or rewrite a terminal.
fn forbidden_char(c: char) -> Option<&'static str> {
    match c {
        '\t' | '\n' | '\r' => None,
        '\u{85}' => Some("a NEL line separator (U+0085), which some YAML readers and editors treat as a line break and others do not"),
        '\u{2028}' => Some("a Unicode line separator (U+2028), which some YAML readers and editors treat as a line break and others do not"),
        '\u{2029}' => Some("a Unicode paragraph separator (U+2029), which some YAML readers and editors treat as a line break and others do not"),
        c if super::diag::is_bidi_control(c) => Some("a bidirectional text control, which makes the line display differently from what it says"),
        '\u{feff}' => Some("a byte-order mark inside the text"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// Refuse a file holding any [`forbidden_char`], at its line and column (as saphyr counts them:
/// LF, CR and CRLF end a line; columns count characters).
fn check_chars(src: &str) -> Result<(), (Pos, String)> {
    let (mut line, mut col) = (1, 1);
    let mut prev_cr = false;
    for c in src.chars() {
        if let Some(why) = forbidden_char(c) {
            return Err((Pos { line, col }, format!("the file contains {why} ({}); remove it", c.escape_unicode())));
        }
        match c {
            '\n' if prev_cr => {}
            '\n' | '\r' => {
                line += 1;
                col = 1;
            }
            _ => col += 1,
        }
        prev_cr = c == '\r';
    }
    Ok(())
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Key, Node)>, key: Option<Key>, seen: HashMap<String, Pos> },
}

/// Parse every document of `src` into trees. A syntax error (or anything this module refuses)
/// comes back with its position and the whole message.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, (Pos, String)> {
    check_chars(src)?;
    let mut docs = Vec::new();
    let mut doc_start: Option<Pos> = None;
    let mut root: Option<Node> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, u64)> = HashMap::new();
    let mut aliased: u64 = 0;
    let mut parser = Parser::new_from_str(src);
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e: ScanError| {
            let m = e.marker();
            (Pos { line: m.line(), col: m.col() + 1 }, format!("YAML syntax error: {}", e.info()))
        })?;
        let pos = Pos { line: span.start.line(), col: span.start.col() + 1 };
        let refuse_tag = |tag: &Option<std::borrow::Cow<'_, saphyr_parser::Tag>>| match tag {
            Some(t) => Err((
                pos,
                format!(
                    "tags like `{}{}` are not supported (they change how a value is read); remove the tag, and quote the value if it must stay text",
                    if t.is_yaml_core_schema() { "!!" } else { &t.handle },
                    t.suffix
                ),
            )),
            None => Ok(()),
        };
        // A complete node, ready to be put into its parent: (node, anchor).
        let done: Option<(Node, usize)> = match ev {
            Event::DocumentStart(_) => {
                doc_start = Some(pos);
                root = None;
                stack.clear();
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                let start = doc_start.take().unwrap_or(pos);
                // An empty document parses as one null scalar: that is no content.
                let r = root.take().filter(|n| n.value != Value::Null);
                let index = DocIndex::build(start, r.as_ref());
                docs.push(Document { start, root: r, index });
                None
            }
            Event::Scalar(text, style, anchor, tag) => {
                refuse_tag(&tag)?;
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text: text.into_owned(), plain }
                };
                Some((Node { pos, value }, anchor))
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                refuse_tag(tag)?;
                let is_seq = matches!(ev, Event::SequenceStart(..));
                if stack.len() >= MAX_DEPTH {
                    return Err((pos, format!("nested more than {MAX_DEPTH} levels deep; a fleet document needs only a few levels")));
                }
                // A collection as a mapping key is refused before it is built.
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err((pos, "a mapping key must be a plain name, not a list or a mapping".into()));
                }
                stack.push(if is_seq {
                    Frame::Seq { pos, anchor, items: Vec::new() }
                } else {
                    Frame::Map { pos, anchor, entries: Vec::new(), key: None, seen: HashMap::new() }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((Node { pos, value: Value::Seq(items) }, anchor)),
                Some(Frame::Map { pos, anchor, entries, .. }) => Some((Node { pos, value: Value::Map(entries) }, anchor)),
                None => None,
            },
            Event::Alias(id) => {
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err((pos, "a mapping key written as an alias (`*name`) is not supported: write the key out".into()));
                }
                let Some((node, size)) = anchors.get(&id) else {
                    return Err((pos, "an alias to an anchor that is not defined before it".into()));
                };
                aliased = aliased.saturating_add(*size);
                if aliased > ALIAS_BUDGET {
                    return Err((
                        pos,
                        format!(
                            "aliases expand this file by more than {} MiB (a \"billion laughs\" document?); write the values out, or alias less",
                            ALIAS_BUDGET >> 20
                        ),
                    ));
                }
                Some((Node { pos, value: node.value.clone() }, 0))
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
        };
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            let size = node.size();
            anchors.insert(anchor, (node.clone(), size));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, seen, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    let text = match node.value {
                        Value::Scalar { text, plain } => {
                            if plain && text == "<<" {
                                return Err((
                                    node.pos,
                                    "merge keys (`<<`) are not supported: write the fields out in each document (or use the Fleet's `defaults`)".into(),
                                ));
                            }
                            text
                        }
                        Value::Null => return Err((node.pos, "a mapping key is empty; write a field name".into())),
                        _ => return Err((node.pos, "a mapping key must be a plain name, not a list or a mapping".into())),
                    };
                    if let Some(first) = seen.insert(text.clone(), node.pos) {
                        return Err((node.pos, format!("duplicate key `{text}` (first at line {}, column {}); remove one of them", first.line, first.col)));
                    }
                    *key = Some(Key { text, pos: node.pos });
                }
            },
        }
    }
    if let Some(start) = doc_start {
        let root = root.filter(|n| n.value != Value::Null);
        let index = DocIndex::build(start, root.as_ref());
        docs.push(Document { start, root, index });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_documents(src: &str) -> Result<Vec<DocIndex>, (Pos, String)> {
        parse_documents(src).map(|d| d.into_iter().map(|d| d.index).collect())
    }

    #[test]
    fn indexes_nested_paths_across_documents() {
        let src = "kind: Agent\nrun:\n  command: [/bin/a, b]\n  user: x\n---\nkind: Fleet\nlogs:\n  - path: /x\n    maxAge: 3d\n";
        let docs = index_documents(src).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value("run.command.1"), Pos { line: 3, col: 21 });
        assert_eq!(docs[0].key("run.user"), Pos { line: 4, col: 3 });
        assert_eq!(docs[0].top_scalars["kind"], "Agent");
        assert_eq!(docs[1].value("logs.0.maxAge"), Pos { line: 9, col: 13 });
        assert_eq!(docs[1].top_scalars["kind"], "Fleet");
        // Unknown deeper paths fall back to the closest known parent.
        assert_eq!(docs[1].value("logs.0.maxAge.nothing"), Pos { line: 9, col: 13 });
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = index_documents("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.0.line >= 1, "{err:?}");
    }

    #[test]
    fn refuses_duplicate_keys_deep_nesting_and_alias_bombs() {
        let err = index_documents("a: 1\nb: {x: 1, x: 2}\n").unwrap_err();
        assert_eq!((err.0, err.1.as_str()), (Pos { line: 2, col: 11 }, "duplicate key `x` (first at line 2, column 5); remove one of them"));
        assert!(index_documents("a: {x: 1}\nb: {x: 2}\n").is_ok());
        let err = index_documents(&format!("a:\n{}x\n", "- ".repeat(MAX_DEPTH))).unwrap_err();
        assert!(err.1.starts_with("nested more than 64 levels"), "{err:?}");
        let big = "x".repeat(1 << 16);
        let err = index_documents(&format!("a: &s {big}\nb: [{}]\n", vec!["*s"; 17].join(", "))).unwrap_err();
        assert!(err.1.starts_with("aliases expand this file by more than 1 MiB"), "{err:?}");
        assert!(index_documents(&format!("a: &s {big}\nb: [{}]\n", vec!["*s"; 15].join(", "))).is_ok());
    }

    #[test]
    fn empty_input_has_no_root() {
        let docs = index_documents("# only a comment\n").unwrap();
        assert!(docs.iter().all(|d| !d.has_root));
    }

    #[test]
    fn what_two_readers_could_read_differently_is_refused() {
        for (src, pos, msg) in [
            ("a: &k user\nrun:\n  *k : root\n", Pos { line: 3, col: 3 }, "a mapping key written as an alias"),
            ("base: &b {user: agent}\nrun:\n  <<: *b\n", Pos { line: 3, col: 3 }, "merge keys (`<<`) are not supported"),
            ("name: !!binary aGVsbG8=\n", Pos { line: 1, col: 7 }, "tags like `!!binary` are not supported"),
            ("name: !custom x\n", Pos { line: 1, col: 7 }, "tags like `!custom` are not supported"),
            ("run:\n  ? [a, b]\n  : c\n", Pos { line: 2, col: 5 }, "a mapping key must be a plain name"),
            ("# a comment\u{2028}user: root\nname: x\n", Pos { line: 1, col: 12 }, "a Unicode line separator (U+2028)"),
            ("# a comment\u{2029}user: root\n", Pos { line: 1, col: 12 }, "a Unicode paragraph separator (U+2029)"),
            ("name: x # \u{85}user: root\n", Pos { line: 1, col: 11 }, "a NEL line separator (U+0085)"),
            ("a: b\r\nname: \"x\u{202e}y\"\n", Pos { line: 2, col: 9 }, "a bidirectional text control"),
            ("name: a\u{1b}[2Jb\n", Pos { line: 1, col: 8 }, "a control character"),
            ("? \n: x\n", Pos { line: 2, col: 1 }, "a mapping key is empty"),
        ] {
            let err = parse_documents(src).unwrap_err();
            assert_eq!(err.0, pos, "{src:?}: {err:?}");
            assert!(err.1.contains(msg), "{src:?}: {err:?}");
        }
    }

    #[test]
    fn values_come_from_the_same_tree_as_positions() {
        let docs = parse_documents("a: &x [1, 0x1F, 1.5, yes, \"2\", ~, true]\nb: *x\n").unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let json = root.to_json();
        assert_eq!(json, serde_json::json!({"a": [1, 31, 1.5, "yes", "2", null, true], "b": [1, 31, 1.5, "yes", "2", null, true]}));
        // The alias is where the alias is written.
        assert_eq!(docs[0].index.value("b"), Pos { line: 2, col: 4 });
        assert_eq!(docs[0].index.value("a.3"), Pos { line: 1, col: 22 });
        assert!(docs[0].index.nulls.contains("a.5"));
    }

    #[test]
    fn the_core_schema_resolves_plain_scalars_only() {
        for (text, want) in [
            ("12", Resolved::Int(12)),
            ("-3", Resolved::Int(-3)),
            ("0o17", Resolved::Int(15)),
            ("0x1f", Resolved::Int(31)),
            ("1.5", Resolved::Float(1.5)),
            ("1e3", Resolved::Float(1000.0)),
            (".5", Resolved::Float(0.5)),
            ("true", Resolved::Bool(true)),
            ("yes", Resolved::Str("yes")),
            ("on", Resolved::Str("on")),
            ("1.10.2", Resolved::Str("1.10.2")),
            ("0x", Resolved::Str("0x")),
            ("30s", Resolved::Str("30s")),
        ] {
            assert_eq!(Node::resolve(text, true), want, "{text}");
        }
        assert_eq!(Node::resolve("12", false), Resolved::Str("12"));
    }
}
