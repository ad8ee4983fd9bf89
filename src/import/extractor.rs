//! Seed 004's extractor config (one JSON document: `name`, `auth`, `extractions[]`) read into
//! the text of one pipeline file and one SQL model per extraction. Every part of the config
//! the seed documents maps to something `ingest` runs; anything else is an error naming its
//! JSON path and line, found before a file is written.
//!
//! | seed 004 | ingest |
//! |---|---|
//! | `auth.refresh_token` (`endpoint`, `response_token_key`) | `[source.auth] type = "refresh"` |
//! | `auth.access_token` without a refresh | `bearer` / `query` auth with its `${secret:…}` |
//! | `${self::auth.access_token}` in a header / query param | where the auth puts the token (`header` + `prefix`, or `param`) |
//! | `${secret::name}` | `${secret:NAME}` |
//! | `$(last::field, <instant>)` as a whole header / param value | `incremental` on `field` (bound in that header / param, `start` = the default) |
//! | `$(last::field, default)` elsewhere | `${last:field:-default}` (the previous run's last record) |
//! | `${self::path}` (any other) | the config's value at `path`, written in |
//! | `endpoint.url` | `base_url` = `${env:<NAME>_BASE_URL:-<its origin>}` + the stream's `path` |
//! | `data_key` | `records` |
//! | `pagination` sequential / link | `page_number` (`start`, `step`, `continue_if`, …) / `next_link` |
//! | `data_schema` | `[streams.<x>.schema]` (every field, so absent ones are NULL columns) and the model's SELECT, columns in the seed's order |
//! | `transformations` | SQL functions in the SELECT, highest `priority` first (README's table) |
//! | `mapping_fetch` | `details` (its URL may be on another host; the item's values go in as `{record.<field>}`, an optional `data_key` picks the detail in the answer) + a join in the model, columns under `prefix` |
//! | `format`, `output_params`, `s3_destiny` | the model's `-- output:` (`to` = `${env:<NAME>_OUTPUT_URL:-s3://<bucket>}/<folder>`) |
use super::json_at;
use super::refs::{self, Kind, Piece};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write as _;

/// What an import writes: `pipelines/<source>.toml` and `sql/<rel>` files.
#[derive(Debug)]
pub struct Plan {
    pub source: String,
    pub pipeline: String,
    /// (path under the SQL folder, text)
    pub models: Vec<(String, String)>,
}

/// Seed 004's default output bucket (`s3_destiny.bucket`).
const DEFAULT_BUCKET: &str = crate::transform::model::DEFAULT_OUTPUT_BUCKET;

struct Cx<'a> {
    file: &'a str,
    lines: HashMap<String, usize>,
    root: &'a Value,
    /// `<NAME>` of `<NAME>_BASE_URL`.
    env: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A TOML string literal (also a quoted key).
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be.
fn key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        q(s)
    }
}

/// A SQL identifier, quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `Zoho Tickets` → `zoho_tickets`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Where the token goes.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Header { name: String, prefix: String },
    Param { name: String },
}

/// A header or query value as `ingest` writes it.
enum Val {
    Text(String),
    Token(Place),
    /// `$(last::field, default)` as the whole value, with an instant (or no) default.
    Cursor { field: String, start: Option<String> },
}

/// Which references a string may hold where it is.
#[derive(Clone, Copy)]
struct Allow {
    token: bool,
    last: bool,
}
const STATIC: Allow = Allow { token: false, last: false };

