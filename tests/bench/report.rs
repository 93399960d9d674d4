//! The results table: the same rows as aligned text and as Markdown.

use std::time::Duration;

/// A measurement of one scenario at one N.
#[derive(Debug, Clone)]
pub enum M {
    Took(Duration),
    /// Not measured, and why (too slow, not applicable, an earlier step failed).
    Skipped(String),
    /// Ran, but did not do what it should have; the time is still shown.
    Failed(Duration, String),
}

impl M {
    pub fn secs(&self) -> Option<f64> {
        match self {
            M::Took(d) | M::Failed(d, _) => Some(d.as_secs_f64()),
            M::Skipped(_) => None,
        }
    }
    pub fn cell(&self) -> String {
        match self {
            M::Took(d) => dur(*d),
            M::Failed(d, _) => format!("{} (failed)", dur(*d)),
            M::Skipped(why) => format!("skipped: {why}"),
        }
    }
}

pub fn dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 100.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.0} s")
    }
}

/// Median, min and max of a few runs, as one cell.
pub fn runs(v: &[Duration]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let mut s = v.to_vec();
    s.sort();
    let med = s[s.len() / 2];
    if s.len() == 1 { dur(med) } else { format!("{} ({}–{})", dur(med), dur(s[0]), dur(s[s.len() - 1])) }
}

pub fn median(v: &[Duration]) -> Option<Duration> {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied()
}

/// A ratio with the target's verdict when there is one.
pub fn ratio(a: Option<f64>, b: Option<f64>, target: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            match target {
                Some(t) => format!("{r:.2}× {}", if r <= t { "✓" } else { "✗" }),
                None => format!("{r:.2}×"),
            }
        }
        _ => "—".into(),
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn text(&self) -> String {
        let cols = self.header.len();
        let width: Vec<usize> =
            (0..cols).map(|c| std::iter::once(&self.header).chain(&self.rows).map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
        let line = |r: &Vec<String>| {
            let mut s = String::new();
            for (c, w) in width.iter().enumerate() {
                let cell = r.get(c).map(String::as_str).unwrap_or("");
                let pad = w - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
                s.push_str("  ");
            }
            s.trim_end().to_string()
        };
        let mut out = line(&self.header) + "\n";
        out += &width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ");
        out += "\n";
        for r in &self.rows {
            out += &line(r);
            out += "\n";
        }
        out
    }

    pub fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = format!("| {} |\n", self.header.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | "));
        out += &format!("|{}\n", self.header.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "--:|" }).collect::<String>());
        for r in &self.rows {
            out += &format!("| {} |\n", r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
        }
        out
    }
}
