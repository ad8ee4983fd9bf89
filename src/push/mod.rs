//! `ingest push`: the rows of a sink's table sent to its API, each record once.
//!
//! The protocol, per sink: one push of a sink at a time (a lease `push/<source>.<sink>`, as
//! pulls hold theirs). Every row becomes a payload (columns → JSON fields) and its hash (pass 1,
//! `plan.rs`, checks every row before anything is sent); a key
//! the ledger holds `sent` with that hash (a `create_once` key: `sent` at all) is skipped.
//! Before a batch is sent its items are committed to the ledger as `pending`; after it, each
//! item's outcome (`send.rs`): `sent`, `failed` (the destination refused it) or `uncertain`
//! (it may have taken effect). So:
//!
//! - **Upsert sinks** (the API is idempotent by key) are retried and resent freely: a
//!   `pending` or `uncertain` key is simply sent again, after polling the job an `uncertain`
//!   entry names (`job.rs`).
//! - **Create sinks** (`create_once`: a second call makes a second record) are sent as
//!   `Unsafe` requests, which the HTTP client never repeats once the destination may have acted
//!   (`http::Effect`). A lost reply is reconciled through the sink's `lookup` in the same run
//!   before anything is sent again; a key left `pending` by a crash is looked up first by the
//!   next run. Without a lookup such a key becomes `uncertain`: listed by `ingest status`,
//!   sent again only with `--resend-uncertain`.
//! - A push with `failed` or `uncertain` items exits 1, and its run-log row says so.
mod job;
mod plan;
mod send;

use crate::config::{Auth, Pipeline, SinkConfig, SinkLookup};
use plan::{payload, plan};
use crate::error::{Error, Result};
use crate::http::{Client, Effect, Request};
use crate::json;
use crate::lake::ledger::{self, Entry};
use crate::lake::{lease, runs, state, Lake};
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// (key, payload hash, payload) of one row to send.
type Item = (String, String, Value);

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub sink: Option<String>,
    pub dry_run: bool,
    pub limit: Option<usize>,
    pub retry_failed: bool,
    pub resend_uncertain: bool,
    /// Wait for a running push of the same sink instead of failing.
    pub wait: bool,
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
    /// The destination's integration history after the push: (entries, errors, first error
    /// messages).
    pub history: Option<(usize, usize, Vec<String>)>,
    /// The jobs' own counts (`successCount`, `failureCount`), summed, as the API reported them.
    pub job_success: Option<u64>,
    pub job_failure: Option<u64>,
    pub elapsed: Duration,
}

impl SinkReport {
    /// Whether every record of the sink reached a known good end.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.uncertain == 0
    }
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
        if r.job_success.is_some() || r.job_failure.is_some() {
            let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            out.push_str(&format!("  jobs reported: successCount {}, failureCount {}\n", n(r.job_success), n(r.job_failure)));
        }
        if let Some(l) = &r.latest {
            out.push_str(&format!("  destination's latest integration: {l}\n"));
        }
        if let Some((n, errors, first)) = &r.history {
            out.push_str(&format!("  destination's integration history: {n} entries, {errors} errors"));
            if !first.is_empty() {
                out.push_str(&format!(" (e.g. {})", first.join("; ")));
            }
            out.push('\n');
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
        // One pass over the template (json/template.rs): a value holding `{row.x}` is text.
        Value::String(s) => Value::String(json::template::render(s, |k| k.strip_prefix("row.").map(|c| row.get(c).and_then(key_text).unwrap_or_default()))),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill_row(x, row)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), fill_row(x, row))).collect()),
        other => other.clone(),
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
        let req = Request { method: &l.method, url: &url, query: &q, headers: &[], body: body.as_ref(), split: None, effect: Effect::Safe };
        let f = client.send(&req, auth, what).await.map_err(|e| Error::Http(e.to_string()))?;
        let norm = |v: &str| match l.normalize {
            Some(crate::config::Normalize::Digits) => v.chars().filter(char::is_ascii_digit).collect(),
            None => v.to_string(),
        };
        let want = norm(&value);
        let found = json::at_str(&f.body, &l.records)
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|r| l.matches.items().iter().any(|m| r.get(m).and_then(key_text).is_some_and(|v| norm(&v) == want)))
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
    let run_id = crate::lake::runs::new_run_id();
    let mut reports = Vec::new();
    for (name, k) in sinks {
        // One push of a sink at a time (a dry run sends nothing and takes no lease).
        let held = match opts.dry_run {
            true => None,
            false => Some(lease::acquire(lake, &format!("{}/{}.{name}", lease::PUSH, p.name), opts.wait).await?),
        };
        let rep = push_sink(p, lake, opts, &client, &run_id, name, k).await;
        if let Some(l) = held {
            l.release().await;
        }
        if let Some(rep) = rep? {
            reports.push(rep);
        }
    }
    Ok(reports)
}

