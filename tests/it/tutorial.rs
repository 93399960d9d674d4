//! The tutorial, docs/getting-started.md, done as a newcomer would do it on a machine without a
//! running systemd: its commands, in order, in a fresh directory, each checked against the exit
//! code and the output the document shows. The conventions the document is read by are in the
//! comment at its top; this file is their one implementation.
//!
//! Safety first: before anything runs, the document is refused if a command that acts on a host
//! lacks `--sandbox` (on a machine where systemd runs, it would act on that machine), and a
//! `nsenter` may only enter the pid of a sandbox the tutorial itself started.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const TUTORIAL: &str = include_str!("../../docs/getting-started.md");

/// The commands that act on a host, which must run inside the sandbox (`--sandbox`).
const HOST_COMMANDS: &[&str] = &["plan", "apply", "status", "history", "rollback", "resume", "sync", "daemon"];

/// How long one command may take (a sandbox boots in about a second; `up` gives up after a
/// minute).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a `test: retry` command is run again until it shows what the document says.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// One thing the tutorial has the reader do.
#[derive(Debug, PartialEq)]
enum Step {
    /// Write a file (a `file: PATH` comment before a yaml block).
    Write { line: usize, path: String, text: String },
    /// Run a command of a console block.
    Run(Run),
}

#[derive(Debug, PartialEq)]
struct Run {
    /// Where it is in the document (1-based), for failure messages.
    line: usize,
    command: String,
    exit: i32,
    /// The lines shown after it, as written.
    shown: Vec<String>,
    retry: bool,
}

/// The document's steps, in order, or what breaks its conventions.
fn parse(doc: &str) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let mut lines = doc.lines().enumerate().map(|(i, l)| (i + 1, l));
    // A `file:` or `test: retry` comment waits for the fence on the very next line.
    let mut file: Option<String> = None;
    let mut retry = false;
    while let Some((n, line)) = lines.next() {
        if let Some(path) = line.strip_prefix("<!-- file:").and_then(|r| r.strip_suffix("-->")) {
            file = Some(path.trim().to_string());
            continue;
        }
        if line == "<!-- test: retry -->" {
            retry = true;
            continue;
        }
        let Some(info) = line.strip_prefix("```") else {
            if file.is_some() || retry {
                return Err(format!("line {n}: a `file:` or `test: retry` comment must be on the line right before its block"));
            }
            continue;
        };
        let mut body = vec![];
        loop {
            match lines.next() {
                Some((_, "```")) => break,
                Some(l) => body.push(l),
                None => return Err(format!("line {n}: the block is not closed")),
            }
        }
        match (info, file.take(), std::mem::take(&mut retry)) {
            ("yaml", Some(path), false) => {
                let text = body.iter().map(|(_, l)| format!("{l}\n")).collect();
                steps.push(Step::Write { line: n, path, text });
            }
            ("console", None, retry) => steps.extend(console(&body, retry)?.into_iter().map(Step::Run)),
            (_, Some(_), _) => return Err(format!("line {n}: a `file:` comment belongs before a yaml block, not a `{info}` one")),
            (_, None, true) => return Err(format!("line {n}: a `test: retry` comment belongs before a console block, not a `{info}` one")),
            _ => {}
        }
    }
    Ok(steps)
}

/// The commands of one console block, each with the lines shown after it.
fn console(body: &[(usize, &str)], retry: bool) -> Result<Vec<Run>, String> {
    let mut runs: Vec<Run> = vec![];
    for &(n, line) in body {
        if let Some(command) = line.strip_prefix("# ") {
            let exit = match command.rsplit_once("# exit ") {
                Some((_, code)) => code.trim().parse().map_err(|_| format!("line {n}: `# exit {code}` is not an exit code"))?,
                None => 0,
            };
            runs.push(Run { line: n, command: command.to_string(), exit, shown: vec![], retry });
        } else {
            runs.last_mut().ok_or_else(|| format!("line {n}: output before the block's first command"))?.shown.push(line.to_string());
        }
    }
    Ok(runs)
}

