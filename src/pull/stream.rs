//! Runs one (partition, stream): plans its windows, walks the pages of each, writes records to
//! raw files as pages arrive and hands each finished window to the catalogue writer with the
//! watermark it earns. Never holds more than one page of records in memory.
use super::records;
mod kept;
mod raw;
mod request;
pub use request::window_from;
use request::{rfc, Pass};
use kept::Kept;
use raw::RawPage;
use crate::json;
use crate::time::{cursor_instant, parse_instant};
use super::window;
use super::{Known, PullOptions, StreamReport};
use super::paginate::{Bound, Page, Paginator};
use crate::config::declare::Contract;
use crate::config::{Partition, Pipeline, Stream};
use crate::error::{Error, Result};
use crate::http::{Client, Effect, Request};
use crate::lake::state::{txn_app, watermark_app, LandedFile, Landing, StateWriter};
use crate::lake::{Lake, RawFile};
use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde_json::Value;

/// A stream that still has pages after this many fails instead of landing a partial window.
const MAX_PAGES: u64 = 1_000_000;

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
    /// The previous successful run's last-record fields (`${last:…}`).
    pub last: Option<&'a serde_json::Map<String, Value>>,
}

impl StreamRun<'_> {
    fn key(&self) -> (String, String) {
        (self.part.id.clone(), self.s.name.clone())
    }

    pub async fn run(&self) -> Result<StreamReport> {
        let mut rep = StreamReport::new(&self.part.id, &self.s.name);
        rep.started = Some(Utc::now());
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
        let mut det = match &self.s.details {
            Some(d) => {
                let current: Vec<String> = self
                    .known
                    .current
                    .iter()
                    .filter(|((part, stream, _), _)| *part == self.part.id && *stream == d.stream)
                    .map(|(_, (path, _))| path.clone())
                    .collect();
                Some(super::details::DetailRun {
                    cfg: d,
                    base_url: &self.p.base_url,
                    client: self.client,
                    auth: &self.part.auth,
                    lake: self.lake,
                    writer: self.writer,
                    concurrency: self.p.concurrency,
                    what: format!("{}/{}/{} details", self.p.name, self.part.id, self.s.name),
                    done: super::details::landed(self.lake, &current).await?,
                    pending: Vec::new(),
                    fetched: 0,
                })
            }
            None => None,
        };
        let mut best = self
            .known
            .watermarks
            .get(&self.key())
            .and_then(|w| parse_instant(w, &chrono_tz::UTC))
            .map(|t| t.timestamp());
        for pass in passes {
            if crate::stop::requested() {
                return Err(Error::Other(format!("{}/{}: stopped by a signal before its next window; a rerun resumes", self.part.id, self.s.name)));
            }
            let (landed, remove) = self.fetch_pass(&pass, &mut rep, &mut det).await?;
            tracing::debug!(partition = %self.part.id, stream = %self.s.name, file_date = %pass.date, records = rep.records, "window landed");
            version += 1;
            let mut txns = vec![(txn_app(&self.p.name, &self.part.id, &self.s.name), version)];
            // The stream's watermark as a txn too: the max over its rows (see `lake::state`).
            for r in &landed {
                best = best.max(r.watermark.as_deref().and_then(|w| parse_instant(w, &chrono_tz::UTC)).map(|t| t.timestamp()));
            }
            if let Some(secs) = best {
                txns.push((watermark_app(&self.p.name, &self.part.id, &self.s.name), secs));
            }
            if !landed.is_empty() {
                self.writer.land(Landing { rows: landed, txns, remove }).await?;
            }
        }
        rep.elapsed = started.elapsed();
        Ok(rep)
    }

    /// The slot a landing of `stream` for `date` fills, and a path for it that no catalogue
    /// row ever named and nothing occupies: a file is never overwritten in place. A window's
    /// slot is its base path (a re-pull supersedes it); each cursor-stream landing is its own.
    /// A `--from` backfill names its files by `backfill_template` (seed 003's date-less
    /// `file_.json`) while its slots stay `path_template`'s, so each window still supersedes
    /// only its own earlier landing.
    async fn fresh_rel(&self, stream: &str, date: &str, additive: bool) -> Result<(String, String)> {
        let fill = |t: &str| {
            t.replace("{source}", &self.p.name)
                .replace("{partition}", &self.part.id)
                .replace("{stream}", stream)
                .replace("{date}", date)
        };
        let slot_base = fill(&self.p.path_template);
        let base = match (&self.p.backfill_template, self.opts.from) {
            (Some(b), Some(_)) => fill(b),
            _ => slot_base.clone(),
        };
        let dot = base.rfind('.').filter(|d| *d > base.rfind('/').map_or(0, |s| s + 1)).unwrap_or(base.len());
        let (stem, ext) = base.split_at(dot);
        for n in 1u32.. {
            let rel = if n == 1 { base.clone() } else { format!("{stem}_{n}{ext}") };
            if self.known.used.contains(&rel) {
                continue;
            }
            match self.lake.store.head(&self.lake.path(&rel)).await {
                Ok(_) => continue,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let slot = if additive || self.s.incremental.is_some() { rel.clone() } else { slot_base };
            return Ok((rel, slot));
        }
        unreachable!()
    }

    /// The catalogue row of a landing of `stream` in `pass` (path and counts filled by the caller).
    fn row_base(&self, pass: &Pass, stream: &str) -> LandedFile {
        LandedFile {
            seq: 0,
            source: self.p.name.clone(),
            partition: self.part.id.clone(),
            stream: stream.to_string(),
            request: self.s.name.clone(),
            window_start: pass.span.map(|s| rfc(s.start)),
            window_end: pass.span.map(|s| rfc(s.end)),
            path: None,
            records: 0,
            bytes: 0,
            sha256: None,
            min_cursor: None,
            max_cursor: None,
            watermark: None,
            run_id: self.run_id.to_string(),
            landed_at: rfc(Utc::now()),
            slot: None,
            schema: None,
        }
    }

    /// Land the pending details of `det` (when `all`, or once a batch is full).
    async fn land_details(&self, pass: &Pass, det: &mut super::details::DetailRun<'_>, all: bool) -> Result<()> {
        if det.pending.is_empty() || (!all && det.pending.len() < det.cfg.batch) {
            return Ok(());
        }
        let (rel, _) = self.fresh_rel(&det.cfg.stream, &pass.date, true).await?;
        det.land(&rel, &self.row_base(pass, &det.cfg.stream)).await
    }

    async fn fetch_pass(
        &self,
        pass: &Pass,
        rep: &mut StreamReport,
        det: &mut Option<super::details::DetailRun<'_>>,
    ) -> Result<(Vec<LandedFile>, Vec<String>)> {
        let ctx = self.context(pass.span);
        let url = format!(
            "{}{}",
            self.p.base_url,
            self.fill(&self.s.path, pass)
        );
        let mut pager = Paginator::new(&self.s.pagination, pass.floor);
        let inc = self.s.incremental.as_ref();
        let fmt = |t: DateTime<Utc>| inc.map_or_else(String::new, |i| window::format_instant(t, &i.format, &i.tz));
        let floor_fn = |t: DateTime<Utc>| inc.map_or(t, |i| window::floor_to_format(t, &i.format));
        let bound = inc.and_then(|i| i.param.as_deref()).map(|param| Bound {
            param,
            format: &fmt,
            floor: &floor_fn,
        });
        let mut files: Vec<Option<(RawFile, String)>> = self.s.outputs.iter().map(|_| None).collect();
        let mut kept = Kept::default();
        // What earlier pulls landed within this pass's lookback (Zoho's If-Modified-Since less
        // a minute returns the boundary record again): each (key, cursor) lands once.
        if let (Some(inc), Some(pk), Some(floor)) = (&self.s.incremental, &self.s.primary_key, pass.floor) {
            for path in self.known.lookback.get(&self.key()).into_iter().flatten() {
                match self.lake.store.get(&self.lake.path(path)).await {
                    Ok(g) => kept.add_prior(&g.bytes().await?, pk, &inc.cursor, &inc.tz, floor),
                    Err(e) => tracing::warn!(file = %path, "cannot read an earlier landing to skip its records again: {e}"),
                }
            }
        }
        // Records kept as the bytes the API sent (json::raw) where nothing needs them as
        // values: one output, a plain array, no keyed map, no details, no condition on the body.
        // (A contract other than `evolve` reads each record as a value: see `conform`.)
        let contracts = self.s.outputs.iter().any(|o| self.p.declared.get(&o.stream).is_some_and(|d| d.contract != Contract::Evolve));
        let raw_path = match self.s.outputs.as_slice() {
            [o] if o.map_key.is_none()
                && !o.records.is_empty()
                && det.is_none()
                && !contracts
                && self.s.pagination.continue_if().is_none() =>
            {
                Some(o.records.as_slice())
            }
            _ => None,
        };
        let members = records::members(&ctx);
        let what = format!("{}/{}/{}", self.p.name, self.part.id, self.s.name);
        let result: Result<()> = async {
            loop {
                let req = pager.request(bound.as_ref());
                let mut q: Vec<(String, String)> = Vec::new();
                let target = match req.url {
                    Some(u) => u,
                    None => {
                        q.extend(
                            self.s
                                .params
                                .iter()
                                .map(|(k, v)| (k.clone(), self.fill(v, pass))),
                        );
                        q.extend(pass.extra.iter().cloned());
                        for (k, v) in req.query {
                            q.retain(|(qk, _)| *qk != k);
                            q.push((k, v));
                        }
                        url.clone()
                    }
                };
                let mut headers: Vec<(String, String)> =
                    self.s.headers.iter().map(|(k, v)| (k.clone(), self.fill(v, pass))).collect();
                headers.extend(pass.headers.iter().cloned());
                let body = self.s.body.as_ref().map(|b| self.fill_json(b, pass));
                let req = Request {
                    method: &self.s.method,
                    url: &target,
                    query: &q,
                    headers: &headers,
                    body: body.as_ref(),
                    split: raw_path,
                    // A pull only reads (a POST here lists: Milvus `chamado/listagem`).
                    effect: Effect::Safe,
                };
                let mut got = self
                    .client
                    .send(&req, &self.part.auth, &what)
                    .await
                    .map_err(|e| Error::Http(e.to_string()))?;
                if got.status == 304 {
                    // Nothing changed since the bound sent: done, watermark unchanged.
                    rep.pages += 1;
                    tracing::info!(stream = %what, "304 Not Modified: nothing new");
                    return Ok(());
                }
                rep.pages += 1;
                rep.retries += got.retries;
                rep.throttled += got.throttled;
                if let Some((bytes, ranges)) = got.raw.take() {
                    let more = self
                        .raw_page(RawPage { pass, bytes: &bytes, ranges: &ranges, got: &got, members: &members, ctx: &ctx }, &mut pager, bound.as_ref(), &mut kept, &mut files[0], rep, &what)
                        .await?;
                    if !self.next_page(rep, more, &what)? {
                        return Ok(());
                    }
                    continue;
                }
                // The paginator decides from the page as served (first output's records before
                // any client-side filter); then the records are moved out of the body, not copied.
                let more = {
                    let first = self.s.outputs.first();
                    let recs = match first {
                        Some(o) => records::view(&got.body, &o.records, o.map_key.as_deref()),
                        None => std::borrow::Cow::Owned(Vec::new()),
                    };
                    self.check_cap(recs.len(), rep, &what);
                    let page_cursors: Vec<DateTime<Utc>> = inc.map_or_else(Vec::new, |inc| {
                        recs.iter()
                            .filter_map(|r| json::at(r, &inc.cursor).and_then(|v| cursor_instant(v, &inc.tz)))
                            .collect()
                    });
                    let page = Page {
                        status: got.status,
                        body: &got.body,
                        headers: &got.headers,
                        count: recs.len(),
                        last: recs.last(),
                        cursors: &page_cursors,
                    };
                    pager.advance(&page, bound.as_ref(), &what).map_err(Error::Http)?
                };
                let mut body = std::mem::take(&mut got.body);
                for (i, out) in self.s.outputs.iter().enumerate() {
                    // Moved out unless another output reads the same part of the body.
                    let overlaps = self.s.outputs.iter().enumerate().any(|(j, o)| {
                        j != i && (o.records.starts_with(&out.records) || out.records.starts_with(&o.records))
                    });
                    let mut recs = if overlaps {
                        records::select(&body, &out.records, out.map_key.as_deref())
                    } else {
                        records::take(&mut body, &out.records, out.map_key.as_deref())
                    };
                    if let Some(inc) = &self.s.incremental {
                        recs.retain(|r| {
                            let c = json::at(r, &inc.cursor).and_then(|v| cursor_instant(v, &inc.tz));
                            let id = self.s.primary_key.as_ref().and_then(|pk| json::at(r, pk));
                            kept.keep(pass.floor, c, id)
                        });
                    }
                    if recs.is_empty() {
                        continue;
                    }
                    self.conform(&out.stream, &mut recs, rep, &what)?;
                    for r in &mut recs {
                        records::inject(r, &ctx);
                    }
                    self.open(&mut files[i], &out.stream, &pass.date).await?.write(&recs).await?;
                    rep.records += recs.len() as u64;
                    if i == 0 {
                        rep.last = recs.last().map(|r| r.to_string());
                        if let Some(d) = det.as_mut() {
                            let pk = self.s.primary_key.clone().unwrap_or_default();
                            let key = |r: &Value| json::at(r, &pk).map(json::text).unwrap_or_default();
                            let cur = |r: &Value| {
                                inc.and_then(|i| json::at(r, &i.cursor)).map(json::text).unwrap_or_default()
                            };
                            for chunk in recs.chunks(d.cfg.batch) {
                                d.fetch(chunk, &key, &cur).await?;
                                self.land_details(pass, d, false).await?;
                            }
                        }
                    }
                }
                if !self.next_page(rep, more, &what)? {
                    return Ok(());
                }
            }
        }
        .await;
        let result = match (result, det.as_mut()) {
            (Ok(()), Some(d)) => self.land_details(pass, d, true).await,
            (r, _) => r,
        };
        if let Err(e) = result {
            for (f, _) in files.into_iter().flatten() {
                f.abort().await;
            }
            return Err(e);
        }
        rep.windows += 1;
        rep.repeats += kept.repeats;
        // Files are whole now; build their catalogue rows.
        let watermark = match (&self.s.window, &self.s.incremental) {
            (Some(_), _) => pass.span.map(|sp| rfc(sp.end.min(self.now))),
            // A cursor past the pull's start (a record dated 2204, a clock far ahead) lands, but
            // the stored watermark stops at the start: else every later record would fall
            // below the bound and the stream would go silent for good.
            (_, Some(_)) => kept.max.map(|m| {
                if m > self.now + chrono::Duration::hours(1) {
                    tracing::warn!(stream = %format!("{}/{}/{}", self.p.name, self.part.id, self.s.name), cursor = %rfc(m), "a record's cursor is in the future: landed, but the watermark is kept at the pull's start");
                }
                rfc(m.min(self.now))
            }).max(
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
        let mut remove = Vec::new();
        let mut marker = None;
        for (i, out) in self.s.outputs.iter().enumerate() {
            let base = LandedFile {
                min_cursor: kept.min.map(rfc),
                max_cursor: kept.max.map(rfc),
                watermark: watermark.clone(),
                ..self.row_base(pass, &out.stream)
            };
            marker.get_or_insert_with(|| base.clone());
            if let Some((f, slot)) = files[i].take() {
                let (rel, n, b) = (f.rel.clone(), f.records as i64, f.bytes as i64);
                let (sha, schema) = f.finish().await?;
                rep.bytes += b as u64;
                let key = (self.part.id.clone(), out.stream.clone(), slot.clone());
                let prev = self.known.current.get(&key);
                if !self.opts.full_refresh && prev.is_some_and(|(_, h)| h.as_deref() == Some(sha.as_str())) {
                    // The very content already catalogued for this slot: no new row, no new file.
                    let _ = self.lake.store.delete(&self.lake.path(&rel)).await;
                } else {
                    rep.files += 1;
                    if let Some((old, _)) = prev {
                        remove.push(old.clone());
                    }
                    rows.push(LandedFile {
                        path: Some(rel),
                        records: n,
                        bytes: b,
                        sha256: Some(sha),
                        slot: Some(slot),
                        schema: Some(schema),
                        ..base
                    });
                }
            }
        }
        if rows.is_empty() && advanced {
            // Nothing new landed, but the window is done: record the watermark it earns.
            rows.extend(marker);
        }
        Ok((rows, remove))
    }

    /// A stream's contract on one page of `stream`'s records (before context fields are
    /// added): `freeze` fails the pass on the first record holding a field or a type its
    /// declaration lacks, naming record and fields (the pass's files are aborted: nothing of
    /// the window is committed); `discard_value` removes those values, counted in the report.
    fn conform(&self, stream: &str, recs: &mut [Value], rep: &mut StreamReport, what: &str) -> Result<()> {
        let Some(d) = self.p.declared.get(stream).filter(|d| d.contract != Contract::Evolve) else {
            return Ok(());
        };
        let drop = d.contract == Contract::DiscardValue;
        let mut dropped: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (n, r) in recs.iter_mut().enumerate() {
            let bad = crate::lake::schema::outside(d.schema.fields(), r, drop);
            if bad.is_empty() {
                continue;
            }
            if !drop {
                let key = self.s.primary_key.as_ref().and_then(|pk| json::at(r, pk)).map(json::text);
                let which = key.map_or_else(|| format!("record {} of the page", n + 1), |k| format!("record {k}"));
                return Err(Error::Other(format!(
                    "{what}: contract `freeze`: {which} has `{}`, which the declared schema of `{stream}` lacks (or not of that type); nothing of this window was committed",
                    bad.join("`, `")
                )));
            }
            for b in bad {
                *dropped.entry(b).or_default() += 1;
            }
        }
        if !dropped.is_empty() {
            let n: u64 = dropped.values().sum();
            rep.discarded += n;
            let fields: Vec<String> = dropped.iter().map(|(k, c)| format!("{k} ×{c}")).collect();
            tracing::warn!(stream = %what, values = n, fields = %fields.join(", "), "contract `discard_value`: values outside the declared schema were dropped");
        }
        Ok(())
    }

    /// After a page: progress, and whether to ask for the next one (an error past MAX_PAGES).
    fn next_page(&self, rep: &StreamReport, more: bool, what: &str) -> Result<bool> {
        self.progress.set_counts(rep.pages, rep.records);
        if rep.pages % 25 == 0 {
            tracing::info!(stream = %what, pages = rep.pages, records = rep.records, "pulling");
        }
        if more && crate::stop::requested() {
            return Err(Error::Other(format!("{what}: stopped by a signal before its next page; this window is not committed, a rerun resumes")));
        }
        if more && rep.pages >= MAX_PAGES {
            return Err(Error::Http(format!(
                "{what}: still more pages after {MAX_PAGES}; stopping without advancing the watermark"
            )));
        }
        Ok(more)
    }

    /// Warn once per page that reached the API's cap (records beyond it were not served).
    fn check_cap(&self, served: usize, rep: &mut StreamReport, what: &str) {
        if self.s.cap.is_some_and(|c| served >= c) {
            tracing::warn!(stream = %what, records = served, "the API's cap was reached: records beyond it were not returned (narrow the request, e.g. by a filter or partitions)");
            rep.capped = true;
        }
    }

    /// The raw file of `stream` in this pass, created at a fresh path on its first records.
    async fn open<'f>(&self, file: &'f mut Option<(RawFile, String)>, stream: &str, date: &str) -> Result<&'f mut RawFile> {
        if file.is_none() {
            let (rel, slot) = self.fresh_rel(stream, date, false).await?;
            *file = Some((RawFile::create(self.lake, &rel).await?, slot));
        }
        Ok(&mut file.as_mut().expect("just created").0)
    }
}
