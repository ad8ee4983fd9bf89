//! Pancake (pages.fm) public API: `page_access_token` per page in the query, v2 conversations
//! with `last_conversation_id` cursor paging (60 a page), v1 page_customers/posts with
//! page_number paging and `total`, tags/users without dates, and the statistics endpoints
//! with `date_range` (`DD/MM/YYYY HH:MM:SS - DD/MM/YYYY HH:MM:SS`, Asia/Ho_Chi_Minh).
use super::data::{self, pick, Entity, MAX_LAG_DAYS};
use super::{Reply, Sim};
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

const CONV: u64 = 20;
const CUST: u64 = 21;
const POST: u64 = 22;
const VN: chrono_tz::Tz = chrono_tz::Asia::Ho_Chi_Minh;

fn naive(t: DateTime<Utc>) -> String {
    if data::fractional() {
        t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// `--late-after S`: conversations stamped two hours before the simulated "now" that show up
/// only once the simulator has served for S seconds — late rows in an already pulled window.
const LATE_PER_PAGE: u64 = 2;

fn late(sim: &Sim, page: u64) -> Vec<Entity> {
    let Some(after) = sim.cfg.late_after else {
        return Vec::new();
    };
    if sim.elapsed().as_secs_f64() < after {
        return Vec::new();
    }
    let now = data::sim_now(sim.cfg.days);
    (0..LATE_PER_PAGE)
        .map(|i| {
            let mut e = data::entity(sim.cfg.seed, CONV, page, sim.cfg.days - 1, 1_000_000 + i);
            e.versions = vec![now - Duration::hours(2) + Duration::minutes(i as i64)];
            e
        })
        .collect()
}

type Window = (DateTime<Utc>, DateTime<Utc>);

fn unix_window(q: &HashMap<String, String>, required: bool) -> Result<Option<Window>, Reply> {
    let get = |k: &str| {
        q.get(k).map(|v| {
            v.parse::<i64>()
                .map_err(|_| Reply::err(400, &format!("{k} must be unix seconds")))
        })
    };
    match (get("since").transpose()?, get("until").transpose()?) {
        (Some(s), Some(u)) => Ok(Some((
            DateTime::from_timestamp(s, 0).unwrap(),
            DateTime::from_timestamp(u, 0).unwrap(),
        ))),
        _ if required => Err(Reply::err(400, "since and until are required")),
        _ => Ok(None),
    }
}

fn range_window(q: &HashMap<String, String>) -> Result<Window, Reply> {
    let bad = || Reply::err(400, "date_range must be DD/MM/YYYY HH:MM:SS - DD/MM/YYYY HH:MM:SS");
    let r = q.get("date_range").ok_or_else(bad)?;
    let (a, b) = r.split_once(" - ").ok_or_else(bad)?;
    let p = |s: &str| -> Result<DateTime<Utc>, Reply> {
        let n = NaiveDateTime::parse_from_str(s.trim(), "%d/%m/%Y %H:%M:%S").map_err(|_| bad())?;
        VN.from_local_datetime(&n)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .ok_or_else(bad)
    };
    Ok((p(a)?, p(b)?))
}

fn users(seed: u64, page: u64) -> Vec<(String, String)> {
    (0..5u64)
        .map(|i| {
            let h = data::mix(seed, &[3, page, i]);
            (
                format!("u{:08x}", h & 0xffff_ffff),
                format!("{} {}", pick(h >> 5, data::FIRST), pick(h >> 9, data::LAST)),
            )
        })
        .collect()
}

/// Entities of `kind` with a version in `[s, u]` (inclusive), at their latest such version, newest first.
fn versions_in(
    sim: &Sim,
    kind: u64,
    page: u64,
    per_day: u64,
    (s, u): Window,
    created_only: bool,
) -> Vec<(Entity, usize)> {
    let now = data::sim_now(sim.cfg.days);
    let lag = if created_only { 0 } else { MAX_LAG_DAYS as i64 };
    let mut out = Vec::new();
    for e in data::entities(
        sim.cfg.seed,
        kind,
        page,
        per_day,
        data::day_of(s) - lag..=data::day_of(u),
        sim.cfg.days,
    ) {
        // A window shows each record once: its latest version updated inside the window.
        let last = e
            .versions
            .iter()
            .enumerate()
            .take(if created_only { 1 } else { usize::MAX })
            .filter(|(_, t)| **t >= s && **t <= u && **t <= now)
            .map(|(v, _)| v)
            .last();
        if let Some(v) = last {
            out.push((e.clone(), v));
        }
    }
    out.sort_by(|a, b| {
        b.0.versions[b.1]
            .cmp(&a.0.versions[a.1])
            .then(a.0.idx.cmp(&b.0.idx))
            .then(a.0.day.cmp(&b.0.day))
    });
    out
}

fn conversation(seed: u64, page: u64, e: &Entity, v: usize, tags: usize) -> Value {
    let h = e.h;
    let users = users(seed, page);
    let (fname, lname) = (pick(h >> 3, data::FIRST), pick(h >> 7, data::LAST));
    json!({
        // All 64 bits: 40 gave two conversations of a 1.6M-conversation page one id (with
        // different `inserted_at`s), which no real page has.
        "id": format!("{page}_{:016x}", data::mix(seed, &[CONV, page, e.day as u64, e.idx])),
        "type": if h % 4 == 0 { "COMMENT" } else { "INBOX" },
        "customers": [{"id": format!("c{:08x}", (h >> 8) & 0xffff_ffff), "name": format!("{fname} {lname}"), "fb_id": format!("{}", 10_000_000 + (h >> 12) % 90_000_000)}],
        "tags": (0..(v + (h as usize >> 4) % 2)).map(|i| (((h >> (i * 3)) % tags as u64) + 1) as i64).collect::<Vec<_>>(),
        "snippet": format!("mensagem {} da conversa", v + 1),
        "message_count": 1 + 3 * v as u64 + (h >> 16) % 3,
        "assignee_ids": [users[(h >> 20) as usize % users.len()].0.clone()],
        "seen": v > 0,
        "inserted_at": naive(e.versions[0]),
        "updated_at": naive(e.versions[v]),
    })
}

pub fn handle(sim: &Sim, segs: &[&str], q: &HashMap<String, String>) -> (String, Result<Reply, Reply>) {
    let (version, pid, rest) = match segs {
        [v, "pages", pid, rest @ ..] if !rest.is_empty() => (*v, *pid, rest.join("/")),
        _ => return ("pancake/unknown".into(), Err(Reply::err(404, "not found"))),
    };
    let route = format!("pancake/{rest}");
    let (_, pages) = sim.tokens();
    let Some((_, token)) = pages.iter().find(|(p, _)| p == pid) else {
        return (route, Err(Reply::err(404, "page not found")));
    };
    if q.get("page_access_token") != Some(token) {
        return (route, Err(Reply::err(401, "invalid page_access_token")));
    }
    if let Err(r) = sim.limit(&format!("pancake:{pid}"), 300, "too_many_requests") {
        return (route, Err(r));
    }
    let page: u64 = pid.parse().unwrap_or(0);
    let res = match (version, rest.as_str()) {
        ("v2", "conversations") => conversations(sim, page, q),
        ("v1", "page_customers") => paged(sim, page, q, CUST, 15, 100, "customers"),
        ("v1", "posts") => paged(sim, page, q, POST, 3, 30, "posts"),
        ("v1", "tags") => Ok(tags(page)),
        ("v1", "users") => {
            let us = users(sim.cfg.seed, page);
            let list: Vec<Value> = us
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name, "email": format!("{id}@example.vn"), "role": "staff"}))
                .collect();
            let n = list.len();
            Ok(Reply::ok(
                json!({"success": true, "users": list, "disabled_users": [{"id": "u00000000", "name": "Old Staff"}], "round_robin_users": {}}),
                n,
            ))
        }
        ("v1", "statistics/users") => user_statistics(sim, page, q),
        ("v1", "statistics/customer_engagements") => engagements(sim, page, q),
        ("v1", "statistics/pages") => page_statistics(sim, page, q),
        ("v1", "statistics/ads") => ads(sim, page, q, false),
        ("v1", "statistics/pages_campaigns") => ads(sim, page, q, true),
        _ => Err(Reply::err(404, "not found")),
    };
    (route, res)
}

