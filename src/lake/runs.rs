//! The run log (`<lake>/_ingest/runs`, seed 004's extraction log): one row per source ×
//! partition × stream per pull — when, whether it succeeded, the error (redacted), pages,
//! records, files, bytes, and the fields of its last landed record that the pipeline reads
//! back with `${last:<field>}`. Appended in one Delta commit when a pull ends (a killed pull
//! leaves no row; the catalogue, not this log, is what exactness rests on).
use super::state::{open_or_create_table, select, to_batch};
use super::Lake;
use crate::error::Result;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const RUNS: &str = "_ingest/runs";
/// The `partition` of a push's row (one per sink run: `stream` is the sink, `pages` its
/// requests, `records` the records sent, `files` its jobs, `last` the sink's `latest` answer).
pub const PUSH: &str = "push";

/// The id of this process's run: `INGEST_RUN_ID` when a caller chose it (`ingest serve` gives
/// each child its own, so the server links its run to these rows), else a new UUID.
pub fn new_run_id() -> String {
    std::env::var("INGEST_RUN_ID")
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub source: String,
    pub partition: String,
    pub stream: String,
    pub started: String,
    pub ended: String,
    pub success: bool,
    pub error: Option<String>,
    pub pages: i64,
    pub records: i64,
    pub files: i64,
    pub bytes: i64,
    /// JSON object: the declared fields of the last landed record.
    pub last: Option<String>,
    /// Requests retried, and of those the 429s (None on rows logged before these columns).
    #[serde(default)]
    pub retries: Option<i64>,
    #[serde(default)]
    pub throttled: Option<i64>,
}

fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("started", ts(), false),
        Field::new("ended", ts(), false),
        Field::new("success", DataType::Boolean, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("pages", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("last", DataType::Utf8, true),
        Field::new("retries", DataType::Int64, true),
        Field::new("throttled", DataType::Int64, true),
    ]))
}

/// Append `rows` (one commit; retried onto other writers' commits — rows are independent).
pub async fn append(lake: &Lake, rows: &[RunRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let t = open_or_create_table(lake, RUNS, "runs", schema()).await?;
    let batch = to_batch(schema(), rows)?;
    // A log written before `retries`/`throttled` existed gains them (NULL on its old rows).
    t.write(vec![batch])
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .with_commit_properties(CommitProperties::default().with_max_retries(50))
        .await?;
    Ok(())
}

/// The log, oldest first: of `source` (all when None), only failures when `failed`.
pub async fn read(lake: &Lake, source: Option<&str>, failed: bool) -> Result<Vec<RunRow>> {
    let mut conds = Vec::new();
    if let Some(s) = source {
        conds.push(format!("source = {}", super::state::sql_text(s)));
    }
    if failed {
        conds.push("NOT success".to_string());
    }
    let filter = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    select(lake, RUNS, &format!("{filter} ORDER BY started, source, partition, stream")).await
}

/// The rows of the runs `run_ids` (one query however many), oldest first.
pub async fn of_runs(lake: &Lake, run_ids: &[&str]) -> Result<Vec<RunRow>> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = run_ids.iter().map(|r| super::state::sql_text(r)).collect();
    select(lake, RUNS, &format!("WHERE run_id IN ({}) ORDER BY started, source, partition, stream", ids.join(", "))).await
}

/// The last-record fields of the latest successful run of each (partition, stream) of `source`.
pub async fn last_values(
    lake: &Lake,
    source: &str,
) -> Result<std::collections::HashMap<(String, String), serde_json::Map<String, serde_json::Value>>> {
    let mut out = std::collections::HashMap::new();
    for r in read(lake, Some(source), false).await? {
        if !r.success {
            continue;
        }
        if let Some(m) = r.last.as_deref().and_then(|l| serde_json::from_str(l).ok()) {
            out.insert((r.partition, r.stream), m);
        }
    }
    Ok(out)
}

/// `ingest runs`: the log as a table.
pub fn render(rows: &[RunRow]) -> String {
    let mut out = format!(
        "{:<10} {:<22} {:<10} {:<22} {:<7} {:>6} {:>9} {:>5}  {}\n",
        "run", "started", "source", "partition/stream", "result", "pages", "records", "files", "error / last"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<10} {:<22} {:<10} {:<22} {:<7} {:>6} {:>9} {:>5}  {}\n",
            r.run_id.chars().take(8).collect::<String>(),
            r.started.chars().take(19).collect::<String>(),
            r.source,
            format!("{}/{}", r.partition, r.stream),
            if r.success { "ok" } else { "FAILED" },
            r.pages,
            r.records,
            r.files,
            r.error.clone().or_else(|| r.last.clone()).unwrap_or_default()
        ));
    }
    if rows.is_empty() {
        out.push_str("no run logged\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run log written before `retries`/`throttled` existed takes rows that have them; its
    /// old rows read back with None.
    #[tokio::test]
    async fn an_older_run_log_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let old: Vec<_> = schema().fields().iter().filter(|f| f.name() != "retries" && f.name() != "throttled").cloned().collect();
        let old = Arc::new(Schema::new(old));
        let t = open_or_create_table(&lake, RUNS, "runs", old.clone()).await.unwrap();
        let row = serde_json::json!({"run_id": "old", "source": "c2s", "partition": "_", "stream": "leads", "started": "2026-01-01T00:00:00Z", "ended": "2026-01-01T00:00:01Z", "success": true, "pages": 1, "records": 5, "files": 1, "bytes": 9});
        t.write(vec![to_batch(old, &[row]).unwrap()]).await.unwrap();
        let new = RunRow {
            run_id: "new".into(),
            source: "c2s".into(),
            partition: "_".into(),
            stream: "leads".into(),
            started: "2026-01-02T00:00:00Z".into(),
            ended: "2026-01-02T00:00:01Z".into(),
            success: true,
            error: None,
            pages: 2,
            records: 7,
            files: 1,
            bytes: 10,
            last: None,
            retries: Some(3),
            throttled: Some(1),
        };
        append(&lake, &[new]).await.unwrap();
        let rows = read(&lake, Some("c2s"), false).await.unwrap();
        assert_eq!(rows.iter().map(|r| (r.run_id.as_str(), r.retries, r.throttled)).collect::<Vec<_>>(), vec![("old", None, None), ("new", Some(3), Some(1))]);
    }
}
