//! Pull state in Delta: the catalogue of landed files at `<lake>/_ingest/catalogue`, and the
//! one place that explains how positions, txn versions and watermarks relate.
//!
//! - **The catalogue is the truth.** A raw file exists for readers only once a catalogue row
//!   names it. Landing protocol (one writer per source, fenced by [`super::lease`]):
//!   1. the stream writes its NDJSON under a name no catalogue row has ever used
//!      (`file_<date>.json`, else `file_<date>_<n>.json`), visible only when complete;
//!   2. the row is committed (with the watermark it earns, below);
//!   3. the file it supersedes (same `slot`: the same window of the same stream) is deleted.
//!
//!   A crash after 1 leaves an unrecorded file; after 2, a superseded one. Both are *orphans*
//!   (on disk, not a current catalogued file): `ingest status` lists them, and the next pull
//!   of that source (holding the lease) or `ingest vacuum` removes them. After a successful
//!   run the raw folders hold exactly the current catalogued files.
//! - **Unfinished runs** ([`Unfinished`]): a pull writes `_ingest/unfinished/<source>/run-<id>.json`
//!   before it lands anything and deletes it only when it ends with every stream landed, every
//!   commit made and every superseded file deleted. So a source without such a marker has no
//!   orphans, and the next pull scans the raw folders (every object under the source) only
//!   when a marker is there — a day's pull costs the same on a lake of 100 files or 100,000.
//!   `tracked` in that folder says the source's runs have been marked since its last full scan
//!   (a lake written before markers existed is scanned once).
//! - **Reads stay flat**: a pull reads the rows that can share a slot or a file name with what
//!   it is about to land (a window's file name and slot carry its start date, a window-less
//!   stream names its files by the day it runs), plus one aggregate for the watermarks; a
//!   transform reads the rows after the position its models consumed, plus the distinct
//!   schemas per stream. Compaction keeps files in commit order at a bounded size
//!   ([`STATE_FILE_SIZE`]), so those filters skip all but the newest files.
//! - **Positions** (`seq`) are assigned at commit time from the Delta version being
//!   committed: `seq = version * SEQ_PER_COMMIT + i`. Catalogue commits never rebase
//!   (`max_retries 0`): on a conflict the writer reloads and renumbers. So positions strictly
//!   increase in commit order whoever commits (pulls of different sources run side by side),
//!   and a transform that consumed "up to N" has seen every row committed before any row > N.
//! - **Watermarks** are a column of the landing rows, so a landing and the watermark it earns
//!   are one Delta commit; a stream's watermark is the max over its rows. That max is also
//!   kept as the commit's txn [`watermark_app`] → epoch seconds (watermarks are RFC 3339 to
//!   the second), so a pull reads its streams' watermarks without reading rows; a stream whose
//!   rows predate that txn falls back to the max over its rows once.
//! - **txn versions**: each commit records an application transaction per stream
//!   (`ingest/<source>/<partition>/<request>` → landings so far), so a replay is detectable;
//!   models record `ingest-model/<target>` → the catalogue position they consumed (see
//!   `transform`).
use super::Lake;
use crate::error::{Error, Result};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::{DeltaTable, DeltaTableBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

pub const CATALOGUE: &str = "_ingest/catalogue";

/// One landing: a raw file (or, with `path` empty, a window that held no record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LandedFile {
    pub seq: i64,
    pub source: String,
    pub partition: String,
    /// The raw stream (table) the file belongs to.
    pub stream: String,
    /// The pipeline stream (request) that produced it.
    pub request: String,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub path: Option<String>,
    pub records: i64,
    pub bytes: i64,
    pub sha256: Option<String>,
    pub min_cursor: Option<String>,
    pub max_cursor: Option<String>,
    /// The request's watermark once this landing is committed (RFC 3339, UTC).
    pub watermark: Option<String>,
    pub run_id: String,
    pub landed_at: String,
    /// What this landing replaces: a later row with the same slot supersedes it (windows
    /// re-pulled); a cursor stream's landings each have their own slot. None = `path`.
    #[serde(default)]
    pub slot: Option<String>,
    /// The file's inferred schema (see `lake::schema`).
    #[serde(default)]
    pub schema: Option<String>,
}

/// Positions a commit may hand out: `seq = version * SEQ_PER_COMMIT + i`.
pub const SEQ_PER_COMMIT: i64 = 100_000;

impl LandedFile {
    pub fn slot_key(&self) -> Option<&str> {
        self.slot.as_deref().or(self.path.as_deref())
    }
}

