//! Ploomes CRM (seed 001): OData `GET /Contacts`, `/Tasks`, `/InteractionRecords` with
//! `User-Key`, `$top` (≤ 300), `$skip`, `$filter=LastUpdateDate ge <ISO>` and
//! `@odata.nextLink` (absolute, keeping the query) while more rows remain; dates carry -03:00.
//! About 120 requests a minute per key. `POST /Contacts` creates a contact (`Name`, `TypeId` 1
//! company with `CNPJ`, 2 person with `CPF`), twice if called twice, answered in `value[0]`;
//! created contacts are served by `GET /Contacts` from then on. `$filter` also takes
//! `CNPJ eq '<v>'` and `CPF eq '<v>'`. `POST /_sim/ploomes/retag?task=<Id>&tag=<TagId>` changes
//! a task's tag (and its LastUpdateDate) the way a user would; `GET /_sim/truth/ploomes`:
//! contacts created, per document.
use super::data::{self, pick};
use super::{Reply, Sim};
use axum::http::HeaderMap;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

const CONTACTS: u64 = 90;
const TASKS: u64 = 91;
const INTERACTIONS: u64 = 92;
/// Tag ids: 1 INSTALAÇÃO, 2 ENTREGA, 3 others.
const TAGS: &[i64] = &[1, 2, 3, 3, 3];

#[derive(Default)]
pub struct State {
    /// Contacts created by `POST /Contacts`.
    created: Vec<Value>,
    /// Task Id → its new TagId (`/_sim/ploomes/retag`).
    retag: HashMap<i64, i64>,
}

pub fn user_key(sim: &Sim) -> String {
    format!("pk-{:022x}", data::mix(sim.cfg.seed, &[93]) as u128 * 17)
}

/// Ploomes' data spans 2023-09-01 to about 2025-02 whatever `--days` is (seed 001 sends what
/// was created from 2024-02-24 on: the simulated account must hold records on both sides of
/// that date). An instant of the simulated days, stretched onto that span.
fn stretch(sim: &Sim, t: DateTime<Utc>) -> DateTime<Utc> {
    const SPAN_DAYS: f64 = 540.0;
    let k = SPAN_DAYS / sim.cfg.days.max(1) as f64;
    let secs = (t - data::start()).num_milliseconds() as f64 / 1000.0 * k;
    data::start() + chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

fn br(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::west_opt(3 * 3600).unwrap()).format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn digits(h: u64, n: usize) -> String {
    let mut s = format!("{:020}", h);
    s.truncate(n);
    s
}

fn record(sim: &Sim, kind: u64, e: &data::Entity, v: usize) -> Value {
    let h = e.h;
    let id = 1_000_000 + (data::mix(sim.cfg.seed, &[kind, e.day as u64, e.idx]) % 9_000_000) as i64;
    let contact_of = |x: u64| {
        let c = data::entity(sim.cfg.seed, CONTACTS, 0, (x % sim.cfg.days as u64) as u32, (x >> 8) % (per_day(CONTACTS) * sim.cfg.scale as u64));
        1_000_000 + (data::mix(sim.cfg.seed, &[CONTACTS, c.day as u64, c.idx]) % 9_000_000) as i64
    };
    match kind {
        CONTACTS => {
            let company = h % 3 != 0;
            json!({
                "Id": id,
                "Name": format!("{} {}", pick(h >> 3, data::FIRST), pick(h >> 7, data::LAST)),
                "Email": format!("contato{}@example.com.br", e.idx),
                "TypeId": if company { 1 } else { 2 },
                "CNPJ": if company { json!(format!("{}.{}/0001-{}", &digits(h, 8)[..2], &digits(h, 8)[2..], &digits(h >> 5, 2))) } else { Value::Null },
                "CPF": if company { Value::Null } else { json!(digits(h >> 9, 11)) },
                "Phones": [{"PhoneNumber": format!("(11) 9{}", digits(h >> 13, 8))}],
                "CreateDate": br(stretch(sim, e.versions[0])),
                "LastUpdateDate": br(stretch(sim, e.versions[v])),
            })
        }
        _ => {
            // None, one or several tags, in any order (the seed's tag may be anywhere).
            let tags: Vec<Value> = (0..(h >> 40) % 4).map(|i| json!({"TagId": TAGS[((h >> (17 + 3 * i)) as usize) % TAGS.len()]})).collect();
            let mut r = json!({
                "Id": id,
                "ContactId": contact_of(h >> 21),
                "Tags": tags,
                "CreateDate": br(stretch(sim, e.versions[0])),
                "LastUpdateDate": br(stretch(sim, e.versions[v])),
            });
            if kind == TASKS {
                r["Title"] = json!(format!("Tarefa {}", e.idx + 1));
            } else {
                r["Content"] = json!(format!("Interação {}", e.idx + 1));
                r["Date"] = json!(br(stretch(sim, e.versions[0])));
            }
            r
        }
    }
}

/// Every contact's (name, CNPJ/CPF digits), as `GET /Contacts` serves them today.
pub fn contact_documents(sim: &Sim) -> Vec<(String, String)> {
    generated(sim, CONTACTS)
        .filter_map(|(_, r)| {
            let doc = r["CNPJ"].as_str().or(r["CPF"].as_str())?.chars().filter(char::is_ascii_digit).collect();
            Some((r["Name"].as_str()?.to_string(), doc))
        })
        .collect()
}

/// Generated records of `kind` per simulated day (per unit of `--scale`).
fn per_day(kind: u64) -> u64 {
    if kind == CONTACTS {
        10
    } else {
        15
    }
}

/// The generated records of `kind` as they stand at the simulator's "now", with the time of
/// that version (writes and retags through the simulator come on top).
fn generated(sim: &Sim, kind: u64) -> impl Iterator<Item = (DateTime<Utc>, Value)> + '_ {
    let now = data::sim_now(sim.cfg.days);
    data::entities(sim.cfg.seed, kind, 0, per_day(kind) * sim.cfg.scale as u64, 0..=sim.cfg.days as i64, sim.cfg.days)
        .filter_map(move |e| {
            let v = e.versions.iter().rposition(|t| *t <= now)?;
            Some((stretch(sim, e.versions[v]), record(sim, kind, &e, v)))
        })
}

