//! Writing a model's output into its Delta table: dedupe by unique key (latest by `order_by`,
//! then landing order), types Delta/Athena/DuckDB accept, then MERGE / append / overwrite with
//! the model's watermark as an application transaction in the same commit.
use super::model::{Mode, Model};
use crate::error::Result;
use crate::lake::Lake;
use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use deltalake::datafusion::prelude::{cast, col, DataFrame, Expr, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use output::{one_shot, one_stream};
pub use merge::MergeStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod merge;
mod output;
mod rewrite;
mod slices;

/// Keep one row per unique key: the latest by `order_by`, then by `_ingest_order`. `hash`:
/// the input fits in memory, so keep the winners in a hash table ([`super::latest::latest`])
/// instead of sorting every row ([`super::latest::sorted`], which spills under a memory limit).
/// Also says whether the rows already come in `cluster_by` order (the hash path gathers its
/// winners in it), so [`write`] does not sort them again.
pub async fn dedupe(ctx: &SessionContext, m: &Model, df: DataFrame, hash: bool) -> Result<(DataFrame, bool)> {
    let cols: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let has_order = cols.iter().any(|c| c == "_ingest_order");
    // A model with an output keeps `_ingest_order` in its table: it tells which rows each
    // commit merged (`export::outputs`).
    let drop_order = has_order && m.output.is_none();
    if let Some(c) = m.cluster_by.as_ref().filter(|c| !cols.contains(c)) {
        return Err(m.err_at(Some(1), format!("cluster_by column `{c}` is not in the model's output ({})", cols.join(", "))));
    }
    if m.mode != Mode::Merge {
        return Ok((if drop_order { df.drop_columns(&["_ingest_order"])? } else { df }, false));
    }
    for k in &m.unique_key {
        if !cols.contains(k) {
            return Err(m.err_at(
                Some(1),
                format!(
                    "unique_key column `{k}` is not in the model's output ({})",
                    cols.join(", ")
                ),
            ));
        }
    }
    if let Some(o) = m.order_by.as_ref().filter(|o| !cols.contains(o)) {
        return Err(m.err_at(Some(1), format!("order_by column `{o}` is not in the model's output")));
    }
    use deltalake::arrow::compute::SortOptions;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let at = |c: &str| schema.index_of(c).map_err(|e| crate::Error::Other(e.to_string()));
    let latest_first = SortOptions { descending: true, nulls_first: false };
    let mut order = Vec::new();
    if let Some(o) = &m.order_by {
        order.push((at(o)?, latest_first));
    }
    if has_order {
        order.push((at("_ingest_order")?, latest_first));
    }
    let spec = super::latest::Spec {
        keys: m.unique_key.iter().map(|k| at(k)).collect::<Result<_>>()?,
        order,
        batch_size: ctx.state().config().batch_size(),
        cluster: match (&m.cluster_by, hash) {
            (Some(c), true) => Some(at(c)?),
            _ => None,
        },
    };
    if !spec.keys.is_empty() && super::latest::supported(&schema, &spec) {
        let task = ctx.task_ctx();
        let clustered = spec.cluster.is_some();
        let plan = df.create_physical_plan().await?;
        let parts = if hash {
            let input = deltalake::datafusion::physical_plan::execute_stream(plan, task.clone())?;
            let reservation = deltalake::datafusion::execution::memory_pool::MemoryConsumer::new(format!("dedupe {}", m.target))
                .register(task.memory_pool());
            vec![super::latest::latest(input, spec, reservation)]
        } else {
            super::latest::sorted(plan, &spec, ctx.state().config().target_partitions(), task)?
        };
        let df = ctx.read_table(Arc::new(one_shot(schema, parts)?))?;
        let df = if drop_order { df.drop_columns(&["_ingest_order"])? } else { df };
        return Ok((df, clustered));
    }
    // Keys without a row format (nested types): DataFusion's window.
    let mut order = Vec::new();
    if let Some(o) = &m.order_by {
        order.push(format!("\"{o}\" DESC NULLS LAST"));
    }
    if has_order {
        order.push("\"_ingest_order\" DESC".into());
    }
    if order.is_empty() {
        order.push("1".into());
    }
    let view = format!("__out_{}", m.target.replace('.', "_"));
    let _ = ctx.deregister_table(view.as_str());
    ctx.register_table(view.as_str(), df.into_view())?;
    let keys: Vec<String> = m.unique_key.iter().map(|k| format!("\"{k}\"")).collect();
    let sql = format!(
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {}) AS __rn FROM {view}) WHERE __rn = 1",
        keys.join(", "),
        order.join(", ")
    );
    let mut drop = vec!["__rn"];
    if drop_order {
        drop.push("_ingest_order");
    }
    Ok((ctx.sql(&sql).await?.drop_columns(&drop)?, false))
}

