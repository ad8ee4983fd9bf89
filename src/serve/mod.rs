//! `ingest serve`: seed 004's control plane in the same binary, on the same lake.
//!
//! One long-running process: the schedules of the pipeline files (`scheduler.rs`), an HTTP
//! API to start, watch and cancel runs (`runner.rs`: each run is this binary as a child, so
//! leases, commits and exit codes are the CLI's), to manage API keys (`auth.rs`) and to read
//! and change pipeline files and SQL models with a recorded history (`files.rs`), Prometheus
//! metrics and a status page (`page.rs`). Every route but `/healthz` needs a key.
//!
//! Stopping (SIGTERM or Ctrl-C): no run starts any more, running ones get `--grace` seconds
//! to end on their own (each commits as it goes; a pull's lease is released when it ends),
//! then get SIGTERM (a pull then ends at its next page boundary and releases its lease: see
//! `crate::stop`); the server exits 0. A run cut short is exactly a CLI run cut short: the
//! next run resumes from the last commit.
mod auth;
mod files;
mod page;
mod runner;
mod scheduler;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::stop::Signals;
use auth::{Caller, Denied, Keys};
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runner::{Job, Refused, Runner};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The most bytes a request body may have (a pipeline file or a model is far smaller).
const MAX_BODY: usize = 1 << 20;

pub struct ServeOptions {
    pub addr: String,
    pub lake: String,
    pub pipelines: PathBuf,
    pub sql: PathBuf,
    /// How long running work may take to end after a stop is asked.
    pub grace: Duration,
}

#[derive(Clone)]
struct App {
    lake: Arc<Lake>,
    keys: Arc<Keys>,
    runner: Runner,
    pipelines: PathBuf,
    sql: PathBuf,
}

/// Run the server until SIGTERM or Ctrl-C (see the module doc). Bad schedules, a missing
/// root key or an address in use are errors before anything runs (exit 2).
pub async fn serve(opts: ServeOptions) -> Result<()> {
    let root = std::env::var("INGEST_ROOT_KEY").unwrap_or_default();
    let schedules = crate::config::schedule::load_all(&opts.pipelines)?;
    let lake = Arc::new(Lake::open(&opts.lake)?);
    lake.ready_for_writes().await?;
    let keys = Arc::new(Keys::load(&lake, &root).await?);
    let listener = tokio::net::TcpListener::bind(&opts.addr)
        .await
        .map_err(|e| Error::Usage(format!("--addr {}: {e}", opts.addr)))?;
    let addr = listener.local_addr()?;
    let runner = Runner::new(lake.clone(), opts.lake.clone(), opts.pipelines.clone(), opts.sql.clone());
    let app = App { lake: lake.clone(), keys, runner: runner.clone(), pipelines: opts.pipelines.clone(), sql: opts.sql.clone() };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (source, s) in schedules {
        tasks.push(tokio::spawn(scheduler::run(lake.clone(), runner.clone(), source, s, stop_rx.clone())));
    }
    let router = router(app);
    // Listening for the stop signals before the address is out: a SIGTERM sent as soon as a
    // script reads it must stop the server, not kill it.
    let mut signals = Signals::new()?;
    // The address on stdout (port 0 picks one): scripts and tests read it.
    println!("listening on http://{addr}");
    tracing::info!(%addr, lake = %lake.url, "ingest serve started");
    let mut stopped = stop_rx.clone();
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        });
    let server = tokio::spawn(async move { server.await });
    signals.recv().await;
    tracing::info!(grace_secs = opts.grace.as_secs(), live = runner.live_count(), "stopping: no new runs; running ones may finish within the grace");
    runner.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + opts.grace;
    while runner.live_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if runner.live_count() > 0 {
        tracing::warn!(live = runner.live_count(), "the grace ran out: SIGTERM to the running work");
        runner.terminate_all();
        while runner.live_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = server.await;
    tracing::info!("ingest serve stopped");
    Ok(())
}



fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{name}", axum::routing::delete(delete_key))
        .route("/api/pipelines", get(files::list_pipelines))
        .route("/api/pipelines/{name}", get(files::get_pipeline).put(files::put_pipeline).delete(files::delete_pipeline))
        .route("/api/models", get(files::list_models))
        .route("/api/models/{*path}", get(files::get_model).put(files::put_model).delete(files::delete_model))
        .route("/api/extractor-configs/{name}", get(files::get_extractor_config).put(files::put_extractor_config))
        .route("/api/history", get(files::history))
        .route("/metrics", get(page::metrics))
        .route("/", get(page::status))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(page::login_form).post(page::login))
        .merge(api)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// The key of a request: `Authorization: Bearer`, `X-API-Key`, or the status page's cookie.
