//! One writer per (lake, source × partition): a lease object created with an object-store
//! conditional put (`PutMode::Create`), so of two pulls started together exactly one gets it.
//! A whole-source pull (and `vacuum`) holds `<lake>/_ingest/leases/<source>.json`; a sharded
//! pull (`--shard`, `--partitions`) holds `<lake>/_ingest/leases/<source>/<partition>.json` for
//! each of its partitions, taken in sorted order, so shards of one source run side by side.
//! The two levels exclude each other: after taking its leases a run looks at the other level
//! and, finding a live holder there, gives everything back (then fails, or waits and tries
//! again) — each writes before it reads, so of two such runs at least one sees the other.
//!
//! The holder rewrites each lease every `ttl / 3` with a new expiry; a lease whose expiry has
//! passed, or whose holder's process is gone (same host), is stale and taken over, so a
//! killed run never blocks the source for longer than `ttl`. A holder that finds a lease
//! taken (it stalled past its expiry) raises its fence: the catalogue writer then refuses
//! every further commit of that run.
use super::Lake;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use object_store::{ObjectStore as _, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub since: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

impl Holder {
    fn stale(&self, now: DateTime<Utc>) -> bool {
        now > self.expires || (self.host == host() && !pid_alive(self.pid))
    }
}

pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // Linux: a live process has /proc/<pid>; a zombie counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

pub fn ttl() -> Duration {
    std::env::var("INGEST_LEASE_TTL_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

pub struct Lease {
    lake: Lake,
    rel: String,
    pub me: Holder,
    /// Raised when the lease was lost; the catalogue writer checks it before each commit.
    pub lost: Arc<AtomicBool>,
    beat: tokio::task::JoinHandle<()>,
}

/// The folder of push leases: `push/<source>.<sink>` (source names hold no dot, so no pull
/// lease is ever named so).
pub const PUSH: &str = "push";

fn rel(name: &str) -> String {
    format!("_ingest/leases/{name}.json")
}

/// Who holds the lease of `source` now (None: free or stale).
pub async fn holder(lake: &Lake, source: &str) -> Result<Option<Holder>> {
    match lake.store.get(&lake.path(&rel(source))).await {
        Ok(g) => {
            let b = g.bytes().await?;
            Ok(serde_json::from_slice::<Holder>(&b).ok().filter(|h| !h.stale(Utc::now())))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Live partition leases of `source` (sharded pulls running).
pub async fn partition_holders(lake: &Lake, source: &str) -> Result<Vec<(String, Holder)>> {
    use futures::TryStreamExt;
    let root = lake.path(&format!("_ingest/leases/{source}"));
    let listed: Vec<object_store::ObjectMeta> = match lake.store.list(Some(&root)).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for m in listed {
        let Some(part) = m.location.filename().and_then(|f| f.strip_suffix(".json")).map(str::to_string) else { continue };
        if let Some(h) = holder(lake, &format!("{source}/{part}")).await? {
            out.push((part, h));
        }
    }
    Ok(out)
}

/// The leases one run holds (see the module doc).
pub struct Leases {
    held: Vec<Lease>,
}

/// What a run leases: the whole source, or some of its partitions.
pub enum Scope<'a> {
    Source,
    Partitions(&'a [String]),
}

fn busy(source: &str, part: Option<&str>, h: &Holder) -> Error {
    let what = match (source, part) {
        // `push/<source>.<sink>`: a push's lease (see `push`).
        (PUSH, Some(sink)) => format!("a push of {sink}"),
        (s, Some(p)) => format!("a pull of {s} (partition {p})"),
        (s, None) => format!("a pull of {s}"),
    };
    Error::Busy(format!(
        "{what} is running since {} ({}, pid {}); try again later or pass --wait",
        h.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        h.host,
        h.pid
    ))
}

/// Take the leases of `scope` (see the module doc). Busy: waits when `wait`, else fails
/// (exit 1) naming the holder.
pub async fn acquire_scope(lake: &Lake, source: &str, scope: Scope<'_>, wait: bool) -> Result<Leases> {
    loop {
        let mut held = Vec::new();
        let conflict = match &scope {
            Scope::Source => {
                held.push(acquire(lake, source, wait).await?);
                partition_holders(lake, source).await?.into_iter().next().map(|(p, h)| busy(source, Some(&p), &h))
            }
            Scope::Partitions(parts) => {
                let mut parts = parts.to_vec();
                parts.sort();
                parts.dedup();
                for p in &parts {
                    match acquire(lake, &format!("{source}/{p}"), wait).await {
                        Ok(l) => held.push(l),
                        Err(e) => {
                            for l in held {
                                l.release().await;
                            }
                            return Err(e);
                        }
                    }
                }
                holder(lake, source).await?.map(|h| busy(source, None, &h))
            }
        };
        let Some(err) = conflict else { return Ok(Leases { held }) };
        for l in held {
            l.release().await;
        }
        if !wait {
            return Err(err);
        }
        // Give the other level its turn (jittered, so two waiters do not keep colliding).
        let jitter = u64::from(std::process::id() % 250);
        tokio::time::sleep(Duration::from_millis(250 + jitter)).await;
    }
}

impl Leases {
    pub fn fence(&self) -> Fence {
        Fence { parts: self.held.iter().map(Lease::part).collect() }
    }

    pub async fn release(self) {
        for l in self.held {
            l.release().await;
        }
    }
}

/// Take the lease object `name` (`<source>` or `<source>/<partition>`). Busy: waits when
/// `wait`, else fails (exit 1) naming the holder.
pub async fn acquire(lake: &Lake, name: &str, wait: bool) -> Result<Lease> {
    let (source, part) = match name.split_once('/') {
        Some((s, p)) => (s, Some(p)),
        None => (name, None),
    };
    let ttl = ttl();
    let path = lake.path(&rel(name));
    let mut announced = false;
    loop {
        let now = Utc::now();
        let me = Holder {
            holder: uuid::Uuid::new_v4().to_string(),
            host: host(),
            pid: std::process::id(),
            since: now,
            expires: now + chrono::Duration::from_std(ttl).unwrap(),
        };
        let body = PutPayload::from(serde_json::to_vec(&me).unwrap());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match lake.store.put_opts(&path, body, opts).await {
            Ok(_) => {
                let lost = Arc::new(AtomicBool::new(false));
                let beat = tokio::spawn(heartbeat(lake.clone(), path.clone(), me.clone(), ttl, lost.clone()));
                return Ok(Lease {
                    lake: lake.clone(),
                    rel: rel(name),
                    me,
                    lost,
                    beat,
                });
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let current = match lake.store.get(&path).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<Holder>(&current) {
            Ok(h) if !h.stale(Utc::now()) => {
                if !wait {
                    return Err(busy(source, part, &h));
                }
                if !announced {
                    tracing::info!(source, host = %h.host, pid = h.pid, "waiting for the running pull of this source");
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => {
                // Stale (or unreadable): remove it only if it is still the same object.
                if let Ok(h) = &other {
                    tracing::info!(source, host = %h.host, pid = h.pid, "taking over a stale lease");
                }
                if let Ok(g) = lake.store.get(&path).await {
                    if g.bytes().await? == current {
                        let _ = lake.store.delete(&path).await;
                    }
                }
            }
        }
    }
}

/// Whether the lease object at `path` names `holder` now.
async fn names(lake: &Lake, path: &object_store::path::Path, holder: &str) -> bool {
    match lake.store.get(path).await {
        Ok(g) => g
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .is_some_and(|h| h.holder == holder),
        Err(_) => false,
    }
}

async fn heartbeat(lake: Lake, path: object_store::path::Path, mut me: Holder, ttl: Duration, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        if !names(&lake, &path, &me.holder).await {
            tracing::error!("this run's lease was taken over by another pull; it commits nothing more");
            lost.store(true, Ordering::SeqCst);
            return;
        }
        me.expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap();
        let _ = lake
            .store
            .put(&path, PutPayload::from(serde_json::to_vec(&me).unwrap()))
            .await;
    }
}

/// What a catalogue writer checks right before each commit: every lease of the run still
/// names it.
#[derive(Clone)]
pub struct Fence {
    parts: Vec<FencePart>,
}

#[derive(Clone)]
struct FencePart {
    lake: Lake,
    path: object_store::path::Path,
    holder: String,
    lost: Arc<AtomicBool>,
}

impl Fence {
    /// Ok while this run holds its leases; once one is lost, always an error.
    pub async fn check(&self) -> Result<()> {
        for p in &self.parts {
            if !p.lost.load(Ordering::SeqCst) && names(&p.lake, &p.path, &p.holder).await {
                continue;
            }
            p.lost.store(true, Ordering::SeqCst);
            return Err(Error::Busy(
                "this run lost its lease to another pull of the source; nothing more is committed".into(),
            ));
        }
        Ok(())
    }
}

impl Lease {
    fn part(&self) -> FencePart {
        FencePart { lake: self.lake.clone(), path: self.lake.path(&self.rel), holder: self.me.holder.clone(), lost: self.lost.clone() }
    }

    pub fn fence(&self) -> Fence {
        Fence { parts: vec![self.part()] }
    }

    pub async fn release(self) {
        self.beat.abort();
        let path = self.lake.path(&self.rel);
        if names(&self.lake, &path, &self.me.holder).await {
            let _ = self.lake.store.delete(&path).await;
        }
        // A local lake keeps no empty folders behind (a run that landed nothing leaves no trace).
        if let Some(d) = &self.lake.local_dir {
            if let Some((source, _)) = self.rel.trim_start_matches("_ingest/leases/").split_once('/') {
                let _ = std::fs::remove_dir(d.join("_ingest/leases").join(source));
            }
            let _ = std::fs::remove_dir(d.join("_ingest/leases"));
            let _ = std::fs::remove_dir(d.join("_ingest"));
        }
    }
}

