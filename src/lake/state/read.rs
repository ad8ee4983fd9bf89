//! Reading the catalogue without reading all of it: one load per command ([`Catalogue`]),
//! filters that Delta's file statistics can skip by, txns in one pass over the log, and the
//! stream/schema summary cached by position (the invariants are in the parent module's doc).
use super::super::Lake;
use super::{open_table, LandedFile, CATALOGUE};
use crate::error::{Error, Result};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

    /// Every txn of the catalogue's log (see [`Txns`]); None when there is no catalogue yet.
    pub async fn txns(&self, lake: &Lake) -> Result<Option<Txns<'_>>> {
        match &self.table {
            Some(t) => Ok(Some(Txns::of(lake, CATALOGUE, t).await?)),
            None => Ok(None),
        }
    }

    /// Catalogue rows matching `filter` (SQL over the catalogue's columns), in landing order.
    /// Delta skips the catalogue files whose statistics rule the filter out: compaction keeps
    /// commit order (see [`super::compact_when_over`]), so each file spans a narrow range of `seq`,
    /// `landed_at` and `window_start`, and a filter on them reads what is recent, not the lake.
    pub async fn rows_where(&self, filter: &str) -> Result<Vec<LandedFile>> {
        rows_of(&self.query(&format!("SELECT * FROM state WHERE {filter} ORDER BY seq")).await?)
    }

    /// A stream's watermark as the max over its rows (for rows landed before [`super::watermark_app`]).
    pub async fn watermark_from_rows(&self, source: &str, partition: &str, request: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT max(watermark) AS watermark FROM state WHERE source = {} AND partition = {} AND request = {}",
            sql_text(source),
            sql_text(partition),
            sql_text(request)
        );
        let mut out = None;
        for b in self.query(&sql).await? {
            out = out.max(text_column(&b, "watermark")?.into_iter().flatten().max());
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
        // The cache is shared: another transform may have written it from a newer snapshot.
        // Its schemas are harmless extras, but the position this run consumes must be one this
        // snapshot holds: every row of a commit at version V sits below (V + 1) × SEQ_PER_COMMIT
        // (see the module doc), so nothing committed after this snapshot is claimed.
        let bound = (t.version().unwrap_or(0) as i64 + 1) * super::SEQ_PER_COMMIT - 1;
        Ok((all.into_iter().collect(), seq.min(bound)))
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
            let (so, st, sc) = (text_column(&b, "source")?, text_column(&b, "stream")?, text_column(&b, "schema")?);
            let empty = b.column_by_name("empty").map(|c| c.as_boolean().iter().map(|v| v.unwrap_or(false)).collect::<Vec<_>>());
            max_seq = int_column(&b, "seq")?.into_iter().fold(max_seq, i64::max);
            for (i, ((so, st), sc)) in so.into_iter().zip(st).zip(sc).enumerate() {
                let empty = empty.as_ref().is_some_and(|e| e[i]);
                out.push(StreamSchema { source: so.unwrap_or_default(), stream: st.unwrap_or_default(), schema: sc.filter(|_| !empty), empty });
            }
        }
        out.sort();
        Ok((out, max_seq))
    }
}

/// Every txn (app → version) of a table's log as of its loaded version, read in one pass:
/// the checkpoint's `txn` column and the commits after it. delta-rs answers one app per log
/// replay; a pull asks two per stream and a transform one per model. When the log has a
/// layout this does not read (a multi-part checkpoint, a commit cleaned up meanwhile), each
/// [`Txns::get`] asks delta-rs instead.
pub struct Txns<'a> {
    table: &'a DeltaTable,
    all: Option<HashMap<String, i64>>,
}

impl<'a> Txns<'a> {
    pub async fn of(lake: &Lake, rel: &str, table: &'a DeltaTable) -> Result<Txns<'a>> {
        let all = match table.version() {
            Some(v) => txns_of_log(lake, rel, v as i64).await?,
            None => Some(HashMap::new()),
        };
        Ok(Txns { table, all })
    }

    /// The version `app` last committed, if any.
    pub async fn get(&self, app: &str) -> Result<Option<i64>> {
        match &self.all {
            Some(m) => Ok(m.get(app).copied()),
            None => Ok(self.table.snapshot()?.transaction_version(self.table.log_store().as_ref(), app).await?),
        }
    }
}

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

/// Catalogue rows from Arrow columns (no per-row JSON).
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<LandedFile>> {
    let mut out = Vec::new();
    for b in batches {
        let n = b.num_rows();
        let (seq, records, bytes) = (int_column(b, "seq")?, int_column(b, "records")?, int_column(b, "bytes")?);
        let col = |c: &str| text_column(b, c);
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

/// A query session holding table `t` as `state`.
async fn session(t: &DeltaTable) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    ctx.register_table("state", t.table_provider().await?)?;
    Ok(ctx)
}

/// The batches `sql` (over the table as `state`) selects, as the engine streams them.
pub async fn stream_batches(t: &DeltaTable, sql: &str) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    use futures::StreamExt;
    let stream = session(t).await?.sql(sql).await?.execute_stream().await?;
    Ok(stream.map(|b| b.map_err(Error::from)).boxed())
}

/// Rows of `batches` as JSON values of type `T` (via Arrow's JSON writer).
fn json_rows<T: serde::de::DeserializeOwned>(batches: &[&RecordBatch], what: &str) -> Result<Vec<T>> {
    let mut w = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    w.write_batches(batches)?;
    w.finish()?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| Error::Lake(format!("{what} rows: {e}")))
}

/// The rows `sql` (over the table as `state`) selects, as a stream of batches of JSON objects:
/// what is held at once is one batch, whatever the table's size.
pub async fn stream_rows(
    t: &DeltaTable,
    sql: &str,
) -> Result<futures::stream::BoxStream<'static, Result<Vec<serde_json::Map<String, serde_json::Value>>>>> {
    use futures::StreamExt;
    Ok(stream_batches(t, sql).await?.map(|b| json_rows(&[&b?], "table")).boxed())
}

async fn query_table(t: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(session(t).await?.sql(sql).await?.collect().await?)
}

/// A column of `b` as text (None where NULL; every row None when the column is absent).
pub fn text_column(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    use deltalake::arrow::array::AsArray;
    // Catalogues made before a column existed read it as NULL.
    let Some(c) = b.column_by_name(name) else { return Ok(vec![None; b.num_rows()]) };
    let c = deltalake::arrow::compute::cast(c, &DataType::Utf8)?;
    let a = c.as_string::<i32>();
    Ok(a.iter().map(|v| v.map(str::to_string)).collect())
}

/// A column of `b` as integers.
pub fn int_column(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    use deltalake::arrow::array::AsArray;
    let c = b.column_by_name(name).ok_or_else(|| Error::Lake(format!("column {name} missing")))?;
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
    select_sql(lake, rel, &format!("SELECT * FROM state {tail}")).await
}

/// The rows of any statement over the state table at `rel` (registered as `state`), as `T`.
pub async fn select_sql<T: serde::de::DeserializeOwned>(lake: &Lake, rel: &str, sql: &str) -> Result<Vec<T>> {
    let batches = query(lake, rel, sql).await?;
    json_rows(&batches.iter().collect::<Vec<_>>(), rel)
}
