//! The benchmark's fleet: N generated agents (60% scheduled, 40% long-running) as YAML files,
//! committed into a real git repository with git2.

use std::collections::BTreeMap;

/// The Fleet document: root is allowed, so agents can run `/bin/true` and `/bin/sleep` as root
/// on any Debian machine without creating users.
pub const FLEET: &str = "apiVersion: fleetwright/v1
kind: Fleet
allowRoot: true
";

/// What one generated agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Long-running: `/bin/sleep 100000`.
    Service,
    /// Scheduled: a timer and a oneshot `/bin/true`.
    Timer,
}

/// Agent `i` (0-based) of any fleet: 3 of every 5 are scheduled, 2 long-running.
pub fn kind(i: usize) -> Kind {
    if i % 5 < 3 { Kind::Timer } else { Kind::Service }
}

pub fn name(i: usize) -> String {
    match kind(i) {
        Kind::Service => format!("svc-{i:05}"),
        Kind::Timer => format!("job-{i:05}"),
    }
}

/// The units fleetwright starts (and enables) for agent `i`: the timer of a scheduled agent
/// (never its job), the service of a long-running one.
pub fn started_unit(i: usize) -> String {
    match kind(i) {
        Kind::Service => format!("agent-{}.service", name(i)),
        Kind::Timer => format!("agent-{}.timer", name(i)),
    }
}

/// Every unit file fleetwright writes for agent `i`.
pub fn unit_files(i: usize) -> Vec<String> {
    match kind(i) {
        Kind::Service => vec![format!("agent-{}.service", name(i))],
        Kind::Timer => vec![format!("agent-{}.service", name(i)), format!("agent-{}.timer", name(i))],
    }
}

/// The schedule of scheduled agent `i`: a third each of `calendar`, `every` and `cron`. Calendar
/// and cron times are spread over the day (at most a few fire in any minute, even at N=5000),
/// and `every` counts from the manager's start (at least 1h), so timers hardly fire during a run.
fn schedule(i: usize) -> String {
    let (h, m) = ((i * 7) % 24, (i * 13) % 60);
    match (i / 5) % 3 {
        0 => format!("{{calendar: \"*-*-* {h:02}:{m:02}:00\"}}"),
        1 => format!("{{every: {}h}}", [1, 2, 6, 12][(i / 15) % 4]),
        _ => format!("{{cron: \"{m} {h} * * mon-fri\"}}"),
    }
}

/// The YAML of agent `i`; `variant` > 0 changes its program's arguments (a semantic change: the
/// file is rewritten and a service restarted).
pub fn agent_yaml(i: usize, variant: u32) -> String {
    let n = name(i);
    match kind(i) {
        Kind::Service => format!(
            "apiVersion: fleetwright/v1\nkind: Agent\nname: {n}\ndescription: benchmark service {i}\nrun:\n  command: [/bin/sleep, \"{}\"]\n  user: root\n",
            100000 + variant
        ),
        Kind::Timer => {
            let args = if variant == 0 { String::new() } else { format!(", \"variant-{variant}\"") };
            format!(
                "apiVersion: fleetwright/v1\nkind: Agent\nname: {n}\ndescription: benchmark job {i}\nrun:\n  command: [/bin/true{args}]\n  user: root\nschedule: {}\n",
                schedule(i)
            )
        }
    }
}

/// The files of a fleet of `n` agents, with per-agent variants (`variants[i]`, default 0).
pub fn files(n: usize, variants: &BTreeMap<usize, u32>) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    f.insert("fleet.yaml".to_string(), FLEET.to_string());
    for i in 0..n {
        f.insert(format!("agents/{}.yaml", name(i)), agent_yaml(i, variants.get(&i).copied().unwrap_or(0)));
    }
    f
}

/// A fleet repository under the target directory: the host's /tmp is a private tmpfs inside
/// the sandbox, so the repository must live elsewhere to be seen from inside.
pub struct Repo {
    pub dir: tempfile::TempDir,
    repo: git2::Repository,
}

impl Repo {
    pub fn new(tag: &str) -> Repo {
        let dir = tempfile::Builder::new().prefix(&format!("bench-{tag}-")).tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a repository directory");
        let repo = git2::Repository::init(dir.path()).expect("git init");
        repo.set_head("refs/heads/master").expect("HEAD → master");
        Repo { dir, repo }
    }

    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 path")
    }

    /// Build a commit whose tree is exactly `files` (path → text), on top of the current head,
    /// without moving any ref. The blobs go straight into the object database: the working tree
    /// is never used (fleetwright reads commits, not the working tree).
    pub fn prepare(&self, files: &BTreeMap<String, String>, message: &str) -> git2::Oid {
        let tree = self.tree(files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect());
        let tree = self.repo.find_tree(tree).expect("tree");
        let sig = git2::Signature::now("bench", "bench@example.com").expect("signature");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(None, &sig, &sig, message, &tree, &parents).expect("commit")
    }

    /// Move the branch to `commit` (a fast-forward when it was prepared on the head).
    pub fn publish(&self, commit: git2::Oid) {
        self.repo.reference("refs/heads/master", commit, true, "bench").expect("update refs/heads/master");
    }

    /// `prepare` + `publish`; returns the commit id.
    pub fn commit(&self, files: &BTreeMap<String, String>, message: &str) -> String {
        let c = self.prepare(files, message);
        self.publish(c);
        c.to_string()
    }

    /// A tree of `(path, text)`, recursively by the first path component.
    fn tree(&self, entries: Vec<(&str, &str)>) -> git2::Oid {
        let mut here: Vec<(&str, &str)> = Vec::new();
        let mut sub: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (p, t) in entries {
            match p.split_once('/') {
                Some((dir, rest)) => sub.entry(dir).or_default().push((rest, t)),
                None => here.push((p, t)),
            }
        }
        let mut b = self.repo.treebuilder(None).expect("treebuilder");
        for (name, text) in here {
            let blob = self.repo.blob(text.as_bytes()).expect("blob");
            b.insert(name, blob, 0o100644).expect("insert blob");
        }
        for (dir, inner) in sub {
            let t = self.tree(inner);
            b.insert(dir, t, 0o040000).expect("insert tree");
        }
        b.write().expect("write tree")
    }
}
