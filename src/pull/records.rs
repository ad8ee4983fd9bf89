//! Record selection from a response body: keyed maps turned into rows, context fields.
//! Pure functions over `serde_json::Value` (paths: [`crate::json`]).
use crate::json::at;
use serde_json::{Map, Value};

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

/// The records at `path` as [`select`] would return them, borrowed when they are a plain
/// array (the common case: no copy), built otherwise.
pub fn view<'a>(body: &'a Value, path: &[String], map_key: Option<&str>) -> std::borrow::Cow<'a, [Value]> {
    match (at(body, path), map_key) {
        (Some(Value::Array(a)), _) => std::borrow::Cow::Borrowed(a.as_slice()),
        _ => std::borrow::Cow::Owned(select(body, path, map_key)),
    }
}

/// [`select`], moving a plain array out of `body` instead of copying it (the caller no longer
/// needs it there).
pub fn take(body: &mut Value, path: &[String], map_key: Option<&str>) -> Vec<Value> {
    match crate::json::at_mut(body, path) {
        Some(Value::Array(a)) => std::mem::take(a),
        _ => select(body, path, map_key),
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

/// The context fields as JSON object members, `"k":v,…`, to splice into records' bytes.
pub fn members(ctx: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (k, v) in ctx {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out
}

/// Append the record `r` (JSON as the API sent it) to `out` on one line, with the context
/// [`members`] added the way [`inject`] adds them. A record that already holds a context field
/// (`collides`) is rebuilt as a value instead, so the field is overwritten, not repeated.
pub fn splice(out: &mut String, r: &str, members: &str, collides: bool, ctx: &[(String, Value)]) -> serde_json::Result<()> {
    if collides {
        let mut v: Value = serde_json::from_str(r)?;
        inject(&mut v, ctx);
        out.push_str(&serde_json::to_string(&v)?);
        return Ok(());
    }
    let start = out.len();
    // Outside strings (where JSON forbids raw control characters) line breaks are whitespace.
    if memchr::memchr2(b'\n', b'\r', r.as_bytes()).is_some() {
        r.split(['\n', '\r']).for_each(|part| out.push_str(part));
    } else {
        out.push_str(r);
    }
    let is_ws = |c: Option<char>| matches!(c, Some(' ' | '\t'));
    if members.is_empty() || !out[start..].starts_with('{') {
        return Ok(());
    }
    while is_ws(out.chars().next_back()) {
        out.pop();
    }
    out.pop(); // the closing brace
    while is_ws(out.chars().next_back()) {
        out.pop();
    }
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(members);
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        crate::json::split_path(s)
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
        let mut body = json!({"data": {"items": [{"a": 1}, {"a": 2}]}, "next": "x"});
        assert_eq!(view(&body, &p("data.items"), None).len(), 2);
        assert_eq!(view(&b, &p("data.statistics"), Some("user_id")).len(), 3);
        assert_eq!(take(&mut body, &p("data.items"), None), vec![json!({"a": 1}), json!({"a": 2})]);
        assert_eq!(body, json!({"data": {"items": []}, "next": "x"}));
    }

    #[test]
    fn splicing_adds_context_as_inject_does() {
        let ctx = vec![("page_id".to_string(), json!("1001")), ("n".to_string(), json!(2))];
        let m = members(&ctx);
        let line = |r: &str, collides: bool| {
            let mut out = String::new();
            splice(&mut out, r, &m, collides, &ctx).unwrap();
            out
        };
        let injected = |r: &str| {
            let mut v: Value = serde_json::from_str(r).unwrap();
            inject(&mut v, &ctx);
            v
        };
        for r in ["{\"a\": 1,\n \"b\": [1, 2]\r\n}", "{ }", "{\"s\": \"x}\" }", "[1, 2]", "\"v\""] {
            let out = line(r, false);
            assert!(!out.contains('\n'), "{out}");
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), injected(r), "{r}");
        }
        // A record holding a context field is rebuilt: the field is overwritten, not repeated.
        let r = "{\"page_id\": \"other\", \"a\": 1}";
        assert_eq!(line(r, true), serde_json::to_string(&injected(r)).unwrap());
        assert_eq!(line("{\"a\": 1}", false), "{\"a\": 1,\"page_id\":\"1001\",\"n\":2}");
    }
}
