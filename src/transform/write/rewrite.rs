//! A copy-on-write MERGE of our own for the common case: a `cluster_by` model whose table is
//! not partitioned and already has the new rows' columns and types.
//!
//! It does what delta-rs's MERGE in [`super::merge`] does: a row matches when its key and its
//! `cluster_by` value equal a new row's (a NULL key never matches); a matched row takes the
//! new row's values unless its `order_by` is newer (a NULL `order_by` never replaces a set
//! one); a file holding a matched row is rewritten whole; everything lands in one commit with
//! the model's txn. What it leaves out is the join delta-rs plans over the table: the files
//! whose `cluster_by` range overlaps the new rows' are found by their statistics, their key
//! columns are read to find the ones holding a match, and only those are read whole. On the
//! 1-day bench (7,585 new rows into a 1.6M-row table, one 23,556-row file rewritten) it takes
//! 43–46 ms where delta-rs's MERGE took 60–90 ms, planning alone about 13 (`INGEST_LOG=
//! ingest=debug` prints its steps). Copy-on-write is what is left: reading and re-encoding
//! the 20,471 rows that share a file with an updated key is about 30 of those milliseconds.
//!
//! Anything else — partitions, a column added or retyped, a file whose schema is not the
//! table's, a deletion vector, more candidate files than [`MAX_CANDIDATE_BYTES`] (this merge
//! holds the files it reads in memory; delta-rs's streams) — is [`Outcome::Unsupported`],
//! found before anything is written, and goes to delta-rs's MERGE.
use super::merge::MergeStats;
use super::output::writer_properties;
use super::{Commit, Written};
use crate::error::{Error, Result};
use crate::transform::model::Model;
use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use deltalake::arrow::row::{RowConverter, Rows, SortField};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::datafusion::common::{Column, DFSchema, ScalarValue};
use deltalake::datafusion::logical_expr::{lit, Expr};
use deltalake::datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitBuilder, TableReference};
use deltalake::table::config::TablePropertiesExt;
use deltalake::kernel::Action;
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::DeltaTable;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::HashMap;
use std::sync::Arc;

/// The most Parquet (compressed) this merge reads: a day's merge into a clustered table
/// reads one to a few files of the model's `target_file_size` (2 MiB by default).
pub(super) const MAX_CANDIDATE_BYTES: u64 = 64 << 20;

