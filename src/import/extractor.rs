//! Seed 004's extractor config (one JSON document: `name`, `auth`, `extractions[]`) read into
//! the text of one pipeline file and one SQL model per extraction. Every part of the config
//! the seed documents maps to something `ingest` runs; anything else is an error naming its
//! JSON path and line, found before a file is written.
//!
//! | seed 004 | ingest |
//! |---|---|
//! | `auth.refresh_token` (`endpoint`, `response_token_key`) | `[source.auth] type = "refresh"` |
//! | `auth.access_token` without a refresh | `bearer` / `query` auth with its `${secret:…}` |
//! | `${self::auth.access_token}` in a header / query param | where the auth puts the token (`header` + `prefix`, or `param`) |
//! | `${secret::name}` | `${secret:NAME}` |
//! | `$(last::field, <instant>)` as a whole header / param value | `incremental` on `field` (bound in that header / param, `start` = the default) |
//! | `$(last::field, default)` elsewhere | `${last:field:-default}` (the previous run's last record) |
//! | `${self::path}` (any other) | the config's value at `path`, written in |
//! | `endpoint.url` | `base_url` = `${env:<NAME>_BASE_URL:-<its origin>}` + the stream's `path` |
//! | `data_key` | `records` |
//! | `pagination` sequential / link | `page_number` (`start`, `step`, `continue_if`, …) / `next_link` |
//! | `data_schema` | `[streams.<x>.schema]` (every field, so absent ones are NULL columns) and the model's SELECT, columns in the seed's order |
//! | `transformations` | SQL functions in the SELECT, highest `priority` first (README's table) |
//! | `mapping_fetch` | `details` (its URL may be on another host; the item's values go in as `{record.<field>}`, an optional `data_key` picks the detail in the answer) + a join in the model, columns under `prefix` |
//! | `format`, `output_params`, `s3_destiny` | the model's `-- output:` (`to` = `${env:<NAME>_OUTPUT_URL:-s3://<bucket>}/<folder>`) |
use super::cx::*;
use super::json_at;
use super::model::{self, declaration, schema, Detail, Leaf, Spec};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// What an import writes: `pipelines/<source>.toml` and `sql/<rel>` files.
#[derive(Debug)]
pub struct Plan {
    pub source: String,
    pub pipeline: String,
    /// (path under the SQL folder, text)
    pub models: Vec<(String, String)>,
}

struct Auth {
    /// `[source.auth]` lines without the placement (`header`/`prefix`/`param`).
    lines: Vec<String>,
    refresh: bool,
}

