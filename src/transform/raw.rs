//! Raw streams as tables: the landed NDJSON files a model reads (all of them, or only those the
//! model has not consumed yet), decoded with one schema inferred across the files (a field that
//! appears later or widens does not fail), plus `_partition`, `_window_start`, `_window_end`,
//! `_file`, `_landed_at` and `_ingest_order` (landing order, then line) columns.
use crate::error::{Error, Result};
use crate::lake::state::LandedFile;
use crate::lake::Lake;
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;
use std::io::{BufReader, Cursor, Read};
use std::sync::Arc;

/// `raw.<source>_<stream>`
pub fn table_name(source: &str, stream: &str) -> String {
    format!("raw.{source}_{stream}")
}

/// Landed files per raw table name: the latest landing of each path, in landing order.
pub fn streams(rows: &[LandedFile]) -> BTreeMap<String, Vec<LandedFile>> {
    let mut latest: BTreeMap<(String, String), &LandedFile> = BTreeMap::new();
    for r in rows {
        if let Some(p) = &r.path {
            let k = (table_name(&r.source, &r.stream), p.clone());
            if latest.get(&k).is_none_or(|o| o.seq < r.seq) {
                latest.insert(k, r);
            }
        }
    }
    let mut out: BTreeMap<String, Vec<LandedFile>> = BTreeMap::new();
    for ((t, _), r) in latest {
        out.entry(t).or_default().push(r.clone());
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.seq);
    }
    out
}

fn ts(s: &Option<String>) -> Option<i64> {
    s.as_deref()
        .and_then(|v| crate::pull::records::parse_instant(v, &chrono_tz::UTC))
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

/// Read `files` into batches sharing one schema. None when there is no file.
pub async fn load(lake: &Lake, files: &[LandedFile]) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut contents = Vec::with_capacity(files.len());
    for f in files {
        let path = f.path.as_deref().unwrap();
        let bytes = lake
            .store
            .get(&lake.path(path))
            .await
            .map_err(|e| Error::Lake(format!("raw file {path} listed in the catalogue cannot be read: {e}")))?
            .bytes()
            .await?;
        contents.push(bytes);
    }
    let chained: Box<dyn Read> = contents
        .iter()
        .fold(Box::new(std::io::empty()) as Box<dyn Read>, |acc, b| {
            Box::new(acc.chain(Cursor::new(b.clone())))
        });
    let (inferred, _) = deltalake::arrow::json::reader::infer_json_schema(BufReader::new(chained), None)?;
    let data_schema = Arc::new(inferred);
    let mut fields: Vec<Field> = data_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    let schema = Arc::new(Schema::new(fields));
    let mut out = Vec::new();
    for (f, bytes) in files.iter().zip(contents) {
        let reader = deltalake::arrow::json::ReaderBuilder::new(data_schema.clone())
            .with_coerce_primitive(true)
            .with_batch_size(16 * 1024)
            .build(Cursor::new(bytes))?;
        let mut line: i64 = 0;
        for b in reader {
            let b = b?;
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
    Ok(Some((schema, out)))
}
