//! Detail fetches (seed 004's `mapping_fetch`): one request per landed record, landed as its
//! own raw stream. Details are committed in batches of their own (no watermark), so a crash
//! mid-way keeps what was fetched; the next run skips every (parent key, parent cursor) whose
//! detail is already landed, and fetches the rest.
use crate::config::Details;
use crate::error::{Error, Result};
use crate::http::{Client, Effect, HttpError, Request};
use crate::json;
use crate::lake::state::{LandedFile, Landing, StateWriter};
use crate::lake::{Lake, RawFile};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{json, Value};
use std::collections::HashSet;

/// (parent key, parent cursor) pairs whose detail is landed, read from the detail stream's
/// current files a line at a time, each kept as a 128-bit hash ([`pair`]): 16 bytes a detail
/// however long its key, instead of both strings (10M details: ~200 MiB, not ~1.5 GiB).
pub async fn landed(lake: &Lake, current: &[String]) -> Result<HashSet<u128>> {
    use tokio::io::AsyncBufReadExt;
    let mut out = HashSet::new();
    for rel in current {
        let stream = match lake.store.get(&lake.path(rel)).await {
            Ok(g) => g.into_stream(),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut lines = tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other))).split(b'\n');
        while let Some(line) = lines.next_segment().await? {
            if line.is_empty() {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                out.insert(pair(&json::text(&v["_parent_key"]), &json::text(&v["_parent_cursor"])));
            }
        }
    }
    Ok(out)
}

/// A (parent key, parent cursor) pair as the 128-bit hash [`landed`] keeps (SHA-256's first
/// 16 bytes: a collision, which would skip a detail, is out of reach).
fn pair(key: &str, cursor: &str) -> u128 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(cursor.as_bytes());
    u128::from_le_bytes(h.finalize()[..16].try_into().expect("16 bytes"))
}

/// Fill `{record.<path>}` from a record, each value one percent-encoded path segment.
fn fill(tpl: &str, record: &Value) -> String {
    use crate::json::template;
    template::render(tpl, |k| {
        k.strip_prefix("record.")
            .map(|p| template::path_segment(&json::at_str(record, p).filter(|v| !v.is_null()).map(json::text).unwrap_or_default()))
    })
}

/// Scheme, host and port of a URL (None when it does not parse).
fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let u = url::Url::parse(url).ok()?;
    Some((u.scheme().to_string(), u.host_str()?.to_string(), u.port_or_known_default()))
}

/// Whether `url` is on the source's own origin (`home`): only there go its credentials.
fn same_origin(url: &str, home: &Option<(String, String, Option<u16>)>) -> bool {
    let o = origin(url);
    o.is_some() && &o == home
}

/// What one stream run needs to fetch and land details.
pub struct DetailRun<'a> {
    pub cfg: &'a Details,
    pub base_url: &'a str,
    pub client: &'a Client,
    pub auth: &'a crate::config::Auth,
    pub lake: &'a Lake,
    pub writer: &'a StateWriter,
    pub concurrency: usize,
    pub what: String,
    pub done: HashSet<u128>,
    pub pending: Vec<Value>,
    pub fetched: u64,
}

impl DetailRun<'_> {
    /// Fetch the details of `records` not landed yet (`key`, `cursor`: how to read a parent's
    /// key and cursor). Returns the details ready to land (the caller lands them in batches).
    pub async fn fetch(
        &mut self,
        records: &[Value],
        key: &dyn Fn(&Value) -> String,
        cursor: &dyn Fn(&Value) -> String,
    ) -> Result<()> {
        let url_of = |r: &Value| -> String {
            let filled = fill(&self.cfg.path, r);
            if filled.starts_with('/') { format!("{}{filled}", self.base_url) } else { filled }
        };
        let todo: Vec<(String, String, String)> = records
            .iter()
            .map(|r| (key(r), cursor(r), url_of(r)))
            .filter(|(k, c, _)| !self.done.contains(&pair(k, c)))
            .collect();
        // The declared headers, `${secret:…}` resolved at the wire (checked when the pipeline loaded).
        let headers: Vec<(String, String)> = self
            .cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), crate::config::interp::resolve_secret(v).map(|s| s.expose().to_string()).unwrap_or_else(|_| v.clone())))
            .collect();
        let (client, what, headers) = (self.client, self.what.as_str(), &headers);
        let home = &origin(self.base_url);
        let (auth, none) = (self.auth, &crate::config::Auth::None);
        let results: Vec<(String, String, std::result::Result<Value, HttpError>)> = futures::stream::iter(todo)
            .map(|(k, c, url)| async move {
                // The source's credentials go to the source's own origin only.
                let auth = if same_origin(&url, home) { auth } else { none };
                let req = Request { method: "GET", url: &url, query: &[], headers, body: None, split: None, effect: Effect::Safe };
                let r = client.send(&req, auth, what).await.map(|f| f.body);
                (k, c, r)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        for (k, c, r) in results {
            let mut detail = match r {
                Ok(body) => {
                    let v = json::at(&body, &self.cfg.records).cloned().unwrap_or(Value::Null);
                    match v {
                        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
                        Value::Object(_) => v,
                        _ => json!({"_detail_status": 204}),
                    }
                }
                Err(HttpError::Rejected { status: 404, .. }) => json!({"_detail_status": 404}),
                Err(e) => return Err(Error::Http(e.to_string())),
            };
            if let Value::Object(m) = &mut detail {
                m.insert("_parent_key".into(), Value::String(k.clone()));
                m.insert("_parent_cursor".into(), Value::String(c.clone()));
            }
            self.fetched += 1;
            self.done.insert(pair(&k, &c));
            self.pending.push(detail);
        }
        Ok(())
    }

    /// Land the pending details as one file (one catalogue commit of its own).
    pub async fn land(&mut self, rel: &str, base: &LandedFile) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut f = RawFile::create(self.lake, rel).await?;
        f.write(&self.pending).await?;
        let (records, bytes) = (f.records as i64, f.bytes as i64);
        let (sha, schema) = f.finish().await?;
        let row = LandedFile {
            path: Some(rel.to_string()),
            records,
            bytes,
            sha256: Some(sha),
            slot: Some(rel.to_string()),
            schema: Some(schema),
            stream: self.cfg.stream.clone(),
            watermark: None,
            min_cursor: None,
            max_cursor: None,
            ..base.clone()
        };
        self.writer.land(Landing { rows: vec![row], txns: vec![], remove: vec![] }).await?;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod fill_tests {
    #[test]
    fn credentials_stay_on_the_sources_origin() {
        let home = super::origin("https://www.zohoapis.com");
        assert!(super::same_origin("https://www.zohoapis.com/crm/v2/Deals/1", &home));
        assert!(super::same_origin("https://www.zohoapis.com:443/x", &home));
        for other in ["https://www.zohoapis.com:8443/x", "http://www.zohoapis.com/x", "https://evil.com/www.zohoapis.com", "https://www.zohoapis.com.evil.com/x", "not a url"] {
            assert!(!super::same_origin(other, &home), "{other}");
        }
    }

    #[test]
    fn record_values_are_path_segments_filled_in_one_pass() {
        let r = serde_json::json!({"id": "a b/c+{record.x}", "x": "no", "n": 7});
        assert_eq!(super::fill("/deals/{record.id}/{record.n}/{partition}", &r), "/deals/a%20b%2Fc%2B%7Brecord.x%7D/7/{partition}");
    }
}
