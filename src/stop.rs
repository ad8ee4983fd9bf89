//! A run asked to stop by a signal (SIGTERM: Kubernetes ending a pod, `ingest serve`
//! cancelling a run or out of grace; Ctrl-C): a pull ends at its next page or window boundary
//! instead of dying mid-request — what it committed stays, the window in progress is not
//! committed (its file is swept by the next run), its lease is released and the run log says
//! it was stopped — and exits 1 like any run cut short. A second signal exits at once (130).
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
            tracing::warn!("stop requested: ending at the next page or window boundary (a second signal exits at once)");
        }
    });
}
