//! Raw documents → the validated model, reporting every problem at its position.

use std::collections::{BTreeMap, BTreeSet};

use super::API_VERSION;
use super::calendar;
use super::diag::{Diagnostic, Diagnostics, Loc, Stage, did_you_mean};
use super::model::*;
use super::raw::*;
use super::values::*;
use super::yaml::{DocIndex, Document, parse_documents};

mod notify;
use notify::check_notify;

pub(super) enum DocKind {
    Agent(Box<AgentDoc>),
    Fleet(Box<FleetDoc>),
}

pub(super) struct Doc {
    file: String,
    index: DocIndex,
    kind: DocKind,
    /// The fields (dotted paths) that an unknown key of the document probably misspells: the
    /// "did you mean" of its diagnostic. Their absence is that key's consequence.
    typos: BTreeSet<String>,
}

const KINDS: [&str; 2] = ["Agent", "Fleet"];

/// Parse every document of one file; problems go to `diags`, good documents to `docs`.
pub(super) fn parse_file(path: &str, text: &str, docs: &mut Vec<Doc>, diags: &mut Diagnostics) {
    let loc = |line: usize, col: usize| Loc { file: path.to_string(), line, col };
    // The file name goes into every unit's header comment: a newline in it (git allows one)
    // would start a directive.
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        let shown = Loc { file: path.escape_debug().to_string(), line: 1, col: 1 };
        diags.push_at(Stage::Read, shown, format!("the file name contains the control character {c:?}; rename the file"));
        return;
    }
    if text.len() > super::MAX_FILE_BYTES {
        let mib = text.len() as f64 / f64::from(1u32 << 20);
        diags.push_at(Stage::Read, loc(1, 1), format!("the file is {mib:.1} MiB; a spec file may be at most 1 MiB (split it into several files)"));
        return;
    }
    // The fields allowed at a (kind, parent), for "did you mean": the schema is generated once
    // per parent, not once per unknown field.
    let mut known_fields: std::collections::HashMap<(String, String), Vec<String>> = std::collections::HashMap::new();
    // A byte-order mark is not content (and editors do not count it as a column).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = match parse_documents(text) {
        Ok(d) => d,
        Err((pos, msg)) => {
            diags.push_at(Stage::Read, loc(pos.line, pos.col), msg);
            return;
        }
    };
    for Document { root, index, .. } in documents {
        let Some(root) = root else { continue };
        let start = index.value("");
        let at = |p: &str| {
            let pos = index.value(p);
            loc(pos.line, pos.col)
        };
        match index.top_scalars.get("apiVersion") {
            None => {
                diags.push_at(Stage::Shape, loc(start.line, start.col), format!("document has no apiVersion; add `apiVersion: {API_VERSION}`"));
                continue;
            }
            Some(v) if v != API_VERSION => {
                diags.push_at(Stage::Shape, at("apiVersion"), format!("unsupported apiVersion {v:?}; this fleetwright reads `{API_VERSION}`"));
                continue;
            }
            Some(_) => {}
        }
        let kind = match index.top_scalars.get("kind").map(String::as_str) {
            Some(k @ ("Agent" | "Fleet")) => k.to_string(),
            Some(other) => {
                let hint = did_you_mean(other, KINDS).map(|k| format!("did you mean `{k}`?")).unwrap_or_else(|| "use `Agent` or `Fleet`".into());
                diags.push_at(Stage::Shape, at("kind"), format!("unknown kind {other:?}; {hint}"));
                continue;
            }
            None => {
                diags.push_at(Stage::Shape, loc(start.line, start.col), "document has no kind; add `kind: Agent` or `kind: Fleet`");
                continue;
            }
        };
        let mut unknown = Vec::new();
        let parsed = if kind == "Agent" {
            serde_ignored::deserialize(&root, |p| unknown.push(clean_path(&p))).map(|d: AgentDoc| DocKind::Agent(Box::new(d)))
        } else {
            serde_ignored::deserialize(&root, |p| unknown.push(clean_path(&p))).map(|d: FleetDoc| DocKind::Fleet(Box::new(d)))
        };
        let mut typos = BTreeSet::new();
        for path in &unknown {
            let pos = index.key(path);
            let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
            let known = known_fields.entry((kind.clone(), parent.to_string())).or_insert_with(|| super::schema_fields(&kind, parent));
            let hint = match did_you_mean(field, known.iter().map(String::as_str)) {
                Some(s) => {
                    typos.insert(if parent.is_empty() { s.to_string() } else { format!("{parent}.{s}") });
                    format!("did you mean `{s}`?")
                }
                None if known.is_empty() => "remove it".into(),
                None => format!("expected one of: {}", known.join(", ")),
            };
            diags.push_at(Stage::Shape, loc(pos.line, pos.col), format!("unknown field `{field}`; {hint}"));
        }
        match parsed {
            // Checked even with unknown fields, so that every problem shows at once; the load
            // fails anyway because of them.
            Ok(k) => docs.push(Doc { file: path.to_string(), index, kind: k, typos }),
            Err(e) => {
                let pos = e.pos.unwrap_or(start);
                diags.push_at(Stage::Shape, loc(pos.line, pos.col), e.to_string());
            }
        }
    }
}

/// serde_ignored's path without its `?` segments (Option and newtype layers): `run.?.comand` → `run.comand`.
fn clean_path(p: &serde_ignored::Path) -> String {
    p.to_string().split('.').filter(|s| *s != "?").collect::<Vec<_>>().join(".")
}

/// Report errors for one document, with paths relative to `prefix` in its index.
struct Ctx<'a> {
    file: &'a str,
    index: &'a DocIndex,
    prefix: &'a str,
    /// Checking Fleet defaults: fields may be missing; nothing is required.
    partial: bool,
    diags: &'a mut Diagnostics,
    /// What the check of the Fleet's defaults reported: an agent taking the same bad default
    /// does not report it again (the load fails on the first report anyway).
    reported: &'a BTreeSet<String>,
    /// The host's installed time zones, for calendar expressions that name one.
    zones: &'a dyn calendar::ZoneLookup,
    /// The document's [`Doc::typos`].
    typos: &'a BTreeSet<String>,
}

