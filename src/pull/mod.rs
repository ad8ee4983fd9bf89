//! `ingest pull`: runs every (partition, stream) of a pipeline concurrently up to the source's
//! limit, through one HTTP client (one request budget) and one catalogue writer, then prints
//! a summary. Reads state before starting; writes raw files and catalogue rows only.
pub mod paginate;
pub mod progress;
pub mod records;
pub mod details;
mod last;
pub use last::fill_last;
mod stream;
pub mod window;

use crate::config::{Partition, Pipeline, Stream};
use crate::error::{Error, Result};
use crate::http::Client;
use crate::lake::{lease, runs};
use crate::lake::state::{self, StateWriter};
use crate::lake::Lake;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub from: Option<NaiveDate>,
    /// Last day pulled, inclusive.
    pub to: NaiveDate,
    pub streams: Option<Vec<String>>,
    pub full_refresh: bool,
    pub progress: bool,
    /// Wait for a running pull of the same source instead of failing.
    pub wait: bool,
    /// A sharded pull: only these partitions (the pipeline already narrowed to them), under
    /// per-partition leases (see `lake::lease`).
    pub partitions: Option<Vec<String>>,
}

/// Narrow `p` to the partitions `--partitions` names or `--shard K/N` picks (a partition
/// belongs to shard `sha256(id) mod N`). None: the whole source.
pub fn select_partitions(p: &mut Pipeline, ids: Option<&[String]>, shard: Option<&str>) -> Result<Option<Vec<String>>> {
    use sha2::Digest;
    let chosen: Vec<String> = match (ids, shard) {
        (None, None) => return Ok(None),
        (Some(ids), _) => {
            for id in ids {
                if !p.partitions.iter().any(|x| &x.id == id) {
                    let known: Vec<&str> = p.partitions.iter().map(|x| x.id.as_str()).collect();
                    return Err(Error::Usage(format!("--partitions: {} has no partition `{id}` (partitions: {})", p.file, known.join(", "))));
                }
            }
            ids.to_vec()
        }
        (None, Some(spec)) => {
            let bad = || Error::Usage(format!("--shard {spec}: expected K/N with 0 <= K < N"));
            let (k, n) = spec.split_once('/').ok_or_else(bad)?;
            let (k, n): (u64, u64) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
            if n == 0 || k >= n {
                return Err(bad());
            }
            p.partitions
                .iter()
                .filter(|x| {
                    let h = sha2::Sha256::digest(x.id.as_bytes());
                    u64::from_be_bytes(h[..8].try_into().unwrap()) % n == k
                })
                .map(|x| x.id.clone())
                .collect()
        }
    };
    if !p.path_template.contains("{partition}") {
        return Err(Error::Usage(format!("{}: a sharded pull needs `{{partition}}` in the output path", p.file)));
    }
    p.partitions.retain(|x| chosen.contains(&x.id));
    Ok(Some(chosen))
}

/// What the catalogue already says, read once before the run.
#[derive(Default)]
pub struct Known {
    /// (partition, request) → watermark.
    pub watermarks: HashMap<(String, String), String>,
    /// Current file of each (partition, stream, slot) → (path, sha256).
    pub current: HashMap<(String, String, String), (String, Option<String>)>,
    /// Every path any catalogue row of the source ever named: never reused for a new landing.
    pub used: std::collections::HashSet<String>,
    /// txn app id → version.
    pub versions: HashMap<String, i64>,
    /// Of each incremental (partition, stream) with a watermark: the current files an earlier
    /// pull landed whose cursors reach into this run's lookback (see [`Known::lookback_files`]).
    pub lookback: HashMap<(String, String), Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub partition: String,
    pub stream: String,
    pub windows: u64,
    pub pages: u64,
    pub records: u64,
    pub bytes: u64,
    pub files: u64,
    pub retries: u64,
    pub throttled: u64,
    pub elapsed: Duration,
    pub error: Option<String>,
    pub started: Option<chrono::DateTime<Utc>>,
    /// The last record landed (of the stream's first output), for `${last:…}`: its JSON as
    /// landed, parsed once at the end of the run (not once per page).
    pub last: Option<String>,
    /// A response reached the stream's declared `cap` (records may be missing).
    pub capped: bool,
    /// Values dropped by a `discard_value` contract (outside the declared schema).
    pub discarded: u64,
    /// Records a lookback asked for again that an earlier pull landed, same key and cursor:
    /// not landed twice.
    pub repeats: u64,
}