/// A type Delta stores and Athena / DuckDB read: UTC microsecond timestamps, signed
/// integers, no Null type.
fn delta_type(t: &DataType) -> DataType {
    match t {
        DataType::Null => DataType::Utf8,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => DataType::List(Arc::new(field(f))),
        DataType::Struct(fs) => DataType::Struct(Fields::from(fs.iter().map(|f| field(f)).collect::<Vec<_>>())),
        other => other.clone(),
    }
}

fn field(f: &Field) -> Field {
    Field::new(f.name(), delta_type(f.data_type()), true)
}

/// The expression writing `e` (of type `t`) as a Delta-friendly type; None drops it.
/// Fields that are always null (JSON `null`, inferred as the Null type) are left out until
/// a later file gives them a type: merge-schema then adds them instead of failing on a
/// string column that should have been a struct.
fn delta_expr(e: Expr, t: &DataType) -> Option<Expr> {
    use deltalake::datafusion::functions::core::expr_fn::{get_field, named_struct};
    use deltalake::datafusion::prelude::{lit, when};
    match t {
        DataType::Null => None,
        DataType::Struct(fields) => {
            let mut parts = Vec::new();
            for f in fields {
                if let Some(x) = delta_expr(get_field(e.clone(), f.name().as_str()), f.data_type()) {
                    parts.push(lit(f.name().as_str()));
                    parts.push(x);
                }
            }
            if parts.is_empty() {
                return None;
            }
            let built = named_struct(parts);
            Some(
                when(e.is_null(), lit(deltalake::datafusion::scalar::ScalarValue::Null))
                    .otherwise(built)
                    .ok()?,
            )
        }
        other => {
            let want = delta_type(other);
            Some(if &want == other { e } else { cast(e, want) })
        }
    }
}

/// The column named `name` as written (quoted: names are case-sensitive and may hold dots).
fn column(name: &str) -> Expr {
    col(format!("\"{name}\""))
}

pub fn normalize(df: DataFrame) -> Result<DataFrame> {
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .filter_map(|f| delta_expr(column(f.name()), f.data_type()).map(|e| e.alias(f.name())))
        .collect();
    Ok(df.select(exprs)?)
}

fn simple(t: &DataType) -> bool {
    matches!(t, DataType::Boolean | DataType::Int64 | DataType::Float64 | DataType::Utf8)
}

/// A column whose type changed between runs (int → float → string): the new rows are cast
/// up to the table's type, or — when the new type is the wider one — the table is first
/// rewritten with the column widened (its own commit; the model's txn is not touched, so a
/// crash in between only means the rewrite is redone as a no-op). Delta cannot widen a
/// column in place for readers at protocol 1.
async fn align(m: &Model, t: DeltaTable, df: DataFrame) -> Result<(DeltaTable, DataFrame)> {
    let target = t.table_provider().await?.schema();
    let mut src_cast: Vec<(String, DataType)> = Vec::new();
    let mut tgt_cast: Vec<(String, DataType)> = Vec::new();
    for f in df.schema().fields() {
        let Ok(tf) = target.field_with_name(f.name()) else { continue };
        let (st, tt) = (f.data_type(), tf.data_type());
        if st == tt || !simple(st) || !simple(tt) {
            continue;
        }
        let w = crate::lake::schema::widen(tt, st);
        if &w != st {
            src_cast.push((f.name().clone(), w.clone()));
        }
        if &w != tt {
            tgt_cast.push((f.name().clone(), w));
        }
    }
    let recast = |d: DataFrame, casts: &[(String, DataType)]| -> Result<DataFrame> {
        if casts.is_empty() {
            return Ok(d);
        }
        let exprs: Vec<Expr> = d
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let c = column(f.name());
                match casts.iter().find(|(n, _)| n == f.name()) {
                    Some((_, t)) => cast(c, t.clone()).alias(f.name()),
                    None => c,
                }
            })
            .collect();
        Ok(d.select(exprs)?)
    };
    let df = recast(df, &src_cast)?;
    if tgt_cast.is_empty() {
        return Ok((t, df));
    }
    let names: Vec<&str> = tgt_cast.iter().map(|(n, _)| n.as_str()).collect();
    tracing::warn!(model = %m.target, columns = ?names, "a column's type widened; rewriting the table with the wider type");
    // Streamed from the table's files into the writer, in the run's session (its memory
    // limit): the table is never held whole.
    let ctx = deltalake::datafusion::prelude::SessionContext::new_with_state(df.clone().into_parts().0);
    t.update_datafusion_session(&ctx.state())?;
    let current = recast(ctx.read_table(t.table_provider().await?)?, &tgt_cast)?;
    let (state, plan, _, props) = output::one_stream(current).await?;
    let mut w = t
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(Arc::new(state))
        .with_writer_properties(props)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite);
    if !m.partition_by.is_empty() {
        w = w.with_partition_columns(m.partition_by.clone());
    }
    Ok((w.await?, df))
}

