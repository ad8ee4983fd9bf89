//! JSON paths over `serde_json::Value` and `continue_if` conditions: the bottom layer shared by
//! config (validation), pull (record selection, pagination) and lake. Pure functions.
use serde_json::Value;

pub mod raw;
pub mod scan;
pub mod template;

/// Split a dotted path into segments. A segment holding dots is quoted or bracketed:
/// `"@odata.nextLink"`, `['@odata.nextLink']`, `a.["b.c"].d`.
pub fn split_path(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            '"' | '\'' if cur.is_empty() => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    cur.push(d);
                }
                out.push(std::mem::take(&mut cur));
            }
            '[' if cur.is_empty() => {
                let mut inner = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    inner.push(d);
                }
                let t = inner.trim();
                let t = t
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .or_else(|| t.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                    .unwrap_or(t);
                out.push(t.to_string());
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

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

/// Mutable [`at`].
pub fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

pub fn at_str<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    at(v, &split_path(path))
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

/// A value as request/key text: a string without its quotes, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
    fn quoted_segments_hold_dots() {
        let b = json!({"@odata.nextLink": "u", "a": {"b.c": {"d": 1}}});
        assert_eq!(split_path("\"@odata.nextLink\""), vec!["@odata.nextLink"]);
        assert_eq!(at_str(&b, "['@odata.nextLink']"), Some(&json!("u")));
        assert_eq!(at_str(&b, "a.[\"b.c\"].d"), Some(&json!(1)));
        assert_eq!(split_path("data.statistics"), vec!["data", "statistics"]);
    }
}