impl Ctx<'_> {
    fn full(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }
    fn loc_of(&self, path: &str) -> Loc {
        let pos = self.index.value(&self.full(path));
        Loc { file: self.file.to_string(), line: pos.line, col: pos.col }
    }
    /// An error about the value at `path`.
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.err_at(Stage::Value, path, msg);
    }
    fn err_at(&mut self, stage: Stage, path: &str, msg: impl Into<String>) {
        let loc = self.loc_of(path);
        self.diags.push_at(stage, loc, msg);
    }
    /// Whether one of `fields` is missing because an unknown key of this document misspells it
    /// (its diagnostic says "did you mean" this field). The absence is then not reported: fixing
    /// the key fixes both, and the unknown field already says how.
    fn misspelled(&self, fields: &[&str]) -> bool {
        fields.iter().any(|f| self.typos.contains(&self.full(f)))
    }
    /// An error about a value that may have come from the Fleet's defaults: reported there, once,
    /// not at every agent.
    /// Never dropped: a value this agent's document does not hold came from the defaults, and
    /// unless the defaults' own check said the same, it is reported at the document.
    fn err_value(&mut self, path: &str, msg: impl Into<String>) {
        self.err_value_at(Stage::Value, path, msg);
    }
    fn err_value_at(&mut self, stage: Stage, path: &str, msg: impl Into<String>) {
        let msg = msg.into();
        if self.prefix.is_empty() && !self.partial && !self.index.values.contains_key(path) {
            if !self.reported.contains(&msg) {
                let pos = self.index.value("");
                self.diags.push_at(
                    stage,
                    Loc { file: self.file.to_string(), line: pos.line, col: pos.col },
                    format!("{msg} (a value this agent takes from the Fleet's defaults)"),
                );
            }
            return;
        }
        self.err_at(stage, path, msg)
    }
    /// A problem with the key of a map entry (a name), reported at the key where the document
    /// writes it, else as [`Ctx::err_value`] (taken from the Fleet's defaults).
    fn err_key(&mut self, path: &str, msg: impl Into<String>) {
        if self.index.values.contains_key(&self.full(path)) {
            let pos = self.index.key(&self.full(path));
            self.diags.push(Loc { file: self.file.to_string(), line: pos.line, col: pos.col }, msg);
        } else {
            self.err_value(path, msg);
        }
    }
    /// A problem that drops nothing (the setting is meaningless here), reported only where the
    /// agent itself writes it, not where it came from the defaults.
    fn warn_own(&mut self, path: &str, msg: impl Into<String>) {
        if self.partial || self.index.values.contains_key(&self.full(path)) {
            self.err(path, msg);
        }
    }
    /// The required `field` is missing: reported at `at` (unless checking the Fleet's defaults,
    /// or the field's key is [`Ctx::misspelled`]).
    fn missing(&mut self, field: &str, at: &str, msg: impl Into<String>) {
        if !self.partial && !self.misspelled(&[field]) {
            self.err(at, msg);
        }
    }
    /// Something needs one of `fields`, and none is there: reported at `at` unless one of them
    /// is [`Ctx::misspelled`].
    fn absent(&mut self, fields: &[&str], at: &str, msg: impl Into<String>) {
        if !self.misspelled(fields) {
            self.err(at, msg);
        }
    }
    fn parse<T>(&mut self, path: &str, v: Option<&Scalar>, f: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let v = v?;
        match f(&v.0) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err_value(path, format!("{}: {e}", last(path)));
                None
            }
        }
    }
    /// A leaf of a fixed type: its value, or its wrong type reported at `path`.
    fn typed<'v, T>(&mut self, path: &str, v: &'v Option<Typed<T>>) -> Option<&'v T> {
        match v.as_ref()? {
            Typed::Ok(t) => Some(t),
            Typed::Bad(why) => {
                self.err_value_at(Stage::Shape, path, format!("{}: {why}", last(path)));
                None
            }
        }
    }
    fn path(&mut self, path: &str, v: Option<&String>) -> Option<String> {
        self.path_with(path, v, |_| Ok(()))
    }
    /// A path that must also pass `more` (a place check).
    fn path_with(&mut self, path: &str, v: Option<&String>, more: impl Fn(&str) -> Result<(), String>) -> Option<String> {
        let v = v?;
        match check_abs_path(v).and_then(|()| more(v)) {
            Ok(()) => Some(v.clone()),
            Err(e) => {
                self.err_value(path, format!("{}: {e}", last(path)));
                None
            }
        }
    }
    fn one_of(&mut self, path: &str, v: Option<&str>, allowed: &[&str]) -> Option<String> {
        let v = v?;
        if allowed.contains(&v) {
            return Some(v.to_string());
        }
        let hint = match did_you_mean(v, allowed.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("use one of: {}", allowed.join(", ")),
        };
        self.err_value(path, format!("{}: invalid value {v:?}; {hint}", last(path)));
        None
    }
}

fn last(path: &str) -> &str {
    path.rsplit('.').find(|s| s.parse::<usize>().is_err()).unwrap_or(path)
}

fn check_argv(cx: &mut Ctx, path: &str, argv: Option<&Vec<String>>, what: &str) -> Option<Vec<String>> {
    let Some(argv) = argv else {
        cx.missing(path, path, format!("{what} is required: the program and its arguments as a list, like [/usr/bin/python3, main.py]"));
        return None;
    };
    let Some(program) = argv.first() else {
        cx.err_value(path, format!("{what} is empty; give the program and its arguments, like [/usr/bin/python3, main.py]"));
        return None;
    };
    let mut ok = true;
    if let Err(e) = check_abs_path(program) {
        let e = match (program.starts_with('/'), program.contains('/')) {
            (true, _) => e,
            (false, true) => {
                format!("the program {program:?} must be an absolute path (there is no shell and no PATH lookup), like /{}", program.trim_start_matches("./"))
            }
            (false, false) => format!("the program {program:?} must be an absolute path (there is no shell and no PATH lookup), like /usr/bin/{program}"),
        };
        cx.err_value(&format!("{path}.0"), e);
        ok = false;
    }
    for (i, arg) in argv.iter().enumerate().skip(1) {
        if let Err(e) = check_text(arg) {
            cx.err_value(&format!("{path}.{i}"), format!("argument {e}"));
            ok = false;
        }
    }
    ok.then(|| argv.clone())
}

