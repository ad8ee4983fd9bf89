//! `[schedule]` of a pipeline file: when `ingest serve` pulls the source, and what runs after.
//!
//! ```toml
//! [schedule]
//! cron = "0 1 * * ? *"          # seed 004's EventBridge form, or "0 1 * * *" (5 fields),
//!                               # or 6 fields with seconds first ("*/5 * * * * *")
//! timezone = "America/Sao_Paulo" # default UTC
//! then = ["transform", "push milvus.clients"]   # or "transform silver.c2s_leads"
//! catch_up = "once"              # a run missed while the server was down: "once" or "skip"
//! ```
//!
//! Parsed by `croner`. An EventBridge expression (six fields, `?` in day-of-month or
//! day-of-week, a year last, weekdays 1 = Sunday … 7 = Saturday) is read as such; any other
//! six fields have seconds first.
use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleConfig {
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    then: Vec<String>,
    #[serde(default)]
    catch_up: CatchUp,
}

/// What the server does at start-up with a run due while it was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run it once (however many were missed).
    #[default]
    Once,
    /// Wait for the next one.
    Skip,
}

/// A step after the scheduled pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ingest transform` (every model, or the named ones and what they need).
    Transform(Vec<String>),
    /// `ingest push <target>` (`<source>` or `<source>.<sink>`).
    Push(String),
}

impl Step {
    /// The step as `ingest` arguments.
    pub fn args(&self) -> Vec<String> {
        match self {
            Step::Transform(models) => std::iter::once("transform".to_string()).chain(models.iter().cloned()).collect(),
            Step::Push(t) => vec!["push".into(), t.clone()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written.
    pub expr: String,
    pub cron: croner::Cron,
    pub tz: chrono_tz::Tz,
    pub then: Vec<Step>,
    pub catch_up: CatchUp,
}

impl Schedule {
    /// The first time strictly after `t` the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|d| d.with_timezone(&Utc))
    }
}

/// Parse a `[schedule]` table; an error names the field (`cron`, `timezone`, `then`, …).
pub fn parse(v: &toml::Value) -> Result<Schedule, (&'static str, String)> {
    let c: ScheduleConfig = v.clone().try_into().map_err(|e: toml::de::Error| ("schedule", e.message().to_string()))?;
    let cron = cron(&c.cron).map_err(|m| ("cron", m))?;
    let tz = match c.timezone.as_deref() {
        None => chrono_tz::UTC,
        Some(z) => z.parse().map_err(|_| ("timezone", format!("`{z}` is not an IANA time zone (e.g. America/Sao_Paulo, UTC)")))?,
    };
    let then = c
        .then
        .iter()
        .map(|s| {
            let words: Vec<&str> = s.split_whitespace().collect();
            match words.as_slice() {
                ["transform", models @ ..] if models.iter().all(|m| !m.starts_with('-')) => Ok(Step::Transform(models.iter().map(|m| m.to_string()).collect())),
                ["push", t] => Ok(Step::Push(t.to_string())),
                _ => Err(("then", format!("`{s}`: expected \"transform [<schema.table> …]\" or \"push <source>[.<sink>]\""))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Schedule { expr: c.cron, cron, tz, then, catch_up: c.catch_up })
}

/// A cron expression: 5 fields, 6 with seconds first, or EventBridge's 6 (see the module doc).
pub fn cron(expr: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let eventbridge = fields.len() == 6 && (fields[2] == "?" || fields[4] == "?");
    let parsed = if eventbridge {
        let quartz = format!("0 {expr}");
        CronParser::builder().seconds(Seconds::Required).year(Year::Required).alternative_weekdays(true).build().parse(&quartz)
    } else if fields.len() == 5 || fields.len() == 6 {
        CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build().parse(expr)
    } else {
        return Err(format!(
            "`{expr}`: expected 5 fields (minute hour day month weekday), 6 with seconds first, or EventBridge's 6 (minute hour day month weekday year, `?` in day or weekday)"
        ));
    };
    let c = parsed.map_err(|e| format!("`{expr}`: {e}"))?;
    // A pattern that never fires (31 February) is an error too.
    c.find_next_occurrence(&Utc::now(), false).map_err(|e| format!("`{expr}` never fires: {e}"))?;
    Ok(c)
}

/// The `[schedule]` of every pipeline file in `dir` that has one, by source, read from the
/// files alone (no secret or environment needed); an invalid one is an error naming the
/// file, line and field.
pub fn load_all(dir: &std::path::Path) -> crate::error::Result<Vec<(String, Schedule)>> {
    let mut out = Vec::new();
    for source in super::list_sources(dir) {
        let file = dir.join(format!("{source}.toml"));
        let shown = file.display().to_string();
        let raw = std::fs::read_to_string(&file).map_err(|e| crate::error::Error::config(&shown, None, None, e.to_string()))?;
        // As the declarations are read: an unset `${env:…}` elsewhere in the file is no concern here.
        let (text, v) = super::interp::offline(&shown, &raw)?;
        if let Some(t) = v.get("schedule") {
            let s = parse(t).map_err(|(field, m)| {
                let path: Vec<&str> = if field == "schedule" { vec!["schedule"] } else { vec!["schedule", field] };
                crate::error::Error::config(&shown, super::interp::line_of(&text, &path), Some(&path.join(".")), m)
            })?;
            out.push((source, s));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn eventbridge_five_and_six_field_forms() {
        let t = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let next = |e: &str| cron(e).unwrap().find_next_occurrence(&t, false).unwrap();
        // Seed 004's default: 01:00 every day.
        assert_eq!(next("0 1 * * ? *"), Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap());
        assert_eq!(next("0 1 * * *"), Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap());
        assert_eq!(next("*/5 * * * * *"), Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 5).unwrap());
        // EventBridge weekdays: 2 = Monday (2026-12-07 is a Monday).
        assert_eq!(next("30 8 ? * 2 *"), Utc.with_ymd_and_hms(2026, 12, 7, 8, 30, 0).unwrap());
        for bad in ["", "0 1 * *", "61 * * * *", "0 1 * * ? * *", "0 0 31 2 ? *", "0 1 * * mon-xyz"] {
            assert!(cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedule_fields() {
        let v: toml::Value = toml::from_str("cron = \"0 1 * * ? *\"\ntimezone = \"America/Sao_Paulo\"\nthen = [\"transform\", \"push milvus.clients\"]\ncatch_up = \"skip\"").unwrap();
        let s = parse(&v).unwrap();
        assert_eq!(s.then, vec![Step::Transform(vec![]), Step::Push("milvus.clients".into())]);
        assert_eq!(s.catch_up, CatchUp::Skip);
        // 01:00 in São Paulo is 04:00 UTC.
        assert_eq!(s.next_after(Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()), Some(Utc.with_ymd_and_hms(2026, 12, 7, 4, 0, 0).unwrap()));
        for (text, field) in [("cron = \"x\"", "cron"), ("cron = \"0 1 * * *\"\ntimezone = \"Mars/Base\"", "timezone"), ("cron = \"0 1 * * *\"\nthen = [\"pull\"]", "then"), ("cron = \"0 1 * * *\"\nevery = 1", "schedule")] {
            let v: toml::Value = toml::from_str(text).unwrap();
            assert_eq!(parse(&v).unwrap_err().0, field, "{text}");
        }
    }
}
