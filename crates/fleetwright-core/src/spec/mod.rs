//! The spec: fleet YAML → a validated [`model::Fleet`], or every [`Diagnostic`] at once.
//!
//! Pure: callers hand in `(path, text)` pairs (from a git tree or a directory); nothing here
//! reads the file system. One reading: `yaml` parses each file once into a tree of positioned
//! nodes, `de` deserializes the `raw` types from that tree (unknown fields collected by
//! serde_ignored) and the span index is derived from it too, so values and positions cannot
//! disagree; then `check` turns raw into model and reports each problem at its line and column.

pub mod calendar;
pub mod de;
pub mod diag;
pub mod model;
pub mod raw;
pub mod values;
pub mod yaml;

mod check;

use std::collections::BTreeMap;

pub use calendar::ZoneLookup;
pub use diag::{Diagnostic, Diagnostics, Loc};
pub use model::Fleet;

/// The API version every document declares.
pub const API_VERSION: &str = "fleetwright/v1";

/// A larger spec file is refused before it is parsed (a fleet's files are a few KiB).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Is this path (relative to the fleet root) a spec file? `*.yaml`/`*.yml`, no hidden segment.
pub fn is_spec_path(rel: &str) -> bool {
    (rel.ends_with(".yaml") || rel.ends_with(".yml")) && !rel.split('/').any(|seg| seg.starts_with('.'))
}

/// Load a fleet from spec files `(relative path, text)`. All files are read; a commit is valid
/// only if every document is. `zones` says which time zones the host has installed (a
/// calendar expression may name one; systemd accepts only those). The diagnostics come causes
/// first ([`Diagnostics::sorted`]).
pub fn load(files: &[(String, String)], zones: &dyn calendar::ZoneLookup) -> Result<Fleet, Diagnostics> {
    load_with(files, None, zones)
}

/// [`load`], with the secret files of the commit (every `*.age` file of the fleet directory,
/// by normalized path): each secret an agent names must be one of them, an age file, and
/// encrypted to the hosts that run the agent where the Fleet lists their keys
/// ([`crate::secrets::attach`]). `None`: not known (a spec file checked alone).
pub fn load_with(files: &[(String, String)], secrets: Option<&BTreeMap<String, Vec<u8>>>, zones: &dyn calendar::ZoneLookup) -> Result<Fleet, Diagnostics> {
    let mut files: Vec<&(String, String)> = files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut diags = Diagnostics::default();
    let mut docs = Vec::new();
    // Files are parsed independently: a big fleet is split over the machine's cores, and the
    // pieces are put back together in file order (so the result is the same as one by one).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if files.len() < 64 || threads < 2 {
        for (path, text) in files {
            check::parse_file(path, text, &mut docs, &mut diags);
        }
    } else {
        let chunk = files.len().div_ceil(threads);
        let parts: Vec<(Vec<check::Doc>, Diagnostics)> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let (mut docs, mut diags) = (Vec::new(), Diagnostics::default());
                        for (path, text) in part {
                            check::parse_file(path, text, &mut docs, &mut diags);
                        }
                        (docs, diags)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        for (d, g) in parts {
            docs.extend(d);
            diags.0.extend(g.0);
        }
    }
    let mut fleet = check::build_fleet(docs, &mut diags, zones);
    crate::secrets::attach(&mut fleet, secrets, &mut diags);
    if diags.is_empty() { Ok(fleet) } else { Err(diags.sorted()) }
}

/// Index of `(file → text)` kept beside diagnostics so that they can be shown with their source.
pub fn sources(files: &[(String, String)]) -> BTreeMap<&str, &str> {
    files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect()
}

/// The JSON Schema of one document kind (`Agent` or `Fleet`), generated from the raw types.
pub fn json_schema(kind: &str) -> serde_json::Value {
    let schema = if kind == "Fleet" { schemars::schema_for!(raw::FleetDoc) } else { schemars::schema_for!(raw::AgentDoc) };
    schema.to_value()
}

/// The JSON Schema for any fleetwright document: an Agent or a Fleet, told apart by `kind`.
pub fn json_schema_any() -> serde_json::Value {
    let mut agent = json_schema("Agent");
    let mut fleet = json_schema("Fleet");
    let mut defs = serde_json::Map::new();
    for s in [&mut agent, &mut fleet] {
        if let Some(serde_json::Value::Object(d)) = s.as_object_mut().and_then(|o| o.remove("$defs")) {
            defs.extend(d);
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("$schema");
        }
    }
    for (s, kind) in [(&mut agent, "Agent"), (&mut fleet, "Fleet")] {
        s["properties"]["kind"] = serde_json::json!({ "const": kind });
        s["properties"]["apiVersion"] = serde_json::json!({ "const": API_VERSION });
    }
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "fleetwright fleet document",
        "oneOf": [agent, fleet],
        "$defs": defs,
    })
}

/// The field names the schema allows at `parent` (a dotted path) of a document of `kind`, for
/// "did you mean" hints on unknown fields.
pub(crate) fn schema_fields(kind: &str, parent: &str) -> Vec<String> {
    let schema = json_schema(kind);
    // Follow $ref, Option's anyOf/[null] wrapping and array items until an object is reached.
    fn resolve<'a>(schema: &'a serde_json::Value, mut v: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        for _ in 0..8 {
            if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
                v = schema.pointer(r.trim_start_matches('#'))?;
            } else if let Some(alts) = v.get("anyOf").or_else(|| v.get("oneOf")).and_then(|a| a.as_array()) {
                v = alts.iter().find(|a| a.get("type").and_then(|t| t.as_str()) != Some("null"))?;
            } else if v.get("items").is_some() {
                v = v.get("items")?;
            } else {
                return Some(v);
            }
        }
        None
    }
    let mut cur = Some(&schema);
    for seg in parent.split('.').filter(|s| !s.is_empty()) {
        cur = cur.and_then(|c| resolve(&schema, c)).and_then(
            |c| {
                if seg.parse::<usize>().is_ok() { Some(c) } else { c.get("properties").and_then(|p| p.get(seg)) }
            },
        );
    }
    let Some(obj) = cur.and_then(|c| resolve(&schema, c)) else { return Vec::new() };
    obj.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
