//! The decision table: every scenario of issue 12 (and the rules before it), as conversations
//! between `decide` and a scripted world. Each case says what the world is, and what the
//! daemon asks, does and ends with.

use std::collections::BTreeMap;

use super::*;

/// What the world answers.
#[derive(Clone)]
struct World {
    verdicts: BTreeMap<String, Standing>,
    lineage: Lineage,
    signature: Check,
    validity: BTreeMap<String, Check>,
    apply: BTreeMap<String, Applied>,
    gate: GateOutcome,
}

impl Default for World {
    fn default() -> Self {
        World {
            verdicts: BTreeMap::new(),
            lineage: Lineage::Descends,
            signature: Check::Pass,
            validity: BTreeMap::new(),
            apply: BTreeMap::new(),
            gate: GateOutcome::Healthy,
        }
    }
}

impl World {
    fn verdict(mut self, c: &str, v: Verdict, since_pin: bool) -> World {
        self.verdicts.insert(c.into(), Standing { verdict: v, reason: format!("{} before", v.as_str()), since_pin });
        self
    }
    fn applying(mut self, c: &str, a: Applied) -> World {
        self.apply.insert(c.into(), a);
        self
    }
    fn invalid(mut self, c: &str, why: &str) -> World {
        self.validity.insert(c.into(), Check::Fail(why.into()));
        self
    }
    fn gate(mut self, g: GateOutcome) -> World {
        self.gate = g;
        self
    }
}

/// One reconcile: the steps taken, in words, and how it ended.
fn converse(mut f: Facts, w: &World) -> (Vec<String>, Outcome) {
    let mut steps = vec![];
    for _ in 0..20 {
        match decide(&f) {
            Decision::Gather(Need::Verdict(c)) => {
                steps.push(format!("verdict? {c}"));
                f.verdict = Some(w.verdicts.get(&c).cloned());
            }
            Decision::Gather(Need::Lineage { commit, from }) => {
                steps.push(format!("lineage? {commit} from {from}"));
                f.lineage = Some(w.lineage.clone());
            }
            Decision::Gather(Need::Signature(c)) => {
                steps.push(format!("signature? {c}"));
                f.signature = Some(w.signature.clone());
            }
            Decision::Gather(Need::Validity(c)) => {
                steps.push(format!("valid? {c}"));
                f.validity = Some(w.validity.get(&c).cloned().unwrap_or(Check::Pass));
            }
            Decision::Apply { commit, role } => {
                let a = w.apply.get(&commit).cloned().unwrap_or(Applied::ok(true));
                match role {
                    Purpose::Target => {
                        steps.push(format!("apply {commit}"));
                        f.apply = Some(a);
                    }
                    Purpose::Fallback => {
                        steps.push(format!("fall back to {commit}"));
                        f.fallback = Some(a);
                    }
                }
            }
            Decision::Gate { commit } => {
                steps.push(format!("gate {commit}"));
                f.gate = Some(w.gate.clone());
            }
            Decision::Record { commit, verdict, event, .. } => {
                steps.push(format!("record {commit} {} ({})", verdict.as_str(), event.as_str()));
                f.recorded = true;
            }
            Decision::Done(o) => return (steps, o),
        }
    }
    panic!("no end after 20 steps: {steps:?}");
}

fn facts(head: &str, last_good: Option<&str>, applied: Option<&str>) -> Facts {
    Facts {
        head: Some(head.into()),
        last_good: last_good.map(str::to_string),
        applied: applied.map(str::to_string),
        policy: Policy { gate: true, ..Default::default() },
        ..Default::default()
    }
}

fn steps(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn a_new_commit_is_applied_gated_and_recorded_good() {
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &World::default());
    assert_eq!(s, steps(&["verdict? c2", "lineage? c2 from c1", "valid? c2", "apply c2", "gate c2", "record c2 good (deployed)"]));
    assert_eq!((o.result, o.position, o.retry), (Ended::Converged, Position::AtTarget { commit: "c2".into() }, false));
}

#[test]
fn the_last_good_commit_again_is_neither_checked_nor_gated() {
    let (s, o) = converse(facts("c1", Some("c1"), Some("c1")), &World::default().applying("c1", Applied::ok(false)));
    assert_eq!(s, steps(&["verdict? c1", "apply c1"]));
    assert_eq!((o.result, o.error), (Ended::Unchanged, None));
}

