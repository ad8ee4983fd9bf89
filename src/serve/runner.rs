//! Runs started by the server: each one is this same binary as a child process (`ingest pull
//! …`, `ingest transform`, `ingest push …`) on the server's lake, pipelines and SQL folders,
//! with `INGEST_RUN_ID` set so the engine's run-log rows carry the server's run id. A child is
//! the CLI exactly: the same leases (a pull the CLI is running makes a scheduled one exit 1,
//! logged as `skipped`), the same commits, the same exit codes; a crash in one run never takes
//! the server down, and a cancel is a SIGTERM to that child.
//!
//! The server's own record of each run (command, trigger, key, state, error, records) is a row
//! of the Delta table `<lake>/_ingest/serve_runs`, appended when the run ends; runs still
//! queued or running are held in memory.
use crate::error::Result;
use crate::lake::state::{open_or_create_table, select, sql_text, to_batch};
use crate::lake::{runs, Lake};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncBufReadExt;

pub const SERVE_RUNS: &str = "_ingest/serve_runs";
/// Lines of a running child's log kept for `GET /api/runs/{id}`.
const TAIL: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// `pull`, `transform` or `push`.
    pub command: String,
    /// The source (pull, push) or empty (transform).
    pub source: String,
    /// The child's arguments after the global flags, JSON array.
    pub args: String,
    /// `api` or `schedule`.
    pub trigger: String,
    /// The API key's name that started it (`schedule` for scheduled runs).
    pub key_name: String,
    /// `queued`, `running`, `success`, `failed`, `skipped` (another run held the lease) or `cancelled`.
    pub state: String,
    pub error: Option<String>,
    pub started: String,
    pub ended: Option<String>,
    /// Records landed (pull) or sent (push), from the run log.
    pub records: i64,
}

fn schema() -> SchemaRef {
    let ts = |null| Field::new("", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), null);
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("command", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("args", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        ts(false).with_name("started"),
        ts(true).with_name("ended"),
        Field::new("records", DataType::Int64, false),
    ]))
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Job {
    pub command: String,
    pub source: String,
    pub args: Vec<String>,
    pub trigger: String,
    pub key_name: String,
}

struct Live {
    record: RunRecord,
    log: VecDeque<String>,
    pid: Option<u32>,
}

/// The server's runs: the live ones in memory, the ended ones in `_ingest/serve_runs`.
#[derive(Clone)]
pub struct Runner {
    lake: Arc<Lake>,
    lake_spec: String,
    pipelines: PathBuf,
    sql: PathBuf,
    live: Arc<Mutex<BTreeMap<String, Live>>>,
    /// Set once the server is stopping: no run starts.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a run was not started.
#[derive(Debug)]
pub enum Refused {
    /// A run of the same command and source is queued or running here (its id).
    Busy(String),
    Stopping,
}

impl Runner {
    pub fn new(lake: Arc<Lake>, lake_spec: String, pipelines: PathBuf, sql: PathBuf) -> Runner {
        Runner { lake, lake_spec, pipelines, sql, live: Default::default(), stopping: Default::default() }
    }

