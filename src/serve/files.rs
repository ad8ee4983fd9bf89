//! Pipeline files and SQL models over HTTP, and their change history (seed 004: each change
//! recorded with the key's name).
//!
//! A `PUT` is validated exactly as the CLI validates (the pipeline loaded from a scratch copy;
//! the model parsed) before anything is written: invalid → 400 with file, line and field, the
//! file untouched. Valid → written atomically (a temporary file renamed over it) and one row
//! appended to the Delta table `<lake>/_ingest/config_history`: time, key name, file, SHA-256
//! before and after (empty when there was no file / is none now), and a unified diff. Files
//! are served as written: `${secret:…}` references, never values.
//!
//! Seed 004's own configs go to `/api/extractor-configs/{name}` as the JSON its users have:
//! imported exactly as `ingest import extractor --name <name>` (`crate::import`) — the whole
//! import validated first (400 naming the JSON path and line), then each file that changes
//! written and recorded like a `PUT` of it: the pipeline, one model per extraction, and the
//! JSON itself (`pipelines/<name>.extractor.json`, what `GET` answers).
use super::auth::Caller;
use super::{fail, internal, App};
use crate::error::{Error, Result};
use crate::lake::state::{open_or_create_table, open_table, select, to_batch};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const HISTORY: &str = "_ingest/config_history";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub time: String,
    pub key_name: String,
    pub file: String,
    pub before_sha256: String,
    pub after_sha256: String,
    pub diff: String,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("key_name", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("before_sha256", DataType::Utf8, false),
        Field::new("after_sha256", DataType::Utf8, false),
        Field::new("diff", DataType::Utf8, false),
    ]))
}

/// Which kind of file a route manages.
#[derive(Clone, Copy)]
enum Kind {
    Pipeline,
    Model,
}

impl Kind {
    /// The file for `name` (`zoho_crm`; `silver/c2s_leads`), or None for a name that could
    /// leave the folder.
    fn file(self, app: &App, name: &str) -> Option<(PathBuf, String)> {
        let ok = |s: &str| !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && !s.starts_with('-');
        match self {
            Kind::Pipeline => ok(name).then(|| (app.pipelines.join(format!("{name}.toml")), format!("pipelines/{name}.toml"))),
            Kind::Model => {
                let parts: Vec<&str> = name.trim_end_matches(".sql").split('/').collect();
                (parts.len() == 2 && parts.iter().all(|p| ok(p))).then(|| (app.sql.join(parts[0]).join(format!("{}.sql", parts[1])), format!("sql/{}/{}.sql", parts[0], parts[1])))
            }
        }
    }

    /// Validate `text` as this kind of file named `name`: the error as the CLI words it, with
    /// the file as the API names it.
    fn check(self, app: &App, name: &str, shown: &str, text: &str) -> std::result::Result<(), String> {
        match self {
            Kind::Pipeline => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let scratch = dir.path().join(format!("{name}.toml"));
                std::fs::write(&scratch, text).map_err(|e| e.to_string())?;
                crate::config::load(dir.path(), name).map(|_| ()).map_err(|e| e.to_string().replace(&scratch.display().to_string(), shown))
            }
            Kind::Model => {
                let _ = app;
                crate::transform::model::parse(shown, text).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

fn sha_of(text: Option<&str>) -> String {
    text.map(super::auth::sha).unwrap_or_default()
}

async fn record(app: &App, c: &Change) -> Result<()> {
    let t = open_or_create_table(&app.lake, HISTORY, "config_history", schema()).await?;
    t.write(vec![to_batch(schema(), std::slice::from_ref(c))?])
        .with_commit_properties(CommitProperties::default().with_max_retries(50))
        .await?;
    Ok(())
}

/// Write `text` to `path` atomically (None: remove it), and record the change.
async fn change(app: &App, caller: &Caller, path: &Path, shown: &str, text: Option<&str>) -> Result<Change> {
    let before = std::fs::read_to_string(path).ok();
    match text {
        Some(t) => {
            let dir = path.parent().ok_or_else(|| Error::Other("no folder".into()))?;
            std::fs::create_dir_all(dir)?;
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::fs::write(tmp.path(), t)?;
            tmp.persist(path).map_err(|e| Error::Io(e.error))?;
        }
        None => std::fs::remove_file(path)?,
    }
    let diff = similar::TextDiff::from_lines(before.as_deref().unwrap_or(""), text.unwrap_or(""))
        .unified_diff()
        .header(&format!("a/{shown}"), &format!("b/{shown}"))
        .to_string();
    let c = Change {
        time: chrono::Utc::now().to_rfc3339(),
        key_name: caller.name.clone(),
        file: shown.to_string(),
        before_sha256: sha_of(before.as_deref()),
        after_sha256: sha_of(text),
        diff,
    };
    record(app, &c).await?;
    tracing::info!(file = shown, key = %caller.name, "configuration changed");
    Ok(c)
}

fn listing(dir: &Path, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Pipeline => crate::config::list_sources(dir),
        Kind::Model => {
            let mut out = Vec::new();
            for schema in std::fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
                for f in std::fs::read_dir(schema.path()).into_iter().flatten().flatten() {
                    let p = f.path();
                    if p.extension().is_some_and(|x| x == "sql") {
                        if let (Some(s), Some(t)) = (schema.file_name().to_str(), p.file_stem().and_then(|x| x.to_str())) {
                            out.push(format!("{s}/{t}"));
                        }
                    }
                }
            }
            out.sort();
            out
        }
    }
}

async fn get_one(app: &App, kind: Kind, name: &str) -> Response {
    let Some((path, shown)) = kind.file(app, name) else { return fail(StatusCode::BAD_REQUEST, format!("`{name}` is not a valid name")) };
    match std::fs::read_to_string(&path) {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(_) => fail(StatusCode::NOT_FOUND, format!("no file {shown}")),
    }
}

async fn put_one(app: &App, caller: &Caller, kind: Kind, name: &str, body: &[u8]) -> Response {
    let Some((path, shown)) = kind.file(app, name) else { return fail(StatusCode::BAD_REQUEST, format!("`{name}` is not a valid name")) };
    let Ok(text) = std::str::from_utf8(body) else { return fail(StatusCode::BAD_REQUEST, "the body must be UTF-8 text") };
    if let Err(m) = kind.check(app, name, &shown, text) {
        return fail(StatusCode::BAD_REQUEST, m);
    }
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
        return Json(json!({"file": shown, "changed": false})).into_response();
    }
    match change(app, caller, &path, &shown, Some(text)).await {
        Ok(c) => Json(json!({"file": shown, "changed": true, "sha256": c.after_sha256})).into_response(),
        Err(e) => internal(e),
    }
}