/// Issue 12, observed 1: a crash loop carried past the gate by a quick follow-up commit. c2
/// (which makes web crash) was superseded; c3 changes only a timer, but its gate watches what
/// changed since the last good commit c1 — web included — and fails.
#[test]
fn a_quick_follow_up_commit_is_gated_on_everything_since_the_last_good_one() {
    let files: BTreeMap<String, (String, Role, bool)> = [
        ("agent-web.service".to_string(), ("web-c2".to_string(), Role::Service, true)),
        ("agent-tick.timer".to_string(), ("tick-c3".to_string(), Role::Timer, true)),
        ("agent-tick.service".to_string(), ("tickjob".to_string(), Role::Job, true)),
        ("agent-idle.service".to_string(), ("idle".to_string(), Role::Service, true)),
        ("agent-off.service".to_string(), ("off-c3".to_string(), Role::Service, false)),
    ]
    .into();
    let at_c1: BTreeMap<String, String> = [
        ("agent-web.service", "web-c1"),
        ("agent-tick.timer", "tick-c1"),
        ("agent-tick.service", "tickjob"),
        ("agent-idle.service", "idle"),
        ("agent-off.service", "off-c1"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // What c3 itself changed is only the timer; since c1, web changed too.
    assert_eq!(gate_watch(&files, Some(&at_c1)), ["agent-web.service"]);
    assert_eq!(changed_since_good(&files, Some(&at_c1)).len(), 3);
    // Nothing known of the last good state: every service of an enabled agent is watched.
    assert_eq!(gate_watch(&files, None), ["agent-idle.service", "agent-web.service"]);

    // c2's gate was cut short by c3: no verdict, and the next reconcile at once.
    let w = World::default().gate(GateOutcome::Superseded);
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(s.last().unwrap(), "gate c2");
    assert_eq!((o.result, o.rerun), (Ended::Superseded, true));
    // c3: web crash-loops during its gate: bad, and the host goes back to c1.
    let w = World::default().gate(GateOutcome::Unhealthy("agent-web.service is crash-looping (2 restarts since the deploy)".into()));
    let (s, o) = converse(facts("c3", Some("c1"), Some("c2")), &w);
    assert_eq!(s, steps(&["verdict? c3", "lineage? c3 from c2", "valid? c3", "apply c3", "gate c3", "record c3 bad (rolled-back)", "fall back to c1"]));
    assert_eq!(o.result, Ended::RolledBack);
    assert!(matches!(&o.position, Position::Held { target: Some(t), at: Some(a), .. } if t == "c3" && a == "c1"), "{o:?}");
    assert!(o.error.unwrap().contains("crash-looping"));
}

/// Issue 12, observed 2: a service that exits 0 one second after it starts.
#[test]
fn a_long_running_service_that_ends_fails_the_gate_even_with_status_0() {
    let base: BTreeMap<String, u32> = [("agent-web.service".to_string(), 0)].into();
    let now = |active: &str, sub: &str, restarts: u32, may_exit: bool| -> BTreeMap<String, UnitNow> {
        [("agent-web.service".to_string(), UnitNow { active_state: active.into(), sub_state: sub.into(), restarts, may_exit })].into()
    };
    assert_eq!(gate_check(&now("active", "running", 0, false), &base, false), None);
    assert_eq!(gate_check(&now("active", "running", 0, false), &base, true), None);
    let exited = gate_check(&now("inactive", "dead", 0, false), &base, false).unwrap();
    assert!(exited.contains("exited after the deploy (dead)"), "{exited}");
    assert!(gate_check(&now("failed", "failed", 0, false), &base, false).unwrap().contains("failed after the deploy"));
    assert!(gate_check(&now("active", "running", 1, false), &base, false).unwrap().contains("crash-looping (1 restarts"));
    assert!(gate_check(&now("activating", "auto-restart", 0, false), &base, false).unwrap().contains("crash-looping"));
    // Still starting when the grace period ends: not up.
    assert!(gate_check(&now("activating", "start", 0, false), &base, true).unwrap().contains("at the end of the grace period"));
    assert_eq!(gate_check(&now("activating", "start", 0, false), &base, false), None);
    // Only a service declared to exit may end.
    assert_eq!(gate_check(&now("inactive", "dead", 0, true), &base, true), None);
    assert!(declared_to_exit("[Service]\nType=oneshot\nRemainAfterExit=no\n"));
    assert!(declared_to_exit("[Service]\nType=exec\nRemainAfterExit=yes\n"));
    assert!(!declared_to_exit("[Unit]\nDescription=Type=oneshot\n[Service]\nType=exec\nRestart=on-failure\n"));

    // The gate's verdict: bad, rolled back; afterwards the bad head is held off, and the last
    // good commit (which does not have that service) is what gets repaired — not the bad one.
    let w = World::default().gate(GateOutcome::Unhealthy(exited.clone()));
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(&s[4..], steps(&["gate c2", "record c2 bad (rolled-back)", "fall back to c1"]));
    assert_eq!(o.result, Ended::RolledBack);
    let w = World::default().verdict("c2", Verdict::Bad, false).applying("c1", Applied::ok(false));
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(s, steps(&["verdict? c2", "fall back to c1"]));
    assert_eq!((o.result, o.retry), (Ended::Refused, false));
    assert!(o.error.unwrap().contains("is marked bad"));
}

/// Issue 12, observed 3: a failing `health.check` held the change back, and the commit was
/// marked good. It is `held`, reported once, never good; what it did not change is not blamed.
#[test]
fn a_held_back_health_check_makes_the_commit_held_not_good() {
    let applied = Applied::Done {
        changed: true,
        drift: false,
        held_back: vec!["agent-web.service: /bin/false exited with exit status: 1".into()],
        failed: vec![],
        elsewhere: vec![],
    };
    let w = World::default().applying("c2", applied.clone());
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(&s[3..], steps(&["apply c2", "gate c2", "record c2 held (held)"]));
    assert_eq!(o.result, Ended::Held);
    assert!(matches!(&o.position, Position::Held { at: Some(a), .. } if a == "c2"), "{o:?}");
    assert!(o.error.as_deref().unwrap().starts_with("a health.check held back its change: agent-web.service"), "{o:?}");
    assert!(!o.error.unwrap().contains("did not change"));
    // The next reconcile tries again (the check may pass now) and does not record it twice.
    let w = w.verdict("c2", Verdict::Held, false);
    let (s, o) = converse(facts("c2", Some("c1"), Some("c2")), &w);
    assert!(!s.iter().any(|s| s.starts_with("record")), "{s:?}");
    assert_eq!(o.result, Ended::Held);
    // Once the check passes: good.
    let w = w.applying("c2", Applied::ok(true));
    let (s, _) = converse(facts("c2", Some("c1"), Some("c2")), &w);
    assert_eq!(s.last().unwrap(), "record c2 good (deployed)");
}

/// Issue 12, observed 4: with the remote unreachable, the host is still converged (and
/// repaired) from the last fetched head, and the fetch failure is its own condition.
#[test]
fn an_unreachable_remote_does_not_stop_healing() {
    let mut f = facts("c1", Some("c1"), Some("c1"));
    f.fetch_error = Some("failed to connect to git.example.com".into());
    let w = World::default().applying("c1", Applied::Done { changed: true, drift: true, held_back: vec![], failed: vec![], elsewhere: vec![] });
    let (s, o) = converse(f.clone(), &w);
    assert_eq!(s, steps(&["verdict? c1", "apply c1"]));
    assert_eq!(o.result, Ended::Repaired);
    assert_eq!(o.position, Position::AtTarget { commit: "c1".into() }, "the fleet is where it should be");
    assert!(o.retry && o.error.unwrap().contains("failed to connect"));
    // A pin set during the outage is honoured from what was fetched, and gated.
    f.pin = Some(Pin { commit: "c0".into(), force: false });
    let (s, o) = converse(f.clone(), &World::default());
    assert_eq!(s, steps(&["verdict? c0", "valid? c0", "apply c0", "gate c0", "record c0 good (deployed)"]));
    assert_eq!(o.position, Position::AtTarget { commit: "c0".into() });
    // Never fetched at all: the last good commit is kept up.
    let f = Facts { head: None, fetch_error: Some("unreachable".into()), last_good: Some("c1".into()), ..Default::default() };
    let (s, o) = converse(f, &World::default());
    assert_eq!(s, steps(&["fall back to c1"]));
    assert_eq!((o.result, o.retry), (Ended::Error, true));
}

/// Issue 12, observed 5: rollback pitfalls. A pin is gated; a pin of a bad commit holds the
/// last good state unless forced; a forced one is tried (and gated) once.
#[test]
fn pins_are_gated_and_a_bad_one_is_tried_only_when_forced_and_only_once() {
    let pin = |force| {
        let mut f = facts("c3", Some("c2"), Some("c2"));
        f.pin = Some(Pin { commit: "c1".into(), force });
        f
    };
    // A good older commit: applied and gated like any deploy (no force-push check).
    let (s, o) = converse(pin(false), &World::default().verdict("c1", Verdict::Good, false));
    assert_eq!(s, steps(&["verdict? c1", "valid? c1", "apply c1", "gate c1", "record c1 good (deployed)"]));
    assert_eq!(o.position, Position::AtTarget { commit: "c1".into() });
    // It fails its gate: bad, back to the last good commit; the pin stays (and is reported).
    let (s, o) = converse(pin(false), &World::default().gate(GateOutcome::Unhealthy("agent-web.service failed after the deploy".into())));
    assert_eq!(&s[3..], steps(&["gate c1", "record c1 bad (rolled-back)", "fall back to c2"]));
    assert_eq!(o.result, Ended::RolledBack);
    // Bad, not forced: never applied.
    let w = World::default().verdict("c1", Verdict::Bad, false);
    let (s, o) = converse(pin(false), &w);
    assert_eq!(s, steps(&["verdict? c1", "fall back to c2"]));
    assert!(o.error.unwrap().contains("the pinned commit c1 is marked bad"));
    // Forced: applied and gated once…
    let (s, o) = converse(pin(true), &w.clone().gate(GateOutcome::Unhealthy("agent-web.service failed after the deploy".into())));
    assert_eq!(&s[2..], steps(&["apply c1", "gate c1", "record c1 bad (rolled-back)", "fall back to c2"]));
    assert_eq!(o.result, Ended::RolledBack);
    // …and after that try, held off like any bad commit.
    let (s, _) = converse(pin(true), &World::default().verdict("c1", Verdict::Bad, true));
    assert_eq!(s, steps(&["verdict? c1", "fall back to c2"]));
}

/// Issue 12, observed 7: an invalid commit sends exactly one event (`invalid`), and nothing on
/// the polls after; a held empty fleet sends `held`; a gate cut by a restart is gated again and
/// then notified, although nothing changed in that run.
#[test]
fn each_verdict_is_recorded_once_with_its_one_event() {
    let w = World::default().invalid("c2", "web.yaml:3:1: run: missing field `command`");
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(s, steps(&["verdict? c2", "lineage? c2 from c1", "valid? c2", "record c2 bad (invalid)", "fall back to c1"]));
    assert_eq!(o.result, Ended::Invalid);
    assert!(o.error.unwrap().contains("commit c2 is invalid: web.yaml:3:1"));
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w.verdict("c2", Verdict::Bad, false));
    assert_eq!(s, steps(&["verdict? c2", "fall back to c1"]));
    assert_eq!(o.result, Ended::Refused);

    // The empty-fleet guard refused the plan: held, nothing applied, the last good state kept.
    let w = World::default().applying("c2", Applied::Refused("the commit has no agent for this host; pass --allow-empty".into()));
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(&s[3..], steps(&["apply c2", "record c2 held (held)", "fall back to c1"]));
    assert_eq!(o.result, Ended::Held);
    let (s, _) = converse(facts("c2", Some("c1"), Some("c1")), &w.verdict("c2", Verdict::Held, false));
    assert!(!s.iter().any(|s| s.starts_with("record")), "{s:?}");

    // A restart during c2's gate: interrupted, no verdict; after the restart c2 is applied
    // again (nothing to change) and gated again, and its `deployed` is sent then.
    let (_, o) = converse(facts("c2", Some("c1"), Some("c1")), &World::default().gate(GateOutcome::Interrupted));
    assert_eq!((o.result, o.retry), (Ended::Interrupted, false));
    let (s, o) = converse(facts("c2", Some("c1"), Some("c2")), &World::default().applying("c2", Applied::ok(false)));
    assert_eq!(&s[2..], steps(&["apply c2", "gate c2", "record c2 good (deployed)"]));
    assert_eq!(o.result, Ended::Unchanged);
}

/// Refused heads (force-push, unsigned): recorded and notified once, held off on every poll.
#[test]
fn refused_heads_are_recorded_once_and_held_off() {
    let mut w = World { lineage: Lineage::Diverged, ..Default::default() };
    let (s, o) = converse(facts("x9", Some("c1"), Some("c1")), &w);
    assert_eq!(s, steps(&["verdict? x9", "lineage? x9 from c1", "record x9 refused (refused)", "fall back to c1"]));
    assert!(o.error.unwrap().contains("force-push?"));
    w = w.verdict("x9", Verdict::Refused, false);
    let (s, o) = converse(facts("x9", Some("c1"), Some("c1")), &w);
    assert_eq!(s, steps(&["verdict? x9", "lineage? x9 from c1", "fall back to c1"]));
    assert_eq!(o.result, Ended::Refused);
    // --allow-force-push: followed.
    let mut f = facts("x9", Some("c1"), Some("c1"));
    f.policy.allow_force_push = true;
    let (s, _) = converse(f, &w);
    assert_eq!(s.last().unwrap(), "record x9 good (deployed)");
    // Signed mode: an unsigned head is refused; the last good commit is not checked again.
    let mut f = facts("c2", Some("c1"), Some("c1"));
    f.policy.signatures = true;
    let w = World { signature: Check::Fail("commit c2: is not signed".into()), ..Default::default() };
    let (s, o) = converse(f.clone(), &w);
    assert_eq!(&s[2..], steps(&["signature? c2", "record c2 refused (refused)", "fall back to c1"]));
    assert_eq!(o.result, Ended::Refused);
    f.head = Some("c1".into());
    let (s, _) = converse(f, &w);
    assert_eq!(s, steps(&["verdict? c1", "apply c1"]));
}

/// Transient faults are retried with backoff and never a verdict; an apply that keeps
/// failing for the commit's own reasons is bad at the fifth try.
#[test]
fn transient_faults_retry_and_persistent_apply_failures_become_a_verdict() {
    let bus = Applied::Failed { why: "cannot reach the systemd system manager over D-Bus".into(), transient: true };
    let mut f = facts("c2", Some("c1"), Some("c1"));
    f.failed_attempts = 10;
    let (s, o) = converse(f, &World::default().applying("c2", bus));
    assert!(!s.iter().any(|s| s.starts_with("record")), "{s:?}");
    assert_eq!((o.result, o.retry), (Ended::Error, true));

    let disk = Applied::Failed { why: "/etc/systemd/journald.conf.d/fleetwright.conf: Is a directory".into(), transient: false };
    let w = World::default().applying("c2", disk.clone());
    for tries in 0..4 {
        let mut f = facts("c2", Some("c1"), Some("c1"));
        f.failed_attempts = tries;
        let (_, o) = converse(f, &w);
        assert_eq!((o.result, o.retry), (Ended::Error, true));
        assert!(o.error.unwrap().contains(&format!("attempt {} of 5", tries + 1)));
    }
    let mut f = facts("c2", Some("c1"), Some("c1"));
    f.failed_attempts = 4;
    let (s, o) = converse(f, &w);
    assert_eq!(&s[4..], steps(&["record c2 bad (rolled-back)", "fall back to c1"]));
    assert!(o.error.unwrap().contains("failed to apply 5 times in a row"));
    // The last good commit failing to apply is never a verdict on it.
    let mut f = facts("c1", Some("c1"), Some("c1"));
    f.failed_attempts = 9;
    let (s, o) = converse(f, &World::default().applying("c1", disk));
    assert_eq!(s, steps(&["verdict? c1", "apply c1"]));
    assert_eq!((o.result, o.retry), (Ended::Error, true));
    // A gate that cannot watch (the manager went away): retried, no verdict.
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &World::default().gate(GateOutcome::Unknown("no bus".into())));
    assert!(!s.iter().any(|s| s.starts_with("record")), "{s:?}");
    assert_eq!((o.result, o.retry), (Ended::Error, true));
    // The backoff doubles from 1 s up to 5 minutes.
    let mut b = None;
    let seq: Vec<u64> = (0..11)
        .map(|_| {
            b = Some(backoff(b));
            b.unwrap().as_secs()
        })
        .collect();
    assert_eq!(seq, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
}

/// The first commit ever has nothing to roll back to: bad, and the `failed` event says so.
#[test]
fn a_first_commit_that_fails_has_nothing_to_roll_back_to() {
    let w = World::default().gate(GateOutcome::Unhealthy("agent-web.service failed after the deploy".into()));
    let (s, o) = converse(facts("c1", None, None), &w);
    assert_eq!(s, steps(&["verdict? c1", "valid? c1", "apply c1", "gate c1", "record c1 bad (failed)"]));
    assert_eq!(o.result, Ended::Failed);
    assert!(o.error.unwrap().contains("no earlier good commit"));
    // A failing apply of a new commit with units changed since the last good one: bad at once.
    let w = World::default().applying(
        "c2",
        Applied::Done { changed: true, drift: false, held_back: vec![], failed: vec!["agent-web.service: start failed".into()], elsewhere: vec![] },
    );
    let (s, _) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(&s[3..], steps(&["apply c2", "record c2 bad (rolled-back)", "fall back to c1"]));
    // A failure of something the commit did not change is reported, not blamed.
    let w = World::default().applying(
        "c2",
        Applied::Done { changed: true, drift: false, held_back: vec![], failed: vec![], elsewhere: vec!["agent-flaky.service: start failed".into()] },
    );
    let (s, o) = converse(facts("c2", Some("c1"), Some("c1")), &w);
    assert_eq!(s.last().unwrap(), "record c2 good (deployed)");
    assert!(o.error.unwrap().contains("unchanged since the last good commit: agent-flaky.service"));
}