    /// Start `job` now (its record in `running` state) unless a run of the same command and
    /// source is live here. Returns its id at once; `done` gets its final record.
    pub fn start(&self, job: Job) -> std::result::Result<(String, tokio::task::JoinHandle<RunRecord>), Refused> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Refused::Stopping);
        }
        let run_id = uuid::Uuid::new_v4().to_string();
        {
            let mut live = self.live.lock().unwrap();
            if let Some(other) = live.values().find(|l| l.record.command == job.command && l.record.source == job.source) {
                return Err(Refused::Busy(other.record.run_id.clone()));
            }
            live.insert(
                run_id.clone(),
                Live {
                    record: RunRecord {
                        run_id: run_id.clone(),
                        command: job.command.clone(),
                        source: job.source.clone(),
                        args: serde_json::to_string(&job.args).unwrap_or_default(),
                        trigger: job.trigger.clone(),
                        key_name: job.key_name.clone(),
                        state: "running".into(),
                        error: None,
                        started: chrono::Utc::now().to_rfc3339(),
                        ended: None,
                        records: 0,
                    },
                    log: VecDeque::new(),
                    pid: None,
                },
            );
        }
        let me = self.clone();
        let id = run_id.clone();
        let handle = tokio::spawn(async move { me.run(id, job).await });
        Ok((run_id, handle))
    }

    async fn run(&self, run_id: String, job: Job) -> RunRecord {
        let (state, error) = match self.child(&run_id, &job).await {
            Ok((0, _)) => ("success", None),
            Ok((_, err)) if self.cancelled(&run_id) => ("cancelled", err),
            Ok((_, Some(e))) if e.contains("is running since") => ("skipped", Some(e)),
            Ok((code, err)) => ("failed", Some(err.unwrap_or_else(|| format!("exit code {code}")))),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let records = match runs::of_runs(&self.lake, &[run_id.as_str()]).await {
            Ok(rows) => rows.iter().map(|r| r.records).sum(),
            Err(_) => 0,
        };
        let mut record = self.live.lock().unwrap().get(&run_id).map(|l| l.record.clone()).expect("live run");
        record.state = state.into();
        record.error = error.map(|e| crate::secret::redact(&e));
        record.ended = Some(chrono::Utc::now().to_rfc3339());
        record.records = records;
        if let Err(e) = self.append(&record).await {
            tracing::error!(run_id = %run_id, error = %e, "could not record the run in {SERVE_RUNS}");
        }
        tracing::info!(run_id = %run_id, command = %record.command, source = %record.source, state = %record.state, records, "run ended");
        self.live.lock().unwrap().remove(&run_id);
        record
    }

    /// Record `job` as `skipped` without running it (`why`: another run held its source).
    pub async fn record_skipped(&self, job: &Job, why: &str) {
        let now = chrono::Utc::now().to_rfc3339();
        let r = RunRecord {
            run_id: uuid::Uuid::new_v4().to_string(),
            command: job.command.clone(),
            source: job.source.clone(),
            args: serde_json::to_string(&job.args).unwrap_or_default(),
            trigger: job.trigger.clone(),
            key_name: job.key_name.clone(),
            state: "skipped".into(),
            error: Some(why.to_string()),
            started: now.clone(),
            ended: Some(now),
            records: 0,
        };
        if let Err(e) = self.append(&r).await {
            tracing::error!(error = %e, "could not record a skipped run in {SERVE_RUNS}");
        }
    }

    fn cancelled(&self, run_id: &str) -> bool {
        self.live.lock().unwrap().get(run_id).is_some_and(|l| l.record.state == "cancelling")
    }

    /// The child: exit code and its last `error:` line.
    async fn child(&self, run_id: &str, job: &Job) -> Result<(i32, Option<String>)> {
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--lake")
            .arg(&self.lake_spec)
            .arg("--pipelines")
            .arg(&self.pipelines)
            .arg("--sql")
            .arg(&self.sql)
            .args(&job.args)
            .env("INGEST_RUN_ID", run_id)
            // The server's root key is the server's alone.
            .env_remove("INGEST_ROOT_KEY")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(l) = self.live.lock().unwrap().get_mut(run_id) {
            l.pid = child.id();
            // Cancelled before it started: stopped at once.
            if let (Some(pid), "cancelling") = (l.pid, l.record.state.as_str()) {
                terminate(pid);
            }
        }
        let mut last_error = None;
        if let Some(err) = child.stderr.take() {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = crate::secret::redact(&line);
                if let Some(e) = line.strip_prefix("error: ") {
                    last_error = Some(e.to_string());
                }
                if let Some(l) = self.live.lock().unwrap().get_mut(run_id) {
                    if l.log.len() == TAIL {
                        l.log.pop_front();
                    }
                    l.log.push_back(line);
                }
            }
        }
        let status = child.wait().await?;
        Ok((status.code().unwrap_or(-1), last_error))
    }

    /// SIGTERM to a live run's child; false when no such run is live.
    pub fn cancel(&self, run_id: &str) -> bool {
        let mut live = self.live.lock().unwrap();
        let Some(l) = live.get_mut(run_id) else { return false };
        l.record.state = "cancelling".into();
        if let Some(pid) = l.pid {
            terminate(pid);
        }
        true
    }

    /// SIGTERM to every live child (the server's grace ran out).
    pub fn terminate_all(&self) {
        for l in self.live.lock().unwrap().values() {
            if let Some(pid) = l.pid {
                terminate(pid);
            }
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// One run: live (with its log's last lines) or recorded.
    pub async fn get(&self, run_id: &str) -> Result<Option<(RunRecord, Vec<String>)>> {
        if let Some(l) = self.live.lock().unwrap().get(run_id) {
            return Ok(Some((l.record.clone(), l.log.iter().cloned().collect())));
        }
        let rows: Vec<RunRecord> = self.recorded(&format!("WHERE run_id = {}", sql_text(run_id))).await?;
        Ok(rows.into_iter().next().map(|r| (r, Vec::new())))
    }

    /// Every run, recorded then live, oldest first; of `source` only when given, failed only
    /// when `failed`.
    pub async fn list(&self, source: Option<&str>, failed: bool) -> Result<Vec<RunRecord>> {
        let mut conds = Vec::new();
        if let Some(s) = source {
            conds.push(format!("source = {}", sql_text(s)));
        }
        if failed {
            conds.push("state = 'failed'".into());
        }
        let tail = if conds.is_empty() { "ORDER BY started".to_string() } else { format!("WHERE {} ORDER BY started", conds.join(" AND ")) };
        let mut out = self.recorded(&tail).await?;
        if !failed {
            out.extend(self.live.lock().unwrap().values().filter(|l| source.is_none_or(|s| l.record.source == s)).map(|l| l.record.clone()));
        }
        Ok(out)
    }

    async fn recorded(&self, tail: &str) -> Result<Vec<RunRecord>> {
        if crate::lake::state::open_table(&self.lake, SERVE_RUNS).await?.is_none() {
            return Ok(Vec::new());
        }
        select(&self.lake, SERVE_RUNS, tail).await
    }

    async fn append(&self, r: &RunRecord) -> Result<()> {
        let t = open_or_create_table(&self.lake, SERVE_RUNS, "serve_runs", schema()).await?;
        t.write(vec![to_batch(schema(), std::slice::from_ref(r))?])
            .with_commit_properties(CommitProperties::default().with_max_retries(50))
            .await?;
        Ok(())
    }
}

fn terminate(pid: u32) {
    // The child is ours (spawned above and not yet reaped): no other process has this pid.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}