impl Cx<'_> {
    fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }

    fn err(&self, path: &str, msg: impl Into<String>) -> Error {
        Error::config(self.file, self.line(path), Some(if path.is_empty() { "(the document)" } else { path }), msg)
    }

    /// `v` as an object holding only `allowed` keys.
    fn obj<'v>(&self, v: &'v Value, path: &str, allowed: &[&str]) -> Result<&'v Map<String, Value>> {
        let m = v.as_object().ok_or_else(|| self.err(path, "expected an object"))?;
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(&join(path, k), format!("not a field seed 004 documents here (fields: {})", allowed.join(", "))));
        }
        Ok(m)
    }

    fn opt_str<'v>(&self, m: &'v Map<String, Value>, path: &str, k: &str) -> Result<Option<&'v str>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(&join(path, k), "expected a string")),
        }
    }

    fn req_str<'v>(&self, m: &'v Map<String, Value>, path: &str, k: &str) -> Result<&'v str> {
        self.opt_str(m, path, k)?.filter(|s| !s.trim().is_empty()).ok_or_else(|| self.err(&join(path, k), "required (a non-empty string)"))
    }

    /// A number, or a string holding one (the seed writes `"<number>"`).
    fn opt_int(&self, m: &Map<String, Value>, path: &str, k: &str) -> Result<Option<i64>> {
        let bad = || self.err(&join(path, k), "expected a whole number");
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    fn opt_bool(&self, m: &Map<String, Value>, path: &str, k: &str) -> Result<Option<bool>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => Ok(Some(s.eq_ignore_ascii_case("true"))),
            Some(_) => Err(self.err(&join(path, k), "expected true or false")),
        }
    }

    /// A scalar (query parameter, header) as text.
    fn scalar(&self, v: &Value, path: &str) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.err(path, "expected a string, number or boolean")),
        }
    }

    /// Translate one config string's references (see the module table).
    fn value(&self, s: &str, path: &str, allow: Allow, place: Option<Place>) -> Result<Val> {
        let pieces = refs::pieces(s).map_err(|m| self.err(path, m))?;
        match pieces.as_slice() {
            [Piece::Ref { kind: Kind::Last, target, default }] if allow.last => {
                let instant = default.as_deref().is_none_or(|d| crate::time::parse_instant(d, &chrono_tz::UTC).is_some());
                if instant {
                    return Ok(Val::Cursor { field: target.clone(), start: default.clone() });
                }
            }
            [pre @ .., Piece::Ref { kind: Kind::SelfRef, target, default: _ }] if target == "auth.access_token" && pre.len() <= 1 => {
                let prefix = match pre {
                    [Piece::Text(t)] => t.clone(),
                    [] => String::new(),
                    _ => return Err(self.err(path, "the token is written after plain text only")),
                };
                return match (allow.token, place) {
                    (true, Some(Place::Header { name, .. })) => Ok(Val::Token(Place::Header { name, prefix })),
                    (true, Some(Place::Param { name })) if prefix.is_empty() => Ok(Val::Token(Place::Param { name })),
                    (true, Some(Place::Param { .. })) => Err(self.err(path, "a token in a query parameter is the whole value")),
                    _ => Err(self.err(path, "`self::auth.access_token` goes in an extraction's header or query parameter")),
                };
            }
            _ => {}
        }
        let mut out = String::new();
        for p in &pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Ref { kind: Kind::Secret, target, default } => {
                    if default.is_some() {
                        return Err(self.err(path, format!("`secret::{target}` with a default: a secret that is missing stops the run (exit 2), it is never replaced")));
                    }
                    write!(out, "${{secret:{}}}", refs::secret_name(target)).unwrap();
                }
                Piece::Ref { kind: Kind::SelfRef, target, .. } if target == "auth.access_token" => {
                    return Err(self.err(path, "`self::auth.access_token` is the whole value of a header or query parameter (after a prefix like `Bearer `)"));
                }
                Piece::Ref { kind: Kind::SelfRef, target, default } => {
                    let segs: Vec<String> = target.split('.').map(str::to_string).collect();
                    match (crate::json::at(self.root, &segs), default) {
                        (Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))), _) => out.push_str(&crate::json::text(v)),
                        (_, Some(d)) => out.push_str(d),
                        _ => return Err(self.err(path, format!("`self::{target}`: the config has no value there and the reference no default"))),
                    }
                }
                Piece::Ref { kind: Kind::Last, target, default } => {
                    if !allow.last {
                        return Err(self.err(path, format!("`last::{target}` is read only in an extraction's endpoint")));
                    }
                    match default {
                        Some(d) => write!(out, "${{last:{target}:-{d}}}").unwrap(),
                        None => write!(out, "${{last:{target}}}").unwrap(),
                    }
                }
            }
        }
        Ok(Val::Text(out))
    }

    /// A string that may hold only static references (secrets, self values).
    fn text(&self, s: &str, path: &str) -> Result<String> {
        match self.value(s, path, STATIC, None)? {
            Val::Text(t) => Ok(t),
            _ => Err(self.err(path, "a reference that does not belong here")),
        }
    }

    /// A JSON body as an inline TOML value, its strings translated.
    fn body(&self, v: &Value, path: &str, allow_last: bool) -> Result<String> {
        Ok(match v {
            Value::Null => return Err(self.err(path, "a null in a body has no TOML form; leave the field out")),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => match self.value(s, path, Allow { token: false, last: allow_last }, None)? {
                Val::Text(t) => q(&t),
                _ => return Err(self.err(path, "`last::` with an instant default is read in a header or query parameter")),
            },
            Value::Array(a) => {
                let items = a.iter().enumerate().map(|(i, x)| self.body(x, &format!("{path}[{i}]"), allow_last)).collect::<Result<Vec<_>>>()?;
                format!("[{}]", items.join(", "))
            }
            Value::Object(m) => {
                let items = m.iter().map(|(k, x)| Ok(format!("{} = {}", key(k), self.body(x, &join(path, k), allow_last)?))).collect::<Result<Vec<_>>>()?;
                format!("{{ {} }}", items.join(", "))
            }
        })
    }

    /// An endpoint's URL split into (origin, path with its own query kept as params).
    fn url(&self, m: &Map<String, Value>, path: &str) -> Result<(String, String, Vec<(String, String)>)> {
        let raw = self.req_str(m, path, "url")?;
        let at = join(path, "url");
        let text = self.text(raw, &at)?;
        let scheme_end = text.find("://").map(|i| i + 3).ok_or_else(|| self.err(&at, format!("`{raw}`: an http(s) URL with a host")))?;
        let cut = text[scheme_end..].find(['/', '?']).map_or(text.len(), |i| i + scheme_end);
        let (origin, rest) = (text[..cut].to_string(), &text[cut..]);
        let u = url::Url::parse(&origin).map_err(|e| self.err(&at, format!("`{raw}` is not a URL ({e})")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() || origin.contains("${") {
            return Err(self.err(&at, format!("`{raw}`: an http(s) URL with a host (references only after it)")));
        }
        let rest = if rest.is_empty() { "/" } else { rest };
        let (p, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params = url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Ok((origin, if p.is_empty() { "/".into() } else { p.to_string() }, params))
    }
}

/// One `data_schema` leaf: the field's path in the item and its column.
#[derive(Debug, Clone)]
struct Leaf {
    path: Vec<String>,
    column: String,
    json_path: String,
}

/// `data_schema` read in the seed's order.
fn schema(cx: &Cx, v: &Value, path: &str, prefix: &[String], out: &mut Vec<Leaf>) -> Result<()> {
    let m = v.as_object().ok_or_else(|| cx.err(path, "a data_schema is an object: field → column name, or field → { nested fields }"))?;
    for (k, x) in m {
        let at = join(path, k);
        let mut p = prefix.to_vec();
        p.push(k.clone());
        match x {
            Value::String(col) => {
                if col.is_empty() || col.starts_with('_') || col.contains(['"', '\n']) {
                    return Err(cx.err(&at, format!("`{col}`: a column name that is not empty, has no quote and does not start with `_` (ingest's own columns)")));
                }
                if let Some(prev) = out.iter().find(|l| l.column == *col) {
                    return Err(cx.err(&at, format!("column `{col}` is already the name of {}", prev.json_path)));
                }
                out.push(Leaf { path: p, column: col.clone(), json_path: at });
            }
            Value::Object(_) => schema(cx, x, &at, &p, out)?,
            _ => return Err(cx.err(&at, "expected a column name (string) or an object of nested fields")),
        }
    }
    if m.is_empty() {
        return Err(cx.err(path, "an empty data_schema selects nothing; leave it out to keep every field"));
    }
    Ok(())
}

/// `[streams.x.schema]` lines: every field declared a string (the seed's CSV is text; the raw
/// table widens when the API sends more), objects as inline tables.
fn declaration(leaves: &[Leaf]) -> Vec<String> {
    fn render(leaves: &[&Leaf], depth: usize) -> Vec<(String, String)> {
        let mut out: Vec<(String, Vec<&Leaf>)> = Vec::new();
        for l in leaves {
            let k = l.path[depth].clone();
            match out.iter_mut().find(|(x, _)| *x == k) {
                Some((_, v)) => v.push(*l),
                None => out.push((k, vec![*l])),
            }
        }
        out.into_iter()
            .map(|(k, ls)| {
                if ls.len() == 1 && ls[0].path.len() == depth + 1 {
                    (key(&k), q("string"))
                } else {
                    let inner: Vec<&Leaf> = ls.into_iter().filter(|l| l.path.len() > depth + 1).collect();
                    let fields = render(&inner, depth + 1).into_iter().map(|(a, b)| format!("{a} = {b}")).collect::<Vec<_>>();
                    (key(&k), format!("{{ {} }}", fields.join(", ")))
                }
            })
            .collect()
    }
    render(&leaves.iter().collect::<Vec<_>>(), 0).into_iter().map(|(k, v)| format!("{k} = {v}")).collect()
}

/// A leaf as a SQL expression on table alias `t`.
fn column_expr(t: &str, l: &Leaf) -> String {
    let mut e = format!("{t}.{}", ident(&l.path[0]));
    for s in &l.path[1..] {
        write!(e, "[{}]", lit(s)).unwrap();
    }
    e
}

struct Column {
    name: String,
    expr: String,
    from: String,
}

/// Apply `transformations` (highest priority first; ties in the config's order).
fn transformations(cx: &Cx, v: Option<&Value>, path: &str, cols: &mut Vec<Column>) -> Result<()> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(()) };
    let a = v.as_array().ok_or_else(|| cx.err(path, "expected a list of transformations"))?;
    let mut ts = Vec::new();
    for (i, t) in a.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let m = cx.obj(t, &at, &["action", "priority", "on", "new_column_prefix", "params"])?;
        let priority = match m.get("priority") {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| cx.err(&join(&at, "priority"), "expected a number"))?,
            Some(_) => return Err(cx.err(&join(&at, "priority"), "expected a number")),
        };
        ts.push((priority, i, at, m));
    }
    // Highest first; a stable sort keeps the config's order among equals.
    ts.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (_, _, at, m) in ts {
        let action = cx.req_str(m, &at, "action")?;
        let params = match m.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(p) => p.as_object().cloned().ok_or_else(|| cx.err(&join(&at, "params"), "expected an object"))?,
        };
        let pat = join(&at, "params");
        let only = |allowed: &[&str]| -> Result<()> {
            match params.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(cx.err(&join(&pat, k), format!("`{action}` takes {}", if allowed.is_empty() { "no params".to_string() } else { allowed.join(", ") }))),
                None => Ok(()),
            }
        };
        let s = |k: &str, required: bool| -> Result<Option<String>> {
            match params.get(k) {
                Some(Value::String(x)) => Ok(Some(x.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(cx.err(&join(&pat, k), format!("`{action}` needs params.{k}"))),
                Some(_) => Err(cx.err(&join(&pat, k), "expected a string")),
            }
        };
        let f: Box<dyn Fn(&str) -> String> = match action {
            "replace" => {
                only(&["to_replace", "value"])?;
                let (from, to) = (s("to_replace", true)?.unwrap_or_default(), s("value", false)?.unwrap_or_default());
                Box::new(move |e| format!("replace({e}, {}, {})", lit(&from), lit(&to)))
            }
            "trim" | "ltrim" | "rtrim" | "lower" | "upper" | "title" | "capitalize" => {
                only(&[])?;
                let func = if action == "trim" { "btrim" } else { action };
                Box::new(move |e| format!("{func}({e})"))
            }
            "split" => {
                only(&["char"])?;
                let c = s("char", true)?.unwrap_or_default();
                Box::new(move |e| format!("string_to_array({e}, {})", lit(&c)))
            }
            "join" => {
                only(&["sep"])?;
                let sep = s("sep", false)?.unwrap_or_default();
                Box::new(move |e| format!("array_to_string({e}, {})", lit(&sep)))
            }
            "slice" => {
                only(&["start", "stop"])?;
                let n = |k: &str| -> Result<Option<i64>> { cx.opt_int(&params, &pat, k) };
                let (a, b) = (n("start")?.unwrap_or(0), n("stop")?.unwrap_or(i64::MAX));
                Box::new(move |e| format!("slice({e}, {a}, {b})"))
            }
            other => {
                return Err(cx.err(
                    &join(&at, "action"),
                    format!("`{other}`: seed 004's actions are replace, trim, ltrim, rtrim, lower, upper, title, capitalize, split, join, slice"),
                ))
            }
        };
        let on = m.get("on").and_then(Value::as_array).ok_or_else(|| cx.err(&join(&at, "on"), "a list of column names"))?;
        let prefix = cx.opt_str(m, &at, "new_column_prefix")?;
        for (j, c) in on.iter().enumerate() {
            let cat = format!("{}[{j}]", join(&at, "on"));
            let c = c.as_str().ok_or_else(|| cx.err(&cat, "a column name"))?;
            let Some(idx) = cols.iter().position(|x| x.name == c) else {
                let names: Vec<&str> = cols.iter().map(|x| x.name.as_str()).collect();
                return Err(cx.err(&cat, format!("no column `{c}` (columns: {})", names.join(", "))));
            };
            let expr = f(&cols[idx].expr);
            match prefix {
                Some(p) if !p.is_empty() => {
                    let name = format!("{p}{c}");
                    if cols.iter().any(|x| x.name == name) {
                        return Err(cx.err(&join(&at, "new_column_prefix"), format!("column `{name}` exists already")));
                    }
                    cols.push(Column { name, expr, from: format!("{at} ({action} of {c})") });
                }
                _ => {
                    cols[idx].expr = expr;
                    write!(cols[idx].from, ", {action} ({at})").unwrap();
                }
            }
        }
    }
    Ok(())
}