/// A `$filter` the simulator understands.
enum Filter {
    Since(DateTime<Utc>),
    Eq(String, String),
}

fn parse_filter(f: &str) -> Result<Filter, Reply> {
    if let Some(v) = f.strip_prefix("LastUpdateDate ge ") {
        return Ok(Filter::Since(DateTime::parse_from_rfc3339(v.trim()).map_err(|_| Reply::err(400, "bad date in $filter"))?.to_utc()));
    }
    for field in ["CNPJ", "CPF"] {
        if let Some(v) = f.strip_prefix(&format!("{field} eq ")) {
            let v = v.trim().strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).ok_or_else(|| Reply::err(400, "quote the value in $filter"))?;
            return Ok(Filter::Eq(field.into(), v.into()));
        }
    }
    Err(Reply::err(400, "unsupported $filter (LastUpdateDate ge <date>, CNPJ eq '<v>', CPF eq '<v>')"))
}

pub fn handle(sim: &Sim, base: &str, method: &str, segs: &[&str], q: &HashMap<String, String>, headers: &HeaderMap, body: &[u8]) -> (String, Result<Reply, Reply>) {
    let kind = match segs {
        ["Contacts"] => CONTACTS,
        ["Tasks"] => TASKS,
        ["InteractionRecords"] => INTERACTIONS,
        _ => return ("ploomes/unknown".into(), Err(Reply::err(404, "not found"))),
    };
    let route = match method {
        "POST" if kind == CONTACTS => "ploomes/Contacts/create".to_string(),
        "GET" => format!("ploomes/{}", segs[0]),
        _ => return ("ploomes/unknown".into(), Err(Reply::err(405, "method not allowed"))),
    };
    if headers.get("user-key").and_then(|v| v.to_str().ok()) != Some(user_key(sim).as_str()) {
        return (route, Err(Reply::err(401, "invalid User-Key")));
    }
    if let Err(r) = sim.limit("ploomes", 120, "Too Many Requests") {
        return (route, Err(r));
    }
    let now = stretch(sim, data::sim_now(sim.cfg.days));
    if method == "POST" {
        return (route, create_contact(sim, now, body));
    }
    let num = |k: &str, d: u64| super::query_num(q, k, d);
    let res = (|| {
        let (top, skip) = (num("$top", 300)?, num("$skip", 0)?);
        if top == 0 || top > 300 {
            return Err(Reply::err(400, "$top must be 1..300"));
        }
        let filter = q.get("$filter").map(|f| parse_filter(f)).transpose()?;
        let st = sim.ploomes.lock().unwrap();
        let mut rows: Vec<(DateTime<Utc>, i64, Value)> = generated(sim, kind)
            .map(|(t, mut r)| {
                let id = r["Id"].as_i64().unwrap_or(0);
                match st.retag.get(&id) {
                    Some(tag) if kind == TASKS => {
                        r["Tags"] = json!([{"TagId": tag}]);
                        r["LastUpdateDate"] = json!(br(now));
                        (now, id, r)
                    }
                    _ => (t, id, r),
                }
            })
            .collect();
        if kind == CONTACTS {
            rows.extend(st.created.iter().map(|c| (now, c["Id"].as_i64().unwrap_or(0), c.clone())));
        }
        drop(st);
        rows.retain(|(t, _, r)| match &filter {
            None => true,
            Some(Filter::Since(s)) => t >= s,
            Some(Filter::Eq(f, v)) => r[f.as_str()].as_str() == Some(v.as_str()),
        });
        rows.sort_by_key(|r| r.1);
        let total = rows.len() as u64;
        let items: Vec<Value> = rows.into_iter().skip(skip as usize).take(top as usize).map(|r| r.2).collect();
        let n = items.len();
        let mut body = json!({"value": items});
        if skip + top < total {
            let mut next: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).filter(|(k, _)| k != "$skip").collect();
            next.push(("$skip".into(), (skip + top).to_string()));
            next.sort();
            let qs = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(next).finish();
            body["@odata.nextLink"] = json!(format!("{base}/ploomes/{}?{qs}", segs[0]));
        }
        Ok(Reply::ok(body, n))
    })();
    (route, res)
}

