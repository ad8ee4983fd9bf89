//! The bundled API simulator (`ingest fixtures serve`, tests, demo): deterministic, seed-driven
//! data over simulated days, served with each API's wire behaviour, rate limits (429 +
//! `Retry-After`), `/_sim/stats`, and injected faults. It never talks to the real APIs.
mod c2s;
mod data;
mod milvus;
mod pancake;
mod ploomes;
mod retail;
mod sloppy;
pub use sloppy::OPTIONAL;
use sloppy::{drift_ids, sparsify, strip_optional};
mod zoho;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first simulated day; data before it is empty (seed 003).
pub const START: (i32, u32, u32) = (2023, 9, 1);

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Simulated days of data from 2023-09-01: the simulator's "now" is the end of the last one.
    pub days: u32,
    /// Multiplies record counts.
    pub scale: u32,
    /// Every "N requests per minute" limit becomes N per this many seconds.
    pub rate_window: f64,
    /// Disable every rate limit (benchmarks).
    pub no_rate_limit: bool,
    /// Pancake pages served.
    pub pages: u32,
    /// Every Nth request answers 503 (0 = never).
    pub fail_every: u64,
    /// Every Nth request has its body cut in half (0 = never).
    pub truncate_every: u64,
    /// Every Nth request's reply is delayed by `slow_ms` after it took effect (0 = never).
    pub slow_every: u64,
    pub slow_ms: u64,
    /// Percent of the C2S leads updated each wall-clock second while serving (plus one new
    /// lead a second); 0 = data frozen during a pull. `GET /_sim/freeze` stops the changes.
    pub live_updates: f64,
    /// Times carry milliseconds; each day's first record sits in its last second.
    pub fractional: bool,
    /// Every Nth C2S request ignores `updated_gte`/`updated_lt` (0 = never), as APIS.md reports.
    pub ignore_filter_every: u64,
    /// Answer 429 without `Retry-After`.
    pub no_retry_after: bool,
    /// Late Pancake conversations appear in the last simulated day after this many seconds.
    pub late_after: Option<f64>,
    /// Leave out every optional field of every record (see [`OPTIONAL`]).
    pub omit_optional: bool,
    /// Seconds a Zoho access token works (`expires_in`).
    pub token_ttl: f64,
    /// The Zoho token endpoint rotates the refresh token on every grant.
    pub rotate_refresh: bool,
    /// ERP products served to the retail portal pipeline.
    pub products: u64,
    /// Items a retail portal job processes per second.
    pub job_items_per_sec: f64,
    /// Every answer waits this long *after* the request took effect (a write is done but
    /// its reply is still on the way: the window a crash leaves a write unrecorded).
    pub reply_delay_ms: u64,
    /// Clients Milvus holds before any push: every other one shares a Ploomes contact's
    /// document, the rest are Milvus-only (seed 001's reverse direction).
    pub milvus_clients: u64,
    /// Each field a record's docs do not mark required (see [`REQUIRED`]) is dropped with this
    /// probability, at every depth, list items included, per record (0 = never).
    pub sparse: f64,
    /// Sources served as fresh accounts: no records (see [`empty_kinds`]).
    pub empty: Vec<String>,
    /// About every other response (decided by a hash of its request) serves integer ids (`id`,
    /// `Id`, `…_id`, `…Id`) as strings.
    pub drift: bool,
    /// One C2S lead's `updated_at` is in 2204 (a mistyped date, as real data holds).
    pub future_cursor: bool,
    /// The first N retail portal jobs end `FAILED` as a whole, with no per-item error.
    pub job_fail_first: u64,
    /// Retail portal job states in title case (`Completed`, `Processing`, `Failed`).
    pub job_states_title: bool,
}

/// Record fields the APIs always send (keys and the cursors paging relies on), as paths inside
/// a record; `--sparse` never drops them. Everything else may be absent (APIS.md: "any field
/// the docs do not mark required may be absent in a record, at any depth").
pub const REQUIRED: &[&str] = &[
    "id", "Id", "type", "attributes", "attributes.created_at", "attributes.updated_at", "inserted_at", "updated_at",
    "Created_Time", "Modified_Time", "createdTime", "modifiedTime", "CreateDate", "LastUpdateDate", "erpId",
    "updatedAt", "hour", "user_id", "name", "page_id", "ad_id", "cnpj_cpf", "token",
];

