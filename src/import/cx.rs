//! Reading one seed-004 config value where it sits: its JSON path and line for errors, the
//! checks of its type and fields, and the translation of its references (`${self::…}`,
//! `${secret::…}`, `$(last::…, default)`) into what a pipeline file writes.
use super::refs::{self, Kind, Piece};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write as _;

pub(super) struct Cx<'a> {
    pub(super) file: &'a str,
    pub(super) lines: HashMap<String, usize>,
    pub(super) root: &'a Value,
    /// `<NAME>` of `<NAME>_BASE_URL`.
    pub(super) env: String,
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A TOML string literal (also a quoted key).
pub(super) fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be.
pub(super) fn key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        q(s)
    }
}

/// A SQL identifier, quoted.
pub(super) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal.
pub(super) fn lit(s: &str) -> String {
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
pub(super) enum Place {
    Header { name: String, prefix: String },
    Param { name: String },
}

/// A header or query value as `ingest` writes it.
pub(super) enum Val {
    Text(String),
    Token(Place),
    /// `$(last::field, default)` as the whole value, with an instant (or no) default.
    Cursor { field: String, start: Option<String> },
}

/// Which references a string may hold where it is.
#[derive(Clone, Copy)]
pub(super) struct Allow {
    pub(super) token: bool,
    pub(super) last: bool,
}
pub(super) const STATIC: Allow = Allow { token: false, last: false };

impl Cx<'_> {
    pub(super) fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }

    pub(super) fn err(&self, path: &str, msg: impl Into<String>) -> Error {
        Error::config(self.file, self.line(path), Some(if path.is_empty() { "(the document)" } else { path }), msg)
    }

    /// `v` as an object holding only `allowed` keys.
    pub(super) fn obj<'v>(&self, v: &'v Value, path: &str, allowed: &[&str]) -> Result<&'v Map<String, Value>> {
        let m = v.as_object().ok_or_else(|| self.err(path, "expected an object"))?;
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(&join(path, k), format!("not a field seed 004 documents here (fields: {})", allowed.join(", "))));
        }
        Ok(m)
    }

    pub(super) fn opt_str<'v>(&self, m: &'v Map<String, Value>, path: &str, k: &str) -> Result<Option<&'v str>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(&join(path, k), "expected a string")),
        }
    }

    pub(super) fn req_str<'v>(&self, m: &'v Map<String, Value>, path: &str, k: &str) -> Result<&'v str> {
        self.opt_str(m, path, k)?.filter(|s| !s.trim().is_empty()).ok_or_else(|| self.err(&join(path, k), "required (a non-empty string)"))
    }

    /// A number, or a string holding one (the seed writes `"<number>"`).
    pub(super) fn opt_int(&self, m: &Map<String, Value>, path: &str, k: &str) -> Result<Option<i64>> {
        let bad = || self.err(&join(path, k), "expected a whole number");
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    pub(super) fn opt_bool(&self, m: &Map<String, Value>, path: &str, k: &str) -> Result<Option<bool>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => Ok(Some(s.eq_ignore_ascii_case("true"))),
            Some(_) => Err(self.err(&join(path, k), "expected true or false")),
        }
    }

    /// A scalar (query parameter, header) as text.
    pub(super) fn scalar(&self, v: &Value, path: &str) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.err(path, "expected a string, number or boolean")),
        }
    }

    /// Translate one config string's references (see the module table).
    pub(super) fn value(&self, s: &str, path: &str, allow: Allow, place: Option<Place>) -> Result<Val> {
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
    pub(super) fn text(&self, s: &str, path: &str) -> Result<String> {
        match self.value(s, path, STATIC, None)? {
            Val::Text(t) => Ok(t),
            _ => Err(self.err(path, "a reference that does not belong here")),
        }
    }

    /// A JSON body as an inline TOML value, its strings translated.
    pub(super) fn body(&self, v: &Value, path: &str, allow_last: bool) -> Result<String> {
        Ok(match v {
            Value::Null => return Err(self.err(path, "a null in a body has no TOML form; leave the field out")),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => match self.value(s, path, Allow { token: false, last: allow_last }, None)? {
                Val::Text(t) => q(&t),
                // In a body the previous run's last value is written in (no incremental bound there).
                Val::Cursor { field, start: Some(d) } => q(&format!("${{last:{field}:-{d}}}")),
                Val::Cursor { field, start: None } => q(&format!("${{last:{field}}}")),
                Val::Token(_) => return Err(self.err(path, "the token goes in a header or a query parameter, not in a body")),
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
    pub(super) fn url(&self, m: &Map<String, Value>, path: &str) -> Result<(String, String, Vec<(String, String)>)> {
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