/// What a model's commit carries besides its data: the model's txn (its consumed catalogue
/// position) and the run's metadata; never rebased onto a concurrent commit (two runs of one
/// model cannot both apply). `txn` is None only on the first slices of a sliced MERGE
/// ([`slices`]): the last slice's commit carries it.
pub struct Commit {
    pub txn: Option<deltalake::kernel::Transaction>,
    pub meta: serde_json::Value,
}

impl Commit {
    /// The commit's properties, with `extra` commit-info entries (a merge's metrics).
    pub fn props(&self, extra: impl IntoIterator<Item = (String, serde_json::Value)>) -> CommitProperties {
        let mut info = vec![("ingest".to_string(), self.meta.clone())];
        info.extend(extra);
        let mut p = CommitProperties::default();
        if let Some(t) = &self.txn {
            p = p.with_application_transaction(t.clone());
        }
        p.with_metadata(info).with_max_retries(0)
    }

    /// The commit of slice `i` of `n`: without the txn but for the last.
    pub fn slice(&self, i: usize, n: usize) -> Commit {
        let mut meta = self.meta.clone();
        meta["slice"] = serde_json::json!(format!("{}/{n}", i + 1));
        Commit { txn: self.txn.clone().filter(|_| i + 1 == n), meta }
    }
}

pub struct Written {
    /// The table as of this write's commit (what later models of the run read).
    pub table: DeltaTable,
    pub rows: usize,
    pub merge: Option<MergeStats>,
}

impl Written {
    /// The version this write committed.
    pub fn table_version(&self) -> i64 {
        self.table.version().unwrap_or(0) as i64
    }
}

fn builder(lake: &Lake, m: &Model) -> Result<DeltaTable> {
    let rel = m.table_rel();
    if let Some(d) = &lake.local_dir {
        std::fs::create_dir_all(d.join(&rel))?;
    }
    Ok(DeltaTableBuilder::from_url(lake.table_url(&rel))?
        .with_storage_backend(lake.store.clone(), lake.table_url(&rel))
        .build()?)
}

/// A first write that failed leaves no table behind: data files it wrote before failing are
/// removed with the folder, unless a commit made it a table meanwhile (another run's).
async fn remove_uncommitted(lake: &Lake, m: &Model) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let rel = m.table_rel();
    if !matches!(crate::lake::state::open_table(lake, &rel).await, Ok(None)) {
        return;
    }
    let listed: Vec<_> = lake.store.list(Some(&lake.path(&rel))).try_collect().await.unwrap_or_default();
    for o in listed {
        let _ = lake.store.delete(&o.location).await;
    }
    if let Some(d) = &lake.local_dir {
        let _ = std::fs::remove_dir_all(d.join(&rel));
    }
    tracing::info!(model = %m.target, "removed the files of a first write that failed");
}

/// The table property delta-rs reads its file size from (writes and MERGE alike).
const TARGET_FILE_SIZE: &str = "delta.targetFileSize";

