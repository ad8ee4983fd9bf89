//! Turns a parsed pipeline file into a runnable [`Pipeline`]: every check that can fail runs
//! here, before any request or write, and names file, line and field.
use super::interp::{line_of, resolve_secret, substitute_env};
use super::*;
use crate::error::{Error, Result};
use crate::secret::Secret;
use chrono::NaiveDate;
use chrono_tz::Tz;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub file: String,
    pub base_url: String,
    pub start: Option<NaiveDate>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub rate: Option<RateConfig>,
    pub retry: RetryConfig,
    pub partition_field: Option<String>,
    pub partitions: Vec<Partition>,
    pub streams: Vec<Stream>,
    pub context: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub path_template: String,
    /// Where a `--from` backfill lands (see `SourceConfig::backfill_template`).
    pub backfill_template: Option<String>,
    pub sinks: Vec<(String, SinkConfig)>,
    /// Declared schemas and contracts per raw stream name (see `declare.rs`).
    pub declared: BTreeMap<String, super::declare::Declared>,
    /// `[schedule]`: when `ingest serve` runs this pipeline.
    pub schedule: Option<super::schedule::Schedule>,
}

#[derive(Debug, Clone)]
pub struct Partition {
    /// The partition value, or `_` for a source without partitions.
    pub id: String,
    pub auth: Auth,
}

/// Detail fetches of a stream (see `DetailsConfig`).
#[derive(Debug, Clone)]
pub struct Details {
    pub path: String,
    pub records: Vec<String>,
    pub stream: String,
    pub batch: usize,
    pub headers: Vec<(String, String)>,
}

/// An access token asked from a token endpoint (`AuthConfig::Oauth2Refresh` or
/// `AuthConfig::Refresh`), sent as `<header>: <prefix><token>`.
#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub token_url: String,
    pub method: String,
    pub header: String,
    pub prefix: String,
    /// The token goes in this query parameter instead of the header.
    pub param: Option<String>,
    pub token_key: String,
    pub expires_key: String,
    pub grant: Grant,
}

/// What the token request carries.
#[derive(Debug, Clone)]
pub enum Grant {
    /// OAuth2's refresh-token grant: `grant_type=refresh_token`, the refresh token, the client
    /// id and secret and `params` (a form body for POST, the query for GET); a refresh token the
    /// provider rotates is kept in `refresh_token_file`.
    RefreshToken {
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
        params: Vec<(String, String)>,
        refresh_token_file: Option<std::path::PathBuf>,
    },
    /// Seed 004's endpoint form: query parameters, headers and a JSON body as declared.
    Endpoint {
        query: Vec<(String, Secret)>,
        headers: Vec<(String, Secret)>,
        body: Option<Secret>,
    },
}

