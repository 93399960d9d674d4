//! Where things are in a YAML file: a span index per document, built from saphyr's marked
//! events, so that every error found after deserialization can still point at its line and
//! column. Paths are dotted: `run.command.0`, `logs.1.maxAge`.
//!
//! serde_norway does the typed deserialization; this module only answers "where is this path".

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScanError};

/// Line and column (1-based) of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// The span index of one YAML document.
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
    pub nulls: std::collections::HashSet<String>,
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
}

enum Frame {
    /// `seen`: the keys of this mapping so far and where, to refuse a duplicate.
    Map {
        path: String,
        key: Option<String>,
        expecting_key: bool,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// Deeper nesting is refused: a fleet document is a few levels deep, and every level costs a
/// path string as long as the nesting (10 000 `- ` would index gigabytes).
pub const MAX_DEPTH: usize = 64;

/// What aliases may add to a document, in bytes of scalar text (plus one per node) after
/// expansion. serde_norway expands aliases (its repetition limit stops the classic "billion
/// laughs", not one long string aliased thousands of times into a list it keeps).
pub const ALIAS_BUDGET: u64 = 1 << 20;

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() { seg.to_string() } else { format!("{parent}.{seg}") }
}

/// Index every document of `src`. A syntax error (or a duplicate key, nesting deeper than
/// [`MAX_DEPTH`], aliases expanding past [`ALIAS_BUDGET`]) comes back with its position and the
/// whole message.
pub fn index_documents(src: &str) -> Result<Vec<DocIndex>, (Pos, String)> {
    let mut docs = Vec::new();
    let mut cur: Option<DocIndex> = None;
    let mut stack: Vec<Frame> = Vec::new();
    // Alias accounting: the expanded size so far, the size of each anchored node, and for each
    // open collection its anchor and the expanded size where it started.
    let mut expanded: u64 = 0;
    let mut aliased: u64 = 0;
    let mut anchor_size: HashMap<usize, u64> = HashMap::new();
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut parser = Parser::new_from_str(src);
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e: ScanError| {
            let m = e.marker();
            (Pos { line: m.line(), col: m.col() + 1 }, format!("YAML syntax error: {}", e.info()))
        })?;
        let pos = Pos { line: span.start.line(), col: span.start.col() + 1 };
        match &ev {
            Event::Scalar(v, _, anchor, _) => {
                let size = v.len() as u64 + 1;
                expanded += size;
                if *anchor != 0 {
                    anchor_size.insert(*anchor, size);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                expanded += 1;
                open.push((*anchor, expanded));
                if open.len() > MAX_DEPTH {
                    return Err((pos, format!("nested more than {MAX_DEPTH} levels deep; a fleet document needs only a few levels")));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = open.pop()
                    && anchor != 0
                {
                    anchor_size.insert(anchor, expanded - start + 1);
                }
            }
            Event::Alias(anchor) => {
                let size = anchor_size.get(anchor).copied().unwrap_or(1);
                expanded = expanded.saturating_add(size);
                aliased = aliased.saturating_add(size);
                if aliased > ALIAS_BUDGET {
                    return Err((
                        pos,
                        format!(
                            "aliases expand this file by more than {} MiB (a \"billion laughs\" document?); write the values out, or alias less",
                            ALIAS_BUDGET >> 20
                        ),
                    ));
                }
            }
            _ => {}
        }
        match ev {
            Event::DocumentStart(_) => {
                cur = Some(DocIndex { start: Some(pos), ..Default::default() });
                stack.clear();
            }
            Event::DocumentEnd => {
                if let Some(d) = cur.take() {
                    docs.push(d);
                }
            }
            Event::Scalar(..) | Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                let Some(doc) = cur.as_mut() else { continue };
                // Is this node a mapping key?
                if let Some(Frame::Map { path, key, expecting_key, seen }) = stack.last_mut() {
                    if *expecting_key {
                        let k = match &ev {
                            Event::Scalar(s, ..) => s.to_string(),
                            _ => "?".to_string(),
                        };
                        if k != "?"
                            && let Some(first) = seen.insert(k.clone(), pos)
                        {
                            return Err((pos, format!("duplicate key `{k}` (first at line {}, column {}); remove one of them", first.line, first.col)));
                        }
                        doc.keys.insert(join(path, &k), pos);
                        *key = Some(k);
                        *expecting_key = false;
                        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..)) {
                            // A complex key: index nothing below it, but keep the nesting straight.
                            let p = join(path, "?");
                            stack.push(if matches!(ev, Event::MappingStart(..)) {
                                Frame::Map { path: p, key: None, expecting_key: true, seen: HashMap::new() }
                            } else {
                                Frame::Seq { path: p, index: 0 }
                            });
                        }
                        continue;
                    }
                }
                let path = match stack.last() {
                    None => String::new(),
                    Some(Frame::Map { path, key, .. }) => join(path, key.as_deref().unwrap_or("?")),
                    Some(Frame::Seq { path, index }) => join(path, &index.to_string()),
                };
                // An empty document parses as one null scalar: that is no content.
                let null_root = stack.is_empty() && matches!(&ev, Event::Scalar(v, ..) if v.is_empty() || v == "~" || v == "null");
                doc.has_root |= !null_root;
                if let Event::Scalar(v, saphyr_parser::ScalarStyle::Plain, ..) = &ev
                    && matches!(v.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    doc.nulls.insert(path.clone());
                }
                doc.values.insert(path.clone(), pos);
                if stack.len() == 1 {
                    if let (Event::Scalar(s, ..), Some(Frame::Map { key: Some(k), .. })) = (&ev, stack.last()) {
                        doc.top_scalars.insert(k.clone(), s.to_string());
                    }
                }
                match ev {
                    Event::MappingStart(..) => stack.push(Frame::Map { path, key: None, expecting_key: true, seen: HashMap::new() }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, index: 0 }),
                    _ => advance(&mut stack),
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                advance(&mut stack);
            }
            _ => {}
        }
    }
    if let Some(d) = cur.take() {
        docs.push(d);
    }
    Ok(docs)
}

/// After a value is complete, its parent expects the next key or element.
fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { expecting_key, .. }) => *expecting_key = true,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
