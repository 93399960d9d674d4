//! Hostile and broken spec input: every case gets a clear error naming FILE:LINE:COL (or is
//! accepted, when that is correct), never a panic, and an invalid file fails the whole load, so
//! nothing of that commit is applied. Also the regression tests of what `spec_render` (the fuzz
//! target in tests/fuzz, see docs/fuzzing.md) found, and the escaping of `%` and `$`.

use std::time::{Duration, Instant};

use crate::common::*;
use fleetwright::spec;

const HEAD: &str = "apiVersion: fleetwright/v1\nkind: Agent\n";

/// An Agent document: `HEAD` (lines 1-2) then `body` from line 3.
fn agent(body: &str) -> String {
    format!("{HEAD}{body}")
}

/// A valid agent whose `run` mapping (line 4, flow style) gets `extra` appended.
fn run_with(extra: &str) -> String {
    agent(&format!("name: x\nrun: {{command: [/bin/true], user: agent{extra}}}\n"))
}

fn load(files: &[(&str, &str)]) -> Result<spec::Fleet, spec::Diagnostics> {
    let files: Vec<(String, String)> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    spec::load(&files, &fleetwright::host::zones::Tzdata)
}

/// A valid sibling file: a hostile file next to it must still fail the whole commit.
const SIBLING: &str = "apiVersion: fleetwright/v1\nkind: Agent\nname: fine\nrun: {command: [/bin/true], user: agent}\n";

