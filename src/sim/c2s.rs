//! Contact2Sale `GET /integration/leads`: `Authentication: Bearer` (or `Authorization`), page /
//! perpage ≤ 50 (else 403), exact `YYYY-MM-DDTHH:MM:SSZ` filters (else 403), `meta.total`,
//! dates with a -03:00 offset, 10 requests per window per token (429 + Retry-After).
use super::data::{self, pick};
use super::{Reply, Sim};
use axum::http::HeaderMap;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

const KIND: u64 = 10;
const STATUSES: &[(&str, &str)] = &[
    ("new", "Novo"),
    ("in_progress", "Em atendimento"),
    ("negotiation", "Negociação"),
    ("won", "Vendido"),
    ("lost", "Perdido"),
];
const SOURCES: &[&str] = &["Facebook", "Instagram", "Site", "Portal ZAP", "Indicação"];
const CHANNELS: &[&str] = &["whatsapp", "email", "phone", "chat"];

pub fn per_day(sim: &Sim) -> u64 {
    20 * sim.cfg.scale as u64
}

fn fmt(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::west_opt(3 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn parse_exact(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 20 || !s.ends_with('Z') {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// A lead as the API shows it now: its latest version at or before the simulator's "now".
pub fn lead(seed: u64, e: &data::Entity, now: DateTime<Utc>) -> Option<Value> {
    let v = e.versions.iter().rposition(|t| *t <= now)?;
    let h = e.h;
    let status = match v {
        0 => STATUSES[0],
        1 => STATUSES[1],
        _ => STATUSES[if h % 2 == 0 { 3 } else { 4 }],
    };
    let first = pick(h >> 3, data::FIRST);
    let last = pick(h >> 7, data::LAST);
    let src = (h >> 11) % SOURCES.len() as u64;
    let mut lead = json!({
        "type": "lead",
        "id": format!("{:012x}", data::mix(seed, &[KIND, e.day as u64, e.idx]) & 0xffff_ffff_ffff),
        "attributes": {
            "customer": {"name": format!("{first} {last}"), "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), e.idx), "phone": format!("+55119{:08}", h % 100_000_000)},
            "lead_status": {"alias": status.0, "name": status.1},
            "lead_source": {"id": src + 1, "name": SOURCES[src as usize]},
            "channel": {"name": pick(h >> 13, CHANNELS)},
            "seller": {"id": (h >> 17) % 6 + 1, "name": format!("Vendedor {}", (h >> 17) % 6 + 1)},
            "product": {"prop_ref": format!("AP{:04}", (h >> 23) % 500)},
            "archive_details": if status.0 == "lost" { json!({"reason": "sem interesse"}) } else { Value::Null },
            "done_details": if status.0 == "won" { json!({"value": 1000 + (h >> 29) % 9000}) } else { Value::Null },
            "created_at": fmt(e.versions[0]),
            "updated_at": fmt(e.versions[v]),
        }
    });
    // Schema drift, with documented fields only: from the eighth simulated day on, leads
    // carry `company` (optional in APIS.md), which earlier ones lack.
    if e.day >= 7 {
        lead["attributes"]["company"] = json!({"name": pick(h >> 31, &["Imobiliária Exemplo", "Construtora Sol", "Casa Nova"])});
    }
    Some(lead)
}

/// The simulator's "now": the end of the simulated days, plus the wall-clock time served when
/// leads change live.
fn now(sim: &Sim) -> DateTime<Utc> {
    let end = data::sim_now(sim.cfg.days);
    if sim.cfg.live_updates > 0.0 {
        end + chrono::Duration::microseconds(sim.elapsed().as_micros() as i64)
    } else {
        end
    }
}

/// Every lead as the API shows it now: (created, updated, record). With `live_updates`, each
/// served second k updates that percentage of the leads at `end + k s` and creates one lead.
fn current(sim: &Sim) -> Vec<(DateTime<Utc>, DateTime<Utc>, Value)> {
    let seed = sim.cfg.seed;
    let end = data::sim_now(sim.cfg.days);
    let now = now(sim);
    let live_secs = if sim.cfg.live_updates > 0.0 { sim.elapsed().as_secs() } else { 0 };
    let at = |k: u64, h: u64| {
        let mut t = end + chrono::Duration::seconds(k as i64);
        if data::fractional() {
            t += chrono::Duration::milliseconds((h % 1000) as i64);
        }
        t
    };
    let mut all: Vec<data::Entity> =
        data::entities(seed, KIND, 0, per_day(sim), 0..=sim.cfg.days as i64, sim.cfg.days).collect();
    for k in 1..=live_secs {
        let h = data::mix(seed, &[KIND, 99, k]);
        all.push(data::Entity {
            day: 100_000 + k as u32,
            idx: 0,
            h,
            versions: vec![at(k, h)],
        });
    }
    let threshold = (sim.cfg.live_updates * 100.0) as u64;
    for e in all.iter_mut() {
        for k in 1..=live_secs {
            let h = data::mix(seed, &[KIND, 98, e.day as u64, e.idx, k]);
            let t = at(k, h >> 20);
            if h % 10_000 < threshold && t > *e.versions.last().unwrap() {
                e.versions.push(t);
            }
        }
    }
    all.iter()
        .filter_map(|e| {
            let v = e.versions.iter().rposition(|t| *t <= now)?;
            let mut l = lead(seed, e, now)?;
            let mut updated = e.versions[v];
            // `--future-cursor`: the first lead carries a mistyped update time in 2204.
            if sim.cfg.future_cursor && e.day == 0 && e.idx == 0 {
                updated = DateTime::parse_from_rfc3339("2204-01-01T00:00:00-03:00").ok()?.to_utc();
                l["attributes"]["updated_at"] = json!(fmt(updated));
            }
            Some((e.versions[0], updated, l))
        })
        .collect()
}

/// `GET /_sim/truth/c2s`: every lead's id and `updated_at` as the API holds them now.
pub fn truth(sim: &Sim) -> Value {
    let leads: Vec<Value> = current(sim)
        .into_iter()
        .map(|(_, _, l)| json!({"id": l["id"], "updated_at": l["attributes"]["updated_at"]}))
        .collect();
    json!({"leads": leads})
}

pub fn handle(
    sim: &Sim,
    segs: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (String, Result<Reply, Reply>) {
    let route = "c2s/leads".to_string();
    if segs != ["integration", "leads"] {
        return ("c2s/unknown".into(), Err(Reply::err(404, "not found")));
    }
    (route, leads(sim, q, headers))
}

fn leads(sim: &Sim, q: &HashMap<String, String>, headers: &HeaderMap) -> Result<Reply, Reply> {
    let (token, _) = sim.tokens();
    let sent = ["authentication", "authorization"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .any(|v| v == format!("Bearer {token}") || v == token);
    if !sent {
        return Err(Reply::err(401, "invalid token"));
    }
    sim.limit(&format!("c2s:{token}"), 10, "Too many requests, wait a minute")?;
    let num = |k: &str, d: u64| super::query_num(q, k, d);
    let page = num("page", 1)?.max(1);
    let perpage = num("perpage", 20)?;
    if perpage > 50 || perpage == 0 {
        return Err(Reply::err(403, "perpage must be between 1 and 50"));
    }
    let mut bounds: Vec<(&str, DateTime<Utc>)> = Vec::new();
    for k in ["updated_gte", "updated_lt", "created_gte", "created_lt"] {
        if let Some(v) = q.get(k) {
            let t = parse_exact(v).ok_or_else(|| Reply::err(403, "invalid date or strptime format"))?;
            bounds.push((k, t));
        }
    }
    let ignore = sim.cfg.ignore_filter_every > 0
        && (sim.c2s_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) % sim.cfg.ignore_filter_every == 0;
    if ignore {
        bounds.clear();
    }
    let sort = q.get("sort").map(String::as_str).unwrap_or("-created_at").to_string();
    let sorted = sim.c2s_sorted(&sort, || {
        let (desc, field) = match sort.strip_prefix('-') {
            Some(f) => (true, f),
            None => (false, sort.as_str()),
        };
        let mut rows = current(sim);
        rows.sort_by(|a, b| {
            let k = if field == "updated_at" { a.1.cmp(&b.1) } else { a.0.cmp(&b.0) };
            k.then_with(|| a.2["id"].as_str().cmp(&b.2["id"].as_str()))
        });
        if desc {
            rows.reverse();
        }
        rows
    });
    let rows: Vec<&(DateTime<Utc>, DateTime<Utc>, Value)> = sorted
        .iter()
        .filter(|(c, u, _)| {
            bounds.iter().all(|(k, t)| match *k {
                "updated_gte" => u >= t,
                "updated_lt" => u < t,
                "created_gte" => c >= t,
                _ => c < t,
            })
        })
        .collect();
    let total = rows.len();
    let items: Vec<Value> = rows
        .into_iter()
        .skip(((page - 1) * perpage) as usize)
        .take(perpage as usize)
        .map(|r| r.2.clone())
        .collect();
    let n = items.len();
    Ok(Reply::ok(
        json!({"data": items, "meta": {"total": total, "page": page, "perpage": perpage}}),
        n,
    ))
}