/// `POST /Contacts`: no idempotency (a second call creates a second contact).
fn create_contact(sim: &Sim, now: DateTime<Utc>, body: &[u8]) -> Result<Reply, Reply> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Reply::err(400, "body is not JSON"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let name = text("Name").ok_or_else(|| Reply::err(400, "Name is required"))?;
    let doc_field = match v.get("TypeId").and_then(Value::as_i64) {
        Some(1) => "CNPJ",
        Some(2) => "CPF",
        _ => return Err(Reply::err(400, "TypeId must be 1 (company) or 2 (person)")),
    };
    let doc = text(doc_field).ok_or_else(|| Reply::err(400, &format!("{doc_field} is required for this TypeId")))?;
    let mut st = sim.ploomes.lock().unwrap();
    let id = 50_000_000 + st.created.len() as i64 + 1;
    let c = json!({
        "Id": id, "Name": name, "Email": v.get("Email").cloned().unwrap_or(Value::Null),
        "TypeId": v["TypeId"], "CNPJ": if doc_field == "CNPJ" { json!(doc) } else { Value::Null },
        "CPF": if doc_field == "CPF" { json!(doc) } else { Value::Null },
        "Phones": v.get("Phones").cloned().unwrap_or(json!([])),
        "CreateDate": br(now), "LastUpdateDate": br(now),
    });
    st.created.push(c.clone());
    Ok(Reply::ok(json!({"value": [c]}), 0))
}

/// `/_sim/ploomes/retag?task=<Id>&tag=<TagId>`.
pub fn retag(sim: &Sim, q: &HashMap<String, String>) -> Result<Value, Reply> {
    let task = super::query_num(q, "task", 0)? as i64;
    let tag = super::query_num(q, "tag", 0)? as i64;
    sim.ploomes.lock().unwrap().retag.insert(task, tag);
    Ok(json!({"task": task, "tag": tag}))
}

pub fn truth(sim: &Sim) -> Value {
    let st = sim.ploomes.lock().unwrap();
    let mut by: HashMap<String, u64> = HashMap::new();
    for c in &st.created {
        let doc = c["CNPJ"].as_str().or(c["CPF"].as_str()).unwrap_or_default();
        *by.entry(doc.to_string()).or_default() += 1;
    }
    json!({"created": st.created.len(), "created_by_document": by})
}
