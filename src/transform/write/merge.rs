//! MERGE of a model's new rows into its table, copy-on-write (a file holding a matched row is
//! rewritten whole): ours for the common case ([`super::rewrite`]), delta-rs's otherwise; or,
//! when no row of the table can match, a plain append that reads and rewrites nothing.
use super::output::writer_properties;
use super::rewrite::{self, Outcome};
use super::slices::{self, Source};
use super::{column, file_size_property, stream_write, Commit, Written};
use crate::error::Result;
use crate::lake::Lake;
use crate::transform::model::{Mode, Model};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::execution::SessionState;
use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use std::collections::BTreeSet;
use std::sync::Arc;

/// MERGE `df` (the model's deduplicated new rows) into `t` on the model's key: ours where it
/// applies (`INGEST_MERGE=delta` forces delta-rs's: the benchmarks compare the two).
pub(super) async fn merge(lake: &Lake, m: &Model, t: DeltaTable, new: (DataFrame, bool), commit: Commit) -> Result<Written> {
    let ours = std::env::var("INGEST_MERGE").map_or(true, |v| v != "delta");
    merge_with(lake, m, t, new, commit, ours).await
}

async fn merge_with(lake: &Lake, m: &Model, t: DeltaTable, (df, clustered): (DataFrame, bool), commit: Commit, ours: bool) -> Result<Written> {
    let t = file_size_property(m, t).await?;
    // The deduplicated source is computed once: the merge reads it several times
    // (its early filter's min/max, the join), so does the partition list below. Past a
    // quarter of --memory-limit it is spilled and merged in slices (`slices.rs`).
    let (state, plan) = df.into_parts();
    let started = std::time::Instant::now();
    let budget = slices::share(&state);
    let source = slices::compute(&state, plan, &m.unique_key, budget).await?;
    tracing::debug!(model = %m.target, ms = started.elapsed().as_millis() as u64, "merge source computed");
    match source {
        Source::Whole(schema, batches) => merge_batches(lake, m, t, &state, (schema, batches), clustered, commit, ours).await,
        Source::Sliced { schema, files } => {
            let n = files.len();
            let (mut t, mut rows, mut stats) = (t, 0, MergeStats::default());
            for (i, f) in files.iter().enumerate() {
                let batches = slices::read(f)?;
                let w = merge_batches(lake, m, t, &state, (schema.clone(), batches), false, commit.slice(i, n), ours).await?;
                tracing::info!(model = %m.target, slice = i + 1, of = n, rows = w.rows, "slice merged");
                rows += w.rows;
                stats.add(w.merge.unwrap_or_default());
                t = w.table;
            }
            Ok(Written { table: t, rows, merge: Some(stats) })
        }
    }
}