/// The entity kinds of each source `--empty` can name.
pub fn empty_kinds(source: &str) -> Option<Vec<u64>> {
    Some(match source {
        "c2s" => vec![10],
        "pancake" => vec![20, 21, 22],
        "zoho_crm" => vec![40, 41, 42],
        "zoho_desk" => vec![43],
        "ploomes" => vec![90, 91, 92],
        // No generated records: no clients before a push (`--milvus-clients` ignored), no products.
        "milvus" | "retail_portal" => vec![],
        _ => return None,
    })
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            days: 7,
            scale: 1,
            rate_window: 60.0,
            no_rate_limit: false,
            pages: 2,
            fail_every: 0,
            truncate_every: 0,
            slow_every: 0,
            slow_ms: 0,
            live_updates: 0.0,
            fractional: false,
            ignore_filter_every: 0,
            no_retry_after: false,
            late_after: None,
            omit_optional: false,
            token_ttl: 3600.0,
            rotate_refresh: false,
            products: 200,
            job_items_per_sec: 4.0,
            reply_delay_ms: 0,
            milvus_clients: 0,
            sparse: 0.0,
            empty: Vec::new(),
            drift: false,
            job_fail_first: 0,
            job_states_title: false,
            future_cursor: false,
        }
    }
}

/// What handlers answer; the router turns it into HTTP and counts it.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub records: u64,
    /// Seconds a 429 asks the client to wait (sent as `Retry-After` unless `--no-retry-after`).
    pub retry_after: Option<f64>,
}

impl Reply {
    pub fn ok(body: Value, records: usize) -> Self {
        Reply {
            status: 200,
            body,
            records: records as u64,
            retry_after: None,
        }
    }
    pub fn err(status: u16, msg: &str) -> Self {
        Reply {
            status,
            body: json!({"success": false, "error": msg, "message": msg}),
            records: 0,
            retry_after: None,
        }
    }
}

#[derive(Default, serde::Serialize, Clone)]
pub struct RouteStats {
    pub requests: u64,
    pub throttled: u64,
    pub records: u64,
}

pub struct Sim {
    pub cfg: SimConfig,
    stats: Mutex<(RouteStats, BTreeMap<String, RouteStats>)>,
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    counter: AtomicU64,
    cache: Mutex<HashMap<String, Arc<Vec<Value>>>>,
    /// C2S leads (created, updated, lead) in the order of each `sort` asked, while they are static.
    c2s_sorted: Mutex<HashMap<String, Arc<Vec<(DateTime<Utc>, DateTime<Utc>, Value)>>>>,
    started: Instant,
    frozen: Mutex<Option<Duration>>,
    /// C2S requests served (for `ignore_filter_every`).
    pub c2s_requests: AtomicU64,
    zoho: Mutex<zoho::State>,
    retail: Mutex<retail::State>,
    milvus: Mutex<milvus::State>,
    ploomes: Mutex<ploomes::State>,
    /// The last query of each route (credentials removed), for tests of templated requests.
    last_query: Mutex<HashMap<String, HashMap<String, String>>>,
}

impl Sim {
    pub fn new(mut cfg: SimConfig) -> Self {
        data::set_fractional(cfg.fractional);
        data::set_empty(cfg.empty.iter().filter_map(|s| empty_kinds(s)).flatten().collect());
        if cfg.empty.iter().any(|s| s == "milvus") {
            cfg.milvus_clients = 0;
        }
        if cfg.empty.iter().any(|s| s == "retail_portal") {
            cfg.products = 0;
        }
        Sim {
            cfg,
            stats: Mutex::default(),
            windows: Mutex::default(),
            counter: AtomicU64::new(0),
            cache: Mutex::default(),
            c2s_sorted: Mutex::default(),
            started: Instant::now(),
            frozen: Mutex::default(),
            c2s_requests: AtomicU64::new(0),
            zoho: Mutex::default(),
            retail: Mutex::default(),
            milvus: Mutex::default(),
            ploomes: Mutex::default(),
            last_query: Mutex::default(),
        }
    }

