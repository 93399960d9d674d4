//! TEMPORARY placeholder, replaced by the real OnCalendar parser before this lands.
pub struct CalendarSpec(String);
impl CalendarSpec {
    pub fn normalized(&self) -> String { self.0.clone() }
}
pub fn parse_calendar(expr: &str) -> Result<CalendarSpec, String> {
    if expr.trim().is_empty() { return Err("empty".into()) }
    Ok(CalendarSpec(expr.to_string()))
}
pub fn cron_to_calendar(cron: &str) -> Result<String, String> { Err(format!("cron {cron} not yet")) }
