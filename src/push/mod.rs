//! `ingest push`: the rows of a sink's table sent to its API, each record once. For every row:
//! payload (columns → JSON fields) and its hash; rows whose key the ledger already holds as
//! `sent` with that hash are skipped. The intent is committed to the ledger as `pending`
//! before a batch is sent and its outcome after (see `lake::ledger`), so a crash in between
//! is resent by the next run (upsert sinks: the API is idempotent by key).
use crate::config::{Auth, Pipeline, RowCheck, SinkConfig, SinkLookup};
use crate::error::{Error, Result};
use crate::http::{Client, HttpError, Request};
use crate::json;
use crate::lake::ledger::{self, Entry};
use crate::lake::{runs, state, Lake};
use futures::StreamExt;
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub sink: Option<String>,
    pub dry_run: bool,
    pub limit: Option<usize>,
    pub retry_failed: bool,
    pub resend_uncertain: bool,
}

#[derive(Debug, Default, Clone)]
pub struct SinkReport {
    pub sink: String,
    pub rows: usize,
    pub skipped: usize,
    pub sent: usize,
    pub failed: usize,
    pub uncertain: usize,
    pub reconciled: usize,
    /// Of those sent (or to send): keys sent before with another payload (upsert sinks).
    pub changed: usize,
    pub jobs: usize,
    pub requests: u64,
    pub throttled: u64,
    pub sample: Option<String>,
    /// The sink's `latest` answer (JSON), read after the push.
    pub latest: Option<String>,
    pub elapsed: Duration,
}

pub fn render(reports: &[SinkReport], dry_run: bool) -> String {
    let mut out = format!(
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>5} {:>8} {:>5} {:>7}\n",
        "sink", "rows", if dry_run { "to send" } else { "sent" }, "changed", "skipped", "failed", "uncertain", "reconciled", "jobs", "requests", "429s", "time"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>5} {:>8} {:>5} {:>6.1}s\n",
            r.sink, r.rows, r.sent, r.changed, r.skipped, r.failed, r.uncertain, r.reconciled, r.jobs, r.requests, r.throttled, r.elapsed.as_secs_f64()
        ));
        if let Some(s) = &r.sample {
            out.push_str(&format!("  sample payload: {s}\n"));
        }
        if let Some(l) = &r.latest {
            out.push_str(&format!("  destination's latest integration: {l}\n"));
        }
    }
    out
}

/// A key or lookup value as text (None for a JSON null).
fn key_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| json::text(v))
}

/// Every string of `tpl` with `{row.<col>}` replaced by the row's value.
fn fill_row(tpl: &Value, row: &Map<String, Value>) -> Value {
    match tpl {
        Value::String(s) => {
            let mut out = s.clone();
            while let Some(p) = out.find("{row.") {
                let end = out[p..].find('}').map_or(out.len(), |e| p + e);
                let col = out[p + 5..end].to_string();
                let v = row.get(&col).and_then(key_text).unwrap_or_default();
                out.replace_range(p..(end + 1).min(out.len()), &v);
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_row(x, row)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), fill_row(x, row))).collect()),
        other => other.clone(),
    }
}

/// A sink's declared check of one value (see `SinkConfig::checks`); Err says what is wrong.
fn check(kind: RowCheck, v: Option<&Value>) -> std::result::Result<(), String> {
    let v = match v {
        None | Some(Value::Null) => return Err("is missing".into()),
        Some(v) => v,
    };
    let wrong = match kind {
        RowCheck::NotNull => None,
        RowCheck::Integer => (!(v.is_i64() || v.is_u64())).then_some("is not an integer"),
        RowCheck::Digits => (!(v.is_u64() || v.as_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))))
            .then_some("is not digits only"),
        RowCheck::TimestampUtc => (!v.as_str().is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()))
            .then_some("is not an ISO-8601 UTC time ending in Z"),
    };
    match wrong {
        None => Ok(()),
        Some(what) => {
            let mut got = v.to_string();
            got.truncate(40);
            Err(format!("{what} (got {got})"))
        }
    }
}