pub(super) enum Outcome {
    /// No row of the table matches a new row: nothing was read whole or written.
    NoMatch,
    /// Merged and committed.
    Done(Written),
    /// Not a case this merge handles (why); nothing was written.
    Unsupported(&'static str),
}

/// Merge `source` (the model's deduplicated new rows) into `t`.
pub(super) async fn merge(m: &Model, t: &DeltaTable, source: &[RecordBatch], commit: &Commit) -> Result<Outcome> {
    use Outcome::Unsupported;
    let started = std::time::Instant::now();
    let mut took: Vec<(&str, u64)> = Vec::new();
    let mut lap = |step: &'static str| took.push((step, started.elapsed().as_micros() as u64));
    let Some(c) = m.cluster_by.as_deref() else { return Ok(Unsupported("no cluster_by")) };
    if !m.partition_by.is_empty() {
        return Ok(Unsupported("a partitioned table"));
    }
    let snap = t.snapshot()?;
    let schema = snap.snapshot().arrow_schema();
    let Some(new) = conform(&schema, source) else { return Ok(Unsupported("the new rows' columns are not the table's")) };
    if new.num_rows() == 0 {
        return Ok(Outcome::NoMatch);
    }
    let at = |n: &str| schema.index_of(n).map_err(|e| Error::Other(e.to_string()));
    // The match key: the unique key and the cluster value (the join delta-rs's MERGE gets).
    let mut match_cols: Vec<usize> = m.unique_key.iter().map(|k| at(k)).collect::<Result<_>>()?;
    let cluster = at(c)?;
    match_cols.push(cluster);
    let order = m.order_by.as_deref().map(at).transpose()?;
    let fields = |cols: &[usize]| cols.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect::<Vec<_>>();
    let (Ok(keys), Ok(orders)) = (RowConverter::new(fields(&match_cols)), RowConverter::new(fields(&order.into_iter().collect::<Vec<_>>()))) else {
        return Ok(Unsupported("a key or order column without a row format"));
    };
    let new_keys = keys.convert_columns(&pick(&new, &match_cols))?;
    let new_nulls = any_null(&new, &match_cols);
    let mut by_key: HashMap<&[u8], usize, foldhash::fast::FixedState> = HashMap::with_capacity_and_hasher(new.num_rows(), Default::default());
    for (r, _) in new_nulls.iter().enumerate().filter(|(_, null)| !**null) {
        by_key.insert(new_keys.row(r).data(), r);
    }

    // The files whose statistics say they may hold a row in the new rows' cluster range.
    let (lo, hi) = bounds(&new, cluster)?;
    let col = || Expr::Column(Column::from_name(c));
    let range = col().gt_eq(lit(lo)).and(col().lt_eq(lit(hi)));
    let phys = SessionContext::new().create_physical_expr(range, &DFSchema::try_from(schema.as_ref().clone())?)?;
    let log = snap.log_data();
    let maybe = match PruningPredicateBuilder::new().with_file_schema(schema.clone()).build(phys) {
        Some(p) => p.prune(&log)?,
        None => vec![true; log.num_files()],
    };
    let files: Vec<_> = log.iter().zip(maybe).filter(|(_, m)| *m).map(|(f, _)| f).collect();
    lap("candidates");
    if files.iter().any(|f| f.deletion_vector_descriptor().is_some()) {
        return Ok(Unsupported("a file with a deletion vector"));
    }
    let total = log.num_files();
    // Held in memory (delta-rs's MERGE streams): a merge touching more goes to it.
    if files.iter().map(|f| f.size() as u64).sum::<u64>() > MAX_CANDIDATE_BYTES {
        return Ok(Unsupported("more candidate files than this merge holds in memory"));
    }

    // Of those, the ones holding a match (their match columns read), kept as fetched.
    let store = t.log_store().object_store(None);
    let names: Vec<&str> = match_cols.iter().map(|i| schema.field(*i).name().as_str()).collect();
    let mut touched = Vec::new();
    for f in &files {
        let bytes = store.get(&Path::from(f.path().as_ref())).await?.bytes().await?;
        let Some(batches) = read(&bytes, &schema, Some(&names))? else { return Ok(Unsupported("a file's columns are not the table's")) };
        let hit = batches.iter().try_fold(false, |hit, b| -> Result<bool> {
            let all: Vec<usize> = (0..b.num_columns()).collect();
            let k = keys.convert_columns(&pick(b, &all))?;
            let nulls = any_null(b, &all);
            Ok(hit || (0..b.num_rows()).any(|r| !nulls[r] && by_key.contains_key(k.row(r).data())))
        })?;
        if hit {
            touched.push((f.clone(), bytes));
        }
    }
    lap("keys read");
    if touched.is_empty() {
        return Ok(Outcome::NoMatch);
    }

    // The touched files whole: each matched row is replaced by its new row unless it is newer.
    let new_order = order.map(|o| orders.convert_columns(&[new.column(o).clone()])).transpose()?;
    let mut write_new = vec![true; new.num_rows()];
    let mut matched = vec![false; new.num_rows()];
    let (mut kept, mut copied, mut read_rows) = (Vec::new(), 0, 0);
    for (_, bytes) in &touched {
        let Some(batches) = read(bytes, &schema, None)? else { return Ok(Unsupported("a file's columns are not the table's")) };
        for b in batches {
            read_rows += b.num_rows();
            let k = keys.convert_columns(&pick(&b, &match_cols))?;
            let nulls = any_null(&b, &match_cols);
            let old_order = order.map(|o| orders.convert_columns(&[b.column(o).clone()])).transpose()?;
            let keep: BooleanArray = (0..b.num_rows())
                .map(|r| {
                    let Some(&j) = (!nulls[r]).then(|| by_key.get(k.row(r).data())).flatten() else { return Some(true) };
                    let replace = match (order, &old_order, &new_order) {
                        (Some(o), Some(old), Some(newer)) => newer_wins(b.column(o), r, old, new.column(o), j, newer),
                        _ => true,
                    };
                    matched[j] = true;
                    if !replace {
                        write_new[j] = false;
                    }
                    Some(!replace)
                })
                .collect();
            let b = filter_record_batch(&b, &keep)?;
            copied += b.num_rows();
            kept.push(b);
        }
    }
    let inserted = matched.iter().filter(|m| !**m).count();
    let updated = matched.iter().zip(&write_new).filter(|(m, w)| **m && **w).count();
    kept.push(filter_record_batch(&new, &BooleanArray::from(write_new))?);
    // Rows for more than one file are written as one run in `cluster_by` order (as every
    // write of a clustered table), so the files get disjoint ranges. Rows for one file (by
    // the touched files' bytes per row, with a margin) are written as they are: their order
    // within a file changes none of the file statistics readers and the next merge prune by.
    let out_rows: usize = kept.iter().map(|b| b.num_rows()).sum();
    let touched_bytes: u64 = touched.iter().map(|(f, _)| f.size() as u64).sum();
    let one_file = m.target_file_size.is_some_and(|t| read_rows > 0 && touched_bytes * out_rows as u64 / read_rows as u64 * 5 / 4 < t);
    let out = if one_file {
        kept
    } else {
        let all = concat_batches(&schema, &kept)?;
        let sorted = lexsort_to_indices(&[SortColumn { values: all.column(cluster).clone(), options: Some(SortOptions { descending: false, nulls_first: true }) }], None)?;
        vec![take_record_batch(&all, &sorted)?]
    };
    lap("rows merged");

    let stats = WriterStatsConfig::from_config(snap.snapshot().table_configuration());
    let config = WriterConfig::new(
        schema.clone(),
        Vec::new(),
        Some(writer_properties(source.first())),
        m.target_file_size.and_then(std::num::NonZeroU64::new),
        None,
        stats.num_indexed_cols,
        stats.stats_columns.clone(),
    );
    let mut writer = DeltaWriter::new(store.clone(), config);
    const CHUNK: usize = 8192;
    for b in &out {
        for at in (0..b.num_rows()).step_by(CHUNK) {
            if let Err(e) = writer.write(&b.slice(at, CHUNK.min(b.num_rows() - at))).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
        }
    }
    let adds = writer.close().await?;
    lap("written");
    let added: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();

    let merge = MergeStats {
        inserted,
        updated,
        copied,
        files_scanned: files.len(),
        files_skipped: total - files.len(),
        files_removed: touched.len(),
        files_added: adds.len(),
        files_after: total - touched.len() + adds.len(),
    };
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(touched.iter().map(|(f, _)| Action::Remove(f.remove_action(true))));
    let newer = m.order_by.as_ref().map(|o| format!("source.`{o}` >= target.`{o}` OR target.`{o}` IS NULL"));
    let mut on: Vec<String> = match_cols.iter().map(|i| format!("target.`{0}` = source.`{0}`", schema.field(*i).name())).collect();
    on.dedup();
    let op = DeltaOperation::Merge {
        // None: the commit says it read the whole table (any concurrent commit conflicts).
        predicate: None,
        merge_predicate: Some(on.join(" AND ")),
        matched_predicates: vec![MergePredicate { action_type: "update".into(), predicate: newer }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: Vec::new(),
    };
    let metrics = serde_json::json!({
        "num_source_rows": new.num_rows(),
        "num_target_rows_inserted": inserted,
        "num_target_rows_updated": updated,
        "num_target_rows_copied": copied,
        "num_output_rows": inserted + updated + copied,
        "num_target_files_scanned": merge.files_scanned,
        "num_target_files_skipped_during_scan": merge.files_skipped,
        "num_target_files_added": merge.files_added,
        "num_target_files_removed": merge.files_removed,
    });
    // The expired log is cleaned up by the commits that write a checkpoint (delta-rs writes
    // one when version + 1 is a multiple of the interval; cleanup removes only what a
    // checkpoint covers), not by listing the log folder after every commit.
    let version = snap.version() + 1;
    let checkpoints = (version + 1) % snap.table_config().checkpoint_interval().get() == 0;
    let props = commit
        .props([("operationMetrics".to_string(), metrics), ("readVersion".to_string(), snap.version().into())])
        .with_cleanup_expired_logs(Some(checkpoints));
    let done = match CommitBuilder::from(props).with_actions(actions).build(Some(snap as &dyn TableReference), t.log_store(), op).await {
        Ok(d) => d,
        Err(e) => {
            // The log PUT may have landed although the client saw an error (an S3 retry of a
            // PUT that succeeded answers 412): read the log back before deleting anything. The
            // model's txn at our version means a commit of this run's input is in: ours, or an
            // identical run's (the same rows merged). Only a log known not to hold it lets the
            // files go; an unreadable log keeps them (vacuum removes what nothing references).
            let mut reloaded = t.clone();
            let applied = match reloaded.update_incremental(None).await {
                // A slice's commit without the txn cannot be told from the log: kept.
                Ok(()) => match (reloaded.snapshot(), &commit.txn) {
                    (Ok(s), Some(txn)) => s.transaction_version(reloaded.log_store().as_ref(), &txn.app_id).await.ok().map(|v| v == Some(txn.version)),
                    _ => None,
                },
                Err(_) => None,
            };
            match applied {
                Some(true) => {
                    tracing::warn!(model = %m.target, error = %e, "the commit reported an error but the log holds it: taken as committed");
                    return Ok(Outcome::Done(Written { table: reloaded, rows: new.num_rows(), merge: Some(merge) }));
                }
                Some(false) => {
                    // No partial garbage: the files this merge wrote are referenced by nothing.
                    for p in added {
                        let _ = store.delete(&Path::from(p.as_str())).await;
                    }
                }
                None => tracing::warn!(model = %m.target, "the commit failed and the log cannot be read back: its new files are kept for `ingest vacuum`"),
            }
            return Err(e.into());
        }
    };
    let mut table = t.clone();
    table.update_incremental(Some(done.version())).await?;
    lap("committed");
    tracing::debug!(model = %m.target, us = ?took, "merge steps (µs since start)");
    tracing::info!(model = %m.target, ?merge, "merge (table files read by their statistics, rewritten where a key matched)");
    Ok(Outcome::Done(Written { table, rows: new.num_rows(), merge: Some(merge) }))
}

/// `batches` as one batch with `schema`'s columns (by name, in its order), when each holds
/// the same values as its type ([`same_values`]); None otherwise.
fn conform(schema: &SchemaRef, batches: &[RecordBatch]) -> Option<RecordBatch> {
    let first = batches.first()?;
    let theirs = first.schema();
    if first.num_columns() != schema.fields().len() {
        tracing::debug!(table = ?schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>(), new = ?theirs.fields().iter().map(|f| f.name()).collect::<Vec<_>>(), "columns differ");
        return None;
    }
    let mut order = Vec::new();
    for f in schema.fields() {
        match theirs.index_of(f.name()) {
            Ok(i) if same_values(theirs.field(i).data_type(), f.data_type()) => order.push(i),
            Ok(i) => {
                tracing::debug!(column = %f.name(), table = ?f.data_type(), new = ?theirs.field(i).data_type(), "a column's type differs");
                return None;
            }
            Err(_) => {
                tracing::debug!(column = %f.name(), "a column of the table is not among the new rows'");
                return None;
            }
        }
    }
    let one = concat_batches(&theirs, batches).ok()?;
    let cols = schema.fields().iter().zip(order).map(|(f, i)| as_type(one.column(i), f.data_type())).collect::<Option<_>>()?;
    RecordBatch::try_new(schema.clone(), cols).ok()
}

/// A data file's rows (only the `columns` named, else all), when the file has each of them
/// with the table's type; None otherwise.
fn read(bytes: &bytes::Bytes, schema: &SchemaRef, columns: Option<&[&str]>) -> Result<Option<Vec<RecordBatch>>> {
    let lake = |e: deltalake::parquet::errors::ParquetError| Error::Lake(e.to_string());
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(lake)?;
    let file = b.schema().clone();
    let names: Vec<&str> = match columns {
        Some(c) => c.to_vec(),
        None => schema.fields().iter().map(|f| f.name().as_str()).collect(),
    };
    if columns.is_none() && file.fields().len() != names.len() {
        tracing::debug!(table = ?names, file = ?file.fields().iter().map(|f| f.name()).collect::<Vec<_>>(), "a data file's columns differ");
        return Ok(None);
    }
    let (mut roots, mut fields) = (Vec::new(), Vec::new());
    for n in &names {
        let (Ok(i), Ok(want)) = (file.index_of(n), schema.field_with_name(n)) else {
            tracing::debug!(column = %n, "a column of the table is not in a data file");
            return Ok(None);
        };
        if !same_values(file.field(i).data_type(), want.data_type()) {
            tracing::debug!(column = %n, table = ?want.data_type(), file = ?file.field(i).data_type(), "a data file's column has another type");
            return Ok(None);
        }
        roots.push(i);
        fields.push(want.clone());
    }
    // The batches get the table's field definitions (nullability, metadata), in the order
    // asked for (a projection keeps the file's order).
    let out_schema = match columns {
        None => schema.clone(),
        Some(_) => Arc::new(deltalake::arrow::datatypes::Schema::new(fields.clone())),
    };
    let mask = ProjectionMask::roots(b.parquet_schema(), roots);
    let reader = b.with_projection(mask).with_batch_size(8192).build().map_err(lake)?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let cols: Vec<ArrayRef> = names
            .iter()
            .zip(&fields)
            .map(|(n, f)| batch.column_by_name(n).and_then(|c| as_type(c, f.data_type())))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Lake("a column read from a data file cannot take the table's type".into()))?;
        out.push(RecordBatch::try_new(out_schema.clone(), cols)?);
    }
    Ok(Some(out))
}