/// A table made before its model declared `target_file_size` (or `cluster_by`) gets the
/// property first, in its own commit (the MERGE reads it from the table, not from a builder).
async fn file_size_property(m: &Model, t: DeltaTable) -> Result<DeltaTable> {
    let Some(n) = m.target_file_size else { return Ok(t) };
    let has = t.snapshot()?.metadata().configuration().get(TARGET_FILE_SIZE).cloned();
    if has.as_deref() == Some(n.to_string().as_str()) {
        return Ok(t);
    }
    let props = std::collections::HashMap::from([(TARGET_FILE_SIZE.to_string(), n.to_string())]);
    Ok(t.set_tbl_properties().with_properties(props).await?)
}

/// Write `df` into the model's table with `commit` (txn + metadata) in the same commit.
/// `clustered`: `df` is already in `cluster_by` order.
pub async fn write(
    lake: &Lake,
    m: &Model,
    existing: Option<DeltaTable>,
    (df, clustered): (DataFrame, bool),
    commit: Commit,
    full_refresh: bool,
) -> Result<Written> {
    let mut config = vec![
        ("delta.checkpointInterval".to_string(), Some("20".to_string())),
        (
            "delta.logRetentionDuration".to_string(),
            Some("interval 30 days".to_string()),
        ),
    ];
    if let Some(n) = m.target_file_size {
        // Read by every later write and MERGE of the table (delta-rs takes it from here).
        config.push((TARGET_FILE_SIZE.to_string(), Some(n.to_string())));
    }
    let (existing, df) = match existing {
        Some(t) if !full_refresh && m.mode != Mode::Replace => {
            let (t, df) = align(m, t, df).await?;
            (Some(t), df)
        }
        other => (other, df),
    };
    match (existing, m.mode) {
        (Some(t), Mode::Merge) if !full_refresh => merge::merge(lake, m, t, (df, clustered), commit).await,
        (existing, mode) => stream_write(lake, m, existing, (df, clustered), mode, commit.props([]), config, full_refresh).await,
    }
}

/// Write `df` whole (a full build, `replace`/`append` models, or a merge whose rows are all
/// new): streamed into the writer, in `cluster_by` order, with `config` on a new table.
#[allow(clippy::too_many_arguments)]
async fn stream_write(
    lake: &Lake,
    m: &Model,
    existing: Option<DeltaTable>,
    (df, clustered): (DataFrame, bool),
    mode: Mode,
    props: CommitProperties,
    config: Vec<(String, Option<String>)>,
    full_refresh: bool,
) -> Result<Written> {
    let df = match &m.cluster_by {
        Some(c) if !clustered => df.sort(vec![column(c).sort(true, true)])?,
        _ => df,
    };
    // Streamed into the writer: the output is never held whole (sorts above the raw
    // scan spill under --memory-limit; the writer holds a file at a time).
    let (state, plan, streamed, props_for_files) = one_stream(df).await?;
    let created = existing.is_none();
    let (t, save) = match existing {
        Some(t) if mode == Mode::Append && !full_refresh => (t, SaveMode::Append),
        Some(t) => (t, SaveMode::Overwrite),
        None => (builder(lake, m)?, SaveMode::Append),
    };
    let schema_mode = if save == SaveMode::Overwrite {
        deltalake::operations::write::SchemaMode::Overwrite
    } else {
        deltalake::operations::write::SchemaMode::Merge
    };
    let mut w = t
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(Arc::new(state))
        .with_save_mode(save)
        .with_schema_mode(schema_mode)
        .with_table_name(m.target.replace('.', "_"))
        .with_configuration(config)
        .with_commit_properties(props);
    if !m.partition_by.is_empty() {
        w = w.with_partition_columns(m.partition_by.clone());
    }
    if let Some(n) = m.target_file_size {
        w = w.with_target_file_size(std::num::NonZeroU64::new(n));
    }
    w = w.with_writer_properties(props_for_files);
    // Typed, so the caller tells a lost commit race from a failure.
    let t = match w.await {
        Ok(t) => t,
        Err(e) => {
            if created {
                remove_uncommitted(lake, m).await;
            }
            return Err(e.into());
        }
    };
    let rows = streamed.load(Ordering::Relaxed);
    Ok(Written {
        table: t,
        rows,
        merge: None,
    })
}