/// Whether the destination already holds `row` (the sink's lookup): the record exists when
/// an item at `records` has `match` equal to the row's `value`; a paged lookup reads pages
/// until it is found or the last page is read.
async fn exists(client: &Client, p: &Pipeline, auth: &Auth, what: &str, l: &SinkLookup, row: &Map<String, Value>) -> Result<bool> {
    let value = row.get(&l.value).and_then(key_text).unwrap_or_default();
    let url = format!("{}{}", p.base_url, l.path);
    let body = l.body.as_ref().map(|b| fill_row(&serde_json::to_value(b).unwrap_or(Value::Null), row));
    let mut query: Vec<(String, String)> = if l.param.is_empty() { vec![] } else { vec![(l.param.clone(), value.clone())] };
    for (k, tpl) in &l.params {
        query.push((k.clone(), json::text(&fill_row(&Value::String(tpl.clone()), row))));
    }
    let mut page = 1u64;
    loop {
        let mut q = query.clone();
        if let Some(pg) = &l.pages {
            q.push((pg.param.clone(), page.to_string()));
            if let (Some(sp), Some(n)) = (&pg.size_param, pg.size) {
                q.push((sp.clone(), n.to_string()));
            }
        }
        let req = Request { method: &l.method, url: &url, query: &q, headers: &[], body: body.as_ref(), split: None };
        let f = client.send(&req, auth, what).await.map_err(|e| Error::Http(e.to_string()))?;
        let found = json::at_str(&f.body, &l.records)
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|r| l.matches.items().iter().any(|m| r.get(m).and_then(key_text).as_deref() == Some(value.as_str())))
            });
        if found {
            return Ok(true);
        }
        let Some(pg) = &l.pages else { return Ok(false) };
        let last = json::at_str(&f.body, &pg.last).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())).unwrap_or(0);
        if page >= last {
            return Ok(false);
        }
        page += 1;
    }
}

/// The rows of `table` (`schema.table`) as JSON objects; None when the table does not exist.
async fn rows_of(lake: &Lake, table: &str) -> Result<Option<Vec<Map<String, Value>>>> {
    let rel = table.replace('.', "/");
    if !state::table_exists(lake, &rel).await? {
        return Ok(None);
    }
    Ok(Some(state::select(lake, &rel, "").await?))
}

