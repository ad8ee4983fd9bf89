//! `[streams.<name>]` checked into a runnable [`Stream`]: request, pagination, windows,
//! incremental cursor, details and once-streams.
use super::*;
use crate::config::interp::resolve_secret;
use crate::error::Result;

impl Checker<'_> {
    pub(super) fn stream(&self, name: &str, sc: StreamConfig) -> Result<Stream> {
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
