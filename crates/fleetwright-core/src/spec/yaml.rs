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
//!
//! A syntax error is reported at its cause where that is certain, not only where the parser
//! noticed it: an unclosed `[`, `{` or quote at the place it was opened (`syntax_error`).

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

/// Line and column (1-based) of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// `LINE:COL`, as positions are written inside messages.
impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
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
    for (_, c, pos) in positioned(src) {
        if let Some(why) = forbidden_char(c) {
            return Err((pos, format!("the file contains {why} ({}); remove it", c.escape_unicode())));
        }
    }
    Ok(())
}

/// A collection being built. `open` is where its opening bracket may be (the last character of
/// its start event's span; empty for block collections): if a syntax error comes while it is
/// open, [`syntax_error`] checks whether it is the `[` or `{` that was never closed.
enum Frame {
    Seq { pos: Pos, open: Option<Pos>, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, open: Option<Pos>, anchor: usize, entries: Vec<(Key, Node)>, key: Option<Key>, seen: HashMap<String, Pos> },
}

impl Frame {
    fn open(&self) -> Option<Pos> {
        match self {
            Frame::Seq { open, .. } | Frame::Map { open, .. } => *open,
        }
    }
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
        let (ev, span) = match ev {
            Ok(ev) => ev,
            Err(e) => {
                let open: Vec<Pos> = stack.iter().filter_map(Frame::open).collect();
                return Err(syntax_error(src, &open, &e));
            }
        };
        let pos = Pos { line: span.start.line(), col: span.start.col() + 1 };
        // A flow collection's span ends just after its bracket (`[`, or `&a [` with an anchor).
        let open = (span.end.index() > span.start.index() && span.end.col() >= 1).then(|| Pos { line: span.end.line(), col: span.end.col() });
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
                    Frame::Seq { pos, open, anchor, items: Vec::new() }
                } else {
                    Frame::Map { pos, open, anchor, entries: Vec::new(), key: None, seen: HashMap::new() }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items, .. }) => Some((Node { pos, value: Value::Seq(items) }, anchor)),
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

/// The characters of `src` with their byte offsets and positions, counted as saphyr counts them:
/// LF, CR and CRLF end a line (the LF of a CRLF is not yielded: it has no position of its own);
/// columns count characters.
struct Positioned<'a> {
    chars: std::str::CharIndices<'a>,
    line: usize,
    col: usize,
    prev_cr: bool,
}

fn positioned(src: &str) -> Positioned<'_> {
    Positioned { chars: src.char_indices(), line: 1, col: 1, prev_cr: false }
}

impl Iterator for Positioned<'_> {
    type Item = (usize, char, Pos);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (i, c) = self.chars.next()?;
            let here = Pos { line: self.line, col: self.col };
            let prev_cr = std::mem::replace(&mut self.prev_cr, c == '\r');
            match c {
                '\n' if prev_cr => continue,
                '\n' | '\r' => {
                    self.line += 1;
                    self.col = 1;
                }
                _ => self.col += 1,
            }
            return Some((i, c, here));
        }
    }
}

/// The character at `pos` and its byte offset.
fn char_at(src: &str, pos: Pos) -> Option<(usize, char)> {
    positioned(src).take_while(|(_, _, p)| *p <= pos).find(|(_, _, p)| *p == pos).map(|(i, c, _)| (i, c))
}

/// A `---` or `...` line (at byte `i`, the start of a line): the current document ends there.
fn is_document_marker(src: &str, i: usize) -> bool {
    let rest = &src[i..];
    (rest.starts_with("---") || rest.starts_with("...")) && matches!(rest[3..].chars().next(), None | Some(' ' | '\t' | '\n' | '\r'))
}

/// The closing bracket of an opening one.
fn closer(open: char) -> char {
    if open == '[' { ']' } else { '}' }
}

/// What follows an opening bracket, read by [`scan_flow`].
#[derive(Debug, PartialEq)]
enum Flow {
    /// Its closing bracket is there: the brackets are not the problem.
    Closed,
    /// A closing bracket of the wrong kind (`closer`, at its position) while `open` is the
    /// innermost open bracket; `outer` is an enclosing bracket it does close, if any.
    Mismatch { open: (Pos, char), closer: (Pos, char), outer: Option<(Pos, char)> },
    /// The document ends with these brackets open (outermost first); `last` is where its last
    /// character that is not white space or a comment is.
    Unclosed { open: Vec<(Pos, char)>, last: Pos },
    /// A quoted scalar runs to the end of the document: that, not a bracket, is the problem.
    InQuote,
}

