//! Record selection from a response body: dotted JSON paths, keyed maps turned into rows,
//! context fields, cursor values and stop conditions. Pure functions over `serde_json::Value`.
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

/// The value at a dotted path (empty path = the value itself).
pub fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

pub fn at_str<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    at(v, &crate::config::validate_split(path))
}

/// Take the records at `path`; a map `{"<k>": [...]}` / `{"<k>": {...}}` becomes rows carrying
/// `map_key = k` when `map_key` is set. Missing or null selects nothing.
pub fn select(body: &Value, path: &[String], map_key: Option<&str>) -> Vec<Value> {
    let Some(v) = at(body, path) else {
        return Vec::new();
    };
    match (v, map_key) {
        (Value::Array(a), _) => a.clone(),
        (Value::Object(m), Some(key)) => {
            let mut out = Vec::new();
            for (k, inner) in m {
                match inner {
                    Value::Array(a) => {
                        for item in a {
                            out.push(with_field(item.clone(), key, Value::String(k.clone())));
                        }
                    }
                    other => out.push(with_field(other.clone(), key, Value::String(k.clone()))),
                }
            }
            out
        }
        (Value::Null, _) => Vec::new(),
        (other, None) => vec![other.clone()],
        (other, Some(_)) => vec![other.clone()],
    }
}

fn with_field(item: Value, key: &str, val: Value) -> Value {
    match item {
        Value::Object(mut m) => {
            m.insert(key.to_string(), val);
            Value::Object(m)
        }
        other => {
            let mut m = Map::new();
            m.insert(key.to_string(), val);
            m.insert("value".to_string(), other);
            Value::Object(m)
        }
    }
}

/// Add context fields to a record (an existing field of the same name is overwritten).
pub fn inject(record: &mut Value, ctx: &[(String, Value)]) {
    if let Value::Object(m) = record {
        for (k, v) in ctx {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// A record's cursor as a UTC instant: RFC 3339, zone-less (read in `tz`), a date, or unix seconds.
pub fn cursor_instant(v: &Value, tz: &Tz) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            let secs = if x > 1e11 { x / 1000.0 } else { x };
            DateTime::from_timestamp(secs as i64, 0)
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

/// `continue_if`: a JSON path that must be truthy, or `<path|literal> <op> <path|literal>`.
#[derive(Debug, Clone)]
pub struct Condition {
    left: String,
    op: Option<(String, String)>,
}

impl Condition {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        for op in ["<=", ">=", "==", "!=", "<", ">"] {
            if let Some((l, r)) = s.split_once(op) {
                let (l, r) = (l.trim(), r.trim());
                if l.is_empty() || r.is_empty() {
                    return Err(format!("`{s}`: both sides of `{op}` are needed"));
                }
                return Ok(Condition {
                    left: l.into(),
                    op: Some((op.into(), r.into())),
                });
            }
        }
        if s.is_empty() {
            return Err("empty condition".into());
        }
        Ok(Condition {
            left: s.into(),
            op: None,
        })
    }

    pub fn holds(&self, body: &Value) -> bool {
        let operand = |t: &str| -> Value {
            if let Ok(n) = t.parse::<f64>() {
                return serde_json::json!(n);
            }
            if t == "true" || t == "false" {
                return Value::Bool(t == "true");
            }
            if let Some(q) = t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                return Value::String(q.into());
            }
            at_str(body, t).cloned().unwrap_or(Value::Null)
        };
        let l = operand(&self.left);
        let Some((op, r)) = &self.op else {
            return truthy(&l);
        };
        let r = operand(r);
        let num = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        match (num(&l), num(&r)) {
            (Some(a), Some(b)) => match op.as_str() {
                "<" => a < b,
                "<=" => a <= b,
                ">" => a > b,
                ">=" => a >= b,
                "==" => a == b,
                _ => a != b,
            },
            _ => match op.as_str() {
                "==" => l == r,
                "!=" => l != r,
                _ => false,
            },
        }
    }
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        crate::config::validate_split(s)
    }

    #[test]
    fn keyed_maps_become_rows() {
        let b =
            json!({"data":{"statistics":{"u1":[{"hour":1},{"hour":2}],"u2":[{"hour":3}]},"users":{"u1":{"name":"a"}}}});
        let rows = select(&b, &p("data.statistics"), Some("user_id"));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2], json!({"hour":3,"user_id":"u2"}));
        let users = select(&b, &p("data.users"), Some("user_id"));
        assert_eq!(users, vec![json!({"name":"a","user_id":"u1"})]);
        assert_eq!(select(&json!([1, 2]), &[], None).len(), 2);
    }

    #[test]
    fn conditions() {
        let b = json!({"info":{"current_page":2,"total_pages":3,"more_records":false}});
        assert!(Condition::parse("info.current_page < info.total_pages")
            .unwrap()
            .holds(&b));
        assert!(!Condition::parse("info.more_records").unwrap().holds(&b));
        assert!(Condition::parse("info.current_page == 2").unwrap().holds(&b));
    }

    #[test]
    fn instants() {
        let tz: Tz = "Asia/Ho_Chi_Minh".parse().unwrap();
        let a = parse_instant("2026-04-16T11:40:26.000-03:00", &tz).unwrap();
        assert_eq!(a.to_rfc3339(), "2026-04-16T14:40:26+00:00");
        let b = parse_instant("2022-08-22T10:09:27", &tz).unwrap();
        assert_eq!(b.to_rfc3339(), "2022-08-22T03:09:27+00:00");
    }
}
