//! One batch of a sink: the request and each item's outcome (the caller commits the intent
//! before and the outcomes after, for a few batches at once). A create (`create_once`) is an `Unsafe` request: when its answer is lost after the
//! destination may have acted, the items are looked up (the sink's `lookup`) before any is
//! sent again, in the same run.
use super::job::{self, Outcome};
use super::{exists, key_text, Item};
use crate::config::{Auth, Pipeline, SinkConfig};
use crate::error::{Error, Result};
use crate::http::{Client, Effect, HttpError, Request};
use crate::json;
use crate::lake::ledger::Entry;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A create is sent at most this many times in one run (each after a lookup found nothing).
const SENDS: usize = 3;

/// What one batch did.
#[derive(Debug, Default)]
pub struct Batch {
    pub done: Vec<Entry>,
    pub requests: u64,
    pub throttled: u64,
    pub reconciled: usize,
    pub job: bool,
    pub success: Option<u64>,
    pub failure: Option<u64>,
}

/// The request body of `items` (the sink's wrapper, a bare list, or one record alone).
fn body_of(k: &SinkConfig, items: &[&Item]) -> Value {
    let list = Value::Array(items.iter().map(|(_, _, v)| v.clone()).collect());
    match (&k.batch.wrapper, k.batch.max) {
        (Some(w), _) => serde_json::json!({ w: list }),
        (None, 1) => items[0].2.clone(),
        (None, _) => list,
    }
}

/// Everything one batch needs from its sink and run.
pub struct Ctx<'a> {
    pub client: &'a Client,
    pub p: &'a Pipeline,
    pub auth: &'a Auth,
    pub name: &'a str,
    pub k: &'a SinkConfig,
    pub url: &'a str,
    pub run_id: &'a str,
    pub attempts: &'a HashMap<String, i64>,
    /// The whole rows by key (`omit`ted and `_` columns included): what a lookup may name.
    pub rows: &'a HashMap<String, Map<String, Value>>,
}

impl Ctx<'_> {
    fn entry(&self, key: &str, hash: &str, state: &str) -> Entry {
        let n = self.attempts.get(key).copied().unwrap_or(0) + 1;
        Entry::new(&self.p.name, self.name, key, hash, state, n, self.run_id)
    }

    /// The `pending` entries of `items`: committed before any of them is sent (a crash from
    /// there on is reconciled by the next run).
    pub fn pending(&self, items: &[Item]) -> Vec<Entry> {
        items.iter().map(|(key, h, _)| self.entry(key, h, "pending")).collect()
    }

    /// Send one batch whose `pending` entries are committed: the request, then each item's
    /// outcome, returned in `done` (the caller commits them, one commit for several batches).
    pub async fn send(&self, batch: &[Item]) -> Result<Batch> {
        let create_once = self.k.mode == "create_once";
        let effect = if create_once { Effect::Unsafe } else { Effect::IdempotentByKey };
        let what = format!("{}.{}", self.p.name, self.name);
        let mut out = Batch::default();
        let mut outcomes: HashMap<String, Outcome> = HashMap::new();
        let (mut job_id, mut response) = (None, None);
        let mut left: Vec<&Item> = batch.iter().collect();
        let mut sends = 0;
        while !left.is_empty() {
            sends += 1;
            let body = body_of(self.k, &left);
            let req = Request { method: &self.k.method, url: self.url, query: &[], headers: &[], body: Some(&body), split: None, effect };
            out.requests += 1;
            match self.client.send(&req, self.auth, &what).await {
                Ok(f) => {
                    out.requests += f.retries;
                    out.throttled += f.throttled;
                    let keys: Vec<&str> = left.iter().map(|(k, _, _)| k.as_str()).collect();
                    match &self.k.job {
                        None => {
                            if !f.body.is_null() {
                                let mut r = f.body.to_string();
                                r.truncate(500);
                                response = Some(crate::secret::redact(&r));
                            }
                            for k in &keys {
                                outcomes.insert(k.to_string(), Outcome::Sent);
                            }
                        }
                        Some(j) => match json::at_str(&f.body, &j.id).and_then(key_text) {
                            None => {
                                let why = format!("answered {} without a job id at `{}`", f.status, j.id);
                                let o = if create_once { Outcome::Uncertain(why) } else { Outcome::Failed(why) };
                                for k in &keys {
                                    outcomes.insert(k.to_string(), o.clone());
                                }
                            }
                            Some(id) => {
                                out.job = true;
                                let polled = job::poll(self.client, self.p, self.auth, &what, j, &id, &keys, create_once).await;
                                out.requests += polled.requests;
                                out.throttled += polled.throttled;
                                out.success = polled.success;
                                out.failure = polled.failure;
                                outcomes.extend(polled.outcomes);
                                job_id = Some(id);
                            }
                        },
                    }
                    left.clear();
                }
                Err(HttpError::Uncertain { why, .. }) => {
                    // Only a create ends here: did it take effect? Ask before sending again.
                    let Some(l) = &self.k.lookup else {
                        for (key, _, _) in left.drain(..) {
                            let msg = format!("{why}; the sink has no lookup: check the destination, then --resend-uncertain");
                            outcomes.insert(key.clone(), Outcome::Uncertain(msg));
                        }
                        continue;
                    };
                    let mut still = Vec::new();
                    for item in left.drain(..) {
                        let lookup = format!("{what} lookup");
                        match exists(self.client, self.p, self.auth, &lookup, l, &self.rows[&item.0]).await {
                            Ok(true) => {
                                out.reconciled += 1;
                                outcomes.insert(item.0.clone(), Outcome::Sent);
                            }
                            Ok(false) if sends < SENDS => still.push(item),
                            Ok(false) => {
                                let msg = format!("{why}; still not at the destination after {sends} sends");
                                outcomes.insert(item.0.clone(), Outcome::Uncertain(msg));
                            }
                            Err(e) => {
                                let msg = format!("{why}; the lookup failed too ({e})");
                                outcomes.insert(item.0.clone(), Outcome::Uncertain(msg));
                            }
                        }
                    }
                    if !still.is_empty() {
                        tracing::info!(sink = %what, items = still.len(), "a lost reply, and the lookup does not find the records: sending them again");
                    }
                    left = still;
                }
                Err(HttpError::Rejected { status, body, .. }) if (400..500).contains(&status) => {
                    for (key, _, _) in left.drain(..) {
                        outcomes.insert(key.clone(), Outcome::Failed(format!("rejected ({status}): {body}")));
                    }
                }
                // Retries exhausted on a request the destination did not act on (or that may
                // be repeated): the batch stays `pending`; the next run resends an upsert and
                // looks a create up first.
                Err(e) => return Err(Error::Http(e.to_string())),
            }
        }
        out.done = batch
            .iter()
            .map(|(key, h, _)| {
                let o = outcomes.remove(key).unwrap_or(Outcome::Sent);
                let mut e = self.entry(key, h, o.state());
                e.error = o.error();
                e.job_id = job_id.clone();
                e.response = response.clone();
                e
            })
            .collect();
        Ok(out)
    }
}