/// Read the flow collection whose opening bracket is at byte `at` of `src` (at `pos`) to its
/// end, by the YAML grammar of flow content: brackets nest; `'…'` (with `''` for a quote) and
/// `"…"` (with `\` escapes) are quoted scalars when they start a value (after a bracket, `,`, a
/// `: ` or an anchor or tag), and their brackets do not count; `#` after white space starts a
/// comment to the end of the line; a `---` or `...` line ends the document. Block scalars cannot
/// occur inside flow content, so nothing else can hide a bracket.
fn scan_flow(src: &str, at: usize, pos: Pos, bracket: char) -> Flow {
    let mut stack = vec![(pos, bracket)];
    let mut last = pos;
    // A quote here starts a quoted scalar; a `#` here starts a comment.
    let (mut value_start, mut after_blank) = (true, false);
    // The first character of the plain word being read (an anchor `&a` or a tag `!t` is followed by a value).
    let mut word: Option<char> = None;
    let mut chars = positioned(src).skip_while(|(i, _, _)| *i <= at).peekable();
    while let Some((i, c, here)) = chars.next() {
        if here.col == 1 && is_document_marker(src, i) {
            break;
        }
        let next = src[i + c.len_utf8()..].chars().next();
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                value_start |= matches!(word, Some('&' | '!'));
                word = None;
                after_blank = true;
                continue;
            }
            '#' if after_blank || here.col == 1 => {
                while chars.next_if(|(_, c, _)| *c != '\n' && *c != '\r').is_some() {}
                continue;
            }
            '\'' | '"' if value_start => {
                let mut closed = false;
                while let Some((j, d, p)) = chars.next() {
                    if p.col == 1 && is_document_marker(src, j) {
                        break;
                    }
                    if c == '"' && d == '\\' {
                        chars.next();
                    } else if d == c {
                        if c == '\'' && chars.next_if(|(_, e, _)| *e == '\'').is_some() {
                            continue;
                        }
                        closed = true;
                        last = p;
                        break;
                    }
                }
                if !closed {
                    return Flow::InQuote;
                }
                value_start = false;
                word = Some(c);
                after_blank = false;
                continue;
            }
            '[' | '{' => {
                stack.push((here, c));
                value_start = true;
            }
            ']' | '}' => {
                let top = stack[stack.len() - 1];
                if closer(top.1) != c {
                    let outer = stack.iter().rev().find(|(_, o)| closer(*o) == c).copied();
                    return Flow::Mismatch { open: top, closer: (here, c), outer };
                }
                stack.pop();
                if stack.is_empty() {
                    return Flow::Closed;
                }
                value_start = false;
            }
            ',' => value_start = true,
            ':' if matches!(next, None | Some(' ' | '\t' | '\n' | '\r' | ',' | '[' | ']' | '{' | '}')) => value_start = true,
            _ => {
                word.get_or_insert(c);
                value_start = false;
            }
        }
        last = here;
        after_blank = false;
    }
    Flow::Unclosed { open: stack, last }
}

/// Where `src` ends, as a position (the line after a final line break).
fn end_of(src: &str) -> Pos {
    let mut end = Pos { line: 1, col: 1 };
    for (_, c, p) in positioned(src) {
        end = if matches!(c, '\n' | '\r') { Pos { line: p.line + 1, col: 1 } } else { Pos { line: p.line, col: p.col + 1 } };
    }
    end
}

/// Where the quoted scalar opened by `quote` at byte `at` ends: `Ok` with its closing quote, or
/// `Err` with the end of the document it runs into.
fn scan_quote(src: &str, at: usize, quote: char) -> Result<Pos, Pos> {
    let mut chars = positioned(src).skip_while(|(i, _, _)| *i <= at).peekable();
    while let Some((i, c, p)) = chars.next() {
        if p.col == 1 && is_document_marker(src, i) {
            return Err(p);
        }
        if quote == '"' && c == '\\' {
            chars.next();
        } else if c == quote {
            if quote == '\'' && chars.next_if(|(_, e, _)| *e == '\'').is_some() {
                continue;
            }
            return Ok(p);
        }
    }
    Err(end_of(src))
}

