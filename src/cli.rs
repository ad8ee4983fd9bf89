//! Command-line definitions (clap) — no behaviour here.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Pull SaaS REST APIs into a data lake, exactly once: nothing lost, nothing twice.
#[derive(Parser, Debug)]
#[command(name = "ingest", version, about, long_about = None)]
pub struct Cli {
    /// Lake root: a path, file:///…, s3://bucket/prefix (AWS_* env, AWS_ENDPOINT_URL), memory://
    #[arg(long, global = true, env = "INGEST_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Folder of pipeline files (<source>.toml)
    #[arg(long, global = true, env = "INGEST_PIPELINES", default_value = "./pipelines")]
    pub pipelines: PathBuf,
    /// Folder of SQL model files
    #[arg(long, global = true, env = "INGEST_SQL", default_value = "./sql")]
    pub sql: PathBuf,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run pipelines/<source>.toml: land raw NDJSON and commit the catalogue and watermarks.
    ///
    /// Without --from each stream resumes from its stored watermark (minus its lookback);
    /// with no watermark it does a full load from the pipeline's `start`.
    Pull(PullArgs),
    /// Run the SQL models under --sql: flatten, dedupe and MERGE only the new raw files into
    /// Delta tables, with each model's watermark in the same Delta commit.
    ///
    /// All models run, in dependency order, or the named targets and what they need.
    Transform {
        /// Targets to build (schema.table), e.g. silver.c2s_leads
        models: Vec<String>,
        /// Rebuild from every landed file instead of only the new ones
        #[arg(long)]
        full_refresh: bool,
        /// Memory the engine's sorts and aggregations may use before spilling to temp files
        /// (e.g. 512MiB, 2GiB, or `none`); default: half of the machine's memory (or of the
        /// container's limit)
        #[arg(long, value_name = "SIZE", value_parser = parse_limit)]
        memory_limit: Option<Limit>,
        /// Folder for the spill files of sorts past --memory-limit (removed when the run ends);
        /// default: the system's temp folder
        #[arg(long, value_name = "DIR", env = "INGEST_TEMP_DIR")]
        temp_dir: Option<std::path::PathBuf>,
        /// Plan every model against the pipelines' declared stream schemas, reading no data and
        /// writing nothing (CI for SQL models): exit 0 when every model plans, 2 naming each
        /// model that does not (file, line, field)
        #[arg(long)]
        check: bool,
    },
    /// SQL over the lake: every Delta table (schema.table) and raw stream (raw.<source>_<stream>).
    Query {
        /// The SQL statement
        #[arg(value_name = "SQL")]
        statement: String,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// Print DDL that registers the lake's tables elsewhere.
    Ddl {
        #[command(subcommand)]
        command: DdlCommand,
    },
    /// Streams, watermarks, last runs and landed files per source; tables and their versions.
    Status {
        /// Only this source
        source: Option<String>,
    },
    /// Send the rows of each sink's table to its API, each record once (ledger
    /// <lake>/_ingest/sent): changed rows only, in batches, jobs polled to the end.
    ///
    /// A create that may have taken effect (a lost reply) is looked up before it is sent
    /// again; a record whose fate is unknown is left `uncertain` (see `ingest status`). Exit 1
    /// when any record failed or is uncertain; one push of a sink runs at a time.
    Push {
        /// <source> or <source>.<sink>
        target: String,
        /// Print what would be sent (counts and one sample payload); send nothing
        #[arg(long)]
        dry_run: bool,
        /// Send at most N records
        #[arg(long)]
        limit: Option<usize>,
        /// Send again records that failed with the same payload
        #[arg(long)]
        retry_failed: bool,
        /// Send again create_once records a crash left uncertain (may create duplicates)
        #[arg(long)]
        resend_uncertain: bool,
        /// Wait for a running push of the same sink instead of exiting 1
        #[arg(long)]
        wait: bool,
    },
    /// SQL model helpers.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Pipeline file helpers.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Write a table or a query result as a file (streamed; visible only when complete):
    /// `<schema>_<table>_<date>.<ext>` in --to (a folder or s3://bucket/folder/), or exactly
    /// --to when it names a file. Prints where.
    Export {
        /// A table (schema.table, raw.<source>_<stream>) or a SELECT statement
        target: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// CSV separator (one character)
        #[arg(long, default_value = ",")]
        sep: String,
        /// Folder (local or s3://bucket/folder/) or file path; default ./exports/
        #[arg(long)]
        to: Option<String>,
    },
    /// The run log (<lake>/_ingest/runs): one row per source × partition × stream per pull —
    /// when, success or the error, pages, records, files, and the last record's fields that
    /// `${last:…}` reads back.
    Runs {
        /// Only this source
        source: Option<String>,
        /// Only failed rows
        #[arg(long)]
        failed: bool,
    },
    /// Compact each Delta table's small files into larger ones (and write a checkpoint), so
    /// reads stay flat as commits pile up: the catalogue gets one small file per pull commit.
    /// A table whose model (under --sql) declares `cluster_by` is rewritten in that column's
    /// order instead (Z-order on one column), so its merges keep touching few files.
    /// Rows, versions' meanings and transform watermarks are unchanged; safe while readers run
    /// (they keep reading the version they opened; `vacuum` removes the old files later).
    Optimize {
        /// A table (schema.table, or _ingest.catalogue, _ingest.runs, _ingest.sent); default: all
        table: Option<String>,
    },
    /// Remove files nothing refers to: raw files no catalogue row lists (landings of crashed
    /// runs, superseded files; under each source's lease, so it never races a pull) and Delta
    /// data files no commit references after the tables' retention (7 days).
    Vacuum {
        /// A table (schema.table) or a source; default: every table and source
        target: Option<String>,
    },
    /// Turn existing configs of other tools into pipeline files and SQL models.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// The bundled API simulator.
    Fixtures {
        #[command(subcommand)]
        command: FixturesCommand,
    },
    /// Start the simulator in-process, pull every bundled source, run the SQL models, summarise.
    ///
    /// Uses the pipelines built into the binary, so it works from any folder; the lake is
    /// --lake (default ./lake).
    Demo,
    /// Run schedules and an HTTP API on this lake (seed 004's control plane): start, watch and
    /// cancel pulls, transforms and pushes; manage API keys; read and change pipeline files
    /// and models (each change recorded in _ingest/config_history); /metrics; a status page.
    ///
    /// Needs INGEST_ROOT_KEY (a secret of 16+ characters; it creates the other keys). Each
    /// pipeline file's [schedule] (cron, timezone, then, catch_up) runs while it is up. Every
    /// route but /healthz needs a key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    /// SIGTERM: no new runs, running ones get --grace to end, then SIGTERM; exit 0.
    Serve {
        /// Address to listen on (loopback unless you say otherwise; port 0 picks a free one)
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Seconds running work may take to end after SIGTERM
        #[arg(long, default_value_t = 60)]
        grace: u64,
    },
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Source name: pipelines/<source>.toml
    pub source: String,
    /// First day (YYYY-MM-DD, UTC); default: the watermark, else the pipeline's start
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, inclusive (YYYY-MM-DD, UTC); default: today
    #[arg(long)]
    pub to: Option<String>,
    /// Only these streams (comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub streams: Option<Vec<String>>,
    /// Ignore watermarks and reload from --from or the pipeline's start
    #[arg(long)]
    pub full_refresh: bool,
    /// If a pull of this source is running, wait for it instead of exiting 1
    #[arg(long)]
    pub wait: bool,
    /// Only these partitions (comma-separated ids, e.g. Pancake page ids); shards of one
    /// source run side by side against one lake
    #[arg(long, value_delimiter = ',', conflicts_with = "shard")]
    pub partitions: Option<Vec<String>>,
    /// Only shard K of N (0-based, e.g. `--shard $JOB_COMPLETION_INDEX/8`): the partitions
    /// whose id hashes to K; stable across machines and runs
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Write a starting model (sql/silver/<source>_<stream>.sql) from a raw stream's landed
    /// schema: nested fields flattened to parent_child columns, time-like text cast.
    New {
        /// <source>.<stream>, e.g. zoho_crm.leads
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Print a starting schema declaration (`[schemas.<stream>]`, field = type) from what landed
    /// for a raw stream, to paste into pipelines/<source>.toml: a declared field is a typed
    /// column even when no record has it, so models build on empty or sparse data.
    Schema {
        /// <source>.<stream>, e.g. pancake.conversations
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Seed 004's api extractor config (JSON: name, auth, extractions[]) → pipelines/<name>.toml
    /// and one model per extraction, sql/silver/<name>_<extraction>.sql, whose `-- output:`
    /// writes each run's new rows as the extractor's CSV/JSON file (columns: the data_schema's,
    /// in its order). Every part of the config maps or the import stops (exit 2) naming its
    /// JSON path and line; the files are validated (pipeline loaded, models planned) before any
    /// is written. Point the result elsewhere with <NAME>_BASE_URL, <NAME>_AUTH_URL and
    /// <NAME>_OUTPUT_URL; `${secret::x}` becomes `${secret:X}` (environment, secret files, or
    /// the AWS secret named in [source.secrets]).
    Extractor {
        /// The config file (JSON)
        config: PathBuf,
        /// Source name (default: the config's `name`, lower-cased, `_` for other characters)
        #[arg(long)]
        name: Option<String>,
        /// Replace files that exist
        #[arg(long)]
        force: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ExportFormat {
    Csv,
    Json,
    Parquet,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum QueryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum DdlCommand {
    /// CREATE EXTERNAL TABLE … TBLPROPERTIES ('table_type'='DELTA') per table (Athena engine v3)
    Athena {
        /// Glue database the tables go into
        #[arg(long, default_value = "ingest")]
        database: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FixturesCommand {
    /// Serve the simulated APIs; prints the base URL, then `export` lines for every pipeline.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: String,
    /// Simulated days of data from 2023-09-01
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Multiplies record counts
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// Seed of the generated data
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Every "N requests per minute" limit becomes N per this many seconds
    #[arg(long, default_value_t = 60.0)]
    pub rate_window: f64,
    /// Serve without any rate limit (benchmarks)
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Pancake pages served
    #[arg(long, default_value_t = 2)]
    pub pages: u32,
    /// Every Nth request answers 503
    #[arg(long, default_value_t = 0)]
    pub fail_every: u64,
    /// Every Nth request has its body cut in half
    #[arg(long, default_value_t = 0)]
    pub truncate_every: u64,
    /// Every Nth reply is delayed by --slow-ms, after the request took effect
    #[arg(long, default_value_t = 0)]
    pub slow_every: u64,
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// Percent of C2S leads updated every second while serving (and one new lead a second);
    /// `GET <base>/_sim/freeze` stops the changes, `GET <base>/_sim/truth/c2s` shows the state
    #[arg(long, default_value_t = 0.0)]
    pub live_updates: f64,
    /// Timestamps with milliseconds; each day's first record in its last second
    #[arg(long)]
    pub fractional: bool,
    /// Every Nth C2S request ignores updated_gte/updated_lt (as the real API sometimes does)
    #[arg(long, default_value_t = 0)]
    pub ignore_filter_every: u64,
    /// Answer 429 without a Retry-After header
    #[arg(long)]
    pub no_retry_after: bool,
    /// Late Pancake conversations appear in the last simulated day after this many seconds
    #[arg(long)]
    pub late_after: Option<f64>,
    /// Leave out every optional field of every record (as real APIs do)
    #[arg(long)]
    pub omit_optional: bool,
    /// Seconds a Zoho access token works (its `expires_in`); then 401 INVALID_TOKEN
    #[arg(long, default_value_t = 3600.0)]
    pub token_ttl: f64,
    /// The Zoho token endpoint rotates the refresh token on every grant
    #[arg(long)]
    pub rotate_refresh: bool,
    /// ERP products the retail portal pipeline pulls
    #[arg(long, default_value_t = 200)]
    pub products: u64,
    /// Items a retail portal batch job processes per second
    #[arg(long, default_value_t = 4.0)]
    pub job_items_per_sec: f64,
    /// Delay every reply by this many ms after the request took effect
    #[arg(long, default_value_t = 0)]
    pub reply_delay_ms: u64,
    /// Clients Milvus holds before any push (half share a Ploomes contact's document)
    #[arg(long, default_value_t = 0)]
    pub milvus_clients: u64,
    /// Drop each field the docs do not mark required with probability P, at every depth, list
    /// items included, per record (as real APIs omit optional fields)
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub sparse: f64,
    /// Serve these sources as fresh accounts with no records (c2s, pancake, zoho_crm,
    /// zoho_desk, ploomes, milvus, retail_portal; comma-separated)
    #[arg(long, value_name = "SOURCES", value_delimiter = ',', value_parser = parse_empty_source)]
    pub empty: Vec<String>,
    /// Every other response serves integer ids as strings (type drift between pages)
    #[arg(long)]
    pub drift: bool,
    /// One C2S lead's updated_at is in 2204 (a mistyped date)
    #[arg(long)]
    pub future_cursor: bool,
    /// The first N retail portal jobs end FAILED as a whole, with no per-item error
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub job_fail_first: u64,
    /// Retail portal job states: `upper` (COMPLETED) or `title` (Completed, as Hangfire-like APIs)
    #[arg(long, value_name = "STYLE", value_parser = ["upper", "title"], default_value = "upper")]
    pub job_states: String,
}

fn parse_empty_source(s: &str) -> Result<String, String> {
    match crate::sim::empty_kinds(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!("unknown source `{s}` (c2s, pancake, zoho_crm, zoho_desk, ploomes, milvus, retail_portal)")),
    }
}

impl ServeArgs {
    pub fn sim_config(&self) -> crate::sim::SimConfig {
        crate::sim::SimConfig {
            seed: self.seed,
            days: self.days,
            scale: self.scale,
            rate_window: self.rate_window,
            no_rate_limit: self.no_rate_limit,
            pages: self.pages,
            fail_every: self.fail_every,
            truncate_every: self.truncate_every,
            slow_every: self.slow_every,
            slow_ms: self.slow_ms,
            live_updates: self.live_updates,
            fractional: self.fractional,
            ignore_filter_every: self.ignore_filter_every,
            no_retry_after: self.no_retry_after,
            late_after: self.late_after,
            omit_optional: self.omit_optional,
            token_ttl: self.token_ttl,
            rotate_refresh: self.rotate_refresh,
            products: self.products,
            job_items_per_sec: self.job_items_per_sec,
            reply_delay_ms: self.reply_delay_ms,
            milvus_clients: self.milvus_clients,
            sparse: self.sparse,
            empty: self.empty.clone(),
            drift: self.drift,
            job_fail_first: self.job_fail_first,
            job_states_title: self.job_states == "title",
            future_cursor: self.future_cursor,
        }
    }
}


/// `--memory-limit`: a size, or no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Bytes(usize),
    None,
}

fn parse_limit(s: &str) -> Result<Limit, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "unlimited" => Ok(Limit::None),
        _ => crate::config::parse_size(s).map(Limit::Bytes),
    }
}
