//! `ingest export <table | "SELECT …">`: a table or a query result written as CSV (any
//! separator; nested values as text), NDJSON or Parquet, streamed batch by batch (never
//! collected in memory) into a multipart upload that becomes visible only when complete — a
//! failed export leaves nothing behind. The file is named `<schema>_<table>_<YYYY-MM-DD>.<ext>`
//! (`query_…` for a statement) inside `--to` (a folder, local or `s3://bucket/folder/`), or is
//! exactly `--to` when that names a file.
use crate::error::{Error, Result};
use crate::lake::Lake;
use deltalake::arrow::array::RecordBatch;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Csv,
    Json,
    Parquet,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }
}

pub struct Exported {
    pub location: String,
    pub rows: usize,
    pub bytes: usize,
}

fn is_statement(target: &str) -> bool {
    let t = target.trim_start().to_lowercase();
    t.starts_with("select ") || t.starts_with("with ") || t.contains(char::is_whitespace)
}

/// Where the file goes: (folder as a lake root, file name).
fn destination(to: Option<&str>, name: &str, fmt: Format) -> (String, String) {
    let file = format!("{name}_{}.{}", chrono::Utc::now().format("%Y-%m-%d"), fmt.ext());
    match to {
        None => ("./exports".into(), file),
        Some(t) if t.ends_with('/') || std::path::Path::new(t).is_dir() => (t.to_string(), file),
        Some(t) => {
            let tail = t.rsplit('/').next().unwrap_or(t);
            if tail.contains('.') {
                let folder = &t[..t.len() - tail.len()];
                (if folder.is_empty() { ".".into() } else { folder.to_string() }, tail.to_string())
            } else {
                (t.to_string(), file)
            }
        }
    }
}

/// A `Write` that collects what the Parquet writer produces so it can be shipped in parts.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub async fn export(lake: &Lake, target: &str, fmt: Format, sep: u8, to: Option<&str>) -> Result<Exported> {
    let (sql, name) = if is_statement(target) {
        (target.to_string(), "query".to_string())
    } else {
        let t = target.trim();
        if !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(Error::Usage(format!("export: `{t}` is neither a table (schema.table) nor a SELECT")));
        }
        (format!("SELECT * FROM {t}"), t.replace('.', "_"))
    };
    let ctx = crate::query::context(lake, &sql).await?;
    let df = ctx.sql(&sql).await.map_err(|e| Error::Usage(format!("export: {e}")))?;
    let (folder, file) = destination(to, &name, fmt);
    let e = write(df, fmt, sep, &folder, &file, true).await?;
    e.ok_or_else(|| Error::Other("export: no file written".into()))
}