fn auth(cx: &Cx, v: Option<&Value>) -> Result<Option<Auth>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    // The seed's own example writes `endpoint` and `response_token_key` right under `auth`.
    let m = cx.obj(v, "auth", &["refresh_token", "access_token", "endpoint", "response_token_key"])?;
    let (refresh, rpath) = match (m.get("refresh_token").filter(|x| !x.is_null()), m.get("endpoint")) {
        (Some(r), None) => (Some(cx.obj(r, "auth.refresh_token", &["endpoint", "response_token_key"])?), "auth.refresh_token".to_string()),
        (None, Some(_)) => (Some(m), "auth".to_string()),
        (Some(_), Some(_)) => return Err(cx.err("auth.endpoint", "either auth.refresh_token or auth.endpoint, not both")),
        (None, None) => (None, String::new()),
    };
    if let Some(r) = refresh {
        let ep = r.get("endpoint").ok_or_else(|| cx.err(&join(&rpath, "endpoint"), "required: where the token is refreshed"))?;
        let ep_path = join(&rpath, "endpoint");
        let e = cx.obj(ep, &ep_path, &["url", "query_params", "headers", "body"])?;
        let (origin, path, url_params) = cx.url(e, &ep_path)?;
        let mut lines = vec![
            format!("# auth.refresh_token: the access token from {origin}{path}, refreshed before it expires and on a 401."),
            "type = \"refresh\"".into(),
            format!("url = {}", q(&format!("${{env:{}_AUTH_URL:-{origin}}}{path}", cx.env))),
            "# the seed's endpoint has no method: POST, as token endpoints (Zoho's among them) want".into(),
            "method = \"POST\"".into(),
        ];
        let mut qp: Vec<String> = url_params.iter().map(|(k, v)| format!("{} = {}", key(k), q(v))).collect();
        if let Some(x) = e.get("query_params").filter(|x| !x.is_null()) {
            let at = join(&ep_path, "query_params");
            for (k, v) in x.as_object().ok_or_else(|| cx.err(&at, "expected an object"))? {
                let kp = join(&at, k);
                qp.push(format!("{} = {}", key(k), q(&cx.text(&cx.scalar(v, &kp)?, &kp)?)));
            }
        }
        if !qp.is_empty() {
            lines.push(format!("query_params = {{ {} }}", qp.join(", ")));
        }
        if let Some(x) = e.get("headers").filter(|x| !x.is_null()) {
            let at = join(&ep_path, "headers");
            let mut hs = Vec::new();
            for (k, v) in x.as_object().ok_or_else(|| cx.err(&at, "expected an object"))? {
                let kp = join(&at, k);
                hs.push(format!("{} = {}", key(k), q(&cx.text(&cx.scalar(v, &kp)?, &kp)?)));
            }
            lines.push(format!("headers = {{ {} }}", hs.join(", ")));
        }
        if let Some(b) = e.get("body").filter(|x| !x.is_null()) {
            lines.push(format!("body = {}", cx.body(b, &join(&ep_path, "body"), false)?));
        }
        let tk = cx.req_str(r, &rpath, "response_token_key")?;
        lines.push(format!("response_token_key = {}", q(tk)));
        return Ok(Some(Auth { lines, refresh: true }));
    }
    match cx.opt_str(m, "auth", "access_token")? {
        None | Some("") => Ok(None),
        Some(t) => {
            let token = cx.text(t, "auth.access_token")?;
            if !token.contains("${secret:") {
                return Err(cx.err("auth.access_token", "a token written in the config: keep it in a secret and write `${secret::name}`"));
            }
            Ok(Some(Auth { lines: vec![format!("token = {}", q(&token))], refresh: false }))
        }
    }
}

/// One extraction's stream section(s) and model.
struct Extraction {
    stream: String,
    toml: String,
    model_rel: String,
    model: String,
    origin: String,
    place: Option<Place>,
}