const TAGS: &[(&str, &str)] = &[
    ("Khách mới", "#4caf50"),
    ("Đã mua", "#2196f3"),
    ("Hỏi giá", "#ff9800"),
    ("Khiếu nại", "#f44336"),
    ("VIP", "#9c27b0"),
    ("Spam", "#607d8b"),
    ("Hẹn gọi lại", "#795548"),
    ("Đã chốt", "#009688"),
];

fn tags(_page: u64) -> Reply {
    let t: Vec<Value> = TAGS.iter().enumerate().map(|(i, (text, color))| json!({"id": i + 1, "text": text, "color": color, "lighten_color": format!("{color}33")})).collect();
    let n = t.len();
    Reply::ok(json!({"tags": t}), n)
}

fn conversations(sim: &Sim, page: u64, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let w = unix_window(q, false)?.unwrap_or((data::start(), data::sim_now(sim.cfg.days)));
    // Generated once per window and page, then served page by page.
    let late = late(sim, page);
    let rows = sim.cached(format!("conv/{page}/{}/{}/{}", w.0, w.1, late.len()), || {
        let mut vs = versions_in(sim, CONV, page, 30 * sim.cfg.scale as u64, w, false);
        for e in late {
            if e.versions[0] >= w.0 && e.versions[0] <= w.1 {
                vs.push((e, 0));
            }
        }
        vs.sort_by(|a, b| b.0.versions[b.1].cmp(&a.0.versions[a.1]).then(a.0.idx.cmp(&b.0.idx)));
        vs.iter()
            .map(|(e, v)| conversation(sim.cfg.seed, page, e, *v, TAGS.len()))
            .collect()
    });
    let from = match q.get("last_conversation_id") {
        Some(id) => rows
            .iter()
            .position(|r| r["id"].as_str() == Some(id.as_str()))
            .map_or(rows.len(), |p| p + 1),
        None => 0,
    };
    let out: Vec<Value> = rows.iter().skip(from).take(60).cloned().collect();
    let n = out.len();
    Ok(Reply::ok(json!({"conversations": out}), n))
}