impl OAuth2 {
    /// What tells one grant from another (two sources sharing one share a token).
    pub fn identity(&self) -> String {
        match &self.grant {
            Grant::RefreshToken { client_id, .. } => format!("{}\u{1}{}", self.token_url, client_id.expose()),
            Grant::Endpoint { query, headers, .. } => {
                let q: Vec<String> = query.iter().chain(headers).map(|(k, v)| format!("{k}={}", v.expose())).collect();
                format!("{}\u{1}{}", self.token_url, q.join("&"))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    OAuth2(Box<OAuth2>),
    Header { name: String, value: Secret },
    Query { param: String, value: Secret },
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub path: String,
    pub details: Option<Details>,
    pub cap: Option<usize>,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<serde_json::Value>,
    pub params: BTreeMap<String, String>,
    pub outputs: Vec<Output>,
    pub pagination: Pagination,
    pub window: Option<Window>,
    pub incremental: Option<Incremental>,
    pub primary_key: Option<Vec<String>>,
    pub context: BTreeMap<String, String>,
    /// `once = true`: landed again only with `--full-refresh` or after `refresh_every`
    /// (`Some(None)`: never by itself).
    pub once: Option<Option<chrono::Duration>>,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub stream: String,
    pub records: Vec<String>,
    pub map_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WireFormat {
    Unix,
    UnixMs,
    Strftime(String),
}

#[derive(Debug, Clone)]
pub struct Window {
    pub size: chrono::Duration,
    pub since: Option<String>,
    pub until: Option<String>,
    pub range: Option<String>,
    pub separator: String,
    pub format: WireFormat,
    pub tz: Tz,
    pub inclusive_end: bool,
    pub lookback: chrono::Duration,
}

#[derive(Debug, Clone)]
pub struct Incremental {
    pub cursor: Vec<String>,
    pub param: Option<String>,
    /// The bound goes in this header instead (`If-Modified-Since`).
    pub header: Option<String>,
    pub format: WireFormat,
    pub tz: Tz,
    pub lookback: chrono::Duration,
    /// The bound when there is no watermark and no `--from`.
    pub start: Option<chrono::DateTime<chrono::Utc>>,
}

/// Read, substitute, parse and validate `<dir>/<source>.toml`.
pub fn load(dir: &Path, source: &str) -> Result<Pipeline> {
    if source.is_empty()
        || !source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::Usage(format!("invalid source name {source:?}")));
    }
    let path = dir.join(format!("{source}.toml"));
    let file = path.display().to_string();
    let raw = std::fs::read_to_string(&path).map_err(|e| {
        let known = list_sources(dir);
        Error::Usage(format!(
            "unknown source `{source}`: cannot read {file} ({e}); pipelines in {}: {}",
            dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let text = substitute_env(&file, &raw)?;
    let text = super::interp::substitute_self(&file, &text)?;
    let parsed: PipelineFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Error::config(&file, line, None, e.message().to_string())
    })?;
    let doc: toml::Value = toml::from_str(&text).map_err(|e| Error::config(&file, None, None, e.message().to_string()))?;
    let declared = super::declare::of_file(&file, &text, &doc)?;
    let mut p = Checker {
        file: &file,
        text: &text,
    }
    .pipeline(parsed, source)?;
    p.declared = declared;
    Ok(p)
}

pub fn list_sources(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".toml"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, path: &[&str], msg: impl Into<String>) -> Error {
        Error::config(self.file, line_of(self.text, path), Some(&path.join(".")), msg)
    }

    fn pipeline(&self, p: PipelineFile, source: &str) -> Result<Pipeline> {
        let s = p.source;
        if s.name != source {
            return Err(self.err(
                &["source", "name"],
                format!("is `{}` but the file is `{source}.toml`", s.name),
            ));
        }
        let env_key = format!("{}_BASE_URL", s.name.to_uppercase().replace('-', "_"));
        let base_url = std::env::var(&env_key)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or(s.base_url);
        let parsed = url::Url::parse(&base_url)
            .map_err(|e| self.err(&["source", "base_url"], format!("`{base_url}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(self.err(&["source", "base_url"], "must be http or https"));
        }
        let start = match &s.start {
            Some(d) => Some(parse_date(d).map_err(|m| self.err(&["source", "start"], m))?),
            None => None,
        };
        if s.concurrency == 0 {
            return Err(self.err(&["source", "concurrency"], "must be at least 1"));
        }
        if let Some(r) = &s.rate {
            if r.requests == 0 || !(r.per_seconds > 0.0 && r.per_seconds <= 86_400.0) {
                return Err(self.err(&["source", "rate"], "requests must be positive and per_seconds a number of seconds in (0, 86400]"));
            }
        }
        if s.retry.max_attempts == 0 || s.retry.max_attempts > 100 {
            return Err(self.err(&["source", "retry", "max_attempts"], "must be 1 to 100"));
        }
        if s.retry.max_delay_ms > 3_600_000 || s.retry.base_delay_ms > s.retry.max_delay_ms {
            return Err(self.err(&["source", "retry", "max_delay_ms"], "base_delay_ms ≤ max_delay_ms ≤ 3600000 (an hour)"));
        }
        if s.retry.max_retry_after_secs > 86_400 || s.retry.throttle_wait_ms > 3_600_000 {
            return Err(self.err(&["source", "retry", "max_retry_after_secs"], "at most 86400 s (and throttle_wait_ms at most an hour)"));
        }
        if s.timeout_secs == 0 || s.timeout_secs > 3600 {
            return Err(self.err(&["source", "timeout_secs"], format!("{} is outside 1..=3600 seconds", s.timeout_secs)));
        }
        if !s.path_template.contains("{stream}") || !s.path_template.contains("{date}") || !s.path_template.ends_with(".json") {
            return Err(self.err(&["source", "path_template"], "must contain {stream} and {date} and end in .json"));
        }
        if s.path_template.split('/').any(|seg| seg.starts_with('_') && !seg.starts_with('{')) {
            return Err(self.err(&["source", "path_template"], "no folder of it may start with `_` (the lake's own: _ingest, _delta_log)"));
        }
        if let Some(b) = &s.backfill_template {
            let same_partitioning = s.path_template.contains("{partition}") == b.contains("{partition}");
            if !b.contains("{stream}") || !b.ends_with(".json") || !same_partitioning {
                return Err(self.err(&["source", "backfill_template"], "must contain {stream} (and {partition} when path_template does) and end in .json"));
            }
            if b.split('/').any(|seg| seg.starts_with('_') && !seg.starts_with('{')) {
                return Err(self.err(&["source", "backfill_template"], "no folder of it may start with `_` (the lake's own: _ingest, _delta_log)"));
            }
        }
        if ["raw", "_ingest"].contains(&s.name.as_str()) || s.name.starts_with('_') {
            return Err(self.err(&["source", "name"], format!("`{}` is reserved (raw tables, the lake's state)", s.name)));
        }
        let (partition_field, ids) = match &s.partitions {
            Some(pc) => {
                let ids: Vec<String> = pc
                    .values
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if ids.is_empty() {
                    return Err(self.err(&["source", "partitions", "values"], "lists no partition"));
                }
                if let Some(bad) = ids
                    .iter()
                    .find(|v| !v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
                {
                    return Err(self.err(
                        &["source", "partitions", "values"],
                        format!("`{bad}` is not a valid partition value (letters, digits, _ . -)"),
                    ));
                }
                (Some(pc.field.clone()), ids)
            }
            None => (None, vec!["_".to_string()]),
        };
        let mut partitions = Vec::new();
        for id in ids {
            partitions.push(Partition {
                auth: self.auth(&s.auth, &id)?,
                id,
            });
        }
        let mut streams = Vec::new();
        let mut outputs_seen = std::collections::BTreeSet::new();
        for (name, sc) in p.streams {
            let st = self.stream(&name, sc)?;
            for o in &st.outputs {
                if !outputs_seen.insert(o.stream.clone()) {
                    return Err(self.err(
                        &["streams", &name],
                        format!("output stream `{}` is declared twice", o.stream),
                    ));
                }
            }
            streams.push(st);
        }
        if streams.is_empty() {
            return Err(self.err(&["streams"], "no stream declared"));
        }
        // `${secret:NAME}` in a stream's headers, params or body is resolved when the request
        // is sent: every one must be set now, for every partition (exit 2 before any request).
        for st in &streams {
            let mut texts: Vec<(&str, String)> = Vec::new();
            texts.extend(st.headers.values().map(|v| ("headers", v.clone())));
            texts.extend(st.params.values().map(|v| ("params", v.clone())));
            if let Some(b) = &st.body {
                texts.push(("body", b.to_string()));
            }
            for (field, text) in texts.iter().filter(|(_, t)| t.contains("${secret:")) {
                for p in &partitions {
                    resolve_secret(&text.replace("{partition}", &p.id)).map_err(|m| self.err(&["streams", &st.name, field], m))?;
                }
            }
        }
        let schedule = match &p.schedule {
            Some(v) => Some(super::schedule::parse(v).map_err(|(field, m)| match field {
                "schedule" => self.err(&["schedule"], m),
                f => self.err(&["schedule", f], m),
            })?),
            None => None,
        };
        let mut sinks = Vec::new();
        for (name, mut k) in p.sinks {
            let at = |f: &'static str| -> Vec<String> { vec!["sinks".into(), name.clone(), f.into()] };
            let err = |f: &'static str, m: String| {
                let path = at(f);
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                self.err(&refs, m)
            };
            if k.batch.size == 0 || k.batch.size > k.batch.max {
                return Err(err("batch", format!("size {} is outside 1..={}, the API's batch maximum", k.batch.size, k.batch.max)));
            }
            if k.batch.parallel == 0 {
                return Err(err("batch", "parallel must be 1 or more".into()));
            }
            if k.mode != "upsert" && k.mode != "create_once" {
                return Err(err("mode", format!("`{}`: expected upsert or create_once", k.mode)));
            }
            if !k.path.starts_with('/') {
                return Err(err("path", "must start with `/`".into()));
            }
            k.method = k.method.to_uppercase();
            if !["POST", "PUT", "PATCH", "DELETE"].contains(&k.method.as_str()) {
                return Err(err("method", format!("`{}`: expected POST, PUT, PATCH or DELETE", k.method)));
            }
            if let Some(l) = &mut k.lookup {
                l.method = l.method.to_uppercase();
                if l.method != "GET" && l.method != "POST" {
                    return Err(err("lookup", format!("method `{}`: expected GET or POST", l.method)));
                }
            }
            if let Some(j) = &k.job {
                if j.poll_ms == 0 || j.max_poll_ms < j.poll_ms {
                    return Err(err("job", "poll_ms must be at least 1 and at most max_poll_ms".into()));
                }
            }
            sinks.push((name, k));
        }
        Ok(Pipeline {
            name: s.name,
            file: self.file.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            start,
            concurrency: s.concurrency,
            timeout: Duration::from_secs(s.timeout_secs),
            rate: s.rate,
            retry: s.retry,
            partition_field,
            partitions,
            streams,
            context: s.context,
            headers: s.headers,
            path_template: s.path_template,
            backfill_template: s.backfill_template,
            sinks,
            declared: BTreeMap::new(),
            schedule,
        })
    }

    fn auth(&self, a: &AuthConfig, partition: &str) -> Result<Auth> {
        let secret = |field: &str, v: &str| -> Result<Secret> {
            resolve_secret(&v.replace("{partition}", partition)).map_err(|m| self.err(&["source", "auth", field], m))
        };
        Ok(match a {
            AuthConfig::None => Auth::None,
            AuthConfig::Bearer { header, prefix, token } => {
                let t = secret("token", token)?;
                Auth::Header {
                    name: header.clone(),
                    value: Secret::new(format!("{prefix}{}", t.expose())),
                }
            }
            AuthConfig::ApiKey { header, key } => Auth::Header {
                name: header.clone(),
                value: secret("key", key)?,
            },
            AuthConfig::Query { param, token } => Auth::Query {
                param: param.clone(),
                value: secret("token", token)?,
            },
            AuthConfig::Basic { username, password } => Auth::Basic {
                username: username.clone(),
                password: secret("password", password)?,
            },
            AuthConfig::Oauth2Refresh {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                header,
                prefix,
                method,
                token_key,
                expires_key,
                params,
                refresh_token_file,
            } => {
                let method = method.to_uppercase();
                if method != "GET" && method != "POST" {
                    return Err(self.err(&["source", "auth", "method"], format!("`{method}`: expected GET or POST")));
                }
                if !token_url.starts_with("http://") && !token_url.starts_with("https://") {
                    return Err(self.err(&["source", "auth", "token_url"], format!("`{token_url}` is not an http(s) URL")));
                }
                Auth::OAuth2(Box::new(OAuth2 {
                    token_url: token_url.replace("{partition}", partition),
                    method,
                    header: header.clone(),
                    prefix: prefix.clone(),
                    param: None,
                    token_key: token_key.clone(),
                    expires_key: expires_key.clone(),
                    grant: Grant::RefreshToken {
                        client_id: secret("client_id", client_id)?,
                        client_secret: secret("client_secret", client_secret)?,
                        refresh_token: secret("refresh_token", refresh_token)?,
                        params: params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        refresh_token_file: refresh_token_file
                            .as_ref()
                            .map(|f| std::path::PathBuf::from(f.replace("{partition}", partition))),
                    },
                }))
            }
            AuthConfig::Refresh { url, method, query_params, headers, body, response_token_key, expires_key, header, prefix, param } => {
                let method = method.to_uppercase();
                if method != "GET" && method != "POST" {
                    return Err(self.err(&["source", "auth", "method"], format!("`{method}`: expected GET or POST")));
                }
                let url = url.replace("{partition}", partition);
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(self.err(&["source", "auth", "url"], format!("`{url}` is not an http(s) URL")));
                }
                if response_token_key.is_empty() {
                    return Err(self.err(&["source", "auth", "response_token_key"], "must name the answer's token field (a JSON path, e.g. access_token)"));
                }
                let pairs = |field: &'static str, m: &BTreeMap<String, String>| -> Result<Vec<(String, Secret)>> {
                    m.iter()
                        .map(|(k, v)| resolve_secret(&v.replace("{partition}", partition)).map(|s| (k.clone(), s)).map_err(|e| self.err(&["source", "auth", field, k], e)))
                        .collect()
                };
                let body = match body {
                    None => None,
                    Some(b) => {
                        // Each string resolved on its own, then the JSON written (a secret
                        // holding a quote stays one string).
                        fn walk(v: &toml::Value, f: &dyn Fn(&str) -> std::result::Result<String, String>) -> std::result::Result<serde_json::Value, String> {
                            Ok(match v {
                                toml::Value::String(s) => serde_json::Value::String(f(s)?),
                                toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(|x| walk(x, f)).collect::<std::result::Result<_, _>>()?),
                                toml::Value::Table(t) => serde_json::Value::Object(t.iter().map(|(k, x)| Ok((k.clone(), walk(x, f)?))).collect::<std::result::Result<_, String>>()?),
                                other => serde_json::to_value(other).map_err(|e| e.to_string())?,
                            })
                        }
                        let json = walk(b, &|s| resolve_secret(&s.replace("{partition}", partition)).map(|x| x.expose().to_string()))
                            .map_err(|e| self.err(&["source", "auth", "body"], e))?;
                        Some(Secret::new(json.to_string()))
                    }
                };
                Auth::OAuth2(Box::new(OAuth2 {
                    token_url: url,
                    method,
                    header: header.clone(),
                    prefix: prefix.clone(),
                    param: param.clone().filter(|p| !p.is_empty()),
                    token_key: response_token_key.clone(),
                    expires_key: expires_key.clone(),
                    grant: Grant::Endpoint { query: pairs("query_params", query_params)?, headers: pairs("headers", headers)?, body },
                }))
            }
        })
    }

    fn stream(&self, name: &str, sc: StreamConfig) -> Result<Stream> {
        let at = |k: &'static str| -> Vec<&str> { vec!["streams", name, k] };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.err(&["streams", name], "stream names are letters, digits and _"));
        }
        if !sc.path.starts_with('/') {
            return Err(self.err(&at("path"), "must start with `/`"));
        }
        let outputs = match (&sc.records, sc.outputs.is_empty()) {
            (Some(_), false) => return Err(self.err(&at("outputs"), "give either `records` or `outputs`, not both")),
            (r, true) => vec![Output {
                stream: name.to_string(),
                records: split_path(r.as_deref().unwrap_or("")),
                map_key: sc.map_key.clone(),
            }],
            (None, false) => sc
                .outputs
                .iter()
                .map(|o| Output {
                    stream: o.stream.clone(),
                    records: split_path(&o.records),
                    map_key: o.map_key.clone(),
                })
                .collect(),
        };
        let pagination = sc.pagination.clone().unwrap_or(Pagination::None);
        let pk = |k: &'static str| -> Vec<&str> { vec!["streams", name, "pagination", k] };
        if let Pagination::PageNumber { continue_while_status_code_is: Some(_), stop_when_response_body_is_empty: true, .. } =
            &pagination
        {
            return Err(self.err(
                &pk("stop_when_response_body_is_empty"),
                "give either `continue_while_status_code_is` or `stop_when_response_body_is_empty`, not both (seed 004)",
            ));
        }
        if let Pagination::PageNumber { step, .. } = &pagination {
            if *step < 1 {
                return Err(self.err(&pk("step"), "must be 1 or more"));
            }
        }
        if let Some((size, max)) = pagination.size_limit() {
            if size > max || size == 0 {
                return Err(self.err(&pk("page_size"), format!("{size} is outside 1..={max}, the API's page size range")));
            }
        }
        if let Some(ci) = pagination.continue_if() {
            crate::json::Condition::parse(ci).map_err(|m| self.err(&pk("continue_if"), m))?;
        }
        if matches!(pagination, Pagination::Keyset { .. })
            && sc.incremental.as_ref().is_none_or(|i| i.param.is_none())
        {
            return Err(self.err(
                &pk("type"),
                "keyset pagination needs an `incremental` cursor with a `param` (the bound it moves)",
            ));
        }
        let window = match &sc.window {
            Some(w) => Some(self.window(name, w)?),
            None => None,
        };
        let incremental = match &sc.incremental {
            Some(i) => {
                let ip = |k: &'static str| -> Vec<&str> { vec!["streams", name, "incremental", k] };
                if i.param.is_some() && i.header.is_some() {
                    return Err(self.err(&ip("header"), "give the bound as `param` or as `header`, not both"));
                }
                Some(Incremental {
                    cursor: split_path(&i.cursor),
                    param: i.param.clone(),
                    header: i.header.clone(),
                    format: parse_format(&i.format).map_err(|m| self.err(&ip("format"), m))?,
                    tz: i
                        .timezone
                        .parse()
                        .map_err(|_| self.err(&ip("timezone"), format!("unknown time zone `{}`", i.timezone)))?,
                    lookback: parse_duration(&i.lookback).map_err(|m| self.err(&ip("lookback"), m))?,
                    start: match &i.start {
                        Some(s) => Some(
                            crate::time::parse_instant(s, &chrono_tz::UTC)
                                .ok_or_else(|| self.err(&ip("start"), format!("`{s}`: an instant like 2020-09-03T17:40:53-05:00")))?,
                        ),
                        None => None,
                    },
                })
            }
            None => None,
        };
        if window.is_some() && incremental.is_some() {
            return Err(self.err(
                &at("incremental"),
                "a stream has either `window` or `incremental`, not both",
            ));
        }
        let method = sc.method.to_uppercase();
        if method != "GET" && method != "POST" {
            return Err(self.err(&at("method"), format!("`{}`: expected GET or POST", sc.method)));
        }
        let body = match &sc.body {
            Some(b) => Some(serde_json::to_value(b).map_err(|e| self.err(&at("body"), e.to_string()))?),
            None => None,
        };
        let details = match &sc.details {
            Some(d) => {
                let dp = |k: &'static str| -> Vec<&str> { vec!["streams", name, "details", k] };
                if sc.primary_key.is_none() {
                    return Err(self.err(&dp("path"), "detail fetches need the stream's `primary_key` (the parent key)"));
                }
                let absolute = d.path.starts_with("http://") || d.path.starts_with("https://");
                if !(d.path.starts_with('/') || absolute) || !d.path.contains("{record.") {
                    return Err(self.err(&dp("path"), "must start with `/` (or be a whole http(s) URL) and name the record, e.g. `/Deals/{record.id}`"));
                }
                if absolute && url::Url::parse(&d.path.replace("{record.", "x").replace('}', "")).is_err() {
                    return Err(self.err(&dp("path"), format!("`{}` is not a URL", d.path)));
                }
                if d.batch == 0 {
                    return Err(self.err(&dp("batch"), "must be 1 or more"));
                }
                for (k, v) in &d.headers {
                    if v.contains("${secret:") {
                        resolve_secret(v).map_err(|m| self.err(&["streams", name, "details", "headers", k.as_str()], m))?;
                    }
                }
                Some(Details {
                    path: d.path.clone(),
                    records: split_path(&d.records),
                    stream: d.stream.clone(),
                    batch: d.batch,
                    headers: d.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
            }
            None => None,
        };
        let once = match (sc.once, &sc.refresh_every) {
            (false, None) => None,
            (false, Some(_)) => return Err(self.err(&at("refresh_every"), "applies to a `once = true` stream")),
            (true, _) if window.is_some() || incremental.is_some() => {
                return Err(self.err(&at("once"), "a stream landed once has no windows or incremental cursor"))
            }
            (true, None) => Some(None),
            (true, Some(r)) => {
                let d = parse_duration(r).map_err(|m| self.err(&at("refresh_every"), m))?;
                if d < chrono::Duration::hours(1) {
                    return Err(self.err(&at("refresh_every"), "must be at least 1h"));
                }
                Some(Some(d))
            }
        };
        Ok(Stream {
            once,
            name: name.to_string(),
            path: sc.path,
            details,
            cap: sc.cap,
            method,
            headers: sc.headers,
            body,
            params: sc.params,
            outputs,
            pagination,
            window,
            incremental,
            primary_key: sc.primary_key.as_deref().map(split_path),
            context: sc.context,
        })
    }

    fn window(&self, name: &str, w: &WindowConfig) -> Result<Window> {
        let at = |k: &'static str| -> Vec<&str> { vec!["streams", name, "window", k] };
        let size = parse_duration(&w.size).map_err(|m| self.err(&at("size"), m))?;
        if size < chrono::Duration::minutes(1) {
            return Err(self.err(&at("size"), "must be at least 1m"));
        }
        if w.range.is_none() && w.since.is_none() && w.until.is_none() {
            return Err(self.err(&at("since"), "a window needs `since`/`until` or `range` parameters"));
        }
        let inclusive_end = match w.end.as_str() {
            "exclusive" => false,
            "inclusive" => true,
            other => return Err(self.err(&at("end"), format!("`{other}`: expected exclusive or inclusive"))),
        };
        Ok(Window {
            size,
            since: w.since.clone(),
            until: w.until.clone(),
            range: w.range.clone(),
            separator: w.separator.clone(),
            format: parse_format(&w.format).map_err(|m| self.err(&at("format"), m))?,
            tz: w
                .timezone
                .parse()
                .map_err(|_| self.err(&at("timezone"), format!("unknown time zone `{}`", w.timezone)))?,
            inclusive_end,
            lookback: {
                let l = parse_duration(&w.lookback).map_err(|m| self.err(&at("lookback"), m))?;
                if l.is_zero() {
                    tracing::warn!(file = %self.file, stream = name, "the window has no `lookback`: rows that reach the API late for an already pulled window are never landed");
                }
                l
            },
        })
    }
}

pub use crate::json::split_path;

pub fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
}

pub fn parse_duration(s: &str) -> std::result::Result<chrono::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 15m, 6h, 1d)"))?;
    let d = match unit {
        "s" | "" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => return Err(format!("`{s}` has an unknown unit (s, m, h, d)")),
    };
    // Nothing a pipeline describes spans more than a century (windows, lookbacks).
    d.filter(|d| *d <= chrono::Duration::days(36_500)).ok_or_else(|| format!("`{s}` is longer than 100 years"))
}

pub fn parse_format(s: &str) -> std::result::Result<WireFormat, String> {
    match s {
        "unix" => Ok(WireFormat::Unix),
        "unix_ms" => Ok(WireFormat::UnixMs),
        f => {
            use chrono::format::{Item, StrftimeItems};
            if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                Err(format!("`{f}` is not a valid strftime pattern"))
            } else {
                Ok(WireFormat::Strftime(f.to_string()))
            }
        }
    }
}
