//! What a transform run reads before planning, without reading the whole catalogue: one
//! aggregate of streams and recorded schemas, each model's table and the position it
//! consumed, and only the catalogue rows after the lowest of those positions.
use super::model::{Mode, Model};
use super::{raw, TransformOptions};
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

pub(super) async fn read(lake: &Lake, models: &[Model], refs: &BTreeMap<String, Vec<String>>, opts: &TransformOptions) -> Result<Inputs> {
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
        let recorded: Vec<Option<&str>> = of_r.iter().filter(|c| !c.empty).map(|c| c.schema.as_deref()).collect();
        bases.insert(r.clone(), raw::recorded_schema(lake, &cat, &of_r[0].source, &of_r[0].stream, &recorded).await?);
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
