//! The plan's rules, on fakes of the observed host built from real desired states.

use crate::build::{AgentSpec, agent, documents, fleet_doc};
use crate::common::*;
use fleetwright::inventory::Inventory;
use fleetwright::plan::{FileOp, Plan, PlanOptions, plan, render_text};
use fleetwright::spec::Fleet;
use fleetwright::types::Action;
use fleetwright::unit::Change;

// The fleet of these tests: an hourly job, a web service and a bot that reloads on a change,
// all run by `agent`. A test changes one of them and plans the fleet again.

fn job() -> AgentSpec {
    agent("job").command(&["/usr/bin/job"]).calendar("hourly")
}

fn web() -> AgentSpec {
    agent("web").description("the web").command(&["/usr/bin/web"])
}

fn bot() -> AgentSpec {
    agent("bot").command(&["/usr/bin/bot"]).on_change("reload")
}

/// The Fleet document and `agents`, in one file.
fn fleet_of(agents: &[AgentSpec]) -> Fleet {
    let docs: Vec<String> = std::iter::once(fleet_doc().default_user("agent").yaml()).chain(agents.iter().map(AgentSpec::yaml)).collect();
    fleet(&[("f.yaml", &documents(&docs))])
}

/// The three as they are.
fn standard() -> Fleet {
    fleet_of(&[job(), web(), bot()])
}

fn opts() -> PlanOptions {
    PlanOptions::default()
}

fn actions(p: &Plan, unit: &str) -> (FileOp, Vec<Action>) {
    let u = p.units.iter().find(|u| u.unit == unit).unwrap_or_else(|| panic!("{unit} not in plan"));
    (u.file, u.actions.clone())
}

#[test]
fn fresh_host_writes_enables_and_starts_but_never_starts_a_job() {
    let d = want(&standard(), "c1", &Inventory::default());
    let p = plan(&d, &Default::default(), opts());
    insta::assert_snapshot!(render_text(&p, false));
    assert_eq!(actions(&p, "agent-job.service"), (FileOp::Create, vec![]));
    assert_eq!(actions(&p, "agent-job.timer"), (FileOp::Create, vec![Action::Enable, Action::Start]));
    assert_eq!(actions(&p, "agent-web.service"), (FileOp::Create, vec![Action::Enable, Action::Start]));
    assert!(p.daemon_reload);
}

#[test]
fn converged_host_and_a_new_commit_that_changes_nothing_do_nothing() {
    let f = standard();
    let d1 = want(&f, "c1", &Inventory::default());
    let host = converged(&d1);
    let p = plan(&want(&f, "c1", &host.inventory), &host, opts());
    assert!(!p.has_changes(), "{}", render_text(&p, true));
    // Another commit with the same spec: the header keeps the commit that last changed each agent.
    let d2 = want(&f, "c2", &host.inventory);
    let p2 = plan(&d2, &host, opts());
    assert!(!p2.has_changes(), "{}", render_text(&p2, true));
    assert_eq!(d2.agents["web"].changed_commit, "c1");
}

#[test]
fn a_changed_job_is_rewritten_and_never_restarted() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job().command(&["/usr/bin/job2"]), web(), bot()]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    insta::assert_snapshot!(render_text(&p, true));
    assert_eq!(actions(&p, "agent-job.service"), (FileOp::Update(Change::Semantic), vec![]));
    // Its timer's content changed only in the header comment: rewritten, not restarted.
    assert_eq!(actions(&p, "agent-job.timer"), (FileOp::Update(Change::Cosmetic), vec![]));
    assert_eq!(actions(&p, "agent-web.service"), (FileOp::Keep, vec![]));
    assert_eq!(p.changes().count(), 2);
}

#[test]
fn a_changed_timer_restarts_only_the_timer() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job().calendar("daily"), web(), bot()]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    assert_eq!(actions(&p, "agent-job.timer"), (FileOp::Update(Change::Semantic), vec![Action::Restart]));
    assert_eq!(actions(&p, "agent-job.service"), (FileOp::Update(Change::Cosmetic), vec![]));
}

#[test]
fn services_follow_on_change() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job(), web().command(&["/usr/bin/web2"]), bot().command(&["/usr/bin/bot2"])]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    assert_eq!(actions(&p, "agent-web.service").1, vec![Action::Restart]);
    assert_eq!(actions(&p, "agent-bot.service").1, vec![Action::Reload]);
    let f3 = fleet_of(&[job(), web(), bot().on_change("none")]);
    let host3 = converged(&want(&f3, "c1", &Inventory::default()));
    let f4 = fleet_of(&[job(), web(), bot().on_change("none").command(&["/usr/bin/bot2"])]);
    let p4 = plan(&want(&f4, "c2", &host3.inventory), &host3, opts());
    assert_eq!(actions(&p4, "agent-bot.service"), (FileOp::Update(Change::Semantic), vec![]));
}