fn extraction(cx: &Cx, v: &Value, i: usize, source: &str, file_name: &str) -> Result<Extraction> {
    let at = format!("extractions[{i}]");
    let m = cx.obj(
        v,
        &at,
        &["id", "name", "endpoint", "data_key", "format", "output_params", "transformations", "pagination", "data_schema", "mapping_fetch", "s3_destiny"],
    )?;
    let raw_name = cx.req_str(m, &at, "name")?;
    let stream = slug(raw_name);
    if stream.is_empty() {
        return Err(cx.err(&join(&at, "name"), format!("`{raw_name}` has no letter or digit to name a stream with")));
    }
    let mut t = String::new();
    writeln!(t, "# {at}: \"{}\"", raw_name.replace('\n', " ")).unwrap();
    writeln!(t, "[streams.{stream}]").unwrap();

    // endpoint
    let ep_path = join(&at, "endpoint");
    let ep = cx.obj(m.get("endpoint").ok_or_else(|| cx.err(&ep_path, "required"))?, &ep_path, &["url", "query_params", "headers", "body"])?;
    let (origin, path, url_params) = cx.url(ep, &ep_path)?;
    writeln!(t, "path = {}", q(&path)).unwrap();
    let mut place = None;
    let mut cursor: Option<(String, String, bool, Option<String>)> = None; // (field, name, is_header, start)
    let mut take = |val: Val, name: &str, is_header: bool, kp: &str, out: &mut Vec<String>| -> Result<()> {
        match val {
            Val::Text(s) => out.push(format!("{} = {}", key(name), q(&s))),
            Val::Token(p) => {
                if place.is_some() {
                    return Err(cx.err(kp, "the token is written a second time: a source sends it in one header or one parameter"));
                }
                place = Some(p)
            }
            Val::Cursor { field, start } => {
                if cursor.is_some() {
                    return Err(cx.err(kp, "a second `last::` bound: ingest keeps one incremental cursor a stream"));
                }
                cursor = Some((field, name.to_string(), is_header, start));
            }
        }
        Ok(())
    };
    let mut params: Vec<String> = url_params.iter().map(|(k, v)| format!("{} = {}", key(k), q(v))).collect();
    let all = Allow { token: true, last: true };
    if let Some(x) = ep.get("query_params").filter(|x| !x.is_null()) {
        let qp = join(&ep_path, "query_params");
        for (k, v) in x.as_object().ok_or_else(|| cx.err(&qp, "expected an object"))? {
            let kp = join(&qp, k);
            let val = cx.value(&cx.scalar(v, &kp)?, &kp, all, Some(Place::Param { name: k.clone() }))?;
            take(val, k, false, &kp, &mut params)?;
        }
    }
    let mut headers = Vec::new();
    if let Some(x) = ep.get("headers").filter(|x| !x.is_null()) {
        let hp = join(&ep_path, "headers");
        for (k, v) in x.as_object().ok_or_else(|| cx.err(&hp, "expected an object"))? {
            let kp = join(&hp, k);
            let val = cx.value(&cx.scalar(v, &kp)?, &kp, all, Some(Place::Header { name: k.clone(), prefix: String::new() }))?;
            take(val, k, true, &kp, &mut headers)?;
        }
    }
    if !params.is_empty() {
        writeln!(t, "params = {{ {} }}", params.join(", ")).unwrap();
    }
    if !headers.is_empty() {
        writeln!(t, "headers = {{ {} }}", headers.join(", ")).unwrap();
    }
    if let Some(b) = ep.get("body").filter(|x| !x.is_null()) {
        writeln!(t, "# endpoint.body: sent as JSON, so the request is a POST").unwrap();
        writeln!(t, "method = \"POST\"").unwrap();
        writeln!(t, "body = {}", cx.body(b, &join(&ep_path, "body"), true)?).unwrap();
    }
    if let Some(dk) = cx.opt_str(m, &at, "data_key")? {
        writeln!(t, "records = {}", q(dk)).unwrap();
    } else {
        writeln!(t, "# no data_key: the body itself is the list of items").unwrap();
    }

    // data_schema
    let mut leaves = Vec::new();
    if let Some(ds) = m.get("data_schema").filter(|x| !x.is_null()) {
        schema(cx, ds, &join(&at, "data_schema"), &[], &mut leaves)?;
    }
    let key_leaf = leaves.iter().find(|l| l.path == ["id"]).cloned();
    if let Some(k) = &key_leaf {
        writeln!(t, "# data_schema maps the items' `id`: the key the model merges on").unwrap();
        writeln!(t, "primary_key = {}", q(&k.path[0])).unwrap();
    }

    if let Some(p) = m.get("pagination").filter(|x| !x.is_null()) {
        writeln!(t, "{}", pagination(cx, p, &join(&at, "pagination"))?).unwrap();
    }

    // incremental
    if let Some((field, name, is_header, start)) = &cursor {
        writeln!(t, "# `$(last::{field}, …)`: the stream is incremental on {field}, its bound in {} `{name}`", if *is_header { "header" } else { "query parameter" }).unwrap();
        let mut f = vec![format!("cursor = {}", q(field)), format!("{} = {}", if *is_header { "header" } else { "param" }, q(name)), "format = \"%Y-%m-%dT%H:%M:%S%:z\"".into()];
        if let Some(s) = start {
            f.push(format!("start = {}", q(s)));
        }
        writeln!(t, "incremental = {{ {} }}", f.join(", ")).unwrap();
    }

    let mut detail: Option<Detail> = None;
    if let Some(mf) = m.get("mapping_fetch").filter(|x| !x.is_null()) {
        let (lines, d) = mapping_fetch(cx, mf, &join(&at, "mapping_fetch"), &origin, &stream, &leaves)?;
        t.push_str(&lines);
        detail = Some(d);
    }

    if !leaves.is_empty() {
        writeln!(t, "\n# data_schema: every field the seed's CSV has, so one no item carries is still a (NULL) column").unwrap();
        writeln!(t, "[streams.{stream}.schema]").unwrap();
        for l in declaration(&leaves) {
            writeln!(t, "{l}").unwrap();
        }
    }
    if let Some(d) = &detail {
        writeln!(t, "\n# mapping_fetch.data_schema, and what a detail fetch adds").unwrap();
        writeln!(t, "[schemas.{}]", d.stream).unwrap();
        for l in declaration(&d.leaves) {
            writeln!(t, "{l}").unwrap();
        }
        writeln!(t, "_parent_key = \"string\"\n_parent_cursor = \"string\"\n_detail_status = \"int\"").unwrap();
    }

    let output = model::output(cx, m, &at, &stream)?;
    let spec = Spec {
        source,
        stream: &stream,
        at: &at,
        raw_name,
        file_name,
        leaves: &leaves,
        key: key_leaf.as_ref(),
        cursor: cursor.as_ref().map(|c| c.0.as_str()),
        detail: detail.as_ref(),
        output,
    };
    let (model_rel, model) = model::model(cx, m, &spec)?;
    Ok(Extraction { stream, toml: t, model_rel, model, origin, place })
}

