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
use object_store::{ObjectStore as _, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
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
    /// The holder's PID namespace (`/proc/self/ns/pid`): containers sharing a hostname have
    /// their own, and a PID means nothing across them.
    #[serde(default)]
    pub pidns: Option<String>,
    /// The holder process's start time (clock ticks since boot): a reused PID is not it.
    #[serde(default)]
    pub start: Option<u64>,
}

impl Holder {
    /// Expired; or provably gone: on this host, in this PID namespace, with no live process of
    /// that PID and start time. (Elsewhere only the expiry tells.)
    fn stale(&self, now: DateTime<Utc>) -> bool {
        let here = self.host == host() && self.pidns.is_some() && self.pidns == pid_ns();
        now > self.expires || (here && !(pid_alive(self.pid) && self.start.is_none_or(|s| start_time(self.pid) == Some(s))))
    }
}

fn pid_ns() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.display().to_string())
}

/// A process's start time (field 22 of /proc/<pid>/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(19)?.parse().ok()
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
            pidns: pid_ns(),
            start: start_time(std::process::id()),
        };
        let body = PutPayload::from(serde_json::to_vec(&me).unwrap());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let taken = |res: object_store::PutResult, me: Holder| {
            let lost = Arc::new(AtomicBool::new(false));
            let version = UpdateVersion { e_tag: res.e_tag, version: res.version };
            let beat = tokio::spawn(heartbeat(lake.clone(), path.clone(), me.clone(), ttl, lost.clone(), Some(version)));
            Lease { lake: lake.clone(), rel: rel(name), me, lost, beat }
        };
        match lake.store.put_opts(&path, body.clone(), opts).await {
            Ok(res) => return Ok(taken(res, me)),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let (current, seen) = match lake.store.get(&path).await {
            Ok(g) => {
                let seen = UpdateVersion { e_tag: g.meta.e_tag.clone(), version: g.meta.version.clone() };
                (g.bytes().await?, seen)
            }
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
                if let Ok(h) = &other {
                    tracing::info!(source, host = %h.host, pid = h.pid, "taking over a stale lease");
                }
                // Stale (or unreadable): replaced only if it is still the object read (a
                // conditional put on its version: of two takers, one wins)...
                let update = PutOptions { mode: PutMode::Update(seen), ..Default::default() };
                match lake.store.put_opts(&path, body, update).await {
                    Ok(res) => return Ok(taken(res, me)),
                    Err(object_store::Error::Precondition { .. }) => continue,
                    // ...or, where the store has no conditional update (a local disk: one
                    // host, whose holders' liveness is checked by PID), removed if unchanged.
                    Err(_) => {}
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

/// Renew the lease every `ttl / 3`: a conditional put on the version this holder last wrote
/// (`PutMode::Update`), so a lease taken over in between is never overwritten back; where the
/// store has no conditional update (a local disk), check-then-put. A renewal that fails (or
/// finds the lease taken) raises `lost`: the run commits nothing more.
async fn heartbeat(lake: Lake, path: object_store::path::Path, mut me: Holder, ttl: Duration, lost: Arc<AtomicBool>, mut version: Option<UpdateVersion>) {
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        me.expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap();
        let body = PutPayload::from(serde_json::to_vec(&me).unwrap());
        let res = match version.clone() {
            Some(v) => lake.store.put_opts(&path, body.clone(), PutOptions { mode: PutMode::Update(v), ..Default::default() }).await,
            None => Err(object_store::Error::NotImplemented { operation: "conditional update".into(), implementer: "this store".into() }),
        };
        let ok = match res {
            Ok(r) => {
                version = Some(UpdateVersion { e_tag: r.e_tag, version: r.version });
                true
            }
            Err(object_store::Error::Precondition { .. }) => false,
            Err(_) => {
                version = None;
                names(&lake, &path, &me.holder).await && lake.store.put(&path, body).await.is_ok()
            }
        };
        if ok {
            renewed = std::time::Instant::now();
            continue;
        }
        if !names(&lake, &path, &me.holder).await || renewed.elapsed() >= ttl {
            tracing::error!("this run's lease was taken over by another run, or could not be renewed in time; it commits nothing more");
            lost.store(true, Ordering::SeqCst);
            return;
        }
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


#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, pidns: Option<&str>, expires_in: i64) -> Holder {
        let now = Utc::now();
        Holder {
            holder: uuid::Uuid::new_v4().to_string(),
            host: host.into(),
            pid,
            since: now,
            expires: now + chrono::Duration::seconds(expires_in),
            pidns: pidns.map(str::to_string),
            start: None,
        }
    }

    /// Containers sharing a hostname have PID namespaces of their own: a PID there tells
    /// nothing here, so only the expiry does.
    #[test]
    fn liveness_by_pid_only_in_the_same_pid_namespace() {
        let gone = 4_000_000; // above pid_max: no such process
        let now = Utc::now();
        assert!(holder(&host(), gone, pid_ns().as_deref(), 30).stale(now), "a dead process here");
        assert!(!holder(&host(), gone, Some("pid:[1]"), 30).stale(now), "another container's process");
        assert!(!holder(&host(), gone, None, 30).stale(now), "a holder that did not say");
        assert!(holder(&host(), gone, Some("pid:[1]"), -1).stale(now), "expired");
        assert!(!holder(&host(), std::process::id(), pid_ns().as_deref(), 30).stale(now));
    }

    /// Of two runs taking over one stale lease at once, exactly one gets it (a conditional put
    /// on the version both read), and the loser's heartbeat never writes over the winner.
    #[tokio::test]
    async fn a_stale_lease_is_taken_over_by_exactly_one() {
        for _ in 0..20 {
            let lake = Lake::open("memory://").unwrap();
            let stale = holder("elsewhere", 1, None, -5);
            lake.store.put(&lake.path(&rel("src")), PutPayload::from(serde_json::to_vec(&stale).unwrap())).await.unwrap();
            let (a, b) = tokio::join!(acquire(&lake, "src", false), acquire(&lake, "src", false));
            assert!(a.is_ok() != b.is_ok(), "both or neither took it: {:?} {:?}", a.as_ref().err(), b.as_ref().err());
            let winner = a.or(b).unwrap();
            assert!(names(&lake, &lake.path(&rel("src")), &winner.me.holder).await);
            winner.release().await;
        }
    }

    /// A lease another run took over (written behind this holder's back) is not renewed back:
    /// the conditional renewal fails and the fence rises.
    #[tokio::test]
    async fn a_renewal_never_overwrites_a_lease_taken_over() {
        std::env::set_var("INGEST_LEASE_TTL_SECS", "0.3");
        let lake = Lake::open("memory://").unwrap();
        let mine = acquire(&lake, "src", false).await.unwrap();
        let other = holder("elsewhere", 1, None, 30);
        lake.store.put(&lake.path(&rel("src")), PutPayload::from(serde_json::to_vec(&other).unwrap())).await.unwrap();
        let fence = mine.fence();
        let t0 = std::time::Instant::now();
        while !mine.lost.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(5), "the lost lease was not noticed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(fence.check().await.is_err());
        assert!(names(&lake, &lake.path(&rel("src")), &other.holder).await, "the renewal wrote over the new holder");
    }
}
