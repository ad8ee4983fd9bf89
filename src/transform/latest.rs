//! The latest row per unique key, by hashing ([`latest`]) or by sorting ([`sorted`]).
//!
//! Hashing: one pass keeps, per key (its columns in Arrow's row format, kept beside each
//! input batch), the position of the best row so far by the order columns (also in row
//! format, so "latest" is one byte comparison), then the winners are gathered from the input
//! batches in input order, or in `cluster_by` order when the table has one (sorting the
//! winners' positions, not the rows: the writer then needs no sort). The rows themselves are
//! never copied until the gather; the input is held in memory (tracked by the session's
//! pool: past the pool's limit the model fails cleanly, which is why `write::dedupe` takes
//! this path only when the input fits — the sort-based path spills instead).
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::{interleave_record_batch, SortOptions};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::common::Result as DfResult;
use deltalake::datafusion::execution::memory_pool::MemoryReservation;
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::arrow::array::BooleanArray;
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::row::OwnedRow;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::physical_expr::expressions::Column;
use deltalake::datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr};
use deltalake::datafusion::physical_plan::repartition::RepartitionExec;
use deltalake::datafusion::physical_plan::sorts::sort::SortExec;
use deltalake::datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use deltalake::arrow::row::Rows;
use deltalake::datafusion::physical_plan::stream::RecordBatchReceiverStream;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Which columns make the key, and which decide the latest row (each with its direction:
/// the row that sorts first wins).
pub struct Spec {
    pub keys: Vec<usize>,
    pub order: Vec<(usize, SortOptions)>,
    pub batch_size: usize,
    /// Hash path only: the column to emit the winners in (ascending) order of.
    pub cluster: Option<usize>,
}

/// Whether `spec`'s columns of `schema` have a row format (nested types may not).
pub fn supported(schema: &SchemaRef, spec: &Spec) -> bool {
    let mut fields = key_fields(schema, &spec.keys);
    fields.extend(order_fields(schema, &spec.order));
    RowConverter::new(fields).is_ok()
}

/// The row-format fields of the key columns `keys`.
fn key_fields(schema: &SchemaRef, keys: &[usize]) -> Vec<SortField> {
    keys.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect()
}

/// The row-format fields of the order columns, each with its direction.
fn order_fields(schema: &SchemaRef, order: &[(usize, SortOptions)]) -> Vec<SortField> {
    order.iter().map(|(i, o)| SortField::new_with_options(schema.field(*i).data_type().clone(), *o)).collect()
}

/// The rows of `input` that are the latest of their key, in input order, or by the
/// `spec.cluster` column (ascending, nulls first) when there is one: the order a `cluster_by`
/// table is written in, so the writer needs no sort of its own. The winners are gathered
/// by a task of their own, a batch at a time, while the consumer (the writer) encodes.
pub fn latest(input: SendableRecordBatchStream, spec: Spec, reservation: MemoryReservation) -> SendableRecordBatchStream {
    let schema = input.schema();
    let mut out = RecordBatchReceiverStream::builder(schema.clone(), 2);
    let tx = out.tx();
    out.spawn(async move {
        let (batches, idx) = winners(input, &spec, &reservation).await?;
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        if idx.is_empty() {
            let _ = tx.send(Ok(RecordBatch::new_empty(schema))).await;
        }
        for chunk in idx.chunks(spec.batch_size.max(1)) {
            if tx.send(Ok(interleave_record_batch(&refs, chunk)?)).await.is_err() {
                break; // the consumer stopped
            }
        }
        Ok(())
    });
    out.build()
}

/// One input batch of [`winners`] with its key and order columns in row format.
struct Seen {
    batch: RecordBatch,
    keys: Rows,
    order: Option<Rows>,
}

/// The (batch, row) of the latest row of each key, and the batches they point into.
async fn winners(
    mut input: SendableRecordBatchStream,
    spec: &Spec,
    reservation: &MemoryReservation,
) -> DfResult<(Vec<RecordBatch>, Vec<(usize, usize)>)> {
    let schema = input.schema();
    let keys = RowConverter::new(key_fields(&schema, &spec.keys))?;
    let order = RowConverter::new(order_fields(&schema, &spec.order))?;
    // (hash of the key, batch, row) of the best row so far per key: the key and order bytes
    // stay in the batches' row-format columns, nothing is allocated per key.
    let mut best: HashTable<(u64, u32, u32)> = HashTable::new();
    let hasher = foldhash::fast::FixedState::default();
    let mut seen: Vec<Seen> = Vec::new();
    // Small batches (a raw file each) are joined first: the gather's cost grows with the
    // number of batches it picks from (100,000 one-file batches made it quadratic).
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    loop {
        let next = input.next().await.transpose()?;
        if let Some(b) = next.as_ref().filter(|b| b.num_rows() > 0) {
            pending_rows += b.num_rows();
            pending.push(b.clone());
        }
        if pending.is_empty() || (next.is_some() && pending_rows < spec.batch_size) {
            if next.is_none() {
                break;
            }
            continue;
        }
        let b = deltalake::arrow::compute::concat_batches(&schema, &pending)?;
        pending.clear();
        pending_rows = 0;
        let k = keys.convert_columns(&spec.keys.iter().map(|i| b.column(*i).clone()).collect::<Vec<_>>())?;
        // No order columns: every row ties, the first seen stays.
        let o = match spec.order.is_empty() {
            true => None,
            false => Some(order.convert_columns(&spec.order.iter().map(|(i, _)| b.column(*i).clone()).collect::<Vec<_>>())?),
        };
        let held = b.get_array_memory_size() + k.size() + o.as_ref().map_or(0, |o| o.size());
        let at = seen.len() as u32;
        seen.push(Seen { batch: b, keys: k, order: o });
        let capacity = best.capacity();
        let key_of = |bi: u32, ri: u32| seen[bi as usize].keys.row(ri as usize);
        let order_of = |bi: u32, ri: u32| seen[bi as usize].order.as_ref().map_or(&[][..], |o| o.row(ri as usize).data());
        for r in 0..seen[at as usize].batch.num_rows() as u32 {
            let kr = key_of(at, r);
            let h = hasher.hash_one(kr.as_ref());
            match best.find_mut(h, |&(eh, bi, ri)| eh == h && key_of(bi, ri) == kr) {
                // Ties keep the first row seen.
                Some(w) => {
                    if order_of(at, r) < order_of(w.1, w.2) {
                        *w = (h, at, r);
                    }
                }
                None => {
                    best.insert_unique(h, (h, at, r), |e| e.0);
                }
            }
        }
        let table = best.capacity().saturating_sub(capacity) * (std::mem::size_of::<(u64, u32, u32)>() + 1);
        reservation.try_grow(held + table)?;
        if next.is_none() {
            break;
        }
    }
    let mut idx: Vec<(usize, usize)> = best.into_iter().map(|(_, b, r)| (b as usize, r as usize)).collect();
    match spec.cluster {
        Some(c) => idx = by_column(idx, &seen, c, reservation)?,
        None => idx.sort_unstable(),
    }
    Ok((seen.into_iter().map(|s| s.batch).collect(), idx))
}

/// The positions `idx` into `seen`'s batches sorted by column `c` (ascending, nulls first),
/// comparing its values in row format; the memory that takes is reserved first.
fn by_column(idx: Vec<(usize, usize)>, seen: &[Seen], c: usize, reservation: &MemoryReservation) -> DfResult<Vec<(usize, usize)>> {
    let Some(first) = seen.first() else { return Ok(idx) };
    let conv = RowConverter::new(vec![SortField::new(first.batch.schema().field(c).data_type().clone())])?;
    let by: Vec<Rows> = seen.iter().map(|s| conv.convert_columns(&[s.batch.column(c).clone()])).collect::<Result<_, _>>()?;
    reservation.try_grow(by.iter().map(|r| r.size()).sum::<usize>() + idx.len() * std::mem::size_of::<(u128, usize, usize)>())?;
    let width = by.iter().flat_map(|r| r.iter().map(|x| x.as_ref().len())).try_fold(None, |w, l| match w {
        Some(w) if w != l => Err(()),
        _ => Ok(Some(l)),
    });
    Ok(match width {
        // Fixed-width values (timestamps, numbers: 9 bytes) compare as one integer: the row
        // format orders like its bytes, so like the bytes read big-endian.
        Ok(Some(w)) if w <= 16 => {
            let packed = |b: usize, r: usize| {
                let mut x = [0u8; 16];
                x[..w].copy_from_slice(by[b].row(r).as_ref());
                u128::from_be_bytes(x)
            };
            let mut keyed: Vec<(u128, usize, usize)> = idx.iter().map(|&(b, r)| (packed(b, r), b, r)).collect();
            keyed.sort_unstable();
            keyed.into_iter().map(|(_, b, r)| (b, r)).collect()
        }
        _ => {
            let mut idx = idx;
            idx.sort_unstable_by(|a, b| by[a.0].row(a.1).cmp(&by[b.0].row(b.1)));
            idx
        }
    })
}

/// The latest row per key by sorting, which spills under the memory limit: the input is dealt
/// out in `partitions` parts by a hash of the key, each part sorted by key and then latest
/// first, and the first row of each key kept as the sorted rows stream by (one comparison of
/// row-format keys per row, where DataFusion's `row_number()` window keeps per-key state as
/// scalar values). One stream per part.
pub fn sorted(input: Arc<dyn ExecutionPlan>, spec: &Spec, partitions: usize, task: Arc<TaskContext>) -> DfResult<Vec<SendableRecordBatchStream>> {
    let schema = input.schema();
    let column = |i: usize| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
    let keys: Vec<Arc<dyn PhysicalExpr>> = spec.keys.iter().map(|i| column(*i)).collect();
    let by = keys
        .iter()
        .map(|k| PhysicalSortExpr::new(k.clone(), SortOptions::default()))
        .chain(spec.order.iter().map(|(i, o)| PhysicalSortExpr::new(column(*i), *o)));
    let Some(ordering) = LexOrdering::new(by) else {
        return Err(deltalake::datafusion::common::DataFusionError::Internal("a dedupe without key columns".into()));
    };
    let partitions = partitions.max(1);
    let dealt = Arc::new(RepartitionExec::try_new(input, Partitioning::Hash(keys, partitions))?);
    let sort = Arc::new(SortExec::new(ordering, dealt).with_preserve_partitioning(true));
    (0..partitions).map(|p| first_of_key(sort.execute(p, task.clone())?, &spec.keys)).collect()
}

/// The first row of each key of `input`, sorted by key.
fn first_of_key(input: SendableRecordBatchStream, keys: &[usize]) -> DfResult<SendableRecordBatchStream> {
    let schema = input.schema();
    let conv = RowConverter::new(key_fields(&schema, keys))?;
    let keys = keys.to_vec();
    let mut prev: Option<OwnedRow> = None;
    let out = input.map(move |b| {
        let b = b?;
        if b.num_rows() == 0 {
            return Ok(b);
        }
        let rows = conv.convert_columns(&keys.iter().map(|i| b.column(*i).clone()).collect::<Vec<_>>())?;
        let keep: BooleanArray = (0..b.num_rows())
            .map(|r| {
                let first = match r {
                    0 => prev.as_ref().is_none_or(|p| p.row() != rows.row(0)),
                    _ => rows.row(r - 1) != rows.row(r),
                };
                Some(first)
            })
            .collect();
        prev = Some(rows.row(b.num_rows() - 1).owned());
        Ok(filter_record_batch(&b, &keep)?)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::Int64Type;
    use deltalake::datafusion::datasource::memory::MemorySourceConfig;
    use deltalake::datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
    use deltalake::datafusion::physical_plan::common::collect;
    use deltalake::datafusion::physical_plan::memory::MemoryStream;

    /// (id, c, v) rows.
    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let col = |f: fn(&(i64, i64, i64)) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as _;
        RecordBatch::try_from_iter([("id", col(|r| r.0)), ("c", col(|r| r.1)), ("v", col(|r| r.2))]).unwrap()
    }

    fn rows(out: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
        let v = |b: &RecordBatch, i: usize| b.column(i).as_primitive::<Int64Type>().values().to_vec();
        out.iter().flat_map(|b| (0..b.num_rows()).map(|r| (v(b, 0)[r], v(b, 1)[r], v(b, 2)[r])).collect::<Vec<_>>()).collect()
    }

    #[tokio::test]
    async fn the_latest_row_of_each_key_by_hash_in_cluster_order_and_by_sort() {
        // Key 1's `c` differs between its versions (a cluster column that changed): still one
        // row, the latest; key 3's later version is older by `v` and loses.
        let input = vec![batch(&[(1, 10, 1), (2, 5, 1), (3, 30, 1)]), batch(&[(1, 20, 2), (3, 30, 0)])];
        let schema = input[0].schema();
        let spec = |cluster| Spec { keys: vec![0], order: vec![(2, SortOptions { descending: true, nulls_first: false })], batch_size: 2, cluster };
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let want = vec![(2, 5, 1), (1, 20, 2), (3, 30, 1)];
        let stream = Box::pin(MemoryStream::try_new(input.clone(), schema.clone(), None).unwrap());
        let out = collect(latest(stream, spec(Some(1)), MemoryConsumer::new("t").register(&pool))).await.unwrap();
        assert_eq!(rows(&out), want, "by hash, in `c` order");
        let stream = Box::pin(MemoryStream::try_new(input.clone(), schema.clone(), None).unwrap());
        let out = collect(latest(stream, spec(None), MemoryConsumer::new("t").register(&pool))).await.unwrap();
        assert_eq!(rows(&out), vec![(2, 5, 1), (3, 30, 1), (1, 20, 2)], "by hash, in the winners' input order");
        let plan = MemorySourceConfig::try_new_exec(&[input], schema, None).unwrap();
        let mut got = Vec::new();
        // (With `cluster` too: one row per key even when the key's `c` changed, which sorting
        // by `c` first would break.)
        for part in sorted(plan, &spec(Some(1)), 2, Arc::new(TaskContext::default())).unwrap() {
            got.extend(rows(&collect(part).await.unwrap()));
        }
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "by sort");
    }
}