pub async fn push(p: &Pipeline, lake: &Lake, opts: &PushOptions) -> Result<Vec<SinkReport>> {
    let sinks: Vec<&(String, SinkConfig)> = p
        .sinks
        .iter()
        .filter(|(n, _)| opts.sink.as_ref().is_none_or(|s| s == n))
        .collect();
    if sinks.is_empty() {
        let names: Vec<&str> = p.sinks.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Error::Usage(format!(
            "{}: no sink {} (sinks: {})",
            p.file,
            opts.sink.as_deref().map(|s| format!("`{s}`")).unwrap_or_default(),
            names.join(", ")
        )));
    }
    let client = Client::new(p).map_err(|e| Error::Other(e.to_string()))?;
    let auth = &p.partitions[0].auth;
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut reports = Vec::new();
    for (name, k) in sinks {
        let (started, started_at) = (Instant::now(), chrono::Utc::now());
        let rows = match rows_of(lake, &k.table).await? {
            Some(rows) => rows,
            // Pushing every sink of a source: one whose table is not built yet waits (named).
            None if opts.sink.is_none() => {
                tracing::warn!(sink = %name, table = %k.table, "skipped: its table is not built yet (ingest transform)");
                reports.push(SinkReport { sink: format!("{name} (no table yet)"), ..Default::default() });
                continue;
            }
            None => {
                return Err(Error::Usage(format!(
                    "push: table `{}` does not exist in {} (run `ingest transform` first)",
                    k.table, lake.url
                )))
            }
        };
        // Validate everything before anything is sent.
        let mut keys = BTreeSet::new();
        let mut bad = Vec::new();
        let mut items: Vec<(String, String, Value)> = Vec::new();
        // The whole rows by key, `omit`ted and `_` columns included: what a lookup may name.
        let mut full: HashMap<String, &Map<String, Value>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let key = r.get(&k.key).and_then(key_text);
            for (col, kind) in &k.checks {
                if let Err(why) = check(*kind, r.get(col)) {
                    let who = key.as_ref().map(|v| format!(" (`{}` = {v})", k.key)).unwrap_or_default();
                    bad.push(format!("row {}{who}: `{col}` {why}", i + 1));
                }
            }
            match key {
                None => bad.push(format!("row {}: no `{}`", i + 1, k.key)),
                Some(key) if !keys.insert(key.clone()) => bad.push(format!("`{}` = {key} appears twice", k.key)),
                Some(key) => {
                    // Bookkeeping columns (`_…`) and `omit` stay out of what is sent and hashed.
                    let payload = Value::Object(
                        r.iter()
                            .filter(|(c, _)| !c.starts_with('_') && !k.omit.contains(c))
                            .map(|(c, v)| (c.clone(), v.clone()))
                            .collect(),
                    );
                    let hash = hex::encode(sha2::Sha256::digest(payload.to_string().as_bytes()));
                    full.insert(key.clone(), r);
                    items.push((key, hash, payload));
                }
            }
        }
        if let Some(first) = rows.first() {
            if !first.contains_key(&k.key) && bad.is_empty() {
                bad.push(format!("the table has no column `{}`", k.key));
            }
        }
        if !bad.is_empty() {
            let n = bad.len();
            bad.truncate(10);
            let more = if n > 10 { format!("; … {} more", n - 10) } else { String::new() };
            return Err(Error::Usage(format!(
                "{}: sink `{name}` (table {}): nothing sent, {n} problem(s): {}{more}",
                p.file,
                k.table,
                bad.join("; ")
            )));
        }
        let known = ledger::latest(lake, &p.name, name).await?;
        let mut rep = SinkReport { sink: name.clone(), rows: items.len(), ..Default::default() };
        let create_once = k.mode == "create_once";
        let mut todo: Vec<(String, String, Value)> = items
            .into_iter()
            .filter(|(key, hash, _)| match known.get(key) {
                Some(e) if e.state == "sent" && (create_once || e.hash == *hash) => false,
                Some(e) if e.hash == *hash && e.state == "failed" && !opts.retry_failed => false,
                Some(e) if e.state == "uncertain" && !opts.resend_uncertain => false,
                _ => true,
            })
            .take(opts.limit.unwrap_or(usize::MAX))
            .collect();
        // create_once: a key left `pending` by a crash may or may not exist at the destination.
        // Ask it (lookup); without a lookup it becomes `uncertain` and waits for
        // --resend-uncertain.
        if create_once && !opts.dry_run {
            let mut settled = Vec::new();
            let mut keep = Vec::new();
            for (key, hash, v) in todo {
                let was_pending = known.get(&key).is_some_and(|e| e.state == "pending");
                let forced = known.get(&key).is_some_and(|e| e.state == "uncertain") && opts.resend_uncertain;
                if !was_pending || forced {
                    keep.push((key, hash, v));
                    continue;
                }
                let state = match &k.lookup {
                    Some(l) => {
                        if exists(&client, p, auth, &format!("{}.{name} lookup", p.name), l, full[&key]).await? {
                            rep.reconciled += 1;
                            Some("sent")
                        } else {
                            None
                        }
                    }
                    None => Some("uncertain"),
                };
                match state {
                    Some(st) => settled.push(Entry {
                        error: (st == "uncertain").then(|| "a crash left it pending and the sink has no lookup: resend with --resend-uncertain".to_string()),
                        ..Entry::new(&p.name, name, &key, &hash, st, known.get(&key).map_or(0, |e| e.attempts), &run_id)
                    }),
                    None => keep.push((key, hash, v)),
                }
            }
            rep.uncertain = settled.iter().filter(|e| e.state == "uncertain").count();
            ledger::append(lake, &settled).await?;
            todo = keep;
        }
        rep.skipped = rep.rows - todo.len() - rep.uncertain - rep.reconciled;
        rep.changed = todo.iter().filter(|(key, h, _)| known.get(key).is_some_and(|e| e.state == "sent" && e.hash != *h)).count();
        if opts.dry_run {
            rep.sent = todo.len();
            rep.sample = todo.first().map(|t| t.2.to_string());
            rep.elapsed = started.elapsed();
            reports.push(rep);
            continue;
        }
        ledger::ensure(lake).await?;
        let attempts: HashMap<String, i64> = known.iter().map(|(k, e)| (k.clone(), e.attempts)).collect();
        let batches: Vec<Vec<(String, String, Value)>> = todo.chunks(k.batch.size).map(|c| c.to_vec()).collect();
        let url = format!("{}{}", p.base_url, k.path);
        let outcomes: Vec<Result<(Vec<Entry>, u64, u64)>> = futures::stream::iter(batches)
            .map(|batch| {
                let (client, url, run_id, attempts) = (&client, &url, &run_id, &attempts);
                async move {
                    let entry = |key: &str, hash: &str, state: &str| {
                        Entry::new(&p.name, name, key, hash, state, attempts.get(key).copied().unwrap_or(0) + 1, run_id)
                    };
                    // Intent first: a crash from here on leaves `pending`, resent next run.
                    let pending: Vec<Entry> = batch.iter().map(|(key, h, _)| entry(key, h, "pending")).collect();
                    ledger::append(lake, &pending).await?;
                    let list = Value::Array(batch.iter().map(|(_, _, v)| v.clone()).collect());
                    let body = match (&k.batch.wrapper, k.batch.max) {
                        (Some(w), _) => serde_json::json!({ w: list }),
                        // One record a request: the record itself.
                        (None, 1) => batch[0].2.clone(),
                        (None, _) => list,
                    };
                    let what = format!("{}.{name}", p.name);
                    let req = Request { method: &k.method, url, query: &[], headers: &[], body: Some(&body), split: None };
                    let (mut requests, mut throttled) = (1u64, 0u64);
                    let sent = client.send(&req, auth, &what).await;
                    let mut job_id = None;
                    let mut response: Option<String> = None;
                    let mut item_errors: HashMap<String, String> = HashMap::new();
                    let outcome: std::result::Result<(), String> = match sent {
                        Ok(f) => {
                            requests += f.retries;
                            throttled += f.throttled;
                            if k.job.is_none() && !f.body.is_null() {
                                let mut r = f.body.to_string();
                                r.truncate(500);
                                response = Some(crate::secret::redact(&r));
                            }
                            match &k.job {
                                Some(j) => {
                                    let id = json::at_str(&f.body, &j.id).and_then(key_text);
                                    match id {
                                        None => Err(format!("answered {} without a job id at `{}`", f.status, j.id)),
                                        Some(id) => {
                                            job_id = Some(id.clone());
                                            let status_url = format!("{}{}", p.base_url, j.status_path.replace("{job_id}", &id));
                                            let deadline = Instant::now() + Duration::from_secs(j.timeout_secs);
                                            loop {
                                                tokio::time::sleep(Duration::from_millis(j.poll_ms)).await;
                                                let s = client.get(&status_url, &[], auth, &what).await.map_err(|e| e.to_string());
                                                requests += 1;
                                                let s = match s {
                                                    Ok(s) => s,
                                                    Err(e) => break Err(e),
                                                };
                                                throttled += s.throttled;
                                                let st = json::at_str(&s.body, &j.state).and_then(key_text).unwrap_or_default();
                                                if j.final_states.contains(&st) {
                                                    if let Some(ep) = &j.errors {
                                                        for e in json::at_str(&s.body, ep).and_then(Value::as_array).into_iter().flatten() {
                                                            if let Some(key) = e.get(&j.error_key).and_then(key_text) {
                                                                let msg = e.get(&j.error_message).and_then(key_text).unwrap_or_default();
                                                                item_errors.insert(key, crate::secret::redact(&msg));
                                                            }
                                                        }
                                                    }
                                                    break Ok(());
                                                }
                                                if Instant::now() > deadline {
                                                    break Err(format!("job {id} still `{st}` after {} s", j.timeout_secs));
                                                }
                                            }
                                        }
                                    }
                                }
                                None => Ok(()),
                            }
                        }
                        Err(HttpError::Rejected { status, body, .. }) if (400..500).contains(&status) => {
                            Err(format!("rejected ({status}): {body}"))
                        }
                        Err(e) => return Err(Error::Http(e.to_string())),
                    };
                    let done: Vec<Entry> = batch
                        .iter()
                        .map(|(key, h, _)| {
                            let mut e = entry(key, h, "sent");
                            e.job_id = job_id.clone();
                            e.response = response.clone();
                            if let Err(msg) = &outcome {
                                e.state = "failed".into();
                                e.error = Some(crate::secret::redact(msg));
                            } else if let Some(msg) = item_errors.get(key) {
                                e.state = "failed".into();
                                e.error = Some(msg.clone());
                            }
                            e
                        })
                        .collect();
                    ledger::append(lake, &done).await?;
                    Ok((done, requests, throttled))
                }
            })
            .buffer_unordered(k.batch.parallel)
            .collect()
            .await;
        for o in outcomes {
            let (done, requests, throttled) = o?;
            rep.requests += requests;
            rep.throttled += throttled;
            rep.jobs += done.first().is_some_and(|e| e.job_id.is_some()) as usize;
            for e in done {
                if e.state == "sent" {
                    rep.sent += 1;
                } else {
                    rep.failed += 1;
                }
            }
        }
        // The destination's own view of the last integration (seed 002), kept in the run log.
        if let Some(l) = &k.latest {
            let url = format!("{}{}", p.base_url, l.path);
            match client.get(&url, &[], auth, &format!("{}.{name} latest", p.name)).await {
                Ok(f) => {
                    rep.requests += 1;
                    let m: Map<String, Value> =
                        l.fields.iter().filter_map(|f2| json::at_str(&f.body, f2).map(|v| (f2.clone(), v.clone()))).collect();
                    rep.latest = Some(Value::Object(m).to_string());
                }
                Err(e) => tracing::warn!(sink = %name, "cannot read {}: {}", l.path, crate::secret::redact(&e.to_string())),
            }
        }
        rep.elapsed = started.elapsed();
        let run = runs::RunRow {
            run_id: run_id.clone(),
            source: p.name.clone(),
            partition: runs::PUSH.into(),
            stream: name.clone(),
            started: crate::time::rfc3339(started_at),
            ended: crate::time::rfc3339(chrono::Utc::now()),
            success: true,
            error: None,
            pages: rep.requests as i64,
            records: rep.sent as i64,
            files: rep.jobs as i64,
            bytes: 0,
            last: rep.latest.clone(),
        };
        if let Err(e) = runs::append(lake, &[run]).await {
            tracing::warn!("cannot append to the run log: {e}");
        }
        tracing::info!(sink = %name, sent = rep.sent, failed = rep.failed, skipped = rep.skipped, "push done");
        reports.push(rep);
    }
    Ok(reports)
}