fn check_schedule(cx: &mut Ctx, path: &str, s: &ScheduleSpec) -> Option<Schedule> {
    let p = |f: &str| format!("{path}.{f}");
    let set: Vec<&str> = [("calendar", s.calendar.is_some()), ("cron", s.cron.is_some()), ("every", s.every.is_some())]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
    let trigger = match set.as_slice() {
        [] => {
            cx.absent(&[&p("calendar"), &p("cron"), &p("every")], path, "schedule needs one of `calendar`, `cron` or `every`");
            None
        }
        ["calendar"] => {
            let expr = s.calendar.as_deref().unwrap_or_default();
            match check_text(expr).and_then(|()| calendar::parse_calendar(expr, cx.zones)) {
                Ok(_) => Some(Trigger::Calendar { expr: expr.to_string(), cron: None, also: vec![] }),
                Err(e) => {
                    cx.err_value(&p("calendar"), format!("calendar: invalid OnCalendar expression {expr:?}: {e}"));
                    None
                }
            }
        }
        ["cron"] => {
            let expr = s.cron.as_deref().unwrap_or_default();
            match calendar::cron_to_calendars(expr) {
                Ok(mut cals) => {
                    let first = cals.remove(0);
                    Some(Trigger::Calendar { expr: first, cron: Some(expr.to_string()), also: cals })
                }
                Err(e) => {
                    cx.err_value(&p("cron"), format!("cron: {e}"));
                    None
                }
            }
        }
        ["every"] => match cx.parse(&p("every"), s.every.as_ref(), parse_duration) {
            Some(d) if d.0 >= 1000 => Some(Trigger::Every(d)),
            Some(_) => {
                cx.err_value(&p("every"), "every: must be at least 1s");
                None
            }
            None => None,
        },
        many => {
            cx.err(&p(many[1]), format!("schedule has both `{}` and `{}`; keep exactly one", many[0], many[1]));
            None
        }
    };
    let persistent = cx.typed(&p("persistent"), &s.persistent).copied();
    if matches!(trigger, Some(Trigger::Every(_))) && persistent == Some(true) {
        // Persistent= only affects OnCalendar= (systemd.timer(5)); said here rather than ignored.
        // From the Fleet's defaults it is not this agent's mistake, and nothing is dropped: the
        // timer simply has no Persistent= effect.
        cx.warn_own(
            &p("persistent"),
            "persistent: applies to calendar and cron schedules only; an `every` schedule already counts from the last run, so remove it",
        );
    }
    let randomized_delay = cx.parse(&p("randomizedDelay"), s.randomized_delay.as_ref(), parse_duration);
    let accuracy = cx.parse(&p("accuracy"), s.accuracy.as_ref(), parse_duration);
    Some(Schedule { trigger: trigger?, persistent: persistent.unwrap_or(false), randomized_delay, accuracy })
}

/// A calendar used by logs/backups schedules: only `calendar` (or cron), default `daily`.
fn check_job_calendar(cx: &mut Ctx, path: &str, s: Option<&ScheduleSpec>, default: &str) -> Option<String> {
    let Some(s) = s else { return Some(default.to_string()) };
    if s.every.is_some() {
        cx.err(&format!("{path}.every"), "this schedule takes `calendar` or `cron`, not `every`");
        return None;
    }
    match check_schedule(cx, path, s)?.trigger {
        Trigger::Calendar { expr, also, .. } if also.is_empty() => Some(expr),
        Trigger::Calendar { expr, also, .. } => {
            cx.err(&format!("{path}.cron"), format!("cron: restricts both day-of-month and day-of-week, which fires when either matches ({expr} or {}); this schedule takes one expression: write it as `calendar:`", also.join(" or ")));
            None
        }
        Trigger::Every(_) => None,
    }
}

/// A file that PID 1 reads as root on the agent's behalf (`credentials`, `environmentFile`) must
/// be inside a directory the Fleet document lists: else `/etc/shadow` is one line away.
fn secret_file_check(fleet: &Fleet) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |p: &str| {
        if fleet.credential_dirs.iter().any(|d| is_inside(p, d)) {
            return Ok(());
        }
        Err(format!(
            "{p:?} is not inside a directory the Fleet document lists in `credentialDirs` ({}); root reads this file for the fleet (an agent's credential or environment, a sink's token), so it may only come from there: move the file, or list its directory in the Fleet's credentialDirs",
            fleet.credential_dirs.join(", ")
        ))
    }
}