/// Items left `uncertain` by a job poll that timed out or failed: their jobs are polled again
/// first (the ledger keeps the job id), so nothing of such a batch is resent before its job
/// is known. Returns the entries it settled.
#[allow(clippy::too_many_arguments)]
async fn repoll(client: &Client, p: &Pipeline, name: &str, k: &SinkConfig, known: &BTreeMap<String, ledger::Seen>, run_id: &str, rep: &mut SinkReport) -> Vec<Entry> {
    let Some(j) = &k.job else { return Vec::new() };
    let mut by_job: BTreeMap<&str, Vec<(&String, &ledger::Seen)>> = BTreeMap::new();
    for (key, e) in known.iter().filter(|(_, e)| e.state == "uncertain") {
        if let Some(id) = e.job_id.as_deref() {
            by_job.entry(id).or_default().push((key, e));
        }
    }
    let mut out = Vec::new();
    for (id, entries) in by_job {
        let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
        tracing::info!(sink = %name, job = id, items = keys.len(), "polling a job left uncertain by an earlier run");
        let what = format!("{}.{name}", p.name);
        let polled = job::poll(client, p, &p.partitions[0].auth, &what, j, id, &keys, k.mode == "create_once").await;
        rep.requests += polled.requests;
        rep.throttled += polled.throttled;
        for (key, e) in entries {
            let o = polled.outcomes.get(key.as_str()).cloned().unwrap_or(job::Outcome::Sent);
            let mut n = Entry::new(&p.name, name, key, &hex::encode(e.hash), o.state(), e.attempts, run_id);
            n.error = o.error();
            n.job_id = e.job_id.as_deref().map(str::to_string);
            out.push(n);
        }
    }
    out
}

fn seen_of(e: &Entry) -> ledger::Seen {
    ledger::Seen { state: ledger::state_name(&e.state), hash: ledger::hash_bytes(&e.hash), attempts: e.attempts, job_id: e.job_id.as_deref().map(Box::from), error: e.error.as_deref().map(Box::from), at: i64::MAX }
}