/// Refuse a document the test must not run: a host command without `--sandbox`, a sandbox
/// command before `sandbox up`, no `sandbox down` at the end, an `nsenter` before there is a
/// sandbox to enter.
fn check_safe(steps: &[Step]) -> Result<(), String> {
    let runs: Vec<&Run> = steps.iter().filter_map(|s| if let Step::Run(r) = s { Some(r) } else { None }).collect();
    let up = runs.iter().position(|r| r.command.trim() == "fleetwright sandbox up").ok_or("the tutorial never runs `fleetwright sandbox up`")?;
    let down = runs.iter().rposition(|r| r.command.trim() == "fleetwright sandbox down").ok_or("the tutorial never runs `fleetwright sandbox down`")?;
    for (i, r) in runs.iter().enumerate() {
        let words: Vec<&str> = r.command.split_whitespace().collect();
        let pipeline_parts = r.command.split(['|', ';', '&']).count();
        if words.first() == Some(&"fleetwright") && words.get(1).is_some_and(|c| HOST_COMMANDS.contains(c)) {
            if !words.contains(&"--sandbox") || pipeline_parts > 1 {
                return Err(format!("line {}: `{}` acts on a host: it must have --sandbox, and be a command of its own", r.line, r.command));
            }
            if i < up {
                return Err(format!("line {}: `{}` comes before `fleetwright sandbox up`", r.line, r.command));
            }
        }
        if words.contains(&"nsenter") && !(up < i && i < down) {
            return Err(format!("line {}: `{}` enters a pid while no sandbox of the tutorial is up", r.line, r.command));
        }
    }
    Ok(())
}

