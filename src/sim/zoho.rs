//! Zoho (seed 004's examples): the accounts token endpoint (`POST /oauth/v2/token`,
//! refresh-token grant, `expires_in`, `{"error":"invalid_code"}` for a bad refresh token, optional
//! rotation), CRM v2 modules (`Authorization: Zoho-oauthtoken` — or `Bearer`, as seed 004's deals
//! config sends it —, module names in any case as the config writes them (`/crm/v2/deals`),
//! `page`/`per_page` ≤ 200, `sort_by`/`sort_order`, `If-Modified-Since` (records modified after
//! it) → 304 when nothing changed, 204 when empty, `info.more_records`) and Desk tickets (`orgId`
//! header — checked when sent: seed 004's tickets config sends none —, `from` counted from 1,
//! `limit` ≤ 100 else 422, `sortBy` with `-` for descending). An access token stops working
//! `--token-ttl` seconds after it was issued (401 `INVALID_TOKEN`).
use super::data::{self, pick};
use super::{query_num as num, Reply, Sim};
use axum::http::HeaderMap;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LEADS: u64 = 40;
const CONTACTS: u64 = 41;
const DEALS: u64 = 42;
const TICKETS: u64 = 43;

/// Token endpoint state: the refresh token that works now and the access tokens issued.
#[derive(Default)]
pub struct State {
    refresh: Option<String>,
    issued: HashMap<String, Instant>,
    count: u64,
    /// Detail requests per record id (`GET /_sim/truth/zoho_details`).
    pub detail_hits: HashMap<String, u64>,
    /// Deals changed by `GET /_sim/zoho/touch?n=N`: id → when (after every generated version).
    touched: HashMap<String, DateTime<Utc>>,
}

/// `GET /_sim/zoho/touch?n=N`: N deals not changed this way yet (lowest ids first) get a new
/// stage and a Modified_Time after everything the API holds; answers their ids.
pub fn touch(sim: &Sim, q: &HashMap<String, String>) -> Result<Value, Reply> {
    let n = num(q, "n", 1)? as usize;
    let mut rows = all(sim, DEALS, 20);
    rows.sort_by(|a, b| a.1["id"].as_str().cmp(&b.1["id"].as_str()));
    let mut st = sim.zoho.lock().unwrap();
    let latest = rows.iter().map(|r| r.0).max().unwrap_or_else(|| data::sim_now(sim.cfg.days));
    let fresh: Vec<String> = rows
        .iter()
        .filter_map(|r| r.1["id"].as_str())
        .filter(|id| !st.touched.contains_key(*id))
        .take(n)
        .map(str::to_string)
        .collect();
    for id in &fresh {
        let at = latest.max(st.touched.values().max().copied().unwrap_or(latest)) + chrono::Duration::seconds(1);
        st.touched.insert(id.clone(), at);
    }
    let ids = fresh;
    Ok(json!({"touched": ids}))
}

pub fn client_id(sim: &Sim) -> String {
    format!("1000.{:016X}", data::mix(sim.cfg.seed, &[50]))
}
pub fn client_secret(sim: &Sim) -> String {
    format!("zcs-{:024x}", data::mix(sim.cfg.seed, &[51]) as u128 * 7919)
}
pub fn initial_refresh(sim: &Sim) -> String {
    format!("1000.zrt-{:016x}", data::mix(sim.cfg.seed, &[52]))
}
pub fn org_id(sim: &Sim) -> String {
    format!("{}", 60_000_000 + data::mix(sim.cfg.seed, &[53]) % 1_000_000)
}