/// Stream `df` into the file `file` of `folder` (a path or URL), visible only once complete.
/// No row: a file all the same when `empty_file` (a CSV holds its header), else none (None).
async fn write(df: deltalake::datafusion::prelude::DataFrame, fmt: Format, sep: u8, folder: &str, file: &str, empty_file: bool) -> Result<Option<Exported>> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let out = Lake::open(folder)?;
    let path = out.path(file);
    let location = format!("{}{file}", out.url);
    let mut stream = df.execute_stream().await?.boxed();
    if !empty_file {
        // The first row decides whether there is a file: the query runs once either way.
        let first = loop {
            match stream.next().await.transpose()? {
                Some(b) if b.num_rows() == 0 => continue,
                other => break other,
            }
        };
        let Some(first) = first else { return Ok(None) };
        stream = futures::stream::iter([Ok(first)]).chain(stream).boxed();
    }
    let upload = out.store.put_multipart(&path).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
    let (mut rows, mut bytes) = (0usize, 0usize);
    let sink = Shared::default();
    let mut parquet = match fmt {
        Format::Parquet => Some(
            deltalake::parquet::arrow::ArrowWriter::try_new(sink.clone(), schema.clone(), None)
                .map_err(|e| Error::Other(e.to_string()))?,
        ),
        _ => None,
    };
    let mut first = true;
    let res: Result<()> = async {
        while let Some(b) = stream.next().await {
            let b: RecordBatch = b?;
            rows += b.num_rows();
            let buf = match fmt {
                Format::Csv => {
                    let mut cw = deltalake::arrow::csv::WriterBuilder::new()
                        .with_header(first)
                        .with_delimiter(sep)
                        .build(Vec::new());
                    cw.write(&crate::query::flatten_nested(&b)?)?;
                    cw.into_inner()
                }
                Format::Json => {
                    let mut jw = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
                    jw.write(&b)?;
                    jw.finish()?;
                    jw.into_inner()
                }
                Format::Parquet => {
                    parquet
                        .as_mut()
                        .expect("parquet writer")
                        .write(&b)
                        .map_err(|e| Error::Other(e.to_string()))?;
                    sink.take()
                }
            };
            first = false;
            bytes += buf.len();
            w.wait_for_capacity(2).await?;
            w.write(&buf);
        }
        if fmt == Format::Csv && first {
            // No row: still a file with the header.
            let mut cw = deltalake::arrow::csv::WriterBuilder::new().with_header(true).with_delimiter(sep).build(Vec::new());
            cw.write(&crate::query::flatten_nested(&RecordBatch::new_empty(schema.clone()))?)?;
            let buf = cw.into_inner();
            bytes += buf.len();
            w.write(&buf);
        }
        if let Some(pw) = parquet.take() {
            pw.close().map_err(|e| Error::Other(e.to_string()))?;
            let buf = sink.take();
            bytes += buf.len();
            w.write(&buf);
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => {
            w.finish().await?;
            Ok(Some(Exported { location, rows, bytes }))
        }
        Err(e) => {
            let _ = w.abort().await;
            let _ = out.store.delete(&path).await;
            Err(e)
        }
    }
}

/// Per-run outputs of models (seed 004's `s3_destiny`): a model declaring `-- output:` gets,
/// for every commit of its table that carries the model's txn (one per transform that changed
/// it), one file holding exactly the rows that commit merged — those whose `_ingest_order`
/// lies in the catalogue positions the commit consumed (after the previous txn's, up to its
/// own) — read from the table as of that version, `_…` bookkeeping columns left out. Files are
/// `<name>_<commit time, UTC>.<ext>`: the same commit always gives the same name, so a run
/// killed between writing a file and recording it rewrites the same file.
///
/// The position is `<lake>/_ingest/outputs/<schema>.<table>.json` (`{"version": v}`: every
/// commit up to `v` has its file). [`prepare_outputs`] creates it before the transform, at the
/// table's version then (a new output starts with the next change, not the table's history);
/// [`write_outputs`] runs after it, and writes what any earlier run left unwritten (a kill
/// after the commit) as well. A commit that merged no row writes no file.
pub mod outputs {
    use super::{write, Exported, Format};
    use crate::error::{Error, Result};
    use crate::lake::state::{self, open_table};
    use crate::lake::Lake;
    use crate::transform::model::Model;
    use object_store::{ObjectStoreExt, PutPayload};

    fn state_path(m: &Model) -> String {
        format!("_ingest/outputs/{}.json", m.target)
    }