/// MERGE `batches` (deduplicated new rows, distinct keys) into `t` in one commit.
#[allow(clippy::too_many_arguments)]
async fn merge_batches(
    lake: &Lake,
    m: &Model,
    t: DeltaTable,
    state: &SessionState,
    (schema, batches): (SchemaRef, Vec<RecordBatch>),
    clustered: bool,
    commit: Commit,
    ours: bool,
) -> Result<Written> {
    let started = std::time::Instant::now();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let cols: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut pred: Vec<String> = m
        .unique_key
        .iter()
        .map(|k| format!("target.`{k}` = source.`{k}`"))
        .collect();
    for p in &m.partition_by {
        // Literal partition values in the join condition keep untouched files out of the rewrite.
        let lits: BTreeSet<String> = strings(&batches, p)
            .map(|v| crate::lake::state::sql_text(&v))
            .collect();
        if !lits.is_empty() && lits.len() <= 1000 {
            pred.push(format!("target.`{p}` IN ({})", lits.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    if let Some(c) = &m.cluster_by {
        // delta-rs turns `target.c = source.c` into `target.c BETWEEN min AND max` of
        // the source and skips files by their statistics.
        let nulls: usize = batches
            .iter()
            .map(|b| b.column_by_name(c).map_or(b.num_rows(), |a| a.null_count()))
            .sum();
        if nulls > 0 {
            return Err(m.err_at(
                m.line_of(c),
                format!("cluster_by column `{c}` is NULL in {nulls} new row(s); a cluster column must be set on every row"),
            ));
        }
        pred.push(format!("target.`{c}` = source.`{c}`"));
    }
    let mut no_match = None;
    if ours {
        match rewrite::merge(m, &t, &batches, &commit).await? {
            Outcome::Done(w) => return Ok(w),
            Outcome::NoMatch => no_match = Some(true),
            Outcome::Unsupported(why) => tracing::debug!(model = %m.target, why, "delta-rs's MERGE"),
        }
    }
    let sample = batches.first().cloned();
    let source = SessionContext::new_with_state(state.clone()).read_table(Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    if let Some(c) = &m.cluster_by {
        let no_match = match no_match {
            Some(n) => n,
            None => !any_key_in(&t, m, c, source.clone()).await?,
        };
        if no_match {
            // Nothing the MERGE could match: the same commit as an append, without the
            // MERGE's scan of the candidate files.
            let before = files_in(&t);
            let mut w = stream_write(lake, m, Some(t), (source, clustered), Mode::Append, commit.props([]), Vec::new(), false).await?;
            let after = files_in(&w.table);
            let merge = MergeStats { inserted: w.rows, files_added: after.saturating_sub(before), files_after: after, ..Default::default() };
            tracing::info!(model = %m.target, ?merge, ms = started.elapsed().as_millis() as u64, "no new row's key is in the table: appended, nothing merged");
            w.merge = Some(merge);
            return Ok(w);
        }
    }
    let newer = m
        .order_by
        .as_ref()
        // A NULL order_by never replaces a row that has one.
        .map(|o| format!("source.`{o}` >= target.`{o}` OR target.`{o}` IS NULL"));
    let (t, metrics) = t
        .merge(source, pred.join(" AND "))
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .with_writer_properties(writer_properties(sample.as_ref()))
        .with_commit_properties(commit.props([]))
        .when_matched_update(|mut u| {
            if let Some(n) = &newer {
                u = u.predicate(n.as_str());
            }
            for c in &cols {
                u = u.update(format!("`{c}`"), format!("source.`{c}`"));
            }
            u
        })?
        .when_not_matched_insert(|mut i| {
            for c in &cols {
                i = i.set(format!("`{c}`"), format!("source.`{c}`"));
            }
            i
        })?
        .await?;
    tracing::debug!(model = %m.target, ms = started.elapsed().as_millis() as u64, ?metrics, "merged");
    let files = files_in(&t);
    let merge = MergeStats {
        inserted: metrics.num_target_rows_inserted,
        updated: metrics.num_target_rows_updated,
        copied: metrics.num_target_rows_copied,
        files_scanned: metrics.num_target_files_scanned,
        files_skipped: metrics.num_target_files_skipped_during_scan,
        files_removed: metrics.num_target_files_removed,
        files_added: metrics.num_target_files_added,
        files_after: files,
    };
    tracing::info!(model = %m.target, ?merge, "merge");
    Ok(Written {
        table: t,
        rows,
        merge: Some(merge),
    })
}

/// The data files of the table's current snapshot.
fn files_in(t: &DeltaTable) -> usize {
    t.snapshot().map(|s| s.log_data().num_files()).unwrap_or(0)
}

/// Whether a row of `t` could match a row of `source` in the MERGE: one with a key of
/// `source` among the rows whose `cluster_by` value `c` lies within `source`'s (the MERGE
/// joins on both, so it can match no other). Reads the key and cluster columns of the files
/// whose statistics overlap that range, and stops at the first hit.
async fn any_key_in(t: &DeltaTable, m: &Model, c: &str, source: DataFrame) -> Result<bool> {
    use deltalake::datafusion::common::{JoinType, ScalarValue};
    use deltalake::datafusion::functions_aggregate::expr_fn::{max, min};
    use deltalake::datafusion::prelude::lit;
    let bounds = source.clone().aggregate(vec![], vec![min(column(c)).alias("lo"), max(column(c)).alias("hi")])?.collect().await?;
    let Some(b) = bounds.first().filter(|b| b.num_rows() == 1) else { return Ok(false) };
    let (lo, hi) = (ScalarValue::try_from_array(b.column(0), 0)?, ScalarValue::try_from_array(b.column(1), 0)?);
    if lo.is_null() {
        return Ok(false);
    }
    let ours: Vec<String> = m.unique_key.iter().map(|k| format!("__source_{k}")).collect();
    let keys = source.select(m.unique_key.iter().zip(&ours).map(|(k, o)| column(k).alias(o)).collect::<Vec<_>>())?;
    let ctx = SessionContext::new();
    let theirs: Vec<&str> = m.unique_key.iter().map(String::as_str).collect();
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    let hits = ctx
        .read_table(t.table_provider().await?)?
        .filter(column(c).gt_eq(lit(lo)).and(column(c).lt_eq(lit(hi))))?
        .select(m.unique_key.iter().map(|k| column(k)).collect::<Vec<_>>())?
        .join(keys, JoinType::LeftSemi, &theirs, &ours, None)?
        .limit(0, Some(1))?
        .count()
        .await?;
    Ok(hits > 0)
}

/// What a MERGE touched (delta-rs's metrics): rows, and how many of the table's files it
/// scanned, skipped by their statistics, removed (rewritten) and added.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeStats {
    pub inserted: usize,
    pub updated: usize,
    pub copied: usize,
    pub files_scanned: usize,
    pub files_skipped: usize,
    pub files_removed: usize,
    pub files_added: usize,
    /// Files in the table after the commit.
    pub files_after: usize,
}

impl MergeStats {
    /// Sum of the slices of one MERGE (`files_after`: the last one's).
    fn add(&mut self, o: MergeStats) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.copied += o.copied;
        self.files_scanned += o.files_scanned;
        self.files_skipped += o.files_skipped;
        self.files_removed += o.files_removed;
        self.files_added += o.files_added;
        self.files_after = o.files_after;
    }
}

impl std::fmt::Display for MergeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "merge: {} new, {} updated, {} copied; files: {} read, {} skipped, {} rewritten, {} written ({} in table)",
            self.inserted,
            self.updated,
            self.copied,
            self.files_scanned,
            self.files_skipped,
            self.files_removed,
            self.files_added,
            self.files_after
        )
    }
}