impl StreamReport {
    fn new(partition: &str, stream: &str) -> Self {
        StreamReport {
            partition: partition.into(),
            stream: stream.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug)]
pub struct PullReport {
    pub source: String,
    pub run_id: String,
    pub streams: Vec<StreamReport>,
    pub commits: u64,
    pub elapsed: Duration,
}

impl PullReport {
    pub fn failed(&self) -> bool {
        self.streams.iter().any(|s| s.error.is_some())
    }

    pub fn total(&self, f: impl Fn(&StreamReport) -> u64) -> u64 {
        self.streams.iter().map(f).sum()
    }

    /// The end-of-run table: one line per (partition, stream) and a total.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>7} {:>6} {:>9} {:>12} {:>7} {:>5} {:>8}\n",
            "stream", "windows", "pages", "records", "bytes", "retries", "429s", "time"
        );
        for s in &self.streams {
            out.push_str(&format!(
                "{:<40} {:>7} {:>6} {:>9} {:>12} {:>7} {:>5} {:>7.1}s{}\n",
                format!("{}/{}", s.partition, s.stream),
                s.windows,
                s.pages,
                s.records,
                s.bytes,
                s.retries,
                s.throttled,
                s.elapsed.as_secs_f64(),
                s.error
                    .as_ref()
                    .map(|e| format!("  FAILED: {e}"))
                    .unwrap_or_else(|| {
                        let mut note = String::new();
                        if s.capped {
                            note.push_str("  CAPPED: the API's row cap was hit");
                        }
                        if s.repeats > 0 {
                            note.push_str(&format!("  ({} already landed, not again)", s.repeats));
                        }
                        if s.discarded > 0 {
                            note.push_str(&format!("  DISCARDED: {} values outside the declared schema", s.discarded));
                        }
                        note
                    })
            ));
        }
        out.push_str(&format!(
            "{:<40} {:>7} {:>6} {:>9} {:>12} {:>7} {:>5} {:>7.1}s\n",
            format!("total ({} commits)", self.commits),
            self.total(|s| s.windows),
            self.total(|s| s.pages),
            self.total(|s| s.records),
            self.total(|s| s.bytes),
            self.total(|s| s.retries),
            self.total(|s| s.throttled),
            self.elapsed.as_secs_f64()
        ));
        out
    }
}

impl Known {
    /// The stream versions and watermarks of `keys` ((partition, request)) of `source`, from
    /// the catalogue's txns (see `lake::state`).
    pub async fn marks(lake: &Lake, cat: &state::Catalogue, source: &str, keys: &[(String, String)]) -> Result<Known> {
        let mut k = Known::default();
        let Some(txns) = cat.txns(lake).await? else { return Ok(k) };
        for (partition, request) in keys {
            let app = state::txn_app(source, partition, request);
            let v = txns.get(&app).await?.unwrap_or(0);
            if v == 0 {
                continue;
            }
            k.versions.insert(app, v);
            let wm = match txns.get(&state::watermark_app(source, partition, request)).await? {
                Some(secs) => DateTime::from_timestamp(secs, 0).map(crate::time::rfc3339),
                None => cat.watermark_from_rows(source, partition, request).await?,
            };
            if let Some(w) = wm {
                k.watermarks.insert((partition.clone(), request.clone()), w);
            }
        }
        Ok(k)
    }