/// `pagination` (at `pp`) as the stream's `pagination = { … }` line.
fn pagination(cx: &Cx, p: &Value, pp: &str) -> Result<String> {
    let pm = cx.obj(p, &pp, &["type", "parameters"])?;
    let kind = cx.req_str(pm, &pp, "type")?;
    let par_path = join(&pp, "parameters");
    let empty = Value::Object(Map::new());
    let par = pm.get("parameters").filter(|x| !x.is_null()).unwrap_or(&empty);
    match kind {
        "sequential" => {
            let x = cx.obj(par, &par_path, &["param_name", "start_from", "step", "there_are_more_pages", "continue_while_status_code_is", "stop_when_response_body_is_empty"])?;
            let mut f = vec!["type = \"page_number\"".to_string(), format!("param = {}", q(cx.req_str(x, &par_path, "param_name")?))];
            if let Some(s) = cx.opt_int(x, &par_path, "start_from")? {
                f.push(format!("start = {s}"));
            }
            match cx.opt_int(x, &par_path, "step")? {
                Some(s) if s < 1 => return Err(cx.err(&join(&par_path, "step"), "a step of 1 or more")),
                Some(s) => f.push(format!("step = {s}")),
                None => {}
            }
            if let Some(c) = cx.opt_str(x, &par_path, "there_are_more_pages")? {
                crate::json::Condition::parse(c).map_err(|e| cx.err(&join(&par_path, "there_are_more_pages"), e))?;
                f.push(format!("continue_if = {}", q(c)));
            }
            let status = cx.opt_int(x, &par_path, "continue_while_status_code_is")?;
            let stop_empty = cx.opt_bool(x, &par_path, "stop_when_response_body_is_empty")?.unwrap_or(false);
            if status.is_some() && stop_empty {
                return Err(cx.err(
                    &join(&par_path, "stop_when_response_body_is_empty"),
                    "continue_while_status_code_is and stop_when_response_body_is_empty cannot both be set (seed 004: choose one)",
                ));
            }
            if let Some(s) = status {
                if !(100..=599).contains(&s) {
                    return Err(cx.err(&join(&par_path, "continue_while_status_code_is"), "an HTTP status code"));
                }
                f.push(format!("continue_while_status_code_is = {s}"));
            }
            if stop_empty {
                f.push("stop_when_response_body_is_empty = true".into());
            }
            Ok(format!("pagination = {{ {} }}", f.join(", ")))
        }
        "link" => {
            let x = cx.obj(par, &par_path, &["next_link"])?;
            Ok(format!("pagination = {{ type = \"next_link\", next = {} }}", q(cx.req_str(x, &par_path, "next_link")?)))
        }
        other => return Err(cx.err(&join(&pp, "type"), format!("`{other}`: sequential or link"))),
    }
}