/// A name in `$CREDENTIALS_DIRECTORY` (a credential's, a secret's): one file name of letters,
/// digits, `_`, `.` and `-`.
fn is_credential_name(k: &str) -> bool {
    !k.is_empty() && k != "." && k != ".." && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn check_run(cx: &mut Ctx, r: &RunSpec, fleet: &Fleet) -> Option<Run> {
    let allow_root = fleet.allow_root;
    let mut ok = true;
    let command = if matches!(r.command, Some(Typed::Bad(_))) {
        cx.typed("run.command", &r.command);
        None
    } else {
        check_argv(cx, "run.command", r.command.as_ref().and_then(Typed::ok), "run.command")
    };
    let working_directory = cx.path("run.workingDirectory", r.working_directory.as_ref());
    let environment_file = cx.path_with("run.environmentFile", r.environment_file.as_ref(), secret_file_check(fleet));
    if r.environment_file.is_some() && environment_file.is_none() {
        ok = false;
    }
    for (key, v) in [("run.user", &r.user), ("run.group", &r.group)] {
        if let Some(v) = v
            && let Err(e) = check_user_name(v)
        {
            cx.err_value(key, format!("{}: {e}", last(key)));
            ok = false;
        }
    }
    if !allow_root {
        match r.user.as_deref() {
            None if !cx.partial => {
                cx.absent(
                    &["run.user"],
                    "run",
                    "run.user is not set, so the agent would run as root; set run.user (or defaults.run.user in the Fleet document), or allowRoot: true in the Fleet",
                );
                ok = false;
            }
            Some("root" | "0") => {
                cx.err_value(
                    "run.user",
                    "run.user is root, which the Fleet does not allow; use an unprivileged user, or set allowRoot: true in the Fleet document",
                );
                ok = false;
            }
            _ => {}
        }
        if let Some(g) = r.group.as_deref()
            && PRIVILEGED_GROUPS.contains(&g)
        {
            cx.err_value(
                "run.group",
                format!("run.group {g:?} can read or change what only root may (it is as good as root), which the Fleet does not allow; use the agent's own group, or set allowRoot: true in the Fleet document"),
            );
            ok = false;
        }
    }
    let mut environment = BTreeMap::new();
    for (k, v) in r.environment.iter().flatten() {
        let p = format!("run.environment.{k}");
        let valid_key = !k.is_empty() && !k.as_bytes()[0].is_ascii_digit() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key || k.starts_with("FLEETWRIGHT_") {
            let why = if valid_key {
                format!(
                    "environment variable name {k:?} is reserved: fleetwright sets FLEETWRIGHT_* itself (the agent's name, commit and deploy marker); use another name"
                )
            } else {
                format!("environment variable name {k:?} is invalid; use letters, digits and '_', not starting with a digit")
            };
            cx.err_key(&p, why);
            ok = false;
        } else if let Err(e) = check_text(&v.0) {
            cx.err_value(&p, format!("environment value of {k} {e}"));
            ok = false;
        } else {
            environment.insert(k.clone(), v.0.clone());
        }
    }
    let mut credentials = BTreeMap::new();
    for (k, v) in r.credentials.iter().flatten() {
        let p = format!("run.credentials.{k}");
        if !is_credential_name(k) {
            cx.err_value(&p, format!("credential name {k:?} is invalid; use letters, digits, '_', '.' and '-'"));
            ok = false;
        } else if let Some(path) = cx.path_with(&p, Some(v), secret_file_check(fleet)) {
            credentials.insert(k.clone(), path);
        } else {
            ok = false;
        }
    }
    let mut secrets = BTreeMap::new();
    for (k, v) in r.secrets.iter().flatten() {
        let p = format!("run.secrets.{k}");
        if !is_credential_name(k) {
            cx.err_key(&p, format!("secret name {k:?} is invalid; use letters, digits, '_', '.' and '-'"));
            ok = false;
        } else if credentials.contains_key(k) {
            cx.err_value(&p, format!("{k:?} is both a credential and a secret; an agent gets one file per name in $CREDENTIALS_DIRECTORY: rename one"));
            ok = false;
        } else {
            match crate::secrets::normalize_path(v) {
                Ok(path) => {
                    secrets.insert(k.clone(), crate::spec::model::SecretRef { path, loc: cx.loc_of(&p), ciphertext: Vec::new() });
                }
                Err(e) => {
                    cx.err_value(&p, format!("{k}: {e}"));
                    ok = false;
                }
            }
        }
    }
    let timeout = cx.parse("run.timeout", r.timeout.as_ref(), parse_duration);
    let mut success_exit_codes = Vec::new();
    for (i, c) in cx.typed("run.successExitCodes", &r.success_exit_codes).into_iter().flatten().enumerate() {
        match u8::try_from(*c) {
            Ok(c) => success_exit_codes.push(c),
            Err(_) => cx.err_value(&format!("run.successExitCodes.{i}"), format!("exit code {c} is out of range; exit codes are 0 to 255")),
        }
    }
    success_exit_codes.sort_unstable();
    success_exit_codes.dedup();
    if !ok {
        return None;
    }
    Some(Run {
        command: command?,
        working_directory,
        user: r.user.clone(),
        group: r.group.clone(),
        environment,
        environment_file,
        credentials,
        secrets,
        timeout,
        success_exit_codes,
    })
}

fn check_service(cx: &mut Ctx, s: &ServiceSpec) -> Service {
    let restart = match cx.one_of("service.restart", s.restart.as_deref(), &["no", "on-failure", "always"]).as_deref() {
        Some("no") => Restart::No,
        Some("always") => Restart::Always,
        _ => Restart::OnFailure,
    };
    let on_change = match cx.one_of("service.onChange", s.on_change.as_deref(), &["restart", "reload", "none"]).as_deref() {
        Some("reload") => OnChange::Reload,
        Some("none") => OnChange::None,
        _ => OnChange::Restart,
    };
    Service {
        restart,
        restart_sec: cx.parse("service.restartSec", s.restart_sec.as_ref(), parse_duration),
        watchdog: cx.parse("service.watchdog", s.watchdog.as_ref(), parse_duration),
        on_change,
    }
}

fn check_resources(cx: &mut Ctx, r: &ResourcesSpec) -> Resources {
    Resources {
        memory_max: cx.parse("resources.memoryMax", r.memory_max.as_ref(), |s| parse_size(s, true)),
        memory_swap_max: cx.parse("resources.memorySwapMax", r.memory_swap_max.as_ref(), |s| parse_size(s, false)),
        cpu_quota: cx.parse("resources.cpuQuota", r.cpu_quota.as_ref(), parse_cpu_quota),
        tasks_max: cx.parse("resources.tasksMax", r.tasks_max.as_ref(), parse_limit),
        nofile: cx.parse("resources.nofile", r.nofile.as_ref(), parse_limit),
    }
}

fn check_hardening(cx: &mut Ctx, h: &HardeningSpec) -> Hardening {
    // systemd's own spellings of the booleans (systemd.exec(5)) are accepted too.
    let systemd_bool = |s: &Scalar| match s.0.as_str() {
        "yes" => "true".to_string(),
        "no" => "false".to_string(),
        v => v.to_string(),
    };
    let protect_system = cx.one_of("hardening.protectSystem", h.protect_system.as_ref().map(systemd_bool).as_deref(), &["true", "false", "full", "strict"]);
    let protect_home = cx.one_of("hardening.protectHome", h.protect_home.as_ref().map(systemd_bool).as_deref(), &["true", "false", "read-only", "tmpfs"]);
    let mut read_write_paths = Vec::new();
    for (i, p) in cx.typed("hardening.readWritePaths", &h.read_write_paths).into_iter().flatten().enumerate() {
        if let Some(p) = cx.path(&format!("hardening.readWritePaths.{i}"), Some(p)) {
            read_write_paths.push(p);
        }
    }
    let no_new_privileges = cx.typed("hardening.noNewPrivileges", &h.no_new_privileges).copied();
    let private_tmp = cx.typed("hardening.privateTmp", &h.private_tmp).copied();
    Hardening { no_new_privileges, private_tmp, protect_system, protect_home, read_write_paths }
}

fn check_logs(cx: &mut Ctx, logs: &[LogSpec]) -> Vec<LogRule> {
    let mut out = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        let p = |f: &str| format!("logs.{i}.{f}");
        let path = match &l.path {
            None => {
                cx.absent(&[&p("path")], &format!("logs.{i}"), "logs entry needs `path`: the directory whose files are cleaned");
                None
            }
            Some(path) => match check_abs_path(path) {
                Err(e) => {
                    cx.err(&p("path"), format!("path: {e}"));
                    None
                }
                Ok(()) if path.split('/').any(|s| s.contains('*') && s != "*") || path.contains(['?', '[']) => {
                    cx.err(&p("path"), "path: `*` may only stand for a whole path level, like /srv/groups/*/logs");
                    None
                }
                Ok(()) if path.split('/').filter(|s| !s.is_empty() && *s != "*").count() < 2 => {
                    cx.err(&p("path"), format!("path: {path:?} is too close to the root to clean safely; name the agent's own log directory"));
                    None
                }
                Ok(()) if check_not_system(path).is_err() => {
                    cx.err(&p("path"), format!("path: {}", check_not_system(path).err().unwrap_or_default()));
                    None
                }
                Ok(()) => Some(path.trim_end_matches('/').to_string()),
            },
        };
        let pattern = l.pattern.clone().unwrap_or_else(|| "*".into());
        if pattern.contains('/') || pattern.is_empty() || check_text(&pattern).is_err() {
            cx.err(&p("match"), "match: a glob on file names, without '/', like \"agent-*.log\"");
        }
        let max_age = cx.parse(&p("maxAge"), l.max_age.as_ref(), parse_duration);
        let max_files = cx.typed(&p("maxFiles"), &l.max_files).copied();
        let max_size = cx.parse(&p("maxSize"), l.max_size.as_ref(), |s| parse_size(s, false));
        if l.max_age.is_none() && l.max_files.is_none() && l.max_size.is_none() {
            cx.absent(&[&p("maxAge"), &p("maxFiles"), &p("maxSize")], &format!("logs.{i}"), "logs entry has no limit; set maxAge, maxFiles or maxSize");
        }
        let calendar = check_job_calendar(cx, &p("schedule"), l.schedule.as_ref(), "daily");
        if let (Some(path), Some(calendar)) = (path, calendar) {
            out.push(LogRule { path, pattern, max_age, max_files, max_size, calendar });
        }
    }
    out
}

