//! Date windows between `--from` and `--to`, their wire formats (unix seconds, strftime in a
//! declared zone, Pancake-style ranges) and the file date they land under. Pure functions.
use crate::config::{Window, WireFormat};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

pub fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
}

/// Align `t` down to a multiple of `size` counted from the Unix epoch (UTC midnight for days).
pub fn align_down(t: DateTime<Utc>, size: Duration) -> DateTime<Utc> {
    let s = size.num_seconds().max(1);
    let ts = t.timestamp();
    DateTime::from_timestamp(ts - ts.rem_euclid(s), 0).unwrap()
}

/// Windows of `size` covering `[from, to)`, skipping those that start at or after `now`.
pub fn plan(from: DateTime<Utc>, to: DateTime<Utc>, size: Duration, now: DateTime<Utc>) -> Vec<Span> {
    let mut out = Vec::new();
    let mut s = align_down(from, size);
    while s < to && s < now {
        out.push(Span {
            start: s,
            end: s + size,
        });
        s += size;
    }
    out
}

pub fn format_instant(t: DateTime<Utc>, f: &WireFormat, tz: &Tz) -> String {
    match f {
        WireFormat::Unix => t.timestamp().to_string(),
        WireFormat::UnixMs => t.timestamp_millis().to_string(),
        WireFormat::Strftime(p) => t.with_timezone(tz).format(p).to_string(),
    }
}

/// `t` cut down to what `f` can express (whole seconds, whole milliseconds; strftime formats
/// without `%f`/`%.f` are taken as whole seconds).
pub fn floor_to_format(t: DateTime<Utc>, f: &WireFormat) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    let unit = match f {
        WireFormat::UnixMs => 1_000,
        WireFormat::Strftime(p) if p.contains("%f") || p.contains("%.f") || p.contains("%.3f") => 1,
        _ => 1_000_000,
    };
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(unit)).unwrap_or(t)
}

/// The query parameters a window adds to a request.
pub fn params(w: &Window, span: Span) -> Vec<(String, String)> {
    let end = if w.inclusive_end {
        span.end - Duration::seconds(1)
    } else {
        span.end
    };
    let (s, e) = (
        format_instant(span.start, &w.format, &w.tz),
        format_instant(end, &w.format, &w.tz),
    );
    let mut out = Vec::new();
    if let Some(p) = &w.since {
        out.push((p.clone(), s.clone()));
    }
    if let Some(p) = &w.until {
        out.push((p.clone(), e.clone()));
    }
    if let Some(p) = &w.range {
        out.push((p.clone(), format!("{s}{}{e}", w.separator)));
    }
    out
}

/// The `{date}` a window's file is named by: the day, or day and time for sub-day windows.
pub fn file_date(span: Span, size: Duration) -> String {
    if size.num_seconds() % 86_400 == 0 {
        span.start.format("%Y-%m-%d").to_string()
    } else {
        span.start.format("%Y-%m-%dT%H%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pancake_date_range_in_ho_chi_minh() {
        let w = Window {
            size: Duration::days(1),
            since: None,
            until: None,
            range: Some("date_range".into()),
            separator: " - ".into(),
            format: WireFormat::Strftime("%d/%m/%Y %H:%M:%S".into()),
            tz: "Asia/Ho_Chi_Minh".parse().unwrap(),
            inclusive_end: true,
            lookback: Duration::zero(),
        };
        let d = day_start(NaiveDate::from_ymd_opt(2023, 9, 1).unwrap());
        let p = params(
            &w,
            Span {
                start: d,
                end: d + Duration::days(1),
            },
        );
        assert_eq!(
            p,
            vec![("date_range".into(), "01/09/2023 07:00:00 - 02/09/2023 06:59:59".into())]
        );
    }

    #[test]
    fn plans_days_and_stops_at_now() {
        let d = day_start(NaiveDate::from_ymd_opt(2023, 9, 1).unwrap());
        let v = plan(
            d + Duration::hours(5),
            d + Duration::days(7),
            Duration::days(1),
            d + Duration::days(3) + Duration::hours(1),
        );
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].start, d);
        assert_eq!(file_date(v[3], Duration::days(1)), "2023-09-04");
    }
}
