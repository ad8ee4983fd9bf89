//! API keys of `ingest serve` (seed 004: one key per person; the root key creates the others,
//! and each run and change records the key's name).
//!
//! The root key is a secret given by `INGEST_ROOT_KEY` (never stored). Every other key is a
//! random 32-byte value shown once when created; the lake keeps only its SHA-256, at
//! `<lake>/_ingest/keys/<name>.json` (`{"name","sha256","created","last_used"}`), created with a
//! conditional put so two creations of one name cannot both win. A request carries its key as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>` (the status page: the `ingest_key`
//! cookie). A wrong or missing key is a 401 with no detail; an address that failed
//! [`MAX_FAILURES`] times within a minute gets 429 until the minute is over.
use crate::error::{Error, Result};
use crate::lake::Lake;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const KEYS: &str = "_ingest/keys";
/// Failed authentications from one address within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The root key's name in run records and the change history.
pub const ROOT: &str = "root";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub name: String,
    pub sha256: String,
    pub created: String,
    pub last_used: Option<String>,
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub name: String,
    pub root: bool,
}

pub struct Keys {
    root_sha: String,
    /// sha256 → key, loaded at start and kept in step with every change.
    keys: Mutex<HashMap<String, StoredKey>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

pub fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name != ROOT && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') && !name.starts_with('.')
}

impl Keys {
    /// The keys of `lake`, with `root` (at least 16 characters) as the root key.
    pub async fn load(lake: &Lake, root: &str) -> Result<Keys> {
        if root.chars().count() < 16 {
            return Err(Error::Usage("INGEST_ROOT_KEY must be set to a secret of at least 16 characters".into()));
        }
        // Registered: scrubbed from every log line and error like any secret.
        let _ = crate::secret::Secret::new(root.to_string());
        let mut keys = HashMap::new();
        let listed: Vec<_> = futures::TryStreamExt::try_collect(lake.store.list(Some(&lake.path(KEYS)))).await?;
        for m in listed {
            let bytes = lake.store.get(&m.location).await?.bytes().await?;
            if let Ok(k) = serde_json::from_slice::<StoredKey>(&bytes) {
                keys.insert(k.sha256.clone(), k);
            }
        }
        Ok(Keys { root_sha: sha(root), keys: Mutex::new(keys), failures: Default::default() })
    }

    /// The caller a presented key belongs to; None for no key or a wrong one (counted
    /// against `from`).
    pub fn check(&self, presented: Option<&str>, from: IpAddr) -> std::result::Result<Caller, Denied> {
        if self.refused(from) {
            return Err(Denied::TooMany);
        }
        let found = presented.map(sha).and_then(|h| {
            if h == self.root_sha {
                return Some(Caller { name: ROOT.into(), root: true });
            }
            let mut keys = self.keys.lock().unwrap();
            keys.get_mut(&h).map(|k| {
                k.last_used = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                Caller { name: k.name.clone(), root: false }
            })
        });
        match found {
            Some(c) => Ok(c),
            None => {
                let mut f = self.failures.lock().unwrap();
                f.entry(from).or_default().push(Instant::now());
                Err(Denied::Unknown)
            }
        }
    }

    fn refused(&self, from: IpAddr) -> bool {
        let mut f = self.failures.lock().unwrap();
        let Some(times) = f.get_mut(&from) else { return false };
        times.retain(|t| t.elapsed() < FAILURE_WINDOW);
        times.len() >= MAX_FAILURES
    }

    /// A new key named `name`: returned once, stored as its hash.
    pub async fn create(&self, lake: &Lake, name: &str) -> Result<String> {
        if !valid_name(name) {
            return Err(Error::Usage(format!("key name `{name}`: 1-64 letters, digits, `-`, `_` or `.`, not `{ROOT}`")));
        }
        let key = format!("ik_{}", hex::encode(rand_bytes()));
        let stored = StoredKey { name: name.into(), sha256: sha(&key), created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), last_used: None };
        let path = lake.path(&format!("{KEYS}/{name}.json"));
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match lake.store.put_opts(&path, PutPayload::from(serde_json::to_vec(&stored).map_err(|e| Error::Other(e.to_string()))?), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(Error::Usage(format!("a key named `{name}` exists"))),
            Err(e) => return Err(e.into()),
        }
        self.keys.lock().unwrap().insert(stored.sha256.clone(), stored);
        Ok(key)
    }

    /// Remove the key named `name`; false when there is none.
    pub async fn delete(&self, lake: &Lake, name: &str) -> Result<bool> {
        let sha = self.keys.lock().unwrap().values().find(|k| k.name == name).map(|k| k.sha256.clone());
        let Some(sha) = sha else { return Ok(false) };
        lake.store.delete(&lake.path(&format!("{KEYS}/{name}.json"))).await?;
        self.keys.lock().unwrap().remove(&sha);
        Ok(true)
    }

    /// Names, creation and last use: never a key or its hash.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = self
            .keys
            .lock()
            .unwrap()
            .values()
            .map(|k| serde_json::json!({"name": k.name, "created": k.created, "last_used": k.last_used}))
            .collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    }
}

#[derive(Debug, PartialEq)]
pub enum Denied {
    Unknown,
    TooMany,
}

/// 32 random bytes (two v4 UUIDs: the OS's random source through `uuid`).
fn rand_bytes() -> Vec<u8> {
    let mut b = uuid::Uuid::new_v4().as_bytes().to_vec();
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b
}
