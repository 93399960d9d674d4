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
    Map { path: String, key: Option<String>, expecting_key: bool },
    Seq { path: String, index: usize },
}

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() { seg.to_string() } else { format!("{parent}.{seg}") }
}

/// Index every document of `src`. A syntax error comes back with its position.
pub fn index_documents(src: &str) -> Result<Vec<DocIndex>, (Pos, String)> {
    let mut docs = Vec::new();
    let mut cur: Option<DocIndex> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(src);
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e: ScanError| {
            let m = e.marker();
            (Pos { line: m.line(), col: m.col() + 1 }, e.info().to_string())
        })?;
        let pos = Pos { line: span.start.line(), col: span.start.col() + 1 };
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
                if let Some(Frame::Map { path, key, expecting_key }) = stack.last_mut() {
                    if *expecting_key {
                        let k = match &ev {
                            Event::Scalar(s, ..) => s.to_string(),
                            _ => "?".to_string(),
                        };
                        doc.keys.insert(join(path, &k), pos);
                        *key = Some(k);
                        *expecting_key = false;
                        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..)) {
                            // A complex key: index nothing below it, but keep the nesting straight.
                            let p = join(path, "?");
                            stack.push(if matches!(ev, Event::MappingStart(..)) {
                                Frame::Map { path: p, key: None, expecting_key: true }
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
                doc.values.insert(path.clone(), pos);
                if stack.len() == 1 {
                    if let (Event::Scalar(s, ..), Some(Frame::Map { key: Some(k), .. })) = (&ev, stack.last()) {
                        doc.top_scalars.insert(k.clone(), s.to_string());
                    }
                }
                match ev {
                    Event::MappingStart(..) => stack.push(Frame::Map { path, key: None, expecting_key: true }),
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
    fn empty_input_has_no_root() {
        let docs = index_documents("# only a comment\n").unwrap();
        assert!(docs.iter().all(|d| !d.has_root));
    }
}
