//! `ingest transform`: SQL models over raw streams and other models, in dependency order.
//! Every model is planned before anything is written (bad SQL exits 2 naming file and line);
//! then each reads only the landed files it has not consumed, dedupes, and MERGEs into its
//! Delta table with the catalogue position it consumed as a Delta application transaction.
//!
//! Memory: raw files are scanned lazily ([`raw::RawTable`]); the dedupe keeps the latest row
//! per key in a hash table ([`latest`]) when the input surely fits under `--memory-limit`
//! (default half of the machine's memory), else sorts, spilling past the limit; both are
//! tracked by the session's memory pool. A full build streams its output
//! into delta-rs's writer (same session, so same pool) and a MERGE holds only the deduplicated
//! new rows (computed once: delta-rs reads its source more than once).
pub mod functions;
mod absent;
mod inputs;
mod latest;
pub mod model;
pub mod raw;
pub mod scaffold;
pub mod session;
mod write;

use crate::error::{Error, Result};
use crate::lake::state::{self, LandedFile};
use crate::lake::Lake;
use deltalake::DeltaTable;
use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use absent::{missing_field, missing_nested, schema_with_path};
use model::{Mode, Model};
use deltalake::arrow::datatypes::Schema;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct TransformOptions {
    /// Only these targets (and what they need); all when empty.
    pub models: Vec<String>,
    pub full_refresh: bool,
    /// Bytes the query engine's sorts and aggregations may hold before spilling to disk.
    pub memory_limit: Option<usize>,
    /// Where spill files go (None: the system's temp folder).
    pub temp_dir: Option<std::path::PathBuf>,
    /// The pipeline files whose declared stream schemas the raw tables get (None: none).
    pub pipelines: Option<std::path::PathBuf>,
    /// Plan every model against the declared schemas only: nothing read from the lake, nothing
    /// written (`ingest transform --check`).
    pub check: bool,
}

#[derive(Debug, Clone)]
pub struct ModelReport {
    pub target: String,
    pub files: usize,
    pub rows: usize,
    pub table_version: Option<i64>,
    pub note: String,
    pub elapsed: Duration,
    /// Why the model failed on its data (its table is untouched; dependents are skipped).
    pub failed: Option<String>,
}

impl ModelReport {
    /// A model that did not run (nothing landed, an input failed, `--check`); the base of the
    /// other reports.
    fn skipped(m: &Model, note: String) -> Self {
        ModelReport { target: m.target.clone(), files: 0, rows: 0, table_version: None, note, elapsed: Duration::ZERO, failed: None }
    }

    /// A model that could not plan: it fails alone, naming file, line and field.
    fn failed_to_plan(m: &Model, e: &Error) -> Self {
        let msg = crate::secret::redact(&format!("{}: {e}", m.target));
        tracing::error!(model = %m.target, "model cannot plan: {msg}");
        ModelReport { failed: Some(msg), ..Self::skipped(m, "FAILED (plan)".into()) }
    }
}