struct Auth {
    /// `[source.auth]` lines without the placement (`header`/`prefix`/`param`).
    lines: Vec<String>,
    refresh: bool,
}

fn auth(cx: &Cx, v: Option<&Value>) -> Result<Option<Auth>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    // The seed's own example writes `endpoint` and `response_token_key` right under `auth`.
    let m = cx.obj(v, "auth", &["refresh_token", "access_token", "endpoint", "response_token_key"])?;
    let (refresh, rpath) = match (m.get("refresh_token").filter(|x| !x.is_null()), m.get("endpoint")) {
        (Some(r), None) => (Some(cx.obj(r, "auth.refresh_token", &["endpoint", "response_token_key"])?), "auth.refresh_token".to_string()),
        (None, Some(_)) => (Some(m), "auth".to_string()),
        (Some(_), Some(_)) => return Err(cx.err("auth.endpoint", "either auth.refresh_token or auth.endpoint, not both")),
        (None, None) => (None, String::new()),
    };
    if let Some(r) = refresh {
        let ep = r.get("endpoint").ok_or_else(|| cx.err(&join(&rpath, "endpoint"), "required: where the token is refreshed"))?;
        let ep_path = join(&rpath, "endpoint");
        let e = cx.obj(ep, &ep_path, &["url", "query_params", "headers", "body"])?;
        let (origin, path, url_params) = cx.url(e, &ep_path)?;
        let mut lines = vec![
            format!("# auth.refresh_token: the access token from {origin}{path}, refreshed before it expires and on a 401."),
            "type = \"refresh\"".into(),
            format!("url = {}", q(&format!("${{env:{}_AUTH_URL:-{origin}}}{path}", cx.env))),
            "# the seed's endpoint has no method: POST, as token endpoints (Zoho's among them) want".into(),
            "method = \"POST\"".into(),
        ];
        let mut qp: Vec<String> = url_params.iter().map(|(k, v)| format!("{} = {}", key(k), q(v))).collect();
        if let Some(x) = e.get("query_params").filter(|x| !x.is_null()) {
            let at = join(&ep_path, "query_params");
            for (k, v) in x.as_object().ok_or_else(|| cx.err(&at, "expected an object"))? {
                let kp = join(&at, k);
                qp.push(format!("{} = {}", key(k), q(&cx.text(&cx.scalar(v, &kp)?, &kp)?)));
            }
        }
        if !qp.is_empty() {
            lines.push(format!("query_params = {{ {} }}", qp.join(", ")));
        }
        if let Some(x) = e.get("headers").filter(|x| !x.is_null()) {
            let at = join(&ep_path, "headers");
            let mut hs = Vec::new();
            for (k, v) in x.as_object().ok_or_else(|| cx.err(&at, "expected an object"))? {
                let kp = join(&at, k);
                hs.push(format!("{} = {}", key(k), q(&cx.text(&cx.scalar(v, &kp)?, &kp)?)));
            }
            lines.push(format!("headers = {{ {} }}", hs.join(", ")));
        }
        if let Some(b) = e.get("body").filter(|x| !x.is_null()) {
            lines.push(format!("body = {}", cx.body(b, &join(&ep_path, "body"), false)?));
        }
        let tk = cx.req_str(r, &rpath, "response_token_key")?;
        lines.push(format!("response_token_key = {}", q(tk)));
        return Ok(Some(Auth { lines, refresh: true }));
    }
    match cx.opt_str(m, "auth", "access_token")? {
        None | Some("") => Ok(None),
        Some(t) => {
            let token = cx.text(t, "auth.access_token")?;
            if !token.contains("${secret:") {
                return Err(cx.err("auth.access_token", "a token written in the config: keep it in a secret and write `${secret::name}`"));
            }
            Ok(Some(Auth { lines: vec![format!("token = {}", q(&token))], refresh: false }))
        }
    }
}

