//! `ingest transform`: SQL models over raw streams and other models, in dependency order.
//! Every model is planned before anything is written (bad SQL exits 2 naming file and line);
//! then each reads only the landed files it has not consumed, dedupes, and MERGEs into its
//! Delta table with the catalogue position it consumed as a Delta application transaction.
pub mod model;
pub mod raw;
mod write;

use crate::error::{Error, Result};
use crate::lake::state::{self, LandedFile};
use crate::lake::Lake;
use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use model::{Mode, Model};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct TransformOptions {
    /// Only these targets (and what they need); all when empty.
    pub models: Vec<String>,
    pub full_refresh: bool,
}

#[derive(Debug, Clone)]
pub struct ModelReport {
    pub target: String,
    pub files: usize,
    pub rows: usize,
    pub table_version: Option<i64>,
    pub note: String,
    pub elapsed: Duration,
}

/// Tables a model's SQL refers to, lower-cased `schema.table` (or bare names).
fn references(ctx: &SessionContext, m: &Model) -> Result<Vec<String>> {
    let state = ctx.state();
    let stmt = state
        .sql_to_statement(&m.sql, &deltalake::datafusion::config::Dialect::Generic)
        .map_err(|e| sql_error(m, &e.to_string()))?;
    let refs = state
        .resolve_table_references(&stmt)
        .map_err(|e| sql_error(m, &e.to_string()))?;
    Ok(refs.iter().map(|r| r.to_string().to_lowercase()).collect())
}

