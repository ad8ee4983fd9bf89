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
    let schema = Arc::new(df.schema().as_arrow().clone());
    let (folder, file) = destination(to, &name, fmt);
    let out = Lake::open(&folder)?;
    let path = out.path(&file);
    let location = format!("{}{file}", out.url);
    let mut stream = df.execute_stream().await?;
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
            Ok(Exported { location, rows, bytes })
        }
        Err(e) => {
            let _ = w.abort().await;
            let _ = out.store.delete(&path).await;
            Err(e)
        }
    }
}