/// The current landing of each slot (the latest by position), with a path, in position order.
pub fn current_files(rows: &[LandedFile]) -> Vec<LandedFile> {
    let mut latest: std::collections::HashMap<(&str, &str, &str, &str), &LandedFile> = Default::default();
    for r in rows {
        if let (Some(_), Some(slot)) = (&r.path, r.slot_key()) {
            let k = (r.source.as_str(), r.partition.as_str(), r.stream.as_str(), slot);
            if latest.get(&k).is_none_or(|o| o.seq < r.seq) {
                latest.insert(k, r);
            }
        }
    }
    let mut out: Vec<LandedFile> = latest.into_values().cloned().collect();
    out.sort_by_key(|r| r.seq);
    out
}

fn has_current_columns(t: &DeltaTable) -> bool {
    t.snapshot()
        .map(|s| {
            let have: Vec<String> = s.schema().fields().map(|f| f.name().to_string()).collect();
            schema().fields().iter().all(|f| have.contains(f.name()))
        })
        .unwrap_or(false)
}

/// The unfinished-run markers of a source (see the module doc).
pub struct Unfinished {
    /// Each marker: its object and the partitions its run pulled (None: all).
    pub runs: Vec<(object_store::path::Path, Option<Vec<String>>)>,
    /// Whether the source's runs have been marked since its last full scan.
    pub tracked: bool,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    run_id: String,
    partitions: Option<Vec<String>>,
    started: String,
}

fn unfinished_dir(lake: &Lake, source: &str) -> object_store::path::Path {
    lake.path(&format!("_ingest/unfinished/{source}"))
}

fn unfinished_obj(lake: &Lake, source: &str, name: &str) -> object_store::path::Path {
    lake.path(&format!("_ingest/unfinished/{source}/{name}"))
}