/// A DataFusion error as a file:line configuration error.
fn sql_error(m: &Model, msg: &str) -> Error {
    // sqlparser: "... at Line: 3, Column: 5"
    let line = msg
        .split("Line: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .map(|l| l + m.sql_line - 1)
        .or_else(|| {
            msg.contains("found: EOF")
                .then(|| m.sql_line + m.sql.lines().count() - 1)
        })
        .or_else(|| {
            // "table 'x' not found", "No field named y"
            let quoted: Vec<&str> = msg.split(['\'', '"', '`']).collect();
            quoted
                .iter()
                .skip(1)
                .step_by(2)
                .filter_map(|q| m.line_of(q.rsplit('.').next().unwrap_or(q)))
                .next()
        })
        .or(Some(m.sql_line));
    Error::config(&m.file, line, None, msg.lines().next().unwrap_or(msg).to_string())
}

/// Order models so each runs after the models it reads; the named ones plus what they need.
fn order(models: &[Model], refs: &BTreeMap<String, Vec<String>>, wanted: &[String]) -> Result<Vec<Model>> {
    let by_target: BTreeMap<&str, &Model> = models.iter().map(|m| (m.target.as_str(), m)).collect();
    for w in wanted {
        if !by_target.contains_key(w.as_str()) {
            return Err(Error::Usage(format!(
                "no model builds `{w}` (models: {})",
                by_target.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut out: Vec<Model> = Vec::new();
    let mut state: BTreeMap<String, u8> = BTreeMap::new(); // 1 visiting, 2 done
    fn visit(
        t: &str,
        by: &BTreeMap<&str, &Model>,
        refs: &BTreeMap<String, Vec<String>>,
        st: &mut BTreeMap<String, u8>,
        out: &mut Vec<Model>,
    ) -> Result<()> {
        match st.get(t) {
            Some(2) => return Ok(()),
            Some(_) => return Err(by[t].err_at(Some(1), format!("models form a cycle through {t}"))),
            None => {}
        }
        st.insert(t.to_string(), 1);
        for r in &refs[t] {
            if by.contains_key(r.as_str()) && r != t {
                visit(r, by, refs, st, out)?;
            }
        }
        st.insert(t.to_string(), 2);
        out.push(by[t].clone());
        Ok(())
    }
    let roots: Vec<String> = if wanted.is_empty() {
        models.iter().map(|m| m.target.clone()).collect()
    } else {
        wanted.to_vec()
    };
    for r in roots {
        visit(&r, &by_target, refs, &mut state, &mut out)?;
    }
    Ok(out)
}

fn ensure_schema(ctx: &SessionContext, name: &str) {
    let cat = ctx.catalog("datafusion").expect("default catalog");
    if cat.schema(name).is_none() {
        let _ = cat.register_schema(name, Arc::new(MemorySchemaProvider::new()));
    }
}

/// Register `name` (`schema.table`) as `provider`, replacing an earlier registration.
fn register(
    ctx: &SessionContext,
    name: &str,
    provider: Arc<dyn deltalake::datafusion::catalog::TableProvider>,
) -> Result<()> {
    if let Some((s, _)) = name.split_once('.') {
        ensure_schema(ctx, s);
    }
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, provider)?;
    Ok(())
}

async fn register_delta(ctx: &SessionContext, name: &str, t: &deltalake::DeltaTable) -> Result<()> {
    t.update_datafusion_session(&ctx.state())?;
    register(ctx, name, t.table_provider().await?)
}

async fn register_raw(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    files: &[LandedFile],
    schema_from: &[LandedFile],
) -> Result<()> {
    let loaded = match raw::load(lake, files).await? {
        Some(x) => x,
        None => {
            // No new file: an empty table with the schema of the latest file.
            let (schema, _) = raw::load(lake, &schema_from[schema_from.len() - 1..])
                .await?
                .expect("a file");
            (schema, vec![])
        }
    };
    let mem = MemTable::try_new(loaded.0, vec![loaded.1])?;
    register(ctx, name, Arc::new(mem))
}

pub async fn transform(lake: &Lake, sql_dir: &std::path::Path, opts: &TransformOptions) -> Result<Vec<ModelReport>> {
    let all = model::load_dir(sql_dir)?;
    let ctx = SessionContext::new();
    let mut refs = BTreeMap::new();
    for m in &all {
        refs.insert(m.target.clone(), references(&ctx, m)?);
    }
    let models = order(&all, &refs, &opts.models)?;
    let catalogue = state::read_catalogue(lake, None).await?;
    let streams = raw::streams(&catalogue);
    let max_seq = catalogue.iter().map(|r| r.seq).max().unwrap_or(0);
    let targets: BTreeSet<&str> = all.iter().map(|m| m.target.as_str()).collect();

    // Plan every model before writing anything: inputs get their real schemas, model
    // outputs an empty table of the planned schema.
    let mut runnable = Vec::new();
    let mut reports = Vec::new();
    for m in &models {
        let mut missing = Vec::new();
        for r in &refs[&m.target] {
            if let Some(files) = streams.get(r) {
                register_raw(&ctx, lake, r, &[], files).await?;
            } else if targets.contains(r.as_str()) {
                // Registered below when its model is planned (or skipped).
                if ctx.table_exist(r.as_str())? {
                    continue;
                }
                missing.push(r.clone());
            } else if r.starts_with("raw.") {
                // A source that has landed streams but not this one: a typo, not "not yet".
                let sources: BTreeSet<&str> = catalogue.iter().map(|c| c.source.as_str()).collect();
                if sources.iter().any(|s| r.starts_with(&format!("raw.{s}_"))) {
                    let known: Vec<&str> = streams.keys().map(String::as_str).collect();
                    return Err(sql_error(
                        m,
                        &format!("unknown table '{r}' (raw streams: {})", known.join(", ")),
                    ));
                }
                missing.push(r.clone());
            } else if let Some(t) = state::open_table(lake, &r.replace('.', "/")).await? {
                register_delta(&ctx, r, &t).await?;
            } else {
                return Err(sql_error(
                    m,
                    &format!(
                        "unknown table '{r}': neither a raw stream that has landed, a model, nor a table in the lake"
                    ),
                ));
            }
        }
        if !missing.is_empty() {
            reports.push(ModelReport {
                target: m.target.clone(),
                files: 0,
                rows: 0,
                table_version: None,
                note: format!("skipped: nothing landed yet for {}", missing.join(", ")),
                elapsed: Duration::ZERO,
            });
            continue;
        }
        let df = ctx.sql(&m.sql).await.map_err(|e| sql_error(m, &e.to_string()))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        register(&ctx, &m.target, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        runnable.push(m.clone());
    }

    let run_id = uuid::Uuid::new_v4().to_string();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for m in &runnable {
        let started = Instant::now();
        let existing = state::open_table(lake, &m.table_rel()).await?;
        let consumed = match (&existing, opts.full_refresh, m.mode) {
            (Some(t), false, Mode::Merge | Mode::Append) => t
                .snapshot()?
                .transaction_version(t.log_store().as_ref(), write::txn_app(m))
                .await?
                .unwrap_or(-1),
            _ => -1,
        };
        let mut files_read: Vec<String> = Vec::new();
        let mut has_raw = false;
        for r in &refs[&m.target] {
            if let Some(files) = streams.get(r) {
                has_raw = true;
                let new: Vec<LandedFile> = files.iter().filter(|f| f.seq > consumed).cloned().collect();
                files_read.extend(new.iter().filter_map(|f| f.path.clone()));
                register_raw(&ctx, lake, r, &new, files).await?;
            } else if let Some(t) = state::open_table(lake, &r.replace('.', "/")).await? {
                register_delta(&ctx, r, &t).await?;
            }
        }
        let upstream_changed = refs[&m.target].iter().any(|r| changed.contains(r));
        let idle = if m.mode == Mode::Replace {
            !has_raw && !upstream_changed && existing.is_some() && !opts.full_refresh
        } else {
            has_raw && files_read.is_empty()
        };
        if idle {
            if let Some(t) = &existing {
                register_delta(&ctx, &m.target, t).await?;
            }
            reports.push(ModelReport {
                target: m.target.clone(),
                files: 0,
                rows: 0,
                table_version: existing.as_ref().and_then(|t| t.version()).map(|v| v as i64),
                note: "up to date".into(),
                elapsed: started.elapsed(),
            });
            continue;
        }
        let df = ctx.sql(&m.sql).await.map_err(|e| sql_error(m, &e.to_string()))?;
        let df = write::dedupe(&ctx, m, df).await?;
        let df = write::normalize(df)?;
        let meta = serde_json::json!({"run_id": run_id, "model": m.target, "mode": format!("{:?}", m.mode).to_lowercase(), "catalogue_seq": max_seq, "files": files_read});
        let props = CommitProperties::default()
            .with_application_transaction(Transaction::new(write::txn_app(m), max_seq))
            .with_metadata(vec![("ingest".to_string(), meta)])
            // Never rebase onto a concurrent commit: two runs of one model cannot both apply.
            .with_max_retries(0);
        let written = write::write(lake, m, existing, df, props, opts.full_refresh).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Failed to commit") || msg.contains("already exists") || msg.contains("commit attempts") {
                Error::Lake(format!("{}: another run committed to this table first; nothing of this run was applied to it, rerun to continue ({msg})", m.target))
            } else {
                e
            }
        })?;
        tracing::info!(model = %m.target, files = files_read.len(), rows = written.rows, version = written.table_version, "model written");
        let t = state::open_table(lake, &m.table_rel())
            .await?
            .ok_or_else(|| Error::Lake(format!("{} vanished", m.target)))?;
        register_delta(&ctx, &m.target, &t).await?;
        changed.insert(m.target.clone());
        reports.push(ModelReport {
            target: m.target.clone(),
            files: files_read.len(),
            rows: written.rows,
            table_version: Some(written.table_version),
            note: format!("{:?}", m.mode).to_lowercase(),
            elapsed: started.elapsed(),
        });
    }
    Ok(reports)
}

pub fn render(reports: &[ModelReport]) -> String {
    let mut out = format!(
        "{:<40} {:>6} {:>9} {:>8} {:>7}  {}\n",
        "model", "files", "rows", "version", "time", ""
    );
    for r in reports {
        out.push_str(&format!(
            "{:<40} {:>6} {:>9} {:>8} {:>6.1}s  {}\n",
            r.target,
            r.files,
            r.rows,
            r.table_version.map_or("-".into(), |v| v.to_string()),
            r.elapsed.as_secs_f64(),
            r.note
        ));
    }
    out
}