pub fn handle(
    sim: &Sim,
    segs: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (String, Result<Reply, Reply>) {
    match segs {
        ["oauth", "v2", "token"] => ("zoho/token".into(), token(sim, q)),
        // Seed 004's own refresh example: `GET …/oauth/v2/?refresh_token=…` → `{"mytoken": …}`.
        // (the router trims the trailing slash of `/oauth/v2/`)
        ["oauth", "v2"] => ("zoho/token/seed-example".into(), seed_example_token(sim, q)),
        ["crm", "v2", module] => {
            let module = canonical(module);
            (format!("zoho/crm/{module}"), crm(sim, &module, q, headers))
        }
        ["crm", "v2", "Deals", id] => ("zoho/crm/Deals/detail".into(), deal(sim, id, headers)),
        ["desk", "api", "v1", "tickets"] => ("zoho/desk/tickets".into(), desk(sim, q, headers)),
        _ => ("zoho/unknown".into(), Err(Reply::err(404, "not found"))),
    }
}

fn token(sim: &Sim, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let mut st = sim.zoho.lock().unwrap();
    let current = st.refresh.clone().unwrap_or_else(|| initial_refresh(sim));
    let ok = q.get("grant_type").map(String::as_str) == Some("refresh_token")
        && q.get("refresh_token") == Some(&current)
        && q.get("client_id") == Some(&client_id(sim))
        && q.get("client_secret") == Some(&client_secret(sim));
    if !ok {
        // Zoho answers a bad grant with 200 and an error field.
        return Ok(Reply::ok(json!({"error": "invalid_code"}), 0));
    }
    st.count += 1;
    let access = format!("1000.zat-{:016x}-{}", data::mix(sim.cfg.seed, &[54, st.count]), st.count);
    st.issued.insert(access.clone(), Instant::now());
    let mut body = json!({
        "access_token": access,
        "api_domain": "https://www.zohoapis.com",
        "token_type": "Bearer",
        "expires_in": sim.cfg.token_ttl.round().max(1.0) as u64,
    });
    if sim.cfg.rotate_refresh {
        let next = format!("1000.zrt-{:016x}-r{}", data::mix(sim.cfg.seed, &[55, st.count]), st.count);
        body["refresh_token"] = json!(next);
        st.refresh = Some(next);
    }
    Ok(Reply::ok(body, 0))
}

/// The answer of seed 004's example endpoint: the token under `mytoken`, for the refresh token
/// alone (the example sends nothing else).
fn seed_example_token(sim: &Sim, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let mut st = sim.zoho.lock().unwrap();
    let current = st.refresh.clone().unwrap_or_else(|| initial_refresh(sim));
    if q.get("refresh_token") != Some(&current) {
        return Err(Reply::err(401, "invalid refresh token"));
    }
    st.count += 1;
    let access = format!("fa{:016x}-{}", data::mix(sim.cfg.seed, &[56, st.count]), st.count);
    st.issued.insert(access.clone(), Instant::now());
    Ok(Reply::ok(json!({"mytoken": access, "api_domain": "https://www.api.com", "token_type": "Bearer", "expires_in": sim.cfg.token_ttl.round().max(1.0) as u64}), 0))
}

/// A module as the API names it whatever the case it was asked in (`deals` → `Deals`).
fn canonical(module: &str) -> String {
    ["Leads", "Contacts", "Deals", "Tasks"]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(module))
        .map_or_else(|| module.to_string(), str::to_string)
}

/// CRM takes `Zoho-oauthtoken <t>` or `Bearer <t>`; Desk only the first.
fn authorized(sim: &Sim, headers: &HeaderMap) -> Result<(), Reply> {
    token_ok(sim, headers, false)
}

fn token_ok(sim: &Sim, headers: &HeaderMap, bearer: bool) -> Result<(), Reply> {
    let h = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let t = h
        .strip_prefix("Zoho-oauthtoken ")
        .or_else(|| h.strip_prefix("Bearer ").filter(|_| bearer))
        .unwrap_or("");
    let st = sim.zoho.lock().unwrap();
    match st.issued.get(t) {
        Some(at) if at.elapsed() < Duration::from_secs_f64(sim.cfg.token_ttl) => Ok(()),
        _ => {
            let mut r = Reply::err(401, "invalid oauth token");
            r.body = json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"});
            Err(r)
        }
    }
}

