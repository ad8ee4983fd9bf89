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

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is made: a signal that
/// arrives before anyone awaits [`Signals::recv`] is kept, not the default kill.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Listen for SIGTERM and Ctrl-C from now on (call once, from a command, on its runtime).
pub fn listen() {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for stop signals: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        for n in 0.. {
            signals.recv().await;
            if n > 0 {
                tracing::error!("second stop signal: exiting now");
                std::process::exit(130);
            }
            REQUESTED.store(true, Ordering::SeqCst);
            tracing::warn!("stop requested: ending at the next boundary (page, window or batch; a second signal exits at once)");
        }
    });
}
