//! Seed 004's `last::` references: `${last:<field>}` / `${last:<field>:-default}` in a stream's
//! path, params, headers or body read a field of the last record the previous successful run
//! landed (kept in the run log). Checked before a pull starts, filled per request.
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::lake::{runs, Lake};
use std::collections::HashMap;

/// The previous successful run's last-record fields per (partition, stream), checked to
/// resolve every `${last:…}` of the pipeline.
pub(super) async fn check_last(p: &Pipeline, lake: &Lake) -> Result<HashMap<(String, String), serde_json::Map<String, serde_json::Value>>> {
    // Most pipelines read nothing back: then the run log (which grows by a row per stream and
    // pull) is not read at all.
    if !p.streams.iter().any(|s| templates(s).iter().any(|t| t.contains("${last:"))) {
        return Ok(HashMap::new());
    }
    let last = runs::last_values(lake, &p.name).await?;
    for part in &p.partitions {
        for s in &p.streams {
            let prev = last.get(&(part.id.clone(), s.name.clone()));
            for tpl in templates(s) {
                fill_last(&tpl, prev).map_err(|m| Error::Usage(format!("{}: stream `{}`: {m}", p.file, s.name)))?;
            }
        }
    }
    Ok(last)
}

/// Every request template of a stream (path, params, headers, body strings).
fn templates(s: &crate::config::Stream) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(x) => out.push(x.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut out = vec![s.path.clone()];
    out.extend(s.params.values().cloned());
    out.extend(s.headers.values().cloned());
    if let Some(b) = &s.body {
        strings(b, &mut out);
    }
    out
}

/// The fields a stream reads back from its previous run's last record (`${last:<field>}`).
pub(super) fn declared_last(s: &crate::config::Stream) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in templates(s) {
        // (An unterminated reference was already refused by `check_last`.)
        let _ = crate::config::interp::replace_refs(&t, "last", |body| {
            let field = body.split(":-").next().unwrap_or_default().to_string();
            if !out.contains(&field) {
                out.push(field);
            }
            Ok(String::new())
        });
    }
    out
}

/// Replace `${last:<field>}` / `${last:<field>:-default}` with the previous successful run's
/// value (seed 004's `last::`). No value and no default is an input error.
pub fn fill_last(tpl: &str, prev: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<String, String> {
    crate::config::interp::replace_refs(tpl, "last", |body| {
        let (field, default) = match body.split_once(":-") {
            Some((f, d)) => (f, Some(d)),
            None => (body, None),
        };
        match (prev.and_then(|m| m.get(field)).filter(|v| !v.is_null()), default) {
            (Some(serde_json::Value::String(s)), _) => Ok(s.clone()),
            (Some(other), _) => Ok(other.to_string()),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!(
                "`${{last:{field}}}` has no value yet (no successful run landed a record with it); give a default: `${{last:{field}:-…}}`"
            )),
        }
    })
}
