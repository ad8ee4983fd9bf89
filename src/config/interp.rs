//! `${env:NAME}` / `${env:NAME:-default}` substitution on a pipeline file's text (line numbers
//! are kept), `${secret:NAME}` resolution at use time, and finding the line of a dotted key.
//! Secrets are never substituted into the text, so they never reach a parse error.
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Replace every `${<prefix>:<body>}` of `s` by `f(body)`: the one scanner behind `${env:}`,
/// `${self:}`, `${secret:}` and `${last:}`. An unterminated reference is an error.
pub fn replace_refs(
    s: &str,
    prefix: &str,
    mut f: impl FnMut(&str) -> std::result::Result<String, String>,
) -> std::result::Result<String, String> {
    let open = format!("${{{prefix}:");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(&open) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + open.len()..];
        let end = after.find('}').ok_or_else(|| format!("unterminated `{open}` reference"))?;
        out.push_str(&f(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `replace_refs` on every line of a file's text, errors naming the line.
fn replace_lines(
    file: &str,
    text: &str,
    prefix: &str,
    mut f: impl FnMut(&str) -> std::result::Result<String, String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        out.push_str(&replace_refs(line, prefix, &mut f).map_err(|m| Error::config(file, Some(i + 1), None, m))?);
        out.push('\n');
    }
    Ok(out)
}

/// [`substitute_env`], an unset variable without a default reading as `unset` (for reads of a
/// file that need none of those values, e.g. its schema declarations).
pub fn substitute_env_or(file: &str, text: &str, unset: &str) -> Result<String> {
    replace_lines(file, text, "env", |body| {
        let (name, default) = body.split_once(":-").map_or((body, None), |(n, d)| (n, Some(d)));
        Ok(std::env::var(name).ok().filter(|v| !v.is_empty()).or(default.map(str::to_string)).unwrap_or_else(|| unset.to_string()))
    })
}

/// Substitute `${env:…}` references; leave `${secret:…}` untouched.
pub fn substitute_env(file: &str, text: &str) -> Result<String> {
    replace_lines(file, text, "env", |body| {
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!("environment variable {name} is not set (referenced as ${{env:{name}}})")),
        }
    })
}

/// Substitute `${self:<dotted.path>}` with another value of the same file (seed 004's
/// `self::`), after `${env:…}`: a string, number or boolean at that path of the parsed file.
pub fn substitute_self(file: &str, text: &str) -> Result<String> {
    if !text.contains("${self:") {
        return Ok(text.to_string());
    }
    // Parse with the references blanked out, so the file parses whatever they stand for (an
    // unterminated one is reported with its line below).
    let blank = replace_refs(text, "self", |_| Ok(String::new())).unwrap_or_else(|_| text.to_string());
    let doc: toml::Value = toml::from_str(&blank).map_err(|e| Error::config(file, None, None, e.message().to_string()))?;
    replace_lines(file, text, "self", |path| {
        let mut v = &doc;
        for seg in path.split('.') {
            v = v
                .get(seg)
                .ok_or_else(|| format!("`${{self:{path}}}`: no value at `{path}` in this file"))?;
        }
        match v {
            toml::Value::String(s) if !s.contains("${") => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(n) => Ok(n.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(format!("`${{self:{path}}}` must name a plain string, number or boolean")),
        }
    })
}

/// Resolve a string that may hold `${secret:NAME}` references (NAME may contain `{partition}`,
/// already expanded by the caller). A secret is the environment variable NAME, else the file
/// `NAME` (or `name`, lower-cased) in `INGEST_SECRETS_DIR` (default `/run/secrets`: where
/// Kubernetes and Docker mount secrets), its content without the trailing newline, else a key of
/// the AWS secret the pipeline names (`aws_secrets.rs`, fetched before the pipeline loads).
pub fn resolve_secret(value: &str) -> std::result::Result<Secret, String> {
    if PLACEHOLDER_SECRETS.with(|p| p.get()) {
        return Ok(Secret::new(replace_refs(value, "secret", |_| Ok(PLACEHOLDER.to_string()))?));
    }
    let out = replace_refs(value, "secret", |name| {
        if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
            return Ok(v);
        }
        let dir = std::env::var("INGEST_SECRETS_DIR").ok().filter(|d| !d.is_empty()).unwrap_or_else(|| "/run/secrets".into());
        let dir = std::path::Path::new(&dir);
        let safe = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) && !name.starts_with('.');
        for file in [name.to_string(), name.to_lowercase()] {
            if let Some(v) = std::fs::read_to_string(dir.join(&file)).ok().filter(|_| safe) {
                let v = v.trim_end_matches(['\n', '\r']).to_string();
                if !v.is_empty() {
                    return Ok(v);
                }
            }
        }
        match super::aws_secrets::lookup(name) {
            Ok(v) => Ok(v.expose().to_string()),
            Err(ids) if !ids.is_empty() => Err(format!(
                "secret {name} is not set: no environment variable, no file {}/{name}, and no key `{name}` (or `{}`) in AWS secret {}",
                dir.display(),
                name.to_lowercase(),
                ids.join(", ")
            )),
            Err(_) => Err(format!(
                "secret {name} is not set (export it as an environment variable, or put it in the file {}/{name}, or name an AWS secret holding it in [source.secrets])",
                dir.display()
            )),
        }
    })?;
    Ok(Secret::new(out))
}

