//! What one pass of a stream asks: its windows or incremental bound (the plan), and its
//! request templates filled (`{partition}`, `{window_*}`, `{cursor}`, `${last:…}`, secrets at
//! the wire) and its context fields.
use super::StreamRun;
use crate::config::{Pipeline, Stream};
use crate::error::{Error, Result};
use crate::pull::window::{self, Span};
use crate::pull::PullOptions;
use crate::time::parse_instant;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Where a windowed stream's run starts (its first window's start, before alignment): `--from`,
/// else the watermark less the lookback, else the pipeline's `start`. None for a stream
/// without windows.
pub fn window_from(p: &Pipeline, s: &Stream, opts: &PullOptions, watermark: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    let Some(w) = &s.window else { return Ok(None) };
    let wm = watermark.and_then(|w| parse_instant(w, &chrono_tz::UTC));
    Ok(Some(match (opts.from, wm) {
        (Some(d), _) => window::day_start(d),
        (None, Some(wm)) => wm - w.lookback,
        (None, None) => match p.start {
            Some(d) => window::day_start(d),
            None => {
                return Err(Error::Usage(format!(
                    "stream `{}`: no watermark yet and no `--from`; give --from or `start` in {}",
                    s.name, p.file
                )))
            }
        },
    }))
}

/// What one window (or one pass of a window-less stream) fetches.
pub(super) struct Pass {
    pub(super) span: Option<Span>,
    pub(super) extra: Vec<(String, String)>,
    /// Headers the pass adds (an incremental bound sent as `If-Modified-Since`).
    pub(super) headers: Vec<(String, String)>,
    pub(super) date: String,
    /// Records whose cursor is before this are dropped client-side.
    pub(super) floor: Option<DateTime<Utc>>,
}

pub(super) fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl StreamRun<'_> {
    pub(super) fn plan(&self, watermark: Option<&str>) -> Result<Vec<Pass>> {
        let wm = watermark.and_then(|w| parse_instant(w, &chrono_tz::UTC));
        if let Some(w) = &self.s.window {
            let from = window_from(self.p, self.s, self.opts, watermark)?.unwrap_or_default();
            let to = window::day_start(self.opts.to) + chrono::Duration::days(1);
            return Ok(window::plan(from, to, w.size, self.now)
                .into_iter()
                .map(|span| Pass {
                    span: Some(span),
                    extra: window::params(w, span),
                    headers: vec![],
                    date: window::file_date(span, w.size),
                    floor: None,
                })
                .collect());
        }
        let date = self.now.format("%Y-%m-%d").to_string();
        if let Some(inc) = &self.s.incremental {
            let floor = match (self.opts.from, wm) {
                (Some(d), _) => Some(window::day_start(d)),
                (None, Some(wm)) => Some(wm - inc.lookback),
                (None, None) => inc.start,
            };
            let bound = |name: &Option<String>| match (name, floor) {
                (Some(p), Some(f)) => vec![(p.clone(), window::format_instant(f, &inc.format, &inc.tz))],
                _ => vec![],
            };
            return Ok(vec![Pass {
                span: None,
                extra: bound(&inc.param),
                headers: bound(&inc.header),
                date,
                floor,
            }]);
        }
        Ok(vec![Pass {
            span: None,
            extra: vec![],
            headers: vec![],
            date,
            floor: None,
        }])
    }

    /// A request template (`{partition}`, `{stream}`, `{window_start}`, `{window_end}`).
    pub(super) fn fill(&self, tpl: &str, pass: &Pass) -> String {
        // `${last:…}` were checked before the run started.
        let tpl = crate::pull::fill_last(tpl, self.last).unwrap_or_else(|_| tpl.to_string());
        // One pass (json/template.rs): a partition value holding `{window_start}` is text.
        let mut v = crate::json::template::render(&tpl, |k| match k {
            "partition" => Some(self.part.id.clone()),
            "stream" => Some(self.s.name.clone()),
            "window_start" => pass.span.map(|sp| rfc(sp.start)),
            "window_end" => pass.span.map(|sp| rfc(sp.end)),
            // The incremental bound of this pass in the stream's wire format (empty on a full load).
            "cursor" => Some(match (&self.s.incremental, pass.floor) {
                (Some(i), Some(f)) => window::format_instant(f, &i.format, &i.tz),
                _ => String::new(),
            }),
            _ => None,
        });
        if v.contains("${secret:") {
            // Resolved at the wire only (checked when the pipeline loaded; the value is
            // registered, so every log line and error scrubs it).
            if let Ok(s) = crate::config::interp::resolve_secret(&v) {
                v = s.expose().to_string();
            }
        }
        v
    }

    /// Every string of a JSON body filled like [`Self::fill`].
    pub(super) fn fill_json(&self, v: &Value, pass: &Pass) -> Value {
        match v {
            Value::String(s) => Value::String(self.fill(s, pass)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.fill_json(x, pass)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), self.fill_json(x, pass))).collect()),
            other => other.clone(),
        }
    }

    pub(super) fn context(&self, span: Option<Span>) -> Vec<(String, Value)> {
        let mut ctx = Vec::new();
        if let Some(f) = &self.p.partition_field {
            ctx.push((f.clone(), Value::String(self.part.id.clone())));
        }
        for (k, tpl) in self.p.context.iter().chain(self.s.context.iter()) {
            let needs_window = tpl.contains("{window_start}") || tpl.contains("{window_end}");
            let v = match (needs_window, span) {
                (true, None) => Value::Null,
                (_, span) => {
                    let mut v = tpl
                        .replace("{partition}", &self.part.id)
                        .replace("{stream}", &self.s.name);
                    if let Some(sp) = span {
                        v = v
                            .replace("{window_start}", &rfc(sp.start))
                            .replace("{window_end}", &rfc(sp.end));
                    }
                    Value::String(v)
                }
            };
            ctx.push((k.clone(), v));
        }
        ctx
    }
}