async fn delete_one(app: &App, caller: &Caller, kind: Kind, name: &str) -> Response {
    let Some((path, shown)) = kind.file(app, name) else { return fail(StatusCode::BAD_REQUEST, format!("`{name}` is not a valid name")) };
    if !path.is_file() {
        return fail(StatusCode::NOT_FOUND, format!("no file {shown}"));
    }
    match change(app, caller, &path, &shown, None).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn list_pipelines(State(app): State<App>) -> Response {
    Json(json!({"pipelines": listing(&app.pipelines, Kind::Pipeline)})).into_response()
}
pub(super) async fn get_pipeline(State(app): State<App>, UrlPath(name): UrlPath<String>) -> Response {
    get_one(&app, Kind::Pipeline, &name).await
}
pub(super) async fn put_pipeline(State(app): State<App>, Extension(c): Extension<Caller>, UrlPath(name): UrlPath<String>, body: axum::body::Bytes) -> Response {
    put_one(&app, &c, Kind::Pipeline, &name, &body).await
}
pub(super) async fn delete_pipeline(State(app): State<App>, Extension(c): Extension<Caller>, UrlPath(name): UrlPath<String>) -> Response {
    delete_one(&app, &c, Kind::Pipeline, &name).await
}
pub(super) async fn list_models(State(app): State<App>) -> Response {
    Json(json!({"models": listing(&app.sql, Kind::Model)})).into_response()
}
pub(super) async fn get_model(State(app): State<App>, UrlPath(name): UrlPath<String>) -> Response {
    get_one(&app, Kind::Model, &name).await
}
pub(super) async fn put_model(State(app): State<App>, Extension(c): Extension<Caller>, UrlPath(name): UrlPath<String>, body: axum::body::Bytes) -> Response {
    put_one(&app, &c, Kind::Model, &name, &body).await
}
pub(super) async fn delete_model(State(app): State<App>, Extension(c): Extension<Caller>, UrlPath(name): UrlPath<String>) -> Response {
    delete_one(&app, &c, Kind::Model, &name).await
}

/// `GET /api/history`: every recorded change, oldest first.
pub(super) async fn history(State(app): State<App>) -> Response {
    let rows: Result<Vec<Change>> = async {
        if open_table(&app.lake, HISTORY).await?.is_none() {
            return Ok(Vec::new());
        }
        select(&app.lake, HISTORY, "ORDER BY time").await
    }
    .await;
    match rows {
        Ok(r) => Json(json!({"changes": r})).into_response(),
        Err(e) => internal(e),
    }
}

/// Where the JSON of source `name` is kept (path, as shown), or the 400 for a bad name.
fn extractor_json(app: &App, name: &str) -> std::result::Result<(PathBuf, String), Response> {
    match crate::import::extractor::source_name_ok(name) {
        true => Ok((app.pipelines.join(format!("{name}.extractor.json")), format!("pipelines/{name}.extractor.json"))),
        false => Err(fail(StatusCode::BAD_REQUEST, format!("`{name}` is not a source name (lower-case letters, digits, _)"))),
    }
}

/// `GET /api/extractor-configs/{name}`: the seed-004 JSON last imported under that name.
pub(super) async fn get_extractor_config(State(app): State<App>, UrlPath(name): UrlPath<String>) -> Response {
    let (path, shown) = match extractor_json(&app, &name) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(_) => fail(StatusCode::NOT_FOUND, format!("no file {shown}")),
    }
}

/// `PUT /api/extractor-configs/{name}`: import a seed-004 JSON config (see the module doc).
pub(super) async fn put_extractor_config(State(app): State<App>, Extension(c): Extension<Caller>, UrlPath(name): UrlPath<String>, body: axum::body::Bytes) -> Response {
    let (path, shown) = match extractor_json(&app, &name) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else { return fail(StatusCode::BAD_REQUEST, "the body must be UTF-8 JSON") };
    let plan = match crate::import::extractor::plan(&shown, text, Some(&name)) {
        Ok(p) => p,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(e) = crate::import::check(&plan, &app.pipelines, &app.sql).await {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    let mut files = vec![(app.pipelines.join(format!("{name}.toml")), format!("pipelines/{name}.toml"), plan.pipeline)];
    files.extend(plan.models.into_iter().map(|(rel, t)| (app.sql.join(&rel), format!("sql/{rel}"), t)));
    files.push((path, shown, text.to_string()));
    let mut changed = Vec::new();
    for (path, shown, t) in files {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(t.as_str()) {
            continue;
        }
        match change(&app, &c, &path, &shown, Some(&t)).await {
            Ok(_) => changed.push(shown),
            Err(e) => return internal(e),
        }
    }
    Json(json!({"source": name, "changed": changed})).into_response()
}
