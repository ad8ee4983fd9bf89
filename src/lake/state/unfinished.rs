//! Unfinished-run markers: when a pull must scan the raw folders for orphans (the protocol is
//! in the parent module's doc).
use super::super::Lake;
use crate::error::{Error, Result};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

/// The unfinished-run markers of a source (see the module doc).
pub struct Unfinished {
    /// Each marker: its object and the partitions its run pulled (None: all).
    pub runs: Vec<(object_store::path::Path, Option<Vec<String>>)>,
    /// Whether the source's runs have been marked since its last full scan.
    pub tracked: bool,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    run_id: String,
    partitions: Option<Vec<String>>,
    started: String,
}

fn unfinished_dir(lake: &Lake, source: &str) -> object_store::path::Path {
    lake.path(&format!("_ingest/unfinished/{source}"))
}

fn unfinished_obj(lake: &Lake, source: &str, name: &str) -> object_store::path::Path {
    lake.path(&format!("_ingest/unfinished/{source}/{name}"))
}

impl Unfinished {
    pub async fn read(lake: &Lake, source: &str) -> Result<Self> {
        use futures::TryStreamExt;
        let dir = unfinished_dir(lake, source);
        let listed: Vec<object_store::ObjectMeta> = match lake.store.list(Some(&dir)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut out = Unfinished { runs: Vec::new(), tracked: false };
        for m in listed {
            match m.location.filename() {
                Some("tracked") => out.tracked = true,
                Some(n) if n.starts_with("run-") => {
                    let body = match lake.store.get(&m.location).await {
                        Ok(g) => g.bytes().await?,
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    // An unreadable marker is a run of unknown scope: all partitions.
                    let parts = serde_json::from_slice::<Marker>(&body).ok().and_then(|m| m.partitions);
                    out.runs.push((m.location, parts));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether a run over `partitions` (None: all) must scan for orphans first.
    pub fn scan_needed(&self, partitions: Option<&[String]>) -> bool {
        !self.tracked
            || self.runs.iter().any(|(_, theirs)| match (partitions, theirs) {
                (Some(mine), Some(theirs)) => theirs.iter().any(|t| mine.contains(t)),
                _ => true,
            })
    }

    /// After a full scan over `partitions` (None: all) removed the orphans: drop the markers
    /// that scan covered and mark the source tracked.
    pub async fn scanned(&self, lake: &Lake, source: &str, partitions: Option<&[String]>) -> Result<()> {
        for (loc, theirs) in &self.runs {
            let covered = match (partitions, theirs) {
                (None, _) => true,
                (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.contains(t)),
                (Some(_), None) => false,
            };
            if covered {
                delete_quietly(lake, loc).await?;
            }
        }
        if !self.tracked {
            lake.store.put(&unfinished_obj(lake, source, "tracked"), bytes::Bytes::new().into()).await?;
        }
        Ok(())
    }

    /// Before a run lands anything: its marker.
    pub async fn start(lake: &Lake, source: &str, run_id: &str, partitions: Option<&[String]>) -> Result<()> {
        let m = Marker {
            run_id: run_id.to_string(),
            partitions: partitions.map(<[String]>::to_vec),
            started: crate::time::rfc3339(chrono::Utc::now()),
        };
        let body = serde_json::to_vec(&m).map_err(|e| Error::Lake(e.to_string()))?;
        lake.store.put(&unfinished_obj(lake, source, &format!("run-{run_id}.json")), body.into()).await?;
        Ok(())
    }

    /// A run that left nothing behind: its marker goes.
    pub async fn finish(lake: &Lake, source: &str, run_id: &str) -> Result<()> {
        delete_quietly(lake, &unfinished_obj(lake, source, &format!("run-{run_id}.json"))).await
    }
}

async fn delete_quietly(lake: &Lake, loc: &object_store::path::Path) -> Result<()> {
    match lake.store.delete(loc).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
