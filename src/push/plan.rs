//! Pass 1 of a push: every row of a sink's table checked (key present and unique, the sink's
//! `checks`), its payload hashed, and the keys to send decided, before anything is sent.
use super::key_text;
use crate::config::{Pipeline, RowCheck, SinkConfig};
use crate::error::{Error, Result};
use crate::lake::state;
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::HashMap;

/// A sink's declared check of one value (see `SinkConfig::checks`); Err says what is wrong.
fn check(kind: RowCheck, v: Option<&Value>) -> std::result::Result<(), String> {
    let v = match v {
        None | Some(Value::Null) => return Err("is missing".into()),
        Some(v) => v,
    };
    let wrong = match kind {
        RowCheck::NotNull => None,
        RowCheck::Integer => (!(v.is_i64() || v.is_u64())).then_some("is not an integer"),
        RowCheck::Digits => (!(v.is_u64() || v.as_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))))
            .then_some("is not digits only"),
        RowCheck::TimestampUtc => (!v.as_str().is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()))
            .then_some("is not an ISO-8601 UTC time ending in Z"),
    };
    match wrong {
        None => Ok(()),
        Some(what) => {
            let mut got = v.to_string();
            got.truncate(40);
            Err(format!("{what} (got {got})"))
        }
    }
}

/// The payload of a row (columns but `_…` bookkeeping and `omit`), and its hash.
pub(super) fn payload(k: &SinkConfig, r: &Map<String, Value>) -> (Value, [u8; 32]) {
    let payload = Value::Object(r.iter().filter(|(c, _)| !c.starts_with('_') && !k.omit.contains(c)).map(|(c, v)| (c.clone(), v.clone())).collect());
    let hash: [u8; 32] = sha2::Sha256::digest(payload.to_string().as_bytes()).into();
    (payload, hash)
}

/// Pass 1 over a sink's table (one batch of rows at a time): every row checked, and the keys
/// `send` decides to send (with their payload hashes, in table order, at most `limit`), and the
/// count of keys. Err (exit 2) names every problem; nothing has been sent.
pub(super) async fn plan(
    p: &Pipeline,
    name: &str,
    k: &SinkConfig,
    table: &deltalake::DeltaTable,
    mut send: impl FnMut(&str, &[u8; 32]) -> bool,
    limit: usize,
) -> Result<(usize, Vec<(String, [u8; 32])>)> {
    use futures::TryStreamExt;
    use std::hash::BuildHasher;
    // Repeated keys are found by a 64-bit hash of each key (8 bytes a row, not the key), and
    // confirmed by exact keys in a second read only when two hashes meet.
    let fh = foldhash::fast::FixedState::with_seed(0x1e55);
    let mut key_hashes: Vec<u64> = Vec::new();
    let (mut bad, mut nbad) = (Vec::new(), 0usize);
    let mut out = Vec::new();
    let (mut i, mut first) = (0usize, true);
    let mut rows = state::stream_rows(table, "SELECT * FROM state").await?;
    while let Some(batch) = rows.try_next().await? {
        for r in &batch {
            i += 1;
            let mut problem = |m: String| {
                nbad += 1;
                if bad.len() < 10 {
                    bad.push(m);
                }
            };
            if std::mem::take(&mut first) && !r.contains_key(&k.key) {
                problem(format!("the table has no column `{}`", k.key));
            }
            let key = r.get(&k.key).and_then(key_text);
            for (col, kind) in &k.checks {
                if let Err(why) = check(*kind, r.get(col)) {
                    let who = key.as_ref().map(|v| format!(" (`{}` = {v})", k.key)).unwrap_or_default();
                    problem(format!("row {i}{who}: `{col}` {why}"));
                }
            }
            match key {
                None => problem(format!("row {i}: no `{}`", k.key)),
                Some(key) => {
                    key_hashes.push(fh.hash_one(&key));
                    let hash = payload(k, r).1;
                    if out.len() < limit && send(&key, &hash) {
                        out.push((key, hash));
                    }
                }
            }
        }
    }
    key_hashes.sort_unstable();
    let met: std::collections::HashSet<u64> = key_hashes.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    if !met.is_empty() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut rows = state::stream_rows(table, "SELECT * FROM state").await?;
        while let Some(batch) = rows.try_next().await? {
            for key in batch.iter().filter_map(|r| r.get(&k.key).and_then(key_text)) {
                if met.contains(&fh.hash_one(&key)) {
                    *seen.entry(key).or_default() += 1;
                }
            }
        }
        for (key, n) in seen.into_iter().filter(|(_, n)| *n > 1) {
            nbad += 1;
            if bad.len() < 10 {
                let times = if n == 2 { "twice".to_string() } else { format!("{n} times") };
                bad.push(format!("`{}` = {key} appears {times}", k.key));
            }
        }
    }
    if nbad > 0 {
        let more = if nbad > bad.len() { format!("; … {} more", nbad - bad.len()) } else { String::new() };
        return Err(Error::Usage(format!(
            "{}: sink `{name}` (table {}): nothing sent, {nbad} problem(s): {}{more}",
            p.file,
            k.table,
            bad.join("; ")
        )));
    }
    Ok((key_hashes.len(), out))
}