fn ist(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn zid(seed: u64, kind: u64, e: &data::Entity) -> String {
    format!("{}", 4_876_000_000_000_000_000u64 + data::mix(seed, &[kind, e.day as u64, e.idx]) % 1_000_000_000_000)
}

fn record(sim: &Sim, kind: u64, e: &data::Entity, v: usize) -> Value {
    let (h, seed) = (e.h, sim.cfg.seed);
    let (first, last) = (pick(h >> 3, data::FIRST), pick(h >> 7, data::LAST));
    let common = |mut r: Value| {
        r["id"] = json!(zid(seed, kind, e));
        r["Created_Time"] = json!(ist(e.versions[0]));
        r["Modified_Time"] = json!(ist(e.versions[v]));
        r
    };
    match kind {
        LEADS => common(json!({
            "First_Name": first, "Last_Name": last,
            "Email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), e.idx),
            "Company": pick(h >> 11, &["Acme Ltda", "Globex SA", "Initech"]),
            "Lead_Status": pick(h >> 13 ^ v as u64, &["Not Contacted", "Contacted", "Qualified", "Lost Lead"]),
        })),
        CONTACTS => common(json!({
            "First_Name": first, "Last_Name": last,
            "Email": format!("{}{}@example.org", first.to_lowercase(), e.idx),
        })),
        _ => common(json!({
            "Deal_Name": format!("Negócio {}", e.idx + 1),
            "Stage": pick(h >> 17 ^ v as u64, &["Qualification", "Negotiation", "Closed Won", "Closed Lost"]),
            "Amount": 1000 + (h >> 19) % 90_000,
            "Closing_Date": (e.versions[0] + chrono::Duration::days(30)).format("%Y-%m-%d").to_string(),
            "Description": description(e),
        })),
    }
}

/// A deal's free text; some hold `;` (seed 004's deals config replaces it before its `;` CSV).
fn description(e: &data::Entity) -> String {
    match e.h % 3 {
        0 => format!("Detalhes do negócio {}; retorno em {} dias", e.idx + 1, 1 + e.h % 9),
        1 => format!("Detalhes do negócio {}", e.idx + 1),
        _ => format!("Proposta {}; desconto; aguardando \"ok\"", e.idx + 1),
    }
}

/// Every record of `kind` as the API holds it now: (modified, record), oldest first.
fn all(sim: &Sim, kind: u64, per_day: u64) -> Vec<(DateTime<Utc>, Value)> {
    let now = data::sim_now(sim.cfg.days);
    let mut rows: Vec<(DateTime<Utc>, Value)> =
        data::entities(sim.cfg.seed, kind, 0, per_day * sim.cfg.scale as u64, 0..=sim.cfg.days as i64, sim.cfg.days)
            .filter_map(|e| {
                let v = e.versions.iter().rposition(|t| *t <= now)?;
                Some((e.versions[v], record(sim, kind, &e, v)))
            })
            .collect();
    if kind == DEALS {
        let st = sim.zoho.lock().unwrap();
        for (m, r) in rows.iter_mut() {
            if let Some(at) = r["id"].as_str().and_then(|id| st.touched.get(id)) {
                *m = *at;
                r["Modified_Time"] = json!(ist(*at));
                r["Stage"] = json!("Closed Won");
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1["id"].as_str().cmp(&b.1["id"].as_str())));
    rows
}

fn crm(sim: &Sim, module: &str, q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Reply, Reply> {
    token_ok(sim, headers, true)?;
    sim.limit("zoho:crm", 100, "too many requests")?;
    let (kind, per_day) = match module {
        "Leads" => (LEADS, 30),
        "Contacts" => (CONTACTS, 10),
        "Deals" => (DEALS, 20),
        "Tasks" => (0, 0),
        _ => return Err(Reply::err(400, "INVALID_MODULE")),
    };
    let page = num(q, "page", 1)?.max(1);
    let per_page = num(q, "per_page", 200)?;
    if per_page == 0 || per_page > 200 {
        return Err(Reply::err(400, "INVALID_DATA: per_page must be 1..200"));
    }
    let since = match headers.get("if-modified-since").and_then(|v| v.to_str().ok()) {
        Some(v) => Some(
            DateTime::parse_from_rfc3339(v)
                .map_err(|_| Reply::err(400, "INVALID_DATA: If-Modified-Since"))?
                .to_utc(),
        ),
        None => None,
    };
    let sort_by = q.get("sort_by").map(String::as_str).unwrap_or("Modified_Time");
    if !["id", "Created_Time", "Modified_Time"].contains(&sort_by) {
        return Err(Reply::err(400, "INVALID_DATA: sort_by must be id, Created_Time or Modified_Time"));
    }
    let desc = match q.get("sort_order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(Reply::err(400, "INVALID_DATA: sort_order must be asc or desc")),
    };
    let mut rows: Vec<Value> = if kind == 0 {
        Vec::new()
    } else {
        all(sim, kind, per_day)
            .into_iter()
            .filter(|(m, _)| since.is_none_or(|s| *m > s))
            .map(|(_, r)| r)
            .collect()
    };
    // `all` is by Modified_Time; the others sort on their text (ids have one length, times
    // one offset), ties by id.
    if sort_by != "Modified_Time" {
        rows.sort_by(|a, b| a[sort_by].as_str().cmp(&b[sort_by].as_str()).then_with(|| a["id"].as_str().cmp(&b["id"].as_str())));
    }
    if desc {
        rows.reverse();
    }
    if rows.is_empty() {
        // Nothing modified since the header: 304; a module with no record at all: 204.
        let status = if since.is_some() && kind != 0 { 304 } else { 204 };
        return Ok(Reply { status, ..Reply::ok(Value::Null, 0) });
    }
    let start = ((page - 1) * per_page) as usize;
    let items: Vec<Value> = rows.iter().skip(start).take(per_page as usize).cloned().collect();
    let n = items.len();
    let more = start + n < rows.len();
    Ok(Reply::ok(
        json!({"data": items, "info": {"per_page": per_page, "count": n, "page": page, "more_records": more}}),
        n,
    ))
}

/// `GET /crm/v2/Deals/{id}`: the deal with its detail-only fields; some deals listed in the
/// module answer 404 here (deleted between the list and the detail request).
fn deal(sim: &Sim, id: &str, headers: &HeaderMap) -> Result<Reply, Reply> {
    token_ok(sim, headers, true)?;
    sim.limit("zoho:crm", 100, "too many requests")?;
    *sim.zoho.lock().unwrap().detail_hits.entry(id.to_string()).or_default() += 1;
    let now = data::sim_now(sim.cfg.days);
    let found = data::entities(sim.cfg.seed, DEALS, 0, 20 * sim.cfg.scale as u64, 0..=sim.cfg.days as i64, sim.cfg.days)
        .find(|e| zid(sim.cfg.seed, DEALS, e) == id);
    let Some(e) = found.filter(|e| e.idx % 25 != 7) else {
        let mut r = Reply::err(404, "record not found");
        r.body = json!({"code": "INVALID_URL_PATTERN", "message": "record not found", "status": "error"});
        return Err(r);
    };
    let Some(v) = e.versions.iter().rposition(|t| *t <= now) else {
        return Err(Reply::err(404, "record not found"));
    };
    let mut d = record(sim, DEALS, &e, v);
    d["Contact_Name"] = json!({"id": format!("{}", 4_876_000_100_000_000_000u64 + e.h % 1_000_000), "name": pick(e.h >> 3, data::FIRST)});
    Ok(Reply::ok(json!({"data": [d]}), 1))
}

pub fn detail_hits(sim: &Sim) -> Value {
    json!(sim.zoho.lock().unwrap().detail_hits)
}

fn desk(sim: &Sim, q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Reply, Reply> {
    authorized(sim, headers)?;
    if headers.get("orgid").is_some_and(|v| v.to_str().ok() != Some(org_id(sim).as_str())) {
        return Err(Reply::err(400, "orgId header wrong"));
    }
    let from = num(q, "from", 1)?;
    if from < 1 {
        let mut r = Reply::err(422, "from starts at 1");
        r.body = json!({"errorCode": "INVALID_DATA", "message": "from must be 1 or more"});
        return Err(r);
    }
    let limit = num(q, "limit", 10)?;
    if limit == 0 || limit > 100 {
        let mut r = Reply::err(422, "limit must be 1..100");
        r.body = json!({"errorCode": "INVALID_DATA", "message": "limit must be between 1 and 100"});
        return Err(r);
    }
    let now = data::sim_now(sim.cfg.days);
    let mut rows: Vec<(DateTime<Utc>, Value)> =
        data::entities(sim.cfg.seed, TICKETS, 0, 15 * sim.cfg.scale as u64, 0..=sim.cfg.days as i64, sim.cfg.days)
            .filter_map(|e| {
                let v = e.versions.iter().rposition(|t| *t <= now)?;
                let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                Some((
                    e.versions[0],
                    json!({
                        "id": zid(sim.cfg.seed, TICKETS, &e),
                        "ticketNumber": format!("{}", 100 + e.day as u64 * 1000 + e.idx),
                        "subject": format!("Pedido {} não entregue", e.idx + 1),
                        "status": pick(e.h >> 5 ^ v as u64, &["Open", "On Hold", "Closed"]),
                        "createdTime": iso(e.versions[0]),
                        "modifiedTime": iso(e.versions[v]),
                    }),
                ))
            })
            .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1["id"].as_str().cmp(&b.1["id"].as_str())));
    if let Some(by) = q.get("sortBy") {
        let (field, desc) = by.strip_prefix('-').map_or((by.as_str(), false), |f| (f, true));
        let number = |r: &Value| r["ticketNumber"].as_str().and_then(|n| n.parse::<u64>().ok());
        match field {
            "ticketNumber" => rows.sort_by_key(|r| number(&r.1)),
            "createdTime" | "modifiedTime" => rows.sort_by(|a, b| a.1[field].as_str().cmp(&b.1[field].as_str())),
            _ => {
                let mut r = Reply::err(422, "sortBy");
                r.body = json!({"errorCode": "INVALID_DATA", "message": "sortBy must be ticketNumber, createdTime or modifiedTime"});
                return Err(r);
            }
        }
        if desc {
            rows.reverse();
        }
    }
    let items: Vec<Value> = rows.into_iter().skip(from as usize - 1).take(limit as usize).map(|r| r.1).collect();
    let n = items.len();
    Ok(Reply::ok(json!({"data": items}), n))
}
