//! Schedules: each pipeline file's `[schedule]` (see `config::schedule`) fires a pull of its
//! source, then its `then` steps one after another; a step that fails or is skipped ends the
//! chain. One task per schedule, so a chain never overlaps itself: a time that passes while
//! the chain runs fires once when it ends.
//!
//! The last time each schedule fired is kept at `<lake>/_ingest/serve/schedules/<source>.json`
//! (written when it fires), so a server started after a missed time runs it once at start-up
//! (`catch_up = "once"`) or waits for the next (`"skip"`). A first start has nothing missed.
use super::runner::{Job, Runner};
use crate::config::schedule::{CatchUp, Schedule};
use crate::lake::Lake;
use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use std::sync::Arc;
use tokio::sync::watch;

fn state_path(source: &str) -> String {
    format!("_ingest/serve/schedules/{source}.json")
}

async fn last_fired(lake: &Lake, source: &str) -> Option<DateTime<Utc>> {
    let bytes = lake.store.get(&lake.path(&state_path(source))).await.ok()?.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["last"].as_str().and_then(|s| crate::time::parse_instant(s, &chrono_tz::UTC))
}

async fn record_fired(lake: &Lake, source: &str, at: DateTime<Utc>) {
    let body = serde_json::json!({"last": at.to_rfc3339()}).to_string();
    if let Err(e) = lake.store.put(&lake.path(&state_path(source)), PutPayload::from(body)).await {
        tracing::warn!(source, error = %e, "could not record the schedule's last run");
    }
}

/// Run `source`'s schedule until `stop` turns true.
pub async fn run(lake: Arc<Lake>, runner: Runner, source: String, s: Schedule, mut stop: watch::Receiver<bool>) {
    let mut due = match (s.catch_up, last_fired(&lake, &source).await) {
        (CatchUp::Once, Some(last)) if s.next_after(last).is_some_and(|n| n <= Utc::now()) => {
            tracing::info!(source = %source, last = %last, "a scheduled run was missed while the server was down: running it now");
            Some(Utc::now())
        }
        _ => s.next_after(Utc::now()),
    };
    tracing::info!(source = %source, cron = %s.expr, next = ?due, "schedule loaded");
    while let Some(at) = due {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        record_fired(&lake, &source, at).await;
        chain(&runner, &source, &s).await;
        due = s.next_after(Utc::now().max(at));
    }
}

/// The pull, then each step while the previous succeeded.
async fn chain(runner: &Runner, source: &str, s: &Schedule) {
    let mut steps = vec![("pull".to_string(), source.to_string(), vec!["pull".to_string(), source.to_string()])];
    for st in &s.then {
        let args = st.args();
        let src = match st {
            crate::config::schedule::Step::Push(t) => t.split('.').next().unwrap_or_default().to_string(),
            crate::config::schedule::Step::Transform(_) => String::new(),
        };
        steps.push((args[0].clone(), src, args));
    }
    for (command, src, args) in steps {
        let job = Job { command: command.clone(), source: src, args, trigger: "schedule".into(), key_name: "schedule".into() };
        match runner.start(job.clone()) {
            Ok((id, handle)) => match handle.await {
                Ok(r) if r.state == "success" => continue,
                Ok(r) => {
                    tracing::warn!(source, run_id = %id, command = %command, state = %r.state, "scheduled step did not succeed: the rest of the chain is skipped");
                    return;
                }
                Err(e) => {
                    tracing::error!(source, error = %e, "scheduled run task failed");
                    return;
                }
            },
            Err(why) => {
                let why = match why {
                    super::runner::Refused::Busy(other) => format!("run {other} of the same command and source was running"),
                    super::runner::Refused::Stopping => "the server is stopping".to_string(),
                };
                tracing::warn!(source, command = %command, why, "scheduled step skipped, and the rest of its chain");
                runner.record_skipped(&job, &why).await;
                return;
            }
        }
    }
}