impl Unfinished {
    pub async fn read(lake: &Lake, source: &str) -> Result<Self> {
        use futures::TryStreamExt;
        let dir = unfinished_dir(lake, source);
        let listed: Vec<object_store::ObjectMeta> = match lake.store.list(Some(&dir)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut out = Unfinished { runs: Vec::new(), tracked: false };
        for m in listed {
            match m.location.filename() {
                Some("tracked") => out.tracked = true,
                Some(n) if n.starts_with("run-") => {
                    let body = match lake.store.get(&m.location).await {
                        Ok(g) => g.bytes().await?,
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    // An unreadable marker is a run of unknown scope: all partitions.
                    let parts = serde_json::from_slice::<Marker>(&body).ok().and_then(|m| m.partitions);
                    out.runs.push((m.location, parts));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether a run over `partitions` (None: all) must scan for orphans first.
    pub fn scan_needed(&self, partitions: Option<&[String]>) -> bool {
        !self.tracked
            || self.runs.iter().any(|(_, theirs)| match (partitions, theirs) {
                (Some(mine), Some(theirs)) => theirs.iter().any(|t| mine.contains(t)),
                _ => true,
            })
    }

    /// After a full scan over `partitions` (None: all) removed the orphans: drop the markers
    /// that scan covered and mark the source tracked.
    pub async fn scanned(&self, lake: &Lake, source: &str, partitions: Option<&[String]>) -> Result<()> {
        for (loc, theirs) in &self.runs {
            let covered = match (partitions, theirs) {
                (None, _) => true,
                (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.contains(t)),
                (Some(_), None) => false,
            };
            if covered {
                delete_quietly(lake, loc).await?;
            }
        }
        if !self.tracked {
            lake.store.put(&unfinished_obj(lake, source, "tracked"), bytes::Bytes::new().into()).await?;
        }
        Ok(())
    }

    /// Before a run lands anything: its marker.
    pub async fn start(lake: &Lake, source: &str, run_id: &str, partitions: Option<&[String]>) -> Result<()> {
        let m = Marker {
            run_id: run_id.to_string(),
            partitions: partitions.map(<[String]>::to_vec),
            started: crate::time::rfc3339(chrono::Utc::now()),
        };
        let body = serde_json::to_vec(&m).map_err(|e| Error::Lake(e.to_string()))?;
        lake.store.put(&unfinished_obj(lake, source, &format!("run-{run_id}.json")), body.into()).await?;
        Ok(())
    }

    /// A run that left nothing behind: its marker goes.
    pub async fn finish(lake: &Lake, source: &str, run_id: &str) -> Result<()> {
        delete_quietly(lake, &unfinished_obj(lake, source, &format!("run-{run_id}.json"))).await
    }
}

async fn delete_quietly(lake: &Lake, loc: &object_store::path::Path) -> Result<()> {
    match lake.store.delete(loc).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a Delta error is another writer having committed first (typed, not by message).
pub fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    matches!(
        e,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_) | T::CommitConflict(_)
            }
    )
}

fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("request", DataType::Utf8, false),
        Field::new("window_start", ts(), true),
        Field::new("window_end", ts(), true),
        Field::new("path", DataType::Utf8, true),
        Field::new("records", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("sha256", DataType::Utf8, true),
        Field::new("min_cursor", DataType::Utf8, true),
        Field::new("max_cursor", DataType::Utf8, true),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("landed_at", ts(), false),
        Field::new("slot", DataType::Utf8, true),
        Field::new("schema", DataType::Utf8, true),
    ]))
}

pub fn txn_app(source: &str, partition: &str, request: &str) -> String {
    format!("ingest/{source}/{partition}/{request}")
}

/// The txn holding a stream's watermark (the max over its rows) as epoch seconds.
pub fn watermark_app(source: &str, partition: &str, request: &str) -> String {
    format!("ingest-watermark/{source}/{partition}/{request}")
}

/// Whether `rel` holds a Delta log (without loading the table): a checkpoint pointer, else a
/// listing of the log (short until the first checkpoint; a long one costs as much as a load).
pub async fn table_exists(lake: &Lake, rel: &str) -> Result<bool> {
    let log = lake.path(&format!("{}/_delta_log", rel.trim_matches('/')));
    match lake.store.head(&lake.path(&format!("{}/_delta_log/_last_checkpoint", rel.trim_matches('/')))).await {
        Ok(_) => return Ok(true),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(!lake.store.list_with_delimiter(Some(&log)).await?.objects.is_empty())
}

/// `schema/table` folders of the lake that hold a Delta table.
pub async fn delta_tables(lake: &Lake) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let root = lake.path("");
    let top = lake
        .store
        .list_with_delimiter(if lake.path("x").as_ref() == "x" {
            None
        } else {
            Some(&root)
        })
        .await?;
    for schema in top.common_prefixes {
        let s = schema.filename().unwrap_or_default().to_string();
        for table in lake.store.list_with_delimiter(Some(&schema)).await?.common_prefixes {
            let t = table.filename().unwrap_or_default().to_string();
            let rel = format!("{s}/{t}");
            if table_exists(lake, &rel).await? {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Open a Delta table of the lake (None when it does not exist yet).
pub async fn open_table(lake: &Lake, rel: &str) -> Result<Option<DeltaTable>> {
    if !table_exists(lake, rel).await? {
        return Ok(None);
    }
    let mut t = DeltaTableBuilder::from_url(lake.table_url(rel))?
        .with_storage_backend(lake.store.clone(), lake.table_url(rel))
        .build()?;
    match t.load().await {
        Ok(()) => Ok(Some(t)),
        Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn open_or_create(lake: &Lake) -> Result<DeltaTable> {
    open_or_create_table(lake, CATALOGUE, "catalogue", schema()).await
}

/// Compact the Delta table at `rel` (deltalake's bin-packing `optimize`, one task) and write a
/// checkpoint when files were compacted. Rows are unchanged (so are catalogue positions and
/// the `txn` watermarks). Returns (files compacted, files written).
/// `sort_by`: rewrite the whole table ordered by that column (Z-order on one column) instead
/// of bin-packing its small files — for a table written in that order (a model's `cluster_by`),
/// whose merges then keep touching few files.
pub async fn compact(lake: &Lake, rel: &str, sort_by: Option<&str>) -> Result<(u64, u64)> {
    match open_table(lake, rel).await? {
        Some(t) => compact_table(rel, t, sort_by).await,
        None => Ok((0, 0)),
    }
}

/// Size of a compacted state-table file (`_ingest/…`): ~4,000 catalogue rows. Bounded so that
/// (a) compaction merges only the small files of recent commits, never rewriting the table,
/// and (b) each file keeps a narrow range of positions and dates for reads to skip by.
pub const STATE_FILE_SIZE: u64 = 256 * 1024;

/// How long a state table (`_ingest/…`) keeps log entries older than its latest checkpoint.
/// Loading a table lists its whole log folder (locally every entry; a pull commits up to a few
/// times a minute), so a long log makes every pull and transform slower as the lake ages.
/// Nothing reads a state table's history: positions, watermarks and txns live in the latest
/// snapshot, catalogue writers never rebase (they reload on a conflict), so the retention
/// only has to outlast a reader's load (milliseconds).
pub const STATE_LOG_RETENTION: &str = "interval 10 minutes";
const LOG_RETENTION: &str = "delta.logRetentionDuration";

async fn compact_table(rel: &str, t: DeltaTable, sort_by: Option<&str>) -> Result<(u64, u64)> {
    let mut op = t.optimize().with_max_concurrent_tasks(1);
    if rel.starts_with("_ingest/") {
        // deltalake's bin-packing keeps commit order (newest first) within a bin.
        op = op.with_target_size(std::num::NonZeroU64::new(STATE_FILE_SIZE).expect("non-zero"));
    }
    if let Some(c) = sort_by {
        op = op.with_type(deltalake::operations::optimize::OptimizeType::ZOrder(vec![c.to_string()]));
    }
    let (t, metrics) = op.await?;
    if metrics.num_files_removed > 0 {
        deltalake::checkpoints::create_checkpoint(&t, None).await?;
        tracing::info!(table = %rel, removed = metrics.num_files_removed, added = metrics.num_files_added, "compacted");
    }
    Ok((metrics.num_files_removed, metrics.num_files_added))
}

/// After a pull: the state table at `rel` (the catalogue gets one small file per commit)
/// compacted once it holds more than `max` small files, so reads stay flat as pulls pile up.
pub async fn compact_when_over(lake: &Lake, rel: &str, max: usize) -> Result<()> {
    match open_table(lake, rel).await? {
        Some(t) => compact_table_when_over(rel, t, max).await,
        None => Ok(()),
    }
}

/// [`compact_when_over`] for a table already loaded.
pub async fn compact_table_when_over(rel: &str, t: DeltaTable, max: usize) -> Result<()> {
    // Tables created before the short log retention get it once.
    let retention = t.snapshot()?.metadata().configuration().get(LOG_RETENTION).cloned();
    let t = if retention.as_deref() != Some(STATE_LOG_RETENTION) {
        let props = HashMap::from([(LOG_RETENTION.to_string(), STATE_LOG_RETENTION.to_string())]);
        t.set_tbl_properties().with_properties(props).await?
    } else {
        t
    };
    let small = t.snapshot()?.log_data().iter().filter(|f| (f.size() as u64) < STATE_FILE_SIZE / 2).count();
    if small > max {
        compact_table(rel, t, None).await?;
    }
    Ok(())
}

/// Open the state table at `rel`, creating it with `schema` (checkpoints every 50 commits).
pub(crate) async fn open_or_create_table(lake: &Lake, rel: &str, name: &str, schema: SchemaRef) -> Result<DeltaTable> {
    if let Some(t) = open_table(lake, rel).await? {
        return Ok(t);
    }
    if let Some(d) = &lake.local_dir {
        std::fs::create_dir_all(d.join(rel))?;
    }
    let t = DeltaTableBuilder::from_url(lake.table_url(rel))?
        .with_storage_backend(lake.store.clone(), lake.table_url(rel))
        .build()?;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let st: deltalake::kernel::StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::Lake(e.to_string()))?;
    let fields: Vec<deltalake::kernel::StructField> = st.fields().cloned().collect();
    let created = t
        .create()
        .with_table_name(name)
        .with_columns(fields)
        .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("50"))
        .with_configuration_property(deltalake::TableProperty::LogRetentionDuration, Some(STATE_LOG_RETENTION))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another process created it first.
        Err(_) => open_table(lake, rel)
            .await?
            .ok_or_else(|| Error::Lake(format!("cannot create {rel}"))),
    }
}

/// Every catalogue row of `source` (all sources when None), in landing order.
pub async fn read_catalogue(lake: &Lake, source: Option<&str>) -> Result<Vec<LandedFile>> {
    let c = Catalogue::open(lake).await?;
    match source {
        Some(s) => c.rows_where(&format!("source = {}", sql_text(s))).await,
        None => c.rows_where("TRUE").await,
    }
}

/// The catalogue as of one load: a command's reads go through one handle (each load lists and
/// replays the log; on a long log that costs more than the reads).
pub struct Catalogue {
    pub table: Option<DeltaTable>,
}

impl Catalogue {
    pub async fn open(lake: &Lake) -> Result<Self> {
        Ok(Catalogue { table: open_table(lake, CATALOGUE).await? })
    }

    async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        match &self.table {
            Some(t) => query_table(t, sql).await,
            None => Ok(Vec::new()),
        }
    }

    /// Every txn (app → version) of the catalogue's log in one pass: the checkpoint's `txn`
    /// column and the commits after it (delta-rs answers one app per log replay; a pull asks
    /// two per stream). None when the log has a layout this does not read (a multi-part
    /// checkpoint): ask per app then.
    pub async fn txns(&self, lake: &Lake) -> Result<Option<HashMap<String, i64>>> {
        let Some(t) = &self.table else { return Ok(Some(HashMap::new())) };
        let Some(version) = t.version() else { return Ok(Some(HashMap::new())) };
        txns_of_log(lake, CATALOGUE, version as i64).await
    }

    /// Catalogue rows matching `filter` (SQL over the catalogue's columns), in landing order.
    /// Delta skips the catalogue files whose statistics rule the filter out: compaction keeps
    /// commit order (see [`compact_when_over`]), so each file spans a narrow range of `seq`,
    /// `landed_at` and `window_start`, and a filter on them reads what is recent, not the lake.
    pub async fn rows_where(&self, filter: &str) -> Result<Vec<LandedFile>> {
        rows_of(&self.query(&format!("SELECT * FROM state WHERE {filter} ORDER BY seq")).await?)
    }

    /// A stream's watermark as the max over its rows (for rows landed before [`watermark_app`]).
    pub async fn watermark_from_rows(&self, source: &str, partition: &str, request: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT max(watermark) AS watermark FROM state WHERE source = {} AND partition = {} AND request = {}",
            sql_text(source),
            sql_text(partition),
            sql_text(request)
        );
        let mut out = None;
        for b in self.query(&sql).await? {
            out = out.max(strs(&b, "watermark")?.into_iter().flatten().max());
        }
        Ok(out)
    }

    /// What a transform plans with, without reading every row: each raw stream's distinct
    /// recorded schemas, and the catalogue's highest position. Catalogue rows never change once
    /// committed and positions only grow, so the answer up to a position is kept in
    /// `_ingest/cache/stream_schemas.json` (with the catalogue's table id) and each run
    /// aggregates only the rows after it. A missing or foreign cache is rebuilt.
    pub async fn stream_schemas(&self, lake: &Lake) -> Result<(Vec<StreamSchema>, i64)> {
        let Some(t) = &self.table else { return Ok((Vec::new(), 0)) };
        let id = t.snapshot()?.metadata().id().to_string();
        let path = lake.path(SCHEMA_CACHE);
        let cached: Option<SchemaCache> = match lake.store.get(&path).await {
            Ok(g) => serde_json::from_slice(&g.bytes().await?).ok().filter(|c: &SchemaCache| c.table_id == id),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let after = cached.as_ref().map_or(-1, |c| c.seq);
        let (new, max_new) = self.stream_schemas_after(after).await?;
        let mut all: std::collections::BTreeSet<StreamSchema> = cached.map(|c| c.streams.into_iter().collect()).unwrap_or_default();
        let grew = new.iter().any(|s| !all.contains(s)) || max_new > after;
        all.extend(new);
        let seq = max_new.max(after).max(0);
        if grew {
            let c = SchemaCache { table_id: id, seq, streams: all.iter().cloned().collect() };
            let body = serde_json::to_vec(&c).map_err(|e| Error::Lake(e.to_string()))?;
            if let Err(e) = lake.store.put(&path, body.into()).await {
                tracing::warn!("cannot write {SCHEMA_CACHE} (the next run aggregates more rows): {e}");
            }
        }
        Ok((all.into_iter().collect(), seq))
    }

    /// [`Self::stream_schemas`] of the rows after position `after`, and their highest position
    /// (`after` when there are none).
    async fn stream_schemas_after(&self, after: i64) -> Result<(Vec<StreamSchema>, i64)> {
        let sql = format!(
            "SELECT source, stream, schema, path IS NULL AS empty, max(seq) AS seq FROM state WHERE seq > {after} \
             GROUP BY source, stream, schema, path IS NULL"
        );
        let (mut out, mut max_seq) = (Vec::new(), after);
        for b in self.query(&sql).await? {
            use deltalake::arrow::array::AsArray;
            let (so, st, sc) = (strs(&b, "source")?, strs(&b, "stream")?, strs(&b, "schema")?);
            let empty = b.column_by_name("empty").map(|c| c.as_boolean().iter().map(|v| v.unwrap_or(false)).collect::<Vec<_>>());
            max_seq = ints(&b, "seq")?.into_iter().fold(max_seq, i64::max);
            for (i, ((so, st), sc)) in so.into_iter().zip(st).zip(sc).enumerate() {
                let empty = empty.as_ref().is_some_and(|e| e[i]);
                out.push(StreamSchema { source: so.unwrap_or_default(), stream: st.unwrap_or_default(), schema: sc.filter(|_| !empty), empty });
            }
        }
        out.sort();
        Ok((out, max_seq))
    }
}

/// Every txn of the log of the table at `rel` as of `version` (see [`Catalogue::txns`]).
async fn txns_of_log(lake: &Lake, rel: &str, version: i64) -> Result<Option<HashMap<String, i64>>> {
    use deltalake::arrow::array::{Array, AsArray};
    let log = |name: &str| lake.path(&format!("{rel}/_delta_log/{name}"));
    let mut out = HashMap::new();
    let mut from = 0;
    match lake.store.get(&log("_last_checkpoint")).await {
        Ok(g) => {
            let v: serde_json::Value = serde_json::from_slice(&g.bytes().await?).map_err(|e| Error::Lake(e.to_string()))?;
            let Some(cp) = v["version"].as_i64().filter(|cp| *cp <= version && v.get("parts").is_none_or(|p| p.is_null())) else {
                return Ok(None);
            };
            let bytes = match lake.store.get(&log(&format!("{cp:020}.checkpoint.parquet"))).await {
                Ok(g) => g.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let b = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::Lake(e.to_string()))?;
            let Some(i) = b.schema().fields().iter().position(|f| f.name() == "txn") else { return Ok(None) };
            let mask = deltalake::parquet::arrow::ProjectionMask::roots(b.parquet_schema(), [i]);
            for batch in b.with_projection(mask).build().map_err(|e| Error::Lake(e.to_string()))? {
                let batch = batch?;
                let txn = batch.column(0).as_struct();
                let (Some(app), Some(ver)) = (txn.column_by_name("appId"), txn.column_by_name("version")) else { return Ok(None) };
                let app = deltalake::arrow::compute::cast(app, &DataType::Utf8)?;
                let ver = deltalake::arrow::compute::cast(ver, &DataType::Int64)?;
                let (app, ver) = (app.as_string::<i32>(), ver.as_primitive::<deltalake::arrow::datatypes::Int64Type>());
                for r in 0..batch.num_rows() {
                    if txn.is_valid(r) && app.is_valid(r) && ver.is_valid(r) {
                        out.insert(app.value(r).to_string(), ver.value(r));
                    }
                }
            }
            from = cp + 1;
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for v in from..=version {
        let body = match lake.store.get(&log(&format!("{v:020}.json"))).await {
            Ok(g) => g.bytes().await?,
            // Cleaned up behind a newer checkpoint meanwhile: ask per app.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for line in body.split(|c| *c == b'\n').filter(|l| l.windows(6).any(|w| w == b"\"txn\":")) {
            let a: serde_json::Value = serde_json::from_slice(line).map_err(|e| Error::Lake(e.to_string()))?;
            if let (Some(app), Some(ver)) = (a["txn"]["appId"].as_str(), a["txn"]["version"].as_i64()) {
                out.insert(app.to_string(), ver);
            }
        }
    }
    Ok(Some(out))
}

/// A SQL string literal.
pub fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Catalogue rows matching `filter` (see [`Catalogue::rows_where`]).
pub async fn rows_where(lake: &Lake, filter: &str) -> Result<Vec<LandedFile>> {
    Catalogue::open(lake).await?.rows_where(filter).await
}

/// Catalogue rows from Arrow columns (no per-row JSON).
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<LandedFile>> {
    let mut out = Vec::new();
    for b in batches {
        let n = b.num_rows();
        let (seq, records, bytes) = (ints(b, "seq")?, ints(b, "records")?, ints(b, "bytes")?);
        let col = |c: &str| strs(b, c);
        let (mut source, mut partition, mut stream, mut request) = (col("source")?, col("partition")?, col("stream")?, col("request")?);
        let (mut path, mut sha256, mut slot, mut schema) = (col("path")?, col("sha256")?, col("slot")?, col("schema")?);
        let (mut min_cursor, mut max_cursor, mut watermark, mut run_id) =
            (col("min_cursor")?, col("max_cursor")?, col("watermark")?, col("run_id")?);
        let (mut window_start, mut window_end, mut landed_at) = (times(b, "window_start")?, times(b, "window_end")?, times(b, "landed_at")?);
        for i in 0..n {
            out.push(LandedFile {
                seq: seq[i],
                source: source[i].take().unwrap_or_default(),
                partition: partition[i].take().unwrap_or_default(),
                stream: stream[i].take().unwrap_or_default(),
                request: request[i].take().unwrap_or_default(),
                window_start: window_start[i].take(),
                window_end: window_end[i].take(),
                path: path[i].take(),
                records: records[i],
                bytes: bytes[i],
                sha256: sha256[i].take(),
                min_cursor: min_cursor[i].take(),
                max_cursor: max_cursor[i].take(),
                watermark: watermark[i].take(),
                run_id: run_id[i].take().unwrap_or_default(),
                landed_at: landed_at[i].take().unwrap_or_default(),
                slot: slot[i].take(),
                schema: schema[i].take(),
            });
        }
    }
    Ok(out)
}

/// See [`Catalogue::stream_schemas`].
pub const SCHEMA_CACHE: &str = "_ingest/cache/stream_schemas.json";

#[derive(Serialize, Deserialize)]
struct SchemaCache {
    table_id: String,
    seq: i64,
    streams: Vec<StreamSchema>,
}

/// One raw stream's distinct recorded schema (see [`Catalogue::stream_schemas`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamSchema {
    pub source: String,
    pub stream: String,
    /// None: files landed before schemas were recorded (their content says).
    pub schema: Option<String>,
    /// Only path-less rows (windows that held no record): the stream exists, nothing landed.
    pub empty: bool,
}

/// Run `sql` over the state table at `rel` (registered as `state`); nothing when it does not exist.
async fn query(lake: &Lake, rel: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    match open_table(lake, rel).await? {
        Some(t) => query_table(&t, sql).await,
        None => Ok(Vec::new()),
    }
}

async fn query_table(t: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    ctx.register_table("state", t.table_provider().await?)?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn strs(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    use deltalake::arrow::array::AsArray;
    // Catalogues made before a column existed read it as NULL.
    let Some(c) = b.column_by_name(name) else { return Ok(vec![None; b.num_rows()]) };
    let c = deltalake::arrow::compute::cast(c, &DataType::Utf8)?;
    let a = c.as_string::<i32>();
    Ok(a.iter().map(|v| v.map(str::to_string)).collect())
}

fn ints(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    use deltalake::arrow::array::AsArray;
    let c = b.column_by_name(name).ok_or_else(|| Error::Lake(format!("catalogue column {name} missing")))?;
    let c = deltalake::arrow::compute::cast(c, &DataType::Int64)?;
    let a = c.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
    Ok(a.iter().map(|v| v.unwrap_or(0)).collect())
}

/// A timestamp column as RFC 3339 (UTC, seconds).
fn times(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    use deltalake::arrow::array::AsArray;
    let Some(c) = b.column_by_name(name) else { return Ok(vec![None; b.num_rows()]) };
    let c = deltalake::arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let a = c.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    Ok(a.iter()
        .map(|v| v.and_then(chrono::DateTime::from_timestamp_micros).map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .collect())
}

/// Rows of the state table at `rel` (`tail`: a WHERE / ORDER BY clause), as `T`.
pub async fn select<T: serde::de::DeserializeOwned>(lake: &Lake, rel: &str, tail: &str) -> Result<Vec<T>> {
    let batches = query(lake, rel, &format!("SELECT * FROM state {tail}")).await?;
    let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| Error::Lake(format!("{rel} rows: {e}")))
}

/// Serialize rows into one batch of `schema`.
pub(crate) fn to_batch<T: Serialize>(schema: SchemaRef, rows: &[T]) -> Result<RecordBatch> {
    let mut dec = deltalake::arrow::json::ReaderBuilder::new(schema).build_decoder()?;
    dec.serialize(rows)?;
    dec.flush()?.ok_or_else(|| Error::Lake("empty state batch".into()))
}

fn rows_to_batch(rows: &[LandedFile]) -> Result<RecordBatch> {
    to_batch(schema(), rows)
}

/// One group of catalogue rows committed together, with the stream versions it advances and
/// the files it supersedes (deleted once the commit has landed).
pub struct Landing {
    pub rows: Vec<LandedFile>,
    pub txns: Vec<(String, i64)>,
    pub remove: Vec<String>,
}

/// Commit `rows` (positions assigned here) and `txns` as one catalogue commit. Never rebases
/// onto another writer's commit: on a conflict it reloads, renumbers and tries again.
pub async fn commit_rows(
    lake: &Lake,
    table: Option<DeltaTable>,
    rows: &mut [LandedFile],
    txns: &[(String, i64)],
) -> Result<DeltaTable> {
    let mut table = table;
    for attempt in 0..200u32 {
        let t = match table.take() {
            Some(t) => t,
            None => open_or_create(lake).await?,
        };
        let version = t.version().map_or(0, |v| v as i64 + 1);
        for (i, r) in rows.iter_mut().enumerate() {
            r.seq = version * SEQ_PER_COMMIT + i as i64;
        }
        let batch = rows_to_batch(rows)?;
        let props = CommitProperties::default()
            .with_application_transactions(txns.iter().map(|(a, v)| Transaction::new(a, *v)).collect())
            .with_max_retries(0);
        // Catalogues made before `slot`/`schema` existed gain them once (schema merge costs a
        // snapshot pass per commit, so only when needed).
        let merge = !has_current_columns(&t);
        let mut w = t.write(vec![batch]).with_commit_properties(props);
        if merge {
            w = w.with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
        }
        match w.await
        {
            Ok(t) => return Ok(t),
            Err(e) if is_conflict(&e) => {
                tracing::debug!(attempt, "catalogue commit conflict; renumbering onto the latest version");
                tokio::time::sleep(std::time::Duration::from_millis(5 + (attempt as u64 % 10) * 7)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Lake("the catalogue kept changing under 200 commit attempts".into()))
}

/// The shortest time between two catalogue commits of one run: 1 s, or
/// `INGEST_COMMIT_EVERY_MS` (tests that kill a run between commits want them often).
fn commit_every() -> std::time::Duration {
    let ms = std::env::var("INGEST_COMMIT_EVERY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    std::time::Duration::from_millis(ms)
}

/// What a run's catalogue writer did.
pub struct Closed {
    pub commits: u64,
    /// Superseded files it could not delete (orphans the next scan removes).
    pub left_behind: usize,
    /// The catalogue after its last commit (None: nothing was ever committed).
    pub table: Option<DeltaTable>,
}

/// The single writer of the catalogue in a run: landings queue up and are committed in groups,
/// in order, so per stream the committed rows are always a prefix of what was landed. After
/// a failed commit every later `land` fails (the run fails; nothing is silently dropped).
pub struct StateWriter {
    tx: mpsc::Sender<Landing>,
    task: tokio::task::JoinHandle<Result<Closed>>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl StateWriter {
    /// `fence`: checked right before every commit; once this run has lost its lease to
    /// another pull of the source, nothing more is committed.
    /// `table`: the catalogue as the run loaded it (None: created on the first commit, so a
    /// run that lands nothing leaves no state).
    pub fn start(lake: &Lake, table: Option<DeltaTable>, fence: Option<super::lease::Fence>) -> Self {
        let (tx, rx) = mpsc::channel(512);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn(commit_loop(lake.clone(), table, rx, failed.clone(), fence));
        StateWriter { tx, task, failed }
    }

    pub async fn land(&self, l: Landing) -> Result<()> {
        if let Some(e) = self.failed.lock().unwrap().clone() {
            return Err(Error::Lake(format!("an earlier catalogue commit failed: {e}")));
        }
        self.tx
            .send(l)
            .await
            .map_err(|_| Error::Lake("the catalogue writer stopped".into()))
    }

    /// Commit what is left.
    pub async fn close(self) -> Result<Closed> {
        drop(self.tx);
        self.task.await.map_err(|e| Error::Lake(e.to_string()))?
    }
}

async fn commit_loop(
    lake: Lake,
    mut table: Option<DeltaTable>,
    mut rx: mpsc::Receiver<Landing>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
    fence: Option<super::lease::Fence>,
) -> Result<Closed> {
    let mut commits = 0u64;
    let mut left_behind = 0;
    let mut error: Option<Error> = None;
    let mut last_commit: Option<tokio::time::Instant> = None;
    let every = commit_every();
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        // At most one commit per `every`: landings arriving meanwhile join it (a commit
        // per finished window would give a pull of 250 pages hundreds of log entries a day).
        // The run's end (the channel closing) or a full group commits at once.
        let until = last_commit.map(|t| t + every);
        while group.len() < 512 {
            let next = match until {
                Some(u) => match tokio::time::timeout_at(u, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                },
                None => rx.try_recv().ok(),
            };
            match next {
                Some(m) => group.push(m),
                None => break,
            }
        }
        while group.len() < 512 {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        last_commit = Some(tokio::time::Instant::now());
        let mut rows = Vec::new();
        let mut txns: Vec<(String, i64)> = Vec::new();
        let mut remove = Vec::new();
        for l in group {
            rows.extend(l.rows);
            remove.extend(l.remove);
            for (app, v) in l.txns {
                match txns.iter_mut().find(|(a, _)| *a == app) {
                    Some(t) => t.1 = t.1.max(v),
                    None => txns.push((app, v)),
                }
            }
        }
        if error.is_some() || (rows.is_empty() && txns.is_empty()) {
            // Landed files of a failed run stay orphans: the next run removes them.
            continue;
        }
        if let Some(f) = &fence {
            if let Err(e) = f.check().await {
                *failed.lock().unwrap() = Some(e.to_string());
                error = Some(e);
                continue;
            }
        }
        match commit_rows(&lake, table.take(), &mut rows, &txns).await {
            Ok(t) => {
                table = Some(t);
                commits += 1;
                for rel in remove {
                    if let Err(e) = lake.store.delete(&lake.path(&rel)).await {
                        if !matches!(e, object_store::Error::NotFound { .. }) {
                            left_behind += 1;
                            tracing::warn!(file = %rel, "cannot remove a superseded file (the next run will): {e}");
                        }
                    }
                }
            }
            Err(e) => {
                *failed.lock().unwrap() = Some(e.to_string());
                error = Some(e);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(Closed { commits, left_behind, table }),
    }
}
