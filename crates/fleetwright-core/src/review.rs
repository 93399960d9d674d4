//! Pull-request review (pure): what a change between two commits does to the fleet, without a
//! host — the head planned against the base as if the base were applied. Agents that do not
//! exist yet and removals show like any change. Rendered as text, JSON or a Markdown comment.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::desired::desired;
use crate::inventory::Inventory;
use crate::plan::{Plan, PlanOptions, UnitChange, assume_converged, plan, short};
use crate::render::RenderCtx;
use crate::spec::Fleet;
use crate::spec::diag::printable_lines;
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
    let restarts: BTreeSet<String> = p
        .changes()
        .filter(|u| u.actions.iter().any(|a| matches!(a, crate::types::Action::Restart | crate::types::Action::Reload)))
        .map(|u| u.agent.clone())
        .collect();
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
        crate::plan::FileOp::Mode => "rewrite (mode only)",
        crate::plan::FileOp::Remove => "remove",
    };
    let mut parts: Vec<String> = Vec::new();
    if !file.is_empty() {
        parts.push(file.into());
    }
    parts.extend(u.actions.iter().map(|a| format!("{a:?}").to_lowercase()));
    parts.join(", ")
}

/// The first line of every plan comment: what a CI job looks for to update its own comment.
pub const COMMENT_MARKER: &str = "<!-- fleetwright-plan -->";

/// What a comment may hold: GitHub refuses a comment over 65 536 characters; this leaves room.
pub const COMMENT_BUDGET: usize = 60_000;

/// A pull-request comment, at most [`COMMENT_BUDGET`] characters: the unit diffs that do not
/// fit are left out, and the comment says so.
pub fn render_markdown(r: &Review) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{COMMENT_MARKER}");
    let _ = writeln!(o, "### fleetwright plan: `{}` → `{}`\n", short(&r.base), short(&r.head));
    // What would stop the head from being applied comes first: a review must never read as
    // "nothing to see" while apply would refuse the commit.
    if !r.plan.errors.is_empty() {
        let _ = writeln!(o, "**This commit cannot be applied:**\n");
        for e in &r.plan.errors {
            let _ = writeln!(o, "- {}", printable_lines(&e.replace('\n', " ")));
        }
        let _ = writeln!(o);
    }
    if !r.plan.has_changes() {
        if r.plan.errors.is_empty() {
            let _ = writeln!(o, "No change to any agent.");
        }
        return o;
    }
    let list =
        |v: &[String]| if v.is_empty() { "—".to_string() } else { v.iter().map(|a| format!("`{}`", printable_lines(a))).collect::<Vec<_>>().join(", ") };
    let _ = writeln!(o, "| | agents |\n|---|---|");
    let _ = writeln!(o, "| added | {} |", list(&r.added));
    let _ = writeln!(o, "| changed | {} |", list(&r.changed));
    let _ = writeln!(o, "| removed (stopped, disabled, pruned) | {} |", list(&r.removed));
    let _ = writeln!(o, "| restarted or reloaded when applied | {} |\n", list(&r.restarts));
    // Half the budget for the table, the rest for diffs.
    let table_budget = COMMENT_BUDGET / 2;
    let _ = writeln!(o, "| unit | agent | what happens | why |\n|---|---|---|---|");
    let changes: Vec<&UnitChange> = r.plan.changes().collect();
    for (i, u) in changes.iter().enumerate() {
        let row = printable_lines(&format!("| `{}` | `{}` | {} | {} |\n", u.unit, u.agent, verb(u), u.reasons.join("; ").replace('|', "\\|"))).into_owned();
        if o.len() + row.len() > table_budget {
            let _ = writeln!(o, "| … | | {} more units | |", changes.len() - i);
            break;
        }
        o.push_str(&row);
    }
    for c in r.plan.config.iter().filter(|c| c.file != crate::plan::FileOp::Keep) {
        let _ = writeln!(o, "| `{}` | (fleet) | {:?} | journald limits |", printable_lines(&c.path), c.file);
    }
    let _ = writeln!(o);
    let with_diffs: Vec<&&UnitChange> = changes.iter().filter(|u| u.diff.is_some()).collect();
    let mut left_out = 0;
    for u in &with_diffs {
        // The diff's secret values are redacted already (`plan::unified_diff`); control
        // characters are escaped here, before the block is measured.
        let block =
            printable_lines(&format!("<details><summary><code>{}</code></summary>\n\n```diff\n{}```\n</details>\n\n", u.unit, u.diff.as_deref().unwrap_or("")))
                .into_owned();
        if left_out > 0 || o.len() + block.len() > COMMENT_BUDGET - 400 {
            left_out += 1;
            continue;
        }
        o.push_str(&block);
    }
    if left_out > 0 {
        let _ = writeln!(
            o,
            "*{left_out} more unit diffs do not fit in a comment; `fleetwright plan --base {} --head {}` shows them all.*",
            short(&r.base),
            short(&r.head)
        );
    }
    o
}

pub fn render_text(r: &Review) -> String {
    let mut o = format!("{} → {}: {} added, {} changed, {} removed\n", short(&r.base), short(&r.head), r.added.len(), r.changed.len(), r.removed.len());
    o.push_str(&crate::plan::render_text(&r.plan, true));
    printable_lines(&o).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderCtx;
    use crate::types::Scope;

    fn fleet(text: &str) -> Fleet {
        crate::spec::load(&[("a.yaml".to_string(), text.to_string())], &crate::spec::calendar::NoDatabase).unwrap()
    }

    /// A review never reads "no change" while apply would refuse the commit.
    #[test]
    fn what_cannot_be_applied_comes_first_in_every_form() {
        let a = fleet("apiVersion: fleetwright/v1\nkind: Agent\nname: a\nrun: {command: [/bin/true], user: agent}\n");
        let ctx =
            RenderCtx { scope: Scope::System, state_dir: "/var/lib/fleetwright".into(), exe: "/usr/bin/fleetwright".into(), secret_ids: Default::default() };
        let mut r = review(("c1", &a), ("c2", &a), None, &ctx);
        assert!(!r.plan.has_changes() && r.plan.errors.is_empty());
        assert!(render_markdown(&r).contains("No change to any agent."));
        r.plan.errors.push("agent-a.service: refused".into());
        let md = render_markdown(&r);
        assert!(md.contains("**This commit cannot be applied:**\n\n- agent-a.service: refused"), "{md}");
        assert!(!md.contains("No change to any agent."), "{md}");
        assert!(render_text(&r).contains("error: agent-a.service: refused"));
    }
}
