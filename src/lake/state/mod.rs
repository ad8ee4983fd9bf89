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
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::{DeltaTable, DeltaTableBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

mod read;
mod unfinished;
pub use read::{int_column, read_catalogue, select, select_sql, sql_text, stream_batches, stream_rows, text_column, Catalogue, StreamSchema, Txns, SCHEMA_CACHE};
pub use unfinished::Unfinished;

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

/// A raw record's `_ingest_order` is `seq * LINES_PER_FILE + line`: unique and in landing order
/// as long as no file holds more lines, so a pull refuses to land a file that would (split
/// such a stream with windows). (An i64 leaves no room for more: seq × 10^7 spans 10^12 positions.)
pub const LINES_PER_FILE: i64 = 10_000_000;

/// The `_ingest_order` of line `line` (0-based) of the file at position `seq`.
pub fn ingest_order(seq: i64, line: i64) -> i64 {
    seq * LINES_PER_FILE + line
}

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

/// The txn a model's table commits: the catalogue position it consumed.
pub fn model_txn_app(target: &str) -> String {
    format!("ingest-model/{target}")
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

/// Commits between a state table's checkpoints. Every load replays the commits after the
/// latest checkpoint (each pull loads the catalogue and the run log several times), so this
/// bounds what a load reads whatever the lake's age; a checkpoint of a compacted state table
/// is a few dozen rows.
pub const STATE_CHECKPOINT_INTERVAL: &str = "10";
const CHECKPOINT_INTERVAL: &str = "delta.checkpointInterval";

async fn compact_table(rel: &str, t: DeltaTable, sort_by: Option<&str>) -> Result<(u64, u64)> {
    let mut op = t.optimize().with_max_concurrent_tasks(1);
    if rel.starts_with("_ingest/") {
        // deltalake's bin-packing keeps commit order (newest first) within a bin. Snappy, as
        // the commits are written: with its default zstd, a bin of 256 KiB came out at about
        // 120 KiB, still "small", so the next pull compacted the whole table again.
        let snappy = deltalake::parquet::file::properties::WriterProperties::builder()
            .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
            .build();
        op = op
            .with_target_size(std::num::NonZeroU64::new(STATE_FILE_SIZE).expect("non-zero"))
            .with_writer_properties(snappy);
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
    // Tables created before the short log retention (or the checkpoint interval) get it once.
    let want = [(LOG_RETENTION, STATE_LOG_RETENTION), (CHECKPOINT_INTERVAL, STATE_CHECKPOINT_INTERVAL)];
    let config = t.snapshot()?.metadata().configuration().clone();
    let t = if want.iter().any(|(k, v)| config.get(*k).map(String::as_str) != Some(*v)) {
        let props = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
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

/// Open the state table at `rel`, creating it with `schema` (see [`STATE_CHECKPOINT_INTERVAL`]).
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
        .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some(STATE_CHECKPOINT_INTERVAL))
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
    commit_fenced(lake, table, rows, txns, None).await
}

/// [`commit_rows`], checking the run's `fence` before every attempt: a run that lost its lease
/// while retrying commits nothing more.
pub async fn commit_fenced(
    lake: &Lake,
    table: Option<DeltaTable>,
    rows: &mut [LandedFile],
    txns: &[(String, i64)],
    fence: Option<&super::lease::Fence>,
) -> Result<DeltaTable> {
    let mut table = table;
    for attempt in 0..200u32 {
        if let Some(f) = fence {
            f.check().await?;
        }
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
        // (Past the deadline, `timeout_at` still takes what is already queued: it polls the
        // receiver before the timer.)
        let until = last_commit.map_or_else(tokio::time::Instant::now, |t| t + every);
        while group.len() < 512 {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(m)) => group.push(m),
                Ok(None) | Err(_) => break,
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
        match commit_fenced(&lake, table.take(), &mut rows, &txns, fence.as_ref()).await {
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