fn presented(h: &HeaderMap) -> Option<String> {
    let text = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_string);
    text(header::AUTHORIZATION)
        .and_then(|a| a.strip_prefix("Bearer ").map(|k| k.trim().to_string()))
        .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string()))
        .or_else(|| {
            text(header::COOKIE).and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("ingest_key=").map(|k| percent(k))))
        })
}

fn percent(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

async fn authenticate(State(app): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request, next: Next) -> Response {
    match app.keys.check(presented(req.headers()).as_deref(), peer.ip()) {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(Denied::TooMany) => (StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; wait a minute\n").into_response(),
        Err(Denied::Unknown) => {
            if req.uri().path() == "/" {
                return axum::response::Redirect::to("/login").into_response();
            }
            (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response()
        }
    }
}

/// A JSON error answer.
fn fail(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": crate::secret::redact(&msg.into())}))).into_response()
}

fn internal(e: Error) -> Response {
    fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `POST /api/runs` `{"command": "pull"|"transform"|"push", "source", "from", "to",
/// "streams": [..], "full_refresh", "models": [..], "sink", "dry_run"}` → 202 `{"run_id"}`.
async fn start_run(State(app): State<App>, axum::Extension(caller): axum::Extension<Caller>, body: axum::body::Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return fail(StatusCode::BAD_REQUEST, "the body must be a JSON object with a `command`"),
    };
    let job = match job_of(&app, &v, &caller) {
        Ok(j) => j,
        Err(m) => return fail(StatusCode::BAD_REQUEST, m),
    };
    match app.runner.start(job) {
        Ok((run_id, _)) => (StatusCode::ACCEPTED, Json(json!({"run_id": run_id}))).into_response(),
        Err(Refused::Busy(other)) => fail(StatusCode::CONFLICT, format!("run {other} of the same command and source is running")),
        Err(Refused::Stopping) => fail(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"),
    }
}

/// The child's arguments for a run request, checked before anything starts.
fn job_of(app: &App, v: &Value, caller: &Caller) -> std::result::Result<Job, String> {
    let text = |k: &str| -> std::result::Result<Option<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    let list = |k: &str| -> std::result::Result<Vec<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("`{k}` must be a list of strings"))).collect(),
            Some(_) => Err(format!("`{k}` must be a list of strings")),
        }
    };
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    // Arguments start with a word, never `-`: nothing in a request becomes a global flag.
    let word = |s: &str| -> std::result::Result<(), String> {
        if s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_control()) {
            Err(format!("`{s}` is not a valid name"))
        } else {
            Ok(())
        }
    };
    let known: &[&str] = &["command", "source", "from", "to", "streams", "full_refresh", "models", "sink", "dry_run", "retry_failed", "resend_uncertain"];
    if let Some(k) = v.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown field `{k}` (known: {})", known.join(", ")));
    }
    let command = text("command")?.ok_or("`command` is required: pull, transform or push")?;
    let sources = crate::config::list_sources(&app.pipelines);
    let source = text("source")?;
    let need_source = |s: &Option<String>| -> std::result::Result<String, String> {
        let s = s.clone().ok_or("`source` is required")?;
        if !sources.contains(&s) {
            return Err(format!("no pipeline named `{s}` (pipelines: {})", sources.join(", ")));
        }
        Ok(s)
    };
    let mut args = vec![command.clone()];
    let source = match command.as_str() {
        "pull" => {
            let s = need_source(&source)?;
            args.push(s.clone());
            for k in ["from", "to"] {
                if let Some(d) = text(k)? {
                    crate::config::parse_date(&d).map_err(|m| format!("`{k}`: {m}"))?;
                    args.extend([format!("--{k}"), d]);
                }
            }
            let streams = list("streams")?;
            if !streams.is_empty() {
                streams.iter().try_for_each(|s| word(s))?;
                args.extend(["--streams".into(), streams.join(",")]);
            }
            if flag("full_refresh") {
                args.push("--full-refresh".into());
            }
            s
        }
        "transform" => {
            for m in list("models")? {
                word(&m)?;
                args.push(m);
            }
            if flag("full_refresh") {
                args.push("--full-refresh".into());
            }
            String::new()
        }
        "push" => {
            let s = need_source(&source)?;
            match text("sink")? {
                Some(k) => {
                    word(&k)?;
                    args.push(format!("{s}.{k}"));
                }
                None => args.push(s.clone()),
            }
            for (k, f) in [("dry_run", "--dry-run"), ("retry_failed", "--retry-failed"), ("resend_uncertain", "--resend-uncertain")] {
                if flag(k) {
                    args.push(f.into());
                }
            }
            s
        }
        other => return Err(format!("`command` is `{other}`: expected pull, transform or push")),
    };
    Ok(Job { command, source, args, trigger: "api".into(), key_name: caller.name.clone() })
}