enum Want {
    /// The load fails and one diagnostic reads (contains) this, `FILE:LINE:COL: message`.
    Err(&'static str),
    /// The load succeeds.
    Ok,
}

fn cases() -> Vec<(&'static str, String, Want)> {
    use Want::*;
    let long = "a".repeat(64);
    vec![
        // Agent names become unit file names and marker paths.
        ("name with a newline", agent("name: \"a\\nb\"\nrun: {command: [/bin/true], user: agent}\n"), Err("h.yaml:3:7: invalid name \"a\\nb\"")),
        ("name with a slash", agent("name: a/b\nrun: {command: [/bin/true], user: agent}\n"), Err("h.yaml:3:7: invalid name \"a/b\"")),
        ("name that is ..", agent("name: ..\nrun: {command: [/bin/true], user: agent}\n"), Err("h.yaml:3:7: invalid name \"..\"")),
        ("name with ../", agent("name: ../../etc/passwd\nrun: {command: [/bin/true], user: agent}\n"), Err("h.yaml:3:7: invalid name \"../../etc/passwd\"")),
        (
            "name in uppercase",
            agent("name: Outreach\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:3:7: invalid name \"Outreach\": use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit (like \"outreach\")"),
        ),
        ("name of 64 characters", agent(&format!("name: {long}\nrun: {{command: [/bin/true], user: agent}}\n")), Err("h.yaml:3:7: invalid name \"aaaa")),
        ("name of 63 characters", agent(&format!("name: {}\nrun: {{command: [/bin/true], user: agent}}\n", &long[..63])), Ok),
        (
            "name with a dot (helper units use dots)",
            agent("name: a.logs\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:3:7: invalid name \"a.logs\""),
        ),
        ("name that is a number", agent("name: 42\nrun: {command: [/bin/true], user: agent}\n"), Ok),
        (
            "name that is a list",
            agent("name: [a]\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:3:7: name: invalid type: sequence, expected a string"),
        ),
        // Paths escaping their directory, or not paths at all.
        ("workingDirectory with ..", run_with(", workingDirectory: /srv/../etc"), Err("h.yaml:4:60: workingDirectory: path \"/srv/../etc\" contains '..'")),
        ("workingDirectory relative", run_with(", workingDirectory: srv/x"), Err("h.yaml:4:60: workingDirectory: path \"srv/x\" is not absolute")),
        ("workingDirectory with ~", run_with(", workingDirectory: ~/x"), Err("h.yaml:4:60: workingDirectory: path \"~/x\" is not absolute")),
        ("workingDirectory ~ alone (null)", run_with(", workingDirectory: \"~\""), Err("h.yaml:4:60: workingDirectory: path \"~\" is not absolute")),
        ("environmentFile relative", run_with(", environmentFile: ../env"), Err("h.yaml:4:59: environmentFile: path \"../env\" is not absolute")),
        (
            "credential path with ..",
            run_with(", credentials: {tok: /etc/creds/../shadow}"),
            Err("h.yaml:4:61: tok: path \"/etc/creds/../shadow\" contains '..'"),
        ),
        (
            "readWritePaths with ..",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nhardening: {readWritePaths: [/srv/x/../../]}\n"),
            Err("h.yaml:5:30: readWritePaths: path \"/srv/x/../../\" contains '..'"),
        ),
        (
            "logs path with ..",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nlogs: [{path: /srv/x/../.., maxAge: 1d}]\n"),
            Err("h.yaml:5:15: path: path \"/srv/x/../..\" contains '..'"),
        ),
        (
            "logs path at the root",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nlogs: [{path: /, maxAge: 1d}]\n"),
            Err("h.yaml:5:15: path: \"/\" is too close to the root"),
        ),
        (
            "logs match with a slash",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nlogs: [{path: /srv/x/logs, match: ../*, maxAge: 1d}]\n"),
            Err("h.yaml:5:35: match: a glob on file names, without '/'"),
        ),
        (
            "backup target with ~",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nbackups: [{sqlite: /srv/x/db, to: ~/b}]\n"),
            Err("h.yaml:5:35: to: path \"~/b\" is not absolute"),
        ),
        (
            "heartbeat file relative",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nhealth: {heartbeat: {file: hb, maxAge: 1m}}\n"),
            Err("h.yaml:5:28: file: path \"hb\" is not absolute"),
        ),
        ("program relative", agent("name: x\nrun: {command: [bin/sh], user: agent}\n"), Err("h.yaml:4:17: the program \"bin/sh\" must be an absolute path")),
        (
            "program by name",
            agent("name: x\nrun: {command: [sh, -c, id], user: agent}\n"),
            Err("h.yaml:4:17: the program \"sh\" must be an absolute path (there is no shell and no PATH lookup), like /usr/bin/sh"),
        ),
        ("program with ..", agent("name: x\nrun: {command: [/usr/../bin/sh], user: agent}\n"), Err("h.yaml:4:17: path \"/usr/../bin/sh\" contains '..'")),
        ("command empty", agent("name: x\nrun: {command: [], user: agent}\n"), Err("h.yaml:4:16: run.command is empty")),
        // Unit injection: a newline (or any control character) in a value would add directives.
        (
            "description injecting a section",
            agent("name: x\ndescription: \"a\\n[Service]\\nExecStartPre=/bin/sh\"\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:14: description contains the control character '\\n'"),
        ),
        (
            "description with a carriage return",
            agent("name: x\ndescription: \"a\\rExecStartPre=/bin/sh\"\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:14: description contains the control character '\\r'"),
        ),
        (
            "description with NUL",
            agent("name: x\ndescription: \"a\\0b\"\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:14: description contains the control character '\\0'"),
        ),
        (
            "description with NEL (U+0085)",
            agent("name: x\ndescription: \"a\\Nb\"\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:14: description contains the control character '\\u{85}'"),
        ),
        (
            "description in a block scalar",
            agent("name: x\ndescription: |\n  one\n  ExecStartPre=/bin/sh\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:5:3: description contains the control character '\\n'"),
        ),
        (
            "environment value injecting",
            run_with(", environment: {A: \"1\\nExecStartPre=/bin/sh\"}"),
            Err("h.yaml:4:59: environment value of A contains the control character '\\n'"),
        ),
        (
            "environment name injecting",
            run_with(", environment: {\"A\\nExecStartPre\": /bin/sh}"),
            Err("h.yaml:4:56: environment variable name \"A\\nExecStartPre\" is invalid"),
        ),
        ("environment name with =", run_with(", environment: {\"A=B\": c}"), Err("h.yaml:4:56: environment variable name \"A=B\" is invalid")),
        (
            "command argument injecting",
            agent("name: x\nrun: {command: [/bin/true, \"a\\nExecStartPre=/bin/sh\"], user: agent}\n"),
            Err("h.yaml:4:28: argument contains the control character '\\n'"),
        ),
        (
            "program injecting",
            agent("name: x\nrun: {command: [\"/bin/true\\nExecStartPre=/bin/sh\"], user: agent}\n"),
            Err("h.yaml:4:17: path \"/bin/true\\nExecStartPre=/bin/sh\" contains the control character '\\n'"),
        ),
        (
            "credential name injecting",
            run_with(", credentials: {\"t\\nExecStartPre=/bin/sh\": /etc/t}"),
            Err("h.yaml:4:83: credential name \"t\\nExecStartPre=/bin/sh\" is invalid"),
        ),
        ("credential name with a colon", run_with(", credentials: {\"a:b\": /etc/t}"), Err("h.yaml:4:63: credential name \"a:b\" is invalid")),
        (
            "credential path injecting",
            run_with(", credentials: {tok: \"/etc/t\\n[Service]\"}"),
            Err("h.yaml:4:61: tok: path \"/etc/t\\n[Service]\" contains the control character '\\n'"),
        ),
        (
            "workingDirectory injecting",
            run_with(", workingDirectory: \"/srv/x\\nUser=root\""),
            Err("h.yaml:4:60: workingDirectory: path \"/srv/x\\nUser=root\" contains the control character '\\n'"),
        ),
        (
            "user injecting",
            agent("name: x\nrun: {command: [/bin/true], user: \"agent\\nUser=root\"}\n"),
            Err("h.yaml:4:35: user: invalid user or group name \"agent\\nUser=root\""),
        ),
        ("group injecting", run_with(", group: \"g\\nUser=root\""), Err("h.yaml:4:49: group: invalid user or group name \"g\\nUser=root\"")),
        (
            "OnCalendar injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nschedule: {calendar: \"daily\\nExecStartPre=/bin/sh\"}\n"),
            Err("h.yaml:5:22: calendar: invalid OnCalendar expression \"daily\\nExecStartPre=/bin/sh\": contains the control character '\\n'"),
        ),
        (
            "cron injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nschedule: {cron: \"0 0 * * *\\nExecStartPre=/bin/sh\"}\n"),
            Err("h.yaml:5:18: cron:"),
        ),
        (
            "concurrency group injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nconcurrency: {group: \"g\\n[Service]\", limit: 1}\n"),
            Err("h.yaml:5:22: concurrency.group \"g\\n[Service]\" is invalid"),
        ),
        (
            "logs match injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nlogs: [{path: /srv/x/logs, match: \"*\\n[Service]\", maxAge: 1d}]\n"),
            Err("h.yaml:5:35: match: a glob on file names"),
        ),
        (
            "health check argument injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nhealth: {check: [/bin/true, \"\\n[Service]\"]}\n"),
            Err("h.yaml:5:29: argument contains the control character '\\n'"),
        ),
        (
            "unitPrefix injecting",
            "apiVersion: fleetwright/v1\nkind: Fleet\nunitPrefix: \"a\\n[Service]\"\n".to_string(),
            Err("h.yaml:3:13: invalid unitPrefix \"a\\n[Service]\""),
        ),
        ("unitPrefix with a slash", "apiVersion: fleetwright/v1\nkind: Fleet\nunitPrefix: ../\n".to_string(), Err("h.yaml:3:13: invalid unitPrefix \"../\"")),
        (
            "host name injecting",
            "apiVersion: fleetwright/v1\nkind: Fleet\nhosts: {\"vps\\n1\": {}}\n".to_string(),
            Err("h.yaml:3:19: invalid host name \"vps\\n1\""),
        ),
        (
            "after injecting",
            agent("name: x\nrun: {command: [/bin/true], user: agent}\nafter: [\"y.service\\n[Service]\"]\n"),
            Err("h.yaml:5:9: `after` names \"y.service\\n[Service]\", which is not an agent of this fleet"),
        ),
        // A trailing backslash continues a unit line onto the next (found by reasoning about what
        // spec_render checks, see docs/fuzzing.md): `WorkingDirectory=/srv/x\` swallowed `User=`.
        (
            "workingDirectory ending in a backslash",
            run_with(", workingDirectory: /srv/x\\"),
            Err("h.yaml:4:60: workingDirectory: path \"/srv/x\\\\\" ends with '\\', which systemd reads as a line continuation"),
        ),
        (
            "description ending in a backslash",
            agent("name: x\ndescription: ends in \\\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:14: description ends with '\\', which systemd reads as a line continuation"),
        ),
        (
            "environmentFile ending in a backslash",
            run_with(", environmentFile: /etc/env\\"),
            Err("h.yaml:4:59: environmentFile: path \"/etc/env\\\\\" ends with '\\'"),
        ),
        ("credential path ending in a backslash", run_with(", credentials: {tok: /etc/tok\\}"), Err("h.yaml:4:61: tok: path \"/etc/tok\\\\\" ends with '\\'")),
        ("argument ending in a backslash (quoted, fine)", agent("name: x\nrun: {command: [/bin/echo, a\\], user: agent}\n"), Ok),
        // Broken YAML and structure.
        ("unclosed flow sequence", "a: [1, 2\nb: c\n".to_string(), Err("h.yaml:1:4: YAML syntax error: this '[' is never closed")),
        (
            "tab indentation",
            "apiVersion: fleetwright/v1\nkind: Agent\nrun:\n\tcommand: [/bin/true]\n".to_string(),
            Err("h.yaml:4:2: YAML syntax error: tabs disallowed"),
        ),
        ("a list at the top", "- apiVersion: fleetwright/v1\n".to_string(), Err("h.yaml:1:1: document has no apiVersion")),
        ("a scalar document", "hello\n".to_string(), Err("h.yaml:1:1: document has no apiVersion")),
        ("unknown apiVersion", "apiVersion: fleetwright/v2\nkind: Agent\n".to_string(), Err("h.yaml:1:13: unsupported apiVersion \"fleetwright/v2\"")),
        ("unknown kind", "apiVersion: fleetwright/v1\nkind: Agnet\n".to_string(), Err("h.yaml:2:7: unknown kind \"Agnet\"; did you mean `Agent`?")),
        ("kind as a list", "apiVersion: fleetwright/v1\nkind: [Agent]\n".to_string(), Err("h.yaml:1:1: document has no kind")),
        (
            "a tag on a value (tags change how a value is read: refused)",
            agent("name: !!binary aGVsbG8=\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:3:7: tags like `!!binary` are not supported"),
        ),
        ("exit code out of range", run_with(", successExitCodes: [256]"), Err("h.yaml:4:61: exit code 256 is out of range")),
        (
            "a huge number",
            run_with(", successExitCodes: [99999999999999999999999]"),
            Err("h.yaml:4:61: run.successExitCodes[0]: invalid type: integer `99999999999999999999999` as i128, expected i64"),
        ),
        // Duplicate keys: YAML forbids them; silently taking one of the two would hide a mistake.
        (
            "duplicate top-level key",
            agent("name: a\nname: b\nrun: {command: [/bin/true], user: agent}\n"),
            Err("h.yaml:4:1: duplicate key `name` (first at line 3, column 1)"),
        ),
        ("duplicate kind", "apiVersion: fleetwright/v1\nkind: Agent\nkind: Fleet\n".to_string(), Err("h.yaml:3:1: duplicate key `kind`")),
        ("duplicate environment variable", run_with(", environment: {A: 1, A: 2}"), Err("h.yaml:4:62: duplicate key `A` (first at line 4, column 56)")),
        ("duplicate credential", run_with(", credentials: {t: /a, t: /b}"), Err("h.yaml:4:63: duplicate key `t` (first at line 4, column 56)")),
        (
            "duplicate host",
            "apiVersion: fleetwright/v1\nkind: Fleet\nhosts:\n  a: {}\n  a: {labels: [x]}\n".to_string(),
            Err("h.yaml:5:3: duplicate key `a` (first at line 4, column 3)"),
        ),
        (
            "duplicate key in the second document",
            format!("{SIBLING}---\n{HEAD}name: y\nrun: {{command: [/bin/true], user: a, user: b}}\n"),
            Err("h.yaml:9:38: duplicate key `user` (first at line 9, column 29)"),
        ),
        ("same key in two mappings (fine)", agent("name: x\nrun: {command: [/bin/true], user: agent, environment: {user: a}}\n"), Ok),
    ]
}

#[test]
fn hostile_inputs_get_a_clear_error_at_their_position_and_fail_the_whole_commit() {
    let mut failures = Vec::new();
    for (what, text, want) in cases() {
        let alone = load(&[("h.yaml", &text)]);
        let with_sibling = load(&[("a-sibling.yaml", SIBLING), ("h.yaml", &text)]);
        match (&want, &alone) {
            (Want::Ok, Ok(_)) => {}
            (Want::Err(expected), Err(d)) => {
                let shown = d.to_string();
                if !shown.contains(expected) {
                    failures.push(format!("{what}: expected {expected:?}, got:\n{shown}"));
                }
                for diag in &d.0 {
                    if diag.loc.file != "h.yaml" || diag.loc.line == 0 || diag.loc.col == 0 {
                        failures.push(format!("{what}: diagnostic without a position in the file: {diag}"));
                    }
                }
                if with_sibling.is_ok() {
                    failures.push(format!("{what}: a valid sibling file made the commit load"));
                }
            }
            (Want::Ok, Err(d)) => failures.push(format!("{what}: expected to load, got:\n{d}")),
            (Want::Err(expected), Ok(_)) => failures.push(format!("{what}: expected {expected:?}, but it loaded")),
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// Load `text` as `h.yaml` in a thread with a small stack (like a tokio worker's), returning
/// the diagnostics and how long it took; panics (stack overflow aborts) fail the test.
fn load_timed(text: String) -> (Result<spec::Fleet, spec::Diagnostics>, Duration) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let t = Instant::now();
            let r = load(&[("h.yaml", &text)]);
            (r, t.elapsed())
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Generous: these run in a debug build on a busy CI machine; a blow-up takes minutes or
/// aborts.
const REASONABLE: Duration = Duration::from_secs(30);

fn first_error(r: &Result<spec::Fleet, spec::Diagnostics>) -> String {
    match r {
        Ok(f) => format!("loaded ({} agents)", f.agents.len()),
        Err(d) => d.0.first().map(ToString::to_string).unwrap_or_default(),
    }
}

#[test]
fn a_file_name_with_a_newline_is_refused() {
    // Git allows a newline in a file name; the name is written into every unit's header.
    let d = load(&[("agents/x\n[Service]\nExecStartPre=/bin/sh\n.yaml", SIBLING)]).unwrap_err();
    assert_eq!(d.to_string(), "agents/x\\n[Service]\\nExecStartPre=/bin/sh\\n.yaml:1:1: the file name contains the control character '\\n'; rename the file\n");
}

#[test]
fn a_huge_file_is_refused_quickly() {
    // 5 MB in three shapes: one long value, many documents, many unknown fields.
    let long_value = agent(&format!("name: x\ndescription: {}\nrun: {{command: [/bin/true], user: agent}}\n", "a".repeat(5 << 20)));
    let many_docs = (0..60_000).map(|i| agent(&format!("name: a{i}\nrun: {{command: [/bin/true], user: agent}}\n"))).collect::<Vec<_>>().join("---\n");
    let unknown_fields = agent(&(0..500_000).map(|i| format!("f{i}: 1\n")).collect::<String>());
    for (what, text) in [("one long value", long_value), ("60 000 documents", many_docs), ("500 000 unknown fields", unknown_fields)] {
        assert!(text.len() > 5_000_000, "{what}: {} bytes", text.len());
        let (r, took) = load_timed(text);
        let e = first_error(&r);
        eprintln!("{what}: {took:?}: {e}");
        assert!(e.starts_with("h.yaml:1:1: the file is 5."), "{what}: {e}");
        assert!(e.contains("MiB; a spec file may be at most 1 MiB"), "{what}: {e}");
        assert!(took < REASONABLE, "{what}: took {took:?}");
    }
}

#[test]
fn a_large_file_under_the_limit_loads_in_reasonable_time() {
    // Just under 1 MiB of agents, each ordered after the one before: a long `after` chain is
    // walked without recursion.
    let mut docs = Vec::new();
    let mut i = 0;
    let mut len = 0;
    while len < 1000 * 1024 {
        let after = if i == 0 { String::new() } else { format!("after: [a{}]\n", i - 1) };
        let d = agent(&format!("name: a{i}\nrun: {{command: [/bin/true], user: agent}}\n{after}"));
        len += d.len() + 4;
        docs.push(d);
        i += 1;
    }
    let n = docs.len();
    let (r, took) = load_timed(docs.join("---\n"));
    eprintln!("{n} agents in a chain: {took:?}: {}", first_error(&r));
    assert_eq!(r.map(|f| f.agents.len()).unwrap_or(0), n);
    assert!(took < REASONABLE, "took {took:?}");

    // The same chain closed into a cycle is reported, also without recursion.
    let mut docs2 = docs.clone();
    docs2[0] = agent(&format!("name: a0\nrun: {{command: [/bin/true], user: agent}}\nafter: [a{}]\n", n - 1));
    let (r, took) = load_timed(docs2.join("---\n"));
    let e = first_error(&r);
    assert!(e.contains("`after` forms a cycle: a"), "{e}");
    assert!(took < REASONABLE, "took {took:?}");

    // Just under 1 MiB of unknown fields: each gets its "did you mean", quickly.
    let unknown = agent(&(0..90_000).map(|i| format!("f{i}: 1\n")).collect::<String>());
    assert!(unknown.len() < spec::MAX_FILE_BYTES, "{}", unknown.len());
    let (r, took) = load_timed(unknown);
    let n = r.as_ref().err().map_or(0, |d| d.0.iter().filter(|d| d.message.starts_with("unknown field")).count());
    eprintln!("90 000 unknown fields: {took:?}: {n} diagnostics");
    assert_eq!(n, 90_000);
    assert!(took < REASONABLE, "took {took:?}");
}

#[test]
fn deep_nesting_is_refused_without_a_stack_overflow() {
    let cases = [
        ("10 000 [ unclosed", format!("{HEAD}name: {}", "[".repeat(10_000))),
        ("10 000 [ closed", format!("{HEAD}name: {}{}\n", "[".repeat(10_000), "]".repeat(10_000))),
        ("10 000 { in an unknown field", format!("{HEAD}x: {}\n", "{a: ".repeat(10_000) + &"}".repeat(10_000))),
        ("10 000 block sequences", format!("{HEAD}hosts:\n{}x\n", "- ".repeat(10_000))),
        ("1 000 nested block mappings", format!("{HEAD}{}", (0..1000).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>())),
        // Under the file size limit, but 500 000 levels deep.
        ("500 000 block sequences", format!("{HEAD}hosts:\n{}x\n", "- ".repeat(500_000))),
    ];
    for (what, text) in cases {
        let (r, took) = load_timed(text);
        let e = first_error(&r);
        eprintln!("{what}: {took:?}: {e}");
        assert!(r.is_err(), "{what}");
        assert!(e.starts_with("h.yaml:"), "{what}: {e}");
        assert!(e.contains("nested") || e.contains("recursion limit") || e.contains("YAML syntax error"), "{what}: {e}");
        assert!(took < REASONABLE, "{what}: took {took:?}");
    }
}

#[test]
fn alias_bombs_are_refused_without_expanding_them() {
    // Billion laughs: 10 aliases per level, 9 levels: 10^9 strings if expanded.
    let mut lol = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        lol.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let in_unknown = agent(&format!("name: x\nrun: {{command: [/bin/true], user: agent}}\n{lol}"));
    let in_hosts =
        agent(&format!("x:\n{}name: x\nrun: {{command: [/bin/true], user: agent}}\nhosts: *a9\n", lol.lines().map(|l| format!("  {l}\n")).collect::<String>()));
    // Quadratic: one 500 KB string, aliased 100 000 times into a list serde keeps (50 GB).
    let big = "b".repeat(500_000);
    let quadratic = agent(&format!("name: x\ndescription: &s {big}\nrun: {{command: [/bin/true, {}], user: agent}}\n", vec!["*s"; 100_000].join(", ")));
    for (what, text) in
        [("billion laughs in unknown fields", in_unknown), ("billion laughs in hosts", in_hosts), ("one string aliased 100 000 times", quadratic)]
    {
        let (r, took) = load_timed(text);
        let e = first_error(&r);
        eprintln!("{what}: {took:?}: {e}");
        assert!(e.contains("aliases expand this file by more than 1 MiB"), "{what}: {e}");
        assert!(took < REASONABLE, "{what}: took {took:?}");
    }
    // Aliases used the ordinary way still work.
    let fine = agent("name: x\nrun:\n  command: &cmd [/usr/bin/env, python3]\n  user: agent\nhealth: {check: *cmd}\n");
    let f = load(&[("h.yaml", &fine)]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(f.agents[0].health.as_ref().unwrap().check.as_deref(), Some(&["/usr/bin/env".to_string(), "python3".to_string()][..]));
}

#[test]
fn percent_and_dollar_are_escaped_in_rendered_units() {
    let f = fleet(&[(
        "h.yaml",
        &agent(
            "name: x\ndescription: Uses 100% of %n\nrun:\n  command: [/bin/echo, \"$HOME\", \"${USER}\", \"50%\"]\n  user: agent\n  workingDirectory: /srv/%h\n  environment: {PRICE: \"$5 at 10%\"}\n",
        ),
    )]);
    let d = want(&f, "c0ffee", &Default::default());
    let svc = &d.units["agent-x.service"].content;
    assert!(svc.contains("\nDescription=Uses 100%% of %%n\n"), "{svc}");
    assert!(svc.contains("\nExecStart=\"/bin/echo\" \"$$HOME\" \"$${USER}\" \"50%%\"\n"), "{svc}");
    assert!(svc.contains("\nWorkingDirectory=/srv/%%h\n"), "{svc}");
    // Environment= does not expand variables: `$` stays, `%` is still a specifier.
    assert!(svc.contains("\nEnvironment=\"PRICE=$5 at 10%%\"\n"), "{svc}");
}

/// Regressions of what `cargo fuzz run spec_render` found (tests/fuzz; docs/fuzzing.md).
mod fuzz_found {
    use super::*;

    /// A lone `\r` is a line break to YAML: the line a diagnostic names and the source line shown
    /// under it must agree (the source excerpt used to split on `\n` only).
    #[test]
    fn lone_carriage_return_diagnostic_shows_the_yaml_line() {
        let text = "apiVersion: fleetwright/v1\rkind: Agent\rname: Bad\r";
        let d = load(&[("h.yaml", text)]).unwrap_err();
        let e = d.0.iter().find(|d| d.message.contains("invalid name")).unwrap_or_else(|| panic!("{d}"));
        assert_eq!(e.loc.to_string(), "h.yaml:3:7");
        assert!(e.render_with_source(Some(text)).contains("\n 3 | name: Bad\n"), "{}", e.render_with_source(Some(text)));
    }
}
