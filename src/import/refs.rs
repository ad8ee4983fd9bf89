//! Seed 004's references inside config strings: `${kind::target}`, `${kind::target, default}`,
//! `$(kind::target)` and `$(kind::target, default)`, with `kind` one of `self` (a value of the
//! config itself, `auth.access_token` being the refreshed token), `secret` (a key of the
//! extractor's secret) and `last` (a field of the last item the previous run extracted).

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    SelfRef,
    Secret,
    Last,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Ref { kind: Kind, target: String, default: Option<String> },
}

/// Split `s` into text and references; an unterminated or unknown reference is an error.
pub fn pieces(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let next = [rest.find("${"), rest.find("$(")].into_iter().flatten().min();
        let Some(pos) = next else { break };
        if pos > 0 {
            out.push(Piece::Text(rest[..pos].to_string()));
        }
        let close = if rest.as_bytes()[pos + 1] == b'{' { '}' } else { ')' };
        let body_start = pos + 2;
        let end = rest[body_start..]
            .find(close)
            .ok_or_else(|| format!("unterminated reference `{}`", &rest[pos..]))?;
        let body = &rest[body_start..body_start + end];
        let (kind, tail) = body
            .split_once("::")
            .ok_or_else(|| format!("`{body}`: a reference is `<self|secret|last>::<field>[, default]`"))?;
        let kind = match kind.trim() {
            "self" => Kind::SelfRef,
            "secret" => Kind::Secret,
            "last" => Kind::Last,
            other => return Err(format!("`{other}::`: unknown reference kind (self, secret, last)")),
        };
        let (target, default) = match tail.split_once(',') {
            Some((t, d)) => (t.trim().to_string(), Some(d.trim().to_string())),
            None => (tail.trim().to_string(), None),
        };
        if target.is_empty() {
            return Err(format!("`{body}`: the reference names no field"));
        }
        out.push(Piece::Ref { kind, target, default });
        rest = &rest[body_start + end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// `zoho_refresh_token` → `ZOHO_REFRESH_TOKEN`: the name `${secret:…}` reads (an environment
/// variable, a file under `INGEST_SECRETS_DIR`, or a key of the AWS secret).
pub fn secret_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_with_and_without_defaults() {
        let p = pieces("Bearer ${self::auth.access_token}").unwrap();
        assert_eq!(p[0], Piece::Text("Bearer ".into()));
        assert_eq!(p[1], Piece::Ref { kind: Kind::SelfRef, target: "auth.access_token".into(), default: None });
        let p = pieces("${last::Modified_Time, 2020-09-03T17:40:53-05:00}").unwrap();
        assert_eq!(p, vec![Piece::Ref { kind: Kind::Last, target: "Modified_Time".into(), default: Some("2020-09-03T17:40:53-05:00".into()) }]);
        let p = pieces("$(last::id, 1)/x").unwrap();
        assert_eq!(p[0], Piece::Ref { kind: Kind::Last, target: "id".into(), default: Some("1".into()) });
        assert_eq!(p[1], Piece::Text("/x".into()));
        assert!(pieces("${secret::a").unwrap_err().contains("unterminated"));
        assert!(pieces("${env::A}").unwrap_err().contains("unknown reference kind"));
        assert_eq!(secret_name("zoho-refresh.token"), "ZOHO_REFRESH_TOKEN");
    }
}
