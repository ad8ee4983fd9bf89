//! The request budget shared by every stream of a source: at most N requests in any window
//! of S seconds, paced evenly so the budget is saturated but never exceeded. Wraps `governor`.
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

pub struct RateBudget {
    limiter: DefaultDirectRateLimiter,
}

impl RateBudget {
    /// `requests` per `per_seconds`. A burst of one and a 2 % margin on the period keep any
    /// window of `per_seconds` at `requests` or fewer, even with a little network jitter.
    pub fn new(requests: u32, per_seconds: f64) -> Self {
        let period = Duration::from_secs_f64(per_seconds / requests as f64 * 1.02);
        let quota = Quota::with_period(period)
            .expect("positive period")
            .allow_burst(NonZeroU32::MIN);
        RateBudget {
            limiter: RateLimiter::direct(quota),
        }
    }

    pub async fn acquire(&self) {
        self.limiter.until_ready().await;
    }
}
