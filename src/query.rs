//! `ingest query` and `ingest ddl athena`: every Delta table of the lake (`schema.table`,
//! plus `_ingest.catalogue`) and every raw stream (`raw.<source>_<stream>`) registered in
//! one DataFusion session. Reads only.
use crate::error::{Error, Result};
use crate::lake::state::{self, open_table};
use crate::lake::Lake;
use crate::transform::raw;
use deltalake::arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::prelude::SessionContext;
use std::sync::Arc;


/// A session with every Delta table registered, and the raw streams `sql` refers to (raw
/// streams are decoded into memory, so only those a statement reads are loaded).
pub async fn context(lake: &Lake, sql: &str) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    crate::transform::functions::register(&ctx);
    let cat = ctx.catalog("datafusion").expect("default catalog");
    for rel in state::delta_tables(lake).await? {
        let (s, t) = rel.split_once('/').unwrap();
        if cat.schema(s).is_none() {
            cat.register_schema(s, Arc::new(MemorySchemaProvider::new()))?;
        }
        let table = open_table(lake, &rel).await?.unwrap();
        table.update_datafusion_session(&ctx.state())?;
        ctx.register_table(format!("{s}.{t}").as_str(), table.table_provider().await?)?;
    }
    let rows = state::read_catalogue(lake, None).await?;
    if cat.schema("raw").is_none() {
        cat.register_schema("raw", Arc::new(MemorySchemaProvider::new()))?;
    }
    let state = ctx.state();
    let wanted: Vec<String> = state
        .sql_to_statement(sql, &deltalake::datafusion::config::Dialect::Generic)
        .and_then(|stmt| state.resolve_table_references(&stmt))
        .map(|refs| refs.iter().map(|r| r.to_string().to_lowercase()).collect())
        .map_err(|e| Error::Usage(format!("query: {e}")))?;
    for (name, files) in raw::streams(&rows) {
        if !wanted.contains(&name) {
            continue;
        }
        let data_schema = Arc::new(raw::stream_schema(lake, &files, &deltalake::arrow::datatypes::Schema::empty()).await?);
        ctx.register_table(name.as_str(), Arc::new(raw::RawTable::new(lake, &files, data_schema)))?;
    }
    Ok(ctx)
}

pub async fn query(lake: &Lake, sql: &str, format: &str) -> Result<String> {
    let ctx = context(lake, sql).await?;
    let df = ctx.sql(sql).await.map_err(|e| Error::Usage(format!("query: {e}")))?;
    let batches = df.collect().await?;
    Ok(match format {
        "csv" => {
            let mut w = deltalake::arrow::csv::Writer::new(Vec::new());
            for b in &batches {
                w.write(&flatten_nested(b)?)?;
            }
            String::from_utf8_lossy(&w.into_inner()).to_string()
        }
        "json" => {
            let mut w = deltalake::arrow::json::LineDelimitedWriter::new(Vec::new());
            let refs: Vec<_> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            String::from_utf8_lossy(&w.into_inner()).to_string()
        }
        _ => format!("{}\n", pretty_format_batches(&batches)?),
    })
}

/// CSV has no nested values: structs, lists and maps are written as their text form.
pub fn flatten_nested(b: &deltalake::arrow::array::RecordBatch) -> Result<deltalake::arrow::array::RecordBatch> {
    use deltalake::arrow::array::{ArrayRef, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
            let v: StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(std::sync::Arc::new(v));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    Ok(deltalake::arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        cols,
    )?)
}

/// `CREATE EXTERNAL TABLE` statements for Athena engine v3 (Delta tables need no columns).
pub async fn athena_ddl(lake: &Lake, database: &str) -> Result<String> {
    let mut out = String::new();
    for rel in state::delta_tables(lake).await? {
        if rel.starts_with('_') {
            continue;
        }
        let name = rel.replace('/', "_");
        let loc = lake.table_url(&rel).to_string().replace("s3a://", "s3://");
        out.push_str(&format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{name}\nLOCATION '{}'\nTBLPROPERTIES ('table_type' = 'DELTA');\n\n",
            loc.trim_end_matches('/')
        ));
    }
    Ok(out)
}