/// One extraction's stream section(s) and model.
struct Extraction {
    stream: String,
    toml: String,
    model_rel: String,
    model: String,
    origin: String,
    place: Option<Place>,
}

fn extraction(cx: &Cx, v: &Value, i: usize, source: &str, file_name: &str) -> Result<Extraction> {
    let at = format!("extractions[{i}]");
    let m = cx.obj(
        v,
        &at,
        &["id", "name", "endpoint", "data_key", "format", "output_params", "transformations", "pagination", "data_schema", "mapping_fetch", "s3_destiny"],
    )?;
    let raw_name = cx.req_str(m, &at, "name")?;
    let stream = slug(raw_name);
    if stream.is_empty() {
        return Err(cx.err(&join(&at, "name"), format!("`{raw_name}` has no letter or digit to name a stream with")));
    }
    let mut t = String::new();
    writeln!(t, "# {at}: \"{}\"", raw_name.replace('\n', " ")).unwrap();
    writeln!(t, "[streams.{stream}]").unwrap();

    // endpoint
    let ep_path = join(&at, "endpoint");
    let ep = cx.obj(m.get("endpoint").ok_or_else(|| cx.err(&ep_path, "required"))?, &ep_path, &["url", "query_params", "headers", "body"])?;
    let (origin, path, url_params) = cx.url(ep, &ep_path)?;
    writeln!(t, "path = {}", q(&path)).unwrap();
    let mut place = None;
    let mut cursor: Option<(String, String, bool, Option<String>)> = None; // (field, name, is_header, start)
    let mut take = |val: Val, name: &str, is_header: bool, kp: &str, out: &mut Vec<String>| -> Result<()> {
        match val {
            Val::Text(s) => out.push(format!("{} = {}", key(name), q(&s))),
            Val::Token(p) => place = Some(p),
            Val::Cursor { field, start } => {
                if cursor.is_some() {
                    return Err(cx.err(kp, "a second `last::` bound: ingest keeps one incremental cursor a stream"));
                }
                cursor = Some((field, name.to_string(), is_header, start));
            }
        }
        Ok(())
    };
    let mut params: Vec<String> = url_params.iter().map(|(k, v)| format!("{} = {}", key(k), q(v))).collect();
    let all = Allow { token: true, last: true };
    if let Some(x) = ep.get("query_params").filter(|x| !x.is_null()) {
        let qp = join(&ep_path, "query_params");
        for (k, v) in x.as_object().ok_or_else(|| cx.err(&qp, "expected an object"))? {
            let kp = join(&qp, k);
            let val = cx.value(&cx.scalar(v, &kp)?, &kp, all, Some(Place::Param { name: k.clone() }))?;
            take(val, k, false, &kp, &mut params)?;
        }
    }
    let mut headers = Vec::new();
    if let Some(x) = ep.get("headers").filter(|x| !x.is_null()) {
        let hp = join(&ep_path, "headers");
        for (k, v) in x.as_object().ok_or_else(|| cx.err(&hp, "expected an object"))? {
            let kp = join(&hp, k);
            let val = cx.value(&cx.scalar(v, &kp)?, &kp, all, Some(Place::Header { name: k.clone(), prefix: String::new() }))?;
            take(val, k, true, &kp, &mut headers)?;
        }
    }
    if !params.is_empty() {
        writeln!(t, "params = {{ {} }}", params.join(", ")).unwrap();
    }
    if !headers.is_empty() {
        writeln!(t, "headers = {{ {} }}", headers.join(", ")).unwrap();
    }
    if let Some(b) = ep.get("body").filter(|x| !x.is_null()) {
        writeln!(t, "# endpoint.body: sent as JSON, so the request is a POST").unwrap();
        writeln!(t, "method = \"POST\"").unwrap();
        writeln!(t, "body = {}", cx.body(b, &join(&ep_path, "body"), true)?).unwrap();
    }
    if let Some(dk) = cx.opt_str(m, &at, "data_key")? {
        writeln!(t, "records = {}", q(dk)).unwrap();
    } else {
        writeln!(t, "# no data_key: the body itself is the list of items").unwrap();
    }

    // data_schema
    let mut leaves = Vec::new();
    if let Some(ds) = m.get("data_schema").filter(|x| !x.is_null()) {
        schema(cx, ds, &join(&at, "data_schema"), &[], &mut leaves)?;
    }
    let key_leaf = leaves.iter().find(|l| l.path == ["id"]).cloned();
    if let Some(k) = &key_leaf {
        writeln!(t, "# data_schema maps the items' `id`: the key the model merges on").unwrap();
        writeln!(t, "primary_key = {}", q(&k.path[0])).unwrap();
    }

    // pagination
    if let Some(p) = m.get("pagination").filter(|x| !x.is_null()) {
        let pp = join(&at, "pagination");
        let pm = cx.obj(p, &pp, &["type", "parameters"])?;
        let kind = cx.req_str(pm, &pp, "type")?;
        let par_path = join(&pp, "parameters");
        let empty = Value::Object(Map::new());
        let par = pm.get("parameters").filter(|x| !x.is_null()).unwrap_or(&empty);
        match kind {
            "sequential" => {
                let x = cx.obj(par, &par_path, &["param_name", "start_from", "step", "there_are_more_pages", "continue_while_status_code_is", "stop_when_response_body_is_empty"])?;
                let mut f = vec!["type = \"page_number\"".to_string(), format!("param = {}", q(cx.req_str(x, &par_path, "param_name")?))];
                if let Some(s) = cx.opt_int(x, &par_path, "start_from")? {
                    f.push(format!("start = {s}"));
                }
                match cx.opt_int(x, &par_path, "step")? {
                    Some(s) if s < 1 => return Err(cx.err(&join(&par_path, "step"), "a step of 1 or more")),
                    Some(s) => f.push(format!("step = {s}")),
                    None => {}
                }
                if let Some(c) = cx.opt_str(x, &par_path, "there_are_more_pages")? {
                    crate::json::Condition::parse(c).map_err(|e| cx.err(&join(&par_path, "there_are_more_pages"), e))?;
                    f.push(format!("continue_if = {}", q(c)));
                }
                let status = cx.opt_int(x, &par_path, "continue_while_status_code_is")?;
                let stop_empty = cx.opt_bool(x, &par_path, "stop_when_response_body_is_empty")?.unwrap_or(false);
                if status.is_some() && stop_empty {
                    return Err(cx.err(
                        &join(&par_path, "stop_when_response_body_is_empty"),
                        "continue_while_status_code_is and stop_when_response_body_is_empty cannot both be set (seed 004: choose one)",
                    ));
                }
                if let Some(s) = status {
                    if !(100..=599).contains(&s) {
                        return Err(cx.err(&join(&par_path, "continue_while_status_code_is"), "an HTTP status code"));
                    }
                    f.push(format!("continue_while_status_code_is = {s}"));
                }
                if stop_empty {
                    f.push("stop_when_response_body_is_empty = true".into());
                }
                writeln!(t, "pagination = {{ {} }}", f.join(", ")).unwrap();
            }
            "link" => {
                let x = cx.obj(par, &par_path, &["next_link"])?;
                writeln!(t, "pagination = {{ type = \"next_link\", next = {} }}", q(cx.req_str(x, &par_path, "next_link")?)).unwrap();
            }
            other => return Err(cx.err(&join(&pp, "type"), format!("`{other}`: sequential or link"))),
        }
    }

    // incremental
    if let Some((field, name, is_header, start)) = &cursor {
        writeln!(t, "# `$(last::{field}, …)`: the stream is incremental on {field}, its bound in {} `{name}`", if *is_header { "header" } else { "query parameter" }).unwrap();
        let mut f = vec![format!("cursor = {}", q(field)), format!("{} = {}", if *is_header { "header" } else { "param" }, q(name)), "format = \"%Y-%m-%dT%H:%M:%S%:z\"".into()];
        if let Some(s) = start {
            f.push(format!("start = {}", q(s)));
        }
        writeln!(t, "incremental = {{ {} }}", f.join(", ")).unwrap();
    }

    // mapping_fetch
    let mut detail: Option<(String, String, Vec<Leaf>)> = None; // (stream, prefix, leaves)
    if let Some(mf) = m.get("mapping_fetch").filter(|x| !x.is_null()) {
        let mp = join(&at, "mapping_fetch");
        // `data_key` is ingest's addition (the seed passes the whole answer through the
        // data_schema): where in the answer the detail is, the first item when it is a list.
        let mm = cx.obj(mf, &mp, &["endpoint", "prefix", "data_schema", "data_key"])?;
        if key_leaf.is_none() {
            return Err(cx.err(&mp, "the model joins each item's detail on its `id`: map `id` in data_schema"));
        }
        let mep = join(&mp, "endpoint");
        let me = cx.obj(mm.get("endpoint").ok_or_else(|| cx.err(&mep, "required"))?, &mep, &["url", "query_params", "headers"])?;
        let (dorigin, dpath, mut dparams) = cx.url(me, &mep)?;
        if let Some(x) = me.get("query_params").filter(|x| !x.is_null()) {
            let qp = join(&mep, "query_params");
            for (k, v) in x.as_object().ok_or_else(|| cx.err(&qp, "expected an object"))? {
                let kp = join(&qp, k);
                dparams.push((k.clone(), cx.text(&cx.scalar(v, &kp)?, &kp)?));
            }
        }
        // Another host is pointed elsewhere by `<NAME>_<STREAM>_DETAILS_URL`, like the base URL.
        let mut full = if dorigin == origin {
            dpath.clone()
        } else {
            format!("${{env:{}_{}_DETAILS_URL:-{dorigin}}}{dpath}", cx.env, stream.to_uppercase())
        };
        if !dparams.is_empty() {
            let enc: Vec<String> = dparams.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(full, "?{}", enc.join("&")).unwrap();
        }
        if !full.contains("{record.") {
            return Err(cx.err(
                &join(&mep, "url"),
                "the seed names no way to put the item in the request: write `{record.<field>}` where the item's value goes (e.g. `/deals/{record.id}`)",
            ));
        }
        let mut hs = Vec::new();
        if let Some(x) = me.get("headers").filter(|x| !x.is_null()) {
            let hp = join(&mep, "headers");
            for (hk, hv) in x.as_object().ok_or_else(|| cx.err(&hp, "expected an object"))? {
                let kp = join(&hp, hk);
                match cx.value(&cx.scalar(hv, &kp)?, &kp, Allow { token: dorigin == origin, last: false }, Some(Place::Header { name: hk.clone(), prefix: String::new() }))? {
                    Val::Text(s) => hs.push(format!("{} = {}", key(hk), q(&s))),
                    // The same host: the source's auth sends the token.
                    Val::Token(_) => {}
                    Val::Cursor { .. } => return Err(cx.err(&kp, "`last::` is not read in a mapping_fetch")),
                }
            }
        }
        let prefix = cx.opt_str(mm, &mp, "prefix")?.unwrap_or("").to_string();
        let mut dleaves = Vec::new();
        let dsp = join(&mp, "data_schema");
        schema(cx, mm.get("data_schema").filter(|x| !x.is_null()).ok_or_else(|| cx.err(&dsp, "required: the detail fields to keep"))?, &dsp, &[], &mut dleaves)?;
        for l in &dleaves {
            let name = format!("{prefix}{}", l.column);
            if leaves.iter().any(|x| x.column == name) {
                return Err(cx.err(&l.json_path, format!("column `{name}` (with the prefix) is also a column of the extraction's data_schema")));
            }
        }
        let dstream = format!("{stream}_details");
        writeln!(t, "# mapping_fetch: one request per item, landed as raw stream `{dstream}` (each with `_parent_key` = the item's id);").unwrap();
        writeln!(t, "# the model joins it under the prefix `{prefix}`.").unwrap();
        let mut d = vec![format!("path = {}", q(&full)), format!("stream = {}", q(&dstream))];
        if let Some(dk) = cx.opt_str(mm, &mp, "data_key")? {
            d.push(format!("records = {}", q(dk)));
        }
        if !hs.is_empty() {
            d.push(format!("headers = {{ {} }}", hs.join(", ")));
        }
        writeln!(t, "details = {{ {} }}", d.join(", ")).unwrap();
        detail = Some((dstream, prefix, dleaves));
    }

    if !leaves.is_empty() {
        writeln!(t, "\n# data_schema: every field the seed's CSV has, so one no item carries is still a (NULL) column").unwrap();
        writeln!(t, "[streams.{stream}.schema]").unwrap();
        for l in declaration(&leaves) {
            writeln!(t, "{l}").unwrap();
        }
    }
    if let Some((dstream, _, dleaves)) = &detail {
        writeln!(t, "\n# mapping_fetch.data_schema, and what a detail fetch adds").unwrap();
        writeln!(t, "[schemas.{dstream}]").unwrap();
        for l in declaration(dleaves) {
            writeln!(t, "{l}").unwrap();
        }
        writeln!(t, "_parent_key = \"string\"\n_parent_cursor = \"string\"\n_detail_status = \"int\"").unwrap();
    }

    // The model.
    let target = format!("{source}_{stream}");
    let (lt, joined) = if detail.is_some() { ("l", true) } else { ("t", false) };
    let mut cols: Vec<Column> = leaves
        .iter()
        .map(|l| Column { name: l.column.clone(), expr: column_expr(lt, l), from: l.json_path.clone() })
        .collect();
    if let Some((_, prefix, dleaves)) = &detail {
        cols.extend(dleaves.iter().map(|l| Column { name: format!("{prefix}{}", l.column), expr: column_expr("d", l), from: l.json_path.clone() }));
    }
    transformations(cx, m.get("transformations"), &join(&at, "transformations"), &mut cols)?;
    let format = cx.opt_str(m, &at, "format")?.unwrap_or("csv");
    if !["csv", "json"].contains(&format) {
        return Err(cx.err(&join(&at, "format"), format!("`{format}`: csv or json")));
    }
    let mut sep = ",".to_string();
    if let Some(op) = m.get("output_params").filter(|x| !x.is_null()) {
        let opp = join(&at, "output_params");
        let o = cx.obj(op, &opp, &["csv_separator"])?;
        if let Some(s) = cx.opt_str(o, &opp, "csv_separator")? {
            if s.chars().count() != 1 || s == "\"" || s == "\n" || s == "\r" {
                return Err(cx.err(&join(&opp, "csv_separator"), format!("`{s}`: one character, not a quote or a line break")));
            }
            sep = if s == "\t" { "tab".into() } else { s.to_string() };
        }
    }
    let (mut bucket, mut folder, mut name) = (DEFAULT_BUCKET.to_string(), String::new(), stream.clone());
    if let Some(d) = m.get("s3_destiny").filter(|x| !x.is_null()) {
        let dp = join(&at, "s3_destiny");
        let o = cx.obj(d, &dp, &["bucket", "folder", "filename"])?;
        if let Some(b) = cx.opt_str(o, &dp, "bucket")?.filter(|b| !b.is_empty()) {
            if !b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
                return Err(cx.err(&join(&dp, "bucket"), format!("`{b}` is not an S3 bucket name")));
            }
            bucket = b.to_string();
        }
        if let Some(f) = cx.opt_str(o, &dp, "folder")? {
            if f.contains(char::is_whitespace) || f.contains("..") {
                return Err(cx.err(&join(&dp, "folder"), format!("`{f}`: a folder without spaces or `..`")));
            }
            folder = f.trim_matches('/').to_string();
        }
        if let Some(f) = cx.opt_str(o, &dp, "filename")? {
            name = slug(f);
            if name.is_empty() {
                return Err(cx.err(&join(&dp, "filename"), format!("`{f}` has no letter or digit")));
            }
        }
    }
    let to = format!("${{env:{}_OUTPUT_URL:-s3://{bucket}}}/{}", cx.env, if folder.is_empty() { String::new() } else { format!("{folder}/") });

    let mut s = String::new();
    writeln!(s, "-- target: silver.{target}").unwrap();
    match &key_leaf {
        Some(k) => writeln!(s, "-- unique_key: {}", k.column).unwrap(),
        None => writeln!(s, "-- mode: append").unwrap(),
    }
    if let Some((field, ..)) = &cursor {
        if let Some(l) = leaves.iter().find(|l| l.path == [field.clone()]) {
            writeln!(s, "-- order_by: {}", l.column).unwrap();
        }
    }
    if joined {
        writeln!(s, "-- reads: all").unwrap();
    }
    writeln!(s, "-- output: {format} sep={sep} to={to} name={name}").unwrap();
    writeln!(s, "-- description: seed 004 extraction \"{}\" ({at}) of {file_name}: data_schema columns in the config's order, transformations by priority{}.", raw_name.replace('\n', " "), if joined { ", mapping_fetch fields under their prefix" } else { "" }).unwrap();
    if leaves.is_empty() {
        writeln!(s, "-- No data_schema: every field as it comes (the seed keeps the item as the API sends it).").unwrap();
        writeln!(s, "SELECT *\nFROM raw.{target} t").unwrap();
    } else {
        writeln!(s, "SELECT").unwrap();
        for c in &cols {
            writeln!(s, "  {} AS {}, -- {}", c.expr, ident(&c.name), c.from).unwrap();
        }
        writeln!(s, "  {lt}._ingest_order").unwrap();
        writeln!(s, "FROM raw.{target} {lt}").unwrap();
        if let Some((dstream, ..)) = &detail {
            let k = key_leaf.as_ref().expect("checked above");
            writeln!(s, "LEFT JOIN (").unwrap();
            writeln!(s, "  SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY _parent_key ORDER BY _ingest_order DESC) AS _rank FROM raw.{source}_{dstream})").unwrap();
            writeln!(s, "  WHERE _rank = 1").unwrap();
            writeln!(s, ") d ON CAST({} AS VARCHAR) = d._parent_key", column_expr("l", k)).unwrap();
        }
    }
    Ok(Extraction { stream, toml: t, model_rel: format!("silver/{target}.sql"), model: s, origin, place })
}

