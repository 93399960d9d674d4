//! Shared helpers: fleets from text, a fake observed host built from a desired state.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use fleetwright::desired::{desired, Desired};
use fleetwright::inventory::{sha256, AgentRecord, FileRecord, Inventory};
use fleetwright::plan::{Observed, UnitStatus};
use fleetwright::render::{RenderCtx, Role, Scope};
use fleetwright::spec::{self, Fleet};

pub fn fleet(docs: &[(&str, &str)]) -> Fleet {
    let files: Vec<(String, String)> = docs.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    spec::load(&files).unwrap_or_else(|d| panic!("invalid test fleet:\n{d}"))
}

pub fn example(name: &str) -> (Vec<(String, String)>, Fleet) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let files = fleetwright::source::read_dir(&dir).unwrap();
    let fleet = spec::load(&files).unwrap_or_else(|d| panic!("example {name} is invalid:\n{d}"));
    (files, fleet)
}

pub fn ctx() -> RenderCtx {
    RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into() }
}

pub fn want(fleet: &Fleet, commit: &str, prior: &Inventory) -> Desired {
    desired(fleet, "vps-1", &ctx(), commit, prior)
}

/// The host exactly as `apply` of `d` would have left it: files written, timers and services
/// active and enabled (unless the agent is disabled), the inventory recording all of it.
pub fn converged(d: &Desired) -> Observed {
    let mut o = Observed::default();
    for (name, u) in &d.units {
        o.files.insert(name.clone(), Some(u.content.clone()));
        let running = u.enabled && u.role != Role::Job;
        o.units.insert(
            name.clone(),
            UnitStatus {
                load_state: "loaded".into(),
                active_state: if running { "active" } else { "inactive" }.into(),
                sub_state: if running { "running" } else { "dead" }.into(),
                unit_file_state: if u.role == Role::Job { "static" } else if u.enabled { "enabled" } else { "disabled" }.into(),
            },
        );
        o.inventory.files.insert(name.clone(), FileRecord { sha256: sha256(&u.content), agent: u.agent.clone(), role: u.role });
    }
    let mut agents = BTreeMap::new();
    for (name, a) in &d.agents {
        agents.insert(
            name.clone(),
            AgentRecord { spec_hash: a.spec_hash.clone(), changed_commit: a.changed_commit.clone(), changed_at: "t0".into(), applied_commit: d.commit.clone(), applied_at: "t0".into(), enabled: true },
        );
    }
    o.inventory.agents = agents;
    o
}
