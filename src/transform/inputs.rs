//! What a transform run reads before planning, without reading the whole catalogue: one
//! aggregate of streams and recorded schemas, each model's table and the position it
//! consumed, and only the catalogue rows after the lowest of those positions.
use super::model::{Mode, Model};
use super::{raw, TransformOptions};
use crate::config::declare::Declared;
use crate::error::Result;
use crate::lake::state::{self, LandedFile};
use crate::lake::Lake;
use deltalake::arrow::datatypes::Schema;
use deltalake::DeltaTable;
use std::collections::BTreeMap;

pub(super) struct Inputs {
    /// Every raw stream's distinct recorded schemas.
    pub summary: Vec<state::StreamSchema>,
    /// The catalogue's highest position.
    pub max_seq: i64,
    /// Per raw table, the current files after the lowest consumed position (every raw table
    /// the catalogue knows has an entry, empty when nothing is new).
    pub streams: BTreeMap<String, Vec<LandedFile>>,
    /// Each model's table (None: not built yet).
    pub existing: BTreeMap<String, Option<DeltaTable>>,
    /// Each model's consumed catalogue position (see [`consumed`]), read once per run.
    pub consumed: BTreeMap<String, i64>,
    /// Each referenced raw stream's schema, once per run (planning and running reuse it).
    pub bases: BTreeMap<String, Schema>,
}

pub(super) async fn read(
    lake: &Lake,
    models: &[Model],
    refs: &BTreeMap<String, Vec<String>>,
    declared: &BTreeMap<String, Declared>,
    opts: &TransformOptions,
) -> Result<Inputs> {
    // The catalogue as one aggregate (streams, their recorded schemas, the last position)...
    let t0 = std::time::Instant::now();
    let cat = state::Catalogue::open(lake).await?;
    let (summary, max_seq) = cat.stream_schemas(lake).await?;
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, "catalogue opened, stream schemas read");
    let mut streams: BTreeMap<String, Vec<LandedFile>> = BTreeMap::new();
    // (A stream pulled but empty so far — only path-less rows — is an empty table, not "not yet".)
    for c in &summary {
        streams.entry(raw::table_name(&c.source, &c.stream)).or_default();
    }
    // A declared stream of a source that has been pulled, which has landed nothing at all yet
    // (e.g. detail records of a parent stream still empty), is an empty table of its
    // declared columns too.
    for (name, d) in declared {
        if summary.iter().any(|c| c.source == d.source) {
            streams.entry(name.clone()).or_default();
        }
    }
    // ...then each model's target and the position it consumed...
    let mut existing: BTreeMap<String, Option<DeltaTable>> = BTreeMap::new();
    let mut consumed_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut since = i64::MAX;
    for m in models {
        let t = state::open_table(lake, &m.table_rel()).await?;
        let c = consumed(lake, m, t.as_ref(), opts).await?;
        if refs[&m.target].iter().any(|r| streams.contains_key(r)) {
            since = since.min(if m.reads_all { -1 } else { c });
        }
        consumed_at.insert(m.target.clone(), c);
        existing.insert(m.target.clone(), t);
    }
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, "targets opened, consumed positions read");
    // ...and only the rows after the lowest of those positions (Delta skips the catalogue
    // files before it): a day's run reads a day of catalogue, whatever the lake holds.
    if since < i64::MAX {
        let rows = cat.rows_where(&if since < 0 { "TRUE".to_string() } else { format!("seq > {since}") }).await?;
        for (name, files) in raw::streams(&rows) {
            streams.insert(name, files);
        }
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, since, "new catalogue rows read");
    }
    // Each referenced raw stream's schema, once per run (planning and running reuse it).
    let mut bases: BTreeMap<String, Schema> = BTreeMap::new();
    for r in refs.values().flatten() {
        if bases.contains_key(r) || !streams.contains_key(r) {
            continue;
        }
        let of_r: Vec<&state::StreamSchema> = summary.iter().filter(|c| raw::table_name(&c.source, &c.stream) == *r).collect();
        if of_r.is_empty() {
            // Declared, never landed (see above).
            bases.insert(r.clone(), declared.get(r).map(|d| d.schema.clone()).unwrap_or_else(Schema::empty));
            continue;
        }
        let recorded: Vec<Option<&str>> = of_r.iter().filter(|c| !c.empty).map(|c| c.schema.as_deref()).collect();
        let landed = raw::recorded_schema(lake, &cat, &of_r[0].source, &of_r[0].stream, &recorded).await?;
        // The declared fields first (in the file's order, typed even when no record has them),
        // widened by what landed.
        let base = match declared.get(r) {
            Some(d) => crate::lake::schema::union(&d.schema, &landed),
            None => landed,
        };
        bases.insert(r.clone(), base);
    }
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, "catalogue and targets read");
    Ok(Inputs { summary, max_seq, streams, existing, consumed: consumed_at, bases })
}

/// The catalogue position `m` consumed (its txn in its table `t`); -1 when it reads every
/// file this run (no table yet, replace mode, `--full-refresh`).
async fn consumed(lake: &Lake, m: &Model, t: Option<&DeltaTable>, opts: &TransformOptions) -> Result<i64> {
    let (Some(t), false, Mode::Merge | Mode::Append) = (t, opts.full_refresh, m.mode) else { return Ok(-1) };
    Ok(state::Txns::of(lake, &m.table_rel(), t).await?.get(&state::model_txn_app(&m.target)).await?.unwrap_or(-1))
}

/// `ingest transform --check`: nothing of the lake is read. Every declared raw stream is an
/// empty table of its declared schema, every model's table is "not built yet".
pub(super) fn declared_only(models: &[Model], declared: &BTreeMap<String, Declared>) -> Inputs {
    Inputs {
        summary: Vec::new(),
        max_seq: -1,
        streams: declared.keys().map(|k| (k.clone(), Vec::new())).collect(),
        existing: models.iter().map(|m| (m.target.clone(), None)).collect(),
        consumed: models.iter().map(|m| (m.target.clone(), -1)).collect(),
        bases: declared.iter().map(|(k, d)| (k.clone(), d.schema.clone())).collect(),
    }
}
