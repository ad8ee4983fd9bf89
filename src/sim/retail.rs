//! The retail portal (seed 002) and its ERP side: `GET /erp/products` (paged ERP products with
//! `updatedAt`), `POST /erp-data/product/batch` (`X-API-Key`, ≤ 1000 items else 400, `202
//! {jobId}`), `GET /erp-data/batch-job/{jobId}` (processed at `--job-items-per-sec`; upsert by
//! `erpId`; items with a negative price or no name fail with a message), 100 requests per
//! minute per key; `GET /erp-data/product/get-latest-integration` → `{"lastDateTime"}` (when
//! the last job finished, null before any); `GET /erp-data/integration-history/ErpProduct?horas=N`
//! (errors and batch summaries). `GET /_sim/truth/retail`: items held, creates and updates.
use super::data::{self, pick};
use super::{Reply, Sim};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

const PRODUCTS: u64 = 70;

struct Job {
    items: Vec<Value>,
    started: Instant,
    applied: Option<Value>,
    /// Ends `FAILED` as a whole (`--job-fail-first`).
    fails: bool,
}

#[derive(Default)]
pub struct State {
    jobs: HashMap<String, Job>,
    held: HashMap<i64, Value>,
    creates: u64,
    updates: u64,
    count: u64,
    /// When the last job finished (`get-latest-integration`'s `lastDateTime`).
    last: Option<String>,
}

pub fn api_key(sim: &Sim) -> String {
    format!("rp-{:020x}", data::mix(sim.cfg.seed, &[60]) as u128 * 31)
}

pub fn handle(
    sim: &Sim,
    method: &str,
    segs: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> (String, Result<Reply, Reply>) {
    let route = match segs {
        ["erp", "products"] => "retail/erp/products",
        ["erp-data", "product", "batch"] => "retail/batch",
        ["erp-data", "batch-job", _] => "retail/job",
        ["erp-data", "product", "get-latest-integration"] => "retail/latest",
        ["erp-data", "integration-history", _] => "retail/history",
        _ => return ("retail/unknown".into(), Err(Reply::err(404, "not found"))),
    };
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(api_key(sim).as_str()) {
        return (route.into(), Err(Reply::err(401, "invalid api key")));
    }
    if let Err(r) = sim.limit("retail", 100, "rate limit exceeded") {
        return (route.into(), Err(r));
    }
    // The batch endpoint takes POST only, the others GET only.
    let wants = if route == "retail/batch" { "POST" } else { "GET" };
    if method != wants {
        return (route.into(), Err(Reply::err(405, &format!("method {method} not allowed; use {wants}"))));
    }
    let res = match segs {
        ["erp", "products"] => products(sim, q),
        ["erp-data", "product", "batch"] => batch(sim, body),
        ["erp-data", "batch-job", id] => job(sim, id),
        ["erp-data", "product", "get-latest-integration"] => {
            let mut st = sim.retail.lock().unwrap();
            settle(&mut st, sim.cfg.job_items_per_sec.max(1.0), sim.cfg.job_states_title);
            Ok(Reply::ok(json!({"lastDateTime": st.last}), 0))
        }
        ["erp-data", "integration-history", entity] => history(sim, entity, q),
        _ => unreachable!(),
    };
    (route.into(), res)
}

fn products(sim: &Sim, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let num = |k: &str, d: u64| super::query_num(q, k, d);
    let (page, per) = (num("page", 1)?.max(1), num("per_page", 100)?.clamp(1, 500));
    let n = sim.cfg.products;
    let start = (page - 1) * per;
    let items: Vec<Value> = (start..(start + per).min(n))
        .map(|i| {
            let h = data::mix(sim.cfg.seed, &[PRODUCTS, i]);
            // One in 97 has a negative price: the portal rejects it item by item.
            let price = if i % 97 == 13 { -1.0 } else { 10.0 + (h % 90_000) as f64 / 100.0 };
            json!({
                "erpId": 100_000 + i as i64,
                "sku": format!("SKU-{:06}", i),
                "name": format!("{} {}", pick(h >> 3, &["Camiseta", "Tênis", "Boné", "Mochila", "Jaqueta"]), i),
                "price": price,
                "stock": (h >> 20) % 500,
                "updatedAt": (data::start() + chrono::Duration::seconds((h % 86_400) as i64)).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            })
        })
        .collect();
    let count = items.len();
    Ok(Reply::ok(json!({"data": items, "meta": {"page": page, "per_page": per, "total": n}}), count))
}

fn batch(sim: &Sim, body: &[u8]) -> Result<Reply, Reply> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Reply::err(400, "body is not JSON"))?;
    let items = v.get("items").and_then(Value::as_array).cloned().ok_or_else(|| Reply::err(400, "no items"))?;
    if items.is_empty() || items.len() > 1000 {
        return Err(Reply::err(400, "a batch holds 1 to 1000 items"));
    }
    let mut st = sim.retail.lock().unwrap();
    st.count += 1;
    let id = format!("job-{:08x}-{}", data::mix(sim.cfg.seed, &[61, st.count]) & 0xffff_ffff, st.count);
    let fails = st.count <= sim.cfg.job_fail_first;
    st.jobs.insert(id.clone(), Job { items, started: Instant::now(), applied: None, fails });
    let mut r = Reply::ok(json!({"jobId": id}), 0);
    r.status = 202;
    Ok(r)
}