/// `mapping_fetch` (at `mp`) as the stream's `details = { … }` line (with its comment) and
/// what the model joins.
fn mapping_fetch(cx: &Cx, mf: &Value, mp: &str, origin: &str, stream: &str, leaves: &[Leaf]) -> Result<(String, Detail)> {
    // `data_key` is ingest's addition (the seed passes the whole answer through the
    // data_schema): where in the answer the detail is, the first item when it is a list.
    let mm = cx.obj(mf, mp, &["endpoint", "prefix", "data_schema", "data_key"])?;
    if !leaves.iter().any(|l| l.path == ["id"]) {
        return Err(cx.err(mp, "the model joins each item's detail on its `id`: map `id` in data_schema"));
    }
    let mut out = String::new();
    let mep = join(mp, "endpoint");
    let me = cx.obj(mm.get("endpoint").ok_or_else(|| cx.err(&mep, "required"))?, &mep, &["url", "query_params", "headers"])?;
    let (dorigin, dpath, mut dparams) = cx.url(me, &mep)?;
    if let Some(x) = me.get("query_params").filter(|x| !x.is_null()) {
        let qp = join(&mep, "query_params");
        for (k, v) in x.as_object().ok_or_else(|| cx.err(&qp, "expected an object"))? {
            let kp = join(&qp, k);
            let v = cx.text(&cx.scalar(v, &kp)?, &kp)?;
            // Written into the detail URL as they are (its `{record.…}` must stay whole).
            if k.contains([' ', '&', '#', '+', '%', '?', '=']) || v.contains([' ', '&', '#', '+', '%', '?', '=']) {
                return Err(cx.err(&kp, "a character a URL must encode: write this parameter into endpoint.url, encoded"));
            }
            dparams.push((k.clone(), v));
        }
    }
    // Another host is pointed elsewhere by `<NAME>_<STREAM>_DETAILS_URL`, like the base URL.
    let mut full = if dorigin == origin {
        dpath.clone()
    } else {
        format!("${{env:{}_{}_DETAILS_URL:-{dorigin}}}{dpath}", cx.env, stream.to_uppercase())
    };
    if !dparams.is_empty() {
        let enc: Vec<String> = dparams.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(full, "?{}", enc.join("&")).unwrap();
    }
    if !full.contains("{record.") {
        return Err(cx.err(
            &join(&mep, "url"),
            "the seed names no way to put the item in the request: write `{record.<field>}` where the item's value goes (e.g. `/deals/{record.id}`)",
        ));
    }
    let mut hs = Vec::new();
    if let Some(x) = me.get("headers").filter(|x| !x.is_null()) {
        let hp = join(&mep, "headers");
        for (hk, hv) in x.as_object().ok_or_else(|| cx.err(&hp, "expected an object"))? {
            let kp = join(&hp, hk);
            match cx.value(&cx.scalar(hv, &kp)?, &kp, Allow { token: dorigin == origin, last: false }, Some(Place::Header { name: hk.clone(), prefix: String::new() }))? {
                Val::Text(s) => hs.push(format!("{} = {}", key(hk), q(&s))),
                // The same host: the source's auth sends the token.
                Val::Token(_) => {}
                Val::Cursor { .. } => return Err(cx.err(&kp, "`last::` is not read in a mapping_fetch")),
            }
        }
    }
    let prefix = cx.opt_str(mm, mp, "prefix")?.unwrap_or("").to_string();
    let mut dleaves = Vec::new();
    let dsp = join(mp, "data_schema");
    schema(cx, mm.get("data_schema").filter(|x| !x.is_null()).ok_or_else(|| cx.err(&dsp, "required: the detail fields to keep"))?, &dsp, &[], &mut dleaves)?;
    for l in &dleaves {
        let name = format!("{prefix}{}", l.column);
        if leaves.iter().any(|x| x.column == name) {
            return Err(cx.err(&l.json_path, format!("column `{name}` (with the prefix) is also a column of the extraction's data_schema")));
        }
    }
    let dstream = format!("{stream}_details");
    writeln!(out, "# mapping_fetch: one request per item, landed as raw stream `{dstream}` (each with `_parent_key` = the item's id);").unwrap();
    writeln!(out, "# the model joins it under the prefix `{prefix}`.").unwrap();
    let mut d = vec![format!("path = {}", q(&full)), format!("stream = {}", q(&dstream))];
    if let Some(dk) = cx.opt_str(mm, mp, "data_key")? {
        d.push(format!("records = {}", q(dk)));
    }
    if !hs.is_empty() {
        d.push(format!("headers = {{ {} }}", hs.join(", ")));
    }
    writeln!(out, "details = {{ {} }}", d.join(", ")).unwrap();
    Ok((out, Detail { stream: dstream, prefix, leaves: dleaves }))
}

