//! A run asked to stop by a signal (SIGTERM: Kubernetes ending a pod, `ingest serve`
//! cancelling a run or out of grace; Ctrl-C) ends at its next boundary instead of dying
//! mid-request, releases its lease, says so in the run log and exits 1 like any run cut short:
//! - a pull at its next page or window: what it committed stays, the window in progress is
//!   not committed (its file is swept by the next run);
//! - a push before its next group of batches: the group in flight gets its outcomes in the
//!   ledger, so a signal leaves no record `pending` (nor `uncertain` on a sink without lookup).
//!
//! A second signal exits at once (130).
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Listen for SIGTERM and Ctrl-C on the running tokio runtime (call once, from a command).
pub fn listen() {
    tokio::spawn(async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                return;
            }
        };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if n > 0 {
                tracing::error!("second stop signal: exiting now");
                std::process::exit(130);
            }
            REQUESTED.store(true, Ordering::SeqCst);
            tracing::warn!("stop requested: ending at the next boundary (page, window or batch; a second signal exits at once)");
        }
    });
}
