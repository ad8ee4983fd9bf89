//! Asynchronous jobs (seed 002's `202 {jobId}`): a job is polled with a doubling wait until a
//! final state, and its final state becomes one outcome per item (see [`Outcome`]).
use super::key_text;
use crate::config::{Auth, Pipeline, SinkJob};
use crate::http::Client;
use crate::json;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How the error of an item that failed with its whole job starts (not the item's own fault:
/// an upsert sink sends it again on the next run, without `--retry-failed`).
pub const WHOLE: &str = "not applied: ";

/// What became of one item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    /// The destination refused it (its message); resent when the payload changes or with
    /// `--retry-failed`.
    Failed(String),
    /// It may or may not have taken effect; never resent blindly.
    Uncertain(String),
}

impl Outcome {
    pub fn state(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Failed(_) => "failed",
            Outcome::Uncertain(_) => "uncertain",
        }
    }

    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Sent => None,
            Outcome::Failed(m) | Outcome::Uncertain(m) => Some(crate::secret::redact(m)),
        }
    }
}

/// A polled job: each item's outcome, the job's own counts, and what polling cost.
#[derive(Debug, Default)]
pub struct Polled {
    pub outcomes: HashMap<String, Outcome>,
    pub success: Option<u64>,
    pub failure: Option<u64>,
    pub requests: u64,
    pub throttled: u64,
}

fn count(body: &Value, path: &str) -> Option<u64> {
    json::at_str(body, path).and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
}

/// Poll job `id` of the items `keys` until its state is final (waits of `poll_ms`, doubling up
/// to `max_poll_ms`). Per item: an error the job lists → `Failed` with its message; a job that
/// failed as a whole, or reported more failures than it listed, → the other items are not
/// sent (`Failed` for an upsert sink, which a rerun resends harmlessly; `Uncertain` for a
/// create); polls that keep failing or a job not final by `timeout_secs` → `Uncertain`, and
/// the ledger keeps the job id so the next run polls it again before resending anything.
#[allow(clippy::too_many_arguments)]
pub async fn poll(client: &Client, p: &Pipeline, auth: &Auth, what: &str, j: &SinkJob, id: &str, keys: &[&str], create_once: bool) -> Polled {
    let url = format!("{}{}", p.base_url, j.status_path.replace("{job_id}", id));
    let deadline = Instant::now() + Duration::from_secs(j.timeout_secs);
    let mut out = Polled::default();
    let mut wait = Duration::from_millis(j.poll_ms);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let all = |out: &mut Polled, o: Outcome| {
        for k in keys {
            out.outcomes.insert(k.to_string(), o.clone());
        }
    };
    loop {
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_millis(j.max_poll_ms));
        out.requests += 1;
        let s = match client.get(&url, &[], auth, what).await {
            Ok(s) => s,
            Err(e) => {
                all(&mut out, Outcome::Uncertain(format!("job {id}: polling failed ({e}); polled again next run")));
                return out;
            }
        };
        out.requests += s.retries;
        out.throttled += s.throttled;
        let st = json::at_str(&s.body, &j.state).and_then(key_text).unwrap_or_default();
        if !j.is_final(&st) {
            if seen.insert(st.clone()) {
                tracing::info!(request = what, job = id, state = %st, "job state");
            }
            if Instant::now() >= deadline {
                all(&mut out, Outcome::Uncertain(format!("job {id} still `{st}` after {} s; polled again next run", j.timeout_secs)));
                return out;
            }
            continue;
        }
        let mut errors: HashMap<String, String> = HashMap::new();
        if let Some(ep) = &j.errors {
            for e in json::at_str(&s.body, ep).and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = e.get(&j.error_key).and_then(key_text) {
                    errors.insert(key, e.get(&j.error_message).and_then(key_text).unwrap_or_default());
                }
            }
        }
        out.success = count(&s.body, &j.success_count);
        out.failure = count(&s.body, &j.failure_count);
        let listed = keys.iter().filter(|k| errors.contains_key(**k)).count() as u64;
        let not_sent = |why: String| if create_once { Outcome::Uncertain(why) } else { Outcome::Failed(format!("{WHOLE}{why}")) };
        let whole = if j.is_failed(&st) {
            Some(not_sent(format!("job {id} ended `{st}` with no error for this item")))
        } else {
            match out.failure {
                Some(f) if f > listed => Some(not_sent(format!("job {id} reported {f} failures but named {listed}"))),
                _ => None,
            }
        };
        if let Some(w) = &whole {
            tracing::warn!(request = what, job = id, state = %st, failures = ?out.failure, named = listed, "job: {}", w.error().unwrap_or_default());
        }
        for k in keys {
            let o = match errors.get(*k) {
                Some(m) => Outcome::Failed(m.clone()),
                None => whole.clone().unwrap_or(Outcome::Sent),
            };
            out.outcomes.insert(k.to_string(), o);
        }
        return out;
    }
}