/// Push one sink (its lease held). None: its table is not built yet (pushing every sink).
///
/// Memory: the table is read twice as a stream (pass 1 checks every row and hashes its payload;
/// pass 2 sends what changed, a few batches at a time), and the ledger is read as one small
/// [`ledger::Seen`] per key: what is held is a key and a hash per row, not the rows.
async fn push_sink(p: &Pipeline, lake: &Lake, opts: &PushOptions, client: &Client, run_id: &str, name: &str, k: &SinkConfig) -> Result<Option<SinkReport>> {
    use futures::TryStreamExt;
    let auth = &p.partitions[0].auth;
    let (started, started_at) = (Instant::now(), chrono::Utc::now());
    let table = match state::open_table(lake, &k.table.replace('.', "/")).await? {
        Some(t) => t,
        // Pushing every sink of a source: one whose table is not built yet waits (named).
        None if opts.sink.is_none() => {
            tracing::warn!(sink = %name, table = %k.table, "skipped: its table is not built yet (ingest transform)");
            return Ok(Some(SinkReport { sink: format!("{name} (no table yet)"), ..Default::default() }));
        }
        None => {
            return Err(Error::Usage(format!(
                "push: table `{}` does not exist in {} (run `ingest transform` first)",
                k.table, lake.url
            )))
        }
    };
    // The ledger first, then jobs an earlier run left uncertain polled again (what they settle
    // counts in this run; it is committed only once the rows have been checked).
    let mut known = ledger::seen(lake, &p.name, name).await?;
    let mut rep = SinkReport { sink: name.to_string(), ..Default::default() };
    let create_once = k.mode == "create_once";
    let mut repolled = 0;
    let settled = if opts.dry_run { Vec::new() } else { repoll(client, p, name, k, &known, run_id, &mut rep).await };
    for e in &settled {
        match e.state.as_str() {
            "sent" => rep.sent += 1,
            "failed" => rep.failed += 1,
            _ => continue,
        }
        repolled += 1;
        known.insert(e.key.clone(), seen_of(e));
    }
    // Pass 1: every row checked before anything is sent; what to send decided as rows come
    // (the same table version is read twice), so a push with nothing new holds no row list.
    let (mut before, mut changed) = (0usize, 0usize);
    let decide = |key: &str, hash: &[u8; 32]| match known.get(key) {
        Some(e) if e.state == "sent" && (create_once || e.hash == *hash) => false,
        // Refused for itself: again only when the payload changes (or --retry-failed); a
        // job that failed as a whole is sent again.
        Some(e) if e.hash == *hash && e.state == "failed" && !opts.retry_failed => {
            e.error.as_deref().is_some_and(|m| m.starts_with(job::WHOLE))
        }
        // An upsert is safe to send again; a create may exist already.
        Some(e) if e.state == "uncertain" && create_once && !opts.resend_uncertain => {
            before += 1;
            false
        }
        Some(e) => {
            changed += (e.state == "sent" && e.hash != *hash) as usize;
            true
        }
        None => true,
    };
    let (rows, todo) = plan(p, name, k, &table, decide, opts.limit.unwrap_or(usize::MAX)).await?;
    rep.rows = rows;
    rep.changed = changed;
    ledger::append(lake, &settled).await?;
    let todo: HashMap<String, [u8; 32]> = todo.into_iter().collect();
    let attempts: HashMap<String, i64> = known.iter().filter(|(key, _)| todo.contains_key(*key)).map(|(key, e)| (key.clone(), e.attempts)).collect();
    if !opts.dry_run {
        ledger::ensure(lake).await?;
    }
    // Pass 2: the rows to send, in table order, a few sink batches at a time.
    let url = format!("{}{}", p.base_url, k.path);
    let flush_at = k.batch.size * k.batch.parallel.max(1);
    let (mut buffer, mut full): (Vec<Item>, HashMap<String, Map<String, Value>>) = (Vec::new(), HashMap::new());
    let mut settled_uncertain = 0usize;
    let mut to_send = 0usize;
    let mut first_error = None;
    let mut rows = state::stream_rows(&table, "SELECT * FROM state").await?;
    let mut done = false;
    while !done {
        let batch = rows.try_next().await?;
        done = batch.is_none();
        for r in batch.into_iter().flatten() {
            let Some(key) = r.get(&k.key).and_then(key_text).filter(|key| todo.contains_key(key)) else { continue };
            let (v, hash) = payload(k, &r);
            let hash = hex::encode(hash);
            if opts.dry_run {
                rep.sample.get_or_insert_with(|| v.to_string());
                to_send += 1;
                continue;
            }
            // create_once: a key left `pending` by a crash (with `lookup_first`, every key)
            // may or may not exist at the destination: ask it first; without a lookup a
            // pending key becomes `uncertain` and waits for --resend-uncertain.
            let was_pending = known.get(&key).is_some_and(|e| e.state == "pending") || (k.lookup_first && k.lookup.is_some());
            let forced = known.get(&key).is_some_and(|e| e.state == "uncertain") && opts.resend_uncertain;
            if create_once && was_pending && !forced {
                let st = match &k.lookup {
                    Some(l) if exists(client, p, auth, &format!("{}.{name} lookup", p.name), l, &r).await? => Some("sent"),
                    Some(_) => None,
                    None => Some("uncertain"),
                };
                if let Some(st) = st {
                    let e = Entry {
                        error: (st == "uncertain").then(|| "a crash left it pending and the sink has no lookup: resend with --resend-uncertain".to_string()),
                        ..Entry::new(&p.name, name, &key, &hash, st, known.get(&key).map_or(0, |e| e.attempts), run_id)
                    };
                    if st == "sent" {
                        rep.reconciled += 1;
                    } else {
                        settled_uncertain += 1;
                    }
                    ledger::append(lake, &[e]).await?;
                    continue;
                }
            }
            full.insert(key.clone(), r);
            buffer.push((key, hash, v));
        }
        // Send full sink batches as they fill (the rest waits for more rows, or the end).
        while buffer.len() >= flush_at || (done && !buffer.is_empty()) {
            // A stop signal (`crate::stop`) ends the push between groups: the group in flight
            // has its outcomes in the ledger, the rest is not even pending — a rerun sends it.
            if crate::stop::requested() {
                first_error.get_or_insert(Error::Other(format!(
                    "{}.{name}: stopped by a signal before the next batch; a rerun sends what is left",
                    p.name
                )));
                break;
            }
            let take = if buffer.len() >= flush_at { flush_at } else { buffer.len() };
            let now: Vec<Item> = buffer.drain(..take).collect();
            let ctx = send::Ctx { client, p, auth, name, k, url: &url, run_id, attempts: &attempts, rows: &full };
            // Intent first, for every batch of the group in one commit; outcomes after, likewise.
            ledger::append(lake, &ctx.pending(&now)).await?;
            let outcomes: Vec<Result<send::Batch>> =
                futures::stream::iter(now.chunks(k.batch.size)).map(|b| ctx.send(b)).buffer_unordered(k.batch.parallel).collect().await;
            let done: Vec<Entry> = outcomes.iter().filter_map(|o| o.as_ref().ok()).flat_map(|b| b.done.iter().cloned()).collect();
            ledger::append(lake, &done).await?;
            for (key, _, _) in &now {
                full.remove(key);
            }
            for o in outcomes {
                let b = match o {
                    Ok(b) => b,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                rep.requests += b.requests;
                rep.throttled += b.throttled;
                rep.reconciled += b.reconciled;
                rep.jobs += b.job as usize;
                if b.success.is_some() {
                    rep.job_success = Some(rep.job_success.unwrap_or(0) + b.success.unwrap_or(0));
                }
                if b.failure.is_some() {
                    rep.job_failure = Some(rep.job_failure.unwrap_or(0) + b.failure.unwrap_or(0));
                }
                for e in b.done {
                    match e.state.as_str() {
                        "sent" => rep.sent += 1,
                        "uncertain" => rep.uncertain += 1,
                        _ => rep.failed += 1,
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        if first_error.is_some() {
            break;
        }
    }
    // Uncertain now: settled here, or left so by an earlier run and not sent again.
    rep.uncertain += settled_uncertain + if create_once && !opts.resend_uncertain { before } else { 0 };
    if opts.dry_run {
        rep.sent = to_send;
        rep.skipped = rep.rows.saturating_sub(to_send);
        rep.elapsed = started.elapsed();
        return Ok(Some(rep));
    }
    rep.skipped = rep.rows.saturating_sub(todo.len() + if create_once && !opts.resend_uncertain { before } else { 0 } + repolled);
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
    if let Some(h) = &k.history {
        let url = format!("{}{}", p.base_url, h.path);
        let query: Vec<(String, String)> = h.params.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        match client.get(&url, &query, auth, &format!("{}.{name} history", p.name)).await {
            Ok(f) => {
                rep.requests += 1;
                let entries = json::at_str(&f.body, &h.records).and_then(Value::as_array).cloned().unwrap_or_default();
                let errors: Vec<&Value> = entries.iter().filter(|e| e.get(&h.success) == Some(&Value::Bool(false))).collect();
                let first = errors.iter().take(3).filter_map(|e| e.get(&h.message).and_then(key_text)).map(|m| crate::secret::redact(&m)).collect();
                if !errors.is_empty() {
                    tracing::warn!(sink = %name, errors = errors.len(), "the destination's integration history lists errors");
                }
                rep.history = Some((entries.len(), errors.len(), first));
            }
            Err(e) => tracing::warn!(sink = %name, "cannot read {}: {}", h.path, crate::secret::redact(&e.to_string())),
        }
    }
    rep.elapsed = started.elapsed();
    let error = match (&first_error, rep.ok()) {
        (Some(e), _) => Some(crate::secret::redact(&e.to_string())),
        (None, false) => Some(format!("{} failed, {} uncertain", rep.failed, rep.uncertain)),
        (None, true) => None,
    };
    let run = runs::RunRow {
        run_id: run_id.to_string(),
        source: p.name.clone(),
        partition: runs::PUSH.into(),
        stream: name.to_string(),
        started: crate::time::rfc3339(started_at),
        ended: crate::time::rfc3339(chrono::Utc::now()),
        success: error.is_none(),
        error,
        pages: rep.requests as i64,
        records: rep.sent as i64,
        files: rep.jobs as i64,
        bytes: 0,
        // The destination's own record: its latest integration and its history's error count.
        last: match (&rep.latest, &rep.history) {
            (l, Some((n, errors, _))) => {
                let mut v: Map<String, Value> = l.as_deref().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
                v.insert("history_entries".into(), (*n).into());
                v.insert("history_errors".into(), (*errors).into());
                Some(Value::Object(v).to_string())
            }
            (l, None) => l.clone(),
        },
        retries: None,
        throttled: None,
    };
    if let Err(e) = runs::append(lake, &[run]).await {
        tracing::warn!("cannot append to the run log: {e}");
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    tracing::info!(sink = %name, sent = rep.sent, failed = rep.failed, uncertain = rep.uncertain, skipped = rep.skipped, "push done");
    Ok(Some(rep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_templates_are_filled_in_one_pass() {
        let row: Map<String, Value> = serde_json::from_str(r#"{"a": "{row.a}", "b": 7, "c": "x}y"}"#).unwrap();
        let t = Value::String("A={row.a} B={row.b} C={row.c} D={row.d} {row.open".into());
        assert_eq!(fill_row(&t, &row), Value::String("A={row.a} B=7 C=x}y D= {row.open".into()));
    }
}