thread_local! {
    static PLACEHOLDER_SECRETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
const PLACEHOLDER: &str = "ingest-placeholder-secret";

/// Run `f` (on this thread) with every `${secret:…}` resolving to a placeholder: a file written
/// for a machine that holds its secrets (`ingest import`'s output) validated where none are.
pub fn with_placeholder_secrets<T>(f: impl FnOnce() -> T) -> T {
    PLACEHOLDER_SECRETS.with(|p| p.set(true));
    let out = f();
    PLACEHOLDER_SECRETS.with(|p| p.set(false));
    out
}

/// A pipeline file's text and TOML as read without the environment a pull needs — an unset
/// `${env:…}` reads as `0`, `${self:…}` substituted, no secret resolved: what the transform
/// (declarations), the server (schedules) and the AWS secret prefetch read. A TOML error
/// names the file and line.
pub fn offline(file: &str, raw: &str) -> crate::error::Result<(String, toml::Value)> {
    let text = substitute_env_or(file, raw, "0")?;
    let text = substitute_self(file, &text)?;
    let doc: toml::Value = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        crate::error::Error::config(file, line, None, e.message().to_string())
    })?;
    Ok((text, doc))
}

/// Find the 1-based line where a dotted key (`streams.leads.pagination.total`) is written.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| -> Option<String> {
        let t = l.trim();
        if t.starts_with('[') {
            Some(t.trim_matches(|c| c == '[' || c == ']').replace(' ', ""))
        } else {
            None
        }
    };
    for cut in (0..=path.len()).rev() {
        let table = path[..cut].join(".");
        let start = if cut == 0 {
            Some(0)
        } else {
            lines
                .iter()
                .position(|l| header(l).as_deref() == Some(table.as_str()))
                .map(|p| p + 1)
        };
        let Some(start) = start else { continue };
        if cut == path.len() {
            return Some(start);
        }
        let key = path[cut];
        for (j, l) in lines.iter().enumerate().skip(start) {
            if header(l).is_some() && j >= start {
                break;
            }
            let t = l.trim_start();
            if t.starts_with(&format!("{key} ")) || t.starts_with(&format!("{key}=")) {
                return Some(j + 1);
            }
        }
        return Some(start.max(1));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_defaults_and_lines() {
        std::env::set_var("INGEST_T_X", "abc");
        let t = substitute_env("f", "a = \"${env:INGEST_T_X}\"\nb = ${env:INGEST_T_NOPE:-7}\n").unwrap();
        assert_eq!(t, "a = \"abc\"\nb = 7\n");
        let e = substitute_env("f", "\n\nc = \"${env:INGEST_T_NOPE}\"").unwrap_err();
        assert!(e.to_string().contains("f:3"), "{e}");
    }

    #[test]
    fn finds_lines() {
        let t =
            "[source]\nname = \"x\"\n[streams.a]\npath = \"/a\"\n[streams.a.pagination]\ntype = \"x\"\ntotal = \"t\"\n";
        assert_eq!(line_of(t, &["streams", "a", "pagination", "total"]), Some(7));
        let t2 = "[source]\nname = \"x\"\nbase = \"/v1\"\n[streams.a]\npath = \"${self:source.base}/a\"\n";
        let s = substitute_self("x.toml", t2).unwrap();
        assert!(s.contains("path = \"/v1/a\""), "{s}");
        assert!(substitute_self("x.toml", "[a]\nb = \"${self:nope}\"\n").is_err());
        assert_eq!(line_of(t, &["streams", "a", "path"]), Some(4));
        assert_eq!(line_of(t, &["source", "name"]), Some(2));
    }
}