    async fn covered(lake: &Lake, m: &Model) -> Result<Option<i64>> {
        match lake.store.get(&lake.path(&state_path(m))).await {
            Ok(g) => {
                let v: serde_json::Value = serde_json::from_slice(&g.bytes().await?).map_err(|e| Error::Lake(format!("{}: {e}", state_path(m))))?;
                Ok(v["version"].as_i64())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn record(lake: &Lake, m: &Model, version: i64) -> Result<()> {
        let body = serde_json::json!({"version": version}).to_string();
        lake.store.put(&lake.path(&state_path(m)), PutPayload::from(body)).await?;
        Ok(())
    }

    /// Before a transform: each output without a position starts at its table's version now.
    pub async fn prepare_outputs(lake: &Lake, models: &[Model]) -> Result<()> {
        for m in models.iter().filter(|m| m.output.is_some()) {
            if covered(lake, m).await?.is_none() {
                let v = open_table(lake, &m.table_rel()).await?.and_then(|t| t.version()).map_or(-1, |v| v as i64);
                record(lake, m, v).await?;
            }
        }
        Ok(())
    }

    /// The model's txn version a commit's log entry carries, and the commit's time (ms).
    async fn commit_of(lake: &Lake, m: &Model, v: i64) -> Result<(Option<i64>, i64)> {
        let rel = format!("{}/_delta_log/{v:020}.json", m.table_rel());
        let bytes = lake.store.get(&lake.path(&rel)).await?.bytes().await?;
        let app = state::model_txn_app(&m.target);
        let (mut txn, mut ts) = (None, 0);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let a: serde_json::Value = serde_json::from_slice(line).map_err(|e| Error::Lake(format!("{rel}: {e}")))?;
            if a["txn"]["appId"].as_str() == Some(app.as_str()) {
                txn = a["txn"]["version"].as_i64();
            }
            if let Some(t) = a["commitInfo"]["timestamp"].as_i64() {
                ts = t;
            }
        }
        Ok((txn, ts))
    }

    /// After a transform: every commit past each output's position gets its file.
    pub async fn write_outputs(lake: &Lake, models: &[Model]) -> Result<Vec<(String, Exported)>> {
        let mut done = Vec::new();
        for m in models {
            let Some(spec) = &m.output else { continue };
            let Some(mut at) = covered(lake, m).await? else { continue };
            let Some(mut t) = open_table(lake, &m.table_rel()).await? else { continue };
            let Some(current) = t.version().map(|v| v as i64) else { continue };
            if at >= current {
                continue;
            }
            let app = state::model_txn_app(&m.target);
            // The txn (catalogue position) the last covered version had consumed.
            let mut prev: Option<i64> = if at >= 0 {
                t.load_version(at as u64).await?;
                t.snapshot()?.transaction_version(t.log_store().as_ref(), &app).await?
            } else {
                None
            };
            for v in at + 1..=current {
                let (txn, ts) = commit_of(lake, m, v).await?;
                if let Some(seq) = txn.filter(|s| prev.is_none_or(|p| *s > p)) {
                    t.load_version(v as u64).await?;
                    let fmt = match spec.format.as_str() {
                        "json" => Format::Json,
                        "parquet" => Format::Parquet,
                        _ => Format::Csv,
                    };
                    let ctx = deltalake::datafusion::prelude::SessionContext::new();
                    t.update_datafusion_session(&ctx.state())?;
                    let df = ctx.read_table(t.table_provider().await?)?;
                    let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
                    if !names.iter().any(|n| n == "_ingest_order") {
                        return Err(m.err_at(None, "declares an output but does not select `_ingest_order`: the output is the rows each run merged, found by their landing position"));
                    }
                    use deltalake::datafusion::prelude::{col, lit};
                    let lo = prev.map_or(i64::MIN, |p| state::ingest_order(p + 1, 0));
                    let hi = state::ingest_order(seq + 1, 0);
                    let order = || col(r#""_ingest_order""#);
                    let keep: Vec<_> = names.iter().filter(|n| !n.starts_with('_')).map(|n| col(format!("\"{n}\""))).collect();
                    let df = df.filter(order().gt_eq(lit(lo)).and(order().lt(lit(hi))))?.sort(vec![order().sort(true, true)])?.select(keep)?;
                    let when = chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().format("%Y%m%dT%H%M%S%3fZ");
                    let file = format!("{}_{when}.{}", spec.name, fmt.ext());
                    // A commit that merged no row writes no file.
                    if let Some(e) = write(df, fmt, spec.sep, &spec.to, &file, false).await? {
                        tracing::info!(model = %m.target, version = v, rows = e.rows, location = %e.location, "output written");
                        done.push((m.target.clone(), e));
                    }
                    prev = Some(seq);
                }
                at = v;
                record(lake, m, at).await?;
            }
        }
        Ok(done)
    }
}