#[test]
fn a_description_change_restarts_nothing() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job(), web().description("the web server"), bot()]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    assert_eq!(actions(&p, "agent-web.service"), (FileOp::Update(Change::Cosmetic), vec![]));
    assert!(p.daemon_reload);
}

#[test]
fn a_removed_agent_is_stopped_disabled_and_pruned() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let p = plan(&want(&fleet_of(&[web(), bot()]), "c2", &host.inventory), &host, opts());
    insta::assert_snapshot!(render_text(&p, false));
    assert_eq!(actions(&p, "agent-job.timer"), (FileOp::Remove, vec![Action::Stop, Action::Disable]));
    assert_eq!(actions(&p, "agent-job.service"), (FileOp::Remove, vec![]));
}

#[test]
fn a_foreign_file_of_our_name_is_an_error() {
    let d = want(&standard(), "c1", &Inventory::default());
    let mut host = fleetwright::plan::Observed::default();
    host.files.insert("agent-web.service".into(), Some("[Service]\nExecStart=/bin/theirs\n".into()));
    let p = plan(&d, &host, opts());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(p.errors[0].contains("agent-web.service exists in the unit directory but fleetwright did not write it"));
}

#[test]
fn a_unit_defined_elsewhere_is_never_shadowed() {
    // `unitPrefix: ""` and an agent named like a package's unit: systemd already loads it
    // from /lib/systemd/system, and there is no file of that name in the unit directory.
    let apt_daily = agent("apt-daily").command(&["/bin/true"]).user("a").calendar("daily");
    let d = want(&fleet(&[("f.yaml", &documents(&[fleet_doc().unit_prefix("").yaml(), apt_daily.yaml()]))]), "c1", &Inventory::default());
    let mut host = fleetwright::plan::Observed::default();
    for u in ["apt-daily.service", "apt-daily.timer"] {
        host.units.insert(u.into(), fleetwright::plan::UnitStatus { load_state: "loaded".into(), active_state: "active".into(), ..Default::default() });
    }
    let p = plan(&d, &host, opts());
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert!(p.errors[0].contains("apt-daily.service is already a unit on this host (loaded), from a file fleetwright did not write"), "{:?}", p.errors);
    // Not found (the usual case for a new agent) is fine.
    for u in host.units.values_mut() {
        u.load_state = "not-found".into();
    }
    assert!(plan(&d, &host, opts()).errors.is_empty());
}

#[test]
fn an_empty_fleet_prunes_nothing_without_allow_empty() {
    let host = converged(&want(&standard(), "c1", &Inventory::default()));
    let empty = want(&fleet(&[]), "c2", &host.inventory);
    let p = plan(&empty, &host, opts());
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].contains("--allow-empty"));
    let p2 = plan(&empty, &host, PlanOptions { allow_empty: true });
    assert!(p2.errors.is_empty());
    assert_eq!(p2.units.iter().filter(|u| u.file == FileOp::Remove).count(), 4);
}

#[test]
fn disabling_an_agent_stops_and_disables_it() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job(), web().enabled(false), bot()]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    assert_eq!(actions(&p, "agent-web.service").1, vec![Action::Stop, Action::Disable]);
}

#[test]
fn drift_is_detected_and_repaired() {
    let f = standard();
    let d = want(&f, "c1", &Inventory::default());
    let mut host = converged(&d);
    host.units.get_mut("agent-job.timer").unwrap().active_state = "inactive".into();
    host.files.insert("agent-web.service".into(), Some(d.units["agent-web.service"].content.replace("/usr/bin/web", "/usr/bin/evil")));
    let p = plan(&want(&f, "c1", &host.inventory), &host, opts());
    insta::assert_snapshot!(render_text(&p, true));
    assert_eq!(actions(&p, "agent-job.timer").1, vec![Action::Start]);
    assert_eq!(actions(&p, "agent-web.service"), (FileOp::Update(Change::Semantic), vec![Action::Restart]));
    assert_eq!(p.drift().count(), 2);
}

#[test]
fn plans_are_deterministic() {
    let f = standard();
    let a = plan(&want(&f, "c1", &Inventory::default()), &Default::default(), opts());
    let b = plan(&want(&f, "c1", &Inventory::default()), &Default::default(), opts());
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    let names: Vec<&str> = a.units.iter().map(|u| u.unit.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn a_service_turned_scheduled_job_is_stopped_and_disabled_once() {
    let f1 = standard();
    let host = converged(&want(&f1, "c1", &Inventory::default()));
    let f2 = fleet_of(&[job(), web().calendar("hourly"), bot()]);
    let p = plan(&want(&f2, "c2", &host.inventory), &host, opts());
    assert_eq!(actions(&p, "agent-web.service"), (FileOp::Update(Change::Semantic), vec![Action::Stop, Action::Disable]));
    assert_eq!(actions(&p, "agent-web.timer"), (FileOp::Create, vec![Action::Enable, Action::Start]));
}
