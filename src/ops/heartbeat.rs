//! The heartbeat check: a long-running agent touches a file; when it is older than `maxAge`
//! while the service has been up longer than that, the service is hung: restart it and say so
//! (in the journal, and in `<state>/health/<agent>.json`, which `status` shows).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::host::systemd::{Systemd, prop};
use crate::types::Scope;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fresh, or the service is not (long enough) up to judge.
    Fine(String),
    /// Stale: restarted.
    Restarted(String),
}

/// How old the heartbeat file is. This check runs as root on a path the agent chose: it is
/// reached by a walk that follows no symlink ([`crate::ops::walk`]), and a symlink in its place
/// counts as its own age, so the agent cannot learn anything of a file it could not stat itself.
/// A path the walk refuses counts as missing.
fn age(file: &Path, now: SystemTime) -> Option<Duration> {
    let (parent, name) = (file.parent()?, file.file_name()?);
    let dir = crate::ops::walk::open_dir(parent, crate::ops::walk::Trust::Owner).ok()?;
    let st = dir.stat(name).ok()??;
    let modified = UNIX_EPOCH + Duration::new(u64::try_from(st.st_mtime).ok()?, u32::try_from(st.st_mtime_nsec).ok()?);
    Some(now.duration_since(modified).unwrap_or_default())
}

pub async fn check(agent: &str, file: &Path, max_age: Duration, unit: &str, state_dir: &Path, scope: Scope) -> Result<Verdict, Box<dyn std::error::Error>> {
    let sd = Systemd::connect(scope, None).await?;
    let props = sd.properties(unit, "org.freedesktop.systemd1.Unit").await?;
    let active = prop::<String>(&props, "ActiveState").unwrap_or_default();
    if active != "active" {
        return Ok(Verdict::Fine(format!("{unit} is {active}: nothing to check")));
    }
    let now = SystemTime::now();
    let entered = prop::<u64>(&props, "ActiveEnterTimestamp").unwrap_or(0);
    let up_for = now.duration_since(UNIX_EPOCH + Duration::from_micros(entered)).unwrap_or_default();
    let file_age = age(file, now);
    let stale = file_age.is_none_or(|a| a > max_age);
    if !stale {
        mark_recovered(state_dir, agent)?;
    }
    if !stale || up_for <= max_age {
        let a = file_age.map(|a| format!("{:.1}s old", a.as_secs_f64())).unwrap_or_else(|| "missing".into());
        return Ok(Verdict::Fine(format!("{} is {a}; {unit} up {:.0}s", file.display(), up_for.as_secs_f64())));
    }
    let why = match file_age {
        Some(a) => format!("{} was last touched {:.0}s ago (maxAge {:.0}s)", file.display(), a.as_secs_f64(), max_age.as_secs_f64()),
        None => format!("{} does not exist after {:.0}s up", file.display(), up_for.as_secs_f64()),
    };
    let results = sd.run_jobs("restart", &[unit]).await?;
    let ok = results.iter().all(|r| r.result == "done");
    let path = crate::layout::StateLayout::new(state_dir).health(agent);
    let prev: serde_json::Value = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let record = serde_json::json!({
        "agent": agent,
        "unit": unit,
        "restarts": prev["restarts"].as_u64().unwrap_or(0) + 1,
        "lastRestart": crate::host::now_rfc3339(),
        "reason": why,
        "restartResult": results.first().map(|r| r.result.clone()),
        "recoveredAt": null,
    });
    fleetwright_sys::fsutil::write_atomic(&path, serde_json::to_vec_pretty(&record)?.as_slice(), 0o644)?;
    if !ok {
        return Err(format!("heartbeat stale ({why}) and the restart of {unit} failed: {results:?}").into());
    }
    Ok(Verdict::Restarted(format!("heartbeat stale: {why}; restarted {unit}")))
}

/// A fresh heartbeat after a restart: the record says when the agent recovered, so that
/// `status` stops reporting the old stale heartbeat as a problem.
fn mark_recovered(state_dir: &Path, agent: &str) -> Result<(), Box<dyn std::error::Error>> {
    let path = crate::layout::StateLayout::new(state_dir).health(agent);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes)?;
    if v.get("recoveredAt").is_some_and(|r| !r.is_null()) {
        return Ok(());
    }
    v["recoveredAt"] = serde_json::Value::String(crate::host::now_rfc3339());
    fleetwright_sys::fsutil::write_atomic(&path, serde_json::to_vec_pretty(&v)?.as_slice(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod age_tests {
    use super::*;

    #[test]
    fn a_symlinked_heartbeat_tells_nothing_of_its_target() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        // A root-only file, untouched for a day; the agent links its heartbeat to it.
        let target = tmp.path().join("root-only");
        std::fs::write(&target, "x").unwrap();
        std::fs::File::options().write(true).open(&target).unwrap().set_modified(now - Duration::from_secs(86_400)).unwrap();
        assert!(age(&target, now).unwrap() >= Duration::from_secs(86_000));
        let link = tmp.path().join("hb");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // The link's own age (just made), not the target's.
        assert!(age(&link, now).unwrap_or_default() < Duration::from_secs(60));
        // Through a symlinked directory: refused, counted as missing.
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("dirlink")).unwrap();
        assert_eq!(age(&tmp.path().join("dirlink").join("root-only"), now), None);
    }
}
