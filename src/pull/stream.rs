//! Runs one (partition, stream): plans its windows, walks the pages of each, writes records to
//! raw files as pages arrive and hands each finished window to the catalogue writer with the
//! watermark it earns. Never holds more than one page of records in memory.
use super::records::{self, Condition};
use super::window::{self, Span};
use super::{Known, PullOptions, StreamReport};
use crate::config::PaginationKind;
use crate::config::{Partition, Pipeline, Stream};
use crate::error::{Error, Result};
use crate::http::Client;
use crate::lake::state::{txn_app, LandedFile, Landing, StateWriter};
use crate::lake::{Lake, RawFile};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::HashSet;

pub struct StreamRun<'a> {
    pub p: &'a Pipeline,
    pub part: &'a Partition,
    pub s: &'a Stream,
    pub client: &'a Client,
    pub lake: &'a Lake,
    pub writer: &'a StateWriter,
    pub known: &'a Known,
    pub opts: &'a PullOptions,
    pub run_id: &'a str,
    pub now: DateTime<Utc>,
    pub progress: &'a super::progress::Bar,
}

/// What one window (or one pass of a window-less stream) fetches.
struct Pass {
    span: Option<Span>,
    extra: Vec<(String, String)>,
    date: String,
    /// Records whose cursor is before this are dropped client-side.
    floor: Option<DateTime<Utc>>,
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl StreamRun<'_> {
    fn key(&self) -> (String, String) {
        (self.part.id.clone(), self.s.name.clone())
    }

    pub async fn run(&self) -> Result<StreamReport> {
        let mut rep = StreamReport::new(&self.part.id, &self.s.name);
        let started = std::time::Instant::now();
        let watermark = if self.opts.full_refresh {
            None
        } else {
            self.known.watermarks.get(&self.key()).cloned()
        };
        let mut version = self
            .known
            .versions
            .get(&txn_app(&self.p.name, &self.part.id, &self.s.name))
            .copied()
            .unwrap_or(0);
        let passes = self.plan(watermark.as_deref())?;
        for pass in passes {
            let landed = self.fetch_pass(&pass, &mut rep).await?;
            tracing::debug!(partition = %self.part.id, stream = %self.s.name, file_date = %pass.date, records = rep.records, "window landed");
            version += 1;
            let txns = vec![(txn_app(&self.p.name, &self.part.id, &self.s.name), version)];
            if !landed.is_empty() {
                self.writer.land(Landing { rows: landed, txns }).await?;
            }
        }
        rep.elapsed = started.elapsed();
        Ok(rep)
    }