/// Whether `a` and `b` hold the same values in another layout: string and binary views and
/// large variants, a list's item name (`item` in DataFusion, `element` in the table; delta-rs's
/// MERGE writes its files with view types), nested nullability. Struct field names count.
fn same_values(a: &DataType, b: &DataType) -> bool {
    fn plain(t: &DataType) -> DataType {
        let item = |f: &FieldRef| Arc::new(Field::new("item", plain(f.data_type()), true));
        match t {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => DataType::List(item(f)),
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| Field::new(f.name(), plain(f.data_type()), true)).collect()),
            other => other.clone(),
        }
    }
    plain(a) == plain(b)
}

/// `a` as type `t`, which holds the same values ([`same_values`]).
fn as_type(a: &ArrayRef, t: &DataType) -> Option<ArrayRef> {
    if a.data_type() == t {
        return Some(a.clone());
    }
    deltalake::arrow::compute::cast(a, t).ok()
}

fn pick(b: &RecordBatch, cols: &[usize]) -> Vec<ArrayRef> {
    cols.iter().map(|i| b.column(*i).clone()).collect()
}

/// Per row: is any of `cols` NULL (SQL equality never matches such a row)?
fn any_null(b: &RecordBatch, cols: &[usize]) -> Vec<bool> {
    (0..b.num_rows()).map(|r| cols.iter().any(|i| b.column(*i).is_null(r))).collect()
}

