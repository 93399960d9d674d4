//! Fuzz the spec parser and the renderer: bytes → up to three spec files → `spec::load` →
//! `desired` for one host, asserting that nothing panics and that no input can inject a line,
//! a section or a continuation into a rendered unit. The raw text also goes through the
//! calendar and cron parsers.
//!
//! Run (see docs/fuzzing.md):
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz spec_render tests/fuzz/corpus/spec_render

#![no_main]

use libfuzzer_sys::fuzz_target;

use fleetwright::render::RenderCtx;
use fleetwright::types::Scope;
use fleetwright::spec::calendar::{cron_to_calendars, parse_calendar};

/// Files are separated by a NUL byte or by a line `===`.
fn split(text: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = if text.contains('\0') { text.splitn(3, '\0').collect() } else { text.splitn(3, "\n===\n").collect() };
    parts.into_iter().enumerate().map(|(i, t)| (format!("f{i}.yaml"), t.to_string())).collect()
}

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
fn yaml_lines(src: &str) -> usize {
    src.replace("\r\n", "\n").replace('\r', "\n").lines().count()
}

const SECTIONS: [&str; 4] = ["Unit", "Service", "Timer", "Install"];

/// What every rendered file must look like: a header of comments, then `[Section]` and
/// `Key=Value` lines only, no control characters, no line continued onto the next.
fn check_unit(name: &str, content: &str, sections: &[&str]) {
    assert!(!content.chars().any(|c| c.is_control() && c != '\n'), "{name}: control character in\n{content}");
    let mut in_header = true;
    let mut kv_lines = 0;
    for line in content.lines() {
        if line.starts_with('#') {
            assert!(in_header, "{name}: comment line after the header: {line:?}\n{content}");
            continue;
        }
        in_header = false;
        if line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            let s = s.strip_suffix(']').unwrap_or_else(|| panic!("{name}: bad section line {line:?}\n{content}"));
            assert!(sections.contains(&s), "{name}: unexpected section [{s}]\n{content}");
            continue;
        }
        let (k, _) = line.split_once('=').unwrap_or_else(|| panic!("{name}: line is not Key=Value: {line:?}\n{content}"));
        assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}: bad key {k:?}\n{content}");
        // An odd number of trailing backslashes continues the line in systemd's parser: the next
        // directive would be swallowed into this value.
        let trailing = line.bytes().rev().take_while(|b| *b == b'\\').count();
        assert!(trailing % 2 == 0, "{name}: line continues onto the next: {line:?}\n{content}");
        kv_lines += 1;
    }
    let parsed = fleetwright::unit::parse(content);
    for s in parsed.keys() {
        assert!(sections.contains(&s.as_str()), "{name}: parsed section [{s}]\n{content}");
    }
    let entries: usize = parsed.values().map(Vec::len).sum();
    assert_eq!(entries, kv_lines, "{name}: parse joined or dropped lines\n{content}");
    for (k, v) in parsed.values().flatten() {
        if k == "ExecStart" {
            assert!(v.starts_with("\"/"), "{name}: ExecStart does not start with a quoted absolute program: {v:?}");
        }
    }
}

fn check_calendar(expr: &str) {
    if let Ok(spec) = parse_calendar(expr) {
        let norm = spec.normalized();
        assert!(parse_calendar(&norm).is_ok(), "normalized form {norm:?} of {expr:?} does not parse");
        let _ = spec.next_elapse(1_700_000_000);
    }
    if let Ok(cals) = cron_to_calendars(expr) {
        assert!(matches!(cals.len(), 1 | 2), "cron {expr:?} → {cals:?}: one or two expressions");
        for cal in &cals {
            assert!(!cal.chars().any(char::is_control), "cron {expr:?} → {cal:?} has a control character");
            assert!(parse_calendar(cal).is_ok(), "cron {expr:?} translates to {cal:?}, which does not parse");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_calendar(&text);
    for line in text.lines().take(4) {
        check_calendar(line);
    }
    let files = split(&text);
    match fleetwright::spec::load(&files, &fleetwright::spec::calendar::NoDatabase) {
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in &diags.0 {
                let (_, src) = files.iter().find(|(p, _)| *p == d.loc.file).unwrap_or_else(|| panic!("diagnostic names no input file: {d}"));
                assert!(d.loc.line >= 1 && d.loc.col >= 1, "{d}");
                assert!(d.loc.line <= yaml_lines(src) + 1, "line past the end of the file: {d}");
                assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
            }
        }
        Ok(fleet) => {
            let ctx = RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() };
            let desired = fleetwright::desired::desired(&fleet, "vps-1", &ctx, "c0ffee", &Default::default());
            // A valid fleet renders: the last-line check refusing it means the spec checks and
            // the renderer disagree.
            assert!(desired.refused.is_empty(), "a valid fleet's render was refused: {:?}", desired.refused);
            let exe = fleetwright::unit::quote(&ctx.exe, true);
            let policy = fleetwright::unit::Policy { allow_root: fleet.allow_root, system: true, exe: &exe, credentials: "/var/lib/fleetwright/credentials" };
            for (name, u) in &desired.units {
                check_unit(name, &u.content, &SECTIONS);
                // Every rendered line is one the renderer meant to write: read back strictly,
                // the file passes the renderer's own line-by-line check, and its entries are
                // exactly the lines systemd will read.
                let back = fleetwright::unit::UnitFile::from_rendered(&u.content).unwrap_or_else(|e| panic!("{name}: {e}\n{}", u.content));
                back.check(&policy).unwrap_or_else(|e| panic!("{name}: {e}\n{}", u.content));
                assert_eq!(back.render(), u.content, "{name}: the text does not read back as the same file");
                if !fleet.allow_root {
                    let parsed = fleetwright::unit::parse(&u.content);
                    for (k, v) in parsed.values().flatten() {
                        assert!(!(k == "User" && (v == "root" || v == "0")), "{name}: User={v} without allowRoot\n{}", u.content);
                    }
                }
            }
            for (path, (content, _)) in &desired.config {
                check_unit(path, content, &["Journal"]);
            }
        }
    }
});
