//! Instants as APIs write them (RFC 3339, zone-less in a declared zone, dates, unix seconds
//! or milliseconds), parsed to UTC keeping fractions of a second. Pure functions.
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// A record's cursor as a UTC instant: RFC 3339, zone-less (read in `tz`), a date, or unix seconds.
pub fn cursor_instant(v: &Value, tz: &Tz) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            let secs = if x > 1e11 { x / 1000.0 } else { x };
            DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
        }
        Value::String(s) => parse_instant(s, tz),
        _ => None,
    }
}

pub fn parse_instant(s: &str, tz: &Tz) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return tz.from_local_datetime(&n).earliest().map(|d| d.with_timezone(&Utc));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return tz
            .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
            .earliest()
            .map(|d| d.with_timezone(&Utc));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        let tz: Tz = "Asia/Ho_Chi_Minh".parse().unwrap();
        let a = parse_instant("2026-04-16T11:40:26.000-03:00", &tz).unwrap();
        assert_eq!(a.to_rfc3339(), "2026-04-16T14:40:26+00:00");
        let b = parse_instant("2022-08-22T10:09:27", &tz).unwrap();
        assert_eq!(b.to_rfc3339(), "2022-08-22T03:09:27+00:00");
        let c = cursor_instant(&serde_json::json!(1693526399.5), &tz).unwrap();
        assert_eq!(c.timestamp_millis(), 1693526399500);
    }
}

/// An instant as the run log and ledger write it: RFC 3339, microseconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
