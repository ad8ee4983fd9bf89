//! Ploomes CRM (seed 001): OData `GET /Contacts`, `/Tasks`, `/InteractionRecords` with
//! `User-Key`, `$top` (≤ 300), `$skip`, `$filter=LastUpdateDate ge <ISO>` and
//! `@odata.nextLink` (absolute, keeping the query) while more rows remain; dates carry -03:00.
//! About 120 requests a minute per key.
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

pub fn user_key(sim: &Sim) -> String {
    format!("pk-{:022x}", data::mix(sim.cfg.seed, &[93]) as u128 * 17)
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
        let c = data::entity(sim.cfg.seed, CONTACTS, 0, (x % sim.cfg.days as u64) as u32, (x >> 8) % (10 * sim.cfg.scale as u64));
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
                "CreateDate": br(e.versions[0]),
                "LastUpdateDate": br(e.versions[v]),
            })
        }
        _ => {
            let tag = TAGS[(h >> 17) as usize % TAGS.len()];
            let mut r = json!({
                "Id": id,
                "ContactId": contact_of(h >> 21),
                "Tags": [{"TagId": tag}],
                "CreateDate": br(e.versions[0]),
                "LastUpdateDate": br(e.versions[v]),
            });
            if kind == TASKS {
                r["Title"] = json!(format!("Tarefa {}", e.idx + 1));
            } else {
                r["Content"] = json!(format!("Interação {}", e.idx + 1));
                r["Date"] = json!(br(e.versions[0]));
            }
            r
        }
    }
}

pub fn handle(sim: &Sim, base: &str, segs: &[&str], q: &HashMap<String, String>, headers: &HeaderMap) -> (String, Result<Reply, Reply>) {
    let (kind, per_day) = match segs {
        ["Contacts"] => (CONTACTS, 10),
        ["Tasks"] => (TASKS, 15),
        ["InteractionRecords"] => (INTERACTIONS, 15),
        _ => return ("ploomes/unknown".into(), Err(Reply::err(404, "not found"))),
    };
    let route = format!("ploomes/{}", segs[0]);
    if headers.get("user-key").and_then(|v| v.to_str().ok()) != Some(user_key(sim).as_str()) {
        return (route, Err(Reply::err(401, "invalid User-Key")));
    }
    if let Err(r) = sim.limit("ploomes", 120, "Too Many Requests") {
        return (route, Err(r));
    }
    let num = |k: &str, d: u64| super::query_num(q, k, d);
    let res = (|| {
        let (top, skip) = (num("$top", 300)?, num("$skip", 0)?);
        if top == 0 || top > 300 {
            return Err(Reply::err(400, "$top must be 1..300"));
        }
        let since = match q.get("$filter") {
            Some(f) => {
                let v = f
                    .strip_prefix("LastUpdateDate ge ")
                    .ok_or_else(|| Reply::err(400, "unsupported $filter (LastUpdateDate ge <date>)"))?;
                Some(DateTime::parse_from_rfc3339(v.trim()).map_err(|_| Reply::err(400, "bad date in $filter"))?.to_utc())
            }
            None => None,
        };
        let now = data::sim_now(sim.cfg.days);
        let mut rows: Vec<(DateTime<Utc>, i64, Value)> =
            data::entities(sim.cfg.seed, kind, 0, per_day * sim.cfg.scale as u64, 0..=sim.cfg.days as i64, sim.cfg.days)
                .filter_map(|e| {
                    let v = e.versions.iter().rposition(|t| *t <= now)?;
                    let r = record(sim, kind, &e, v);
                    Some((e.versions[v], r["Id"].as_i64().unwrap_or(0), r))
                })
                .filter(|(t, _, _)| since.is_none_or(|s| *t >= s))
                .collect();
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
