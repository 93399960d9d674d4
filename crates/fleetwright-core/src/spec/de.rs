//! serde over the YAML tree of `yaml.rs`: the typed `raw` documents are read from the very nodes
//! whose positions errors point at. A deserialization error carries the position of the node it
//! is about and its path (`run.successExitCodes[0]: …`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor};

use super::yaml::{Key, Node, Pos, Resolved, Value};

/// A deserialization error: what, where, and the path below the document that leads to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub msg: String,
    pub pos: Option<Pos>,
    /// Innermost last: `["run", "successExitCodes", "[0]"]`.
    path: Vec<String>,
}

impl Error {
    /// Attach the position of the node being read, unless a deeper node already gave one.
    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }
    fn under(mut self, seg: String) -> Self {
        self.path.insert(0, seg);
        self
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { msg: msg.to_string(), pos: None, path: Vec::new() }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = String::new();
        for seg in &self.path {
            if !path.is_empty() && !seg.starts_with('[') {
                path.push('.');
            }
            path.push_str(seg);
        }
        if path.is_empty() { f.write_str(&self.msg) } else { write!(f, "{path}: {}", self.msg) }
    }
}

/// Deserialize a `T` from one node.
pub fn from_node<'de, T: serde::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(node)
}

fn unexpected(node: &Node) -> Unexpected<'_> {
    match &node.value {
        Value::Null => Unexpected::Unit,
        Value::Seq(_) => Unexpected::Seq,
        Value::Map(_) => Unexpected::Map,
        Value::Scalar { text, plain } => match Node::resolve(text, *plain) {
            Resolved::Bool(b) => Unexpected::Bool(b),
            Resolved::Int(n) => i64::try_from(n).map_or(Unexpected::Other("integer"), Unexpected::Signed),
            Resolved::Float(x) => Unexpected::Float(x),
            Resolved::Str(s) => Unexpected::Str(s),
        },
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Null => v.visit_unit(),
            Value::Scalar { text, plain } => match Node::resolve(text, *plain) {
                Resolved::Bool(b) => v.visit_bool(b),
                Resolved::Int(n) => match (i64::try_from(n), u64::try_from(n)) {
                    (Ok(n), _) => v.visit_i64(n),
                    (_, Ok(n)) => v.visit_u64(n),
                    _ => v.visit_i128(n),
                },
                Resolved::Float(x) => v.visit_f64(x),
                Resolved::Str(s) => v.visit_borrowed_str(s),
            },
            Value::Seq(items) => v.visit_seq(Seq { items: items.iter(), index: 0 }),
            Value::Map(entries) => v.visit_map(Map { entries: entries.iter(), value: None }),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    /// A scalar as written, whatever the core schema would make of it: `1.10` stays `1.10`.
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Scalar { text, .. } => v.visit_borrowed_str(text),
            _ => Err(de::Error::invalid_type(unexpected(self), &v)),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Null => v.visit_unit(),
            _ => Err(de::Error::invalid_type(unexpected(self), &v)),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self).map_err(|e| e.at(self.pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Seq(items) => v.visit_seq(Seq { items: items.iter(), index: 0 }),
            _ => Err(de::Error::invalid_type(unexpected(self), &v)),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Map(entries) => v.visit_map(Map { entries: entries.iter(), value: None }),
            _ => Err(de::Error::invalid_type(unexpected(self), &v)),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], v: V) -> Result<V::Value, Error> {
        self.deserialize_map(v)
    }

    /// Unit variants only, written as their name.
    fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], v: V) -> Result<V::Value, Error> {
        let r = match &self.value {
            Value::Scalar { text, .. } => v.visit_enum(text.as_str().into_deserializer()),
            _ => Err(de::Error::invalid_type(unexpected(self), &v)),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
    }
}

struct Seq<'de> {
    items: std::slice::Iter<'de, Node>,
    index: usize,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let i = self.index;
        self.index += 1;
        seed.deserialize(node).map(Some).map_err(|e| e.at(node.pos).under(format!("[{i}]")))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de> {
    entries: std::slice::Iter<'de, (Key, Node)>,
    value: Option<(&'de Key, &'de Node)>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.entries.next() else { return Ok(None) };
        self.value = Some((k, v));
        seed.deserialize(KeyDe(k)).map(Some).map_err(|e| e.at(k.pos))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let (k, v) = self.value.take().ok_or_else(|| <Error as de::Error>::custom("a value without its key"))?;
        seed.deserialize(v).map_err(|e| e.at(v.pos).under(k.text.clone()))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A mapping key: always its text.
struct KeyDe<'de>(&'de Key);

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_borrowed_str(&self.0.text)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::yaml::parse_documents;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        name: Option<String>,
        run: Option<Run>,
    }
    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Run {
        command: Vec<String>,
        codes: Option<Vec<u8>>,
        env: Option<BTreeMap<String, String>>,
    }

    fn read(src: &str) -> Result<Doc, Error> {
        let docs = parse_documents(src).unwrap();
        from_node(docs[0].root.as_ref().unwrap())
    }

    #[test]
    fn reads_typed_values_as_written() {
        let d = read("name: 1.10\nrun: {command: [/bin/x, 0x1F, true], codes: [3], env: {A: 007}}\n").unwrap();
        assert_eq!(d.name.as_deref(), Some("1.10"));
        let run = d.run.unwrap();
        assert_eq!(run.command, ["/bin/x", "0x1F", "true"]);
        assert_eq!(run.codes, Some(vec![3]));
        assert_eq!(run.env.unwrap()["A"], "007");
    }

    #[test]
    fn errors_carry_the_node_position_and_path() {
        let e = read("name: x\nrun:\n  command: [/bin/x]\n  codes: [1, 300]\n").unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 4, col: 14 }));
        assert_eq!(e.to_string(), "run.codes[1]: invalid value: integer `300`, expected u8");
        let e = read("name: [a]\n").unwrap_err();
        assert_eq!((e.pos, e.to_string().as_str()), (Some(Pos { line: 1, col: 7 }), "name: invalid type: sequence, expected a string"));
        let e = read("run: {codes: [1]}\n").unwrap_err();
        assert_eq!((e.pos, e.to_string().as_str()), (Some(Pos { line: 1, col: 6 }), "run: missing field `command`"));
    }
}
