//! Pull-request review (pure): what a change between two commits does to the fleet, without a
//! host — the head planned against the base as if the base were applied. Agents that do not
//! exist yet and removals show like any change. Rendered as text, JSON or a Markdown comment.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::desired::desired;
use crate::inventory::Inventory;
use crate::plan::{assume_converged, plan, short, Plan, PlanOptions, UnitChange};
use crate::render::RenderCtx;
use crate::spec::Fleet;
use crate::unit::Change;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub base: String,
    pub head: String,
    /// Agents per verdict, sorted.
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Agents whose change restarts or reloads a running service.
    pub restarts: Vec<String>,
    pub plan: Plan,
}

/// Plan `head` against `base` for `host` (None: every agent, whatever its `hosts`).
pub fn review(base: (&str, &Fleet), head: (&str, &Fleet), host: Option<&str>, ctx: &RenderCtx) -> Review {
    let widen = |f: &Fleet| -> Fleet {
        let mut f = f.clone();
        if host.is_none() {
            for a in &mut f.agents {
                a.hosts.clear();
            }
        }
        f
    };
    let (bf, hf) = (widen(base.1), widen(head.1));
    let h = host.unwrap_or("*");
    let before = desired(&bf, h, ctx, base.0, &Inventory::default());
    let observed = assume_converged(&before);
    let after = desired(&hf, h, ctx, head.0, &observed.inventory);
    let p = plan(&after, &observed, PlanOptions { allow_empty: true });
    let was: BTreeSet<&String> = before.agents.keys().collect();
    let is: BTreeSet<&String> = after.agents.keys().collect();
    let touched: BTreeSet<&str> = p.changes().map(|u| u.agent.as_str()).collect();
    let restarts: BTreeSet<String> = p.changes().filter(|u| u.actions.iter().any(|a| matches!(a, crate::plan::Action::Restart | crate::plan::Action::Reload))).map(|u| u.agent.clone()).collect();
    Review {
        base: base.0.to_string(),
        head: head.0.to_string(),
        added: is.difference(&was).map(|s| s.to_string()).collect(),
        removed: was.difference(&is).map(|s| s.to_string()).collect(),
        changed: is.intersection(&was).filter(|a| touched.contains(a.as_str())).map(|s| s.to_string()).collect(),
        restarts: restarts.into_iter().collect(),
        plan: p,
    }
}

fn verb(u: &UnitChange) -> String {
    let file = match u.file {
        crate::plan::FileOp::Keep => "",
        crate::plan::FileOp::Create => "create",
        crate::plan::FileOp::Update(Change::Cosmetic) => "rewrite (cosmetic)",
        crate::plan::FileOp::Update(_) => "rewrite",
        crate::plan::FileOp::Remove => "remove",
    };
    let mut parts: Vec<String> = Vec::new();
    if !file.is_empty() {
        parts.push(file.into());
    }
    parts.extend(u.actions.iter().map(|a| format!("{a:?}").to_lowercase()));
    parts.join(", ")
}

/// A pull-request comment.
pub fn render_markdown(r: &Review) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### fleetwright plan: `{}` → `{}`\n", short(&r.base), short(&r.head));
    if !r.plan.has_changes() {
        let _ = writeln!(o, "No change to any agent.");
        return o;
    }
    let list = |v: &[String]| if v.is_empty() { "—".to_string() } else { v.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ") };
    let _ = writeln!(o, "| | agents |\n|---|---|");
    let _ = writeln!(o, "| added | {} |", list(&r.added));
    let _ = writeln!(o, "| changed | {} |", list(&r.changed));
    let _ = writeln!(o, "| removed (stopped, disabled, pruned) | {} |", list(&r.removed));
    let _ = writeln!(o, "| restarted or reloaded when applied | {} |\n", list(&r.restarts));
    let _ = writeln!(o, "| unit | agent | what happens | why |\n|---|---|---|---|");
    for u in r.plan.changes() {
        let _ = writeln!(o, "| `{}` | `{}` | {} | {} |", u.unit, u.agent, verb(u), u.reasons.join("; ").replace('|', "\\|"));
    }
    for c in r.plan.config.iter().filter(|c| c.file != crate::plan::FileOp::Keep) {
        let _ = writeln!(o, "| `{}` | (fleet) | {:?} | journald limits |", c.path, c.file);
    }
    let _ = writeln!(o);
    for u in r.plan.changes().filter(|u| u.diff.is_some()) {
        let _ = writeln!(o, "<details><summary><code>{}</code></summary>\n\n```diff\n{}```\n</details>\n", u.unit, u.diff.as_deref().unwrap_or(""));
    }
    o
}

pub fn render_text(r: &Review) -> String {
    let mut o = format!("{} → {}: {} added, {} changed, {} removed\n", short(&r.base), short(&r.head), r.added.len(), r.changed.len(), r.removed.len());
    o.push_str(&crate::plan::render_text(&r.plan, true));
    o
}