/// One line, comparable: commit ids, hashes and times become placeholders, white space one
/// space, and the ends trimmed.
fn normalise(line: &str) -> String {
    const TIME: &[u8] = b"0000-00-00T00:00:00Z";
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let time_here = b.len() - i >= TIME.len() && TIME.iter().zip(&b[i..]).all(|(t, c)| if *t == b'0' { c.is_ascii_digit() } else { t == c });
        if time_here {
            out.push_str("<time>");
            i += TIME.len();
            continue;
        }
        let word = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let hex = b[i..].iter().take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')).count();
        let ends = b.get(i + hex).is_none_or(|c| !c.is_ascii_alphanumeric());
        if word && ends && b[i..i + hex].iter().any(u8::is_ascii_digit) {
            let placeholder = match hex {
                12 | 40 => Some("<commit>"),
                64 => Some("<hash>"),
                _ => None,
            };
            if let Some(p) = placeholder {
                out.push_str(p);
                i += hex;
                continue;
            }
        }
        // Copy one character (whole, not one byte of it).
        let c = line[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Does one shown line (normalised) match one real line (normalised)? A `…` in it stands for
/// any text.
fn line_matches(shown: &str, real: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return shown == real };
    let Some(mut rest) = real.strip_prefix(first) else { return false };
    for m in middle {
        match rest.find(m) {
            Some(at) => rest = &rest[at + m.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The first shown line that does not appear in the real output, in order; None when all do.
/// A line that is only `…` (lines left out) and empty lines are not compared.
fn first_missing(shown: &[String], real: &str) -> Option<String> {
    let real: Vec<String> = real.lines().map(normalise).collect();
    let mut at = 0;
    for s in shown.iter().map(|s| normalise(s)) {
        if s.is_empty() || s == "…" {
            continue;
        }
        match real[at..].iter().position(|r| line_matches(&s, r)) {
            Some(k) => at += k + 1,
            None => return Some(s),
        }
    }
    None
}

/// The pid an output shows after "as pid ".
fn shown_pid(text: &str) -> Option<&str> {
    let (_, after) = text.split_once("as pid ")?;
    let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    (digits > 0).then(|| &after[..digits])
}

/// `text` with each whole number `from` replaced by `to`.
fn replace_number(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut done = 0;
    for (at, _) in text.match_indices(from) {
        let digit_before = text[..at].ends_with(|c: char| c.is_ascii_digit());
        let digit_after = text[at + from.len()..].starts_with(|c: char| c.is_ascii_digit());
        if !digit_before && !digit_after {
            out.push_str(&text[done..at]);
            out.push_str(to);
            done = at + from.len();
        }
    }
    out.push_str(&text[done..]);
    out
}

/// A fresh place to do the tutorial in, and what its commands run with.
struct Place {
    root: tempfile::TempDir,
    cwd: PathBuf,
    /// The document's pids and the real ones, learnt as the sandboxes start.
    pids: Vec<(String, String)>,
}

impl Place {
    fn new() -> Place {
        // Not under /tmp: the sandbox replaces it, and the repository must be seen from inside.
        let root = tempfile::Builder::new().prefix("tutorial-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        for d in ["bin", "home", "sandbox", "work"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        // `fleetwright` on PATH is the binary under test.
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fleetwright"), root.path().join("bin/fleetwright")).unwrap();
        let cwd = root.path().join("work");
        Place { root, cwd, pids: vec![] }
    }

    fn sandbox_records(&self) -> PathBuf {
        self.root.path().join("sandbox")
    }

    /// `sh -c` of one command line, stderr into stdout (so the two keep their order), in the
    /// current directory, with its own HOME, git identity and sandbox record.
    fn shell(&self, command: &str) -> Command {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("exec 2>&1\n{command}")).current_dir(&self.cwd);
        c.env("PATH", format!("{}:{path}", self.root.path().join("bin").display()));
        c.env("HOME", self.root.path().join("home")).env("FLEETWRIGHT_SANDBOX_DIR", self.sandbox_records());
        c.env("GIT_CONFIG_NOSYSTEM", "1");
        for (k, v) in [("NAME", "Tutorial"), ("EMAIL", "tutorial@example.invalid")] {
            c.env(format!("GIT_AUTHOR_{k}"), v).env(format!("GIT_COMMITTER_{k}"), v);
        }
        for k in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_GLOBAL"] {
            c.env_remove(k);
        }
        c
    }

    /// The document's pids in `text` replaced by the real ones.
    fn real_pids(&self, text: &str) -> String {
        self.pids.iter().fold(text.to_string(), |t, (doc, real)| replace_number(&t, doc, real))
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Write { line, path, text } => {
                let p = self.cwd.join(path);
                assert!(p.starts_with(self.root.path()), "line {line}: {path} is outside the tutorial's directory");
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, text).unwrap_or_else(|e| panic!("line {line}: writing {}: {e}", p.display()));
            }
            Step::Run(run) => self.run(run),
        }
    }

    fn run(&mut self, run: &Run) {
        let at = format!("docs/getting-started.md:{}: `{}`", run.line, run.command);
        if let Some(dir) = run.command.trim().strip_prefix("cd ") {
            assert!(run.exit == 0 && run.shown.is_empty(), "{at}: a `cd` shows nothing and succeeds");
            let to = self.cwd.join(dir.trim());
            assert!(to.is_dir() && to.starts_with(self.root.path()), "{at}: no directory {} within the tutorial's", to.display());
            self.cwd = to;
            return;
        }
        let command = self.real_pids(&run.command);
        if let Some((_, after)) = command.split_once("nsenter -t ") {
            let pid = after.split_whitespace().next().unwrap_or("");
            assert!(self.pids.iter().any(|(_, real)| real == pid), "{at}: enters pid {pid}, which is no sandbox the tutorial started");
        }
        let started = Instant::now();
        loop {
            let out = fleetwright_sys::proc::output_with_timeout(self.shell(&command), COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{at}: did not finish: {e}"));
            let real = String::from_utf8_lossy(&out.stdout).into_owned();
            // A sandbox started: its pid stands where the document's does, from here on.
            if let (Some(doc), Some(real_pid)) = (run.shown.iter().find_map(|l| shown_pid(l)), shown_pid(&real)) {
                self.pids.push((doc.to_string(), real_pid.to_string()));
            }
            let shown: Vec<String> = run.shown.iter().map(|l| self.real_pids(l)).collect();
            let missing = first_missing(&shown, &real);
            if out.status.code() == Some(run.exit) && missing.is_none() {
                return;
            }
            if !run.retry || started.elapsed() > RETRY_FOR {
                let exit = match out.status.code() {
                    Some(code) if code == run.exit => String::new(),
                    code => format!(" ended with {code:?}, not {};", run.exit),
                };
                let line = missing.map(|m| format!(" did not print this shown line (normalised): {m:?}")).unwrap_or_default();
                panic!("{at}:{exit}{line}\n--- it printed:\n{real}---");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Takes down the tutorial's sandbox however the test ends (the document's own `sandbox down`
/// may never be reached); after it, `sandbox down` only says that none is up.
struct SandboxDown(PathBuf);

impl Drop for SandboxDown {
    fn drop(&mut self) {
        let down = Command::new(env!("CARGO_BIN_EXE_fleetwright")).args(["sandbox", "down"]).env("FLEETWRIGHT_SANDBOX_DIR", &self.0).output();
        if let Ok(o) = down
            && !o.status.success()
        {
            eprintln!("sandbox down after the tutorial: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

#[test]
fn the_tutorial_runs_from_start_to_finish_in_a_sandbox() {
    let steps = parse(TUTORIAL).unwrap_or_else(|e| panic!("docs/getting-started.md: {e}"));
    check_safe(&steps).unwrap_or_else(|e| panic!("docs/getting-started.md: {e}"));
    if !crate::real::sandbox_or_skip() {
        return;
    }
    let mut place = Place::new();
    // Declared after the place: dropped (the sandbox taken down) before its directory goes.
    let _down = SandboxDown(place.sandbox_records());
    for step in &steps {
        place.step(step);
    }
    assert!(!place.sandbox_records().join("sandbox.json").exists(), "the tutorial ends with its sandbox down");
}

/// What the document is held to, on every machine (no sandbox needed): it parses, its host
/// commands go to the sandbox, and it has the steps its arc promises.
#[test]
fn the_tutorial_keeps_its_host_commands_in_the_sandbox() {
    let steps = parse(TUTORIAL).unwrap_or_else(|e| panic!("docs/getting-started.md: {e}"));
    check_safe(&steps).unwrap_or_else(|e| panic!("docs/getting-started.md: {e}"));
    let commands: Vec<&str> = steps.iter().filter_map(|s| if let Step::Run(r) = s { Some(r.command.as_str()) } else { None }).collect();
    for expected in ["git init", "fleetwright validate", "git commit", "fleetwright apply --sandbox", "git rm", "git revert", "fleetwright status --sandbox"] {
        assert!(commands.iter().any(|c| c.starts_with(expected)), "the tutorial runs `{expected}`: {commands:#?}");
    }
    let exits: Vec<i32> = steps.iter().filter_map(|s| if let Step::Run(r) = s { Some(r.exit) } else { None }).collect();
    assert!(exits.contains(&1), "some commands are shown failing (an invalid commit, pending changes)");
    let writes = steps.iter().filter(|s| matches!(s, Step::Write { .. })).count();
    assert!(writes >= 4, "the fleet's files and their changes are written by the tutorial: {writes}");
}

/// The conventions, each way they can go: a test of the checker that could pass anything would
/// prove nothing about the tutorial.
#[test]
fn the_conventions_are_read_as_the_document_states_them() {
    let doc = "text\n\n<!-- file: a/b.yaml -->\n```yaml\nk: v\n```\n\n```console\n# make x # exit 2\nshown 1\n\n# other\n```\n\n\
               <!-- test: retry -->\n```console\n# again\n```\n```sh\n# not run\n```\n";
    let steps = parse(doc).unwrap();
    assert_eq!(
        steps,
        vec![
            Step::Write { line: 4, path: "a/b.yaml".into(), text: "k: v\n".into() },
            Step::Run(Run { line: 9, command: "make x # exit 2".into(), exit: 2, shown: vec!["shown 1".into(), "".into()], retry: false }),
            Step::Run(Run { line: 12, command: "other".into(), exit: 0, shown: vec![], retry: false }),
            Step::Run(Run { line: 17, command: "again".into(), exit: 0, shown: vec![], retry: true }),
        ]
    );
    assert!(parse("<!-- file: x -->\n\n```yaml\n```\n").is_err(), "a file comment away from its block");
    assert!(parse("<!-- file: x -->\n```console\n```\n").is_err(), "a file comment before a console block");
    assert!(parse("```console\noutput first\n```\n").is_err());
    assert!(parse("```console\n# x\n").is_err(), "an unclosed block");

    let unsafe_doc = "```console\n# fleetwright sandbox up\n# fleetwright apply --repo .\n# fleetwright sandbox down\n```\n";
    assert!(check_safe(&parse(unsafe_doc).unwrap()).is_err(), "apply without --sandbox");
    let early = "```console\n# fleetwright status --sandbox\n# fleetwright sandbox up\n# fleetwright sandbox down\n```\n";
    assert!(check_safe(&parse(early).unwrap()).is_err(), "a host command before the sandbox is up");
    let piped = "```console\n# fleetwright sandbox up\n# fleetwright status --sandbox; fleetwright apply\n# fleetwright sandbox down\n```\n";
    assert!(check_safe(&parse(piped).unwrap()).is_err(), "a second command hidden behind a --sandbox one");

    assert_eq!(
        normalise(
            "  at 2aa35ff809d2,  2aa35ff809d24fd196d55c037f20a0f77b0f0086 2026-12-04T06:46:58Z deadbeefcafe 47701bea49ac28dc05e2b35f80c49b9a3c085b65fd89d4c06078a07c5eb21009 x2aa35ff809d2 é "
        ),
        "at <commit>, <commit> <time> deadbeefcafe <hash> x2aa35ff809d2 é"
    );
    let real = "one\ntwo  2aa35ff809d2\nthree four\n";
    let shown = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert_eq!(first_missing(&shown(&["one", "…", "three   four"]), real), None);
    assert_eq!(first_missing(&shown(&["two 111111111111", ""]), real), None, "commit ids are placeholders");
    assert_eq!(first_missing(&shown(&["t… f…"]), real), None, "… within a line is any text");
    assert_eq!(first_missing(&shown(&["three four", "one"]), real), Some("one".into()), "in order");
    assert_eq!(first_missing(&shown(&["two"]), real), Some("two".into()), "a line is compared whole");
    assert_eq!(first_missing(&shown(&["…x"]), real), Some("…x".into()));

    assert_eq!(shown_pid("sandbox up: a throw-away systemd runs as pid 23137. Give"), Some("23137"));
    assert_eq!(replace_number("nsenter -t 23137 -m; 123137 231370 23137", "23137", "9"), "nsenter -t 9 -m; 123137 231370 9");
}