fn check_backups(cx: &mut Ctx, backups: &[BackupSpec]) -> Vec<Backup> {
    let mut out = Vec::new();
    for (i, b) in backups.iter().enumerate() {
        let p = |f: &str| format!("backups.{i}.{f}");
        if b.sqlite.is_none() {
            cx.absent(&[&p("sqlite")], &format!("backups.{i}"), "backups entry needs `sqlite`: the database file to back up");
        }
        if b.to.is_none() {
            cx.absent(&[&p("to")], &format!("backups.{i}"), "backups entry needs `to`: the directory backups are written to");
        }
        let sqlite = cx.path_with(&p("sqlite"), b.sqlite.as_ref(), check_not_system);
        let to = cx.path_with(&p("to"), b.to.as_ref(), check_not_system);
        let calendar = check_job_calendar(cx, &p("schedule"), b.schedule.as_ref(), "daily");
        let keep = b.keep.clone().unwrap_or_default();
        let last = cx.typed(&p("keep.last"), &keep.last).copied().unwrap_or(7);
        let daily = cx.typed(&p("keep.daily"), &keep.daily).copied().unwrap_or(0);
        let weekly = cx.typed(&p("keep.weekly"), &keep.weekly).copied().unwrap_or(0);
        let verify = cx.typed(&p("verify"), &b.verify).copied().unwrap_or(true);
        let wal = cx.typed(&p("wal"), &b.wal).copied().unwrap_or(false);
        if u64::from(last) + u64::from(daily) + u64::from(weekly) == 0 {
            cx.err(&p("keep"), "keep: would keep no backup at all; keep at least `last: 1`");
        }
        if let (Some(sqlite), Some(to), Some(calendar)) = (sqlite, to, calendar) {
            out.push(Backup { sqlite, to, calendar, keep_last: last, keep_daily: daily, keep_weekly: weekly, verify, wal });
        }
    }
    out
}

fn check_health(cx: &mut Ctx, h: &HealthSpec) -> Health {
    let heartbeat = h.heartbeat.as_ref().and_then(|hb| {
        let file = cx.path_with("health.heartbeat.file", hb.file.as_ref(), check_not_system);
        if hb.file.is_none() {
            cx.absent(&["health.heartbeat.file"], "health.heartbeat", "heartbeat needs `file`");
        }
        let max_age = cx.parse("health.heartbeat.maxAge", hb.max_age.as_ref(), parse_duration);
        if hb.max_age.is_none() {
            cx.absent(&["health.heartbeat.maxAge"], "health.heartbeat", "heartbeat needs `maxAge`, like 30s");
        }
        Some(Heartbeat { file: file?, max_age: max_age? })
    });
    let check = cx.typed("health.check", &h.check).and_then(|c| check_argv(cx, "health.check", Some(c), "health.check"));
    Health { heartbeat, check }
}

/// Sections an agent may leave out, but not leave empty: `schedule:` with nothing under it would
/// quietly make a scheduled job a long-running service.
const SECTIONS: [&str; 10] = ["run", "schedule", "service", "resources", "hardening", "concurrency", "logs", "backups", "health", "after"];

