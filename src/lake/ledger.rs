//! The push ledger (`<lake>/_ingest/sent`): what `ingest push` sent where. Append-only; the
//! latest row of a (sink, key) is its state: `pending` (committed *before* the request),
//! then `sent` (with the job id and response fields), `failed` (the API's message, a 4xx or a
//! per-item job error) or `uncertain`. A key `sent` with the same payload hash is never sent
//! again; a `pending` one (a crash between intent and outcome) is resent by `upsert` sinks,
//! whose API is idempotent by key. It doubles as seed 002's sync log (job id, items, times).
use super::state::{open_or_create_table, select, to_batch};
use super::Lake;
use crate::error::Result;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const SENT: &str = "_ingest/sent";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub source: String,
    pub sink: String,
    pub key: String,
    pub hash: String,
    pub state: String,
    pub job_id: Option<String>,
    pub attempts: i64,
    pub error: Option<String>,
    pub response: Option<String>,
    pub run_id: String,
    pub at: String,
}

impl Entry {
    /// An entry stamped now, with no job, error or response yet.
    pub fn new(source: &str, sink: &str, key: &str, hash: &str, state: &str, attempts: i64, run_id: &str) -> Self {
        Entry {
            source: source.to_string(),
            sink: sink.to_string(),
            key: key.to_string(),
            hash: hash.to_string(),
            state: state.to_string(),
            job_id: None,
            attempts,
            error: None,
            response: None,
            run_id: run_id.to_string(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("sink", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("attempts", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("response", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("at", ts, false),
    ]))
}

/// Create the ledger if missing (before parallel appends, which would race to create it).
pub async fn ensure(lake: &Lake) -> Result<()> {
    open_or_create_table(lake, SENT, "sent", schema()).await.map(|_| ())
}

/// Append entries (one commit; concurrent blind appends never conflict). The table is opened
/// afresh each time (from its last checkpoint): kept open across a push's thousands of
/// appends, it carried every add action and its commits slowed (about 0.7 s each by the
/// 2,000th, in one run with other work on the machine).
pub async fn append(lake: &Lake, rows: &[Entry]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let t = open_or_create_table(lake, SENT, "sent", schema()).await?;
    t.write(vec![to_batch(schema(), rows)?])
        .with_commit_properties(CommitProperties::default().with_max_retries(50))
        .await?;
    Ok(())
}

/// The latest entry of each (source, sink, key), of one source or all, by sink and key.
/// Keys per (source, sink, state) of the latest entry of each key: counted by the engine, not
/// read into memory (for `/metrics`).
pub async fn counts(lake: &Lake) -> Result<Vec<StateCount>> {
    if !super::state::table_exists(lake, SENT).await? {
        return Ok(Vec::new());
    }
    super::state::select_sql(
        lake,
        SENT,
        "SELECT source, sink, state, count(*) AS n FROM (SELECT source, sink, state, row_number() OVER (PARTITION BY source, sink, key ORDER BY at DESC) AS rn FROM state) WHERE rn = 1 GROUP BY source, sink, state ORDER BY source, sink, state",
    )
    .await
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct StateCount {
    pub source: String,
    pub sink: String,
    pub state: String,
    pub n: i64,
}

pub async fn current(lake: &Lake, source: Option<&str>) -> Result<Vec<Entry>> {
    let filter = source.map_or(String::new(), |s| format!("WHERE source = {} ", super::state::sql_text(s)));
    let rows: Vec<Entry> = select(lake, SENT, &format!("{filter}ORDER BY at")).await?;
    let mut latest: std::collections::BTreeMap<(String, String, String), Entry> = Default::default();
    for r in rows {
        latest.insert((r.source.clone(), r.sink.clone(), r.key.clone()), r);
    }
    Ok(latest.into_values().collect())
}

/// What the ledger says of one key of a sink now (its latest entry, the fields a push needs),
/// small: a million keys hold a million of these.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `pending`, `sent`, `failed` or `uncertain`.
    pub state: &'static str,
    /// The payload hash (sha256).
    pub hash: [u8; 32],
    pub attempts: i64,
    pub job_id: Option<Box<str>>,
    /// Kept for `failed` entries only (why: the item's own fault or its whole job's).
    pub error: Option<Box<str>>,
    /// When it was written (µs): the latest entry of a key wins.
    pub at: i64,
}

/// A ledger state as a static name.
pub fn state_name(s: &str) -> &'static str {
    match s {
        "pending" => "pending",
        "sent" => "sent",
        "failed" => "failed",
        "uncertain" => "uncertain",
        _ => "other",
    }
}

/// A hex payload hash as bytes (zeros if it is not one).
pub fn hash_bytes(hex_hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let _ = hex::decode_to_slice(hex_hash, &mut out);
    out
}

/// The latest entry of each key of a sink, read as a stream of the sink's entries (no sort,
/// no aggregation held by the engine): what is held is one [`Seen`] per key, in a B-tree.
pub async fn seen(lake: &Lake, source: &str, sink: &str) -> Result<std::collections::BTreeMap<String, Seen>> {
    use futures::TryStreamExt;
    let Some(t) = super::state::open_table(lake, SENT).await? else { return Ok(Default::default()) };
    let sql = format!(
        "SELECT key, state, hash, attempts, job_id, error, CAST(at AS BIGINT) AS at_us FROM state WHERE source = {} AND sink = {}",
        super::state::sql_text(source),
        super::state::sql_text(sink)
    );
    // A B-tree, not a hash map: a hash table of a million entries takes 2^21 slots (and twice
    // that while it grows); the tree takes about what its entries do.
    let mut out: std::collections::BTreeMap<String, Seen> = std::collections::BTreeMap::new();
    // Read as Arrow columns: no JSON value per field of two million rows.
    let mut batches = super::state::stream_batches(&t, &sql).await?;
    while let Some(b) = batches.try_next().await? {
        use super::state::{int_column, text_column};
        let (keys, states, hashes, jobs, errors) =
            (text_column(&b, "key")?, text_column(&b, "state")?, text_column(&b, "hash")?, text_column(&b, "job_id")?, text_column(&b, "error")?);
        let (attempts, ats) = (int_column(&b, "attempts")?, int_column(&b, "at_us")?);
        for i in 0..b.num_rows() {
            let key = keys[i].as_deref().unwrap_or_default();
            if out.get(key).is_some_and(|s| s.at > ats[i]) {
                continue;
            }
            let state = state_name(states[i].as_deref().unwrap_or_default());
            let seen = Seen {
                state,
                hash: hash_bytes(hashes[i].as_deref().unwrap_or_default()),
                attempts: attempts[i],
                job_id: jobs[i].as_deref().map(Box::from),
                error: if state == "failed" { errors[i].as_deref().map(Box::from) } else { None },
                at: ats[i],
            };
            out.insert(key.to_string(), seen);
        }
    }
    Ok(out)
}


#[cfg(test)]
mod count_tests {
    use super::*;

    /// `counts` counts each key once, by its latest entry, as `current` sees it.
    #[tokio::test]
    async fn counts_agree_with_the_latest_entry_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let e = |key: &str, state: &str, at: &str| Entry {
            source: "retail_portal".into(),
            sink: "products".into(),
            key: key.into(),
            hash: "00".repeat(32),
            state: state.into(),
            job_id: None,
            attempts: 1,
            error: None,
            response: None,
            run_id: "r".into(),
            at: at.into(),
        };
        append(&lake, &[e("1", "pending", "2026-01-01T00:00:00Z"), e("2", "pending", "2026-01-01T00:00:00Z"), e("3", "pending", "2026-01-01T00:00:00Z")]).await.unwrap();
        append(&lake, &[e("1", "sent", "2026-01-01T00:00:01Z"), e("2", "failed", "2026-01-01T00:00:01Z")]).await.unwrap();
        let got: Vec<(String, i64)> = counts(&lake).await.unwrap().into_iter().map(|c| (c.state, c.n)).collect();
        assert_eq!(got, vec![("failed".into(), 1), ("pending".into(), 1), ("sent".into(), 1)]);
        let mut by_current: Vec<String> = current(&lake, None).await.unwrap().into_iter().map(|e| e.state).collect();
        by_current.sort();
        assert_eq!(by_current, vec!["failed", "pending", "sent"]);
    }
}
