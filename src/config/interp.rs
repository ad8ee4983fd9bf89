//! `${env:NAME}` / `${env:NAME:-default}` substitution on a pipeline file's text (line numbers
//! are kept), `${secret:NAME}` resolution at use time, and finding the line of a dotted key.
//! Secrets are never substituted into the text, so they never reach a parse error.
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Substitute `${env:…}` references; leave `${secret:…}` untouched.
pub fn substitute_env(file: &str, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find("${env:") {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 6..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::config(file, Some(i + 1), None, "unterminated `${env:` reference"))?;
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            match std::env::var(name).ok().filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => {
                        return Err(Error::config(
                            file,
                            Some(i + 1),
                            None,
                            format!("environment variable {name} is not set (referenced as ${{env:{name}}})"),
                        ))
                    }
                },
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// Substitute `${self:<dotted.path>}` with another value of the same file (seed 004's
/// `self::`), after `${env:…}`: a string, number or boolean at that path of the parsed file.
pub fn substitute_self(file: &str, text: &str) -> Result<String> {
    if !text.contains("${self:") {
        return Ok(text.to_string());
    }
    // Parse with the references blanked out, so the file parses whatever they stand for.
    let blank = {
        let mut out = String::new();
        let mut rest = text;
        while let Some(p) = rest.find("${self:") {
            out.push_str(&rest[..p]);
            let end = rest[p..].find('}').map_or(rest.len(), |e| p + e + 1);
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    };
    let doc: toml::Value = toml::from_str(&blank).map_err(|e| Error::config(file, None, None, e.message().to_string()))?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find("${self:") {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 7..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::config(file, Some(i + 1), None, "unterminated `${self:` reference"))?;
            let path = &after[..end];
            let mut v = &doc;
            for seg in path.split('.') {
                v = v.get(seg).ok_or_else(|| {
                    Error::config(file, Some(i + 1), None, format!("`${{self:{path}}}`: no value at `{path}` in this file"))
                })?;
            }
            match v {
                toml::Value::String(s) if !s.contains("${") => out.push_str(s),
                toml::Value::Integer(n) => out.push_str(&n.to_string()),
                toml::Value::Float(n) => out.push_str(&n.to_string()),
                toml::Value::Boolean(b) => out.push_str(&b.to_string()),
                _ => {
                    return Err(Error::config(
                        file,
                        Some(i + 1),
                        None,
                        format!("`${{self:{path}}}` must name a plain string, number or boolean"),
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// Resolve a string that may hold `${secret:NAME}` references (NAME may contain `{partition}`,
/// already expanded by the caller). Secrets come from environment variables of that name.
pub fn resolve_secret(value: &str) -> std::result::Result<Secret, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(pos) = rest.find("${secret:") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 9..];
        let end = after.find('}').ok_or("unterminated `${secret:` reference")?;
        let name = &after[..end];
        let v = std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("secret {name} is not set (export it as an environment variable)"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Secret::new(out))
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