/// Apply every job whose processing time has passed, polled or not (a batch whose 202 was
/// lost still runs, like the real portal's queue).
/// A job state as the portal spells it: upper case, or title case (`--job-states title`:
/// `Completed`, `Processing`, `Failed`, as Hangfire-like APIs do).
fn state_name(upper: &str, title: bool) -> String {
    if title {
        let lower = upper.to_lowercase();
        lower[..1].to_uppercase() + &lower[1..]
    } else {
        upper.to_string()
    }
}

fn settle(st: &mut State, rate: f64, title: bool) {
    let State { jobs, held, creates, updates, last, .. } = st;
    let mut due: Vec<(&String, &mut Job)> = jobs
        .iter_mut()
        .filter(|(_, j)| j.applied.is_none() && j.started.elapsed().as_secs_f64() * rate >= j.items.len() as f64)
        .collect();
    due.sort_by_key(|(_, j)| j.started);
    for (_, j) in due {
        if j.fails {
            // The whole job fails: nothing applied, no item named.
            j.applied = Some(json!({
                "state": state_name("FAILED", title), "totalItems": j.items.len(), "successCount": 0, "failureCount": j.items.len(),
                "duration": j.started.elapsed().as_secs_f64(), "errors": [],
            }));
            continue;
        }
        let mut errors = Vec::new();
        let mut ok = 0;
        for it in &j.items {
            let erp = it.get("erpId").and_then(Value::as_i64);
            let price = it.get("price").and_then(Value::as_f64).unwrap_or(0.0);
            match erp {
                None => errors.push(json!({"erpId": it.get("erpId"), "message": "erpId must be an integer"})),
                Some(e) if price < 0.0 => errors.push(json!({"erpId": e, "message": "price must not be negative"})),
                Some(e) => {
                    if held.insert(e, it.clone()).is_some() {
                        *updates += 1;
                    } else {
                        *creates += 1;
                    }
                    ok += 1;
                }
            }
        }
        j.applied = Some(json!({
            "state": state_name("COMPLETED", title), "totalItems": j.items.len(), "successCount": ok, "failureCount": errors.len(),
            "duration": j.started.elapsed().as_secs_f64(), "errors": errors,
        }));
        *last = Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    }
}

fn job(sim: &Sim, id: &str) -> Result<Reply, Reply> {
    let mut st = sim.retail.lock().unwrap();
    settle(&mut st, sim.cfg.job_items_per_sec.max(1.0), sim.cfg.job_states_title);
    match st.jobs.get(id) {
        None => Err(Reply::err(404, "no such job")),
        Some(Job { applied: Some(done), .. }) => Ok(Reply::ok(done.clone(), 0)),
        Some(j) => Ok(Reply::ok(json!({"state": state_name("PROCESSING", sim.cfg.job_states_title), "totalItems": j.items.len()}), 0)),
    }
}

/// `GET /erp-data/integration-history/{entity}?horas=N` (seed 002, 9.8): errors and batch
/// summaries of the last N hours (default 24), never an item that succeeded. Each entry has
/// `success`; a batch summary its `jobId`, `total`, `successCount`, `failureCount`; an error
/// its `erpId` and `message`.
fn history(sim: &Sim, entity: &str, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    if entity != "ErpProduct" {
        return Err(Reply::err(404, "unknown entity"));
    }
    let hours = super::query_num(q, "horas", 24)?;
    let mut st = sim.retail.lock().unwrap();
    settle(&mut st, sim.cfg.job_items_per_sec.max(1.0), sim.cfg.job_states_title);
    let since = Instant::now().checked_sub(std::time::Duration::from_secs(hours * 3600));
    let mut out = Vec::new();
    let mut jobs: Vec<(&String, &Job)> = st.jobs.iter().filter(|(_, j)| j.applied.is_some()).collect();
    jobs.sort_by_key(|(_, j)| j.started);
    for (id, j) in jobs {
        if since.is_some_and(|s| j.started < s) {
            continue;
        }
        let a = j.applied.as_ref().expect("applied");
        out.push(json!({"entity": entity, "type": "batch", "jobId": id, "success": a["failureCount"] == 0,
                        "total": a["totalItems"], "successCount": a["successCount"], "failureCount": a["failureCount"]}));
        for e in a["errors"].as_array().into_iter().flatten() {
            out.push(json!({"entity": entity, "type": "item", "jobId": id, "success": false, "erpId": e["erpId"], "message": e["message"]}));
        }
    }
    let n = out.len();
    Ok(Reply::ok(Value::Array(out), n))
}

pub fn truth(sim: &Sim) -> Value {
    let mut st = sim.retail.lock().unwrap();
    settle(&mut st, sim.cfg.job_items_per_sec.max(1.0), sim.cfg.job_states_title);
    json!({"items": st.held.len(), "creates": st.creates, "updates": st.updates, "jobs": st.jobs.len()})
}