/// What saphyr says when it reads on past a flow collection that was not closed, into the
/// block content after it (a `key:` or `- ` line, less indentation, the end of the document).
const PAST_AN_UNCLOSED_COLLECTION: [&str; 6] = [
    "expected ',' or",
    "invalid indentation",
    "illegal placement of ':'",
    "did not find expected node content",
    "is only valid inside a block",
    "block sequence entries are not allowed",
];

/// A syntax error as said to the person who has to fix it. The parser reports where it noticed
/// the problem, which for an unclosed bracket or quote is often lines later, at the next key or
/// the end of the document; the cause is where the bracket or quote was opened. So:
///
/// - an unclosed quoted scalar (saphyr reports it at its opening quote) is named as such, with
///   where it runs to (the end of the document, or a quote lines later that closes it);
/// - a `]` or `}` that closes nothing is named;
/// - while flow collections are open (`open`: where the open collections' brackets may be,
///   outermost first, from the parser's own events), the outermost one is read to its end
///   ([`scan_flow`]): a closing bracket of the wrong kind where the parser stopped is reported
///   at the bracket it fails to close; a bracket the document never closes is reported at that
///   bracket when the parser's complaint is what running past it produces (the parser stopped
///   after the last content, or on a later line with one of
///   [`PAST_AN_UNCLOSED_COLLECTION`]); otherwise the parser's message stays where it is, and
///   says that the bracket is not closed either.
///
/// The parser's own words and position are kept in the message.
fn syntax_error(src: &str, open: &[Pos], e: &ScanError) -> (Pos, String) {
    let m = e.marker();
    let at = Pos { line: m.line(), col: m.col() + 1 };
    let info = e.info();
    let here = char_at(src, at);
    if info.contains("quoted scalar")
        && let Some((i, q @ ('"' | '\''))) = here
    {
        let q_ = show(q);
        return match scan_quote(src, i, q) {
            Err(end) => (
                at,
                format!("YAML syntax error: this {q_} is never closed: the quoted text runs to the end of the document ({end}); end it with {q_} ({info})"),
            ),
            Ok(close) if close.line > at.line => (
                at,
                format!(
                    "YAML syntax error: this {q_} runs on to the {q_} at {close}, over lines indented less than quoted text that goes on must be; close it on its own line, or indent the lines that continue it ({info})"
                ),
            ),
            Ok(_) => (at, format!("YAML syntax error: {info}")),
        };
    }
    if info == "misplaced bracket"
        && let Some((_, c @ (']' | '}'))) = here
    {
        let opener = if c == ']' { '[' } else { '{' };
        return (at, format!("YAML syntax error: this {} closes nothing (no {} is open here); remove it ({info})", show(c), show(opener)));
    }
    let plain = (at, format!("YAML syntax error: {info}"));
    // The outermost open collection written with a bracket; one pass (`open` is in text order).
    let mut wanted = open.iter().copied().peekable();
    let Some((first, i, bracket)) = positioned(src).find_map(|(i, c, p)| {
        while wanted.next_if(|w| *w < p).is_some() {}
        (wanted.next_if_eq(&p).is_some() && matches!(c, '[' | '{')).then_some((p, i, c))
    }) else {
        return plain;
    };
    let name = |(p, c): (Pos, char)| format!("the {} at {p}", show(c));
    match scan_flow(src, i, first, bracket) {
        Flow::Closed | Flow::InQuote => plain,
        Flow::Mismatch { open: (p, o), closer: (cp, cc), outer } if cp == at => {
            let (o_, cc_, want) = (show(o), show(cc), show(closer(o)));
            let msg = match outer {
                Some(outer) => format!(
                    "YAML syntax error: this {o_} is never closed: the {cc_} at {cp} closes {} around it; close this one with {want} before that ({info})",
                    name(outer)
                ),
                None => format!("YAML syntax error: this {o_} is closed with {cc_} at {cp}; close it with {want} ({info})"),
            };
            (p, msg)
        }
        Flow::Mismatch { .. } => plain,
        Flow::Unclosed { open, last } => {
            let Some(&(p, o)) = open.last() else { return plain };
            let past = at > last || (at.line > p.line && PAST_AN_UNCLOSED_COLLECTION.iter().any(|s| info.contains(s)));
            if !past {
                return (at, format!("YAML syntax error: {info}; also, {} is never closed", name((p, o))));
            }
            let around: Vec<String> = open[..open.len() - 1].iter().rev().map(|b| name(*b)).collect();
            let (nor, with) = if around.is_empty() {
                (String::new(), format!("close it with {}", show(closer(o))))
            } else {
                let all: String = open.iter().rev().map(|(_, b)| closer(*b)).collect();
                (format!(", nor {} around it", around.join(", nor ")), format!("close them with '{all}'"))
            };
            (p, format!("YAML syntax error: this {} is never closed{nor}; {with} (the parser noticed at {at}: {info})", show(o)))
        }
    }
}

