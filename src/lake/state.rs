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
//! - **Positions** (`seq`) are assigned at commit time from the Delta version being
//!   committed: `seq = version * SEQ_PER_COMMIT + i`. Catalogue commits never rebase
//!   (`max_retries 0`): on a conflict the writer reloads and renumbers. So positions strictly
//!   increase in commit order whoever commits (pulls of different sources run side by side),
//!   and a transform that consumed "up to N" has seen every row committed before any row > N.
//! - **Watermarks** are a column of the landing rows, so a landing and the watermark it earns
//!   are one Delta commit; a stream's watermark is the max over its rows.
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

/// Whether `rel` holds a Delta log (a listing, without loading the table).
pub async fn table_exists(lake: &Lake, rel: &str) -> Result<bool> {
    let log = lake.path(&format!("{}/_delta_log", rel.trim_matches('/')));
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

async fn compact_table(rel: &str, t: DeltaTable, sort_by: Option<&str>) -> Result<(u64, u64)> {
    let mut op = t.optimize().with_max_concurrent_tasks(1);
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

/// After a pull: the table at `rel` (the catalogue gets one small file per commit) compacted
/// once it holds more than `max` files, so reads stay flat as pulls pile up.
pub async fn compact_when_over(lake: &Lake, rel: &str, max: usize) -> Result<()> {
    let Some(t) = open_table(lake, rel).await? else { return Ok(()) };
    if t.snapshot()?.log_data().num_files() > max {
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
    let filter = match source {
        Some(s) => format!("WHERE source = '{}'", s.replace('\'', "''")),
        None => String::new(),
    };
    let mut rows: Vec<LandedFile> = select(lake, CATALOGUE, &format!("{filter} ORDER BY seq")).await?;
    for r in &mut rows {
        for ts in [&mut r.window_start, &mut r.window_end] {
            *ts = ts.as_deref().map(normalize_ts);
        }
        r.landed_at = normalize_ts(&r.landed_at);
    }
    Ok(rows)
}

/// Rows of the state table at `rel` (`tail`: a WHERE / ORDER BY clause), as `T`.
pub async fn select<T: serde::de::DeserializeOwned>(lake: &Lake, rel: &str, tail: &str) -> Result<Vec<T>> {
    let Some(t) = open_table(lake, rel).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    ctx.register_table("state", t.table_provider().await?)?;
    let batches = ctx.sql(&format!("SELECT * FROM state {tail}")).await?.collect().await?;
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

/// Arrow's JSON writer prints `2023-09-01T00:00:00Z`-like values; keep them RFC 3339.
fn normalize_ts(s: &str) -> String {
    crate::time::parse_instant(s, &chrono_tz::UTC)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| s.to_string())
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

/// The single writer of the catalogue in a run: landings queue up and are committed in groups,
/// in order, so per stream the committed rows are always a prefix of what was landed. After
/// a failed commit every later `land` fails (the run fails; nothing is silently dropped).
pub struct StateWriter {
    tx: mpsc::Sender<Landing>,
    task: tokio::task::JoinHandle<Result<u64>>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl StateWriter {
    /// `fence`: checked right before every commit; once this run has lost its lease to
    /// another pull of the source, nothing more is committed.
    pub async fn start(lake: &Lake, fence: Option<super::lease::Fence>) -> Result<Self> {
        // The table is created on the first commit: a run that lands nothing leaves no state.
        let table = open_table(lake, CATALOGUE).await?;
        let (tx, rx) = mpsc::channel(64);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn(commit_loop(lake.clone(), table, rx, failed.clone(), fence));
        Ok(StateWriter { tx, task, failed })
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

    /// Commit what is left; returns the number of commits made.
    pub async fn close(self) -> Result<u64> {
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
) -> Result<u64> {
    let mut commits = 0u64;
    let mut error: Option<Error> = None;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < 512 {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
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
        None => Ok(commits),
    }
}