/// Whether any model failed (the command then exits 1).
pub fn any_failed(reports: &[ModelReport]) -> bool {
    reports.iter().any(|r| r.failed.is_some())
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
            // "No field named y", "Field y not found in struct"
            let named = regex::Regex::new(r"(?:No field named|Field) ([A-Za-z0-9_.]+)").expect("valid regex");
            let line = named
                .captures_iter(msg)
                .filter_map(|c| m.line_of(c[1].trim_end_matches('.').rsplit('.').next().unwrap_or(&c[1])))
                .next();
            line
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

pub async fn transform(lake: &Lake, sql_dir: &std::path::Path, opts: &TransformOptions) -> Result<Vec<ModelReport>> {
    let all = model::load_dir(sql_dir)?;
    let ctx = session::context(opts.memory_limit, opts.temp_dir.as_deref())?;
    functions::register(&ctx);
    let mut refs = BTreeMap::new();
    for m in &all {
        refs.insert(m.target.clone(), references(&ctx, m)?);
    }
    let models = order(&all, &refs, &opts.models)?;
    let declared = match &opts.pipelines {
        Some(dir) => crate::config::declare::declarations(dir)?,
        None => BTreeMap::new(),
    };
    // Raw files land under `<lake>/<source>/`, tables under `<lake>/<schema>/`: a model whose
    // schema is a source's name would share its folder (and its orphan sweep). Refused.
    if let Some(dir) = &opts.pipelines {
        let sources = crate::config::list_sources(dir);
        if let Some(m) = all.iter().find(|m| m.target.split_once('.').is_some_and(|(schema, _)| sources.iter().any(|s| s == schema))) {
            return Err(m.err_at(
                Some(1),
                format!("target schema `{}` is the name of a source (pipelines/{0}.toml): its raw files live in that folder; pick another schema", m.target.split('.').next().unwrap_or_default()),
            ));
        }
    }
    let inputs::Inputs { summary, max_seq, streams, mut existing, consumed, bases } = if opts.check {
        inputs::declared_only(&models, &declared)
    } else {
        inputs::read(lake, &models, &refs, &declared, opts).await?
    };
    let targets: BTreeSet<&str> = all.iter().map(|m| m.target.as_str()).collect();

    // Plan every model before writing anything: inputs get their real schemas, model
    // outputs an empty table of the planned schema. A model that cannot plan (a field neither
    // the data nor the declaration has, an unknown table) fails alone: its dependents are
    // skipped, every other model runs.
    let mut runnable = Vec::new();
    let mut reports = Vec::new();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    // Fields models name that no landed record of an undeclared stream has: per raw table,
    // read as NULL.
    let mut extras: BTreeMap<String, Schema> = BTreeMap::new();
    let empty = Schema::empty();
    'models: for m in &models {
        if let Some(up) = refs[&m.target].iter().find(|r| broken.contains(*r)) {
            broken.insert(m.target.clone());
            reports.push(ModelReport::skipped(m, format!("skipped: {up} failed")));
            continue;
        }
        let mut missing = Vec::new();
        for r in &refs[&m.target] {
            if streams.contains_key(r) {
                raw::register(&ctx, lake, r, &[], &bases[r], extras.get(r).unwrap_or(&empty))?;
            } else if targets.contains(r.as_str()) {
                // Registered below when its model is planned (or skipped).
                if ctx.table_exist(r.as_str()).unwrap_or(false) {
                    continue;
                }
                missing.push(r.clone());
            } else if r.starts_with("raw.") {
                // A source that has landed streams but not this one: a typo, not "not yet".
                // (A stream the catalogue knows — e.g. only empty windows so far — is "not yet".)
                let sources: BTreeSet<&str> = summary.iter().map(|c| c.source.as_str()).collect();
                let known_stream = declared.contains_key(r) || summary.iter().any(|c| raw::table_name(&c.source, &c.stream) == *r);
                if !known_stream && sources.iter().any(|s| r.starts_with(&format!("raw.{s}_"))) {
                    let known: Vec<&str> = streams.keys().map(String::as_str).collect();
                    let e = sql_error(m, &format!("unknown table '{r}' (raw streams: {})", known.join(", ")));
                    reports.push(ModelReport::failed_to_plan(m, &e));
                    broken.insert(m.target.clone());
                    continue 'models;
                }
                missing.push(r.clone());
            } else if let Some(t) = state::open_table(lake, &r.replace('.', "/")).await? {
                register_delta(&ctx, r, &t).await?;
            } else {
                let e = sql_error(
                    m,
                    &format!("unknown table '{r}': neither a raw stream that has landed, a model, nor a table in the lake"),
                );
                reports.push(ModelReport::failed_to_plan(m, &e));
                broken.insert(m.target.clone());
                continue 'models;
            }
        }
        if !missing.is_empty() {
            let why = if opts.check { "not checked: no declared schema for" } else { "skipped: nothing landed yet for" };
            reports.push(ModelReport::skipped(m, format!("{why} {}", missing.join(", "))));
            continue;
        }
        let raw_refs: Vec<&String> = refs[&m.target].iter().filter(|r| streams.contains_key(*r)).collect();
        let mut tries = 0;
        let df = loop {
            match ctx.sql(&m.sql).await {
                Ok(df) => break df,
                Err(e) => {
                    let mut schemas = Vec::new();
                    for r in &raw_refs {
                        if let Ok(t) = ctx.table_provider(r.as_str()).await {
                            schemas.push(((*r).clone(), t.schema()));
                        }
                    }
                    // Only a stream without a declaration reads an absent field as NULL: a
                    // declared stream's schema is what its API documents, so a field outside it
                    // is a mistake in the model.
                    let found = missing_field(&e, &raw_refs, &m.sql, &schemas)
                        .or_else(|| missing_nested(&e, &m.sql, &schemas))
                        .filter(|(t, _)| !declared.contains_key(t));
                    let Some((table, path)) = found.filter(|_| tries < 100) else {
                        let e = sql_error(m, &e.to_string());
                        reports.push(ModelReport::failed_to_plan(m, &e));
                        broken.insert(m.target.clone());
                        continue 'models;
                    };
                    tries += 1;
                    tracing::warn!(model = %m.target, file = %m.file, table = %table, field = %path.join("."), "no landed record has this field; it reads as NULL");
                    let add = schema_with_path(&path);
                    let cur = extras.remove(&table).unwrap_or_else(Schema::empty);
                    extras.insert(table.clone(), crate::lake::schema::union(&cur, &add));
                    raw::register(&ctx, lake, &table, &[], &bases[&table], &extras[&table])?;
                }
            }
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        register(&ctx, &m.target, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        runnable.push(m.clone());
    }
    if opts.check {
        for m in &runnable {
            reports.push(ModelReport::skipped(m, "plans".into()));
        }
        return Ok(reports);
    }

    let run_id = crate::lake::runs::new_run_id();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for m in &runnable {
        let started = Instant::now();
        if let Some(up) = refs[&m.target].iter().find(|r| broken.contains(*r)) {
            broken.insert(m.target.clone());
            reports.push(ModelReport::skipped(m, format!("skipped: {up} failed")));
            continue;
        }
        let target = existing.remove(&m.target).flatten();
        let ran = run_model(lake, &ctx, m, target, consumed[&m.target], &refs, &streams, &bases, &extras, &changed, opts, &run_id, max_seq, started).await;
        match ran {
            Ok((report, wrote)) => {
                if wrote {
                    changed.insert(m.target.clone());
                }
                reports.push(report);
            }
            Err(e) => {
                let mut msg = crate::secret::redact(&format!("{} ({}): {e}", m.target, m.file));
                if msg.contains("Resources exhausted") {
                    msg = format!("{msg} — nothing was written; raise --memory-limit");
                }
                tracing::error!(model = %m.target, "model failed: {msg}");
                broken.insert(m.target.clone());
                // Dependents must not read a half-registered output: show them the table as it is.
                if let Ok(Some(t)) = state::open_table(lake, &m.table_rel()).await {
                    let _ = register_delta(&ctx, &m.target, &t).await;
                }
                reports.push(ModelReport { elapsed: started.elapsed(), failed: Some(msg), ..ModelReport::skipped(m, "FAILED".into()) });
            }
        }
    }
    Ok(reports)
}

/// Run one planned model: read its new input, dedupe, write. Returns its report and whether
/// it wrote a new table version.
#[allow(clippy::too_many_arguments)]
async fn run_model(
    lake: &Lake,
    ctx: &SessionContext,
    m: &Model,
    existing: Option<DeltaTable>,
    consumed: i64,
    refs: &BTreeMap<String, Vec<String>>,
    streams: &BTreeMap<String, Vec<LandedFile>>,
    bases: &BTreeMap<String, Schema>,
    extras: &BTreeMap<String, Schema>,
    changed: &BTreeSet<String>,
    opts: &TransformOptions,
    run_id: &str,
    max_seq: i64,
    started: Instant,
) -> Result<(ModelReport, bool)> {
    {
        let mut files_read: Vec<String> = Vec::new();
        let mut has_raw = false;
        // NDJSON bytes this run reads (None: it reads a Delta table too, of unknown size).
        let mut input_bytes = Some(0i64);
        for r in &refs[&m.target] {
            if let Some(files) = streams.get(r) {
                has_raw = true;
                let new: Vec<LandedFile> = files
                    .iter()
                    .filter(|f| m.reads_all || f.seq > consumed)
                    .cloned()
                    .collect();
                files_read.extend(new.iter().filter_map(|f| f.path.clone()));
                input_bytes = input_bytes.map(|b| b + new.iter().map(|f| f.bytes).sum::<i64>());
                raw::register(ctx, lake, r, &new, &bases[r], extras.get(r).unwrap_or(&Schema::empty()))?;
            } else if let Some(t) = state::open_table(lake, &r.replace('.', "/")).await? {
                input_bytes = None;
                register_delta(ctx, r, &t).await?;
            }
        }
        let upstream_changed = refs[&m.target].iter().any(|r| changed.contains(r));
        let idle = if m.mode == Mode::Replace {
            !has_raw && !upstream_changed && existing.is_some() && !opts.full_refresh
        } else {
            // A model not built yet is built even from no new file: an empty table of its
            // columns (a fresh account), so readers and dependents find it.
            has_raw && files_read.is_empty() && existing.is_some()
        };
        if idle {
            if let Some(t) = &existing {
                register_delta(ctx, &m.target, t).await?;
            }
            return Ok((ModelReport {
                target: m.target.clone(),
                files: 0,
                rows: 0,
                table_version: existing.as_ref().and_then(|t| t.version()).map(|v| v as i64),
                note: "up to date".into(),
                elapsed: started.elapsed(),
                failed: None,
            }, false));
        }
        let df = ctx.sql(&m.sql).await.map_err(|e| sql_error(m, &e.to_string()))?;
        // Hash the keys when the input surely fits: decoded Arrow takes about as much memory
        // as the NDJSON it came from (measured: 536 MiB of raw, 620 MiB peak RSS), so a
        // quarter of the limit; otherwise sort, which spills.
        // (`INGEST_DEDUPE=sort` forces the sort: the benchmarks compare the two.)
        let fits = std::env::var("INGEST_DEDUPE").map_or(true, |v| v != "sort") && match (opts.memory_limit, input_bytes) {
            (None, _) => true,
            (Some(limit), Some(b)) => (b as usize).saturating_mul(4) <= limit,
            (Some(_), None) => false,
        };
        let (df, clustered) = write::dedupe(ctx, m, df, fits).await?;
        let df = write::normalize(df)?;
        let meta = serde_json::json!({"run_id": run_id, "model": m.target, "mode": format!("{:?}", m.mode).to_lowercase(), "catalogue_seq": max_seq, "files": files_read});
        let commit = write::Commit { txn: Some(Transaction::new(state::model_txn_app(&m.target), max_seq)), meta };
        let written = match write::write(lake, m, existing, (df, clustered), commit, opts.full_refresh).await {
            Ok(w) => w,
            Err(Error::Delta(e)) if state::is_conflict(&e) => {
                return Err(Error::Lake(format!(
                    "another run committed to this table first; nothing of this run was applied to it, rerun to continue ({e})"
                )))
            }
            Err(e) => return Err(diagnose(ctx, m, &files_read, e).await),
        };
        tracing::info!(model = %m.target, files = files_read.len(), rows = written.rows, version = written.table_version(), "model written");
        if files_read.len() > CHECKPOINT_AFTER_FILES {
            // The commit's metadata lists every file read (100,000 paths: 5 MB of JSON), which
            // every later load of the table would parse until the next checkpoint: write one
            // now. The commit stands either way.
            if let Err(e) = deltalake::checkpoints::create_checkpoint(&written.table, None).await {
                tracing::warn!(model = %m.target, error = %e, "could not write a checkpoint after a large commit");
            }
        }
        register_delta(ctx, &m.target, &written.table).await?;
        Ok((ModelReport {
            target: m.target.clone(),
            files: files_read.len(),
            rows: written.rows,
            table_version: Some(written.table_version()),
            note: written.merge.map_or_else(|| format!("{:?}", m.mode).to_lowercase(), |s| s.to_string()),
            elapsed: started.elapsed(),
            failed: None,
        }, true))
    }
}

/// A commit that read more files than this is followed by a checkpoint (see `run_model`).
const CHECKPOINT_AFTER_FILES: usize = 1000;

/// A model that failed on its data: find the output column whose expression fails and say
/// which files were read, so the error names model, column, value (in DataFusion's message)
/// and input.
async fn diagnose(ctx: &SessionContext, m: &Model, files: &[String], e: Error) -> Error {
    let mut col = None;
    if let Ok(df) = ctx.sql(&m.sql).await {
        let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        // Each column alone, streamed (batches dropped as they come, never the whole result
        // held): the first one whose computation fails is the one named.
        'columns: for n in names {
            let Ok(one) = df.clone().select_columns(&[n.as_str()]) else { continue };
            let mut stream = match one.execute_stream().await {
                Ok(s) => s,
                Err(_) => {
                    col = Some(n);
                    break;
                }
            };
            use futures::StreamExt;
            while let Some(b) = stream.next().await {
                if b.is_err() {
                    col = Some(n);
                    break 'columns;
                }
            }
        }
    }
    let shown: Vec<&str> = files.iter().take(3).map(String::as_str).collect();
    Error::Other(format!(
        "{}{e}; raw files read: {}{}",
        col.map(|c| format!("column `{c}`: ")).unwrap_or_default(),
        shown.join(", "),
        if files.len() > 3 { format!(" and {} more", files.len() - 3) } else { String::new() }
    ))
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