/// A character named in a message: `'{'`, `'"'`, and `"'"` for the single quote.
fn show(c: char) -> String {
    if c == '\'' { "\"'\"".into() } else { format!("'{c}'") }
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
        assert_eq!(err.0, Pos { line: 1, col: 4 }, "{err:?}");
    }

    /// `LINE:COL: message` of the syntax error in `src`.
    fn syntax(src: &str) -> String {
        let (pos, msg) = parse_documents(src).unwrap_err();
        format!("{pos}: {msg}")
    }

    #[test]
    fn an_unclosed_flow_collection_is_reported_at_its_opening_bracket() {
        for (src, want) in [
            // The case: the parser only notices at the next key.
            (
                "apiVersion: x\nrun: {command: [/bin/sleep, 1]\nschedule: {every: 1m}\nafter: [x]\n",
                "2:6: YAML syntax error: this '{' is never closed; close it with '}' (the parser noticed at 3:1: invalid indentation in flow construct)",
            ),
            // `{` at the end of the file, with and without a final line break.
            (
                "apiVersion: x\nrun: {command: [/bin/sleep, 1]\n",
                "2:6: YAML syntax error: this '{' is never closed; close it with '}' (the parser noticed at 3:1: while parsing a flow mapping, did not find expected ',' or '}')",
            ),
            (
                "[a, b",
                "1:1: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 2:1: while parsing a flow sequence, expected ',' or ']')",
            ),
            (
                "a: [",
                "1:4: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 2:1: while parsing a node, did not find expected node content)",
            ),
            // Noticed on a later line, at a key of the block mapping.
            (
                "run:\n  command: [/bin/sleep, 1\n  user: agent\nname: x\n",
                "2:12: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 3:7: illegal placement of ':' indicator)",
            ),
            // Nested: the innermost is named, and the ones around it.
            (
                "a:\n  - [1, {b: 2\n  - c\n",
                "2:9: YAML syntax error: this '{' is never closed, nor the '[' at 2:5 around it; close them with '}]' (the parser noticed at 4:1: while parsing a flow mapping, did not find expected ',' or '}')",
            ),
            // The document ends at `---`, not at the end of the file.
            (
                "x: 1\n---\na: [1\n---\nb: 2\n",
                "3:4: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 4:1: while parsing a flow sequence, expected ',' or ']')",
            ),
            // Brackets inside quoted scalars (with their escapes) and comments do not count.
            (
                "a: [x, \"]\\\"]\", 'it''s ]', # ]\n  y\nb: 1\n",
                "1:4: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 3:2: illegal placement of ':' indicator)",
            ),
            // Columns count characters; CRLF ends a line once; an anchor before the bracket.
            (
                "é: [ü, b\n",
                "1:4: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 2:1: while parsing a flow sequence, expected ',' or ']')",
            ),
            (
                "a: 1\r\nb: [x,\r\n  y\r\nc: 2\r\n",
                "2:4: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 4:2: illegal placement of ':' indicator)",
            ),
            (
                "a: &x [1, 2\n",
                "1:7: YAML syntax error: this '[' is never closed; close it with ']' (the parser noticed at 2:1: while parsing a flow sequence, expected ',' or ']')",
            ),
        ] {
            assert_eq!(syntax(src), want, "{src:?}");
        }
    }

    #[test]
    fn a_bracket_closed_by_the_wrong_kind_is_reported_at_the_bracket_it_fails_to_close() {
        assert_eq!(
            syntax("a: [1, 2}\n"),
            "1:4: YAML syntax error: this '[' is closed with '}' at 1:9; close it with ']' (while parsing a flow sequence, expected ',' or ']')"
        );
        assert_eq!(
            syntax("a: {command: [/bin/sleep, 1}\nb: 2\n"),
            "1:14: YAML syntax error: this '[' is never closed: the '}' at 1:28 closes the '{' at 1:4 around it; close this one with ']' before that (while parsing a flow sequence, expected ',' or ']')"
        );
        assert_eq!(syntax("a: [1, 2]]\n"), "1:10: YAML syntax error: this ']' closes nothing (no '[' is open here); remove it (misplaced bracket)");
    }

    #[test]
    fn other_errors_inside_brackets_stay_where_the_parser_found_them() {
        // The bracket is closed: the problem is the missing comma, on the next line.
        assert_eq!(syntax("a: [1, 2\nb: 3]\n"), "2:2: YAML syntax error: illegal placement of ':' indicator");
        // Never closed, but the parser stopped at something else on the same line first.
        assert_eq!(syntax("a: [1, @x\n"), "1:8: YAML syntax error: unexpected character: `@'; also, the '[' at 1:4 is never closed");
        assert_eq!(
            syntax("a: [{b: c} d\n"),
            "1:12: YAML syntax error: while parsing a flow sequence, expected ',' or ']'; also, the '[' at 1:4 is never closed"
        );
        // Without brackets or quotes, the parser's words as they are.
        assert_eq!(syntax("run:\n\tcommand: [/bin/true]\n"), "2:2: YAML syntax error: tabs disallowed within this context (block indentation)");
    }

    #[test]
    fn an_unclosed_quote_is_reported_at_the_opening_quote() {
        assert_eq!(
            syntax("a: \"abc\nb: 1\n"),
            "1:4: YAML syntax error: this '\"' is never closed: the quoted text runs to the end of the document (3:1); end it with '\"' (invalid indentation in quoted scalar)"
        );
        assert_eq!(
            syntax("a: 'it''s\n"),
            "1:4: YAML syntax error: this \"'\" is never closed: the quoted text runs to the end of the document (2:1); end it with \"'\" (while scanning a quoted scalar, found unexpected end of stream)"
        );
        // Inside a flow mapping: the quote is the problem, not the brace.
        assert!(syntax("a: {b: \"x}\n").starts_with("1:8: YAML syntax error: this '\"' is never closed"), "{}", syntax("a: {b: \"x}\n"));
        // Closed lines later, by what was meant to open the next value.
        assert_eq!(
            syntax("a: \"x\nb: \"y\"\n"),
            "1:4: YAML syntax error: this '\"' runs on to the '\"' at 2:4, over lines indented less than quoted text that goes on must be; close it on its own line, or indent the lines that continue it (invalid indentation in quoted scalar)"
        );
    }

    #[test]
    fn the_flow_scanner_skips_quotes_comments_and_plain_text() {
        let flow = |src: &str| {
            let i = src.find(['[', '{']).unwrap();
            let (_, _, pos) = positioned(src).find(|(j, _, _)| *j == i).unwrap();
            scan_flow(src, i, pos, src[i..].chars().next().unwrap())
        };
        assert_eq!(flow("a: [x, \"]\", ']''[', # ]\n  don't, &n \"}\", y]"), Flow::Closed);
        assert_eq!(flow("a: {k: \"a\\\"]\"}\n"), Flow::Closed);
        // A quote inside a plain word is text, `#` without white space before it is text.
        assert_eq!(flow("a: [it's, x#], y]"), Flow::Closed);
        assert_eq!(flow("a: [\"x\n"), Flow::InQuote);
        assert_eq!(
            flow("a: [x, {b: c\n# }\n"),
            Flow::Unclosed { open: vec![(Pos { line: 1, col: 4 }, '['), (Pos { line: 1, col: 8 }, '{')], last: Pos { line: 1, col: 12 } }
        );
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
