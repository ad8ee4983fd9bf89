//! The DataFusion session a transform runs in: its memory pool (`--memory-limit`), the
//! settings the writes rely on, and delta-rs's query planner.
use deltalake::datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use deltalake::datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::SessionStateBuilder;
use deltalake::datafusion::prelude::SessionConfig;
use crate::error::Result;
use deltalake::datafusion::prelude::SessionContext;
use std::sync::Arc;

/// `--memory-limit`'s default: half of the machine's memory, or of the container's limit
/// (cgroup v2 `memory.max`) when that is lower. None when neither can be read.
pub fn default_memory_limit() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|v| v.trim().parse::<usize>().ok());
    [total, cgroup].into_iter().flatten().min().map(|b| b / 2)
}

/// `--temp-dir` must be a folder this process can write, before anything is written.
pub fn check_temp_dir(d: &std::path::Path) -> Result<()> {
    tempfile::tempfile_in(d)
        .map(drop)
        .map_err(|e| crate::error::Error::Usage(format!("--temp-dir {}: cannot write there: {e}", d.display())))
}

/// The session for one `ingest transform` run; `memory_limit` in bytes, spill files under
/// `temp_dir` (each run's own subfolder, removed when it ends).
pub fn context(memory_limit: Option<usize>, temp_dir: Option<&std::path::Path>) -> Result<SessionContext> {
    let mut rt = RuntimeEnvBuilder::new();
    if let Some(d) = temp_dir {
        rt = rt.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![d.to_path_buf()])));
    }
    let (cfg, rt) = match memory_limit {
        None => (SessionConfig::new(), rt.build_arc()?),
        // Sorts and aggregations spill to temp files past the limit (under the system's temp
        // directory, removed when the run ends).
        Some(limit) => (
            // A sort keeps this much aside to merge its spills (10 MB by default): a sixteenth
            // of a small limit, so small limits still work (there is a sort per core plus the
            // cluster sort, and the fair pool splits what the reservations leave between
            // them: at a quarter, a 2 MiB limit failed 5 runs in 6). Smaller batches: merging many
            // spill files holds one batch of each (536 MiB of raw under a 128 MiB limit failed
            // in that merge with 8192-row batches, finished with 2048: 9.4 s, 231 MiB RSS).
            SessionConfig::new()
                .with_sort_spill_reservation_bytes((limit / 16).min(10 * 1024 * 1024))
                .with_batch_size(if limit < 1 << 30 { 2048 } else { 8192 }),
            // A fair pool: the dedupe's sorts (one per core) and the cluster sort each get a
            // share and spill past it (a greedy pool let one sort take it all and the next
            // fail: measured on 2 GB of raw with a 512 MiB limit).
            rt
                .with_memory_pool(Arc::new(TrackConsumersPool::new(
                    FairSpillPool::new(limit),
                    std::num::NonZeroUsize::new(5).expect("5 > 0"),
                )))
                .build_arc()?,
        ),
    };
    // delta-rs's planner, for the plans delta-rs builds on top of ours. A model's output is
    // executed here as one stream (write::output::one_stream); no round-robin repartitioning, which
    // would deal that stream out to several writer tasks feeding one file, out of order (a
    // cluster_by table's files would overlap). A cluster_by sort runs as a sort per input
    // part merged after (the sort-based dedupe yields one part per core), not one sort on one
    // core: 10 GB build 177 s -> 129 s; the merged stream is in order, files do not overlap.
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(cfg.with_round_robin_repartition(false).with_repartition_sorts(true))
        .with_runtime_env(rt)
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    Ok(SessionContext::new_with_state(state))
}
