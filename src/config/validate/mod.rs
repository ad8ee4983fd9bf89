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

mod auth;
mod stream;

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
        if let Some(b) = &s.backfill_template {
            let same_partitioning = s.path_template.contains("{partition}") == b.contains("{partition}");
            if !b.contains("{stream}") || !b.ends_with(".json") || !same_partitioning {
                return Err(self.err(&["source", "backfill_template"], "must contain {stream} (and {partition} when path_template does) and end in .json"));
            }
        }
        for (field, t) in [("path_template", Some(&s.path_template)), ("backfill_template", s.backfill_template.as_ref())] {
            if t.is_some_and(|t| t.split('/').any(|seg| seg.starts_with('_') && !seg.starts_with('{'))) {
                return Err(self.err(&["source", field], "no folder of it may start with `_` (the lake's own: _ingest, _delta_log)"));
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