    /// Wall-clock time served so far (stops at `/_sim/freeze`): live changes are a function of it.
    pub fn elapsed(&self) -> Duration {
        self.frozen.lock().unwrap().unwrap_or_else(|| self.started.elapsed())
    }

    fn freeze(&self) {
        let mut f = self.frozen.lock().unwrap();
        if f.is_none() {
            *f = Some(self.started.elapsed());
        }
    }

    /// A generated result set, kept while pages of it are served. At most 32 are kept: a pull
    /// pages through a few windows at a time, and at `--scale 750` (the 10 GB bench) one
    /// window of Pancake conversations is tens of MB as values.
    pub fn cached(&self, key: String, make: impl FnOnce() -> Vec<Value>) -> Arc<Vec<Value>> {
        if let Some(v) = self.cache.lock().unwrap().get(&key) {
            return v.clone();
        }
        let v = Arc::new(make());
        let mut c = self.cache.lock().unwrap();
        if c.len() >= 32 {
            c.clear();
        }
        c.insert(key, v.clone());
        v
    }

    /// Every C2S lead in the order `sort` asks: built once when leads never change (no
    /// `live_updates`), so a page costs a scan instead of generating and sorting every lead.
    pub fn c2s_sorted(
        &self,
        sort: &str,
        make: impl FnOnce() -> Vec<(DateTime<Utc>, DateTime<Utc>, Value)>,
    ) -> Arc<Vec<(DateTime<Utc>, DateTime<Utc>, Value)>> {
        if self.cfg.live_updates > 0.0 {
            return Arc::new(make());
        }
        let mut c = self.c2s_sorted.lock().unwrap();
        c.entry(sort.to_string()).or_insert_with(|| Arc::new(make())).clone()
    }

    /// The rate limit as an API answers it: 429 with `msg` (and the wait) when `key` is over
    /// `n` requests per window.
    pub fn limit(&self, key: &str, n: usize, msg: &str) -> Result<(), Reply> {
        match self.throttle(key, n) {
            Some(wait) => Err(Reply { retry_after: Some(wait), ..Reply::err(429, msg) }),
            None => Ok(()),
        }
    }

    /// Sliding-window limit: at most `n` accepted requests per `per_minute_window` for `key`.
    /// Returns the seconds to wait when over the limit.
    pub fn throttle(&self, key: &str, n: usize) -> Option<f64> {
        if self.cfg.no_rate_limit {
            return None;
        }
        let win = Duration::from_secs_f64(self.cfg.rate_window);
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap();
        let q = w.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= win) {
            q.pop_front();
        }
        if q.len() >= n {
            let wait = win.saturating_sub(now.duration_since(*q.front().unwrap()));
            return Some(wait.as_secs_f64());
        }
        q.push_back(now);
        None
    }

    pub fn tokens(&self) -> (String, Vec<(String, String)>) {
        let c2s = format!("c2s-{:016x}", data::mix(self.cfg.seed, &[1]));
        let pages = data::page_ids(self.cfg.pages)
            .into_iter()
            .map(|p| {
                let t = format!(
                    "pat-{p}-{:016x}",
                    data::mix(self.cfg.seed, &[2, p.parse::<u64>().unwrap_or(0)])
                );
                (p, t)
            })
            .collect();
        (c2s, pages)
    }

    fn stats_json(&self) -> Value {
        let s = self.stats.lock().unwrap();
        json!({"requests": s.0.requests, "throttled": s.0.throttled, "records": s.0.records, "by_route": s.1})
    }

    fn count(&self, route: &str, throttled: bool, records: u64) {
        let mut s = self.stats.lock().unwrap();
        for r in [&mut s.0] {
            r.requests += 1;
            r.throttled += throttled as u64;
            r.records += records;
        }
        let r = s.1.entry(route.to_string()).or_default();
        r.requests += 1;
        r.throttled += throttled as u64;
        r.records += records;
    }
}

/// A numeric query parameter (`d` when absent); 400 `invalid <k>` when it is not a number.
pub fn query_num(q: &HashMap<String, String>, k: &str, d: u64) -> Result<u64, Reply> {
    q.get(k)
        .map_or(Ok(d), |v| v.parse().map_err(|_| Reply::err(400, &format!("invalid {k}"))))
}

