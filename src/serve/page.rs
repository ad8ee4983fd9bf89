//! `GET /metrics` (Prometheus text, `prometheus-client`) and the status page at `/`: both
//! read the run log (`_ingest/runs`), the server's runs and the lake's status, nothing else.
//! The page is server-rendered HTML with an inline SVG chart (no script, no CDN: it works
//! offline); it takes the key from a cookie the `/login` form sets.
use super::{fail, internal, App};
use crate::lake::runs::{self, RunRow};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;

fn when(s: &str) -> Option<DateTime<Utc>> {
    crate::time::parse_instant(s, &chrono_tz::UTC)
}

/// The last successful run-log row of each (source, stream), pushes left out.
fn last_success(rows: &[RunRow]) -> BTreeMap<(String, String), &RunRow> {
    let mut out: BTreeMap<(String, String), &RunRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.success && r.partition != runs::PUSH) {
        let k = (r.source.clone(), r.stream.clone());
        if out.get(&k).is_none_or(|o| o.ended < r.ended) {
            out.insert(k, r);
        }
    }
    out
}

pub(super) async fn metrics(State(app): State<App>) -> Response {
    let rows = match runs::read(&app.lake, None, false).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let served = match app.runner.list(None, false).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let mut reg = Registry::default();
    let runs_by = Family::<Labels, Counter>::default();
    reg.register("ingest_runs", "Runs the server started, by command and state", runs_by.clone());
    for r in &served {
        runs_by.get_or_create(&vec![("command".into(), r.command.clone()), ("state".into(), r.state.clone())]).inc();
    }
    let records = Family::<Labels, Counter>::default();
    reg.register("ingest_records", "Records landed by successful pulls (run log), by source and stream", records.clone());
    let requests = Family::<Labels, Counter>::default();
    reg.register("ingest_requests", "Pages requested by pulls (run log), by source", requests.clone());
    let throttled = Family::<Labels, Counter>::default();
    reg.register("ingest_throttled", "Requests of pulls answered 429 (run log), by source", throttled.clone());
    let retries = Family::<Labels, Counter>::default();
    reg.register("ingest_retries", "Requests of pulls retried (run log), by source", retries.clone());
    let pulls = Family::<Labels, Counter>::default();
    reg.register("ingest_pull_streams", "Run-log rows of pulls, by source and outcome", pulls.clone());
    let pushed = Family::<Labels, Counter>::default();
    reg.register("ingest_push_records", "Records pushes sent, by source, sink and outcome", pushed.clone());
    for r in &rows {
        let outcome = if r.success { "success" } else { "failed" };
        if r.partition == runs::PUSH {
            pushed.get_or_create(&vec![("source".into(), r.source.clone()), ("sink".into(), r.stream.clone()), ("outcome".into(), outcome.into())]).inc_by(r.records.max(0) as u64);
            continue;
        }
        pulls.get_or_create(&vec![("source".into(), r.source.clone()), ("outcome".into(), outcome.into())]).inc();
        requests.get_or_create(&vec![("source".into(), r.source.clone())]).inc_by(r.pages.max(0) as u64);
        throttled.get_or_create(&vec![("source".into(), r.source.clone())]).inc_by(r.throttled.unwrap_or(0).max(0) as u64);
        retries.get_or_create(&vec![("source".into(), r.source.clone())]).inc_by(r.retries.unwrap_or(0).max(0) as u64);
        if r.success {
            records.get_or_create(&vec![("source".into(), r.source.clone()), ("stream".into(), r.stream.clone())]).inc_by(r.records.max(0) as u64);
        }
    }
    let ledger = Family::<Labels, Gauge>::default();
    reg.register("ingest_push_ledger_records", "Records of each sink's push ledger by their latest state (sent, failed, pending, uncertain)", ledger.clone());
    match crate::lake::ledger::counts(&app.lake).await {
        Ok(counts) => {
            for c in counts {
                ledger.get_or_create(&vec![("source".into(), c.source), ("sink".into(), c.sink), ("state".into(), c.state)]).set(c.n);
            }
        }
        Err(e) => return internal(e),
    }
    let last = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register("ingest_last_success_timestamp_seconds", "When the last successful pull of a stream ended", last.clone());
    let fresh = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register("ingest_freshness_seconds", "Seconds since the last successful pull of a stream ended", fresh.clone());
    let now = Utc::now();
    for ((source, stream), r) in last_success(&rows) {
        if let Some(t) = when(&r.ended) {
            let l = vec![("source".into(), source.clone()), ("stream".into(), stream.clone())];
            last.get_or_create(&l).set(t.timestamp_millis() as f64 / 1000.0);
            fresh.get_or_create(&l).set((now - t).num_milliseconds() as f64 / 1000.0);
        }
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Records landed per day per source over the last `days` days, as an SVG line chart (one
/// `<polyline class="series">` per source, with its legend).
fn chart(rows: &[RunRow], days: i64) -> String {
    let today = Utc::now().date_naive();
    let first = today - Duration::days(days - 1);
    let mut per: BTreeMap<String, BTreeMap<NaiveDate, i64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.success && r.partition != runs::PUSH) {
        if let Some(d) = when(&r.started).map(|t| t.date_naive()).filter(|d| *d >= first) {
            *per.entry(r.source.clone()).or_default().entry(d).or_default() += r.records;
        }
    }
    let (w, h, pad) = (720.0, 240.0, 40.0);
    let max = per.values().flat_map(|m| m.values()).copied().max().unwrap_or(0).max(1) as f64;
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"records landed per day per source, last {days} days\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"{}\" font-size=\"10\">{max}</text><text x=\"{pad}\" y=\"{}\" font-size=\"10\">{first}</text><text x=\"{}\" y=\"{}\" font-size=\"10\">{today}</text>",
        h + 20.0 * per.len() as f64,
        h - pad,
        w - 10.0,
        h - pad,
        h - pad,
        pad + 4.0,
        h - pad + 14.0,
        w - 80.0,
        h - pad + 14.0,
    );
    for (i, (source, m)) in per.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = (0..days)
            .map(|k| {
                let d = first + Duration::days(k);
                let v = m.get(&d).copied().unwrap_or(0) as f64;
                let x = pad + (w - pad - 10.0) * k as f64 / (days - 1).max(1) as f64;
                let y = (h - pad) - (h - 2.0 * pad) * v / max;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        svg.push_str(&format!(
            "<polyline class=\"series\" data-source=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{pad}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            esc(source),
            points.join(" "),
            h + 20.0 * i as f64 - 10.0,
            pad + 16.0,
            h + 20.0 * i as f64,
            esc(source)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The status page.
pub(super) async fn status(State(app): State<App>) -> Response {
    let rows = match runs::read(&app.lake, None, false).await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let served = app.runner.list(None, false).await.unwrap_or_default();
    let dir = app.pipelines.clone();
    let template = move |s: &str| crate::status::template_of(&dir, s);
    let lake_status = crate::status::render(&app.lake, None, &template).await.unwrap_or_else(|e| format!("status unavailable: {e}"));
    let schedules = crate::config::schedule::load_all(&app.pipelines).unwrap_or_default();
    let now = Utc::now();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ingest status</title><style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
         .stale{background:#fdd}.fresh{background:#dfd}.failed{color:#b00}pre{background:#f6f6f6;padding:8px}</style></head><body><h1>ingest</h1>",
    );
    html.push_str(&format!("<p>lake: {}</p>", esc(app.lake.url.as_str())));
    // Streams: freshness against the source's schedule (twice its interval), else a day.
    html.push_str("<h2>Streams</h2><table id=\"streams\"><tr><th>source</th><th>stream</th><th>last success</th><th>age</th><th>records</th><th>schedule</th></tr>");
    let sources: std::collections::BTreeSet<String> = crate::config::list_sources(&app.pipelines).into_iter().chain(rows.iter().map(|r| r.source.clone())).collect();
    let last = last_success(&rows);
    for source in &sources {
        let sched = schedules.iter().find(|(s, _)| s == source).map(|(_, s)| s);
        let allowed = sched
            .and_then(|s| Some(s.next_after(s.next_after(now)?)? - s.next_after(now)?))
            .map_or(Duration::days(1), |i| i * 2);
        let streams: Vec<_> = last.iter().filter(|((s, _), _)| s == source).collect();
        if streams.is_empty() {
            html.push_str(&format!("<tr class=\"stale\"><td>{}</td><td>-</td><td>never</td><td>-</td><td>0</td><td>{}</td></tr>", esc(source), esc(sched.map_or("-", |s| s.expr.as_str()))));
        }
        for ((_, stream), r) in streams {
            let age = when(&r.ended).map(|t| now - t);
            let class = if age.is_some_and(|a| a <= allowed) { "fresh" } else { "stale" };
            html.push_str(&format!(
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(source),
                esc(stream),
                esc(&r.ended),
                age.map_or("-".into(), |a| format!("{}m", a.num_minutes())),
                r.records,
                esc(sched.map_or("-", |s| s.expr.as_str()))
            ));
        }
    }
    html.push_str("</table><h2>Records landed per day (30 days)</h2>");
    html.push_str(&chart(&rows, 30));
    html.push_str("<h2>Last runs</h2><table id=\"runs\"><tr><th>started</th><th>command</th><th>source</th><th>trigger</th><th>key</th><th>state</th><th>records</th><th>error</th></tr>");
    for r in served.iter().rev().take(30) {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
            esc(&r.started),
            esc(&r.command),
            esc(&r.source),
            esc(&r.trigger),
            esc(&r.key_name),
            esc(&r.state),
            esc(&r.state),
            r.records,
            esc(r.error.as_deref().unwrap_or(""))
        ));
    }
    html.push_str("</table><h2>Failed pulls (run log)</h2><table id=\"failures\"><tr><th>started</th><th>source</th><th>stream</th><th>error</th></tr>");
    for r in rows.iter().rev().filter(|r| !r.success).take(20) {
        html.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"failed\">{}</td></tr>", esc(&r.started), esc(&r.source), esc(&r.stream), esc(r.error.as_deref().unwrap_or(""))));
    }
    html.push_str("</table><h2>Lake: watermarks, files, tables, push ledger</h2><pre>");
    html.push_str(&esc(&crate::secret::redact(&lake_status)));
    html.push_str("</pre></body></html>");
    Html(html).into_response()
}

pub(super) async fn login_form() -> Response {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ingest: sign in</title></head><body>\
         <form method=\"post\" action=\"/login\"><label>API key <input type=\"password\" name=\"key\" autocomplete=\"off\"></label> <button type=\"submit\">Sign in</button></form></body></html>",
    )
    .into_response()
}

/// The form's key, checked like a header's; good → the cookie and the page.
pub(super) async fn login(
    State(app): State<App>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let key = url::form_urlencoded::parse(&body).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned());
    match app.keys.check(key.as_deref(), peer.ip()) {
        Ok(_) => {
            let cookie = format!(
                "ingest_key={}; HttpOnly; SameSite=Strict; Path=/",
                url::form_urlencoded::byte_serialize(key.unwrap_or_default().as_bytes()).collect::<String>()
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(super::auth::Denied::TooMany) => (StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; wait a minute\n").into_response(),
        Err(_) => (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response(),
    }
}