fn paged(
    sim: &Sim,
    page: u64,
    q: &HashMap<String, String>,
    kind: u64,
    per_day: u64,
    max: u64,
    key: &str,
) -> Result<Reply, Reply> {
    let w = unix_window(q, true)?.unwrap();
    let num = |k: &str, d: u64| super::query_num(q, k, d);
    let (pn, ps) = (num("page_number", 1)?, num("page_size", max.min(30))?);
    if pn == 0 || ps == 0 || ps > max {
        return Err(Reply::err(
            400,
            &format!("page_size must be 1..{max} and page_number ≥ 1"),
        ));
    }
    let all = sim.cached(format!("{kind}/{page}/{}/{}", w.0, w.1), || {
        versions_in(sim, kind, page, per_day * sim.cfg.scale as u64, w, true)
            .iter()
            .map(|(e, _)| render(sim, kind, page, e))
            .collect()
    });
    let total = all.len();
    let rows: Vec<Value> = all
        .iter()
        .skip(((pn - 1) * ps) as usize)
        .take(ps as usize)
        .cloned()
        .collect();
    let n = rows.len();
    Ok(Reply::ok(json!({"success": true, "total": total, key: rows}), n))
}

fn render(sim: &Sim, kind: u64, page: u64, e: &Entity) -> Value {
    {
        {
            let h = e.h;
            let id = format!(
                "{:012x}",
                data::mix(sim.cfg.seed, &[kind, page, e.day as u64, e.idx]) & 0xffff_ffff_ffff
            );
            if kind == CUST {
                json!({"id": id, "customer_id": format!("c{:08x}", (h >> 8) & 0xffff_ffff), "psid": format!("{}", (h >> 12) % 1_000_000_000),
                       "name": format!("{} {}", pick(h >> 3, data::FIRST), pick(h >> 7, data::LAST)), "gender": if h % 2 == 0 { "male" } else { "female" },
                       "phone_numbers": if h % 3 == 0 { json!([]) } else { json!([format!("09{:08}", h % 100_000_000)]) }, "birthday": null,
                       "inserted_at": naive(e.versions[0])})
            } else {
                json!({"id": format!("{page}_{id}"), "message": format!("Bài viết số {}", e.idx + 1), "type": pick(h, &["photo", "video", "status"]),
                       "inserted_at": naive(e.versions[0]), "comment_count": h % 50, "reactions": {"like": (h >> 6) % 200, "love": (h >> 14) % 40}})
            }
        }
    }
}

fn hours((s, u): Window) -> Vec<DateTime<Utc>> {
    let mut t = DateTime::from_timestamp(s.timestamp() - s.timestamp().rem_euclid(3600), 0).unwrap();
    let mut out = Vec::new();
    while t <= u {
        if t >= s {
            out.push(t);
        }
        t += Duration::hours(1);
    }
    out
}

fn active(sim: &Sim, t: DateTime<Utc>) -> bool {
    t >= data::start() && t < data::sim_now(sim.cfg.days)
}

fn user_statistics(sim: &Sim, page: u64, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let w = range_window(q)?;
    let us = users(sim.cfg.seed, page);
    let mut stats = serde_json::Map::new();
    let mut n = 0;
    for (uid, _) in &us {
        let mut rows = Vec::new();
        for t in hours(w).into_iter().filter(|t| active(sim, *t)) {
            let h = data::mix(
                sim.cfg.seed,
                &[
                    30,
                    page,
                    t.timestamp() as u64,
                    uid.len() as u64,
                    uid.as_bytes()[3] as u64,
                ],
            );
            if h % 3 == 0 {
                rows.push(json!({"hour": t.with_timezone(&VN).format("%Y-%m-%d %H:00:00").to_string(), "inbox_count": h % 20 * sim.cfg.scale as u64,
                                 "comment_count": (h >> 8) % 10, "average_response_time": (h >> 16) % 900, "phone_number_count": (h >> 24) % 4}));
            }
        }
        n += rows.len();
        stats.insert(uid.clone(), Value::Array(rows));
    }
    let users: serde_json::Map<String, Value> = us
        .iter()
        .map(|(id, name)| {
            (
                id.clone(),
                json!({"user_name": name, "email": format!("{id}@example.vn")}),
            )
        })
        .collect();
    n += users.len();
    Ok(Reply::ok(
        json!({"success": true, "data": {"statistics": stats, "users": users}}),
        n,
    ))
}

