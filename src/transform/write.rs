//! Writing a model's output into its Delta table: dedupe by unique key (latest by `order_by`,
//! then landing order), types Delta/Athena/DuckDB accept, then MERGE / append / overwrite with
//! the model's watermark as an application transaction in the same commit.
use super::model::{Mode, Model};
use crate::error::Result;
use crate::lake::Lake;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use deltalake::datafusion::prelude::{cast, col, DataFrame, Expr, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use std::sync::Arc;

pub fn txn_app(m: &Model) -> String {
    format!("ingest-model/{}", m.target)
}

/// Keep one row per unique key: the latest by `order_by`, then by `_ingest_order`.
pub async fn dedupe(ctx: &SessionContext, m: &Model, df: DataFrame) -> Result<DataFrame> {
    let cols: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let has_order = cols.iter().any(|c| c == "_ingest_order");
    if m.mode != Mode::Merge {
        return Ok(if has_order {
            df.drop_columns(&["_ingest_order"])?
        } else {
            df
        });
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
    let mut order = Vec::new();
    if let Some(o) = &m.order_by {
        if !cols.contains(o) {
            return Err(m.err_at(Some(1), format!("order_by column `{o}` is not in the model's output")));
        }
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
    if has_order {
        drop.push("_ingest_order");
    }
    Ok(ctx.sql(&sql).await?.drop_columns(&drop)?)
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

pub fn normalize(df: DataFrame) -> Result<DataFrame> {
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .filter_map(|f| delta_expr(col(format!("\"{}\"", f.name())), f.data_type()).map(|e| e.alias(f.name())))
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
                let c = col(format!("\"{}\"", f.name()));
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
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    let current = recast(ctx.read_table(t.table_provider().await?)?, &tgt_cast)?;
    let batches = current.collect().await?;
    let mut w = t
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite);
    if !m.partition_by.is_empty() {
        w = w.with_partition_columns(m.partition_by.clone());
    }
    Ok((w.await?, df))
}

pub struct Written {
    pub table_version: i64,
    pub rows: usize,
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

/// Write `df` into the model's table with `props` (txn + metadata) in the same commit.
pub async fn write(
    lake: &Lake,
    m: &Model,
    existing: Option<DeltaTable>,
    df: DataFrame,
    props: CommitProperties,
    full_refresh: bool,
) -> Result<Written> {
    let config = [
        ("delta.checkpointInterval".to_string(), Some("20".to_string())),
        (
            "delta.logRetentionDuration".to_string(),
            Some("interval 30 days".to_string()),
        ),
    ];
    let (existing, df) = match existing {
        Some(t) if !full_refresh && m.mode != Mode::Replace => {
            let (t, df) = align(m, t, df).await?;
            (Some(t), df)
        }
        other => (other, df),
    };
    match (existing, m.mode) {
        (Some(t), Mode::Merge) if !full_refresh => {
            let cols: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
            let rows = df.clone().count().await?;
            let mut pred: Vec<String> = m
                .unique_key
                .iter()
                .map(|k| format!("target.`{k}` = source.`{k}`"))
                .collect();
            for p in &m.partition_by {
                // Literal partition values in the join condition keep untouched files out of the rewrite.
                let vals = df.clone().select_columns(&[p.as_str()])?.distinct()?.collect().await?;
                let mut lits = Vec::new();
                for b in &vals {
                    if let Some(a) = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<deltalake::arrow::array::StringArray>()
                    {
                        lits.extend(a.iter().flatten().map(|v| format!("'{}'", v.replace('\'', "''"))));
                    }
                }
                if !lits.is_empty() && lits.len() <= 1000 {
                    pred.push(format!("target.`{p}` IN ({})", lits.join(", ")));
                }
            }
            let newer = m
                .order_by
                .as_ref()
                            // A NULL order_by never replaces a row that has one.
            .map(|o| format!("source.`{o}` >= target.`{o}` OR target.`{o}` IS NULL"));
            let (t, _metrics) = t
                .merge(df, pred.join(" AND "))
                .with_source_alias("source")
                .with_target_alias("target")
                .with_merge_schema(true)
                .with_commit_properties(props)
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
            Ok(Written {
                table_version: t.version().unwrap_or(0) as i64,
                rows,
            })
        }
        (existing, mode) => {
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut batches: Vec<RecordBatch> = df.collect().await?;
            let rows = batches.iter().map(|b| b.num_rows()).sum();
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
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
                .write(batches)
                .with_save_mode(save)
                .with_schema_mode(schema_mode)
                .with_table_name(m.target.replace('.', "_"))
                .with_configuration(config)
                .with_commit_properties(props);
            if !m.partition_by.is_empty() {
                w = w.with_partition_columns(m.partition_by.clone());
            }
            // Typed, so the caller tells a lost commit race from a failure.
            let t = w.await?;
            Ok(Written {
                table_version: t.version().unwrap_or(0) as i64,
                rows,
            })
        }
    }
}