fn check_agent(cx: &mut Ctx, a: &AgentDoc, fleet: &Fleet) -> Option<Agent> {
    for section in SECTIONS {
        if cx.index.nulls.contains(&cx.full(section)) {
            cx.err_at(Stage::Shape, section, format!("`{section}` is empty; fill it in or remove the line"));
        }
    }
    let name = match &a.name {
        None => {
            cx.missing("name", "", "agent has no name; add `name:` (lowercase letters, digits and '-')");
            None
        }
        Some(n) => match check_agent_name(n) {
            Ok(()) => Some(n.clone()),
            Err(e) => {
                cx.err("name", e);
                None
            }
        },
    };
    if let Some(d) = &a.description
        && let Err(e) = check_text(d).and_then(|()| check_verbatim(d))
    {
        cx.err("description", format!("description {e}"));
    }
    let run = match &a.run {
        Some(r) => check_run(cx, r, fleet),
        None => {
            cx.missing("run", "", "agent has no `run`; add run.command with the program to run");
            None
        }
    };
    let mode = match &a.schedule {
        Some(s) => {
            if a.service.is_some() && cx.index.values.contains_key("service") {
                cx.err("service", "`service` applies to long-running agents only, and this agent has a `schedule`; remove one of them");
            }
            check_schedule(cx, "schedule", s).map(Mode::Scheduled)
        }
        None => Some(Mode::Service(check_service(cx, &a.service.clone().unwrap_or_default()))),
    };
    let resources = check_resources(cx, &a.resources.clone().unwrap_or_default());
    let hardening = check_hardening(cx, &a.hardening.clone().unwrap_or_default());
    let concurrency = a.concurrency.as_ref().and_then(|c| {
        let group = match &c.group {
            Some(g) if check_agent_name(g).is_ok() => Some(g.clone()),
            Some(g) => {
                cx.err("concurrency.group", format!("concurrency.group {g:?} is invalid; use lowercase letters, digits and '-'"));
                None
            }
            None => {
                cx.absent(&["concurrency.group"], "concurrency", "concurrency needs `group`");
                None
            }
        };
        let limit = match cx.typed("concurrency.limit", &c.limit).copied() {
            _ if matches!(c.limit, Some(Typed::Bad(_))) => None,
            Some(0) => {
                cx.err("concurrency.limit", "concurrency.limit must be at least 1");
                None
            }
            Some(l) => Some(l),
            None => {
                cx.absent(&["concurrency.limit"], "concurrency", "concurrency needs `limit`");
                None
            }
        };
        let when_full = match cx.one_of("concurrency.whenFull", c.when_full.as_deref(), &["skip", "wait"]).as_deref() {
            Some("wait") => WhenFull::Wait,
            _ => WhenFull::Skip,
        };
        Some(Concurrency { group: group?, limit: limit?, when_full })
    });
    let logs = check_logs(cx, a.logs.as_deref().unwrap_or_default());
    let backups = check_backups(cx, a.backups.as_deref().unwrap_or_default());
    let health = a.health.as_ref().map(|h| check_health(cx, h));
    // What means nothing for the kind of agent this is, said rather than ignored.
    match &mode {
        Some(Mode::Scheduled(_)) => {
            if let Some(h) = &a.health {
                if h.heartbeat.is_some() {
                    cx.err(
                        "health.heartbeat",
                        "health.heartbeat: applies to long-running agents only; a scheduled job's runs end by themselves (bound one with run.timeout)",
                    );
                }
                if h.check.is_some() {
                    cx.err("health.check", "health.check: applies to long-running agents only (it runs before a changed service is restarted); a scheduled job is never restarted by a deploy");
                }
            }
        }
        // A long-running service because its `schedule` key is misspelled: said by the unknown field.
        Some(Mode::Service(_)) if a.concurrency.is_some() && !cx.misspelled(&["schedule"]) => {
            cx.err("concurrency", "concurrency: applies to scheduled agents only; a long-running service would hold its slot for as long as it runs, or exit at once when the group is full");
        }
        _ => {}
    }
    // With privateTmp the agent's /tmp is its own: the helper units cannot see files there.
    if hardening.private_tmp == Some(true) {
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (i, l) in logs.iter().enumerate() {
            seen.push((format!("logs.{i}.path"), &l.path));
        }
        for (i, b) in backups.iter().enumerate() {
            seen.push((format!("backups.{i}.sqlite"), &b.sqlite));
            seen.push((format!("backups.{i}.to"), &b.to));
        }
        if let Some(hb) = health.as_ref().and_then(|h| h.heartbeat.as_ref()) {
            seen.push(("health.heartbeat.file".into(), &hb.file));
        }
        for (path, p) in seen.into_iter().filter(|(_, p)| in_tmp(p)) {
            cx.err(&path, format!("{}: {p:?} is in the agent's private /tmp (privateTmp: true), where the unit that cleans, backs up or checks it cannot see it; keep it outside /tmp and /var/tmp, or set privateTmp: false", last(&path)));
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in cx.typed("hosts", &a.hosts).into_iter().flatten().enumerate() {
        let known: BTreeSet<&str> = fleet.hosts.keys().map(String::as_str).chain(fleet.hosts.values().flatten().map(String::as_str)).collect();
        if h.is_empty() || check_text(h).is_err() || h.contains('/') {
            cx.err(&format!("hosts.{i}"), format!("invalid host or label {h:?}: one word of letters, digits, '-', '_' or '.'"));
        } else if !fleet.hosts.is_empty() && !known.contains(h.as_str()) {
            let hint = did_you_mean(h, known.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| "declare it under `hosts` in the Fleet document".into());
            cx.err(&format!("hosts.{i}"), format!("unknown host or label {h:?}; {hint}"));
        } else {
            hosts.push(h.clone());
        }
    }
    let enabled = cx.typed("enabled", &a.enabled).copied().unwrap_or(true);
    let after = cx.typed("after", &a.after).cloned().unwrap_or_default();
    let agent = Agent {
        name: name?,
        description: a.description.clone(),
        enabled,
        hosts,
        run: run?,
        mode: mode?,
        resources,
        hardening,
        concurrency,
        logs,
        backups,
        health,
        after,
        source: Source { file: cx.file.to_string(), line: cx.index.value("").line },
    };
    Some(agent)
}

fn check_fleet(cx: &mut Ctx, f: &FleetDoc) -> Fleet {
    let mut fleet = Fleet::default();
    if let Some(p) = &f.unit_prefix {
        match check_unit_prefix(p) {
            Ok(()) => fleet.unit_prefix = p.clone(),
            Err(e) => cx.err("unitPrefix", e),
        }
    }
    fleet.allow_root = cx.typed("allowRoot", &f.allow_root).copied().unwrap_or(false);
    for (name, h) in f.hosts.iter().flatten() {
        if name.is_empty() || check_text(name).is_err() || name.contains('/') {
            cx.err(&format!("hosts.{name}"), format!("invalid host name {name:?}"));
            continue;
        }
        let mut labels = Vec::new();
        for (i, l) in cx.typed(&format!("hosts.{name}.labels"), &h.labels).cloned().unwrap_or_default().into_iter().enumerate() {
            if l.is_empty() || check_text(&l).is_err() || l.contains('/') {
                cx.err(&format!("hosts.{name}.labels.{i}"), format!("invalid label {l:?}: one word of letters, digits, '-', '_' or '.'"));
            } else {
                labels.push(l);
            }
        }
        fleet.hosts.insert(name.clone(), labels);
        let keys = check_keys(cx, &format!("hosts.{name}.keys"), &h.keys);
        if !keys.is_empty() {
            fleet.host_keys.insert(name.clone(), keys);
        }
    }
    fleet.operators = check_keys(cx, "operators", &f.operators);
    if let Some(dirs) = cx.typed("credentialDirs", &f.credential_dirs).cloned() {
        fleet.credential_dirs.clear();
        for (i, d) in dirs.iter().enumerate() {
            let p = format!("credentialDirs.{i}");
            // Inside /etc is where secrets live (/etc/fleetwright/secrets); anything at or above
            // a system place, the host's ssh keys, or the top level is not a place for them.
            let place = |d: &str| {
                let ssh = d.trim_end_matches('/') == "/etc/ssh" || is_inside(d, "/etc/ssh");
                // The host's identity decrypts every secret of the host: never an agent's file.
                let identity = crate::secrets::HOST_IDENTITIES.iter().any(|id| is_inside(id, d));
                match system_place(d, &[]) {
                    _ if components(d).len() <= 1 || ssh => {
                        Err(format!("{d:?} is a system location; list only directories that hold the agents' secrets, like /etc/fleetwright/secrets"))
                    }
                    _ if identity => Err(format!(
                        "{d:?} holds the host's identity ({}), which decrypts every secret of the host: root would hand it to an agent or a sink that names it. List only directories of secrets, like /etc/fleetwright/secrets",
                        crate::secrets::HOST_IDENTITIES[0]
                    )),
                    None | Some("/etc") => Ok(()),
                    Some(place) => {
                        Err(format!("{d:?} is at, above or inside {place}; list only directories that hold the agents' secrets, like /etc/fleetwright/secrets"))
                    }
                }
            };
            if let Some(d) = cx.path_with(&p, Some(d), place) {
                fleet.credential_dirs.push(d.trim_end_matches('/').to_string());
            }
        }
    }
    if let Some(j) = &f.journal {
        fleet.journal = Some(Journal {
            max_use: cx.parse("journal.maxUse", j.max_use.as_ref(), |s| parse_size(s, false)),
            max_retention: cx.parse("journal.maxRetention", j.max_retention.as_ref(), parse_duration),
        });
    }
    for (i, n) in f.notify.iter().flatten().enumerate() {
        if let Some(sink) = check_notify(cx, &format!("notify.{i}"), n, &fleet) {
            fleet.notify.push(sink);
        }
    }
    fleet
}

/// A list of public keys (a host's, the operators'): each one parses.
fn check_keys(cx: &mut Ctx, path: &str, keys: &Option<Typed<Vec<String>>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, k) in cx.typed(path, keys).cloned().unwrap_or_default().into_iter().enumerate() {
        match crate::secrets::parse_public_key(&k) {
            Ok(_) => out.push(k.trim().to_string()),
            Err(e) => cx.err(&format!("{path}.{i}"), e),
        }
    }
    out
}

/// Check the Fleet's defaults once, where they are written.
fn check_defaults(doc: &Doc, d: &DefaultsSpec, fleet: &Fleet, diags: &mut Diagnostics, zones: &dyn calendar::ZoneLookup) {
    let none = BTreeSet::new();
    let mut cx = Ctx { file: &doc.file, index: &doc.index, prefix: "defaults.", partial: true, diags, reported: &none, zones, typos: &doc.typos };
    if let Some(r) = &d.run {
        check_run(&mut cx, r, fleet);
    }
    if let Some(s) = &d.service {
        check_service(&mut cx, s);
    }
    if let Some(r) = &d.resources {
        check_resources(&mut cx, r);
    }
    if let Some(h) = &d.hardening {
        check_hardening(&mut cx, h);
    }
    if let Some(s) = &d.schedule {
        let pos = |p: &str| format!("schedule.{p}");
        cx.parse(&pos("randomizedDelay"), s.randomized_delay.as_ref(), parse_duration);
        cx.parse(&pos("accuracy"), s.accuracy.as_ref(), parse_duration);
        if s.calendar.is_some() || s.cron.is_some() || s.every.is_some() {
            cx.err("schedule", "defaults.schedule takes only persistent, randomizedDelay and accuracy; each agent says when it runs");
        }
    }
}

pub(super) fn build_fleet(docs: Vec<Doc>, diags: &mut Diagnostics, zones: &dyn calendar::ZoneLookup) -> Fleet {
    let mut fleet = Fleet::default();
    let mut reported = BTreeSet::new();
    let none = BTreeSet::new();
    let mut defaults = DefaultsSpec::default();
    let mut fleet_at: Option<Loc> = None;
    let mut fleet_doc: Option<&Doc> = None;
    for doc in &docs {
        if let DocKind::Fleet(f) = &doc.kind {
            let pos = doc.index.value("");
            let here = Loc { file: doc.file.clone(), line: pos.line, col: pos.col };
            if let Some(first) = &fleet_at {
                diags.push_at(Stage::Fleet, here, format!("a second Fleet document; a repository has at most one (the first is at {first})"));
                continue;
            }
            fleet_at = Some(here);
            fleet_doc = Some(doc);
            let mut cx = Ctx { file: &doc.file, index: &doc.index, prefix: "", partial: false, diags, reported: &none, zones, typos: &doc.typos };
            fleet = check_fleet(&mut cx, f);
            if let Some(d) = &f.defaults {
                let before = diags.0.len();
                check_defaults(doc, d, &fleet, diags, zones);
                reported.extend(diags.0[before..].iter().map(|d| d.message.clone()));
                defaults = d.clone();
            }
        }
    }
    let mut seen: BTreeMap<String, Loc> = BTreeMap::new();
    let mut after_refs = Vec::new();
    for doc in &docs {
        let DocKind::Agent(a) = &doc.kind else { continue };
        let mut merged = (**a).clone();
        merged.merge_defaults(&defaults);
        let mut cx = Ctx { file: &doc.file, index: &doc.index, prefix: "", partial: false, diags, reported: &reported, zones, typos: &doc.typos };
        let Some(agent) = check_agent(&mut cx, &merged, &fleet) else { continue };
        let name_loc = cx.loc_of("name");
        if let Some(first) = seen.get(&agent.name) {
            diags.push_at(Stage::Fleet, name_loc, format!("duplicate agent name {:?} (first defined at {first}); names are unique in the fleet", agent.name));
            continue;
        }
        seen.insert(agent.name.clone(), name_loc);
        for (i, dep) in agent.after.iter().enumerate() {
            let pos = doc.index.value(&format!("after.{i}"));
            after_refs.push((agent.name.clone(), dep.clone(), Loc { file: doc.file.clone(), line: pos.line, col: pos.col }));
        }
        fleet.agents.push(agent);
    }
    for (name, dep, loc) in &after_refs {
        if name == dep {
            diags.push_at(Stage::Fleet, loc.clone(), format!("agent {name:?} cannot be ordered after itself"));
        } else if !seen.contains_key(dep) {
            let hint = did_you_mean(dep, seen.keys().map(String::as_str)).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
            diags.push_at(Stage::Fleet, loc.clone(), format!("`after` names {dep:?}, which is not an agent of this fleet{hint}"));
        }
    }
    // A sink's `agents` filter names agents of this fleet (a typo would silence a sink).
    if let (Some(doc), Some(FleetDoc { notify: Some(sinks), .. })) = (
        fleet_doc,
        fleet_doc.and_then(|d| match &d.kind {
            DocKind::Fleet(f) => Some(&**f),
            DocKind::Agent(_) => None,
        }),
    ) {
        for (i, n) in sinks.iter().enumerate() {
            for (j, a) in n.agents.as_ref().and_then(|t| t.ok()).into_iter().flatten().enumerate() {
                if check_agent_name(a).is_ok() && !seen.contains_key(a) {
                    let pos = doc.index.value(&format!("notify.{i}.agents.{j}"));
                    let hint = did_you_mean(a, seen.keys().map(String::as_str)).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                    diags.push_at(
                        Stage::Fleet,
                        Loc { file: doc.file.clone(), line: pos.line, col: pos.col },
                        format!("notify.{i}.agents names {a:?}, which is not an agent of this fleet{hint}"),
                    );
                }
            }
        }
    }
    // A group's limit is one number: each agent's runs take a slot among `limit` lock files, so
    // agents that disagree would each enforce their own cap on the same group.
    let mut limits: BTreeMap<&str, (u32, &str)> = BTreeMap::new();
    for a in &fleet.agents {
        if let Some(c) = &a.concurrency {
            match limits.get(c.group.as_str()) {
                Some((l, other)) if *l != c.limit => {
                    let loc = seen.get(&a.name).cloned().unwrap_or(Loc { file: a.source.file.clone(), line: a.source.line, col: 1 });
                    diags.push_at(
                        Stage::Fleet,
                        loc,
                        format!(
                            "concurrency group {:?} has limit {} here but {l} in agent {other:?}; give every agent of a group the same limit",
                            c.group, c.limit
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    limits.insert(c.group.as_str(), (c.limit, a.name.as_str()));
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&fleet) {
        let loc = seen.get(&cycle[0]).cloned().unwrap_or(Loc { file: String::new(), line: 1, col: 1 });
        diags.push_at(Stage::Fleet, loc, format!("`after` forms a cycle: {}; remove one of these orderings", cycle.join(" → ")));
    }
    fleet.agents.sort_by(|a, b| a.name.cmp(&b.name));
    fleet.warnings = secret_warnings(&docs);
    fleet
}

/// A secret-looking name in `run.environment` (an agent's or the defaults'): its value is in
/// the repository, in every clone and in the unit file, and any local user can read it from
/// the manager. Said where it is written, with the way out.
fn secret_warnings(docs: &[Doc]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for doc in docs {
        let (prefix, env) = match &doc.kind {
            DocKind::Agent(a) => ("run.environment", a.run.as_ref().and_then(|r| r.environment.as_ref())),
            DocKind::Fleet(f) => ("defaults.run.environment", f.defaults.as_ref().and_then(|d| d.run.as_ref()).and_then(|r| r.environment.as_ref())),
        };
        for name in env.into_iter().flat_map(|e| e.keys()).filter(|k| looks_secret(k)) {
            let pos = doc.index.key(&format!("{prefix}.{name}"));
            out.push(Diagnostic::new(
                Loc { file: doc.file.clone(), line: pos.line, col: pos.col },
                format!(
                    "warning: environment variable {name} looks like a secret, and its value is in the repository; put it in a file on the host and use `run.credentials` (or `run.environmentFile`) instead"
                ),
            ));
        }
    }
    out
}

/// A cycle in `after`, as the list of names around it, if any. Depth-first with an explicit
/// stack: a long `after` chain must not overflow the thread's stack.
fn find_cycle(fleet: &Fleet) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, Vec<&str>> = fleet.agents.iter().map(|a| (a.name.as_str(), a.after.iter().map(String::as_str).collect())).collect();
    // 1 = on the stack, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    for &root in edges.keys() {
        if state.contains_key(root) {
            continue;
        }
        state.insert(root, 1);
        // Each entry: a node and the index of its next edge to follow.
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let (n, next) = (top.0, edges[top.0].get(top.1).copied());
            top.1 += 1;
            let Some(m) = next else {
                state.insert(n, 2);
                stack.pop();
                continue;
            };
            if !edges.contains_key(m) {
                continue;
            }
            match state.get(m) {
                Some(2) => {}
                Some(_) => {
                    let start = stack.iter().position(|(s, _)| *s == m).unwrap_or(0);
                    let mut cyc: Vec<String> = stack[start..].iter().map(|(s, _)| s.to_string()).collect();
                    cyc.push(m.to_string());
                    return Some(cyc);
                }
                None => {
                    state.insert(m, 1);
                    stack.push((m, 0));
                }
            }
        }
    }
    None
}
