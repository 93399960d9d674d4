//! Views of a fleet that touch no host: its schedule, its inventory, the JSON Schema, and the
//! binary's own completions and man page.

use std::time::Duration;

use super::args::{Args, Globals, SourceArgs};
use super::{Error, Outcome, json, load_commit};

pub fn schedule(g: &Globals, src: &SourceArgs, window: Duration, at: Option<i64>, columns: usize, tz: Option<&str>, as_json: bool) -> Result<Outcome, Error> {
    let (_, fleet) = load_commit(g, src, &src.rev, false)?;
    let from = at.unwrap_or_else(|| jiff::Timestamp::now().as_second());
    // The zones from the zone database, here at the edge: the schedule itself is pure.
    let (local, local_name) = match tz {
        Some(name) => (jiff::tz::TimeZone::get(name).map_err(|e| Error::failed(format!("--tz {name}: {e}")))?, name.to_string()),
        None => {
            let z = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
            let name = z.iana_name().unwrap_or("local time").to_string();
            (z, name)
        }
    };
    let timers = fleetwright::schedule::timers(&fleet, g.host.as_deref(), &g.host_config().render_ctx_for(&fleet), &fleetwright::host::zones::Tzdata);
    let named = fleetwright::schedule::named_zones(&timers).into_iter().filter_map(|n| jiff::tz::TimeZone::get(&n).ok().map(|z| (n, z))).collect();
    let zones = fleetwright::schedule::Zones { local, local_name, named };
    let s = fleetwright::schedule::compute(&timers, from, window.as_secs() as i64, &zones);
    if as_json {
        println!("{}", json(&s)?);
    } else {
        print!("{}", fleetwright::schedule::render_text(&s, columns.clamp(12, 400)));
    }
    Ok(Outcome::Done)
}

pub fn inventory(g: &Globals, src: &SourceArgs) -> Result<Outcome, Error> {
    let (files, fleet) = load_commit(g, src, &src.rev, false)?;
    print!("{}", fleetwright::catalog::render_markdown(&fleet, Some(&files.commit)));
    Ok(Outcome::Done)
}

pub fn schema() -> Result<Outcome, Error> {
    println!("{}", json(&fleetwright::spec::json_schema_any())?);
    Ok(Outcome::Done)
}

pub fn completions(shell: clap_complete::Shell) -> Result<Outcome, Error> {
    clap_complete::generate(shell, &mut <Args as clap::CommandFactory>::command(), "fleetwright", &mut std::io::stdout());
    Ok(Outcome::Done)
}

pub fn man() -> Result<Outcome, Error> {
    clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).render(&mut std::io::stdout()).map_err(Error::failed)?;
    Ok(Outcome::Done)
}
