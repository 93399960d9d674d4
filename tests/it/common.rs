//! Shared helpers: fleets from text, a fake observed host built from a desired state.

#![allow(dead_code)]

use std::path::Path;

use fleetwright::desired::{Desired, desired};
use fleetwright::inventory::Inventory;
use fleetwright::plan::Observed;
use fleetwright::render::RenderCtx;
use fleetwright::spec::{self, Fleet};
use fleetwright::types::Scope;

pub fn fleet(docs: &[(&str, &str)]) -> Fleet {
    let files: Vec<(String, String)> = docs.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    spec::load(&files, &fleetwright::host::zones::Tzdata).unwrap_or_else(|d| panic!("invalid test fleet:\n{d}"))
}

pub fn example(name: &str) -> (Vec<(String, String)>, Fleet) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let files = fleetwright::source::read_dir(&dir).unwrap();
    let fleet = spec::load(&files, &fleetwright::host::zones::Tzdata).unwrap_or_else(|d| panic!("example {name} is invalid:\n{d}"));
    (files, fleet)
}

pub fn ctx() -> RenderCtx {
    RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() }
}

pub fn want(fleet: &Fleet, commit: &str, prior: &Inventory) -> Desired {
    desired(fleet, "vps-1", &ctx(), commit, prior)
}

/// The host exactly as `apply` of `d` would have left it.
pub fn converged(d: &Desired) -> Observed {
    fleetwright::plan::assume_converged(d)
}