/// The `export NAME=value` lines that point every shipped pipeline at a simulator.
pub fn exports(sim: &Sim, base: &str) -> Vec<(String, String)> {
    let (c2s, pages) = sim.tokens();
    let w = if sim.cfg.no_rate_limit {
        0.001
    } else {
        sim.cfg.rate_window
    };
    let mut v = vec![
        ("C2S_BASE_URL".to_string(), format!("{base}/c2s")),
        ("C2S_TOKEN".into(), c2s),
        ("C2S_RATE_SECONDS".into(), format!("{w}")),
        ("PANCAKE_BASE_URL".into(), format!("{base}/pancake")),
        (
            "PANCAKE_PAGE_IDS".into(),
            pages.iter().map(|p| p.0.clone()).collect::<Vec<_>>().join(","),
        ),
        ("PANCAKE_RATE_SECONDS".into(), format!("{w}")),
    ];
    for (p, t) in pages {
        v.push((format!("PANCAKE_TOKEN_{p}"), t));
    }
    v.extend([
        ("ZOHO_ACCOUNTS_URL".to_string(), format!("{base}/zoho")),
        ("ZOHO_CRM_BASE_URL".into(), format!("{base}/zoho")),
        ("ZOHO_DESK_BASE_URL".into(), format!("{base}/zoho/desk")),
        ("ZOHO_CLIENT_ID".into(), zoho::client_id(sim)),
        ("ZOHO_CLIENT_SECRET".into(), zoho::client_secret(sim)),
        ("ZOHO_REFRESH_TOKEN".into(), zoho::initial_refresh(sim)),
        ("ZOHO_DESK_ORG_ID".into(), zoho::org_id(sim)),
        ("ZOHO_RATE_SECONDS".into(), format!("{w}")),
        ("RETAIL_PORTAL_BASE_URL".into(), format!("{base}/retail")),
        ("RETAIL_PORTAL_API_KEY".into(), retail::api_key(sim)),
        ("RETAIL_PORTAL_RATE_SECONDS".into(), format!("{w}")),
        ("MILVUS_BASE_URL".into(), format!("{base}/milvus")),
        ("MILVUS_TOKEN".into(), milvus::token(sim)),
        ("MILVUS_RATE_SECONDS".into(), format!("{w}")),
        ("PLOOMES_BASE_URL".into(), format!("{base}/ploomes")),
        ("PLOOMES_USER_KEY".into(), ploomes::user_key(sim)),
        ("PLOOMES_RATE_SECONDS".into(), format!("{w}")),
    ]);
    v
}

type Shared = Arc<Sim>;