    /// For each incremental job with a primary key and a watermark, the current files whose
    /// `max_cursor` reaches the lookback's floor: the records a lookback asks for again were
    /// landed there, and a record with the same (key, cursor) is not landed twice.
    pub async fn lookback_files(&mut self, cat: &state::Catalogue, source: &str, jobs: &[(&Partition, &Stream)], full_refresh: bool) -> Result<()> {
        // Each job's floor, as the catalogue writes cursors (whole seconds, so a floor inside a
        // second still finds the file holding that second)...
        let mut floors: HashMap<(String, String), String> = HashMap::new();
        for (part, s) in jobs {
            let (Some(inc), Some(_)) = (&s.incremental, &s.primary_key) else { continue };
            let key = (part.id.clone(), s.name.clone());
            let Some(wm) = self.watermarks.get(&key).filter(|_| !full_refresh) else { continue };
            let Some(floor) = crate::time::parse_instant(wm, &chrono_tz::UTC).map(|w| w - inc.lookback) else { continue };
            floors.insert(key, floor.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        // ...and one read of the catalogue for them all.
        let Some(lowest) = floors.values().min() else { return Ok(()) };
        let filter = format!("source = {} AND path IS NOT NULL AND max_cursor >= {}", state::sql_text(source), state::sql_text(lowest));
        for r in state::current_files(&cat.rows_where(&filter).await?) {
            let key = (r.partition.clone(), r.stream.clone());
            let reaches = floors.get(&key).is_some_and(|f| r.max_cursor.as_deref().is_some_and(|m| m >= f.as_str()));
            if let (true, Some(path)) = (reaches, r.path) {
                self.lookback.entry(key).or_default().push(path);
            }
        }
        Ok(())
    }

    /// The current file of each slot and every name used, of `source`'s landings in `scope`
    /// (None: all of them; an orphan scan needs every current path).
    pub async fn read_landings(&mut self, cat: &state::Catalogue, source: &str, scope: Option<&Scope>) -> Result<()> {
        let mut filter = format!("source = {}", state::sql_text(source));
        if let Some(sc) = scope {
            let at = |t: DateTime<Utc>| format!("CAST({} AS TIMESTAMP)", state::sql_text(&crate::time::rfc3339(t)));
            let whole: Vec<String> = sc.whole.iter().map(|s| format!(" OR stream = {}", state::sql_text(s))).collect();
            filter.push_str(&format!(
                " AND (window_start >= {} OR (window_start IS NULL AND landed_at >= {}){})",
                at(sc.windows),
                at(sc.landed),
                whole.concat()
            ));
            if let Some(parts) = &sc.partitions {
                let list: Vec<String> = parts.iter().map(|x| state::sql_text(x)).collect();
                filter.push_str(&format!(" AND partition IN ({})", list.join(", ")));
            }
        }
        let rows = cat.rows_where(&filter).await?;
        for r in &rows {
            if let Some(p) = &r.path {
                self.used.insert(p.clone());
            }
        }
        for r in state::current_files(&rows) {
            let slot = r.slot_key().unwrap_or_default().to_string();
            self.current
                .insert((r.partition.clone(), r.stream.clone(), slot), (r.path.clone().unwrap_or_default(), r.sha256.clone()));
        }
        Ok(())
    }
}

/// The landings a pull reads besides its streams' marks (see `lake::state`): nothing older
/// can share a slot or a file name with what it lands.
pub struct Scope {
    /// Windows starting from this instant on.
    pub windows: DateTime<Utc>,
    /// Window-less landings made from this instant on.
    pub landed: DateTime<Utc>,
    /// Streams read in full (a details run reads which details are landed).
    pub whole: Vec<String>,
    /// Only these partitions' landings (a `--partitions` run whose paths are
    /// [`names_per_partition`]: no other partition's landing shares a slot or a name with
    /// its own). None: every partition's.
    pub partitions: Option<Vec<String>>,
}

/// Whether no two partitions' landings can share a path under `template`: its literal start
/// (nothing but `{source}` before it) is followed by `{partition}` as a whole folder, and no
/// partition id holds a `/`. So each partition's paths start with a folder of their own.
pub fn names_per_partition(template: &str, partitions: &[String]) -> bool {
    let Some(at) = template.find("{partition}/") else { return false };
    let before = template[..at].replace("{source}", "");
    (before.is_empty() || before.ends_with('/'))
        && !before.contains('{')
        && partitions.iter().all(|x| !x.is_empty() && !x.contains('/'))
}

/// Check `--streams` against the pipeline before anything runs.
pub fn check_streams(p: &Pipeline, wanted: &Option<Vec<String>>) -> Result<()> {
    if let Some(w) = wanted {
        for name in w {
            if !p
                .streams
                .iter()
                .any(|s| &s.name == name || s.outputs.iter().any(|o| &o.stream == name))
            {
                let all: Vec<&str> = p.streams.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "--streams: `{name}` is not a stream of {} (streams: {})",
                    p.file,
                    all.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// State-table files past which a pull compacts the catalogue and the run log (see
/// `state::compact_when_over`); 32, or `INGEST_COMPACT_CATALOGUE_OVER`. Reads skip compacted
/// files by their statistics; small files each cost an open and a scan: measured on a
/// 2,380-file lake (126 commits, one small Parquet file each), `status` took 0.24–0.29 s
/// before compaction and 0.12 s after, so a few dozen files is already the cost that matters.
fn compact_catalogue_over() -> usize {
    std::env::var("INGEST_COMPACT_CATALOGUE_OVER").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
}

pub async fn pull(p: &Pipeline, lake: &Lake, opts: &PullOptions) -> Result<PullReport> {
    check_streams(p, &opts.streams)?;
    let started = std::time::Instant::now();
    let client = Client::new(p).map_err(|e| Error::Other(e.to_string()))?;
    // `${last:…}` without a value is an input error: found before anything is written.
    last::check_last(p, lake).await?;
    let scope = match &opts.partitions {
        Some(parts) => lease::Scope::Partitions(parts),
        None => lease::Scope::Source,
    };
    let lease = lease::acquire_scope(lake, &p.name, scope, opts.wait).await?;
    let res = pull_leased(p, lake, opts, &client, &lease).await;
    lease.release().await;
    let mut rep = res?;
    rep.elapsed = started.elapsed();
    Ok(rep)
}

/// Paths of the current catalogued files of `source`.
pub fn current_paths(known: &Known) -> std::collections::HashSet<String> {
    known.current.values().map(|(p, _)| p.clone()).collect()
}

async fn pull_leased(p: &Pipeline, lake: &Lake, opts: &PullOptions, client: &Client, lease: &lease::Leases) -> Result<PullReport> {
    let started = std::time::Instant::now();
    let run_id = crate::lake::runs::new_run_id();
    let now = Utc::now();
    let mut jobs = Vec::new();
    for part in &p.partitions {
        for s in &p.streams {
            let selected = opts.streams.as_ref().is_none_or(|w| {
                w.iter()
                    .any(|n| n == &s.name || s.outputs.iter().any(|o| &o.stream == n))
            });
            if selected {
                jobs.push((part, s));
            }
        }
    }
    // Streams landed once (seed 003's "lấy về 1 lần"): skipped while their last successful
    // landing (the run log's) stands — until `refresh_every` has passed, or `--full-refresh`.
    if !opts.full_refresh && jobs.iter().any(|(_, s)| s.once.is_some()) {
        let logged = runs::read(lake, Some(&p.name), false).await?;
        jobs.retain(|(part, s)| {
            let Some(every) = s.once else { return true };
            let last = logged
                .iter()
                .filter(|r| r.success && r.partition == part.id && r.stream == s.name)
                .filter_map(|r| crate::time::parse_instant(&r.ended, &chrono_tz::UTC))
                .max();
            match (last, every) {
                (None, _) => true,
                (Some(t), Some(d)) if now - t >= d => true,
                (Some(t), _) => {
                    tracing::info!(partition = %part.id, stream = %s.name, landed = %t.format("%Y-%m-%d %H:%M UTC"), "landed once already: skipped (once = true; --full-refresh lands it again)");
                    false
                }
            }
        });
    }
    let t0 = std::time::Instant::now();
    let parts = opts.partitions.as_deref();
    let unfinished = state::Unfinished::read(lake, &p.name).await?;
    let scan = unfinished.scan_needed(parts);
    let keys: Vec<(String, String)> = jobs.iter().map(|(part, s)| (part.id.clone(), s.name.clone())).collect();
    let cat = state::Catalogue::open(lake).await?;
    let mut known = Known::marks(lake, &cat, &p.name, &keys).await?;
    if scan {
        known.read_landings(&cat, &p.name, None).await?;
    } else {
        // Only landings that can share a slot or a name with this run's: windows from its
        // earliest one on, window-less landings from today on (their files are named by the
        // day the run starts), each with a margin of two days.
        let mut since = now;
        for (part, s) in &jobs {
            let wm = known.watermarks.get(&(part.id.clone(), s.name.clone())).filter(|_| !opts.full_refresh);
            if let Ok(Some(from)) = stream::window_from(p, s, opts, wm.map(String::as_str)) {
                since = since.min(from);
            }
        }
        let whole: Vec<String> = jobs.iter().filter_map(|(_, s)| s.details.as_ref().map(|d| d.stream.clone())).collect();
        let margin = chrono::Duration::days(2);
        // A `--partitions` run reads only its partitions' rows where paths keep them apart (on
        // a catalogue written in commit order, their rows sit in few files).
        let partitions = parts.filter(|ps| names_per_partition(&p.path_template, ps)).map(<[String]>::to_vec);
        let scope = Scope { windows: since - margin, landed: window::day_start(now.date_naive()) - margin, whole, partitions };
        known.read_landings(&cat, &p.name, Some(&scope)).await?;
    }
    known.lookback_files(&cat, &p.name, &jobs, opts.full_refresh).await?;
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, scan, "catalogue read");
    if scan {
        // Holding the lease, no other run of this source is writing: anything on disk that
        // the catalogue does not list as current is a crashed or superseded landing.
        // (A sharded pull looks only at its own partitions' folders.)
        let t0 = std::time::Instant::now();
        match parts {
            None => lake.sweep_staging(&p.name),
            Some(parts) => {
                for part in parts {
                    let t = p.path_template.replace("{source}", &p.name).replace("{partition}", part);
                    if let Some(dir) = crate::lake::fixed_dir(&t) {
                        lake.sweep_staging(dir);
                    }
                }
            }
        }
        lake.sweep_log_staging(state::CATALOGUE, std::time::Duration::from_secs(60));
        let orphans = lake.orphans(&p.path_template, &p.name, &current_paths(&known), parts).await?;
        if !orphans.is_empty() {
            let n = lake.remove_all(&orphans).await?;
            tracing::info!(source = %p.name, files = n, "removed raw files no catalogue row lists");
        }
        unfinished.scanned(lake, &p.name, parts).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "orphan scan");
    }
    let last = last::check_last(p, lake).await?;
    state::Unfinished::start(lake, &p.name, &run_id, parts).await?;
    let writer = StateWriter::start(lake, cat.table, Some(lease.fence()));
    let prog = progress::Progress::new(opts.progress);
    tracing::info!(source = %p.name, run_id = %run_id, lake = %lake.url, "pull started");
    let reports: Vec<StreamReport> = futures::stream::iter(jobs)
        .map(|(part, s)| {
            let bar = prog.bar(&format!("{}/{}", part.id, s.name));
            let (known, writer, run_id, last) = (&known, &writer, &run_id, &last);
            async move {
            let run = stream::StreamRun {
                p,
                part,
                s,
                client,
                lake,
                writer,
                known,
                opts,
                run_id,
                now,
                progress: &bar,
                last: last.get(&(part.id.clone(), s.name.clone())),
            };
                let rep = match run.run().await {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = crate::secret::redact(&e.to_string());
                        tracing::error!(partition = %part.id, stream = %s.name, "stream failed: {msg}");
                        StreamReport { error: Some(msg), started: Some(now), ..StreamReport::new(&part.id, &s.name) }
                    }
                };
                bar.finish(format!("{} pages, {} records", rep.pages, rep.records));
                tracing::info!(partition = %part.id, stream = %s.name, pages = rep.pages, records = rep.records, retries = rep.retries, throttled = rep.throttled, "stream done");
                rep
            }
        })
        .buffer_unordered(p.concurrency)
        .collect()
        .await;
    let closed = writer.close().await;
    let mut streams = reports;
    streams.sort_by(|a, b| (&a.partition, &a.stream).cmp(&(&b.partition, &b.stream)));
    // The run log: one row per (partition, stream), whatever happened.
    let commit_error = closed.as_ref().err().map(|e| crate::secret::redact(&e.to_string()));
    let ended = crate::time::rfc3339(Utc::now());
    let rows: Vec<runs::RunRow> = streams
        .iter()
        .map(|r| {
            let declared = p.streams.iter().find(|s| s.name == r.stream).map(last::declared_last).unwrap_or_default();
            let rec = r.last.as_deref().filter(|_| !declared.is_empty()).and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
            let last = rec.map(|rec| {
                let m: serde_json::Map<String, serde_json::Value> = declared
                    .iter()
                    .filter_map(|f| crate::json::at_str(&rec, f).map(|v| (f.clone(), v.clone())))
                    .collect();
                serde_json::Value::Object(m).to_string()
            });
            let error = r.error.clone().or_else(|| commit_error.clone());
            runs::RunRow {
                run_id: run_id.clone(),
                source: p.name.clone(),
                partition: r.partition.clone(),
                stream: r.stream.clone(),
                started: crate::time::rfc3339(r.started.unwrap_or(now)),
                ended: ended.clone(),
                success: error.is_none(),
                error,
                pages: r.pages as i64,
                records: r.records as i64,
                files: r.files as i64,
                bytes: r.bytes as i64,
                last,
                retries: Some(r.retries as i64),
                throttled: Some(r.throttled as i64),
            }
        })
        .collect();
    if let Err(e) = runs::append(lake, &rows).await {
        tracing::warn!("cannot append to the run log: {e}");
    }
    let closed = closed?;
    let clean = closed.left_behind == 0 && streams.iter().all(|r| r.error.is_none());
    if clean {
        // Nothing of this run can be an orphan: the next pull need not scan.
        if let Err(e) = state::Unfinished::finish(lake, &p.name, &run_id).await {
            tracing::warn!("cannot remove this run's unfinished marker (the next pull scans for orphans): {e}");
        }
    }
    let commits = closed.commits;
    // The catalogue and the run log get a small file per commit: compacted past a few dozen
    // (a failure here loses nothing; the next pull or `ingest optimize` tries again).
    let over = compact_catalogue_over();
    let compacted = match closed.table {
        Some(t) => state::compact_table_when_over(state::CATALOGUE, t, over).await,
        None => Ok(()),
    };
    for (rel, res) in [(state::CATALOGUE, compacted), (runs::RUNS, state::compact_when_over(lake, runs::RUNS, over).await)] {
        if let Err(e) = res {
            tracing::warn!("cannot compact {rel} (the next pull retries): {e}");
        }
    }
    Ok(PullReport {
        source: p.name.clone(),
        run_id,
        streams,
        commits,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::names_per_partition;

    #[test]
    fn names_are_per_partition_only_when_the_partition_is_a_folder_of_its_own() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let two = ids(&["1001", "1002"]);
        assert!(names_per_partition("{source}/{partition}/{stream}/file_{date}.json", &two));
        assert!(names_per_partition("{partition}/{stream}/file_{date}.json", &two));
        assert!(names_per_partition("raw/{source}/{partition}/{stream}_{date}.json", &two));
        // Not a whole folder: "x1" + "1/…" and "x11" + "/…" could meet.
        assert!(!names_per_partition("{source}/x{partition}/{stream}/{date}.json", &two));
        assert!(!names_per_partition("{source}/{stream}/{partition}_{date}.json", &two));
        // Another placeholder before it: its value could end where a partition begins.
        assert!(!names_per_partition("{stream}/{partition}/{date}.json", &two));
        assert!(!names_per_partition("{source}/{stream}/{date}.json", &two));
        assert!(!names_per_partition("{source}/{partition}/{stream}/{date}.json", &ids(&["a/b"])));
    }
}