/// A run as the API shows it, with the engine's run-log rows for it (those of `logged` with its
/// run id) under seed 004's names.
fn shown(app: &App, r: &runner::RunRecord, log: Vec<String>, logged: &[crate::lake::runs::RunRow]) -> Value {
    let extractions: Vec<Value> = logged
        .iter()
        .filter(|x| x.run_id == r.run_id)
        .map(|x| {
            json!({
                "extraction_name": x.stream,
                "extraction_id": format!("{}/{}/{}", x.source, x.partition, x.stream),
                "config_name": x.source,
                "config_id": format!("{}.toml", x.source),
                "success": x.success,
                "error": x.error,
                "data_inserted_len": x.records,
                "destiny": format!("{}{}/{}/{}/", app.lake.url, x.source, x.partition, x.stream),
                "last": x.last.as_deref().and_then(|l| serde_json::from_str::<Value>(l).ok()),
                "created_at": x.started,
            })
        })
        .collect();
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["args"] = serde_json::from_str(&r.args).unwrap_or(Value::Null);
    v["success"] = json!(r.state == "success");
    v["extractions"] = json!(extractions);
    if !log.is_empty() {
        v["progress"] = json!(log);
    }
    v
}

async fn get_run(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    match app.runner.get(&id).await {
        Ok(Some((r, log))) => {
            let logged = crate::lake::runs::of_runs(&app.lake, &[r.run_id.as_str()]).await.unwrap_or_default();
            Json(shown(&app, &r, log, &logged)).into_response()
        }
        Ok(None) => fail(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/runs?source=&failed=true&limit=N` (newest last; default limit 100).
async fn list_runs(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let failed = q.get("failed").is_some_and(|v| v == "true" || v == "1");
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
    match app.runner.list(q.get("source").map(String::as_str), failed).await {
        Ok(runs) => {
            let page = &runs[runs.len().saturating_sub(limit)..];
            // The run log read once for the whole page.
            let ids: Vec<&str> = page.iter().map(|r| r.run_id.as_str()).collect();
            let logged = crate::lake::runs::of_runs(&app.lake, &ids).await.unwrap_or_default();
            let out: Vec<Value> = page.iter().map(|r| shown(&app, r, Vec::new(), &logged)).collect();
            Json(json!({"runs": out})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn cancel_run(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    if app.runner.cancel(&id) {
        (StatusCode::ACCEPTED, Json(json!({"run_id": id, "state": "cancelling"}))).into_response()
    } else {
        fail(StatusCode::NOT_FOUND, format!("no running run {id}"))
    }
}

async fn list_keys(State(app): State<App>) -> Response {
    Json(json!({"keys": app.keys.list()})).into_response()
}

/// `POST /api/keys {"name"}` (root key only) → the key, shown this once.
async fn create_key(State(app): State<App>, axum::Extension(caller): axum::Extension<Caller>, body: axum::body::Bytes) -> Response {
    if !caller.root {
        return fail(StatusCode::FORBIDDEN, "only the root key creates keys");
    }
    let name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["name"].as_str().map(str::to_string));
    let Some(name) = name else { return fail(StatusCode::BAD_REQUEST, "the body must be {\"name\": \"…\"}") };
    match app.keys.create(&app.lake, &name).await {
        Ok(key) => {
            tracing::info!(name = %name, "API key created");
            (StatusCode::CREATED, Json(json!({"name": name, "key": key, "note": "shown once: only its hash is kept"}))).into_response()
        }
        Err(Error::Usage(m)) => fail(StatusCode::CONFLICT, m),
        Err(e) => internal(e),
    }
}

async fn delete_key(State(app): State<App>, axum::Extension(caller): axum::Extension<Caller>, UrlPath(name): UrlPath<String>) -> Response {
    if !caller.root {
        return fail(StatusCode::FORBIDDEN, "only the root key deletes keys");
    }
    match app.keys.delete(&app.lake, &name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => fail(StatusCode::NOT_FOUND, format!("no key named {name}")),
        Err(e) => internal(e),
    }
}