/// A source name an import writes: lower-case letters, digits and `_`, starting with a letter
/// (it names `pipelines/<name>.toml`, its tables and its `<NAME>_…` variables).
pub fn source_name_ok(s: &str) -> bool {
    s.len() <= 100 && s.starts_with(|c: char| c.is_ascii_lowercase()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Read `text` (the config file `file`) into what the import writes for source `name`.
pub fn plan(file: &str, text: &str, name: Option<&str>) -> Result<Plan> {
    let root: Value = serde_json::from_str(text).map_err(|e| Error::config(file, Some(e.line()), None, format!("not JSON: {e}")))?;
    let cx0 = Cx { file, lines: json_at::lines(text), root: &root, env: String::new() };
    let top = cx0.obj(&root, "", &["id", "name", "auth", "extractions"])?;
    let source = match name {
        Some(n) => n.to_string(),
        None => slug(cx0.req_str(top, "", "name")?),
    };
    if !source_name_ok(&source) {
        return Err(Error::Usage(format!("--name `{source}`: a source name is lower-case letters, digits and `_`, starting with a letter")));
    }
    let cx = Cx { env: source.to_uppercase(), ..cx0 };
    let auth = auth(&cx, top.get("auth"))?;
    let ex = top.get("extractions").and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(|| cx.err("extractions", "required: a non-empty list"))?;
    let file_name = std::path::Path::new(file).file_name().map_or(file.to_string(), |f| f.to_string_lossy().into_owned());
    let mut done: Vec<Extraction> = Vec::new();
    for (i, v) in ex.iter().enumerate() {
        let e = extraction(&cx, v, i, &source, &file_name)?;
        if done.iter().any(|d| d.stream == e.stream) {
            return Err(cx.err(&format!("extractions[{i}].name"), format!("a second extraction named `{}`", e.stream)));
        }
        if e.origin != done.first().map_or(e.origin.clone(), |d| d.origin.clone()) {
            return Err(cx.err(
                &format!("extractions[{i}].endpoint.url"),
                format!("{} is another host than extractions[0]'s {}: one pipeline has one base URL — import this extraction on its own (`--name`)", e.origin, done[0].origin),
            ));
        }
        if let (Some(a), Some(b)) = (done.iter().find_map(|d| d.place.clone()), &e.place) {
            if &a != b {
                return Err(cx.err(&format!("extractions[{i}].endpoint"), "the token goes elsewhere than in the earlier extractions: one source sends it one way"));
            }
        }
        done.push(e);
    }
    let place = done.iter().find_map(|d| d.place.clone());
    if place.is_some() && auth.is_none() {
        return Err(cx.err("auth", "the extractions send `self::auth.access_token` but the config has no auth.refresh_token or auth.access_token"));
    }

    let mut p = String::new();
    writeln!(p, "# Imported from {file_name} (seed 004's api extractor config) by `ingest import extractor`.").unwrap();
    writeln!(p, "# Each part names the JSON path it came from. Point it elsewhere by environment alone:").unwrap();
    writeln!(p, "# {0}_BASE_URL (the API), {0}_AUTH_URL (the token endpoint), {0}_OUTPUT_URL (where outputs go).", cx.env).unwrap();
    writeln!(p, "\n[source]\nname = {}", q(&source)).unwrap();
    writeln!(p, "base_url = {}", q(&format!("${{env:{}_BASE_URL:-{}}}", cx.env, done[0].origin))).unwrap();
    writeln!(p, "# the extractor walks its pages one at a time").unwrap();
    writeln!(p, "concurrency = 1\ntimeout_secs = 30").unwrap();
    if let Some(a) = &auth {
        writeln!(p, "\n[source.auth]").unwrap();
        if !a.refresh {
            match &place {
                Some(Place::Param { .. }) => writeln!(p, "# auth.access_token, sent in a query parameter\ntype = \"query\"").unwrap(),
                _ => writeln!(p, "# auth.access_token\ntype = \"bearer\"").unwrap(),
            }
        }
        for l in &a.lines {
            writeln!(p, "{l}").unwrap();
        }
        match &place {
            Some(Place::Header { name, prefix }) => {
                writeln!(p, "# where the extractions write the token (self::auth.access_token)").unwrap();
                writeln!(p, "header = {}\nprefix = {}", q(name), q(prefix)).unwrap();
            }
            Some(Place::Param { name }) => {
                writeln!(p, "# where the extractions write the token (self::auth.access_token)").unwrap();
                writeln!(p, "param = {}", q(name)).unwrap();
            }
            None => writeln!(p, "# no extraction writes the token (self::auth.access_token): sent as `Authorization: Bearer …`").unwrap(),
        }
    }
    if auth.is_some() {
        writeln!(p, "\n# Seed 004 keeps these secrets in AWS Secrets Manager; to read them from there (region and").unwrap();
        writeln!(p, "# credentials from the standard AWS variables), uncomment:").unwrap();
        writeln!(p, "# [source.secrets]\n# aws_secret_id = \"api-extractor-config/prod/extractor-secrets\"").unwrap();
    }
    let mut models = Vec::new();
    for e in done {
        writeln!(p, "\n{}", e.toml.trim_end()).unwrap();
        models.push((e.model_rel, e.model));
    }
    Ok(Plan { source, pipeline: p, models })
}

#[cfg(test)]
mod tests {
    use super::plan;

    /// The parts the seed's two Zoho configs do not use: a static token in a query parameter,
    /// `$(last::id, 1)` (not an instant: the previous run's last record), link pagination,
    /// transformations in priority order with a new column, and an extraction without
    /// data_schema.
    #[test]
    fn a_config_using_the_other_forms_maps_each_of_them() {
        let cfg = r#"{
  "name": "Shop API",
  "auth": {"access_token": "${secret::shop_token}"},
  "extractions": [
    {"name": "Orders", "endpoint": {"url": "https://api.shop.com/v1/orders?status=paid",
       "query_params": {"token": "${self::auth.access_token}", "after": "$(last::id, 1)", "shop": "${self::name}"},
       "body": {"since": "$(last::updated_at, 2023-01-01T00:00:00Z)", "limit": 50}},
     "data_key": "result.items",
     "pagination": {"type": "link", "parameters": {"next_link": "pagination.next_link"}},
     "data_schema": {"id": "id", "customer": {"name": "customer_name"}, "note": "note"},
     "transformations": [
       {"action": "upper", "on": ["note"], "priority": 1},
       {"action": "trim", "on": ["note"], "priority": 5},
       {"action": "slice", "on": ["customer_name"], "new_column_prefix": "short_", "params": {"start": 0, "stop": 3}}
     ],
     "format": "json"},
    {"name": "Items", "endpoint": {"url": "https://api.shop.com/v1/items", "query_params": {"token": "${self::auth.access_token}"}}}
  ]
}"#;
        let p = plan("shop.json", cfg, None).unwrap();
        assert_eq!(p.source, "shop_api");
        let t = &p.pipeline;
        for want in [
            "type = \"query\"",
            "token = \"${secret:SHOP_TOKEN}\"",
            "param = \"token\"",
            "base_url = \"${env:SHOP_API_BASE_URL:-https://api.shop.com}\"",
            "params = { status = \"paid\", after = \"${last:id:-1}\", shop = \"Shop API\" }",
            "records = \"result.items\"",
            "method = \"POST\"",
            "body = { since = \"${last:updated_at:-2023-01-01T00:00:00Z}\", limit = 50 }",
            "pagination = { type = \"next_link\", next = \"pagination.next_link\" }",
            "customer = { name = \"string\" }",
        ] {
            assert!(t.contains(want), "{want} not in\n{t}");
        }
        let (rel, orders) = &p.models[0];
        assert_eq!(rel, "silver/shop_api_orders.sql");
        // trim (priority 5) first, then upper (1), then the new column (0).
        assert!(orders.contains("upper(btrim(t.\"note\")) AS \"note\""), "{orders}");
        assert!(orders.contains("slice(t.\"customer\"['name'], 0, 3) AS \"short_customer_name\""), "{orders}");
        assert!(orders.contains("-- output: json sep=, to=${env:SHOP_API_OUTPUT_URL:-s3://api-extractor-output-prod}/ name=orders"), "{orders}");
        assert!(p.models[1].1.contains("SELECT *\nFROM raw.shop_api_items t") && p.models[1].1.contains("-- mode: append"), "{}", p.models[1].1);
        // What the pipeline says loads as a pipeline.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shop_api.toml"), t).unwrap();
        crate::config::interp::with_placeholder_secrets(|| crate::config::load(dir.path(), "shop_api")).unwrap();
    }
}