fn engagements(sim: &Sim, page: u64, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let w = range_window(q)?;
    let hs: Vec<DateTime<Utc>> = hours(w);
    let cats: Vec<String> = hs
        .iter()
        .map(|t| t.with_timezone(&VN).format("%d/%m %H:00").to_string())
        .collect();
    let series: Vec<Value> = ["inbox", "comment", "new_customer"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let data: Vec<u64> = hs
                .iter()
                .map(|t| {
                    if active(sim, *t) {
                        data::mix(sim.cfg.seed, &[31, page, k as u64, t.timestamp() as u64]) % 12
                    } else {
                        0
                    }
                })
                .collect();
            json!({"name": name, "data": data})
        })
        .collect();
    let ue: Vec<Value> = users(sim.cfg.seed, page)
        .iter()
        .map(|(id, name)| {
            let h = data::mix(sim.cfg.seed, &[32, page, w.0.timestamp() as u64, id.as_bytes()[4] as u64]);
            json!({"user_id": id, "name": name, "total_engagement": if active(sim, w.0) { h % 40 } else { 0 }, "new_customer_replied_count": (h >> 8) % 10})
        })
        .collect();
    let n = series.len() + ue.len();
    Ok(Reply::ok(
        json!({"success": true, "data": {"categories": cats, "series": series}, "users_engagements": ue}),
        n,
    ))
}

fn page_statistics(sim: &Sim, page: u64, q: &HashMap<String, String>) -> Result<Reply, Reply> {
    let w = unix_window(q, true)?.unwrap();
    let rows: Vec<Value> = hours(w)
        .into_iter()
        .filter(|t| active(sim, *t))
        .map(|t| {
            let h = data::mix(sim.cfg.seed, &[33, page, t.timestamp() as u64]);
            json!({"hour": naive(t), "new_customer_count": h % 6, "customer_inbox_count": (h >> 8) % 15, "customer_comment_count": (h >> 16) % 9})
        })
        .collect();
    let n = rows.len();
    Ok(Reply::ok(json!({"success": true, "data": rows}), n))
}

/// Ads and campaigns over `[since, until]`: one row per ad (metrics summed over the days the
/// range covers) with exactly the fields APIS.md lists — no date, no id the docs lack. A day
/// counts when the range holds more than its first instant.
fn ads(sim: &Sim, page: u64, q: &HashMap<String, String>, campaigns: bool) -> Result<Reply, Reply> {
    let (s, u) = unix_window(q, true)?.unwrap();
    let mut by_key: Vec<(String, Value)> = Vec::new();
    let last = data::day_of(u - Duration::seconds(1)).min(sim.cfg.days as i64 - 1);
    for d in data::day_of(s).max(0)..=last {
        let h = data::mix(sim.cfg.seed, &[if campaigns { 35 } else { 34 }, page, d as u64]);
        let count = if campaigns { (d % 5 == 2) as u64 } else { h % 3 };
        for i in 0..count {
            let hi = data::mix(h, &[i]);
            let (key, row) = if campaigns {
                let ad = format!("{}", data::mix(sim.cfg.seed, &[36, page, i]) % 1_000_000);
                (ad.clone(), json!({"account_id": format!("act_{}", page * 7), "ad_id": ad, "adset_id": format!("{}", (hi >> 20) % 1_000_000),
                       "budget_remaining": (hi >> 30) % 500_000, "currency": "VND", "daily_budget": 200_000, "status": "ACTIVE"}))
            } else {
                let name = format!("Quảng cáo {}", i + 1);
                (name.clone(), json!({"name": name, "status": "ACTIVE", "currency": "VND",
                       "reach": hi % 5000, "impressions": (hi >> 13) % 20000, "spend": (hi >> 27) % 1_000_000}))
            };
            match by_key.iter_mut().find(|(k, _)| *k == key) {
                Some((_, acc)) if !campaigns => {
                    for f in ["reach", "impressions", "spend"] {
                        acc[f] = json!(acc[f].as_u64().unwrap_or(0) + row[f].as_u64().unwrap_or(0));
                    }
                }
                Some((_, acc)) => *acc = row,
                None => by_key.push((key, row)),
            }
        }
    }
    let rows: Vec<Value> = by_key.into_iter().map(|(_, r)| r).collect();
    let n = rows.len();
    Ok(Reply::ok(Value::Array(rows), n))
}