/// The lowest and highest value of column `i` (no NULLs: the caller checked).
fn bounds(b: &RecordBatch, i: usize) -> Result<(ScalarValue, ScalarValue)> {
    let conv = RowConverter::new(vec![SortField::new(b.schema().field(i).data_type().clone())])?;
    let rows = conv.convert_columns(&[b.column(i).clone()])?;
    let (mut lo, mut hi) = (0, 0);
    for r in 1..rows.num_rows() {
        if rows.row(r) < rows.row(lo) {
            lo = r;
        }
        if rows.row(r) > rows.row(hi) {
            hi = r;
        }
    }
    Ok((ScalarValue::try_from_array(b.column(i), lo)?, ScalarValue::try_from_array(b.column(i), hi)?))
}

/// `source.o >= target.o OR target.o IS NULL`: does new row `j` replace old row `r`?
fn newer_wins(old_col: &ArrayRef, r: usize, old: &Rows, new_col: &ArrayRef, j: usize, new: &Rows) -> bool {
    if old_col.is_null(r) {
        return true;
    }
    !new_col.is_null(j) && new.row(j) >= old.row(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_large_types_and_item_names_hold_the_same_values_struct_names_do_not() {
        let list = |name: &str, t: DataType| DataType::List(Arc::new(Field::new(name, t, true)));
        let st = |names: &[&str]| DataType::Struct(names.iter().map(|n| Field::new(*n, DataType::Utf8View, false)).collect());
        assert!(same_values(&DataType::Utf8View, &DataType::Utf8));
        assert!(same_values(&DataType::LargeUtf8, &DataType::Utf8));
        assert!(same_values(&list("item", st(&["id", "name"])), &list("element", DataType::Struct(vec![Field::new("id", DataType::Utf8, true), Field::new("name", DataType::Utf8, true)].into()))));
        assert!(!same_values(&st(&["id", "name"]), &st(&["id", "fb_id"])));
        assert!(!same_values(&DataType::Int64, &DataType::Utf8));
        assert!(!same_values(&list("item", DataType::Int64), &list("item", DataType::Float64)));
        // And a view column is read back as the table's type.
        let a: ArrayRef = Arc::new(deltalake::arrow::array::StringViewArray::from(vec![Some("a"), None]));
        assert_eq!(as_type(&a, &DataType::Utf8).unwrap().data_type(), &DataType::Utf8);
    }
}
