//! Raw streams as tables: the landed NDJSON files a model reads (all of them, or only those the
//! model has not consumed yet), decoded with one schema inferred across the files (a field that
//! appears later or widens does not fail), plus `_partition`, `_window_start`, `_window_end`,
//! `_file`, `_landed_at` and `_ingest_order` (landing order, then line) columns.
use crate::error::{Error, Result};
use crate::lake::state::LandedFile;
use crate::lake::Lake;
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::io::{BufReader, Cursor};
use std::sync::Arc;

/// `raw.<source>_<stream>`
pub fn table_name(source: &str, stream: &str) -> String {
    format!("raw.{source}_{stream}")
}

/// Current landed files per raw table name (the latest landing of each slot: a re-pulled
/// window supersedes the earlier file), in landing order.
pub fn streams(rows: &[LandedFile]) -> BTreeMap<String, Vec<LandedFile>> {
    let mut out: BTreeMap<String, Vec<LandedFile>> = BTreeMap::new();
    for r in crate::lake::state::current_files(rows) {
        out.entry(table_name(&r.source, &r.stream)).or_default().push(r);
    }
    out
}

fn ts(s: &Option<String>) -> Option<i64> {
    s.as_deref()
        .and_then(|v| crate::time::parse_instant(v, &chrono_tz::UTC))
        .map(|d| d.timestamp_micros())
}

fn meta_fields() -> Vec<Field> {
    let t = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        Field::new("_partition", DataType::Utf8, true),
        Field::new("_window_start", t(), true),
        Field::new("_window_end", t(), true),
        Field::new("_file", DataType::Utf8, true),
        Field::new("_landed_at", t(), true),
        Field::new("_ingest_order", DataType::Int64, true),
    ]
}

async fn superseded(lake: &Lake, f: &LandedFile) -> Result<bool> {
    let rows = crate::lake::state::read_catalogue(lake, Some(&f.source)).await?;
    Ok(rows
        .iter()
        .any(|r| r.seq > f.seq && r.partition == f.partition && r.stream == f.stream && r.slot_key() == f.slot_key()))
}

/// The schema of a raw stream: the union of its current files' schemas recorded at pull time
/// (files landed before schemas were recorded are inferred from their content), plus `extra`
/// fields models name that no record has (they read as NULL).
pub async fn stream_schema(lake: &Lake, all: &[LandedFile], extra: &Schema) -> Result<Schema> {
    let mut s = Schema::empty();
    for f in all {
        let one = match f.schema.as_deref().and_then(crate::lake::schema::from_json) {
            Some(x) => x,
            None => {
                let bytes = read(lake, f).await?;
                deltalake::arrow::json::reader::infer_json_schema(BufReader::new(Cursor::new(bytes)), None)?.0
            }
        };
        s = crate::lake::schema::union(&s, &one);
    }
    Ok(crate::lake::schema::union(&s, extra))
}

async fn read(lake: &Lake, f: &LandedFile) -> Result<bytes::Bytes> {
    let path = f.path.as_deref().unwrap_or_default();
    match lake.store.get(&lake.path(path)).await {
        Ok(g) => Ok(g.bytes().await?),
        // Superseded by a landing committed after this run read the catalogue (that one
        // has a later position, so the next run merges it): nothing to read here.
        Err(object_store::Error::NotFound { .. }) if superseded(lake, f).await? => {
            tracing::info!(file = %path, "skipping a raw file superseded while the transform ran");
            Ok(bytes::Bytes::new())
        }
        Err(e) => Err(Error::Lake(format!(
            "raw file {path} listed in the catalogue cannot be read: {e}"
        ))),
    }
}

/// Read `files` into batches of `data_schema` plus the meta columns, one file at a time (its
/// bytes are dropped once decoded: peak memory is the decoded batches plus one raw file).
pub async fn load(lake: &Lake, files: &[LandedFile], data_schema: SchemaRef) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut fields: Vec<Field> = data_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    let schema = Arc::new(Schema::new(fields));
    let mut out = Vec::new();
    for f in files {
        let bytes = read(lake, f).await?;
        let reader = deltalake::arrow::json::ReaderBuilder::new(data_schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(16 * 1024)
            .build(Cursor::new(bytes))?;
        let mut line: i64 = 0;
        for b in reader {
            let b = b.map_err(|e| {
                Error::Other(format!("raw file {}: {e}", f.path.as_deref().unwrap_or_default()))
            })?;
            let n = b.num_rows();
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            let tsa =
                |v: Option<i64>| Arc::new(TimestampMicrosecondArray::from(vec![v; n]).with_timezone("UTC")) as ArrayRef;
            cols.push(Arc::new(StringArray::from(vec![Some(f.partition.as_str()); n])));
            cols.push(tsa(ts(&f.window_start)));
            cols.push(tsa(ts(&f.window_end)));
            cols.push(Arc::new(StringArray::from(vec![f.path.as_deref(); n])));
            cols.push(tsa(ts(&Some(f.landed_at.clone()))));
            cols.push(Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| f.seq * 10_000_000 + line + i),
            )));
            line += n as i64;
            out.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
    }
    Ok((schema, out))
}

/// Register raw stream `name` holding `files` (none: empty, for planning), with the stream's
/// schema (`base`, computed once per run) plus `extra` fields.
pub async fn register(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    files: &[LandedFile],
    base: &Schema,
    extra: &Schema,
) -> Result<()> {
    let data_schema = Arc::new(crate::lake::schema::union(base, extra));
    let (schema, batches) = load(lake, files, data_schema).await?;
    let mem = MemTable::try_new(schema, vec![batches])?;
    super::register(ctx, name, Arc::new(mem))
}