async fn handle(
    State(sim): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().trim_matches('/').to_string();
    let query: HashMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    if path == "_sim/stats" {
        return respond(200, &sim.stats_json(), None, false);
    }
    if path == "_sim/late" {
        // Whether `--late-after`'s late conversations are served yet (tests wait on this).
        let visible = sim.cfg.late_after.is_some_and(|a| sim.elapsed().as_secs_f64() >= a);
        return respond(200, &json!({"visible": visible}), None, false);
    }
    if path == "_sim/freeze" {
        sim.freeze();
        return respond(200, &json!({"frozen_after_secs": sim.elapsed().as_secs_f64()}), None, false);
    }
    if let Some(route) = path.strip_prefix("_sim/last_query/") {
        let q = sim.last_query.lock().unwrap().get(route).cloned().unwrap_or_default();
        return respond(200, &json!(q), None, false);
    }
    if path == "_sim/ploomes/retag" {
        return match ploomes::retag(&sim, &query) {
            Ok(v) => respond(200, &v, None, false),
            Err(r) => respond(r.status, &r.body, None, false),
        };
    }
    if path == "_sim/zoho/touch" {
        return match zoho::touch(&sim, &query) {
            Ok(v) => respond(200, &v, None, false),
            Err(r) => respond(r.status, &r.body, None, false),
        };
    }
    if let Some(source) = path.strip_prefix("_sim/truth/") {
        return match source {
            "c2s" => respond(200, &c2s::truth(&sim), None, false),
            "zoho_details" => respond(200, &zoho::detail_hits(&sim), None, false),
            "retail" => respond(200, &retail::truth(&sim), None, false),
            "milvus" => respond(200, &milvus::truth(&sim), None, false),
            "ploomes" => respond(200, &ploomes::truth(&sim), None, false),
            _ => respond(404, &json!({"error": "no truth for this source"}), None, false),
        };
    }
    let n = sim.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let every = |k: u64| k > 0 && n % k == 0;
    let segs: Vec<&str> = path.split('/').collect();
    let (route, result) = match segs.first().copied() {
        Some("c2s") if method == Method::GET => c2s::handle(&sim, &segs[1..], &query, &headers),
        Some("pancake") if method == Method::GET => pancake::handle(&sim, &segs[1..], &query),
        Some("zoho") if method == Method::GET || method == Method::POST => {
            // The token endpoint takes its parameters in the query or in a form body.
            let mut q = query.clone();
            if method == Method::POST {
                q.extend(url::form_urlencoded::parse(&body).into_owned());
            }
            zoho::handle(&sim, &segs[1..], &q, &headers)
        }
        Some("retail") => retail::handle(&sim, method.as_str(), &segs[1..], &query, &headers, &body),
        Some("milvus") => milvus::handle(&sim, &segs[1..], &query, &headers, &body),
        Some("ploomes") => {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            ploomes::handle(&sim, &format!("http://{host}"), method.as_str(), &segs[1..], &query, &headers, &body)
        }
        _ => ("unknown".to_string(), Err(Reply::err(404, "not found"))),
    };
    // A slow reply comes after the request took effect (a write is done, its answer late).
    if every(sim.cfg.slow_every) {
        tokio::time::sleep(Duration::from_millis(sim.cfg.slow_ms)).await;
    }
    if sim.cfg.reply_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sim.cfg.reply_delay_ms)).await;
    }
    {
        let mut q = query.clone();
        q.retain(|k, _| !["page_access_token", "refresh_token", "client_secret", "client_id"].contains(&k.as_str()));
        if !body.is_empty() {
            q.insert("_body".into(), String::from_utf8_lossy(&body).to_string());
        }
        q.insert("_method".into(), method.to_string());
        sim.last_query.lock().unwrap().insert(route.clone(), q);
    }
    match result {
        Err(r) if r.status == 429 => {
            sim.count(&route, true, 0);
            let wait = r.retry_after.unwrap_or(1.0);
            respond(429, &r.body, Some(wait).filter(|_| !sim.cfg.no_retry_after), false)
        }
        Err(r) => {
            sim.count(&route, false, 0);
            respond(r.status, &r.body, None, false)
        }
        Ok(r) => {
            if every(sim.cfg.fail_every) {
                sim.count(&route, false, 0);
                return respond(503, &json!({"error": "service_unavailable"}), None, false);
            }
            let mut r = r;
            if sim.cfg.omit_optional {
                strip_optional(&mut r.body, false);
            }
            if sim.cfg.sparse > 0.0 {
                sparsify(&mut r.body, sim.cfg.sparse, sim.cfg.seed);
            }
            // Which pages drift is a function of the request (a retried page drifts alike).
            if sim.cfg.drift && data::mix_text(sim.cfg.seed, &uri.to_string()) % 2 == 0 {
                drift_ids(&mut r.body);
            }
            let truncate = every(sim.cfg.truncate_every);
            sim.count(&route, false, if truncate { 0 } else { r.records });
            respond(r.status, &r.body, None, truncate)
        }
    }
}

fn respond(status: u16, body: &Value, retry_after: Option<f64>, truncate: bool) -> Response {
    // 204 and 304 carry no body.
    let mut bytes = if status == 204 || status == 304 { Vec::new() } else { serde_json::to_vec(body).unwrap() };
    if truncate {
        bytes.truncate(bytes.len() / 2);
    }
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json");
    if let Some(w) = retry_after {
        b = b.header("retry-after", format!("{}", w.ceil().max(1.0) as u64));
    }
    b.body(Body::from(bytes)).unwrap()
}

/// Start the simulator on `addr`; returns its base URL and the server task.
pub async fn serve(cfg: SimConfig, addr: &str) -> std::io::Result<(String, Arc<Sim>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local: SocketAddr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(cfg));
    let app = axum::Router::new().fallback(handle).with_state(sim.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{local}"), sim, task))
}