/// Read `text` (the config file `file`) into what the import writes for source `name`.
pub fn plan(file: &str, text: &str, name: Option<&str>) -> Result<Plan> {
    let root: Value = serde_json::from_str(text).map_err(|e| Error::config(file, Some(e.line()), None, format!("not JSON: {e}")))?;
    let cx0 = Cx { file, lines: json_at::lines(text), root: &root, env: String::new() };
    let top = cx0.obj(&root, "", &["id", "name", "auth", "extractions"])?;
    let source = match name {
        Some(n) => n.to_string(),
        None => slug(cx0.req_str(top, "", "name")?),
    };
    if source.is_empty() || !source.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || source.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::Usage(format!("--name `{source}`: a source name is lower-case letters, digits and `_`, starting with a letter")));
    }
    let cx = Cx { env: source.to_uppercase(), ..cx0 };
    let auth = auth(&cx, top.get("auth"))?;
    let ex = top.get("extractions").and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(|| cx.err("extractions", "required: a non-empty list"))?;
    let file_name = std::path::Path::new(file).file_name().map_or(file.to_string(), |f| f.to_string_lossy().into_owned());
    let mut done: Vec<Extraction> = Vec::new();
    for (i, v) in ex.iter().enumerate() {
        let e = extraction(&cx, v, i, &source, &file_name)?;
        if done.iter().any(|d| d.stream == e.stream) {
            return Err(cx.err(&format!("extractions[{i}].name"), format!("a second extraction named `{}`", e.stream)));
        }
        if e.origin != done.first().map_or(e.origin.clone(), |d| d.origin.clone()) {
            return Err(cx.err(
                &format!("extractions[{i}].endpoint.url"),
                format!("{} is another host than extractions[0]'s {}: one pipeline has one base URL — import this extraction on its own (`--name`)", e.origin, done[0].origin),
            ));
        }
        if let (Some(a), Some(b)) = (done.iter().find_map(|d| d.place.clone()), &e.place) {
            if &a != b {
                return Err(cx.err(&format!("extractions[{i}].endpoint"), "the token goes elsewhere than in the earlier extractions: one source sends it one way"));
            }
        }
        done.push(e);
    }
    let place = done.iter().find_map(|d| d.place.clone());
    if place.is_some() && auth.is_none() {
        return Err(cx.err("auth", "the extractions send `self::auth.access_token` but the config has no auth.refresh_token or auth.access_token"));
    }

    let mut p = String::new();
    writeln!(p, "# Imported from {file_name} (seed 004's api extractor config) by `ingest import extractor`.").unwrap();
    writeln!(p, "# Each part names the JSON path it came from. Point it elsewhere by environment alone:").unwrap();
    writeln!(p, "# {0}_BASE_URL (the API), {0}_AUTH_URL (the token endpoint), {0}_OUTPUT_URL (where outputs go).", cx.env).unwrap();
    writeln!(p, "\n[source]\nname = {}", q(&source)).unwrap();
    writeln!(p, "base_url = {}", q(&format!("${{env:{}_BASE_URL:-{}}}", cx.env, done[0].origin))).unwrap();
    writeln!(p, "# the extractor walks its pages one at a time").unwrap();
    writeln!(p, "concurrency = 1\ntimeout_secs = 30").unwrap();
    if let Some(a) = &auth {
        writeln!(p, "\n[source.auth]").unwrap();
        if !a.refresh {
            match &place {
                Some(Place::Param { .. }) => writeln!(p, "# auth.access_token, sent in a query parameter\ntype = \"query\"").unwrap(),
                _ => writeln!(p, "# auth.access_token\ntype = \"bearer\"").unwrap(),
            }
        }
        for l in &a.lines {
            writeln!(p, "{l}").unwrap();
        }
        match &place {
            Some(Place::Header { name, prefix }) => {
                writeln!(p, "# where the extractions write the token (self::auth.access_token)").unwrap();
                writeln!(p, "header = {}\nprefix = {}", q(name), q(prefix)).unwrap();
            }
            Some(Place::Param { name }) => {
                writeln!(p, "# where the extractions write the token (self::auth.access_token)").unwrap();
                writeln!(p, "param = {}", q(name)).unwrap();
            }
            None => writeln!(p, "# no extraction writes the token (self::auth.access_token): sent as `Authorization: Bearer …`").unwrap(),
        }
    }
    let mut models = Vec::new();
    for e in done {
        writeln!(p, "\n{}", e.toml.trim_end()).unwrap();
        models.push((e.model_rel, e.model));
    }
    Ok(Plan { source, pipeline: p, models })
}
