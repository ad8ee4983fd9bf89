//! Sloppy answers behind flags (the real APIs are known to do each): `--sparse` drops optional
//! fields at random, `--drift` turns integer ids into strings, `--omit-optional` drops every
//! optional field.
use super::{data, REQUIRED};
use serde_json::Value;

/// `--sparse`: drop each optional field of each record with probability `p` (decided by a hash
/// of the record and the field's path, so a record re-served is sparse the same way).
pub(super) fn sparsify(v: &mut Value, p: f64, seed: u64) {
    fn in_record(v: &mut Value, path: &str, p: f64, h: u64) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| {
                    let full = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if REQUIRED.contains(&full.as_str()) {
                        return true;
                    }
                    let x = data::mix_text(h, &full);
                    (x % 1_000_000) as f64 >= p * 1_000_000.0
                });
                for (k, x) in m.iter_mut() {
                    let full = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    in_record(x, &full, p, h);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    in_record(x, path, p, data::mix(h, &[i as u64]));
                }
            }
            _ => {}
        }
    }
    match v {
        Value::Array(a) => {
            for x in a.iter_mut() {
                if x.is_object() {
                    let h = data::mix_text(seed, &x.to_string());
                    in_record(x, "", p, h);
                } else {
                    sparsify(x, p, seed);
                }
            }
        }
        Value::Object(m) => m.values_mut().for_each(|x| sparsify(x, p, seed)),
        _ => {}
    }
}

/// `--drift`: integer ids as strings, at any depth.
pub(super) fn drift_ids(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let idish = k == "id" || k == "Id" || k.ends_with("_id") || k.ends_with("Id");
                match x {
                    Value::Number(n) if idish && (n.is_i64() || n.is_u64()) => *x = Value::String(n.to_string()),
                    _ => drift_ids(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(drift_ids),
        _ => {}
    }
}

/// Fields the real APIs may leave out of a record (everything but keys, names, times and the
/// lists child tables unnest): `--omit-optional` drops them wherever they appear in a record.
pub const OPTIONAL: &[&str] = &[
    "company", "seller", "product", "channel", "lead_source", "archive_details", "done_details", "email", "phone",
    "snippet", "seen", "message_count", "assignee_ids", "gender", "phone_numbers", "birthday", "psid", "message",
    "reactions", "comment_count", "color", "lighten_color", "role", "average_response_time", "phone_number_count",
    "inbox_count", "new_customer_replied_count", "total_engagement", "customer_comment_count", "customer_inbox_count",
    "new_customer_count", "reach", "impressions", "spend", "currency", "budget_remaining", "daily_budget", "adset_id",
    "account_id", "status",
];

pub(super) fn strip_optional(v: &mut Value, in_record: bool) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| strip_optional(x, true)),
        Value::Object(m) => {
            if in_record {
                m.retain(|k, _| !OPTIONAL.contains(&k.as_str()));
            }
            m.values_mut().for_each(|x| strip_optional(x, in_record));
        }
        _ => {}
    }
}