    fn plan(&self, watermark: Option<&str>) -> Result<Vec<Pass>> {
        let wm = watermark.and_then(|w| records::parse_instant(w, &chrono_tz::UTC));
        if let Some(w) = &self.s.window {
            let from = match (self.opts.from, wm) {
                (Some(d), _) => window::day_start(d),
                (None, Some(wm)) => wm - w.lookback,
                (None, None) => match self.p.start {
                    Some(d) => window::day_start(d),
                    None => {
                        return Err(Error::Usage(format!(
                            "stream `{}`: no watermark yet and no `--from`; give --from or `start` in {}",
                            self.s.name, self.p.file
                        )))
                    }
                },
            };
            let to = window::day_start(self.opts.to) + chrono::Duration::days(1);
            return Ok(window::plan(from, to, w.size, self.now)
                .into_iter()
                .map(|span| Pass {
                    span: Some(span),
                    extra: window::params(w, span),
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
                (None, None) => None,
            };
            let extra = match (&inc.param, floor) {
                (Some(p), Some(f)) => {
                    vec![(p.clone(), window::format_instant(f, &inc.format, &inc.tz))]
                }
                _ => vec![],
            };
            return Ok(vec![Pass {
                span: None,
                extra,
                date,
                floor,
            }]);
        }
        Ok(vec![Pass {
            span: None,
            extra: vec![],
            date,
            floor: None,
        }])
    }

    fn context(&self, span: Option<Span>) -> Vec<(String, Value)> {
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

    fn file_rel(&self, stream: &str, date: &str) -> String {
        let base = self
            .p
            .path_template
            .replace("{source}", &self.p.name)
            .replace("{partition}", &self.part.id)
            .replace("{stream}", stream);
        if self.s.incremental.is_some() {
            // A cursor stream lands a new file per run: never overwrite a catalogued one.
            for n in 1.. {
                let d = if n == 1 {
                    date.to_string()
                } else {
                    format!("{date}_{n}")
                };
                let rel = base.replace("{date}", &d);
                if !self.known.paths.contains_key(&rel) {
                    return rel;
                }
            }
        }
        base.replace("{date}", date)
    }

    async fn fetch_pass(&self, pass: &Pass, rep: &mut StreamReport) -> Result<Vec<LandedFile>> {
        let ctx = self.context(pass.span);
        let url = format!(
            "{}{}",
            self.p.base_url,
            self.s.path.replace("{partition}", &self.part.id)
        );
        let pg = &self.s.pagination;
        let cond = pg
            .continue_if
            .as_deref()
            .map(Condition::parse)
            .transpose()
            .map_err(Error::Other)?;
        let mut files: Vec<Option<RawFile>> = self.s.outputs.iter().map(|_| None).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let (mut min_c, mut max_c): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        let mut page_no = pg.start.unwrap_or(1);
        let mut offset: u64 = 0;
        let mut cursor: Option<String> = None;
        let mut cursors: HashSet<String> = HashSet::new();
        let mut next_url: Option<String> = None;
        let what = format!("{}/{}/{}", self.p.name, self.part.id, self.s.name);
        let result: Result<()> = async {
            loop {
                let mut q: Vec<(String, String)> = Vec::new();
                let target = match &next_url {
                    Some(u) => u.clone(),
                    None => {
                        q.extend(
                            self.s
                                .params
                                .iter()
                                .map(|(k, v)| (k.clone(), v.replace("{partition}", &self.part.id))),
                        );
                        q.extend(pass.extra.iter().cloned());
                        if let (Some(sp), Some(size)) = (&pg.size_param, pg.page_size) {
                            q.push((sp.clone(), size.to_string()));
                        }
                        match pg.kind {
                            PaginationKind::PageNumber => q.push((pg.param.clone().unwrap(), page_no.to_string())),
                            PaginationKind::Offset => q.push((pg.param.clone().unwrap(), offset.to_string())),
                            PaginationKind::Cursor => {
                                if let Some(c) = &cursor {
                                    q.push((pg.param.clone().unwrap(), c.clone()));
                                }
                            }
                            _ => {}
                        }
                        url.clone()
                    }
                };
                let got = self
                    .client
                    .get(&target, &q, &self.part.auth, &what)
                    .await
                    .map_err(|e| Error::Http(e.to_string()))?;
                rep.pages += 1;
                rep.retries += got.retries;
                rep.throttled += got.throttled;
                let mut page_count = 0usize;
                let mut last_record: Option<Value> = None;
                for (i, out) in self.s.outputs.iter().enumerate() {
                    let mut recs = records::select(&got.body, &out.records, out.map_key.as_deref());
                    if i == 0 {
                        page_count = recs.len();
                        last_record = recs.last().cloned();
                    }
                    if let Some(inc) = &self.s.incremental {
                        recs.retain(|r| {
                            let c = records::at(r, &inc.cursor).and_then(|v| records::cursor_instant(v, &inc.tz));
                            if let (Some(f), Some(c)) = (pass.floor, c) {
                                if c < f {
                                    return false;
                                }
                            }
                            let id = self
                                .s
                                .primary_key
                                .as_ref()
                                .and_then(|pk| records::at(r, pk))
                                .map(|v| v.to_string());
                            if let Some(id) = id {
                                if !seen.insert(format!("{id}@{c:?}")) {
                                    return false;
                                }
                            }
                            if let Some(c) = c {
                                min_c = Some(min_c.map_or(c, |m| m.min(c)));
                                max_c = Some(max_c.map_or(c, |m| m.max(c)));
                            }
                            true
                        });
                    }
                    if recs.is_empty() {
                        continue;
                    }
                    for r in &mut recs {
                        records::inject(r, &ctx);
                    }
                    if files[i].is_none() {
                        files[i] = Some(RawFile::create(self.lake, &self.file_rel(&out.stream, &pass.date)).await?);
                    }
                    files[i].as_mut().unwrap().write(&recs).await?;
                    rep.records += recs.len() as u64;
                }
                self.progress.set_counts(rep.pages, rep.records);
                if rep.pages % 25 == 0 {
                    tracing::info!(stream = %what, pages = rep.pages, records = rep.records, "pulling");
                }
                // Where next?
                let short = pg.page_size.is_some_and(|s| (page_count as u64) < s);
                let mut more = match pg.kind {
                    PaginationKind::None => false,
                    PaginationKind::PageNumber | PaginationKind::Offset => {
                        let done_pages = (page_no - pg.start.unwrap_or(1) + 1) as u64;
                        offset += page_count as u64;
                        let reached = pg
                            .total
                            .as_deref()
                            .and_then(|t| records::at_str(&got.body, t))
                            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                            .is_some_and(|total| {
                                let seen = pg.page_size.map_or(offset, |s| done_pages * s).max(offset);
                                seen as f64 >= total
                            });
                        page_no += 1;
                        page_count > 0 && !short && !reached
                    }
                    PaginationKind::Cursor => {
                        let next = last_record
                            .as_ref()
                            .and_then(|r| records::at_str(r, pg.from.as_deref().unwrap()))
                            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                        if let Some(n) = &next {
                            if !cursors.insert(n.clone()) {
                                return Err(Error::Http(format!(
                                    "{what}: the API sent cursor {n:?} twice; stopping instead of paging in a loop"
                                )));
                            }
                        }
                        let more = page_count > 0 && !short && next.is_some();
                        cursor = next;
                        more
                    }
                    PaginationKind::NextLink => {
                        next_url = pg
                            .next
                            .as_deref()
                            .and_then(|n| records::at_str(&got.body, n))
                            .and_then(|v| v.as_str())
                            .filter(|s| !s.is_empty())
                            .map(str::to_string);
                        next_url.is_some() && page_count > 0
                    }
                    PaginationKind::LinkHeader => {
                        next_url = crate::http::next_link(&got.headers);
                        next_url.is_some() && page_count > 0
                    }
                };
                if let Some(c) = &cond {
                    more = more && c.holds(&got.body);
                }
                if !more || rep.pages > 1_000_000 {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            for f in files.into_iter().flatten() {
                f.abort().await;
            }
            return Err(e);
        }
        rep.windows += 1;
        // Files are whole now; build their catalogue rows.
        let watermark = match (&self.s.window, &self.s.incremental) {
            (Some(_), _) => pass.span.map(|sp| rfc(sp.end.min(self.now))),
            (_, Some(_)) => max_c.map(rfc).max(
                self.known
                    .watermarks
                    .get(&self.key())
                    .cloned()
                    .filter(|_| !self.opts.full_refresh),
            ),
            _ => Some(rfc(self.now)),
        };
        let old_wm = self
            .known
            .watermarks
            .get(&self.key())
            .filter(|_| !self.opts.full_refresh);
        let advanced = old_wm.is_none() || watermark.as_ref() > old_wm;
        let mut rows = Vec::new();
        let mut marker = None;
        for (i, out) in self.s.outputs.iter().enumerate() {
            let base = LandedFile {
                seq: 0,
                source: self.p.name.clone(),
                partition: self.part.id.clone(),
                stream: out.stream.clone(),
                request: self.s.name.clone(),
                window_start: pass.span.map(|s| rfc(s.start)),
                window_end: pass.span.map(|s| rfc(s.end)),
                path: None,
                records: 0,
                bytes: 0,
                sha256: None,
                min_cursor: min_c.map(rfc),
                max_cursor: max_c.map(rfc),
                watermark: watermark.clone(),
                run_id: self.run_id.to_string(),
                landed_at: rfc(Utc::now()),
            };
            marker.get_or_insert_with(|| base.clone());
            match files[i].take() {
                Some(f) => {
                    let (rel, n, b) = (f.rel.clone(), f.records as i64, f.bytes as i64);
                    let sha = f.finish().await?;
                    rep.bytes += b as u64;
                    // A file re-landed with the very content already catalogued adds no row.
                    if self.opts.full_refresh || self.known.paths.get(&rel) != Some(&sha) {
                        rep.files += 1;
                        rows.push(LandedFile {
                            path: Some(rel),
                            records: n,
                            bytes: b,
                            sha256: Some(sha),
                            ..base
                        });
                    }
                }
                None => {}
            }
        }
        if rows.is_empty() && advanced {
            // Nothing new landed, but the window is done: record the watermark it earns.
            rows.extend(marker);
        }
        Ok(rows)
    }
}
