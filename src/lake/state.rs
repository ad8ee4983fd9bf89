//! Pull state in Delta: the catalogue of landed files at `<lake>/_ingest/catalogue`. Every row
//! carries its stream's watermark after that landing, so a landing and the watermark it earns
//! are one Delta commit; each commit also records an application transaction per stream
//! (`ingest/<source>/<partition>/<request>` → landing count) so a replay is detectable.
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
    if let Some(t) = open_table(lake, CATALOGUE).await? {
        return Ok(t);
    }
    if let Some(d) = &lake.local_dir {
        std::fs::create_dir_all(d.join(CATALOGUE))?;
    }
    let t = DeltaTableBuilder::from_url(lake.table_url(CATALOGUE))?
        .with_storage_backend(lake.store.clone(), lake.table_url(CATALOGUE))
        .build()?;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let st: deltalake::kernel::StructType = schema()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::Lake(e.to_string()))?;
    let fields: Vec<deltalake::kernel::StructField> = st.fields().cloned().collect();
    let created = t
        .create()
        .with_table_name("catalogue")
        .with_columns(fields)
        .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("50"))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another process created it first.
        Err(_) => open_table(lake, CATALOGUE)
            .await?
            .ok_or_else(|| Error::Lake("cannot create the catalogue".into())),
    }
}

/// Every catalogue row of `source` (all sources when None), in landing order.
pub async fn read_catalogue(lake: &Lake, source: Option<&str>) -> Result<Vec<LandedFile>> {
    let Some(t) = open_table(lake, CATALOGUE).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    ctx.register_table("catalogue", t.table_provider().await?)?;
    let filter = match source {
        Some(s) => format!("WHERE source = '{}'", s.replace('\'', "''")),
        None => String::new(),
    };
    let batches = ctx
        .sql(&format!("SELECT * FROM catalogue {filter} ORDER BY seq"))
        .await?
        .collect()
        .await?;
    batches_to_rows(&batches)
}

fn batches_to_rows(batches: &[RecordBatch]) -> Result<Vec<LandedFile>> {
    let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: Vec<LandedFile> =
        serde_json::from_slice(&buf).map_err(|e| Error::Lake(format!("catalogue rows: {e}")))?;
    for r in &mut rows {
        for ts in [&mut r.window_start, &mut r.window_end] {
            *ts = ts.as_deref().map(normalize_ts);
        }
        r.landed_at = normalize_ts(&r.landed_at);
    }
    Ok(rows)
}

/// Arrow's JSON writer prints `2023-09-01T00:00:00Z`-like values; keep them RFC 3339.
fn normalize_ts(s: &str) -> String {
    crate::pull::records::parse_instant(s, &chrono_tz::UTC)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| s.to_string())
}

fn rows_to_batch(rows: &[LandedFile]) -> Result<RecordBatch> {
    let mut dec = deltalake::arrow::json::ReaderBuilder::new(schema()).build_decoder()?;
    dec.serialize(rows)?;
    dec.flush()?.ok_or_else(|| Error::Lake("empty catalogue batch".into()))
}

/// One group of catalogue rows committed together, with the stream versions it advances.
pub struct Landing {
    pub rows: Vec<LandedFile>,
    pub txns: Vec<(String, i64)>,
}

/// The single writer of the catalogue in a run: landings queue up and are committed in groups,
/// in order, so per stream the committed rows are always a prefix of what was landed.
pub struct StateWriter {
    tx: mpsc::Sender<Landing>,
    task: tokio::task::JoinHandle<Result<u64>>,
}

impl StateWriter {
    pub async fn start(lake: &Lake, next_seq: i64) -> Result<Self> {
        // The table is created on the first commit: a run that lands nothing leaves no state.
        let table = open_table(lake, CATALOGUE).await?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(commit_loop(lake.clone(), table, rx, next_seq));
        Ok(StateWriter { tx, task })
    }

    pub async fn land(&self, l: Landing) -> Result<()> {
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
    mut next_seq: i64,
) -> Result<u64> {
    let mut commits = 0u64;
    let mut failed: Option<Error> = None;
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
        for l in group {
            rows.extend(l.rows);
            for (app, v) in l.txns {
                match txns.iter_mut().find(|(a, _)| *a == app) {
                    Some(t) => t.1 = t.1.max(v),
                    None => txns.push((app, v)),
                }
            }
        }
        if failed.is_none() && (!rows.is_empty() || !txns.is_empty()) {
            for r in &mut rows {
                r.seq = next_seq;
                next_seq += 1;
            }
            let res = async {
                let batch = rows_to_batch(&rows)?;
                let current = match table.take() {
                    Some(t) => t,
                    None => open_or_create(&lake).await?,
                };
                let props = CommitProperties::default()
                    .with_application_transactions(txns.iter().map(|(a, v)| Transaction::new(a, *v)).collect())
                    .with_max_retries(20);
                let t = current.write(vec![batch]).with_commit_properties(props).await?;
                Ok::<_, Error>(t)
            }
            .await;
            match res {
                Ok(t) => {
                    table = Some(t);
                    commits += 1;
                }
                Err(e) => failed = Some(e),
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(commits),
    }
}
