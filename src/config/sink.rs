//! Sinks of a pipeline file (`[sinks.<name>]`): what `ingest push` sends where, and how it
//! learns what the destination already holds.
use super::{default_get, default_post};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A sink: the rows of `table` (a model's target, e.g. `push.retail_products`) sent to the
/// source's API, each record once (by its `key` column and payload hash), recorded in the
/// ledger `<lake>/_ingest/sent`. Columns become JSON fields; structs nest.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub table: String,
    pub key: String,
    /// `POST` (default), `PUT`, `PATCH` or `DELETE`, any case (sent upper-cased).
    #[serde(default = "default_post")]
    pub method: String,
    pub path: String,
    /// `upsert`: a key is resent when its payload changes (the API is idempotent by key);
    /// `create_once`: a key is sent once, ever.
    #[serde(default = "default_upsert")]
    pub mode: String,
    pub batch: SinkBatch,
    /// An asynchronous job answered by `202` and polled until final.
    pub job: Option<SinkJob>,
    /// How to ask the destination whether a record already exists (create_once sinks use it
    /// after a crash between intent and outcome, and after a lost reply).
    pub lookup: Option<SinkLookup>,
    /// Ask the `lookup` before every create, not only after a crash or a lost reply: for a
    /// destination whose listing the model reads may be incomplete (Milvus `cliente/busca`
    /// answers at most 1000 clients, so a client past the cap looks missing).
    #[serde(default)]
    pub lookup_first: bool,
    /// Columns kept for the key and the ledger but not sent (columns starting with `_`, such
    /// as `_ingest_order`, are never sent).
    #[serde(default)]
    pub omit: Vec<String>,
    /// Checks on the rows before anything is sent, column → check; a violation names the
    /// rows (exit 2).
    #[serde(default)]
    pub checks: BTreeMap<String, RowCheck>,
    /// The destination's own record of the last integration (seed 002's
    /// `get-latest-integration`), read after a push, kept in the run log and shown by `status`.
    pub latest: Option<SinkLatest>,
    /// The destination's integration history, read after a push (seed 002's
    /// `integration-history/{entity}?horas=N`: errors and batch summaries): its entries whose
    /// `success` field is false are counted and shown in the summary and the run log.
    pub history: Option<SinkHistory>,
}

/// `GET path` with `params` after a push; `records` (a JSON path, empty for the whole answer)
/// lists entries, an entry whose `success` field is false is an error (its `message` shown).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkHistory {
    pub path: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub records: String,
    #[serde(default = "default_success")]
    pub success: String,
    #[serde(default = "default_error_message")]
    pub message: String,
}

fn default_success() -> String {
    "success".into()
}

/// A sink's check of one column (every check also fails on a missing or null value).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RowCheck {
    /// A JSON integer (seed 002's `erpId`).
    Integer,
    /// An ISO-8601 time ending in `Z`.
    TimestampUtc,
    /// Digits only (text or a non-negative integer).
    Digits,
    NotNull,
}

/// `GET path` after a push; the `fields` (JSON paths) of its answer are kept.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkLatest {
    pub path: String,
    pub fields: Vec<String>,
}

/// A lookup that pages: `param` = 1, 2, … until the record is found or the page at `last`
/// (a JSON path of the answer, e.g. Milvus `meta.paginate.last_page`) has been read.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LookupPages {
    pub param: String,
    pub last: String,
    pub size_param: Option<String>,
    pub size: Option<u64>,
}

