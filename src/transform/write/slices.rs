//! A MERGE's new rows, bounded by `--memory-limit`.
//!
//! The deduplicated new rows are computed once and held in memory when they take at most
//! [`share`] of the limit (the common case: a day of new rows). Past that they are written to
//! a spill file (under `--temp-dir`) as they stream, then dealt into slices by a hash of the
//! unique key, each under the share, and merged one slice at a time. A key lives in exactly
//! one slice, so each slice is an ordinary MERGE of distinct keys.
//!
//! The commits: every slice but the last commits without the model's txn; the last carries
//! it. A crash between slices leaves some of the run's rows merged and the txn where it was,
//! so the next run merges the same rows again — a MERGE by key of the same values (or of
//! newer ones) is a no-op on what is already there: nothing twice, nothing lost. Readers may
//! see the slices land one by one; they never see a key twice.
use crate::error::{Error, Result};
use deltalake::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use deltalake::arrow::compute::take_record_batch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::common::hash_utils::{create_hashes, RandomState};
use deltalake::datafusion::execution::spill_file::SpillFile;
use std::sync::Arc;
use deltalake::datafusion::execution::memory_pool::MemoryLimit;
use deltalake::datafusion::execution::SessionState;
use deltalake::datafusion::logical_expr::LogicalPlan;
use deltalake::datafusion::prelude::DataFrame;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use futures::StreamExt;

/// The new rows of one MERGE.
pub(super) enum Source {
    /// All of them, in memory.
    Whole(SchemaRef, Vec<RecordBatch>),
    /// Spilled: slices by key hash, each read whole when its turn comes.
    Sliced { schema: SchemaRef, files: Vec<Arc<dyn SpillFile>> },
}

/// The most bytes of new rows a MERGE holds at once: a quarter of the session's memory limit
/// (the MERGE's join and the rewritten files need the rest); unbounded without a limit.
/// `INGEST_MERGE_SLICE_BYTES` overrides it (tests and benchmarks).
pub(super) fn share(state: &SessionState) -> Option<usize> {
    if let Some(n) = std::env::var("INGEST_MERGE_SLICE_BYTES").ok().and_then(|v| v.parse().ok()) {
        return Some(n);
    }
    match state.runtime_env().memory_pool.memory_limit() {
        MemoryLimit::Finite(n) => Some(n / 4),
        _ => None,
    }
}

/// Compute the new rows of `plan`: whole when they fit `budget`, else spilled and sliced.
pub(super) async fn compute(state: &SessionState, plan: LogicalPlan, keys: &[String], budget: Option<usize>) -> Result<Source> {
    let mut stream = DataFrame::new(state.clone(), plan).execute_stream().await?;
    let schema = stream.schema();
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut bytes = 0usize;
    while let Some(b) = stream.next().await {
        let b = b?;
        bytes += b.get_array_memory_size();
        held.push(b);
        if budget.is_some_and(|max| bytes > max) {
            break;
        }
    }
    let Some(max) = budget.filter(|max| bytes > *max) else { return Ok(Source::Whole(schema, held)) };
    // Too many to hold: everything to one spill file, then dealt into slices.
    let disk = state.runtime_env().disk_manager.clone();
    let spill = disk.create_tmp_file("merge source")?;
    let mut w = ArrowWriter::try_new(std::fs::File::create(path(&spill)?)?, schema.clone(), None)?;
    let mut rows = 0usize;
    for b in held.drain(..) {
        rows += b.num_rows();
        w.write(&b)?;
    }
    while let Some(b) = stream.next().await {
        let b = b?;
        bytes += b.get_array_memory_size();
        rows += b.num_rows();
        w.write(&b)?;
    }
    w.close()?;
    let n = bytes.div_ceil(max).max(2);
    tracing::info!(rows, mib = bytes >> 20, slices = n, "the new rows exceed a quarter of --memory-limit: merged in slices by key");
    let key_cols: Vec<usize> = keys.iter().map(|k| schema.index_of(k).map_err(|e| Error::Other(e.to_string()))).collect::<Result<_>>()?;
    let files: Vec<Arc<dyn SpillFile>> = (0..n).map(|_| disk.create_tmp_file("merge slice")).collect::<std::result::Result<_, _>>()?;
    let mut writers: Vec<ArrowWriter<std::fs::File>> = files
        .iter()
        .map(|f| Ok(ArrowWriter::try_new(std::fs::File::create(path(f)?)?, schema.clone(), None)?))
        .collect::<Result<_>>()?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path(&spill)?)?)?.build()?;
    let hasher = RandomState::default();
    for b in reader {
        let b = b?;
        let cols: Vec<ArrayRef> = key_cols.iter().map(|i| b.column(*i).clone()).collect();
        let mut hashes = vec![0u64; b.num_rows()];
        create_hashes(&cols, &hasher, &mut hashes)?;
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (row, h) in hashes.iter().enumerate() {
            picks[(*h % n as u64) as usize].push(row as u32);
        }
        for (i, rows) in picks.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            writers[i].write(&take_record_batch(&b, &UInt32Array::from(rows))?)?;
        }
    }
    for w in writers {
        w.close()?;
    }
    Ok(Source::Sliced { schema, files })
}

/// The rows of one slice file.
pub(super) fn read(file: &Arc<dyn SpillFile>) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path(file)?)?)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Where a spill file is: the session's disk manager gives local files.
fn path(f: &Arc<dyn SpillFile>) -> Result<&std::path::Path> {
    f.path().ok_or_else(|| Error::Other("the session's spill files are not local files".into()))
}