/// The non-null values of string column `name` across `batches`.
fn strings<'a>(batches: &'a [RecordBatch], name: &'a str) -> impl Iterator<Item = String> + 'a {
    batches.iter().flat_map(move |b| {
        b.column_by_name(name)
            .and_then(|a| a.as_any().downcast_ref::<deltalake::arrow::array::StringArray>())
            .map(|a| a.iter().flatten().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    })
}


#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::kernel::Transaction;

    fn batch(rows: &[(Option<&str>, i64, Option<i64>, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("c", DataType::Int64, true),
            Field::new("o", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    async fn rows_of(t: &DeltaTable) -> Vec<String> {
        let ctx = SessionContext::new();
        let df = ctx.read_table(t.table_provider().await.unwrap()).unwrap();
        let text = deltalake::arrow::util::pretty::pretty_format_batches(&df.sort_by(vec![column("id"), column("c"), column("v")]).unwrap().collect().await.unwrap()).unwrap().to_string();
        text.lines().map(str::to_string).collect()
    }

    /// Our MERGE and delta-rs's, on copies of one four-file table and the same new rows,
    /// leave the same rows, count the same, and rewrite the same files.
    #[tokio::test]
    async fn our_merge_and_delta_rs_merge_leave_the_same_table() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let url = url::Url::from_directory_path(&base).unwrap();
        let mut t = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
        // Four files, cluster values 0-9, 10-19, 20-29, 30-39 (one commit each).
        for f in 0..4i64 {
            let rows: Vec<(String, i64, Option<i64>, String)> = (0..10)
                .map(|i| (format!("k{}", f * 10 + i), f * 10 + i, if i == 7 { None } else { Some(100) }, format!("old{}", f * 10 + i)))
                .collect();
            // Row 25 has no key (the new rows have a keyless row of cluster 25 as well).
            let refs: Vec<(Option<&str>, i64, Option<i64>, &str)> = rows.iter().map(|r| (Some(r.0.as_str()).filter(|_| r.1 != 25), r.1, r.2, r.3.as_str())).collect();
            t = t.write(vec![batch(&refs)]).await.unwrap();
        }
        // Only the third and fourth files can hold a match (cluster 20..39).
        let new = batch(&[
            (Some("k20"), 20, Some(101), "newer"),      // updated
            (Some("k21"), 21, Some(99), "older"),       // the table's row is newer: kept
            (Some("k22"), 22, Some(100), "same age"),   // equal order_by: updated
            (Some("k23"), 23, None, "no order"),        // NULL never replaces a set order_by: kept
            (Some("k27"), 27, Some(1), "over a null"),  // the table's order_by is NULL: updated
            (Some("k31"), 20, Some(200), "moved"),      // another cluster value: no match, inserted
            (None, 25, Some(1), "no key"),              // a NULL key never matches: inserted
            (Some("n1"), 26, Some(1), "brand new"),     // inserted
        ]);
        let m = crate::transform::model::parse("x.sql", "-- target: silver.t\n-- unique_key: id\n-- order_by: o\n-- cluster_by: c\nSELECT 1").unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let (mut results, mut tables) = (Vec::new(), Vec::new());
        for ours in [true, false] {
            let copy = dir.path().join(if ours { "ours" } else { "theirs" });
            std::process::Command::new("cp").arg("-r").arg(&base).arg(&copy).status().unwrap();
            let url = url::Url::from_directory_path(&copy).unwrap();
            let mut t = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
            t.load().await.unwrap();
            let commit = Commit { txn: Some(Transaction::new("test", 1)), meta: serde_json::json!({}) };
            let w = if ours {
                match rewrite::merge(&m, &t, std::slice::from_ref(&new), &commit).await.unwrap() {
                    Outcome::Done(w) => w,
                    Outcome::NoMatch => panic!("ours found no match"),
                    Outcome::Unsupported(why) => panic!("ours did not apply: {why}"),
                }
            } else {
                let df = SessionContext::new().read_batch(new.clone()).unwrap();
                merge_with(&lake, &m, t, (df, false), commit, false).await.unwrap()
            };
            let s = w.merge.unwrap();
            let txn = w.table.snapshot().unwrap().transaction_version(w.table.log_store().as_ref(), "test").await.unwrap();
            results.push((rows_of(&w.table).await, (s.inserted, s.updated, s.copied, s.files_removed, s.files_after), txn));
            tables.push(w.table);
        }
        assert_eq!(results[0], results[1], "ours (left) and delta-rs's (right)");
        let (rows, stats, txn) = &results[0];
        assert_eq!(*stats, (3, 3, 7, 1, 4), "3 new, 3 updated, 7 copied; only the file of cluster 20..29 rewritten");
        assert_eq!(*txn, Some(1));
        for want in ["newer", "old21", "same age", "old23", "over a null", "moved", "no key", "old25", "brand new", "old0"] {
            assert!(rows.iter().any(|r| r.contains(want)), "{want} in {rows:#?}");
        }
        assert!(!rows.iter().any(|r| r.contains("older") || r.contains("no order")), "{rows:#?}");

        // A second merge by ours into both results: delta-rs's MERGE wrote its file with
        // string views, which ours reads as the table's strings.
        let again = batch(&[(Some("k24"), 24, Some(300), "second"), (Some("n2"), 28, Some(1), "second new")]);
        let mut after = Vec::new();
        for t in &tables {
            let commit = Commit { txn: Some(Transaction::new("test", 2)), meta: serde_json::json!({}) };
            let Outcome::Done(w) = rewrite::merge(&m, t, std::slice::from_ref(&again), &commit).await.unwrap() else { panic!("ours applies to a table delta-rs's MERGE wrote") };
            after.push(rows_of(&w.table).await);
        }
        assert_eq!(after[0], after[1]);
        assert!(after[0].iter().any(|r| r.contains("second new")) && !after[0].iter().any(|r| r.contains("old24")));
    }

    /// A store whose log PUTs land and then answer as S3 answers a retried conditional PUT
    /// that had succeeded (412 → `AlreadyExists`), once armed.
    #[derive(Debug)]
    struct LostReply {
        inner: Arc<dyn object_store::ObjectStore>,
        armed: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for LostReply {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "LostReply({})", self.inner)
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for LostReply {
        async fn put_opts(&self, p: &object_store::path::Path, payload: object_store::PutPayload, o: object_store::PutOptions) -> object_store::Result<object_store::PutResult> {
            let log = p.as_ref().contains("_delta_log/") && p.as_ref().ends_with(".json") && o.mode == object_store::PutMode::Create;
            let r = self.inner.put_opts(p, payload, o).await?;
            if log && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::AlreadyExists { path: p.to_string(), source: "412 Precondition Failed (the first attempt's PUT had landed)".into() });
            }
            Ok(r)
        }
        async fn put_multipart_opts(&self, p: &object_store::path::Path, o: object_store::PutMultipartOptions) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(&self, p: &object_store::path::Path, o: object_store::GetOptions) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(p, o).await
        }
        fn delete_stream(&self, l: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&object_store::path::Path>) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&object_store::path::Path>) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, a: &object_store::path::Path, b: &object_store::path::Path, o: object_store::CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(a, b, o).await
        }
    }

    /// Issue 26, item 2: the log PUT of our MERGE lands but the client is told 412. The
    /// version is ours (its txn), so the files it references must stay: the merge reports
    /// done and the table reads whole, with the new rows.
    #[tokio::test]
    async fn a_commit_reported_failed_but_landed_keeps_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("t");
        std::fs::create_dir_all(&base).unwrap();
        let url = url::Url::from_directory_path(&base).unwrap();
        let store = Arc::new(LostReply { inner: Arc::new(object_store::local::LocalFileSystem::new()), armed: false.into() });
        let mut t = deltalake::DeltaTableBuilder::from_url(url.clone()).unwrap().with_storage_backend(store.clone(), url).build().unwrap();
        for f in 0..2i64 {
            let rows: Vec<(String, i64, Option<i64>, String)> = (0..10).map(|i| (format!("k{}", f * 10 + i), f * 10 + i, Some(100), format!("old{}", f * 10 + i))).collect();
            let refs: Vec<(Option<&str>, i64, Option<i64>, &str)> = rows.iter().map(|r| (Some(r.0.as_str()), r.1, r.2, r.3.as_str())).collect();
            t = t.write(vec![batch(&refs)]).await.unwrap();
        }
        let m = crate::transform::model::parse("x.sql", "-- target: silver.t\n-- unique_key: id\n-- order_by: o\n-- cluster_by: c\nSELECT 1").unwrap();
        let new = batch(&[(Some("k3"), 3, Some(101), "newer"), (Some("n1"), 4, Some(1), "brand new")]);
        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let commit = Commit { txn: Some(Transaction::new("test", 7)), meta: serde_json::json!({}) };
        let w = match rewrite::merge(&m, &t, std::slice::from_ref(&new), &commit).await.unwrap() {
            Outcome::Done(w) => w,
            _ => panic!("ours did not apply"),
        };
        store.armed.store(false, std::sync::atomic::Ordering::SeqCst);
        let snap = w.table.snapshot().unwrap();
        let files: Vec<String> = snap.log_data().iter().map(|f| f.path().to_string()).collect();
        assert!(!files.is_empty());
        for f in &files {
            assert!(base.join(f).is_file(), "{f}: referenced by the committed version but deleted");
        }
        assert_eq!(snap.transaction_version(w.table.log_store().as_ref(), "test").await.unwrap(), Some(7));
        let rows = rows_of(&w.table).await;
        assert!(rows.iter().any(|r| r.contains("newer")) && rows.iter().any(|r| r.contains("brand new")), "{rows:#?}");
    }
}