/// `GET path?<param>=<row[value]>`; the record exists when an item at `records` has
/// `match` equal to that value.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkLookup {
    pub path: String,
    /// `GET` (default, `param` in the query) or `POST` (`body`, a TOML table whose strings may
    /// name the row's columns as `{row.<col>}`; Milvus `chamado/listagem`'s `filtro_body`).
    #[serde(default = "default_get")]
    pub method: String,
    pub body: Option<toml::Value>,
    #[serde(default)]
    pub param: String,
    /// More query parameters, whose strings may name the row's columns as `{row.<col>}`
    /// (Ploomes: `"$filter" = "CPF eq '{row.CPF}'"`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub pages: Option<LookupPages>,
    pub value: String,
    #[serde(default)]
    pub records: String,
    /// The item's field(s) compared with the row's `value` (any of them may match: Ploomes
    /// holds a company's document in `CNPJ`, a person's in `CPF`).
    #[serde(rename = "match")]
    pub matches: OneOrMany,
    /// `digits`: compare digits only (documents the destination keeps as typed:
    /// `12.345.678/0001-90` is `12345678000190`).
    pub normalize: Option<Normalize>,
}

/// How a lookup compares values.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    Digits,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkBatch {
    /// Items per request (≤ `max`).
    pub size: usize,
    /// The API's largest batch.
    pub max: usize,
    /// Field wrapping the items (`{"items": [...]}`); none = a bare array.
    pub wrapper: Option<String>,
    /// Batches in flight at once.
    #[serde(default = "default_one_usize")]
    pub parallel: usize,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SinkJob {
    /// JSON path of the job id in the 202 answer.
    pub id: String,
    /// Status path, `{job_id}` filled in.
    pub status_path: String,
    /// JSON path of the state, and the states that end the job (compared case-insensitively:
    /// such APIs spell them `Completed`, `COMPLETED`, `Succeeded`…). A state never seen before
    /// is logged; a job not final by `timeout_secs` leaves its items `uncertain`.
    pub state: String,
    pub final_states: Vec<String>,
    /// Final states meaning the job failed as a whole (case-insensitive; default `failed`,
    /// `deleted`, `error`, `cancelled`, `canceled`, `aborted`): its items without an error of
    /// their own are not `sent` (`failed` for an upsert sink, `uncertain` for a create).
    #[serde(default = "default_failed_states")]
    pub failed_states: Vec<String>,
    /// JSON paths of the job's item counts as the API reports them (shown in the summary and
    /// the run log); more failures than per-item errors listed leaves the unexplained items
    /// not `sent`.
    #[serde(default = "default_success_count")]
    pub success_count: String,
    #[serde(default = "default_failure_count")]
    pub failure_count: String,
    /// JSON path of the per-item errors (a list of objects), with the key and message fields.
    pub errors: Option<String>,
    #[serde(default = "default_error_key")]
    pub error_key: String,
    #[serde(default = "default_error_message")]
    pub error_message: String,
    /// The first poll's wait; each next one doubles, up to `max_poll_ms`.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    #[serde(default = "default_max_poll_ms")]
    pub max_poll_ms: u64,
    #[serde(default = "default_job_timeout")]
    pub timeout_secs: u64,
}

impl SinkJob {
    fn is(list: &[String], state: &str) -> bool {
        list.iter().any(|s| s.eq_ignore_ascii_case(state))
    }

    /// Whether `state` ends the job.
    pub fn is_final(&self, state: &str) -> bool {
        Self::is(&self.final_states, state) || Self::is(&self.failed_states, state)
    }

    /// Whether `state` ends the job as a failure.
    pub fn is_failed(&self, state: &str) -> bool {
        Self::is(&self.failed_states, state)
    }
}

fn default_failed_states() -> Vec<String> {
    ["failed", "deleted", "error", "cancelled", "canceled", "aborted"].iter().map(|s| s.to_string()).collect()
}
fn default_success_count() -> String {
    "successCount".into()
}
fn default_failure_count() -> String {
    "failureCount".into()
}
fn default_max_poll_ms() -> u64 {
    30_000
}

fn default_upsert() -> String {
    "upsert".into()
}
fn default_one_usize() -> usize {
    1
}
fn default_error_key() -> String {
    "erpId".into()
}
fn default_error_message() -> String {
    "message".into()
}
fn default_poll_ms() -> u64 {
    500
}
fn default_job_timeout() -> u64 {
    600
}
